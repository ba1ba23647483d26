//! A key file's bytes (FORMAT.md §4): round trip, every truncation, the
//! order of the header checks, every flipped byte.

use konserve_core::codec::SegmentContext;
use konserve_core::format::{self, file::*};
use konserve_core::{ErrorCode, Result};
use xxhash_rust::xxh3::xxh3_64;

const PLAIN: SegmentContext<'static> = SegmentContext { secret: None, key_hash: 0, accept_plaintext: false };

fn parse_file(bytes: &[u8]) -> Result<ParsedFile> {
    format::parse_file(bytes, &PLAIN)
}

fn sample() -> Vec<u8> {
    encode_file(b"\x05\x00\x00\x00\x01a", 1, b"\x80", b"\x2a").unwrap()
}

#[test]
fn round_trip() {
    let file = sample();
    assert_eq!(file.len(), 48 + 4 + 6 + 1 + 1);
    let p = parse_file(&file).unwrap();
    assert_eq!(p.key, b"\x05\x00\x00\x00\x01a");
    assert_eq!(p.meta, b"\x80");
    assert_eq!(p.value, b"\x2a");
    assert_eq!(p.header.serializer, 1);
    let (h, m) = parse_head(&file[..48 + 11], file.len() as u64, &PLAIN).unwrap();
    assert_eq!(h, p.header);
    assert_eq!(m.key, p.key);
}

#[test]
fn every_truncation_is_corrupt() {
    let file = sample();
    for n in 0..file.len() {
        assert_eq!(parse_file(&file[..n]).unwrap_err().code(), ErrorCode::Corrupt, "length {n}");
    }
    let mut longer = file.clone();
    longer.push(0);
    assert_eq!(parse_file(&longer).unwrap_err().code(), ErrorCode::Corrupt);
}

/// Re-seals a header after changing it, so the later checks are reached.
fn reseal(file: &mut [u8]) {
    let sum = xxh3_64(&file[..40]);
    file[40..48].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn check_order() {
    let mut f = sample();
    f[4] = 2;
    assert_eq!(parse_file(&f).unwrap_err().code(), ErrorCode::Corrupt, "checksum comes before version");
    reseal(&mut f);
    assert_eq!(parse_file(&f).unwrap_err().code(), ErrorCode::UnsupportedVersion);

    for flag in [3, 4, 0x8000_0000u32] {
        let mut f = sample();
        f[8..12].copy_from_slice(&flag.to_le_bytes());
        reseal(&mut f);
        assert_eq!(parse_file(&f).unwrap_err().code(), ErrorCode::UnsupportedCodec, "flags {flag:#x}");
    }

    for i in [6, 7] {
        let mut f = sample();
        f[i] = 9;
        reseal(&mut f);
        assert_eq!(parse_file(&f).unwrap_err().code(), ErrorCode::UnsupportedCodec);
    }

    // Lengths that overflow or disagree with the file are corrupt.
    let mut f = sample();
    f[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    reseal(&mut f);
    assert_eq!(parse_file(&f).unwrap_err().code(), ErrorCode::Corrupt);

    // A meta segment whose key length points past its end.
    let mut f = sample();
    f[48] = 200;
    let sum = xxh3_64(&f[48..59]);
    f[24..32].copy_from_slice(&sum.to_le_bytes());
    reseal(&mut f);
    assert_eq!(parse_file(&f).unwrap_err().code(), ErrorCode::Corrupt);
}

#[test]
fn every_flipped_byte_is_detected() {
    let file = sample();
    for i in 0..file.len() {
        let mut f = file.clone();
        f[i] ^= 0x01;
        assert_eq!(parse_file(&f).unwrap_err().code(), ErrorCode::Corrupt, "byte {i}");
    }
}
