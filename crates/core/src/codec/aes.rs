//! Encryptor id 1: AES-256-CBC with PKCS#7 padding, authenticated by
//! encrypt-then-MAC with HMAC-SHA256 (FORMAT.md §4.3).
//!
//! Every segment gets a fresh random salt and IV. The salt feeds HKDF-SHA256
//! over the user's key, which yields this segment's AES key and HMAC key, so no
//! two segments share keys. The MAC covers the segment kind and the key's
//! 128-bit hash as well, so a segment moved to another file or swapped between
//! meta and value fails authentication. The MAC is checked before anything is
//! decrypted: no padding oracle, and a wrong key or a flipped byte is one
//! typed error.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, ErrorCode, Result};

/// Length of the per-segment HKDF salt.
pub const SALT_LEN: usize = 16;
/// Length of the AES-CBC IV.
pub const IV_LEN: usize = 16;
/// Length of the HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Fixed overhead of a sealed segment besides the ciphertext.
pub const OVERHEAD: usize = SALT_LEN + IV_LEN + TAG_LEN;
/// The HKDF `info`: binds the derived keys to this scheme and format version.
pub const HKDF_INFO: &[u8] = b"konserve/1 aes-256-cbc hmac-sha256";

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// The AES key and HMAC key of one segment.
struct SegmentKeys {
    aes: [u8; 32],
    mac: [u8; 32],
}

fn derive(user_key: &[u8], salt: &[u8]) -> SegmentKeys {
    let mut okm = [0u8; 64];
    Hkdf::<Sha256>::new(Some(salt), user_key).expand(HKDF_INFO, &mut okm).expect("64 bytes is a valid HKDF-SHA256 length");
    let mut keys = SegmentKeys { aes: [0; 32], mac: [0; 32] };
    keys.aes.copy_from_slice(&okm[..32]);
    keys.mac.copy_from_slice(&okm[32..]);
    keys
}

/// The MAC over `kind || key_hash (16 bytes, big-endian) || [index (u64 LE)] || salt || iv || ciphertext`;
/// the index is there for blob chunks and log records (FORMAT.md §4.3).
fn mac(keys: &SegmentKeys, kind: u8, key_hash: u128, index: Option<u64>, salt_iv_ct: &[u8]) -> HmacSha256 {
    let mut m = <HmacSha256 as Mac>::new_from_slice(&keys.mac).expect("HMAC takes any key length");
    m.update(&[kind]);
    m.update(&key_hash.to_be_bytes());
    if let Some(i) = index {
        m.update(&i.to_le_bytes());
    }
    m.update(salt_iv_ct);
    m
}

/// Encrypts one segment: `salt || iv || AES-256-CBC(plain) || tag`.
pub fn seal(user_key: &[u8], kind: u8, key_hash: u128, plain: &[u8], salt: &[u8; SALT_LEN], iv: &[u8; IV_LEN]) -> Vec<u8> {
    seal_at(user_key, kind, key_hash, None, plain, salt, iv)
}

/// [`seal`] with a chunk or record index bound into the MAC (kinds 2, 3, 4).
pub fn seal_at(
    user_key: &[u8],
    kind: u8,
    key_hash: u128,
    index: Option<u64>,
    plain: &[u8],
    salt: &[u8; SALT_LEN],
    iv: &[u8; IV_LEN],
) -> Vec<u8> {
    let keys = derive(user_key, salt);
    let ct = Aes256CbcEnc::new(&keys.aes.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plain);
    let mut out = Vec::with_capacity(OVERHEAD + ct.len());
    out.extend_from_slice(salt);
    out.extend_from_slice(iv);
    out.extend_from_slice(&ct);
    let tag = mac(&keys, kind, key_hash, index, &out).finalize().into_bytes();
    out.extend_from_slice(&tag);
    out
}

fn decrypt_error(message: &str) -> Error {
    Error::new(ErrorCode::Decrypt, message)
}

/// Checks the tag of a sealed segment, then decrypts it. A wrong key, a
/// tampered byte or a segment from another file or place give `ERR_DECRYPT`.
pub fn open(user_key: &[u8], kind: u8, key_hash: u128, sealed: &[u8]) -> Result<Vec<u8>> {
    open_at(user_key, kind, key_hash, None, sealed)
}

