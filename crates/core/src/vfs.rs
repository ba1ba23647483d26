//! The I/O seam: every file-system call of the store goes through [`Vfs`].
//!
//! [`RealFs`] is the real thing (std + libc). A simulated, pessimistic file
//! system (data durable only after a file fsync, names only after a directory
//! fsync, a crash at any step) can implement the same traits, so the store's
//! crash consistency can be tested without a real crash.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A directory's entry names, streamed.
pub type DirNames = Box<dyn Iterator<Item = io::Result<OsString>> + Send>;

/// A file system, as the store uses it.
pub trait Vfs: Send + Sync {
    /// Creates a new file for writing; fails with `AlreadyExists` if the name
    /// is taken (`O_CREAT | O_EXCL`).
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;

    /// Opens an existing file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;

    /// [`open_read`](Self::open_read) that may leave out the check that the
    /// file is a regular one (a stat per open): for the hot read, which reads
    /// and decodes the file and calls [`VfsFile::check_regular`] only when
    /// that fails. The default checks as `open_read` does.
    fn open_read_unchecked(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.open_read(path)
    }

    /// Opens an existing file for reading, but only if that cannot wait for the
    /// disk: `WouldBlock` otherwise. Lets an async read be answered on the
    /// caller's thread when everything it needs is cached. Like
    /// [`open_read_unchecked`](Self::open_read_unchecked), it may leave the
    /// file's type unchecked. The default (and any system that cannot promise
    /// it) always says `WouldBlock`.
    fn open_read_cached(&self, _path: &Path) -> io::Result<Box<dyn VfsFile>> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Opens an existing file for reading and writing in place (append logs);
    /// never creates or truncates it.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;

    /// Whether a directory entry `path` exists (without following symlinks).
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// Whether the directory entry `path` is a symbolic link (false if it does
    /// not exist). The default (a file system without links) says no.
    fn is_symlink(&self, _path: &Path) -> io::Result<bool> {
        Ok(false)
    }

    /// Renames `from` to `to`, atomically replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// The names of a directory's entries (without `.` and `..`).
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;

    /// The names of a directory's entries, one at a time (a streaming listing
    /// holds no more than one name). The default reads them all first.
    fn read_dir_iter(&self, path: &Path) -> io::Result<DirNames> {
        Ok(Box::new(self.read_dir(path)?.into_iter().map(Ok)))
    }

    /// Makes everything written to the file system that holds `path` durable,
    /// file data and directory entries alike (`syncfs(2)`). The default (and
    /// any system without it): `Unsupported`, and the caller fsyncs file by file.
    fn sync_fs(&self, _path: &Path) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Creates a directory and any missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;

    /// Makes a directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// The canonical absolute form of a path (symlinks resolved).
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;

    /// Makes `to` a second name of the file `from` (`link(2)`): fails with
    /// `AlreadyExists` if `to` exists, atomically. File systems without hard
    /// links fail with `EPERM`, `ENOTSUP`/`EOPNOTSUPP` or `ENOSYS` (the lock
    /// protocol then falls back to an exclusive create). The default: unsupported.
    fn hard_link(&self, _from: &Path, _to: &Path) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }

    /// A monotonic clock (time since an arbitrary start), for timing steps
    /// against file ages: the lock protocol skips a read-back when its create
    /// and write took less than a fraction of PARTIAL_STALE. The simulated
    /// file system answers with its own clock, the one its file ages use.
    fn monotonic(&self) -> std::time::Duration {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed()
    }

    /// The whole content of a small file, at most `max` bytes (more is cut).
    fn read_small(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        let file = self.open_read(path)?;
        let mut buf = vec![0u8; max];
        let n = file.read_upto_at(&mut buf, 0)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// A file's age (now minus its modification time, never negative), inode
    /// number and length, without following symlinks.
    fn stat(&self, path: &Path) -> io::Result<FileStat>;

    /// This process, as lock records name it (FORMAT.md §6).
    fn identity(&self) -> Identity {
        Identity::unknown(std::process::id())
    }

    /// The start time (clock ticks since boot, `/proc/<pid>/stat` field 22)
    /// of process `pid` of this pid namespace: `None` if there is no such
    /// process (or only its zombie); an error if that cannot be told.
    fn process_start(&self, _pid: u32) -> io::Result<Option<u64>> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Whether the kernel's change notifications (inotify) describe this file
    /// system, so that the store may cache values and drop them on its word
    /// (`valuecache.rs`). Only the real file system on Linux says yes.
    fn watchable(&self) -> bool {
        false
    }

    /// Whether files may be staged and fsynced from several threads at once (group
    /// commits). The simulated file system says no, so its crash steps stay
    /// in a reproducible order.
    fn parallel_sync(&self) -> bool {
        true
    }

    /// Whether process `pid` may be alive: only a definite "no such process"
    /// answers `false`, so that a staging file is never removed on a doubt.
    fn process_alive(&self, pid: u32) -> bool {
        match libc::pid_t::try_from(pid) {
            // pid 0 and negative pids name process groups: never ask about them.
            Ok(pid) if pid > 0 => {
                // SAFETY: signal 0 only checks that the process exists.
                let r = unsafe { libc::kill(pid, 0) };
                r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
            }
            _ => true,
        }
    }
}

