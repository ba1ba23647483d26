//! The value cache: small values of a store kept decoded in memory, each
//! dropped as soon as the kernel reports a change to its key file, so a
//! repeated `get` of an unchanged key costs one non-blocking `read` of an
//! inotify descriptor instead of open, fstat, pread and close of the file and
//! the checks of its checksums. Linux only; everywhere else, and whenever the
//! cache cannot promise to see every change, `get` takes the plain path.
//!
//! Why a write is never missed (the whole argument is in docs/RELIABILITY.md,
//! "The value cache"):
//! - Every change that can change what a key's `get` returns is a directory
//!   entry change in the store directory (a rename over the key file, an
//!   unlink, a create or link) or a write to the key file's inode (a write, a
//!   truncate, a chmod). The kernel queues the inotify event inside the system
//!   call, before it returns: a write acknowledged to its caller (the rename
//!   returned) has its event queued already, in every process's instance.
//! - A lookup that finds its key held first drains the queue (under the
//!   cache's one mutex) and drops what the events name; only then may it
//!   answer from memory. A `get` that begins after a write's rename returned
//!   therefore never sees the value the write replaced. (A key not held is a
//!   miss whatever is queued: nothing is read from the queue.)
//! - A miss reads the file and inserts what it read only if no event of this
//!   store was drained since its lookup (the store's epoch did not move): an
//!   older file read just before a rename, whose event another thread drained
//!   meanwhile, is never inserted.
//! - The path the store reads by must keep naming the watched directory: each
//!   ancestor of the store directory is watched for changes to the entry that
//!   leads to it (renamed, deleted, replaced) and the store directory for its
//!   own deletion, move or attribute change; any of them switches the cache
//!   off for good (the plain path remains). So does an `IN_IGNORED` (the
//!   kernel dropped a watch). A queue overflow (`IN_Q_OVERFLOW`: events were
//!   lost) empties every cache.
//! - Only file systems whose every change passes through this kernel are
//!   cached (ext2/3/4, XFS, btrfs, tmpfs, F2FS, ZFS, overlayfs): a network or
//!   FUSE file system can be changed elsewhere, unseen, so it is never cached.
//!
//! One inotify instance serves the whole process (instances are a scarce
//! per-user resource, 128 by default): every store's watches are in it, and
//! whichever store drains it applies every event to every store.

#[cfg(not(target_os = "linux"))]
use std::path::Path;

/// The default of [`Options::value_cache_bytes`](crate::store::Options::value_cache_bytes): 4 MiB per store.
pub const DEFAULT_VALUE_CACHE_BYTES: usize = 4 << 20;

/// What a cached entry costs besides its value and key bytes (the budget counts it).
const ENTRY_OVERHEAD: usize = 96;

/// What the value cache of a store has done (see [`FileStore::value_cache_stats`](crate::FileStore::value_cache_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValueCacheStats {
    /// The cache is on: armed (its watches in place), or not yet used.
    pub enabled: bool,
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that read the file.
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
    /// Bytes charged against the budget now.
    pub bytes: usize,
    /// Queue overflows seen by this process (each emptied every cache).
    pub overflows: u64,
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The value was copied to `buf[..len]`.
    Hit { serializer: u8, len: usize },
    /// Not cached: read the file, then [`ValueCache::insert`] with this ticket.
    Miss(Ticket),
    /// The cache is off (or cannot be used for this read): the plain path, no insert.
    Off,
}

/// The state of a store's cache when a miss began (see the module comment).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    epoch: u64,
}

/// One store's handle on the process's value cache.
#[derive(Debug)]
pub(crate) struct ValueCache {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    token: u64,
}

#[cfg(not(target_os = "linux"))]
impl ValueCache {
    pub(crate) fn new(_dir: &Path, _budget: usize) -> Option<ValueCache> {
        None
    }
    pub(crate) fn lookup(&self, _hash: u128, _key: &[u8], _buf: &mut [u8]) -> Lookup {
        Lookup::Off
    }
    pub(crate) fn insert(&self, _ticket: Ticket, _hash: u128, _key: &[u8], _serializer: u8, _value: &[u8]) {}
    pub(crate) fn stats(&self) -> ValueCacheStats {
        ValueCacheStats::default()
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashMap;
    use std::ffi::{CString, OsString};
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock, PoisonError};

    use super::{Lookup, Ticket, ValueCache, ValueCacheStats, ENTRY_OVERHEAD};
    use crate::keyhash::is_key_file_name;