/// [`open`] of a segment sealed by [`seal_at`] with this index.
pub fn open_at(user_key: &[u8], kind: u8, key_hash: u128, index: Option<u64>, sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < OVERHEAD + 16 || !(sealed.len() - OVERHEAD).is_multiple_of(16) {
        return Err(Error::corrupt("an encrypted segment has an impossible length"));
    }
    let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    let keys = derive(user_key, &body[..SALT_LEN]);
    // verify_slice compares in constant time.
    mac(&keys, kind, key_hash, index, body)
        .verify_slice(tag)
        .map_err(|_| decrypt_error("the segment does not authenticate: wrong encryption key, or the file was altered"))?;
    let iv: [u8; IV_LEN] = body[SALT_LEN..SALT_LEN + IV_LEN].try_into().expect("16 bytes");
    Aes256CbcDec::new(&keys.aes.into(), &iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(&body[SALT_LEN + IV_LEN..])
        // Authentic but badly padded: only a broken writer produces this.
        .map_err(|_| Error::corrupt("an authenticated segment has invalid padding"))
}

/// The MAC kind of a log's commit slot (FORMAT.md §4.6).
pub const KIND_COMMIT: u8 = 5;

/// The tag of a log's commit slot (FORMAT.md §4.6): HMAC-SHA256 over
/// `5 || key_hash (16 bytes, big-endian) || body` with the MAC key that HKDF
/// derives from `salt`, the log's meta segment's salt. The slot stores its
/// first 24 bytes.
pub fn commit_tag(user_key: &[u8], key_hash: u128, salt: &[u8], body: &[u8]) -> [u8; 32] {
    let keys = derive(user_key, salt);
    mac(&keys, KIND_COMMIT, key_hash, None, body).finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; 16] = [0x80; 16];
    const IV: [u8; 16] = [7; 16];

    #[test]
    fn round_trip_and_lengths() {
        for n in [0, 1, 15, 16, 17, 1000] {
            let plain = vec![0xAB; n];
            let sealed = seal(b"s3cr3t", 1, 42, &plain, &SALT, &IV);
            assert_eq!(sealed.len(), OVERHEAD + (n / 16 + 1) * 16);
            assert_eq!(open(b"s3cr3t", 1, 42, &sealed).unwrap(), plain);
        }
    }

    #[test]
    fn wrong_key_kind_hash_or_any_flipped_byte_is_refused() {
        let sealed = seal(b"s3cr3t", 1, 42, b"secret marker", &SALT, &IV);
        assert_eq!(open(b"wrong", 1, 42, &sealed).unwrap_err().code(), ErrorCode::Decrypt);
        assert_eq!(open(b"s3cr3t", 0, 42, &sealed).unwrap_err().code(), ErrorCode::Decrypt);
        assert_eq!(open(b"s3cr3t", 1, 43, &sealed).unwrap_err().code(), ErrorCode::Decrypt);
        for i in 0..sealed.len() {
            let mut s = sealed.clone();
            s[i] ^= 1;
            assert_eq!(open(b"s3cr3t", 1, 42, &s).unwrap_err().code(), ErrorCode::Decrypt, "byte {i}");
        }
        assert_eq!(open(b"s3cr3t", 1, 42, &sealed[..sealed.len() - 1]).unwrap_err().code(), ErrorCode::Corrupt);
    }

    #[test]
    fn the_index_is_bound() {
        let sealed = seal_at(b"k", 2, 9, Some(3), b"chunk", &SALT, &IV);
        assert_eq!(open_at(b"k", 2, 9, Some(3), &sealed).unwrap(), b"chunk");
        for other in [None, Some(2), Some(4)] {
            assert_eq!(open_at(b"k", 2, 9, other, &sealed).unwrap_err().code(), ErrorCode::Decrypt);
        }
    }

    #[test]
    fn no_plaintext_in_the_output() {
        let sealed = seal(b"k", 1, 0, b"PLAINTEXT-MARKER", &SALT, &IV);
        assert!(!sealed.windows(16).any(|w| w == b"PLAINTEXT-MARKER"));
    }
}
