//! The C ABI driven from Rust: a transport whose callbacks serve each
//! request from buffers the host filled, as a C host (virtio-9p-device.c)
//! would, and that checks on every callback what `include/coro9p.h`
//! promises. The `ffi` fuzz target and the tests use it.
//!
//! A callback cannot panic (it would unwind into C), so it records what is
//! wrong and [`Host::check`] panics on the host's side.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

use crate::transport::ffi::{
    coro9p_destroy, coro9p_dispatch, coro9p_get_stats, coro9p_new, coro9p_pdu_alloc,
    coro9p_pdu_free, coro9p_pdu_submit, coro9p_reset, coro9p_wait, Coro9pMsgHeader, Coro9pPdu,
    Coro9pServer, Coro9pStats, Coro9pTransport, CORO9P_MAX_REQ,
};

const SLOTS: usize = CORO9P_MAX_REQ as usize;

/// Where a PDU is, as the host has seen it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Use {
    /// Not handed out, or its request was pushed.
    #[default]
    Idle,
    /// Handed out by `coro9p_pdu_alloc`, not submitted.
    Allocated,
    /// Submitted, not pushed yet.
    Submitted,
}

/// One request slot: the buffers a virtio element would hold.
struct Slot {
    pdu: *mut Coro9pPdu,
    state: Use,
    tag: u16,
    id: u8,
    /// The driver-written bytes (the request) and the iovecs over them.
    request: Vec<u8>,
    out_iov: Vec<libc::iovec>,
    /// The device-writable bytes (room for the reply) and the iovecs.
    reply: Vec<u8>,
    in_iov: Vec<libc::iovec>,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            pdu: std::ptr::null_mut(),
            state: Use::Idle,
            tag: 0,
            id: 0,
            request: Vec::new(),
            out_iov: Vec::new(),
            reply: Vec::new(),
            in_iov: Vec::new(),
        }
    }
}

/// What the callbacks share with the host. Boxed, so its address (the
/// server's `opaque`) stays put; it outlives the server.
struct Inner {
    slots: RefCell<Vec<Slot>>,
    server: Cell<*mut Coro9pServer>,
    destroyed: Cell<bool>,
    msize_limit: usize,
    /// Pushed replies, in push order: (slot, bytes; empty when discarded).
    replies: RefCell<Vec<(usize, Vec<u8>)>>,
    pushes: Cell<u64>,
    submitted: Cell<u64>,
    transport_errors: Cell<u64>,
    /// Broken promises seen inside callbacks.
    violations: RefCell<Vec<String>>,
}

impl Inner {
    fn violation(&self, msg: String) {
        self.violations.borrow_mut().push(msg);
    }
}

/// The optional parts of the transport table.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostOptions {
    /// `CORO9P_COMPAT_*`.
    pub compat: c_int,
    /// `msize_limit`'s answer; `None` leaves the callback out.
    pub msize_limit: Option<usize>,
    /// Whether `response_buffer_size` is set (else coro9p sums the in
    /// iovecs, as with QEMU 7.2's five callbacks).
    pub response_buffer_size: bool,
    /// Whether `transport_error` is set.
    pub transport_error: bool,
}

/// A misuse of the API, with the answer the header promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misuse {
    /// Submit a PDU that is not allocated: -EINVAL.
    SubmitNotAllocated(usize),
    /// Free a PDU that is not allocated: -EINVAL.
    FreeNotAllocated(usize),
    /// Submit an allocated PDU without a header: -EINVAL, the PDU freed.
    SubmitWithoutHeader(usize),
    /// A pointer inside a PDU, not to one: -EINVAL.
    MisalignedPdu(usize),
    /// NULL for the server: -EINVAL (NULL from alloc).
    NullServer,
}

/// One server made through `coro9p_new`, and its transport.
pub struct Host {
    inner: Box<Inner>,
}

