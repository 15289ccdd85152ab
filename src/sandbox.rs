//! The optional sandbox of the standalone server (`coro9p --sandbox`),
//! beyond QEMU: Landlock confines the whole process's file system access to
//! the export directory.
//!
//! What it protects against: a bug in coro9p's own path handling (or in a
//! driver) that would let a client reach a file outside the export. The
//! local driver already resolves every path component by component with
//! O_NOFOLLOW from the export root; with the sandbox on, even a resolution
//! that went wrong is refused by the kernel (EACCES), whatever the server
//! asks. What it does not cover: metadata changes (chmod, chown, utimes are
//! outside Landlock's rights), and anything opened before the sandbox was
//! applied (the listening sockets, the export root, a trace file).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

// Landlock's ABI (linux/landlock.h).
const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_RULE_PATH_BENEATH: u32 = 1;

/// File system rights by ABI version: 1 has the first 13, 2 adds REFER,
/// 3 TRUNCATE, 5 IOCTL_DEV.
fn fs_rights(abi: i64) -> u64 {
    let mut rights = (1u64 << 13) - 1;
    if abi >= 2 {
        rights |= 1 << 13;
    }
    if abi >= 3 {
        rights |= 1 << 14;
    }
    if abi >= 5 {
        rights |= 1 << 15;
    }
    rights
}

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The Landlock ABI version the kernel offers, or an error if it has none.
///
/// # Errors
///
/// The kernel has no Landlock (ENOSYS) or it is disabled (EOPNOTSUPP).
pub fn landlock_abi() -> io::Result<i64> {
    // SAFETY: with a null attribute, size 0 and the VERSION flag, the call
    // only returns the ABI version; it reads and writes no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    check(r)
}

/// Confines the calling thread and the threads it starts afterwards (the
/// worker pool starts its threads on demand, so apply this before serving)
/// to `root`: every file system right is granted beneath `root` and
/// nowhere else (with `None`, nowhere). Irreversible; it also sets
/// no_new_privs.
///
/// # Errors
///
/// No Landlock in the kernel, or `root` cannot be opened.
pub fn restrict_to(root: Option<&Path>) -> io::Result<i64> {
    let abi = landlock_abi()?;
    let rights = fs_rights(abi);
    let attr = RulesetAttr {
        handled_access_fs: rights,
    };
    // SAFETY: `attr` is a valid landlock_ruleset_attr of the size passed
    // (its first field is the only one this ABI needs), alive for the call.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    })?;
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if let Some(root) = root {
        let dir = nix::fcntl::open(
            root,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let beneath = PathBeneathAttr {
            allowed_access: rights,
            parent_fd: dir.as_raw_fd(),
        };
        // SAFETY: `beneath` is a valid, packed landlock_path_beneath_attr
        // and both descriptors are open for the duration of the call.
        check(unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset.as_raw_fd(),
                LANDLOCK_RULE_PATH_BENEATH,
                &beneath as *const PathBeneathAttr,
                0u32,
            )
        })?;
    }
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers and touches no memory.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } as libc::c_long)?;
    // SAFETY: the ruleset descriptor is open; the call takes no pointers.
    check(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) })?;
    Ok(abi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_grow_with_the_abi() {
        assert_eq!(fs_rights(1), 0x1fff);
        assert_eq!(fs_rights(3), 0x7fff);
        assert_eq!(fs_rights(7), 0xffff);
    }
}
