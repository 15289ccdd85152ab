//! Fids (QEMU's `V9fsFidState`): the table, reference counts, clunk while
//! in use, and fd reclaim.

use std::cell::RefCell;
use std::rc::Rc;

use nix::errno::Errno;

use super::V9fsState;
use crate::co;
use crate::fsdev::{DirHandle, FileHandle, V9fsPath};
use crate::protocol::Fid;
use crate::runtime::{Co, CoMutex};

/// QEMU's `fid_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FidType {
    /// Walked or attached, not open.
    None,
    /// An open file.
    File,
    /// An open directory.
    Dir,
    /// An xattr read (Txattrwalk) or write (Txattrcreate) buffer.
    Xattr,
}

/// An xattr fid's state (QEMU's `V9fsXattr`).
#[derive(Clone, Debug, Default)]
pub(crate) struct XattrState {
    /// The announced size (Txattrcreate) or the value's size (Txattrwalk).
    pub len: u64,
    /// Bytes written so far by Twrite (counted cumulatively, as QEMU does).
    pub copied_len: u64,
    pub flags: i32,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// True for Txattrwalk fids (read side), false for Txattrcreate.
    pub walk: bool,
}

/// The open state (QEMU's `V9fsFidOpenState` union). A FILE or DIR whose
/// handle is `None` has been reclaimed and is reopened on next use.
#[derive(Clone, Default)]
pub(crate) enum OpenState {
    #[default]
    None,
    File(Option<FileHandle>),
    Dir(Option<DirHandle>),
    Xattr(Box<XattrState>),
}

/// FID_REFERENCED: used since the last reclaim pass (second chance).
pub(crate) const FID_REFERENCED: u32 = 0x1;
/// FID_NON_RECLAIMABLE: never close this fid's handle to save fds.
pub(crate) const FID_NON_RECLAIMABLE: u32 = 0x2;

/// A fid's state. Borrowed only briefly on the main thread, never across a
/// hop.
pub struct FidState {
    /// The fid number.
    pub fid: Fid,
    pub(crate) path: V9fsPath,
    pub(crate) open: OpenState,
    pub(crate) flags: u32,
    pub(crate) open_flags: i32,
    pub(crate) uid: u32,
    pub(crate) refcount: u32,
    pub(crate) clunked: bool,
    /// Serialises 9P2000.u directory reads on this fid (QEMU's co-mutex
    /// readdir lock; 9P2000.L locks the stream inside the worker job).
    pub(crate) readdir_lock: Rc<CoMutex>,
}

impl FidState {
    /// The fid's type.
    pub fn fid_type(&self) -> FidType {
        match self.open {
            OpenState::None => FidType::None,
            OpenState::File(_) => FidType::File,
            OpenState::Dir(_) => FidType::Dir,
            OpenState::Xattr(_) => FidType::Xattr,
        }
    }

    /// The open file handle, if the fid is an open, not reclaimed file.
    pub(crate) fn file(&self) -> Option<FileHandle> {
        match &self.open {
            OpenState::File(Some(h)) => Some(h.clone()),
            _ => None,
        }
    }

    /// The open directory, if the fid is an open, not reclaimed directory.
    pub(crate) fn dir(&self) -> Option<DirHandle> {
        match &self.open {
            OpenState::Dir(Some(d)) => Some(d.clone()),
            _ => None,
        }
    }
}

/// A fid shared by the table and the requests using it.
pub(crate) type FidRef = Rc<RefCell<FidState>>;

impl V9fsState {
    /// `alloc_fid`: a new fid with one reference; EINVAL if the number is
    /// taken (QEMU's answer), ENFILE if the table holds `max_fids` already.
    /// QEMU has no such limit; ENFILE is what it answers when another table
    /// of the session, the qid path map, is full.
    pub(crate) fn alloc_fid(&self, fid: Fid) -> Result<FidRef, Errno> {
        let mut fids = self.fids.borrow_mut();
        if fids.contains_key(&fid) {
            return Err(Errno::EINVAL);
        }
        let limit = self.export.options.max_fids as usize;
        if limit > 0 && fids.len() >= limit {
            log::warn!("9p: fid table full (configurable by option 'max_fids')");
            return Err(Errno::ENFILE);
        }
        let f = Rc::new(RefCell::new(FidState {
            fid,
            path: V9fsPath::default(),
            open: OpenState::None,
            flags: FID_REFERENCED,
            open_flags: 0,
            uid: 0,
            refcount: 1,
            clunked: false,
            readdir_lock: Rc::new(CoMutex::new()),
        }));
        fids.insert(fid, Rc::clone(&f));
        Ok(f)
    }

    /// `get_fid`: takes a reference; reopens a reclaimed handle (a hop). A
    /// fid that cannot be reopened is reported as not found.
    pub(crate) fn get_fid(&self, co: &Co, fid: Fid) -> Option<FidRef> {
        let f = self.fids.borrow().get(&fid).cloned()?;
        f.borrow_mut().refcount += 1;
        if self.reopen_if_reclaimed(co, &f).is_err() {
            f.borrow_mut().refcount -= 1;
            return None;
        }
        f.borrow_mut().flags |= FID_REFERENCED;
        Some(f)
    }