/// The host and slot of the PDU a callback is given.
///
/// # Safety
///
/// `pdu` is what coro9p passed to a callback of a server made by
/// [`Host::new`].
unsafe fn slot_of<'a>(pdu: *mut Coro9pPdu) -> (&'a Inner, usize) {
    // SAFETY: coro9p passes one of its live PDUs and holds no reference to
    // it while the callback runs; the fields are plain data.
    let (opaque, idx) = unsafe { ((*pdu).opaque, (*pdu).idx) };
    // SAFETY: `opaque` is the boxed Inner given to coro9p_new, which the
    // Host keeps alive after the server is destroyed; it is only used
    // through shared references (Cell and RefCell inside).
    (unsafe { &*opaque.cast::<Inner>() }, idx as usize)
}

/// The host of an `opaque` callback argument.
///
/// # Safety
///
/// `opaque` is what coro9p passed to a callback of a server made by
/// [`Host::new`].
unsafe fn inner_of<'a>(opaque: *mut c_void) -> &'a Inner {
    // SAFETY: as in slot_of.
    unsafe { &*opaque.cast::<Inner>() }
}

/// Checks that the slot is live and in flight; records why not.
fn in_flight(inner: &Inner, idx: usize, what: &str) -> bool {
    if inner.destroyed.get() {
        inner.violation(format!("{what} after coro9p_destroy"));
        return false;
    }
    let st = inner.slots.borrow().get(idx).map(|s| s.state);
    if st != Some(Use::Submitted) {
        inner.violation(format!("{what} for PDU {idx}, which is {st:?}"));
        return false;
    }
    true
}

unsafe extern "C" fn cb_marshal(
    pdu: *mut Coro9pPdu,
    offset: usize,
    buf: *const c_void,
    len: usize,
) -> isize {
    // SAFETY: a callback of our server.
    let (inner, idx) = unsafe { slot_of(pdu) };
    if !in_flight(inner, idx, "pdu_marshal") {
        return -(libc::EINVAL as isize);
    }
    let mut slots = inner.slots.borrow_mut();
    let room = &mut slots[idx].reply;
    match offset.checked_add(len) {
        Some(end) if end <= room.len() => {
            if len > 0 {
                // SAFETY: coro9p hands `len` readable bytes at `buf`, which
                // do not overlap our buffer.
                let src = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
                room[offset..end].copy_from_slice(src);
            }
            len as isize
        }
        _ => -(libc::ENOBUFS as isize),
    }
}

unsafe extern "C" fn cb_unmarshal(
    pdu: *mut Coro9pPdu,
    offset: usize,
    buf: *mut c_void,
    len: usize,
) -> isize {
    // SAFETY: a callback of our server.
    let (inner, idx) = unsafe { slot_of(pdu) };
    if !in_flight(inner, idx, "pdu_unmarshal") {
        return -(libc::EINVAL as isize);
    }
    let slots = inner.slots.borrow();
    let req = &slots[idx].request;
    match offset.checked_add(len) {
        Some(end) if end <= req.len() => {
            if len > 0 {
                // SAFETY: coro9p hands `len` writable bytes at `buf`, which
                // do not overlap our buffer.
                let dst = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
                dst.copy_from_slice(&req[offset..end]);
            }
            len as isize
        }
        _ => -(libc::ENOBUFS as isize),
    }
}

/// Hands out one of the slot's iovec arrays; short ones are reported as a
/// transport error, as virtio does, and handed out all the same.
///
/// # Safety
///
/// As for every callback; `piov` and `pniov` are writable.
unsafe fn hand_out_iov(
    pdu: *mut Coro9pPdu,
    piov: *mut *mut libc::iovec,
    pniov: *mut c_uint,
    size: usize,
    out: bool,
) {
    // SAFETY: a callback of our server.
    let (inner, idx) = unsafe { slot_of(pdu) };
    let what = if out {
        "init_out_iov_from_pdu"
    } else {
        "init_in_iov_from_pdu"
    };
    let (ptr, n, total) = if in_flight(inner, idx, what) {
        let mut slots = inner.slots.borrow_mut();
        let slot = &mut slots[idx];
        let v = if out {
            &mut slot.out_iov
        } else {
            &mut slot.in_iov
        };
        // The vector is not touched again until the request is pushed, so
        // the array stays valid as the header requires.
        let total: usize = v.iter().map(|e| e.iov_len).sum();
        (v.as_mut_ptr(), v.len() as c_uint, total)
    } else {
        (std::ptr::null_mut(), 0, 0)
    };
    if total < size {
        inner.transport_errors.set(inner.transport_errors.get() + 1);
    }
    // SAFETY: coro9p passes two writable out-parameters.
    unsafe {
        *piov = ptr;
        *pniov = n;
    }
}

