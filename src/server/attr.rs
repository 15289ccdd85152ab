//! Attributes: Tgetattr, Tsetattr, Tstatfs, and 9P2000.u's Tstat and Twstat.

use std::rc::Rc;

use nix::errno::Errno;

use super::fid::FidRef;
use super::session::with_fid;
use super::{iounit_for, HandlerResult, Pdu, V9fsState};
use crate::co::{self, Handle, SetAttr};
use crate::fsdev::{FileStat, Timespec, V9fsPath};
use crate::protocol::{
    Fid, P9Str, Qid, Reader, Rgetattr, Rsetattr, Rstat, Rstatfs, Rwstat, Stat, Tgetattr, Tsetattr,
    Tstat, Tstatfs, Wire, IOHDRSZ,
};
use crate::runtime::Co;
use crate::Compat;

/// P9_STATS_BASIC: what Rgetattr always fills.
const P9_STATS_BASIC: u64 = 0x7ff;
/// P9_STATS_GEN.
const P9_STATS_GEN: u64 = 0x1000;

// Tsetattr valid bits.
const P9_ATTR_MODE: u32 = 1 << 0;
const P9_ATTR_UID: u32 = 1 << 1;
const P9_ATTR_GID: u32 = 1 << 2;
const P9_ATTR_SIZE: u32 = 1 << 3;
const P9_ATTR_ATIME: u32 = 1 << 4;
const P9_ATTR_MTIME: u32 = 1 << 5;
const P9_ATTR_CTIME: u32 = 1 << 6;
const P9_ATTR_ATIME_SET: u32 = 1 << 7;
const P9_ATTR_MTIME_SET: u32 = 1 << 8;
const P9_ATTR_MASK: u32 = 127;

// 9P2000.u stat mode bits.
pub(crate) const P9_STAT_MODE_DIR: u32 = 0x8000_0000;
pub(crate) const P9_STAT_MODE_SYMLINK: u32 = 0x0200_0000;
pub(crate) const P9_STAT_MODE_LINK: u32 = 0x0100_0000;
pub(crate) const P9_STAT_MODE_DEVICE: u32 = 0x0080_0000;
pub(crate) const P9_STAT_MODE_NAMED_PIPE: u32 = 0x0020_0000;
pub(crate) const P9_STAT_MODE_SOCKET: u32 = 0x0010_0000;
const P9_STAT_MODE_SETUID: u32 = 0x0008_0000;
const P9_STAT_MODE_SETGID: u32 = 0x0004_0000;
const P9_STAT_MODE_SETVTX: u32 = 0x0001_0000;
const P9_STAT_MODE_TYPE_BITS: u32 = P9_STAT_MODE_DIR
    | P9_STAT_MODE_SYMLINK
    | P9_STAT_MODE_LINK
    | P9_STAT_MODE_DEVICE
    | P9_STAT_MODE_NAMED_PIPE
    | P9_STAT_MODE_SOCKET;

/// The fid's open handle if getattr/setattr/fsync/lock may use it (QEMU's
/// `has_valid_file_handle`). For a directory the driver answers: asking
/// the stream would take its lock on the main thread, and a worker holds
/// it through a whole Treaddir batch.
pub(crate) fn valid_handle(s: &V9fsState, fidp: &FidRef) -> Option<Handle> {
    let f = fidp.borrow();
    if let Some(h) = f.file() {
        return h.has_valid_handle().then_some(Handle::File(h));
    }
    f.dir()
        .filter(|_| s.export.ops.dir_has_valid_handle())
        .map(Handle::Dir)
}

/// `v9fs_getattr`.
pub(crate) fn v9fs_getattr(
    co: &Co,
    s: &Rc<V9fsState>,
    pdu: &Rc<Pdu>,
    body: &[u8],
) -> HandlerResult {
    let m: Tgetattr = s.unmarshal(pdu, body)?;
    with_fid(co, s, m.fid, Errno::ENOENT, |fidp| {
        let path = fidp.borrow().path.clone();
        // An open file is stat'ed through its handle, so that an unlinked
        // but open file still answers. 7.2.0 went by path; the 7.2 stable
        // branch (7.2.16, what Debian ships) has master's fix.
        let handle = valid_handle(s, fidp);
        let want_gen = m.request_mask & P9_STATS_GEN != 0;
        let (st, qid, got_gen) = co::co_getattr(co, s, handle, &path, want_gen)?;
        let mut valid = P9_STATS_BASIC;
        let mut gen = 0;
        // A driver without generations answers 0, and that counts as
        // success: GEN is valid.
        match got_gen {
            Some(Ok(g)) => {
                gen = g;
                valid |= P9_STATS_GEN;
            }
            Some(Err(Errno::EINTR)) => return Err(Errno::EINTR),
            _ => {}
        }
        Ok(Rgetattr {
            valid,
            qid,
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            nlink: st.nlink,
            rdev: st.rdev,
            size: st.size as u64,
            blksize: iounit_for(s.msize.get(), st.blksize as u64) as u64,
            blocks: st.blocks as u64,
            atime_sec: st.atime.sec as u64,
            atime_nsec: st.atime.nsec as u64,
            mtime_sec: st.mtime.sec as u64,
            mtime_nsec: st.mtime.nsec as u64,
            ctime_sec: st.ctime.sec as u64,
            ctime_nsec: st.ctime.nsec as u64,
            btime_sec: 0,
            btime_nsec: 0,
            gen,
            data_version: 0,
        }
        .into())
    })
}

