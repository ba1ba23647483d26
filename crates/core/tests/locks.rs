//! The cross-process key locks (FORMAT.md §6): lock files, records, takeover of a dead holder's lock.

mod support;

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use konserve_core::filelock::*;
use konserve_core::vfs::Vfs;
use support::passthrough::{Hooked, VfsHooks};

#[test]
fn records_round_trip_and_partial_ones_are_refused() {
    let who = Identity { boot_id: Some("b-1".into()), pid_ns: Some(4026531836), pid: 42, start_ticks: Some(1234), host: Some("h".into()) };
    let rec = Record::fresh(who.clone());
    assert_eq!(rec.token.len(), 32);
    let line = rec.line();
    assert_eq!(Record::parse(line.as_bytes()), Some(rec.clone()));
    for cut in 0..line.len() {
        assert_eq!(Record::parse(&line.as_bytes()[..cut]), None, "a partial record at {cut}");
    }
    let unknown = Record::fresh(Identity::unknown(7));
    assert!(unknown.line().ends_with(" - - 7 - -\n"));
    assert_eq!(Record::parse(unknown.line().as_bytes()).unwrap().who, Identity::unknown(7));
    assert_ne!(Record::fresh(who.clone()).token, rec.token);
}

#[test]
fn proc_stat_is_parsed_after_the_last_paren() {
    let line = "123 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 98765 20 21\n";
    assert_eq!(parse_proc_stat(line), Some(('S', 98765)));
    let me = std::fs::read_to_string("/proc/self/stat").unwrap();
    assert!(parse_proc_stat(&me).is_some());
}

#[test]
fn lock_names() {
    let hex = "0123456789abcdef0123456789abcdef";
    assert_eq!(parse_lock_name(&lock_name(hex)), Some(LockFileKind::Lock(hex)));
    assert_eq!(parse_lock_name(&format!(".{hex}.12.0.lkt")), Some(LockFileKind::Temp(hex)));
    assert_eq!(parse_lock_name(&format!(".{hex}.{hex}.3.brk")), Some(LockFileKind::Marker(hex, hex)));
    assert_eq!(parse_lock_name(&format!(".{hex}.i1f.0.brk")), Some(LockFileKind::Marker(hex, "i1f")));
    assert_eq!(parse_lock_name(".konserve.lock"), None);
    assert_eq!(parse_lock_name(&format!("{hex}.ksv")), None);
    assert_eq!(parse_lock_name(&format!(".{hex}.x.0.brk")), None);
}

// ---- the protocol on the simulated file system, with processes ----

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use support::sim::SimFs;

const HEX: &str = "00112233445566778899aabbccddeeff";
const DIR: &str = "/s";

fn disk() -> SimFs {
    let fs = SimFs::new(7);
    fs.create_dir_all(Path::new(DIR)).unwrap();
    fs
}

fn locker(fs: &SimFs) -> Locker<'_> {
    Locker { vfs: fs, dir: Path::new(DIR), lease: DEFAULT_LEASE }
}

fn names(fs: &SimFs) -> Vec<String> {
    fs.read_dir(Path::new(DIR)).unwrap().into_iter().map(|n| n.into_string().unwrap()).collect()
}

fn taken(a: io::Result<Attempt>) -> Record {
    match a {
        Ok(Attempt::Taken(r)) => r,
        other => panic!("expected the lock, got {other:?}"),
    }
}

/// After the sweep (once leftovers are old enough) and a release by a
/// live process, nothing of the lock protocol is left.
fn assert_clean_after(fs: &SimFs, rec: &Record, who: &SimFs) {
    locker(who).release(HEX, &rec.token).unwrap();
    fs.advance(PARTIAL_STALE.as_millis() as u64);
    let all: Vec<std::ffi::OsString> = fs.read_dir(Path::new(DIR)).unwrap();
    locker(who).sweep(&all);
    assert_eq!(names(fs), Vec::<String>::new());
}

