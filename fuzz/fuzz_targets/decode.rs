//! Any bytes through the 9P decoder: never a panic; what decodes
//! re-encodes to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| coro9p::fuzzing::decode(data));
