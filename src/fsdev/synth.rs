//! The synth driver (QEMU's 9p-synth.c): an in-memory tree whose files
//! answer through callbacks, with QEMU's qtest fixtures.
//!
//! Nodes are kept in an arena and never removed; a path is a node number. A
//! directory's entries are listed newest first, with its own "." and ".."
//! entries (which share the attributes of the directories they name, so they
//! count in nlink). Nothing a client sends can change the tree: creation and
//! removal fail as QEMU's synth driver fails them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{
    DirEnt, DirHandle, DirStream, Errno, ExportFlags, FileHandle, FileOperations, FileStat, FsCred,
    FsResult, OpenFile, SessionCtx, StatFs, Timespec, V9fsPath,
};
use crate::Compat;

/// A file's read callback: fills `buf` from `offset`, returns the bytes.
pub type ReadFn = fn(buf: &mut [u8], offset: u64, ctx: &SessionCtx) -> FsResult<usize>;
/// A file's write callback: consumes from `buf` at `offset`, returns the bytes.
pub type WriteFn = fn(buf: &[u8], offset: u64) -> FsResult<usize>;

/// A node number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeId(pub usize);

impl NodeId {
    /// The root directory.
    pub const ROOT: NodeId = NodeId(0);
}

struct Attr {
    mode: u32,
    inode: u64,
    nlink: u64,
    read: Option<ReadFn>,
    write: Option<WriteFn>,
}

struct Node {
    name: Vec<u8>,
    attr: usize,
    /// Newest first.
    children: Vec<usize>,
}

/// The qtest fixture names (QEMU's `QTEST_V9FS_SYNTH_*`).
pub mod fixtures {
    /// `WALK0` .. `WALK15`, nested.
    pub const WALK_FILE: &str = "WALK";
    /// A file with no callbacks.
    pub const LOPEN_FILE: &str = "LOPEN";
    /// A file whose write takes one byte per call.
    pub const WRITE_FILE: &str = "WRITE";
    /// A file whose write blocks (EINTR) until cancelled.
    pub const FLUSH_FILE: &str = "FLUSH";
    /// A directory of 100 files.
    pub const READDIR_DIR: &str = "ReadDirDir";
    /// The files in it: `ReadDirFile0` .. `ReadDirFile99`.
    pub const READDIR_FILE: &str = "ReadDirFile";
    /// How many.
    pub const READDIR_NFILES: usize = 100;
}

/// The synth file system.
pub struct SynthFs {
    nodes: Vec<Node>,
    attrs: Vec<Attr>,
    node_count: u64,
    compat: Compat,
}

impl SynthFs {
    /// An empty tree: the root, mode 0555, inode 0.
    pub fn new(compat: Compat) -> SynthFs {
        let mut fs = SynthFs {
            nodes: Vec::new(),
            attrs: vec![Attr {
                mode: 0o555 | libc::S_IFDIR,
                inode: 0,
                nlink: 1,
                read: None,
                write: None,
            }],
            node_count: 0,
            compat,
        };
        fs.nodes.push(Node {
            name: b"/".to_vec(),
            attr: 0,
            children: Vec::new(),
        });
        fs.add_entry(0, b"..", 0);
        fs.add_entry(0, b".", 0);
        fs
    }

    /// The tree with QEMU's qtest fixtures (§8.2 of the reference), in
    /// QEMU's creation order so that inode numbers and listings match.
    pub fn with_qtest_fixtures(compat: Compat) -> SynthFs {
        use fixtures::*;
        let mut fs = SynthFs::new(compat);
        let mut dir = NodeId::ROOT;
        for i in 0..crate::protocol::MAXWELEM {
            dir = fs
                .synth_mkdir(dir, 0o700, format!("{WALK_FILE}{i}").as_bytes())
                .expect("fixture");
        }
        let root = NodeId::ROOT;
        fs.synth_add_file(root, 0, LOPEN_FILE.as_bytes(), None, None)
            .expect("fixture");
        fs.synth_add_file(root, 0, WRITE_FILE.as_bytes(), None, Some(write_one_byte))
            .expect("fixture");
        fs.synth_add_file(
            root,
            0,
            FLUSH_FILE.as_bytes(),
            None,
            Some(write_until_flushed),
        )
        .expect("fixture");
        let readdir = fs
            .synth_mkdir(root, 0o700, READDIR_DIR.as_bytes())
            .expect("fixture");
        for i in 0..READDIR_NFILES {
            fs.synth_add_file(
                readdir,
                0,
                format!("{READDIR_FILE}{i}").as_bytes(),
                None,
                None,
            )
            .expect("fixture");
        }
        if compat == Compat::Master {
            let stat = fs.synth_mkdir(root, 0o755, b"stat").expect("fixture");
            fs.synth_add_file(stat, 0o444, b"xattr_count", Some(read_xattr_count), None)
                .expect("fixture");
        }
        fs
    }