    /// Events on the store directory: every entry change, every change to a
    /// file in it, and its own deletion, move or attribute change.
    const DIR_MASK: u32 = libc::IN_MOVED_TO
        | libc::IN_MOVED_FROM
        | libc::IN_CREATE
        | libc::IN_DELETE
        | libc::IN_MODIFY
        | libc::IN_CLOSE_WRITE
        | libc::IN_ATTRIB
        | libc::IN_DELETE_SELF
        | libc::IN_MOVE_SELF;
    /// Events on an ancestor: entry changes (one of them may be the entry
    /// that leads to the store) and its own deletion or move.
    const ANCESTOR_MASK: u32 =
        libc::IN_MOVED_TO | libc::IN_MOVED_FROM | libc::IN_CREATE | libc::IN_DELETE | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;
    /// Room for every event of one read: a read that leaves at least one
    /// largest event's room (16 + 256 bytes) unused found the queue empty.
    const READ_BUF: usize = 64 * 1024;
    const MAX_EVENT: usize = std::mem::size_of::<libc::inotify_event>() + 256 + 16;

    /// File systems whose every change passes through this kernel (`statfs` magic numbers).
    const LOCAL_FS: &[i64] = &[
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // XFS
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0xF2F5_2010, // F2FS
        0x2FC1_2FC1, // ZFS
        0x794C_7630, // overlayfs
    ];

    /// Set in a child of `fork`: the inherited instance is shared with the
    /// parent (whichever drains it takes the events), so the child never uses it.
    static FORKED: AtomicBool = AtomicBool::new(false);
    static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

    extern "C" fn after_fork_in_child() {
        FORKED.store(true, Ordering::Relaxed);
    }

    #[derive(Debug, Clone)]
    enum Role {
        /// The store directory itself.
        Dir,
        /// An ancestor; the entry (a name in it) that leads to the store.
        Ancestor(OsString),
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Armed {
        /// Not used yet: no watches.
        No,
        /// Watches in place.
        Yes,
        /// Off for good: the plain path.
        Off,
    }

    struct Slot {
        hash: u128,
        key: Box<[u8]>,
        serializer: u8,
        value: Box<[u8]>,
        /// The CLOCK reference bit: set by a hit, cleared as the hand passes.
        used: bool,
    }

    impl Slot {
        fn cost(&self) -> usize {
            self.key.len() + self.value.len() + ENTRY_OVERHEAD
        }
    }

    struct StoreCache {
        dir: PathBuf,
        budget: usize,
        armed: Armed,
        wds: Vec<i32>,
        map: HashMap<u128, usize>,
        slots: Vec<Option<Slot>>,
        free: Vec<usize>,
        hand: usize,
        bytes: usize,
        /// Moves whenever something of this store is dropped.
        epoch: u64,
        hits: u64,
        misses: u64,
    }

    impl StoreCache {
        fn clear(&mut self) {
            self.map.clear();
            self.slots.clear();
            self.free.clear();
            self.hand = 0;
            self.bytes = 0;
            self.epoch += 1;
        }

        fn off(&mut self) {
            self.clear();
            self.armed = Armed::Off;
        }

        fn drop_hash(&mut self, hash: u128) {
            self.epoch += 1;
            if let Some(i) = self.map.remove(&hash) {
                self.take_slot(i);
            }
        }

        fn take_slot(&mut self, i: usize) {
            if let Some(s) = self.slots[i].take() {
                self.bytes -= s.cost();
                self.free.push(i);
            }
        }

        /// Evicts (CLOCK, an approximation of LRU) until `need` more bytes fit.
        fn make_room(&mut self, need: usize) {
            while self.bytes + need > self.budget && !self.map.is_empty() {
                if self.hand >= self.slots.len() {
                    self.hand = 0;
                }
                let i = self.hand;
                self.hand += 1;
                let evict = match &mut self.slots[i] {
                    Some(s) if s.used => {
                        s.used = false;
                        None
                    }
                    Some(s) => Some(s.hash),
                    None => None,
                };
                if let Some(hash) = evict {
                    self.map.remove(&hash);
                    self.take_slot(i);
                }
            }
        }
    }

    struct Hub {
        /// The process's inotify instance (non-blocking), or -1 if there is none.
        fd: i32,
        watches: HashMap<i32, Vec<(u64, Role)>>,
        stores: HashMap<u64, StoreCache>,
        buf: Vec<u8>,
        overflows: u64,
    }

