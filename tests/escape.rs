//! No way out of the export, in every security model: symlinks in every
//! position of a path (first, middle, last; relative and absolute
//! targets), a directory swapped for a symlink while requests run, `..`
//! at the root and below, names holding '/', a directory renamed on the
//! host under a fid, Tlink of an outside file, and the metadata of the
//! mapped models.
//!
//! Outside the export sits a canary: a file and a directory watched with
//! inotify (every event: open, read, write, attribute change, link count,
//! creation, removal, rename) and snapshotted with lstat. After each test
//! not one event may have fired and the snapshot must be unchanged.

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use coro9p::Compat;

static N: AtomicU32 = AtomicU32::new(0);

const MODELS: [&str; 4] = ["passthrough", "mapped-xattr", "mapped-file", "none"];

// 9P2000.L open flags.
const O_RDONLY: u32 = 0;
const O_RDWR: u32 = 2;
const O_TRUNC: u32 = 0o1000;
const O_DIRECTORY: u32 = 0o200000;

/// What lstat says of a canary, all of it that an escape could change.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    size: u64,
    atime: (i64, i64),
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn snapshot(p: &Path) -> Snapshot {
    let m = fs::symlink_metadata(p).unwrap();
    Snapshot {
        ino: m.ino(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        nlink: m.nlink(),
        size: m.size(),
        atime: (m.atime(), m.atime_nsec()),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    }
}

const CANARY: &[u8] = b"CANARY: nobody may read this\n";

/// A test area: `base/outside` (the canary: a file, a directory holding a
/// second file) and `base/export` (what the server exports).
struct Area {
    base: PathBuf,
    outside: PathBuf,
    export: PathBuf,
    inotify: Option<OwnedFd>,
    watched: Vec<(i32, PathBuf)>,
    snaps: Vec<(PathBuf, Snapshot)>,
}

impl Area {
    fn new(tag: &str) -> Area {
        let base = std::env::temp_dir().join(format!(
            "coro9p-escape-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&base);
        let outside = base.join("outside");
        let export = base.join("export");
        fs::create_dir_all(outside.join("cdir")).unwrap();
        fs::create_dir_all(&export).unwrap();
        for f in [outside.join("canary"), outside.join("cdir/canary2")] {
            fs::write(&f, CANARY).unwrap();
            fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
            // atime before mtime: under relatime any read would move it.
            let t = |s| std::time::UNIX_EPOCH + Duration::from_secs(s);
            fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_times(
                    fs::FileTimes::new()
                        .set_accessed(t(1000))
                        .set_modified(t(2000)),
                )
                .unwrap();
        }
        Area {
            base,
            outside,
            export,
            inotify: None,
            watched: Vec::new(),
            snaps: Vec::new(),
        }
    }

    /// Starts watching the canary (after the export is laid out).
    fn arm(&mut self) {
        // SAFETY: inotify_init1 takes flags only; a non-negative result is
        // a new descriptor that nothing else owns.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1");
        // SAFETY: fd was just returned by inotify_init1 and is owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let paths = [
            self.outside.clone(),
            self.outside.join("canary"),
            self.outside.join("cdir"),
            self.outside.join("cdir/canary2"),
        ];
        for p in paths {
            let c = CString::new(p.as_os_str().as_bytes()).unwrap();
            // SAFETY: fd is an inotify descriptor and c a NUL-terminated
            // path, both alive for the call.
            let wd = unsafe {
                libc::inotify_add_watch(
                    fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::IN_ALL_EVENTS | libc::IN_DONT_FOLLOW,
                )
            };
            assert!(wd >= 0, "inotify_add_watch {}", p.display());
            self.watched.push((wd, p.clone()));
            self.snaps.push((p.clone(), snapshot(&p)));
        }
        self.inotify = Some(fd);
    }

    /// The inotify events since `arm`, as (path, mask, name).
    fn events(&self) -> Vec<(PathBuf, u32, String)> {
        let fd = self.inotify.as_ref().expect("armed");
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => break,
                Ok(n) => {
                    let mut i = 0;
                    while i + 16 <= n {
                        let wd = i32::from_ne_bytes(buf[i..i + 4].try_into().unwrap());
                        let mask = u32::from_ne_bytes(buf[i + 4..i + 8].try_into().unwrap());
                        let len = u32::from_ne_bytes(buf[i + 12..i + 16].try_into().unwrap());
                        let name = &buf[i + 16..i + 16 + len as usize];
                        let name = String::from_utf8_lossy(name)
                            .trim_end_matches('\0')
                            .to_string();
                        let path = self
                            .watched
                            .iter()
                            .find(|(w, _)| *w == wd)
                            .map(|(_, p)| p.clone())
                            .unwrap_or_default();
                        out.push((path, mask, name));
                        i += 16 + len as usize;
                    }
                }
                Err(e) => panic!("inotify read: {e}"),
            }
        }
        out
    }

    /// Nothing outside was touched since `arm`.
    fn assert_untouched(&mut self, what: &str) {
        let ev = self.events();
        assert!(ev.is_empty(), "{what}: the canary saw {ev:#x?}");
        for (p, snap) in &self.snaps {
            assert_eq!(&snapshot(p), snap, "{what}: {}", p.display());
        }
        let mut names: Vec<String> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["canary", "cdir"], "{what}: outside's entries");
        // That listing fired events of its own (open, read, close of the
        // directory): drop them. Reading the files would too: `finish`.
        let own = self.events();
        let mine = libc::IN_OPEN | libc::IN_ACCESS | libc::IN_CLOSE_NOWRITE | libc::IN_ISDIR;
        assert!(
            own.iter()
                .all(|(p, m, _)| p == &self.outside && m & !mine == 0),
            "{what}: {own:#x?}"
        );
        // It may have moved the directory's atime too.
        let fresh = snapshot(&self.outside);
        for (p, snap) in &mut self.snaps {
            if p == &self.outside {
                snap.atime = fresh.atime;
            }
        }
    }

    /// The last check: events, snapshots, then the contents.
    fn finish(mut self, what: &str) {
        self.assert_untouched(what);
        assert_eq!(fs::read(self.outside.join("canary")).unwrap(), CANARY);
        assert_eq!(fs::read(self.outside.join("cdir/canary2")).unwrap(), CANARY);
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn serve(dir: &Path, model: &str) -> TestServer {
    TestServer::start(
        &format!("local,path={},security_model={model}", dir.display()),
        Compat::Master,
    )
}

/// Sends and returns the reply (type, body), whatever it is.
fn any(c: &mut Client, id: u8, body: &[u8]) -> (u8, Vec<u8>) {
    c.send(id, 0, body);
    let (rid, tag, b) = c.recv();
    assert_eq!(tag, 0);
    assert!(rid == id + 1 || rid == RLERROR, "reply {rid} to {id}");
    (rid, b)
}

fn succeeded(c: &mut Client, id: u8, body: &[u8]) -> bool {
    any(c, id, body).0 == id + 1
}

/// Walks `names` from `from` to `newfid`; true if the whole walk went
/// through (a partial walk creates no fid).
fn try_walk(c: &mut Client, from: u32, newfid: u32, names: &[&[u8]]) -> bool {
    let mut body = le![d from, d newfid, w names.len()];
    for n in names {
        body.extend(le![s n]);
    }
    let (rid, r) = any(c, TWALK, &body);
    rid == TWALK + 1 && u16::from_le_bytes([r[0], r[1]]) as usize == names.len()
}

/// Every request that could reach through fid `f` (and a fresh fid for
/// each, from `fresh`) to the file or directory it names, with names that
/// exist outside ("canary", "cdir"). Results are not checked: the canary
/// is. `bait` is an inside file to move or link into the target.
fn battery(c: &mut Client, fresh: &mut dyn FnMut(&mut Client) -> Option<u32>, area: &Area) {
    let bait = area.export.join("bait");
    macro_rules! with_fid {
        (|$f:ident| $body:expr) => {
            if let Some($f) = fresh(c) {
                $body;
            }
        };
    }
    with_fid!(|f| any(c, TGETATTR, &le![d f, q 0x3fff]));
    with_fid!(|f| {
        if succeeded(c, TLOPEN, &le![d f, d O_RDONLY]) {
            any(c, TREAD, &le![d f, q 0, d 100]);
        }
    });
    with_fid!(|f| {
        if succeeded(c, TLOPEN, &le![d f, d O_RDWR | O_TRUNC]) {
            any(c, TWRITE, &le![d f, q 0, d 3, x b"pwn"]);
        }
    });
    with_fid!(|f| {
        if succeeded(c, TLOPEN, &le![d f, d O_DIRECTORY]) {
            any(c, TREADDIR, &le![d f, q 0, d 4000]);
        }
    });
    // Tsetattr: mode, size, owner, times.
    for (valid, mode, size) in [(0x1u32, 0o777u32, 0u64), (0x8, 0, 0), (0x8, 0, 5)] {
        with_fid!(|f| any(
            c,
            TSETATTR,
            &le![d f, d valid, d mode, d 0, d 0, q size, q 0, q 0, q 0, q 0]
        ));
    }
    with_fid!(|f| any(
        c,
        TSETATTR,
        &le![d f, d 0x6, d 0, d 4242, d 4242, q 0, q 0, q 0, q 0, q 0]
    ));
    with_fid!(|f| any(
        c,
        TSETATTR,
        &le![d f, d 0x30 | 0x180, d 0, d 0, d 0, q 0, q 1, q 0, q 1, q 0]
    ));
    with_fid!(|f| any(
        c,
        TSETATTR,
        &le![d f, d 0x40, d 0, d 0, d 0, q 0, q 0, q 0, q 0, q 0]
    ));
    // Xattrs: read, list, write, remove.
    with_fid!(|f| {
        if succeeded(c, TXATTRWALK, &le![d f, d 9000, s b"user.x"]) {
            any(c, TCLUNK, &le![d 9000]);
        }
    });
    with_fid!(|f| {
        if succeeded(c, TXATTRWALK, &le![d f, d 9000, s b""]) {
            any(c, TCLUNK, &le![d 9000]);
        }
    });
    for size in [4u64, 0] {
        with_fid!(|f| {
            if succeeded(c, TXATTRCREATE, &le![d f, s b"user.escape", q size, d 0]) {
                if size > 0 {
                    any(c, TWRITE, &le![d f, q 0, d 4, x b"pwn!"]);
                }
                any(c, TCLUNK, &le![d f]);
            }
        });
    }
    with_fid!(|f| any(c, TSTATFS, &le![d f]));
    with_fid!(|f| any(c, TREADLINK, &le![d f]));
    with_fid!(|f| any(c, TFSYNC, &le![d f, d 0]));
    // As a directory: create (with O_TRUNC, over the canary's name), make,
    // remove and rename in it.
    with_fid!(|f| {
        if succeeded(
            c,
            TLCREATE,
            &le![d f, s b"canary", d O_RDWR | O_TRUNC, d 0o666, d 0],
        ) {
            any(c, TWRITE, &le![d f, q 0, d 3, x b"pwn"]);
        }
    });
    with_fid!(|f| any(c, TLCREATE, &le![d f, s b"new", d O_RDWR, d 0o666, d 0]));
    with_fid!(|f| any(c, TMKDIR, &le![d f, s b"newdir", d 0o777, d 0]));
    with_fid!(|f| any(
        c,
        TMKNOD,
        &le![d f, s b"nod", d libc::S_IFIFO | 0o666, d 0, d 0, d 0]
    ));
    with_fid!(|f| any(c, TSYMLINK, &le![d f, s b"sl", s b"canary", d 0]));
    with_fid!(|f| any(c, TUNLINKAT, &le![d f, s b"canary", d 0]));
    with_fid!(|f| any(c, TUNLINKAT, &le![d f, s b"cdir", d 0x200]));
    with_fid!(|f| any(c, TRENAMEAT, &le![d f, s b"canary", d 0, s b"stolen"]));
    with_fid!(|f| any(c, TRENAMEAT, &le![d f, s b"cdir", d 0, s b"stolendir"]));
    // The bait moved or linked over and next to the canary's name.
    fs::write(&bait, b"bait").unwrap();
    with_fid!(|f| any(c, TRENAMEAT, &le![d 0, s b"bait", d f, s b"canary"]));
    fs::write(&bait, b"bait").unwrap();
    if try_walk(c, 0, 9001, &[b"bait"]) {
        with_fid!(|f| any(c, TLINK, &le![d f, d 9001, s b"canary"]));
        with_fid!(|f| any(c, TLINK, &le![d f, d 9001, s b"linked"]));
        with_fid!(|f| any(c, TRENAME, &le![d 9001, d f, s b"canary"]));
        any(c, TCLUNK, &le![d 9001]);
    }
    // As the file: link it into the export, move it in, remove it.
    with_fid!(|f| any(c, TLINK, &le![d 0, d f, s b"stolen_link"]));
    with_fid!(|f| any(c, TRENAME, &le![d f, d 0, s b"stolen_moved"]));
    with_fid!(|f| any(c, TREMOVE, &le![d f]));
}

/// A fresh fid walked along `names` from the root, if the walk goes
/// through.
fn walker<'a>(
    names: &'a [&'a [u8]],
    next: &'a mut u32,
) -> impl FnMut(&mut Client) -> Option<u32> + 'a {
    move |c| {
        *next += 1;
        try_walk(c, 0, *next, names).then_some(*next)
    }
}

