//! Data and readers the log and blob tests (crash and plain) share.

use konserve_core::format::log::{LogRecord, NewRecord};
use konserve_core::{FileStore, Result};

pub fn read_all(store: &FileStore, k: &[u8]) -> Result<Vec<LogRecord>> {
    let mut cursor = store.open_log(k)?.expect("the log exists");
    let mut out = Vec::new();
    while let Some(batch) = cursor.next_batch(7)? {
        assert!(!batch.is_empty() && batch.len() <= 7);
        out.extend(batch);
    }
    Ok(out)
}

pub fn payload(i: u64) -> Vec<u8> {
    let n = match i % 4 {
        0 => 0,
        1 => 10,
        2 => 300,
        _ => (i * 37 % 2000) as usize,
    };
    (0..n).map(|j| (j as u64 * 7 + i) as u8 % 13 + b'a').collect()
}

pub fn rec(index: u64, bytes: Vec<u8>) -> LogRecord {
    LogRecord { index, stamp: 1000 + index, serializer: (index % 3) as u8, bytes }
}

/// One record of serializer 1.
pub fn one(stamp: u64, payload: &[u8]) -> [NewRecord<'_>; 1] {
    [NewRecord { serializer: 1, stamp, payload }]
}

pub fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap())
}

pub fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + (i >> 10)) as u8) ^ salt).collect()
}

/// Bytes that LZ4 cannot shrink, so chunk sizes stay realistic.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A value's metadata map with konserve's revision slot (REVISION_SLOT) last,
/// and where the slot starts: what the facade hands a fused replace.
pub fn slotted_meta() -> (Vec<u8>, usize) {
    let mut m = b"\x83\xa4type\xa5value\xa9lastWrite\xd6\xff\x00\x00\x00\x01\xa8revision".to_vec();
    let at = m.len();
    m.extend_from_slice(&konserve_core::format::meta::REVISION_SLOT);
    (m, at)
}

/// Polls `done` every 2 ms until it holds, failing after `secs` seconds (a
/// condition with a deadline, never a bare sleep).
pub fn wait_until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
