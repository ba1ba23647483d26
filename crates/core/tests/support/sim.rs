//! A simulated, pessimistic file system for crash tests, behind the public
//! I/O seam ([`konserve_core::vfs::Vfs`]): the store runs on it unchanged.
//!
//! The model follows RocksDB's FaultInjectionTestFS and SQLite's crash VFS:
//! - Files and directories are inodes. A directory maps names to inodes; a
//!   rename moves an inode from one name to another, and a file's data belongs
//!   to its inode, whatever name it has.
//! - A file's data is durable only up to its last [`VfsFile::sync`]. A directory's
//!   entries (creations, renames, removals) are durable only after
//!   [`Vfs::sync_dir`] of that directory; creating a directory is an entry in
//!   its parent, so it needs a `sync_dir` of the parent.
//! - [`SimFs::fail_after`] arms a crash: every mutating or syncing call counts
//!   one step, and once the budget is spent every call fails (the process is
//!   dead, nothing more reaches the disk). [`SimFs::crash`] then leaves what a
//!   power cut would: the durable state, plus whatever of the rest the chosen
//!   [`Writeback`] lets survive, with un-synced file tails torn at random.
//! - [`SimFs::fail_once`] makes one call fail with `EIO` while the process
//!   lives on, to test how the store reports and survives a lone I/O error.
//!
//! - A write over a file's durable bytes (a log's commit slots) is not durable
//!   either until the next sync: at a crash each such write is lost, kept, or
//!   torn (a random prefix or suffix of it kept), independently, in order, and
//!   the bytes it did not reach keep their durable contents.
//! - Processes: clones made with [`SimFs::as_process`] act as other processes
//!   (their own pid and start time) on the same disk, for the lock protocol
//!   (FORMAT.md §6); [`SimFs::kill_after`] kills one of them at a given step
//!   while the others live on. A clock ([`SimFs::advance`]) gives files their
//!   modification times; a crash (a reboot) moves it an hour on and changes
//!   the boot id.
//!
//! Only what the store needs is modelled: no renames across directories or of
//! directories.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use konserve_core::vfs::{FileStat, Identity, Vfs, VfsFile};

type Ino = u64;

/// The root directory's inode.
const ROOT: Ino = 0;

/// What a directory entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    File(Ino),
    Dir(Ino),
}

