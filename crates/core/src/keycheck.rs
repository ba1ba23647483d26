//! The key check of an encrypted store on open (FORMAT.md §4.7): reads
//! `.konserve.rekey` and `.konserve.keycheck`, refuses a wrong key, no key or
//! an unfinished rekey, and adopts the key of a store without a check. The
//! files' bytes are [`crate::format::keycheck`]'s.

use std::io;
use std::path::{Path, PathBuf};

use crate::codec::{OsRandom, SegmentContext, ENCRYPTOR_NONE};
use crate::error::{Error, ErrorCode, Result};
use crate::format::file::{Header, HEADER_LEN};
use crate::format::keycheck::{
    KeyCheck, PendingRekey, KEY_CHECK_FILE_LEN, KEY_CHECK_FILE_NAME, KEY_CHECK_STAGE_HEX, REKEY_FILE_LEN, REKEY_FILE_NAME,
    WAL_LOCKFREE_VERSION,
};
use crate::keyfile::{self, StoreDir};
use crate::keyhash::is_key_file_name;
use crate::staging::{self, InFlight};

/// The bytes of `dir/name` (at most `max`), or `None` if it does not exist.
fn read_small(store: &StoreDir, name: &str, max: usize) -> Result<Option<(Vec<u8>, PathBuf)>> {
    let path = store.dir.join(name);
    let file = match store.vfs.open_read(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(e, "cannot open the file", &path)),
    };
    let mut buf = vec![0u8; max + 1];
    let got = file.read_upto_at(&mut buf, 0).map_err(|e| Error::io(e, "cannot read the file", &path))?;
    buf.truncate(got);
    Ok(Some((buf, path)))
}

/// Writes `dir/name` as a key file is written (FORMAT.md §5): a new staging
/// file written whole, fsync, rename over the target, directory fsync.
fn write_durably(store: &StoreDir, name: &str, bytes: &[u8]) -> Result<()> {
    let durable = store.options().sync_blob;
    let stage_name = staging::staging_name(KEY_CHECK_STAGE_HEX, std::process::id(), staging::next_seq());
    let _in_flight = InFlight::register(store.id, stage_name.clone());
    let stage = store.dir.join(&stage_name);
    let target = store.dir.join(name);
    let result = (|| {
        let mut f = store.vfs.create_new(&stage).map_err(|e| Error::io(e, "cannot create a staging file", &stage))?;
        f.write_all(bytes).map_err(|e| Error::io(e, "cannot write a staging file", &stage))?;
        if durable {
            f.sync().map_err(|e| store.fsync_failed(e, "cannot fsync a staging file", &stage))?;
        }
        drop(f);
        store.vfs.rename(&stage, &target).map_err(|e| Error::io(e, "cannot rename a staging file", &target))
    })();
    if result.is_err() {
        let _ = store.vfs.remove_file(&stage);
    }
    result?;
    if durable {
        store.sync_dir()?;
    }
    Ok(())
}

fn decrypt(message: impl Into<String>, file: &Path) -> Error {
    Error::new(ErrorCode::Decrypt, message).with_file(file)
}

/// What opening a store checks about its key (FORMAT.md §4.7), in the core as
/// in the pure store: an unfinished rekey refuses the open; a key check must
/// match the store's key, and a store without a key is refused when there is
/// one; a keyed open of a store without a key check adopts the key (writes the
/// check) once every key file is encrypted and one authenticates with it, and
/// refuses a store that holds plaintext files unless `accept_plaintext`.
///
/// Returns the version of the store's write-ahead log marker, `None` without
/// one: a key check of version 2 or 3 (docs/WAL.md §8, §4.1; salt and check
/// all zero when it has no key).
pub(crate) fn check_on_open(store: &StoreDir) -> Result<Option<u8>> {
    if let Some((bytes, path)) = read_small(store, REKEY_FILE_NAME, REKEY_FILE_LEN)? {
        PendingRekey::decode(&bytes).map_err(|e| e.with_file(&path))?;
        return Err(decrypt(
            "the store has an unfinished rekey: run rekey(dir, { from, to }) again with the same keys to finish it before opening the store",
            &path,
        ));
    }
    let key = store.options().encryption_key.as_deref();
    let (found, marker) = match read_small(store, KEY_CHECK_FILE_NAME, KEY_CHECK_FILE_LEN)? {
        Some((bytes, path)) => {
            let (check, version) = KeyCheck::decode_versioned(&bytes).map_err(|e| e.with_file(&path))?;
            let marker = (version > 1).then_some(version);
            // The marker of a store without a key says nothing of keys.
            ((!check.is_none() || marker.is_none()).then_some((check, path)), marker)
        }
        None => (None, None),
    };
    check_key(store, key, found, marker).map(|()| marker)
}

