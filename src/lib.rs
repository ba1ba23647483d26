//! N-API binding of `konserve-core`.
//!
//! Thin by design: argument conversion, and every core operation exposed twice,
//! as a blocking `*Sync` method and as an `AsyncTask` that runs on the libuv
//! threadpool and resolves a Promise. No storage logic lives here.
//!
//! Errors cross as JavaScript `Error` objects whose `code` property is the
//! konserve code (`ERR_*`) and whose `file` property, when the error names a
//! file, is that file (see [`js_error`]); the TypeScript layer (`fromNative` in
//! ts/errors.ts) turns them into a `KonserveError`, adding the key (which only
//! JavaScript knows how to print). Internal helpers return core errors; each
//! entry point converts them once, on the JavaScript thread: blocking calls
//! with [`OrJs::or_js`], threadpool tasks in `resolve` (their `Output` is a
//! core `Result`, so a failure reaches the JavaScript thread intact).

use std::sync::{Arc, Mutex};

use konserve_core as core;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, JsDeferred, Task};
use napi_derive::napi;

/// A core error as a JavaScript `Error` with the konserve code as its `code`
/// property and the file (if any) as its `file` property; the message is the
/// core's (its text, then the OS error). The object is made here, on the
/// JavaScript thread, and held by reference, so napi-rs throws (blocking
/// call) or rejects with (task) this very object. No property is ever parsed
/// out of the message, so a path or a message cannot forge a code or a file.
pub(crate) fn js_error(env: &Env, e: core::Error) -> Error {
    let build = || -> Result<Error> {
        let mut obj = env.create_error(Error::new(Status::GenericFailure, e.to_string()))?;
        obj.set_named_property("code", e.code().as_str())?;
        if let Some(file) = e.file() {
            obj.set_named_property("file", file.display().to_string())?;
        }
        Ok(Error::from(obj.to_unknown()))
    };
    build().unwrap_or_else(|failed| failed)
}

/// Converts a core result at an entry point (see [`js_error`]).
pub(crate) trait OrJs<T> {
    fn or_js(self, env: &Env) -> Result<T>;
}

impl<T> OrJs<T> for CoreResult<T> {
    fn or_js(self, env: &Env) -> Result<T> {
        self.map_err(|e| js_error(env, e))
    }
}

/// An `ERR_INVALID_ARGUMENT` core error.
pub(crate) fn invalid(message: impl Into<String>) -> core::Error {
    core::Error::new(core::ErrorCode::InvalidArgument, message)
}

pub(crate) type CoreResult<T> = std::result::Result<T, core::Error>;

mod blob;
mod log;

/// A key's record: serializer id, metadata bytes, value bytes.
#[napi(object)]
pub struct NativeEntry {
    pub serializer: u32,
    pub meta: Buffer,
    pub value: Buffer,
    /// Set for an append log (whose `value` is empty): where the log stands.
    pub log: Option<log::NativeLogInfo>,
}

/// A key's metadata, as `keys` and `getMeta` read it.
#[napi(object)]
pub struct NativeMetaEntry {
    /// The key's canonical encoding (CKE).
    pub key: Buffer,
    pub serializer: u32,
    pub meta: Buffer,
    pub file: String,
    /// Set for an append log: where the log stands.
    pub log: Option<log::NativeLogInfo>,
}

/// A file `keys` could not read: reported, never fatal, never modified.
#[napi(object)]
pub struct NativeCorruptFile {
    pub code: String,
    pub file: String,
    pub message: String,
}

#[napi(object)]
pub struct NativeListing {
    pub entries: Vec<NativeMetaEntry>,
    pub corrupt: Vec<NativeCorruptFile>,
}

/// One key to write. `serializer` 0 marks raw bytes (bassoc).
#[napi(object)]
pub struct NativeWrite {
    pub key: Buffer,
    pub serializer: u32,
    pub meta: Buffer,
    pub value: Buffer,
}

fn entry_to_js(e: core::Entry) -> NativeEntry {
    NativeEntry { serializer: e.serializer as u32, meta: e.meta.into(), value: e.value.into(), log: e.log.map(log::info_to_js) }
}

/// The slab region at `offset`, split into its 2-byte prefix and the rest.
fn slab_region<'a>(slab: &'a mut BufferSlice<'_>, offset: u32) -> Result<(&'a mut [u8], &'a mut [u8])> {
    let region = slab
        .get_mut(offset as usize..)
        .filter(|r| r.len() > 2)
        .ok_or_else(|| Error::new(Status::InvalidArg, "the slab offset leaves no room"))?;
    Ok(region.split_at_mut(2))
}

/// `getValueInto`'s number for `found`, with the prefix written.
fn value_into_result(head: &mut [u8], found: core::ValueInto) -> f64 {
    match found {
        core::ValueInto::Missing => -1.0,
        core::ValueInto::TooLarge => -2.0,
        core::ValueInto::Found { serializer, log, start, len } => {
            head[0] = u8::from(log);
            head[1] = serializer;
            start as f64 * 4_294_967_296.0 + len as f64
        }
    }
}

/// A Buffer of V8's own `[flags, serializer, ...value]` (see `getValueSync`).
fn value_buffer<'env>(env: &'env Env, v: core::ValueRef<'_>) -> Result<BufferSlice<'env>> {
    let len = v.bytes.len() + 2;
    let mut data = std::ptr::null_mut();
    let mut raw = std::ptr::null_mut();
    check_status!(unsafe { napi::sys::napi_create_buffer(env.raw(), len, &mut data, &mut raw) })?;
    // SAFETY: napi_create_buffer succeeded, so `data` points at `len` writable bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), len) };
    out[0] = u8::from(v.log);
    out[1] = v.serializer;
    out[2..].copy_from_slice(v.bytes);
    // SAFETY: `raw` is the Buffer just created in this env.
    unsafe { BufferSlice::from_napi_value(env.raw(), raw) }
}

