//! A client that disconnects with requests in flight leaves no open host
//! descriptors behind. Alone in its test binary, so that the process's fd
//! count is only this test's.

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::fs;

use common::*;
use coro9p::Compat;

fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_disconnect_closes_every_host_descriptor_the_session_opened() {
    let dir = std::env::temp_dir().join(format!("coro9p-fds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("d")).unwrap();
    for i in 0..20 {
        fs::write(dir.join(format!("f{i}")), b"x").unwrap();
    }
    let srv = TestServer::start(
        &format!("local,path={},security_model=passthrough", dir.display()),
        Compat::Master,
    );
    // Let the server's own descriptors (socket, poll, waker) settle.
    let mut c = srv.connect();
    c.attach();
    let before = open_fds();
    for i in 0..20u32 {
        c.walk(0, i + 1, &[&format!("f{i}")]);
        c.ok(TLOPEN, &le![d i + 1, d 2]);
    }
    c.walk(0, 100, &["d"]);
    c.ok(TLOPEN, &le![d 100, d 0o200000]);
    assert!(open_fds() >= before + 21, "the opens hold host descriptors");
    // Requests in flight when the client hangs up.
    for i in 0..20u32 {
        c.send(TREAD, i as u16, &le![d i + 1, q 0, d 1]);
        c.send(TWRITE, 100 + i as u16, &le![d i + 1, q 0, d 1, x b"y"]);
    }
    drop(c);
    let report = srv.stop();
    assert_eq!(report.tasks_left, 0);
    assert_eq!(report.open_handles, 0);
    // The server thread is gone too: back to before the session's opens,
    // less the connection itself.
    assert!(
        open_fds() < before,
        "{} descriptors left, {before} before",
        open_fds()
    );
    let _ = fs::remove_dir_all(&dir);
}
