//! How a segment's plain bytes become its stored bytes (FORMAT.md §4.4):
//! `stored = encrypt(compress(plain))`, and back.
//!
//! The header names the compressor and the encryptor by id. A reader uses the
//! ids of the file, so a store reads files written with other settings; the
//! encryption key comes from the store's options.

use std::borrow::Cow;

use crate::error::{Error, ErrorCode, Result};

pub mod aes;
pub mod lz4;

/// Compressor id 0: none.
pub const COMPRESSOR_NONE: u8 = 0;
/// Compressor id 1: LZ4 frame.
pub const COMPRESSOR_LZ4: u8 = 1;
/// Encryptor id 0: none.
pub const ENCRYPTOR_NONE: u8 = 0;
/// Encryptor id 1: AES-256-CBC + HMAC-SHA256, HKDF-derived keys.
pub const ENCRYPTOR_AES: u8 = 1;

/// Which segment of a file: part of what the MAC authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SegmentKind {
    /// The meta segment (the key and the metadata).
    Meta = 0,
    /// The value segment.
    Value = 1,
    /// A chunk of a chunked blob that is not the last (FORMAT.md §4.5).
    Chunk = 2,
    /// The last chunk of a chunked blob.
    FinalChunk = 3,
    /// A log record's payload (FORMAT.md §4.6).
    Record = 4,
}

/// Where the random salts and IVs of encryption come from.
pub trait Randomness {
    /// Fills `buf` with unpredictable bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<()>;
}

/// The operating system's random source.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRandom;

impl Randomness for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        getrandom::getrandom(buf).map_err(|e| Error::new(ErrorCode::Io, format!("the OS random source failed: {e}")))
    }
}

/// Fixed bytes, consumed in order: for golden test vectors only. Never use it
/// to write real data, since salts and IVs must never repeat.
#[derive(Clone, Debug)]
pub struct FixedRandom {
    bytes: Vec<u8>,
    pos: usize,
}

impl FixedRandom {
    /// Random bytes that are `bytes`, in order, then an error.
    pub fn new(bytes: Vec<u8>) -> FixedRandom {
        FixedRandom { bytes, pos: 0 }
    }
}

impl Randomness for FixedRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        let end = self.pos + buf.len();
        let src = self.bytes.get(self.pos..end).ok_or_else(|| Error::new(ErrorCode::InvalidArgument, "fixed randomness used up"))?;
        buf.copy_from_slice(src);
        self.pos = end;
        Ok(())
    }
}

/// The compressor and encryptor of a file's segments, by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    /// Compressor id.
    pub compressor: u8,
    /// Encryptor id.
    pub encryptor: u8,
}

/// What encoding and decoding a segment needs besides its bytes.
#[derive(Clone, Copy, Debug)]
pub struct SegmentContext<'a> {
    /// The user's encryption key, if the store has one.
    pub secret: Option<&'a [u8]>,
    /// XXH3-128 of the key's CKE (the file name's hash).
    pub key_hash: u128,
    /// With a `secret`: read files that are not encrypted (encryptor id 0)
    /// too. Only for an explicit migration of a plaintext store; otherwise an
    /// encrypted store refuses them with `ERR_DECRYPT` (FORMAT.md §4.3),
    /// since anyone who can write the directory could plant them.
    pub accept_plaintext: bool,
}

impl SegmentContext<'_> {
    /// Fails with `ERR_DECRYPT` when the store has a key, the file (by its
    /// header's codec) is not encrypted with the store's encryptor, and
    /// plaintext is not accepted for a migration.
    pub fn check_encrypted(&self, codec: Codec) -> Result<()> {
        if self.secret.is_some() && codec.encryptor != ENCRYPTOR_AES && !self.accept_plaintext {
            return Err(Error::new(
                ErrorCode::Decrypt,
                format!(
                    "the file is not encrypted (encryptor id {}) and the store is: refused, since anyone who can write the directory could have planted it (open with acceptPlaintext to migrate a plaintext store)",
                    codec.encryptor
                ),
            ));
        }
        Ok(())
    }
}

