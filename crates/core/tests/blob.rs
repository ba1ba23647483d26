//! Streamed, chunked blobs in a store: writing, range reads, damage (crashes:
//! tests/crash_blob.rs).

mod support;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use support::fixtures::{noise, pattern};
use support::key;

use konserve_core::blob::{BlobReader, BlobWriter};
use konserve_core::codec::{Codec, FixedRandom};
use konserve_core::format::blob::{chunk_count, encode_chunked_file, CHUNK_SIZE};
use konserve_core::format::file::{Header, FLAG_CHUNKED, HEADER_LEN};
use konserve_core::format::{self, file};
use konserve_core::{keyhash, staging, ErrorCode, FileStore, Options, Write};
use xxhash_rust::xxh3::xxh3_64;

const META: &[u8] = b"\x81\xa4type\xa6binary";
const MIB: usize = CHUNK_SIZE;

fn codecs() -> Vec<(&'static str, Options)> {
    let with = |compressor, key: Option<&str>| Options {
        compressor,
        encryption_key: key.map(|k| k.as_bytes().to_vec()),
        // The combinations share a directory: a keyed store there reads the
        // plaintext files of the others as a migration does (FORMAT.md §4.7).
        accept_plaintext: key.is_some(),
        ..Options::default()
    };
    vec![("none", with(0, None)), ("lz4", with(1, None)), ("aes", with(0, Some("s3cr3t"))), ("lz4+aes", with(1, Some("s3cr3t")))]
}

fn open(dir: &Path, options: Options) -> Arc<FileStore> {
    Arc::new(FileStore::open(dir, options).unwrap())
}

fn write_blob(store: &Arc<FileStore>, k: &[u8], blob: &[u8], piece: usize) {
    let mut w = store.blob_writer(k, META).unwrap();
    for p in blob.chunks(piece.max(1)) {
        w.write(p).unwrap();
    }
    assert_eq!(w.size(), blob.len() as u64);
    w.commit().unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

fn staging_names(dir: &Path) -> Vec<String> {
    names(dir).into_iter().filter(|n| staging::parse_staging_name(n).is_some()).collect()
}

#[test]
fn chunk_counts() {
    let m = MIB as u64;
    for (p, c) in [(0, 1), (1, 1), (m - 1, 1), (m, 1), (m + 1, 2), (2 * m, 2), (2 * m + 1, 3), (u64::MAX, 1 << 44)] {
        assert_eq!(chunk_count(p), c, "P = {p}");
    }
}

#[test]
fn every_codec_round_trips_every_size() {
    let tmp = tempfile::tempdir().unwrap();
    let sizes = [0, 1, MIB - 1, MIB, MIB + 1, 3 * MIB + MIB / 2];
    for (name, options) in codecs() {
        let store = open(tmp.path(), options.clone());
        for &n in &sizes {
            let ctx = format!("{name}, {n} bytes");
            let k = key(&format!("{name}-{n}"));
            let blob = pattern(n, 0x5a);
            write_blob(&store, &k, &blob, 64 << 10);
            let entry = store.get(&k).unwrap().unwrap();
            assert_eq!((entry.serializer, entry.meta.as_slice()), (0, META), "{ctx}");
            assert!(entry.value == blob, "{ctx}: get");
            let r = store.open_blob(&k).unwrap().unwrap();
            assert_eq!(r.size(), n as u64, "{ctx}");
            assert_eq!(r.meta().key, k);
            assert_eq!(r.meta().meta, META);
            assert!(r.read_at(0, n).unwrap() == blob, "{ctx}: read_at whole");
            assert!(r.read_at(0, usize::MAX).unwrap() == blob, "{ctx}: read past the end is cut short");
            let bytes = fs::read(store.file_path(&k)).unwrap();
            let header = Header::decode(&bytes, bytes.len() as u64).unwrap();
            assert_eq!((header.flags, header.serializer), (FLAG_CHUNKED, 0), "{ctx}");
            assert_eq!((header.codec.compressor, header.codec.encryptor), (options.compressor, u8::from(options.encryption_key.is_some())));
            let trailer = &bytes[bytes.len() - 12..];
            assert_eq!(u64::from_le_bytes(trailer[..8].try_into().unwrap()), n as u64);
            assert_eq!(u64::from(u32::from_le_bytes(trailer[8..].try_into().unwrap())), chunk_count(n as u64));
            if name == "none" {
                let at = r.plain_offset().unwrap() as usize;
                assert!(&bytes[at..at + n] == blob.as_slice(), "{ctx}: plain bytes contiguous at plainOffset");
            } else {
                assert_eq!(r.plain_offset(), None);
            }
            // parse_file reads the same blob.
            let pctx = support::context(&store, &k);
            assert!(format::parse_file(&bytes, &pctx).unwrap().value == blob, "{ctx}: parse_file");
        }
        assert_eq!(staging_names(tmp.path()), Vec::<String>::new());
    }
}

#[test]
fn range_reads_at_chunk_boundaries() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, options) in codecs() {
        let store = open(tmp.path(), options);
        let k = key(name);
        let n = 2 * MIB + 1000;
        let blob = pattern(n, 3);
        write_blob(&store, &k, &blob, MIB / 3);
        let r = store.open_blob(&k).unwrap().unwrap();
        for (off, len) in [
            (0, 0),
            (0, 1),
            (MIB - 1, 1),
            (MIB - 1, 2),
            (MIB, 1),
            (MIB, MIB),
            (MIB - 10, MIB + 20),
            (2 * MIB, 1000),
            (2 * MIB - 1, 1001),
            (n - 1, 1),
            (n - 1, 10),
            (n, 0),
            (n, 5),
            (12345, 3 * MIB),
        ] {
            let want = &blob[off.min(n)..(off + len).min(n)];
            assert!(r.read_at(off as u64, len).unwrap() == want, "{name}: range {off}+{len}");
        }
        let err = r.read_at(n as u64 + 1, 1).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(err.file(), Some(store.file_path(&k).as_path()));
    }
}

