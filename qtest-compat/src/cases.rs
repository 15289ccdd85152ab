//! The 34 virtio-9p cases of QEMU master's tests/qtest/virtio-9p-test.c,
//! with the same names, message sequences (tags, fids, genfid numbering)
//! and assertions (reference: qos-test-cases.md §3, §4).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::client::{expect_err, genfid, Client, Fail, Step};
use crate::wire::{id, In, Out, AT_REMOVEDIR};

/// The qos graph path every case sits under (x86_64, pc, virtio-9p-pci).
pub const PREFIX: &str =
    "/x86_64/pc/i440FX-pcihost/pci-bus-pc/pci-bus/virtio-9p-pci/virtio-9p/virtio-9p-tests/";

/// QEMU's mount tag for the tests.
pub const MOUNT_TAG: &str = "qtest";

const ENOENT: u32 = 2;
const ENOSPC: u32 = 28;
const O_RDONLY: u32 = 0;
const O_WRONLY: u32 = 1;
const O_DIRECTORY: u32 = 0o200000;

/// Which fsdev a case runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsdev {
    /// `-fsdev synth`, with extra options (`max_xattr=100`).
    Synth(&'static str),
    /// `-fsdev local,...,security_model=mapped-xattr` plus extra options, on
    /// a fresh directory.
    Local(&'static str),
}

/// One case.
pub struct Case {
    /// Its name below [`PREFIX`].
    pub name: &'static str,
    /// Its fsdev.
    pub fsdev: Fsdev,
    /// Skipped unless `-m slow`.
    pub slow: bool,
    /// Present in QEMU 7.2's suite.
    pub in_7_2: bool,
    /// The body.
    pub run: fn(&mut Ctx) -> Step<()>,
    /// Runs before the case on the host (creates files in the local dir).
    pub before: Option<fn(&Path) -> std::io::Result<()>>,
}

/// What a case has at hand.
pub struct Ctx<'t> {
    /// The 9P client.
    pub c: Client<'t>,
    /// The local test directory (local cases only).
    pub dir: Option<PathBuf>,
}

impl Ctx<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.as_ref().expect("a local case").join(rel)
    }

    fn max(&self) -> u32 {
        self.c.max_size
    }
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Step<()> {
    if cond {
        Ok(())
    } else {
        Err(Fail::Other(msg()))
    }
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

// ---- synth ---------------------------------------------------------------

fn config(x: &mut Ctx) -> Step<()> {
    let Some(cfg) = x.c.transport().config() else {
        return Err(Fail::Skip(
            "this transport has no virtio config space".into(),
        ));
    };
    let tag_len = u16::from_le_bytes([cfg[0], cfg[1]]) as usize;
    ensure(tag_len == MOUNT_TAG.len(), || format!("tag_len {tag_len}"))?;
    ensure(&cfg[2..2 + tag_len] == MOUNT_TAG.as_bytes(), || {
        format!("tag {:?}", String::from_utf8_lossy(&cfg[2..]))
    })
}

fn version_basic(x: &mut Ctx) -> Step<()> {
    x.c.tversion()
}

fn attach_basic(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid()).map(|_| ())
}

fn walk_basic(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid())?;
    let names: Vec<String> = (0..crate::wire::MAXWELEM)
        .map(|i| format!("WALK{i}"))
        .collect();
    let refs: Vec<&[u8]> = names.iter().map(|s| s.as_bytes()).collect();
    let qids = x.c.twalk(0, 1, &refs)?;
    ensure(qids.len() == 16, || format!("nwqid {}", qids.len()))
}

fn walk_no_slash(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid())?;
    expect_err(x.c.twalk(0, 1, &[b" /"]), ENOENT)
}

fn walk_none(x: &mut Ctx) -> Step<()> {
    x.c.tversion()?;
    let root = x.c.tattach(0, uid())?;
    let qids = x.c.twalk(0, 1, &[])?;
    ensure(qids.is_empty(), || format!("nwqid {}", qids.len()))?;
    let attr = x.c.getattr(1)?;
    // Type byte and path; the version is not compared.
    ensure(attr.qid[0] == root[0] && attr.qid[5..] == root[5..], || {
        "the new fid is not the root".into()
    })
}

fn walk_dotdot_from_root(x: &mut Ctx) -> Step<()> {
    x.c.tversion()?;
    let root = x.c.tattach(0, uid())?;
    let qids = x.c.twalk(0, 1, &[b".."])?;
    ensure(qids.first() == Some(&root), || {
        "the qid of '..' at the root is not the root's".into()
    })
}

