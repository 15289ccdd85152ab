//! The server over a real Unix socket on the local driver (passthrough and
//! none), against a temp directory: replies byte for byte, host state
//! checked with std::fs.

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use coro9p::{Compat, Hops};

fn export_dir() -> TempDir {
    temp_dir("local")
}

fn serve(dir: &Path, model: &str) -> TestServer {
    TestServer::start(
        &format!("local,path={},security_model={model}", dir.display()),
        Compat::Master,
    )
}

/// The qid QEMU master gives `p` (multidevs=remap: one device, so the
/// first suffix: ino * 2 + 1).
fn qid_of(p: &Path) -> Vec<u8> {
    let m = fs::symlink_metadata(p).unwrap();
    let ty: u8 = if m.is_dir() {
        0x80
    } else if m.file_type().is_symlink() {
        2
    } else {
        0
    };
    let version = (m.mtime() ^ ((m.size() as i64) << 8)) as u32;
    le![b ty, d version, q (m.ino() << 1) | 1]
}

fn walk1(c: &mut Client, fid: u32, newfid: u32, name: &str) -> Vec<u8> {
    c.walk(fid, newfid, &[name])
}

#[test]
fn attach_and_walk_give_remapped_qids() {
    let dir = export_dir();
    fs::create_dir(dir.join("sub")).unwrap();
    fs::write(dir.join("sub/f"), b"hello").unwrap();
    let srv = serve(&dir, "passthrough");
    let mut c = srv.connect();
    assert_eq!(c.attach(), qid_of(&dir));
    let mut want = le![w 2];
    want.extend(qid_of(&dir.join("sub")));
    want.extend(qid_of(&dir.join("sub/f")));
    assert_eq!(c.walk(0, 1, &["sub", "f"]), want);
    // ".." at the root stays at the root; ".." below it goes up.
    assert_eq!(walk1(&mut c, 0, 2, ".."), [le![w 1], qid_of(&dir)].concat());
    let mut want = le![w 2];
    want.extend(qid_of(&dir.join("sub")));
    want.extend(qid_of(&dir));
    assert_eq!(c.walk(0, 3, &["sub", ".."]), want);
}

#[test]
fn create_write_read_and_clunk_a_file() {
    let dir = export_dir();
    let srv = serve(&dir, "passthrough");
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &[]);
    // O_RDWR, mode 0640, gid 0.
    let r = c.ok(TLCREATE, &le![d 1, s b"new", d 2, d 0o640, d 0]);
    let host = dir.join("new");
    assert_eq!(&r[..13], &qid_of(&host)[..]);
    let st = fs::metadata(&host).unwrap();
    assert_eq!(st.permissions().mode() & 0o7777, 0o640);
    assert_eq!(
        c.ok(TWRITE, &le![d 1, q 0, d 11, x b"hello world"]),
        le![d 11]
    );
    assert_eq!(c.ok(TREAD, &le![d 1, q 6, d 100]), le![d 5, x b"world"]);
    assert_eq!(c.ok(TCLUNK, &le![d 1]), le![]);
    assert_eq!(fs::read(&host).unwrap(), b"hello world");
    // The name is taken now.
    c.walk(0, 2, &[]);
    c.expect_err(TLCREATE, &le![d 2, s b"new", d 0o302, d 0o640, d 0], 17);
    c.expect_err(TLCREATE, &le![d 2, s b"..", d 0, d 0o640, d 0], 17);
    c.expect_err(TLCREATE, &le![d 2, s b"a/b", d 0, d 0o640, d 0], 2);
}

#[test]
fn lopen_of_a_directory_and_readdir_with_types() {
    let dir = export_dir();
    fs::create_dir(dir.join("d")).unwrap();
    fs::write(dir.join("f"), b"").unwrap();
    let srv = serve(&dir, "passthrough");
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &[]);
    let r = c.ok(TLOPEN, &le![d 1, d 0o200000]);
    assert_eq!(r, [qid_of(&dir), le![d 0]].concat());
    let r = c.ok(TREADDIR, &le![d 1, q 0, d 8000]);
    let data = &r[4..];
    let mut names = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let qid = &data[i..i + 13];
        let ty = data[i + 21];
        let len = u16::from_le_bytes([data[i + 22], data[i + 23]]) as usize;
        let name = String::from_utf8(data[i + 24..i + 24 + len].to_vec()).unwrap();
        let host = match name.as_str() {
            "." => dir.clone(),
            ".." => dir.parent().unwrap().to_path_buf(),
            n => dir.join(n),
        };
        if name != ".." {
            assert_eq!(qid, &qid_of(&host)[..], "{name}");
        }
        let want_ty = if host.is_dir() { 4 } else { 8 };
        assert_eq!(ty, want_ty, "{name}");
        names.push(name);
        i += 24 + len;
    }
    names.sort();
    assert_eq!(names, [".", "..", "d", "f"]);
}