/// An open file.
pub trait VfsFile: Send + Sync {
    /// Writes all of `buf` at the current position (files are written once, in order).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;

    /// Writes all of `buf` at `offset` (`pwrite`), extending the file if needed.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Cuts or extends the file to `len` bytes (`ftruncate`).
    fn set_len(&mut self, len: u64) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset`; `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// A [`NotRegularFile`] error if this is not a regular file (see
    /// [`Vfs::open_read_unchecked`]). The default: every file is regular.
    fn check_regular(&self) -> io::Result<()> {
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `offset` and returns how many: fewer
    /// where the file ends (a network file system may also return fewer, so
    /// callers check what they got). A small file is read without a stat.
    fn read_upto_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let end = self.size()?.min(offset.saturating_add(buf.len() as u64));
        let n = usize::try_from(end.saturating_sub(offset)).unwrap_or(0);
        self.read_exact_at(&mut buf[..n], offset)?;
        Ok(n)
    }

    /// Reads up to `buf.len()` bytes at `offset` from cached pages only:
    /// `WouldBlock` if that would wait for the disk. May return fewer bytes than
    /// the file holds (only part of it cached). The default always says `WouldBlock`.
    fn read_cached_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Starts writing `len` bytes at `offset` back to the disk, without
    /// waiting (Linux: `sync_file_range` with `SYNC_FILE_RANGE_WRITE`). A hint
    /// that makes a later fsync shorter; it promises no durability. The default does nothing.
    fn start_writeback(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    /// Turns direct I/O on or off for this open file (Linux: `O_DIRECT`
    /// through `fcntl(F_SETFL)`). While it is on, a write goes from the
    /// caller's buffer to the device, past the page cache, and must be
    /// aligned to [`DIRECT_ALIGN`] (offset, length and buffer address); a
    /// file system that cannot do it refuses (`EINVAL`), here or at the first
    /// write. A direct write is no more durable than a buffered one: the
    /// device's cache and the file's length still need the fsync. The
    /// default (and any system without it): `Unsupported`.
    fn set_direct(&mut self, _on: bool) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// A second handle on the same open file (`dup(2)`: one position, one set
    /// of flags, `O_DIRECT` included), for a thread that writes while this
    /// one goes on. The default (and the simulated file system, whose steps
    /// must stay in one order): `Unsupported`.
    fn try_clone(&self) -> io::Result<Box<dyn VfsFile>> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// The file's current length in bytes.
    fn size(&self) -> io::Result<u64>;

    /// Makes the file's data durable (fsync).
    fn sync(&self) -> io::Result<()>;

    /// Makes the file's data durable, and of its metadata only what reading
    /// the data back needs (`fdatasync`): for a file written in place, whose
    /// length does not change. The default is a full [`sync`](Self::sync).
    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }
}

/// The alignment of a direct write ([`VfsFile::set_direct`]): its offset,
/// length and buffer address are multiples of this. 4096 covers devices of
/// 512- and 4096-byte logical blocks.
pub const DIRECT_ALIGN: usize = 4096;

/// What [`Vfs::stat`] tells of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Now minus the modification time (zero if that lies in the future).
    pub age: std::time::Duration,
    /// The inode number.
    pub ino: u64,
    /// The length in bytes.
    pub len: u64,
}

/// The real file system, through std and libc.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

