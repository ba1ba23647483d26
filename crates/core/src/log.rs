//! Append logs of records in a store (FORMAT.md §4.6): reading, appending,
//! trimming; the bytes are [`crate::format::log`]'s, this module does the I/O.
//!
//! A log is a key file with [`FLAGS_COMMITTED_LOG`](crate::format::file::FLAGS_COMMITTED_LOG): the header (`v = 128`),
//! the meta segment, the commit area (two 64-byte commit slots, A and B), then
//! records to the end of the file, each
//! `s | index | stamp | serializer | payload | xxh3_64 | s`. The commit says
//! how many records were acknowledged and where they end: those records must
//! all verify (anything short of them is `ERR_CORRUPT`), and only the bytes
//! past them, the torn tail of an append that never returned, are ignored.
//!
//! An append writes its records (one or more: a group commit) at the end of
//! the committed records with one `pwrite`, then slot A, fsyncs, then slot B,
//! fsyncs, and only then returns. A new log, a trim and the migration of a log
//! of the earlier layout are written whole, through a staging file and a
//! rename (§5).
//!
//! A log of the earlier layout ([`FLAG_LOG`] alone, no commit area) is read
//! by the old rule: the first record that does not verify ends the readable
//! log; the bytes from there on are a torn tail unless a valid record ends the
//! file (then `ERR_CORRUPT`). Its first append rewrites it in the current layout.
//!
//! Every read here is bounded: a 256 KiB buffer plus, at most, the record at
//! hand. No file is read whole.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::codec::{Codec, OsRandom, Randomness, SegmentContext, SegmentKind};
use crate::error::{Error, ErrorCode, Result};
use crate::format::file::{self, Header, FLAG_LOG, HEADER_LEN, LOG_COMMIT_AREA};
use crate::format::key;
use crate::format::log::{
    choose_commit, encode_commit_area, encode_commit_slot, encode_log_meta, encode_records, le_u32, le_u64, log_header, Commit, LogInfo,
    LogRecord, NewRecord, ParsedLog, COMMIT_SLOT, RECORD_HEAD, RECORD_OVERHEAD, RECORD_TRAILER,
};
use crate::keyfile::{self, StoreDir};
use crate::keyhash;
use crate::vfs::VfsFile;

/// The read buffer of a scan or a cursor; a larger record is read on its own.
pub const READ_BUF: usize = 256 * 1024;
/// How much of the end of a log the last-record check reads at once.
const TAIL_READ: usize = 4096;

/// Parses a whole log file held in memory, with the reading rules of
/// FORMAT.md §4.6 (a torn tail past the acknowledged records is left out;
/// damage to them is `ERR_CORRUPT`; a log of the earlier layout by its rule).
/// For tools and tests; the store reads logs in pieces.
pub fn parse_log(bytes: &[u8], ctx: &SegmentContext<'_>) -> Result<ParsedLog> {
    let size = bytes.len() as u64;
    let (header, meta) = file::parse_head(bytes, size, ctx)?;
    if !header.is_log() {
        return Err(Error::new(ErrorCode::NotALog, "the file is not an append log"));
    }
    let file = MemFile(bytes.to_vec());
    let layout = open_layout(&file, size, Path::new(""), &header, bytes, ctx)?;
    let commit = match layout.bound {
        Bound::Committed { commit, .. } => Some(commit),
        Bound::Legacy { .. } => None,
    };
    let mut cursor = LogCursor::with_layout(
        Box::new(file),
        size,
        PathBuf::new(),
        &header,
        layout,
        bytes.to_vec(),
        ctx.secret.map(<[u8]>::to_vec),
        ctx.key_hash,
        ctx.accept_plaintext,
    );
    let mut records = Vec::new();
    while let Some(batch) = cursor.next_batch(usize::MAX)? {
        records.extend(batch);
    }
    Ok(ParsedLog { header, key: meta.key, meta: meta.meta, commit, records })
}

/// Appends `records` to a whole log file held in memory, exactly as the
/// store appends them (FORMAT.md §4.6), and returns the new file: the bytes
/// up to the acknowledged records' end, the new records, and both commit
/// slots set to the new commit. A log of the earlier layout is rewritten in
/// the current one first, as the store migrates it. For tools and tests.
pub fn append_log_file(bytes: &[u8], ctx: &SegmentContext<'_>, records: &[NewRecord<'_>], rng: &mut dyn Randomness) -> Result<Vec<u8>> {
    let size = bytes.len() as u64;
    let (header, _) = file::parse_head(bytes, size, ctx)?;
    if !header.is_log() {
        return Err(Error::new(ErrorCode::NotALog, "the file is not an append log"));
    }
    let file = MemFile(bytes.to_vec());
    let path = Path::new("");
    let layout = open_layout(&file, size, path, &header, bytes, ctx)?;
    let meta_stored = &bytes[HEADER_LEN..HEADER_LEN + header.meta_len as usize];
    let Bound::Committed { commit, .. } = layout.bound else {
        let mut out = MemFile(Vec::new());
        write_log_whole(
            &mut out,
            path,
            header.codec,
            ctx,
            meta_stored,
            Some((&file, size, &layout, bytes.to_vec(), path)),
            0,
            records,
            rng,
        )?;
        return Ok(out.0);
    };
    let scan = walk(&file, size, &layout, bytes.to_vec(), path, |_, _| Ok(()))?;
    let index = scan.info.next_index()?;
    let (batch, last_sum) = encode_records(header.codec, ctx, index, records, rng)?;
    let new = Commit { seq: commit.seq + 1, count: commit.count + records.len() as u64, end: commit.end + batch.len() as u64, last_sum };
    let mut out = bytes[..commit.end as usize].to_vec();
    out.extend_from_slice(&batch);
    let at = layout.area_at as usize;
    out[at..at + LOG_COMMIT_AREA as usize].copy_from_slice(&encode_commit_area(&new, header.codec, ctx, meta_stored)?);
    Ok(out)
}

