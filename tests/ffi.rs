//! coro9p's C ABI, from C: `include/coro9p.h` against the Rust side, and
//! the C harness (`tests/ffi/harness.c`, a virtio-9p-device played in C on
//! libcoro9p) compiled here with the system C compiler and driven as a
//! guest would drive it: flush ordering on the used ring, a reset with
//! requests in flight, PDU exhaustion, argument checks, every qos-test case
//! through the harness (`qos-test --target ffi`), and all of it under
//! valgrind.
//!
//! The qos-test cases need the `qos-test` binary next to `coro9p` (`cargo
//! test --workspace` builds it; `cargo build --workspace` before `cargo
//! test --test ffi`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::OnceLock;
use std::time::Duration;

use coro9p::transport::ffi::{Coro9pMsgHeader, Coro9pPdu, Coro9pStats, Coro9pTransport};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn repo(rel: &str) -> PathBuf {
    Path::new(REPO).join(rel)
}

// ---- building the C side -------------------------------------------------

/// Where the test's own build products go (next to the test binary).
fn out_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().join("ffi-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The library cargo built for this test run (deps/, next to the test).
fn lib(ext: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().join(format!("libcoro9p.{ext}"));
    assert!(p.exists(), "{} is missing (crate-type)", p.display());
    p
}

/// Compiles `src` with `extra` arguments into `name`, warnings as errors.
fn cc(src: &str, name: &str, extra: &[&str]) -> PathBuf {
    let bin = out_dir().join(name);
    let tmp = out_dir().join(format!(".{name}.{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-I"])
        .arg(repo("include"))
        .arg(repo(src))
        .args(extra)
        .arg("-o")
        .arg(&tmp)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(
        out.status.success(),
        "{cc} {src}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &bin).unwrap();
    bin
}

/// The harness linked with libcoro9p.a.
fn harness_static() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let a = lib("a");
        cc(
            "tests/ffi/harness.c",
            "harness-static",
            &[a.to_str().unwrap(), "-lpthread", "-ldl", "-lm"],
        )
    })
}

/// The harness linked with libcoro9p.so.
fn harness_shared() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let so = lib("so");
        let dir = so.parent().unwrap().to_str().unwrap().to_string();
        cc(
            "tests/ffi/harness.c",
            "harness-shared",
            &[
                "-L",
                &dir,
                &format!("-Wl,-rpath,{dir}"),
                "-lcoro9p",
                "-lpthread",
            ],
        )
    })
}

// ---- the header against the Rust side -----------------------------------

/// Drops C comments and preprocessor lines.
fn strip_c(src: &str) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        let j = rest[i..].find("*/").expect("unterminated comment");
        rest = &rest[i + j + 2..];
    }
    out.push_str(rest);
    out.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn squash(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.replace(" *", "*").replace('*', " *").replace("* *", "**")
}

/// A C parameter without its name: "const char *fsdev" -> "const char *".
fn c_param_type(p: &str) -> String {
    let p = squash(p);
    let cut = p
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    squash(p[..cut].trim())
}

/// C function signatures: name -> (return type, parameter types).
type Sigs = BTreeMap<String, (String, Vec<String>)>;

fn c_sig(ret: &str, params: &str) -> (String, Vec<String>) {
    let params = if params.trim() == "void" {
        Vec::new()
    } else {
        params.split(',').map(c_param_type).collect()
    };
    (squash(ret.trim()), params)
}

/// The functions the header declares.
fn header_functions(h: &str) -> Sigs {
    let mut out = Sigs::new();
    for stmt in strip_c(h).split(';') {
        let stmt = stmt.trim();
        if stmt.contains(['{', '}']) || stmt.contains("typedef") || stmt.contains("(*") {
            continue;
        }
        let Some(open) = stmt.find('(') else { continue };
        let head = &stmt[..open];
        let name_at = head
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = &head[name_at..];
        if !name.starts_with("coro9p_") {
            continue;
        }
        let params = &stmt[open + 1..stmt.rfind(')').unwrap()];
        out.insert(name.to_string(), c_sig(&head[..name_at], params));
    }
    out
}

