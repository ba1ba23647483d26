//! Golden vectors for chunked blob files (FORMAT.md §4.5):
//! `test-vectors/blobs.json`, checked by `cargo test` and by the TypeScript
//! codec. Every implementation must produce exactly these bytes from these
//! inputs, and read the blob back from them.
//!
//! `npm run vectors:regen` rewrites the file;
//! do that only for a deliberate format change, and review the diff.
//!
//! Schema: a JSON array of objects, one per case:
//! ```text
//! {
//!   "name":          string, unique
//!   "key":           hex of the key's CKE (FORMAT.md §2)
//!   "meta":          hex of the metadata bytes (a MessagePack map)
//!   "compressor":    0 (none) or 1 (LZ4 frame, §4.2)
//!   "encryptionKey": null (encryptor 0), or the user key as a UTF-8 string (encryptor 1, §4.3)
//!   "random":        hex of the fixed "random" bytes, consumed in order only when
//!                    encrypting: the meta segment's salt (16) and IV (16), then per
//!                    chunk, in order, its salt (16) and IV (16). Always
//!                    32 * (1 + chunks) bytes, present (but unused) without encryption.
//!   "blobLength":    P, the blob's length; the blob's bytes are
//!                    byte[i] = (i * 7 + (i >> 10)) & 0xff, for i in 0..P
//!   "file":          hex of the whole key file; present only when the file is
//!                    shorter than 64 KiB
//!   "fileSha256":    hex of SHA-256 of the whole key file (always present)
//! }
//! ```
//! The file is serializer 0, flags FLAG_CHUNKED (1), chunks of 1 MiB (the
//! last shorter, an empty blob is one empty chunk).

use std::sync::Arc;

use konserve_core::codec::{Codec, FixedRandom, SegmentContext};
use konserve_core::format;
use konserve_core::format::blob::{chunk_count, encode_chunked_file, CHUNK_SIZE};
use konserve_core::format::key::{self as cke, Key};
use konserve_core::keyhash::{file_name, key_hash};
use konserve_core::{FileStore, Options};
use serde_json::{json, Value};

mod common;
use common::*;
use sha2::{Digest, Sha256};

/// The blob of every case: `byte[i] = (i * 7 + (i >> 10)) & 0xff`.
fn blob(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + (i >> 10)) & 0xff) as u8).collect()
}

/// The fixed randomness for a blob of `n` bytes: 32 bytes for the meta
/// segment and 32 per chunk. Bytes 0x80 and above are included on purpose.
fn fixed_random(n: usize) -> Vec<u8> {
    let len = 32 * (1 + chunk_count(n as u64) as usize);
    (0..len).map(|i| (i * 37 + 0x80) as u8).collect()
}

const LENGTHS: [usize; 6] = [0, 5, 1000, 1 << 20, (1 << 20) + 1, 5 << 19];
const SECRET: &str = "golden key";
/// Files shorter than this are stored whole in the JSON.
const INLINE_LIMIT: usize = 64 << 10;

#[test]
fn blob_files() {
    // {type: "binary", lastWrite: timestamp 32 (ext -1)}
    let meta = unhex("82a474797065a662696e617279a96c6173745772697465d6ff65537280");
    let tmp = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for (compressor, secret, label) in [(0u8, None, "none"), (1, None, "lz4"), (0, Some(SECRET), "aes"), (1, Some(SECRET), "lz4+aes")] {
        let options = Options { compressor, encryption_key: secret.map(|s| s.as_bytes().to_vec()), ..Options::default() };
        let store = Arc::new(FileStore::open(tmp.path().join(label.replace('+', "-")), options).unwrap());
        for n in LENGTHS {
            let name = format!("{label}: {n} bytes");
            let key = cke::encode(&Key::Array(vec![Key::str("blob"), Key::Int(n as i64)]));
            let codec = Codec { compressor, encryptor: u8::from(secret.is_some()) };
            let secret_bytes = secret.map(str::as_bytes);
            let random = fixed_random(n);
            let data = blob(n);
            let file = encode_chunked_file(codec, secret_bytes, &key, &meta, &data, &mut FixedRandom::new(random.clone())).unwrap();

            // The bytes parse back to the blob.
            let ctx = SegmentContext { secret: secret_bytes, key_hash: key_hash(&key), accept_plaintext: false };
            let parsed = format::parse_file(&file, &ctx).unwrap();
            assert_eq!((parsed.header.flags, parsed.header.serializer), (format::file::FLAG_CHUNKED, 0), "{name}");
            assert!(parsed.key == key && parsed.meta == meta && parsed.value == data, "{name}: parse_file");
            // The store reads them, in ranges too.
            std::fs::write(store.dir().join(file_name(&key)), &file).unwrap();
            let reader = store.open_blob(&key).unwrap().unwrap();
            assert_eq!(reader.size(), n as u64, "{name}");
            assert!(reader.read_at(0, n).unwrap() == data, "{name}: read_at");
            if n > CHUNK_SIZE {
                let at = CHUNK_SIZE - 3;
                let end = (at + 6).min(n);
                assert!(reader.read_at(at as u64, 6).unwrap() == data[at..end], "{name}: across a chunk boundary");
            }
            // The store's writer writes the same layout: the same bytes
            // without encryption (no randomness), the same length with it.
            let mut w = store.blob_writer(&key, &meta).unwrap();
            for piece in data.chunks(300_000) {
                w.write(piece).unwrap();
            }
            w.commit().unwrap();
            let written = std::fs::read(store.file_path(&key)).unwrap();
            if secret.is_none() {
                assert!(written == file, "{name}: the writer's file differs");
            } else {
                assert_eq!(written.len(), file.len(), "{name}: the writer's file length differs");
                assert!(store.get(&key).unwrap().unwrap().value == data, "{name}");
            }

            let mut case = json!({
                "name": name,
                "key": hex(&key),
                "meta": hex(&meta),
                "compressor": compressor,
                "encryptionKey": secret,
                "random": hex(&random),
                "blobLength": n,
            });
            if file.len() < INLINE_LIMIT {
                case["file"] = Value::String(hex(&file));
            }
            case["fileSha256"] = Value::String(hex(&Sha256::digest(&file)));
            out.push(case);
        }
    }
    check_or_write("blobs.json", Value::Array(out));
}
