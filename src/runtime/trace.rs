//! Hop tracing: every thread hop of every task, as data.
//!
//! When tracing is off, recording an event is one relaxed atomic load and a
//! branch. When it is on, events go into a bounded buffer (the oldest are
//! kept; what does not fit is counted in [`Tracer::dropped`]) and can be
//! written out as JSON lines, one event per line:
//!
//! ```text
//! {"task":7,"label":"tag 3 Twalk","event":"to_worker","thread":"main","ns":18234}
//! {"task":7,"label":"tag 3 Twalk","event":"job_start","thread":"worker-1","ns":21877}
//! ```
//!
//! `ns` counts from the tracer's creation on the monotonic clock, so events of
//! different threads are on one time line.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::TaskId;

/// What happened at one point of a task's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopKind {
    /// The task was entered for the first time (main thread).
    Enter,
    /// The task suspended and its job was handed to the worker pool (main).
    ToWorker,
    /// A worker started the task's job.
    JobStart,
    /// A worker finished the job and posted the result to the main thread.
    JobEnd,
    /// The task resumed on the main thread with the job's result.
    ToMain,
    /// The task parked on a co-queue or coroutine lock (main).
    Park,
    /// The task was woken from a co-queue or lock (main).
    Wake,
    /// The task ended (main).
    Finish,
    /// A named mark set by the code running the task (request arrival,
    /// reply, cancellation, discard, ...).
    Mark(&'static str),
}

impl HopKind {
    /// The name used in the JSON lines output.
    pub fn name(self) -> &'static str {
        match self {
            HopKind::Enter => "enter",
            HopKind::ToWorker => "to_worker",
            HopKind::JobStart => "job_start",
            HopKind::JobEnd => "job_end",
            HopKind::ToMain => "to_main",
            HopKind::Park => "park",
            HopKind::Wake => "wake",
            HopKind::Finish => "finish",
            HopKind::Mark(name) => name,
        }
    }
}

/// The thread an event happened on: 0 is the main thread, `n` is worker `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadRef(pub u32);

impl ThreadRef {
    /// The main thread (whichever thread drives the executor).
    pub const MAIN: ThreadRef = ThreadRef(0);

    /// The thread this is called on: a worker's number on a pool thread,
    /// [`ThreadRef::MAIN`] anywhere else.
    ///
    /// Never inlined: a task may resume on another host thread than the one
    /// it suspended on (QEMU resets the device from a vCPU thread), and an
    /// inlined thread-local address could be kept across the suspension.
    /// QEMU's coroutine-TLS macros exist for the same reason.
    #[inline(never)]
    pub fn current() -> ThreadRef {
        WORKER_NUMBER.with(|n| ThreadRef(n.get()))
    }

    pub(crate) fn set_current_worker(number: u32) {
        WORKER_NUMBER.with(|n| n.set(number));
    }

    /// `main` or `worker-N`, as written in traces.
    pub fn name(self) -> String {
        if self == ThreadRef::MAIN {
            "main".to_string()
        } else {
            format!("worker-{}", self.0)
        }
    }
}

thread_local! {
    // Set once when a pool thread starts; only read for trace records.
    static WORKER_NUMBER: Cell<u32> = const { Cell::new(0) };
}

/// One recorded hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// The task it belongs to.
    pub task: TaskId,
    /// What happened.
    pub kind: HopKind,
    /// Where it happened.
    pub thread: ThreadRef,
    /// Nanoseconds since the tracer was created.
    pub ns: u64,
}

/// The bounded hop recorder shared by the main thread and the workers.
pub struct Tracer {
    enabled: AtomicBool,
    start: Instant,
    capacity: usize,
    events: Mutex<Vec<TraceEvent>>,
    labels: Mutex<HashMap<TaskId, String>>,
    dropped: AtomicU64,
}

