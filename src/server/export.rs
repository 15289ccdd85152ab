//! An export: one fsdev (driver + options), shared by every session that
//! serves it. Options are QEMU's `-fsdev` strings
//! (`local,path=DIR,security_model=passthrough`, `synth`).

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use crate::fsdev::local::{LocalFs, LocalModel, DEFAULT_DMODE, DEFAULT_FMODE};
use crate::fsdev::synth::SynthFs;
use crate::fsdev::{Errno, ExportFlags, FileOperations};
use crate::protocol::MIN_MSIZE;
use crate::{Compat, Hops};

/// `security_model=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityModel {
    /// Files are created with the client's credentials.
    Passthrough,
    /// Credentials in `user.virtfs.*` xattrs (`mapped` is an alias).
    MappedXattr,
    /// Credentials in `.virtfs_metadata` files.
    MappedFile,
    /// Like passthrough, ownership changes failing silently.
    None,
}

/// `multidevs=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multidevs {
    /// Unique qid paths across devices (QEMU master's default).
    Remap,
    /// Files on other devices are refused (ENODEV).
    Forbid,
    /// Inode numbers as they are, with a warning (QEMU 7.2's default).
    Warn,
}

/// `locks=`: what Tlock and Tgetlock do (an option of coro9p's own;
/// QEMU has no such option and behaves as [`Locks::Qemu`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Locks {
    /// QEMU's answer (the default): Tlock checks the fid's handle and
    /// always succeeds, Tgetlock always answers "unlocked"; no lock is
    /// taken, the client's own VFS locks for its processes.
    #[default]
    Qemu,
    /// Real POSIX record locks, shared by every client and host process:
    /// Tlock takes an open-file-description lock on the file for the lock
    /// owner (session, `client_id`, `proc_id`) and answers "blocked"
    /// instead of waiting; Tgetlock reports a conflicting lock.
    Posix,
}

/// The driver and its own options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsDriver {
    /// `local`: a host directory.
    Local {
        /// `path=`.
        path: PathBuf,
        /// `security_model=`.
        security_model: SecurityModel,
        /// `writeout=immediate`.
        writeout_immediate: bool,
        /// `multidevs=`, if given.
        multidevs: Option<Multidevs>,
        /// `fmode=`, for the mapped models.
        fmode: Option<u32>,
        /// `dmode=`, for the mapped models.
        dmode: Option<u32>,
        /// `locks=` (coro9p's own).
        locks: Locks,
    },
    /// `synth`: QEMU's test file system with its qtest fixtures.
    Synth,
}

/// A parsed `-fsdev` option string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// `id=`.
    pub id: Option<String>,
    /// The driver.
    pub driver: FsDriver,
    /// `readonly=on`.
    pub readonly: bool,
    /// `max_xattr=` (QEMU master; default 1024, 0 = unlimited).
    pub max_xattr: u64,
    /// `dotu_handles=on` (beyond QEMU, default off): 9P2000.u's Tstat and
    /// Twstat (times, length) on an open fid go through its file handle, as
    /// Tgetattr and Tsetattr do in 9P2000.L, so that fstat and ftruncate on
    /// an open, unlinked file work. QEMU goes by path: ENOENT.
    pub dotu_handles: bool,
    /// `max_fids=` (beyond QEMU): fids one session may hold; one more is
    /// ENFILE. Default 0, no limit, as in QEMU.
    pub max_fids: u32,
    /// `max_xattr_size=`: the largest xattr value Txattrcreate takes and
    /// Txattrwalk hands out, in bytes; a larger one is E2BIG. Default and
    /// ceiling 65536, QEMU's P9_XATTR_SIZE_MAX (Linux's XATTR_SIZE_MAX).
    pub max_xattr_size: u32,
    /// `max_pdus=`: requests one session runs at once (1 to 128); the rest
    /// wait in the transport. Default 128, QEMU's MAX_REQ.
    pub max_pdus: usize,
    /// `max_msize=`: the largest msize a session negotiates and the largest
    /// frame the socket transports carry. `None`: the socket transports use
    /// [`SOCKET_MAX_MSIZE_DEFAULT`], the C ABI its transport's own
    /// `msize_limit`.
    pub max_msize: Option<u32>,
    /// `--hops` (beyond QEMU, default [`Hops::Qemu`]): not an `-fsdev`
    /// key; the command line sets it.
    pub hops: Hops,
}