fn walk_non_existent(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid())?;
    expect_err(x.c.twalk(0, genfid(), &[b"non-existent"]), ENOENT)
}

fn walk_2nd_non_existent(x: &mut Ctx) -> Step<()> {
    let root = x.c.tattach(0, uid())?;
    let fid = genfid();
    let qids = x.c.twalk(0, fid, &[b"WALK0", b"non-existent"])?;
    ensure(qids.len() == 1, || format!("nwqid {}", qids.len()))?;
    ensure(qids[0][0] != root[0] || qids[0][5..] != root[5..], || {
        "WALK0 has the root's qid".into()
    })?;
    expect_err(x.c.getattr(fid), ENOENT)
}

fn lopen_basic(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid())?;
    x.c.twalk(0, 1, &[b"LOPEN"])?;
    x.c.tlopen(1, O_WRONLY).map(|_| ())
}

fn write_basic(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid())?;
    x.c.twalk(0, 1, &[b"WRITE"])?;
    x.c.tlopen(1, O_WRONLY)?;
    let n = x.max() / 2;
    let count = x.c.twrite(1, 0, &vec![0u8; n as usize])?;
    ensure(count == n, || format!("Rwrite count {count}, expected {n}"))
}

fn flush(x: &mut Ctx, byte: u8) -> Step<Option<Vec<u8>>> {
    x.c.tattach(0, uid())?;
    x.c.twalk(0, 1, &[b"FLUSH"])?;
    x.c.tlopen(1, O_WRONLY)?;
    let write =
        x.c.send(id::TWRITE, 0, Out::new().d(1).q(0).d(1).raw(&[byte]))?;
    // qos-test declares a 2-byte body for oldtag (it writes 4): the server
    // sees oldtag[2] = 0.
    let flush = x.c.send_raw(id::TFLUSH, 1, &[0, 0])?;
    let reply = x.c.wait(&write)?;
    let rflush = x.c.transport().read_done(flush_handle(&flush))?;
    let body = x.c.check(&flush, &rflush, id::TFLUSH + 1)?;
    ensure(body.is_empty(), || "Rflush has a body".into())?;
    Ok(reply)
}

fn flush_handle(req: &crate::client::Req) -> crate::transport::ReqHandle {
    req.handle()
}

fn flush_success(x: &mut Ctx) -> Step<()> {
    let reply = flush(x, 1)?;
    ensure(reply.is_none(), || {
        "the flushed write was answered instead of discarded (used len != 0)".into()
    })
}

fn flush_ignored(x: &mut Ctx) -> Step<()> {
    let reply = flush(x, 0)?.ok_or_else(|| Fail::Other("the write was discarded".into()))?;
    let ok = reply.len() == 11 && reply[4] == id::TWRITE + 1;
    ensure(ok, || "no Rwrite before Rflush".into())?;
    let count = In::new(&reply[7..]).d()?;
    ensure(count == 1, || format!("Rwrite count {count}"))
}

fn readdir_names(entries: &[crate::client::Dirent]) -> Step<()> {
    let names: BTreeSet<Vec<u8>> = entries.iter().map(|e| e.name.clone()).collect();
    ensure(entries.len() == 102, || {
        format!("{} entries", entries.len())
    })?;
    ensure(
        names.contains(&b"."[..]) && names.contains(&b".."[..]),
        || "no '.' or '..'".into(),
    )?;
    for i in 0..100 {
        let n = format!("ReadDirFile{i}");
        ensure(names.contains(n.as_bytes()), || format!("{n} missing"))?;
    }
    Ok(())
}

fn open_readdir_dir(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid())?;
    let qids = x.c.twalk(0, 1, &[b"ReadDirDir"])?;
    ensure(qids.len() == 1, || format!("nwqid {}", qids.len()))?;
    x.c.tlopen(1, O_DIRECTORY).map(|_| ())
}

fn readdir_basic(x: &mut Ctx) -> Step<()> {
    open_readdir_dir(x)?;
    let count = x.max() - 11;
    let (_, entries) = x.c.treaddir(1, 0, count)?;
    readdir_names(&entries)
}

fn readdir_split(x: &mut Ctx, first: u32) -> Step<()> {
    open_readdir_dir(x)?;
    let (mut count, mut offset) = (first, 0u64);
    let mut all = Vec::new();
    loop {
        let (n, entries) = x.c.treaddir(1, offset, count)?;
        count = n;
        let Some(last) = entries.last() else {
            break;
        };
        offset = last.offset;
        all.extend(entries);
    }
    readdir_names(&all)
}

