//! The coroutine runtime: one main thread, a stackful coroutine per task, a
//! worker pool for blocking work.
//!
//! This is the machinery under QEMU's hw/9pfs rebuilt in Rust: the main loop
//! (`mio::Poll`), one coroutine per request (`corosensei`), and
//! `v9fs_co_run_in_worker` as [`Co::run_in_worker`].
//!
//! ```
//! use coro9p::runtime::{Executor, RuntimeConfig};
//! use std::thread;
//!
//! let exec = Executor::new(RuntimeConfig::default()).unwrap();
//! let main = thread::current().id();
//! let task = exec.enter(move |co| {
//!     // Runs at once, on the main thread, until the first hop.
//!     assert_eq!(thread::current().id(), main);
//!     let (size, worker) = co.run_in_worker(|| {
//!         // A blocking call, on a pool thread; the main thread serves others.
//!         let size = std::fs::metadata("/").map(|m| m.len()).unwrap_or(0);
//!         (size, thread::current().id())
//!     });
//!     // Back on the main thread with the job's result.
//!     assert_eq!(thread::current().id(), main);
//!     assert_ne!(worker, main);
//!     size > 0
//! });
//! exec.run_until(|| task.is_finished()).unwrap();
//! println!("{:?}", task.take_result());
//! // prints: Some(Ok(true))
//! ```
//!
//! # The model
//!
//! - [`Executor`] lives on the thread that made it, the *main thread*, and
//!   owns every task. It is driven by its own loop ([`Executor::run_until`],
//!   [`Executor::turn`]) or by a host's loop: poll [`Executor::poll_fd`] and
//!   call [`Executor::dispatch`] when it is readable.
//! - [`Handle::enter`] creates a task and runs it at once, synchronously, up
//!   to its first suspension, as QEMU's `pdu_submit` enters a request's
//!   coroutine.
//! - [`Co::run_in_worker`] is the one way a task leaves the main thread: the
//!   task suspends, its job (an owned `Send` closure) runs on the worker pool,
//!   and the task resumes on the main thread with the job's result. Unlike
//!   QEMU, the coroutine itself never moves: only the job does. Main -> worker
//!   -> main is two thread hops in both, and other tasks can run at the same
//!   points.
//! - [`CoQueue`], [`CoMutex`] and [`CoRwLock`] let tasks wait for each other.
//!   A task woken from inside another task runs right after the waker next
//!   suspends or ends, before any other event (QEMU's wake-up rule, which
//!   orders a flushed request's reply before its Rflush).
//! - Each task has a [`CancelFlag`] that job closures can read from a worker.
//! - A panic in a task or in its job ends that task with
//!   [`TaskError::Panicked`]; a panic in an event callback drops that
//!   callback. Either way the executor goes on serving.
//!
//! # Invariants
//!
//! - Tasks, [`Co`], [`Handle`] and the coroutine locks are `!Send`: they
//!   belong to the main thread, which owns all server state and therefore
//!   needs no locks for it.
//! - **No `RefCell` borrow or `std` lock guard on shared state may be held
//!   across a suspension** ([`Co::run_in_worker`], [`Co::yield_now`], a
//!   co-queue wait or a coroutine lock): other tasks run while this one is
//!   suspended and would find the borrow taken. Collect what you need, drop
//!   the borrow, then hop. The coroutine locks exist to be held across hops.
//! - At most `max_stacks` tasks exist with a stack at once. A task entered
//!   beyond that waits, in FIFO order, until a stack is free, instead of
//!   starting at once.

mod lock;
mod stack;
mod trace;
mod worker;

pub use lock::{CoMutex, CoMutexGuard, CoQueue, CoRwLock, CoRwLockReadGuard, CoRwLockWriteGuard};
pub use stack::StackStats;
pub use trace::{HopKind, ThreadRef, TraceEvent, Tracer};

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use mio::event::{Event, Source};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use stack::StackPool;
use worker::WorkerPool;

