//! Encryptor 1 (FORMAT.md §4.3): `aes::open` of any bytes gives the plain
//! bytes, `ERR_DECRYPT` or `ERR_CORRUPT`. What opens re-seals (same salt and
//! IV) to exactly the sealed bytes; and seal -> open round-trips any input.
//!
//! Input: kind (1 byte) | s (1 byte) | secret (s bytes) | k (1 byte) | a key's
//! CKE (k bytes; its XXH3-128 is the key hash) | sealed segment (rest).
#![no_main]

use konserve_core::codec::aes;
use konserve_core::keyhash::key_hash;
use konserve_core::ErrorCode;
use libfuzzer_sys::fuzz_target;

/// Splits off a length-prefixed field (u8 length).
fn field(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, rest) = data.split_first()?;
    rest.split_at_checked(usize::from(n))
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    let Some((secret, rest)) = field(rest) else { return };
    let Some((cke, sealed)) = field(rest) else { return };
    let hash = key_hash(cke);

    match aes::open(secret, kind, hash, sealed) {
        Ok(plain) => {
            let salt = sealed[..aes::SALT_LEN].try_into().unwrap();
            let iv = sealed[aes::SALT_LEN..aes::SALT_LEN + aes::IV_LEN].try_into().unwrap();
            assert!(aes::seal(secret, kind, hash, &plain, salt, iv) == sealed, "re-sealing differs");
        }
        Err(e) => assert!(matches!(e.code(), ErrorCode::Decrypt | ErrorCode::Corrupt), "{}: {e}", e.code()),
    }

    // Round trip: the rest as plain bytes, the salt and IV from the input.
    let mut salt_iv = [0u8; aes::SALT_LEN + aes::IV_LEN];
    let n = salt_iv.len().min(data.len());
    salt_iv[..n].copy_from_slice(&data[..n]);
    let (salt, iv) = salt_iv.split_at(aes::SALT_LEN);
    let resealed = aes::seal(secret, kind, hash, sealed, salt.try_into().unwrap(), iv.try_into().unwrap());
    assert_eq!(resealed.len(), aes::OVERHEAD + (sealed.len() / 16 + 1) * 16);
    assert!(aes::open(secret, kind, hash, &resealed).expect("a sealed segment opens") == sealed);
    // The MAC binds the segment kind.
    let e = aes::open(secret, kind ^ 1, hash, &resealed).expect_err("another kind does not open");
    assert_eq!(e.code(), ErrorCode::Decrypt);
});
