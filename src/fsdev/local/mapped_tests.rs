//! Tests of the mapped security models: what lands on the host, byte for
//! byte, what the driver reports back, and that the metadata stays out of
//! the client's reach.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use nix::sys::stat;

use super::mapped::{format_meta, parse_meta};
use super::tests::{assert_err, cred, extended_acl, p, read_all, root, TempDir, CREATE};
use super::*;

/// The process umask, which applies to what the mapped models create (as
/// in QEMU, which does not chmod its files afterwards).
pub(super) fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

fn host_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// A host xattr of `path` (not followed).
fn host_xattr(path: &Path, name: &str) -> FsResult<Vec<u8>> {
    let (path, name) = (host_path(path), CString::new(name).unwrap());
    let len = sys_lgetxattr(&path, &name, &mut [])?;
    let mut buf = vec![0u8; len];
    let len = sys_lgetxattr(&path, &name, &mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

fn set_host_xattr(path: &Path, name: &str, value: &[u8]) -> FsResult<()> {
    sys_lsetxattr(&host_path(path), &CString::new(name).unwrap(), value, 0)
}

/// The host's `user.*` and `system.*` xattr names of `path`, sorted.
fn host_xattr_names(path: &Path) -> Vec<String> {
    let path = host_path(path);
    let len = sys_llistxattr(&path, &mut []).unwrap();
    let mut buf = vec![0u8; len];
    let len = sys_llistxattr(&path, &mut buf).unwrap();
    buf.truncate(len);
    let mut names: Vec<String> = buf
        .split(|&b| b == 0)
        .filter(|n| n.starts_with(b"user.") || n.starts_with(b"system."))
        .map(|n| String::from_utf8(n.to_vec()).unwrap())
        .collect();
    names.sort();
    names
}

/// The names of a driver list, sorted (host order is not specified).
fn sorted_list(list: &[u8]) -> Vec<Vec<u8>> {
    let mut names: Vec<_> = list
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    names.sort();
    names
}

const UID: u32 = 1000;
const GID: u32 = 1001;

fn owned(mode: u32) -> FsCred {
    FsCred {
        uid: Some(UID),
        gid: Some(GID),
        mode,
        rdev: 0,
    }
}

fn mapped_models() -> [LocalModel; 2] {
    [LocalModel::MappedXattr, LocalModel::MappedFile]
}

/// Makes a file, a directory, a symlink, a FIFO and a char device node
/// (1,3) at the root, as the server would (open2's mode is masked, mkdir's
/// carries S_IFDIR as Linux clients send it).
fn create_all(fs: &LocalFs) {
    let ctx = SessionCtx::default();
    fs.open2(&root(), b"f", CREATE | libc::O_EXCL, &owned(0o640), &ctx)
        .unwrap();
    fs.mkdir(&root(), b"d", &owned(libc::S_IFDIR | 0o751))
        .unwrap();
    fs.symlink(b"../some/target", &root(), b"s", &owned(0o777))
        .unwrap();
    fs.mknod(&root(), b"p", &owned(libc::S_IFIFO | 0o644))
        .unwrap();
    let chr = FsCred {
        rdev: stat::makedev(1, 3),
        ..owned(libc::S_IFCHR | 0o620)
    };
    fs.mknod(&root(), b"c", &chr).unwrap();
}

/// What the client sees of the objects [`create_all`] made.
fn check_client_view(fs: &LocalFs) {
    for (name, mode, rdev) in [
        ("./f", libc::S_IFREG | 0o640, 0),
        ("./d", libc::S_IFDIR | 0o751, 0),
        ("./s", libc::S_IFLNK | 0o777, 0),
        ("./p", libc::S_IFIFO | 0o644, 0),
        ("./c", libc::S_IFCHR | 0o620, stat::makedev(1, 3)),
    ] {
        let st = fs.lstat(&p(name)).unwrap();
        assert_eq!(
            (st.uid, st.gid, st.mode, st.rdev),
            (UID, GID, mode, rdev),
            "{name}"
        );
    }
    assert_eq!(fs.readlink(&p("./s")), Ok(b"../some/target".to_vec()));
    assert_eq!(fs.lstat(&p("./s")).unwrap().size, 14);
}

/// What the host holds of the objects [`create_all`] made: regular files
/// and a directory owned by the server, with fmode/dmode.
fn check_host_objects(dir: &Path, fmode: u32, dmode: u32) {
    let umask = umask();
    let me = nix::unistd::geteuid().as_raw();
    for name in ["f", "s", "p", "c"] {
        let md = fs::symlink_metadata(dir.join(name)).unwrap();
        assert_eq!(md.mode(), libc::S_IFREG | (fmode & !umask), "{name}");
        assert_eq!((md.uid(), md.rdev()), (me, 0), "{name}");
    }
    let md = fs::symlink_metadata(dir.join("d")).unwrap();
    assert_eq!(md.mode(), libc::S_IFDIR | (dmode & !umask));
    assert_eq!(md.uid(), me);
    assert_eq!(fs::read(dir.join("s")).unwrap(), b"../some/target");
    for name in ["f", "p", "c"] {
        assert_eq!(fs::read(dir.join(name)).unwrap(), b"", "{name}");
    }
}

#[test]
fn mapped_xattr_stores_credentials_in_user_virtfs_xattrs() {
    let tmp = TempDir::new("mx-store");
    let fs = tmp.fs(LocalModel::MappedXattr);
    assert_eq!(
        fs.export_flags().0,
        ExportFlags::PATHNAME_FSCONTEXT | ExportFlags::SM_MAPPED
    );
    create_all(&fs);
    check_host_objects(&tmp.0, DEFAULT_FMODE, DEFAULT_DMODE);
    let le4 = |v: u32| v.to_le_bytes().to_vec();
    for (name, mode, rdev) in [
        ("f", libc::S_IFREG | 0o640, None),
        ("d", libc::S_IFDIR | 0o751, None),
        ("s", libc::S_IFLNK | 0o777, None),
        ("p", libc::S_IFIFO | 0o644, Some(0)),
        ("c", libc::S_IFCHR | 0o620, Some(stat::makedev(1, 3))),
    ] {
        let host = tmp.0.join(name);
        assert_eq!(host_xattr(&host, "user.virtfs.uid"), Ok(le4(UID)), "{name}");
        assert_eq!(host_xattr(&host, "user.virtfs.gid"), Ok(le4(GID)), "{name}");
        assert_eq!(
            host_xattr(&host, "user.virtfs.mode"),
            Ok(le4(mode)),
            "{name}"
        );
        let mut want = vec!["user.virtfs.gid", "user.virtfs.mode", "user.virtfs.uid"];
        match rdev {
            Some(rdev) => {
                let got = host_xattr(&host, "user.virtfs.rdev");
                assert_eq!(got, Ok(rdev.to_le_bytes().to_vec()), "{name}");
                want.push("user.virtfs.rdev");
                want.sort();
            }
            None => assert_eq!(host_xattr(&host, "user.virtfs.rdev"), Err(Errno::ENODATA)),
        }
        assert_eq!(host_xattr_names(&host), want, "{name}");
    }
    check_client_view(&fs);

    // fstat on open handles reads the xattrs through the descriptor.
    let ctx = SessionCtx::default();
    let h = fs.open(&p("./f"), libc::O_RDONLY, &ctx).unwrap();
    let st = h.fstat().unwrap();
    assert_eq!((st.uid, st.gid, st.mode), (UID, GID, libc::S_IFREG | 0o640));
    let d = fs.opendir(&p("./d")).unwrap();
    let st = d.lock().unwrap().fstat().unwrap();
    assert_eq!((st.uid, st.gid, st.mode), (UID, GID, libc::S_IFDIR | 0o751));
    // The link "file" opens like any file (its type is the client's
    // business).
    let h = fs.open(&p("./s"), libc::O_RDONLY, &ctx).unwrap();
    assert!(h.fstat().unwrap().is_symlink());

    // Ids not given are not stored: the host's show through.
    let anon = cred(0o600);
    fs.open2(&root(), b"anon", CREATE, &anon, &ctx).unwrap();
    assert_eq!(host_xattr_names(&tmp.0.join("anon")), ["user.virtfs.mode"]);
    let st = fs.lstat(&p("./anon")).unwrap();
    assert_eq!(
        (st.uid, st.mode),
        (nix::unistd::geteuid().as_raw(), libc::S_IFREG | 0o600)
    );
    // An empty or oversized value is not used; a short one fills the low
    // bytes.
    set_host_xattr(&tmp.0.join("anon"), "user.virtfs.uid", b"").unwrap();
    set_host_xattr(&tmp.0.join("anon"), "user.virtfs.gid", &[1, 2, 3, 4, 5]).unwrap();
    set_host_xattr(&tmp.0.join("anon"), "user.virtfs.rdev", &[7]).unwrap();
    let host = fs::symlink_metadata(tmp.0.join("anon")).unwrap();
    let st = fs.lstat(&p("./anon")).unwrap();
    assert_eq!((st.uid, st.gid, st.rdev), (host.uid(), host.gid(), 7));
}

#[test]
fn mapped_file_stores_credentials_in_metadata_files() {
    let tmp = TempDir::new("mf-store");
    let fs = tmp.fs(LocalModel::MappedFile);
    assert_eq!(
        fs.export_flags().0,
        ExportFlags::PATHNAME_FSCONTEXT | ExportFlags::SM_MAPPED_FILE
    );
    create_all(&fs);
    check_host_objects(&tmp.0, DEFAULT_FMODE, DEFAULT_DMODE);
    let meta = tmp.0.join(".virtfs_metadata");
    let md = fs::symlink_metadata(&meta).unwrap();
    assert_eq!(md.mode(), libc::S_IFDIR | (0o700 & !umask()));
    let ids = format!("virtfs.uid={UID}\nvirtfs.gid={GID}\n");
    for (name, tail) in [
        ("f", format!("virtfs.mode={}\n", libc::S_IFREG | 0o640)),
        ("d", format!("virtfs.mode={}\n", libc::S_IFDIR | 0o751)),
        ("s", format!("virtfs.mode={}\n", libc::S_IFLNK | 0o777)),
        (
            "p",
            format!("virtfs.mode={}\nvirtfs.rdev=0\n", libc::S_IFIFO | 0o644),
        ),
        (
            "c",
            format!("virtfs.mode={}\nvirtfs.rdev=259\n", libc::S_IFCHR | 0o620),
        ),
    ] {
        let file = meta.join(name);
        assert_eq!(
            String::from_utf8(fs::read(&file).unwrap()).unwrap(),
            format!("{ids}{tail}"),
            "{name}"
        );
        let md = fs::symlink_metadata(&file).unwrap();
        assert_eq!(md.mode(), libc::S_IFREG | 0o600, "{name}");
        // No xattrs: the file is the store.
        assert!(host_xattr_names(&tmp.0.join(name)).is_empty(), "{name}");
    }
    check_client_view(&fs);

    // Below the root, the metadata sits in the entry's own directory.
    let ctx = SessionCtx::default();
    fs.open2(&p("./d"), b"x", CREATE, &owned(0o600), &ctx)
        .unwrap();
    let want = format!("{ids}virtfs.mode={}\n", libc::S_IFREG | 0o600);
    let got = fs::read(tmp.0.join("d/.virtfs_metadata/x")).unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), want);
    assert_eq!(fs.lstat(&p("./d/x")).unwrap().uid, UID);
    // The root's own metadata is a file beside the metadata directory.
    fs.chmod(&root(), &cred(libc::S_IFDIR | 0o711)).unwrap();
    assert_eq!(
        fs::read(tmp.0.join(".virtfs_metadata_root")).unwrap(),
        format!("virtfs.mode={}\n", libc::S_IFDIR | 0o711).as_bytes()
    );
    let md = fs::symlink_metadata(tmp.0.join(".virtfs_metadata_root")).unwrap();
    assert_eq!(md.mode(), libc::S_IFREG | 0o600);
    assert_eq!(fs.lstat(&root()).unwrap().mode, libc::S_IFDIR | 0o711);

    // No metadata file: the host's values.
    fs::write(tmp.0.join("plain"), b"").unwrap();
    let host = fs::symlink_metadata(tmp.0.join("plain")).unwrap();
    let st = fs.lstat(&p("./plain")).unwrap();
    assert_eq!((st.uid, st.mode), (host.uid(), host.mode()));

    // fstat cannot reach the metadata: EOPNOTSUPP (the server stats the
    // path instead).
    let h = fs.open(&p("./f"), libc::O_RDONLY, &ctx).unwrap();
    assert_eq!(h.fstat(), Err(Errno::EOPNOTSUPP));
    let d = fs.opendir(&p("./d")).unwrap();
    assert_eq!(d.lock().unwrap().fstat(), Err(Errno::EOPNOTSUPP));
}