/// Trims a whole log file held in memory as the store trims it (FORMAT.md
/// §4.6): a new meta segment from `meta` (its salt and IV from `rng`), the
/// records of index `keep_from` or more copied as stored, a new commit area.
/// For tools and tests.
pub fn trim_log_file(bytes: &[u8], ctx: &SegmentContext<'_>, keep_from: u64, meta: &[u8], rng: &mut dyn Randomness) -> Result<Vec<u8>> {
    let size = bytes.len() as u64;
    let (header, old) = file::parse_head(bytes, size, ctx)?;
    if !header.is_log() {
        return Err(Error::new(ErrorCode::NotALog, "the file is not an append log"));
    }
    let file = MemFile(bytes.to_vec());
    let path = Path::new("");
    let layout = open_layout(&file, size, path, &header, bytes, ctx)?;
    let meta_stored = encode_log_meta(header.codec, ctx.secret, &old.key, meta, rng)?;
    let mut out = MemFile(Vec::new());
    write_log_whole(
        &mut out,
        path,
        header.codec,
        ctx,
        &meta_stored,
        Some((&file, size, &layout, bytes.to_vec(), path)),
        keep_from,
        &[],
        rng,
    )?;
    Ok(out.0)
}

/// A file held in memory, for [`parse_log`] and the other whole-file tools.
struct MemFile(Vec<u8>);

