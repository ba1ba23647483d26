//! A file system that forwards every call to another one, except the few a
//! test overrides (counting creates, gating an `fdatasync`, ...).
//!
//! A test's wrapper implements [`VfsHooks`] (naming the file system it wraps
//! in [`VfsHooks::inner`] and overriding only what it changes) and is handed
//! to the store as [`Hooked`]`(wrapper)`; a file it opens comes back as a
//! [`HookedFile`] of the opened file and of hooks (often the wrapper itself)
//! implementing [`FileHooks`], again only what they change. Every method of
//! [`Vfs`] and [`VfsFile`], the defaulted ones included, is forwarded, so a
//! wrapper that overrides nothing behaves exactly like the file system it
//! wraps. (A blanket `impl<T: VfsHooks> Vfs for T` is refused by the orphan
//! rule, hence the local wrapper types.)

use std::ffi::OsString;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use konserve_core::vfs::{DirNames, FileStat, Identity, Vfs, VfsFile};

/// A [`Vfs`] whose every method defaults to the one of [`inner`](Self::inner).
pub trait VfsHooks: Send + Sync {
    /// The file system the calls go to.
    fn inner(&self) -> &dyn Vfs;

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.inner().create_new(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.inner().open_read(path)
    }
    fn open_read_cached(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.inner().open_read_cached(path)
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.inner().open_write(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner().exists(path)
    }
    fn is_symlink(&self, path: &Path) -> io::Result<bool> {
        self.inner().is_symlink(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner().rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner().remove_file(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        self.inner().read_dir(path)
    }
    fn read_dir_iter(&self, path: &Path) -> io::Result<DirNames> {
        self.inner().read_dir_iter(path)
    }
    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        self.inner().sync_fs(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner().create_dir_all(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.inner().remove_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner().sync_dir(path)
    }
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        self.inner().canonicalize(path)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner().hard_link(from, to)
    }
    fn monotonic(&self) -> Duration {
        self.inner().monotonic()
    }
    fn read_small(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        self.inner().read_small(path, max)
    }
    fn stat(&self, path: &Path) -> io::Result<FileStat> {
        self.inner().stat(path)
    }
    fn identity(&self) -> Identity {
        self.inner().identity()
    }
    fn process_start(&self, pid: u32) -> io::Result<Option<u64>> {
        self.inner().process_start(pid)
    }
    fn watchable(&self) -> bool {
        self.inner().watchable()
    }
    fn parallel_sync(&self) -> bool {
        self.inner().parallel_sync()
    }
    fn process_alive(&self, pid: u32) -> bool {
        self.inner().process_alive(pid)
    }
}

/// The [`Vfs`] of a [`VfsHooks`] (and, through `Deref`, the hooks themselves).
#[derive(Clone, Debug, Default)]
pub struct Hooked<D>(pub D);

impl<D> Deref for Hooked<D> {
    type Target = D;
    fn deref(&self) -> &D {
        &self.0
    }
}

impl<D: VfsHooks> Vfs for Hooked<D> {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.0.create_new(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.0.open_read(path)
    }
    fn open_read_cached(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.0.open_read_cached(path)
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.0.open_write(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.0.exists(path)
    }
    fn is_symlink(&self, path: &Path) -> io::Result<bool> {
        self.0.is_symlink(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.remove_file(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        self.0.read_dir(path)
    }
    fn read_dir_iter(&self, path: &Path) -> io::Result<DirNames> {
        self.0.read_dir_iter(path)
    }
    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        self.0.sync_fs(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.0.create_dir_all(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.0.remove_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.0.sync_dir(path)
    }
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        self.0.canonicalize(path)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.hard_link(from, to)
    }
    fn monotonic(&self) -> Duration {
        self.0.monotonic()
    }
    fn read_small(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        self.0.read_small(path, max)
    }
    fn stat(&self, path: &Path) -> io::Result<FileStat> {
        self.0.stat(path)
    }
    fn identity(&self) -> Identity {
        self.0.identity()
    }
    fn process_start(&self, pid: u32) -> io::Result<Option<u64>> {
        self.0.process_start(pid)
    }
    fn watchable(&self) -> bool {
        self.0.watchable()
    }
    fn parallel_sync(&self) -> bool {
        self.0.parallel_sync()
    }
    fn process_alive(&self, pid: u32) -> bool {
        self.0.process_alive(pid)
    }
}

/// What a test changes of the files it wraps: each method gets the wrapped
/// file (`file`) and defaults to calling the same method of it.
pub trait FileHooks: Send + Sync {
    fn write_all(&self, file: &mut dyn VfsFile, buf: &[u8]) -> io::Result<()> {
        file.write_all(buf)
    }
    fn write_all_at(&self, file: &mut dyn VfsFile, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }
    fn set_len(&self, file: &mut dyn VfsFile, len: u64) -> io::Result<()> {
        file.set_len(len)
    }
    fn read_exact_at(&self, file: &dyn VfsFile, buf: &mut [u8], offset: u64) -> io::Result<()> {
        file.read_exact_at(buf, offset)
    }
    fn read_upto_at(&self, file: &dyn VfsFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        file.read_upto_at(buf, offset)
    }
    fn read_cached_at(&self, file: &dyn VfsFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        file.read_cached_at(buf, offset)
    }
    fn start_writeback(&self, file: &dyn VfsFile, offset: u64, len: u64) -> io::Result<()> {
        file.start_writeback(offset, len)
    }
    fn size(&self, file: &dyn VfsFile) -> io::Result<u64> {
        file.size()
    }
    fn sync(&self, file: &dyn VfsFile) -> io::Result<()> {
        file.sync()
    }
    fn sync_data(&self, file: &dyn VfsFile) -> io::Result<()> {
        file.sync_data()
    }
}

/// The file `inner` with the [`FileHooks`] of `hooks`.
pub struct HookedFile<F> {
    pub inner: Box<dyn VfsFile>,
    pub hooks: F,
}

impl<F: FileHooks> VfsFile for HookedFile<F> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.hooks.write_all(&mut *self.inner, buf)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.hooks.write_all_at(&mut *self.inner, buf, offset)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.hooks.set_len(&mut *self.inner, len)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.hooks.read_exact_at(&*self.inner, buf, offset)
    }
    fn read_upto_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.hooks.read_upto_at(&*self.inner, buf, offset)
    }
    fn read_cached_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.hooks.read_cached_at(&*self.inner, buf, offset)
    }
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        self.hooks.start_writeback(&*self.inner, offset, len)
    }
    fn size(&self) -> io::Result<u64> {
        self.hooks.size(&*self.inner)
    }
    fn sync(&self) -> io::Result<()> {
        self.hooks.sync(&*self.inner)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.hooks.sync_data(&*self.inner)
    }
}