/// Settings of one executor.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Usable size of each coroutine stack. Handlers keep buffers on the
    /// heap, so 256 KiB is ample; only touched pages cost memory.
    pub stack_size: usize,
    /// Most stacks in existence at once (in use plus cached).
    pub max_stacks: usize,
    /// Keep finished stacks for the next task (the pool). Off only to measure
    /// what the pool saves.
    pub reuse_stacks: bool,
    /// Most worker threads (QEMU's thread pool: 64).
    pub max_workers: usize,
    /// A worker idle this long exits (QEMU's thread pool: 10 s).
    pub worker_idle_timeout: Duration,
    /// Most hop events kept in the trace buffer.
    pub trace_capacity: usize,
    /// Record hops from the start.
    pub trace: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            stack_size: 256 * 1024,
            max_stacks: 4096,
            reuse_stacks: true,
            max_workers: 64,
            worker_idle_timeout: Duration::from_secs(10),
            trace_capacity: 1 << 20,
            trace: false,
        }
    }
}

/// A task's identity: unique for the executor's lifetime, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.0)
    }
}

/// A task's cancellation flag (QEMU's `pdu->cancelled`), shared between the
/// main thread, which raises it, and jobs on workers, which may read it.
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A flag that is not raised.
    pub fn new() -> CancelFlag {
        CancelFlag::default()
    }

    /// Raises the flag.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Lowers the flag again (QEMU clears it before freeing a flushed PDU).
    pub fn clear(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// Whether the flag is raised.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Why a task ended without a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskError {
    /// The task, or a job it ran, panicked; the panic message.
    Panicked(String),
    /// No coroutine stack could be allocated and none was in use to wait for.
    NoStack(String),
    /// The executor was dropped before the task ended, or the task was
    /// entered after that.
    ShutDown,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked(msg) => write!(f, "task panicked: {msg}"),
            TaskError::NoStack(msg) => write!(f, "no coroutine stack for the task: {msg}"),
            TaskError::ShutDown => write!(f, "the executor is shutting down"),
        }
    }
}

impl std::error::Error for TaskError {}

/// Options for [`Handle::enter_with`].
#[derive(Clone, Debug, Default)]
pub struct TaskOpts {
    /// The task's name in hop traces ("tag 3 Twalk"); kept only while tracing.
    pub label: Option<String>,
    /// Use this flag instead of a new one (a PDU that owns its flag).
    pub cancel: Option<CancelFlag>,
}

/// Counters for tests, benchmarks and monitoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Tasks that have not ended.
    pub tasks: usize,
    /// Coroutine stack accounting.
    pub stacks: StackStats,
    /// Worker threads alive.
    pub workers: usize,
    /// Worker threads started since the executor was made.
    pub workers_spawned_total: usize,
}

/// What a task is handed when it resumes.
enum Resume {
    Start,
    Woken,
    Job(JobResult),
}

/// Why a task suspended.
enum Suspend {
    /// Waits for its job on the worker pool.
    Hop,
    /// Waits to be woken by a co-queue or lock.
    Park,
    /// Gives the main thread a turn, then continues.
    Yield,
}

type JobResult = Result<Box<dyn Any + Send>, Box<dyn Any + Send>>;
type Body = Box<dyn for<'y> FnOnce(&'y Yielder<Resume, Suspend>, Resume)>;
type Coro = Coroutine<Resume, Suspend, (), DefaultStack>;

/// What a suspended task may be resumed with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Waiting {
    Job,
    Wake,
}

enum SlotState {
    /// Entered but waiting for a stack.
    Unstarted(Body, Rc<dyn Outcome>),
    Suspended(Coro, Waiting),
    Running,
}

struct Slot {
    state: SlotState,
    /// Tasks this one woke while running: entered right after it suspends.
    wakeups: Vec<TaskId>,
}

/// A type-erased way to fail a task that never got to run.
trait Outcome {
    fn fail(&self, err: TaskError);
}

struct TaskShared<R> {
    done: Cell<bool>,
    value: RefCell<Option<Result<R, TaskError>>>,
}

impl<R> Outcome for TaskShared<R> {
    fn fail(&self, err: TaskError) {
        *self.value.borrow_mut() = Some(Err(err));
        self.done.set(true);
    }
}

