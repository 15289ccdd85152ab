//! Names and directories: Twalk, Treaddir, Tmkdir, Tmknod, Tsymlink, Tlink,
//! Treadlink, Tunlinkat, Trename, Trenameat, Tremove.

use std::rc::Rc;
use std::sync::Arc;

use nix::errno::Errno;

use super::session::with_fid;
use super::{FidType, HandlerResult, Pdu, V9fsState};
use crate::co::{self, c_name};
use crate::fsdev::{ExportFlags, FileStat, FsCred, V9fsPath};
use crate::protocol::{
    Data, DirEntry, Fid, List16, P9Str, Qid, Reader, Rlink, Rmkdir, Rmknod, Rreaddir, Rreadlink,
    Rremove, Rrename, Rrenameat, Rsymlink, Runlinkat, Rwalk, Tlink, Tmkdir, Tmknod, Treaddir,
    Treadlink, Tremove, Trename, Trenameat, Tsymlink, Tunlinkat, Wire, Writer, MAXWELEM,
};
use crate::runtime::Co;
use crate::Compat;

/// P9_DOTL_AT_REMOVEDIR.
const P9_DOTL_AT_REMOVEDIR: u32 = 0x200;

/// QEMU's `name_is_illegal`: empty, or holding a '/'.
pub(crate) fn name_is_illegal(name: &[u8]) -> bool {
    name.is_empty() || name.contains(&b'/')
}

/// `check_name`: ENOENT for an illegal name; "." and ".." are EISDIR for
/// renames and EEXIST for everything else.
pub(crate) fn check_name(name: &[u8], rename: bool) -> Result<(), Errno> {
    if name_is_illegal(name) {
        return Err(Errno::ENOENT);
    }
    if name == b"." || name == b".." {
        return Err(if rename { Errno::EISDIR } else { Errno::EEXIST });
    }
    Ok(())
}

fn same_stat_id(a: &FileStat, b: &FileStat) -> bool {
    a.dev == b.dev && a.ino == b.ino
}

/// `v9fs_walk`. The names are decoded and checked one by one before the fid
/// lookup; all file system work is one worker block.
pub(crate) fn v9fs_walk(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let mut r = Reader::new(body);
    let head = (|| {
        Ok((
            Fid::decode(&mut r)?,
            Fid::decode(&mut r)?,
            u16::decode(&mut r)?,
        ))
    })();
    let (fid, newfid, nwname) = head.map_err(|e| s.decode_failed(pdu, e))?;
    if nwname as usize > MAXWELEM {
        return Err(Errno::EINVAL);
    }
    let mut names = Vec::with_capacity(nwname as usize);
    for _ in 0..nwname {
        let name = P9Str::decode(&mut r).map_err(|e| s.decode_failed(pdu, e))?;
        if name_is_illegal(name.c_str()) {
            return Err(Errno::ENOENT);
        }
        names.push(name.c_str().to_vec());
    }
    with_fid(co, s, fid, Errno::ENOENT, |fidp| {
        walk(co, s, fidp, newfid, names)
    })
}

/// What the walk block found: the start's stat, and per walked name its new
/// path and stat (`None` for a ".." skipped at the root).
struct Walked {
    start: FileStat,
    steps: Vec<Option<(V9fsPath, FileStat)>>,
    err: Option<Errno>,
}

