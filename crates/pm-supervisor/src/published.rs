//! The latest [`Snapshot`](crate::actor::Snapshot) of a process: written by its task, read by everyone else, and
//! waited on by the few callers that wait for a state.
//!
//! It does what `tokio::sync::watch` did here in about a third of the memory: a watch channel is about 420 B (it
//! keeps eight `Notify`s to spread many waiters), and every process has one for its whole life, where waiters are
//! rare. This is the value under a lock, one `Notify` and a flag set when the task ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio::sync::Notify;

struct Inner<T> {
    value: RwLock<T>,
    /// The task's sender is gone: no value comes after the current one.
    closed: AtomicBool,
    changed: Notify,
}

/// The writing side, held by the process's task; dropping it ends every wait.
pub(crate) struct Publisher<T>(Arc<Inner<T>>);

/// A reading side; clones read the same value.
pub(crate) struct Published<T>(Arc<Inner<T>>);

/// The process's task ended before the value satisfied a wait.
#[derive(Debug)]
pub(crate) struct Closed;

/// A new cell holding `value`.
pub(crate) fn channel<T>(value: T) -> (Publisher<T>, Published<T>) {
    let inner = Arc::new(Inner { value: RwLock::new(value), closed: AtomicBool::new(false), changed: Notify::new() });
    (Publisher(inner.clone()), Published(inner))
}

fn read<T>(inner: &Inner<T>) -> RwLockReadGuard<'_, T> {
    inner.value.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T> Publisher<T> {
    /// The current value.
    pub(crate) fn borrow(&self) -> RwLockReadGuard<'_, T> {
        read(&self.0)
    }

    /// Replaces the value and wakes every waiter; answers the previous one.
    pub(crate) fn send_replace(&self, value: T) -> T {
        let old = std::mem::replace(&mut *self.0.value.write().unwrap_or_else(|poisoned| poisoned.into_inner()), value);
        self.0.changed.notify_waiters();
        old
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

impl<T> Clone for Published<T> {
    fn clone(&self) -> Self {
        Published(self.0.clone())
    }
}

impl<T: Clone> Published<T> {
    /// The current value.
    pub(crate) fn borrow(&self) -> RwLockReadGuard<'_, T> {
        read(&self.0)
    }

    /// Waits until the value satisfies `done` (the current one included) and answers a copy of it; [`Closed`] once
    /// the task ended without it doing so.
    pub(crate) async fn wait_for(&self, mut done: impl FnMut(&T) -> bool) -> Result<T, Closed> {
        loop {
            // Registered before the value is looked at, so a change in between wakes it.
            let notified = self.0.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let value = read(&self.0);
                if done(&value) {
                    return Ok(value.clone());
                }
            }
            if self.0.closed.load(Ordering::SeqCst) {
                return Err(Closed);
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn small() {
        let size = std::mem::size_of::<Inner<crate::actor::Snapshot>>();
        assert!(size <= 160, "the published snapshot's cell is {size} B");
    }

    #[tokio::test]
    async fn a_wait_sees_the_current_value_a_later_one_and_the_end() {
        let (publisher, published) = channel(1u32);
        assert_eq!(published.wait_for(|value| *value == 1).await.unwrap(), 1);
        let waiter = published.clone();
        let wait = tokio::spawn(async move { waiter.wait_for(|value| *value == 3).await });
        publisher.send_replace(2);
        tokio::task::yield_now().await;
        assert_eq!(publisher.send_replace(3), 2);
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap().unwrap().unwrap(), 3);
        let waiter = published.clone();
        let wait = tokio::spawn(async move { waiter.wait_for(|value| *value == 4).await });
        tokio::task::yield_now().await;
        drop(publisher);
        assert!(tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap().unwrap().is_err());
        // The last value stays readable.
        assert_eq!(*published.borrow(), 3);
    }
}