/// One change to a directory's entries, kept until the directory is synced.
#[derive(Clone, Debug)]
enum DirOp {
    Link(OsString, Node),
    Unlink(OsString),
    /// One op, not an unlink and a link: a rename is atomic in the journal.
    Rename(OsString, OsString),
}

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<OsString, Node>) {
        match self {
            DirOp::Link(name, node) => {
                entries.insert(name.clone(), *node);
            }
            DirOp::Unlink(name) => {
                entries.remove(name);
            }
            DirOp::Rename(from, to) => {
                if let Some(node) = entries.remove(from) {
                    entries.insert(to.clone(), node);
                }
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Dir {
    /// The entries as the running process sees them.
    live: BTreeMap<OsString, Node>,
    /// The entries as of the last `sync_dir`.
    durable: BTreeMap<OsString, Node>,
    /// The changes since then, in order: `live` is `durable` with these applied.
    pending: Vec<DirOp>,
}

#[derive(Clone, Debug, Default)]
struct FileData {
    data: Vec<u8>,
    /// The simulated clock (ms) at the last write.
    mtime: u64,
    /// `data[..synced]` is durable, but for the writes in `overwrites`; a cut
    /// below `synced` lowers it.
    synced: usize,
    /// Writes over durable bytes since the last sync: where, and what they
    /// wrote. A crash decides for each whether it reached the disk.
    overwrites: Vec<(usize, Vec<u8>)>,
    /// `data[..synced]` as of the last sync, kept while `overwrites` is not empty.
    durable: Vec<u8>,
}

impl FileData {
    /// Everything is on disk: after a sync, or a rename that carries the data.
    fn mark_synced(&mut self) {
        self.synced = self.data.len();
        self.overwrites.clear();
        self.durable.clear();
    }
}

/// What survives of the un-synced changes at a crash, besides torn file tails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writeback {
    /// Nothing: every directory change not made durable by `sync_dir` is undone.
    None,
    /// The OS had written back part of it: a random prefix of each directory's
    /// un-synced changes survives, with no order between names and data (a
    /// renamed-in file may keep a torn tail), as on XFS or ext4 `data=writeback`.
    Unordered,
    /// Like `Unordered`, but a surviving create or rename carries its file's
    /// data with it, as ext4 `data=ordered` does for a rename over a file.
    Ordered,
}

/// A tiny seeded xorshift64* generator: crashes are reproducible from a seed.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that seeds 0, 1, 2 give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..=max`.
    fn upto(&mut self, max: usize) -> usize {
        (self.next() % (max as u64 + 1)) as usize
    }
}

#[derive(Debug)]
struct State {
    dirs: BTreeMap<Ino, Dir>,
    files: BTreeMap<Ino, FileData>,
    next_ino: Ino,
    /// Mutating or syncing calls made so far.
    steps: u64,
    /// The step at which the process dies, if a crash is armed.
    crash_at: Option<u64>,
    dead: bool,
    /// The step whose call fails once with `EIO`, the process living on.
    fail_once_at: Option<u64>,
    /// The call that failed that way.
    failed_call: Option<&'static str>,
    /// The errno of that lone failure (`EIO` unless a test says otherwise).
    fail_errno: i32,
    /// Bumped at each crash: handles opened before it no longer work.
    generation: u64,
    dead_pids: BTreeSet<u32>,
    /// The process making the current call (set under the mutex by each handle).
    actor: u32,
    /// Processes killed by [`SimFs::kill_after`]: their calls fail.
    killed: BTreeSet<u32>,
    /// Steps each armed process may still make before it dies.
    kill_at: BTreeMap<u32, u64>,
    /// Start ticks of each pid (default 1): a respawned pid has new ones.
    starts: BTreeMap<u32, u64>,
    /// Calls of these names fail with this errno, every time.
    always_fail: BTreeMap<&'static str, i32>,
    /// The simulated wall clock, in ms.
    clock_ms: u64,
    rng: Rng,
    /// Called after each successful `sync_dir`, outside the state's lock
    /// (see [`SimFs::after_sync_dir`]).
    after_sync_dir: Option<SyncDirHook>,
    /// Direct writes made, and those refused as misaligned.
    direct_writes: u64,
    direct_misaligned: u64,
    /// Calls of `set_direct(true)` that succeeded.
    direct_opens: u64,
}

/// What [`SimFs::after_sync_dir`] runs.
#[derive(Clone)]
struct SyncDirHook(Arc<dyn Fn(&Path) + Send + Sync>);

impl std::fmt::Debug for SyncDirHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncDirHook")
    }
}

fn dead_error() -> io::Error {
    io::Error::other("simulated crash: the process is dead")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file or directory", path.display()))
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("the simulated file system does not support {what}"))
}

/// The components of an absolute path without `.`; `..` is refused.
fn components(path: &Path) -> io::Result<Vec<OsString>> {
    if !path.is_absolute() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "simulated paths must be absolute"));
    }
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir | Component::Prefix(_) => return Err(unsupported("`..` in paths")),
        }
    }
    Ok(out)
}

impl State {
    fn new(seed: u64) -> State {
        State {
            dirs: BTreeMap::from([(ROOT, Dir::default())]),
            files: BTreeMap::new(),
            next_ino: ROOT + 1,
            steps: 0,
            crash_at: None,
            dead: false,
            fail_once_at: None,
            failed_call: None,
            fail_errno: libc::EIO,
            generation: 0,
            dead_pids: BTreeSet::new(),
            actor: 0,
            killed: BTreeSet::new(),
            kill_at: BTreeMap::new(),
            starts: BTreeMap::new(),
            always_fail: BTreeMap::new(),
            clock_ms: 1_000_000,
            rng: Rng::new(seed),
            after_sync_dir: None,
            direct_writes: 0,
            direct_misaligned: 0,
            direct_opens: 0,
        }
    }

