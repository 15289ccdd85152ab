//! The server over a real Unix socket, on the synth driver: replies checked
//! byte for byte against QEMU's behaviour (qemu-9pfs-semantics.md).

// le! builds frames one push per field, on purpose.
#![allow(clippy::vec_init_then_push)]

mod common;

use common::*;
use coro9p::Compat;

fn server() -> TestServer {
    TestServer::start("synth", Compat::Master)
}

const ROOT_QID: (u8, u32, u64) = (0x80, 0, 0);

fn walk_names(fid: u32, newfid: u32, names: &[&[u8]]) -> Vec<u8> {
    let mut body = le![d fid, d newfid, w names.len()];
    for n in names {
        body.extend(le![s * n]);
    }
    body
}

// ---- Tversion (§5.1) ------------------------------------------------------

#[test]
fn version_echoes_msize_and_a_known_version() {
    let srv = server();
    let mut c = srv.connect();
    c.version(32768, "9P2000.L");
    c.version(4096, "9P2000.u");
    c.version(8192, "9P2000.L");
}

#[test]
fn version_unknown_string_gives_unknown_and_the_raw_msize() {
    let srv = server();
    let mut c = srv.connect();
    c.expect(
        TVERSION,
        NOTAG,
        &le![d 12, s b"9P2000"],
        TVERSION + 1,
        &le![d 12, s b"unknown"],
    );
    // The dialect is still unset: errors go out as Rerror.
    c.expect(
        TAUTH,
        0,
        &le![d 0, s b"", s b"", d 0],
        RERROR,
        &le![s b"Operation not supported", d 95],
    );
}

#[test]
fn version_below_min_msize_is_emsgsize_in_the_new_dialect() {
    let srv = server();
    let mut c = srv.connect();
    c.expect(
        TVERSION,
        NOTAG,
        &le![d 4095, s b"9P2000.L"],
        RLERROR,
        &le![d 90],
    );
    let srv = server();
    let mut c = srv.connect();
    c.expect(
        TVERSION,
        NOTAG,
        &le![d 100, s b"9P2000.u"],
        RERROR,
        &le![s b"Message too long", d 90],
    );
}

#[test]
fn version_compares_as_a_c_string_and_echoes_the_bytes() {
    let srv = server();
    let mut c = srv.connect();
    let body = le![d 8192, s b"9P2000.L\0junk"];
    c.expect(TVERSION, NOTAG, &body, TVERSION + 1, &body);
    // Now .L: errors are Rlerror.
    c.expect_err(TGETATTR, &le![d 5, q 0x7ff], 2);
}

#[test]
fn version_frees_every_fid() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.ok(TGETATTR, &le![d 0, q 0x7ff]);
    c.version(32768, "9P2000.L");
    c.expect_err(TGETATTR, &le![d 0, q 0x7ff], 2);
}

#[test]
fn before_version_errors_are_rerror() {
    let srv = server();
    let mut c = srv.connect();
    c.expect(
        TCLUNK,
        0,
        &le![d 9],
        RERROR,
        &le![s b"No such file or directory", d 2],
    );
}

// ---- Tattach (§5.2) -------------------------------------------------------

#[test]
fn attach_gives_the_root_qid_and_refuses_a_taken_fid() {
    let srv = server();
    let mut c = srv.connect();
    assert_eq!(c.attach(), le![Q ROOT_QID]);
    c.expect_err(TATTACH, &le![d 0, d NOFID, s b"", s b"", d 0], 22);
    c.expect(
        TATTACH,
        0,
        &le![d 1, d 77, s b"u", s b"anything", d 1000],
        TATTACH + 1,
        &le![Q ROOT_QID],
    );
}

// ---- Twalk (§5.3) ---------------------------------------------------------

#[test]
fn walk_sixteen_names_in_one_request() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    let names: Vec<String> = (0..16).map(|i| format!("WALK{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let reply = c.walk(0, 1, &refs);
    let mut want = le![w 16];
    for i in 1..=16u64 {
        want.extend(le![Q(0x80, 0, i)]);
    }
    assert_eq!(reply, want);
}

#[test]
fn walk_more_than_sixteen_names_is_einval() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    let names: Vec<&[u8]> = vec![b"WALK0"; 17];
    c.expect_err(TWALK, &walk_names(0, 1, &names), 22);
    // Checked before the fid: an unknown fid gives the same.
    c.expect_err(TWALK, &walk_names(55, 1, &names), 22);
}

