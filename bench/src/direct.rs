//! The direct loop: the same operations as the workloads, done with
//! syscalls in this process (one thread, no 9P, no sockets, no hops).
//!
//! Two variants:
//! - `Minimal` is the physical limit: what a local program needs for the
//!   operation (`meta` is one `fstatat`; `readdir` is `getdents64` until
//!   done; `create` is `openat(O_CREAT)`, `close`, `unlinkat`).
//! - `Backend` replays the syscalls coro9p's `local` backend issues for the
//!   operation, as strace shows them (QEMU's hw/9pfs/9p-local.c sequence:
//!   every lookup opens the parent directory component by component with
//!   `O_NOFOLLOW`, checks it with `fstat` and `fcntl`, then `fstatat`s the
//!   name; a Treaddir `lstat`s every entry). The gap between the two is what
//!   the backend's syscall sequence costs; the gap between `Backend` and
//!   the server is what 9P, the socket and the hops cost.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::layout;
use crate::load::{Figures, Rng, Workload, SEQWRITE_CHUNK};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Minimal,
    Backend,
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in names")
}

fn check(r: libc::c_int, what: &str) -> Result<libc::c_int, String> {
    if r < 0 {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(r)
    }
}

fn close(fd: RawFd) {
    // SAFETY: `fd` is a descriptor this module opened and closes once.
    unsafe { libc::close(fd) };
}

fn fstatat(dirfd: RawFd, name: &CStr, flags: libc::c_int) -> Result<(), String> {
    // SAFETY: `st` is a plain C struct the kernel fills; `name` is
    // NUL-terminated.
    let r = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstatat(dirfd, name.as_ptr(), &mut st, flags)
    };
    check(r, "fstatat").map(drop)
}

fn openat(
    dirfd: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<RawFd, String> {
    // SAFETY: `name` is NUL-terminated; the result is a new descriptor or -1.
    check(
        unsafe { libc::openat(dirfd, name.as_ptr(), flags, mode as libc::c_uint) },
        "openat",
    )
}

/// Reads a whole directory with getdents64 (32 KiB at a time, as glibc's
/// readdir does), calling `f` with each name; returns the entry count.
fn getdents_all(fd: RawFd, buf: &mut [u8], mut f: impl FnMut(&CStr)) -> Result<usize, String> {
    let mut n = 0;
    loop {
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let got = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if got < 0 {
            return Err(format!("getdents64: {}", std::io::Error::last_os_error()));
        }
        if got == 0 {
            return Ok(n);
        }
        let mut off = 0usize;
        while off < got as usize {
            // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = CStr::from_bytes_until_nul(&buf[off + 19..off + reclen]).unwrap_or_default();
            f(name);
            n += 1;
            off += reclen;
        }
    }
}

/// The `local` backend's path operations, replayed (see the module text).
struct Backend {
    root: RawFd,
}

const NOFOLLOW_FLAGS: libc::c_int =
    libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC;

impl Backend {
    /// `local_open_nofollow`: opens `path` (components below the root)
    /// without following links; intermediate components as O_PATH.
    fn open_nofollow(&self, path: &[&CStr], flags: libc::c_int) -> Result<RawFd, String> {
        let dot = cstr(".");
        let path: &[&CStr] = if path.is_empty() { &[&dot] } else { path };
        let mut dir = self.root;
        for c in &path[..path.len() - 1] {
            let fd = openat(
                dir,
                c,
                libc::O_RDONLY
                    | libc::O_NOFOLLOW
                    | libc::O_CLOEXEC
                    | libc::O_PATH
                    | libc::O_DIRECTORY,
                0,
            )?;
            if dir != self.root {
                close(dir);
            }
            dir = fd;
        }
        let fd = openat(dir, path[path.len() - 1], flags | NOFOLLOW_FLAGS, 0)?;
        fstatat(fd, c"", libc::AT_EMPTY_PATH)?;
        // SAFETY: fcntl on a descriptor just opened.
        check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }, "fcntl")?;
        if dir != self.root {
            close(dir);
        }
        Ok(fd)
    }

    /// `local_lstat`: open the parent, fstatat the name.
    fn lstat(&self, path: &[&CStr]) -> Result<(), String> {
        let (dir, name) = match path.split_last() {
            Some((name, dir)) => (dir, *name),
            None => (&[][..], c"."),
        };
        let fd = self.open_nofollow(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let r = fstatat(fd, name, libc::AT_SYMLINK_NOFOLLOW);
        close(fd);
        r
    }
}

