//! Streamed, chunked blobs in a store (FORMAT.md §4.5): a blob written from
//! a stream with bounded memory, and read in ranges, each chunk checked
//! before any of its bytes is released. The bytes (chunks, table, trailer)
//! are [`crate::format::blob`]'s; this module does the I/O.
//!
//! [`BlobWriter`] writes a blob to a staging file as it arrives and commits it
//! like a put does (fsync, rename, directory fsync); [`BlobReader`] reads
//! ranges of a blob from one open file, so it sees one consistent version even
//! if the key is replaced meanwhile. `FileStore::blob_writer` and
//! `FileStore::open_blob` open them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use crate::codec::{Codec, OsRandom, SegmentContext};
use crate::error::{Error, ErrorCode, Result};
use crate::format::blob::{read_vec, ChunkIndex, ChunkStream};
use crate::format::file::{self, Header, FLAG_CHUNKED, HEADER_LEN};
use crate::format::key;
use crate::keyfile::{self, MetaEntry, StoreDir};
use crate::keyhash;
use crate::staging::InFlight;
use crate::store::KeyLock;
use crate::vfs::{VfsFile, DIRECT_ALIGN};

/// The staging file of a [`BlobWriter`] until it is renamed.
struct Staged {
    file: Box<dyn VfsFile>,
    path: PathBuf,
    /// Keeps the open sweep of this process away from the file.
    _in_flight: InFlight,
    /// Bytes written so far (the file is written in order from its start),
    /// with those still gathered in `direct`'s buffer.
    written: u64,
    /// Where the bytes whose writeback has not been started begin.
    kicked: u64,
    /// The direct path, once taken (see [`DIRECT_FROM`]).
    direct: Option<Direct>,
    /// Whether the direct path was tried (taken or refused): it is tried once.
    direct_tried: bool,
}

/// With durable writes, a blob's writeback is started every this many bytes:
/// the disk works while the rest of the blob is still being written, so the
/// fsync at commit has little left to wait for (and dirty memory stays
/// bounded). Measured on a 4 GiB stream against `createWriteStream` + fsync
/// in interleaved rounds (issue 17): a 1 MiB step ran at 0.61-0.95x the raw
/// write, 16 MiB at 0.78-1.09x, 64 MiB at 0.92-1.34x, and no hint at all at
/// 0.78-1.26x: small hints split the disk's work into small requests. Blobs
/// below the step get no hint: their fsync writes them in one go.
const WRITEBACK_STEP: u64 = 64 << 20;

/// A durable blob is written direct (`O_DIRECT`, past the page cache) once
/// more than this many bytes of it have arrived; smaller blobs stay buffered
/// (their fsync writes them in one go, and a direct write of a few blocks
/// gains nothing). Issue 17: 16 threads each writing 4 MiB files with an
/// fdatasync each ran at 382 MB/s buffered and 1,697 MB/s direct on the
/// same disk: the page cache's writeback, not the disk, set the pace.
pub const DIRECT_FROM: u64 = 1 << 20;

/// The default of [`crate::Options::direct_blobs_volume`]: direct writes
/// pay off at volume (the page cache's writeback falls behind), and cost a
/// disk read of a blob read back soon (it is not in the page cache): a
/// 10 MB blob written direct was read at 853 MB/s, one written buffered at
/// 1,406 MB/s (bench/results/latest.md). So a process starts writing direct
/// only once it ingests at volume.
pub const DIRECT_VOLUME: u64 = 1 << 30;

/// The span of one bucket of [`INGESTED`].
const INGEST_BUCKET: std::time::Duration = std::time::Duration::from_secs(10);

/// The bytes of durable blobs this process wrote lately: the current
/// bucket of [`INGEST_BUCKET`] and the one before it.
struct Ingested {
    bucket: u64,
    current: u64,
    previous: u64,
}

static INGESTED: Mutex<Ingested> = Mutex::new(Ingested { bucket: 0, current: 0, previous: 0 });

/// Counts `n` bytes of durable blob written now; returns the bytes written
/// in this bucket and the one before (10 to 20 s), these included.
fn ingest(n: u64) -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let bucket = (START.get_or_init(std::time::Instant::now).elapsed().as_secs() / INGEST_BUCKET.as_secs()) + 1;
    let mut i = INGESTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if i.bucket != bucket {
        i.previous = if i.bucket + 1 == bucket { i.current } else { 0 };
        i.current = 0;
        i.bucket = bucket;
    }
    i.current += n;
    i.current + i.previous
}