fn walk(
    co: &Co,
    s: &V9fsState,
    fidp: &super::fid::FidRef,
    newfid: Fid,
    names: Vec<Vec<u8>>,
) -> HandlerResult {
    let start_path = fidp.borrow().path.clone();
    let root_st = s.root_st.get();
    let cancel = co.cancel_flag().clone();
    let ops = Arc::clone(&s.export.ops);
    let path0 = start_path.clone();
    // One block for the whole walk, checking cancellation at each step,
    // as QEMU does "to keep latency as small as possible".
    let walked: Result<Walked, Errno> = co.run_in_worker(move || {
        if cancel.is_cancelled() {
            return Err(Errno::EINTR);
        }
        let start = ops.lstat(&path0)?;
        let mut out = Walked {
            start,
            steps: Vec::new(),
            err: None,
        };
        let mut dir = path0;
        let mut st = start;
        for name in &names {
            if cancel.is_cancelled() {
                out.err = Some(Errno::EINTR);
                break;
            }
            if root_st.is_some_and(|r| same_stat_id(&r, &st)) && name == b".." {
                out.steps.push(None);
                continue;
            }
            let path = match ops.name_to_path(Some(&dir), name) {
                Ok(p) => p,
                Err(e) => {
                    out.err = Some(e);
                    break;
                }
            };
            if cancel.is_cancelled() {
                out.err = Some(Errno::EINTR);
                break;
            }
            match ops.lstat(&path) {
                Ok(next) => {
                    st = next;
                    out.steps.push(Some((path.clone(), next)));
                    dir = path;
                }
                Err(e) => {
                    out.err = Some(e);
                    break;
                }
            }
        }
        Ok(out)
    });
    let walked = walked?;
    if walked.err == Some(Errno::EINTR) || (walked.err.is_some() && walked.steps.is_empty()) {
        return Err(walked.err.unwrap_or(Errno::EIO));
    }
    let mut qid = s.stat_to_qid(&walked.start)?;
    let mut path = start_path;
    let mut qids: Vec<Qid> = Vec::with_capacity(walked.steps.len());
    for step in &walked.steps {
        if let Some((p, st)) = step {
            match s.stat_to_qid(st) {
                Ok(q) => qid = q,
                Err(e) if qids.is_empty() => return Err(e),
                Err(_) => return Ok(rwalk(qids)),
            }
            path = p.clone();
        }
        qids.push(qid);
    }
    if walked.err.is_some() {
        // A partial walk: the qids that succeeded, and neither fid changes.
        return Ok(rwalk(qids));
    }
    if newfid == fidp.borrow().fid {
        if fidp.borrow().fid_type() != FidType::None {
            return Err(Errno::EINVAL);
        }
        let _lock = s.is_path_based().then(|| s.rename_lock.write(co));
        fidp.borrow_mut().path = path;
    } else {
        let newfidp = s.alloc_fid(newfid)?;
        {
            let mut n = newfidp.borrow_mut();
            n.uid = fidp.borrow().uid;
            n.path = path;
        }
        let _ = s.put_fid(co, &newfidp);
    }
    Ok(rwalk(qids))
}

fn rwalk(qids: Vec<Qid>) -> crate::protocol::Msg {
    Rwalk {
        wqids: List16(qids),
    }
    .into()
}

/// `v9fs_readdir` (Treaddir, 9P2000.L).
pub(crate) fn v9fs_readdir(
    co: &Co,
    s: &Rc<V9fsState>,
    pdu: &Rc<Pdu>,
    body: &[u8],
) -> HandlerResult {
    let m: Treaddir = s.unmarshal(pdu, body)?;
    let mut max = s.msize.get();
    if s.compat() == Compat::Master {
        if let Some(room) = s.transport.response_buffer_size(pdu.idx) {
            max = max.min(room);
        }
    }
    let max = max.saturating_sub(11);
    let mut count = m.count;
    if count > max {
        log::debug!("9p: Treaddir count {count} clipped to {max}");
        count = max;
    }
    with_fid(co, s, m.fid, Errno::EINVAL, |fidp| {
        if fidp.borrow().fid_type() != FidType::Dir {
            return Err(Errno::ENOTDIR);
        }
        let dir = fidp.borrow().dir().ok_or(Errno::EINVAL)?;
        if s.dialect() != crate::protocol::Dialect::L {
            return Err(Errno::EOPNOTSUPP);
        }
        let path = fidp.borrow().path.clone();
        let dostat = s.export_flags().has(ExportFlags::REMAP_INODES);
        let entries = co::co_readdir_many(co, s, &dir, &path, m.offset, count, dostat)?;
        let mut w = Writer::new();
        for e in entries {
            let qid = match &e.st {
                Some(st) => s.stat_to_qid(st)?,
                None => Qid {
                    ty: 0,
                    version: 0,
                    path: e.dent.ino,
                },
            };
            DirEntry {
                qid,
                offset: e.dent.off as u64,
                ty: e.dent.ty,
                name: P9Str(c_name(&e.dent.name).to_vec()),
            }
            .encode(&mut w);
        }
        Ok(Rreaddir { data: Data(w.buf) }.into())
    })
}

/// `v9fs_mkdir`.
pub(crate) fn v9fs_mkdir(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tmkdir = s.unmarshal(pdu, body)?;
    let name = m.name.c_str();
    check_name(name, false)?;
    with_fid(co, s, m.dfid, Errno::ENOENT, |dfidp| {
        let (dir, uid) = dir_and_uid(dfidp);
        let cred = FsCred {
            uid: Some(uid),
            gid: Some(m.gid),
            mode: m.mode,
            rdev: 0,
        };
        let (_, st) = co::co_mkdir(co, s, &dir, name, cred)?;
        Ok(Rmkdir {
            qid: s.stat_to_qid(&st)?,
        }
        .into())
    })
}

fn dir_and_uid(fidp: &super::fid::FidRef) -> (V9fsPath, u32) {
    let f = fidp.borrow();
    (f.path.clone(), f.uid)
}

