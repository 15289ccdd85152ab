//! The 9P server (QEMU's hw/9pfs/9p.c): sessions, PDUs, the request
//! lifecycle, and one handler per T-message.
//!
//! A session ([`V9fsState`]) lives on the main thread. Each request gets a
//! PDU from a pool of 128 (or `max_pdus=`) and a coroutine that
//! [`V9fsState::pdu_submit`] enters at once; the handler runs straight-line
//! code, hopping to workers through the `co_*` functions of `crate::co`,
//! and ends in exactly one [`V9fsState::pdu_complete`], which pushes the
//! reply (or, for a cancelled request whose result is EINTR, an empty
//! completion) and wakes a waiting Tflush.

mod attr;
mod dir;
mod export;
mod fid;
mod file;
mod lock;
mod qid;
mod session;
mod xattr;

pub use export::{
    Export, ExportOptions, FsDriver, Locks, SecurityModel, SOCKET_MAX_MSIZE_DEFAULT, XATTR_SIZE_MAX,
};
pub use fid::{FidState, FidType};
pub(crate) use qid::QidCheck;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::Ordering;

use nix::errno::Errno;

use crate::fsdev::{ExportFlags, FileStat, SessionCtx};
use crate::protocol::{
    self as p9, errno_to_dotl, message_name, strerror, Dialect, Fid, Msg, P9Str, Tag, Wire,
    HEADER_SIZE,
};
use crate::runtime::{
    CancelFlag, Co, CoQueue, CoRwLock, CoRwLockReadGuard, Handle, Task, TaskId, TaskOpts,
};
use crate::transport::Transport;
use crate::{Compat, Hops};

use fid::FidRef;
use qid::QidMaps;

/// QEMU's MAX_REQ: PDUs per session, the default and the ceiling of
/// `max_pdus=`.
pub const MAX_REQ: usize = 128;

/// One request slot (QEMU's `V9fsPDU`).
pub struct Pdu {
    /// Fixed slot number, which the transport uses to find its own context.
    pub idx: usize,
    tag: Cell<Tag>,
    id: Cell<u8>,
    size: Cell<u32>,
    /// QEMU's `cancelled`: raised by Tflush, read by co functions and jobs.
    cancelled: CancelFlag,
    /// Tflushes waiting for this request to complete.
    complete: CoQueue,
    /// The task running the request (for hop-trace marks).
    task: Cell<Option<TaskId>>,
    /// Between pdu_submit and pdu_free. A PDU the C ABI's host has
    /// allocated but not submitted is active with its last request's tag
    /// and id; no Tflush or disconnect may take it for a request.
    submitted: Cell<bool>,
}

impl Pdu {
    /// The request's tag.
    pub fn tag(&self) -> Tag {
        self.tag.get()
    }

    /// The request's message type.
    pub fn id(&self) -> u8 {
        self.id.get()
    }

    /// The request's size field, as sent.
    pub fn size(&self) -> u32 {
        self.size.get()
    }
}

/// The PDU pool: a free list (taken from the head) and the active list,
/// most recently allocated first.
struct PduPool {
    slots: Vec<Rc<Pdu>>,
    free: RefCell<Vec<usize>>,
    active: RefCell<VecDeque<usize>>,
}

impl PduPool {
    /// A pool of `n` PDUs (at most [`MAX_REQ`], which the C ABI's PDU
    /// array is sized for).
    fn new(n: usize) -> PduPool {
        let n = n.clamp(1, MAX_REQ);
        let slots = (0..n)
            .map(|idx| {
                Rc::new(Pdu {
                    idx,
                    tag: Cell::new(Tag(0)),
                    id: Cell::new(0),
                    size: Cell::new(0),
                    cancelled: CancelFlag::new(),
                    complete: CoQueue::new(),
                    task: Cell::new(None),
                    submitted: Cell::new(false),
                })
            })
            .collect();
        // QEMU pushes all 128 at the head in index order, so the head is 127.
        PduPool {
            slots,
            free: RefCell::new((0..n).collect()),
            active: RefCell::new(VecDeque::new()),
        }
    }
}