#[test]
fn mkdir_symlink_link_mknod_readlink() {
    let dir = export_dir();
    fs::write(dir.join("target"), b"t").unwrap();
    let srv = serve(&dir, "passthrough");
    let mut c = srv.connect();
    c.attach();
    let r = c.ok(TMKDIR, &le![d 0, s b"dir", d 0o750, d 0]);
    assert_eq!(r, qid_of(&dir.join("dir")));
    assert_eq!(
        fs::metadata(dir.join("dir")).unwrap().permissions().mode() & 0o777,
        0o750
    );
    let r = c.ok(TSYMLINK, &le![d 0, s b"ln", s b"target", d 0]);
    assert_eq!(r, qid_of(&dir.join("ln")));
    assert_eq!(fs::read_link(dir.join("ln")).unwrap(), Path::new("target"));
    c.walk(0, 1, &["ln"]);
    assert_eq!(c.ok(TREADLINK, &le![d 1]), le![s b"target"]);
    c.walk(0, 2, &["target"]);
    assert_eq!(c.ok(TLINK, &le![d 0, d 2, s b"hard"]), le![]);
    assert_eq!(
        fs::metadata(dir.join("hard")).unwrap().ino(),
        fs::metadata(dir.join("target")).unwrap().ino()
    );
    let r = c.ok(
        TMKNOD,
        &le![d 0, s b"fifo", d (libc::S_IFIFO | 0o600), d 0, d 0, d 0],
    );
    assert_eq!(r, qid_of(&dir.join("fifo")));
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(dir.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    c.expect_err(TMKDIR, &le![d 0, s b"dir", d 0o750, d 0], 17);
}

#[test]
fn unlinkat_renameat_rename_remove() {
    let dir = export_dir();
    fs::create_dir(dir.join("d")).unwrap();
    fs::write(dir.join("a"), b"a").unwrap();
    fs::write(dir.join("b"), b"b").unwrap();
    fs::write(dir.join("c"), b"c").unwrap();
    let srv = serve(&dir, "passthrough");
    let mut c = srv.connect();
    c.attach();
    // A directory needs AT_REMOVEDIR.
    c.expect_err(TUNLINKAT, &le![d 0, s b"d", d 0], 21);
    assert_eq!(c.ok(TUNLINKAT, &le![d 0, s b"d", d 0x200]), le![]);
    assert!(!dir.join("d").exists());
    assert_eq!(c.ok(TUNLINKAT, &le![d 0, s b"a", d 0]), le![]);
    assert!(!dir.join("a").exists());
    c.expect_err(TUNLINKAT, &le![d 0, s b"a", d 0], 2);
    assert_eq!(c.ok(TRENAMEAT, &le![d 0, s b"b", d 0, s b"b2"]), le![]);
    assert_eq!(fs::read(dir.join("b2")).unwrap(), b"b");
    // Trename moves the fid with the file.
    c.walk(0, 1, &["c"]);
    assert_eq!(c.ok(TRENAME, &le![d 1, d NOFID, s b"c2"]), le![]);
    assert_eq!(fs::read(dir.join("c2")).unwrap(), b"c");
    c.ok(TLOPEN, &le![d 1, d 0]);
    assert_eq!(c.ok(TREAD, &le![d 1, q 0, d 10]), le![d 1, x b"c"]);
    // Tremove of an open fid removes the file and clunks the fid.
    assert_eq!(c.ok(TREMOVE, &le![d 1]), le![]);
    assert!(!dir.join("c2").exists());
    c.expect_err(TGETATTR, &le![d 1, q 0x7ff], 2);
    c.expect_err(TRENAME, &le![d 0, d NOFID, s b".."], 21);
}

#[test]
fn getattr_and_setattr() {
    let dir = export_dir();
    fs::write(dir.join("f"), b"0123456789").unwrap();
    let srv = serve(&dir, "passthrough");
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["f"]);
    let r = c.ok(TGETATTR, &le![d 1, q 0x7ff]);
    let m = fs::metadata(dir.join("f")).unwrap();
    let blksize = (32768 - 24) / m.blksize() * m.blksize();
    let want = le![
        q 0x7ff, x &qid_of(&dir.join("f")), d m.mode(), d m.uid(), d m.gid(), q m.nlink(),
        q m.rdev(), q m.size(), q blksize, q m.blocks(), q m.atime(), q m.atime_nsec(),
        q m.mtime(), q m.mtime_nsec(), q m.ctime(), q m.ctime_nsec(), q 0, q 0, q 0, q 0
    ];
    assert_eq!(r, want);
    // mode 0600 and size 4 (the truncate comes last and touches mtime).
    c.ok(
        TSETATTR,
        &le![d 1, d 0x1 | 0x8, d 0o600, d 0, d 0, q 4, q 0, q 0, q 0, q 0],
    );
    let m = fs::metadata(dir.join("f")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!(m.size(), 4);
    // mtime set to 1000.5, atime left alone.
    let atime = (m.atime(), m.atime_nsec());
    c.ok(
        TSETATTR,
        &le![d 1, d 0x20 | 0x100, d 0, d 0, d 0, q 0, q 0, q 0, q 1000, q 500],
    );
    let m = fs::metadata(dir.join("f")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1000, 500));
    assert_eq!((m.atime(), m.atime_nsec()), atime);
    c.expect_err(
        TSETATTR,
        &le![d 7, d 0, d 0, d 0, d 0, q 0, q 0, q 0, q 0, q 0],
        22,
    );
    // The generation number where the file system has one (ext4 here).
    let r = c.ok(TGETATTR, &le![d 1, q 0x3fff]);
    assert_eq!(&r[..8], &le![q 0x17ff][..], "GEN is valid on ext4");
}

