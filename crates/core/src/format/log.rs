//! An append log's bytes (FORMAT.md §4.6), with no I/O: records, the commit
//! area and its two slots, the head of a new log; and what a log's reader
//! finds ([`LogInfo`], [`LogRecord`], [`ParsedLog`]).
//!
//! A log is a key file with [`FLAGS_COMMITTED_LOG`]: the header (`v = 128`),
//! the meta segment, the commit area (two 64-byte commit slots, A and B), then
//! records to the end of the file, each
//! `s | index | stamp | serializer | payload | xxh3_64 | s`. The commit says
//! how many records were acknowledged and where they end. A log of the
//! earlier layout ([`FLAG_LOG`] alone) has no commit area.
//!
//! `crate::log` reads logs in bounded pieces and appends, trims and migrates
//! them in a store, with these encoders.

use xxhash_rust::xxh3::xxh3_64;

use super::file::{self, Header, FLAGS_COMMITTED_LOG, FLAG_LOG, HEADER_LEN, LOG_COMMIT_AREA};
use crate::codec::{aes, Codec, Randomness, SegmentContext, SegmentKind, ENCRYPTOR_AES};
use crate::error::{Error, ErrorCode, Result};
use crate::keyhash;

/// The bytes of a record besides its payload: `s`, index, stamp, serializer
/// (21 bytes) before it, checksum and `s` again (12 bytes) after it.
pub const RECORD_OVERHEAD: usize = 33;
/// The bytes of a record before its payload.
pub(crate) const RECORD_HEAD: usize = 21;
/// The bytes of a record after its payload: checksum and `s` again.
pub(crate) const RECORD_TRAILER: usize = 12;
/// The length of one commit slot; the commit area is two of them, A then B.
pub const COMMIT_SLOT: usize = 64;
/// The bytes of a commit slot that its tag (with encryption) covers.
const SLOT_FIELDS: usize = 32;
/// The bytes of a commit slot's tag: the first 24 of the HMAC-SHA256.
const SLOT_TAG: usize = 24;
/// The offset of a slot's checksum (of bytes 0..56).
pub const SLOT_CHECK: usize = SLOT_FIELDS + SLOT_TAG;

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
    pub(crate) fn next_index(&self) -> Result<u64> {
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

/// A record to append (see `FileStore::log_append`): its index is the
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

/// A whole log file, parsed (see `crate::log::parse_log`).
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
pub(crate) fn log_header(codec: Codec, meta_stored: &[u8]) -> Result<Header> {
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
pub(crate) fn encode_log_meta(
    codec: Codec,
    secret: Option<&[u8]>,
    key_cke: &[u8],
    meta: &[u8],
    rng: &mut dyn Randomness,
) -> Result<Vec<u8>> {
    let ctx = SegmentContext { secret, key_hash: keyhash::key_hash(key_cke), accept_plaintext: false };
    let meta_plain = file::compose_meta(key_cke, meta)?;
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
pub(crate) fn choose_commit(
    area: &[u8],
    codec: Codec,
    ctx: &SegmentContext<'_>,
    meta_stored: &[u8],
    data_start: u64,
) -> Result<(Commit, bool)> {
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
/// bytes (what `FileStore::log_append` writes with one `pwrite`), with the
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

pub(crate) fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

pub(crate) fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}
