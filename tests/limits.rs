//! Per-session limits (`--fsdev` options): each holds at N and refuses at
//! N + 1 the way QEMU refuses the analogous case, each defaults to QEMU's
//! value, and a bad value is refused with one sentence (parser, command,
//! C ABI).

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::io::{Read, Write};

use common::*;
use coro9p::fuzzing::host::{Host, HostOptions};
use coro9p::server::{ExportOptions, MAX_REQ, SOCKET_MAX_MSIZE_DEFAULT, XATTR_SIZE_MAX};
use coro9p::Compat;

const E2BIG: u32 = 7;
const ENFILE: u32 = 23;
const EINVAL: u32 = 22;
const ENOENT: u32 = 2;

/// The server closed the connection (what QEMU's virtio_error is on a
/// socket); a last reply may come first.
fn closed(c: &mut Client) -> bool {
    let mut b = [0u8; 256];
    loop {
        match c.s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

// ---- defaults and bad values ---------------------------------------------

#[test]
fn every_limit_defaults_to_qemus_value() {
    let o = ExportOptions::parse("synth").unwrap();
    // QEMU has no fid limit.
    assert_eq!(o.max_fids, 0);
    // P9_XATTR_SIZE_MAX, Linux's XATTR_SIZE_MAX.
    assert_eq!((o.max_xattr_size, XATTR_SIZE_MAX), (65536, 65536));
    // MAX_REQ.
    assert_eq!((o.max_pdus, MAX_REQ), (128, 128));
    // Virtio's msize_limit, (VIRTQUEUE_MAX_SIZE - 2) * 4096, on sockets.
    assert_eq!(o.max_msize, None);
    assert_eq!(SOCKET_MAX_MSIZE_DEFAULT, 4_186_112);
    let o = ExportOptions::parse(
        "local,path=/x,security_model=none,max_fids=7,max_xattr_size=100,max_pdus=3,max_msize=8192",
    )
    .unwrap();
    assert_eq!(
        (o.max_fids, o.max_xattr_size, o.max_pdus, o.max_msize),
        (7, 100, 3, Some(8192))
    );
}

const BAD: &[(&str, &str)] = &[
    (
        "synth,max_fids=many",
        "Parameter 'max_fids' expects a number from 0 to 4294967295",
    ),
    (
        "synth,max_fids=-1",
        "Parameter 'max_fids' expects a number from 0 to 4294967295",
    ),
    (
        "synth,max_fids=4294967296",
        "Parameter 'max_fids' expects a number from 0 to 4294967295",
    ),
    (
        "synth,max_xattr_size=0",
        "Parameter 'max_xattr_size' expects a number from 1 to 65536",
    ),
    (
        "synth,max_xattr_size=65537",
        "Parameter 'max_xattr_size' expects a number from 1 to 65536",
    ),
    (
        "synth,max_pdus=0",
        "Parameter 'max_pdus' expects a number from 1 to 128",
    ),
    (
        "synth,max_pdus=129",
        "Parameter 'max_pdus' expects a number from 1 to 128",
    ),
    (
        "synth,max_pdus",
        "Parameter 'max_pdus' expects a number from 1 to 128",
    ),
    (
        "synth,max_msize=4095",
        "Parameter 'max_msize' expects a number from 4096 to 4294967295",
    ),
    (
        "synth,max_msize=1M",
        "Parameter 'max_msize' expects a number from 4096 to 4294967295",
    ),
];

#[test]
fn a_bad_value_is_refused_with_one_sentence() {
    for (spec, want) in BAD {
        assert_eq!(ExportOptions::parse(spec).unwrap_err(), *want, "{spec}");
    }
    // The edges themselves are good values.
    for spec in [
        "synth,max_fids=0",
        "synth,max_fids=4294967295",
        "synth,max_xattr_size=1",
        "synth,max_xattr_size=65536",
        "synth,max_pdus=1",
        "synth,max_pdus=128",
        "synth,max_msize=4096",
        "synth,max_msize=4294967295",
    ] {
        ExportOptions::parse(spec).unwrap();
    }
}

#[test]
fn the_command_stops_on_a_bad_value_with_the_sentence() {
    let (spec, want) = BAD[5];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coro9p"))
        .args(["--fsdev", spec, "--listen", "unix:/nonexistent/x.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("coro9p: {want}\n")
    );
}

#[test]
fn the_c_abi_refuses_a_bad_value_with_einval() {
    for (spec, _) in BAD {
        let got = Host::new(spec, &HostOptions::default()).err();
        assert_eq!(got, Some(-libc::EINVAL), "{spec}");
    }
}

#[test]
fn help_lists_every_limit_with_its_default() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coro9p"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "max_fids=N",
        "(0: no limit)",
        "max_xattr_size=N",
        "(65536)",
        "max_pdus=N",
        "(128)",
        "max_msize=N",
        "(4186112)",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }
}

// ---- max_fids ----------------------------------------------------------------

#[test]
fn max_fids_holds_n_fids_and_answers_enfile_to_one_more() {
    let srv = TestServer::start("synth,max_fids=3", Compat::Master);
    let mut c = srv.connect();
    c.attach(); // fid 0
    c.walk(0, 1, &["LOPEN"]);
    c.walk(0, 2, &[]);
    // Three fids: Twalk, Tattach and Txattrwalk to a fourth are ENFILE.
    c.expect_err(TWALK, &walk_body(0, 3, b"LOPEN"), ENFILE);
    c.expect_err(TWALK, &le![d 0, d 3, w 0], ENFILE);
    c.expect_err(TATTACH, &le![d 3, d NOFID, s b"", s b"", d 0], ENFILE);
    c.expect_err(TXATTRWALK, &le![d 0, d 3, s b"user.a"], ENFILE);
    // A number already in use stays EINVAL, as in QEMU.
    c.expect_err(TWALK, &walk_body(0, 1, b"LOPEN"), EINVAL);
    // Walking a fid onto itself takes no new one.
    c.ok(TWALK, &walk_body(2, 2, b"LOPEN"));
    c.expect_err(TCLUNK, &le![d 3], ENOENT);
    // One clunked: room for one again.
    c.ok(TCLUNK, &le![d 2]);
    c.walk(0, 3, &["LOPEN"]);
    c.expect_err(TWALK, &walk_body(0, 4, b"LOPEN"), ENFILE);
    // Tversion frees every fid.
    c.attach();
    c.walk(0, 1, &[]);
    c.walk(0, 2, &[]);
    c.expect_err(TWALK, &le![d 0, d 3, w 0], ENFILE);
    let report = srv.stop();
    assert_eq!(report.tasks_left, 0);
}

#[test]
fn max_fids_counts_per_session() {
    let srv = TestServer::start("synth,max_fids=1", Compat::Master);
    let mut a = srv.connect();
    let mut b = srv.connect();
    a.attach();
    b.attach();
    a.expect_err(TWALK, &le![d 0, d 1, w 0], ENFILE);
    b.expect_err(TWALK, &le![d 0, d 1, w 0], ENFILE);
}

#[test]
fn fids_are_not_limited_by_default() {
    let srv = TestServer::start("synth", Compat::Master);
    let mut c = srv.connect();
    c.attach();
    let frames: Vec<u8> = (1..=2000u32)
        .flat_map(|f| frame(TWALK, 1, &walk_body(0, f, b"LOPEN")))
        .collect();
    c.s.write_all(&frames).unwrap();
    for _ in 1..=2000 {
        let (id, _, _) = c.recv();
        assert_eq!(id, TWALK + 1);
    }
    drop(c);
    let report = srv.stop();
    assert_eq!(report.tasks_left, 0);
}

// ---- max_xattr_size ----------------------------------------------------------

/// Txattrcreate on a fresh fid; returns the reply's type and body. The
/// fid is clunked after (EINVAL for a value never written, not checked).
fn xattrcreate(c: &mut Client, fid: u32, name: &[u8], size: u64) -> Vec<u8> {
    c.walk(0, fid, &[]);
    c.send(TXATTRCREATE, 0, &le![d fid, s name, q size, d 0]);
    let (id, _, body) = c.recv();
    c.send(TCLUNK, 0, &le![d fid]);
    let _ = c.recv();
    [vec![id], body].concat()
}

#[test]
fn max_xattr_size_takes_n_bytes_and_answers_e2big_to_n_plus_1() {
    for (fsdev, n) in [
        ("synth,max_xattr_size=100", 100u64),
        ("synth,max_xattr_size=1", 1),
        ("synth", 65536),
    ] {
        let srv = TestServer::start(fsdev, Compat::Master);
        let mut c = srv.connect();
        c.attach();
        assert_eq!(xattrcreate(&mut c, 1, b"user.a", n), vec![TXATTRCREATE + 1]);
        assert_eq!(
            xattrcreate(&mut c, 1, b"user.a", n + 1),
            [vec![RLERROR], le![d E2BIG]].concat(),
            "{fsdev}"
        );
        assert_eq!(
            xattrcreate(&mut c, 1, b"user.a", u64::MAX),
            [vec![RLERROR], le![d E2BIG]].concat()
        );
    }
}

#[test]
fn txattrwalk_of_a_value_above_max_xattr_size_is_e2big() {
    let dir = temp_dir("limits-xattr");
    std::fs::write(dir.join("f"), b"").unwrap();
    let local = format!("local,path={},security_model=none", dir.display());
    // Values of 100 and 101 bytes, set through 9P with the default limit.
    {
        let srv = TestServer::start(&local, Compat::Master);
        let mut c = srv.connect();
        c.attach();
        for (name, n) in [(&b"user.small"[..], 100usize), (b"user.big", 101)] {
            c.walk(0, 1, &["f"]);
            c.ok(TXATTRCREATE, &le![d 1, s name, q n, d 0]);
            c.ok(TWRITE, &le![d 1, q 0, d n, x &vec![b'v'; n]]);
            c.ok(TCLUNK, &le![d 1]);
        }
    }
    assert_eq!(
        lgetxattr(&dir.join("f"), "user.big").map(|v| v.len()),
        Some(101)
    );
    let srv = TestServer::start(&format!("{local},max_xattr_size=100"), Compat::Master);
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["f"]);
    let r = c.ok(TXATTRWALK, &le![d 1, d 2, s b"user.small"]);
    assert_eq!(r, le![q 100]);
    c.expect_err(TXATTRWALK, &le![d 1, d 3, s b"user.big"], E2BIG);
    // The refused walk left no fid behind.
    c.expect_err(TCLUNK, &le![d 3], ENOENT);
    drop(c);
    let report = srv.stop();
    assert_eq!((report.tasks_left, report.open_handles), (0, 0));
}

