//! The C ABI: coro9p as a drop-in for QEMU's hw/9pfs server, behind a
//! transport written in C (virtio-9p-device.c, or a test harness).
//!
//! `include/coro9p.h` is the contract; `docs/qemu-dropin.md` maps it onto
//! QEMU. In short: the host makes a server from an fsdev string and a
//! table of callbacks that mirrors QEMU's `V9fsTransport`
//! ([`coro9p_new`]); for each request it takes a PDU ([`coro9p_pdu_alloc`])
//! and submits it with the header it read ([`coro9p_pdu_submit`]); coro9p
//! gathers the request through the callbacks, runs it in a coroutine and
//! hands the reply back through `pdu_marshal` and `push_and_notify`. The
//! host's main loop polls [`coro9p_poll_fd`] and calls [`coro9p_dispatch`]
//! when it is readable, so coroutine resumptions and worker completions run
//! on the host's own thread ([`coro9p_wait`] does both for simple hosts).
//! [`coro9p_reset`] is QEMU's `v9fs_reset`.
//!
//! Every function returns 0 (or a count, or a descriptor) on success and a
//! negative errno on failure, after logging why; none lets a panic out.
//! Calls on one server must not overlap (any thread may make them, one at a
//! time, as QEMU does under its big lock), and no function may be called
//! from inside a callback (except [`coro9p_get_stats`]); both are checked
//! and refused with `-EBUSY`.

#![deny(unsafe_op_in_unsafe_fn)]

mod abi;
mod ptr;
mod shim;

pub use abi::*;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::protocol::{Dialect, HEADER_SIZE};
use crate::runtime::{Executor, RuntimeConfig, Task};
use crate::server::{Export, ExportOptions, V9fsState};
use crate::Compat;

use shim::{Callbacks, FfiTransport, Shim, SlotState};

/// Marks a live server (a best-effort check against stale pointers).
const MAGIC: u64 = 0x636f_726f_3970_7376; // "coro9psv"

/// `coro9p_server`: one 9P device's server state, opaque to C.
pub struct Coro9pServer {
    magic: u64,
    /// The thread inside a call now (`pthread_t`), 0 for none.
    inside: AtomicUsize,
    shim: Rc<Shim>,
    state: Rc<V9fsState>,
    export: Rc<Export>,
    /// Dropped last: tasks and callbacks above may still use it.
    exec: Executor,
}

/// The calling thread. `pthread_self`, not `std::thread::current`, which
/// would leave a handle in the host thread's TLS for the life of the thread.
fn this_thread() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    unsafe { libc::pthread_self() }
}

thread_local! {
    /// The last failure on this thread, for [`coro9p_last_error`].
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Logs `msg`, keeps it for [`coro9p_last_error`] and returns `-errno`:
/// every failure leaves a log line and a sentence the host can show.
fn fail(errno: c_int, msg: impl std::fmt::Display) -> c_int {
    let msg = msg.to_string();
    log::error!("coro9p: {msg}");
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
    -errno
}

/// The panic boundary every exported function runs its body in: a panic
/// is logged and becomes `on_panic`.
fn boundary<T>(name: &str, on_panic: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            log::error!("coro9p: {name} panicked: {msg}");
            on_panic
        }
    }
}

/// [`boundary`] for functions returning a status: `Err(-errno)` and a panic
/// (`-EIO`) become the return code.
fn status(name: &str, body: impl FnOnce() -> Result<c_int, c_int>) -> c_int {
    boundary(name, -libc::EIO, || body().unwrap_or_else(|e| e))
}

/// A call inside a server: releases the server's "in use" mark when the
/// call returns.
struct Entered<'a> {
    srv: &'a Coro9pServer,
    /// False for a nested call (get_stats from inside a callback), which
    /// leaves the outer call's mark alone.
    marked: bool,
}

impl std::ops::Deref for Entered<'_> {
    type Target = Coro9pServer;
    fn deref(&self) -> &Coro9pServer {
        self.srv
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if self.marked {
            self.srv.inside.store(0, Ordering::Release);
        }
    }
}

