//! Streamed, chunked blobs (FORMAT.md §4.5): a blob written from a stream
//! with bounded memory, and read in ranges, each chunk checked before any of
//! its bytes is released.
//!
//! A chunked key file is an ordinary key file (header, meta segment, value
//! segment) with `FLAG_CHUNKED` set and serializer 0. Its value segment is the
//! stored chunks, then a table (per chunk: u32 LE stored length, u64 LE xxh3_64
//! of the stored chunk), then a trailer (u64 LE plain length `P`, u32 LE chunk
//! count `c`). The header's value checksum covers `table || trailer` only.
//!
//! [`BlobWriter`] writes a blob to a staging file as it arrives and commits it
//! like [`FileStore::put`] does (fsync, rename, directory fsync);
//! [`BlobReader`] reads ranges of a blob from one open file, so it sees one
//! consistent version even if the key is replaced meanwhile.
//! [`encode_chunked_file`] builds the same bytes in memory (golden vectors).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use crate::cke;
use crate::codec::{Codec, OsRandom, Randomness, SegmentContext, SegmentKind, ENCRYPTOR_AES, ENCRYPTOR_NONE};
use crate::error::{Error, ErrorCode, Result};
use crate::format::{self, Header, FLAG_CHUNKED, HEADER_LEN};
use crate::keyhash::{self, KEY_FILE_SUFFIX};
use crate::staging::{self, InFlight};
use crate::store::{FileStore, MetaEntry};
use crate::vfs::VfsFile;

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
type ReadAt<'a> = dyn Fn(&mut [u8], u64) -> Result<()> + 'a;

// --- Writing ---

