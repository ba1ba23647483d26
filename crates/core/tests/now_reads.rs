//! The cached-only read behind an async `get` (`read_value_into_now`) makes
//! no more system calls than the blocking read: a file read whole, as its
//! header declares it, is not stat'ed a second time (bench/async-floor.mjs:
//! one statx per cold async get, a few percent of it).

mod support;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use konserve_core::format::key::{encode, Key};
use konserve_core::vfs::{RealFs, Vfs, VfsFile};
use konserve_core::{FileStore, Options, ValueInto, Write};
use support::passthrough::{FileHooks, Hooked, HookedFile, VfsHooks};

/// The real file system, with the `size` calls on files of `open_read_cached` counted.
#[derive(Clone, Default)]
struct Counted {
    sizes: Arc<AtomicU64>,
}

impl FileHooks for Counted {
    fn size(&self, file: &dyn VfsFile) -> io::Result<u64> {
        self.sizes.fetch_add(1, Ordering::SeqCst);
        file.size()
    }
}

impl VfsHooks for Counted {
    fn inner(&self) -> &dyn Vfs {
        &RealFs
    }
    fn open_read_cached(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let inner = RealFs.open_read_cached(path)?;
        Ok(Box::new(HookedFile { inner, hooks: self.clone() }))
    }
}

fn key(s: &str) -> Vec<u8> {
    encode(&Key::str(s))
}

#[cfg(target_os = "linux")]
#[test]
fn a_cached_read_of_a_whole_file_stats_it_no_second_time() {
    let tmp = tempfile::tempdir().unwrap();
    let vfs = Hooked(Counted::default());
    // The page-cache path itself: the value cache (which would answer from memory) off.
    let store = FileStore::open_with(Arc::new(vfs.clone()), tmp.path(), Options { value_cache_bytes: 0, ..Options::default() }).unwrap();
    for (k, v) in [("a", &b"value"[..]), ("b", &[7u8; 3000][..])] {
        store.put(&[Write { key: &key(k), serializer: 1, meta: b"\x80", value: v }]).unwrap();
    }
    let mut buf = vec![0u8; 4096];
    for (k, len) in [("a", 5), ("b", 3000)] {
        let found = store.read_value_into_now(&key(k), &mut buf).unwrap();
        let Some(ValueInto::Found { len: got, .. }) = found else { panic!("a cached file must be read at once: {found:?}") };
        assert_eq!(got, len);
    }
    assert_eq!(vfs.sizes.load(Ordering::SeqCst), 0, "no stat beyond the open's");
    // A file longer than its buffer is still found too large, as the blocking read finds it.
    store.put(&[Write { key: &key("big"), serializer: 1, meta: b"\x80", value: &[1u8; 5000] }]).unwrap();
    assert_eq!(store.read_value_into_now(&key("big"), &mut buf).unwrap(), Some(ValueInto::TooLarge));
    assert_eq!(store.read_value_into(&key("big"), &mut buf).unwrap(), ValueInto::TooLarge);
}

/// A file whose bytes go on past the length its header declares (damaged):
/// the cached-only read leaves it to the blocking read as before, never
/// decoding the declared part alone.
#[cfg(target_os = "linux")]
#[test]
fn a_file_longer_than_its_header_declares_is_not_taken_by_the_cached_read() {
    let tmp = tempfile::tempdir().unwrap();
    let vfs = Hooked(Counted::default());
    let store = FileStore::open_with(Arc::new(vfs.clone()), tmp.path(), Options { value_cache_bytes: 0, ..Options::default() }).unwrap();
    store.put(&[Write { key: &key("a"), serializer: 1, meta: b"\x80", value: b"value" }]).unwrap();
    let path = store.file_path(&key("a"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"trailing");
    std::fs::write(&path, &bytes).unwrap();
    let mut buf = vec![0u8; 4096];
    let now = store.read_value_into_now(&key("a"), &mut buf).unwrap();
    let blocking = store.read_value_into(&key("a"), &mut buf).unwrap();
    assert_eq!(now, Some(blocking));
    assert_eq!(blocking, ValueInto::TooLarge);
}
