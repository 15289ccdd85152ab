//! Worker hops per message, counted by the hop tracer, against QEMU's table
//! (§4.3 of the reference).

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use common::*;
use coro9p::runtime::HopKind;
use coro9p::{Compat, Hops};

#[test]
fn synth_hops_per_message_match_qemu() {
    synth_hops(Hops::Qemu);
}

/// `--hops=min`: every message takes at most one hop.
#[test]
fn synth_hops_min_at_most_one_per_message() {
    synth_hops(Hops::Min);
}

/// The script, with QEMU's count, or `m(qemu, min)` where min mode differs.
fn synth_hops(mode: Hops) {
    let m = |qemu: usize, min: usize| if mode == Hops::Qemu { qemu } else { min };
    let srv = TestServer::start_with_hops("synth", Compat::Master, mode);
    let mut c = srv.connect();
    let mut script = HopScript::new(false);
    script.run(&mut c, TVERSION, le![d 32768, s b"9P2000.L"], "Tversion", 0);
    script.run(
        &mut c,
        TATTACH,
        le![d 0, d NOFID, s b"", s b"", d 0],
        "Tattach",
        m(2, 1),
    );
    script.run(&mut c, TWALK, walk_body(0, 1, b"WALK0"), "Twalk", 1);
    script.run(&mut c, TWALK, le![d 0, d 2, w 0], "Twalk", 1);
    script.run(&mut c, TGETATTR, le![d 1, q 0x7ff], "Tgetattr", 1);
    script.run(&mut c, TLOPEN, le![d 1, d 0o200000], "Tlopen", m(2, 1));
    script.run(&mut c, TREADDIR, le![d 1, q 0, d 1000], "Treaddir", 1);
    script.run(&mut c, TCLUNK, le![d 1], "Tclunk", 1);
    script.run(&mut c, TCLUNK, le![d 2], "Tclunk", 0);
    script.run(&mut c, TWALK, walk_body(0, 3, b"LOPEN"), "Twalk", 1);
    script.run(&mut c, TLOPEN, le![d 3, d 0], "Tlopen", m(3, 1));
    script.run(&mut c, TREAD, le![d 3, q 0, d 10], "Tread", 1);
    script.run(&mut c, TFSYNC, le![d 3, d 0], "Tfsync", 0);
    script.run(
        &mut c,
        TLOCK,
        le![d 3, b 1, d 0, q 0, q 0, d 1, s b"c"],
        "Tlock",
        0,
    );
    script.run(&mut c, TWALK, walk_body(0, 4, b"WRITE"), "Twalk", 1);
    script.run(&mut c, TLOPEN, le![d 4, d 1], "Tlopen", m(3, 1));
    script.run(
        &mut c,
        TWRITE,
        le![d 4, q 0, d 5, x b"12345"],
        "Twrite",
        m(5, 1),
    );
    script.run(&mut c, TFLUSH, le![w 99], "Tflush", 0);
    script.run(&mut c, TSTATFS, le![d 0], "Tstatfs", 1);
    script.run(&mut c, TSTAT, le![d 0], "Tstat", 1);
    script.run(&mut c, TMKDIR, le![d 0, s b"d", d 0o755, d 0], "Tmkdir", 1);
    script.run(
        &mut c,
        TMKNOD,
        le![d 0, s b"n", d 0o644, d 0, d 0, d 0],
        "Tmknod",
        1,
    );
    script.run(
        &mut c,
        TSYMLINK,
        le![d 0, s b"l", s b"t", d 0],
        "Tsymlink",
        1,
    );
    script.run(&mut c, TLINK, le![d 0, d 3, s b"h"], "Tlink", 1);
    script.run(&mut c, TREADLINK, le![d 0], "Treadlink", 1);
    script.run(
        &mut c,
        TUNLINKAT,
        le![d 0, s b"LOPEN", d 0],
        "Tunlinkat",
        m(2, 1),
    );
    script.run(
        &mut c,
        TRENAMEAT,
        le![d 0, s b"a", d 0, s b"b"],
        "Trenameat",
        0,
    );
    script.run(&mut c, TWALK, walk_body(0, 5, b"LOPEN"), "Twalk", 1);
    script.run(&mut c, TRENAME, le![d 5, d 0, s b"b"], "Trename", 0);
    script.run(&mut c, TXATTRWALK, le![d 0, d 6, s b""], "Txattrwalk", 1);
    script.run(
        &mut c,
        TXATTRCREATE,
        le![d 5, s b"user.a", q 0, d 0],
        "Txattrcreate",
        0,
    );
    script.run(
        &mut c,
        TLCREATE,
        le![d 0, s b"f", d 0, d 0o644, d 0],
        "Tlcreate",
        1,
    );
    script.run(
        &mut c,
        TSETATTR,
        le![d 0, d 8, d 0, d 0, d 0, q 1, q 0, q 0, q 0, q 0],
        "Tsetattr",
        1,
    );
    script.run(&mut c, TWALK, walk_body(0, 7, b"LOPEN"), "Twalk", 1);
    script.run(&mut c, TREMOVE, le![d 7], "Tremove", 0);
    // Removing an open fid closes it: one hop.
    script.run(&mut c, TREMOVE, le![d 3], "Tremove", 1);
    drop(c);
    let report = srv.stop();
    script.check(&report);
    if mode == Hops::Min {
        assert!(report.hops.iter().all(|t| t.hops <= 1), "{:?}", report.hops);
    }
    // Each hop is a full round trip: the job starts and ends on a worker
    // and the task comes back to main before anything else of its own.
    for t in &report.hops {
        let to_worker = t.events.iter().filter(|k| **k == HopKind::ToWorker).count();
        let to_main = t.events.iter().filter(|k| **k == HopKind::ToMain).count();
        assert_eq!(to_worker, to_main, "{}", t.label);
    }
}
