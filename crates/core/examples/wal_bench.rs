//! The go/no-go measurement of the write-ahead log protocol (docs/WAL.md §1,
//! issue 18): on real files in a temp dir, durable puts of distinct keys by
//!
//! - `raw`: the raw file-per-key loop (staging file, write, fsync, close,
//!   rename, directory fsync), the reference;
//! - `store`: today's core `FileStore::put` with `sync_blob` on;
//! - `wal`: `Wal::append` of a put record (group commit, one `fdatasync` per
//!   frame), its checkpoints included where they run:
//!   - `wal` timed (a burst that never reaches the cap: no checkpoint),
//!   - `burst`: N distinct keys, 64 in flight, timed to the last acknowledgement,
//!   - `burst+ckpt`: the same N keys checkpointed afterwards, timed with it,
//!   - `stream`: M distinct keys with a small back-pressure cap, so that the
//!     committer checkpoints during the stream (every put ends up in its key file),
//!   - `bg`: timed, with a second thread checkpointing in a loop meanwhile
//!     (puts while a checkpoint runs);
//!   - the checkpointing cases twice: fsync of each staging file and one
//!     directory fsync per slice, and (`/syncfs`) no fsync per file but one
//!     `syncfs` per checkpoint (`WalOptions::checkpoint_syncfs`);
//!   - `wal/nohold`, `burst/nohold`: `wal` and `burst` with the log's lock
//!     file taken and released for every frame (`WalOptions::lock_hold`
//!     zero: the protocol before the lock was kept across frames), in the
//!     same rounds;
//!   - `wal/queue`, `burst/queue` (64 in flight only): `Wal::submit` from one thread that
//!     keeps 64 appends in flight and is woken by their completions (the
//!     committer thread commits), instead of 64 threads each blocked in
//!     `Wal::append` (how a binding with few threads would drive it);
//!
//! 1 at a time and 64 in flight, values of 100 B and 1 KiB, in interleaved
//! rounds (the order reversed every other round), medians.
//!
//! cargo run --release -p konserve-core --example wal_bench -- [--rounds 5] [--ms 800] [--burst 2000] [--stream 20000] [--stream1 4000] [--cap-kib 256] [--json] [--reverse]
//!
//! `--scan-mib N` instead measures how long opening a log holding N MiB of
//! frames (1 KiB values) takes, its pages cached: the scan of §5's bound.
//!
//! `--json` prints one line per case and round (bench/wal-protocol.mjs reads
//! them and adds lmdb in the same rounds); otherwise a table of medians.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use konserve_core::format::file::encode_file;
use konserve_core::format::key::{encode, Key};
use konserve_core::format::wal::{NewWalRecord, WalOp};
use konserve_core::vfs::RealFs;
use konserve_core::wal::{record_hash, Wal, WalOptions};
use konserve_core::{FileStore, Options, Write};

const CONC: usize = 64;
/// The cases, in the order of the table.
const CASES: [&str; 14] = [
    "raw",
    "store",
    "wal",
    "wal/nohold",
    "wal/queue",
    "burst",
    "burst/nohold",
    "burst/queue",
    "burst+ckpt",
    "burst+ckpt/syncfs",
    "bg",
    "bg/syncfs",
    "stream",
    "stream/syncfs",
];
const META: &[u8] = b"\x80";

