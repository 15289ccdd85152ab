//! The C-visible types of the shim, laid out as `include/coro9p.h` declares
//! them (`tests/ffi.rs` checks sizes, offsets and prototypes against the
//! header).

use std::ffi::{c_char, c_int, c_uint, c_void};

use super::Coro9pServer;

/// `CORO9P_MAX_REQ`: PDUs per server (QEMU's MAX_REQ).
pub const CORO9P_MAX_REQ: c_uint = 128;
/// `CORO9P_COMPAT_MASTER`: answer as QEMU master does.
pub const CORO9P_COMPAT_MASTER: c_int = 0;
/// `CORO9P_COMPAT_7_2`: answer as QEMU 7.2 does.
pub const CORO9P_COMPAT_7_2: c_int = 1;
/// `CORO9P_DIALECT_NONE`: no Tversion yet.
pub const CORO9P_DIALECT_NONE: u32 = 0;
/// `CORO9P_DIALECT_U`: 9P2000.u.
pub const CORO9P_DIALECT_U: u32 = 1;
/// `CORO9P_DIALECT_L`: 9P2000.L.
pub const CORO9P_DIALECT_L: u32 = 2;

/// `coro9p_pdu`: one request slot (QEMU's `V9fsPDU`, the fields a transport
/// reads). coro9p owns the 128 of them; the transport gets pointers from
/// `coro9p_pdu_alloc` and reads the fields, never writes them.
#[repr(C)]
#[derive(Debug)]
pub struct Coro9pPdu {
    /// After submit: the request's size field. In `push_and_notify`: the
    /// reply's length, 0 for a request discarded by Tflush.
    pub size: u32,
    /// The request's tag.
    pub tag: u16,
    /// After submit: the request type. In `push_and_notify`: the reply type
    /// (unchanged when discarded).
    pub id: u8,
    /// Always 0.
    pub reserved: u8,
    /// Fixed slot number, 0..127: the transport's index for its own
    /// per-request context (virtio: `elems[idx]`).
    pub idx: u32,
    /// The server the PDU belongs to.
    pub s: *mut Coro9pServer,
    /// The `opaque` pointer given to `coro9p_new`.
    pub opaque: *mut c_void,
}

/// `coro9p_msg_header`: the 7-byte 9P header as the transport read it from
/// the request (QEMU's `P9MsgHeader`), fields little-endian as on the wire.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug)]
pub struct Coro9pMsgHeader {
    /// size[4], little-endian.
    pub size: u32,
    /// type[1].
    pub id: u8,
    /// tag[2], little-endian.
    pub tag: u16,
}

/// `pdu_marshal`: copy `len` bytes into the request's device-writable
/// buffers at `offset`; return `len`, or a negative errno (-ENOBUFS) when
/// they do not fit.
pub type PduMarshalFn = unsafe extern "C" fn(
    pdu: *mut Coro9pPdu,
    offset: usize,
    buf: *const c_void,
    len: usize,
) -> isize;
/// `pdu_unmarshal`: copy `len` bytes from the request's driver-written
/// buffers at `offset`; return `len`, or a negative errno (-ENOBUFS).
pub type PduUnmarshalFn =
    unsafe extern "C" fn(pdu: *mut Coro9pPdu, offset: usize, buf: *mut c_void, len: usize) -> isize;
/// `init_in_iov_from_pdu` / `init_out_iov_from_pdu`: hand out the
/// request's device-writable (in) or driver-written (out) iovec array; if it
/// holds fewer than `size` bytes, report the transport error but still hand
/// it out.
pub type InitIovFn = unsafe extern "C" fn(
    pdu: *mut Coro9pPdu,
    piov: *mut *mut libc::iovec,
    pniov: *mut c_uint,
    size: usize,
);
/// `push_and_notify`: complete the request with used length `pdu->size`.
pub type PushAndNotifyFn = unsafe extern "C" fn(pdu: *mut Coro9pPdu);
/// `msize_limit` (optional): the largest msize the transport carries.
pub type MsizeLimitFn = unsafe extern "C" fn(opaque: *mut c_void) -> usize;
/// `response_buffer_size` (optional): bytes available for this reply.
pub type ResponseBufferSizeFn = unsafe extern "C" fn(pdu: *mut Coro9pPdu) -> usize;
/// `transport_error` (optional, coro9p's own): the request stream is broken
/// (QEMU's `virtio_error`), with a sentence saying why.
pub type TransportErrorFn = unsafe extern "C" fn(opaque: *mut c_void, msg: *const c_char);

/// `coro9p_transport`: the transport's callbacks (QEMU's `V9fsTransport`).
/// The first five are required; the last three may be NULL.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Coro9pTransport {
    /// Required.
    pub pdu_marshal: Option<PduMarshalFn>,
    /// Required.
    pub pdu_unmarshal: Option<PduUnmarshalFn>,
    /// Required.
    pub init_in_iov_from_pdu: Option<InitIovFn>,
    /// Required.
    pub init_out_iov_from_pdu: Option<InitIovFn>,
    /// Required.
    pub push_and_notify: Option<PushAndNotifyFn>,
    /// Optional (QEMU master); NULL: no msize cap.
    pub msize_limit: Option<MsizeLimitFn>,
    /// Optional (QEMU master); NULL: the total of the in iovecs.
    pub response_buffer_size: Option<ResponseBufferSizeFn>,
    /// Optional; NULL: the error is only logged.
    pub transport_error: Option<TransportErrorFn>,
}

/// `coro9p_stats`: counters for tests and diagnostics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coro9pStats {
    /// PDUs in use (allocated or in flight).
    pub active_requests: u32,
    /// Fids in the table.
    pub fids: u32,
    /// The negotiated msize (0 before Tversion).
    pub msize: u32,
    /// `CORO9P_DIALECT_*`.
    pub dialect: u32,
    /// File handles and directory streams the export holds open.
    pub open_handles: u64,
    /// Coroutine tasks that have not ended.
    pub tasks: u64,
}