unsafe extern "C" fn cb_init_in_iov(
    pdu: *mut Coro9pPdu,
    piov: *mut *mut libc::iovec,
    pniov: *mut c_uint,
    size: usize,
) {
    // SAFETY: the callback's own contract, passed on.
    unsafe { hand_out_iov(pdu, piov, pniov, size, false) }
}

unsafe extern "C" fn cb_init_out_iov(
    pdu: *mut Coro9pPdu,
    piov: *mut *mut libc::iovec,
    pniov: *mut c_uint,
    size: usize,
) {
    // SAFETY: the callback's own contract, passed on.
    unsafe { hand_out_iov(pdu, piov, pniov, size, true) }
}

unsafe extern "C" fn cb_push_and_notify(pdu: *mut Coro9pPdu) {
    // SAFETY: a callback of our server.
    let (inner, idx) = unsafe { slot_of(pdu) };
    if !in_flight(inner, idx, "push_and_notify") {
        return;
    }
    // SAFETY: as in slot_of: a live PDU, plain fields.
    let (size, id, tag) = unsafe { ((*pdu).size as usize, (*pdu).id, (*pdu).tag) };
    let reply = {
        let mut slots = inner.slots.borrow_mut();
        let slot = &mut slots[idx];
        slot.state = Use::Idle;
        if tag != slot.tag {
            inner.violation(format!("PDU {idx}: tag {tag}, submitted as {}", slot.tag));
        }
        if size > slot.reply.len() {
            inner.violation(format!(
                "PDU {idx}: a {size}-byte reply in {} bytes",
                slot.reply.len()
            ));
            Vec::new()
        } else {
            slot.reply[..size].to_vec()
        }
    };
    if size >= 7 {
        let field = u32::from_le_bytes(reply[..4].try_into().expect("4 bytes")) as usize;
        let rtag = u16::from_le_bytes([reply[5], reply[6]]);
        if field != size || rtag != tag || reply[4] != id || id % 2 == 0 {
            inner.violation(format!(
                "PDU {idx}: reply header (size {field}, type {}, tag {rtag}) vs pdu (size {size}, type {id}, tag {tag})",
                reply[4]
            ));
        }
    } else if size != 0 {
        inner.violation(format!("PDU {idx}: a {size}-byte reply"));
    }
    inner.pushes.set(inner.pushes.get() + 1);
    inner.replies.borrow_mut().push((idx, reply));
    // Stats may be read from inside a callback; nothing else may be called.
    let s = inner.server.get();
    let mut st = Coro9pStats::default();
    // SAFETY: `s` is our live server (a push comes only from inside one of
    // its calls); `st` is writable.
    let rc = unsafe { coro9p_get_stats(s, &mut st) };
    if rc != 0 {
        inner.violation(format!("coro9p_get_stats in a callback: {rc}"));
    }
    // SAFETY: as above; the call must be refused, not run.
    let rc = unsafe { coro9p_dispatch(s) };
    if rc != -libc::EBUSY {
        inner.violation(format!("coro9p_dispatch in a callback: {rc}, not -EBUSY"));
    }
}

unsafe extern "C" fn cb_msize_limit(opaque: *mut c_void) -> usize {
    // SAFETY: a callback of our server.
    let inner = unsafe { inner_of(opaque) };
    if inner.destroyed.get() {
        inner.violation("msize_limit after coro9p_destroy".into());
    }
    inner.msize_limit
}

unsafe extern "C" fn cb_response_buffer_size(pdu: *mut Coro9pPdu) -> usize {
    // SAFETY: a callback of our server.
    let (inner, idx) = unsafe { slot_of(pdu) };
    if !in_flight(inner, idx, "response_buffer_size") {
        return 0;
    }
    inner.slots.borrow()[idx].reply.len()
}

