//! Golden vectors for append logs (FORMAT.md §4.6): test-vectors/logs.json.
//! Every implementation must produce exactly these bytes from these inputs and
//! read them back; the pure-TypeScript implementation checks the same file.
//!
//! `npm run vectors:regen` rewrites it; do
//! that only for a deliberate format change, and review the diff.
//!
//! Schema: a JSON array of objects
//! ```text
//! {
//!   "name":          string,
//!   "key":           hex, the key's CKE,
//!   "meta":          hex, the metadata bytes the log was created with,
//!   "compressor":    0 | 1,
//!   "encryptionKey": null | string (its UTF-8 bytes are the key; encryptor 1 when set),
//!   "random":        hex, the salts and IVs, consumed in order (only with an
//!                    encryption key): the meta segment's salt (16) and IV (16),
//!                    then each record's salt and IV, in index order,
//!   "records":       [ { "index": number, "stamp": number (ms since the epoch),
//!                        "serializer": number, "bytes": hex, the plain payload } ],
//!   "file":          hex, the whole log file after creating it with record 0
//!                    (header, meta segment, record 0) and appending the others,
//!   "trim":          absent, or { "keepFrom": number, "meta": hex, "random": hex }
//! }
//! ```
//! With "trim", "file" is the log after a trim of the file described by the
//! other fields: the header and a new meta segment ("trim.meta", its salt and
//! IV from "trim.random"), then the kept records (index >= keepFrom) copied
//! byte for byte from the untrimmed file.


use konserve_core::cke::{self, Key};
use konserve_core::codec::{Codec, FixedRandom, SegmentContext};
use konserve_core::keyhash::key_hash;
use konserve_core::log::{encode_log_head, encode_new_log, encode_record, parse_log, LogRecord};
use serde_json::{json, Value};

mod common;
use common::*;

/// A MessagePack map `{type: "append-log", lastWrite: <timestamp 32>}`, plus
/// `revision` when given.
fn log_meta(revision: Option<u8>) -> Vec<u8> {
    let mut m = vec![if revision.is_some() { 0x83 } else { 0x82 }];
    m.push(0xa4);
    m.extend_from_slice(b"type");
    m.push(0xaa);
    m.extend_from_slice(b"append-log");
    m.push(0xa9);
    m.extend_from_slice(b"lastWrite");
    m.extend_from_slice(&[0xd6, 0xff, 0x65, 0x53, 0x72, 0x80]);
    if let Some(r) = revision {
        m.push(0xa8);
        m.extend_from_slice(b"revision");
        m.push(r);
    }
    m
}

/// The fixed randomness: bytes 0x80 and above included on purpose.
fn fixed_random(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (i * 37 + seed) as u8).collect()
}

fn records() -> Vec<LogRecord> {
    vec![
        LogRecord { index: 0, stamp: 1_700_000_000_000, serializer: 1, bytes: vec![] },
        LogRecord { index: 1, stamp: 1_700_000_000_001, serializer: 2, bytes: b"0123456789".to_vec() },
        LogRecord { index: 2, stamp: 1_700_000_060_000, serializer: 128, bytes: b"append-only log record ".repeat(14)[..300].to_vec() },
    ]
}

struct Built {
    cke: Vec<u8>,
    codec: Codec,
    secret: Option<&'static str>,
    random: Vec<u8>,
    file: Vec<u8>,
}

/// Creates the log with record 0 and appends the others, as the store does.
fn build(compressor: u8, secret: Option<&'static str>, key: &Key, meta: &[u8], recs: &[LogRecord]) -> Built {
    let cke = cke::encode(key);
    let codec = Codec { compressor, encryptor: u8::from(secret.is_some()) };
    let random = fixed_random(32 * (1 + recs.len()), 0x80);
    let mut rng = FixedRandom::new(random.clone());
    let s = secret.map(str::as_bytes);
    let r0 = &recs[0];
    let mut file = encode_new_log(codec, s, &cke, meta, r0.stamp, r0.serializer, &r0.bytes, &mut rng).unwrap();
    let ctx = SegmentContext { secret: s, key_hash: key_hash(&cke) };
    for r in &recs[1..] {
        file.extend_from_slice(&encode_record(codec, &ctx, r.index, r.stamp, r.serializer, &r.bytes, &mut rng).unwrap());
    }
    Built { cke, codec, secret, random, file }
}