const FSDEV_KEYS: &[&str] = &[
    "id",
    "fsdriver",
    "path",
    "security_model",
    "writeout",
    "readonly",
    "multidevs",
    "fmode",
    "dmode",
    "max_xattr",
    "socket",
    "sock_fd",
    "locks",
    "dotu_handles",
    "max_fids",
    "max_xattr_size",
    "max_pdus",
    "max_msize",
];
const LOCAL_KEYS: &[&str] = &[
    "path",
    "security_model",
    "writeout",
    "multidevs",
    "fmode",
    "dmode",
    "locks",
];
const COMMON_KEYS: &[&str] = &[
    "id",
    "fsdriver",
    "readonly",
    "max_xattr",
    "dotu_handles",
    "max_fids",
    "max_xattr_size",
    "max_pdus",
    "max_msize",
];

/// V9FS_MAX_XATTR_DEFAULT.
pub const MAX_XATTR_DEFAULT: u64 = 1024;

/// P9_XATTR_SIZE_MAX (Linux's XATTR_SIZE_MAX): `max_xattr_size`'s default
/// and ceiling; the host takes no larger value anyway.
pub const XATTR_SIZE_MAX: u32 = 65536;

/// The msize cap of the socket transports unless `max_msize=` says
/// otherwise: QEMU virtio's `msize_limit`, (VIRTQUEUE_MAX_SIZE − 2) × 4096.
pub const SOCKET_MAX_MSIZE_DEFAULT: u32 = 1022 * 4096;

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(format!("Parameter '{key}' expects 'on' or 'off'")),
    }
}

/// A number from `min` to `max`, or the one sentence that says what `key`
/// takes.
fn parse_number<T>(key: &str, v: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    v.parse()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("Parameter '{key}' expects a number from {min} to {max}"))
}

fn parse_mode(key: &str, v: &str) -> Result<u32, String> {
    u32::from_str_radix(v.trim_start_matches("0o"), 8)
        .map(|m| m & 0o777)
        .map_err(|_| format!("Parameter '{key}' expects an octal mode"))
}

