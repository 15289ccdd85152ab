//! `qos-test`: QEMU's virtio-9p qos-test cases, run against a 9P server.

use std::path::PathBuf;
use std::process::ExitCode;

use qtest_compat::runner::{self, Options, Target};

const USAGE: &str = "\
usage: qos-test [-l] [-p PATH ...] [-m slow] [--verbose] [--target coro9p|qemu|ffi]
                [--compare] [--max-size 32768|4096] [--compat master|7.2]
                [--coro9p BIN] [--qemu BIN]

  -l              list the case paths
  -p PATH         run the cases whose path is PATH or starts with it (repeatable)
  -m slow         also run the slow cases (xattr_limit, deep_absolute_path)
  --verbose       print every message sent and received, in hex
  --target T      where to run: coro9p (a coro9p server on a Unix socket) or
                  qemu (Debian's QEMU 7.2 under qtest; its qtest module comes
                  from qtest-compat/scripts/build-qtest-accel.sh, found in
                  QEMU_MODULE_DIR or the script's cache) or ffi (coro9p's C
                  ABI behind a C harness playing virtio-9p; built next to
                  this program from tests/ffi/harness.c and libcoro9p.a)
  --compare       run each case on QEMU 7.2 and on coro9p --compat 7.2 and
                  compare every reply byte for byte
  --max-size N    the client's P9_MAX_SIZE: 32768 (QEMU master) or 4096 (7.2)
  --compat V      coro9p's --compat; 7.2 also skips the cases 7.2 lacks
  --coro9p BIN    the coro9p binary (default: next to this one)
  --qemu BIN      the QEMU binary (default: qemu-system-x86_64)";

fn main() -> ExitCode {
    let mut opts = Options {
        target: Target::Coro9p,
        max_size: 32768,
        slow: false,
        paths: Vec::new(),
        verbose: false,
        coro9p: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("coro9p")))
            .unwrap_or_else(|| PathBuf::from("coro9p")),
        compat: "master".into(),
        qemu: qtest_compat::qemu::default_config(),
    };
    let mut list = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("qos-test: {name} needs a value."))
        };
        let r: Result<(), String> = (|| {
            match a.as_str() {
                "-l" | "--list" => list = true,
                "-p" => opts.paths.push(value("-p")?),
                "-m" => match value("-m")?.as_str() {
                    "slow" => opts.slow = true,
                    "quick" | "thorough" => {}
                    m => return Err(format!("qos-test: unknown mode '{m}'.")),
                },
                "--verbose" => opts.verbose = true,
                "--target" => match value("--target")?.as_str() {
                    "coro9p" => opts.target = Target::Coro9p,
                    "qemu" => opts.target = Target::Qemu,
                    "ffi" => opts.target = Target::Ffi,
                    t => return Err(format!("qos-test: target '{t}' is not available.")),
                },
                "--compare" => opts.target = Target::Compare,
                "--qemu" => opts.qemu.binary = PathBuf::from(value("--qemu")?),
                "--max-size" => {
                    opts.max_size = match value("--max-size")?.as_str() {
                        "32768" => 32768,
                        "4096" => 4096,
                        v => {
                            return Err(format!(
                                "qos-test: --max-size takes 32768 or 4096, not '{v}'."
                            ))
                        }
                    }
                }
                "--compat" => {
                    opts.compat = match value("--compat")?.as_str() {
                        v @ ("master" | "7.2") => v.to_string(),
                        v => {
                            return Err(format!(
                                "qos-test: --compat takes master or 7.2, not '{v}'."
                            ))
                        }
                    }
                }
                "--coro9p" => opts.coro9p = PathBuf::from(value("--coro9p")?),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => {
                    return Err(format!(
                        "qos-test: unknown argument '{other}' (see --help)."
                    ))
                }
            }
            Ok(())
        })();
        if let Err(msg) = r {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    }
    if list {
        for (path, _) in runner::select(&opts.paths) {
            println!("{path}");
        }
        return ExitCode::SUCCESS;
    }
    let sum = runner::run(&opts, &mut std::io::stdout());
    if sum.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
