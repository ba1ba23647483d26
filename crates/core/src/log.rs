//! Append logs of records (FORMAT.md §4.6).
//!
//! A log is a key file with [`FLAGS_COMMITTED_LOG`]: the header (`v = 128`),
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

use crate::cke;
use crate::codec::{aes, Codec, OsRandom, Randomness, SegmentContext, SegmentKind, ENCRYPTOR_AES, ENCRYPTOR_NONE};
use crate::error::{Error, ErrorCode, Result};
use crate::format::{self, Header, FLAGS_COMMITTED_LOG, FLAG_LOG, HEADER_LEN, LOG_COMMIT_AREA};
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
/// The length of one commit slot; the commit area is two of them, A then B.
pub const COMMIT_SLOT: usize = 64;
/// The bytes of a commit slot that its tag (with encryption) covers.
const SLOT_FIELDS: usize = 32;
/// The bytes of a commit slot's tag: the first 24 of the HMAC-SHA256.
const SLOT_TAG: usize = 24;
/// The offset of a slot's checksum (of bytes 0..56).
const SLOT_CHECK: usize = SLOT_FIELDS + SLOT_TAG;

/// What a log's commit says (FORMAT.md §4.6): the records acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Commits since the file was written whole, from 1.
    pub seq: u64,
    /// How many records were acknowledged.
    pub count: u64,
    /// The file offset where they end.
    pub end: u64,
    /// The stored checksum of the last of them; 0 when there is none.
    pub last_sum: u64,
}

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
            Some(i) => i.checked_add(1).ok_or_else(|| Error::new(ErrorCode::InvalidArgument, "the log has used up every record index")),
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
    /// The commit, for a log of the current layout; `None` for the earlier one.
    pub commit: Option<Commit>,
    /// The readable records, in order (a torn tail is not among them).
    pub records: Vec<LogRecord>,
}

/// The error of an encrypted log read or written without the key.
fn no_key() -> Error {
    Error::new(ErrorCode::Decrypt, "the log is encrypted and the store was opened without an encryption key")
}

/// The header of a log whose stored meta segment is `meta_stored`:
/// [`FLAGS_COMMITTED_LOG`], `v` = the commit area, the value checksum that of
/// no bytes, serializer 0.
fn log_header(codec: Codec, meta_stored: &[u8]) -> Result<Header> {
    let meta_len = u32::try_from(meta_stored.len())
        .map_err(|_| Error::new(ErrorCode::InvalidArgument, "a key and its metadata exceed the format's 4 GiB"))?;
    Ok(Header {
        flags: FLAGS_COMMITTED_LOG,
        serializer: 0,
        codec,
        meta_len,
        value_len: LOG_COMMIT_AREA,
        meta_checksum: xxh3_64(meta_stored),
        value_checksum: xxh3_64(&[]),
    })
}

/// The stored meta segment of a new log (its salt and IV, with encryption, from `rng`).
fn encode_log_meta(codec: Codec, secret: Option<&[u8]>, key_cke: &[u8], meta: &[u8], rng: &mut dyn Randomness) -> Result<Vec<u8>> {
    let ctx = SegmentContext { secret, key_hash: keyhash::key_hash(key_cke), accept_plaintext: false };
    let meta_plain = format::compose_meta(key_cke, meta)?;
    Ok(codec.encode(&ctx, SegmentKind::Meta, &meta_plain, rng)?.into_owned())
}

/// The header and stored meta segment of a log of the EARLIER layout
/// (FORMAT.md §4.6: flags 2, `v = 0`, no commit area, records right after the
/// meta segment), as builds before the commit area wrote them. No store
/// writes this any more; it is for tests and tools that make such logs.
pub fn encode_legacy_log_head(
    codec: Codec,
    secret: Option<&[u8]>,
    key_cke: &[u8],
    meta: &[u8],
    rng: &mut dyn Randomness,
) -> Result<Vec<u8>> {
    let meta_stored = encode_log_meta(codec, secret, key_cke, meta, rng)?;
    let header = Header { flags: FLAG_LOG, value_len: 0, ..log_header(codec, &meta_stored)? };
    let mut head = Vec::with_capacity(HEADER_LEN + meta_stored.len());
    head.extend_from_slice(&header.encode());
    head.extend_from_slice(&meta_stored);
    Ok(head)
}

/// The salt of an encrypted meta segment: the MAC key of the commit slots
/// is derived from it (FORMAT.md §4.6).
fn meta_salt(meta_stored: &[u8]) -> Result<&[u8]> {
    meta_stored.get(..aes::SALT_LEN).ok_or_else(|| Error::corrupt("an encrypted meta segment is shorter than its salt"))
}

/// One commit slot (FORMAT.md §4.6) of a log whose stored meta segment is
/// `meta_stored`: `seq | count | end | last` (u64 LE each), the tag (with
/// encryptor 1, the first 24 bytes of HMAC-SHA256 over `5 || key_hash ||
/// bytes 0..32` with the meta segment's MAC key; else zeros), and the xxh3_64
/// of bytes 0..56.
pub fn encode_commit_slot(commit: &Commit, codec: Codec, ctx: &SegmentContext<'_>, meta_stored: &[u8]) -> Result<[u8; COMMIT_SLOT]> {
    let mut slot = [0u8; COMMIT_SLOT];
    slot[0..8].copy_from_slice(&commit.seq.to_le_bytes());
    slot[8..16].copy_from_slice(&commit.count.to_le_bytes());
    slot[16..24].copy_from_slice(&commit.end.to_le_bytes());
    slot[24..32].copy_from_slice(&commit.last_sum.to_le_bytes());
    if codec.encryptor == ENCRYPTOR_AES {
        let secret = ctx.secret.ok_or_else(no_key)?;
        let tag = aes::commit_tag(secret, ctx.key_hash, meta_salt(meta_stored)?, &slot[..SLOT_FIELDS]);
        slot[SLOT_FIELDS..SLOT_CHECK].copy_from_slice(&tag[..SLOT_TAG]);
    }
    let check = xxh3_64(&slot[..SLOT_CHECK]);
    slot[SLOT_CHECK..].copy_from_slice(&check.to_le_bytes());
    Ok(slot)
}

/// The commit area of a log: `commit` in both slots.
pub fn encode_commit_area(commit: &Commit, codec: Codec, ctx: &SegmentContext<'_>, meta_stored: &[u8]) -> Result<Vec<u8>> {
    let slot = encode_commit_slot(commit, codec, ctx, meta_stored)?;
    Ok([slot, slot].concat())
}

