//! The fs drivers and their interface (QEMU's fsdev/file-op-9p.h).
//!
//! [`FileOperations`] is the path-level interface; opening returns a
//! [`FileHandle`] or [`DirHandle`] whose methods are the handle-level
//! operations (QEMU's `fstat`, `preadv`, `readdir`, ... taking a
//! `V9fsFidOpenState`). Every method may block: the server only calls them
//! from worker jobs (the `co_*` functions in `src/co/`). Each failure is the
//! host errno, unchanged.

pub mod local;
pub mod synth;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

pub use nix::errno::Errno;

/// What every driver call returns.
pub type FsResult<T> = Result<T, Errno>;

/// A driver-defined path (QEMU's `V9fsPath`): for the local driver the bytes
/// of a path relative to the export root (`.` or `./a/b`); for synth, the
/// node number.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct V9fsPath(pub Vec<u8>);

/// Credentials for creation, chmod and chown (QEMU's `FsCred`); `None` is
/// QEMU's -1, "not given".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsCred {
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Mode bits (type bits too for mknod).
    pub mode: u32,
    /// Device number for mknod.
    pub rdev: u64,
}

/// A time as `utimensat` takes it: seconds and nanoseconds, or the
/// `UTIME_NOW`/`UTIME_OMIT` markers in `nsec`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timespec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds, or `libc::UTIME_NOW` / `libc::UTIME_OMIT`.
    pub nsec: i64,
}

/// The parts of `struct stat` the server uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: i64,
    pub blksize: i64,
    pub blocks: i64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

impl FileStat {
    /// The file type bits.
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == libc::S_IFDIR
    }

    /// Whether this is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.file_type() == libc::S_IFLNK
    }
}

/// The parts of `struct statfs` the server uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct StatFs {
    pub ty: u32,
    pub bsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub fsid: u64,
    pub namelen: u64,
}

/// One directory entry as `readdir` returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirEnt {
    /// The name.
    pub name: Vec<u8>,
    /// `d_ino`.
    pub ino: u64,
    /// `d_off`: the cookie that `seekdir` takes to continue after this entry.
    pub off: i64,
    /// `d_type` (DT_*), 0 when unknown.
    pub ty: u8,
}

/// Export flags (QEMU's `FsContext.export_flags`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportFlags(pub u32);

impl ExportFlags {
    /// V9FS_IMMEDIATE_WRITEOUT.
    pub const IMMEDIATE_WRITEOUT: u32 = 0x1;
    /// V9FS_PATHNAME_FSCONTEXT: paths are names (local), so the rename lock
    /// is used and name_to_path needs no hop.
    pub const PATHNAME_FSCONTEXT: u32 = 0x2;
    /// V9FS_SM_PASSTHROUGH.
    pub const SM_PASSTHROUGH: u32 = 0x4;
    /// V9FS_SM_MAPPED (mapped-xattr).
    pub const SM_MAPPED: u32 = 0x8;
    /// V9FS_SM_NONE.
    pub const SM_NONE: u32 = 0x10;
    /// V9FS_SM_MAPPED_FILE.
    pub const SM_MAPPED_FILE: u32 = 0x20;
    /// V9FS_RDONLY.
    pub const RDONLY: u32 = 0x40;
    /// V9FS_REMAP_INODES.
    pub const REMAP_INODES: u32 = 0x200;
    /// V9FS_FORBID_MULTIDEVS.
    pub const FORBID_MULTIDEVS: u32 = 0x400;

    /// Whether every bit of `flag` is set.
    pub fn has(self, flag: u32) -> bool {
        self.0 & flag == flag
    }
}

/// Per-session values a driver may need when it opens a file (the synth
/// `/stat/xattr_count` fixture reports the session's xattr-fid count).
#[derive(Clone, Debug, Default)]
pub struct SessionCtx {
    /// The session's count of xattr fids (QEMU's `xattr_fid_count`).
    pub xattr_fid_count: Arc<AtomicU64>,
}

/// C's `atoi`, as QEMU parses numbers in Tcreate extensions and mapped-file
/// metadata: leading white space, a sign, digits; anything else ends it, and
/// garbage is 0.
pub(crate) fn c_atoi(s: &[u8]) -> i32 {
    let skip = s
        .iter()
        .take_while(|b| b.is_ascii_whitespace() || **b == 0x0b)
        .count();
    let s = &s[skip..];
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    // glibc's atoi is (int)strtol: saturate at the long range, then wrap.
    let mut n: i128 = 0;
    for &b in digits.iter().take_while(|b| b.is_ascii_digit()) {
        n = (n * 10 + i128::from(b - b'0')).min(i128::from(i64::MAX) + 1);
    }
    let n = if neg { -n } else { n };
    n.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64 as i32
}