/// `v9fs_mknod`.
pub(crate) fn v9fs_mknod(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tmknod = s.unmarshal(pdu, body)?;
    let name = m.name.c_str();
    check_name(name, false)?;
    with_fid(co, s, m.dfid, Errno::ENOENT, |dfidp| {
        let (dir, uid) = dir_and_uid(dfidp);
        let cred = FsCred {
            uid: Some(uid),
            gid: Some(m.gid),
            mode: m.mode,
            rdev: libc::makedev(m.major, m.minor),
        };
        let (_, st) = co::co_mknod(co, s, &dir, name, cred)?;
        Ok(Rmknod {
            qid: s.stat_to_qid(&st)?,
        }
        .into())
    })
}

/// `v9fs_symlink`.
pub(crate) fn v9fs_symlink(
    co: &Co,
    s: &Rc<V9fsState>,
    pdu: &Rc<Pdu>,
    body: &[u8],
) -> HandlerResult {
    let m: Tsymlink = s.unmarshal(pdu, body)?;
    let name = m.name.c_str();
    check_name(name, false)?;
    with_fid(co, s, m.fid, Errno::EINVAL, |dfidp| {
        let (dir, uid) = dir_and_uid(dfidp);
        let cred = FsCred {
            uid: Some(uid),
            gid: Some(m.gid),
            mode: 0o777,
            rdev: 0,
        };
        let (_, st) = co::co_symlink(co, s, &dir, name, m.symtgt.c_str(), cred)?;
        Ok(Rsymlink {
            qid: s.stat_to_qid(&st)?,
        }
        .into())
    })
}

/// `v9fs_link`.
pub(crate) fn v9fs_link(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tlink = s.unmarshal(pdu, body)?;
    let name = m.name.c_str();
    check_name(name, false)?;
    with_fid(co, s, m.dfid, Errno::ENOENT, |dfidp| {
        with_fid(co, s, m.fid, Errno::ENOENT, |oldfidp| {
            let dir = dfidp.borrow().path.clone();
            let old = oldfidp.borrow().path.clone();
            co::co_link(co, s, &old, &dir, name)?;
            Ok(Rlink {}.into())
        })
    })
}

/// `v9fs_readlink`.
pub(crate) fn v9fs_readlink(
    co: &Co,
    s: &Rc<V9fsState>,
    pdu: &Rc<Pdu>,
    body: &[u8],
) -> HandlerResult {
    let m: Treadlink = s.unmarshal(pdu, body)?;
    with_fid(co, s, m.fid, Errno::ENOENT, |fidp| {
        let path = fidp.borrow().path.clone();
        let target = co::co_readlink(co, s, &path)?;
        Ok(Rreadlink {
            target: P9Str(target),
        }
        .into())
    })
}

/// `v9fs_unlinkat`: its own name rules, then the fids on the target are
/// made non-reclaimable (an unlinked file cannot be reopened).
pub(crate) fn v9fs_unlinkat(
    co: &Co,
    s: &Rc<V9fsState>,
    pdu: &Rc<Pdu>,
    body: &[u8],
) -> HandlerResult {
    let m: Tunlinkat = s.unmarshal(pdu, body)?;
    let name = m.name.c_str();
    if name_is_illegal(name) {
        return Err(Errno::ENOENT);
    }
    if name == b"." {
        return Err(Errno::EINVAL);
    }
    if name == b".." {
        return Err(Errno::ENOTEMPTY);
    }
    if m.flags & !P9_DOTL_AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL);
    }
    let flags = if m.flags & P9_DOTL_AT_REMOVEDIR != 0 {
        libc::AT_REMOVEDIR
    } else {
        0
    };
    with_fid(co, s, m.dirfd, Errno::EINVAL, |dfidp| {
        let dir = dfidp.borrow().path.clone();
        co::co_unlinkat_name(co, s, &dir, name, flags)?;
        Ok(Runlinkat {}.into())
    })
}

/// The directory part of a path-based driver's path (`g_path_get_dirname`).
pub(crate) fn dirname(path: &V9fsPath) -> V9fsPath {
    match path.0.iter().rposition(|&b| b == b'/') {
        Some(0) => V9fsPath(b"/".to_vec()),
        Some(i) => V9fsPath(path.0[..i].to_vec()),
        None => V9fsPath(b".".to_vec()),
    }
}

/// Whether `a` is `b` or an ancestor of it (`v9fs_path_is_ancestor`).
fn is_ancestor(a: &V9fsPath, b: &V9fsPath) -> bool {
    b.0.starts_with(&a.0) && (b.0.len() == a.0.len() || b.0[a.0.len()] == b'/')
}

