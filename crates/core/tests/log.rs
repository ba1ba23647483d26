//! Append logs in a store: appends, group commits, trims, damage, the earlier
//! layout (crashes: tests/crash_log.rs).

mod support;

use std::collections::BTreeMap;
use std::fs;
use support::fixtures::{le_u32, one, payload, read_all, rec};

use konserve_core::codec::{Codec, OsRandom, SegmentContext};
use konserve_core::format::file::{FLAGS_COMMITTED_LOG, FLAG_LOG, HEADER_LEN, LOG_COMMIT_AREA};
use konserve_core::format::key::{encode, Key};
use konserve_core::format::log::*;
use konserve_core::log::*;
use konserve_core::{keyhash, ErrorCode, FileStore, Options, Result, Write};
use support::crash;
use xxhash_rust::xxh3::xxh3_64;

/// Forgets what this process verified of the logs of `store`, as if
/// another process were appending next.
fn forget_verified(store: &FileStore) {
    store.forget_verified_logs();
}

fn key(s: &str) -> Vec<u8> {
    encode(&Key::str(s))
}

/// The combinations share a directory: a keyed store there reads the
/// plaintext files of the others as a migration does (FORMAT.md §4.7).
fn with_codec(compressor: u8, secret: Option<&str>) -> Options {
    Options { compressor, encryption_key: secret.map(|k| k.as_bytes().to_vec()), accept_plaintext: secret.is_some(), ..Options::default() }
}

const COMBOS: [(u8, Option<&str>); 4] = [(0, None), (1, None), (0, Some("s3cr3t")), (1, Some("s3cr3t"))];
const META: &[u8] = b"\x81\xa4type\xaaappend-log";

fn append(store: &FileStore, k: &[u8], r: &LogRecord) -> Result<LogInfo> {
    store.log_append(k, &[new_record(r)], META)
}

fn new_record(r: &LogRecord) -> NewRecord<'_> {
    NewRecord { serializer: r.serializer, stamp: r.stamp, payload: &r.bytes }
}

fn info(first: u64, last: Option<u64>, stamp: u64) -> LogInfo {
    LogInfo { first_index: first, last_index: last, last_stamp: stamp }
}

#[test]
fn every_codec_combination_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    for (c, secret) in COMBOS {
        let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
        let k = key(&format!("log-{c}-{secret:?}"));
        let mut want = Vec::new();
        for i in 0..20 {
            let r = rec(i, payload(i));
            assert_eq!(append(&store, &k, &r).unwrap(), info(0, Some(i), 1000 + i));
            want.push(r);
        }
        // A record larger than the read buffer, then a few more.
        let big: Vec<u8> = b"PLAINTEXT-MARKER ".iter().copied().cycle().take(700_000).collect();
        want.push(rec(20, big));
        append(&store, &k, &want[20]).unwrap();
        for i in 21..25 {
            want.push(rec(i, payload(i)));
            append(&store, &k, &want[i as usize]).unwrap();
        }
        assert_eq!(read_all(&store, &k).unwrap(), want);
        let bytes = fs::read(store.file_path(&k)).unwrap();
        assert_eq!((bytes[6], bytes[7]), (c, u8::from(secret.is_some())), "header ids");
        assert_eq!(&bytes[8..12], &FLAGS_COMMITTED_LOG.to_le_bytes());
        if secret.is_some() {
            assert!(!bytes.windows(16).any(|w| w == b"PLAINTEXT-MARKER"), "no plaintext on disk");
        }
        if c == 1 {
            assert!(bytes.len() < 100_000, "LZ4 shrinks the repetitive record");
        }
        let ctx = support::context(&store, &k);
        let parsed = parse_log(&bytes, &ctx).unwrap();
        assert_eq!((parsed.key.clone(), parsed.meta.clone(), parsed.records.clone()), (k.clone(), META.to_vec(), want.clone()));
        let expect = info(0, Some(24), 1024);
        let e = store.get(&k).unwrap().unwrap();
        assert_eq!((e.serializer, e.meta.as_slice(), e.value.as_slice(), e.log), (0, META, &b""[..], Some(expect)));
        assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(expect));
        let listed = store.list().unwrap().entries.into_iter().find(|e| e.key == k).unwrap();
        assert_eq!(listed.log, Some(expect));
    }
    // A value key lists with no log info. The store with the key reads
    // plaintext logs only with accept_plaintext (a migration).
    let strict = FileStore::open(tmp.path(), Options { accept_plaintext: false, ..with_codec(1, Some("s3cr3t")) }).unwrap();
    assert_eq!(strict.list().unwrap().entries.iter().filter(|e| e.log.is_some()).count(), 2);
    let store = FileStore::open(tmp.path(), Options { accept_plaintext: true, ..with_codec(1, Some("s3cr3t")) }).unwrap();
    store.put(&[Write { key: &key("v"), serializer: 1, meta: b"\x80", value: b"x" }]).unwrap();
    assert_eq!(store.get_meta(&key("v")).unwrap().unwrap().log, None);
    assert_eq!(store.get(&key("v")).unwrap().unwrap().log, None);
    // The store with the key reads every log, whatever codec wrote it.
    assert_eq!(store.list().unwrap().entries.iter().filter(|e| e.log.is_some()).count(), 4);
    for (c, secret) in COMBOS {
        assert_eq!(read_all(&store, &key(&format!("log-{c}-{secret:?}"))).unwrap().len(), 25);
    }
}

