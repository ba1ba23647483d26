//! The write-ahead log protocol (docs/WAL.md §4–§6) over the [`Vfs`]: the
//! log file `.konserve.wal` (created preallocated, grown in steps), appends
//! with group commit under the log lock, the index of the current generation
//! and its catch-up by the end hint, lookups, and the checkpoint with its
//! reset and back-pressure.
//!
//! [`FileStore`](crate::FileStore) uses it when the store has the log's
//! marker (docs/WAL.md §8, §9 item 4). The bytes are those of
//! [`crate::format::wal`].

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, ErrorCode, Result};
use crate::filelock::Attempt;
use crate::format::file;
use crate::format::wal::{
    check_tail, decode_frame_at, decode_header, decode_hint, encode_frame, encode_header_slot, encode_hint, frame_len, NewWalRecord,
    WalFrame, WalHeader, WalHint, WalOp, FRAMES_AT, FRAME_HEAD, HINT_AT, HINT_LEN, MAX_FRAME, MIN_FRAME, SLOT_A, SLOT_B, SLOT_LEN,
    WAL_FILE_NAME,
};
use crate::keyfile::{Options, StoreDir};
use crate::keyhash::KEY_FILE_SUFFIX;
use crate::staging::{stage_parallel, InFlight};
use crate::vfs::{Vfs, VfsFile};

/// The log lock's name part (FORMAT.md §6 protocol): `.57414c…57.lock`.
pub const WAL_LOCK_HEX: &str = "57414c57414c57414c57414c57414c57";
/// The checkpoint lock's name part: `.434b5054…54.lock`.
pub const CHECKPOINT_LOCK_HEX: &str = "434b5054434b5054434b5054434b5054";
/// The log grows by this much (zero-filled, fsynced) at a time.
pub const GROW_STEP: u64 = 64 << 20;
/// The log may hold this many bytes of frames not checkpointed before a committer checkpoints first.
pub const CHECKPOINT_CAP: u64 = 256 << 20;
/// A checkpoint renames at most this many keys per hold of the log lock.
const SLICE: usize = 256;
/// Zero-fill writes of at most this many bytes.
const FILL_CHUNK: usize = 1 << 20;
/// The longest a committer keeps the log's lock file across batches
/// ([`WalOptions::lock_hold`]).
pub const LOCK_HOLD: Duration = Duration::from_millis(20);
/// How long the log's lock file stays taken after a frame when nothing is
/// queued ([`WalOptions::idle_hold`]).
pub const IDLE_HOLD: Duration = Duration::from_millis(2);
/// A log with frames not checkpointed and no append for this long is
/// checkpointed by the background thread ([`WalOptions::idle_checkpoint`]).
pub const IDLE_CHECKPOINT: Duration = Duration::from_millis(100);
/// A log holding more bytes of frames than this is checkpointed after the
/// append that filled it ([`WalOptions::checkpoint_at`], [`Wal::checkpoint_if_full`]).
pub const CHECKPOINT_AT: u64 = 16 << 20;
/// Past this many times [`WalOptions::checkpoint_at`] bytes of frames, the
/// writer runs the checkpoint itself even where the background thread is
/// there to (back-pressure: the thread has fallen behind the writes).
pub const HARD_FACTOR: u64 = 4;
/// A size-triggered checkpoint of the background thread that failed, or
/// found another one running, is not tried again sooner than this.
const FULL_RETRY: Duration = Duration::from_millis(100);

/// How a [`Wal`] is run.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// The store's options: `sync_blob` (the log's `fdatasync`s and the
    /// checkpoint's fsyncs), the lock timeout and lease, and the encryption
    /// key a put record's payload is checked with.
    pub store: Options,
    /// The log grows by this many bytes at a time ([`GROW_STEP`]; tests use less).
    pub grow_step: u64,
    /// The log grows when fewer than this many bytes are left past its end
    /// ([`MAX_FRAME`]; tests use less).
    pub grow_margin: u64,
    /// Back-pressure: more bytes of frames than this, not checkpointed, and
    /// a committer runs a checkpoint before it appends ([`CHECKPOINT_CAP`]).
    pub checkpoint_cap: u64,
    /// A checkpoint writes and renames its staging files without fsyncing
    /// each, and makes them durable with one `syncfs` before the reset
    /// (docs/WAL.md §1.1). Where the file system has no `syncfs` it fsyncs
    /// each key file it wrote, then the directory. The log keeps the values
    /// until the reset, so a key file torn by a crash before then is
    /// shadowed by its record and written again. Default `false` (an fsync
    /// of each staging file, one directory fsync per slice, as the pure
    /// store must): `syncfs` also flushes every other writer's dirty pages
    /// on that file system, and measured no faster on a busy one (§1).
    pub checkpoint_syncfs: bool,
    /// How long the log's lock file (FORMAT.md §6) may stay taken across
    /// consecutive group commits while appends keep coming (docs/WAL.md §4):
    /// a committer that finishes a frame with more appends queued in this
    /// instance keeps the lock file for the next frame instead of releasing
    /// and taking it again (six metadata calls), and releases it as soon as
    /// its queue is empty, after a failure, or once it has held it this
    /// long (at most a quarter of the lease, so a holder is never judged
    /// dead by the lock file's age). Zero: released after every frame.
    /// Default [`LOCK_HOLD`].
    pub lock_hold: Duration,
    /// How long the log's lock file stays taken after a frame when nothing
    /// is queued (docs/WAL.md §4.1, "Holding the log lock while idle"): a
    /// frame within this time reuses it with no lock-file call; the
    /// background thread releases it once it expires, never later than
    /// [`lock_hold`](Self::lock_hold) after it was taken. The committer
    /// thread of [`Wal::submit`] also waits this long for more before it
    /// ends. Only a log opened with [`Wal::open_shared`] keeps the lock file
    /// idle (it has the background thread). Zero: released when the queue
    /// is empty. Default [`IDLE_HOLD`].
    pub idle_hold: Duration,
    /// The idle checkpoint (docs/WAL.md §5): a writable log opened with
    /// [`Wal::open_shared`] that holds frames not checkpointed and has seen
    /// no append (of any process) for this long is checkpointed by its
    /// background thread. `None` or zero: never. Default [`IDLE_CHECKPOINT`].
    pub idle_checkpoint: Option<Duration>,
    /// The size-triggered checkpoint (docs/WAL.md §5): a write that leaves
    /// more bytes of frames than this calls for one
    /// ([`Wal::checkpoint_if_full`]). The background thread of
    /// [`Wal::open_shared`] runs it while the write returns; without that
    /// thread, or past [`HARD_FACTOR`] times this, the writer runs it.
    /// Default [`CHECKPOINT_AT`].
    pub checkpoint_at: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            store: Options::default(),
            grow_step: GROW_STEP,
            grow_margin: MAX_FRAME as u64,
            checkpoint_cap: CHECKPOINT_CAP,
            checkpoint_syncfs: false,
            lock_hold: LOCK_HOLD,
            idle_hold: IDLE_HOLD,
            idle_checkpoint: Some(IDLE_CHECKPOINT),
            checkpoint_at: CHECKPOINT_AT,
        }
    }
}

/// What the log says of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalLookup {
    /// Its newest value: the whole key file (checked: header, meta segment, key).
    Put(Vec<u8>),
    /// It was deleted.
    Deleted,
    /// Its key file holds its newest value.
    File,
    /// The log has no record of it: its key file, as without a log.
    Absent,
}

/// Counters, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Frames appended by this instance.
    pub frames: u64,
    /// Records appended by this instance.
    pub records: u64,
    /// `fdatasync`s of the log by this instance (appends, growth, resets).
    pub data_syncs: u64,
    /// Checkpoints that ran to their end.
    pub checkpoints: u64,
    /// Resets to a new generation.
    pub resets: u64,
    /// Keys written (renamed or unlinked) by checkpoints.
    pub checkpointed_keys: u64,
    /// Times this instance took the log's lock file (a hold kept across
    /// frames counts once).
    pub log_locks: u64,
    /// Checkpoints the background thread ran because the log was idle
    /// ([`WalOptions::idle_checkpoint`]), whatever their outcome.
    pub idle_checkpoints: u64,
    /// Idle checkpoints that failed (the log keeps its frames; the next
    /// append arms another).
    pub idle_checkpoint_errors: u64,
    /// Size-triggered checkpoints the background thread ran
    /// ([`Wal::checkpoint_if_full`]), whatever their outcome.
    pub full_checkpoints: u64,
    /// Size-triggered checkpoints of the background thread that failed (the
    /// log keeps its frames; the next write past the threshold asks again).
    pub full_checkpoint_errors: u64,
    /// Size-triggered checkpoints a writer ran itself: no background
    /// thread, or the log past [`HARD_FACTOR`] times the threshold.
    pub inline_checkpoints: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    op: WalOp,
    /// The file offset of the record's payload.
    at: u64,
    len: u32,
    seq: u64,
}

/// The index of the current generation (docs/WAL.md §6).
#[derive(Debug)]
struct Index {
    header: WalHeader,
    /// The seq of the last frame read (`first - 1` when none).
    last_seq: u64,
    /// The offset past the last frame read.
    end: u64,
    map: HashMap<[u8; 16], Entry>,
}

impl Index {
    fn empty(header: WalHeader) -> Index {
        Index { header, last_seq: header.first - 1, end: FRAMES_AT as u64, map: HashMap::new() }
    }

    /// Adds a frame read from bytes that start at file offset `base`.
    fn add(&mut self, frame: &WalFrame, base: u64) {
        for r in &frame.records {
            let e = Entry { op: r.op, at: base + r.payload.start as u64, len: r.payload.len() as u32, seq: frame.seq };
            self.map.insert(r.key_hash, e);
        }
        self.last_seq = frame.seq;
        self.end = base + (frame.at + frame.len) as u64;
    }
}

/// A record the log's queue owns; what a [`Decide`] step answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    /// What the record does.
    pub op: WalOp,
    /// The key's hash (XXH3-128 of its CKE, big-endian).
    pub key_hash: [u8; 16],
    /// A put's whole key file; empty for the other ops.
    pub payload: Vec<u8>,
}

