//! Whole key files (FORMAT.md §4): `format::parse_file` without a secret and
//! with one. Only typed errors, and allocations in proportion to the file
//! (LZ4 expands at most 255-fold, see `lz4_decompress`). A file that parses
//! has a header that re-encodes to its first 48 bytes, agrees with
//! `parse_head`, and, when neither compressed nor encrypted nor chunked,
//! re-encodes to exactly the file. A log file is `ERR_NOT_A_LOG` here (the
//! `log_parse` target reads logs).
//!
//! Input: mode (1 byte) | k (1 byte) | a key's CKE (k bytes; its XXH3-128 is
//! the key hash the MAC is bound to) | the file (rest). The secret is the
//! golden vectors' `s3cr3t`. Mode bit 0 rewrites the value length and all
//! three checksums to fit the file first, so that mutations reach the
//! segment decoders (AES, LZ4, the meta split) instead of a checksum error.
#![no_main]

use fuzz_util::allocated_by;
use konserve_core::codec::{Codec, SegmentContext};
use konserve_core::format::{self, file::HEADER_LEN};
use konserve_core::keyhash::key_hash;
use konserve_core::ErrorCode;
use libfuzzer_sys::fuzz_target;
use xxhash_rust::xxh3::xxh3_64;

fn reseal(file: &mut [u8]) {
    if file.len() < HEADER_LEN {
        return;
    }
    let m = u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
    let Some(v) = (file.len() - HEADER_LEN).checked_sub(m) else { return };
    file[16..24].copy_from_slice(&(v as u64).to_le_bytes());
    let meta_sum = xxh3_64(&file[HEADER_LEN..HEADER_LEN + m]);
    let value_sum = xxh3_64(&file[HEADER_LEN + m..]);
    file[24..32].copy_from_slice(&meta_sum.to_le_bytes());
    file[32..40].copy_from_slice(&value_sum.to_le_bytes());
    let header_sum = xxh3_64(&file[..40]);
    file[40..48].copy_from_slice(&header_sum.to_le_bytes());
}

fn check(file: &[u8], ctx: &SegmentContext<'_>) -> Option<format::file::ParsedFile> {
    let (result, bytes) = allocated_by(|| format::parse_file(file, ctx));
    assert!(bytes <= 1024 * file.len() + 65536, "parsing {} bytes allocated {bytes}", file.len());
    match result {
        Ok(p) => {
            assert_eq!(p.header.encode()[..], file[..HEADER_LEN]);
            let (h, m) = format::file::parse_head(file, file.len() as u64, ctx).expect("parse_head agrees with parse_file");
            assert_eq!((h, &m.key, &m.meta), (p.header, &p.key, &p.meta));
            // (A chunked blob parses to its joined bytes, which re-encode unchunked.)
            if p.header.codec == Codec::NONE && p.header.flags == 0 {
                let again = format::file::encode_file(&p.key, p.header.serializer, &p.meta, &p.value).unwrap();
                assert_eq!(again, file, "a plain file re-encodes to itself");
            }
            Some(p)
        }
        Err(e) => {
            assert!(
                matches!(
                    e.code(),
                    ErrorCode::Corrupt
                        | ErrorCode::UnsupportedVersion
                        | ErrorCode::UnsupportedCodec
                        | ErrorCode::Decrypt
                        | ErrorCode::NotALog
                ),
                "unexpected error code {}: {e}",
                e.code()
            );
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, k, rest @ ..] = data else { return };
    let Some((cke, file)) = rest.split_at_checked(usize::from(*k)) else { return };
    let mut file = file.to_vec();
    if mode & 1 != 0 {
        reseal(&mut file);
    }
    let hash = key_hash(cke);
    let plain = check(&file, &SegmentContext { secret: None, key_hash: hash, accept_plaintext: false });
    let secret = check(&file, &SegmentContext { secret: Some(b"s3cr3t"), key_hash: hash, accept_plaintext: false });
    let migrating = check(&file, &SegmentContext { secret: Some(b"s3cr3t"), key_hash: hash, accept_plaintext: true });
    if plain.is_some() {
        // It needed no secret, so it was not encrypted: an encrypted store
        // refuses it (FORMAT.md §4.3), and reads it as it is only when migrating.
        assert!(secret.is_none(), "an encrypted store read a plaintext file");
        assert_eq!(plain, migrating);
    }
});