#[test]
fn ten_thousand_appends_read_back_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path(), Options { sync_blob: false, ..Options::default() }).unwrap();
    let k = key("many");
    for i in 0..10_000u64 {
        let li = store.log_append(&k, &one(i, &i.to_le_bytes()), META).unwrap();
        assert_eq!(li.last_index, Some(i));
    }
    let mut cursor = store.open_log(&k).unwrap().unwrap();
    // Appends after the cursor opened are not seen by it.
    store.log_append(&k, &one(10_000, b"later"), META).unwrap();
    let mut next = 0u64;
    let mut batches = 0;
    while let Some(batch) = cursor.next_batch(1000).unwrap() {
        batches += 1;
        for r in batch {
            assert_eq!((r.index, r.stamp, r.serializer, r.bytes), (next, next, 1, next.to_le_bytes().to_vec()));
            next += 1;
        }
    }
    assert_eq!((next, batches), (10_000, 10));
    assert!(cursor.next_batch(5).unwrap().is_none(), "done stays done");
    // A cursor closed early returns nothing more.
    let mut c2 = store.open_log(&k).unwrap().unwrap();
    assert_eq!(c2.next_batch(0).unwrap().unwrap().len(), 1, "max 0 counts as 1");
    c2.close();
    assert!(c2.next_batch(5).unwrap().is_none());
    assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(10_000), 10_000)));
}

#[test]
fn trim_keeps_indexes_and_appending_continues() {
    let tmp = tempfile::tempdir().unwrap();
    for (c, secret) in COMBOS {
        let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
        let k = key(&format!("trim-{c}-{secret:?}"));
        let big = rec(3, vec![7u8; 600_000]);
        let mut want: Vec<LogRecord> = (0..6).map(|i| if i == 3 { big.clone() } else { rec(i, payload(i)) }).collect();
        for r in &want {
            append(&store, &k, r).unwrap();
        }
        // Keep all (a new meta only), some, then none.
        assert_eq!(store.log_trim(&k, 0, b"\x81\xa1m\x01").unwrap(), info(0, Some(5), 1005));
        assert_eq!(read_all(&store, &k).unwrap(), want);
        assert_eq!(store.get_meta(&k).unwrap().unwrap().meta, b"\x81\xa1m\x01");
        let before = fs::read(store.file_path(&k)).unwrap();
        assert_eq!(store.log_trim(&k, 3, b"\x81\xa1m\x02").unwrap(), info(3, Some(5), 1005));
        let after = fs::read(store.file_path(&k)).unwrap();
        let kept_at = record_starts(&before)[3];
        assert_eq!(after[record_starts(&after)[0]..], before[kept_at..], "records are copied byte for byte");
        want.drain(..3);
        assert_eq!(read_all(&store, &k).unwrap(), want);
        let r6 = rec(6, b"six".to_vec());
        assert_eq!(append(&store, &k, &r6).unwrap(), info(3, Some(6), 1006));
        want.push(r6);
        assert_eq!(read_all(&store, &k).unwrap(), want);
        assert_eq!(store.get(&k).unwrap().unwrap().log, Some(info(3, Some(6), 1006)));
        // Trimming again with the same bound changes nothing but the meta.
        assert_eq!(store.log_trim(&k, 3, b"\x81\xa1m\x03").unwrap(), info(3, Some(6), 1006));
        assert_eq!(read_all(&store, &k).unwrap(), want);
        // Keep none: the log starts again at 0.
        assert_eq!(store.log_trim(&k, 7, b"\x81\xa1m\x04").unwrap(), LogInfo::EMPTY);
        assert_eq!(read_all(&store, &k).unwrap(), vec![]);
        assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(LogInfo::EMPTY));
        let r0 = rec(0, b"zero again".to_vec());
        assert_eq!(append(&store, &k, &r0).unwrap(), info(0, Some(0), 1000));
        assert_eq!(read_all(&store, &k).unwrap(), vec![r0]);
        assert_eq!(store.get_meta(&k).unwrap().unwrap().meta, b"\x81\xa1m\x04", "create_meta is for new logs only");
    }
    // A missing key: nothing written.
    let store = FileStore::open(tmp.path(), with_codec(0, Some("s3cr3t"))).unwrap();
    assert_eq!(store.log_trim(&key("missing"), 3, META).unwrap(), LogInfo::EMPTY);
    assert!(!store.exists(&key("missing")).unwrap());
    let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|n| !n.to_string_lossy().ends_with(".stage")), "no staging file left");
}

/// The offset of the first record of a log file, of either layout.
fn data_start(file: &[u8]) -> usize {
    let area = if le_u32(&file[8..12]) == FLAGS_COMMITTED_LOG { LOG_COMMIT_AREA as usize } else { 0 };
    HEADER_LEN + le_u32(&file[12..16]) as usize + area
}

/// The offset of each record of a whole, valid log file.
fn record_starts(file: &[u8]) -> Vec<usize> {
    let mut at = data_start(file);
    let mut starts = Vec::new();
    while at < file.len() {
        starts.push(at);
        at += RECORD_OVERHEAD + le_u32(&file[at..at + 4]) as usize;
    }
    starts
}

/// A log of `n` records written by `store`; returns its bytes and the end
/// offset of each record.
fn build(store: &FileStore, k: &[u8], recs: &[LogRecord]) -> (Vec<u8>, Vec<usize>) {
    let path = store.file_path(k);
    let mut ends = Vec::new();
    for r in recs {
        append(store, k, r).unwrap();
        ends.push(fs::metadata(&path).unwrap().len() as usize);
    }
    (fs::read(&path).unwrap(), ends)
}