/// The callback fields of `coro9p_transport`, in order.
fn header_callbacks(h: &str) -> Vec<(String, (String, Vec<String>))> {
    let src = strip_c(h);
    let start = src.find("typedef struct coro9p_transport {").unwrap();
    let body = &src[start..start + src[start..].find('}').unwrap()];
    let body = &body[body.find('{').unwrap() + 1..];
    body.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|f| {
            let star = f.find("(*").unwrap();
            let close = f[star..].find(')').unwrap() + star;
            let name = f[star + 2..close].trim().to_string();
            let params = &f[f[close..].find('(').unwrap() + close + 1..f.rfind(')').unwrap()];
            (name, c_sig(&f[..star], params))
        })
        .collect()
}

/// A Rust FFI type as C spells it.
fn rust_to_c(t: &str) -> String {
    let t = t.trim();
    if let Some(rest) = t.strip_prefix("*const ") {
        let inner = rust_to_c(rest);
        return squash(&format!("const {inner} *"));
    }
    if let Some(rest) = t.strip_prefix("*mut ") {
        return squash(&format!("{} *", rust_to_c(rest)));
    }
    match t.trim_start_matches("libc::") {
        "c_char" => "char",
        "c_int" => "int",
        "c_uint" => "unsigned int",
        "c_void" => "void",
        "usize" => "size_t",
        "isize" => "ssize_t",
        "u32" => "uint32_t",
        "iovec" => "struct iovec",
        "Coro9pServer" => "coro9p_server",
        "Coro9pPdu" => "coro9p_pdu",
        "Coro9pTransport" => "coro9p_transport",
        "Coro9pMsgHeader" => "coro9p_msg_header",
        "Coro9pStats" => "coro9p_stats",
        other => panic!("no C spelling for the Rust type {other}"),
    }
    .to_string()
}

/// Parses a Rust parameter list and return type into C spellings.
fn rust_sig(params: &str, ret: &str) -> (String, Vec<String>) {
    let params = params
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| rust_to_c(p.split_once(':').expect("name: type").1))
        .collect();
    let ret = match ret.trim() {
        "" => "void".to_string(),
        r => rust_to_c(r),
    };
    (ret, params)
}

/// The `#[no_mangle]` functions of the Rust side.
fn rust_functions(src: &str) -> Sigs {
    let mut out = Sigs::new();
    let marker = "pub unsafe extern \"C\" fn ";
    let mut rest = src;
    while let Some(i) = rest.find(marker) {
        rest = &rest[i + marker.len()..];
        let open = rest.find('(').unwrap();
        let name = rest[..open].to_string();
        let close = rest.find(')').unwrap();
        let brace = rest.find('{').unwrap();
        let ret = rest[close + 1..brace].trim().trim_start_matches("->");
        out.insert(name, rust_sig(&rest[open + 1..close], ret));
    }
    out
}

/// The callback fields of `Coro9pTransport` and their type aliases.
fn rust_callbacks(src: &str) -> Vec<(String, (String, Vec<String>))> {
    let mut aliases = BTreeMap::new();
    let mut rest = src;
    while let Some(i) = rest.find("pub type ") {
        rest = &rest[i + "pub type ".len()..];
        let eq = rest.find('=').unwrap();
        let name = rest[..eq].trim().to_string();
        let def = &rest[eq + 1..rest.find(';').unwrap()];
        let open = def.find('(').unwrap();
        let close = def.rfind(')').unwrap();
        let ret = def[close + 1..].trim().trim_start_matches("->");
        aliases.insert(name, rust_sig(&def[open + 1..close], ret));
    }
    let start = src.find("pub struct Coro9pTransport {").unwrap();
    let body = &src[start..start + src[start..].find("\n}").unwrap()];
    body.lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("pub "))
        .filter(|l| l.contains(": Option<"))
        .map(|l| {
            let (name, ty) = l.split_once(':').unwrap();
            let alias = ty
                .trim()
                .trim_start_matches("Option<")
                .trim_end_matches(">,");
            (name.to_string(), aliases[alias].clone())
        })
        .collect()
}

fn defines(h: &str) -> BTreeMap<String, String> {
    h.lines()
        .filter_map(|l| l.strip_prefix("#define CORO9P_"))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((format!("CORO9P_{}", it.next()?), it.next()?.to_string()))
        })
        .filter(|(k, _)| k != "CORO9P_H")
        .collect()
}

