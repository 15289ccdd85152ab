//! Files: Tlopen/Topen, Tlcreate, Tread, Twrite, Tfsync, Tlock, Tgetlock,
//! and 9P2000.u's Tcreate.

use std::rc::Rc;
use std::sync::Arc;

use nix::errno::Errno;

use super::attr::{
    get_iounit, stat_to_v9stat, valid_handle, P9_STAT_MODE_DEVICE, P9_STAT_MODE_DIR,
    P9_STAT_MODE_LINK, P9_STAT_MODE_NAMED_PIPE, P9_STAT_MODE_SOCKET, P9_STAT_MODE_SYMLINK,
};
use super::dir::check_name;
use super::fid::{FidRef, OpenState, FID_NON_RECLAIMABLE};
use super::lock;
use super::session::with_fid;
use super::{iounit_for, FidType, HandlerResult, Locks, Pdu, V9fsState};
use crate::co::{self, c_name, Opened};
use crate::fsdev::{FileHandle, FsCred, V9fsPath};
use crate::protocol::{
    Data, Dialect, Fid, Msg, Rcreate, Rfsync, Rgetlock, Rlcreate, Rlock, Rlopen, Rread, Rwrite,
    Tcreate, Tfsync, Tgetlock, Tlcreate, Tlock, Topen, Tread, Twrite, Wire, Writer,
};
use crate::runtime::Co;
use crate::Compat;

// 9P2000.u open modes.
const OREAD: u8 = 0x00;
const OWRITE: u8 = 0x01;
const ORDWR: u8 = 0x02;
const OEXCL: u8 = 0x04;
const OTRUNC: u8 = 0x10;
const OAPPEND: u8 = 0x80;

/// P9_LOCK_SUCCESS.
const P9_LOCK_SUCCESS: u8 = 0;
/// P9_LOCK_TYPE_UNLCK.
const P9_LOCK_TYPE_UNLCK: u8 = 2;
/// P9_LOCK_FLAGS_BLOCK.
const P9_LOCK_FLAGS_BLOCK: u32 = 1;

/// The 9P2000.L open flags (P9_DOTL_*) and the host flags they map to
/// (QEMU's `dotl_to_open_flags`). The access mode passes through.
const DOTL_OPEN_FLAGS: [(u32, i32); 14] = [
    (0o100, libc::O_CREAT),
    (0o200, libc::O_EXCL),
    (0o400, libc::O_NOCTTY),
    (0o1000, libc::O_TRUNC),
    (0o2000, libc::O_APPEND),
    (0o4000, libc::O_NONBLOCK),
    (0o10000, libc::O_DSYNC),
    (0o20000, libc::O_ASYNC),
    (0o40000, libc::O_DIRECT),
    (0o100000, libc::O_LARGEFILE),
    (0o200000, libc::O_DIRECTORY),
    (0o400000, libc::O_NOFOLLOW),
    (0o1000000, libc::O_NOATIME),
    (0o4000000, libc::O_SYNC),
];

/// `get_dotl_openflags`: the host flags for a 9P2000.L open, without the
/// ones the server does not honour (NOCTTY, ASYNC, CREAT, DIRECT).
pub(crate) fn dotl_open_flags(flags: u32) -> i32 {
    let mut out = (flags & libc::O_ACCMODE as u32) as i32;
    for (dotl, host) in DOTL_OPEN_FLAGS {
        if flags & dotl != 0 {
            out |= host;
        }
    }
    out & !(libc::O_NOCTTY | libc::O_ASYNC | libc::O_CREAT | libc::O_DIRECT)
}