impl Codec {
    /// No compression, no encryption: `stored = plain`.
    pub const NONE: Codec = Codec { compressor: COMPRESSOR_NONE, encryptor: ENCRYPTOR_NONE };

    /// Fails with `ERR_UNSUPPORTED_CODEC` unless this build has both ids.
    pub fn check(&self) -> Result<()> {
        if self.compressor > COMPRESSOR_LZ4 {
            return Err(Error::new(
                ErrorCode::UnsupportedCodec,
                format!("compressor id {} is not supported by this build", self.compressor),
            ));
        }
        if self.encryptor > ENCRYPTOR_AES {
            return Err(Error::new(ErrorCode::UnsupportedCodec, format!("encryptor id {} is not supported by this build", self.encryptor)));
        }
        Ok(())
    }

    fn secret<'a>(&self, ctx: &SegmentContext<'a>) -> Result<&'a [u8]> {
        ctx.secret.ok_or_else(|| Error::new(ErrorCode::Decrypt, "the file is encrypted and the store was opened without an encryption key"))
    }

    /// A segment's stored bytes from its plain bytes (borrowed when neither
    /// compressed nor encrypted, so large values are not copied).
    pub fn encode<'a>(
        &self,
        ctx: &SegmentContext<'_>,
        kind: SegmentKind,
        plain: &'a [u8],
        rng: &mut dyn Randomness,
    ) -> Result<Cow<'a, [u8]>> {
        self.encode_at(ctx, kind, None, plain, rng)
    }

    /// [`encode`](Self::encode) of a blob chunk or log record: `index` is
    /// bound into the MAC (FORMAT.md §4.3).
    pub fn encode_at<'a>(
        &self,
        ctx: &SegmentContext<'_>,
        kind: SegmentKind,
        index: Option<u64>,
        plain: &'a [u8],
        rng: &mut dyn Randomness,
    ) -> Result<Cow<'a, [u8]>> {
        self.check()?;
        let compressed: Cow<'a, [u8]> = match self.compressor {
            COMPRESSOR_LZ4 => Cow::Owned(lz4::compress(plain)),
            _ => Cow::Borrowed(plain),
        };
        if self.encryptor == ENCRYPTOR_AES {
            let secret = self.secret(ctx)?;
            let mut salt = [0u8; aes::SALT_LEN];
            let mut iv = [0u8; aes::IV_LEN];
            rng.fill(&mut salt)?;
            rng.fill(&mut iv)?;
            return Ok(Cow::Owned(aes::seal_at(secret, kind as u8, ctx.key_hash, index, &compressed, &salt, &iv)));
        }
        Ok(compressed)
    }

    /// A segment's plain bytes from its stored bytes (checksum already checked).
    pub fn decode<'a>(&self, ctx: &SegmentContext<'_>, kind: SegmentKind, stored: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        self.decode_at(ctx, kind, None, stored)
    }

    /// [`decode`](Self::decode) of a segment written by [`encode_at`](Self::encode_at).
    pub fn decode_at<'a>(
        &self,
        ctx: &SegmentContext<'_>,
        kind: SegmentKind,
        index: Option<u64>,
        stored: &'a [u8],
    ) -> Result<Cow<'a, [u8]>> {
        self.check()?;
        ctx.check_encrypted(*self)?;
        let decrypted: Cow<'a, [u8]> = match self.encryptor {
            ENCRYPTOR_AES => Cow::Owned(aes::open_at(self.secret(ctx)?, kind as u8, ctx.key_hash, index, stored)?),
            _ => Cow::Borrowed(stored),
        };
        match self.compressor {
            COMPRESSOR_LZ4 => Ok(Cow::Owned(lz4::decompress(&decrypted)?)),
            _ => Ok(decrypted),
        }
    }
}
