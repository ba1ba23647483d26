//! The error type of every fallible operation, with a stable code per kind.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, as a stable string code (see [`ErrorCode::as_str`]) that
/// callers, including the JavaScript layer, branch on.
///
/// The one list of codes is `ERROR_CODES` in ts/errors.ts (it also has the
/// codes only the TypeScript layer raises); `node scripts/error-codes.mjs`
/// (and `npm test`) fails if a string of `as_str` is not in it. To add a
/// code: list it there, add the variant here, describe it in README.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The file system failed in a way no other code describes.
    Io,
    /// A file is damaged: bad magic, bad checksum, bad length, truncated.
    Corrupt,
    /// A file was written by a newer format version.
    UnsupportedVersion,
    /// A file uses a compressor, encryptor or flag this build does not know.
    UnsupportedCodec,
    /// A file holds another key than the one asked for (or than its name says).
    KeyMismatch,
    /// Bytes that are not a valid canonical key encoding (FORMAT.md §2).
    InvalidKey,
    /// An argument out of range, such as a segment too large for the format.
    InvalidArgument,
    /// A previous fsync failed; writes are refused until the store is reopened.
    StorePoisoned,
    /// A lock could not be taken or released (a file-system call of the lock
    /// protocol failed, or the lock was taken over).
    Lock,
    /// A lock stayed held by another holder for longer than the lock timeout.
    LockTimeout,
    /// An fsync failed. The store is poisoned from then on.
    Fsync,
    /// The file system is full (`ENOSPC`, `EDQUOT`).
    NoSpace,
    /// The file system is read-only (`EROFS`).
    ReadOnly,
    /// No permission (`EACCES`, `EPERM`).
    Permission,
    /// Out of file descriptors (`EMFILE`, `ENFILE`).
    TooManyFiles,
    /// A path component that must be a directory is not one (`ENOTDIR`),
    /// such as a store path that names a regular file.
    NotADirectory,
    /// A store file is not a regular file: a symbolic link (`ELOOP` under
    /// `O_NOFOLLOW`), a FIFO, a device, a directory (`EISDIR`).
    NotAFile,
    /// An encrypted segment does not authenticate (wrong key, or altered), or
    /// the store has no key for an encrypted file.
    Decrypt,
    /// A log operation on a key that holds something other than an append log.
    NotALog,
    /// A blob operation on a key that holds something other than a blob.
    NotBinary,
}

impl ErrorCode {
    /// The stable code string, such as `"ERR_CORRUPT"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::Io => "ERR_IO",
            ErrorCode::Corrupt => "ERR_CORRUPT",
            ErrorCode::UnsupportedVersion => "ERR_UNSUPPORTED_VERSION",
            ErrorCode::UnsupportedCodec => "ERR_UNSUPPORTED_CODEC",
            ErrorCode::KeyMismatch => "ERR_KEY_MISMATCH",
            ErrorCode::InvalidKey => "ERR_INVALID_KEY",
            ErrorCode::InvalidArgument => "ERR_INVALID_ARGUMENT",
            ErrorCode::StorePoisoned => "ERR_STORE_POISONED",
            ErrorCode::Lock => "ERR_LOCK",
            ErrorCode::LockTimeout => "ERR_LOCK_TIMEOUT",
            ErrorCode::Fsync => "ERR_FSYNC",
            ErrorCode::NoSpace => "ERR_NO_SPACE",
            ErrorCode::ReadOnly => "ERR_READ_ONLY",
            ErrorCode::Permission => "ERR_PERMISSION",
            ErrorCode::TooManyFiles => "ERR_TOO_MANY_FILES",
            ErrorCode::NotADirectory => "ERR_NOT_A_DIRECTORY",
            ErrorCode::NotAFile => "ERR_NOT_A_FILE",
            ErrorCode::Decrypt => "ERR_DECRYPT",
            ErrorCode::NotALog => "ERR_NOT_A_LOG",
            ErrorCode::NotBinary => "ERR_NOT_BINARY",
        }
    }

    /// The code that describes an I/O error: the one errno table
    /// (docs/RELIABILITY.md "One fault, one code"; the TypeScript store's
    /// `codeOfErrno` is the same table), `Io` for an errno it does not name.
    pub fn of_io(err: &io::Error) -> ErrorCode {
        ErrorCode::of_io_or(err, ErrorCode::Io)
    }

    /// The table's code for `err`, or `fallback` for an errno the table does
    /// not name (a lock call's own failures are `Lock`, for one).
    pub fn of_io_or(err: &io::Error, fallback: ErrorCode) -> ErrorCode {
        if err.get_ref().is_some_and(|e| e.is::<crate::vfs::NotRegularFile>()) {
            return ErrorCode::NotAFile;
        }
        match err.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => ErrorCode::Permission,
            Some(libc::EROFS) => ErrorCode::ReadOnly,
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorCode::NoSpace,
            Some(libc::EMFILE) | Some(libc::ENFILE) => ErrorCode::TooManyFiles,
            Some(libc::ENOTDIR) => ErrorCode::NotADirectory,
            Some(libc::ELOOP) | Some(libc::EISDIR) => ErrorCode::NotAFile,
            _ => fallback,
        }
    }
}

