//! Helpers shared by the unit tests and the integration tests (not part of
//! the server).

use std::os::unix::process::CommandExt;
use std::path::Path;

/// Runs `test` of the current test binary again, alone, as nobody
/// (65534), with `env` = `dir` and `dir` as its working directory, and
/// asserts that it passed. The re-executed copy finds `env` set and runs
/// its unprivileged checks. A root that cannot start the binary as nobody
/// (a home nobody cannot reach) skips, saying so.
pub fn rerun_as_nobody(test: &str, env: &str, dir: &Path) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .current_dir(dir)
        .uid(65534)
        .gid(65534)
        .output();
    let out = match out {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("nobody cannot run the test binary ({e}): case skipped");
            return;
        }
        r => r.unwrap(),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
}
