//! The credential stores of the mapped security models, in QEMU's host
//! format (facts from QEMU's 9p-local.c; none of its code).
//!
//! **mapped-xattr** keeps the client's view of an object in xattrs on it:
//! `user.virtfs.uid`, `user.virtfs.gid` and `user.virtfs.mode` (4 bytes
//! little-endian each; the mode has its type bits) and `user.virtfs.rdev`
//! (8 bytes little-endian), each written only when given.
//!
//! **mapped-file** keeps it in a text file: for `name` in directory `D`,
//! `D/.virtfs_metadata/name`; for the export root, `./.virtfs_metadata_root`.
//! The metadata directory is made 0700 when first needed, the files 0600.
//! A file holds the lines `virtfs.uid=N`, `virtfs.gid=N`, `virtfs.mode=N`,
//! `virtfs.rdev=N` in that order, each only when set, with `N` printed as a
//! C `int`. An update reads the old file the way QEMU does (`fgets` into
//! 100 bytes, a prefix match, `atoi` after the `=`), applies the values
//! given and rewrites the whole file. Links, renames and removals carry the
//! metadata file along.
//!
//! Every metadata access starts from a directory the safe walk opened and
//! goes on with `O_NOFOLLOW` opens, so it cannot be led outside the export
//! either.

use std::ffi::CStr;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode};
use nix::sys::uio;
use nix::unistd::{self, UnlinkatFlags};

use super::{
    openat_dir, proc_node_path, sys_lsetxattr, Errno, FileStat, FsCred, FsResult, LocalFs,
    LocalModel,
};

/// The per-directory metadata directory of mapped-file.
pub(super) const META_DIR: &[u8] = b".virtfs_metadata";
/// The export root's own metadata file under mapped-file.
pub(super) const META_ROOT_FILE: &[u8] = b".virtfs_metadata_root";

pub(super) const XATTR_UID: &CStr = c"user.virtfs.uid";
pub(super) const XATTR_GID: &CStr = c"user.virtfs.gid";
pub(super) const XATTR_MODE: &CStr = c"user.virtfs.mode";
pub(super) const XATTR_RDEV: &CStr = c"user.virtfs.rdev";

/// QEMU's `ATTR_MAX`: the `fgets` buffer a metadata file is read with.
const ATTR_MAX: usize = 100;

/// The most of a link file readlink returns (QEMU reads `PATH_MAX - 1`
/// bytes).
const LINK_MAX: usize = libc::PATH_MAX as usize - 1;

/// Whether `name` is one of mapped-file's metadata names.
pub(super) fn is_metadata_name(name: &[u8]) -> bool {
    name == META_DIR || name == META_ROOT_FILE
}

/// The credentials a mapped model stores for an object; `None` is QEMU's
/// -1, "not given", and is not written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct MappedCred {
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    pub(super) mode: Option<u32>,
    pub(super) rdev: Option<u64>,
}

fn given_id(id: Option<u32>) -> Option<u32> {
    id.filter(|&id| id != u32::MAX)
}

fn given_mode(mode: u32) -> Option<u32> {
    (mode != u32::MAX).then_some(mode)
}

impl MappedCred {
    /// What open2, mkdir and symlink store: the owner and the mode with the
    /// type bits `ty` added (QEMU's co layer gives them no rdev).
    pub(super) fn created(cred: &FsCred, ty: u32) -> MappedCred {
        MappedCred {
            uid: given_id(cred.uid),
            gid: given_id(cred.gid),
            mode: given_mode(cred.mode | ty),
            rdev: None,
        }
    }

    /// What mknod stores: the owner, the mode as sent (type bits too) and
    /// the device number.
    pub(super) fn mknod(cred: &FsCred) -> MappedCred {
        MappedCred {
            uid: given_id(cred.uid),
            gid: given_id(cred.gid),
            mode: given_mode(cred.mode),
            rdev: (cred.rdev != u64::MAX).then_some(cred.rdev),
        }
    }

    /// What chmod stores: the mode only.
    pub(super) fn chmod(cred: &FsCred) -> MappedCred {
        MappedCred {
            mode: given_mode(cred.mode),
            ..MappedCred::default()
        }
    }

    /// What chown stores: the ids given.
    pub(super) fn chown(cred: &FsCred) -> MappedCred {
        MappedCred {
            uid: given_id(cred.uid),
            gid: given_id(cred.gid),
            ..MappedCred::default()
        }
    }
}

/// Writes the mapped-xattr credentials of the node at `node` (a
/// `/proc/self/fd/<dirfd>/<name>` path, not followed), stopping at the
/// first failure.
pub(super) fn set_xattr_cred(node: &CStr, mc: &MappedCred) -> FsResult<()> {
    if let Some(uid) = mc.uid {
        sys_lsetxattr(node, XATTR_UID, &uid.to_le_bytes(), 0)?;
    }
    if let Some(gid) = mc.gid {
        sys_lsetxattr(node, XATTR_GID, &gid.to_le_bytes(), 0)?;
    }
    if let Some(mode) = mc.mode {
        sys_lsetxattr(node, XATTR_MODE, &mode.to_le_bytes(), 0)?;
    }
    if let Some(rdev) = mc.rdev {
        sys_lsetxattr(node, XATTR_RDEV, &rdev.to_le_bytes(), 0)?;
    }
    Ok(())
}

