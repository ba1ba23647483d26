//! A simulated, pessimistic file system for crash tests (compiled for tests only).
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

use crate::vfs::{FileStat, Identity, Vfs, VfsFile};

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
pub(crate) enum Writeback {
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
pub(crate) struct SimFs {
    state: Arc<Mutex<State>>,
    /// The process this handle acts as.
    pid: u32,
}

impl SimFs {
    /// An empty file system (only the root directory); `seed` drives the
    /// random choices of [`crash`](Self::crash).
    pub(crate) fn new(seed: u64) -> SimFs {
        SimFs { state: Arc::new(Mutex::new(State::new(seed))), pid: std::process::id() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.actor = self.pid;
        s
    }

    /// The same disk, seen by another process `pid`.
    pub(crate) fn as_process(&self, pid: u32) -> SimFs {
        SimFs { state: Arc::clone(&self.state), pid }
    }

    /// Process `pid` dies at its `n`-th mutating call from now (that call fails).
    pub(crate) fn kill_after(&self, pid: u32, n: u64) {
        self.state().kill_at.insert(pid, n);
    }

    /// Whether process `pid` was killed by [`kill_after`](Self::kill_after).
    pub(crate) fn was_killed(&self, pid: u32) -> bool {
        self.state().killed.contains(&pid)
    }

    /// A new process gets the dead `pid` (pid reuse): alive, with a new start time.
    pub(crate) fn respawn(&self, pid: u32) {
        let mut s = self.state();
        s.dead_pids.remove(&pid);
        s.killed.remove(&pid);
        *s.starts.entry(pid).or_insert(1) += 1;
    }

    /// Moves the clock on.
    pub(crate) fn advance(&self, ms: u64) {
        self.state().clock_ms += ms;
    }

    /// Every call named `call` fails with `errno` from now on.
    pub(crate) fn always_fail(&self, call: &'static str, errno: i32) {
        self.state().always_fail.insert(call, errno);
    }

    /// The mutating or syncing calls made so far.
    pub(crate) fn steps(&self) -> u64 {
        self.state().steps
    }

    /// Arms a crash: the next `n` mutating or syncing calls succeed, and every
    /// call after them fails, as if the process had died.
    pub(crate) fn fail_after(&self, n: u64) {
        let mut s = self.state();
        s.crash_at = Some(s.steps + n);
    }

    /// Arms a lone I/O error: the call `n` steps from now fails with `EIO`,
    /// and the process lives on.
    pub(crate) fn fail_once(&self, n: u64) {
        let mut s = self.state();
        s.fail_once_at = Some(s.steps + n);
    }

    /// [`fail_once`](Self::fail_once) with another errno than `EIO`.
    pub(crate) fn fail_once_with(&self, n: u64, errno: i32) {
        let mut s = self.state();
        s.fail_once_at = Some(s.steps + n);
        s.fail_errno = errno;
    }

    /// The call that [`fail_once`](Self::fail_once) made fail, once it has.
    pub(crate) fn failed_call(&self) -> Option<&'static str> {
        self.state().failed_call
    }

    /// Whether the armed crash has happened (the process is dead).
    pub(crate) fn is_dead(&self) -> bool {
        self.state().dead
    }

    /// Declares process `pid` dead, so [`Vfs::process_alive`] answers `false`.
    pub(crate) fn kill(&self, pid: u32) {
        self.state().dead_pids.insert(pid);
    }

    /// A power cut, and the machine back up: what was not durable is undone
    /// except what `writeback` lets survive, un-synced file tails are torn,
    /// old handles stop working, locks are released, and the process that ran
    /// (this one's pid) counts as dead. Calls succeed again afterwards.
    pub(crate) fn crash(&self, writeback: Writeback) {
        self.state().crash(writeback);
    }

