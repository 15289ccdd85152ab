//! Ordering between tasks: QEMU's wake-up rule, the coroutine mutex and the
//! coroutine reader/writer lock.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use coro9p::runtime::{CoMutex, CoQueue, CoRwLock, Executor, RuntimeConfig};

type Log = Rc<RefCell<Vec<String>>>;

fn push(log: &Log, what: impl Into<String>) {
    log.borrow_mut().push(what.into());
}

fn executor() -> Executor {
    Executor::new(RuntimeConfig::default()).unwrap()
}

/// A task woken from inside another task runs right after the waker
/// suspends, before a job completion or a ready task that was already
/// waiting; tasks it wakes in turn run before the waker's later wakeups
/// (depth first).
#[test]
fn a_task_woken_from_a_task_runs_right_after_the_waker_suspends() {
    let exec = executor();
    let log: Log = Rc::default();
    let (qw, qv, qu, qy) = (
        Rc::new(CoQueue::new()),
        Rc::new(CoQueue::new()),
        Rc::new(CoQueue::new()),
        Rc::new(CoQueue::new()),
    );

    // W waits on qw; when woken it wakes V.
    let w = {
        let (log, qw, qv) = (log.clone(), qw.clone(), qv.clone());
        exec.enter(move |co| {
            qw.wait(co);
            push(&log, "W woken");
            qv.next(co.handle());
            push(&log, "W end");
        })
    };
    let v = {
        let (log, qv) = (log.clone(), qv.clone());
        exec.enter(move |co| {
            qv.wait(co);
            push(&log, "V woken");
        })
    };
    let u = {
        let (log, qu) = (log.clone(), qu.clone());
        exec.enter(move |co| {
            qu.wait(co);
            push(&log, "U woken");
        })
    };
    // Y is woken from outside any task: it belongs to the next turn.
    let y = {
        let (log, qy) = (log.clone(), qy.clone());
        exec.enter(move |co| {
            qy.wait(co);
            push(&log, "Y woken");
        })
    };
    qy.next(&exec);
    // C's job finishes before B runs: its completion is already posted.
    let job_done = Arc::new(AtomicBool::new(false));
    let c = {
        let (log, job_done) = (log.clone(), job_done.clone());
        exec.enter(move |co| {
            co.run_in_worker(move || job_done.store(true, Ordering::SeqCst));
            push(&log, "C resumed");
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !job_done.load(Ordering::SeqCst) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(job_done.load(Ordering::SeqCst));

    let b = {
        let (log, qw, qu) = (log.clone(), qw.clone(), qu.clone());
        exec.enter(move |co| {
            push(&log, "B start");
            qw.next(co.handle());
            qu.next(co.handle());
            push(&log, "B before hop");
            co.run_in_worker(|| ());
            push(&log, "B after hop");
        })
    };
    // enter() returned: B suspended on its hop, and everything it woke has
    // already run, depth first; nothing else has.
    assert_eq!(
        *log.borrow(),
        [
            "B start",
            "B before hop",
            "W woken",
            "W end",
            "V woken",
            "U woken"
        ]
    );
    exec.run_until(|| [&w, &v, &u, &y, &c, &b].iter().all(|t| t.is_finished()))
        .unwrap();
    let log = log.borrow();
    let mut rest = log[6..].to_vec();
    rest.sort();
    assert_eq!(rest, ["B after hop", "C resumed", "Y woken"]);
}

/// A task that wakes another and then ends: the woken one runs before
/// anything else, even a task that was made ready earlier in the same turn
/// (the Tflush pattern: the request's reply, then at once the Rflush).
#[test]
fn a_task_woken_by_a_finishing_task_runs_before_other_events() {
    let exec = executor();
    let log: Log = Rc::default();
    let q = Rc::new(CoQueue::new());
    let waiter = {
        let (log, q) = (log.clone(), q.clone());
        exec.enter(move |co| {
            q.wait(co);
            push(&log, "flush: woken");
        })
    };
    let q2 = Rc::new(CoQueue::new());
    let other = {
        let (log, q2) = (log.clone(), q2.clone());
        exec.enter(move |co| {
            q2.wait(co);
            push(&log, "other: woken");
        })
    };
    let job_done = Arc::new(AtomicBool::new(false));
    let request = {
        let (log, q, job_done) = (log.clone(), q.clone(), job_done.clone());
        exec.enter(move |co| {
            co.run_in_worker(move || job_done.store(true, Ordering::SeqCst));
            push(&log, "request: reply");
            q.next(co.handle());
            push(&log, "request: end");
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !job_done.load(Ordering::SeqCst) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    // Made ready before the turn that resumes the request.
    q2.next(&exec);
    exec.turn(Some(Duration::ZERO)).unwrap();
    assert!([&waiter, &other, &request].iter().all(|t| t.is_finished()));
    assert_eq!(
        *log.borrow(),
        [
            "request: reply",
            "request: end",
            "flush: woken",
            "other: woken"
        ]
    );
}

/// Mutual exclusion, FIFO order, and hand-off: a holder that unlocks and
/// locks again queues behind the tasks already waiting.
#[test]
fn comutex_is_exclusive_and_fifo() {
    let exec = executor();
    let log: Log = Rc::default();
    let m = Rc::new(CoMutex::new());
    let tasks: Vec<_> = (1..=4)
        .map(|i| {
            let (log, m) = (log.clone(), m.clone());
            exec.enter(move |co| {
                let g = m.lock(co);
                push(&log, format!("T{i} in"));
                co.run_in_worker(|| ()); // held across a hop
                push(&log, format!("T{i} out"));
                drop(g);
                if i == 1 {
                    let _again = m.lock(co);
                    push(&log, "T1 again");
                }
            })
        })
        .collect();
    // Entered while T1 holds the lock: waits behind T2..T4.
    let late = {
        let (log, m) = (log.clone(), m.clone());
        exec.enter(move |co| {
            let _g = m.lock(co);
            push(&log, "T5 in");
        })
    };
    exec.run_until(|| tasks.iter().all(|t| t.is_finished()) && late.is_finished())
        .unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "T1 in", "T1 out", "T2 in", "T2 out", "T3 in", "T3 out", "T4 in", "T4 out", "T5 in",
            "T1 again"
        ]
    );
    assert!(!m.is_locked());
}

/// Readers share; a writer waits for them; readers that come after a
/// waiting writer wait for it; readers queued together enter together.
#[test]
fn corwlock_shares_reads_and_orders_writers_fairly() {
    let exec = executor();
    let log: Log = Rc::default();
    let l = Rc::new(CoRwLock::new());
    let mut tasks = Vec::new();
    for name in ["R1", "R2", "W1", "R3", "R4", "W2"] {
        let (log, l) = (log.clone(), l.clone());
        tasks.push(exec.enter(move |co| {
            let write = name.starts_with('W');
            let (r, w) = if write {
                (None, Some(l.write(co)))
            } else {
                (Some(l.read(co)), None)
            };
            push(&log, format!("{name} in"));
            co.run_in_worker(|| ());
            push(&log, format!("{name} out"));
            drop((r, w));
        }));
    }
    // Entered all at once: R1 and R2 hold it, the rest wait.
    assert_eq!(*log.borrow(), ["R1 in", "R2 in"]);
    assert_eq!(l.readers(), 2);
    exec.run_until(|| tasks.iter().all(|t| t.is_finished()))
        .unwrap();
    let log = log.borrow();
    let at = |s: &str| log.iter().position(|x| x == s).unwrap();
    // W1 after both first readers.
    assert!(at("W1 in") > at("R1 out") && at("W1 in") > at("R2 out"));
    // W1 alone.
    assert_eq!(at("W1 out"), at("W1 in") + 1);
    // R3 came while only readers held the lock, but behind waiting W1.
    assert!(at("R3 in") > at("W1 out"));
    // R3 and R4 share.
    assert!(at("R4 in") < at("R3 out") && at("R3 in") < at("R4 out"));
    // W2 last, alone.
    assert!(at("W2 in") > at("R3 out") && at("W2 in") > at("R4 out"));
    assert_eq!(at("W2 out"), log.len() - 1);
    assert_eq!(l.readers(), 0);
    assert!(!l.is_write_locked());
}

#[test]
fn coqueue_restart_all_wakes_in_queue_order() {
    let exec = executor();
    let log: Log = Rc::default();
    let q = Rc::new(CoQueue::new());
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let (log, q) = (log.clone(), q.clone());
            exec.enter(move |co| {
                q.wait(co);
                push(&log, format!("{i}"));
            })
        })
        .collect();
    assert_eq!(q.len(), 4);
    let waker = {
        let q = q.clone();
        exec.enter(move |co| q.restart_all(co.handle()))
    };
    assert_eq!(waker.take_result().unwrap(), Ok(4));
    assert!(tasks.iter().all(|t| t.is_finished()));
    assert_eq!(*log.borrow(), ["0", "1", "2", "3"]);
    assert!(!q.next(&exec), "nobody left to wake");
}