unsafe extern "C" fn cb_transport_error(opaque: *mut c_void, msg: *const c_char) {
    // SAFETY: a callback of our server.
    let inner = unsafe { inner_of(opaque) };
    if inner.destroyed.get() {
        inner.violation("transport_error after coro9p_destroy".into());
    }
    if msg.is_null() {
        inner.violation("transport_error without a message".into());
    } else {
        // SAFETY: coro9p passes a NUL-terminated string, live for the call.
        let _ = unsafe { CStr::from_ptr(msg) };
    }
    inner.transport_errors.set(inner.transport_errors.get() + 1);
}

/// `bytes` cut into `chunks` iovecs (at least one when there are bytes).
fn iovecs(bytes: &mut [u8], chunks: usize) -> Vec<libc::iovec> {
    let n = chunks.clamp(1, 4);
    let step = bytes.len().div_ceil(n).max(1);
    bytes
        .chunks_mut(step)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect()
}

impl Host {
    /// `coro9p_new` with `fsdev` and a transport table as `opts` says.
    ///
    /// # Errors
    ///
    /// What `coro9p_new` returned (a negative errno).
    pub fn new(fsdev: &str, opts: &HostOptions) -> Result<Host, c_int> {
        let inner = Box::new(Inner {
            slots: RefCell::new((0..SLOTS).map(|_| Slot::default()).collect()),
            server: Cell::new(std::ptr::null_mut()),
            destroyed: Cell::new(false),
            msize_limit: opts.msize_limit.unwrap_or(0),
            replies: RefCell::new(Vec::new()),
            pushes: Cell::new(0),
            submitted: Cell::new(0),
            transport_errors: Cell::new(0),
            violations: RefCell::new(Vec::new()),
        });
        let table = Coro9pTransport {
            pdu_marshal: Some(cb_marshal),
            pdu_unmarshal: Some(cb_unmarshal),
            init_in_iov_from_pdu: Some(cb_init_in_iov),
            init_out_iov_from_pdu: Some(cb_init_out_iov),
            push_and_notify: Some(cb_push_and_notify),
            msize_limit: opts.msize_limit.map(|_| cb_msize_limit as _),
            response_buffer_size: opts
                .response_buffer_size
                .then_some(cb_response_buffer_size as _),
            transport_error: opts.transport_error.then_some(cb_transport_error as _),
        };
        let fsdev = CString::new(fsdev).map_err(|_| -libc::EINVAL)?;
        let opaque = std::ptr::from_ref::<Inner>(&inner).cast_mut().cast();
        let mut s = std::ptr::null_mut();
        // SAFETY: a NUL-terminated string, a complete table, and a writable
        // out pointer, all live for the call; `opaque` outlives the server
        // (the Host destroys it before dropping `inner`).
        let rc = unsafe { coro9p_new(fsdev.as_ptr(), opts.compat, &table, opaque, &mut s) };
        if rc != 0 {
            assert!(s.is_null(), "coro9p_new failed ({rc}) but set *out");
            return Err(rc);
        }
        inner.server.set(s);
        Ok(Host { inner })
    }

    fn server(&self) -> *mut Coro9pServer {
        self.inner.server.get()
    }

    /// Panics with what the callbacks saw going wrong, if anything.
    pub fn check(&self) {
        let v = self.inner.violations.borrow();
        assert!(v.is_empty(), "broken promises: {v:#?}");
    }

