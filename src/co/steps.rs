//! Requests that make several driver calls, written once for both `--hops`
//! modes: each sequence below is generic over [`Steps`], which runs every
//! call as a hop of its own (QEMU's count, [`EachHop`]) or one after
//! another inside the request's single hop ([`InHop`], `--hops=min`), the
//! way QEMU's Twalk already runs its whole walk in one block.
//!
//! The calls, their order and their errors are the same in both modes.
//! What QEMU does on the main thread between two calls (a qid, fd
//! accounting, a fid update) is a hook: in QEMU mode it runs there, between
//! the hops; in min mode the worker makes only the checks that need no
//! main-thread state and the `co_*` function runs the hook after the hop.

use std::sync::Arc;

use nix::errno::Errno;

use super::{locked_hop, opened, retry_eintr, Handle, Lock};
use crate::fsdev::{
    DirHandle, FileHandle, FileOperations, FileStat, FsCred, FsResult, SessionCtx, Timespec,
    V9fsPath,
};
use crate::protocol::Qid;
use crate::runtime::{CancelFlag, Co};
use crate::server::{QidCheck, V9fsState};
use crate::Hops;

/// Where a request's driver calls run.
pub(crate) trait Steps {
    /// Whether the request was cancelled (Tflush).
    fn cancelled(&self) -> bool;
    /// One driver call; in QEMU mode under `lock`, as its co function takes it.
    fn call<T, F>(&self, lock: Lock, job: F) -> FsResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn FileOperations) -> FsResult<T> + Send + 'static;
    /// `v9fs_co_name_to_path`: string work for a path-based driver.
    fn name_to_path(&self, dir: Option<&V9fsPath>, name: &[u8]) -> FsResult<V9fsPath>;
    /// The qid of `st` where it can be made (QEMU mode, on main), or the
    /// checks of `stat_to_qid` that can fail without main-thread state.
    fn qid(&self, st: &FileStat) -> FsResult<Option<Qid>>;
    /// A handle was opened: fd accounting, maybe a reclaim (QEMU mode; in
    /// min mode the `co_*` function counts it after the hop).
    fn opened(&self);
}

/// QEMU's way: each call is a hop of its own, hooks run on main between.
pub(crate) struct EachHop<'a, 'y> {
    co: &'a Co<'y>,
    s: &'a V9fsState,
}

impl Steps for EachHop<'_, '_> {
    fn cancelled(&self) -> bool {
        self.co.is_cancelled()
    }
    fn call<T, F>(&self, lock: Lock, job: F) -> FsResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn FileOperations) -> FsResult<T> + Send + 'static,
    {
        locked_hop(self.co, self.s, lock, job)
    }
    fn name_to_path(&self, dir: Option<&V9fsPath>, name: &[u8]) -> FsResult<V9fsPath> {
        super::co_name_to_path(self.co, self.s, dir, name)
    }
    fn qid(&self, st: &FileStat) -> FsResult<Option<Qid>> {
        self.s.stat_to_qid(st).map(Some)
    }
    fn opened(&self) {
        opened(self.co, self.s);
    }
}

/// `--hops=min`: the calls run in turn on the worker that runs the
/// request's one hop, each after its own cancellation check.
pub(crate) struct InHop {
    ops: Arc<dyn FileOperations>,
    cancel: CancelFlag,
    path_based: bool,
    qid: QidCheck,
}

impl Steps for InHop {
    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
    fn call<T, F>(&self, _lock: Lock, job: F) -> FsResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn FileOperations) -> FsResult<T> + Send + 'static,
    {
        if self.cancelled() {
            return Err(Errno::EINTR);
        }
        job(&*self.ops)
    }
    fn name_to_path(&self, dir: Option<&V9fsPath>, name: &[u8]) -> FsResult<V9fsPath> {
        // As co_name_to_path: only a driver call (not string work) checks.
        if !self.path_based && self.cancelled() {
            return Err(Errno::EINTR);
        }
        self.ops.name_to_path(dir, name)
    }
    fn qid(&self, st: &FileStat) -> FsResult<Option<Qid>> {
        self.qid.check(st).map(|()| None)
    }
    fn opened(&self) {}
}

