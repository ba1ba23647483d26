//! The lock-free replace on a version-3 store (docs/WAL.md §4.1): no key
//! lock file, BUSY when another holder's lock file exists, the locked
//! writer's pass through the log lock, version 2 keeping its lock files, and
//! no lost update between lock-free and locked writers of two processes.
//!
//! Two processes are two [`FileStore`]s on one directory through [`Probe`],
//! whose second name for the directory (a symbolic link it does not resolve)
//! gives the second store its own in-process lock table slots, as another
//! process has.

mod support;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use konserve_core::format::file::encode_file;
use konserve_core::format::key::{encode, Key};
use konserve_core::format::keycheck::{KeyCheck, KEY_CHECK_FILE_NAME};
use konserve_core::format::meta::revision;
use konserve_core::format::wal::{NewWalRecord, WalOp, FRAMES_AT, WAL_FILE_NAME};
use konserve_core::vfs::{RealFs, Vfs, VfsFile};
use konserve_core::wal::{record_hash, OwnedRecord, Wal, WalLookup, WalOptions, WAL_LOCK_HEX};
use konserve_core::*;
use support::passthrough::{FileHooks, Hooked, HookedFile, OnceHook, VfsHooks};

fn key(s: &str) -> Vec<u8> {
    encode(&Key::str(s))
}

/// The real file system, counting the key lock files created, with a gate
/// on the log's frame writes and a second name for the store directory.
#[derive(Clone, Default)]
struct Probe {
    /// Key lock files created (`.<hex>.lock`, not the log's).
    key_locks: Arc<AtomicU64>,
    /// Attempts at the log's lock file that found it taken.
    log_busy: Arc<AtomicU64>,
    /// Shut: the next frame write waits for it to open (and says it entered).
    gate: Arc<(Mutex<bool>, Condvar)>,
    gated: Arc<AtomicBool>,
    entered: Arc<AtomicBool>,
    /// Shut for the log's `fdatasync` instead (`shut_sync`).
    sync_gated: Arc<AtomicBool>,
    /// Each frame write yields this long first (widens the window between
    /// a lock-free write's decision and its frame).
    delay_micros: Arc<AtomicU64>,
    /// Run once, in the removal of the next key lock file, before it.
    at_key_lock_removal: OnceHook,
}

impl Probe {
    fn shut(&self) {
        *self.gate.0.lock().unwrap() = false;
        self.gated.store(true, Ordering::SeqCst);
    }

    fn shut_sync(&self) {
        *self.gate.0.lock().unwrap() = false;
        self.sync_gated.store(true, Ordering::SeqCst);
    }

    fn wait_at_gate(&self) {
        self.entered.store(true, Ordering::SeqCst);
        let (open, cv) = &*self.gate;
        let mut g = open.lock().unwrap();
        while !*g {
            g = cv.wait(g).unwrap();
        }
    }

