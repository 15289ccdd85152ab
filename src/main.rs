//! The `coro9p` command.

use std::process::ExitCode;

const USAGE: &str = "usage: coro9p [--help] [--version]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {
            println!(
                "coro9p {}: the 9P server is not built yet, so there is nothing to serve. \
                 Only the coroutine runtime exists so far; `make test` and `make bench` exercise it.",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            println!("coro9p {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("coro9p: unknown argument '{other}' ({USAGE}).");
            ExitCode::from(2)
        }
    }
}