fn readdir_split_512(x: &mut Ctx) -> Step<()> {
    readdir_split(x, 512)
}
fn readdir_split_256(x: &mut Ctx) -> Step<()> {
    readdir_split(x, 256)
}
fn readdir_split_128(x: &mut Ctx) -> Step<()> {
    readdir_split(x, 128)
}

/// `get_xattr_count`: /stat/xattr_count read through a new fid.
fn xattr_count(x: &mut Ctx) -> Step<u64> {
    let g = genfid();
    x.c.twalk(0, g, &[b"stat", b"xattr_count"])?;
    x.c.tlopen(g, O_RDONLY)?;
    let data = x.c.tread(g, 0, 8)?;
    x.c.tclunk(g)?;
    ensure(data.len() == 8, || format!("{} bytes", data.len()))?;
    Ok(u64::from_ne_bytes(data[..8].try_into().unwrap()))
}

const TEST_XATTR_SIZE: usize = 1024;

/// `do_xattr_limit`: `max` None is unlimited (1124 creates, no overflow).
fn do_xattr_limit(x: &mut Ctx, max: Option<u32>, check_counter: bool) -> Step<()> {
    let limit = max.unwrap_or(1024 + 100);
    x.c.tversion()?;
    x.c.tattach(0, uid())?;
    let value = vec![b'X'; TEST_XATTR_SIZE];
    let mut fids = Vec::new();
    for i in 0..limit {
        let fid = genfid();
        x.c.twalk(0, fid, &[b"WRITE"])?;
        x.c.txattrcreate(fid, "user.test", TEST_XATTR_SIZE as u64, 0)?;
        x.c.twrite(fid, 0, &value)?;
        fids.push(fid);
        if check_counter {
            let n = xattr_count(x)?;
            ensure(n == i as u64 + 1, || {
                format!("counter {n} after {} creates", i + 1)
            })?;
        }
    }
    let mut extra = None;
    if max.is_some() {
        let e = genfid();
        x.c.twalk(0, e, &[b"WRITE"])?;
        expect_err(
            x.c.txattrcreate(e, "user.test_exceed", TEST_XATTR_SIZE as u64, 0),
            ENOSPC,
        )?;
        if check_counter {
            let n = xattr_count(x)?;
            ensure(n == limit as u64, || {
                format!("counter {n} after the refusal")
            })?;
        }
        extra = Some(e);
    }
    for fid in fids.into_iter().chain(extra) {
        x.c.tclunk(fid)?;
    }
    if check_counter {
        let n = xattr_count(x)?;
        ensure(n == 0, || format!("counter {n} after the clunks"))?;
    }
    Ok(())
}

fn synth_xattr_limit_default(x: &mut Ctx) -> Step<()> {
    do_xattr_limit(x, Some(1024), true)
}
fn synth_xattr_limit_custom(x: &mut Ctx) -> Step<()> {
    do_xattr_limit(x, Some(100), true)
}
fn synth_xattr_limit_unlimited(x: &mut Ctx) -> Step<()> {
    do_xattr_limit(x, None, true)
}

// ---- local ---------------------------------------------------------------

fn host_is_dir(x: &Ctx, rel: &str) -> Step<()> {
    let p = x.path(rel);
    ensure(p.is_dir(), || {
        format!("host {} is not a directory", p.display())
    })
}

fn host_is_file(x: &Ctx, rel: &str) -> Step<()> {
    let p = x.path(rel);
    ensure(std::fs::metadata(&p).is_ok_and(|m| m.is_file()), || {
        format!("host {} is not a regular file", p.display())
    })
}

fn host_exists(x: &Ctx, rel: &str) -> bool {
    std::fs::metadata(x.path(rel)).is_ok()
}

/// `do_mkdir(path, name)`: walk to `path`, mkdir `name` (mode 0750, gid 0).
fn do_mkdir(x: &mut Ctx, path: &str, name: &str) -> Step<()> {
    let fid = x.c.twalk_path(0, path)?;
    x.c.tmkdir(fid, name, 0o750, 0).map(|_| ())
}

/// `do_lcreate(path, name)`: walk to `path`, lcreate `name` (flags 0,
/// mode 0750).
fn do_lcreate(x: &mut Ctx, path: &str, name: &str) -> Step<u32> {
    let fid = x.c.twalk_path(0, path)?;
    x.c.tlcreate(fid, name, 0, 0o750)?;
    Ok(fid)
}

fn local_create_dir(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid())?;
    do_mkdir(x, "/", "01")?;
    host_is_dir(x, "01")
}