#[test]
fn fmode_and_dmode_set_the_host_permissions() {
    for model in mapped_models() {
        let tmp = TempDir::new("modes");
        let fs = tmp.fs(model).with_create_modes(0o100640, 0o750);
        create_all(&fs);
        check_host_objects(&tmp.0, 0o640, 0o750);
        check_client_view(&fs);
    }
}

#[test]
fn mapped_chmod_and_chown_round_trip() {
    for model in mapped_models() {
        let tmp = TempDir::new("chmod");
        let fs = tmp.fs(model);
        create_all(&fs);
        let f = p("./f");
        let host_before = fs::symlink_metadata(tmp.0.join("f")).unwrap();

        // chmod stores the mode as given; the host file keeps fmode.
        fs.chmod(&f, &cred(libc::S_IFREG | 0o4755)).unwrap();
        let st = fs.lstat(&f).unwrap();
        assert_eq!(
            (st.uid, st.gid, st.mode),
            (UID, GID, libc::S_IFREG | 0o4755)
        );
        // chown with one id leaves the other alone.
        let uid_only = FsCred {
            uid: Some(7),
            ..FsCred::default()
        };
        fs.chown(&f, &uid_only).unwrap();
        let gid_only = FsCred {
            gid: Some(8),
            ..FsCred::default()
        };
        fs.chown(&f, &gid_only).unwrap();
        let st = fs.lstat(&f).unwrap();
        assert_eq!((st.uid, st.gid, st.mode), (7, 8, libc::S_IFREG | 0o4755));
        // Neither id: a real chown(-1, -1), which changes nothing stored.
        fs.chown(&f, &FsCred::default()).unwrap();
        let again = fs.lstat(&f).unwrap();
        assert_eq!(
            (again.uid, again.gid, again.mode),
            (st.uid, st.gid, st.mode)
        );
        // The same on the mapped "symlink", which is a file on the host.
        fs.chown(&p("./s"), &uid_only).unwrap();
        assert_eq!(fs.lstat(&p("./s")).unwrap().uid, 7);
        assert_eq!(fs.readlink(&p("./s")), Ok(b"../some/target".to_vec()));
        // Ids above i32::MAX survive (metadata files print them as ints).
        let big = FsCred {
            uid: Some(u32::MAX - 1),
            gid: Some(0x8000_0000),
            ..FsCred::default()
        };
        fs.chown(&f, &big).unwrap();
        let st = fs.lstat(&f).unwrap();
        assert_eq!((st.uid, st.gid), (u32::MAX - 1, 0x8000_0000));

        let host = fs::symlink_metadata(tmp.0.join("f")).unwrap();
        assert_eq!(
            (host.uid(), host.gid(), host.mode()),
            (host_before.uid(), host_before.gid(), host_before.mode())
        );
        match model {
            LocalModel::MappedXattr => {
                let host = tmp.0.join("f");
                let le4 = |v: u32| v.to_le_bytes().to_vec();
                assert_eq!(host_xattr(&host, "user.virtfs.uid"), Ok(le4(u32::MAX - 1)));
                assert_eq!(host_xattr(&host, "user.virtfs.gid"), Ok(le4(0x8000_0000)));
                let mode = libc::S_IFREG | 0o4755;
                assert_eq!(host_xattr(&host, "user.virtfs.mode"), Ok(le4(mode)));
            }
            _ => {
                let got = fs::read(tmp.0.join(".virtfs_metadata/f")).unwrap();
                let want = format!(
                    "virtfs.uid=-2\nvirtfs.gid=-2147483648\nvirtfs.mode={}\n",
                    libc::S_IFREG | 0o4755
                );
                assert_eq!(String::from_utf8(got).unwrap(), want);
            }
        }
    }
}