/// Replaces the owner, mode and device number in `st` by those of the
/// mapped-xattr xattrs that `get` (a getxattr into a buffer) finds with a
/// non-empty value. A value larger than its field is ignored (ERANGE); a
/// shorter one fills the low bytes.
pub(super) fn apply_xattr_cred(
    st: &mut FileStat,
    mut get: impl FnMut(&CStr, &mut [u8]) -> FsResult<usize>,
) {
    fn read<const N: usize>(
        get: &mut impl FnMut(&CStr, &mut [u8]) -> FsResult<usize>,
        name: &CStr,
    ) -> Option<[u8; N]> {
        let mut buf = [0u8; N];
        match get(name, &mut buf) {
            Ok(n) if n > 0 => Some(buf),
            _ => None,
        }
    }
    if let Some(b) = read::<4>(&mut get, XATTR_UID) {
        st.uid = u32::from_le_bytes(b);
    }
    if let Some(b) = read::<4>(&mut get, XATTR_GID) {
        st.gid = u32::from_le_bytes(b);
    }
    if let Some(b) = read::<4>(&mut get, XATTR_MODE) {
        st.mode = u32::from_le_bytes(b);
    }
    if let Some(b) = read::<8>(&mut get, XATTR_RDEV) {
        st.rdev = u64::from_le_bytes(b);
    }
}