fn record_json(recs: &[LogRecord]) -> Value {
    Value::Array(
        recs.iter()
            .map(|r| json!({ "index": r.index, "stamp": r.stamp, "serializer": r.serializer, "bytes": hex(&r.bytes) }))
            .collect(),
    )
}

/// Checks that `file` parses back to `meta` and `recs`, that a torn copy
/// reads as a prefix, and (encrypted) that a wrong key does not decrypt it.
fn check_reads(b: &Built, file: &[u8], meta: &[u8], recs: &[LogRecord], name: &str) {
    let ctx = SegmentContext { secret: b.secret.map(str::as_bytes), key_hash: key_hash(&b.cke) };
    let parsed = parse_log(file, &ctx).unwrap();
    assert_eq!((&parsed.key, parsed.meta.as_slice(), parsed.records.as_slice()), (&b.cke, meta, recs), "{name}");
    assert_eq!((parsed.header.codec, parsed.header.flags, parsed.header.value_len), (b.codec, 2, 0), "{name}");
    let torn = parse_log(&file[..file.len() - 1], &ctx).unwrap();
    assert_eq!(torn.records, recs[..recs.len() - 1], "{name}: a torn last record is left out");
    if b.secret.is_some() {
        let wrong = SegmentContext { secret: Some(b"wrong"), key_hash: key_hash(&b.cke) };
        assert_eq!(parse_log(file, &wrong).unwrap_err().code().as_str(), "ERR_DECRYPT", "{name}");
    }
}

#[test]
fn log_files() {
    let mut out = Vec::new();
    let recs = records();
    let meta = log_meta(None);
    for (compressor, secret, label) in
        [(0, None, "plain"), (1, None, "lz4"), (0, Some("golden key"), "aes"), (1, Some("golden key"), "lz4+aes")]
    {
        let name = format!("{label}: three records");
        let key = Key::Array(vec![Key::str("events"), Key::Int(7)]);
        let b = build(compressor, secret, &key, &meta, &recs);
        check_reads(&b, &b.file, &meta, &recs, &name);
        out.push(json!({
            "name": name,
            "key": hex(&b.cke),
            "meta": hex(&meta),
            "compressor": compressor,
            "encryptionKey": secret,
            "random": hex(&b.random),
            "records": record_json(&recs),
            "file": hex(&b.file),
        }));
    }

    // A trim keeping indexes >= 1, with a new meta segment.
    let name = "lz4+aes: trimmed to index 1".to_string();
    let b = build(1, Some("golden key"), &Key::str("trimmed log"), &meta, &recs);
    let trim_meta = log_meta(Some(1));
    let trim_random = fixed_random(32, 0x05);
    let mut trimmed =
        encode_log_head(b.codec, b.secret.map(str::as_bytes), &b.cke, &trim_meta, &mut FixedRandom::new(trim_random.clone())).unwrap();
    // Record 0 starts after the old head; it is 33 + s bytes.
    let old_meta_len = u32::from_le_bytes(b.file[12..16].try_into().unwrap()) as usize;
    let rec0_at = 48 + old_meta_len;
    let s0 = u32::from_le_bytes(b.file[rec0_at..rec0_at + 4].try_into().unwrap()) as usize;
    trimmed.extend_from_slice(&b.file[rec0_at + 33 + s0..]);
    check_reads(&b, &trimmed, &trim_meta, &recs[1..], &name);
    out.push(json!({
        "name": name,
        "key": hex(&b.cke),
        "meta": hex(&meta),
        "compressor": 1,
        "encryptionKey": b.secret,
        "random": hex(&b.random),
        "records": record_json(&recs),
        "trim": { "keepFrom": 1, "meta": hex(&trim_meta), "random": hex(&trim_random) },
        "file": hex(&trimmed),
    }));
    check_or_write("logs.json", Value::Array(out));
}
