//! The key check of an encrypted store (FORMAT.md §4.7), as bytes (no I/O;
//! `crate::keycheck` reads and writes the files on open): `.konserve.keycheck`
//! says which key the store is encrypted with, so that a store opened with
//! another key fails at once (`ERR_DECRYPT`) instead of writing over values
//! it cannot read; `.konserve.rekey` marks a rekey in progress.
//!
//! The check value is HKDF-SHA256 of the user's key over a random salt. It
//! holds neither the key nor anything that tests a guess faster than an
//! encrypted segment already does (one HKDF per guess either way).

use hkdf::Hkdf;
use sha2::Sha256;
use xxhash_rust::xxh3::xxh3_64;

use crate::codec::Randomness;
use crate::error::{Error, ErrorCode, Result};

/// The key check file of an encrypted store.
pub const KEY_CHECK_FILE_NAME: &str = ".konserve.keycheck";
/// The file that marks a rekey in progress (both keys' checks).
pub const REKEY_FILE_NAME: &str = ".konserve.rekey";
/// The fixed hex of the staging files of both (FORMAT.md §5's pattern, so
/// the open sweep and `delete_store` treat them as every other staging file).
pub const KEY_CHECK_STAGE_HEX: &str = "4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b";

const CHECK_MAGIC: &[u8; 8] = b"KSVKEYCK";
const REKEY_MAGIC: &[u8; 8] = b"KSVREKEY";
const VERSION: u8 = 1;
/// The version of `.konserve.keycheck` that marks a store with a write-ahead
/// log (docs/WAL.md §8): the same bytes as version 1; a store without a key
/// has salt and check all zero. A store of this version is still opened on
/// its log, and every write there takes its key lock file.
pub const WAL_MARKER_VERSION: u8 = 2;
/// The version an upgrade writes now (docs/WAL.md §4.1): a store with a
/// write-ahead log whose replacing writes take no key lock file (the same
/// bytes again). The newest version this build reads.
pub const WAL_LOCKFREE_VERSION: u8 = 3;
/// Length of the random salt.
pub const CHECK_SALT_LEN: usize = 32;
/// Length of the check value.
pub const CHECK_LEN: usize = 32;
/// The HKDF `info` of the check value (not the segments' info: the check is
/// never a key of anything).
pub const CHECK_INFO: &[u8] = b"konserve/1 key check";
/// Length of `.konserve.keycheck`.
pub const KEY_CHECK_FILE_LEN: usize = 8 + 1 + CHECK_SALT_LEN + CHECK_LEN + 8;
/// Length of `.konserve.rekey`.
pub const REKEY_FILE_LEN: usize = 8 + 1 + 2 * ENTRY_LEN + 8;
const ENTRY_LEN: usize = 1 + CHECK_SALT_LEN + CHECK_LEN;

/// A salt and the check value of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyCheck {
    /// Random, chosen when the check is written.
    pub salt: [u8; CHECK_SALT_LEN],
    /// HKDF-SHA256(IKM = the user's key, salt, info = [`CHECK_INFO`], L = 32).
    pub check: [u8; CHECK_LEN],
}

impl KeyCheck {
    /// The check of `key` with this salt.
    pub fn with_salt(key: &[u8], salt: [u8; CHECK_SALT_LEN]) -> KeyCheck {
        let mut check = [0u8; CHECK_LEN];
        Hkdf::<Sha256>::new(Some(&salt), key).expand(CHECK_INFO, &mut check).expect("32 bytes is a valid HKDF-SHA256 length");
        KeyCheck { salt, check }
    }

    /// The check of `key` with a fresh salt from `rng`.
    pub fn new(key: &[u8], rng: &mut dyn Randomness) -> Result<KeyCheck> {
        let mut salt = [0u8; CHECK_SALT_LEN];
        rng.fill(&mut salt)?;
        Ok(KeyCheck::with_salt(key, salt))
    }

