//! The durable file store: one file per key (FORMAT.md §3, §4), written through
//! a staging file and an atomic rename (§5), locked per key (§6).
//!
//! The store does no read-modify-write of its own: callers (the binding's
//! facade) take a key's [lock](FileStore::lock), read, compute, [put](FileStore::put)
//! and unlock. Plain reads need no lock: a key's file is only ever replaced by
//! a rename, so a reader sees the old file or the new one, whole.

use std::borrow::Cow;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::blob::{self, BlobReader, BlobWriter};
use crate::codec::OsRandom;
use crate::error::{Error, ErrorCode, Result};
use crate::filelock::{self, Attempt, Locker, Record};
use crate::format::file::{self, HEADER_LEN};
use crate::format::key;
use crate::format::keycheck::{KEY_CHECK_FILE_NAME, REKEY_FILE_NAME};
use crate::format::log::{LogInfo, NewRecord};
use crate::format::wal::{frame_len, NewWalRecord, WalOp, MAX_FRAME, RECORD_HEAD, WAL_FILE_NAME};
use crate::keyfile::{self, StoreDir};
pub use crate::keyfile::{MetaEntry, Options, DEFAULT_LOCK_TIMEOUT};
use crate::keyhash::{self, is_key_file_name};
use crate::locks::{LockId, LockTable};
use crate::log::{self, LogCursor};
use crate::staging::{self, stage_parallel, InFlight};
use crate::valuecache::{Lookup, Ticket, ValueCacheStats};
use crate::vfs::{self, RealFs, Vfs};
use crate::wal::{record_hash, Wal, WalLookup, WalOptions};

/// The lock file of format versions before the per-key lock files (FORMAT.md
/// §6): no longer created or used; `delete_store` removes it, listings ignore it.
pub const LOCK_FILE_NAME: &str = ".konserve.lock";

/// The clock watermark file of a store directory (FORMAT.md §1, §7): written
/// by the facade, never a key; `delete_store` removes it.
pub const CLOCK_FILE_NAME: &str = ".konserve.clock";

/// The largest file [`FileStore::read_value`] reads in one `pread` into its
/// reused per-thread buffer; larger values take the general path.
const SMALL_READ: usize = 16 * 1024;

/// A put whose key file is at most this long is a record of the
/// write-ahead log (docs/WAL.md §2), when the store has one.
pub const WAL_MAX_RECORD: usize = 16 * 1024;

/// What [`FileStore::replace_queued`] allows an encoded key file beyond its
/// key, metadata and value.
const QUEUED_SLACK: usize = 1024;

/// A write that leaves more than this many bytes of frames in the log calls
/// for a checkpoint (docs/WAL.md §5's 16 MiB): run by the log's background
/// thread while the write returns, or by the write itself where there is no
/// such thread or the log holds four times this ([`Wal::checkpoint_if_full`]).
pub const WAL_CHECKPOINT_BYTES: u64 = crate::wal::CHECKPOINT_AT;

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where [`FileStore::read_value_into`] left a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueInto {
    /// The key does not exist.
    Missing,
    /// The file does not fit in the buffer whole, or is a chunked blob: read it with `get`.
    TooLarge,
    /// The value is at `buf[start..start + len]` (empty for an append log).
    Found {
        /// The serializer id the value was written with (0: raw bytes).
        serializer: u8,
        /// The key is an append log (FORMAT.md §4.6): read its records with a log cursor.
        log: bool,
        /// Where the value starts in the buffer.
        start: usize,
        /// The value's length.
        len: usize,
    },
}

/// A value as [`FileStore::read_value`] lends it: valid during the call only.
#[derive(Debug, Clone, Copy)]
pub struct ValueRef<'a> {
    /// The serializer id the value was written with (0: raw bytes).
    pub serializer: u8,
    /// The key is an append log (FORMAT.md §4.6): `bytes` is empty; read its records with a log cursor.
    pub log: bool,
    /// The value, decoded (decrypted, decompressed).
    pub bytes: &'a [u8],
}

/// A key's record as stored: serializer id, metadata bytes, value bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Serializer id of the value (FORMAT.md §4.1; 0 = raw bytes).
    pub serializer: u8,
    /// The metadata (a MessagePack map).
    pub meta: Vec<u8>,
    /// The value's bytes, as the serializer wrote them. Empty for an append
    /// log, whose records are read with [`FileStore::open_log`].
    pub value: Vec<u8>,
    /// For an append log (FORMAT.md §4.6): where it stands. `None` otherwise.
    pub log: Option<LogInfo>,
}

/// What [`FileStore::list`] found: the readable keys, and the key files that
/// could not be read (reported, never changed).
#[derive(Debug, Default)]
pub struct ListResult {
    /// One entry per readable key file.
    pub entries: Vec<MetaEntry>,
    /// One error per unreadable key file, each naming its file.
    pub corrupt: Vec<Error>,
}

/// One key to write.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    /// The key's CKE.
    pub key: &'a [u8],
    /// Serializer id of the value (0 = raw bytes).
    pub serializer: u8,
    /// The metadata bytes.
    pub meta: &'a [u8],
    /// The value bytes.
    pub value: &'a [u8],
}

/// A replacing write for [`FileStore::replace`].
#[derive(Clone, Copy, Debug)]
pub struct Replace<'a> {
    /// The key's CKE.
    pub key: &'a [u8],
    /// Serializer id of the value (0 = raw bytes).
    pub serializer: u8,
    /// The metadata bytes, with [`REVISION_SLOT`](crate::format::meta::REVISION_SLOT) where the new revision goes.
    pub meta: &'a [u8],
    /// Where in `meta` the slot is.
    pub revision_at: usize,
    /// The value bytes.
    pub value: &'a [u8],
    /// Write only if the key is at this revision (0: missing).
    pub expected_revision: Option<u64>,
    /// Take the key's lock (one attempt) and release it here; else the caller holds it.
    pub lock: bool,
}

/// What [`FileStore::replace`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replaced {
    /// Written: the key is now at `revision`.
    Written {
        /// The key's new revision.
        revision: u64,
    },
    /// Not written: the key is at `actual`, not the expected revision.
    Mismatch {
        /// The revision the key is at.
        actual: u64,
    },
    /// Not written: another holder has the key's lock (only with `lock`).
    Busy,
    /// Not written: the key's current revision is for the caller's general path to read.
    Unsure,
}

/// A blob write with its revision read fused in, for [`FileStore::blob_replace`].
#[derive(Clone, Copy, Debug)]
pub struct BlobReplace<'a> {
    /// The key's CKE.
    pub key: &'a [u8],
    /// The metadata bytes, with [`REVISION_SLOT`](crate::format::meta::REVISION_SLOT) where the new revision goes.
    pub meta: &'a [u8],
    /// Where in `meta` the slot is.
    pub revision_at: usize,
    /// Open only if the key is at this revision (0: missing).
    pub expected_revision: Option<u64>,
    /// Take the key's lock (one attempt) and hand it to the writer, which
    /// releases it when it commits, aborts or is dropped; else the caller holds it.
    pub lock: bool,
}

/// What [`FileStore::blob_replace`] did: [`Replaced`], with the writer when it opened one.
#[derive(Debug)]
// Made once per blob and moved once, into the binding's writer: not worth a box.
#[allow(clippy::large_enum_variant)]
pub enum BlobReplaced {
    /// Opened: the committed blob puts the key at `revision`.
    Opened {
        /// The writer (holding the key's lock when it was taken here).
        writer: BlobWriter,
        /// The key's revision once the blob is committed.
        revision: u64,
    },
    /// Nothing opened: the write would replace something else ([`Replaced`] but `Written`).
    Not(Replaced),
}

/// A key's cross-process lock held by a [`BlobWriter`] that
/// [`FileStore::blob_replace`] opened: released (in whatever thread runs
/// the commit) once the blob is committed or given up.
pub(crate) struct KeyLock {
    store: Arc<FileStore>,
    key: Vec<u8>,
}

impl KeyLock {
    /// Releases the lock; a lock file that cannot be removed is reported.
    pub(crate) fn release(self) -> Result<()> {
        self.store.unlock(&[&self.key])
    }
}

/// A staging file written for a put, the key file it replaces, and its
/// registration against the sweep.
type StagedPut = (PathBuf, PathBuf, InFlight);

/// A batch of at least this many files is staged by several threads.
const PARALLEL_SYNC_MIN: usize = 4;
/// At most this many threads stage one batch.
const PARALLEL_SYNC_THREADS: usize = 8;

/// A store directory, open: its key files (shared with blob writers and
/// readers, and log cursors) and the cross-process locks it holds.
pub struct FileStore {
    files: Arc<StoreDir>,
    /// The tokens of the cross-process locks this store holds, by key hash,
    /// and when each lock file was created.
    held: std::sync::Mutex<std::collections::HashMap<u128, (String, std::time::Instant)>>,
    /// The write-ahead log, when the store has its marker (docs/WAL.md §8).
    wal: Option<Arc<Wal>>,
    /// The marker is version 3 (docs/WAL.md §4.1): a replacing write takes
    /// only the key's in-process lock and decides under the log lock; a
    /// locked writer passes through the log lock once it holds its lock files.
    lockfree: bool,
    /// When the sweep on open wants another (see [`FileStore::staging_sweep_due`]).
    sweep_due: Option<Duration>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.files.dir).field("options", &self.files.options).finish()
    }
}

/// A dropped store ends its log's background work here, on the dropping
/// thread, so the log's lock file is released when the drop returns: the
/// background or committer thread may hold the log for a moment, and the
/// log's own drop would then run on it, a little later.
impl Drop for FileStore {
    fn drop(&mut self) {
        self.stop_background();
    }
}