/// `v9fs_setattr`: chmod, times, chown, size, in that order, stopping at
/// the first error.
pub(crate) fn v9fs_setattr(
    co: &Co,
    s: &Rc<V9fsState>,
    pdu: &Rc<Pdu>,
    body: &[u8],
) -> HandlerResult {
    let m: Tsetattr = s.unmarshal(pdu, body)?;
    with_fid(co, s, m.fid, Errno::EINVAL, |fidp| {
        let path = fidp.borrow().path.clone();
        let handle = match s.compat() {
            Compat::Master => valid_handle(s, fidp),
            Compat::V7_2 => None,
        };
        let v = m.valid;
        let time = |bit, set, sec, nsec| {
            if v & bit == 0 {
                Timespec {
                    sec: 0,
                    nsec: libc::UTIME_OMIT,
                }
            } else if v & set != 0 {
                Timespec {
                    sec: sec as i64,
                    nsec: nsec as i64,
                }
            } else {
                Timespec {
                    sec: 0,
                    nsec: libc::UTIME_NOW,
                }
            }
        };
        // chown(-1, -1) when ctime is the only change: it touches ctime.
        let chown = v & (P9_ATTR_UID | P9_ATTR_GID) != 0
            || (v & P9_ATTR_CTIME != 0 && (v & P9_ATTR_MASK) & !P9_ATTR_CTIME == 0);
        let change = SetAttr {
            mode: (v & P9_ATTR_MODE != 0).then_some(m.mode),
            times: (v & (P9_ATTR_ATIME | P9_ATTR_MTIME) != 0).then(|| {
                [
                    time(P9_ATTR_ATIME, P9_ATTR_ATIME_SET, m.atime_sec, m.atime_nsec),
                    time(P9_ATTR_MTIME, P9_ATTR_MTIME_SET, m.mtime_sec, m.mtime_nsec),
                ]
            }),
            owner: chown.then(|| {
                (
                    (v & P9_ATTR_UID != 0).then_some(m.uid),
                    (v & P9_ATTR_GID != 0).then_some(m.gid),
                )
            }),
            size: (v & P9_ATTR_SIZE != 0).then_some(m.size),
        };
        co::co_setattr(co, s, handle, &path, change)?;
        Ok(Rsetattr {}.into())
    })
}

/// `v9fs_statfs`: block counts scaled so that the block size is near the
/// transfer size.
pub(crate) fn v9fs_statfs(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tstatfs = s.unmarshal(pdu, body)?;
    with_fid(co, s, m.fid, Errno::ENOENT, |fidp| {
        let path = fidp.borrow().path.clone();
        let st = co::co_statfs(co, s, &path)?;
        let room = s.msize.get().saturating_sub(IOHDRSZ) as u64;
        let factor = room.checked_div(st.bsize).unwrap_or(1).max(1);
        Ok(Rstatfs {
            ty: st.ty,
            bsize: (st.bsize * factor) as u32,
            blocks: st.blocks / factor,
            bfree: st.bfree / factor,
            bavail: st.bavail / factor,
            files: st.files,
            ffree: st.ffree,
            fsid: st.fsid,
            namelen: st.namelen as u32,
        }
        .into())
    })
}

/// `stat_to_v9mode`.
fn stat_to_v9mode(st: &FileStat) -> u32 {
    let mut mode = st.mode & 0o777;
    match st.file_type() {
        libc::S_IFDIR => mode |= P9_STAT_MODE_DIR,
        libc::S_IFLNK => mode |= P9_STAT_MODE_SYMLINK,
        libc::S_IFSOCK => mode |= P9_STAT_MODE_SOCKET,
        libc::S_IFIFO => mode |= P9_STAT_MODE_NAMED_PIPE,
        libc::S_IFBLK | libc::S_IFCHR => mode |= P9_STAT_MODE_DEVICE,
        _ => {}
    }
    if st.mode & libc::S_ISUID != 0 {
        mode |= P9_STAT_MODE_SETUID;
    }
    if st.mode & libc::S_ISGID != 0 {
        mode |= P9_STAT_MODE_SETGID;
    }
    if st.mode & libc::S_ISVTX != 0 {
        mode |= P9_STAT_MODE_SETVTX;
    }
    mode
}

