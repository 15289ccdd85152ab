//! The local driver's four security models over the protocol: what a
//! client creates (file, directory, symlink, FIFO, device node, with its
//! uid, gid and mode) as the host stores it (owners and modes under
//! passthrough and none, the `user.virtfs.*` xattr bytes under mapped-xattr,
//! the `.virtfs_metadata` files under mapped-file) and as Tgetattr and
//! Treadlink give it back; chmod and chown round trips; the same as an
//! unprivileged server. Also `locks=posix` (two sessions contending) next
//! to QEMU's default answer, and multidevs with a second file system
//! mounted inside the export.

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use coro9p::server::{ExportOptions, FsDriver, Locks};
use coro9p::Compat;

fn serve(dir: &Path, model: &str, extra: &str) -> TestServer {
    TestServer::start(
        &format!("local,path={},security_model={model}{extra}", dir.display()),
        Compat::Master,
    )
}

const MODELS: [&str; 4] = ["passthrough", "mapped-xattr", "mapped-file", "none"];

const O_RDWR: u32 = 2;
const O_RDONLY: u32 = 0;
const S_IFREG: u32 = libc::S_IFREG;
const S_IFDIR: u32 = libc::S_IFDIR;
const S_IFLNK: u32 = libc::S_IFLNK;
const S_IFIFO: u32 = libc::S_IFIFO;
const S_IFCHR: u32 = libc::S_IFCHR;

// Tsetattr valid bits.
const SET_MODE: u32 = 0x1;
const SET_UID: u32 = 0x2;
const SET_GID: u32 = 0x4;

/// The Rgetattr fields these tests compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attr {
    qid_type: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    size: u64,
}

fn getattr(c: &mut Client, fid: u32) -> Attr {
    let r = c.ok(TGETATTR, &le![d fid, q 0x7ff]);
    let d = |at: usize| u32::from_le_bytes(r[at..at + 4].try_into().unwrap());
    let q = |at: usize| u64::from_le_bytes(r[at..at + 8].try_into().unwrap());
    // valid[8] qid[13] mode[4] uid[4] gid[4] nlink[8] rdev[8] size[8]
    Attr {
        qid_type: r[8],
        mode: d(21),
        uid: d(25),
        gid: d(29),
        rdev: q(41),
        size: q(49),
    }
}

/// Tsetattr of mode and ids; the whole reply frame.
fn setattr(c: &mut Client, fid: u32, valid: u32, mode: u32, uid: u32, gid: u32) -> Vec<u8> {
    let body = le![d fid, d valid, d mode, d uid, d gid, q 0, q 0, q 0, q 0, q 0];
    c.send(TSETATTR, 0, &body);
    c.recv_frame()
}

fn setattr_ok(c: &mut Client, fid: u32, valid: u32, mode: u32, uid: u32, gid: u32) {
    let f = setattr(c, fid, valid, mode, uid, gid);
    assert_eq!(f, frame(TSETATTR + 1, 0, &[]), "Tsetattr {valid:#x}");
}

fn llistxattr(p: &Path) -> Vec<String> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: the path is NUL-terminated and lives across the call; the
    // buffer is valid for its length.
    let n = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    buf.truncate(n as usize);
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn makedev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor)
}

/// One object the tests create, and what the client should see of it.
struct Made {
    name: &'static str,
    /// The client's full st_mode.
    mode: u32,
    rdev: u64,
    size: u64,
}

/// Creates a file, a directory, a symlink, a FIFO and a character device
/// in the root of the session attached as `uid`, with group `gid`; returns
/// what each should look like.
fn create_all(c: &mut Client, gid: u32, with_chr: bool) -> Vec<Made> {
    // Tlcreate turns its fid into the new, open file: clone the root first.
    c.walk(0, 1, &[]);
    let r = c.ok(TLCREATE, &le![d 1, s b"file", d O_RDWR, d 0o640, d gid]);
    assert_eq!(r.len(), 17);
    assert_eq!(c.ok(TWRITE, &le![d 1, q 0, d 5, x b"hello"]), le![d 5]);
    c.ok(TCLUNK, &le![d 1]);
    c.ok(TMKDIR, &le![d 0, s b"dir", d S_IFDIR | 0o750, d gid]);
    c.ok(TSYMLINK, &le![d 0, s b"link", s b"file", d gid]);
    c.ok(
        TMKNOD,
        &le![d 0, s b"fifo", d S_IFIFO | 0o620, d 0, d 0, d gid],
    );
    let mut made = vec![
        Made {
            name: "file",
            mode: S_IFREG | 0o640,
            rdev: 0,
            size: 5,
        },
        Made {
            name: "dir",
            mode: S_IFDIR | 0o750,
            rdev: 0,
            size: u64::MAX,
        },
        Made {
            name: "link",
            mode: S_IFLNK | 0o777,
            rdev: 0,
            size: 4,
        },
        Made {
            name: "fifo",
            mode: S_IFIFO | 0o620,
            rdev: 0,
            size: 0,
        },
    ];
    if with_chr {
        // /dev/null's numbers.
        c.ok(
            TMKNOD,
            &le![d 0, s b"chr", d S_IFCHR | 0o600, d 1, d 3, d gid],
        );
        made.push(Made {
            name: "chr",
            mode: S_IFCHR | 0o600,
            rdev: makedev(1, 3),
            size: 0,
        });
    }
    made
}