impl ExportOptions {
    /// Parses a `-fsdev` string: the driver first (or `fsdriver=`), then
    /// `key=value` pairs. Errors are QEMU's sentences.
    ///
    /// # Errors
    ///
    /// An unknown driver or key, a key the driver does not take, a bad value,
    /// or a missing required key.
    pub fn parse(spec: &str) -> Result<ExportOptions, String> {
        let mut driver: Option<String> = None;
        let mut kv: Vec<(String, String)> = Vec::new();
        for (i, part) in spec.split(',').enumerate() {
            if part.is_empty() {
                continue;
            }
            match part.split_once('=') {
                Some((k, v)) => kv.push((k.to_string(), v.to_string())),
                None if i == 0 => driver = Some(part.to_string()),
                // A bare key is a boolean switched on, as in QEMU.
                None => kv.push((part.to_string(), "on".to_string())),
            }
        }
        if let Some((_, d)) = kv.iter().find(|(k, _)| k == "fsdriver") {
            driver = Some(d.clone());
        }
        let driver = driver.ok_or("fsdev: No fsdriver specified".to_string())?;
        if driver != "local" && driver != "synth" {
            return Err(format!("fsdev: fsdriver {driver} not found"));
        }
        let mut opts = ExportOptions {
            id: None,
            driver: FsDriver::Synth,
            readonly: false,
            max_xattr: MAX_XATTR_DEFAULT,
            dotu_handles: false,
            max_fids: 0,
            max_xattr_size: XATTR_SIZE_MAX,
            max_pdus: crate::server::MAX_REQ,
            max_msize: None,
            hops: Hops::default(),
        };
        let mut path = None;
        let mut model = None;
        let mut writeout_immediate = false;
        let mut multidevs = None;
        let mut fmode = None;
        let mut dmode = None;
        let mut locks = Locks::default();
        for (k, v) in &kv {
            if !FSDEV_KEYS.contains(&k.as_str()) {
                return Err(format!("Invalid parameter '{k}'"));
            }
            let allowed = COMMON_KEYS.contains(&k.as_str())
                || (driver == "local" && LOCAL_KEYS.contains(&k.as_str()));
            if !allowed {
                return Err(format!("'{k}' is invalid for fsdriver '{driver}'"));
            }
            match k.as_str() {
                "id" => opts.id = Some(v.clone()),
                "fsdriver" => {}
                "readonly" => opts.readonly = parse_bool(k, v)?,
                "dotu_handles" => opts.dotu_handles = parse_bool(k, v)?,
                "max_xattr" => {
                    let n: u64 = v
                        .parse()
                        .map_err(|_| "Parameter 'max_xattr' expects a number".to_string())?;
                    if n > u32::MAX as u64 {
                        return Err(format!(
                            "max_xattr value {n} exceeds maximum of {}",
                            u32::MAX
                        ));
                    }
                    opts.max_xattr = n;
                }
                "max_fids" => opts.max_fids = parse_number(k, v, 0, u32::MAX)?,
                "max_xattr_size" => opts.max_xattr_size = parse_number(k, v, 1, XATTR_SIZE_MAX)?,
                "max_pdus" => opts.max_pdus = parse_number(k, v, 1, crate::server::MAX_REQ)?,
                "max_msize" => {
                    opts.max_msize = Some(parse_number(k, v, MIN_MSIZE, u32::MAX)?);
                }
                "path" => path = Some(PathBuf::from(v)),
                "security_model" => {
                    model = Some(match v.as_str() {
                        "passthrough" => SecurityModel::Passthrough,
                        "mapped-xattr" | "mapped" => SecurityModel::MappedXattr,
                        "mapped-file" => SecurityModel::MappedFile,
                        "none" => SecurityModel::None,
                        _ => return Err(format!("invalid security_model property '{v}'")),
                    })
                }
                "writeout" => match v.as_str() {
                    "immediate" => writeout_immediate = true,
                    _ => return Err(format!("invalid writeout property '{v}'")),
                },
                "multidevs" => {
                    multidevs = Some(match v.as_str() {
                        "remap" => Multidevs::Remap,
                        "forbid" => Multidevs::Forbid,
                        "warn" => Multidevs::Warn,
                        _ => return Err(format!("invalid multidevs property '{v}'")),
                    })
                }
                "fmode" => fmode = Some(parse_mode(k, v)?),
                "dmode" => dmode = Some(parse_mode(k, v)?),
                "locks" => {
                    locks = match v.as_str() {
                        "qemu" => Locks::Qemu,
                        "posix" => Locks::Posix,
                        _ => return Err(format!("invalid locks property '{v}'")),
                    }
                }
                _ => return Err(format!("'{k}' is not supported by coro9p")),
            }
        }
        if driver == "local" {
            let security_model =
                model.ok_or_else(|| "security_model property not set".to_string())?;
            let path = path.ok_or_else(|| "path property not set".to_string())?;
            let mapped = matches!(
                security_model,
                SecurityModel::MappedXattr | SecurityModel::MappedFile
            );
            if !mapped && (fmode.is_some() || dmode.is_some()) {
                return Err("fmode and dmode are only valid for mapped security modes".into());
            }
            opts.driver = FsDriver::Local {
                path,
                security_model,
                writeout_immediate,
                multidevs,
                fmode,
                dmode,
                locks,
            };
        }
        Ok(opts)
    }
}

/// Open-fd accounting for fd reclaim (QEMU's `total_open_fd`, `open_fd_hw`,
/// `open_fd_rc`): shared by the sessions of an export.
pub(crate) struct FdBudget {
    total: Cell<usize>,
    hw: usize,
    rc: usize,
}