/// `stat_to_v9stat`: the 9P2000.u stat of `path` named `name`; a symlink
/// costs one more hop for its target.
pub(crate) fn stat_to_v9stat(
    co: &Co,
    s: &V9fsState,
    path: &V9fsPath,
    name: &[u8],
    st: &FileStat,
) -> Result<Stat, Errno> {
    let qid = s.stat_to_qid(st)?;
    let target = if st.file_type() == libc::S_IFLNK {
        co::co_readlink(co, s, path)?
    } else {
        Vec::new()
    };
    Ok(v9stat(st, qid, name, target))
}

/// The 9P2000.u stat of `st` named `name`, with its qid and, for a
/// symlink, its target.
fn v9stat(st: &FileStat, qid: Qid, name: &[u8], target: Vec<u8>) -> Stat {
    let extension = match st.file_type() {
        libc::S_IFLNK => target,
        libc::S_IFCHR | libc::S_IFBLK => {
            let kind = if st.file_type() == libc::S_IFCHR {
                'c'
            } else {
                'b'
            };
            format!("{kind} {} {}", libc::major(st.rdev), libc::minor(st.rdev)).into_bytes()
        }
        libc::S_IFDIR | libc::S_IFREG => format!("HARDLINKCOUNT {}", st.nlink).into_bytes(),
        _ => Vec::new(),
    };
    Stat {
        qid,
        mode: stat_to_v9mode(st),
        atime: st.atime.sec as u32,
        mtime: st.mtime.sec as u32,
        length: st.size as u64,
        name: P9Str(name.to_vec()),
        extension: P9Str(extension),
        n_uid: st.uid,
        n_gid: st.gid,
        ..Stat::default()
    }
    .fit_size()
}

/// The open handle Tstat and Twstat use with `dotu_handles=on` (beyond
/// QEMU, master compat only); `None`: by path, as QEMU.
fn dotu_handle(s: &V9fsState, fidp: &FidRef) -> Option<Handle> {
    (s.compat() == Compat::Master && s.export.options.dotu_handles)
        .then(|| valid_handle(s, fidp))
        .flatten()
}

/// `v9fs_stat` (Tstat). The outer size of Rstat is written as 0, as QEMU
/// writes it.
pub(crate) fn v9fs_stat(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tstat = s.unmarshal(pdu, body)?;
    with_fid(co, s, m.fid, Errno::ENOENT, |fidp| {
        let path = fidp.borrow().path.clone();
        // QEMU goes by path (an open, unlinked file: ENOENT); with
        // dotu_handles=on an open file is stat'ed through its handle, as
        // Tgetattr does.
        let handle = dotu_handle(s, fidp);
        let (st, qid, target) = co::co_stat_v9(co, s, handle, &path)?;
        let name = s.export.ops.basename(&path);
        Ok(Rstat {
            size: 0,
            stat: v9stat(&st, qid, &name, target),
        }
        .into())
    })
}

/// Whether a Twstat stat asks for nothing ("don't touch" everywhere).
fn donttouch_stat(st: &Stat) -> bool {
    st.ty == u16::MAX
        && st.dev == u32::MAX
        && st.qid.ty == u8::MAX
        && st.qid.version == u32::MAX
        && st.qid.path == u64::MAX
        && st.mode == u32::MAX
        && st.atime == u32::MAX
        && st.mtime == u32::MAX
        && st.length == u64::MAX
        && st.name.0.is_empty()
        && st.uid.0.is_empty()
        && st.gid.0.is_empty()
        && st.muid.0.is_empty()
        && st.n_uid == u32::MAX
        && st.n_gid == u32::MAX
        && st.n_muid == u32::MAX
}

/// `v9mode_to_mode`: a 9P2000.u mode to host mode bits.
pub(crate) fn v9mode_to_mode(mode: u32, extension: &[u8]) -> u32 {
    let mut ret = mode & 0o777;
    if mode & P9_STAT_MODE_DIR != 0 {
        ret |= libc::S_IFDIR;
    }
    if mode & P9_STAT_MODE_SYMLINK != 0 {
        ret |= libc::S_IFLNK;
    }
    if mode & P9_STAT_MODE_SOCKET != 0 {
        ret |= libc::S_IFSOCK;
    }
    if mode & P9_STAT_MODE_NAMED_PIPE != 0 {
        ret |= libc::S_IFIFO;
    }
    if mode & P9_STAT_MODE_DEVICE != 0 {
        if extension.first() == Some(&b'c') {
            ret |= libc::S_IFCHR;
        } else {
            ret |= libc::S_IFBLK;
        }
    }
    if ret & libc::S_IFMT == 0 {
        ret |= libc::S_IFREG;
    }
    if mode & P9_STAT_MODE_SETUID != 0 {
        ret |= libc::S_ISUID;
    }
    if mode & P9_STAT_MODE_SETGID != 0 {
        ret |= libc::S_ISGID;
    }
    if mode & P9_STAT_MODE_SETVTX != 0 {
        ret |= libc::S_ISVTX;
    }
    ret
}