#[test]
fn mapped_readdir_has_no_types_and_mapped_file_hides_its_metadata() {
    for model in mapped_models() {
        let tmp = TempDir::new("mreaddir");
        let fs = tmp.fs(model);
        create_all(&fs);
        fs.chmod(&root(), &cred(libc::S_IFDIR | 0o755)).unwrap();
        let ctx = SessionCtx::default();
        fs.open2(&p("./d"), b"x", CREATE, &owned(0o600), &ctx)
            .unwrap();
        for dir in [root(), p("./d")] {
            let handle = fs.opendir(&dir).unwrap();
            let mut d = handle.lock().unwrap();
            let all = read_all(&mut **d);
            let mut names: Vec<_> = all
                .iter()
                .map(|e| String::from_utf8(e.name.clone()).unwrap())
                .collect();
            names.sort();
            let want: &[&str] = if dir == root() {
                &[".", "..", "c", "d", "f", "p", "s"]
            } else {
                &[".", "..", "x"]
            };
            assert_eq!(names, want, "{model:?}");
            assert!(all.iter().all(|e| e.ty == libc::DT_UNKNOWN), "{model:?}");
            // Cookies still lead after the entry returned.
            for (i, e) in all.iter().enumerate() {
                d.seekdir(e.off);
                assert_eq!(d.readdir().unwrap().as_ref(), all.get(i + 1));
            }
        }
        if model == LocalModel::MappedFile {
            assert!(tmp.0.join(".virtfs_metadata_root").exists());
            assert!(tmp.0.join("d/.virtfs_metadata/x").exists());
        }
    }
}