    /// Whether `key` is the key this check was made of (compared in constant time).
    pub fn matches(&self, key: &[u8]) -> bool {
        let other = KeyCheck::with_salt(key, self.salt);
        self.check.iter().zip(other.check.iter()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
    }

    /// The check of a store without a key that has the write-ahead log marker: all zero.
    pub const NONE: KeyCheck = KeyCheck { salt: [0; CHECK_SALT_LEN], check: [0; CHECK_LEN] };

    /// Whether this is [`KeyCheck::NONE`] (no key).
    pub fn is_none(&self) -> bool {
        *self == KeyCheck::NONE
    }

    /// The bytes of `.konserve.keycheck`.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_version(VERSION)
    }

    /// The bytes of `.konserve.keycheck` with this version (1,
    /// [`WAL_MARKER_VERSION`] or [`WAL_LOCKFREE_VERSION`]).
    pub fn encode_version(&self, version: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_CHECK_FILE_LEN);
        out.extend_from_slice(CHECK_MAGIC);
        out.push(version);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.check);
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Decodes `.konserve.keycheck`: `ERR_CORRUPT` unless it is whole.
    pub fn decode(bytes: &[u8]) -> Result<KeyCheck> {
        let body = checked(bytes, CHECK_MAGIC, KEY_CHECK_FILE_LEN, "key check", VERSION)?;
        Ok(entry(&body[9..9 + CHECK_SALT_LEN + CHECK_LEN]))
    }

    /// Decodes `.konserve.keycheck` of version 1, [`WAL_MARKER_VERSION`] or
    /// [`WAL_LOCKFREE_VERSION`]: the check and its version.
    pub fn decode_versioned(bytes: &[u8]) -> Result<(KeyCheck, u8)> {
        let body = checked(bytes, CHECK_MAGIC, KEY_CHECK_FILE_LEN, "key check", WAL_LOCKFREE_VERSION)?;
        Ok((entry(&body[9..9 + CHECK_SALT_LEN + CHECK_LEN]), body[8]))
    }
}

fn entry(b: &[u8]) -> KeyCheck {
    KeyCheck {
        salt: b[..CHECK_SALT_LEN].try_into().expect("32 bytes"),
        check: b[CHECK_SALT_LEN..CHECK_SALT_LEN + CHECK_LEN].try_into().expect("32 bytes"),
    }
}

/// The body of a file of `len` bytes with this magic, its checksum and version checked.
fn checked<'a>(bytes: &'a [u8], magic: &[u8; 8], len: usize, what: &str, newest: u8) -> Result<&'a [u8]> {
    if bytes.len() != len || &bytes[..8] != magic {
        return Err(Error::corrupt(format!("the {what} file is damaged (length {} or magic)", bytes.len())));
    }
    let sum = u64::from_le_bytes(bytes[len - 8..].try_into().expect("8 bytes"));
    if xxh3_64(&bytes[..len - 8]) != sum {
        return Err(Error::corrupt(format!("the {what} file is damaged (checksum)")));
    }
    if !(VERSION..=newest).contains(&bytes[8]) {
        let reads = if newest == VERSION { format!("{VERSION}") } else { format!("{VERSION} to {newest}") };
        return Err(Error::new(
            ErrorCode::UnsupportedVersion,
            format!("{what} file version {} is not supported (this build reads {reads})", bytes[8]),
        ));
    }
    Ok(&bytes[..len - 8])
}

/// A rekey in progress: the checks of the key it rekeys from and to (`None`:
/// no key, plaintext).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingRekey {
    /// The key the store had.
    pub from: Option<KeyCheck>,
    /// The key the store gets.
    pub to: Option<KeyCheck>,
}

