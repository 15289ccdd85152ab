//! The mapped security models on disk are QEMU's: a tree written through
//! Debian's QEMU 7.2 (under qtest, its local driver) reads the same through
//! coro9p with the same model, and a tree written through coro9p reads the
//! same through QEMU. "The same": Tgetattr's mode, uid, gid, size, rdev,
//! link count and qid type, and Treadlink (not inode numbers or times).
//! The two trees written by the same requests also hold the same
//! credential bytes on the host (`user.virtfs.*` xattrs, `.virtfs_metadata`
//! files).
//!
//! Needs qemu-system-x86 and the qtest module (`make test` installs and
//! builds them), and the coro9p binary next to qos-test (`cargo build
//! --workspace`).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::libc;
use qtest_compat::client::{Client, Step};
use qtest_compat::qemu::{default_config, QemuTransport};
use qtest_compat::transport::{Coro9pServer, StreamTransport, Transport};
use qtest_compat::wire::{id, In, Out, NOFID};

const MAX_SIZE: u32 = 8192;
const TSYMLINK: u8 = 16;
const TMKNOD: u8 = 18;
const TREADLINK: u8 = 22;

const UID: u32 = 1234;
const GID: u32 = 2345;

/// Tgetattr's fields that both servers take from the same host tree.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attr {
    qid_type: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    rdev: u64,
    size: u64,
}

/// What a client sees of a tree: per path, the attributes (and the
/// target of a symlink).
type View = BTreeMap<String, (Attr, Option<Vec<u8>>)>;

const PATHS: [&str; 7] = [
    "file",
    "dir",
    "dir/inner",
    "link",
    "dir/abslink",
    "fifo",
    "chr",
];

fn attach(c: &mut Client, uid: u32) -> Step<()> {
    c.tversion()?;
    c.rpc(
        id::TATTACH,
        0,
        Out::new().d(0).d(NOFID).s(b"").s(b"").d(uid),
    )?;
    Ok(())
}

fn setattr(c: &mut Client, fid: u32, valid: u32, mode: u32, uid: u32, gid: u32) -> Step<()> {
    let body = Out::new()
        .d(fid)
        .d(valid)
        .d(mode)
        .d(uid)
        .d(gid)
        .q(0)
        .q(0)
        .q(0)
        .q(0)
        .q(0);
    c.rpc(id::TSETATTR, 0, body)?;
    Ok(())
}

/// Writes the tree with the same requests on either server: attached as
/// UID, every object with group GID and its own mode; then a chmod and a
/// chown.
fn write_tree(c: &mut Client) -> Step<()> {
    attach(c, UID)?;
    c.twalk(0, 1, &[])?;
    c.rpc(
        id::TLCREATE,
        0,
        Out::new().d(1).s(b"file").d(2).d(0o640).d(GID),
    )?;
    c.twrite(1, 0, b"hello")?;
    c.tclunk(1)?;
    c.tmkdir(0, "dir", libc::S_IFDIR | 0o750, GID)?;
    c.twalk(0, 2, &[b"dir"])?;
    c.rpc(
        id::TLCREATE,
        0,
        Out::new().d(2).s(b"inner").d(2).d(0o600).d(GID),
    )?;
    c.twrite(2, 0, b"inner data")?;
    c.tclunk(2)?;
    c.rpc(TSYMLINK, 0, Out::new().d(0).s(b"link").s(b"file").d(GID))?;
    c.twalk(0, 3, &[b"dir"])?;
    c.rpc(
        TSYMLINK,
        0,
        Out::new().d(3).s(b"abslink").s(b"/etc/passwd").d(GID),
    )?;
    c.rpc(
        TMKNOD,
        0,
        Out::new()
            .d(0)
            .s(b"fifo")
            .d(libc::S_IFIFO | 0o620)
            .d(0)
            .d(0)
            .d(GID),
    )?;
    c.rpc(
        TMKNOD,
        0,
        Out::new()
            .d(0)
            .s(b"chr")
            .d(libc::S_IFCHR | 0o600)
            .d(1)
            .d(3)
            .d(GID),
    )?;
    // chmod the file, chown the directory.
    c.twalk(0, 4, &[b"file"])?;
    setattr(c, 4, 0x1, libc::S_IFREG | 0o604, 0, 0)?;
    setattr(c, 3, 0x6, 0, 4321, 5432)?;
    for f in [3, 4] {
        c.tclunk(f)?;
    }
    Ok(())
}

fn read_tree(c: &mut Client) -> Step<View> {
    attach(c, 0)?;
    let mut view = View::new();
    for (i, p) in PATHS.iter().enumerate() {
        let fid = 100 + i as u32;
        let names: Vec<&[u8]> = p.split('/').map(str::as_bytes).collect();
        c.twalk(0, fid, &names)?;
        let body = c.rpc(id::TGETATTR, 0, Out::new().d(fid).q(0x7ff))?;
        let mut r = In::new(&body);
        let _valid = r.q()?;
        let qid = r.qid()?;
        let attr = Attr {
            qid_type: qid[0],
            mode: r.d()?,
            uid: r.d()?,
            gid: r.d()?,
            nlink: r.q()?,
            rdev: r.q()?,
            size: r.q()?,
        };
        let target = if qid[0] == 0x02 {
            let body = c.rpc(TREADLINK, 0, Out::new().d(fid))?;
            Some(In::new(&body).s()?)
        } else {
            None
        };
        c.tclunk(fid)?;
        view.insert(p.to_string(), (attr, target));
    }
    Ok(view)
}