/// State shared by the loops: the export's root, names, buffers.
struct Ctx {
    root: RawFd,
    be: Backend,
    rng: Rng,
    tree: Vec<(CString, CString, CString)>,
    dirbuf: Vec<u8>,
    data: Vec<u8>,
    big: RawFd,
    big_size: u64,
    wr: RawFd,
    next: u64,
    seq: u64,
}

impl Ctx {
    fn op(&mut self, w: Workload, v: Variant) -> Result<u64, String> {
        use Variant::*;
        use Workload::*;
        let root = self.root;
        match (w, v) {
            (Meta, Minimal) => {
                let i = self.rng.below(layout::TREE_FILES as u64) as usize;
                fstatat(root, &self.tree[i].2, libc::AT_SYMLINK_NOFOLLOW)?;
                Ok(0)
            }
            (Meta, Backend) => {
                let i = self.rng.below(layout::TREE_FILES as u64) as usize;
                let (t, d, f) = (c"tree", &*self.tree[i].0, &*self.tree[i].1);
                // Twalk: the start, then each name; Tgetattr: the file.
                self.be.lstat(&[])?;
                self.be.lstat(&[t])?;
                self.be.lstat(&[t, d])?;
                self.be.lstat(&[t, d, f])?;
                self.be.lstat(&[t, d, f])?;
                Ok(0)
            }
            (StatTree, _) => unreachable!("stat-tree runs as passes"),
            (Read4k, _) => {
                let off = self.rng.below(self.big_size / 4096) * 4096;
                self.pread(4096, off)
            }
            (SeqRead, _) => {
                let off = self.next;
                self.next = (self.next + (1 << 20)) % self.big_size;
                self.pread(1 << 20, off)
            }
            (SeqWrite, _) => {
                let n = SEQWRITE_CHUNK as usize;
                let off = self.next;
                self.next += n as u64;
                if self.next + n as u64 > layout::WRITE_WRAP {
                    self.next = 0;
                }
                // SAFETY: writes n bytes from `data`, which holds 1 MiB.
                let r = unsafe { libc::pwrite(self.wr, self.data.as_ptr().cast(), n, off as i64) };
                if r <= 0 {
                    return Err(format!("pwrite: {}", std::io::Error::last_os_error()));
                }
                Ok(r as u64)
            }
            (Readdir, v) => self.readdir(v),
            (Create, v) => self.create(v),
        }
    }

    fn pread(&mut self, n: usize, off: u64) -> Result<u64, String> {
        // SAFETY: reads at most n bytes into `data`, which holds 1 MiB.
        let r = unsafe { libc::pread(self.big, self.data.as_mut_ptr().cast(), n, off as i64) };
        if r <= 0 {
            return Err(format!("pread: {}", std::io::Error::last_os_error()));
        }
        Ok(r as u64)
    }

    fn readdir(&mut self, v: Variant) -> Result<u64, String> {
        let dir = c"dir10k";
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let fd = match v {
            Variant::Minimal => openat(self.root, dir, flags | libc::O_CLOEXEC, 0)?,
            Variant::Backend => {
                self.be.lstat(&[dir])?;
                self.be.open_nofollow(&[dir], flags)?
            }
        };
        let mut buf = std::mem::take(&mut self.dirbuf);
        let be = &self.be;
        let mut err = Ok(());
        let n = getdents_all(fd, &mut buf, |name| {
            if v == Variant::Backend && err.is_ok() {
                err = match name.to_bytes() {
                    b"." => be.lstat(&[dir]),
                    b".." => be.lstat(&[]),
                    _ => be.lstat(&[dir, name]),
                };
            }
        });
        self.dirbuf = buf;
        close(fd);
        err?;
        if n? < layout::DIR10K_ENTRIES {
            return Err("dir10k has too few entries".into());
        }
        Ok(0)
    }

