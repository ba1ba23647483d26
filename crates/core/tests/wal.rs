//! The write-ahead log protocol (crates/core/src/wal.rs, docs/WAL.md §4–§6)
//! on the simulated file system: round trips, group commit sharing one
//! `fdatasync`, two instances on one directory (stand-ins for two
//! processes), checkpoint and reset, back-pressure, faults and damage.

mod support;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use konserve_core::format::file::encode_file;
use konserve_core::format::wal::{NewWalRecord, WalOp, FRAMES_AT, WAL_FILE_NAME};
use konserve_core::vfs::{Vfs, VfsFile};
use konserve_core::wal::{record_hash, Wal, WalLookup, WalOptions, WAL_LOCK_HEX};
use konserve_core::{file_name, ErrorCode};
use support::crash::setup;
use support::key;
use support::passthrough::{FileHooks, Hooked, HookedFile, StagingGate, VfsHooks};
use support::sim::SimFs;

const DIR: &str = "/store";

fn options() -> WalOptions {
    WalOptions { grow_step: 64 * 1024, grow_margin: 4096, ..WalOptions::default() }
}

fn open(fs: &SimFs) -> Wal {
    Wal::open(Arc::new(fs.clone()), Path::new(DIR), options()).unwrap()
}

/// The key file of `k` holding `v` (the payload of a put record).
fn payload(k: &str, v: &[u8]) -> Vec<u8> {
    encode_file(&key(k), 0, b"\x80", v).unwrap()
}

fn h(k: &str) -> [u8; 16] {
    record_hash(&key(k))
}

fn put(w: &Wal, k: &str, v: &[u8]) {
    let p = payload(k, v);
    w.append(&[NewWalRecord { op: WalOp::Put, key_hash: h(k), payload: &p }]).unwrap();
}

fn op(w: &Wal, o: WalOp, k: &str) {
    w.append(&[NewWalRecord { op: o, key_hash: h(k), payload: &[] }]).unwrap();
}

fn key_file(fs: &SimFs, k: &str) -> Option<Vec<u8>> {
    fs.read(&Path::new(DIR).join(file_name(&key(k)))).ok()
}

#[test]
fn puts_deletes_and_file_records_round_trip_and_survive_a_reopen() {
    let (fs, _) = setup(1, DIR);
    let w = open(&fs);
    put(&w, "a", b"a1");
    put(&w, "b", b"b1");
    put(&w, "a", b"a2");
    op(&w, WalOp::Delete, "b");
    op(&w, WalOp::File, "c");
    let (pa, pd) = (payload("a", b"a3"), payload("d", b"d1"));
    w.append(&[
        NewWalRecord { op: WalOp::Put, key_hash: h("a"), payload: &pa },
        NewWalRecord { op: WalOp::Put, key_hash: h("d"), payload: &pd },
    ])
    .unwrap();
    let check = |w: &Wal| {
        assert_eq!(w.get(&h("a")).unwrap(), WalLookup::Put(payload("a", b"a3")));
        assert_eq!(w.get(&h("b")).unwrap(), WalLookup::Deleted);
        assert_eq!(w.get(&h("c")).unwrap(), WalLookup::File);
        assert_eq!(w.get(&h("d")).unwrap(), WalLookup::Put(payload("d", b"d1")));
        assert_eq!(w.get(&h("e")).unwrap(), WalLookup::Absent);
    };
    check(&w);
    assert_eq!(w.stats().frames, 6);
    drop(w);
    check(&open(&fs));
    // Nothing was written to key files.
    assert_eq!(key_file(&fs, "a"), None);
}

#[test]
fn malformed_appends_are_refused_before_anything_is_written() {
    let (fs, _) = setup(2, DIR);
    let w = open(&fs);
    let steps = fs.steps();
    assert_eq!(w.append(&[]).unwrap_err().code(), ErrorCode::InvalidArgument);
    let short = [0u8; 10];
    let e = w.append(&[NewWalRecord { op: WalOp::Put, key_hash: h("a"), payload: &short }]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert_eq!(fs.steps(), steps);
}

#[test]
fn a_put_payload_of_another_key_is_refused_on_read() {
    let (fs, _) = setup(3, DIR);
    let w = open(&fs);
    let p = payload("b", b"not a's");
    w.append(&[NewWalRecord { op: WalOp::Put, key_hash: h("a"), payload: &p }]).unwrap();
    let e = w.get(&h("a")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::KeyMismatch);
    assert_eq!(e.file(), Some(Path::new("/store/.konserve.wal")));
    assert!(e.message().contains("offset"), "{e}");
}

// --- Counting the log's fdatasyncs: a Vfs that wraps the simulator ---

/// The simulator, with the log's `sync_data` calls counted, and the first one
/// held at a gate until the test opens it.
#[derive(Clone)]
struct Gated {
    inner: SimFs,
    syncs: Arc<AtomicU64>,
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    entered: Arc<AtomicBool>,
    /// Attempts to create the log's lock file that found it taken.
    busy: Arc<AtomicU64>,
}

impl Gated {
    /// `inner` with the gate shut.
    fn new(inner: SimFs) -> Hooked<Gated> {
        Hooked(Gated {
            inner,
            syncs: Arc::default(),
            gate: Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())),
            entered: Arc::default(),
            busy: Arc::default(),
        })
    }

    fn open_gate(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl FileHooks for Gated {
    fn sync_data(&self, file: &dyn VfsFile) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.entered.store(true, Ordering::SeqCst);
        let (open, cv) = &*self.gate;
        let mut g = open.lock().unwrap();
        while !*g {
            g = cv.wait(g).unwrap();
        }
        drop(g);
        file.sync_data()
    }
}