#[test]
fn walk_names_with_a_slash_or_empty_are_enoent_before_the_fid_lookup() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.expect_err(TWALK, &walk_names(0, 1, &[b" /"]), 2);
    c.expect_err(TWALK, &walk_names(0, 1, &[b"WALK0", b""]), 2);
    c.expect_err(TWALK, &walk_names(99, 1, &[b"a/b"]), 2);
    // A NUL ends the name, as in C: "\0x" is empty.
    c.expect_err(TWALK, &walk_names(0, 1, &[b"\0x"]), 2);
}

#[test]
fn walk_no_names_clones_the_fid() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    assert_eq!(c.walk(0, 1, &[]), le![w 0]);
    let attr = c.ok(TGETATTR, &le![d 1, q 0x7ff]);
    assert_eq!(&attr[8..21], &le![Q ROOT_QID][..]);
}

#[test]
fn walk_dotdot_at_the_root_repeats_the_root_qid() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    assert_eq!(c.walk(0, 1, &[".."]), le![w 1, Q ROOT_QID]);
}

#[test]
fn walk_unknown_first_name_is_an_error_not_an_empty_rwalk() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.expect_err(TWALK, &walk_names(0, 1, &[b"non-existent"]), 2);
    // "." is invalid for synth's name lookup.
    c.expect_err(TWALK, &walk_names(0, 1, &[b"."]), 22);
}

#[test]
fn walk_partial_returns_the_good_qids_and_creates_no_fid() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    let reply = c.walk(0, 1, &["WALK0", "non-existent"]);
    assert_eq!(reply, le![w 1, Q (0x80, 0, 1)]);
    c.expect_err(TGETATTR, &le![d 1, q 0x7ff], 2);
}

#[test]
fn walk_to_a_taken_newfid_is_einval_after_the_walk() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &[]);
    c.expect_err(TWALK, &walk_names(0, 1, &[b"WALK0"]), 22);
    c.expect_err(TWALK, &walk_names(42, 1, &[b"WALK0"]), 2);
}

#[test]
fn walk_in_place_moves_the_fid_but_not_an_open_one() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &[]);
    assert_eq!(c.walk(1, 1, &["WALK0"]), le![w 1, Q (0x80, 0, 1)]);
    c.ok(TLOPEN, &le![d 1, d 0o200000]);
    c.expect_err(TWALK, &walk_names(1, 1, &[b"WALK1"]), 22);
    // Cloning an open fid is allowed.
    c.walk(1, 2, &["WALK1"]);
}

// ---- Tlopen, Tread, Twrite, Tclunk ---------------------------------------

#[test]
fn lopen_gives_qid_and_iounit_and_refuses_a_second_open() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["LOPEN"]);
    let reply = c.ok(TLOPEN, &le![d 1, d 0]);
    assert_eq!(reply, le![Q (0, 0, 17), d 32256]);
    c.expect_err(TLOPEN, &le![d 1, d 0], 22);
    c.expect_err(TLOPEN, &le![d 9, d 0], 2);
    // No read callback: EPERM.
    c.expect_err(TREAD, &le![d 1, q 0, d 10], 1);
    c.expect_err(TREAD, &le![d 9, q 0, d 10], 22);
}

#[test]
fn write_loops_until_every_byte_is_taken() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["WRITE"]);
    c.ok(TLOPEN, &le![d 1, d 1]);
    let data = vec![b'x'; 16384];
    let reply = c.ok(TWRITE, &le![d 1, q 0, d data.len(), x &data]);
    assert_eq!(reply, le![d 16384]);
    let report = srv.stop();
    let write = report
        .hops
        .iter()
        .find(|t| t.label.ends_with("Twrite"))
        .unwrap();
    assert_eq!(write.hops, 16384, "one hop per byte, as in QEMU");
}

#[test]
fn write_to_a_walked_but_unopened_fid_is_einval() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["WRITE"]);
    c.expect_err(TWRITE, &le![d 1, q 0, d 1, x b"a"], 22);
    c.expect_err(TWRITE, &le![d 7, q 0, d 1, x b"a"], 22);
}

#[test]
fn clunk_removes_the_fid_and_an_unknown_one_is_enoent() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["LOPEN"]);
    assert_eq!(c.ok(TCLUNK, &le![d 1]), le![]);
    c.expect_err(TCLUNK, &le![d 1], 2);
}

