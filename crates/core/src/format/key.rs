//! The canonical key encoding (CKE) of FORMAT.md §2.
//!
//! One key has exactly one encoding, in every implementation, so that the same
//! key always hashes to the same file name. [`encode`] applies the rules that pin
//! the encoding down (numbers, WTF-8 strings, sorted map entries); [`decode`] and
//! [`validate`] are strict and reject every non-canonical form.

use crate::error::{Error, Result};

const T_NULL: u8 = 0x00;
const T_FALSE: u8 = 0x01;
const T_TRUE: u8 = 0x02;
const T_INT: u8 = 0x03;
const T_FLOAT: u8 = 0x04;
const T_STRING: u8 = 0x05;
const T_BYTES: u8 = 0x06;
const T_ARRAY: u8 = 0x07;
const T_MAP: u8 = 0x08;

/// The largest safe integer, `2^53 - 1`: every integer up to it is exact in an
/// IEEE-754 double (a JavaScript number).
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// How deep a key may nest: the top-level value is at depth 0, the items of a
/// container one deeper than the container; a value deeper than this is
/// rejected (the TypeScript codec has the same limit). Keeps recursion bounded.
pub const MAX_DEPTH: usize = 256;

/// The one bit pattern of NaN in a CKE.
const CANONICAL_NAN: u64 = 0x7FF8_0000_0000_0000;

/// At most this many items of a container are reserved before they decode.
/// A count is checked against the bytes left, but each of up to
/// [`MAX_DEPTH`] nested containers may announce that many: reserving them all
/// would ask for `MAX_DEPTH` times the input's length in keys (gigabytes for a
/// megabyte of input). Past this, the vector grows as items actually decode.
const MAX_PREALLOC: usize = 16;

/// A key, as JavaScript sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Key {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer. One outside the safe range (`|n| > 2^53 - 1`) encodes as the
    /// nearest float, as a JavaScript number of that value would.
    Int(i64),
    /// A number. One that is a safe integer (including `-0`) encodes as an integer.
    Float(f64),
    /// A string as UTF-16 code units, like a JavaScript string (may hold lone surrogates).
    Str(Vec<u16>),
    /// A byte string (a `Uint8Array`); never equal to a string.
    Bytes(Vec<u8>),
    /// An array.
    Array(Vec<Key>),
    /// A map with string keys (a plain object). Encoding sorts the entries.
    Map(Vec<(Vec<u16>, Key)>),
}

impl Key {
    /// A string key from a Rust string.
    pub fn str(s: &str) -> Key {
        Key::Str(s.encode_utf16().collect())
    }
}

/// Encodes a key canonically.
///
/// # Panics
/// If [`try_encode`] fails: a map with duplicate keys, a key nested deeper than
/// [`MAX_DEPTH`], or an encoding longer than `u32::MAX` bytes.
pub fn encode(key: &Key) -> Vec<u8> {
    match try_encode(key) {
        Ok(bytes) => bytes,
        Err(e) => panic!("key cannot be encoded: {e}"),
    }
}

/// Encodes a key canonically, or fails with `ERR_INVALID_KEY` for a map with
/// duplicate keys, a key nested deeper than [`MAX_DEPTH`], or an encoding
/// longer than `u32::MAX` bytes.
pub fn try_encode(key: &Key) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_key(&mut out, key, 0)?;
    if u32::try_from(out.len()).is_err() {
        return Err(Error::invalid_key("a key encodes to more than 4 GiB"));
    }
    Ok(out)
}

/// Decodes a CKE back into its key. Strict: fails with `ERR_INVALID_KEY` on
/// anything [`validate`] rejects.
pub fn decode(bytes: &[u8]) -> Result<Key> {
    Parser::new(bytes).parse::<true>()
}

/// Checks that `bytes` is a canonical key encoding, without building the key.
///
/// Rejects (with `ERR_INVALID_KEY`): empty input, an unknown tag, a length past
/// the end, trailing bytes, unsorted or duplicate map keys, a map key that is
/// not a string, an integer outside the safe range, a float that should have
/// been an integer, a non-canonical NaN, ill-formed WTF-8, and nesting deeper
/// than [`MAX_DEPTH`].
pub fn validate(bytes: &[u8]) -> Result<()> {
    Parser::new(bytes).parse::<false>().map(drop)
}