fn rust_consts(src: &str) -> BTreeMap<String, String> {
    src.lines()
        .filter_map(|l| l.trim().strip_prefix("pub const CORO9P_"))
        .map(|l| {
            let (name, rest) = l.split_once(':').unwrap();
            let value = rest.split_once('=').unwrap().1.trim().trim_end_matches(';');
            (format!("CORO9P_{name}"), value.to_string())
        })
        .collect()
}

#[test]
fn the_header_declares_what_the_rust_side_exports() {
    let h = std::fs::read_to_string(repo("include/coro9p.h")).unwrap();
    let rs = std::fs::read_to_string(repo("src/transport/ffi.rs")).unwrap();
    let abi = std::fs::read_to_string(repo("src/transport/ffi/abi.rs")).unwrap();

    let c = header_functions(&h);
    let r = rust_functions(&rs);
    assert_eq!(c.len(), 12, "{c:#?}");
    assert_eq!(
        c, r,
        "prototypes: header (left) vs src/transport/ffi.rs (right)"
    );

    let c = header_callbacks(&h);
    let r = rust_callbacks(&abi);
    assert_eq!(c.len(), 8, "{c:#?}");
    assert_eq!(c, r, "coro9p_transport: header (left) vs abi.rs (right)");

    assert_eq!(defines(&h), rust_consts(&abi), "constants");
}

#[test]
fn the_struct_layouts_match_the_header() {
    let bin = cc("tests/ffi/layout.c", "layout", &[]);
    let out = Command::new(bin).output().unwrap();
    let c: BTreeMap<String, usize> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    let mut r = BTreeMap::new();
    macro_rules! layout {
        ($c:literal, $t:ty, $($f:ident),*) => {
            r.insert($c.to_string(), size_of::<$t>());
            $(r.insert(format!("{}.{}", $c, stringify!($f)), offset_of!($t, $f));)*
        };
    }
    layout!(
        "coro9p_pdu",
        Coro9pPdu,
        size,
        tag,
        id,
        reserved,
        idx,
        s,
        opaque
    );
    layout!("coro9p_msg_header", Coro9pMsgHeader, size, id, tag);
    layout!(
        "coro9p_transport",
        Coro9pTransport,
        pdu_marshal,
        pdu_unmarshal,
        init_in_iov_from_pdu,
        init_out_iov_from_pdu,
        push_and_notify,
        msize_limit,
        response_buffer_size,
        transport_error
    );
    layout!(
        "coro9p_stats",
        Coro9pStats,
        active_requests,
        fids,
        msize,
        dialect,
        open_handles,
        tasks
    );
    assert_eq!(c, r, "C (left) vs Rust (right)");
}

// ---- driving the harness -------------------------------------------------

enum Msg {
    Used(u16, Vec<u8>),
    Error(String),
    Reply(u8, Vec<u8>),
    Gone,
}

#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    rc: i32,
    active: u32,
    fids: u32,
    msize: u32,
    dialect: u32,
    open_handles: u64,
    tasks: u64,
    busy_slots: u32,
}

fn parse_stats(b: &[u8]) -> Stats {
    let d = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let q = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    Stats {
        rc: d(0) as i32,
        active: d(4),
        fids: d(8),
        msize: d(12),
        dialect: d(16),
        open_handles: q(20),
        tasks: q(28),
        busy_slots: d(36),
    }
}

/// What a reset reports: its code, the requests in flight when it started,
/// the completions pushed while it ran, then the counters after it.
#[derive(Debug)]
struct ResetReport {
    rc: i32,
    active_before: u32,
    pushed_during: u32,
    after: Stats,
    /// Pushes made on the thread that ran the reset, not the harness loop's.
    pushed_elsewhere: u32,
}

/// One harness process, driven as a guest driver.
struct Harness {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Msg>,
    used: Vec<(u16, Vec<u8>)>,
    errors: Vec<String>,
    timeout: Duration,
}

