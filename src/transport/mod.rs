//! Transports: how requests reach a session and replies leave it (QEMU's
//! `V9fsTransport` and virtio-9p-device.c).
//!
//! A transport reads frames, takes a PDU for each ([`crate::server::V9fsState::pdu_alloc`]),
//! and submits it; the session hands each finished reply back through
//! [`Transport::push_and_notify`].

pub mod ffi;
pub mod socket;

/// What a session needs from its transport (QEMU's `V9fsTransport`).
pub trait Transport {
    /// A request finished: `reply` is its whole R-message, or empty when a
    /// cancelled request is discarded (virtio: a used element of length 0).
    fn push_and_notify(&self, pdu_idx: usize, reply: Vec<u8>);

    /// The largest msize the transport can carry; Tversion caps to it
    /// (master's `msize_limit`).
    fn msize_limit(&self) -> Option<u32> {
        None
    }

    /// Bytes available for this request's reply (master's
    /// `response_buffer_size`; virtio: the device-writable buffers).
    fn response_buffer_size(&self, pdu_idx: usize) -> Option<u32>;

    /// The request stream is broken (QEMU's `virtio_error`: a request that
    /// cannot be decoded, a reply that does not fit). The session serves no
    /// more requests from this transport.
    fn fatal_error(&self, msg: &str);

    /// A PDU went back to the free list: requests held back for lack of one
    /// may now be submitted.
    fn pdu_freed(&self);
}
