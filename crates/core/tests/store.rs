//! The file store on a real directory: puts, gets, listings, deletes, the open sweep.

mod support;

use std::path::Path;
use std::sync::Arc;

use konserve_core::format::key::{encode, Key};
use konserve_core::format::keycheck::KEY_CHECK_FILE_NAME;
use konserve_core::*;
use std::fs;

fn key(s: &str) -> Vec<u8> {
    encode(&Key::str(s))
}

fn open(dir: &Path) -> FileStore {
    FileStore::open(dir, Options::default()).unwrap()
}

fn put1(store: &FileStore, k: &[u8], value: &[u8]) {
    store.put(&[Write { key: k, serializer: 1, meta: b"\x80", value }]).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn put_get_meta_exists_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let k = key("a");
    assert_eq!(store.get(&k).unwrap(), None);
    assert!(!store.exists(&k).unwrap());
    put1(&store, &k, b"value");
    let e = store.get(&k).unwrap().unwrap();
    assert_eq!(e, Entry { serializer: 1, meta: b"\x80".to_vec(), value: b"value".to_vec(), log: None });
    let m = store.get_meta(&k).unwrap().unwrap();
    assert_eq!(m.key, k);
    assert!(m.file.ends_with(&keyhash::file_name(&k)));
    assert!(store.exists(&k).unwrap());
    put1(&store, &k, b"second");
    assert_eq!(store.get(&k).unwrap().unwrap().value, b"second");
    assert_eq!(store.delete(&[&k, &key("missing")]).unwrap(), vec![true, false]);
    assert_eq!(store.get(&k).unwrap(), None);
    // Nothing is left: no staging file, no placeholder, no lock file.
    assert_eq!(names(tmp.path()), Vec::<String>::new());
}

#[test]
fn read_value_into_finds_values_in_place_and_sends_large_ones_to_get() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put1(&store, &key("a"), b"value");
    let mut buf = vec![0u8; 4096];
    let ValueInto::Found { serializer, log, start, len } = store.read_value_into(&key("a"), &mut buf).unwrap() else { panic!("not found") };
    assert_eq!((serializer, log, &buf[start..start + len]), (1, false, &b"value"[..]));
    assert_eq!(store.read_value_into(&key("missing"), &mut buf).unwrap(), ValueInto::Missing);
    put1(&store, &key("big"), &[7u8; 5000]);
    assert_eq!(store.read_value_into(&key("big"), &mut buf).unwrap(), ValueInto::TooLarge);
    // The lent form reads both, the large one through get.
    assert_eq!(store.read_value(&key("big"), |v| v.bytes.len()).unwrap(), Some(5000));
    assert_eq!(store.read_value(&key("a"), |v| v.bytes.to_vec()).unwrap(), Some(b"value".to_vec()));
    // A file holding another key is refused here too.
    fs::copy(store.file_path(&key("a")), store.file_path(&key("b"))).unwrap();
    assert_eq!(store.read_value_into(&key("b"), &mut buf).unwrap_err().code(), ErrorCode::KeyMismatch);
}

/// The cached-only read answers from the page cache, and says "would
/// block" once the file's pages are dropped, instead of reading the disk.
#[cfg(target_os = "linux")]
#[test]
fn read_value_into_now_never_waits_for_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    // The page-cache path itself: the value cache (which would answer from memory) off.
    let store = FileStore::open(tmp.path(), Options { value_cache_bytes: 0, ..Options::default() }).unwrap();
    put1(&store, &key("a"), b"value");
    let mut buf = vec![0u8; 4096];
    let cached = store.read_value_into_now(&key("a"), &mut buf).unwrap();
    let Some(ValueInto::Found { start, len, .. }) = cached else { panic!("a cached file must be read at once: {cached:?}") };
    assert_eq!(&buf[start..start + len], b"value");
    // Missing keys are answered at once too (the negative lookup is cached after a first miss).
    let _ = store.read_value_into(&key("missing"), &mut buf).unwrap();
    assert_eq!(store.read_value_into_now(&key("missing"), &mut buf).unwrap(), Some(ValueInto::Missing));
    // Drop the file's (clean, fsynced) pages: the cached-only read must not wait for them.
    // A few tries: on a loaded machine the kernel may bring a page back
    // between the drop and the read (CI, 2026-12-06); a read that waited for
    // the disk would answer Found every time.
    let answered_none = (0..20).any(|_| {
        drop_pages(&store.file_path(&key("a")));
        store.read_value_into_now(&key("a"), &mut buf).unwrap().is_none()
    });
    assert!(answered_none, "the cached-only read answered from a file whose pages were dropped");
    // The blocking read brings the pages back.
    assert!(matches!(store.read_value_into(&key("a"), &mut buf).unwrap(), ValueInto::Found { .. }));
    assert!(matches!(store.read_value_into_now(&key("a"), &mut buf).unwrap(), Some(ValueInto::Found { .. })));
}