#[test]
fn acquire_excludes_and_release_removes_only_our_lock() {
    let fs = disk();
    let (a, b) = (fs.as_process(100), fs.as_process(200));
    let rec = taken(locker(&a).try_acquire(HEX));
    assert_eq!(names(&fs), vec![lock_name(HEX)], "no temp file is left");
    assert!(matches!(locker(&b).try_acquire(HEX).unwrap(), Attempt::Busy(Some(r)) if r.token == rec.token));
    // Someone else's token cannot release it.
    assert!(locker(&b).release(HEX, "0123456789abcdef0123456789abcdef").is_err());
    assert_eq!(names(&fs), vec![lock_name(HEX)]);
    locker(&a).release(HEX, &rec.token).unwrap();
    let rec = taken(locker(&b).try_acquire(HEX));
    assert_clean_after(&fs, &rec, &b);
}

#[test]
fn a_dead_holder_is_taken_over_at_once_and_pid_reuse_does_not_fool_it() {
    let fs = disk();
    let (a, b, c) = (fs.as_process(100), fs.as_process(200), fs.as_process(300));
    taken(locker(&a).try_acquire(HEX));
    fs.kill(100);
    let rec = taken(locker(&b).try_acquire(HEX));
    assert!(matches!(locker(&c).try_acquire(HEX).unwrap(), Attempt::Busy(_)));
    // B dies, and a new process gets its pid: still dead (another start time).
    fs.kill(200);
    fs.respawn(200);
    let rec2 = taken(locker(&c).try_acquire(HEX));
    assert_ne!(rec.token, rec2.token);
    assert_clean_after(&fs, &rec2, &c);
}

#[test]
fn a_holder_from_another_boot_is_judged_by_the_lease() {
    let fs = disk();
    // A record of another machine (or another boot of this one).
    let other = Record::fresh(Identity {
        boot_id: Some("elsewhere".into()),
        pid_ns: Some(1),
        pid: 100,
        start_ticks: Some(1),
        host: Some("far".into()),
    });
    let mut f = fs.create_new(&Path::new(DIR).join(lock_name(HEX))).unwrap();
    f.write_all(other.line().as_bytes()).unwrap();
    drop(f);
    let b = fs.as_process(200);
    fs.advance(DEFAULT_LEASE.as_millis() as u64 - 1);
    assert!(matches!(locker(&b).try_acquire(HEX).unwrap(), Attempt::Busy(Some(r)) if r == other), "inside the lease");
    fs.advance(1);
    let rec = taken(locker(&b).try_acquire(HEX));
    assert_clean_after(&fs, &rec, &b);
}

/// A waiter must never take a live holder's lock however long it holds
/// it, when its life can be checked.
#[test]
fn a_live_holder_keeps_its_lock_past_the_lease() {
    let fs = disk();
    let (a, b) = (fs.as_process(100), fs.as_process(200));
    let rec = taken(locker(&a).try_acquire(HEX));
    fs.advance(10 * DEFAULT_LEASE.as_millis() as u64);
    assert!(matches!(locker(&b).try_acquire(HEX).unwrap(), Attempt::Busy(_)));
    assert_clean_after(&fs, &rec, &a);
}

/// Kills the acting process at every step of `act`, then checks that
/// another process gets the lock at once (or, if the dead process left an
/// empty lock file or marker, between its create and its write, once that is
/// PARTIAL_STALE old), and that nothing is left.
fn kill_at_every_step(setup: impl Fn(&SimFs), act: impl Fn(&SimFs)) -> u64 {
    for n in 0.. {
        let fs = disk();
        setup(&fs);
        let a = fs.as_process(500);
        fs.kill_after(500, n);
        act(&a);
        if !fs.was_killed(500) {
            return n;
        }
        let b = fs.as_process(600);
        let first = locker(&b).try_acquire(HEX).unwrap();
        let rec = match first {
            Attempt::Taken(rec) => rec,
            Attempt::Busy(_) => {
                let empty = names(&fs).iter().any(|n| fs.read(&Path::new(DIR).join(n)).unwrap().is_empty());
                assert!(empty, "step {n}: busy without an empty file: {:?}", names(&fs));
                fs.advance(PARTIAL_STALE.as_millis() as u64);
                taken(locker(&b).try_acquire(HEX))
            }
        };
        assert_clean_after(&fs, &rec, &b);
    }
    unreachable!()
}