/// `read_into` gives what `read_at` gives, in the caller's buffer, and
/// writes nothing past the count it returns.
#[test]
fn read_into_at_chunk_boundaries_and_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, options) in codecs() {
        let store = open(tmp.path(), options);
        let k = key(name);
        let n = 2 * MIB + 1000;
        let blob = pattern(n, 4);
        write_blob(&store, &k, &blob, MIB / 3);
        let r = store.open_blob(&k).unwrap().unwrap();
        for (off, len) in [
            (0, 0),
            (0, 1),
            (0, MIB),
            (0, MIB + 1),
            (MIB - 1, 1),
            (MIB - 1, 2),
            (MIB, MIB),
            (MIB - 10, MIB + 20),
            (1, 2 * MIB),
            (2 * MIB, 1000),
            (2 * MIB, 5000),
            (2 * MIB - 1, 1001),
            (n - 1, 1),
            (n - 1, 10),
            (n, 0),
            (n, 5),
            (0, n),
            (0, 3 * MIB),
            (12345, 3 * MIB),
        ] {
            let ctx = format!("{name}: {len} bytes at {off}");
            let mut buf = vec![0xEEu8; len + 7];
            let got = r.read_into(off as u64, &mut buf[..len]).unwrap();
            let want = &blob[off.min(n)..(off + len).min(n)];
            assert_eq!(got, want.len(), "{ctx}");
            assert!(&buf[..got] == want, "{ctx}: the bytes");
            assert!(buf[got..].iter().all(|&b| b == 0xEE), "{ctx}: nothing written past the count");
        }
        // A whole blob, piece by piece, as a stream reads it.
        let mut out = Vec::new();
        let mut piece = vec![0u8; MIB];
        loop {
            let got = r.read_into(out.len() as u64, &mut piece).unwrap();
            if got == 0 {
                break;
            }
            out.extend_from_slice(&piece[..got]);
        }
        assert!(out == blob, "{name}: streamed whole");
        let err = r.read_into(n as u64 + 1, &mut piece).unwrap_err();
        assert_eq!((err.code(), err.file()), (ErrorCode::InvalidArgument, Some(store.file_path(&k).as_path())));
    }
    // An empty blob, and an old raw blob written whole (in a plaintext store).
    let store = open(&tmp.path().join("plain"), Options::default());
    write_blob(&store, &key("empty"), &[], 1);
    let r = store.open_blob(&key("empty")).unwrap().unwrap();
    assert_eq!(r.read_into(0, &mut [0u8; 10]).unwrap(), 0);
    let old = noise(3000, 6);
    store.put(&[Write { key: &key("old"), serializer: 0, meta: META, value: &old }]).unwrap();
    let r = store.open_blob(&key("old")).unwrap().unwrap();
    let mut buf = [0u8; 100];
    assert_eq!(r.read_into(2950, &mut buf).unwrap(), 50);
    assert_eq!(buf[..50], old[2950..]);
    assert_eq!(r.read_into(3000, &mut buf).unwrap(), 0);
    assert_eq!(r.read_into(3001, &mut buf).unwrap_err().code(), ErrorCode::InvalidArgument);
}

