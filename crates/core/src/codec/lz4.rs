//! Compressor id 1: the LZ4 frame format (FORMAT.md §4.2), written by our own
//! reference compressor so that every implementation produces the same bytes,
//! and read by a decoder that accepts any standard LZ4 frame.
//!
//! The compressor is deliberately simple and fully specified: greedy, one
//! 4096-entry hash table of 4-byte sequences, no skipping. A third
//! implementation can reproduce its output exactly from FORMAT.md alone.

use xxhash_rust::xxh32::xxh32;

use crate::error::{Error, Result};

const MAGIC: u32 = 0x184D_2204;
/// FLG: version 01, independent blocks, no block checksums, content size
/// present, no content checksum (the file's xxh3 checksums cover it), no dictionary.
const FLG: u8 = 0b0110_1000;
/// BD: block maximum size 4 MiB.
const BD: u8 = 0b0111_0000;
/// The maximum block size our frames use.
pub const BLOCK_SIZE: usize = 4 << 20;

const MIN_MATCH: usize = 4;
/// The last 5 bytes of a block are always literals (LZ4 block format).
const LAST_LITERALS: usize = 5;
/// A match must start at least 12 bytes before the end of a block.
const MF_LIMIT: usize = 12;
const HASH_LOG: u32 = 12;
/// Skip-ahead (FORMAT.md §4.2.1): after each 2^SKIP_TRIGGER misses in a row the
/// step between tried positions grows by one, so incompressible input is
/// crossed in far fewer probes (as LZ4's reference compressor does).
const SKIP_TRIGGER: u32 = 6;
const NO_POSITION: u32 = u32::MAX;