    fn open(&self) {
        self.gated.store(false, Ordering::SeqCst);
        self.sync_gated.store(false, Ordering::SeqCst);
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl FileHooks for Probe {
    fn write_all_at(&self, file: &mut dyn VfsFile, buf: &[u8], offset: u64) -> io::Result<()> {
        if offset >= FRAMES_AT as u64 && !buf.iter().all(|&b| b == 0) {
            let d = self.delay_micros.load(Ordering::SeqCst);
            if d > 0 {
                std::thread::sleep(std::time::Duration::from_micros(d));
            }
            if self.gated.load(Ordering::SeqCst) {
                self.wait_at_gate();
            }
        }
        file.write_all_at(buf, offset)
    }
    fn sync_data(&self, file: &dyn VfsFile) -> io::Result<()> {
        if self.sync_gated.load(Ordering::SeqCst) {
            self.wait_at_gate();
        }
        file.sync_data()
    }
}

const ALIAS: &str = "alias";

impl VfsHooks for Probe {
    fn inner(&self) -> &dyn Vfs {
        &RealFs
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let lock = name.ends_with(".lock") && name.len() == 38;
        let log_lock = name == format!(".{WAL_LOCK_HEX}.lock");
        let r = RealFs.create_new(path);
        match &r {
            Ok(_) if lock && !log_lock && !name.starts_with(".434b5054") => {
                self.key_locks.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if log_lock && e.kind() == io::ErrorKind::AlreadyExists => {
                self.log_busy.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        r
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".lock") && name != format!(".{WAL_LOCK_HEX}.lock") {
            self.at_key_lock_removal.run();
        }
        RealFs.remove_file(path)
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let f = RealFs.open_write(path)?;
        if path.file_name() == Some(WAL_FILE_NAME.as_ref()) {
            return Ok(Box::new(HookedFile { inner: f, hooks: self.clone() }));
        }
        Ok(f)
    }
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        // The alias stays itself: another store identity, as in another process.
        if path.file_name() == Some(ALIAS.as_ref()) {
            return Ok(RealFs.canonicalize(path.parent().unwrap())?.join(ALIAS));
        }
        RealFs.canonicalize(path)
    }
}

fn options(wal: Option<bool>) -> Options {
    Options { sync_blob: false, wal, ..Options::default() }
}

/// Two stores on one new directory as two processes: `a` upgrades it (version 3), `b` opens it through the alias.
fn two(tmp: &Path) -> (Arc<FileStore>, Hooked<Probe>, Arc<FileStore>, Hooked<Probe>) {
    let dir = tmp.join("s");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&dir, tmp.join(ALIAS)).unwrap();
    let (pa, pb) = (Hooked(Probe::default()), Hooked(Probe::default()));
    let a = FileStore::open_with(Arc::new(pa.clone()), &dir, options(Some(true))).unwrap();
    let b = FileStore::open_with(Arc::new(pb.clone()), &tmp.join(ALIAS), options(None)).unwrap();
    assert!(a.is_lock_free() && b.is_lock_free());
    (Arc::new(a), pa, Arc::new(b), pb)
}

fn replace<'a>(k: &'a [u8], meta: &'a [u8], at: usize, value: &'a [u8], expected: Option<u64>) -> Replace<'a> {
    Replace { key: k, serializer: 1, meta, revision_at: at, value, expected_revision: expected, lock: true }
}

fn lock_files(dir: &Path) -> Vec<String> {
    support::dir_names(dir).into_iter().filter(|n| n.ends_with(".lock")).collect()
}

/// The key lock files in `dir` (not the log's or the checkpoint's).
fn key_lock_files(dir: &Path) -> Vec<String> {
    let (log, ckpt) = (format!(".{WAL_LOCK_HEX}.lock"), format!(".{}.lock", konserve_core::wal::CHECKPOINT_LOCK_HEX));
    lock_files(dir).into_iter().filter(|n| *n != log && *n != ckpt).collect()
}

/// The key lock files left once their idle hold (docs/WAL.md §4.1.2) is
/// over: waits up to 2 s for them to go.
fn lock_files_after_idle_hold(dir: &Path) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let left = lock_files(dir);
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn the_upgrade_writes_version_3_and_a_lock_free_replace_creates_no_lock_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, pa, b, _) = two(tmp.path());
    let marker = std::fs::read(tmp.path().join("s").join(KEY_CHECK_FILE_NAME)).unwrap();
    assert_eq!(KeyCheck::decode_versioned(&marker).unwrap(), (KeyCheck::NONE, 3));
    let (meta, at) = support::fixtures::slotted_meta();
    let k = key("k");
    for i in 0..20u64 {
        assert_eq!(a.replace(&replace(&k, &meta, at, b"v", Some(i))).unwrap(), Replaced::Written { revision: i + 1 });
    }
    assert_eq!(a.replace(&replace(&k, &meta, at, b"v", Some(3))).unwrap(), Replaced::Mismatch { actual: 20 });
    assert_eq!(a.replace(&replace(&k, &meta, at, b"w", None)).unwrap(), Replaced::Written { revision: 21 });
    // Through the committer thread too.
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..5 {
        let tx = tx.clone();
        a.replace_then(&replace(&k, &meta, at, b"x", None), Box::new(move |r| tx.send(r.unwrap()).unwrap()));
        assert!(matches!(rx.recv().unwrap(), Replaced::Written { .. }));
    }
    assert_eq!(pa.key_locks.load(Ordering::SeqCst), 0, "no key lock file was created");
    let e = b.get(&k).unwrap().unwrap();
    assert_eq!((e.value.as_slice(), revision(&e.meta)), (&b"x"[..], Some(26)));
    // The in-process lock still excludes this process's locked writers.
    assert!(a.try_lock(&[&k]).unwrap());
    assert_eq!(a.replace(&replace(&k, &meta, at, b"y", None)).unwrap(), Replaced::Busy);
    a.unlock(&[&k]).unwrap();
    assert_eq!(pa.key_locks.load(Ordering::SeqCst), 1, "only the try_lock's");
    // Its lock file kept idle goes (docs/WAL.md §4.1.2); then a value too
    // large for a record takes the key's lock file, as before.
    assert!(lock_files_after_idle_hold(&tmp.path().join("s")).is_empty());
    let big = support::fixtures::noise(20_000, 7);
    assert_eq!(a.replace(&replace(&k, &meta, at, &big, Some(26))).unwrap(), Replaced::Written { revision: 27 });
    assert_eq!(pa.key_locks.load(Ordering::SeqCst), 2);
    assert_eq!(b.get(&k).unwrap().unwrap().value, big);
    assert!(lock_files_after_idle_hold(&tmp.path().join("s")).is_empty());
}