impl Harness {
    fn start(bin: &Path, fsdev: &str, args: &[&str], wrapper: &[String]) -> Harness {
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(["--fsdev", fsdev])
            .args(args)
            .env("RUST_LOG", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || loop {
            let mut head = [0u8; 5];
            if out.read_exact(&mut head).is_err() {
                let _ = tx.send(Msg::Gone);
                return;
            }
            let len = u32::from_le_bytes(head[1..].try_into().unwrap()) as usize;
            let mut body = vec![0u8; len];
            if out.read_exact(&mut body).is_err() {
                let _ = tx.send(Msg::Gone);
                return;
            }
            let m = match head[0] {
                b'U' => Msg::Used(u16::from_le_bytes([body[0], body[1]]), body.split_off(6)),
                b'E' => Msg::Error(String::from_utf8_lossy(&body).into_owned()),
                k => Msg::Reply(k, body),
            };
            if tx.send(m).is_err() {
                return;
            }
        });
        Harness {
            child,
            stdin,
            rx,
            used: Vec::new(),
            errors: Vec::new(),
            timeout: Duration::from_secs(if wrapper.is_empty() { 20 } else { 180 }),
        }
    }

    fn write(&mut self, kind: u8, payload: &[u8]) {
        let mut m = vec![kind];
        m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        m.extend_from_slice(payload);
        self.stdin.write_all(&m).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Takes in one message; control answers are returned.
    fn pump(&mut self) -> Option<(u8, Vec<u8>)> {
        match self.rx.recv_timeout(self.timeout) {
            Ok(Msg::Used(h, d)) => self.used.push((h, d)),
            Ok(Msg::Error(e)) => self.errors.push(e),
            Ok(Msg::Reply(k, b)) => return Some((k, b)),
            Ok(Msg::Gone) => panic!("the harness exited: {:?}", self.child.try_wait()),
            Err(e) => panic!("the harness went quiet ({e}); errors: {:?}", self.errors),
        }
        None
    }

    fn control(&mut self, kind: u8, payload: &[u8], answer: u8) -> Vec<u8> {
        self.write(kind, payload);
        loop {
            if let Some((k, b)) = self.pump() {
                assert_eq!(k, answer, "answer to {}", kind as char);
                return b;
            }
        }
    }

    /// Queues `frame` on descriptor `head` with a reply buffer of 8 KiB.
    fn submit(&mut self, head: u16, frame: &[u8]) {
        let mut m = head.to_le_bytes().to_vec();
        m.extend_from_slice(&8192u32.to_le_bytes());
        m.extend_from_slice(frame);
        self.write(b'S', &m);
    }

    /// The next used element.
    fn next_used(&mut self) -> (u16, Vec<u8>) {
        while self.used.is_empty() {
            if let Some((k, _)) = self.pump() {
                panic!("unexpected answer {}", k as char);
            }
        }
        self.used.remove(0)
    }

    /// Submits and waits for the reply, which must be `id + 1`.
    fn rpc(&mut self, head: u16, frame: &[u8]) -> Vec<u8> {
        self.submit(head, frame);
        let (h, reply) = self.next_used();
        assert_eq!(h, head);
        assert_eq!(reply[4], frame[4] + 1, "reply {reply:02x?} to {frame:02x?}");
        reply
    }

    fn stats(&mut self) -> Stats {
        parse_stats(&self.control(b'T', &[], b't'))
    }

    fn hold(&mut self, on: bool) {
        self.control(b'H', &[on as u8], b'h');
    }

    fn reset(&mut self) -> ResetReport {
        self.reset_on(false)
    }

    /// A reset run on a second thread of the harness while its loop waits.
    fn reset_on(&mut self, other_thread: bool) -> ResetReport {
        let r = self.control(b'R', &[u8::from(other_thread)], b'r');
        let d = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().unwrap());
        ResetReport {
            rc: d(0) as i32,
            active_before: d(4),
            pushed_during: d(8),
            after: parse_stats(&r[16..56]),
            pushed_elsewhere: d(56),
        }
    }

    /// Ends the harness; returns coro9p_destroy's code and the exit status.
    fn quit(mut self) -> (i32, std::process::ExitStatus) {
        let q = self.control(b'Q', &[], b'q');
        let status = self.child.wait().unwrap();
        (i32::from_le_bytes(q[..4].try_into().unwrap()), status)
    }
}