/// A store file that is not a regular file (a FIFO, a device, a directory):
/// the error [`RealFs`] gives instead of opening it for reads and writes
/// (`ErrorCode::NotAFile`, like `ELOOP` for a symbolic link).
#[derive(Debug)]
pub struct NotRegularFile(pub &'static str);

impl std::fmt::Display for NotRegularFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a regular file but {}", self.0)
    }
}

impl std::error::Error for NotRegularFile {}

impl NotRegularFile {
    /// The error for a file of type `ft`.
    pub fn error(ft: fs::FileType) -> io::Error {
        use std::os::unix::fs::FileTypeExt;
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_symlink() {
            "a symbolic link"
        } else {
            "of an unknown type"
        };
        io::Error::new(io::ErrorKind::InvalidInput, NotRegularFile(what))
    }
}

/// Flags of every open of a store file: a symbolic link is never followed
/// (`ELOOP`, so no store file leads outside the store), and opening a FIFO
/// never waits for a writer (`O_NONBLOCK`; without effect on regular files).
const STORE_OPEN_FLAGS: libc::c_int = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;

/// The file, if it is a regular file; otherwise a [`NotRegularFile`] error.
fn regular(file: File) -> io::Result<Box<dyn VfsFile>> {
    let file = RealFile(file);
    file.check_regular()?;
    Ok(Box::new(file))
}

impl Vfs for RealFs {
    fn watchable(&self) -> bool {
        cfg!(target_os = "linux")
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let file = OpenOptions::new().write(true).create_new(true).mode(0o644).custom_flags(libc::O_NOFOLLOW).open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let file = self.open_read_unchecked(path)?;
        file.check_regular()?;
        Ok(file)
    }

    fn open_read_unchecked(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        Ok(Box::new(RealFile(OpenOptions::new().read(true).custom_flags(STORE_OPEN_FLAGS).open(path)?)))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        regular(OpenOptions::new().read(true).write(true).custom_flags(STORE_OPEN_FLAGS).open(path)?)
    }