#[test]
fn another_holders_lock_file_makes_a_lock_free_replace_busy_and_appends_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _, b, _) = two(tmp.path());
    let (meta, at) = support::fixtures::slotted_meta();
    let k = key("held");
    assert_eq!(a.replace(&replace(&k, &meta, at, b"1", None)).unwrap(), Replaced::Written { revision: 1 });
    let before = a.wal().unwrap().stats();
    b.lock(&[&k]).unwrap();
    assert_eq!(a.replace(&replace(&k, &meta, at, b"2", None)).unwrap(), Replaced::Busy);
    assert_eq!(a.replace(&replace(&k, &meta, at, b"2", Some(1))).unwrap(), Replaced::Busy);
    let (tx, rx) = std::sync::mpsc::channel();
    a.replace_then(&replace(&k, &meta, at, b"2", None), Box::new(move |r| tx.send(r.unwrap()).unwrap()));
    assert_eq!(rx.recv().unwrap(), Replaced::Busy);
    let after = a.wal().unwrap().stats();
    assert_eq!(after.records, before.records, "nothing appended");
    // An empty lock file (a holder being written, or a dead one) is a lock file too.
    b.unlock(&[&k]).unwrap();
    let lock = tmp.path().join("s").join(konserve_core::filelock::lock_name(&format!("{:032x}", konserve_core::keyhash::key_hash(&k))));
    std::fs::write(&lock, b"").unwrap();
    assert_eq!(a.replace(&replace(&k, &meta, at, b"2", None)).unwrap(), Replaced::Busy);
    std::fs::remove_file(&lock).unwrap();
    assert_eq!(a.replace(&replace(&k, &meta, at, b"2", None)).unwrap(), Replaced::Written { revision: 2 });
    // The in-process lock was released after each answer.
    assert!(a.try_lock(&[&k]).unwrap());
    a.unlock(&[&k]).unwrap();
}

/// A locked writer that takes its lock file while a lock-free write of the
/// key is between its decision (no lock file yet) and its frame waits for
/// that frame before it reads: its read sees the lock-free write.
#[test]
fn a_locked_writer_passes_through_the_log_lock_before_it_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, pa, b, pb) = two(tmp.path());
    let (meta, at) = support::fixtures::slotted_meta();
    let k = key("raced");
    assert_eq!(a.replace(&replace(&k, &meta, at, b"0", None)).unwrap(), Replaced::Written { revision: 1 });
    pa.shut();
    let writer = {
        let (a, k, meta) = (Arc::clone(&a), k.clone(), meta.clone());
        std::thread::spawn(move || a.replace(&replace(&k, &meta, at, b"lock-free", Some(1))).unwrap())
    };
    // Wait (an event, polled) for the lock-free write's frame to be at the gate: decided, not written.
    while !pa.entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = {
        let (b, k) = (Arc::clone(&b), k.clone());
        std::thread::spawn(move || {
            b.lock(&[&k]).unwrap();
            let e = b.get(&k).unwrap().unwrap();
            tx.send(e.value).unwrap();
            b.unlock(&[&k]).unwrap();
        })
    };
    // The locked writer either waits for the log lock (as it must) or has read already (the bug).
    let early = loop {
        if pb.log_busy.load(Ordering::SeqCst) > 0 {
            break None;
        }
        if let Ok(v) = rx.try_recv() {
            break Some(v);
        }
        std::thread::yield_now();
    };
    pa.open();
    assert_eq!(writer.join().unwrap(), Replaced::Written { revision: 2 });
    let seen = match early {
        Some(v) => v,
        None => rx.recv().unwrap(),
    };
    reader.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&seen), "lock-free", "the locked writer read before the lock-free write's frame");
}