/// `omode_to_uflags`: a 9P2000.u open mode to host flags.
pub(crate) fn omode_to_uflags(mode: u8) -> i32 {
    let mut ret = match mode & 3 {
        OREAD => libc::O_RDONLY,
        ORDWR => libc::O_RDWR,
        OWRITE => libc::O_WRONLY,
        _ => libc::O_RDONLY, // Oexec
    };
    if mode & OTRUNC != 0 {
        ret |= libc::O_TRUNC;
    }
    if mode & OAPPEND != 0 {
        ret |= libc::O_APPEND;
    }
    if mode & OEXCL != 0 {
        ret |= libc::O_EXCL;
    }
    ret
}

fn writes(flags: i32) -> bool {
    flags & (libc::O_WRONLY | libc::O_RDWR | libc::O_APPEND | libc::O_TRUNC) != 0
}

/// `v9fs_open` (Tlopen and Topen): decoded by the negotiated dialect.
pub(crate) fn v9fs_open(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let (fid, flags, raw) = match Msg::decode(pdu.id(), body, s.dialect()) {
        Ok(Msg::Tlopen(m)) => (m.fid, dotl_open_flags(m.flags), m.flags as i32),
        Ok(Msg::Topen(Topen { fid, mode })) => (fid, omode_to_uflags(mode), mode as i32),
        Ok(_) => return Err(Errno::EIO),
        Err(e) => return Err(s.decode_failed(pdu, e)),
    };
    with_fid(co, s, fid, Errno::ENOENT, |fidp| {
        if fidp.borrow().fid_type() != FidType::None {
            return Err(Errno::EINVAL);
        }
        let path = fidp.borrow().path.clone();
        // Master checks the host flags. 7.2 checked the raw mode instead,
        // which let a 9P2000.u Otrunc through (CVE-2026-63318): under 7.2
        // both checks apply, so the fix stays.
        let refused =
            s.export.readonly && (writes(flags) || (s.compat() == Compat::V7_2 && writes(raw)));
        let (qid, opened) = co::co_lopen(co, s, &path, flags, refused, &mut |h| {
            open_file_fid(fidp, h, flags)
        })?;
        match opened {
            Opened::Dir(d) => {
                fidp.borrow_mut().open = OpenState::Dir(Some(d));
                Ok(Rlopen { qid, iounit: 0 }.into())
            }
            Opened::File(_, bsize) => Ok(Rlopen {
                qid,
                iounit: iounit_for(s.msize.get(), bsize),
            }
            .into()),
        }
    })
}

/// The fid becomes the open file `h`, opened with `flags`; an O_EXCL
/// open is never reclaimed (it could not be reopened).
fn open_file_fid(fidp: &FidRef, h: &FileHandle, flags: i32) {
    let mut f = fidp.borrow_mut();
    f.open = OpenState::File(Some(Arc::clone(h)));
    f.open_flags = flags;
    if flags & libc::O_EXCL != 0 {
        f.flags |= FID_NON_RECLAIMABLE;
    }
}

/// `v9fs_lcreate`: the directory fid itself becomes the new, open file.
pub(crate) fn v9fs_lcreate(
    co: &Co,
    s: &Rc<V9fsState>,
    pdu: &Rc<Pdu>,
    body: &[u8],
) -> HandlerResult {
    let m: Tlcreate = s.unmarshal(pdu, body)?;
    let name = m.name.c_str();
    check_name(name, false)?;
    with_fid(co, s, m.fid, Errno::ENOENT, |fidp| {
        if fidp.borrow().fid_type() != FidType::None {
            return Err(Errno::EINVAL);
        }
        let flags = dotl_open_flags(m.flags);
        let (dir, uid) = {
            let f = fidp.borrow();
            (f.path.clone(), f.uid)
        };
        let cred = FsCred {
            uid: Some(uid),
            gid: Some(m.gid),
            mode: m.mode & 0o7777,
            rdev: 0,
        };
        let (st, bsize) = co::co_open2_iounit(
            co,
            s,
            &dir,
            name,
            flags | libc::O_CREAT,
            cred,
            &mut |h, path| {
                fidp.borrow_mut().path = path.clone();
                open_file_fid(fidp, h, flags);
            },
        )?;
        let iounit = iounit_for(s.msize.get(), bsize);
        Ok(Rlcreate {
            qid: s.stat_to_qid(&st)?,
            iounit,
        }
        .into())
    })
}

