//! Binding of the core's append logs (FORMAT.md §4.6): append records (one
//! or more, as one group commit), read the records with a cursor, trim. Every operation is blocking (`*Sync`) and
//! an `AsyncTask` on the libuv threadpool (`*Async`).
//!
//! Numbers cross as JS numbers (f64): indexes and stamps are integers below
//! 2^53, checked on the way in. A log with no record reports `lastIndex: -1`
//! and `lastStamp: 0`. Appends and trims expect the caller to hold the key's
//! lock; a cursor needs none.

use std::sync::{Arc, Mutex, MutexGuard};

use konserve_core as core;
use konserve_core::format::log::{LogInfo, LogRecord, NewRecord};
use konserve_core::log::LogCursor;
use napi::bindgen_prelude::*;
use napi::{Env, Task};
use napi_derive::napi;

use crate::{invalid, CoreResult, NativeFileStore, OrJs};

/// Where a log stands.
#[napi(object)]
pub struct NativeLogInfo {
    /// The index of the first record (0 when there is none).
    pub first_index: f64,
    /// The index of the last record; -1 when there is none.
    pub last_index: f64,
    /// The stamp (ms since the epoch) of the last record; 0 when there is none.
    pub last_stamp: f64,
}

pub(crate) fn info_to_js(i: LogInfo) -> NativeLogInfo {
    NativeLogInfo {
        first_index: i.first_index as f64,
        last_index: i.last_index.map_or(-1.0, |n| n as f64),
        last_stamp: i.last_stamp as f64,
    }
}

/// One record of a log, decoded (decrypted and decompressed).
#[napi(object)]
pub struct NativeLogRecord {
    pub index: f64,
    /// The stamp of its append (ms since the epoch).
    pub stamp: f64,
    /// Serializer id of `bytes`.
    pub serializer: u32,
    pub bytes: Buffer,
}

fn record_to_js(r: LogRecord) -> NativeLogRecord {
    NativeLogRecord { index: r.index as f64, stamp: r.stamp as f64, serializer: r.serializer as u32, bytes: r.bytes.into() }
}

fn records_to_js(batch: Option<Vec<LogRecord>>) -> Option<Vec<NativeLogRecord>> {
    batch.map(|b| b.into_iter().map(record_to_js).collect())
}

/// A JS number that must be an integer in `0 ..= 2^53 - 1`.
fn whole(n: f64, what: &str) -> CoreResult<u64> {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= MAX_SAFE {
        Ok(n as u64)
    } else {
        Err(invalid(format!("{what} must be an integer in 0..=2^53-1, got {n}")))
    }
}

