//! Binding of the core's streamed blobs (FORMAT.md §4.5): a writer that takes
//! a blob in pieces and commits it durably, and a reader of checked ranges.
//!
//! Both wrap their core object in `Arc<Mutex<Option<..>>>`, shared with the
//! threadpool tasks of the async methods; `None` once committed, aborted or
//! closed, and using it then is `ERR_INVALID_ARGUMENT`. Dropping a writer that
//! was never committed (the JS object collected) removes its staging file.

use std::sync::{Arc, Mutex, MutexGuard};

use konserve_core as core;
use konserve_core::blob::{BlobReader, BlobWriter};
use napi::bindgen_prelude::*;
use napi::{Env, Task};
use napi_derive::napi;

use crate::{expected_revision, invalid, meta_to_js, replaced_to_js, CoreResult, NativeFileStore, NativeMetaEntry, OrJs};

type SharedWriter = Arc<Mutex<Option<BlobWriter>>>;
type SharedReader = Arc<Mutex<Option<Arc<BlobReader>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn closed_writer() -> core::Error {
    invalid("the blob writer is closed (committed, aborted, or failed earlier)")
}

fn write(writer: &Mutex<Option<BlobWriter>>, bytes: &[u8]) -> CoreResult<()> {
    let mut guard = lock(writer);
    let w = guard.as_mut().ok_or_else(closed_writer)?;
    let result = w.write(bytes);
    if result.is_err() {
        // The core writer removed its staging file and is closed: let it go.
        *guard = None;
    }
    result
}

fn commit(writer: &Mutex<Option<BlobWriter>>) -> CoreResult<()> {
    let w = lock(writer).take().ok_or_else(closed_writer)?;
    w.commit()
}

/// A blob being written to a key, in pieces; nothing is visible under the key
/// before the commit. The caller holds the key's lock from the open to the
/// commit or abort. Writes must not overlap: await each before the next.
#[napi]
pub struct NativeBlobWriter {
    inner: SharedWriter,
    /// The key's revision once committed (`blobReplaceSync`), else 0.
    revision: f64,
}

impl NativeBlobWriter {
    fn new(w: BlobWriter, revision: u64) -> NativeBlobWriter {
        NativeBlobWriter { inner: Arc::new(Mutex::new(Some(w))), revision: revision as f64 }
    }
}

#[napi]
impl NativeBlobWriter {
    /// The key's revision once the blob is committed, for a writer that
    /// `blobReplaceSync`/`blobReplaceAsync` opened (0 for `blobWriterOpen*`).
    #[napi(getter)]
    pub fn revision(&self) -> f64 {
        self.revision
    }

    /// Appends `bytes` to the blob.
    #[napi]
    pub fn write_sync(&self, env: &Env, bytes: Buffer) -> Result<()> {
        write(&self.inner, &bytes).or_js(env)
    }

    /// Appends `bytes` to the blob, on the threadpool. The task reads the
    /// caller's memory itself (no copy on the JavaScript thread, which cost a
    /// memcpy and fresh pages per piece there): the caller must not change
    /// `bytes` until the Promise settles, as with `putAsync`'s values (every
    /// caller awaits the write before reusing its buffer).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write_async(&self, bytes: Buffer) -> AsyncTask<WriterTask> {
        AsyncTask::new(WriterTask { writer: self.inner.clone(), bytes: Some(bytes) })
    }

    /// Finishes the blob durably (last chunk, table, header, fsync, rename,
    /// directory fsync). The writer is closed afterwards, even on error.
    #[napi]
    pub fn commit_sync(&self, env: &Env) -> Result<()> {
        commit(&self.inner).or_js(env)
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn commit_async(&self) -> AsyncTask<WriterTask> {
        AsyncTask::new(WriterTask { writer: self.inner.clone(), bytes: None })
    }

    /// Gives the blob up: removes the staging file; the key keeps its old
    /// value. Idempotent, and a no-op after a commit.
    #[napi]
    pub fn abort(&self) {
        let taken = lock(&self.inner).take();
        if let Some(w) = taken {
            w.abort();
        }
    }
}

/// A write (`bytes`) or the commit (`None`) of a blob writer, on the threadpool.
pub struct WriterTask {
    writer: SharedWriter,
    /// Kept (not taken) so that the reference is released with the task, on the JavaScript thread.
    bytes: Option<Buffer>,
}

impl Task for WriterTask {
    type Output = CoreResult<()>;
    type JsValue = ();

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(match self.bytes.as_ref() {
            Some(bytes) => write(&self.writer, bytes),
            None => commit(&self.writer),
        })
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<()> {
        output.or_js(&env)
    }
}