impl VfsFile for MemFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.extend_from_slice(buf);
        Ok(())
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let end = start + buf.len();
        if self.0.len() < end {
            self.0.resize(end, 0);
        }
        self.0[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.resize(usize::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?, 0);
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A record that verified: where it is and its fixed fields.
#[derive(Clone, Copy, Debug)]
struct RecordHead {
    start: u64,
    /// `33 + s`.
    len: u64,
    index: u64,
    stamp: u64,
    serializer: u8,
    /// The record's stored checksum.
    sum: u64,
}

/// What [`RecordReader::next`] found.
enum Step {
    /// A record that verified, and its stored payload if asked for.
    Record(RecordHead, Option<Vec<u8>>),
    /// The reader is exactly at its limit: no more records.
    End,
    /// The bytes at the reader's position are not a valid next record.
    Stop,
}

/// Reads records forward, verifying each, with one buffer of at most
/// [`READ_BUF`] bytes (a larger record is read or hashed on its own). It
/// holds no file: each call gets it, so a cursor can own both.
struct RecordReader {
    /// The offset of the next record.
    pos: u64,
    /// Nothing at or past this offset is read (the file size as of open).
    limit: u64,
    /// The index the next record must have (`None`: any, for the first).
    expected: Option<u64>,
    buf: Vec<u8>,
    /// The file offset of `buf[0]`.
    buf_start: u64,
}

impl RecordReader {
    /// A reader at `pos`, seeded with `buf`, the bytes of the file at `buf_start`.
    fn new(pos: u64, limit: u64, buf: Vec<u8>, buf_start: u64) -> RecordReader {
        RecordReader { pos, limit, expected: None, buf, buf_start }
    }

    /// The file's bytes `at .. at + n` (`n <= READ_BUF`, `at + n <= limit`),
    /// from the buffer or a new read of up to [`READ_BUF`] bytes; `None` if
    /// the file is shorter now than it was (a concurrent append cut a torn tail).
    fn window(&mut self, file: &dyn VfsFile, at: u64, n: usize, path: &Path) -> Result<Option<&[u8]>> {
        let end = at + n as u64;
        if at < self.buf_start || end > self.buf_start + self.buf.len() as u64 {
            let want = usize::try_from(self.limit - at).unwrap_or(usize::MAX).min(READ_BUF).max(n);
            self.buf.resize(want, 0);
            match file.read_exact_at(&mut self.buf, at) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // The file shrank below the limit: read only what is asked.
                    self.buf.resize(n, 0);
                    match file.read_exact_at(&mut self.buf, at) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            self.buf.clear();
                            self.buf_start = 0;
                            return Ok(None);
                        }
                        Err(e) => return Err(Error::io(e, "cannot read the log file", path)),
                    }
                }
                Err(e) => return Err(Error::io(e, "cannot read the log file", path)),
            }
            self.buf_start = at;
        }
        let from = (at - self.buf_start) as usize;
        Ok(Some(&self.buf[from..from + n]))
    }

    /// The next record, verified: its length fields, its checksum, and that
    /// its index follows the previous one's.
    fn next(&mut self, file: &dyn VfsFile, want_payload: bool, path: &Path) -> Result<Step> {
        if self.pos >= self.limit {
            return Ok(Step::End);
        }
        let (pos, rest) = (self.pos, self.limit - self.pos);
        if rest < RECORD_OVERHEAD as u64 {
            return Ok(Step::Stop);
        }
        let Some(head) = self.window(file, pos, RECORD_HEAD, path)? else { return Ok(Step::Stop) };
        let head: [u8; RECORD_HEAD] = head.try_into().expect("21 bytes");
        let s = le_u32(&head[0..4]);
        let len = RECORD_OVERHEAD as u64 + u64::from(s);
        let index = le_u64(&head[4..12]);
        if len > rest || self.expected.is_some_and(|e| e != index) {
            return Ok(Step::Stop);
        }
        let s_len = s as usize;
        let (sum, payload) = if len <= READ_BUF as u64 {
            let Some(rec) = self.window(file, pos, len as usize, path)? else { return Ok(Step::Stop) };
            let sum = le_u64(&rec[RECORD_HEAD + s_len..RECORD_HEAD + s_len + 8]);
            if le_u32(&rec[RECORD_HEAD + s_len + 8..]) != s || xxh3_64(&rec[..RECORD_HEAD + s_len]) != sum {
                return Ok(Step::Stop);
            }
            (sum, want_payload.then(|| rec[RECORD_HEAD..RECORD_HEAD + s_len].to_vec()))
        } else {
            // A large record: check the trailer first (cheap, and it rejects a
            // damaged length before anything large is read), then hash it in pieces.
            let trailer_at = pos + (RECORD_HEAD + s_len) as u64;
            let Some(trailer) = self.window(file, trailer_at, RECORD_TRAILER, path)? else { return Ok(Step::Stop) };
            let sum = le_u64(&trailer[..8]);
            if le_u32(&trailer[8..]) != s {
                return Ok(Step::Stop);
            }
            let mut hasher = Xxh3::new();
            hasher.update(&head);
            let payload = if want_payload {
                let mut payload = Vec::new();
                payload.try_reserve_exact(s_len).map_err(|_| {
                    Error::new(ErrorCode::InvalidArgument, format!("cannot allocate {s} bytes for a log record")).with_file(path)
                })?;
                payload.resize(s_len, 0);
                match file.read_exact_at(&mut payload, pos + RECORD_HEAD as u64) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Step::Stop),
                    Err(e) => return Err(Error::io(e, "cannot read the log file", path)),
                }
                hasher.update(&payload);
                Some(payload)
            } else {
                let mut at = pos + RECORD_HEAD as u64;
                while at < trailer_at {
                    let n = (trailer_at - at).min(READ_BUF as u64) as usize;
                    let Some(piece) = self.window(file, at, n, path)? else { return Ok(Step::Stop) };
                    hasher.update(piece);
                    at += n as u64;
                }
                None
            };
            if hasher.digest() != sum {
                return Ok(Step::Stop);
            }
            (sum, payload)
        };
        let rec = RecordHead { start: pos, len, index, stamp: le_u64(&head[12..20]), serializer: head[20], sum };
        self.pos = pos + len;
        self.expected = Some(index.wrapping_add(1));
        Ok(Step::Record(rec, payload))
    }

    /// Passes the stored bytes of `rec` (just returned by [`next`](Self::next))
    /// to `out`, in pieces of at most [`READ_BUF`] bytes.
    fn copy_raw(&mut self, file: &dyn VfsFile, rec: &RecordHead, path: &Path, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let (mut at, end) = (rec.start, rec.start + rec.len);
        while at < end {
            let n = (end - at).min(READ_BUF as u64) as usize;
            let piece =
                self.window(file, at, n, path)?.ok_or_else(|| Error::corrupt("the log file shrank while it was read").with_file(path))?;
            out(piece)?;
            at += n as u64;
        }
        Ok(())
    }
}

/// The last record of a log, found from `end` backwards (FORMAT.md §4.6):
/// the 12 bytes before `end` give its checksum and `s`; it must start at or
/// after `data_start` and verify. `None` if it does not.
fn last_record(file: &dyn VfsFile, end: u64, data_start: u64, prefix: &[u8], path: &Path) -> Result<Option<RecordHead>> {
    if end < data_start + RECORD_OVERHEAD as u64 {
        return Ok(None);
    }
    // One read of the end holds a small last record whole.
    let (buf, buf_start) = if end <= prefix.len() as u64 {
        (prefix.to_vec(), 0)
    } else {
        let n = (end - data_start).min(TAIL_READ as u64) as usize;
        let mut tail = vec![0u8; n];
        match file.read_exact_at(&mut tail, end - n as u64) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::io(e, "cannot read the log file", path)),
        }
        (tail, end - n as u64)
    };
    let at = (end - buf_start) as usize;
    let s = le_u32(&buf[at - 4..at]);
    let len = RECORD_OVERHEAD as u64 + u64::from(s);
    if len > end - data_start {
        return Ok(None);
    }
    let mut reader = RecordReader::new(end - len, end, buf, buf_start);
    match reader.next(file, false, path)? {
        Step::Record(rec, _) => Ok(Some(rec)),
        Step::End | Step::Stop => Ok(None),
    }
}

fn damaged(path: &Path, at: u64) -> Error {
    Error::corrupt(format!("the log is damaged in the middle: the record at offset {at} does not verify, yet a valid record ends the file"))
        .with_file(path)
}