/// Drops a clean file's pages from the page cache. The kernel may keep a page
/// for a moment (one in a per-CPU batch, or locked), so the advice is
/// repeated until `mincore` shows none resident (seen once in CI: a single
/// advice left the page cached).
fn drop_pages(path: &std::path::Path) {
    use std::os::unix::io::AsRawFd;
    let f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let resident = || {
        // SAFETY: a read-only shared mapping of a file we hold open, unmapped below.
        let map = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0) };
        assert_ne!(map, libc::MAP_FAILED);
        let mut pages = vec![0u8; len.div_ceil(4096)];
        // SAFETY: `pages` has one byte per page of the mapping.
        let r = unsafe { libc::mincore(map, len, pages.as_mut_ptr()) };
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(map, len) };
        assert_eq!(r, 0);
        pages.iter().any(|p| p & 1 != 0)
    };
    for _ in 0..200 {
        // SAFETY: a valid descriptor; advice only.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0);
        if !resident() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the kernel kept the pages of {} cached", path.display());
}

/// The cached-only metadata read (the revision read of an async write)
/// answers from the page cache, and says "would block" once the file's pages
/// are dropped, for append logs, and for heads longer than its first read.
#[cfg(target_os = "linux")]
#[test]
fn get_meta_now_never_waits_for_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put1(&store, &key("a"), b"value");
    let now = store.get_meta_now(&key("a")).unwrap().expect("a cached file is read at once").expect("the key exists");
    assert_eq!(now, store.get_meta(&key("a")).unwrap().unwrap());
    let _ = store.get_meta(&key("missing")).unwrap();
    assert_eq!(store.get_meta_now(&key("missing")).unwrap(), Some(None));
    // A file holding another key is refused here too.
    fs::copy(store.file_path(&key("a")), store.file_path(&key("b"))).unwrap();
    assert_eq!(store.get_meta_now(&key("b")).unwrap_err().code(), ErrorCode::KeyMismatch);
    // A head longer than the first read (4096 bytes) is left to get_meta.
    let long_meta = vec![0x41u8; 5000];
    store.put(&[Write { key: &key("m"), serializer: 1, meta: &long_meta, value: b"v" }]).unwrap();
    assert_eq!(store.get_meta_now(&key("m")).unwrap(), None);
    assert_eq!(store.get_meta(&key("m")).unwrap().unwrap().meta, long_meta);
    // An append log's info needs its records: left to get_meta.
    let r = konserve_core::format::log::NewRecord { serializer: 1, stamp: 7, payload: b"x" };
    store.log_append(&key("log"), &[r], b"\x80").unwrap();
    assert_eq!(store.get_meta_now(&key("log")).unwrap(), None);
    // Drop the file's (clean, fsynced) pages: the cached-only read must not wait for them.
    drop_pages(&store.file_path(&key("a")));
    assert_eq!(store.get_meta_now(&key("a")).unwrap(), None);
    assert!(store.get_meta(&key("a")).unwrap().is_some());
    assert!(store.get_meta_now(&key("a")).unwrap().is_some());
}

