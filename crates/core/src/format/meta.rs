//! The revision of a key's metadata map (FORMAT.md §4.4), read and written
//! as bytes: what a fused replacing write ([`FileStore::replace`](crate::FileStore::replace))
//! needs to count a key's revision on without a round trip to the caller.
//!
//! The map is plain MessagePack, written by the facade. This module reads
//! only what it is sure of: a map whose `type` is a string, whose `lastWrite`
//! is a timestamp (extension -1) and whose `revision`, if present, is an
//! unsigned integer below 2^32. Anything else is [`None`] ("not sure"), and
//! the caller leaves the write to the facade's general path, which decodes
//! the map in full.

/// The bytes the facade writes for the new revision's place: `0xce` (uint 32)
/// and `0xffffffff`, replaced by [`splice_revision`].
pub const REVISION_SLOT: [u8; 5] = [0xce, 0xff, 0xff, 0xff, 0xff];

fn be(b: &[u8], at: usize, width: usize) -> Option<usize> {
    let bytes = b.get(at..at.checked_add(width)?)?;
    Some(bytes.iter().fold(0usize, |n, &x| (n << 8) | x as usize))
}

/// The length of the item at `at` without its children, and its number of children.
fn item(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let t = *b.get(at)?;
    let p = at + 1;
    Some(match t {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0),
        0x80..=0x8f => (1, 2 * (t & 0x0f) as usize),
        0x90..=0x9f => (1, (t & 0x0f) as usize),
        0xa0..=0xbf => (1 + (t & 0x1f) as usize, 0),
        0xc4 | 0xd9 => (2 + be(b, p, 1)?, 0),
        0xc5 | 0xda => (3 + be(b, p, 2)?, 0),
        0xc6 | 0xdb => (5 + be(b, p, 4)?, 0),
        0xc7 => (3 + be(b, p, 1)?, 0),
        0xc8 => (4 + be(b, p, 2)?, 0),
        0xc9 => (6 + be(b, p, 4)?, 0),
        0xca => (5, 0),
        0xcb => (9, 0),
        0xcc | 0xd0 => (2, 0),
        0xcd | 0xd1 => (3, 0),
        0xce | 0xd2 => (5, 0),
        0xcf | 0xd3 => (9, 0),
        0xd4 => (3, 0),
        0xd5 => (4, 0),
        0xd6 => (6, 0),
        0xd7 => (10, 0),
        0xd8 => (18, 0),
        0xdc => (3, be(b, p, 2)?),
        0xdd => (5, be(b, p, 4)?),
        0xde => (3, 2 * be(b, p, 2)?),
        0xdf => (5, 2 * be(b, p, 4)?),
        0xc1 => return None,
    })
}

/// The end of the value starting at `at` (children included), or `None` if
/// the bytes end early or are not MessagePack.
fn skip(b: &[u8], mut at: usize) -> Option<usize> {
    let mut pending: usize = 1;
    while pending > 0 {
        pending -= 1;
        let (len, children) = item(b, at)?;
        at = at.checked_add(len)?;
        pending = pending.checked_add(children)?;
        // Every child takes at least a byte: a count beyond the input is damage.
        if at > b.len() || pending > b.len() - at {
            return None;
        }
    }
    Some(at)
}

/// A string's bytes at `at`, or `None` if the item there is not a string.
fn str_at(b: &[u8], at: usize) -> Option<&[u8]> {
    let t = *b.get(at)?;
    let (start, len) = match t {
        0xa0..=0xbf => (at + 1, (t & 0x1f) as usize),
        0xd9 => (at + 2, be(b, at + 1, 1)?),
        0xda => (at + 3, be(b, at + 1, 2)?),
        0xdb => (at + 5, be(b, at + 1, 4)?),
        _ => return None,
    };
    b.get(start..start.checked_add(len)?)
}

/// The unsigned integer (below 2^32) at `at`, or `None`.
fn uint_at(b: &[u8], at: usize) -> Option<u64> {
    let t = *b.get(at)?;
    let n = match t {
        0x00..=0x7f => t as usize,
        0xcc => be(b, at + 1, 1)?,
        0xcd => be(b, at + 1, 2)?,
        0xce => be(b, at + 1, 4)?,
        _ => return None,
    };
    Some(n as u64)
}

/// Whether the item at `at` is a MessagePack timestamp (extension -1), which the facade reads as a Date.
fn is_timestamp(b: &[u8], at: usize) -> bool {
    match b.get(at..at + 2) {
        Some([0xd6, 0xff]) | Some([0xd7, 0xff]) => true,
        Some([0xc7, 12]) => b.get(at + 2) == Some(&0xff),
        _ => false,
    }
}

