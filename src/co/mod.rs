//! The `co_*` functions (QEMU's cofile.c, codir.c, cofs.c, coxattr.c): each
//! is one hop main -> worker -> main around one driver call (or one batch).
//!
//! Every one checks first whether its request was cancelled and returns
//! EINTR without hopping if so; path-based ones hold the rename read lock
//! across the hop when the driver is path-based (local), as QEMU does. The
//! jobs own their inputs: paths are cloned, handles are shared `Arc`s.
//! Requests that make several driver calls go through `steps`, which runs
//! them a hop each (QEMU) or all in one hop (`--hops=min`).

use std::sync::Arc;

use nix::errno::Errno;

use crate::fsdev::{
    DirEnt, DirHandle, FileHandle, FileOperations, FileStat, FsCred, FsResult, LockConflict,
    RecordLock, StatFs, Timespec, V9fsPath,
};
use crate::runtime::Co;
use crate::server::V9fsState;

mod steps;

pub(crate) use steps::{
    co_attach_root, co_getattr, co_lopen, co_open2_iounit, co_read_file, co_setattr, co_stat_v9,
    co_unlinkat_name, co_write_file, co_xattrwalk, Opened, SetAttr,
};

/// An open handle of either kind: what the handle-level co functions take.
#[derive(Clone)]
pub(crate) enum Handle {
    File(FileHandle),
    Dir(DirHandle),
}

impl Handle {
    // These run on a worker: a directory's stream is locked for the call.
    fn fsync(&self, datasync: bool) -> FsResult<()> {
        match self {
            Handle::File(f) => f.fsync(datasync),
            Handle::Dir(d) => lock_dir(d).fsync(datasync),
        }
    }
    fn futimens(&self, times: &[Timespec; 2]) -> FsResult<()> {
        match self {
            Handle::File(f) => f.futimens(times),
            Handle::Dir(d) => lock_dir(d).futimens(times),
        }
    }
    fn ftruncate(&self, size: u64) -> FsResult<()> {
        match self {
            Handle::File(f) => f.ftruncate(size),
            Handle::Dir(d) => lock_dir(d).ftruncate(size),
        }
    }
    fn fstat(&self) -> FsResult<FileStat> {
        match self {
            Handle::File(f) => f.fstat(),
            Handle::Dir(d) => lock_dir(d).fstat(),
        }
    }
}

/// The rename lock a hop holds, for path-based drivers only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// Calls on handles.
    None,
    /// Calls by path: QEMU's `v9fs_path_read_lock`.
    Read,
    /// A create: `v9fs_co_open2` takes it for writing.
    Write,
}

/// Runs `call` again while it fails with EINTR and the request has not
/// been cancelled, as QEMU's handlers loop on their co calls; any other
/// result (or EINTR after a Tflush) is returned.
pub(crate) fn retry_eintr<T>(
    cancelled: impl Fn() -> bool,
    mut call: impl FnMut() -> FsResult<T>,
) -> FsResult<T> {
    loop {
        match call() {
            Err(Errno::EINTR) if !cancelled() => continue,
            r => return r,
        }
    }
}

/// One hop: cancellation check, `lock`, then `job` on a worker.
fn locked_hop<T, F>(co: &Co, s: &V9fsState, lock: Lock, job: F) -> FsResult<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn FileOperations) -> FsResult<T> + Send + 'static,
{
    if co.is_cancelled() {
        return Err(Errno::EINTR);
    }
    let _read = (lock == Lock::Read).then(|| s.path_read_lock(co));
    let _write = (lock == Lock::Write && s.is_path_based()).then(|| s.rename_lock.write(co));
    let ops = Arc::clone(&s.export.ops);
    co.run_in_worker(move || job(&*ops))
}

/// One hop with no lock.
fn hop<T, F>(co: &Co, s: &V9fsState, job: F) -> FsResult<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn FileOperations) -> FsResult<T> + Send + 'static,
{
    locked_hop(co, s, Lock::None, job)
}

