//! The key check of an encrypted store (FORMAT.md §4.7, issue #22.4): a store
//! knows its key, so opening it with another key, or without one, fails at
//! once with ERR_DECRYPT instead of writing over values it cannot read.

use std::path::Path;

use konserve_core::format::key::{encode, Key};
use konserve_core::format::keycheck::{KeyCheck, PendingRekey, KEY_CHECK_FILE_NAME, REKEY_FILE_NAME};
use konserve_core::{ErrorCode, FileStore, Options, Write};

const META: &[u8] = b"\x81\xa4type\xa6binary";

fn key(s: &str) -> Vec<u8> {
    encode(&Key::str(s))
}

fn keyed(k: &str, accept_plaintext: bool) -> Options {
    Options { encryption_key: Some(k.as_bytes().to_vec()), accept_plaintext, ..Options::default() }
}

fn put(store: &FileStore, k: &str) {
    store.put(&[Write { key: &key(k), serializer: 0, meta: META, value: k.as_bytes() }]).unwrap();
}

fn open_err(dir: &Path, options: Options) -> konserve_core::Error {
    FileStore::open(dir, options).expect_err("the open must fail")
}

#[test]
fn an_encrypted_store_refuses_another_key_and_no_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path(), keyed("A", false)).unwrap();
    put(&store, "x");
    let check = std::fs::read(tmp.path().join(KEY_CHECK_FILE_NAME)).unwrap();
    let check = KeyCheck::decode(&check).unwrap();
    assert!(check.matches(b"A") && !check.matches(b"B"));

    let e = open_err(tmp.path(), keyed("B", false));
    assert_eq!(e.code(), ErrorCode::Decrypt, "{e}");
    assert!(e.message().contains("wrong encryption key"), "{e}");
    assert!(e.file().unwrap().ends_with(KEY_CHECK_FILE_NAME));
    let e = open_err(tmp.path(), Options::default());
    assert_eq!(e.code(), ErrorCode::Decrypt, "{e}");
    assert!(e.message().contains("encrypted"), "{e}");
    // Nothing was written over.
    assert_eq!(FileStore::open(tmp.path(), keyed("A", false)).unwrap().get(&key("x")).unwrap().unwrap().value, b"x");
}

#[test]
fn a_damaged_key_check_is_corrupt_not_a_wrong_key() {
    let tmp = tempfile::tempdir().unwrap();
    drop(FileStore::open(tmp.path(), keyed("A", false)).unwrap());
    let path = tmp.path().join(KEY_CHECK_FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(open_err(tmp.path(), keyed("A", false)).code(), ErrorCode::Corrupt);
}

#[test]
fn a_plaintext_store_is_refused_with_a_key_unless_migrating() {
    let tmp = tempfile::tempdir().unwrap();
    put(&FileStore::open(tmp.path(), Options::default()).unwrap(), "plain");
    let e = open_err(tmp.path(), keyed("A", false));
    assert_eq!(e.code(), ErrorCode::Decrypt, "{e}");
    assert!(e.message().contains("acceptPlaintext"), "{e}");
    assert!(!tmp.path().join(KEY_CHECK_FILE_NAME).exists(), "a refused open writes no key check");
    // Migrating: the key check is written, the plaintext file is read.
    let store = FileStore::open(tmp.path(), keyed("A", true)).unwrap();
    assert_eq!(store.get(&key("plain")).unwrap().unwrap().value, b"plain");
    assert!(tmp.path().join(KEY_CHECK_FILE_NAME).exists());
    assert_eq!(open_err(tmp.path(), keyed("B", true)).code(), ErrorCode::Decrypt);
}

#[test]
fn an_encrypted_store_without_a_key_check_adopts_its_key() {
    // As a build before key checks left it: encrypted files, no key check.
    let tmp = tempfile::tempdir().unwrap();
    put(&FileStore::open(tmp.path(), keyed("A", false)).unwrap(), "x");
    std::fs::remove_file(tmp.path().join(KEY_CHECK_FILE_NAME)).unwrap();
    let e = open_err(tmp.path(), keyed("B", false));
    assert_eq!(e.code(), ErrorCode::Decrypt, "{e}");
    assert!(e.file().unwrap().to_str().unwrap().ends_with(".ksv"), "names the file: {e}");
    assert!(!tmp.path().join(KEY_CHECK_FILE_NAME).exists());
    drop(FileStore::open(tmp.path(), keyed("A", false)).unwrap());
    assert!(KeyCheck::decode(&std::fs::read(tmp.path().join(KEY_CHECK_FILE_NAME)).unwrap()).unwrap().matches(b"A"));
}

#[test]
fn an_unfinished_rekey_refuses_every_open() {
    let tmp = tempfile::tempdir().unwrap();
    drop(FileStore::open(tmp.path(), keyed("A", false)).unwrap());
    let p = PendingRekey { from: Some(KeyCheck::with_salt(b"A", [1; 32])), to: Some(KeyCheck::with_salt(b"B", [2; 32])) };
    std::fs::write(tmp.path().join(REKEY_FILE_NAME), p.encode()).unwrap();
    for o in [keyed("A", false), keyed("B", false), Options::default()] {
        let e = open_err(tmp.path(), o);
        assert_eq!(e.code(), ErrorCode::Decrypt, "{e}");
        assert!(e.message().contains("rekey"), "{e}");
    }
}

#[test]
fn delete_store_removes_the_key_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    drop(FileStore::open(&dir, keyed("A", false)).unwrap());
    konserve_core::delete_store(&dir).unwrap();
    assert!(!dir.exists());
}