/// One 9P session: a connection's protocol state (QEMU's `V9fsState` for
/// one device). Lives on the main thread.
pub struct V9fsState {
    pub(crate) exec: Handle,
    pub(crate) export: Rc<Export>,
    pub(crate) transport: Rc<dyn Transport>,
    pub(crate) msize: Cell<u32>,
    pub(crate) proto: Cell<Dialect>,
    pub(crate) fids: RefCell<BTreeMap<Fid, FidRef>>,
    pdus: PduPool,
    /// The root's stat from the last Tattach, for Twalk's ".." rule.
    pub(crate) root_st: Cell<Option<FileStat>>,
    /// Values drivers see (the xattr-fid count).
    pub(crate) ctx: SessionCtx,
    /// QEMU's rename lock; used only by path-based drivers.
    pub(crate) rename_lock: CoRwLock,
    pub(crate) qids: RefCell<QidMaps>,
    pub(crate) reclaiming: Cell<bool>,
    /// Woken when the active list becomes empty (reset drains on it).
    drained: CoQueue,
}

/// What a handler returns: the reply body, or an errno for Rlerror/Rerror.
pub(crate) type HandlerResult = Result<Msg, Errno>;

type Handler = fn(&Co, &Rc<V9fsState>, &Rc<Pdu>, &[u8]) -> HandlerResult;

/// `pdu_co_handlers[]`: the handler for each message type.
fn handler_for(id: u8) -> Option<Handler> {
    use p9::*;
    Some(match id {
        Treaddir::ID => dir::v9fs_readdir,
        Tstatfs::ID => attr::v9fs_statfs,
        Tgetattr::ID => attr::v9fs_getattr,
        Tsetattr::ID => attr::v9fs_setattr,
        Txattrwalk::ID => xattr::v9fs_xattrwalk,
        Txattrcreate::ID => xattr::v9fs_xattrcreate,
        Tmknod::ID => dir::v9fs_mknod,
        Trename::ID => dir::v9fs_rename,
        Tlock::ID => file::v9fs_lock,
        Tgetlock::ID => file::v9fs_getlock,
        Trenameat::ID => dir::v9fs_renameat,
        Treadlink::ID => dir::v9fs_readlink,
        Tunlinkat::ID => dir::v9fs_unlinkat,
        Tmkdir::ID => dir::v9fs_mkdir,
        Tversion::ID => session::v9fs_version,
        Tlopen::ID => file::v9fs_open,
        Tattach::ID => session::v9fs_attach,
        Tstat::ID => attr::v9fs_stat,
        Twalk::ID => dir::v9fs_walk,
        Tclunk::ID => session::v9fs_clunk,
        Tfsync::ID => file::v9fs_fsync,
        Topen::ID => file::v9fs_open,
        Tread::ID => file::v9fs_read,
        Tcreate::ID => file::v9fs_create,
        Twrite::ID => file::v9fs_write,
        Twstat::ID => attr::v9fs_wstat,
        Tremove::ID => dir::v9fs_remove,
        Tflush::ID => session::v9fs_flush,
        Tlink::ID => dir::v9fs_link,
        Tsymlink::ID => dir::v9fs_symlink,
        Tlcreate::ID => file::v9fs_lcreate,
        _ => return None,
    })
}

/// The messages a read-only export still serves (`is_read_only_op`).
fn is_read_only_op(id: u8) -> bool {
    use p9::*;
    matches!(
        id,
        Treaddir::ID
            | Tstatfs::ID
            | Tgetattr::ID
            | Txattrwalk::ID
            | Tlock::ID
            | Tgetlock::ID
            | Treadlink::ID
            | Tversion::ID
            | Tlopen::ID
            | Tattach::ID
            | Tstat::ID
            | Twalk::ID
            | Tclunk::ID
            | Tfsync::ID
            | Topen::ID
            | Tread::ID
            | Tauth::ID
            | Tflush::ID
    )
}