/// One hop under the rename read lock (path-based drivers).
fn path_hop<T, F>(co: &Co, s: &V9fsState, job: F) -> FsResult<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn FileOperations) -> FsResult<T> + Send + 'static,
{
    locked_hop(co, s, Lock::Read, job)
}

// ---- cofs.c -------------------------------------------------------------

/// `v9fs_co_lstat`.
pub(crate) fn co_lstat(co: &Co, s: &V9fsState, path: &V9fsPath) -> FsResult<FileStat> {
    let path = path.clone();
    path_hop(co, s, move |ops| ops.lstat(&path))
}

/// `v9fs_co_readlink`.
pub(crate) fn co_readlink(co: &Co, s: &V9fsState, path: &V9fsPath) -> FsResult<Vec<u8>> {
    let path = path.clone();
    path_hop(co, s, move |ops| ops.readlink(&path))
}

/// `v9fs_co_statfs`.
pub(crate) fn co_statfs(co: &Co, s: &V9fsState, path: &V9fsPath) -> FsResult<StatFs> {
    let path = path.clone();
    path_hop(co, s, move |ops| ops.statfs(&path))
}

/// `v9fs_co_chmod`.
pub(crate) fn co_chmod(co: &Co, s: &V9fsState, path: &V9fsPath, mode: u32) -> FsResult<()> {
    let path = path.clone();
    let cred = FsCred {
        mode,
        ..FsCred::default()
    };
    path_hop(co, s, move |ops| ops.chmod(&path, &cred))
}

/// `v9fs_co_utimensat`.
pub(crate) fn co_utimensat(
    co: &Co,
    s: &V9fsState,
    path: &V9fsPath,
    times: [Timespec; 2],
) -> FsResult<()> {
    let path = path.clone();
    path_hop(co, s, move |ops| ops.utimensat(&path, &times))
}

/// `v9fs_co_chown` (`None`: leave as is).
pub(crate) fn co_chown(
    co: &Co,
    s: &V9fsState,
    path: &V9fsPath,
    uid: Option<u32>,
    gid: Option<u32>,
) -> FsResult<()> {
    let path = path.clone();
    let cred = FsCred {
        uid,
        gid,
        ..FsCred::default()
    };
    path_hop(co, s, move |ops| ops.chown(&path, &cred))
}

/// `v9fs_co_truncate`.
pub(crate) fn co_truncate(co: &Co, s: &V9fsState, path: &V9fsPath, size: u64) -> FsResult<()> {
    let path = path.clone();
    path_hop(co, s, move |ops| ops.truncate(&path, size))
}

/// Creates with `make`, then looks up the new path and its stat, in one
/// hop: the shape of `v9fs_co_mkdir`, `v9fs_co_mknod`, `v9fs_co_symlink`.
fn create_hop<F>(
    co: &Co,
    s: &V9fsState,
    dir: &V9fsPath,
    name: &[u8],
    make: F,
) -> FsResult<(V9fsPath, FileStat)>
where
    F: FnOnce(&dyn FileOperations, &V9fsPath, &[u8]) -> FsResult<()> + Send + 'static,
{
    let (dir, name) = (dir.clone(), name.to_vec());
    path_hop(co, s, move |ops| {
        make(ops, &dir, &name)?;
        let path = ops.name_to_path(Some(&dir), &name)?;
        let st = ops.lstat(&path)?;
        Ok((path, st))
    })
}

/// `v9fs_co_mknod`.
pub(crate) fn co_mknod(
    co: &Co,
    s: &V9fsState,
    dir: &V9fsPath,
    name: &[u8],
    cred: FsCred,
) -> FsResult<(V9fsPath, FileStat)> {
    create_hop(co, s, dir, name, move |ops, d, n| ops.mknod(d, n, &cred))
}

/// `v9fs_co_mkdir`.
pub(crate) fn co_mkdir(
    co: &Co,
    s: &V9fsState,
    dir: &V9fsPath,
    name: &[u8],
    cred: FsCred,
) -> FsResult<(V9fsPath, FileStat)> {
    create_hop(co, s, dir, name, move |ops, d, n| ops.mkdir(d, n, &cred))
}

