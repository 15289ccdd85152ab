//! Message sequences through a whole session on a local temp directory
//! (mapped-xattr).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fsdev = coro9p::fuzzing::local_fixture();
    coro9p::fuzzing::session(&fsdev, data)
});