    fn add_entry(&mut self, parent: usize, name: &[u8], attr: usize) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            name: name.to_vec(),
            attr,
            children: Vec::new(),
        });
        self.nodes[parent].children.insert(0, id);
        self.attrs[attr].nlink += 1;
        id
    }

    fn check_new_name(&self, parent: NodeId, name: &[u8]) -> FsResult<()> {
        if name.is_empty() || name.len() >= 255 {
            return Err(Errno::EINVAL);
        }
        let p = self.nodes.get(parent.0).ok_or(Errno::EINVAL)?;
        if p.children.iter().any(|&c| self.nodes[c].name == name) {
            return Err(Errno::EEXIST);
        }
        Ok(())
    }

    /// Adds a directory (`qemu_v9fs_synth_mkdir`): its write bits are cleared.
    ///
    /// # Errors
    ///
    /// EEXIST for a taken name, EINVAL for an empty or too long one.
    pub fn synth_mkdir(&mut self, parent: NodeId, mode: u32, name: &[u8]) -> FsResult<NodeId> {
        self.check_new_name(parent, name)?;
        self.node_count += 1;
        let attr = self.attrs.len();
        self.attrs.push(Attr {
            mode: (mode & 0o777 & !0o222) | libc::S_IFDIR,
            inode: self.node_count,
            nlink: 0,
            read: None,
            write: None,
        });
        let id = self.add_entry(parent.0, name, attr);
        let parent_attr = self.nodes[parent.0].attr;
        self.add_entry(id, b"..", parent_attr);
        self.add_entry(id, b".", attr);
        Ok(NodeId(id))
    }

    /// Adds a file (`qemu_v9fs_synth_add_file`).
    ///
    /// # Errors
    ///
    /// As [`SynthFs::synth_mkdir`].
    pub fn synth_add_file(
        &mut self,
        parent: NodeId,
        mode: u32,
        name: &[u8],
        read: Option<ReadFn>,
        write: Option<WriteFn>,
    ) -> FsResult<NodeId> {
        self.check_new_name(parent, name)?;
        self.node_count += 1;
        let attr = self.attrs.len();
        self.attrs.push(Attr {
            mode: (mode & 0o777) | libc::S_IFREG,
            inode: self.node_count,
            nlink: 0,
            read,
            write,
        });
        Ok(NodeId(self.add_entry(parent.0, name, attr)))
    }

    fn node(&self, path: &V9fsPath) -> FsResult<usize> {
        let bytes: [u8; 8] = path.0.as_slice().try_into().map_err(|_| Errno::EINVAL)?;
        let id = u64::from_le_bytes(bytes) as usize;
        if id < self.nodes.len() {
            Ok(id)
        } else {
            Err(Errno::EINVAL)
        }
    }

    fn path_of(id: usize) -> V9fsPath {
        V9fsPath((id as u64).to_le_bytes().to_vec())
    }

    fn stat_of(&self, id: usize) -> FileStat {
        let a = &self.attrs[self.nodes[id].attr];
        FileStat {
            ino: a.inode,
            mode: a.mode,
            nlink: a.nlink,
            ..FileStat::default()
        }
    }
}

/// `/WRITE`: takes one byte per call, whatever it is given.
fn write_one_byte(_buf: &[u8], _offset: u64) -> FsResult<usize> {
    Ok(1)
}

/// `/FLUSH`: EINTR while the first byte is non-zero, so the server's write
/// retries until the request is cancelled; one byte otherwise.
fn write_until_flushed(buf: &[u8], _offset: u64) -> FsResult<usize> {
    match buf.first() {
        Some(&b) if b != 0 => Err(Errno::EINTR),
        _ => Ok(1),
    }
}

/// `/stat/xattr_count`: the session's xattr-fid count as a native-endian
/// 8-byte size_t, whatever the offset.
fn read_xattr_count(buf: &mut [u8], _offset: u64, ctx: &SessionCtx) -> FsResult<usize> {
    let bytes = (ctx.xattr_fid_count.load(Ordering::Relaxed) as usize).to_ne_bytes();
    if buf.len() < bytes.len() {
        return Err(Errno::ENOSPC);
    }
    buf[..bytes.len()].copy_from_slice(&bytes);
    Ok(bytes.len())
}