    fn create(&mut self, v: Variant) -> Result<u64, String> {
        self.seq += 1;
        let name = cstr(&format!("d{}", self.seq));
        let dir = c"create";
        match v {
            Variant::Minimal => {
                let d = openat(
                    self.root,
                    dir,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    0,
                )?;
                let fd = openat(
                    d,
                    &name,
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    0o644,
                );
                close(fd?);
                // SAFETY: `name` is NUL-terminated.
                let r = check(unsafe { libc::unlinkat(d, name.as_ptr(), 0) }, "unlinkat");
                close(d);
                r?;
            }
            Variant::Backend => {
                let be = &self.be;
                // Twalk (clone): lstat of the directory.
                be.lstat(&[dir])?;
                // Tlcreate: open the directory, create, set owner and mode,
                // lstat the new file; then statfs for the iounit.
                let d = be.open_nofollow(&[dir], libc::O_RDONLY | libc::O_DIRECTORY)?;
                let cflags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
                let fd = openat(d, &name, cflags | NOFOLLOW_FLAGS, 0o644)?;
                fstatat(fd, c"", libc::AT_EMPTY_PATH)?;
                // SAFETY: plain syscalls on descriptors and NUL-terminated
                // names owned here.
                unsafe {
                    check(
                        libc::fcntl(fd, libc::F_SETFL, cflags | libc::O_NOFOLLOW),
                        "fcntl",
                    )?;
                    check(
                        libc::fchownat(d, name.as_ptr(), 0, 0, libc::AT_SYMLINK_NOFOLLOW),
                        "fchownat",
                    )?;
                }
                fstatat(d, &name, libc::AT_SYMLINK_NOFOLLOW)?;
                let p = openat(d, &name, libc::O_RDONLY | libc::O_PATH | NOFOLLOW_FLAGS, 0)?;
                fstatat(p, c"", libc::AT_EMPTY_PATH)?;
                let proc = cstr(&format!("/proc/self/fd/{p}"));
                // SAFETY: NUL-terminated path.
                check(
                    unsafe { libc::fchmodat(libc::AT_FDCWD, proc.as_ptr(), 0o644, 0) },
                    "fchmodat",
                )?;
                close(p);
                close(d);
                be.lstat(&[dir, &name])?;
                let s = be.open_nofollow(&[dir, &name], libc::O_RDONLY)?;
                // SAFETY: `st` is a plain C struct the kernel fills.
                unsafe {
                    let mut st: libc::statfs = std::mem::zeroed();
                    check(libc::fstatfs(s, &mut st), "fstatfs")?;
                }
                close(s);
                // Tclunk.
                close(fd);
                // Tunlinkat.
                let d = be.open_nofollow(&[dir], libc::O_RDONLY | libc::O_DIRECTORY)?;
                // SAFETY: `name` is NUL-terminated.
                let r = check(unsafe { libc::unlinkat(d, name.as_ptr(), 0) }, "unlinkat");
                close(d);
                r?;
            }
        }
        Ok(0)
    }

