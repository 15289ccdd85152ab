//! Entry points for the fuzz targets (`fuzz/`) and for replaying their
//! corpus and crashes in `make test` (`tests/fuzz_regressions.rs`), so that
//! both run the same code.
//!
//! A panic anywhere is a finding: these functions are meant to run with a
//! panic hook that aborts, because the runtime would otherwise contain a
//! handler's panic and answer EIO.

pub mod host;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::protocol::{Dialect, Msg, Writer, HEADER_SIZE};
use crate::runtime::{Executor, RuntimeConfig};
use crate::server::{Export, ExportOptions, V9fsState};
use crate::transport::Transport;
use crate::Compat;

/// Decodes `data` as a message body: byte 0 is the type, byte 1 picks the
/// dialect, the rest is the body. Whatever decodes must re-encode to
/// something that decodes the same.
pub fn decode(data: &[u8]) {
    let (Some(&id), Some(&d)) = (data.first(), data.get(1)) else {
        return;
    };
    let dialect = [Dialect::Unset, Dialect::U, Dialect::L][d as usize % 3];
    if let Ok(msg) = Msg::decode(id, &data[2..], dialect) {
        let mut w = Writer::new();
        msg.encode_body(&mut w);
        let again = Msg::decode(id, &w.buf, dialect).expect("a re-encoded message decodes");
        assert_eq!(again, msg, "decode(encode(m)) != m");
    }
}

/// Collects replies; a fatal error stops taking requests.
#[derive(Default)]
struct Sink {
    replies: RefCell<Vec<Vec<u8>>>,
    broken: Cell<bool>,
}

impl Transport for Sink {
    fn push_and_notify(&self, _pdu_idx: usize, reply: Vec<u8>) {
        self.replies.borrow_mut().push(reply);
    }
    fn response_buffer_size(&self, _pdu_idx: usize) -> Option<u32> {
        Some(65536)
    }
    fn fatal_error(&self, _msg: &str) {
        self.broken.set(true);
    }
    fn pdu_freed(&self) {}
}

/// Feeds `data`, cut into frames by their size fields, to a fresh session
/// on `fsdev` (a `-fsdev` string), then lets everything finish and resets
/// the session. Every reply must be a well-formed frame.
pub fn session(fsdev: &str, data: &[u8]) {
    let exec = Executor::new(RuntimeConfig {
        max_workers: 4,
        ..RuntimeConfig::default()
    })
    .expect("executor");
    let export =
        Export::open(ExportOptions::parse(fsdev).expect("fsdev"), Compat::Master).expect("export");
    let sink = Rc::new(Sink::default());
    let s = V9fsState::new(exec.handle(), export, sink.clone());
    let mut rest = data;
    while rest.len() >= HEADER_SIZE && !sink.broken.get() {
        let size = (u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize)
            .clamp(HEADER_SIZE, rest.len());
        let (frame, tail) = rest.split_at(size);
        rest = tail;
        // A whole PDU pool in flight: let some finish first.
        let idx = loop {
            if let Some(idx) = s.pdu_alloc() {
                break idx;
            }
            let _ = exec.turn(Some(Duration::from_millis(1)));
        };
        s.pdu_submit(idx, frame.to_vec());
    }
    for _ in 0..200 {
        if s.active_requests() == 0 {
            break;
        }
        let _ = exec.turn(Some(Duration::from_millis(1)));
    }
    s.disconnect();
    for _ in 0..1000 {
        if exec.stats().tasks == 0 {
            break;
        }
        let _ = exec.turn(Some(Duration::from_millis(1)));
    }
    assert_eq!(
        exec.stats().tasks,
        0,
        "requests still running after the reset"
    );
    for r in sink.replies.borrow().iter() {
        if r.is_empty() {
            continue; // a discarded (flushed) request
        }
        let size = u32::from_le_bytes(r[..4].try_into().unwrap()) as usize;
        assert_eq!(size, r.len(), "a reply's size field is its length");
    }
}

/// A small local export for [`session`], made once per process.
pub fn local_fixture() -> String {
    use std::sync::OnceLock;
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("coro9p-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("d/e")).expect("fixture");
        std::fs::write(dir.join("f"), b"0123456789").expect("fixture");
        std::fs::write(dir.join("d/g"), b"").expect("fixture");
        let _ = std::os::unix::fs::symlink("f", dir.join("l"));
        dir
    });
    format!("local,path={},security_model=mapped-xattr", dir.display())
}

