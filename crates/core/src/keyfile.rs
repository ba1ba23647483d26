//! The key files of an open store directory, as the store, blob, log and
//! keycheck modules share them below the store (FORMAT.md §3-§5): the
//! directory, its [`Vfs`] and the store's [`Options`]; opening a key file and
//! reading its head (header and meta segment, checked); the one durable way
//! a file is replaced (a staging file written whole, fsync, rename, directory
//! fsync), and the poison flag a failed fsync sets.
//!
//! [`StoreDir`] is what [`FileStore`](crate::FileStore) holds and lends to a
//! blob writer or reader, a log cursor, an append; it knows nothing of locks.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::codec::{Codec, SegmentContext, COMPRESSOR_LZ4, ENCRYPTOR_AES, ENCRYPTOR_NONE};
use crate::error::{Error, ErrorCode, Result};
use crate::filelock;
use crate::format::file::{self, Header, MetaSegment, HEADER_LEN};
use crate::format::key;
use crate::format::log::LogInfo;
use crate::keyhash::{self, KEY_FILE_SUFFIX};
use crate::staging::{self, InFlight};
use crate::valuecache::ValueCache;
use crate::vfs::{Vfs, VfsFile};

/// How much of a key file `keys` and `getMeta` read in their first read:
/// the header and, for all but unusual keys, the whole meta segment.
const HEAD_READ: usize = 4096;

/// Store options.
#[derive(Clone)]
pub struct Options {
    /// fsync each staging file and the directory before a write returns
    /// (default `true`). With `false`, a crash may lose recent writes, and on
    /// file systems that do not order a file's data before its rename (XFS,
    /// for one) a key may be left torn: its checksum then reports it as
    /// `ERR_CORRUPT`. A key never reads back a wrong value.
    pub sync_blob: bool,
    /// The compressor new writes use (FORMAT.md §4.2): 0 none, 1 LZ4.
    pub compressor: u8,
    /// The user's encryption key: when set, new writes are encrypted
    /// (FORMAT.md §4.3), and encrypted files can be read.
    pub encryption_key: Option<Vec<u8>>,
    /// With an `encryption_key`: also read files that are not encrypted
    /// (encryptor id 0), for the explicit migration of a plaintext store.
    /// Without it (the default) an encrypted store refuses them with
    /// `ERR_DECRYPT` (FORMAT.md §4.3).
    pub accept_plaintext: bool,
    /// How long a lock waits for another holder before it fails with
    /// `ERR_LOCK_TIMEOUT` (default 60 s; it should exceed the lease).
    pub lock_timeout: std::time::Duration,
    /// How old the lock file of a holder whose life cannot be checked (another
    /// host or pid namespace) must be to count as dead (default 30 s).
    pub lock_lease: std::time::Duration,
    /// Open the store read-only (FORMAT.md §6): opening creates, sweeps and
    /// writes nothing (no directory, no staging sweep, no key check), and
    /// every write and lock fails with `ERR_READ_ONLY` before it touches a
    /// file. Reads take no lock either way.
    pub read_only: bool,
    /// The most memory (bytes) the store's value cache may hold (default 4 MiB;
    /// 0: no cache). Small values read by [`read_value_into`](crate::FileStore::read_value_into)
    /// are kept decoded and dropped on the kernel's word that their file
    /// changed (Linux, local file systems; see `valuecache.rs` and
    /// docs/RELIABILITY.md). Elsewhere it has no effect.
    pub value_cache_bytes: usize,
    /// The write-ahead log (docs/WAL.md, experimental): `Some(true)` upgrades
    /// a store without the log's marker on a writable open (creates
    /// `.konserve.wal`, then writes the version-2 key check); `Some(false)`
    /// downgrades a store with it (a full checkpoint, the marker removed,
    /// the log removed); `None` (the default) changes nothing. A store with
    /// the marker uses the log whatever this says (a read-only open too).
    pub wal: Option<bool>,
    /// The write-ahead log's growth step in bytes (`None`: 64 MiB,
    /// [`crate::wal::GROW_STEP`]); a multiple of 4096. For tests on the
    /// simulated file system, where every byte of a new log is written.
    pub wal_grow_step: Option<u64>,
    /// How long the log's lock file stays taken after a frame with nothing
    /// queued (`None`: [`crate::wal::IDLE_HOLD`], 2 ms; zero: released at
    /// once; docs/WAL.md §4.1).
    pub wal_idle_hold: Option<std::time::Duration>,
    /// How long the log must be idle before the background thread
    /// checkpoints it (`None`: [`crate::wal::IDLE_CHECKPOINT`], 100 ms;
    /// zero: never; docs/WAL.md §5). Tests that look at the log's records
    /// (and the crash tests, which must be deterministic) turn it off.
    pub wal_idle_checkpoint: Option<std::time::Duration>,
    /// Write large durable blobs past the page cache (`O_DIRECT`, default
    /// `true`; only with `sync_blob`): once more than
    /// [`crate::blob::DIRECT_FROM`] bytes of a blob have arrived, the rest
    /// goes straight to the device in aligned blocks, which on Linux runs at
    /// the disk's pace where the page cache's writeback does not (issue 17).
    /// A file system that refuses it gets buffered writes, remembered for the
    /// store. The bytes written are the same either way; a blob just written
    /// direct is read from the disk, not from the page cache.
    pub direct_blobs: bool,
    /// With `direct_blobs`: direct writes start only once this process has
    /// written more than this many bytes of durable blobs (all stores)
    /// within the last 10 to 20 s ([`crate::blob::DIRECT_VOLUME`], 1 GiB,
    /// by default; 0: from the first large blob on). Below that volume the
    /// page cache keeps up, and a blob read soon after its write is read
    /// from memory, not from the disk.
    pub direct_blobs_volume: u64,
}