    /// Fails once the process is dead.
    fn alive(&self) -> io::Result<()> {
        if self.dead || self.killed.contains(&self.actor) {
            return Err(dead_error());
        }
        Ok(())
    }

    /// Counts one mutating or syncing call, named `call`: the process dies
    /// here if the crash is due, or the call fails alone if that is due.
    fn step(&mut self, call: &'static str) -> io::Result<()> {
        self.alive()?;
        if self.crash_at.is_some_and(|at| self.steps >= at) {
            self.dead = true;
            return Err(dead_error());
        }
        let actor = self.actor;
        if let Some(left) = self.kill_at.get_mut(&actor) {
            if *left == 0 {
                self.kill_at.remove(&actor);
                self.killed.insert(actor);
                self.dead_pids.insert(actor);
                return Err(dead_error());
            }
            *left -= 1;
        }
        if let Some(&errno) = self.always_fail.get(call) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.steps += 1;
        if self.fail_once_at == Some(self.steps - 1) {
            self.failed_call = Some(call);
            return Err(io::Error::from_raw_os_error(self.fail_errno));
        }
        Ok(())
    }

    fn check_generation(&self, generation: u64) -> io::Result<()> {
        if generation != self.generation {
            return Err(io::Error::other("a handle opened before the simulated crash"));
        }
        Ok(())
    }

    fn new_ino(&mut self) -> Ino {
        self.next_ino += 1;
        self.next_ino - 1
    }

    /// The inode of directory `parts`, walking the live entries from the root.
    fn dir_ino(&self, parts: &[OsString], path: &Path) -> io::Result<Ino> {
        let mut ino = ROOT;
        for name in parts {
            match self.dirs[&ino].live.get(name) {
                Some(Node::Dir(d)) => ino = *d,
                Some(Node::File(_)) => return Err(io::Error::new(io::ErrorKind::NotADirectory, path.display().to_string())),
                None => return Err(not_found(path)),
            }
        }
        Ok(ino)
    }

    /// The parent directory's inode and the last component of `path`.
    fn parent(&self, path: &Path) -> io::Result<(Ino, OsString)> {
        let mut parts = components(path)?;
        let name = parts.pop().ok_or_else(|| unsupported("this operation on the root"))?;
        Ok((self.dir_ino(&parts, path)?, name))
    }

    fn lookup(&self, path: &Path) -> io::Result<Option<Node>> {
        let parts = components(path)?;
        if parts.is_empty() {
            return Ok(Some(Node::Dir(ROOT)));
        }
        let (dir, name) = self.parent(path)?;
        Ok(self.dirs[&dir].live.get(&name).copied())
    }

    fn file_ino(&self, path: &Path) -> io::Result<Ino> {
        match self.lookup(path)? {
            Some(Node::File(ino)) => Ok(ino),
            Some(Node::Dir(_)) => Err(io::Error::new(io::ErrorKind::IsADirectory, path.display().to_string())),
            None => Err(not_found(path)),
        }
    }

    /// Changes a directory's live entries and records the change for a crash.
    fn change(&mut self, dir: Ino, op: DirOp) {
        let d = self.dirs.get_mut(&dir).expect("a live directory");
        op.apply(&mut d.live);
        d.pending.push(op);
    }

    fn create_file(&mut self, dir: Ino, name: OsString) -> Ino {
        let ino = self.new_ino();
        self.files.insert(ino, FileData { mtime: self.clock_ms, ..FileData::default() });
        self.change(dir, DirOp::Link(name, Node::File(ino)));
        ino
    }