/// Checks what the client sees of each object.
fn check_client_view(c: &mut Client, made: &[Made], uid: u32, gid: u32, fid: u32) {
    for (i, m) in made.iter().enumerate() {
        let f = fid + i as u32;
        c.walk(0, f, &[m.name]);
        let a = getattr(c, f);
        let want_type = match m.mode & libc::S_IFMT {
            S_IFDIR => 0x80,
            S_IFLNK => 0x02,
            _ => 0,
        };
        assert_eq!(a.qid_type, want_type, "{}: qid type", m.name);
        assert_eq!(
            (a.mode, a.uid, a.gid, a.rdev),
            (m.mode, uid, gid, m.rdev),
            "{}: Tgetattr (mode {:o})",
            m.name,
            a.mode
        );
        if m.size != u64::MAX {
            assert_eq!(a.size, m.size, "{}: size", m.name);
        }
    }
    c.walk(0, fid + 99, &["link"]);
    assert_eq!(c.ok(TREADLINK, &le![d fid + 99]), le![s b"file"]);
    c.ok(TCLUNK, &le![d fid + 99]);
}

fn meta_file(vals: &[(&str, i64)]) -> Vec<u8> {
    vals.iter()
        .map(|(k, v)| format!("virtfs.{k}={v}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Checks the host side of each object for `model`; `me` is the server's
/// (uid, gid).
fn check_host(dir: &Path, model: &str, made: &[Made], uid: u32, gid: u32, me: (u32, u32)) {
    for m in made {
        let p = dir.join(m.name);
        let st = fs::symlink_metadata(&p).unwrap();
        match model {
            "passthrough" | "none" => {
                let owner = if model == "passthrough" || me.0 == 0 {
                    (uid, gid)
                } else {
                    me
                };
                assert_eq!(
                    (st.mode(), st.uid(), st.gid(), st.rdev()),
                    (m.mode, owner.0, owner.1, m.rdev),
                    "{}: host (mode {:o})",
                    m.name,
                    st.mode()
                );
                assert!(
                    llistxattr(&p)
                        .iter()
                        .all(|n| !n.starts_with("user.virtfs.")),
                    "{}",
                    m.name
                );
            }
            "mapped-xattr" | "mapped-file" => {
                let host_mode = if m.mode & libc::S_IFMT == S_IFDIR {
                    S_IFDIR | 0o700
                } else {
                    S_IFREG | 0o600
                };
                assert_eq!(
                    (st.mode(), st.uid(), st.gid(), st.rdev()),
                    (host_mode, me.0, me.1, 0),
                    "{}: host (mode {:o})",
                    m.name,
                    st.mode()
                );
                if m.name == "link" {
                    assert_eq!(fs::read(&p).unwrap(), b"file");
                }
                let is_mknod = matches!(m.mode & libc::S_IFMT, S_IFIFO | S_IFCHR);
                if model == "mapped-xattr" {
                    let x = |n| lgetxattr(&p, n);
                    assert_eq!(x("user.virtfs.uid"), Some(uid.to_le_bytes().to_vec()));
                    assert_eq!(x("user.virtfs.gid"), Some(gid.to_le_bytes().to_vec()));
                    assert_eq!(x("user.virtfs.mode"), Some(m.mode.to_le_bytes().to_vec()));
                    let rdev = is_mknod.then(|| m.rdev.to_le_bytes().to_vec());
                    assert_eq!(x("user.virtfs.rdev"), rdev, "{}", m.name);
                    assert!(!dir.join(".virtfs_metadata").exists());
                } else {
                    let mut want = vec![
                        ("uid", uid as i32 as i64),
                        ("gid", gid as i32 as i64),
                        ("mode", m.mode as i64),
                    ];
                    if is_mknod {
                        want.push(("rdev", m.rdev as i64));
                    }
                    let meta = dir.join(".virtfs_metadata").join(m.name);
                    assert_eq!(fs::read(&meta).unwrap(), meta_file(&want), "{}", m.name);
                    let mst = fs::metadata(&meta).unwrap();
                    assert_eq!(mst.mode() & 0o7777, 0o600);
                    assert!(llistxattr(&p).is_empty(), "{}", m.name);
                }
            }
            _ => unreachable!(),
        }
    }
    if model == "mapped-file" {
        let mdir = fs::metadata(dir.join(".virtfs_metadata")).unwrap();
        assert_eq!(mdir.mode() & 0o7777, 0o700);
    }
}

/// Creation, host check, client check, then chmod and chown round trips
/// of the file, for one model run as root.
fn model_round_trip(model: &str) {
    let dir = temp_dir(model);
    let srv = serve(&dir, model, "");
    let mut c = srv.connect();
    let (uid, gid) = (1234, 2345);
    c.version(32768, "9P2000.L");
    c.ok(TATTACH, &le![d 0, d NOFID, s b"", s b"", d uid]);
    let made = create_all(&mut c, gid, true);
    check_host(&dir, model, &made, uid, gid, (0, 0));
    check_client_view(&mut c, &made, uid, gid, 10);

    // chmod, by the mode the client sends (type bits included).
    c.walk(0, 30, &["file"]);
    setattr_ok(&mut c, 30, SET_MODE, S_IFREG | 0o604, 0, 0);
    assert_eq!(getattr(&mut c, 30).mode, S_IFREG | 0o604, "{model}");
    // chown of both ids, then of the group alone.
    setattr_ok(&mut c, 30, SET_UID | SET_GID, 0, 4321, 5432);
    let a = getattr(&mut c, 30);
    assert_eq!((a.mode, a.uid, a.gid), (S_IFREG | 0o604, 4321, 5432));
    setattr_ok(&mut c, 30, SET_GID, 0, 0, 6543);
    let a = getattr(&mut c, 30);
    assert_eq!((a.uid, a.gid), (4321, 6543));
    let p = dir.join("file");
    let st = fs::symlink_metadata(&p).unwrap();
    match model {
        "passthrough" | "none" => {
            assert_eq!(
                (st.mode(), st.uid(), st.gid()),
                (S_IFREG | 0o604, 4321, 6543)
            );
        }
        "mapped-xattr" => {
            assert_eq!((st.mode(), st.uid(), st.gid()), (S_IFREG | 0o600, 0, 0));
            let mode = (S_IFREG | 0o604).to_le_bytes().to_vec();
            assert_eq!(lgetxattr(&p, "user.virtfs.mode"), Some(mode));
            assert_eq!(lgetxattr(&p, "user.virtfs.uid"), Some(le![d 4321]));
            assert_eq!(lgetxattr(&p, "user.virtfs.gid"), Some(le![d 6543]));
        }
        "mapped-file" => {
            assert_eq!((st.mode(), st.uid(), st.gid()), (S_IFREG | 0o600, 0, 0));
            let want = meta_file(&[
                ("uid", 4321),
                ("gid", 6543),
                ("mode", (S_IFREG | 0o604) as i64),
            ]);
            assert_eq!(fs::read(dir.join(".virtfs_metadata/file")).unwrap(), want);
        }
        _ => unreachable!(),
    }
    // A chmod of the directory; of the symlink, which passthrough and none
    // refuse (ELOOP) and the mapped models store.
    c.walk(0, 31, &["dir"]);
    setattr_ok(&mut c, 31, SET_MODE, S_IFDIR | 0o711, 0, 0);
    assert_eq!(getattr(&mut c, 31).mode, S_IFDIR | 0o711);
    c.walk(0, 32, &["link"]);
    let r = setattr(&mut c, 32, SET_MODE, S_IFLNK | 0o700, 0, 0);
    if model == "passthrough" || model == "none" {
        assert_eq!(r, frame(RLERROR, 0, &le![d 40]));
        assert_eq!(getattr(&mut c, 32).mode, S_IFLNK | 0o777);
    } else {
        assert_eq!(r, frame(TSETATTR + 1, 0, &[]));
        assert_eq!(getattr(&mut c, 32).mode, S_IFLNK | 0o700);
        assert_eq!(c.ok(TREADLINK, &le![d 32]), le![s b"file"]);
    }
    // The export root's own credentials (mapped-file: .virtfs_metadata_root).
    setattr_ok(&mut c, 0, SET_UID | SET_GID, 0, 777, 888);
    let a = getattr(&mut c, 0);
    assert_eq!((a.uid, a.gid), (777, 888));
    match model {
        "mapped-file" => assert_eq!(
            fs::read(dir.join(".virtfs_metadata_root")).unwrap(),
            meta_file(&[("uid", 777), ("gid", 888)])
        ),
        "mapped-xattr" => assert_eq!(lgetxattr(&dir, "user.virtfs.uid"), Some(le![d 777])),
        _ => {
            let st = fs::metadata(&*dir).unwrap();
            assert_eq!((st.uid(), st.gid()), (777, 888));
        }
    }
    // What a fresh session reads back from the host.
    drop(c);
    let mut c = srv.connect();
    c.version(32768, "9P2000.L");
    c.ok(TATTACH, &le![d 0, d NOFID, s b"", s b"", d 0]);
    c.walk(0, 1, &["file"]);
    let a = getattr(&mut c, 1);
    assert_eq!(
        (a.mode, a.uid, a.gid, a.size),
        (S_IFREG | 0o604, 4321, 6543, 5)
    );
    c.walk(0, 2, &["chr"]);
    let a = getattr(&mut c, 2);
    assert_eq!((a.mode, a.rdev), (S_IFCHR | 0o600, makedev(1, 3)));
}

#[test]
fn passthrough_creates_with_the_clients_credentials() {
    model_round_trip("passthrough");
}

#[test]
fn mapped_xattr_stores_credentials_in_xattrs() {
    model_round_trip("mapped-xattr");
}

#[test]
fn mapped_file_stores_credentials_in_metadata_files() {
    model_round_trip("mapped-file");
}

#[test]
fn none_creates_with_the_clients_credentials_when_it_can() {
    model_round_trip("none");
}

// ---- as an unprivileged server --------------------------------------------

const UNPRIVILEGED_DIR: &str = "CORO9P_MODELS_TEST_UNPRIVILEGED_DIR";

fn expect_errno(c: &mut Client, id: u8, body: &[u8], errno: u32) {
    c.expect_err(id, body, errno);
}

/// Run as uid 65534 in `base`, a directory it owns: per model, which
/// creations work and what they store.
fn unprivileged_checks(base: &Path) {
    let me = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    assert_ne!(me.0, 0, "this part runs unprivileged");
    for model in MODELS {
        let dir = base.join(model);
        fs::create_dir(&dir).unwrap();
        let srv = serve(&dir, model, "");
        let mut c = srv.connect();
        c.version(32768, "9P2000.L");
        match model {
            "passthrough" => {
                // The server's own ids work; anyone else's is EPERM, and
                // nothing is left behind.
                c.ok(TATTACH, &le![d 0, d NOFID, s b"", s b"", d me.0]);
                let made = create_all(&mut c, me.1, false);
                check_host(&dir, model, &made, me.0, me.1, me);
                check_client_view(&mut c, &made, me.0, me.1, 10);
                c.ok(TATTACH, &le![d 50, d NOFID, s b"", s b"", d 0]);
                c.walk(50, 51, &[]);
                expect_errno(
                    &mut c,
                    TLCREATE,
                    &le![d 51, s b"f0", d O_RDWR, d 0o644, d 0],
                    1,
                );
                expect_errno(&mut c, TMKDIR, &le![d 50, s b"d0", d 0o755, d 0], 1);
                expect_errno(&mut c, TSYMLINK, &le![d 50, s b"l0", s b"x", d 0], 1);
                expect_errno(
                    &mut c,
                    TMKNOD,
                    &le![d 50, s b"p0", d S_IFIFO | 0o600, d 0, d 0, d 0],
                    1,
                );
                for n in ["f0", "d0", "l0", "p0"] {
                    assert!(fs::symlink_metadata(dir.join(n)).is_err(), "{n}");
                }
                c.walk(0, 60, &["file"]);
                let r = setattr(&mut c, 60, SET_UID, 0, 0, 0);
                assert_eq!(r, frame(RLERROR, 0, &le![d 1]));
            }
            "none" => {
                // A failing chown is ignored: the objects are the server's.
                c.ok(TATTACH, &le![d 0, d NOFID, s b"", s b"", d 0]);
                let made = create_all(&mut c, 0, false);
                check_host(&dir, model, &made, 0, 0, me);
                check_client_view(&mut c, &made, me.0, me.1, 10);
                // A device node needs CAP_MKNOD, which no model fakes here.
                expect_errno(
                    &mut c,
                    TMKNOD,
                    &le![d 0, s b"chr", d S_IFCHR | 0o600, d 1, d 3, d 0],
                    1,
                );
            }
            _ => {
                // The mapped models store any credentials, a device node too.
                c.ok(TATTACH, &le![d 0, d NOFID, s b"", s b"", d 0]);
                let made = create_all(&mut c, 0, true);
                check_host(&dir, model, &made, 0, 0, me);
                check_client_view(&mut c, &made, 0, 0, 10);
                c.walk(0, 60, &["file"]);
                setattr_ok(&mut c, 60, SET_UID | SET_GID, 0, 4321, 5432);
                setattr_ok(&mut c, 60, SET_MODE, S_IFREG | 0o4755, 0, 0);
                let a = getattr(&mut c, 60);
                assert_eq!((a.mode, a.uid, a.gid), (S_IFREG | 0o4755, 4321, 5432));
                let st = fs::metadata(dir.join("file")).unwrap();
                assert_eq!((st.mode(), st.uid()), (S_IFREG | 0o600, me.0));
            }
        }
    }
}

#[test]
fn unprivileged_server_creates_what_each_model_allows() {
    if let Some(dir) = std::env::var_os(UNPRIVILEGED_DIR) {
        // The re-executed copy below, running as nobody.
        unprivileged_checks(Path::new(&dir));
        return;
    }
    let tmp = temp_dir("nobody");
    if !nix::unistd::geteuid().is_root() {
        unprivileged_checks(&tmp);
        return;
    }
    nix::unistd::chown(
        tmp.as_path(),
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    let test = "unprivileged_server_creates_what_each_model_allows";
    coro9p::testing::rerun_as_nobody(test, UNPRIVILEGED_DIR, tmp.as_path());
}

// ---- locks ------------------------------------------------------------------

const RDLCK: u8 = 0;
const WRLCK: u8 = 1;
const UNLCK: u8 = 2;
const SUCCESS: u8 = 0;
const BLOCKED: u8 = 1;
const FLAG_BLOCK: u32 = 1;

/// A client attached with fid 0 and `f` open read-write as `fid`.
fn lock_client(srv: &TestServer, fid: u32, flags: u32) -> Client {
    let mut c = srv.connect();
    c.attach();
    c.walk(0, fid, &["f"]);
    c.ok(TLOPEN, &le![d fid, d flags]);
    c
}

#[allow(clippy::too_many_arguments)]
fn tlock(
    c: &mut Client,
    fid: u32,
    ty: u8,
    flags: u32,
    start: u64,
    len: u64,
    proc_id: u32,
    client: &[u8],
) -> u8 {
    let r = c.ok(
        TLOCK,
        &le![d fid, b ty, d flags, q start, q len, d proc_id, s client],
    );
    assert_eq!(r.len(), 1);
    r[0]
}

fn tgetlock(
    c: &mut Client,
    fid: u32,
    ty: u8,
    start: u64,
    len: u64,
    proc_id: u32,
    client: &[u8],
) -> Vec<u8> {
    c.ok(
        TGETLOCK,
        &le![d fid, b ty, q start, q len, d proc_id, s client],
    )
}

fn rgetlock(ty: u8, start: u64, len: u64, proc_id: u32, client: &[u8]) -> Vec<u8> {
    le![b ty, q start, q len, d proc_id, s client]
}

/// What a host process sees with F_OFD_GETLK for a write lock on
/// `[start, start + len)`: (type, start, len).
fn host_getlk(p: &Path, start: i64, len: i64) -> (i16, i64, i64) {
    let f = fs::File::open(p).unwrap();
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: start,
        l_len: len,
        l_pid: 0,
    };
    // SAFETY: F_OFD_GETLK reads and writes one struct flock through the
    // pointer, which points to `fl`, live and exclusively borrowed; the fd
    // is open for the call.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    assert_eq!(r, 0);
    (fl.l_type, fl.l_start, fl.l_len)
}

#[test]
fn posix_locks_contend_between_sessions() {
    let dir = temp_dir("locks");
    let file = dir.join("f");
    fs::write(&file, vec![b'x'; 64]).unwrap();
    let srv = serve(&dir, "passthrough", ",locks=posix");
    let mut a = lock_client(&srv, 1, O_RDWR);
    let mut b = lock_client(&srv, 1, O_RDWR);
    let unl = libc::F_UNLCK as i16;
    let wr = libc::F_WRLCK as i16;

    // A write-locks [0, 10); B's overlapping write lock is blocked, with
    // or without the blocking flag (a request never waits).
    assert_eq!(tlock(&mut a, 1, WRLCK, 0, 0, 10, 100, b"hostA"), SUCCESS);
    assert_eq!(tlock(&mut b, 1, WRLCK, 0, 5, 10, 200, b"hostB"), BLOCKED);
    assert_eq!(
        tlock(&mut b, 1, WRLCK, FLAG_BLOCK, 5, 10, 200, b"hostB"),
        BLOCKED
    );
    assert_eq!(tlock(&mut b, 1, RDLCK, 0, 9, 1, 200, b"hostB"), BLOCKED);
    // Tgetlock names the lock in the way and its owner.
    assert_eq!(
        tgetlock(&mut b, 1, WRLCK, 5, 10, 200, b"hostB"),
        rgetlock(WRLCK, 0, 10, 100, b"hostA")
    );
    // Nothing in the way: QEMU's echo of the request.
    assert_eq!(
        tgetlock(&mut b, 1, WRLCK, 10, 5, 200, b"hostB"),
        rgetlock(UNLCK, 10, 5, 200, b"hostB")
    );
    // A real host lock: a host process sees it.
    assert_eq!(host_getlk(&file, 0, 1), (wr, 0, 10));
    // Read locks share; B reads [10, 20), A reads [12, 14).
    assert_eq!(tlock(&mut b, 1, RDLCK, 0, 10, 10, 200, b"hostB"), SUCCESS);
    assert_eq!(tlock(&mut a, 1, RDLCK, 0, 12, 2, 100, b"hostA"), SUCCESS);
    // B's read lock is in the way of A's write lock at 15.
    assert_eq!(
        tgetlock(&mut a, 1, WRLCK, 15, 1, 100, b"hostA"),
        rgetlock(RDLCK, 10, 10, 200, b"hostB")
    );
    // One owner does not conflict with itself through another fid; another
    // process of the same client does, through the same fid.
    a.walk(0, 2, &["f"]);
    a.ok(TLOPEN, &le![d 2, d O_RDWR]);
    assert_eq!(tlock(&mut a, 2, WRLCK, 0, 0, 10, 100, b"hostA"), SUCCESS);
    assert_eq!(tlock(&mut a, 1, WRLCK, 0, 0, 1, 101, b"hostA"), BLOCKED);
    assert_eq!(
        tgetlock(&mut a, 1, WRLCK, 0, 1, 101, b"hostA"),
        rgetlock(WRLCK, 0, 10, 100, b"hostA")
    );
    // A unlocks the whole file (length 0: to the end); B now gets its
    // write lock.
    assert_eq!(tlock(&mut a, 1, UNLCK, 0, 0, 0, 100, b"hostA"), SUCCESS);
    assert_eq!(tlock(&mut b, 1, WRLCK, 0, 5, 10, 200, b"hostB"), SUCCESS);
    assert_eq!(
        tgetlock(&mut a, 2, WRLCK, 0, 0, 100, b"hostA"),
        rgetlock(WRLCK, 5, 10, 200, b"hostB")
    );
    assert_eq!(tlock(&mut a, 2, WRLCK, 0, 0, 0, 100, b"hostA"), BLOCKED);
    // Clunking the fid that holds B's locks releases them.
    b.ok(TCLUNK, &le![d 1]);
    assert_eq!(tlock(&mut a, 2, WRLCK, 0, 0, 0, 100, b"hostA"), SUCCESS);
    assert_eq!(host_getlk(&file, 100, 1), (wr, 0, 0));
    // So does a disconnect.
    drop(a);
    b.walk(0, 3, &["f"]);
    b.ok(TLOPEN, &le![d 3, d O_RDWR]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tlock(&mut b, 3, WRLCK, 0, 0, 0, 200, b"hostB") != SUCCESS {
        assert!(Instant::now() < deadline, "A's lock outlived its session");
        std::thread::sleep(Duration::from_millis(10));
    }
    b.ok(TCLUNK, &le![d 3]);
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_getlk(&file, 0, 0).0 != unl {
        assert!(Instant::now() < deadline, "B's lock outlived its fid");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Under `--sandbox` (Landlock) the server cannot read /proc/self/fdinfo,
/// and still names the holder of a write lock.
#[test]
fn posix_getlock_names_the_holder_under_the_sandbox() {
    let dir = temp_dir("locksandbox");
    let export = dir.join("export");
    fs::create_dir(&export).unwrap();
    fs::write(export.join("f"), b"data").unwrap();
    let sock = dir.join("sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coro9p"))
        .arg("--sandbox")
        .arg("--fsdev")
        .arg(format!(
            "local,path={},security_model=passthrough,locks=posix",
            export.display()
        ))
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let connect = || loop {
        match std::os::unix::net::UnixStream::connect(&sock) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                return Some(Client { s });
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    };
    let Some(mut a) = connect() else {
        let st = child.try_wait().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("coro9p --sandbox did not start ({st:?}; no Landlock?): case skipped");
        return;
    };
    let mut b = connect().unwrap();
    for c in [&mut a, &mut b] {
        c.attach();
        c.walk(0, 1, &["f"]);
        c.ok(TLOPEN, &le![d 1, d O_RDWR]);
    }
    assert_eq!(tlock(&mut a, 1, WRLCK, 0, 0, 2, 7, b"alpha"), SUCCESS);
    assert_eq!(tlock(&mut b, 1, RDLCK, 0, 1, 1, 8, b"beta"), BLOCKED);
    assert_eq!(
        tgetlock(&mut b, 1, RDLCK, 0, 0, 8, b"beta"),
        rgetlock(WRLCK, 0, 2, 7, b"alpha")
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn posix_lock_errors() {
    let dir = temp_dir("lockerr");
    fs::write(dir.join("f"), b"data").unwrap();
    let srv = serve(&dir, "mapped-xattr", ",locks=posix");
    let mut c = lock_client(&srv, 1, O_RDONLY);
    // Not open: EBADF; a write lock on a read-only fid: EBADF, as fcntl.
    c.walk(0, 2, &["f"]);
    c.expect_err(TLOCK, &le![d 2, b WRLCK, d 0, q 0, q 0, d 1, s b"c"], 9);
    c.expect_err(TGETLOCK, &le![d 2, b WRLCK, q 0, q 0, d 1, s b"c"], 9);
    c.expect_err(TLOCK, &le![d 1, b WRLCK, d 0, q 0, q 0, d 1, s b"c"], 9);
    assert_eq!(tlock(&mut c, 1, RDLCK, 0, 0, 0, 1, b"c"), SUCCESS);
    // Bad type, bad flags (checked before the fid), unknown fid.
    c.expect_err(TLOCK, &le![d 1, b 3, d 0, q 0, q 0, d 1, s b"c"], 22);
    c.expect_err(TGETLOCK, &le![d 1, b 7, q 0, q 0, d 1, s b"c"], 22);
    c.expect_err(TLOCK, &le![d 99, b 0, d 2, q 0, q 0, d 1, s b"c"], 22);
    c.expect_err(TLOCK, &le![d 99, b 0, d 0, q 0, q 0, d 1, s b"c"], 2);
    // A range past the host's off_t.
    c.expect_err(
        TLOCK,
        &le![d 1, b RDLCK, d 0, q u64::MAX, q 1, d 1, s b"c"],
        22,
    );
    // Tgetlock of an unlock: nothing can be in the way.
    assert_eq!(
        tgetlock(&mut c, 1, UNLCK, 3, 4, 5, b"c"),
        rgetlock(UNLCK, 3, 4, 5, b"c")
    );
}

#[test]
fn default_locks_answer_as_qemu_does() {
    let dir = temp_dir("qemulocks");
    let file = dir.join("f");
    fs::write(&file, b"data").unwrap();
    for extra in ["", ",locks=qemu"] {
        let srv = serve(&dir, "passthrough", extra);
        let mut a = lock_client(&srv, 1, O_RDWR);
        let mut b = lock_client(&srv, 1, O_RDONLY);
        // Every Tlock succeeds, conflicting or not (a write lock on a
        // read-only fid too); no host lock is taken.
        assert_eq!(tlock(&mut a, 1, WRLCK, 0, 0, 10, 1, b"a"), SUCCESS);
        assert_eq!(tlock(&mut b, 1, WRLCK, FLAG_BLOCK, 0, 10, 2, b"b"), SUCCESS);
        assert_eq!(host_getlk(&file, 0, 0).0, libc::F_UNLCK as i16);
        // Tgetlock always answers UNLCK with the request echoed.
        assert_eq!(
            tgetlock(&mut b, 1, WRLCK, 3, 4, 2, b"b"),
            rgetlock(UNLCK, 3, 4, 2, b"b")
        );
        // Its own checks stay: flags, and a fid that is not open.
        a.expect_err(TLOCK, &le![d 1, b 0, d 2, q 0, q 0, d 1, s b"a"], 22);
        a.walk(0, 5, &["f"]);
        a.expect_err(TLOCK, &le![d 5, b 0, d 0, q 0, q 0, d 1, s b"a"], 9);
        // An unknown type is no error to QEMU.
        assert_eq!(tlock(&mut a, 1, 9, 0, 0, 0, 1, b"a"), SUCCESS);
    }
}

#[test]
fn locks_option_parses_for_local_only() {
    let locks = |s: &str| match ExportOptions::parse(s).unwrap().driver {
        FsDriver::Local { locks, .. } => locks,
        FsDriver::Synth => unreachable!(),
    };
    assert_eq!(locks("local,path=/x,security_model=none"), Locks::Qemu);
    assert_eq!(
        locks("local,path=/x,security_model=none,locks=posix"),
        Locks::Posix
    );
    assert_eq!(
        ExportOptions::parse("synth,locks=posix").unwrap_err(),
        "'locks' is invalid for fsdriver 'synth'"
    );
    assert_eq!(
        ExportOptions::parse("local,path=/x,security_model=none,locks=on").unwrap_err(),
        "invalid locks property 'on'"
    );
}

// ---- multidevs --------------------------------------------------------------

/// A tmpfs mounted on `at` until dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Option<Tmpfs> {
        fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "coro9p-test"])
            .arg(at)
            .status()
            .ok()?;
        st.success().then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn qid_path(qid: &[u8]) -> u64 {
    u64::from_le_bytes(qid[5..13].try_into().unwrap())
}

/// The qid paths of a walk's reply.
fn walk_paths(r: &[u8]) -> Vec<u64> {
    let n = u16::from_le_bytes([r[0], r[1]]) as usize;
    (0..n)
        .map(|i| qid_path(&r[2 + 13 * i..15 + 13 * i]))
        .collect()
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn multidevs_remap_forbid_and_warn() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("mounting a tmpfs needs root: case skipped");
        return;
    }
    let dir = temp_dir("multidevs");
    fs::write(dir.join("f"), b"root device").unwrap();
    let Some(mnt) = Tmpfs::mount(&dir.join("mnt")) else {
        panic!("cannot mount a tmpfs (are we root with CAP_SYS_ADMIN?)");
    };
    fs::write(dir.join("mnt/t1"), b"other device").unwrap();
    fs::create_dir(dir.join("mnt/sub")).unwrap();
    fs::write(dir.join("mnt/sub/t2"), b"").unwrap();
    let root_dev = fs::metadata(&*dir).unwrap().dev();
    assert_ne!(fs::metadata(dir.join("mnt")).unwrap().dev(), root_dev);
    let (root, f) = (ino(&dir), ino(&dir.join("f")));
    let (m, t1, sub, t2) = (
        ino(&dir.join("mnt")),
        ino(&dir.join("mnt/t1")),
        ino(&dir.join("mnt/sub")),
        ino(&dir.join("mnt/sub/t2")),
    );

    // remap: the root's device gets suffix 1 over 1 bit (ino * 2 + 1), the
    // tmpfs, seen second, suffix 2 over 3 bits.
    {
        let srv = serve(&dir, "passthrough", ",multidevs=remap");
        let mut c = srv.connect();
        assert_eq!(qid_path(&c.attach()), root * 2 + 1);
        let got = walk_paths(&c.walk(0, 1, &["mnt", "t1"]));
        assert_eq!(got, [(m << 3) | 2, (t1 << 3) | 2]);
        let got = walk_paths(&c.walk(0, 2, &["mnt", "sub", "t2"]));
        assert_eq!(got, [(m << 3) | 2, (sub << 3) | 2, (t2 << 3) | 2]);
        assert_eq!(walk_paths(&c.walk(0, 3, &["f"])), [f * 2 + 1]);
        let mut all = vec![root * 2 + 1, f * 2 + 1, (m << 3) | 2, (t1 << 3) | 2];
        all.extend([(sub << 3) | 2, (t2 << 3) | 2]);
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "qid paths are distinct");
        // The files of the other device work as any other.
        c.ok(TLOPEN, &le![d 1, d 0]);
        assert_eq!(
            c.ok(TREAD, &le![d 1, q 0, d 100]),
            le![d 12, x b"other device"]
        );
    }
    // forbid: anything on the other device is ENODEV; the root's device
    // keeps raw inode numbers.
    {
        let srv = serve(&dir, "passthrough", ",multidevs=forbid");
        let mut c = srv.connect();
        assert_eq!(qid_path(&c.attach()), root);
        c.expect_err(TWALK, &le![d 0, d 1, w 1, s b"mnt"], 19);
        c.expect_err(TWALK, &le![d 0, d 1, w 2, s b"mnt", s b"t1"], 19);
        assert_eq!(walk_paths(&c.walk(0, 1, &["f"])), [f]);
        // A walk that reaches the other device part-way stops there.
        c.walk(0, 2, &[]);
        c.expect_err(TWALK, &le![d 2, d 2, w 1, s b"mnt"], 19);
    }
    // warn: raw inode numbers on both devices.
    {
        let srv = serve(&dir, "passthrough", ",multidevs=warn");
        let mut c = srv.connect();
        assert_eq!(qid_path(&c.attach()), root);
        assert_eq!(walk_paths(&c.walk(0, 1, &["mnt", "t1"])), [m, t1]);
        assert_eq!(walk_paths(&c.walk(0, 2, &["f"])), [f]);
    }
    drop(mnt);
}