/// `v9fs_op_not_supp`.
fn v9fs_op_not_supp(_: &Co, _: &Rc<V9fsState>, _: &Rc<Pdu>, _: &[u8]) -> HandlerResult {
    Err(Errno::EOPNOTSUPP)
}

/// `v9fs_fs_ro`.
fn v9fs_fs_ro(_: &Co, _: &Rc<V9fsState>, _: &Rc<Pdu>, _: &[u8]) -> HandlerResult {
    Err(Errno::EROFS)
}

impl V9fsState {
    /// A new session on `export`, replying through `transport`.
    pub fn new(exec: Handle, export: Rc<Export>, transport: Rc<dyn Transport>) -> Rc<V9fsState> {
        let ctx = SessionCtx::default();
        let pdus = PduPool::new(export.options.max_pdus);
        Rc::new(V9fsState {
            exec,
            qids: RefCell::new(QidMaps::new(export.root_dev)),
            export,
            transport,
            msize: Cell::new(0),
            proto: Cell::new(Dialect::Unset),
            fids: RefCell::new(BTreeMap::new()),
            pdus,
            root_st: Cell::new(None),
            ctx,
            rename_lock: CoRwLock::new(),
            reclaiming: Cell::new(false),
            drained: CoQueue::new(),
        })
    }

    /// The negotiated msize (0 before Tversion).
    pub fn msize(&self) -> u32 {
        self.msize.get()
    }

    /// The negotiated dialect.
    pub fn dialect(&self) -> Dialect {
        self.proto.get()
    }

    /// Requests in flight (the active list's length).
    pub fn active_requests(&self) -> usize {
        self.pdus.active.borrow().len()
    }

    /// Fids in the table.
    pub fn fid_count(&self) -> usize {
        self.fids.borrow().len()
    }

    pub(crate) fn export_flags(&self) -> ExportFlags {
        self.export.flags
    }

    pub(crate) fn compat(&self) -> Compat {
        self.export.compat
    }

    pub(crate) fn hops(&self) -> Hops {
        self.export.options.hops
    }

    /// Whether the driver is path-based (local): the rename lock is used and
    /// name_to_path needs no hop.
    pub(crate) fn is_path_based(&self) -> bool {
        self.export.flags.has(ExportFlags::PATHNAME_FSCONTEXT)
    }