    /// The power cut: see [`SimFs::crash`].
    fn crash(&mut self, writeback: Writeback) {
        let dir_inos: Vec<Ino> = self.dirs.keys().copied().collect();
        for ino in dir_inos {
            let pending = std::mem::take(&mut self.dirs.get_mut(&ino).expect("listed").pending);
            let kept = match writeback {
                Writeback::None => 0,
                Writeback::Unordered | Writeback::Ordered => self.rng.upto(pending.len()),
            };
            let mut entries = self.dirs[&ino].durable.clone();
            for op in &pending[..kept] {
                op.apply(&mut entries);
                if writeback == Writeback::Ordered {
                    // The journal commit that persists the entry writes its data first.
                    let moved = match op {
                        DirOp::Link(_, Node::File(f)) => Some(*f),
                        DirOp::Rename(_, to) => match entries.get(to) {
                            Some(Node::File(f)) => Some(*f),
                            _ => None,
                        },
                        _ => None,
                    };
                    if let Some(f) = moved.and_then(|f| self.files.get_mut(&f)) {
                        f.mark_synced();
                    }
                }
            }
            let d = self.dirs.get_mut(&ino).expect("listed");
            d.live = entries.clone();
            d.durable = entries;
        }

        // Whatever no surviving entry reaches is gone (fsck would free it).
        let mut reachable_dirs = BTreeSet::from([ROOT]);
        let mut reachable_files = BTreeSet::new();
        let mut todo = vec![ROOT];
        while let Some(dir) = todo.pop() {
            for node in self.dirs[&dir].live.values() {
                match *node {
                    Node::Dir(d) if reachable_dirs.insert(d) => todo.push(d),
                    Node::Dir(_) => {}
                    Node::File(f) => {
                        reachable_files.insert(f);
                    }
                }
            }
        }
        self.dirs.retain(|ino, _| reachable_dirs.contains(ino));
        self.files.retain(|ino, _| reachable_files.contains(ino));

        // Each un-synced tail is torn: a random part of it reached the disk,
        // and of that part a random end may hold zeros instead of the data
        // (the size was updated, the data blocks were not).
        for f in self.files.values_mut() {
            // Each write over durable bytes is lost, kept or torn, in order,
            // over the durable contents.
            if !f.overwrites.is_empty() {
                let mut image = std::mem::take(&mut f.durable);
                for (at, bytes) in std::mem::take(&mut f.overwrites) {
                    let end = (at + bytes.len()).min(image.len());
                    if at >= end {
                        continue;
                    }
                    let n = end - at;
                    let (from, to) = match self.rng.upto(3) {
                        0 => (0, 0),
                        1 => (0, n),
                        2 => (0, self.rng.upto(n)),
                        _ => (self.rng.upto(n), n),
                    };
                    image[at + from..at + to].copy_from_slice(&bytes[from..to]);
                }
                f.data[..image.len()].copy_from_slice(&image);
            }
            let keep = f.synced + self.rng.upto(f.data.len() - f.synced);
            if self.rng.next() & 1 == 0 {
                let zeros_from = f.synced + self.rng.upto(keep - f.synced);
                f.data[zeros_from..keep].fill(0);
            }
            f.data.truncate(keep);
            f.synced = keep;
        }

        self.dead = false;
        self.crash_at = None;
        self.generation += 1;
        // The machine is back up after a while (and has a new boot id).
        self.clock_ms += 3_600_000;
        self.dead_pids.insert(std::process::id());
    }
}

/// The simulated file system. Clones share one state: a store opened on a
/// clone sees (and crashes with) the original.
#[derive(Clone, Debug)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    /// The process this handle acts as.
    pid: u32,
}

