//! The xattr namespace tables of each security model (QEMU's 9p-xattr.c,
//! 9p-xattr-user.c and 9p-posix-acl.c, as facts: this is not their code).
//!
//! A client name is matched by prefix against the model's handlers, in
//! order; the first match decides where it goes on the host:
//!
//! | model | `user.` | `system.posix_acl_*` | other |
//! | --- | --- | --- | --- |
//! | passthrough, mapped-file | host, same name | host, same name | EOPNOTSUPP |
//! | none | host, same name | ENOTSUP | EOPNOTSUPP |
//! | mapped-xattr | host, but `user.virtfs.*` hidden | `user.virtfs.system.posix_acl_access` / `_default` | EOPNOTSUPP |
//!
//! Lists go the other way: each host name is shown, renamed or left out by
//! the handler its name matches.

use std::borrow::Cow;
use std::ffi::{CStr, CString};
use std::os::fd::AsFd;

use super::{
    cstring, proc_node_path, sys_lgetxattr, sys_llistxattr, sys_lremovexattr, sys_lsetxattr, Errno,
    FsResult, LocalFs, LocalModel, V9fsPath,
};

/// The prefix of the names mapped-xattr keeps for itself.
pub(super) const VIRTFS_PREFIX: &[u8] = b"user.virtfs.";
/// Host names under [`VIRTFS_PREFIX`] that mapped-xattr lists, without the
/// prefix: the POSIX ACLs it stores for the client.
const MAPPED_ACL_PREFIX: &[u8] = b"user.virtfs.system.posix_acl_";
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";
const MAPPED_ACL_ACCESS: &CStr = c"user.virtfs.system.posix_acl_access";
const MAPPED_ACL_DEFAULT: &CStr = c"user.virtfs.system.posix_acl_default";

/// The three name-based xattr operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum XattrOp {
    Get,
    Set,
    Remove,
}

/// Where a client's xattr name is served on the host.
struct HostXattr {
    name: CString,
    /// Removing it when missing succeeds (the mapped ACL handlers).
    missing_remove_ok: bool,
}

