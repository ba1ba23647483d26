//! Append logs (FORMAT.md §4.6): `log::parse_log` of any bytes, without a
//! secret and with one. Only typed errors, allocations in proportion to the
//! file, and what parses is consistent: indexes consecutive, and every record
//! is checked by the reader before it is returned.
//!
//! Input: mode (1 byte) | k (1 byte) | a key's CKE (k bytes) | the file (rest).
//! Mode bit 0 makes the header and meta checksums fit first, so that mutations
//! reach the record reader instead of a header checksum error.
#![no_main]

use fuzz_util::allocated_by;
use konserve_core::codec::SegmentContext;
use konserve_core::format::file::HEADER_LEN;
use konserve_core::keyhash::key_hash;
use konserve_core::log::parse_log;
use konserve_core::ErrorCode;
use libfuzzer_sys::fuzz_target;
use xxhash_rust::xxh3::xxh3_64;

fn reseal_head(file: &mut [u8]) {
    if file.len() < HEADER_LEN {
        return;
    }
    let m = u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
    if HEADER_LEN + m > file.len() {
        return;
    }
    let meta_sum = xxh3_64(&file[HEADER_LEN..HEADER_LEN + m]);
    file[24..32].copy_from_slice(&meta_sum.to_le_bytes());
    let header_sum = xxh3_64(&file[..40]);
    file[40..48].copy_from_slice(&header_sum.to_le_bytes());
}

fn check(file: &[u8], ctx: &SegmentContext<'_>) {
    let (result, bytes) = allocated_by(|| parse_log(file, ctx));
    assert!(bytes <= 1024 * file.len() + (1 << 20), "parsing {} bytes allocated {bytes}", file.len());
    match result {
        Ok(log) => {
            for pair in log.records.windows(2) {
                assert_eq!(pair[1].index, pair[0].index + 1, "indexes are consecutive");
            }
        }
        Err(e) => assert!(
            matches!(
                e.code(),
                ErrorCode::Corrupt | ErrorCode::UnsupportedVersion | ErrorCode::UnsupportedCodec | ErrorCode::Decrypt | ErrorCode::NotALog
            ),
            "unexpected error code {}: {e}",
            e.code()
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, k, rest @ ..] = data else { return };
    let Some((cke, file)) = rest.split_at_checked(usize::from(*k)) else { return };
    let mut file = file.to_vec();
    if mode & 1 != 0 {
        reseal_head(&mut file);
    }
    let hash = key_hash(cke);
    check(&file, &SegmentContext { secret: None, key_hash: hash, accept_plaintext: false });
    check(&file, &SegmentContext { secret: Some(b"s3cr3t"), key_hash: hash, accept_plaintext: false });
});