/// The caller's view of a task: its id, cancellation and result.
pub struct Task<R> {
    id: TaskId,
    shared: Rc<TaskShared<R>>,
    cancel: CancelFlag,
}

impl<R> Task<R> {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.shared.done.get()
    }

    /// The task's result, once, after it ended.
    pub fn take_result(&self) -> Option<Result<R, TaskError>> {
        self.shared.value.borrow_mut().take()
    }

    /// Raises the task's cancellation flag. The task is not interrupted; it
    /// sees the flag at its next check, as a QEMU request sees a Tflush.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The task's cancellation flag.
    pub fn cancel_flag(&self) -> &CancelFlag {
        &self.cancel
    }
}

/// Results of jobs, posted by workers for the main thread.
struct Completions {
    queue: Mutex<Vec<(TaskId, JobResult)>>,
    waker: Waker,
}

impl Completions {
    fn post(&self, task: TaskId, result: JobResult) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = queue.is_empty();
        queue.push((task, result));
        drop(queue);
        // One wake-up per batch: the main thread drains the whole queue.
        if was_empty {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake the main thread: {e}");
            }
        }
    }

    fn take(&self) -> Vec<(TaskId, JobResult)> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

type SourceCallback = Box<dyn FnMut(&Event)>;

const WAKER_TOKEN: Token = Token(usize::MAX);

struct Inner {
    config: RuntimeConfig,
    poll: RefCell<Poll>,
    registry: Registry,
    events: RefCell<Option<Events>>,
    completions: Arc<Completions>,
    pool: WorkerPool,
    stacks: RefCell<StackPool>,
    tracer: Arc<Tracer>,
    tasks: RefCell<HashMap<TaskId, Slot>>,
    next_task: Cell<u64>,
    /// The task running now, if any.
    current: Cell<Option<TaskId>>,
    /// Tasks to resume on the next turn: woken from outside any task.
    ready: RefCell<VecDeque<TaskId>>,
    /// Entered tasks waiting for a stack, in entry order.
    starting: RefCell<VecDeque<TaskId>>,
    sources: RefCell<HashMap<Token, Option<SourceCallback>>>,
    /// Callbacks to run on the next turn (QEMU's bottom halves).
    deferred: RefCell<Vec<Box<dyn FnOnce()>>>,
    next_token: Cell<usize>,
    in_turn: Cell<bool>,
    shutting_down: Cell<bool>,
}

/// A cheap, clonable reference to an executor, for code running on the main
/// thread (tasks, event callbacks, coroutine locks).
#[derive(Clone)]
pub struct Handle(Rc<Inner>);

/// The executor: owns every task and the worker pool, and runs on the thread
/// that created it. Dereferences to its [`Handle`].
///
/// Dropping it unwinds every suspended task (running its destructors) and
/// lets the worker threads exit; jobs still running finish on their own and
/// their results are dropped.
pub struct Executor {
    handle: Handle,
}

impl std::ops::Deref for Executor {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Executor {
    /// Makes an executor on the calling thread.
    ///
    /// # Errors
    ///
    /// Fails if the kernel refuses the poll instance or its waker.
    pub fn new(config: RuntimeConfig) -> io::Result<Executor> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
        let tracer = Arc::new(Tracer::new(config.trace_capacity));
        tracer.enable(config.trace);
        let inner = Inner {
            poll: RefCell::new(poll),
            registry,
            events: RefCell::new(Some(Events::with_capacity(256))),
            completions: Arc::new(Completions {
                queue: Mutex::new(Vec::new()),
                waker,
            }),
            pool: WorkerPool::new(config.max_workers, config.worker_idle_timeout),
            stacks: RefCell::new(StackPool::new(
                config.stack_size,
                config.max_stacks,
                config.reuse_stacks,
            )),
            tracer,
            tasks: RefCell::new(HashMap::new()),
            next_task: Cell::new(1),
            current: Cell::new(None),
            ready: RefCell::new(VecDeque::new()),
            starting: RefCell::new(VecDeque::new()),
            sources: RefCell::new(HashMap::new()),
            deferred: RefCell::new(Vec::new()),
            next_token: Cell::new(0),
            in_turn: Cell::new(false),
            shutting_down: Cell::new(false),
            config,
        };
        Ok(Executor {
            handle: Handle(Rc::new(inner)),
        })
    }

