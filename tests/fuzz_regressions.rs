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