impl VfsHooks for Gated {
    fn inner(&self) -> &dyn Vfs {
        &self.inner
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let r = self.inner.create_new(path);
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::AlreadyExists) && path == log_lock() {
            self.busy.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let f = self.inner.open_write(path)?;
        if path.file_name() == Some(WAL_FILE_NAME.as_ref()) {
            return Ok(Box::new(HookedFile { inner: f, hooks: self.clone() }));
        }
        Ok(f)
    }
    /// No `syncfs` (the `Vfs` default): a checkpoint fsyncs file by file
    /// (a_syncfs_checkpoint_falls_back_to_fsyncs_where_there_is_no_syncfs).
    fn sync_fs(&self, _path: &Path) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[test]
fn sixty_four_writers_on_threads_share_one_fdatasync() {
    let (fs, _) = setup(4, DIR);
    let gated = Gated::new(fs.clone());
    let w = Arc::new(Wal::open(Arc::new(gated.clone()), Path::new(DIR), options()).unwrap());
    // The first writer commits alone and is held in its fdatasync...
    let first = {
        let w = Arc::clone(&w);
        std::thread::spawn(move || put(&w, "k0", b"v0"))
    };
    while !gated.entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    // ...while 63 more queue up behind it.
    let start = Arc::new(Barrier::new(63));
    let rest: Vec<_> = (1..64)
        .map(|i| {
            let (w, start) = (Arc::clone(&w), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                put(&w, &format!("k{i}"), format!("v{i}").as_bytes())
            })
        })
        .collect();
    while w.queued() < 63 {
        std::thread::yield_now();
    }
    gated.open_gate();
    first.join().unwrap();
    for t in rest {
        t.join().unwrap();
    }
    // One frame and one fdatasync for the first writer, one of each for the other 63.
    assert_eq!(gated.syncs.load(Ordering::SeqCst), 2);
    let s = w.stats();
    assert_eq!((s.frames, s.records, s.data_syncs), (2, 64, 2));
    for i in 0..64 {
        assert_eq!(w.get(&h(&format!("k{i}"))).unwrap(), WalLookup::Put(payload(&format!("k{i}"), format!("v{i}").as_bytes())));
    }
}

/// [`options`] with a hold of the log lock across frames that never ends
/// by its age in a test, however loaded the machine (its default, 20 ms,
/// could pass while a test queues its writers).
fn holding() -> WalOptions {
    let store = konserve_core::Options { lock_lease: std::time::Duration::from_secs(86_400), ..Default::default() };
    WalOptions { store, lock_hold: std::time::Duration::from_secs(3600), ..options() }
}

/// The log lock's file (FORMAT.md §6 protocol).
fn log_lock() -> PathBuf {
    Path::new(DIR).join(format!(".{WAL_LOCK_HEX}.lock"))
}

/// Opens a log on `g` with a first writer of `k0` held in its `fdatasync`
/// (the log lock taken) and `n` more writers queued behind it, each
/// appending `k<i>`; returns the log and the writers' threads (the first one
/// first).
fn held_with_queue(g: &Hooked<Gated>, o: WalOptions, n: usize) -> (Arc<Wal>, Vec<std::thread::JoinHandle<konserve_core::Result<()>>>) {
    let w = Arc::new(Wal::open(Arc::new(g.clone()), Path::new(DIR), o).unwrap());
    let append = |w: &Arc<Wal>, i: usize| {
        let w = Arc::clone(w);
        std::thread::spawn(move || {
            let k = format!("k{i}");
            let p = payload(&k, format!("v{i}").as_bytes());
            w.append(&[NewWalRecord { op: WalOp::Put, key_hash: h(&k), payload: &p }])
        })
    };
    let mut threads = vec![append(&w, 0)];
    while !g.entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    threads.extend((1..=n).map(|i| append(&w, i)));
    while w.queued() < n {
        std::thread::yield_now();
    }
    (w, threads)
}

#[test]
fn a_committer_keeps_the_log_lock_across_frames_while_appends_are_queued_and_releases_it_when_idle() {
    for (hold, takes) in [(holding().lock_hold, 1), (std::time::Duration::ZERO, 2)] {
        let (fs, _) = setup(40, DIR);
        let g = Gated::new(fs.clone());
        let (w, threads) = held_with_queue(&g, WalOptions { lock_hold: hold, ..holding() }, 63);
        assert!(fs.exists(&log_lock()).unwrap());
        g.open_gate();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let s = w.stats();
        assert_eq!((s.frames, s.records), (2, 64));
        // The second frame reused the lock file the first one took (unless
        // lock_hold is zero), and the lock is released once the queue is empty.
        // (Opening created the log under the lock, taken once more.)
        assert_eq!(s.log_locks, 1 + takes, "lock_hold {hold:?}");
        assert!(!w.holds_log_lock());
        assert!(!fs.exists(&log_lock()).unwrap());
        for i in 0..64 {
            assert_eq!(w.get(&h(&format!("k{i}"))).unwrap(), WalLookup::Put(payload(&format!("k{i}"), format!("v{i}").as_bytes())));
        }
    }
}

#[test]
fn another_instance_waiting_for_the_log_lock_gets_it_once_the_holder_is_idle_and_catches_up() {
    let (fs, _) = setup(41, DIR);
    let ga = Gated::new(fs.clone());
    let (a, threads) = held_with_queue(&ga, holding(), 63);
    // Another process appends while a holds the lock with 63 appends queued.
    let gb = Gated::new(fs.as_process(4545));
    gb.open_gate();
    let b = Arc::new(Wal::open(Arc::new(gb.clone()), Path::new(DIR), options()).unwrap());
    let tb = {
        let b = Arc::clone(&b);
        std::thread::spawn(move || put(&b, "other", b"o1"))
    };
    // b has found the lock taken at least once before a goes on.
    while gb.busy.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    ga.open_gate();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    tb.join().unwrap();
    // a kept the lock file for both of its frames (once more to create the
    // log); b got it after them.
    assert_eq!(a.stats().log_locks, 2);
    assert_eq!(b.stats().frames, 1);
    assert!(!fs.exists(&log_lock()).unwrap());
    // Each caught up with the other's frames.
    assert_eq!(a.get(&h("other")).unwrap(), WalLookup::Put(payload("other", b"o1")));
    for i in 0..64 {
        assert_eq!(b.get(&h(&format!("k{i}"))).unwrap(), WalLookup::Put(payload(&format!("k{i}"), format!("v{i}").as_bytes())));
    }
    // And both append again, in turn.
    put(&a, "again", b"a");
    put(&b, "again", b"b");
    assert_eq!(a.get(&h("again")).unwrap(), WalLookup::Put(payload("again", b"b")));
    drop((a, b));
    let w = open(&fs);
    assert_eq!(w.get(&h("other")).unwrap(), WalLookup::Put(payload("other", b"o1")));
    assert_eq!(w.get(&h("k63")).unwrap(), WalLookup::Put(payload("k63", b"v63")));
}