#[test]
fn use_after_unlink_goes_through_the_open_handle() {
    let dir = export_dir();
    let srv = serve(&dir, "passthrough");
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &[]);
    c.ok(TLCREATE, &le![d 1, s b"doa", d 2, d 0o644, d 0]);
    c.ok(TUNLINKAT, &le![d 0, s b"doa", d 0]);
    assert!(!dir.join("doa").exists());
    let r = c.ok(TGETATTR, &le![d 1, q 0x7ff]);
    assert_eq!(&r[..8], &le![q 0x7ff][..]);
    assert_eq!(c.ok(TWRITE, &le![d 1, q 0, d 3, x b"abc"]), le![d 3]);
    c.ok(
        TSETATTR,
        &le![d 1, d 0x8, d 0, d 0, d 0, q 2001, q 0, q 0, q 0, q 0],
    );
    let r = c.ok(TGETATTR, &le![d 1, q 0x7ff]);
    // size is at offset 8 + 13 + 4 + 4 + 4 + 8 + 8.
    assert_eq!(&r[49..57], &le![q 2001][..]);
}

#[test]
fn xattrs_are_created_committed_at_clunk_and_walked_back() {
    let dir = export_dir();
    fs::write(dir.join("f"), b"").unwrap();
    let srv = serve(&dir, "passthrough");
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["f"]);
    c.ok(TXATTRCREATE, &le![d 1, s b"user.colour", q 4, d 0]);
    assert_eq!(c.ok(TWRITE, &le![d 1, q 0, d 4, x b"blue"]), le![d 4]);
    assert_eq!(c.ok(TCLUNK, &le![d 1]), le![]);
    assert_eq!(
        lgetxattr(&dir.join("f"), "user.colour").as_deref(),
        Some(&b"blue"[..])
    );
    c.walk(0, 2, &["f"]);
    assert_eq!(c.ok(TXATTRWALK, &le![d 2, d 3, s b"user.colour"]), le![q 4]);
    assert_eq!(c.ok(TREAD, &le![d 3, q 0, d 100]), le![d 4, x b"blue"]);
    assert_eq!(c.ok(TREAD, &le![d 3, q 2, d 100]), le![d 2, x b"ue"]);
    c.ok(TCLUNK, &le![d 3]);
    let list = c.ok(TXATTRWALK, &le![d 2, d 4, s b""]);
    assert_eq!(list, le![q 12]);
    assert_eq!(
        c.ok(TREAD, &le![d 4, q 0, d 100]),
        le![d 12, x b"user.colour\0"]
    );
    c.expect_err(TXATTRWALK, &le![d 2, d 5, s b"user.missing"], 61);
    c.expect_err(TXATTRWALK, &le![d 2, d 5, s b"trusted.x"], 95);
}

