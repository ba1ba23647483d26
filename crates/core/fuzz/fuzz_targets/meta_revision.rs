//! The revision reader of fused writes (`format::meta`, FORMAT.md §4.4): on
//! any bytes `revision` returns or says "not sure", never panics or reads out
//! of bounds; `splice_revision` replaces exactly the slot it is pointed at,
//! in the shortest unsigned form, and what it writes reads back.
//!
//! Input: n (4 bytes, little-endian) | at (1 byte) | metadata bytes (rest).
#![no_main]

use konserve_core::format::meta::{revision, splice_revision, REVISION_SLOT};
use libfuzzer_sys::fuzz_target;

fn shortest_len(n: u32) -> usize {
    match n {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

fuzz_target!(|data: &[u8]| {
    let [a, b, c, d, at, meta @ ..] = data else { return };
    let n = u32::from_le_bytes([*a, *b, *c, *d]);

    // Any bytes: an answer or "not sure", and an answer fits the slot.
    if let Some(r) = revision(meta) {
        assert!(r <= u64::from(u32::MAX));
    }

    // The slot planted at `at` in the fuzzer's bytes is replaced, and nothing else.
    let at = usize::from(*at) % (meta.len() + 1);
    let mut planted = meta[..at].to_vec();
    planted.extend_from_slice(&REVISION_SLOT);
    planted.extend_from_slice(&meta[at..]);
    let out = splice_revision(&planted, at, u64::from(n)).expect("a planted slot is spliced");
    assert_eq!(out.len(), planted.len() - REVISION_SLOT.len() + shortest_len(n));
    assert_eq!(&out[..at], &meta[..at]);
    assert_eq!(&out[out.len() - (meta.len() - at)..], &meta[at..]);
    // Anywhere the slot is not, nothing is spliced.
    if meta.get(at..at + REVISION_SLOT.len()) != Some(&REVISION_SLOT[..]) {
        assert!(splice_revision(meta, at, u64::from(n)).is_none());
    }
    assert!(splice_revision(&planted, at, 1 << 32).is_none());

    // A map the facade writes ({type, lastWrite, revision: slot}) reads back the spliced revision.
    let mut map = b"\x83\xa4type\xa5value\xa9lastWrite\xd6\xff\0\0\0\x01\xa8revision".to_vec();
    let slot_at = map.len();
    map.extend_from_slice(&REVISION_SLOT);
    let written = splice_revision(&map, slot_at, u64::from(n)).unwrap();
    assert_eq!(revision(&written), Some(u64::from(n)));
});
