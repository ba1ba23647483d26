//! Golden vectors for whole key files (test-vectors/files.json) and LZ4 frames
//! (test-vectors/lz4.json), for every compressor x encryptor combination, with
//! the salts and IVs fixed. Every implementation must produce exactly these
//! bytes from these inputs and read them back (the TypeScript codec checks the
//! same files).
//!
//! `npm run vectors:regen` rewrites them; do
//! that only for a deliberate format change, and review the diff.

use konserve_core::codec::{lz4, Codec, FixedRandom, SegmentContext};
use konserve_core::format;
use konserve_core::format::key::{self as cke, Key};
use konserve_core::keyhash::key_hash;
use serde_json::{json, Value};

mod common;
use common::*;

/// Inputs of the LZ4 vectors: each exercises a rule of the reference compressor.
fn lz4_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut pseudo = Vec::new();
    let mut x: u32 = 1;
    for _ in 0..3000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        pseudo.push((x >> 16) as u8 % 7 + b'a');
    }
    vec![
        ("empty", vec![]),
        ("one byte", b"a".to_vec()),
        ("12 bytes: too short for a match", b"abcabcabcabc".to_vec()),
        ("13 bytes: shortest with a match", b"abcdabcdabcda".to_vec()),
        ("overlapping match (run of one byte)", vec![b'z'; 300]),
        ("15 literals then a match", b"0123456789abcde0123456789abcde-------------".to_vec()),
        ("long literal run (length bytes of 255)", (0..600u32).map(|i| (i * 7919 % 256) as u8).collect()),
        (
            "match length of exactly 19 (4 + 15)",
            [b"abcdefghij".to_vec(), b"0123456789abcdefghi".to_vec(), b"0123456789abcdefghi".to_vec(), b"tail!".to_vec()].concat(),
        ),
        ("text", b"konserve keeps values on disk that survive crashes, fast. konserve keeps values.".to_vec()),
        ("low-entropy pseudo-random letters", pseudo),
    ]
}

#[test]
fn lz4_frames() {
    let mut out = Vec::new();
    for (name, input) in lz4_inputs() {
        let frame = lz4::compress(&input);
        assert_eq!(lz4::decompress(&frame).unwrap(), input, "{name}");
        out.push(json!({ "name": name, "plain": hex(&input), "frame": hex(&frame) }));
    }
    check_or_write("lz4.json", Value::Array(out));
}

struct FileCase {
    name: &'static str,
    compressor: u8,
    secret: Option<&'static str>,
    key: Key,
    serializer: u8,
    meta: Vec<u8>,
    value: Vec<u8>,
}

fn file_cases() -> Vec<FileCase> {
    let msgpack_meta = unhex("82a474797065a576616c7565a96c6173745772697465d6ff65537280"); // {type:'value', lastWrite: timestamp}
    let mut cases = Vec::new();
    let key = |s: &str| Key::str(s);
    for (compressor, secret, label) in [(0, None, "plain"), (1, None, "lz4"), (0, Some("s3cr3t"), "aes"), (1, Some("s3cr3t"), "lz4+aes")] {
        cases.push(FileCase {
            name: Box::leak(format!("{label}: small value").into_boxed_str()),
            compressor,
            secret,
            key: key("foo"),
            serializer: 1,
            meta: msgpack_meta.clone(),
            value: unhex("a3626172"), // msgpack "bar"
        });
        cases.push(FileCase {
            name: Box::leak(format!("{label}: repetitive value, structured key").into_boxed_str()),
            compressor,
            secret,
            key: Key::Array(vec![key("user"), Key::Int(42)]),
            serializer: 2,
            meta: msgpack_meta.clone(),
            value: br#"{"name":"konserve","tags":["a","a","a","a","a","a","a","a","a","a","a","a"]}"#.to_vec(),
        });
        cases.push(FileCase {
            name: Box::leak(format!("{label}: empty blob").into_boxed_str()),
            compressor,
            secret,
            key: Key::Bytes(vec![0, 0x80, 0xff]),
            serializer: 0,
            meta: msgpack_meta.clone(),
            value: vec![],
        });
    }
    cases
}

/// The fixed randomness of the vectors: meta salt, meta IV, value salt, value IV.
/// Bytes 0x80 and above are included on purpose (konserve's Clojure/JS salt
/// sign bug).
fn fixed_random() -> Vec<u8> {
    (0..64u32).map(|i| (i * 37 + 0x80) as u8).collect()
}

#[test]
fn key_files() {
    let mut out = Vec::new();
    for case in file_cases() {
        let cke = cke::encode(&case.key);
        let codec = Codec { compressor: case.compressor, encryptor: u8::from(case.secret.is_some()) };
        let secret = case.secret.map(str::as_bytes);
        let mut rng = FixedRandom::new(fixed_random());
        let file = format::file::encode_parts(codec, secret, &cke, case.serializer, &case.meta, &case.value, &mut rng).unwrap().to_vec();
        let ctx = SegmentContext { secret, key_hash: key_hash(&cke), accept_plaintext: false };
        let parsed = format::parse_file(&file, &ctx).unwrap();
        assert_eq!(
            (parsed.key, parsed.meta.clone(), parsed.value.clone()),
            (cke.clone(), case.meta.clone(), case.value.clone()),
            "{}",
            case.name
        );
        if case.secret.is_some() {
            let wrong = SegmentContext { secret: Some(b"wrong"), key_hash: key_hash(&cke), accept_plaintext: false };
            assert_eq!(format::parse_file(&file, &wrong).unwrap_err().code().as_str(), "ERR_DECRYPT");
        }
        out.push(json!({
            "name": case.name,
            "compressor": case.compressor,
            "encryptor": u8::from(case.secret.is_some()),
            "secret": case.secret,
            "key": hex(&cke),
            "serializer": case.serializer,
            "meta": hex(&case.meta),
            "value": hex(&case.value),
            "random": if case.secret.is_some() { Value::String(hex(&fixed_random())) } else { Value::Null },
            "file": hex(&file),
        }));
    }
    check_or_write("files.json", Value::Array(out));
}