/// `v9fs_co_symlink`.
pub(crate) fn co_symlink(
    co: &Co,
    s: &V9fsState,
    dir: &V9fsPath,
    name: &[u8],
    target: &[u8],
    cred: FsCred,
) -> FsResult<(V9fsPath, FileStat)> {
    let target = target.to_vec();
    create_hop(co, s, dir, name, move |ops, d, n| {
        ops.symlink(&target, d, n, &cred)
    })
}

/// `v9fs_co_link`.
pub(crate) fn co_link(
    co: &Co,
    s: &V9fsState,
    old: &V9fsPath,
    dir: &V9fsPath,
    name: &[u8],
) -> FsResult<()> {
    let (old, dir, name) = (old.clone(), dir.clone(), name.to_vec());
    path_hop(co, s, move |ops| ops.link(&old, &dir, &name))
}

/// `v9fs_co_remove`.
pub(crate) fn co_remove(co: &Co, s: &V9fsState, path: &V9fsPath) -> FsResult<()> {
    let path = path.clone();
    path_hop(co, s, move |ops| ops.remove(&path))
}

/// `v9fs_co_rename`; the caller holds the rename write lock.
pub(crate) fn co_rename(co: &Co, s: &V9fsState, old: &V9fsPath, new: &V9fsPath) -> FsResult<()> {
    let (old, new) = (old.clone(), new.clone());
    hop(co, s, move |ops| ops.rename(&old, &new))
}

/// `v9fs_co_renameat`; the caller holds the rename write lock.
pub(crate) fn co_renameat(
    co: &Co,
    s: &V9fsState,
    olddir: &V9fsPath,
    oldname: &[u8],
    newdir: &V9fsPath,
    newname: &[u8],
) -> FsResult<()> {
    let (od, on, nd, nn) = (
        olddir.clone(),
        oldname.to_vec(),
        newdir.clone(),
        newname.to_vec(),
    );
    hop(co, s, move |ops| ops.renameat(&od, &on, &nd, &nn))
}

/// `v9fs_co_name_to_path`: no hop and no cancellation check for a
/// path-based driver, where it is string work; a hop otherwise.
pub(crate) fn co_name_to_path(
    co: &Co,
    s: &V9fsState,
    dir: Option<&V9fsPath>,
    name: &[u8],
) -> FsResult<V9fsPath> {
    if s.is_path_based() {
        return s.export.ops.name_to_path(dir, name);
    }
    let (dir, name) = (dir.cloned(), name.to_vec());
    hop(co, s, move |ops| ops.name_to_path(dir.as_ref(), &name))
}

// ---- cofile.c -----------------------------------------------------------

/// `v9fs_co_open`; past the open-fd high-water mark, reclaims (a hop).
pub(crate) fn co_open(co: &Co, s: &V9fsState, path: &V9fsPath, flags: i32) -> FsResult<FileHandle> {
    let path = path.clone();
    let ctx = s.ctx.clone();
    let h = path_hop(co, s, move |ops| ops.open(&path, flags, &ctx))?;
    opened(co, s);
    Ok(h)
}

/// `v9fs_co_opendir`.
pub(crate) fn co_opendir(co: &Co, s: &V9fsState, path: &V9fsPath) -> FsResult<DirHandle> {
    let path = path.clone();
    let d = path_hop(co, s, move |ops| ops.opendir(&path))?;
    opened(co, s);
    Ok(d)
}

fn opened(co: &Co, s: &V9fsState) {
    if s.export.fds.opened() {
        s.reclaim_fd(co);
    }
}

/// `v9fs_co_close`: the handle is dropped (closed) on a worker.
pub(crate) fn co_close(co: &Co, s: &V9fsState, file: FileHandle) -> FsResult<()> {
    close_hop(co, s, vec![Handle::File(file)])
}

/// `v9fs_co_closedir`.
pub(crate) fn co_closedir(co: &Co, s: &V9fsState, dir: DirHandle) -> FsResult<()> {
    close_hop(co, s, vec![Handle::Dir(dir)])
}