/// The size of a direct write (and of the aligned buffer that gathers it).
const DIRECT_BUF: usize = 1 << 20;

/// One aligned block of a direct buffer.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; DIRECT_ALIGN]);

/// The direct path of a staging file: bytes gathered in an aligned buffer,
/// written in whole blocks at `at`, an aligned offset.
struct Direct {
    buf: Vec<Block>,
    /// How many bytes of `buf` are filled.
    len: usize,
    /// Where in the file `buf` goes.
    at: u64,
    /// The thread that writes a full buffer while the next one fills, when
    /// the file can be shared with it ([`VfsFile::try_clone`]).
    behind: Option<Behind>,
}

/// A full buffer for [`Behind`]: its blocks, how many bytes, where.
type Full = (Vec<Block>, usize, u64);

/// A thread that makes one staging file's direct writes, one buffer at a
/// time, so that the blob's next bytes are chunked, checksummed and copied
/// while the disk writes the last ones (a direct write returns only once
/// the device has the bytes: done in line, a single stream ran at 0.7x its
/// buffered pace).
struct Behind {
    to: Option<mpsc::Sender<Full>>,
    /// (In a mutex only so that the writer is `Sync`: one thread uses it.)
    back: Mutex<mpsc::Receiver<(Full, io::Result<()>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Whether a buffer is with the thread.
    busy: bool,
}

impl Behind {
    fn start(mut file: Box<dyn VfsFile>) -> io::Result<Behind> {
        let (to, work) = mpsc::channel::<Full>();
        let (done, back) = mpsc::channel();
        let thread = std::thread::Builder::new().name("konserve-direct".into()).spawn(move || {
            for (buf, len, at) in work {
                let r = file.write_all_at(&blocks_bytes(&buf)[..len], at);
                if done.send(((buf, len, at), r)).is_err() {
                    return;
                }
            }
        })?;
        Ok(Behind { to: Some(to), back: Mutex::new(back), thread: Some(thread), busy: false })
    }

    /// Waits for the buffer with the thread, if any: it and how its write went.
    fn wait(&mut self) -> Option<(Full, io::Result<()>)> {
        if !self.busy {
            return None;
        }
        self.busy = false;
        let back = self.back.get_mut().unwrap_or_else(PoisonError::into_inner);
        Some(back.recv().unwrap_or_else(|_| ((Vec::new(), 0, 0), Err(io::Error::other("the direct writer thread ended")))))
    }
}

impl Drop for Behind {
    fn drop(&mut self) {
        self.to = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let back = self.back.get_mut().unwrap_or_else(PoisonError::into_inner);
        while let Ok(((buf, _, _), _)) = back.try_recv() {
            give_back(buf);
        }
    }
}

/// Direct buffers given back by finished writers, for the next ones: at most
/// [`POOLED`] of them. (A fresh 1 MiB buffer per blob made the allocator's
/// heap grow by about 100 MB with 16 blobs in flight.)
static POOL: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// How many direct buffers [`POOL`] keeps (32 MiB: two per blob, 16 blobs).
const POOLED: usize = 32;

/// A direct buffer from the pool, or a new one.
fn take_buffer() -> Vec<Block> {
    let pooled = POOL.lock().unwrap_or_else(PoisonError::into_inner).pop();
    pooled.unwrap_or_else(|| vec![Block([0; DIRECT_ALIGN]); DIRECT_BUF / DIRECT_ALIGN])
}

/// Gives a direct buffer back to the pool (or frees it).
fn give_back(buf: Vec<Block>) {
    if buf.len() * DIRECT_ALIGN != DIRECT_BUF {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.len() < POOLED {
        pool.push(buf);
    }
}

/// The bytes of a direct buffer.
fn blocks_bytes(buf: &[Block]) -> &[u8] {
    // SAFETY: `Block` is a plain byte array without padding (`repr(C)`,
    // size = alignment), so the blocks are contiguous, initialized bytes.
    unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), buf.len() * DIRECT_ALIGN) }
}

