//! Key hashing (FORMAT.md §3 and §6): the file name of a key and the byte of
//! the lock file that locks it, both from XXH3-128 of the key's CKE.

use xxhash_rust::xxh3::xxh3_128;

/// The file name suffix of a key file.
pub const KEY_FILE_SUFFIX: &str = ".ksv";

/// XXH3-128 (seed 0) of a key's CKE.
pub fn key_hash(cke: &[u8]) -> u128 {
    xxh3_128(cke)
}

/// The file name of a key given as its CKE: 32 lowercase hex digits of
/// XXH3-128, most significant first, then `.ksv`.
pub fn file_name(cke: &[u8]) -> String {
    format!("{:032x}{KEY_FILE_SUFFIX}", key_hash(cke))
}

/// The offset of the one byte of `.konserve.lock` that locks a key: the low 64
/// bits of XXH3-128 shifted right by one (so it fits a signed `off_t`).
pub fn lock_offset(cke: &[u8]) -> u64 {
    lock_offset_of_hash(key_hash(cke))
}

/// [`lock_offset`] of an already computed [`key_hash`].
pub fn lock_offset_of_hash(hash: u128) -> u64 {
    (hash as u64) >> 1
}

/// Whether `name` is a key file name: exactly 32 lowercase hex digits then `.ksv`.
pub fn is_key_file_name(name: &str) -> bool {
    name.len() == 36 && name.ends_with(KEY_FILE_SUFFIX) && is_lower_hex(&name.as_bytes()[..32])
}

pub(crate) fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_canonical_xxh128_hex() {
        // XXH3-128 of the empty input, seed 0 (xxHash's reference value).
        assert_eq!(file_name(b""), "99aa06d3014798d86001c324468d497f.ksv");
        assert!(is_key_file_name(&file_name(b"\x00")));
    }

    #[test]
    fn lock_offset_is_low_half_shifted() {
        let h = key_hash(b"\x00");
        assert_eq!(lock_offset(b"\x00"), (h as u64) >> 1);
        assert!(lock_offset(b"\x00") <= i64::MAX as u64);
    }

    #[test]
    fn key_file_names() {
        assert!(is_key_file_name("0123456789abcdef0123456789abcdef.ksv"));
        assert!(!is_key_file_name("0123456789ABCDEF0123456789abcdef.ksv"));
        assert!(!is_key_file_name("abc.ksv"));
        assert!(!is_key_file_name("0123456789abcdef0123456789abcdef.ksv~"));
        assert!(!is_key_file_name(".0123456789abcdef0123456789abcde.ksv"));
    }
}