fn meta_to_js(e: core::MetaEntry) -> NativeMetaEntry {
    NativeMetaEntry {
        key: e.key.into(),
        serializer: e.serializer as u32,
        meta: e.meta.into(),
        file: e.file,
        log: e.log.map(log::info_to_js),
    }
}

fn listing_to_js(l: core::ListResult) -> NativeListing {
    NativeListing {
        entries: l.entries.into_iter().map(meta_to_js).collect(),
        corrupt: l
            .corrupt
            .into_iter()
            .map(|e| NativeCorruptFile {
                code: e.code().as_str().to_string(),
                file: e.file().map(|p| p.display().to_string()).unwrap_or_default(),
                message: e.to_string(),
            })
            .collect(),
    }
}

fn serializer_id(n: u32) -> CoreResult<u8> {
    u8::try_from(n).map_err(|_| invalid(format!("serializer id {n} is not in 0..=255")))
}

fn put(store: &core::FileStore, writes: &[NativeWrite]) -> CoreResult<()> {
    store.put(&core_writes(writes))
}

/// The core's view of the writes (their serializer ids checked by `check_writes`).
fn core_writes(writes: &[NativeWrite]) -> Vec<core::Write<'_>> {
    writes.iter().map(|w| core::Write { key: &w.key, serializer: w.serializer as u8, meta: &w.meta, value: &w.value }).collect()
}

/// A replacing write (see `replaceSync`).
#[napi(object)]
pub struct NativeReplace {
    pub key: Buffer,
    pub serializer: u32,
    pub meta: Buffer,
    pub revision_at: u32,
    pub value: Buffer,
    pub expected_revision: Option<f64>,
    pub lock: bool,
}

/// A replacing write's `expectedRevision`: a safe whole number >= 0, or none.
pub(crate) fn expected_revision(n: Option<f64>) -> CoreResult<Option<u64>> {
    match n {
        None => Ok(None),
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n < 9_007_199_254_740_992.0 => Ok(Some(n as u64)),
        Some(n) => Err(invalid(format!("expectedRevision must be a whole number >= 0, not {n}"))),
    }
}

fn replace(store: &core::FileStore, w: &NativeReplace) -> CoreResult<core::Replaced> {
    let expected_revision = expected_revision(w.expected_revision)?;
    store.replace(&core::Replace {
        key: &w.key,
        serializer: serializer_id(w.serializer)?,
        meta: &w.meta,
        revision_at: w.revision_at as usize,
        value: &w.value,
        expected_revision,
        lock: w.lock,
    })
}

pub(crate) fn replaced_to_js(r: core::Replaced) -> f64 {
    match r {
        core::Replaced::Written { revision } => revision as f64,
        core::Replaced::Busy => 0.0,
        core::Replaced::Unsure => -1.0,
        core::Replaced::Mismatch { actual } => -2.0 - actual as f64,
    }
}

fn check_writes(writes: &[NativeWrite]) -> CoreResult<()> {
    for w in writes {
        serializer_id(w.serializer)?;
    }
    Ok(())
}

fn key_slices(keys: &[Buffer]) -> Vec<&[u8]> {
    keys.iter().map(|k| k.as_ref()).collect()
}

/// How a store is opened (see `FsStoreOptions` in the TypeScript layer).
#[napi(object)]
pub struct NativeOpenOptions {
    pub sync_blob: bool,
    /// 0: none, 1: LZ4.
    pub compressor: u32,
    /// When set, new writes are encrypted and encrypted files can be read.
    pub encryption_key: Option<Buffer>,
    /// With an encryption key: also read plaintext files (a migration).
    pub accept_plaintext: Option<bool>,
    /// How long a lock waits for another holder (default 60000).
    pub lock_timeout_ms: Option<f64>,
    /// Open read-only: no lock, sweep or key check written; writes fail with ERR_READ_ONLY.
    pub read_only: Option<bool>,
    /// The value cache's memory budget in bytes (default 4 MiB; 0: off). Linux only.
    pub value_cache_bytes: Option<f64>,
    /// The write-ahead log (experimental, docs/WAL.md): true upgrades the
    /// store, false downgrades it, absent keeps what its marker says.
    pub wal: Option<bool>,
    /// With the log: how long it must be idle before this store checkpoints
    /// it in the background (default 100; 0: never, docs/WAL.md §5).
    pub wal_idle_checkpoint_ms: Option<f64>,
    /// With sync_blob: write large blobs direct (O_DIRECT; default true).
    pub direct_blobs: Option<bool>,
    /// With direct_blobs: only once the process wrote more than this many
    /// bytes of durable blobs lately (default 1 GiB; 0: always).
    pub direct_blobs_volume: Option<f64>,
}

