//! The command queue of one process's task: many senders, one receiver, about 120 bytes.
//!
//! Every process has one for its whole life. tokio's `mpsc` channel allocated about 940 bytes for it (the channel
//! and its first block of 32 slots); a process gets a handful of commands in its life, so a queue that grows only
//! while commands wait is enough (issue 19, memory per process). What the task relies on is kept: commands come
//! out in the order they went in, [`Receiver::recv`] answers `None` once every sender is gone (the supervisor
//! dropped the process without a shutdown), and a send to a task that ended fails and hands the command back, so
//! that its reply is dropped and the caller learns it at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

struct Inbox<T> {
    /// The waiting commands; `None` once the receiver is gone.
    queue: Mutex<Option<VecDeque<T>>>,
    /// Signalled by each send and by the last sender's drop (a permit is kept when the task is busy).
    ready: Notify,
    senders: AtomicUsize,
}

/// A queue and its receiving end.
pub(crate) fn inbox<T>() -> (Sender<T>, Receiver<T>) {
    let inbox = Arc::new(Inbox { queue: Mutex::new(Some(VecDeque::new())), ready: Notify::new(), senders: 1.into() });
    (Sender(inbox.clone()), Receiver(inbox))
}

pub(crate) struct Sender<T>(Arc<Inbox<T>>);

impl<T> Sender<T> {
    /// Queues `value`; hands it back when the receiver is gone.
    pub(crate) async fn send(&self, value: T) -> Result<(), T> {
        {
            let mut queue = self.0.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(queue) = queue.as_mut() else { return Err(value) };
            queue.push_back(value);
        }
        self.0.ready.notify_one();
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
            self.0.ready.notify_one();
        }
    }
}

pub(crate) struct Receiver<T>(Arc<Inbox<T>>);

impl<T> Receiver<T> {
    /// The next command, waiting for one; `None` once the queue is empty and every sender is gone. Cancel-safe:
    /// a command is taken out of the queue only when it is returned.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut queue = self.0.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(value) = queue.as_mut().and_then(VecDeque::pop_front) {
                    return Some(value);
                }
            }
            if self.0.senders.load(Ordering::Acquire) == 0 {
                return None;
            }
            self.0.ready.notified().await;
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Later sends fail; what waits is dropped here (its replies with it), not when the last sender goes.
        let waiting = self.0.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        drop(waiting);
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

    #[test]
    fn small() {
        // The queue itself (its `Arc` allocation), against about 940 B for tokio's mpsc channel.
        assert!(
            size_of::<super::Inbox<crate::actor::Cmd>>() <= 128,
            "{}",
            size_of::<super::Inbox<crate::actor::Cmd>>()
        );
    }
}