/// Checks that a reply of `needed` bytes fits the transport's buffer for
/// this request; if not, the transport is broken (QEMU's
/// `init_in_iov_from_pdu` error) and the room left is returned.
fn reply_room(s: &V9fsState, pdu: &Pdu, needed: u64) -> u64 {
    match s.transport.response_buffer_size(pdu.idx) {
        Some(room) if (room as u64) < needed => {
            s.transport.fatal_error(&format!(
                "VirtFS reply type {} needs {needed} bytes, buffer has {room}",
                pdu.id().wrapping_add(1)
            ));
            room as u64
        }
        _ => needed,
    }
}

/// `v9fs_read`.
pub(crate) fn v9fs_read(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tread = s.unmarshal(pdu, body)?;
    with_fid(co, s, m.fid, Errno::EINVAL, |fidp| {
        let ty = fidp.borrow().fid_type();
        match ty {
            FidType::Dir => {
                if s.dialect() != Dialect::U {
                    log::warn!("9p: Tread on a directory is only for 9P2000.u");
                    return Err(Errno::EOPNOTSUPP);
                }
                read_dir_with_stat(co, s, pdu, fidp, m.offset, m.count)
            }
            FidType::File => {
                let room = reply_room(s, pdu, 11 + m.count as u64).saturating_sub(11);
                let max = (m.count as u64).min(room) as usize;
                read_file(co, s, fidp, m.offset, max)
            }
            FidType::Xattr => {
                let f = fidp.borrow();
                let OpenState::Xattr(x) = &f.open else {
                    return Err(Errno::EINVAL);
                };
                let len = x.value.len() as u64;
                let start = m.offset.min(len) as usize;
                let n = (len - start as u64).min(m.count as u64) as usize;
                Ok(Rread {
                    data: Data(x.value[start..start + n].to_vec()),
                }
                .into())
            }
            FidType::None => Err(Errno::EINVAL),
        }
    })
}

fn read_file(co: &Co, s: &V9fsState, fidp: &FidRef, offset: u64, max: usize) -> HandlerResult {
    let h = fidp.borrow().file().ok_or(Errno::EINVAL)?;
    let data = co::co_read_file(co, s, &h, offset, max)?;
    Ok(Rread { data: Data(data) }.into())
}

/// The 9P2000.u directory read: stat records, as many as fit in `max`.
fn read_dir_with_stat(
    co: &Co,
    s: &V9fsState,
    pdu: &Pdu,
    fidp: &FidRef,
    offset: u64,
    max: u32,
) -> HandlerResult {
    let room = reply_room(s, pdu, 11 + max as u64).saturating_sub(11);
    let max = (max as u64).min(room) as usize;
    let (dir, dir_path, lock) = {
        let f = fidp.borrow();
        (
            f.dir().ok_or(Errno::EINVAL)?,
            f.path.clone(),
            Rc::clone(&f.readdir_lock),
        )
    };
    if offset == 0 {
        co::co_rewinddir(co, s, &dir);
    }
    let mut saved = co::co_telldir(co, s, &dir)?;
    let mut w = Writer::new();
    loop {
        let _guard = lock.lock(co);
        let Some(dent) = co::co_readdir(co, s, &dir)? else {
            break;
        };
        let name = c_name(&dent.name);
        let path = co::co_name_to_path(co, s, Some(&dir_path), name)?;
        let st = co::co_lstat(co, s, &path)?;
        let v9stat = stat_to_v9stat(co, s, &path, name, &st)?;
        if w.buf.len() + v9stat.size as usize + 2 > max {
            drop(_guard);
            // Out of room: back to before this entry.
            co::co_seekdir(co, s, &dir, saved);
            break;
        }
        v9stat.encode(&mut w);
        saved = dent.off;
    }
    Ok(Rread { data: Data(w.buf) }.into())
}