/// Checks a server pointer (not NULL, live), that no other thread is inside
/// the server, and (unless `in_callback_ok`) that this is not a call from
/// inside one of its callbacks; then marks the server in use by this thread
/// until the returned guard drops.
///
/// Any thread may drive a server, as long as calls do not overlap: QEMU
/// calls its device from the main loop thread and, for a reset, from a
/// vCPU thread, always under its big lock; a coroutine may then resume on
/// that other thread, as QEMU's own do.
///
/// # Safety
///
/// `s` is NULL or a pointer returned by [`coro9p_new`] and not yet
/// destroyed.
unsafe fn server<'a>(
    s: *mut Coro9pServer,
    name: &str,
    in_callback_ok: bool,
) -> Result<Entered<'a>, c_int> {
    // SAFETY: the caller's contract: NULL or a live server.
    let srv = unsafe { ptr::to_ref(s.cast_const(), "server") }?;
    if srv.magic != MAGIC {
        return Err(fail(libc::EINVAL, format!("{name}: not a live server")));
    }
    let me = this_thread() as usize;
    let marked = match srv
        .inside
        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
    {
        Ok(_) => true,
        Err(t) if t == me => false,
        Err(_) => {
            return Err(fail(
                libc::EBUSY,
                format!(
                    "{name}: another thread is inside this server; calls must not overlap \
                     (make them under one lock, as QEMU does under its BQL)"
                ),
            ))
        }
    };
    let entered = Entered { srv, marked };
    if !in_callback_ok && srv.shim.in_callback() {
        return Err(fail(
            libc::EBUSY,
            format!("{name}: called from inside a transport callback"),
        ));
    }
    Ok(entered)
}

impl Coro9pServer {
    /// The slot of a PDU pointer C handed back, which must be in `want`.
    fn pdu(&self, p: *mut Coro9pPdu, name: &str, want: SlotState) -> Result<usize, c_int> {
        let idx = self.shim.pdu_index(p).ok_or_else(|| {
            fail(
                libc::EINVAL,
                format!("{name}: {p:p} is not a PDU of this server"),
            )
        })?;
        let st = self.shim.slot(idx);
        if st != want {
            return Err(fail(
                libc::EINVAL,
                format!("{name}: PDU {idx} is {st:?}, not {want:?}"),
            ));
        }
        Ok(idx)
    }

    /// Runs the main loop until `task` ends.
    fn run(&self, task: &Task<()>, name: &str) -> Result<(), c_int> {
        self.exec
            .run_until(|| task.is_finished())
            .map_err(|e| fail(libc::EIO, format!("{name}: {e}")))
    }

    /// Frees PDUs handed out but never submitted.
    fn release_allocated(&self) {
        for idx in self.shim.allocated() {
            self.shim.set_slot(idx, SlotState::Idle);
            self.state.pdu_release(idx);
        }
    }
}