impl FileStore {
    /// Opens the store in `dir` on the real file system, creating the
    /// directory if needed, and sweeps staging files left by dead writers.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<FileStore> {
        FileStore::open_with(Arc::new(RealFs), dir.as_ref(), options)
    }

    /// [`FileStore::open`] on any [`Vfs`] (tests use a simulated one).
    pub fn open_with(vfs: Arc<dyn Vfs>, dir: &Path, options: Options) -> Result<FileStore> {
        options.check()?;
        if !options.read_only {
            create_dir_durably(&*vfs, dir, options.sync_blob)?;
        }
        let dir = vfs.canonicalize(dir).map_err(|e| Error::io(e, "cannot resolve the store directory", dir))?;
        let id = staging::store_id(&dir);
        let held = std::sync::Mutex::new(std::collections::HashMap::new());
        let read_only = options.read_only;
        let mut store =
            FileStore { files: Arc::new(StoreDir::new(dir, vfs, id, options)), held, wal: None, lockfree: false, sweep_due: None };
        if !read_only {
            store.sweep_due = store.sweep_staging(false)?;
        }
        let marker = crate::keycheck::check_on_open(&store.files)?;
        (store.wal, store.lockfree) = store.open_wal(marker)?;
        Ok(store)
    }

    /// The write-ahead log on open (docs/WAL.md §8): opened when the store
    /// has the marker; created, then the marker written, on a writable open
    /// with `wal: Some(true)` (the upgrade); checkpointed whole, the marker
    /// removed, then the log removed, with `wal: Some(false)` (the downgrade).
    /// `marker` is the marker's version (2 or 3); the upgrade writes 3. The
    /// second half: whether the store is lock-free (version 3, docs/WAL.md §4.1).
    fn open_wal(&self, marker: Option<u8>) -> Result<(Option<Arc<Wal>>, bool)> {
        let options = &self.files.options;
        let writable = !options.read_only;
        match (marker, options.wal) {
            (None, Some(true)) if writable => {
                // A log without the marker is not this store's (a crash
                // during an upgrade or a downgrade, an old build's
                // deleteStore): a new one replaces it.
                self.remove_wal_file()?;
                let wal = self.new_wal()?;
                crate::keycheck::write_wal_marker(&self.files)?;
                Ok((Some(wal), true))
            }
            (None, _) => Ok((None, false)),
            (Some(_), Some(false)) if writable => {
                let wal = self.new_wal()?;
                checkpoint_all(&wal, options.lock_timeout)?;
                crate::keycheck::remove_wal_marker(&self.files)?;
                drop(wal);
                self.remove_wal_file()?;
                Ok((None, false))
            }
            (Some(version), _) => Ok((Some(self.new_wal()?), version >= crate::format::keycheck::WAL_LOCKFREE_VERSION)),
        }
    }

    /// Whether replacing writes take no key lock file (a version-3 marker, docs/WAL.md §4.1).
    pub fn is_lock_free(&self) -> bool {
        self.lockfree && self.wal.is_some()
    }

    fn new_wal(&self) -> Result<Arc<Wal>> {
        let mut options = WalOptions { store: self.files.options.clone(), ..WalOptions::default() };
        if let Some(step) = self.files.options.wal_grow_step {
            options.grow_step = step;
            options.grow_margin = options.grow_margin.min(step / 2);
        }
        if let Some(hold) = self.files.options.wal_idle_hold {
            options.idle_hold = hold;
        }
        if let Some(after) = self.files.options.wal_idle_checkpoint {
            options.idle_checkpoint = Some(after);
        }
        Wal::open_shared(Arc::clone(&self.files.vfs), &self.files.dir, options)
    }

    /// Removes `.konserve.wal` if there is one, durably.
    fn remove_wal_file(&self) -> Result<()> {
        let path = self.files.dir.join(WAL_FILE_NAME);
        match self.files.vfs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(e, "cannot remove the write-ahead log", &path)),
        }
        if self.files.options.sync_blob {
            self.files.sync_dir()?;
        }
        Ok(())
    }

    /// The store's write-ahead log, when it has one (docs/WAL.md).
    pub fn wal(&self) -> Option<&Arc<Wal>> {
        self.wal.as_ref()
    }

    /// Ends the log's background work ([`Wal::stop_background`]: the idle
    /// hold of its lock file released, no idle checkpoint); a store's close.
    /// The store stays usable. Nothing without a log.
    pub fn stop_background(&self) {
        if let Some(wal) = self.wal.as_ref() {
            wal.stop_background();
        }
    }

    /// Moves every record of the write-ahead log into its key file and resets
    /// the log (docs/WAL.md §5), waiting up to the lock timeout for a
    /// checkpoint another process runs. Nothing without a log.
    pub fn checkpoint(&self) -> Result<()> {
        match &self.wal {
            Some(wal) => {
                self.check_writable()?;
                checkpoint_all(wal, self.files.options.lock_timeout)
            }
            None => Ok(()),
        }
    }

    /// What the log says of `key` for a read: `Some(Some(payload))`, its
    /// newest value (a whole key file); `Some(None)`, deleted; `None`, read
    /// its key file (no log, no record, or a file record).
    fn logged(&self, key: &[u8]) -> Result<Option<Option<Vec<u8>>>> {
        let Some(wal) = self.wal.as_ref() else { return Ok(None) };
        key::validate(key)?;
        Ok(match wal.get(&record_hash(key))? {
            WalLookup::Put(payload) => Some(Some(payload)),
            WalLookup::Deleted => Some(None),
            WalLookup::File | WalLookup::Absent => None,
        })
    }

    /// Before a write that goes to `key`'s file (docs/WAL.md §4 step 5):
    /// the key's logged value moved into its file first ([`Wal::flush_key`]).
    fn flush_logged(&self, key: &[u8]) -> Result<()> {
        if let Some(wal) = self.wal.as_ref() {
            key::validate(key)?;
            wal.flush_key(&record_hash(key))?;
        }
        Ok(())
    }

    /// Whether the store takes writes: a failed fsync of a key file, the
    /// directory or the log poisons both (`ERR_STORE_POISONED`).
    fn check_writable(&self) -> Result<()> {
        self.files.check_writable()?;
        match self.wal.as_ref() {
            Some(wal) => wal.check_writable(),
            None => Ok(()),
        }
    }

    /// The path errors about a logged value name.
    fn wal_path(&self) -> PathBuf {
        self.files.dir.join(WAL_FILE_NAME)
    }

    /// The header and meta segment of a put record's payload, checked as `key`'s file.
    fn payload_head(&self, key: &[u8], payload: &[u8]) -> Result<(file::Header, file::MetaSegment)> {
        let path = self.wal_path();
        let ctx = self.files.context(keyhash::key_hash(key));
        let (header, meta) = file::parse_head(payload, payload.len() as u64, &ctx).map_err(|e| e.with_file(&path))?;
        if header.flags != 0 {
            return Err(Error::corrupt("a put record of the write-ahead log holds a blob or a log").with_file(&path));
        }
        keyfile::check_key(&meta.key, key, &path)?;
        Ok((header, meta))
    }

    /// A logged value as [`get`](Self::get) returns it.
    fn logged_entry(&self, key: &[u8], payload: Vec<u8>) -> Result<Entry> {
        let (header, meta) = self.payload_head(key, &payload)?;
        let at = HEADER_LEN + header.meta_len as usize;
        let end = usize::try_from(header.value_len).ok().and_then(|n| n.checked_add(at)).filter(|&e| e <= payload.len());
        let Some(end) = end else { return Err(Error::corrupt("a put record ends inside its value").with_file(self.wal_path())) };
        let ctx = self.files.context(keyhash::key_hash(key));
        let value = file::decode_value_owned(&header, &ctx, payload[at..end].to_vec()).map_err(|e| e.with_file(self.wal_path()))?;
        Ok(Entry { serializer: header.serializer, meta: meta.meta, value, log: None })
    }

    /// A logged value's metadata as [`get_meta`](Self::get_meta) returns it.
    fn logged_meta(&self, key: &[u8], payload: &[u8]) -> Result<MetaEntry> {
        let (header, meta) = self.payload_head(key, payload)?;
        Ok(MetaEntry {
            key: meta.key,
            serializer: header.serializer,
            meta: meta.meta,
            file: self.wal_path().display().to_string(),
            log: None,
        })
    }

    /// The store directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.files.dir
    }

    /// The store's options.
    pub fn options(&self) -> &Options {
        &self.files.options
    }

    /// The path of the file that holds `key` (given as its CKE), whether or not it exists.
    pub fn file_path(&self, key: &[u8]) -> PathBuf {
        self.files.file_path(key)
    }

    /// Starts writing a blob to `key` (its CKE) with metadata `meta`: creates
    /// the staging file and writes its head (placeholder header, meta segment).
    /// The blob is written with the store's compressor and encryption,
    /// serializer 0 and `FLAG_CHUNKED` (FORMAT.md §4.5).
    pub fn blob_writer(self: &Arc<Self>, key: &[u8], meta: &[u8]) -> Result<BlobWriter> {
        self.flush_logged(key)?;
        blob::writer(&self.files, key, meta)
    }

    /// Opens the blob of `key` (its CKE) for range reads, or `None` if the key
    /// does not exist. Checks the header, the meta segment, the key, and (for
    /// a chunked blob) the trailer and the chunk table. A key that holds a
    /// value other than a blob (a serializer other than 0, or a log) is
    /// `ERR_NOT_BINARY`. A blob written before chunking (flags 0, serializer 0)
    /// is read whole into memory here.
    pub fn open_blob(self: &Arc<Self>, key: &[u8]) -> Result<Option<BlobReader>> {
        match self.logged(key)? {
            None => {}
            Some(None) => return Ok(None),
            Some(Some(payload)) => {
                let (header, _) = self.payload_head(key, &payload)?;
                if header.serializer != 0 {
                    let what = format!("a value of serializer {}", header.serializer);
                    return Err(Error::new(ErrorCode::NotBinary, format!("the key holds {what}, not a blob")).with_file(self.wal_path()));
                }
                if self.files.options.read_only {
                    return Err(Error::new(
                        ErrorCode::ReadOnly,
                        "the key's bytes are in the write-ahead log, not yet in its file: a read-only store cannot open them as a blob",
                    )
                    .with_file(self.wal_path()));
                }
                // Raw bytes small enough to be logged: moved into the key file, then read as a blob.
                self.flush_logged(key)?;
            }
        }
        blob::open(&self.files, key)
    }

    /// Appends `records` (one or more, in order) to the log of `key` (its
    /// CKE) as one group commit, and returns where the log stands after the
    /// last of them. The caller holds the key's lock.
    ///
    /// Every record is encoded first ([`encode_records`](crate::format::log::encode_records)): no records, a
    /// payload too large, or indexes running out fail with
    /// `ERR_INVALID_ARGUMENT` before anything is written.
    ///
    /// - No file: a new log is written whole (staging file, fsync, rename,
    ///   directory fsync) with the store's codec, the meta segment from
    ///   `create_meta`, and the records as records 0, 1, ...
    /// - A log (FORMAT.md §4.6): its acknowledged records are checked (all
    ///   of them, the first time this process appends to it; then the first
    ///   and the last): damage is `ERR_CORRUPT`, and nothing is written. If
    ///   slot B is damaged (a crash while it was written), it is first set to
    ///   the commit of slot A and fsynced. Then the bytes past the
    ///   acknowledged records (the torn tail of an append that never
    ///   returned) are cut, the records written after them with ONE `pwrite`
    ///   in the file's codec, slot A set to the new commit, one fsync; then
    ///   slot B, one fsync; only then does the append return. (With
    ///   `sync_blob` off, the same writes without the fsyncs.) A failed
    ///   fsync poisons the store. `create_meta` is not used.
    /// - A log of the earlier layout (no commit area) is rewritten whole in
    ///   the current layout with the new records after its own (a torn tail
    ///   dropped by the old rule; damage in its middle is `ERR_CORRUPT`).
    /// - Any other key file: `ERR_NOT_A_LOG`, the file unchanged.
    ///
    /// A crash before this returns keeps every append acknowledged before,
    /// and of this one all its records or none: the commit decides, and the
    /// records it names were fsynced before it was written.
    pub fn log_append(&self, key: &[u8], records: &[NewRecord<'_>], create_meta: &[u8]) -> Result<LogInfo> {
        self.files.check_writable()?;
        self.flush_logged(key)?;
        log::append(&self.files, key, records, create_meta)
    }

    /// Opens the log of `key` (its CKE) for reading: `None` if the key does
    /// not exist, `ERR_NOT_A_LOG` if it holds something else. Needs no lock:
    /// the cursor reads the records acknowledged when it was opened (an
    /// append or a trim meanwhile is not seen).
    pub fn open_log(&self, key: &[u8]) -> Result<Option<LogCursor>> {
        match self.logged(key)? {
            None => {}
            Some(None) => return Ok(None),
            Some(Some(_)) => {
                return Err(Error::new(ErrorCode::NotALog, "the key holds a value, not an append log").with_file(self.wal_path()));
            }
        }
        log::open(&self.files, key)
    }

    /// Rewrites the log of `key` (its CKE) with the meta segment from `meta`
    /// and only its records of index `keep_from` or more, which keep their
    /// indexes; atomically, like any write (staging file, fsync, rename,
    /// directory fsync), in the current layout (FORMAT.md §4.6). The records
    /// are copied as stored, in bounded memory, so the log keeps the codec it
    /// was written with. The bytes past the acknowledged records (a torn
    /// tail) are dropped; damage to the acknowledged records is
    /// `ERR_CORRUPT`, the file unchanged. Returns where the log stands after
    /// the trim: with no record kept, the next append gets index 0. A missing
    /// key is not an error: nothing is written and [`LogInfo::EMPTY`]
    /// returned. The caller holds the key's lock.
    pub fn log_trim(&self, key: &[u8], keep_from: u64, meta: &[u8]) -> Result<LogInfo> {
        self.files.check_writable()?;
        self.flush_logged(key)?;
        log::trim(&self.files, key, keep_from, meta)
    }

    /// Forgets which of this store's logs this process has verified whole:
    /// the next append to each walks and checks all its acknowledged records
    /// again, as it does the first time (or after another process appended).
    /// For tools that changed a log behind the store's back, and for tests.
    pub fn forget_verified_logs(&self) {
        log::forget_verified(self.files.id);
    }

    /// Removes staging files that no live write owns: those of dead processes
    /// of this namespace, those of this process that no write of this store has
    /// in flight (a previous process that had our pid), and those written in
    /// another namespace or on another host once they are a lease old
    /// unchanged (FORMAT.md §5). Nothing else is touched. Returns how long
    /// until the youngest kept one of those is a lease old: the time for
    /// [`FileStore::sweep_staging_again`], which (`again`) looks at those alone.
    fn sweep_staging(&self, again: bool) -> Result<Option<Duration>> {
        let names =
            self.files.vfs.read_dir(&self.files.dir).map_err(|e| Error::io(e, "cannot list the store directory", &self.files.dir))?;
        let me = std::process::id();
        let mut removed = false;
        let mut due: Option<Duration> = None;
        for name in &names {
            let Some(name) = name.to_str() else { continue };
            let Some((pid, seq)) = staging::parse_staging_name(name) else { continue };
            if again && !staging::written_elsewhere(seq) {
                continue;
            }
            let path = self.files.dir.join(name);
            let mut remove = || {
                // A failure here only leaves garbage behind; it never loses data.
                if self.files.vfs.remove_file(&path).is_ok() {
                    removed = true;
                }
            };
            let alive = |pid| self.files.vfs.process_alive(pid);
            let age = || self.files.vfs.stat(&path).ok().map(|st| st.age);
            match staging::fate(pid, seq, alive, age, self.files.options.lock_lease) {
                // Our pid, whatever the tag says: never a file a write of ours has in flight.
                staging::Fate::Remove | staging::Fate::RemoveUnlessInFlight if pid == me => {
                    staging::remove_unless_in_flight(self.files.id, name, remove)
                }
                staging::Fate::Remove => remove(),
                staging::Fate::RemoveUnlessInFlight | staging::Fate::Keep => {}
                staging::Fate::KeepFor(left) => due = Some(due.map_or(left, |d| d.min(left))),
            }
        }
        if again {
            // Leftovers only: their removal need not be durable (the next
            // sweep takes any that come back), and a failed fsync here must
            // not poison the store behind its user's back.
            return Ok(due);
        }
        // Lock temp files and takeover markers nobody can use any more.
        if self.files.locker().sweep(&names) {
            removed = true;
        }
        if removed && self.files.options.sync_blob {
            self.files.sync_dir()?;
        }
        Ok(due)
    }

    /// The sweep once more, for the staging files from elsewhere that the
    /// last one kept because they were young (see [`FileStore::sweep_staging`]):
    /// `None` when none is left, else when to call it again.
    pub fn sweep_staging_again(&self) -> Result<Option<Duration>> {
        if self.files.options.read_only {
            return Ok(None);
        }
        self.sweep_staging(true)
    }

    /// When the sweep on open wants [`FileStore::sweep_staging_again`] called
    /// (it kept young staging files written in another namespace), if it does.
    pub fn staging_sweep_due(&self) -> Option<Duration> {
        self.sweep_due
    }
    /// The record of `key` (its CKE), or `None` if the key does not exist.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        if let Some(logged) = self.logged(key)? {
            return logged.map(|p| self.logged_entry(key, p)).transpose();
        }
        let ctx = self.files.context(keyhash::key_hash(key));
        let Some((file, size, path, header, meta, prefix)) = self.files.open_head(key, &ctx)? else { return Ok(None) };
        keyfile::check_key(&meta.key, key, &path)?;
        if header.is_log() {
            // An append log (FORMAT.md §4.6): no value; its records are read with a log cursor.
            let info = log::log_info(&*file, size, &path, &header, &prefix, &ctx)?;
            return Ok(Some(Entry { serializer: header.serializer, meta: meta.meta, value: Vec::new(), log: Some(info) }));
        }
        if header.flags == file::FLAG_CHUNKED {
            // A chunked blob (FORMAT.md §4.5): the whole blob, every chunk checked.
            let value = blob::read_chunked_value(&*file, &prefix, &path, &header, &ctx)?;
            return Ok(Some(Entry { serializer: header.serializer, meta: meta.meta, value, log: None }));
        }
        let offset = HEADER_LEN + header.meta_len as usize;
        let len = usize::try_from(header.value_len)
            .map_err(|_| Error::new(ErrorCode::InvalidArgument, "the value is too large for this platform").with_file(&path))?;
        // The first read usually held the whole file already.
        if let Some(stored) = prefix.get(offset..offset + len) {
            let value = file::decode_value_owned(&header, &ctx, stored.to_vec()).map_err(|e| e.with_file(&path))?;
            return Ok(Some(Entry { serializer: header.serializer, meta: meta.meta, value, log: None }));
        }
        let offset = offset as u64;
        let mut stored = Vec::new();
        stored
            .try_reserve_exact(len)
            .map_err(|_| Error::new(ErrorCode::InvalidArgument, format!("cannot allocate {len} bytes for the value")).with_file(&path))?;
        stored.resize(len, 0);
        file.read_exact_at(&mut stored, offset).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::corrupt("the key file ends early").with_file(&path),
            _ => Error::io(e, "cannot read the key file", &path),
        })?;
        let value = file::decode_value_owned(&header, &ctx, stored).map_err(|e| e.with_file(&path))?;
        Ok(Some(Entry { serializer: header.serializer, meta: meta.meta, value, log: None }))
    }

    /// The hot read, into the caller's memory: `key`'s whole file is read into
    /// `buf` with one `pread` and decoded there, so a small plain value costs
    /// open, read, close and no copy at all. Every check of [`get`](Self::get)
    /// applies: header, checksums, the stored key. A file that does not fit in
    /// `buf` whole (or a chunked blob) is [`ValueInto::TooLarge`]: read it with `get`.
    ///
    /// With the value cache (Linux, see [`Options::value_cache_bytes`]) a
    /// small value read before is answered from memory, unless the kernel
    /// reported a change to its file since: then no file is opened at all.
    pub fn read_value_into(&self, key: &[u8], buf: &mut [u8]) -> Result<ValueInto> {
        // The log first, then the cache: a logged write changes no key file,
        // so the cache never learns of it (it keeps only values read from files).
        if let Some(logged) = self.logged(key)? {
            return self.logged_into(key, logged, buf);
        }
        let (hash, ticket) = match self.cache_lookup(key, buf) {
            Ok(found) => return Ok(found),
            Err(miss) => miss,
        };
        // The file's type is checked only if its read or decode fails (one
        // stat fewer per get): a regular file's bytes are what the checks judge.
        let Some((file, path)) = self.files.open_key_file_as(key, true)? else { return Ok(ValueInto::Missing) };
        let found = file
            .read_upto_at(buf, 0)
            .map_err(|e| keyfile::head_read_error(e, &path))
            .and_then(|got| self.decode_read(key, &path, buf, got))
            .map_err(|e| keyfile::unless_irregular(&*file, &path, e))?;
        drop(file);
        self.cache_insert(hash, ticket, key, buf, found);
        Ok(found)
    }

    /// [`read_value_into`](Self::read_value_into) of a value the log holds.
    fn logged_into(&self, key: &[u8], logged: Option<Vec<u8>>, buf: &mut [u8]) -> Result<ValueInto> {
        let Some(payload) = logged else { return Ok(ValueInto::Missing) };
        if payload.len() >= buf.len() {
            return Ok(ValueInto::TooLarge);
        }
        buf[..payload.len()].copy_from_slice(&payload);
        self.decode_read(key, &self.wal_path(), buf, payload.len())
    }

    /// The value cache's answer (`Ok`), or the key's hash and the ticket of a miss.
    fn cache_lookup(&self, key: &[u8], buf: &mut [u8]) -> std::result::Result<ValueInto, (u128, Option<Ticket>)> {
        let Some(cache) = self.files.cache.as_ref() else { return Err((0, None)) };
        let hash = keyhash::key_hash(key);
        match cache.lookup(hash, key, buf) {
            Lookup::Hit { serializer, len } => Ok(ValueInto::Found { serializer, log: false, start: 0, len }),
            Lookup::Miss(ticket) => Err((hash, Some(ticket))),
            Lookup::Off => Err((hash, None)),
        }
    }

    /// Keeps a plain value just read (not a log: logs change in place).
    fn cache_insert(&self, hash: u128, ticket: Option<Ticket>, key: &[u8], buf: &[u8], found: ValueInto) {
        if let (Some(cache), Some(ticket), ValueInto::Found { serializer, log: false, start, len }) =
            (self.files.cache.as_ref(), ticket, found)
        {
            cache.insert(ticket, hash, key, serializer, &buf[start..start + len]);
        }
    }

    /// What the value cache did so far (all zero and `enabled: false` without one).
    pub fn value_cache_stats(&self) -> ValueCacheStats {
        self.files.cache.as_ref().map(|c| c.stats()).unwrap_or_default()
    }

    /// [`read_value_into`](Self::read_value_into), done only if it cannot wait
    /// for the disk: the path lookup and the read from cached pages alone
    /// ([`Vfs::open_read_cached`], [`VfsFile::read_cached_at`](crate::vfs::VfsFile::read_cached_at)). `None` when it
    /// would wait: the caller then reads on a worker thread. So an async `get`
    /// of a cached key is answered at once, without a thread hop, and still
    /// never blocks its event loop on the disk.
    pub fn read_value_into_now(&self, key: &[u8], buf: &mut [u8]) -> Result<Option<ValueInto>> {
        // The log's end hint is one `pread` of a page every reader keeps hot.
        if let Some(logged) = self.logged(key)? {
            return self.logged_into(key, logged, buf).map(Some);
        }
        let (hash, ticket) = match self.cache_lookup(key, buf) {
            Ok(found) => return Ok(Some(found)),
            Err(miss) => miss,
        };
        key::validate(key)?;
        let path = self.files.file_path(key);
        let file = match self.files.vfs.open_read_cached(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(ValueInto::Missing)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(Error::io(e, "cannot open the key file", &path)),
        };
        // Opened with its type unchecked, as the blocking read does.
        let got = match file.read_cached_at(buf, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(keyfile::unless_irregular(&*file, &path, keyfile::head_read_error(e, &path))),
        };
        // A cached read may stop short of the end. One that ends where the
        // header says the file ends holds it whole, as `open_head_now` takes
        // it and as the blocking read decodes it (no stat per get); otherwise
        // only the file's size tells.
        if got < buf.len()
            && file::Header::declared_len(&buf[..got]) != Some(got as u64)
            && file.size().map_err(|e| Error::io(e, "cannot stat the key file", &path))? != got as u64
        {
            return Ok(None);
        }
        let found = self.decode_read(key, &path, buf, got).map_err(|e| keyfile::unless_irregular(&*file, &path, e))?;
        drop(file);
        self.cache_insert(hash, ticket, key, buf, found);
        Ok(Some(found))
    }

    /// Decodes a key file that a read put in `buf[..got]` (see [`read_value_into`](Self::read_value_into)).
    fn decode_read(&self, key: &[u8], path: &Path, buf: &mut [u8], got: usize) -> Result<ValueInto> {
        // Only a file that the read held whole (a short read), as its header says.
        if got == buf.len() || file::Header::declared_len(&buf[..got]) != Some(got as u64) {
            return Ok(ValueInto::TooLarge);
        }
        let whole = &buf[..got];
        let ctx = self.files.context(keyhash::key_hash(key));
        let header = file::Header::decode(whole, got as u64).map_err(|e| e.with_file(path))?;
        if header.flags == file::FLAG_CHUNKED {
            return Ok(ValueInto::TooLarge);
        }
        let value_at = HEADER_LEN + header.meta_len as usize;
        let meta = file::decode_meta_plain(&header, &ctx, &whole[HEADER_LEN..value_at]).map_err(|e| e.with_file(path))?;
        let (stored_key, _) = file::split_meta(&meta).map_err(|e| e.with_file(path))?;
        keyfile::check_key(stored_key, key, path)?;
        let serializer = header.serializer;
        if header.is_log() {
            return Ok(ValueInto::Found { serializer, log: true, start: 0, len: 0 });
        }
        let plain = match file::decode_value_plain(&header, &ctx, &whole[value_at..]).map_err(|e| e.with_file(path))? {
            Cow::Borrowed(v) => return Ok(ValueInto::Found { serializer, log: false, start: value_at, len: v.len() }),
            Cow::Owned(plain) => plain,
        };
        // Decoded (decompressed, decrypted) into its own buffer: copied over the file's bytes.
        if plain.len() > buf.len() {
            return Ok(ValueInto::TooLarge);
        }
        buf[..plain.len()].copy_from_slice(&plain);
        Ok(ValueInto::Found { serializer, log: false, start: 0, len: plain.len() })
    }

    /// The hot read, lent: `key`'s value handed to `f` as a borrowed
    /// [`ValueRef`], or `None` if the key does not exist. A small file is read
    /// into this thread's reused buffer ([`read_value_into`](Self::read_value_into)),
    /// so the caller copies its value once, straight into its own memory; a
    /// large one goes through [`get`](Self::get).
    pub fn read_value<R>(&self, key: &[u8], f: impl FnOnce(ValueRef<'_>) -> R) -> Result<Option<R>> {
        let mut f = Some(f);
        let mut call = |v: ValueRef<'_>| f.take().map(|f| f(v));
        let small = READ_BUF.with(|cell| -> Result<Option<Option<R>>> {
            // A re-entrant call (none exists today) would find the buffer taken.
            let Ok(mut buf) = cell.try_borrow_mut() else { return Ok(None) };
            if buf.is_empty() {
                buf.resize(SMALL_READ, 0);
            }
            Ok(match self.read_value_into(key, &mut buf)? {
                ValueInto::Missing => Some(None),
                ValueInto::TooLarge => None,
                ValueInto::Found { serializer, log, start, len } => {
                    Some(call(ValueRef { serializer, log, bytes: &buf[start..start + len] }))
                }
            })
        })?;
        if let Some(done) = small {
            return Ok(done);
        }
        Ok(self.get(key)?.and_then(|e| call(ValueRef { serializer: e.serializer, log: e.log.is_some(), bytes: &e.value })))
    }

    /// The metadata of `key`, read without the value, or `None`.
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<MetaEntry>> {
        if let Some(logged) = self.logged(key)? {
            return logged.map(|p| self.logged_meta(key, &p)).transpose();
        }
        let ctx = self.files.context(keyhash::key_hash(key));
        let Some((file, size, path, header, meta, prefix)) = self.files.open_head(key, &ctx)? else { return Ok(None) };
        keyfile::check_key(&meta.key, key, &path)?;
        let log = if header.is_log() { Some(log::log_info(&*file, size, &path, &header, &prefix, &ctx)?) } else { None };
        Ok(Some(MetaEntry { key: meta.key, serializer: header.serializer, meta: meta.meta, file: path.display().to_string(), log }))
    }

    /// [`get_meta`](Self::get_meta) done only if it cannot wait for the disk
    /// (see [`read_value_into_now`](Self::read_value_into_now)): `None` when it
    /// would wait, and for append logs (whose info needs their tail); then the
    /// caller reads on a worker thread. So the revision read of an async write
    /// costs no thread hop when the key's file is cached (or missing).
    pub fn get_meta_now(&self, key: &[u8]) -> Result<Option<Option<MetaEntry>>> {
        if let Some(logged) = self.logged(key)? {
            return logged.map(|p| self.logged_meta(key, &p)).transpose().map(Some);
        }
        let ctx = self.files.context(keyhash::key_hash(key));
        let Some(found) = self.files.open_head_now(key, &ctx)? else { return Ok(None) };
        let Some((_file, _size, path, header, meta, _prefix)) = found else { return Ok(Some(None)) };
        keyfile::check_key(&meta.key, key, &path)?;
        if header.is_log() {
            return Ok(None);
        }
        Ok(Some(Some(MetaEntry {
            key: meta.key,
            serializer: header.serializer,
            meta: meta.meta,
            file: path.display().to_string(),
            log: None,
        })))
    }

    /// [`get`](Self::get) done only if it cannot wait for the disk (see
    /// [`read_value_into_now`](Self::read_value_into_now)): `None` when it
    /// would wait, and for append logs, chunked blobs and values the first
    /// read of the file did not hold whole; then the caller reads on a
    /// worker thread. So the read of an async update of a logged or cached
    /// key costs no thread hop.
    pub fn get_now(&self, key: &[u8]) -> Result<Option<Option<Entry>>> {
        if let Some(logged) = self.logged(key)? {
            return logged.map(|p| self.logged_entry(key, p)).transpose().map(Some);
        }
        let ctx = self.files.context(keyhash::key_hash(key));
        let Some(found) = self.files.open_head_now(key, &ctx)? else { return Ok(None) };
        let Some((_file, _size, path, header, meta, prefix)) = found else { return Ok(Some(None)) };
        keyfile::check_key(&meta.key, key, &path)?;
        if header.is_log() || header.flags == file::FLAG_CHUNKED {
            return Ok(None);
        }
        let at = HEADER_LEN + header.meta_len as usize;
        let Some(stored) = usize::try_from(header.value_len).ok().and_then(|n| prefix.get(at..at.checked_add(n)?)) else {
            return Ok(None);
        };
        let value = file::decode_value_owned(&header, &ctx, stored.to_vec()).map_err(|e| e.with_file(&path))?;
        Ok(Some(Some(Entry { serializer: header.serializer, meta: meta.meta, value, log: None })))
    }

    /// Whether `key` has a file.
    pub fn exists(&self, key: &[u8]) -> Result<bool> {
        if let Some(logged) = self.logged(key)? {
            return Ok(logged.is_some());
        }
        key::validate(key)?;
        let path = self.files.file_path(key);
        self.files.vfs.exists(&path).map_err(|e| Error::io(e, "cannot look up the key file", &path))
    }

    /// Writes every entry: each to a new staging file, written whole and
    /// fsynced; then each renamed over its key file; then one directory fsync.
    /// Returns only when all of it is durable (with `sync_blob`). Each key is
    /// replaced atomically; a batch is not (a crash may keep some keys' new
    /// values and others' old ones). The caller holds the keys' locks.
    pub fn put(&self, writes: &[Write<'_>]) -> Result<()> {
        self.check_writable()?;
        for w in writes {
            key::validate(w.key)?;
        }
        let large;
        let writes = match self.wal.as_ref() {
            Some(wal) => {
                large = self.put_logged(wal, writes)?;
                if large.is_empty() {
                    return Ok(());
                }
                &large[..]
            }
            None => writes,
        };
        let mut staged: Vec<StagedPut> = Vec::with_capacity(writes.len());
        let result = self.stage_all(writes, &mut staged).and_then(|()| self.commit(&mut staged));
        // Whatever was not renamed is removed: a failed write leaves no trace.
        for (stage, _, _) in &staged {
            let _ = self.files.vfs.remove_file(stage);
        }
        result
    }

    /// The logged half of a [`put`](Self::put) on a store with a log: every
    /// write whose key file is at most [`WAL_MAX_RECORD`] bytes is a put
    /// record, all of them in one frame (durable together); the others are
    /// returned, each key's logged value first moved into its file, to be
    /// written to their key files (docs/WAL.md §4).
    fn put_logged<'w>(&self, wal: &Wal, writes: &[Write<'w>]) -> Result<Vec<Write<'w>>> {
        let mut payloads = Vec::new();
        let mut large = Vec::new();
        for w in writes {
            match self.log_payload(w)? {
                Some(whole) => payloads.push((record_hash(w.key), whole)),
                None => large.push(*w),
            }
        }
        if !payloads.is_empty() {
            let records: Vec<NewWalRecord<'_>> =
                payloads.iter().map(|(h, p)| NewWalRecord { op: WalOp::Put, key_hash: *h, payload: p }).collect();
            append_in_frames(wal, &records)?;
            wal.checkpoint_if_full()?;
        }
        for w in &large {
            wal.flush_key(&record_hash(w.key))?;
        }
        Ok(large)
    }

    /// The key file of `w` as a put record's payload, or `None` when it is
    /// longer than [`WAL_MAX_RECORD`] (it goes to its key file).
    fn log_payload(&self, w: &Write<'_>) -> Result<Option<Vec<u8>>> {
        // A value this much larger than a record cannot compress into one: not encoded twice.
        if w.value.len() + w.meta.len() + w.key.len() > 4 * WAL_MAX_RECORD {
            return Ok(None);
        }
        let secret = self.files.options.encryption_key.as_deref();
        let target = self.files.file_path(w.key);
        let file = file::encode_parts(self.files.options.codec(), secret, w.key, w.serializer, w.meta, w.value, &mut OsRandom)
            .map_err(|e| e.with_file(&target))?;
        if file.head.len() + file.value.len() > WAL_MAX_RECORD {
            return Ok(None);
        }
        let mut whole = Vec::with_capacity(file.head.len() + file.value.len());
        whole.extend_from_slice(&file.head);
        whole.extend_from_slice(&file.value);
        Ok(Some(whole))
    }

    /// [`put`](Self::put) for a caller that must not block on the log's
    /// `fdatasync` (a binding with a few threads, docs/WAL.md §1.2): on a
    /// store with a log, when every write is small enough to be a record, the
    /// records are queued for the log's committer thread ([`Wal::submit`])
    /// and this returns at once; `done` is called with the outcome once
    /// their frame is durable, on that thread. Otherwise (no log, a value
    /// too large) the put runs here and `done` is called before this returns.
    /// The caller holds the keys' locks until `done` is called.
    pub fn put_then(self: &Arc<Self>, writes: &[Write<'_>], done: Done<()>) {
        let Some(wal) = self.wal.clone() else { return done(self.put(writes)) };
        let prepared = (|| -> Result<Option<Vec<Payload>>> {
            self.check_writable()?;
            let mut payloads = Vec::with_capacity(writes.len());
            for w in writes {
                key::validate(w.key)?;
                match self.log_payload(w)? {
                    Some(p) => payloads.push((record_hash(w.key), p)),
                    None => return Ok(None),
                }
            }
            Ok(Some(payloads))
        })();
        match prepared {
            Err(e) => done(Err(e)),
            Ok(None) => done(self.put(writes)),
            // More than one frame holds: appended frame by frame, here.
            Ok(Some(payloads)) if frame_len(payloads.iter().map(|(_, p)| p.len())) > MAX_FRAME => done(self.put(writes)),
            Ok(Some(payloads)) => submit_puts(&wal, &payloads, done),
        }
    }

    /// [`put_then`](Self::put_then) for a caller on a thread that must not
    /// block (the JavaScript thread), holding the keys' locks: on a store
    /// with a log, when every write surely fits a record and all fit one
    /// frame, their records are encoded here (no file I/O) and queued for
    /// the log's committer; `done` is called there, exactly once, once
    /// their frame is durable (or failed). Returns `false`, nothing done and
    /// `done` dropped uncalled, otherwise (no log, a store that takes no
    /// writes, an invalid key, a value that may not fit, an encoding that
    /// failed): the caller takes the general path, which answers it.
    pub fn put_queued(self: &Arc<Self>, writes: &[Write<'_>], done: Done<()>) -> bool {
        let Some(wal) = self.wal.as_ref() else { return false };
        if self.check_writable().is_err() {
            return false;
        }
        let mut payloads = Vec::with_capacity(writes.len());
        for w in writes {
            if key::validate(w.key).is_err() || w.value.len() + w.meta.len() + w.key.len() + QUEUED_SLACK > WAL_MAX_RECORD {
                return false;
            }
            match self.log_payload(w) {
                Ok(Some(p)) => payloads.push((record_hash(w.key), p)),
                _ => return false,
            }
        }
        if frame_len(payloads.iter().map(|(_, p)| p.len())) > MAX_FRAME {
            return false;
        }
        submit_puts(wal, &payloads, done);
        true
    }

    /// [`replace`](Self::replace) for a caller that must not block on the
    /// log's `fdatasync`, as [`put_then`](Self::put_then): the lock (when
    /// `r.lock`) and the revision read run here, the put record goes to the
    /// log's committer thread, and the key's lock is released there once the
    /// frame is durable, before `done` is called. Anything else (no log, a
    /// value too large, a mismatch, a busy lock) is done here and `done`
    /// called before this returns.
    ///
    /// On a lock-free store, the lock-free replace of [`replace`](Self::replace):
    /// the decision under the log lock runs on the committer thread, which
    /// releases the key's in-process lock once the frame is durable, before
    /// `done` is called.
    pub fn replace_then(self: &Arc<Self>, r: &Replace<'_>, done: Done<Replaced>) {
        let Some(wal) = self.wal.clone() else { return done(self.replace(r)) };
        if r.lock && self.lockfree {
            match self.lockfree_prepare(r) {
                Err(e) => return done(Err(e)),
                Ok(LockFree::Answer(a)) => return done(Ok(a)),
                Ok(LockFree::Locked) => {}
                Ok(LockFree::Ready(w)) => {
                    submit_lockfree(&wal, self.lock_id(r.key), w, done);
                    return;
                }
            }
        }
        if r.lock {
            match self.try_lock(&[r.key]) {
                Ok(true) => {}
                Ok(false) => return done(Ok(Replaced::Busy)),
                Err(e) => return done(Err(e)),
            }
        }
        let (store, key, lock) = (Arc::clone(self), r.key.to_vec(), r.lock);
        let finish = move |result: Result<Replaced>| {
            let released = if lock { store.unlock(&[&key]) } else { Ok(()) };
            done(result.and_then(|v| released.map(|()| v)))
        };
        let prepared = (|| -> Result<std::result::Result<(Vec<u8>, u64), Replaced>> {
            self.check_writable()?;
            let Some(current) = self.current_revision(r.key) else { return Ok(Err(Replaced::Unsure)) };
            if let Some(expected) = r.expected_revision {
                if expected != current {
                    return Ok(Err(Replaced::Mismatch { actual: current }));
                }
            }
            let Some(meta) = crate::format::meta::splice_revision(r.meta, r.revision_at, current + 1) else {
                return Ok(Err(Replaced::Unsure));
            };
            let w = Write { key: r.key, serializer: r.serializer, meta: &meta, value: r.value };
            match self.log_payload(&w)? {
                Some(p) => Ok(Ok((p, current + 1))),
                None => {
                    self.put(&[w])?;
                    Ok(Err(Replaced::Written { revision: current + 1 }))
                }
            }
        })();
        match prepared {
            Err(e) => finish(Err(e)),
            Ok(Err(replaced)) => finish(Ok(replaced)),
            Ok(Ok((payload, revision))) => submit_puts(
                &wal,
                &[(record_hash(r.key), payload)],
                Box::new(move |result| finish(result.map(|()| Replaced::Written { revision }))),
            ),
        }
    }

    /// The fast path of [`replace_then`](Self::replace_then) for a caller
    /// on a thread that must not block (the JavaScript thread; docs/WAL.md
    /// §4.1.1): on a lock-free store, with `r.lock`, a write whose key file
    /// surely fits a record is queued for the log's committer with no file
    /// I/O here: the key's in-process lock (one attempt), then the decision
    /// under the log lock reads the revision, checks `r.expected_revision`
    /// and encodes the record on the committer thread; `done` is called
    /// there, exactly once, once the frame is durable (or failed), the
    /// in-process lock released before it. Returns `false`, `done` dropped
    /// uncalled and nothing done, whenever the write is not for this path
    /// (no log, not lock-free, no `r.lock`, a store that takes no writes, an
    /// invalid key, a value that may not fit a record, the in-process lock
    /// held): the caller takes the general path, which answers it as before.
    pub fn replace_queued(self: &Arc<Self>, r: &Replace<'_>, done: Done<Replaced>) -> bool {
        let Some(wal) = self.wal.as_ref().filter(|_| r.lock && self.lockfree) else { return false };
        if self.check_writable().is_err() || key::validate(r.key).is_err() {
            return false;
        }
        // What an encoded key file adds at most to its parts (header, lengths,
        // encryption, an incompressible value's framing) is well under this.
        if r.value.len() + r.meta.len() + r.key.len() + QUEUED_SLACK > WAL_MAX_RECORD {
            return false;
        }
        let id = self.lock_id(r.key);
        if !LockTable::global().try_lock(id) {
            return false;
        }
        submit_lockfree(wal, id, LockFreeWrite::new(&self.files, r, None, Vec::new()), done);
        true
    }

    /// A replacing write with its revision read fused in: under `key`'s lock
    /// (taken and released here when `r.lock`, one attempt, else held by the
    /// caller), reads the revision the key is at ([`format::meta::revision`](crate::format::meta::revision);
    /// 0 when missing), checks `r.expected_revision`, and writes `r.meta` with
    /// the next revision spliced into its [`REVISION_SLOT`](crate::format::meta::REVISION_SLOT) at
    /// `r.revision_at`, as [`put`](Self::put) writes. One call, so an async
    /// write of a new key is one threadpool task with its lock files taken
    /// and released off the JavaScript thread, not a lock, a read, a write
    /// and an unlock. What it is not sure of (an append log, a metadata map it
    /// cannot read, a failed read) it leaves to the caller's general path:
    /// [`Replaced::Unsure`], nothing written, the lock as it found it.
    ///
    /// On a lock-free store (docs/WAL.md §4.1) with `r.lock`, a write whose
    /// key file fits a log record takes only the key's in-process lock: the
    /// lock file check, the revision read and the check of
    /// `r.expected_revision` happen under the log lock, in the group commit
    /// that writes its record ([`Replaced::Busy`] when another holder's lock
    /// file exists).
    pub fn replace(&self, r: &Replace<'_>) -> Result<Replaced> {
        if let Some(wal) = self.wal.as_ref().filter(|_| r.lock && self.lockfree) {
            match self.lockfree_prepare(r)? {
                LockFree::Answer(a) => return Ok(a),
                LockFree::Locked => {}
                LockFree::Ready(w) => {
                    let answer = Arc::clone(&w.answer);
                    let appended = wal.append_decided(WAL_MAX_RECORD, Box::new(move |wal| w.decide(wal)));
                    let result = appended.and_then(|()| wal.checkpoint_if_full()).map(|()| take_answer(&answer));
                    LockTable::global().unlock(self.lock_id(r.key));
                    return result;
                }
            }
        }
        if r.lock && !self.try_lock(&[r.key])? {
            return Ok(Replaced::Busy);
        }
        let result = self.replace_locked(r);
        if r.lock {
            let released = self.unlock(&[r.key]);
            if result.is_ok() {
                released?;
            }
        }
        result
    }

    /// [`blob_writer`](Self::blob_writer) with the lock and the revision read
    /// of a replacing write fused in, as [`replace`](Self::replace) does for
    /// a value: under `key`'s lock (taken here when `r.lock`, one attempt),
    /// reads the revision the key is at, checks `r.expected_revision`, and
    /// opens a writer whose metadata carries the next revision in its slot.
    /// A lock taken here goes with the writer: its commit (or abort, or drop)
    /// releases it. So an async `bassoc` takes and releases its lock files in
    /// the writer's threadpool tasks, none on the JavaScript thread. Anything
    /// but an opened writer leaves the lock as it found it.
    pub fn blob_replace(self: &Arc<Self>, r: &BlobReplace<'_>) -> Result<BlobReplaced> {
        if r.lock && !self.try_lock(&[r.key])? {
            return Ok(BlobReplaced::Not(Replaced::Busy));
        }
        let result = self.blob_replace_locked(r);
        match result {
            Ok(BlobReplaced::Opened { mut writer, revision }) if r.lock => {
                writer.hold_lock(KeyLock { store: Arc::clone(self), key: r.key.to_vec() });
                Ok(BlobReplaced::Opened { writer, revision })
            }
            other => {
                if r.lock {
                    let released = self.unlock(&[r.key]);
                    if other.is_ok() {
                        released?;
                    }
                }
                other
            }
        }
    }

    fn blob_replace_locked(&self, r: &BlobReplace<'_>) -> Result<BlobReplaced> {
        let Some(current) = self.current_revision(r.key) else { return Ok(BlobReplaced::Not(Replaced::Unsure)) };
        if let Some(expected) = r.expected_revision {
            if expected != current {
                return Ok(BlobReplaced::Not(Replaced::Mismatch { actual: current }));
            }
        }
        let Some(meta) = crate::format::meta::splice_revision(r.meta, r.revision_at, current + 1) else {
            return Ok(BlobReplaced::Not(Replaced::Unsure));
        };
        self.flush_logged(r.key)?;
        let writer = blob::writer(&self.files, r.key, &meta)?;
        Ok(BlobReplaced::Opened { writer, revision: current + 1 })
    }

    /// The revision `key` is at (0: missing), or `None` when the core is not
    /// sure of it (an append log, a metadata map it cannot read, a failed
    /// read): the caller's general path reads it then.
    fn current_revision(&self, key: &[u8]) -> Option<u64> {
        match self.get_meta(key) {
            Ok(None) => Some(0),
            Ok(Some(e)) if e.log.is_none() => crate::format::meta::revision(&e.meta),
            Ok(Some(_)) | Err(_) => None,
        }
    }

    fn lock_id(&self, key: &[u8]) -> LockId {
        (self.files.id, keyhash::key_hash(key))
    }

    /// The first half of a lock-free replace (docs/WAL.md §4.1): the key's
    /// in-process lock (one attempt: [`Replaced::Busy`]), then the record
    /// encoded with the revision the key is likely at (the expected one, or
    /// the one read now), so the committer usually needs no encoding of its
    /// own. A key file too large for a record: [`LockFree::Locked`], the
    /// in-process lock released, for the locked path. Any answer but
    /// [`LockFree::Ready`] leaves the in-process lock as it found it.
    fn lockfree_prepare(&self, r: &Replace<'_>) -> Result<LockFree> {
        self.check_writable()?;
        key::validate(r.key)?;
        let id = self.lock_id(r.key);
        let table = LockTable::global();
        if !table.try_lock(id) {
            return Ok(LockFree::Answer(Replaced::Busy));
        }
        let prepared = (|| {
            let guess = match r.expected_revision {
                Some(e) => e,
                None => match self.current_revision(r.key) {
                    Some(c) => c,
                    None => return Ok(LockFree::Answer(Replaced::Unsure)),
                },
            };
            let Some(meta) = crate::format::meta::splice_revision(r.meta, r.revision_at, guess + 1) else {
                return Ok(LockFree::Answer(Replaced::Unsure));
            };
            let Some(payload) = self.log_payload(&Write { key: r.key, serializer: r.serializer, meta: &meta, value: r.value })? else {
                return Ok(LockFree::Locked);
            };
            Ok(LockFree::Ready(LockFreeWrite::new(&self.files, r, Some(guess), payload)))
        })();
        if !matches!(prepared, Ok(LockFree::Ready(_))) {
            table.unlock(id);
        }
        prepared
    }

    fn replace_locked(&self, r: &Replace<'_>) -> Result<Replaced> {
        let Some(current) = self.current_revision(r.key) else { return Ok(Replaced::Unsure) };
        if let Some(expected) = r.expected_revision {
            if expected != current {
                return Ok(Replaced::Mismatch { actual: current });
            }
        }
        let Some(meta) = crate::format::meta::splice_revision(r.meta, r.revision_at, current + 1) else {
            return Ok(Replaced::Unsure);
        };
        self.put(&[Write { key: r.key, serializer: r.serializer, meta: &meta, value: r.value }])?;
        Ok(Replaced::Written { revision: current + 1 })
    }

    /// Writes each entry to its own new staging file and (when durable) fsyncs
    /// it. A large batch (a group commit) is staged by several threads at
    /// once: creating, writing and syncing many small files is latency-bound,
    /// and the file system makes many of them durable in one journal commit.
    /// Every staging file created, even on failure, ends up in `staged`, so the
    /// caller removes what was not renamed.
    fn stage_all(&self, writes: &[Write<'_>], staged: &mut Vec<StagedPut>) -> Result<()> {
        let threads = if writes.len() < PARALLEL_SYNC_MIN || !self.files.vfs.parallel_sync() { 1 } else { PARALLEL_SYNC_THREADS };
        stage_parallel(writes, threads, staged, |part, out| part.iter().try_for_each(|w| self.stage_one(w, out)))
    }

    /// Stages one entry: a new staging file, written whole, fsynced when durable.
    fn stage_one(&self, w: &Write<'_>, staged: &mut Vec<StagedPut>) -> Result<()> {
        let target = self.files.file_path(w.key);
        let secret = self.files.options.encryption_key.as_deref();
        let file = file::encode_parts(self.files.options.codec(), secret, w.key, w.serializer, w.meta, w.value, &mut OsRandom)
            .map_err(|e| e.with_file(&target))?;
        let (mut f, stage, in_flight) = self.files.create_staging(w.key)?;
        staged.push((stage.clone(), target, in_flight));
        let write_err = |e| Error::io(e, "cannot write a staging file", &stage);
        if file.value.len() <= SMALL_READ {
            // A small file in one write: a copy of a few KiB costs less than a system call.
            let mut whole = Vec::with_capacity(file.head.len() + file.value.len());
            whole.extend_from_slice(&file.head);
            whole.extend_from_slice(&file.value);
            f.write_all(&whole).map_err(write_err)?;
        } else {
            f.write_all(&file.head).map_err(write_err)?;
            f.write_all(&file.value).map_err(write_err)?;
        }
        if self.files.options.sync_blob {
            f.sync().map_err(|e| self.files.fsync_failed(e, "cannot fsync a staging file", &stage))?;
        }
        Ok(())
    }

    /// Renames every staged file over its target, then fsyncs the directory.
    /// Renamed entries leave `staged`, so the caller removes only what is left.
    fn commit(&self, staged: &mut Vec<StagedPut>) -> Result<()> {
        while !staged.is_empty() {
            let (stage, target, _) = &staged[0];
            self.files.vfs.rename(stage, target).map_err(|e| Error::io(e, "cannot rename a staging file over the key file", target))?;
            staged.remove(0);
        }
        if self.files.options.sync_blob {
            self.files.sync_dir()?;
        }
        Ok(())
    }

    /// Deletes each key (given as its CKE); returns whether each existed. One
    /// directory fsync makes all the deletions durable before this returns.
    pub fn delete(&self, keys: &[&[u8]]) -> Result<Vec<bool>> {
        self.check_writable()?;
        for k in keys {
            key::validate(k)?;
        }
        if let Some(wal) = self.wal.as_ref() {
            // Delete records for the keys that exist, in one frame (docs/WAL.md §4).
            let existed = keys.iter().map(|k| self.exists(k)).collect::<Result<Vec<bool>>>()?;
            let records: Vec<NewWalRecord<'_>> = keys
                .iter()
                .zip(&existed)
                .filter(|(_, &e)| e)
                .map(|(k, _)| NewWalRecord { op: WalOp::Delete, key_hash: record_hash(k), payload: &[] })
                .collect();
            if !records.is_empty() {
                append_in_frames(wal, &records)?;
                wal.checkpoint_if_full()?;
            }
            return Ok(existed);
        }
        let mut existed = Vec::with_capacity(keys.len());
        for k in keys {
            let path = self.files.file_path(k);
            match self.files.vfs.remove_file(&path) {
                Ok(()) => existed.push(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => existed.push(false),
                Err(e) => return Err(Error::io(e, "cannot delete the key file", &path)),
            }
        }
        if self.files.options.sync_blob && existed.iter().any(|&b| b) {
            self.files.sync_dir()?;
        }
        Ok(existed)
    }

    /// Reads the header and metadata of every key file, one file open at a
    /// time. Files that are not key files are ignored; key files that cannot
    /// be read are reported in [`ListResult::corrupt`]; nothing is changed.
    pub fn list(&self) -> Result<ListResult> {
        // The log before the directory: a checkpoint between the two moves
        // logged keys into files and empties the log, so the other order
        // missed those keys (neither in the names nor in the log). In this
        // one each is in `logged`, and `list_logged` reads its file.
        let logged = self.logged_keys()?;
        let names =
            self.files.vfs.read_dir(&self.files.dir).map_err(|e| Error::io(e, "cannot list the store directory", &self.files.dir))?;
        let mut out = ListResult::default();
        for name in names {
            if !shadowed(&logged, &name) {
                self.list_name(&name, &mut out);
            }
        }
        for hash in logged_puts(&logged) {
            self.list_logged(hash, &mut out);
        }
        Ok(out)
    }

    /// The keys the log has a put or a delete of (their files are shadowed),
    /// by key hash: empty without a log.
    fn logged_keys(&self) -> Result<std::collections::HashMap<u128, WalOp>> {
        let Some(wal) = self.wal.as_ref() else { return Ok(Default::default()) };
        Ok(wal.records()?.into_iter().filter(|(_, op)| *op != WalOp::File).map(|(h, op)| (u128::from_be_bytes(h), op)).collect())
    }

    /// Lists the logged value of the key whose hash is `hash` into `out`
    /// (its key file, if the log moved on to a file record meanwhile).
    fn list_logged(&self, hash: u128, out: &mut ListResult) -> bool {
        let Some(wal) = self.wal.as_ref() else { return false };
        let found = wal.get(&hash.to_be_bytes()).and_then(|l| match l {
            WalLookup::Put(payload) => {
                let path = self.wal_path();
                let ctx = self.files.context(hash);
                let (header, meta) = file::parse_head(&payload, payload.len() as u64, &ctx).map_err(|e| e.with_file(&path))?;
                key::validate(&meta.key).map_err(|e| Error::corrupt(format!("the stored key is invalid: {e}")).with_file(&path))?;
                Ok(Some(MetaEntry {
                    key: meta.key,
                    serializer: header.serializer,
                    meta: meta.meta,
                    file: path.display().to_string(),
                    log: None,
                }))
            }
            WalLookup::Deleted => Ok(None),
            WalLookup::File | WalLookup::Absent => {
                let name = format!("{hash:032x}{}", keyhash::KEY_FILE_SUFFIX);
                self.list_one(&self.files.dir.join(&name), &name)
            }
        });
        match found {
            Ok(Some(entry)) => out.entries.push(entry),
            Ok(None) => return false,
            Err(e) => out.corrupt.push(e),
        }
        true
    }

    /// A streaming [`list`](Self::list): the directory is read as it goes
    /// (`readdir`, no full name list), each batch holds at most `max` key
    /// files' metadata, one file open at a time. The same rules as `list`:
    /// foreign files are skipped, unreadable key files reported, nothing changed.
    /// A key written or deleted while the cursor runs may or may not be seen.
    pub fn list_cursor(self: &Arc<Self>) -> Result<ListCursor> {
        // The log before the directory, as in `list`.
        let logged = self.logged_keys()?;
        let names =
            self.files.vfs.read_dir_iter(&self.files.dir).map_err(|e| Error::io(e, "cannot list the store directory", &self.files.dir))?;
        let puts = logged_puts(&logged);
        Ok(ListCursor { store: Arc::clone(self), names: Some(names), logged, puts })
    }

    /// Lists one directory entry into `out` if it is a key file.
    fn list_name(&self, name: &std::ffi::OsStr, out: &mut ListResult) -> bool {
        let Some(name) = name.to_str() else { return false };
        if !is_key_file_name(name) {
            return false;
        }
        let path = self.files.dir.join(name);
        match self.list_one(&path, name) {
            Ok(Some(entry)) => out.entries.push(entry),
            Ok(None) => return false, // deleted since the directory was read
            Err(e) => out.corrupt.push(e),
        }
        true
    }

    fn list_one(&self, path: &Path, name: &str) -> Result<Option<MetaEntry>> {
        let file = match self.files.vfs.open_read(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(e, "cannot open the key file", path)),
        };
        let size = file.size().map_err(|e| Error::io(e, "cannot stat the key file", path))?;
        // A key file's name is the hex of its key's hash (checked by is_key_file_name).
        let key_hash = u128::from_str_radix(&name[..32], 16).expect("32 lowercase hex digits");
        let ctx = self.files.context(key_hash);
        let (header, meta, prefix) = keyfile::read_head(&*file, size, path, &ctx)?;
        key::validate(&meta.key).map_err(|e| Error::corrupt(format!("the stored key is invalid: {e}")).with_file(path))?;
        if keyhash::file_name(&meta.key) != name {
            return Err(Error::new(ErrorCode::KeyMismatch, "the key file holds a key whose name is another file's").with_file(path));
        }
        let log = if header.is_log() { Some(log::log_info(&*file, size, path, &header, &prefix, &ctx)?) } else { None };
        Ok(Some(MetaEntry { key: meta.key, serializer: header.serializer, meta: meta.meta, file: path.display().to_string(), log }))
    }

    /// The lock ids of `keys`, sorted and without duplicates: every holder
    /// takes locks in the order of their lock file names, so two multi-key
    /// writers cannot deadlock.
    fn lock_ids(&self, keys: &[&[u8]]) -> Result<Vec<LockId>> {
        let mut ids = Vec::with_capacity(keys.len());
        for k in keys {
            key::validate(k)?;
            ids.push((self.files.id, keyhash::key_hash(k)));
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn timeout_error(&self, hex: &str, holder: &str) -> Error {
        Error::new(
            ErrorCode::LockTimeout,
            format!(
                "a key stayed locked by {holder} for longer than the lock timeout ({} ms); lock file {}",
                self.files.options.lock_timeout.as_millis(),
                self.files.dir.join(filelock::lock_name(hex)).display()
            ),
        )
        .with_file(self.files.dir.join(filelock::lock_name(hex)))
    }

    /// One attempt at one key's cross-process lock (the in-process one
    /// held): `Ok(Ok(true))` when it is a lock file this process kept idle
    /// (docs/WAL.md §4.1.2), taken with no file call.
    fn try_file_lock(&self, hash: u128) -> Result<std::result::Result<bool, Option<Record>>> {
        let hex = format!("{hash:032x}");
        let held = |token: String, since| self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(hash, (token, since));
        if let Some((token, since)) = self.kept_wal().and_then(|wal| wal.take_kept_key(hash)) {
            held(token, since);
            return Ok(Ok(true));
        }
        match self.files.locker().try_acquire(&hex) {
            Ok(Attempt::Taken(rec)) => {
                held(rec.token, std::time::Instant::now());
                Ok(Ok(false))
            }
            Ok(Attempt::Busy(holder)) => Ok(Err(holder)),
            Err(e) => Err(self.files.lock_error(e, "cannot take a key's lock", &hex)),
        }
    }

    /// Locks every key against every other holder, in this process (any
    /// thread) and in others, waiting at most the lock timeout
    /// (`ERR_LOCK_TIMEOUT`, naming the holder).
    pub fn lock(&self, keys: &[&[u8]]) -> Result<()> {
        self.files.check_not_read_only()?;
        let ids = self.lock_ids(keys)?;
        let deadline = std::time::Instant::now() + self.files.options.lock_timeout;
        let table = LockTable::global();
        let mut all_kept = true;
        for (i, &id) in ids.iter().enumerate() {
            let hex = format!("{:032x}", id.1);
            if !table.lock_until(id, Some(deadline)) {
                let _ = self.release(&ids[..i]);
                return Err(self.timeout_error(&hex, "another thread of this process"));
            }
            // Polls with backoff: 0.2 ms doubling to 8 ms.
            let mut pause = std::time::Duration::from_micros(200);
            loop {
                match self.try_file_lock(id.1) {
                    Ok(Ok(kept)) => {
                        all_kept &= kept;
                        break;
                    }
                    Ok(Err(holder)) if std::time::Instant::now() >= deadline => {
                        table.unlock(id);
                        let _ = self.release(&ids[..i]);
                        return Err(self.timeout_error(&hex, &Locker::describe(&holder)));
                    }
                    Ok(Err(_)) => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(std::time::Duration::from_millis(8));
                    }
                    Err(e) => {
                        table.unlock(id);
                        let _ = self.release(&ids[..i]);
                        return Err(e);
                    }
                }
            }
        }
        if all_kept {
            // Each lock file existed since its last pass (docs/WAL.md §4.1.2).
            return Ok(());
        }
        self.pass_log_lock(&ids)
    }

    /// The log that keeps this store's key lock files idle (docs/WAL.md
    /// §4.1.2): a lock-free store's.
    fn kept_wal(&self) -> Option<&Arc<Wal>> {
        self.wal.as_ref().filter(|_| self.lockfree)
    }

    /// A locked writer on a lock-free store, holding the lock files of
    /// `ids`, passes through the log lock before it reads those keys
    /// (docs/WAL.md §4.1): every lock-free write that found no lock file is
    /// then in the log. On failure the locks are released.
    fn pass_log_lock(&self, ids: &[LockId]) -> Result<()> {
        let Some(wal) = self.wal.as_ref().filter(|_| self.lockfree) else { return Ok(()) };
        if let Err(e) = wal.barrier() {
            let _ = self.release(ids);
            return Err(e);
        }
        Ok(())
    }

    /// Locks every key if all are free right now, or none; never waits.
    pub fn try_lock(&self, keys: &[&[u8]]) -> Result<bool> {
        self.try_lock_waited(keys, None)
    }

    /// [`try_lock`](Self::try_lock) for a caller that has been polling for
    /// `waited`: once that reaches the lock timeout, a busy key fails with
    /// `ERR_LOCK_TIMEOUT` naming its holder instead of `false`.
    pub fn try_lock_waited(&self, keys: &[&[u8]], waited: Option<std::time::Duration>) -> Result<bool> {
        self.files.check_not_read_only()?;
        let ids = self.lock_ids(keys)?;
        let timed_out = waited.is_some_and(|w| w >= self.files.options.lock_timeout);
        let table = LockTable::global();
        let mut all_kept = true;
        for (i, &id) in ids.iter().enumerate() {
            let hex = format!("{:032x}", id.1);
            if !table.try_lock(id) {
                let _ = self.release(&ids[..i]);
                return if timed_out { Err(self.timeout_error(&hex, "another thread of this process")) } else { Ok(false) };
            }
            match self.try_file_lock(id.1) {
                Ok(Ok(kept)) => all_kept &= kept,
                Ok(Err(holder)) => {
                    table.unlock(id);
                    let _ = self.release(&ids[..i]);
                    return if timed_out { Err(self.timeout_error(&hex, &Locker::describe(&holder))) } else { Ok(false) };
                }
                Err(e) => {
                    table.unlock(id);
                    let _ = self.release(&ids[..i]);
                    return Err(e);
                }
            }
        }
        if !all_kept {
            self.pass_log_lock(&ids)?;
        }
        Ok(true)
    }

    /// Releases the locks of `keys` (taken with [`lock`](Self::lock) or
    /// [`try_lock`](Self::try_lock)). Every key is released in this process
    /// whatever happens; a lock file that cannot be removed (or was taken
    /// over) is reported.
    pub fn unlock(&self, keys: &[&[u8]]) -> Result<()> {
        let ids = self.lock_ids(keys)?;
        self.release(&ids)
    }

    fn release(&self, ids: &[LockId]) -> Result<()> {
        let mut first = None;
        for &id in ids {
            let rec = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id.1);
            // Kept idle for the next holder here (docs/WAL.md §4.1.2), before the in-process lock goes.
            let token = rec.and_then(|(token, since)| match self.kept_wal() {
                Some(wal) => wal.keep_key_lock(id.1, token, since),
                None => Some(token),
            });
            if let Some(token) = token {
                let hex = format!("{:032x}", id.1);
                if let Err(e) = self.files.locker().release(&hex, &token) {
                    first.get_or_insert_with(|| self.files.lock_error(e, "cannot release a key's lock", &hex));
                }
            }
            LockTable::global().unlock(id);
        }
        first.map_or(Ok(()), Err)
    }
}

/// A streaming listing of a store (see [`FileStore::list_cursor`]).
pub struct ListCursor {
    store: Arc<FileStore>,
    /// `None` once the directory is exhausted or the cursor closed.
    names: Option<vfs::DirNames>,
    /// The keys the log had a put or a delete of when the cursor was opened.
    logged: std::collections::HashMap<u128, WalOp>,
    /// The logged puts still to list, after the directory.
    puts: Vec<u128>,
}

impl std::fmt::Debug for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListCursor").field("dir", &self.store.files.dir).field("done", &self.names.is_none()).finish()
    }
}

