//! The runtime's contract: where code runs, how many stacks exist, panics,
//! cancellation, event sources, host-driven dispatch and tracing.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use coro9p::runtime::{CoQueue, Executor, HopKind, RuntimeConfig, TaskError, TaskOpts, ThreadRef};
use mio::{Events, Interest, Poll, Token};

fn executor() -> Executor {
    Executor::new(RuntimeConfig::default()).unwrap()
}

#[test]
fn code_around_run_in_worker_runs_on_main_and_the_job_on_a_worker() {
    let exec = executor();
    let main = thread::current().id();
    let task = exec.enter(|co| {
        let before = thread::current().id();
        let (on_worker, name) = co.run_in_worker(|| {
            let t = thread::current();
            (t.id(), t.name().map(String::from))
        });
        let after = thread::current().id();
        (before, on_worker, name, after)
    });
    exec.run_until(|| task.is_finished()).unwrap();
    let (before, on_worker, name, after) = task.take_result().unwrap().unwrap();
    assert_eq!(before, main);
    assert_eq!(after, main);
    assert_ne!(on_worker, main);
    assert!(name.unwrap().starts_with("coro9p-worker-"));
}

/// The calling thread's blocked-signal mask, from /proc (SigBlk).
fn blocked_signals() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
    u64::from_str_radix(line["SigBlk:".len()..].trim(), 16).unwrap()
}

#[test]
fn workers_block_every_signal_and_main_keeps_its_mask() {
    let exec = executor();
    let main_before = blocked_signals();
    let task = exec.enter(|co| co.run_in_worker(blocked_signals));
    exec.run_until(|| task.is_finished()).unwrap();
    let on_worker = task.take_result().unwrap().unwrap();
    // Every standard signal a thread can block (not SIGKILL, SIGSTOP; glibc
    // keeps two real-time signals of its own unblockable, so those are not
    // checked).
    let standard: u64 = (1 << 31) - 1;
    let unblockable = (1 << (libc::SIGKILL - 1)) | (1 << (libc::SIGSTOP - 1));
    assert_eq!(
        (on_worker & standard) | unblockable,
        standard,
        "worker SigBlk {on_worker:x}"
    );
    assert_eq!(
        blocked_signals(),
        main_before,
        "the spawning thread's mask changed"
    );
}

#[test]
fn ten_thousand_tasks_of_ten_hops_with_a_bounded_stack_pool() {
    const TASKS: u64 = 10_000;
    const HOPS: u64 = 10;
    const MAX_STACKS: usize = 512;
    let exec = Executor::new(RuntimeConfig {
        max_stacks: MAX_STACKS,
        ..RuntimeConfig::default()
    })
    .unwrap();
    for round in 0..2 {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                exec.enter(move |co| {
                    let mut acc = t;
                    for h in 0..HOPS {
                        // Each hop's result depends on the one before.
                        acc = co.run_in_worker(move || acc * 3 + h);
                    }
                    acc
                })
            })
            .collect();
        assert_eq!(exec.stats().tasks, TASKS as usize, "all entered and alive");
        exec.run_until(|| tasks.iter().all(|t| t.is_finished()))
            .unwrap();
        for (t, task) in tasks.iter().enumerate() {
            let want = (0..HOPS).fold(t as u64, |acc, h| acc * 3 + h);
            assert_eq!(task.take_result().unwrap().unwrap(), want, "task {t}");
        }
        let stats = exec.stats();
        assert_eq!(stats.tasks, 0);
        assert_eq!(stats.stacks.in_use, 0);
        assert_eq!(
            stats.stacks.peak_in_use, MAX_STACKS,
            "round {round}: the bound was reached, so tasks waited for stacks"
        );
        assert!(
            stats.stacks.allocated_total <= MAX_STACKS as u64,
            "round {round}: {} stacks allocated for a pool of {MAX_STACKS}",
            stats.stacks.allocated_total
        );
        assert!(stats.workers_spawned_total <= 64);
    }
}

#[test]
fn tasks_beyond_the_stack_bound_start_in_entry_order() {
    let exec = Executor::new(RuntimeConfig {
        max_stacks: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let gate = Rc::new(CoQueue::new());
    let started = Rc::new(RefCell::new(Vec::new()));
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let gate = Rc::clone(&gate);
            let started = Rc::clone(&started);
            exec.enter(move |co| {
                started.borrow_mut().push(i);
                gate.wait(co);
            })
        })
        .collect();
    assert_eq!(*started.borrow(), [0, 1], "only two stacks exist");
    while !tasks.iter().all(|t| t.is_finished()) {
        gate.next(&exec);
        exec.turn(Some(Duration::from_secs(5))).unwrap();
    }
    assert_eq!(*started.borrow(), [0, 1, 2, 3, 4]);
    assert_eq!(exec.stats().stacks.allocated_total, 2);
}