/// The export's layout: symlinks to the canary in every position.
fn lay_out(area: &Area) {
    let e = &area.export;
    let out = &area.outside;
    fs::create_dir(e.join("d")).unwrap();
    fs::write(e.join("d/f"), b"inside").unwrap();
    symlink(out, e.join("abs_dir")).unwrap();
    symlink("../outside", e.join("rel_dir")).unwrap();
    symlink(out.join("canary"), e.join("abs_file")).unwrap();
    symlink("../outside/canary", e.join("rel_file")).unwrap();
    symlink("../../outside", e.join("d/mid")).unwrap();
    symlink("../../outside/canary", e.join("d/last")).unwrap();
    symlink(out.join("cdir"), e.join("d/cdir")).unwrap();
    // A name that exists outside and inside, for walks that would confuse
    // the two.
    fs::write(e.join("canary"), b"inside canary").unwrap();
}

/// The symlink cases for one model.
fn symlinks_in_every_position(model: &str) {
    let mut area = Area::new("links");
    lay_out(&area);
    area.arm();
    let srv = serve(&area.export, model);
    let mut c = srv.connect();
    c.attach();
    // Walks through a link stop at it: a partial walk, no new fid.
    let through: [&[&[u8]]; 8] = [
        &[b"abs_dir", b"canary"],
        &[b"rel_dir", b"canary"],
        &[b"abs_dir", b"cdir", b"canary2"],
        &[b"d", b"mid", b"canary"],
        &[b"d", b"mid", b"cdir"],
        &[b"d", b"cdir", b"canary2"],
        &[b"rel_file", b"x"],
        &[b"d", b"last", b"x"],
    ];
    for names in through {
        let mut body = le![d 0, d 500, w names.len()];
        for n in names {
            body.extend(le![s n]);
        }
        let (rid, r) = any(&mut c, TWALK, &body);
        if rid == TWALK + 1 {
            let n = u16::from_le_bytes([r[0], r[1]]) as usize;
            assert!(n < names.len(), "{model}: walked through {names:?}");
        }
        c.expect_err(TGETATTR, &le![d 500, q 0x7ff], 2);
    }
    // Every request on a fid that names a link (first, middle and last
    // component), and on a client-made link with an absolute target.
    let abs = area.outside.join("canary");
    c.ok(
        TSYMLINK,
        &le![d 0, s b"client_abs", s abs.as_os_str().as_bytes(), d 0],
    );
    c.ok(
        TSYMLINK,
        &le![d 0, s b"client_dir", s area.outside.as_os_str().as_bytes(), d 0],
    );
    let targets: [&[&[u8]]; 9] = [
        &[b"abs_dir"],
        &[b"rel_dir"],
        &[b"abs_file"],
        &[b"rel_file"],
        &[b"d", b"mid"],
        &[b"d", b"last"],
        &[b"d", b"cdir"],
        &[b"client_abs"],
        &[b"client_dir"],
    ];
    let mut next = 1000;
    for names in targets {
        battery(&mut c, &mut walker(names, &mut next), &area);
        area.assert_untouched(&format!("{model}: {names:?}"));
    }
    // 9P2000.u: create and wstat through the links.
    let mut u = srv.connect();
    u.version(8192, "9P2000.u");
    u.send(TATTACH, 0, &le![d 0, d NOFID, s b"", s b"", d 0]);
    u.recv();
    for (i, name) in ["abs_dir", "rel_dir", "abs_file", "client_abs"]
        .iter()
        .enumerate()
    {
        let f = 100 + 2 * i as u32;
        u.send(TWALK, 0, &le![d 0, d f, w 1, s name.as_bytes()]);
        u.recv();
        // perm 0666, mode ORDWR|OTRUNC.
        u.send(TCREATE, 0, &le![d f, s b"canary", d 0o666, b 0x12, s b""]);
        u.recv();
        u.send(TWALK, 0, &le![d 0, d f + 1, w 1, s name.as_bytes()]);
        u.recv();
        let body = le![
            w 0xffff, d 0xffff_ffffu32, b 0xff, d 0xffff_ffffu32, q u64::MAX, d 0o777,
            d 0xffff_ffffu32, d 0xffff_ffffu32, q 0, s b"", s b"", s b"", s b"", s b"",
            d 0xffff_ffffu32, d 0xffff_ffffu32, d 0xffff_ffffu32
        ];
        let stat = [le![w body.len()], body].concat();
        u.send(TWSTAT, 0, &[le![d f + 1, w stat.len()], stat].concat());
        u.recv();
        u.send(TOPEN, 0, &le![d f + 1, b 0x12]);
        u.recv();
    }
    drop(u);
    drop(c);
    drop(srv);
    area.finish(model);
}

