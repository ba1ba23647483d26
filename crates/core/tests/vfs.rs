//! The real file system behind the I/O seam: what it refuses (links, FIFOs, devices).

mod support;

use konserve_core::error::ErrorCode;
use konserve_core::format::key::{encode, Key};
use konserve_core::keyhash;
use konserve_core::store::{delete_store, FileStore, Options, Write};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

fn key(s: &str) -> Vec<u8> {
    encode(&Key::str(s))
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
}

fn put(store: &FileStore, k: &str, v: &[u8]) {
    store.put(&[Write { key: &key(k), serializer: 0, meta: b"\x80", value: v }]).unwrap();
}

/// A FIFO (or a directory) named like a key file is an error naming the
/// file on every read path, never a wait (issue #23 item 3).
#[test]
fn a_fifo_or_a_directory_named_like_a_key_file_is_an_error_not_a_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(tmp.path(), Options::default()).unwrap());
    put(&store, "good", b"v");
    for (name, make) in [("fifo", mkfifo as fn(&Path)), ("dir", |p: &Path| std::fs::create_dir(p).unwrap())] {
        let k = key(name);
        let path = store.file_path(&k);
        make(&path);
        let check = |e: konserve_core::Error, what: &str| {
            assert_eq!(e.code(), ErrorCode::NotAFile, "{name} {what}: {e}");
            assert_eq!(e.file(), Some(path.as_path()), "{name} {what}");
        };
        check(store.get(&k).unwrap_err(), "get");
        check(store.get_meta(&k).unwrap_err(), "get_meta");
        check(store.read_value_into(&k, &mut [0; 64]).unwrap_err(), "read_value_into");
        if let Err(e) = store.read_value_into_now(&k, &mut [0; 64]) {
            check(e, "read_value_into_now");
        }
        check(store.open_blob(&k).err().unwrap(), "open_blob");
        check(store.open_log(&k).err().unwrap(), "open_log");
        check(
            store.log_append(&k, &[konserve_core::format::log::NewRecord { serializer: 0, stamp: 1, payload: b"r" }], b"\x80").unwrap_err(),
            "log_append",
        );
        let listing = store.list().unwrap();
        assert_eq!(listing.entries.len(), 1, "{name}: the good key is listed");
        assert!(listing.corrupt.iter().any(|e| e.code() == ErrorCode::NotAFile && e.file() == Some(path.as_path())), "{name}: reported");
        let mut cursor = store.list_cursor().unwrap();
        let batch = cursor.next_batch(100).unwrap().unwrap();
        assert!(batch.corrupt.iter().any(|e| e.code() == ErrorCode::NotAFile), "{name}: the cursor reports it");
        if name == "fifo" {
            std::fs::remove_file(&path).unwrap();
        } else {
            std::fs::remove_dir(&path).unwrap();
        }
    }
}

/// A key file (or the lock file) that is a symbolic link is never
/// followed out of the store (issue #23 item 4).
#[test]
fn symlinked_store_files_are_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dir = tmp.path().join("store");
    // A real key file elsewhere, and a link to it in the store under its name.
    let other = FileStore::open(&outside, Options::default()).unwrap();
    put(&other, "k", b"secret");
    let name = keyhash::file_name(&key("k"));
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(outside.join(&name), dir.join(&name)).unwrap();
    // The lock file a link to a file that does not exist yet: opening must not create it.
    let target = tmp.path().join("created-by-the-lock");
    std::os::unix::fs::symlink(&target, dir.join(konserve_core::LOCK_FILE_NAME)).unwrap();
    match FileStore::open(&dir, Options::default()) {
        Ok(store) => {
            let e = store.get(&key("k")).unwrap_err();
            assert_eq!(e.code(), ErrorCode::NotAFile, "{e}");
            assert_eq!(e.file(), Some(dir.canonicalize().unwrap().join(&name).as_path()));
            assert_eq!(store.get_meta(&key("k")).unwrap_err().code(), ErrorCode::NotAFile);
            let listing = store.list().unwrap();
            assert!(listing.entries.is_empty());
            assert_eq!(listing.corrupt.len(), 1);
            let _ = store.lock(&[&key("k")]);
        }
        Err(e) => assert_eq!(e.code(), ErrorCode::NotAFile, "{e}"),
    }
    assert!(!target.exists(), "the lock file's link target was created outside the store");
}

/// deleteStore on a path that is a symbolic link to a store directory
/// deletes the store's files there and leaves the link and the directory.
#[test]
fn delete_store_through_a_symlink_deletes_the_files_and_keeps_link_and_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    let link = tmp.path().join("link");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let store = FileStore::open(&link, Options::default()).unwrap();
    put(&store, "a", b"1");
    drop(store);
    delete_store(&link).unwrap();
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert!(real.is_dir());
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
    let store = FileStore::open(&link, Options::default()).unwrap();
    assert_eq!(store.get(&key("a")).unwrap(), None);
}

/// The forwarding wrapper the tests build their probes on
/// (tests/support/passthrough.rs), overriding nothing, answers as the real
/// file system where the traits' defaults would not: each defaulted method is forwarded.
#[cfg(target_os = "linux")]
#[test]
fn the_test_passthrough_forwards_the_defaulted_methods_to_the_real_file_system() {
    use konserve_core::vfs::{RealFs, Vfs, VfsFile};
    use support::passthrough::{FileHooks, Hooked, HookedFile, VfsHooks};
    struct Nothing;
    impl VfsHooks for Nothing {
        fn inner(&self) -> &dyn Vfs {
            &RealFs
        }
    }
    impl FileHooks for Nothing {}
    let tmp = tempfile::tempdir().unwrap();
    let (fs, file, link) = (Hooked(Nothing), tmp.path().join("f"), tmp.path().join("l"));
    std::fs::write(&file, b"data").unwrap();
    std::os::unix::fs::symlink(&file, &link).unwrap();
    assert!(fs.is_symlink(&link).unwrap());
    assert!(fs.watchable() && fs.parallel_sync());
    assert_eq!(fs.identity(), RealFs.identity());
    assert_eq!(fs.process_start(std::process::id()).unwrap(), RealFs.process_start(std::process::id()).unwrap());
    fs.sync_fs(tmp.path()).unwrap();
    fs.hard_link(&file, &tmp.path().join("h")).unwrap();
    assert_eq!(fs.read_dir_iter(tmp.path()).unwrap().count(), 3);
    // A file just written is cached: the cached open and read answer (where the kernel has them).
    let f = HookedFile { inner: fs.open_read(&file).unwrap(), hooks: Nothing };
    let mut buf = [0u8; 8];
    let (real, hooked) = (RealFs.open_read_cached(&file).map(|_| ()), fs.open_read_cached(&file).map(|_| ()));
    assert_eq!(real.is_ok(), hooked.is_ok(), "{real:?} {hooked:?}");
    let real = RealFs.open_read(&file).unwrap().read_cached_at(&mut buf, 0).ok();
    assert_eq!(f.read_cached_at(&mut buf, 0).ok(), real);
    f.start_writeback(0, 4).unwrap();
    f.sync_data().unwrap();
}
