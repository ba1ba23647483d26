//! Append logs under crashes and lone I/O errors (the crash harness of
//! tests/support/crash.rs): acknowledged appends and trims survive a crash
//! at any step, a group commit is all or nothing, a torn commit slot is
//! repaired, a migration keeps the old log or the new.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use support::fixtures::{le_u32, one, payload, read_all, rec};

use konserve_core::codec::{Codec, OsRandom, SegmentContext};
use konserve_core::format::file::{FLAGS_COMMITTED_LOG, HEADER_LEN, LOG_COMMIT_AREA};
use konserve_core::format::log::{encode_legacy_log_head, encode_records, LogInfo, LogRecord, NewRecord, COMMIT_SLOT};
use konserve_core::log::READ_BUF;
use konserve_core::vfs::Vfs;
use konserve_core::{keyhash, ErrorCode, FileStore, Options, Result};
use support::crash::{self, Outcome, SimFs, Workload, Writeback};
use support::key;

const META: &[u8] = b"\x81\xa4type\xaaappend-log";

fn new_record(r: &LogRecord) -> NewRecord<'_> {
    NewRecord { serializer: r.serializer, stamp: r.stamp, payload: &r.bytes }
}

fn info(first: u64, last: Option<u64>, stamp: u64) -> LogInfo {
    LogInfo { first_index: first, last_index: last, last_stamp: stamp }
}

/// The offset of the first record of a log file, of either layout.
fn data_start(file: &[u8]) -> usize {
    let area = if le_u32(&file[8..12]) == FLAGS_COMMITTED_LOG { LOG_COMMIT_AREA as usize } else { 0 };
    HEADER_LEN + le_u32(&file[12..16]) as usize + area
}

/// A log of the earlier layout (flags 2), as builds before the commit wrote it.
fn legacy_log(codec: Codec, secret: Option<&[u8]>, k: &[u8], recs: &[LogRecord]) -> Vec<u8> {
    let ctx = SegmentContext { secret, key_hash: keyhash::key_hash(k), accept_plaintext: false };
    let mut file = encode_legacy_log_head(codec, secret, k, META, &mut OsRandom).unwrap();
    let news: Vec<NewRecord<'_>> = recs.iter().map(new_record).collect();
    file.extend_from_slice(&encode_records(codec, &ctx, 0, &news, &mut OsRandom).unwrap().0);
    file
}

/// A crash at every step of the append that migrates a log of the
/// earlier layout: the log is the old one or the new one, whole.
#[test]
fn a_crash_while_migrating_keeps_the_old_log_or_the_new() {
    let recs: Vec<LogRecord> = (0..3).map(|i| rec(i, payload(i + 1))).collect();
    let k = key("log");
    let ops = vec![Op::Append(vec![b"new".to_vec(), b"two".to_vec()]), Op::Append(vec![b"then".to_vec()])];
    let legacy = |seed: u64| {
        let (fs, dir) = crash::setup(seed, "/sim/log-migrate");
        let mut f = fs.create_new(&dir.join(keyhash::file_name(&k))).unwrap();
        f.write_all(&legacy_log(Codec::NONE, None, &k, &recs)).unwrap();
        f.sync().unwrap();
        drop(f);
        fs.sync_dir(&dir).unwrap();
        (fs, dir)
    };
    let (fs, dir) = legacy(0);
    let start = fs.steps();
    assert!(run(&fs, &dir, &synced(), &ops).iter().all(|o| *o == Outcome::Acked));
    let total = fs.steps() - start;
    for writeback in [Writeback::None, Writeback::Unordered, Writeback::Ordered] {
        for n in 0..=total {
            let ctx = format!("crash at step {n} of {total}, {writeback:?}");
            let (fs, dir) = legacy(n);
            fs.fail_after(n);
            let outcomes = run(&fs, &dir, &synced(), &ops);
            fs.crash(writeback);
            let base: State = Some((META.to_vec(), recs.clone()));
            let states = [base.clone(), effect(&base, 0, &ops[0]), effect(&effect(&base, 0, &ops[0]), 1, &ops[1])];
            let acked = outcomes.iter().filter(|o| **o == Outcome::Acked).count();
            let allowed = &states[acked..(acked + 2).min(3)];
            recover(&fs, &dir, &synced(), false, &ctx, |s| allowed.contains(s));
        }
    }
}