/// Seals a blob into chunks as its bytes arrive: a chunk is sealed only when
/// more bytes are known to follow it, so the last one is sealed (as kind 3)
/// by [`finish`](Self::finish). Holds at most one chunk of plain bytes.
struct ChunkStream {
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
type Sink<'a> = dyn FnMut(&[u8]) -> Result<()> + 'a;

impl ChunkStream {
    /// Starts a chunked file: returns the stream and the stored meta segment
    /// (to be written after 48 placeholder bytes). Draws the meta segment's
    /// salt and IV from `rng` first.
    fn begin(codec: Codec, secret: Option<&[u8]>, key_cke: &[u8], meta: &[u8], rng: &mut dyn Randomness) -> Result<(ChunkStream, Vec<u8>)> {
        let key_hash = keyhash::key_hash(key_cke);
        let ctx = SegmentContext { secret, key_hash, accept_plaintext: false };
        let plain = format::compose_meta(key_cke, meta)?;
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
    fn size(&self) -> u64 {
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
    fn push(&mut self, secret: Option<&[u8]>, mut bytes: &[u8], rng: &mut dyn Randomness, sink: &mut Sink<'_>) -> Result<()> {
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
    fn finish(&mut self, secret: Option<&[u8]>, rng: &mut dyn Randomness, sink: &mut Sink<'_>) -> Result<(Vec<u8>, [u8; HEADER_LEN])> {
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
/// byte for byte what a [`BlobWriter`] with the same codec writes. Salts and
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

/// The staging file of a [`BlobWriter`] until it is renamed.
struct Staged {
    file: Box<dyn VfsFile>,
    path: PathBuf,
    /// Keeps the open sweep of this process away from the file.
    _in_flight: InFlight,
    /// Bytes written so far (the file is written in order from its start).
    written: u64,
    /// Where the bytes whose writeback has not been started begin.
    kicked: u64,
}

/// With durable writes, a blob's writeback is started every this many bytes:
/// the disk works while the rest of the blob is still being written, so the
/// fsync at commit has little left to wait for (and dirty memory stays small).
const WRITEBACK_STEP: u64 = 1 << 20;

impl Staged {
    /// Appends `bytes`; with `durable`, starts the writeback of each full step.
    fn append(&mut self, bytes: &[u8], durable: bool) -> Result<()> {
        self.file.write_all(bytes).map_err(|e| Error::io(e, "cannot write a staging file", &self.path))?;
        self.written += bytes.len() as u64;
        if durable && self.written - self.kicked >= WRITEBACK_STEP {
            // Only a hint: a write-back error comes back from the fsync at commit.
            let _ = self.file.start_writeback(self.kicked, self.written - self.kicked);
            self.kicked = self.written;
        }
        Ok(())
    }
}

/// A blob being written to a key from a stream (see [`FileStore::blob_writer`]).
///
/// Bytes go to a staging file as they come, chunk by chunk; nothing is visible
/// under the key before [`commit`](Self::commit). If a call fails, or the
/// writer is dropped (or [aborted](Self::abort)) before it commits, the staging
/// file is removed and the key keeps its old value. The caller holds the key's
/// lock from the open to the commit.
pub struct BlobWriter {
    store: Arc<FileStore>,
    /// The key file the commit replaces.
    target: PathBuf,
    /// `None` once committed, aborted or failed.
    staged: Option<Staged>,
    stream: ChunkStream,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("target", &self.target)
            .field("open", &self.staged.is_some())
            .field("size", &self.stream.size())
            .finish()
    }
}

impl FileStore {
    /// Starts writing a blob to `key` (its CKE) with metadata `meta`: creates
    /// the staging file and writes its head (placeholder header, meta segment).
    /// The blob is written with the store's compressor and encryption,
    /// serializer 0 and `FLAG_CHUNKED` (FORMAT.md §4.5).
    pub fn blob_writer(self: &Arc<Self>, key: &[u8], meta: &[u8]) -> Result<BlobWriter> {
        self.check_writable()?;
        cke::validate(key)?;
        let target = self.file_path(key);
        let options = self.options();
        let secret = options.encryption_key.as_deref();
        let encryptor = if secret.is_some() { ENCRYPTOR_AES } else { ENCRYPTOR_NONE };
        let codec = Codec { compressor: options.compressor, encryptor };
        let (stream, meta_stored) = ChunkStream::begin(codec, secret, key, meta, &mut OsRandom).map_err(|e| e.with_file(&target))?;

        let name = keyhash::file_name(key);
        let hex = &name[..name.len() - KEY_FILE_SUFFIX.len()];
        let stage_name = staging::staging_name(hex, std::process::id(), staging::next_seq());
        let path = self.dir.join(&stage_name);
        // Registered before it exists, so a concurrent sweep never takes it.
        let in_flight = InFlight::register(self.id, stage_name);
        let file = self.vfs.create_new(&path).map_err(|e| Error::io(e, "cannot create a staging file", &path))?;
        let mut writer = BlobWriter {
            store: Arc::clone(self),
            target,
            staged: Some(Staged { file, path, _in_flight: in_flight, written: 0, kicked: 0 }),
            stream,
        };
        let mut head = vec![0u8; HEADER_LEN];
        head.extend_from_slice(&meta_stored);
        writer.write_raw(&head)?;
        Ok(writer)
    }

    /// Opens the blob of `key` (its CKE) for range reads, or `None` if the key
    /// does not exist. Checks the header, the meta segment, the key, and (for
    /// a chunked blob) the trailer and the chunk table. A key that holds a
    /// value other than a blob (a serializer other than 0, or a log) is
    /// `ERR_NOT_BINARY`. A blob written before chunking (flags 0, serializer 0)
    /// is read whole into memory here.
    pub fn open_blob(self: &Arc<Self>, key: &[u8]) -> Result<Option<BlobReader>> {
        let Some((file, size, path)) = self.open_key(key)? else { return Ok(None) };
        let key_hash = keyhash::key_hash(key);
        let ctx = self.context(key_hash);
        let (header, meta, prefix) = Self::read_head(&*file, size, &path, &ctx)?;
        Self::check_key(&meta.key, key, &path)?;
        if header.serializer != 0 || header.is_log() {
            let what = if header.is_log() { "an append log".to_string() } else { format!("a value of serializer {}", header.serializer) };
            return Err(Error::new(ErrorCode::NotBinary, format!("the key holds {what}, not a blob")).with_file(&path));
        }
        let layout = {
            let read = reader_from(&*file, &prefix, &path);
            if header.flags == FLAG_CHUNKED {
                Layout::Chunked(ChunkIndex::read(&header, &read).map_err(|e| e.with_file(&path))?)
            } else {
                let start = (HEADER_LEN + header.meta_len as usize) as u64;
                let stored = read_vec(&read, start, header.value_len).map_err(|e| e.with_file(&path))?;
                Layout::Whole(format::decode_value_owned(&header, &ctx, stored).map_err(|e| e.with_file(&path))?)
            }
        };
        let entry =
            MetaEntry { key: meta.key, serializer: header.serializer, meta: meta.meta, file: path.display().to_string(), log: None };
        Ok(Some(BlobReader { store: Arc::clone(self), file, path, key_hash, header, meta: entry, layout }))
    }
}

impl BlobWriter {
    /// Writes stored bytes to the staging file; on failure the file is removed.
    fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let durable = self.store.options().sync_blob;
        let staged = self.staged.as_mut().ok_or_else(closed_error)?;
        if let Err(err) = staged.append(bytes, durable) {
            self.discard();
            return Err(err);
        }
        Ok(())
    }

    /// Removes the staging file, if there still is one.
    fn discard(&mut self) {
        if let Some(staged) = self.staged.take() {
            let Staged { file, path, _in_flight, .. } = staged;
            drop(file);
            // A failure here only leaves garbage for the next open's sweep.
            let _ = self.store.vfs.remove_file(&path);
        }
    }

    /// Appends `bytes` to the blob. A chunk is sealed and written once it is
    /// full and more bytes follow it; memory stays at about one chunk plus
    /// what the stored chunk takes. After an error the writer is closed and
    /// its staging file removed.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(staged) = self.staged.as_mut() else { return Err(closed_error()) };
        let options = self.store.options();
        let (secret, durable) = (options.encryption_key.as_deref(), options.sync_blob);
        let mut sink = |b: &[u8]| staged.append(b, durable);
        let result = self.stream.push(secret, bytes, &mut OsRandom, &mut sink);
        if let Err(e) = result {
            let e = e.with_file(&self.target);
            self.discard();
            return Err(e);
        }
        Ok(())
    }

    /// The plain bytes written so far.
    pub fn size(&self) -> u64 {
        self.stream.size()
    }

    /// The key file this writer replaces on commit.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Finishes the blob durably: seals the last chunk, writes the table, the
    /// trailer and the real header, fsyncs the staging file, renames it over
    /// the key file and fsyncs the directory (the fsyncs only with
    /// `sync_blob`). Returns when the new blob is durable. On error the
    /// staging file is removed (unless it was already renamed).
    pub fn commit(mut self) -> Result<()> {
        let result = self.finish();
        // Whatever was not renamed is removed: a failed write leaves no trace.
        self.discard();
        result
    }

    fn finish(&mut self) -> Result<()> {
        let store = Arc::clone(&self.store);
        let staged = self.staged.as_mut().ok_or_else(closed_error)?;
        store.check_writable()?;
        let secret = store.options().encryption_key.as_deref();
        let durable = store.options().sync_blob;
        let mut sink = |b: &[u8]| staged.append(b, durable);
        let (tail, header) = self.stream.finish(secret, &mut OsRandom, &mut sink).map_err(|e| e.with_file(&self.target))?;
        staged.append(&tail, durable)?;
        let (file, path) = (&mut staged.file, &staged.path);
        let write_err = |e: io::Error| Error::io(e, "cannot write a staging file", path);
        file.write_all_at(&header, 0).map_err(write_err)?;
        if store.options().sync_blob {
            file.sync().map_err(|e| store.fsync_failed(e, "cannot fsync a staging file", path))?;
        }
        store.vfs.rename(path, &self.target).map_err(|e| Error::io(e, "cannot rename a staging file over the key file", &self.target))?;
        // Renamed: nothing to remove any more.
        self.staged = None;
        if store.options().sync_blob {
            store.sync_dir()?;
        }
        Ok(())
    }

    /// Gives up the blob: removes the staging file; the key keeps its old
    /// value. Dropping the writer does the same.
    pub fn abort(mut self) {
        self.discard();
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.discard();
    }
}

fn closed_error() -> Error {
    Error::new(ErrorCode::InvalidArgument, "the blob writer is closed (committed, aborted, or failed earlier)")
}

// --- Reading ---

/// Where the chunks of a chunked value are, from its trailer and table.
#[derive(Clone, Debug)]
struct ChunkIndex {
    /// File offset of the value segment (`48 + m`).
    value_start: u64,
    /// The blob's plain length `P`.
    size: u64,
    /// Per chunk: its stored offset within the value segment; one more entry
    /// at the end (the stored chunks' total length).
    offsets: Vec<u64>,
    /// Per chunk: xxh3_64 of its stored bytes.
    sums: Vec<u64>,
}

impl ChunkIndex {
    /// Reads and checks the trailer and the table of a chunked value, in the
    /// order of FORMAT.md §4.5.
    fn read(header: &Header, read: &ReadAt<'_>) -> Result<ChunkIndex> {
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

    /// Reads chunk `i` and checks it: checksum, then decrypt, then decompress,
    /// then its plain length.
    fn chunk(&self, i: u64, codec: Codec, ctx: &SegmentContext<'_>, read: &ReadAt<'_>) -> Result<Vec<u8>> {
        let mut stored = Vec::new();
        self.read_stored(i, read, &mut stored)?;
        Ok(match self.decode(i, codec, ctx, &stored)? {
            std::borrow::Cow::Borrowed(_) => stored,
            std::borrow::Cow::Owned(plain) => plain,
        })
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
    fn range(&self, offset: u64, len: u64, codec: Codec, ctx: &SegmentContext<'_>, read: &ReadAt<'_>) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out = alloc(end.saturating_sub(offset))?;
        if offset >= end {
            return Ok(out);
        }
        let chunk = CHUNK_SIZE as u64;
        for i in offset / chunk..=(end - 1) / chunk {
            let plain = self.chunk(i, codec, ctx, read)?;
            let base = i * chunk;
            let from = (offset.max(base) - base) as usize;
            let to = (end.min(base + chunk) - base) as usize;
            out.extend_from_slice(&plain[from..to]);
        }
        Ok(out)
    }

    /// Fills `out` with the plain bytes from `offset` (`offset + out.len()`
    /// at most the blob's size), chunk by chunk, each checked before its
    /// bytes are used. A chunk stored as is (codec none) that `out` covers
    /// whole is read straight into `out` and checked there; the others go
    /// through one scratch buffer of at most a stored chunk. On error `out`
    /// may hold unchecked bytes.
    fn range_into(&self, offset: u64, out: &mut [u8], codec: Codec, ctx: &SegmentContext<'_>, read: &ReadAt<'_>) -> Result<()> {
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

/// An empty buffer able to hold `len` bytes, or `ERR_INVALID_ARGUMENT`.
fn alloc(len: u64) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    usize::try_from(len)
        .ok()
        .and_then(|n| v.try_reserve_exact(n).ok())
        .ok_or_else(|| Error::new(ErrorCode::InvalidArgument, format!("cannot allocate {len} bytes for a blob")))?;
    Ok(v)
}

/// `len` bytes at `offset`, read into a new buffer.
fn read_vec(read: &ReadAt<'_>, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = alloc(len)?;
    buf.resize(len as usize, 0);
    read(&mut buf, offset)?;
    Ok(buf)
}

/// A [`ReadAt`] over an open key file, served from `prefix` (the bytes at the
/// start of the file already read) where it can. A short file is corrupt.
fn reader_from<'a>(file: &'a dyn VfsFile, prefix: &'a [u8], path: &'a Path) -> impl Fn(&mut [u8], u64) -> Result<()> + 'a {
    move |buf: &mut [u8], offset: u64| {
        if let Some(src) = usize::try_from(offset).ok().and_then(|start| prefix.get(start..start.checked_add(buf.len())?)) {
            buf.copy_from_slice(src);
            return Ok(());
        }
        file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::corrupt("the key file ends early").with_file(path),
            _ => Error::io(e, "cannot read the key file", path),
        })
    }
}

/// The whole plain blob of a chunked file whose head is already checked, every
/// chunk verified (for [`FileStore::get`]). `prefix` holds the first bytes of
/// the file, already read.
pub(crate) fn read_chunked_value(
    file: &dyn VfsFile,
    prefix: &[u8],
    path: &Path,
    header: &Header,
    ctx: &SegmentContext<'_>,
) -> Result<Vec<u8>> {
    let read = reader_from(file, prefix, path);
    let index = ChunkIndex::read(header, &read).map_err(|e| e.with_file(path))?;
    index.range(0, index.size, header.codec, ctx, &read).map_err(|e| e.with_file(path))
}

/// The whole plain blob of a chunked value segment held in memory (for
/// [`format::parse_file`]): `file` is the whole key file, whose header and
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

/// How a [`BlobReader`] finds the blob's bytes.
#[derive(Debug)]
enum Layout {
    /// A chunked blob: read in ranges.
    Chunked(ChunkIndex),
    /// A blob written whole, before chunking: read into memory at open.
    Whole(Vec<u8>),
}

/// One version of a key's blob, open for range reads (see [`FileStore::open_blob`]).
///
/// It holds the key file open: a key replaced or deleted after the open does
/// not change what it reads. Every range read checks each chunk it touches
/// (checksum, authentication, decompression, length) before returning any
/// byte. It can be shared between threads.
pub struct BlobReader {
    store: Arc<FileStore>,
    file: Box<dyn VfsFile>,
    path: PathBuf,
    key_hash: u128,
    header: Header,
    meta: MetaEntry,
    layout: Layout,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader").field("path", &self.path).field("size", &self.size()).finish()
    }
}