impl PendingRekey {
    /// The bytes of `.konserve.rekey`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REKEY_FILE_LEN);
        out.extend_from_slice(REKEY_MAGIC);
        out.push(VERSION);
        for e in [self.from, self.to] {
            out.push(u8::from(e.is_some()));
            let e = e.unwrap_or(KeyCheck { salt: [0; CHECK_SALT_LEN], check: [0; CHECK_LEN] });
            out.extend_from_slice(&e.salt);
            out.extend_from_slice(&e.check);
        }
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Decodes `.konserve.rekey`: `ERR_CORRUPT` unless it is whole.
    pub fn decode(bytes: &[u8]) -> Result<PendingRekey> {
        let body = checked(bytes, REKEY_MAGIC, REKEY_FILE_LEN, "rekey", VERSION)?;
        let one = |at: usize| -> Result<Option<KeyCheck>> {
            match body[at] {
                0 => Ok(None),
                1 => Ok(Some(entry(&body[at + 1..at + ENTRY_LEN]))),
                b => Err(Error::corrupt(format!("the rekey file is damaged (entry flag {b})"))),
            }
        };
        Ok(PendingRekey { from: one(9)?, to: one(9 + ENTRY_LEN)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_matches_its_key_only() {
        let c = KeyCheck::with_salt(b"s3cr3t", [0x80; 32]);
        assert!(c.matches(b"s3cr3t"));
        assert!(!c.matches(b"s3cr3u"));
        assert_eq!(KeyCheck::decode(&c.encode()).unwrap(), c);
        assert_eq!(c.encode().len(), KEY_CHECK_FILE_LEN);
    }

    #[test]
    fn damage_is_corrupt() {
        let bytes = KeyCheck::with_salt(b"k", [1; 32]).encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert_eq!(KeyCheck::decode(&b).unwrap_err().code(), ErrorCode::Corrupt, "byte {i}");
        }
        assert_eq!(KeyCheck::decode(&bytes[..bytes.len() - 1]).unwrap_err().code(), ErrorCode::Corrupt);
    }

    #[test]
    fn the_wal_markers_are_versions_2_and_3_and_decode_only_as_versioned() {
        let c = KeyCheck::with_salt(b"k", [3; 32]);
        let v2 = c.encode_version(WAL_MARKER_VERSION);
        assert_eq!(v2.len(), KEY_CHECK_FILE_LEN);
        assert_eq!(v2[8], 2);
        assert_eq!(KeyCheck::decode_versioned(&v2).unwrap(), (c, 2));
        assert_eq!(KeyCheck::decode_versioned(&c.encode()).unwrap(), (c, 1));
        assert_eq!(KeyCheck::decode(&v2).unwrap_err().code(), ErrorCode::UnsupportedVersion);
        let v3 = c.encode_version(WAL_LOCKFREE_VERSION);
        assert_eq!(v3[8], 3);
        assert_eq!(v3[9..v3.len() - 8], v2[9..v2.len() - 8], "the same salt and check");
        assert_eq!(KeyCheck::decode_versioned(&v3).unwrap(), (c, 3));
        assert_eq!(KeyCheck::decode(&v3).unwrap_err().code(), ErrorCode::UnsupportedVersion);
        assert_eq!(KeyCheck::decode_versioned(&c.encode_version(4)).unwrap_err().code(), ErrorCode::UnsupportedVersion);
        assert!(KeyCheck::decode_versioned(&KeyCheck::NONE.encode_version(2)).unwrap().0.is_none());
        assert!(KeyCheck::decode_versioned(&KeyCheck::NONE.encode_version(3)).unwrap().0.is_none());
    }

    #[test]
    fn a_pending_rekey_round_trips() {
        let a = KeyCheck::with_salt(b"a", [2; 32]);
        for p in [PendingRekey { from: Some(a), to: None }, PendingRekey { from: None, to: Some(a) }] {
            let bytes = p.encode();
            assert_eq!(bytes.len(), REKEY_FILE_LEN);
            assert_eq!(PendingRekey::decode(&bytes).unwrap(), p);
        }
    }
}