fn local_unlinkat_dir(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid())?;
    do_mkdir(x, "/", "02")?;
    host_is_dir(x, "02")?;
    let fid = x.c.twalk_path(0, "/")?;
    x.c.tunlinkat(fid, "02", AT_REMOVEDIR)?;
    ensure(!host_exists(x, "02"), || "02 still exists".into())
}

fn local_create_file(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid())?;
    do_mkdir(x, "/", "03")?;
    do_lcreate(x, "03", "1st_file")?;
    host_is_file(x, "03/1st_file")
}

fn local_unlinkat_file(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid())?;
    do_mkdir(x, "/", "04")?;
    do_lcreate(x, "04", "doa_file")?;
    host_is_file(x, "04/doa_file")?;
    let fid = x.c.twalk_path(0, "04")?;
    x.c.tunlinkat(fid, "doa_file", 0)?;
    ensure(!host_exists(x, "04/doa_file"), || {
        "doa_file still exists".into()
    })
}

fn symlink_in(x: &mut Ctx, dir: &str) -> Step<()> {
    x.c.tattach(0, uid())?;
    do_mkdir(x, "/", dir)?;
    do_lcreate(x, dir, "real_file")?;
    host_is_file(x, &format!("{dir}/real_file"))?;
    let fid = x.c.twalk_path(0, dir)?;
    x.c.tsymlink(fid, "symlink_file", "real_file")?;
    let link = format!("{dir}/symlink_file");
    ensure(host_exists(x, &link), || format!("stat({link}) fails"))
}

fn local_symlink_file(x: &mut Ctx) -> Step<()> {
    symlink_in(x, "05")
}

fn local_unlinkat_symlink(x: &mut Ctx) -> Step<()> {
    symlink_in(x, "06")?;
    let fid = x.c.twalk_path(0, "06")?;
    x.c.tunlinkat(fid, "symlink_file", 0)?;
    ensure(!host_exists(x, "06/symlink_file"), || {
        "symlink_file still exists".into()
    })
}

fn hardlink_in(x: &mut Ctx, dir: &str) -> Step<()> {
    x.c.tattach(0, uid())?;
    do_mkdir(x, "/", dir)?;
    do_lcreate(x, dir, "real_file")?;
    let real = format!("{dir}/real_file");
    host_is_file(x, &real)?;
    let dfid = x.c.twalk_path(0, dir)?;
    let fid = x.c.twalk_path(0, &real)?;
    x.c.tlink(dfid, fid, "hardlink_file")?;
    let link = format!("{dir}/hardlink_file");
    host_is_file(x, &link)?;
    let a = std::fs::metadata(x.path(&real)).map_err(|e| Fail::Other(e.to_string()))?;
    let b = std::fs::metadata(x.path(&link)).map_err(|e| Fail::Other(e.to_string()))?;
    ensure(a.dev() == b.dev() && a.ino() == b.ino(), || {
        "the hard link is another file".into()
    })
}

fn local_hardlink_file(x: &mut Ctx) -> Step<()> {
    hardlink_in(x, "07")
}

fn local_unlinkat_hardlink(x: &mut Ctx) -> Step<()> {
    hardlink_in(x, "08")?;
    let fid = x.c.twalk_path(0, "08")?;
    x.c.tunlinkat(fid, "hardlink_file", 0)?;
    ensure(!host_exists(x, "08/hardlink_file"), || {
        "hardlink_file still exists".into()
    })?;
    host_is_file(x, "08/real_file")
}

fn local_use_after_unlink(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid())?;
    do_mkdir(x, "/", "09")?;
    do_lcreate(x, "09", "doa_file")?;
    let fid = x.c.twalk_path(0, "09/doa_file")?;
    ensure(fid != 0, || "fid 0".into())?;
    x.c.tlopen(fid, O_WRONLY)?;
    let dfid = x.c.twalk_path(0, "09")?;
    x.c.tunlinkat(dfid, "doa_file", 0)?;
    x.c.getattr(fid)?;
    let n = x.max() / 2;
    let count = x.c.twrite(fid, 0, &vec![0u8; n as usize])?;
    ensure(count == n, || format!("Rwrite count {count}"))?;
    x.c.tsetattr_size(fid, 2001)?;
    let attr = x.c.getattr(fid)?;
    ensure(attr.size == 2001, || format!("size {}", attr.size))
}

fn local_deep_absolute_path(x: &mut Ctx) -> Step<()> {
    x.c.tattach(0, uid())?;
    let name = "A".repeat(255);
    let mut cur = 0u32;
    let mut total = 0usize;
    while total <= 65536 {
        x.c.tmkdir(cur, &name, 0o750, 0)?;
        let next = genfid();
        x.c.twalk(cur, next, &[name.as_bytes()])?;
        cur = next;
        total += name.len() + 1;
    }
    x.c.getattr(cur).map(|_| ())
}