/// A metadata map as the facade writes it for a replacing write: the revision slot last.
#[test]
fn replace_counts_revisions_checks_the_expected_one_and_takes_the_lock_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (meta, at) = support::fixtures::slotted_meta();
    let k = key("r");
    let w = |expected: Option<u64>, lock: bool| Replace {
        key: &k,
        serializer: 1,
        meta: &meta,
        revision_at: at,
        value: b"v",
        expected_revision: expected,
        lock,
    };
    // A new key: revision 1, its meta the slot spliced with the shortest form.
    assert_eq!(store.replace(&w(Some(0), true)).unwrap(), Replaced::Written { revision: 1 });
    let mut want = meta[..at].to_vec();
    want.push(1);
    assert_eq!(store.get_meta(&k).unwrap().unwrap().meta, want);
    assert_eq!(store.replace(&w(None, true)).unwrap(), Replaced::Written { revision: 2 });
    // A wrong expectation writes nothing.
    assert_eq!(store.replace(&w(Some(1), true)).unwrap(), Replaced::Mismatch { actual: 2 });
    assert_eq!(store.replace(&w(Some(0), true)).unwrap(), Replaced::Mismatch { actual: 2 });
    assert_eq!(store.get(&k).unwrap().unwrap().meta[at], 2);
    // The lock was released each time; held by another holder, the write is Busy and nothing is written.
    let other = open(tmp.path());
    assert!(other.try_lock(&[&k]).unwrap());
    assert_eq!(store.replace(&w(None, true)).unwrap(), Replaced::Busy);
    assert_eq!(store.get(&k).unwrap().unwrap().meta[at], 2);
    // A caller holding the lock writes with lock: false.
    other.unlock(&[&k]).unwrap();
    store.lock(&[&k]).unwrap();
    assert_eq!(store.replace(&w(Some(2), false)).unwrap(), Replaced::Written { revision: 3 });
    assert!(!other.try_lock(&[&k]).unwrap(), "lock: false leaves the caller's lock held");
    store.unlock(&[&k]).unwrap();
    assert!(other.try_lock(&[&k]).unwrap());
    other.unlock(&[&k]).unwrap();
    // No lock file is left behind.
    assert!(names(tmp.path()).iter().all(|n| n.ends_with(".ksv") || n.starts_with(".konserve")), "{:?}", names(tmp.path()));
}

#[test]
fn replace_leaves_what_it_is_not_sure_of_to_the_caller() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (meta, at) = support::fixtures::slotted_meta();
    let w = |k: &[u8], at: usize| {
        store.replace(&Replace { key: k, serializer: 1, meta: &meta, revision_at: at, value: b"v", expected_revision: None, lock: true })
    };
    // A metadata map it cannot read (here: not a map), an append log, a slot not where it is said to be.
    put1(&store, &key("raw"), b"x");
    assert_eq!(w(&key("raw"), at).unwrap(), Replaced::Unsure);
    let r = konserve_core::format::log::NewRecord { serializer: 1, stamp: 7, payload: b"x" };
    store.log_append(&key("log"), &[r], b"\x80").unwrap();
    assert_eq!(w(&key("log"), at).unwrap(), Replaced::Unsure);
    assert_eq!(w(&key("new"), at - 1).unwrap(), Replaced::Unsure);
    // Nothing written, nothing left locked.
    assert_eq!(store.get(&key("raw")).unwrap().unwrap().meta, b"\x80");
    assert!(store.get(&key("new")).unwrap().is_none());
    for k in ["raw", "log", "new"] {
        assert!(store.try_lock(&[&key(k)]).unwrap());
        store.unlock(&[&key(k)]).unwrap();
    }
}

#[test]
fn invalid_keys_are_refused_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    for bad in [&b""[..], b"\x09", b"\x05\x00\x00\x00\x05a"] {
        assert_eq!(store.get(bad).unwrap_err().code(), ErrorCode::InvalidKey);
        let w = Write { key: bad, serializer: 1, meta: b"", value: b"" };
        assert_eq!(store.put(&[w]).unwrap_err().code(), ErrorCode::InvalidKey);
        assert_eq!(store.lock(&[bad]).unwrap_err().code(), ErrorCode::InvalidKey);
    }
    assert_eq!(names(tmp.path()), Vec::<String>::new());
}