/// Encodes UTF-16 code units as WTF-8: UTF-8, with each unpaired surrogate
/// written as the 3-byte sequence of its code point.
pub fn wtf8_encode(units: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(units.len());
    for unit in char::decode_utf16(units.iter().copied()) {
        match unit {
            Ok(c) => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            Err(e) => {
                let s = e.unpaired_surrogate();
                out.extend_from_slice(&[0xE0 | (s >> 12) as u8, 0x80 | ((s >> 6) & 0x3F) as u8, 0x80 | (s & 0x3F) as u8]);
            }
        }
    }
    out
}

/// Decodes strict WTF-8 into UTF-16 code units (`ERR_INVALID_KEY` if ill-formed).
pub fn wtf8_decode(bytes: &[u8]) -> Result<Vec<u16>> {
    let mut units = Vec::with_capacity(bytes.len());
    scan_wtf8(bytes, Some(&mut units))?;
    Ok(units)
}

fn is_safe_integer(f: f64) -> bool {
    f.is_finite() && f.trunc() == f && f.abs() <= MAX_SAFE_INTEGER as f64
}

fn len32(n: usize, what: &str) -> Result<[u8; 4]> {
    u32::try_from(n).map(u32::to_be_bytes).map_err(|_| Error::invalid_key(format!("a key {what} is longer than 2^32 - 1")))
}

fn write_number(out: &mut Vec<u8>, f: f64) {
    if is_safe_integer(f) {
        // `-0.0 as i64` is 0: -0 and 0 are one key.
        out.push(T_INT);
        out.extend_from_slice(&(f as i64).to_be_bytes());
    } else {
        let bits = if f.is_nan() { CANONICAL_NAN } else { f.to_bits() };
        out.push(T_FLOAT);
        out.extend_from_slice(&bits.to_be_bytes());
    }
}

fn write_str(out: &mut Vec<u8>, wtf8: &[u8]) -> Result<()> {
    out.push(T_STRING);
    out.extend_from_slice(&len32(wtf8.len(), "string")?);
    out.extend_from_slice(wtf8);
    Ok(())
}