/// The default of [`Options::lock_timeout`].
pub const DEFAULT_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for Options {
    fn default() -> Self {
        Options {
            sync_blob: true,
            compressor: 0,
            encryption_key: None,
            accept_plaintext: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            lock_lease: filelock::DEFAULT_LEASE,
            read_only: false,
            value_cache_bytes: crate::valuecache::DEFAULT_VALUE_CACHE_BYTES,
            wal: None,
            wal_grow_step: None,
            wal_idle_hold: None,
            wal_idle_checkpoint: None,
            direct_blobs: true,
            direct_blobs_volume: crate::blob::DIRECT_VOLUME,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("sync_blob", &self.sync_blob)
            .field("compressor", &self.compressor)
            .field("encryption_key", &self.encryption_key.as_ref().map(|_| "<redacted>"))
            .field("accept_plaintext", &self.accept_plaintext)
            .field("lock_timeout", &self.lock_timeout)
            .field("lock_lease", &self.lock_lease)
            .field("read_only", &self.read_only)
            .field("value_cache_bytes", &self.value_cache_bytes)
            .field("wal", &self.wal)
            .field("wal_grow_step", &self.wal_grow_step)
            .field("wal_idle_hold", &self.wal_idle_hold)
            .field("wal_idle_checkpoint", &self.wal_idle_checkpoint)
            .field("direct_blobs", &self.direct_blobs)
            .field("direct_blobs_volume", &self.direct_blobs_volume)
            .finish()
    }
}

impl Options {
    /// The codec new writes use.
    pub(crate) fn codec(&self) -> Codec {
        let encryptor = if self.encryption_key.is_some() { ENCRYPTOR_AES } else { ENCRYPTOR_NONE };
        Codec { compressor: self.compressor, encryptor }
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.compressor > COMPRESSOR_LZ4 {
            return Err(Error::new(ErrorCode::InvalidArgument, format!("unknown compressor id {}", self.compressor)));
        }
        if self.encryption_key.as_ref().is_some_and(|k| k.is_empty()) {
            return Err(Error::new(ErrorCode::InvalidArgument, "the encryption key is empty"));
        }
        Ok(())
    }
}

/// A key's metadata, read without its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaEntry {
    /// The key's CKE, as stored in the file.
    pub key: Vec<u8>,
    /// Serializer id of the value.
    pub serializer: u8,
    /// The metadata (a MessagePack map).
    pub meta: Vec<u8>,
    /// The key file's path.
    pub file: String,
    /// For an append log (FORMAT.md §4.6): where it stands. `None` otherwise.
    pub log: Option<LogInfo>,
}

/// `e`, the failure of a read or decode of a file opened unchecked (see
/// [`Vfs::open_read_unchecked`]), or the error that says the file is not a
/// regular one, when that is why it failed.
pub(crate) fn unless_irregular(file: &dyn VfsFile, path: &Path, e: Error) -> Error {
    match file.check_regular() {
        Err(not_regular) if not_regular.get_ref().is_some_and(|i| i.is::<crate::vfs::NotRegularFile>()) => {
            Error::io(not_regular, "cannot open the key file", path)
        }
        _ => e,
    }
}

/// The error of a read of a key file's head: a short file is truncated.
pub(crate) fn head_read_error(e: io::Error, path: &Path) -> Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::corrupt("the key file ends early").with_file(path),
        _ => Error::io(e, "cannot read the key file", path),
    }
}

