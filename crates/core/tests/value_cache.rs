//! The value cache (Linux): a repeated read of an unchanged key opens no
//! file, and no change to a key's file, however made, is missed.
#![cfg(target_os = "linux")]

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use konserve_core::format::key::{encode, Key};
use konserve_core::*;

fn key(s: &str) -> Vec<u8> {
    encode(&Key::str(s))
}

fn open(dir: &Path) -> FileStore {
    FileStore::open(dir, Options { sync_blob: false, ..Options::default() }).unwrap()
}

/// A second store on the same directory that never caches: another writer.
fn writer(dir: &Path) -> FileStore {
    FileStore::open(dir, Options { sync_blob: false, value_cache_bytes: 0, ..Options::default() }).unwrap()
}

fn put1(store: &FileStore, k: &[u8], value: &[u8]) {
    store.put(&[Write { key: k, serializer: 1, meta: b"\x80", value }]).unwrap();
}

/// The value `read_value_into` finds, or `None` if the key is missing.
fn read(store: &FileStore, k: &[u8]) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 16 * 1024 + 2];
    match store.read_value_into(k, &mut buf).unwrap() {
        ValueInto::Found { start, len, log: false, .. } => Some(buf[start..start + len].to_vec()),
        ValueInto::Missing => None,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_repeated_read_of_an_unchanged_key_reads_the_file_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let k = key("a");
    put1(&store, &k, b"value");
    for _ in 0..1000 {
        assert_eq!(read(&store, &k).as_deref(), Some(&b"value"[..]));
    }
    let s = store.value_cache_stats();
    assert!(s.enabled);
    assert_eq!((s.misses, s.hits, s.entries), (1, 999, 1), "{s:?}");
    // The async form's read (only from cached pages) answers from memory too.
    let mut buf = vec![0u8; 4096];
    assert!(matches!(store.read_value_into_now(&k, &mut buf).unwrap(), Some(ValueInto::Found { len: 5, .. })));
    assert_eq!(store.value_cache_stats().hits, 1000);
}

#[test]
fn writes_and_deletes_of_this_process_are_seen_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let k = key("k");
    for i in 0..2000u32 {
        if i % 5 == 4 {
            store.delete(&[&k]).unwrap();
            assert_eq!(read(&store, &k), None, "round {i}");
            assert_eq!(read(&store, &k), None, "round {i}");
            continue;
        }
        put1(&store, &k, &i.to_le_bytes());
        assert_eq!(read(&store, &k), Some(i.to_le_bytes().to_vec()), "round {i}");
        assert_eq!(read(&store, &k), Some(i.to_le_bytes().to_vec()), "round {i}");
    }
    assert!(store.value_cache_stats().hits >= 1000, "{:?}", store.value_cache_stats());
}

#[test]
fn another_writer_is_seen_at_once_by_rename_delete_or_in_place_write() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let other = writer(tmp.path());
    let (k, k2) = (key("k"), key("k2"));
    for i in 0..2000u32 {
        put1(&other, &k, &i.to_le_bytes());
        assert_eq!(read(&store, &k), Some(i.to_le_bytes().to_vec()), "round {i}");
        assert_eq!(read(&store, &k), Some(i.to_le_bytes().to_vec()), "round {i}");
        if i % 100 == 0 {
            other.delete(&[&k]).unwrap();
            assert_eq!(read(&store, &k), None);
        }
    }
    // A file changed in place (a tool, not konserve): truncated and rewritten
    // with another key file's bytes... of the same key.
    put1(&other, &k2, b"elsewhere");
    let file = store.file_path(&k);
    put1(&other, &k, b"old");
    let old_bytes = fs::read(&file).unwrap();
    put1(&other, &k, b"new!");
    let new_bytes = fs::read(&file).unwrap();
    fs::write(&file, &old_bytes).unwrap();
    assert_eq!(read(&store, &k).as_deref(), Some(&b"old"[..]));
    assert_eq!(read(&store, &k).as_deref(), Some(&b"old"[..]));
    fs::write(&file, &new_bytes).unwrap();
    assert_eq!(read(&store, &k).as_deref(), Some(&b"new!"[..]));
    // Cut short in place: the damage is reported, never the cached value.
    fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(10).unwrap();
    let mut buf = vec![0u8; 4096];
    assert!(!matches!(store.read_value_into(&k, &mut buf), Ok(ValueInto::Found { .. })));
    assert!(store.value_cache_stats().enabled);
}

/// A miss reads nothing from the event queue (a key not held is a miss
/// whatever is queued): events of writes made meanwhile wait there, and the
/// next hit applies them first, whichever keys the misses in between read,
/// and whatever those misses inserted.
#[test]
fn a_change_queued_while_only_misses_ran_is_seen_by_the_next_hit() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let other = writer(tmp.path());
    let keys: Vec<Vec<u8>> = (0..50).map(|i| key(&format!("k{i}"))).collect();
    put1(&other, &keys[0], b"first");
    assert_eq!(read(&store, &keys[0]).as_deref(), Some(&b"first"[..]));
    assert_eq!(read(&store, &keys[0]).as_deref(), Some(&b"first"[..]));
    for round in 0..200u32 {
        // Queued: a replace of the held key, and writes of keys read below.
        put1(&other, &keys[0], &round.to_le_bytes());
        for k in &keys[1..] {
            put1(&other, k, &round.to_le_bytes());
        }
        // Misses (each key's first read since its write), inserting what they read ...
        for k in &keys[1..] {
            assert_eq!(read(&store, k), Some(round.to_le_bytes().to_vec()), "round {round}");
        }
        // ... and then the held key: never the value the queued write replaced.
        assert_eq!(read(&store, &keys[0]), Some(round.to_le_bytes().to_vec()), "round {round}");
        assert_eq!(read(&store, &keys[0]), Some(round.to_le_bytes().to_vec()), "round {round}");
        // A miss's insert of a key whose older write was still queued is dropped, not served stale.
        put1(&other, &keys[1], b"newer");
        assert_eq!(read(&store, &keys[1]).as_deref(), Some(&b"newer"[..]), "round {round}");
    }
    let s = store.value_cache_stats();
    assert!(s.enabled && s.hits >= 200, "{s:?}");
}