    /// A handle to this executor.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// One turn of the main loop: waits for events up to `timeout` (`None`:
    /// until something happens; zero when tasks are already ready), then runs
    /// event callbacks, resumes the tasks whose jobs finished, and resumes
    /// tasks woken from outside a task.
    ///
    /// # Errors
    ///
    /// Fails if polling fails, or if called from inside a task or a callback
    /// of this executor.
    pub fn turn(&self, timeout: Option<Duration>) -> io::Result<()> {
        let h = &self.handle;
        let inner = &*h.0;
        if inner.in_turn.get() || inner.current.get().is_some() {
            return Err(io::Error::other(
                "the executor was turned from inside one of its own tasks or callbacks",
            ));
        }
        inner.in_turn.set(true);
        // Cleared even if an event callback panics through here.
        struct EndTurn<'a>(&'a Cell<bool>);
        impl Drop for EndTurn<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let end_turn = EndTurn(&inner.in_turn);
        let result = h.turn_inner(timeout);
        drop(end_turn);
        if !inner.ready.borrow().is_empty() || !inner.deferred.borrow().is_empty() {
            // Tasks yielded for a later turn: make the poll fd readable so a
            // host loop comes back.
            h.poke();
        }
        result
    }

    /// Runs whatever is ready without blocking, on the calling thread (which
    /// must be the one that made the executor). For hosts that poll
    /// [`Executor::poll_fd`] in their own loop.
    ///
    /// # Errors
    ///
    /// As [`Executor::turn`].
    pub fn dispatch(&self) -> io::Result<()> {
        self.turn(Some(Duration::ZERO))
    }

    /// A file descriptor that becomes readable when [`Executor::dispatch`]
    /// has work: a worker finished a job, a registered source is ready, or a
    /// task was woken from outside a task.
    pub fn poll_fd(&self) -> RawFd {
        self.handle.0.poll.borrow().as_raw_fd()
    }

    /// Turns the loop until `done()` is true.
    ///
    /// # Errors
    ///
    /// As [`Executor::turn`]; also fails, rather than wait forever, when
    /// nothing is left that could make progress (no task, no source).
    pub fn run_until(&self, mut done: impl FnMut() -> bool) -> io::Result<()> {
        let inner = &*self.handle.0;
        loop {
            if done() {
                return Ok(());
            }
            if inner.tasks.borrow().is_empty()
                && inner.sources.borrow().is_empty()
                && inner.deferred.borrow().is_empty()
            {
                return Err(io::Error::other(
                    "run_until: no task or event source is left, so the condition cannot become true",
                ));
            }
            self.turn(None)?;
        }
    }
}

impl AsRawFd for Executor {
    fn as_raw_fd(&self) -> RawFd {
        self.poll_fd()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let inner = &*self.handle.0;
        inner.shutting_down.set(true);
        // Callbacks and tasks hold handles to the executor: drop them
        // outside of any borrow so that their destructors may use it.
        let sources = std::mem::take(&mut *inner.sources.borrow_mut());
        drop(sources);
        inner.ready.borrow_mut().clear();
        let deferred = std::mem::take(&mut *inner.deferred.borrow_mut());
        drop(deferred);
        inner.starting.borrow_mut().clear();
        loop {
            let tasks = std::mem::take(&mut *inner.tasks.borrow_mut());
            if tasks.is_empty() {
                break;
            }
            for (_, slot) in tasks {
                match slot.state {
                    SlotState::Suspended(coro, _) => {
                        // Dropping a suspended coroutine unwinds its stack.
                        drop(coro);
                        inner.stacks.borrow_mut().forget_one();
                    }
                    SlotState::Unstarted(body, outcome) => {
                        drop(body);
                        outcome.fail(TaskError::ShutDown);
                    }
                    SlotState::Running => {}
                }
            }
        }
    }
}