impl ListCursor {
    /// The next batch of at most `max` (at least 1) key files: `None` when the
    /// directory is exhausted. A batch may hold fewer than `max` only at the end.
    pub fn next_batch(&mut self, max: usize) -> Result<Option<ListResult>> {
        let max = max.max(1);
        if self.names.is_none() && self.puts.is_empty() {
            return Ok(None);
        }
        let mut out = ListResult::default();
        let mut n = 0;
        while n < max {
            let Some(names) = self.names.as_mut() else {
                // The directory is done: the logged puts.
                let Some(hash) = self.puts.pop() else { break };
                if self.store.list_logged(hash, &mut out) {
                    n += 1;
                }
                continue;
            };
            match names.next() {
                Some(Ok(name)) => {
                    if !shadowed(&self.logged, &name) && self.store.list_name(&name, &mut out) {
                        n += 1;
                    }
                }
                Some(Err(e)) => {
                    self.names = None;
                    return Err(Error::io(e, "cannot list the store directory", &self.store.files.dir));
                }
                None => {
                    self.names = None;
                }
            }
        }
        if n == 0 && self.names.is_none() && self.puts.is_empty() {
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// Releases the directory handle; later batches are `None`.
    pub fn close(&mut self) {
        self.names = None;
        self.puts.clear();
    }
}

/// Whether the directory entry `name` is a key file the log shadows (a put or a delete of its key).
fn shadowed(logged: &std::collections::HashMap<u128, WalOp>, name: &std::ffi::OsStr) -> bool {
    !logged.is_empty()
        && name
            .to_str()
            .filter(|n| is_key_file_name(n))
            .and_then(|n| u128::from_str_radix(&n[..32], 16).ok())
            .is_some_and(|h| logged.contains_key(&h))
}

/// The hashes of the logged puts, in a stable order.
fn logged_puts(logged: &std::collections::HashMap<u128, WalOp>) -> Vec<u128> {
    let mut puts: Vec<u128> = logged.iter().filter(|(_, op)| **op == WalOp::Put).map(|(h, _)| *h).collect();
    puts.sort_unstable_by(|a, b| b.cmp(a));
    puts
}

/// A put record to queue: the key's hash and the key file.
type Payload = ([u8; 16], Vec<u8>);

/// What [`FileStore::put_then`] and [`FileStore::replace_then`] call with their outcome.
pub type Done<T> = Box<dyn FnOnce(Result<T>) + Send>;

/// What [`FileStore::lockfree_prepare`] found.
enum LockFree {
    /// Answered at once, nothing written, the in-process lock released.
    Answer(Replaced),
    /// The key file is too large for a record: the locked path writes it.
    Locked,
    /// The in-process lock is held; the write is to be decided under the log lock.
    Ready(Box<LockFreeWrite>),
}

/// A lock-free replace on its way to the log (docs/WAL.md §4.1): what its
/// decision under the log lock needs, owned (the committer may be another
/// thread), and where it leaves its answer.
struct LockFreeWrite {
    files: Arc<StoreDir>,
    key: Vec<u8>,
    serializer: u8,
    meta: Vec<u8>,
    revision_at: usize,
    value: Vec<u8>,
    expected: Option<u64>,
    /// The revision `payload` was encoded for (the new one is `guess + 1`);
    /// `None`: nothing encoded yet (the decision encodes it).
    guess: Option<u64>,
    payload: Vec<u8>,
    answer: Arc<std::sync::Mutex<Option<Replaced>>>,
}

/// The answer a decision left (`Unsure` if none: it never ran to its end).
fn take_answer(answer: &std::sync::Mutex<Option<Replaced>>) -> Replaced {
    answer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take().unwrap_or(Replaced::Unsure)
}

/// Queues a prepared lock-free replace (its key's in-process lock `id`
/// held) for the log's committer: `done` gets its answer there once the
/// frame is durable, the in-process lock released first; exactly once,
/// also when it cannot be queued (then here).
fn submit_lockfree(wal: &Arc<Wal>, id: LockId, w: Box<LockFreeWrite>, done: Done<Replaced>) {
    let answer = Arc::clone(&w.answer);
    let slot = Arc::new(std::sync::Mutex::new(Some(done)));
    let take = |slot: &std::sync::Mutex<Option<Done<Replaced>>>| slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    let (theirs, log) = (Arc::clone(&slot), Arc::clone(wal));
    let submitted = wal.submit_decided(
        WAL_MAX_RECORD,
        Box::new(move |wal| w.decide(wal)),
        Box::new(move |result| {
            let result = result.and_then(|()| log.checkpoint_if_full()).map(|()| take_answer(&answer));
            LockTable::global().unlock(id);
            if let Some(done) = take(&theirs) {
                done(result);
            }
        }),
    );
    if let Err(e) = submitted {
        LockTable::global().unlock(id);
        if let Some(done) = take(&slot) {
            done(Err(e));
        }
    }
}

impl LockFreeWrite {
    /// `r`'s parts, owned for the committer thread; `payload` encoded for `guess`.
    fn new(files: &Arc<StoreDir>, r: &Replace<'_>, guess: Option<u64>, payload: Vec<u8>) -> Box<Self> {
        Box::new(LockFreeWrite {
            files: Arc::clone(files),
            key: r.key.to_vec(),
            serializer: r.serializer,
            meta: r.meta.to_vec(),
            revision_at: r.revision_at,
            value: r.value.to_vec(),
            expected: r.expected_revision,
            guess,
            payload,
            answer: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// Under the log lock, after the committer's catch-up: `Busy` when the
    /// key's lock file exists (whatever it holds); else the current revision
    /// (the log's newest record, else the key file; 0 when missing;
    /// `Unsure` when it cannot be told), `Mismatch` against the expected
    /// one, or the record with the next revision in its slot.
    fn decide(self, wal: &Wal) -> Result<Option<crate::wal::OwnedRecord>> {
        let set = |a: Replaced| *self.answer.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(a);
        let hash = keyhash::key_hash(&self.key);
        let lock_path = self.files.dir.join(filelock::lock_name(&format!("{hash:032x}")));
        // A lock file this process keeps idle is its own (docs/WAL.md §4.1.2).
        if !wal.keeps_key(hash)
            && self.files.vfs.exists(&lock_path).map_err(|e| Error::io(e, "cannot look for a key's lock file", &lock_path))?
        {
            set(Replaced::Busy);
            return Ok(None);
        }
        let Some(current) = revision_now(&self.files, wal, &self.key) else {
            set(Replaced::Unsure);
            return Ok(None);
        };
        if self.expected.is_some_and(|e| e != current) {
            set(Replaced::Mismatch { actual: current });
            return Ok(None);
        }
        let payload = if self.guess == Some(current) {
            self.payload
        } else {
            let Some(meta) = crate::format::meta::splice_revision(&self.meta, self.revision_at, current + 1) else {
                set(Replaced::Unsure);
                return Ok(None);
            };
            let secret = self.files.options.encryption_key.as_deref();
            let file =
                file::encode_parts(self.files.options.codec(), secret, &self.key, self.serializer, &meta, &self.value, &mut OsRandom)
                    .map_err(|e| e.with_file(self.files.file_path(&self.key)))?;
            if file.head.len() + file.value.len() > WAL_MAX_RECORD {
                set(Replaced::Unsure);
                return Ok(None);
            }
            let mut whole = file.head;
            whole.extend_from_slice(&file.value);
            whole
        };
        set(Replaced::Written { revision: current + 1 });
        Ok(Some(crate::wal::OwnedRecord { op: WalOp::Put, key_hash: hash.to_be_bytes(), payload }))
    }
}

/// The revision `key` is at, as [`FileStore::current_revision`] reads it
/// (the log's newest record, else the key file; 0 when missing; `None` for
/// an append log, a metadata map without a revision, or a failed read).
fn revision_now(files: &StoreDir, wal: &Wal, key: &[u8]) -> Option<u64> {
    let hash = keyhash::key_hash(key);
    let ctx = files.context(hash);
    let meta = match wal.get(&hash.to_be_bytes()).ok()? {
        WalLookup::Put(payload) => {
            let (header, meta) = file::parse_head(&payload, payload.len() as u64, &ctx).ok()?;
            if header.flags != 0 || meta.key != key {
                return None;
            }
            meta.meta
        }
        WalLookup::Deleted => return Some(0),
        WalLookup::File | WalLookup::Absent => {
            let Some((_file, _size, path, header, meta, _prefix)) = files.open_head(key, &ctx).ok()? else { return Some(0) };
            keyfile::check_key(&meta.key, key, &path).ok()?;
            if header.is_log() {
                return None;
            }
            meta.meta
        }
    };
    crate::format::meta::revision(&meta)
}

/// Queues put records for the log's committer thread; `done` gets the
/// outcome (after a checkpoint, when the log is full), exactly once.
/// Appends `records` in as few frames as hold them, one after the other: a
/// batch larger than one frame ([`MAX_FRAME`]) is durable frame by frame, as
/// a batch of key files is durable file by file (each key atomic, the batch
/// not); a batch that fits is one frame, durable together.
fn append_in_frames(wal: &Wal, records: &[NewWalRecord<'_>]) -> Result<()> {
    // A frame's length depends only on the sum of its records' heads and payloads.
    let len_of = |body: usize| frame_len([body - RECORD_HEAD]);
    let mut start = 0;
    while start < records.len() {
        let mut body = RECORD_HEAD + records[start].payload.len();
        let mut end = start + 1;
        while end < records.len() && len_of(body + RECORD_HEAD + records[end].payload.len()) <= MAX_FRAME {
            body += RECORD_HEAD + records[end].payload.len();
            end += 1;
        }
        wal.append(&records[start..end])?;
        start = end;
    }
    Ok(())
}

fn submit_puts(wal: &Arc<Wal>, payloads: &[Payload], done: Done<()>) {
    let records: Vec<NewWalRecord<'_>> = payloads.iter().map(|(h, p)| NewWalRecord { op: WalOp::Put, key_hash: *h, payload: p }).collect();
    let slot = Arc::new(std::sync::Mutex::new(Some(done)));
    let take = |slot: &std::sync::Mutex<Option<Done<()>>>| slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    let (theirs, log) = (Arc::clone(&slot), Arc::clone(wal));
    let submitted = wal.submit(
        &records,
        Box::new(move |result| {
            let result = result.and_then(|()| log.checkpoint_if_full());
            if let Some(done) = take(&theirs) {
                done(result);
            }
        }),
    );
    if let Err(e) = submitted {
        if let Some(done) = take(&slot) {
            done(Err(e));
        }
    }
}

/// Checkpoints `wal` until it is empty (a checkpoint of another process
/// running, or appends meanwhile, mean another turn), up to `timeout`.
fn checkpoint_all(wal: &Wal, timeout: std::time::Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = std::time::Duration::from_micros(200);
    loop {
        if wal.checkpoint()? && wal.log_bytes() == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::new(ErrorCode::LockTimeout, "the write-ahead log could not be checkpointed whole within the lock timeout")
                .with_file(wal.path()));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(8));
    }
}

/// Creates `dir` and its missing parents. With `sync` each new directory's
/// entry is made durable by an fsync of its parent, top-most first: otherwise
/// a crash could take a new store directory away with every write acknowledged
/// in it.
fn create_dir_durably(vfs: &dyn Vfs, dir: &Path, sync: bool) -> Result<()> {
    let mut missing = Vec::new();
    let mut level = Some(dir);
    while let Some(d) = level.filter(|d| !d.as_os_str().is_empty()) {
        if vfs.exists(d).map_err(|e| Error::io(e, "cannot look up the store directory", d))? {
            break;
        }
        missing.push(d);
        level = d.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    vfs.create_dir_all(dir).map_err(|e| Error::io(e, "cannot create the store directory", dir))?;
    if sync {
        for d in missing.iter().rev() {
            let parent = d.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            vfs.sync_dir(parent)
                .map_err(|e| Error::io_with_code(ErrorCode::Fsync, e, "cannot fsync the parent of a new directory", parent))?;
        }
    }
    Ok(())
}

/// Deletes a store: its key files, staging files and lock file, then the
/// directory if nothing else is left in it. A missing directory is not an error.
pub fn delete_store(dir: impl AsRef<Path>) -> Result<()> {
    delete_store_with(&RealFs, dir.as_ref())
}

/// [`delete_store`] on any [`Vfs`].
///
/// A store path that is a symbolic link names the directory it points to
/// (resolved once, as [`FileStore::open`] does): that directory's store files
/// are deleted, and the link and the directory are left in place, so the path
/// opens again as an empty store.
pub fn delete_store_with(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    let link = vfs.is_symlink(dir).map_err(|e| Error::io(e, "cannot look up the store directory", dir))?;
    let resolved;
    let dir = if link {
        resolved = match vfs.canonicalize(dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(e, "cannot resolve the store directory", dir)),
        };
        resolved.as_path()
    } else {
        dir
    };
    let names = match vfs.read_dir(dir) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(e, "cannot list the store directory", dir)),
    };
    let mut foreign = false;
    for name in names {
        let ours = name.to_str().is_some_and(|n| {
            is_key_file_name(n)
                || n == LOCK_FILE_NAME
                || n == CLOCK_FILE_NAME
                || staging::parse_staging_name(n).is_some()
                || filelock::is_lock_name(n)
                || n == KEY_CHECK_FILE_NAME
                || n == REKEY_FILE_NAME
                || n == WAL_FILE_NAME
        });
        if !ours {
            foreign = true;
            continue;
        }
        let path = dir.join(&name);
        match vfs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(e, "cannot delete a store file", &path)),
        }
    }
    if !foreign && !link {
        match vfs.remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(e, "cannot remove the store directory", dir)),
        }
    } else {
        vfs.sync_dir(dir).map_err(|e| Error::io_with_code(ErrorCode::Fsync, e, "cannot fsync the store directory", dir))?;
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        vfs.sync_dir(parent).map_err(|e| Error::io_with_code(ErrorCode::Fsync, e, "cannot fsync the parent directory", parent))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! What needs the store's internals (the process-wide lock table); the
    //! rest of the store's tests are in tests/store.rs.
    use super::*;
    use crate::format::key::{encode, Key};

    fn key(s: &str) -> Vec<u8> {
        encode(&Key::str(s))
    }

    fn open(dir: &Path) -> FileStore {
        FileStore::open(dir, Options::default()).unwrap()
    }

    fn put1(store: &FileStore, k: &[u8], value: &[u8]) {
        store.put(&[Write { key: k, serializer: 1, meta: b"\x80", value }]).unwrap();
    }

    #[test]
    fn locks_exclude_threads_and_are_all_or_none() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(open(tmp.path()));
        let (a, b) = (key("a"), key("b"));
        assert!(store.try_lock(&[&a, &b]).unwrap());
        // A second open of the same directory shares the in-process locks.
        let other = open(tmp.path());
        assert!(!other.try_lock(&[&a]).unwrap());
        assert!(!other.try_lock(&[&key("c"), &b]).unwrap());
        assert!(other.try_lock(&[&key("c")]).unwrap(), "c was not left locked by the failed attempt");
        other.unlock(&[&key("c")]).unwrap();
        store.unlock(&[&a, &b]).unwrap();

        // Threads incrementing one counter under the lock lose no update.
        let k = key("counter");
        put1(&store, &k, &0u64.to_le_bytes());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(&store);
                let k = k.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        store.lock(&[&k]).unwrap();
                        let v = store.get(&k).unwrap().unwrap().value;
                        let n = u64::from_le_bytes(v.try_into().unwrap()) + 1;
                        put1(&store, &k, &n.to_le_bytes());
                        store.unlock(&[&k]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v = store.get(&k).unwrap().unwrap().value;
        assert_eq!(u64::from_le_bytes(v.try_into().unwrap()), 800);
        assert_eq!(LockTable::global().len_of(store.files.id), 0, "the lock table holds no slot for released keys");
    }
}
