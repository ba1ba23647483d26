//! The 48-byte header (FORMAT.md §4): `Header::decode` of any bytes and any
//! file length. A decoded header re-encodes to the same 48 bytes and
//! describes exactly the file length it was given; a log's header (§4.6)
//! describes at most that length (its records follow) and an empty value.
//!
//! Input: mode (1 byte) | file length (u64 LE) | header bytes (rest).
//! Mode bit 0 re-seals the header checksum first, so that mutations reach the
//! checks after it (version, flags, codec ids, total length).
#![no_main]

use konserve_core::format::file::{Header, FLAGS_COMMITTED_LOG, FLAG_LOG, HEADER_LEN, LOG_COMMIT_AREA};
use libfuzzer_sys::fuzz_target;
use xxhash_rust::xxh3::xxh3_64;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((len, bytes)) = rest.split_first_chunk::<8>() else { return };
    let file_len = u64::from_le_bytes(*len);
    let mut bytes = bytes.to_vec();
    if mode & 1 != 0 && bytes.len() >= HEADER_LEN {
        let sum = xxh3_64(&bytes[..40]);
        bytes[40..48].copy_from_slice(&sum.to_le_bytes());
    }
    if let Ok(h) = Header::decode(&bytes, file_len) {
        assert_eq!(h.encode()[..], bytes[..HEADER_LEN]);
        if h.flags == FLAG_LOG || h.flags == FLAGS_COMMITTED_LOG {
            // A log's value segment is empty, or its commit area (FORMAT.md §4.6).
            assert_eq!(h.value_len, if h.flags == FLAG_LOG { 0 } else { LOG_COMMIT_AREA });
            assert!(h.file_len().is_some_and(|n| n <= file_len));
        } else {
            assert_eq!(h.file_len(), Some(file_len));
        }
    }
});