#[test]
fn lock_free_and_locked_increments_of_two_processes_lose_no_update() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, pa, b, _) = two(tmp.path());
    // Widen the window between a decision and its frame.
    pa.delay_micros.store(200, Ordering::SeqCst);
    let (meta, at) = support::fixtures::slotted_meta();
    let k = key("counter");
    assert_eq!(a.replace(&replace(&k, &meta, at, &0u64.to_le_bytes(), None)).unwrap(), Replaced::Written { revision: 1 });
    let count = |e: &Entry| u64::from_le_bytes(e.value.as_slice().try_into().unwrap());
    const ROUNDS: u64 = 150;
    let lock_free: Vec<_> = (0..3)
        .map(|_| {
            let (a, k, meta) = (Arc::clone(&a), k.clone(), meta.clone());
            std::thread::spawn(move || {
                let mut done = 0u64;
                while done < ROUNDS {
                    let e = a.get(&k).unwrap().unwrap();
                    let next = (count(&e) + 1).to_le_bytes();
                    match a.replace(&replace(&k, &meta, at, &next, revision(&e.meta))).unwrap() {
                        Replaced::Written { .. } => done += 1,
                        Replaced::Mismatch { .. } | Replaced::Busy => {}
                        Replaced::Unsure => panic!("unsure"),
                    }
                }
                done
            })
        })
        .collect();
    let locked: Vec<_> = (0..3)
        .map(|_| {
            let (b, k, meta) = (Arc::clone(&b), k.clone(), meta.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    b.lock(&[&k]).unwrap();
                    let e = b.get(&k).unwrap().unwrap();
                    let next = (count(&e) + 1).to_le_bytes();
                    let r = Replace { lock: false, ..replace(&k, &meta, at, &next, None) };
                    assert!(matches!(b.replace(&r).unwrap(), Replaced::Written { .. }));
                    b.unlock(&[&k]).unwrap();
                }
                ROUNDS
            })
        })
        .collect();
    let total: u64 = lock_free.into_iter().chain(locked).map(|t| t.join().unwrap()).sum();
    let e = a.get(&k).unwrap().unwrap();
    assert_eq!(count(&e), total, "an increment was lost");
    assert_eq!(revision(&e.meta), Some(total + 1), "revisions are a sequence");
}

#[test]
fn a_version_2_store_keeps_taking_lock_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    drop(FileStore::open(dir, options(Some(true))).unwrap());
    std::fs::write(dir.join(KEY_CHECK_FILE_NAME), KeyCheck::NONE.encode_version(2)).unwrap();
    let p = Hooked(Probe::default());
    let store = Arc::new(FileStore::open_with(Arc::new(p.clone()), dir, options(Some(true))).unwrap());
    assert!(store.wal().is_some());
    assert!(!store.is_lock_free());
    let (meta, at) = support::fixtures::slotted_meta();
    let k = key("v2");
    assert_eq!(store.replace(&replace(&k, &meta, at, b"v", None)).unwrap(), Replaced::Written { revision: 1 });
    assert_eq!(p.key_locks.load(Ordering::SeqCst), 1);
    let (tx, rx) = std::sync::mpsc::channel();
    store.replace_then(&replace(&k, &meta, at, b"w", None), Box::new(move |r| tx.send(r.unwrap()).unwrap()));
    assert_eq!(rx.recv().unwrap(), Replaced::Written { revision: 2 });
    assert_eq!(p.key_locks.load(Ordering::SeqCst), 2);
    drop(store);
    assert_eq!(KeyCheck::decode_versioned(&std::fs::read(dir.join(KEY_CHECK_FILE_NAME)).unwrap()).unwrap().1, 2, "kept at 2");
    // The downgrade works from either version.
    let store = FileStore::open(dir, options(Some(false))).unwrap();
    assert!(store.wal().is_none() && !store.is_lock_free());
    assert_eq!(store.get(&k).unwrap().unwrap().value, b"w");
}