// ---- 9P frames -----------------------------------------------------------

fn frame(id: u8, tag: u16, body: &[u8]) -> Vec<u8> {
    let mut f = ((7 + body.len()) as u32).to_le_bytes().to_vec();
    f.push(id);
    f.extend_from_slice(&tag.to_le_bytes());
    f.extend_from_slice(body);
    f
}

fn s(v: &str) -> Vec<u8> {
    let mut b = (v.len() as u16).to_le_bytes().to_vec();
    b.extend_from_slice(v.as_bytes());
    b
}

fn tversion(msize: u32) -> Vec<u8> {
    frame(
        100,
        0xffff,
        &[&msize.to_le_bytes()[..], &s("9P2000.L")].concat(),
    )
}

fn tattach(tag: u16, fid: u32) -> Vec<u8> {
    let body = [
        &fid.to_le_bytes()[..],
        &u32::MAX.to_le_bytes(),
        &s(""),
        &s(""),
        &0u32.to_le_bytes(),
    ]
    .concat();
    frame(104, tag, &body)
}

fn twalk(tag: u16, fid: u32, newfid: u32, names: &[&str]) -> Vec<u8> {
    let mut body = [&fid.to_le_bytes()[..], &newfid.to_le_bytes()].concat();
    body.extend_from_slice(&(names.len() as u16).to_le_bytes());
    for n in names {
        body.extend_from_slice(&s(n));
    }
    frame(110, tag, &body)
}

fn tlopen(tag: u16, fid: u32, flags: u32) -> Vec<u8> {
    frame(12, tag, &[fid.to_le_bytes(), flags.to_le_bytes()].concat())
}

fn twrite(tag: u16, fid: u32, offset: u64, data: &[u8]) -> Vec<u8> {
    let body = [
        &fid.to_le_bytes()[..],
        &offset.to_le_bytes(),
        &(data.len() as u32).to_le_bytes(),
        data,
    ]
    .concat();
    frame(118, tag, &body)
}

fn tread(tag: u16, fid: u32, offset: u64, count: u32) -> Vec<u8> {
    let body = [
        &fid.to_le_bytes()[..],
        &offset.to_le_bytes(),
        &count.to_le_bytes(),
    ]
    .concat();
    frame(116, tag, &body)
}

fn tgetattr(tag: u16, fid: u32) -> Vec<u8> {
    frame(
        24,
        tag,
        &[&fid.to_le_bytes()[..], &0x7ffu64.to_le_bytes()].concat(),
    )
}

fn treaddir(tag: u16, fid: u32, count: u32) -> Vec<u8> {
    let body = [
        &fid.to_le_bytes()[..],
        &0u64.to_le_bytes(),
        &count.to_le_bytes(),
    ]
    .concat();
    frame(40, tag, &body)
}

fn tflush(tag: u16, oldtag: u16) -> Vec<u8> {
    frame(108, tag, &oldtag.to_le_bytes())
}

const O_WRONLY: u32 = 1;
const O_RDWR: u32 = 2;
const O_DIRECTORY: u32 = 0o200000;
const RLERROR: u8 = 7;

// ---- the flows -----------------------------------------------------------

/// Tflush of a write that the synth FLUSH file blocks until cancelled
/// (byte 1), or lets through (byte 0): the used ring in push order.
fn flush_flow(h: &mut Harness, byte: u8) -> Vec<(u16, Vec<u8>)> {
    h.rpc(0, &tversion(8192));
    h.rpc(1, &tattach(0, 0));
    h.rpc(2, &twalk(0, 0, 1, &["FLUSH"]));
    h.rpc(3, &tlopen(0, 1, O_WRONLY));
    h.submit(4, &twrite(5, 1, 0, &[byte]));
    h.submit(5, &tflush(6, 5));
    vec![h.next_used(), h.next_used()]
}

fn check_flush_success(h: &mut Harness) {
    let used = flush_flow(h, 1);
    // The write's descriptor comes back first, with length 0 (discarded),
    // then the Rflush: exactly what virtqueue_push shows a QEMU guest.
    assert_eq!(used[0], (4, Vec::new()), "{used:02x?}");
    assert_eq!(used[1], (5, vec![7, 0, 0, 0, 109, 6, 0]), "{used:02x?}");
}