fn core_options(o: &NativeOpenOptions) -> CoreResult<core::Options> {
    let compressor = u8::try_from(o.compressor).map_err(|_| invalid(format!("unknown compressor id {}", o.compressor)))?;
    let mut options = core::Options {
        sync_blob: o.sync_blob,
        compressor,
        encryption_key: o.encryption_key.as_ref().map(|k| k.to_vec()),
        accept_plaintext: o.accept_plaintext.unwrap_or(false),
        read_only: o.read_only.unwrap_or(false),
        wal: o.wal,
        direct_blobs: o.direct_blobs.unwrap_or(true),
        ..core::Options::default()
    };
    if let Some(v) = o.direct_blobs_volume {
        if !(v.is_finite() && v >= 0.0) {
            return Err(invalid(format!("directBlobsVolume must be a number of bytes >= 0, not {v}")));
        }
        options.direct_blobs_volume = v as u64;
    }
    if let Some(ms) = o.lock_timeout_ms {
        if !(ms.is_finite() && ms >= 0.0) {
            return Err(invalid(format!("lockTimeoutMs must be a number >= 0, not {ms}")));
        }
        options.lock_timeout = std::time::Duration::from_secs_f64(ms / 1000.0);
    }
    if let Some(bytes) = o.value_cache_bytes {
        if !(bytes.is_finite() && bytes >= 0.0) {
            return Err(invalid(format!("valueCacheBytes must be a number >= 0, not {bytes}")));
        }
        options.value_cache_bytes = bytes as usize;
    }
    if let Some(ms) = o.wal_idle_checkpoint_ms {
        if !(ms.is_finite() && ms >= 0.0) {
            return Err(invalid(format!("walIdleCheckpointMs must be a number >= 0, not {ms}")));
        }
        options.wal_idle_checkpoint = Some(std::time::Duration::from_secs_f64(ms / 1000.0));
    }
    Ok(options)
}

/// What a store's value cache has done (see `valueCacheStats`).
#[napi(object)]
pub struct NativeValueCacheStats {
    pub enabled: bool,
    pub hits: f64,
    pub misses: f64,
    pub entries: u32,
    pub bytes: f64,
    pub overflows: f64,
}

/// One store directory opened by the native core.
#[napi]
pub struct NativeFileStore {
    pub(crate) inner: Arc<core::FileStore>,
    /// The queued writes' settling (`settleWith`, `replaceQueued`), once set.
    pub(crate) settler: std::sync::OnceLock<Arc<Settler>>,
}

/// The JavaScript function that settles queued writes, as a threadsafe
/// function: no argument from the committer (its call_js_back drains the
/// list), weak (unreferenced until a write is pending).
type SettleFn = ThreadsafeFunction<(), Unknown<'static>, FnArgs<(Float64Array, Vec<String>)>, Status, false, true, 0>;

/// How queued writes (`replaceQueued`, docs/WAL.md §4.1.1) settle: the
/// committer pushes each outcome to `list` and calls the store's one
/// threadsafe function only when the list was empty; on the JavaScript
/// thread its call drains the whole list into one call of the JavaScript
/// settler (`[id, answer, ...]`, and `[id, code, message, file, ...]` for
/// failures). `pending` (JavaScript thread only) counts the writes queued
/// and not yet drained: the function is referenced (keeps the process
/// alive) while it is above 0.
pub(crate) struct Settler {
    list: Mutex<Vec<(u32, CoreResult<core::Replaced>)>>,
    tsfn: std::sync::OnceLock<SettleFn>,
    pending: std::sync::atomic::AtomicU32,
    next_id: std::sync::atomic::AtomicU32,
}

impl Settler {
    /// On the committer thread: one outcome in, the JavaScript thread woken if it was the first.
    fn push(&self, id: u32, r: CoreResult<core::Replaced>) {
        let first = {
            let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
            list.push((id, r));
            list.len() == 1
        };
        if first {
            if let Some(f) = self.tsfn.get() {
                // Closing (the environment ends): nothing is left to settle.
                let _ = f.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
    }

    /// On the JavaScript thread: every outcome so far, as the settler's arguments.
    fn drain(&self, env: &Env) -> FnArgs<(Float64Array, Vec<String>)> {
        let list = std::mem::take(&mut *self.list.lock().unwrap_or_else(|p| p.into_inner()));
        let mut answers = Vec::with_capacity(list.len() * 2);
        let mut failures = Vec::new();
        for (id, r) in &list {
            match r {
                Ok(a) => answers.extend([f64::from(*id), replaced_to_js(*a)]),
                Err(e) => failures.extend([
                    id.to_string(),
                    e.code().as_str().to_string(),
                    e.to_string(),
                    e.file().map(|f| f.display().to_string()).unwrap_or_default(),
                ]),
            }
        }
        let n = list.len() as u32;
        if n > 0 && self.pending.fetch_sub(n, std::sync::atomic::Ordering::Relaxed) == n {
            self.reference(env, false);
        }
        FnArgs::from((Float64Array::new(answers), failures))
    }

    /// Queues one write through `submit` (JavaScript thread): `submit` gets
    /// the completion that pushes its outcome here, and returns whether the
    /// core took the write. Returns its id (>= 0), or -1 when the core
    /// declined it (nothing queued, nothing left pending).
    fn queue(self: &Arc<Self>, env: &Env, submit: impl FnOnce(Box<dyn FnOnce(CoreResult<core::Replaced>) + Send>) -> bool) -> f64 {
        let id = self.next_id.load(std::sync::atomic::Ordering::Relaxed);
        let theirs = Arc::clone(self);
        // Counted before it is queued: the committer may push its outcome at once.
        if self.pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            self.reference(env, true);
        }
        if !submit(Box::new(move |result| theirs.push(id, result))) {
            if self.pending.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 1 {
                self.reference(env, false);
            }
            return -1.0;
        }
        self.next_id.store(id.wrapping_add(1), std::sync::atomic::Ordering::Relaxed);
        f64::from(id)
    }

    /// Keeps the process alive (or not) for the pending writes; JavaScript thread only.
    fn reference(&self, env: &Env, on: bool) {
        if let Some(f) = self.tsfn.get() {
            // SAFETY: on the JavaScript thread of the environment that made the function.
            unsafe {
                if on {
                    napi::sys::napi_ref_threadsafe_function(env.raw(), f.raw());
                } else {
                    napi::sys::napi_unref_threadsafe_function(env.raw(), f.raw());
                }
            }
        }
    }
}

#[napi]
impl NativeFileStore {
    /// Opens (creating if needed) the store directory; sweeps dead writers' staging files.
    #[napi(factory)]
    pub fn open(env: &Env, path: String, options: NativeOpenOptions) -> Result<Self> {
        let store = core_options(&options).and_then(|o| core::FileStore::open(&path, o)).or_js(env)?;
        Ok(Self { inner: Arc::new(store), settler: Default::default() })
    }

