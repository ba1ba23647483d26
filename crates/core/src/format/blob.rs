//! A chunked blob's bytes (FORMAT.md §4.5), with no I/O: chunks sealed as
//! a stream arrives, the chunk table and trailer, and their checked reading
//! through a [`ReadAt`] (a file, or bytes in memory).
//!
//! A chunked key file is an ordinary key file (header, meta segment, value
//! segment) with `FLAG_CHUNKED` set and serializer 0. Its value segment is the
//! stored chunks, then a table (per chunk: u32 LE stored length, u64 LE xxh3_64
//! of the stored chunk), then a trailer (u64 LE plain length `P`, u32 LE chunk
//! count `c`). The header's value checksum covers `table || trailer` only.
//!
//! [`encode_chunked_file`] builds a whole chunked file in memory (golden
//! vectors); `crate::blob` writes and reads blobs in a store with the same
//! `ChunkStream` and `ChunkIndex`.

use xxhash_rust::xxh3::xxh3_64;

use super::file::{self, Header, FLAG_CHUNKED, HEADER_LEN};
use crate::codec::{Codec, Randomness, SegmentContext, SegmentKind};
use crate::error::{Error, ErrorCode, Result};
use crate::keyhash;

/// The plain length of every chunk but the last (1 MiB).
pub const CHUNK_SIZE: usize = 1 << 20;

/// Length of the trailer: u64 LE plain length, u32 LE chunk count.
const TRAILER_LEN: u64 = 12;

/// Length of one table entry: u32 LE stored length, u64 LE checksum.
const TABLE_ENTRY_LEN: u64 = 12;

/// The number of chunks of a blob of `size` plain bytes: `max(1, ceil(P / 2^20))`.
pub fn chunk_count(size: u64) -> u64 {
    let chunk = CHUNK_SIZE as u64;
    (size / chunk + u64::from(!size.is_multiple_of(chunk))).max(1)
}

/// Reads exactly `buf.len()` bytes at an offset of a file (or of bytes in memory).
pub type ReadAt<'a> = dyn Fn(&mut [u8], u64) -> Result<()> + 'a;

// --- Writing ---

/// Seals a blob into chunks as its bytes arrive: a chunk is sealed only when
/// more bytes are known to follow it, so the last one is sealed (as kind 3)
/// by [`finish`](Self::finish). Holds at most one chunk of plain bytes.
pub(crate) struct ChunkStream {
    codec: Codec,
    key_hash: u128,
    /// Plain bytes of the chunk being filled (at most [`CHUNK_SIZE`]).
    buf: Vec<u8>,
    /// Chunks sealed so far.
    chunks: u64,
    /// Plain bytes sealed so far.
    sealed: u64,
    /// Stored bytes written so far (after the meta segment).
    stored: u64,
    /// The table entries of the sealed chunks.
    table: Vec<u8>,
    /// Length and checksum of the stored meta segment.
    meta_len: u32,
    meta_checksum: u64,
}

/// Something that takes the stored bytes of a file in order.
pub type Sink<'a> = dyn FnMut(&[u8]) -> Result<()> + 'a;

impl ChunkStream {
    /// Starts a chunked file: returns the stream and the stored meta segment
    /// (to be written after 48 placeholder bytes). Draws the meta segment's
    /// salt and IV from `rng` first.
    pub(crate) fn begin(
        codec: Codec,
        secret: Option<&[u8]>,
        key_cke: &[u8],
        meta: &[u8],
        rng: &mut dyn Randomness,
    ) -> Result<(ChunkStream, Vec<u8>)> {
        let key_hash = keyhash::key_hash(key_cke);
        let ctx = SegmentContext { secret, key_hash, accept_plaintext: false };
        let plain = file::compose_meta(key_cke, meta)?;
        let stored = codec.encode(&ctx, SegmentKind::Meta, &plain, rng)?.into_owned();
        let meta_len = u32::try_from(stored.len())
            .map_err(|_| Error::new(ErrorCode::InvalidArgument, "a key and its metadata exceed the format's 4 GiB"))?;
        let stream = ChunkStream {
            codec,
            key_hash,
            buf: Vec::new(),
            chunks: 0,
            sealed: 0,
            stored: 0,
            table: Vec::new(),
            meta_len,
            meta_checksum: xxh3_64(&stored),
        };
        Ok((stream, stored))
    }

    /// The plain bytes taken so far.
    pub(crate) fn size(&self) -> u64 {
        self.sealed + self.buf.len() as u64
    }

