//! The local driver (QEMU's 9p-local.c): a host directory, served with the
//! `passthrough`, `none`, `mapped-xattr` or `mapped-file` security model.
//!
//! A [`V9fsPath`] is the byte string of a path relative to the export root:
//! `.` for the root, `./a/b` below it. No host path is ever built from those
//! bytes and opened whole. The root is opened once ([`LocalFs::open`]); every
//! other object is reached from that descriptor one component at a time with
//! `openat` and `O_NOFOLLOW` (intermediate components as `O_PATH`
//! directories), so a symlink planted inside the export can never lead out of
//! it, and paths longer than `PATH_MAX` work. Most operations open the
//! dirname that way and use the `*at()` call on the basename without
//! following it; extended attributes go through
//! `/proc/self/fd/<dirfd>/<basename>` with the `l*xattr` calls.
//!
//! Opening anything but a regular file or a directory fails with ENXIO (the
//! CVE-2023-2861 fix), except the internal `O_PATH` open used by chmod.
//! Every failure is the host errno, unchanged.
//!
//! The mapped models (`mapped.rs`) create only regular files and directories
//! on the host, owned by the server, and keep the client's credentials
//! aside: in `user.virtfs.*` xattrs (mapped-xattr) or in `.virtfs_metadata`
//! files (mapped-file), byte for byte as QEMU stores them. That metadata is
//! never reachable by a client: the xattr tables (`xattr.rs`) hide the
//! `user.virtfs.` names, and under mapped-file the metadata names are
//! refused by every path operation and the walk, and left out of readdir
//! (the CVE-2017-7493 class).

mod locks;
mod mapped;
#[cfg(test)]
mod mapped_tests;
mod xattr;

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::fcntl::{self, AtFlags, FcntlArg, OFlag, AT_FDCWD};
use nix::sys::stat::{self, FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::statfs;
use nix::sys::time::TimeSpec;
use nix::sys::uio;
use nix::unistd::{self, Gid, Uid, UnlinkatFlags, Whence};

use self::locks::{HeldLocks, LockOwners};
use self::mapped::MappedCred;
use super::{
    DirEnt, DirHandle, DirStream, Errno, ExportFlags, FileHandle, FileOperations, FileStat, FsCred,
    FsResult, LockConflict, OpenFile, RecordLock, SessionCtx, StatFs, Timespec, V9fsPath,
};

/// The security models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalModel {
    /// Objects are created with the client's credentials; a failing chown
    /// is an error.
    Passthrough,
    /// As passthrough, but a failing chown at creation is ignored, and POSIX
    /// ACL xattrs are not supported.
    None,
    /// Objects are regular files and directories owned by the server; the
    /// client's credentials live in `user.virtfs.*` xattrs.
    MappedXattr,
    /// As mapped-xattr, with the credentials in `.virtfs_metadata` files.
    MappedFile,
}

impl LocalModel {
    /// Whether this is one of the mapped models.
    pub fn is_mapped(self) -> bool {
        matches!(self, LocalModel::MappedXattr | LocalModel::MappedFile)
    }
}

/// QEMU's `SM_LOCAL_MODE_BITS`: the default `fmode`.
pub const DEFAULT_FMODE: u32 = 0o600;
/// QEMU's `SM_LOCAL_DIR_MODE_BITS`: the default `dmode`.
pub const DEFAULT_DMODE: u32 = 0o700;

/// File systems whose inodes have a generation number that
/// FS_IOC_GETVERSION reports (ext2/3/4, btrfs, reiserfs, xfs).
const ST_GEN_MAGICS: [i64; 4] = [0xEF53, 0x9123_683E, 0x5265_4973, 0x5846_5342];

/// `FS_IOC_GETVERSION`: `_IOR('v', 1, long)`.
const FS_IOC_GETVERSION: u64 =
    (2 << 30) | ((std::mem::size_of::<libc::c_long>() as u64) << 16) | ((b'v' as u64) << 8) | 1;

/// The getdents64 buffer of a directory stream (glibc uses 32 KiB too).
const DIRENT_BUF: usize = 32 * 1024;

/// The local file system.
pub struct LocalFs {
    /// The export root, opened once (QEMU's `mountfd`).
    mountfd: OwnedFd,
    model: LocalModel,
    writeout_immediate: bool,
    /// Permissions of the host files the mapped models create.
    fmode: u32,
    /// Permissions of the host directories the mapped models create.
    dmode: u32,
    /// Whether the export's file system has inode generations.
    st_gen: bool,
    /// Whether a refused special-file open was logged already.
    special_logged: AtomicBool,
    /// The descriptions record locks are held through (`locks=posix`).
    lock_owners: Arc<LockOwners>,
}

/// The dirname and basename of a driver path, as glib's
/// `g_path_get_dirname`/`g_path_get_basename` split a relative path with no
/// trailing slash: `.` → (`.`, `.`), `./a` → (`.`, `a`), `./a/b` → (`./a`, `b`).
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    if path.is_empty() {
        return (b".", b".");
    }
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b".", path),
    }
}