impl FdBudget {
    fn from_rlimit() -> FdBudget {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft as usize)
            .unwrap_or(1024);
        FdBudget::new(soft)
    }

    /// QEMU's thresholds for a soft limit of `soft` fds.
    pub(crate) fn new(soft: usize) -> FdBudget {
        FdBudget {
            total: Cell::new(0),
            hw: soft - 400.min(soft / 3),
            rc: soft / 2,
        }
    }

    /// Counts an open; true if that passed the high-water mark.
    pub(crate) fn opened(&self) -> bool {
        self.total.set(self.total.get() + 1);
        self.total.get() > self.hw
    }

    /// Counts `n` closes.
    pub(crate) fn closed(&self, n: usize) {
        self.total.set(self.total.get().saturating_sub(n));
    }

    /// How many handles one reclaim pass closes at most.
    pub(crate) fn reclaim_count(&self) -> usize {
        self.rc
    }

    /// Handles open now.
    pub(crate) fn open_now(&self) -> usize {
        self.total.get()
    }
}

/// A ready export.
pub struct Export {
    pub(crate) ops: Arc<dyn FileOperations>,
    pub(crate) flags: ExportFlags,
    pub(crate) readonly: bool,
    pub(crate) max_xattr: u64,
    pub(crate) compat: Compat,
    /// The root's device (`dev_id`), for multidevs.
    pub(crate) root_dev: u64,
    /// `locks=`.
    pub(crate) locks: Locks,
    pub(crate) fds: FdBudget,
    /// The options it was made from.
    pub options: ExportOptions,
}

impl Export {
    /// Opens the export: makes the driver and checks the root.
    ///
    /// # Errors
    ///
    /// The root is missing, not a directory, or cannot be opened; or the
    /// driver is not available.
    pub fn open(options: ExportOptions, compat: Compat) -> Result<Rc<Export>, String> {
        Export::open_with_fd_limit(options, compat, None)
    }

    /// [`Export::open`] with fd-reclaim thresholds computed for a soft fd
    /// limit of `soft` instead of the process's RLIMIT_NOFILE (for tests
    /// that exercise reclaim without lowering the process limit).
    ///
    /// # Errors
    ///
    /// As [`Export::open`].
    pub fn open_with_fd_limit(
        options: ExportOptions,
        compat: Compat,
        soft: Option<usize>,
    ) -> Result<Rc<Export>, String> {
        let (ops, mut flags): (Arc<dyn FileOperations>, u32) = match &options.driver {
            FsDriver::Synth => (Arc::new(SynthFs::with_qtest_fixtures(compat)), 0),
            FsDriver::Local {
                path,
                security_model,
                writeout_immediate,
                multidevs,
                fmode,
                dmode,
                locks: _,
            } => {
                let model = match security_model {
                    SecurityModel::Passthrough => LocalModel::Passthrough,
                    SecurityModel::None => LocalModel::None,
                    SecurityModel::MappedXattr => LocalModel::MappedXattr,
                    SecurityModel::MappedFile => LocalModel::MappedFile,
                };
                let fs = LocalFs::open(path, model, *writeout_immediate).map_err(|e| match e {
                    Errno::ENOENT => format!("the export root {} does not exist", path.display()),
                    Errno::ENOTDIR => {
                        format!("the export root {} is not a directory", path.display())
                    }
                    e => format!(
                        "cannot open the export root {}: {}",
                        path.display(),
                        e.desc()
                    ),
                })?;
                // The parser takes fmode/dmode only with the mapped models.
                let fs = fs.with_create_modes(
                    fmode.unwrap_or(DEFAULT_FMODE),
                    dmode.unwrap_or(DEFAULT_DMODE),
                );
                let mut flags = ExportFlags::PATHNAME_FSCONTEXT;
                if *writeout_immediate {
                    flags |= ExportFlags::IMMEDIATE_WRITEOUT;
                }
                let multidevs = multidevs.unwrap_or(match compat {
                    Compat::Master => Multidevs::Remap,
                    Compat::V7_2 => Multidevs::Warn,
                });
                flags |= match multidevs {
                    Multidevs::Remap => ExportFlags::REMAP_INODES,
                    Multidevs::Forbid => ExportFlags::FORBID_MULTIDEVS,
                    Multidevs::Warn => 0,
                };
                (Arc::new(fs), flags)
            }
        };
        flags |= ops.export_flags().0;
        if options.readonly {
            flags |= ExportFlags::RDONLY;
        }
        let root = ops
            .name_to_path(None, b"/")
            .and_then(|p| ops.lstat(&p))
            .map_err(|e| format!("cannot reach the export root: {}", e.desc()))?;
        if !root.is_dir() {
            return Err("the export root is not a directory".into());
        }
        Ok(Rc::new(Export {
            ops,
            flags: ExportFlags(flags),
            readonly: options.readonly,
            max_xattr: options.max_xattr,
            compat,
            root_dev: root.dev,
            locks: match options.driver {
                FsDriver::Local { locks, .. } => locks,
                FsDriver::Synth => Locks::Qemu,
            },
            fds: soft.map_or_else(FdBudget::from_rlimit, FdBudget::new),
            options,
        }))
    }