/// Runs `seq` as one hop: the cancellation check, `lock`, then every call of
/// the sequence on one worker.
fn one_hop<T, F>(co: &Co, s: &V9fsState, lock: Lock, seq: F) -> FsResult<T>
where
    T: Send + 'static,
    F: FnOnce(&InHop) -> FsResult<T> + Send + 'static,
{
    let steps = InHop {
        ops: Arc::clone(&s.export.ops),
        cancel: co.cancel_flag().clone(),
        path_based: s.is_path_based(),
        qid: s.qid_check(),
    };
    locked_hop(co, s, lock, move |_| seq(&steps))
}

/// The qid a sequence made, or (min mode) the one made now, on main. A
/// handle the sequence opened is closed, in a hop, if that fails.
fn qid_or_make(
    co: &Co,
    s: &V9fsState,
    qid: Option<Qid>,
    st: &FileStat,
    opened: Option<Handle>,
) -> FsResult<Qid> {
    match qid.map_or_else(|| s.stat_to_qid(st), Ok) {
        Ok(q) => Ok(q),
        Err(e) => {
            // Reached only past the off-main checks (a remap table full).
            if let Some(h) = opened {
                let _ = super::close_hop(co, s, vec![h]);
            }
            Err(e)
        }
    }
}

// ---- Tattach --------------------------------------------------------------

/// Tattach's calls: the root's path, then its stat.
fn attach_steps(r: &impl Steps) -> FsResult<(V9fsPath, FileStat)> {
    let path = r.name_to_path(None, b"/")?;
    let p = path.clone();
    let st = r.call(Lock::Read, move |ops| ops.lstat(&p))?;
    Ok((path, st))
}

/// The root's path and stat for Tattach: two calls, one hop each for a
/// driver that is not path-based (QEMU), or one hop.
pub(crate) fn co_attach_root(co: &Co, s: &V9fsState) -> FsResult<(V9fsPath, FileStat)> {
    match s.hops() {
        Hops::Qemu => attach_steps(&EachHop { co, s }),
        Hops::Min => one_hop(co, s, Lock::Read, attach_steps),
    }
}

// ---- Tlopen ---------------------------------------------------------------

/// What Tlopen opened: a directory, or a file and its file system's block
/// size for the iounit (0 when statfs failed).
pub(crate) enum Opened {
    Dir(DirHandle),
    File(FileHandle, u64),
}

/// `v9fs_open`'s calls: lstat, the qid; then opendir, or (EROFS if
/// `refused`) open and statfs. `on_file` sees the file right after its open,
/// before the statfs (QEMU mode), where QEMU fills in the fid.
fn lopen_steps(
    r: &impl Steps,
    path: &V9fsPath,
    flags: i32,
    refused: bool,
    ctx: &SessionCtx,
    on_file: &mut dyn FnMut(&FileHandle),
) -> FsResult<(FileStat, Option<Qid>, Opened)> {
    let p = path.clone();
    let st = r.call(Lock::Read, move |ops| ops.lstat(&p))?;
    let qid = r.qid(&st)?;
    if st.is_dir() {
        let p = path.clone();
        let d = r.call(Lock::Read, move |ops| ops.opendir(&p))?;
        r.opened();
        return Ok((st, qid, Opened::Dir(d)));
    }
    if refused {
        return Err(Errno::EROFS);
    }
    let (p, ctx) = (path.clone(), ctx.clone());
    let h = r.call(Lock::Read, move |ops| ops.open(&p, flags, &ctx))?;
    r.opened();
    on_file(&h);
    let bsize = statfs_bsize(r, path);
    Ok((st, qid, Opened::File(h, bsize)))
}

/// `get_iounit`'s statfs: the block size, or 0 on any failure.
fn statfs_bsize(r: &impl Steps, path: &V9fsPath) -> u64 {
    let p = path.clone();
    r.call(Lock::Read, move |ops| ops.statfs(&p))
        .map(|st| st.bsize)
        .unwrap_or(0)
}