impl Direct {
    fn new(at: u64, file: &dyn VfsFile) -> Direct {
        let behind = file.try_clone().and_then(Behind::start).ok();
        Direct { buf: take_buffer(), len: 0, at, behind }
    }

    fn bytes(&mut self) -> &mut [u8] {
        let n = self.buf.len() * DIRECT_ALIGN;
        // SAFETY: as in `blocks_bytes`, borrowed mutably with `self`.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast::<u8>(), n) }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        // The thread's buffer first: it is done once `behind` is dropped.
        self.behind = None;
        give_back(std::mem::take(&mut self.buf));
    }
}

/// Whether a direct-I/O error means "not here" (then buffered writes do):
/// `EINVAL` (a file system without `O_DIRECT`, or stricter alignment),
/// `Unsupported` (a VFS without it), `EOPNOTSUPP`.
fn direct_refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported || matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
}

impl Staged {
    fn new(file: Box<dyn VfsFile>, path: PathBuf, in_flight: InFlight) -> Staged {
        Staged { file, path, _in_flight: in_flight, written: 0, kicked: 0, direct: None, direct_tried: false }
    }

    fn write_error(&self, e: io::Error) -> Error {
        Error::io(e, "cannot write a staging file", &self.path)
    }

    /// Appends `bytes`: buffered, or gathered for a direct write once the
    /// blob is large, `store` allows it and the process ingests at volume
    /// (see [`DIRECT_FROM`], [`DIRECT_VOLUME`]); with
    /// durable writes, starts the writeback of each full step of buffered bytes.
    fn append(&mut self, mut bytes: &[u8], store: &StoreDir) -> Result<()> {
        let recent = if store.options().sync_blob { ingest(bytes.len() as u64) } else { 0 };
        if self.direct.is_none()
            && !self.direct_tried
            && self.written + bytes.len() as u64 > DIRECT_FROM
            && store.direct_blobs()
            && recent > store.options().direct_blobs_volume
        {
            // Buffered up to the next block boundary, then direct from there.
            let head = ((DIRECT_ALIGN as u64 - self.written % DIRECT_ALIGN as u64) % DIRECT_ALIGN as u64).min(bytes.len() as u64);
            let (now, rest) = bytes.split_at(head as usize);
            self.append_buffered(now, store)?;
            bytes = rest;
            if self.written.is_multiple_of(DIRECT_ALIGN as u64) {
                self.direct_tried = true;
                match self.file.set_direct(true) {
                    Ok(()) => self.direct = Some(Direct::new(self.written, &*self.file)),
                    Err(e) if direct_refused(&e) => store.refuse_direct(),
                    Err(e) => return Err(self.write_error(e)),
                }
            }
        }
        if self.direct.is_none() {
            return self.append_buffered(bytes, store);
        }
        while !bytes.is_empty() {
            let Some(direct) = self.direct.as_mut() else { return self.append_buffered(bytes, store) };
            let len = direct.len;
            let room = &mut direct.bytes()[len..];
            let n = room.len().min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            direct.len += n;
            self.written += n as u64;
            bytes = &bytes[n..];
            if direct.len == DIRECT_BUF {
                self.flush_direct(store, false)?;
            }
        }
        Ok(())
    }