#[test]
fn statfs_lock_getlock_fsync() {
    let dir = export_dir();
    fs::write(dir.join("f"), b"").unwrap();
    let srv = serve(&dir, "passthrough");
    let mut c = srv.connect();
    c.attach();
    let r = c.ok(TSTATFS, &le![d 0]);
    let st = nix::sys::statfs::statfs(dir.as_path()).unwrap();
    let bsize = st.block_size() as u64;
    let factor = ((32768 - 24) / bsize).max(1);
    assert_eq!(&r[..4], &le![d st.filesystem_type().0][..]);
    assert_eq!(&r[4..8], &le![d bsize * factor][..]);
    c.walk(0, 1, &["f"]);
    c.expect_err(TLOCK, &le![d 1, b 1, d 0, q 0, q 0, d 1, s b"c"], 9);
    c.ok(TLOPEN, &le![d 1, d 2]);
    assert_eq!(
        c.ok(TLOCK, &le![d 1, b 1, d 1, q 0, q 10, d 42, s b"me"]),
        le![b 0]
    );
    assert_eq!(
        c.ok(TGETLOCK, &le![d 1, b 1, q 3, q 4, d 42, s b"me"]),
        le![b 2, q 3, q 4, d 42, s b"me"]
    );
    assert_eq!(c.ok(TFSYNC, &le![d 1, d 1]), le![]);
}

#[test]
fn special_files_and_symlinks_are_not_opened() {
    let dir = export_dir();
    nix::unistd::mkfifo(
        &dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("escape")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("etc")).unwrap();
    let srv = serve(&dir, "passthrough");
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["fifo"]);
    c.expect_err(TLOPEN, &le![d 1, d 0], 6);
    c.walk(0, 2, &["escape"]);
    c.expect_err(TLOPEN, &le![d 2, d 0], 40);
    // Walking through a symlink to a directory outside stops at the link:
    // a partial walk.
    assert_eq!(
        c.walk(0, 3, &["etc", "passwd"]),
        [le![w 1], qid_of(&dir.join("etc"))].concat()
    );
    c.walk(0, 3, &["etc"]);
    // O_DIRECTORY|O_NOFOLLOW on a symlink: the kernel says ENOTDIR.
    c.expect_err(TLOPEN, &le![d 3, d 0o200000], 20);
    c.expect_err(TMKDIR, &le![d 3, s b"x", d 0o755, d 0], 20);
}

#[test]
fn the_9p2000u_path_open_create_stat_wstat_and_directory_reads() {
    let dir = export_dir();
    fs::write(dir.join("f"), b"12345").unwrap();
    let srv = serve(&dir, "passthrough");
    let mut c = srv.connect();
    c.version(8192, "9P2000.u");
    c.send(TATTACH, 0, &le![d 0, d NOFID, s b"", s b"", d 0]);
    assert_eq!(c.recv().2, qid_of(&dir));
    // Tcreate a file (perm 0644, mode ORDWR) and a directory.
    c.send(TWALK, 0, &le![d 0, d 1, w 0]);
    c.recv();
    c.send(TCREATE, 0, &le![d 1, s b"made", d 0o644, b 2, s b""]);
    let (id, _, body) = c.recv();
    assert_eq!(id, TCREATE + 1);
    assert_eq!(&body[..13], &qid_of(&dir.join("made"))[..]);
    c.send(TWALK, 0, &le![d 0, d 2, w 0]);
    c.recv();
    c.send(
        TCREATE,
        0,
        &le![d 2, s b"sub", d 0x8000_01ed_u32, b 0, s b""],
    );
    assert_eq!(c.recv().0, TCREATE + 1);
    assert!(dir.join("sub").is_dir());
    c.send(TWALK, 0, &le![d 0, d 3, w 0]);
    c.recv();
    c.send(
        TCREATE,
        0,
        &le![d 3, s b"sl", d 0x0200_01ff_u32, b 0, s b"f"],
    );
    assert_eq!(c.recv().0, TCREATE + 1);
    assert_eq!(fs::read_link(dir.join("sl")).unwrap(), Path::new("f"));
    // Tstat of the symlink carries its target.
    c.send(TWALK, 0, &le![d 0, d 4, w 1, s b"sl"]);
    c.recv();
    c.send(TSTAT, 0, &le![d 4]);
    let (id, _, body) = c.recv();
    assert_eq!(id, TSTAT + 1);
    assert!(
        body.ends_with(&le![s b"f", d 0, d 0, d 0]) || body.windows(3).any(|w| w == le![s b"f"])
    );
    // Twstat: chmod and truncate f.
    c.send(TWALK, 0, &le![d 0, d 5, w 1, s b"f"]);
    c.recv();
    let dont = |mode: u32, length: u64| {
        let body = le![
            w 0xffff, d 0xffff_ffffu32, b 0xff, d 0xffff_ffffu32, q u64::MAX, d mode,
            d 0xffff_ffffu32, d 0xffff_ffffu32, q length, s b"", s b"", s b"", s b"", s b"",
            d 0xffff_ffffu32, d 0xffff_ffffu32, d 0xffff_ffffu32
        ];
        let mut stat = le![w body.len()];
        stat.extend(body);
        stat
    };
    let st = dont(0o600, 2);
    c.send(TWSTAT, 0, &[le![d 5, w st.len()], st].concat());
    assert_eq!(c.recv(), (TWSTAT + 1, 0, vec![]));
    let m = fs::metadata(dir.join("f")).unwrap();
    assert_eq!((m.mode() & 0o777, m.size()), (0o600, 2));
    // A directory read lists stat records.
    c.send(TWALK, 0, &le![d 0, d 6, w 0]);
    c.recv();
    c.send(TOPEN, 0, &le![d 6, b 0]);
    assert_eq!(c.recv().0, TOPEN + 1);
    c.send(TREAD, 0, &le![d 6, q 0, d 4000]);
    let (id, _, body) = c.recv();
    assert_eq!(id, TREAD + 1);
    let count = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
    assert_eq!(count, body.len() - 4);
    let mut names = Vec::new();
    let mut i = 4;
    while i < body.len() {
        let size = u16::from_le_bytes([body[i], body[i + 1]]) as usize;
        let name_at = i + 2 + 39;
        let len = u16::from_le_bytes([body[name_at], body[name_at + 1]]) as usize;
        names.push(String::from_utf8(body[name_at + 2..name_at + 2 + len].to_vec()).unwrap());
        i += size + 2;
    }
    names.sort();
    assert_eq!(names, [".", "..", "f", "made", "sl", "sub"]);
}

