//! The golden vectors of append logs (test-vectors/logs.json, FORMAT.md
//! §4.6), computed: `tests/log_vectors.rs` checks them against the committed
//! file, `examples/regen_log_vectors.rs` (run by `scripts/regen-log-vectors.sh`)
//! rewrites the file from them.
//!
//! Schema: a JSON array of objects
//! ```text
//! {
//!   "name":          string,
//!   "layout":        "committed" (flags 6, a commit area) | "legacy" (flags 2, the earlier layout),
//!   "key":           hex, the key's CKE,
//!   "meta":          hex, the metadata bytes the log was created with,
//!   "compressor":    0 | 1,
//!   "encryptionKey": null | string (its UTF-8 bytes are the key; encryptor 1 when set),
//!   "random":        hex, the salts and IVs, consumed in order (only with an
//!                    encryption key): the meta segment's salt (16) and IV (16),
//!                    then each record's salt and IV, in index order,
//!   "records":       [ { "index": number, "stamp": number (ms since the epoch),
//!                        "serializer": number, "bytes": hex, the plain payload } ],
//!   "file":          hex, the whole log file: "committed", the log created
//!                    with record 0 and then each other record appended by
//!                    itself (so its commit has seq = the number of records);
//!                    "legacy", the header (flags 2, v = 0), the meta segment
//!                    and the records,
//!   "commit":        for "committed": { "seq", "count", "end" } of both slots,
//!   "trim":          absent, or { "keepFrom": number, "meta": hex, "random": hex }
//! }
//! ```
//! With "trim", "file" is the log after a trim of the committed file
//! described by the other fields: the header and a new meta segment
//! ("trim.meta", its salt and IV from "trim.random"), the commit area (seq 1),
//! then the kept records (index >= keepFrom) copied byte for byte.

use konserve_core::codec::{Codec, FixedRandom, SegmentContext};
use konserve_core::format::key::{self as cke, Key};
use konserve_core::format::log::{encode_legacy_log_head, encode_log_file, encode_record, Commit, LogRecord, NewRecord};
use konserve_core::keyhash::key_hash;
use konserve_core::log::{append_log_file, parse_log, trim_log_file};
use serde_json::{json, Value};

use super::hex;

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

fn new_record(r: &LogRecord) -> NewRecord<'_> {
    NewRecord { serializer: r.serializer, stamp: r.stamp, payload: &r.bytes }
}

struct Built {
    cke: Vec<u8>,
    codec: Codec,
    secret: Option<&'static str>,
    random: Vec<u8>,
    file: Vec<u8>,
}

/// The log as the store makes it: created with record 0, the others appended one by one.
fn build(compressor: u8, secret: Option<&'static str>, key: &Key, meta: &[u8], recs: &[LogRecord], legacy: bool) -> Built {
    let cke = cke::encode(key);
    let codec = Codec { compressor, encryptor: u8::from(secret.is_some()) };
    let random = fixed_random(32 * (1 + recs.len()), 0x80);
    let mut rng = FixedRandom::new(random.clone());
    let s = secret.map(str::as_bytes);
    let ctx = SegmentContext { secret: s, key_hash: key_hash(&cke), accept_plaintext: false };
    let file = if legacy {
        let mut file = encode_legacy_log_head(codec, s, &cke, meta, &mut rng).unwrap();
        for r in recs {
            file.extend_from_slice(&encode_record(codec, &ctx, r.index, r.stamp, r.serializer, &r.bytes, &mut rng).unwrap());
        }
        file
    } else {
        let mut file = encode_log_file(codec, s, &cke, meta, &[new_record(&recs[0])], &mut rng).unwrap();
        for r in &recs[1..] {
            file = append_log_file(&file, &ctx, &[new_record(r)], &mut rng).unwrap();
        }
        file
    };
    Built { cke, codec, secret, random, file }
}

fn record_json(recs: &[LogRecord]) -> Value {
    Value::Array(
        recs.iter().map(|r| json!({ "index": r.index, "stamp": r.stamp, "serializer": r.serializer, "bytes": hex(&r.bytes) })).collect(),
    )
}

