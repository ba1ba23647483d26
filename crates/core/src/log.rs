//! Append logs of records (FORMAT.md §4.6).
//!
//! A log is a key file with [`FLAG_LOG`]: the header (`v = 0`), the meta
//! segment, then records to the end of the file, each
//! `s | index | stamp | serializer | payload | xxh3_64 | s`. An append writes
//! one or more records (a group commit) in place at the end of the last valid
//! record, with one `pwrite` (after cutting a torn tail with `ftruncate`), and
//! fsyncs the file once; a new log and a trim are written whole, through a
//! staging file and a rename (§5).
//!
//! Reading rules (§4.6): records are read from `48 + m` on, and the first
//! record that does not verify (length past the end, checksum, the two length
//! fields, an index that is not the previous one plus 1) ends the readable
//! log. If no valid record ends exactly at the end of the file, the bytes from
//! there on are a torn tail of an append that never reported success, and are
//! ignored; if one does, the log is damaged in the middle: `ERR_CORRUPT`.
//!
//! Every read here is bounded: a 256 KiB buffer plus, at most, the record at
//! hand. No file is read whole.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::cke;
use crate::codec::{Codec, OsRandom, Randomness, SegmentContext, SegmentKind, ENCRYPTOR_AES, ENCRYPTOR_NONE};
use crate::error::{Error, ErrorCode, Result};
use crate::format::{self, Header, FLAG_LOG, HEADER_LEN};
use crate::keyhash::{self, KEY_FILE_SUFFIX};
use crate::staging::{self, InFlight};
use crate::store::FileStore;
use crate::vfs::VfsFile;

/// The bytes of a record besides its payload: `s`, index, stamp, serializer
/// (21 bytes) before it, checksum and `s` again (12 bytes) after it.
pub const RECORD_OVERHEAD: usize = 33;
/// The bytes of a record before its payload.
const RECORD_HEAD: usize = 21;
/// The bytes of a record after its payload: checksum and `s` again.
const RECORD_TRAILER: usize = 12;
/// The read buffer of a scan or a cursor; a larger record is read on its own.
const READ_BUF: usize = 256 * 1024;
/// How much of the end of a log the last-record check reads at once.
const TAIL_READ: usize = 4096;

/// Where a log stands: the index of its first and last record and the stamp
/// of the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogInfo {
    /// The index of the first record; 0 when the log has no record.
    pub first_index: u64,
    /// The index of the last record; `None` when the log has no record.
    pub last_index: Option<u64>,
    /// The stamp (ms since the epoch) of the last record; 0 when none.
    pub last_stamp: u64,
}

impl LogInfo {
    /// A log with no record.
    pub const EMPTY: LogInfo = LogInfo { first_index: 0, last_index: None, last_stamp: 0 };

    /// The index the next append gets: the last one plus 1, or 0 for a log
    /// with no record (FORMAT.md §4.6).
    fn next_index(&self) -> Result<u64> {
        match self.last_index {
            None => Ok(0),
            Some(i) => i
                .checked_add(1)
                .ok_or_else(|| Error::new(ErrorCode::InvalidArgument, "the log has used up every record index")),
        }
    }
}

/// One record of a log, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The record's index.
    pub index: u64,
    /// The stamp of its append (ms since the epoch).
    pub stamp: u64,
    /// Serializer id of the payload (FORMAT.md §4.1).
    pub serializer: u8,
    /// The payload's plain bytes (decrypted and decompressed).
    pub bytes: Vec<u8>,
}

/// A record to append (see [`FileStore::log_append`]): its index is the
/// store's to choose, the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// Serializer id of the payload (FORMAT.md §4.1).
    pub serializer: u8,
    /// The stamp of the append (ms since the epoch).
    pub stamp: u64,
    /// The payload's plain bytes (the store compresses and encrypts them).
    pub payload: &'a [u8],
}

/// A whole log file, parsed (see [`parse_log`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedLog {
    /// The header.
    pub header: Header,
    /// The stored key's CKE (not validated).
    pub key: Vec<u8>,
    /// The metadata bytes.
    pub meta: Vec<u8>,
    /// The readable records, in order (a torn tail is not among them).
    pub records: Vec<LogRecord>,
}

/// The header and stored meta segment of a log with `codec`: `v = 0`, the
/// value checksum that of no bytes, serializer 0, [`FLAG_LOG`]. The meta
/// segment's salt and IV (with encryption) come from `rng`.
pub fn encode_log_head(
    codec: Codec,
    secret: Option<&[u8]>,
    key_cke: &[u8],
    meta: &[u8],
    rng: &mut dyn Randomness,
) -> Result<Vec<u8>> {
    let ctx = SegmentContext { secret, key_hash: keyhash::key_hash(key_cke) };
    let meta_plain = format::compose_meta(key_cke, meta)?;
    let meta_stored = codec.encode(&ctx, SegmentKind::Meta, &meta_plain, rng)?;
    let meta_len = u32::try_from(meta_stored.len())
        .map_err(|_| Error::new(ErrorCode::InvalidArgument, "a key and its metadata exceed the format's 4 GiB"))?;
    let header = Header {
        flags: FLAG_LOG,
        serializer: 0,
        codec,
        meta_len,
        value_len: 0,
        meta_checksum: xxh3_64(&meta_stored),
        value_checksum: xxh3_64(&[]),
    };
    let mut head = Vec::with_capacity(HEADER_LEN + meta_stored.len());
    head.extend_from_slice(&header.encode());
    head.extend_from_slice(&meta_stored);
    Ok(head)
}

/// One record as stored (FORMAT.md §4.6): the payload is `plain` encoded with
/// `codec` as kind 4 with `index` bound into the MAC; its salt and IV (with
/// encryption) come from `rng`. Fails with `ERR_INVALID_ARGUMENT` if the
/// stored payload exceeds 4 GiB - 1.
pub fn encode_record(
    codec: Codec,
    ctx: &SegmentContext<'_>,
    index: u64,
    stamp: u64,
    serializer: u8,
    plain: &[u8],
    rng: &mut dyn Randomness,
) -> Result<Vec<u8>> {
    let mut rec = Vec::new();
    push_record(&mut rec, codec, ctx, index, stamp, serializer, plain, rng)?;
    Ok(rec)
}

/// [`encode_record`], appended to `out`; returns the record's checksum.
#[allow(clippy::too_many_arguments)]
fn push_record(
    out: &mut Vec<u8>,
    codec: Codec,
    ctx: &SegmentContext<'_>,
    index: u64,
    stamp: u64,
    serializer: u8,
    plain: &[u8],
    rng: &mut dyn Randomness,
) -> Result<u64> {
    let payload = codec.encode_at(ctx, SegmentKind::Record, Some(index), plain, rng)?;
    let s = u32::try_from(payload.len())
        .map_err(|_| Error::new(ErrorCode::InvalidArgument, "a log record exceeds the format's 4 GiB"))?;
    out.try_reserve(RECORD_OVERHEAD + payload.len()).map_err(|_| {
        Error::new(ErrorCode::InvalidArgument, format!("cannot allocate {} bytes for log records", out.len() + RECORD_OVERHEAD + payload.len()))
    })?;
    let start = out.len();
    out.extend_from_slice(&s.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&stamp.to_le_bytes());
    out.push(serializer);
    out.extend_from_slice(&payload);
    let sum = xxh3_64(&out[start..]);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&s.to_le_bytes());
    Ok(sum)
}