#[test]
fn a_torn_tail_is_ignored_by_readers_and_cut_by_the_next_append() {
    let tmp = tempfile::tempdir().unwrap();
    for (c, secret) in [(0, None), (1, Some("s3cr3t"))] {
        let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
        let k = key(&format!("torn-{c}"));
        let path = store.file_path(&k);
        let recs: Vec<LogRecord> = (0..3).map(|i| rec(i, payload(i + 1))).collect();
        // The log after two appends, then after the third: what a crash
        // during the third can leave is the first with some of the
        // third's bytes after it (its commit names two records).
        let (good, ends) = build(&store, &k, &recs[..2]);
        append(&store, &k, &recs[2]).unwrap();
        let full = fs::read(&path).unwrap();
        let third = &full[ends[1]..];
        let next = rec(2, b"replacement".to_vec());
        let data = data_start(&good);
        // The third record cut at every byte, whole, and whole with more after it;
        // and cut records followed by zeros (the size reached the disk, the data did not).
        let mut tails: Vec<Vec<u8>> = (0..=third.len()).map(|n| [&good[..], &third[..n]].concat()).collect();
        tails.push([&good[..], third, third, b"junk"].concat());
        for n in [1, 5, 21, 40, 100] {
            for cut in [0, 4, 30] {
                tails.push([&good[..], &third[..cut], &vec![0u8; n][..]].concat());
            }
        }
        for torn in tails {
            let ctx = format!("codec {c}, torn file of {} bytes", torn.len());
            fs::write(&path, &torn).unwrap();
            forget_verified(&store);
            assert_eq!(read_all(&store, &k).unwrap(), recs[..2], "{ctx}");
            assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(1), 1001)), "{ctx}");
            assert_eq!(append(&store, &k, &next).unwrap(), info(0, Some(2), 1002), "{ctx}");
            let after = fs::read(&path).unwrap();
            assert_eq!(after[data..ends[1]], good[data..], "{ctx}: the acknowledged records are untouched");
            assert_eq!(read_all(&store, &k).unwrap(), [&recs[..2], &[next.clone()][..]].concat(), "{ctx}");
        }
        // A torn large record (read in pieces).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..900_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let big = rec(2, noise);
        fs::write(&path, &good).unwrap();
        forget_verified(&store);
        append(&store, &k, &big).unwrap();
        let full = fs::read(&path).unwrap();
        assert!(full.len() - ends[1] > 2 * READ_BUF, "a record read in pieces");
        for cut in [ends[1] + 21, ends[1] + 300_000, full.len() - 13, full.len() - 1, full.len()] {
            fs::write(&path, [&good[..], &full[ends[1]..cut]].concat()).unwrap();
            forget_verified(&store);
            assert_eq!(read_all(&store, &k).unwrap(), recs[..2]);
            assert_eq!(append(&store, &k, &next).unwrap().last_index, Some(2));
            assert_eq!(read_all(&store, &k).unwrap(), [&recs[..2], &[next.clone()][..]].concat());
        }
        // Whole, it reads back (the payload in one piece, the checksum in several).
        fs::write(&path, &full).unwrap();
        assert_eq!(read_all(&store, &k).unwrap(), [&recs[..2], &[big.clone()][..]].concat());
        // A log with no acknowledged records and a torn one after them; the next append is record 0.
        store.log_trim(&k, 100, META).unwrap();
        let empty = fs::read(&path).unwrap();
        fs::write(&path, [&empty[..], &full[ends[1]..ends[1] + 40]].concat()).unwrap();
        forget_verified(&store);
        assert_eq!(read_all(&store, &k).unwrap(), vec![]);
        assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(LogInfo::EMPTY));
        assert_eq!(append(&store, &k, &recs[0]).unwrap(), info(0, Some(0), 1000));
        assert_eq!(read_all(&store, &k).unwrap(), recs[..1]);
    }
}

/// Reads the whole log of `k`: its records, or the error that ends it
/// (after any records before the damage).
fn read_to_error(store: &FileStore, k: &[u8]) -> std::result::Result<Vec<LogRecord>, ErrorCode> {
    let mut cursor = store.open_log(k).map_err(|e| e.code())?.expect("the log exists");
    let mut out = Vec::new();
    loop {
        match cursor.next_batch(3) {
            Ok(Some(batch)) => out.extend(batch),
            Ok(None) => return Ok(out),
            Err(e) => return Err(e.code()),
        }
    }
}