#[test]
fn xattr_count_reports_the_sessions_xattr_fids() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["stat", "xattr_count"]);
    c.ok(TLOPEN, &le![d 1, d 0]);
    let count = |c: &mut Client| {
        let r = c.ok(TREAD, &le![d 1, q 0, d 8]);
        assert_eq!(&r[..4], &le![d 8][..]);
        u64::from_ne_bytes(r[4..12].try_into().unwrap())
    };
    assert_eq!(count(&mut c), 0);
    c.walk(0, 2, &[]);
    c.ok(TXATTRCREATE, &le![d 2, s b"user.x", q 1, d 0]);
    assert_eq!(count(&mut c), 1);
    // Too small a buffer: ENOSPC from the callback.
    c.expect_err(TREAD, &le![d 1, q 0, d 7], 28);
    // Unwritten create fid: clunk fails with EINVAL, the fid is gone anyway.
    c.expect_err(TCLUNK, &le![d 2], 22);
    assert_eq!(count(&mut c), 0);
}

// ---- Treaddir (§5.11, qos-test readdir/*) ---------------------------------

fn entries(data: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 24 <= data.len() {
        let off = u64::from_le_bytes(data[i + 13..i + 21].try_into().unwrap());
        let len = u16::from_le_bytes([data[i + 22], data[i + 23]]) as usize;
        out.push((off, data[i + 24..i + 24 + len].to_vec()));
        i += 24 + len;
    }
    assert_eq!(i, data.len(), "entries fill the data exactly");
    out
}

fn open_readdir_dir(c: &mut Client) {
    c.attach();
    c.walk(0, 1, &["ReadDirDir"]);
    c.ok(TLOPEN, &le![d 1, d 0o200000]);
}

#[test]
fn readdir_returns_all_102_entries_newest_first() {
    let srv = server();
    let mut c = srv.connect();
    open_readdir_dir(&mut c);
    let r = c.ok(TREADDIR, &le![d 1, q 0, d 32757]);
    assert_eq!(&r[..4], &le![d 3741][..]);
    let e = entries(&r[4..]);
    assert_eq!(e.len(), 102);
    assert_eq!(e[0], (1, b"ReadDirFile99".to_vec()));
    assert_eq!(e[99], (100, b"ReadDirFile0".to_vec()));
    assert_eq!(e[100], (101, b".".to_vec()));
    assert_eq!(e[101], (102, b"..".to_vec()));
    // Entry 0 exactly: qid path = inode 120, type 0, d_type 0.
    assert_eq!(
        &r[4..4 + 37],
        &le![Q (0, 0, 120), q 1, b 0, s b"ReadDirFile99"][..]
    );
}

/// qos-test's split loop: the next count is the previous reply's size.
fn split_readdir(count: u32) -> Vec<u32> {
    let srv = server();
    let mut c = srv.connect();
    open_readdir_dir(&mut c);
    let (mut count, mut offset, mut sizes, mut n) = (count, 0u64, Vec::new(), 0);
    loop {
        let r = c.ok(TREADDIR, &le![d 1, q offset, d count]);
        let size = u32::from_le_bytes(r[..4].try_into().unwrap());
        let e = entries(&r[4..]);
        sizes.push(size);
        if e.is_empty() {
            break;
        }
        n += e.len();
        count = size;
        offset = e.last().unwrap().0;
    }
    assert_eq!(n, 102);
    sizes
}

#[test]
fn readdir_split_512() {
    let mut want = vec![481; 6];
    want.extend([480, 375, 0]);
    assert_eq!(split_readdir(512), want);
}

#[test]
fn readdir_split_256() {
    let mut want = vec![222; 15];
    want.extend([216, 195, 0]);
    assert_eq!(split_readdir(256), want);
}

#[test]
fn readdir_split_128() {
    let mut want = vec![111; 30];
    want.extend([108, 108, 108, 87, 0]);
    assert_eq!(split_readdir(128), want);
}

#[test]
fn readdir_errors() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.expect_err(TREADDIR, &le![d 9, q 0, d 100], 22);
    c.walk(0, 1, &["LOPEN"]);
    c.ok(TLOPEN, &le![d 1, d 0]);
    c.expect_err(TREADDIR, &le![d 1, q 0, d 100], 20);
    c.walk(0, 2, &["ReadDirDir"]);
    c.expect_err(TREADDIR, &le![d 2, q 0, d 100], 20);
}