#[test]
fn mapped_file_metadata_is_out_of_reach() {
    let tmp = TempDir::new("mf-reach");
    let fs = tmp.fs(LocalModel::MappedFile);
    let ctx = SessionCtx::default();
    create_all(&fs);
    fs.chmod(&root(), &cred(libc::S_IFDIR | 0o755)).unwrap();
    let snapshot = |tmp: &TempDir| {
        let mut v = Vec::new();
        for name in ["f", "d", "s", "p", "c"] {
            v.push(fs::read(tmp.0.join(".virtfs_metadata").join(name)).unwrap());
        }
        v.push(fs::read(tmp.0.join(".virtfs_metadata_root")).unwrap());
        v
    };
    let before = snapshot(&tmp);
    for meta in [&b".virtfs_metadata"[..], b".virtfs_metadata_root"] {
        // Walks.
        assert_eq!(fs.name_to_path(Some(&root()), meta), Err(Errno::EINVAL));
        assert_eq!(fs.name_to_path(Some(&p("./d")), meta), Err(Errno::EINVAL));
        assert_eq!(fs.name_to_path(None, meta), Err(Errno::EINVAL));
        // Creation.
        assert_eq!(
            fs.open2(&root(), meta, CREATE, &owned(0o600), &ctx).err(),
            Some(Errno::EINVAL)
        );
        assert_eq!(fs.mkdir(&root(), meta, &owned(0o700)), Err(Errno::EINVAL));
        assert_eq!(
            fs.mknod(&root(), meta, &owned(libc::S_IFIFO | 0o600)),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            fs.symlink(b"x", &root(), meta, &owned(0o777)),
            Err(Errno::EINVAL)
        );
        assert_eq!(fs.link(&p("./f"), &root(), meta), Err(Errno::EINVAL));
        assert_eq!(fs.link(&p("./f"), &p("./d"), meta), Err(Errno::EINVAL));
        // Renames, either way.
        assert_eq!(
            fs.renameat(&root(), b"f", &root(), meta),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            fs.renameat(&root(), meta, &p("./d"), b"m"),
            Err(Errno::EINVAL)
        );
        let mut path = b"./".to_vec();
        path.extend_from_slice(meta);
        let mpath = V9fsPath(path);
        assert_eq!(fs.rename(&p("./f"), &mpath), Err(Errno::EINVAL));
        assert_eq!(fs.rename(&mpath, &p("./m")), Err(Errno::EINVAL));
        // Removal.
        assert_eq!(fs.unlinkat(&root(), meta, 0), Err(Errno::EINVAL));
        assert_eq!(
            fs.unlinkat(&root(), meta, libc::AT_REMOVEDIR),
            Err(Errno::EINVAL)
        );
        assert_eq!(fs.remove(&mpath), Err(Errno::EINVAL));
        // Paths the server would never make are refused too, anywhere in
        // the path: every path operation and the xattr calls.
        let mut inner = mpath.0.clone();
        inner.extend_from_slice(b"/f");
        for path in [mpath.clone(), V9fsPath(inner)] {
            assert_eq!(fs.lstat(&path), Err(Errno::EINVAL));
            assert_eq!(fs.readlink(&path), Err(Errno::EINVAL));
            assert_eq!(
                fs.open(&path, libc::O_RDONLY, &ctx).err(),
                Some(Errno::EINVAL)
            );
            assert_eq!(fs.opendir(&path).err(), Some(Errno::EINVAL));
            assert_eq!(fs.chmod(&path, &cred(0o777)), Err(Errno::EINVAL));
            assert_eq!(fs.chown(&path, &owned(0)), Err(Errno::EINVAL));
            assert_eq!(
                fs.utimensat(&path, &[Timespec::default(); 2]),
                Err(Errno::EINVAL)
            );
            assert_eq!(fs.truncate(&path, 0), Err(Errno::EINVAL));
            assert_eq!(fs.statfs(&path).err(), Some(Errno::EINVAL));
            assert_eq!(fs.remove(&path), Err(Errno::EINVAL));
            assert_eq!(fs.lgetxattr_size(&path, b"user.x"), Err(Errno::EINVAL));
            assert_eq!(fs.lgetxattr(&path, b"user.x", 8), Err(Errno::EINVAL));
            assert_eq!(fs.llistxattr_size(&path), Err(Errno::EINVAL));
            assert_eq!(fs.llistxattr(&path, 64), Err(Errno::EINVAL));
            assert_eq!(fs.lsetxattr(&path, b"user.x", b"v", 0), Err(Errno::EINVAL));
            assert_eq!(fs.lremovexattr(&path, b"user.x"), Err(Errno::EINVAL));
            assert_eq!(fs.mkdir(&path, b"n", &owned(0o700)), Err(Errno::EINVAL));
            assert_eq!(
                fs.open2(&path, b"n", CREATE, &owned(0o600), &ctx).err(),
                Some(Errno::EINVAL)
            );
            assert_eq!(fs.unlinkat(&path, b"f", 0), Err(Errno::EINVAL));
            assert_eq!(fs.link(&path, &root(), b"n"), Err(Errno::EINVAL));
            if fs.has_st_gen() {
                assert_eq!(fs.get_st_gen(&path, libc::S_IFREG), Err(Errno::EINVAL));
            }
        }
    }
    assert_eq!(snapshot(&tmp), before);
    assert!(!tmp.0.join("n").exists() && !tmp.0.join("m").exists());

    // Only mapped-file reserves these names.
    for model in [
        LocalModel::Passthrough,
        LocalModel::None,
        LocalModel::MappedXattr,
    ] {
        let tmp = TempDir::new("meta-names");
        let fs = tmp.fs(model);
        fs.mkdir(&root(), b".virtfs_metadata", &cred(0o700))
            .unwrap();
        fs.open2(
            &root(),
            b".virtfs_metadata_root",
            CREATE,
            &cred(0o600),
            &ctx,
        )
        .unwrap();
        let path = fs.name_to_path(Some(&root()), b".virtfs_metadata").unwrap();
        assert!(fs.lstat(&path).unwrap().is_dir());
        let handle = fs.opendir(&root()).unwrap();
        let names: Vec<_> = read_all(&mut **handle.lock().unwrap())
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.contains(&b".virtfs_metadata".to_vec()), "{model:?}");
        assert!(
            names.contains(&b".virtfs_metadata_root".to_vec()),
            "{model:?}"
        );
    }
}