    /// `put_fid`: drops a reference; the last one of a clunked fid frees it.
    /// The error of that free (a close, an xattr commit) is returned.
    pub(crate) fn put_fid(&self, co: &Co, f: &FidRef) -> Result<(), Errno> {
        let free = {
            let mut st = f.borrow_mut();
            st.refcount -= 1;
            st.refcount == 0 && st.clunked
        };
        if free {
            self.free_fid(co, f)
        } else {
            Ok(())
        }
    }

    /// `clunk_fid`: removes the fid from the table and marks it clunked; the
    /// caller holds it until its `put_fid`.
    pub(crate) fn clunk_fid(&self, fid: Fid) -> Option<FidRef> {
        let f = self.fids.borrow_mut().remove(&fid)?;
        f.borrow_mut().clunked = true;
        Some(f)
    }

    /// `free_fid`: closes the fid's handle or commits its xattr.
    pub(crate) fn free_fid(&self, co: &Co, f: &FidRef) -> Result<(), Errno> {
        let open = std::mem::take(&mut f.borrow_mut().open);
        match open {
            OpenState::File(Some(h)) => co::co_close(co, self, h),
            OpenState::Dir(Some(d)) => co::co_closedir(co, self, d),
            OpenState::Xattr(x) => {
                let path = f.borrow().path.clone();
                super::xattr::v9fs_xattr_fid_clunk(co, self, &path, *x)
            }
            _ => Ok(()),
        }
    }

    fn reopen_if_reclaimed(&self, co: &Co, f: &FidRef) -> Result<(), Errno> {
        let (ty, path, flags) = {
            let st = f.borrow();
            match st.open {
                OpenState::File(None) => (FidType::File, st.path.clone(), st.open_flags),
                OpenState::Dir(None) => (FidType::Dir, st.path.clone(), 0),
                _ => return Ok(()),
            }
        };
        // Retried on EINTR unless the request is cancelled, as QEMU does.
        co::retry_eintr(
            || co.is_cancelled(),
            || match ty {
                FidType::File => co::co_open(co, self, &path, flags).map(|h| {
                    f.borrow_mut().open = OpenState::File(Some(h));
                }),
                _ => co::co_opendir(co, self, &path).map(|d| {
                    f.borrow_mut().open = OpenState::Dir(Some(d));
                }),
            },
        )
    }

    /// Fids whose path is `path` (snapshot; the table may change across the
    /// hops that follow).
    fn fids_with_path(&self, path: &V9fsPath) -> Vec<FidRef> {
        self.fids
            .borrow()
            .values()
            .filter(|f| &f.borrow().path == path)
            .cloned()
            .collect()
    }

    /// Whether some fid's handle was reclaimed (closed, to reopen on use).
    pub(crate) fn has_reclaimed_fids(&self) -> bool {
        self.fids.borrow().values().any(|f| {
            matches!(
                f.borrow().open,
                OpenState::File(None) | OpenState::Dir(None)
            )
        })
    }

    /// `v9fs_mark_fids_unreclaim`: every fid on `path` must keep its handle
    /// (the file is about to be unlinked and could not be reopened): mark
    /// them, and reopen those already reclaimed.
    pub(crate) fn mark_fids_unreclaim(&self, co: &Co, path: &V9fsPath) -> Result<(), Errno> {
        let _lock = self.path_read_lock(co);
        // Mark and hold all of them first: reopening yields, and the table
        // may change meanwhile.
        let fids = self.fids_with_path(path);
        for f in &fids {
            let mut st = f.borrow_mut();
            st.flags |= FID_NON_RECLAIMABLE;
            st.refcount += 1;
        }
        let mut result = Ok(());
        for f in &fids {
            if result.is_ok() {
                result = self.reopen_if_reclaimed(co, f);
            }
        }
        for f in &fids {
            let _ = self.put_fid(co, f);
        }
        result
    }

    /// `v9fs_reclaim_fd`: when open handles pass the high-water mark, close
    /// the handles of idle fids (second-chance LRU) in one hop; they reopen
    /// on next use.
    pub(crate) fn reclaim_fd(&self, co: &Co) {
        if self.reclaiming.replace(true) {
            return;
        }
        let fds = &self.export.fds;
        let mut victims: Vec<FidRef> = Vec::new();
        let mut handles = Vec::new();
        for f in self.fids.borrow().values() {
            if handles.len() >= fds.reclaim_count() {
                break;
            }
            let mut st = f.borrow_mut();
            if st.refcount > 0 || st.flags & FID_NON_RECLAIMABLE != 0 {
                continue;
            }
            if st.flags & FID_REFERENCED != 0 {
                st.flags &= !FID_REFERENCED;
                continue;
            }
            let taken = match &mut st.open {
                OpenState::File(h @ Some(_)) => h.take().map(co::Handle::File),
                OpenState::Dir(d @ Some(_)) => d.take().map(co::Handle::Dir),
                _ => None,
            };
            if let Some(h) = taken {
                st.refcount += 1;
                handles.push(h);
                victims.push(Rc::clone(f));
            }
        }
        if !handles.is_empty() {
            match self.compat() {
                crate::Compat::Master => co::co_close_many(co, self, handles),
                // QEMU 7.2 closed them one hop at a time.
                crate::Compat::V7_2 => {
                    for h in handles {
                        co::co_close_many(co, self, vec![h]);
                    }
                }
            }
        }
        for f in &victims {
            let _ = self.put_fid(co, f);
        }
        self.reclaiming.set(false);
    }
}
