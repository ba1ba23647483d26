//! The file format of FORMAT.md, as bytes: no I/O, no file system, no
//! store. Every decoder here is total (any input gives `Ok` or an `Err`,
//! never a panic), and its errors carry no file path; the I/O layer above
//! adds it.
//!
//! - [`key`]: the canonical key encoding (CKE, §2).
//! - [`file`](mod@file): a key file's header and its meta and value segments (§4).
//! - [`blob`]: the chunks, chunk table and trailer of a chunked blob (§4.5).
//! - [`log`]: an append log's records and commit area (§4.6).
//! - [`keycheck`]: the key check and rekey files of an encrypted store (§4.7).
//! - [`meta`]: the revision in a key's metadata map (§4.4), for fused writes.
//! - [`wal`]: the write-ahead log's header, hint and frames (docs/FORMAT.md §10;
//!   not used by the store yet).
//!
//! Segments are compressed and encrypted by [`crate::codec`]; key hashes and
//! file names come from [`crate::keyhash`]. [`parse_file`], the whole-file
//! reader, sits on top of `file` and `blob`, so neither imports the other's
//! reader.

pub mod blob;
pub mod file;
pub mod key;
pub mod keycheck;
pub mod log;
pub mod meta;
pub mod wal;

use crate::codec::SegmentContext;
use crate::error::{Error, ErrorCode, Result};
use file::{decode_value, parse_head, ParsedFile, FLAG_CHUNKED, HEADER_LEN};

/// Parses a whole key file, checking everything FORMAT.md §4 lists.
pub fn parse_file(bytes: &[u8], ctx: &SegmentContext<'_>) -> Result<ParsedFile> {
    let (header, meta) = parse_head(bytes, bytes.len() as u64, ctx)?;
    if header.is_log() {
        return Err(Error::new(ErrorCode::NotALog, "the file is an append log: read it with log::parse_log"));
    }
    // The total length was checked against the header, so this slice is exact.
    let value = if header.flags == FLAG_CHUNKED {
        // A chunked blob (§4.5): every chunk checked, then concatenated.
        blob::decode_chunked_value(&header, ctx, bytes)?
    } else {
        decode_value(&header, ctx, &bytes[HEADER_LEN + header.meta_len as usize..])?
    };
    Ok(ParsedFile { header, key: meta.key, meta: meta.meta, value })
}
