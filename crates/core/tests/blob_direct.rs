//! Large durable blobs written direct (`O_DIRECT`, `blob.rs`'s `DIRECT_FROM`):
//! the same bytes as the buffered path, on the simulated file system (which
//! checks every direct write's alignment), on the real one, and on tmpfs; a
//! file system that refuses direct I/O gets buffered writes, remembered for
//! the store. (Crashes over the direct path: tests/crash_blob.rs.)

mod support;

use std::path::Path;
use std::sync::Arc;
use support::crash::{self, SimFs};
use support::fixtures::noise;
use support::key;

use konserve_core::blob::DIRECT_FROM;
use konserve_core::format::blob::CHUNK_SIZE;
use konserve_core::vfs::{Vfs, VfsFile, DIRECT_ALIGN};
use konserve_core::{FileStore, Options};
use support::passthrough::{FileHooks, Hooked, HookedFile, VfsHooks};

const META: &[u8] = b"\x81\xa4type\xa6binary";
const MIB: usize = CHUNK_SIZE;

/// Blob sizes around the block size, the direct threshold and the chunk
/// size, and a few MiB with an odd tail.
fn sizes() -> Vec<usize> {
    let from = DIRECT_FROM as usize;
    vec![DIRECT_ALIGN - 1, DIRECT_ALIGN, DIRECT_ALIGN + 1, from - 1, from, from + 1, MIB + DIRECT_ALIGN + 1, 5 * MIB + 4097 + 13]
}

fn write(store: &Arc<FileStore>, k: &[u8], blob: &[u8], piece: usize) {
    let mut w = store.blob_writer(k, META).unwrap();
    for p in blob.chunks(piece) {
        w.write(p).unwrap();
    }
    w.commit().unwrap();
}

fn file_bytes(vfs: &dyn Vfs, store: &FileStore, k: &[u8]) -> Vec<u8> {
    let path = store.dir().join(konserve_core::file_name(k));
    let file = vfs.open_read(&path).unwrap();
    let mut buf = vec![0u8; file.size().unwrap() as usize];
    file.read_exact_at(&mut buf, 0).unwrap();
    buf
}

/// Direct writes from the first large blob on (not only at volume).
fn always_direct() -> Options {
    Options { direct_blobs_volume: 0, ..Options::default() }
}

fn sim_store(fs: &SimFs, dir: &Path, direct_blobs: bool) -> Arc<FileStore> {
    Arc::new(crash::open(fs, dir, &Options { direct_blobs, direct_blobs_volume: 0, ..Options::default() }).unwrap())
}

/// Every size, written in pieces of several lengths (a piece smaller than a
/// block, one that straddles the threshold, one larger than the direct
/// buffer): the blob reads back, its file is byte for byte the buffered
/// path's, and only blobs past the threshold are written direct, every
/// direct write aligned.
#[test]
fn a_blob_written_direct_reads_back_and_its_file_is_the_buffered_one() {
    for (i, size) in sizes().into_iter().enumerate() {
        for piece in [1000, 700 << 10, 3 * MIB] {
            let ctx = format!("{size} bytes in pieces of {piece}");
            let blob = noise(size, i as u64);
            let (direct_fs, dir) = crash::setup(1, "/sim/direct");
            let (buffered_fs, _) = crash::setup(1, "/sim/direct");
            let direct = sim_store(&direct_fs, &dir, true);
            let buffered = sim_store(&buffered_fs, &dir, false);
            write(&direct, &key("b"), &blob, piece);
            write(&buffered, &key("b"), &blob, piece);
            assert!(direct.get(&key("b")).unwrap().unwrap().value == blob, "{ctx}: get");
            let r = direct.open_blob(&key("b")).unwrap().unwrap();
            assert!(r.read_at(0, usize::MAX).unwrap() == blob, "{ctx}: range read");
            assert!(file_bytes(&direct_fs, &direct, &key("b")) == file_bytes(&buffered_fs, &buffered, &key("b")), "{ctx}: file bytes");
            let (writes, misaligned) = direct_fs.direct_writes();
            assert_eq!(misaligned, 0, "{ctx}: a misaligned direct write");
            // (Near the threshold it depends on the header, the meta and
            // the chunk table around the blob's bytes.)
            if size < DIRECT_FROM as usize / 2 {
                assert_eq!(writes, 0, "{ctx}: a small blob is written buffered");
            } else if size > DIRECT_FROM as usize + 2 * DIRECT_ALIGN {
                assert!(writes > 0, "{ctx}: a large blob is written direct");
            }
            assert_eq!(buffered_fs.direct_writes(), (0, 0), "{ctx}: direct_blobs: false writes buffered");
            assert_eq!(crash::staging_files(&direct_fs, &dir).len(), 0, "{ctx}");
        }
    }
}

/// Without `sync_blob` nothing is written direct (the page cache is the point).
#[test]
fn a_store_without_sync_blob_writes_blobs_buffered() {
    let (fs, dir) = crash::setup(1, "/sim/direct-nosync");
    let store = Arc::new(crash::open(&fs, &dir, &Options { sync_blob: false, ..Options::default() }).unwrap());
    let blob = noise(3 * MIB, 1);
    write(&store, &key("b"), &blob, MIB);
    assert!(store.get(&key("b")).unwrap().unwrap().value == blob);
    assert_eq!((fs.direct_opens(), fs.direct_writes()), (0, (0, 0)));
}