#[test]
fn none_ignores_a_failing_chown_on_create() {
    let dir = export_dir();
    let srv = serve(&dir, "none");
    let mut c = srv.connect();
    c.version(32768, "9P2000.L");
    // Attach as uid 4242: new files are chowned to it, which works as root
    // and is ignored under "none" when it does not.
    c.ok(TATTACH, &le![d 0, d NOFID, s b"", s b"", d 4242]);
    c.ok(TMKDIR, &le![d 0, s b"d", d 0o755, d 4343]);
    let m = fs::metadata(dir.join("d")).unwrap();
    if nix::unistd::geteuid().is_root() {
        assert_eq!((m.uid(), m.gid()), (4242, 4343));
    }
}

#[test]
fn readonly_export_refuses_changes() {
    let dir = export_dir();
    fs::write(dir.join("f"), b"x").unwrap();
    let srv = TestServer::start(
        &format!(
            "local,path={},security_model=passthrough,readonly=on",
            dir.display()
        ),
        Compat::Master,
    );
    let mut c = srv.connect();
    c.attach();
    c.expect_err(TMKDIR, &le![d 0, s b"d", d 0o755, d 0], 30);
    c.expect_err(TXATTRCREATE, &le![d 0, s b"user.a", q 1, d 0], 30);
    c.walk(0, 1, &["f"]);
    c.expect_err(TLOPEN, &le![d 1, d 1], 30);
    c.expect_err(TLOPEN, &le![d 1, d 0o1000], 30);
    c.ok(TLOPEN, &le![d 1, d 0]);
    assert_eq!(c.ok(TREAD, &le![d 1, q 0, d 10]), le![d 1, x b"x"]);
}

#[test]
fn local_hops_per_message_match_qemu() {
    local_hops(Hops::Qemu);
}

/// `--hops=min`: every message takes at most one hop.
#[test]
fn local_hops_min_at_most_one_per_message() {
    local_hops(Hops::Min);
}

