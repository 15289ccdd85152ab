//! The worker pool that runs blocking jobs off the main thread.
//!
//! Shaped like QEMU's thread pool (util/thread-pool.c): no threads at start,
//! a new thread only when a job arrives and no thread is idle, at most
//! `max_threads` (64 by default, QEMU's figure), and a thread that has had
//! nothing to do for `idle_timeout` (10 s, QEMU's figure) exits.
//!
//! Jobs go into a `crossbeam-deque` injector; each thread has its own deque
//! and takes work in batches from the injector, stealing from its peers when
//! both are empty. Idle threads sleep on a condition variable.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::Duration;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use super::trace::ThreadRef;

/// A unit of work for the pool. It must not panic across the pool (a panic
/// is caught and logged), and it reports its own result.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

struct PoolState {
    threads: usize,
    idle: usize,
    /// Idle threads already signalled for a job, so that two quick submits do
    /// not both count on the same sleeper.
    signalled: usize,
    shutdown: bool,
    next_number: u32,
}

struct Shared {
    injector: Injector<Job>,
    stealers: RwLock<Vec<(u32, Stealer<Job>)>>,
    state: Mutex<PoolState>,
    wake: Condvar,
    max_threads: usize,
    idle_timeout: Duration,
    spawned_total: AtomicUsize,
}

/// The pool. Dropping it lets idle threads exit; jobs already queued still
/// run first.
pub(crate) struct WorkerPool {
    shared: Arc<Shared>,
}

impl WorkerPool {
    pub(crate) fn new(max_threads: usize, idle_timeout: Duration) -> WorkerPool {
        WorkerPool {
            shared: Arc::new(Shared {
                injector: Injector::new(),
                stealers: RwLock::new(Vec::new()),
                state: Mutex::new(PoolState {
                    threads: 0,
                    idle: 0,
                    signalled: 0,
                    shutdown: false,
                    next_number: 1,
                }),
                wake: Condvar::new(),
                max_threads: max_threads.max(1),
                idle_timeout,
                spawned_total: AtomicUsize::new(0),
            }),
        }
    }

    /// Queues `job`, waking an idle thread or starting a new one.
    pub(crate) fn submit(&self, job: Job) {
        let shared = &self.shared;
        shared.injector.push(job);
        let mut st = lock(&shared.state);
        if st.idle > st.signalled {
            st.signalled += 1;
            shared.wake.notify_one();
        } else if st.threads < shared.max_threads {
            st.threads += 1;
            let number = st.next_number;
            st.next_number += 1;
            drop(st);
            self.spawn(number);
        }
    }

    fn spawn(&self, number: u32) {
        let local = Worker::new_fifo();
        write_lock(&self.shared.stealers).push((number, local.stealer()));
        let shared = Arc::clone(&self.shared);
        let spawned = spawn_without_signals(
            thread::Builder::new().name(format!("coro9p-worker-{number}")),
            move || worker_main(shared, local, number),
        );
        match spawned {
            Ok(_) => {
                self.shared.spawned_total.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                log::error!("cannot start worker thread {number}: {e}");
                forget_thread(&self.shared, number);
                // With no thread at all the job would never run: run the
                // queue here rather than hang the task that waits for it.
                if lock(&self.shared.state).threads == 0 {
                    while let Some(job) = self.shared.injector.steal().success() {
                        run_job(job);
                    }
                }
            }
        }
    }

    /// Threads alive now.
    pub(crate) fn threads(&self) -> usize {
        lock(&self.shared.state).threads
    }

    /// Threads started since the pool was made.
    pub(crate) fn spawned_total(&self) -> usize {
        self.shared.spawned_total.load(Ordering::Relaxed)
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.wake.notify_all();
    }
}

/// Starts a thread with every signal blocked, as QEMU starts its own
/// threads (qemu_thread_create): a signal meant for the process (the
/// server's SIGTERM, a host's handlers, such as QEMU's) then goes to a
/// thread that expects it, never to a worker inside a filesystem call. The
/// mask is set around the spawn, so the thread never runs without it.
fn spawn_without_signals(
    b: thread::Builder,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<thread::JoinHandle<()>> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    );
    let spawned = b.spawn(f);
    if blocked.is_ok() {
        // Restoring the caller's own mask cannot fail.
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    spawned
}

