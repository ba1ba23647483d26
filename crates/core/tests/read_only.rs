//! A store opened read-only (`Options::read_only`): it reads everything, and
//! creates, sweeps and writes nothing; every write and lock is `ERR_READ_ONLY`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use konserve_core::format::key::{encode, Key};
use konserve_core::format::keycheck::KEY_CHECK_FILE_NAME;
use konserve_core::format::log::NewRecord;
use konserve_core::*;

fn key(s: &str) -> Vec<u8> {
    encode(&Key::str(s))
}

/// Every file of `dir` with its size and modification time.
fn listing(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (e.file_name().into_string().unwrap(), (m.len(), m.modified().unwrap()))
        })
        .collect()
}

fn read_only(key: Option<&str>) -> Options {
    Options { read_only: true, encryption_key: key.map(|k| k.as_bytes().to_vec()), ..Options::default() }
}

#[test]
fn a_read_only_store_reads_and_refuses_every_write_leaving_the_directory_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let w = FileStore::open(tmp.path(), Options::default()).unwrap();
        w.put(&[Write { key: &key("a"), serializer: 1, meta: b"\x80", value: b"value" }]).unwrap();
        w.log_append(&key("log"), &[NewRecord { serializer: 1, stamp: 7, payload: b"r0" }], b"\x80").unwrap();
    }
    // A staging file of a dead writer: a writable open would sweep it.
    let hex = &keyhash::file_name(&key("a"))[..32];
    let dead = staging::staging_name(hex, (1 << 31) - 1, 0);
    fs::write(tmp.path().join(&dead), b"x").unwrap();
    let before = listing(tmp.path());

    let store = Arc::new(FileStore::open(tmp.path(), read_only(None)).unwrap());
    assert_eq!(store.get(&key("a")).unwrap().unwrap().value, b"value");
    assert!(store.exists(&key("a")).unwrap());
    assert!(store.get_meta(&key("a")).unwrap().is_some());
    assert_eq!(store.list().unwrap().entries.len(), 2);
    let mut cursor = store.open_log(&key("log")).unwrap().unwrap();
    assert_eq!(cursor.next_batch(10).unwrap().unwrap()[0].bytes, b"r0");

    let refused = |r: Result<()>| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), ErrorCode::ReadOnly, "{e}");
        assert!(e.to_string().contains(&tmp.path().canonicalize().unwrap().display().to_string()), "{e}");
    };
    refused(store.put(&[Write { key: &key("a"), serializer: 1, meta: b"\x80", value: b"new" }]));
    refused(store.put(&[Write { key: &key("b"), serializer: 1, meta: b"\x80", value: b"new" }]));
    refused(store.delete(&[&key("a")]).map(drop));
    refused(store.lock(&[&key("a")]));
    refused(store.try_lock(&[&key("a")]).map(drop));
    refused(store.blob_writer(&key("blob"), b"\x80").map(drop));
    refused(store.log_append(&key("log"), &[NewRecord { serializer: 1, stamp: 8, payload: b"r1" }], b"\x80").map(drop));
    refused(store.log_trim(&key("log"), 1, b"\x80").map(drop));
    drop(store);
    assert_eq!(listing(tmp.path()), before);
}

#[test]
fn a_read_only_open_creates_no_directory_and_writes_no_key_check() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    assert!(FileStore::open(&missing, read_only(None)).is_err());
    assert!(!missing.exists());
    // A keyed store without a key check: a writable open adopts the key
    // (writes the check), a read-only one checks it and writes nothing.
    let keyed = Options { encryption_key: Some(b"k1".to_vec()), ..Options::default() };
    let w = FileStore::open(tmp.path(), keyed).unwrap();
    w.put(&[Write { key: &key("a"), serializer: 1, meta: b"\x80", value: b"secret" }]).unwrap();
    drop(w);
    fs::remove_file(tmp.path().join(KEY_CHECK_FILE_NAME)).unwrap();
    let before = listing(tmp.path());
    let r = FileStore::open(tmp.path(), read_only(Some("k1"))).unwrap();
    assert_eq!(r.get(&key("a")).unwrap().unwrap().value, b"secret");
    assert_eq!(FileStore::open(tmp.path(), read_only(Some("wrong"))).unwrap_err().code(), ErrorCode::Decrypt);
    assert_eq!(listing(tmp.path()), before);
}