/// Damage to a log's acknowledged records (FORMAT.md §4.6).
fn damaged_committed(path: &Path, at: u64, commit: &Commit) -> Error {
    Error::corrupt(format!(
        "the log is damaged: its acknowledged record at offset {at} does not verify (its commit says {} records end at offset {})",
        commit.count, commit.end
    ))
    .with_file(path)
}

/// How far a log's records count (FORMAT.md §4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    /// A log of the earlier layout: records to the end of the file; the first
    /// that does not verify starts a torn tail, unless a valid record ends
    /// the file (`valid_at_end`), which makes it damage.
    Legacy { valid_at_end: bool },
    /// A log with a commit: exactly the commit's records, every one of them
    /// verifying; `b_valid` says whether slot B held the commit (else A did).
    Committed { commit: Commit, b_valid: bool },
}

/// Where an open log file's parts are, and how far its records count.
#[derive(Clone, Copy, Debug)]
struct LogLayout {
    /// The offset of the first record.
    data_start: u64,
    /// The offset of the commit area (= `data_start` for the earlier layout).
    area_at: u64,
    bound: Bound,
}

impl LogLayout {
    /// Nothing at or past this offset is read as a record.
    fn limit(&self, size: u64) -> u64 {
        match self.bound {
            Bound::Legacy { .. } => size,
            Bound::Committed { commit, .. } => commit.end,
        }
    }
}

/// A log file's head, checked: the header, the prefix up to the data, and the
/// layout. Fails if the file holds another key or a value (`ERR_NOT_A_LOG`).
fn read_log_head(file: &dyn VfsFile, size: u64, path: &Path, key: &[u8], ctx: &SegmentContext<'_>) -> Result<(Header, Vec<u8>, LogLayout)> {
    let (header, meta, prefix) = keyfile::read_head(file, size, path, ctx)?;
    keyfile::check_key(&meta.key, key, path)?;
    if !header.is_log() {
        return Err(Error::new(ErrorCode::NotALog, "the key holds a value, not an append log").with_file(path));
    }
    let layout = open_layout(file, size, path, &header, &prefix, ctx)?;
    Ok((header, prefix, layout))
}

/// Reads a log's layout from its head (`prefix` holds at least the header
/// and meta segment): for the current layout, the commit (one read of the
/// commit area at most, usually none: it is in `prefix`), checked against the
/// file's size; for the earlier one, whether a valid record ends the file.
fn open_layout(file: &dyn VfsFile, size: u64, path: &Path, header: &Header, prefix: &[u8], ctx: &SegmentContext<'_>) -> Result<LogLayout> {
    // Every read of a log decides its layout here: an encrypted store refuses
    // a plaintext log before trusting its (unauthenticated) commit area.
    ctx.check_encrypted(header.codec).map_err(|e| e.with_file(path))?;
    let meta_end = HEADER_LEN as u64 + u64::from(header.meta_len);
    if header.flags == FLAG_LOG {
        let valid_at_end = last_record(file, size, meta_end, prefix, path)?.is_some();
        return Ok(LogLayout { data_start: meta_end, area_at: meta_end, bound: Bound::Legacy { valid_at_end } });
    }
    let data_start = meta_end + LOG_COMMIT_AREA;
    let mut area = [0u8; LOG_COMMIT_AREA as usize];
    match prefix.get(meta_end as usize..data_start as usize) {
        Some(bytes) => area.copy_from_slice(bytes),
        None => file.read_exact_at(&mut area, meta_end).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::corrupt("the log file ends inside its commit area").with_file(path),
            _ => Error::io(e, "cannot read the log file", path),
        })?,
    }
    let meta_stored = &prefix[HEADER_LEN..meta_end as usize];
    let (commit, b_valid) = choose_commit(&area, header.codec, ctx, meta_stored, data_start).map_err(|e| e.with_file(path))?;
    if size < commit.end {
        // Readers take no lock: an append may have landed since `size` was
        // read. It writes its records before its commit, so a file shorter
        // than the commit it read now is damaged; one that has grown is not.
        let now = file.size().map_err(|e| Error::io(e, "cannot stat the log file", path))?;
        if now < commit.end {
            return Err(Error::corrupt(format!(
                "the log file is {now} bytes, shorter than its acknowledged records, which end at offset {}",
                commit.end
            ))
            .with_file(path));
        }
    }
    Ok(LogLayout { data_start, area_at: meta_end, bound: Bound::Committed { commit, b_valid } })
}

/// What a forward walk of a whole log found.
struct Scan {
    /// The end of the last valid record (where a torn tail, if any, starts).
    end: u64,
    info: LogInfo,
    /// The checksum of the last valid record.
    last_sum: Option<u64>,
}

/// Fails unless the records found (`count`, the last one's checksum) are
/// exactly those `commit` acknowledged.
fn check_commit_end(commit: &Commit, count: u64, last_sum: Option<u64>, path: &Path) -> Result<()> {
    if count != commit.count || last_sum.unwrap_or(0) != commit.last_sum {
        return Err(Error::corrupt(format!(
            "the log's records do not match its commit: {count} records end at offset {}, the commit says {} with another last record",
            commit.end, commit.count
        ))
        .with_file(path));
    }
    Ok(())
}