    /// File handles and directory streams open now, over all sessions.
    pub fn open_handles(&self) -> usize {
        self.fds.open_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_style_strings() {
        let o = ExportOptions::parse("local,id=fs0,path=/srv,security_model=mapped,readonly=on")
            .unwrap();
        assert_eq!(o.id.as_deref(), Some("fs0"));
        assert!(o.readonly);
        assert!(matches!(
            o.driver,
            FsDriver::Local {
                security_model: SecurityModel::MappedXattr,
                ..
            }
        ));
        let o = ExportOptions::parse("fsdriver=synth,max_xattr=0,readonly").unwrap();
        assert_eq!(
            (o.driver, o.max_xattr, o.readonly),
            (FsDriver::Synth, 0, true)
        );
    }

    #[test]
    fn errors_read_like_qemus() {
        let e = |s| ExportOptions::parse(s).unwrap_err();
        assert_eq!(e("synth,path=/x"), "'path' is invalid for fsdriver 'synth'");
        assert_eq!(e("local,path=/x,colour=red"), "Invalid parameter 'colour'");
        assert_eq!(e("local,path=/x"), "security_model property not set");
        assert_eq!(e("local,security_model=none"), "path property not set");
        assert_eq!(
            e("local,path=/x,security_model=bogus"),
            "invalid security_model property 'bogus'"
        );
        assert_eq!(e("nfs,path=/x"), "fsdev: fsdriver nfs not found");
        assert_eq!(
            e("local,path=/x,security_model=passthrough,fmode=644"),
            "fmode and dmode are only valid for mapped security modes"
        );
        assert_eq!(
            e("synth,locks=posix"),
            "'locks' is invalid for fsdriver 'synth'"
        );
        assert_eq!(
            e("local,path=/x,security_model=none,locks=flock"),
            "invalid locks property 'flock'"
        );
    }

    #[test]
    fn locks_default_to_qemus_answer() {
        let locks = |s| match ExportOptions::parse(s).unwrap().driver {
            FsDriver::Local { locks, .. } => locks,
            FsDriver::Synth => unreachable!(),
        };
        assert_eq!(locks("local,path=/x,security_model=none"), Locks::Qemu);
        assert_eq!(
            locks("local,path=/x,security_model=none,locks=qemu"),
            Locks::Qemu
        );
        assert_eq!(
            locks("local,path=/x,security_model=mapped-file,locks=posix"),
            Locks::Posix
        );
    }

    #[test]
    fn fd_thresholds_follow_qemu() {
        let b = FdBudget::new(1024);
        assert_eq!((b.hw, b.rc), (1024 - 341, 512));
        let b = FdBudget::new(65536);
        assert_eq!((b.hw, b.rc), (65136, 32768));
    }
}
