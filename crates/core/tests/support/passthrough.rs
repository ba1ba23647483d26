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
//!
//! Each method is listed once, in the macro calls below: they write the hook
//! trait's default (a call of the wrapped one) and the wrapper's method (a
//! call of the hook).

use std::ffi::OsString;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use konserve_core::vfs::{DirNames, FileStat, Identity, Vfs, VfsFile};

/// The real [`Vfs`] of a [`VfsHooks`] (and, through `Deref`, the hooks themselves).
#[derive(Clone, Debug, Default)]
pub struct Hooked<D>(pub D);

impl<D> Deref for Hooked<D> {
    type Target = D;
    fn deref(&self) -> &D {
        &self.0
    }
}

/// `VfsHooks` with a default for each method (the same call on `inner()`),
/// and `Vfs for Hooked<D>` calling the hooks.
macro_rules! vfs_hooks {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        /// A [`Vfs`] whose every method defaults to the one of [`inner`](Self::inner).
        pub trait VfsHooks: Send + Sync {
            /// The file system the calls go to.
            fn inner(&self) -> &dyn Vfs;
            $(fn $name(&self, $($arg: $ty),*) -> $ret {
                self.inner().$name($($arg),*)
            })*
        }

        impl<D: VfsHooks> Vfs for Hooked<D> {
            $(fn $name(&self, $($arg: $ty),*) -> $ret {
                VfsHooks::$name(&self.0, $($arg),*)
            })*
        }
    };
}

vfs_hooks! {
    fn create_new(path: &Path) -> io::Result<Box<dyn VfsFile>>;
    fn open_read(path: &Path) -> io::Result<Box<dyn VfsFile>>;
    fn open_read_cached(path: &Path) -> io::Result<Box<dyn VfsFile>>;
    fn open_write(path: &Path) -> io::Result<Box<dyn VfsFile>>;
    fn exists(path: &Path) -> io::Result<bool>;
    fn is_symlink(path: &Path) -> io::Result<bool>;
    fn rename(from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(path: &Path) -> io::Result<()>;
    fn read_dir(path: &Path) -> io::Result<Vec<OsString>>;
    fn read_dir_iter(path: &Path) -> io::Result<DirNames>;
    fn sync_fs(path: &Path) -> io::Result<()>;
    fn create_dir_all(path: &Path) -> io::Result<()>;
    fn remove_dir(path: &Path) -> io::Result<()>;
    fn sync_dir(path: &Path) -> io::Result<()>;
    fn canonicalize(path: &Path) -> io::Result<PathBuf>;
    fn hard_link(from: &Path, to: &Path) -> io::Result<()>;
    fn monotonic() -> Duration;
    fn read_small(path: &Path, max: usize) -> io::Result<Vec<u8>>;
    fn stat(path: &Path) -> io::Result<FileStat>;
    fn identity() -> Identity;
    fn process_start(pid: u32) -> io::Result<Option<u64>>;
    fn watchable() -> bool;
    fn parallel_sync() -> bool;
    fn process_alive(pid: u32) -> bool;
}

/// The file `inner` with the [`FileHooks`] of `hooks`.
pub struct HookedFile<F> {
    pub inner: Box<dyn VfsFile>,
    pub hooks: F,
}

/// `FileHooks` with a default for each method (the same call on the file
/// passed in), and `VfsFile for HookedFile<F>` calling the hooks with its
/// file: the methods under `mut` take `&mut self`, and their hooks the file as `&mut`.
macro_rules! file_hooks {
    (
        mut { $(fn $mname:ident($($marg:ident: $mty:ty),*) -> $mret:ty;)* }
        ref { $(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)* }
    ) => {
        /// What a test changes of the files it wraps: each method gets the
        /// wrapped file (`file`) and defaults to calling the same method of it.
        pub trait FileHooks: Send + Sync {
            $(fn $mname(&self, file: &mut dyn VfsFile, $($marg: $mty),*) -> $mret {
                file.$mname($($marg),*)
            })*
            $(fn $name(&self, file: &dyn VfsFile, $($arg: $ty),*) -> $ret {
                file.$name($($arg),*)
            })*
        }

        impl<F: FileHooks> VfsFile for HookedFile<F> {
            $(fn $mname(&mut self, $($marg: $mty),*) -> $mret {
                self.hooks.$mname(&mut *self.inner, $($marg),*)
            })*
            $(fn $name(&self, $($arg: $ty),*) -> $ret {
                self.hooks.$name(&*self.inner, $($arg),*)
            })*
        }
    };
}

file_hooks! {
    mut {
        fn write_all(buf: &[u8]) -> io::Result<()>;
        fn write_all_at(buf: &[u8], offset: u64) -> io::Result<()>;
        fn set_len(len: u64) -> io::Result<()>;
        fn set_direct(on: bool) -> io::Result<()>;
    }
    ref {
        fn read_exact_at(buf: &mut [u8], offset: u64) -> io::Result<()>;
        fn read_upto_at(buf: &mut [u8], offset: u64) -> io::Result<usize>;
        fn read_cached_at(buf: &mut [u8], offset: u64) -> io::Result<usize>;
        fn start_writeback(offset: u64, len: u64) -> io::Result<()>;
        fn try_clone() -> io::Result<Box<dyn VfsFile>>;
        fn size() -> io::Result<u64>;
        fn sync() -> io::Result<()>;
        fn sync_data() -> io::Result<()>;
    }
}

/// A file system whose staging files (FORMAT.md §5) can be held at a gate:
/// once the test shuts it, each `create_new` of one blocks until the test
/// opens it again (a checkpoint held in its first slice, docs/WAL.md §5).
#[derive(Clone)]
pub struct StagingGate {
    pub inner: std::sync::Arc<dyn Vfs>,
    /// Whether the gate is shut.
    shut: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// Staging files that came to the gate while it was shut.
    held: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl StagingGate {
    /// `inner` with the gate open.
    pub fn new(inner: std::sync::Arc<dyn Vfs>) -> Hooked<StagingGate> {
        Hooked(StagingGate { inner, shut: Default::default(), held: Default::default() })
    }

    pub fn shut(&self) {
        *self.shut.0.lock().unwrap() = true;
    }

    pub fn open_gate(&self) {
        *self.shut.0.lock().unwrap() = false;
        self.shut.1.notify_all();
    }

    /// Staging files that came to the gate while it was shut.
    pub fn held(&self) -> u64 {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl VfsHooks for StagingGate {
    fn inner(&self) -> &dyn Vfs {
        &*self.inner
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if konserve_core::staging::parse_staging_name(name).is_some() {
            let (shut, cv) = &*self.shut;
            let mut g = shut.lock().unwrap();
            if *g {
                self.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            while *g {
                g = cv.wait(g).unwrap();
            }
        }
        self.inner.create_new(path)
    }
}

/// Code a test sets to run once at a point of a file call (the hook of a
/// [`VfsHooks`] override): shared by the test and its file system.
#[derive(Clone, Default)]
pub struct OnceHook(std::sync::Arc<std::sync::Mutex<Option<HookFn>>>);

type HookFn = Box<dyn FnOnce() + Send>;

impl OnceHook {
    pub fn set(&self, f: impl FnOnce() + Send + 'static) {
        *self.0.lock().unwrap() = Some(Box::new(f));
    }

    /// Runs the hook if one is set (outside the slot's mutex), and unsets it.
    pub fn run(&self) {
        let f = self.0.lock().unwrap().take();
        if let Some(f) = f {
            f();
        }
    }

    /// Whether it is set and has not run yet.
    pub fn is_set(&self) -> bool {
        self.0.lock().unwrap().is_some()
    }
}