impl SimFs {
    /// An empty file system (only the root directory); `seed` drives the
    /// random choices of [`crash`](Self::crash).
    pub fn new(seed: u64) -> SimFs {
        SimFs { state: Arc::new(Mutex::new(State::new(seed))), pid: std::process::id() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.actor = self.pid;
        s
    }

    /// The same disk, seen by another process `pid`.
    pub fn as_process(&self, pid: u32) -> SimFs {
        SimFs { state: Arc::clone(&self.state), pid }
    }

    /// Process `pid` dies at its `n`-th mutating call from now (that call fails).
    pub fn kill_after(&self, pid: u32, n: u64) {
        self.state().kill_at.insert(pid, n);
    }

    /// Whether process `pid` was killed by [`kill_after`](Self::kill_after).
    pub fn was_killed(&self, pid: u32) -> bool {
        self.state().killed.contains(&pid)
    }

    /// A new process gets the dead `pid` (pid reuse): alive, with a new start time.
    pub fn respawn(&self, pid: u32) {
        let mut s = self.state();
        s.dead_pids.remove(&pid);
        s.killed.remove(&pid);
        *s.starts.entry(pid).or_insert(1) += 1;
    }

    /// Moves the clock on.
    pub fn advance(&self, ms: u64) {
        self.state().clock_ms += ms;
    }

    /// Every call named `call` fails with `errno` from now on.
    pub fn always_fail(&self, call: &'static str, errno: i32) {
        self.state().always_fail.insert(call, errno);
    }

    /// Runs `hook` after each successful `sync_dir` (the directory's entries
    /// are durable as of the call), before the call returns, outside the
    /// simulator's lock: a test can hold a directory fsync there, as if the
    /// disk were slow, while other threads go on.
    pub fn after_sync_dir(&self, hook: impl Fn(&Path) + Send + Sync + 'static) {
        self.state().after_sync_dir = Some(SyncDirHook(Arc::new(hook)));
    }

    /// The direct writes made so far (aligned, accepted) and those refused
    /// as misaligned (a bug of the writer: it falls back, silently).
    pub fn direct_writes(&self) -> (u64, u64) {
        let s = self.state();
        (s.direct_writes, s.direct_misaligned)
    }

    /// How many times a file was switched to direct I/O.
    pub fn direct_opens(&self) -> u64 {
        self.state().direct_opens
    }

    /// The mutating or syncing calls made so far.
    pub fn steps(&self) -> u64 {
        self.state().steps
    }

    /// Arms a crash: the next `n` mutating or syncing calls succeed, and every
    /// call after them fails, as if the process had died.
    pub fn fail_after(&self, n: u64) {
        let mut s = self.state();
        s.crash_at = Some(s.steps + n);
    }

    /// Arms a lone I/O error: the call `n` steps from now fails with `EIO`,
    /// and the process lives on.
    pub fn fail_once(&self, n: u64) {
        let mut s = self.state();
        s.fail_once_at = Some(s.steps + n);
    }

    /// [`fail_once`](Self::fail_once) with another errno than `EIO`.
    pub fn fail_once_with(&self, n: u64, errno: i32) {
        let mut s = self.state();
        s.fail_once_at = Some(s.steps + n);
        s.fail_errno = errno;
    }

    /// The call that [`fail_once`](Self::fail_once) made fail, once it has.
    pub fn failed_call(&self) -> Option<&'static str> {
        self.state().failed_call
    }

    /// Whether the armed crash has happened (the process is dead).
    pub fn is_dead(&self) -> bool {
        self.state().dead
    }

    /// Declares process `pid` dead, so [`Vfs::process_alive`] answers `false`.
    pub fn kill(&self, pid: u32) {
        self.state().dead_pids.insert(pid);
    }

    /// A power cut, and the machine back up: what was not durable is undone
    /// except what `writeback` lets survive, un-synced file tails are torn,
    /// old handles stop working, locks are released, and the process that ran
    /// (this one's pid) counts as dead. Calls succeed again afterwards.
    pub fn crash(&self, writeback: Writeback) {
        self.state().crash(writeback);
    }

    /// The full content of the file at `path`, as the running process sees it.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.state();
        let ino = s.file_ino(path)?;
        Ok(s.files[&ino].data.clone())
    }
}

impl SimFs {
    /// A handle on inode `ino`, of this generation, buffered.
    fn open_file(&self, s: &State, ino: Ino, writable: bool) -> Box<dyn VfsFile> {
        Box::new(SimFile { state: Arc::clone(&self.state), pid: self.pid, ino, generation: s.generation, writable, direct: false })
    }
}