/// A damaged chunk fails `read_into` as it fails `read_at`, whether it is
/// read straight into the buffer (codec none, a whole chunk) or not.
#[test]
fn read_into_checks_every_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, options) in codecs() {
        let store = open(tmp.path(), options);
        let k = key(name);
        let blob = noise(2 * MIB + 10, 3);
        write_blob(&store, &k, &blob, MIB);
        let path = store.file_path(&k);
        let file = fs::read(&path).unwrap();
        let (_, ends, _) = layout_of(&file);
        // One byte in the middle of chunk 1.
        let mut bad = file.clone();
        bad[(ends[0] + ends[1]) / 2] ^= 1;
        fs::write(&path, &bad).unwrap();
        let r = store.open_blob(&k).unwrap().unwrap();
        let mut buf = vec![0u8; 3 * MIB];
        for (off, len) in [(MIB, MIB), (MIB + 5, 10), (0, 3 * MIB), (MIB - 1, 2)] {
            let e = r.read_into(off as u64, &mut buf[..len]).unwrap_err();
            assert_eq!((e.code(), e.file()), (ErrorCode::Corrupt, Some(path.as_path())), "{name}: {len} at {off}");
        }
        // The chunks around it still read.
        assert_eq!(r.read_into(0, &mut buf[..MIB]).unwrap(), MIB);
        assert!(buf[..MIB] == blob[..MIB], "{name}");
        assert_eq!(r.read_into(2 * MIB as u64, &mut buf).unwrap(), 10);
        assert!(buf[..10] == blob[2 * MIB..], "{name}");
    }
}

#[test]
fn odd_sized_pieces_write_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 3 * MIB + 17;
    let blob = pattern(n, 9);
    for (name, options) in codecs().into_iter().take(2) {
        let store = open(tmp.path(), options.clone());
        let codec = Codec { compressor: options.compressor, encryptor: 0 };
        let want = encode_chunked_file(codec, None, &key("k"), META, &blob, &mut FixedRandom::new(vec![])).unwrap();
        // 1-byte pieces only for a smaller prefix: they are slow in a debug build.
        for piece in [7, 4096 + 3, MIB - 1, MIB, MIB + 1, 3 * MIB, n] {
            write_blob(&store, &key("k"), &blob, piece);
            assert!(fs::read(store.file_path(&key("k"))).unwrap() == want, "{name}: pieces of {piece}");
        }
        let small = pattern(MIB + 5, 1);
        let want = encode_chunked_file(codec, None, &key("s"), META, &small, &mut FixedRandom::new(vec![])).unwrap();
        let mut w = store.blob_writer(&key("s"), META).unwrap();
        for b in &small {
            w.write(std::slice::from_ref(b)).unwrap();
        }
        w.write(&[]).unwrap();
        w.commit().unwrap();
        assert!(fs::read(store.file_path(&key("s"))).unwrap() == want, "{name}: 1-byte pieces");
    }
    // Encrypted: the same layout, other salts.
    let (_, aes) = codecs().remove(3);
    let store = open(tmp.path(), aes);
    write_blob(&store, &key("e"), &blob, 7 * 1024 + 1);
    assert!(store.get(&key("e")).unwrap().unwrap().value == blob);
}

/// A small two-chunk file: a compressible blob of 1 MiB + 100 with LZ4
/// (and AES), so that every byte of the file can be flipped.
fn small_two_chunk_file(options: &Options) -> (tempfile::TempDir, Arc<FileStore>, Vec<u8>, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), options.clone());
    let blob = pattern(MIB + 100, 0);
    write_blob(&store, &key("k"), &blob, MIB);
    let file = fs::read(store.file_path(&key("k"))).unwrap();
    assert!(file.len() < 64 << 10, "{} bytes", file.len());
    (tmp, store, blob, file)
}

/// Where the parts of a chunked file lie: (value start, chunk ends, table start).
fn layout_of(file: &[u8]) -> (usize, Vec<usize>, usize) {
    let header = Header::decode(file, file.len() as u64).unwrap();
    let start = HEADER_LEN + header.meta_len as usize;
    let c = u32::from_le_bytes(file[file.len() - 4..].try_into().unwrap()) as usize;
    let table = file.len() - 12 - 12 * c;
    let mut ends = Vec::new();
    let mut at = start;
    for i in 0..c {
        at += u32::from_le_bytes(file[table + 12 * i..table + 12 * i + 4].try_into().unwrap()) as usize;
        ends.push(at);
    }
    (start, ends, table)
}