    /// Writes `bytes` through the page cache at the end of what is written.
    fn append_buffered(&mut self, bytes: &[u8], store: &StoreDir) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.direct_tried {
            // After a direct write the file's position is not its end.
            self.file.write_all_at(bytes, self.written).map_err(|e| self.write_error(e))?;
        } else {
            self.file.write_all(bytes).map_err(|e| self.write_error(e))?;
        }
        self.written += bytes.len() as u64;
        if store.options().sync_blob && self.written - self.kicked >= WRITEBACK_STEP {
            // Only a hint: a write-back error comes back from the fsync at commit.
            let _ = self.file.start_writeback(self.kicked, self.written - self.kicked);
            self.kicked = self.written;
        }
        Ok(())
    }

    /// Writes the whole blocks gathered in the direct buffer (a full one
    /// goes to the [`Behind`] thread when there is one, after the buffer it
    /// had is written); with `last`, waits for that thread and also writes
    /// what is left of a block, through the page cache (direct I/O turned
    /// off: the staging file is not written direct again). A file system
    /// that refuses the direct write gets it buffered, and the store
    /// remembers that.
    fn flush_direct(&mut self, store: &StoreDir, last: bool) -> Result<()> {
        let Some(mut direct) = self.direct.take() else { return Ok(()) };
        let spare = match direct.behind.as_mut().and_then(Behind::wait) {
            None => None,
            Some(((buf, _, _), Ok(()))) => Some(buf),
            Some((earlier, Err(e))) if direct_refused(&e) => return self.fall_back(store, direct, Some(earlier)),
            Some((_, Err(e))) => return Err(self.write_error(e)),
        };
        let (len, at) = (direct.len, direct.at);
        let whole = len / DIRECT_ALIGN * DIRECT_ALIGN;
        if !last {
            if let Some(to) = direct.behind.as_ref().and_then(|b| b.to.as_ref()) {
                let full = std::mem::replace(&mut direct.buf, spare.unwrap_or_else(take_buffer));
                match to.send((full, whole, at)) {
                    Ok(()) => {
                        if let Some(behind) = direct.behind.as_mut() {
                            behind.busy = true;
                        }
                        direct.at = at + whole as u64;
                        direct.len = 0;
                        self.kicked = direct.at;
                        self.direct = Some(direct);
                        return Ok(());
                    }
                    // The thread is gone: written here.
                    Err(mpsc::SendError((full, _, _))) => {
                        give_back(std::mem::replace(&mut direct.buf, full));
                        direct.behind = None;
                    }
                }
            } else if let Some(buf) = spare {
                give_back(buf);
            }
        } else if let Some(buf) = spare {
            give_back(buf);
        }
        let mut buffered_from = 0;
        if whole > 0 {
            match self.file.write_all_at(&direct.bytes()[..whole], at) {
                Ok(()) => buffered_from = whole,
                Err(e) if direct_refused(&e) => return self.fall_back(store, direct, None),
                Err(e) => return Err(self.write_error(e)),
            }
        }
        if last {
            self.file.set_direct(false).map_err(|e| self.write_error(e))?;
            let tail = &direct.bytes()[buffered_from..len];
            self.file.write_all_at(tail, at + buffered_from as u64).map_err(|e| self.write_error(e))?;
            return Ok(());
        }
        // Whole blocks only before the last flush: the buffer was full.
        direct.at = at + whole as u64;
        direct.len = 0;
        self.kicked = direct.at;
        self.direct = Some(direct);
        Ok(())
    }

    /// The file system refused a direct write: direct I/O off, and what was
    /// to be written direct (the `earlier` buffer, then `direct`'s) written
    /// through the page cache; the store remembers it. (Run with the
    /// [`Behind`] thread idle: its buffer is back.)
    fn fall_back(&mut self, store: &StoreDir, mut direct: Direct, earlier: Option<Full>) -> Result<()> {
        store.refuse_direct();
        self.file.set_direct(false).map_err(|e| self.write_error(e))?;
        if let Some((buf, len, at)) = earlier {
            self.file.write_all_at(&blocks_bytes(&buf)[..len], at).map_err(|e| self.write_error(e))?;
            self.kicked = at;
            give_back(buf);
        } else {
            self.kicked = direct.at;
        }
        let (len, at) = (direct.len, direct.at);
        self.file.write_all_at(&direct.bytes()[..len], at).map_err(|e| self.write_error(e))?;
        Ok(())
    }
}

/// A blob being written to a key from a stream (see `FileStore::blob_writer`).
///
/// Bytes go to a staging file as they come, chunk by chunk; nothing is visible
/// under the key before [`commit`](Self::commit). If a call fails, or the
/// writer is dropped (or [aborted](Self::abort)) before it commits, the staging
/// file is removed and the key keeps its old value. The caller holds the key's
/// lock from the open to the commit.
pub struct BlobWriter {
    files: Arc<StoreDir>,
    /// The key file the commit replaces.
    target: PathBuf,
    /// `None` once committed, aborted or failed.
    staged: Option<Staged>,
    stream: ChunkStream,
    /// The key's lock, when the writer holds it (`FileStore::blob_replace`):
    /// released once the blob is committed or given up.
    lock: Option<KeyLock>,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("target", &self.target)
            .field("open", &self.staged.is_some())
            .field("size", &self.stream.size())
            .field("holds_lock", &self.lock.is_some())
            .finish()
    }
}