    /// Seals one chunk and hands its stored bytes to `sink`.
    fn seal(&mut self, secret: Option<&[u8]>, plain: &[u8], last: bool, rng: &mut dyn Randomness, sink: &mut Sink<'_>) -> Result<()> {
        let ctx = SegmentContext { secret, key_hash: self.key_hash, accept_plaintext: false };
        let kind = if last { SegmentKind::FinalChunk } else { SegmentKind::Chunk };
        let stored = self.codec.encode_at(&ctx, kind, Some(self.chunks), plain, rng)?;
        let len = u32::try_from(stored.len()).map_err(|_| Error::new(ErrorCode::InvalidArgument, "a stored chunk exceeds 4 GiB"))?;
        sink(&stored)?;
        self.table.extend_from_slice(&len.to_le_bytes());
        self.table.extend_from_slice(&xxh3_64(&stored).to_le_bytes());
        self.chunks += 1;
        self.sealed += plain.len() as u64;
        self.stored += u64::from(len);
        Ok(())
    }

    /// Takes more plain bytes; seals every chunk that is full and followed by more.
    pub(crate) fn push(&mut self, secret: Option<&[u8]>, mut bytes: &[u8], rng: &mut dyn Randomness, sink: &mut Sink<'_>) -> Result<()> {
        while !bytes.is_empty() {
            if self.buf.len() == CHUNK_SIZE {
                // More bytes follow, so the buffered chunk is not the last.
                let full = std::mem::take(&mut self.buf);
                let sealed = self.seal(secret, &full, false, rng, sink);
                self.buf = full;
                self.buf.clear();
                sealed?;
                continue;
            }
            if self.buf.is_empty() && bytes.len() > CHUNK_SIZE {
                // A whole chunk, with more after it, straight from the input.
                let (chunk, rest) = bytes.split_at(CHUNK_SIZE);
                self.seal(secret, chunk, false, rng, sink)?;
                bytes = rest;
                continue;
            }
            let take = bytes.len().min(CHUNK_SIZE - self.buf.len());
            let need = self.buf.len() + take;
            if need > self.buf.capacity() {
                // Grow geometrically, but never past one chunk.
                let want = need.max(2 * self.buf.capacity()).min(CHUNK_SIZE);
                self.buf.reserve_exact(want - self.buf.len());
            }
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// Seals the last chunk (an empty blob is one empty chunk) and returns the
    /// bytes that follow it (table and trailer) and the real header.
    pub(crate) fn finish(
        &mut self,
        secret: Option<&[u8]>,
        rng: &mut dyn Randomness,
        sink: &mut Sink<'_>,
    ) -> Result<(Vec<u8>, [u8; HEADER_LEN])> {
        let last = std::mem::take(&mut self.buf);
        self.seal(secret, &last, true, rng, sink)?;
        let count =
            u32::try_from(self.chunks).map_err(|_| Error::new(ErrorCode::InvalidArgument, "a blob exceeds the format's 2^32 chunks"))?;
        let mut tail = std::mem::take(&mut self.table);
        tail.extend_from_slice(&self.sealed.to_le_bytes());
        tail.extend_from_slice(&count.to_le_bytes());
        let header = Header {
            flags: FLAG_CHUNKED,
            serializer: 0,
            codec: self.codec,
            meta_len: self.meta_len,
            value_len: self.stored + tail.len() as u64,
            meta_checksum: self.meta_checksum,
            value_checksum: xxh3_64(&tail),
        };
        Ok((tail, header.encode()))
    }
}

/// Encodes a whole chunked key file (FORMAT.md §4.5) of `blob` in memory,
/// byte for byte what a `crate::blob::BlobWriter` with the same codec writes. Salts and
/// IVs come from `rng`, in order: the meta segment's salt and IV, then each
/// chunk's salt and IV. Serializer 0, `FLAG_CHUNKED`.
pub fn encode_chunked_file(
    codec: Codec,
    secret: Option<&[u8]>,
    key_cke: &[u8],
    meta: &[u8],
    blob: &[u8],
    rng: &mut dyn Randomness,
) -> Result<Vec<u8>> {
    let (mut stream, meta_stored) = ChunkStream::begin(codec, secret, key_cke, meta, rng)?;
    let mut out = vec![0u8; HEADER_LEN];
    out.extend_from_slice(&meta_stored);
    let mut sink = |b: &[u8]| -> Result<()> {
        out.extend_from_slice(b);
        Ok(())
    };
    stream.push(secret, blob, rng, &mut sink)?;
    let (tail, header) = stream.finish(secret, rng, &mut sink)?;
    out.extend_from_slice(&tail);
    out[..HEADER_LEN].copy_from_slice(&header);
    Ok(out)
}

// --- Reading ---

/// Where the chunks of a chunked value are, from its trailer and table.
#[derive(Clone, Debug)]
pub(crate) struct ChunkIndex {
    /// File offset of the value segment (`48 + m`).
    value_start: u64,
    /// The blob's plain length `P`.
    pub(crate) size: u64,
    /// Per chunk: its stored offset within the value segment; one more entry
    /// at the end (the stored chunks' total length).
    offsets: Vec<u64>,
    /// Per chunk: xxh3_64 of its stored bytes.
    sums: Vec<u64>,
}

impl ChunkIndex {
    /// Reads and checks the trailer and the table of a chunked value, in the
    /// order of FORMAT.md §4.5.
    pub(crate) fn read(header: &Header, read: &ReadAt<'_>) -> Result<ChunkIndex> {
        let value_start = HEADER_LEN as u64 + u64::from(header.meta_len);
        let v = header.value_len;
        if v < TABLE_ENTRY_LEN + TRAILER_LEN {
            return Err(Error::corrupt(format!("a chunked value of {v} bytes is shorter than one table entry and the trailer")));
        }
        let mut trailer = [0u8; TRAILER_LEN as usize];
        read(&mut trailer, value_start + v - TRAILER_LEN)?;
        let size = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
        let count = u64::from(u32::from_le_bytes(trailer[8..].try_into().expect("4 bytes")));
        if count != chunk_count(size) {
            return Err(Error::corrupt(format!("the trailer's chunk count {count} does not fit its length {size}")));
        }
        let table_len = TABLE_ENTRY_LEN * count;
        if table_len + TRAILER_LEN > v {
            return Err(Error::corrupt("the chunk table does not fit in the value segment"));
        }
        let table_start = v - TRAILER_LEN - table_len;
        let mut tail = vec![0u8; (table_len + TRAILER_LEN) as usize];
        read(&mut tail, value_start + table_start)?;
        if xxh3_64(&tail) != header.value_checksum {
            return Err(Error::corrupt("chunk table checksum mismatch"));
        }
        let mut offsets = Vec::with_capacity(count as usize + 1);
        let mut sums = Vec::with_capacity(count as usize);
        let mut total: u64 = 0;
        offsets.push(0);
        for entry in tail[..table_len as usize].chunks_exact(TABLE_ENTRY_LEN as usize) {
            let len = u64::from(u32::from_le_bytes(entry[..4].try_into().expect("4 bytes")));
            total = total
                .checked_add(len)
                .filter(|&t| t <= table_start)
                .ok_or_else(|| Error::corrupt("the chunk table's stored lengths run past the chunks"))?;
            offsets.push(total);
            sums.push(u64::from_le_bytes(entry[4..].try_into().expect("8 bytes")));
        }
        if total != table_start {
            return Err(Error::corrupt("the chunk table's stored lengths do not add up to the chunks"));
        }
        Ok(ChunkIndex { value_start, size, offsets, sums })
    }

    fn count(&self) -> u64 {
        self.sums.len() as u64
    }

    /// The stored length of chunk `i`.
    fn stored_len(&self, i: u64) -> u64 {
        self.offsets[i as usize + 1] - self.offsets[i as usize]
    }

    /// The plain length chunk `i` must have.
    fn plain_len(&self, i: u64) -> u64 {
        let n = self.count();
        if i + 1 == n {
            self.size - (n - 1) * CHUNK_SIZE as u64
        } else {
            CHUNK_SIZE as u64
        }
    }

    /// Reads the stored bytes of chunk `i` into `buf` (resized to fit) and
    /// checks their checksum.
    fn read_stored(&self, i: u64, read: &ReadAt<'_>, buf: &mut Vec<u8>) -> Result<()> {
        let len = self.stored_len(i);
        buf.clear();
        let n = usize::try_from(len)
            .ok()
            .filter(|&n| buf.try_reserve_exact(n).is_ok())
            .ok_or_else(|| Error::new(ErrorCode::InvalidArgument, format!("cannot allocate {len} bytes for a blob")))?;
        buf.resize(n, 0);
        read(buf, self.value_start + self.offsets[i as usize])?;
        self.check_sum(i, buf)
    }

    fn check_sum(&self, i: u64, stored: &[u8]) -> Result<()> {
        if xxh3_64(stored) != self.sums[i as usize] {
            return Err(Error::corrupt(format!("chunk {i} of {}: checksum mismatch", self.count())));
        }
        Ok(())
    }

    /// Chunk `i`'s plain bytes from its stored bytes (checksum already
    /// checked): decrypt, decompress, check the plain length.
    fn decode<'a>(&self, i: u64, codec: Codec, ctx: &SegmentContext<'_>, stored: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>> {
        let n = self.count();
        let kind = if i + 1 == n { SegmentKind::FinalChunk } else { SegmentKind::Chunk };
        let plain =
            codec.decode_at(ctx, kind, Some(i), stored).map_err(|e| Error::new(e.code(), format!("chunk {i} of {n}: {}", e.message())))?;
        let want = self.plain_len(i);
        if plain.len() as u64 != want {
            return Err(Error::corrupt(format!("chunk {i} of {n} holds {} bytes, not {want}", plain.len())));
        }
        Ok(plain)
    }

    /// Up to `len` plain bytes from `offset`: fewer at the end of the blob.
    /// Reads only the chunks the range overlaps.
    ///
    /// Through [`range_into`](Self::range_into) on a zeroed buffer: a chunk
    /// stored as is goes straight from the file into the result (no scratch
    /// buffer per chunk and no second copy: a 10 MB blob read was 3 passes
    /// over its bytes besides the checksum).
    pub(crate) fn range(&self, offset: u64, len: u64, codec: Codec, ctx: &SegmentContext<'_>, read: &ReadAt<'_>) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.size);
        let n = end.saturating_sub(offset);
        let mut out = zeroed(n)?;
        self.range_into(offset, &mut out, codec, ctx, read)?;
        Ok(out)
    }

