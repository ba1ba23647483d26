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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use crate::cke;
use crate::codec::{Codec, OsRandom, SegmentContext, COMPRESSOR_LZ4, ENCRYPTOR_AES, ENCRYPTOR_NONE};
use crate::error::{Error, ErrorCode, Result};
use crate::filelock::{self, Attempt, Locker, Record};
use crate::format::{self, HEADER_LEN};
use crate::keyhash::{self, is_key_file_name, KEY_FILE_SUFFIX};
use crate::locks::{LockId, LockTable};
use crate::staging::{self, InFlight};
use crate::vfs::{self, RealFs, Vfs, VfsFile};

/// The lock file of format versions before the per-key lock files (FORMAT.md
/// §6): no longer created or used; `delete_store` removes it, listings ignore it.
pub const LOCK_FILE_NAME: &str = ".konserve.lock";

/// The clock watermark file of a store directory (FORMAT.md §1, §7): written
/// by the facade, never a key; `delete_store` removes it.
pub const CLOCK_FILE_NAME: &str = ".konserve.clock";

/// How much of a key file `keys` and `getMeta` read in their first read:
/// the header and, for all but unusual keys, the whole meta segment.
const HEAD_READ: usize = 4096;

/// The largest file [`FileStore::read_value`] reads in one `pread` into its
/// reused per-thread buffer; larger values take the general path.
const SMALL_READ: usize = 16 * 1024;

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
            .finish()
    }
}

impl Options {
    /// The codec new writes use.
    fn codec(&self) -> Codec {
        let encryptor = if self.encryption_key.is_some() { ENCRYPTOR_AES } else { ENCRYPTOR_NONE };
        Codec { compressor: self.compressor, encryptor }
    }

    fn check(&self) -> Result<()> {
        if self.compressor > COMPRESSOR_LZ4 {
            return Err(Error::new(ErrorCode::InvalidArgument, format!("unknown compressor id {}", self.compressor)));
        }
        if self.encryption_key.as_ref().is_some_and(|k| k.is_empty()) {
            return Err(Error::new(ErrorCode::InvalidArgument, "the encryption key is empty"));
        }
        Ok(())
    }
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
    pub log: Option<crate::log::LogInfo>,
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
    pub log: Option<crate::log::LogInfo>,
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

/// The error of a read of a key file's head: a short file is truncated.
fn head_read_error(e: io::Error, path: &Path) -> Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::corrupt("the key file ends early").with_file(path),
        _ => Error::io(e, "cannot read the key file", path),
    }
}

/// An open key file, its size and its path.
pub(crate) type OpenKeyFile = (Box<dyn VfsFile>, u64, PathBuf);

/// A staging file written for a put, the key file it replaces, and its
/// registration against the sweep.
type StagedPut = (PathBuf, PathBuf, InFlight);

/// A batch of at least this many files is staged by several threads.
const PARALLEL_SYNC_MIN: usize = 4;
/// At most this many threads stage one batch.
const PARALLEL_SYNC_THREADS: usize = 8;

