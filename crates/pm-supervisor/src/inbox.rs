//! The command queue of one process's task: many senders, one receiver, about 100 bytes.
//!
//! Every process has one for its whole life. tokio's `mpsc` channel allocated about 940 bytes for it (the channel
//! and its first block of 32 slots); a process gets a handful of commands in its life, so a queue that grows only
//! while commands wait is enough (issue 19, memory per process). What the task relies on is kept: commands come
//! out in the order they went in, [`Receiver::recv`] answers `None` once every sender is gone (the supervisor
//! dropped the process without a shutdown), and a send to a task that ended fails and hands the command back, so
//! that its reply is dropped and the caller learns it at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct Inbox<T> {
    state: Mutex<State<T>>,
    senders: AtomicUsize,
}

struct State<T> {
    /// The waiting commands; `None` once the receiver is gone.
    queue: Option<VecDeque<T>>,
    /// The receiver's task while it waits, woken by a send and by the last sender's drop. A waker kept here
    /// instead of a `Notify`: the task's wait then holds no future of its own (a `Notified` is about 70 B that
    /// every process's task kept for its whole life, issue 19).
    waiting: Option<Waker>,
}

impl<T> Inbox<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes the receiver if it waits.
    fn wake(&self) {
        let waiting = self.lock().waiting.take();
        if let Some(waker) = waiting {
            waker.wake();
        }
    }
}

/// A queue and its receiving end.
pub(crate) fn inbox<T>() -> (Sender<T>, Receiver<T>) {
    let state = State { queue: Some(VecDeque::new()), waiting: None };
    let inbox = Arc::new(Inbox { state: Mutex::new(state), senders: 1.into() });
    (Sender(inbox.clone()), Receiver(inbox))
}

pub(crate) struct Sender<T>(Arc<Inbox<T>>);

impl<T> Sender<T> {
    /// Queues `value`; hands it back when the receiver is gone.
    pub(crate) async fn send(&self, value: T) -> Result<(), T> {
        let waiting = {
            let mut state = self.0.lock();
            let Some(queue) = state.queue.as_mut() else { return Err(value) };
            queue.push_back(value);
            state.waiting.take()
        };
        if let Some(waker) = waiting {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.wake();
        }
    }
}

pub(crate) struct Receiver<T>(Arc<Inbox<T>>);

impl<T> Receiver<T> {
    /// The next command, waiting for one; `None` once the queue is empty and every sender is gone. Cancel-safe:
    /// a command is taken out of the queue only when it is returned.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Receiver::recv`] as a poll: the next command, `None` once the queue is empty and every sender is gone,
    /// or pending with the task's waker kept for the next send.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.0.lock();
        if let Some(value) = state.queue.as_mut().and_then(VecDeque::pop_front) {
            return Poll::Ready(Some(value));
        }
        // Read under the lock: the last sender's drop counts down before it takes the waker under the lock, so
        // either the count reads 0 here or the drop finds the waker kept below.
        if self.0.senders.load(Ordering::Acquire) == 0 {
            return Poll::Ready(None);
        }
        match &mut state.waiting {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waiting => *waiting = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Later sends fail; what waits is dropped here (its replies with it), not when the last sender goes, and
        // so is the task's waker (which would keep the ended task's allocation alive as long as a sender).
        let (waiting, waker) = {
            let mut state = self.0.lock();
            (state.queue.take(), state.waiting.take())
        };
        drop((waiting, waker));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::inbox;

    #[tokio::test]
    async fn in_order_then_none_once_every_sender_is_gone() {
        let (tx, mut rx) = inbox::<u32>();
        let other = tx.clone();
        tx.send(1).await.unwrap();
        other.send(2).await.unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        other.send(3).await.unwrap();
        drop((tx, other));
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap(), Some(3));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_when_the_last_sender_goes() {
        let (tx, mut rx) = inbox::<u32>();
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap(), None);
    }

    #[tokio::test]
    async fn a_send_after_the_receiver_is_gone_hands_the_value_back_and_waiting_values_are_dropped() {
        let (tx, rx) = inbox::<tokio::sync::oneshot::Sender<()>>();
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.send(reply).await.unwrap();
        drop(rx);
        // The queued reply was dropped with the receiver: its caller is not left waiting.
        assert!(answer.await.is_err());
        let (reply, _answer) = tokio::sync::oneshot::channel();
        assert!(tx.send(reply).await.is_err());
    }

    /// A waiting receiver keeps its task's waker in the queue: a send wakes it, and a receiver dropped while it
    /// waits takes the waker with it (a sender outlives the task, and the waker would keep the task's memory).
    #[test]
    fn the_waker_is_woken_by_a_send_and_dropped_with_the_receiver() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::{Context, Poll, Wake, Waker};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = inbox::<u32>();
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        send_now(&tx, 7);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "a send wakes the waiting receiver once");
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(7)));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        assert_eq!(Arc::strong_count(&count), 3, "the queue keeps one waker");
        drop(rx);
        assert_eq!(Arc::strong_count(&count), 2, "the receiver's drop left its waker in the queue");
        drop(tx);
    }

    /// Sends without a runtime (`send` never waits).
    fn send_now(tx: &super::Sender<u32>, value: u32) {
        let mut send = std::pin::pin!(tx.send(value));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(std::future::Future::poll(send.as_mut(), &mut cx).is_ready());
    }

    #[test]
    fn small() {
        // The queue itself (its `Arc` allocation), against about 940 B for tokio's mpsc channel (96 B with a
        // `Notify`).
        assert!(size_of::<super::Inbox<crate::actor::Cmd>>() <= 80, "{}", size_of::<super::Inbox<crate::actor::Cmd>>());
    }
}