    /// The rename read lock, for path-based drivers only (QEMU's
    /// `v9fs_path_read_lock`).
    pub(crate) fn path_read_lock(&self, co: &Co) -> Option<CoRwLockReadGuard<'_>> {
        self.is_path_based().then(|| self.rename_lock.read(co))
    }

    /// Takes a free PDU, or `None` when all of them (128, or `max_pdus=`)
    /// are in use: the transport then holds the request back until
    /// [`Transport::pdu_freed`], as QEMU leaves it in the virtqueue.
    pub fn pdu_alloc(&self) -> Option<usize> {
        let idx = self.pdus.free.borrow_mut().pop()?;
        self.pdus.active.borrow_mut().push_front(idx);
        Some(idx)
    }

    fn pdu_free(&self, pdu: &Pdu) {
        debug_assert!(!pdu.cancelled.is_cancelled());
        pdu.submitted.set(false);
        let empty = {
            let mut active = self.pdus.active.borrow_mut();
            active.retain(|&i| i != pdu.idx);
            active.is_empty()
        };
        self.pdus.free.borrow_mut().push(pdu.idx);
        if empty {
            self.drained.restart_all(&self.exec);
        }
        self.transport.pdu_freed();
    }

    /// Starts the request in `frame` (header included, at least 7 bytes) on
    /// PDU `idx`: picks its handler and enters its coroutine at once.
    pub fn pdu_submit(self: &Rc<Self>, idx: usize, frame: Vec<u8>) {
        let pdu = Rc::clone(&self.pdus.slots[idx]);
        let header = match p9::Header::decode(&frame) {
            Ok(h) => h,
            Err(e) => {
                // Transports check this; a short frame here is their bug.
                log::error!("pdu_submit: {e}");
                self.transport.fatal_error("request without a 9P header");
                self.pdu_free(&pdu);
                return;
            }
        };
        pdu.size.set(header.size);
        pdu.id.set(header.id);
        pdu.tag.set(header.tag);
        pdu.submitted.set(true);
        let handler = match handler_for(header.id) {
            None => v9fs_op_not_supp as Handler,
            Some(_) if self.export.readonly && !is_read_only_op(header.id) => v9fs_fs_ro,
            Some(h) => h,
        };
        let label = self.exec.tracer().enabled().then(|| {
            format!(
                "tag {} {}",
                header.tag.0,
                message_name(header.id).unwrap_or("T?")
            )
        });
        let s = Rc::clone(self);
        let opts = TaskOpts {
            label,
            cancel: Some(pdu.cancelled.clone()),
        };
        self.exec.enter_with(opts, move |co| {
            pdu.task.set(Some(co.id()));
            co.trace_mark("arrival");
            let body = &frame[HEADER_SIZE..];
            let result = catch_unwind(AssertUnwindSafe(|| handler(co, &s, &pdu, body)))
                .unwrap_or_else(|_| {
                    log::error!(
                        "handler for {} (tag {}) panicked",
                        message_name(pdu.id()).unwrap_or("?"),
                        pdu.tag().0
                    );
                    Err(Errno::EIO)
                });
            s.pdu_complete(co, &pdu, result);
        });
    }

    /// Sends the reply, or nothing for a cancelled request that ended with
    /// EINTR, then wakes one waiting Tflush or frees the PDU.
    pub(crate) fn pdu_complete(&self, co: &Co, pdu: &Pdu, result: HandlerResult) {
        let discard = pdu.cancelled.is_cancelled() && result == Err(Errno::EINTR);
        let reply = if discard {
            log::debug!("tag {}: cancelled request discarded", pdu.tag().0);
            co.trace_mark("discard");
            Vec::new()
        } else {
            co.trace_mark("reply");
            self.reply_frame(pdu, result)
        };
        self.transport.push_and_notify(pdu.idx, reply);
        self.wake_flush_or_free(pdu);
    }

    /// Wakes the first Tflush waiting on `pdu`; with none left, frees it
    /// (clearing a cancel a Tflush or a disconnect may have set). Each
    /// waking flush calls this in turn, so the last one frees the request.
    pub(crate) fn wake_flush_or_free(&self, pdu: &Pdu) {
        if !pdu.complete.next(&self.exec) {
            pdu.cancelled.clear();
            self.pdu_free(pdu);
        }
    }

    fn reply_frame(&self, pdu: &Pdu, result: HandlerResult) -> Vec<u8> {
        let (id, msg) = match result {
            Ok(msg) => (pdu.id().wrapping_add(1), msg),
            Err(e) if self.proto.get() == Dialect::L => (
                p9::Rlerror::ID,
                p9::Rlerror {
                    ecode: errno_to_dotl(e as i32),
                }
                .into(),
            ),
            Err(e) => (
                p9::Rerror::ID,
                p9::Rerror {
                    ename: P9Str(strerror(e as i32).into_bytes()),
                    errno: e as u32,
                }
                .into(),
            ),
        };
        let frame = msg.frame_as(id, pdu.tag());
        if let Some(room) = self.transport.response_buffer_size(pdu.idx) {
            if frame.len() > room as usize {
                self.transport.fatal_error(&format!(
                    "Failed to encode VirtFS reply type {id}: {} bytes, buffer has {room}",
                    frame.len()
                ));
            }
        }
        frame
    }

    /// Decodes a handler's arguments; a body too short for them is QEMU's
    /// unmarshal failure: the transport is broken and the request ends with
    /// ENOBUFS.
    pub(crate) fn unmarshal<T: Wire>(&self, pdu: &Pdu, body: &[u8]) -> Result<T, Errno> {
        T::decode(&mut p9::Reader::new(body)).map_err(|e| self.decode_failed(pdu, e))
    }

    pub(crate) fn decode_failed(&self, pdu: &Pdu, e: p9::DecodeError) -> Errno {
        self.transport.fatal_error(&format!(
            "Failed to decode VirtFS request type {}: {e}",
            pdu.id()
        ));
        Errno::ENOBUFS
    }

    /// The PDU of the most recent request in flight with `tag`, if any.
    fn find_active(&self, tag: Tag) -> Option<Rc<Pdu>> {
        self.pdus
            .active
            .borrow()
            .iter()
            .map(|&i| &self.pdus.slots[i])
            .find(|p| p.submitted.get() && p.tag() == tag)
            .cloned()
    }

    /// The transport is gone: cancel every request in flight (so none keeps
    /// retrying for a client that left), wait for them to end, then free
    /// every fid (closing its files), as a device reset does. The returned
    /// task ends when all of that is done.
    pub fn disconnect(self: &Rc<Self>) -> Task<()> {
        for &i in self.pdus.active.borrow().iter() {
            let pdu = &self.pdus.slots[i];
            if pdu.submitted.get() {
                pdu.cancelled.cancel();
            }
        }
        self.reset()
    }

    /// A device reset (QEMU's `v9fs_reset`, as virtio's reset calls it):
    /// the requests in flight run to their end, uncancelled, then every fid
    /// is freed. msize and dialect stay. The returned task ends when the
    /// fids are freed; the transport runs the loop until then.
    pub fn reset(self: &Rc<Self>) -> Task<()> {
        let s = Rc::clone(self);
        self.exec.enter(move |co| s.v9fs_reset(co))
    }

    /// Gives back a PDU taken with [`V9fsState::pdu_alloc`] that was never
    /// submitted (QEMU's transport calling `pdu_free`: no request to go
    /// with it, or one it refused). The caller guarantees `idx` is such a
    /// PDU.
    pub fn pdu_release(&self, idx: usize) {
        self.pdu_free(&self.pdus.slots[idx]);
    }

    /// QEMU's `v9fs_reset`: drain the active list, then free all fids.
    fn v9fs_reset(&self, co: &Co) {
        while self.active_requests() > 0 {
            self.drained.wait(co);
        }
        session::virtfs_reset(co, self);
    }

    pub(crate) fn xattr_fid_count(&self) -> u64 {
        self.ctx.xattr_fid_count.load(Ordering::Relaxed)
    }

    pub(crate) fn set_xattr_fid_count(&self, n: u64) {
        self.ctx.xattr_fid_count.store(n, Ordering::Relaxed);
    }
}

/// `get_iounit`: the I/O unit for an open file: `msize − 24` rounded down to
/// the file system's block size (or `msize − 24` when that gives 0).
pub(crate) fn iounit_for(msize: u32, bsize: u64) -> u32 {
    let max = msize.saturating_sub(p9::IOHDRSZ) as u64;
    let unit = max.checked_div(bsize).map_or(0, |n| n * bsize);
    if unit == 0 {
        max as u32
    } else {
        unit as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iounit_rounds_down_to_the_block_size() {
        assert_eq!(iounit_for(32768, 512), 32256);
        assert_eq!(iounit_for(8192, 4096), 4096);
        assert_eq!(iounit_for(8192, 0), 8168);
        assert_eq!(iounit_for(4096, 8192), 4072);
    }
}
