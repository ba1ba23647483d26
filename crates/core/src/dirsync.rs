//! Group commit for a directory's fsync: writers of one store directory that
//! renamed (or removed) a file at about the same time share one directory
//! fsync instead of issuing one each.
//!
//! The rule ([`DirSync::sync`]): a caller returns only once a directory fsync
//! that *started after the caller arrived* (so after its rename) has
//! returned. If none is running, the caller runs one itself; if one is
//! running, it may have started before the caller's rename, so the caller
//! waits for it to end and then joins the next one, which the first of its
//! waiters to wake runs for all of them. One fsync covers every change made
//! before it started. Each caller gets the result of the fsync that covers
//! it: an error reaches every caller of that fsync (and each poisons the
//! store as a lone failed fsync does, `StoreDir::sync_dir`).

use std::io;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// The directory fsyncs of one store directory (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct DirSync {
    state: Mutex<State>,
    ended: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The number of fsyncs started; the running one (if any) is this one.
    started: u64,
    /// The number of fsyncs that ended (`started`, or `started - 1` while one runs).
    ended: u64,
    /// Callers of the running fsync, and of the next one (not started yet).
    callers_running: usize,
    callers_next: usize,
    /// The fsyncs that failed, by number, with their error, kept until each
    /// of their callers has read it (a failure poisons the store: few).
    failed: Vec<Failure>,
}

impl State {
    fn running(&self) -> bool {
        self.started != self.ended
    }
}

#[derive(Debug)]
struct Failure {
    number: u64,
    /// Callers of this fsync that have not read its error yet.
    readers: usize,
    raw_os_error: Option<i32>,
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    /// The error again, for one of its callers (an errno stays an errno, so
    /// the store classifies it as it would the original).
    fn error(&self) -> io::Error {
        match self.raw_os_error {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::new(self.kind, self.message.clone()),
        }
    }
}