fn check_flush_ignored(h: &mut Harness) {
    let used = flush_flow(h, 0);
    assert_eq!(
        used[0],
        (4, vec![11, 0, 0, 0, 119, 5, 0, 1, 0, 0, 0]),
        "{used:02x?}"
    );
    assert_eq!(used[1], (5, vec![7, 0, 0, 0, 109, 6, 0]), "{used:02x?}");
}

/// A local export with a few files, for open handles.
fn local_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coro9p-ffi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for i in 0..8 {
        std::fs::write(dir.join(format!("f{i}")), vec![b'x'; 10_000]).unwrap();
    }
    dir
}

/// Opens files, holds dispatch, queues requests of every kind (walks that
/// make new fids, reads, getattrs, readdirs), resets with all of them in
/// flight, and checks: every one completed with its real reply (a reset
/// cancels nothing), every fid freed and every file closed, msize and the
/// dialect kept.
fn check_reset_in_flight(h: &mut Harness, other_thread: bool) {
    h.rpc(0, &tversion(8192));
    h.rpc(1, &tattach(0, 0));
    for i in 0..8u32 {
        h.rpc(2, &twalk(0, 0, 10 + i, &[&format!("f{i}")]));
        h.rpc(3, &tlopen(0, 10 + i, O_RDWR));
    }
    h.rpc(2, &twalk(0, 0, 30, &["sub"]));
    h.rpc(3, &tlopen(0, 30, O_DIRECTORY));
    let before = h.stats();
    assert_eq!(before.fids, 10, "{before:?}");
    assert!(before.open_handles >= 9, "{before:?}");

    h.hold(true);
    let mut sent = BTreeMap::new();
    let mut head = 10u16;
    let mut tag = 100u16;
    let mut queue = |h: &mut Harness, f: Vec<u8>| {
        sent.insert(head, f[4]);
        h.submit(head, &f);
        head += 1;
    };
    for i in 0..8u32 {
        queue(h, tread(tag, 10 + i, 0, 4096));
        tag += 1;
        queue(h, tgetattr(tag, 10 + i));
        tag += 1;
        queue(h, twalk(tag, 0, 40 + i, &[&format!("f{i}")]));
        tag += 1;
    }
    queue(h, treaddir(tag, 30, 4096));
    let n = sent.len();
    let held = h.stats();
    // Nothing has come back: each request ran to its first hop and waits
    // for the main loop, which the host is not running.
    assert!(h.used.is_empty(), "{:?}", h.used);
    assert_eq!(held.rc, 0, "{held:?}");
    assert_eq!(held.active as usize, n, "{held:?}");
    assert_eq!(
        held.tasks as usize, n,
        "one suspended coroutine each: {held:?}"
    );

    let r = h.reset_on(other_thread);
    h.hold(false);
    assert_eq!(r.rc, 0, "{r:?}");
    assert_eq!(r.active_before as usize, n, "{r:?}");
    assert_eq!(r.pushed_during as usize, n, "{r:?}");
    // The suspended coroutines resumed on the resetting thread.
    let elsewhere = if other_thread { n } else { 0 };
    assert_eq!(r.pushed_elsewhere as usize, elsewhere, "{r:?}");
    assert_eq!(r.after.active, 0, "{r:?}");
    assert_eq!(r.after.tasks, 0, "every coroutine ended: {r:?}");
    assert_eq!(r.after.fids, 0, "every fid freed: {r:?}");
    assert_eq!(r.after.open_handles, 0, "every file closed: {r:?}");
    assert_eq!(r.after.busy_slots, 0, "{r:?}");
    assert_eq!(
        (r.after.msize, r.after.dialect),
        (8192, 2),
        "msize and dialect kept: {r:?}"
    );
    let got: BTreeMap<u16, u8> = h.used.drain(..).map(|(hd, d)| (hd, d[4])).collect();
    let want: BTreeMap<u16, u8> = sent.iter().map(|(&hd, &id)| (hd, id + 1)).collect();
    assert_eq!(got, want, "each request completed once, with its own reply");

    // The fids are gone; errors still come as Rlerror (the dialect stayed).
    let r = {
        h.submit(0, &tgetattr(1, 0));
        h.next_used().1
    };
    assert_eq!(r[4], RLERROR, "{r:02x?}");
    h.rpc(1, &tattach(0, 0));
}

