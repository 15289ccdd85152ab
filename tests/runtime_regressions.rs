//! Regressions found in review of the runtime: each test failed before its
//! fix.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use coro9p::runtime::{CoQueue, Executor, Handle, RuntimeConfig, Task, TaskError};
use mio::{Events, Interest, Poll, Token};

fn fd_readable(exec: &Executor, ms: u64) -> bool {
    let mut host = Poll::new().unwrap();
    let fd = exec.poll_fd();
    host.registry()
        .register(&mut mio::unix::SourceFd(&fd), Token(1), Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(8);
    host.poll(&mut events, Some(Duration::from_millis(ms)))
        .unwrap();
    !events.is_empty()
}

/// A task entered by a host loop that yields must make the poll fd readable,
/// or the host never comes back to run it.
#[test]
fn a_yield_outside_a_turn_pokes_the_fd() {
    let exec = Executor::new(RuntimeConfig::default()).unwrap();
    let t = exec.enter(|co| {
        co.yield_now();
        1
    });
    assert!(!t.is_finished());
    assert!(fd_readable(&exec, 5000));
    exec.dispatch().unwrap();
    assert_eq!(t.take_result(), Some(Ok(1)));
}

/// Same for a task that gets a freed stack outside a turn.
#[test]
fn a_stack_handoff_outside_a_turn_pokes_the_fd() {
    let exec = Executor::new(RuntimeConfig {
        max_stacks: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let inner: Rc<RefCell<Option<Task<u32>>>> = Rc::default();
    let slot = Rc::clone(&inner);
    let a = exec.enter(move |co| {
        // Cannot start: this task holds the only stack.
        *slot.borrow_mut() = Some(co.handle().enter(|_| 7));
    });
    assert!(a.is_finished());
    let b = inner.borrow_mut().take().unwrap();
    assert!(!b.is_finished());
    assert!(fd_readable(&exec, 5000));
    exec.dispatch().unwrap();
    assert_eq!(b.take_result(), Some(Ok(7)));
}

/// A task waiting for a stack is not overtaken by one entered later.
#[test]
fn stack_waiters_are_not_overtaken() {
    let exec = Executor::new(RuntimeConfig {
        max_stacks: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = Rc::clone(&log);
    let t1 = exec.enter(move |co| {
        co.yield_now();
        l.borrow_mut().push("t1");
    });
    let l = Rc::clone(&log);
    let t2 = exec.enter(move |_| l.borrow_mut().push("t2"));
    exec.turn(Some(Duration::ZERO)).unwrap(); // t1 ends, its stack goes to t2
    let l = Rc::clone(&log);
    let t3 = exec.enter(move |_| l.borrow_mut().push("t3"));
    exec.run_until(|| t1.is_finished() && t2.is_finished() && t3.is_finished())
        .unwrap();
    assert_eq!(*log.borrow(), ["t1", "t2", "t3"]);
}

/// Dropping the executor ends every task: waiting ones and suspended ones
/// with ShutDown.
#[test]
fn every_task_ends_with_shutdown_when_the_executor_is_dropped() {
    let exec = Executor::new(RuntimeConfig {
        max_stacks: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let q = Rc::new(CoQueue::new());
    let q2 = Rc::clone(&q);
    let suspended = exec.enter(move |co| q2.wait(co));
    let waiting = exec.enter(|_| 1);
    drop(exec);
    assert_eq!(suspended.take_result(), Some(Err(TaskError::ShutDown)));
    assert_eq!(waiting.take_result(), Some(Err(TaskError::ShutDown)));
}

/// A stack that cannot be allocated, with none in use to wait for, fails
/// the task with NoStack; dropping its closure may use the executor.
#[test]
fn a_failed_stack_allocation_fails_the_task() {
    struct UsesHandleOnDrop(Handle);
    impl Drop for UsesHandleOnDrop {
        fn drop(&mut self) {
            let _ = self.0.stats();
        }
    }
    let exec = Executor::new(RuntimeConfig {
        stack_size: 1 << 52,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let probe = UsesHandleOnDrop(exec.handle());
    let t = exec.enter(move |_| {
        let _p = &probe;
        1
    });
    assert!(matches!(t.take_result(), Some(Err(TaskError::NoStack(_)))));
    assert_eq!(exec.stats().tasks, 0);
}

/// A panicking event callback is contained: the turn goes on, results that
/// were queued are delivered, and the callback is dropped.
#[test]
fn a_panicking_event_callback_is_contained() {
    let exec = Executor::new(RuntimeConfig::default()).unwrap();
    let (mut a, mut b) = mio::net::UnixStream::pair().unwrap();
    exec.register(&mut b, Interest::READABLE, |_| {
        panic!("callback panic (expected by this test)")
    })
    .unwrap();
    let t = exec.enter(|co| co.run_in_worker(|| 5));
    a.write_all(b"x").unwrap();
    exec.run_until(|| t.is_finished()).unwrap();
    assert_eq!(t.take_result(), Some(Ok(5)));
}
