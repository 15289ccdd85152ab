//! Waiting between tasks: the co-queue and the coroutine locks
//! (QEMU's util/qemu-coroutine-lock.c: CoQueue, CoMutex, CoRwlock).
//!
//! All of them live on the main thread. A task that waits parks and lets the
//! main thread run others; a task woken from inside another task runs right
//! after that task suspends or ends, before any other event.
//!
//! The locks hand over ownership on unlock: the first waiter gets the lock
//! before it even runs, so nothing that arrives later can overtake it. Both
//! locks are fair (FIFO); a writer waiting on the rwlock holds back readers
//! that come after it. Unlike `RefCell` borrows, their guards are meant to be
//! held across hops: that is what they are for (QEMU's rename lock is held
//! around the worker call).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use super::{Co, Handle, TaskId};

/// A FIFO of parked tasks (QEMU's CoQueue).
#[derive(Default)]
pub struct CoQueue {
    waiters: RefCell<VecDeque<TaskId>>,
}

impl CoQueue {
    /// An empty queue.
    pub fn new() -> CoQueue {
        CoQueue::default()
    }

    /// Parks the calling task at the tail until it is woken
    /// (`qemu_co_queue_wait`).
    pub fn wait(&self, co: &Co) {
        self.waiters.borrow_mut().push_back(co.id());
        co.park();
    }

    /// Wakes the task at the head; false if none was waiting
    /// (`qemu_co_queue_next`).
    pub fn next(&self, handle: &Handle) -> bool {
        let head = self.waiters.borrow_mut().pop_front();
        match head {
            Some(id) => {
                handle.wake(id);
                true
            }
            None => false,
        }
    }

    /// Wakes every waiting task, in queue order; returns how many
    /// (`qemu_co_queue_restart_all`).
    pub fn restart_all(&self, handle: &Handle) -> usize {
        let all = std::mem::take(&mut *self.waiters.borrow_mut());
        let n = all.len();
        for id in all {
            handle.wake(id);
        }
        n
    }

    /// Whether no task waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.borrow().is_empty()
    }

    /// How many tasks wait.
    pub fn len(&self) -> usize {
        self.waiters.borrow().len()
    }
}

/// A fair coroutine mutex (QEMU's CoMutex).
#[derive(Default)]
pub struct CoMutex {
    locked: Cell<bool>,
    queue: CoQueue,
}

impl CoMutex {
    /// An unlocked mutex.
    pub fn new() -> CoMutex {
        CoMutex::default()
    }

    /// Takes the mutex, parking the task while another holds it.
    pub fn lock<'a>(&'a self, co: &Co) -> CoMutexGuard<'a> {
        if self.locked.get() {
            // Handed over by the unlocker: still locked, now ours.
            self.queue.wait(co);
        } else {
            self.locked.set(true);
        }
        CoMutexGuard {
            mutex: self,
            handle: co.handle().clone(),
        }
    }

    /// Whether some task holds the mutex.
    pub fn is_locked(&self) -> bool {
        self.locked.get()
    }
}

/// Holds a [`CoMutex`]; unlocks on drop, handing it to the first waiter.
pub struct CoMutexGuard<'a> {
    mutex: &'a CoMutex,
    handle: Handle,
}

impl Drop for CoMutexGuard<'_> {
    fn drop(&mut self) {
        if !self.mutex.queue.next(&self.handle) {
            self.mutex.locked.set(false);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Read,
    Write,
}

/// A fair coroutine reader/writer lock (QEMU's CoRwlock, used as the 9p
/// rename lock).
#[derive(Default)]
pub struct CoRwLock {
    readers: Cell<usize>,
    writer: Cell<bool>,
    waiters: RefCell<VecDeque<(TaskId, Mode)>>,
}

impl CoRwLock {
    /// An unlocked lock.
    pub fn new() -> CoRwLock {
        CoRwLock::default()
    }

    /// Takes a shared hold. Waits while a writer holds the lock or any task
    /// is already waiting (so a waiting writer is not starved).
    pub fn read<'a>(&'a self, co: &Co) -> CoRwLockReadGuard<'a> {
        if self.writer.get() || !self.waiters.borrow().is_empty() {
            self.waiters.borrow_mut().push_back((co.id(), Mode::Read));
            co.park();
        } else {
            self.readers.set(self.readers.get() + 1);
        }
        CoRwLockReadGuard {
            lock: self,
            handle: co.handle().clone(),
        }
    }

    /// Takes the exclusive hold, waiting for every earlier holder and waiter.
    pub fn write<'a>(&'a self, co: &Co) -> CoRwLockWriteGuard<'a> {
        if self.writer.get() || self.readers.get() > 0 || !self.waiters.borrow().is_empty() {
            self.waiters.borrow_mut().push_back((co.id(), Mode::Write));
            co.park();
        } else {
            self.writer.set(true);
        }
        CoRwLockWriteGuard {
            lock: self,
            handle: co.handle().clone(),
        }
    }

    /// Readers holding the lock now.
    pub fn readers(&self) -> usize {
        self.readers.get()
    }

    /// Whether a writer holds the lock now.
    pub fn is_write_locked(&self) -> bool {
        self.writer.get()
    }

    /// Hands the lock to the head of the queue: one writer, or every reader
    /// up to the next writer.
    fn grant(&self, handle: &Handle) {
        let mut waiters = self.waiters.borrow_mut();
        while let Some(&(id, mode)) = waiters.front() {
            match mode {
                Mode::Write => {
                    if self.readers.get() == 0 && !self.writer.get() {
                        waiters.pop_front();
                        self.writer.set(true);
                        handle.wake(id);
                    }
                    return;
                }
                Mode::Read => {
                    waiters.pop_front();
                    self.readers.set(self.readers.get() + 1);
                    handle.wake(id);
                }
            }
        }
    }
}

/// A shared hold on a [`CoRwLock`]; released on drop.
pub struct CoRwLockReadGuard<'a> {
    lock: &'a CoRwLock,
    handle: Handle,
}

impl Drop for CoRwLockReadGuard<'_> {
    fn drop(&mut self) {
        let left = self.lock.readers.get() - 1;
        self.lock.readers.set(left);
        if left == 0 {
            self.lock.grant(&self.handle);
        }
    }
}

/// The exclusive hold on a [`CoRwLock`]; released on drop.
pub struct CoRwLockWriteGuard<'a> {
    lock: &'a CoRwLock,
    handle: Handle,
}

impl Drop for CoRwLockWriteGuard<'_> {
    fn drop(&mut self) {
        self.lock.writer.set(false);
        self.lock.grant(&self.handle);
    }
}
