//! Malformed input: each gets what QEMU gives (an Rlerror with its errno),
//! or the connection is closed where QEMU would break the device; the
//! server never panics, keeps serving others, and changes no file the
//! request did not ask for.

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::io::{Read, Write};

use common::*;
use coro9p::Compat;

fn closed(c: &mut Client) -> bool {
    let mut b = [0u8; 64];
    loop {
        match c.s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue, // a last reply may come first
            Err(_) => return false,
        }
    }
}

/// After the abuse, a new connection on the same server still works.
fn still_serves(srv: &TestServer) {
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["LOPEN"]);
}

#[test]
fn truncated_fields_give_enobufs_and_close_the_connection() {
    let srv = TestServer::start("synth", Compat::Master);
    // (type, body): each body is cut inside a field.
    let cases: Vec<(u8, Vec<u8>)> = vec![
        (TVERSION, le![d 8192, w 8, x b"9P2"]),
        (TATTACH, le![d 0, d NOFID, w 5]),
        (TWALK, le![d 0, d 1, w 2, s b"WALK0", w 9]),
        (TGETATTR, le![d 0, d 0]),
        (TREAD, le![d 0, q 0]),
        (TWRITE, le![d 0, q 0, d 100, x b"short"]),
        (TXATTRCREATE, le![d 0, s b"user.a", d 1]),
        (TLOCK, le![d 0, b 0, d 0, q 0, q 0, d 1, w 40]),
        (TFLUSH, le![b 1]),
    ];
    for (id, body) in cases {
        let mut c = srv.connect();
        c.attach();
        c.send(id, 9, &body);
        let (rid, tag, rbody) = c.recv();
        assert_eq!((rid, tag, rbody), (RLERROR, 9, le![d 105]), "type {id}");
        assert!(closed(&mut c), "type {id}: the connection stays open");
    }
    still_serves(&srv);
}

#[test]
fn a_frame_cut_short_by_a_hang_up_leaves_nothing_behind() {
    let srv = TestServer::start("synth", Compat::Master);
    let mut c = srv.connect();
    c.attach();
    // The size says 100 bytes; 20 come, then the client leaves.
    c.s.write_all(&le![d 100, b TWALK, w 0, d 0, d 1, w 1, s b"x"])
        .unwrap();
    drop(c);
    still_serves(&srv);
    let report = srv.stop();
    assert_eq!(report.tasks_left, 0);
}

#[test]
fn counts_above_msize_and_near_u32_max() {
    let srv = TestServer::start("synth", Compat::Master);
    // A Tread whose reply cannot fit the client's msize: the stream is
    // broken, as virtio_error would mark the device.
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["stat", "xattr_count"]);
    c.ok(TLOPEN, &le![d 1, d 0]);
    c.send(TREAD, 0, &le![d 1, q 0, d u32::MAX]);
    assert!(closed(&mut c));
    // A Twrite announcing u32::MAX bytes it does not carry: ENOBUFS.
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["WRITE"]);
    c.ok(TLOPEN, &le![d 1, d 1]);
    c.send(TWRITE, 0, &le![d 1, q 0, d u32::MAX, x b"abc"]);
    assert_eq!(c.recv(), (RLERROR, 0, le![d 105]));
    assert!(closed(&mut c));
    // A huge Treaddir count is clipped to the msize, not an error.
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["ReadDirDir"]);
    c.ok(TLOPEN, &le![d 1, d 0o200000]);
    let r = c.ok(TREADDIR, &le![d 1, q 0, d u32::MAX]);
    assert_eq!(&r[..4], &le![d 3741][..]);
    still_serves(&srv);
}

#[test]
fn odd_names_get_qemus_errnos() {
    let srv = TestServer::start("synth", Compat::Master);
    let mut c = srv.connect();
    c.attach();
    let walk = |n: &[u8]| le![d 0, d 1, w 1, s n];
    c.expect_err(TWALK, &walk(b"a/b"), 2);
    c.expect_err(TWALK, &walk(b""), 2);
    c.expect_err(TWALK, &walk(b"\0LOPEN"), 2);
    // A NUL ends the name: "LOPEN\0junk" is LOPEN.
    c.ok(TWALK, &walk(b"LOPEN\0junk"));
    c.expect_err(TWALK, &le![d 0, d 2, w 1, s b"."], 22);
    c.expect_err(TMKDIR, &le![d 0, s b".", d 0o755, d 0], 17);
    c.expect_err(TMKDIR, &le![d 0, s b"a/b", d 0o755, d 0], 2);
    c.expect_err(TUNLINKAT, &le![d 0, s b"..", d 0], 39);
}

#[test]
fn tversion_with_a_request_in_flight() {
    let srv = TestServer::start("synth", Compat::Master);
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["FLUSH"]);
    c.ok(TLOPEN, &le![d 1, d 1]);
    // A write that blocks until flushed, then a Tversion: the session
    // resets (fids gone) while the write still holds its fid.
    c.send(TWRITE, 5, &le![d 1, q 0, d 1, x &[1]]);
    c.expect(
        TVERSION,
        NOTAG,
        &le![d 8192, s b"9P2000.L"],
        TVERSION + 1,
        &le![d 8192, s b"9P2000.L"],
    );
    c.expect_err(TGETATTR, &le![d 1, q 0x7ff], 2);
    // The write is still in flight: flushing it ends it.
    c.expect(TFLUSH, 6, &le![w 5], TFLUSH + 1, &[]);
    let report = srv.stop();
    assert_eq!(report.tasks_left, 0);
}

#[test]
fn fid_numbers_are_reused_after_clunk_and_nofid_is_just_a_number() {
    let srv = TestServer::start("synth", Compat::Master);
    let mut c = srv.connect();
    c.attach();
    for _ in 0..3 {
        c.walk(0, 7, &["LOPEN"]);
        c.ok(TCLUNK, &le![d 7]);
    }
    // QEMU does not reserve NOFID as a fid number.
    c.walk(0, NOFID, &["LOPEN"]);
    c.ok(TGETATTR, &le![d NOFID, q 0x7ff]);
}

#[test]
fn a_broken_twrite_changes_no_file() {
    let dir = std::env::temp_dir().join(format!("coro9p-malformed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), b"original").unwrap();
    let srv = TestServer::start(
        &format!("local,path={},security_model=passthrough", dir.display()),
        Compat::Master,
    );
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["f"]);
    c.ok(TLOPEN, &le![d 1, d 2]);
    c.send(TWRITE, 0, &le![d 1, q 0, d 1000, x b"XXXX"]);
    assert_eq!(c.recv(), (RLERROR, 0, le![d 105]));
    assert!(closed(&mut c));
    assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"original");
    let _ = std::fs::remove_dir_all(&dir);
}