/// Tlopen and Topen: lstat, then opendir or open + statfs; three hops in
/// QEMU mode, one in min mode. `on_file` fills in the fid for an open file.
pub(crate) fn co_lopen(
    co: &Co,
    s: &V9fsState,
    path: &V9fsPath,
    flags: i32,
    refused: bool,
    on_file: &mut dyn FnMut(&FileHandle),
) -> FsResult<(Qid, Opened)> {
    match s.hops() {
        Hops::Qemu => {
            let (st, qid, o) =
                lopen_steps(&EachHop { co, s }, path, flags, refused, &s.ctx, on_file)?;
            Ok((qid_or_make(co, s, qid, &st, None)?, o))
        }
        Hops::Min => {
            let (path, ctx) = (path.clone(), s.ctx.clone());
            let (st, qid, o) = one_hop(co, s, Lock::Read, move |r| {
                lopen_steps(r, &path, flags, refused, &ctx, &mut |_| {})
            })?;
            let handle = match &o {
                Opened::Dir(d) => Handle::Dir(Arc::clone(d)),
                Opened::File(f, _) => Handle::File(Arc::clone(f)),
            };
            let qid = qid_or_make(co, s, qid, &st, Some(handle))?;
            if let Opened::File(f, _) = &o {
                on_file(f);
            }
            opened(co, s);
            Ok((qid, o))
        }
    }
}

// ---- Tlcreate -------------------------------------------------------------

/// `v9fs_lcreate`'s calls: create and open, look up the new path and its
/// stat (QEMU's one `v9fs_co_open2` block), then statfs for the iounit.
fn lcreate_steps(
    r: &impl Steps,
    dir: &V9fsPath,
    name: &[u8],
    flags: i32,
    cred: FsCred,
    ctx: &SessionCtx,
    on_file: &mut dyn FnMut(&FileHandle, &V9fsPath),
) -> FsResult<(FileHandle, V9fsPath, FileStat, u64)> {
    let (d, n, ctx) = (dir.clone(), name.to_vec(), ctx.clone());
    let (h, path, st) = r.call(Lock::Write, move |ops| {
        let h = ops.open2(&d, &n, flags, &cred, &ctx)?;
        // On failure the handle is dropped here, closing the file.
        let path = ops.name_to_path(Some(&d), &n)?;
        let st = ops.lstat(&path)?;
        Ok((h, path, st))
    })?;
    r.opened();
    on_file(&h, &path);
    let bsize = statfs_bsize(r, &path);
    Ok((h, path, st, bsize))
}

/// `v9fs_co_open2` and the iounit's statfs: two hops in QEMU mode (the
/// first under the rename write lock), one in min mode (all of it under
/// the write lock). `on_file` points the fid at the new, open file.
pub(crate) fn co_open2_iounit(
    co: &Co,
    s: &V9fsState,
    dir: &V9fsPath,
    name: &[u8],
    flags: i32,
    cred: FsCred,
    on_file: &mut dyn FnMut(&FileHandle, &V9fsPath),
) -> FsResult<(FileStat, u64)> {
    match s.hops() {
        Hops::Qemu => {
            let r = EachHop { co, s };
            let (_, _, st, bsize) = lcreate_steps(&r, dir, name, flags, cred, &s.ctx, on_file)?;
            Ok((st, bsize))
        }
        Hops::Min => {
            let (dir, name, ctx) = (dir.clone(), name.to_vec(), s.ctx.clone());
            let (h, path, st, bsize) = one_hop(co, s, Lock::Write, move |r| {
                lcreate_steps(r, &dir, &name, flags, cred, &ctx, &mut |_, _| {})
            })?;
            on_file(&h, &path);
            opened(co, s);
            Ok((st, bsize))
        }
    }
}

// ---- Tread, Twrite --------------------------------------------------------

/// `v9fs_co_preadv` until `max` bytes or EOF: a short read is followed by
/// another, an EINTR retried unless cancelled; any other error loses what
/// was read before, as in QEMU.
fn read_steps(r: &impl Steps, file: &FileHandle, offset: u64, max: usize) -> FsResult<Vec<u8>> {
    let mut data = Vec::new();
    let mut off = offset;
    loop {
        let chunk = retry_eintr(
            || r.cancelled(),
            || {
                let (f, len) = (Arc::clone(file), max - data.len());
                r.call(Lock::None, move |_| {
                    let mut buf = vec![0u8; len];
                    let n = f.preadv(&mut buf, off)?;
                    buf.truncate(n);
                    Ok(buf)
                })
            },
        )?;
        let n = chunk.len();
        off += n as u64;
        data.extend_from_slice(&chunk);
        if data.len() >= max || n == 0 {
            return Ok(data);
        }
    }
}

