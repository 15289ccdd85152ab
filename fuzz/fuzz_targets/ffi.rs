//! Operation sequences through the C ABI (coro9p_new .. coro9p_destroy)
//! with an in-Rust transport that checks every callback.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| coro9p::fuzzing::ffi(data));
