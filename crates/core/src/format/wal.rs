//! The write-ahead log's bytes (docs/FORMAT.md §10), with no I/O: the header
//! slots, the end hint, frames of records, and the reader of a log's frames
//! with its torn-tail and damage rules.
//!
//! **Not used by the store yet**: no store writes or reads `.konserve.wal`.
//! This is the codec that the log protocol (docs/WAL.md §4–§6) will sit on,
//! byte-identical to `ts/format/wal.ts` (golden vectors: test-vectors/wal.json).

use std::ops::Range;

use xxhash_rust::xxh3::xxh3_64;

use super::file::HEADER_LEN;
use crate::error::{Error, ErrorCode, Result};

/// The log's file name in the store directory.
pub const WAL_FILE_NAME: &str = ".konserve.wal";
/// The length of a header slot.
pub const SLOT_LEN: usize = 64;
/// The offset of header slot A.
pub const SLOT_A: usize = 0;
/// The offset of header slot B (another page than A).
pub const SLOT_B: usize = 4096;
/// The offset of the end hint (a page of its own: rewritten after every frame).
pub const HINT_AT: usize = 8192;
/// The length of the end hint.
pub const HINT_LEN: usize = 32;
/// The offset of the first frame.
pub const FRAMES_AT: usize = 12288;
/// The bytes of a frame before its records.
pub const FRAME_HEAD: usize = 32;
/// The bytes of a frame after its records and padding: the frame check.
pub const FRAME_TRAILER: usize = 8;
/// The shortest frame: head, one record with no payload, padding, trailer.
pub const MIN_FRAME: usize = 64;
/// The longest frame (2^23 bytes); also how far past the end a reader looks for damage.
pub const MAX_FRAME: usize = 1 << 23;
/// The bytes of a record before its payload.
pub const RECORD_HEAD: usize = 21;

const MAGIC: &[u8; 8] = b"KSVWALOG";
const VERSION: u8 = 1;

/// What a record says about its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalOp {
    /// The key's newest value: the payload is a whole key file (FORMAT.md §4, flags 0).
    Put = 1,
    /// The key was deleted.
    Delete = 2,
    /// The key's file holds its newest value (written after the file was durable).
    File = 3,
}

impl WalOp {
    fn of(byte: u8) -> Option<WalOp> {
        match byte {
            1 => Some(WalOp::Put),
            2 => Some(WalOp::Delete),
            3 => Some(WalOp::File),
            _ => None,
        }
    }
}

/// A log's header: its generation and the seq of its first frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    /// Random and nonzero, drawn at each reset.
    pub generation: u64,
    /// The seq of the first frame of this generation (>= 1).
    pub first: u64,
}

/// The end hint: where the last frame written ends (for live readers only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHint {
    /// The generation of the log it describes.
    pub generation: u64,
    /// The seq of the last frame written.
    pub seq: u64,
    /// The file offset past the last frame.
    pub end: u64,
}

/// A record to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewWalRecord<'a> {
    /// What it says.
    pub op: WalOp,
    /// XXH3-128 of the key's CKE, big-endian (the file name's digits).
    pub key_hash: [u8; 16],
    /// The key file, for a put; empty otherwise.
    pub payload: &'a [u8],
}

/// A record read from a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    /// What it says.
    pub op: WalOp,
    /// XXH3-128 of the key's CKE, big-endian.
    pub key_hash: [u8; 16],
    /// Where its payload is in the bytes that were read (empty but for a put).
    pub payload: Range<usize>,
}

/// A frame read from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalFrame {
    /// Its offset in the bytes that were read.
    pub at: usize,
    /// Its length.
    pub len: usize,
    /// Its seq.
    pub seq: u64,
    /// Its records, in order.
    pub records: Vec<WalRecord>,
}

/// The frames of a log's current generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalScan {
    /// The frames, in order.
    pub frames: Vec<WalFrame>,
    /// Where the next frame goes: past the last frame that fits.
    pub end: usize,
    /// The seq the next frame gets.
    pub next_seq: u64,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// One header slot: magic, version, generation, first, xxh3_64 of bytes 0..56.
pub fn encode_header_slot(h: &WalHeader) -> [u8; SLOT_LEN] {
    let mut s = [0u8; SLOT_LEN];
    s[0..8].copy_from_slice(MAGIC);
    s[8] = VERSION;
    s[16..24].copy_from_slice(&h.generation.to_le_bytes());
    s[24..32].copy_from_slice(&h.first.to_le_bytes());
    let check = xxh3_64(&s[..56]);
    s[56..].copy_from_slice(&check.to_le_bytes());
    s
}