#[test]
fn two_instances_appending_bursts_at_once_never_interleave_frames() {
    let (fs, _) = setup(42, DIR);
    let (a, b) = (Arc::new(open(&fs)), Arc::new(open(&fs.as_process(4646))));
    let start = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let (w, start) = (Arc::clone(if t % 2 == 0 { &a } else { &b }), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for r in 0..20 {
                    put(&w, &format!("t{t}-{r}"), format!("{t}/{r}").as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.records + sb.records, 640);
    assert!(!fs.exists(&log_lock()).unwrap());
    // Both, caught up, end where the other does.
    a.get(&h("x")).unwrap();
    b.get(&h("x")).unwrap();
    let mut a_end = [a.log_bytes(), b.log_bytes()];
    assert_eq!(a_end[0], a_end[1]);
    drop((a, b));
    // A fresh scan reads every frame of both: none was written over another.
    let w = open(&fs);
    for t in 0..32 {
        for r in 0..20 {
            let k = format!("t{t}-{r}");
            assert_eq!(w.get(&h(&k)).unwrap(), WalLookup::Put(payload(&k, format!("{t}/{r}").as_bytes())), "{k}");
        }
    }
    // ...and no more: the frames of both are contiguous, none past them.
    a_end.sort_unstable();
    assert_eq!(w.log_bytes(), a_end[0]);
}

#[test]
fn a_frame_that_fails_under_a_kept_log_lock_releases_it() {
    let (fs, _) = setup(45, DIR);
    let g = Gated::new(fs.clone());
    let (w, mut threads) = held_with_queue(&g, holding(), 8);
    // The first frame's fdatasync succeeds; the next call, the write of the
    // second frame under the lock kept from the first, fails alone.
    fs.fail_once(1);
    g.open_gate();
    threads.remove(0).join().unwrap().unwrap();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap_err().code(), ErrorCode::Io);
    }
    assert_eq!(fs.failed_call(), Some("write_all_at"));
    assert!(!w.holds_log_lock());
    assert!(!fs.exists(&log_lock()).unwrap());
    // Another process gets the lock at once, and this one appends again.
    let other = open(&fs.as_process(4949));
    put(&other, "o", b"o1");
    put(&w, "k1", b"again");
    assert_eq!(other.get(&h("k1")).unwrap(), WalLookup::Put(payload("k1", b"again")));
    assert_eq!(w.get(&h("k0")).unwrap(), WalLookup::Put(payload("k0", b"v0")));
    assert_eq!(w.get(&h("k2")).unwrap(), WalLookup::Absent);
}

#[test]
fn a_process_killed_while_holding_the_log_lock_between_frames_is_taken_over() {
    let (fs, _) = setup(43, DIR);
    let g = Gated::new(fs.as_process(4747));
    let (a, mut threads) = held_with_queue(&g, holding(), 8);
    // a dies at its next mutating call after the first frame's fdatasync:
    // the write of the second frame, made under the lock kept from the first.
    fs.kill_after(4747, 1);
    g.open_gate();
    let first = threads.remove(0);
    first.join().unwrap().unwrap();
    for t in threads {
        assert!(t.join().unwrap().is_err());
    }
    assert!(fs.was_killed(4747));
    assert_eq!(a.stats().frames, 1);
    // Its lock file names the dead process.
    assert!(fs.exists(&log_lock()).unwrap());
    drop(a);
    // Another process takes the lock over, keeps the acknowledged frame and
    // writes over the unacknowledged one.
    let b = open(&fs.as_process(4848));
    put(&b, "b", b"b1");
    assert_eq!(b.get(&h("k0")).unwrap(), WalLookup::Put(payload("k0", b"v0")));
    for i in 1..=8 {
        assert_eq!(b.get(&h(&format!("k{i}"))).unwrap(), WalLookup::Absent);
    }
    drop(b);
    let w = open(&fs);
    assert_eq!(w.get(&h("b")).unwrap(), WalLookup::Put(payload("b", b"b1")));
    assert_eq!(w.get(&h("k0")).unwrap(), WalLookup::Put(payload("k0", b"v0")));
}

