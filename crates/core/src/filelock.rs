//! The cross-process key lock (FORMAT.md §6): one lock file per key,
//! `.<hex>.lock`, created by `O_CREAT | O_EXCL` and one write, holding one
//! line that names its holder. The pure TypeScript store
//! (ts/backends/pure/store.ts) implements the same protocol, so native and pure
//! processes exclude each other.
//!
//! - Acquire: create the lock file exclusively (`EEXIST`: held) and write the
//!   record (a read-back only if that took 1 s or more). An empty or partial
//!   lock file counts as held until it is [`PARTIAL_STALE`] old: a process
//!   killed between the create and the write blocks the key that long.
//!   Older builds created the file whole by `link(2)` of a `.lkt` temp file;
//!   both ways create the same name exclusively, so they exclude each other,
//!   and the sweep still removes leftover `.lkt` files.
//! - A holder is dead when its process is gone (same boot and pid namespace:
//!   `/proc/<pid>/stat` with the recorded start time), else when the lock
//!   file is older than the lease.
//! - Takeover of a dead holder's lock: the marker `.<hex>.<dead>.<n>.brk`
//!   (created like a lock file; judged like one, so an empty marker is its
//!   taker's until PARTIAL_STALE old) admits one taker, which re-reads the
//!   lock and renames a fresh record (written to a `.lkt` temp file) over it
//!   only if the dead token is still there.
//! - Release: unlink the lock file only if it still holds our token.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::vfs::Vfs;
pub use crate::vfs::{clean_host, parse_proc_stat, real_identity, Identity};

/// How old the lock file of a holder whose liveness cannot be checked (other
/// host, other pid namespace) must be before it counts as dead.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How old an empty or partial lock file (one being written, or left by a
/// process killed between its create and its write) or a leftover temp file
/// must be before it counts as abandoned.
pub const PARTIAL_STALE: Duration = Duration::from_secs(5);

/// A create and write of a lock file faster than this (a fifth of
/// [`PARTIAL_STALE`]) cannot have been taken over: no read-back.
const SKIP_READ_BACK: Duration = Duration::from_secs(1);

/// The most takeover markers tried for one dead token (each one left by a
/// taker that died in the middle of its takeover).
const MAX_MARKERS: u32 = 64;

/// A record is one short line; anything longer is not ours.
const MAX_RECORD: usize = 1024;

/// A lock file's content: a fresh token and its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// 32 lowercase hex digits (128 random bits), fresh per acquisition.
    pub token: String,
    /// The holder.
    pub who: Identity,
}

/// A record field as written: its text, or `-` when unknown (also the staging tag's line, staging.rs).
pub(crate) fn field(s: &Option<impl ToString>) -> String {
    s.as_ref().map_or_else(|| "-".to_string(), |v| v.to_string())
}

impl Record {
    /// A record with a fresh random token.
    pub fn fresh(who: Identity) -> Record {
        let mut bytes = [0u8; 16];
        if getrandom::getrandom(&mut bytes).is_err() {
            // No OS randomness: a time-and-counter token is still unique here.
            static N: AtomicU64 = AtomicU64::new(0);
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
            bytes[..8].copy_from_slice(&t.to_le_bytes());
            bytes[8..12].copy_from_slice(&who.pid.to_le_bytes());
            bytes[12..].copy_from_slice(&(N.fetch_add(1, Ordering::Relaxed) as u32).to_le_bytes());
        }
        Record { token: bytes.iter().map(|b| format!("{b:02x}")).collect(), who }
    }

    /// The line written to the file.
    pub fn line(&self) -> String {
        let w = &self.who;
        format!(
            "konserve-lock 1 {} {} {} {} {} {}\n",
            self.token,
            field(&w.boot_id),
            field(&w.pid_ns),
            w.pid,
            field(&w.start_ticks),
            field(&w.host)
        )
    }

