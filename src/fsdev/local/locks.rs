//! Record locks for `locks=posix` (beyond QEMU, which takes none).
//!
//! A lock is an open-file-description lock (`F_OFD_SETLK`), so it is a real
//! host lock that other 9P clients and host processes see, and it belongs
//! to a lock owner (the server's bytes for a client's session, `client_id`
//! and `proc_id`), not to the server process. Each (file, owner) pair gets
//! its own description of the file, opened again from a handle through
//! `/proc/self/fd/N` (the same inode: no path is resolved, so nothing can
//! lead outside the export). Every handle on which an owner locked keeps
//! that description alive; a description shared by two handles of one
//! owner gives POSIX's rule that a process does not conflict with itself,
//! whichever of its fids it locks through. When the last such handle
//! closes, the description closes and its locks go.
//!
//! Requests never wait (`F_OFD_SETLKW` would hold a worker for as long as
//! another client likes): a conflict is EAGAIN, which the server answers
//! as "blocked" and the Linux client retries.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use nix::fcntl::{self, OFlag};
use nix::sys::stat::{self, Mode};

use super::{Errno, FsResult};
use crate::fsdev::{LockConflict, RecordLock};

/// A file, by device and inode, with an owner's bytes.
type OwnerKey = (u64, u64, Vec<u8>);

/// The lock descriptions of an export, one per (file, owner), alive while
/// a handle holds them.
#[derive(Default)]
pub(super) struct LockOwners {
    table: Mutex<HashMap<OwnerKey, Weak<OwnedFd>>>,
}

