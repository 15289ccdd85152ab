//! fd reclaim for real: the coro9p binary with a soft RLIMIT_NOFILE of 64
//! serves 500 open fids of one session on distinct files, and every one
//! of them reads and writes. QEMU's thresholds for 64 are a high-water
//! mark of 43 open handles and 32 closed per pass: idle handles are
//! closed (second-chance LRU) and reopened on next use.

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::fs;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const FILES: u32 = 500;
const SOFT_LIMIT: u64 = 64;

/// The server process and its directory, both gone when dropped.
struct Server {
    child: Child,
    base: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.base);
    }
}

impl Server {
    fn start(base: PathBuf, export: &std::path::Path, sock: &std::path::Path) -> Server {
        let log = fs::File::create(base.join("server.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coro9p"));
        cmd.arg("--fsdev")
            .arg(format!(
                "local,id=fsdev0,path={},security_model=passthrough",
                export.display()
            ))
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes the setrlimit system call, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let (_, hard) =
                    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    SOFT_LIMIT,
                    hard,
                )?;
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        Server { child, base }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.base.join("server.log")).unwrap_or_default()
    }

    /// The descriptors the server has open now.
    fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

#[test]
fn five_hundred_open_fids_under_a_limit_of_64_fds() {
    let base = std::env::temp_dir().join(format!("coro9p-reclaim-ulimit-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let export = base.join("export");
    fs::create_dir_all(&export).unwrap();
    for i in 0..FILES {
        fs::write(export.join(format!("f{i:03}")), format!("file {i:03}")).unwrap();
    }
    let sock = base.join("sock");
    let mut srv = Server::start(base.clone(), &export, &sock);
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                if let Ok(Some(st)) = srv.child.try_wait() {
                    panic!("coro9p exited ({st}): {}", srv.log());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("cannot connect: {e}: {}", srv.log()),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let limits = fs::read_to_string(format!("/proc/{}/limits", srv.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(line.split_whitespace().nth(3), Some("64"), "{line}");

    let mut c = Client { s };
    c.attach();
    let mut most = 0;
    for i in 0..FILES {
        let fid = 1 + i;
        c.walk(0, fid, &[&format!("f{i:03}")]);
        // O_RDWR.
        c.send(TLOPEN, 0, &le![d fid, d 2]);
        let (id, _, body) = c.recv();
        assert_eq!(
            id,
            TLOPEN + 1,
            "Tlopen of fid {fid}: {body:?}\n{}",
            srv.log()
        );
        most = most.max(srv.open_fds());
    }
    assert!(most <= SOFT_LIMIT as usize, "{most} fds open");
    // Every fid reads and writes, in two passes, each fid reopened as it
    // comes (the others were reclaimed meanwhile).
    for pass in 0..2 {
        for i in 0..FILES {
            let fid = 1 + i;
            let want = if pass == 0 {
                format!("file {i:03}")
            } else {
                format!("FILE {i:03}")
            };
            let got = c.ok(TREAD, &le![d fid, q 0, d 100]);
            assert_eq!(
                got,
                [le![d want.len()], want.into_bytes()].concat(),
                "fid {fid}"
            );
            let new = format!("FILE {i:03}");
            assert_eq!(
                c.ok(TWRITE, &le![d fid, q 0, d new.len(), x new.as_bytes()]),
                le![d new.len()],
                "fid {fid}"
            );
            most = most.max(srv.open_fds());
        }
    }
    assert!(most <= SOFT_LIMIT as usize, "{most} fds open");
    for i in 0..FILES {
        assert_eq!(
            fs::read(export.join(format!("f{i:03}"))).unwrap(),
            format!("FILE {i:03}").into_bytes()
        );
    }
    // Reclaim did its work: far fewer handles than fids are open.
    let now = srv.open_fds();
    assert!(now < 64, "{now} fds open");
    for i in 0..FILES {
        c.ok(TCLUNK, &le![d 1 + i]);
    }
    assert!(
        srv.child.try_wait().unwrap().is_none(),
        "coro9p died: {}",
        srv.log()
    );
    let log = srv.log();
    assert!(!log.contains("Too many open files"), "{log}");
}