#[test]
fn damage_to_acknowledged_records_is_corrupt_and_never_written_over() {
    for (c, secret) in [(0, None), (1, Some("s3cr3t"))] {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
        let k = key(&format!("damaged-{c}"));
        let path = store.file_path(&k);
        let recs: Vec<LogRecord> = (0..4).map(|i| rec(i, payload(i + 1))).collect();
        let (full, ends) = build(&store, &k, &recs);
        let data = data_start(&full);
        // Every byte of record 1 (in the middle) and of record 3 (the
        // last), flipped; and the file cut at every length into its records.
        let mut damages: Vec<(String, Vec<u8>)> = Vec::new();
        for at in (ends[0]..ends[1]).chain(ends[2]..ends[3]) {
            let mut bad = full.clone();
            bad[at] ^= 0x10;
            damages.push((format!("codec {c}, byte {at} flipped"), bad));
        }
        for len in data..full.len() {
            damages.push((format!("codec {c}, cut to {len} bytes"), full[..len].to_vec()));
        }
        for (ctx, bad) in damages {
            fs::write(&path, &bad).unwrap();
            forget_verified(&store);
            let err = read_to_error(&store, &k).unwrap_err();
            assert_eq!(err, ErrorCode::Corrupt, "{ctx}: the log reads as damaged, never shorter");
            let err = append(&store, &k, &rec(4, b"x".to_vec())).unwrap_err();
            assert_eq!((err.code(), err.file()), (ErrorCode::Corrupt, Some(path.as_path())), "{ctx}");
            assert_eq!(store.log_trim(&k, 0, META).unwrap_err().code(), ErrorCode::Corrupt, "{ctx}");
            assert_eq!(fs::read(&path).unwrap(), bad, "{ctx}: the file is unchanged");
        }
        // getMeta reads only the first and the last record: damage to the
        // last (or a shorter file) it reports; damage in between the cursor does.
        let mut bad = full.clone();
        bad[ends[3] - 15] ^= 1;
        fs::write(&path, &bad).unwrap();
        assert_eq!(store.get_meta(&k).unwrap_err().code(), ErrorCode::Corrupt);
        assert_eq!(store.get(&k).unwrap_err().code(), ErrorCode::Corrupt);
        let listing = store.list().unwrap();
        assert_eq!(listing.corrupt.len(), 1);
        assert_eq!(listing.corrupt[0].file(), Some(path.as_path()));
        fs::write(&path, &full[..full.len() - 1]).unwrap();
        assert_eq!(store.get_meta(&k).unwrap_err().code(), ErrorCode::Corrupt);
        let mut bad = full.clone();
        bad[ends[1] + 25] ^= 1;
        fs::write(&path, &bad).unwrap();
        assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(3), 1003)));
        let mut cursor = store.open_log(&k).unwrap().unwrap();
        assert_eq!(cursor.next_batch(10).unwrap().unwrap(), recs[..2], "the records before the damage");
        assert_eq!(cursor.next_batch(10).unwrap_err().code(), ErrorCode::Corrupt);
        assert!(cursor.next_batch(10).unwrap().is_none());
        // This process appended to the log as it was: its next append
        // checks the last record again, and refuses when it is damaged.
        fs::write(&path, &full).unwrap();
        forget_verified(&store);
        append(&store, &k, &recs[0]).unwrap_or_else(|_| panic!("undamaged"));
        let whole = fs::read(&path).unwrap();
        let mut bad = whole.clone();
        let n = bad.len();
        bad[n - 20] ^= 4;
        fs::write(&path, &bad).unwrap();
        assert_eq!(append(&store, &k, &recs[1]).unwrap_err().code(), ErrorCode::Corrupt);
        assert_eq!(fs::read(&path).unwrap(), bad);
    }
}

/// One slot of the commit area damaged (as a crash while it is written
/// can leave it): the other holds the commit, the log reads whole, and
/// the next append writes both slots again. Both damaged: `ERR_CORRUPT`.
#[test]
fn a_damaged_commit_slot_is_survived_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    for (c, secret) in [(0, None), (1, Some("s3cr3t"))] {
        let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
        let k = key(&format!("slots-{c}"));
        let path = store.file_path(&k);
        let recs: Vec<LogRecord> = (0..3).map(|i| rec(i, payload(i + 1))).collect();
        let (full, _) = build(&store, &k, &recs);
        let area = data_start(&full) - LOG_COMMIT_AREA as usize;
        for at in area..area + LOG_COMMIT_AREA as usize {
            let ctx = format!("codec {c}, commit byte {at} flipped");
            let mut bad = full.clone();
            bad[at] ^= 0x40;
            fs::write(&path, &bad).unwrap();
            forget_verified(&store);
            assert_eq!(read_all(&store, &k).unwrap(), recs, "{ctx}");
            assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(2), 1002)), "{ctx}");
            let r3 = rec(3, b"three".to_vec());
            append(&store, &k, &r3).unwrap();
            let after = fs::read(&path).unwrap();
            assert_eq!(after[area..area + COMMIT_SLOT], after[area + COMMIT_SLOT..area + 2 * COMMIT_SLOT], "{ctx}: both slots equal");
            assert_eq!(read_all(&store, &k).unwrap(), [&recs[..], &[r3][..]].concat(), "{ctx}");
        }
        let mut bad = full.clone();
        bad[area + 3] ^= 1;
        bad[area + COMMIT_SLOT + 3] ^= 1;
        fs::write(&path, &bad).unwrap();
        forget_verified(&store);
        assert_eq!(store.open_log(&k).unwrap_err().code(), ErrorCode::Corrupt);
        assert_eq!(store.get_meta(&k).unwrap_err().code(), ErrorCode::Corrupt);
        assert_eq!(append(&store, &k, &recs[0]).unwrap_err().code(), ErrorCode::Corrupt);
        assert_eq!(fs::read(&path).unwrap(), bad);
    }
}

/// Without the key, the commit of an encrypted log cannot be rewritten
/// to hide records: its checksum can be fixed, its tag cannot.
#[test]
fn an_encrypted_commit_cannot_be_forged_to_hide_records() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path(), with_codec(0, Some("s3cr3t"))).unwrap();
    let k = key("forged");
    let path = store.file_path(&k);
    let recs: Vec<LogRecord> = (0..3).map(|i| rec(i, payload(i + 1))).collect();
    let (full, ends) = build(&store, &k, &recs);
    let area = data_start(&full) - LOG_COMMIT_AREA as usize;
    // Both slots say two records, ending where record 1 does; the file is cut there.
    let mut forged = full[..ends[1]].to_vec();
    let last_sum = le_u64(&full[ends[1] - 12..ends[1] - 4]);
    for slot in [area, area + COMMIT_SLOT] {
        forged[slot + 8..slot + 16].copy_from_slice(&2u64.to_le_bytes());
        forged[slot + 16..slot + 24].copy_from_slice(&(ends[1] as u64).to_le_bytes());
        forged[slot + 24..slot + 32].copy_from_slice(&last_sum.to_le_bytes());
        let check = xxh3_64(&forged[slot..slot + SLOT_CHECK]);
        forged[slot + SLOT_CHECK..slot + COMMIT_SLOT].copy_from_slice(&check.to_le_bytes());
    }
    fs::write(&path, &forged).unwrap();
    forget_verified(&store);
    assert_eq!(store.open_log(&k).unwrap_err().code(), ErrorCode::Decrypt);
    assert_eq!(store.get_meta(&k).unwrap_err().code(), ErrorCode::Decrypt);
    assert_eq!(append(&store, &k, &recs[2]).unwrap_err().code(), ErrorCode::Decrypt);
    // The same edit of a plain log is not detected: without a key, anyone
    // who can write the file can rewrite it (FORMAT.md §4.6).
    let plain = FileStore::open(tmp.path().join("plain"), Options::default()).unwrap();
    let k = key("plain-forged");
    let (full, ends) = build(&plain, &k, &recs);
    let area = data_start(&full) - LOG_COMMIT_AREA as usize;
    let mut forged = full[..ends[1]].to_vec();
    let fixed = encode_commit_area(
        &Commit { seq: 9, count: 2, end: ends[1] as u64, last_sum: le_u64(&full[ends[1] - 12..ends[1] - 4]) },
        Codec::NONE,
        &support::context(&plain, &k),
        &[],
    )
    .unwrap();
    forged[area..area + LOG_COMMIT_AREA as usize].copy_from_slice(&fixed);
    fs::write(plain.file_path(&k), &forged).unwrap();
    assert_eq!(read_all(&plain, &k).unwrap(), recs[..2]);
}