/// Refuses a name that could leave its directory. The server never sends
/// one (check_name, Twalk and name_to_path see to that); this only keeps the
/// driver escape-proof on its own.
fn check_component(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name == b".." || name.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

fn is_reg_or_dir(mode: u32) -> bool {
    let t = mode & libc::S_IFMT;
    t == libc::S_IFREG || t == libc::S_IFDIR
}

/// The parts of a host `struct stat` the server uses.
#[allow(clippy::unnecessary_cast)]
fn file_stat(st: &libc::stat) -> FileStat {
    FileStat {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        mode: st.st_mode as u32,
        nlink: st.st_nlink as u64,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u64,
        size: st.st_size as i64,
        blksize: st.st_blksize as i64,
        blocks: st.st_blocks as i64,
        atime: Timespec {
            sec: st.st_atime as i64,
            nsec: st.st_atime_nsec as i64,
        },
        mtime: Timespec {
            sec: st.st_mtime as i64,
            nsec: st.st_mtime_nsec as i64,
        },
        ctime: Timespec {
            sec: st.st_ctime as i64,
            nsec: st.st_ctime_nsec as i64,
        },
    }
}

#[allow(clippy::unnecessary_cast)]
fn time_spec(t: &Timespec) -> TimeSpec {
    TimeSpec::new(t.sec as libc::time_t, t.nsec as _)
}

pub(super) fn offset(off: u64) -> FsResult<libc::off_t> {
    libc::off_t::try_from(off).map_err(|_| Errno::EINVAL)
}

fn cstring(bytes: &[u8]) -> FsResult<CString> {
    CString::new(bytes).map_err(|_| Errno::EINVAL)
}

/// `/proc/self/fd/<dirfd>/<name>`: the node `name` in an open directory, as
/// a path whose last component the `l*xattr` calls do not follow.
fn proc_node_path(dirfd: BorrowedFd<'_>, name: &[u8]) -> FsResult<CString> {
    let mut p = format!("/proc/self/fd/{}/", dirfd.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    cstring(&p)
}

fn sys_lgetxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> FsResult<usize> {
    let ptr = if buf.is_empty() {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: path and name are NUL-terminated strings that outlive the
    // call; ptr is null with size 0 (a size query) or points to buf, which
    // is writable for buf.len() bytes, the size passed.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), ptr, buf.len()) };
    Errno::result(n).map(|n| n as usize)
}

fn sys_llistxattr(path: &CStr, buf: &mut [u8]) -> FsResult<usize> {
    let ptr = if buf.is_empty() {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: path is a NUL-terminated string that outlives the call; ptr is
    // null with size 0 (a size query) or points to buf, which is writable for
    // buf.len() bytes, the size passed.
    let n = unsafe { libc::llistxattr(path.as_ptr(), ptr, buf.len()) };
    Errno::result(n).map(|n| n as usize)
}

fn sys_lsetxattr(path: &CStr, name: &CStr, value: &[u8], flags: i32) -> FsResult<()> {
    // SAFETY: path and name are NUL-terminated strings and value is readable
    // for value.len() bytes, the size passed; all outlive the call, which
    // only reads them.
    let r = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    Errno::result(r).map(drop)
}

fn sys_lremovexattr(path: &CStr, name: &CStr) -> FsResult<()> {
    // SAFETY: path and name are NUL-terminated strings that outlive the call,
    // which only reads them.
    let r = unsafe { libc::lremovexattr(path.as_ptr(), name.as_ptr()) };
    Errno::result(r).map(drop)
}

/// Opens the directory `name` in `dirfd` as an `O_PATH` handle, without
/// following it (QEMU's `openat_dir`).
fn openat_dir(dirfd: BorrowedFd<'_>, name: &[u8]) -> FsResult<OwnedFd> {
    fcntl::openat(
        dirfd,
        name,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The directory a walk is at: the export root, or the last component
/// opened.
fn at<'a>(root: &'a OwnedFd, cur: &'a Option<OwnedFd>) -> BorrowedFd<'a> {
    cur.as_ref().unwrap_or(root).as_fd()
}

impl LocalFs {
    /// Opens the export root `root` (following symlinks, as QEMU does) and
    /// checks whether its file system has inode generations. The mapped
    /// models create with [`DEFAULT_FMODE`] and [`DEFAULT_DMODE`] until
    /// [`LocalFs::with_create_modes`] says otherwise.
    ///
    /// # Errors
    ///
    /// The errno of the open (ENOENT: missing, ENOTDIR: not a directory) or
    /// of the fstatfs.
    pub fn open(root: &Path, model: LocalModel, writeout_immediate: bool) -> FsResult<LocalFs> {
        let mountfd = fcntl::open(
            root,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let fs_type = statfs::fstatfs(&mountfd)?.filesystem_type().0;
        #[allow(clippy::unnecessary_cast)]
        let st_gen = ST_GEN_MAGICS.contains(&(fs_type as i64));
        Ok(LocalFs {
            mountfd,
            model,
            writeout_immediate,
            fmode: DEFAULT_FMODE,
            dmode: DEFAULT_DMODE,
            st_gen,
            special_logged: AtomicBool::new(false),
            lock_owners: Arc::default(),
        })
    }

    /// Sets the `fmode`/`dmode` permissions of the host files and
    /// directories the mapped models create (masked with 0777; as in QEMU,
    /// the process umask still applies to them).
    pub fn with_create_modes(mut self, fmode: u32, dmode: u32) -> LocalFs {
        self.fmode = fmode & 0o777;
        self.dmode = dmode & 0o777;
        self
    }

    /// QEMU's `openat_file`: opens `name` in `dirfd` without following it,
    /// without becoming a controlling terminal and without blocking (a FIFO
    /// must not hang the worker). Unless `O_PATH` or `O_DIRECTORY` (which
    /// the kernel already holds to a directory) is asked, anything but a
    /// regular file or a directory is refused with ENXIO, and the temporary
    /// O_NONBLOCK is dropped.
    fn openat_file(
        &self,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        mut flags: OFlag,
        mode: Mode,
    ) -> FsResult<OwnedFd> {
        let extra = OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = loop {
            match fcntl::openat(dirfd, name, flags | extra, mode) {
                Ok(fd) => break fd,
                // O_NOATIME needs ownership of the file; QEMU drops it.
                Err(Errno::EPERM) if flags.contains(OFlag::O_NOATIME) => {
                    flags.remove(OFlag::O_NOATIME)
                }
                Err(e) => return Err(e),
            }
        };
        if !flags.intersects(OFlag::O_PATH | OFlag::O_DIRECTORY) {
            let st = stat::fstat(&fd)?;
            if !is_reg_or_dir(st.st_mode) {
                if !self.special_logged.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "9p: refusing to open a file that is neither a regular file nor a \
                         directory (CVE-2023-2861)"
                    );
                }
                return Err(Errno::ENXIO);
            }
            fcntl::fcntl(&fd, FcntlArg::F_SETFL(flags))?;
        }
        Ok(fd)
    }

    /// QEMU's `local_open_nofollow`: walks `path` from the export root, one
    /// component at a time, never following a symlink; the last component
    /// is opened with `flags` as [`LocalFs::openat_file`] does. Under
    /// mapped-file a metadata name anywhere in the path is refused (EINVAL):
    /// the server never makes such a path, and the driver reaches its
    /// metadata without this walk.
    fn open_nofollow(&self, path: &[u8], flags: OFlag, mode: Mode) -> FsResult<OwnedFd> {
        let path: &[u8] = if path.is_empty() { b"." } else { path };
        let mut comps = path.split(|&b| b == b'/').peekable();
        let mut cur: Option<OwnedFd> = None;
        while let Some(comp) = comps.next() {
            if comp != b"." {
                check_component(comp)?;
                self.check_not_metadata(comp)?;
            }
            let dirfd = at(&self.mountfd, &cur);
            if comps.peek().is_none() {
                return self.openat_file(dirfd, comp, flags, mode);
            }
            if comp == b"." {
                // "./a": the root itself; no need to reopen it.
                continue;
            }
            cur = Some(openat_dir(dirfd, comp)?);
        }
        unreachable!("split yields at least one component")
    }

    /// Under mapped-file, refuses the metadata names with EINVAL (QEMU's
    /// `local_is_mapped_file_metadata` checks).
    fn check_not_metadata(&self, name: &[u8]) -> FsResult<()> {
        if self.model == LocalModel::MappedFile && mapped::is_metadata_name(name) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// A name of an entry in a directory (a new one, or one to unlink): no
    /// separator, no `..`, and under mapped-file not a metadata name.
    fn check_entry_name(&self, name: &[u8]) -> FsResult<()> {
        check_component(name)?;
        self.check_not_metadata(name)
    }

    /// Opens the dirname of `path` through the safe walk and returns it
    /// with the basename (checked against the metadata names).
    fn parent<'p>(&self, path: &'p V9fsPath) -> FsResult<(OwnedFd, &'p [u8])> {
        let (dir, name) = split(&path.0);
        self.check_not_metadata(name)?;
        Ok((self.opendir_nofollow(dir)?, name))
    }

    /// QEMU's `local_opendir_nofollow`.
    fn opendir_nofollow(&self, path: &[u8]) -> FsResult<OwnedFd> {
        self.open_nofollow(path, OFlag::O_DIRECTORY | OFlag::O_RDONLY, Mode::empty())
    }

    /// QEMU's `fchmodat_nofollow`: chmod of `name` in `dirfd` that refuses a
    /// symlink (ELOOP), also one swapped in between the checks.
    fn fchmodat_nofollow(&self, dirfd: BorrowedFd<'_>, name: &[u8], mode: u32) -> FsResult<()> {
        let st = stat::fstatat(dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(Errno::ELOOP);
        }
        let fd = self.openat_file(dirfd, name, OFlag::O_RDONLY | OFlag::O_PATH, Mode::empty())?;
        let st = stat::fstat(&fd)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(Errno::ELOOP);
        }
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        stat::fchmodat(
            AT_FDCWD,
            proc_path.as_str(),
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
    }

    fn fchownat(&self, dirfd: BorrowedFd<'_>, name: &[u8], cred: &FsCred) -> FsResult<()> {
        unistd::fchownat(
            dirfd,
            name,
            cred.uid.map(Uid::from_raw),
            cred.gid.map(Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
    }

    /// QEMU's `local_set_cred_passthrough`: the client's owner (a failure is
    /// ignored under `none`), then its mode bits.
    fn set_cred(&self, dirfd: BorrowedFd<'_>, name: &[u8], cred: &FsCred) -> FsResult<()> {
        if let Err(e) = self.fchownat(dirfd, name, cred) {
            if self.model != LocalModel::None {
                return Err(e);
            }
        }
        self.fchmodat_nofollow(dirfd, name, cred.mode & 0o7777)
    }

    /// `rename`/`renameat` of `oname` in `odir` to `nname` in `ndir`; under
    /// mapped-file the metadata file follows (QEMU's `local_renameat`).
    fn rename_in(&self, odir: &[u8], oname: &[u8], ndir: &[u8], nname: &[u8]) -> FsResult<()> {
        self.check_not_metadata(oname)?;
        self.check_not_metadata(nname)?;
        let odirfd = self.opendir_nofollow(odir)?;
        let ndirfd = self.opendir_nofollow(ndir)?;
        fcntl::renameat(&odirfd, oname, &ndirfd, nname)?;
        self.carry_meta(
            (odirfd.as_fd(), oname),
            (ndirfd.as_fd(), nname),
            mapped::Carry::Rename,
            || {
                let _ = fcntl::renameat(&ndirfd, nname, &odirfd, oname);
            },
        )?;
        Ok(())
    }

    /// Under mapped-file, an entry just renamed or linked from `from` to
    /// `to` takes its metadata file along; if that fails, `undo` takes the
    /// entry back so nothing is left half done.
    fn carry_meta(
        &self,
        from: (BorrowedFd<'_>, &[u8]),
        to: (BorrowedFd<'_>, &[u8]),
        how: mapped::Carry,
        undo: impl FnOnce(),
    ) -> FsResult<()> {
        if self.model != LocalModel::MappedFile {
            return Ok(());
        }
        mapped::carry_meta_file(from.0, from.1, to.0, to.1, how).inspect_err(|_| undo())
    }

    /// Removes `name` in `dirfd` (QEMU's `local_unlinkat_common`); under
    /// mapped-file its metadata goes first.
    fn unlink_common(
        &self,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        flag: UnlinkatFlags,
    ) -> FsResult<()> {
        if self.model == LocalModel::MappedFile {
            mapped::remove_meta(dirfd, name, matches!(flag, UnlinkatFlags::RemoveDir))?;
        }
        unistd::unlinkat(dirfd, name, flag)
    }

    /// Removes an object whose creation failed half-way; `err` is returned
    /// whatever the removal gives.
    fn undo_create(dirfd: BorrowedFd<'_>, name: &[u8], dir: bool, err: Errno) -> Errno {
        let flag = if dir {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        let _ = unistd::unlinkat(dirfd, name, flag);
        err
    }
}

impl FileOperations for LocalFs {
    fn export_flags(&self) -> ExportFlags {
        let mut flags = ExportFlags::PATHNAME_FSCONTEXT;
        flags |= match self.model {
            LocalModel::Passthrough => ExportFlags::SM_PASSTHROUGH,
            LocalModel::None => ExportFlags::SM_NONE,
            LocalModel::MappedXattr => ExportFlags::SM_MAPPED,
            LocalModel::MappedFile => ExportFlags::SM_MAPPED_FILE,
        };
        if self.writeout_immediate {
            flags |= ExportFlags::IMMEDIATE_WRITEOUT;
        }
        ExportFlags(flags)
    }

    fn name_to_path(&self, dir: Option<&V9fsPath>, name: &[u8]) -> FsResult<V9fsPath> {
        self.check_not_metadata(name)?;
        let Some(dir) = dir else {
            return Ok(match name {
                b"/" | b"." | b".." => V9fsPath(b".".to_vec()),
                _ => {
                    check_component(name)?;
                    let mut p = b"./".to_vec();
                    p.extend_from_slice(name);
                    V9fsPath(p)
                }
            });
        };
        match name {
            b"." => Ok(dir.clone()),
            b".." => Ok(V9fsPath(split(&dir.0).0.to_vec())),
            _ => {
                check_component(name)?;
                let mut p = if dir.0.is_empty() {
                    b".".to_vec()
                } else {
                    dir.0.clone()
                };
                p.push(b'/');
                p.extend_from_slice(name);
                Ok(V9fsPath(p))
            }
        }
    }

    fn lstat(&self, path: &V9fsPath) -> FsResult<FileStat> {
        let (dirfd, name) = self.parent(path)?;
        let mut st = file_stat(&stat::fstatat(&dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?);
        match self.model {
            LocalModel::MappedXattr => {
                let node = proc_node_path(dirfd.as_fd(), name)?;
                mapped::apply_xattr_cred(&mut st, |n, buf| sys_lgetxattr(&node, n, buf));
            }
            LocalModel::MappedFile => self.apply_meta_file(dirfd.as_fd(), name, &mut st),
            LocalModel::Passthrough | LocalModel::None => {}
        }
        Ok(st)
    }

    fn readlink(&self, path: &V9fsPath) -> FsResult<Vec<u8>> {
        if self.model.is_mapped() {
            // A link is a file holding its target; a real host symlink (not
            // made through a mapped model) is read as one.
            match self.open_nofollow(&path.0, OFlag::O_RDONLY, Mode::empty()) {
                Ok(fd) => return mapped::read_link_file(fd.as_fd()),
                Err(Errno::ELOOP) => {}
                Err(e) => return Err(e),
            }
        }
        let (dirfd, name) = self.parent(path)?;
        Ok(fcntl::readlinkat(&dirfd, name)?.into_vec())
    }

    fn chmod(&self, path: &V9fsPath, cred: &FsCred) -> FsResult<()> {
        let (dirfd, name) = self.parent(path)?;
        if self.model.is_mapped() {
            return self.set_mapped_cred(dirfd.as_fd(), name, &MappedCred::chmod(cred));
        }
        self.fchmodat_nofollow(dirfd.as_fd(), name, cred.mode)
    }

    fn chown(&self, path: &V9fsPath, cred: &FsCred) -> FsResult<()> {
        let (dirfd, name) = self.parent(path)?;
        let mc = MappedCred::chown(cred);
        if self.model.is_mapped() && (mc.uid.is_some() || mc.gid.is_some()) {
            return self.set_mapped_cred(dirfd.as_fd(), name, &mc);
        }
        // Under the mapped models too when neither id is given: a ctime
        // touch, as in QEMU.
        self.fchownat(dirfd.as_fd(), name, cred)
    }

    fn mknod(&self, dir: &V9fsPath, name: &[u8], cred: &FsCred) -> FsResult<()> {
        self.check_entry_name(name)?;
        let dirfd = self.opendir_nofollow(&dir.0)?;
        if self.model.is_mapped() {
            // Device nodes, FIFOs and sockets are plain files here.
            stat::mknodat(
                &dirfd,
                name,
                SFlag::S_IFREG,
                Mode::from_bits_truncate(self.fmode),
                0,
            )?;
            return self
                .set_mapped_cred(dirfd.as_fd(), name, &MappedCred::mknod(cred))
                .map_err(|e| LocalFs::undo_create(dirfd.as_fd(), name, false, e));
        }
        stat::mknodat(
            &dirfd,
            name,
            SFlag::from_bits_truncate(cred.mode & libc::S_IFMT),
            Mode::from_bits_truncate(cred.mode),
            cred.rdev as libc::dev_t,
        )?;
        self.set_cred(dirfd.as_fd(), name, cred)
            .map_err(|e| LocalFs::undo_create(dirfd.as_fd(), name, false, e))
    }

    fn utimensat(&self, path: &V9fsPath, times: &[Timespec; 2]) -> FsResult<()> {
        let (dirfd, name) = self.parent(path)?;
        stat::utimensat(
            &dirfd,
            name,
            &time_spec(&times[0]),
            &time_spec(&times[1]),
            UtimensatFlags::NoFollowSymlink,
        )
    }

    fn remove(&self, path: &V9fsPath) -> FsResult<()> {
        let (dirfd, name) = self.parent(path)?;
        let st = stat::fstatat(&dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let flag = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        self.unlink_common(dirfd.as_fd(), name, flag)
    }

    fn symlink(&self, target: &[u8], dir: &V9fsPath, name: &[u8], cred: &FsCred) -> FsResult<()> {
        self.check_entry_name(name)?;
        let dirfd = self.opendir_nofollow(&dir.0)?;
        if self.model.is_mapped() {
            let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR;
            let fd = self.openat_file(
                dirfd.as_fd(),
                name,
                flags,
                Mode::from_bits_truncate(self.fmode),
            )?;
            // The target as a C string: up to its first NUL, without it.
            let end = target.iter().position(|&b| b == 0).unwrap_or(target.len());
            let written = mapped::write_once(fd.as_fd(), &target[..end]);
            drop(fd);
            match written {
                Ok(n) if n == end => {}
                // A short write leaves a truncated link: undo it.
                Ok(_) => return Err(LocalFs::undo_create(dirfd.as_fd(), name, false, Errno::EIO)),
                Err(e) => return Err(LocalFs::undo_create(dirfd.as_fd(), name, false, e)),
            }
            let mc = MappedCred::created(cred, libc::S_IFLNK);
            return self
                .set_mapped_cred(dirfd.as_fd(), name, &mc)
                .map_err(|e| LocalFs::undo_create(dirfd.as_fd(), name, false, e));
        }
        unistd::symlinkat(target, &dirfd, name)?;
        match self.fchownat(dirfd.as_fd(), name, cred) {
            Err(e) if self.model == LocalModel::Passthrough => {
                Err(LocalFs::undo_create(dirfd.as_fd(), name, false, e))
            }
            _ => Ok(()),
        }
    }

    fn link(&self, old: &V9fsPath, dir: &V9fsPath, name: &[u8]) -> FsResult<()> {
        self.check_entry_name(name)?;
        let (odirfd, oname) = self.parent(old)?;
        let ndirfd = self.opendir_nofollow(&dir.0)?;
        unistd::linkat(&odirfd, oname, &ndirfd, name, AtFlags::empty())?;
        self.carry_meta(
            (odirfd.as_fd(), oname),
            (ndirfd.as_fd(), name),
            mapped::Carry::Link,
            || {
                let _ = unistd::unlinkat(&ndirfd, name, UnlinkatFlags::NoRemoveDir);
            },
        )?;
        Ok(())
    }

    fn open(&self, path: &V9fsPath, flags: i32, _ctx: &SessionCtx) -> FsResult<FileHandle> {
        let fd = self.open_nofollow(&path.0, OFlag::from_bits_retain(flags), Mode::empty())?;
        Ok(Arc::new(LocalFile {
            fd,
            writeout_immediate: self.writeout_immediate,
            model: self.model,
            locks: HeldLocks::new(Arc::clone(&self.lock_owners)),
        }))
    }

    fn dir_has_valid_handle(&self) -> bool {
        true
    }

    fn opendir(&self, path: &V9fsPath) -> FsResult<DirHandle> {
        let fd = self.opendir_nofollow(&path.0)?;
        Ok(Arc::new(Mutex::new(Box::new(LocalDir::new(
            fd, self.model,
        )))))
    }

    fn open2(
        &self,
        dir: &V9fsPath,
        name: &[u8],
        flags: i32,
        cred: &FsCred,
        _ctx: &SessionCtx,
    ) -> FsResult<FileHandle> {
        self.check_entry_name(name)?;
        let flags = OFlag::from_bits_retain(flags);
        let dirfd = self.opendir_nofollow(&dir.0)?;
        let mode = if self.model.is_mapped() {
            self.fmode
        } else {
            cred.mode
        };
        let fd = self.openat_file(dirfd.as_fd(), name, flags, Mode::from_bits_truncate(mode))?;
        let set = if self.model.is_mapped() {
            let mc = MappedCred::created(cred, libc::S_IFREG);
            self.set_mapped_cred(dirfd.as_fd(), name, &mc)
        } else {
            self.set_cred(dirfd.as_fd(), name, cred)
        };
        if let Err(e) = set {
            let is_dir = flags.contains(OFlag::O_DIRECTORY);
            return Err(LocalFs::undo_create(dirfd.as_fd(), name, is_dir, e));
        }
        Ok(Arc::new(LocalFile {
            fd,
            writeout_immediate: self.writeout_immediate,
            model: self.model,
            locks: HeldLocks::new(Arc::clone(&self.lock_owners)),
        }))
    }

    fn mkdir(&self, dir: &V9fsPath, name: &[u8], cred: &FsCred) -> FsResult<()> {
        self.check_entry_name(name)?;
        let dirfd = self.opendir_nofollow(&dir.0)?;
        if self.model.is_mapped() {
            stat::mkdirat(&dirfd, name, Mode::from_bits_truncate(self.dmode))?;
            let mc = MappedCred::created(cred, libc::S_IFDIR);
            return self
                .set_mapped_cred(dirfd.as_fd(), name, &mc)
                .map_err(|e| LocalFs::undo_create(dirfd.as_fd(), name, true, e));
        }
        stat::mkdirat(&dirfd, name, Mode::from_bits_truncate(cred.mode))?;
        self.set_cred(dirfd.as_fd(), name, cred)
            .map_err(|e| LocalFs::undo_create(dirfd.as_fd(), name, true, e))
    }

    fn rename(&self, old: &V9fsPath, new: &V9fsPath) -> FsResult<()> {
        let (odir, oname) = split(&old.0);
        let (ndir, nname) = split(&new.0);
        self.rename_in(odir, oname, ndir, nname)
    }

    fn truncate(&self, path: &V9fsPath, size: u64) -> FsResult<()> {
        let fd = self.open_nofollow(&path.0, OFlag::O_WRONLY, Mode::empty())?;
        unistd::ftruncate(&fd, offset(size)?)
    }

    fn statfs(&self, path: &V9fsPath) -> FsResult<StatFs> {
        let fd = self.open_nofollow(&path.0, OFlag::O_RDONLY, Mode::empty())?;
        let s = statfs::fstatfs(&fd)?;
        // SAFETY: on Linux libc::fsid_t is a #[repr(C)] struct holding only
        // `[c_int; 2]`, so it has that array's size and every bit pattern is
        // valid for it; transmute checks the sizes.
        let val: [libc::c_int; 2] = unsafe { std::mem::transmute(s.filesystem_id()) };
        // As QEMU packs it: the first word zero-extended, the second above it.
        let fsid = u64::from(val[0] as u32) | (u64::from(val[1] as u32) << 32);
        #[allow(clippy::unnecessary_cast)]
        Ok(StatFs {
            ty: s.filesystem_type().0 as u32,
            bsize: s.block_size() as u64,
            blocks: s.blocks() as u64,
            bfree: s.blocks_free() as u64,
            bavail: s.blocks_available() as u64,
            files: s.files() as u64,
            ffree: s.files_free() as u64,
            fsid,
            namelen: s.maximum_name_length() as u64,
        })
    }

    fn lgetxattr(&self, path: &V9fsPath, name: &[u8], size: usize) -> FsResult<Vec<u8>> {
        let mut buf = vec![0u8; size];
        let n = self.xattr_get(path, name, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    fn lgetxattr_size(&self, path: &V9fsPath, name: &[u8]) -> FsResult<usize> {
        self.xattr_get(path, name, &mut [])
    }

    fn llistxattr(&self, path: &V9fsPath, size: usize) -> FsResult<Vec<u8>> {
        self.xattr_list(path, size)
    }

    fn llistxattr_size(&self, path: &V9fsPath) -> FsResult<usize> {
        self.xattr_list_size(path)
    }

    fn lsetxattr(&self, path: &V9fsPath, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        self.xattr_set(path, name, value, flags)
    }

    fn lremovexattr(&self, path: &V9fsPath, name: &[u8]) -> FsResult<()> {
        self.xattr_remove(path, name)
    }

    fn renameat(
        &self,
        olddir: &V9fsPath,
        oldname: &[u8],
        newdir: &V9fsPath,
        newname: &[u8],
    ) -> FsResult<()> {
        check_component(oldname)?;
        check_component(newname)?;
        self.rename_in(&olddir.0, oldname, &newdir.0, newname)
    }

    fn unlinkat(&self, dir: &V9fsPath, name: &[u8], flags: i32) -> FsResult<()> {
        self.check_entry_name(name)?;
        let flag = match flags {
            0 => UnlinkatFlags::NoRemoveDir,
            libc::AT_REMOVEDIR => UnlinkatFlags::RemoveDir,
            _ => return Err(Errno::EINVAL),
        };
        let dirfd = self.opendir_nofollow(&dir.0)?;
        self.unlink_common(dirfd.as_fd(), name, flag)
    }

    fn has_st_gen(&self) -> bool {
        self.st_gen
    }

    fn get_st_gen(&self, path: &V9fsPath, mode: u32) -> FsResult<u64> {
        if !self.st_gen || !is_reg_or_dir(mode) {
            return Err(Errno::ENOTTY);
        }
        let fd = self.open_nofollow(&path.0, OFlag::O_RDONLY, Mode::empty())?;
        let mut gen: libc::c_long = 0;
        // SAFETY: FS_IOC_GETVERSION writes at most a long through its
        // argument, which points to `gen`, a live, writable c_long; fd is an
        // open descriptor borrowed for the call.
        let r = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                FS_IOC_GETVERSION as libc::Ioctl,
                &mut gen as *mut libc::c_long,
            )
        };
        Errno::result(r)?;
        Ok(gen as u64)
    }
}

/// An open file.
struct LocalFile {
    fd: OwnedFd,
    writeout_immediate: bool,
    model: LocalModel,
    /// Record locks taken through this handle (`locks=posix`).
    locks: HeldLocks,
}

/// `fstat` on an open handle: the host's, with the credentials of the
/// mapped-xattr xattrs (through `fgetxattr`); mapped-file has no way from a
/// descriptor to its metadata file and fails with EOPNOTSUPP (the server
/// then stats the path).
fn fstat_handle(fd: BorrowedFd<'_>, model: LocalModel) -> FsResult<FileStat> {
    let mut st = file_stat(&stat::fstat(fd)?);
    match model {
        LocalModel::MappedXattr => {
            mapped::apply_xattr_cred(&mut st, |n, buf| mapped::sys_fgetxattr(fd, n, buf))
        }
        LocalModel::MappedFile => return Err(Errno::EOPNOTSUPP),
        LocalModel::Passthrough | LocalModel::None => {}
    }
    Ok(st)
}

impl OpenFile for LocalFile {
    fn preadv(&self, buf: &mut [u8], off: u64) -> FsResult<usize> {
        uio::pread(&self.fd, buf, offset(off)?)
    }

    fn pwritev(&self, buf: &[u8], off: u64) -> FsResult<usize> {
        let start = offset(off)?;
        let n = uio::pwrite(&self.fd, buf, start)?;
        if n > 0 && self.writeout_immediate {
            // Start writeback of what was written (not a data-integrity
            // sync); its result does not change the write's, as in QEMU.
            // SAFETY: sync_file_range only takes integers; fd is an open
            // descriptor borrowed for the call.
            let _ = unsafe {
                libc::sync_file_range(
                    self.fd.as_raw_fd(),
                    start,
                    n as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        }
        Ok(n)
    }

    fn fstat(&self) -> FsResult<FileStat> {
        fstat_handle(self.fd.as_fd(), self.model)
    }

    fn fsync(&self, datasync: bool) -> FsResult<()> {
        if datasync {
            unistd::fdatasync(&self.fd)
        } else {
            unistd::fsync(&self.fd)
        }
    }

    fn ftruncate(&self, size: u64) -> FsResult<()> {
        unistd::ftruncate(&self.fd, offset(size)?)
    }

    fn futimens(&self, times: &[Timespec; 2]) -> FsResult<()> {
        stat::futimens(&self.fd, &time_spec(&times[0]), &time_spec(&times[1]))
    }

    fn has_valid_handle(&self) -> bool {
        true
    }

    fn setlk(&self, owner: &[u8], lock: &RecordLock) -> FsResult<()> {
        self.locks.setlk(self.fd.as_fd(), owner, lock)
    }

    fn getlk(&self, owner: &[u8], lock: &RecordLock) -> FsResult<Option<LockConflict>> {
        self.locks.getlk(self.fd.as_fd(), owner, lock)
    }
}

/// The fixed part of a `struct linux_dirent64`: d_ino, d_off, d_reclen,
/// d_type; the NUL-terminated name follows.
const DIRENT_NAME: usize = 19;

fn getdents64(fd: BorrowedFd<'_>, buf: &mut [u8]) -> FsResult<usize> {
    // SAFETY: getdents64 writes at most buf.len() bytes into buf, which is
    // valid and exclusively borrowed for the call; fd is an open descriptor
    // borrowed for the call.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    Errno::result(n).map(|n| n as usize)
}

/// An open directory: its fd and a getdents64 buffer, as glibc's `DIR`.
struct LocalDir {
    fd: OwnedFd,
    model: LocalModel,
    /// Holds `DIRENT_BUF` bytes from `base`, 8-byte aligned as the kernel
    /// lays out its records.
    buf: Vec<u8>,
    base: usize,
    /// The unread records are `next..end` (relative to `base`).
    next: usize,
    end: usize,
    /// The cookie of the position: 0 at the start, else the d_off of the
    /// last entry returned or the offset last sought to.
    pos: i64,
}

impl LocalDir {
    fn new(fd: OwnedFd, model: LocalModel) -> LocalDir {
        let buf = vec![0u8; DIRENT_BUF + 8];
        let base = buf.as_ptr().align_offset(8).min(8);
        LocalDir {
            fd,
            model,
            buf,
            base,
            next: 0,
            end: 0,
            pos: 0,
        }
    }
}

impl LocalDir {
    /// The next host entry, as getdents64 gives it.
    fn next_host_entry(&mut self) -> FsResult<Option<DirEnt>> {
        if self.next >= self.end {
            let buf = &mut self.buf[self.base..self.base + DIRENT_BUF];
            let n = getdents64(self.fd.as_fd(), buf)?;
            self.next = 0;
            self.end = n;
            if n == 0 {
                return Ok(None);
            }
        }
        let rec = &self.buf[self.base + self.next..self.base + self.end];
        if rec.len() < DIRENT_NAME {
            return Err(Errno::EIO);
        }
        let ino = u64::from_ne_bytes(rec[0..8].try_into().map_err(|_| Errno::EIO)?);
        let off = i64::from_ne_bytes(rec[8..16].try_into().map_err(|_| Errno::EIO)?);
        let reclen = usize::from(u16::from_ne_bytes(
            rec[16..18].try_into().map_err(|_| Errno::EIO)?,
        ));
        if reclen < DIRENT_NAME || reclen > rec.len() {
            return Err(Errno::EIO);
        }
        let ty = rec[18];
        let name = &rec[DIRENT_NAME..reclen];
        let name_len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let ent = DirEnt {
            name: name[..name_len].to_vec(),
            ino,
            off,
            ty,
        };
        self.next += reclen;
        self.pos = off;
        Ok(Some(ent))
    }
}

impl DirStream for LocalDir {
    /// The next entry; the mapped models report no file types (the host's
    /// are not the client's), and mapped-file skips its metadata.
    fn readdir(&mut self) -> FsResult<Option<DirEnt>> {
        loop {
            let Some(mut ent) = self.next_host_entry()? else {
                return Ok(None);
            };
            match self.model {
                LocalModel::Passthrough | LocalModel::None => {}
                LocalModel::MappedXattr => ent.ty = libc::DT_UNKNOWN,
                LocalModel::MappedFile => {
                    if mapped::is_metadata_name(&ent.name) {
                        continue;
                    }
                    ent.ty = libc::DT_UNKNOWN;
                }
            }
            return Ok(Some(ent));
        }
    }

    fn telldir(&mut self) -> FsResult<i64> {
        Ok(self.pos)
    }

    fn seekdir(&mut self, off: i64) {
        // As glibc's seekdir: the result of the lseek is not reported.
        let _ = unistd::lseek(&self.fd, off, Whence::SeekSet);
        self.next = 0;
        self.end = 0;
        self.pos = off;
    }

    fn rewinddir(&mut self) {
        self.seekdir(0);
    }

    fn fstat(&self) -> FsResult<FileStat> {
        fstat_handle(self.fd.as_fd(), self.model)
    }

    fn fsync(&self, datasync: bool) -> FsResult<()> {
        if datasync {
            unistd::fdatasync(&self.fd)
        } else {
            unistd::fsync(&self.fd)
        }
    }

    fn futimens(&self, times: &[Timespec; 2]) -> FsResult<()> {
        stat::futimens(&self.fd, &time_spec(&times[0]), &time_spec(&times[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{Export, ExportOptions};
    use crate::Compat;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    /// A directory under the system temp dir, removed on drop.
    pub(super) struct TempDir(pub(super) PathBuf);

    impl TempDir {
        pub(super) fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("coro9p-local-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir(&p).unwrap();
            TempDir(p)
        }

        pub(super) fn fs(&self, model: LocalModel) -> LocalFs {
            LocalFs::open(&self.0, model, false).unwrap()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    pub(super) fn p(s: &str) -> V9fsPath {
        V9fsPath(s.as_bytes().to_vec())
    }

    pub(super) fn root() -> V9fsPath {
        p(".")
    }

    pub(super) fn cred(mode: u32) -> FsCred {
        FsCred {
            mode,
            ..FsCred::default()
        }
    }

    pub(super) fn is_root() -> bool {
        unistd::geteuid().is_root()
    }

    pub(super) const CREATE: i32 = libc::O_CREAT | libc::O_RDWR;

    /// Fails the test unless `r` is one of the errors in `want`.
    #[track_caller]
    pub(super) fn assert_err<T>(r: FsResult<T>, want: &[Errno]) {
        match r {
            Err(e) if want.contains(&e) => {}
            Err(e) => panic!("expected one of {want:?}, got {e}"),
            Ok(_) => panic!("expected one of {want:?}, got success"),
        }
    }

    #[test]
    fn name_to_path_is_string_work() {
        let tmp = TempDir::new("names");
        let fs = tmp.fs(LocalModel::Passthrough);
        let n2p = |dir: Option<&str>, name: &[u8]| {
            let dir = dir.map(p);
            fs.name_to_path(dir.as_ref(), name).map(|v| v.0)
        };
        assert_eq!(n2p(None, b"/"), Ok(b".".to_vec()));
        assert_eq!(n2p(None, b"."), Ok(b".".to_vec()));
        assert_eq!(n2p(None, b".."), Ok(b".".to_vec()));
        assert_eq!(n2p(None, b"a"), Ok(b"./a".to_vec()));
        assert_eq!(n2p(Some("."), b"."), Ok(b".".to_vec()));
        assert_eq!(n2p(Some("."), b".."), Ok(b".".to_vec()));
        assert_eq!(n2p(Some("."), b"a"), Ok(b"./a".to_vec()));
        assert_eq!(n2p(Some("./a"), b"."), Ok(b"./a".to_vec()));
        assert_eq!(n2p(Some("./a"), b".."), Ok(b".".to_vec()));
        assert_eq!(n2p(Some("./a/b"), b".."), Ok(b"./a".to_vec()));
        assert_eq!(n2p(Some("./a"), b"b"), Ok(b"./a/b".to_vec()));
        assert_eq!(n2p(Some("./a"), b"\xff\xfe"), Ok(b"./a/\xff\xfe".to_vec()));
        assert_eq!(n2p(Some("./a"), b"x/y"), Err(Errno::EINVAL));
        assert_eq!(fs.basename(&p("./a/b")), b"b");
        assert_eq!(fs.basename(&root()), b".");
        // No lookups: the paths need not exist.
        assert_eq!(fs.lstat(&p("./a")), Err(Errno::ENOENT));

        assert_eq!(
            fs.export_flags().0,
            ExportFlags::PATHNAME_FSCONTEXT | ExportFlags::SM_PASSTHROUGH
        );
        assert_eq!(
            tmp.fs(LocalModel::None).export_flags().0,
            ExportFlags::PATHNAME_FSCONTEXT | ExportFlags::SM_NONE
        );

        // Names are bytes, not necessarily UTF-8.
        let ctx = SessionCtx::default();
        fs.open2(&root(), b"\xff\xfe", CREATE, &cred(0o644), &ctx)
            .unwrap();
        assert_eq!(fs.lstat(&V9fsPath(b"./a\0b".to_vec())), Err(Errno::EINVAL));
        let st = fs.lstat(&V9fsPath(b"./\xff\xfe".to_vec())).unwrap();
        assert_eq!(st.mode, libc::S_IFREG | 0o644);
    }

    #[test]
    fn symlinks_to_outside_are_never_followed() {
        let tmp = TempDir::new("escape");
        let outside = TempDir::new("outside");
        let secret = outside.0.join("secret");
        fs::write(&secret, b"secret").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        symlink(&outside.0, tmp.0.join("out")).unwrap();
        symlink(&secret, tmp.0.join("file")).unwrap();
        symlink("/etc", tmp.0.join("etc")).unwrap();
        let fs = tmp.fs(LocalModel::Passthrough);
        let ctx = SessionCtx::default();
        let loopy = [Errno::ELOOP, Errno::ENOTDIR];

        for link in ["./out", "./file", "./etc"] {
            // The link itself can be looked at, not through.
            assert!(fs.lstat(&p(link)).unwrap().is_symlink());
            assert_err(fs.open(&p(link), libc::O_RDONLY, &ctx), &loopy);
            assert_err(fs.opendir(&p(link)), &loopy);
            assert_err(fs.chmod(&p(link), &cred(0o777)), &[Errno::ELOOP]);
            assert_err(fs.truncate(&p(link), 0), &loopy);
            assert_err(fs.statfs(&p(link)), &loopy);
            if fs.has_st_gen() {
                assert_err(fs.get_st_gen(&p(link), libc::S_IFREG), &loopy);
            }
        }
        for through in ["./out/secret", "./etc/passwd", "./etc/hostname", "./file/x"] {
            let path = p(through);
            assert_err(fs.lstat(&path), &loopy);
            assert_err(fs.readlink(&path), &loopy);
            assert_err(fs.open(&path, libc::O_RDONLY, &ctx), &loopy);
            assert_err(fs.open(&path, libc::O_WRONLY | libc::O_TRUNC, &ctx), &loopy);
            assert_err(fs.opendir(&path), &loopy);
            assert_err(fs.chmod(&path, &cred(0o777)), &loopy);
            assert_err(fs.chown(&path, &FsCred::default()), &loopy);
            assert_err(fs.utimensat(&path, &[Timespec::default(); 2]), &loopy);
            assert_err(fs.truncate(&path, 0), &loopy);
            assert_err(fs.statfs(&path), &loopy);
            assert_err(fs.remove(&path), &loopy);
            assert_err(fs.lgetxattr_size(&path, b"user.x"), &loopy);
            assert_err(fs.lgetxattr(&path, b"user.x", 16), &loopy);
            assert_err(fs.llistxattr_size(&path), &loopy);
            assert_err(fs.llistxattr(&path, 1024), &loopy);
            assert_err(fs.lsetxattr(&path, b"user.x", b"v", 0), &loopy);
            assert_err(fs.lremovexattr(&path, b"user.x"), &loopy);
        }
        // Changes are only tried through the link to the temp target, never
        // through the one to /etc (the tests run as root).
        {
            let dir = p("./out");
            assert_err(fs.mkdir(&dir, b"new", &cred(0o755)), &loopy);
            assert_err(fs.open2(&dir, b"new", CREATE, &cred(0o644), &ctx), &loopy);
            assert_err(fs.mknod(&dir, b"new", &cred(libc::S_IFIFO | 0o644)), &loopy);
            assert_err(fs.symlink(b"x", &dir, b"new", &cred(0o777)), &loopy);
            assert_err(fs.unlinkat(&dir, b"secret", 0), &loopy);
            assert_err(fs.renameat(&dir, b"secret", &root(), b"got"), &loopy);
            assert_err(fs.link(&p("./out/secret"), &root(), b"got"), &loopy);
            assert_err(fs.rename(&p("./out/secret"), &p("./got")), &loopy);
        }
        // Nothing reached the targets.
        let md = fs::metadata(&secret).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert_eq!(fs::read(&secret).unwrap(), b"secret");
        let names: Vec<_> = fs::read_dir(&outside.0).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert!(fs::symlink_metadata(tmp.0.join("got")).is_err());
        let out_fs = outside.fs(LocalModel::Passthrough);
        assert_eq!(out_fs.llistxattr_size(&p("./secret")), Ok(0));

        // Only the export root itself may be reached through a symlink.
        let link_root = TempDir::new("linkroot");
        let via = link_root.0.join("root");
        symlink(&tmp.0, &via).unwrap();
        let fs2 = LocalFs::open(&via, LocalModel::Passthrough, false).unwrap();
        assert!(fs2.lstat(&root()).unwrap().is_dir());
        assert!(fs2.lstat(&p("./out")).unwrap().is_symlink());
    }

    #[test]
    fn special_files_are_refused_on_open() {
        let tmp = TempDir::new("special");
        let fs = tmp.fs(LocalModel::Passthrough);
        let ctx = SessionCtx::default();
        fs.mknod(&root(), b"fifo", &cred(libc::S_IFIFO | 0o666))
            .unwrap();
        fs.mknod(&root(), b"sock", &cred(libc::S_IFSOCK | 0o666))
            .unwrap();
        let mut nodes = vec![("./fifo", libc::S_IFIFO), ("./sock", libc::S_IFSOCK)];
        let null = FsCred {
            rdev: stat::makedev(1, 3),
            ..cred(libc::S_IFCHR | 0o666)
        };
        match fs.mknod(&root(), b"null", &null) {
            Ok(()) => nodes.push(("./null", libc::S_IFCHR)),
            Err(Errno::EPERM) => eprintln!("no CAP_MKNOD here: char device case skipped"),
            Err(e) => panic!("mknod of a char device: {e}"),
        }
        for (path, ty) in nodes {
            let path = p(path);
            // Created with the exact mode, whatever the umask (the chmod
            // goes through an O_PATH open, which special files may have).
            assert_eq!(fs.lstat(&path).unwrap().mode, ty | 0o666);
            for flags in [libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR] {
                assert_eq!(fs.open(&path, flags, &ctx).err(), Some(Errno::ENXIO));
            }
            assert_eq!(fs.truncate(&path, 0), Err(Errno::ENXIO));
            assert_eq!(fs.statfs(&path).err(), Some(Errno::ENXIO));
            assert_eq!(fs.opendir(&path).err(), Some(Errno::ENOTDIR));
            assert_eq!(fs.get_st_gen(&path, ty), Err(Errno::ENOTTY));
            assert_eq!(
                fs.open2(
                    &root(),
                    &fs.basename(&path),
                    libc::O_CREAT | libc::O_RDONLY,
                    &cred(0o644),
                    &ctx
                )
                .err(),
                Some(Errno::ENXIO)
            );
            fs.chmod(&path, &cred(0o600)).unwrap();
            assert_eq!(fs.lstat(&path).unwrap().mode, ty | 0o600);
        }
    }

    #[test]
    fn create_link_rename_and_unlink_round_trips() {
        let tmp = TempDir::new("ops");
        let fs = tmp.fs(LocalModel::Passthrough);
        let ctx = SessionCtx::default();

        let f = fs
            .open2(&root(), b"f", CREATE | libc::O_EXCL, &cred(0o640), &ctx)
            .unwrap();
        assert!(f.has_valid_handle());
        assert_eq!(f.pwritev(b"hello world", 0), Ok(11));
        let mut buf = [0u8; 5];
        assert_eq!(f.preadv(&mut buf, 6), Ok(5));
        assert_eq!(&buf, b"world");
        f.ftruncate(5).unwrap();
        f.fsync(false).unwrap();
        f.fsync(true).unwrap();
        let times = [
            Timespec { sec: 1000, nsec: 5 },
            Timespec { sec: 2000, nsec: 7 },
        ];
        f.futimens(&times).unwrap();
        let st = f.fstat().unwrap();
        assert_eq!((st.mode, st.size, st.nlink), (libc::S_IFREG | 0o640, 5, 1));
        assert_eq!((st.atime, st.mtime), (times[0], times[1]));
        assert_eq!(fs.lstat(&p("./f")).unwrap(), st);
        assert_eq!(
            fs.open2(&root(), b"f", CREATE | libc::O_EXCL, &cred(0o640), &ctx)
                .err(),
            Some(Errno::EEXIST)
        );

        fs.mkdir(&root(), b"d", &cred(libc::S_IFDIR | 0o751))
            .unwrap();
        assert_eq!(fs.lstat(&p("./d")).unwrap().mode, libc::S_IFDIR | 0o751);
        assert_eq!(fs.mkdir(&root(), b"d", &cred(0o755)), Err(Errno::EEXIST));

        fs.symlink(b"f", &root(), b"s", &cred(0o777)).unwrap();
        assert!(fs.lstat(&p("./s")).unwrap().is_symlink());
        assert_eq!(fs.readlink(&p("./s")), Ok(b"f".to_vec()));
        // utimensat and chown act on the link, not on what it names.
        let t = [Timespec { sec: 42, nsec: 0 }; 2];
        fs.utimensat(&p("./s"), &t).unwrap();
        assert_eq!(fs.lstat(&p("./s")).unwrap().mtime.sec, 42);
        assert_eq!(fs.lstat(&p("./f")).unwrap().mtime.sec, 2000);

        fs.link(&p("./f"), &p("./d"), b"hard").unwrap();
        assert_eq!(fs.lstat(&p("./f")).unwrap().nlink, 2);
        assert_eq!(
            fs.lstat(&p("./d/hard")).unwrap().ino,
            fs.lstat(&p("./f")).unwrap().ino
        );

        fs.rename(&p("./f"), &p("./d/g")).unwrap();
        assert_eq!(fs.lstat(&p("./f")), Err(Errno::ENOENT));
        assert_eq!(fs.lstat(&p("./d/g")).unwrap().size, 5);
        fs.renameat(&p("./d"), b"g", &root(), b"f2").unwrap();
        assert_eq!(fs.lstat(&p("./d/g")), Err(Errno::ENOENT));
        assert_eq!(fs.lstat(&p("./f2")).unwrap().nlink, 2);

        fs.truncate(&p("./f2"), 2).unwrap();
        let h = fs.open(&p("./f2"), libc::O_RDONLY, &ctx).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(h.preadv(&mut buf, 0), Ok(2));
        assert_eq!(&buf[..2], b"he");
        assert_eq!(fs.truncate(&p("./d"), 0), Err(Errno::EISDIR));

        assert_eq!(fs.unlinkat(&root(), b"d", 0), Err(Errno::EISDIR));
        assert_eq!(
            fs.unlinkat(&root(), b"d", libc::AT_REMOVEDIR),
            Err(Errno::ENOTEMPTY)
        );
        fs.unlinkat(&p("./d"), b"hard", 0).unwrap();
        fs.unlinkat(&root(), b"d", libc::AT_REMOVEDIR).unwrap();
        // remove picks AT_REMOVEDIR itself, and removes a link, not its
        // target.
        fs.mkdir(&root(), b"e", &cred(0o700)).unwrap();
        fs.symlink(b"e", &root(), b"se", &cred(0o777)).unwrap();
        fs.remove(&p("./se")).unwrap();
        assert!(fs.lstat(&p("./e")).unwrap().is_dir());
        fs.remove(&p("./e")).unwrap();
        fs.remove(&p("./s")).unwrap();
        fs.remove(&p("./f2")).unwrap();
        assert_eq!(fs.remove(&p("./f2")), Err(Errno::ENOENT));
        // The open handle outlives the name.
        assert_eq!(h.fstat().unwrap().nlink, 0);
        let names: Vec<_> = fs::read_dir(&tmp.0).unwrap().collect();
        assert!(names.is_empty(), "{names:?}");

        // writeout=immediate writes through as well.
        let wfs = LocalFs::open(&tmp.0, LocalModel::Passthrough, true).unwrap();
        assert!(wfs.export_flags().has(ExportFlags::IMMEDIATE_WRITEOUT));
        let w = wfs
            .open2(&root(), b"w", CREATE, &cred(0o600), &ctx)
            .unwrap();
        assert_eq!(w.pwritev(b"abc", 10), Ok(3));
        assert_eq!(w.fstat().unwrap().size, 13);
    }

    pub(super) fn read_all(dir: &mut dyn DirStream) -> Vec<DirEnt> {
        let mut out = Vec::new();
        while let Some(e) = dir.readdir().unwrap() {
            out.push(e);
        }
        out
    }

    #[test]
    fn readdir_cookies_seek_and_tell() {
        let tmp = TempDir::new("readdir");
        for n in ["a", "b", "c", "d", "e"] {
            fs::write(tmp.0.join(n), n).unwrap();
        }
        fs::create_dir(tmp.0.join("sub")).unwrap();
        let fs = tmp.fs(LocalModel::Passthrough);
        let handle = fs.opendir(&root()).unwrap();
        let mut dir = handle.lock().unwrap();
        assert!(fs.dir_has_valid_handle());
        assert!(dir.fstat().unwrap().is_dir());
        assert_eq!(dir.telldir(), Ok(0));
        let all = read_all(&mut **dir);
        let mut names: Vec<_> = all
            .iter()
            .map(|e| String::from_utf8(e.name.clone()).unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".", "..", "a", "b", "c", "d", "e", "sub"]);
        for e in &all {
            let want = match e.name.as_slice() {
                b"." | b".." | b"sub" => libc::DT_DIR,
                _ => libc::DT_REG,
            };
            assert_eq!(e.ty, want, "{:?}", e.name);
            if e.name != b".." {
                let path = fs.name_to_path(Some(&root()), &e.name).unwrap();
                assert_eq!(fs.lstat(&path).unwrap().ino, e.ino);
            }
        }
        assert_eq!(dir.telldir(), Ok(all.last().unwrap().off));
        assert_eq!(dir.readdir(), Ok(None));

        dir.rewinddir();
        assert_eq!(dir.telldir(), Ok(0));
        for e in &all[..4] {
            assert_eq!(dir.readdir().unwrap().as_ref(), Some(e));
        }
        let pos = dir.telldir().unwrap();
        assert_eq!(pos, all[3].off);
        assert_eq!(read_all(&mut **dir), &all[4..]);
        dir.seekdir(pos);
        assert_eq!(dir.telldir(), Ok(pos));
        assert_eq!(read_all(&mut **dir), &all[4..]);
        for (i, e) in all.iter().enumerate() {
            dir.seekdir(e.off);
            assert_eq!(dir.readdir().unwrap().as_ref(), all.get(i + 1));
        }
        dir.seekdir(0);
        assert_eq!(read_all(&mut **dir), all);
        dir.fsync(false).unwrap();
        dir.futimens(&[Timespec { sec: 7, nsec: 0 }; 2]).unwrap();
        assert_eq!(fs.lstat(&root()).unwrap().mtime.sec, 7);
    }

    #[test]
    fn readdir_refills_its_buffer_and_seeks_into_later_batches() {
        let tmp = TempDir::new("bigdir");
        let fs = tmp.fs(LocalModel::None);
        let count = 1500;
        for i in 0..count {
            fs::write(tmp.0.join(format!("{i:0100}")), b"").unwrap();
        }
        let handle = fs.opendir(&root()).unwrap();
        let mut dir = handle.lock().unwrap();
        let all = read_all(&mut **dir);
        assert_eq!(all.len(), count + 2);
        let mut names: Vec<_> = all.iter().map(|e| e.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count + 2);
        for i in [0, 700, 1200, count] {
            dir.seekdir(all[i].off);
            assert_eq!(read_all(&mut **dir), &all[i + 1..]);
        }
    }

    #[test]
    fn paths_deeper_than_path_max_work() {
        let tmp = TempDir::new("deep");
        let fs = tmp.fs(LocalModel::Passthrough);
        let ctx = SessionCtx::default();
        let name = [b'd'; 200];
        let mut dir = root();
        for _ in 0..25 {
            fs.mkdir(&dir, &name, &cred(0o755)).unwrap();
            dir = fs.name_to_path(Some(&dir), &name).unwrap();
        }
        assert!(dir.0.len() > 5000);
        let f = fs.open2(&dir, b"f", CREATE, &cred(0o644), &ctx).unwrap();
        assert_eq!(f.pwritev(b"deep", 0), Ok(4));
        let fp = fs.name_to_path(Some(&dir), b"f").unwrap();
        assert_eq!(fs.lstat(&fp).unwrap().size, 4);
        let h = fs.open(&fp, libc::O_RDONLY, &ctx).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(h.preadv(&mut buf, 0), Ok(4));
        fs.truncate(&fp, 1).unwrap();
        fs.chmod(&fp, &cred(0o600)).unwrap();
        assert_eq!(fs.lstat(&fp).unwrap().mode, libc::S_IFREG | 0o600);
        assert!(fs.statfs(&fp).unwrap().bsize > 0);
        fs.lsetxattr(&fp, b"user.deep", b"1", 0).unwrap();
        assert_eq!(fs.lgetxattr(&fp, b"user.deep", 1), Ok(b"1".to_vec()));
        fs.symlink(b"f", &dir, b"s", &cred(0o777)).unwrap();
        let sp = fs.name_to_path(Some(&dir), b"s").unwrap();
        assert_eq!(fs.readlink(&sp), Ok(b"f".to_vec()));
        let handle = fs.opendir(&dir).unwrap();
        let mut d = handle.lock().unwrap();
        let names: Vec<_> = read_all(&mut **d).into_iter().map(|e| e.name).collect();
        assert!(names.contains(&b"f".to_vec()) && names.contains(&b"s".to_vec()));
        let up = fs.name_to_path(Some(&dir), b"..").unwrap();
        fs.rename(&fp, &fs.name_to_path(Some(&up), b"g").unwrap())
            .unwrap();
        fs.unlinkat(&up, b"g", 0).unwrap();
        fs.remove(&sp).unwrap();
        fs.remove(&dir).unwrap();
        assert_eq!(fs.lstat(&dir), Err(Errno::ENOENT));
    }

    #[test]
    fn passthrough_creates_with_the_clients_owner() {
        if !is_root() {
            eprintln!("not root: passthrough chown case skipped");
            return;
        }
        let tmp = TempDir::new("owner");
        let fs = tmp.fs(LocalModel::Passthrough);
        let ctx = SessionCtx::default();
        let owned = |mode| FsCred {
            uid: Some(4242),
            gid: Some(4343),
            mode,
            rdev: 0,
        };
        // chown clears set-id bits, so the chmod has to come after it.
        fs.open2(&root(), b"f", CREATE, &owned(0o4750), &ctx)
            .unwrap();
        fs.mkdir(&root(), b"d", &owned(libc::S_IFDIR | 0o2770))
            .unwrap();
        fs.symlink(b"f", &root(), b"s", &owned(0o777)).unwrap();
        fs.mknod(&root(), b"p", &owned(libc::S_IFIFO | 0o640))
            .unwrap();
        for (name, mode) in [
            ("./f", libc::S_IFREG | 0o4750),
            ("./d", libc::S_IFDIR | 0o2770),
            ("./p", libc::S_IFIFO | 0o640),
        ] {
            let st = fs.lstat(&p(name)).unwrap();
            assert_eq!((st.uid, st.gid, st.mode), (4242, 4343, mode), "{name}");
        }
        let st = fs.lstat(&p("./s")).unwrap();
        assert_eq!((st.uid, st.gid), (4242, 4343));
        // chown with -1 leaves that id alone.
        let c = FsCred {
            uid: Some(7),
            ..FsCred::default()
        };
        fs.chown(&p("./f"), &c).unwrap();
        let st = fs.lstat(&p("./f")).unwrap();
        assert_eq!((st.uid, st.gid), (7, 4343));
        fs.chown(&p("./s"), &c).unwrap();
        assert_eq!(fs.lstat(&p("./s")).unwrap().uid, 7);
        assert_eq!(fs.lstat(&p("./f")).unwrap().uid, 7);
    }

    const UNPRIVILEGED_DIR: &str = "CORO9P_LOCAL_TEST_UNPRIVILEGED_DIR";

    /// Run by a user who may not give files away: `none` creates anyway,
    /// passthrough fails with EPERM and leaves nothing behind.
    fn failing_chown_checks(dir: &Path) {
        let ctx = SessionCtx::default();
        let me = unistd::geteuid().as_raw();
        let to_root = |mode| FsCred {
            uid: Some(0),
            gid: Some(0),
            mode,
            rdev: 0,
        };
        let none = LocalFs::open(dir, LocalModel::None, false).unwrap();
        none.open2(&root(), b"n", CREATE, &to_root(0o640), &ctx)
            .unwrap();
        none.mkdir(&root(), b"nd", &to_root(libc::S_IFDIR | 0o700))
            .unwrap();
        none.mknod(&root(), b"np", &to_root(libc::S_IFIFO | 0o604))
            .unwrap();
        none.symlink(b"n", &root(), b"ns", &to_root(0o777)).unwrap();
        for (name, mode) in [
            ("./n", libc::S_IFREG | 0o640),
            ("./nd", libc::S_IFDIR | 0o700),
            ("./np", libc::S_IFIFO | 0o604),
        ] {
            let st = none.lstat(&p(name)).unwrap();
            assert_eq!((st.uid, st.mode), (me, mode), "{name}");
        }
        assert_eq!(none.lstat(&p("./ns")).unwrap().uid, me);

        let pt = LocalFs::open(dir, LocalModel::Passthrough, false).unwrap();
        assert_eq!(
            pt.open2(&root(), b"p", CREATE, &to_root(0o640), &ctx).err(),
            Some(Errno::EPERM)
        );
        assert_eq!(
            pt.mkdir(&root(), b"pd", &to_root(libc::S_IFDIR | 0o700)),
            Err(Errno::EPERM)
        );
        assert_eq!(
            pt.mknod(&root(), b"pp", &to_root(libc::S_IFIFO | 0o600)),
            Err(Errno::EPERM)
        );
        assert_eq!(
            pt.symlink(b"n", &root(), b"ps", &to_root(0o777)),
            Err(Errno::EPERM)
        );
        for name in ["./p", "./pd", "./pp", "./ps"] {
            assert_eq!(pt.lstat(&p(name)), Err(Errno::ENOENT), "{name}");
        }
    }

    #[test]
    fn none_ignores_a_failing_chown_passthrough_does_not() {
        if let Some(dir) = std::env::var_os(UNPRIVILEGED_DIR) {
            // The re-executed copy below, running as nobody.
            failing_chown_checks(Path::new(&dir));
            return;
        }
        let tmp = TempDir::new("chown");
        if !is_root() {
            failing_chown_checks(&tmp.0);
            return;
        }
        // Root may chown anything: run the checks in a copy of this test
        // that has dropped to nobody.
        fs::set_permissions(&tmp.0, fs::Permissions::from_mode(0o777)).unwrap();
        let test = "fsdev::local::tests::none_ignores_a_failing_chown_passthrough_does_not";
        crate::testing::rerun_as_nobody(test, UNPRIVILEGED_DIR, &tmp.0);
    }

    /// A POSIX ACL xattr value granting uid 1234 read access.
    pub(super) fn extended_acl() -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 6u16, u32::MAX),
            (0x02, 4, 1234),
            (0x04, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn xattr_namespaces_follow_the_model() {
        let tmp = TempDir::new("xattr");
        let fs = tmp.fs(LocalModel::Passthrough);
        let none = tmp.fs(LocalModel::None);
        let ctx = SessionCtx::default();
        fs.open2(&root(), b"f", CREATE, &cred(0o644), &ctx).unwrap();
        let f = p("./f");

        assert_eq!(fs.llistxattr_size(&f), Ok(0));
        assert_eq!(fs.llistxattr(&f, 0), Ok(Vec::new()));
        fs.lsetxattr(&f, b"user.a", b"12345", 0).unwrap();
        assert_eq!(fs.lgetxattr_size(&f, b"user.a"), Ok(5));
        assert_eq!(fs.lgetxattr(&f, b"user.a", 5), Ok(b"12345".to_vec()));
        assert_eq!(fs.lgetxattr(&f, b"user.a", 2), Err(Errno::ERANGE));
        assert_eq!(
            fs.lsetxattr(&f, b"user.a", b"x", libc::XATTR_CREATE),
            Err(Errno::EEXIST)
        );
        assert_eq!(none.lgetxattr(&f, b"user.a", 5), Ok(b"12345".to_vec()));
        // The root too.
        fs.lsetxattr(&root(), b"user.r", b"", 0).unwrap();
        assert_eq!(fs.lgetxattr_size(&root(), b"user.r"), Ok(0));

        for name in [
            &b"trusted.t"[..],
            b"security.s",
            b"system.other",
            b"userx",
            b"",
        ] {
            for fs in [&fs, &none] {
                assert_eq!(fs.lgetxattr_size(&f, name), Err(Errno::EOPNOTSUPP));
                assert_eq!(fs.lgetxattr(&f, name, 8), Err(Errno::EOPNOTSUPP));
                assert_eq!(fs.lsetxattr(&f, name, b"v", 0), Err(Errno::EOPNOTSUPP));
                assert_eq!(fs.lremovexattr(&f, name), Err(Errno::EOPNOTSUPP));
            }
        }
        if is_root() {
            // A host xattr outside the served namespaces is not listed.
            fs.with_xattr_node(&f, |node| sys_lsetxattr(node, c"trusted.t", b"x", 0))
                .unwrap();
        }
        assert_eq!(fs.llistxattr_size(&f), Ok(7));
        assert_eq!(fs.llistxattr(&f, 7), Ok(b"user.a\0".to_vec()));
        assert_eq!(fs.llistxattr(&f, 6), Err(Errno::ERANGE));

        let acl = b"system.posix_acl_access";
        for name in [&acl[..], b"system.posix_acl_default"] {
            assert_eq!(none.lgetxattr_size(&f, name), Err(Errno::ENOTSUP));
            assert_eq!(none.lgetxattr(&f, name, 64), Err(Errno::ENOTSUP));
            assert_eq!(
                none.lsetxattr(&f, name, &extended_acl(), 0),
                Err(Errno::ENOTSUP)
            );
            assert_eq!(none.lremovexattr(&f, name), Err(Errno::ENOTSUP));
        }
        assert_eq!(fs.lgetxattr_size(&f, acl), Err(Errno::ENODATA));
        match fs.lsetxattr(&f, acl, &extended_acl(), 0) {
            Err(Errno::EOPNOTSUPP) => eprintln!("no POSIX ACLs here: ACL listing skipped"),
            r => {
                r.unwrap();
                assert_eq!(fs.lgetxattr_size(&f, acl), Ok(extended_acl().len()));
                let mut want = b"user.a\0".to_vec();
                want.extend_from_slice(acl);
                want.push(0);
                let mut got = fs.llistxattr(&f, 64).unwrap();
                // Host order is not specified: compare as sets.
                let mut a: Vec<_> = got.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
                let mut b: Vec<_> = want.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
                a.sort();
                b.sort();
                assert_eq!(a, b);
                assert_eq!(fs.llistxattr_size(&f), Ok(want.len()));
                got = none.llistxattr(&f, 64).unwrap();
                assert_eq!(got, b"user.a\0");
                assert_eq!(none.llistxattr_size(&f), Ok(7));
                fs.lremovexattr(&f, acl).unwrap();
            }
        }

        fs.lremovexattr(&f, b"user.a").unwrap();
        assert_eq!(fs.lgetxattr_size(&f, b"user.a"), Err(Errno::ENODATA));
        assert_eq!(fs.lremovexattr(&f, b"user.a"), Err(Errno::ENODATA));
        assert_eq!(fs.llistxattr_size(&f), Ok(0));
    }

    #[test]
    fn st_gen_only_on_file_systems_that_have_it() {
        let tmp = TempDir::new("stgen");
        let fs = tmp.fs(LocalModel::Passthrough);
        let ty = fs.statfs(&root()).unwrap().ty;
        assert_eq!(
            fs.has_st_gen(),
            ST_GEN_MAGICS.contains(&i64::from(ty)),
            "fs type {ty:#x}"
        );
        fs::write(tmp.0.join("f"), b"").unwrap();
        assert_eq!(fs.get_st_gen(&p("./f"), libc::S_IFLNK), Err(Errno::ENOTTY));
        if fs.has_st_gen() {
            let g = fs.get_st_gen(&p("./f"), libc::S_IFREG).unwrap();
            assert_eq!(fs.get_st_gen(&p("./f"), libc::S_IFREG), Ok(g));
            fs.get_st_gen(&root(), libc::S_IFDIR).unwrap();
        } else {
            assert_eq!(fs.get_st_gen(&p("./f"), libc::S_IFREG), Err(Errno::ENOTTY));
        }
    }

    #[test]
    fn export_open_makes_a_local_export() {
        let tmp = TempDir::new("export");
        let open = |extra: &str, compat| {
            let spec = format!("local,path={}{extra}", tmp.0.display());
            Export::open(ExportOptions::parse(&spec).unwrap(), compat)
        };
        let pt = ",security_model=passthrough";
        let e = open(pt, Compat::Master).unwrap();
        assert_eq!(
            e.flags.0,
            ExportFlags::PATHNAME_FSCONTEXT
                | ExportFlags::SM_PASSTHROUGH
                | ExportFlags::REMAP_INODES
        );
        assert_eq!(e.root_dev, fs::metadata(&tmp.0).unwrap().dev());
        let e = open(pt, Compat::V7_2).unwrap();
        assert_eq!(
            e.flags.0,
            ExportFlags::PATHNAME_FSCONTEXT | ExportFlags::SM_PASSTHROUGH
        );
        let e = open(
            ",security_model=none,multidevs=forbid,writeout=immediate,readonly=on",
            Compat::Master,
        )
        .unwrap();
        assert_eq!(
            e.flags.0,
            ExportFlags::PATHNAME_FSCONTEXT
                | ExportFlags::SM_NONE
                | ExportFlags::FORBID_MULTIDEVS
                | ExportFlags::IMMEDIATE_WRITEOUT
                | ExportFlags::RDONLY
        );
        let e = open(",security_model=none,multidevs=warn", Compat::Master).unwrap();
        assert!(!e.flags.has(ExportFlags::REMAP_INODES));
        let e = open(",security_model=none,multidevs=remap", Compat::V7_2).unwrap();
        assert!(e.flags.has(ExportFlags::REMAP_INODES));

        let err = |r: Result<std::rc::Rc<Export>, String>| r.err().unwrap();
        for (model, sm) in [
            ("mapped-xattr", ExportFlags::SM_MAPPED),
            ("mapped", ExportFlags::SM_MAPPED),
            ("mapped-file", ExportFlags::SM_MAPPED_FILE),
        ] {
            let e = open(&format!(",security_model={model}"), Compat::Master).unwrap();
            assert_eq!(
                e.flags.0,
                ExportFlags::PATHNAME_FSCONTEXT | sm | ExportFlags::REMAP_INODES,
                "{model}"
            );
        }
        // fmode/dmode reach the driver (masked with 0777); without them the
        // defaults are 0600/0700. The umask applies, as in QEMU.
        let umask = super::mapped_tests::umask();
        let ctx = SessionCtx::default();
        for (extra, fmode, dmode) in [
            ("", DEFAULT_FMODE, DEFAULT_DMODE),
            (",fmode=1640,dmode=0750", 0o640, 0o750),
        ] {
            let e = open(
                &format!(",security_model=mapped-file{extra}"),
                Compat::Master,
            )
            .unwrap();
            e.ops
                .open2(&root(), b"ef", CREATE, &cred(0o644), &ctx)
                .unwrap();
            e.ops.mkdir(&root(), b"ed", &cred(0o755)).unwrap();
            let f = fs::symlink_metadata(tmp.0.join("ef")).unwrap();
            let d = fs::symlink_metadata(tmp.0.join("ed")).unwrap();
            assert_eq!(f.mode(), libc::S_IFREG | (fmode & !umask), "{extra}");
            assert_eq!(d.mode(), libc::S_IFDIR | (dmode & !umask), "{extra}");
            e.ops.remove(&p("./ef")).unwrap();
            e.ops.remove(&p("./ed")).unwrap();
        }
        let missing = tmp.0.join("missing");
        let file = tmp.0.join("file");
        fs::write(&file, b"").unwrap();
        for (path, what) in [(&missing, "does not exist"), (&file, "is not a directory")] {
            let spec = format!("local,path={},security_model=none", path.display());
            let msg = err(Export::open(
                ExportOptions::parse(&spec).unwrap(),
                Compat::Master,
            ));
            assert_eq!(msg, format!("the export root {} {what}", path.display()));
        }
    }
}