/// A file system that refuses `O_DIRECT` when it is turned on (`EINVAL`
/// from fcntl), or at the first direct write: the blob is written buffered,
/// whole, and the store does not try again.
#[test]
fn a_file_system_that_refuses_direct_io_gets_buffered_writes_remembered_for_the_store() {
    for call in ["set_direct", "write_direct"] {
        let (fs, dir) = crash::setup(1, "/sim/direct-refused");
        let (reference_fs, _) = crash::setup(1, "/sim/direct-refused");
        fs.always_fail(call, libc::EINVAL);
        let store = sim_store(&fs, &dir, true);
        let reference = sim_store(&reference_fs, &dir, false);
        let blobs = [noise(3 * MIB + 5, 1), noise(2 * MIB + 7, 2)];
        for (i, blob) in blobs.iter().enumerate() {
            let k = key(&format!("b{i}"));
            write(&store, &k, blob, 700 << 10);
            write(&reference, &k, blob, 700 << 10);
            assert!(store.get(&k).unwrap().unwrap().value == *blob, "{call}: blob {i}");
            assert!(file_bytes(&fs, &store, &k) == file_bytes(&reference_fs, &reference, &k), "{call}: blob {i}'s bytes");
        }
        let tries = if call == "set_direct" { 0 } else { 1 };
        assert_eq!(fs.direct_opens(), tries, "{call}: the second blob does not try again");
        assert_eq!(fs.direct_writes(), (0, 0), "{call}");
        assert_eq!(crash::staging_files(&fs, &dir).len(), 0, "{call}");
        // A store opened again tries again.
        let again = sim_store(&fs, &dir, true);
        write(&again, &key("c"), &blobs[0], MIB);
        assert_eq!(fs.direct_opens(), tries + u64::from(call == "write_direct"), "{call}: a new open tries again");
    }
}

/// The real file system (and tmpfs, which takes `O_DIRECT` on Linux 6.6
/// and later and refuses it before): every size reads back, and its file is
/// the buffered path's byte for byte.
#[test]
fn blobs_written_direct_on_real_file_systems_match_the_buffered_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let shm = Path::new("/dev/shm").is_dir().then(|| tempfile::tempdir_in("/dev/shm").unwrap());
    let roots = std::iter::once(tmp.path()).chain(shm.as_ref().map(|d| d.path()));
    for root in roots {
        let direct = Arc::new(FileStore::open(root.join("direct"), always_direct()).unwrap());
        let buffered = Arc::new(FileStore::open(root.join("buffered"), Options { direct_blobs: false, ..Options::default() }).unwrap());
        for (i, size) in sizes().into_iter().enumerate() {
            let ctx = format!("{}: {size} bytes", root.display());
            let blob = noise(size, 10 + i as u64);
            let k = key(&format!("b{i}"));
            write(&direct, &k, &blob, 700 << 10);
            write(&buffered, &k, &blob, 700 << 10);
            assert!(direct.get(&k).unwrap().unwrap().value == blob, "{ctx}: get");
            let r = direct.open_blob(&k).unwrap().unwrap();
            assert!(r.read_at(size as u64 / 3, size).unwrap() == blob[size / 3..], "{ctx}: range read");
            let real = konserve_core::vfs::RealFs;
            assert!(file_bytes(&real, &direct, &k) == file_bytes(&real, &buffered, &k), "{ctx}: file bytes");
        }
    }
}

/// The real file system, except that the second handle a direct blob write
/// takes for its writer thread ([`VfsFile::try_clone`]) refuses every write
/// with `EINVAL`: a refusal that comes back from that thread.
#[derive(Clone, Default)]
struct RefusingClone;

/// A file handle whose every write fails with `EINVAL`.
struct Refusing;

impl VfsFile for Refusing {
    fn write_all(&mut self, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EINVAL))
    }
    fn write_all_at(&mut self, _: &[u8], _: u64) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EINVAL))
    }
    fn set_len(&mut self, _: u64) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EINVAL))
    }
    fn read_exact_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EINVAL))
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(0)
    }
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
}

impl FileHooks for RefusingClone {
    fn try_clone(&self, _: &dyn VfsFile) -> std::io::Result<Box<dyn VfsFile>> {
        Ok(Box::new(Refusing))
    }
}

impl VfsHooks for RefusingClone {
    fn inner(&self) -> &dyn Vfs {
        &konserve_core::vfs::RealFs
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        let inner = konserve_core::vfs::RealFs.create_new(path)?;
        Ok(Box::new(HookedFile { inner, hooks: self.clone() }))
    }
}

/// A direct write refused on the writer thread (the first full buffer, or
/// a later one): that buffer and the rest are written buffered, the file is
/// the buffered path's byte for byte, and no staging file is left.
#[test]
fn a_direct_write_refused_on_the_writer_thread_falls_back_to_buffered_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open_with(Arc::new(Hooked(RefusingClone)), &tmp.path().join("s"), always_direct()).unwrap());
    let buffered = Arc::new(FileStore::open(tmp.path().join("b"), Options { direct_blobs: false, ..Options::default() }).unwrap());
    for (i, size) in [DIRECT_FROM as usize + 3 * MIB, 2 * DIRECT_FROM as usize + 17].into_iter().enumerate() {
        let blob = noise(size, 40 + i as u64);
        let k = key(&format!("b{i}"));
        write(&store, &k, &blob, 300_001);
        write(&buffered, &k, &blob, 300_001);
        assert!(store.get(&k).unwrap().unwrap().value == blob, "blob {i}");
        let real = konserve_core::vfs::RealFs;
        assert!(file_bytes(&real, &store, &k) == file_bytes(&real, &buffered, &k), "blob {i}'s bytes");
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("s")).unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    assert_eq!(support::staging_names(left).len(), 0);
}