// ---- max_pdus ----------------------------------------------------------------

#[test]
fn max_pdus_runs_n_requests_and_holds_the_next_back() {
    let srv = TestServer::start("synth,max_pdus=3", Compat::Master);
    {
        let mut c = srv.connect();
        c.attach();
        c.walk(0, 1, &["FLUSH"]);
        c.ok(TLOPEN, &le![d 1, d 1]);
        // Writes to /FLUSH run until flushed: two of them hold two PDUs.
        let blocking = |tag| frame(TWRITE, tag, &le![d 1, q 0, d 1, x &[1]]);
        c.s.write_all(&[blocking(10), blocking(11)].concat())
            .unwrap();
        c.send(TGETATTR, 20, &le![d 0, q 0x7ff]);
        let (id, tag, _) = c.recv();
        assert_eq!((id, tag), (TGETATTR + 1, 20), "the third PDU serves");
        // A third write holds the last PDU: the next request waits.
        c.s.write_all(&blocking(12)).unwrap();
        c.send(TGETATTR, 21, &le![d 0, q 0x7ff]);
        assert!(!c.reply_within(300), "a fourth request ran");
    }
    // Hanging up cancels all of it.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let report = srv.stop();
    assert_eq!((report.tasks_left, report.active_requests), (0, 0));
}

