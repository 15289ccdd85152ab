//! The Rust side of the C transport: the PDU array C sees, the callback
//! table, and the [`Transport`] the session replies through.
//!
//! Requests are gathered and replies scattered the way QEMU's virtio
//! transport marshals, one copy each way: the request's driver-written
//! buffers are sized with `init_out_iov_from_pdu` and copied out whole with
//! `pdu_unmarshal`; the reply goes into the device-writable buffers with one
//! `pdu_marshal` at offset 0, then `push_and_notify`.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::ffi::{c_uint, c_void, CString};

use super::abi::*;
use super::{fail, ptr, Coro9pServer};
use crate::protocol::HEADER_SIZE;
use crate::server::MAX_REQ;
use crate::transport::Transport;

/// The largest request gathered from the out buffers; anything beyond is
/// not copied (the session then sees a truncated request).
const MAX_GATHER: usize = 64 << 20;

/// The validated callback table: the five required ones are present.
#[derive(Clone, Copy)]
pub(super) struct Callbacks {
    marshal: PduMarshalFn,
    unmarshal: PduUnmarshalFn,
    init_in_iov: InitIovFn,
    init_out_iov: InitIovFn,
    push_and_notify: PushAndNotifyFn,
    msize_limit: Option<MsizeLimitFn>,
    response_buffer_size: Option<ResponseBufferSizeFn>,
    transport_error: Option<TransportErrorFn>,
}

impl Callbacks {
    /// Checks that the required callbacks are set.
    pub(super) fn new(t: &Coro9pTransport) -> Result<Callbacks, std::ffi::c_int> {
        let missing = |name: &str| fail(libc::EINVAL, format!("transport: {name} is NULL"));
        Ok(Callbacks {
            marshal: t.pdu_marshal.ok_or_else(|| missing("pdu_marshal"))?,
            unmarshal: t.pdu_unmarshal.ok_or_else(|| missing("pdu_unmarshal"))?,
            init_in_iov: t
                .init_in_iov_from_pdu
                .ok_or_else(|| missing("init_in_iov_from_pdu"))?,
            init_out_iov: t
                .init_out_iov_from_pdu
                .ok_or_else(|| missing("init_out_iov_from_pdu"))?,
            push_and_notify: t
                .push_and_notify
                .ok_or_else(|| missing("push_and_notify"))?,
            msize_limit: t.msize_limit,
            response_buffer_size: t.response_buffer_size,
            transport_error: t.transport_error,
        })
    }
}

/// Where a PDU is, as the C side has seen it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotState {
    /// Not handed out since the last alloc (free, or its request is done).
    Idle,
    /// Handed out by `coro9p_pdu_alloc`, not submitted yet.
    Allocated,
    /// Submitted; coro9p owns it until it frees it.
    Submitted,
}

/// State shared by the exported functions and the session's transport.
pub(super) struct Shim {
    cb: Callbacks,
    opaque: *mut c_void,
    /// The PDUs C sees; the boxed slice never moves.
    pdus: Box<[UnsafeCell<Coro9pPdu>]>,
    slots: RefCell<Vec<SlotState>>,
    /// Nesting depth of callbacks into C: exported functions refuse to run
    /// inside one (they would re-enter the executor).
    in_callback: Cell<u32>,
}

impl Shim {
    pub(super) fn new(cb: Callbacks, opaque: *mut c_void) -> Shim {
        let pdus = (0..MAX_REQ)
            .map(|idx| {
                UnsafeCell::new(Coro9pPdu {
                    size: 0,
                    tag: 0,
                    id: 0,
                    reserved: 0,
                    idx: idx as u32,
                    s: std::ptr::null_mut(),
                    opaque,
                })
            })
            .collect();
        Shim {
            cb,
            opaque,
            pdus,
            slots: RefCell::new(vec![SlotState::Idle; MAX_REQ]),
            in_callback: Cell::new(0),
        }
    }

    /// Sets every PDU's back pointer once the server has its final address.
    pub(super) fn set_server(&self, s: *mut Coro9pServer) {
        for i in 0..MAX_REQ {
            self.with_pdu(i, |p| p.s = s);
        }
    }