#[test]
fn a_record_moved_or_reindexed_does_not_authenticate() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path(), with_codec(0, Some("s3cr3t"))).unwrap();
    let k = key("sealed");
    let recs: Vec<LogRecord> = (0..3).map(|i| rec(i, b"same size".to_vec())).collect();
    let (full, ends) = build(&store, &k, &recs);
    // Record 2's slot gets record 1's payload, with index and checksum fixed up.
    let mut moved = full.clone();
    let (r1, r2) = (ends[0]..ends[1], ends[1]..ends[2]);
    let payload1 = full[r1.start + 21..r1.end - 12].to_vec();
    moved[r2.start + 21..r2.end - 12].copy_from_slice(&payload1);
    let sum = xxh3_64(&moved[r2.start..r2.end - 12]);
    moved[r2.end - 12..r2.end - 4].copy_from_slice(&sum.to_le_bytes());
    fs::write(store.file_path(&k), &moved).unwrap();
    let mut cursor = store.open_log(&k).unwrap().unwrap();
    assert_eq!(cursor.next_batch(10).unwrap().unwrap(), recs[..2]);
    assert_eq!(cursor.next_batch(10).unwrap_err().code(), ErrorCode::Decrypt);
    // Without the key the store does not open (its key check), and
    // without the key check the meta segment already fails.
    assert_eq!(FileStore::open(tmp.path(), Options::default()).unwrap_err().code(), ErrorCode::Decrypt);
    fs::remove_file(tmp.path().join(konserve_core::format::keycheck::KEY_CHECK_FILE_NAME)).unwrap();
    let other = FileStore::open(tmp.path(), Options::default()).unwrap();
    assert_eq!(other.open_log(&k).unwrap_err().code(), ErrorCode::Decrypt);
}

#[test]
fn a_cursor_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<LogCursor>();
}

#[test]
fn log_operations_on_a_value_are_not_a_log_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path(), Options::default()).unwrap();
    let k = key("value");
    store.put(&[Write { key: &k, serializer: 1, meta: b"\x80", value: b"v" }]).unwrap();
    let path = store.file_path(&k);
    let before = fs::read(&path).unwrap();
    let err = append(&store, &k, &rec(0, b"x".to_vec())).unwrap_err();
    assert_eq!((err.code(), err.file()), (ErrorCode::NotALog, Some(path.as_path())));
    assert_eq!(store.open_log(&k).unwrap_err().code(), ErrorCode::NotALog);
    assert_eq!(store.log_trim(&k, 0, META).unwrap_err().code(), ErrorCode::NotALog);
    assert_eq!(fs::read(&path).unwrap(), before);
    assert!(store.open_log(&key("missing")).unwrap().is_none());
    assert_eq!(store.log_append(b"\x09", &one(0, b""), META).unwrap_err().code(), ErrorCode::InvalidKey);
}

// --- Several records in one append. ---

#[test]
fn a_multi_record_append_gets_consecutive_indexes_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    for (c, secret) in COMBOS {
        let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
        let k = key(&format!("batch-{c}-{secret:?}"));
        // A new log of three records, then batches of 1, 5 (one larger
        // than the read buffer) and 2, with stamps of their own.
        let big: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        let mut want: Vec<LogRecord> = Vec::new();
        for (n, size) in [(3usize, 0usize), (1, 0), (5, 1), (2, 0)] {
            let first = want.len() as u64;
            let batch: Vec<LogRecord> = (first..first + n as u64)
                .map(|i| if size == 1 && i == first + 2 { rec(i, big.clone()) } else { rec(i, payload(i)) })
                .collect();
            let news: Vec<NewRecord<'_>> = batch.iter().map(new_record).collect();
            let last = batch.last().unwrap();
            assert_eq!(store.log_append(&k, &news, META).unwrap(), info(0, Some(last.index), last.stamp), "{c} {secret:?}");
            want.extend(batch);
        }
        assert_eq!(read_all(&store, &k).unwrap(), want);
        assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(10), 1010)));
        // A later process (nothing remembered) reads and appends the same.
        forget_verified(&store);
        assert_eq!(append(&store, &k, &rec(11, b"one more".to_vec())).unwrap(), info(0, Some(11), 1011));
        want.push(rec(11, b"one more".to_vec()));
        assert_eq!(read_all(&store, &k).unwrap(), want);
        let bytes = fs::read(store.file_path(&k)).unwrap();
        assert_eq!(parse_log(&bytes, &support::context(&store, &k)).unwrap().records, want);
    }
}