/// Tread of a file: a hop per read (QEMU), or one for them all.
pub(crate) fn co_read_file(
    co: &Co,
    s: &V9fsState,
    file: &FileHandle,
    offset: u64,
    max: usize,
) -> FsResult<Vec<u8>> {
    match s.hops() {
        Hops::Qemu => read_steps(&EachHop { co, s }, file, offset, max),
        Hops::Min => {
            let file = Arc::clone(file);
            one_hop(co, s, Lock::None, move |r| {
                read_steps(r, &file, offset, max)
            })
        }
    }
}

/// `v9fs_co_pwritev` until all of `data` is written or a write takes
/// nothing, with Tread's EINTR rule.
fn write_steps(
    r: &impl Steps,
    file: &FileHandle,
    data: &Arc<Vec<u8>>,
    offset: u64,
) -> FsResult<usize> {
    let mut total = 0usize;
    let mut off = offset;
    loop {
        let n = retry_eintr(
            || r.cancelled(),
            || {
                let (f, d, from) = (Arc::clone(file), Arc::clone(data), total);
                r.call(Lock::None, move |_| f.pwritev(&d[from..], off))
            },
        )?;
        off += n as u64;
        total += n;
        if total >= data.len() || n == 0 {
            return Ok(total);
        }
    }
}

/// Twrite to a file: a hop per write (QEMU), or one for them all.
pub(crate) fn co_write_file(
    co: &Co,
    s: &V9fsState,
    file: &FileHandle,
    data: Vec<u8>,
    offset: u64,
) -> FsResult<usize> {
    let (file, data) = (Arc::clone(file), Arc::new(data));
    match s.hops() {
        Hops::Qemu => write_steps(&EachHop { co, s }, &file, &data, offset),
        Hops::Min => one_hop(co, s, Lock::None, move |r| {
            write_steps(r, &file, &data, offset)
        }),
    }
}

// ---- Tgetattr, Tstat ------------------------------------------------------

/// A stat through the fid's open handle or by path.
fn stat_step(r: &impl Steps, handle: &Option<Handle>, path: &V9fsPath) -> FsResult<FileStat> {
    match handle {
        Some(h) => {
            let h = h.clone();
            r.call(Lock::None, move |_| h.fstat())
        }
        None => {
            let p = path.clone();
            r.call(Lock::Read, move |ops| ops.lstat(&p))
        }
    }
}

/// `v9fs_getattr`'s calls: the stat, its qid, then (if `gen`) the
/// generation: `None` when not asked for; 0 with no call for a driver
/// without generations.
fn getattr_steps(
    r: &impl Steps,
    handle: &Option<Handle>,
    path: &V9fsPath,
    gen: bool,
    has_gen: bool,
) -> FsResult<(FileStat, Option<Qid>, Option<FsResult<u64>>)> {
    let st = stat_step(r, handle, path)?;
    let qid = r.qid(&st)?;
    let gen = gen.then(|| {
        if !has_gen {
            return if r.cancelled() {
                Err(Errno::EINTR)
            } else {
                Ok(0)
            };
        }
        let (p, mode) = (path.clone(), st.mode);
        r.call(Lock::Read, move |ops| ops.get_st_gen(&p, mode))
    });
    Ok((st, qid, gen))
}

/// Tgetattr: the stat, then the generation if asked (two hops in QEMU
/// mode where the driver has generations, one in min mode).
pub(crate) fn co_getattr(
    co: &Co,
    s: &V9fsState,
    handle: Option<Handle>,
    path: &V9fsPath,
    gen: bool,
) -> FsResult<(FileStat, Qid, Option<FsResult<u64>>)> {
    let has_gen = s.export.ops.has_st_gen();
    let (st, qid, gen) = match s.hops() {
        Hops::Qemu => getattr_steps(&EachHop { co, s }, &handle, path, gen, has_gen)?,
        Hops::Min => {
            let path = path.clone();
            one_hop(co, s, Lock::Read, move |r| {
                getattr_steps(r, &handle, &path, gen, has_gen)
            })?
        }
    };
    Ok((st, qid_or_make(co, s, qid, &st, None)?, gen))
}

