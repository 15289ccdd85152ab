//! `coro9p --trace-hops` on a real run, drawn by `coro9p trace-render`: the
//! picture is well-formed XML with one lane per thread the trace saw and one
//! arrow per hop.

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;

#[test]
fn a_traced_run_renders_to_one_lane_per_thread_and_one_arrow_per_hop() {
    let dir = std::env::temp_dir().join(format!("coro9p-trace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    let trace = dir.join("t.jsonl");
    let svg = dir.join("t.svg");
    let bin = env!("CARGO_BIN_EXE_coro9p");
    let child = Command::new(bin)
        .args(["--fsdev", "synth", "--listen"])
        .arg(format!("unix:{}", sock.display()))
        .arg("--trace-hops")
        .arg(&trace)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut c = connect_when_ready(&sock);
        c.attach();
        c.walk(0, 1, &["ReadDirDir"]);
        c.ok(TLOPEN, &le![d 1, d 0o200000]);
        c.ok(TREADDIR, &le![d 1, q 0, d 4000]);
        c.walk(0, 2, &["WRITE"]);
        c.ok(TLOPEN, &le![d 2, d 1]);
        c.ok(TWRITE, &le![d 2, q 0, d 3, x b"abc"]);
    }
    stop_process(child);
    let text = std::fs::read_to_string(&trace).unwrap();
    let events = coro9p::trace_render::parse_jsonl(&text).unwrap();
    let labelled = coro9p::trace_render::select(&events, &[]);
    let threads: BTreeSet<&str> = labelled.iter().map(|e| e.thread.as_str()).collect();
    let hops = labelled.iter().filter(|e| e.event == "to_worker").count();
    // Tattach 2 + walk 1 + lopen dir 2 + readdir 1 + walk 1 + lopen 3 + write 3.
    assert_eq!(hops, 13);

    let out = Command::new(bin)
        .arg("trace-render")
        .arg(&trace)
        .arg("-o")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(picture.matches(r#"class="lane""#).count(), threads.len());
    assert_eq!(picture.matches(r#"class="hop""#).count(), hops);
    // Well-formed XML, checked by a parser that is not ours.
    let check = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])",
        ])
        .arg(&svg)
        .output()
        .expect("python3 checks the XML");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