#[test]
fn every_flipped_byte_is_an_error_never_wrong_bytes() {
    for (name, options) in codecs().into_iter().filter(|(_, o)| o.compressor == 1) {
        let (_tmp, store, blob, file) = small_two_chunk_file(&options);
        let path = store.file_path(&key("k"));
        let (start, ends, _) = layout_of(&file);
        let chunk_ranges = [(0, MIB), (MIB, 100)];
        let mut full_checks = 0;
        for i in 0..file.len() {
            let mut f = file.clone();
            f[i] ^= 0x10;
            fs::write(&path, &f).unwrap();
            let ctx = format!("{name}: byte {i} of {}", file.len());
            let in_chunk = (0..ends.len()).find(|&c| i >= if c == 0 { start } else { ends[c - 1] } && i < ends[c]);
            let reader = match store.open_blob(&key("k")) {
                Err(e) => {
                    assert!(
                        matches!(
                            e.code(),
                            ErrorCode::Corrupt
                                | ErrorCode::Decrypt
                                | ErrorCode::KeyMismatch
                                | ErrorCode::UnsupportedCodec
                                | ErrorCode::UnsupportedVersion
                                | ErrorCode::NotBinary
                        ),
                        "{ctx}: {e}"
                    );
                    assert_eq!(e.file(), Some(path.as_path()), "{ctx}");
                    assert!(in_chunk.is_none(), "{ctx}: a damaged chunk fails the open, not its read");
                    continue;
                }
                Ok(r) => r.unwrap(),
            };
            let c = in_chunk.unwrap_or_else(|| panic!("{ctx}: a damaged head or table opened"));
            // The damaged chunk never reads; a cheap check for most bytes,
            // the full check (every chunk, and get) for some.
            let (off, len) = chunk_ranges[c];
            let e = reader.read_at(off as u64, len).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Corrupt, "{ctx}: {e}");
            assert_eq!(e.file(), Some(path.as_path()), "{ctx}");
            if i % 61 == 0 || i + 1 == ends[c] {
                full_checks += 1;
                for (off, len) in chunk_ranges {
                    if let Ok(bytes) = reader.read_at(off as u64, len) {
                        assert!(bytes == blob[off..off + len], "{ctx}: wrong bytes");
                    }
                }
                assert_eq!(store.get(&key("k")).unwrap_err().code(), ErrorCode::Corrupt, "{ctx}: get");
            }
        }
        assert!(full_checks > 10);
    }
}

/// Rewrites the table and trailer of a chunked file from `chunks` (stored
/// bytes) and `size`, and fixes every checksum: a deliberate edit.
fn rebuild(file: &[u8], chunks: &[&[u8]], size: u64) -> Vec<u8> {
    let (start, _, _) = layout_of(file);
    let mut out = file[..start].to_vec();
    let mut tail = Vec::new();
    for c in chunks {
        out.extend_from_slice(c);
        tail.extend_from_slice(&(c.len() as u32).to_le_bytes());
        tail.extend_from_slice(&xxh3_64(c).to_le_bytes());
    }
    tail.extend_from_slice(&size.to_le_bytes());
    tail.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    out.extend_from_slice(&tail);
    let mut header = Header::decode(file, file.len() as u64).unwrap();
    header.value_len = (out.len() - start) as u64;
    header.value_checksum = xxh3_64(&tail);
    out[..HEADER_LEN].copy_from_slice(&header.encode());
    out
}