/// The script, with QEMU's count, or `m(qemu, min)` where min mode differs.
fn local_hops(mode: Hops) {
    let m = |qemu: usize, min: usize| if mode == Hops::Qemu { qemu } else { min };
    let dir = export_dir();
    fs::write(dir.join("f"), b"data").unwrap();
    fs::create_dir(dir.join("d")).unwrap();
    std::os::unix::fs::symlink("f", dir.join("ln")).unwrap();
    let srv = TestServer::start_with_hops(
        &format!("local,path={},security_model=passthrough", dir.display()),
        Compat::Master,
        mode,
    );
    let mut c = srv.connect();
    let mut script = HopScript::new(true);
    script.run(&mut c, TVERSION, le![d 32768, s b"9P2000.L"], "Tversion", 0);
    script.run(
        &mut c,
        TATTACH,
        le![d 0, d NOFID, s b"", s b"", d 0],
        "Tattach",
        1,
    );
    script.run(&mut c, TWALK, walk_body(0, 1, b"f"), "Twalk", 1);
    script.run(&mut c, TGETATTR, le![d 1, q 0x7ff], "Tgetattr", 1);
    script.run(&mut c, TLOPEN, le![d 1, d 2], "Tlopen", m(3, 1));
    // A short read before EOF: one more call to see the 0.
    script.run(&mut c, TREAD, le![d 1, q 0, d 100], "Tread", m(2, 1));
    script.run(&mut c, TWRITE, le![d 1, q 4, d 2, x b"!!"], "Twrite", 1);
    script.run(&mut c, TFSYNC, le![d 1, d 0], "Tfsync", 1);
    script.run(
        &mut c,
        TLOCK,
        le![d 1, b 1, d 0, q 0, q 0, d 1, s b"c"],
        "Tlock",
        1,
    );
    script.run(&mut c, TCLUNK, le![d 1], "Tclunk", 1);
    script.run(&mut c, TWALK, walk_body(0, 2, b"d"), "Twalk", 1);
    script.run(&mut c, TLOPEN, le![d 2, d 0o200000], "Tlopen", m(2, 1));
    script.run(&mut c, TREADDIR, le![d 2, q 0, d 1000], "Treaddir", 1);
    script.run(&mut c, TCLUNK, le![d 2], "Tclunk", 1);
    script.run(&mut c, TWALK, le![d 0, d 3, w 0], "Twalk", 1);
    script.run(
        &mut c,
        TLCREATE,
        le![d 3, s b"new", d 2, d 0o644, d 0],
        "Tlcreate",
        m(2, 1),
    );
    script.run(&mut c, TMKDIR, le![d 0, s b"m", d 0o755, d 0], "Tmkdir", 1);
    script.run(
        &mut c,
        TSYMLINK,
        le![d 0, s b"s", s b"f", d 0],
        "Tsymlink",
        1,
    );
    script.run(&mut c, TWALK, walk_body(0, 4, b"f"), "Twalk", 1);
    script.run(&mut c, TLINK, le![d 0, d 4, s b"h"], "Tlink", 1);
    script.run(&mut c, TWALK, walk_body(0, 5, b"ln"), "Twalk", 1);
    script.run(&mut c, TREADLINK, le![d 5], "Treadlink", 1);
    script.run(&mut c, TSTATFS, le![d 0], "Tstatfs", 1);
    script.run(&mut c, TXATTRWALK, le![d 4, d 6, s b""], "Txattrwalk", 1);
    script.run(
        &mut c,
        TXATTRCREATE,
        le![d 4, s b"user.k", q 1, d 0],
        "Txattrcreate",
        0,
    );
    script.run(&mut c, TWRITE, le![d 4, q 0, d 1, x b"v"], "Twrite", 0);
    script.run(&mut c, TCLUNK, le![d 4], "Tclunk", 1);
    script.run(&mut c, TWALK, walk_body(0, 7, b"f"), "Twalk", 1);
    script.run(
        &mut c,
        TXATTRWALK,
        le![d 7, d 8, s b"user.k"],
        "Txattrwalk",
        m(2, 1),
    );
    script.run(&mut c, TREAD, le![d 8, q 0, d 10], "Tread", 0);
    script.run(
        &mut c,
        TRENAMEAT,
        le![d 0, s b"h", d 0, s b"h2"],
        "Trenameat",
        1,
    );
    script.run(&mut c, TUNLINKAT, le![d 0, s b"h2", d 0], "Tunlinkat", 1);
    script.run(&mut c, TWALK, walk_body(0, 9, b"s"), "Twalk", 1);
    script.run(&mut c, TRENAME, le![d 9, d NOFID, s b"s2"], "Trename", 1);
    script.run(&mut c, TREMOVE, le![d 9], "Tremove", 1);
    script.run(&mut c, TSTAT, le![d 5], "Tstat", m(2, 1));
    script.run(
        &mut c,
        TSETATTR,
        le![d 7, d 0x1 | 0x8, d 0o644, d 0, d 0, q 1, q 0, q 0, q 0, q 0],
        "Tsetattr",
        m(2, 1),
    );
    drop(c);
    let report = srv.stop();
    script.check(&report);
    assert_eq!(report.open_handles, 0);
    if mode == Hops::Min {
        assert!(report.hops.iter().all(|t| t.hops <= 1), "{:?}", report.hops);
    }
}