/// `v9fs_write`.
pub(crate) fn v9fs_write(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Twrite = s.unmarshal(pdu, body)?;
    with_fid(co, s, m.fid, Errno::EINVAL, |fidp| {
        let ty = fidp.borrow().fid_type();
        match ty {
            FidType::File => {
                let h = fidp.borrow().file().ok_or(Errno::EINVAL)?;
                let total = co::co_write_file(co, s, &h, m.data.0, m.offset)?;
                Ok(Rwrite {
                    count: total as u32,
                }
                .into())
            }
            FidType::Xattr => {
                let mut f = fidp.borrow_mut();
                let OpenState::Xattr(x) = &mut f.open else {
                    return Err(Errno::EINVAL);
                };
                if m.offset > x.len {
                    return Err(Errno::ENOSPC);
                }
                let n = (x.len - m.offset).min(m.data.0.len() as u64) as usize;
                let at = m.offset as usize;
                x.value[at..at + n].copy_from_slice(&m.data.0[..n]);
                x.copied_len += n as u64;
                Ok(Rwrite { count: n as u32 }.into())
            }
            _ => Err(Errno::EINVAL),
        }
    })
}

/// The handle fsync, Tlock and Tgetlock use; master answers EBADF without
/// one (see `co_unopened_handle_op` for 7.2).
fn lock_handle(s: &V9fsState, fidp: &FidRef) -> Result<Option<co::Handle>, Errno> {
    match valid_handle(s, fidp) {
        Some(h) => Ok(Some(h)),
        None if s.compat() == Compat::V7_2 => Ok(None),
        None => Err(Errno::EBADF),
    }
}

/// fsync of a fid's handle (Tfsync, Twstat's "don't touch").
pub(crate) fn fsync_fid(
    co: &Co,
    s: &V9fsState,
    fidp: &FidRef,
    datasync: bool,
) -> Result<(), Errno> {
    match lock_handle(s, fidp)? {
        Some(h) => co::co_fsync(co, s, &h, datasync),
        // fsync(0): a daemonised QEMU's stdin is /dev/null, which refuses it.
        None => co::co_unopened_handle_op(co, s, Err(Errno::EINVAL)),
    }
}

/// `v9fs_fsync`.
pub(crate) fn v9fs_fsync(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tfsync = s.unmarshal(pdu, body)?;
    with_fid(co, s, m.fid, Errno::ENOENT, |fidp| {
        fsync_fid(co, s, fidp, m.datasync != 0)?;
        Ok(Rfsync {}.into())
    })
}

/// The fstat Tlock and Tgetlock make as a validity check.
fn lock_fstat(co: &Co, s: &V9fsState, fidp: &FidRef) -> Result<(), Errno> {
    match lock_handle(s, fidp)? {
        Some(h) => co::co_fstat(co, s, &h).map(drop),
        // fstat(0) succeeds in practice.
        None => co::co_unopened_handle_op(co, s, Ok(())),
    }
}

/// `v9fs_lock`: checks the fid, then always answers success; no lock is
/// taken (the client's VFS does the locking). With `locks=posix`, a real
/// lock instead (`lock.rs`).
pub(crate) fn v9fs_lock(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tlock = s.unmarshal(pdu, body)?;
    if m.flags & !P9_LOCK_FLAGS_BLOCK != 0 {
        return Err(Errno::EINVAL);
    }
    with_fid(co, s, m.fid, Errno::ENOENT, |fidp| {
        if s.export.locks == Locks::Posix {
            return lock::posix_lock(co, s, fidp, &m);
        }
        lock_fstat(co, s, fidp)?;
        Ok(Rlock {
            status: P9_LOCK_SUCCESS,
        }
        .into())
    })
}

