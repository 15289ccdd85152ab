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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u8, tag: u16, body: &[u8]) -> Vec<u8> {
        let mut v = ((7 + body.len()) as u32).to_le_bytes().to_vec();
        v.push(id);
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(body);
        v
    }

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
}