/// A POSIX record lock, as Tlock and Tgetlock carry it under `locks=posix`:
/// the type (`libc::F_RDLCK`, `F_WRLCK` or `F_UNLCK`) and the byte range
/// from `start`, `len` bytes long (0: to the end of the file, however far
/// it grows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLock {
    /// `F_RDLCK`, `F_WRLCK` or `F_UNLCK`.
    pub ty: i16,
    /// The first byte.
    pub start: u64,
    /// The length; 0 for "to the end of the file".
    pub len: u64,
}

/// A lock that stands in the way of a [`RecordLock`] (what `F_OFD_GETLK`
/// reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockConflict {
    /// The conflicting lock.
    pub lock: RecordLock,
    /// The owner bytes given to [`OpenFile::setlk`] by the holder, when the
    /// holder is a lock owner of this driver and can be told.
    pub owner: Option<Vec<u8>>,
    /// The holder's pid when it is a host process's traditional POSIX
    /// lock; 0 otherwise.
    pub pid: i32,
}

/// An open file (QEMU's `V9fsFidOpenState` for a FILE fid).
pub trait OpenFile: Send + Sync {
    /// Reads at `offset` into `buf`; the bytes read.
    fn preadv(&self, buf: &mut [u8], offset: u64) -> FsResult<usize>;
    /// Writes `buf` at `offset`; the bytes written.
    fn pwritev(&self, buf: &[u8], offset: u64) -> FsResult<usize>;
    /// `fstat` on the handle.
    fn fstat(&self) -> FsResult<FileStat>;
    /// `fsync` or `fdatasync`.
    fn fsync(&self, datasync: bool) -> FsResult<()>;
    /// `ftruncate`.
    fn ftruncate(&self, size: u64) -> FsResult<()>;
    /// `futimens`.
    fn futimens(&self, times: &[Timespec; 2]) -> FsResult<()>;
    /// QEMU's `has_valid_file_handle`: whether getattr, setattr, fsync and
    /// lock may use this handle instead of the path.
    fn has_valid_handle(&self) -> bool;
    /// `locks=posix`: sets or clears (`F_UNLCK`) a record lock on this file
    /// for the lock owner `owner` (opaque bytes from the server), never
    /// waiting: EAGAIN if another owner holds a conflicting lock. Drivers
    /// without record locks answer EOPNOTSUPP.
    fn setlk(&self, _owner: &[u8], _lock: &RecordLock) -> FsResult<()> {
        Err(Errno::EOPNOTSUPP)
    }
    /// `locks=posix`: the first lock of another owner that conflicts with
    /// `lock`, or `None`.
    fn getlk(&self, _owner: &[u8], _lock: &RecordLock) -> FsResult<Option<LockConflict>> {
        Err(Errno::EOPNOTSUPP)
    }
}

/// An open directory stream (QEMU's `V9fsFidOpenState` for a DIR fid).
pub trait DirStream: Send {
    /// The next entry, or `None` at the end.
    fn readdir(&mut self) -> FsResult<Option<DirEnt>>;
    /// The current position cookie.
    fn telldir(&mut self) -> FsResult<i64>;
    /// Moves to a cookie returned by `telldir` or an entry's `off`.
    fn seekdir(&mut self, off: i64);
    /// Back to the first entry.
    fn rewinddir(&mut self);
    /// `fstat` on the directory.
    fn fstat(&self) -> FsResult<FileStat>;
    /// `fsync` or `fdatasync` on the directory.
    fn fsync(&self, datasync: bool) -> FsResult<()>;
    /// `futimens` on the directory.
    fn futimens(&self, times: &[Timespec; 2]) -> FsResult<()>;
    /// `ftruncate` on the directory, which the kernel refuses with EINVAL
    /// (QEMU calls it all the same for Tsetattr on an open directory).
    fn ftruncate(&self, _size: u64) -> FsResult<()> {
        Err(Errno::EINVAL)
    }
}

/// An open file, shared by the fid and the jobs using it.
pub type FileHandle = Arc<dyn OpenFile>;
/// An open directory; the mutex is the per-directory readdir lock.
pub type DirHandle = Arc<Mutex<Box<dyn DirStream>>>;