/// 9P2000.u's Tstat and Twstat on an open, unlinked file: by path, as
/// QEMU (ENOENT), unless dotu_handles=on sends them through the open file.
#[test]
fn dotu_stat_and_wstat_of_an_open_unlinked_file() {
    for (opt, ok) in [("", false), (",dotu_handles=on", true)] {
        let dir = export_dir();
        let srv = TestServer::start(
            &format!(
                "local,path={},security_model=passthrough{opt}",
                dir.display()
            ),
            Compat::Master,
        );
        let mut c = srv.connect();
        c.version(8192, "9P2000.u");
        c.send(TATTACH, 0, &le![d 0, d NOFID, s b"", s b"", d 0]);
        c.recv();
        c.send(TWALK, 0, &le![d 0, d 1, w 0]);
        c.recv();
        c.send(TCREATE, 0, &le![d 1, s b"doa", d 0o644, b 2, s b""]);
        assert_eq!(c.recv().0, TCREATE + 1);
        c.send(TWALK, 0, &le![d 0, d 2, w 1, s b"doa"]);
        c.recv();
        c.send(TREMOVE, 0, &le![d 2]);
        assert_eq!(c.recv().0, TREMOVE + 1);
        c.send(TSTAT, 0, &le![d 1]);
        let (id, _, _) = c.recv();
        assert_eq!(id == TSTAT + 1, ok, "Tstat with '{opt}'");
        // Twstat changing only the length.
        let body = le![
            w 0xffff, d 0xffff_ffffu32, b 0xff, d 0xffff_ffffu32, q u64::MAX, d 0xffff_ffffu32,
            d 0xffff_ffffu32, d 0xffff_ffffu32, q 100, s b"", s b"", s b"", s b"", s b"",
            d 0xffff_ffffu32, d 0xffff_ffffu32, d 0xffff_ffffu32
        ];
        let stat = [le![w body.len()], body].concat();
        c.send(TWSTAT, 0, &[le![d 1, w stat.len()], stat].concat());
        let (id, _, _) = c.recv();
        assert_eq!(id == TWSTAT + 1, ok, "Twstat with '{opt}'");
    }
}