    /// `coro9p_pdu_alloc`: the PDU's slot, or `None` (NULL).
    pub fn alloc(&self) -> Option<usize> {
        // SAFETY: our live server.
        let p = unsafe { coro9p_pdu_alloc(self.server()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: a PDU coro9p just handed out; plain fields.
        let (idx, opaque, s) = unsafe { ((*p).idx as usize, (*p).opaque, (*p).s) };
        assert!(idx < SLOTS, "PDU index {idx}");
        assert_eq!(s, self.server(), "pdu->s");
        assert_eq!(
            opaque,
            std::ptr::from_ref::<Inner>(&self.inner).cast_mut().cast(),
            "pdu->opaque"
        );
        let mut slots = self.inner.slots.borrow_mut();
        let slot = &mut slots[idx];
        assert_eq!(slot.state, Use::Idle, "PDU {idx} handed out twice");
        assert!(slot.pdu.is_null() || slot.pdu == p, "PDU {idx} moved");
        slot.pdu = p;
        slot.state = Use::Allocated;
        Some(idx)
    }

    /// `coro9p_pdu_submit` of `request` on the allocated PDU `idx`, with
    /// the header `(size, id, tag)` as the transport read it, the request
    /// in `out_chunks` iovecs, and `reply_room` bytes for the reply in
    /// `in_chunks`. Returns what coro9p returned.
    pub fn submit(
        &self,
        idx: usize,
        hdr: (u32, u8, u16),
        request: Vec<u8>,
        out_chunks: usize,
        reply_room: usize,
        in_chunks: usize,
    ) -> c_int {
        let p = {
            let mut slots = self.inner.slots.borrow_mut();
            let slot = &mut slots[idx];
            assert_eq!(slot.state, Use::Allocated, "submit of PDU {idx}");
            slot.request = request;
            slot.out_iov = iovecs(&mut slot.request, out_chunks);
            slot.reply = vec![0; reply_room];
            slot.in_iov = iovecs(&mut slot.reply, in_chunks);
            slot.tag = hdr.2;
            slot.id = hdr.1;
            slot.state = Use::Submitted;
            slot.pdu
        };
        let header = Coro9pMsgHeader {
            size: hdr.0.to_le(),
            id: hdr.1,
            tag: hdr.2.to_le(),
        };
        let pushes = self.inner.pushes.get();
        // SAFETY: our live server, one of its PDUs, and a header live for
        // the call.
        let rc = unsafe { coro9p_pdu_submit(self.server(), p, &header) };
        if rc == 0 {
            self.inner.submitted.set(self.inner.submitted.get() + 1);
        } else {
            // Refused: the PDU is freed and no push may come for it.
            let mut slots = self.inner.slots.borrow_mut();
            assert_eq!(
                (slots[idx].state, self.inner.pushes.get()),
                (Use::Submitted, pushes),
                "a refused submit ({rc}) was pushed"
            );
            slots[idx].state = Use::Idle;
        }
        rc
    }

    /// `coro9p_pdu_free` of the allocated PDU `idx`.
    pub fn free(&self, idx: usize) -> c_int {
        let p = {
            let mut slots = self.inner.slots.borrow_mut();
            assert_eq!(slots[idx].state, Use::Allocated, "free of PDU {idx}");
            slots[idx].state = Use::Idle;
            slots[idx].pdu
        };
        // SAFETY: our live server and one of its PDUs.
        unsafe { coro9p_pdu_free(self.server(), p) }
    }

    /// Calls the API wrongly; returns what it answered.
    pub fn misuse(&self, m: Misuse) -> c_int {
        let ptr_of = |idx: usize| self.inner.slots.borrow()[idx].pdu;
        match m {
            Misuse::SubmitNotAllocated(idx) | Misuse::FreeNotAllocated(idx) => {
                let p = ptr_of(idx);
                assert!(!p.is_null(), "PDU {idx} was never seen");
                assert_ne!(self.state(idx), Use::Allocated);
                let hdr = Coro9pMsgHeader {
                    size: 7u32.to_le(),
                    id: 100,
                    tag: 0,
                };
                match m {
                    // SAFETY: our live server, a PDU pointer of it (checked
                    // by address only), and a live header.
                    Misuse::SubmitNotAllocated(_) => unsafe {
                        coro9p_pdu_submit(self.server(), p, &hdr)
                    },
                    // SAFETY: our live server and a PDU pointer of it.
                    _ => unsafe { coro9p_pdu_free(self.server(), p) },
                }
            }
            Misuse::SubmitWithoutHeader(idx) => {
                assert_eq!(self.state(idx), Use::Allocated);
                let p = ptr_of(idx);
                self.inner.slots.borrow_mut()[idx].state = Use::Idle;
                // SAFETY: our live server and one of its PDUs; a NULL header
                // is refused before any use.
                unsafe { coro9p_pdu_submit(self.server(), p, std::ptr::null()) }
            }
            Misuse::MisalignedPdu(idx) => {
                let p = ptr_of(idx);
                assert!(!p.is_null(), "PDU {idx} was never seen");
                let inside = p.cast::<u8>().wrapping_add(1).cast::<Coro9pPdu>();
                // SAFETY: our live server; the pointer is only compared by
                // address, never read, by coro9p_pdu_free.
                unsafe { coro9p_pdu_free(self.server(), inside) }
            }
            Misuse::NullServer => {
                // SAFETY: NULL is refused before any use.
                let p = unsafe { coro9p_pdu_alloc(std::ptr::null_mut()) };
                assert!(p.is_null(), "coro9p_pdu_alloc(NULL) gave a PDU");
                // SAFETY: NULL is refused before any use.
                unsafe { coro9p_dispatch(std::ptr::null_mut()) }
            }
        }
    }

    /// `coro9p_dispatch`.
    pub fn dispatch(&self) -> c_int {
        // SAFETY: our live server.
        unsafe { coro9p_dispatch(self.server()) }
    }

    /// `coro9p_wait`.
    pub fn wait(&self, timeout_ms: c_int) -> c_int {
        // SAFETY: our live server.
        unsafe { coro9p_wait(self.server(), timeout_ms) }
    }

    /// `coro9p_reset`.
    pub fn reset(&self) -> c_int {
        // SAFETY: our live server.
        unsafe { coro9p_reset(self.server()) }
    }

    /// `coro9p_get_stats`.
    pub fn stats(&self) -> Coro9pStats {
        let mut st = Coro9pStats::default();
        // SAFETY: our live server and a writable struct.
        let rc = unsafe { coro9p_get_stats(self.server(), &mut st) };
        assert_eq!(rc, 0, "coro9p_get_stats");
        st
    }

    /// `coro9p_destroy`; afterwards every submitted request must have been
    /// pushed once, and no callback may come.
    pub fn destroy(&mut self) -> c_int {
        let s = self.server();
        if s.is_null() {
            return 0;
        }
        // SAFETY: our live server, not used again (the pushes made while it
        // drains still see it in `server`).
        let rc = unsafe { coro9p_destroy(s) };
        self.inner.server.set(std::ptr::null_mut());
        self.inner.destroyed.set(true);
        for slot in self.inner.slots.borrow_mut().iter_mut() {
            // Destroy gives back what was allocated and not submitted.
            if slot.state == Use::Allocated {
                slot.state = Use::Idle;
            }
        }
        rc
    }

    /// Where PDU `idx` is, as the host sees it.
    pub fn state(&self, idx: usize) -> Use {
        self.inner.slots.borrow()[idx].state
    }

    /// The slots in `state`, with the message type each was submitted as.
    pub fn slots_in(&self, state: Use) -> Vec<(usize, u8)> {
        self.inner
            .slots
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == state)
            .map(|(i, s)| (i, s.id))
            .collect()
    }

    /// Requests submitted and pushes seen, so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.inner.submitted.get(), self.inner.pushes.get())
    }