/// Makes a server for the export `fsdev` (a QEMU `-fsdev` string, as the
/// coro9p command takes it), replying through `transport`.
///
/// `compat` is `CORO9P_COMPAT_MASTER` or `CORO9P_COMPAT_7_2`. The table is
/// copied; `opaque` is handed to the callbacks (also as `pdu->opaque`). On
/// success `*out` is the server and 0 is returned; otherwise `*out` is NULL
/// and a negative errno is returned (`-EINVAL` for a bad argument or
/// option string, `-ENOENT` and friends when the export cannot be opened).
///
/// # Safety
///
/// `fsdev` is a NUL-terminated string, `transport` points to a
/// `coro9p_transport`, and `out` is writable; all three may also be NULL
/// (refused). The callbacks must behave as `include/coro9p.h` says.
#[no_mangle]
pub unsafe extern "C" fn coro9p_new(
    fsdev: *const c_char,
    compat: c_int,
    transport: *const Coro9pTransport,
    opaque: *mut c_void,
    out: *mut *mut Coro9pServer,
) -> c_int {
    status("coro9p_new", || {
        let _ = env_logger::try_init();
        // SAFETY: the caller's contract: `out` is NULL or writable.
        let out = unsafe { ptr::to_mut(out, "coro9p_new: out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: the caller's contract: a NUL-terminated string or NULL.
        let fsdev = unsafe { ptr::to_str(fsdev, "coro9p_new: fsdev") }?;
        // SAFETY: the caller's contract: a transport table or NULL.
        let table = unsafe { ptr::to_ref(transport, "coro9p_new: transport") }?;
        let cb = Callbacks::new(table)?;
        let compat = match compat {
            CORO9P_COMPAT_MASTER => Compat::Master,
            CORO9P_COMPAT_7_2 => Compat::V7_2,
            c => {
                return Err(fail(
                    libc::EINVAL,
                    format!("coro9p_new: compat {c} is unknown"),
                ))
            }
        };
        let options = parse_fsdev(fsdev)?;
        let export = Export::open(options, compat).map_err(|e| fail(libc::ENOENT, e))?;
        let exec = Executor::new(RuntimeConfig::default()).map_err(|e| {
            fail(
                libc::EMFILE,
                format!("coro9p_new: cannot start the main loop: {e}"),
            )
        })?;
        let shim = Rc::new(Shim::new(cb, opaque));
        let state = V9fsState::new(
            exec.handle(),
            Rc::clone(&export),
            Rc::new(FfiTransport {
                shim: Rc::clone(&shim),
                max_msize: export.options.max_msize,
            }),
        );
        let srv = Box::into_raw(Box::new(Coro9pServer {
            magic: MAGIC,
            inside: AtomicUsize::new(0),
            shim,
            state,
            export,
            exec,
        }));
        // SAFETY: `srv` was just made by Box::into_raw and is not shared yet.
        unsafe { (*srv).shim.set_server(srv) };
        *out = srv;
        log::info!("coro9p: serving -fsdev {fsdev}");
        Ok(0)
    })
}

/// [`ExportOptions::parse`], failing with QEMU's sentence.
fn parse_fsdev(fsdev: &str) -> Result<ExportOptions, c_int> {
    ExportOptions::parse(fsdev).map_err(|e| fail(libc::EINVAL, e))
}

/// Checks an fsdev string as [`coro9p_new`] would parse it, without
/// opening the export: QEMU validates `-fsdev` options when it parses the
/// command line, long before the device is realized. Returns 0, or
/// `-EINVAL` with the reason in [`coro9p_last_error`].
///
/// # Safety
///
/// `fsdev` is NULL (refused) or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn coro9p_check_fsdev(fsdev: *const c_char) -> c_int {
    status("coro9p_check_fsdev", || {
        let _ = env_logger::try_init();
        // SAFETY: the caller's contract: a NUL-terminated string or NULL.
        let fsdev = unsafe { ptr::to_str(fsdev, "coro9p_check_fsdev: fsdev") }?;
        parse_fsdev(fsdev).map(|_| 0)
    })
}

/// The sentence of the last failure of a coro9p function on the calling
/// thread ("" if none), for hosts that report errors themselves (QEMU's
/// `Error **`). The string stays valid until the next failing call on this
/// thread.
///
/// # Safety
///
/// None beyond the lifetime above; the function takes no pointers.
#[no_mangle]
pub unsafe extern "C" fn coro9p_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Ends a server: requests still in flight are cancelled (each gets its
/// reply, or `push_and_notify` with size 0 when discarded), every fid is
/// freed, then everything is released. NULL is a no-op. Returns 0, or a
/// negative errno if the drain failed (the server is released anyway);
/// `-EBUSY` from inside a callback (nothing is done).
///
/// # Safety
///
/// `s` is NULL or a live server, not used again after this call.
#[no_mangle]
pub unsafe extern "C" fn coro9p_destroy(s: *mut Coro9pServer) -> c_int {
    status("coro9p_destroy", || {
        if s.is_null() {
            return Ok(0);
        }
        // SAFETY: the caller's contract: a live server.
        let srv = unsafe { server(s, "coro9p_destroy", false) }?;
        srv.release_allocated();
        let task = srv.state.disconnect();
        let drained = srv.run(&task, "coro9p_destroy");
        drop(task);
        drop(srv);
        // SAFETY: `s` came from Box::into_raw in coro9p_new, is live (checked
        // above), and the caller gives it up; `srv` is not used after this.
        let mut owned = unsafe { Box::from_raw(s) };
        owned.magic = 0;
        drop(owned);
        drained.map(|()| 0)
    })
}

/// Takes a free PDU (QEMU's `pdu_alloc`), or NULL when all of them are in
/// use (128, or the fsdev's `max_pdus=`), or on a bad argument (logged).
///
/// # Safety
///
/// `s` is NULL or a live server.
#[no_mangle]
pub unsafe extern "C" fn coro9p_pdu_alloc(s: *mut Coro9pServer) -> *mut Coro9pPdu {
    boundary("coro9p_pdu_alloc", std::ptr::null_mut(), || {
        // SAFETY: the caller's contract: NULL or a live server.
        let Ok(srv) = (unsafe { server(s, "coro9p_pdu_alloc", false) }) else {
            return std::ptr::null_mut();
        };
        let Some(idx) = srv.state.pdu_alloc() else {
            log::debug!(
                "coro9p: all {} PDUs are in use",
                srv.export.options.max_pdus
            );
            return std::ptr::null_mut();
        };
        srv.shim.set_slot(idx, SlotState::Allocated);
        srv.shim.with_pdu(idx, |p| {
            p.size = 0;
            p.tag = 0;
            p.id = 0;
        });
        srv.shim.pdu_ptr(idx)
    })
}

/// Gives back a PDU that was allocated but will not be submitted (QEMU's
/// `pdu_free` from the transport). Returns 0, or `-EINVAL` for a PDU that
/// is not allocated-and-unsubmitted.
///
/// # Safety
///
/// `s` is NULL or a live server.
#[no_mangle]
pub unsafe extern "C" fn coro9p_pdu_free(s: *mut Coro9pServer, pdu: *mut Coro9pPdu) -> c_int {
    status("coro9p_pdu_free", || {
        // SAFETY: the caller's contract: NULL or a live server.
        let srv = unsafe { server(s, "coro9p_pdu_free", false) }?;
        let idx = srv.pdu(pdu, "coro9p_pdu_free", SlotState::Allocated)?;
        srv.shim.set_slot(idx, SlotState::Idle);
        srv.state.pdu_release(idx);
        Ok(0)
    })
}

/// Starts the request on `pdu` (QEMU's `pdu_submit`): `hdr` is its 9P
/// header as read from the request. coro9p gathers the whole request with
/// `init_out_iov_from_pdu` + `pdu_unmarshal` and runs it at once until its
/// first worker hop; a request needing no hop has already called
/// `push_and_notify` when this returns.
///
/// Returns 0 once submitted. On failure (a bad argument: `-EINVAL`; the
/// request could not be gathered: `-ENOBUFS`, after `transport_error`) the
/// PDU is freed and the request is the transport's to dispose of.
///
/// # Safety
///
/// `s` is NULL or a live server; `hdr` is NULL or points to 7 readable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn coro9p_pdu_submit(
    s: *mut Coro9pServer,
    pdu: *mut Coro9pPdu,
    hdr: *const Coro9pMsgHeader,
) -> c_int {
    status("coro9p_pdu_submit", || {
        // SAFETY: the caller's contract: NULL or a live server.
        let srv = unsafe { server(s, "coro9p_pdu_submit", false) }?;
        let idx = srv.pdu(pdu, "coro9p_pdu_submit", SlotState::Allocated)?;
        // SAFETY: the caller's contract: NULL or 7 readable bytes (the
        // packed header has alignment 1).
        let hdr = match unsafe { ptr::to_ref(hdr, "coro9p_pdu_submit: hdr") } {
            Ok(h) => *h,
            Err(e) => {
                srv.shim.set_slot(idx, SlotState::Idle);
                srv.state.pdu_release(idx);
                return Err(e);
            }
        };
        let (size, id, tag) = (u32::from_le(hdr.size), hdr.id, u16::from_le(hdr.tag));
        srv.shim.with_pdu(idx, |p| {
            p.size = size;
            p.id = id;
            p.tag = tag;
        });
        let mut frame = match srv.shim.gather(idx) {
            Ok(f) => f,
            Err(msg) => {
                srv.shim
                    .transport_error(&format!("Failed to decode VirtFS request type {id}: {msg}"));
                srv.shim.set_slot(idx, SlotState::Idle);
                srv.state.pdu_release(idx);
                return Err(-libc::ENOBUFS);
            }
        };
        // The header the transport read is the one that counts, as in QEMU.
        frame[..4].copy_from_slice(&size.to_le_bytes());
        frame[4] = id;
        frame[5..HEADER_SIZE].copy_from_slice(&tag.to_le_bytes());
        srv.shim.set_slot(idx, SlotState::Submitted);
        srv.state.pdu_submit(idx, frame);
        Ok(0)
    })
}

/// A device reset (QEMU's `v9fs_reset`): runs the loop until every request
/// in flight has completed (uncancelled: each gets its reply through
/// `push_and_notify`), then frees every fid (closing its files). msize and
/// dialect stay. Returns 0; `-EBUSY` while a PDU is allocated but not
/// submitted (it would never drain) or from inside a callback.
///
/// # Safety
///
/// `s` is NULL or a live server.
#[no_mangle]
pub unsafe extern "C" fn coro9p_reset(s: *mut Coro9pServer) -> c_int {
    status("coro9p_reset", || {
        // SAFETY: the caller's contract: NULL or a live server.
        let srv = unsafe { server(s, "coro9p_reset", false) }?;
        let held = srv.shim.allocated();
        if !held.is_empty() {
            return Err(fail(
                libc::EBUSY,
                format!("coro9p_reset: PDUs {held:?} are allocated but not submitted"),
            ));
        }
        let task = srv.state.reset();
        srv.run(&task, "coro9p_reset")?;
        Ok(0)
    })
}

/// The descriptor the host's main loop polls for reading; when it is
/// readable, call [`coro9p_dispatch`]. Stays the same for the server's life.
///
/// # Safety
///
/// `s` is NULL or a live server.
#[no_mangle]
pub unsafe extern "C" fn coro9p_poll_fd(s: *mut Coro9pServer) -> c_int {
    status("coro9p_poll_fd", || {
        // SAFETY: the caller's contract: NULL or a live server.
        let srv = unsafe { server(s, "coro9p_poll_fd", true) }?;
        Ok(srv.exec.poll_fd())
    })
}

/// Runs, without blocking, whatever is ready: coroutines whose worker jobs
/// finished, coroutines woken by others. Their replies go out through
/// `push_and_notify` before this returns.
///
/// # Safety
///
/// `s` is NULL or a live server.
#[no_mangle]
pub unsafe extern "C" fn coro9p_dispatch(s: *mut Coro9pServer) -> c_int {
    status("coro9p_dispatch", || {
        // SAFETY: the caller's contract: NULL or a live server.
        let srv = unsafe { server(s, "coro9p_dispatch", false) }?;
        srv.exec
            .dispatch()
            .map_err(|e| fail(libc::EIO, format!("coro9p_dispatch: {e}")))?;
        Ok(0)
    })
}

/// The blocking helper for simple hosts: waits up to `timeout_ms`
/// milliseconds (-1: without limit) for work, then runs it as
/// [`coro9p_dispatch`] does.
///
/// # Safety
///
/// `s` is NULL or a live server.
#[no_mangle]
pub unsafe extern "C" fn coro9p_wait(s: *mut Coro9pServer, timeout_ms: c_int) -> c_int {
    status("coro9p_wait", || {
        // SAFETY: the caller's contract: NULL or a live server.
        let srv = unsafe { server(s, "coro9p_wait", false) }?;
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        srv.exec
            .turn(timeout)
            .map_err(|e| fail(libc::EIO, format!("coro9p_wait: {e}")))?;
        Ok(0)
    })
}

/// Fills `*out` with the server's counters. May be called from inside a
/// callback.
///
/// # Safety
///
/// `s` is NULL or a live server; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn coro9p_get_stats(s: *mut Coro9pServer, out: *mut Coro9pStats) -> c_int {
    status("coro9p_get_stats", || {
        // SAFETY: the caller's contract: NULL or a live server.
        let srv = unsafe { server(s, "coro9p_get_stats", true) }?;
        // SAFETY: the caller's contract: NULL or writable.
        let out = unsafe { ptr::to_mut(out, "coro9p_get_stats: out") }?;
        *out = Coro9pStats {
            active_requests: srv.state.active_requests() as u32,
            fids: srv.state.fid_count() as u32,
            msize: srv.state.msize(),
            dialect: match srv.state.dialect() {
                Dialect::Unset => CORO9P_DIALECT_NONE,
                Dialect::U => CORO9P_DIALECT_U,
                Dialect::L => CORO9P_DIALECT_L,
            },
            open_handles: srv.export.open_handles() as u64,
            tasks: srv.exec.stats().tasks as u64,
        };
        Ok(0)
    })
}