struct SynthFile {
    stat: FileStat,
    read: Option<ReadFn>,
    write: Option<WriteFn>,
    ctx: SessionCtx,
}

impl OpenFile for SynthFile {
    fn preadv(&self, buf: &mut [u8], offset: u64) -> FsResult<usize> {
        let read = self.read.ok_or(Errno::EPERM)?;
        // No iovec element, no callback (QEMU loops over the elements).
        if buf.is_empty() {
            return Ok(0);
        }
        read(buf, offset, &self.ctx)
    }
    fn pwritev(&self, buf: &[u8], offset: u64) -> FsResult<usize> {
        let write = self.write.ok_or(Errno::EPERM)?;
        if buf.is_empty() {
            return Ok(0);
        }
        write(buf, offset)
    }
    fn fstat(&self) -> FsResult<FileStat> {
        Ok(self.stat)
    }
    fn fsync(&self, _datasync: bool) -> FsResult<()> {
        Ok(())
    }
    fn ftruncate(&self, _size: u64) -> FsResult<()> {
        Err(Errno::ENOSYS)
    }
    fn futimens(&self, _times: &[Timespec; 2]) -> FsResult<()> {
        Err(Errno::ENOSYS)
    }
    fn has_valid_handle(&self) -> bool {
        false
    }
}

struct SynthDir {
    stat: FileStat,
    /// (name, inode) of each entry, in listing order.
    entries: Vec<(Vec<u8>, u64)>,
    offset: usize,
}

impl DirStream for SynthDir {
    fn readdir(&mut self) -> FsResult<Option<DirEnt>> {
        let Some((name, ino)) = self.entries.get(self.offset) else {
            return Ok(None);
        };
        self.offset += 1;
        Ok(Some(DirEnt {
            name: name.clone(),
            ino: *ino,
            off: self.offset as i64,
            ty: 0,
        }))
    }
    fn telldir(&mut self) -> FsResult<i64> {
        Ok(self.offset as i64)
    }
    fn seekdir(&mut self, off: i64) {
        self.offset = usize::try_from(off).unwrap_or(usize::MAX);
    }
    fn rewinddir(&mut self) {
        self.offset = 0;
    }
    fn fstat(&self) -> FsResult<FileStat> {
        Ok(self.stat)
    }
    fn fsync(&self, _datasync: bool) -> FsResult<()> {
        Ok(())
    }
    fn futimens(&self, _times: &[Timespec; 2]) -> FsResult<()> {
        Err(Errno::ENOSYS)
    }
}

impl FileOperations for SynthFs {
    fn export_flags(&self) -> ExportFlags {
        ExportFlags(0)
    }

    fn name_to_path(&self, dir: Option<&V9fsPath>, name: &[u8]) -> FsResult<V9fsPath> {
        if name == b"." || name == b".." {
            return Err(Errno::EINVAL);
        }
        let dir = match dir {
            Some(d) => self.node(d)?,
            None => 0,
        };
        if name == b"/" {
            return Ok(SynthFs::path_of(dir));
        }
        self.nodes[dir]
            .children
            .iter()
            .copied()
            .find(|&c| self.nodes[c].name == name)
            .map(SynthFs::path_of)
            .ok_or(Errno::ENOENT)
    }

    fn lstat(&self, path: &V9fsPath) -> FsResult<FileStat> {
        Ok(self.stat_of(self.node(path)?))
    }

    fn basename(&self, path: &V9fsPath) -> Vec<u8> {
        self.node(path)
            .map(|id| self.nodes[id].name.clone())
            .unwrap_or_default()
    }

    fn readlink(&self, _path: &V9fsPath) -> FsResult<Vec<u8>> {
        Err(Errno::ENOSYS)
    }
    fn chmod(&self, _path: &V9fsPath, _cred: &FsCred) -> FsResult<()> {
        Err(Errno::EPERM)
    }
    fn chown(&self, _path: &V9fsPath, _cred: &FsCred) -> FsResult<()> {
        Err(Errno::EPERM)
    }
    fn mknod(&self, _dir: &V9fsPath, _name: &[u8], _cred: &FsCred) -> FsResult<()> {
        Err(Errno::EPERM)
    }
    fn utimensat(&self, _path: &V9fsPath, _times: &[Timespec; 2]) -> FsResult<()> {
        Ok(())
    }
    fn remove(&self, _path: &V9fsPath) -> FsResult<()> {
        Err(Errno::EPERM)
    }
    fn symlink(&self, _t: &[u8], _dir: &V9fsPath, _name: &[u8], _cred: &FsCred) -> FsResult<()> {
        Err(Errno::EPERM)
    }
    fn link(&self, _old: &V9fsPath, _dir: &V9fsPath, _name: &[u8]) -> FsResult<()> {
        Err(Errno::EPERM)
    }

