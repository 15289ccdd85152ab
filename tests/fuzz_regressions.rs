//! Replays the fuzz corpus and every crash the fuzzers ever found
//! (tests/fuzz/) through the same entry points the fuzz targets use, so
//! `make test` keeps them fixed without a fuzzer. A panic anywhere fails.

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut out = Vec::new();
    for kind in ["corpus", "artifacts"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            out.push((
                format!("{kind}/{target}/{name}"),
                std::fs::read(e.path()).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

/// A panic in a handler is contained by the runtime (and answered EIO), so
/// it has to be made loud here, as the fuzz targets make it.
fn abort_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{info}");
        std::process::abort();
    }));
}

#[test]
fn decode_inputs() {
    abort_on_panic();
    let all = inputs("decode");
    assert!(!all.is_empty(), "the decode corpus is missing");
    for (_, data) in &all {
        coro9p::fuzzing::decode(data);
    }
}

#[test]
fn session_inputs_on_synth() {
    abort_on_panic();
    let all = inputs("session_synth");
    assert!(!all.is_empty(), "the session_synth corpus is missing");
    for (_, data) in &all {
        coro9p::fuzzing::session("synth", data);
    }
}

#[test]
fn session_inputs_on_a_local_directory() {
    abort_on_panic();
    let all = inputs("session_local");
    assert!(!all.is_empty(), "the session_local corpus is missing");
    let fsdev = coro9p::fuzzing::local_fixture();
    for (_, data) in &all {
        coro9p::fuzzing::session(&fsdev, data);
    }
}

#[test]
fn ffi_inputs() {
    abort_on_panic();
    let all = inputs("ffi");
    assert!(!all.is_empty(), "the ffi corpus is missing");
    for (_, data) in &all {
        coro9p::fuzzing::ffi(data);
    }
}

/// Found by the ffi target: a PDU the C host has allocated but not yet
/// submitted still carries the tag of its last request. A Tflush of that
/// tag took it for a request in flight and waited on it for ever; freeing
/// it then tripped the cancelled-PDU assertion (in release: the Tflush
/// never ended, and coro9p_destroy waited for it without end).
#[test]
fn a_tflush_ignores_a_pdu_allocated_but_not_submitted() {
    use coro9p::fuzzing::host::{Host, HostOptions};
    let frame = |id: u8, tag: u16, body: &[u8]| {
        let mut v = ((7 + body.len()) as u32).to_le_bytes().to_vec();
        v.push(id);
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(body);
        v
    };
    let mut h = Host::new("synth", &HostOptions::default()).unwrap();
    let mut tversion = 8192u32.to_le_bytes().to_vec();
    tversion.extend_from_slice(b"\x08\x009P2000.L");
    assert_eq!(h.rpc(&frame(100, 0xffff, &tversion), 4096)[4], 101);
    // The PDU just freed comes back first, with the Tversion's tag.
    let held = h.alloc().unwrap();
    // Nothing with tag 0xffff is in flight: Rflush at once.
    let rflush = h.rpc(&frame(108, 5, &0xffffu16.to_le_bytes()), 4096);
    assert_eq!(rflush, frame(109, 5, &[]));
    assert_eq!(h.free(held), 0);
    assert_eq!(h.destroy(), 0);
    h.check();
}