#[test]
fn a_batch_is_the_same_bytes_as_its_records_appended_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    for c in [0, 1] {
        let store = FileStore::open(tmp.path(), with_codec(c, None)).unwrap();
        let recs: Vec<LogRecord> = (0..6).map(|i| rec(i, payload(i + 5))).collect();
        let (one_by_one, batched) = (key(&format!("singly-{c}")), key(&format!("batched-{c}")));
        for r in &recs {
            append(&store, &one_by_one, r).unwrap();
        }
        let news: Vec<NewRecord<'_>> = recs.iter().map(new_record).collect();
        store.log_append(&batched, &news[..2], META).unwrap();
        store.log_append(&batched, &news[2..], META).unwrap();
        let (a, b) = (fs::read(store.file_path(&one_by_one)).unwrap(), fs::read(store.file_path(&batched)).unwrap());
        // The meta segments differ only in the key; the records are the same bytes.
        let starts = |f: &[u8]| record_starts(f)[0];
        assert_eq!(a[starts(&a)..], b[starts(&b)..], "codec {c}");
        // What encode_records gives is what was written.
        let ctx = support::context(&store, &batched);
        let (enc, sum) = encode_records(Codec { compressor: c, encryptor: 0 }, &ctx, 0, &news, &mut OsRandom).unwrap();
        assert_eq!(enc, b[starts(&b)..]);
        assert_eq!(sum.to_le_bytes(), b[b.len() - 12..b.len() - 4]);
    }
}

#[test]
fn a_bad_batch_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path(), Options::default()).unwrap();
    let k = key("bad-batch");
    let err = store.log_append(&k, &[], META).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(!store.exists(&k).unwrap(), "an empty batch creates no log");
    append(&store, &k, &rec(0, b"zero".to_vec())).unwrap();
    let before = fs::read(store.file_path(&k)).unwrap();
    assert_eq!(store.log_append(&k, &[], META).unwrap_err().code(), ErrorCode::InvalidArgument);
    assert_eq!(fs::read(store.file_path(&k)).unwrap(), before);
    // Indexes that would run past u64::MAX: refused before anything is written.
    let ctx = support::context(&store, &k);
    let two = [NewRecord { serializer: 1, stamp: 1, payload: b"a" }; 2];
    assert_eq!(encode_records(Codec::NONE, &ctx, u64::MAX, &two, &mut OsRandom).unwrap_err().code(), ErrorCode::InvalidArgument);
    assert!(encode_records(Codec::NONE, &ctx, u64::MAX, &two[..1], &mut OsRandom).is_ok());
}

#[test]
fn a_batch_is_one_write_and_one_fsync() {
    let (fs, dir) = crash::setup(1, "/sim/log-calls");
    let store = crash::open(&fs, &dir, &Options { sync_blob: true, ..Options::default() }).unwrap();
    let k = key("calls");
    store.log_append(&k, &one(1, b"create"), META).unwrap();
    let payloads: Vec<Vec<u8>> = (0..50u64).map(payload).collect();
    let news: Vec<NewRecord<'_>> = payloads.iter().map(|p| NewRecord { serializer: 1, stamp: 2, payload: p }).collect();
    let steps = |f: &dyn Fn()| {
        let start = fs.steps();
        f();
        fs.steps() - start
    };
    let single = steps(&|| {
        store.log_append(&k, &one(2, b"single"), META).unwrap();
    });
    let batch = steps(&|| {
        assert_eq!(store.log_append(&k, &news, META).unwrap().last_index, Some(51));
    });
    // The records and slot A, a sync, slot B, a sync (FORMAT.md §4.6).
    assert_eq!((single, batch), (5, 5), "three write_all_at and two syncs either way");
    // A new log of many records: the same calls as a new log of one.
    let create_one = steps(&|| {
        store.log_append(&key("new-1"), &one(3, b"x"), META).unwrap();
    });
    let create_many = steps(&|| {
        store.log_append(&key("new-50"), &news, META).unwrap();
    });
    assert_eq!(create_one, create_many);
    assert_eq!(read_all(&store, &key("new-50")).unwrap().len(), 50);
}

// --- Damage at every offset, in memory. ---

/// A log of `n` records created and appended one by one, in memory
/// ([`encode_log_file`], [`append_log_file`]); the end of each record.
fn log_bytes(codec: Codec, secret: Option<&[u8]>, k: &[u8], n: u64) -> (Vec<u8>, Vec<usize>) {
    let ctx = SegmentContext { secret, key_hash: keyhash::key_hash(k), accept_plaintext: false };
    let recs: Vec<LogRecord> = (0..n).map(|i| rec(i, payload(i).into_iter().take(40).collect())).collect();
    let mut file = encode_log_file(codec, secret, k, META, &[new_record(&recs[0])], &mut OsRandom).unwrap();
    let mut ends = vec![file.len()];
    for r in &recs[1..] {
        file = append_log_file(&file, &ctx, &[new_record(r)], &mut OsRandom).unwrap();
        ends.push(file.len());
    }
    (file, ends)
}