// ---- the log's decided writes (Wal::append_decided, Wal::submit_decided) ----

fn put_record(k: &str, v: &[u8]) -> OwnedRecord {
    OwnedRecord { op: WalOp::Put, key_hash: record_hash(&key(k)), payload: encode_file(&key(k), 0, b"\x80", v).unwrap() }
}

#[test]
fn decisions_run_under_the_log_lock_see_the_log_and_answer_for_their_write_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Arc::new(
        Wal::open(Arc::new(RealFs), tmp.path(), WalOptions { store: options(None), grow_step: 64 * 1024, ..WalOptions::default() })
            .unwrap(),
    );
    let first = put_record("seen", b"1");
    wal.append(&[NewWalRecord { op: first.op, key_hash: first.key_hash, payload: &first.payload }]).unwrap();
    // A blocking decided write: its decision holds the log lock and reads the log.
    let held = Arc::new(AtomicBool::new(false));
    let h = Arc::clone(&held);
    wal.append_decided(
        16 * 1024,
        Box::new(move |w: &Wal| {
            // (Not `holds_log_lock`: that waits for the in-process mutex the committer holds.)
            let lock = w.path().parent().unwrap().join(konserve_core::filelock::lock_name(konserve_core::wal::WAL_LOCK_HEX));
            h.store(lock.exists(), Ordering::SeqCst);
            assert!(matches!(w.get(&record_hash(&key("seen")))?, WalLookup::Put(_)), "the decision sees the log");
            Ok(Some(put_record("decided", b"2")))
        }),
    )
    .unwrap();
    assert!(held.load(Ordering::SeqCst), "the decision ran under the log's lock file");
    assert!(matches!(wal.get(&record_hash(&key("decided"))).unwrap(), WalLookup::Put(_)));
    // Queued together on the committer thread: a plain append, a write left
    // out, a failed decision and a record too large for its reserve, each
    // answered for itself.
    let (tx, rx) = std::sync::mpsc::channel::<(&str, konserve_core::Result<()>)>();
    let done = |name: &'static str| {
        let tx = tx.clone();
        Box::new(move |r| tx.send((name, r)).unwrap()) as konserve_core::wal::Completion
    };
    let plain = put_record("plain", b"3");
    wal.submit(&[NewWalRecord { op: plain.op, key_hash: plain.key_hash, payload: &plain.payload }], done("plain")).unwrap();
    wal.submit_decided(16 * 1024, Box::new(|_: &Wal| Ok(None)), done("left out")).unwrap();
    wal.submit_decided(16 * 1024, Box::new(|_: &Wal| Err(Error::new(ErrorCode::Io, "no"))), done("failed")).unwrap();
    wal.submit_decided(8, Box::new(|_: &Wal| Ok(Some(put_record("large", b"4")))), done("too large")).unwrap();
    wal.submit_decided(16 * 1024, Box::new(|_: &Wal| Ok(Some(put_record("kept", b"5")))), done("kept")).unwrap();
    let mut got: Vec<(&str, Option<ErrorCode>)> = (0..5).map(|_| rx.recv().unwrap()).map(|(n, r)| (n, r.err().map(|e| e.code()))).collect();
    got.sort_by_key(|(n, _)| *n);
    assert_eq!(
        got,
        vec![
            ("failed", Some(ErrorCode::Io)),
            ("kept", None),
            ("left out", None),
            ("plain", None),
            ("too large", Some(ErrorCode::InvalidArgument)),
        ]
    );
    for (k, found) in [("plain", true), ("kept", true), ("large", false)] {
        assert_eq!(matches!(wal.get(&record_hash(&key(k))).unwrap(), WalLookup::Put(_)), found, "{k}");
    }
    assert_eq!(wal.append_decided(usize::MAX / 2, Box::new(|_: &Wal| Ok(None))).unwrap_err().code(), ErrorCode::InvalidArgument);
}

