//! The write-ahead log (docs/WAL.md §3; not used by the store yet):
//! `wal::parse_wal` of any bytes. Only typed errors, allocations in
//! proportion to the file, and what parses is consistent: seqs consecutive
//! from the header's first, frames back to back from the first frame's offset
//! up to the end, every payload inside its frame, and every frame re-encodes
//! from its records to exactly the bytes that were read.
//!
//! Input: mode (1 byte) | header slot B (64 bytes) | the file from the first
//! frame's offset on (rest); the target puts them in a log file, zeros
//! elsewhere (so no input is spent on the zero pages before the frames). Mode
//! bit 0 reseals slot B (magic, version, reserved bytes, checksum) around
//! whatever generation and first seq the input holds there; bit 1 reseals the
//! head check and the frame check of each frame whose length field fits,
//! walking from the first frame, so that mutations reach the record parser
//! instead of a checksum.
#![no_main]

use fuzz_util::allocated_by;
use konserve_core::format::wal::*;
use konserve_core::ErrorCode;
use libfuzzer_sys::fuzz_target;
use xxhash_rust::xxh3::xxh3_64;

fn reseal_header(file: &mut [u8]) {
    let Some(slot) = file.get_mut(SLOT_B..SLOT_B + SLOT_LEN) else { return };
    slot[0..8].copy_from_slice(b"KSVWALOG");
    slot[8] = 1;
    slot[9..16].fill(0);
    slot[32..56].fill(0);
    let check = xxh3_64(&slot[..56]);
    slot[56..].copy_from_slice(&check.to_le_bytes());
}

fn reseal_frames(file: &mut [u8]) {
    let mut at = FRAMES_AT;
    while at + FRAME_HEAD <= file.len() {
        let len = u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        let check = xxh3_64(&file[at..at + 24]);
        file[at + 24..at + 32].copy_from_slice(&check.to_le_bytes());
        if !(MIN_FRAME..=MAX_FRAME).contains(&len) || len % 8 != 0 || at + len > file.len() {
            return;
        }
        let sum = xxh3_64(&file[at..at + len - FRAME_TRAILER]);
        file[at + len - FRAME_TRAILER..at + len].copy_from_slice(&sum.to_le_bytes());
        at += len;
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    let Some((slot, frames)) = rest.split_at_checked(SLOT_LEN) else { return };
    let mut file = vec![0u8; FRAMES_AT];
    file[SLOT_B..SLOT_B + SLOT_LEN].copy_from_slice(slot);
    file.extend_from_slice(frames);
    if mode & 1 != 0 {
        reseal_header(&mut file);
    }
    if mode & 2 != 0 {
        reseal_frames(&mut file);
    }
    let (result, bytes) = allocated_by(|| parse_wal(&file));
    assert!(bytes <= 64 * file.len() + (1 << 16), "parsing {} bytes allocated {bytes}", file.len());
    match result {
        Ok((header, scan)) => {
            let mut at = FRAMES_AT;
            for (i, frame) in scan.frames.iter().enumerate() {
                assert_eq!(frame.seq, header.first + i as u64, "seqs are consecutive from the header's first");
                assert_eq!(frame.at, at, "frames are back to back");
                let payloads: Vec<&[u8]> = frame.records.iter().map(|r| &file[r.payload.clone()]).collect();
                for r in &frame.records {
                    assert!(r.payload.start >= frame.at && r.payload.end <= frame.at + frame.len, "a payload inside its frame");
                }
                let again: Vec<_> =
                    frame.records.iter().zip(&payloads).map(|(r, p)| NewWalRecord { op: r.op, key_hash: r.key_hash, payload: p }).collect();
                let encoded = encode_frame(header.generation, frame.seq, &again).expect("a frame that reads re-encodes");
                assert_eq!(&encoded[..], &file[frame.at..frame.at + frame.len], "a frame re-encodes to its bytes");
                at += frame.len;
            }
            assert_eq!(scan.end, at);
            assert_eq!(scan.next_seq, header.first + scan.frames.len() as u64);
        }
        Err(e) => {
            assert!(matches!(e.code(), ErrorCode::Corrupt | ErrorCode::UnsupportedVersion), "unexpected error code {}: {e}", e.code())
        }
    }
});
