//! The meta segment (FORMAT.md §4.4): `split_meta` of any plain bytes splits
//! off a key that `compose_meta` puts back; `decode_meta` of any stored bytes,
//! under any codec ids, gives a segment or a typed error, and agrees with
//! `split_meta` when the codec is none.
//!
//! Input: compressor id (1 byte) | encryptor id (1 byte) | k (1 byte) | a
//! key's CKE (k bytes; its XXH3-128 is the key hash) | segment (rest). The
//! secret is the golden vectors' `s3cr3t`.
#![no_main]

use konserve_core::codec::{Codec, SegmentContext};
use konserve_core::format::{self, file::Header};
use konserve_core::keyhash::key_hash;
use konserve_core::ErrorCode;
use libfuzzer_sys::fuzz_target;
use xxhash_rust::xxh3::xxh3_64;

fuzz_target!(|data: &[u8]| {
    let [compressor, encryptor, k, rest @ ..] = data else { return };
    let Some((cke, segment)) = rest.split_at_checked(usize::from(*k)) else { return };

    let split = format::file::split_meta(segment);
    match &split {
        Ok((key, meta)) => assert!(format::file::compose_meta(key, meta).unwrap() == segment),
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::Corrupt);
            assert!(segment.len() < 4 || u32::from_le_bytes(segment[..4].try_into().unwrap()) as usize > segment.len() - 4);
        }
    }

    let codec = Codec { compressor: *compressor, encryptor: *encryptor };
    let Ok(meta_len) = u32::try_from(segment.len()) else { return };
    let header =
        Header { flags: 0, serializer: 0, codec, meta_len, value_len: 0, meta_checksum: xxh3_64(segment), value_checksum: xxh3_64(b"") };
    // Plaintext segments are read as a migration would (FORMAT.md §4.3): this target
    // checks that split_meta and decode_meta agree, not the strictness rule.
    let ctx = SegmentContext { secret: Some(b"s3cr3t"), key_hash: key_hash(cke), accept_plaintext: true };
    match format::file::decode_meta(&header, &ctx, segment) {
        Ok(m) => {
            if codec == Codec::NONE {
                let (key, meta) = split.expect("split_meta agrees with decode_meta");
                assert!(m.key == key && m.meta == meta);
            }
        }
        Err(e) => {
            assert!(matches!(e.code(), ErrorCode::Corrupt | ErrorCode::UnsupportedCodec | ErrorCode::Decrypt), "{}: {e}", e.code());
            assert!(codec != Codec::NONE || split.is_err());
        }
    }
    // A checksum that differs is always caught.
    let wrong = Header { meta_checksum: header.meta_checksum ^ 1, ..header };
    assert_eq!(format::file::decode_meta(&wrong, &ctx, segment).unwrap_err().code(), ErrorCode::Corrupt);
});