/// Closes every handle of an fd reclaim in one hop; like QEMU's reclaim
/// block, it runs even for a cancelled request.
pub(crate) fn co_close_many(co: &Co, s: &V9fsState, handles: Vec<Handle>) {
    let n = handles.len();
    co.run_in_worker(move || drop(handles));
    s.export.fds.closed(n);
}

fn close_hop(co: &Co, s: &V9fsState, handles: Vec<Handle>) -> FsResult<()> {
    let n = handles.len();
    // A cancelled request answers EINTR without the hop, as in QEMU, but
    // unlike QEMU the handles are not leaked: they close here when dropped.
    let r = hop(co, s, move |_| {
        drop(handles);
        Ok(())
    });
    s.export.fds.closed(n);
    r
}

/// `v9fs_co_fsync`.
pub(crate) fn co_fsync(co: &Co, s: &V9fsState, h: &Handle, datasync: bool) -> FsResult<()> {
    let h = h.clone();
    hop(co, s, move |_| h.fsync(datasync))
}

/// `locks=posix` (beyond QEMU, whose Tlock never reaches the host): set or
/// clear `owner`'s record lock on the open file, never waiting.
pub(crate) fn co_setlk(
    co: &Co,
    s: &V9fsState,
    h: &FileHandle,
    owner: Vec<u8>,
    lock: RecordLock,
) -> FsResult<()> {
    let h = Arc::clone(h);
    hop(co, s, move |_| h.setlk(&owner, &lock))
}

/// `locks=posix`: the first lock of another owner in the way of `lock`.
pub(crate) fn co_getlk(
    co: &Co,
    s: &V9fsState,
    h: &FileHandle,
    owner: Vec<u8>,
    lock: RecordLock,
) -> FsResult<Option<LockConflict>> {
    let h = Arc::clone(h);
    hop(co, s, move |_| h.getlk(&owner, &lock))
}

/// `v9fs_co_futimens`.
pub(crate) fn co_futimens(
    co: &Co,
    s: &V9fsState,
    h: &Handle,
    times: [Timespec; 2],
) -> FsResult<()> {
    let h = h.clone();
    hop(co, s, move |_| h.futimens(&times))
}

/// `v9fs_co_ftruncate`.
pub(crate) fn co_ftruncate(co: &Co, s: &V9fsState, h: &Handle, size: u64) -> FsResult<()> {
    let h = h.clone();
    hop(co, s, move |_| h.ftruncate(size))
}

/// `v9fs_co_fstat` on an open file or directory.
pub(crate) fn co_fstat(co: &Co, s: &V9fsState, h: &Handle) -> FsResult<FileStat> {
    let h = h.clone();
    hop(co, s, move |_| h.fstat())
}

/// QEMU 7.2's fsync, fstat (Tlock, Tgetlock) or Twstat-fsync on a fid that
/// was never opened: the driver ran on whatever the fid's union held, in a
/// hop. Synth answers success; for the local driver that was fd 0 of the
/// QEMU process, whose result `on_local` stands for.
pub(crate) fn co_unopened_handle_op(
    co: &Co,
    s: &V9fsState,
    on_local: FsResult<()>,
) -> FsResult<()> {
    let r = if s.is_path_based() { on_local } else { Ok(()) };
    hop(co, s, move |_| r)
}

// ---- codir.c ------------------------------------------------------------

fn lock_dir(d: &DirHandle) -> std::sync::MutexGuard<'_, Box<dyn crate::fsdev::DirStream>> {
    // A panic in a driver's readdir cannot leave the stream unsafe to use.
    d.lock().unwrap_or_else(|e| e.into_inner())
}

/// `v9fs_co_readdir`: one entry (the 9P2000.u directory Tread path).
pub(crate) fn co_readdir(co: &Co, s: &V9fsState, dir: &DirHandle) -> FsResult<Option<DirEnt>> {
    let dir = Arc::clone(dir);
    hop(co, s, move |_| lock_dir(&dir).readdir())
}

