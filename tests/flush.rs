//! Tflush (§3), the PDU limit, and disconnects with requests in flight.

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use common::*;
use coro9p::Compat;

fn server() -> TestServer {
    TestServer::start("synth", Compat::Master)
}

/// Attach, then open /FLUSH as fid 1 for writing.
fn open_flush_file(c: &mut Client) {
    c.attach();
    c.walk(0, 1, &["FLUSH"]);
    c.ok(TLOPEN, &le![d 1, d 1]);
}

fn blocking_write() -> Vec<u8> {
    frame(TWRITE, 0, &le![d 1, q 0, d 1, x &[1]])
}

fn flush(tag: u16, oldtag: u16) -> Vec<u8> {
    frame(TFLUSH, tag, &le![w oldtag])
}

fn send_all(c: &mut Client, frames: &[Vec<u8>]) {
    use std::io::Write;
    c.s.write_all(&frames.concat()).unwrap();
}

#[test]
fn flush_success_discards_the_write_then_sends_rflush() {
    let srv = server();
    let mut c = srv.connect();
    open_flush_file(&mut c);
    send_all(&mut c, &[blocking_write(), flush(1, 0)]);
    assert_eq!(c.recv_frame(), frame(TFLUSH + 1, 1, &[]));
    assert!(!c.reply_within(300), "the flushed write must get no reply");
    // The tag is free again.
    c.expect_err(TGETATTR, &le![d 9, q 0x7ff], 2);
}

#[test]
fn flush_ignored_sends_the_write_reply_first() {
    let srv = server();
    let mut c = srv.connect();
    open_flush_file(&mut c);
    let write = frame(TWRITE, 0, &le![d 1, q 0, d 1, x &[0]]);
    send_all(&mut c, &[write, flush(1, 0)]);
    assert_eq!(c.recv_frame(), frame(TWRITE + 1, 0, &le![d 1]));
    assert_eq!(c.recv_frame(), frame(TFLUSH + 1, 1, &[]));
}

#[test]
fn a_flush_of_its_own_tag_or_an_unknown_tag_is_answered_at_once() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.expect(TFLUSH, 5, &le![w 5], TFLUSH + 1, &[]);
    c.expect(TFLUSH, 6, &le![w 77], TFLUSH + 1, &[]);
}

#[test]
fn two_flushes_of_one_tag_answer_in_arrival_order() {
    let srv = server();
    let mut c = srv.connect();
    open_flush_file(&mut c);
    send_all(&mut c, &[blocking_write(), flush(1, 0), flush(2, 0)]);
    assert_eq!(c.recv_frame(), frame(TFLUSH + 1, 1, &[]));
    assert_eq!(c.recv_frame(), frame(TFLUSH + 1, 2, &[]));
    assert!(!c.reply_within(200));
}

#[test]
fn a_flush_of_a_flush() {
    let srv = server();
    let mut c = srv.connect();
    open_flush_file(&mut c);
    send_all(&mut c, &[blocking_write(), flush(1, 0), flush(2, 1)]);
    // The inner flush is cancelled but ends with success, so it replies.
    assert_eq!(c.recv_frame(), frame(TFLUSH + 1, 1, &[]));
    assert_eq!(c.recv_frame(), frame(TFLUSH + 1, 2, &[]));
    assert!(!c.reply_within(200));
}

#[test]
fn the_flushed_request_reply_comes_right_before_rflush_even_under_load() {
    let srv = server();
    let mut c = srv.connect();
    open_flush_file(&mut c);
    c.walk(0, 2, &["ReadDirDir"]);
    c.ok(TLOPEN, &le![d 2, d 0o200000]);
    // Readdirs in flight around the flush: whatever order they finish in,
    // nothing comes between the discarded write and its Rflush, and the
    // Rflush is there.
    let mut frames = Vec::new();
    for t in 10..20u16 {
        frames.push(frame(TREADDIR, t, &le![d 2, q 0, d 4000]));
    }
    frames.push(frame(TWRITE, 1, &le![d 1, q 0, d 1, x &[1]]));
    frames.push(flush(30, 1));
    for t in 20..30u16 {
        frames.push(frame(TREADDIR, t, &le![d 2, q 0, d 4000]));
    }
    send_all(&mut c, &frames);
    let mut tags = Vec::new();
    for _ in 0..21 {
        let (id, tag, _) = c.recv();
        assert!(
            id == TREADDIR + 1 || (id == TFLUSH + 1 && tag == 30),
            "{id} {tag}"
        );
        tags.push(tag);
    }
    assert!(tags.contains(&30));
    assert!(!tags.contains(&1));
    assert!(!c.reply_within(200));
}

