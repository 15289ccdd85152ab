//! The `coro9p` command as a user runs it: arguments, errors, and each
//! transport (tcp, unix, stdio) carrying a real session.

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn coro9p() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coro9p"));
    c.env("RUST_LOG", "info");
    c
}

fn version_frame() -> (Vec<u8>, Vec<u8>) {
    let body = le![d 8192, s b"9P2000.L"];
    (
        frame(TVERSION, NOTAG, &body),
        frame(TVERSION + 1, NOTAG, &body),
    )
}

/// A Tversion round trip over any stream.
fn version_round_trip<S: Read + Write>(mut s: S) {
    let (req, want) = version_frame();
    s.write_all(&req).unwrap();
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
}

/// Reads the child's stderr until a line contains `needle`; returns it.
fn wait_for_line(child: &mut Child, needle: &str) -> String {
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains(needle) {
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return line;
        }
    }
    panic!("coro9p exited before printing '{needle}'");
}

#[test]
fn help_and_version() {
    let out = coro9p().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--fsdev"));
    let out = coro9p().arg("-V").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("coro9p "));
}

#[test]
fn mistakes_get_one_plain_sentence() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--bogus"],
            "coro9p: unknown argument '--bogus' (see coro9p --help).\n",
        ),
        (
            &["--listen", "unix:/tmp/x"],
            "coro9p: --fsdev is required (see coro9p --help).\n",
        ),
        (
            &["--fsdev", "synth"],
            "coro9p: --listen is required (see coro9p --help).\n",
        ),
        (
            &["--fsdev", "synth,path=/x", "--listen", "unix:/tmp/x"],
            "coro9p: 'path' is invalid for fsdriver 'synth'\n",
        ),
        (
            &["--fsdev", "synth", "--listen", "udp:1"],
            "coro9p: 'udp:1' is not tcp:HOST:PORT, unix:PATH, fd:R,W or stdio\n",
        ),
        (
            &["--fsdev", "synth", "--listen", "stdio", "--compat", "9.0"],
            "coro9p: --compat takes master or 7.2, not '9.0'.\n",
        ),
        (
            &["--fsdev", "synth", "--listen", "stdio", "--hops=few"],
            "coro9p: --hops takes qemu or min, not 'few'.\n",
        ),
    ];
    for (args, want) in cases {
        let out = coro9p().args(*args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), *want, "{args:?}");
    }
}