#[test]
fn a_crash_at_every_step_of_acquire_takeover_and_release_wedges_nothing() {
    // Acquire of a free lock.
    let steps = kill_at_every_step(
        |_| {},
        |a| {
            let _ = locker(a).try_acquire(HEX);
        },
    );
    assert!(steps >= 2, "create, write: {steps}");
    // Takeover of a dead holder's lock (and a dead taker's marker).
    let steps = kill_at_every_step(
        |fs| {
            taken(locker(&fs.as_process(100)).try_acquire(HEX));
            fs.kill(100);
        },
        |a| {
            let _ = locker(a).try_acquire(HEX);
        },
    );
    assert!(steps >= 7, "the takeover has its steps: {steps}");
    // Release.
    let steps = kill_at_every_step(
        |_| {},
        |a| {
            if let Ok(Attempt::Taken(rec)) = locker(a).try_acquire(HEX) {
                let _ = locker(a).release(HEX, &rec.token);
            }
        },
    );
    assert!(steps >= 3, "create, write, unlink: {steps}");
}

/// A lone I/O error at any step of acquire, takeover or release fails
/// that call and leaves no lock behind: the same process then gets the
/// lock at once.
#[test]
fn a_lone_io_error_at_every_step_leaves_no_lock_behind() {
    for dead_holder in [false, true] {
        for n in 0.. {
            let fs = disk();
            if dead_holder {
                taken(locker(&fs.as_process(100)).try_acquire(HEX));
                fs.kill(100);
            }
            let a = fs.as_process(500);
            fs.fail_once(n);
            let r = locker(&a).try_acquire(HEX).and_then(|att| match att {
                Attempt::Taken(rec) => locker(&a).release(HEX, &rec.token),
                Attempt::Busy(h) => panic!("busy: {h:?}"),
            });
            let call = fs.failed_call();
            fs.fail_once(u64::MAX / 2); // disarmed: the checks below must not hit it
            let Some(call) = call else { break };
            // Only the removal of garbage (a temp file after a lost race,
            // a takeover marker after the takeover) may fail unreported:
            // the open sweep removes what it leaves.
            let garbage = names(&fs).iter().any(|n| n.ends_with(".brk") || n.ends_with(".lkt"));
            assert!(r.is_err() || (call == "remove_file" && garbage), "step {n} ({call}) failed but the call succeeded");
            // The same process (or another) gets the lock at once.
            let rec = taken(locker(&a).try_acquire(HEX));
            assert_clean_after(&fs, &rec, &a);
        }
    }
}

/// An acquire is the exclusive create of the lock file and one write; a
/// release is one unlink: no link(2), no temp file (issues 17 and 18).
#[test]
fn an_acquire_and_release_make_no_link_and_no_temp_file() {
    let fs = disk();
    // A link would fail the acquire: none may be made.
    fs.always_fail("hard_link", libc::EIO);
    let a = fs.as_process(100);
    let before = fs.steps();
    let rec = taken(locker(&a).try_acquire(HEX));
    assert_eq!(fs.steps() - before, 2, "create and write");
    assert_eq!(names(&fs), vec![lock_name(HEX)]);
    locker(&a).release(HEX, &rec.token).unwrap();
    assert_eq!(fs.steps() - before, 3, "create, write, unlink");
    assert_eq!(names(&fs), Vec::<String>::new());
}

/// A lock file an older build left (or one created whole by link, as older
/// builds do) still excludes, and its leftover `.lkt` temp is swept.
#[test]
fn an_older_builds_lock_and_temp_files_are_honoured_and_swept() {
    let fs = disk();
    let a = fs.as_process(100);
    let rec = Record::fresh(a.identity());
    let lock = Path::new(DIR).join(lock_name(HEX));
    let temp = Path::new(DIR).join(format!(".{HEX}.100.0.lkt"));
    let mut f = a.create_new(&temp).unwrap();
    f.write_all(rec.line().as_bytes()).unwrap();
    drop(f);
    a.hard_link(&temp, &lock).unwrap();
    let b = fs.as_process(200);
    assert!(matches!(locker(&b).try_acquire(HEX).unwrap(), Attempt::Busy(Some(r)) if r.token == rec.token));
    locker(&a).release(HEX, &rec.token).unwrap();
    let rec = taken(locker(&b).try_acquire(HEX));
    assert_clean_after(&fs, &rec, &b); // sweeps the old temp
}