    fn open(&self, path: &V9fsPath, _flags: i32, ctx: &SessionCtx) -> FsResult<FileHandle> {
        let id = self.node(path)?;
        let attr = &self.attrs[self.nodes[id].attr];
        Ok(Arc::new(SynthFile {
            stat: self.stat_of(id),
            read: attr.read,
            write: attr.write,
            ctx: ctx.clone(),
        }))
    }

    fn opendir(&self, path: &V9fsPath) -> FsResult<DirHandle> {
        let id = self.node(path)?;
        let entries = self.nodes[id]
            .children
            .iter()
            .map(|&c| {
                (
                    self.nodes[c].name.clone(),
                    self.attrs[self.nodes[c].attr].inode,
                )
            })
            .collect();
        Ok(Arc::new(Mutex::new(Box::new(SynthDir {
            stat: self.stat_of(id),
            entries,
            offset: 0,
        }))))
    }

    fn open2(
        &self,
        _dir: &V9fsPath,
        _name: &[u8],
        _flags: i32,
        _cred: &FsCred,
        _ctx: &SessionCtx,
    ) -> FsResult<FileHandle> {
        Err(Errno::ENOSYS)
    }
    fn mkdir(&self, _dir: &V9fsPath, _name: &[u8], _cred: &FsCred) -> FsResult<()> {
        Err(Errno::EPERM)
    }
    fn rename(&self, _old: &V9fsPath, _new: &V9fsPath) -> FsResult<()> {
        Err(Errno::EPERM)
    }
    fn truncate(&self, _path: &V9fsPath, _size: u64) -> FsResult<()> {
        Err(Errno::ENOSYS)
    }

    fn statfs(&self, _path: &V9fsPath) -> FsResult<StatFs> {
        Ok(StatFs {
            ty: 0xABCD,
            bsize: 512,
            files: self.node_count,
            namelen: 255,
            ..StatFs::default()
        })
    }

