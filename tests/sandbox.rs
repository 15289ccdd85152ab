//! The `--sandbox` option: with it on, the kernel (Landlock) refuses file
//! access outside the export, even where the server's own code would go;
//! and the server still does everything a client asks inside it.

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::fs;
use std::io::ErrorKind;
use std::process::{Command, Stdio};

use common::*;

const CHILD: &str = "CORO9P_SANDBOX_CHILD";

/// Runs in a child process: confine it to the directory in CHILD, then try
/// to escape in the ways a path-handling bug would.
fn escape_attempts(dir: &std::path::Path) -> Result<(), String> {
    coro9p::sandbox::restrict_to(Some(dir)).map_err(|e| format!("sandbox: {e}"))?;
    fs::read(dir.join("inside")).map_err(|e| format!("inside the export: {e}"))?;
    fs::write(dir.join("new"), b"x").map_err(|e| format!("creating inside: {e}"))?;
    let refused = |what: &str, r: std::io::Result<()>| match r {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(format!("{what}: {e}, not EACCES")),
        Ok(()) => Err(format!("{what}: allowed")),
    };
    refused("read /etc/hostname", fs::read("/etc/hostname").map(drop))?;
    refused("follow a symlink out", fs::read(dir.join("out")).map(drop))?;
    refused(
        "walk up with ..",
        fs::read(dir.join("../outside")).map(drop),
    )?;
    refused(
        "create outside",
        fs::write(dir.parent().unwrap().join("created-by-escape"), b"x"),
    )?;
    Ok(())
}

#[test]
fn the_kernel_blocks_escapes_once_the_sandbox_is_on() {
    if let Some(dir) = std::env::var_os(CHILD) {
        match escape_attempts(std::path::Path::new(&dir)) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
    let base = std::env::temp_dir().join(format!("coro9p-sandbox-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let dir = base.join("export");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("inside"), b"ok").unwrap();
    fs::write(base.join("outside"), b"secret").unwrap();
    std::os::unix::fs::symlink(base.join("outside"), dir.join("out")).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_kernel_blocks_escapes_once_the_sandbox_is_on",
            "--nocapture",
        ])
        .env(CHILD, &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!base.join("created-by-escape").exists());
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn a_sandboxed_server_still_serves_its_export() {
    let base = std::env::temp_dir().join(format!("coro9p-sandbox-srv-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let dir = base.join("export");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("f"), b"hello").unwrap();
    let sock = base.join("s.sock");
    let trace = base.join("t.jsonl");
    let child = Command::new(env!("CARGO_BIN_EXE_coro9p"))
        .arg("--fsdev")
        .arg(format!(
            "local,path={},security_model=mapped-xattr",
            dir.display()
        ))
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .arg("--trace-hops")
        .arg(&trace)
        .arg("--sandbox")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut c = connect_when_ready(&sock);
        c.attach();
        c.walk(0, 1, &["f"]);
        c.ok(TLOPEN, &le![d 1, d 2]);
        assert_eq!(c.ok(TREAD, &le![d 1, q 0, d 100]), le![d 5, x b"hello"]);
        c.ok(TWRITE, &le![d 1, q 5, d 1, x b"!"]);
        c.ok(TMKDIR, &le![d 0, s b"d", d 0o750, d 0]);
        c.walk(0, 2, &["d"]);
        c.ok(TLCREATE, &le![d 2, s b"g", d 2, d 0o640, d 0]);
        c.walk(0, 3, &["f"]);
        c.ok(TXATTRCREATE, &le![d 3, s b"user.k", q 1, d 0]);
        c.ok(TWRITE, &le![d 3, q 0, d 1, x b"v"]);
        c.ok(TCLUNK, &le![d 3]);
        c.ok(
            TSETATTR,
            &le![d 1, d 1, d 0o600, d 0, d 0, q 0, q 0, q 0, q 0, q 0],
        );
        c.walk(0, 4, &[]);
        c.ok(TLOPEN, &le![d 4, d 0o200000]);
        c.ok(TREADDIR, &le![d 4, q 0, d 4000]);
        // Tlcreate turned fid 2 into the new file: walk to the dir again.
        c.walk(0, 5, &["d"]);
        c.ok(TUNLINKAT, &le![d 5, s b"g", d 0]);
    }
    stop_process(child);
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"hello!");
    assert!(dir.join("d").is_dir());
    assert!(
        fs::metadata(&trace).unwrap().len() > 0,
        "the trace was written"
    );
    let _ = fs::remove_dir_all(&base);
}
