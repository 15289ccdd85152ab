//! QEMU's qos-test virtio-9p cases, ported to run against coro9p, with a
//! qos-test-like runner (`qos-test`).
//!
//! The client marshals with its own code ([`wire`]), not coro9p's codec,
//! so that one bug cannot hide on both sides. [`transport`] abstracts the
//! virtio request/used-ring contract the cases rely on; [`cases`] holds the
//! 34 cases of QEMU master's tests/qtest/virtio-9p-test.c under their
//! qos-test paths; [`runner`] runs them as qos-test does.

#![warn(missing_docs)]

pub mod cases;
pub mod client;
pub mod ffi;
pub mod qemu;
pub mod runner;
pub mod transport;
pub mod wire;