/// `v9fs_co_telldir`.
pub(crate) fn co_telldir(co: &Co, s: &V9fsState, dir: &DirHandle) -> FsResult<i64> {
    let dir = Arc::clone(dir);
    hop(co, s, move |_| lock_dir(&dir).telldir())
}

/// `v9fs_co_seekdir` (skipped, silently, if cancelled).
pub(crate) fn co_seekdir(co: &Co, s: &V9fsState, dir: &DirHandle, off: i64) {
    let dir = Arc::clone(dir);
    let _ = hop(co, s, move |_| {
        lock_dir(&dir).seekdir(off);
        Ok(())
    });
}

/// `v9fs_co_rewinddir` (skipped, silently, if cancelled).
pub(crate) fn co_rewinddir(co: &Co, s: &V9fsState, dir: &DirHandle) {
    let dir = Arc::clone(dir);
    let _ = hop(co, s, move |_| {
        lock_dir(&dir).rewinddir();
        Ok(())
    });
}

/// One entry of `v9fs_co_readdir_many`, with its stat when asked for.
pub(crate) struct DirEntry {
    pub dent: DirEnt,
    pub st: Option<FileStat>,
}

/// `v9fs_co_readdir_many`: every entry from `offset` that fits in
/// `max_count` bytes of Rreaddir (24 + name length each), in one hop, under
/// the directory's lock; with `dostat`, each entry's stat too. The stream is
/// left after the last entry returned.
pub(crate) fn co_readdir_many(
    co: &Co,
    s: &V9fsState,
    dir: &DirHandle,
    dir_path: &V9fsPath,
    offset: u64,
    max_count: u32,
    dostat: bool,
) -> FsResult<Vec<DirEntry>> {
    let dir = Arc::clone(dir);
    let dir_path = dir_path.clone();
    let cancel = co.cancel_flag().clone();
    let job = move |ops: &dyn FileOperations| {
        let mut stream = lock_dir(&dir);
        if offset == 0 {
            stream.rewinddir();
        } else {
            stream.seekdir(offset as i64);
        }
        let mut pos = stream.telldir()?;
        let mut out = Vec::new();
        let mut size = 0usize;
        let result = loop {
            if cancel.is_cancelled() {
                break Err(Errno::EINTR);
            }
            let dent = match stream.readdir() {
                Ok(Some(d)) => d,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let cost = 24 + c_name(&dent.name).len();
            if size + cost > max_count as usize {
                break Ok(());
            }
            size += cost;
            let st = if dostat {
                let stat = ops
                    .name_to_path(Some(&dir_path), c_name(&dent.name))
                    .and_then(|p| ops.lstat(&p));
                match stat {
                    Ok(st) => Some(st),
                    Err(e) => break Err(e),
                }
            } else {
                None
            };
            pos = dent.off;
            out.push(DirEntry { dent, st });
        };
        stream.seekdir(pos);
        result.map(|()| out)
    };
    if s.compat() == crate::Compat::V7_2 {
        hop(co, s, job)
    } else {
        path_hop(co, s, job)
    }
}

/// A name as C code sees it: up to the first NUL.
pub(crate) fn c_name(name: &[u8]) -> &[u8] {
    match name.iter().position(|&b| b == 0) {
        Some(n) => &name[..n],
        None => name,
    }
}

// ---- coxattr.c ----------------------------------------------------------

/// `v9fs_co_lsetxattr`.
pub(crate) fn co_lsetxattr(
    co: &Co,
    s: &V9fsState,
    path: &V9fsPath,
    name: &[u8],
    value: Vec<u8>,
    flags: i32,
) -> FsResult<()> {
    let (path, name) = (path.clone(), name.to_vec());
    path_hop(co, s, move |ops| ops.lsetxattr(&path, &name, &value, flags))
}

/// `v9fs_co_lremovexattr`.
pub(crate) fn co_lremovexattr(
    co: &Co,
    s: &V9fsState,
    path: &V9fsPath,
    name: &[u8],
) -> FsResult<()> {
    let (path, name) = (path.clone(), name.to_vec());
    path_hop(co, s, move |ops| ops.lremovexattr(&path, &name))
}