/// Checks that `file` parses back to `meta` and `recs` with the layout's
/// flags, that a shorter copy does not read as a shorter log (the current
/// layout) or reads as a prefix (the earlier one), and (encrypted) that a
/// wrong key does not decrypt it. Returns the commit.
fn check_reads(b: &Built, file: &[u8], meta: &[u8], recs: &[LogRecord], name: &str, legacy: bool) -> Option<Commit> {
    let ctx = SegmentContext { secret: b.secret.map(str::as_bytes), key_hash: key_hash(&b.cke), accept_plaintext: false };
    let parsed = parse_log(file, &ctx).unwrap();
    assert_eq!((&parsed.key, parsed.meta.as_slice(), parsed.records.as_slice()), (&b.cke, meta, recs), "{name}");
    let (flags, v) = if legacy { (2, 0) } else { (6, 128) };
    assert_eq!((parsed.header.codec, parsed.header.flags, parsed.header.value_len), (b.codec, flags, v), "{name}");
    let torn = parse_log(&file[..file.len() - 1], &ctx);
    if legacy {
        assert_eq!(torn.unwrap().records, recs[..recs.len() - 1], "{name}: a torn last record is left out");
    } else {
        assert_eq!(torn.unwrap_err().code().as_str(), "ERR_CORRUPT", "{name}: an acknowledged record cut short");
    }
    if b.secret.is_some() {
        let wrong = SegmentContext { secret: Some(b"wrong"), key_hash: key_hash(&b.cke), accept_plaintext: false };
        assert_eq!(parse_log(file, &wrong).unwrap_err().code().as_str(), "ERR_DECRYPT", "{name}");
    }
    parsed.commit
}

fn commit_json(c: Commit) -> Value {
    json!({ "seq": c.seq, "count": c.count, "end": c.end })
}

/// Every log vector, computed and checked.
pub fn log_vectors() -> Value {
    let mut out = Vec::new();
    let recs = records();
    let meta = log_meta(None);
    for legacy in [false, true] {
        for (compressor, secret, label) in
            [(0, None, "plain"), (1, None, "lz4"), (0, Some("golden key"), "aes"), (1, Some("golden key"), "lz4+aes")]
        {
            let name = if legacy { format!("{label}: three records, earlier layout") } else { format!("{label}: three records") };
            let key = Key::Array(vec![Key::str("events"), Key::Int(7)]);
            let b = build(compressor, secret, &key, &meta, &recs, legacy);
            let commit = check_reads(&b, &b.file, &meta, &recs, &name, legacy);
            let mut v = json!({
                "name": name,
                "layout": if legacy { "legacy" } else { "committed" },
                "key": hex(&b.cke),
                "meta": hex(&meta),
                "compressor": compressor,
                "encryptionKey": secret,
                "random": hex(&b.random),
                "records": record_json(&recs),
                "file": hex(&b.file),
            });
            if let Some(c) = commit {
                assert_eq!((c.seq, c.count, c.end), (3, 3, b.file.len() as u64), "{name}");
                v["commit"] = commit_json(c);
            }
            out.push(v);
        }
    }

    // A trim keeping indexes >= 1, with a new meta segment.
    let name = "lz4+aes: trimmed to index 1".to_string();
    let b = build(1, Some("golden key"), &Key::str("trimmed log"), &meta, &recs, false);
    let trim_meta = log_meta(Some(1));
    let trim_random = fixed_random(32, 0x05);
    let ctx = SegmentContext { secret: b.secret.map(str::as_bytes), key_hash: key_hash(&b.cke), accept_plaintext: false };
    let trimmed = trim_log_file(&b.file, &ctx, 1, &trim_meta, &mut FixedRandom::new(trim_random.clone())).unwrap();
    let commit = check_reads(&b, &trimmed, &trim_meta, &recs[1..], &name, false).unwrap();
    assert_eq!((commit.seq, commit.count), (1, 2));
    out.push(json!({
        "name": name,
        "layout": "committed",
        "key": hex(&b.cke),
        "meta": hex(&meta),
        "compressor": 1,
        "encryptionKey": b.secret,
        "random": hex(&b.random),
        "records": record_json(&recs),
        "trim": { "keepFrom": 1, "meta": hex(&trim_meta), "random": hex(&trim_random) },
        "commit": commit_json(commit),
        "file": hex(&trimmed),
    }));
    Value::Array(out)
}