/// How a host name shows in a list.
enum Listed<'a> {
    /// Not at all.
    Hidden,
    /// As this name, counted in the list's length.
    Shown(Cow<'a, [u8]>),
    /// QEMU's mapped ACL list handlers: counted in the size query and
    /// written into the buffer, but not counted when the buffer is filled,
    /// so the next entry overwrites it.
    Uncounted(&'static [u8]),
}

impl LocalFs {
    /// Runs `f` on the `/proc/self/fd/<dirfd>/<basename>` path of `path`,
    /// with the directory kept open meanwhile.
    pub(super) fn with_xattr_node<T>(
        &self,
        path: &V9fsPath,
        f: impl FnOnce(&CStr) -> FsResult<T>,
    ) -> FsResult<T> {
        let (dirfd, name) = self.parent(path)?;
        let node = proc_node_path(dirfd.as_fd(), name)?;
        f(&node)
    }

    /// The host name a get/set/remove of the client's `name` uses, or the
    /// error the model's handler gives.
    fn xattr_target(&self, name: &[u8], op: XattrOp) -> FsResult<HostXattr> {
        let same = |name: &[u8]| -> FsResult<HostXattr> {
            Ok(HostXattr {
                name: cstring(name)?,
                missing_remove_ok: false,
            })
        };
        match self.model {
            LocalModel::Passthrough | LocalModel::None | LocalModel::MappedFile => {
                if name.starts_with(b"user.") {
                    same(name)
                } else if name.starts_with(b"system.posix_acl_") {
                    if self.model == LocalModel::None {
                        Err(Errno::ENOTSUP)
                    } else {
                        same(name)
                    }
                } else {
                    Err(Errno::EOPNOTSUPP)
                }
            }
            LocalModel::MappedXattr => {
                if name.starts_with(b"user.") {
                    if name.starts_with(VIRTFS_PREFIX) {
                        // The credentials store is not the client's.
                        return Err(match op {
                            XattrOp::Get => Errno::ENODATA,
                            XattrOp::Set | XattrOp::Remove => Errno::EACCES,
                        });
                    }
                    same(name)
                } else if name.starts_with(ACL_ACCESS) || name.starts_with(ACL_DEFAULT) {
                    let host = if name.starts_with(ACL_ACCESS) {
                        MAPPED_ACL_ACCESS
                    } else {
                        MAPPED_ACL_DEFAULT
                    };
                    Ok(HostXattr {
                        name: host.to_owned(),
                        missing_remove_ok: true,
                    })
                } else {
                    Err(Errno::EOPNOTSUPP)
                }
            }
        }
    }

    /// How the host name `name` shows in a list under this model.
    fn xattr_listed<'a>(&self, name: &'a [u8]) -> Listed<'a> {
        match self.model {
            LocalModel::Passthrough | LocalModel::MappedFile => {
                if name.starts_with(b"user.") || name.starts_with(b"system.posix_acl_") {
                    Listed::Shown(Cow::Borrowed(name))
                } else {
                    Listed::Hidden
                }
            }
            LocalModel::None => {
                if name.starts_with(b"user.") {
                    Listed::Shown(Cow::Borrowed(name))
                } else {
                    Listed::Hidden
                }
            }
            LocalModel::MappedXattr => {
                if name.starts_with(b"user.") {
                    if name.starts_with(MAPPED_ACL_PREFIX) {
                        Listed::Shown(Cow::Borrowed(&name[VIRTFS_PREFIX.len()..]))
                    } else if name.starts_with(VIRTFS_PREFIX) {
                        Listed::Hidden
                    } else {
                        Listed::Shown(Cow::Borrowed(name))
                    }
                } else if name.starts_with(ACL_ACCESS) {
                    Listed::Uncounted(ACL_ACCESS)
                } else if name.starts_with(ACL_DEFAULT) {
                    Listed::Uncounted(ACL_DEFAULT)
                } else {
                    Listed::Hidden
                }
            }
        }
    }

    /// The host's raw xattr name list of `path`.
    fn host_xattr_list(&self, path: &V9fsPath) -> FsResult<Vec<u8>> {
        self.with_xattr_node(path, |node| {
            let len = sys_llistxattr(node, &mut [])?;
            if len == 0 {
                return Ok(Vec::new());
            }
            let mut raw = vec![0u8; len];
            let len = sys_llistxattr(node, &mut raw)?;
            raw.truncate(len);
            Ok(raw)
        })
    }

    /// The list's size as a size query reports it.
    pub(super) fn xattr_list_size(&self, path: &V9fsPath) -> FsResult<usize> {
        Ok(self.xattr_list_len(&self.host_xattr_list(path)?))
    }

    /// [`LocalFs::xattr_list_size`] of the host list `raw`.
    pub(super) fn xattr_list_len(&self, raw: &[u8]) -> usize {
        let mut size = 0;
        for name in raw.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            size += match self.xattr_listed(name) {
                Listed::Hidden => 0,
                Listed::Shown(n) => n.len() + 1,
                Listed::Uncounted(n) => n.len() + 1,
            };
        }
        size
    }

    /// The list written into a buffer of `size` bytes: the bytes a QEMU
    /// buffer would hold, up to the last one written (ERANGE when an entry
    /// does not fit in what is left).
    pub(super) fn xattr_list(&self, path: &V9fsPath, size: usize) -> FsResult<Vec<u8>> {
        self.fill_xattr_list(&self.host_xattr_list(path)?, size)
    }

    /// [`LocalFs::xattr_list`] of the host list `raw`.
    pub(super) fn fill_xattr_list(&self, raw: &[u8], size: usize) -> FsResult<Vec<u8>> {
        let mut buf: Vec<u8> = Vec::new();
        // Where the next entry goes; `buf` may hold an uncounted entry
        // past it.
        let mut pos = 0;
        for name in raw.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let listed = self.xattr_listed(name);
            let (shown, counted): (&[u8], bool) = match &listed {
                Listed::Hidden => continue,
                Listed::Shown(n) => (n, true),
                Listed::Uncounted(n) => (n, false),
            };
            let need = shown.len() + 1;
            if size - pos < need {
                return Err(Errno::ERANGE);
            }
            if buf.len() < pos + need {
                buf.resize(pos + need, 0);
            }
            buf[pos..pos + shown.len()].copy_from_slice(shown);
            buf[pos + shown.len()] = 0;
            if counted {
                pos += need;
            }
        }
        Ok(buf)
    }

    /// `lgetxattr` of the client's `name` into `buf` (empty: a size
    /// query); the value's length.
    pub(super) fn xattr_get(
        &self,
        path: &V9fsPath,
        name: &[u8],
        buf: &mut [u8],
    ) -> FsResult<usize> {
        let target = self.xattr_target(name, XattrOp::Get)?;
        self.with_xattr_node(path, |node| sys_lgetxattr(node, &target.name, buf))
    }

    /// `lsetxattr` of the client's `name`.
    pub(super) fn xattr_set(
        &self,
        path: &V9fsPath,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> FsResult<()> {
        let target = self.xattr_target(name, XattrOp::Set)?;
        self.with_xattr_node(path, |node| sys_lsetxattr(node, &target.name, value, flags))
    }

    /// `lremovexattr` of the client's `name`.
    pub(super) fn xattr_remove(&self, path: &V9fsPath, name: &[u8]) -> FsResult<()> {
        let target = self.xattr_target(name, XattrOp::Remove)?;
        self.with_xattr_node(path, |node| match sys_lremovexattr(node, &target.name) {
            Err(Errno::ENODATA) if target.missing_remove_ok => Ok(()),
            r => r,
        })
    }
}