#[test]
fn large_and_empty_values_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let big: Vec<u8> = (0..(3 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    put1(&store, &key("big"), &big);
    put1(&store, &key("empty"), b"");
    assert_eq!(store.get(&key("big")).unwrap().unwrap().value, big);
    assert_eq!(store.get(&key("empty")).unwrap().unwrap().value, b"");
    // A key longer than the first head read.
    let long = key(&"k".repeat(100_000));
    put1(&store, &long, b"x");
    assert_eq!(store.get_meta(&long).unwrap().unwrap().key, long);
    assert_eq!(store.list().unwrap().entries.len(), 3);
}

#[test]
fn corrupt_and_moved_files_are_typed_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (a, b) = (key("a"), key("b"));
    put1(&store, &a, b"aaaa");
    put1(&store, &b, b"bbbb");
    let pa = store.file_path(&a);
    let pb = store.file_path(&b);
    // b's file now holds a's bytes.
    fs::copy(&pa, &pb).unwrap();
    let err = store.get(&b).unwrap_err();
    assert_eq!(err.code(), ErrorCode::KeyMismatch);
    assert_eq!(err.file(), Some(pb.as_path()));
    let listing = store.list().unwrap();
    assert_eq!(listing.entries.len(), 1);
    assert_eq!(listing.corrupt[0].code(), ErrorCode::KeyMismatch);
    // Flip the last byte of a's value.
    let mut bytes = fs::read(&pa).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    fs::write(&pa, &bytes).unwrap();
    let err = store.get(&a).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Corrupt);
    assert_eq!(err.file(), Some(pa.as_path()));
    assert_eq!(fs::read(&pa).unwrap(), bytes, "a failed read changes nothing");
    // The meta segment is still whole, so the metadata reads.
    assert!(store.get_meta(&a).unwrap().is_some());
    // Truncated inside the header.
    fs::write(&pa, &bytes[..20]).unwrap();
    assert_eq!(store.get(&a).unwrap_err().code(), ErrorCode::Corrupt);
    assert_eq!(store.get_meta(&a).unwrap_err().code(), ErrorCode::Corrupt);
}

#[test]
fn list_ignores_foreign_files_and_never_changes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put1(&store, &key("real"), b"1");
    let foreign = [".nfs0001", "notes.txt", "abc.ksv", "0123456789abcdef0123456789abcdef.ksv~"];
    for f in foreign {
        fs::write(tmp.path().join(f), b"not konserve").unwrap();
    }
    let listing = store.list().unwrap();
    assert_eq!(listing.entries.len(), 1);
    assert!(listing.corrupt.is_empty());
    drop(store);
    let _again = open(tmp.path());
    for f in foreign {
        assert_eq!(fs::read(tmp.path().join(f)).unwrap(), b"not konserve");
    }
}

#[test]
fn open_sweeps_dead_writers_staging_files_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put1(&store, &key("kept"), b"1");
    drop(store);
    let hex = "0123456789abcdef0123456789abcdef";
    // pid 2^31 - 1 is beyond Linux's pid_max: certainly dead.
    let dead = staging::staging_name(hex, (1 << 31) - 1, 0);
    // Our own pid in our namespace, but no write in flight: a previous process with our pid.
    let here = staging::namespace_tag() << 32;
    let stale_own = staging::staging_name(hex, std::process::id(), here | 5);
    let stale_own_older_build = staging::staging_name(hex, std::process::id(), 5);
    // pid 1 is alive: its staging file must stay.
    let live = staging::staging_name(hex, 1, here);
    // Our pid, written in another pid namespace (another tag) a moment ago: it stays.
    let elsewhere = staging::staging_name(hex, std::process::id(), ((staging::namespace_tag() % 0xf_ffff) + 1) << 32);
    for n in [&dead, &stale_own, &stale_own_older_build, &live, &elsewhere] {
        fs::write(tmp.path().join(n), b"partial").unwrap();
    }
    let store = open(tmp.path());
    let left = names(tmp.path());
    assert!(!left.contains(&dead));
    assert!(!left.contains(&stale_own));
    assert!(!left.contains(&stale_own_older_build));
    assert!(left.contains(&live));
    assert!(left.contains(&elsewhere));
    let due = store.staging_sweep_due().expect("another sweep is due for the file from elsewhere");
    assert!(due > std::time::Duration::from_secs(25) && due <= std::time::Duration::from_secs(30), "{due:?}");
    assert_eq!(store.get(&key("kept")).unwrap().unwrap().value, b"1");
}