/// The records of one append, stored one after the other as a single run of
/// bytes (what [`FileStore::log_append`] writes with one `pwrite`), with the
/// indexes `first_index`, `first_index + 1`, ...; randomness is drawn record
/// by record, in order. Returns the bytes and the last record's checksum.
/// Every record is encoded before anything is written, so a record that
/// cannot be stored fails the whole append: `ERR_INVALID_ARGUMENT` for no
/// records, an index past `u64::MAX`, or a stored payload over 4 GiB - 1.
pub fn encode_records(
    codec: Codec,
    ctx: &SegmentContext<'_>,
    first_index: u64,
    records: &[NewRecord<'_>],
    rng: &mut dyn Randomness,
) -> Result<(Vec<u8>, u64)> {
    if records.is_empty() {
        return Err(Error::new(ErrorCode::InvalidArgument, "an append takes at least one record"));
    }
    first_index
        .checked_add(records.len() as u64 - 1)
        .ok_or_else(|| Error::new(ErrorCode::InvalidArgument, "the log has used up every record index"))?;
    let total = records.iter().fold(0usize, |n, r| n.saturating_add(RECORD_OVERHEAD).saturating_add(r.payload.len()));
    let mut out = Vec::new();
    // A guess (compression may shrink, encryption grows by a few bytes).
    let _ = out.try_reserve(total.saturating_add(records.len() * 64));
    let mut sum = 0;
    for (i, r) in records.iter().enumerate() {
        sum = push_record(&mut out, codec, ctx, first_index + i as u64, r.stamp, r.serializer, r.payload, rng)?;
    }
    Ok((out, sum))
}

/// A new log file: [`encode_log_head`], then record 0 ([`encode_record`]).
/// Randomness is drawn in that order: the meta segment's salt and IV, then
/// the record's. This is exactly what [`FileStore::log_append`] writes for a
/// missing key and one record (with several: the head, then
/// [`encode_records`] from index 0).
#[allow(clippy::too_many_arguments)]
pub fn encode_new_log(
    codec: Codec,
    secret: Option<&[u8]>,
    key_cke: &[u8],
    meta: &[u8],
    stamp: u64,
    serializer: u8,
    plain: &[u8],
    rng: &mut dyn Randomness,
) -> Result<Vec<u8>> {
    let mut file = encode_log_head(codec, secret, key_cke, meta, rng)?;
    let ctx = SegmentContext { secret, key_hash: keyhash::key_hash(key_cke) };
    file.extend_from_slice(&encode_record(codec, &ctx, 0, stamp, serializer, plain, rng)?);
    Ok(file)
}

/// Parses a whole log file held in memory, with the reading rules of
/// FORMAT.md §4.6 (a torn tail is left out; damage in the middle is
/// `ERR_CORRUPT`). For tools and tests; the store reads logs in pieces.
pub fn parse_log(bytes: &[u8], ctx: &SegmentContext<'_>) -> Result<ParsedLog> {
    let size = bytes.len() as u64;
    let (header, meta) = format::parse_head(bytes, size, ctx)?;
    if header.flags != FLAG_LOG {
        return Err(Error::new(ErrorCode::NotALog, "the file is not an append log"));
    }
    let file = MemFile(bytes.to_vec());
    let mut cursor = LogCursor::new(
        Box::new(file),
        size,
        PathBuf::new(),
        &header,
        bytes.to_vec(),
        ctx.secret.map(<[u8]>::to_vec),
        ctx.key_hash,
    )?;
    let mut records = Vec::new();
    while let Some(batch) = cursor.next_batch(usize::MAX)? {
        records.extend(batch);
    }
    Ok(ParsedLog { header, key: meta.key, meta: meta.meta, records })
}

/// A file held in memory, for [`parse_log`].
struct MemFile(Vec<u8>);

impl VfsFile for MemFile {
    fn write_all(&mut self, _: &[u8]) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "read only"))
    }

    fn write_all_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "read only"))
    }

    fn set_len(&mut self, _: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "read only"))
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

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
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
                    Error::new(ErrorCode::InvalidArgument, format!("cannot allocate {s} bytes for a log record"))
                        .with_file(path)
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
    fn copy_raw(
        &mut self,
        file: &dyn VfsFile,
        rec: &RecordHead,
        path: &Path,
        out: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let (mut at, end) = (rec.start, rec.start + rec.len);
        while at < end {
            let n = (end - at).min(READ_BUF as u64) as usize;
            let piece = self
                .window(file, at, n, path)?
                .ok_or_else(|| Error::corrupt("the log file shrank while it was read").with_file(path))?;
            out(piece)?;
            at += n as u64;
        }
        Ok(())
    }
}

/// The last record of a log, found from the end of the file (FORMAT.md §4.6):
/// the last 12 bytes give its checksum and `s`; it must start at or after
/// `data_start` and verify. `None` if it does not: the file has no records, or
/// ends in a torn tail.
fn last_record(file: &dyn VfsFile, size: u64, data_start: u64, prefix: &[u8], path: &Path) -> Result<Option<RecordHead>> {
    if size < data_start + RECORD_OVERHEAD as u64 {
        return Ok(None);
    }
    // One read of the end of the file holds a small last record whole.
    let (buf, buf_start) = if size <= prefix.len() as u64 {
        (prefix.to_vec(), 0)
    } else {
        let n = (size - data_start).min(TAIL_READ as u64) as usize;
        let mut tail = vec![0u8; n];
        match file.read_exact_at(&mut tail, size - n as u64) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::io(e, "cannot read the log file", path)),
        }
        (tail, size - n as u64)
    };
    let end = (size - buf_start) as usize;
    let s = le_u32(&buf[end - 4..end]);
    let len = RECORD_OVERHEAD as u64 + u64::from(s);
    if len > size - data_start {
        return Ok(None);
    }
    let mut reader = RecordReader::new(size - len, size, buf, buf_start);
    match reader.next(file, false, path)? {
        Step::Record(rec, _) => Ok(Some(rec)),
        Step::End | Step::Stop => Ok(None),
    }
}

fn damaged(path: &Path, at: u64) -> Error {
    Error::corrupt(format!(
        "the log is damaged in the middle: the record at offset {at} does not verify, yet a valid record ends the file"
    ))
    .with_file(path)
}

/// What a forward scan of a whole log found.
struct Scan {
    /// The end of the last valid record (where a torn tail, if any, starts).
    end: u64,
    info: LogInfo,
    /// The checksum of the last valid record.
    last_sum: Option<u64>,
}

/// Scans every record of a log from `data_start`, verifying each (no payload
/// is kept). A record that does not verify ends the scan: a torn tail, unless
/// `valid_at_end` (a valid record ends the file), which makes it `ERR_CORRUPT`.
fn scan(file: &dyn VfsFile, size: u64, data_start: u64, prefix: Vec<u8>, valid_at_end: bool, path: &Path) -> Result<Scan> {
    let mut reader = RecordReader::new(data_start, size, prefix, 0);
    let mut out = Scan { end: data_start, info: LogInfo::EMPTY, last_sum: None };
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
            }
            Step::End => return Ok(out),
            Step::Stop if valid_at_end => return Err(damaged(path, reader.pos)),
            Step::Stop => return Ok(out),
        }
    }
}

/// The [`LogInfo`] of an open log file, as `get`, `getMeta` and `keys` report
/// it: the last record found from the end (one small read), and the first
/// record (usually in `prefix`, the bytes already read from the start).
/// Without a valid last record (a torn tail) the log is scanned from the start.
pub(crate) fn log_info(file: &dyn VfsFile, size: u64, path: &Path, header: &Header, prefix: &[u8]) -> Result<LogInfo> {
    let data_start = (HEADER_LEN as u64) + u64::from(header.meta_len);
    let Some(last) = last_record(file, size, data_start, prefix, path)? else {
        return Ok(scan(file, size, data_start, prefix.to_vec(), false, path)?.info);
    };
    let first_index = if last.start == data_start {
        last.index
    } else {
        let mut reader = RecordReader::new(data_start, size, prefix.to_vec(), 0);
        match reader.next(file, false, path)? {
            // The first record ends before the last starts, has a lower index,
            // and there is room for the records between them.
            Step::Record(first, _)
                if first.index < last.index
                    && first.start + first.len <= last.start
                    && (last.index - first.index).checked_mul(RECORD_OVERHEAD as u64).is_some_and(|n| n <= last.start - first.start) =>
            {
                first.index
            }
            _ => return Err(damaged(path, data_start)),
        }
    };
    Ok(LogInfo { first_index, last_index: Some(last.index), last_stamp: last.stamp })
}

/// Logs this process has verified whole, by (store id, key hash): the size
/// and last record checksum the file had then, and its first index. While a
/// log's file still has that size and last record, an append need not scan
/// it again (see [`FileStore::log_append`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verified {
    /// The checksum of the meta segment: a trim or a new log changes it.
    meta_sum: u64,
    size: u64,
    last_sum: u64,
    first_index: u64,
}

type VerifiedMap = HashMap<(u64, u128), Verified>;

/// At most this many logs are remembered; then the memory starts over.
const VERIFIED_MAX: usize = 4096;

fn verified() -> MutexGuard<'static, VerifiedMap> {
    static MAP: OnceLock<Mutex<VerifiedMap>> = OnceLock::new();
    MAP.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner)
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

/// A log's records, read forward in batches (see [`FileStore::open_log`]).
/// Holds the file open, a read buffer of at most 256 KiB, and the record at
/// hand. Reads the records as of its opening: later appends are not seen.
pub struct LogCursor {
    file: Option<Box<dyn VfsFile>>,
    path: PathBuf,
    codec: Codec,
    secret: Option<Vec<u8>>,
    key_hash: u128,
    reader: RecordReader,
    /// A valid record ended the file at open: a record that does not verify
    /// before the end is damage (`ERR_CORRUPT`), not a torn tail.
    valid_at_end: bool,
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
    fn new(
        file: Box<dyn VfsFile>,
        size: u64,
        path: PathBuf,
        header: &Header,
        prefix: Vec<u8>,
        secret: Option<Vec<u8>>,
        key_hash: u128,
    ) -> Result<LogCursor> {
        let data_start = (HEADER_LEN as u64) + u64::from(header.meta_len);
        let valid_at_end = last_record(&*file, size, data_start, &prefix, &path)?.is_some();
        Ok(LogCursor {
            file: Some(file),
            path,
            codec: header.codec,
            secret,
            key_hash,
            reader: RecordReader::new(data_start, size, prefix, 0),
            valid_at_end,
            pending: None,
        })
    }