/// Walks every record of a log from its start, verifying each (no payload
/// is kept), and hands each to `visit` (with the reader, to copy its bytes).
/// A record that does not verify is damage (`ERR_CORRUPT`) or, in a log of
/// the earlier layout with no valid record at its end, a torn tail that ends
/// the walk.
fn walk(
    file: &dyn VfsFile,
    size: u64,
    layout: &LogLayout,
    prefix: Vec<u8>,
    path: &Path,
    mut visit: impl FnMut(&mut RecordReader, &RecordHead) -> Result<()>,
) -> Result<Scan> {
    let mut reader = RecordReader::new(layout.data_start, layout.limit(size), prefix, 0);
    let mut out = Scan { end: layout.data_start, info: LogInfo::EMPTY, last_sum: None };
    let mut count = 0u64;
    loop {
        match reader.next(file, false, path)? {
            Step::Record(rec, _) => {
                if out.info.last_index.is_none() {
                    out.info.first_index = rec.index;
                }
                out.info.last_index = Some(rec.index);
                out.info.last_stamp = rec.stamp;
                out.last_sum = Some(rec.sum);
                out.end = rec.start + rec.len;
                count += 1;
                visit(&mut reader, &rec)?;
            }
            Step::End => break,
            Step::Stop => match layout.bound {
                Bound::Legacy { valid_at_end: true } => return Err(damaged(path, reader.pos)),
                Bound::Legacy { valid_at_end: false } => return Ok(out),
                Bound::Committed { commit, .. } => return Err(damaged_committed(path, reader.pos, &commit)),
            },
        }
    }
    if let Bound::Committed { commit, .. } = layout.bound {
        check_commit_end(&commit, count, out.last_sum, path)?;
    }
    Ok(out)
}

/// The [`LogInfo`] of an open log file, as `get`, `getMeta` and `keys` report
/// it: the last record found from the end of the acknowledged records (or,
/// in the earlier layout, of the file; one small read), and the first record
/// (usually in `prefix`, the bytes already read from the start). A log of the
/// earlier layout without a valid last record (a torn tail) is walked from
/// the start. In the current layout the last record must be the one the
/// commit names, and the first and the last must span the commit's count.
pub(crate) fn log_info(
    file: &dyn VfsFile,
    size: u64,
    path: &Path,
    header: &Header,
    prefix: &[u8],
    ctx: &SegmentContext<'_>,
) -> Result<LogInfo> {
    let meta_end = HEADER_LEN as u64 + u64::from(header.meta_len);
    if header.flags == FLAG_LOG {
        let Some(last) = last_record(file, size, meta_end, prefix, path)? else {
            let layout = LogLayout { data_start: meta_end, area_at: meta_end, bound: Bound::Legacy { valid_at_end: false } };
            return Ok(walk(file, size, &layout, prefix.to_vec(), path, |_, _| Ok(()))?.info);
        };
        let first_index = if last.start == meta_end {
            last.index
        } else {
            let mut reader = RecordReader::new(meta_end, size, prefix.to_vec(), 0);
            match reader.next(file, false, path)? {
                // The first record ends before the last starts, has a lower index,
                // and there is room for the records between them.
                Step::Record(first, _)
                    if first.index < last.index
                        && first.start + first.len <= last.start
                        && (last.index - first.index)
                            .checked_mul(RECORD_OVERHEAD as u64)
                            .is_some_and(|n| n <= last.start - first.start) =>
                {
                    first.index
                }
                _ => return Err(damaged(path, meta_end)),
            }
        };
        return Ok(LogInfo { first_index, last_index: Some(last.index), last_stamp: last.stamp });
    }
    let layout = open_layout(file, size, path, header, prefix, ctx)?;
    committed_info(file, &layout, prefix, path)
}

/// [`log_info`] of a log with a commit.
fn committed_info(file: &dyn VfsFile, layout: &LogLayout, prefix: &[u8], path: &Path) -> Result<LogInfo> {
    let Bound::Committed { commit, .. } = layout.bound else { unreachable!("a log with a commit") };
    if commit.count == 0 {
        return Ok(LogInfo::EMPTY);
    }
    let data_start = layout.data_start;
    let last = match last_record(file, commit.end, data_start, prefix, path)? {
        Some(last) if last.sum == commit.last_sum => last,
        _ => {
            return Err(Error::corrupt(format!(
                "the log is damaged: its last acknowledged record, ending at offset {}, does not verify",
                commit.end
            ))
            .with_file(path))
        }
    };
    let first = if commit.count == 1 && last.start == data_start {
        last
    } else {
        let mut reader = RecordReader::new(data_start, commit.end, prefix.to_vec(), 0);
        match reader.next(file, false, path)? {
            Step::Record(first, _) if commit.count > 1 && first.start + first.len <= last.start => first,
            _ => return Err(damaged_committed(path, data_start, &commit)),
        }
    };
    if first.index.checked_add(commit.count - 1) != Some(last.index) {
        return Err(Error::corrupt(format!(
            "the log's first and last acknowledged records (indexes {} and {}) do not span its {} records",
            first.index, last.index, commit.count
        ))
        .with_file(path));
    }
    Ok(LogInfo { first_index: first.index, last_index: Some(last.index), last_stamp: last.stamp })
}