    /// A complete record (ending in a newline), or `None` for anything else.
    pub fn parse(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
        let f: Vec<&str> = text.split(' ').collect();
        if f.len() != 8 || f[0] != "konserve-lock" || f[1] != "1" {
            return None;
        }
        let token = f[2];
        if token.len() != 32 || !crate::keyhash::is_lower_hex(token.as_bytes()) {
            return None;
        }
        let opt = |s: &str| (s != "-").then(|| s.to_string());
        let num = |s: &str| -> Option<Option<u64>> {
            if s == "-" {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        Some(Record {
            token: token.to_string(),
            who: Identity { boot_id: opt(f[3]), pid_ns: num(f[4])?, pid: f[5].parse().ok()?, start_ticks: num(f[6])?, host: opt(f[7]) },
        })
    }
}

/// The lock file name of a key whose file name starts with `hex` (32 hex digits).
pub fn lock_name(hex: &str) -> String {
    format!(".{hex}.lock")
}

/// Whether `name` is a lock file, a lock temp file or a takeover marker:
/// never a key, removed by `delete_store`.
pub fn is_lock_name(name: &str) -> bool {
    parse_lock_name(name).is_some()
}

/// What kind of lock-protocol file a name is.
#[derive(Debug, PartialEq, Eq)]
pub enum LockFileKind<'a> {
    /// `.<hex>.lock`
    Lock(&'a str),
    /// `.<hex>.<pid>.<seq>.lkt`
    Temp(&'a str),
    /// `.<hex>.<dead token>.<n>.brk`: the hex and the dead token.
    Marker(&'a str, &'a str),
}

/// Parses a lock-protocol file name.
pub fn parse_lock_name(name: &str) -> Option<LockFileKind<'_>> {
    let rest = name.strip_prefix('.')?;
    let hex = rest.get(..32)?;
    if !crate::keyhash::is_lower_hex(hex.as_bytes()) {
        return None;
    }
    let tail = rest.get(32..)?;
    if tail == ".lock" {
        return Some(LockFileKind::Lock(hex));
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(mid) = tail.strip_prefix('.').and_then(|t| t.strip_suffix(".lkt")) {
        let (pid, seq) = mid.split_once('.')?;
        return (digits(pid) && digits(seq)).then_some(LockFileKind::Temp(hex));
    }
    if let Some(mid) = tail.strip_prefix('.').and_then(|t| t.strip_suffix(".brk")) {
        let (dead, n) = mid.rsplit_once('.')?;
        let dead_ok = (dead.len() == 32 && crate::keyhash::is_lower_hex(dead.as_bytes()))
            || dead.strip_prefix('i').is_some_and(|i| !i.is_empty() && crate::keyhash::is_lower_hex(i.as_bytes()));
        return (dead_ok && digits(n)).then_some(LockFileKind::Marker(hex, dead));
    }
    None
}

/// Tokens of locks this process failed to release: their files name a live
/// process (us), but nobody holds them, so they may be taken over.
fn orphans() -> std::sync::MutexGuard<'static, HashSet<String>> {
    static SET: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    SET.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner)
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Whether the holder `rec` is alive, dead, or cannot be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Its process runs.
    Alive,
    /// Its process is gone (or the pid now names another process).
    Dead,
    /// Cannot be told from here (another host, another pid namespace): the lease decides.
    Unknown,
}

/// Liveness of the process a record names, seen from `me` (FORMAT.md §6).
pub fn liveness(vfs: &dyn Vfs, me: &Identity, rec: &Identity) -> Liveness {
    let same = |a: &Option<String>, b: &Option<String>| a.is_some() && a == b;
    if same(&rec.boot_id, &me.boot_id) && rec.pid_ns.is_some() && rec.pid_ns == me.pid_ns {
        return match (vfs.process_start(rec.pid), rec.start_ticks) {
            (Ok(None), _) => Liveness::Dead,
            (Ok(Some(t)), Some(r)) if t == r => Liveness::Alive,
            (Ok(Some(_)), Some(_)) => Liveness::Dead, // the pid was reused
            _ => Liveness::Unknown,
        };
    }
    if rec.boot_id.is_none() && me.boot_id.is_none() && same(&rec.host, &me.host) && !vfs.process_alive(rec.pid) {
        return Liveness::Dead;
    }
    Liveness::Unknown
}

/// What a lock file (or marker) says about its holder.
#[derive(Debug)]
pub enum Holder {
    /// There is no such file (released meanwhile).
    Gone,
    /// Held by a live (or possibly live) holder; `None` when the file is still being written.
    Alive(Option<Record>),
    /// Held by a dead holder: its token (or `i<inode>` for a file without a
    /// complete record), and the record if there is one.
    Dead(String, Option<Record>),
}

/// The cross-process locks of one store directory.
#[allow(missing_debug_implementations)] // holds a `dyn Vfs`, which has no Debug
pub struct Locker<'a> {
    /// The file system.
    pub vfs: &'a dyn Vfs,
    /// The store directory.
    pub dir: &'a Path,
    /// See [`DEFAULT_LEASE`].
    pub lease: Duration,
}

/// The outcome of one attempt to take a lock.
#[derive(Debug)]
pub enum Attempt {
    /// Ours, with this record.
    Taken(Record),
    /// Held by someone else (its record, when readable).
    Busy(Option<Record>),
}