/// One header slot: `Ok(None)` when it is not valid (checksum, magic, reserved
/// bytes, a generation of 0 or a first seq of 0); `ERR_UNSUPPORTED_VERSION`
/// for a valid slot of another version.
pub fn decode_header_slot(s: &[u8]) -> Result<Option<WalHeader>> {
    let Some(s) = s.get(..SLOT_LEN) else { return Ok(None) };
    if xxh3_64(&s[..56]) != le_u64(s, 56) || &s[0..8] != MAGIC || s[9..16].iter().chain(&s[32..56]).any(|&b| b != 0) {
        return Ok(None);
    }
    if s[8] != VERSION {
        return Err(Error::new(
            ErrorCode::UnsupportedVersion,
            format!("write-ahead log version {} is not supported (this build reads {VERSION})", s[8]),
        ));
    }
    let h = WalHeader { generation: le_u64(s, 16), first: le_u64(s, 24) };
    Ok((h.generation != 0 && h.first != 0).then_some(h))
}

/// The log's header from its first bytes (at least up to slot B's end): slot B
/// if valid, else slot A; neither is `ERR_CORRUPT`.
pub fn decode_header(file: &[u8]) -> Result<WalHeader> {
    let slot = |at: usize| file.get(at..at + SLOT_LEN).map_or(Ok(None), decode_header_slot);
    match slot(SLOT_B)? {
        Some(h) => Ok(h),
        None => slot(SLOT_A)?.ok_or_else(|| Error::corrupt("the write-ahead log has no valid header slot")),
    }
}

/// The end hint: generation, seq, end, xxh3_64 of bytes 0..24.
pub fn encode_hint(h: &WalHint) -> [u8; HINT_LEN] {
    let mut b = [0u8; HINT_LEN];
    b[0..8].copy_from_slice(&h.generation.to_le_bytes());
    b[8..16].copy_from_slice(&h.seq.to_le_bytes());
    b[16..24].copy_from_slice(&h.end.to_le_bytes());
    let check = xxh3_64(&b[..24]);
    b[24..].copy_from_slice(&check.to_le_bytes());
    b
}

/// The end hint, or `None` when its checksum fails (then a reader scans).
pub fn decode_hint(b: &[u8]) -> Option<WalHint> {
    let b = b.get(..HINT_LEN)?;
    (xxh3_64(&b[..24]) == le_u64(b, 24)).then(|| WalHint { generation: le_u64(b, 0), seq: le_u64(b, 8), end: le_u64(b, 16) })
}

/// The length of the frame of records whose payloads have these lengths.
pub fn frame_len(payload_lens: impl IntoIterator<Item = usize>) -> usize {
    let body: usize = payload_lens.into_iter().map(|p| RECORD_HEAD + p).sum();
    (FRAME_HEAD + body + FRAME_TRAILER).div_ceil(8) * 8
}

/// One frame (one group commit) of `records`, with this generation and seq.
/// `ERR_INVALID_ARGUMENT` for no records, a payload on a delete or file
/// record, a put shorter than a key file header, or a frame over [`MAX_FRAME`].
pub fn encode_frame(generation: u64, seq: u64, records: &[NewWalRecord<'_>]) -> Result<Vec<u8>> {
    let invalid = |m: &str| Err(Error::new(ErrorCode::InvalidArgument, m.to_string()));
    if records.is_empty() {
        return invalid("a write-ahead log frame needs at least one record");
    }
    for r in records {
        match r.op {
            WalOp::Put if r.payload.len() < HEADER_LEN => return invalid("a put record's payload must be a whole key file"),
            WalOp::Delete | WalOp::File if !r.payload.is_empty() => return invalid("only a put record has a payload"),
            _ => {}
        }
    }
    let len = frame_len(records.iter().map(|r| r.payload.len()));
    if len > MAX_FRAME {
        return invalid("the records exceed one write-ahead log frame (8 MiB)");
    }
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&(len as u32).to_le_bytes());
    f.extend_from_slice(&(records.len() as u32).to_le_bytes());
    f.extend_from_slice(&generation.to_le_bytes());
    f.extend_from_slice(&seq.to_le_bytes());
    let head_check = xxh3_64(&f);
    f.extend_from_slice(&head_check.to_le_bytes());
    for r in records {
        f.push(r.op as u8);
        f.extend_from_slice(&r.key_hash);
        f.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
        f.extend_from_slice(r.payload);
    }
    f.resize(len - FRAME_TRAILER, 0);
    let check = xxh3_64(&f);
    f.extend_from_slice(&check.to_le_bytes());
    Ok(f)
}

/// Whether a frame head that fits is at `at` (its check, length, count and
/// generation); its length if so. The seq is checked by the caller.
fn head_at(b: &[u8], at: usize, generation: u64) -> Option<usize> {
    let head = b.get(at..at.checked_add(FRAME_HEAD)?)?;
    if xxh3_64(&head[..24]) != le_u64(head, 24) || le_u64(head, 8) != generation {
        return None;
    }
    let (len, n) = (le_u32(head, 0) as usize, le_u32(head, 4) as usize);
    let possible =
        (MIN_FRAME..=MAX_FRAME).contains(&len) && len % 8 == 0 && n >= 1 && n <= (len - FRAME_HEAD - FRAME_TRAILER) / RECORD_HEAD;
    possible.then_some(len)
}