fn check_key(store: &StoreDir, key: Option<&[u8]>, found: Option<(KeyCheck, PathBuf)>, marker: Option<u8>) -> Result<()> {
    match (key, found) {
        (None, None) => Ok(()),
        (None, Some((_, path))) => Err(decrypt(
            "the store is encrypted (it has a key check): open it with its encryptor, or make it plaintext with rekey(dir, { from, to: null })",
            &path,
        )),
        (Some(k), Some((check, path))) if !check.matches(k) => {
            Err(decrypt("wrong encryption key: the key does not match the store's key check", &path))
        }
        (Some(_), Some(_)) => Ok(()),
        (Some(k), None) => adopt(store, k, marker),
    }
}

/// The key check as it is on disk (`None`: no file), and its version.
pub(crate) fn read_marker(store: &StoreDir) -> Result<Option<(KeyCheck, u8)>> {
    match read_small(store, KEY_CHECK_FILE_NAME, KEY_CHECK_FILE_LEN)? {
        Some((bytes, path)) => Ok(Some(KeyCheck::decode_versioned(&bytes).map_err(|e| e.with_file(&path))?)),
        None => Ok(None),
    }
}

/// Writes the write-ahead log marker (docs/WAL.md §8, §4.1): the store's key
/// check as version 3 (all zero without one), durably (staging, rename,
/// directory fsync).
pub(crate) fn write_wal_marker(store: &StoreDir) -> Result<()> {
    let check = read_marker(store)?.map_or(KeyCheck::NONE, |(c, _)| c);
    write_durably(store, KEY_CHECK_FILE_NAME, &check.encode_version(WAL_LOCKFREE_VERSION))
}

/// Removes the write-ahead log marker: the key check back to version 1, or
/// no file when the store has no key; durably.
pub(crate) fn remove_wal_marker(store: &StoreDir) -> Result<()> {
    match read_marker(store)? {
        Some((check, _)) if !check.is_none() => write_durably(store, KEY_CHECK_FILE_NAME, &check.encode()),
        Some(_) => {
            let path = store.dir.join(KEY_CHECK_FILE_NAME);
            match store.vfs.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io(e, "cannot remove the key check", &path)),
            }
            if store.options().sync_blob {
                store.sync_dir()?;
            }
            Ok(())
        }
        None => Ok(()),
    }
}

/// A keyed open of a store without a key check (new, plaintext, or encrypted
/// by a build before key checks): see [`check_on_open`].
fn adopt(store: &StoreDir, key: &[u8], marker: Option<u8>) -> Result<()> {
    let accept_plaintext = store.options().accept_plaintext;
    if marker.is_some() && !accept_plaintext {
        // A store on its log with no key: its records are plaintext key files
        // that this walk of the key files does not see.
        return Err(decrypt(
            "the store is on its write-ahead log and has no key (a plaintext store): open it with acceptPlaintext to migrate it key by key, or encrypt it whole with rekey(dir, { from: null, to })",
            &store.dir.join(KEY_CHECK_FILE_NAME),
        ));
    }
    let mut verified = false;
    let names = store.vfs.read_dir(&store.dir).map_err(|e| Error::io(e, "cannot list the store directory", &store.dir))?;
    for name in names {
        let Some(name) = name.to_str().filter(|n| is_key_file_name(n)) else { continue };
        let path = store.dir.join(name);
        let file = match store.vfs.open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(e, "cannot open the key file", &path)),
        };
        let size = file.size().map_err(|e| Error::io(e, "cannot stat the key file", &path))?;
        let mut head = [0u8; HEADER_LEN];
        // A damaged file is left for the reads that meet it to report.
        if file.read_exact_at(&mut head, 0).is_err() {
            continue;
        }
        let Ok(header) = Header::decode(&head, size) else { continue };
        if header.codec.encryptor == ENCRYPTOR_NONE {
            if accept_plaintext {
                continue;
            }
            return Err(decrypt(
                "the store holds files that are not encrypted and has no key check (a plaintext store): open it with acceptPlaintext to migrate it key by key, or encrypt it whole with rekey(dir, { from: null, to })",
                &path,
            ));
        }
        if verified {
            continue;
        }
        let key_hash = u128::from_str_radix(&name[..32], 16).expect("32 lowercase hex digits");
        let ctx = SegmentContext { secret: Some(key), key_hash, accept_plaintext: false };
        match keyfile::read_head(&*file, size, &path, &ctx) {
            Ok(_) => verified = true,
            Err(e) if e.code() == ErrorCode::Decrypt => {
                return Err(decrypt("wrong encryption key: the store's files do not authenticate with it", &path));
            }
            Err(_) => {}
        }
    }
    if store.options().read_only {
        // Checked as above, but a read-only open writes no key check.
        return Ok(());
    }
    store.check_writable()?;
    // The marker's version is kept (2 or 3).
    let version = marker.unwrap_or(1);
    write_durably(store, KEY_CHECK_FILE_NAME, &KeyCheck::new(key, &mut OsRandom)?.encode_version(version))
}