/// One step of the log workload.
#[derive(Clone, Debug)]
enum Op {
    /// One append of these records (a group commit when more than one).
    Append(Vec<Vec<u8>>),
    Trim(u64, &'static [u8]),
}

/// A log's state: its metadata and records, or `None` when absent.
type State = Option<(Vec<u8>, Vec<LogRecord>)>;

fn workload() -> Vec<Op> {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let one = |b: &[u8]| Op::Append(vec![b.to_vec()]);
    vec![
        one(b"first"),
        one(b"second"),
        one(b""),
        Op::Append(vec![big]),
        one(b"fifth"),
        // A group commit of three, the middle one spanning several pages.
        Op::Append(vec![b"six".to_vec(), b"y".repeat(9000), b"eight".to_vec()]),
        Op::Trim(2, b"\x81\xa1t\x01"),
        one(b"after trim"),
        one(&b"x".repeat(1000)),
        Op::Trim(100, b"\x81\xa1t\x02"),
        // A group commit to a log with no records: indexes from 0.
        Op::Append(vec![b"restart".to_vec(), b"again".to_vec()]),
        one(b"last"),
    ]
}

/// A new log created by a group commit, then another one.
fn create_workload() -> Vec<Op> {
    vec![Op::Append(vec![b"a".to_vec(), b"b".repeat(5000), Vec::new(), b"d".to_vec()]), Op::Append(vec![b"e".to_vec(), b"f".repeat(3000)])]
}

/// The stamp of record `j` of the `i`th op: each its own, so a record
/// tells its append.
fn stamp(i: usize, j: usize) -> u64 {
    1_000 + 10 * i as u64 + j as u64
}

/// The state after op `i` applied whole.
fn effect(state: &State, i: usize, op: &Op) -> State {
    match (op, state) {
        (Op::Append(batch), _) => {
            let (meta, mut recs) = state.clone().unwrap_or_else(|| (META.to_vec(), Vec::new()));
            let next = recs.last().map_or(0, |r| r.index + 1);
            for (j, b) in batch.iter().enumerate() {
                recs.push(LogRecord { index: next + j as u64, stamp: stamp(i, j), serializer: 1, bytes: b.clone() });
            }
            Some((meta, recs))
        }
        (Op::Trim(..), None) => None,
        (Op::Trim(from, meta), Some((_, recs))) => Some((meta.to_vec(), recs.iter().filter(|r| r.index >= *from).cloned().collect())),
    }
}

/// What op `i` may leave when it was interrupted (or its fsync failed)
/// and the machine crashed, besides the state before it: the state after
/// it, whole. An append is all or nothing (its commit decides), and so
/// is a new log or a trim (the rename decides).
fn interrupted(state: &State, i: usize, op: &Op) -> Vec<State> {
    vec![effect(state, i, op)]
}

/// Applies op `i` of a log workload to the log "log".
fn apply(store: &FileStore, i: usize, op: &Op) -> Result<()> {
    let k = key("log");
    match op {
        Op::Append(batch) => {
            let news: Vec<NewRecord<'_>> =
                batch.iter().enumerate().map(|(j, b)| NewRecord { serializer: 1, stamp: stamp(i, j), payload: b }).collect();
            store.log_append(&k, &news, META).map(drop)
        }
        Op::Trim(from, meta) => store.log_trim(&k, *from, meta).map(drop),
    }
}

fn run(fs: &SimFs, dir: &Path, options: &Options, ops: &[Op]) -> Vec<Outcome> {
    crash::run_ops(fs, dir, options, ops, apply)
}

/// `ops` for the harness: the open and every op, in `dir`.
#[allow(clippy::type_complexity)] // a Workload of two closures
fn workload_in<'a>(
    options: &'a Options,
    dir: &'static str,
    ops: &'a [Op],
) -> Workload<impl Fn(&SimFs, &Path), impl Fn(&SimFs, &Path, ()) -> Vec<Outcome> + 'a> {
    Workload { dir, prepare: |_: &SimFs, _: &Path| (), run: move |fs: &SimFs, dir: &Path, ()| run(fs, dir, options, ops) }
}

/// Every state the log ever had in the workload (absence first).
fn history(ops: &[Op]) -> Vec<State> {
    let mut states = vec![None];
    for (i, op) in ops.iter().enumerate() {
        let next = effect(states.last().unwrap(), i, op);
        states.push(next);
    }
    states
}