    fn hub() -> &'static Mutex<Hub> {
        static HUB: OnceLock<Mutex<Hub>> = OnceLock::new();
        HUB.get_or_init(|| {
            // SAFETY: a plain system call; the handler only stores an atomic.
            let fd = unsafe {
                libc::pthread_atfork(None, None, Some(after_fork_in_child));
                libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC)
            };
            Mutex::new(Hub { fd, watches: HashMap::new(), stores: HashMap::new(), buf: vec![0u8; READ_BUF], overflows: 0 })
        })
    }

    fn lock() -> std::sync::MutexGuard<'static, Hub> {
        hub().lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `dir` is on a file system that only this kernel changes.
    fn local_fs(dir: &Path) -> bool {
        let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else { return false };
        // SAFETY: statfs is plain data; a valid C string and a valid out pointer.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            return false;
        }
        #[allow(clippy::unnecessary_cast)]
        let magic = st.f_type as i64;
        LOCAL_FS.contains(&magic)
    }

    impl Hub {
        /// Adds `path`'s watch (ORed into an existing one) for `token` in `role`.
        fn watch(&mut self, token: u64, path: &Path, mask: u32, role: Role) -> Option<i32> {
            let c = CString::new(path.as_os_str().as_bytes()).ok()?;
            let flags = mask | libc::IN_MASK_ADD | libc::IN_ONLYDIR | libc::IN_DONT_FOLLOW;
            // SAFETY: a valid descriptor and C string.
            let wd = unsafe { libc::inotify_add_watch(self.fd, c.as_ptr(), flags) };
            if wd < 0 {
                return None;
            }
            self.watches.entry(wd).or_default().push((token, role));
            Some(wd)
        }

        /// Puts a store's watches in place, top-down: each watch is added by a
        /// path lookup through directories already watched, so a change to the
        /// path after its lookup is an event. Any failure leaves the cache off.
        fn arm(&mut self, token: u64) {
            let Some(dir) = self.stores.get(&token).map(|s| s.dir.clone()) else { return };
            // Events queued before this store watched anything are not its
            // concern (it holds nothing yet), but they would be applied to its
            // roles on a watch it shares (an ancestor of other stores too).
            if self.fd >= 0 {
                self.drain();
            }
            let mut ok = self.fd >= 0 && local_fs(&dir);
            let mut wds = Vec::new();
            if ok {
                let chain: Vec<&Path> = dir.ancestors().collect();
                for level in (0..chain.len()).rev() {
                    let path = chain[level];
                    let role = if level == 0 {
                        Role::Dir
                    } else {
                        match chain[level - 1].file_name() {
                            Some(child) => Role::Ancestor(child.to_os_string()),
                            None => {
                                ok = false;
                                break;
                            }
                        }
                    };
                    let mask = if level == 0 { DIR_MASK } else { ANCESTOR_MASK };
                    match self.watch(token, path, mask, role) {
                        Some(wd) => wds.push(wd),
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
            }
            if let Some(s) = self.stores.get_mut(&token) {
                s.wds = wds;
                if ok {
                    s.armed = Armed::Yes;
                } else {
                    s.off();
                }
            }
            if !ok {
                self.unwatch(token);
            }
        }

        /// Removes `token`'s roles; a watch no store needs any more is removed.
        fn unwatch(&mut self, token: u64) {
            let wds = self.stores.get_mut(&token).map(|s| std::mem::take(&mut s.wds)).unwrap_or_default();
            for wd in wds {
                let Some(roles) = self.watches.get_mut(&wd) else { continue };
                roles.retain(|(t, _)| *t != token);
                if roles.is_empty() {
                    self.watches.remove(&wd);
                    // SAFETY: a plain system call; a watch the kernel already dropped fails harmlessly.
                    unsafe { libc::inotify_rm_watch(self.fd, wd) };
                }
            }
        }

        /// Reads every queued event and applies it to every store.
        fn drain(&mut self) {
            loop {
                // SAFETY: a valid descriptor and a buffer of the length passed.
                let n = unsafe { libc::read(self.fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
                if n < 0 {
                    match std::io::Error::last_os_error().raw_os_error() {
                        Some(libc::EAGAIN) => return,
                        Some(libc::EINTR) => continue,
                        // The queue cannot be read: nothing cached can be trusted.
                        _ => {
                            for s in self.stores.values_mut() {
                                s.off();
                            }
                            return;
                        }
                    }
                }
                let n = n as usize;
                let buf = std::mem::take(&mut self.buf);
                self.apply(&buf[..n]);
                self.buf = buf;
                if n + MAX_EVENT <= READ_BUF {
                    return;
                }
            }
        }

        fn apply(&mut self, mut events: &[u8]) {
            const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
            while events.len() >= HEAD {
                // SAFETY: the kernel wrote a whole event here; read unaligned.
                let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(events.as_ptr().cast()) };
                let end = (HEAD + ev.len as usize).min(events.len());
                let raw = &events[HEAD..end];
                let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
                events = &events[end..];
                if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                    self.overflows += 1;
                    for s in self.stores.values_mut() {
                        s.clear();
                    }
                    continue;
                }
                let Hub { watches, stores, .. } = self;
                let Some(roles) = watches.get(&ev.wd) else { continue };
                for (token, role) in roles {
                    let Some(s) = stores.get_mut(token) else { continue };
                    if s.armed != Armed::Yes {
                        continue;
                    }
                    match role {
                        // An event of the directory itself: deleted, moved, its attributes changed.
                        _ if name.is_empty() => s.off(),
                        Role::Dir => {
                            let Ok(name) = std::str::from_utf8(name) else { continue };
                            if is_key_file_name(name) {
                                let hash = u128::from_str_radix(&name[..32], 16).expect("32 lowercase hex digits");
                                s.drop_hash(hash);
                            }
                        }
                        Role::Ancestor(child) => {
                            if child.as_bytes() == name {
                                s.off();
                            }
                        }
                    }
                }
                if ev.mask & libc::IN_IGNORED != 0 {
                    // The kernel dropped the watch (its directory is gone or unmounted).
                    self.watches.remove(&ev.wd);
                }
            }
        }
    }

    impl ValueCache {
        /// A cache of at most `budget` bytes for the store in `dir` (canonical):
        /// `None` if `budget` is 0. Watches are put in place at the first lookup.
        pub(crate) fn new(dir: &Path, budget: usize) -> Option<ValueCache> {
            if budget == 0 {
                return None;
            }
            let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
            let store = StoreCache {
                dir: dir.to_path_buf(),
                budget,
                armed: Armed::No,
                wds: Vec::new(),
                map: HashMap::new(),
                slots: Vec::new(),
                free: Vec::new(),
                hand: 0,
                bytes: 0,
                epoch: 0,
                hits: 0,
                misses: 0,
            };
            lock().stores.insert(token, store);
            Some(ValueCache { token })
        }

        /// Answers from memory if it can (the events drained first), copying the
        /// value to the start of `buf` (a value longer than `buf` is a miss).
        pub(crate) fn lookup(&self, hash: u128, key: &[u8], buf: &mut [u8]) -> Lookup {
            if FORKED.load(Ordering::Relaxed) {
                return Lookup::Off;
            }
            let mut hub = lock();
            let armed = hub.stores.get(&self.token).map_or(Armed::Off, |s| s.armed);
            match armed {
                Armed::Off => return Lookup::Off,
                Armed::No => hub.arm(self.token),
                Armed::Yes => {}
            }
            // Only a hit needs the queue drained first. A key not held is a
            // miss whatever is queued: the caller reads its file, and an event
            // left queued (of a write before or after that read) is drained
            // before any later hit and drops what the miss inserted. (An event
            // drained meanwhile by another lookup moves the epoch: no insert.)
            if hub.stores.get(&self.token).is_some_and(|s| s.map.contains_key(&hash)) {
                hub.drain();
            }
            let Some(s) = hub.stores.get_mut(&self.token) else { return Lookup::Off };
            if s.armed != Armed::Yes {
                return Lookup::Off;
            }
            if let Some(&i) = s.map.get(&hash) {
                if let Some(slot) = s.slots[i].as_mut().filter(|slot| &*slot.key == key && slot.value.len() <= buf.len()) {
                    slot.used = true;
                    let len = slot.value.len();
                    buf[..len].copy_from_slice(&slot.value);
                    let serializer = slot.serializer;
                    s.hits += 1;
                    return Lookup::Hit { serializer, len };
                }
            }
            s.misses += 1;
            Lookup::Miss(Ticket { epoch: s.epoch })
        }

        /// Keeps a value read after the lookup that gave `ticket`, unless
        /// something of this store changed since (or it exceeds the budget).
        pub(crate) fn insert(&self, ticket: Ticket, hash: u128, key: &[u8], serializer: u8, value: &[u8]) {
            let mut hub = lock();
            let Some(s) = hub.stores.get_mut(&self.token) else { return };
            if s.armed != Armed::Yes || s.epoch != ticket.epoch {
                return;
            }
            let slot = Slot { hash, key: key.into(), serializer, value: value.into(), used: false };
            let cost = slot.cost();
            if cost > s.budget {
                return;
            }
            if let Some(i) = s.map.remove(&hash) {
                s.take_slot(i);
            }
            s.make_room(cost);
            s.bytes += cost;
            let i = match s.free.pop() {
                Some(i) => {
                    s.slots[i] = Some(slot);
                    i
                }
                None => {
                    s.slots.push(Some(slot));
                    s.slots.len() - 1
                }
            };
            s.map.insert(hash, i);
        }

        /// What this store's cache has done.
        pub(crate) fn stats(&self) -> ValueCacheStats {
            let hub = lock();
            let overflows = hub.overflows;
            hub.stores.get(&self.token).map_or(ValueCacheStats { overflows, ..ValueCacheStats::default() }, |s| ValueCacheStats {
                enabled: s.armed != Armed::Off && !FORKED.load(Ordering::Relaxed),
                hits: s.hits,
                misses: s.misses,
                entries: s.map.len(),
                bytes: s.bytes,
                overflows,
            })
        }
    }

    impl Drop for ValueCache {
        fn drop(&mut self) {
            let mut hub = lock();
            hub.unwatch(self.token);
            hub.stores.remove(&self.token);
        }
    }
}