/// Tstat's calls: the stat, its qid, and a symlink's target.
fn stat_v9_steps(
    r: &impl Steps,
    handle: &Option<Handle>,
    path: &V9fsPath,
) -> FsResult<(FileStat, Option<Qid>, Vec<u8>)> {
    let st = stat_step(r, handle, path)?;
    let qid = r.qid(&st)?;
    let target = if st.file_type() == libc::S_IFLNK {
        let p = path.clone();
        r.call(Lock::Read, move |ops| ops.readlink(&p))?
    } else {
        Vec::new()
    };
    Ok((st, qid, target))
}

/// Tstat (9P2000.u): the stat and, for a symlink, its target (two hops in
/// QEMU mode, one in min mode).
pub(crate) fn co_stat_v9(
    co: &Co,
    s: &V9fsState,
    handle: Option<Handle>,
    path: &V9fsPath,
) -> FsResult<(FileStat, Qid, Vec<u8>)> {
    let (st, qid, target) = match s.hops() {
        Hops::Qemu => stat_v9_steps(&EachHop { co, s }, &handle, path)?,
        Hops::Min => {
            let path = path.clone();
            one_hop(co, s, Lock::Read, move |r| stat_v9_steps(r, &handle, &path))?
        }
    };
    Ok((st, qid_or_make(co, s, qid, &st, None)?, target))
}

// ---- Tsetattr -------------------------------------------------------------

/// What a Tsetattr changes, in QEMU's order; `None`: left alone.
pub(crate) struct SetAttr {
    pub mode: Option<u32>,
    pub times: Option<[Timespec; 2]>,
    /// chown's uid and gid (`None` inside: -1).
    pub owner: Option<(Option<u32>, Option<u32>)>,
    pub size: Option<u64>,
}

/// `v9fs_setattr`'s calls: chmod, times, chown, size, stopping at the first
/// error; times and size through the open handle when there is one.
fn setattr_steps(
    r: &impl Steps,
    handle: &Option<Handle>,
    path: &V9fsPath,
    a: &SetAttr,
) -> FsResult<()> {
    if let Some(mode) = a.mode {
        let (p, cred) = (
            path.clone(),
            FsCred {
                mode,
                ..FsCred::default()
            },
        );
        r.call(Lock::Read, move |ops| ops.chmod(&p, &cred))?;
    }
    if let Some(times) = a.times {
        match handle.clone() {
            Some(h) => r.call(Lock::None, move |_| h.futimens(&times))?,
            None => {
                let p = path.clone();
                r.call(Lock::Read, move |ops| ops.utimensat(&p, &times))?
            }
        }
    }
    if let Some((uid, gid)) = a.owner {
        let (p, cred) = (
            path.clone(),
            FsCred {
                uid,
                gid,
                ..FsCred::default()
            },
        );
        r.call(Lock::Read, move |ops| ops.chown(&p, &cred))?;
    }
    if let Some(size) = a.size {
        match handle.clone() {
            Some(h) => r.call(Lock::None, move |_| h.ftruncate(size))?,
            None => {
                let p = path.clone();
                r.call(Lock::Read, move |ops| ops.truncate(&p, size))?
            }
        }
    }
    Ok(())
}

/// Tsetattr: a hop per change (QEMU), or one for them all.
pub(crate) fn co_setattr(
    co: &Co,
    s: &V9fsState,
    handle: Option<Handle>,
    path: &V9fsPath,
    a: SetAttr,
) -> FsResult<()> {
    match s.hops() {
        Hops::Qemu => setattr_steps(&EachHop { co, s }, &handle, path, &a),
        Hops::Min => {
            let path = path.clone();
            one_hop(co, s, Lock::Read, move |r| {
                setattr_steps(r, &handle, &path, &a)
            })
        }
    }
}

// ---- Txattrwalk -----------------------------------------------------------

