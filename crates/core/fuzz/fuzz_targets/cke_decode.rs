//! CKE (FORMAT.md §2): `validate` and `decode` agree on every input, reject
//! with `ERR_INVALID_KEY` only, allocate in proportion to the input, and a
//! decoded key re-encodes to exactly the input (the encoding is canonical).
#![no_main]

use fuzz_util::allocated_by;
use konserve_core::format::key as cke;
use konserve_core::ErrorCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (valid, _) = allocated_by(|| cke::validate(data));
    let (decoded, bytes) = allocated_by(|| cke::decode(data));
    // A `Key` is 32 bytes, a map entry 56, every item at least one input byte.
    assert!(bytes <= 256 * data.len() + 4096, "decoding {} bytes allocated {bytes}", data.len());
    match decoded {
        Ok(key) => {
            assert!(valid.is_ok(), "decode accepts what validate rejects: {:?}", valid.err());
            assert_eq!(cke::try_encode(&key).expect("a decoded key encodes"), data, "decode -> encode is not the input");
        }
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::InvalidKey);
            assert!(valid.is_err(), "validate accepts what decode rejects: {e}");
        }
    }
});
