//! The qos-test-like runner: picks cases by path, starts servers the way
//! qos-test starts QEMU (one instance per distinct command line, reused with
//! a reset between cases), runs each case, and reports.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cases::{self, Case, Ctx, Fsdev, PREFIX};
use crate::client::{Client, Fail};
use crate::ffi::FfiTransport;
use crate::qemu::{QemuConfig, QemuTransport};
use crate::transport::{hex, Coro9pServer, ReqHandle, StreamTransport, Transport};

/// Where the cases run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A coro9p server on a Unix socket.
    Coro9p,
    /// Debian's QEMU 7.2 under qtest, with a virtio-9p-pci device.
    Qemu,
    /// Both: every reply of QEMU 7.2 and of coro9p --compat 7.2 compared.
    Compare,
    /// coro9p through its C ABI, behind a C harness playing virtio-9p.
    Ffi,
}

/// What to run, and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// The target.
    pub target: Target,
    /// P9_MAX_SIZE: 32768 (master) or 4096 (7.2).
    pub max_size: u32,
    /// `-m slow`.
    pub slow: bool,
    /// `-p PATH` (exact paths or prefixes); empty: every case.
    pub paths: Vec<String>,
    /// `--verbose`: every message in hex.
    pub verbose: bool,
    /// The coro9p binary.
    pub coro9p: PathBuf,
    /// `--compat` for coro9p: "master" or "7.2".
    pub compat: String,
    /// How to start QEMU (QEMU and compare targets).
    pub qemu: QemuConfig,
}

/// The closing counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases skipped.
    pub skipped: usize,
}

/// The cases `-p` selects, with their full paths.
pub fn select(paths: &[String]) -> Vec<(String, Case)> {
    cases::all()
        .into_iter()
        .map(|c| (format!("{PREFIX}{}", c.name), c))
        .filter(|(full, _)| paths.is_empty() || paths.iter().any(|p| full.starts_with(p.as_str())))
        .collect()
}

/// A fresh local test directory (`qtest-9p-local-XXXXXX`).
fn local_dir() -> std::io::Result<PathBuf> {
    let template = std::env::temp_dir().join("qtest-9p-local-XXXXXX");
    nix::unistd::mkdtemp(&template).map_err(std::io::Error::from)
}

fn fsdev_string(case: &Case, dir: Option<&Path>) -> String {
    match (case.fsdev, dir) {
        (Fsdev::Synth(""), _) => "synth,id=fsdev0".to_string(),
        (Fsdev::Synth(extra), _) => format!("synth,id=fsdev0,{extra}"),
        (Fsdev::Local(extra), Some(dir)) => {
            let mut s = format!(
                "local,id=fsdev0,path={},security_model=mapped-xattr",
                dir.display()
            );
            if !extra.is_empty() {
                s.push(',');
                s.push_str(extra);
            }
            s
        }
        (Fsdev::Local(_), None) => unreachable!("local cases get a directory"),
    }
}

/// The running instance: its command line, and its transport (which owns
/// QEMU, or a connection to a coro9p server kept here).
struct Instance {
    cmdline: String,
    transport: Box<dyn Transport>,
    _server: Option<Coro9pServer>,
}

fn start_instance(
    opts: &Options,
    target: Target,
    cmdline: &str,
    compat: &str,
) -> Result<Instance, Fail> {
    Ok(match target {
        Target::Ffi => Instance {
            cmdline: cmdline.to_string(),
            transport: Box::new(FfiTransport::start(
                cmdline,
                compat,
                opts.max_size,
                opts.verbose,
            )?),
            _server: None,
        },
        Target::Qemu => Instance {
            cmdline: cmdline.to_string(),
            transport: Box::new(QemuTransport::start(
                &opts.qemu,
                cmdline,
                opts.max_size,
                opts.verbose,
            )?),
            _server: None,
        },
        _ => {
            let server = Coro9pServer::start(&opts.coro9p, cmdline, compat)?;
            let transport = StreamTransport::connect(&server.path, opts.verbose)?;
            Instance {
                cmdline: cmdline.to_string(),
                transport: Box::new(transport),
                _server: Some(server),
            }
        }
    })
}

/// What a transport carried, for --compare.
#[derive(Default)]
struct Log {
    replies: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Records every request and its completion.
struct Recording<'a> {
    inner: &'a mut dyn Transport,
    sent: std::collections::HashMap<ReqHandle, Vec<u8>>,
    log: &'a mut Log,
}