impl DirSync {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once a directory fsync (`fsync`, run by this caller or by
    /// another one) that started after this call began has returned, with
    /// its result. `fsync` is run at most once, and not at all when another
    /// caller's fsync covers this one.
    pub(crate) fn sync(&self, fsync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut state = self.lock();
        // The first fsync to start from now on covers this caller.
        let mine = state.started + 1;
        state.callers_next += 1;
        loop {
            if state.ended >= mine {
                return Self::result_of(&mut state, mine);
            }
            if !state.running() {
                // Nothing runs, so `mine` has not started: this caller leads it.
                debug_assert_eq!(state.started + 1, mine);
                state.started = mine;
                state.callers_running = std::mem::take(&mut state.callers_next);
                drop(state);
                // The leader gets its own error as it came; its other callers a copy.
                let end = End { sync: self, number: mine };
                let result = fsync();
                end.finish(result.as_ref().err());
                return result;
            }
            state = self.ended.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The result of fsync `number` (ended) for one of its callers.
    fn result_of(state: &mut State, number: u64) -> io::Result<()> {
        let Some(i) = state.failed.iter().position(|f| f.number == number) else { return Ok(()) };
        let err = state.failed[i].error();
        state.failed[i].readers -= 1;
        if state.failed[i].readers == 0 {
            state.failed.swap_remove(i);
        }
        Err(err)
    }
}

/// The end of one fsync: records its result for the other callers it
/// covered and wakes every waiter, also if the fsync panicked (then as a
/// failure: no caller takes it for a success).
struct End<'a> {
    sync: &'a DirSync,
    number: u64,
}

impl End<'_> {
    fn finish(self, error: Option<&io::Error>) {
        let failure = error.map(|e| (e.raw_os_error(), e.kind(), e.to_string()));
        self.record(failure);
        std::mem::forget(self);
    }

    fn record(&self, failure: Option<(Option<i32>, io::ErrorKind, String)>) {
        let mut state = self.sync.lock();
        // The leader has its result already; the others read it.
        let readers = state.callers_running - 1;
        if let Some((raw_os_error, kind, message)) = failure.filter(|_| readers > 0) {
            state.failed.push(Failure { number: self.number, readers, raw_os_error, kind, message });
        }
        state.ended = self.number;
        state.callers_running = 0;
        drop(state);
        self.sync.ended.notify_all();
    }
}

impl Drop for End<'_> {
    /// Only reached when the fsync panicked (`finish` forgets `self`).
    fn drop(&mut self) {
        self.record(Some((None, io::ErrorKind::Other, "a directory fsync panicked".to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A gate a test fsync waits at until the test opens it.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        cv: Condvar,
    }

    impl Gate {
        fn wait(&self) {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.cv.wait(open).unwrap();
            }
        }
        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    /// Waits (without sleeping) until `n` callers wait for the next fsync.
    fn until_waiting(ds: &DirSync, n: usize) {
        while ds.lock().callers_next < n {
            std::thread::yield_now();
        }
    }

    /// Waits until fsync `number` has started.
    fn until_started(ds: &DirSync, number: u64) {
        while ds.lock().started < number {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_lone_caller_runs_its_own_fsync_each_time() {
        let ds = DirSync::default();
        let count = AtomicUsize::new(0);
        for _ in 0..3 {
            ds.sync(|| {
                count.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(count.load(Ordering::SeqCst), 3, "nothing runs when a caller comes: it fsyncs");
    }

    /// Callers that arrive while an fsync runs wait for it to end, then share
    /// ONE fsync (which started after each of them arrived).
    #[test]
    fn callers_during_a_running_fsync_share_the_next_one() {
        let ds = Arc::new(DirSync::default());
        let count = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Gate::default());
        // Every fsync records its number at start; every caller, the number
        // of fsyncs that had ended when it returned.
        let fsync = |ds: Arc<DirSync>, count: Arc<AtomicUsize>, gate: Arc<Gate>| {
            move || {
                ds.sync(|| {
                    if count.fetch_add(1, Ordering::SeqCst) == 0 {
                        gate.wait(); // the first fsync is held until the others wait
                    }
                    Ok(())
                })
                .unwrap();
                count.load(Ordering::SeqCst)
            }
        };
        let first = std::thread::spawn(fsync(Arc::clone(&ds), Arc::clone(&count), Arc::clone(&gate)));
        until_started(&ds, 1);
        let rest: Vec<_> = (0..15).map(|_| std::thread::spawn(fsync(Arc::clone(&ds), Arc::clone(&count), Arc::clone(&gate)))).collect();
        until_waiting(&ds, 15);
        assert_eq!(count.load(Ordering::SeqCst), 1, "the waiters wait: the running fsync may predate their renames");
        gate.open();
        assert_eq!(first.join().unwrap(), 1);
        for r in rest {
            assert_eq!(r.join().unwrap(), 2, "a waiter returns only after the second fsync");
        }
        assert_eq!(count.load(Ordering::SeqCst), 2, "15 waiters shared one fsync");
        let state = ds.lock();
        assert_eq!((state.started, state.ended, state.callers_running, state.callers_next), (2, 2, 0, 0));
    }

    /// A caller that comes while fsync 1 runs is not covered by it, even if
    /// fsync 1 ends first: it returns only after an fsync that started after it came.
    #[test]
    fn a_caller_is_not_acknowledged_by_an_fsync_that_started_before_it() {
        let ds = Arc::new(DirSync::default());
        let gates: Arc<[Gate; 2]> = Arc::new(Default::default());
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let note = |log: &Mutex<Vec<String>>, s: &str| log.lock().unwrap().push(s.to_string());
        let started = Arc::new(AtomicUsize::new(0));
        let run = {
            let (ds, gates, log, started) = (Arc::clone(&ds), Arc::clone(&gates), Arc::clone(&log), Arc::clone(&started));
            move |who: &'static str| {
                let (ds, gates, log, started) = (Arc::clone(&ds), Arc::clone(&gates), Arc::clone(&log), Arc::clone(&started));
                std::thread::spawn(move || {
                    ds.sync(|| {
                        let n = started.fetch_add(1, Ordering::SeqCst);
                        note(&log, &format!("start {n}"));
                        gates[n].wait();
                        note(&log, &format!("end {n}"));
                        Ok(())
                    })
                    .unwrap();
                    note(&log, &format!("{who} acknowledged"));
                })
            }
        };
        let a = run("a");
        until_started(&ds, 1);
        let b = run("b"); // renamed after fsync 0 started
        until_waiting(&ds, 1);
        gates[0].open();
        a.join().unwrap();
        until_started(&ds, 2);
        assert_eq!(*log.lock().unwrap(), ["start 0", "end 0", "a acknowledged", "start 1"], "b waits for the fsync it joined");
        gates[1].open();
        b.join().unwrap();
        assert_eq!(log.lock().unwrap()[4..], ["end 1", "b acknowledged"]);
    }

    /// The error of a shared fsync reaches each of its callers (as the same
    /// errno), and only them; the next caller runs a fresh fsync.
    #[test]
    fn a_failed_fsync_fails_every_caller_it_covered() {
        let ds = Arc::new(DirSync::default());
        let count = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Gate::default());
        let call = |ds: Arc<DirSync>, count: Arc<AtomicUsize>, gate: Arc<Gate>| {
            move || {
                ds.sync(|| match count.fetch_add(1, Ordering::SeqCst) {
                    0 => {
                        gate.wait();
                        Ok(())
                    }
                    _ => Err(io::Error::from_raw_os_error(libc::EIO)),
                })
            }
        };
        let first = std::thread::spawn(call(Arc::clone(&ds), Arc::clone(&count), Arc::clone(&gate)));
        until_started(&ds, 1);
        let rest: Vec<_> = (0..8).map(|_| std::thread::spawn(call(Arc::clone(&ds), Arc::clone(&count), Arc::clone(&gate)))).collect();
        until_waiting(&ds, 8);
        gate.open();
        assert!(first.join().unwrap().is_ok(), "the first fsync succeeded");
        for r in rest {
            let e = r.join().unwrap().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        }
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert!(ds.lock().failed.is_empty(), "every caller read the error");
        // A later caller is not failed by an earlier fsync's error: it runs its own.
        assert_eq!(ds.sync(|| Err(io::Error::other("again"))).unwrap_err().to_string(), "again");
        ds.sync(|| Ok(())).unwrap();
        assert!(ds.lock().failed.is_empty());
    }

    /// An fsync that panics fails the callers it covered (never a success)
    /// and frees the slot.
    #[test]
    fn a_panicking_fsync_fails_its_other_callers() {
        let ds = Arc::new(DirSync::default());
        let gate = Arc::new(Gate::default());
        let first = {
            let (ds, gate) = (Arc::clone(&ds), Arc::clone(&gate));
            std::thread::spawn(move || {
                ds.sync(|| {
                    gate.wait();
                    Ok(())
                })
            })
        };
        until_started(&ds, 1);
        // Two callers share fsync 2; whichever leads it panics in it.
        let covered: Vec<_> = (0..2)
            .map(|_| {
                let ds = Arc::clone(&ds);
                std::thread::spawn(move || ds.sync(|| panic!("boom")))
            })
            .collect();
        until_waiting(&ds, 2);
        gate.open();
        first.join().unwrap().unwrap();
        let results: Vec<_> = covered.into_iter().map(|h| h.join()).collect();
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1, "the leader's thread panicked");
        let e = results.into_iter().find_map(|r| r.ok()).unwrap().unwrap_err();
        assert_eq!(e.to_string(), "a directory fsync panicked");
        ds.sync(|| Ok(())).unwrap();
        assert!(ds.lock().failed.is_empty());
    }
}
