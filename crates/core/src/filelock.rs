//! The cross-process key lock (FORMAT.md §6): one lock file per key,
//! `.<hex>.lock`, created whole by `link(2)` of a complete temporary file,
//! holding one line that names its holder. The pure TypeScript store
//! (ts/backends/pure/store.ts) implements the same protocol, so native and pure
//! processes exclude each other.
//!
//! - Acquire: write the record to `.<hex>.<pid>.<seq>.lkt`, `link` it to the
//!   lock file (`EEXIST`: held), unlink the temp. A lock file is never empty
//!   or partial. Where `link` is unsupported: `O_CREAT | O_EXCL` and a write.
//! - A holder is dead when its process is gone (same boot and pid namespace:
//!   `/proc/<pid>/stat` with the recorded start time), else when the lock
//!   file is older than the lease.
//! - Takeover of a dead holder's lock: the marker `.<hex>.<dead>.<n>.brk`
//!   (created like a lock file) admits one taker, which re-reads the lock and
//!   renames a fresh record over it only if the dead token is still there.
//! - Release: unlink the lock file only if it still holds our token.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::vfs::Vfs;

/// How old the lock file of a holder whose liveness cannot be checked (other
/// host, other pid namespace) must be before it counts as dead.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How old an empty or partial lock file (the fallback without `link`) or a
/// leftover temp file must be before it counts as abandoned.
pub const PARTIAL_STALE: Duration = Duration::from_secs(5);

/// The most takeover markers tried for one dead token (each one left by a
/// taker that died in the middle of its takeover).
const MAX_MARKERS: u32 = 64;

/// A record is one short line; anything longer is not ours.
const MAX_RECORD: usize = 1024;

/// Who holds (or held) a lock: what the record says of its process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `/proc/sys/kernel/random/boot_id`, when known.
    pub boot_id: Option<String>,
    /// The inode of `/proc/self/ns/pid`, when known.
    pub pid_ns: Option<u64>,
    /// The process id (in its pid namespace).
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot), when known.
    pub start_ticks: Option<u64>,
    /// The host name, when known (bytes outside `!`..`~` replaced by `_`).
    pub host: Option<String>,
}

impl Identity {
    /// A process of which only the pid is known.
    pub fn unknown(pid: u32) -> Identity {
        Identity { boot_id: None, pid_ns: None, pid, start_ticks: None, host: None }
    }
}

/// A lock file's content: a fresh token and its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// 32 lowercase hex digits (128 random bits), fresh per acquisition.
    pub token: String,
    /// The holder.
    pub who: Identity,
}

fn field(s: &Option<impl ToString>) -> String {
    s.as_ref().map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A printable, space-free form of a host name (FORMAT.md §6).
pub fn clean_host(raw: &[u8]) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    Some(raw.iter().map(|&b| if (0x21..=0x7e).contains(&b) { b as char } else { '_' }).collect())
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

fn link_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP | libc::ENOSYS))
        || e.raw_os_error() == Some(libc::EOPNOTSUPP)
        || e.kind() == io::ErrorKind::Unsupported
}

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

    /// Creates `target` holding `content`, whole, or fails with
    /// `AlreadyExists` if it exists; leaves nothing behind on any error.
    pub fn create_whole(&self, hex: &str, target: &Path, content: &[u8]) -> io::Result<()> {
        // Where link(2) is unsupported, each acquire pays one failed call
        // (not remembered: another store of this process may be elsewhere).
        {
            let temp = self.write_temp(hex, content)?;
            match self.vfs.hard_link(&temp, target) {
                Ok(()) => {
                    if let Err(e) = self.vfs.remove_file(&temp) {
                        // Undo: the target is ours, nobody else removes it.
                        let _ = self.vfs.remove_file(target);
                        let _ = self.vfs.remove_file(&temp);
                        return Err(e);
                    }
                    return Ok(());
                }
                Err(e) => {
                    let _ = self.vfs.remove_file(&temp);
                    if !link_unsupported(&e) {
                        return Err(e);
                    }
                }
            }
        }
        // The fallback: an exclusive create, then the write. Until the write
        // lands the file is empty; others judge such a file by its age.
        let mut file = self.vfs.create_new(target)?;
        if let Err(e) = file.write_all(content) {
            drop(file);
            let _ = self.vfs.remove_file(target);
            return Err(e);
        }
        drop(file);
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
        // Empty or partial: being written now (fallback), or abandoned.
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

/// The identity of this process on a real Linux system (or what is known of it elsewhere).
pub fn real_identity() -> Identity {
    static ME: OnceLock<Identity> = OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id();
        let mut who = Identity::unknown(pid);
        let mut buf = [0u8; 256];
        // SAFETY: a valid buffer of the length passed.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            who.host = clean_host(&buf[..len]);
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::MetadataExt;
            let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
            let ns = std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino());
            let ticks = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| parse_proc_stat(&s)).map(|(_, t)| t);
            if let (Some(b), Some(ns), Some(t)) = (boot, ns, ticks) {
                who.boot_id = clean_host(b.trim().as_bytes());
                who.pid_ns = Some(ns);
                who.start_ticks = Some(t);
            }
        }
        who
    })
    .clone()
}