    /// The full content of the file at `path`, as the running process sees it.
    pub(crate) fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.state();
        let ino = s.file_ino(path)?;
        Ok(s.files[&ino].data.clone())
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
        Ok(Box::new(SimFile { state: Arc::clone(&self.state), pid: self.pid, ino, generation: s.generation, writable: true }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let s = self.state();
        s.alive()?;
        let ino = s.file_ino(path)?;
        Ok(Box::new(SimFile { state: Arc::clone(&self.state), pid: self.pid, ino, generation: s.generation, writable: false }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let s = self.state();
        s.alive()?;
        let ino = s.file_ino(path)?;
        Ok(Box::new(SimFile { state: Arc::clone(&self.state), pid: self.pid, ino, generation: s.generation, writable: true }))
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

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.state();
        s.step("write_all_at")?;
        s.check_generation(self.generation)?;
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the file is open for reading only"));
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

    fn sync(&self) -> io::Result<()> {
        let mut s = self.state();
        s.step("sync")?;
        s.check_generation(self.generation)?;
        s.files.get_mut(&self.ino).expect("an open inode").mark_synced();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cke::{encode, Key};
    use crate::error::ErrorCode;
    use crate::staging;
    use crate::store::{Entry, FileStore, Options, Write, LOCK_FILE_NAME};
    use std::collections::BTreeMap;
    use std::time::Instant;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn write_file(fs: &SimFs, path: &str, data: &[u8], sync: bool) {
        let mut f = fs.create_new(&p(path)).unwrap();
        f.write_all(data).unwrap();
        if sync {
            f.sync().unwrap();
        }
    }

    // --- The simulator itself: the crash tests are only as good as it is. ---

    #[test]
    fn sim_keeps_only_what_was_synced() {
        let fs = SimFs::new(7);
        fs.create_dir_all(&p("/d")).unwrap();
        fs.sync_dir(&p("/")).unwrap();
        write_file(&fs, "/d/synced", b"durable", true);
        write_file(&fs, "/d/unsynced", b"lost", false);
        fs.sync_dir(&p("/d")).unwrap();
        write_file(&fs, "/d/unnamed", b"data", true); // data synced, name not
        fs.rename(&p("/d/synced"), &p("/d/moved")).unwrap(); // not durable
        fs.crash(Writeback::None);
        let mut names = fs.read_dir(&p("/d")).unwrap();
        names.sort();
        assert_eq!(names, vec![OsString::from("synced"), OsString::from("unsynced")]);
        assert_eq!(fs.read(&p("/d/synced")).unwrap(), b"durable");
        let torn = fs.read(&p("/d/unsynced")).unwrap();
        assert!(torn.len() <= 4 && torn.iter().zip(b"lost").all(|(&t, &d)| t == d || t == 0), "{torn:?}");

        // A rename made durable by sync_dir survives, with the inode's data.
        fs.rename(&p("/d/synced"), &p("/d/moved")).unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        fs.crash(Writeback::None);
        assert_eq!(fs.read(&p("/d/moved")).unwrap(), b"durable");
        assert!(!fs.exists(&p("/d/synced")).unwrap());
    }

    #[test]
    fn sim_writeback_keeps_a_prefix_of_the_changes_in_order() {
        let mut seen = BTreeSet::new();
        for seed in 0..64 {
            for writeback in [Writeback::Unordered, Writeback::Ordered] {
                let fs = SimFs::new(seed);
                fs.create_dir_all(&p("/d")).unwrap();
                fs.sync_dir(&p("/")).unwrap();
                fs.sync_dir(&p("/d")).unwrap();
                write_file(&fs, "/d/a", b"data", false);
                fs.rename(&p("/d/a"), &p("/d/b")).unwrap();
                fs.crash(writeback);
                let names: Vec<String> = fs.read_dir(&p("/d")).unwrap().into_iter().map(|n| n.into_string().unwrap()).collect();
                // Never both names: a rename survives whole or not at all.
                assert!(names.is_empty() || names == ["a"] || names == ["b"], "{names:?}");
                if writeback == Writeback::Ordered && names == ["b"] {
                    assert_eq!(fs.read(&p("/d/b")).unwrap(), b"data", "a surviving rename carries its data");
                }
                seen.insert(names);
            }
        }
        assert_eq!(seen.len(), 3, "every prefix occurs for some seed");
    }

    #[test]
    fn sim_loses_a_new_directory_whose_parent_was_not_synced() {
        let fs = SimFs::new(1);
        fs.create_dir_all(&p("/a/b")).unwrap();
        fs.sync_dir(&p("/a/b")).unwrap();
        fs.crash(Writeback::None);
        assert!(!fs.exists(&p("/a")).unwrap());
    }

    #[test]
    fn sim_dies_after_the_armed_step_and_old_handles_stop_working() {
        let fs = SimFs::new(1);
        fs.fail_after(2);
        fs.create_dir_all(&p("/d")).unwrap();
        let mut f = fs.create_new(&p("/d/f")).unwrap();
        assert!(!fs.is_dead());
        assert!(f.write_all(b"x").is_err());
        assert!(fs.is_dead());
        assert!(fs.read_dir(&p("/")).is_err(), "reads fail too once dead");
        fs.crash(Writeback::None);
        assert!(!fs.process_alive(std::process::id()));
        assert!(fs.read_dir(&p("/")).unwrap().is_empty());
        assert!(f.size().is_err());
    }

    // --- The store under crashes. ---

    /// One step of the workload.
    #[derive(Clone, Debug)]
    enum Op {
        /// One `FileStore::put` of every (key, value).
        Put(Vec<(&'static str, Vec<u8>)>),
        /// One `FileStore::delete` of every key.
        Delete(Vec<&'static str>),
    }

    /// A key's state: its record, or `None` when absent.
    type KeyState = Option<Entry>;

    const META: &[u8] = b"\x80"; // an empty MessagePack map

    fn key(name: &str) -> Vec<u8> {
        encode(&Key::str(name))
    }

    fn record(value: &[u8]) -> Entry {
        Entry { serializer: 0, meta: META.to_vec(), value: value.to_vec(), log: None }
    }

    /// Single puts, overwrites, a multi-key batch, a 256 KiB blob written
    /// twice, single and multi-key deletes, and a key re-created after its delete.
    fn workload() -> Vec<Op> {
        let blob = |salt: u8| -> Vec<u8> { (0..256 * 1024u32).map(|i| (i % 251) as u8 ^ salt).collect() };
        let v = |s: &str| s.as_bytes().to_vec();
        vec![
            Op::Put(vec![("a", v("a1"))]),
            Op::Put(vec![("b", v("b1"))]),
            Op::Put(vec![("a", v("a2, longer than a1"))]),
            Op::Put(vec![("c", v("c1")), ("d", v("d1")), ("a", v("a3"))]),
            Op::Put(vec![("blob", blob(1))]),
            Op::Delete(vec!["b"]),
            Op::Put(vec![("blob", blob(2)), ("e", Vec::new())]),
            Op::Delete(vec!["c", "d", "never-written"]),
            Op::Put(vec![("c", v("c2"))]),
            Op::Delete(vec!["a"]),
            Op::Put(vec![("d", v("d2"))]),
        ]
    }

    /// Every key the workload touches.
    fn universe(ops: &[Op]) -> BTreeSet<&'static str> {
        let mut keys = BTreeSet::new();
        for op in ops {
            match op {
                Op::Put(kvs) => keys.extend(kvs.iter().map(|(k, _)| *k)),
                Op::Delete(ks) => keys.extend(ks.iter().copied()),
            }
        }
        keys
    }

    /// What `op` leaves in `name`, if it touches it.
    fn effect(op: &Op, name: &str) -> Option<KeyState> {
        match op {
            Op::Put(kvs) => kvs.iter().find(|(k, _)| *k == name).map(|(_, v)| Some(record(v))),
            Op::Delete(ks) => ks.contains(&name).then_some(None),
        }
    }

    /// The store's directory, and a fresh file system on which it exists
    /// durably: the crash window starts at `open_with` (whose own directory
    /// creation is tested separately).
    fn setup(seed: u64, dir: &str) -> (SimFs, PathBuf) {
        let (fs, dir) = (SimFs::new(seed), p(dir));
        fs.create_dir_all(&dir).unwrap();
        for d in dir.ancestors() {
            fs.sync_dir(d).unwrap();
        }
        (fs, dir)
    }

    /// How one op of the workload ended.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Outcome {
        /// It returned `Ok`: its effect must be durable.
        Acked,
        /// It returned this error: its effect may or may not be there.
        Failed(ErrorCode),
        /// It was called after the process died: nothing of it reached the disk.
        NotRun,
    }

    /// Opens the store and runs `ops`, one outcome per op (all `NotRun` if
    /// the open failed). An op may fail only once the process is dead, or
    /// after [`SimFs::fail_once`] struck.
    fn run(fs: &SimFs, dir: &Path, options: &Options, ops: &[Op]) -> Vec<Outcome> {
        let store = match FileStore::open_with(Arc::new(fs.clone()), dir, options.clone()) {
            Ok(s) => s,
            Err(e) => {
                assert!(fs.is_dead() || fs.failed_call().is_some(), "open failed without a fault: {e}");
                return vec![Outcome::NotRun; ops.len()];
            }
        };
        ops.iter()
            .map(|op| {
                let dead_before = fs.is_dead();
                let result = match op {
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
                };
                match result {
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

    /// The states `name` may be in after a crash: what the last acknowledged
    /// op that touched it left (absent if none), or what any later op that
    /// failed left (it may have got partway).
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

    /// Every state `name` ever had in the workload, and absence.
    fn any_written_state(ops: &[Op], name: &str) -> Vec<KeyState> {
        std::iter::once(None).chain(ops.iter().filter_map(|op| effect(op, name))).collect()
    }

    fn staging_files(fs: &SimFs, dir: &Path) -> Vec<String> {
        let names = fs.read_dir(dir).unwrap();
        names.into_iter().filter_map(|n| n.into_string().ok()).filter(|n| staging::parse_staging_name(n).is_some()).collect()
    }

    /// Reopens the store after a crash and checks it: each key is in one of
    /// its allowed states (`corrupt_ok`: or reports itself corrupt), `list`
    /// agrees with `get`, no staging file is left, and the store takes writes.
    fn check_recovery(
        fs: &SimFs,
        dir: &Path,
        options: &Options,
        ops: &[Op],
        allowed: impl Fn(&str) -> Vec<KeyState>,
        corrupt_ok: bool,
        ctx: &str,
    ) -> usize {
        let store =
            FileStore::open_with(Arc::new(fs.clone()), dir, options.clone()).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
        let (mut readable, mut damaged) = (BTreeSet::new(), 0);
        for name in universe(ops) {
            let got = match store.get(&key(name)) {
                Ok(got) => got,
                Err(e) if corrupt_ok && e.code() == ErrorCode::Corrupt => {
                    damaged += 1;
                    continue;
                }
                Err(e) => panic!("{ctx}: key {name:?} cannot be read: {e}"),
            };
            let allowed = allowed(name);
            assert!(
                allowed.contains(&got),
                "{ctx}: key {name:?} holds {:?}, allowed: {:?}",
                got.as_ref().map(|e| e.value.len()),
                allowed.iter().map(|s| s.as_ref().map(|e| e.value.len())).collect::<Vec<_>>()
            );
            if got.is_some() {
                readable.insert(key(name));
            }
        }
        // `list` reads only heads: it lists every readable key, and reports
        // a damaged file as corrupt or (if only its value is torn) lists it.
        let listing = store.list().unwrap();
        let listed: BTreeSet<Vec<u8>> = listing.entries.into_iter().map(|e| e.key).collect();
        if corrupt_ok {
            assert!(readable.is_subset(&listed), "{ctx}: a readable key is not listed");
            assert_eq!(listed.len() + listing.corrupt.len(), readable.len() + damaged, "{ctx}: list and get disagree");
            assert!(listing.corrupt.iter().all(|e| e.code() == ErrorCode::Corrupt), "{ctx}: {:?}", listing.corrupt);
        } else {
            assert!(listing.corrupt.is_empty(), "{ctx}: list reports corrupt files: {:?}", listing.corrupt);
            assert_eq!(listed, readable, "{ctx}: list disagrees with get");
        }
        assert_eq!(staging_files(fs, dir), Vec::<String>::new(), "{ctx}: staging files left after reopen");
        for name in fs.read_dir(dir).unwrap() {
            let name = name.into_string().unwrap();
            let ours = name == LOCK_FILE_NAME
                || name == crate::codec::keycheck::KEY_CHECK_FILE_NAME
                || universe(ops).iter().any(|k| crate::keyhash::file_name(&key(k)) == name);
            assert!(ours, "{ctx}: unexpected file {name:?} after reopen");
        }
        // The recovered store takes writes.
        let k = key("after-recovery");
        store.put(&[Write { key: &k, serializer: 0, meta: META, value: b"ok" }]).unwrap();
        assert_eq!(store.get(&k).unwrap(), Some(record(b"ok")));
        damaged
    }

    /// How many steps the workload takes with `options`, without a crash.
    fn count_steps(options: &Options, dir: &str) -> u64 {
        let ops = workload();
        let (fs, dir) = setup(0, dir);
        let start = fs.steps();
        assert!(run(&fs, &dir, options, &ops).iter().all(|&o| o == Outcome::Acked));
        fs.steps() - start
    }

    fn synced() -> Options {
        Options { sync_blob: true, ..Options::default() }
    }

    /// Crashes the workload at every step, once per seed, and checks the
    /// recovered store against what was acknowledged.
    fn crash_at_every_step(options: Options, writeback: Writeback, seeds: &[u64], dir: &str) {
        let started = Instant::now();
        assert!(options.sync_blob);
        let ops = workload();
        let total = count_steps(&options, dir);
        for n in 0..=total {
            for &seed in seeds {
                let ctx = format!("crash at step {n} of {total}, seed {seed}, {writeback:?}");
                let (fs, dir) = setup(seed, dir);
                fs.fail_after(n);
                let outcomes = run(&fs, &dir, &options, &ops);
                assert_eq!(fs.is_dead(), n < total, "{ctx}: the crash hit (or not) as armed");
                fs.crash(writeback);
                check_recovery(&fs, &dir, &options, &ops, |k| allowed_states(&ops, &outcomes, k), false, &ctx);
            }
        }
        let runs = (total + 1) * seeds.len() as u64;
        eprintln!("{writeback:?}: {runs} crash runs over {} crash points in {:?}", total + 1, started.elapsed());
    }

    #[test]
    fn acknowledged_writes_survive_a_crash_at_every_step() {
        crash_at_every_step(synced(), Writeback::None, &[1], "/sim/durable-none");
    }

    #[test]
    fn acknowledged_writes_survive_a_crash_with_partial_writeback() {
        crash_at_every_step(synced(), Writeback::Unordered, &[3, 4], "/sim/durable-unordered");
    }

    #[test]
    fn acknowledged_writes_survive_a_crash_with_ordered_writeback() {
        crash_at_every_step(synced(), Writeback::Ordered, &[6], "/sim/durable-ordered");
    }

    #[test]
    fn acknowledged_writes_survive_a_crash_with_lz4_and_encryption() {
        let options = Options { compressor: 1, encryption_key: Some(b"s3cr3t".to_vec()), ..synced() };
        crash_at_every_step(options, Writeback::Unordered, &[7], "/sim/durable-codec");
    }

    #[test]
    fn without_sync_a_crash_keeps_some_written_value_of_each_key() {
        let options = Options { sync_blob: false, ..Options::default() };
        let ops = workload();
        let dir = "/sim/nosync";
        let total = count_steps(&options, dir);
        let mut corrupt = 0;
        for n in 0..=total {
            for (seed, writeback) in [(1, Writeback::None), (2, Writeback::Ordered), (3, Writeback::Ordered), (4, Writeback::Unordered)] {
                let ctx = format!("crash at step {n} of {total}, seed {seed}, {writeback:?}");
                let (fs, dir) = setup(seed, dir);
                fs.fail_after(n);
                run(&fs, &dir, &options, &ops);
                fs.crash(writeback);
                // Without fsyncs, only a file system that writes a renamed
                // file's data before the rename (Ordered) keeps every key
                // whole; elsewhere a torn file must at least be detected.
                let corrupt_ok = writeback == Writeback::Unordered;
                corrupt += check_recovery(&fs, &dir, &options, &ops, |k| any_written_state(&ops, k), corrupt_ok, &ctx);
            }
        }
        eprintln!("without sync, unordered writeback: {corrupt} torn key files, all detected");
    }

    /// A lone I/O error at every step: the op that hit it fails and nothing
    /// else does, except that after a failed fsync the store refuses every
    /// write (the kernel may have dropped the dirty pages: "fsyncgate").
    /// What was acknowledged then survives a crash.
    #[test]
    fn a_lone_io_error_fails_its_op_and_a_failed_fsync_stops_writes() {
        let options = Options { sync_blob: true, ..Options::default() };
        let ops = workload();
        let dir = "/sim/eio";
        let total = count_steps(&options, dir);
        for n in 0..total {
            let ctx = format!("EIO at step {n} of {total}");
            let (fs, dir) = setup(1, dir);
            fs.fail_once(n);
            let outcomes = run(&fs, &dir, &options, &ops);
            let call = fs.failed_call().unwrap_or_else(|| panic!("{ctx}: no call failed"));
            let ctx = format!("{ctx} ({call})");
            if outcomes.iter().all(|o| *o == Outcome::NotRun) {
                assert!(matches!(call, "create_dir_all" | "open_lock_file"), "{ctx}: the open failed");
            } else if let Some(first) = outcomes.iter().position(|o| *o != Outcome::Acked) {
                let fsync = call == "sync" || call == "sync_dir";
                if let Outcome::Failed(code) = outcomes[first] {
                    assert_eq!(code == ErrorCode::Fsync, fsync, "{ctx}: the failed op's error code is {code:?}");
                }
                for later in &outcomes[first + 1..] {
                    let expected = if fsync { Outcome::Failed(ErrorCode::StorePoisoned) } else { Outcome::Acked };
                    assert_eq!(*later, expected, "{ctx}: an op after the failure");
                }
            }
            fs.crash(Writeback::None);
            check_recovery(&fs, &dir, &options, &ops, |k| allowed_states(&ops, &outcomes, k), false, &ctx);
        }
    }

    /// Running out of descriptors when the directory is opened for its fsync
    /// (EMFILE, ENFILE) is not a failed fsync: the op fails with the table's
    /// code, and the store is not poisoned (issue #23 item 5).
    #[test]
    fn a_directory_that_cannot_be_opened_for_fsync_does_not_poison() {
        let options = Options { sync_blob: true, ..Options::default() };
        let ops = workload();
        let dir = "/sim/emfile";
        let total = count_steps(&options, dir);
        let mut seen = 0;
        for errno in [libc::EMFILE, libc::ENFILE] {
            for n in 0..total {
                let ctx = format!("errno {errno} at step {n} of {total}");
                let (fs, dir) = setup(1, dir);
                fs.fail_once_with(n, errno);
                let outcomes = run(&fs, &dir, &options, &ops);
                if fs.failed_call() != Some("sync_dir") {
                    continue;
                }
                let Some(first) = outcomes.iter().position(|o| *o != Outcome::Acked && *o != Outcome::NotRun) else { continue };
                seen += 1;
                assert_eq!(outcomes[first], Outcome::Failed(ErrorCode::TooManyFiles), "{ctx}");
                for later in &outcomes[first + 1..] {
                    assert_eq!(*later, Outcome::Acked, "{ctx}: an op after the failure");
                }
            }
        }
        assert!(seen > 4, "only {seen} directory fsyncs failed");
    }

    #[test]
    fn open_sweeps_staging_files_of_dead_processes_only() {
        let (fs, dir) = setup(1, "/sim/sweep");
        let hex = "0123456789abcdef0123456789abcdef";
        let dead = staging::staging_name(hex, 4242, 0);
        let live = staging::staging_name(hex, 4343, 0);
        for name in [&dead, &live] {
            write_file(&fs, &format!("{}/{name}", dir.display()), b"partial", true);
        }
        fs.sync_dir(&dir).unwrap();
        fs.kill(4242);
        let _store = FileStore::open_with(Arc::new(fs.clone()), &dir, Options::default()).unwrap();
        // The sweep's removal is durable: it survives another crash.
        fs.crash(Writeback::None);
        assert_eq!(staging_files(&fs, &dir), vec![live]);
    }

    /// Found by this simulator (and fixed): `open_with` created the store
    /// directory without an fsync of its parent, so on a strict POSIX file
    /// system a crash could take the new directory, and every write
    /// acknowledged in it, away.
    #[test]
    fn a_new_store_directory_survives_a_crash() {
        let fs = SimFs::new(1);
        let dir = p("/sim/new");
        let store = FileStore::open_with(Arc::new(fs.clone()), &dir, Options::default()).unwrap();
        let k = key("k");
        store.put(&[Write { key: &k, serializer: 0, meta: META, value: b"v" }]).unwrap();
        drop(store);
        fs.crash(Writeback::None);
        let store = FileStore::open_with(Arc::new(fs.clone()), &dir, Options::default()).unwrap();
        assert_eq!(store.get(&k).unwrap(), Some(record(b"v")));
    }

    #[test]
    fn the_workload_covers_what_it_claims() {
        // A guard against the crash test quietly shrinking.
        let ops = workload();
        let by_kind = ops.iter().fold(BTreeMap::<&str, usize>::new(), |mut m, op| {
            let kind = match op {
                Op::Put(kvs) if kvs.len() > 1 => "batch",
                Op::Put(kvs) if kvs[0].1.len() >= 256 * 1024 => "blob",
                Op::Put(_) => "put",
                Op::Delete(ks) if ks.len() > 1 => "multi-delete",
                Op::Delete(_) => "delete",
            };
            *m.entry(kind).or_default() += 1;
            m
        });
        for kind in ["batch", "blob", "put", "multi-delete", "delete"] {
            assert!(by_kind.get(kind).copied().unwrap_or(0) > 0, "no {kind} in the workload");
        }
        assert!(count_steps(&Options::default(), "/sim/count") > 50);
    }
}