/// The queued fast path (`FileStore::replace_queued`, docs/WAL.md §4.1.1):
/// no revision read before the committer's decision, so 64 keys queued at
/// once all get their next revision from the decision,
/// mismatches and another holder's lock file still answer their own
/// caller, and what is not for this path is declined with nothing done.
#[test]
fn queued_replaces_are_decided_by_the_committer_and_declined_when_not_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, pa, b, _) = two(tmp.path());
    let (meta, at) = support::fixtures::slotted_meta();
    let keys: Vec<Vec<u8>> = (0..64).map(|i| key(&format!("q{i}"))).collect();
    // Half of them exist at revision 1 (in a key file after a checkpoint, so
    // the decision reads both the log and key files).
    for k in keys.iter().step_by(2) {
        assert_eq!(a.replace(&replace(k, &meta, at, b"old", None)).unwrap(), Replaced::Written { revision: 1 });
    }
    a.checkpoint().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, k) in keys.iter().enumerate() {
        let tx = tx.clone();
        // Every fourth expects a wrong revision: a mismatch for it alone.
        let expected = if i % 4 == 1 { Some(7) } else { None };
        assert!(a.replace_queued(&replace(k, &meta, at, b"new", expected), Box::new(move |r| tx.send((i, r.unwrap())).unwrap())));
    }
    let mut answers: Vec<(usize, Replaced)> = (0..64).map(|_| rx.recv().unwrap()).collect();
    answers.sort_by_key(|(i, _)| *i);
    for (i, r) in answers {
        let want =
            if i % 4 == 1 { Replaced::Mismatch { actual: 0 } } else { Replaced::Written { revision: if i % 2 == 0 { 2 } else { 1 } } };
        assert_eq!(r, want, "key {i}");
    }
    assert_eq!(revision(&b.get(&keys[0]).unwrap().unwrap().meta), Some(2));
    assert!(b.get(&keys[1]).unwrap().is_none(), "the mismatch wrote nothing");
    assert_eq!(pa.key_locks.load(Ordering::SeqCst), 0, "no key lock file was created");
    // Another holder's lock file: BUSY, to this caller, nothing appended.
    let before = a.wal().unwrap().stats();
    b.lock(&[&keys[0]]).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    assert!(a.replace_queued(&replace(&keys[0], &meta, at, b"x", None), Box::new(move |r| tx.send(r.unwrap()).unwrap())));
    assert_eq!(rx.recv().unwrap(), Replaced::Busy);
    assert_eq!(a.wal().unwrap().stats().records, before.records, "nothing appended");
    b.unlock(&[&keys[0]]).unwrap();
    // `b` keeps its lock file idle for a moment (docs/WAL.md §4.1.2).
    assert!(lock_files_after_idle_hold(&tmp.path().join("s")).is_empty());
    // Declined, `done` never called: the in-process lock held here, a value
    // that may not fit a record, no lock requested, a store with no log.
    let never = || -> Box<dyn FnOnce(Result<Replaced>) + Send> { Box::new(|_| panic!("a declined write is never answered")) };
    assert!(a.try_lock(&[&keys[2]]).unwrap());
    assert!(!a.replace_queued(&replace(&keys[2], &meta, at, b"x", None), never()));
    a.unlock(&[&keys[2]]).unwrap();
    let big = vec![0u8; WAL_MAX_RECORD];
    assert!(!a.replace_queued(&replace(&keys[2], &meta, at, &big, None), never()));
    let mut unlocked = replace(&keys[2], &meta, at, b"x", None);
    unlocked.lock = false;
    assert!(!a.replace_queued(&unlocked, never()));
    let plain = Arc::new(FileStore::open(tmp.path().join("plain"), options(None)).unwrap());
    assert!(!plain.replace_queued(&replace(&keys[2], &meta, at, b"x", None), never()));
    // The in-process locks were all released.
    for k in &keys {
        assert!(a.try_lock(&[k]).unwrap());
        a.unlock(&[k]).unwrap();
    }
}