/// An open key file, its size and its path.
pub(crate) type OpenKeyFile = (Box<dyn VfsFile>, u64, PathBuf);

/// An open store directory: where its key files are, on which file system,
/// with which options, and whether an fsync failed.
pub(crate) struct StoreDir {
    /// The store directory (canonical).
    pub(crate) dir: PathBuf,
    pub(crate) vfs: Arc<dyn Vfs>,
    /// Identifies the directory within this process (hash of its canonical
    /// path): two opens of one directory share in-process locks and staging
    /// registrations.
    pub(crate) id: u64,
    pub(crate) options: Options,
    /// Set when an fsync failed: the kernel may have dropped the dirty pages,
    /// so no later write may be trusted to be durable (PostgreSQL's
    /// "fsyncgate"). Cleared only by opening the store again.
    poisoned: AtomicBool,
    /// The value cache (see `valuecache.rs`): `None` when off.
    pub(crate) cache: Option<ValueCache>,
    /// Set once the file system refused a direct write (`O_DIRECT`): later
    /// blobs of this open store are written buffered.
    direct_refused: AtomicBool,
}

impl std::fmt::Debug for StoreDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDir").field("dir", &self.dir).field("options", &self.options).finish()
    }
}

impl StoreDir {
    /// The store directory `dir` (canonical), on `vfs`, with its id.
    pub(crate) fn new(dir: PathBuf, vfs: Arc<dyn Vfs>, id: u64, options: Options) -> StoreDir {
        let cache = if vfs.watchable() { ValueCache::new(&dir, options.value_cache_bytes) } else { None };
        StoreDir { dir, vfs, id, options, poisoned: AtomicBool::new(false), cache, direct_refused: AtomicBool::new(false) }
    }

    /// Whether blobs may be written direct (`O_DIRECT`): durable, not turned
    /// off, not refused by the file system yet.
    pub(crate) fn direct_blobs(&self) -> bool {
        self.options.sync_blob && self.options.direct_blobs && !self.direct_refused.load(Ordering::Relaxed)
    }

    /// Remembers that the file system refused a direct write.
    pub(crate) fn refuse_direct(&self) {
        self.direct_refused.store(true, Ordering::Relaxed);
    }