impl Tracer {
    /// A tracer that keeps at most `capacity` events, off until
    /// [`Tracer::enable`].
    pub fn new(capacity: usize) -> Tracer {
        Tracer {
            enabled: AtomicBool::new(false),
            start: Instant::now(),
            capacity,
            events: Mutex::new(Vec::new()),
            labels: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
        }
    }

    /// Starts or stops recording.
    pub fn enable(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether events are being recorded.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Records one event if tracing is on.
    #[inline]
    pub fn record(&self, task: TaskId, kind: HopKind, thread: ThreadRef) {
        if self.enabled() {
            self.record_slow(task, kind, thread);
        }
    }

    #[cold]
    fn record_slow(&self, task: TaskId, kind: HopKind, thread: ThreadRef) {
        let ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut events = lock(&self.events);
        if events.len() < self.capacity {
            events.push(TraceEvent {
                task,
                kind,
                thread,
                ns,
            });
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Names a task in the trace (a request's tag and message type, say).
    pub fn set_label(&self, task: TaskId, label: String) {
        if self.enabled() {
            lock(&self.labels).insert(task, label);
        }
    }

    /// How many events did not fit in the buffer.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Takes the recorded events out of the buffer, oldest first.
    pub fn take_events(&self) -> Vec<TraceEvent> {
        std::mem::take(&mut *lock(&self.events))
    }

    /// The label given to `task`, if any.
    pub fn label(&self, task: TaskId) -> Option<String> {
        lock(&self.labels).get(&task).cloned()
    }

    /// Writes the recorded events (and empties the buffer) as JSON lines.
    pub fn write_jsonl(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut events = self.take_events();
        // Workers append under the same lock, but a worker's clock read and
        // its push are not atomic together; order by time for readers.
        events.sort_by_key(|e| e.ns);
        let labels = lock(&self.labels);
        for e in &events {
            let label = labels.get(&e.task).map(String::as_str).unwrap_or("");
            let kind = match e.kind {
                HopKind::Mark(_) => "mark",
                k => k.name(),
            };
            write!(
                out,
                "{{\"task\":{},\"label\":\"{}\",\"event\":\"{}\"",
                e.task.0,
                JsonStr(label),
                kind
            )?;
            if let HopKind::Mark(name) = e.kind {
                write!(out, ",\"mark\":\"{}\"", JsonStr(name))?;
            }
            writeln!(out, ",\"thread\":\"{}\",\"ns\":{}}}", e.thread.name(), e.ns)?;
        }
        Ok(())
    }
}

/// A poisoned trace lock only means a panic elsewhere; the data is plain.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Escapes a string for a JSON string literal.
struct JsonStr<'a>(&'a str);

impl std::fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_tracer_records_nothing() {
        let t = Tracer::new(8);
        t.record(TaskId(1), HopKind::Enter, ThreadRef::MAIN);
        assert!(t.take_events().is_empty());
    }

    #[test]
    fn buffer_is_bounded_and_counts_what_it_drops() {
        let t = Tracer::new(2);
        t.enable(true);
        for _ in 0..5 {
            t.record(TaskId(1), HopKind::Enter, ThreadRef::MAIN);
        }
        assert_eq!(t.take_events().len(), 2);
        assert_eq!(t.dropped(), 3);
    }

    #[test]
    fn jsonl_escapes_labels_and_names_threads() {
        let t = Tracer::new(8);
        t.enable(true);
        t.set_label(TaskId(4), "tag \"7\"\n".to_string());
        t.record(TaskId(4), HopKind::JobStart, ThreadRef(3));
        t.record(TaskId(4), HopKind::Mark("reply"), ThreadRef::MAIN);
        let mut out = Vec::new();
        t.write_jsonl(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(
            "{\"task\":4,\"label\":\"tag \\\"7\\\"\\n\",\"event\":\"job_start\",\"thread\":\"worker-3\",\"ns\":"
        ));
        assert!(lines[1].contains("\"event\":\"mark\",\"mark\":\"reply\",\"thread\":\"main\""));
    }
}
