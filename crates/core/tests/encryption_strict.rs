//! An encrypted store refuses files that are not encrypted (issue #23.1):
//! anyone who can write the directory could otherwise plant a value, a
//! blob or a log the store would return as if it were authenticated. With
//! `accept_plaintext` (an explicit migration) it reads them.

use std::sync::Arc;

use konserve_core::format::key::{encode, Key};
use konserve_core::format::log::NewRecord;
use konserve_core::{ErrorCode, FileStore, Options, Write};

const META: &[u8] = b"\x81\xa4type\xa6binary";

fn key(s: &str) -> Vec<u8> {
    encode(&Key::str(s))
}

fn encrypted(accept_plaintext: bool) -> Options {
    Options { encryption_key: Some(b"s3cr3t".to_vec()), accept_plaintext, ..Options::default() }
}

/// Plaintext key files written by a plain store elsewhere, then copied into
/// `dir` (a plain store cannot open an encrypted store's directory: it has a
/// key check, FORMAT.md §4.7; whoever can write the directory can copy files).
fn plant(dir: &std::path::Path) {
    let elsewhere = tempfile::tempdir().unwrap();
    write_plain(elsewhere.path());
    for e in std::fs::read_dir(elsewhere.path()).unwrap() {
        let name = e.unwrap().file_name();
        if name.to_str().unwrap().ends_with(".ksv") {
            std::fs::copy(elsewhere.path().join(&name), dir.join(&name)).unwrap();
        }
    }
}

fn write_plain(dir: &std::path::Path) {
    let plain = Arc::new(FileStore::open(dir, Options::default()).unwrap());
    plain.put(&[Write { key: &key("value"), serializer: 0, meta: META, value: b"planted" }]).unwrap();
    let mut w = plain.blob_writer(&key("blob"), META).unwrap();
    w.write(&vec![7u8; 3 << 20]).unwrap();
    w.commit().unwrap();
    plain.log_append(&key("log"), &[NewRecord { serializer: 0, stamp: 1, payload: b"planted record" }], META).unwrap();
}

#[test]
fn an_encrypted_store_refuses_plaintext_files_unless_migrating() {
    let tmp = tempfile::tempdir().unwrap();
    let strict = Arc::new(FileStore::open(tmp.path(), encrypted(false)).unwrap());
    plant(tmp.path());
    for name in ["value", "blob", "log"] {
        let k = key(name);
        let e = strict.get(&k).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Decrypt, "get {name}: {e}");
        assert!(e.file().is_some(), "the error names the file: {e}");
        assert_eq!(strict.get_meta(&k).unwrap_err().code(), ErrorCode::Decrypt, "getMeta {name}");
    }
    assert_eq!(strict.open_blob(&key("blob")).err().unwrap().code(), ErrorCode::Decrypt);
    assert_eq!(strict.open_log(&key("log")).err().unwrap().code(), ErrorCode::Decrypt);
    let listed = strict.list().unwrap();
    assert!(listed.entries.is_empty(), "no plaintext file is listed as a key");
    assert_eq!(listed.corrupt.len(), 3);
    assert!(listed.corrupt.iter().all(|e| e.code() == ErrorCode::Decrypt));
    // An append to a planted log is refused too, and leaves it as it was.
    let rec = NewRecord { serializer: 0, stamp: 2, payload: b"x" };
    assert_eq!(strict.log_append(&key("log"), &[rec], META).unwrap_err().code(), ErrorCode::Decrypt);

    let migrating = Arc::new(FileStore::open(tmp.path(), encrypted(true)).unwrap());
    assert_eq!(migrating.get(&key("value")).unwrap().unwrap().value, b"planted");
    let blob = migrating.open_blob(&key("blob")).unwrap().unwrap();
    assert_eq!(blob.size(), 3 << 20);
    assert_eq!(blob.read_at((3 << 20) - 4, 4).unwrap(), vec![7u8; 4]);
    let mut log = migrating.open_log(&key("log")).unwrap().unwrap();
    assert_eq!(log.next_batch(10).unwrap().unwrap()[0].bytes, b"planted record");
    assert_eq!(migrating.list().unwrap().entries.len(), 3);
}