/// Every byte of a 10-record log flipped, and the log cut at every
/// length, in every codec: damage to the acknowledged records (and a
/// shorter file) is `ERR_CORRUPT`, and an append refuses it; no damage
/// anywhere ever reads as a shorter log. One damaged commit slot is
/// survived: the other holds the same commit.
#[test]
fn damage_at_every_offset_is_never_a_shorter_log() {
    let k = key("every offset");
    for (c, secret) in COMBOS {
        let secret = secret.map(str::as_bytes);
        let codec = Codec { compressor: c, encryptor: u8::from(secret.is_some()) };
        let ctx = SegmentContext { secret, key_hash: keyhash::key_hash(&k), accept_plaintext: false };
        let (full, ends) = log_bytes(codec, secret, &k, 10);
        let want = parse_log(&full, &ctx).unwrap().records;
        assert_eq!(want.len(), 10);
        let data = data_start(&full);
        let area = data - LOG_COMMIT_AREA as usize;
        let one = [NewRecord { serializer: 1, stamp: 7, payload: b"more" }];
        let mut outcomes = BTreeMap::new();
        for at in 0..full.len() {
            let mut bad = full.clone();
            bad[at] ^= 1 << (at % 8);
            let ctx_ = format!("codec {codec:?}, byte {at} of {} flipped", full.len());
            let read = parse_log(&bad, &ctx).map(|p| p.records);
            let appended = append_log_file(&bad, &ctx, &one, &mut OsRandom);
            match read {
                Ok(records) => {
                    assert_eq!(records, want, "{ctx_}: read whole or not at all");
                    assert!((area..data).contains(&at), "{ctx_}: only a commit slot may be damaged unnoticed");
                    assert_eq!(parse_log(&appended.unwrap(), &ctx).unwrap().records.len(), 11, "{ctx_}");
                }
                Err(e) => {
                    if at >= data {
                        assert_eq!(e.code(), ErrorCode::Corrupt, "{ctx_}: damage to an acknowledged record");
                    }
                    assert!(appended.is_err(), "{ctx_}: an append refuses a damaged log");
                }
            }
            *outcomes
                .entry(if at < area {
                    "head"
                } else if at < data {
                    "commit"
                } else {
                    "records"
                })
                .or_insert(0) += 1;
        }
        for len in 0..full.len() {
            let ctx_ = format!("codec {codec:?}, cut to {len} of {} bytes", full.len());
            let err = parse_log(&full[..len], &ctx).unwrap_err();
            assert_eq!(err.code(), ErrorCode::Corrupt, "{ctx_}");
            assert!(append_log_file(&full[..len], &ctx, &one, &mut OsRandom).is_err(), "{ctx_}");
        }
        // Bytes past the acknowledged records are a torn tail, whatever they hold.
        for extra in [&b"\x00"[..], &[0xff; 40], &full[ends[8]..]] {
            let torn = [&full[..], extra].concat();
            assert_eq!(parse_log(&torn, &ctx).unwrap().records, want);
            let appended = append_log_file(&torn, &ctx, &one, &mut OsRandom).unwrap();
            assert_eq!(appended[..ends[9]].len(), full.len());
            assert_eq!(parse_log(&appended, &ctx).unwrap().records.len(), 11);
        }
        assert_eq!(outcomes.values().sum::<usize>(), full.len());
    }
}

/// The store's bytes are the in-memory tools' bytes (plain codecs: no randomness).
#[test]
fn the_store_appends_and_trims_the_bytes_the_tools_make() {
    let tmp = tempfile::tempdir().unwrap();
    for c in [0, 1] {
        let store = FileStore::open(tmp.path(), with_codec(c, None)).unwrap();
        let codec = Codec { compressor: c, encryptor: 0 };
        let k = key(&format!("same-{c}"));
        let ctx = support::context(&store, &k);
        let recs: Vec<LogRecord> = (0..5).map(|i| rec(i, payload(i + 2))).collect();
        let news: Vec<NewRecord<'_>> = recs.iter().map(new_record).collect();
        store.log_append(&k, &news[..2], META).unwrap();
        store.log_append(&k, &news[2..3], META).unwrap();
        store.log_append(&k, &news[3..], META).unwrap();
        let mut mem = encode_log_file(codec, None, &k, META, &news[..2], &mut OsRandom).unwrap();
        mem = append_log_file(&mem, &ctx, &news[2..3], &mut OsRandom).unwrap();
        mem = append_log_file(&mem, &ctx, &news[3..], &mut OsRandom).unwrap();
        assert_eq!(fs::read(store.file_path(&k)).unwrap(), mem, "codec {c}");
        let parsed = parse_log(&mem, &ctx).unwrap();
        assert_eq!(
            parsed.commit,
            Some(Commit { seq: 3, count: 5, end: mem.len() as u64, last_sum: le_u64(&mem[mem.len() - 12..mem.len() - 4]) })
        );
        store.log_trim(&k, 2, b"\x80").unwrap();
        let trimmed = trim_log_file(&mem, &ctx, 2, b"\x80", &mut OsRandom).unwrap();
        assert_eq!(fs::read(store.file_path(&k)).unwrap(), trimmed, "codec {c}");
        assert_eq!(parse_log(&trimmed, &ctx).unwrap().records, recs[2..]);
    }
}

// --- Logs of the earlier layout. ---

/// A log of the earlier layout (flags 2), as builds before the commit wrote it.
fn legacy_log(codec: Codec, secret: Option<&[u8]>, k: &[u8], recs: &[LogRecord]) -> Vec<u8> {
    let ctx = SegmentContext { secret, key_hash: keyhash::key_hash(k), accept_plaintext: false };
    let mut file = encode_legacy_log_head(codec, secret, k, META, &mut OsRandom).unwrap();
    let news: Vec<NewRecord<'_>> = recs.iter().map(new_record).collect();
    file.extend_from_slice(&encode_records(codec, &ctx, 0, &news, &mut OsRandom).unwrap().0);
    file
}

