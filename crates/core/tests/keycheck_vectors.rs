//! Golden vectors for the key check (`.konserve.keycheck`) and the pending
//! rekey file (`.konserve.rekey`), FORMAT.md §4.7, with the salts fixed.
//! The TypeScript codec checks the same file (__test__/keycheck.spec.ts).
//!
//! `npm run vectors:regen` rewrites test-vectors/keycheck.json; do that only
//! for a deliberate format change, and review the diff.

use konserve_core::format::keycheck::{KeyCheck, PendingRekey};
use serde_json::{json, Value};

mod common;
use common::*;

fn salt(b: u8) -> [u8; 32] {
    std::array::from_fn(|i| b.wrapping_add((i as u8).wrapping_mul(0x11)))
}

#[test]
fn keycheck_vectors() {
    let mut out = Vec::new();
    // Salts with bytes >= 0x80 (the sign bug of DESIGN.md §4.9), keys as text and as bytes.
    for (name, key, s) in [
        ("text key", b"s3cr3t".to_vec(), salt(0x80)),
        ("binary key", (0u8..=255).collect::<Vec<u8>>(), salt(0x07)),
        ("one-byte key", vec![0xff], [0u8; 32]),
    ] {
        let c = KeyCheck::with_salt(&key, s);
        assert!(c.matches(&key));
        assert!(!c.matches(b"another key"));
        let bytes = c.encode();
        assert_eq!(KeyCheck::decode(&bytes).unwrap(), c);
        out.push(json!({ "name": name, "kind": "keycheck", "key": hex(&key), "salt": hex(&s), "bytes": hex(&bytes) }));
    }
    let a = KeyCheck::with_salt(b"old key", salt(0x90));
    let b = KeyCheck::with_salt(b"new key", salt(0xa0));
    for (name, p, from, to) in [
        ("rekey between two keys", PendingRekey { from: Some(a), to: Some(b) }, Some("old key"), Some("new key")),
        ("rekey from plaintext", PendingRekey { from: None, to: Some(b) }, None, Some("new key")),
        ("rekey to plaintext", PendingRekey { from: Some(a), to: None }, Some("old key"), None),
    ] {
        let bytes = p.encode();
        assert_eq!(PendingRekey::decode(&bytes).unwrap(), p);
        out.push(json!({
            "name": name,
            "kind": "rekey",
            "from": from.map(|k| json!({ "key": hex(k.as_bytes()), "salt": hex(&a.salt) })).unwrap_or(Value::Null),
            "to": to.map(|k| json!({ "key": hex(k.as_bytes()), "salt": hex(&b.salt) })).unwrap_or(Value::Null),
            "bytes": hex(&bytes),
        }));
    }
    check_or_write("keycheck.json", Value::Array(out));
}