struct Args {
    rounds: usize,
    ms: u64,
    burst: usize,
    stream: usize,
    stream1: usize,
    cap: u64,
    json: bool,
    reverse: bool,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let num = |name: &str, def: u64| -> u64 {
        argv.iter().position(|a| a == &format!("--{name}")).and_then(|i| argv.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(def)
    };
    Args {
        rounds: num("rounds", 5) as usize,
        ms: num("ms", 800),
        burst: num("burst", 2000) as usize,
        stream: num("stream", 20000) as usize,
        stream1: num("stream1", 4000) as usize,
        cap: num("cap-kib", 256) << 10,
        json: argv.iter().any(|a| a == "--json"),
        reverse: argv.iter().any(|a| a == "--reverse"),
    }
}

fn cke(i: u64) -> Vec<u8> {
    encode(&Key::str(&format!("k{i:08}")))
}

/// Runs `op(i)` with `conc` threads, each taking the next i, until `n` ops
/// (or `ms` elapsed, when given): ops/s.
fn drive(conc: usize, n: u64, ms: Option<u64>, op: impl Fn(u64) + Sync) -> f64 {
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = ms.map(|ms| start + Duration::from_millis(ms));
    std::thread::scope(|s| {
        for _ in 0..conc {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                op(i);
                done.fetch_add(1, Ordering::Relaxed);
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    stop.store(true, Ordering::Relaxed);
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Keeps `conc` appends in flight through `Wal::submit` from this one
/// thread, woken by their completions, until `n` were submitted or `ms`
/// elapsed, then waits for the last: ops/s.
fn drive_queue(w: &Arc<Wal>, conc: usize, n: u64, ms: Option<u64>, value: &[u8]) -> f64 {
    // (in flight, done)
    let state = Arc::new((Mutex::new((0usize, 0u64)), Condvar::new()));
    let start = Instant::now();
    let deadline = ms.map(|ms| start + Duration::from_millis(ms));
    let mut i = 0u64;
    loop {
        {
            let mut g = state.0.lock().unwrap();
            while g.0 >= conc {
                g = state.1.wait(g).unwrap();
            }
            if i >= n || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            g.0 += 1;
        }
        let k = cke(i);
        i += 1;
        let p = encode_file(&k, 0, META, value).unwrap();
        let st = Arc::clone(&state);
        let rec = [NewWalRecord { op: WalOp::Put, key_hash: record_hash(&k), payload: &p }];
        w.submit(
            &rec,
            Box::new(move |r| {
                r.unwrap();
                let mut g = st.0.lock().unwrap();
                g.0 -= 1;
                g.1 += 1;
                st.1.notify_one();
            }),
        )
        .unwrap();
    }
    let mut g = state.0.lock().unwrap();
    while g.0 > 0 {
        g = state.1.wait(g).unwrap();
    }
    g.1 as f64 / start.elapsed().as_secs_f64()
}

fn raw_put(dir: &Path, i: u64, value: &[u8]) {
    let name = format!("{:032x}.ksv", konserve_core::keyhash::key_hash(&cke(i)));
    let stage = dir.join(format!(".{name}.{}.stage", std::process::id()));
    let mut f = OpenOptions::new().write(true).create_new(true).open(&stage).unwrap();
    f.write_all(value).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::rename(&stage, dir.join(name)).unwrap();
    File::open(dir).unwrap().sync_all().unwrap();
}

struct Bench {
    root: PathBuf,
    seq: AtomicU64,
    a: Args,
}

impl Bench {
    fn fresh(&self) -> PathBuf {
        let d = self.root.join(self.seq.fetch_add(1, Ordering::Relaxed).to_string());
        fs::create_dir(&d).unwrap();
        d
    }

    fn wal(&self, dir: &Path, cap: u64, syncfs: bool) -> Wal {
        self.wal_with(dir, WalOptions { checkpoint_cap: cap, checkpoint_syncfs: syncfs, ..WalOptions::default() })
    }

    fn wal_with(&self, dir: &Path, o: WalOptions) -> Wal {
        Wal::open(Arc::new(RealFs), dir, o).unwrap()
    }

    fn wal_put(w: &Wal, i: u64, value: &[u8]) {
        let k = cke(i);
        let p = encode_file(&k, 0, META, value).unwrap();
        w.append(&[NewWalRecord { op: WalOp::Put, key_hash: record_hash(&k), payload: &p }]).unwrap();
    }

    /// One case: ops/s.
    fn run(&self, case: &str, conc: usize, size: usize) -> f64 {
        let value: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let v = &value[..];
        let dir = self.fresh();
        let ms = Some(self.a.ms);
        // A case named `…/syncfs` checkpoints with one syncfs, the others fsync each file.
        let syncfs = case.ends_with("/syncfs");
        // A case named `…/nohold` takes and releases the lock file per frame.
        let nohold = WalOptions { checkpoint_cap: u64::MAX, lock_hold: Duration::ZERO, ..WalOptions::default() };
        let r = match case.trim_end_matches("/syncfs") {
            "raw" => {
                let dir = &dir;
                drive(conc, u64::MAX, ms, |i| raw_put(dir, i, v))
            }
            "store" => {
                let s = FileStore::open(&dir, Options::default()).unwrap();
                drive(conc, u64::MAX, ms, |i| s.put(&[Write { key: &cke(i), serializer: 0, meta: META, value: v }]).unwrap())
            }
            "wal" => {
                let w = self.wal(&dir, u64::MAX, syncfs);
                drive(conc, u64::MAX, ms, |i| Self::wal_put(&w, i, v))
            }
            "wal/nohold" => {
                let w = self.wal_with(&dir, nohold);
                drive(conc, u64::MAX, ms, |i| Self::wal_put(&w, i, v))
            }
            "wal/queue" => {
                let w = Arc::new(self.wal(&dir, u64::MAX, false));
                drive_queue(&w, conc, u64::MAX, ms, v)
            }
            "burst/queue" => {
                let w = Arc::new(self.wal(&dir, u64::MAX, false));
                drive_queue(&w, conc, self.a.burst as u64, None, v)
            }
            "burst" | "burst+ckpt" | "burst/nohold" => {
                let w = if case == "burst/nohold" { self.wal_with(&dir, nohold) } else { self.wal(&dir, u64::MAX, syncfs) };
                let n = self.a.burst as u64;
                let start = Instant::now();
                drive(conc, n, None, |i| Self::wal_put(&w, i, v));
                if case.starts_with("burst+ckpt") {
                    assert!(w.checkpoint().unwrap());
                    assert_eq!(w.stats().checkpointed_keys, n);
                }
                n as f64 / start.elapsed().as_secs_f64()
            }
            "stream" => {
                let w = self.wal(&dir, self.a.cap, syncfs);
                let n = if conc == 1 { self.a.stream1 } else { self.a.stream } as u64;
                let start = Instant::now();
                drive(conc, n, None, |i| Self::wal_put(&w, i, v));
                // Whatever the last checkpoint left, so every put is in its key file.
                assert!(w.checkpoint().unwrap());
                let r = n as f64 / start.elapsed().as_secs_f64();
                let st = w.stats();
                assert!(st.checkpoints >= 2, "{st:?}");
                r
            }
            "bg" => {
                let w = self.wal(&dir, u64::MAX, syncfs);
                let stop = AtomicBool::new(false);
                std::thread::scope(|s| {
                    s.spawn(|| {
                        while !stop.load(Ordering::Relaxed) {
                            w.checkpoint().unwrap();
                        }
                    });
                    let r = drive(conc, u64::MAX, ms, |i| Self::wal_put(&w, i, v));
                    stop.store(true, Ordering::Relaxed);
                    r
                })
            }
            _ => unreachable!("{case}"),
        };
        let _ = fs::remove_dir_all(&dir);
        r
    }
}

fn load() -> String {
    fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let scan_mib = std::env::args().skip_while(|x| x != "--scan-mib").nth(1).and_then(|v| v.parse::<u64>().ok());
    if let Some(mib) = scan_mib {
        return scan(mib);
    }
    let root = tempfile::Builder::new().prefix("ks-walbench-").tempdir().unwrap();
    let bench = Bench { root: root.path().to_path_buf(), seq: AtomicU64::new(0), a };
    let a = &bench.a;
    let mut cases: Vec<(&str, usize, usize)> = Vec::new();
    for size in [100, 1024] {
        for conc in [1, CONC] {
            for case in ["raw", "store", "wal", "wal/nohold", "stream", "stream/syncfs"] {
                cases.push((case, conc, size));
            }
        }
        for case in ["wal/queue", "burst", "burst/nohold", "burst/queue", "burst+ckpt", "burst+ckpt/syncfs", "bg", "bg/syncfs"] {
            cases.push((case, CONC, size));
        }
    }
    let load_before = load();
    let mut results: std::collections::BTreeMap<(usize, usize, &str), Vec<f64>> = Default::default();
    for round in 0..a.rounds {
        let mut order = cases.clone();
        if (round % 2 == 1) != a.reverse {
            order.reverse();
        }
        for &(case, conc, size) in &order {
            let r = bench.run(case, conc, size);
            if a.json {
                println!("{{\"case\":\"{case}\",\"conc\":{conc},\"size\":{size},\"round\":{round},\"ops\":{r:.1}}}");
            }
            results.entry((size, conc, case)).or_default().push(r);
        }
        eprintln!("round {}/{} done (load {})", round + 1, a.rounds, load());
    }
    if a.json {
        return;
    }
    println!(
        "wal_bench: {} rounds of {} ms, burst {}, stream {} (1 at a time: {}), cap {} KiB; load average {} before, {} after",
        a.rounds,
        a.ms,
        a.burst,
        a.stream,
        a.stream1,
        a.cap >> 10,
        load_before,
        load()
    );
    println!("| value | in flight | case | ops/s (median) | × raw |\n|---|--:|---|--:|--:|");
    for size in [100, 1024] {
        for conc in [1, CONC] {
            let raw = median(results.get_mut(&(size, conc, "raw")).unwrap());
            for case in CASES {
                let Some(v) = results.get_mut(&(size, conc, case)) else { continue };
                let m = median(v);
                println!("| {size} B | {conc} | {case} | {m:.0} | {:.2} |", m / raw);
            }
        }
    }
}

/// Fills a log with `mib` MiB of frames, then times opening it (median of 5).
fn scan(mib: u64) {
    let root = tempfile::Builder::new().prefix("ks-walscan-").tempdir().unwrap();
    let dir = root.path();
    let opts = || WalOptions { checkpoint_cap: u64::MAX, ..WalOptions::default() };
    let w = Wal::open(Arc::new(RealFs), dir, opts()).unwrap();
    let value = vec![7u8; 1024];
    let mut i = 0u64;
    while w.log_bytes() < mib << 20 {
        let payloads: Vec<(Vec<u8>, [u8; 16])> = (0..4000)
            .map(|_| {
                i += 1;
                let k = cke(i);
                (encode_file(&k, 0, META, &value).unwrap(), record_hash(&k))
            })
            .collect();
        let recs: Vec<NewWalRecord<'_>> = payloads.iter().map(|(p, h)| NewWalRecord { op: WalOp::Put, key_hash: *h, payload: p }).collect();
        w.append(&recs).unwrap();
    }
    let bytes = w.log_bytes();
    drop(w);
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let w = Wal::open(Arc::new(RealFs), dir, opts()).unwrap();
            assert_eq!(w.log_bytes(), bytes);
            t.elapsed().as_secs_f64()
        })
        .collect();
    let m = median(&mut times);
    println!(
        "wal_bench --scan-mib {mib}: {} records, {:.1} MiB of frames: open (scan, pages cached) {:.0} ms median of 5, {:.0} MiB/s; load average {}",
        i,
        bytes as f64 / (1 << 20) as f64,
        m * 1e3,
        bytes as f64 / (1 << 20) as f64 / m,
        load()
    );
}