#[test]
fn serves_over_tcp() {
    let mut child = coro9p()
        .args(["--fsdev", "synth", "--listen", "tcp:127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = wait_for_line(&mut child, "listening on");
    let addr = line.rsplit(' ').next().unwrap().to_string();
    let s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    version_round_trip(s);
    stop_process(child);
}

/// Starts `coro9p --fsdev synth` on a fresh unix socket and connects to it.
fn synth_on_unix_socket(tag: &str) -> (Child, std::os::unix::net::UnixStream) {
    let path = std::env::temp_dir().join(format!("coro9p-{tag}-{}.sock", std::process::id()));
    let mut child = coro9p()
        .args(["--fsdev", "synth", "--listen"])
        .arg(format!("unix:{}", path.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "listening on");
    let s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    (child, s)
}

#[test]
fn serves_over_a_unix_socket() {
    let (child, s) = synth_on_unix_socket("cli");
    version_round_trip(s);
    stop_process(child);
}

#[test]
fn serves_over_stdio_and_exits_when_the_client_leaves() {
    let mut child = coro9p()
        .args(["--fsdev", "synth", "--listen", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (req, want) = version_frame();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(&req).unwrap();
    let mut got = vec![0u8; want.len()];
    stdout.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn a_frame_above_the_msize_closes_the_connection() {
    let srv = TestServer::start("synth", coro9p::Compat::Master);
    let mut c = srv.connect();
    c.version(4096, "9P2000.L");
    // 5000 bytes announced, above the negotiated 4096.
    c.s.write_all(&le![d 5000, b TGETATTR, w 0]).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(c.s.read(&mut b).unwrap(), 0, "connection closed");
    let mut c = srv.connect();
    // Below the 7-byte header.
    c.s.write_all(&le![d 3, b 0, w 0]).unwrap();
    assert_eq!(c.s.read(&mut b).unwrap(), 0, "connection closed");
    // Before Tversion, 8 KiB is the limit.
    let mut c = srv.connect();
    c.s.write_all(&le![d 8193, b TVERSION, w NOTAG]).unwrap();
    assert_eq!(c.s.read(&mut b).unwrap(), 0, "connection closed");
    let report = srv.stop();
    assert_eq!(report.connections, 0);
}

#[test]
fn a_truncated_message_gets_enobufs_and_a_closed_connection() {
    let srv = TestServer::start("synth", coro9p::Compat::Master);
    let mut c = srv.connect();
    c.attach();
    // Tgetattr with a 2-byte body: the fid does not fit.
    c.s.write_all(&frame(TGETATTR, 3, &[1, 0])).unwrap();
    assert_eq!(c.recv_frame(), frame(RLERROR, 3, &le![d 105]));
    let mut b = [0u8; 1];
    assert_eq!(c.s.read(&mut b).unwrap(), 0, "connection closed");
}

#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits() {
    let (mut child, s) = synth_on_unix_socket("term");
    let mut c = Client { s };
    c.attach();
    c.walk(0, 1, &["WRITE"]);
    c.ok(TLOPEN, &le![d 1, d 1]);
    // 20000 bytes to WRITE: 20000 hops, one byte each; SIGTERM meanwhile.
    let data = vec![7u8; 20000];
    c.send(TWRITE, 4, &le![d 1, q 0, d 20000, x &data]);
    std::thread::sleep(Duration::from_millis(20));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // The write still completes and is answered.
    assert_eq!(c.recv(), (TWRITE + 1, 4, le![d 20000]));
    // New requests are no longer taken (the server may be gone already).
    let _ = c.s.write_all(&frame(TGETATTR, 5, &le![d 0, q 0x7ff]));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut b = [0u8; 16];
    assert_eq!(c.s.read(&mut b).unwrap_or(0), 0, "no reply after the stop");
}

#[test]
fn connections_past_the_cap_are_closed() {
    let path = std::env::temp_dir().join(format!("coro9p-cap-{}.sock", std::process::id()));
    let mut child = coro9p()
        .args(["--fsdev", "synth", "--max-connections", "2", "--listen"])
        .arg(format!("unix:{}", path.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "listening on");
    let connect = || {
        let s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    let (a, b) = (connect(), connect());
    version_round_trip(&a);
    version_round_trip(&b);
    let mut third = connect();
    let (req, _) = version_frame();
    let _ = third.write_all(&req);
    let mut buf = [0u8; 16];
    assert_eq!(third.read(&mut buf).unwrap_or(0), 0, "the third is closed");
    drop(a);
    // A place is free again.
    std::thread::sleep(Duration::from_millis(200));
    version_round_trip(connect());
    stop_process(child);
}

#[test]
fn a_frame_larger_than_the_read_ahead_is_served() {
    // The largest msize sockets take by default (virtio's, just under
    // 4 MiB) and a 2 MiB Twrite: more than the transport reads ahead.
    let srv = TestServer::start("synth", coro9p::Compat::Master);
    let mut c = srv.connect();
    c.version(4_186_112, "9P2000.L");
    c.ok(TATTACH, &le![d 0, d NOFID, s b"", s b"", d 0]);
    // To a walked but unopened fid: EINVAL, once the whole frame is in.
    c.walk(0, 2, &["LOPEN"]);
    let data = vec![0u8; 2 << 20];
    c.expect_err(TWRITE, &le![d 2, q 0, d data.len(), x &data], 22);
}
