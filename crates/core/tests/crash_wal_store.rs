//! The store on its write-ahead log under crashes (docs/WAL.md §9 item 4):
//! the upgrade, logged puts and deletes, a multi-key frame, values and blobs
//! too large for a record written over logged keys (`Wal::flush_key`), and
//! a checkpoint, crashed at every step under the simulator's writebacks.
//! Every acknowledged write survives, and the store reopens on its log.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use konserve_core::filelock::is_lock_name;
use konserve_core::format::keycheck::KEY_CHECK_FILE_NAME;
use konserve_core::format::wal::WAL_FILE_NAME;
use konserve_core::vfs::Vfs;
use konserve_core::{file_name, Entry, FileStore, Options, Result, Write};
use support::crash::{self, Outcome, SimFs, Workload, Writeback};
use support::key;

#[derive(Clone, Debug)]
enum Op {
    Put(Vec<(&'static str, Vec<u8>)>),
    Delete(Vec<&'static str>),
    Checkpoint,
}

type KeyState = Option<Entry>;

const META: &[u8] = b"\x80";

fn record(value: &[u8]) -> Entry {
    Entry { serializer: 0, meta: META.to_vec(), value: value.to_vec(), log: None }
}

/// Small puts (records), a batch (one frame), a 20 KiB value and a 64 KiB
/// one (key files) over logged keys, deletes, a checkpoint between.
fn workload() -> Vec<Op> {
    let big = |n: usize, salt: u8| -> Vec<u8> { (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ salt).collect() };
    let v = |s: &str| s.as_bytes().to_vec();
    vec![
        Op::Put(vec![("a", v("a1"))]),
        Op::Put(vec![("b", v("b1"))]),
        Op::Put(vec![("c", v("c1")), ("d", v("d1")), ("a", v("a2"))]),
        Op::Put(vec![("a", big(20_000, 1))]),
        Op::Delete(vec!["b"]),
        Op::Checkpoint,
        Op::Put(vec![("a", v("a3")), ("b", v("b2"))]),
        Op::Delete(vec!["c", "never-written"]),
        Op::Put(vec![("b", big(64 * 1024, 2))]),
        Op::Delete(vec!["a"]),
        Op::Put(vec![("d", v("d2"))]),
    ]
}

fn universe(ops: &[Op]) -> BTreeSet<&'static str> {
    let mut keys = BTreeSet::new();
    for op in ops {
        match op {
            Op::Put(kvs) => keys.extend(kvs.iter().map(|(k, _)| *k)),
            Op::Delete(ks) => keys.extend(ks.iter().copied()),
            Op::Checkpoint => {}
        }
    }
    keys
}

fn effect(op: &Op, name: &str) -> Option<KeyState> {
    match op {
        Op::Put(kvs) => kvs.iter().find(|(k, _)| *k == name).map(|(_, v)| Some(record(v))),
        Op::Delete(ks) => ks.contains(&name).then_some(None),
        Op::Checkpoint => None,
    }
}

fn allowed_states(ops: &[Op], outcomes: &[Outcome], name: &str) -> Vec<KeyState> {
    let mut allowed = vec![None];
    for (op, outcome) in ops.iter().zip(outcomes) {
        match (effect(op, name), outcome) {
            (Some(state), Outcome::Acked) => allowed = vec![state],
            (Some(state), Outcome::Failed(_)) => allowed.push(state),
            _ => {}
        }
    }
    allowed
}

fn options() -> Options {
    crash::wal_options()
}

fn apply(store: &FileStore, _: usize, op: &Op) -> Result<()> {
    match op {
        Op::Put(kvs) => {
            let keys: Vec<Vec<u8>> = kvs.iter().map(|(k, _)| key(k)).collect();
            let writes: Vec<Write<'_>> =
                kvs.iter().zip(&keys).map(|((_, v), k)| Write { key: k, serializer: 0, meta: META, value: v }).collect();
            store.put(&writes)
        }
        Op::Delete(ks) => {
            let keys: Vec<Vec<u8>> = ks.iter().map(|k| key(k)).collect();
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            store.delete(&refs).map(drop)
        }
        Op::Checkpoint => store.checkpoint(),
    }
}

fn check_recovery(fs: &SimFs, dir: &Path, ops: &[Op], outcomes: &[Outcome], ctx: &str) {
    // Reopened without the option: a store whose marker is durable uses its log.
    let store = crash::reopen(fs, dir, &Options { wal: None, ..options() }, ctx);
    let upgraded = store.wal().is_some();
    if outcomes.contains(&Outcome::Acked) {
        assert!(upgraded, "{ctx}: a write was acknowledged, but the store is not on its log");
    }
    let mut readable = BTreeSet::new();
    for name in universe(ops) {
        let got = store.get(&key(name)).unwrap_or_else(|e| panic!("{ctx}: key {name:?} cannot be read: {e}"));
        let allowed = allowed_states(ops, outcomes, name);
        assert!(
            allowed.contains(&got),
            "{ctx}: key {name:?} holds {:?}, allowed: {:?}",
            got.as_ref().map(|e| e.value.len()),
            allowed.iter().map(|s| s.as_ref().map(|e| e.value.len())).collect::<Vec<_>>()
        );
        assert_eq!(store.exists(&key(name)).unwrap(), got.is_some(), "{ctx}: exists({name:?})");
        if got.is_some() {
            readable.insert(key(name));
        }
    }
    let listing = store.list().unwrap();
    assert!(listing.corrupt.is_empty(), "{ctx}: {:?}", listing.corrupt);
    let listed: BTreeSet<Vec<u8>> = listing.entries.into_iter().map(|e| e.key).collect();
    assert_eq!(listed, readable, "{ctx}: list disagrees with get");
    assert_eq!(crash::staging_files(fs, dir), Vec::<String>::new(), "{ctx}: staging files left after reopen");
    for name in fs.read_dir(dir).unwrap() {
        let name = name.into_string().unwrap();
        let ours = name == KEY_CHECK_FILE_NAME
            || name == WAL_FILE_NAME
            || is_lock_name(&name)
            || universe(ops).iter().any(|k| file_name(&key(k)) == name);
        assert!(ours, "{ctx}: unexpected file {name:?} after reopen");
    }
    // The recovered store takes writes, and a checkpoint keeps what it reads.
    if upgraded {
        let k = key("after-recovery");
        store.put(&[Write { key: &k, serializer: 0, meta: META, value: b"ok" }]).unwrap();
        store.checkpoint().unwrap();
        assert_eq!(store.get(&k).unwrap(), Some(record(b"ok")));
        for name in universe(ops) {
            let k = key(name);
            assert_eq!(store.get(&k).unwrap().is_some(), readable.contains(&k), "{ctx}: {name:?} after the checkpoint");
        }
    }
}

#[allow(clippy::type_complexity)] // a Workload of two closures
fn workload_in<'a>(
    options: &'a Options,
    dir: &'static str,
) -> Workload<impl Fn(&SimFs, &Path), impl Fn(&SimFs, &Path, ()) -> Vec<Outcome> + 'a> {
    Workload {
        dir,
        prepare: |_: &SimFs, _: &Path| (),
        run: move |fs: &SimFs, dir: &Path, ()| crash::run_ops(fs, dir, options, &workload(), apply),
    }
}