fn worker_main(shared: Arc<Shared>, local: Worker<Job>, number: u32) {
    ThreadRef::set_current_worker(number);
    loop {
        if let Some(job) = find_job(&shared, &local) {
            run_job(job);
            continue;
        }
        let mut st = lock(&shared.state);
        loop {
            if shared.has_queued_jobs() {
                break;
            }
            if st.shutdown {
                st.threads -= 1;
                drop(st);
                forget_stealer(&shared, number);
                return;
            }
            st.idle += 1;
            let (guard, waited) = shared
                .wake
                .wait_timeout(st, shared.idle_timeout)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            st.idle -= 1;
            if st.signalled > 0 {
                st.signalled -= 1;
                break;
            }
            if waited.timed_out() && !shared.has_queued_jobs() {
                st.threads -= 1;
                drop(st);
                forget_stealer(&shared, number);
                return;
            }
        }
    }
}

impl Shared {
    /// Wakes one idle thread if there is one not yet signalled.
    fn signal_idle(&self) {
        let mut st = lock(&self.state);
        if st.idle > st.signalled {
            st.signalled += 1;
            self.wake.notify_one();
        }
    }

    /// Whether a job waits anywhere: the injector or a thread's own deque.
    /// Checked under the state lock before sleeping; a thread that fills its
    /// deque signals under that lock afterwards, so no job is left unseen.
    fn has_queued_jobs(&self) -> bool {
        !self.injector.is_empty() || read_lock(&self.stealers).iter().any(|(_, s)| !s.is_empty())
    }
}

fn run_job(job: Job) {
    // The runtime's jobs catch their own panics and report them to their
    // task; this is the last line for anything else.
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        log::error!("a worker job panicked outside its task");
    }
}

fn find_job(shared: &Shared, local: &Worker<Job>) -> Option<Job> {
    if let Some(job) = local.pop() {
        return Some(job);
    }
    loop {
        let mut retry = false;
        match shared.injector.steal_batch_and_pop(local) {
            Steal::Success(job) => {
                if !local.is_empty() {
                    // Part of the batch waits behind this job, which may
                    // block for long: let an idle peer steal it.
                    shared.signal_idle();
                }
                return Some(job);
            }
            Steal::Retry => retry = true,
            Steal::Empty => {}
        }
        for (_, stealer) in read_lock(&shared.stealers).iter() {
            match stealer.steal() {
                Steal::Success(job) => return Some(job),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
        }
        if !retry {
            return None;
        }
    }
}

fn forget_thread(shared: &Shared, number: u32) {
    lock(&shared.state).threads -= 1;
    forget_stealer(shared, number);
}

fn forget_stealer(shared: &Shared, number: u32) {
    write_lock(&shared.stealers).retain(|(n, _)| *n != number);
}

// The pool's own locks guard plain counters; a panic elsewhere cannot leave
// them half-updated, so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn runs_every_job_and_respects_the_thread_cap() {
        let pool = WorkerPool::new(3, Duration::from_secs(10));
        let (tx, rx) = mpsc::channel();
        for i in 0..200 {
            let tx = tx.clone();
            pool.submit(Box::new(move || {
                tx.send((i, thread::current().name().map(String::from)))
                    .unwrap()
            }));
        }
        let mut seen: Vec<_> = (0..200).map(|_| rx.recv().unwrap()).collect();
        seen.sort();
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            (0..200).collect::<Vec<_>>()
        );
        assert!(seen
            .iter()
            .all(|s| s.1.as_deref().unwrap().starts_with("coro9p-worker-")));
        assert!(
            pool.spawned_total() <= 3,
            "spawned {}",
            pool.spawned_total()
        );
    }

    #[test]
    fn threads_start_on_demand_and_retire_when_idle() {
        let pool = WorkerPool::new(4, Duration::from_millis(30));
        assert_eq!(pool.threads(), 0);
        let (tx, rx) = mpsc::channel();
        pool.submit(Box::new(move || tx.send(()).unwrap()));
        rx.recv().unwrap();
        assert!(pool.threads() >= 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.threads() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pool.threads(), 0, "idle workers did not retire");
        // And a retired pool starts again on the next job.
        let (tx, rx) = mpsc::channel();
        pool.submit(Box::new(move || tx.send(()).unwrap()));
        rx.recv().unwrap();
    }

    #[test]
    fn a_panicking_job_does_not_kill_the_pool() {
        let pool = WorkerPool::new(1, Duration::from_secs(10));
        pool.submit(Box::new(|| panic!("job panic (expected by this test)")));
        let (tx, rx) = mpsc::channel();
        pool.submit(Box::new(move || tx.send(7).unwrap()));
        assert_eq!(rx.recv().unwrap(), 7);
    }
}
