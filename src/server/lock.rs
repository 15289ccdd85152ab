//! Tlock and Tgetlock under `locks=posix` (coro9p's own option; QEMU's
//! answer, the default, is in `file.rs`).
//!
//! A lock belongs to a lock owner made of the session, the client's
//! `proc_id` and its `client_id` (the Linux client sends the process id and
//! its host name), so two processes of one client contend as they would on
//! a local file system, and two clients never share an owner. The driver
//! takes an open-file-description lock for that owner (see
//! `fsdev/local/locks.rs`): a real host lock. A request never waits on a
//! worker: a conflict is answered `P9_LOCK_BLOCKED`, blocking flag or not,
//! and the Linux client retries a blocking request after a while. A fid
//! that locked keeps its handle (it is marked non-reclaimable), since
//! closing the handle could drop the lock.

use nix::errno::Errno;

use super::fid::{FidRef, FID_NON_RECLAIMABLE};
use super::{HandlerResult, V9fsState};
use crate::co;
use crate::fsdev::{FileHandle, LockConflict, RecordLock};
use crate::protocol::{P9Str, Rgetlock, Rlock, Tgetlock, Tlock};
use crate::runtime::Co;

/// P9_LOCK_TYPE_RDLCK, P9_LOCK_TYPE_WRLCK, P9_LOCK_TYPE_UNLCK.
const P9_LOCK_TYPE_RDLCK: u8 = 0;
const P9_LOCK_TYPE_WRLCK: u8 = 1;
const P9_LOCK_TYPE_UNLCK: u8 = 2;
/// P9_LOCK_SUCCESS, P9_LOCK_BLOCKED.
const P9_LOCK_SUCCESS: u8 = 0;
const P9_LOCK_BLOCKED: u8 = 1;

const RDLCK: i16 = libc::F_RDLCK as i16;
const WRLCK: i16 = libc::F_WRLCK as i16;
const UNLCK: i16 = libc::F_UNLCK as i16;

/// The host lock type of a 9P one; anything else is EINVAL.
fn host_type(ty: u8) -> Result<i16, Errno> {
    match ty {
        P9_LOCK_TYPE_RDLCK => Ok(RDLCK),
        P9_LOCK_TYPE_WRLCK => Ok(WRLCK),
        P9_LOCK_TYPE_UNLCK => Ok(UNLCK),
        _ => Err(Errno::EINVAL),
    }
}

fn p9_type(ty: i16) -> u8 {
    match ty {
        RDLCK => P9_LOCK_TYPE_RDLCK,
        WRLCK => P9_LOCK_TYPE_WRLCK,
        _ => P9_LOCK_TYPE_UNLCK,
    }
}

/// The lock owner's bytes: the session (its address, unique while it
/// lives, and its locks go with its handles when it ends), then `proc_id`,
/// then `client_id`.
fn owner(s: &V9fsState, proc_id: u32, client_id: &P9Str) -> Vec<u8> {
    let session = s as *const V9fsState as usize as u64;
    let mut o = session.to_le_bytes().to_vec();
    o.extend_from_slice(&proc_id.to_le_bytes());
    o.extend_from_slice(client_id.as_bytes());
    o
}

/// `proc_id` and `client_id` back from an owner's bytes.
fn split_owner(o: &[u8]) -> Option<(u32, Vec<u8>)> {
    let proc_id = u32::from_le_bytes(o.get(8..12)?.try_into().ok()?);
    Some((proc_id, o[12..].to_vec()))
}

/// The fid's open file; as fcntl does with a descriptor, a read lock needs
/// it open for reading and a write lock for writing (EBADF). A fid that is
/// not an open file is EBADF too.
fn lock_file(fidp: &FidRef, ty: i16) -> Result<FileHandle, Errno> {
    let f = fidp.borrow();
    let h = f.file().ok_or(Errno::EBADF)?;
    let acc = f.open_flags & libc::O_ACCMODE;
    let allowed = match ty {
        RDLCK => acc == libc::O_RDONLY || acc == libc::O_RDWR,
        WRLCK => acc == libc::O_WRONLY || acc == libc::O_RDWR,
        _ => true,
    };
    if !allowed {
        return Err(Errno::EBADF);
    }
    Ok(h)
}

/// Tlock: set or clear the owner's lock, never waiting.
pub(crate) fn posix_lock(co: &Co, s: &V9fsState, fidp: &FidRef, m: &Tlock) -> HandlerResult {
    let ty = host_type(m.ty)?;
    let h = lock_file(fidp, ty)?;
    let lock = RecordLock {
        ty,
        start: m.start,
        len: m.length,
    };
    let who = owner(s, m.proc_id, &m.client_id);
    let status = match co::co_setlk(co, s, &h, who, lock) {
        Ok(()) => {
            if ty != UNLCK {
                fidp.borrow_mut().flags |= FID_NON_RECLAIMABLE;
            }
            P9_LOCK_SUCCESS
        }
        Err(Errno::EAGAIN | Errno::EACCES) => P9_LOCK_BLOCKED,
        Err(e) => return Err(e),
    };
    Ok(Rlock { status }.into())
}

/// Tgetlock: the first lock of another owner in the way, or "unlocked"
/// with the request echoed (as QEMU answers).
pub(crate) fn posix_getlock(co: &Co, s: &V9fsState, fidp: &FidRef, m: Tgetlock) -> HandlerResult {
    let ty = host_type(m.ty)?;
    let h = lock_file(fidp, UNLCK)?;
    let unlocked = Rgetlock {
        ty: P9_LOCK_TYPE_UNLCK,
        start: m.start,
        length: m.length,
        proc_id: m.proc_id,
        client_id: m.client_id.clone(),
    };
    if ty == UNLCK {
        // Nothing conflicts with an unlock.
        return Ok(unlocked.into());
    }
    let lock = RecordLock {
        ty,
        start: m.start,
        len: m.length,
    };
    let who = owner(s, m.proc_id, &m.client_id);
    let Some(LockConflict { lock, owner, pid }) = co::co_getlk(co, s, &h, who, lock)? else {
        return Ok(unlocked.into());
    };
    // A holder that is not a client's lock owner: a host process (its pid)
    // or one the driver cannot tell (0), with no client id.
    let (proc_id, client_id) = owner
        .as_deref()
        .and_then(split_owner)
        .unwrap_or((pid as u32, Vec::new()));
    Ok(Rgetlock {
        ty: p9_type(lock.ty),
        start: lock.start,
        length: lock.len,
        proc_id,
        client_id: P9Str(client_id),
    }
    .into())
}