#[test]
fn symlinks_in_every_position_passthrough() {
    symlinks_in_every_position("passthrough");
}

#[test]
fn symlinks_in_every_position_mapped_xattr() {
    symlinks_in_every_position("mapped-xattr");
}

#[test]
fn symlinks_in_every_position_mapped_file() {
    symlinks_in_every_position("mapped-file");
}

#[test]
fn symlinks_in_every_position_none() {
    symlinks_in_every_position("none");
}

/// `..` and names with '/', in every model: the root is a floor, and a
/// name is one component.
#[test]
fn dotdot_and_slashes_stay_inside() {
    for model in MODELS {
        let mut area = Area::new("dotdot");
        lay_out(&area);
        area.arm();
        let srv = serve(&area.export, model);
        let mut c = srv.connect();
        let root = c.attach();
        // ".." at the root is the root; below it, the parent; never above.
        assert_eq!(c.walk(0, 1, &[".."]), [le![w 1], root.clone()].concat());
        let r = c.walk(0, 2, &["..", "..", "..", "..", ".."]);
        assert_eq!(&r[r.len() - 13..], &root[..]);
        let r = c.walk(0, 3, &["d", "..", "..", "..", "d"]);
        assert_eq!(u16::from_le_bytes([r[0], r[1]]), 5);
        for names in [
            &["..", "outside"][..],
            &["..", "..", "outside", "canary"],
            &["d", "..", "..", "outside"],
        ] {
            let mut body = le![d 0, d 4, w names.len()];
            for n in names {
                body.extend(le![s n.as_bytes()]);
            }
            c.send(TWALK, 0, &body);
            let (rid, _, r) = c.recv();
            if rid == TWALK + 1 {
                let n = u16::from_le_bytes([r[0], r[1]]) as usize;
                assert!(n < names.len(), "{model}: {names:?}");
            }
            c.expect_err(TGETATTR, &le![d 4, q 0x7ff], 2);
        }
        // The aname of Tattach picks nothing.
        for aname in [&b"../outside"[..], area.outside.as_os_str().as_bytes()] {
            let r = c.ok(TATTACH, &le![d 10, d NOFID, s b"", s aname, d 0]);
            assert_eq!(r, root);
            c.ok(TCLUNK, &le![d 10]);
        }
        // Names with '/' are refused everywhere; "." and ".." as new names.
        let sl = |n: &str| n.as_bytes().to_vec();
        for bad in [
            "../outside",
            "../outside/canary",
            "d/../../outside",
            "/",
            "a/b",
        ] {
            c.expect_err(TWALK, &le![d 0, d 5, w 1, s &sl(bad)], 2);
            c.walk(0, 6, &[]);
            c.expect_err(
                TLCREATE,
                &le![d 6, s &sl(bad), d O_RDWR | O_TRUNC, d 0o666, d 0],
                2,
            );
            c.ok(TCLUNK, &le![d 6]);
            c.expect_err(TMKDIR, &le![d 0, s &sl(bad), d 0o777, d 0], 2);
            c.expect_err(TSYMLINK, &le![d 0, s &sl(bad), s b"x", d 0], 2);
            c.expect_err(
                TMKNOD,
                &le![d 0, s &sl(bad), d libc::S_IFIFO, d 0, d 0, d 0],
                2,
            );
            c.expect_err(TUNLINKAT, &le![d 0, s &sl(bad), d 0], 2);
            c.expect_err(TRENAMEAT, &le![d 0, s b"canary", d 0, s &sl(bad)], 2);
            c.expect_err(TRENAMEAT, &le![d 0, s &sl(bad), d 0, s b"stolen"], 2);
            c.walk(0, 7, &["canary"]);
            c.expect_err(TLINK, &le![d 0, d 7, s &sl(bad)], 2);
            c.expect_err(TRENAME, &le![d 7, d 0, s &sl(bad)], 2);
            c.ok(TCLUNK, &le![d 7]);
        }
        c.walk(0, 6, &[]);
        c.expect_err(TLCREATE, &le![d 6, s b"..", d O_RDWR, d 0o666, d 0], 17);
        c.expect_err(TMKDIR, &le![d 0, s b"..", d 0o777, d 0], 17);
        c.expect_err(TUNLINKAT, &le![d 0, s b"..", d 0], 39);
        c.expect_err(TRENAMEAT, &le![d 0, s b"..", d 0, s b"x"], 21);
        c.walk(0, 7, &["canary"]);
        c.expect_err(TRENAME, &le![d 7, d 0, s b".."], 21);
        // A directory fid walked up to the root and over.
        c.walk(0, 8, &["d", ".."]);
        c.expect_err(TMKDIR, &le![d 8, s b"..", d 0o777, d 0], 17);
        // The inside "canary" is the one read, never the outside one.
        c.walk(0, 9, &["d", "..", "..", "canary"]);
        c.ok(TLOPEN, &le![d 9, d O_RDONLY]);
        assert_eq!(
            c.ok(TREAD, &le![d 9, q 0, d 100]),
            le![d 13, x b"inside canary"]
        );
        drop(c);
        drop(srv);
        area.finish(&format!("{model}: dotdot"));
    }
}

