//! A blob write under crashes and lone I/O errors (the crash harness of
//! tests/support/crash.rs): the key holds the old blob or the new one, whole,
//! and an acknowledged blob survives.

mod support;

use std::path::Path;
use std::sync::Arc;
use support::fixtures::{noise, pattern};

use konserve_core::format::blob::CHUNK_SIZE;
use konserve_core::{ErrorCode, FileStore, Options, Result};
use support::crash::{self, SimFs, Workload, Writeback};
use support::key;

const META: &[u8] = b"\x81\xa4type\xa6binary";
const MIB: usize = CHUNK_SIZE;

fn open_sim(fs: &SimFs, dir: &Path, options: &Options) -> Result<Arc<FileStore>> {
    crash::open(fs, dir, options).map(Arc::new)
}

/// Writes `blob` in pieces of 700 KiB (so chunks are sealed mid-write).
fn try_write(store: &Arc<FileStore>, blob: &[u8]) -> Result<()> {
    let mut w = store.blob_writer(&key("b"), META)?;
    for p in blob.chunks(700 << 10) {
        w.write(p)?;
    }
    w.commit()
}

/// The workload: `old` written without a fault, then `new` (the part the
/// harness crashes). `run` returns the store and whether `new` was acknowledged.
#[allow(clippy::type_complexity)] // a Workload of two closures
fn replace_blob<'a>(
    options: &'a Options,
    dir: &'static str,
    old: &'a [u8],
    new: &'a [u8],
) -> Workload<impl Fn(&SimFs, &Path) -> Arc<FileStore> + 'a, impl Fn(&SimFs, &Path, Arc<FileStore>) -> (Arc<FileStore>, Result<()>) + 'a> {
    Workload {
        dir,
        prepare: move |fs: &SimFs, dir: &Path| {
            let store = open_sim(fs, dir, options).unwrap();
            try_write(&store, old).unwrap();
            store
        },
        run: move |_: &SimFs, _: &Path, store: Arc<FileStore>| {
            let result = try_write(&store, new);
            (store, result)
        },
    }
}

fn crash_at_every_step(options: Options, plans: &[(Writeback, u64)], dir: &'static str) {
    let (old, new) = if options.compressor == 0 {
        (noise(MIB + MIB / 2, 1), noise(2 * MIB + 3, 2))
    } else {
        // Compressible, so that encryption in a debug build stays quick.
        (pattern(MIB + MIB / 2, 1), pattern(2 * MIB + 3, 2))
    };
    let workload = replace_blob(&options, dir, &old, &new);
    let total = workload.steps();
    assert!(total >= 8, "{total} steps");
    workload.crash_at_every_step(plans, |fs, dir, (store, result), point| {
        let ctx = point.crash_ctx();
        drop(store);
        let acked = result.is_ok();
        assert_eq!(acked, point.n >= point.total, "{ctx}");
        let store = open_sim(fs, dir, &options).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
        let got = store.get(&key("b")).unwrap_or_else(|e| panic!("{ctx}: get: {e}")).unwrap().value;
        if acked {
            assert!(got == new, "{ctx}: an acknowledged blob was lost");
        } else {
            assert!(got == old || got == new, "{ctx}: the key holds neither blob ({} bytes)", got.len());
        }
        let r = store.open_blob(&key("b")).unwrap().unwrap();
        assert!(r.read_at(0, usize::MAX).unwrap() == got, "{ctx}: the reader agrees with get");
        assert_eq!(crash::staging_files(fs, dir).len(), 0, "{ctx}: staging files left after reopen");
        // The recovered store takes blobs.
        try_write(&store, b"after").unwrap();
    });
}

#[test]
fn a_blob_write_survives_a_crash_at_every_step() {
    let options = Options { sync_blob: true, ..Options::default() };
    crash_at_every_step(
        options,
        &[(Writeback::None, 1), (Writeback::Unordered, 2), (Writeback::Unordered, 3), (Writeback::Ordered, 4), (Writeback::Ordered, 5)],
        "/sim/blob-plain",
    );
}

#[test]
fn a_compressed_encrypted_blob_write_survives_a_crash_at_every_step() {
    let options = Options { sync_blob: true, compressor: 1, encryption_key: Some(b"k".to_vec()), ..Options::default() };
    crash_at_every_step(options, &[(Writeback::Unordered, 6), (Writeback::Ordered, 7)], "/sim/blob-codec");
}

/// A lone I/O error at any step of a blob write: the write fails,
/// leaves no staging file, the key keeps a whole blob, and after a
/// failed fsync the store refuses writes.
#[test]
fn a_lone_io_error_fails_the_blob_write_and_leaves_no_staging_file() {
    let options = Options { sync_blob: true, ..Options::default() };
    let (old, new) = (noise(MIB + 1, 1), noise(2 * MIB + 3, 2));
    replace_blob(&options, "/sim/blob-eio", &old, &new).fault_at_every_step(1, None, |fs, dir, (store, result), point| {
        let call = fs.failed_call().unwrap();
        let ctx = format!("EIO at step {} of {} ({call})", point.n, point.total);
        let got = store.get(&key("b")).unwrap().unwrap().value;
        match result {
            Ok(()) => panic!("{ctx}: the write succeeded"),
            Err(e) if call == "sync" || call == "sync_dir" => {
                assert_eq!(e.code(), ErrorCode::Fsync, "{ctx}");
                assert_eq!(try_write(&store, b"x").unwrap_err().code(), ErrorCode::StorePoisoned, "{ctx}");
            }
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::Io, "{ctx}: {e}");
                assert!(got == old, "{ctx}: the old blob is kept");
            }
        }
        assert!(got == old || got == new, "{ctx}");
        assert_eq!(crash::staging_files(fs, dir).len(), 0, "{ctx}: a staging file is left");
        fs.crash(Writeback::None);
        let store = open_sim(fs, dir, &options).unwrap();
        let got = store.get(&key("b")).unwrap().unwrap().value;
        assert!(got == old || got == new, "{ctx}: after a crash");
    });
}