/// What an asynchronous append calls with its outcome.
pub type Completion = Box<dyn FnOnce(Result<()>) + Send>;

/// A write's decision, made by the committer **under the log lock**, after
/// its catch-up and before the frame is encoded ([`Wal::append_decided`],
/// [`Wal::submit_decided`]; docs/WAL.md §4.1): the record to put in the
/// frame, or `None` to leave the write out of it (its answer is the
/// closure's business). It may read the log (`Wal::get`, `Wal::records`):
/// the committer holds no other mutex of the log while it runs. It must not
/// take the log lock (`append`, `checkpoint`, `flush_key`, `barrier`,
/// `holds_log_lock`): the committer holds it.
pub type Decide = Box<dyn FnOnce(&Wal) -> Result<Option<OwnedRecord>> + Send>;

struct Pending {
    id: u64,
    records: Vec<OwnedRecord>,
    /// A write decided under the log lock: the most its record's payload
    /// may hold (what the frame reserves for it), and the decision.
    decide: Option<(usize, Decide)>,
    /// The outcome of a write that is not in the frame (left out by its
    /// decision, or its decision failed), set by the commit.
    outcome: Option<Result<()>>,
    /// `None`: a writer blocked in [`Wal::append`] waits for its entry in `done`.
    notify: Option<Completion>,
}

impl Pending {
    fn new(id: u64, records: Vec<OwnedRecord>, decide: Option<(usize, Decide)>, notify: Option<Completion>) -> Pending {
        Pending { id, records, decide, outcome: None, notify }
    }

    /// The payload lengths the frame reserves for this write.
    fn lens(&self) -> Vec<usize> {
        match &self.decide {
            Some((reserve, _)) => vec![*reserve],
            None => self.records.iter().map(|r| r.payload.len()).collect(),
        }
    }
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    pending: VecDeque<Pending>,
    leader: bool,
    /// A committer thread of [`Wal::submit`] runs (or is about to).
    committer: bool,
    done: HashMap<u64, Result<()>>,
}

/// The log lock's file while this instance holds it, possibly across
/// frames ([`WalOptions::lock_hold`]); guarded by the in-process half of
/// the log lock.
#[derive(Default)]
struct LogHold {
    /// The token of the lock file, while it is ours.
    token: Option<String>,
    /// When it was taken.
    since: Option<Instant>,
    /// Kept with nothing queued ([`WalOptions::idle_hold`]): released by the
    /// background thread at this time unless a frame takes it first.
    idle_until: Option<Instant>,
}

thread_local! {
    /// Set by a group commit on its own thread once it holds the log lock and
    /// has caught up: (the log's address, generation, last seq). Until the
    /// commit ends no one else appends (the lock file keeps other processes
    /// out, the commit is this process's one appender), so a catch-up on
    /// this thread that finds the index still there reads nothing (a
    /// decision's reads, the frame's start): two 32-byte reads of the end
    /// hint fewer per lock-free write.
    static CAUGHT_UP: std::cell::Cell<Option<(usize, u64, u64)>> = const { std::cell::Cell::new(None) };
}

/// Clears [`CAUGHT_UP`] when the commit that set it ends, however it ends.
struct CaughtUp;

impl Drop for CaughtUp {
    fn drop(&mut self) {
        CAUGHT_UP.set(None);
    }
}

/// What the background thread of a [`Wal`] opened with [`Wal::open_shared`]
/// is to do, and when.
#[derive(Default)]
struct BgState {
    /// A background thread serves this log (it releases idle holds).
    running: bool,
    /// The log is being dropped: the thread ends.
    stop: bool,
    /// Release the idle hold of the log's lock file then.
    release_at: Option<Instant>,
    /// Run the idle checkpoint then, if the log is still at `seen`.
    checkpoint_at: Option<Instant>,
    /// The (generation, last seq) the log had when the idle checkpoint was
    /// armed: any other by then means appends came, and the wait starts again.
    seen: Option<(u64, u64)>,
    /// Run the size-triggered checkpoint then ([`Wal::checkpoint_if_full`]).
    full_at: Option<Instant>,
    /// After a size-triggered checkpoint that failed or found another
    /// running: not again before this.
    full_retry: Option<Instant>,
    /// Appends submitted while a committer thread of [`Wal::submit`] ran
    /// (it waits for this to change while idle).
    submitted: u64,
    /// That committer waits for more right now: only then does a submit
    /// wake it (a busy one takes what is queued when its frame ends; a
    /// wake per write cost a futex call and woke the background thread too).
    committer_waiting: bool,
    /// Remove the kept key lock files due by then ([`Wal::keep_key_lock`]).
    keys_at: Option<Instant>,
}

/// A key's lock file kept after its holder in this process released it
/// (docs/WAL.md §4.1.2): the next holder here takes it with no file call.
struct KeptKey {
    token: String,
    /// When the lock file was created.
    since: Instant,
    /// When the background thread removes it, unless a holder takes it first.
    until: Instant,
}

#[derive(Default)]
struct Background {
    state: Mutex<BgState>,
    /// Wakes the background thread (a time set earlier, or a stop).
    wake: Condvar,
    /// Wakes the committer thread waiting for more (a submission, or a
    /// stop): its own, so that a write one at a time does not wake the
    /// background thread too (which cost about 16 µs of CPU per write).
    committer_wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// An open write-ahead log of one store directory.
pub struct Wal {
    files: StoreDir,
    path: PathBuf,
    file: RwLock<Box<dyn VfsFile>>,
    options: WalOptions,
    index: Mutex<Index>,
    /// The file's length as last seen (under the log lock).
    file_len: Mutex<u64>,
    /// The in-process half of the log lock, and the lock file while held.
    log_mutex: Mutex<LogHold>,
    /// The key lock files kept idle, by key hash ([`Wal::keep_key_lock`]).
    kept: Mutex<HashMap<u128, KeptKey>>,
    /// Set while the holder of `log_mutex` waits for a frame's `fdatasync`,
    /// the frame and its hint written (see [`Wal::barrier`]).
    syncing: AtomicBool,
    /// The in-process half of the checkpoint lock; holds the (generation,
    /// seq) up to which every record is durable in its key file.
    checkpointed: Mutex<Option<(u64, u64)>>,
    queue: Mutex<Queue>,
    turn: Condvar,
    stats: [AtomicU64; 12],
    /// The background thread's orders ([`Wal::open_shared`]).
    bg: Arc<Background>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("path", &self.path).field("options", &self.options).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A copy of an error for each writer of a rejected frame.
fn copy_error(e: &Error) -> Error {
    let mut message = e.message().to_string();
    if let Some(io) = e.io_error() {
        message = format!("{message}: {io}");
    }
    let c = Error::new(e.code(), message);
    match e.file() {
        Some(f) => c.with_file(f),
        None => c,
    }
}

fn random_generation(not: u64) -> u64 {
    loop {
        let mut b = [0u8; 8];
        if getrandom::getrandom(&mut b).is_err() {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
            b = xxh3_64(&[t.to_le_bytes(), not.to_le_bytes()].concat()).to_le_bytes();
        }
        let g = u64::from_le_bytes(b);
        if g != 0 && g != not {
            return g;
        }
    }
}

const C_FRAMES: usize = 0;
const C_RECORDS: usize = 1;
const C_SYNCS: usize = 2;
const C_CHECKPOINTS: usize = 3;
const C_RESETS: usize = 4;
const C_KEYS: usize = 5;
const C_LOCKS: usize = 6;
const C_IDLE_CHECKPOINTS: usize = 7;
const C_IDLE_ERRORS: usize = 8;
const C_FULL: usize = 9;
const C_FULL_ERRORS: usize = 10;
const C_INLINE: usize = 11;

/// A lock of the FORMAT.md §6 protocol held by this [`Wal`], released on drop.
struct HeldLock<'a> {
    wal: &'a Wal,
    hex: &'static str,
    token: String,
}

impl Drop for HeldLock<'_> {
    fn drop(&mut self) {
        // A lock file that could not be removed names this live process:
        // filelock keeps its token as an orphan our next acquire takes over.
        let _ = self.wal.files.locker().release(self.hex, &self.token);
    }
}

/// The log lock held: the in-process mutex, and the lock file in its
/// [`LogHold`]. On drop the lock file is released, unless [`keep`](Self::keep)
/// was called, appends are queued in this instance and the hold is younger
/// than [`WalOptions::lock_hold`].
struct LogGuard<'a> {
    wal: &'a Wal,
    hold: MutexGuard<'a, LogHold>,
    keep: bool,
}

impl LogGuard<'_> {
    /// The work under the lock succeeded: the lock file may stay for the next frame.
    fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for LogGuard<'_> {
    fn drop(&mut self) {
        let young = self.hold.since.is_some_and(|t| t.elapsed() < self.wal.max_hold());
        if self.keep && young {
            if !lock(&self.wal.queue).pending.is_empty() {
                return;
            }
            // Nothing queued: kept a little longer for the next frame, if a
            // background thread will release it (docs/WAL.md §4.1).
            if let Some(until) = self.wal.idle_release_at(&self.hold) {
                self.hold.idle_until = Some(until);
                // The thread is woken only when it has no earlier time to
                // wake at (then it finds this hold's later time and waits on).
                let mut st = lock(&self.wal.bg.state);
                if st.release_at.is_none_or(|t| t > until) {
                    st.release_at = Some(until);
                    self.wal.bg.wake.notify_all();
                }
                return;
            }
        }
        self.wal.release_hold(&mut self.hold);
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop_background();
        // The thread holds no strong reference while it waits, so it is
        // waiting or about to find the log gone: joined at once. When this
        // drop runs on it (it held the last reference), it ends right after.
        if let Some(t) = lock(&self.bg.thread).take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// The logs of [`Wal::open_shared`] that may keep their lock file idle, for
/// [`release_at_exit`].
static SHARED: Mutex<Vec<Weak<Wal>>> = Mutex::new(Vec::new());

/// Set by [`release_at_exit`]: a checkpoint running on another thread stops
/// after its current slice (as a crash there would, but with its lock file
/// released), so the exit need not wait for the whole log.
static EXITING: AtomicBool = AtomicBool::new(false);

/// Registers `wal` for [`release_at_exit`] (once per process, the hook).
fn release_on_exit(wal: &Arc<Wal>) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        #[cfg(unix)]
        // SAFETY: registers a plain function with no arguments, which never
        // unwinds (it catches any panic).
        unsafe {
            libc::atexit(release_at_exit);
        }
    });
    let mut shared = lock(&SHARED);
    shared.retain(|w| w.strong_count() > 0);
    shared.push(Arc::downgrade(wal));
}