    fn lgetxattr(&self, _path: &V9fsPath, _name: &[u8], _size: usize) -> FsResult<Vec<u8>> {
        Err(Errno::ENOTSUP)
    }
    fn lgetxattr_size(&self, _path: &V9fsPath, _name: &[u8]) -> FsResult<usize> {
        Err(Errno::ENOTSUP)
    }
    fn llistxattr(&self, _path: &V9fsPath, _size: usize) -> FsResult<Vec<u8>> {
        Err(Errno::ENOTSUP)
    }
    fn llistxattr_size(&self, _path: &V9fsPath) -> FsResult<usize> {
        Err(Errno::ENOTSUP)
    }
    fn lsetxattr(&self, _p: &V9fsPath, _n: &[u8], _v: &[u8], _f: i32) -> FsResult<()> {
        match self.compat {
            // Master pretends it worked, so that xattr fids can be tested.
            Compat::Master => Ok(()),
            Compat::V7_2 => Err(Errno::ENOTSUP),
        }
    }
    fn lremovexattr(&self, _path: &V9fsPath, _name: &[u8]) -> FsResult<()> {
        match self.compat {
            Compat::Master => Ok(()),
            Compat::V7_2 => Err(Errno::ENOTSUP),
        }
    }
    fn renameat(&self, _od: &V9fsPath, _on: &[u8], _nd: &V9fsPath, _nn: &[u8]) -> FsResult<()> {
        Err(Errno::EPERM)
    }
    fn unlinkat(&self, _dir: &V9fsPath, _name: &[u8], _flags: i32) -> FsResult<()> {
        Err(Errno::EPERM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(fs: &SynthFs, path: &V9fsPath) -> Vec<String> {
        let dir = fs.opendir(path).unwrap();
        let mut dir = dir.lock().unwrap();
        let mut out = Vec::new();
        while let Some(e) = dir.readdir().unwrap() {
            out.push(String::from_utf8(e.name).unwrap());
        }
        out
    }

    #[test]
    fn fixtures_have_qemus_inodes_listings_and_nlinks() {
        let fs = SynthFs::with_qtest_fixtures(Compat::Master);
        let root = fs.name_to_path(None, b"/").unwrap();
        assert_eq!(
            names(&fs, &root),
            [
                "stat",
                "ReadDirDir",
                "FLUSH",
                "WRITE",
                "LOPEN",
                "WALK0",
                ".",
                ".."
            ]
        );
        let st = fs.lstat(&root).unwrap();
        assert_eq!((st.ino, st.mode, st.nlink), (0, libc::S_IFDIR | 0o555, 6));
        let mut p = root.clone();
        for i in 0..16u64 {
            p = fs
                .name_to_path(Some(&p), format!("WALK{i}").as_bytes())
                .unwrap();
            let st = fs.lstat(&p).unwrap();
            assert_eq!(st.ino, i + 1);
            assert_eq!(st.mode, libc::S_IFDIR | 0o500);
            assert_eq!(st.nlink, if i == 15 { 2 } else { 3 });
        }
        let rd = fs.name_to_path(None, b"ReadDirDir").unwrap();
        let listing = names(&fs, &rd);
        assert_eq!(listing.len(), 102);
        assert_eq!(listing[0], "ReadDirFile99");
        assert_eq!(listing[99], "ReadDirFile0");
        assert_eq!(&listing[100..], [".", ".."]);
        assert_eq!(fs.lstat(&rd).unwrap().ino, 20);
        let f0 = fs.name_to_path(Some(&rd), b"ReadDirFile0").unwrap();
        assert_eq!(fs.lstat(&f0).unwrap().ino, 21);
        let xc = fs.name_to_path(None, b"stat").unwrap();
        let xc = fs.name_to_path(Some(&xc), b"xattr_count").unwrap();
        let st = fs.lstat(&xc).unwrap();
        assert_eq!((st.ino, st.mode), (122, libc::S_IFREG | 0o444));
        assert_eq!(fs.statfs(&root).unwrap().files, 122);
    }

    #[test]
    fn qemu_7_2_has_no_stat_directory() {
        let fs = SynthFs::with_qtest_fixtures(Compat::V7_2);
        assert_eq!(fs.name_to_path(None, b"stat"), Err(Errno::ENOENT));
        assert_eq!(
            fs.statfs(&V9fsPath(0u64.to_le_bytes().to_vec()))
                .unwrap()
                .files,
            120
        );
    }

    #[test]
    fn dot_names_are_invalid_and_readdir_offsets_count_from_one() {
        let fs = SynthFs::with_qtest_fixtures(Compat::Master);
        assert_eq!(fs.name_to_path(None, b"."), Err(Errno::EINVAL));
        assert_eq!(fs.name_to_path(None, b".."), Err(Errno::EINVAL));
        assert_eq!(fs.name_to_path(None, b"nope"), Err(Errno::ENOENT));
        let rd = fs.name_to_path(None, b"ReadDirDir").unwrap();
        let dir = fs.opendir(&rd).unwrap();
        let mut dir = dir.lock().unwrap();
        let first = dir.readdir().unwrap().unwrap();
        assert_eq!((first.off, first.ino, first.ty), (1, 120, 0));
        dir.seekdir(101);
        assert_eq!(dir.readdir().unwrap().unwrap().name, b"..");
        assert_eq!(dir.readdir().unwrap(), None);
    }

    #[test]
    fn fixture_callbacks_behave_as_in_qemu() {
        let fs = SynthFs::with_qtest_fixtures(Compat::Master);
        let ctx = SessionCtx::default();
        let open = |name: &str| {
            let p = fs.name_to_path(None, name.as_bytes()).unwrap();
            fs.open(&p, 0, &ctx).unwrap()
        };
        assert_eq!(open("WRITE").pwritev(b"abcdef", 0), Ok(1));
        assert_eq!(open("FLUSH").pwritev(&[1, 2], 0), Err(Errno::EINTR));
        assert_eq!(open("FLUSH").pwritev(&[0, 2], 0), Ok(1));
        assert_eq!(open("LOPEN").preadv(&mut [0; 4], 0), Err(Errno::EPERM));
        let stat = fs.name_to_path(None, b"stat").unwrap();
        let xc = fs.name_to_path(Some(&stat), b"xattr_count").unwrap();
        ctx.xattr_fid_count.store(3, Ordering::Relaxed);
        let f = fs.open(&xc, 0, &ctx).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(f.preadv(&mut buf, 100), Ok(8));
        assert_eq!(u64::from_ne_bytes(buf[..8].try_into().unwrap()), 3);
        assert_eq!(f.preadv(&mut [0u8; 7], 0), Err(Errno::ENOSPC));
        assert!(!f.has_valid_handle());
    }
}