    /// Opens the store on the threadpool.
    #[napi(ts_return_type = "Promise<NativeFileStore>")]
    pub fn open_async(env: &Env, path: String, options: NativeOpenOptions) -> Result<AsyncTask<OpenTask>> {
        Ok(AsyncTask::new(OpenTask { path, options: Some(core_options(&options).or_js(env)?) }))
    }

    /// The store directory, canonical (symbolic links resolved, as `realpath`
    /// gives it): the facade needs it for the store's lock scope and clock,
    /// and takes it from here instead of a `realpath` of its own.
    #[napi(getter)]
    pub fn dir(&self) -> String {
        self.inner.dir().display().to_string()
    }

    /// Whether a replacing write (`replaceSync`, `replaceAsync` with `lock`)
    /// takes no key lock file: the store is on its write-ahead log with a
    /// version-3 marker (docs/WAL.md §4.1), and concurrent ones share the
    /// log's group commit.
    #[napi(getter)]
    pub fn lock_free(&self) -> bool {
        self.inner.is_lock_free()
    }

    /// Whether the store is on its write-ahead log (docs/WAL.md): a key file
    /// written from outside the core would then bypass the key's logged
    /// value, so the facade writes no staged log of its own there.
    #[napi(getter)]
    pub fn on_wal(&self) -> bool {
        self.inner.wal().is_some()
    }

    /// Milliseconds until the sweep on open wants `sweepStagingAgainAsync`:
    /// it kept staging files written in another pid namespace or on another
    /// host because they were younger than the lease (FORMAT.md §5). `null`: it kept none.
    #[napi(getter)]
    pub fn staging_sweep_due_ms(&self) -> Option<f64> {
        self.inner.staging_sweep_due().map(|d| d.as_secs_f64() * 1000.0)
    }

    /// The sweep on open once more; resolves to the milliseconds until the
    /// next one is due, or -1 when none is.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn sweep_staging_again_async(&self) -> AsyncTask<StoreTask> {
        self.task(Op::SweepStaging)
    }

    /// The store's close: ends the write-ahead log's background thread and
    /// releases the log's lock file if it is kept idle (docs/WAL.md §4.1).
    /// The store stays usable (also done when the object is collected).
    #[napi]
    pub fn stop_background(&self) {
        self.inner.stop_background();
    }

    #[napi]
    pub fn get_sync(&self, env: &Env, key: Buffer) -> Result<Option<NativeEntry>> {
        Ok(self.inner.get(&key).or_js(env)?.map(entry_to_js))
    }

    /// `get`'s read of a value that `getValueInto` found too large for its
    /// slab: the value as one Buffer `[flags, serializer, ...value]` (flags bit
    /// 0: an append log, whose records a log cursor reads), copied once into
    /// memory V8 owns; `null` if the key is missing. Reads through the core's
    /// `get` straight away: a small-file attempt would only open the file again.
    #[napi(ts_return_type = "Buffer | null")]
    pub fn get_value_sync<'env>(&self, env: &'env Env, key: BufferSlice<'_>) -> Result<Option<BufferSlice<'env>>> {
        let found = self.inner.get(&key).or_js(env)?;
        found.map(|e| value_buffer(env, core::ValueRef { serializer: e.serializer, log: e.log.is_some(), bytes: &e.value })).transpose()
    }

    /// The hottest read behind `get`, into memory JavaScript owns: reads `key`'s
    /// file into `slab[offset + 2..]` and decodes it there, writing the flags
    /// (bit 0: an append log) at `slab[offset]` and the serializer at
    /// `slab[offset + 1]`. Returns -1 if the key is missing, -2 if its file does
    /// not fit in the rest of the slab (read it with `getValueSync`), else
    /// `start * 2^32 + len`: the value is at `offset + 2 + start`, `len` bytes.
    /// No allocation, no copy: the caller hands out views of its slab.
    #[napi]
    pub fn get_value_into(&self, env: &Env, key: BufferSlice<'_>, mut slab: BufferSlice<'_>, offset: u32) -> Result<f64> {
        let (head, file) = slab_region(&mut slab, offset)?;
        let found = self.inner.read_value_into(&key, file).or_js(env)?;
        Ok(value_into_result(head, found))
    }

    /// `getValueInto` done only if it cannot wait for the disk (see
    /// `FileStore::read_value_into_now`): the same results, or -3 when it would
    /// wait (then read with `getValueAsync`). Lets an async `get` of a cached key
    /// be answered at once, without blocking the event loop on the disk.
    #[napi]
    pub fn get_value_now(&self, env: &Env, key: BufferSlice<'_>, mut slab: BufferSlice<'_>, offset: u32) -> Result<f64> {
        let (head, file) = slab_region(&mut slab, offset)?;
        match self.inner.read_value_into_now(&key, file).or_js(env)? {
            None => Ok(-3.0),
            Some(found) => Ok(value_into_result(head, found)),
        }
    }