/// `v9fs_getlock`: always "unlocked", echoing the request; with
/// `locks=posix`, the lock in the way (`lock.rs`).
pub(crate) fn v9fs_getlock(
    co: &Co,
    s: &Rc<V9fsState>,
    pdu: &Rc<Pdu>,
    body: &[u8],
) -> HandlerResult {
    let m: Tgetlock = s.unmarshal(pdu, body)?;
    with_fid(co, s, m.fid, Errno::ENOENT, |fidp| {
        if s.export.locks == Locks::Posix {
            return lock::posix_getlock(co, s, fidp, m);
        }
        lock_fstat(co, s, fidp)?;
        Ok(Rgetlock {
            ty: P9_LOCK_TYPE_UNLCK,
            start: m.start,
            length: m.length,
            proc_id: m.proc_id,
            client_id: m.client_id,
        }
        .into())
    })
}

/// `v9fs_create` (9P2000.u Tcreate): what `perm` asks for, made in the
/// fid's directory; the fid moves to the new object.
pub(crate) fn v9fs_create(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tcreate = s.unmarshal(pdu, body)?;
    let name = m.name.c_str();
    check_name(name, false)?;
    with_fid(co, s, m.fid, Errno::EINVAL, |fidp| {
        if fidp.borrow().fid_type() != FidType::None {
            return Err(Errno::EINVAL);
        }
        let (dir, uid) = {
            let f = fidp.borrow();
            (f.path.clone(), f.uid)
        };
        let perm = m.perm;
        let ext = m.extension.c_str();
        let cred = |mode, rdev| FsCred {
            uid: Some(uid),
            gid: None,
            mode,
            rdev,
        };
        // The file branch has its block size already (min mode: from the
        // same hop); the others ask for it at the end, as QEMU.
        let mut bsize = None;
        let st = if perm & P9_STAT_MODE_DIR != 0 {
            let (path, st) = co::co_mkdir(co, s, &dir, name, cred(perm & 0o777, 0))?;
            move_fid(co, s, fidp, path.clone());
            let d = co::co_opendir(co, s, &path)?;
            fidp.borrow_mut().open = OpenState::Dir(Some(d));
            st
        } else if perm & P9_STAT_MODE_SYMLINK != 0 {
            let (path, st) = co::co_symlink(co, s, &dir, name, ext, cred(perm & 0o777, 0))?;
            move_fid(co, s, fidp, path);
            st
        } else if perm & P9_STAT_MODE_LINK != 0 {
            let nfid = Fid(crate::fsdev::c_atoi(ext) as u32);
            let old = with_fid(co, s, nfid, Errno::EINVAL, |o| Ok(o.borrow().path.clone()))?;
            co::co_link(co, s, &old, &dir, name)?;
            let path = co::co_name_to_path(co, s, Some(&dir), name)?;
            let st = co::co_lstat(co, s, &path)?;
            move_fid(co, s, fidp, path);
            st
        } else if perm & P9_STAT_MODE_DEVICE != 0 {
            let (kind, major, minor) = parse_device(ext)?;
            let ftype = match kind {
                b'c' => libc::S_IFCHR,
                b'b' => libc::S_IFBLK,
                _ => return Err(Errno::EIO),
            };
            let rdev = libc::makedev(major, minor);
            let (path, st) = co::co_mknod(co, s, &dir, name, cred(ftype | (perm & 0o777), rdev))?;
            move_fid(co, s, fidp, path);
            st
        } else if perm & (P9_STAT_MODE_NAMED_PIPE | P9_STAT_MODE_SOCKET) != 0 {
            let ftype = if perm & P9_STAT_MODE_NAMED_PIPE != 0 {
                libc::S_IFIFO
            } else {
                libc::S_IFSOCK
            };
            let (path, st) = co::co_mknod(co, s, &dir, name, cred(ftype | (perm & 0o777), 0))?;
            move_fid(co, s, fidp, path);
            st
        } else {
            let flags = omode_to_uflags(m.mode) | libc::O_CREAT;
            let cred = cred(perm & 0o777, 0);
            let (st, b) = co::co_open2_iounit(co, s, &dir, name, flags, cred, &mut |h, path| {
                fidp.borrow_mut().path = path.clone();
                open_file_fid(fidp, h, flags & !libc::O_CREAT);
            })?;
            bsize = Some(b);
            st
        };
        let iounit = match bsize {
            Some(b) => iounit_for(s.msize.get(), b),
            None => {
                let path = fidp.borrow().path.clone();
                get_iounit(co, s, &path)
            }
        };
        Ok(Rcreate {
            qid: s.stat_to_qid(&st)?,
            iounit,
        }
        .into())
    })
}