/// At the process's exit (a Node process ends without closing its stores,
/// or calls `process.exit`): each log's lock file kept idle is released,
/// so an exit within the idle hold leaves no lock file (a kill still does:
/// it names a dead process, taken over at once). A checkpoint running on
/// the background thread (the process's event loop may empty while it
/// runs) stops after its slice and is waited for, then kept from starting
/// again, so its lock file goes too. A log busy (a frame, or the background
/// thread releasing it) is waited for up to 100 ms (a checkpoint's slice up
/// to 1 s), never blocked on.
extern "C" fn release_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        EXITING.store(true, Ordering::SeqCst);
        let shared = match SHARED.try_lock() {
            Ok(s) => s,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let deadline = Instant::now() + Duration::from_millis(100);
        for w in shared.iter().filter_map(Weak::upgrade) {
            let ckpt_deadline = Instant::now() + Duration::from_secs(1);
            loop {
                match w.checkpointed.try_lock() {
                    // Held to the end: no checkpoint starts after this.
                    Ok(done) => std::mem::forget(done),
                    Err(std::sync::TryLockError::Poisoned(p)) => std::mem::forget(p.into_inner()),
                    Err(std::sync::TryLockError::WouldBlock) if Instant::now() < ckpt_deadline => {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    Err(std::sync::TryLockError::WouldBlock) => {}
                }
                break;
            }
            if let Ok(mut kept) = w.kept.try_lock() {
                for (hash, k) in kept.drain() {
                    let _ = w.files.locker().release(&format!("{hash:032x}"), &k.token);
                }
            }
            loop {
                match w.log_mutex.try_lock() {
                    Ok(mut hold) => w.release_hold(&mut hold),
                    Err(std::sync::TryLockError::Poisoned(p)) => w.release_hold(&mut p.into_inner()),
                    Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    Err(std::sync::TryLockError::WouldBlock) => {}
                }
                break;
            }
            // No drop (and no join of its thread) while the process exits.
            std::mem::forget(w);
        }
    });
}