/// `v9fs_wstat` (Twstat).
pub(crate) fn v9fs_wstat(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let mut r = Reader::new(body);
    let head = (|| {
        Ok((
            Fid::decode(&mut r)?,
            u16::decode(&mut r)?,
            Stat::decode(&mut r)?,
        ))
    })();
    let (fid, _, v9stat) = head.map_err(|e| s.decode_failed(pdu, e))?;
    with_fid(co, s, fid, Errno::EINVAL, |fidp| {
        let path = fidp.borrow().path.clone();
        // QEMU sets times and length by path; with dotu_handles=on they go
        // through the fid's open file, as Tsetattr's do.
        let handle = dotu_handle(s, fidp);
        if donttouch_stat(&v9stat) {
            super::file::fsync_fid(co, s, fidp, false)?;
            return Ok(Rwstat {}.into());
        }
        if v9stat.mode != u32::MAX {
            let st = co::co_lstat(co, s, &path)?;
            let v9_mode = stat_to_v9mode(&st);
            if (v9stat.mode & P9_STAT_MODE_TYPE_BITS) != (v9_mode & P9_STAT_MODE_TYPE_BITS) {
                // Attempting to change the type.
                return Err(Errno::EIO);
            }
            co::co_chmod(
                co,
                s,
                &path,
                v9mode_to_mode(v9stat.mode, v9stat.extension.c_str()),
            )?;
        }
        if v9stat.mtime != u32::MAX || v9stat.atime != u32::MAX {
            let t = |v: u32| {
                if v == u32::MAX {
                    Timespec {
                        sec: 0,
                        nsec: libc::UTIME_OMIT,
                    }
                } else {
                    Timespec {
                        sec: v as i64,
                        nsec: 0,
                    }
                }
            };
            let times = [t(v9stat.atime), t(v9stat.mtime)];
            match &handle {
                Some(h) => co::co_futimens(co, s, h, times)?,
                None => co::co_utimensat(co, s, &path, times)?,
            }
        }
        if v9stat.n_gid != u32::MAX || v9stat.n_uid != u32::MAX {
            let uid = (v9stat.n_uid != u32::MAX).then_some(v9stat.n_uid);
            let gid = (v9stat.n_gid != u32::MAX).then_some(v9stat.n_gid);
            co::co_chown(co, s, &path, uid, gid)?;
        }
        if !v9stat.name.0.is_empty() {
            wstat_rename(co, s, fidp, v9stat.name.c_str())?;
        }
        if v9stat.length != u64::MAX {
            let path = fidp.borrow().path.clone();
            match &handle {
                Some(h) => co::co_ftruncate(co, s, h, v9stat.length)?,
                None => co::co_truncate(co, s, &path, v9stat.length)?,
            }
        }
        Ok(Rwstat {}.into())
    })
}

/// A Twstat name change: a rename within the same directory.
fn wstat_rename(co: &Co, s: &V9fsState, fidp: &FidRef, name: &[u8]) -> Result<(), Errno> {
    if !s.is_path_based() {
        return match s.compat() {
            Compat::Master => Err(Errno::EOPNOTSUPP),
            // 7.2 asked the driver, which refuses renames.
            Compat::V7_2 => Err(Errno::EPERM),
        };
    }
    if s.compat() == Compat::Master {
        super::dir::check_name(name, true)?;
    }
    let _lock = s.rename_lock.write(co);
    let old = fidp.borrow().path.clone();
    let new = co::co_name_to_path(co, s, Some(&super::dir::dirname(&old)), name)?;
    co::co_rename(co, s, &old, &new)?;
    super::dir::fix_fid_paths(s, &old, &new);
    Ok(())
}

/// The iounit of an open file (`get_iounit`): a statfs hop; on failure,
/// `msize − 24`.
pub(crate) fn get_iounit(co: &Co, s: &V9fsState, path: &V9fsPath) -> u32 {
    let bsize = co::co_statfs(co, s, path).map(|st| st.bsize).unwrap_or(0);
    iounit_for(s.msize.get(), bsize)
}
