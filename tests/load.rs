//! Load: many connections, each with many requests in flight (pipelined by
//! tag), every reply matched to its tag exactly once and none lost; after
//! the clients leave, the server's open descriptors are back to where they
//! started. Against the coro9p binary, so its descriptors can be counted.
//!
//! Sizes: CORO9P_LOAD_CONNS (default 500), CORO9P_LOAD_INFLIGHT (32),
//! CORO9P_LOAD_REQS requests per connection (10000).

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// One client connection: attach, then keep `inflight` Tgetattrs in flight
/// until `total` have been answered. Returns the replies seen per tag.
fn client(path: &std::path::Path, inflight: usize, total: usize) -> Result<usize, String> {
    let mut s = UnixStream::connect(path).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let mut c = Client {
        s: s.try_clone().map_err(|e| e.to_string())?,
    };
    c.attach();
    let req = |tag: u16| frame(TGETATTR, tag, &le![d 0, q 0x7ff]);
    let mut sent = 0usize;
    let mut outstanding = vec![false; inflight];
    let mut batch = Vec::new();
    for (tag, slot) in outstanding.iter_mut().enumerate().take(total.min(inflight)) {
        batch.extend(req(tag as u16));
        *slot = true;
        sent += 1;
    }
    s.write_all(&batch).map_err(|e| e.to_string())?;
    let mut received = 0usize;
    let mut head = [0u8; 7];
    let mut body = vec![0u8; 256];
    while received < total {
        s.read_exact(&mut head)
            .map_err(|e| format!("after {received} replies: {e}"))?;
        let size = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
        let tag = u16::from_le_bytes([head[5], head[6]]) as usize;
        if head[4] != TGETATTR + 1 || size < 7 || size - 7 > body.len() {
            return Err(format!("unexpected reply {head:?}"));
        }
        s.read_exact(&mut body[..size - 7])
            .map_err(|e| e.to_string())?;
        if tag >= inflight || !outstanding[tag] {
            return Err(format!("a reply for tag {tag}, which is not in flight"));
        }
        outstanding[tag] = false;
        received += 1;
        if sent < total {
            s.write_all(&req(tag as u16)).map_err(|e| e.to_string())?;
            outstanding[tag] = true;
            sent += 1;
        }
    }
    if outstanding.iter().any(|&o| o) {
        return Err("requests left unanswered".into());
    }
    Ok(received)
}

#[test]
fn many_connections_many_requests_in_flight_none_lost() {
    let conns = env_or("CORO9P_LOAD_CONNS", 500);
    let inflight = env_or("CORO9P_LOAD_INFLIGHT", 32);
    let reqs = env_or("CORO9P_LOAD_REQS", 10_000);
    let path = std::env::temp_dir().join(format!("coro9p-load-{}.sock", std::process::id()));
    let mut server = Command::new(env!("CARGO_BIN_EXE_coro9p"))
        .args(["--fsdev", "synth", "--listen"])
        .arg(format!("unix:{}", path.display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let fds_before = open_fds(server.id());
    let started = Instant::now();
    let clients: Vec<_> = (0..conns)
        .map(|_| {
            let path = path.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || client(&path, inflight, reqs))
                .unwrap()
        })
        .collect();
    let mut total = 0;
    for (i, t) in clients.into_iter().enumerate() {
        match t.join().unwrap() {
            Ok(n) => total += n,
            Err(e) => panic!("connection {i}: {e}"),
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(total, conns * reqs);
    eprintln!(
        "{total} requests over {conns} connections ({inflight} in flight each) in {elapsed:?}"
    );
    // The sessions close as the clients leave; the descriptors go with them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(server.id()) != fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open_fds(server.id()), fds_before, "descriptors left behind");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(server.wait().unwrap().success());
}