/// Docs/WAL.md §4.1.2: a key lock file released by its holder is kept for
/// a moment for the next holder in this process, who takes it with no file
/// call; a lock-free write of this process writes the key meanwhile; another
/// process finds it held (BUSY, or waits for it) until the background
/// thread removes it; a close removes it at once.
#[test]
fn a_released_key_lock_file_is_kept_for_this_process_and_only_briefly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&dir, tmp.path().join(ALIAS)).unwrap();
    let (pa, pb) = (Hooked(Probe::default()), Hooked(Probe::default()));
    // The idle hold as long as it gets: the longest hold (LOCK_HOLD, 20 ms) from the file's creation.
    let long = Options { wal_idle_hold: Some(std::time::Duration::from_secs(60)), ..options(Some(true)) };
    let a = Arc::new(FileStore::open_with(Arc::new(pa.clone()), &dir, long.clone()).unwrap());
    let b = Arc::new(FileStore::open_with(Arc::new(pb.clone()), &tmp.path().join(ALIAS), long).unwrap());
    let (meta, at) = support::fixtures::slotted_meta();
    let k = key("k");
    // Each check is of one hold, and counts only if it ran within it (a
    // loaded machine may stall a thread past 20 ms: then it runs again).
    let within_a_hold = |what: &str, check: &mut dyn FnMut() -> bool| {
        for _ in 0..20 {
            assert!(lock_files_after_idle_hold(&dir).is_empty());
            let t = std::time::Instant::now();
            let ok = check();
            if t.elapsed() < std::time::Duration::from_millis(15) {
                assert!(ok, "{what}");
                return;
            }
        }
        panic!("{what}: never ran within one hold");
    };
    within_a_hold("kept after the unlock, taken again with no new file", &mut || {
        let made = pa.key_locks.load(Ordering::SeqCst);
        a.lock(&[&k]).unwrap();
        a.unlock(&[&k]).unwrap();
        let kept = key_lock_files(&dir).len() == 1;
        a.lock(&[&k]).unwrap();
        let mut locked = replace(&k, &meta, at, b"one", None);
        locked.lock = false;
        let one = matches!(a.replace(&locked).unwrap(), Replaced::Written { .. });
        a.unlock(&[&k]).unwrap();
        let again = a.try_lock(&[&k]).unwrap();
        a.unlock(&[&k]).unwrap();
        kept && one && again && pa.key_locks.load(Ordering::SeqCst) == made + 1
    });
    within_a_hold("another process finds it held; a lock-free write of this process is not kept out", &mut || {
        a.lock(&[&k]).unwrap();
        a.unlock(&[&k]).unwrap();
        // (A lock file makes another process's lock-free write BUSY: another_holders_lock_file_….)
        let held = !b.try_lock(&[&k]).unwrap() && key_lock_files(&dir).len() == 1;
        let written = matches!(a.replace(&replace(&k, &meta, at, b"two", None)).unwrap(), Replaced::Written { .. });
        held && written
    });
    // It goes by itself; then the other process takes the key, and reads what `a` wrote.
    assert!(lock_files_after_idle_hold(&dir).is_empty());
    b.lock(&[&k]).unwrap();
    assert_eq!(b.get(&k).unwrap().unwrap().value, b"two");
    b.unlock(&[&k]).unwrap();
    // A blocking lock of `b` waits for a hold of `a` to end.
    assert!(lock_files_after_idle_hold(&dir).is_empty());
    a.lock(&[&k]).unwrap();
    a.unlock(&[&k]).unwrap();
    b.lock(&[&k]).unwrap();
    b.unlock(&[&k]).unwrap();
    // A close removes a kept lock file at once.
    assert!(lock_files_after_idle_hold(&dir).is_empty());
    a.lock(&[&k]).unwrap();
    a.unlock(&[&k]).unwrap();
    a.stop_background();
    assert!(lock_files(&dir).is_empty(), "a close left {:?}", lock_files(&dir));
}

