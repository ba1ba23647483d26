//! The cached-only read behind an async `get` (`read_value_into_now`) makes
//! no more system calls than the blocking read: a file read whole, as its
//! header declares it, is not stat'ed a second time (bench/async-floor.mjs:
//! one statx per cold async get, a few percent of it).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use konserve_core::format::key::{encode, Key};
use konserve_core::vfs::{FileStat, Identity, RealFs, Vfs, VfsFile};
use konserve_core::{FileStore, Options, ValueInto, Write};

/// The real file system, with the `size` calls on files of `open_read_cached` counted.
#[derive(Clone, Default)]
struct Counted {
    sizes: Arc<AtomicU64>,
}

struct CountedFile {
    inner: Box<dyn VfsFile>,
    sizes: Arc<AtomicU64>,
}

impl VfsFile for CountedFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn read_upto_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_upto_at(buf, offset)
    }
    fn read_cached_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_cached_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        self.sizes.fetch_add(1, Ordering::SeqCst);
        self.inner.size()
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
}

impl Vfs for Counted {
    fn open_read_cached(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let inner = RealFs.open_read_cached(path)?;
        Ok(Box::new(CountedFile { inner, sizes: Arc::clone(&self.sizes) }))
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        RealFs.create_new(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        RealFs.open_read(path)
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        RealFs.open_write(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        RealFs.exists(path)
    }
    fn is_symlink(&self, path: &Path) -> io::Result<bool> {
        RealFs.is_symlink(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        RealFs.read_dir(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        RealFs.create_dir_all(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        RealFs.sync_dir(path)
    }
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        RealFs.canonicalize(path)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.hard_link(from, to)
    }
    fn stat(&self, path: &Path) -> io::Result<FileStat> {
        RealFs.stat(path)
    }
    fn identity(&self) -> Identity {
        RealFs.identity()
    }
    fn process_start(&self, pid: u32) -> io::Result<Option<u64>> {
        RealFs.process_start(pid)
    }
    fn process_alive(&self, pid: u32) -> bool {
        RealFs.process_alive(pid)
    }
}

fn key(s: &str) -> Vec<u8> {
    encode(&Key::str(s))
}

#[cfg(target_os = "linux")]
#[test]
fn a_cached_read_of_a_whole_file_stats_it_no_second_time() {
    let tmp = tempfile::tempdir().unwrap();
    let vfs = Counted::default();
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
    let vfs = Counted::default();
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
