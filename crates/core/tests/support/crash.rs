//! The crash harness: one model of a crash and one loop over crash points,
//! for every workload (puts and deletes, blobs, logs). A workload runs on a
//! fresh [`SimFs`] behind the public I/O seam; the harness counts its steps
//! (every mutating or syncing call), then runs it again once per step `n`
//! and plan `(writeback, seed)`, with the process dying at step `n`, and
//! hands the crashed file system to the workload's check. The lone-fault
//! loop does the same with one failing call that the process survives.
//!
//! What a crash keeps is the simulator's business (`sim.rs`: data durable
//! only after an fsync, names only after a directory fsync, torn tails and
//! torn overwrites); what must survive it is each workload's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use konserve_core::vfs::Vfs;
use konserve_core::{ErrorCode, FileStore, Options, Result};

pub use super::sim::{SimFs, Writeback};

/// How one op of a workload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It returned `Ok`: its effect must be durable.
    Acked,
    /// It returned this error: its effect may or may not be there.
    Failed(ErrorCode),
    /// It was called after the process died (or the open failed): nothing of
    /// it reached the disk.
    NotRun,
}

/// A durable store on its write-ahead log, with no background thread (idle
/// hold, idle checkpoint): the crash is simulated at every step of the test's
/// own calls, which must be the only ones (a timer's step would make the step
/// count depend on the machine's load).
pub fn wal_options() -> Options {
    let zero = Some(std::time::Duration::ZERO);
    Options {
        sync_blob: true,
        wal: Some(true),
        wal_grow_step: Some(64 * 1024),
        wal_idle_hold: zero,
        wal_idle_checkpoint: zero,
        ..Options::default()
    }
}

/// A fresh file system (crashes drawn from `seed`) on which the store
/// directory `dir` exists durably: the crash window starts at the open.
pub fn setup(seed: u64, dir: &str) -> (SimFs, PathBuf) {
    let (fs, dir) = (SimFs::new(seed), PathBuf::from(dir));
    fs.create_dir_all(&dir).unwrap();
    for d in dir.ancestors() {
        fs.sync_dir(d).unwrap();
    }
    (fs, dir)
}

/// Opens the store in `dir` on `fs`.
pub fn open(fs: &SimFs, dir: &Path, options: &Options) -> Result<FileStore> {
    FileStore::open_with(Arc::new(fs.clone()), dir, options.clone())
}

/// Opens the store after a crash: it must open.
pub fn reopen(fs: &SimFs, dir: &Path, options: &Options, ctx: &str) -> FileStore {
    open(fs, dir, options).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"))
}

/// The staging files in `dir` on `fs`.
pub fn staging_files(fs: &SimFs, dir: &Path) -> Vec<String> {
    super::staging_names(fs.read_dir(dir).unwrap().into_iter().filter_map(|n| n.into_string().ok()))
}

/// Opens the store and runs `ops` with `apply`, one outcome per op (all
/// `NotRun` if the open failed). An op may fail only once the process is
/// dead, or after a lone fault struck.
pub fn run_ops<Op: std::fmt::Debug>(
    fs: &SimFs,
    dir: &Path,
    options: &Options,
    ops: &[Op],
    apply: impl Fn(&FileStore, usize, &Op) -> Result<()>,
) -> Vec<Outcome> {
    let store = match open(fs, dir, options) {
        Ok(s) => s,
        Err(e) => {
            assert!(fs.is_dead() || fs.failed_call().is_some(), "open failed without a fault: {e}");
            return vec![Outcome::NotRun; ops.len()];
        }
    };
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let dead_before = fs.is_dead();
            match apply(&store, i, op) {
                Ok(()) => Outcome::Acked,
                Err(_) if dead_before => Outcome::NotRun,
                Err(e) => {
                    assert!(fs.is_dead() || fs.failed_call().is_some(), "{op:?} failed without a fault: {e}");
                    Outcome::Failed(e.code())
                }
            }
        })
        .collect()
}

/// One run of a workload under a fault: where the fault struck, for messages.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    /// The step at which the fault strikes (`total`: after the last one, no fault).
    pub n: u64,
    /// The steps of the workload without a fault.
    pub total: u64,
    pub seed: u64,
    pub writeback: Writeback,
}

impl Point {
    /// "crash at step n of total, seed s, Writeback".
    pub fn crash_ctx(&self) -> String {
        format!("crash at step {} of {}, seed {}, {:?}", self.n, self.total, self.seed, self.writeback)
    }
}

/// A workload for the harness: `prepare` runs on the fresh file system
/// without a fault (its steps are not counted), `run` is the part crashed.
pub struct Workload<P, R> {
    pub dir: &'static str,
    pub prepare: P,
    pub run: R,
}

impl<S, T, P: Fn(&SimFs, &Path) -> S, R: Fn(&SimFs, &Path, S) -> T> Workload<P, R> {
    /// The steps `run` takes without a fault (on a file system of seed 0).
    pub fn steps(&self) -> u64 {
        let (fs, dir) = setup(0, self.dir);
        let state = (self.prepare)(&fs, &dir);
        let start = fs.steps();
        (self.run)(&fs, &dir, state);
        assert!(!fs.is_dead() && fs.failed_call().is_none(), "the workload ran into a fault without one armed");
        fs.steps() - start
    }

    /// Crashes the workload at every step `n` in `0..=total`, once per plan
    /// `(writeback, seed)`: the process dies at step `n` (exactly when
    /// `n < total`), the machine crashes with that writeback, and `check`
    /// gets the crashed file system and what `run` returned. Returns the
    /// number of runs.
    pub fn crash_at_every_step(&self, plans: &[(Writeback, u64)], mut check: impl FnMut(&SimFs, &Path, T, &Point)) -> u64 {
        let started = std::time::Instant::now();
        let total = self.steps();
        for n in 0..=total {
            for &(writeback, seed) in plans {
                let point = Point { n, total, seed, writeback };
                let (fs, dir) = setup(seed, self.dir);
                let state = (self.prepare)(&fs, &dir);
                fs.fail_after(n);
                let out = (self.run)(&fs, &dir, state);
                assert_eq!(fs.is_dead(), n < total, "{}: the crash hit (or not) as armed", point.crash_ctx());
                fs.crash(writeback);
                check(&fs, &dir, out, &point);
            }
        }
        let runs = (total + 1) * plans.len() as u64;
        eprintln!("{}: {runs} crash runs over {} crash points in {:?}", self.dir, total + 1, started.elapsed());
        runs
    }

    /// Makes one call fail at every step `n` in `0..total` (with `errno`,
    /// or `EIO`) while the process lives on, on a file system of `seed`;
    /// `check` gets the file system (not crashed), what `run` returned, and
    /// the step.
    pub fn fault_at_every_step(&self, seed: u64, errno: Option<i32>, mut check: impl FnMut(&SimFs, &Path, T, &Point)) {
        let total = self.steps();
        for n in 0..total {
            let point = Point { n, total, seed, writeback: Writeback::None };
            let (fs, dir) = setup(seed, self.dir);
            let state = (self.prepare)(&fs, &dir);
            match errno {
                Some(errno) => fs.fail_once_with(n, errno),
                None => fs.fail_once(n),
            }
            let out = (self.run)(&fs, &dir, state);
            check(&fs, &dir, out, &point);
        }
    }
}