/// The lock descriptions one handle has used.
pub(super) struct HeldLocks {
    owners: Arc<LockOwners>,
    held: Mutex<HashMap<Vec<u8>, Arc<OwnedFd>>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn flock(lock: &RecordLock) -> FsResult<libc::flock> {
    Ok(libc::flock {
        l_type: lock.ty,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: super::offset(lock.start)?,
        l_len: super::offset(lock.len)?,
        // OFD locks need 0 here.
        l_pid: 0,
    })
}

/// `fcntl(fd, cmd, fl)` for the OFD lock commands.
fn fcntl_lock(fd: BorrowedFd<'_>, cmd: libc::c_int, fl: &mut libc::flock) -> FsResult<()> {
    // SAFETY: F_OFD_SETLK and F_OFD_GETLK read (and GETLK writes) one
    // struct flock through the pointer, which points to `fl`, a live,
    // exclusively borrowed flock; fd is an open descriptor borrowed for the
    // call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, fl as *mut libc::flock) };
    Errno::result(r).map(drop)
}

/// A new description of the file open as `fd`: read-write if the server
/// may, else with what it may.
fn reopen(fd: BorrowedFd<'_>) -> FsResult<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let base = OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    let mut last = Errno::EBADF;
    for acc in [OFlag::O_RDWR, OFlag::O_RDONLY, OFlag::O_WRONLY] {
        match fcntl::open(path.as_str(), acc | base, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl HeldLocks {
    pub(super) fn new(owners: Arc<LockOwners>) -> HeldLocks {
        HeldLocks {
            owners,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn key(fd: BorrowedFd<'_>, owner: &[u8]) -> FsResult<OwnerKey> {
        let st = stat::fstat(fd)?;
        #[allow(clippy::unnecessary_cast)]
        Ok((st.st_dev as u64, st.st_ino as u64, owner.to_vec()))
    }

    /// The description `owner` locks the file of `fd` through: this
    /// handle's, another handle's, or (if `create`) a new one.
    fn owner_fd(
        &self,
        fd: BorrowedFd<'_>,
        owner: &[u8],
        create: bool,
    ) -> FsResult<Option<Arc<OwnedFd>>> {
        let mut held = locked(&self.held);
        if let Some(d) = held.get(owner) {
            return Ok(Some(Arc::clone(d)));
        }
        let key = HeldLocks::key(fd, owner)?;
        let mut table = locked(&self.owners.table);
        if let Some(d) = table.get(&key).and_then(Weak::upgrade) {
            held.insert(owner.to_vec(), Arc::clone(&d));
            return Ok(Some(d));
        }
        if !create {
            return Ok(None);
        }
        let d = Arc::new(reopen(fd)?);
        table.retain(|_, w| w.strong_count() > 0);
        table.insert(key, Arc::downgrade(&d));
        held.insert(owner.to_vec(), Arc::clone(&d));
        Ok(Some(d))
    }

    /// `F_OFD_SETLK` for `owner` on the file of `fd`.
    pub(super) fn setlk(
        &self,
        fd: BorrowedFd<'_>,
        owner: &[u8],
        lock: &RecordLock,
    ) -> FsResult<()> {
        let mut fl = flock(lock)?;
        let unlock = lock.ty == libc::F_UNLCK as libc::c_short;
        match self.owner_fd(fd, owner, !unlock)? {
            Some(d) => fcntl_lock(d.as_fd(), libc::F_OFD_SETLK, &mut fl),
            // An owner without a description holds nothing to unlock.
            None => Ok(()),
        }
    }

    /// `F_OFD_GETLK` for `owner` on the file of `fd`: the first conflicting
    /// lock of another owner, and who holds it when that can be told.
    pub(super) fn getlk(
        &self,
        fd: BorrowedFd<'_>,
        owner: &[u8],
        lock: &RecordLock,
    ) -> FsResult<Option<LockConflict>> {
        let mut fl = flock(lock)?;
        // An owner without a description holds no lock, so the handle's own
        // description (which never locks) tests for it.
        let mine = self.owner_fd(fd, owner, false)?;
        let test = mine.as_deref().map_or(fd, |d| d.as_fd());
        fcntl_lock(test, libc::F_OFD_GETLK, &mut fl)?;
        if fl.l_type == libc::F_UNLCK as libc::c_short {
            return Ok(None);
        }
        let found = RecordLock {
            ty: fl.l_type,
            start: fl.l_start as u64,
            len: fl.l_len as u64,
        };
        // -1: an OFD lock, whose owner the kernel does not name.
        let pid = fl.l_pid.max(0);
        let holder = if fl.l_pid == -1 {
            self.holder_of(fd, owner, &found)?
        } else {
            None
        };
        Ok(Some(LockConflict {
            lock: found,
            owner: holder,
            pid,
        }))
    }

    /// Which other owner of this file holds `found`: the one whose
    /// description lists it in `/proc/self/fdinfo` (the locks a description
    /// owns); none if no single owner does. Where fdinfo cannot be read
    /// (a Landlock sandbox), an owner whose own description sees no lock
    /// of others on that range holds it (its own locks do not count),
    /// which tells the holder of a write lock nobody else overlaps.
    fn holder_of(
        &self,
        fd: BorrowedFd<'_>,
        owner: &[u8],
        found: &RecordLock,
    ) -> FsResult<Option<Vec<u8>>> {
        let (dev, ino, _) = HeldLocks::key(fd, owner)?;
        let table = locked(&self.owners.table);
        let mut holders = Vec::new();
        for ((d, i, who), w) in table.iter() {
            if (*d, *i) != (dev, ino) || who.as_slice() == owner {
                continue;
            }
            let Some(desc) = w.upgrade() else { continue };
            let info = format!("/proc/self/fdinfo/{}", desc.as_raw_fd());
            let holds = match std::fs::read_to_string(info) {
                Ok(info) => info.lines().any(|l| fdinfo_lock_is(l, found)),
                Err(_) => {
                    let mut fl = flock(&RecordLock {
                        ty: libc::F_WRLCK as libc::c_short,
                        ..*found
                    })?;
                    fcntl_lock(desc.as_fd(), libc::F_OFD_GETLK, &mut fl)?;
                    fl.l_type == libc::F_UNLCK as libc::c_short
                }
            };
            if holds {
                holders.push(who.clone());
            }
        }
        Ok(if holders.len() == 1 {
            holders.pop()
        } else {
            None
        })
    }
}

/// Whether a `lock:` line of fdinfo (`lock:\t1: OFDLCK ADVISORY WRITE -1
/// 08:01:1234 0 EOF`) is `lock`.
fn fdinfo_lock_is(line: &str, lock: &RecordLock) -> bool {
    let Some(rest) = line.strip_prefix("lock:") else {
        return false;
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let ty = match words.iter().find(|w| **w == "READ" || **w == "WRITE") {
        Some(&"READ") => libc::F_RDLCK,
        Some(_) => libc::F_WRLCK,
        None => return false,
    };
    let [.., start, end] = words[..] else {
        return false;
    };
    let end = match end {
        "EOF" => None,
        e => e.parse::<u64>().ok(),
    };
    let want_end = match lock.len {
        0 => None,
        n => Some(lock.start.saturating_add(n - 1)),
    };
    ty as libc::c_short == lock.ty
        && start.parse::<u64>().ok() == Some(lock.start)
        && end == want_end
}