/// The cost of the exclusive create first: a process killed between the
/// create and the write leaves an empty lock file, which blocks the key until
/// it is PARTIAL_STALE old, then is taken over.
#[test]
fn an_empty_lock_file_of_a_dead_writer_is_taken_over_after_partial_stale() {
    let fs = disk();
    let b = fs.as_process(200);
    let c = fs.as_process(300);
    fs.kill_after(300, 1); // the create succeeds; it dies at the write
    assert!(locker(&c).try_acquire(HEX).is_err());
    assert_eq!(fs.read(&Path::new(DIR).join(lock_name(HEX))).unwrap(), b"");
    assert!(matches!(locker(&b).try_acquire(HEX).unwrap(), Attempt::Busy(None)), "young: being written");
    fs.advance(PARTIAL_STALE.as_millis() as u64 - 1);
    assert!(matches!(locker(&b).try_acquire(HEX).unwrap(), Attempt::Busy(None)), "still young");
    fs.advance(1);
    let rec = taken(locker(&b).try_acquire(HEX));
    assert_clean_after(&fs, &rec, &b);
}

/// A lone error from the write of the record leaves no lock file and fails
/// the acquire; the next acquire gets the lock at once.
#[test]
fn an_error_from_the_write_of_the_record_leaves_no_lock_file() {
    for errno in [libc::ENOSPC, libc::EIO] {
        let fs = disk();
        let a = fs.as_process(100);
        fs.fail_once_with(1, errno);
        let e = locker(&a).try_acquire(HEX).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(errno));
        assert_eq!(fs.failed_call(), Some("write_all"));
        assert_eq!(names(&fs), Vec::<String>::new());
        let rec = taken(locker(&a).try_acquire(HEX));
        assert_clean_after(&fs, &rec, &a);
    }
}