/// The committer thread of [`Wal::submit`]: commits while anything is
/// queued; then waits up to `idle_hold` (bounded by the longest hold) for
/// more, holding the log only weakly (so a burst of one-at-a-time writes
/// needs no new thread per frame, and a drop of the log is never delayed),
/// and ends.
fn committer(mut wal: Arc<Wal>) {
    let linger = wal.options.idle_hold.min(wal.max_hold());
    let bg = Arc::clone(&wal.bg);
    loop {
        let seen = {
            let mut q = lock(&wal.queue);
            while !q.pending.is_empty() {
                q = if q.leader { wal.turn.wait(q).unwrap_or_else(PoisonError::into_inner) } else { wal.lead(q) };
            }
            if linger.is_zero() {
                q.committer = false;
                return;
            }
            lock(&bg.state).submitted
        };
        let weak = Arc::downgrade(&wal);
        drop(wal);
        let deadline = Instant::now() + linger;
        let timed_out = {
            let mut st = lock(&bg.state);
            loop {
                let now = Instant::now();
                if st.stop || now >= deadline {
                    break true;
                }
                if st.submitted != seen {
                    break false;
                }
                st.committer_waiting = true;
                st = bg.committer_wake.wait_timeout(st, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
                st.committer_waiting = false;
            }
        };
        let Some(w) = weak.upgrade() else { return };
        wal = w;
        let mut q = lock(&wal.queue);
        if q.pending.is_empty() && timed_out {
            q.committer = false;
            return;
        }
    }
}

/// The background thread of a log opened with [`Wal::open_shared`]:
/// releases the idle hold of the log's lock file when it expires, and runs
/// the idle checkpoint and the size-triggered one. It holds the log only
/// weakly, and only while it acts: it ends when the log is dropped.
fn background(wal: Weak<Wal>, bg: Arc<Background>) {
    let mut st = lock(&bg.state);
    loop {
        if st.stop {
            return;
        }
        let now = Instant::now();
        match [st.release_at, st.checkpoint_at, st.full_at, st.keys_at].into_iter().flatten().min() {
            None => {
                st = bg.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            Some(t) if t > now => {
                st = bg.wake.wait_timeout(st, t - now).unwrap_or_else(PoisonError::into_inner).0;
                continue;
            }
            Some(_) => {}
        }
        let release = st.release_at.is_some_and(|t| t <= now);
        let checkpoint = st.checkpoint_at.is_some_and(|t| t <= now);
        let full = st.full_at.is_some_and(|t| t <= now);
        let keys = st.keys_at.is_some_and(|t| t <= now);
        if keys {
            st.keys_at = None;
        }
        if full {
            st.full_at = None;
        }
        if release {
            st.release_at = None;
        }
        let seen = st.seen;
        if checkpoint {
            st.checkpoint_at = None;
        }
        drop(st);
        let Some(w) = wal.upgrade() else { return };
        if release {
            w.release_idle_hold();
        }
        if keys {
            w.release_kept_keys(false);
        }
        if full {
            w.full_checkpoint();
        }
        if checkpoint {
            w.idle_checkpoint(seen);
        }
        // If this was the last reference, the log's drop runs here and sets `stop`.
        drop(w);
        st = lock(&bg.state);
    }
}

impl Wal {
    /// Opens the log of the store directory `dir` (which must exist), creating
    /// it if there is none: a new log is written whole under a staging name
    /// (zero-filled to [`WalOptions::grow_step`], header slots A and B, an
    /// end hint), fsynced, renamed into place, and the directory fsynced. An
    /// existing log's header is read (`ERR_CORRUPT` when neither slot is
    /// valid, `ERR_UNSUPPORTED_VERSION` for another version) and its frames
    /// scanned (damage is `ERR_CORRUPT`; a torn tail is ignored).
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path, options: WalOptions) -> Result<Wal> {
        options.store.check()?;
        if options.grow_step < (FRAMES_AT + MIN_FRAME) as u64 || !options.grow_step.is_multiple_of(4096) {
            return Err(Error::new(ErrorCode::InvalidArgument, "the log's growth step must be a multiple of 4096 above 12352 bytes"));
        }
        let dir = vfs.canonicalize(dir).map_err(|e| Error::io(e, "cannot resolve the store directory", dir))?;
        let id = xxh3_64(dir.as_os_str().as_encoded_bytes());
        let path = dir.join(WAL_FILE_NAME);
        let files = StoreDir::new(dir, vfs, id, options.store.clone());
        let placeholder = WalHeader { generation: 1, first: 1 };
        let mut wal = Wal {
            file: RwLock::new(Box::new(NoFile)),
            path,
            options,
            index: Mutex::new(Index::empty(placeholder)),
            file_len: Mutex::new(0),
            log_mutex: Mutex::new(LogHold::default()),
            syncing: AtomicBool::new(false),
            kept: Mutex::new(HashMap::new()),
            checkpointed: Mutex::new(None),
            queue: Mutex::new(Queue::default()),
            turn: Condvar::new(),
            stats: Default::default(),
            bg: Arc::default(),
            files,
        };
        let exists = |w: &Wal| w.files.vfs.exists(&w.path).map_err(|e| Error::io(e, "cannot look for the write-ahead log", &w.path));
        if !exists(&wal)? {
            let _held = wal.lock_log()?;
            if !exists(&wal)? {
                wal.create()?;
            }
        }
        let f = if wal.files.options.read_only { wal.files.vfs.open_read(&wal.path) } else { wal.files.vfs.open_write(&wal.path) }
            .map_err(|e| Error::io(e, "cannot open the write-ahead log", &wal.path))?;
        *wal.file.get_mut().unwrap_or_else(PoisonError::into_inner) = f;
        {
            let mut idx = lock(&wal.index);
            wal.rescan(&mut idx)?;
        }
        Ok(wal)
    }

    /// [`open`](Self::open), shared, with a background thread (docs/WAL.md
    /// §4.1, §5) when the log is writable and [`WalOptions::idle_hold`] or
    /// [`WalOptions::idle_checkpoint`] is set: it releases the log's lock
    /// file kept idle after a frame, and checkpoints a log idle with frames
    /// not checkpointed (also those found on open). It holds the log weakly
    /// and ends when the log is dropped (the drop waits for it).
    pub fn open_shared(vfs: Arc<dyn Vfs>, dir: &Path, options: WalOptions) -> Result<Arc<Wal>> {
        let wal = Arc::new(Wal::open(vfs, dir, options)?);
        let hold = !wal.options.idle_hold.is_zero();
        if wal.files.options.read_only || !(hold || wal.idle_checkpoint_after().is_some()) {
            return Ok(wal);
        }
        let (weak, bg) = (Arc::downgrade(&wal), Arc::clone(&wal.bg));
        let thread = std::thread::Builder::new()
            .name("konserve-wal-idle".into())
            .spawn(move || background(weak, bg))
            .map_err(|e| Error::io(e, "cannot start the write-ahead log's background thread", &wal.path))?;
        *lock(&wal.bg.thread) = Some(thread);
        lock(&wal.bg.state).running = hold;
        if hold {
            release_on_exit(&wal);
        }
        let (generation, last_seq, bytes) = {
            let idx = lock(&wal.index);
            (idx.header.generation, idx.last_seq, idx.end - FRAMES_AT as u64)
        };
        if bytes > 0 {
            wal.arm_idle_checkpoint(generation, last_seq);
        }
        Ok(wal)
    }

    /// Ends the background thread of [`open_shared`](Self::open_shared)
    /// (at once, or after the current slice of a checkpoint it is running,
    /// which leaves the rest in the log; the drop joins the thread) and a
    /// committer thread waiting
    /// for more, and releases the log's lock file if it is kept: what a
    /// store's close does, and the drop. The log stays usable, without idle
    /// holds or idle checkpoints, its writers running the size-triggered
    /// checkpoint themselves (frames not checkpointed stay in the log for
    /// the next one).
    pub fn stop_background(&self) {
        {
            let mut st = lock(&self.bg.state);
            st.stop = true;
            st.running = false;
        }
        self.bg.wake.notify_all();
        self.bg.committer_wake.notify_all();
        // An idle checkpoint running on the thread stops after its slice
        // (see `idle_checkpoint`); any checkpoint is waited for, so none holds
        // its lock file once the store is closed. (Before the log lock: a
        // checkpoint takes it while holding this one.)
        drop(lock(&self.checkpointed));
        self.release_kept_keys(true);
        let mut hold = lock(&self.log_mutex);
        self.release_hold(&mut hold);
    }

    /// Keeps key `hash`'s lock file, created at `since` and just released
    /// by its holder in this process, for the next holder here (docs/WAL.md
    /// §4.1.2): `idle_hold` from now, never past the longest hold from
    /// `since`, then the background thread removes it. Gives the token back
    /// when it is not to be kept (no background thread, the hold off or
    /// used up, the process exiting): the caller removes the lock file.
    pub(crate) fn keep_key_lock(&self, hash: u128, token: String, since: Instant) -> Option<String> {
        let now = Instant::now();
        let until = (now + self.options.idle_hold).min(since + self.max_hold());
        if self.options.idle_hold.is_zero() || until <= now || EXITING.load(Ordering::SeqCst) {
            return Some(token);
        }
        let mut st = lock(&self.bg.state);
        if !st.running || st.stop {
            return Some(token);
        }
        lock(&self.kept).insert(hash, KeptKey { token, since, until });
        if st.keys_at.is_none_or(|t| t > until) {
            st.keys_at = Some(until);
            drop(st);
            self.bg.wake.notify_all();
        }
        None
    }

    /// Takes key `hash`'s kept lock file for a new holder in this process
    /// (whose in-process lock is held): its token and when it was created,
    /// while that is within the longest hold; one older is removed here.
    pub(crate) fn take_kept_key(&self, hash: u128) -> Option<(String, Instant)> {
        let k = lock(&self.kept).remove(&hash)?;
        if Instant::now() < k.since + self.max_hold() {
            return Some((k.token, k.since));
        }
        let _ = self.files.locker().release(&format!("{hash:032x}"), &k.token);
        None
    }

    /// Whether this process keeps key `hash`'s lock file idle: a lock-free
    /// write of this process (its in-process lock held) may write the key.
    pub(crate) fn keeps_key(&self, hash: u128) -> bool {
        lock(&self.kept).contains_key(&hash)
    }

    /// Removes the kept key lock files that are due (all of them with
    /// `all`), and arms the background thread for the next one.
    fn release_kept_keys(&self, all: bool) {
        let now = Instant::now();
        let due: Vec<u128> = lock(&self.kept).iter().filter(|(_, k)| all || k.until <= now).map(|(h, _)| *h).collect();
        for hash in due {
            // Each one out of the map and its file removed under one hold of
            // the map: a holder that finds no kept file here (take_kept_key)
            // then finds no file either. Removing the file after letting go
            // of the map made a `try_lock` in that moment meet the file
            // still there, named by this live process: busy, with nobody
            // holding the key.
            let mut kept = lock(&self.kept);
            // Taken by a holder meanwhile, or kept again since: not due any more.
            if !kept.get(&hash).is_some_and(|k| all || k.until <= now) {
                continue;
            }
            let Some(k) = kept.remove(&hash) else { continue };
            // One that cannot be removed names this live process: as after any failed release.
            let _ = self.files.locker().release(&format!("{hash:032x}"), &k.token);
        }
        let next = lock(&self.kept).values().map(|k| k.until).min();
        if let Some(t) = next {
            let mut st = lock(&self.bg.state);
            if st.keys_at.is_none_or(|k| k > t) {
                st.keys_at = Some(t);
            }
        }
    }

    /// The idle checkpoint's delay, when it is on.
    fn idle_checkpoint_after(&self) -> Option<Duration> {
        self.options.idle_checkpoint.filter(|d| !d.is_zero())
    }

    /// When a hold of the log's lock file kept with nothing queued is to be
    /// released: `idle_hold` from now, never past `lock_hold` from when it
    /// was taken; `None` when it is not to be kept (no background thread,
    /// `idle_hold` zero, or no time left).
    fn idle_release_at(&self, hold: &LogHold) -> Option<Instant> {
        if self.options.idle_hold.is_zero() || !lock(&self.bg.state).running {
            return None;
        }
        let until = (Instant::now() + self.options.idle_hold).min(hold.since? + self.max_hold());
        (until > Instant::now()).then_some(until)
    }

    /// The background thread: releases the idle hold if it has expired (a
    /// frame since took it, or kept it to a later time, which is then armed).
    fn release_idle_hold(&self) {
        let mut hold = lock(&self.log_mutex);
        match hold.idle_until {
            Some(t) if t <= Instant::now() => self.release_hold(&mut hold),
            Some(t) => {
                let mut st = lock(&self.bg.state);
                if st.release_at.is_none_or(|r| r > t) {
                    st.release_at = Some(t);
                }
            }
            None => {}
        }
    }

    /// After a frame of `generation` up to `seq`: the idle checkpoint is
    /// due `idle_checkpoint` from now, if the log is still there then.
    fn arm_idle_checkpoint(&self, generation: u64, seq: u64) {
        let Some(after) = self.idle_checkpoint_after() else { return };
        let mut st = lock(&self.bg.state);
        if st.stop || lock(&self.bg.thread).is_none() {
            return;
        }
        // Woken only when it had no time set: an earlier one wakes it anyway.
        if st.checkpoint_at.replace(Instant::now() + after).is_none() {
            self.bg.wake.notify_all();
        }
        st.seen = Some((generation, seq));
    }

    /// The background thread, once the log has been idle for
    /// `idle_checkpoint` since it was at `seen`: appends since (of any
    /// process, read by a catch-up) start the wait again; else a checkpoint.
    /// Its errors are not any write's: the log keeps its frames, the next
    /// append arms another (a failed fsync poisons the log as anywhere:
    /// every later write fails with `ERR_STORE_POISONED`). A checkpoint
    /// another process runs, or appends during this one, mean another wait.
    fn idle_checkpoint(&self, seen: Option<(u64, u64)>) {
        if self.files.check_writable().is_err() {
            return;
        }
        let now = {
            let mut idx = lock(&self.index);
            if self.catch_up(&mut idx).is_err() {
                self.count(C_IDLE_ERRORS, 1);
                return;
            }
            if idx.end == FRAMES_AT as u64 {
                return;
            }
            (idx.header.generation, idx.last_seq)
        };
        if seen != Some(now) {
            self.arm_idle_checkpoint(now.0, now.1);
            return;
        }
        self.count(C_IDLE_CHECKPOINTS, 1);
        match self.checkpoint_as(true) {
            Ok(_) => {
                let idx = lock(&self.index);
                if idx.end > FRAMES_AT as u64 {
                    let (g, s) = (idx.header.generation, idx.last_seq);
                    drop(idx);
                    self.arm_idle_checkpoint(g, s);
                }
            }
            Err(_) => self.count(C_IDLE_ERRORS, 1),
        }
    }

    /// After a write: a log holding more than [`WalOptions::checkpoint_at`]
    /// bytes of frames is checkpointed (docs/WAL.md §5). Where the background
    /// thread of [`open_shared`](Self::open_shared) runs, it is woken to do
    /// it and this returns at once: the write does not wait for thousands of
    /// key files, and a committer thread goes on committing. Without the
    /// thread (turned off, stopped by a close, a read-only log), and past
    /// [`HARD_FACTOR`] times the threshold (the thread has fallen behind),
    /// the writer runs it, past the hard limit after waiting for the one
    /// this process runs. The write is durable already: only a failed fsync
    /// of a checkpoint it ran is its error (the store is poisoned); other
    /// failures leave the frames for the next checkpoint, which is idempotent.
    pub fn checkpoint_if_full(&self) -> Result<()> {
        let at = self.options.checkpoint_at;
        let bytes = self.log_bytes();
        if bytes <= at {
            return Ok(());
        }
        let hard = bytes > at.saturating_mul(HARD_FACTOR);
        if !hard && self.wake_full_checkpoint() {
            return Ok(());
        }
        self.count(C_INLINE, 1);
        let ran = if hard { self.checkpoint_waiting() } else { self.checkpoint() };
        match ran {
            Err(e) if e.code() == ErrorCode::Fsync => Err(e),
            _ => Ok(()),
        }
    }

    /// Asks the background thread for the size-triggered checkpoint (now, or
    /// after a failed one's pause); whether there is a thread to run it.
    fn wake_full_checkpoint(&self) -> bool {
        let mut st = lock(&self.bg.state);
        if st.stop || lock(&self.bg.thread).is_none() {
            return false;
        }
        if st.full_at.is_none() {
            let now = Instant::now();
            st.full_at = Some(st.full_retry.map_or(now, |r| r.max(now)));
            self.bg.wake.notify_all();
        }
        true
    }

    /// The background thread's size-triggered checkpoint. Writes during it
    /// ask for the next one (a checkpoint that saw appends after its start
    /// cannot reset the log, so the next one takes those and resets); a
    /// failure, or another checkpoint running, pauses the asking for
    /// [`FULL_RETRY`], so a lasting error is not retried in a loop. A failed
    /// fsync poisons the log as anywhere.
    fn full_checkpoint(&self) {
        if self.log_bytes() <= self.options.checkpoint_at {
            return;
        }
        self.count(C_FULL, 1);
        let ran = self.checkpoint_as(true).unwrap_or_else(|_| {
            self.count(C_FULL_ERRORS, 1);
            false
        });
        if !ran {
            lock(&self.bg.state).full_retry = Some(Instant::now() + FULL_RETRY);
        }
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What this instance has done so far.
    pub fn stats(&self) -> WalStats {
        let c = |i: usize| self.stats[i].load(Ordering::Relaxed);
        WalStats {
            frames: c(C_FRAMES),
            records: c(C_RECORDS),
            data_syncs: c(C_SYNCS),
            checkpoints: c(C_CHECKPOINTS),
            resets: c(C_RESETS),
            checkpointed_keys: c(C_KEYS),
            log_locks: c(C_LOCKS),
            idle_checkpoints: c(C_IDLE_CHECKPOINTS),
            idle_checkpoint_errors: c(C_IDLE_ERRORS),
            full_checkpoints: c(C_FULL),
            full_checkpoint_errors: c(C_FULL_ERRORS),
            inline_checkpoints: c(C_INLINE),
        }
    }

    fn count(&self, i: usize, n: u64) {
        self.stats[i].fetch_add(n, Ordering::Relaxed);
    }

    /// How many appends wait for the next frame (not counting the one being committed).
    pub fn queued(&self) -> usize {
        lock(&self.queue).pending.len()
    }

    /// Bytes of frames in the current generation (as of the last catch-up).
    pub fn log_bytes(&self) -> u64 {
        lock(&self.index).end - FRAMES_AT as u64
    }

    /// One attempt at a lock file; `None` when busy.
    fn try_file_lock(&self, hex: &'static str) -> Result<Option<HeldLock<'_>>> {
        match self.files.locker().try_acquire(hex) {
            Ok(Attempt::Taken(rec)) => Ok(Some(HeldLock { wal: self, hex, token: rec.token })),
            Ok(Attempt::Busy(_)) => Ok(None),
            Err(e) => Err(self.files.lock_error(e, "cannot take the write-ahead log's lock", hex)),
        }
    }

    /// The log lock: the in-process mutex, then the lock file (polled with
    /// backoff up to the lock timeout) unless this instance still holds it
    /// from the previous frame ([`WalOptions::lock_hold`]).
    fn lock_log(&self) -> Result<LogGuard<'_>> {
        let mut hold = lock(&self.log_mutex);
        let now = Instant::now();
        if hold.since.is_some_and(|t| now - t >= self.max_hold()) || hold.idle_until.is_some_and(|t| t <= now) {
            self.release_hold(&mut hold);
        }
        hold.idle_until = None;
        if hold.token.is_none() {
            let token = self.take_log_file()?;
            hold.token = Some(token);
            hold.since = Some(Instant::now());
            self.count(C_LOCKS, 1);
        }
        Ok(LogGuard { wal: self, hold, keep: false })
    }

    /// Takes the log's lock file: its token.
    fn take_log_file(&self) -> Result<String> {
        let deadline = Instant::now() + self.files.options.lock_timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            match self.files.locker().try_acquire(WAL_LOCK_HEX) {
                Ok(Attempt::Taken(rec)) => return Ok(rec.token),
                Ok(Attempt::Busy(_)) => {}
                Err(e) => return Err(self.files.lock_error(e, "cannot take the write-ahead log's lock", WAL_LOCK_HEX)),
            }
            if Instant::now() >= deadline {
                let lock = self.files.dir.join(crate::filelock::lock_name(WAL_LOCK_HEX));
                return Err(Error::new(
                    ErrorCode::LockTimeout,
                    format!("the write-ahead log stayed locked for longer than the lock timeout; lock file {}", lock.display()),
                )
                .with_file(lock));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(8));
        }
    }

    /// How long the lock file may stay taken across frames.
    fn max_hold(&self) -> Duration {
        self.options.lock_hold.min(self.files.options.lock_lease / 4)
    }

    /// Releases the log's lock file if this instance holds it (under the
    /// in-process mutex).
    fn release_hold(&self, hold: &mut LogHold) {
        if let Some(token) = hold.token.take() {
            // A lock file that could not be removed names this live process:
            // filelock keeps its token as an orphan our next acquire takes over.
            let _ = self.files.locker().release(WAL_LOCK_HEX, &token);
        }
        hold.since = None;
        hold.idle_until = None;
    }

    /// Passes through the log lock (docs/WAL.md §4.1): takes it and releases
    /// it, writing nothing. A locked writer on a lock-free store does this
    /// once it holds its key lock files and before it reads those keys, so
    /// that every lock-free write that found no lock file is in the log by
    /// then, and every later one finds the lock file. When this instance
    /// keeps the lock file across frames, the in-process mutex is enough.
    ///
    /// A frame waiting for its `fdatasync` is passed without waiting for it:
    /// its writer holds the lock file, and every decision made before this
    /// call is in that frame or an earlier one, all written and visible to
    /// the catch-up of a read (so a caller on the JavaScript thread never
    /// waits for the disk here while the committer syncs).
    pub fn barrier(&self) -> Result<()> {
        if matches!(self.log_mutex.try_lock(), Err(std::sync::TryLockError::WouldBlock)) && self.syncing.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut held = self.lock_log()?;
        held.keep();
        Ok(())
    }

    /// Whether this instance holds the log's lock file right now (between
    /// frames too, [`WalOptions::lock_hold`]); waits for a frame being
    /// committed to end.
    pub fn holds_log_lock(&self) -> bool {
        lock(&self.log_mutex).token.is_some()
    }

    fn sync_log(&self, what: &str) -> Result<()> {
        if !self.files.options.sync_blob {
            return Ok(());
        }
        self.count(C_SYNCS, 1);
        let f = self.file.read().unwrap_or_else(PoisonError::into_inner);
        f.sync_data().map_err(|e| self.files.fsync_failed(e, what, &self.path))
    }

    fn write_at(&self, bytes: &[u8], at: u64, what: &str) -> Result<()> {
        let mut f = self.file.write().unwrap_or_else(PoisonError::into_inner);
        f.write_all_at(bytes, at).map_err(|e| Error::io(e, what, &self.path))
    }

    fn read_at(&self, buf: &mut [u8], at: u64) -> Result<()> {
        let f = self.file.read().unwrap_or_else(PoisonError::into_inner);
        f.read_exact_at(buf, at)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => Error::corrupt(format!("the write-ahead log ends before offset {}", at + buf.len() as u64)),
                _ => Error::io(e, "cannot read the write-ahead log", &self.path),
            })
            .map_err(|e| e.with_file(&self.path))
    }

    fn read_upto(&self, buf: &mut [u8], at: u64) -> Result<usize> {
        let f = self.file.read().unwrap_or_else(PoisonError::into_inner);
        let mut got = 0;
        while got < buf.len() {
            match f.read_upto_at(&mut buf[got..], at + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return Err(Error::io(e, "cannot read the write-ahead log", &self.path)),
            }
        }
        Ok(got)
    }

    /// Writes a new log whole under a staging name and renames it into place.
    fn create(&self) -> Result<()> {
        self.files.check_writable()?;
        let header = WalHeader { generation: random_generation(0), first: 1 };
        let mut head = vec![0u8; FRAMES_AT];
        head[SLOT_A..SLOT_A + SLOT_LEN].copy_from_slice(&encode_header_slot(&header));
        head[SLOT_B..SLOT_B + SLOT_LEN].copy_from_slice(&encode_header_slot(&header));
        let hint = encode_hint(&WalHint { generation: header.generation, seq: 0, end: FRAMES_AT as u64 });
        head[HINT_AT..HINT_AT + HINT_LEN].copy_from_slice(&hint);
        let (mut f, stage, _in_flight) = self.files.create_staging_hex(WAL_LOCK_HEX)?;
        let mut renamed = false;
        let result = (|| {
            let werr = |e| Error::io(e, "cannot write a new write-ahead log", &stage);
            f.write_all(&head).map_err(werr)?;
            let zeros = vec![0u8; FILL_CHUNK];
            let mut left = self.options.grow_step as usize - FRAMES_AT;
            while left > 0 {
                let n = left.min(FILL_CHUNK);
                f.write_all(&zeros[..n]).map_err(werr)?;
                left -= n;
            }
            if self.files.options.sync_blob {
                f.sync().map_err(|e| self.files.fsync_failed(e, "cannot fsync a new write-ahead log", &stage))?;
            }
            self.files
                .vfs
                .rename(&stage, &self.path)
                .map_err(|e| Error::io(e, "cannot rename the new write-ahead log into place", &self.path))?;
            renamed = true;
            if self.files.options.sync_blob {
                self.files.sync_dir()?;
            }
            Ok(())
        })();
        drop(f);
        if !renamed {
            let _ = self.files.vfs.remove_file(&stage);
        }
        result
    }

    /// Reads the header and every frame of its generation from scratch
    /// (docs/FORMAT.md §10.3), then looks past the end for damage.
    fn rescan(&self, idx: &mut Index) -> Result<()> {
        let mut head = vec![0u8; SLOT_B + SLOT_LEN];
        let got = self.read_upto(&mut head, 0)?;
        head.truncate(got);
        let header = decode_header(&head).map_err(|e| e.with_file(&self.path))?;
        let file_len = {
            let f = self.file.read().unwrap_or_else(PoisonError::into_inner);
            f.size().map_err(|e| Error::io(e, "cannot stat the write-ahead log", &self.path))?
        };
        *idx = Index::empty(header);
        let mut file_len = file_len;
        let mut buf = Vec::new();
        let mut read_on = false;
        loop {
            loop {
                let at = idx.end;
                if at + FRAME_HEAD as u64 > file_len {
                    break;
                }
                let mut h = [0u8; FRAME_HEAD];
                self.read_at(&mut h, at)?;
                let len = u32::from_le_bytes(h[0..4].try_into().unwrap()) as u64;
                if !(MIN_FRAME as u64..=MAX_FRAME as u64).contains(&len) || at + len > file_len {
                    break;
                }
                buf.resize(len as usize, 0);
                self.read_at(&mut buf, at)?;
                match decode_frame_at(&buf, 0, header.generation, idx.last_seq + 1).map_err(|e| self.at_offset(e, at))? {
                    Some(frame) => idx.add(&frame, at),
                    None => break,
                }
            }
            let tail_len = (file_len - idx.end).min(MAX_FRAME as u64) as usize;
            let mut tail = vec![0u8; tail_len];
            let got = self.read_upto(&mut tail, idx.end)?;
            tail.truncate(got);
            match check_tail(&tail, idx.end, header.generation, idx.last_seq + 1) {
                Ok(()) => break,
                // A later frame past the end: damage, or another process's
                // frames appended while this scan (which takes no lock) read
                // the end. A frame is written only once the one before it is
                // whole, so reading on from the end once more finds every
                // frame whole that was only being written; what still does
                // not fit then is damage.
                Err(e) if !read_on && e.code() == ErrorCode::Corrupt => {
                    read_on = true;
                    let f = self.file.read().unwrap_or_else(PoisonError::into_inner);
                    file_len = f.size().map_err(|e| Error::io(e, "cannot stat the write-ahead log", &self.path))?;
                }
                Err(e) => return Err(e.with_file(&self.path)),
            }
        }
        *lock(&self.file_len) = file_len;
        Ok(())
    }

    /// A frame error of bytes read from offset `at`: the offsets in its
    /// message are relative to `at`; this one names the file and the offset.
    fn at_offset(&self, e: Error, at: u64) -> Error {
        Error::new(e.code(), format!("{} (the frame read from offset {at})", e.message())).with_file(&self.path)
    }

    /// Catches the index up to the end hint (docs/WAL.md §6).
    fn catch_up(&self, idx: &mut Index) -> Result<()> {
        if CAUGHT_UP.get() == Some((self as *const Wal as usize, idx.header.generation, idx.last_seq)) {
            return Ok(());
        }
        let mut hb = [0u8; HINT_LEN];
        self.read_at(&mut hb, HINT_AT as u64)?;
        if let Some(h) = decode_hint(&hb).filter(|h| h.generation == idx.header.generation) {
            if h.seq == idx.last_seq && h.end == idx.end {
                return Ok(());
            }
            // Later frames of this generation: read just those, if they all fit.
            if h.seq > idx.last_seq && h.end > idx.end && h.end - idx.end <= 1 << 30 && self.read_frames(idx, &h)? {
                return Ok(());
            }
        }
        self.rescan(idx)
    }

    /// Reads the frames from the index's end to the hint's; whether they all fit.
    fn read_frames(&self, idx: &mut Index, hint: &WalHint) -> Result<bool> {
        let base = idx.end;
        let mut buf = vec![0u8; (hint.end - base) as usize];
        if self.read_upto(&mut buf, base)? < buf.len() {
            return Ok(false);
        }
        let mut pos = 0;
        while pos < buf.len() {
            match decode_frame_at(&buf, pos, idx.header.generation, idx.last_seq + 1).map_err(|e| self.at_offset(e, base))? {
                Some(frame) => {
                    pos += frame.len;
                    idx.add(&frame, base);
                }
                None => return Ok(false),
            }
        }
        Ok(idx.last_seq == hint.seq)
    }

    /// Appends `records` as part of one frame (with those of the other
    /// writers in flight: group commit), and returns once that frame is
    /// durable: one `pwrite` of the frame, one of the end hint, one
    /// `fdatasync`. A multi-record call is durable all or nothing. Errors:
    /// `ERR_INVALID_ARGUMENT` (no records, a malformed record, more than one
    /// frame holds), `ERR_FSYNC` (the log's `fdatasync` failed: this `Wal`
    /// is poisoned, every later write fails with `ERR_STORE_POISONED`), a
    /// write's error (`ERR_NO_SPACE`, `ERR_IO`: nothing of the frame is
    /// acknowledged, the next frame is written over it).
    pub fn append(&self, records: &[NewWalRecord<'_>]) -> Result<()> {
        // What no frame could hold is refused before it joins a batch.
        encode_frame(1, 1, records)?;
        let owned = records.iter().map(|r| OwnedRecord { op: r.op, key_hash: r.key_hash, payload: r.payload.to_vec() }).collect();
        self.append_pending(owned, None)
    }

    /// [`append`](Self::append) of one write decided under the log lock
    /// (docs/WAL.md §4.1): `decide` runs in the group commit that takes this
    /// write, after the log lock and the catch-up, before the frame is
    /// encoded; its record (a payload of at most `reserve` bytes) joins the
    /// frame, or with `None` the write is left out (and answered `Ok` once
    /// the frame is done, durable or not). Returns once the frame is
    /// durable: an error of the commit (the log lock, the frame's write or
    /// `fdatasync`) or of `decide` is this write's.
    pub fn append_decided(&self, reserve: usize, decide: Decide) -> Result<()> {
        Self::check_reserve(reserve)?;
        self.append_pending(Vec::new(), Some((reserve, decide)))
    }

    fn check_reserve(reserve: usize) -> Result<()> {
        if frame_len([reserve]) > MAX_FRAME {
            return Err(Error::new(ErrorCode::InvalidArgument, "a decided write's reserve exceeds a frame"));
        }
        Ok(())
    }

    fn append_pending(&self, owned: Vec<OwnedRecord>, decide: Option<(usize, Decide)>) -> Result<()> {
        let mut q = lock(&self.queue);
        let id = q.next_id;
        q.next_id += 1;
        q.pending.push_back(Pending::new(id, owned, decide, None));
        loop {
            if let Some(r) = q.done.remove(&id) {
                return r;
            }
            if !q.leader {
                q = self.lead(q);
                continue;
            }
            q = self.turn.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// [`append`](Self::append) without blocking the caller: the records
    /// join the queue, and `done` is called with the outcome once their
    /// frame is durable (or rejected), on the thread that committed it. A
    /// committer thread is started when no writer leads a group commit, and
    /// ends when the queue is empty. A record no frame could hold is refused
    /// here, before it joins the queue.
    pub fn submit(self: &Arc<Self>, records: &[NewWalRecord<'_>], done: Completion) -> Result<()> {
        encode_frame(1, 1, records)?;
        let owned = records.iter().map(|r| OwnedRecord { op: r.op, key_hash: r.key_hash, payload: r.payload.to_vec() }).collect();
        self.submit_pending(owned, None, done)
    }

    /// [`submit`](Self::submit) of one write decided under the log lock, as
    /// [`append_decided`](Self::append_decided): `done` gets the outcome on
    /// the committer thread.
    pub fn submit_decided(self: &Arc<Self>, reserve: usize, decide: Decide, done: Completion) -> Result<()> {
        Self::check_reserve(reserve)?;
        self.submit_pending(Vec::new(), Some((reserve, decide)), done)
    }

    fn submit_pending(self: &Arc<Self>, owned: Vec<OwnedRecord>, decide: Option<(usize, Decide)>, done: Completion) -> Result<()> {
        let mut q = lock(&self.queue);
        let id = q.next_id;
        q.next_id += 1;
        q.pending.push_back(Pending::new(id, owned, decide, Some(done)));
        if q.committer {
            drop(q);
            // It may be waiting for more (WalOptions::idle_hold).
            let mut st = lock(&self.bg.state);
            st.submitted += 1;
            if st.committer_waiting {
                drop(st);
                self.bg.committer_wake.notify_one();
            }
            return Ok(());
        }
        q.committer = true;
        drop(q);
        let wal = Arc::clone(self);
        std::thread::Builder::new().name("konserve-wal-commit".into()).spawn(move || committer(wal)).map(|_| ()).map_err(|e| {
            // Not queued after all: the caller has the error, never the completion.
            let mut q = lock(&self.queue);
            q.committer = false;
            q.pending.retain(|p| p.id != id);
            Error::io(e, "cannot start the write-ahead log's committer thread", &self.path)
        })
    }

    /// Leads one group commit: takes the queued appends that fit one frame,
    /// commits them with the queue unlocked, and hands out the outcome.
    fn lead<'a>(&'a self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        q.leader = true;
        let mut batch = Vec::new();
        let mut lens: Vec<usize> = Vec::new();
        while let Some(p) = q.pending.front() {
            let more = p.lens();
            if !batch.is_empty() && frame_len(lens.iter().copied().chain(more.iter().copied())) > MAX_FRAME {
                break;
            }
            lens.extend(more);
            batch.push(q.pending.pop_front().expect("a front"));
        }
        drop(q);
        let result = self.commit(&mut batch);
        if result.is_err() {
            // A commit that failed before it took the log lock leaves a hold
            // kept by the previous frame: never keep it past a failure.
            let mut hold = lock(&self.log_mutex);
            self.release_hold(&mut hold);
        }
        let outcome = |r: &Result<()>| match r {
            Ok(()) => Ok(()),
            Err(e) => Err(copy_error(e)),
        };
        let mut waiting = Vec::new();
        for p in batch.iter_mut() {
            let r = p.outcome.take().unwrap_or_else(|| outcome(&result));
            if let Some(n) = p.notify.take() {
                n(r);
            } else {
                waiting.push((p.id, r));
            }
        }
        let mut q = lock(&self.queue);
        for (id, r) in waiting {
            q.done.insert(id, r);
        }
        q.leader = false;
        self.turn.notify_all();
        q
    }

    /// One group commit: back-pressure, the log lock, catch-up, the
    /// decisions of decided writes (docs/WAL.md §4.1), room, the frame, the
    /// hint, one `fdatasync`.
    fn commit(&self, batch: &mut [Pending]) -> Result<()> {
        self.files.check_writable()?;
        // The index as this process last read it (no catch-up: the one
        // under the lock just below reads the hint; appends by others since
        // are seen by the next frame's check).
        let over = lock(&self.index).end - FRAMES_AT as u64 > self.options.checkpoint_cap;
        if over {
            self.checkpoint()?;
        }
        let mut held = self.lock_log()?;
        // The catch-up under the lock, so that each decision reads the log
        // as of its end; from here to the frame the index stays current.
        let _caught_up = {
            let mut idx = lock(&self.index);
            self.catch_up(&mut idx)?;
            CAUGHT_UP.set(Some((self as *const Wal as usize, idx.header.generation, idx.last_seq)));
            CaughtUp
        };
        if batch.iter().any(|p| p.decide.is_some()) {
            // Each decision in order, with no mutex of the log held but the
            // log lock's (a decision reads through `get`).
            for p in batch.iter_mut() {
                let Some((reserve, decide)) = p.decide.take() else { continue };
                match decide(self) {
                    Ok(Some(r)) if r.payload.len() <= reserve => p.records = vec![r],
                    Ok(Some(_)) => {
                        p.outcome = Some(Err(Error::new(ErrorCode::InvalidArgument, "a decided record exceeds the room reserved for it")))
                    }
                    Ok(None) => p.outcome = Some(Ok(())),
                    Err(e) => p.outcome = Some(Err(e)),
                }
            }
        }
        let records: Vec<NewWalRecord<'_>> = batch
            .iter()
            .filter(|p| p.outcome.is_none())
            .flat_map(|p| &p.records)
            .map(|r| NewWalRecord { op: r.op, key_hash: r.key_hash, payload: &r.payload })
            .collect();
        if !records.is_empty() {
            self.write_frame(&records)?;
        }
        held.keep();
        Ok(())
    }

    /// Writes one frame of `records` at the end (catch-up, room, the frame,
    /// the hint, one `fdatasync`). The caller holds the log lock.
    fn write_frame(&self, records: &[NewWalRecord<'_>]) -> Result<()> {
        let mut idx = lock(&self.index);
        self.catch_up(&mut idx)?;
        let seq = idx.last_seq + 1;
        let generation = idx.header.generation;
        let frame = encode_frame(generation, seq, records)?;
        let at = idx.end;
        let end = at + frame.len() as u64;
        self.ensure_room(end)?;
        drop(idx);
        self.write_at(&frame, at, "cannot write a frame to the write-ahead log")?;
        let hint = encode_hint(&WalHint { generation, seq, end });
        if let Err(e) = self.write_at(&hint, HINT_AT as u64, "cannot write the write-ahead log's end hint") {
            // The frame is whole and fits: a reader that scans may have seen
            // it, so it stays (never acknowledged; the next frame follows it).
            self.take_in_own_frame(&mut lock(&self.index), &frame, generation, seq, at);
            return Err(e);
        }
        self.syncing.store(true, Ordering::Release);
        let synced = self.sync_log("cannot fdatasync the write-ahead log");
        self.syncing.store(false, Ordering::Release);
        synced?;
        self.count(C_FRAMES, 1);
        self.count(C_RECORDS, records.len() as u64);
        self.arm_idle_checkpoint(generation, seq);
        // The frame is durable: acknowledged whatever happens now. The index
        // takes it in here from the bytes just written (no read back), unless
        // a reader's catch-up read it meanwhile; anything else, at the next
        // catch-up.
        let mut idx = lock(&self.index);
        if !self.take_in_own_frame(&mut idx, &frame, generation, seq, at) {
            let _ = self.catch_up(&mut idx);
        }
        Ok(())
    }

    /// Takes the frame this process just wrote at `at` into the index from
    /// its bytes (no read back). Whether it did: not when a reader's
    /// catch-up took it in meanwhile, or the index is elsewhere.
    fn take_in_own_frame(&self, idx: &mut Index, frame: &[u8], generation: u64, seq: u64, at: u64) -> bool {
        match decode_frame_at(frame, 0, generation, seq) {
            Ok(Some(f)) if idx.header.generation == generation && idx.last_seq + 1 == seq && idx.end == at => {
                idx.add(&f, at);
                true
            }
            _ => false,
        }
    }

    /// Whether this log takes writes: `ERR_STORE_POISONED` once one of its
    /// fsyncs failed, `ERR_READ_ONLY` when opened read-only.
    pub fn check_writable(&self) -> Result<()> {
        self.files.check_writable()
    }

    /// Every key the log has a record of, with the op of its newest record
    /// (after catching up): what a listing takes over the key files (docs/WAL.md §6).
    pub fn records(&self) -> Result<Vec<([u8; 16], WalOp)>> {
        let mut idx = lock(&self.index);
        self.catch_up(&mut idx)?;
        Ok(idx.map.iter().map(|(h, e)| (*h, e.op)).collect())
    }

    /// Before a write that goes to a key file (a large value, a blob, an
    /// append log, a trim: docs/WAL.md §4 step 5) of a key whose newest
    /// record is a put or a delete, which would shadow that file: under the
    /// log lock, the record's value is written into the key file (a put:
    /// staging file, fsync, rename; a delete: unlink), the directory
    /// fsynced, and only then a file record appended, `fdatasync`. From then
    /// on the key file holds the key's newest value and no checkpoint
    /// touches it, so the caller, holding the key's lock, may replace the
    /// file as without a log. A crash before the file record leaves the
    /// record, whose value the file now also holds. Returns whether it
    /// wrote anything (`false`: no record, or a file record already).
    pub fn flush_key(&self, key_hash: &[u8; 16]) -> Result<bool> {
        self.files.check_writable()?;
        let entry = {
            let mut idx = lock(&self.index);
            self.catch_up(&mut idx)?;
            idx.map.get(key_hash).copied()
        };
        if entry.is_none_or(|e| e.op == WalOp::File) {
            return Ok(false);
        }
        let _held = self.lock_log()?;
        let entry = {
            let mut idx = lock(&self.index);
            self.catch_up(&mut idx)?;
            idx.map.get(key_hash).copied()
        };
        let Some(e) = entry.filter(|e| e.op != WalOp::File) else { return Ok(false) };
        let target = self.files.dir.join(format!("{}{KEY_FILE_SUFFIX}", hex(key_hash)));
        match e.op {
            WalOp::Put => {
                let mut payload = vec![0u8; e.len as usize];
                self.read_at(&mut payload, e.at)?;
                self.check_payload(&payload, key_hash, e.at)?;
                let (mut f, stage, _in_flight) = self.files.create_staging_hex(&hex(key_hash))?;
                let result = (|| {
                    f.write_all(&payload).map_err(|err| Error::io(err, "cannot write a staging file", &stage))?;
                    if self.files.options.sync_blob {
                        f.sync().map_err(|err| self.files.fsync_failed(err, "cannot fsync a staging file", &stage))?;
                    }
                    self.files
                        .vfs
                        .rename(&stage, &target)
                        .map_err(|err| Error::io(err, "cannot rename a staging file over the key file", &target))
                })();
                drop(f);
                if result.is_err() {
                    let _ = self.files.vfs.remove_file(&stage);
                }
                result?;
            }
            WalOp::Delete => match self.files.vfs.remove_file(&target) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(err, "cannot remove a deleted key's file", &target)),
            },
            WalOp::File => unreachable!("filtered above"),
        }
        if self.files.options.sync_blob {
            self.files.sync_dir()?;
        }
        self.write_frame(&[NewWalRecord { op: WalOp::File, key_hash: *key_hash, payload: &[] }])?;
        Ok(true)
    }

    /// Grows the file (zero-filled, fsynced, in steps) until `end` plus the
    /// margin fits. Under the log lock.
    fn ensure_room(&self, end: u64) -> Result<()> {
        let want = end + self.options.grow_margin.max(1);
        let mut len = lock(&self.file_len);
        if want <= *len {
            return Ok(());
        }
        *len = {
            let f = self.file.read().unwrap_or_else(PoisonError::into_inner);
            f.size().map_err(|e| Error::io(e, "cannot stat the write-ahead log", &self.path))?
        };
        if want <= *len {
            return Ok(());
        }
        self.files.check_writable()?;
        let step = self.options.grow_step;
        let target = want.div_ceil(step) * step;
        let zeros = vec![0u8; FILL_CHUNK];
        let mut at = *len;
        while at < target {
            let n = ((target - at) as usize).min(FILL_CHUNK);
            self.write_at(&zeros[..n], at, "cannot grow the write-ahead log")?;
            at += n as u64;
        }
        if self.files.options.sync_blob {
            self.count(C_SYNCS, 1);
            let f = self.file.read().unwrap_or_else(PoisonError::into_inner);
            f.sync().map_err(|e| self.files.fsync_failed(e, "cannot fsync the grown write-ahead log", &self.path))?;
        }
        *len = target;
        Ok(())
    }

    /// What the log says of the key whose hash (XXH3-128 of its CKE,
    /// big-endian) is `key_hash`, after catching up. A put's payload is
    /// checked as this key's file (header, meta segment, key); one that is
    /// not (a reset reused its offset since the index was read) sends the
    /// reader back to the hint: a new generation means catch up and look
    /// again, the same one means the error stands (`ERR_CORRUPT` or
    /// `ERR_KEY_MISMATCH`, naming the log and the offset).
    pub fn get(&self, key_hash: &[u8; 16]) -> Result<WalLookup> {
        for _ in 0..16 {
            let (entry, generation) = {
                let mut idx = lock(&self.index);
                self.catch_up(&mut idx)?;
                (idx.map.get(key_hash).copied(), idx.header.generation)
            };
            let Some(e) = entry else { return Ok(WalLookup::Absent) };
            match e.op {
                WalOp::Delete => return Ok(WalLookup::Deleted),
                WalOp::File => return Ok(WalLookup::File),
                WalOp::Put => {}
            }
            let mut payload = vec![0u8; e.len as usize];
            let checked = self.read_at(&mut payload, e.at).and_then(|()| self.check_payload(&payload, key_hash, e.at));
            match checked {
                Ok(()) => return Ok(WalLookup::Put(payload)),
                Err(err) => {
                    let mut hb = [0u8; HINT_LEN];
                    self.read_at(&mut hb, HINT_AT as u64)?;
                    if decode_hint(&hb).is_some_and(|h| h.generation == generation) {
                        return Err(err);
                    }
                }
            }
        }
        Err(Error::new(ErrorCode::Io, "the write-ahead log was reset too often during one read").with_file(&self.path))
    }

    fn check_payload(&self, payload: &[u8], key_hash: &[u8; 16], at: u64) -> Result<()> {
        let ctx = self.files.context(u128::from_be_bytes(*key_hash));
        let bad = |e: Error| Error::new(e.code(), format!("the put record at offset {at}: {}", e.message())).with_file(&self.path);
        let (_, meta) = file::parse_head(payload, payload.len() as u64, &ctx).map_err(bad)?;
        if crate::keyhash::key_hash(&meta.key).to_be_bytes() != *key_hash {
            return Err(bad(Error::new(ErrorCode::KeyMismatch, "the payload holds another key")));
        }
        Ok(())
    }

    /// Runs a checkpoint (docs/WAL.md §5) unless one runs already (in this
    /// process or another: then `Ok(false)`): the newest record of each key
    /// written into its key file (a put: staging file, fsync, rename; a
    /// delete: unlink), per slice of at most 256 keys under the log lock,
    /// then one directory fsync (or one `syncfs` at the end,
    /// [`WalOptions::checkpoint_syncfs`]); then, if no frame was appended meanwhile, the
    /// reset: a new generation in slot A, `fdatasync`, slot B, `fdatasync`,
    /// and the end hint of the empty log.
    pub fn checkpoint(&self) -> Result<bool> {
        self.checkpoint_as(false)
    }

    /// [`checkpoint`](Self::checkpoint); one the background thread runs
    /// (`background`) also stops after its current slice once the
    /// background is stopped (a close, the drop), as at exit.
    fn checkpoint_as(&self, background: bool) -> Result<bool> {
        self.files.check_writable()?;
        let Ok(done) = self.checkpointed.try_lock() else { return Ok(false) };
        self.checkpoint_holding(done, background)
    }

    /// [`checkpoint`](Self::checkpoint), after waiting for the one this
    /// process runs (back-pressure past the hard limit: the writer waits;
    /// that one's records are then in their key files, and this one takes
    /// the rest, and resets the log if nothing was appended meanwhile: on a
    /// committer thread nothing of this process is). Not once the process
    /// exits (the exit hook keeps checkpoints from starting).
    fn checkpoint_waiting(&self) -> Result<bool> {
        self.files.check_writable()?;
        loop {
            match self.checkpointed.try_lock() {
                Ok(done) => return self.checkpoint_holding(done, false),
                Err(std::sync::TryLockError::WouldBlock) if !EXITING.load(Ordering::Relaxed) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return Ok(false),
            }
        }
    }

    /// The checkpoint, its in-process lock held (`done`).
    fn checkpoint_holding(&self, mut done: MutexGuard<'_, Option<(u64, u64)>>, background: bool) -> Result<bool> {
        let Some(_ckpt) = self.try_file_lock(CHECKPOINT_LOCK_HEX)? else { return Ok(false) };
        let (generation, s, todo) = {
            let mut idx = lock(&self.index);
            self.catch_up(&mut idx)?;
            let from = match *done {
                Some((g, seq)) if g == idx.header.generation => seq,
                _ => 0,
            };
            let mut todo: Vec<([u8; 16], Entry)> = idx.map.iter().filter(|(_, e)| e.seq > from).map(|(h, e)| (*h, *e)).collect();
            todo.sort_by_key(|(_, e)| e.at);
            (idx.header.generation, idx.last_seq, todo)
        };
        let by_fs = self.files.options.sync_blob && self.options.checkpoint_syncfs;
        let mut written = Vec::new();
        for slice in todo.chunks(SLICE) {
            if EXITING.load(Ordering::Relaxed) || (background && lock(&self.bg.state).stop) {
                // Its key files so far are renamed but not yet made durable
                // (by_fs): the log keeps every record, as after a crash here.
                return Ok(false);
            }
            self.checkpoint_slice(slice, by_fs, &mut written)?;
        }
        if by_fs && !written.is_empty() {
            self.sync_written(&written)?;
        }
        *done = Some((generation, s));
        self.count(C_CHECKPOINTS, 1);
        // The reset, only if nothing was appended after S.
        let _held = self.lock_log()?;
        let mut idx = lock(&self.index);
        self.catch_up(&mut idx)?;
        if idx.header.generation != generation || idx.last_seq != s || idx.end == FRAMES_AT as u64 {
            return Ok(true);
        }
        let header = WalHeader { generation: random_generation(generation), first: s + 1 };
        let slot = encode_header_slot(&header);
        self.write_at(&slot, SLOT_A as u64, "cannot write the write-ahead log's header slot A")?;
        self.sync_log("cannot fdatasync the write-ahead log's header slot A")?;
        self.write_at(&slot, SLOT_B as u64, "cannot write the write-ahead log's header slot B")?;
        self.sync_log("cannot fdatasync the write-ahead log's header slot B")?;
        *idx = Index::empty(header);
        let hint = encode_hint(&WalHint { generation: header.generation, seq: s, end: FRAMES_AT as u64 });
        self.write_at(&hint, HINT_AT as u64, "cannot write the write-ahead log's end hint")?;
        *done = Some((header.generation, s));
        self.count(C_RESETS, 1);
        Ok(true)
    }

    /// Makes the key files a checkpoint wrote (renamed without fsync) and
    /// the directory durable: one `syncfs`, or where there is none, an fsync
    /// of each key file written, then of the directory.
    fn sync_written(&self, written: &[(WalOp, PathBuf)]) -> Result<()> {
        match self.files.vfs.sync_fs(&self.files.dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
            Err(e) => return Err(self.files.fsync_failed(e, "cannot syncfs the store's file system", &self.files.dir)),
        }
        for (op, path) in written {
            if *op != WalOp::Put {
                continue;
            }
            match self.files.vfs.open_read(path) {
                Ok(f) => f.sync().map_err(|e| self.files.fsync_failed(e, "cannot fsync a checkpointed key file", path))?,
                // Replaced or removed since: whoever did it made it durable.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(e, "cannot open a checkpointed key file", path)),
            }
        }
        self.files.sync_dir()
    }

    /// Stages the puts of one slice (fsynced), then under the log lock renames
    /// those still newest over their key files (a delete: unlinks the key
    /// file), drops the others, and fsyncs the directory once.
    fn checkpoint_slice(&self, slice: &[([u8; 16], Entry)], by_fs: bool, written: &mut Vec<(WalOp, PathBuf)>) -> Result<()> {
        let mut staged: Vec<Staged> = Vec::with_capacity(slice.len());
        let fsync_each = self.files.options.sync_blob && !by_fs;
        let result = self.stage_slice(slice, fsync_each, &mut staged).and_then(|()| {
            let mut held = self.lock_log()?;
            let mut idx = lock(&self.index);
            self.catch_up(&mut idx)?;
            let mut changed = 0u64;
            for ((hash, entry), stage) in slice.iter().zip(staged.iter_mut()) {
                if idx.map.get(hash) != Some(entry) {
                    continue;
                }
                let target = self.files.dir.join(format!("{}{KEY_FILE_SUFFIX}", hex(hash)));
                match entry.op {
                    WalOp::Put => {
                        let (from, _) = stage.as_ref().expect("a staged put");
                        self.files
                            .vfs
                            .rename(from, &target)
                            .map_err(|e| Error::io(e, "cannot rename a staging file over the key file", &target))?;
                        *stage = None;
                    }
                    WalOp::Delete => match self.files.vfs.remove_file(&target) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(e, "cannot remove a deleted key's file", &target)),
                    },
                    WalOp::File => continue,
                }
                if by_fs {
                    written.push((entry.op, target));
                }
                changed += 1;
            }
            drop(idx);
            // The directory fsync needs no log lock: the reset waits for it.
            held.keep();
            drop(held);
            if changed > 0 && fsync_each {
                self.files.sync_dir()?;
            }
            self.count(C_KEYS, changed);
            Ok(())
        });
        for (path, _) in staged.into_iter().flatten() {
            let _ = self.files.vfs.remove_file(&path);
        }
        result
    }

    /// Writes the payload of each put of `slice` to a new staging file and
    /// fsyncs it (up to 64 threads at once where the file system allows).
    fn stage_slice(&self, slice: &[([u8; 16], Entry)], fsync: bool, staged: &mut Vec<Staged>) -> Result<()> {
        let threads = if self.files.vfs.parallel_sync() && slice.len() >= 4 { 64 } else { 1 };
        stage_parallel(slice, threads, staged, |part, out| {
            part.iter().try_for_each(|(hash, e)| {
                if e.op != WalOp::Put {
                    out.push(None);
                    return Ok(());
                }
                let mut payload = vec![0u8; e.len as usize];
                self.read_at(&mut payload, e.at)?;
                let (mut f, stage, in_flight) = self.files.create_staging_hex(&hex(hash))?;
                out.push(Some((stage.clone(), in_flight)));
                f.write_all(&payload).map_err(|err| Error::io(err, "cannot write a staging file", &stage))?;
                if fsync {
                    f.sync().map_err(|err| self.files.fsync_failed(err, "cannot fsync a staging file", &stage))?;
                }
                Ok(())
            })
        })?;
        if staged.len() != slice.len() {
            return Err(Error::new(ErrorCode::Io, "a checkpoint slice was not staged whole"));
        }
        Ok(())
    }
}

/// A checkpoint's staging file of a put (with its registration against the
/// sweep), or `None` for a delete or file record.
type Staged = Option<(PathBuf, InFlight)>;

fn hex(hash: &[u8; 16]) -> String {
    format!("{:032x}", u128::from_be_bytes(*hash))
}

/// The file handle before the log is open.
struct NoFile;

impl VfsFile for NoFile {
    fn write_all(&mut self, _: &[u8]) -> io::Result<()> {
        Err(io::ErrorKind::NotFound.into())
    }
    fn write_all_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::ErrorKind::NotFound.into())
    }
    fn set_len(&mut self, _: u64) -> io::Result<()> {
        Err(io::ErrorKind::NotFound.into())
    }
    fn read_exact_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
        Err(io::ErrorKind::NotFound.into())
    }
    fn size(&self) -> io::Result<u64> {
        Err(io::ErrorKind::NotFound.into())
    }
    fn sync(&self) -> io::Result<()> {
        Err(io::ErrorKind::NotFound.into())
    }
}

/// The hash a record names for a key given as its CKE: XXH3-128, big-endian.
pub fn record_hash(cke: &[u8]) -> [u8; 16] {
    crate::keyhash::key_hash(cke).to_be_bytes()
}
