//! Every ported case against coro9p, as `make qtest` runs them: with -m slow
//! and both P9_MAX_SIZE values. Needs the coro9p binary built next to
//! qos-test (`cargo test --workspace` builds it).

use std::process::Command;

fn run(args: &[&str]) -> (String, bool) {
    let exe = env!("CARGO_BIN_EXE_qos-test");
    let coro9p = std::path::Path::new(exe).with_file_name("coro9p");
    assert!(
        coro9p.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        coro9p.display()
    );
    let out = Command::new(exe).args(args).output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

fn check(args: &[&str], want_passed: usize) {
    let (out, ok) = run(args);
    let last = out.lines().last().unwrap_or_default().to_string();
    assert!(ok, "qos-test {args:?} failed:\n{out}");
    assert_eq!(
        last,
        format!("{want_passed} passed, 0 failed, 2 skipped"),
        "qos-test {args:?}:\n{out}"
    );
    // The only skips are the two config cases (no virtio config space on a
    // socket).
    let skips: Vec<&str> = out.lines().filter(|l| l.contains(": SKIP")).collect();
    assert!(
        skips.iter().all(|l| l.contains("/config: SKIP")),
        "{skips:?}"
    );
}

#[test]
fn all_cases_pass_against_coro9p_with_p9_max_size_32768() {
    check(&["-m", "slow"], 32);
}

#[test]
fn all_cases_pass_against_coro9p_with_p9_max_size_4096() {
    check(&["-m", "slow", "--max-size", "4096"], 32);
}

#[test]
fn listing_and_selecting_by_prefix() {
    let (out, ok) = run(&["-l"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 34);
    let (out, ok) = run(&[
        "-p",
        "/x86_64/pc/i440FX-pcihost/pci-bus-pc/pci-bus/virtio-9p-pci/virtio-9p/virtio-9p-tests/synth/walk",
    ]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().last(), Some("6 passed, 0 failed, 0 skipped"));
}

/// QEMU 7.2 (Debian's) under qtest: every case of its suite passes; the
/// later ones are skipped with their reason. Needs qemu-system-x86 and the
/// qtest module, which `make test` installs and builds first.
#[test]
fn the_cases_of_qemu_7_2_pass_against_qemu_7_2() {
    let (out, ok) = run(&["-m", "slow", "--max-size", "4096", "--target", "qemu"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().last(),
        Some("26 passed, 0 failed, 8 skipped"),
        "{out}"
    );
}

/// Every reply of every case that runs on QEMU 7.2, byte for byte against
/// coro9p --compat 7.2 (qid version and path normalised on local exports).
#[test]
fn coro9p_answers_like_qemu_7_2_byte_for_byte() {
    let (out, ok) = run(&["-m", "slow", "--max-size", "4096", "--compare"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().last(),
        Some("24 passed, 0 failed, 10 skipped"),
        "{out}"
    );
}
