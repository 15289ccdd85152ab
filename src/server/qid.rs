//! QIDs (QEMU's `stat_to_qid`), with the multidevs modes: `remap` maps
//! (device, inode) to unique qid paths with variable-length suffixes,
//! `forbid` refuses files of other devices, `warn` (and no flag) uses the
//! inode number as is.

use std::collections::HashMap;

use nix::errno::Errno;

use super::V9fsState;
use crate::fsdev::{ExportFlags, FileStat};
use crate::protocol::{qid_type, Qid};

/// A variable-length suffix: `bits` low bits holding `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Affix {
    pub value: u64,
    pub bits: u32,
}

/// The Exp-Golomb code (k = 0) of `index`, bit-mirrored into a suffix
/// (QEMU's `affixForIndex`): index 1 -> 1/1 bit, 2 -> 2/3 bits, 3 -> 6/3.
pub(crate) fn affix_for_index(index: u64) -> Affix {
    debug_assert!(index > 0);
    let b = 64 - index.leading_zeros();
    let bits = 2 * b - 1;
    Affix {
        value: index.reverse_bits() >> (64 - bits),
        bits,
    }
}

/// The per-session maps for `multidevs=remap`.
pub(crate) struct QidMaps {
    root_dev: u64,
    /// Device -> how many high inode bits tell groups apart.
    dev_bits: HashMap<u64, u32>,
    /// (device, high inode bits) -> that group's suffix.
    groups: HashMap<(u64, u16), Affix>,
    /// Next suffix index; 0 once all 65535 are used.
    affix_next: u16,
    /// (device, inode) -> path, once suffixes ran out.
    full: HashMap<(u64, u64), u64>,
    /// Next full-map number; 0 once exhausted.
    fullpath_next: u64,
    warned: bool,
}

impl QidMaps {
    pub(crate) fn new(root_dev: u64) -> QidMaps {
        QidMaps {
            root_dev,
            dev_bits: HashMap::new(),
            groups: HashMap::new(),
            affix_next: 1,
            full: HashMap::new(),
            fullpath_next: 1,
            warned: false,
        }
    }

    fn suffixmap(&mut self, st: &FileStat) -> Result<u64, Errno> {
        let next = self.affix_next;
        let bits = *self
            .dev_bits
            .entry(st.dev)
            .or_insert_with(|| affix_for_index(next.max(1) as u64).bits);
        let key = (st.dev, (st.ino >> (64 - bits)) as u16);
        let affix = match self.groups.get(&key) {
            Some(a) => *a,
            None => {
                if self.affix_next == 0 {
                    log_once(
                        &mut self.warned,
                        "9p: Potential degraded performance of inode remapping",
                    );
                    return Err(Errno::ENFILE);
                }
                let a = affix_for_index(self.affix_next as u64);
                self.affix_next = self.affix_next.wrapping_add(1);
                self.groups.insert(key, a);
                a
            }
        };
        Ok((st.ino << affix.bits) | affix.value)
    }

    fn fullmap(&mut self, st: &FileStat) -> Result<u64, Errno> {
        if let Some(&p) = self.full.get(&(st.dev, st.ino)) {
            return Ok(p);
        }
        if self.fullpath_next == 0 {
            log::error!("9p: No more prefixes available for remapping inodes from host to guest.");
            return Err(Errno::ENFILE);
        }
        let affix = affix_for_index(1 << 16);
        let path = (self.fullpath_next << affix.bits) | affix.value;
        self.fullpath_next = (self.fullpath_next + 1) & ((1u64 << (64 - affix.bits)) - 1);
        self.full.insert((st.dev, st.ino), path);
        Ok(path)
    }
}

fn log_once(done: &mut bool, msg: &str) {
    if !*done {
        *done = true;
        log::warn!("{msg}");
    }
}

/// The one failure of `stat_to_qid` that needs no main-thread state:
/// `multidevs=forbid` refusing a file of another device. A min-mode hop
/// checks it on the worker so that it stops where QEMU's next hop would
/// not have started.
#[derive(Clone, Copy)]
pub(crate) struct QidCheck {
    flags: ExportFlags,
    root_dev: u64,
}