#[test]
fn submit_commits_on_a_committer_thread_and_calls_each_completion() {
    let (fs, _) = setup(44, DIR);
    let g = Gated::new(fs.clone());
    let w = Arc::new(Wal::open(Arc::new(g.clone()), Path::new(DIR), options()).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let submit = |i: usize| {
        let k = format!("k{i}");
        let p = payload(&k, format!("v{i}").as_bytes());
        let tx = tx.clone();
        w.submit(&[NewWalRecord { op: WalOp::Put, key_hash: h(&k), payload: &p }], Box::new(move |r| tx.send((i, r)).unwrap()))
    };
    // The first is committed alone on the committer thread, held in its
    // fdatasync; the caller is not blocked, and 63 more queue behind it.
    submit(0).unwrap();
    while !g.entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    for i in 1..64 {
        submit(i).unwrap();
    }
    assert_eq!(w.queued(), 63);
    let short = [0u8; 10];
    let e = w.submit(&[NewWalRecord { op: WalOp::Put, key_hash: h("x"), payload: &short }], Box::new(|_| panic!("called"))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    g.open_gate();
    let mut seen: Vec<usize> = (0..64).map(|_| rx.recv().unwrap()).map(|(i, r)| r.map(|()| i).unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..64).collect::<Vec<_>>());
    let s = w.stats();
    assert_eq!((s.frames, s.records, s.data_syncs), (2, 64, 2));
    assert_eq!(g.syncs.load(Ordering::SeqCst), 2);
    for i in 0..64 {
        assert_eq!(w.get(&h(&format!("k{i}"))).unwrap(), WalLookup::Put(payload(&format!("k{i}"), format!("v{i}").as_bytes())));
    }
    // Blocking appends and submissions share the queue.
    put(&w, "sync", b"s");
    submit(64).unwrap();
    assert!(rx.recv().unwrap().1.is_ok());
    assert!(!w.holds_log_lock());
}

/// A committer that waits for more (`idle_hold`) is woken by the next
/// submission, which is committed at once, not when the wait ends (a
/// submission wakes it only while it waits: none may be missed).
#[test]
fn a_submission_wakes_a_committer_that_waits_for_more() {
    let (fs, _) = setup(45, DIR);
    let long = WalOptions { idle_hold: std::time::Duration::from_secs(30), lock_hold: std::time::Duration::from_secs(60), ..options() };
    let w = Arc::new(Wal::open(Arc::new(fs.clone()), Path::new(DIR), long).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..20 {
        let k = format!("k{i}");
        let p = payload(&k, b"v");
        let tx = tx.clone();
        let t = std::time::Instant::now();
        w.submit(&[NewWalRecord { op: WalOp::Put, key_hash: h(&k), payload: &p }], Box::new(move |r| tx.send(r).unwrap())).unwrap();
        // The committer waits for more up to the longest hold (a quarter of the 30 s lease):
        // a submission it missed would wait that long.
        rx.recv_timeout(std::time::Duration::from_secs(2)).expect("committed while the committer waited for more").unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        std::thread::sleep(std::time::Duration::from_millis(if i % 2 == 0 { 5 } else { 0 }));
    }
    assert_eq!(w.stats().records, 20);
}

#[test]
fn two_instances_see_each_others_acknowledged_appends_on_the_next_get() {
    let (fs, _) = setup(5, DIR);
    let other = fs.as_process(4242);
    let w1 = open(&fs);
    let w2 = open(&other);
    put(&w1, "k", b"one");
    assert_eq!(w2.get(&h("k")).unwrap(), WalLookup::Put(payload("k", b"one")));
    put(&w2, "k", b"two");
    put(&w2, "j", b"j1");
    assert_eq!(w1.get(&h("k")).unwrap(), WalLookup::Put(payload("k", b"two")));
    op(&w1, WalOp::Delete, "j");
    assert_eq!(w2.get(&h("j")).unwrap(), WalLookup::Deleted);
    // A checkpoint and reset by one: the other finds the new generation.
    assert!(w1.checkpoint().unwrap());
    assert_eq!(w1.stats().resets, 1);
    assert_eq!(w2.get(&h("k")).unwrap(), WalLookup::Absent);
    assert_eq!(key_file(&fs, "k"), Some(payload("k", b"two")));
    put(&w2, "k", b"three");
    assert_eq!(w1.get(&h("k")).unwrap(), WalLookup::Put(payload("k", b"three")));
    // Appends interleaved from both, in frames of the new generation.
    for i in 0..10 {
        let w = if i % 2 == 0 { &w1 } else { &w2 };
        put(w, &format!("x{i}"), b"x");
    }
    for i in 0..10 {
        assert_eq!(w1.get(&h(&format!("x{i}"))).unwrap(), WalLookup::Put(payload(&format!("x{i}"), b"x")));
        assert_eq!(w2.get(&h(&format!("x{i}"))).unwrap(), WalLookup::Put(payload(&format!("x{i}"), b"x")));
    }
}

#[test]
fn a_reader_whose_record_offset_was_reused_by_a_reset_catches_up_and_retries() {
    let (fs, _) = setup(6, DIR);
    let (w1, w2) = (open(&fs), open(&fs.as_process(4343)));
    put(&w1, "a", b"a1");
    assert_eq!(w2.get(&h("a")).unwrap(), WalLookup::Put(payload("a", b"a1")));
    // w1 checkpoints, resets and writes another key over the same offset.
    assert!(w1.checkpoint().unwrap());
    put(&w1, "b", b"b1");
    assert_eq!(w2.get(&h("a")).unwrap(), WalLookup::Absent);
    assert_eq!(w2.get(&h("b")).unwrap(), WalLookup::Put(payload("b", b"b1")));
}

#[test]
fn checkpoint_writes_key_files_resets_and_new_appends_follow() {
    let (fs, _) = setup(7, DIR);
    let w = open(&fs);
    put(&w, "gone", b"old");
    assert!(w.checkpoint().unwrap());
    assert_eq!(key_file(&fs, "gone"), Some(payload("gone", b"old")));
    put(&w, "a", b"a1");
    put(&w, "a", b"a2");
    op(&w, WalOp::Delete, "gone");
    op(&w, WalOp::File, "f");
    put(&w, "b", b"b1");
    assert!(w.log_bytes() > 0);
    assert!(w.checkpoint().unwrap());
    let s = w.stats();
    assert_eq!((s.checkpoints, s.resets), (2, 2));
    assert_eq!(w.log_bytes(), 0);
    assert_eq!(key_file(&fs, "a"), Some(payload("a", b"a2")));
    assert_eq!(key_file(&fs, "b"), Some(payload("b", b"b1")));
    assert_eq!(key_file(&fs, "gone"), None);
    assert_eq!(key_file(&fs, "f"), None);
    for k in ["a", "b", "gone", "f"] {
        assert_eq!(w.get(&h(k)).unwrap(), WalLookup::Absent, "{k}");
    }
    // No staging file is left behind.
    assert!(support::crash::staging_files(&fs, Path::new(DIR)).is_empty());
    // A checkpoint of an empty log does nothing.
    let steps = fs.steps();
    assert!(w.checkpoint().unwrap());
    assert_eq!(w.stats().resets, 2);
    put(&w, "a", b"a3");
    assert!(fs.steps() > steps);
    assert_eq!(w.get(&h("a")).unwrap(), WalLookup::Put(payload("a", b"a3")));
    drop(w);
    let w = open(&fs);
    assert_eq!(w.get(&h("a")).unwrap(), WalLookup::Put(payload("a", b"a3")));
    assert_eq!(w.get(&h("b")).unwrap(), WalLookup::Absent);
}

#[test]
fn a_checkpoint_does_not_reset_over_a_frame_appended_after_it_started() {
    let (fs, _) = setup(8, DIR);
    let (w1, w2) = (open(&fs), open(&fs.as_process(4444)));
    put(&w1, "a", b"a1");
    // w2 appends while w1's checkpoint runs: simulated by w2 appending after
    // w1 read its index (w1 catches up again under the log lock before the reset).
    put(&w2, "b", b"b1");
    assert!(w1.checkpoint().unwrap());
    assert_eq!(w1.stats().resets, 1);
    assert_eq!(key_file(&fs, "b"), Some(payload("b", b"b1")));
    // Now a true race: a checkpoint that finds a newer frame than its S does not reset.
    put(&w1, "c", b"c1");
    let steps_before = fs.steps();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Runs interleaved at the sim's granularity; whatever the order,
            // every key reads its newest value afterwards.
            w1.checkpoint().unwrap();
        });
        s.spawn(|| put(&w2, "c", b"c2"));
    });
    assert!(fs.steps() > steps_before);
    for w in [&w1, &w2] {
        let c = match w.get(&h("c")).unwrap() {
            WalLookup::Put(p) => p,
            WalLookup::Absent => key_file(&fs, "c").unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(c, payload("c", b"c2"));
    }
}

