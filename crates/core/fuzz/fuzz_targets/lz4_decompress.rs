//! LZ4 frames (FORMAT.md §4.2): `lz4::decompress` of any bytes gives the
//! decoded content or `ERR_CORRUPT`, allocating no more than the format lets
//! the input expand to (255 output bytes per input byte, the most any LZ4
//! length encoding gives). Whatever it accepts, the independent `lz4_flex`
//! frame decoder decodes to the same bytes.
#![no_main]

use std::io::Read;

use fuzz_util::allocated_by;
use konserve_core::codec::lz4;
use konserve_core::ErrorCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (result, bytes) = allocated_by(|| lz4::decompress(data));
    // The output vector may have doubled past its 255-fold bound.
    assert!(bytes <= 2 * 255 * data.len() + 4096, "decompressing {} bytes allocated {bytes}", data.len());
    match result {
        Ok(out) => {
            let mut oracle = Vec::new();
            lz4_flex::frame::FrameDecoder::new(data)
                .read_to_end(&mut oracle)
                .unwrap_or_else(|e| panic!("lz4_flex rejects a frame we accept: {e}"));
            assert!(out == oracle, "lz4_flex decodes to other bytes ({} vs {})", out.len(), oracle.len());
        }
        Err(e) => assert_eq!(e.code(), ErrorCode::Corrupt),
    }
});