fn with_codec(compressor: u8, key: Option<&str>) -> Options {
    Options { compressor, encryption_key: key.map(|k| k.as_bytes().to_vec()), ..Options::default() }
}

#[test]
fn every_codec_combination_round_trips_and_reads_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let combos = [(0, None), (1, None), (0, Some("s3cr3t")), (1, Some("s3cr3t"))];
    let value: Vec<u8> = b"PLAINTEXT-MARKER ".repeat(1000);
    for (i, &(c, k)) in combos.iter().enumerate() {
        // The keyed stores migrate: they open a directory with plaintext files.
        let store = FileStore::open(tmp.path(), Options { accept_plaintext: k.is_some(), ..with_codec(c, k) }).unwrap();
        let key = key(&format!("k{i}"));
        store.put(&[Write { key: &key, serializer: 1, meta: b"\x80", value: &value }]).unwrap();
        assert_eq!(store.get(&key).unwrap().unwrap().value, value);
        let bytes = fs::read(store.file_path(&key)).unwrap();
        assert_eq!((bytes[6], bytes[7]), (c, u8::from(k.is_some())), "header ids");
        if c == 1 {
            assert!(bytes.len() < value.len() / 10, "LZ4 shrinks a repetitive value");
        }
        if k.is_some() {
            assert!(!bytes.windows(16).any(|w| w == b"PLAINTEXT-MARKER"), "no plaintext on disk");
        }
    }
    // A store with the key reads every encrypted file, whatever compressor
    // wrote it; plaintext ones only with accept_plaintext (a migration).
    let strict = FileStore::open(tmp.path(), with_codec(1, Some("s3cr3t"))).unwrap();
    assert_eq!(strict.list().unwrap().entries.len(), 2);
    assert_eq!(strict.get(&key("k0")).unwrap_err().code(), ErrorCode::Decrypt);
    let reader = FileStore::open(tmp.path(), Options { accept_plaintext: true, ..with_codec(1, Some("s3cr3t")) }).unwrap();
    assert_eq!(reader.list().unwrap().entries.len(), 4);
    for i in 0..4 {
        assert_eq!(reader.get(&key(&format!("k{i}"))).unwrap().unwrap().value, value);
    }
}

#[test]
fn wrong_or_missing_key_is_a_typed_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path(), with_codec(1, Some("right"))).unwrap();
    put1(&store, &key("secret"), b"value");
    let path = store.file_path(&key("secret"));
    let before = fs::read(&path).unwrap();
    // The key check refuses both opens (FORMAT.md §4.7) ...
    for opts in [with_codec(0, Some("wrong")), with_codec(0, None)] {
        assert_eq!(FileStore::open(tmp.path(), opts).unwrap_err().code(), ErrorCode::Decrypt);
    }
    // ... and without it (a store from before key checks) every read fails alike.
    fs::remove_file(tmp.path().join(KEY_CHECK_FILE_NAME)).unwrap();
    for opts in [with_codec(0, None), with_codec(0, Some("wrong"))] {
        let other = FileStore::open(tmp.path(), opts.clone()).unwrap_or_else(|e| {
            assert!(opts.encryption_key.is_some(), "{e}");
            assert_eq!(e.code(), ErrorCode::Decrypt, "a wrong key does not adopt the store: {e}");
            FileStore::open(tmp.path(), with_codec(0, None)).unwrap()
        });
        let err = other.get(&key("secret")).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Decrypt);
        assert_eq!(err.file(), Some(path.as_path()));
        assert_eq!(other.get_meta(&key("secret")).unwrap_err().code(), ErrorCode::Decrypt);
        let listing = other.list().unwrap();
        assert!(listing.entries.is_empty());
        assert_eq!(listing.corrupt[0].code(), ErrorCode::Decrypt);
    }
    assert_eq!(fs::read(&path).unwrap(), before);
    // An encrypted file copied over another key's file does not authenticate there.
    put1(&store, &key("other"), b"x");
    fs::copy(&path, store.file_path(&key("other"))).unwrap();
    assert_eq!(store.get(&key("other")).unwrap_err().code(), ErrorCode::Decrypt);
}