/// A driver: the path-level operations (QEMU's `FileOperations`).
pub trait FileOperations: Send + Sync {
    /// The driver's export flags (security model, PATHNAME_FSCONTEXT, ...).
    fn export_flags(&self) -> ExportFlags;
    /// The path of `name` in `dir` (`None`: the export root, with `name`
    /// "/"); pure string work for path-based drivers.
    fn name_to_path(&self, dir: Option<&V9fsPath>, name: &[u8]) -> FsResult<V9fsPath>;
    /// `lstat`.
    fn lstat(&self, path: &V9fsPath) -> FsResult<FileStat>;
    /// `readlink`.
    fn readlink(&self, path: &V9fsPath) -> FsResult<Vec<u8>>;
    /// `chmod` to `cred.mode`.
    fn chmod(&self, path: &V9fsPath, cred: &FsCred) -> FsResult<()>;
    /// `chown` to `cred.uid`/`cred.gid`.
    fn chown(&self, path: &V9fsPath, cred: &FsCred) -> FsResult<()>;
    /// `mknod` of `name` in `dir`.
    fn mknod(&self, dir: &V9fsPath, name: &[u8], cred: &FsCred) -> FsResult<()>;
    /// `utimensat` without following a final symlink.
    fn utimensat(&self, path: &V9fsPath, times: &[Timespec; 2]) -> FsResult<()>;
    /// Removes a file or an empty directory.
    fn remove(&self, path: &V9fsPath) -> FsResult<()>;
    /// `symlink` `name` in `dir` pointing to `target`.
    fn symlink(&self, target: &[u8], dir: &V9fsPath, name: &[u8], cred: &FsCred) -> FsResult<()>;
    /// `link` `old` as `name` in `dir`.
    fn link(&self, old: &V9fsPath, dir: &V9fsPath, name: &[u8]) -> FsResult<()>;
    /// Opens a file.
    fn open(&self, path: &V9fsPath, flags: i32, ctx: &SessionCtx) -> FsResult<FileHandle>;
    /// Opens a directory.
    fn opendir(&self, path: &V9fsPath) -> FsResult<DirHandle>;
    /// As [`OpenFile::has_valid_handle`], for every directory this driver
    /// opens (a property of the driver, read without the stream's lock).
    fn dir_has_valid_handle(&self) -> bool {
        false
    }
    /// Creates and opens `name` in `dir`.
    fn open2(
        &self,
        dir: &V9fsPath,
        name: &[u8],
        flags: i32,
        cred: &FsCred,
        ctx: &SessionCtx,
    ) -> FsResult<FileHandle>;
    /// `mkdir` of `name` in `dir`.
    fn mkdir(&self, dir: &V9fsPath, name: &[u8], cred: &FsCred) -> FsResult<()>;
    /// `rename`.
    fn rename(&self, old: &V9fsPath, new: &V9fsPath) -> FsResult<()>;
    /// `truncate`.
    fn truncate(&self, path: &V9fsPath, size: u64) -> FsResult<()>;
    /// `statfs`.
    fn statfs(&self, path: &V9fsPath) -> FsResult<StatFs>;
    /// `lgetxattr` into a buffer of `size` bytes: the value (ERANGE if it has
    /// grown past `size` since the size query).
    fn lgetxattr(&self, path: &V9fsPath, name: &[u8], size: usize) -> FsResult<Vec<u8>>;
    /// The size `lgetxattr` would return.
    fn lgetxattr_size(&self, path: &V9fsPath, name: &[u8]) -> FsResult<usize>;
    /// `llistxattr` into at most `size` bytes.
    fn llistxattr(&self, path: &V9fsPath, size: usize) -> FsResult<Vec<u8>>;
    /// The size `llistxattr` would return.
    fn llistxattr_size(&self, path: &V9fsPath) -> FsResult<usize>;
    /// `lsetxattr`.
    fn lsetxattr(&self, path: &V9fsPath, name: &[u8], value: &[u8], flags: i32) -> FsResult<()>;
    /// `lremovexattr`.
    fn lremovexattr(&self, path: &V9fsPath, name: &[u8]) -> FsResult<()>;
    /// `renameat`.
    fn renameat(
        &self,
        olddir: &V9fsPath,
        oldname: &[u8],
        newdir: &V9fsPath,
        newname: &[u8],
    ) -> FsResult<()>;
    /// `unlinkat` (`flags` may hold AT_REMOVEDIR).
    fn unlinkat(&self, dir: &V9fsPath, name: &[u8], flags: i32) -> FsResult<()>;
    /// The last component of `path`, as Tstat names the file.
    fn basename(&self, path: &V9fsPath) -> Vec<u8> {
        match path.0.iter().rposition(|&b| b == b'/') {
            Some(i) => path.0[i + 1..].to_vec(),
            None => path.0.clone(),
        }
    }
    /// Whether `get_st_gen` is available (if not, Tgetattr makes no hop for
    /// it).
    fn has_st_gen(&self) -> bool {
        false
    }
    /// The inode generation number (FS_IOC_GETVERSION).
    fn get_st_gen(&self, _path: &V9fsPath, _mode: u32) -> FsResult<u64> {
        Err(Errno::ENOTTY)
    }
}

#[cfg(test)]
mod tests {
    use super::c_atoi;

    #[test]
    fn atoi_reads_like_c() {
        assert_eq!(c_atoi(b"12"), 12);
        assert_eq!(c_atoi(b"  3abc"), 3);
        assert_eq!(c_atoi(b"garbage"), 0);
        assert_eq!(c_atoi(b"-1"), -1);
        assert_eq!(c_atoi(b"+7\n"), 7);
        // (int)LONG_MAX and (int)LONG_MIN, as glibc gives them.
        assert_eq!(c_atoi(b"99999999999999999999"), -1);
        assert_eq!(c_atoi(b"-99999999999999999999"), 0);
    }
}
