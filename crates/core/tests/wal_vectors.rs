//! Golden vectors for the write-ahead log's bytes (docs/WAL.md §3):
//! test-vectors/wal.json. The pure-TypeScript codec (ts/format/wal.ts) must
//! produce exactly these bytes from these inputs and read them back
//! (__test__/vectors-wal.spec.ts). The log is not used by the store yet.
//!
//! This test only checks. `npm run vectors:regen` rewrites the file; do that
//! only for a deliberate format change, and review the diff.

mod common;
use common::*;

use konserve_core::format::wal::*;
use serde_json::{json, Value};

/// A deterministic payload of `len` bytes (the codec does not parse payloads).
fn payload(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

type Rec = (WalOp, [u8; 16], Vec<u8>);

fn rec_json(r: &Rec) -> Value {
    json!({ "op": r.0 as u8, "keyHash": hex(&r.1), "payload": hex(&r.2) })
}

/// A log file: both header slots, the end hint, the frames, then `tail` bytes.
fn log_file(header: &WalHeader, frames: &[Vec<u8>], tail: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; FRAMES_AT];
    b[SLOT_A..SLOT_A + SLOT_LEN].copy_from_slice(&encode_header_slot(header));
    b[SLOT_B..SLOT_B + SLOT_LEN].copy_from_slice(&encode_header_slot(header));
    let end = FRAMES_AT + frames.iter().map(Vec::len).sum::<usize>();
    let hint = WalHint { generation: header.generation, seq: header.first + frames.len() as u64 - 1, end: end as u64 };
    b[HINT_AT..HINT_AT + HINT_LEN].copy_from_slice(&encode_hint(&hint));
    for f in frames {
        b.extend_from_slice(f);
    }
    b.extend_from_slice(tail);
    b
}

fn vector(name: &str, header: WalHeader, frames: Vec<Vec<Rec>>, tail: Vec<u8>) -> Value {
    let encoded: Vec<Vec<u8>> = frames
        .iter()
        .enumerate()
        .map(|(i, recs)| {
            let new: Vec<_> = recs.iter().map(|(op, key_hash, p)| NewWalRecord { op: *op, key_hash: *key_hash, payload: p }).collect();
            encode_frame(header.generation, header.first + i as u64, &new).unwrap()
        })
        .collect();
    let file = log_file(&header, &encoded, &tail);
    let outcome = match parse_wal(&file) {
        Ok((h, scan)) => {
            assert_eq!(h, header);
            json!({ "frames": scan.frames.len(), "end": scan.end, "nextSeq": scan.next_seq.to_string() })
        }
        Err(e) => json!({ "error": e.code().as_str() }),
    };
    json!({
        "name": name,
        "generation": header.generation.to_string(),
        "first": header.first.to_string(),
        "slot": hex(&encode_header_slot(&header)),
        "frames": frames.iter().zip(&encoded).map(|(recs, f)| json!({
            "records": recs.iter().map(rec_json).collect::<Vec<_>>(),
            "frame": hex(f),
        })).collect::<Vec<_>>(),
        "tail": hex(&tail),
        "file": hex(&file),
        "read": outcome,
    })
}

fn vectors() -> Value {
    let h = WalHeader { generation: 0x8877_6655_4433_2211, first: 1 };
    let later = WalHeader { generation: 0x0000_0001_ffff_fffe, first: 41 };
    let put = |seed: u8, len: usize| (WalOp::Put, [seed; 16], payload(seed, len));
    let del = |seed: u8| (WalOp::Delete, [seed; 16], Vec::new());
    let file = |seed: u8| (WalOp::File, [seed; 16], Vec::new());
    let two = vec![vec![put(1, 48), del(2)], vec![put(3, 300), file(4), put(5, 51)]];
    // The second frame cut short: a torn tail (zeros after it, as in a preallocated file).
    let mut torn_tail = {
        let recs: Vec<_> = [put(9, 200)].iter().map(|(op, k, p)| (*op, *k, p.clone())).collect();
        let new: Vec<_> = recs.iter().map(|(op, key_hash, p)| NewWalRecord { op: *op, key_hash: *key_hash, payload: p }).collect();
        encode_frame(h.generation, 3, &new).unwrap()
    };
    torn_tail.truncate(100);
    torn_tail.resize(256, 0);
    let mut v = vec![
        vector("one put", h, vec![vec![put(7, 48)]], vec![]),
        vector("two frames, every op", h, two.clone(), vec![]),
        vector("a later generation", later, vec![vec![put(8, 64), put(9, 65), put(10, 66)]], vec![0; 64]),
        vector("a torn tail", h, two.clone(), torn_tail),
        vector("an empty log", h, vec![], vec![0; 128]),
    ];
    // Damage before an acknowledged frame: one byte of the first frame flipped.
    let mut damaged = v[1].clone();
    let mut bytes = unhex(damaged["file"].as_str().unwrap());
    bytes[FRAMES_AT + 40] ^= 0x01;
    damaged["name"] = json!("a damaged first frame");
    damaged["file"] = json!(hex(&bytes));
    damaged["read"] = match parse_wal(&bytes) {
        Ok(_) => panic!("damage before an acknowledged frame must not read"),
        Err(e) => json!({ "error": e.code().as_str() }),
    };
    v.push(damaged);
    Value::Array(v)
}

#[test]
fn wal_files() {
    let v = vectors();
    for x in v.as_array().unwrap() {
        let read = &x["read"];
        match x["name"].as_str().unwrap() {
            "a damaged first frame" => assert_eq!(read["error"], "ERR_CORRUPT"),
            "a torn tail" => assert_eq!(read["frames"], 2),
            "an empty log" => assert_eq!((read["frames"].as_u64(), read["end"].as_u64()), (Some(0), Some(FRAMES_AT as u64))),
            _ => assert!(read["frames"].as_u64().unwrap() >= 1),
        }
    }
    check_or_write("wal.json", v);
}