#[test]
fn back_pressure_checkpoints_before_appending_past_the_cap() {
    let (fs, _) = setup(9, DIR);
    let opts = WalOptions { checkpoint_cap: 2048, ..options() };
    let w = Wal::open(Arc::new(fs.clone()), Path::new(DIR), opts).unwrap();
    let value = vec![7u8; 200];
    for i in 0..100 {
        put(&w, &format!("k{i}"), &value);
        assert!(w.log_bytes() <= 2048 + 512, "the log holds {} bytes", w.log_bytes());
    }
    let s = w.stats();
    assert!(s.checkpoints >= 10 && s.resets >= 10, "{s:?}");
    for i in 0..100 {
        let k = format!("k{i}");
        let got = match w.get(&h(&k)).unwrap() {
            WalLookup::Put(p) => p,
            WalLookup::Absent => key_file(&fs, &k).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(got, payload(&k, &value));
    }
}

#[test]
fn the_log_grows_in_steps_and_reads_across_them() {
    let (fs, _) = setup(10, DIR);
    let w = open(&fs);
    let value = vec![1u8; 3000];
    for i in 0..60 {
        put(&w, &format!("k{i}"), &value);
    }
    let len = fs.read(&Path::new(DIR).join(WAL_FILE_NAME)).unwrap().len();
    assert!(len >= 3 * 64 * 1024 && len % (64 * 1024) == 0, "{len}");
    drop(w);
    let w = open(&fs);
    for i in 0..60 {
        assert_eq!(w.get(&h(&format!("k{i}"))).unwrap(), WalLookup::Put(payload(&format!("k{i}"), &value)));
    }
}

#[test]
fn a_failed_fdatasync_poisons_the_log() {
    for errno in [libc::EIO, libc::ENOSPC] {
        let (fs, _) = setup(11, DIR);
        let w = open(&fs);
        put(&w, "a", b"a1");
        fs.always_fail("sync", errno);
        let p = payload("a", b"a2");
        let e = w.append(&[NewWalRecord { op: WalOp::Put, key_hash: h("a"), payload: &p }]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Fsync, "errno {errno}: {e}");
        let steps = fs.steps();
        for _ in 0..2 {
            let e = w.append(&[NewWalRecord { op: WalOp::Put, key_hash: h("b"), payload: &p }]).unwrap_err();
            assert_eq!(e.code(), ErrorCode::StorePoisoned);
            assert_eq!(w.checkpoint().unwrap_err().code(), ErrorCode::StorePoisoned);
        }
        assert_eq!(fs.steps(), steps, "a poisoned log writes nothing");
    }
}

#[test]
fn a_failed_write_rejects_the_batch_and_the_next_append_succeeds() {
    // A lone fault at every step of one append: it fails with the fault's
    // code, nothing of it is acknowledged, and (unless it was the log's
    // fdatasync, which poisons) the next append succeeds and reads back, in
    // this instance, another one, and after a reopen.
    for errno in [libc::EIO, libc::ENOSPC] {
        let total = {
            let (fs, _) = setup(12, DIR);
            let w = open(&fs);
            put(&w, "a", b"a1");
            let s = fs.steps();
            put(&w, "a", b"a2");
            fs.steps() - s
        };
        for n in 0..total {
            let (fs, _) = setup(12, DIR);
            let w = open(&fs);
            put(&w, "a", b"a1");
            fs.fail_once_with(n, errno);
            let p = payload("a", b"a2");
            let r = w.append(&[NewWalRecord { op: WalOp::Put, key_hash: h("a"), payload: &p }]);
            let call = fs.failed_call().expect("the fault struck");
            let Err(e) = r else {
                // Only the lock's release comes after the fdatasync: the
                // frame is durable, so the append is acknowledged.
                assert_eq!(call, "remove_file", "step {n}");
                assert_eq!(w.get(&h("a")).unwrap(), WalLookup::Put(payload("a", b"a2")));
                continue;
            };
            if call == "sync" {
                assert_eq!(e.code(), ErrorCode::Fsync, "{call}");
                continue;
            }
            let want = if errno == libc::ENOSPC { ErrorCode::NoSpace } else { e.code() };
            assert_eq!(e.code(), want, "step {n} ({call}): {e}");
            put(&w, "a", b"a3");
            let other = open(&fs.as_process(4545));
            for w in [&w, &other, &open(&fs)] {
                assert_eq!(w.get(&h("a")).unwrap(), WalLookup::Put(payload("a", b"a3")), "step {n} ({call})");
            }
        }
    }
}

#[test]
fn a_flipped_byte_in_an_acknowledged_frame_before_a_later_one_is_corrupt() {
    let (fs, _) = setup(13, DIR);
    let w = open(&fs);
    put(&w, "a", b"a1");
    put(&w, "b", b"b1");
    drop(w);
    // Flip a byte inside the first frame's payload.
    let path = Path::new(DIR).join(WAL_FILE_NAME);
    let mut f = fs.open_write(&path).unwrap();
    let at = FRAMES_AT as u64 + 40;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    f.sync().unwrap();
    let e = Wal::open(Arc::new(fs.clone()), Path::new(DIR), options()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt);
    assert_eq!(e.file(), Some(path.as_path()));
    assert!(e.message().contains(&format!("at offset {FRAMES_AT}")), "{e}");
}

#[test]
fn a_log_without_a_valid_header_slot_is_corrupt() {
    let (fs, _) = setup(14, DIR);
    drop(open(&fs));
    let path = Path::new(DIR).join(WAL_FILE_NAME);
    let mut f = fs.open_write(&path).unwrap();
    f.write_all_at(&[0xff; 8], 0).unwrap();
    f.write_all_at(&[0xff; 8], 4096).unwrap();
    let e = Wal::open(Arc::new(fs.clone()), Path::new(DIR), options()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt);
    assert_eq!(e.file(), Some(path.as_path()));
}

#[test]
fn a_syncfs_checkpoint_falls_back_to_fsyncs_where_there_is_no_syncfs() {
    // The wrapper has no sync_fs (the Vfs default: Unsupported).
    let (fs, _) = setup(15, DIR);
    let gated = Hooked(Gated {
        inner: fs.clone(),
        syncs: Arc::default(),
        gate: Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new())),
        entered: Arc::default(),
        busy: Arc::default(),
    });
    let opts = WalOptions { checkpoint_syncfs: true, ..options() };
    let w = Wal::open(Arc::new(gated), Path::new(DIR), opts).unwrap();
    put(&w, "a", b"a1");
    op(&w, WalOp::Delete, "b");
    assert!(w.checkpoint().unwrap());
    assert_eq!(w.stats().resets, 1);
    // Durable: a crash right now keeps the key file.
    fs.crash(support::sim::Writeback::None);
    assert_eq!(key_file(&fs, "a"), Some(payload("a", b"a1")));
}