fn create_write_file(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("WRITE"), b"")
}

fn local_xattr_limit_default(x: &mut Ctx) -> Step<()> {
    do_xattr_limit(x, Some(1024), false)
}
fn local_xattr_limit_custom(x: &mut Ctx) -> Step<()> {
    do_xattr_limit(x, Some(100), false)
}
fn local_xattr_limit_unlimited(x: &mut Ctx) -> Step<()> {
    do_xattr_limit(x, None, false)
}

macro_rules! case {
    ($name:literal, $fsdev:expr, $slow:literal, $in72:literal, $run:path) => {
        case!($name, $fsdev, $slow, $in72, $run, None)
    };
    ($name:literal, $fsdev:expr, $slow:literal, $in72:literal, $run:path, $before:expr) => {
        Case {
            name: $name,
            fsdev: $fsdev,
            slow: $slow,
            in_7_2: $in72,
            run: $run,
            before: $before,
        }
    };
}

const S: Fsdev = Fsdev::Synth("");
const L: Fsdev = Fsdev::Local("");

/// Every case, in QEMU's registration order.
pub fn all() -> Vec<Case> {
    vec![
        case!("synth/config", S, false, true, config),
        case!("synth/version/basic", S, false, true, version_basic),
        case!("synth/attach/basic", S, false, true, attach_basic),
        case!("synth/walk/basic", S, false, true, walk_basic),
        case!("synth/walk/no_slash", S, false, true, walk_no_slash),
        case!("synth/walk/none", S, false, true, walk_none),
        case!(
            "synth/walk/dotdot_from_root",
            S,
            false,
            true,
            walk_dotdot_from_root
        ),
        case!("synth/walk/non_existent", S, false, true, walk_non_existent),
        case!(
            "synth/walk/2nd_non_existent",
            S,
            false,
            true,
            walk_2nd_non_existent
        ),
        case!("synth/lopen/basic", S, false, true, lopen_basic),
        case!("synth/write/basic", S, false, true, write_basic),
        case!("synth/flush/success", S, false, true, flush_success),
        case!("synth/flush/ignored", S, false, true, flush_ignored),
        case!("synth/readdir/basic", S, false, true, readdir_basic),
        case!("synth/readdir/split_512", S, false, true, readdir_split_512),
        case!("synth/readdir/split_256", S, false, true, readdir_split_256),
        case!("synth/readdir/split_128", S, false, true, readdir_split_128),
        case!(
            "synth/xattr_limit/default",
            S,
            true,
            false,
            synth_xattr_limit_default
        ),
        case!(
            "synth/xattr_limit/custom",
            Fsdev::Synth("max_xattr=100"),
            true,
            false,
            synth_xattr_limit_custom
        ),
        case!(
            "synth/xattr_limit/unlimited",
            Fsdev::Synth("max_xattr=0"),
            true,
            false,
            synth_xattr_limit_unlimited
        ),
        case!("local/config", L, false, true, config),
        case!("local/create_dir", L, false, true, local_create_dir),
        case!("local/unlinkat_dir", L, false, true, local_unlinkat_dir),
        case!("local/create_file", L, false, true, local_create_file),
        case!("local/unlinkat_file", L, false, true, local_unlinkat_file),
        case!("local/symlink_file", L, false, true, local_symlink_file),
        case!(
            "local/unlinkat_symlink",
            L,
            false,
            true,
            local_unlinkat_symlink
        ),
        case!("local/hardlink_file", L, false, true, local_hardlink_file),
        case!(
            "local/unlinkat_hardlink",
            L,
            false,
            true,
            local_unlinkat_hardlink
        ),
        case!(
            "local/use_after_unlink",
            L,
            false,
            false,
            local_use_after_unlink
        ),
        case!(
            "local/deep_absolute_path",
            L,
            true,
            false,
            local_deep_absolute_path
        ),
        case!(
            "local/xattr_limit/default",
            L,
            true,
            false,
            local_xattr_limit_default,
            Some(create_write_file)
        ),
        case!(
            "local/xattr_limit/custom",
            Fsdev::Local("max_xattr=100"),
            true,
            false,
            local_xattr_limit_custom,
            Some(create_write_file)
        ),
        case!(
            "local/xattr_limit/unlimited",
            Fsdev::Local("max_xattr=0"),
            true,
            false,
            local_xattr_limit_unlimited,
            Some(create_write_file)
        ),
    ]
}