/// Writes a whole log to `out`, a new empty file (FORMAT.md §4.6): the
/// header and `meta_stored`, the commit area, the records of `src` (read by
/// its layout) of index `keep_from` or more, copied as stored, then `extra`
/// encoded with the next indexes (randomness from `rng`, record by record).
/// The commit area (both slots: seq 1) is written last, at its place.
/// Returns where the log stands and its commit.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn write_log_whole(
    out: &mut dyn VfsFile,
    out_path: &Path,
    codec: Codec,
    ctx: &SegmentContext<'_>,
    meta_stored: &[u8],
    src: Option<(&dyn VfsFile, u64, &LogLayout, Vec<u8>, &Path)>,
    keep_from: u64,
    extra: &[NewRecord<'_>],
    rng: &mut dyn Randomness,
) -> Result<(LogInfo, Commit)> {
    let write =
        |out: &mut dyn VfsFile, bytes: &[u8]| out.write_all(bytes).map_err(|e| Error::io(e, "cannot write a staging file", out_path));
    let header = log_header(codec, meta_stored)?;
    let data_start = (HEADER_LEN + meta_stored.len()) as u64 + LOG_COMMIT_AREA;
    let mut pending = Vec::with_capacity(data_start as usize);
    pending.extend_from_slice(&header.encode());
    pending.extend_from_slice(meta_stored);
    pending.resize(data_start as usize, 0); // the commit area, written last
    let mut end = data_start;
    let mut info = LogInfo::EMPTY;
    let mut count = 0u64;
    let mut last_sum = 0u64;
    if let Some((file, size, layout, prefix, path)) = src {
        walk(file, size, layout, prefix, path, |reader, rec| {
            if rec.index < keep_from {
                return Ok(());
            }
            if info.last_index.is_none() {
                info.first_index = rec.index;
            }
            info.last_index = Some(rec.index);
            info.last_stamp = rec.stamp;
            last_sum = rec.sum;
            count += 1;
            end += rec.len;
            reader.copy_raw(file, rec, path, &mut |piece| {
                pending.extend_from_slice(piece);
                if pending.len() >= READ_BUF {
                    write(&mut *out, &pending)?;
                    pending.clear();
                }
                Ok(())
            })
        })?;
    }
    if !extra.is_empty() {
        let index = info.next_index()?;
        let (batch, sum) = encode_records(codec, ctx, index, extra, rng)?;
        if info.last_index.is_none() {
            info.first_index = index;
        }
        info.last_index = Some(index + (extra.len() as u64 - 1));
        info.last_stamp = extra[extra.len() - 1].stamp;
        last_sum = sum;
        count += extra.len() as u64;
        end += batch.len() as u64;
        write(&mut *out, &pending)?;
        pending.clear();
        write(&mut *out, &batch)?;
    }
    write(&mut *out, &pending)?;
    let commit = Commit { seq: 1, count, end, last_sum };
    let area = encode_commit_area(&commit, codec, ctx, meta_stored)?;
    out.write_all_at(&area, HEADER_LEN as u64 + meta_stored.len() as u64)
        .map_err(|e| Error::io(e, "cannot write a staging file", out_path))?;
    Ok((info, commit))
}

/// Logs this process has verified whole, by (store id, key hash): the meta
/// segment's checksum and the commit the file had then, and its first index.
/// While a log's file still has that commit, an append need not walk it again
/// (see [`FileStore::log_append`]); it checks the first and last records only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verified {
    /// The checksum of the meta segment: a trim or a new log changes it.
    meta_sum: u64,
    commit: Commit,
}

type VerifiedMap = HashMap<(u64, u128), Verified>;

/// At most this many logs are remembered; then the memory starts over.
const VERIFIED_MAX: usize = 4096;

fn verified() -> MutexGuard<'static, VerifiedMap> {
    static MAP: OnceLock<Mutex<VerifiedMap>> = OnceLock::new();
    MAP.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forgets every log of the store `store_id` this process verified (see
/// `FileStore::forget_verified_logs`).
pub(crate) fn forget_verified(store_id: u64) {
    verified().retain(|k, _| k.0 != store_id);
}

fn remember(id: (u64, u128), v: Option<Verified>) {
    let mut map = verified();
    match v {
        Some(v) => {
            if map.len() >= VERIFIED_MAX && !map.contains_key(&id) {
                map.clear();
            }
            map.insert(id, v);
        }
        None => {
            map.remove(&id);
        }
    }
}

/// A log's records, read forward in batches (see [`FileStore::open_log`](crate::FileStore::open_log)).
/// Holds the file open, a read buffer of at most 256 KiB, and the record at
/// hand. Reads the records as of its opening: later appends are not seen.
pub struct LogCursor {
    file: Option<Box<dyn VfsFile>>,
    path: PathBuf,
    codec: Codec,
    secret: Option<Vec<u8>>,
    key_hash: u128,
    accept_plaintext: bool,
    reader: RecordReader,
    bound: Bound,
    /// Records delivered so far, and the checksum of the last one.
    count: u64,
    last_sum: Option<u64>,
    /// An error met while filling a batch, reported by the next call (so the
    /// records before it are delivered first).
    pending: Option<Error>,
}

impl std::fmt::Debug for LogCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCursor").field("path", &self.path).field("done", &self.file.is_none()).finish()
    }
}