/// Reads the log after a crash: its state, or the error.
fn read_state(store: &FileStore) -> Result<State> {
    let k = key("log");
    let Some(meta) = store.get_meta(&k)? else { return Ok(None) };
    let recs = read_all(store, &k)?;
    let want = match recs.last() {
        Some(last) => info(recs[0].index, Some(last.index), last.stamp),
        None => LogInfo::EMPTY,
    };
    assert_eq!(meta.log, Some(want), "getMeta agrees with the records");
    Ok(Some((meta.meta, recs)))
}

/// Reopens the store after a crash; checks the log with `check` and that
/// it takes an append with the next index. Returns the state, or `None`
/// if it was corrupt (only when `corrupt_ok`).
fn recover(fs: &SimFs, dir: &Path, options: &Options, corrupt_ok: bool, ctx: &str, check: impl Fn(&State) -> bool) -> Option<State> {
    let store = crash::reopen(fs, dir, options, ctx);
    let state = match read_state(&store) {
        Ok(s) => s,
        Err(e) if corrupt_ok && e.code() == ErrorCode::Corrupt => return None,
        Err(e) => panic!("{ctx}: the log cannot be read: {e}"),
    };
    assert!(
        check(&state),
        "{ctx}: the log holds {:?}",
        state.as_ref().map(|(m, r)| (m, r.iter().map(|r| (r.index, r.bytes.len())).collect::<Vec<_>>()))
    );
    let names: Vec<String> = fs.read_dir(dir).unwrap().into_iter().map(|n| n.into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".stage")), "{ctx}: staging files left: {names:?}");
    let next = state.as_ref().and_then(|(_, r)| r.last()).map_or(0, |r| r.index + 1);
    let li = store.log_append(&key("log"), &one(9, b"after recovery"), META).unwrap();
    assert_eq!(li.last_index, Some(next), "{ctx}");
    let after = read_state(&store).unwrap().unwrap().1;
    assert_eq!(after.last().unwrap().bytes, b"after recovery", "{ctx}");
    assert_eq!(after.len(), state.as_ref().map_or(0, |(_, r)| r.len()) + 1, "{ctx}");
    Some(state)
}

fn count_steps(options: &Options, dir: &'static str, ops: &[Op]) -> u64 {
    workload_in(options, dir, ops).steps()
}

/// Crashes at every step of `ops`: the log holds every acknowledged op,
/// and of the interrupted one what [`interrupted`] allows (all of it or
/// none), and is never `ERR_CORRUPT`. Returns how many runs kept the
/// interrupted op.
fn crash_at_every_step(options: Options, writeback: Writeback, seeds: &[u64], dir: &'static str, ops: &[Op]) -> usize {
    assert!(options.sync_blob);
    let states = history(ops);
    let mut kept = 0;
    let plans: Vec<(Writeback, u64)> = seeds.iter().map(|&s| (writeback, s)).collect();
    workload_in(&options, dir, ops).crash_at_every_step(&plans, |fs, dir, outcomes, point| {
        let ctx = point.crash_ctx();
        // The state after the last acknowledged op, or what the op the
        // crash interrupted may have left.
        let acked = outcomes.iter().rposition(|o| *o == Outcome::Acked).map_or(0, |i| i + 1);
        let mut allowed = vec![states[acked].clone()];
        if outcomes.get(acked).is_some_and(|o| matches!(o, Outcome::Failed(_))) {
            allowed.extend(interrupted(&states[acked], acked, &ops[acked]));
        }
        assert!(outcomes[..acked].iter().all(|o| *o == Outcome::Acked), "{ctx}");
        let state = recover(fs, dir, &options, false, &ctx, |s| allowed.contains(s)).unwrap();
        kept += usize::from(state != states[acked]);
    });
    eprintln!("log, {writeback:?}: {kept} runs kept the interrupted op");
    kept
}

fn synced() -> Options {
    Options { sync_blob: true, ..Options::default() }
}

#[test]
fn acknowledged_appends_survive_a_crash_at_every_step() {
    crash_at_every_step(synced(), Writeback::None, &[1], "/sim/log-none", &workload());
}

#[test]
fn acknowledged_appends_survive_a_crash_with_partial_writeback() {
    crash_at_every_step(synced(), Writeback::Unordered, &[3, 4], "/sim/log-unordered", &workload());
}

#[test]
fn acknowledged_appends_survive_a_crash_with_ordered_writeback() {
    crash_at_every_step(synced(), Writeback::Ordered, &[6], "/sim/log-ordered", &workload());
}