fn crash_at_every_step(writeback: Writeback, seeds: &[u64], dir: &'static str) {
    let options = options();
    let ops = workload();
    let plans: Vec<(Writeback, u64)> = seeds.iter().map(|&s| (writeback, s)).collect();
    workload_in(&options, dir).crash_at_every_step(&plans, |fs, dir, outcomes, point| {
        check_recovery(fs, dir, &ops, &outcomes, &point.crash_ctx());
    });
}

#[test]
fn acknowledged_logged_writes_survive_a_crash_at_every_step() {
    crash_at_every_step(Writeback::None, &[1], "/sim/wal-none");
}

#[test]
fn acknowledged_logged_writes_survive_a_crash_with_partial_writeback() {
    crash_at_every_step(Writeback::Unordered, &[3], "/sim/wal-unordered");
}

#[test]
fn acknowledged_logged_writes_survive_a_crash_with_ordered_writeback() {
    crash_at_every_step(Writeback::Ordered, &[6], "/sim/wal-ordered");
}

/// A lone I/O error at every step: the op that hit it fails and nothing
/// else does, except that after a failed fsync (of a key file, the
/// directory or the log) the store refuses every write, logged or not
/// ("fsyncgate"). What was acknowledged then survives a crash.
#[test]
fn a_lone_io_error_fails_its_op_and_a_failed_fsync_stops_writes() {
    let options = options();
    let ops = workload();
    workload_in(&options, "/sim/wal-eio").fault_at_every_step(1, None, |fs, dir, outcomes, point| {
        let ctx = format!("EIO at step {} of {}", point.n, point.total);
        let call = fs.failed_call().unwrap_or_else(|| panic!("{ctx}: no call failed"));
        let ctx = format!("{ctx} ({call}): {outcomes:?}");
        if let Some(first) = outcomes.iter().position(|o| *o != Outcome::Acked && *o != Outcome::NotRun) {
            let fsync = matches!(call, "sync" | "sync_dir" | "sync_fs");
            if let Outcome::Failed(code) = outcomes[first] {
                assert_eq!(code == konserve_core::ErrorCode::Fsync, fsync, "{ctx}: the failed op's error code is {code:?}");
            }
            for later in &outcomes[first + 1..] {
                let expected = if fsync { Outcome::Failed(konserve_core::ErrorCode::StorePoisoned) } else { Outcome::Acked };
                assert_eq!(*later, expected, "{ctx}: an op after the failure");
            }
        }
        fs.crash(Writeback::None);
        check_recovery(fs, dir, &ops, &outcomes, &ctx);
    });
}
