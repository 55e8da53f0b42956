//! The guards of a partition's two locks, and in debug builds a check of the order they are
//! taken in: the replica state before the log, never one of them twice on a thread.
//!
//! Both are `parking_lot` mutexes, which are not reentrant: a thread that takes a lock it
//! holds waits for itself, and two threads that take them in opposite orders wait for each
//! other. Either stops every task of the runtime worker it happens on, and with the few
//! workers of a small machine the whole node. A debug build (every test) panics at the
//! offending call instead, so a wrong order fails the first test that takes that path
//! rather than a rare race later. Release builds carry no check.

use std::ops::{Deref, DerefMut};

use parking_lot::{Mutex, MutexGuard};

#[cfg(debug_assertions)]
mod held {
    use std::cell::RefCell;

    /// Which of a partition's locks.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Kind {
        Replica,
        Log,
    }

    thread_local! {
        /// The partition locks this thread holds: (kind, address of the mutex).
        static HELD: RefCell<Vec<(Kind, usize)>> = const { RefCell::new(Vec::new()) };
    }

    /// Check that taking `kind` at `addr` now keeps the order, then record it as held.
    pub fn acquire(kind: Kind, addr: usize, name: &dyn Fn() -> String) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if h.contains(&(kind, addr)) {
                panic!("{}: {kind:?} lock taken twice on one thread (it would wait for itself)", name());
            }
            if kind == Kind::Replica && h.iter().any(|(k, _)| *k == Kind::Log) {
                panic!(
                    "{}: replica state locked while a log lock is held (the order is replica state, then log)",
                    name()
                );
            }
            h.push((kind, addr));
        });
    }

    /// Record that the lock is released.
    pub fn release(kind: Kind, addr: usize) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|e| *e == (kind, addr)) {
                h.swap_remove(i);
            }
        });
    }
}

#[cfg(debug_assertions)]
pub(super) use held::Kind;

/// Release builds: the kinds exist so that call sites read the same.
#[cfg(not(debug_assertions))]
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Replica,
    Log,
}

/// A held partition lock (see the module's notes on order).
pub struct Guard<'a, T> {
    inner: MutexGuard<'a, T>,
    #[cfg(debug_assertions)]
    kind: Kind,
}

impl<'a, T> Guard<'a, T> {
    /// Lock `m`, a lock of kind `kind` of the partition that `name` names.
    #[cfg_attr(not(debug_assertions), allow(unused_variables))]
    pub(super) fn lock(m: &'a Mutex<T>, kind: Kind, name: &dyn Fn() -> String) -> Self {
        #[cfg(debug_assertions)]
        held::acquire(kind, m as *const Mutex<T> as usize, name);
        Guard {
            inner: m.lock(),
            #[cfg(debug_assertions)]
            kind,
        }
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

#[cfg(debug_assertions)]
impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        held::release(
            self.kind,
            MutexGuard::mutex(&self.inner) as *const Mutex<T> as usize,
        );
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    fn name() -> String {
        "t-0".into()
    }

    #[test]
    fn the_order_replica_then_log_is_allowed_and_released_locks_are_forgotten() {
        let (repl, log) = (Mutex::new(1), Mutex::new(2));
        {
            let _r = Guard::lock(&repl, Kind::Replica, &name);
            let _l = Guard::lock(&log, Kind::Log, &name);
        }
        // Released: the log alone, then the replica state alone, again.
        drop(Guard::lock(&log, Kind::Log, &name));
        drop(Guard::lock(&repl, Kind::Replica, &name));
    }

    #[test]
    #[should_panic(expected = "the order is replica state, then log")]
    fn the_replica_state_after_a_log_panics() {
        let (repl, log) = (Mutex::new(1), Mutex::new(2));
        let _l = Guard::lock(&log, Kind::Log, &name);
        let _r = Guard::lock(&repl, Kind::Replica, &name);
    }

    #[test]
    #[should_panic(expected = "taken twice")]
    fn a_lock_taken_twice_panics_instead_of_waiting_forever() {
        let repl = Mutex::new(1);
        let _a = Guard::lock(&repl, Kind::Replica, &name);
        let _b = Guard::lock(&repl, Kind::Replica, &name);
    }

    #[test]
    fn two_partitions_logs_may_be_held_together() {
        let (a, b) = (Mutex::new(1), Mutex::new(2));
        let _a = Guard::lock(&a, Kind::Log, &name);
        let _b = Guard::lock(&b, Kind::Log, &name);
    }
}
