//! The reference LZ4 compressor (FORMAT.md §4.2.1): its frame decodes back to
//! the input with our decoder, and each of its blocks with the independent
//! `lz4_flex` block decoder (its frame decoder reserves 8 MiB per frame of
//! 4 MiB blocks, too slow to run on every input; `lz4_decompress` runs it).
#![no_main]

use konserve_core::codec::lz4;
use libfuzzer_sys::fuzz_target;

/// The frame header our compressor writes: magic, FLG, BD, content size, HC.
const HEADER_LEN: usize = 4 + 2 + 8 + 1;

fuzz_target!(|data: &[u8]| {
    let frame = lz4::compress(data);
    assert!(lz4::decompress(&frame).expect("our own frame decodes") == data);

    let mut blocks = &frame[HEADER_LEN..];
    let mut plain = data.chunks(lz4::BLOCK_SIZE);
    loop {
        let (word, rest) = blocks.split_first_chunk::<4>().expect("an end mark");
        let word = u32::from_le_bytes(*word);
        if word == 0 {
            assert!(rest.is_empty() && plain.next().is_none());
            break;
        }
        let (block, rest) = rest.split_at((word & 0x7FFF_FFFF) as usize);
        let expected = plain.next().expect("no more blocks than chunks of input");
        if word & 0x8000_0000 != 0 {
            assert!(block == expected, "a raw block is the input");
        } else {
            let mut out = vec![0; expected.len()];
            let n = lz4_flex::block::decompress_into(block, &mut out).expect("lz4_flex decodes our block");
            assert!(n == expected.len() && out == expected, "lz4_flex decodes our block to other bytes");
        }
        blocks = rest;
    }
});