#[test]
fn mapped_file_link_rename_and_unlink_carry_the_metadata() {
    let tmp = TempDir::new("mf-carry");
    let fs = tmp.fs(LocalModel::MappedFile);
    let ctx = SessionCtx::default();
    let meta = |rel: &str| fs::read(tmp.0.join(rel));
    fs.open2(&root(), b"f", CREATE, &owned(0o640), &ctx)
        .unwrap();
    fs.mkdir(&root(), b"d", &owned(0o755)).unwrap();
    let f_meta = meta(".virtfs_metadata/f").unwrap();

    // link: the metadata file is linked too (the new directory gets its
    // metadata directory on the way).
    fs.link(&p("./f"), &p("./d"), b"h").unwrap();
    assert_eq!(meta("d/.virtfs_metadata/h").unwrap(), f_meta);
    let a = fs::metadata(tmp.0.join(".virtfs_metadata/f")).unwrap();
    let b = fs::metadata(tmp.0.join("d/.virtfs_metadata/h")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(fs.lstat(&p("./d/h")).unwrap().mode, libc::S_IFREG | 0o640);

    // rename and renameat move it.
    fs.rename(&p("./f"), &p("./d/g")).unwrap();
    assert!(meta(".virtfs_metadata/f").is_err());
    assert_eq!(meta("d/.virtfs_metadata/g").unwrap(), f_meta);
    fs.renameat(&p("./d"), b"g", &root(), b"f2").unwrap();
    assert_eq!(meta(".virtfs_metadata/f2").unwrap(), f_meta);
    assert_eq!(fs.lstat(&p("./f2")).unwrap().uid, UID);
    // A directory's own metadata directory moves with it.
    fs.open2(&p("./d"), b"x", CREATE, &owned(0o600), &ctx)
        .unwrap();
    fs.rename(&p("./d"), &p("./e")).unwrap();
    assert!(meta(".virtfs_metadata/d").is_err());
    assert!(meta(".virtfs_metadata/e").is_ok());
    assert_eq!(fs.lstat(&p("./e/x")).unwrap().uid, UID);
    assert_eq!(fs.lstat(&p("./e")).unwrap().mode, libc::S_IFDIR | 0o755);

    // unlink removes it.
    fs.unlinkat(&p("./e"), b"h", 0).unwrap();
    assert!(meta("e/.virtfs_metadata/h").is_err());
    fs.remove(&p("./f2")).unwrap();
    assert!(meta(".virtfs_metadata/f2").is_err());
    // A directory holding only its (empty) metadata directory is empty to
    // the client and can go; one with more cannot.
    assert_eq!(
        fs.unlinkat(&root(), b"e", libc::AT_REMOVEDIR),
        Err(Errno::ENOTEMPTY)
    );
    fs.unlinkat(&p("./e"), b"x", 0).unwrap();
    fs.unlinkat(&root(), b"e", libc::AT_REMOVEDIR).unwrap();
    assert!(!tmp.0.join("e").exists());
    assert!(meta(".virtfs_metadata/e").is_err());

    // Objects without metadata (made on the host) move and go as well.
    fs::write(tmp.0.join("hostfile"), b"").unwrap();
    fs::create_dir(tmp.0.join("hostdir")).unwrap();
    fs.rename(&p("./hostfile"), &p("./moved")).unwrap();
    fs.link(&p("./moved"), &root(), b"linked").unwrap();
    fs.remove(&p("./linked")).unwrap();
    fs.remove(&p("./moved")).unwrap();
    fs.remove(&p("./hostdir")).unwrap();
    let mut left: Vec<_> = fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, [".virtfs_metadata"]);
    assert_eq!(
        fs::read_dir(tmp.0.join(".virtfs_metadata"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn mapped_file_failed_store_undoes_the_creation() {
    let tmp = TempDir::new("mf-undo");
    let fs = tmp.fs(LocalModel::MappedFile);
    let ctx = SessionCtx::default();
    // A metadata "directory" that is a file: nothing can be stored.
    fs::write(tmp.0.join(".virtfs_metadata"), b"").unwrap();
    let enotdir = Some(Errno::ENOTDIR);
    assert_eq!(
        fs.open2(&root(), b"f", CREATE, &owned(0o600), &ctx).err(),
        enotdir
    );
    assert_eq!(fs.mkdir(&root(), b"d", &owned(0o700)).err(), enotdir);
    assert_eq!(
        fs.mknod(&root(), b"p", &owned(libc::S_IFIFO)).err(),
        enotdir
    );
    assert_eq!(
        fs.symlink(b"t", &root(), b"s", &owned(0o777)).err(),
        enotdir
    );
    for name in ["f", "d", "p", "s"] {
        assert!(!tmp.0.join(name).exists(), "{name}");
    }
    // A link whose metadata cannot follow is undone as well.
    fs::write(tmp.0.join("plain"), b"").unwrap();
    assert_eq!(fs.link(&p("./plain"), &root(), b"l").err(), enotdir);
    assert!(!tmp.0.join("l").exists());
    assert_eq!(fs.rename(&p("./plain"), &p("./r")).err(), enotdir);
    assert!(tmp.0.join("plain").exists() && !tmp.0.join("r").exists());
}

#[test]
fn mapped_xattr_keeps_its_xattrs_from_the_client() {
    let tmp = TempDir::new("mx-xattr");
    let fs = tmp.fs(LocalModel::MappedXattr);
    create_all(&fs);
    let f = p("./f");
    fs.lsetxattr(&f, b"user.mine", b"12345", 0).unwrap();
    assert_eq!(fs.lgetxattr(&f, b"user.mine", 5), Ok(b"12345".to_vec()));
    // A name merely starting like the prefix is the client's.
    fs.lsetxattr(&f, b"user.virtfsx", b"1", 0).unwrap();
    for name in [
        &b"user.virtfs.uid"[..],
        b"user.virtfs.gid",
        b"user.virtfs.mode",
        b"user.virtfs.rdev",
        b"user.virtfs.other",
        b"user.virtfs.system.posix_acl_access",
    ] {
        assert_eq!(fs.lgetxattr_size(&f, name), Err(Errno::ENODATA));
        assert_eq!(fs.lgetxattr(&f, name, 64), Err(Errno::ENODATA));
        assert_eq!(fs.lsetxattr(&f, name, b"\0\0\0\0", 0), Err(Errno::EACCES));
        assert_eq!(fs.lremovexattr(&f, name), Err(Errno::EACCES));
    }
    for name in [&b"trusted.t"[..], b"security.s", b"system.other", b"userx"] {
        assert_eq!(fs.lgetxattr_size(&f, name), Err(Errno::EOPNOTSUPP));
        assert_eq!(fs.lsetxattr(&f, name, b"v", 0), Err(Errno::EOPNOTSUPP));
        assert_eq!(fs.lremovexattr(&f, name), Err(Errno::EOPNOTSUPP));
    }
    let want = b"user.mine\0user.virtfsx\0";
    assert_eq!(fs.llistxattr_size(&f), Ok(want.len()));
    let got = fs.llistxattr(&f, want.len()).unwrap();
    assert_eq!(sorted_list(&got), sorted_list(want));
    assert_eq!(fs.llistxattr(&f, want.len() - 1), Err(Errno::ERANGE));
    // The credentials are intact.
    check_client_view(&fs);
    // Under mapped-file the user.virtfs names are just user xattrs.
    let mf = tmp.fs(LocalModel::MappedFile);
    assert_eq!(
        mf.lgetxattr(&f, b"user.virtfs.uid", 4),
        Ok(UID.to_le_bytes().to_vec())
    );
}

#[test]
fn mapped_xattr_redirects_posix_acls() {
    let tmp = TempDir::new("mx-acl");
    let fs = tmp.fs(LocalModel::MappedXattr);
    create_all(&fs);
    let acl = extended_acl();
    for (node, name, host) in [
        (
            "f",
            "system.posix_acl_access",
            "user.virtfs.system.posix_acl_access",
        ),
        (
            "d",
            "system.posix_acl_default",
            "user.virtfs.system.posix_acl_default",
        ),
    ] {
        let (path, cname) = (p(&format!("./{node}")), name.as_bytes());
        let hpath = tmp.0.join(node);
        assert_eq!(fs.lgetxattr_size(&path, cname), Err(Errno::ENODATA));
        // Removing a missing one succeeds.
        fs.lremovexattr(&path, cname).unwrap();
        fs.lsetxattr(&path, cname, &acl, 0).unwrap();
        // Stored under the mapped name, not as a real ACL, whatever the
        // value.
        assert_eq!(host_xattr(&hpath, host), Ok(acl.clone()));
        assert_eq!(host_xattr(&hpath, name), Err(Errno::ENODATA));
        assert_eq!(fs.lgetxattr_size(&path, cname), Ok(acl.len()));
        assert_eq!(fs.lgetxattr(&path, cname, acl.len()), Ok(acl.clone()));
        fs.lsetxattr(&path, cname, b"not an acl", 0).unwrap();
        assert_eq!(fs.lgetxattr(&path, cname, 64), Ok(b"not an acl".to_vec()));
        // Listed under the client's name.
        let mut want = name.as_bytes().to_vec();
        want.push(0);
        assert_eq!(fs.llistxattr_size(&path), Ok(want.len()));
        assert_eq!(fs.llistxattr(&path, want.len()), Ok(want));
        fs.lremovexattr(&path, cname).unwrap();
        assert_eq!(host_xattr(&hpath, host), Err(Errno::ENODATA));
        fs.lremovexattr(&path, cname).unwrap();
        assert_eq!(fs.llistxattr_size(&path), Ok(0));
    }
    // The handlers match by prefix: a longer name goes to the same place.
    fs.lsetxattr(&p("./f"), b"system.posix_acl_accessX", b"v", 0)
        .unwrap();
    assert_eq!(
        host_xattr(&tmp.0.join("f"), "user.virtfs.system.posix_acl_access"),
        Ok(b"v".to_vec())
    );
    fs.lremovexattr(&p("./f"), b"system.posix_acl_access")
        .unwrap();

    // A real ACL on the host (set there, not through the driver): QEMU's
    // list handler counts it in the size query only, and writes it where
    // the next entry goes.
    let f = tmp.0.join("f");
    match set_host_xattr(&f, "system.posix_acl_access", &acl) {
        Err(Errno::EOPNOTSUPP) => eprintln!("no POSIX ACLs here: real-ACL list case skipped"),
        r => {
            r.unwrap();
            fs.lsetxattr(&p("./f"), b"user.a", b"1", 0).unwrap();
            let acl_entry = b"system.posix_acl_access\0";
            assert_eq!(fs.llistxattr_size(&p("./f")), Ok(7 + acl_entry.len()));
            let got = fs.llistxattr(&p("./f"), 7 + acl_entry.len()).unwrap();
            // The bytes of QEMU's buffer: after user.a, the ACL name past
            // the end of the list; before it, what user.a left of it.
            let acl_after = b"user.a\0system.posix_acl_access\0";
            let acl_before = b"user.a\0posix_acl_access\0";
            assert!(got == acl_after || got == acl_before, "{got:?}");
            // Either order, the ACL entry does not fit in what user.a
            // leaves of a 7-byte buffer.
            assert_eq!(fs.llistxattr(&p("./f"), 7), Err(Errno::ERANGE));
            // Reading it goes to the mapped name, which is absent.
            let access = b"system.posix_acl_access";
            assert_eq!(fs.lgetxattr_size(&p("./f"), access), Err(Errno::ENODATA));
        }
    }
}

#[test]
fn mapped_xattr_lists_host_acls_as_qemu_does() {
    // Host lists in both orders (a host file system may list a real ACL
    // before or after the user names).
    let tmp = TempDir::new("mx-list");
    let fs = tmp.fs(LocalModel::MappedXattr);
    let acl_first = b"system.posix_acl_access\0user.virtfs.mode\0user.a\0";
    let acl_last = b"user.a\0user.virtfs.uid\0system.posix_acl_default\0";
    // Counted by the size query...
    assert_eq!(fs.xattr_list_len(acl_first), 24 + 7);
    assert_eq!(fs.xattr_list_len(acl_last), 7 + 25);
    // ... written where the next entry goes, and not counted: user.a
    // overwrites it, or it lies past the end of the list.
    assert_eq!(
        fs.fill_xattr_list(acl_first, 31),
        Ok(b"user.a\0posix_acl_access\0".to_vec())
    );
    assert_eq!(
        fs.fill_xattr_list(acl_last, 32),
        Ok(b"user.a\0system.posix_acl_default\0".to_vec())
    );
    // It must fit where it is written.
    assert_eq!(fs.fill_xattr_list(acl_first, 23), Err(Errno::ERANGE));
    assert_eq!(fs.fill_xattr_list(acl_last, 31), Err(Errno::ERANGE));
    // Mapped ACLs are listed under the client's names; other
    // user.virtfs names and namespaces are not listed.
    let mapped = b"user.virtfs.system.posix_acl_access\0user.virtfs.gid\0trusted.x\0\
                   security.y\0user.virtfs.system.posix_acl_defaultX\0";
    let want = b"system.posix_acl_access\0system.posix_acl_defaultX\0";
    assert_eq!(fs.xattr_list_len(mapped), want.len());
    assert_eq!(fs.fill_xattr_list(mapped, want.len()), Ok(want.to_vec()));
    // Under the other models the same host lists read plainly.
    let pt = tmp.fs(LocalModel::Passthrough);
    let mf = tmp.fs(LocalModel::MappedFile);
    let none = tmp.fs(LocalModel::None);
    for fs in [&pt, &mf] {
        assert_eq!(fs.xattr_list_len(acl_first), acl_first.len());
        assert_eq!(fs.fill_xattr_list(acl_first, 64), Ok(acl_first.to_vec()));
    }
    let want = b"user.virtfs.mode\0user.a\0";
    assert_eq!(none.xattr_list_len(acl_first), want.len());
    assert_eq!(
        none.fill_xattr_list(acl_first, want.len()),
        Ok(want.to_vec())
    );
}

#[test]
fn mapped_readlink_falls_back_on_a_host_symlink_and_never_escapes() {
    let outside = TempDir::new("mx-outside");
    fs::write(outside.0.join("secret"), b"secret").unwrap();
    for model in mapped_models() {
        let tmp = TempDir::new("mlink");
        let fs = tmp.fs(model);
        let ctx = SessionCtx::default();
        symlink(&outside.0, tmp.0.join("out")).unwrap();
        symlink("/etc/passwd", tmp.0.join("pw")).unwrap();
        // A host symlink is read as one (ELOOP from the open) ...
        let want = outside.0.as_os_str().as_bytes().to_vec();
        assert_eq!(fs.readlink(&p("./out")), Ok(want));
        assert_eq!(fs.readlink(&p("./pw")), Ok(b"/etc/passwd".to_vec()));
        assert!(fs.lstat(&p("./pw")).unwrap().is_symlink());
        // ... and never followed.
        let loopy = [Errno::ELOOP, Errno::ENOTDIR];
        assert_err(fs.open(&p("./pw"), libc::O_RDONLY, &ctx), &loopy);
        for path in ["./out/secret", "./out/x"] {
            let path = p(path);
            assert_err(fs.lstat(&path), &loopy);
            assert_err(fs.readlink(&path), &loopy);
            assert_err(fs.chmod(&path, &cred(0o777)), &loopy);
            assert_err(fs.chown(&path, &owned(0)), &loopy);
            assert_err(fs.lsetxattr(&path, b"user.x", b"v", 0), &loopy);
            assert_err(fs.remove(&path), &loopy);
        }
        let out = p("./out");
        assert_err(fs.open2(&out, b"n", CREATE, &owned(0o600), &ctx), &loopy);
        assert_err(fs.mkdir(&out, b"n", &owned(0o700)), &loopy);
        assert_err(fs.mknod(&out, b"n", &owned(libc::S_IFIFO)), &loopy);
        assert_err(fs.symlink(b"t", &out, b"n", &owned(0o777)), &loopy);
        assert_err(fs.link(&p("./out/secret"), &root(), b"n"), &loopy);
        assert_err(fs.renameat(&out, b"secret", &root(), b"n"), &loopy);
        assert_err(fs.unlinkat(&out, b"secret", 0), &loopy);
        // chmod/chown of the host symlink itself store nothing through it.
        let _ = fs.chmod(&p("./pw"), &cred(libc::S_IFLNK | 0o777));
        let _ = fs.chown(&p("./pw"), &owned(0));
    }
    // Nothing reached the outside.
    let names: Vec<_> = fs::read_dir(&outside.0).unwrap().collect();
    assert_eq!(names.len(), 1);
    assert_eq!(fs::read(outside.0.join("secret")).unwrap(), b"secret");
    assert!(host_xattr_names(&outside.0.join("secret")).is_empty());
    assert!(host_xattr_names(&outside.0).is_empty());
    assert!(!outside.0.join(".virtfs_metadata").exists());
}

#[test]
fn mapped_symlink_targets_are_stored_as_c_strings() {
    for model in mapped_models() {
        let tmp = TempDir::new("mtarget");
        let fs = tmp.fs(model);
        fs.symlink(b"a\0b", &root(), b"s", &owned(0o777)).unwrap();
        assert_eq!(fs::read(tmp.0.join("s")).unwrap(), b"a");
        fs.symlink(b"", &root(), b"e", &owned(0o777)).unwrap();
        assert_eq!(fs.readlink(&p("./e")), Ok(Vec::new()));
        let long = vec![b'x'; 4095];
        fs.symlink(&long, &root(), b"l", &owned(0o777)).unwrap();
        assert_eq!(fs.readlink(&p("./l")), Ok(long));
        // O_EXCL: an existing name is not overwritten.
        assert_eq!(
            fs.symlink(b"t", &root(), b"s", &owned(0o777)),
            Err(Errno::EEXIST)
        );
        assert_eq!(fs::read(tmp.0.join("s")).unwrap(), b"a");
        // A mapped "directory" is not readable as a link.
        fs.mkdir(&root(), b"d", &owned(0o700)).unwrap();
        assert_eq!(fs.readlink(&p("./d")), Err(Errno::EISDIR));
    }
}

#[test]
fn metadata_files_parse_as_qemu_reads_them() {
    assert_eq!(crate::fsdev::c_atoi(b"42"), 42);
    assert_eq!(crate::fsdev::c_atoi(b" \t\n+7x"), 7);
    assert_eq!(crate::fsdev::c_atoi(b"-2"), -2);
    assert_eq!(crate::fsdev::c_atoi(b""), 0);
    assert_eq!(crate::fsdev::c_atoi(b"=5"), 0);
    assert_eq!(crate::fsdev::c_atoi(b"4294967295"), -1);
    assert_eq!(crate::fsdev::c_atoi(b"99999999999999999999"), -1); // LONG_MAX cut to int
    assert_eq!(crate::fsdev::c_atoi(b"-99999999999999999999"), 0); // LONG_MIN cut to int

    let all = parse_meta(b"virtfs.uid=1\nvirtfs.gid=2\nvirtfs.mode=16877\nvirtfs.rdev=-1\n");
    assert_eq!(all, [Some(1), Some(2), Some(16877), Some(-1)]);
    // Prefix matches; the value is taken after the key and one byte.
    let odd = parse_meta(b"virtfs.uidX5\nvirtfs.gid\nvirtfs.modes=9\ngarbage\nvirtfs.uid=3");
    assert_eq!(odd, [Some(3), Some(0), Some(0), None]);
    // Lines are read in pieces of 99 bytes: a long one's tail is a line of
    // its own.
    let mut long = vec![b' '; 99];
    long.extend_from_slice(b"virtfs.gid=9\n");
    assert_eq!(parse_meta(&long), [None, Some(9), None, None]);

    assert_eq!(format_meta([-1, -1, -1, -1]), b"");
    assert_eq!(
        format_meta([0, -2, 33188, 259]),
        b"virtfs.uid=0\nvirtfs.gid=-2\nvirtfs.mode=33188\nvirtfs.rdev=259\n"
    );

    // A metadata file as QEMU left it, read back through lstat; updates
    // keep what they do not change (in QEMU's order).
    let tmp = TempDir::new("mf-parse");
    fs::write(tmp.0.join("f"), b"").unwrap();
    fs::create_dir(tmp.0.join(".virtfs_metadata")).unwrap();
    let meta = tmp.0.join(".virtfs_metadata/f");
    fs::write(
        &meta,
        b"virtfs.mode=8592\nvirtfs.rdev=-2147483648\nvirtfs.uid=-2\n",
    )
    .unwrap();
    let fs = tmp.fs(LocalModel::MappedFile);
    let st = fs.lstat(&p("./f")).unwrap();
    assert_eq!(st.mode, libc::S_IFCHR | 0o620);
    assert_eq!(st.uid, u32::MAX - 1);
    assert_eq!(st.rdev, 0xffff_ffff_8000_0000);
    fs.chown(
        &p("./f"),
        &FsCred {
            gid: Some(5),
            ..FsCred::default()
        },
    )
    .unwrap();
    assert_eq!(
        fs::read(&meta).unwrap(),
        b"virtfs.uid=-2\nvirtfs.gid=5\nvirtfs.mode=8592\nvirtfs.rdev=-2147483648\n"
    );
    // rdev is stored as an int: the high bits are lost, as in QEMU.
    let rdev = stat::makedev(0x1000, 1);
    assert!(rdev > u64::from(u32::MAX));
    let chr = FsCred {
        rdev,
        ..owned(libc::S_IFCHR | 0o600)
    };
    fs.mknod(&root(), b"c", &chr).unwrap();
    assert_eq!(fs.lstat(&p("./c")).unwrap().rdev, 1);
}