/// Starts writing a blob to `key` (its CKE) with metadata `meta` in the
/// store directory `files` (see `FileStore::blob_writer`): creates the staging
/// file and writes its head (placeholder header, meta segment).
pub(crate) fn writer(files: &Arc<StoreDir>, key: &[u8], meta: &[u8]) -> Result<BlobWriter> {
    files.check_writable()?;
    key::validate(key)?;
    let target = files.file_path(key);
    let secret = files.options().encryption_key.as_deref();
    let codec = files.new_file_codec();
    let (stream, meta_stored) = ChunkStream::begin(codec, secret, key, meta, &mut OsRandom).map_err(|e| e.with_file(&target))?;
    let (file, path, in_flight) = files.create_staging(key)?;
    let mut writer = BlobWriter { files: Arc::clone(files), target, staged: Some(Staged::new(file, path, in_flight)), stream, lock: None };
    let mut head = vec![0u8; HEADER_LEN];
    head.extend_from_slice(&meta_stored);
    writer.write_raw(&head)?;
    Ok(writer)
}

/// Opens the blob of `key` (its CKE) for range reads (see
/// `FileStore::open_blob`), or `None` if the key does not exist.
pub(crate) fn open(files: &Arc<StoreDir>, key: &[u8]) -> Result<Option<BlobReader>> {
    let Some((file, size, path)) = files.open_key(key)? else { return Ok(None) };
    let key_hash = keyhash::key_hash(key);
    let ctx = files.context(key_hash);
    let (header, meta, prefix) = keyfile::read_head(&*file, size, &path, &ctx)?;
    keyfile::check_key(&meta.key, key, &path)?;
    if header.serializer != 0 || header.is_log() {
        let what = if header.is_log() { "an append log".to_string() } else { format!("a value of serializer {}", header.serializer) };
        return Err(Error::new(ErrorCode::NotBinary, format!("the key holds {what}, not a blob")).with_file(&path));
    }
    let layout = {
        let read = reader_from(&*file, &prefix, &path);
        if header.flags == FLAG_CHUNKED {
            Layout::Chunked(ChunkIndex::read(&header, &read).map_err(|e| e.with_file(&path))?)
        } else {
            let start = (HEADER_LEN + header.meta_len as usize) as u64;
            let stored = read_vec(&read, start, header.value_len).map_err(|e| e.with_file(&path))?;
            Layout::Whole(file::decode_value_owned(&header, &ctx, stored).map_err(|e| e.with_file(&path))?)
        }
    };
    let entry = MetaEntry { key: meta.key, serializer: header.serializer, meta: meta.meta, file: path.display().to_string(), log: None };
    Ok(Some(BlobReader { files: Arc::clone(files), file, path, key_hash, header, meta: entry, layout }))
}