/// The background release of a kept key lock file takes it out of the
/// kept map and removes the file as one step: a `try_lock` of this process
/// in between used to find neither the kept entry nor a free file (the file
/// named this live process), and answered busy with nobody holding the key.
#[test]
fn a_try_lock_during_the_release_of_a_kept_lock_file_is_not_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, pa, _b, _) = two(tmp.path());
    let k = key("k");
    // In the removal: another thread of this process tries the key, and
    // this waits up to 300 ms for its answer (it waits for the release to
    // end, or answers at once). The hook is set before the lock file is made:
    // its idle hold is 2 ms, which a loaded machine can let pass before the
    // next line (the test used to check the file was still kept there).
    let (tx, rx) = std::sync::mpsc::channel();
    let rx = Arc::new(Mutex::new(rx));
    let within = Arc::new(Mutex::new(None));
    let (a2, k2, rx2, within2) = (a.clone(), k.clone(), rx.clone(), within.clone());
    pa.at_key_lock_removal.set(move || {
        std::thread::spawn(move || tx.send(a2.try_lock(&[&k2]).unwrap()).unwrap());
        *within2.lock().unwrap() = Some(rx2.lock().unwrap().recv_timeout(std::time::Duration::from_millis(300)).ok());
    });
    a.lock(&[&k]).unwrap();
    a.unlock(&[&k]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while within.lock().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the kept lock file was never released");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_ne!(within.lock().unwrap().unwrap(), Some(false), "busy while its lock file was being released");
    // It waited for the release, then took the key.
    assert!(rx.lock().unwrap().recv().unwrap(), "the try_lock after the release");
    a.unlock(&[&k]).unwrap();
    assert!(lock_files_after_idle_hold(&tmp.path().join("s")).is_empty());
}

#[test]
fn a_key_locked_again_and_again_gets_a_fresh_lock_file_after_the_longest_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, pa, _b, _) = two(tmp.path());
    let k = key("k");
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(200) {
        a.lock(&[&k]).unwrap();
        a.unlock(&[&k]).unwrap();
    }
    let made = pa.key_locks.load(Ordering::SeqCst);
    // The longest hold is 20 ms (LOCK_HOLD): about ten files in 200 ms, never one.
    assert!((2..=200).contains(&made), "{made} lock files in 200 ms");
    assert!(lock_files_after_idle_hold(&tmp.path().join("s")).is_empty());
}

/// A locked writer's pass through the log lock (docs/WAL.md §4.1) does not
/// wait for a frame's `fdatasync`: that frame and its hint are written and
/// its writer holds the log's lock file, so every decision before the pass
/// is visible to the reads after it (the JavaScript thread, which takes
/// key locks, used to wait for the disk here).
#[test]
fn a_locked_writer_passes_a_frame_that_waits_for_its_fdatasync() {
    let tmp = tempfile::tempdir().unwrap();
    let pa = Hooked(Probe::default());
    let durable = Options { sync_blob: true, ..options(Some(true)) };
    let a = Arc::new(FileStore::open_with(Arc::new(pa.clone()), tmp.path(), durable).unwrap());
    let (meta, at) = support::fixtures::slotted_meta();
    let (k1, k2) = (key("one"), key("two"));
    pa.shut_sync();
    let (tx, rx) = std::sync::mpsc::channel();
    a.replace_then(&replace(&k1, &meta, at, b"x", None), Box::new(move |r| tx.send(r.unwrap()).unwrap()));
    support::fixtures::wait_until(10, "the frame to wait in its fdatasync", || pa.entered.load(Ordering::SeqCst));
    let (a2, k2b) = (Arc::clone(&a), k2.clone());
    let (ltx, lrx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        a2.lock(&[&k2b]).unwrap();
        ltx.send(()).unwrap();
    });
    let passed = lrx.recv_timeout(std::time::Duration::from_secs(5)).is_ok();
    let seen = a.get(&k1).unwrap().map(|e| e.value);
    pa.open();
    assert!(passed, "the lock waited for the frame's fdatasync");
    assert_eq!(seen.as_deref(), Some(&b"x"[..]), "the frame's record is read after the pass");
    assert!(matches!(rx.recv().unwrap(), Replaced::Written { revision: 1 }));
    if !passed {
        lrx.recv().unwrap();
    }
    a.unlock(&[&k2]).unwrap();
}