fn serializer(n: u32) -> CoreResult<u8> {
    u8::try_from(n).map_err(|_| invalid(format!("serializer id {n} is not in 0..=255")))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A record to append: its index is the next one, chosen by the store.
#[napi(object)]
pub struct NativeNewRecord {
    /// Serializer id of `bytes` (0..=255).
    pub serializer: u32,
    /// The stamp of the append (ms since the epoch), an integer below 2^53.
    pub stamp: f64,
    /// The element's serialized bytes (the store compresses and encrypts them).
    pub bytes: Buffer,
}

/// A record checked on the way in; its buffer stays referenced until the append is done.
pub struct CheckedRecord {
    serializer: u8,
    stamp: u64,
    bytes: Buffer,
}

fn check_records(records: Vec<NativeNewRecord>) -> CoreResult<Vec<CheckedRecord>> {
    records
        .into_iter()
        .map(|r| Ok(CheckedRecord { serializer: serializer(r.serializer)?, stamp: whole(r.stamp, "the stamp")?, bytes: r.bytes }))
        .collect()
}

fn append(store: &core::FileStore, key: &[u8], records: &[CheckedRecord], create_meta: &[u8]) -> core::Result<LogInfo> {
    let news: Vec<NewRecord<'_>> =
        records.iter().map(|r| NewRecord { serializer: r.serializer, stamp: r.stamp, payload: &r.bytes }).collect();
    store.log_append(key, &news, create_meta)
}

/// Appends `records` (one or more, in order) to the log of `key` (its CKE)
/// as one group commit: one write and one fsync. A missing key becomes a new
/// log with `createMeta` as its metadata. Returns where the log stands after
/// the last record. No records: ERR_INVALID_ARGUMENT; a key holding
/// something else: ERR_NOT_A_LOG.
#[napi]
pub fn log_append_sync(
    env: &Env,
    store: &NativeFileStore,
    key: Buffer,
    records: Vec<NativeNewRecord>,
    create_meta: Buffer,
) -> Result<NativeLogInfo> {
    let records = check_records(records).or_js(env)?;
    let info = append(&store.inner, &key, &records, &create_meta).or_js(env)?;
    Ok(info_to_js(info))
}

#[napi(ts_return_type = "Promise<NativeLogInfo>")]
pub fn log_append_async(
    env: &Env,
    store: &NativeFileStore,
    key: Buffer,
    records: Vec<NativeNewRecord>,
    create_meta: Buffer,
) -> Result<AsyncTask<LogWriteTask>> {
    let op = LogWrite::Append { key, records: check_records(records).or_js(env)?, create_meta };
    Ok(AsyncTask::new(LogWriteTask { store: store.inner.clone(), op }))
}

/// Rewrites the log of `key` atomically with `meta` and only its records of
/// index `keepFrom` or more (they keep their indexes). A missing key writes
/// nothing and reports an empty log.
#[napi]
pub fn log_trim_sync(env: &Env, store: &NativeFileStore, key: Buffer, keep_from: f64, meta: Buffer) -> Result<NativeLogInfo> {
    let keep_from = whole(keep_from, "keepFrom").or_js(env)?;
    Ok(info_to_js(store.inner.log_trim(&key, keep_from, &meta).or_js(env)?))
}

#[napi(ts_return_type = "Promise<NativeLogInfo>")]
pub fn log_trim_async(env: &Env, store: &NativeFileStore, key: Buffer, keep_from: f64, meta: Buffer) -> Result<AsyncTask<LogWriteTask>> {
    let op = LogWrite::Trim { key, keep_from: whole(keep_from, "keepFrom").or_js(env)?, meta };
    Ok(AsyncTask::new(LogWriteTask { store: store.inner.clone(), op }))
}

/// An append or a trim, run on the libuv threadpool. The input buffers stay
/// referenced by the task until it is done.
pub enum LogWrite {
    Append { key: Buffer, records: Vec<CheckedRecord>, create_meta: Buffer },
    Trim { key: Buffer, keep_from: u64, meta: Buffer },
}

pub struct LogWriteTask {
    store: Arc<core::FileStore>,
    op: LogWrite,
}

impl Task for LogWriteTask {
    type Output = CoreResult<LogInfo>;
    type JsValue = NativeLogInfo;

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(match &self.op {
            LogWrite::Append { key, records, create_meta } => append(&self.store, key, records, create_meta),
            LogWrite::Trim { key, keep_from, meta } => self.store.log_trim(key, *keep_from, meta),
        })
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<NativeLogInfo> {
        Ok(info_to_js(output.or_js(&env)?))
    }
}

type SharedCursor = Arc<Mutex<Option<LogCursor>>>;

/// The records of a log as of its opening, in batches; `null` once exhausted.
/// A torn tail (a crash during an append) just ends the log; damage in the
/// middle is `ERR_CORRUPT` once reached. Holds the file open until exhausted,
/// closed or collected.
#[napi]
pub struct NativeLogCursor {
    inner: SharedCursor,
}

fn next_batch(cursor: &Mutex<Option<LogCursor>>, max: u32) -> core::Result<Option<Vec<LogRecord>>> {
    let mut guard = lock(cursor);
    let Some(c) = guard.as_mut() else { return Ok(None) };
    let batch = c.next_batch(max as usize);
    if !matches!(batch, Ok(Some(_))) {
        // Exhausted or failed: release the file now.
        *guard = None;
    }
    batch
}

#[napi]
impl NativeLogCursor {
    /// The next at most `max` (at least 1) records, or `null` at the end.
    #[napi(ts_return_type = "NativeLogRecord[] | null")]
    pub fn next_batch_sync(&self, env: &Env, max: u32) -> Result<Option<Vec<NativeLogRecord>>> {
        Ok(records_to_js(next_batch(&self.inner, max).or_js(env)?))
    }

    #[napi(ts_return_type = "Promise<NativeLogRecord[] | null>")]
    pub fn next_batch_async(&self, max: u32) -> AsyncTask<LogBatchTask> {
        AsyncTask::new(LogBatchTask { cursor: self.inner.clone(), max })
    }

    /// Releases the file (also done when exhausted or collected).
    #[napi]
    pub fn close(&self) {
        *lock(&self.inner) = None;
    }
}

pub struct LogBatchTask {
    cursor: SharedCursor,
    max: u32,
}

impl Task for LogBatchTask {
    type Output = CoreResult<Option<Vec<LogRecord>>>;
    type JsValue = Option<Vec<NativeLogRecord>>;

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(next_batch(&self.cursor, self.max))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(records_to_js(output.or_js(&env)?))
    }
}

fn cursor_to_js(c: Option<LogCursor>) -> Option<NativeLogCursor> {
    c.map(|c| NativeLogCursor { inner: Arc::new(Mutex::new(Some(c))) })
}

/// Opens the log of `key` for reading: `null` if the key is missing,
/// `ERR_NOT_A_LOG` if it holds something else.
#[napi]
pub fn log_open_sync(env: &Env, store: &NativeFileStore, key: Buffer) -> Result<Option<NativeLogCursor>> {
    Ok(cursor_to_js(store.inner.open_log(&key).or_js(env)?))
}

#[napi(ts_return_type = "Promise<NativeLogCursor | null>")]
pub fn log_open_async(store: &NativeFileStore, key: Buffer) -> AsyncTask<LogOpenTask> {
    AsyncTask::new(LogOpenTask { store: store.inner.clone(), key })
}

pub struct LogOpenTask {
    store: Arc<core::FileStore>,
    key: Buffer,
}

impl Task for LogOpenTask {
    type Output = CoreResult<Option<LogCursor>>;
    type JsValue = Option<NativeLogCursor>;

    fn compute(&mut self) -> Result<Self::Output> {
        Ok(self.store.open_log(&self.key))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(cursor_to_js(output.or_js(&env)?))
    }
}