    /// Fills `out` with the plain bytes from `offset` (`offset + out.len()`
    /// at most the blob's size), chunk by chunk, each checked before its
    /// bytes are used. A chunk stored as is (codec none) that `out` covers
    /// whole is read straight into `out` and checked there; the others go
    /// through one scratch buffer of at most a stored chunk. On error `out`
    /// may hold unchecked bytes.
    pub(crate) fn range_into(&self, offset: u64, out: &mut [u8], codec: Codec, ctx: &SegmentContext<'_>, read: &ReadAt<'_>) -> Result<()> {
        let end = offset + out.len() as u64;
        debug_assert!(end <= self.size);
        if out.is_empty() {
            return Ok(());
        }
        let chunk = CHUNK_SIZE as u64;
        let mut scratch = Vec::new();
        for i in offset / chunk..=(end - 1) / chunk {
            let base = i * chunk;
            let (from, to) = (offset.max(base), end.min(base + chunk));
            let dst = &mut out[(from - offset) as usize..(to - offset) as usize];
            let whole = from == base && to - base == self.plain_len(i);
            if codec == Codec::NONE && whole && self.stored_len(i) == dst.len() as u64 {
                read(dst, self.value_start + self.offsets[i as usize])?;
                self.check_sum(i, dst)?;
                continue;
            }
            self.read_stored(i, read, &mut scratch)?;
            let plain = self.decode(i, codec, ctx, &scratch)?;
            dst.copy_from_slice(&plain[(from - base) as usize..(to - base) as usize]);
        }
        Ok(())
    }
}

