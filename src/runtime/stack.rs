//! The bounded pool of coroutine stacks.
//!
//! QEMU keeps a pool of finished coroutines so that a request does not pay
//! for a fresh stack; we keep finished stacks for the same reason. The pool
//! also bounds how many stacks exist at once: each is an mmap with a guard
//! page, and the kernel caps the number of mappings a process may have, so
//! an unbounded number of in-flight tasks would eventually fail to start at
//! all. Tasks beyond the bound wait for a stack (see `Executor::enter`).

use std::io;

use corosensei::stack::DefaultStack;

/// Stack accounting, readable through `Handle::stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Stacks held by running or suspended tasks.
    pub in_use: usize,
    /// Finished stacks kept for reuse.
    pub cached: usize,
    /// Stacks ever allocated (mmap) by this pool.
    pub allocated_total: u64,
    /// The most stacks that were in use at one time.
    pub peak_in_use: usize,
}

pub(crate) struct StackPool {
    size: usize,
    max: usize,
    reuse: bool,
    free: Vec<DefaultStack>,
    stats: StackStats,
}

impl StackPool {
    pub(crate) fn new(size: usize, max: usize, reuse: bool) -> StackPool {
        StackPool {
            size,
            max: max.max(1),
            reuse,
            free: Vec::new(),
            stats: StackStats::default(),
        }
    }

    /// A stack for a new task: a cached one, a new one while under the bound,
    /// or `None` when all `max` stacks are in use.
    pub(crate) fn take(&mut self) -> io::Result<Option<DefaultStack>> {
        let stack = match self.free.pop() {
            Some(stack) => stack,
            None if self.stats.in_use < self.max => {
                // DefaultStack maps the stack with a guard page below it, so
                // an overflow faults instead of writing over other memory.
                let stack = DefaultStack::new(self.size)?;
                self.stats.allocated_total += 1;
                stack
            }
            None => return Ok(None),
        };
        self.stats.in_use += 1;
        self.stats.peak_in_use = self.stats.peak_in_use.max(self.stats.in_use);
        Ok(Some(stack))
    }

    /// Returns a finished task's stack.
    pub(crate) fn put(&mut self, stack: DefaultStack) {
        self.stats.in_use -= 1;
        if self.reuse {
            self.free.push(stack);
        }
    }

    /// Gives back the slot of a stack that was lost with its task (a task
    /// dropped while suspended unwinds and frees its own stack).
    pub(crate) fn forget_one(&mut self) {
        self.stats.in_use -= 1;
    }

    pub(crate) fn stats(&self) -> StackStats {
        StackStats {
            cached: self.free.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_reused() {
        let mut pool = StackPool::new(64 * 1024, 2, true);
        let a = pool.take().unwrap().unwrap();
        let b = pool.take().unwrap().unwrap();
        assert!(
            pool.take().unwrap().is_none(),
            "third stack past a bound of 2"
        );
        pool.put(a);
        let c = pool.take().unwrap().unwrap();
        pool.put(b);
        pool.put(c);
        let s = pool.stats();
        assert_eq!(s.allocated_total, 2);
        assert_eq!(s.in_use, 0);
        assert_eq!(s.cached, 2);
        assert_eq!(s.peak_in_use, 2);
    }

    #[test]
    fn without_reuse_every_take_allocates() {
        let mut pool = StackPool::new(64 * 1024, 4, false);
        for _ in 0..3 {
            let s = pool.take().unwrap().unwrap();
            pool.put(s);
        }
        assert_eq!(pool.stats().allocated_total, 3);
        assert_eq!(pool.stats().cached, 0);
    }
}