    /// `getValueSync` on the threadpool.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn get_value_async(&self, key: Buffer) -> AsyncTask<StoreTask> {
        self.task(Op::GetValue(key))
    }

    /// `getSync` done only if it cannot wait for the disk (see
    /// `FileStore::get_now`): the same result, or `false` when it would
    /// wait (then read with `getAsync`). The read of an async update of a
    /// logged or cached key then costs no thread hop.
    #[napi(ts_return_type = "NativeEntry | null | false")]
    pub fn get_now(&self, env: &Env, key: BufferSlice<'_>) -> Result<Option<Either<NativeEntry, bool>>> {
        Ok(match self.inner.get_now(&key).or_js(env)? {
            None => Some(Either::B(false)),
            Some(found) => found.map(|e| Either::A(entry_to_js(e))),
        })
    }

    #[napi(ts_return_type = "Promise<NativeEntry | null>")]
    pub fn get_async(&self, key: Buffer) -> AsyncTask<StoreTask> {
        self.task(Op::Get(key))
    }

    #[napi]
    pub fn get_meta_sync(&self, env: &Env, key: Buffer) -> Result<Option<NativeMetaEntry>> {
        Ok(self.inner.get_meta(&key).or_js(env)?.map(meta_to_js))
    }

    /// `getMetaSync` done only if it cannot wait for the disk (see
    /// `FileStore::get_meta_now`): the same result, or `false` when it would
    /// wait (then read with `getMetaAsync`). An async write's revision read of
    /// a cached or missing key then costs no thread hop.
    #[napi(ts_return_type = "NativeMetaEntry | null | false")]
    pub fn get_meta_now(&self, env: &Env, key: BufferSlice<'_>) -> Result<Option<Either<NativeMetaEntry, bool>>> {
        Ok(match self.inner.get_meta_now(&key).or_js(env)? {
            None => Some(Either::B(false)),
            Some(found) => found.map(|e| Either::A(meta_to_js(e))),
        })
    }

    #[napi(ts_return_type = "Promise<NativeMetaEntry | null>")]
    pub fn get_meta_async(&self, key: Buffer) -> AsyncTask<StoreTask> {
        self.task(Op::GetMeta(key))
    }

    #[napi]
    pub fn exists_sync(&self, env: &Env, key: Buffer) -> Result<bool> {
        self.inner.exists(&key).or_js(env)
    }

    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn exists_async(&self, key: Buffer) -> AsyncTask<StoreTask> {
        self.task(Op::Exists(key))
    }

    /// Writes every entry durably (staging, fsync, rename, one directory fsync).
    /// The caller holds the keys' locks.
    #[napi]
    pub fn put_sync(&self, env: &Env, writes: Vec<NativeWrite>) -> Result<()> {
        check_writes(&writes).and_then(|()| put(&self.inner, &writes)).or_js(env)
    }

    /// On a store with a write-ahead log, the writes go to its committer
    /// thread (`FileStore::put_then`): the threadpool task only encodes and
    /// queues them, and the Promise settles from the committer once their
    /// frame is durable, so no pool thread waits for the `fdatasync`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn put_async<'env>(&self, env: &'env Env, writes: Vec<NativeWrite>) -> Result<Either<AsyncTask<StoreTask>, Object<'env>>> {
        check_writes(&writes).or_js(env)?;
        if self.inner.wal().is_none() {
            return Ok(Either::A(self.task(Op::Put(writes))));
        }
        let (deferred, promise) = env.create_deferred::<(), Settle<()>>()?;
        env.spawn(SubmitTask { store: self.inner.clone(), op: Submit::Put(writes, Some(deferred)) })?;
        Ok(Either::B(promise))
    }

    /// A replacing write with its revision read fused in (`FileStore::replace`):
    /// `meta` holds the revision slot at `revisionAt`; `lock`: take and release
    /// the key's lock here (one attempt). Returns the new revision (>= 1) when
    /// written, 0 when the lock is held elsewhere, -1 when the core leaves the
    /// write to the general path, or -2 - actual on a revision mismatch.
    #[napi]
    pub fn replace_sync(&self, env: &Env, w: NativeReplace) -> Result<f64> {
        replace(&self.inner, &w).map(replaced_to_js).or_js(env)
    }

    /// `replaceSync` on the threadpool: an async write of a new key is this one task.
    /// On a store with a write-ahead log, the record goes to its committer
    /// thread (`FileStore::replace_then`), as for `putAsync`.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn replace_async<'env>(&self, env: &'env Env, w: NativeReplace) -> Result<Either<AsyncTask<StoreTask>, Object<'env>>> {
        serializer_id(w.serializer).or_js(env)?;
        expected_revision(w.expected_revision).or_js(env)?;
        if self.inner.wal().is_none() {
            return Ok(Either::A(self.task(Op::Replace(w))));
        }
        let (deferred, promise) = env.create_deferred::<f64, Settle<f64>>()?;
        env.spawn(SubmitTask { store: self.inner.clone(), op: Submit::Replace(w, Some(deferred)) })?;
        Ok(Either::B(promise))
    }

    /// Sets the function that settles this store's queued writes
    /// (`replaceQueued`): it is called on the JavaScript thread with
    /// `(answers, failures)`, `answers` a Float64Array of `[id, answer, ...]`
    /// (`replaceSync`'s numbers), `failures` `[id, code, message, file, ...]`
    /// (`file` empty when none). Once per store; later calls change nothing.
    #[napi(ts_args_type = "settle: (answers: Float64Array, failures: string[]) => void")]
    pub fn settle_with(&self, settle: Function<'_, FnArgs<(Float64Array, Vec<String>)>, Unknown<'static>>) -> Result<()> {
        if self.settler.get().is_some() {
            return Ok(());
        }
        let settler = Arc::new(Settler {
            list: Mutex::new(Vec::new()),
            tsfn: std::sync::OnceLock::new(),
            pending: std::sync::atomic::AtomicU32::new(0),
            next_id: std::sync::atomic::AtomicU32::new(0),
        });
        let weak = Arc::downgrade(&settler);
        let tsfn: SettleFn = settle.build_threadsafe_function::<()>().weak::<true>().callee_handled::<false>().build_callback(
            move |ctx: ThreadsafeCallContext<()>| {
                Ok(match weak.upgrade() {
                    Some(s) => s.drain(&ctx.env),
                    None => FnArgs::from((Float64Array::new(Vec::new()), Vec::new())),
                })
            },
        )?;
        let _ = settler.tsfn.set(tsfn);
        let _ = self.settler.set(settler);
        Ok(())
    }

    /// The lock-free replace queued straight for the log's committer, on
    /// this thread with no file I/O and no threadpool task
    /// (`FileStore::replace_queued`, docs/WAL.md §4.1.1), the key's lock
    /// requested: returns the write's id (>= 0), whose answer (as
    /// `replaceSync`'s) or failure reaches the `settleWith` function once its
    /// frame is durable; or -1 when the write is not for this path (no
    /// settler, not lock-free, a store that takes no writes, a value that
    /// may not fit a record, the key's in-process lock held, a bad
    /// argument): nothing was done, the caller takes `replaceAsync`.
    // Positional arguments, not a `NativeReplace` object: no object to make
    // in JavaScript and no property lookups here, on the hot path.
    #[allow(clippy::too_many_arguments)]
    #[napi]
    pub fn replace_queued(
        &self,
        env: &Env,
        key: BufferSlice<'_>,
        serializer: u32,
        meta: BufferSlice<'_>,
        revision_at: u32,
        value: BufferSlice<'_>,
        expected_revision: Option<f64>,
    ) -> Result<f64> {
        let Some(settler) = self.settler.get() else { return Ok(-1.0) };
        let (Ok(expected_revision), Ok(serializer)) = (crate::expected_revision(expected_revision), serializer_id(serializer)) else {
            return Ok(-1.0);
        };
        let r = core::Replace {
            key: &key,
            serializer,
            meta: &meta,
            revision_at: revision_at as usize,
            value: &value,
            expected_revision,
            lock: true,
        };
        Ok(settler.queue(env, |done| self.inner.replace_queued(&r, done)))
    }

    /// A put of keys whose locks the caller holds, queued straight for the
    /// log's committer from this thread, with no threadpool task
    /// (`FileStore::put_queued`): returns the write's id (>= 0), whose
    /// outcome reaches the `settleWith` function (answer 0) once its frame
    /// is durable; or -1 when the put is not for this path (no settler, no
    /// log, a value that may not fit a record, a bad argument): nothing was
    /// done, the caller takes `putAsync`.
    #[napi]
    pub fn put_queued(&self, env: &Env, writes: Vec<NativeWrite>) -> Result<f64> {
        let Some(settler) = self.settler.get() else { return Ok(-1.0) };
        if check_writes(&writes).is_err() {
            return Ok(-1.0);
        }
        let ws = core_writes(&writes);
        Ok(settler
            .queue(env, |done| self.inner.put_queued(&ws, Box::new(move |r| done(r.map(|()| core::Replaced::Written { revision: 0 }))))))
    }

    /// Deletes each key; returns whether each existed.
    #[napi]
    pub fn delete_sync(&self, env: &Env, keys: Vec<Buffer>) -> Result<Vec<bool>> {
        self.inner.delete(&key_slices(&keys)).or_js(env)
    }

    #[napi(ts_return_type = "Promise<boolean[]>")]
    pub fn delete_async(&self, keys: Vec<Buffer>) -> AsyncTask<StoreTask> {
        self.task(Op::Delete(keys))
    }

    #[napi]
    pub fn list_sync(&self, env: &Env) -> Result<NativeListing> {
        Ok(listing_to_js(self.inner.list().or_js(env)?))
    }

    #[napi(ts_return_type = "Promise<NativeListing>")]
    pub fn list_async(&self) -> AsyncTask<StoreTask> {
        self.task(Op::List)
    }

    /// A streaming listing: batches of at most `max` key files (see `NativeListCursor`).
    #[napi]
    pub fn open_list(&self, env: &Env) -> Result<NativeListCursor> {
        let cursor = self.inner.list_cursor().or_js(env)?;
        Ok(NativeListCursor { inner: Arc::new(Mutex::new(Some(cursor))) })
    }

    /// Blocks until every key is locked (in this process and across processes).
    #[napi]
    pub fn lock_sync(&self, env: &Env, keys: Vec<Buffer>) -> Result<()> {
        self.inner.lock(&key_slices(&keys)).or_js(env)
    }

    /// Takes every key's lock, or none; never blocks. Async callers poll this
    /// instead of parking a threadpool thread on a lock whose holder may need
    /// that very thread to finish. A caller that has polled for `waited_ms`
    /// gets `ERR_LOCK_TIMEOUT` (naming the holder) once that reaches the lock timeout.
    #[napi]
    pub fn try_lock(&self, env: &Env, keys: Vec<Buffer>, waited_ms: Option<f64>) -> Result<bool> {
        let waited = waited_ms.filter(|w| w.is_finite() && *w >= 0.0).map(|w| std::time::Duration::from_secs_f64(w / 1000.0));
        self.inner.try_lock_waited(&key_slices(&keys), waited).or_js(env)
    }

    #[napi]
    pub fn unlock(&self, env: &Env, keys: Vec<Buffer>) -> Result<()> {
        self.inner.unlock(&key_slices(&keys)).or_js(env)
    }

    /// What the value cache has done (for tests and diagnostics).
    #[napi]
    pub fn value_cache_stats(&self) -> NativeValueCacheStats {
        let s = self.inner.value_cache_stats();
        NativeValueCacheStats {
            enabled: s.enabled,
            hits: s.hits as f64,
            misses: s.misses as f64,
            entries: u32::try_from(s.entries).unwrap_or(u32::MAX),
            bytes: s.bytes as f64,
            overflows: s.overflows as f64,
        }
    }

    /// The path of the file that holds `key`.
    #[napi]
    pub fn file_path(&self, key: Buffer) -> String {
        self.inner.file_path(&key).display().to_string()
    }

    fn task(&self, op: Op) -> AsyncTask<StoreTask> {
        AsyncTask::new(StoreTask { store: self.inner.clone(), op: Some(op) })
    }
}