/// A log with a background thread ([`Wal::open_shared`]), opened as `fs`'s process.
fn shared(fs: &SimFs, o: WalOptions) -> Arc<Wal> {
    Wal::open_shared(Arc::new(fs.clone()), Path::new(DIR), o).unwrap()
}

#[test]
fn sequential_appends_from_one_thread_take_the_log_lock_file_once_while_idle_holds_are_kept() {
    let hour = std::time::Duration::from_secs(3600);
    for (idle_hold, takes) in [(hour, 1), (std::time::Duration::ZERO, 20)] {
        let (fs, _) = setup(50, DIR);
        let w = shared(&fs, WalOptions { idle_hold, idle_checkpoint: None, ..holding() });
        for i in 0..20 {
            put(&w, &format!("k{i}"), b"v");
        }
        // (Opening created the log under the lock, taken once more.)
        assert_eq!(w.stats().log_locks, 1 + takes, "idle_hold {idle_hold:?}");
        assert_eq!(w.holds_log_lock(), !idle_hold.is_zero());
        assert_eq!(fs.exists(&log_lock()).unwrap(), !idle_hold.is_zero());
        // Submitted appends reuse it too.
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..5 {
            let p = payload("s", format!("{i}").as_bytes());
            let tx = tx.clone();
            w.submit(&[NewWalRecord { op: WalOp::Put, key_hash: h("s"), payload: &p }], Box::new(move |r| tx.send(r).unwrap())).unwrap();
            rx.recv().unwrap().unwrap();
        }
        assert_eq!(w.stats().log_locks, 1 + takes + if idle_hold.is_zero() { 5 } else { 0 });
        // Dropping the log releases a kept lock file (the last reference
        // may be the committer thread's, for a moment after the completion).
        drop(w);
        support::fixtures::wait_until(10, "the lock file released by the drop", || !fs.exists(&log_lock()).unwrap());
        assert_eq!(open(&fs).get(&h("k19")).unwrap(), WalLookup::Put(payload("k19", b"v")));
    }
}

#[test]
fn an_idle_hold_is_released_by_the_background_thread_and_never_kept_past_lock_hold() {
    // Released once idle_hold has passed with no frame.
    let (fs, _) = setup(51, DIR);
    let w = shared(&fs, WalOptions { idle_hold: std::time::Duration::from_millis(30), idle_checkpoint: None, ..holding() });
    put(&w, "a", b"1");
    support::fixtures::wait_until(10, "the idle hold released", || !w.holds_log_lock());
    assert!(!fs.exists(&log_lock()).unwrap());
    // An idle_hold longer than lock_hold: released lock_hold after it was taken.
    let (fs, _) = setup(52, DIR);
    let o = WalOptions {
        idle_hold: std::time::Duration::from_secs(3600),
        lock_hold: std::time::Duration::from_millis(30),
        idle_checkpoint: None,
        ..holding()
    };
    let w = shared(&fs, o);
    put(&w, "a", b"1");
    support::fixtures::wait_until(10, "the hold ended by lock_hold", || !w.holds_log_lock());
    assert!(!fs.exists(&log_lock()).unwrap());
}