/// `len` zero bytes, or `ERR_INVALID_ARGUMENT` when they cannot be had.
/// Allocated zeroed (`calloc`: a large buffer's fresh pages are zero
/// already, so nothing writes them before the read does), where
/// `vec![0; len]` would abort the process on failure.
fn zeroed(len: u64) -> Result<Vec<u8>> {
    let fail = || Error::new(ErrorCode::InvalidArgument, format!("cannot allocate {len} bytes for a blob"));
    let n = usize::try_from(len).map_err(|_| fail())?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u8>(n).map_err(|_| fail())?;
    // SAFETY: `layout` has a non-zero size. A non-null pointer is `n`
    // initialized (zero) bytes from the global allocator with the layout of
    // a `Vec<u8>` of capacity `n`, so the Vec owns and frees it rightly.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout);
        if ptr.is_null() {
            return Err(fail());
        }
        Ok(Vec::from_raw_parts(ptr, n, n))
    }
}

/// `len` bytes at `offset`, read into a new buffer.
pub(crate) fn read_vec(read: &ReadAt<'_>, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = zeroed(len)?;
    read(&mut buf, offset)?;
    Ok(buf)
}

/// The whole plain blob of a chunked value segment held in memory (for
/// [`super::parse_file`]): `file` is the whole key file, whose header and
/// total length are already checked.
pub(crate) fn decode_chunked_value(header: &Header, ctx: &SegmentContext<'_>, file: &[u8]) -> Result<Vec<u8>> {
    let read = |buf: &mut [u8], offset: u64| -> Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| file.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| Error::corrupt("the key file ends early"))?;
        buf.copy_from_slice(src);
        Ok(())
    };
    let index = ChunkIndex::read(header, &read)?;
    index.range(0, index.size, header.codec, ctx, &read)
}