impl QidCheck {
    /// Whether `st` is refused (ENODEV); `stat_to_qid` logs why.
    pub(crate) fn check(&self, st: &FileStat) -> Result<(), Errno> {
        let forbid = !self.flags.has(ExportFlags::REMAP_INODES)
            && self.flags.has(ExportFlags::FORBID_MULTIDEVS);
        if forbid && st.dev != self.root_dev {
            return Err(Errno::ENODEV);
        }
        Ok(())
    }
}

impl V9fsState {
    pub(crate) fn qid_check(&self) -> QidCheck {
        QidCheck {
            flags: self.export_flags(),
            root_dev: self.qids.borrow().root_dev,
        }
    }

    /// `stat_to_qid`: type from the file type, version from mtime and size,
    /// path by the export's multidevs mode.
    pub(crate) fn stat_to_qid(&self, st: &FileStat) -> Result<Qid, Errno> {
        let flags = self.export_flags();
        let path = if flags.has(ExportFlags::REMAP_INODES) {
            let mut maps = self.qids.borrow_mut();
            match maps.suffixmap(st) {
                Err(Errno::ENFILE) => maps.fullmap(st)?,
                r => r?,
            }
        } else {
            let refused = self.qid_check().check(st).is_err();
            let mut maps = self.qids.borrow_mut();
            if st.dev != maps.root_dev {
                if refused {
                    log_once(
                        &mut maps.warned,
                        "9p: Multiple devices detected in same VirtFS export, which might \
                         lead to file ID collisions and severe misbehaviours on guest! \
                         Access of these files is forbidden (multidevs=forbid).",
                    );
                    return Err(Errno::ENODEV);
                }
                log_once(
                    &mut maps.warned,
                    "9p: Multiple devices detected in same VirtFS export, which might lead \
                     to file ID collisions and severe misbehaviours on guest! You should \
                     use multidevs=remap.",
                );
            }
            st.ino
        };
        let ty = if st.is_dir() {
            qid_type::DIR
        } else if st.is_symlink() {
            qid_type::SYMLINK
        } else {
            qid_type::FILE
        };
        Ok(Qid {
            ty,
            version: (st.mtime.sec ^ (st.size << 8)) as u32,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_mirrored_exp_golomb_codes() {
        assert_eq!(affix_for_index(1), Affix { value: 1, bits: 1 });
        assert_eq!(affix_for_index(2), Affix { value: 2, bits: 3 });
        assert_eq!(affix_for_index(3), Affix { value: 6, bits: 3 });
        assert_eq!(affix_for_index(4).bits, 5);
        assert_eq!(affix_for_index(1 << 16).bits, 33);
    }

    #[test]
    fn first_group_maps_ino_to_ino_times_two_plus_one() {
        let mut m = QidMaps::new(5);
        let st = |dev, ino| FileStat {
            dev,
            ino,
            ..FileStat::default()
        };
        assert_eq!(m.suffixmap(&st(5, 10)), Ok(21));
        assert_eq!(m.suffixmap(&st(5, 11)), Ok(23));
        // A second device: its own group, suffix 2 over 3 bits.
        assert_eq!(m.suffixmap(&st(6, 10)), Ok((10 << 3) | 2));
        // The same device with the top inode bit set: a new group.
        let high = 1u64 << 63 | 7;
        assert_eq!(m.suffixmap(&st(5, high)), Ok((high << 3) | 6));
    }

    #[test]
    fn exhausted_suffixes_fall_back_to_the_full_map() {
        let mut m = QidMaps::new(0);
        m.affix_next = 0;
        let st = FileStat {
            dev: 9,
            ino: 1,
            ..FileStat::default()
        };
        assert_eq!(m.suffixmap(&st), Err(Errno::ENFILE));
        let a = affix_for_index(1 << 16);
        assert_eq!(m.fullmap(&st), Ok((1 << 33) | a.value));
        assert_eq!(m.fullmap(&st), Ok((1 << 33) | a.value), "stable");
    }
}