/// `v9fs_xattrwalk`'s calls: the size of the value (or of the name list,
/// `name` `None`), `limit` (the xattr-fid limit; QEMU mode: the new fid is
/// made there), then the value itself if not empty.
fn xattrwalk_steps(
    r: &impl Steps,
    path: &V9fsPath,
    name: &Option<Vec<u8>>,
    limit: &mut dyn FnMut(usize) -> FsResult<()>,
) -> FsResult<(usize, Vec<u8>)> {
    let (p, n) = (path.clone(), name.clone());
    let size = r.call(Lock::Read, move |ops| match &n {
        None => ops.llistxattr_size(&p),
        Some(n) => ops.lgetxattr_size(&p, n),
    })?;
    limit(size)?;
    if size == 0 {
        return Ok((0, Vec::new()));
    }
    let (p, n) = (path.clone(), name.clone());
    let value = r.call(Lock::Read, move |ops| match &n {
        None => ops.llistxattr(&p, size),
        Some(n) => ops.lgetxattr(&p, n, size),
    })?;
    Ok((size, value))
}

/// Txattrwalk: the size, then the value (two hops in QEMU mode, one in min
/// mode). `limit` checks the xattr-fid limit and makes the new fid, on main;
/// in min mode `reached` checks the limit first, on the worker, so that a
/// refused walk reads no value, as in QEMU.
pub(crate) fn co_xattrwalk(
    co: &Co,
    s: &V9fsState,
    path: &V9fsPath,
    name: Option<Vec<u8>>,
    limit: &mut dyn FnMut(usize) -> FsResult<()>,
    reached: impl Fn() -> FsResult<()> + Send + 'static,
) -> FsResult<(usize, Vec<u8>)> {
    match s.hops() {
        Hops::Qemu => xattrwalk_steps(&EachHop { co, s }, path, &name, limit),
        Hops::Min => {
            let path = path.clone();
            let (size, value) = one_hop(co, s, Lock::Read, move |r| {
                xattrwalk_steps(r, &path, &name, &mut |_| reached())
            })?;
            limit(size)?;
            Ok((size, value))
        }
    }
}

// ---- Tunlinkat ------------------------------------------------------------

/// `v9fs_unlinkat`'s calls: the target's path, `mark` (QEMU mode: its fids
/// keep their handles), the unlink.
fn unlinkat_steps(
    r: &impl Steps,
    dir: &V9fsPath,
    name: &[u8],
    flags: i32,
    mark: &mut dyn FnMut(&V9fsPath) -> FsResult<()>,
) -> FsResult<()> {
    let path = r.name_to_path(Some(dir), name)?;
    mark(&path)?;
    let (d, n) = (dir.clone(), name.to_vec());
    r.call(Lock::Read, move |ops| ops.unlinkat(&d, &n, flags))
}

/// Tunlinkat: name_to_path (a hop for a driver that is not path-based),
/// the fids on the target marked, then the unlink. In min mode both calls
/// share one hop when marking needs no hop of its own (no fid has a
/// reclaimed handle to reopen) and no reclaim can run meanwhile: the fids
/// are then marked after the hop, which nothing can tell from before.
pub(crate) fn co_unlinkat_name(
    co: &Co,
    s: &V9fsState,
    dir: &V9fsPath,
    name: &[u8],
    flags: i32,
) -> FsResult<()> {
    let each = |co, s: &V9fsState| {
        unlinkat_steps(&EachHop { co, s }, dir, name, flags, &mut |p| {
            s.mark_fids_unreclaim(co, p)
        })
    };
    if s.hops() == Hops::Qemu || s.is_path_based() || s.has_reclaimed_fids() {
        return each(co, s);
    }
    // Holding the reclaim flag keeps other requests' reclaims off for the
    // hop, as a reclaim in progress does.
    if s.reclaiming.replace(true) {
        return each(co, s);
    }
    let (d, n) = (dir.clone(), name.to_vec());
    let r = one_hop(co, s, Lock::Read, move |r| {
        let mut target = None;
        let res = unlinkat_steps(r, &d, &n, flags, &mut |p| {
            target = Some(p.clone());
            Ok(())
        });
        Ok((target, res))
    });
    s.reclaiming.set(false);
    let (target, res) = r?;
    if let Some(p) = target {
        // No fid has a reclaimed handle: this only sets flags, no hop.
        s.mark_fids_unreclaim(co, &p)?;
    }
    res
}
