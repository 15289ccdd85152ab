//! The export the workloads run on, and `prepare`, which builds it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// 100 directories of 100 files: `tree/dNN/fNNNNN`.
pub const TREE: &str = "tree";
pub const TREE_DIRS: usize = 100;
pub const TREE_FILES: usize = 10_000;
/// One directory of 10,000 entries: `dir10k/eNNNNN`.
pub const DIR10K: &str = "dir10k";
pub const DIR10K_ENTRIES: usize = 10_000;
/// The file `read4k` and `seqread` read.
pub const BIG: &str = "big";
/// Where `seqwrite` writes (one file per connection) and where its offsets
/// wrap.
pub const WR: &str = "wr";
pub const WRITE_WRAP: u64 = 256 << 20;
/// Where `create` creates and removes.
pub const CREATE: &str = "create";
pub fn tree_dir(d: usize) -> String {
    format!("d{d:02}")
}

/// The directory and name of tree file `i`.
pub fn tree_file(i: usize) -> (String, String) {
    (tree_dir(i / (TREE_FILES / TREE_DIRS)), format!("f{i:05}"))
}

/// Builds the export in `dir` (empty files, a `big_mib` MiB file of
/// non-zero bytes, the work directories). Idempotent.
pub fn prepare(dir: &Path, big_mib: u64) -> Result<(), String> {
    let e = |what: &str, err: std::io::Error| format!("prepare: {what}: {err}");
    for d in 0..TREE_DIRS {
        fs::create_dir_all(dir.join(TREE).join(tree_dir(d))).map_err(|x| e("tree", x))?;
    }
    for i in 0..TREE_FILES {
        let (d, f) = tree_file(i);
        let p = dir.join(TREE).join(d).join(f);
        if !p.exists() {
            fs::write(&p, b"").map_err(|x| e("tree file", x))?;
        }
    }
    fs::create_dir_all(dir.join(DIR10K)).map_err(|x| e(DIR10K, x))?;
    for i in 0..DIR10K_ENTRIES {
        let p = dir.join(DIR10K).join(format!("e{i:05}"));
        if !p.exists() {
            fs::write(&p, b"").map_err(|x| e("dir10k entry", x))?;
        }
    }
    let big = dir.join(BIG);
    let want = big_mib << 20;
    if fs::metadata(&big).map(|m| m.len()).ok() != Some(want) {
        let mut f = fs::File::create(&big).map_err(|x| e(BIG, x))?;
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 + 1).collect();
        for _ in 0..big_mib {
            f.write_all(&chunk).map_err(|x| e(BIG, x))?;
        }
    }
    for d in [WR, CREATE] {
        fs::create_dir_all(dir.join(d)).map_err(|x| e(d, x))?;
        fs::set_permissions(dir.join(d), fs::Permissions::from_mode(0o777)).map_err(|x| e(d, x))?;
    }
    Ok(())
}