impl BlobWriter {
    /// Writes stored bytes to the staging file; on failure the file is removed.
    fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let staged = self.staged.as_mut().ok_or_else(closed_error)?;
        if let Err(err) = staged.append(bytes, &self.files) {
            self.discard();
            return Err(err);
        }
        Ok(())
    }

    /// Removes the staging file, if there still is one.
    fn discard(&mut self) {
        if let Some(staged) = self.staged.take() {
            let Staged { file, path, _in_flight, .. } = staged;
            drop(file);
            // A failure here only leaves garbage for the next open's sweep.
            let _ = self.files.vfs.remove_file(&path);
        }
    }

    /// Appends `bytes` to the blob. A chunk is sealed and written once it is
    /// full and more bytes follow it; memory stays at about one chunk plus
    /// what the stored chunk takes. After an error the writer is closed and
    /// its staging file removed.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(staged) = self.staged.as_mut() else { return Err(closed_error()) };
        let files = &*self.files;
        let secret = files.options().encryption_key.as_deref();
        let mut sink = |b: &[u8]| staged.append(b, files);
        let result = self.stream.push(secret, bytes, &mut OsRandom, &mut sink);
        if let Err(e) = result {
            let e = e.with_file(&self.target);
            self.discard();
            return Err(e);
        }
        Ok(())
    }

    /// The plain bytes written so far.
    pub fn size(&self) -> u64 {
        self.stream.size()
    }

    /// The key file this writer replaces on commit.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Finishes the blob durably: seals the last chunk, writes the table, the
    /// trailer and the real header, fsyncs the staging file, renames it over
    /// the key file and fsyncs the directory (the fsyncs only with
    /// `sync_blob`). Returns when the new blob is durable. On error the
    /// staging file is removed (unless it was already renamed).
    /// A writer that holds the key's lock releases it here, after the rename
    /// (a failed release is reported when the blob was written).
    pub fn commit(mut self) -> Result<()> {
        let result = self.finish();
        // Whatever was not renamed is removed: a failed write leaves no trace.
        self.discard();
        let released = self.lock.take().map_or(Ok(()), KeyLock::release);
        result.and(released)
    }

    /// Hands the writer the key's lock, released when it commits or is given up.
    pub(crate) fn hold_lock(&mut self, lock: KeyLock) {
        self.lock = Some(lock);
    }

    /// Whether the writer holds its key's lock (`FileStore::blob_replace`).
    pub fn holds_lock(&self) -> bool {
        self.lock.is_some()
    }

    fn finish(&mut self) -> Result<()> {
        let store = Arc::clone(&self.files);
        let staged = self.staged.as_mut().ok_or_else(closed_error)?;
        store.check_writable()?;
        let secret = store.options().encryption_key.as_deref();
        let mut sink = |b: &[u8]| staged.append(b, &store);
        let (tail, header) = self.stream.finish(secret, &mut OsRandom, &mut sink).map_err(|e| e.with_file(&self.target))?;
        staged.append(&tail, &store)?;
        staged.flush_direct(&store, true)?;
        let (file, path) = (&mut staged.file, &staged.path);
        let write_err = |e: io::Error| Error::io(e, "cannot write a staging file", path);
        file.write_all_at(&header, 0).map_err(write_err)?;
        if store.options().sync_blob {
            file.sync().map_err(|e| store.fsync_failed(e, "cannot fsync a staging file", path))?;
        }
        store.vfs.rename(path, &self.target).map_err(|e| Error::io(e, "cannot rename a staging file over the key file", &self.target))?;
        // Renamed: nothing to remove any more.
        self.staged = None;
        if store.options().sync_blob {
            store.sync_dir()?;
        }
        Ok(())
    }

    /// Gives up the blob: removes the staging file; the key keeps its old
    /// value (and a lock the writer holds is released). Dropping the writer
    /// does the same.
    pub fn abort(mut self) {
        self.discard();
        self.release_quietly();
    }

    /// Releases a lock the writer holds (in this process whatever happens);
    /// a lock file that cannot be removed cannot be reported here: an abort
    /// or a drop has no result.
    fn release_quietly(&mut self) {
        if let Some(lock) = self.lock.take() {
            let _ = lock.release();
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.discard();
        self.release_quietly();
    }
}

fn closed_error() -> Error {
    Error::new(ErrorCode::InvalidArgument, "the blob writer is closed (committed, aborted, or failed earlier)")
}

// --- Reading ---

/// A [`ReadAt`] over an open key file, served from `prefix` (the bytes at the
/// start of the file already read) where it can. A short file is corrupt.
fn reader_from<'a>(file: &'a dyn VfsFile, prefix: &'a [u8], path: &'a Path) -> impl Fn(&mut [u8], u64) -> Result<()> + 'a {
    move |buf: &mut [u8], offset: u64| {
        if let Some(src) = usize::try_from(offset).ok().and_then(|start| prefix.get(start..start.checked_add(buf.len())?)) {
            buf.copy_from_slice(src);
            return Ok(());
        }
        file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::corrupt("the key file ends early").with_file(path),
            _ => Error::io(e, "cannot read the key file", path),
        })
    }
}