    /// The FORMAT.md §6 lock files of this directory.
    pub(crate) fn locker(&self) -> filelock::Locker<'_> {
        filelock::Locker { vfs: &*self.vfs, dir: &self.dir, lease: self.options.lock_lease }
    }

    /// A failure to take or release lock `hex`, typed (an I/O error of no
    /// more telling kind is `ERR_LOCK`) and naming the lock file.
    pub(crate) fn lock_error(&self, e: io::Error, what: &str, hex: &str) -> Error {
        let code = match ErrorCode::of_io(&e) {
            ErrorCode::Io => ErrorCode::Lock,
            c => c,
        };
        Error::io_with_code(code, e, what, self.dir.join(filelock::lock_name(hex)))
    }

    /// The store's options.
    pub(crate) fn options(&self) -> &Options {
        &self.options
    }

    /// The codec new files use: the store's compressor, and AES when it has a key.
    pub(crate) fn new_file_codec(&self) -> Codec {
        self.options.codec()
    }

    /// What decoding a segment of the key with this hash needs.
    pub(crate) fn context(&self, key_hash: u128) -> SegmentContext<'_> {
        SegmentContext { secret: self.options.encryption_key.as_deref(), key_hash, accept_plaintext: self.options.accept_plaintext }
    }

    /// The path of the file that holds `key` (given as its CKE), whether or not it exists.
    pub(crate) fn file_path(&self, key: &[u8]) -> PathBuf {
        self.dir.join(keyhash::file_name(key))
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_not_read_only()?;
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorCode::StorePoisoned,
                "an earlier fsync failed, so durability cannot be promised; reopen the store to write again",
            )
            .with_file(&self.dir));
        }
        Ok(())
    }

    /// `ERR_READ_ONLY` naming the directory if the store was opened read-only.
    pub(crate) fn check_not_read_only(&self) -> Result<()> {
        if self.options.read_only {
            return Err(Error::new(
                ErrorCode::ReadOnly,
                format!("the store is open read-only (readOnly: true): writes and locks are refused: {}", self.dir.display()),
            )
            .with_file(&self.dir));
        }
        Ok(())
    }

    /// An fsync error: poisons the store, then describes the failure.
    /// Only a failure of the fsync itself poisons: a directory that could not
    /// be opened for its fsync (`EMFILE`, `ENFILE`, `ENOMEM`) dropped nothing.
    pub(crate) fn fsync_failed(&self, err: io::Error, what: &str, path: &Path) -> Error {
        if crate::error::is_fsync_failure(&err) {
            self.poisoned.store(true, Ordering::Release);
        }
        Error::io_with_code(ErrorCode::Fsync, err, what, path)
    }

    pub(crate) fn sync_dir(&self) -> Result<()> {
        self.vfs.sync_dir(&self.dir).map_err(|e| self.fsync_failed(e, "cannot fsync the store directory", &self.dir))
    }

    /// Opens `key`'s file for reading, with its path: `None` if it does not exist.
    pub(crate) fn open_key_file(&self, key: &[u8]) -> Result<Option<(Box<dyn VfsFile>, PathBuf)>> {
        self.open_key_file_as(key, false)
    }

    /// [`open_key_file`](Self::open_key_file), the file's type unchecked when
    /// `unchecked` (see [`Vfs::open_read_unchecked`]): the caller passes its
    /// read's or decode's error through [`unless_irregular`].
    pub(crate) fn open_key_file_as(&self, key: &[u8], unchecked: bool) -> Result<Option<(Box<dyn VfsFile>, PathBuf)>> {
        key::validate(key)?;
        let path = self.file_path(key);
        let opened = if unchecked { self.vfs.open_read_unchecked(&path) } else { self.vfs.open_read(&path) };
        match opened {
            Ok(f) => Ok(Some((f, path))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(e, "cannot open the key file", &path)),
        }
    }

    /// Opens `key`'s file for reading, with its size: `None` if it does not exist.
    pub(crate) fn open_key(&self, key: &[u8]) -> Result<Option<OpenKeyFile>> {
        let Some((file, path)) = self.open_key_file(key)? else { return Ok(None) };
        let size = file.size().map_err(|e| Error::io(e, "cannot stat the key file", &path))?;
        Ok(Some((file, size, path)))
    }

    /// Opens `key`'s file and reads its head: `None` if it does not exist. A
    /// file shorter than the first read is sized by that read, so a small key
    /// costs three system calls (open, read, close), no stat.
    #[allow(clippy::type_complexity)]
    pub(crate) fn open_head(
        &self,
        key: &[u8],
        ctx: &SegmentContext<'_>,
    ) -> Result<Option<(Box<dyn VfsFile>, u64, PathBuf, Header, MetaSegment, Vec<u8>)>> {
        let Some((file, path)) = self.open_key_file(key)? else { return Ok(None) };
        let mut buf = vec![0u8; HEAD_READ];
        let got = file.read_upto_at(&mut buf, 0).map_err(|e| head_read_error(e, &path))?;
        buf.truncate(got);
        // A read shorter than asked is the whole file, if the header agrees;
        // otherwise the file system says how long the file is.
        let size = match Header::declared_len(&buf) {
            Some(len) if got < HEAD_READ && len == got as u64 => len,
            _ => file.size().map_err(|e| Error::io(e, "cannot stat the key file", &path))?,
        };
        let (header, meta, prefix) = finish_head(&*file, size, &path, ctx, buf)?;
        Ok(Some((file, size, path, header, meta, prefix)))
    }

    /// [`open_head`](Self::open_head) done only if it cannot wait for the disk:
    /// the path lookup and the head read from cached pages alone
    /// ([`Vfs::open_read_cached`], [`VfsFile::read_cached_at`]). The outer
    /// `None` means it would wait (then use `open_head` on a worker thread);
    /// `Some(None)`: the key has no file. A head longer than the first read is
    /// left to `open_head` too.
    #[allow(clippy::type_complexity)]
    pub(crate) fn open_head_now(
        &self,
        key: &[u8],
        ctx: &SegmentContext<'_>,
    ) -> Result<Option<Option<(Box<dyn VfsFile>, u64, PathBuf, Header, MetaSegment, Vec<u8>)>>> {
        key::validate(key)?;
        let path = self.file_path(key);
        let file = match self.vfs.open_read_cached(&path).and_then(|f| f.check_regular().map(|()| f)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(None)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(Error::io(e, "cannot open the key file", &path)),
        };
        let mut buf = vec![0u8; HEAD_READ];
        let got = match file.read_cached_at(&mut buf, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(head_read_error(e, &path)),
        };
        buf.truncate(got);
        // A cached read may stop short of the end: only the file's size tells.
        let size = match Header::declared_len(&buf) {
            Some(len) if got < HEAD_READ && len == got as u64 => len,
            _ => file.size().map_err(|e| Error::io(e, "cannot stat the key file", &path))?,
        };
        if (got as u64) < size.min(HEAD_READ as u64) {
            return Ok(None);
        }
        let header = Header::decode(&buf, size).map_err(|e| e.with_file(&path))?;
        if HEADER_LEN + header.meta_len as usize > buf.len() {
            return Ok(None);
        }
        let (header, meta, prefix) = finish_head(&*file, size, &path, ctx, buf)?;
        Ok(Some(Some((file, size, path, header, meta, prefix))))
    }

    /// Creates a new staging file for `key`'s file (FORMAT.md §5), registered
    /// against the open sweep before it exists: the file, its path, and the
    /// registration (held until the file is renamed or removed).
    pub(crate) fn create_staging(&self, key: &[u8]) -> Result<(Box<dyn VfsFile>, PathBuf, InFlight)> {
        let name = keyhash::file_name(key);
        self.create_staging_hex(&name[..name.len() - KEY_FILE_SUFFIX.len()])
    }

    /// [`create_staging`](Self::create_staging) for the key file `<hex>.ksv`
    /// (the write-ahead log's checkpoint knows its keys by hash only).
    pub(crate) fn create_staging_hex(&self, hex: &str) -> Result<(Box<dyn VfsFile>, PathBuf, InFlight)> {
        let stage_name = staging::staging_name(hex, std::process::id(), staging::next_seq());
        let path = self.dir.join(&stage_name);
        // Registered before it exists, so a concurrent sweep never takes it.
        let in_flight = InFlight::register(self.id, stage_name);
        let file = self.vfs.create_new(&path).map_err(|e| Error::io(e, "cannot create a staging file", &path))?;
        Ok((file, path, in_flight))
    }

    /// Writes `key`'s file whole through a new staging file (FORMAT.md §5):
    /// `fill` writes it, then fsync, rename over the key file, directory
    /// fsync (the fsyncs only with `sync_blob`). A failure leaves no staging file.
    pub(crate) fn write_whole<T>(&self, key: &[u8], fill: impl FnOnce(&mut dyn VfsFile, &Path) -> Result<T>) -> Result<T> {
        let target = self.file_path(key);
        let (mut file, stage, _in_flight) = self.create_staging(key)?;
        let mut renamed = false;
        let result = (|| {
            let out = fill(&mut *file, &stage)?;
            if self.options.sync_blob {
                file.sync().map_err(|e| self.fsync_failed(e, "cannot fsync a staging file", &stage))?;
            }
            self.vfs.rename(&stage, &target).map_err(|e| Error::io(e, "cannot rename a staging file over the key file", &target))?;
            renamed = true;
            if self.options.sync_blob {
                self.sync_dir()?;
            }
            Ok(out)
        })();
        drop(file);
        if !renamed {
            let _ = self.vfs.remove_file(&stage);
        }
        result
    }
}