    fn is_symlink(&self, path: &Path) -> io::Result<bool> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(m.file_type().is_symlink()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `openat2` with `RESOLVE_CACHED` (Linux 5.12): the whole path lookup
    /// from the dentry cache, or `EAGAIN`. A kernel without it (or a seccomp
    /// filter that refuses it) is remembered, and every later call says `WouldBlock`.
    #[cfg(target_os = "linux")]
    fn open_read_cached(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::io::FromRawFd;
        use std::sync::atomic::{AtomicBool, Ordering};
        static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
        if UNSUPPORTED.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: open_how is plain data (non_exhaustive, so built from zeroes).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | STORE_OPEN_FLAGS) as u64;
        how.resolve = libc::RESOLVE_CACHED;
        // SAFETY: a valid C string and a valid open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                c_path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EAGAIN) => io::ErrorKind::WouldBlock.into(),
                Some(libc::ENOSYS | libc::EINVAL | libc::EPERM | libc::E2BIG) => {
                    UNSUPPORTED.store(true, Ordering::Relaxed);
                    io::ErrorKind::WouldBlock.into()
                }
                _ => e,
            });
        }
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        let fd = unsafe { File::from_raw_fd(fd as libc::c_int) };
        Ok(Box::new(RealFile(fd)))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        match fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(path)?.map(|entry| entry.map(|e| e.file_name())).collect()
    }

    fn read_dir_iter(&self, path: &Path) -> io::Result<DirNames> {
        Ok(Box::new(fs::read_dir(path)?.map(|entry| entry.map(|e| e.file_name()))))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(path)?.sync_all()
    }

    #[cfg(target_os = "linux")]
    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        let dir = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(path)?;
        // SAFETY: a plain system call on a descriptor we own.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        fs::canonicalize(path)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::hard_link(from, to)
    }

    fn stat(&self, path: &Path) -> io::Result<FileStat> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(path)?;
        let age = m.modified().ok().and_then(|t| t.elapsed().ok()).unwrap_or_default();
        Ok(FileStat { age, ino: m.ino(), len: m.len() })
    }

    fn identity(&self) -> Identity {
        real_identity()
    }

    #[cfg(target_os = "linux")]
    fn process_start(&self, pid: u32) -> io::Result<Option<u64>> {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => match parse_proc_stat(&s) {
                Some(('Z' | 'X' | 'x', _)) => Ok(None),
                Some((_, ticks)) => Ok(Some(ticks)),
                None => Err(io::Error::other("an unreadable /proc/<pid>/stat")),
            },
            // Gone, or hidden from us (hidepid): only kill(2) can tell.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.process_alive(pid) {
                    Err(io::Error::other("the process exists but /proc does not show it"))
                } else {
                    Ok(None)
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// A [`VfsFile`] on a real file.
#[derive(Debug)]
pub struct RealFile(pub File);

impl VfsFile for RealFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn check_regular(&self) -> io::Result<()> {
        let ft = self.0.metadata()?.file_type();
        if !ft.is_file() {
            return Err(NotRegularFile::error(ft));
        }
        Ok(())
    }

    fn read_upto_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        // One pread: on a regular file a short read means the end of the file.
        // (Callers that size a file this way check the length against the
        // header and ask the file system when they differ.)
        loop {
            match FileExt::read_at(&self.0, buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    /// `preadv2` with `RWF_NOWAIT`: cached pages only, or `EAGAIN`.
    #[cfg(target_os = "linux")]
    fn read_cached_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        loop {
            // SAFETY: one iovec over `buf`, valid for writes of its length.
            let n = unsafe { libc::preadv2(self.0.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => return Err(io::ErrorKind::WouldBlock.into()),
                _ => return Err(e),
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else { return Ok(()) };
        // SAFETY: a plain system call on a descriptor we own.
        let r = unsafe { libc::sync_file_range(self.0.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    #[cfg(target_os = "linux")]
    fn set_direct(&mut self, on: bool) -> io::Result<()> {
        let fd = self.0.as_raw_fd();
        // SAFETY: plain system calls on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn try_clone(&self) -> io::Result<Box<dyn VfsFile>> {
        Ok(Box::new(RealFile(self.0.try_clone()?)))
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn sync(&self) -> io::Result<()> {
        // On macOS std issues F_FULLFSYNC here.
        self.0.sync_all()
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

// --- This process, as the lock protocol (FORMAT.md §6) names it ---

/// Who holds (or held) a lock: what the record says of its process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `/proc/sys/kernel/random/boot_id`, when known.
    pub boot_id: Option<String>,
    /// The inode of `/proc/self/ns/pid`, when known.
    pub pid_ns: Option<u64>,
    /// The process id (in its pid namespace).
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot), when known.
    pub start_ticks: Option<u64>,
    /// The host name, when known (bytes outside `!`..`~` replaced by `_`).
    pub host: Option<String>,
}

impl Identity {
    /// A process of which only the pid is known.
    pub fn unknown(pid: u32) -> Identity {
        Identity { boot_id: None, pid_ns: None, pid, start_ticks: None, host: None }
    }
}

/// A printable, space-free form of a host name (FORMAT.md §6).
pub fn clean_host(raw: &[u8]) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    Some(raw.iter().map(|&b| if (0x21..=0x7e).contains(&b) { b as char } else { '_' }).collect())
}

/// The identity of this process on a real Linux system (or what is known of it elsewhere).
pub fn real_identity() -> Identity {
    static ME: OnceLock<Identity> = OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id();
        let mut who = Identity::unknown(pid);
        let mut buf = [0u8; 256];
        // SAFETY: a valid buffer of the length passed.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            // Decoded as Node's os.hostname() decodes it (invalid UTF-8 becomes
            // U+FFFD), so that both engines of one process write one host.
            who.host = clean_host(String::from_utf8_lossy(&buf[..len]).as_bytes());
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::MetadataExt;
            let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
            let ns = std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino());
            let ticks = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| parse_proc_stat(&s)).map(|(_, t)| t);
            if let (Some(b), Some(ns), Some(t)) = (boot, ns, ticks) {
                who.boot_id = clean_host(b.trim().as_bytes());
                who.pid_ns = Some(ns);
                who.start_ticks = Some(t);
            }
        }
        who
    })
    .clone()
}

/// The state letter and start ticks (field 22) of a `/proc/<pid>/stat` line.
pub fn parse_proc_stat(s: &str) -> Option<(char, u64)> {
    let after = &s[s.rfind(')')? + 1..];
    let mut f = after.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    // Fields 4..=21 come between the state (3) and the start time (22).
    let ticks = f.nth(18)?.parse().ok()?;
    Some((state, ticks))
}