/// A streaming listing of a store directory: `readdir` as it goes, one key
/// file open at a time, batches of metadata. `null` once exhausted.
#[napi]
pub struct NativeListCursor {
    inner: Arc<Mutex<Option<core::ListCursor>>>,
}

fn next_batch(cursor: &Mutex<Option<core::ListCursor>>, max: u32) -> CoreResult<Option<core::ListResult>> {
    let mut guard = cursor.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_mut() {
        Some(c) => c.next_batch(max as usize),
        None => Ok(None),
    }
}

#[napi]
impl NativeListCursor {
    #[napi]
    pub fn next_batch_sync(&self, env: &Env, max: u32) -> Result<Option<NativeListing>> {
        Ok(next_batch(&self.inner, max).or_js(env)?.map(listing_to_js))
    }

    #[napi(ts_return_type = "Promise<NativeListing | null>")]
    pub fn next_batch_async(&self, max: u32) -> AsyncTask<CursorTask> {
        AsyncTask::new(CursorTask { cursor: self.inner.clone(), max })
    }

    /// Releases the directory handle (also done when exhausted or collected).
    #[napi]
    pub fn close(&self) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *guard = None;
    }
}

pub struct CursorTask {
    cursor: Arc<Mutex<Option<core::ListCursor>>>,
    max: u32,
}

