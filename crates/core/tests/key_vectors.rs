//! The shared golden vectors of test-vectors/keys.json, also checked by the
//! TypeScript tests (__test__/vectors.spec.ts): each key's canonical encoding
//! is strict-valid and re-encodes to itself, and hashes to the recorded file
//! name. Some keys are built here in Rust as well, so that the two encoders are
//! compared, not only the hash.

use konserve_core::file_name;
use konserve_core::format::key::{self as cke, Key};

struct Vector {
    name: String,
    cke: Vec<u8>,
    file: String,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test-vectors/keys.json");
    let text = std::fs::read_to_string(path).expect("test-vectors/keys.json");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let hex = v["cke"].as_str().unwrap();
            let cke = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            Vector { name: v["name"].as_str().unwrap().to_string(), cke, file: v["file"].as_str().unwrap().to_string() }
        })
        .collect()
}

fn s(text: &str) -> Vec<u16> {
    text.encode_utf16().collect()
}

/// Keys built in Rust, by vector name.
fn rust_keys() -> Vec<(&'static str, Key)> {
    vec![
        ("null", Key::Null),
        ("true", Key::Bool(true)),
        ("negative zero is zero", Key::Float(-0.0)),
        ("one", Key::Int(1)),
        ("max safe integer", Key::Int((1 << 53) - 1)),
        ("2^53 is a float", Key::Int(1 << 53)),
        ("one and a half", Key::Float(1.5)),
        ("NaN is canonical", Key::Float(f64::NAN)),
        ("negative infinity", Key::Float(f64::NEG_INFINITY)),
        ("empty string", Key::str("")),
        ("emoji (one 4-byte sequence)", Key::str("\u{1F600}")),
        ("lone high surrogate", Key::Str(vec![0xD800])),
        ("low then high surrogate (not a pair)", Key::Str(vec![0xDC00, 0xD800])),
        ("NUL inside", Key::str("a\0b")),
        ("bytes a (not the string a)", Key::Bytes(vec![0x61])),
        ("array", Key::Array(vec![Key::Int(1), Key::str("a"), Key::Null])),
        ("object keys are sorted", Key::Map(vec![(s("b"), Key::Int(1)), (s("a"), Key::Int(2))])),
        (
            "object keys sort by WTF-8 bytes, not UTF-16",
            Key::Map(vec![(s("\u{1F600}"), Key::Int(1)), (s("\u{FF61}"), Key::Int(2)), (s("a"), Key::Null)]),
        ),
        ("konserve style path key", Key::Array(vec![Key::str("user"), Key::Int(42)])),
    ]
}

#[test]
fn every_vector_is_canonical_and_names_its_file() {
    let vs = vectors();
    assert!(vs.len() >= 30, "only {} vectors", vs.len());
    for v in &vs {
        cke::validate(&v.cke).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(cke::encode(&cke::decode(&v.cke).unwrap()), v.cke, "{}: decode then encode", v.name);
        assert_eq!(file_name(&v.cke), v.file, "{}: file name", v.name);
    }
}

#[test]
fn rust_and_typescript_encoders_agree() {
    let vs = vectors();
    for (name, key) in rust_keys() {
        let v = vs.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("no vector named {name}"));
        assert_eq!(cke::encode(&key), v.cke, "{name}");
    }
}