#[test]
fn acknowledged_appends_survive_a_crash_with_lz4_and_encryption() {
    let options = Options { compressor: 1, encryption_key: Some(b"s3cr3t".to_vec()), ..synced() };
    crash_at_every_step(options, Writeback::Unordered, &[7], "/sim/log-codec", &workload());
}

/// A new log made by a group commit is all or nothing (`interrupted`
/// allows no prefix for it); a later group commit may be cut.
#[test]
fn a_new_log_of_several_records_survives_a_crash_whole_or_not_at_all() {
    for writeback in [Writeback::None, Writeback::Unordered, Writeback::Ordered] {
        crash_at_every_step(synced(), writeback, &[1, 2, 3], "/sim/log-create", &create_workload());
    }
}

/// A crash while a group commit of 4 records is being made durable: at
/// the first fsync (records and slot A written) or the second (slot B
/// written), over many seeds. The log holds the records acknowledged
/// before and all 4 or none of them: the commit decides, never a prefix.
/// A crash at the second fsync leaves each outcome for some seed.
#[test]
fn a_crash_during_a_group_commit_leaves_all_its_records_or_none() {
    let batch: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'a' + i; 1000]).collect();
    let ops = vec![Op::Append(vec![b"r0".to_vec()]), Op::Append(batch.clone())];
    let states = history(&ops);
    let dir = "/sim/log-group";
    let op0 = count_steps(&synced(), dir, &ops[..1]);
    // Op 1's steps: the records, slot A, a sync, slot B, a sync.
    for (at, both) in [(op0 + 2, false), (op0 + 4, true)] {
        let mut seen = BTreeSet::new();
        for seed in 0..100 {
            let ctx = format!("crash at step {at}, seed {seed}");
            let (fs, dir) = crash::setup(seed, dir);
            fs.fail_after(at);
            let outcomes = run(&fs, &dir, &synced(), &ops);
            assert_eq!(outcomes, [Outcome::Acked, Outcome::Failed(ErrorCode::Fsync)], "{ctx}");
            fs.crash(Writeback::None);
            let allowed = [states[1].clone(), states[2].clone()];
            let state = recover(&fs, &dir, &synced(), false, &ctx, |s| allowed.contains(s)).unwrap();
            seen.insert(state.unwrap().1.len());
        }
        let want: BTreeSet<usize> = if both { [1, 5].into() } else { [1].into() };
        assert_eq!(seen, want, "crash at step {at}: the group commit is all or nothing");
    }
}

/// Slot B torn by a crash, then a crash at every step of the next append
/// under many seeds: slot B is repaired (and fsynced) before slot A is
/// written again, so one slot always holds a commit and the log is never
/// `ERR_CORRUPT`. (Without the repair, a torn slot A next to the torn B
/// loses both.)
#[test]
fn a_torn_slot_b_is_repaired_before_slot_a_is_written_again() {
    let ops = [Op::Append(vec![b"r0".to_vec()]), Op::Append(vec![b"r1".to_vec(), b"r2".to_vec()])];
    let k = key("log");
    let before = history(&ops[..1])[1].clone();
    let after = effect(&before, 0, &ops[1]);
    let workload = Workload {
        dir: "/sim/log-repair",
        prepare: |fs: &SimFs, dir: &Path| {
            assert_eq!(run(fs, dir, &synced(), &ops[..1]), [Outcome::Acked]);
            let path = dir.join(keyhash::file_name(&k));
            let slot_b = data_start(&fs.read(&path).unwrap()) - COMMIT_SLOT;
            let mut f = fs.open_write(&path).unwrap();
            f.write_all_at(&[0xee; 8], slot_b as u64 + 4).unwrap();
            f.sync().unwrap();
        },
        run: |fs: &SimFs, dir: &Path, ()| run(fs, dir, &synced(), &ops[1..]),
    };
    let plans: Vec<(Writeback, u64)> = (0..10).map(|seed| (Writeback::None, seed)).collect();
    workload.crash_at_every_step(&plans, |fs, dir, outcome, point| {
        let allowed = if outcome == [Outcome::Acked] { vec![after.clone()] } else { vec![before.clone(), after.clone()] };
        recover(fs, dir, &synced(), false, &point.crash_ctx(), |s| allowed.contains(s));
    });
}