    /// Takes the replies pushed so far: (slot, bytes; empty if discarded).
    pub fn take_replies(&self) -> Vec<(usize, Vec<u8>)> {
        std::mem::take(&mut *self.inner.replies.borrow_mut())
    }

    /// Sends one whole frame with `reply_room` bytes for the reply and runs
    /// the server until it is pushed (at most 10 s); returns the reply.
    ///
    /// # Panics
    ///
    /// No PDU is free, the submit fails, or no reply comes.
    pub fn rpc(&self, frame: &[u8], reply_room: usize) -> Vec<u8> {
        let idx = self.alloc().expect("a free PDU");
        let size = u32::from_le_bytes(frame[..4].try_into().expect("a header"));
        let tag = u16::from_le_bytes([frame[5], frame[6]]);
        let rc = self.submit(idx, (size, frame[4], tag), frame.to_vec(), 1, reply_room, 1);
        assert_eq!(rc, 0, "coro9p_pdu_submit");
        for _ in 0..1000 {
            let mut replies = self.inner.replies.borrow_mut();
            if let Some(i) = replies.iter().position(|(i, _)| *i == idx) {
                return replies.remove(i).1;
            }
            drop(replies);
            assert_eq!(self.wait(10), 0, "coro9p_wait");
        }
        panic!("no reply to a request of type {}", frame[4]);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.destroy();
    }
}
