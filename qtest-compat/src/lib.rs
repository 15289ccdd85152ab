//! QEMU's qos-test virtio-9p cases, ported to run against coro9p (and
//! against QEMU itself), with a qos-test-like runner.
//!
//! The cases arrive with the qtest-compat issue; this crate has its own 9P
//! client codec on purpose, so that a codec bug cannot hide on both sides.