#[test]
fn the_c_abi_hands_out_max_pdus_pdus_then_null() {
    for (fsdev, n) in [
        ("synth", 128usize),
        ("synth,max_pdus=5", 5),
        ("synth,max_pdus=1", 1),
    ] {
        let mut h = Host::new(fsdev, &HostOptions::default()).unwrap();
        let got: Vec<usize> = (0..n).map_while(|_| h.alloc()).collect();
        assert_eq!(got.len(), n, "{fsdev}");
        assert!(got.iter().all(|&i| i < n), "{fsdev}: {got:?}");
        assert_eq!(h.alloc(), None, "{fsdev}: PDU {}", n + 1);
        assert_eq!(h.stats().active_requests as usize, n);
        // One given back: one more can be had, and only one.
        assert_eq!(h.free(got[0]), 0);
        assert!(h.alloc().is_some());
        assert_eq!(h.alloc(), None);
        assert_eq!(h.destroy(), 0);
        h.check();
    }
}

// ---- max_msize ---------------------------------------------------------------

fn tversion(c: &mut Client, msize: u32) -> u32 {
    c.send(TVERSION, NOTAG, &le![d msize, s b"9P2000.L"]);
    let (id, _, body) = c.recv();
    assert_eq!(id, TVERSION + 1);
    u32::from_le_bytes(body[..4].try_into().unwrap())
}

/// A Twrite to an xattr fid whose whole frame is `size` bytes.
fn write_frame_of(size: usize) -> Vec<u8> {
    let n = size - 23;
    frame(TWRITE, 0, &le![d 1, q 0, d n, x &vec![b'x'; n]])
}