/// Without fsyncs a crash may lose any suffix of the log's history, but a
/// reader never misreads: it sees the metadata of some state and a prefix
/// of that state's records, or `ERR_CORRUPT`. FORMAT.md §4.6 allows that
/// wherever a commit slot reaches the disk before the records it commits;
/// in this model it happens where a renamed file's data may be torn
/// (unordered writeback): a new or trimmed log's head, or its commit.
#[test]
fn without_sync_a_crash_loses_only_a_suffix() {
    let options = Options { sync_blob: false, ..Options::default() };
    let ops = workload();
    let states = history(&ops);
    let dir = "/sim/log-nosync";
    let mut corrupt = 0;
    let plans =
        [(Writeback::None, 1), (Writeback::Ordered, 2), (Writeback::Ordered, 3), (Writeback::Unordered, 4), (Writeback::Unordered, 5)];
    workload_in(&options, dir, &ops).crash_at_every_step(&plans, |fs, dir, _, point| {
        let prefix_of_some_state = |s: &State| match s {
            None => true,
            Some((meta, recs)) => states.iter().flatten().any(|(m, r)| m == meta && r.starts_with(recs)),
        };
        let corrupt_ok = point.writeback == Writeback::Unordered;
        corrupt += usize::from(recover(fs, dir, &options, corrupt_ok, &point.crash_ctx(), prefix_of_some_state).is_none());
    });
    eprintln!("log without sync: {corrupt} damaged logs, all reported as ERR_CORRUPT");
}

/// A lone I/O error at every step: the op that hit it fails, and changes
/// nothing unless it was an fsync (whose data may or may not be on disk,
/// for a group commit also in part); after a failed fsync every write is
/// refused. A crash then keeps what was acknowledged.
#[test]
fn a_lone_io_error_fails_its_op_and_a_failed_fsync_stops_appends() {
    let options = synced();
    let ops = workload();
    let dir = "/sim/log-eio";
    workload_in(&options, dir, &ops).fault_at_every_step(1, None, |fs, dir, outcomes, point| {
        let call = fs.failed_call().expect("a call failed");
        let ctx = format!("EIO at step {} of {} ({call})", point.n, point.total);
        let fsync = call == "sync" || call == "sync_dir";
        let mut state: State = None;
        let mut alternatives: Option<Vec<State>> = None;
        for (i, (op, outcome)) in ops.iter().zip(&outcomes).enumerate() {
            match outcome {
                Outcome::Acked => {
                    assert!(alternatives.is_none(), "{ctx}: op {i} acknowledged after a failed fsync");
                    state = effect(&state, i, op);
                }
                Outcome::Failed(ErrorCode::StorePoisoned) => assert!(alternatives.is_some(), "{ctx}: op {i}"),
                Outcome::Failed(code) => {
                    assert_eq!(*code == ErrorCode::Fsync, fsync, "{ctx}: op {i} failed with {code:?}");
                    if fsync {
                        alternatives = Some(interrupted(&state, i, op));
                    }
                }
                Outcome::NotRun => assert!(matches!(call, "open_lock_file"), "{ctx}: the open failed"),
            }
        }
        fs.crash(Writeback::None);
        let allowed: Vec<State> = std::iter::once(state).chain(alternatives.into_iter().flatten()).collect();
        recover(fs, dir, &options, false, &ctx, |s| allowed.contains(s));
    });
}

#[test]
fn the_log_workload_covers_what_it_claims() {
    let ops = workload();
    assert!(ops.iter().any(|o| matches!(o, Op::Append(b) if b.iter().any(|r| r.len() > READ_BUF))), "a record larger than the read buffer");
    let states = history(&ops);
    let kinds: BTreeSet<&str> = ops
        .iter()
        .zip(&states[1..])
        .map(|(op, s)| match (op, s) {
            (Op::Trim(..), Some((_, r))) if r.is_empty() => "trim to none",
            (Op::Trim(..), _) => "trim",
            (Op::Append(b), Some((_, r))) if r.len() == b.len() && b.len() > 1 => "restart with a group commit",
            (Op::Append(b), Some((_, r))) if r.len() == b.len() => "create or restart",
            (Op::Append(b), _) if b.len() > 1 => "group commit",
            (Op::Append(_), _) => "append",
        })
        .collect();
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    assert!(count_steps(&synced(), "/sim/log-count", &ops) > 30);
    assert!(matches!(&create_workload()[0], Op::Append(b) if b.len() > 1), "a new log made by a group commit");
}