#[test]
fn a_panicking_task_and_a_panicking_job_are_contained() {
    let exec = executor();
    let dropped = Rc::new(Cell::new(false));
    struct SetOnDrop(Rc<Cell<bool>>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let guard = SetOnDrop(Rc::clone(&dropped));
    let task_panic = exec.enter(move |_co| -> u32 {
        let _guard = guard;
        panic!("task panic (expected by this test)")
    });
    assert!(dropped.get(), "the panicking task's stack was unwound");
    let job_panic = exec.enter(|co| {
        let x: u32 = co.run_in_worker(|| panic!("job panic (expected by this test)"));
        x + 1
    });
    exec.run_until(|| job_panic.is_finished()).unwrap();
    assert_eq!(
        task_panic.take_result().unwrap(),
        Err(TaskError::Panicked(
            "task panic (expected by this test)".into()
        ))
    );
    assert_eq!(
        job_panic.take_result().unwrap(),
        Err(TaskError::Panicked(
            "job panic (expected by this test)".into()
        ))
    );
    // The executor goes on serving, and no stack leaked.
    let after = exec.enter(|co| co.run_in_worker(|| 40) + 2);
    exec.run_until(|| after.is_finished()).unwrap();
    assert_eq!(after.take_result().unwrap(), Ok(42));
    assert_eq!(exec.stats().stacks.in_use, 0);
    assert_eq!(exec.stats().tasks, 0);
}

#[test]
fn a_job_on_a_worker_sees_the_cancellation_flag_set_from_main() {
    let exec = executor();
    let (started_tx, started_rx) = mpsc::channel();
    let task = exec.enter(move |co| {
        assert!(!co.is_cancelled());
        let flag = co.cancel_flag().clone();
        let seen = co.run_in_worker(move || {
            started_tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !flag.is_cancelled() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            flag.is_cancelled()
        });
        (seen, co.is_cancelled())
    });
    started_rx.recv().unwrap();
    assert!(!task.is_finished());
    task.cancel();
    exec.run_until(|| task.is_finished()).unwrap();
    assert_eq!(task.take_result().unwrap(), Ok((true, true)));
}

#[test]
fn a_given_cancel_flag_is_the_tasks_flag() {
    let exec = executor();
    let flag = coro9p::runtime::CancelFlag::new();
    flag.cancel();
    let task = exec.enter_with(
        TaskOpts {
            cancel: Some(flag.clone()),
            ..TaskOpts::default()
        },
        |co| co.is_cancelled(),
    );
    assert_eq!(task.take_result().unwrap(), Ok(true));
    flag.clear();
    assert!(!task.cancel_flag().is_cancelled());
}

#[test]
fn event_sources_call_back_on_the_main_thread() {
    let exec = executor();
    let (ours, mut theirs) = mio::net::UnixStream::pair().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&ours);
    let got = Rc::new(RefCell::new(Vec::new()));
    let main = thread::current().id();
    let sink = Rc::clone(&got);
    let handle = exec.handle();
    let token = exec
        .register(
            &mut mio::unix::SourceFd(&fd),
            Interest::READABLE,
            move |event| {
                assert!(event.is_readable());
                assert_eq!(thread::current().id(), main);
                let mut buf = [0u8; 64];
                let n = (&ours).read(&mut buf).unwrap();
                let data = buf[..n].to_vec();
                let sink = Rc::clone(&sink);
                // As a transport would: a task per message, entered at once.
                handle.enter(move |co| {
                    let upper = co.run_in_worker(move || data.to_ascii_uppercase());
                    sink.borrow_mut().extend(upper);
                });
            },
        )
        .unwrap();
    assert_eq!(token, Token(0));
    theirs.write_all(b"tversion").unwrap();
    exec.run_until(|| got.borrow().len() == 8).unwrap();
    assert_eq!(&*got.borrow(), b"TVERSION");
}