    pub(super) fn pdu_ptr(&self, idx: usize) -> *mut Coro9pPdu {
        self.pdus[idx].get()
    }

    /// The slot number of a PDU pointer C handed back, if it is one of ours
    /// (found by address alone: nothing is read through it).
    pub(super) fn pdu_index(&self, p: *const Coro9pPdu) -> Option<usize> {
        let base = self.pdus.as_ptr() as usize;
        let off = (p as usize).checked_sub(base)?;
        let size = std::mem::size_of::<UnsafeCell<Coro9pPdu>>();
        let idx = off / size;
        (off % size == 0 && idx < MAX_REQ).then_some(idx)
    }

    pub(super) fn slot(&self, idx: usize) -> SlotState {
        self.slots.borrow()[idx]
    }

    pub(super) fn set_slot(&self, idx: usize, st: SlotState) {
        self.slots.borrow_mut()[idx] = st;
    }

    /// The slots handed out but not submitted.
    pub(super) fn allocated(&self) -> Vec<usize> {
        let slots = self.slots.borrow();
        (0..MAX_REQ)
            .filter(|&i| slots[i] == SlotState::Allocated)
            .collect()
    }

    pub(super) fn in_callback(&self) -> bool {
        self.in_callback.get() > 0
    }

    /// Updates a PDU's fields (main thread, never inside a callback).
    pub(super) fn with_pdu<R>(&self, idx: usize, f: impl FnOnce(&mut Coro9pPdu) -> R) -> R {
        // SAFETY: the PDUs belong to this shim and live as long as it. C
        // reads them only on this thread, from inside our calls into it or
        // between our calls, never while this exclusive borrow (which ends
        // with `f`) is live; Rust makes no other reference to them.
        unsafe { f(&mut *self.pdus[idx].get()) }
    }

    /// Runs a call into C, marked so that C cannot re-enter coro9p from it.
    fn call<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Depth<'a>(&'a Cell<u32>);
        impl Drop for Depth<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        self.in_callback.set(self.in_callback.get() + 1);
        let _depth = Depth(&self.in_callback);
        f()
    }

    /// The total size of the request's in (`out == false`) or out buffers.
    fn iov_total(&self, idx: usize, out: bool) -> Result<usize, String> {
        let mut iov: *mut libc::iovec = std::ptr::null_mut();
        let mut niov: c_uint = 0;
        let (f, name) = if out {
            (self.cb.init_out_iov, "init_out_iov_from_pdu")
        } else {
            (self.cb.init_in_iov, "init_in_iov_from_pdu")
        };
        let pdu = self.pdu_ptr(idx);
        self.call(|| {
            // SAFETY: `f` is the transport's callback (non-NULL, checked at
            // coro9p_new); `pdu` is one of our live PDUs, and `iov`/`niov`
            // are valid for writes for the call.
            unsafe { f(pdu, &mut iov, &mut niov, HEADER_SIZE) }
        });
        // SAFETY: the callback's contract: `iov` points to `niov` iovecs that
        // stay valid until the request is pushed; we read them now.
        let v = unsafe { ptr::to_slice(iov, niov as usize, name) }
            .map_err(|_| format!("{name} returned a bad iovec array ({niov} at {iov:p})"))?;
        v.iter()
            .try_fold(0usize, |a, e| a.checked_add(e.iov_len))
            .ok_or_else(|| format!("{name}: the buffer sizes overflow"))
    }

    /// Copies the request (header included) out of the driver-written
    /// buffers.
    pub(super) fn gather(&self, idx: usize) -> Result<Vec<u8>, String> {
        let total = self.iov_total(idx, true)?;
        if total < HEADER_SIZE {
            return Err(format!(
                "the request's buffers hold {total} bytes, below the 7-byte header"
            ));
        }
        let n = if total > MAX_GATHER {
            log::warn!("coro9p: a {total}-byte request is cut to {MAX_GATHER} bytes");
            MAX_GATHER
        } else {
            total
        };
        let mut buf = vec![0u8; n];
        let pdu = self.pdu_ptr(idx);
        let f = self.cb.unmarshal;
        let got = self.call(|| {
            // SAFETY: `f` is the transport's pdu_unmarshal (non-NULL); `buf`
            // is valid for writes of `n` bytes for the call.
            unsafe { f(pdu, 0, buf.as_mut_ptr().cast(), n) }
        });
        if got != n as isize {
            return Err(format!(
                "pdu_unmarshal of the {n}-byte request returned {got}"
            ));
        }
        Ok(buf)
    }

    /// Reports a broken request stream to the transport.
    pub(super) fn transport_error(&self, msg: &str) {
        log::error!("coro9p: transport error: {msg}");
        if let Some(f) = self.cb.transport_error {
            let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
            let opaque = self.opaque;
            self.call(|| {
                // SAFETY: `f` is the transport's optional callback, set (not
                // NULL); `c` is a NUL-terminated string live for the call.
                unsafe { f(opaque, c.as_ptr()) }
            });
        }
    }
}

