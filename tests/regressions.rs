//! Regressions found by reviewing the server against the reference: each
//! failed before its fix.

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::fs;

use common::*;
use coro9p::Compat;

fn rerror_errno(body: &[u8]) -> u32 {
    let n = u16::from_le_bytes([body[0], body[1]]) as usize;
    u32::from_le_bytes(body[2 + n..6 + n].try_into().unwrap())
}

fn open_u(fsdev: &str) -> (TestServer, Client) {
    let srv = TestServer::start(fsdev, Compat::V7_2);
    let mut c = srv.connect();
    c.version(32768, "9P2000.u");
    c.ok(TATTACH, &le![d 0, d NOFID, s b"", s b"", d 0]);
    c.walk(0, 1, &["LOPEN"]);
    (srv, c)
}

/// 7.2 checked the raw .u mode on a read-only export: Oexec (3) has the
/// O_WRONLY bit and is refused. (Otrunc, which 7.2 let through, stays
/// refused: CVE-2026-63318.)
#[test]
fn under_7_2_a_readonly_topen_also_checks_the_raw_mode() {
    let (_srv, mut c) = open_u("synth,readonly=on");
    c.send(TOPEN, 0, &le![d 1, b 3]);
    let (id, _, body) = c.recv();
    assert_eq!((id, rerror_errno(&body)), (RERROR, 30));
    c.send(TOPEN, 0, &le![d 1, b 0x10]);
    let (id, _, body) = c.recv();
    assert_eq!((id, rerror_errno(&body)), (RERROR, 30), "the CVE fix stays");
    c.send(TOPEN, 0, &le![d 1, b 0]);
    assert_eq!(c.recv().0, TOPEN + 1);
}

/// 7.2 ran Twstat's "don't touch" fsync with no handle check.
#[test]
fn under_7_2_twstat_dont_touch_needs_no_handle() {
    let srv = TestServer::start("synth", Compat::V7_2);
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["LOPEN"]);
    c.ok(TFSYNC, &le![d 1, d 0]);
    let mut st = le![w 0xffff, d 0xffff_ffffu32, b 0xff, d 0xffff_ffffu32, q u64::MAX,
        d 0xffff_ffffu32, d 0xffff_ffffu32, d 0xffff_ffffu32, q u64::MAX,
        s b"", s b"", s b"", s b"", s b"", d 0xffff_ffffu32, d 0xffff_ffffu32, d 0xffff_ffffu32];
    let mut stat = le![w st.len()];
    stat.append(&mut st);
    let mut body = le![d 1, w stat.len()];
    body.extend(stat);
    c.ok(TWSTAT, &body);
}

/// A driver without inode generations answers 0, which counts as success:
/// Rgetattr marks GEN valid.
#[test]
fn getattr_gen_is_valid_without_driver_generations() {
    let srv = TestServer::start("synth", Compat::Master);
    let mut c = srv.connect();
    c.attach();
    let r = c.ok(TGETATTR, &le![d 0, q 0x3fff]);
    assert_eq!(&r[..8], &le![q 0x17ff][..]);
    let r = c.ok(TGETATTR, &le![d 0, q 0x7ff]);
    assert_eq!(&r[..8], &le![q 0x7ff][..]);
}

/// Tsetattr SIZE on an open directory goes through the handle:
/// ftruncate(dirfd) is EINVAL, not truncate(path)'s EISDIR.
#[test]
fn setattr_size_on_an_open_directory_uses_the_handle() {
    let dir = std::env::temp_dir().join(format!("coro9p-reg-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("d")).unwrap();
    let srv = TestServer::start(
        &format!("local,path={},security_model=passthrough", dir.display()),
        Compat::Master,
    );
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["d"]);
    c.ok(TLOPEN, &le![d 1, d 0o200000]);
    c.expect_err(
        TSETATTR,
        &le![d 1, d 0x8, d 0, d 0, d 0, q 0, q 0, q 0, q 0, q 0],
        22,
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Zero-length I/O on synth calls no callback: Rwrite 0, Rread 0.
#[test]
fn zero_length_io_on_synth_calls_no_callback() {
    let srv = TestServer::start("synth", Compat::Master);
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["WRITE"]);
    c.ok(TLOPEN, &le![d 1, d 1]);
    assert_eq!(c.ok(TWRITE, &le![d 1, q 0, d 0]), le![d 0]);
    c.walk(0, 2, &["stat", "xattr_count"]);
    c.ok(TLOPEN, &le![d 2, d 0]);
    assert_eq!(c.ok(TREAD, &le![d 2, q 0, d 0]), le![d 0]);
}