/// Points a fid at a newly created object (under the rename write lock).
fn move_fid(co: &Co, s: &V9fsState, fidp: &FidRef, path: V9fsPath) {
    let _lock = s.is_path_based().then(|| s.rename_lock.write(co));
    fidp.borrow_mut().path = path;
}

/// `%u` of sscanf: white space, then digits (at least one).
fn scan_u32(s: &[u8]) -> Option<(u32, &[u8])> {
    let s = trim_c_space(s);
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let v = std::str::from_utf8(&s[..n]).ok()?.parse().ok()?;
    Some((v, &s[n..]))
}

fn trim_c_space(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .take_while(|b| b.is_ascii_whitespace() || **b == 0x0b)
        .count();
    &s[n..]
}

/// "c MAJ MIN" or "b MAJ MIN" as `sscanf("%c %u %u")` reads it: the first
/// byte is the kind, whatever it is.
fn parse_device(ext: &[u8]) -> Result<(u8, u32, u32), Errno> {
    let (&kind, rest) = ext.split_first().ok_or(Errno::EINVAL)?;
    let (major, rest) = scan_u32(rest).ok_or(Errno::EINVAL)?;
    let (minor, _) = scan_u32(rest).ok_or(Errno::EINVAL)?;
    Ok((kind, major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotl_flags_map_and_drop_what_qemu_drops() {
        assert_eq!(dotl_open_flags(0), libc::O_RDONLY);
        assert_eq!(dotl_open_flags(3), 3, "NOACCESS passes through");
        assert_eq!(
            dotl_open_flags(0o1 | 0o1000 | 0o2000),
            libc::O_WRONLY | libc::O_TRUNC | libc::O_APPEND
        );
        assert_eq!(dotl_open_flags(0o100 | 0o400 | 0o20000 | 0o40000), 0);
        assert_eq!(dotl_open_flags(0o2000000), 0, "CLOEXEC is dropped");
        assert_eq!(dotl_open_flags(0o200000), libc::O_DIRECTORY);
    }

    #[test]
    fn u_modes_map_like_omode_to_uflags() {
        assert_eq!(omode_to_uflags(0), libc::O_RDONLY);
        assert_eq!(omode_to_uflags(3), libc::O_RDONLY);
        assert_eq!(omode_to_uflags(1 | 0x10), libc::O_WRONLY | libc::O_TRUNC);
        assert_eq!(
            omode_to_uflags(2 | 0x80 | 0x04 | 0x40),
            libc::O_RDWR | libc::O_APPEND | libc::O_EXCL
        );
    }

    #[test]
    fn device_extensions_read_like_sscanf() {
        assert_eq!(parse_device(b"c 1 3"), Ok((b'c', 1, 3)));
        assert_eq!(parse_device(b"c1 3"), Ok((b'c', 1, 3)));
        // %c takes the space, then %u meets "c": fewer than 3 conversions.
        assert_eq!(parse_device(b" c 1 3"), Err(Errno::EINVAL));
        assert_eq!(parse_device(b"x 1 3"), Ok((b'x', 1, 3)));
        assert_eq!(parse_device(b"c 1"), Err(Errno::EINVAL));
    }
}