/// `fgetxattr` into `buf`.
pub(super) fn sys_fgetxattr(fd: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> FsResult<usize> {
    // SAFETY: name is a NUL-terminated string that outlives the call; buf
    // is writable for buf.len() bytes, the size passed, and exclusively
    // borrowed for the call; fd is an open descriptor borrowed for it.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    Errno::result(n).map(|n| n as usize)
}

/// The values a metadata file sets, `[uid, gid, mode, rdev]`, read as
/// QEMU reads them: `fgets` pieces of at most 99 bytes, each matched by
/// prefix, the value taken with `atoi` after the `=` (the last line of a
/// key wins).
pub(super) fn parse_meta(content: &[u8]) -> [Option<i32>; 4] {
    let mut vals = [None; 4];
    let mut rest = content;
    while !rest.is_empty() {
        let window = &rest[..rest.len().min(ATTR_MAX - 1)];
        let len = window
            .iter()
            .position(|&b| b == b'\n')
            .map_or(window.len(), |i| i + 1);
        let (line, tail) = rest.split_at(len);
        rest = tail;
        // The fgets buffer is zeroed first: past the line, atoi sees "".
        let value = |at: usize| Some(crate::fsdev::c_atoi(line.get(at..).unwrap_or_default()));
        if line.starts_with(b"virtfs.uid") {
            vals[0] = value(11);
        } else if line.starts_with(b"virtfs.gid") {
            vals[1] = value(11);
        } else if line.starts_with(b"virtfs.mode") {
            vals[2] = value(12);
        } else if line.starts_with(b"virtfs.rdev") {
            vals[3] = value(12);
        }
    }
    vals
}

/// A metadata file holding `vals` (`[uid, gid, mode, rdev]`, -1 = absent).
pub(super) fn format_meta(vals: [i32; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, val) in ["uid", "gid", "mode", "rdev"].into_iter().zip(vals) {
        if val != -1 {
            out.extend_from_slice(format!("virtfs.{key}={val}\n").as_bytes());
        }
    }
    out
}

/// One `write` (retried on EINTR); the bytes written.
pub(super) fn write_once(fd: BorrowedFd<'_>, buf: &[u8]) -> FsResult<usize> {
    loop {
        match unistd::write(fd, buf) {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> FsResult<()> {
    while !buf.is_empty() {
        match write_once(fd, buf)? {
            0 => return Err(Errno::EIO),
            n => buf = &buf[n..],
        }
    }
    Ok(())
}

/// The target a mapped link file holds: one read of at most
/// `PATH_MAX - 1` bytes, as QEMU does it.
pub(super) fn read_link_file(fd: BorrowedFd<'_>) -> FsResult<Vec<u8>> {
    let mut buf = vec![0u8; LINK_MAX];
    let n = loop {
        match uio::pread(fd, &mut buf, 0) {
            Err(Errno::EINTR) => continue,
            r => break r?,
        }
    };
    buf.truncate(n);
    Ok(buf)
}

/// Which call carries a metadata file along with its object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Carry {
    Link,
    Rename,
}

/// After `oname` in `odirfd` was linked or renamed to `nname` in `ndirfd`:
/// the same for its metadata file (QEMU's tail of `local_link` and
/// `local_renameat`). A missing metadata file is fine; a missing metadata
/// directory in the old directory is not (ENOENT), as in QEMU. On error the
/// caller undoes its link or rename.
pub(super) fn carry_meta_file(
    odirfd: BorrowedFd<'_>,
    oname: &[u8],
    ndirfd: BorrowedFd<'_>,
    nname: &[u8],
    how: Carry,
) -> FsResult<()> {
    match stat::mkdirat(ndirfd, META_DIR, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let omap = openat_dir(odirfd, META_DIR)?;
    let nmap = openat_dir(ndirfd, META_DIR)?;
    let r = match how {
        Carry::Link => unistd::linkat(&omap, oname, &nmap, nname, AtFlags::empty()),
        Carry::Rename => fcntl::renameat(&omap, oname, &nmap, nname),
    };
    match r {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Before `name` in `dirfd` is removed: its own metadata directory if it is
/// a directory (which fails unless that is empty), then its metadata file;
/// ENOENT from either is fine (QEMU's `local_unlinkat_common`).
pub(super) fn remove_meta(dirfd: BorrowedFd<'_>, name: &[u8], is_dir: bool) -> FsResult<()> {
    if is_dir {
        let fd = openat_dir(dirfd, name)?;
        match unistd::unlinkat(&fd, META_DIR, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    match openat_dir(dirfd, META_DIR) {
        Ok(map) => match unistd::unlinkat(&map, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        },
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

impl LocalFs {
    /// Stores `mc` for `name` in `dirfd` in the model's store.
    pub(super) fn set_mapped_cred(
        &self,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        mc: &MappedCred,
    ) -> FsResult<()> {
        debug_assert!(self.model.is_mapped());
        if self.model == LocalModel::MappedFile {
            self.set_meta_file(dirfd, name, mc)
        } else {
            set_xattr_cred(&proc_node_path(dirfd, name)?, mc)
        }
    }

    /// The whole content of the regular file `name` in `dirfd`, opened as
    /// [`LocalFs::openat_file`] does.
    fn read_file_at(&self, dirfd: BorrowedFd<'_>, name: &[u8]) -> FsResult<Vec<u8>> {
        let fd = self.openat_file(dirfd, name, OFlag::O_RDONLY, Mode::empty())?;
        let mut content = Vec::new();
        std::fs::File::from(fd)
            .read_to_end(&mut content)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(content)
    }

    /// The metadata file of `name` in `dirfd` (`.`: the export root, whose
    /// dirfd is the root too).
    fn read_meta_file(&self, dirfd: BorrowedFd<'_>, name: &[u8]) -> FsResult<Vec<u8>> {
        if name == b"." {
            return self.read_file_at(dirfd, META_ROOT_FILE);
        }
        let map = openat_dir(dirfd, META_DIR)?;
        self.read_file_at(map.as_fd(), name)
    }

    /// Overrides `st` with what the metadata file of `name` in `dirfd`
    /// sets; without a readable one, `st` stays the host's.
    pub(super) fn apply_meta_file(&self, dirfd: BorrowedFd<'_>, name: &[u8], st: &mut FileStat) {
        let Ok(content) = self.read_meta_file(dirfd, name) else {
            return;
        };
        let [uid, gid, mode, rdev] = parse_meta(&content);
        // C's int conversions: to the unsigned ids and mode bit for bit,
        // to the 64-bit dev_t with the sign extended.
        if let Some(uid) = uid {
            st.uid = uid as u32;
        }
        if let Some(gid) = gid {
            st.gid = gid as u32;
        }
        if let Some(mode) = mode {
            st.mode = mode as u32;
        }
        if let Some(rdev) = rdev {
            st.rdev = i64::from(rdev) as u64;
        }
    }

    /// QEMU's `local_set_mapped_file_attrat`: merges `mc` into the metadata
    /// file of `name` in `dirfd` and rewrites it (mode 0600), making the
    /// metadata directory (0700) first if needed.
    pub(super) fn set_meta_file(
        &self,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        mc: &MappedCred,
    ) -> FsResult<()> {
        let map: OwnedFd;
        let (fdir, fname) = if name == b"." {
            (dirfd, META_ROOT_FILE)
        } else {
            match stat::mkdirat(dirfd, META_DIR, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            map = openat_dir(dirfd, META_DIR)?;
            (map.as_fd(), name)
        };
        let old = match self.read_file_at(fdir, fname) {
            Ok(content) => parse_meta(&content),
            Err(Errno::ENOENT) => [None; 4],
            Err(e) => return Err(e),
        };
        let mut vals = old.map(|v| v.unwrap_or(-1));
        // Stored as C ints, as QEMU prints them.
        if let Some(uid) = mc.uid {
            vals[0] = uid as i32;
        }
        if let Some(gid) = mc.gid {
            vals[1] = gid as i32;
        }
        if let Some(mode) = mc.mode {
            vals[2] = mode as i32;
        }
        if let Some(rdev) = mc.rdev {
            vals[3] = rdev as i32;
        }
        let flags = OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_CREAT;
        let fd = self.openat_file(fdir, fname, flags, Mode::from_bits_truncate(0o666))?;
        stat::fchmod(&fd, Mode::from_bits_truncate(0o600))?;
        write_all(fd.as_fd(), &format_meta(vals))
    }
}