#[test]
fn moved_dropped_or_reordered_chunks_do_not_authenticate() {
    let (_, options) = codecs().remove(3);
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), options);
    let blob = pattern(3 * MIB, 0);
    write_blob(&store, &key("k"), &blob, MIB);
    let path = store.file_path(&key("k"));
    let file = fs::read(&path).unwrap();
    let (start, ends, _) = layout_of(&file);
    let chunk = |i: usize| &file[if i == 0 { start } else { ends[i - 1] }..ends[i]];
    // The rebuild itself is faithful.
    fs::write(&path, rebuild(&file, &[chunk(0), chunk(1), chunk(2)], 3 * MIB as u64)).unwrap();
    assert!(store.get(&key("k")).unwrap().unwrap().value == blob);
    for (what, chunks, size) in [
        ("dropped from the end", vec![chunk(0), chunk(1)], 2 * MIB as u64),
        ("reordered", vec![chunk(1), chunk(0), chunk(2)], 3 * MIB as u64),
        ("a middle chunk as the last", vec![chunk(0), chunk(1), chunk(1)], 3 * MIB as u64),
    ] {
        fs::write(&path, rebuild(&file, &chunks, size)).unwrap();
        assert_eq!(store.get(&key("k")).unwrap_err().code(), ErrorCode::Decrypt, "{what}");
    }
    // A chunk of another key's blob does not authenticate here.
    write_blob(&store, &key("other"), &blob, MIB);
    let other = fs::read(store.file_path(&key("other"))).unwrap();
    let (o_start, o_ends, _) = layout_of(&other);
    fs::write(&path, rebuild(&file, &[&other[o_start..o_ends[0]], chunk(1), chunk(2)], 3 * MIB as u64)).unwrap();
    let r = store.open_blob(&key("k")).unwrap().unwrap();
    assert_eq!(r.read_at(0, 10).unwrap_err().code(), ErrorCode::Decrypt);
    assert!(r.read_at(MIB as u64, MIB).unwrap() == blob[MIB..2 * MIB], "the other chunks still read");
}

#[test]
fn truncations_and_trailer_edits_are_corrupt() {
    let (_, options) = codecs().remove(1);
    let (_tmp, store, _blob, file) = small_two_chunk_file(&options);
    let path = store.file_path(&key("k"));
    for n in (0..file.len()).chain([file.len() + 1]) {
        let mut f = file.clone();
        f.resize(n, 0);
        fs::write(&path, &f).unwrap();
        assert_eq!(store.open_blob(&key("k")).unwrap_err().code(), ErrorCode::Corrupt, "length {n}");
        assert_eq!(store.get(&key("k")).unwrap_err().code(), ErrorCode::Corrupt, "length {n}");
    }
    // Deliberate edits of the trailer that keep its checksum right.
    let (start, ends, _) = layout_of(&file);
    let chunks = [&file[start..ends[0]], &file[ends[0]..ends[1]]];
    for (what, size, count_fix) in [
        ("a length that needs another chunk count", 3 * MIB as u64, None),
        ("a chunk count that does not fit the length", MIB as u64 + 100, Some(3u32)),
        ("a last chunk of another length", MIB as u64 + 99, None),
        ("an empty blob with two chunks", 0, None),
    ] {
        let mut f = rebuild(&file, &chunks, size);
        if let Some(c) = count_fix {
            let at = f.len() - 4;
            f[at..].copy_from_slice(&c.to_le_bytes());
            let (_, _, table) = layout_of(&file);
            let header_sum = xxh3_64(&f[table..]);
            let mut h = Header::decode(&f, f.len() as u64).unwrap();
            h.value_checksum = header_sum;
            f[..HEADER_LEN].copy_from_slice(&h.encode());
        }
        fs::write(&path, &f).unwrap();
        let err = match store.open_blob(&key("k")) {
            Err(e) => e,
            Ok(r) => r.unwrap().read_at(0, usize::MAX).unwrap_err(),
        };
        assert_eq!(err.code(), ErrorCode::Corrupt, "{what}: {err}");
        assert_eq!(store.get(&key("k")).unwrap_err().code(), ErrorCode::Corrupt, "{what}");
    }
}