#[test]
fn another_process_waiting_for_the_log_lock_gets_it_once_the_idle_hold_expires() {
    let (fs, _) = setup(53, DIR);
    // The lock kept idle for 300 ms, while a hold may last six hours: only
    // the idle hold's end lets the other process in before its lock timeout.
    let a = shared(&fs, WalOptions { idle_hold: std::time::Duration::from_millis(300), idle_checkpoint: None, ..holding() });
    put(&a, "a", b"1");
    assert!(a.holds_log_lock());
    let gb = Gated::new(fs.as_process(5353));
    gb.open_gate();
    let store = konserve_core::Options { lock_timeout: std::time::Duration::from_secs(30), ..Default::default() };
    let b = Wal::open(Arc::new(gb.clone()), Path::new(DIR), WalOptions { store, ..options() }).unwrap();
    let started = std::time::Instant::now();
    put(&b, "b", b"2");
    let waited = started.elapsed();
    assert!(gb.busy.load(Ordering::SeqCst) > 0, "b found the lock taken");
    assert!(waited < std::time::Duration::from_secs(20), "b waited {waited:?}");
    assert!(!a.holds_log_lock());
    // a catches up with b's frame and appends after it.
    assert_eq!(a.get(&h("b")).unwrap(), WalLookup::Put(payload("b", b"2")));
    put(&a, "a", b"3");
    assert_eq!(b.get(&h("a")).unwrap(), WalLookup::Put(payload("a", b"3")));
}

#[test]
fn the_idle_checkpoint_empties_the_log_without_any_call_unless_it_is_off() {
    let (on_fs, _) = setup(54, DIR);
    let (off_fs, _) = setup(55, DIR);
    let idle = |after| WalOptions { idle_checkpoint: after, ..options() };
    let on = shared(&on_fs, idle(Some(std::time::Duration::from_millis(50))));
    let off = shared(&off_fs, idle(None));
    for w in [&on, &off] {
        put(w, "a", b"a1");
        put(w, "b", b"b1");
        op(w, WalOp::Delete, "b");
        assert!(w.log_bytes() > 0);
    }
    support::fixtures::wait_until(20, "the idle checkpoint", || on.log_bytes() == 0);
    let s = on.stats();
    assert!(s.idle_checkpoints >= 1 && s.resets >= 1 && s.idle_checkpoint_errors == 0, "{s:?}");
    assert_eq!(key_file(&on_fs, "a"), Some(payload("a", b"a1")));
    assert_eq!(key_file(&on_fs, "b"), None);
    // Off: the frames stay (this ran at least as long as the other's wait).
    assert!(off.log_bytes() > 0);
    assert_eq!(off.stats().checkpoints, 0);
    assert_eq!(key_file(&off_fs, "a"), None);
    // Frames found on open (written by a log without the thread) are checkpointed too.
    let plain = open(&on_fs);
    put(&plain, "c", b"c1");
    drop((plain, on));
    let again = shared(&on_fs, idle(Some(std::time::Duration::from_millis(50))));
    assert!(again.log_bytes() > 0);
    support::fixtures::wait_until(20, "the idle checkpoint of frames found on open", || again.log_bytes() == 0);
    assert_eq!(key_file(&on_fs, "c"), Some(payload("c", b"c1")));
}

#[test]
fn a_failed_idle_checkpoint_keeps_the_frames_and_poisons_only_on_a_failed_fsync() {
    let (fs, _) = setup(56, DIR);
    // (No idle hold: its release would be the next mutating call.)
    let o = WalOptions { idle_hold: std::time::Duration::ZERO, idle_checkpoint: Some(std::time::Duration::from_millis(20)), ..options() };
    let w = shared(&fs, o);
    put(&w, "a", b"a1");
    // The next mutating call, the checkpoint's staging file, fails with EIO.
    fs.fail_once(1);
    support::fixtures::wait_until(20, "the failed idle checkpoint", || w.stats().idle_checkpoint_errors >= 1);
    assert!(w.log_bytes() > 0, "the log keeps its frames");
    assert!(w.check_writable().is_ok(), "an I/O error does not poison");
    // The next append arms another, which succeeds.
    put(&w, "b", b"b1");
    support::fixtures::wait_until(20, "the next idle checkpoint", || w.log_bytes() == 0);
    assert_eq!(key_file(&fs, "a"), Some(payload("a", b"a1")));
}

/// A file system whose log, read once at a frame head past the first frame,
/// shows zeros there: what a scan sees when it reads a frame another process
/// is still writing (its later frames then appear before the scan ends).
#[derive(Clone)]
struct MidWrite {
    inner: SimFs,
    fired: Arc<AtomicBool>,
}

impl FileHooks for MidWrite {
    fn read_exact_at(&self, file: &dyn VfsFile, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset > FRAMES_AT as u64 && buf.len() == konserve_core::format::wal::FRAME_HEAD && !self.fired.swap(true, Ordering::SeqCst) {
            buf.fill(0);
            return Ok(());
        }
        file.read_exact_at(buf, offset)
    }
}

impl VfsHooks for MidWrite {
    fn inner(&self) -> &dyn Vfs {
        &self.inner
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let f = self.inner.open_write(path)?;
        if path.file_name() == Some(WAL_FILE_NAME.as_ref()) {
            return Ok(Box::new(HookedFile { inner: f, hooks: self.clone() }));
        }
        Ok(f)
    }
}

#[test]
fn a_scan_that_reads_a_frame_while_it_is_written_reads_on_instead_of_reporting_damage() {
    let (fs, _) = setup(15, DIR);
    let w = open(&fs);
    for (k, v) in [("a", b"a1"), ("b", b"b1"), ("c", b"c1")] {
        put(&w, k, v);
    }
    drop(w);
    let fired = Arc::new(AtomicBool::new(false));
    let vfs = Hooked(MidWrite { inner: fs.clone(), fired: Arc::clone(&fired) });
    // Without reading on, this open failed: "frame 2 ... is damaged: frame 3 ... follows it".
    let r = Wal::open(Arc::new(vfs), Path::new(DIR), options()).unwrap();
    assert!(fired.load(Ordering::SeqCst), "the frame head was read as zeros once");
    for k in ["a", "b", "c"] {
        assert!(matches!(r.get(&h(k)).unwrap(), WalLookup::Put { .. }), "{k} is in the log");
    }
    // Real damage still is: a frame that does not fit on a second read either.
    let path = Path::new(DIR).join(WAL_FILE_NAME);
    let mut f = fs.open_write(&path).unwrap();
    let mut head = [0u8; 4];
    f.read_exact_at(&mut head, FRAMES_AT as u64).unwrap();
    let second = FRAMES_AT as u64 + u32::from_le_bytes(head) as u64;
    f.write_all_at(&[0u8; 8], second).unwrap();
    f.sync().unwrap();
    let e = Wal::open(Arc::new(fs.clone()), Path::new(DIR), options()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt);
    assert!(e.message().contains("follows it"), "{e}");
}