fn no_errors(h: &Harness) {
    assert!(h.errors.is_empty(), "device errors: {:?}", h.errors);
}

fn finish(h: Harness) {
    no_errors(&h);
    let (rc, status) = h.quit();
    assert_eq!(rc, 0, "coro9p_destroy");
    assert!(status.success(), "harness exit: {status:?}");
}

#[test]
fn flush_success_pushes_the_writes_descriptor_with_length_0_before_the_rflush() {
    let mut h = Harness::start(harness_static(), "synth", &[], &[]);
    check_flush_success(&mut h);
    finish(h);
}

#[test]
fn flush_ignored_pushes_the_rwrite_before_the_rflush() {
    let mut h = Harness::start(harness_static(), "synth", &[], &[]);
    check_flush_ignored(&mut h);
    finish(h);
}

/// A reset with requests in flight on a fresh local export, from the
/// harness loop's thread or from a second one.
fn reset_in_flight_on_local(name: &str, other_thread: bool) {
    let dir = local_dir(name);
    let fsdev = format!("local,id=fsdev0,path={},security_model=none", dir.display());
    let mut h = Harness::start(harness_static(), &fsdev, &[], &[]);
    check_reset_in_flight(&mut h, other_thread);
    // The server goes on serving on the harness loop's thread.
    h.rpc(2, &tgetattr(2, 0));
    finish(h);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_reset_with_requests_in_flight_completes_them_and_frees_every_fid() {
    reset_in_flight_on_local("reset", false);
}

/// QEMU resets the device from a vCPU thread, under the BQL, while the
/// main loop thread waits for the lock.
#[test]
fn a_reset_from_another_thread_completes_requests_in_flight_there() {
    reset_in_flight_on_local("reset-elsewhere", true);
}

#[test]
fn pdu_alloc_returns_null_when_all_128_are_in_use() {
    let mut h = Harness::start(harness_static(), "synth", &[], &[]);
    h.rpc(0, &tversion(8192));
    h.rpc(1, &tattach(0, 0));
    let a = h.control(b'A', &[], b'a');
    assert_eq!(a, [&128u32.to_le_bytes()[..], &0u32.to_le_bytes()].concat());
    // 128 requests in flight take every PDU.
    h.hold(true);
    for head in 0..128u16 {
        h.submit(head, &tgetattr(head, 0));
    }
    let a = h.control(b'A', &[], b'a');
    assert_eq!(a, [&0u32.to_le_bytes()[..], &0u32.to_le_bytes()].concat());
    h.hold(false);
    let heads: BTreeSet<u16> = (0..128).map(|_| h.next_used().0).collect();
    assert_eq!(heads.len(), 128);
    let a = h.control(b'A', &[], b'a');
    assert_eq!(a, [&128u32.to_le_bytes()[..], &0u32.to_le_bytes()].concat());
    finish(h);
}

#[test]
fn bad_arguments_threads_and_re_entry_are_refused_with_error_codes() {
    let mut h = Harness::start(harness_static(), "synth", &[], &[]);
    let x = h.control(b'X', &[], b'x');
    let failures = u32::from_le_bytes(x[..4].try_into().unwrap());
    assert_eq!(failures, 0, "{}", String::from_utf8_lossy(&x[4..]));
    // The server is unharmed.
    h.rpc(0, &tversion(8192));
    finish(h);
}

#[test]
fn the_shared_library_in_blocking_mode_with_qemu_7_2s_five_callbacks() {
    let mut h = Harness::start(
        harness_shared(),
        "synth",
        &["--blocking", "--compat", "7.2", "--table", "7.2"],
        &[],
    );
    check_flush_success(&mut h);
    let st = h.stats();
    assert_eq!((st.msize, st.dialect), (8192, 2), "{st:?}");
    let r = h.reset();
    assert_eq!((r.rc, r.after.fids), (0, 0), "{r:?}");
    check_flush_ignored(&mut h);
    let cfg = h.control(b'C', &[], b'c');
    assert_eq!(cfg, b"\x05\x00qtest");
    finish(h);
}

// ---- qos-test through the harness, and valgrind ---------------------------

fn qos_test() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_coro9p")).with_file_name("qos-test");
    assert!(
        exe.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        exe.display()
    );
    exe
}