#[test]
fn bad_options_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(FileStore::open(tmp.path(), with_codec(2, None)).unwrap_err().code(), ErrorCode::InvalidArgument);
    assert_eq!(FileStore::open(tmp.path(), with_codec(0, Some(""))).unwrap_err().code(), ErrorCode::InvalidArgument);
    assert!(!format!("{:?}", with_codec(0, Some("hunter2"))).contains("hunter2"), "Debug never prints the key");
}

#[test]
fn sync_blob_false_writes_the_same_bytes() {
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s1 = open(t1.path());
    let s2 = FileStore::open(t2.path(), Options { sync_blob: false, ..Options::default() }).unwrap();
    put1(&s1, &key("k"), b"v");
    put1(&s2, &key("k"), b"v");
    assert_eq!(fs::read(s1.file_path(&key("k"))).unwrap(), fs::read(s2.file_path(&key("k"))).unwrap());
}

#[test]
fn delete_store_removes_konserve_files_and_keeps_foreign_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = open(&dir);
    put1(&store, &key("a"), b"1");
    drop(store);
    delete_store(&dir).unwrap();
    assert!(!dir.exists());
    delete_store(&dir).unwrap(); // missing: fine

    let store = open(&dir);
    put1(&store, &key("a"), b"1");
    fs::write(dir.join("mine.txt"), b"keep").unwrap();
    delete_store(&dir).unwrap();
    assert_eq!(names(&dir), vec!["mine.txt".to_string()]);
}

#[test]
fn list_cursor_streams_batches_with_the_rules_of_list() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open(tmp.path()));
    for i in 0..25 {
        put1(&store, &key(&format!("k{i}")), b"v");
    }
    // A foreign file, a clock file and a corrupt key file.
    fs::write(tmp.path().join("notes.txt"), b"x").unwrap();
    fs::write(tmp.path().join(CLOCK_FILE_NAME), b"1\n").unwrap();
    let bad = store.file_path(&key("k3"));
    fs::write(&bad, b"garbage").unwrap();
    let mut cursor = store.list_cursor().unwrap();
    let (mut entries, mut corrupt, mut batches) = (Vec::new(), Vec::new(), 0);
    while let Some(b) = cursor.next_batch(10).unwrap() {
        assert!(b.entries.len() + b.corrupt.len() <= 10);
        batches += 1;
        entries.extend(b.entries);
        corrupt.extend(b.corrupt);
    }
    assert_eq!(batches, 3);
    assert!(cursor.next_batch(10).unwrap().is_none(), "done stays done");
    assert_eq!(entries.len(), 24);
    assert_eq!(corrupt.len(), 1);
    assert_eq!(corrupt[0].file(), Some(bad.as_path()));
    let mut keys: Vec<Vec<u8>> = entries.into_iter().map(|e| e.key).collect();
    keys.sort();
    let mut want: Vec<Vec<u8>> = (0..25).filter(|&i| i != 3).map(|i| key(&format!("k{i}"))).collect();
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(fs::read(&bad).unwrap(), b"garbage", "listing changes nothing");
    // Closed early: nothing more.
    let mut c2 = store.list_cursor().unwrap();
    let one = |b: ListResult| b.entries.len() + b.corrupt.len();
    assert_eq!(one(c2.next_batch(1).unwrap().unwrap()), 1);
    assert_eq!(one(c2.next_batch(0).unwrap().unwrap()), 1, "max 0 counts as 1");
    c2.close();
    assert!(c2.next_batch(5).unwrap().is_none());
    // An empty store: no batch at all.
    let empty = tempfile::tempdir().unwrap();
    assert!(Arc::new(open(empty.path())).list_cursor().unwrap().next_batch(5).unwrap().is_none());
    // delete_store removes the clock file too.
    drop(cursor);
    drop(c2);
    drop(store);
    fs::remove_file(tmp.path().join("notes.txt")).unwrap();
    delete_store(tmp.path()).unwrap();
    assert!(!tmp.path().exists());
}