/// Starts writing a blob to `key` (its CKE) with metadata `meta`: creates the
/// staging file. The store's compressor and encryption apply.
#[napi]
pub fn blob_writer_open_sync(env: &Env, store: &NativeFileStore, key: Buffer, meta: Buffer) -> Result<NativeBlobWriter> {
    let w = store.inner.blob_writer(&key, &meta).or_js(env)?;
    Ok(NativeBlobWriter::new(w, 0))
}

#[napi(ts_return_type = "Promise<NativeBlobWriter>")]
pub fn blob_writer_open_async(store: &NativeFileStore, key: Buffer, meta: Buffer) -> AsyncTask<WriterOpenTask> {
    AsyncTask::new(WriterOpenTask { store: store.inner.clone(), key, meta })
}

pub struct WriterOpenTask {
    store: Arc<core::FileStore>,
    key: Buffer,
    meta: Buffer,
}

impl Task for WriterOpenTask {
    type Output = CoreResult<BlobWriter>;
    type JsValue = NativeBlobWriter;

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(self.store.blob_writer(&self.key, &self.meta))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<NativeBlobWriter> {
        Ok(NativeBlobWriter::new(output.or_js(&env)?, 0))
    }
}

/// A blob write with its lock and revision read fused in (see `blobReplaceSync`).
#[napi(object)]
pub struct NativeBlobReplace {
    pub key: Buffer,
    pub meta: Buffer,
    pub revision_at: u32,
    pub expected_revision: Option<f64>,
    pub lock: bool,
}

fn blob_replace(store: &Arc<core::FileStore>, w: &NativeBlobReplace) -> CoreResult<core::BlobReplaced> {
    store.blob_replace(&core::BlobReplace {
        key: &w.key,
        meta: &w.meta,
        revision_at: w.revision_at as usize,
        expected_revision: expected_revision(w.expected_revision)?,
        lock: w.lock,
    })
}

fn blob_replaced_to_js(r: core::BlobReplaced) -> Either<NativeBlobWriter, f64> {
    match r {
        core::BlobReplaced::Opened { writer, revision } => Either::A(NativeBlobWriter::new(writer, revision)),
        core::BlobReplaced::Not(r) => Either::B(replaced_to_js(r)),
    }
}

/// `blobWriterOpenSync` with the lock and the revision read of a replacing
/// write fused in (`FileStore::blob_replace`): `meta` holds the revision slot
/// at `revisionAt`; `lock`: take the key's lock here (one attempt) and let the
/// writer release it when it commits or aborts. Returns the writer (its
/// `revision`: the key's revision once committed), or a number as
/// `replaceSync` answers: 0 the lock is held elsewhere, -1 left to the general
/// path, -2 - actual on a revision mismatch.
#[napi]
pub fn blob_replace_sync(env: &Env, store: &NativeFileStore, w: NativeBlobReplace) -> Result<Either<NativeBlobWriter, f64>> {
    blob_replace(&store.inner, &w).map(blob_replaced_to_js).or_js(env)
}

/// `blobReplaceSync` on the threadpool: the lock file, the revision read and
/// the staging file are this one task, none of it on the JavaScript thread.
#[napi(ts_return_type = "Promise<NativeBlobWriter | number>")]
pub fn blob_replace_async(store: &NativeFileStore, w: NativeBlobReplace) -> AsyncTask<BlobReplaceTask> {
    AsyncTask::new(BlobReplaceTask { store: store.inner.clone(), w })
}

pub struct BlobReplaceTask {
    store: Arc<core::FileStore>,
    w: NativeBlobReplace,
}

impl Task for BlobReplaceTask {
    type Output = CoreResult<core::BlobReplaced>;
    type JsValue = Either<NativeBlobWriter, f64>;

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(blob_replace(&self.store, &self.w))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(blob_replaced_to_js(output.or_js(&env)?))
    }
}

/// One version of a key's blob, open for range reads: it holds the key file
/// open, so a later write or delete of the key does not change what it reads.
/// Every range is checked chunk by chunk before any byte is returned.
#[napi]
pub struct NativeBlobReader {
    inner: SharedReader,
    size: u64,
    plain_offset: Option<u64>,
    meta: core::MetaEntry,
}

impl NativeBlobReader {
    fn new(reader: BlobReader) -> NativeBlobReader {
        NativeBlobReader {
            size: reader.size(),
            plain_offset: reader.plain_offset(),
            meta: reader.meta().clone(),
            inner: Arc::new(Mutex::new(Some(Arc::new(reader)))),
        }
    }
}

/// A JS number that must be a safe non-negative integer.
fn whole(n: f64, what: &str) -> CoreResult<u64> {
    if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 {
        Ok(n as u64)
    } else {
        Err(invalid(format!("the {what} {n} is not a non-negative safe integer")))
    }
}

fn read(reader: &Mutex<Option<Arc<BlobReader>>>, offset: f64, length: f64) -> CoreResult<Vec<u8>> {
    let (offset, length) = (whole(offset, "offset")?, whole(length, "length")?);
    // Read outside the lock: reads run in parallel, and a close waits for none.
    let r = lock(reader).clone().ok_or_else(|| invalid("the blob reader is closed"))?;
    r.read_at(offset, usize::try_from(length).unwrap_or(usize::MAX))
}