fn run_qos(args: &[&str], wrapper: Option<&str>) -> String {
    let mut cmd = Command::new(qos_test());
    cmd.args(["--target", "ffi", "-m", "slow"]).args(args);
    if let Some(w) = wrapper {
        cmd.env("QOS_FFI_WRAPPER", w);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "qos-test --target ffi {args:?}:\n{text}"
    );
    text
}

#[test]
fn every_qos_test_case_passes_through_the_c_harness() {
    for args in [&[][..], &["--max-size", "4096"]] {
        let out = run_qos(args, None);
        let summary = out
            .lines()
            .find(|l| l.contains(" passed, "))
            .unwrap_or_default();
        assert_eq!(summary, "34 passed, 0 failed, 0 skipped", "{out}");
    }
    let out = run_qos(&["--compat", "7.2", "--max-size", "4096"], None);
    assert!(out.contains("26 passed, 0 failed, 8 skipped"), "{out}");
}

fn valgrind(log_dir: &Path) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--error-exitcode=99".into(),
        "--leak-check=full".into(),
        "--show-leak-kinds=definite,indirect,possible".into(),
        "--errors-for-leak-kinds=definite,indirect,possible".into(),
        format!(
            "--suppressions={}",
            repo("tests/ffi/valgrind.supp").display()
        ),
        format!("--log-file={}/vg.%p.log", log_dir.display()),
    ]
}

/// Every valgrind log in `dir`: no error (invalid read or write, use of
/// uninitialised memory, bad free) and no leak, definite, indirect or
/// possible. Returns how many processes ran.
fn check_valgrind_logs(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let log = std::fs::read_to_string(&path).unwrap();
        let clean = log.contains("ERROR SUMMARY: 0 errors from 0 contexts")
            && (log.contains("All heap blocks were freed")
                || (log.contains("definitely lost: 0 bytes in 0 blocks")
                    && log.contains("indirectly lost: 0 bytes in 0 blocks")
                    && log.contains("possibly lost: 0 bytes in 0 blocks")));
        assert!(clean, "{}:\n{log}", path.display());
        n += 1;
    }
    n
}

#[test]
fn the_c_harness_runs_clean_under_valgrind_for_every_case() {
    let which = Command::new("valgrind").arg("--version").output();
    assert!(
        which.is_ok_and(|o| o.status.success()),
        "valgrind is needed (apt-get install valgrind)"
    );
    let logs = out_dir().join(format!("valgrind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).unwrap();
    let wrapper = valgrind(&logs);

    // Every qos-test case, through the harness qos-test builds.
    let out = run_qos(&[], Some(&wrapper.join(" ")));
    assert!(out.contains("34 passed, 0 failed, 0 skipped"), "{out}");
    assert!(!out.contains("ended badly"), "{out}");

    // The flows of this file, error paths included.
    let mut h = Harness::start(harness_static(), "synth", &[], &wrapper);
    check_flush_success(&mut h);
    let x = h.control(b'X', &[], b'x');
    assert_eq!(x[..4], [0, 0, 0, 0], "{}", String::from_utf8_lossy(&x[4..]));
    let a = h.control(b'A', &[], b'a');
    assert_eq!(a[4..], [0, 0, 0, 0]);
    finish(h);
    let dir = local_dir("valgrind");
    let fsdev = format!("local,id=fsdev0,path={},security_model=none", dir.display());
    let mut h = Harness::start(harness_static(), &fsdev, &[], &wrapper);
    check_reset_in_flight(&mut h, true);
    finish(h);
    std::fs::remove_dir_all(dir).unwrap();

    let n = check_valgrind_logs(&logs);
    // One harness per local case (a fresh directory each) and per synth
    // fsdev string, plus the two above.
    assert!(n >= 17, "only {n} valgrind logs");
    std::fs::remove_dir_all(&logs).unwrap();
}