/// The revision a key with this metadata map (not an append log's) is at,
/// as the facade counts it: the map's `revision`, or 1 when it has none (a
/// file from before revisions). `None` when the map is not one this module
/// is sure of (see the module's text).
pub fn revision(meta: &[u8]) -> Option<u64> {
    let (head, count) = item(meta, 0)?;
    if !matches!(meta[0], 0x80..=0x8f | 0xde | 0xdf) {
        return None;
    }
    let (mut has_type, mut has_last_write, mut rev) = (false, false, None);
    let mut revision_unsure = false;
    let mut at = head;
    for _ in 0..count / 2 {
        let key = str_at(meta, at);
        let value = skip(meta, at)?;
        let end = skip(meta, value)?;
        // A later entry of the same name wins, as it does when the facade decodes.
        match key {
            Some(b"type") => has_type = str_at(meta, value).is_some(),
            Some(b"lastWrite") => has_last_write = is_timestamp(meta, value),
            Some(b"revision") => {
                rev = uint_at(meta, value);
                revision_unsure = rev.is_none();
            }
            _ => {}
        }
        at = end;
    }
    if at != meta.len() || !has_type || !has_last_write || revision_unsure {
        return None;
    }
    Some(rev.unwrap_or(1))
}

/// `meta` with the [`REVISION_SLOT`] at `at` replaced by `revision`, encoded
/// as the facade's MessagePack encoder writes it (the shortest unsigned form),
/// so the bytes are the ones the general path writes. `None` when the slot is
/// not at `at`, or the revision needs more than 32 bits.
pub fn splice_revision(meta: &[u8], at: usize, revision: u64) -> Option<Vec<u8>> {
    if meta.get(at..at.checked_add(REVISION_SLOT.len())?) != Some(&REVISION_SLOT[..]) {
        return None;
    }
    let n = u32::try_from(revision).ok()?;
    let mut out = Vec::with_capacity(meta.len());
    out.extend_from_slice(&meta[..at]);
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xce);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
    out.extend_from_slice(&meta[at + REVISION_SLOT.len()..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // {type: 'value', lastWrite: Date, revision: 3}, as msgpackr writes it (map16).
    const META: &[u8] = b"\xde\x00\x03\xa4type\xa5value\xa9lastWrite\xd7\xff\xe1\x4e\x39\x00\x6b\x14\xab\x32\xa8revision\x03";

    #[test]
    fn reads_the_revision_it_is_sure_of() {
        assert_eq!(revision(META), Some(3));
        // No revision: a file from before revisions counts as 1.
        assert_eq!(revision(b"\x82\xa4type\xa5value\xa9lastWrite\xd6\xff\x00\x00\x00\x01"), Some(1));
        // Nested maps and arrays, user fields, and a later duplicate that wins.
        let nested = b"\x85\xa4type\xa5value\xa5owner\x92\x81\xa1a\xc0\xcb\0\0\0\0\0\0\0\0\xa9lastWrite\xd6\xff\0\0\0\x01\xa8revision\x05\xa8revision\xcd\x01\x00";
        assert_eq!(revision(nested), Some(256));
    }

    #[test]
    fn is_not_sure_of_anything_else() {
        // Not a map; no type; a lastWrite that is no timestamp; a negative or float revision; trailing bytes; truncation.
        assert_eq!(revision(b"\x93\x01\x02\x03"), None);
        assert_eq!(revision(b"\x81\xa9lastWrite\xd6\xff\0\0\0\x01"), None);
        assert_eq!(revision(b"\x82\xa4type\xa5value\xa9lastWrite\x01"), None);
        assert_eq!(revision(b"\x83\xa4type\xa5value\xa9lastWrite\xd6\xff\0\0\0\x01\xa8revision\xff"), None);
        assert_eq!(revision(b"\x83\xa4type\xa5value\xa9lastWrite\xd6\xff\0\0\0\x01\xa8revision\xcb\0\0\0\0\0\0\0\0"), None);
        let mut trailing = META.to_vec();
        trailing.push(0);
        assert_eq!(revision(&trailing), None);
        for cut in 0..META.len() {
            assert_eq!(revision(&META[..cut]), None, "cut at {cut}");
        }
        // A count larger than the input is refused, not trusted.
        assert_eq!(revision(b"\xdf\xff\xff\xff\xff"), None);
        assert_eq!(revision(b"\x81\xa1a\xdd\xff\xff\xff\xff"), None);
    }

    #[test]
    fn splices_the_shortest_form() {
        let mut m = b"\x81\xa8revision".to_vec();
        let at = m.len();
        m.extend_from_slice(&REVISION_SLOT);
        m.extend_from_slice(b"\xc0");
        assert_eq!(splice_revision(&m, at, 1).unwrap(), b"\x81\xa8revision\x01\xc0");
        assert_eq!(splice_revision(&m, at, 128).unwrap(), b"\x81\xa8revision\xcc\x80\xc0");
        assert_eq!(splice_revision(&m, at, 256).unwrap(), b"\x81\xa8revision\xcd\x01\x00\xc0");
        assert_eq!(splice_revision(&m, at, 65536).unwrap(), b"\x81\xa8revision\xce\x00\x01\x00\x00\xc0");
        assert_eq!(splice_revision(&m, at, 1 << 32), None);
        assert_eq!(splice_revision(&m, at - 1, 1), None);
        assert_eq!(splice_revision(&m, m.len(), 1), None);
    }
}