#[test]
fn readdir_in_9p2000u_is_eopnotsupp_and_tread_lists_stats() {
    let srv = server();
    let mut c = srv.connect();
    c.version(8192, "9P2000.u");
    c.expect(
        TATTACH,
        0,
        &le![d 0, d NOFID, s b"", s b"", d 0],
        TATTACH + 1,
        &le![Q ROOT_QID],
    );
    c.send(TWALK, 0, &walk_names(0, 1, &[b"WALK14"]));
    c.recv();
    c.send(TWALK, 0, &walk_names(0, 1, &[b"WALK0"]));
    assert_eq!(c.recv().0, TWALK + 1);
    // Topen decodes a 1-byte mode in .u.
    c.send(TOPEN, 0, &le![d 1, b 0]);
    let (id, _, body) = c.recv();
    assert_eq!((id, body), (TOPEN + 1, le![Q (0x80, 0, 1), d 0]));
    c.send(TREADDIR, 0, &le![d 1, q 0, d 1000]);
    assert_eq!(
        c.recv().2,
        le![s b"Operation not supported", d 95],
        "Treaddir needs 9P2000.L"
    );
    // WALK0 holds WALK1, "." and "..". QEMU's directory read looks up
    // each entry by name before it checks the room left, and synth's lookup
    // refuses ".": the read fails with EINVAL whatever the count.
    c.send(TREAD, 0, &le![d 1, q 0, d 4000]);
    assert_eq!(c.recv().2, le![s b"Invalid argument", d 22]);
    // With no room even for WALK1, the read stops before reaching ".".
    c.send(TREAD, 0, &le![d 1, q 0, d 10]);
    assert_eq!(c.recv(), (TREAD + 1, 0, le![d 0]));
}

// ---- Tstat, Tstatfs, Tgetattr ---------------------------------------------

#[test]
fn getattr_of_the_root() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    let r = c.ok(TGETATTR, &le![d 0, q 0x3fff]);
    let want = le![
        q 0x17ff, Q ROOT_QID, d (libc::S_IFDIR | 0o555), d 0, d 0, q 6, q 0, q 0,
        q 32768 - 24, q 0, q 0, q 0, q 0, q 0, q 0, q 0, q 0, q 0, q 0, q 0
    ];
    assert_eq!(r, want);
}

#[test]
fn statfs_of_synth() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    let r = c.ok(TSTATFS, &le![d 0]);
    // bsize 512 scaled by (32768 - 24) / 512 = 63.
    assert_eq!(
        r,
        le![d 0xabcd, d 512 * 63, q 0, q 0, q 0, q 122, q 0, q 0, d 255]
    );
    c.expect_err(TSTATFS, &le![d 3], 2);
}

#[test]
fn tstat_in_a_9p2000l_session() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["LOPEN"]);
    let r = c.ok(TSTAT, &le![d 1]);
    let ext = b"HARDLINKCOUNT 1";
    let want = le![
        w 0, w 61 + 5 + ext.len(), w 0, d 0, Q (0, 0, 17), d 0, d 0, d 0, q 0,
        s b"LOPEN", s b"", s b"", s b"", s ext, d 0, d 0, d 0
    ];
    assert_eq!(r, want, "outer size written as 0");
}

// ---- Errors that depend on the driver -------------------------------------

#[test]
fn synth_refuses_changes_as_qemu_does() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.expect_err(TMKDIR, &le![d 0, s b"d", d 0o755, d 0], 1);
    c.expect_err(TMKDIR, &le![d 0, s b"..", d 0o755, d 0], 17);
    c.expect_err(TMKDIR, &le![d 5, s b"d", d 0o755, d 0], 2);
    c.expect_err(TSYMLINK, &le![d 5, s b"l", s b"t", d 0], 22);
    c.expect_err(TUNLINKAT, &le![d 0, s b"LOPEN", d 0], 1);
    c.expect_err(TUNLINKAT, &le![d 0, s b".", d 0], 22);
    c.expect_err(TUNLINKAT, &le![d 0, s b"..", d 0], 39);
    c.expect_err(TUNLINKAT, &le![d 0, s b"x", d 1], 22);
    c.expect_err(TRENAMEAT, &le![d 0, s b"a", d 0, s b"b"], 95);
    c.expect_err(TRENAMEAT, &le![d 0, s b".", d 0, s b"b"], 21);
    c.walk(0, 1, &["LOPEN"]);
    c.expect_err(TRENAME, &le![d 1, d 0, s b"b"], 95);
    c.expect_err(TLCREATE, &le![d 0, s b"new", d 0, d 0o644, d 0], 38);
    c.expect_err(TREADLINK, &le![d 1], 38);
    c.expect_err(TREMOVE, &le![d 1], 95);
    // Tremove clunks even when it fails.
    c.expect_err(TGETATTR, &le![d 1, q 0x7ff], 2);
    c.expect_err(TREMOVE, &le![d 1], 22);
}