    /// One stat-tree pass: every directory listed, every file stat'ed;
    /// returns the files stat'ed, pushing each file's latency.
    fn stat_tree_pass(
        &mut self,
        v: Variant,
        lat: &mut Vec<u64>,
        deadline: Instant,
    ) -> Result<u64, String> {
        let mut files = 0;
        let t = c"tree";
        for d in 0..layout::TREE_DIRS {
            let dname = cstr(&layout::tree_dir(d));
            let flags = libc::O_RDONLY | libc::O_DIRECTORY;
            let dfd = match v {
                Variant::Minimal => openat(
                    self.root,
                    &cstr(&format!("tree/{}", layout::tree_dir(d))),
                    flags | libc::O_CLOEXEC,
                    0,
                )?,
                Variant::Backend => {
                    self.be.lstat(&[t, &dname])?;
                    self.be.open_nofollow(&[t, &dname], flags)?
                }
            };
            let mut names = Vec::with_capacity(layout::TREE_FILES / layout::TREE_DIRS);
            let mut buf = std::mem::take(&mut self.dirbuf);
            let be = &self.be;
            let mut err = Ok(());
            let r = getdents_all(dfd, &mut buf, |name| {
                let b = name.to_bytes();
                if v == Variant::Backend && err.is_ok() {
                    err = match b {
                        b"." => be.lstat(&[t, &dname]),
                        b".." => be.lstat(&[t]),
                        _ => be.lstat(&[t, &dname, name]),
                    };
                }
                if b != b"." && b != b".." {
                    names.push(name.to_owned());
                }
            });
            self.dirbuf = buf;
            r?;
            err?;
            for name in &names {
                let t0 = Instant::now();
                match v {
                    Variant::Minimal => fstatat(dfd, name, libc::AT_SYMLINK_NOFOLLOW)?,
                    Variant::Backend => {
                        self.be.lstat(&[t, &dname])?;
                        self.be.lstat(&[t, &dname, name])?;
                        self.be.lstat(&[t, &dname, name])?;
                    }
                }
                lat.push(t0.elapsed().as_nanos() as u64);
                files += 1;
            }
            close(dfd);
            if Instant::now() >= deadline {
                break;
            }
        }
        Ok(files)
    }
}

/// Runs workload `w` as the direct loop for `secs` seconds.
pub fn run(w: Workload, v: Variant, export: &Path, secs: f64) -> Result<Figures, String> {
    let rootp = cstr(export.to_str().ok_or("the export path is not UTF-8")?);
    // SAFETY: NUL-terminated path; a new descriptor or -1.
    let root = check(
        unsafe {
            libc::open(
                rootp.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        },
        "open the export",
    )?;
    let big = openat(
        root,
        &cstr(layout::BIG),
        libc::O_RDONLY | libc::O_CLOEXEC,
        0,
    )?;
    // SAFETY: lseek on a descriptor just opened.
    let big_size = unsafe { libc::lseek(big, 0, libc::SEEK_END) } as u64;
    let wr = if w == Workload::SeqWrite {
        openat(
            root,
            &cstr(&format!("{}/direct", layout::WR)),
            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        )?
    } else {
        -1
    };
    let tree = (0..layout::TREE_FILES)
        .map(|i| {
            let (d, f) = layout::tree_file(i);
            let full = cstr(&format!("{}/{d}/{f}", layout::TREE));
            (cstr(&d), cstr(&f), full)
        })
        .collect();
    let mut c = Ctx {
        root,
        be: Backend { root },
        rng: Rng::new(0xd1ec7),
        tree,
        dirbuf: vec![0; 32 * 1024],
        data: (0..1usize << 20).map(|i| (i % 253) as u8 + 1).collect(),
        big,
        big_size,
        wr,
        next: 0,
        seq: 0,
    };
    let mut f = Figures::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let res = (|| {
        while Instant::now() < deadline {
            if w == Workload::StatTree {
                f.ops += c.stat_tree_pass(v, &mut f.lat_ns, deadline)?;
                continue;
            }
            let t0 = Instant::now();
            f.bytes += c.op(w, v)?;
            f.lat_ns.push(t0.elapsed().as_nanos() as u64);
            f.ops += 1;
        }
        Ok::<(), String>(())
    })();
    f.secs = start.elapsed().as_secs_f64();
    for fd in [big, wr, root] {
        if fd >= 0 {
            close(fd);
        }
    }
    res?;
    f.reqs = f.ops;
    f.lat_ns.sort_unstable();
    Ok(f)
}