// --- The size-triggered checkpoint (docs/WAL.md §5): on the background thread ---

/// Options with a size-triggered checkpoint past `at` bytes and no idle checkpoint.
fn full_at(at: u64) -> WalOptions {
    WalOptions { checkpoint_at: at, idle_checkpoint: None, ..options() }
}

/// Appends 200-byte puts of new keys from `from` on until the log holds more
/// than `bytes`, each followed by [`Wal::checkpoint_if_full`] as a store's
/// write does; returns the next key number. (At most 1,000: a writer that
/// checkpoints inline would empty the log again and again.)
fn fill(w: &Wal, from: usize, bytes: u64) -> usize {
    let mut i = from;
    while w.log_bytes() <= bytes && i < from + 1000 {
        put(w, &format!("k{i}"), &[7u8; 200]);
        w.checkpoint_if_full().unwrap();
        i += 1;
    }
    i
}

/// Appends 200-byte puts of new keys until the log holds more than `bytes`,
/// with no checkpoint asked for; returns the number of keys.
fn puts_past(w: &Wal, bytes: u64) -> usize {
    let mut i = 0;
    while w.log_bytes() <= bytes {
        put(w, &format!("k{i}"), &[7u8; 200]);
        i += 1;
    }
    i
}

#[test]
fn a_write_that_fills_the_log_wakes_the_background_checkpoint_and_returns_without_waiting_for_it() {
    let (fs, _) = setup(60, DIR);
    let gate = StagingGate::new(Arc::new(fs.clone()));
    let w = Wal::open_shared(Arc::new(gate.clone()), Path::new(DIR), full_at(2048)).unwrap();
    gate.shut();
    // Past the threshold, below the hard limit: the writes return while the
    // checkpoint is held in its first staging file (on a thread, so that a
    // write that waited for it fails the test instead of hanging it).
    let writer = {
        let (w, gate) = (Arc::clone(&w), gate.clone());
        std::thread::spawn(move || {
            let next = fill(&w, 0, 2048);
            support::fixtures::wait_until(20, "the background checkpoint", || gate.held() > 0);
            fill(&w, next, 3 * 2048)
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !writer.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let returned = writer.is_finished();
    let s = w.stats();
    gate.open_gate();
    let next = writer.join().unwrap();
    assert!(returned, "a write waited for the checkpoint");
    assert_eq!((s.checkpoints, s.inline_checkpoints), (0, 0), "{s:?}");
    assert!(s.full_checkpoints >= 1, "{s:?}");
    // The background thread goes on until the log is below the threshold
    // (the appends during its first run were not in it: no reset then).
    support::fixtures::wait_until(20, "the background checkpoints", || w.log_bytes() <= 2048 && w.stats().resets >= 1);
    assert_eq!(w.stats().inline_checkpoints, 0);
    for i in 0..next {
        let k = format!("k{i}");
        let got = match w.get(&h(&k)).unwrap() {
            WalLookup::Put(p) => p,
            WalLookup::Absent => key_file(&fs, &k).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(got, payload(&k, &[7u8; 200]));
    }
    assert_eq!(key_file(&fs, "k0"), Some(payload("k0", &[7u8; 200])));
}

#[test]
fn past_four_times_the_threshold_a_writer_waits_for_the_checkpoint_and_runs_the_rest() {
    let (fs, _) = setup(61, DIR);
    let gate = StagingGate::new(Arc::new(fs.clone()));
    let w = Wal::open_shared(Arc::new(gate.clone()), Path::new(DIR), full_at(2048)).unwrap();
    gate.shut();
    let next = fill(&w, 0, 2048);
    support::fixtures::wait_until(20, "the background checkpoint", || gate.held() > 0);
    let mut i = next;
    while w.log_bytes() <= 4 * 2048 {
        put(&w, &format!("k{i}"), &[7u8; 200]);
        i += 1;
    }
    // The write past the hard limit does not return while the checkpoint is held.
    let writer = {
        let w = Arc::clone(&w);
        std::thread::spawn(move || w.checkpoint_if_full())
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!writer.is_finished(), "the writer past the hard limit waited for the checkpoint");
    gate.open_gate();
    writer.join().unwrap().unwrap();
    let s = w.stats();
    assert!(s.inline_checkpoints == 1 && s.resets >= 1, "{s:?}");
    assert_eq!(w.log_bytes(), 0, "the writer's checkpoint took the rest and reset the log");
}

#[test]
fn without_the_background_thread_the_write_that_fills_the_log_checkpoints_it() {
    let (fs, _) = setup(62, DIR);
    let o = WalOptions { idle_hold: std::time::Duration::ZERO, ..full_at(2048) };
    let w = shared(&fs, o);
    puts_past(&w, 2048);
    w.checkpoint_if_full().unwrap();
    let s = w.stats();
    assert!(s.inline_checkpoints == 1 && s.full_checkpoints == 0 && s.resets == 1, "{s:?}");
    assert_eq!(w.log_bytes(), 0);
}

#[test]
fn a_failed_fsync_of_a_background_checkpoint_poisons_the_log() {
    let (fs, _) = setup(63, DIR);
    let w = shared(&fs, full_at(2048));
    puts_past(&w, 2048);
    // From now on every fsync fails: the checkpoint's staging file's first.
    fs.always_fail("sync", libc::EIO);
    w.checkpoint_if_full().unwrap();
    support::fixtures::wait_until(20, "the failed background checkpoint", || w.stats().full_checkpoint_errors >= 1);
    assert_eq!(w.check_writable().unwrap_err().code(), ErrorCode::StorePoisoned);
    let p = payload("late", b"v");
    let e = w.append(&[NewWalRecord { op: WalOp::Put, key_hash: h("late"), payload: &p }]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorePoisoned);
}