impl Locker<'_> {
    /// The lock file of the key whose file name starts with `hex`.
    pub fn lock_path(&self, hex: &str) -> PathBuf {
        self.dir.join(lock_name(hex))
    }

    fn temp_path(&self, hex: &str, pid: u32) -> PathBuf {
        self.dir.join(format!(".{hex}.{pid}.{}.lkt", TEMP_SEQ.fetch_add(1, Ordering::Relaxed)))
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match self.vfs.read_small(path, MAX_RECORD) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `content` to a new temp file (unique name); removes it on error.
    fn write_temp(&self, hex: &str, content: &[u8]) -> io::Result<PathBuf> {
        let pid = self.vfs.identity().pid;
        for _ in 0..1000 {
            let temp = self.temp_path(hex, pid);
            let mut file = match self.vfs.create_new(&temp) {
                Ok(f) => f,
                // Another process with our pid (another pid namespace) uses this name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            if let Err(e) = file.write_all(content) {
                drop(file);
                let _ = self.vfs.remove_file(&temp);
                return Err(e);
            }
            return Ok(temp);
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free lock temp file name"))
    }

    /// Creates `target` holding `content`, or fails with `AlreadyExists` if it
    /// exists; leaves nothing behind on any error. The exclusive create of
    /// the name itself, then the write: until the write lands the file is
    /// empty, and every reader (this build and older ones) judges an empty or
    /// partial file by its age (alive until [`PARTIAL_STALE`] old).
    pub fn create_whole(&self, _hex: &str, target: &Path, content: &[u8]) -> io::Result<()> {
        let started = self.vfs.monotonic();
        let mut file = self.vfs.create_new(target)?;
        if let Err(e) = file.write_all(content) {
            drop(file);
            // Undo: the target is ours, nobody else removes it.
            let _ = self.vfs.remove_file(target);
            return Err(e);
        }
        drop(file);
        // Nobody can have taken the file over while it was empty if the
        // create and write took less than a safe fraction of PARTIAL_STALE
        // (by a monotonic clock, immune to wall-clock steps):
        // a taker judges an empty file by its modification time, which is
        // at least as late as our create, and takes it only once that is
        // PARTIAL_STALE old. Only a slower write needs the read-back.
        if self.vfs.monotonic().saturating_sub(started) < SKIP_READ_BACK {
            return Ok(());
        }
        // If a slow write let someone take the file over, it is not ours.
        match self.read(target)? {
            Some(b) if b == content => Ok(()),
            _ => Err(io::Error::new(io::ErrorKind::AlreadyExists, "the lock file was taken over while it was written")),
        }
    }

    /// What the file at `path` (a lock file or a marker) says about its holder.
    pub fn inspect(&self, path: &Path) -> io::Result<Holder> {
        let Some(bytes) = self.read(path)? else { return Ok(Holder::Gone) };
        let me = self.vfs.identity();
        if let Some(rec) = Record::parse(&bytes) {
            if orphans().contains(&rec.token) {
                return Ok(Holder::Dead(rec.token.clone(), Some(rec)));
            }
            match liveness(self.vfs, &me, &rec.who) {
                Liveness::Alive => return Ok(Holder::Alive(Some(rec))),
                Liveness::Dead => return Ok(Holder::Dead(rec.token.clone(), Some(rec))),
                Liveness::Unknown => {}
            }
            let stat = match self.vfs.stat(path) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Holder::Gone),
                Err(e) => return Err(e),
            };
            return Ok(if stat.age >= self.lease { Holder::Dead(rec.token.clone(), Some(rec)) } else { Holder::Alive(Some(rec)) });
        }
        // Empty or partial: being written now, or abandoned.
        let stat = match self.vfs.stat(path) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Holder::Gone),
            Err(e) => return Err(e),
        };
        Ok(if stat.age >= PARTIAL_STALE { Holder::Dead(format!("i{:x}", stat.ino), None) } else { Holder::Alive(None) })
    }

    /// Whether the lock file still holds the dead holder `dead` (a token, or `i<inode>`).
    fn still_holds(&self, lock: &Path, dead: &str) -> io::Result<bool> {
        let Some(bytes) = self.read(lock)? else { return Ok(false) };
        match Record::parse(&bytes) {
            Some(rec) => Ok(rec.token == dead),
            None => match self.vfs.stat(lock) {
                Ok(s) => Ok(format!("i{:x}", s.ino) == dead),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            },
        }
    }

    /// One attempt to take `hex`'s lock, never waiting.
    pub fn try_acquire(&self, hex: &str) -> io::Result<Attempt> {
        let lock = self.lock_path(hex);
        let rec = Record::fresh(self.vfs.identity());
        let line = rec.line();
        // A few rounds: the lock may be released between our steps.
        for _ in 0..4 {
            match self.create_whole(hex, &lock, line.as_bytes()) {
                Ok(()) => return Ok(Attempt::Taken(rec)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            match self.inspect(&lock)? {
                Holder::Gone => continue,
                Holder::Alive(holder) => return Ok(Attempt::Busy(holder)),
                Holder::Dead(dead, holder) => {
                    return match self.take_over(hex, &lock, &dead, &rec)? {
                        true => Ok(Attempt::Taken(rec)),
                        false => Ok(Attempt::Busy(holder)),
                    }
                }
            }
        }
        Ok(Attempt::Busy(None))
    }

    /// Takes over the lock of the dead holder `dead`, atomically among takers:
    /// `true` if it is now ours (`rec` replaced the lock file).
    fn take_over(&self, hex: &str, lock: &Path, dead: &str, rec: &Record) -> io::Result<bool> {
        let line = rec.line();
        let mut n = 0;
        let mut rounds = 0;
        let marker = loop {
            if n >= MAX_MARKERS || rounds > 4 * MAX_MARKERS {
                return Err(io::Error::other(format!("too many abandoned takeover markers for {}", lock.display())));
            }
            rounds += 1;
            let marker = self.dir.join(format!(".{hex}.{dead}.{n}.brk"));
            match self.create_whole(hex, &marker, line.as_bytes()) {
                Ok(()) => break marker,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            match self.inspect(&marker)? {
                Holder::Gone => {}                    // its taker finished: try it again
                Holder::Alive(_) => return Ok(false), // a live taker is at work
                Holder::Dead(..) => n += 1,           // its taker died: the next marker
            }
        };
        // We are the one taker of `dead` until we remove the marker.
        let result = (|| {
            if !self.still_holds(lock, dead)? {
                return Ok(false);
            }
            let temp = self.write_temp(hex, line.as_bytes())?;
            if let Err(e) = self.vfs.rename(&temp, lock) {
                let _ = self.vfs.remove_file(&temp);
                return Err(e);
            }
            Ok(true)
        })();
        // A marker left here (its removal failed) is harmless: the lock no
        // longer holds `dead`, so the next open's sweep removes it.
        let _ = self.vfs.remove_file(&marker);
        result
    }

    /// Releases a lock taken with `token`: removes the lock file only if it
    /// still holds that token.
    pub fn release(&self, hex: &str, token: &str) -> io::Result<()> {
        let lock = self.lock_path(hex);
        let bytes = self.read(&lock)?;
        match bytes.as_deref().and_then(Record::parse) {
            Some(rec) if rec.token == token => {}
            Some(rec) => {
                return Err(io::Error::other(format!(
                    "the lock was taken over by process {} on {} (this holder was judged dead)",
                    rec.who.pid,
                    field(&rec.who.host)
                )))
            }
            None => return Err(io::Error::other("the lock file is gone or no longer ours")),
        }
        if let Err(e) = self.vfs.remove_file(&lock) {
            // The file names us, a live process: let our next acquire take it.
            orphans().insert(token.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// The sweep on open: removes temp files older than [`PARTIAL_STALE`] and
    /// takeover markers whose lock no longer holds the dead token (no taker
    /// can use them any more). Never touches a lock file. Returns whether it
    /// removed anything.
    pub fn sweep(&self, names: &[std::ffi::OsString]) -> bool {
        let mut removed = false;
        for name in names {
            let Some(name) = name.to_str() else { continue };
            let path = self.dir.join(name);
            let remove = match parse_lock_name(name) {
                Some(LockFileKind::Temp(_)) => self.vfs.stat(&path).is_ok_and(|s| s.age >= PARTIAL_STALE),
                Some(LockFileKind::Marker(hex, dead)) => self.still_holds(&self.lock_path(hex), dead).is_ok_and(|held| !held),
                _ => false,
            };
            if remove && self.vfs.remove_file(&path).is_ok() {
                removed = true;
            }
        }
        removed
    }

    /// A description of a holder for messages.
    pub fn describe(holder: &Option<Record>) -> String {
        match holder {
            Some(r) => format!("process {} on host {}", r.who.pid, field(&r.who.host)),
            None => "a holder whose lock file is being written".to_string(),
        }
    }
}
