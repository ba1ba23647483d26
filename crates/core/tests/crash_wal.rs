//! The write-ahead log (crates/core/src/wal.rs) under crashes: the log's
//! creation, appends (with the log growing), multi-record frames,
//! checkpoints and resets, and appends over an older generation, crashed at
//! every step under the three write-back models of the simulator. After each
//! crash the log must open (never `ERR_CORRUPT`), every acknowledged record
//! must read back (from the log or its key file), nothing unacknowledged may
//! appear but whole, a multi-record frame is all or nothing, and the log must
//! take new appends and a checkpoint that keeps every value.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use konserve_core::file_name;
use konserve_core::format::file::encode_file;
use konserve_core::format::wal::{NewWalRecord, WalOp};
use konserve_core::wal::{record_hash, Wal, WalLookup, WalOptions};
use support::crash::{Outcome, SimFs, Workload, Writeback};
use support::key;

#[derive(Clone, Debug)]
enum Op {
    /// One append of these puts (one frame, all or nothing).
    Put(Vec<(&'static str, Vec<u8>)>),
    Delete(&'static str),
    Checkpoint,
}

fn options() -> WalOptions {
    // (`Wal::open` starts no background thread; these say so anyway.)
    WalOptions {
        grow_step: 64 * 1024,
        grow_margin: 4096,
        idle_hold: std::time::Duration::ZERO,
        idle_checkpoint: None,
        ..WalOptions::default()
    }
}

/// The two ways a checkpoint makes its key files durable: one `syncfs`, or
/// an fsync of each staging file and one directory fsync.
fn modes() -> [WalOptions; 2] {
    [options(), WalOptions { checkpoint_syncfs: true, ..options() }]
}

fn payload(k: &str, v: &[u8]) -> Vec<u8> {
    encode_file(&key(k), 0, b"\x80", v).unwrap()
}

fn workload() -> Vec<Op> {
    let v = |s: &str| s.as_bytes().to_vec();
    let big = |b: u8| vec![b; 24 * 1024];
    vec![
        Op::Put(vec![("a", v("a1"))]),
        Op::Put(vec![("b", v("b1"))]),
        Op::Put(vec![("a", v("a2, longer"))]),
        Op::Put(vec![("c", v("c1")), ("d", v("d1"))]),
        Op::Delete("b"),
        Op::Checkpoint,
        Op::Put(vec![("a", v("a3"))]),
        Op::Put(vec![("big", big(1))]),
        Op::Put(vec![("big", big(2))]),
        Op::Put(vec![("b", v("b2"))]),
        Op::Put(vec![("big", big(3))]),
        Op::Delete("a"),
        Op::Checkpoint,
        Op::Put(vec![("e", v("e1"))]),
    ]
}

fn apply(w: &Wal, op: &Op) -> konserve_core::Result<()> {
    match op {
        Op::Put(kvs) => {
            let ps: Vec<(Vec<u8>, [u8; 16])> = kvs.iter().map(|(k, v)| (payload(k, v), record_hash(&key(k)))).collect();
            let recs: Vec<NewWalRecord<'_>> = ps.iter().map(|(p, h)| NewWalRecord { op: WalOp::Put, key_hash: *h, payload: p }).collect();
            w.append(&recs)
        }
        Op::Delete(k) => w.append(&[NewWalRecord { op: WalOp::Delete, key_hash: record_hash(&key(k)), payload: &[] }]),
        Op::Checkpoint => w.checkpoint().map(|_| ()),
    }
}

/// What `op` leaves in key `k` (a whole key file, or `None` for a delete), if it touches it.
fn effect(op: &Op, k: &str) -> Option<Option<Vec<u8>>> {
    match op {
        Op::Put(kvs) => kvs.iter().find(|(x, _)| *x == k).map(|(_, v)| Some(payload(k, v))),
        Op::Delete(x) if *x == k => Some(None),
        _ => None,
    }
}

fn universe(ops: &[Op]) -> BTreeSet<&'static str> {
    let mut keys = BTreeSet::new();
    for op in ops {
        match op {
            Op::Put(kvs) => keys.extend(kvs.iter().map(|(k, _)| *k)),
            Op::Delete(k) => {
                keys.insert(*k);
            }
            Op::Checkpoint => {}
        }
    }
    keys
}

fn run(fs: &SimFs, dir: &Path, ops: &[Op], o: &WalOptions) -> Vec<Outcome> {
    let w = match Wal::open(Arc::new(fs.clone()), dir, o.clone()) {
        Ok(w) => w,
        Err(e) => {
            assert!(fs.is_dead(), "open failed without a fault: {e}");
            return vec![Outcome::NotRun; ops.len()];
        }
    };
    ops.iter()
        .map(|op| {
            let dead_before = fs.is_dead();
            match apply(&w, op) {
                Ok(()) => Outcome::Acked,
                Err(_) if dead_before => Outcome::NotRun,
                Err(e) => {
                    assert!(fs.is_dead(), "{op:?} failed without a fault: {e}");
                    Outcome::Failed(e.code())
                }
            }
        })
        .collect()
}

/// What key `k` reads as: the log's record, else its key file.
fn visible(w: &Wal, fs: &SimFs, dir: &Path, k: &str, ctx: &str) -> Option<Vec<u8>> {
    match w.get(&record_hash(&key(k))).unwrap_or_else(|e| panic!("{ctx}: get {k}: {e}")) {
        WalLookup::Put(p) => Some(p),
        WalLookup::Deleted => None,
        WalLookup::File | WalLookup::Absent => fs.read(&dir.join(file_name(&key(k)))).ok(),
    }
}

/// The values `k` may read as after a crash: the effect of its last
/// acknowledged op (or none), and of any op that failed after it.
fn allowed(ops: &[Op], out: &[Outcome], k: &str) -> Vec<Option<Vec<u8>>> {
    let mut floor = None;
    let mut maybe = Vec::new();
    for (op, o) in ops.iter().zip(out) {
        let Some(eff) = effect(op, k) else { continue };
        match o {
            Outcome::Acked => {
                floor = eff;
                maybe.clear();
            }
            Outcome::Failed(_) => maybe.push(eff),
            Outcome::NotRun => {}
        }
    }
    let mut all = vec![floor];
    all.extend(maybe);
    all
}

fn check(fs: &SimFs, dir: &Path, ops: &[Op], out: &[Outcome], o: &WalOptions, ctx: &str) {
    let w = Wal::open(Arc::new(fs.clone()), dir, o.clone()).unwrap_or_else(|e| panic!("{ctx}: the log does not open: {e}"));
    let keys = universe(ops);
    let mut seen = Vec::new();
    for k in &keys {
        let got = visible(&w, fs, dir, k, ctx);
        let ok = allowed(ops, out, k);
        assert!(ok.contains(&got), "{ctx}: key {k} reads {:?}, allowed {:?} (outcomes {out:?})", got.as_ref().map(|g| g.len()), ok.len());
        seen.push((*k, got));
    }
    // The two-key frame: both or neither.
    let multi = ops.iter().position(|op| matches!(op, Op::Put(kvs) if kvs.len() == 2)).unwrap();
    let shows = |k: &str| seen.iter().find(|(x, _)| *x == k).unwrap().1 == effect(&ops[multi], k).unwrap();
    assert_eq!(shows("c"), shows("d"), "{ctx}: the two-record frame is half there");
    // The log takes new appends, and a checkpoint keeps every value.
    apply(&w, &Op::Put(vec![("after", b"crash".to_vec())])).unwrap_or_else(|e| panic!("{ctx}: append after the crash: {e}"));
    assert!(w.checkpoint().unwrap_or_else(|e| panic!("{ctx}: checkpoint after the crash: {e}")));
    for (k, got) in &seen {
        assert_eq!(&visible(&w, fs, dir, k, ctx), got, "{ctx}: key {k} changed in the checkpoint after the crash");
        assert_eq!(w.get(&record_hash(&key(k))).unwrap(), WalLookup::Absent, "{ctx}: the log was reset");
    }
    assert_eq!(visible(&w, fs, dir, "after", ctx), Some(payload("after", b"crash")));
}

#[test]
fn every_acknowledged_record_survives_a_crash_at_every_step() {
    let ops = workload();
    for o in modes() {
        let wl = Workload { dir: "/wal", prepare: |_: &SimFs, _: &Path| (), run: |fs: &SimFs, dir: &Path, ()| run(fs, dir, &ops, &o) };
        let plans: Vec<(Writeback, u64)> =
            (0..2u64).flat_map(|seed| [Writeback::None, Writeback::Unordered, Writeback::Ordered].map(|wb| (wb, seed))).collect();
        let runs = wl.crash_at_every_step(&plans, |fs, dir, out, point| {
            check(fs, dir, &ops, &out, &o, &format!("{} (syncfs {})", point.crash_ctx(), o.checkpoint_syncfs));
        });
        assert!(runs > 300, "{runs} runs");
    }
}

#[test]
fn an_existing_log_crashed_mid_append_is_never_corrupt_and_its_torn_tail_is_written_over() {
    // Appends into a log whose bytes past the end hold a torn frame and an
    // older generation's frames (after a reset), crashed at every step.
    let prepare = |fs: &SimFs, dir: &Path| {
        let w = Wal::open(Arc::new(fs.clone()), dir, options()).unwrap();
        for i in 0..6 {
            apply(&w, &Op::Put(vec![("old", format!("old{i}").into_bytes())])).unwrap();
        }
        assert!(w.checkpoint().unwrap());
    };
    let ops: Vec<Op> = (0..6).map(|i| Op::Put(vec![(["x", "y", "c", "d"][i % 4], vec![i as u8; 100 + 50 * i])])).collect();
    let mut ops = ops;
    ops.push(Op::Put(vec![("c", b"c9".to_vec()), ("d", b"d9".to_vec())]));
    let wl = Workload { dir: "/wal2", prepare, run: |fs: &SimFs, dir: &Path, ()| run(fs, dir, &ops, &options()) };
    let plans = [(Writeback::None, 7), (Writeback::Unordered, 8), (Writeback::Ordered, 9)];
    wl.crash_at_every_step(&plans, |fs, dir, out, point| {
        let ctx = point.crash_ctx();
        let w = Wal::open(Arc::new(fs.clone()), dir, options()).unwrap_or_else(|e| panic!("{ctx}: the log does not open: {e}"));
        let old = visible(&w, fs, dir, "old", &ctx);
        assert_eq!(old, Some(payload("old", b"old5")), "{ctx}");
        for k in ["x", "y", "c", "d"] {
            let got = visible(&w, fs, dir, k, &ctx);
            assert!(allowed(&ops, &out, k).contains(&got), "{ctx}: key {k}");
        }
        // And a second crash right after new appends over the torn tail.
        apply(&w, &Op::Put(vec![("z", b"z1".to_vec())])).unwrap();
        drop(w);
        fs.crash(Writeback::None);
        let w = Wal::open(Arc::new(fs.clone()), dir, options()).unwrap_or_else(|e| panic!("{ctx}: second crash: {e}"));
        assert_eq!(visible(&w, fs, dir, "z", &ctx), Some(payload("z", b"z1")), "{ctx}");
    });
}

#[test]
fn a_checkpoint_and_reset_crashed_at_every_step_under_many_seeds_keep_every_value() {
    // The reset writes the two header slots over durable bytes: a crash may
    // tear the write in flight; slot A is fdatasynced before slot B is
    // written, so one slot always holds.
    for o in modes() {
        let prepare = |fs: &SimFs, dir: &Path| {
            let w = Wal::open(Arc::new(fs.clone()), dir, o.clone()).unwrap();
            apply(&w, &Op::Put(vec![("a", b"a1".to_vec()), ("b", b"b1".to_vec())])).unwrap();
            apply(&w, &Op::Delete("b")).unwrap();
        };
        let wl = Workload {
            dir: "/wal3",
            prepare,
            run: |fs: &SimFs, dir: &Path, ()| {
                let w = Wal::open(Arc::new(fs.clone()), dir, o.clone());
                w.and_then(|w| w.checkpoint()).is_ok()
            },
        };
        let plans: Vec<(Writeback, u64)> =
            (0..24u64).flat_map(|seed| [Writeback::None, Writeback::Unordered, Writeback::Ordered].map(|wb| (wb, 100 + seed))).collect();
        wl.crash_at_every_step(&plans, |fs, dir, _, point| {
            let ctx = point.crash_ctx();
            let w = Wal::open(Arc::new(fs.clone()), dir, options()).unwrap_or_else(|e| panic!("{ctx}: the log does not open: {e}"));
            assert_eq!(visible(&w, fs, dir, "a", &ctx), Some(payload("a", b"a1")), "{ctx}");
            assert_eq!(visible(&w, fs, dir, "b", &ctx), None, "{ctx}");
        });
    }
}