fn read_into(reader: &Mutex<Option<Arc<BlobReader>>>, offset: f64, target: &mut [u8]) -> CoreResult<usize> {
    let offset = whole(offset, "offset")?;
    let r = lock(reader).clone().ok_or_else(|| invalid("the blob reader is closed"))?;
    r.read_into(offset, target)
}

#[napi]
impl NativeBlobReader {
    /// The blob's length in bytes.
    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.size as f64
    }

    /// The key's metadata stored with this version of the blob.
    #[napi(getter)]
    pub fn meta(&self) -> NativeMetaEntry {
        meta_to_js(self.meta.clone())
    }

    /// Where the blob's bytes lie contiguously in the file (neither compressed
    /// nor encrypted), or null.
    #[napi(getter)]
    pub fn plain_offset(&self) -> Option<f64> {
        self.plain_offset.map(|o| o as f64)
    }

    /// The key file's path.
    #[napi(getter)]
    pub fn file(&self) -> String {
        self.meta.file.clone()
    }

    /// Up to `length` bytes from `offset` (fewer only at the end of the blob;
    /// an offset past the end is ERR_INVALID_ARGUMENT).
    #[napi]
    pub fn read_sync(&self, env: &Env, offset: f64, length: f64) -> Result<Buffer> {
        Ok(read(&self.inner, offset, length).or_js(env)?.into())
    }

    #[napi(ts_return_type = "Promise<Buffer>")]
    pub fn read_async(&self, offset: f64, length: f64) -> AsyncTask<ReadTask> {
        AsyncTask::new(ReadTask { reader: self.inner.clone(), offset, length })
    }

    /// Reads up to `target.length` bytes from `offset` into `target` and
    /// returns how many (fewer only at the end of the blob), checked like
    /// `readSync`. A stream reads into memory the JavaScript engine allocated
    /// (and accounts for) instead of a new external buffer per piece. On error
    /// `target` may hold bytes that were not checked.
    #[napi]
    pub fn read_into_sync(&self, env: &Env, offset: f64, mut target: Buffer) -> Result<f64> {
        read_into(&self.inner, offset, &mut target).map(|n| n as f64).or_js(env)
    }

    /// `readIntoSync` on the threadpool: `target` stays referenced by the task
    /// and is filled there; do not touch it until the promise settles.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn read_into_async(&self, offset: f64, target: Buffer) -> AsyncTask<ReadIntoTask> {
        AsyncTask::new(ReadIntoTask { reader: self.inner.clone(), offset, target })
    }

    /// Releases the file once no read is running; later reads fail. Idempotent.
    #[napi]
    pub fn close(&self) {
        lock(&self.inner).take();
    }
}

pub struct ReadTask {
    reader: SharedReader,
    offset: f64,
    length: f64,
}

impl Task for ReadTask {
    type Output = CoreResult<Vec<u8>>;
    type JsValue = Buffer;

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(read(&self.reader, self.offset, self.length))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<Buffer> {
        Ok(output.or_js(&env)?.into())
    }
}

/// A read into a caller's buffer, on the threadpool. The task holds a
/// reference to the buffer, so it outlives the read.
pub struct ReadIntoTask {
    reader: SharedReader,
    offset: f64,
    target: Buffer,
}

impl Task for ReadIntoTask {
    type Output = CoreResult<usize>;
    type JsValue = f64;

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(read_into(&self.reader, self.offset, &mut self.target))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<f64> {
        Ok(output.or_js(&env)? as f64)
    }
}

/// Opens the blob of `key` (its CKE) for range reads; null if the key does
/// not exist, ERR_NOT_BINARY if it holds something else.
#[napi]
pub fn blob_open_sync(env: &Env, store: &NativeFileStore, key: Buffer) -> Result<Option<NativeBlobReader>> {
    Ok(store.inner.open_blob(&key).or_js(env)?.map(NativeBlobReader::new))
}

#[napi(ts_return_type = "Promise<NativeBlobReader | null>")]
pub fn blob_open_async(store: &NativeFileStore, key: Buffer) -> AsyncTask<ReaderOpenTask> {
    AsyncTask::new(ReaderOpenTask { store: store.inner.clone(), key })
}

pub struct ReaderOpenTask {
    store: Arc<core::FileStore>,
    key: Buffer,
}

impl Task for ReaderOpenTask {
    type Output = CoreResult<Option<BlobReader>>;
    type JsValue = Option<NativeBlobReader>;

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(self.store.open_blob(&self.key))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<Option<NativeBlobReader>> {
        Ok(output.or_js(&env)?.map(NativeBlobReader::new))
    }
}
