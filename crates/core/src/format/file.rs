//! The key file layout of FORMAT.md §4: a 48-byte header, the meta segment
//! (the key's CKE and the metadata), the value segment.
//!
//! Every decoder here is total: any input gives `Ok` or an `Err`, never a panic.
//! Errors carry no file path; the store adds it.

use std::borrow::Cow;

use xxhash_rust::xxh3::xxh3_64;

pub use crate::codec::{Codec, SegmentContext, SegmentKind};
use crate::codec::{OsRandom, Randomness};
use crate::error::{Error, ErrorCode, Result};

/// The magic number at the start of every key file.
pub const MAGIC: [u8; 4] = *b"KNSV";
/// The format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// The length of the header.
pub const HEADER_LEN: usize = 48;
/// Header flag: the value segment is a chunked blob (FORMAT.md §4.5).
pub const FLAG_CHUNKED: u32 = 1;
/// Header flag: the file is an append log, records after the meta segment (FORMAT.md §4.6).
pub const FLAG_LOG: u32 = 2;
/// Header flag, only with [`FLAG_LOG`]: the log's value segment is its commit
/// area of [`LOG_COMMIT_AREA`] bytes, which says how many records were
/// acknowledged (FORMAT.md §4.6). A log without it (flags 2) is of the
/// earlier layout.
pub const FLAG_LOG_COMMIT: u32 = 4;
/// The flags of a log with a commit area: `FLAG_LOG | FLAG_LOG_COMMIT`.
pub const FLAGS_COMMITTED_LOG: u32 = FLAG_LOG | FLAG_LOG_COMMIT;
/// The length of a log's commit area (two 64-byte commit slots), its `v`.
pub const LOG_COMMIT_AREA: u64 = 128;

/// The decoded header of a key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// 0, [`FLAG_CHUNKED`], [`FLAG_LOG`] or [`FLAGS_COMMITTED_LOG`].
    pub flags: u32,
    /// Serializer id of the value segment (FORMAT.md §4.1).
    pub serializer: u8,
    /// How both segments are compressed and encrypted.
    pub codec: Codec,
    /// Length of the meta segment as stored.
    pub meta_len: u32,
    /// Length of the value segment as stored.
    pub value_len: u64,
    /// XXH3-64 of the meta segment as stored.
    pub meta_checksum: u64,
    /// XXH3-64 of the value segment as stored.
    pub value_checksum: u64,
}