#[test]
fn blob_replace_opens_a_writer_that_holds_the_lock_until_it_commits_or_is_given_up() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open(tmp.path()));
    let other = open(tmp.path());
    let (meta, at) = support::fixtures::slotted_meta();
    let k = key("b");
    let w = |expected: Option<u64>, lock: bool| BlobReplace { key: &k, meta: &meta, revision_at: at, expected_revision: expected, lock };
    let opened = |r: BlobReplaced| match r {
        BlobReplaced::Opened { writer, revision } => (writer, revision),
        BlobReplaced::Not(r) => panic!("not opened: {r:?}"),
    };
    // A new key: revision 1; the lock is held from the open to the commit, and released by it.
    let (mut writer, revision) = opened(store.blob_replace(&w(Some(0), true)).unwrap());
    assert_eq!(revision, 1);
    assert!(writer.holds_lock());
    assert!(!other.try_lock(&[&k]).unwrap(), "the writer holds the key's lock");
    writer.write(b"blob one").unwrap();
    writer.commit().unwrap();
    assert!(other.try_lock(&[&k]).unwrap(), "the commit released it");
    // Held elsewhere: Busy, nothing opened.
    assert!(matches!(store.blob_replace(&w(None, true)).unwrap(), BlobReplaced::Not(Replaced::Busy)));
    other.unlock(&[&k]).unwrap();
    let e = store.get(&k).unwrap().unwrap();
    assert_eq!((e.serializer, e.meta[at]), (0, 1));
    // A wrong expectation opens nothing and leaves the lock free.
    assert!(matches!(store.blob_replace(&w(Some(0), true)).unwrap(), BlobReplaced::Not(Replaced::Mismatch { actual: 1 })));
    assert!(other.try_lock(&[&k]).unwrap());
    other.unlock(&[&k]).unwrap();
    // An aborted writer, and a dropped one, release the lock and leave the old blob.
    let (writer, revision) = opened(store.blob_replace(&w(Some(1), true)).unwrap());
    assert_eq!(revision, 2);
    writer.abort();
    assert!(other.try_lock(&[&k]).unwrap());
    other.unlock(&[&k]).unwrap();
    let (mut writer, _) = opened(store.blob_replace(&w(None, true)).unwrap());
    writer.write(b"never committed").unwrap();
    drop(writer);
    assert!(other.try_lock(&[&k]).unwrap());
    other.unlock(&[&k]).unwrap();
    assert_eq!(store.get(&k).unwrap().unwrap().value, b"blob one");
    // A caller holding the lock opens with lock: false and keeps it after the commit.
    store.lock(&[&k]).unwrap();
    let (mut writer, revision) = opened(store.blob_replace(&w(Some(1), false)).unwrap());
    assert_eq!(revision, 2);
    assert!(!writer.holds_lock());
    writer.write(b"blob two").unwrap();
    writer.commit().unwrap();
    assert!(!other.try_lock(&[&k]).unwrap(), "lock: false leaves the caller's lock held");
    store.unlock(&[&k]).unwrap();
    assert_eq!(store.get(&k).unwrap().unwrap().value, b"blob two");
    assert_eq!(store.get_meta(&k).unwrap().unwrap().meta[at], 2);
    // What the core is not sure of (an append log) is left to the caller, the lock free.
    let r = konserve_core::format::log::NewRecord { serializer: 1, stamp: 7, payload: b"x" };
    store.log_append(&key("log"), &[r], b"\x80").unwrap();
    let lw = BlobReplace { key: &key("log"), meta: &meta, revision_at: at, expected_revision: None, lock: true };
    assert!(matches!(store.blob_replace(&lw).unwrap(), BlobReplaced::Not(Replaced::Unsure)));
    assert!(other.try_lock(&[&key("log")]).unwrap());
    other.unlock(&[&key("log")]).unwrap();
    assert!(names(tmp.path()).iter().all(|n| n.ends_with(".ksv") || n.starts_with(".konserve")), "{:?}", names(tmp.path()));
}