    /// The next at most `max` (at least 1) records, in order; `None` once the
    /// readable log is exhausted. A batch also ends once its records hold
    /// 16 MiB, so it may be shorter than `max` before the end. A record that
    /// does not verify before the end, when a valid record ends the file, is
    /// `ERR_CORRUPT` (returned by the call after the one that delivered the
    /// records before it); a torn tail just ends the log.
    pub fn next_batch(&mut self, max: usize) -> Result<Option<Vec<LogRecord>>> {
        if let Some(e) = self.pending.take() {
            self.file = None;
            return Err(e);
        }
        let max = max.max(1);
        let Some(file) = self.file.as_deref() else { return Ok(None) };
        let ctx = SegmentContext { secret: self.secret.as_deref(), key_hash: self.key_hash };
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
                            out.push(LogRecord { index: rec.index, stamp: rec.stamp, serializer: rec.serializer, bytes: bytes_ });
                        }
                        Err(e) => {
                            self.pending = Some(e.with_file(&self.path));
                            break;
                        }
                    }
                }
                Step::End => {
                    self.file = None;
                    break;
                }
                Step::Stop if self.valid_at_end => {
                    self.pending = Some(damaged(&self.path, self.reader.pos));
                    break;
                }
                Step::Stop => {
                    // A torn tail: ignored.
                    self.file = None;
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

/// Where an append goes: the end of the last valid record, and the log as it
/// stands there.
struct AppendAt {
    end: u64,
    info: LogInfo,
}

impl FileStore {
    /// The codec new files use: the store's compressor, and AES when it has a key.
    fn new_file_codec(&self) -> Codec {
        let encryptor = if self.options().encryption_key.is_some() { ENCRYPTOR_AES } else { ENCRYPTOR_NONE };
        Codec { compressor: self.options().compressor, encryptor }
    }

    /// Writes `key`'s file whole through a new staging file (FORMAT.md §5):
    /// `fill` writes it, then fsync, rename over the key file, directory
    /// fsync (the fsyncs only with `sync_blob`). A failure leaves no staging file.
    fn write_whole<T>(&self, key: &[u8], fill: impl FnOnce(&mut dyn VfsFile, &Path) -> Result<T>) -> Result<T> {
        let target = self.file_path(key);
        let name = keyhash::file_name(key);
        let hex = &name[..name.len() - KEY_FILE_SUFFIX.len()];
        let stage_name = staging::staging_name(hex, std::process::id(), staging::next_seq());
        let stage = self.dir.join(&stage_name);
        // Registered before it exists, so a concurrent sweep never takes it.
        let _in_flight = InFlight::register(self.id, stage_name);
        let mut file = self.vfs.create_new(&stage).map_err(|e| Error::io(e, "cannot create a staging file", &stage))?;
        let mut renamed = false;
        let result = (|| {
            let out = fill(&mut *file, &stage)?;
            if self.options().sync_blob {
                file.sync().map_err(|e| self.fsync_failed(e, "cannot fsync a staging file", &stage))?;
            }
            self.vfs
                .rename(&stage, &target)
                .map_err(|e| Error::io(e, "cannot rename a staging file over the key file", &target))?;
            renamed = true;
            if self.options().sync_blob {
                self.sync_dir()?;
            }
            Ok(out)
        })();
        drop(file);
        if !renamed {
            let _ = self.vfs.remove_file(&stage);
        }
        result
    }

    /// Appends `records` (one or more, in order) to the log of `key` (its
    /// CKE) as one group commit, and returns where the log stands after the
    /// last of them. The caller holds the key's lock.
    ///
    /// Every record is encoded first ([`encode_records`]): no records, a
    /// payload too large, or indexes running out fail with
    /// `ERR_INVALID_ARGUMENT` before anything is written.
    ///
    /// - No file: a new log is written whole (staging file, fsync, rename,
    ///   directory fsync) with the store's codec, the meta segment from
    ///   `create_meta`, and the records as records 0, 1, ...
    /// - A log: the records go after the last valid record (a torn tail is
    ///   cut off first), encoded with the file's codec, with the next
    ///   indexes, all with ONE `pwrite`; then the file is fsynced once (with
    ///   `sync_blob`; a failed fsync poisons the store). `create_meta` is not
    ///   used.
    /// - Any other key file: `ERR_NOT_A_LOG`, the file unchanged.
    ///
    /// The first append to a log in this process scans it whole: a log
    /// damaged in the middle is `ERR_CORRUPT` and left unchanged. Later
    /// appends read only its last record, as long as the file still ends
    /// where this process left it.
    ///
    /// A crash before this returns keeps every append acknowledged before,
    /// and of this one, what reached the disk: for a new log all its records
    /// or none (the rename decides); for an existing log, when the file's
    /// un-synced bytes reach the disk as a prefix (as the simulated file
    /// system models it), any prefix of the records, from none to all,
    /// followed by a torn tail that readers ignore and the next append cuts.
    /// (A file system that wrote back a later page of the one `pwrite` and
    /// not an earlier one would leave a valid record after a damaged one:
    /// `ERR_CORRUPT` by the reading rules of FORMAT.md §4.6, with every
    /// acknowledged record still readable before the damage.)
    pub fn log_append(&self, key: &[u8], records: &[NewRecord<'_>], create_meta: &[u8]) -> Result<LogInfo> {
        self.check_writable()?;
        cke::validate(key)?;
        if records.is_empty() {
            return Err(Error::new(ErrorCode::InvalidArgument, "an append takes at least one record"));
        }
        let key_hash = keyhash::key_hash(key);
        let path = self.file_path(key);
        let mut file = match self.vfs.open_write(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.log_create(key, records, create_meta),
            Err(e) => return Err(Error::io(e, "cannot open the log file", &path)),
        };
        let size = file.size().map_err(|e| Error::io(e, "cannot stat the log file", &path))?;
        let ctx = self.context(key_hash);
        let (header, meta, prefix) = Self::read_head(&*file, size, &path, &ctx)?;
        Self::check_key(&meta.key, key, &path)?;
        if header.flags != FLAG_LOG {
            return Err(Error::new(ErrorCode::NotALog, "the key holds a value, not an append log").with_file(&path));
        }
        let at = self.append_at(&*file, size, &path, &header, prefix, key_hash)?;
        let index = at.info.next_index().map_err(|e| e.with_file(&path))?;
        let (batch, last_sum) =
            encode_records(header.codec, &ctx, index, records, &mut OsRandom).map_err(|e| e.with_file(&path))?;
        let last_index = index + (records.len() as u64 - 1);
        if at.end < size {
            file.set_len(at.end).map_err(|e| Error::io(e, "cannot cut the torn tail of the log file", &path))?;
        }
        // Forget the file's state first: if the write fails halfway, the
        // next append must look at the file again.
        remember((self.id, key_hash), None);
        file.write_all_at(&batch, at.end).map_err(|e| Error::io(e, "cannot write to the log file", &path))?;
        if self.options().sync_blob {
            file.sync().map_err(|e| self.fsync_failed(e, "cannot fsync the log file", &path))?;
        }
        let first_index = if at.info.last_index.is_some() { at.info.first_index } else { index };
        let v = Verified { meta_sum: header.meta_checksum, size: at.end + batch.len() as u64, last_sum, first_index };
        remember((self.id, key_hash), Some(v));
        let last_stamp = records[records.len() - 1].stamp;
        Ok(LogInfo { first_index, last_index: Some(last_index), last_stamp })
    }

    /// A new log with `records` (indexes 0, 1, ...), written whole.
    fn log_create(&self, key: &[u8], records: &[NewRecord<'_>], meta: &[u8]) -> Result<LogInfo> {
        let path = self.file_path(key);
        let secret = self.options().encryption_key.as_deref();
        let codec = self.new_file_codec();
        let key_hash = keyhash::key_hash(key);
        let ctx = SegmentContext { secret, key_hash };
        let mut rng = OsRandom;
        let head = encode_log_head(codec, secret, key, meta, &mut rng).map_err(|e| e.with_file(&path))?;
        let (batch, last_sum) = encode_records(codec, &ctx, 0, records, &mut rng).map_err(|e| e.with_file(&path))?;
        remember((self.id, key_hash), None);
        self.write_whole(key, |f, stage| {
            let write = |f: &mut dyn VfsFile, b: &[u8]| f.write_all(b).map_err(|e| Error::io(e, "cannot write a staging file", stage));
            write(&mut *f, &head)?;
            write(&mut *f, &batch)
        })?;
        let meta_sum = le_u64(&head[24..32]);
        let size = (head.len() + batch.len()) as u64;
        remember((self.id, key_hash), Some(Verified { meta_sum, size, last_sum, first_index: 0 }));
        let last_index = records.len() as u64 - 1;
        Ok(LogInfo { first_index: 0, last_index: Some(last_index), last_stamp: records[records.len() - 1].stamp })
    }

    /// Finds where an append goes: after the last record found from the end
    /// if this process verified the log whole as it is; otherwise after a
    /// scan of every record (FORMAT.md §4.6 decides torn tail or damage).
    fn append_at(&self, file: &dyn VfsFile, size: u64, path: &Path, header: &Header, prefix: Vec<u8>, key_hash: u128) -> Result<AppendAt> {
        let data_start = (HEADER_LEN as u64) + u64::from(header.meta_len);
        let last = last_record(file, size, data_start, &prefix, path)?;
        if let Some(last) = last {
            let known = verified().get(&(self.id, key_hash)).copied();
            if let Some(v) = known.filter(|v| v.meta_sum == header.meta_checksum && v.size == size && v.last_sum == last.sum) {
                let info = LogInfo { first_index: v.first_index, last_index: Some(last.index), last_stamp: last.stamp };
                return Ok(AppendAt { end: size, info });
            }
        }
        let scan = scan(file, size, data_start, prefix, last.is_some(), path)?;
        if let Some(last_sum) = scan.last_sum {
            // Remembered only once the file ends with its last valid record.
            if scan.end == size {
                let v = Verified { meta_sum: header.meta_checksum, size, last_sum, first_index: scan.info.first_index };
                remember((self.id, key_hash), Some(v));
            }
        }
        Ok(AppendAt { end: scan.end, info: scan.info })
    }

    /// Opens the log of `key` (its CKE) for reading: `None` if the key does
    /// not exist, `ERR_NOT_A_LOG` if it holds something else. Needs no lock:
    /// the cursor reads the records the file had when it was opened (an
    /// append or a trim meanwhile is not seen).
    pub fn open_log(&self, key: &[u8]) -> Result<Option<LogCursor>> {
        let Some((file, size, path)) = self.open_key(key)? else { return Ok(None) };
        let key_hash = keyhash::key_hash(key);
        let ctx = self.context(key_hash);
        let (header, meta, prefix) = Self::read_head(&*file, size, &path, &ctx)?;
        Self::check_key(&meta.key, key, &path)?;
        if header.flags != FLAG_LOG {
            return Err(Error::new(ErrorCode::NotALog, "the key holds a value, not an append log").with_file(&path));
        }
        let secret = self.options().encryption_key.clone();
        LogCursor::new(file, size, path, &header, prefix, secret, key_hash).map(Some)
    }

    /// Rewrites the log of `key` (its CKE) with the meta segment from `meta`
    /// and only its records of index `keep_from` or more, which keep their
    /// indexes; atomically, like any write (staging file, fsync, rename,
    /// directory fsync). The records are copied as stored, in bounded memory,
    /// so the log keeps the codec it was written with. A torn tail is dropped;
    /// a log damaged in the middle is `ERR_CORRUPT` and left unchanged.
    /// Returns where the log stands after the trim: with no record kept, the
    /// next append gets index 0. A missing key is not an error: nothing is
    /// written and [`LogInfo::EMPTY`] returned. The caller holds the key's lock.
    pub fn log_trim(&self, key: &[u8], keep_from: u64, meta: &[u8]) -> Result<LogInfo> {
        self.check_writable()?;
        let Some((file, size, path)) = self.open_key(key)? else { return Ok(LogInfo::EMPTY) };
        let key_hash = keyhash::key_hash(key);
        let ctx = self.context(key_hash);
        let (header, old_meta, prefix) = Self::read_head(&*file, size, &path, &ctx)?;
        Self::check_key(&old_meta.key, key, &path)?;
        if header.flags != FLAG_LOG {
            return Err(Error::new(ErrorCode::NotALog, "the key holds a value, not an append log").with_file(&path));
        }
        let data_start = (HEADER_LEN as u64) + u64::from(header.meta_len);
        let valid_at_end = last_record(&*file, size, data_start, &prefix, &path)?.is_some();
        let head = encode_log_head(header.codec, ctx.secret, key, meta, &mut OsRandom).map_err(|e| e.with_file(&path))?;
        let meta_sum = le_u64(&head[24..32]);
        remember((self.id, key_hash), None);
        let (info, new_size, last_sum) = self.write_whole(key, |out, stage| {
            let write = |out: &mut dyn VfsFile, bytes: &[u8]| {
                out.write_all(bytes).map_err(|e| Error::io(e, "cannot write a staging file", stage))
            };
            let mut pending = head;
            let mut written = 0u64;
            let mut info = LogInfo::EMPTY;
            let mut last_sum = None;
            let mut reader = RecordReader::new(data_start, size, prefix, 0);
            loop {
                match reader.next(&*file, false, &path)? {
                    Step::Record(rec, _) if rec.index >= keep_from => {
                        if info.last_index.is_none() {
                            info.first_index = rec.index;
                        }
                        info.last_index = Some(rec.index);
                        info.last_stamp = rec.stamp;
                        last_sum = Some(rec.sum);
                        reader.copy_raw(&*file, &rec, &path, &mut |piece| {
                            pending.extend_from_slice(piece);
                            if pending.len() >= READ_BUF {
                                write(&mut *out, &pending)?;
                                written += pending.len() as u64;
                                pending.clear();
                            }
                            Ok(())
                        })?;
                    }
                    Step::Record(..) => {}
                    Step::End => break,
                    Step::Stop if valid_at_end => return Err(damaged(&path, reader.pos)),
                    Step::Stop => break, // a torn tail: not copied
                }
            }
            write(&mut *out, &pending)?;
            written += pending.len() as u64;
            Ok((info, written, last_sum))
        })?;
        if let Some(last_sum) = last_sum {
            remember((self.id, key_hash), Some(Verified { meta_sum, size: new_size, last_sum, first_index: info.first_index }));
        }
        Ok(info)
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::cke::{encode, Key};
    use crate::sim::{SimFs, Writeback};
    use crate::store::{Options, Write};
    use crate::vfs::Vfs;
    use std::collections::BTreeSet;
    use std::fs;
    use std::sync::Arc;

    /// Forgets what this process verified of the logs of `store`, as if
    /// another process were appending next.
    fn forget_verified(store: &FileStore) {
        verified().retain(|k, _| k.0 != store.id);
    }

    fn key(s: &str) -> Vec<u8> {
        encode(&Key::str(s))
    }

    fn with_codec(compressor: u8, secret: Option<&str>) -> Options {
        Options { compressor, encryption_key: secret.map(|k| k.as_bytes().to_vec()), ..Options::default() }
    }

    const COMBOS: [(u8, Option<&str>); 4] = [(0, None), (1, None), (0, Some("s3cr3t")), (1, Some("s3cr3t"))];
    const META: &[u8] = b"\x81\xa4type\xaaappend-log";

    fn read_all(store: &FileStore, k: &[u8]) -> Result<Vec<LogRecord>> {
        let mut cursor = store.open_log(k)?.expect("the log exists");
        let mut out = Vec::new();
        while let Some(batch) = cursor.next_batch(7)? {
            assert!(!batch.is_empty() && batch.len() <= 7);
            out.extend(batch);
        }
        Ok(out)
    }

    fn payload(i: u64) -> Vec<u8> {
        let n = match i % 4 {
            0 => 0,
            1 => 10,
            2 => 300,
            _ => (i * 37 % 2000) as usize,
        };
        (0..n).map(|j| (j as u64 * 7 + i) as u8 % 13 + b'a').collect()
    }

    fn rec(index: u64, bytes: Vec<u8>) -> LogRecord {
        LogRecord { index, stamp: 1000 + index, serializer: (index % 3) as u8, bytes }
    }

    fn append(store: &FileStore, k: &[u8], r: &LogRecord) -> Result<LogInfo> {
        store.log_append(k, &[new_record(r)], META)
    }

    fn new_record(r: &LogRecord) -> NewRecord<'_> {
        NewRecord { serializer: r.serializer, stamp: r.stamp, payload: &r.bytes }
    }

    /// One record of serializer 1.
    fn one(stamp: u64, payload: &[u8]) -> [NewRecord<'_>; 1] {
        [NewRecord { serializer: 1, stamp, payload }]
    }

    fn info(first: u64, last: Option<u64>, stamp: u64) -> LogInfo {
        LogInfo { first_index: first, last_index: last, last_stamp: stamp }
    }

    #[test]
    fn every_codec_combination_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        for (c, secret) in COMBOS {
            let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
            let k = key(&format!("log-{c}-{secret:?}"));
            let mut want = Vec::new();
            for i in 0..20 {
                let r = rec(i, payload(i));
                assert_eq!(append(&store, &k, &r).unwrap(), info(0, Some(i), 1000 + i));
                want.push(r);
            }
            // A record larger than the read buffer, then a few more.
            let big: Vec<u8> = b"PLAINTEXT-MARKER ".iter().copied().cycle().take(700_000).collect();
            want.push(rec(20, big));
            append(&store, &k, &want[20]).unwrap();
            for i in 21..25 {
                want.push(rec(i, payload(i)));
                append(&store, &k, &want[i as usize]).unwrap();
            }
            assert_eq!(read_all(&store, &k).unwrap(), want);
            let bytes = fs::read(store.file_path(&k)).unwrap();
            assert_eq!((bytes[6], bytes[7]), (c, u8::from(secret.is_some())), "header ids");
            assert_eq!(&bytes[8..12], &FLAG_LOG.to_le_bytes());
            if secret.is_some() {
                assert!(!bytes.windows(16).any(|w| w == b"PLAINTEXT-MARKER"), "no plaintext on disk");
            }
            if c == 1 {
                assert!(bytes.len() < 100_000, "LZ4 shrinks the repetitive record");
            }
            let ctx = store.context(keyhash::key_hash(&k));
            let parsed = parse_log(&bytes, &ctx).unwrap();
            assert_eq!((parsed.key.clone(), parsed.meta.clone(), parsed.records.clone()), (k.clone(), META.to_vec(), want.clone()));
            let expect = info(0, Some(24), 1024);
            let e = store.get(&k).unwrap().unwrap();
            assert_eq!((e.serializer, e.meta.as_slice(), e.value.as_slice(), e.log), (0, META, &b""[..], Some(expect)));
            assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(expect));
            let listed = store.list().unwrap().entries.into_iter().find(|e| e.key == k).unwrap();
            assert_eq!(listed.log, Some(expect));
        }
        // A value key lists with no log info.
        let store = FileStore::open(tmp.path(), with_codec(1, Some("s3cr3t"))).unwrap();
        store.put(&[Write { key: &key("v"), serializer: 1, meta: b"\x80", value: b"x" }]).unwrap();
        assert_eq!(store.get_meta(&key("v")).unwrap().unwrap().log, None);
        assert_eq!(store.get(&key("v")).unwrap().unwrap().log, None);
        // The store with the key reads every log, whatever codec wrote it.
        assert_eq!(store.list().unwrap().entries.iter().filter(|e| e.log.is_some()).count(), 4);
        for (c, secret) in COMBOS {
            assert_eq!(read_all(&store, &key(&format!("log-{c}-{secret:?}"))).unwrap().len(), 25);
        }
    }

    #[test]
    fn ten_thousand_appends_read_back_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path(), Options { sync_blob: false, ..Options::default() }).unwrap();
        let k = key("many");
        for i in 0..10_000u64 {
            let li = store.log_append(&k, &one(i, &i.to_le_bytes()), META).unwrap();
            assert_eq!(li.last_index, Some(i));
        }
        let mut cursor = store.open_log(&k).unwrap().unwrap();
        // Appends after the cursor opened are not seen by it.
        store.log_append(&k, &one(10_000, b"later"), META).unwrap();
        let mut next = 0u64;
        let mut batches = 0;
        while let Some(batch) = cursor.next_batch(1000).unwrap() {
            batches += 1;
            for r in batch {
                assert_eq!((r.index, r.stamp, r.serializer, r.bytes), (next, next, 1, next.to_le_bytes().to_vec()));
                next += 1;
            }
        }
        assert_eq!((next, batches), (10_000, 10));
        assert!(cursor.next_batch(5).unwrap().is_none(), "done stays done");
        // A cursor closed early returns nothing more.
        let mut c2 = store.open_log(&k).unwrap().unwrap();
        assert_eq!(c2.next_batch(0).unwrap().unwrap().len(), 1, "max 0 counts as 1");
        c2.close();
        assert!(c2.next_batch(5).unwrap().is_none());
        assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(10_000), 10_000)));
    }

    #[test]
    fn trim_keeps_indexes_and_appending_continues() {
        let tmp = tempfile::tempdir().unwrap();
        for (c, secret) in COMBOS {
            let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
            let k = key(&format!("trim-{c}-{secret:?}"));
            let big = rec(3, vec![7u8; 600_000]);
            let mut want: Vec<LogRecord> = (0..6).map(|i| if i == 3 { big.clone() } else { rec(i, payload(i)) }).collect();
            for r in &want {
                append(&store, &k, r).unwrap();
            }
            // Keep all (a new meta only), some, then none.
            assert_eq!(store.log_trim(&k, 0, b"\x81\xa1m\x01").unwrap(), info(0, Some(5), 1005));
            assert_eq!(read_all(&store, &k).unwrap(), want);
            assert_eq!(store.get_meta(&k).unwrap().unwrap().meta, b"\x81\xa1m\x01");
            let before = fs::read(store.file_path(&k)).unwrap();
            assert_eq!(store.log_trim(&k, 3, b"\x81\xa1m\x02").unwrap(), info(3, Some(5), 1005));
            let after = fs::read(store.file_path(&k)).unwrap();
            let kept_at = record_starts(&before)[3];
            assert_eq!(after[record_starts(&after)[0]..], before[kept_at..], "records are copied byte for byte");
            want.drain(..3);
            assert_eq!(read_all(&store, &k).unwrap(), want);
            let r6 = rec(6, b"six".to_vec());
            assert_eq!(append(&store, &k, &r6).unwrap(), info(3, Some(6), 1006));
            want.push(r6);
            assert_eq!(read_all(&store, &k).unwrap(), want);
            assert_eq!(store.get(&k).unwrap().unwrap().log, Some(info(3, Some(6), 1006)));
            // Trimming again with the same bound changes nothing but the meta.
            assert_eq!(store.log_trim(&k, 3, b"\x81\xa1m\x03").unwrap(), info(3, Some(6), 1006));
            assert_eq!(read_all(&store, &k).unwrap(), want);
            // Keep none: the log starts again at 0.
            assert_eq!(store.log_trim(&k, 7, b"\x81\xa1m\x04").unwrap(), LogInfo::EMPTY);
            assert_eq!(read_all(&store, &k).unwrap(), vec![]);
            assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(LogInfo::EMPTY));
            let r0 = rec(0, b"zero again".to_vec());
            assert_eq!(append(&store, &k, &r0).unwrap(), info(0, Some(0), 1000));
            assert_eq!(read_all(&store, &k).unwrap(), vec![r0]);
            assert_eq!(store.get_meta(&k).unwrap().unwrap().meta, b"\x81\xa1m\x04", "create_meta is for new logs only");
        }
        // A missing key: nothing written.
        let store = FileStore::open(tmp.path(), Options::default()).unwrap();
        assert_eq!(store.log_trim(&key("missing"), 3, META).unwrap(), LogInfo::EMPTY);
        assert!(!store.exists(&key("missing")).unwrap());
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.iter().all(|n| !n.to_string_lossy().ends_with(".stage")), "no staging file left");
    }

    /// The offset of each record of a whole, valid log file.
    fn record_starts(file: &[u8]) -> Vec<usize> {
        let mut at = HEADER_LEN + le_u32(&file[12..16]) as usize;
        let mut starts = Vec::new();
        while at < file.len() {
            starts.push(at);
            at += RECORD_OVERHEAD + le_u32(&file[at..at + 4]) as usize;
        }
        starts
    }

    /// A log of `n` records written by `store`; returns its bytes and the end
    /// offset of each record.
    fn build(store: &FileStore, k: &[u8], recs: &[LogRecord]) -> (Vec<u8>, Vec<usize>) {
        let path = store.file_path(k);
        let mut ends = Vec::new();
        for r in recs {
            append(store, k, r).unwrap();
            ends.push(fs::metadata(&path).unwrap().len() as usize);
        }
        (fs::read(&path).unwrap(), ends)
    }

    #[test]
    fn a_torn_tail_is_ignored_by_readers_and_cut_by_the_next_append() {
        let tmp = tempfile::tempdir().unwrap();
        for (c, secret) in [(0, None), (1, Some("s3cr3t"))] {
            let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
            let k = key(&format!("torn-{c}"));
            let path = store.file_path(&k);
            let recs: Vec<LogRecord> = (0..3).map(|i| rec(i, payload(i + 1))).collect();
            let (full, ends) = build(&store, &k, &recs);
            let (good, next) = (&full[..ends[1]], rec(2, b"replacement".to_vec()));
            // The last record cut at every byte, and cut records followed by zeros
            // (the size reached the disk, the data did not).
            let mut tails: Vec<Vec<u8>> = (ends[1]..ends[2]).map(|n| full[..n].to_vec()).collect();
            for n in [1, 5, 21, 40, 100] {
                for cut in [ends[1], ends[1] + 4, ends[1] + 30] {
                    tails.push([&full[..cut], &vec![0u8; n][..]].concat());
                }
            }
            let mut zeroed = full.clone();
            zeroed[ends[1] + 10..].fill(0);
            tails.push(zeroed);
            for torn in tails {
                let ctx = format!("codec {c}, torn file of {} bytes", torn.len());
                fs::write(&path, &torn).unwrap();
                forget_verified(&store);
                assert_eq!(read_all(&store, &k).unwrap(), recs[..2], "{ctx}");
                assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(1), 1001)), "{ctx}");
                assert_eq!(append(&store, &k, &next).unwrap(), info(0, Some(2), 1002), "{ctx}");
                let after = fs::read(&path).unwrap();
                assert_eq!(&after[..ends[1]], good, "{ctx}: the valid records are untouched");
                assert_eq!(read_all(&store, &k).unwrap(), [&recs[..2], &[next.clone()][..]].concat(), "{ctx}");
            }
            // A torn large record (read in pieces).
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let noise: Vec<u8> = (0..900_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let big = rec(2, noise);
            fs::write(&path, good).unwrap();
            append(&store, &k, &big).unwrap();
            let full = fs::read(&path).unwrap();
            assert!(full.len() - ends[1] > 2 * READ_BUF, "a record read in pieces");
            for cut in [ends[1] + 21, ends[1] + 300_000, full.len() - 13, full.len() - 1] {
                fs::write(&path, &full[..cut]).unwrap();
                forget_verified(&store);
                assert_eq!(read_all(&store, &k).unwrap(), recs[..2]);
                assert_eq!(append(&store, &k, &next).unwrap().last_index, Some(2));
                assert_eq!(read_all(&store, &k).unwrap(), [&recs[..2], &[next.clone()][..]].concat());
            }
            // Whole, it reads back (the payload in one piece, the checksum in several).
            fs::write(&path, &full).unwrap();
            assert_eq!(read_all(&store, &k).unwrap(), [&recs[..2], &[big.clone()][..]].concat());
            // A log whose only record is torn has no records; the next append is record 0.
            fs::write(&path, &full[..ends[0] - 5]).unwrap();
            forget_verified(&store);
            assert_eq!(read_all(&store, &k).unwrap(), vec![]);
            assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(LogInfo::EMPTY));
            assert_eq!(append(&store, &k, &recs[0]).unwrap(), info(0, Some(0), 1000));
        }
    }

    #[test]
    fn damage_in_the_middle_is_corrupt_and_never_written_over() {
        let tmp = tempfile::tempdir().unwrap();
        for (c, secret) in [(0, None), (1, Some("s3cr3t"))] {
            let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
            let k = key(&format!("damaged-{c}"));
            let path = store.file_path(&k);
            let recs: Vec<LogRecord> = (0..4).map(|i| rec(i, payload(i + 1))).collect();
            let (full, ends) = build(&store, &k, &recs);
            // Every byte of record 1 (neither the first nor the last).
            for at in ends[0]..ends[1] {
                let ctx = format!("codec {c}, byte {at} flipped");
                let mut bad = full.clone();
                bad[at] ^= 0x10;
                fs::write(&path, &bad).unwrap();
                forget_verified(&store);
                let mut cursor = store.open_log(&k).unwrap().unwrap();
                assert_eq!(cursor.next_batch(10).unwrap().unwrap(), recs[..1], "{ctx}: the records before the damage");
                let err = cursor.next_batch(10).unwrap_err();
                assert_eq!((err.code(), err.file()), (ErrorCode::Corrupt, Some(path.as_path())), "{ctx}");
                assert!(cursor.next_batch(10).unwrap().is_none(), "{ctx}");
                let err = append(&store, &k, &rec(4, b"x".to_vec())).unwrap_err();
                assert_eq!((err.code(), err.file()), (ErrorCode::Corrupt, Some(path.as_path())), "{ctx}");
                assert_eq!(store.log_trim(&k, 0, META).unwrap_err().code(), ErrorCode::Corrupt, "{ctx}");
                assert_eq!(fs::read(&path).unwrap(), bad, "{ctx}: the file is unchanged");
                // getMeta reads only the first and the last record: both are whole.
                assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(3), 1003)), "{ctx}");
            }
            // Damage in the first record is seen by getMeta too.
            let mut bad = full.clone();
            bad[ends[0] - 15] ^= 1;
            fs::write(&path, &bad).unwrap();
            assert_eq!(store.get_meta(&k).unwrap_err().code(), ErrorCode::Corrupt);
            assert_eq!(store.get(&k).unwrap_err().code(), ErrorCode::Corrupt);
            let listing = store.list().unwrap();
            assert_eq!(listing.corrupt.len(), 1);
            assert_eq!(listing.corrupt[0].file(), Some(path.as_path()));
            // A flipped byte in the last record, with nothing valid at the end
            // of the file, cannot be told from a torn tail: it is read as one,
            // and the next append cuts it off (FORMAT.md §4.6).
            let mut bad = full.clone();
            bad[ends[2] + 25] ^= 1;
            fs::write(&path, &bad).unwrap();
            forget_verified(&store);
            assert_eq!(read_all(&store, &k).unwrap(), recs[..3]);
            assert_eq!(append(&store, &k, &recs[3]).unwrap().last_index, Some(3));
            assert_eq!(fs::read(&path).unwrap()[..ends[2]], full[..ends[2]]);
            assert_eq!(read_all(&store, &k).unwrap(), recs);
        }
    }

    #[test]
    fn a_record_moved_or_reindexed_does_not_authenticate() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path(), with_codec(0, Some("s3cr3t"))).unwrap();
        let k = key("sealed");
        let recs: Vec<LogRecord> = (0..3).map(|i| rec(i, b"same size".to_vec())).collect();
        let (full, ends) = build(&store, &k, &recs);
        // Record 2's slot gets record 1's payload, with index and checksum fixed up.
        let mut moved = full.clone();
        let (r1, r2) = (ends[0]..ends[1], ends[1]..ends[2]);
        let payload1 = full[r1.start + 21..r1.end - 12].to_vec();
        moved[r2.start + 21..r2.end - 12].copy_from_slice(&payload1);
        let sum = xxh3_64(&moved[r2.start..r2.end - 12]);
        moved[r2.end - 12..r2.end - 4].copy_from_slice(&sum.to_le_bytes());
        fs::write(store.file_path(&k), &moved).unwrap();
        let mut cursor = store.open_log(&k).unwrap().unwrap();
        assert_eq!(cursor.next_batch(10).unwrap().unwrap(), recs[..2]);
        assert_eq!(cursor.next_batch(10).unwrap_err().code(), ErrorCode::Decrypt);
        // Without the key the meta segment already fails.
        let other = FileStore::open(tmp.path(), Options::default()).unwrap();
        assert_eq!(other.open_log(&k).unwrap_err().code(), ErrorCode::Decrypt);
    }

    #[test]
    fn a_cursor_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<LogCursor>();
    }

    #[test]
    fn log_operations_on_a_value_are_not_a_log_and_change_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path(), Options::default()).unwrap();
        let k = key("value");
        store.put(&[Write { key: &k, serializer: 1, meta: b"\x80", value: b"v" }]).unwrap();
        let path = store.file_path(&k);
        let before = fs::read(&path).unwrap();
        let err = append(&store, &k, &rec(0, b"x".to_vec())).unwrap_err();
        assert_eq!((err.code(), err.file()), (ErrorCode::NotALog, Some(path.as_path())));
        assert_eq!(store.open_log(&k).unwrap_err().code(), ErrorCode::NotALog);
        assert_eq!(store.log_trim(&k, 0, META).unwrap_err().code(), ErrorCode::NotALog);
        assert_eq!(fs::read(&path).unwrap(), before);
        assert!(store.open_log(&key("missing")).unwrap().is_none());
        assert_eq!(store.log_append(b"\x09", &one(0, b""), META).unwrap_err().code(), ErrorCode::InvalidKey);
    }

    // --- Several records in one append. ---

    #[test]
    fn a_multi_record_append_gets_consecutive_indexes_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        for (c, secret) in COMBOS {
            let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
            let k = key(&format!("batch-{c}-{secret:?}"));
            // A new log of three records, then batches of 1, 5 (one larger
            // than the read buffer) and 2, with stamps of their own.
            let big: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
            let mut want: Vec<LogRecord> = Vec::new();
            for (n, size) in [(3usize, 0usize), (1, 0), (5, 1), (2, 0)] {
                let first = want.len() as u64;
                let batch: Vec<LogRecord> = (first..first + n as u64)
                    .map(|i| if size == 1 && i == first + 2 { rec(i, big.clone()) } else { rec(i, payload(i)) })
                    .collect();
                let news: Vec<NewRecord<'_>> = batch.iter().map(new_record).collect();
                let last = batch.last().unwrap();
                assert_eq!(store.log_append(&k, &news, META).unwrap(), info(0, Some(last.index), last.stamp), "{c} {secret:?}");
                want.extend(batch);
            }
            assert_eq!(read_all(&store, &k).unwrap(), want);
            assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(10), 1010)));
            // A later process (nothing remembered) reads and appends the same.
            forget_verified(&store);
            assert_eq!(append(&store, &k, &rec(11, b"one more".to_vec())).unwrap(), info(0, Some(11), 1011));
            want.push(rec(11, b"one more".to_vec()));
            assert_eq!(read_all(&store, &k).unwrap(), want);
            let bytes = fs::read(store.file_path(&k)).unwrap();
            assert_eq!(parse_log(&bytes, &store.context(keyhash::key_hash(&k))).unwrap().records, want);
        }
    }

    #[test]
    fn a_batch_is_the_same_bytes_as_its_records_appended_one_by_one() {
        let tmp = tempfile::tempdir().unwrap();
        for c in [0, 1] {
            let store = FileStore::open(tmp.path(), with_codec(c, None)).unwrap();
            let recs: Vec<LogRecord> = (0..6).map(|i| rec(i, payload(i + 5))).collect();
            let (one_by_one, batched) = (key(&format!("singly-{c}")), key(&format!("batched-{c}")));
            for r in &recs {
                append(&store, &one_by_one, r).unwrap();
            }
            let news: Vec<NewRecord<'_>> = recs.iter().map(new_record).collect();
            store.log_append(&batched, &news[..2], META).unwrap();
            store.log_append(&batched, &news[2..], META).unwrap();
            let (a, b) = (fs::read(store.file_path(&one_by_one)).unwrap(), fs::read(store.file_path(&batched)).unwrap());
            // The meta segments differ only in the key; the records are the same bytes.
            let starts = |f: &[u8]| record_starts(f)[0];
            assert_eq!(a[starts(&a)..], b[starts(&b)..], "codec {c}");
            // What encode_records gives is what was written.
            let ctx = store.context(keyhash::key_hash(&batched));
            let (enc, sum) = encode_records(Codec { compressor: c, encryptor: 0 }, &ctx, 0, &news, &mut OsRandom).unwrap();
            assert_eq!(enc, b[starts(&b)..]);
            assert_eq!(sum.to_le_bytes(), b[b.len() - 12..b.len() - 4]);
        }
    }

    #[test]
    fn a_bad_batch_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path(), Options::default()).unwrap();
        let k = key("bad-batch");
        let err = store.log_append(&k, &[], META).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(!store.exists(&k).unwrap(), "an empty batch creates no log");
        append(&store, &k, &rec(0, b"zero".to_vec())).unwrap();
        let before = fs::read(store.file_path(&k)).unwrap();
        assert_eq!(store.log_append(&k, &[], META).unwrap_err().code(), ErrorCode::InvalidArgument);
        assert_eq!(fs::read(store.file_path(&k)).unwrap(), before);
        // Indexes that would run past u64::MAX: refused before anything is written.
        let ctx = store.context(keyhash::key_hash(&k));
        let two = [NewRecord { serializer: 1, stamp: 1, payload: b"a" }; 2];
        assert_eq!(encode_records(Codec::NONE, &ctx, u64::MAX, &two, &mut OsRandom).unwrap_err().code(), ErrorCode::InvalidArgument);
        assert!(encode_records(Codec::NONE, &ctx, u64::MAX, &two[..1], &mut OsRandom).is_ok());
    }

    #[test]
    fn a_batch_is_one_write_and_one_fsync() {
        let (fs, dir) = setup(1, "/sim/log-calls");
        let store = FileStore::open_with(Arc::new(fs.clone()), &dir, synced()).unwrap();
        let k = key("calls");
        store.log_append(&k, &one(1, b"create"), META).unwrap();
        let payloads: Vec<Vec<u8>> = (0..50u64).map(payload).collect();
        let news: Vec<NewRecord<'_>> = payloads.iter().map(|p| NewRecord { serializer: 1, stamp: 2, payload: p }).collect();
        let steps = |f: &dyn Fn()| {
            let start = fs.steps();
            f();
            fs.steps() - start
        };
        let single = steps(&|| {
            store.log_append(&k, &one(2, b"single"), META).unwrap();
        });
        let batch = steps(&|| {
            assert_eq!(store.log_append(&k, &news, META).unwrap().last_index, Some(51));
        });
        assert_eq!((single, batch), (2, 2), "one write_all_at and one sync either way");
        // A new log of many records: the same calls as a new log of one.
        let create_one = steps(&|| {
            store.log_append(&key("new-1"), &one(3, b"x"), META).unwrap();
        });
        let create_many = steps(&|| {
            store.log_append(&key("new-50"), &news, META).unwrap();
        });
        assert_eq!(create_one, create_many);
        assert_eq!(read_all(&store, &key("new-50")).unwrap().len(), 50);
    }

    // --- Crashes, on the simulated file system. ---

    /// One step of the log workload.
    #[derive(Clone, Debug)]
    enum Op {
        /// One append of these records (a group commit when more than one).
        Append(Vec<Vec<u8>>),
        Trim(u64, &'static [u8]),
    }

    /// A log's state: its metadata and records, or `None` when absent.
    type State = Option<(Vec<u8>, Vec<LogRecord>)>;

    fn workload() -> Vec<Op> {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let one = |b: &[u8]| Op::Append(vec![b.to_vec()]);
        vec![
            one(b"first"),
            one(b"second"),
            one(b""),
            Op::Append(vec![big]),
            one(b"fifth"),
            // A group commit of three, the middle one spanning several pages.
            Op::Append(vec![b"six".to_vec(), b"y".repeat(9000), b"eight".to_vec()]),
            Op::Trim(2, b"\x81\xa1t\x01"),
            one(b"after trim"),
            one(&b"x".repeat(1000)),
            Op::Trim(100, b"\x81\xa1t\x02"),
            // A group commit to a log with no records: indexes from 0.
            Op::Append(vec![b"restart".to_vec(), b"again".to_vec()]),
            one(b"last"),
        ]
    }

    /// A new log created by a group commit, then another one.
    fn create_workload() -> Vec<Op> {
        vec![
            Op::Append(vec![b"a".to_vec(), b"b".repeat(5000), Vec::new(), b"d".to_vec()]),
            Op::Append(vec![b"e".to_vec(), b"f".repeat(3000)]),
        ]
    }

    /// The stamp of record `j` of the `i`th op: each its own, so a record
    /// tells its append.
    fn stamp(i: usize, j: usize) -> u64 {
        1_000 + 10 * i as u64 + j as u64
    }

    /// The state after op `i` applied whole.
    fn effect(state: &State, i: usize, op: &Op) -> State {
        effect_prefix(state, i, op, usize::MAX)
    }

    /// The state after op `i`, of which, for an append, only the first `n` records.
    fn effect_prefix(state: &State, i: usize, op: &Op, n: usize) -> State {
        match (op, state) {
            (Op::Append(batch), _) => {
                let (meta, mut recs) = state.clone().unwrap_or_else(|| (META.to_vec(), Vec::new()));
                let next = recs.last().map_or(0, |r| r.index + 1);
                for (j, b) in batch.iter().enumerate().take(n) {
                    recs.push(LogRecord { index: next + j as u64, stamp: stamp(i, j), serializer: 1, bytes: b.clone() });
                }
                Some((meta, recs))
            }
            (Op::Trim(..), None) => None,
            (Op::Trim(from, meta), Some((_, recs))) => {
                Some((meta.to_vec(), recs.iter().filter(|r| r.index >= *from).cloned().collect()))
            }
        }
    }

    /// What op `i` may leave when it was interrupted (or its fsync failed)
    /// and the machine crashed: besides the state before it, the state after
    /// it, and for an append to an existing log, any nonempty prefix of its
    /// records (the rest a torn tail). A new log is all or nothing.
    fn interrupted(state: &State, i: usize, op: &Op) -> Vec<State> {
        match (op, state) {
            (Op::Append(batch), Some(_)) => (1..=batch.len()).map(|n| effect_prefix(state, i, op, n)).collect(),
            _ => vec![effect(state, i, op)],
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Outcome {
        Acked,
        Failed(ErrorCode),
        NotRun,
    }

    /// A fresh file system holding the store directory `dir`, durably.
    fn setup(seed: u64, dir: &str) -> (SimFs, PathBuf) {
        let (fs, dir) = (SimFs::new(seed), PathBuf::from(dir));
        fs.create_dir_all(&dir).unwrap();
        for d in dir.ancestors() {
            fs.sync_dir(d).unwrap();
        }
        (fs, dir)
    }

    fn run(fs: &SimFs, dir: &Path, options: &Options, ops: &[Op]) -> Vec<Outcome> {
        let k = key("log");
        let store = match FileStore::open_with(Arc::new(fs.clone()), dir, options.clone()) {
            Ok(s) => s,
            Err(e) => {
                assert!(fs.is_dead() || fs.failed_call().is_some(), "open failed without a fault: {e}");
                return vec![Outcome::NotRun; ops.len()];
            }
        };
        ops.iter()
            .enumerate()
            .map(|(i, op)| {
                let dead_before = fs.is_dead();
                let result = match op {
                    Op::Append(batch) => {
                        let news: Vec<NewRecord<'_>> = batch
                            .iter()
                            .enumerate()
                            .map(|(j, b)| NewRecord { serializer: 1, stamp: stamp(i, j), payload: b })
                            .collect();
                        store.log_append(&k, &news, META).map(drop)
                    }
                    Op::Trim(from, meta) => store.log_trim(&k, *from, meta).map(drop),
                };
                match result {
                    Ok(()) => Outcome::Acked,
                    Err(_) if dead_before => Outcome::NotRun,
                    Err(e) => {
                        assert!(fs.is_dead() || fs.failed_call().is_some(), "{op:?} failed without a fault: {e}");
                        Outcome::Failed(e.code())
                    }
                }
            })
            .collect()
    }

    /// Every state the log ever had in the workload (absence first).
    fn history(ops: &[Op]) -> Vec<State> {
        let mut states = vec![None];
        for (i, op) in ops.iter().enumerate() {
            let next = effect(states.last().unwrap(), i, op);
            states.push(next);
        }
        states
    }

    /// Reads the log after a crash: its state, or the error.
    fn read_state(store: &FileStore) -> Result<State> {
        let k = key("log");
        let Some(meta) = store.get_meta(&k)? else { return Ok(None) };
        let recs = read_all(store, &k)?;
        let want = match recs.last() {
            Some(last) => info(recs[0].index, Some(last.index), last.stamp),
            None => LogInfo::EMPTY,
        };
        assert_eq!(meta.log, Some(want), "getMeta agrees with the records");
        Ok(Some((meta.meta, recs)))
    }

    /// Reopens the store after a crash; checks the log with `check` and that
    /// it takes an append with the next index. Returns the state, or `None`
    /// if it was corrupt (only when `corrupt_ok`).
    fn recover(fs: &SimFs, dir: &Path, options: &Options, corrupt_ok: bool, ctx: &str, check: impl Fn(&State) -> bool) -> Option<State> {
        let store = FileStore::open_with(Arc::new(fs.clone()), dir, options.clone())
            .unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
        let state = match read_state(&store) {
            Ok(s) => s,
            Err(e) if corrupt_ok && e.code() == ErrorCode::Corrupt => return None,
            Err(e) => panic!("{ctx}: the log cannot be read: {e}"),
        };
        assert!(check(&state), "{ctx}: the log holds {:?}", state.as_ref().map(|(m, r)| (m, r.iter().map(|r| (r.index, r.bytes.len())).collect::<Vec<_>>())));
        let names: Vec<String> = fs.read_dir(dir).unwrap().into_iter().map(|n| n.into_string().unwrap()).collect();
        assert!(names.iter().all(|n| !n.ends_with(".stage")), "{ctx}: staging files left: {names:?}");
        let next = state.as_ref().and_then(|(_, r)| r.last()).map_or(0, |r| r.index + 1);
        let li = store.log_append(&key("log"), &one(9, b"after recovery"), META).unwrap();
        assert_eq!(li.last_index, Some(next), "{ctx}");
        let after = read_state(&store).unwrap().unwrap().1;
        assert_eq!(after.last().unwrap().bytes, b"after recovery", "{ctx}");
        assert_eq!(after.len(), state.as_ref().map_or(0, |(_, r)| r.len()) + 1, "{ctx}");
        Some(state)
    }

    fn count_steps(options: &Options, dir: &str, ops: &[Op]) -> u64 {
        let (fs, dir) = setup(0, dir);
        let start = fs.steps();
        assert!(run(&fs, &dir, options, ops).iter().all(|&o| o == Outcome::Acked));
        fs.steps() - start
    }

    /// Crashes at every step of `ops`: the log holds every acknowledged op,
    /// and of the interrupted one what [`interrupted`] allows. Returns how
    /// many runs left a group commit cut between its records.
    fn crash_at_every_step(options: Options, writeback: Writeback, seeds: &[u64], dir: &str, ops: &[Op]) -> usize {
        assert!(options.sync_blob);
        let states = history(ops);
        let total = count_steps(&options, dir, ops);
        let mut partial = 0;
        for n in 0..=total {
            for &seed in seeds {
                let ctx = format!("crash at step {n} of {total}, seed {seed}, {writeback:?}");
                let (fs, dir) = setup(seed, dir);
                fs.fail_after(n);
                let outcomes = run(&fs, &dir, &options, ops);
                assert_eq!(fs.is_dead(), n < total, "{ctx}");
                fs.crash(writeback);
                // The state after the last acknowledged op, or what the op the
                // crash interrupted may have left.
                let acked = outcomes.iter().rposition(|o| *o == Outcome::Acked).map_or(0, |i| i + 1);
                let mut allowed = vec![states[acked].clone()];
                if outcomes.get(acked).is_some_and(|o| matches!(o, Outcome::Failed(_))) {
                    allowed.extend(interrupted(&states[acked], acked, &ops[acked]));
                }
                assert!(outcomes[..acked].iter().all(|o| *o == Outcome::Acked), "{ctx}");
                let state = recover(&fs, &dir, &options, false, &ctx, |s| allowed.contains(s)).unwrap();
                partial += usize::from(state != states[acked] && acked < ops.len() && state != states[acked + 1]);
            }
        }
        eprintln!("log, {writeback:?}: {} crash runs, {partial} left part of a group commit", (total + 1) * seeds.len() as u64);
        partial
    }

    fn synced() -> Options {
        Options { sync_blob: true, ..Options::default() }
    }

    #[test]
    fn acknowledged_appends_survive_a_crash_at_every_step() {
        crash_at_every_step(synced(), Writeback::None, &[1], "/sim/log-none", &workload());
    }

    #[test]
    fn acknowledged_appends_survive_a_crash_with_partial_writeback() {
        crash_at_every_step(synced(), Writeback::Unordered, &[3, 4], "/sim/log-unordered", &workload());
    }

    #[test]
    fn acknowledged_appends_survive_a_crash_with_ordered_writeback() {
        crash_at_every_step(synced(), Writeback::Ordered, &[6], "/sim/log-ordered", &workload());
    }

    #[test]
    fn acknowledged_appends_survive_a_crash_with_lz4_and_encryption() {
        let options = Options { compressor: 1, encryption_key: Some(b"s3cr3t".to_vec()), ..synced() };
        crash_at_every_step(options, Writeback::Unordered, &[7], "/sim/log-codec", &workload());
    }

    /// A new log made by a group commit is all or nothing (`interrupted`
    /// allows no prefix for it); a later group commit may be cut.
    #[test]
    fn a_new_log_of_several_records_survives_a_crash_whole_or_not_at_all() {
        for writeback in [Writeback::None, Writeback::Unordered, Writeback::Ordered] {
            crash_at_every_step(synced(), writeback, &[1, 2, 3], "/sim/log-create", &create_workload());
        }
    }

    /// A crash while a group commit of 4 records is being fsynced: the log
    /// holds the records acknowledged before and a prefix of the 4 (none,
    /// some, or, if every byte happened to reach the disk, all), never a
    /// later record without an earlier one; the rest of the file is a torn
    /// tail, ignored and then cut by the next append. Over many seeds every
    /// prefix short of the whole batch shows up.
    #[test]
    fn a_crash_during_a_group_commit_leaves_a_prefix_of_its_records() {
        let batch: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'a' + i; 1000]).collect();
        let ops = vec![Op::Append(vec![b"r0".to_vec()]), Op::Append(batch.clone())];
        let states = history(&ops);
        let dir = "/sim/log-prefix";
        // The steps of op 0, then the group commit's write; the crash hits its fsync.
        let before_sync = count_steps(&synced(), dir, &ops[..1]) + 1;
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            let ctx = format!("seed {seed}");
            let (fs, dir) = setup(seed, dir);
            fs.fail_after(before_sync);
            let outcomes = run(&fs, &dir, &synced(), &ops);
            assert_eq!(outcomes, [Outcome::Acked, Outcome::Failed(ErrorCode::Fsync)], "{ctx}");
            fs.crash(Writeback::None);
            let allowed: Vec<State> = (0..=batch.len()).map(|n| effect_prefix(&states[1], 1, &ops[1], n)).collect();
            let state = recover(&fs, &dir, &synced(), false, &ctx, |s| allowed.contains(s)).unwrap();
            seen.insert(state.unwrap().1.len() - 1);
        }
        assert!((0..batch.len()).all(|n| seen.contains(&n)), "every prefix short of the whole batch occurs: {seen:?}");
    }

    /// Without fsyncs a crash may lose any suffix of the log's history, but a
    /// reader never errs or misreads: it sees the metadata of some state and
    /// a prefix of that state's records. Only where a renamed file's data may
    /// be torn (unordered writeback) may a new or trimmed log's head be
    /// damaged, and then it reads as `ERR_CORRUPT`.
    #[test]
    fn without_sync_a_crash_loses_only_a_suffix() {
        let options = Options { sync_blob: false, ..Options::default() };
        let ops = workload();
        let states = history(&ops);
        let dir = "/sim/log-nosync";
        let total = count_steps(&options, dir, &ops);
        let mut corrupt = 0;
        for n in 0..=total {
            for (seed, writeback) in [(1, Writeback::None), (2, Writeback::Ordered), (3, Writeback::Ordered), (4, Writeback::Unordered), (5, Writeback::Unordered)] {
                let ctx = format!("crash at step {n} of {total}, seed {seed}, {writeback:?}");
                let (fs, dir) = setup(seed, dir);
                fs.fail_after(n);
                run(&fs, &dir, &options, &ops);
                fs.crash(writeback);
                let prefix_of_some_state = |s: &State| match s {
                    None => true,
                    Some((meta, recs)) => states.iter().flatten().any(|(m, r)| m == meta && r.starts_with(recs)),
                };
                corrupt += usize::from(recover(&fs, &dir, &options, writeback == Writeback::Unordered, &ctx, prefix_of_some_state).is_none());
            }
        }
        eprintln!("log without sync: {corrupt} damaged heads, all detected");
    }

    /// A lone I/O error at every step: the op that hit it fails, and changes
    /// nothing unless it was an fsync (whose data may or may not be on disk,
    /// for a group commit also in part); after a failed fsync every write is
    /// refused. A crash then keeps what was acknowledged.
    #[test]
    fn a_lone_io_error_fails_its_op_and_a_failed_fsync_stops_appends() {
        let options = synced();
        let ops = workload();
        let dir = "/sim/log-eio";
        let total = count_steps(&options, dir, &ops);
        for n in 0..total {
            let (fs, dir) = setup(1, dir);
            fs.fail_once(n);
            let outcomes = run(&fs, &dir, &options, &ops);
            let call = fs.failed_call().expect("a call failed");
            let ctx = format!("EIO at step {n} of {total} ({call})");
            let fsync = call == "sync" || call == "sync_dir";
            let mut state: State = None;
            let mut alternatives: Option<Vec<State>> = None;
            for (i, (op, outcome)) in ops.iter().zip(&outcomes).enumerate() {
                match outcome {
                    Outcome::Acked => {
                        assert!(alternatives.is_none(), "{ctx}: op {i} acknowledged after a failed fsync");
                        state = effect(&state, i, op);
                    }
                    Outcome::Failed(ErrorCode::StorePoisoned) => assert!(alternatives.is_some(), "{ctx}: op {i}"),
                    Outcome::Failed(code) => {
                        assert_eq!(*code == ErrorCode::Fsync, fsync, "{ctx}: op {i} failed with {code:?}");
                        if fsync {
                            alternatives = Some(interrupted(&state, i, op));
                        }
                    }
                    Outcome::NotRun => assert!(matches!(call, "open_lock_file"), "{ctx}: the open failed"),
                }
            }
            fs.crash(Writeback::None);
            let allowed: Vec<State> = std::iter::once(state).chain(alternatives.into_iter().flatten()).collect();
            recover(&fs, &dir, &options, false, &ctx, |s| allowed.contains(s));
        }
    }

    #[test]
    fn the_log_workload_covers_what_it_claims() {
        let ops = workload();
        assert!(ops.iter().any(|o| matches!(o, Op::Append(b) if b.iter().any(|r| r.len() > READ_BUF))), "a record larger than the read buffer");
        let states = history(&ops);
        let kinds: BTreeSet<&str> = ops
            .iter()
            .zip(&states[1..])
            .map(|(op, s)| match (op, s) {
                (Op::Trim(..), Some((_, r))) if r.is_empty() => "trim to none",
                (Op::Trim(..), _) => "trim",
                (Op::Append(b), Some((_, r))) if r.len() == b.len() && b.len() > 1 => "restart with a group commit",
                (Op::Append(b), Some((_, r))) if r.len() == b.len() => "create or restart",
                (Op::Append(b), _) if b.len() > 1 => "group commit",
                (Op::Append(_), _) => "append",
            })
            .collect();
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        assert!(count_steps(&synced(), "/sim/log-count", &ops) > 30);
        assert!(matches!(&create_workload()[0], Op::Append(b) if b.len() > 1), "a new log made by a group commit");
    }
}