/// The frame at `at` if one fits there (docs/FORMAT.md §10.3): `Ok(None)` where
/// none does (the end: a torn tail, zeros, another generation or seq);
/// `ERR_CORRUPT` for a frame whose checks hold but whose records do not parse.
pub fn decode_frame_at(b: &[u8], at: usize, generation: u64, seq: u64) -> Result<Option<WalFrame>> {
    let Some(len) = head_at(b, at, generation) else { return Ok(None) };
    if le_u64(b, at + 16) != seq {
        return Ok(None);
    }
    let Some(frame) = b.get(at..at + len) else { return Ok(None) };
    if xxh3_64(&frame[..len - FRAME_TRAILER]) != le_u64(frame, len - FRAME_TRAILER) {
        return Ok(None);
    }
    let bad = |m: &str| Err(Error::corrupt(format!("write-ahead log frame {seq} at offset {at}: {m}")));
    let n = le_u32(frame, 4) as usize;
    let body_end = len - FRAME_TRAILER;
    let mut p = FRAME_HEAD;
    let mut records = Vec::with_capacity(n);
    for _ in 0..n {
        if body_end - p < RECORD_HEAD {
            return bad("a record runs past the frame");
        }
        let Some(op) = WalOp::of(frame[p]) else { return bad("a record has an unknown op") };
        let key_hash: [u8; 16] = frame[p + 1..p + 17].try_into().unwrap();
        let plen = le_u32(frame, p + 17) as usize;
        let start = p + RECORD_HEAD;
        if plen > body_end - start {
            return bad("a record's payload runs past the frame");
        }
        match op {
            WalOp::Put if plen < HEADER_LEN => return bad("a put record's payload is shorter than a key file"),
            WalOp::Delete | WalOp::File if plen != 0 => return bad("a delete or file record has a payload"),
            _ => {}
        }
        records.push(WalRecord { op, key_hash, payload: at + start..at + start + plen });
        p = start + plen;
    }
    if body_end - p >= 8 || frame[p..body_end].iter().any(|&x| x != 0) {
        return bad("the bytes after its records are not the padding");
    }
    Ok(Some(WalFrame { at, len, seq, records }))
}

/// The frames of the generation `header` names, in the log file `b` (from
/// offset 0), and where the next frame goes. After the last frame that fits,
/// a frame head of this generation with a later seq within [`MAX_FRAME`]
/// bytes means an acknowledged frame follows a damaged one: `ERR_CORRUPT`.
pub fn scan_frames(b: &[u8], header: &WalHeader) -> Result<WalScan> {
    let mut at = FRAMES_AT;
    let mut seq = header.first;
    let mut frames = Vec::new();
    while let Some(frame) = decode_frame_at(b, at, header.generation, seq)? {
        at += frame.len;
        seq += 1;
        frames.push(frame);
    }
    let stop = b.len().min(at.saturating_add(MAX_FRAME));
    check_tail(&b[at.min(stop)..stop], at as u64, header.generation, seq)?;
    Ok(WalScan { frames, end: at, next_seq: seq })
}

/// The damage check after the end of the frames that fit (docs/FORMAT.md §10.3):
/// `tail` holds the log's bytes from file offset `end` (where no frame fits)
/// on, up to [`MAX_FRAME`] of them. A frame head of `generation` with a seq
/// above `next_seq` at a multiple of 8 after `end` means an acknowledged
/// frame follows a damaged one: `ERR_CORRUPT`, naming both offsets.
pub fn check_tail(tail: &[u8], end: u64, generation: u64, next_seq: u64) -> Result<()> {
    let stop = tail.len().min(MAX_FRAME);
    let mut probe = 8;
    while probe + FRAME_HEAD <= stop {
        // The generation first: one comparison rules out almost every offset.
        if le_u64(tail, probe + 8) == generation && head_at(tail, probe, generation).is_some() && le_u64(tail, probe + 16) > next_seq {
            return Err(Error::corrupt(format!(
                "write-ahead log frame {next_seq} at offset {end} is damaged: frame {} at offset {} follows it",
                le_u64(tail, probe + 16),
                end + probe as u64
            )));
        }
        probe += 8;
    }
    Ok(())
}