/// Whether an error of an fsync step means that the fsync itself failed, so
/// that the store must be poisoned. The errnos that only the open before an
/// fsync gives (out of descriptors or memory, no access) do not: no dirty
/// page was dropped. (The TypeScript store's `isFsyncFailure` is the same list.)
pub fn is_fsync_failure(err: &io::Error) -> bool {
    !matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EACCES | libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
    )
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the konserve core: a [code](ErrorCode), a message, the file it
/// concerns (if any) and the underlying I/O error (if any).
///
/// `Display` prints the message and the I/O error, not the code or the file,
/// so that bindings can carry those separately.
#[derive(Debug)]
pub struct Error {
    code: ErrorCode,
    message: String,
    file: Option<PathBuf>,
    source: Option<io::Error>,
}

impl Error {
    /// A new error with no file and no I/O cause.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error { code, message: message.into(), file: None, source: None }
    }

    /// An error caused by an I/O error while doing `what` on `file`; the code is
    /// derived from the OS error ([`ErrorCode::of_io`]).
    pub fn io(err: io::Error, what: impl Into<String>, file: impl Into<PathBuf>) -> Error {
        Error::io_with_code(ErrorCode::of_io(&err), err, what, file)
    }

    /// Like [`Error::io`] with the operation's own code: `Fsync` is kept
    /// whatever the errno when the fsync itself failed ([`is_fsync_failure`];
    /// a failed open before it gets the table's code); any other code
    /// (`Lock`, for one) applies only where the errno table names no code, so
    /// one fault has one code wherever it happens.
    pub fn io_with_code(code: ErrorCode, err: io::Error, what: impl Into<String>, file: impl Into<PathBuf>) -> Error {
        let code = match code {
            ErrorCode::Fsync if is_fsync_failure(&err) => code,
            ErrorCode::Fsync => ErrorCode::of_io(&err),
            _ => ErrorCode::of_io_or(&err, code),
        };
        Error { code, message: what.into(), file: Some(file.into()), source: Some(err) }
    }

    /// Shorthand for an [`ErrorCode::Corrupt`] error.
    pub fn corrupt(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Corrupt, message)
    }

    /// Shorthand for an [`ErrorCode::InvalidKey`] error.
    pub fn invalid_key(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::InvalidKey, message)
    }

    /// Returns the error with `file` attached, unless it already names a file.
    pub fn with_file(mut self, file: impl Into<PathBuf>) -> Error {
        if self.file.is_none() {
            self.file = Some(file.into());
        }
        self
    }

    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message, without the code, the file or the I/O cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The file this error concerns, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The underlying I/O error, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// The result type of the konserve core.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_codes() {
        let code = |errno| ErrorCode::of_io(&io::Error::from_raw_os_error(errno));
        assert_eq!(code(libc::ENOSPC), ErrorCode::NoSpace);
        assert_eq!(code(libc::EDQUOT), ErrorCode::NoSpace);
        assert_eq!(code(libc::EROFS), ErrorCode::ReadOnly);
        assert_eq!(code(libc::EIO), ErrorCode::Io);
        assert_eq!(code(libc::EACCES), ErrorCode::Permission);
        assert_eq!(code(libc::EPERM), ErrorCode::Permission);
        assert_eq!(code(libc::EMFILE), ErrorCode::TooManyFiles);
        assert_eq!(code(libc::ENFILE), ErrorCode::TooManyFiles);
        assert_eq!(code(libc::ENOTDIR), ErrorCode::NotADirectory);
        assert_eq!(code(libc::ELOOP), ErrorCode::NotAFile);
        assert_eq!(code(libc::EISDIR), ErrorCode::NotAFile);
    }

    #[test]
    fn context_codes_yield_to_the_table_except_fsync() {
        let e = |code, errno| Error::io_with_code(code, io::Error::from_raw_os_error(errno), "x", "/x").code();
        assert_eq!(e(ErrorCode::Lock, libc::EROFS), ErrorCode::ReadOnly);
        assert_eq!(e(ErrorCode::Lock, libc::ENOTDIR), ErrorCode::NotADirectory);
        assert_eq!(e(ErrorCode::Lock, libc::ENOLCK), ErrorCode::Lock);
        assert_eq!(e(ErrorCode::Fsync, libc::ENOSPC), ErrorCode::Fsync);
        assert_eq!(e(ErrorCode::Fsync, libc::EIO), ErrorCode::Fsync);
        assert_eq!(e(ErrorCode::Fsync, libc::EMFILE), ErrorCode::TooManyFiles);
        assert!(is_fsync_failure(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(is_fsync_failure(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(!is_fsync_failure(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!is_fsync_failure(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_fsync_failure(&io::Error::from_raw_os_error(libc::ENOMEM)));
    }

    #[test]
    fn display_has_message_and_cause() {
        let e = Error::io(io::Error::from_raw_os_error(libc::ENOSPC), "cannot write", "/x/y");
        assert_eq!(e.code().as_str(), "ERR_NO_SPACE");
        assert_eq!(e.file(), Some(Path::new("/x/y")));
        assert!(e.to_string().starts_with("cannot write: "));
    }
}