/// After a rename, every fid at or under `old` moves to `new`.
pub(crate) fn fix_fid_paths(s: &V9fsState, old: &V9fsPath, new: &V9fsPath) {
    for f in s.fids.borrow().values() {
        let mut f = f.borrow_mut();
        if is_ancestor(old, &f.path) {
            let mut p = new.0.clone();
            p.extend_from_slice(&f.path.0[old.0.len()..]);
            f.path = V9fsPath(p);
        }
    }
}

/// `v9fs_rename` (Trename).
pub(crate) fn v9fs_rename(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Trename = s.unmarshal(pdu, body)?;
    let name = m.name.c_str();
    check_name(name, true)?;
    with_fid(co, s, m.fid, Errno::ENOENT, |fidp| {
        if fidp.borrow().fid_type() != FidType::None {
            return Err(Errno::EINVAL);
        }
        if !s.is_path_based() {
            return Err(Errno::EOPNOTSUPP);
        }
        let _lock = s.rename_lock.write(co);
        let old = fidp.borrow().path.clone();
        let new = if m.dfid == Fid::NOFID {
            co::co_name_to_path(co, s, Some(&dirname(&old)), name)?
        } else {
            with_fid(co, s, m.dfid, Errno::ENOENT, |dfidp| {
                let dir = dfidp.borrow().path.clone();
                co::co_name_to_path(co, s, Some(&dir), name)
            })?
        };
        co::co_rename(co, s, &old, &new)?;
        fix_fid_paths(s, &old, &new);
        Ok(Rrename {}.into())
    })
}

/// `v9fs_renameat`.
pub(crate) fn v9fs_renameat(
    co: &Co,
    s: &Rc<V9fsState>,
    pdu: &Rc<Pdu>,
    body: &[u8],
) -> HandlerResult {
    let m: Trenameat = s.unmarshal(pdu, body)?;
    let (oldname, newname) = (m.oldname.c_str(), m.newname.c_str());
    check_name(oldname, true)?;
    check_name(newname, true)?;
    if !s.is_path_based() && s.compat() == Compat::Master {
        return Err(Errno::EOPNOTSUPP);
    }
    let _lock = s.is_path_based().then(|| s.rename_lock.write(co));
    with_fid(co, s, m.olddirfid, Errno::ENOENT, |olddirp| {
        let newdir_fid = if m.newdirfid == Fid::NOFID {
            m.olddirfid
        } else {
            m.newdirfid
        };
        with_fid(co, s, newdir_fid, Errno::ENOENT, |newdirp| {
            let olddir = olddirp.borrow().path.clone();
            let newdir = newdirp.borrow().path.clone();
            co::co_renameat(co, s, &olddir, oldname, &newdir, newname)?;
            if s.is_path_based() {
                let old = co::co_name_to_path(co, s, Some(&olddir), oldname)?;
                let new = co::co_name_to_path(co, s, Some(&newdir), newname)?;
                fix_fid_paths(s, &old, &new);
            }
            Ok(Rrenameat {}.into())
        })
    })
}

/// `v9fs_remove`: the fid is clunked even when the removal fails.
pub(crate) fn v9fs_remove(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tremove = s.unmarshal(pdu, body)?;
    let fidp = s.get_fid(co, m.fid).ok_or(Errno::EINVAL)?;
    let result = if s.is_path_based() {
        let path = fidp.borrow().path.clone();
        s.mark_fids_unreclaim(co, &path)
            .and_then(|()| co::co_remove(co, s, &path))
    } else {
        Err(Errno::EOPNOTSUPP)
    };
    s.clunk_fid(m.fid);
    let _ = s.put_fid(co, &fidp);
    result.map(|()| Rremove {}.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert_eq!(check_name(b"", false), Err(Errno::ENOENT));
        assert_eq!(check_name(b"a/b", true), Err(Errno::ENOENT));
        assert_eq!(check_name(b".", false), Err(Errno::EEXIST));
        assert_eq!(check_name(b"..", true), Err(Errno::EISDIR));
        assert_eq!(check_name(b"...", true), Ok(()));
    }

    #[test]
    fn dirname_and_ancestry_of_local_paths() {
        let p = |s: &str| V9fsPath(s.as_bytes().to_vec());
        assert_eq!(dirname(&p("./a/b")), p("./a"));
        assert_eq!(dirname(&p("./a")), p("."));
        assert_eq!(dirname(&p(".")), p("."));
        assert!(is_ancestor(&p("./a"), &p("./a")));
        assert!(is_ancestor(&p("./a"), &p("./a/b")));
        assert!(!is_ancestor(&p("./a"), &p("./ab")));
    }
}