/// The header and the frames of a whole log file (`decode_header`, then `scan_frames`).
pub fn parse_wal(b: &[u8]) -> Result<(WalHeader, WalScan)> {
    let header = decode_header(b)?;
    let scan = scan_frames(b, &header)?;
    Ok((header, scan))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: WalHeader = WalHeader { generation: 0x0123_4567_89ab_cdef, first: 1 };

    type Rec = (WalOp, [u8; 16], Vec<u8>);

    fn put(hash: u8, len: usize) -> Rec {
        (WalOp::Put, [hash; 16], vec![hash; len])
    }

    fn log_of(frames: &[Vec<Rec>]) -> Vec<u8> {
        let mut b = vec![0u8; FRAMES_AT];
        b[SLOT_A..SLOT_A + SLOT_LEN].copy_from_slice(&encode_header_slot(&H));
        b[SLOT_B..SLOT_B + SLOT_LEN].copy_from_slice(&encode_header_slot(&H));
        for (i, f) in frames.iter().enumerate() {
            let recs: Vec<_> = f.iter().map(|(op, key_hash, p)| NewWalRecord { op: *op, key_hash: *key_hash, payload: p }).collect();
            b.extend(encode_frame(H.generation, H.first + i as u64, &recs).unwrap());
        }
        b
    }

    #[test]
    fn frames_round_trip() {
        let frames = vec![vec![put(1, 48), (WalOp::Delete, [2; 16], vec![])], vec![put(3, 100), (WalOp::File, [4; 16], vec![])]];
        let b = log_of(&frames);
        let (h, scan) = parse_wal(&b).unwrap();
        assert_eq!(h, H);
        assert_eq!(scan.frames.len(), 2);
        assert_eq!(scan.end, b.len());
        assert_eq!(scan.next_seq, 3);
        for (f, want) in scan.frames.iter().zip(&frames) {
            assert_eq!(f.len % 8, 0);
            for (r, (op, hash, p)) in f.records.iter().zip(want) {
                assert_eq!((r.op, r.key_hash, &b[r.payload.clone()]), (*op, *hash, &p[..]));
            }
        }
    }

    #[test]
    fn a_torn_last_frame_is_the_end_at_every_length() {
        let b = log_of(&[vec![put(1, 60)], vec![put(2, 200)]]);
        let first_end = FRAMES_AT + frame_len([60]);
        for cut in first_end..b.len() {
            let mut torn = b[..cut].to_vec();
            torn.resize(b.len() + 64, 0);
            let (_, scan) = parse_wal(&torn).unwrap();
            assert_eq!((scan.frames.len(), scan.end), (1, first_end), "cut at {cut}");
        }
    }

    #[test]
    fn damage_before_a_later_frame_is_corrupt_and_in_the_last_is_a_torn_tail() {
        let b = log_of(&[vec![put(1, 60)], vec![put(2, 60)], vec![put(3, 60)]]);
        for i in FRAMES_AT..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x40;
            let last = FRAMES_AT + 2 * frame_len([60]);
            match parse_wal(&d) {
                Ok((_, scan)) => assert!(i >= last && scan.frames.len() == 2, "byte {i}"),
                Err(e) => assert!(i < last && e.code() == ErrorCode::Corrupt, "byte {i}: {e}"),
            }
        }
    }

    #[test]
    fn header_slots() {
        let mut b = log_of(&[]);
        b[SLOT_B + 3] ^= 1;
        assert_eq!(decode_header(&b).unwrap(), H);
        b[SLOT_A + 3] ^= 1;
        assert_eq!(decode_header(&b).unwrap_err().code(), ErrorCode::Corrupt);
        let mut s = encode_header_slot(&H);
        s[8] = 2;
        let check = xxh3_64(&s[..56]);
        s[56..].copy_from_slice(&check.to_le_bytes());
        assert_eq!(decode_header_slot(&s).unwrap_err().code(), ErrorCode::UnsupportedVersion);
        let hint = WalHint { generation: 7, seq: 9, end: 4160 };
        assert_eq!(decode_hint(&encode_hint(&hint)), Some(hint));
        let mut bad = encode_hint(&hint);
        bad[0] ^= 1;
        assert_eq!(decode_hint(&bad), None);
    }

    #[test]
    fn encode_refuses_what_no_reader_accepts() {
        let ok = [0u8; 48];
        for recs in [
            vec![],
            vec![NewWalRecord { op: WalOp::Put, key_hash: [0; 16], payload: &ok[..47] }],
            vec![NewWalRecord { op: WalOp::Delete, key_hash: [0; 16], payload: &ok[..1] }],
        ] {
            assert_eq!(encode_frame(1, 1, &recs).unwrap_err().code(), ErrorCode::InvalidArgument);
        }
        let big = vec![0u8; MAX_FRAME];
        let recs = [NewWalRecord { op: WalOp::Put, key_hash: [0; 16], payload: &big }];
        assert_eq!(encode_frame(1, 1, &recs).unwrap_err().code(), ErrorCode::InvalidArgument);
    }
}