impl LogCursor {
    #[allow(clippy::too_many_arguments)]
    fn with_layout(
        file: Box<dyn VfsFile>,
        size: u64,
        path: PathBuf,
        header: &Header,
        layout: LogLayout,
        prefix: Vec<u8>,
        secret: Option<Vec<u8>>,
        key_hash: u128,
        accept_plaintext: bool,
    ) -> LogCursor {
        let limit = match layout.bound {
            Bound::Legacy { .. } => size.max(layout.data_start),
            Bound::Committed { commit, .. } => commit.end,
        };
        LogCursor {
            file: Some(file),
            path,
            codec: header.codec,
            secret,
            key_hash,
            accept_plaintext,
            reader: RecordReader::new(layout.data_start, limit, prefix, 0),
            bound: layout.bound,
            count: 0,
            last_sum: None,
            pending: None,
        }
    }

    /// The next at most `max` (at least 1) records, in order; `None` once the
    /// readable log is exhausted. A batch also ends once its records hold
    /// 16 MiB, so it may be shorter than `max` before the end. Damage (an
    /// acknowledged record that does not verify; in a log of the earlier
    /// layout, a record that does not verify when a valid record ends the
    /// file) is `ERR_CORRUPT`, returned by the call after the one that
    /// delivered the records before it; a torn tail just ends the log.
    pub fn next_batch(&mut self, max: usize) -> Result<Option<Vec<LogRecord>>> {
        if let Some(e) = self.pending.take() {
            self.file = None;
            return Err(e);
        }
        let max = max.max(1);
        let Some(file) = self.file.as_deref() else { return Ok(None) };
        let ctx = SegmentContext { secret: self.secret.as_deref(), key_hash: self.key_hash, accept_plaintext: self.accept_plaintext };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // A batch also ends at 16 MiB of records, so that `max` bounds memory
        // only as much as the records' sizes allow.
        while out.len() < max && bytes < 16 << 20 {
            let step = match self.reader.next(file, true, &self.path) {
                Ok(step) => step,
                Err(e) => {
                    self.pending = Some(e);
                    break;
                }
            };
            match step {
                Step::Record(rec, payload) => {
                    let stored = payload.expect("asked for");
                    match self.codec.decode_at(&ctx, SegmentKind::Record, Some(rec.index), &stored) {
                        Ok(plain) => {
                            let bytes_ = plain.into_owned();
                            bytes += bytes_.len();
                            self.count += 1;
                            self.last_sum = Some(rec.sum);
                            out.push(LogRecord { index: rec.index, stamp: rec.stamp, serializer: rec.serializer, bytes: bytes_ });
                        }
                        Err(e) => {
                            self.pending = Some(e.with_file(&self.path));
                            break;
                        }
                    }
                }
                Step::End => {
                    if let Bound::Committed { commit, .. } = self.bound {
                        if let Err(e) = check_commit_end(&commit, self.count, self.last_sum, &self.path) {
                            self.pending = Some(e);
                            break;
                        }
                    }
                    self.file = None;
                    break;
                }
                Step::Stop => {
                    match self.bound {
                        Bound::Legacy { valid_at_end: true } => self.pending = Some(damaged(&self.path, self.reader.pos)),
                        Bound::Committed { commit, .. } => self.pending = Some(damaged_committed(&self.path, self.reader.pos, &commit)),
                        // A torn tail: ignored.
                        Bound::Legacy { valid_at_end: false } => self.file = None,
                    }
                    break;
                }
            }
        }
        if out.is_empty() {
            return match self.pending.take() {
                Some(e) => {
                    self.file = None;
                    Err(e)
                }
                None => Ok(None),
            };
        }
        Ok(Some(out))
    }

    /// Closes the file; later batches are `None`.
    pub fn close(&mut self) {
        self.file = None;
        self.pending = None;
    }
}