/// Reads and checks the header and meta segment of an open key file; also
/// returns the bytes read from the start of the file (at least the head,
/// often the whole file), so a small value needs no second read.
pub(crate) fn read_head(file: &dyn VfsFile, size: u64, path: &Path, ctx: &SegmentContext<'_>) -> Result<(Header, MetaSegment, Vec<u8>)> {
    let first = usize::try_from(size).unwrap_or(usize::MAX).min(HEAD_READ);
    let mut buf = vec![0u8; first];
    file.read_exact_at(&mut buf, 0).map_err(|e| head_read_error(e, path))?;
    finish_head(file, size, path, ctx, buf)
}

/// [`read_head`] from the first bytes of the file, already read.
fn finish_head(
    file: &dyn VfsFile,
    size: u64,
    path: &Path,
    ctx: &SegmentContext<'_>,
    mut buf: Vec<u8>,
) -> Result<(Header, MetaSegment, Vec<u8>)> {
    let header = Header::decode(&buf, size).map_err(|e| e.with_file(path))?;
    let head_len = HEADER_LEN + header.meta_len as usize;
    if head_len > buf.len() {
        let have = buf.len();
        buf.resize(head_len, 0);
        file.read_exact_at(&mut buf[have..], have as u64).map_err(|e| head_read_error(e, path))?;
    }
    let (header, meta) = file::parse_head(&buf, size, ctx).map_err(|e| e.with_file(path))?;
    Ok((header, meta, buf))
}

/// Fails with `ERR_KEY_MISMATCH` unless the file holds `key`.
pub(crate) fn check_key(stored: &[u8], key: &[u8], path: &Path) -> Result<()> {
    if stored != key {
        return Err(Error::new(ErrorCode::KeyMismatch, "the key file holds another key than the one asked for").with_file(path));
    }
    Ok(())
}