impl Header {
    /// The 48 header bytes (version 1, header checksum filled in).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = VERSION;
        h[5] = self.serializer;
        h[6] = self.codec.compressor;
        h[7] = self.codec.encryptor;
        h[8..12].copy_from_slice(&self.flags.to_le_bytes());
        h[12..16].copy_from_slice(&self.meta_len.to_le_bytes());
        h[16..24].copy_from_slice(&self.value_len.to_le_bytes());
        h[24..32].copy_from_slice(&self.meta_checksum.to_le_bytes());
        h[32..40].copy_from_slice(&self.value_checksum.to_le_bytes());
        let sum = xxh3_64(&h[..40]);
        h[40..48].copy_from_slice(&sum.to_le_bytes());
        h
    }

    /// Decodes the header from the first bytes of a file whose total length is
    /// `file_len`, with the checks of FORMAT.md §4 in their order: the length is
    /// at least 48, the magic, the header checksum, the version, the flags, the
    /// codec ids, the total length.
    pub fn decode(bytes: &[u8], file_len: u64) -> Result<Header> {
        if file_len < HEADER_LEN as u64 || bytes.len() < HEADER_LEN {
            return Err(Error::corrupt(format!("file is {file_len} bytes, shorter than a header")));
        }
        let h = &bytes[..HEADER_LEN];
        if h[0..4] != MAGIC {
            return Err(Error::corrupt("not a konserve key file (bad magic)"));
        }
        if xxh3_64(&h[..40]) != le_u64(&h[40..48]) {
            return Err(Error::corrupt("header checksum mismatch"));
        }
        if h[4] != VERSION {
            return Err(Error::new(
                ErrorCode::UnsupportedVersion,
                format!("file format version {} is not supported (this build reads {VERSION})", h[4]),
            ));
        }
        let flags = le_u32(&h[8..12]);
        if !matches!(flags, 0 | FLAG_CHUNKED | FLAG_LOG | FLAGS_COMMITTED_LOG) {
            return Err(Error::new(ErrorCode::UnsupportedCodec, format!("unknown header flags 0x{flags:08x}")));
        }
        let codec = Codec { compressor: h[6], encryptor: h[7] };
        codec.check()?;
        let header = Header {
            flags,
            serializer: h[5],
            codec,
            meta_len: le_u32(&h[12..16]),
            value_len: le_u64(&h[16..24]),
            meta_checksum: le_u64(&h[24..32]),
            value_checksum: le_u64(&h[32..40]),
        };
        match header.file_len() {
            // A log's value segment is empty and its records follow to the end of the file.
            // A log with a commit area: `v` is that area, records follow it.
            Some(n) if header.flags == FLAGS_COMMITTED_LOG => {
                if header.value_len == LOG_COMMIT_AREA && n <= file_len {
                    Ok(header)
                } else {
                    Err(Error::corrupt(format!(
                        "a log file of {file_len} bytes whose header says 48 + {} + {} (a log's commit area is {LOG_COMMIT_AREA} bytes)",
                        header.meta_len, header.value_len
                    )))
                }
            }
            Some(n) if header.flags == FLAG_LOG => {
                if header.value_len == 0 && n <= file_len {
                    Ok(header)
                } else {
                    Err(Error::corrupt(format!(
                        "a log file of {file_len} bytes whose header says 48 + {} + {} (a log's value segment is empty)",
                        header.meta_len, header.value_len
                    )))
                }
            }
            Some(n) if n == file_len => Ok(header),
            _ => Err(Error::corrupt(format!("file is {file_len} bytes, its header says 48 + {} + {}", header.meta_len, header.value_len))),
        }
    }

    /// The total length the first bytes of a file say it has (`48 + m + v`),
    /// unchecked: for sizing a small file from one read. `None` if fewer than
    /// 24 bytes are given, or the sum overflows.
    pub fn declared_len(bytes: &[u8]) -> Option<u64> {
        let m = u64::from(le_u32(bytes.get(12..16)?));
        let v = le_u64(bytes.get(16..24)?);
        (HEADER_LEN as u64).checked_add(m)?.checked_add(v)
    }

    /// Whether the file is an append log, of either layout (FORMAT.md §4.6).
    pub fn is_log(&self) -> bool {
        self.flags & FLAG_LOG != 0
    }

    /// The total file length the header describes (`None` if it overflows).
    pub fn file_len(&self) -> Option<u64> {
        (HEADER_LEN as u64).checked_add(u64::from(self.meta_len))?.checked_add(self.value_len)
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// The plain bytes of a meta segment: u32 LE key length, the key's CKE, the metadata.
pub fn compose_meta(key_cke: &[u8], meta: &[u8]) -> Result<Vec<u8>> {
    let k = u32::try_from(key_cke.len()).map_err(|_| Error::invalid_key("a key encoding is longer than 2^32 - 1 bytes"))?;
    let mut plain = Vec::with_capacity(4 + key_cke.len() + meta.len());
    plain.extend_from_slice(&k.to_le_bytes());
    plain.extend_from_slice(key_cke);
    plain.extend_from_slice(meta);
    Ok(plain)
}

/// Splits a meta segment's plain bytes into the key's CKE and the metadata.
/// The CKE is not validated here.
pub fn split_meta(plain: &[u8]) -> Result<(&[u8], &[u8])> {
    let Some((len, rest)) = plain.split_first_chunk::<4>() else {
        return Err(Error::corrupt("meta segment is shorter than its key length field"));
    };
    let k = u32::from_le_bytes(*len) as usize;
    if k > rest.len() {
        return Err(Error::corrupt("meta segment is shorter than the key it announces"));
    }
    Ok(rest.split_at(k))
}

/// The decoded meta segment of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaSegment {
    /// The stored key's CKE (not validated).
    pub key: Vec<u8>,
    /// The metadata bytes (a MessagePack map, not decoded here).
    pub meta: Vec<u8>,
}

/// Checks the meta segment's checksum against `header`, decodes and splits it.
pub fn decode_meta(header: &Header, ctx: &SegmentContext<'_>, stored: &[u8]) -> Result<MetaSegment> {
    let plain = decode_meta_plain(header, ctx, stored)?;
    let (key, meta) = split_meta(&plain)?;
    Ok(MetaSegment { key: key.to_vec(), meta: meta.to_vec() })
}

/// Checks the meta segment's checksum and decodes it, borrowing `stored` when
/// it is stored as is; [`split_meta`] splits the result.
pub fn decode_meta_plain<'a>(header: &Header, ctx: &SegmentContext<'_>, stored: &'a [u8]) -> Result<Cow<'a, [u8]>> {
    if stored.len() as u64 != u64::from(header.meta_len) {
        return Err(Error::corrupt("meta segment length differs from the header"));
    }
    if xxh3_64(stored) != header.meta_checksum {
        return Err(Error::corrupt("meta segment checksum mismatch"));
    }
    header.codec.decode(ctx, SegmentKind::Meta, stored)
}