impl Vfs for SimFs {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let mut s = self.state();
        s.step("create_new")?;
        let (dir, name) = s.parent(path)?;
        if s.dirs[&dir].live.contains_key(&name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, path.display().to_string()));
        }
        let ino = s.create_file(dir, name);
        Ok(self.open_file(&s, ino, true))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let s = self.state();
        s.alive()?;
        let ino = s.file_ino(path)?;
        Ok(self.open_file(&s, ino, false))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let s = self.state();
        s.alive()?;
        let ino = s.file_ino(path)?;
        Ok(self.open_file(&s, ino, true))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let s = self.state();
        s.alive()?;
        match s.lookup(path) {
            Ok(node) => Ok(node.is_some()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.step("rename")?;
        let (dir, from_name) = s.parent(from)?;
        let (to_dir, to_name) = s.parent(to)?;
        if dir != to_dir {
            return Err(unsupported("renames across directories"));
        }
        match s.dirs[&dir].live.get(&from_name) {
            Some(Node::File(_)) => {}
            Some(Node::Dir(_)) => return Err(unsupported("renaming directories")),
            None => return Err(not_found(from)),
        }
        if let Some(Node::Dir(_)) = s.dirs[&dir].live.get(&to_name) {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, to.display().to_string()));
        }
        if from_name != to_name {
            s.change(dir, DirOp::Rename(from_name, to_name));
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.step("remove_file")?;
        s.file_ino(path)?;
        let (dir, name) = s.parent(path)?;
        s.change(dir, DirOp::Unlink(name));
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let s = self.state();
        s.alive()?;
        let dir = s.dir_ino(&components(path)?, path)?;
        Ok(s.dirs[&dir].live.keys().cloned().collect())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.step("create_dir_all")?;
        let mut dir = ROOT;
        for name in components(path)? {
            dir = match s.dirs[&dir].live.get(&name) {
                Some(Node::Dir(d)) => *d,
                Some(Node::File(_)) => return Err(io::Error::new(io::ErrorKind::AlreadyExists, path.display().to_string())),
                None => {
                    let ino = s.new_ino();
                    s.dirs.insert(ino, Dir::default());
                    s.change(dir, DirOp::Link(name, Node::Dir(ino)));
                    ino
                }
            };
        }
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.step("remove_dir")?;
        let ino = s.dir_ino(&components(path)?, path)?;
        if ino == ROOT {
            return Err(unsupported("removing the root"));
        }
        if !s.dirs[&ino].live.is_empty() {
            return Err(io::Error::new(io::ErrorKind::DirectoryNotEmpty, path.display().to_string()));
        }
        // The inode stays: a crash before the parent is synced brings it back.
        let (parent, name) = s.parent(path)?;
        s.change(parent, DirOp::Unlink(name));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.step("sync_dir")?;
        let ino = s.dir_ino(&components(path)?, path)?;
        let d = s.dirs.get_mut(&ino).expect("resolved");
        d.durable = d.live.clone();
        d.pending.clear();
        let hook = s.after_sync_dir.clone();
        drop(s);
        if let Some(hook) = hook {
            (hook.0)(path);
        }
        Ok(())
    }

    /// Everything becomes durable: every file's data and every directory's entries.
    fn sync_fs(&self, _path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.step("sync_fs")?;
        for f in s.files.values_mut() {
            f.mark_synced();
        }
        for d in s.dirs.values_mut() {
            d.durable = d.live.clone();
            d.pending.clear();
        }
        Ok(())
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        let s = self.state();
        s.alive()?;
        let parts = components(path)?;
        if s.lookup(path)?.is_none() {
            return Err(not_found(path));
        }
        Ok(Path::new("/").join(parts.iter().collect::<PathBuf>()))
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.step("hard_link")?;
        let ino = s.file_ino(from)?;
        let (dir, name) = s.parent(to)?;
        if s.dirs[&dir].live.contains_key(&name) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        s.change(dir, DirOp::Link(name, Node::File(ino)));
        Ok(())
    }

    fn monotonic(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.state().clock_ms)
    }

    fn stat(&self, path: &Path) -> io::Result<FileStat> {
        let s = self.state();
        s.alive()?;
        let ino = s.file_ino(path)?;
        let f = &s.files[&ino];
        Ok(FileStat { age: std::time::Duration::from_millis(s.clock_ms.saturating_sub(f.mtime)), ino, len: f.data.len() as u64 })
    }

    fn identity(&self) -> Identity {
        let s = self.state();
        Identity {
            boot_id: Some(format!("sim-boot-{}", s.generation)),
            pid_ns: Some(1),
            pid: self.pid,
            start_ticks: Some(s.starts.get(&self.pid).copied().unwrap_or(1)),
            host: Some("sim".into()),
        }
    }

    fn process_start(&self, pid: u32) -> io::Result<Option<u64>> {
        let s = self.state();
        s.alive()?;
        Ok((!s.dead_pids.contains(&pid)).then(|| s.starts.get(&pid).copied().unwrap_or(1)))
    }

    fn process_alive(&self, pid: u32) -> bool {
        !self.state().dead_pids.contains(&pid)
    }

    fn parallel_sync(&self) -> bool {
        false
    }
}