impl BlobReader {
    /// The blob's length in bytes (`P`).
    pub fn size(&self) -> u64 {
        match &self.layout {
            Layout::Chunked(index) => index.size,
            Layout::Whole(bytes) => bytes.len() as u64,
        }
    }

    /// The key's metadata as stored with this version of the blob.
    pub fn meta(&self) -> &MetaEntry {
        &self.meta
    }

    /// The key file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the blob's plain bytes lie contiguously in the key file, when it
    /// is neither compressed nor encrypted (`48 + m`); otherwise `None`.
    pub fn plain_offset(&self) -> Option<u64> {
        (self.header.codec == Codec::NONE).then(|| HEADER_LEN as u64 + u64::from(self.header.meta_len))
    }

    /// Up to `len` bytes of the blob from `offset` (fewer only at the end of
    /// the blob). Reads only the chunks the range overlaps, each checked
    /// before any of its bytes is returned. An offset past the end is
    /// `ERR_INVALID_ARGUMENT`.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let size = self.size();
        if offset > size {
            return Err(Error::new(ErrorCode::InvalidArgument, format!("offset {offset} is past the end of the blob ({size} bytes)"))
                .with_file(&self.path));
        }
        match &self.layout {
            Layout::Whole(bytes) => {
                let start = offset as usize;
                let end = start.saturating_add(len).min(bytes.len());
                Ok(bytes[start..end].to_vec())
            }
            Layout::Chunked(index) => {
                let ctx = self.store.context(self.key_hash);
                let read = reader_from(&*self.file, &[], &self.path);
                index.range(offset, len as u64, self.header.codec, &ctx, &read).map_err(|e| e.with_file(&self.path))
            }
        }
    }

    /// Reads up to `buf.len()` bytes of the blob from `offset` into `buf`
    /// and returns how many (fewer only at the end of the blob), with the
    /// checks of [`read_at`](Self::read_at) but no new buffer for the result:
    /// a blob stored as is is read straight into `buf` (each whole chunk
    /// checked there); otherwise one stored chunk at a time goes through a
    /// scratch buffer. An offset past the end is `ERR_INVALID_ARGUMENT`. On
    /// error `buf` may hold bytes that were not checked: do not use them.
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let size = self.size();
        if offset > size {
            return Err(Error::new(ErrorCode::InvalidArgument, format!("offset {offset} is past the end of the blob ({size} bytes)"))
                .with_file(&self.path));
        }
        let n = usize::try_from(size - offset).unwrap_or(usize::MAX).min(buf.len());
        let out = &mut buf[..n];
        match &self.layout {
            Layout::Whole(bytes) => out.copy_from_slice(&bytes[offset as usize..offset as usize + n]),
            Layout::Chunked(index) => {
                let ctx = self.store.context(self.key_hash);
                let read = reader_from(&*self.file, &[], &self.path);
                index.range_into(offset, out, self.header.codec, &ctx, &read).map_err(|e| e.with_file(&self.path))?;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cke::{encode, Key};
    use crate::codec::FixedRandom;
    use crate::store::{Options, Write};
    use std::fs;

    const META: &[u8] = b"\x81\xa4type\xa6binary";
    const MIB: usize = CHUNK_SIZE;

    fn key(s: &str) -> Vec<u8> {
        encode(&Key::str(s))
    }

    fn pattern(n: usize, salt: u8) -> Vec<u8> {
        (0..n).map(|i| ((i * 7 + (i >> 10)) as u8) ^ salt).collect()
    }

    /// Bytes that LZ4 cannot shrink, so chunk sizes stay realistic.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn codecs() -> Vec<(&'static str, Options)> {
        let with = |compressor, key: Option<&str>| Options {
            compressor,
            encryption_key: key.map(|k| k.as_bytes().to_vec()),
            // The combinations share a directory: a keyed store there reads the
            // plaintext files of the others as a migration does (FORMAT.md §4.7).
            accept_plaintext: key.is_some(),
            ..Options::default()
        };
        vec![("none", with(0, None)), ("lz4", with(1, None)), ("aes", with(0, Some("s3cr3t"))), ("lz4+aes", with(1, Some("s3cr3t")))]
    }

    fn open(dir: &Path, options: Options) -> Arc<FileStore> {
        Arc::new(FileStore::open(dir, options).unwrap())
    }

    fn write_blob(store: &Arc<FileStore>, k: &[u8], blob: &[u8], piece: usize) {
        let mut w = store.blob_writer(k, META).unwrap();
        for p in blob.chunks(piece.max(1)) {
            w.write(p).unwrap();
        }
        assert_eq!(w.size(), blob.len() as u64);
        w.commit().unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    fn staging_names(dir: &Path) -> Vec<String> {
        names(dir).into_iter().filter(|n| staging::parse_staging_name(n).is_some()).collect()
    }

    #[test]
    fn chunk_counts() {
        let m = MIB as u64;
        for (p, c) in [(0, 1), (1, 1), (m - 1, 1), (m, 1), (m + 1, 2), (2 * m, 2), (2 * m + 1, 3), (u64::MAX, 1 << 44)] {
            assert_eq!(chunk_count(p), c, "P = {p}");
        }
    }

    #[test]
    fn every_codec_round_trips_every_size() {
        let tmp = tempfile::tempdir().unwrap();
        let sizes = [0, 1, MIB - 1, MIB, MIB + 1, 3 * MIB + MIB / 2];
        for (name, options) in codecs() {
            let store = open(tmp.path(), options.clone());
            for &n in &sizes {
                let ctx = format!("{name}, {n} bytes");
                let k = key(&format!("{name}-{n}"));
                let blob = pattern(n, 0x5a);
                write_blob(&store, &k, &blob, 64 << 10);
                let entry = store.get(&k).unwrap().unwrap();
                assert_eq!((entry.serializer, entry.meta.as_slice()), (0, META), "{ctx}");
                assert!(entry.value == blob, "{ctx}: get");
                let r = store.open_blob(&k).unwrap().unwrap();
                assert_eq!(r.size(), n as u64, "{ctx}");
                assert_eq!(r.meta().key, k);
                assert_eq!(r.meta().meta, META);
                assert!(r.read_at(0, n).unwrap() == blob, "{ctx}: read_at whole");
                assert!(r.read_at(0, usize::MAX).unwrap() == blob, "{ctx}: read past the end is cut short");
                let bytes = fs::read(store.file_path(&k)).unwrap();
                let header = Header::decode(&bytes, bytes.len() as u64).unwrap();
                assert_eq!((header.flags, header.serializer), (FLAG_CHUNKED, 0), "{ctx}");
                assert_eq!(
                    (header.codec.compressor, header.codec.encryptor),
                    (options.compressor, u8::from(options.encryption_key.is_some()))
                );
                let trailer = &bytes[bytes.len() - 12..];
                assert_eq!(u64::from_le_bytes(trailer[..8].try_into().unwrap()), n as u64);
                assert_eq!(u64::from(u32::from_le_bytes(trailer[8..].try_into().unwrap())), chunk_count(n as u64));
                if name == "none" {
                    let at = r.plain_offset().unwrap() as usize;
                    assert!(&bytes[at..at + n] == blob.as_slice(), "{ctx}: plain bytes contiguous at plainOffset");
                } else {
                    assert_eq!(r.plain_offset(), None);
                }
                // parse_file reads the same blob.
                let pctx = store.context(keyhash::key_hash(&k));
                assert!(format::parse_file(&bytes, &pctx).unwrap().value == blob, "{ctx}: parse_file");
            }
            assert_eq!(staging_names(tmp.path()), Vec::<String>::new());
        }
    }

    #[test]
    fn range_reads_at_chunk_boundaries() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, options) in codecs() {
            let store = open(tmp.path(), options);
            let k = key(name);
            let n = 2 * MIB + 1000;
            let blob = pattern(n, 3);
            write_blob(&store, &k, &blob, MIB / 3);
            let r = store.open_blob(&k).unwrap().unwrap();
            for (off, len) in [
                (0, 0),
                (0, 1),
                (MIB - 1, 1),
                (MIB - 1, 2),
                (MIB, 1),
                (MIB, MIB),
                (MIB - 10, MIB + 20),
                (2 * MIB, 1000),
                (2 * MIB - 1, 1001),
                (n - 1, 1),
                (n - 1, 10),
                (n, 0),
                (n, 5),
                (12345, 3 * MIB),
            ] {
                let want = &blob[off.min(n)..(off + len).min(n)];
                assert!(r.read_at(off as u64, len).unwrap() == want, "{name}: range {off}+{len}");
            }
            let err = r.read_at(n as u64 + 1, 1).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument);
            assert_eq!(err.file(), Some(store.file_path(&k).as_path()));
        }
    }

    /// `read_into` gives what `read_at` gives, in the caller's buffer, and
    /// writes nothing past the count it returns.
    #[test]
    fn read_into_at_chunk_boundaries_and_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, options) in codecs() {
            let store = open(tmp.path(), options);
            let k = key(name);
            let n = 2 * MIB + 1000;
            let blob = pattern(n, 4);
            write_blob(&store, &k, &blob, MIB / 3);
            let r = store.open_blob(&k).unwrap().unwrap();
            for (off, len) in [
                (0, 0),
                (0, 1),
                (0, MIB),
                (0, MIB + 1),
                (MIB - 1, 1),
                (MIB - 1, 2),
                (MIB, MIB),
                (MIB - 10, MIB + 20),
                (1, 2 * MIB),
                (2 * MIB, 1000),
                (2 * MIB, 5000),
                (2 * MIB - 1, 1001),
                (n - 1, 1),
                (n - 1, 10),
                (n, 0),
                (n, 5),
                (0, n),
                (0, 3 * MIB),
                (12345, 3 * MIB),
            ] {
                let ctx = format!("{name}: {len} bytes at {off}");
                let mut buf = vec![0xEEu8; len + 7];
                let got = r.read_into(off as u64, &mut buf[..len]).unwrap();
                let want = &blob[off.min(n)..(off + len).min(n)];
                assert_eq!(got, want.len(), "{ctx}");
                assert!(&buf[..got] == want, "{ctx}: the bytes");
                assert!(buf[got..].iter().all(|&b| b == 0xEE), "{ctx}: nothing written past the count");
            }
            // A whole blob, piece by piece, as a stream reads it.
            let mut out = Vec::new();
            let mut piece = vec![0u8; MIB];
            loop {
                let got = r.read_into(out.len() as u64, &mut piece).unwrap();
                if got == 0 {
                    break;
                }
                out.extend_from_slice(&piece[..got]);
            }
            assert!(out == blob, "{name}: streamed whole");
            let err = r.read_into(n as u64 + 1, &mut piece).unwrap_err();
            assert_eq!((err.code(), err.file()), (ErrorCode::InvalidArgument, Some(store.file_path(&k).as_path())));
        }
        // An empty blob, and an old raw blob written whole (in a plaintext store).
        let store = open(&tmp.path().join("plain"), Options::default());
        write_blob(&store, &key("empty"), &[], 1);
        let r = store.open_blob(&key("empty")).unwrap().unwrap();
        assert_eq!(r.read_into(0, &mut [0u8; 10]).unwrap(), 0);
        let old = noise(3000, 6);
        store.put(&[Write { key: &key("old"), serializer: 0, meta: META, value: &old }]).unwrap();
        let r = store.open_blob(&key("old")).unwrap().unwrap();
        let mut buf = [0u8; 100];
        assert_eq!(r.read_into(2950, &mut buf).unwrap(), 50);
        assert_eq!(buf[..50], old[2950..]);
        assert_eq!(r.read_into(3000, &mut buf).unwrap(), 0);
        assert_eq!(r.read_into(3001, &mut buf).unwrap_err().code(), ErrorCode::InvalidArgument);
    }

    /// A damaged chunk fails `read_into` as it fails `read_at`, whether it is
    /// read straight into the buffer (codec none, a whole chunk) or not.
    #[test]
    fn read_into_checks_every_chunk() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, options) in codecs() {
            let store = open(tmp.path(), options);
            let k = key(name);
            let blob = noise(2 * MIB + 10, 3);
            write_blob(&store, &k, &blob, MIB);
            let path = store.file_path(&k);
            let file = fs::read(&path).unwrap();
            let (_, ends, _) = layout_of(&file);
            // One byte in the middle of chunk 1.
            let mut bad = file.clone();
            bad[(ends[0] + ends[1]) / 2] ^= 1;
            fs::write(&path, &bad).unwrap();
            let r = store.open_blob(&k).unwrap().unwrap();
            let mut buf = vec![0u8; 3 * MIB];
            for (off, len) in [(MIB, MIB), (MIB + 5, 10), (0, 3 * MIB), (MIB - 1, 2)] {
                let e = r.read_into(off as u64, &mut buf[..len]).unwrap_err();
                assert_eq!((e.code(), e.file()), (ErrorCode::Corrupt, Some(path.as_path())), "{name}: {len} at {off}");
            }
            // The chunks around it still read.
            assert_eq!(r.read_into(0, &mut buf[..MIB]).unwrap(), MIB);
            assert!(buf[..MIB] == blob[..MIB], "{name}");
            assert_eq!(r.read_into(2 * MIB as u64, &mut buf).unwrap(), 10);
            assert!(buf[..10] == blob[2 * MIB..], "{name}");
        }
    }

    #[test]
    fn odd_sized_pieces_write_the_same_file() {
        let tmp = tempfile::tempdir().unwrap();
        let n = 3 * MIB + 17;
        let blob = pattern(n, 9);
        for (name, options) in codecs().into_iter().take(2) {
            let store = open(tmp.path(), options.clone());
            let codec = Codec { compressor: options.compressor, encryptor: 0 };
            let want = encode_chunked_file(codec, None, &key("k"), META, &blob, &mut FixedRandom::new(vec![])).unwrap();
            // 1-byte pieces only for a smaller prefix: they are slow in a debug build.
            for piece in [7, 4096 + 3, MIB - 1, MIB, MIB + 1, 3 * MIB, n] {
                write_blob(&store, &key("k"), &blob, piece);
                assert!(fs::read(store.file_path(&key("k"))).unwrap() == want, "{name}: pieces of {piece}");
            }
            let small = pattern(MIB + 5, 1);
            let want = encode_chunked_file(codec, None, &key("s"), META, &small, &mut FixedRandom::new(vec![])).unwrap();
            let mut w = store.blob_writer(&key("s"), META).unwrap();
            for b in &small {
                w.write(std::slice::from_ref(b)).unwrap();
            }
            w.write(&[]).unwrap();
            w.commit().unwrap();
            assert!(fs::read(store.file_path(&key("s"))).unwrap() == want, "{name}: 1-byte pieces");
        }
        // Encrypted: the same layout, other salts.
        let (_, aes) = codecs().remove(3);
        let store = open(tmp.path(), aes);
        write_blob(&store, &key("e"), &blob, 7 * 1024 + 1);
        assert!(store.get(&key("e")).unwrap().unwrap().value == blob);
    }

    /// A small two-chunk file: a compressible blob of 1 MiB + 100 with LZ4
    /// (and AES), so that every byte of the file can be flipped.
    fn small_two_chunk_file(options: &Options) -> (tempfile::TempDir, Arc<FileStore>, Vec<u8>, Vec<u8>) {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path(), options.clone());
        let blob = pattern(MIB + 100, 0);
        write_blob(&store, &key("k"), &blob, MIB);
        let file = fs::read(store.file_path(&key("k"))).unwrap();
        assert!(file.len() < 64 << 10, "{} bytes", file.len());
        (tmp, store, blob, file)
    }

    /// Where the parts of a chunked file lie: (value start, chunk ends, table start).
    fn layout_of(file: &[u8]) -> (usize, Vec<usize>, usize) {
        let header = Header::decode(file, file.len() as u64).unwrap();
        let start = HEADER_LEN + header.meta_len as usize;
        let c = u32::from_le_bytes(file[file.len() - 4..].try_into().unwrap()) as usize;
        let table = file.len() - 12 - 12 * c;
        let mut ends = Vec::new();
        let mut at = start;
        for i in 0..c {
            at += u32::from_le_bytes(file[table + 12 * i..table + 12 * i + 4].try_into().unwrap()) as usize;
            ends.push(at);
        }
        (start, ends, table)
    }

    #[test]
    fn every_flipped_byte_is_an_error_never_wrong_bytes() {
        for (name, options) in codecs().into_iter().filter(|(_, o)| o.compressor == 1) {
            let (_tmp, store, blob, file) = small_two_chunk_file(&options);
            let path = store.file_path(&key("k"));
            let (start, ends, _) = layout_of(&file);
            let chunk_ranges = [(0, MIB), (MIB, 100)];
            let mut full_checks = 0;
            for i in 0..file.len() {
                let mut f = file.clone();
                f[i] ^= 0x10;
                fs::write(&path, &f).unwrap();
                let ctx = format!("{name}: byte {i} of {}", file.len());
                let in_chunk = (0..ends.len()).find(|&c| i >= if c == 0 { start } else { ends[c - 1] } && i < ends[c]);
                let reader = match store.open_blob(&key("k")) {
                    Err(e) => {
                        assert!(
                            matches!(
                                e.code(),
                                ErrorCode::Corrupt
                                    | ErrorCode::Decrypt
                                    | ErrorCode::KeyMismatch
                                    | ErrorCode::UnsupportedCodec
                                    | ErrorCode::UnsupportedVersion
                                    | ErrorCode::NotBinary
                            ),
                            "{ctx}: {e}"
                        );
                        assert_eq!(e.file(), Some(path.as_path()), "{ctx}");
                        assert!(in_chunk.is_none(), "{ctx}: a damaged chunk fails the open, not its read");
                        continue;
                    }
                    Ok(r) => r.unwrap(),
                };
                let c = in_chunk.unwrap_or_else(|| panic!("{ctx}: a damaged head or table opened"));
                // The damaged chunk never reads; a cheap check for most bytes,
                // the full check (every chunk, and get) for some.
                let (off, len) = chunk_ranges[c];
                let e = reader.read_at(off as u64, len).unwrap_err();
                assert_eq!(e.code(), ErrorCode::Corrupt, "{ctx}: {e}");
                assert_eq!(e.file(), Some(path.as_path()), "{ctx}");
                if i % 61 == 0 || i + 1 == ends[c] {
                    full_checks += 1;
                    for (off, len) in chunk_ranges {
                        if let Ok(bytes) = reader.read_at(off as u64, len) {
                            assert!(bytes == blob[off..off + len], "{ctx}: wrong bytes");
                        }
                    }
                    assert_eq!(store.get(&key("k")).unwrap_err().code(), ErrorCode::Corrupt, "{ctx}: get");
                }
            }
            assert!(full_checks > 10);
        }
    }

    /// Rewrites the table and trailer of a chunked file from `chunks` (stored
    /// bytes) and `size`, and fixes every checksum: a deliberate edit.
    fn rebuild(file: &[u8], chunks: &[&[u8]], size: u64) -> Vec<u8> {
        let (start, _, _) = layout_of(file);
        let mut out = file[..start].to_vec();
        let mut tail = Vec::new();
        for c in chunks {
            out.extend_from_slice(c);
            tail.extend_from_slice(&(c.len() as u32).to_le_bytes());
            tail.extend_from_slice(&xxh3_64(c).to_le_bytes());
        }
        tail.extend_from_slice(&size.to_le_bytes());
        tail.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
        out.extend_from_slice(&tail);
        let mut header = Header::decode(file, file.len() as u64).unwrap();
        header.value_len = (out.len() - start) as u64;
        header.value_checksum = xxh3_64(&tail);
        out[..HEADER_LEN].copy_from_slice(&header.encode());
        out
    }

    #[test]
    fn moved_dropped_or_reordered_chunks_do_not_authenticate() {
        let (_, options) = codecs().remove(3);
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path(), options);
        let blob = pattern(3 * MIB, 0);
        write_blob(&store, &key("k"), &blob, MIB);
        let path = store.file_path(&key("k"));
        let file = fs::read(&path).unwrap();
        let (start, ends, _) = layout_of(&file);
        let chunk = |i: usize| &file[if i == 0 { start } else { ends[i - 1] }..ends[i]];
        // The rebuild itself is faithful.
        fs::write(&path, rebuild(&file, &[chunk(0), chunk(1), chunk(2)], 3 * MIB as u64)).unwrap();
        assert!(store.get(&key("k")).unwrap().unwrap().value == blob);
        for (what, chunks, size) in [
            ("dropped from the end", vec![chunk(0), chunk(1)], 2 * MIB as u64),
            ("reordered", vec![chunk(1), chunk(0), chunk(2)], 3 * MIB as u64),
            ("a middle chunk as the last", vec![chunk(0), chunk(1), chunk(1)], 3 * MIB as u64),
        ] {
            fs::write(&path, rebuild(&file, &chunks, size)).unwrap();
            assert_eq!(store.get(&key("k")).unwrap_err().code(), ErrorCode::Decrypt, "{what}");
        }
        // A chunk of another key's blob does not authenticate here.
        write_blob(&store, &key("other"), &blob, MIB);
        let other = fs::read(store.file_path(&key("other"))).unwrap();
        let (o_start, o_ends, _) = layout_of(&other);
        fs::write(&path, rebuild(&file, &[&other[o_start..o_ends[0]], chunk(1), chunk(2)], 3 * MIB as u64)).unwrap();
        let r = store.open_blob(&key("k")).unwrap().unwrap();
        assert_eq!(r.read_at(0, 10).unwrap_err().code(), ErrorCode::Decrypt);
        assert!(r.read_at(MIB as u64, MIB).unwrap() == blob[MIB..2 * MIB], "the other chunks still read");
    }

    #[test]
    fn truncations_and_trailer_edits_are_corrupt() {
        let (_, options) = codecs().remove(1);
        let (_tmp, store, _blob, file) = small_two_chunk_file(&options);
        let path = store.file_path(&key("k"));
        for n in (0..file.len()).chain([file.len() + 1]) {
            let mut f = file.clone();
            f.resize(n, 0);
            fs::write(&path, &f).unwrap();
            assert_eq!(store.open_blob(&key("k")).unwrap_err().code(), ErrorCode::Corrupt, "length {n}");
            assert_eq!(store.get(&key("k")).unwrap_err().code(), ErrorCode::Corrupt, "length {n}");
        }
        // Deliberate edits of the trailer that keep its checksum right.
        let (start, ends, _) = layout_of(&file);
        let chunks = [&file[start..ends[0]], &file[ends[0]..ends[1]]];
        for (what, size, count_fix) in [
            ("a length that needs another chunk count", 3 * MIB as u64, None),
            ("a chunk count that does not fit the length", MIB as u64 + 100, Some(3u32)),
            ("a last chunk of another length", MIB as u64 + 99, None),
            ("an empty blob with two chunks", 0, None),
        ] {
            let mut f = rebuild(&file, &chunks, size);
            if let Some(c) = count_fix {
                let at = f.len() - 4;
                f[at..].copy_from_slice(&c.to_le_bytes());
                let (_, _, table) = layout_of(&file);
                let header_sum = xxh3_64(&f[table..]);
                let mut h = Header::decode(&f, f.len() as u64).unwrap();
                h.value_checksum = header_sum;
                f[..HEADER_LEN].copy_from_slice(&h.encode());
            }
            fs::write(&path, &f).unwrap();
            let err = match store.open_blob(&key("k")) {
                Err(e) => e,
                Ok(r) => r.unwrap().read_at(0, usize::MAX).unwrap_err(),
            };
            assert_eq!(err.code(), ErrorCode::Corrupt, "{what}: {err}");
            assert_eq!(store.get(&key("k")).unwrap_err().code(), ErrorCode::Corrupt, "{what}");
        }
    }

    #[test]
    fn other_values_are_not_binary_and_old_raw_blobs_read() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path(), Options::default());
        assert!(store.open_blob(&key("missing")).unwrap().is_none());
        store.put(&[Write { key: &key("msgpack"), serializer: 1, meta: META, value: b"\xa3abc" }]).unwrap();
        let err = store.open_blob(&key("msgpack")).unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotBinary);
        assert_eq!(err.file(), Some(store.file_path(&key("msgpack")).as_path()));
        // A raw blob written whole (flags 0), as before chunking.
        let old = noise(3000, 5);
        store.put(&[Write { key: &key("old"), serializer: 0, meta: META, value: &old }]).unwrap();
        let r = store.open_blob(&key("old")).unwrap().unwrap();
        assert_eq!(r.size(), 3000);
        assert_eq!(r.read_at(1000, 10).unwrap(), old[1000..1010]);
        let bytes = fs::read(store.file_path(&key("old"))).unwrap();
        let m = Header::decode(&bytes, bytes.len() as u64).unwrap().meta_len;
        assert_eq!(r.plain_offset(), Some(HEADER_LEN as u64 + u64::from(m)));
        // A log file (flags 2) is not a blob.
        let path = store.file_path(&key("old"));
        let mut f = fs::read(&path).unwrap();
        let mut h = Header::decode(&f, f.len() as u64).unwrap();
        h.flags = format::FLAG_LOG;
        h.value_len = 0;
        h.value_checksum = xxh3_64(b"");
        f.truncate(f.len() - 3000);
        f[..HEADER_LEN].copy_from_slice(&h.encode());
        fs::write(&path, &f).unwrap();
        assert_eq!(store.open_blob(&key("old")).unwrap_err().code(), ErrorCode::NotBinary);
        // Invalid keys.
        assert_eq!(store.open_blob(b"\x09").unwrap_err().code(), ErrorCode::InvalidKey);
        assert_eq!(store.blob_writer(b"\x09", META).unwrap_err().code(), ErrorCode::InvalidKey);
        // A wrong encryption key cannot read an encrypted blob.
        let enc = open(tmp.path(), codecs().remove(2).1);
        write_blob(&enc, &key("secret"), &pattern(MIB + 1, 0), MIB);
        // (Without its key check, as a store from before key checks: with it the open fails.)
        assert_eq!(FileStore::open(tmp.path(), Options::default()).unwrap_err().code(), ErrorCode::Decrypt);
        fs::remove_file(tmp.path().join(crate::codec::keycheck::KEY_CHECK_FILE_NAME)).unwrap();
        let plain = open(tmp.path(), Options::default());
        assert_eq!(plain.open_blob(&key("secret")).unwrap_err().code(), ErrorCode::Decrypt);
        assert_eq!(plain.get(&key("secret")).unwrap_err().code(), ErrorCode::Decrypt);
    }

    #[test]
    fn abort_drop_and_failure_leave_no_staging_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path(), Options::default());
        write_blob(&store, &key("k"), b"old", 10);
        let mut w = store.blob_writer(&key("k"), META).unwrap();
        w.write(&pattern(MIB + 5, 0)).unwrap();
        assert_eq!(staging_names(tmp.path()).len(), 1);
        w.abort();
        assert_eq!(staging_names(tmp.path()), Vec::<String>::new());
        let mut w = store.blob_writer(&key("k"), META).unwrap();
        w.write(b"x").unwrap();
        drop(w);
        assert_eq!(names(tmp.path()), vec![keyhash::file_name(&key("k"))], "only the key file");
        assert_eq!(store.get(&key("k")).unwrap().unwrap().value, b"old");
        // A store opened meanwhile does not sweep a live writer's staging file.
        let mut w = store.blob_writer(&key("k"), META).unwrap();
        w.write(b"new").unwrap();
        let _other = open(tmp.path(), Options::default());
        w.commit().unwrap();
        assert_eq!(store.get(&key("k")).unwrap().unwrap().value, b"new");
        assert_eq!(staging_names(tmp.path()), Vec::<String>::new());
    }

    #[test]
    fn a_reader_keeps_its_version_while_a_writer_replaces_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path(), codecs().remove(3).1);
        let (old, new) = (pattern(2 * MIB + 7, 1), pattern(MIB + 3, 2));
        write_blob(&store, &key("k"), &old, MIB);
        let reader = Arc::new(store.open_blob(&key("k")).unwrap().unwrap());
        let mut w = store.blob_writer(&key("k"), META).unwrap();
        w.write(&new).unwrap();
        // Reads from another thread while the writer commits.
        let r2 = Arc::clone(&reader);
        let t = std::thread::spawn(move || (0..3).map(|i| r2.read_at(i * MIB as u64, MIB).unwrap()).collect::<Vec<_>>().concat());
        w.commit().unwrap();
        assert!(t.join().unwrap() == old);
        assert!(reader.read_at(0, usize::MAX).unwrap() == old, "the reader still sees the old blob");
        assert_eq!(reader.size(), old.len() as u64);
        assert!(store.open_blob(&key("k")).unwrap().unwrap().read_at(0, usize::MAX).unwrap() == new);
        store.delete(&[&key("k")]).unwrap();
        assert!(reader.read_at(MIB as u64, 5).unwrap() == old[MIB..MIB + 5], "even after a delete");
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<BlobReader>();
        assert_send_sync::<BlobWriter>();
    }

    // --- Crashes and I/O errors on the simulated file system. ---

    mod sim {
        use super::*;
        use crate::sim::{SimFs, Writeback};
        use crate::vfs::Vfs;
        use std::time::Instant;

        fn setup(seed: u64, dir: &str) -> (SimFs, PathBuf) {
            let (fs, dir) = (SimFs::new(seed), PathBuf::from(dir));
            fs.create_dir_all(&dir).unwrap();
            for d in dir.ancestors() {
                fs.sync_dir(d).unwrap();
            }
            (fs, dir)
        }

        fn open_sim(fs: &SimFs, dir: &Path, options: &Options) -> Result<Arc<FileStore>> {
            FileStore::open_with(Arc::new(fs.clone()), dir, options.clone()).map(Arc::new)
        }

        /// Writes `blob` in pieces of 700 KiB (so chunks are sealed mid-write).
        fn try_write(store: &Arc<FileStore>, blob: &[u8]) -> Result<()> {
            let mut w = store.blob_writer(&key("b"), META)?;
            for p in blob.chunks(700 << 10) {
                w.write(p)?;
            }
            w.commit()
        }

        fn staging(fs: &SimFs, dir: &Path) -> usize {
            let names = fs.read_dir(dir).unwrap();
            names.iter().filter(|n| n.to_str().is_some_and(|n| staging::parse_staging_name(n).is_some())).count()
        }

        fn crash_at_every_step(options: Options, writebacks: &[(Writeback, u64)], dir: &str) {
            let started = Instant::now();
            let (old, new) = if options.compressor == 0 {
                (noise(MIB + MIB / 2, 1), noise(2 * MIB + 3, 2))
            } else {
                // Compressible, so that encryption in a debug build stays quick.
                (pattern(MIB + MIB / 2, 1), pattern(2 * MIB + 3, 2))
            };
            // The steps of the blob write alone.
            let (fs, root) = setup(0, dir);
            let store = open_sim(&fs, &root, &options).unwrap();
            try_write(&store, &old).unwrap();
            let before = fs.steps();
            try_write(&store, &new).unwrap();
            let total = fs.steps() - before;
            assert!(total >= 8, "{total} steps");
            let mut runs = 0;
            for n in 0..=total {
                for &(writeback, seed) in writebacks {
                    let ctx = format!("crash at step {n} of {total}, {writeback:?}, seed {seed}");
                    let (fs, dir) = setup(seed, dir);
                    let store = open_sim(&fs, &dir, &options).unwrap();
                    try_write(&store, &old).unwrap();
                    fs.fail_after(n);
                    let acked = try_write(&store, &new).is_ok();
                    assert_eq!(acked, n >= total, "{ctx}");
                    drop(store);
                    fs.crash(writeback);
                    let store = open_sim(&fs, &dir, &options).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
                    let got = store.get(&key("b")).unwrap_or_else(|e| panic!("{ctx}: get: {e}")).unwrap().value;
                    if acked {
                        assert!(got == new, "{ctx}: an acknowledged blob was lost");
                    } else {
                        assert!(got == old || got == new, "{ctx}: the key holds neither blob ({} bytes)", got.len());
                    }
                    let r = store.open_blob(&key("b")).unwrap().unwrap();
                    assert!(r.read_at(0, usize::MAX).unwrap() == got, "{ctx}: the reader agrees with get");
                    assert_eq!(staging(&fs, &dir), 0, "{ctx}: staging files left after reopen");
                    // The recovered store takes blobs.
                    try_write(&store, b"after").unwrap();
                    runs += 1;
                }
            }
            eprintln!("blob crash runs: {runs} over {} crash points in {:?}", total + 1, started.elapsed());
        }

        #[test]
        fn a_blob_write_survives_a_crash_at_every_step() {
            let options = Options { sync_blob: true, ..Options::default() };
            crash_at_every_step(
                options,
                &[
                    (Writeback::None, 1),
                    (Writeback::Unordered, 2),
                    (Writeback::Unordered, 3),
                    (Writeback::Ordered, 4),
                    (Writeback::Ordered, 5),
                ],
                "/sim/blob-plain",
            );
        }

        #[test]
        fn a_compressed_encrypted_blob_write_survives_a_crash_at_every_step() {
            let options = Options { sync_blob: true, compressor: 1, encryption_key: Some(b"k".to_vec()), ..Options::default() };
            crash_at_every_step(options, &[(Writeback::Unordered, 6), (Writeback::Ordered, 7)], "/sim/blob-codec");
        }

        /// A lone I/O error at any step of a blob write: the write fails,
        /// leaves no staging file, the key keeps a whole blob, and after a
        /// failed fsync the store refuses writes.
        #[test]
        fn a_lone_io_error_fails_the_blob_write_and_leaves_no_staging_file() {
            let options = Options { sync_blob: true, ..Options::default() };
            let (old, new) = (noise(MIB + 1, 1), noise(2 * MIB + 3, 2));
            let (fs, dir) = setup(0, "/sim/blob-eio");
            let store = open_sim(&fs, &dir, &options).unwrap();
            try_write(&store, &old).unwrap();
            let before = fs.steps();
            try_write(&store, &new).unwrap();
            let total = fs.steps() - before;
            for n in 0..total {
                let (fs, dir) = setup(1, "/sim/blob-eio");
                let store = open_sim(&fs, &dir, &options).unwrap();
                try_write(&store, &old).unwrap();
                fs.fail_once(n);
                let result = try_write(&store, &new);
                let call = fs.failed_call().unwrap();
                let ctx = format!("EIO at step {n} of {total} ({call})");
                let got = store.get(&key("b")).unwrap().unwrap().value;
                match result {
                    Ok(()) => panic!("{ctx}: the write succeeded"),
                    Err(e) if call == "sync" || call == "sync_dir" => {
                        assert_eq!(e.code(), ErrorCode::Fsync, "{ctx}");
                        assert_eq!(try_write(&store, b"x").unwrap_err().code(), ErrorCode::StorePoisoned, "{ctx}");
                    }
                    Err(e) => {
                        assert_eq!(e.code(), ErrorCode::Io, "{ctx}: {e}");
                        assert!(got == old, "{ctx}: the old blob is kept");
                    }
                }
                assert!(got == old || got == new, "{ctx}");
                assert_eq!(staging(&fs, &dir), 0, "{ctx}: a staging file is left");
                fs.crash(Writeback::None);
                let store = open_sim(&fs, &dir, &options).unwrap();
                let got = store.get(&key("b")).unwrap().unwrap().value;
                assert!(got == old || got == new, "{ctx}: after a crash");
            }
        }
    }
}