/// `--hops=min` changes the hop count and nothing else: one message
/// sequence, run once in each mode on the same export, gets the same
/// replies byte for byte, errors included. The export is left as the
/// sequence found it (contents, mtimes; atimes settled beforehand), so
/// that qids and stats compare whole.
#[test]
fn hops_min_replies_match_qemu_byte_for_byte() {
    let dir = export_dir();
    let fixed = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::write(dir.join("f"), b"data").unwrap();
    fs::write(dir.join("w"), b"ab!!ef").unwrap();
    fs::File::options()
        .write(true)
        .open(dir.join("w"))
        .unwrap()
        .set_times(fs::FileTimes::new().set_accessed(fixed).set_modified(fixed))
        .unwrap();
    fs::write(dir.join("c"), b"").unwrap();
    fs::write(dir.join("x"), b"").unwrap();
    fs::create_dir(dir.join("d")).unwrap();
    fs::create_dir(dir.join("g")).unwrap();
    std::os::unix::fs::symlink("f", dir.join("ln")).unwrap();
    // relatime updates an atime once after a change: take that update now.
    fs::read(dir.join("f")).unwrap();
    fs::read_link(dir.join("ln")).unwrap();
    let c_mode = fs::metadata(dir.join("c")).unwrap().mode() & 0o7777;
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let run = |mode: Hops| -> Vec<Vec<u8>> {
        fs::write(dir.join("g/gone"), b"x").unwrap();
        let srv = TestServer::start_with_hops(
            &format!("local,path={},security_model=passthrough", dir.display()),
            Compat::Master,
            mode,
        );
        let mut replies = Vec::new();
        let mut c = srv.connect();
        let mut t = |c: &mut Client, id: u8, body: Vec<u8>| {
            c.send(id, 0, &body);
            replies.push(c.recv_frame());
        };
        let attach = le![d 0, d NOFID, s b"", s b"", d uid];
        t(&mut c, TVERSION, le![d 32768, s b"9P2000.L"]);
        t(&mut c, TATTACH, attach.clone());
        // A short read, then the reads at and before EOF.
        t(&mut c, TWALK, walk_body(0, 1, b"f"));
        t(&mut c, TLOPEN, le![d 1, d 0]);
        t(&mut c, TREAD, le![d 1, q 0, d 100]);
        t(&mut c, TREAD, le![d 1, q 4, d 100]);
        t(&mut c, TREAD, le![d 1, q 2, d 100]);
        t(&mut c, TGETATTR, le![d 1, q 0x3fff]);
        // Write, chmod + truncate, and the mtime put back.
        t(&mut c, TWALK, walk_body(0, 2, b"w"));
        t(&mut c, TLOPEN, le![d 2, d 2]);
        t(&mut c, TWRITE, le![d 2, q 2, d 2, x b"!!"]);
        t(
            &mut c,
            TSETATTR,
            le![d 2, d 0x9, d 0o644, d 0, d 0, q 6, q 0, q 0, q 0, q 0],
        );
        let times = 0x10 | 0x20 | 0x80 | 0x100;
        let sec = 1_000_000_000u64;
        t(
            &mut c,
            TSETATTR,
            le![d 2, d times, d 0, d 0, d 0, q 0, q sec, q 0, q sec, q 0],
        );
        // Tlcreate: EISDIR, EEXIST, and an existing file opened.
        t(&mut c, TWALK, le![d 0, d 3, w 0]);
        t(&mut c, TLCREATE, le![d 3, s b"d", d 2, d 0o644, d gid]);
        t(
            &mut c,
            TLCREATE,
            le![d 3, s b"c", d 0o200 | 2, d 0o644, d gid],
        );
        t(&mut c, TLCREATE, le![d 3, s b"c", d 2, d c_mode, d gid]);
        t(&mut c, TREAD, le![d 3, q 0, d 100]);
        t(&mut c, TUNLINKAT, le![d 0, s b"d", d 0]);
        // A directory, then a file removed behind its fid: ENOENT.
        t(&mut c, TWALK, walk_body(0, 4, b"d"));
        t(&mut c, TLOPEN, le![d 4, d 0o200000]);
        t(&mut c, TWALK, le![d 0, d 5, w 2, s b"g", s b"gone"]);
        fs::remove_file(dir.join("g/gone")).unwrap();
        t(&mut c, TLOPEN, le![d 5, d 0]);
        t(
            &mut c,
            TSETATTR,
            le![d 5, d 0x9, d 0o644, d 0, d 0, q 0, q 0, q 0, q 0, q 0],
        );
        t(&mut c, TGETATTR, le![d 5, q 0x3fff]);
        t(&mut c, TXATTRWALK, le![d 5, d 6, s b""]);
        // Xattrs: set one, read it and the list back, ENODATA.
        t(&mut c, TWALK, walk_body(0, 7, b"x"));
        t(&mut c, TXATTRCREATE, le![d 7, s b"user.k", q 3, d 0]);
        t(&mut c, TWRITE, le![d 7, q 0, d 3, x b"val"]);
        t(&mut c, TCLUNK, le![d 7]);
        t(&mut c, TWALK, walk_body(0, 7, b"x"));
        t(&mut c, TXATTRWALK, le![d 7, d 8, s b"user.k"]);
        t(&mut c, TREAD, le![d 8, q 0, d 100]);
        t(&mut c, TXATTRWALK, le![d 7, d 9, s b"user.missing"]);
        // 9P2000.u's Tstat: a symlink (lstat + readlink), a file, ENOENT.
        let mut u = srv.connect();
        t(&mut u, TVERSION, le![d 32768, s b"9P2000.u"]);
        t(&mut u, TATTACH, attach);
        t(&mut u, TWALK, walk_body(0, 1, b"ln"));
        t(&mut u, TSTAT, le![d 1]);
        t(&mut u, TWALK, walk_body(0, 2, b"f"));
        t(&mut u, TSTAT, le![d 2]);
        t(&mut u, TSTAT, le![d 5]);
        drop((c, u));
        let report = srv.stop();
        assert_eq!(report.open_handles, 0);
        replies
    };
    // g/gone is made afresh for each run: its inode and mtime (the qid's
    // path and version in the Rwalk to it, reply 21) may differ.
    let gone_qid = |mut r: Vec<Vec<u8>>| {
        r[21][7 + 2 + 13 + 1..].fill(0);
        r
    };
    let qemu = gone_qid(run(Hops::Qemu));
    let min = gone_qid(run(Hops::Min));
    // The sequence does what it is meant to: a short read, EISDIR, ENOENT.
    let body = |i: usize| qemu[i][7..].to_vec();
    assert_eq!(body(4), le![d 4, x b"data"]);
    assert_eq!(body(5), le![d 0]);
    assert_eq!(qemu[14], frame(RLERROR, 0, &le![d libc::EISDIR]));
    assert_eq!(qemu[15], frame(RLERROR, 0, &le![d libc::EEXIST]));
    assert_eq!(qemu[16][4], TLCREATE + 1);
    assert_eq!(qemu[22], frame(RLERROR, 0, &le![d libc::ENOENT]));
    assert_eq!(qemu[18], frame(RLERROR, 0, &le![d libc::EISDIR]));
    assert_eq!(body(32), le![d 3, x b"val"]);
    assert_eq!(qemu[33], frame(RLERROR, 0, &le![d libc::ENODATA]));
    let target = le![s b"f", d uid, d gid];
    assert!(
        body(37).windows(target.len()).any(|w| w == target),
        "the symlink's target"
    );
    assert_eq!(qemu.len(), min.len());
    for (i, (a, b)) in qemu.iter().zip(&min).enumerate() {
        assert_eq!(a, b, "reply {i}");
    }
}