#[test]
fn fsync_and_lock_need_an_open_handle() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["LOPEN"]);
    c.ok(TLOPEN, &le![d 1, d 0]);
    // Synth never reports a valid handle: EBADF (master).
    c.expect_err(TFSYNC, &le![d 1, d 0], 9);
    c.expect_err(TLOCK, &le![d 1, b 1, d 0, q 0, q 0, d 1, s b"c"], 9);
    c.expect_err(TLOCK, &le![d 1, b 1, d 2, q 0, q 0, d 1, s b"c"], 22);
    c.expect_err(TGETLOCK, &le![d 1, b 1, q 0, q 0, d 1, s b"c"], 9);
    c.expect_err(TFSYNC, &le![d 8, d 0], 2);
}

#[test]
fn fsync_and_lock_under_qemu_7_2_do_not_check_the_handle() {
    let srv = TestServer::start("synth", Compat::V7_2);
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &["LOPEN"]);
    c.ok(TFSYNC, &le![d 1, d 0]);
    assert_eq!(
        c.ok(TLOCK, &le![d 1, b 1, d 0, q 0, q 0, d 1, s b"c"]),
        le![b 0]
    );
    assert_eq!(
        c.ok(TGETLOCK, &le![d 1, b 0, q 5, q 6, d 7, s b"id"]),
        le![b 2, q 5, q 6, d 7, s b"id"]
    );
    // 7.2's synth has no /stat and refuses xattr sets.
    c.expect_err(TWALK, &walk_names(0, 2, &[b"stat"]), 2);
    c.expect_err(TRENAMEAT, &le![d 0, s b"a", d 0, s b"b"], 1);
}

#[test]
fn unknown_and_reply_types_are_eopnotsupp() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    for id in [0u8, 6, 7, 101, 102, 105, 106, 127, 128, 255] {
        c.expect_err(id, &[], 95);
    }
}

#[test]
fn xattrwalk_on_synth_is_enotsup_and_creates_no_fid() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.expect_err(TXATTRWALK, &le![d 0, d 1, s b""], 95);
    c.expect_err(TXATTRWALK, &le![d 0, d 1, s b"user.a"], 95);
    c.expect_err(TGETATTR, &le![d 1, q 0x7ff], 2);
    c.expect_err(TXATTRWALK, &le![d 5, d 1, s b""], 2);
    c.walk(0, 2, &[]);
    c.expect_err(TXATTRWALK, &le![d 0, d 2, s b""], 22);
}

#[test]
fn xattrcreate_rules() {
    let srv = server();
    let mut c = srv.connect();
    c.attach();
    c.walk(0, 1, &[]);
    c.expect_err(TXATTRCREATE, &le![d 1, s b"user.a", q 1, d 4], 22);
    c.expect_err(TXATTRCREATE, &le![d 1, s b"user.a", q 65537, d 0], 7);
    c.expect_err(TXATTRCREATE, &le![d 9, s b"user.a", q 1, d 0], 22);
    c.ok(TXATTRCREATE, &le![d 1, s b"user.a", q 3, d 0]);
    c.expect_err(TXATTRCREATE, &le![d 1, s b"user.a", q 3, d 0], 22);
    // Writes past the size: ENOSPC; the rest counts.
    c.expect_err(TWRITE, &le![d 1, q 4, d 1, x b"x"], 28);
    assert_eq!(c.ok(TWRITE, &le![d 1, q 1, d 5, x b"abcde"]), le![d 2]);
    assert_eq!(c.ok(TWRITE, &le![d 1, q 0, d 1, x b"z"]), le![d 1]);
    // Reading the buffer back works too.
    assert_eq!(c.ok(TREAD, &le![d 1, q 0, d 10]), le![d 3, x b"zab"]);
    // Complete: the commit is synth's pretend success.
    assert_eq!(c.ok(TCLUNK, &le![d 1]), le![]);
}