/// `renameat2(..., RENAME_EXCHANGE)`: swaps two names atomically.
fn exchange(a: &Path, b: &Path) -> bool {
    let a = CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: both paths are NUL-terminated and alive for the call; the
    // syscall only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    r == 0
}

/// A directory the client works in is swapped, again and again, with a
/// symlink to the canary's directory: between Twalk and Tlopen, and during
/// every other request. The requests that land on the symlink must fail;
/// none may reach outside.
fn race(model: &str, iterations: usize) {
    let mut area = Area::new("race");
    let e = area.export.clone();
    fs::create_dir(e.join("sw")).unwrap();
    fs::write(e.join("sw/canary"), b"inside").unwrap();
    fs::create_dir(e.join("sw/cdir")).unwrap();
    symlink(&area.outside, e.join("sw_alt")).unwrap();
    area.arm();
    let srv = serve(&e, model);
    let mut c = srv.connect();
    c.attach();
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU32::new(0));
    let swapper = {
        let (stop, swaps) = (Arc::clone(&stop), Arc::clone(&swaps));
        let (a, b) = (e.join("sw"), e.join("sw_alt"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if exchange(&a, &b) {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::yield_now();
            }
        })
    };
    let (mut ok, mut failed) = (0u32, 0u32);
    let mut count = |r: bool| if r { ok += 1 } else { failed += 1 };
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..iterations {
        if Instant::now() > deadline {
            break;
        }
        // Walk while it may be the directory, then act while it may be
        // the link.
        let have_file = try_walk(&mut c, 0, 1, &[b"sw", b"canary"]);
        let have_dir = try_walk(&mut c, 0, 2, &[b"sw"]);
        count(have_file);
        if have_file {
            let r = match i % 8 {
                0 | 1 => {
                    let r = succeeded(&mut c, TLOPEN, &le![d 1, d O_RDWR | O_TRUNC]);
                    if r {
                        any(&mut c, TWRITE, &le![d 1, q 0, d 3, x b"pwn"]);
                        any(&mut c, TREAD, &le![d 1, q 0, d 10]);
                    }
                    r
                }
                2 => succeeded(
                    &mut c,
                    TSETATTR,
                    &le![d 1, d 0x8, d 0, d 0, d 0, q 0, q 0, q 0, q 0, q 0],
                ),
                3 => succeeded(
                    &mut c,
                    TSETATTR,
                    &le![d 1, d 0x7, d 0o777, d 4242, d 4242, q 0, q 0, q 0, q 0, q 0],
                ),
                4 => succeeded(&mut c, TGETATTR, &le![d 1, q 0x7ff]),
                5 => {
                    let r = succeeded(&mut c, TXATTRCREATE, &le![d 1, s b"user.e", q 1, d 0]);
                    if r {
                        any(&mut c, TWRITE, &le![d 1, q 0, d 1, x b"e"]);
                    }
                    r
                }
                6 => succeeded(&mut c, TLINK, &le![d 0, d 1, s b"stolen"]),
                // A rename onto its own name: both paths resolved, nothing
                // moved.
                _ => succeeded(&mut c, TRENAME, &le![d 1, d NOFID, s b"canary"]),
            };
            count(r);
            any(&mut c, TCLUNK, &le![d 1]);
            // The link went to the export's root (never through the swap).
            let _ = fs::remove_file(e.join("stolen"));
        }
        if have_dir {
            let r = match i % 6 {
                0 => {
                    let r = succeeded(
                        &mut c,
                        TLCREATE,
                        &le![d 2, s b"canary", d O_RDWR | O_TRUNC, d 0o666, d 0],
                    );
                    if r {
                        any(&mut c, TWRITE, &le![d 2, q 0, d 3, x b"pwn"]);
                    }
                    r
                }
                1 => succeeded(&mut c, TUNLINKAT, &le![d 2, s b"canary", d 0]),
                2 => {
                    let r = succeeded(&mut c, TLOPEN, &le![d 2, d O_DIRECTORY]);
                    if r {
                        any(&mut c, TREADDIR, &le![d 2, q 0, d 4000]);
                    }
                    r
                }
                3 => succeeded(&mut c, TRENAMEAT, &le![d 2, s b"canary", d 2, s b"c2"]),
                4 => succeeded(&mut c, TRENAMEAT, &le![d 2, s b"c2", d 2, s b"canary"]),
                _ => succeeded(&mut c, TMKDIR, &le![d 2, s b"cdir", d 0o777, d 0]),
            };
            count(r);
            any(&mut c, TCLUNK, &le![d 2]);
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    drop(c);
    drop(srv);
    eprintln!(
        "{model}: {} swaps, {ok} requests through, {failed} refused",
        swaps.load(Ordering::Relaxed)
    );
    assert!(swaps.load(Ordering::Relaxed) > 0);
    assert!(ok > 0 && failed > 0, "both states were hit: {ok} {failed}");
    area.finish(&format!("{model}: race"));
}

#[test]
fn swapped_directory_race_passthrough() {
    race("passthrough", 3000);
}

#[test]
fn swapped_directory_race_mapped_file() {
    race("mapped-file", 1500);
}

#[test]
fn swapped_directory_race_mapped_xattr() {
    race("mapped-xattr", 1000);
}

#[test]
fn swapped_directory_race_none() {
    race("none", 1000);
}

/// A directory with fids below it is renamed away on the host and a
/// symlink to the canary's directory takes its name: the fids' paths now
/// read as outside paths, and must fail.
#[test]
fn directory_renamed_on_the_host_under_fids() {
    for model in MODELS {
        let mut area = Area::new("hostmv");
        let e = area.export.clone();
        fs::create_dir(e.join("m")).unwrap();
        fs::write(e.join("m/canary"), b"inside").unwrap();
        fs::create_dir(e.join("m/cdir")).unwrap();
        fs::write(e.join("m/cdir/canary2"), b"inside").unwrap();
        area.arm();
        let srv = serve(&e, model);
        let mut c = srv.connect();
        c.attach();
        // Fids on the file, the directory and below, made before the swap.
        let mut pool: Vec<u32> = Vec::new();
        let paths: [&[&str]; 4] = [
            &["m", "canary"],
            &["m"],
            &["m", "cdir"],
            &["m", "cdir", "canary2"],
        ];
        let mut next = 100;
        for names in paths {
            for _ in 0..60 {
                c.walk(0, next, names);
                pool.push(next);
                next += 1;
            }
        }
        // One file kept open: it keeps working through its handle (it is
        // the inside file, wherever the host moved it).
        c.walk(0, 50, &["m", "canary"]);
        c.ok(TLOPEN, &le![d 50, d O_RDWR]);
        fs::rename(e.join("m"), area.base.join("moved")).unwrap();
        // (Re)planted before each request: a Tremove or Trename of a fid
        // named "m" legitimately takes the link away.
        let plant = |target: &Path| {
            if fs::symlink_metadata(e.join("m")).is_err() {
                symlink(target, e.join("m")).unwrap();
            }
        };
        plant(Path::new("../outside"));
        assert_eq!(c.ok(TWRITE, &le![d 50, q 0, d 2, x b"ok"]), le![d 2]);
        assert_eq!(fs::read(area.base.join("moved/canary")).unwrap(), b"okside");
        for chunk in pool.chunks(60) {
            let mut it = chunk.iter().copied();
            battery(
                &mut c,
                &mut |_c: &mut Client| {
                    plant(Path::new("../outside"));
                    it.next()
                },
                &area,
            );
            area.assert_untouched(&format!("{model}: fids below a renamed directory"));
        }
        // New walks stop at the link.
        assert!(!try_walk(&mut c, 0, 900, &[b"m", b"canary"]));
        // The same with the directory moved within the export.
        fs::remove_file(e.join("m")).unwrap();
        fs::rename(area.base.join("moved"), e.join("m")).unwrap();
        let mut pool = Vec::new();
        for names in paths {
            for _ in 0..60 {
                c.walk(0, next, names);
                pool.push(next);
                next += 1;
            }
        }
        fs::rename(e.join("m"), e.join("m2")).unwrap();
        let outside = area.outside.clone();
        for chunk in pool.chunks(60) {
            let mut it = chunk.iter().copied();
            battery(
                &mut c,
                &mut |_c: &mut Client| {
                    plant(&outside);
                    it.next()
                },
                &area,
            );
        }
        drop(c);
        drop(srv);
        area.finish(&format!("{model}: host rename"));
    }
}

/// No fid can name the canary, so no Tlink can link it in: its link count
/// never moves, whatever fid Tlink is given.
#[test]
fn tlink_of_an_outside_file_is_impossible() {
    for model in MODELS {
        let mut area = Area::new("tlink");
        lay_out(&area);
        area.arm();
        let srv = serve(&area.export, model);
        let mut c = srv.connect();
        c.attach();
        for (f, names) in (10u32..).zip([
            &["abs_file"][..],
            &["rel_file"],
            &["d", "last"],
            &["abs_dir", "canary"],
            &["d", "mid", "canary"],
            &["..", "outside", "canary"],
        ]) {
            let names: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
            if try_walk(&mut c, 0, f, &names) {
                // Only a link itself can be named; linking it links the
                // link, inside.
                any(&mut c, TLINK, &le![d 0, d f, s b"hard"]);
                if let Ok(m) = fs::symlink_metadata(area.export.join("hard")) {
                    assert!(m.file_type().is_symlink(), "{model}: {names:?}");
                    assert_eq!(m.nlink(), 2);
                    fs::remove_file(area.export.join("hard")).unwrap();
                }
                let m = fs::symlink_metadata(area.outside.join("canary")).unwrap();
                assert_eq!(m.nlink(), 1, "{model}: {names:?}");
            }
        }
        drop(c);
        drop(srv);
        area.finish(&format!("{model}: Tlink"));
    }
}

/// The mapped models' metadata is out of the client's reach: mapped-file's
/// `.virtfs_metadata` and `.virtfs_metadata_root` by any name operation,
/// listing or walk; mapped-xattr's `user.virtfs.*` by any xattr request.
/// In the other models those are ordinary names, as in QEMU (mapped-file
/// passes xattrs through, so `user.virtfs.*` is an ordinary xattr there,
/// with no meaning). Also: metadata a host planted as symlinks to the
/// canary is never followed.
#[test]
fn metadata_is_unreachable_in_every_model() {
    for model in MODELS {
        let mut area = Area::new("meta");
        let e = area.export.clone();
        fs::create_dir(e.join("md")).unwrap();
        fs::write(e.join("md/x"), b"x").unwrap();
        fs::create_dir(e.join("md2")).unwrap();
        fs::write(e.join("md2/y"), b"y").unwrap();
        if model == "mapped-file" {
            // Planted metadata: a metadata directory and a metadata file
            // that are symlinks into the canary, and a root metadata file
            // that is one.
            symlink("../../outside/cdir", e.join("md/.virtfs_metadata")).unwrap();
            fs::create_dir(e.join("md2/.virtfs_metadata")).unwrap();
            symlink("../../../outside/canary", e.join("md2/.virtfs_metadata/y")).unwrap();
            symlink("../outside/canary", e.join(".virtfs_metadata_root")).unwrap();
        }
        area.arm();
        let srv = serve(&e, model);
        let mut c = srv.connect();
        c.version(32768, "9P2000.L");
        c.ok(TATTACH, &le![d 0, d NOFID, s b"", s b"", d 1234]);
        // Make some metadata the client's way.
        c.walk(0, 1, &[]);
        c.ok(TLCREATE, &le![d 1, s b"f", d O_RDWR, d 0o640, d 2345]);
        c.ok(TCLUNK, &le![d 1]);
        c.ok(TMKDIR, &le![d 0, s b"d", d 0o750, d 2345]);
        c.walk(0, 2, &["d"]);
        c.ok(TMKDIR, &le![d 2, s b"sub", d 0o750, d 2345]);
        let metaname: [&[u8]; 2] = [b".virtfs_metadata", b".virtfs_metadata_root"];
        if model == "mapped-file" {
            let snap_meta = fs::read(e.join(".virtfs_metadata/f")).unwrap();
            for name in metaname {
                c.expect_err(TWALK, &le![d 0, d 3, w 1, s name], 22);
                c.expect_err(TWALK, &le![d 0, d 3, w 2, s name, s b"f"], 22);
                let r = c.ok(TWALK, &le![d 0, d 3, w 2, s b"d", s name]);
                assert_eq!(u16::from_le_bytes([r[0], r[1]]), 1);
                c.walk(0, 4, &[]);
                c.expect_err(
                    TLCREATE,
                    &le![d 4, s name, d O_RDWR | O_TRUNC, d 0o666, d 0],
                    22,
                );
                c.ok(TCLUNK, &le![d 4]);
                c.expect_err(TMKDIR, &le![d 0, s name, d 0o777, d 0], 22);
                c.expect_err(TMKDIR, &le![d 2, s name, d 0o777, d 0], 22);
                c.expect_err(
                    TMKNOD,
                    &le![d 0, s name, d libc::S_IFIFO, d 0, d 0, d 0],
                    22,
                );
                c.expect_err(TSYMLINK, &le![d 0, s name, s b"/", d 0], 22);
                c.walk(0, 5, &["f"]);
                c.expect_err(TLINK, &le![d 0, d 5, s name], 22);
                c.expect_err(TRENAME, &le![d 5, d 0, s name], 22);
                c.ok(TCLUNK, &le![d 5]);
                c.expect_err(TRENAMEAT, &le![d 0, s name, d 0, s b"stolen"], 22);
                c.expect_err(TRENAMEAT, &le![d 0, s b"f", d 0, s name], 22);
                c.expect_err(TUNLINKAT, &le![d 0, s name, d 0], 22);
                c.expect_err(TUNLINKAT, &le![d 0, s name, d 0x200], 22);
            }
            // Not listed, at the root or below.
            for (fid, names) in [(6u32, &[][..]), (7, &["d"][..])] {
                c.walk(0, fid, names);
                c.ok(TLOPEN, &le![d fid, d O_DIRECTORY]);
                let r = c.ok(TREADDIR, &le![d fid, q 0, d 8000]);
                assert!(
                    !r.windows(16).any(|w| w == b".virtfs_metadata"),
                    "{model}: listed"
                );
            }
            assert_eq!(fs::read(e.join(".virtfs_metadata/f")).unwrap(), snap_meta);
            // Planted symlinks are not followed: creating in md fails
            // (its metadata directory is no directory), md2/y's
            // credentials stay the host's, and the root's chown fails.
            c.walk(0, 8, &["md"]);
            c.expect_err(TMKDIR, &le![d 8, s b"new", d 0o777, d 0], 20);
            c.walk(0, 9, &["md", "x"]);
            any(
                &mut c,
                TSETATTR,
                &le![d 9, d 0x1, d 0o777, d 0, d 0, q 0, q 0, q 0, q 0, q 0],
            );
            c.walk(0, 10, &["md2", "y"]);
            let r = c.ok(TGETATTR, &le![d 10, q 0x7ff]);
            let uid = u32::from_le_bytes(r[25..29].try_into().unwrap());
            assert_eq!(uid, 0, "md2/y keeps the host's owner");
            c.expect_err(
                TSETATTR,
                &le![d 10, d 0x2, d 0, d 7, d 0, q 0, q 0, q 0, q 0, q 0],
                40,
            );
            c.expect_err(
                TSETATTR,
                &le![d 0, d 0x6, d 0, d 7, d 7, q 0, q 0, q 0, q 0, q 0],
                40,
            );
            c.expect_err(TUNLINKAT, &le![d 0, s b"md2", d 0x200], 39);
            any(&mut c, TUNLINKAT, &le![d 8, s b"x", d 0]);
        } else {
            // Ordinary names here, as in QEMU.
            c.ok(TMKDIR, &le![d 0, s metaname[0], d 0o700, d 0]);
            c.walk(0, 3, &[".virtfs_metadata"]);
            c.ok(
                TMKNOD,
                &le![d 0, s metaname[1], d libc::S_IFREG | 0o600, d 0, d 0, d 0],
            );
        }
        c.walk(0, 11, &["f"]);
        let hidden = model == "mapped-xattr";
        for name in ["user.virtfs.uid", "user.virtfs.gid", "user.virtfs.mode"] {
            let walked = any(&mut c, TXATTRWALK, &le![d 11, d 12, s name.as_bytes()]);
            if hidden {
                assert_eq!(walked, (RLERROR, le![d 61]), "{model}: {name}");
            } else if walked.0 != RLERROR {
                c.ok(TCLUNK, &le![d 12]);
            }
        }
        // Set and remove.
        for size in [4u64, 0] {
            c.walk(0, 13, &["f"]);
            c.ok(TXATTRCREATE, &le![d 13, s b"user.virtfs.uid", q size, d 0]);
            if size > 0 {
                c.ok(TWRITE, &le![d 13, q 0, d 4, x &0u32.to_le_bytes()]);
            }
            let r = any(&mut c, TCLUNK, &le![d 13]);
            if hidden {
                assert_eq!(r, (RLERROR, le![d 13]), "{model}: set/remove");
            }
        }
        if hidden {
            let list = c.ok(TXATTRWALK, &le![d 11, d 14, s b""]);
            let size = u64::from_le_bytes(list[..8].try_into().unwrap());
            let data = c.ok(TREAD, &le![d 14, q 0, d size]);
            assert!(
                !data.windows(12).any(|w| w == b"user.virtfs."),
                "{model}: listed {data:?}"
            );
            // The client's credentials are intact.
            let r = c.ok(TGETATTR, &le![d 11, q 0x7ff]);
            let uid = u32::from_le_bytes(r[25..29].try_into().unwrap());
            assert_eq!(uid, 1234);
        }
        drop(c);
        drop(srv);
        area.finish(&format!("{model}: metadata"));
    }
}