/// `FileStore::log_append` (documented there) in the store directory `files`.
pub(crate) fn append(files: &StoreDir, key: &[u8], records: &[NewRecord<'_>], create_meta: &[u8]) -> Result<LogInfo> {
    files.check_writable()?;
    key::validate(key)?;
    if records.is_empty() {
        return Err(Error::new(ErrorCode::InvalidArgument, "an append takes at least one record"));
    }
    let key_hash = keyhash::key_hash(key);
    let path = files.file_path(key);
    let mut file = match files.vfs.open_write(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return create(files, key, records, create_meta),
        Err(e) => return Err(Error::io(e, "cannot open the log file", &path)),
    };
    let size = file.size().map_err(|e| Error::io(e, "cannot stat the log file", &path))?;
    let ctx = files.context(key_hash);
    let (header, prefix, layout) = read_log_head(&*file, size, &path, key, &ctx)?;
    let meta_stored = prefix[HEADER_LEN..HEADER_LEN + header.meta_len as usize].to_vec();
    let Bound::Committed { commit, b_valid } = layout.bound else {
        // The earlier layout: migrated by a rewrite, the new records after the old.
        remember((files.id, key_hash), None);
        let (info, commit) = files.write_whole(key, |out, stage| {
            let src: &dyn VfsFile = &*file;
            write_log_whole(
                out,
                stage,
                header.codec,
                &ctx,
                &meta_stored,
                Some((src, size, &layout, prefix, &path)),
                0,
                records,
                &mut OsRandom,
            )
        })?;
        remember((files.id, key_hash), Some(Verified { meta_sum: header.meta_checksum, commit }));
        return Ok(info);
    };
    let id = (files.id, key_hash);
    let known = verified().get(&id).copied();
    let info = if known == Some(Verified { meta_sum: header.meta_checksum, commit }) {
        committed_info(&*file, &layout, &prefix, &path)?
    } else {
        walk(&*file, size, &layout, prefix, &path, |_, _| Ok(()))?.info
    };
    let index = info.next_index().map_err(|e| e.with_file(&path))?;
    let (batch, last_sum) = encode_records(header.codec, &ctx, index, records, &mut OsRandom).map_err(|e| e.with_file(&path))?;
    let new = Commit { seq: commit.seq + 1, count: commit.count + records.len() as u64, end: commit.end + batch.len() as u64, last_sum };
    let slot = encode_commit_slot(&new, header.codec, &ctx, &meta_stored).map_err(|e| e.with_file(&path))?;
    let sync = |file: &dyn VfsFile| -> Result<()> {
        if files.options().sync_blob {
            file.sync().map_err(|e| files.fsync_failed(e, "cannot fsync the log file", &path))?;
        }
        Ok(())
    };
    let write_at = |file: &mut dyn VfsFile, bytes: &[u8], at: u64| {
        file.write_all_at(bytes, at).map_err(|e| Error::io(e, "cannot write to the log file", &path))
    };
    // Forget the file's state first: if a write fails halfway, the next
    // append must look at the file again.
    remember(id, None);
    let slot_b = layout.area_at + COMMIT_SLOT as u64;
    if !b_valid {
        // A crash while slot B was written: B gets A's commit (durably)
        // before A is written again, so one slot always holds a commit.
        let old = encode_commit_slot(&commit, header.codec, &ctx, &meta_stored).map_err(|e| e.with_file(&path))?;
        write_at(&mut *file, &old, slot_b)?;
        sync(&*file)?;
    }
    if size > commit.end {
        file.set_len(commit.end).map_err(|e| Error::io(e, "cannot cut the torn tail of the log file", &path))?;
    }
    write_at(&mut *file, &batch, commit.end)?;
    write_at(&mut *file, &slot, layout.area_at)?;
    sync(&*file)?;
    write_at(&mut *file, &slot, slot_b)?;
    sync(&*file)?;
    remember(id, Some(Verified { meta_sum: header.meta_checksum, commit: new }));
    let first_index = if info.last_index.is_some() { info.first_index } else { index };
    let last_stamp = records[records.len() - 1].stamp;
    Ok(LogInfo { first_index, last_index: Some(index + (records.len() as u64 - 1)), last_stamp })
}

/// A new log with `records` (indexes 0, 1, ...), written whole.
fn create(files: &StoreDir, key: &[u8], records: &[NewRecord<'_>], meta: &[u8]) -> Result<LogInfo> {
    let path = files.file_path(key);
    let secret = files.options().encryption_key.as_deref();
    let codec = files.new_file_codec();
    let key_hash = keyhash::key_hash(key);
    let ctx = SegmentContext { secret, key_hash, accept_plaintext: false };
    let mut rng = OsRandom;
    let meta_stored = encode_log_meta(codec, secret, key, meta, &mut rng).map_err(|e| e.with_file(&path))?;
    remember((files.id, key_hash), None);
    // A record that cannot be encoded fails the write before the rename:
    // the staging file is removed, nothing else was touched.
    let (info, commit) =
        files.write_whole(key, |out, stage| write_log_whole(out, stage, codec, &ctx, &meta_stored, None, 0, records, &mut rng))?;
    let meta_sum = xxh3_64(&meta_stored);
    remember((files.id, key_hash), Some(Verified { meta_sum, commit }));
    Ok(info)
}

/// `FileStore::open_log` (documented there) in the store directory `files`.
pub(crate) fn open(files: &StoreDir, key: &[u8]) -> Result<Option<LogCursor>> {
    let Some((file, size, path)) = files.open_key(key)? else { return Ok(None) };
    let key_hash = keyhash::key_hash(key);
    let ctx = files.context(key_hash);
    let (header, prefix, layout) = read_log_head(&*file, size, &path, key, &ctx)?;
    let secret = files.options().encryption_key.clone();
    Ok(Some(LogCursor::with_layout(file, size, path, &header, layout, prefix, secret, key_hash, ctx.accept_plaintext)))
}

/// `FileStore::log_trim` (documented there) in the store directory `files`.
pub(crate) fn trim(files: &StoreDir, key: &[u8], keep_from: u64, meta: &[u8]) -> Result<LogInfo> {
    files.check_writable()?;
    let Some((file, size, path)) = files.open_key(key)? else { return Ok(LogInfo::EMPTY) };
    let key_hash = keyhash::key_hash(key);
    let ctx = files.context(key_hash);
    let (header, prefix, layout) = read_log_head(&*file, size, &path, key, &ctx)?;
    let meta_stored = encode_log_meta(header.codec, ctx.secret, key, meta, &mut OsRandom).map_err(|e| e.with_file(&path))?;
    remember((files.id, key_hash), None);
    let (info, commit) = files.write_whole(key, |out, stage| {
        write_log_whole(
            out,
            stage,
            header.codec,
            &ctx,
            &meta_stored,
            Some((&*file, size, &layout, prefix, &path)),
            keep_from,
            &[],
            &mut OsRandom,
        )
    })?;
    remember((files.id, key_hash), Some(Verified { meta_sum: xxh3_64(&meta_stored), commit }));
    Ok(info)
}