/// The state letter and start ticks (field 22) of a `/proc/<pid>/stat` line.
pub fn parse_proc_stat(s: &str) -> Option<(char, u64)> {
    let after = &s[s.rfind(')')? + 1..];
    let mut f = after.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    // Fields 4..=21 come between the state (3) and the start time (22).
    let ticks = f.nth(18)?.parse().ok()?;
    Some((state, ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_partial_ones_are_refused() {
        let who =
            Identity { boot_id: Some("b-1".into()), pid_ns: Some(4026531836), pid: 42, start_ticks: Some(1234), host: Some("h".into()) };
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

    use crate::sim::SimFs;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

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
    /// another process gets the lock at once, and that nothing is left.
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
            let rec = taken(locker(&b).try_acquire(HEX));
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
        assert!(steps >= 4, "create, write, link, unlink: {steps}");
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
        assert!(steps >= 10, "the takeover has its steps: {steps}");
        // Release.
        let steps = kill_at_every_step(
            |_| {},
            |a| {
                if let Ok(Attempt::Taken(rec)) = locker(a).try_acquire(HEX) {
                    let _ = locker(a).release(HEX, &rec.token);
                }
            },
        );
        assert!(steps >= 5, "{steps}");
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

    #[test]
    fn without_link_the_fallback_locks_and_an_old_empty_file_is_taken_over() {
        let fs = disk();
        fs.always_fail("hard_link", libc::EPERM);
        let (a, b) = (fs.as_process(100), fs.as_process(200));
        let rec = taken(locker(&a).try_acquire(HEX));
        assert_eq!(names(&fs), vec![lock_name(HEX)]);
        assert!(matches!(locker(&b).try_acquire(HEX).unwrap(), Attempt::Busy(_)));
        locker(&a).release(HEX, &rec.token).unwrap();
        // A process dies between the exclusive create and the write: an empty file.
        let c = fs.as_process(300);
        fs.kill_after(300, 5); // temp: create, write, link (EPERM), unlink; then create, and dies at the write
        assert!(locker(&c).try_acquire(HEX).is_err());
        assert_eq!(fs.read(&Path::new(DIR).join(lock_name(HEX))).unwrap(), b"");
        assert!(matches!(locker(&b).try_acquire(HEX).unwrap(), Attempt::Busy(None)), "young: being written");
        fs.advance(PARTIAL_STALE.as_millis() as u64);
        let rec = taken(locker(&b).try_acquire(HEX));
        assert_clean_after(&fs, &rec, &b);
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
            // Whatever the dead left, a new process gets the lock at once.
            let last = fs.as_process(99_999);
            let rec = taken(locker(&last).try_acquire(HEX));
            assert_clean_after(&fs, &rec, &last);
        }
    }

    #[test]
    fn a_store_waits_for_a_live_holder_at_most_the_lock_timeout_and_names_it() {
        let fs = disk();
        let opts = crate::store::Options { lock_timeout: Duration::from_millis(50), ..Default::default() };
        let store = crate::store::FileStore::open_with(Arc::new(fs.clone()), Path::new(DIR), opts).unwrap();
        let k = crate::cke::encode(&crate::cke::Key::str("k"));
        let hex = format!("{:032x}", crate::keyhash::key_hash(&k));
        let other = fs.as_process(4242);
        let rec = match locker(&other).try_acquire(&hex).unwrap() {
            Attempt::Taken(r) => r,
            a => panic!("{a:?}"),
        };
        let e = store.lock(&[&k]).unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::LockTimeout);
        assert!(e.to_string().contains("process 4242 on host sim"), "{e}");
        assert!(e.file().unwrap().ends_with(lock_name(&hex)));
        assert!(!store.try_lock(&[&k]).unwrap());
        assert_eq!(store.try_lock_waited(&[&k], Some(Duration::from_millis(60))).unwrap_err().code(), crate::error::ErrorCode::LockTimeout);
        // The holder dies: the store takes the lock at once, and leaves nothing after unlock.
        fs.kill(4242);
        store.lock(&[&k]).unwrap();
        store.unlock(&[&k]).unwrap();
        assert!(names(&fs).is_empty(), "{:?}", names(&fs));
        let _ = rec;
    }
}