#[test]
fn the_store_deleted_and_recreated_is_read_from_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = open(&dir);
    let k = key("k");
    put1(&store, &k, b"before");
    assert_eq!(read(&store, &k).as_deref(), Some(&b"before"[..]));
    assert_eq!(read(&store, &k).as_deref(), Some(&b"before"[..]));
    // Someone holds the directory open: its own deletion event waits for the
    // last reference, but the parent's entry event does not.
    let held = fs::File::open(&dir).unwrap();
    delete_store(&dir).unwrap();
    assert_eq!(read(&store, &k), None);
    put1(&writer(&dir), &k, b"after");
    assert_eq!(read(&store, &k).as_deref(), Some(&b"after"[..]));
    assert!(!store.value_cache_stats().enabled, "the store's directory is gone: the plain path");
    put1(&writer(&dir), &k, b"again");
    assert_eq!(read(&store, &k).as_deref(), Some(&b"again"[..]));
    drop(held);
}

#[test]
fn a_replaced_directory_or_ancestor_is_read_through_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let k = key("k");
    // The store directory moved away and another put in its place.
    let dir = tmp.path().join("store");
    let store = open(&dir);
    put1(&store, &k, b"first");
    assert_eq!(read(&store, &k).as_deref(), Some(&b"first"[..]));
    fs::rename(&dir, tmp.path().join("store.old")).unwrap();
    put1(&writer(&dir), &k, b"second");
    assert_eq!(read(&store, &k).as_deref(), Some(&b"second"[..]));
    assert!(!store.value_cache_stats().enabled);

    // An ancestor moved away and the path made again.
    let deep = tmp.path().join("a").join("b").join("store");
    let store = open(&deep);
    put1(&store, &k, b"first");
    assert_eq!(read(&store, &k).as_deref(), Some(&b"first"[..]));
    fs::rename(tmp.path().join("a"), tmp.path().join("a.old")).unwrap();
    put1(&writer(&deep), &k, b"second");
    assert_eq!(read(&store, &k).as_deref(), Some(&b"second"[..]));
    assert!(!store.value_cache_stats().enabled);
}

#[test]
fn readers_racing_a_writer_never_go_back_and_see_the_last_write() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open(tmp.path()));
    let k = key("n");
    put1(&store, &k, &0u32.to_le_bytes());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, k, done) = (Arc::clone(&store), k.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut last = 0;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let n = u32::from_le_bytes(read(&store, &k).unwrap().try_into().unwrap());
                    assert!(n >= last, "went back from {last} to {n}");
                    last = n;
                    if finished {
                        return n;
                    }
                }
            })
        })
        .collect();
    let other = writer(tmp.path());
    for i in 1..=1000u32 {
        put1(if i % 2 == 0 { &other } else { &store }, &k, &i.to_le_bytes());
        assert_eq!(read(&store, &k), Some(i.to_le_bytes().to_vec()));
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert_eq!(r.join().unwrap(), 1000);
    }
}

#[test]
fn the_cache_stays_within_its_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let budget = 64 * 1024;
    let store = FileStore::open(tmp.path(), Options { sync_blob: false, value_cache_bytes: budget, ..Options::default() }).unwrap();
    let value = vec![7u8; 1000];
    let keys: Vec<Vec<u8>> = (0..300).map(|i| key(&format!("k{i}"))).collect();
    for k in &keys {
        put1(&store, k, &value);
    }
    for round in 0..3 {
        for k in &keys {
            assert_eq!(read(&store, k).as_deref(), Some(&value[..]), "round {round}");
        }
        let s = store.value_cache_stats();
        assert!(s.bytes <= budget && s.entries > 10 && s.entries < 300, "{s:?}");
    }
    // A hot key read again and again stays.
    let before = store.value_cache_stats().hits;
    for _ in 0..100 {
        read(&store, &keys[0]);
    }
    assert!(store.value_cache_stats().hits >= before + 99);
}

#[test]
fn no_cache_when_switched_off_logs_and_large_values_never_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let store = writer(tmp.path());
    let k = key("k");
    put1(&store, &k, b"v");
    for _ in 0..10 {
        assert_eq!(read(&store, &k).as_deref(), Some(&b"v"[..]));
    }
    assert_eq!(store.value_cache_stats(), ValueCacheStats::default());

    let store = open(tmp.path());
    let log = key("log");
    let rec = |b: &'static [u8]| konserve_core::format::log::NewRecord { serializer: 1, stamp: 0, payload: b };
    store.log_append(&log, &[rec(b"one")], b"\x80").unwrap();
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        assert!(!matches!(store.read_value_into(&log, &mut buf).unwrap(), ValueInto::Found { log: false, .. } | ValueInto::Missing));
    }
    let big = key("big");
    put1(&store, &big, &vec![1u8; 20_000]);
    assert_eq!(store.read_value_into(&big, &mut buf).unwrap(), ValueInto::TooLarge);
    assert_eq!(store.value_cache_stats().entries, 0);
}