/// Checks the value segment's checksum against `header` and decodes it.
pub fn decode_value(header: &Header, ctx: &SegmentContext<'_>, stored: &[u8]) -> Result<Vec<u8>> {
    Ok(decode_value_plain(header, ctx, stored)?.into_owned())
}

/// [`decode_value`] borrowing `stored` when the segment is stored as is (the
/// hot read path copies the value once, straight into the caller's memory).
pub fn decode_value_plain<'a>(header: &Header, ctx: &SegmentContext<'_>, stored: &'a [u8]) -> Result<Cow<'a, [u8]>> {
    if stored.len() as u64 != header.value_len {
        return Err(Error::corrupt("value segment length differs from the header"));
    }
    if xxh3_64(stored) != header.value_checksum {
        return Err(Error::corrupt("value segment checksum mismatch"));
    }
    header.codec.decode(ctx, SegmentKind::Value, stored)
}

/// [`decode_value`] for a segment read into its own buffer: when the segment is
/// stored as is, the buffer is returned without a copy (large blobs).
pub fn decode_value_owned(header: &Header, ctx: &SegmentContext<'_>, stored: Vec<u8>) -> Result<Vec<u8>> {
    let plain = match decode_value_plain(header, ctx, &stored)? {
        Cow::Borrowed(_) => None,
        Cow::Owned(plain) => Some(plain),
    };
    Ok(plain.unwrap_or(stored))
}

/// A key file split in the two parts a writer writes: header + meta segment,
/// then the value segment (borrowed when stored as is, so a large value is
/// not copied).
#[derive(Debug)]
pub struct EncodedFile<'a> {
    /// The header followed by the stored meta segment.
    pub head: Vec<u8>,
    /// The stored value segment.
    pub value: Cow<'a, [u8]>,
}

impl EncodedFile<'_> {
    /// The whole file as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + self.value.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.value);
        out
    }
}

/// Encodes a key file with `codec`; salts and IVs come from `rng`. Fails with
/// `ERR_INVALID_ARGUMENT` if the meta segment exceeds the format's 4 GiB, or
/// with the codec's error.
#[allow(clippy::too_many_arguments)]
pub fn encode_parts<'a>(
    codec: Codec,
    secret: Option<&[u8]>,
    key_cke: &[u8],
    serializer: u8,
    meta: &[u8],
    value: &'a [u8],
    rng: &mut dyn Randomness,
) -> Result<EncodedFile<'a>> {
    let ctx = SegmentContext { secret, key_hash: crate::keyhash::key_hash(key_cke), accept_plaintext: false };
    let meta_plain = compose_meta(key_cke, meta)?;
    let meta_stored = codec.encode(&ctx, SegmentKind::Meta, &meta_plain, rng)?;
    let value_stored = codec.encode(&ctx, SegmentKind::Value, value, rng)?;
    let meta_len = u32::try_from(meta_stored.len())
        .map_err(|_| Error::new(ErrorCode::InvalidArgument, "a key and its metadata exceed the format's 4 GiB"))?;
    let header = Header {
        flags: 0,
        serializer,
        codec,
        meta_len,
        value_len: value_stored.len() as u64,
        meta_checksum: xxh3_64(&meta_stored),
        value_checksum: xxh3_64(&value_stored),
    };
    let mut head = Vec::with_capacity(HEADER_LEN + meta_stored.len());
    head.extend_from_slice(&header.encode());
    head.extend_from_slice(&meta_stored);
    Ok(EncodedFile { head, value: value_stored })
}

/// Encodes a whole key file without compression or encryption.
pub fn encode_file(key_cke: &[u8], serializer: u8, meta: &[u8], value: &[u8]) -> Result<Vec<u8>> {
    Ok(encode_parts(Codec::NONE, None, key_cke, serializer, meta, value, &mut OsRandom)?.to_vec())
}

/// A whole parsed key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedFile {
    /// The header.
    pub header: Header,
    /// The stored key's CKE (not validated).
    pub key: Vec<u8>,
    /// The metadata bytes.
    pub meta: Vec<u8>,
    /// The value's plain bytes.
    pub value: Vec<u8>,
}

/// Parses the header and meta segment from the start of a file: `prefix` is at
/// least the first `48 + m` bytes (more is ignored), `file_len` the file's
/// total length. This is all `keys` and `getMeta` read.
pub fn parse_head(prefix: &[u8], file_len: u64, ctx: &SegmentContext<'_>) -> Result<(Header, MetaSegment)> {
    let header = Header::decode(prefix, file_len)?;
    let end = HEADER_LEN + header.meta_len as usize;
    let stored = prefix.get(HEADER_LEN..end).ok_or_else(|| Error::corrupt("file ends inside the meta segment"))?;
    let meta = decode_meta(&header, ctx, stored)?;
    Ok((header, meta))
}