impl Task for CursorTask {
    type Output = CoreResult<Option<core::ListResult>>;
    type JsValue = Option<NativeListing>;

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(next_batch(&self.cursor, self.max))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output.or_js(&env)?.map(listing_to_js))
    }
}

/// The file name (`<32 hex>.ksv`) of a key given as its canonical encoding.
#[napi]
pub fn file_name(key: Buffer) -> String {
    core::file_name(&key)
}

/// An LZ4 frame of `data`, written by the reference compressor (FORMAT.md §4.2).
#[napi]
pub fn lz4_compress(data: Buffer) -> Buffer {
    core::codec::lz4::compress(&data).into()
}

/// The content of one standard LZ4 frame.
#[napi]
pub fn lz4_decompress(env: &Env, frame: Buffer) -> Result<Buffer> {
    Ok(core::codec::lz4::decompress(&frame).or_js(env)?.into())
}

/// Removes a store directory's konserve files (see `konserve_core::delete_store`).
#[napi]
pub fn delete_store_sync(env: &Env, path: String) -> Result<()> {
    core::delete_store(&path).or_js(env)
}

#[napi(ts_return_type = "Promise<void>")]
pub fn delete_store_async(path: String) -> AsyncTask<DeleteStoreTask> {
    AsyncTask::new(DeleteStoreTask { path })
}

pub struct OpenTask {
    path: String,
    options: Option<core::Options>,
}

impl Task for OpenTask {
    type Output = CoreResult<core::FileStore>;
    type JsValue = NativeFileStore;

    fn compute(&mut self) -> Result<Self::Output> {
        let options = self.options.take().expect("open task computed twice");
        Ok(core::FileStore::open(&self.path, options))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(NativeFileStore { inner: Arc::new(output.or_js(&env)?), settler: Default::default() })
    }
}

pub struct DeleteStoreTask {
    path: String,
}

impl Task for DeleteStoreTask {
    type Output = CoreResult<()>;
    type JsValue = ();

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(core::delete_store(&self.path))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<()> {
        output.or_js(&env)
    }
}

/// A store operation run on the libuv threadpool.
pub enum Op {
    Get(Buffer),
    GetValue(Buffer),
    GetMeta(Buffer),
    Exists(Buffer),
    Put(Vec<NativeWrite>),
    Replace(NativeReplace),
    Delete(Vec<Buffer>),
    List,
    SweepStaging,
}

pub enum OpOutput {
    Entry(Option<core::Entry>),
    /// `[flags, serializer, ...value]`, as `getValueSync` lays it out.
    Value(Option<Vec<u8>>),
    Meta(Option<core::MetaEntry>),
    Bool(bool),
    Unit,
    Number(f64),
    Bools(Vec<bool>),
    Listing(core::ListResult),
}

pub struct StoreTask {
    store: Arc<core::FileStore>,
    op: Option<Op>,
}

impl StoreTask {
    fn run(store: &core::FileStore, op: &Op) -> CoreResult<OpOutput> {
        let out = match op {
            Op::Get(k) => OpOutput::Entry(store.get(k)?),
            Op::GetValue(k) => OpOutput::Value(store.read_value(k, |v| {
                let mut out = Vec::with_capacity(v.bytes.len() + 2);
                out.extend_from_slice(&[u8::from(v.log), v.serializer]);
                out.extend_from_slice(v.bytes);
                out
            })?),
            Op::GetMeta(k) => OpOutput::Meta(store.get_meta(k)?),
            Op::Exists(k) => OpOutput::Bool(store.exists(k)?),
            Op::Put(ws) => {
                put(store, ws)?;
                OpOutput::Unit
            }
            Op::Replace(w) => OpOutput::Number(replaced_to_js(replace(store, w)?)),
            Op::Delete(ks) => OpOutput::Bools(store.delete(&key_slices(ks))?),
            Op::List => OpOutput::Listing(store.list()?),
            Op::SweepStaging => OpOutput::Number(store.sweep_staging_again()?.map_or(-1.0, |d| d.as_secs_f64() * 1000.0)),
        };
        Ok(out)
    }
}