/// One slot decoded: `None` if its checksum fails (a slot torn by a crash, or
/// damaged). With encryption, a slot whose checksum holds but whose tag does
/// not verify was edited on purpose: `ERR_DECRYPT`.
fn decode_commit_slot(slot: &[u8], codec: Codec, ctx: &SegmentContext<'_>, meta_stored: &[u8]) -> Result<Option<Commit>> {
    if xxh3_64(&slot[..SLOT_CHECK]) != le_u64(&slot[SLOT_CHECK..COMMIT_SLOT]) {
        return Ok(None);
    }
    if codec.encryptor == ENCRYPTOR_AES {
        let secret = ctx.secret.ok_or_else(no_key)?;
        let tag = aes::commit_tag(secret, ctx.key_hash, meta_salt(meta_stored)?, &slot[..SLOT_FIELDS]);
        // Compared in constant time.
        let diff = tag[..SLOT_TAG].iter().zip(&slot[SLOT_FIELDS..SLOT_CHECK]).fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return Err(Error::new(
                ErrorCode::Decrypt,
                "the log's commit does not authenticate: wrong encryption key, or the file was altered",
            ));
        }
    }
    Ok(Some(Commit { seq: le_u64(&slot[0..8]), count: le_u64(&slot[8..16]), end: le_u64(&slot[16..24]), last_sum: le_u64(&slot[24..32]) }))
}

/// The commit of a log from its commit area (FORMAT.md §4.6): slot B if it
/// is valid, else slot A; and whether B was. Neither valid, or a valid commit
/// that no writer makes, is `ERR_CORRUPT`.
fn choose_commit(area: &[u8], codec: Codec, ctx: &SegmentContext<'_>, meta_stored: &[u8], data_start: u64) -> Result<(Commit, bool)> {
    let (commit, b_valid) = match decode_commit_slot(&area[COMMIT_SLOT..], codec, ctx, meta_stored)? {
        Some(c) => (c, true),
        None => match decode_commit_slot(&area[..COMMIT_SLOT], codec, ctx, meta_stored)? {
            Some(c) => (c, false),
            None => return Err(Error::corrupt("both commit slots of the log are damaged")),
        },
    };
    let room = commit.end.checked_sub(data_start);
    let possible = commit.seq >= 1
        && room.is_some_and(|room| {
            (commit.count == 0) == (room == 0) && commit.count.checked_mul(RECORD_OVERHEAD as u64).is_some_and(|n| n <= room)
        })
        && (commit.count > 0 || commit.last_sum == 0);
    if !possible {
        return Err(Error::corrupt(format!("the log's commit is impossible: {commit:?} with records from offset {data_start}")));
    }
    Ok((commit, b_valid))
}