/// A log of the earlier layout reads as before (a torn tail dropped,
/// damage in its middle `ERR_CORRUPT`), and its first append rewrites it
/// in the current layout, its records copied as stored.
#[test]
fn a_log_of_the_earlier_layout_reads_as_before_and_migrates_on_append() {
    let tmp = tempfile::tempdir().unwrap();
    for (c, secret) in COMBOS {
        let store = FileStore::open(tmp.path(), with_codec(c, secret)).unwrap();
        let codec = Codec { compressor: c, encryptor: u8::from(secret.is_some()) };
        let k = key(&format!("legacy-{c}-{secret:?}"));
        let path = store.file_path(&k);
        let recs: Vec<LogRecord> = (0..3).map(|i| rec(i, payload(i + 1))).collect();
        let old = legacy_log(codec, secret.map(str::as_bytes), &k, &recs);
        let starts = record_starts(&old);
        assert_eq!(le_u32(&old[8..12]), FLAG_LOG);
        // As before: whole; torn; damaged in the middle.
        fs::write(&path, &old).unwrap();
        assert_eq!(read_all(&store, &k).unwrap(), recs);
        assert_eq!(store.get_meta(&k).unwrap().unwrap().log, Some(info(0, Some(2), 1002)));
        fs::write(&path, &old[..old.len() - 3]).unwrap();
        assert_eq!(read_all(&store, &k).unwrap(), recs[..2]);
        let mut bad = old.clone();
        bad[starts[1] + 22] ^= 1;
        fs::write(&path, &bad).unwrap();
        forget_verified(&store);
        assert_eq!(read_to_error(&store, &k), Err(ErrorCode::Corrupt));
        assert_eq!(append(&store, &k, &rec(3, b"x".to_vec())).unwrap_err().code(), ErrorCode::Corrupt);
        assert_eq!(fs::read(&path).unwrap(), bad);
        // The first append migrates it (a torn tail dropped by the old rule).
        fs::write(&path, &old[..old.len() - 3]).unwrap();
        let r = rec(2, b"after migration".to_vec());
        assert_eq!(append(&store, &k, &r).unwrap(), info(0, Some(2), 1002));
        let new = fs::read(&path).unwrap();
        assert_eq!(le_u32(&new[8..12]), FLAGS_COMMITTED_LOG);
        assert_eq!(new[HEADER_LEN..starts[0]], old[HEADER_LEN..starts[0]], "the meta segment is kept as stored");
        assert_eq!(new[data_start(&new)..data_start(&new) + starts[2] - starts[0]], old[starts[0]..starts[2]], "records copied as stored");
        assert_eq!(read_all(&store, &k).unwrap(), [&recs[..2], &[r][..]].concat());
        // From then on, damage to its last record is ERR_CORRUPT.
        let mut bad = new.clone();
        let n = bad.len();
        bad[n - 14] ^= 1;
        fs::write(&path, &bad).unwrap();
        assert_eq!(read_to_error(&store, &k), Err(ErrorCode::Corrupt));
        // A trim writes the current layout too.
        fs::write(&path, &old).unwrap();
        assert_eq!(store.log_trim(&k, 1, META).unwrap(), info(1, Some(2), 1002));
        assert_eq!(le_u32(&fs::read(&path).unwrap()[8..12]), FLAGS_COMMITTED_LOG);
        assert_eq!(read_all(&store, &k).unwrap(), recs[1..]);
    }
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap())
}

/// Readers of an append log take no lock. One whose size of the file was
/// read just before an append landed, and whose read of the commit came
/// after it, saw a file shorter than its commit and failed with ERR_CORRUPT
/// ("shorter than its acknowledged records", seen in CI's soak test under a
/// concurrent appender); the records are written before the commit, so the
/// file has grown by then. A file truly shorter than its commit still fails.
#[test]
fn a_reader_whose_size_was_read_before_an_append_still_reads_the_log() {
    use konserve_core::vfs::{RealFs, Vfs, VfsFile};
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use support::passthrough::{FileHooks, Hooked, HookedFile, VfsHooks};

    /// The first size read of a key file opened for reading: the real size,
    /// then an append by another store (as in another process), then that size.
    #[derive(Clone)]
    struct AppendAfterSize {
        appender: Arc<(FileStore, Vec<u8>)>,
        armed: Arc<AtomicBool>,
    }
    impl FileHooks for AppendAfterSize {
        fn size(&self, file: &dyn VfsFile) -> std::io::Result<u64> {
            let size = file.size()?;
            if self.armed.swap(false, Ordering::SeqCst) {
                let (store, k) = &*self.appender;
                append(store, k, &rec(3, payload(3))).unwrap();
            }
            Ok(size)
        }
    }
    impl VfsHooks for AppendAfterSize {
        fn inner(&self) -> &dyn Vfs {
            &RealFs
        }
        fn open_read(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
            let inner = RealFs.open_read(path)?;
            Ok(Box::new(HookedFile { inner, hooks: self.clone() }))
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let k = key("events");
    let writer = FileStore::open(tmp.path(), Options::default()).unwrap();
    for i in 0..3 {
        append(&writer, &k, &rec(i, payload(i))).unwrap();
    }
    let hooks = AppendAfterSize { appender: Arc::new((writer, k.clone())), armed: Arc::new(AtomicBool::new(false)) };
    let reader = FileStore::open_with(Arc::new(Hooked(hooks.clone())), tmp.path(), Options::default()).unwrap();
    hooks.armed.store(true, Ordering::SeqCst);
    let mut cursor = reader.open_log(&k).unwrap().unwrap();
    assert!(!hooks.armed.load(Ordering::SeqCst), "the append landed between the size read and the commit read");
    let mut got = Vec::new();
    while let Some(batch) = cursor.next_batch(usize::MAX).unwrap() {
        got.extend(batch);
    }
    assert_eq!(got.len(), 4, "the records of the commit it read");
    drop(cursor);
    // A file shorter than its commit is damage, as before.
    let path = reader.file_path(&k);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 5).unwrap();
    let Err(err) = reader.open_log(&k) else { panic!("a short log opened") };
    assert_eq!(err.code(), ErrorCode::Corrupt);
    assert!(err.to_string().contains("shorter than its acknowledged records"), "{err}");
}