fn corrupt(what: &str) -> Error {
    Error::corrupt(format!("invalid LZ4 frame: {what}"))
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The header checksum byte of a frame descriptor: the second byte of
/// XXH32 (seed 0) of the descriptor.
fn header_checksum(descriptor: &[u8]) -> u8 {
    (xxh32(descriptor, 0) >> 8) as u8
}

/// Compresses `src` into one LZ4 frame with the reference compressor.
pub fn compress(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() + src.len() / 255 + 32);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    let descriptor_start = out.len();
    out.push(FLG);
    out.push(BD);
    out.extend_from_slice(&(src.len() as u64).to_le_bytes());
    let hc = header_checksum(&out[descriptor_start..]);
    out.push(hc);
    let mut table = vec![NO_POSITION; 1 << HASH_LOG];
    for block in src.chunks(BLOCK_SIZE) {
        let size_at = out.len();
        out.extend_from_slice(&[0; 4]);
        compress_block(block, &mut out, &mut table);
        let compressed = out.len() - size_at - 4;
        if compressed >= block.len() {
            // Not smaller: store the block as is, flagged by the size's high bit.
            out.truncate(size_at);
            out.extend_from_slice(&(block.len() as u32 | 0x8000_0000).to_le_bytes());
            out.extend_from_slice(block);
        } else {
            out[size_at..size_at + 4].copy_from_slice(&(compressed as u32).to_le_bytes());
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes()); // the end mark
    out
}

/// The reference block compressor (FORMAT.md §4.2.1).
fn compress_block(src: &[u8], out: &mut Vec<u8>, table: &mut [u32]) {
    table.fill(NO_POSITION);
    let n = src.len();
    let (mut anchor, mut p) = (0, 0);
    let mut misses = 1usize << SKIP_TRIGGER;
    while p + MF_LIMIT <= n {
        let seq = read_u32(src, p);
        let h = (seq.wrapping_mul(2_654_435_761) >> (32 - HASH_LOG)) as usize;
        let candidate = table[h];
        table[h] = p as u32;
        if candidate != NO_POSITION {
            let c = candidate as usize;
            if p - c <= 0xFFFF && read_u32(src, c) == seq {
                let limit = n - LAST_LITERALS;
                let len = MIN_MATCH + common_len(src, c + MIN_MATCH, p + MIN_MATCH, limit - (p + MIN_MATCH));
                emit_sequence(out, &src[anchor..p], Some(((p - c) as u16, len)));
                p += len;
                anchor = p;
                misses = 1 << SKIP_TRIGGER;
                continue;
            }
        }
        p += misses >> SKIP_TRIGGER;
        misses += 1;
    }
    emit_sequence(out, &src[anchor..], None);
}

/// How many bytes from `a` on equal those from `b` on, at most `max`: the
/// reference compressor's byte-by-byte match extension, eight bytes a step
/// (a long run of repeated data was a loop of single-byte compares).
fn common_len(src: &[u8], a: usize, b: usize, max: usize) -> usize {
    let word = |i: usize| u64::from_le_bytes(src[i..i + 8].try_into().expect("8 bytes"));
    let mut n = 0;
    while n + 8 <= max {
        let diff = word(a + n) ^ word(b + n);
        if diff != 0 {
            return n + (diff.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while n < max && src[a + n] == src[b + n] {
        n += 1;
    }
    n
}

fn push_length(out: &mut Vec<u8>, mut extra: usize) {
    while extra >= 255 {
        out.push(255);
        extra -= 255;
    }
    out.push(extra as u8);
}

/// One sequence: literals, then a match (offset, length), absent for the last.
fn emit_sequence(out: &mut Vec<u8>, literals: &[u8], matched: Option<(u16, usize)>) {
    let lit = literals.len();
    let match_code = matched.map_or(0, |(_, len)| len - MIN_MATCH);
    out.push(((lit.min(15) as u8) << 4) | match_code.min(15) as u8);
    if lit >= 15 {
        push_length(out, lit - 15);
    }
    out.extend_from_slice(literals);
    if let Some((offset, _)) = matched {
        out.extend_from_slice(&offset.to_le_bytes());
        if match_code >= 15 {
            push_length(out, match_code - 15);
        }
    }
}

/// A cursor over the frame with checked reads.
struct Input<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let buf: &'a [u8] = self.buf;
        let end = self.pos.checked_add(n).filter(|&e| e <= buf.len()).ok_or_else(|| corrupt("it ends early"))?;
        let out = &buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(read_u32(self.take(4)?, 0))
    }
}

/// Decompresses one standard LZ4 frame (any block size, linked or independent
/// blocks, with or without block checksums, content size and content
/// checksum). Dictionaries, skippable frames and trailing bytes are refused.
pub fn decompress(frame: &[u8]) -> Result<Vec<u8>> {
    let mut input = Input { buf: frame, pos: 0 };
    if input.u32()? != MAGIC {
        return Err(corrupt("bad magic number"));
    }
    let descriptor_start = input.pos;
    let flg = input.take(1)?[0];
    let bd = input.take(1)?[0];
    if flg >> 6 != 0b01 {
        return Err(corrupt("unknown frame version"));
    }
    if flg & 0b10 != 0 || bd & 0b1000_1111 != 0 {
        return Err(corrupt("reserved bits are set"));
    }
    if flg & 0b1 != 0 {
        return Err(corrupt("dictionaries are not supported"));
    }
    let independent = flg & 0b10_0000 != 0;
    let block_checksums = flg & 0b1_0000 != 0;
    let content_size = if flg & 0b1000 != 0 { Some(u64::from_le_bytes(input.take(8)?.try_into().expect("8"))) } else { None };
    let content_checksum = flg & 0b100 != 0;
    let block_max = match (bd >> 4) & 0b111 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        _ => return Err(corrupt("unknown block maximum size")),
    };
    let descriptor = &frame[descriptor_start..input.pos];
    if input.take(1)?[0] != header_checksum(descriptor) {
        return Err(corrupt("header checksum mismatch"));
    }
    let mut out = Vec::new();
    if let Some(n) = content_size {
        // Trust the announced size only as far as the frame could expand to.
        let cap = frame.len().saturating_mul(255);
        out.reserve(usize::try_from(n).unwrap_or(usize::MAX).min(cap));
    }
    loop {
        let word = input.u32()?;
        if word == 0 {
            break; // the end mark
        }
        let stored_raw = word & 0x8000_0000 != 0;
        let size = (word & 0x7FFF_FFFF) as usize;
        if size > block_max {
            return Err(corrupt("a block is larger than the frame's block size"));
        }
        let data = input.take(size)?;
        if block_checksums && input.u32()? != xxh32(data, 0) {
            return Err(corrupt("block checksum mismatch"));
        }
        if stored_raw {
            out.extend_from_slice(data);
        } else {
            let floor = if independent { out.len() } else { 0 };
            decompress_block(data, &mut out, floor, block_max)?;
        }
    }
    if content_checksum && input.u32()? != xxh32(&out, 0) {
        return Err(corrupt("content checksum mismatch"));
    }
    if content_size.is_some_and(|n| n != out.len() as u64) {
        return Err(corrupt("content size mismatch"));
    }
    if input.pos != frame.len() {
        return Err(corrupt("trailing bytes after the frame"));
    }
    Ok(out)
}

/// Reads a length continued in 255-steps.
fn read_length(src: &[u8], i: &mut usize, mut len: usize) -> Result<usize> {
    loop {
        let b = *src.get(*i).ok_or_else(|| corrupt("a length runs past the block"))?;
        *i += 1;
        len = len.checked_add(usize::from(b)).ok_or_else(|| corrupt("a length overflows"))?;
        if b != 255 {
            return Ok(len);
        }
    }
}

/// Decodes one block, appending to `out`. Matches may reach back to `floor`
/// (the block's start for independent blocks); a block yields at most `limit` bytes.
fn decompress_block(src: &[u8], out: &mut Vec<u8>, floor: usize, limit: usize) -> Result<()> {
    let start = out.len();
    let mut i = 0;
    loop {
        let token = *src.get(i).ok_or_else(|| corrupt("a block ends before its last sequence"))?;
        i += 1;
        let mut lit = usize::from(token >> 4);
        if lit == 15 {
            lit = read_length(src, &mut i, lit)?;
        }
        let literals = src.get(i..i.saturating_add(lit)).ok_or_else(|| corrupt("literals run past the block"))?;
        if out.len() - start + lit > limit {
            return Err(corrupt("a block decodes to more than the block size"));
        }
        out.extend_from_slice(literals);
        i += lit;
        if i == src.len() {
            return Ok(()); // the last sequence has no match
        }
        let offset = match src.get(i..i + 2) {
            Some(b) => usize::from(u16::from_le_bytes([b[0], b[1]])),
            None => return Err(corrupt("a match offset runs past the block")),
        };
        i += 2;
        let mut len = usize::from(token & 15);
        if len == 15 {
            len = read_length(src, &mut i, len)?;
        }
        len += MIN_MATCH;
        if offset == 0 || offset > out.len() - floor {
            return Err(corrupt("a match reaches before the start of the data"));
        }
        if out.len() - start + len > limit {
            return Err(corrupt("a block decodes to more than the block size"));
        }
        // The match repeats bytes with period `offset` from `from` on. When it
        // overlaps its own output (offset < len), everything from `from` to the
        // end is already that repetition, so while `copied` is a multiple of
        // `offset` the next piece can be all of it: the pieces double in size
        // (offset, 2 offset, 4 offset, ...) instead of one push per byte.
        let from = out.len() - offset;
        let mut copied = 0;
        while copied < len {
            let n = (len - copied).min(out.len() - from);
            out.extend_from_within(from..from + n);
            copied += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8]) {
        let frame = compress(data);
        assert_eq!(decompress(&frame).unwrap(), data, "len {}", data.len());
    }

    #[test]
    fn round_trips() {
        round_trip(b"");
        round_trip(b"a");
        round_trip(b"abcdefghijkl");
        round_trip(&[7u8; 100_000]);
        round_trip(b"konserve konserve konserve konserve konserve!");
        let mixed: Vec<u8> = (0..300_000u32).map(|i| ((i * 31) ^ (i >> 7)) as u8).collect();
        round_trip(&mixed);
        // More than one block.
        let big: Vec<u8> = (0..(BLOCK_SIZE + 12345)).map(|i| (i % 251) as u8).collect();
        round_trip(&big);
    }

    /// One block of one sequence: `literals`, then a match of `len` at `offset`
    /// (len >= 4), then `tail` as the last sequence's literals.
    fn block(literals: &[u8], offset: u16, len: usize, tail: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        emit_sequence(&mut b, literals, Some((offset, len)));
        emit_sequence(&mut b, tail, None);
        b
    }

    #[test]
    fn overlapping_matches_decode_as_one_byte_at_a_time() {
        // The copy in pieces must equal the definition: out[i] = out[i - offset].
        for offset in 1..=40usize {
            for len in [4, 5, offset - 1, offset, offset + 1, 2 * offset + 3, 1000, 70_000].map(|l| l.max(MIN_MATCH)) {
                let literals: Vec<u8> = (0..offset.max(7)).map(|i| (i * 37 + offset) as u8).collect();
                let mut expected = literals.clone();
                for _ in 0..len {
                    expected.push(expected[expected.len() - offset]);
                }
                expected.extend_from_slice(b"tail!");
                let mut out = Vec::new();
                decompress_block(&block(&literals, offset as u16, len, b"tail!"), &mut out, 0, usize::MAX).unwrap();
                assert_eq!(out, expected, "offset {offset} len {len}");
            }
        }
    }

    #[test]
    fn common_len_is_the_byte_by_byte_count() {
        let mut data: Vec<u8> = (0..4096u32).map(|i| (i % 7) as u8).collect();
        data[1000] = 99;
        data[2049] = 98;
        for a in [0usize, 7, 14, 700] {
            for b in [a + 7, a + 14, a + 21, a + 1] {
                for max in [0usize, 1, 7, 8, 9, 63, 64, 65, 1500, 4096 - b] {
                    let max = max.min(data.len() - b);
                    let naive = (0..max).take_while(|&k| data[a + k] == data[b + k]).count();
                    assert_eq!(common_len(&data, a, b, max), naive, "a {a} b {b} max {max}");
                }
            }
        }
    }

    #[test]
    fn empty_input_is_header_and_end_mark() {
        let f = compress(b"");
        assert_eq!(f.len(), 4 + 2 + 8 + 1 + 4);
        assert_eq!(&f[f.len() - 4..], &[0, 0, 0, 0]);
    }

    #[test]
    fn incompressible_block_is_stored_raw() {
        let f = compress(b"abc");
        // header (15) + size word with the high bit + 3 bytes + end mark
        assert_eq!(&f[15..19], &(3u32 | 0x8000_0000).to_le_bytes());
        assert_eq!(f.len(), 15 + 4 + 3 + 4);
    }

    #[test]
    fn repetitive_input_compresses() {
        let data = vec![b'x'; 10_000];
        assert!(compress(&data).len() < 100);
    }

    #[test]
    fn every_truncation_and_flipped_header_byte_is_an_error() {
        let data = b"konserve konserve konserve konserve konserve konserve".repeat(20);
        let f = compress(&data);
        for n in 0..f.len() {
            assert!(decompress(&f[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..15 {
            let mut g = f.clone();
            g[i] ^= 0x10;
            assert!(decompress(&g).is_err(), "flipped header byte {i}");
        }
        let mut longer = f.clone();
        longer.push(0);
        assert!(decompress(&longer).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let mut f = compress(b"abcabcabcabcabcabcabcabcabcabcabc");
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % f.len();
                f[i] = (x >> 8) as u8;
            }
            let _ = decompress(&f);
        }
    }
}
