//! The value cache when the kernel's event queue overflows: events were lost,
//! so everything cached is dropped. Its own test binary: an overflow empties
//! every cache of the process, which other tests would notice.
#![cfg(target_os = "linux")]

use std::fs;

use konserve_core::format::key::{encode, Key};
use konserve_core::*;

fn read(store: &FileStore, k: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let ValueInto::Found { start, len, .. } = store.read_value_into(k, &mut buf).unwrap() else { panic!("not found") };
    buf[start..start + len].to_vec()
}

#[test]
fn an_overflow_drops_everything_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path(), Options { sync_blob: false, ..Options::default() }).unwrap();
    let other = FileStore::open(tmp.path(), Options { sync_blob: false, value_cache_bytes: 0, ..Options::default() }).unwrap();
    let k = encode(&Key::str("k"));
    other.put(&[Write { key: &k, serializer: 1, meta: b"\x80", value: b"old" }]).unwrap();
    assert_eq!(read(&store, &k), b"old");
    assert_eq!(read(&store, &k), b"old");
    // Fill the queue (each create is at least one event), so that the write's event is lost.
    let max: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events").unwrap().trim().parse().unwrap();
    for i in 0..=max {
        fs::File::create(tmp.path().join(format!("junk-{i}"))).unwrap();
    }
    other.put(&[Write { key: &k, serializer: 1, meta: b"\x80", value: b"new" }]).unwrap();
    assert_eq!(read(&store, &k), b"new");
    let s = store.value_cache_stats();
    assert!(s.overflows >= 1 && s.enabled, "{s:?}");
    assert_eq!(read(&store, &k), b"new");
    assert!(store.value_cache_stats().hits >= 2);
}
