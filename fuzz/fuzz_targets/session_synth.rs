//! Message sequences through a whole session on the synth driver.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| coro9p::fuzzing::session("synth", data));