impl Handle {
    /// Creates a task running `f` and enters it at once, on this thread,
    /// until its first suspension or its end. If every stack is in use the
    /// task instead waits for one (see the module docs).
    pub fn enter<R: 'static>(&self, f: impl FnOnce(&Co) -> R + 'static) -> Task<R> {
        self.enter_with(TaskOpts::default(), f)
    }

    /// [`Handle::enter`] with a trace label or a given cancellation flag.
    pub fn enter_with<R: 'static>(
        &self,
        opts: TaskOpts,
        f: impl FnOnce(&Co) -> R + 'static,
    ) -> Task<R> {
        let inner = &*self.0;
        let id = TaskId(inner.next_task.get());
        inner.next_task.set(id.0 + 1);
        let cancel = opts.cancel.unwrap_or_default();
        let shared = Rc::new(TaskShared {
            done: Cell::new(false),
            value: RefCell::new(None),
        });
        if let Some(label) = opts.label {
            inner.tracer.set_label(id, label);
        }
        let task = Task {
            id,
            shared: Rc::clone(&shared),
            cancel: cancel.clone(),
        };
        if inner.shutting_down.get() {
            shared.fail(TaskError::ShutDown);
            return task;
        }
        let handle = self.clone();
        let outcome: Rc<dyn Outcome> = shared.clone();
        let body: Body = Box::new(move |yielder, _start| {
            let co = Co {
                yielder,
                handle,
                id,
                cancel,
            };
            let result = catch_unwind(AssertUnwindSafe(|| f(&co)));
            let result = result.map_err(|payload| {
                if co.handle.0.shutting_down.get() {
                    // The executor is unwinding this suspended task.
                    return TaskError::ShutDown;
                }
                let msg = panic_message(payload.as_ref());
                log::error!("{id} panicked: {msg}");
                TaskError::Panicked(msg)
            });
            *shared.value.borrow_mut() = Some(result);
            shared.done.set(true);
        });
        inner.tasks.borrow_mut().insert(
            id,
            Slot {
                state: SlotState::Unstarted(body, outcome),
                wakeups: Vec::new(),
            },
        );
        inner.tracer.record(id, HopKind::Enter, ThreadRef::MAIN);
        let must_queue = !inner.starting.borrow().is_empty();
        if must_queue {
            inner.starting.borrow_mut().push_back(id);
        } else {
            self.run_task(id, Resume::Start);
        }
        task
    }

    /// Registers an event source (a transport's socket) with the main loop;
    /// `on_event` runs on the main thread for each of its events.
    ///
    /// # Errors
    ///
    /// As `mio::Registry::register`.
    pub fn register<S: Source + ?Sized>(
        &self,
        source: &mut S,
        interest: Interest,
        on_event: impl FnMut(&Event) + 'static,
    ) -> io::Result<Token> {
        let inner = &*self.0;
        let token = Token(inner.next_token.get());
        inner.next_token.set(token.0 + 1);
        inner.registry.register(source, token, interest)?;
        inner
            .sources
            .borrow_mut()
            .insert(token, Some(Box::new(on_event)));
        Ok(token)
    }

    /// Changes the interest of a registered source.
    ///
    /// # Errors
    ///
    /// As `mio::Registry::reregister`.
    pub fn reregister<S: Source + ?Sized>(
        &self,
        source: &mut S,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.0.registry.reregister(source, token, interest)
    }

    /// Removes a source; its callback is dropped (after it returns, if it is
    /// the one calling this).
    ///
    /// # Errors
    ///
    /// As `mio::Registry::deregister`.
    pub fn deregister<S: Source + ?Sized>(&self, source: &mut S, token: Token) -> io::Result<()> {
        let removed = self.0.sources.borrow_mut().remove(&token);
        drop(removed);
        self.0.registry.deregister(source)
    }

    /// Runs `f` on the main thread on the next turn, outside any task (a
    /// QEMU bottom half): for work that must not run nested inside the
    /// current task, such as taking in more requests when a PDU frees.
    pub fn defer(&self, f: impl FnOnce() + 'static) {
        let inner = &*self.0;
        inner.deferred.borrow_mut().push(Box::new(f));
        if !inner.in_turn.get() {
            self.poke();
        }
    }

    /// The hop tracer.
    pub fn tracer(&self) -> &Arc<Tracer> {
        &self.0.tracer
    }

    /// Records a named mark for `task` in the hop trace (main thread).
    pub fn trace_mark(&self, task: TaskId, name: &'static str) {
        self.0
            .tracer
            .record(task, HopKind::Mark(name), ThreadRef::MAIN);
    }

    /// The settings this executor was made with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.0.config
    }

    /// Current counters.
    pub fn stats(&self) -> RuntimeStats {
        let inner = &*self.0;
        RuntimeStats {
            tasks: inner.tasks.borrow().len(),
            stacks: inner.stacks.borrow().stats(),
            workers: inner.pool.threads(),
            workers_spawned_total: inner.pool.spawned_total(),
        }
    }

    /// The task running now, if called from inside one.
    pub fn current_task(&self) -> Option<TaskId> {
        self.0.current.get()
    }

    /// Makes a parked task runnable. From inside a task, the woken task runs
    /// right after the current one suspends or ends (depth first, in wake
    /// order); from outside, on the next turn.
    pub(crate) fn wake(&self, id: TaskId) {
        self.0.tracer.record(id, HopKind::Wake, ThreadRef::MAIN);
        self.schedule(id);
    }

    /// Makes the poll fd readable, so that a host loop calls dispatch.
    fn poke(&self) {
        if let Err(e) = self.0.completions.waker.wake() {
            log::error!("cannot wake the main loop: {e}");
        }
    }

    fn turn_inner(&self, timeout: Option<Duration>) -> io::Result<()> {
        let inner = &*self.0;
        let timeout = if inner.ready.borrow().is_empty() && inner.deferred.borrow().is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let mut events = inner
            .events
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Events::with_capacity(256));
        let polled = inner.poll.borrow_mut().poll(&mut events, timeout);
        match polled {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => events.clear(),
            Err(e) => {
                *inner.events.borrow_mut() = Some(events);
                return Err(e);
            }
        }
        for event in events.iter() {
            if event.token() != WAKER_TOKEN {
                self.call_source(event);
            }
        }
        *inner.events.borrow_mut() = Some(events);
        // Drained whatever the waker said: results can arrive in between.
        for (id, result) in inner.completions.take() {
            self.run_task(id, Resume::Job(result));
        }
        let ready = std::mem::take(&mut *inner.ready.borrow_mut());
        for id in ready {
            self.run_task(id, Resume::Woken);
        }
        let deferred = std::mem::take(&mut *inner.deferred.borrow_mut());
        for f in deferred {
            if catch_unwind(AssertUnwindSafe(f)).is_err() {
                log::error!("a deferred callback panicked");
            }
        }
        Ok(())
    }

    fn call_source(&self, event: &Event) {
        let token = event.token();
        let callback = match self.0.sources.borrow_mut().get_mut(&token) {
            Some(slot) => slot.take(),
            None => None,
        };
        let Some(mut callback) = callback else {
            return;
        };
        if catch_unwind(AssertUnwindSafe(|| callback(event))).is_err() {
            // Its transport state may be half-updated: stop calling it.
            log::error!("the event callback of source {token:?} panicked; the source is dropped");
            self.0.sources.borrow_mut().remove(&token);
            return;
        }
        if let Some(slot @ None) = self.0.sources.borrow_mut().get_mut(&token) {
            *slot = Some(callback);
        }
    }

    /// Resumes `first` with `input`, then every task it woke, depth first,
    /// as QEMU's `qemu_aio_coroutine_enter` does with its wake-up queues.
    fn run_task(&self, first: TaskId, input: Resume) {
        let inner = &*self.0;
        let mut pending = VecDeque::from([(first, input)]);
        while let Some((id, input)) = pending.pop_front() {
            let Some(mut coro) = self.take_for_run(id, &input) else {
                continue;
            };
            if matches!(input, Resume::Job(_)) {
                inner.tracer.record(id, HopKind::ToMain, ThreadRef::MAIN);
            }
            let outer = inner.current.replace(Some(id));
            let step = coro.resume(input);
            inner.current.set(outer);
            let mut tasks = inner.tasks.borrow_mut();
            let Some(slot) = tasks.get_mut(&id) else {
                log::error!("{id} lost its slot while running");
                continue;
            };
            let wakeups = std::mem::take(&mut slot.wakeups);
            match step {
                CoroutineResult::Yield(Suspend::Hop) => {
                    slot.state = SlotState::Suspended(coro, Waiting::Job);
                }
                CoroutineResult::Yield(Suspend::Park) => {
                    slot.state = SlotState::Suspended(coro, Waiting::Wake);
                }
                CoroutineResult::Yield(Suspend::Yield) => {
                    slot.state = SlotState::Suspended(coro, Waiting::Wake);
                    drop(tasks);
                    self.push_ready(id);
                }
                CoroutineResult::Return(()) => {
                    tasks.remove(&id);
                    drop(tasks);
                    self.finish(id, coro);
                }
            }
            for woken in wakeups.into_iter().rev() {
                pending.push_front((woken, Resume::Woken));
            }
        }
    }

    /// Takes a task's coroutine out of its slot to run it, creating it if the
    /// task has not started; `None` if the task cannot take this input now.
    fn take_for_run(&self, id: TaskId, input: &Resume) -> Option<Coro> {
        let inner = &*self.0;
        let mut tasks = inner.tasks.borrow_mut();
        let slot = tasks.get_mut(&id)?;
        match std::mem::replace(&mut slot.state, SlotState::Running) {
            SlotState::Suspended(coro, waiting) => {
                let fits = match input {
                    Resume::Job(_) => waiting == Waiting::Job,
                    Resume::Woken => waiting == Waiting::Wake,
                    Resume::Start => false,
                };
                if fits {
                    Some(coro)
                } else {
                    log::error!("{id} is waiting for {waiting:?}: resume refused");
                    slot.state = SlotState::Suspended(coro, waiting);
                    None
                }
            }
            SlotState::Unstarted(body, outcome) => {
                let taken = inner.stacks.borrow_mut().take();
                let err = match taken {
                    Ok(Some(stack)) => return Some(Coroutine::with_stack(stack, body)),
                    Ok(None) => None,
                    Err(e) => Some(e),
                };
                let in_use = inner.stacks.borrow().stats().in_use;
                match err {
                    Some(e) if in_use == 0 => {
                        log::error!("cannot allocate a coroutine stack for {id}: {e}");
                        tasks.remove(&id);
                        // The closure's captures may use the executor when
                        // dropped: no borrow may be held then.
                        drop(tasks);
                        drop(body);
                        outcome.fail(TaskError::NoStack(e.to_string()));
                    }
                    err => {
                        if let Some(e) = err {
                            log::warn!("cannot allocate a coroutine stack, {id} waits: {e}");
                        }
                        slot.state = SlotState::Unstarted(body, outcome);
                        inner.starting.borrow_mut().push_front(id);
                    }
                }
                None
            }
            SlotState::Running => {
                log::error!("{id} is already running: resume refused");
                None
            }
        }
    }

    fn finish(&self, id: TaskId, coro: Coro) {
        let inner = &*self.0;
        inner.tracer.record(id, HopKind::Finish, ThreadRef::MAIN);
        let stack = coro.into_stack();
        let next = inner.starting.borrow_mut().pop_front();
        match next {
            Some(next) => self.start_with(next, stack),
            None => inner.stacks.borrow_mut().put(stack),
        }
    }

    /// Hands a freed stack straight to the longest-waiting task, so that no
    /// task entered meanwhile can take it first.
    fn start_with(&self, id: TaskId, stack: DefaultStack) {
        let inner = &*self.0;
        let mut tasks = inner.tasks.borrow_mut();
        let Some(slot) = tasks.get_mut(&id) else {
            drop(tasks);
            inner.stacks.borrow_mut().put(stack);
            return;
        };
        match std::mem::replace(&mut slot.state, SlotState::Running) {
            SlotState::Unstarted(body, _) => {
                let coro = Coroutine::with_stack(stack, body);
                slot.state = SlotState::Suspended(coro, Waiting::Wake);
                drop(tasks);
                self.schedule(id);
            }
            other => {
                slot.state = other;
                drop(tasks);
                inner.stacks.borrow_mut().put(stack);
            }
        }
    }

    /// Makes a task runnable: right after the current task suspends if
    /// called from inside one, else on the next turn.
    fn schedule(&self, id: TaskId) {
        let inner = &*self.0;
        if let Some(current) = inner.current.get() {
            if let Some(slot) = inner.tasks.borrow_mut().get_mut(&current) {
                slot.wakeups.push(id);
                return;
            }
        }
        self.push_ready(id);
    }

    /// Queues a task for the next turn, making the poll fd readable if no
    /// turn is under way (a host loop must come back for it).
    fn push_ready(&self, id: TaskId) {
        let inner = &*self.0;
        inner.ready.borrow_mut().push_back(id);
        if !inner.in_turn.get() {
            self.poke();
        }
    }
}