#[test]
fn a_host_loop_can_drive_the_executor_through_its_poll_fd() {
    let exec = executor();
    // The "host": its own poll loop that watches the executor's fd.
    let mut host = Poll::new().unwrap();
    let fd = exec.poll_fd();
    host.registry()
        .register(&mut mio::unix::SourceFd(&fd), Token(7), Interest::READABLE)
        .unwrap();
    let task = exec.enter(|co| {
        let mut sum = 0;
        for i in 0..5 {
            sum += co.run_in_worker(move || i);
        }
        sum
    });
    let mut events = Events::with_capacity(8);
    let mut wakeups = 0;
    while !task.is_finished() {
        host.poll(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        assert!(
            events.iter().any(|e| e.token() == Token(7)),
            "the executor's fd did not become readable"
        );
        wakeups += 1;
        exec.dispatch().unwrap();
    }
    assert!(wakeups >= 1);
    assert_eq!(task.take_result().unwrap(), Ok(10));
}

#[test]
fn a_task_woken_from_host_code_makes_the_fd_readable() {
    let exec = executor();
    let queue = Rc::new(CoQueue::new());
    let q = Rc::clone(&queue);
    let task = exec.enter(move |co| q.wait(co));
    assert!(!task.is_finished());
    let mut host = Poll::new().unwrap();
    let fd = exec.poll_fd();
    host.registry()
        .register(&mut mio::unix::SourceFd(&fd), Token(1), Interest::READABLE)
        .unwrap();
    queue.next(&exec);
    let mut events = Events::with_capacity(8);
    host.poll(&mut events, Some(Duration::from_secs(10)))
        .unwrap();
    assert!(
        !events.is_empty(),
        "waking from outside a task must poke the fd"
    );
    exec.dispatch().unwrap();
    assert!(task.is_finished());
}

#[test]
fn turning_the_executor_from_inside_a_task_is_refused() {
    let exec = Rc::new(executor());
    let e = Rc::clone(&exec);
    let task = exec.enter(move |_co| e.dispatch().is_err());
    assert_eq!(task.take_result().unwrap(), Ok(true));
}

#[test]
fn yield_now_lets_other_work_run_first() {
    let exec = executor();
    let log = Rc::new(RefCell::new(Vec::new()));
    let (l1, l2) = (Rc::clone(&log), Rc::clone(&log));
    let a = exec.enter(move |co| {
        l1.borrow_mut().push("a1");
        co.yield_now();
        l1.borrow_mut().push("a2");
    });
    let b = exec.enter(move |_co| l2.borrow_mut().push("b"));
    exec.run_until(|| a.is_finished() && b.is_finished())
        .unwrap();
    assert_eq!(*log.borrow(), ["a1", "b", "a2"]);
}

#[test]
fn dropping_the_executor_unwinds_suspended_tasks() {
    let exec = executor();
    let unwound = Arc::new(AtomicBool::new(false));
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let queue = Rc::new(CoQueue::new());
    let q = Rc::clone(&queue);
    let flag = Flag(Arc::clone(&unwound));
    let task = exec.enter(move |co| {
        let _flag = flag;
        q.wait(co);
    });
    assert!(!task.is_finished());
    drop(exec);
    assert!(unwound.load(Ordering::SeqCst));
}

#[test]
fn hops_are_traced_with_threads_and_labels() {
    let exec = Executor::new(RuntimeConfig {
        trace: true,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let task = exec.enter_with(
        TaskOpts {
            label: Some("tag 1 Twalk".into()),
            ..TaskOpts::default()
        },
        |co| {
            co.trace_mark("arrival");
            co.run_in_worker(|| ());
            co.run_in_worker(|| ());
            co.trace_mark("reply");
        },
    );
    exec.run_until(|| task.is_finished()).unwrap();
    let events: Vec<_> = exec
        .tracer()
        .take_events()
        .into_iter()
        .filter(|e| e.task == task.id())
        .collect();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    use HopKind::*;
    assert_eq!(
        kinds,
        [
            Enter,
            Mark("arrival"),
            ToWorker,
            JobStart,
            JobEnd,
            ToMain,
            ToWorker,
            JobStart,
            JobEnd,
            ToMain,
            Mark("reply"),
            Finish
        ]
    );
    for e in &events {
        let on_worker = matches!(e.kind, JobStart | JobEnd);
        assert_eq!(e.thread != ThreadRef::MAIN, on_worker, "{e:?}");
    }
    assert!(events.windows(2).all(|w| w[0].ns <= w[1].ns));
    assert_eq!(
        exec.tracer().label(task.id()).as_deref(),
        Some("tag 1 Twalk")
    );
}

#[test]
fn tracing_off_records_nothing() {
    let exec = executor();
    let task = exec.enter(|co| co.run_in_worker(|| 1));
    exec.run_until(|| task.is_finished()).unwrap();
    assert!(exec.tracer().take_events().is_empty());
}

#[test]
fn run_until_refuses_to_wait_for_nothing() {
    let exec = executor();
    assert!(exec.run_until(|| false).is_err());
}

/// A task that overflows its stack faults on the guard page (the process
/// dies of SIGSEGV) instead of writing over other memory. Runs in a child
/// process: this test binary, re-run on this one test.
#[test]
fn stack_overflow_hits_the_guard_page() {
    use std::os::unix::process::ExitStatusExt;
    const CHILD: &str = "CORO9P_STACK_OVERFLOW_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // The crash is expected: no core file.
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0).unwrap();
        let exec = Executor::new(RuntimeConfig {
            stack_size: 64 * 1024,
            ..RuntimeConfig::default()
        })
        .unwrap();
        fn deep(n: u64) -> u64 {
            let pad = std::hint::black_box([n; 64]);
            if n == 0 {
                0
            } else {
                pad[3] + deep(n - 1)
            }
        }
        exec.enter(|_co| deep(std::hint::black_box(1 << 30)));
        unreachable!("the task returned from unbounded recursion");
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stack_overflow_hits_the_guard_page",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(11),
        "child: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