/// The whole plain blob of a chunked file whose head is already checked, every
/// chunk verified (for `FileStore::get`). `prefix` holds the first bytes of
/// the file, already read.
pub(crate) fn read_chunked_value(
    file: &dyn VfsFile,
    prefix: &[u8],
    path: &Path,
    header: &Header,
    ctx: &SegmentContext<'_>,
) -> Result<Vec<u8>> {
    let read = reader_from(file, prefix, path);
    let index = ChunkIndex::read(header, &read).map_err(|e| e.with_file(path))?;
    index.range(0, index.size, header.codec, ctx, &read).map_err(|e| e.with_file(path))
}

/// How a [`BlobReader`] finds the blob's bytes.
#[derive(Debug)]
enum Layout {
    /// A chunked blob: read in ranges.
    Chunked(ChunkIndex),
    /// A blob written whole, before chunking: read into memory at open.
    Whole(Vec<u8>),
}

/// One version of a key's blob, open for range reads (see `FileStore::open_blob`).
///
/// It holds the key file open: a key replaced or deleted after the open does
/// not change what it reads. Every range read checks each chunk it touches
/// (checksum, authentication, decompression, length) before returning any
/// byte. It can be shared between threads.
pub struct BlobReader {
    files: Arc<StoreDir>,
    file: Box<dyn VfsFile>,
    path: PathBuf,
    key_hash: u128,
    header: Header,
    meta: MetaEntry,
    layout: Layout,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader").field("path", &self.path).field("size", &self.size()).finish()
    }
}

impl BlobReader {
    /// The blob's length in bytes (`P`).
    pub fn size(&self) -> u64 {
        match &self.layout {
            Layout::Chunked(index) => index.size,
            Layout::Whole(bytes) => bytes.len() as u64,
        }
    }

    /// The key's metadata as stored with this version of the blob.
    pub fn meta(&self) -> &MetaEntry {
        &self.meta
    }

    /// The key file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the blob's plain bytes lie contiguously in the key file, when it
    /// is neither compressed nor encrypted (`48 + m`); otherwise `None`.
    pub fn plain_offset(&self) -> Option<u64> {
        (self.header.codec == Codec::NONE).then(|| HEADER_LEN as u64 + u64::from(self.header.meta_len))
    }

    /// Up to `len` bytes of the blob from `offset` (fewer only at the end of
    /// the blob). Reads only the chunks the range overlaps, each checked
    /// before any of its bytes is returned. An offset past the end is
    /// `ERR_INVALID_ARGUMENT`.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let size = self.size();
        if offset > size {
            return Err(Error::new(ErrorCode::InvalidArgument, format!("offset {offset} is past the end of the blob ({size} bytes)"))
                .with_file(&self.path));
        }
        match &self.layout {
            Layout::Whole(bytes) => {
                let start = offset as usize;
                let end = start.saturating_add(len).min(bytes.len());
                Ok(bytes[start..end].to_vec())
            }
            Layout::Chunked(index) => {
                let ctx = self.files.context(self.key_hash);
                let read = reader_from(&*self.file, &[], &self.path);
                index.range(offset, len as u64, self.header.codec, &ctx, &read).map_err(|e| e.with_file(&self.path))
            }
        }
    }

    /// Reads up to `buf.len()` bytes of the blob from `offset` into `buf`
    /// and returns how many (fewer only at the end of the blob), with the
    /// checks of [`read_at`](Self::read_at) but no new buffer for the result:
    /// a blob stored as is is read straight into `buf` (each whole chunk
    /// checked there); otherwise one stored chunk at a time goes through a
    /// scratch buffer. An offset past the end is `ERR_INVALID_ARGUMENT`. On
    /// error `buf` may hold bytes that were not checked: do not use them.
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let size = self.size();
        if offset > size {
            return Err(Error::new(ErrorCode::InvalidArgument, format!("offset {offset} is past the end of the blob ({size} bytes)"))
                .with_file(&self.path));
        }
        let n = usize::try_from(size - offset).unwrap_or(usize::MAX).min(buf.len());
        let out = &mut buf[..n];
        match &self.layout {
            Layout::Whole(bytes) => out.copy_from_slice(&bytes[offset as usize..offset as usize + n]),
            Layout::Chunked(index) => {
                let ctx = self.files.context(self.key_hash);
                let read = reader_from(&*self.file, &[], &self.path);
                index.range_into(offset, out, self.header.codec, &ctx, &read).map_err(|e| e.with_file(&self.path))?;
            }
        }
        Ok(n)
    }
}