impl Transport for Recording<'_> {
    fn send(&mut self, frame: &[u8]) -> Result<ReqHandle, String> {
        let h = self.inner.send(frame)?;
        self.sent.insert(h, frame.to_vec());
        Ok(h)
    }
    fn wait(&mut self, req: ReqHandle) -> Result<Option<Vec<u8>>, String> {
        let r = self.inner.wait(req)?;
        let sent = self.sent.remove(&req).unwrap_or_default();
        self.log.replies.push((sent, r.clone()));
        Ok(r)
    }
    fn read_done(&mut self, req: ReqHandle) -> Result<Vec<u8>, String> {
        let r = self.inner.read_done(req)?;
        let sent = self.sent.remove(&req).unwrap_or_default();
        self.log.replies.push((sent, Some(r.clone())));
        Ok(r)
    }
    fn reset(&mut self) -> Result<(), String> {
        self.inner.reset()
    }
    fn config(&mut self) -> Option<Vec<u8>> {
        self.inner.config()
    }
}

/// Zeroes what comes from the host rather than from the server on a local
/// export: qid versions and paths (inode numbers, mtimes) and, in Rgetattr,
/// the times.
fn normalise(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    if f.len() < 7 {
        return f;
    }
    let zero_qid = |f: &mut Vec<u8>, at: usize| {
        if at + 13 <= f.len() {
            f[at + 1..at + 13].fill(0);
        }
    };
    match f[4] {
        // Rattach, Rmkdir, Rsymlink, Rmknod, Rlopen, Rlcreate, Ropen, Rcreate
        105 | 73 | 17 | 19 | 13 | 15 | 113 | 115 => zero_qid(&mut f, 7),
        // Rwalk
        111 => {
            let n = u16::from_le_bytes([f[7], f[8]]) as usize;
            for i in 0..n {
                zero_qid(&mut f, 9 + 13 * i);
            }
        }
        // Rgetattr: qid, then times (atime .. btime) at 8+13+4*3+8*5.
        25 => {
            zero_qid(&mut f, 15);
            let times = 7 + 8 + 13 + 12 + 40;
            if times + 64 <= f.len() {
                f[times..times + 64].fill(0);
            }
        }
        // Rreaddir: each entry starts with a qid.
        41 => {
            let mut i = 11;
            while i + 24 <= f.len() {
                zero_qid(&mut f, i);
                let len = u16::from_le_bytes([f[i + 22], f[i + 23]]) as usize;
                i += 24 + len;
            }
        }
        _ => {}
    }
    f
}

/// Runs the selected cases, printing one line per case and the closing line.
pub fn run(opts: &Options, out: &mut dyn Write) -> Summary {
    let mut sum = Summary::default();
    let mut inst: Option<Instance> = None;
    for (path, case) in select(&opts.paths) {
        let ours = matches!(opts.target, Target::Coro9p | Target::Ffi);
        let on_7_2 = opts.compat == "7.2" || !ours;
        let skip = if case.slow && !opts.slow {
            Some("slow case: run with -m slow".to_string())
        } else if on_7_2 && !case.in_7_2 {
            Some("not in QEMU 7.2's suite".to_string())
        } else if !ours && matches!(case.fsdev, Fsdev::Local(_)) && !opts.slow {
            Some("QEMU 7.2 registers the local cases only with -m slow".to_string())
        } else {
            None
        };
        if let Some(why) = skip {
            let _ = writeln!(out, "{path}: SKIP ({why})");
            sum.skipped += 1;
            continue;
        }
        let result = match opts.target {
            Target::Compare => compare_case(opts, &case, &mut inst, out),
            t => run_case(opts, t, &case, &mut inst, None).map(drop),
        };
        match result {
            Ok(()) => {
                let _ = writeln!(out, "{path}: OK");
                sum.passed += 1;
            }
            Err(Fail::Skip(why)) => {
                let _ = writeln!(out, "{path}: SKIP ({why})");
                sum.skipped += 1;
            }
            Err(f) => {
                let _ = writeln!(out, "{path}: FAIL");
                let _ = writeln!(out, "  {f}");
                sum.failed += 1;
                // A failed case may leave the instance in any state.
                inst = None;
            }
        }
    }
    let _ = writeln!(
        out,
        "{} passed, {} failed, {} skipped",
        sum.passed, sum.failed, sum.skipped
    );
    sum
}