/// A new log of `records` (indexes 0, 1, ...) as a store creates it: the
/// header, the meta segment, the commit area (both slots: seq 1, every
/// record), the records. Randomness is drawn in that order: the meta
/// segment's salt and IV, then each record's.
pub fn encode_log_file(
    codec: Codec,
    secret: Option<&[u8]>,
    key_cke: &[u8],
    meta: &[u8],
    records: &[NewRecord<'_>],
    rng: &mut dyn Randomness,
) -> Result<Vec<u8>> {
    let meta_stored = encode_log_meta(codec, secret, key_cke, meta, rng)?;
    let ctx = SegmentContext { secret, key_hash: keyhash::key_hash(key_cke), accept_plaintext: false };
    let (batch, last_sum) = encode_records(codec, &ctx, 0, records, rng)?;
    let data_start = (HEADER_LEN + meta_stored.len()) as u64 + LOG_COMMIT_AREA;
    let commit = Commit { seq: 1, count: records.len() as u64, end: data_start + batch.len() as u64, last_sum };
    let mut file = Vec::with_capacity(data_start as usize + batch.len());
    file.extend_from_slice(&log_header(codec, &meta_stored)?.encode());
    file.extend_from_slice(&meta_stored);
    file.extend_from_slice(&encode_commit_area(&commit, codec, &ctx, &meta_stored)?);
    file.extend_from_slice(&batch);
    Ok(file)
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
    let s = u32::try_from(payload.len()).map_err(|_| Error::new(ErrorCode::InvalidArgument, "a log record exceeds the format's 4 GiB"))?;
    out.try_reserve(RECORD_OVERHEAD + payload.len()).map_err(|_| {
        Error::new(
            ErrorCode::InvalidArgument,
            format!("cannot allocate {} bytes for log records", out.len() + RECORD_OVERHEAD + payload.len()),
        )
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

/// Parses a whole log file held in memory, with the reading rules of
/// FORMAT.md §4.6 (a torn tail past the acknowledged records is left out;
/// damage to them is `ERR_CORRUPT`; a log of the earlier layout by its rule).
/// For tools and tests; the store reads logs in pieces.
pub fn parse_log(bytes: &[u8], ctx: &SegmentContext<'_>) -> Result<ParsedLog> {
    let size = bytes.len() as u64;
    let (header, meta) = format::parse_head(bytes, size, ctx)?;
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
    let (header, _) = format::parse_head(bytes, size, ctx)?;
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
    let (header, old) = format::parse_head(bytes, size, ctx)?;
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
        return Err(Error::corrupt(format!(
            "the log file is {size} bytes, shorter than its acknowledged records, which end at offset {}",
            commit.end
        ))
        .with_file(path));
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
            self.vfs.rename(&stage, &target).map_err(|e| Error::io(e, "cannot rename a staging file over the key file", &target))?;
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
    /// - A log (FORMAT.md §4.6): its acknowledged records are checked (all
    ///   of them, the first time this process appends to it; then the first
    ///   and the last): damage is `ERR_CORRUPT`, and nothing is written. If
    ///   slot B is damaged (a crash while it was written), it is first set to
    ///   the commit of slot A and fsynced. Then the bytes past the
    ///   acknowledged records (the torn tail of an append that never
    ///   returned) are cut, the records written after them with ONE `pwrite`
    ///   in the file's codec, slot A set to the new commit, one fsync; then
    ///   slot B, one fsync; only then does the append return. (With
    ///   `sync_blob` off, the same writes without the fsyncs.) A failed
    ///   fsync poisons the store. `create_meta` is not used.
    /// - A log of the earlier layout (no commit area) is rewritten whole in
    ///   the current layout with the new records after its own (a torn tail
    ///   dropped by the old rule; damage in its middle is `ERR_CORRUPT`).
    /// - Any other key file: `ERR_NOT_A_LOG`, the file unchanged.
    ///
    /// A crash before this returns keeps every append acknowledged before,
    /// and of this one all its records or none: the commit decides, and the
    /// records it names were fsynced before it was written.
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
        if !header.is_log() {
            return Err(Error::new(ErrorCode::NotALog, "the key holds a value, not an append log").with_file(&path));
        }
        let layout = open_layout(&*file, size, &path, &header, &prefix, &ctx)?;
        let meta_stored = prefix[HEADER_LEN..HEADER_LEN + header.meta_len as usize].to_vec();
        let Bound::Committed { commit, b_valid } = layout.bound else {
            // The earlier layout: migrated by a rewrite, the new records after the old.
            remember((self.id, key_hash), None);
            let (info, commit) = self.write_whole(key, |out, stage| {
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
            remember((self.id, key_hash), Some(Verified { meta_sum: header.meta_checksum, commit }));
            return Ok(info);
        };
        let id = (self.id, key_hash);
        let known = verified().get(&id).copied();
        let info = if known == Some(Verified { meta_sum: header.meta_checksum, commit }) {
            committed_info(&*file, &layout, &prefix, &path)?
        } else {
            walk(&*file, size, &layout, prefix, &path, |_, _| Ok(()))?.info
        };
        let index = info.next_index().map_err(|e| e.with_file(&path))?;
        let (batch, last_sum) = encode_records(header.codec, &ctx, index, records, &mut OsRandom).map_err(|e| e.with_file(&path))?;
        let new =
            Commit { seq: commit.seq + 1, count: commit.count + records.len() as u64, end: commit.end + batch.len() as u64, last_sum };
        let slot = encode_commit_slot(&new, header.codec, &ctx, &meta_stored).map_err(|e| e.with_file(&path))?;
        let sync = |file: &dyn VfsFile| -> Result<()> {
            if self.options().sync_blob {
                file.sync().map_err(|e| self.fsync_failed(e, "cannot fsync the log file", &path))?;
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
    fn log_create(&self, key: &[u8], records: &[NewRecord<'_>], meta: &[u8]) -> Result<LogInfo> {
        let path = self.file_path(key);
        let secret = self.options().encryption_key.as_deref();
        let codec = self.new_file_codec();
        let key_hash = keyhash::key_hash(key);
        let ctx = SegmentContext { secret, key_hash, accept_plaintext: false };
        let mut rng = OsRandom;
        let meta_stored = encode_log_meta(codec, secret, key, meta, &mut rng).map_err(|e| e.with_file(&path))?;
        remember((self.id, key_hash), None);
        // A record that cannot be encoded fails the write before the rename:
        // the staging file is removed, nothing else was touched.
        let (info, commit) =
            self.write_whole(key, |out, stage| write_log_whole(out, stage, codec, &ctx, &meta_stored, None, 0, records, &mut rng))?;
        let meta_sum = xxh3_64(&meta_stored);
        remember((self.id, key_hash), Some(Verified { meta_sum, commit }));
        Ok(info)
    }

    /// Opens the log of `key` (its CKE) for reading: `None` if the key does
    /// not exist, `ERR_NOT_A_LOG` if it holds something else. Needs no lock:
    /// the cursor reads the records acknowledged when it was opened (an
    /// append or a trim meanwhile is not seen).
    pub fn open_log(&self, key: &[u8]) -> Result<Option<LogCursor>> {
        let Some((file, size, path)) = self.open_key(key)? else { return Ok(None) };
        let key_hash = keyhash::key_hash(key);
        let ctx = self.context(key_hash);
        let (header, meta, prefix) = Self::read_head(&*file, size, &path, &ctx)?;
        Self::check_key(&meta.key, key, &path)?;
        if !header.is_log() {
            return Err(Error::new(ErrorCode::NotALog, "the key holds a value, not an append log").with_file(&path));
        }
        let layout = open_layout(&*file, size, &path, &header, &prefix, &ctx)?;
        let secret = self.options().encryption_key.clone();
        Ok(Some(LogCursor::with_layout(file, size, path, &header, layout, prefix, secret, key_hash, ctx.accept_plaintext)))
    }

    /// Rewrites the log of `key` (its CKE) with the meta segment from `meta`
    /// and only its records of index `keep_from` or more, which keep their
    /// indexes; atomically, like any write (staging file, fsync, rename,
    /// directory fsync), in the current layout (FORMAT.md §4.6). The records
    /// are copied as stored, in bounded memory, so the log keeps the codec it
    /// was written with. The bytes past the acknowledged records (a torn
    /// tail) are dropped; damage to the acknowledged records is
    /// `ERR_CORRUPT`, the file unchanged. Returns where the log stands after
    /// the trim: with no record kept, the next append gets index 0. A missing
    /// key is not an error: nothing is written and [`LogInfo::EMPTY`]
    /// returned. The caller holds the key's lock.
    pub fn log_trim(&self, key: &[u8], keep_from: u64, meta: &[u8]) -> Result<LogInfo> {
        self.check_writable()?;
        let Some((file, size, path)) = self.open_key(key)? else { return Ok(LogInfo::EMPTY) };
        let key_hash = keyhash::key_hash(key);
        let ctx = self.context(key_hash);
        let (header, old_meta, prefix) = Self::read_head(&*file, size, &path, &ctx)?;
        Self::check_key(&old_meta.key, key, &path)?;
        if !header.is_log() {
            return Err(Error::new(ErrorCode::NotALog, "the key holds a value, not an append log").with_file(&path));
        }
        let layout = open_layout(&*file, size, &path, &header, &prefix, &ctx)?;
        let meta_stored = encode_log_meta(header.codec, ctx.secret, key, meta, &mut OsRandom).map_err(|e| e.with_file(&path))?;
        remember((self.id, key_hash), None);
        let (info, commit) = self.write_whole(key, |out, stage| {
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
        remember((self.id, key_hash), Some(Verified { meta_sum: xxh3_64(&meta_stored), commit }));
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
    use std::collections::{BTreeMap, BTreeSet};
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

    /// The combinations share a directory: a keyed store there reads the
    /// plaintext files of the others as a migration does (FORMAT.md §4.7).
    fn with_codec(compressor: u8, secret: Option<&str>) -> Options {
        Options {
            compressor,
            encryption_key: secret.map(|k| k.as_bytes().to_vec()),
            accept_plaintext: secret.is_some(),
            ..Options::default()
        }
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
            assert_eq!(&bytes[8..12], &FLAGS_COMMITTED_LOG.to_le_bytes());
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
        // A value key lists with no log info. The store with the key reads
        // plaintext logs only with accept_plaintext (a migration).
        let strict = FileStore::open(tmp.path(), Options { accept_plaintext: false, ..with_codec(1, Some("s3cr3t")) }).unwrap();
        assert_eq!(strict.list().unwrap().entries.iter().filter(|e| e.log.is_some()).count(), 2);
        let store = FileStore::open(tmp.path(), Options { accept_plaintext: true, ..with_codec(1, Some("s3cr3t")) }).unwrap();
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
        let store = FileStore::open(tmp.path(), with_codec(0, Some("s3cr3t"))).unwrap();
        assert_eq!(store.log_trim(&key("missing"), 3, META).unwrap(), LogInfo::EMPTY);
        assert!(!store.exists(&key("missing")).unwrap());
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.iter().all(|n| !n.to_string_lossy().ends_with(".stage")), "no staging file left");
    }

    /// The offset of the first record of a log file, of either layout.
    fn data_start(file: &[u8]) -> usize {
        let area = if le_u32(&file[8..12]) == FLAGS_COMMITTED_LOG { LOG_COMMIT_AREA as usize } else { 0 };
        HEADER_LEN + le_u32(&file[12..16]) as usize + area
    }

    /// The offset of each record of a whole, valid log file.
    fn record_starts(file: &[u8]) -> Vec<usize> {
        let mut at = data_start(file);
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
            // The log after two appends, then after the third: what a crash
            // during the third can leave is the first with some of the
            // third's bytes after it (its commit names two records).
            let (good, ends) = build(&store, &k, &recs[..2]);
            append(&store, &k, &recs[2]).unwrap();
            let full = fs::read(&path).unwrap();
            let third = &full[ends[1]..];
            let next = rec(2, b"replacement".to_vec());
            let data = data_start(&good);
            // The third record cut at every byte, whole, and whole with more after it;
            // and cut records followed by zeros (the size reached the disk, the data did not).
            let mut tails: Vec<Vec<u8>> = (0..=third.len()).map(|n| [&good[..], &third[..n]].concat()).collect();
            tails.push([&good[..], third, third, b"junk"].concat());
            for n in [1, 5, 21, 40, 100] {
                for cut in [0, 4, 30] {
                    tails.push([&good[..], &third[..cut], &vec![0u8; n][..]].concat());
                }
            }
            for torn in tails {
                let ctx = format!("codec {c}, torn file of {} bytes", torn.len());
                fs::write(&path, &torn).unwrap();
                forget_verified(&store);
                assert_eq!(read_all(&store, &k).unwrap(), recs[..2], "{ctx}");
                assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(1), 1001)), "{ctx}");
                assert_eq!(append(&store, &k, &next).unwrap(), info(0, Some(2), 1002), "{ctx}");
                let after = fs::read(&path).unwrap();
                assert_eq!(after[data..ends[1]], good[data..], "{ctx}: the acknowledged records are untouched");
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
            fs::write(&path, &good).unwrap();
            forget_verified(&store);
            append(&store, &k, &big).unwrap();
            let full = fs::read(&path).unwrap();
            assert!(full.len() - ends[1] > 2 * READ_BUF, "a record read in pieces");
            for cut in [ends[1] + 21, ends[1] + 300_000, full.len() - 13, full.len() - 1, full.len()] {
                fs::write(&path, [&good[..], &full[ends[1]..cut]].concat()).unwrap();
                forget_verified(&store);
                assert_eq!(read_all(&store, &k).unwrap(), recs[..2]);
                assert_eq!(append(&store, &k, &next).unwrap().last_index, Some(2));
                assert_eq!(read_all(&store, &k).unwrap(), [&recs[..2], &[next.clone()][..]].concat());
            }
            // Whole, it reads back (the payload in one piece, the checksum in several).
            fs::write(&path, &full).unwrap();
            assert_eq!(read_all(&store, &k).unwrap(), [&recs[..2], &[big.clone()][..]].concat());
            // A log with no acknowledged records and a torn one after them; the next append is record 0.
            store.log_trim(&k, 100, META).unwrap();
            let empty = fs::read(&path).unwrap();
            fs::write(&path, [&empty[..], &full[ends[1]..ends[1] + 40]].concat()).unwrap();
            forget_verified(&store);
            assert_eq!(read_all(&store, &k).unwrap(), vec![]);
            assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(LogInfo::EMPTY));
            assert_eq!(append(&store, &k, &recs[0]).unwrap(), info(0, Some(0), 1000));
            assert_eq!(read_all(&store, &k).unwrap(), recs[..1]);
        }
    }

    /// Reads the whole log of `k`: its records, or the error that ends it
    /// (after any records before the damage).
    fn read_to_error(store: &FileStore, k: &[u8]) -> std::result::Result<Vec<LogRecord>, ErrorCode> {
        let mut cursor = store.open_log(k).map_err(|e| e.code())?.expect("the log exists");
        let mut out = Vec::new();
        loop {
            match cursor.next_batch(3) {
                Ok(Some(batch)) => out.extend(batch),
                Ok(None) => return Ok(out),
                Err(e) => return Err(e.code()),
            }
        }
    }

    #[test]
    fn damage_to_acknowledged_records_is_corrupt_and_never_written_over() {
        for (c, secret) in [(0, None), (1, Some("s3cr3t"))] {
            let tmp = tempfile::tempdir().unwrap();
            let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
            let k = key(&format!("damaged-{c}"));
            let path = store.file_path(&k);
            let recs: Vec<LogRecord> = (0..4).map(|i| rec(i, payload(i + 1))).collect();
            let (full, ends) = build(&store, &k, &recs);
            let data = data_start(&full);
            // Every byte of record 1 (in the middle) and of record 3 (the
            // last), flipped; and the file cut at every length into its records.
            let mut damages: Vec<(String, Vec<u8>)> = Vec::new();
            for at in (ends[0]..ends[1]).chain(ends[2]..ends[3]) {
                let mut bad = full.clone();
                bad[at] ^= 0x10;
                damages.push((format!("codec {c}, byte {at} flipped"), bad));
            }
            for len in data..full.len() {
                damages.push((format!("codec {c}, cut to {len} bytes"), full[..len].to_vec()));
            }
            for (ctx, bad) in damages {
                fs::write(&path, &bad).unwrap();
                forget_verified(&store);
                let err = read_to_error(&store, &k).unwrap_err();
                assert_eq!(err, ErrorCode::Corrupt, "{ctx}: the log reads as damaged, never shorter");
                let err = append(&store, &k, &rec(4, b"x".to_vec())).unwrap_err();
                assert_eq!((err.code(), err.file()), (ErrorCode::Corrupt, Some(path.as_path())), "{ctx}");
                assert_eq!(store.log_trim(&k, 0, META).unwrap_err().code(), ErrorCode::Corrupt, "{ctx}");
                assert_eq!(fs::read(&path).unwrap(), bad, "{ctx}: the file is unchanged");
            }
            // getMeta reads only the first and the last record: damage to the
            // last (or a shorter file) it reports; damage in between the cursor does.
            let mut bad = full.clone();
            bad[ends[3] - 15] ^= 1;
            fs::write(&path, &bad).unwrap();
            assert_eq!(store.get_meta(&k).unwrap_err().code(), ErrorCode::Corrupt);
            assert_eq!(store.get(&k).unwrap_err().code(), ErrorCode::Corrupt);
            let listing = store.list().unwrap();
            assert_eq!(listing.corrupt.len(), 1);
            assert_eq!(listing.corrupt[0].file(), Some(path.as_path()));
            fs::write(&path, &full[..full.len() - 1]).unwrap();
            assert_eq!(store.get_meta(&k).unwrap_err().code(), ErrorCode::Corrupt);
            let mut bad = full.clone();
            bad[ends[1] + 25] ^= 1;
            fs::write(&path, &bad).unwrap();
            assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(3), 1003)));
            let mut cursor = store.open_log(&k).unwrap().unwrap();
            assert_eq!(cursor.next_batch(10).unwrap().unwrap(), recs[..2], "the records before the damage");
            assert_eq!(cursor.next_batch(10).unwrap_err().code(), ErrorCode::Corrupt);
            assert!(cursor.next_batch(10).unwrap().is_none());
            // This process appended to the log as it was: its next append
            // checks the last record again, and refuses when it is damaged.
            fs::write(&path, &full).unwrap();
            forget_verified(&store);
            append(&store, &k, &recs[0]).unwrap_or_else(|_| panic!("undamaged"));
            let whole = fs::read(&path).unwrap();
            let mut bad = whole.clone();
            let n = bad.len();
            bad[n - 20] ^= 4;
            fs::write(&path, &bad).unwrap();
            assert_eq!(append(&store, &k, &recs[1]).unwrap_err().code(), ErrorCode::Corrupt);
            assert_eq!(fs::read(&path).unwrap(), bad);
        }
    }

    /// One slot of the commit area damaged (as a crash while it is written
    /// can leave it): the other holds the commit, the log reads whole, and
    /// the next append writes both slots again. Both damaged: `ERR_CORRUPT`.
    #[test]
    fn a_damaged_commit_slot_is_survived_and_repaired() {
        let tmp = tempfile::tempdir().unwrap();
        for (c, secret) in [(0, None), (1, Some("s3cr3t"))] {
            let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
            let k = key(&format!("slots-{c}"));
            let path = store.file_path(&k);
            let recs: Vec<LogRecord> = (0..3).map(|i| rec(i, payload(i + 1))).collect();
            let (full, _) = build(&store, &k, &recs);
            let area = data_start(&full) - LOG_COMMIT_AREA as usize;
            for at in area..area + LOG_COMMIT_AREA as usize {
                let ctx = format!("codec {c}, commit byte {at} flipped");
                let mut bad = full.clone();
                bad[at] ^= 0x40;
                fs::write(&path, &bad).unwrap();
                forget_verified(&store);
                assert_eq!(read_all(&store, &k).unwrap(), recs, "{ctx}");
                assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(2), 1002)), "{ctx}");
                let r3 = rec(3, b"three".to_vec());
                append(&store, &k, &r3).unwrap();
                let after = fs::read(&path).unwrap();
                assert_eq!(after[area..area + COMMIT_SLOT], after[area + COMMIT_SLOT..area + 2 * COMMIT_SLOT], "{ctx}: both slots equal");
                assert_eq!(read_all(&store, &k).unwrap(), [&recs[..], &[r3][..]].concat(), "{ctx}");
            }
            let mut bad = full.clone();
            bad[area + 3] ^= 1;
            bad[area + COMMIT_SLOT + 3] ^= 1;
            fs::write(&path, &bad).unwrap();
            forget_verified(&store);
            assert_eq!(store.open_log(&k).unwrap_err().code(), ErrorCode::Corrupt);
            assert_eq!(store.get_meta(&k).unwrap_err().code(), ErrorCode::Corrupt);
            assert_eq!(append(&store, &k, &recs[0]).unwrap_err().code(), ErrorCode::Corrupt);
            assert_eq!(fs::read(&path).unwrap(), bad);
        }
    }

    /// Without the key, the commit of an encrypted log cannot be rewritten
    /// to hide records: its checksum can be fixed, its tag cannot.
    #[test]
    fn an_encrypted_commit_cannot_be_forged_to_hide_records() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path(), with_codec(0, Some("s3cr3t"))).unwrap();
        let k = key("forged");
        let path = store.file_path(&k);
        let recs: Vec<LogRecord> = (0..3).map(|i| rec(i, payload(i + 1))).collect();
        let (full, ends) = build(&store, &k, &recs);
        let area = data_start(&full) - LOG_COMMIT_AREA as usize;
        // Both slots say two records, ending where record 1 does; the file is cut there.
        let mut forged = full[..ends[1]].to_vec();
        let last_sum = le_u64(&full[ends[1] - 12..ends[1] - 4]);
        for slot in [area, area + COMMIT_SLOT] {
            forged[slot + 8..slot + 16].copy_from_slice(&2u64.to_le_bytes());
            forged[slot + 16..slot + 24].copy_from_slice(&(ends[1] as u64).to_le_bytes());
            forged[slot + 24..slot + 32].copy_from_slice(&last_sum.to_le_bytes());
            let check = xxh3_64(&forged[slot..slot + SLOT_CHECK]);
            forged[slot + SLOT_CHECK..slot + COMMIT_SLOT].copy_from_slice(&check.to_le_bytes());
        }
        fs::write(&path, &forged).unwrap();
        forget_verified(&store);
        assert_eq!(store.open_log(&k).unwrap_err().code(), ErrorCode::Decrypt);
        assert_eq!(store.get_meta(&k).unwrap_err().code(), ErrorCode::Decrypt);
        assert_eq!(append(&store, &k, &recs[2]).unwrap_err().code(), ErrorCode::Decrypt);
        // The same edit of a plain log is not detected: without a key, anyone
        // who can write the file can rewrite it (FORMAT.md §4.6).
        let plain = FileStore::open(tmp.path().join("plain"), Options::default()).unwrap();
        let k = key("plain-forged");
        let (full, ends) = build(&plain, &k, &recs);
        let area = data_start(&full) - LOG_COMMIT_AREA as usize;
        let mut forged = full[..ends[1]].to_vec();
        let fixed = encode_commit_area(
            &Commit { seq: 9, count: 2, end: ends[1] as u64, last_sum: le_u64(&full[ends[1] - 12..ends[1] - 4]) },
            Codec::NONE,
            &plain.context(keyhash::key_hash(&k)),
            &[],
        )
        .unwrap();
        forged[area..area + LOG_COMMIT_AREA as usize].copy_from_slice(&fixed);
        fs::write(plain.file_path(&k), &forged).unwrap();
        assert_eq!(read_all(&plain, &k).unwrap(), recs[..2]);
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
        // Without the key the store does not open (its key check), and
        // without the key check the meta segment already fails.
        assert_eq!(FileStore::open(tmp.path(), Options::default()).unwrap_err().code(), ErrorCode::Decrypt);
        fs::remove_file(tmp.path().join(crate::codec::keycheck::KEY_CHECK_FILE_NAME)).unwrap();
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
        // The records and slot A, a sync, slot B, a sync (FORMAT.md §4.6).
        assert_eq!((single, batch), (5, 5), "three write_all_at and two syncs either way");
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

    // --- Damage at every offset, in memory. ---

    /// A log of `n` records created and appended one by one, in memory
    /// ([`encode_log_file`], [`append_log_file`]); the end of each record.
    fn log_bytes(codec: Codec, secret: Option<&[u8]>, k: &[u8], n: u64) -> (Vec<u8>, Vec<usize>) {
        let ctx = SegmentContext { secret, key_hash: keyhash::key_hash(k), accept_plaintext: false };
        let recs: Vec<LogRecord> = (0..n).map(|i| rec(i, payload(i).into_iter().take(40).collect())).collect();
        let mut file = encode_log_file(codec, secret, k, META, &[new_record(&recs[0])], &mut OsRandom).unwrap();
        let mut ends = vec![file.len()];
        for r in &recs[1..] {
            file = append_log_file(&file, &ctx, &[new_record(r)], &mut OsRandom).unwrap();
            ends.push(file.len());
        }
        (file, ends)
    }

    /// Every byte of a 10-record log flipped, and the log cut at every
    /// length, in every codec: damage to the acknowledged records (and a
    /// shorter file) is `ERR_CORRUPT`, and an append refuses it; no damage
    /// anywhere ever reads as a shorter log. One damaged commit slot is
    /// survived: the other holds the same commit.
    #[test]
    fn damage_at_every_offset_is_never_a_shorter_log() {
        let k = key("every offset");
        for (c, secret) in COMBOS {
            let secret = secret.map(str::as_bytes);
            let codec = Codec { compressor: c, encryptor: u8::from(secret.is_some()) };
            let ctx = SegmentContext { secret, key_hash: keyhash::key_hash(&k), accept_plaintext: false };
            let (full, ends) = log_bytes(codec, secret, &k, 10);
            let want = parse_log(&full, &ctx).unwrap().records;
            assert_eq!(want.len(), 10);
            let data = data_start(&full);
            let area = data - LOG_COMMIT_AREA as usize;
            let one = [NewRecord { serializer: 1, stamp: 7, payload: b"more" }];
            let mut outcomes = BTreeMap::new();
            for at in 0..full.len() {
                let mut bad = full.clone();
                bad[at] ^= 1 << (at % 8);
                let ctx_ = format!("codec {codec:?}, byte {at} of {} flipped", full.len());
                let read = parse_log(&bad, &ctx).map(|p| p.records);
                let appended = append_log_file(&bad, &ctx, &one, &mut OsRandom);
                match read {
                    Ok(records) => {
                        assert_eq!(records, want, "{ctx_}: read whole or not at all");
                        assert!((area..data).contains(&at), "{ctx_}: only a commit slot may be damaged unnoticed");
                        assert_eq!(parse_log(&appended.unwrap(), &ctx).unwrap().records.len(), 11, "{ctx_}");
                    }
                    Err(e) => {
                        if at >= data {
                            assert_eq!(e.code(), ErrorCode::Corrupt, "{ctx_}: damage to an acknowledged record");
                        }
                        assert!(appended.is_err(), "{ctx_}: an append refuses a damaged log");
                    }
                }
                *outcomes
                    .entry(if at < area {
                        "head"
                    } else if at < data {
                        "commit"
                    } else {
                        "records"
                    })
                    .or_insert(0) += 1;
            }
            for len in 0..full.len() {
                let ctx_ = format!("codec {codec:?}, cut to {len} of {} bytes", full.len());
                let err = parse_log(&full[..len], &ctx).unwrap_err();
                assert_eq!(err.code(), ErrorCode::Corrupt, "{ctx_}");
                assert!(append_log_file(&full[..len], &ctx, &one, &mut OsRandom).is_err(), "{ctx_}");
            }
            // Bytes past the acknowledged records are a torn tail, whatever they hold.
            for extra in [&b"\x00"[..], &[0xff; 40], &full[ends[8]..]] {
                let torn = [&full[..], extra].concat();
                assert_eq!(parse_log(&torn, &ctx).unwrap().records, want);
                let appended = append_log_file(&torn, &ctx, &one, &mut OsRandom).unwrap();
                assert_eq!(appended[..ends[9]].len(), full.len());
                assert_eq!(parse_log(&appended, &ctx).unwrap().records.len(), 11);
            }
            assert_eq!(outcomes.values().sum::<usize>(), full.len());
        }
    }

    /// The store's bytes are the in-memory tools' bytes (plain codecs: no randomness).
    #[test]
    fn the_store_appends_and_trims_the_bytes_the_tools_make() {
        let tmp = tempfile::tempdir().unwrap();
        for c in [0, 1] {
            let store = FileStore::open(tmp.path(), with_codec(c, None)).unwrap();
            let codec = Codec { compressor: c, encryptor: 0 };
            let k = key(&format!("same-{c}"));
            let ctx = store.context(keyhash::key_hash(&k));
            let recs: Vec<LogRecord> = (0..5).map(|i| rec(i, payload(i + 2))).collect();
            let news: Vec<NewRecord<'_>> = recs.iter().map(new_record).collect();
            store.log_append(&k, &news[..2], META).unwrap();
            store.log_append(&k, &news[2..3], META).unwrap();
            store.log_append(&k, &news[3..], META).unwrap();
            let mut mem = encode_log_file(codec, None, &k, META, &news[..2], &mut OsRandom).unwrap();
            mem = append_log_file(&mem, &ctx, &news[2..3], &mut OsRandom).unwrap();
            mem = append_log_file(&mem, &ctx, &news[3..], &mut OsRandom).unwrap();
            assert_eq!(fs::read(store.file_path(&k)).unwrap(), mem, "codec {c}");
            let parsed = parse_log(&mem, &ctx).unwrap();
            assert_eq!(
                parsed.commit,
                Some(Commit { seq: 3, count: 5, end: mem.len() as u64, last_sum: le_u64(&mem[mem.len() - 12..mem.len() - 4]) })
            );
            store.log_trim(&k, 2, b"\x80").unwrap();
            let trimmed = trim_log_file(&mem, &ctx, 2, b"\x80", &mut OsRandom).unwrap();
            assert_eq!(fs::read(store.file_path(&k)).unwrap(), trimmed, "codec {c}");
            assert_eq!(parse_log(&trimmed, &ctx).unwrap().records, recs[2..]);
        }
    }

    // --- Logs of the earlier layout. ---

    /// A log of the earlier layout (flags 2), as builds before the commit wrote it.
    fn legacy_log(codec: Codec, secret: Option<&[u8]>, k: &[u8], recs: &[LogRecord]) -> Vec<u8> {
        let ctx = SegmentContext { secret, key_hash: keyhash::key_hash(k), accept_plaintext: false };
        let mut file = encode_legacy_log_head(codec, secret, k, META, &mut OsRandom).unwrap();
        let news: Vec<NewRecord<'_>> = recs.iter().map(new_record).collect();
        file.extend_from_slice(&encode_records(codec, &ctx, 0, &news, &mut OsRandom).unwrap().0);
        file
    }

    /// A log of the earlier layout reads as before (a torn tail dropped,
    /// damage in its middle `ERR_CORRUPT`), and its first append rewrites it
    /// in the current layout, its records copied as stored.
    #[test]
    fn a_log_of_the_earlier_layout_reads_as_before_and_migrates_on_append() {
        let tmp = tempfile::tempdir().unwrap();
        for (c, secret) in COMBOS {
            let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
            let codec = Codec { compressor: c, encryptor: u8::from(secret.is_some()) };
            let k = key(&format!("legacy-{c}-{secret:?}"));
            let path = store.file_path(&k);
            let recs: Vec<LogRecord> = (0..3).map(|i| rec(i, payload(i + 1))).collect();
            let old = legacy_log(codec, secret.map(str::as_bytes), &k, &recs);
            let starts = record_starts(&old);
            assert_eq!(le_u32(&old[8..12]), FLAG_LOG);
            // As before: whole; torn; damaged in the middle.
            fs::write(&path, &old).unwrap();
            assert_eq!(read_all(&store, &k).unwrap(), recs);
            assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(2), 1002)));
            fs::write(&path, &old[..old.len() - 3]).unwrap();
            assert_eq!(read_all(&store, &k).unwrap(), recs[..2]);
            let mut bad = old.clone();
            bad[starts[1] + 22] ^= 1;
            fs::write(&path, &bad).unwrap();
            forget_verified(&store);
            assert_eq!(read_to_error(&store, &k), Err(ErrorCode::Corrupt));
            assert_eq!(append(&store, &k, &rec(3, b"x".to_vec())).unwrap_err().code(), ErrorCode::Corrupt);
            assert_eq!(fs::read(&path).unwrap(), bad);
            // The first append migrates it (a torn tail dropped by the old rule).
            fs::write(&path, &old[..old.len() - 3]).unwrap();
            let r = rec(2, b"after migration".to_vec());
            assert_eq!(append(&store, &k, &r).unwrap(), info(0, Some(2), 1002));
            let new = fs::read(&path).unwrap();
            assert_eq!(le_u32(&new[8..12]), FLAGS_COMMITTED_LOG);
            assert_eq!(new[HEADER_LEN..starts[0]], old[HEADER_LEN..starts[0]], "the meta segment is kept as stored");
            assert_eq!(
                new[data_start(&new)..data_start(&new) + starts[2] - starts[0]],
                old[starts[0]..starts[2]],
                "records copied as stored"
            );
            assert_eq!(read_all(&store, &k).unwrap(), [&recs[..2], &[r][..]].concat());
            // From then on, damage to its last record is ERR_CORRUPT.
            let mut bad = new.clone();
            let n = bad.len();
            bad[n - 14] ^= 1;
            fs::write(&path, &bad).unwrap();
            assert_eq!(read_to_error(&store, &k), Err(ErrorCode::Corrupt));
            // A trim writes the current layout too.
            fs::write(&path, &old).unwrap();
            assert_eq!(store.log_trim(&k, 1, META).unwrap(), info(1, Some(2), 1002));
            assert_eq!(le_u32(&fs::read(&path).unwrap()[8..12]), FLAGS_COMMITTED_LOG);
            assert_eq!(read_all(&store, &k).unwrap(), recs[1..]);
        }
    }

    /// A crash at every step of the append that migrates a log of the
    /// earlier layout: the log is the old one or the new one, whole.
    #[test]
    fn a_crash_while_migrating_keeps_the_old_log_or_the_new() {
        let recs: Vec<LogRecord> = (0..3).map(|i| rec(i, payload(i + 1))).collect();
        let k = key("log");
        let ops = vec![Op::Append(vec![b"new".to_vec(), b"two".to_vec()]), Op::Append(vec![b"then".to_vec()])];
        let legacy = |seed: u64| {
            let (fs, dir) = setup(seed, "/sim/log-migrate");
            let mut f = fs.create_new(&dir.join(keyhash::file_name(&k))).unwrap();
            f.write_all(&legacy_log(Codec::NONE, None, &k, &recs)).unwrap();
            f.sync().unwrap();
            drop(f);
            fs.sync_dir(&dir).unwrap();
            (fs, dir)
        };
        let (fs, dir) = legacy(0);
        let start = fs.steps();
        assert!(run(&fs, &dir, &synced(), &ops).iter().all(|o| *o == Outcome::Acked));
        let total = fs.steps() - start;
        for writeback in [Writeback::None, Writeback::Unordered, Writeback::Ordered] {
            for n in 0..=total {
                let ctx = format!("crash at step {n} of {total}, {writeback:?}");
                let (fs, dir) = legacy(n);
                fs.fail_after(n);
                let outcomes = run(&fs, &dir, &synced(), &ops);
                fs.crash(writeback);
                let base: State = Some((META.to_vec(), recs.clone()));
                let states = [base.clone(), effect(&base, 0, &ops[0]), effect(&effect(&base, 0, &ops[0]), 1, &ops[1])];
                let acked = outcomes.iter().filter(|o| **o == Outcome::Acked).count();
                let allowed = &states[acked..(acked + 2).min(3)];
                recover(&fs, &dir, &synced(), false, &ctx, |s| allowed.contains(s));
            }
        }
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
        match (op, state) {
            (Op::Append(batch), _) => {
                let (meta, mut recs) = state.clone().unwrap_or_else(|| (META.to_vec(), Vec::new()));
                let next = recs.last().map_or(0, |r| r.index + 1);
                for (j, b) in batch.iter().enumerate() {
                    recs.push(LogRecord { index: next + j as u64, stamp: stamp(i, j), serializer: 1, bytes: b.clone() });
                }
                Some((meta, recs))
            }
            (Op::Trim(..), None) => None,
            (Op::Trim(from, meta), Some((_, recs))) => Some((meta.to_vec(), recs.iter().filter(|r| r.index >= *from).cloned().collect())),
        }
    }

    /// What op `i` may leave when it was interrupted (or its fsync failed)
    /// and the machine crashed, besides the state before it: the state after
    /// it, whole. An append is all or nothing (its commit decides), and so
    /// is a new log or a trim (the rename decides).
    fn interrupted(state: &State, i: usize, op: &Op) -> Vec<State> {
        vec![effect(state, i, op)]
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
                        let news: Vec<NewRecord<'_>> =
                            batch.iter().enumerate().map(|(j, b)| NewRecord { serializer: 1, stamp: stamp(i, j), payload: b }).collect();
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
        let store =
            FileStore::open_with(Arc::new(fs.clone()), dir, options.clone()).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
        let state = match read_state(&store) {
            Ok(s) => s,
            Err(e) if corrupt_ok && e.code() == ErrorCode::Corrupt => return None,
            Err(e) => panic!("{ctx}: the log cannot be read: {e}"),
        };
        assert!(
            check(&state),
            "{ctx}: the log holds {:?}",
            state.as_ref().map(|(m, r)| (m, r.iter().map(|r| (r.index, r.bytes.len())).collect::<Vec<_>>()))
        );
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
    /// and of the interrupted one what [`interrupted`] allows (all of it or
    /// none), and is never `ERR_CORRUPT`. Returns how many runs kept the
    /// interrupted op.
    fn crash_at_every_step(options: Options, writeback: Writeback, seeds: &[u64], dir: &str, ops: &[Op]) -> usize {
        assert!(options.sync_blob);
        let states = history(ops);
        let total = count_steps(&options, dir, ops);
        let mut kept = 0;
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
                kept += usize::from(state != states[acked]);
            }
        }
        eprintln!("log, {writeback:?}: {} crash runs, {kept} kept the interrupted op", (total + 1) * seeds.len() as u64);
        kept
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

    /// A crash while a group commit of 4 records is being made durable: at
    /// the first fsync (records and slot A written) or the second (slot B
    /// written), over many seeds. The log holds the records acknowledged
    /// before and all 4 or none of them: the commit decides, never a prefix.
    /// A crash at the second fsync leaves each outcome for some seed.
    #[test]
    fn a_crash_during_a_group_commit_leaves_all_its_records_or_none() {
        let batch: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'a' + i; 1000]).collect();
        let ops = vec![Op::Append(vec![b"r0".to_vec()]), Op::Append(batch.clone())];
        let states = history(&ops);
        let dir = "/sim/log-group";
        let op0 = count_steps(&synced(), dir, &ops[..1]);
        // Op 1's steps: the records, slot A, a sync, slot B, a sync.
        for (at, both) in [(op0 + 2, false), (op0 + 4, true)] {
            let mut seen = BTreeSet::new();
            for seed in 0..100 {
                let ctx = format!("crash at step {at}, seed {seed}");
                let (fs, dir) = setup(seed, dir);
                fs.fail_after(at);
                let outcomes = run(&fs, &dir, &synced(), &ops);
                assert_eq!(outcomes, [Outcome::Acked, Outcome::Failed(ErrorCode::Fsync)], "{ctx}");
                fs.crash(Writeback::None);
                let allowed = [states[1].clone(), states[2].clone()];
                let state = recover(&fs, &dir, &synced(), false, &ctx, |s| allowed.contains(s)).unwrap();
                seen.insert(state.unwrap().1.len());
            }
            let want: BTreeSet<usize> = if both { [1, 5].into() } else { [1].into() };
            assert_eq!(seen, want, "crash at step {at}: the group commit is all or nothing");
        }
    }

    /// Slot B torn by a crash, then a crash at every step of the next append
    /// under many seeds: slot B is repaired (and fsynced) before slot A is
    /// written again, so one slot always holds a commit and the log is never
    /// `ERR_CORRUPT`. (Without the repair, a torn slot A next to the torn B
    /// loses both.)
    #[test]
    fn a_torn_slot_b_is_repaired_before_slot_a_is_written_again() {
        let ops = [Op::Append(vec![b"r0".to_vec()]), Op::Append(vec![b"r1".to_vec(), b"r2".to_vec()])];
        let k = key("log");
        let before = history(&ops[..1])[1].clone();
        let after = effect(&before, 0, &ops[1]);
        let torn = |seed: u64| {
            let (fs, dir) = setup(seed, "/sim/log-repair");
            assert_eq!(run(&fs, &dir, &synced(), &ops[..1]), [Outcome::Acked]);
            let path = dir.join(keyhash::file_name(&k));
            let slot_b = data_start(&fs.read(&path).unwrap()) - COMMIT_SLOT;
            let mut f = fs.open_write(&path).unwrap();
            f.write_all_at(&[0xee; 8], slot_b as u64 + 4).unwrap();
            f.sync().unwrap();
            (fs, dir)
        };
        let (fs, dir) = torn(0);
        let start = fs.steps();
        assert_eq!(run(&fs, &dir, &synced(), &ops[1..]), [Outcome::Acked]);
        let total = fs.steps() - start;
        for n in 0..=total {
            for seed in 0..10 {
                let ctx = format!("crash at step {n} of {total}, seed {seed}");
                let (fs, dir) = torn(seed);
                fs.fail_after(n);
                let outcome = run(&fs, &dir, &synced(), &ops[1..]);
                fs.crash(Writeback::None);
                let allowed = if outcome == [Outcome::Acked] { vec![after.clone()] } else { vec![before.clone(), after.clone()] };
                recover(&fs, &dir, &synced(), false, &ctx, |s| allowed.contains(s));
            }
        }
    }

    /// Without fsyncs a crash may lose any suffix of the log's history, but a
    /// reader never misreads: it sees the metadata of some state and a prefix
    /// of that state's records, or `ERR_CORRUPT`. FORMAT.md §4.6 allows that
    /// wherever a commit slot reaches the disk before the records it commits;
    /// in this model it happens where a renamed file's data may be torn
    /// (unordered writeback): a new or trimmed log's head, or its commit.
    #[test]
    fn without_sync_a_crash_loses_only_a_suffix() {
        let options = Options { sync_blob: false, ..Options::default() };
        let ops = workload();
        let states = history(&ops);
        let dir = "/sim/log-nosync";
        let total = count_steps(&options, dir, &ops);
        let mut corrupt = 0;
        for n in 0..=total {
            for (seed, writeback) in [
                (1, Writeback::None),
                (2, Writeback::Ordered),
                (3, Writeback::Ordered),
                (4, Writeback::Unordered),
                (5, Writeback::Unordered),
            ] {
                let ctx = format!("crash at step {n} of {total}, seed {seed}, {writeback:?}");
                let (fs, dir) = setup(seed, dir);
                fs.fail_after(n);
                run(&fs, &dir, &options, &ops);
                fs.crash(writeback);
                let prefix_of_some_state = |s: &State| match s {
                    None => true,
                    Some((meta, recs)) => states.iter().flatten().any(|(m, r)| m == meta && r.starts_with(recs)),
                };
                corrupt +=
                    usize::from(recover(&fs, &dir, &options, writeback == Writeback::Unordered, &ctx, prefix_of_some_state).is_none());
            }
        }
        eprintln!("log without sync: {corrupt} damaged logs, all reported as ERR_CORRUPT");
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
        assert!(
            ops.iter().any(|o| matches!(o, Op::Append(b) if b.iter().any(|r| r.len() > READ_BUF))),
            "a record larger than the read buffer"
        );
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