/// A whole frame: header and body.
fn frame(id: u8, tag: u16, body: &[u8]) -> Vec<u8> {
    let mut v = ((HEADER_SIZE + body.len()) as u32).to_le_bytes().to_vec();
    v.push(id);
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// The fuzzer's bytes, read as choices; past the end every read is 0.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u8(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b.to_vec()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.u8() as usize % items.len()]
    }
}

/// Little-endian body builder.
#[derive(Default)]
struct Body(Vec<u8>);

impl Body {
    fn b(mut self, v: u8) -> Body {
        self.0.push(v);
        self
    }
    fn w(mut self, v: u16) -> Body {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn d(mut self, v: u32) -> Body {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn q(mut self, v: u64) -> Body {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn s(self, v: &str) -> Body {
        let mut b = self.w(v.len() as u16);
        b.0.extend_from_slice(v.as_bytes());
        b
    }
}

/// A well-formed request with fuzzer-chosen fields, so that sessions get
/// past Tversion and Tattach quickly; fids and tags come from small sets
/// so that they collide.
fn template(r: &mut Input) -> Vec<u8> {
    const NAMES: &[&str] = &[
        "WALK0",
        "LOPEN",
        "WRITE",
        "FLUSH",
        "ReadDirDir",
        "ReadDirFile7",
        "stat",
        "xattr_count",
        "..",
        "nope",
    ];
    let tag = r.pick(&[0u16, 1, 2, 3, 4, 5, 0xffff]);
    let fid = |r: &mut Input| u32::from(r.u8() % 6);
    let b = Body::default();
    let (id, body) = match r.u8() % 15 {
        0 => (
            100,
            b.d(r.pick(&[4096, 8192, 16384, 65536, 1 << 20, u32::MAX, 100]))
                .s(r.pick(&["9P2000.L", "9P2000.u", "9P2000", "bogus"])),
        ),
        1 => (
            104,
            b.d(fid(r))
                .d(u32::MAX)
                .s("")
                .s("")
                .d(r.pick(&[0, 1000, u32::MAX])),
        ),
        2 => {
            let (f, newfid, n) = (fid(r), fid(r), r.u8() % 4);
            let mut b = b.d(f).d(newfid).w(u16::from(n));
            for _ in 0..n {
                b = b.s(r.pick(NAMES));
            }
            (110, b)
        }
        3 => (
            12,
            b.d(fid(r))
                .d(r.pick(&[0, 1, 2, 0o200000, 0o100, 0o1000, 0xffff_ffff])),
        ),
        4 => (
            116,
            b.d(fid(r)).q(r.pick(&[0, 1, 100, u64::MAX])).d(r.pick(&[
                0,
                1,
                8,
                4096,
                65536,
                u32::MAX,
            ])),
        ),
        5 => {
            let (f, off, n) = (fid(r), r.pick(&[0u64, 1, 1 << 40]), r.u8() % 32);
            let data = vec![r.u8(); usize::from(n)];
            let mut b = b.d(f).q(off).d(u32::from(n));
            b.0.extend_from_slice(&data);
            (118, b)
        }
        6 => (
            40,
            b.d(fid(r))
                .q(r.pick(&[0, 1, 5, u64::MAX]))
                .d(r.pick(&[0, 11, 100, 4096, u32::MAX])),
        ),
        7 => (24, b.d(fid(r)).q(r.pick(&[0x7ff, 0x3fff, u64::MAX]))),
        8 => (
            30,
            b.d(fid(r))
                .d(fid(r))
                .s(r.pick(&["", "user.a", "security.x"])),
        ),
        9 => (
            32,
            b.d(fid(r))
                .s(r.pick(&["user.a", "security.x", ""]))
                .q(r.pick(&[0, 1, 10, 65536, 65537, u64::MAX]))
                .d(r.pick(&[0, 1, 2, 3, 4])),
        ),
        10 => (120, b.d(fid(r))),
        11 => (108, b.w(r.pick(&[0u16, 1, 2, 3, 4, 5, 0xffff]))),
        12 => (8, b.d(fid(r))),
        13 => (112, b.d(fid(r)).b(r.u8())),
        _ => (124, b.d(fid(r))),
    };
    frame(id, tag, &body.0)
}

/// Drives the C ABI the way a C transport would, with a fuzzer-chosen
/// sequence of `coro9p_new`, `pdu_alloc`, `pdu_submit`, `pdu_free`,
/// `dispatch`, `wait`, `reset`, misuses, and finally `destroy`, on the synth
/// export, and checks after every step: each submitted PDU is pushed
/// exactly once, with a reply that fits and matches its header; a PDU is
/// refused exactly when `max_pdus` are in use; a reset leaves no request
/// and no fid; misuses get their errno; no callback comes after destroy.
/// It switches logging off: every refused misuse would log a line.
pub fn ffi(data: &[u8]) {
    use host::{Host, HostOptions, Misuse, Use};
    use std::ffi::c_int;

    let mut r = Input(data);
    let flags = r.u8();
    let opts = HostOptions {
        compat: c_int::from(flags & 1),
        msize_limit: (flags & 2 != 0).then(|| r.pick(&[4096, 8192, 65536, 4_186_112])),
        response_buffer_size: flags & 4 != 0,
        transport_error: flags & 8 != 0,
    };
    let max_pdus = usize::from(r.u8()) % crate::server::MAX_REQ + 1;
    let max_fids = u32::from(r.u8() % 6);
    let max_msize = r.pick(&[0u32, 4096, 8192, 65536]);
    let mut fsdev = format!("synth,max_pdus={max_pdus},max_fids={max_fids}");
    if max_msize > 0 {
        fsdev.push_str(&format!(",max_msize={max_msize}"));
    }
    let mut host = Host::new(&fsdev, &opts).expect("coro9p_new refused a good fsdev string");
    // coro9p_new's logger would print every refused misuse.
    log::set_max_level(log::LevelFilter::Off);
    let pick_slot = |r: &mut Input, host: &Host, state: Use| {
        let all = host.slots_in(state);
        (!all.is_empty()).then(|| all[usize::from(r.u8()) % all.len()].0)
    };
    // Slots a PDU pointer is known for (any ever handed out).
    let mut seen: Vec<usize> = Vec::new();
    for _ in 0..512 {
        let Some(op) = r.byte() else { break };
        match op % 10 {
            0 => {
                let active = host.stats().active_requests as usize;
                let got = host.alloc();
                assert_eq!(
                    got.is_some(),
                    active < max_pdus,
                    "alloc with {active} of {max_pdus} PDUs in use"
                );
                if let Some(i) = got {
                    if !seen.contains(&i) {
                        seen.push(i);
                    }
                }
            }
            1 | 2 => {
                let Some(idx) = pick_slot(&mut r, &host, Use::Allocated) else {
                    continue;
                };
                let frame = template(&mut r);
                let hdr = (
                    u32::from_le_bytes(frame[..4].try_into().unwrap()),
                    frame[4],
                    u16::from_le_bytes([frame[5], frame[6]]),
                );
                let room = r.pick(&[0usize, 6, 7, 11, 64, 4096, 8192, 65536]);
                let (outc, inc) = (usize::from(r.u8() % 4), usize::from(r.u8() % 4));
                assert_eq!(host.submit(idx, hdr, frame, outc, room, inc), 0, "submit");
            }
            3 => {
                let Some(idx) = pick_slot(&mut r, &host, Use::Allocated) else {
                    continue;
                };
                // A raw request: any type, a size field that may lie, any
                // body, sometimes shorter than a header.
                let id = r.u8();
                let tag = r.pick(&[0u16, 1, 2, 0xffff]);
                let body_len = usize::from(r.u8());
                let body = r.bytes(body_len);
                let mut req = frame(id, tag, &body);
                let size = if r.u8() & 1 == 0 {
                    req.len() as u32
                } else {
                    r.u32()
                };
                req[..4].copy_from_slice(&size.to_le_bytes());
                if r.u8() % 16 == 0 {
                    req.truncate(usize::from(r.u8()) % HEADER_SIZE);
                }
                let short = req.len() < HEADER_SIZE;
                let room = r.pick(&[0usize, 7, 64, 4096, 65536]);
                let rc = host.submit(idx, (size, id, tag), req, 1, room, 1);
                let want = if short { -libc::ENOBUFS } else { 0 };
                assert_eq!(rc, want, "raw submit (short: {short})");
            }
            4 => {
                let Some(idx) = pick_slot(&mut r, &host, Use::Allocated) else {
                    continue;
                };
                assert_eq!(host.free(idx), 0, "pdu_free");
            }
            5 => assert_eq!(host.dispatch(), 0, "dispatch"),
            6 => {
                // A timeout only when something may come: an idle wait
                // would just sleep.
                let busy = !host.slots_in(Use::Submitted).is_empty();
                let ms = if busy { c_int::from(r.u8() % 3) } else { 0 };
                assert_eq!(host.wait(ms), 0, "wait");
            }
            7 => {
                let held = host.slots_in(Use::Allocated);
                let in_flight = host.slots_in(Use::Submitted);
                if !held.is_empty() {
                    assert_eq!(host.reset(), -libc::EBUSY, "reset with PDUs held");
                } else if in_flight.iter().all(|&(_, id)| id != 118) {
                    // (A Twrite to /FLUSH runs until flushed, and a reset
                    // does not cancel: it would wait forever, as QEMU's.)
                    assert_eq!(host.reset(), 0, "reset");
                    let st = host.stats();
                    assert!(host.slots_in(Use::Submitted).is_empty(), "not pushed");
                    assert_eq!((st.active_requests, st.fids), (0, 0), "after reset");
                }
            }
            8 => {
                let m = match r.u8() % 5 {
                    0 => seen
                        .iter()
                        .copied()
                        .find(|&i| host.state(i) != Use::Allocated)
                        .map(Misuse::SubmitNotAllocated),
                    1 => seen
                        .iter()
                        .copied()
                        .find(|&i| host.state(i) != Use::Allocated)
                        .map(Misuse::FreeNotAllocated),
                    2 => pick_slot(&mut r, &host, Use::Allocated).map(Misuse::SubmitWithoutHeader),
                    3 => seen.first().copied().map(Misuse::MisalignedPdu),
                    _ => Some(Misuse::NullServer),
                };
                if let Some(m) = m {
                    assert_eq!(host.misuse(m), -libc::EINVAL, "{m:?}");
                }
            }
            _ => {
                // Let what is in flight move on a little.
                for _ in 0..5 {
                    if host.slots_in(Use::Submitted).is_empty() {
                        break;
                    }
                    assert_eq!(host.wait(1), 0, "wait");
                }
            }
        }
        host.check();
        let st = host.stats();
        let ours = host.slots_in(Use::Allocated).len() + host.slots_in(Use::Submitted).len();
        let active = st.active_requests as usize;
        assert!(
            ours <= active && active <= max_pdus,
            "{active} PDUs active: {ours} held or in flight, at most {max_pdus}"
        );
        assert!(max_fids == 0 || st.fids <= max_fids, "{} fids", st.fids);
    }
    assert_eq!(host.destroy(), 0, "destroy");
    host.check();
    assert!(
        host.slots_in(Use::Submitted).is_empty(),
        "requests never pushed"
    );
    let (submitted, pushed) = host.counts();
    assert_eq!(submitted, pushed, "submits vs pushes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_of_frames_runs_to_the_end() {
        let mut data = frame(100, 0xffff, b"\x00\x20\x00\x00\x08\x009P2000.L");
        data.extend(frame(
            104,
            0,
            b"\x00\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00",
        ));
        data.extend(frame(
            24,
            1,
            b"\x00\x00\x00\x00\xff\x07\x00\x00\x00\x00\x00\x00",
        ));
        data.extend([1, 2, 3]);
        session("synth", &data);
        session(&local_fixture(), &data);
        decode(&[110, 2, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, b'a']);
    }

    /// The ffi target's seed: msize_limit 65536 and response_buffer_size
    /// set, max_pdus 4; then alloc + Tversion, Tattach, settle, Twalk to
    /// ReadDirDir, settle, Tlopen, settle, Treaddir, reset, alloc and three
    /// misuses, destroy.
    pub(crate) const FFI_SEED: &[u8] = &[
        0x06, 2, 3, 0, 0, //
        0, 1, 0, 6, 0, 3, 0, 5, 0, 0, //
        0, 1, 0, 0, 1, 0, 0, 5, 0, 0, //
        9, //
        0, 1, 0, 1, 2, 0, 1, 1, 4, 5, 0, 0, //
        9, //
        0, 1, 0, 2, 3, 1, 3, 5, 0, 0, //
        9, //
        0, 1, 0, 3, 6, 1, 0, 3, 6, 0, 0, //
        7, //
        0, 8, 2, 0, 8, 4, 8, 3,
    ];

    #[test]
    fn an_ffi_sequence_runs_to_the_end() {
        ffi(FFI_SEED);
        ffi(&[]);
        ffi(&[0xff; 64]);
    }
}
