//! A log written by the core's protocol (crates/core/src/wal.rs), for the
//! pure engine to read and to write byte for byte (test-vectors/wal-log.json,
//! checked by __test__/pure-wal.spec.ts): an empty log as `Wal::open`
//! created it (its generation drawn once, when the vector was first made),
//! a fixed sequence of appends (every op, a two-record frame, two growths of
//! the file), the whole log file after them, and what `get` says of each key.
//!
//! The log file after the appends depends only on the empty log and the
//! appends, so this test computes it from the committed empty log and
//! compares. `npm run vectors:regen` rewrites the file; review the diff.

mod common;
mod support;

use std::path::Path;
use std::sync::Arc;

use common::*;
use konserve_core::format::file::encode_file;
use konserve_core::format::wal::{NewWalRecord, WalOp, WAL_FILE_NAME};
use konserve_core::vfs::Vfs;
use konserve_core::wal::{record_hash, Wal, WalLookup, WalOptions};
use serde_json::{json, Value};
use support::crash::setup;
use support::key;

const NAME: &str = "wal-log.json";

/// The appends, one frame each: (op, key, value of a put).
fn sequence() -> Vec<Vec<(WalOp, &'static str, Vec<u8>)>> {
    let put = |k: &'static str, v: &[u8]| (WalOp::Put, k, v.to_vec());
    vec![
        vec![put("a", b"a1")],
        vec![put("b", b"b1")],
        vec![put("a", b"a2"), put("c", b"c1")],
        vec![(WalOp::Delete, "b", vec![])],
        vec![(WalOp::File, "d", vec![])],
        vec![put("e", &(0..20_000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>())],
        vec![put("c", b"c2")],
    ]
}

fn payload(k: &str, v: &[u8]) -> Vec<u8> {
    encode_file(&key(k), 0, b"\x80", v).unwrap()
}

fn options() -> WalOptions {
    WalOptions { grow_step: 16_384, grow_margin: 4096, ..WalOptions::default() }
}

fn computed() -> Value {
    let (fs, dir) = setup(41, "/store");
    let path = dir.join(WAL_FILE_NAME);
    // The committed empty log, else a new one (its generation is random).
    let committed = std::fs::read_to_string(vector_path(NAME)).ok().map(|t| serde_json::from_str::<Value>(&t).unwrap());
    if let Some(c) = &committed {
        let empty = unhex(c[0]["empty"].as_str().unwrap());
        let mut f = fs.create_new(&path).unwrap();
        f.write_all(&empty).unwrap();
        f.sync().unwrap();
        fs.sync_dir(&dir).unwrap();
    }
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let w = Wal::open(Arc::clone(&vfs), Path::new("/store"), options()).unwrap();
    let empty = fs.read(&path).unwrap();
    let mut appends = Vec::new();
    for frame in sequence() {
        let payloads: Vec<Vec<u8>> = frame.iter().map(|(op, k, v)| if *op == WalOp::Put { payload(k, v) } else { Vec::new() }).collect();
        let records: Vec<NewWalRecord<'_>> = frame
            .iter()
            .zip(&payloads)
            .map(|((op, k, _), p)| NewWalRecord { op: *op, key_hash: record_hash(&key(k)), payload: p })
            .collect();
        w.append(&records).unwrap();
        appends.push(Value::Array(
            records.iter().map(|r| json!({ "op": r.op as u8, "keyHash": hex(&r.key_hash), "payload": hex(r.payload) })).collect(),
        ));
    }
    let log = fs.read(&path).unwrap();
    assert_eq!(log.len(), 49_152, "two growths past the first 16 KiB");
    let lookups: Vec<Value> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|k| {
            let (kind, p) = match w.get(&record_hash(&key(k))).unwrap() {
                WalLookup::Put(p) => ("put", hex(&p)),
                WalLookup::Deleted => ("deleted", String::new()),
                WalLookup::File => ("file", String::new()),
                WalLookup::Absent => ("absent", String::new()),
            };
            json!({ "keyHash": hex(&record_hash(&key(k))), "kind": kind, "payload": p })
        })
        .collect();
    let s = w.stats();
    assert_eq!((s.frames, s.records), (7, 8));
    json!([{
        "name": "a core-written log: puts, a two-record frame, a delete, a file record, growth",
        "growStep": 16_384,
        "growMargin": 4096,
        "empty": hex(&empty),
        "appends": appends,
        "log": hex(&log),
        "lookups": lookups,
    }])
}

#[test]
fn a_log_written_by_the_core() {
    check_or_write(NAME, computed());
}