/// Threads acting as processes race for one lock while some of them die
/// at random steps (holding it or in the middle of a takeover): never two
/// live holders, and every lock is eventually taken again.
#[test]
fn racing_takers_with_deaths_never_hold_together() {
    for seed in 0..6u64 {
        let fs = disk();
        let holder: Arc<Mutex<Option<u32>>> = Arc::default();
        let done = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6u32)
            .map(|t| {
                let (fs, holder, done) = (fs.clone(), Arc::clone(&holder), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut rng = seed.wrapping_mul(31).wrapping_add(t as u64 * 7919) | 1;
                    let mut next = || {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng
                    };
                    for round in 0..40u32 {
                        let pid = 1000 + t * 100 + round;
                        let me = fs.as_process(pid);
                        // A third of the processes die at a random step.
                        if next() % 3 == 0 {
                            fs.kill_after(pid, next() % 12);
                        }
                        let mut spins = 0u64;
                        loop {
                            match locker(&me).try_acquire(HEX) {
                                Ok(Attempt::Taken(rec)) => {
                                    {
                                        let mut h = holder.lock().unwrap();
                                        if let Some(other) = *h {
                                            assert!(fs.process_start(other).unwrap().is_none(), "{pid} took the lock of live {other}");
                                        }
                                        *h = Some(pid);
                                    }
                                    std::thread::yield_now();
                                    *holder.lock().unwrap() = None;
                                    if locker(&me).release(HEX, &rec.token).is_err() {
                                        assert!(fs.was_killed(pid));
                                        *holder.lock().unwrap() = Some(pid);
                                    }
                                    done.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                                Ok(Attempt::Busy(h)) => {
                                    spins += 1;
                                    // An empty lock file or marker (its writer may have
                                    // died between its create and its write) blocks until
                                    // PARTIAL_STALE old: let that time pass. A live writer
                                    // then sees its write as slow and reads back.
                                    if spins.is_multiple_of(5_000) {
                                        fs.advance(PARTIAL_STALE.as_millis() as u64);
                                    }
                                    if spins >= 200_000 {
                                        let lock = Path::new(DIR).join(lock_name(HEX));
                                        panic!(
                                            "{pid} waits forever for {h:?}: {:?} {:?} {:?}",
                                            names(&fs),
                                            fs.read(&lock).map(|b| String::from_utf8_lossy(&b).to_string()),
                                            locker(&me).inspect(&lock)
                                        );
                                    }
                                    std::thread::yield_now()
                                }
                                Err(_) if fs.was_killed(pid) => break,
                                Err(e) => panic!("{pid}: {e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(done.load(Ordering::Relaxed) > 0);
        // Whatever the dead left, a new process gets the lock at once; only
        // a lock file or marker left empty (its writer died between its
        // create and its write) waits until it is PARTIAL_STALE old.
        let partial = names(&fs).iter().any(|n| fs.read(&Path::new(DIR).join(n)).is_ok_and(|b| Record::parse(&b).is_none()));
        if partial {
            fs.advance(PARTIAL_STALE.as_millis() as u64);
        }
        let last = fs.as_process(99_999);
        let rec = taken(locker(&last).try_acquire(HEX));
        assert_clean_after(&fs, &rec, &last);
    }
}

#[test]
fn a_store_waits_for_a_live_holder_at_most_the_lock_timeout_and_names_it() {
    let fs = disk();
    let opts = konserve_core::store::Options { lock_timeout: Duration::from_millis(50), ..Default::default() };
    let store = konserve_core::store::FileStore::open_with(Arc::new(fs.clone()), Path::new(DIR), opts).unwrap();
    let k = konserve_core::format::key::encode(&konserve_core::format::key::Key::str("k"));
    let hex = format!("{:032x}", konserve_core::keyhash::key_hash(&k));
    let other = fs.as_process(4242);
    let rec = match locker(&other).try_acquire(&hex).unwrap() {
        Attempt::Taken(r) => r,
        a => panic!("{a:?}"),
    };
    let e = store.lock(&[&k]).unwrap_err();
    assert_eq!(e.code(), konserve_core::error::ErrorCode::LockTimeout);
    assert!(e.to_string().contains("process 4242 on host sim"), "{e}");
    assert!(e.file().unwrap().ends_with(lock_name(&hex)));
    assert!(!store.try_lock(&[&k]).unwrap());
    assert_eq!(
        store.try_lock_waited(&[&k], Some(Duration::from_millis(60))).unwrap_err().code(),
        konserve_core::error::ErrorCode::LockTimeout
    );
    // The holder dies: the store takes the lock at once, and leaves nothing after unlock.
    fs.kill(4242);
    store.lock(&[&k]).unwrap();
    store.unlock(&[&k]).unwrap();
    assert!(names(&fs).is_empty(), "{:?}", names(&fs));
    let _ = rec;
}

/// The simulated disk seen by process 100, whose create of the lock file is
/// followed by a pause of PARTIAL_STALE (a slow write) during which process
/// 200 takes the still empty file over.
struct SlowWriter {
    inner: SimFs,
    taker: SimFs,
    taken: Mutex<Option<Record>>,
}

impl VfsHooks for SlowWriter {
    fn inner(&self) -> &dyn Vfs {
        &self.inner
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn konserve_core::vfs::VfsFile>> {
        let f = self.inner.create_new(path)?;
        let mut got = self.taken.lock().unwrap();
        if path.extension().is_some_and(|e| e == "lock") && got.is_none() {
            self.inner.advance(PARTIAL_STALE.as_millis() as u64);
            *got = Some(taken(locker(&self.taker).try_acquire(HEX)));
        }
        Ok(f)
    }
}

/// The read-back guards a slow write: when the create and the write took
/// PARTIAL_STALE (by the clock file ages use), another process may have taken
/// the empty file over meanwhile, and the writer must see the lock as busy,
/// not take it too.
#[test]
fn a_slow_write_of_the_record_reads_back_and_yields_to_a_taker() {
    let fs = disk();
    let slow = Hooked(SlowWriter { inner: fs.as_process(100), taker: fs.as_process(200), taken: Mutex::new(None) });
    let a = Locker { vfs: &slow, dir: Path::new(DIR), lease: DEFAULT_LEASE };
    let att = a.try_acquire(HEX).unwrap();
    let b_rec = slow.taken.lock().unwrap().clone().expect("the taker took the empty file");
    assert!(matches!(att, Attempt::Busy(Some(r)) if r.token == b_rec.token), "the slow writer yields");
    let b = fs.as_process(200);
    assert_clean_after(&fs, &b_rec, &b);
}
