//! Tversion, Tattach, Tflush, Tclunk, and the session reset.

use std::rc::Rc;

use nix::errno::Errno;

use super::fid::FidRef;
use super::{HandlerResult, Pdu, V9fsState};
use crate::co;
use crate::protocol::{
    Dialect, Fid, P9Str, Rattach, Rclunk, Rflush, Rversion, Tattach, Tclunk, Tflush, Tversion,
    MIN_MSIZE,
};
use crate::runtime::Co;
use crate::Compat;

/// Runs `f` with a reference on `fid` (or fails with `missing` if the fid is
/// not in the table), then drops the reference.
pub(crate) fn with_fid<T>(
    co: &Co,
    s: &V9fsState,
    fid: Fid,
    missing: Errno,
    f: impl FnOnce(&FidRef) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let fidp = s.get_fid(co, fid).ok_or(missing)?;
    let r = f(&fidp);
    let _ = s.put_fid(co, &fidp);
    r
}

/// `virtfs_reset`: every fid leaves the table; those no request holds are
/// freed now (closing files, committing pending xattrs), the others when
/// their last reference drops.
pub(crate) fn virtfs_reset(co: &Co, s: &V9fsState) {
    let all: Vec<FidRef> = std::mem::take(&mut *s.fids.borrow_mut())
        .into_values()
        .collect();
    for f in all {
        {
            let mut st = f.borrow_mut();
            st.refcount += 1;
            st.clunked = true;
        }
        let _ = s.put_fid(co, &f);
    }
    s.set_xattr_fid_count(0);
}

/// `v9fs_version`.
pub(crate) fn v9fs_version(
    co: &Co,
    s: &Rc<V9fsState>,
    pdu: &Rc<Pdu>,
    body: &[u8],
) -> HandlerResult {
    let m: Tversion = s.unmarshal(pdu, body)?;
    s.msize.set(m.msize);
    virtfs_reset(co, s);
    let dialect = match m.version.c_str() {
        b"9P2000.u" => Dialect::U,
        b"9P2000.L" => Dialect::L,
        _ => {
            return Ok(Rversion {
                msize: m.msize,
                version: P9Str::from("unknown"),
            }
            .into())
        }
    };
    s.proto.set(dialect);
    if m.msize < MIN_MSIZE {
        return Err(Errno::EMSGSIZE);
    }
    let mut msize = m.msize;
    if s.compat() == Compat::Master {
        if let Some(limit) = s.transport.msize_limit() {
            msize = msize.min(limit);
            s.msize.set(msize);
        }
    }
    if msize <= 8192 {
        log::debug!("9p: msize {msize} is small: expect degraded performance");
    }
    Ok(Rversion {
        msize,
        version: m.version,
    }
    .into())
}

/// `v9fs_attach`. Any failure to reach the root is EINVAL, as in QEMU.
pub(crate) fn v9fs_attach(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tattach = s.unmarshal(pdu, body)?;
    let fidp = s.alloc_fid(m.fid)?;
    fidp.borrow_mut().uid = m.n_uname;
    let root = co::co_attach_root(co, s).and_then(|(path, st)| {
        let qid = s.stat_to_qid(&st)?;
        Ok((path, st, qid))
    });
    let result = match root {
        Ok((path, st, qid)) => {
            fidp.borrow_mut().path = path;
            s.root_st.set(Some(st));
            Ok(Rattach { qid }.into())
        }
        Err(_) => {
            s.clunk_fid(m.fid);
            Err(Errno::EINVAL)
        }
    };
    let _ = s.put_fid(co, &fidp);
    result
}

/// `v9fs_flush`: mark the request with `oldtag` cancelled and wait for it to
/// complete; its reply (or its silent discard) goes out before Rflush.
pub(crate) fn v9fs_flush(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tflush = s.unmarshal(pdu, body)?;
    if m.oldtag == pdu.tag() {
        log::warn!("9p: flush of its own tag {} ignored", m.oldtag.0);
        return Ok(Rflush {}.into());
    }
    if let Some(cancel_pdu) = s.find_active(m.oldtag) {
        cancel_pdu.cancelled.cancel();
        if let Some(task) = cancel_pdu.task.get() {
            s.exec.trace_mark(task, "cancel");
        }
        cancel_pdu.complete.wait(co);
        s.wake_flush_or_free(&cancel_pdu);
    }
    Ok(Rflush {}.into())
}

/// `v9fs_clunk`: the fid is gone whatever the result; the result is that of
/// freeing it (a close, or an xattr commit).
pub(crate) fn v9fs_clunk(co: &Co, s: &Rc<V9fsState>, pdu: &Rc<Pdu>, body: &[u8]) -> HandlerResult {
    let m: Tclunk = s.unmarshal(pdu, body)?;
    let fidp = s.clunk_fid(m.fid).ok_or(Errno::ENOENT)?;
    fidp.borrow_mut().refcount += 1;
    s.put_fid(co, &fidp)?;
    Ok(Rclunk {}.into())
}