fn step<T>(what: &str, r: Step<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn qemu_fsdev(dir: &Path, model: &str) -> String {
    format!(
        "local,id=fsdev0,path={},security_model={model}",
        dir.display()
    )
}

/// Runs `f` with a client on QEMU 7.2 serving `dir`.
fn with_qemu<T>(dir: &Path, model: &str, f: impl FnOnce(&mut Client) -> Step<T>) -> T {
    let cfg = default_config();
    let mut t = QemuTransport::start(&cfg, &qemu_fsdev(dir, model), MAX_SIZE, false)
        .unwrap_or_else(|e| {
            panic!(
                "QEMU 7.2 does not start ({e}); it needs qemu-system-x86 and the qtest \
                 module (qtest-compat/scripts/build-qtest-accel.sh)"
            )
        });
    let mut c = Client::new(&mut t as &mut dyn Transport, MAX_SIZE);
    step(&format!("QEMU 7.2, {model}"), f(&mut c))
}

/// Runs `f` with a client on the coro9p binary (--compat 7.2) serving `dir`.
fn with_coro9p<T>(dir: &Path, model: &str, f: impl FnOnce(&mut Client) -> Step<T>) -> T {
    let exe = env!("CARGO_BIN_EXE_qos-test");
    let bin = Path::new(exe).with_file_name("coro9p");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    let srv = Coro9pServer::start(&bin, &qemu_fsdev(dir, model), "7.2").unwrap();
    let mut t = StreamTransport::connect(&srv.path, false).unwrap();
    let mut c = Client::new(&mut t as &mut dyn Transport, MAX_SIZE);
    step(&format!("coro9p, {model}"), f(&mut c))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("coro9p-cross-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    // SAFETY: c is a NUL-terminated path alive for the call; the buffer is
    // writable for its length, the size passed.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    names.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut buf = vec![0u8; 256];
        // SAFETY: both strings are NUL-terminated and alive for the call;
        // the buffer is writable for its length, the size passed.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert!(n >= 0);
        buf.truncate(n as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), buf);
    }
    out
}

/// The host side of a tree: per path, the host mode and content of
/// links, and the credential store's bytes.
fn host_view(dir: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(dir.join(&rel)).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            let p = dir.join(&rel);
            let m = fs::symlink_metadata(&p).unwrap();
            let mut desc = format!("mode {:o}", m.mode());
            if m.is_file() {
                desc += &format!(
                    " content {:?}",
                    String::from_utf8_lossy(&fs::read(&p).unwrap())
                );
            }
            desc += &format!(" xattrs {:?}", xattrs(&p));
            out.insert(rel.display().to_string(), desc);
            if m.is_dir() {
                stack.push(rel);
            }
        }
    }
    out.insert(".".into(), format!("xattrs {:?}", xattrs(dir)));
    out
}

fn cross(model: &str) {
    // Written by QEMU, read by both.
    let q = temp_dir(&format!("qemu-{model}"));
    let qemu_wrote = with_qemu(&q, model, |c| {
        write_tree(c)?;
        read_tree(c)
    });
    let coro_reads = with_coro9p(&q, model, read_tree);
    assert_eq!(
        coro_reads, qemu_wrote,
        "{model}: QEMU's tree through coro9p"
    );
    // Written by coro9p, read by both.
    let r = temp_dir(&format!("coro-{model}"));
    let coro_wrote = with_coro9p(&r, model, |c| {
        write_tree(c)?;
        read_tree(c)
    });
    let qemu_reads = with_qemu(&r, model, read_tree);
    assert_eq!(
        qemu_reads, coro_wrote,
        "{model}: coro9p's tree through QEMU"
    );
    // The same requests made the same trees, down to the stored bytes.
    assert_eq!(coro_wrote, qemu_wrote, "{model}: what each server wrote");
    assert_eq!(host_view(&r), host_view(&q), "{model}: the host trees");
    // What the client sees, spelled out once.
    let (file, _) = &coro_wrote["file"];
    assert_eq!(
        (file.mode, file.uid, file.gid, file.size),
        (libc::S_IFREG | 0o604, UID, GID, 5)
    );
    let (dir, _) = &coro_wrote["dir"];
    assert_eq!(
        (dir.qid_type, dir.mode, dir.uid, dir.gid),
        (0x80, libc::S_IFDIR | 0o750, 4321, 5432)
    );
    let (link, target) = &coro_wrote["link"];
    assert_eq!((link.qid_type, link.mode), (0x02, libc::S_IFLNK | 0o777));
    assert_eq!(target.as_deref(), Some(&b"file"[..]));
    let (chr, _) = &coro_wrote["chr"];
    assert_eq!(
        (chr.mode, chr.rdev),
        (libc::S_IFCHR | 0o600, libc::makedev(1, 3))
    );
    let _ = fs::remove_dir_all(&q);
    let _ = fs::remove_dir_all(&r);
}

#[test]
fn mapped_xattr_trees_read_the_same_through_qemu_7_2_and_coro9p() {
    cross("mapped-xattr");
}

#[test]
fn mapped_file_trees_read_the_same_through_qemu_7_2_and_coro9p() {
    cross("mapped-file");
}