fn write_key(out: &mut Vec<u8>, key: &Key, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::invalid_key(format!("a key is nested more than {MAX_DEPTH} levels deep")));
    }
    match key {
        Key::Null => out.push(T_NULL),
        Key::Bool(false) => out.push(T_FALSE),
        Key::Bool(true) => out.push(T_TRUE),
        Key::Int(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) => {
            out.push(T_INT);
            out.extend_from_slice(&i.to_be_bytes());
        }
        // Outside the safe range a JavaScript number is a float: agree with it.
        Key::Int(i) => write_number(out, *i as f64),
        Key::Float(f) => write_number(out, *f),
        Key::Str(units) => write_str(out, &wtf8_encode(units))?,
        Key::Bytes(bytes) => {
            out.push(T_BYTES);
            out.extend_from_slice(&len32(bytes.len(), "byte string")?);
            out.extend_from_slice(bytes);
        }
        Key::Array(items) => {
            out.push(T_ARRAY);
            out.extend_from_slice(&len32(items.len(), "array")?);
            for item in items {
                write_key(out, item, depth + 1)?;
            }
        }
        Key::Map(entries) => {
            let mut sorted: Vec<(Vec<u8>, &Key)> = entries.iter().map(|(k, v)| (wtf8_encode(k), v)).collect();
            // Unsigned byte order, a prefix first: exactly `[u8]`'s `Ord`.
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            if sorted.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(Error::invalid_key("a key map has duplicate keys"));
            }
            out.push(T_MAP);
            out.extend_from_slice(&len32(sorted.len(), "map")?);
            for (k, v) in sorted {
                write_str(out, &k)?;
                write_key(out, v, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Checks strict WTF-8 and, if `out` is given, appends the UTF-16 code units.
fn scan_wtf8(bytes: &[u8], out: Option<&mut Vec<u16>>) -> Result<()> {
    // Well-formed UTF-8 (the common case) is valid WTF-8 as is.
    if let Ok(s) = std::str::from_utf8(bytes) {
        if let Some(out) = out {
            out.extend(s.encode_utf16());
        }
        return Ok(());
    }
    let bad = || Error::invalid_key("a key string is not well-formed WTF-8");
    let cont = |i: usize| -> Result<u32> {
        match bytes.get(i) {
            Some(&b) if b & 0xC0 == 0x80 => Ok(u32::from(b & 0x3F)),
            _ => Err(bad()),
        }
    };
    let mut out = out;
    let mut after_high_surrogate = false;
    let mut i = 0;
    while i < bytes.len() {
        let x = bytes[i];
        let (cp, width) = match x {
            0x00..=0x7F => (u32::from(x), 1),
            0xC2..=0xDF => ((u32::from(x & 0x1F) << 6) | cont(i + 1)?, 2),
            0xE0..=0xEF => {
                let cp = (u32::from(x & 0x0F) << 12) | (cont(i + 1)? << 6) | cont(i + 2)?;
                if cp < 0x800 {
                    return Err(bad()); // overlong
                }
                (cp, 3)
            }
            0xF0..=0xF4 => {
                let cp = (u32::from(x & 0x07) << 18) | (cont(i + 1)? << 12) | (cont(i + 2)? << 6) | cont(i + 3)?;
                if !(0x10000..=0x10FFFF).contains(&cp) {
                    return Err(bad()); // overlong, or above U+10FFFF
                }
                (cp, 4)
            }
            _ => return Err(bad()), // a continuation byte, C0/C1 (overlong), F5..FF
        };
        // A surrogate pair must be one 4-byte sequence, never two 3-byte ones.
        if after_high_surrogate && (0xDC00..=0xDFFF).contains(&cp) {
            return Err(bad());
        }
        after_high_surrogate = (0xD800..=0xDBFF).contains(&cp);
        if let Some(out) = out.as_deref_mut() {
            if cp >= 0x10000 {
                let c = cp - 0x10000;
                out.extend_from_slice(&[0xD800 + (c >> 10) as u16, 0xDC00 + (c & 0x3FF) as u16]);
            } else {
                out.push(cp as u16);
            }
        }
        i += width;
    }
    Ok(())
}

/// A strict CKE reader. `BUILD` says whether to build the [`Key`] or only
/// check the bytes (then every returned key is a placeholder).
struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Parser { buf, pos: 0 }
    }

    fn parse<const BUILD: bool>(mut self) -> Result<Key> {
        let key = self.value::<BUILD>(0)?;
        if self.pos != self.buf.len() {
            return Err(Error::invalid_key("trailing bytes after a key encoding"));
        }
        Ok(key)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let buf: &'a [u8] = self.buf;
        let rest = &buf[self.pos..];
        if n > rest.len() {
            return Err(Error::invalid_key("a key encoding ends early"));
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    /// The length-prefixed WTF-8 of a string, checked.
    fn string_bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()?;
        let bytes = self.take(n)?;
        scan_wtf8(bytes, None)?;
        Ok(bytes)
    }

    /// A count of items, each at least one byte, so at most the bytes left.
    fn count(&mut self) -> Result<usize> {
        let n = self.u32()?;
        if n > self.buf.len() - self.pos {
            return Err(Error::invalid_key("a key encoding ends early"));
        }
        Ok(n)
    }

    fn value<const BUILD: bool>(&mut self, depth: usize) -> Result<Key> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid_key(format!("a key encoding nests more than {MAX_DEPTH} levels deep")));
        }
        let tag = self.u8()?;
        Ok(match tag {
            T_NULL => Key::Null,
            T_FALSE => Key::Bool(false),
            T_TRUE => Key::Bool(true),
            T_INT => {
                let i = self.u64()? as i64;
                if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) {
                    return Err(Error::invalid_key("a key integer outside the safe range should be a float"));
                }
                Key::Int(i)
            }
            T_FLOAT => {
                let bits = self.u64()?;
                let f = f64::from_bits(bits);
                if is_safe_integer(f) {
                    return Err(Error::invalid_key("a key float that is a safe integer should be an integer"));
                }
                if f.is_nan() && bits != CANONICAL_NAN {
                    return Err(Error::invalid_key("a key NaN is not the canonical NaN"));
                }
                Key::Float(f)
            }
            T_STRING => {
                let bytes = self.string_bytes()?;
                if BUILD {
                    Key::Str(wtf8_decode(bytes)?)
                } else {
                    Key::Null
                }
            }
            T_BYTES => {
                let n = self.u32()?;
                let bytes = self.take(n)?;
                if BUILD {
                    Key::Bytes(bytes.to_vec())
                } else {
                    Key::Null
                }
            }
            T_ARRAY => {
                let n = self.count()?;
                let mut items = Vec::with_capacity(if BUILD { n.min(MAX_PREALLOC) } else { 0 });
                for _ in 0..n {
                    let item = self.value::<BUILD>(depth + 1)?;
                    if BUILD {
                        items.push(item);
                    }
                }
                Key::Array(items)
            }
            T_MAP => {
                let n = self.count()?;
                let mut entries = Vec::with_capacity(if BUILD { n.min(MAX_PREALLOC) } else { 0 });
                let mut prev: Option<&[u8]> = None;
                for _ in 0..n {
                    if self.u8()? != T_STRING {
                        return Err(Error::invalid_key("a key map key is not a string"));
                    }
                    let k = self.string_bytes()?;
                    if prev.is_some_and(|p| p >= k) {
                        return Err(Error::invalid_key("key map keys are not sorted and unique"));
                    }
                    prev = Some(k);
                    let v = self.value::<BUILD>(depth + 1)?;
                    if BUILD {
                        entries.push((wtf8_decode(k)?, v));
                    }
                }
                Key::Map(entries)
            }
            _ => return Err(Error::invalid_key(format!("unknown tag 0x{tag:02x} in a key encoding"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Asserts that `bytes` (hex) is rejected by both `validate` and `decode`.
    #[track_caller]
    fn rejected(bytes: &str) {
        let b = hex(bytes);
        let e = validate(&b).expect_err(bytes);
        assert_eq!(e.code(), ErrorCode::InvalidKey, "{bytes}: {e}");
        assert_eq!(decode(&b).expect_err(bytes).code(), ErrorCode::InvalidKey);
    }

    #[track_caller]
    fn accepted(bytes: &str) {
        let b = hex(bytes);
        validate(&b).unwrap_or_else(|e| panic!("{bytes}: {e}"));
        assert_eq!(encode(&decode(&b).unwrap()), b, "{bytes} re-encodes");
    }

    #[test]
    fn numbers() {
        assert_eq!(encode(&Key::Float(1.0)), hex("03 0000000000000001"));
        assert_eq!(encode(&Key::Float(-0.0)), encode(&Key::Int(0)));
        assert_eq!(encode(&Key::Int(-1)), hex("03 ffffffffffffffff"));
        assert_eq!(encode(&Key::Float(f64::NAN)), hex("04 7ff8000000000000"));
        assert_eq!(encode(&Key::Float(-f64::NAN)), hex("04 7ff8000000000000"));
        // 2^53 is not safe: a float, and an i64 of that value agrees.
        assert_eq!(encode(&Key::Int(1 << 53)), hex("04 4340000000000000"));
        assert_eq!(encode(&Key::Float(9007199254740992.0)), hex("04 4340000000000000"));
        assert_eq!(encode(&Key::Int(MAX_SAFE_INTEGER)), hex("03 001fffffffffffff"));
    }

    #[test]
    fn strings() {
        assert_eq!(encode(&Key::str("a")), hex("05 00000001 61"));
        assert_eq!(encode(&Key::Bytes(vec![0x61])), hex("06 00000001 61"));
        assert_eq!(encode(&Key::Str(vec![0xD800])), hex("05 00000003 eda080"));
        assert_eq!(encode(&Key::str("😀")), hex("05 00000004 f09f9880"));
        let lone = Key::Str(vec![0xDC00, 0xD800, 0x61, 0xD83D]);
        assert_eq!(decode(&encode(&lone)).unwrap(), lone);
    }

    #[test]
    fn maps_sort_by_wtf8_bytes() {
        // UTF-16 order would put U+1F600 (D83D..) before U+FF61; WTF-8 order is the reverse.
        let m = Key::Map(vec![
            ("😀".encode_utf16().collect(), Key::Int(1)),
            ("\u{FF61}".encode_utf16().collect(), Key::Int(2)),
            ("a".encode_utf16().collect(), Key::Null),
        ]);
        let bytes = encode(&m);
        let Key::Map(back) = decode(&bytes).unwrap() else { panic!() };
        let names: Vec<String> = back.iter().map(|(k, _)| String::from_utf16(k).unwrap()).collect();
        assert_eq!(names, ["a", "\u{FF61}", "😀"]);
    }

    #[test]
    fn try_encode_rejects_duplicates_and_depth() {
        let dup = Key::Map(vec![(vec![0x61], Key::Null), (vec![0x61], Key::Bool(true))]);
        assert_eq!(try_encode(&dup).unwrap_err().code(), ErrorCode::InvalidKey);
        let mut deep = Key::Null;
        for _ in 0..MAX_DEPTH {
            deep = Key::Array(vec![deep]);
        }
        validate(&encode(&deep)).unwrap();
        let deeper = Key::Array(vec![deep]);
        assert_eq!(try_encode(&deeper).unwrap_err().code(), ErrorCode::InvalidKey);
    }

    #[test]
    fn accepts_canonical_forms() {
        accepted("00");
        accepted("01");
        accepted("02");
        accepted("03 fff0000000000001"); // -(2^53 - 1)
        accepted("04 3ff8000000000000"); // 1.5
        accepted("04 7ff0000000000000"); // Infinity
        accepted("05 00000000");
        accepted("05 00000006 edb080eda080"); // low then high surrogate: not a pair
        accepted("06 00000000");
        accepted("07 00000002 00 01");
        accepted("08 00000002 05 00000001 61 00 05 00000002 6161 00");
        accepted("08 00000002 05 00000000 00 05 00000001 61 00"); // "" sorts first
    }

    #[test]
    fn rejects_empty_input() {
        rejected("");
    }

    #[test]
    fn rejects_unknown_tag() {
        rejected("09");
        rejected("ff");
    }

    #[test]
    fn rejects_length_past_the_end() {
        rejected("03 00000000000000");
        rejected("04 3ff80000000000");
        rejected("05 00000002 61");
        rejected("05 000000");
        rejected("06 00000002 61");
        rejected("06 ffffffff");
        rejected("07 00000002 00");
        rejected("07 ffffffff 00");
        rejected("08 00000001 05 00000001 61");
        rejected("08 00000001");
    }

    #[test]
    fn rejects_trailing_bytes() {
        rejected("00 00");
        rejected("05 00000001 61 62");
    }

    #[test]
    fn rejects_unsorted_or_duplicate_map_keys() {
        rejected("08 00000002 05 00000001 62 00 05 00000001 61 00");
        rejected("08 00000002 05 00000001 61 00 05 00000001 61 00");
        rejected("08 00000002 05 00000002 6161 00 05 00000001 61 00"); // prefix must come first
    }

    #[test]
    fn rejects_map_keys_that_are_not_strings() {
        rejected("08 00000001 06 00000001 61 00");
        rejected("08 00000001 03 0000000000000001 00");
    }

    #[test]
    fn rejects_integers_outside_the_safe_range() {
        rejected("03 0020000000000000"); // 2^53
        rejected("03 7fffffffffffffff");
        rejected("03 ffe0000000000000"); // -(2^53)
    }

    #[test]
    fn rejects_floats_that_are_safe_integers() {
        rejected("04 3ff0000000000000"); // 1.0
        rejected("04 0000000000000000"); // 0.0
        rejected("04 8000000000000000"); // -0.0
        rejected("04 433fffffffffffff"); // 2^53 - 1
    }

    #[test]
    fn rejects_non_canonical_nan() {
        rejected("04 7ff8000000000001");
        rejected("04 fff8000000000000");
        rejected("04 7ff0000000000001"); // signalling NaN
    }

    #[test]
    fn rejects_ill_formed_wtf8() {
        rejected("05 00000002 c080"); // overlong NUL
        rejected("05 00000002 c1bf"); // overlong
        rejected("05 00000003 e08080"); // overlong 3-byte
        rejected("05 00000004 f0808080"); // overlong 4-byte
        rejected("05 00000004 f4908080"); // above U+10FFFF
        rejected("05 00000004 f5808080");
        rejected("05 00000006 eda080edb080"); // a pair as two 3-byte sequences
        rejected("05 00000001 80"); // lone continuation byte
        rejected("05 00000002 e282"); // truncated sequence
        rejected("05 00000002 c328"); // bad continuation
        rejected("05 00000001 ff");
        // The same rules hold for map keys.
        rejected("08 00000001 05 00000002 c080 00");
        rejected("08 00000001 05 00000006 eda080edb080 00");
    }

    /// Counts the bytes this thread allocates (for the test below).
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static ALLOCATED: Cell<usize> = const { Cell::new(0) };
        }

        fn count(bytes: usize) {
            let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes)));
        }

        struct Counting;

        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                count(layout.size());
                // SAFETY: the caller's contract, passed on to the system allocator.
                unsafe { System.alloc(layout) }
            }
            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                count(layout.size());
                // SAFETY: the caller's contract, passed on to the system allocator.
                unsafe { System.alloc_zeroed(layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                count(new_size.saturating_sub(layout.size()));
                // SAFETY: the caller's contract, passed on to the system allocator.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: the caller's contract, passed on to the system allocator.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        /// Runs `f`; returns its result and the bytes it allocated on this thread.
        pub fn allocated_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
            let before = ALLOCATED.with(Cell::get);
            let r = f();
            (r, ALLOCATED.with(Cell::get) - before)
        }
    }

    /// Found while fuzzing (the `cke_decode` target checks what `decode`
    /// allocates): nested containers that each announce as many items as
    /// there are bytes left made `decode` reserve up to `MAX_DEPTH` times the
    /// input in keys: 1.4 GB for 100 kB.
    #[test]
    fn decode_allocates_in_proportion_to_its_input() {
        let pad = 100_000u32;
        for (tag, level) in [(T_ARRAY, &[][..]), (T_MAP, &[T_STRING, 0, 0, 0, 0][..])] {
            let mut b = Vec::new();
            for _ in 0..MAX_DEPTH {
                b.push(tag);
                b.extend_from_slice(&pad.to_be_bytes());
                b.extend_from_slice(level);
            }
            b.push(T_NULL);
            b.resize(b.len() + pad as usize, T_NULL);
            let (result, bytes) = counting::allocated_by(|| decode(&b));
            assert_eq!(result.unwrap_err().code(), ErrorCode::InvalidKey);
            assert!(bytes < 256 * b.len(), "decoding {} bytes allocated {bytes}", b.len());
        }
        // A valid key of many items still decodes, growing as it goes.
        let n = 100_000;
        let mut b = vec![T_ARRAY];
        b.extend_from_slice(&(n as u32).to_be_bytes());
        b.resize(b.len() + n, T_NULL);
        let (key, bytes) = counting::allocated_by(|| decode(&b).unwrap());
        assert_eq!(key, Key::Array(vec![Key::Null; n]));
        assert!(bytes < 256 * b.len(), "decoding {} bytes allocated {bytes}", b.len());
    }

    #[test]
    fn rejects_nesting_too_deep() {
        let mut b = [T_ARRAY, 0, 0, 0, 1].repeat(MAX_DEPTH);
        b.push(T_NULL);
        validate(&b).unwrap();
        let mut b = [T_ARRAY, 0, 0, 0, 1].repeat(MAX_DEPTH + 1);
        b.push(T_NULL);
        assert_eq!(validate(&b).unwrap_err().code(), ErrorCode::InvalidKey);
        // Deep garbage must not overflow the stack.
        assert!(validate(&[T_ARRAY, 0, 0, 0, 1].repeat(100_000)).is_err());
    }
}