/// The running task's view of itself: passed to the task's closure, valid
/// only inside it. Everything that suspends the task goes through here.
pub struct Co<'y> {
    yielder: &'y Yielder<Resume, Suspend>,
    handle: Handle,
    id: TaskId,
    cancel: CancelFlag,
}

impl Co<'_> {
    /// This task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The executor running this task.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Whether this task was cancelled (QEMU's `v9fs_request_cancelled`).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// This task's cancellation flag; clone it into a job to read it on the
    /// worker.
    pub fn cancel_flag(&self) -> &CancelFlag {
        &self.cancel
    }

    /// Runs `job` on the worker pool and returns its result; the task is
    /// suspended meanwhile and resumes on the main thread
    /// (`v9fs_co_run_in_worker`). The job owns its inputs.
    ///
    /// Hold no `RefCell` borrow or lock guard on shared state across this
    /// call: other tasks run while this one waits.
    ///
    /// # Panics
    ///
    /// A panic in `job` is raised again here, in the task, which then ends
    /// with [`TaskError::Panicked`] unless it catches it.
    pub fn run_in_worker<T, F>(&self, job: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let inner = &*self.handle.0;
        let id = self.id;
        let tracer = inner.tracer.enabled().then(|| Arc::clone(&inner.tracer));
        let completions = Arc::clone(&inner.completions);
        inner.tracer.record(id, HopKind::ToWorker, ThreadRef::MAIN);
        // Submitting before suspending is sound: the coroutine never leaves
        // this thread, and this thread only looks at completions after the
        // coroutine has suspended.
        inner.pool.submit(Box::new(move || {
            if let Some(t) = &tracer {
                t.record(id, HopKind::JobStart, ThreadRef::current());
            }
            let result = catch_unwind(AssertUnwindSafe(|| Box::new(job()) as Box<dyn Any + Send>));
            if let Some(t) = &tracer {
                t.record(id, HopKind::JobEnd, ThreadRef::current());
            }
            completions.post(id, result);
        }));
        match self.yielder.suspend(Suspend::Hop) {
            Resume::Job(Ok(value)) => match value.downcast::<T>() {
                Ok(value) => *value,
                Err(_) => panic!("{id}: job result of the wrong type"),
            },
            Resume::Job(Err(payload)) => std::panic::resume_unwind(payload),
            Resume::Start | Resume::Woken => panic!("{id}: resumed without its job's result"),
        }
    }

    /// Lets the main loop run one turn (events, other tasks), then goes on.
    pub fn yield_now(&self) {
        self.suspend_until_woken(Suspend::Yield);
    }

    /// Records a named mark for this task in the hop trace.
    pub fn trace_mark(&self, name: &'static str) {
        self.handle.trace_mark(self.id, name);
    }

    /// Parks this task until something wakes it through [`Handle::wake`].
    /// The caller must have put the task's id where a waker will find it.
    pub(crate) fn park(&self) {
        self.handle
            .0
            .tracer
            .record(self.id, HopKind::Park, ThreadRef::MAIN);
        self.suspend_until_woken(Suspend::Park);
    }

    fn suspend_until_woken(&self, why: Suspend) {
        match self.yielder.suspend(why) {
            Resume::Woken => {}
            Resume::Start | Resume::Job(_) => panic!("{}: woken with a job result", self.id),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}