/// A store directory, open.
pub struct FileStore {
    pub(crate) dir: PathBuf,
    pub(crate) vfs: Arc<dyn Vfs>,
    /// The tokens of the cross-process locks this store holds, by key hash.
    held: std::sync::Mutex<std::collections::HashMap<u128, Record>>,
    /// Identifies the directory within this process (hash of its canonical
    /// path): two opens of one directory share in-process locks and staging
    /// registrations.
    pub(crate) id: u64,
    options: Options,
    /// Set when an fsync failed: the kernel may have dropped the dirty pages,
    /// so no later write may be trusted to be durable (PostgreSQL's
    /// "fsyncgate"). Cleared only by opening the store again.
    poisoned: AtomicBool,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.dir).field("options", &self.options).finish()
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
        create_dir_durably(&*vfs, dir, options.sync_blob)?;
        let dir = vfs.canonicalize(dir).map_err(|e| Error::io(e, "cannot resolve the store directory", dir))?;
        let id = xxh3_64(dir.as_os_str().as_encoded_bytes());
        let held = std::sync::Mutex::new(std::collections::HashMap::new());
        let store = FileStore { dir, vfs, held, id, options, poisoned: AtomicBool::new(false) };
        store.sweep_staging()?;
        crate::codec::keycheck::check_on_open(&store)?;
        Ok(store)
    }

    /// The store directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store's options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// What decoding a segment of the key with this hash needs.
    pub(crate) fn context(&self, key_hash: u128) -> SegmentContext<'_> {
        SegmentContext { secret: self.options.encryption_key.as_deref(), key_hash, accept_plaintext: self.options.accept_plaintext }
    }

    /// The path of the file that holds `key` (given as its CKE), whether or not it exists.
    pub fn file_path(&self, key: &[u8]) -> PathBuf {
        self.dir.join(keyhash::file_name(key))
    }

    /// Removes staging files that no live write owns: those of dead processes,
    /// and those of this process that no write of this store has in flight
    /// (a previous process that had our pid). Nothing else is touched.
    fn sweep_staging(&self) -> Result<()> {
        let names = self.vfs.read_dir(&self.dir).map_err(|e| Error::io(e, "cannot list the store directory", &self.dir))?;
        let me = std::process::id();
        let mut removed = false;
        for name in &names {
            let Some(name) = name.to_str() else { continue };
            let Some((pid, _)) = staging::parse_staging_name(name) else { continue };
            let path = self.dir.join(name);
            let mut remove = || {
                // A failure here only leaves garbage behind; it never loses data.
                if self.vfs.remove_file(&path).is_ok() {
                    removed = true;
                }
            };
            if pid == me {
                staging::remove_unless_in_flight(self.id, name, remove);
            } else if !self.vfs.process_alive(pid) {
                remove();
            }
        }
        // Lock temp files and takeover markers nobody can use any more.
        if self.locker().sweep(&names) {
            removed = true;
        }
        if removed && self.options.sync_blob {
            self.sync_dir()?;
        }
        Ok(())
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorCode::StorePoisoned,
                "an earlier fsync failed, so durability cannot be promised; reopen the store to write again",
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
    fn open_key_file(&self, key: &[u8]) -> Result<Option<(Box<dyn VfsFile>, PathBuf)>> {
        cke::validate(key)?;
        let path = self.file_path(key);
        match self.vfs.open_read(&path) {
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

    /// Reads and checks the header and meta segment of an open key file; also
    /// returns the bytes read from the start of the file (at least the head,
    /// often the whole file), so a small value needs no second read.
    pub(crate) fn read_head(
        file: &dyn VfsFile,
        size: u64,
        path: &Path,
        ctx: &SegmentContext<'_>,
    ) -> Result<(format::Header, format::MetaSegment, Vec<u8>)> {
        let first = usize::try_from(size).unwrap_or(usize::MAX).min(HEAD_READ);
        let mut buf = vec![0u8; first];
        file.read_exact_at(&mut buf, 0).map_err(|e| head_read_error(e, path))?;
        Self::finish_head(file, size, path, ctx, buf)
    }

    /// [`read_head`](Self::read_head) from the first bytes of the file, already read.
    fn finish_head(
        file: &dyn VfsFile,
        size: u64,
        path: &Path,
        ctx: &SegmentContext<'_>,
        mut buf: Vec<u8>,
    ) -> Result<(format::Header, format::MetaSegment, Vec<u8>)> {
        let header = format::Header::decode(&buf, size).map_err(|e| e.with_file(path))?;
        let head_len = HEADER_LEN + header.meta_len as usize;
        if head_len > buf.len() {
            let have = buf.len();
            buf.resize(head_len, 0);
            file.read_exact_at(&mut buf[have..], have as u64).map_err(|e| head_read_error(e, path))?;
        }
        let (header, meta) = format::parse_head(&buf, size, ctx).map_err(|e| e.with_file(path))?;
        Ok((header, meta, buf))
    }

    /// Opens `key`'s file and reads its head: `None` if it does not exist. A
    /// file shorter than the first read is sized by that read, so a small key
    /// costs three system calls (open, read, close), no stat.
    #[allow(clippy::type_complexity)]
    fn open_head(
        &self,
        key: &[u8],
        ctx: &SegmentContext<'_>,
    ) -> Result<Option<(Box<dyn VfsFile>, u64, PathBuf, format::Header, format::MetaSegment, Vec<u8>)>> {
        let Some((file, path)) = self.open_key_file(key)? else { return Ok(None) };
        let mut buf = vec![0u8; HEAD_READ];
        let got = file.read_upto_at(&mut buf, 0).map_err(|e| head_read_error(e, &path))?;
        buf.truncate(got);
        // A read shorter than asked is the whole file, if the header agrees;
        // otherwise the file system says how long the file is.
        let size = match format::Header::declared_len(&buf) {
            Some(len) if got < HEAD_READ && len == got as u64 => len,
            _ => file.size().map_err(|e| Error::io(e, "cannot stat the key file", &path))?,
        };
        let (header, meta, prefix) = Self::finish_head(&*file, size, &path, ctx, buf)?;
        Ok(Some((file, size, path, header, meta, prefix)))
    }

    /// Fails with `ERR_KEY_MISMATCH` unless the file holds `key`.
    pub(crate) fn check_key(stored: &[u8], key: &[u8], path: &Path) -> Result<()> {
        if stored != key {
            return Err(Error::new(ErrorCode::KeyMismatch, "the key file holds another key than the one asked for").with_file(path));
        }
        Ok(())
    }

    /// The record of `key` (its CKE), or `None` if the key does not exist.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let ctx = self.context(keyhash::key_hash(key));
        let Some((file, size, path, header, meta, prefix)) = self.open_head(key, &ctx)? else { return Ok(None) };
        Self::check_key(&meta.key, key, &path)?;
        if header.is_log() {
            // An append log (FORMAT.md §4.6): no value; its records are read with a log cursor.
            let info = crate::log::log_info(&*file, size, &path, &header, &prefix, &ctx)?;
            return Ok(Some(Entry { serializer: header.serializer, meta: meta.meta, value: Vec::new(), log: Some(info) }));
        }
        if header.flags == format::FLAG_CHUNKED {
            // A chunked blob (FORMAT.md §4.5): the whole blob, every chunk checked.
            let value = crate::blob::read_chunked_value(&*file, &prefix, &path, &header, &ctx)?;
            return Ok(Some(Entry { serializer: header.serializer, meta: meta.meta, value, log: None }));
        }
        let offset = HEADER_LEN + header.meta_len as usize;
        let len = usize::try_from(header.value_len)
            .map_err(|_| Error::new(ErrorCode::InvalidArgument, "the value is too large for this platform").with_file(&path))?;
        // The first read usually held the whole file already.
        if let Some(stored) = prefix.get(offset..offset + len) {
            let value = format::decode_value_owned(&header, &ctx, stored.to_vec()).map_err(|e| e.with_file(&path))?;
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
        let value = format::decode_value_owned(&header, &ctx, stored).map_err(|e| e.with_file(&path))?;
        Ok(Some(Entry { serializer: header.serializer, meta: meta.meta, value, log: None }))
    }

    /// The hot read, into the caller's memory: `key`'s whole file is read into
    /// `buf` with one `pread` and decoded there, so a small plain value costs
    /// open, read, close and no copy at all. Every check of [`get`](Self::get)
    /// applies: header, checksums, the stored key. A file that does not fit in
    /// `buf` whole (or a chunked blob) is [`ValueInto::TooLarge`]: read it with `get`.
    pub fn read_value_into(&self, key: &[u8], buf: &mut [u8]) -> Result<ValueInto> {
        let Some((file, path)) = self.open_key_file(key)? else { return Ok(ValueInto::Missing) };
        let got = file.read_upto_at(buf, 0).map_err(|e| head_read_error(e, &path))?;
        drop(file);
        self.decode_read(key, &path, buf, got)
    }

    /// [`read_value_into`](Self::read_value_into), done only if it cannot wait
    /// for the disk: the path lookup and the read from cached pages alone
    /// ([`Vfs::open_read_cached`], [`VfsFile::read_cached_at`]). `None` when it
    /// would wait: the caller then reads on a worker thread. So an async `get`
    /// of a cached key is answered at once, without a thread hop, and still
    /// never blocks its event loop on the disk.
    pub fn read_value_into_now(&self, key: &[u8], buf: &mut [u8]) -> Result<Option<ValueInto>> {
        cke::validate(key)?;
        let path = self.file_path(key);
        let file = match self.vfs.open_read_cached(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(ValueInto::Missing)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(Error::io(e, "cannot open the key file", &path)),
        };
        let got = match file.read_cached_at(buf, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(head_read_error(e, &path)),
        };
        // A cached read may stop short of the end: only the file's size tells.
        if got < buf.len() && file.size().map_err(|e| Error::io(e, "cannot stat the key file", &path))? != got as u64 {
            return Ok(None);
        }
        drop(file);
        self.decode_read(key, &path, buf, got).map(Some)
    }

    /// Decodes a key file that a read put in `buf[..got]` (see [`read_value_into`](Self::read_value_into)).
    fn decode_read(&self, key: &[u8], path: &Path, buf: &mut [u8], got: usize) -> Result<ValueInto> {
        // Only a file that the read held whole (a short read), as its header says.
        if got == buf.len() || format::Header::declared_len(&buf[..got]) != Some(got as u64) {
            return Ok(ValueInto::TooLarge);
        }
        let whole = &buf[..got];
        let ctx = self.context(keyhash::key_hash(key));
        let header = format::Header::decode(whole, got as u64).map_err(|e| e.with_file(path))?;
        if header.flags == format::FLAG_CHUNKED {
            return Ok(ValueInto::TooLarge);
        }
        let value_at = HEADER_LEN + header.meta_len as usize;
        let meta = format::decode_meta_plain(&header, &ctx, &whole[HEADER_LEN..value_at]).map_err(|e| e.with_file(path))?;
        let (stored_key, _) = format::split_meta(&meta).map_err(|e| e.with_file(path))?;
        Self::check_key(stored_key, key, path)?;
        let serializer = header.serializer;
        if header.is_log() {
            return Ok(ValueInto::Found { serializer, log: true, start: 0, len: 0 });
        }
        let plain = match format::decode_value_plain(&header, &ctx, &whole[value_at..]).map_err(|e| e.with_file(path))? {
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
        let ctx = self.context(keyhash::key_hash(key));
        let Some((file, size, path, header, meta, prefix)) = self.open_head(key, &ctx)? else { return Ok(None) };
        Self::check_key(&meta.key, key, &path)?;
        let log = if header.is_log() { Some(crate::log::log_info(&*file, size, &path, &header, &prefix, &ctx)?) } else { None };
        Ok(Some(MetaEntry { key: meta.key, serializer: header.serializer, meta: meta.meta, file: path.display().to_string(), log }))
    }

    /// Whether `key` has a file.
    pub fn exists(&self, key: &[u8]) -> Result<bool> {
        cke::validate(key)?;
        let path = self.file_path(key);
        self.vfs.exists(&path).map_err(|e| Error::io(e, "cannot look up the key file", &path))
    }

    /// Writes every entry: each to a new staging file, written whole and
    /// fsynced; then each renamed over its key file; then one directory fsync.
    /// Returns only when all of it is durable (with `sync_blob`). Each key is
    /// replaced atomically; a batch is not (a crash may keep some keys' new
    /// values and others' old ones). The caller holds the keys' locks.
    pub fn put(&self, writes: &[Write<'_>]) -> Result<()> {
        self.check_writable()?;
        for w in writes {
            cke::validate(w.key)?;
        }
        let mut staged: Vec<StagedPut> = Vec::with_capacity(writes.len());
        let result = self.stage_all(writes, &mut staged).and_then(|()| self.commit(&mut staged));
        // Whatever was not renamed is removed: a failed write leaves no trace.
        for (stage, _, _) in &staged {
            let _ = self.vfs.remove_file(stage);
        }
        result
    }

    /// Writes each entry to its own new staging file and (when durable) fsyncs
    /// it. A large batch (a group commit) is staged by several threads at
    /// once: creating, writing and syncing many small files is latency-bound,
    /// and the file system makes many of them durable in one journal commit.
    /// Every staging file created, even on failure, ends up in `staged`, so the
    /// caller removes what was not renamed.
    fn stage_all(&self, writes: &[Write<'_>], staged: &mut Vec<StagedPut>) -> Result<()> {
        if writes.len() < PARALLEL_SYNC_MIN || !self.vfs.parallel_sync() {
            return writes.iter().try_for_each(|w| self.stage_one(w, staged));
        }
        let threads = writes.len().min(PARALLEL_SYNC_THREADS);
        let per_thread = writes.len().div_ceil(threads);
        let results: Vec<(Vec<StagedPut>, Result<()>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = writes
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || {
                        let mut mine = Vec::with_capacity(part.len());
                        let r = part.iter().try_for_each(|w| self.stage_one(w, &mut mine));
                        (mine, r)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| (Vec::new(), Err(Error::new(ErrorCode::Io, "a staging thread panicked")))))
                .collect()
        });
        let mut first = Ok(());
        for (mine, r) in results {
            staged.extend(mine);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Stages one entry: a new staging file, written whole, fsynced when durable.
    fn stage_one(&self, w: &Write<'_>, staged: &mut Vec<StagedPut>) -> Result<()> {
        let target = self.file_path(w.key);
        let secret = self.options.encryption_key.as_deref();
        let file = format::encode_parts(self.options.codec(), secret, w.key, w.serializer, w.meta, w.value, &mut OsRandom)
            .map_err(|e| e.with_file(&target))?;
        let name = keyhash::file_name(w.key);
        let hex = &name[..name.len() - KEY_FILE_SUFFIX.len()];
        let stage_name = staging::staging_name(hex, std::process::id(), staging::next_seq());
        let stage = self.dir.join(&stage_name);
        // Registered before it exists, so a concurrent sweep never takes it.
        let in_flight = InFlight::register(self.id, stage_name);
        let mut f = self.vfs.create_new(&stage).map_err(|e| Error::io(e, "cannot create a staging file", &stage))?;
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
        if self.options.sync_blob {
            f.sync().map_err(|e| self.fsync_failed(e, "cannot fsync a staging file", &stage))?;
        }
        Ok(())
    }

    /// Renames every staged file over its target, then fsyncs the directory.
    /// Renamed entries leave `staged`, so the caller removes only what is left.
    fn commit(&self, staged: &mut Vec<StagedPut>) -> Result<()> {
        while !staged.is_empty() {
            let (stage, target, _) = &staged[0];
            self.vfs.rename(stage, target).map_err(|e| Error::io(e, "cannot rename a staging file over the key file", target))?;
            staged.remove(0);
        }
        if self.options.sync_blob {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Deletes each key (given as its CKE); returns whether each existed. One
    /// directory fsync makes all the deletions durable before this returns.
    pub fn delete(&self, keys: &[&[u8]]) -> Result<Vec<bool>> {
        self.check_writable()?;
        for k in keys {
            cke::validate(k)?;
        }
        let mut existed = Vec::with_capacity(keys.len());
        for k in keys {
            let path = self.file_path(k);
            match self.vfs.remove_file(&path) {
                Ok(()) => existed.push(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => existed.push(false),
                Err(e) => return Err(Error::io(e, "cannot delete the key file", &path)),
            }
        }
        if self.options.sync_blob && existed.iter().any(|&b| b) {
            self.sync_dir()?;
        }
        Ok(existed)
    }

    /// Reads the header and metadata of every key file, one file open at a
    /// time. Files that are not key files are ignored; key files that cannot
    /// be read are reported in [`ListResult::corrupt`]; nothing is changed.
    pub fn list(&self) -> Result<ListResult> {
        let names = self.vfs.read_dir(&self.dir).map_err(|e| Error::io(e, "cannot list the store directory", &self.dir))?;
        let mut out = ListResult::default();
        for name in names {
            self.list_name(&name, &mut out);
        }
        Ok(out)
    }

    /// A streaming [`list`](Self::list): the directory is read as it goes
    /// (`readdir`, no full name list), each batch holds at most `max` key
    /// files' metadata, one file open at a time. The same rules as `list`:
    /// foreign files are skipped, unreadable key files reported, nothing changed.
    /// A key written or deleted while the cursor runs may or may not be seen.
    pub fn list_cursor(self: &Arc<Self>) -> Result<ListCursor> {
        let names = self.vfs.read_dir_iter(&self.dir).map_err(|e| Error::io(e, "cannot list the store directory", &self.dir))?;
        Ok(ListCursor { store: Arc::clone(self), names: Some(names) })
    }

    /// Lists one directory entry into `out` if it is a key file.
    fn list_name(&self, name: &std::ffi::OsStr, out: &mut ListResult) -> bool {
        let Some(name) = name.to_str() else { return false };
        if !is_key_file_name(name) {
            return false;
        }
        let path = self.dir.join(name);
        match self.list_one(&path, name) {
            Ok(Some(entry)) => out.entries.push(entry),
            Ok(None) => return false, // deleted since the directory was read
            Err(e) => out.corrupt.push(e),
        }
        true
    }

    fn list_one(&self, path: &Path, name: &str) -> Result<Option<MetaEntry>> {
        let file = match self.vfs.open_read(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(e, "cannot open the key file", path)),
        };
        let size = file.size().map_err(|e| Error::io(e, "cannot stat the key file", path))?;
        // A key file's name is the hex of its key's hash (checked by is_key_file_name).
        let key_hash = u128::from_str_radix(&name[..32], 16).expect("32 lowercase hex digits");
        let ctx = self.context(key_hash);
        let (header, meta, prefix) = Self::read_head(&*file, size, path, &ctx)?;
        cke::validate(&meta.key).map_err(|e| Error::corrupt(format!("the stored key is invalid: {e}")).with_file(path))?;
        if keyhash::file_name(&meta.key) != name {
            return Err(Error::new(ErrorCode::KeyMismatch, "the key file holds a key whose name is another file's").with_file(path));
        }
        let log = if header.is_log() { Some(crate::log::log_info(&*file, size, path, &header, &prefix, &ctx)?) } else { None };
        Ok(Some(MetaEntry { key: meta.key, serializer: header.serializer, meta: meta.meta, file: path.display().to_string(), log }))
    }

    /// The lock ids of `keys`, sorted and without duplicates: every holder
    /// takes locks in the order of their lock file names, so two multi-key
    /// writers cannot deadlock.
    fn lock_ids(&self, keys: &[&[u8]]) -> Result<Vec<LockId>> {
        let mut ids = Vec::with_capacity(keys.len());
        for k in keys {
            cke::validate(k)?;
            ids.push((self.id, keyhash::key_hash(k)));
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn locker(&self) -> Locker<'_> {
        Locker { vfs: &*self.vfs, dir: &self.dir, lease: self.options.lock_lease }
    }

    fn lock_error(&self, e: io::Error, what: &str, hex: &str) -> Error {
        let code = match ErrorCode::of_io(&e) {
            ErrorCode::Io => ErrorCode::Lock,
            c => c,
        };
        Error::io_with_code(code, e, what, self.dir.join(filelock::lock_name(hex)))
    }

    fn timeout_error(&self, hex: &str, holder: &str) -> Error {
        Error::new(
            ErrorCode::LockTimeout,
            format!(
                "a key stayed locked by {holder} for longer than the lock timeout ({} ms); lock file {}",
                self.options.lock_timeout.as_millis(),
                self.dir.join(filelock::lock_name(hex)).display()
            ),
        )
        .with_file(self.dir.join(filelock::lock_name(hex)))
    }

    /// One attempt at one key's cross-process lock (the in-process one held).
    fn try_file_lock(&self, hash: u128) -> Result<std::result::Result<(), Option<Record>>> {
        let hex = format!("{hash:032x}");
        match self.locker().try_acquire(&hex) {
            Ok(Attempt::Taken(rec)) => {
                self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(hash, rec);
                Ok(Ok(()))
            }
            Ok(Attempt::Busy(holder)) => Ok(Err(holder)),
            Err(e) => Err(self.lock_error(e, "cannot take a key's lock", &hex)),
        }
    }

    /// Locks every key against every other holder, in this process (any
    /// thread) and in others, waiting at most the lock timeout
    /// (`ERR_LOCK_TIMEOUT`, naming the holder).
    pub fn lock(&self, keys: &[&[u8]]) -> Result<()> {
        let ids = self.lock_ids(keys)?;
        let deadline = std::time::Instant::now() + self.options.lock_timeout;
        let table = LockTable::global();
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
                    Ok(Ok(())) => break,
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
        let ids = self.lock_ids(keys)?;
        let timed_out = waited.is_some_and(|w| w >= self.options.lock_timeout);
        let table = LockTable::global();
        for (i, &id) in ids.iter().enumerate() {
            let hex = format!("{:032x}", id.1);
            if !table.try_lock(id) {
                let _ = self.release(&ids[..i]);
                return if timed_out { Err(self.timeout_error(&hex, "another thread of this process")) } else { Ok(false) };
            }
            match self.try_file_lock(id.1) {
                Ok(Ok(())) => {}
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
            if let Some(rec) = rec {
                let hex = format!("{:032x}", id.1);
                if let Err(e) = self.locker().release(&hex, &rec.token) {
                    first.get_or_insert_with(|| self.lock_error(e, "cannot release a key's lock", &hex));
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
}

impl std::fmt::Debug for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListCursor").field("dir", &self.store.dir).field("done", &self.names.is_none()).finish()
    }
}

impl ListCursor {
    /// The next batch of at most `max` (at least 1) key files: `None` when the
    /// directory is exhausted. A batch may hold fewer than `max` only at the end.
    pub fn next_batch(&mut self, max: usize) -> Result<Option<ListResult>> {
        let max = max.max(1);
        let Some(names) = self.names.as_mut() else { return Ok(None) };
        let mut out = ListResult::default();
        let mut n = 0;
        while n < max {
            match names.next() {
                Some(Ok(name)) => {
                    if self.store.list_name(&name, &mut out) {
                        n += 1;
                    }
                }
                Some(Err(e)) => {
                    self.names = None;
                    return Err(Error::io(e, "cannot list the store directory", &self.store.dir));
                }
                None => {
                    self.names = None;
                    break;
                }
            }
        }
        if n == 0 && self.names.is_none() {
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// Releases the directory handle; later batches are `None`.
    pub fn close(&mut self) {
        self.names = None;
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
                || n == crate::codec::keycheck::KEY_CHECK_FILE_NAME
                || n == crate::codec::keycheck::REKEY_FILE_NAME
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
    use super::*;
    use crate::cke::{encode, Key};
    use std::fs;

    fn key(s: &str) -> Vec<u8> {
        encode(&Key::str(s))
    }

    fn open(dir: &Path) -> FileStore {
        FileStore::open(dir, Options::default()).unwrap()
    }

    fn put1(store: &FileStore, k: &[u8], value: &[u8]) {
        store.put(&[Write { key: k, serializer: 1, meta: b"\x80", value }]).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn put_get_meta_exists_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let k = key("a");
        assert_eq!(store.get(&k).unwrap(), None);
        assert!(!store.exists(&k).unwrap());
        put1(&store, &k, b"value");
        let e = store.get(&k).unwrap().unwrap();
        assert_eq!(e, Entry { serializer: 1, meta: b"\x80".to_vec(), value: b"value".to_vec(), log: None });
        let m = store.get_meta(&k).unwrap().unwrap();
        assert_eq!(m.key, k);
        assert!(m.file.ends_with(&keyhash::file_name(&k)));
        assert!(store.exists(&k).unwrap());
        put1(&store, &k, b"second");
        assert_eq!(store.get(&k).unwrap().unwrap().value, b"second");
        assert_eq!(store.delete(&[&k, &key("missing")]).unwrap(), vec![true, false]);
        assert_eq!(store.get(&k).unwrap(), None);
        // Nothing is left: no staging file, no placeholder, no lock file.
        assert_eq!(names(tmp.path()), Vec::<String>::new());
    }

    #[test]
    fn read_value_into_finds_values_in_place_and_sends_large_ones_to_get() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        put1(&store, &key("a"), b"value");
        let mut buf = vec![0u8; 4096];
        let ValueInto::Found { serializer, log, start, len } = store.read_value_into(&key("a"), &mut buf).unwrap() else {
            panic!("not found")
        };
        assert_eq!((serializer, log, &buf[start..start + len]), (1, false, &b"value"[..]));
        assert_eq!(store.read_value_into(&key("missing"), &mut buf).unwrap(), ValueInto::Missing);
        put1(&store, &key("big"), &[7u8; 5000]);
        assert_eq!(store.read_value_into(&key("big"), &mut buf).unwrap(), ValueInto::TooLarge);
        // The lent form reads both, the large one through get.
        assert_eq!(store.read_value(&key("big"), |v| v.bytes.len()).unwrap(), Some(5000));
        assert_eq!(store.read_value(&key("a"), |v| v.bytes.to_vec()).unwrap(), Some(b"value".to_vec()));
        // A file holding another key is refused here too.
        fs::copy(store.file_path(&key("a")), store.file_path(&key("b"))).unwrap();
        assert_eq!(store.read_value_into(&key("b"), &mut buf).unwrap_err().code(), ErrorCode::KeyMismatch);
    }

    /// The cached-only read answers from the page cache, and says "would
    /// block" once the file's pages are dropped, instead of reading the disk.
    #[cfg(target_os = "linux")]
    #[test]
    fn read_value_into_now_never_waits_for_the_disk() {
        use std::os::unix::io::AsRawFd;
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        put1(&store, &key("a"), b"value");
        let mut buf = vec![0u8; 4096];
        let cached = store.read_value_into_now(&key("a"), &mut buf).unwrap();
        let Some(ValueInto::Found { start, len, .. }) = cached else { panic!("a cached file must be read at once: {cached:?}") };
        assert_eq!(&buf[start..start + len], b"value");
        // Missing keys are answered at once too (the negative lookup is cached after a first miss).
        let _ = store.read_value_into(&key("missing"), &mut buf).unwrap();
        assert_eq!(store.read_value_into_now(&key("missing"), &mut buf).unwrap(), Some(ValueInto::Missing));
        // Drop the file's (clean, fsynced) pages: the cached-only read must not wait for them.
        let f = fs::File::open(store.file_path(&key("a"))).unwrap();
        // SAFETY: a valid descriptor; advice only.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0);
        assert_eq!(store.read_value_into_now(&key("a"), &mut buf).unwrap(), None);
        // The blocking read brings the pages back.
        assert!(matches!(store.read_value_into(&key("a"), &mut buf).unwrap(), ValueInto::Found { .. }));
        assert!(matches!(store.read_value_into_now(&key("a"), &mut buf).unwrap(), Some(ValueInto::Found { .. })));
    }

    #[test]
    fn invalid_keys_are_refused_and_write_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        for bad in [&b""[..], b"\x09", b"\x05\x00\x00\x00\x05a"] {
            assert_eq!(store.get(bad).unwrap_err().code(), ErrorCode::InvalidKey);
            let w = Write { key: bad, serializer: 1, meta: b"", value: b"" };
            assert_eq!(store.put(&[w]).unwrap_err().code(), ErrorCode::InvalidKey);
            assert_eq!(store.lock(&[bad]).unwrap_err().code(), ErrorCode::InvalidKey);
        }
        assert_eq!(names(tmp.path()), Vec::<String>::new());
    }

    #[test]
    fn large_and_empty_values_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let big: Vec<u8> = (0..(3 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        put1(&store, &key("big"), &big);
        put1(&store, &key("empty"), b"");
        assert_eq!(store.get(&key("big")).unwrap().unwrap().value, big);
        assert_eq!(store.get(&key("empty")).unwrap().unwrap().value, b"");
        // A key longer than the first head read.
        let long = key(&"k".repeat(100_000));
        put1(&store, &long, b"x");
        assert_eq!(store.get_meta(&long).unwrap().unwrap().key, long);
        assert_eq!(store.list().unwrap().entries.len(), 3);
    }

    #[test]
    fn corrupt_and_moved_files_are_typed_errors_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let (a, b) = (key("a"), key("b"));
        put1(&store, &a, b"aaaa");
        put1(&store, &b, b"bbbb");
        let pa = store.file_path(&a);
        let pb = store.file_path(&b);
        // b's file now holds a's bytes.
        fs::copy(&pa, &pb).unwrap();
        let err = store.get(&b).unwrap_err();
        assert_eq!(err.code(), ErrorCode::KeyMismatch);
        assert_eq!(err.file(), Some(pb.as_path()));
        let listing = store.list().unwrap();
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.corrupt[0].code(), ErrorCode::KeyMismatch);
        // Flip the last byte of a's value.
        let mut bytes = fs::read(&pa).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&pa, &bytes).unwrap();
        let err = store.get(&a).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Corrupt);
        assert_eq!(err.file(), Some(pa.as_path()));
        assert_eq!(fs::read(&pa).unwrap(), bytes, "a failed read changes nothing");
        // The meta segment is still whole, so the metadata reads.
        assert!(store.get_meta(&a).unwrap().is_some());
        // Truncated inside the header.
        fs::write(&pa, &bytes[..20]).unwrap();
        assert_eq!(store.get(&a).unwrap_err().code(), ErrorCode::Corrupt);
        assert_eq!(store.get_meta(&a).unwrap_err().code(), ErrorCode::Corrupt);
    }

    #[test]
    fn list_ignores_foreign_files_and_never_changes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        put1(&store, &key("real"), b"1");
        let foreign = [".nfs0001", "notes.txt", "abc.ksv", "0123456789abcdef0123456789abcdef.ksv~"];
        for f in foreign {
            fs::write(tmp.path().join(f), b"not konserve").unwrap();
        }
        let listing = store.list().unwrap();
        assert_eq!(listing.entries.len(), 1);
        assert!(listing.corrupt.is_empty());
        drop(store);
        let _again = open(tmp.path());
        for f in foreign {
            assert_eq!(fs::read(tmp.path().join(f)).unwrap(), b"not konserve");
        }
    }

    #[test]
    fn open_sweeps_dead_writers_staging_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        put1(&store, &key("kept"), b"1");
        drop(store);
        let hex = "0123456789abcdef0123456789abcdef";
        // pid 2^31 - 1 is beyond Linux's pid_max: certainly dead.
        let dead = staging::staging_name(hex, (1 << 31) - 1, 0);
        // Our own pid, but no write in flight: a previous process with our pid.
        let stale_own = staging::staging_name(hex, std::process::id(), u64::MAX);
        // pid 1 is alive: its staging file must stay.
        let live = staging::staging_name(hex, 1, 0);
        for n in [&dead, &stale_own, &live] {
            fs::write(tmp.path().join(n), b"partial").unwrap();
        }
        let store = open(tmp.path());
        let left = names(tmp.path());
        assert!(!left.contains(&dead));
        assert!(!left.contains(&stale_own));
        assert!(left.contains(&live));
        assert_eq!(store.get(&key("kept")).unwrap().unwrap().value, b"1");
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
        assert_eq!(LockTable::global().len_of(store.id), 0, "the lock table holds no slot for released keys");
    }

    fn with_codec(compressor: u8, key: Option<&str>) -> Options {
        Options { compressor, encryption_key: key.map(|k| k.as_bytes().to_vec()), ..Options::default() }
    }

    #[test]
    fn every_codec_combination_round_trips_and_reads_the_others() {
        let tmp = tempfile::tempdir().unwrap();
        let combos = [(0, None), (1, None), (0, Some("s3cr3t")), (1, Some("s3cr3t"))];
        let value: Vec<u8> = b"PLAINTEXT-MARKER ".repeat(1000);
        for (i, &(c, k)) in combos.iter().enumerate() {
            // The keyed stores migrate: they open a directory with plaintext files.
            let store = FileStore::open(tmp.path(), Options { accept_plaintext: k.is_some(), ..with_codec(c, k) }).unwrap();
            let key = key(&format!("k{i}"));
            store.put(&[Write { key: &key, serializer: 1, meta: b"\x80", value: &value }]).unwrap();
            assert_eq!(store.get(&key).unwrap().unwrap().value, value);
            let bytes = fs::read(store.file_path(&key)).unwrap();
            assert_eq!((bytes[6], bytes[7]), (c, u8::from(k.is_some())), "header ids");
            if c == 1 {
                assert!(bytes.len() < value.len() / 10, "LZ4 shrinks a repetitive value");
            }
            if k.is_some() {
                assert!(!bytes.windows(16).any(|w| w == b"PLAINTEXT-MARKER"), "no plaintext on disk");
            }
        }
        // A store with the key reads every encrypted file, whatever compressor
        // wrote it; plaintext ones only with accept_plaintext (a migration).
        let strict = FileStore::open(tmp.path(), with_codec(1, Some("s3cr3t"))).unwrap();
        assert_eq!(strict.list().unwrap().entries.len(), 2);
        assert_eq!(strict.get(&key("k0")).unwrap_err().code(), ErrorCode::Decrypt);
        let reader = FileStore::open(tmp.path(), Options { accept_plaintext: true, ..with_codec(1, Some("s3cr3t")) }).unwrap();
        assert_eq!(reader.list().unwrap().entries.len(), 4);
        for i in 0..4 {
            assert_eq!(reader.get(&key(&format!("k{i}"))).unwrap().unwrap().value, value);
        }
    }

    #[test]
    fn wrong_or_missing_key_is_a_typed_error_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path(), with_codec(1, Some("right"))).unwrap();
        put1(&store, &key("secret"), b"value");
        let path = store.file_path(&key("secret"));
        let before = fs::read(&path).unwrap();
        // The key check refuses both opens (FORMAT.md §4.7) ...
        for opts in [with_codec(0, Some("wrong")), with_codec(0, None)] {
            assert_eq!(FileStore::open(tmp.path(), opts).unwrap_err().code(), ErrorCode::Decrypt);
        }
        // ... and without it (a store from before key checks) every read fails alike.
        fs::remove_file(tmp.path().join(crate::codec::keycheck::KEY_CHECK_FILE_NAME)).unwrap();
        for opts in [with_codec(0, None), with_codec(0, Some("wrong"))] {
            let other = FileStore::open(tmp.path(), opts.clone()).unwrap_or_else(|e| {
                assert!(opts.encryption_key.is_some(), "{e}");
                assert_eq!(e.code(), ErrorCode::Decrypt, "a wrong key does not adopt the store: {e}");
                FileStore::open(tmp.path(), with_codec(0, None)).unwrap()
            });
            let err = other.get(&key("secret")).unwrap_err();
            assert_eq!(err.code(), ErrorCode::Decrypt);
            assert_eq!(err.file(), Some(path.as_path()));
            assert_eq!(other.get_meta(&key("secret")).unwrap_err().code(), ErrorCode::Decrypt);
            let listing = other.list().unwrap();
            assert!(listing.entries.is_empty());
            assert_eq!(listing.corrupt[0].code(), ErrorCode::Decrypt);
        }
        assert_eq!(fs::read(&path).unwrap(), before);
        // An encrypted file copied over another key's file does not authenticate there.
        put1(&store, &key("other"), b"x");
        fs::copy(&path, store.file_path(&key("other"))).unwrap();
        assert_eq!(store.get(&key("other")).unwrap_err().code(), ErrorCode::Decrypt);
    }

    #[test]
    fn bad_options_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(FileStore::open(tmp.path(), with_codec(2, None)).unwrap_err().code(), ErrorCode::InvalidArgument);
        assert_eq!(FileStore::open(tmp.path(), with_codec(0, Some(""))).unwrap_err().code(), ErrorCode::InvalidArgument);
        assert!(!format!("{:?}", with_codec(0, Some("hunter2"))).contains("hunter2"), "Debug never prints the key");
    }

    #[test]
    fn sync_blob_false_writes_the_same_bytes() {
        let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let s1 = open(t1.path());
        let s2 = FileStore::open(t2.path(), Options { sync_blob: false, ..Options::default() }).unwrap();
        put1(&s1, &key("k"), b"v");
        put1(&s2, &key("k"), b"v");
        assert_eq!(fs::read(s1.file_path(&key("k"))).unwrap(), fs::read(s2.file_path(&key("k"))).unwrap());
    }

    #[test]
    fn delete_store_removes_konserve_files_and_keeps_foreign_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let store = open(&dir);
        put1(&store, &key("a"), b"1");
        drop(store);
        delete_store(&dir).unwrap();
        assert!(!dir.exists());
        delete_store(&dir).unwrap(); // missing: fine

        let store = open(&dir);
        put1(&store, &key("a"), b"1");
        fs::write(dir.join("mine.txt"), b"keep").unwrap();
        delete_store(&dir).unwrap();
        assert_eq!(names(&dir), vec!["mine.txt".to_string()]);
    }

    #[test]
    fn list_cursor_streams_batches_with_the_rules_of_list() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(open(tmp.path()));
        for i in 0..25 {
            put1(&store, &key(&format!("k{i}")), b"v");
        }
        // A foreign file, a clock file and a corrupt key file.
        fs::write(tmp.path().join("notes.txt"), b"x").unwrap();
        fs::write(tmp.path().join(CLOCK_FILE_NAME), b"1\n").unwrap();
        let bad = store.file_path(&key("k3"));
        fs::write(&bad, b"garbage").unwrap();
        let mut cursor = store.list_cursor().unwrap();
        let (mut entries, mut corrupt, mut batches) = (Vec::new(), Vec::new(), 0);
        while let Some(b) = cursor.next_batch(10).unwrap() {
            assert!(b.entries.len() + b.corrupt.len() <= 10);
            batches += 1;
            entries.extend(b.entries);
            corrupt.extend(b.corrupt);
        }
        assert_eq!(batches, 3);
        assert!(cursor.next_batch(10).unwrap().is_none(), "done stays done");
        assert_eq!(entries.len(), 24);
        assert_eq!(corrupt.len(), 1);
        assert_eq!(corrupt[0].file(), Some(bad.as_path()));
        let mut keys: Vec<Vec<u8>> = entries.into_iter().map(|e| e.key).collect();
        keys.sort();
        let mut want: Vec<Vec<u8>> = (0..25).filter(|&i| i != 3).map(|i| key(&format!("k{i}"))).collect();
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(fs::read(&bad).unwrap(), b"garbage", "listing changes nothing");
        // Closed early: nothing more.
        let mut c2 = store.list_cursor().unwrap();
        let one = |b: ListResult| b.entries.len() + b.corrupt.len();
        assert_eq!(one(c2.next_batch(1).unwrap().unwrap()), 1);
        assert_eq!(one(c2.next_batch(0).unwrap().unwrap()), 1, "max 0 counts as 1");
        c2.close();
        assert!(c2.next_batch(5).unwrap().is_none());
        // An empty store: no batch at all.
        let empty = tempfile::tempdir().unwrap();
        assert!(Arc::new(open(empty.path())).list_cursor().unwrap().next_batch(5).unwrap().is_none());
        // delete_store removes the clock file too.
        drop(cursor);
        drop(c2);
        drop(store);
        fs::remove_file(tmp.path().join("notes.txt")).unwrap();
        delete_store(tmp.path()).unwrap();
        assert!(!tmp.path().exists());
    }
}