#[test]
fn other_values_are_not_binary_and_old_raw_blobs_read() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), Options::default());
    assert!(store.open_blob(&key("missing")).unwrap().is_none());
    store.put(&[Write { key: &key("msgpack"), serializer: 1, meta: META, value: b"\xa3abc" }]).unwrap();
    let err = store.open_blob(&key("msgpack")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotBinary);
    assert_eq!(err.file(), Some(store.file_path(&key("msgpack")).as_path()));
    // A raw blob written whole (flags 0), as before chunking.
    let old = noise(3000, 5);
    store.put(&[Write { key: &key("old"), serializer: 0, meta: META, value: &old }]).unwrap();
    let r = store.open_blob(&key("old")).unwrap().unwrap();
    assert_eq!(r.size(), 3000);
    assert_eq!(r.read_at(1000, 10).unwrap(), old[1000..1010]);
    let bytes = fs::read(store.file_path(&key("old"))).unwrap();
    let m = Header::decode(&bytes, bytes.len() as u64).unwrap().meta_len;
    assert_eq!(r.plain_offset(), Some(HEADER_LEN as u64 + u64::from(m)));
    // A log file (flags 2) is not a blob.
    let path = store.file_path(&key("old"));
    let mut f = fs::read(&path).unwrap();
    let mut h = Header::decode(&f, f.len() as u64).unwrap();
    h.flags = file::FLAG_LOG;
    h.value_len = 0;
    h.value_checksum = xxh3_64(b"");
    f.truncate(f.len() - 3000);
    f[..HEADER_LEN].copy_from_slice(&h.encode());
    fs::write(&path, &f).unwrap();
    assert_eq!(store.open_blob(&key("old")).unwrap_err().code(), ErrorCode::NotBinary);
    // Invalid keys.
    assert_eq!(store.open_blob(b"\x09").unwrap_err().code(), ErrorCode::InvalidKey);
    assert_eq!(store.blob_writer(b"\x09", META).unwrap_err().code(), ErrorCode::InvalidKey);
    // A wrong encryption key cannot read an encrypted blob.
    let enc = open(tmp.path(), codecs().remove(2).1);
    write_blob(&enc, &key("secret"), &pattern(MIB + 1, 0), MIB);
    // (Without its key check, as a store from before key checks: with it the open fails.)
    assert_eq!(FileStore::open(tmp.path(), Options::default()).unwrap_err().code(), ErrorCode::Decrypt);
    fs::remove_file(tmp.path().join(konserve_core::format::keycheck::KEY_CHECK_FILE_NAME)).unwrap();
    let plain = open(tmp.path(), Options::default());
    assert_eq!(plain.open_blob(&key("secret")).unwrap_err().code(), ErrorCode::Decrypt);
    assert_eq!(plain.get(&key("secret")).unwrap_err().code(), ErrorCode::Decrypt);
}

#[test]
fn abort_drop_and_failure_leave_no_staging_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), Options::default());
    write_blob(&store, &key("k"), b"old", 10);
    let mut w = store.blob_writer(&key("k"), META).unwrap();
    w.write(&pattern(MIB + 5, 0)).unwrap();
    assert_eq!(staging_names(tmp.path()).len(), 1);
    w.abort();
    assert_eq!(staging_names(tmp.path()), Vec::<String>::new());
    let mut w = store.blob_writer(&key("k"), META).unwrap();
    w.write(b"x").unwrap();
    drop(w);
    assert_eq!(names(tmp.path()), vec![keyhash::file_name(&key("k"))], "only the key file");
    assert_eq!(store.get(&key("k")).unwrap().unwrap().value, b"old");
    // A store opened meanwhile does not sweep a live writer's staging file.
    let mut w = store.blob_writer(&key("k"), META).unwrap();
    w.write(b"new").unwrap();
    let _other = open(tmp.path(), Options::default());
    w.commit().unwrap();
    assert_eq!(store.get(&key("k")).unwrap().unwrap().value, b"new");
    assert_eq!(staging_names(tmp.path()), Vec::<String>::new());
}

#[test]
fn a_reader_keeps_its_version_while_a_writer_replaces_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), codecs().remove(3).1);
    let (old, new) = (pattern(2 * MIB + 7, 1), pattern(MIB + 3, 2));
    write_blob(&store, &key("k"), &old, MIB);
    let reader = Arc::new(store.open_blob(&key("k")).unwrap().unwrap());
    let mut w = store.blob_writer(&key("k"), META).unwrap();
    w.write(&new).unwrap();
    // Reads from another thread while the writer commits.
    let r2 = Arc::clone(&reader);
    let t = std::thread::spawn(move || (0..3).map(|i| r2.read_at(i * MIB as u64, MIB).unwrap()).collect::<Vec<_>>().concat());
    w.commit().unwrap();
    assert!(t.join().unwrap() == old);
    assert!(reader.read_at(0, usize::MAX).unwrap() == old, "the reader still sees the old blob");
    assert_eq!(reader.size(), old.len() as u64);
    assert!(store.open_blob(&key("k")).unwrap().unwrap().read_at(0, usize::MAX).unwrap() == new);
    store.delete(&[&key("k")]).unwrap();
    assert!(reader.read_at(MIB as u64, 5).unwrap() == old[MIB..MIB + 5], "even after a delete");
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<BlobReader>();
    assert_send_sync::<BlobWriter>();
}