impl Task for StoreTask {
    type Output = CoreResult<OpOutput>;
    type JsValue = Unknown<'static>;

    fn compute(&mut self) -> Result<Self::Output> {
        // The input buffers stay referenced until `finally`, so JS cannot free them mid-write.
        let op = self.op.as_ref().expect("task computed twice");
        Ok(Self::run(&self.store, op))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<Self::JsValue> {
        let output = output.or_js(&env)?;
        let raw = env.raw();
        // SAFETY: each value is converted in the env the task resolves in.
        let value = unsafe {
            match output {
                OpOutput::Entry(e) => ToNapiValue::to_napi_value(raw, e.map(entry_to_js))?,
                OpOutput::Value(v) => ToNapiValue::to_napi_value(raw, v.map(Buffer::from))?,
                OpOutput::Meta(m) => ToNapiValue::to_napi_value(raw, m.map(meta_to_js))?,
                OpOutput::Bool(b) => ToNapiValue::to_napi_value(raw, b)?,
                OpOutput::Unit => ToNapiValue::to_napi_value(raw, ())?,
                OpOutput::Number(n) => ToNapiValue::to_napi_value(raw, n)?,
                OpOutput::Bools(v) => ToNapiValue::to_napi_value(raw, v)?,
                OpOutput::Listing(l) => ToNapiValue::to_napi_value(raw, listing_to_js(l))?,
            }
        };
        Ok(unsafe { Unknown::from_raw_unchecked(raw, value) })
    }
}

/// What settles a deferred Promise, on the JavaScript thread.
type Settle<T> = Box<dyn FnOnce(Env) -> Result<T> + Send>;

/// A write queued for the write-ahead log's committer thread, with the
/// Promise it settles.
pub enum Submit {
    Put(Vec<NativeWrite>, Option<JsDeferred<(), Settle<()>>>),
    Replace(NativeReplace, Option<JsDeferred<f64, Settle<f64>>>),
}

/// Runs on the libuv pool: encodes a write and queues it for the log's
/// committer thread (the lock and revision read of a replace included);
/// the committer settles the Promise once the frame is durable. The task's
/// own result is nothing.
pub struct SubmitTask {
    store: Arc<core::FileStore>,
    op: Submit,
}

impl Task for SubmitTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<()> {
        // The input buffers stay with the task (dropped on the JavaScript
        // thread); the core copies what it queues, so the committer never reads them.
        match &mut self.op {
            Submit::Put(writes, deferred) => {
                let deferred = deferred.take().expect("task computed twice");
                self.store.put_then(&core_writes(writes), Box::new(move |r| deferred.resolve(Box::new(move |env| r.or_js(&env)))));
            }
            Submit::Replace(w, deferred) => {
                let deferred = deferred.take().expect("task computed twice");
                let settle = move |r: CoreResult<core::Replaced>| deferred.resolve(Box::new(move |env| r.map(replaced_to_js).or_js(&env)));
                match expected_revision(w.expected_revision).and_then(|e| serializer_id(w.serializer).map(|s| (e, s))) {
                    Err(e) => settle(Err(e)),
                    Ok((expected_revision, serializer)) => {
                        let r = core::Replace {
                            key: &w.key,
                            serializer,
                            meta: &w.meta,
                            revision_at: w.revision_at as usize,
                            value: &w.value,
                            expected_revision,
                            lock: w.lock,
                        };
                        self.store.replace_then(&r, Box::new(settle));
                    }
                }
            }
        }
        Ok(())
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> Result<()> {
        Ok(())
    }
}

/// Registers a staging file the TypeScript engine is writing in the store in
/// the canonical directory `dir` with the core's in-flight registry, so that
/// a native store's sweep on open in this process leaves it alone (its name
/// has this process's pid). Released by `stagingRelease`.
#[napi]
pub fn staging_register(dir: String, name: String) {
    core::staging::register_foreign(std::path::Path::new(&dir), &name);
}

/// Ends a registration of `stagingRegister`.
#[napi]
pub fn staging_release(dir: String, name: String) {
    core::staging::release_foreign(std::path::Path::new(&dir), &name);
}

/// Whether a staging file named with this process's pid is in flight in the
/// core (a native write, or one the TypeScript engine registered): the
/// TypeScript engine's sweep on open asks before removing it.
#[napi]
pub fn staging_in_flight(dir: String, name: String) -> bool {
    core::staging::in_flight_in(std::path::Path::new(&dir), &name)
}

/// A threadpool task that does nothing (or only spins for `busy_micros`
/// microseconds): the floor of every async call, the cost of the thread hop
/// alone (queue, wake a pool thread, wake the JavaScript thread, settle a
/// Promise). `bench/async-floor.mjs` measures the store's async calls
/// against it; with `busy_micros` set, how the hop's cost grows when the
/// JavaScript thread sleeps as long as a store operation takes.
#[napi(ts_return_type = "Promise<void>")]
pub fn noop_async(busy_micros: Option<u32>) -> AsyncTask<NoopTask> {
    AsyncTask::new(NoopTask { busy: std::time::Duration::from_micros(u64::from(busy_micros.unwrap_or(0))) })
}

pub struct NoopTask {
    busy: std::time::Duration,
}

impl Task for NoopTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<()> {
        let start = std::time::Instant::now();
        while start.elapsed() < self.busy {
            std::hint::spin_loop();
        }
        Ok(())
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> Result<()> {
        Ok(())
    }
}
