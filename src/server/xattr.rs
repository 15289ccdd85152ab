//! Extended attributes: Txattrwalk, Txattrcreate, and the commit at Tclunk.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::errno::Errno;

use super::fid::{OpenState, XattrState};
use super::session::with_fid;
use super::{FidType, HandlerResult, Pdu, V9fsState};
use crate::co;
use crate::fsdev::V9fsPath;
use crate::protocol::{Rxattrcreate, Rxattrwalk, Txattrcreate, Txattrwalk};
use crate::runtime::Co;
use crate::Compat;

/// P9_XATTR_CREATE and P9_XATTR_REPLACE (the host's values on Linux).
const P9_XATTR_FLAGS: u32 = 0x1 | 0x2;

/// The xattr-fid limit (`max_xattr`, master only): ENOSPC at the limit.
fn check_xattr_limit(s: &V9fsState) -> Result<(), Errno> {
    xattr_limit(s.compat(), s.export.max_xattr, s.xattr_fid_count())
}

/// [`check_xattr_limit`] on values, which a worker can check too.
fn xattr_limit(compat: Compat, limit: u64, count: u64) -> Result<(), Errno> {
    if compat == Compat::Master && limit > 0 && count >= limit {
        log::warn!("9p: xattr_fid_count limit exceeded (configurable by option 'max_xattr')");
        return Err(Errno::ENOSPC);
    }
    Ok(())
}

/// `v9fs_xattrwalk`: a new fid holding a snapshot of one xattr's value, or
/// of the name list when the name is empty.
pub(crate) fn v9fs_xattrwalk(
    co: &Co,
    s: &Rc<V9fsState>,
    pdu: &Rc<Pdu>,
    body: &[u8],
) -> HandlerResult {
    let m: Txattrwalk = s.unmarshal(pdu, body)?;
    with_fid(co, s, m.fid, Errno::ENOENT, |fidp| {
        let newfidp = s.alloc_fid(m.newfid)?;
        let path = fidp.borrow().path.clone();
        newfidp.borrow_mut().path = path.clone();
        // An empty name asks for the list of names.
        let name = (!m.name.0.is_empty()).then(|| m.name.c_str().to_vec());
        let result = (|| {
            let mut make_fid = |size: usize| {
                // The snapshot is held until Tclunk: no more than
                // max_xattr_size per fid. E2BIG is what getxattr(2) says of
                // a value too large to hand out; with the default the
                // host's own cap is the same.
                if size as u64 > s.export.options.max_xattr_size as u64 {
                    return Err(Errno::E2BIG);
                }
                check_xattr_limit(s)?;
                newfidp.borrow_mut().open = OpenState::Xattr(Box::new(XattrState {
                    len: size as u64,
                    value: vec![0; size],
                    walk: true,
                    ..XattrState::default()
                }));
                s.set_xattr_fid_count(s.xattr_fid_count() + 1);
                Ok(())
            };
            let (compat, limit) = (s.compat(), s.export.max_xattr);
            let count = Arc::clone(&s.ctx.xattr_fid_count);
            let reached = move || xattr_limit(compat, limit, count.load(Ordering::Relaxed));
            let (size, value) = co::co_xattrwalk(co, s, &path, name, &mut make_fid, reached)?;
            if size > 0 {
                if let OpenState::Xattr(x) = &mut newfidp.borrow_mut().open {
                    let n = value.len().min(x.value.len());
                    x.value[..n].copy_from_slice(&value[..n]);
                }
            }
            Ok(size as u64)
        })();
        if result.is_err() {
            s.clunk_fid(m.newfid);
        }
        let _ = s.put_fid(co, &newfidp);
        Ok(Rxattrwalk { size: result? }.into())
    })
}

/// `v9fs_xattrcreate`: the fid itself becomes a buffer for the value, which
/// Twrite fills and Tclunk commits. No hop.
pub(crate) fn v9fs_xattrcreate(
    co: &Co,
    s: &Rc<V9fsState>,
    pdu: &Rc<Pdu>,
    body: &[u8],
) -> HandlerResult {
    let m: Txattrcreate = s.unmarshal(pdu, body)?;
    if m.flags & !P9_XATTR_FLAGS != 0 {
        return Err(Errno::EINVAL);
    }
    // QEMU: E2BIG above P9_XATTR_SIZE_MAX (the default of max_xattr_size).
    if m.attr_size > s.export.options.max_xattr_size as u64 {
        return Err(Errno::E2BIG);
    }
    with_fid(co, s, m.fid, Errno::EINVAL, |fidp| {
        if fidp.borrow().fid_type() != FidType::None {
            return Err(Errno::EINVAL);
        }
        check_xattr_limit(s)?;
        fidp.borrow_mut().open = OpenState::Xattr(Box::new(XattrState {
            len: m.attr_size,
            copied_len: 0,
            flags: m.flags as i32,
            name: m.name.c_str().to_vec(),
            value: vec![0; m.attr_size as usize],
            walk: false,
        }));
        s.set_xattr_fid_count(s.xattr_fid_count() + 1);
        Ok(Rxattrcreate {}.into())
    })
}

/// `v9fs_xattr_fid_clunk`: a create fid commits its value (or removes the
/// xattr when the size was 0) if it was written completely.
pub(crate) fn v9fs_xattr_fid_clunk(
    co: &Co,
    s: &V9fsState,
    path: &V9fsPath,
    x: XattrState,
) -> Result<(), Errno> {
    match s.xattr_fid_count().checked_sub(1) {
        Some(n) => s.set_xattr_fid_count(n),
        None => log::warn!("9p: xattr_fid_count underflow"),
    }
    if x.walk {
        return Ok(());
    }
    if x.len != x.copied_len {
        return Err(Errno::EINVAL);
    }
    if x.len > 0 {
        co::co_lsetxattr(co, s, path, &x.name, x.value, x.flags)
    } else {
        co::co_lremovexattr(co, s, path, &x.name)
    }
}