/// Runs `case` on `target`, reusing the instance when the command line is
/// the same; with `log`, records every reply.
fn run_case(
    opts: &Options,
    target: Target,
    case: &Case,
    inst: &mut Option<Instance>,
    log: Option<&mut Log>,
) -> Result<(), Fail> {
    let dir = match case.fsdev {
        Fsdev::Local(_) => Some(local_dir().map_err(|e| Fail::Other(format!("mkdtemp: {e}")))?),
        Fsdev::Synth(_) => None,
    };
    let _cleanup = dir.clone().map(RemoveOnDrop);
    if let (Some(before), Some(d)) = (case.before, &dir) {
        before(d).map_err(|e| Fail::Other(format!("before: {e}")))?;
    }
    let cmdline = fsdev_string(case, dir.as_deref());
    let compat = if target == Target::Qemu || opts.target == Target::Compare {
        "7.2"
    } else {
        opts.compat.as_str()
    };
    let reuse = inst.as_ref().is_some_and(|i| i.cmdline == cmdline);
    if reuse {
        inst.as_mut().unwrap().transport.reset()?;
    } else {
        *inst = None;
        *inst = Some(start_instance(opts, target, &cmdline, compat)?);
    }
    let i = inst.as_mut().unwrap();
    let r = match log {
        Some(log) => {
            let mut rec = Recording {
                inner: &mut *i.transport,
                sent: Default::default(),
                log,
            };
            let mut ctx = Ctx {
                c: Client::new(&mut rec, opts.max_size),
                dir: dir.clone(),
            };
            (case.run)(&mut ctx)
        }
        None => {
            let mut ctx = Ctx {
                c: Client::new(&mut *i.transport, opts.max_size),
                dir: dir.clone(),
            };
            (case.run)(&mut ctx)
        }
    };
    if dir.is_some() {
        // Each local case had its own directory: its instance is done.
        *inst = None;
    }
    r
}

/// Runs `case` on QEMU and on coro9p and compares every reply.
fn compare_case(
    opts: &Options,
    case: &Case,
    inst: &mut Option<Instance>,
    out: &mut dyn Write,
) -> Result<(), Fail> {
    let mut qemu_log = Log::default();
    let mut coro_log = Log::default();
    let mut coro_inst = None;
    let q = run_case(opts, Target::Qemu, case, inst, Some(&mut qemu_log));
    let c = run_case(
        opts,
        Target::Coro9p,
        case,
        &mut coro_inst,
        Some(&mut coro_log),
    );
    if let Err(Fail::Skip(why)) = &c {
        // Nothing 9P to compare (the config cases on a socket).
        q.map_err(|f| Fail::Other(format!("on QEMU: {f}")))?;
        return Err(Fail::Skip(format!("on coro9p: {why}")));
    }
    let local = matches!(case.fsdev, Fsdev::Local(_));
    let norm = |f: &Option<Vec<u8>>| {
        f.as_ref()
            .map(|f| if local { normalise(f) } else { f.clone() })
    };
    for (i, ((qs, qr), (_, cr))) in qemu_log
        .replies
        .iter()
        .zip(coro_log.replies.iter())
        .enumerate()
    {
        if norm(qr) != norm(cr) {
            let show = |r: &Option<Vec<u8>>| r.as_ref().map_or("(length 0)".into(), |r| hex(r));
            let _ = writeln!(out, "  message {i}: request {}", hex(qs));
            let _ = writeln!(out, "    qemu:   {}", show(qr));
            let _ = writeln!(out, "    coro9p: {}", show(cr));
            return Err(Fail::Other(format!("reply {i} differs")));
        }
    }
    if qemu_log.replies.len() != coro_log.replies.len() {
        return Err(Fail::Other(format!(
            "{} replies from QEMU, {} from coro9p",
            qemu_log.replies.len(),
            coro_log.replies.len()
        )));
    }
    q.map_err(|f| Fail::Other(format!("on QEMU: {f}")))?;
    c.map_err(|f| Fail::Other(format!("on coro9p: {f}")))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn normalise_zeroes_only_host_derived_qid_fields() {
        // Rwalk with two qids: type kept, version and path zeroed.
        let mut f = vec![0x21, 0, 0, 0, 111, 0, 0, 2, 0];
        f.extend([0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        f.extend([0x00, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
        let n = normalise(&f);
        assert_eq!(&n[..9], &f[..9]);
        assert_eq!(n[9], 0x80);
        assert!(n[10..22].iter().all(|&b| b == 0));
        assert!(n[23..35].iter().all(|&b| b == 0));
        // Other replies are left alone.
        let rwrite = vec![11, 0, 0, 0, 119, 0, 0, 1, 0, 0, 0];
        assert_eq!(normalise(&rwrite), rwrite);
    }
}