/// The session's transport: replies go back through the C callbacks.
pub(super) struct FfiTransport {
    pub(super) shim: std::rc::Rc<Shim>,
    /// `max_msize=`, if the fsdev string gave it: lowers the transport's
    /// own `msize_limit`.
    pub(super) max_msize: Option<u32>,
}

impl Transport for FfiTransport {
    fn push_and_notify(&self, idx: usize, reply: Vec<u8>) {
        let shim = &*self.shim;
        let pdu = shim.pdu_ptr(idx);
        let mut size = reply.len();
        if !reply.is_empty() {
            let f = shim.cb.marshal;
            let n = shim.call(|| {
                // SAFETY: `f` is the transport's pdu_marshal (non-NULL);
                // `reply` is valid for reads of its length for the call.
                unsafe { f(pdu, 0, reply.as_ptr().cast(), reply.len()) }
            });
            if n != reply.len() as isize {
                // The transport has flagged its own error (virtio_error);
                // the element still goes back, empty.
                log::error!(
                    "coro9p: the {}-byte reply of type {} (tag {}) did not fit the request's buffers (pdu_marshal returned {n})",
                    reply.len(),
                    reply[4],
                    u16::from_le_bytes([reply[5], reply[6]]),
                );
                size = 0;
            } else {
                shim.with_pdu(idx, |p| p.id = reply[4]);
            }
        }
        shim.with_pdu(idx, |p| p.size = size as u32);
        let f = shim.cb.push_and_notify;
        shim.call(|| {
            // SAFETY: `f` is the transport's push_and_notify (non-NULL) and
            // `pdu` one of our live PDUs.
            unsafe { f(pdu) }
        });
    }

    fn msize_limit(&self) -> Option<u32> {
        let shim = &*self.shim;
        let Some(f) = shim.cb.msize_limit else {
            return self.max_msize;
        };
        let opaque = shim.opaque;
        let n = shim.call(|| {
            // SAFETY: `f` is the transport's optional msize_limit, set.
            unsafe { f(opaque) }
        });
        let n = n.min(u32::MAX as usize) as u32;
        Some(self.max_msize.map_or(n, |m| m.min(n)))
    }

    fn response_buffer_size(&self, idx: usize) -> Option<u32> {
        let shim = &*self.shim;
        let n = match shim.cb.response_buffer_size {
            Some(f) => {
                let pdu = shim.pdu_ptr(idx);
                shim.call(|| {
                    // SAFETY: `f` is the transport's optional callback, set;
                    // `pdu` is one of our live PDUs.
                    unsafe { f(pdu) }
                })
            }
            // Without the callback (QEMU 7.2's table), what the in
            // buffers hold, as virtio's implementation computes it.
            None => match shim.iov_total(idx, false) {
                Ok(n) => n,
                Err(e) => {
                    shim.transport_error(&e);
                    0
                }
            },
        };
        Some(n.min(u32::MAX as usize) as u32)
    }

    fn fatal_error(&self, msg: &str) {
        self.shim.transport_error(msg);
    }

    fn pdu_freed(&self) {
        // As with virtio: a transport that ran out of PDUs takes in more on
        // its next kick, not when one frees.
    }
}