#[test]
fn the_129th_request_waits_for_a_free_pdu() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["WRITE"]);
    c.ok(TLOPEN, &le![d 1, d 1]);
    // 128 writes that each take 200 hops (one byte per call), then a
    // getattr that takes one hop: it cannot start before a write ends.
    let data = vec![b'w'; 200];
    let mut frames: Vec<Vec<u8>> = (0..128u16)
        .map(|t| frame(TWRITE, t, &le![d 1, q 0, d 200, x &data]))
        .collect();
    frames.push(frame(TGETATTR, 500, &le![d 0, q 0x7ff]));
    {
        use std::io::Write;
        c.s.write_all(&frames.concat()).unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..129 {
        let (id, tag, body) = c.recv();
        if id == TWRITE + 1 {
            assert_eq!(body, le![d 200]);
        } else {
            assert_eq!((id, tag), (TGETATTR + 1, 500));
        }
        order.push(tag);
    }
    let getattr_at = order.iter().position(|&t| t == 500).unwrap();
    assert!(getattr_at > 0, "served before any PDU was free");
    let report = srv.stop();
    assert_eq!(report.tasks_left, 0);
}

#[test]
fn a_disconnect_with_requests_in_flight_leaves_nothing_behind() {
    let srv = server();
    {
        let mut c = srv.connect();
        open_flush_file(&mut c);
        c.walk(0, 2, &["ReadDirDir"]);
        c.ok(TLOPEN, &le![d 2, d 0o200000]);
        c.walk(0, 3, &["LOPEN"]);
        c.ok(TLOPEN, &le![d 3, d 0]);
        // A write that blocks until cancelled, then hang up.
        send_all(&mut c, &[blocking_write()]);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let report = srv.stop();
    assert_eq!(report.tasks_left, 0, "every request ended");
    assert_eq!(report.open_handles, 0, "every handle closed");
    assert_eq!(report.connections, 0);
    assert_eq!(report.active_requests, 0);
}

#[test]
fn past_the_fd_high_water_mark_idle_handles_are_reclaimed_and_reopened() {
    // A soft limit of 60 fds: reclaim above 40 open handles, 30 at a time.
    let srv = TestServer::start_with_fd_limit("synth", Compat::Master, Some(60));
    let mut c = srv.connect();
    c.attach();
    for fid in 1..=50u32 {
        c.walk(0, fid, &["stat", "xattr_count"]);
        c.ok(TLOPEN, &le![d fid, d 0]);
    }
    for fid in 1..=50u32 {
        let r = c.ok(TREAD, &le![d fid, q 0, d 8]);
        assert_eq!(r, le![d 8, q 0], "fid {fid}");
    }
    drop(c);
    let report = srv.stop();
    let hops = |name: &str| -> Vec<usize> {
        report
            .hops
            .iter()
            .filter(|t| t.label.ends_with(name))
            .map(|t| t.hops)
            .collect()
    };
    let opens = hops("Tlopen");
    assert_eq!(opens.len(), 50);
    assert!(
        opens.contains(&4),
        "an open past the mark closes idle handles in one more hop: {opens:?}"
    );
    let reads = hops("Tread");
    assert!(
        reads.iter().any(|&h| h >= 2),
        "a reclaimed fid is reopened on use: {reads:?}"
    );
    assert_eq!(report.open_handles, 0);
}

#[test]
fn a_client_that_does_not_read_its_replies_stops_being_read() {
    use std::io::Write;
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.s.set_nonblocking(true).unwrap();
    let req = frame(TGETATTR, 0, &le![d 0, q 0x7ff]);
    let batch = req.repeat(1000);
    let mut written = 0usize;
    let cap = 64 << 20;
    let blocked = loop {
        match c.s.write(&batch) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Give the server time to drain what it would.
                std::thread::sleep(std::time::Duration::from_millis(200));
                match c.s.write(&batch) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                    Err(e) => panic!("{e}"),
                }
            }
            Err(e) => panic!("{e}"),
        }
        if written > cap {
            break false;
        }
    };
    assert!(
        blocked,
        "the server kept reading {written} bytes of requests"
    );
    assert!(
        written < 16 << 20,
        "read {written} bytes before pushing back"
    );
    // Reading the replies lets it go on: every request is answered.
    c.s.set_nonblocking(false).unwrap();
    let sent = written / req.len();
    let tail = written % req.len();
    if tail != 0 {
        c.s.write_all(&req[tail..]).unwrap();
    }
    let total = sent + usize::from(tail != 0);
    for _ in 0..total {
        let (id, _, _) = c.recv();
        assert_eq!(id, TGETATTR + 1);
    }
}