/// After Tversion: a frame of exactly `limit` bytes is served, one of
/// `limit + 1` closes the connection.
fn frames_are_capped_at(srv: &TestServer, msize: u32, limit: usize) {
    let mut c = srv.connect();
    tversion(&mut c, msize);
    c.ok(TATTACH, &le![d 0, d NOFID, s b"", s b"", d 0]);
    c.walk(0, 1, &[]);
    c.ok(TXATTRCREATE, &le![d 1, s b"user.a", q 65536, d 0]);
    c.s.write_all(&write_frame_of(limit)).unwrap();
    assert_eq!(c.recv().0, TWRITE + 1);
    c.s.write_all(&write_frame_of(limit + 1)).unwrap();
    assert!(closed(&mut c), "a {}-byte frame was taken", limit + 1);
}

#[test]
fn max_msize_caps_tversion_and_frames() {
    let srv = TestServer::start("synth,max_msize=16384", Compat::Master);
    let mut c = srv.connect();
    assert_eq!(tversion(&mut c, 16384), 16384);
    assert_eq!(tversion(&mut c, 16385), 16384);
    assert_eq!(tversion(&mut c, 1 << 20), 16384);
    assert_eq!(tversion(&mut c, 8192), 8192);
    frames_are_capped_at(&srv, 1 << 20, 16384);
}

#[test]
fn with_compat_7_2_tversion_echoes_but_frames_stay_capped() {
    let srv = TestServer::start("synth,max_msize=16384", Compat::V7_2);
    let mut c = srv.connect();
    assert_eq!(tversion(&mut c, 65536), 65536);
    frames_are_capped_at(&srv, 65536, 16384);
}

#[test]
fn an_unknown_version_string_does_not_lift_the_frame_cap() {
    let srv = TestServer::start("synth,max_msize=16384", Compat::Master);
    let mut c = srv.connect();
    c.version(8192, "9P2000.L");
    // QEMU echoes an unknown version's msize, uncapped, and keeps the
    // dialect; the socket still takes no larger frame.
    c.expect(
        TVERSION,
        NOTAG,
        &le![d u32::MAX, s b"9P2000"],
        TVERSION + 1,
        &le![d u32::MAX, s b"unknown"],
    );
    c.s.write_all(&write_frame_of(16385)).unwrap();
    assert!(closed(&mut c));
}

#[test]
fn sockets_cap_the_msize_at_virtios_limit_by_default() {
    let srv = TestServer::start("synth", Compat::Master);
    let mut c = srv.connect();
    assert_eq!(tversion(&mut c, 4_186_112), 4_186_112);
    assert_eq!(tversion(&mut c, 4_186_113), 4_186_112);
    assert_eq!(tversion(&mut c, u32::MAX), 4_186_112);
}

fn ffi_tversion(h: &Host, msize: u32) -> u32 {
    let r = h.rpc(&frame(TVERSION, NOTAG, &le![d msize, s b"9P2000.L"]), 8192);
    assert_eq!(r[4], TVERSION + 1);
    u32::from_le_bytes(r[7..11].try_into().unwrap())
}

#[test]
fn max_msize_lowers_the_c_transports_msize_limit() {
    let with_limit = HostOptions {
        msize_limit: Some(65536),
        response_buffer_size: true,
        ..HostOptions::default()
    };
    // The transport's own limit, when the fsdev string sets none.
    let h = Host::new("synth", &with_limit).unwrap();
    assert_eq!(ffi_tversion(&h, 1 << 20), 65536);
    drop(h);
    let h = Host::new("synth,max_msize=16384", &with_limit).unwrap();
    assert_eq!(ffi_tversion(&h, 16384), 16384);
    assert_eq!(ffi_tversion(&h, 16385), 16384);
    h.check();
    drop(h);
    // A larger max_msize does not raise the transport's limit.
    let h = Host::new("synth,max_msize=1048576", &with_limit).unwrap();
    assert_eq!(ffi_tversion(&h, 1 << 20), 65536);
    drop(h);
    // QEMU 7.2's table has no msize_limit: max_msize stands in for it.
    let h = Host::new("synth,max_msize=16384", &HostOptions::default()).unwrap();
    assert_eq!(ffi_tversion(&h, 1 << 20), 16384);
    drop(h);
    let h = Host::new("synth", &HostOptions::default()).unwrap();
    assert_eq!(ffi_tversion(&h, 1 << 20), 1 << 20);
}