/// An open file of a [`SimFs`]: a handle on an inode, not on a name.
struct SimFile {
    state: Arc<Mutex<State>>,
    pid: u32,
    ino: Ino,
    generation: u64,
    writable: bool,
    /// Direct I/O on ([`VfsFile::set_direct`]): writes must be aligned.
    direct: bool,
}

impl SimFile {
    fn state(&self) -> MutexGuard<'_, State> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.actor = self.pid;
        s
    }
}

impl VfsFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.state();
        s.step("write_all")?;
        s.check_generation(self.generation)?;
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the file is open for reading only"));
        }
        let now = s.clock_ms;
        let f = s.files.get_mut(&self.ino).expect("an open inode");
        f.data.extend_from_slice(buf);
        f.mtime = now;
        Ok(())
    }

    /// A direct write (after `set_direct(true)`) is the step `write_direct`
    /// (`always_fail("write_direct", EINVAL)` refuses them, like a file
    /// system without `O_DIRECT`); one not aligned to `DIRECT_ALIGN` fails
    /// with `EINVAL`, as in Linux, and is counted ([`SimFs::direct_writes`]).
    /// Like a buffered write, it is durable only after the next sync.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.state();
        s.step(if self.direct { "write_direct" } else { "write_all_at" })?;
        s.check_generation(self.generation)?;
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the file is open for reading only"));
        }
        if self.direct {
            let align = konserve_core::vfs::DIRECT_ALIGN;
            if !offset.is_multiple_of(align as u64) || !buf.len().is_multiple_of(align) || !(buf.as_ptr() as usize).is_multiple_of(align) {
                s.direct_misaligned += 1;
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            s.direct_writes += 1;
        }
        let start = usize::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let f = s.files.get_mut(&self.ino).expect("an open inode");
        let end = start + buf.len();
        if start < f.synced {
            // Over durable bytes: not durable until the next sync.
            if f.overwrites.is_empty() {
                f.durable = f.data[..f.synced].to_vec();
            }
            let n = end.min(f.synced) - start;
            f.overwrites.push((start, buf[..n].to_vec()));
        }
        if f.data.len() < end {
            f.data.resize(end, 0);
        }
        f.data[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.state();
        s.step("set_len")?;
        s.check_generation(self.generation)?;
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the file is open for reading only"));
        }
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let f = s.files.get_mut(&self.ino).expect("an open inode");
        f.data.resize(len, 0);
        f.synced = f.synced.min(len);
        f.durable.truncate(f.synced);
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = self.state();
        s.alive()?;
        s.check_generation(self.generation)?;
        let data = &s.files[&self.ino].data;
        let range = usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(buf.len())?))
            .filter(|r| r.end <= data.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"))?;
        buf.copy_from_slice(&data[range]);
        Ok(())
    }

    fn read_upto_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let s = self.state();
        s.alive()?;
        s.check_generation(self.generation)?;
        let data = &s.files[&self.ino].data;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn size(&self) -> io::Result<u64> {
        let s = self.state();
        s.alive()?;
        s.check_generation(self.generation)?;
        Ok(s.files[&self.ino].data.len() as u64)
    }

    fn set_direct(&mut self, on: bool) -> io::Result<()> {
        let mut s = self.state();
        s.step("set_direct")?;
        s.check_generation(self.generation)?;
        s.direct_opens += u64::from(on);
        drop(s);
        self.direct = on;
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.state();
        s.step("sync")?;
        s.check_generation(self.generation)?;
        s.files.get_mut(&self.ino).expect("an open inode").mark_synced();
        Ok(())
    }
}
