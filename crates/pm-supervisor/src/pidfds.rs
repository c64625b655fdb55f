//! One epoll of the monitor's own for the pidfds of its running children, watched by a thread of its own.
//!
//! Each descriptor registered with tokio's reactor costs a registration of 256 B (cache-line aligned), kept for the
//! child's whole run; a child here costs a slot of 24 B in one table (issue 19, memory of a running process: about
//! 0.25 MiB at 1,000 running, 2.5 MiB at 10,000). The thread waits in `epoll_wait` and, when a child's pidfd becomes
//! readable (the child ended), marks its slot ready and wakes the task that waits for it; the task then reaps the
//! child as before. Each pidfd is watched once (`EPOLLONESHOT`): [`Watched::clear_ready`] watches it again.
//!
//! The thread starts with the first child watched and lives as long as the monitor; a waker is runtime-agnostic, so
//! the table serves every runtime of the process (the tests' as well).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use rustix::event::epoll;

/// The watching thread's stack: a loop around `epoll_wait` and a few wakes.
const THREAD_STACK: usize = 64 * 1024;
/// Events read by one `epoll_wait`.
const EVENTS_AT_ONCE: usize = 64;

/// A pidfd watched by the monitor's epoll until dropped.
pub(crate) struct Watched {
    fd: OwnedFd,
    /// The slot's index and its generation (a slot freed and taken again by another pidfd has a new one, so that an
    /// event for the pidfd that held it before cannot mark the new one ready).
    key: u64,
}

/// One watched pidfd's state.
#[derive(Default)]
struct Slot {
    generation: u32,
    ready: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

struct Table {
    epoll: OwnedFd,
    slots: Mutex<Slots>,
}

impl Table {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The table and its thread, made at the first watch (an error then is answered to every watch).
fn table() -> std::io::Result<&'static Table> {
    static TABLE: OnceLock<Result<Table, std::io::ErrorKind>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|err| std::io::Error::from(err).kind())?;
        Ok(Table { epoll, slots: Mutex::default() })
    });
    match table {
        Ok(table) => {
            static THREAD: OnceLock<std::io::Result<()>> = OnceLock::new();
            let started = THREAD.get_or_init(|| {
                std::thread::Builder::new()
                    .name("pm-pidfds".to_owned())
                    .stack_size(THREAD_STACK)
                    .spawn(move || watch(table))
                    .map(drop)
            });
            match started {
                Ok(()) => Ok(table),
                Err(err) => Err(std::io::Error::new(err.kind(), "cannot start the pidfd thread")),
            }
        }
        Err(kind) => Err(std::io::Error::new(*kind, "cannot create the pidfd epoll")),
    }
}

/// The watching thread: marks the slots of readable pidfds ready and wakes their tasks.
fn watch(table: &'static Table) {
    let mut events = Vec::with_capacity(EVENTS_AT_ONCE);
    let mut wakers = Vec::with_capacity(EVENTS_AT_ONCE);
    loop {
        events.clear();
        match epoll::wait(&table.epoll, rustix::buffer::spare_capacity(&mut events), None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => {
                tracing::error!("the pidfd epoll failed: {err}");
                return;
            }
        }
        {
            let mut slots = table.slots();
            for event in &events {
                let (index, generation) = split(event.data.u64());
                if let Some(slot) = slots.slots.get_mut(index as usize).filter(|slot| slot.generation == generation) {
                    slot.ready = true;
                    wakers.extend(slot.waker.take());
                }
            }
        }
        for waker in wakers.drain(..) {
            waker.wake();
        }
    }
}

fn split(key: u64) -> (u32, u32) {
    (key as u32, (key >> 32) as u32)
}

/// What the epoll watches a pidfd for: readable (the process ended), once.
fn interest() -> epoll::EventFlags {
    epoll::EventFlags::IN | epoll::EventFlags::ONESHOT
}

impl Watched {
    /// Watches `fd` (a pidfd) until the answer is dropped.
    pub(crate) fn new(fd: OwnedFd) -> std::io::Result<Watched> {
        let table = table()?;
        let key = {
            let mut slots = table.slots();
            let index = match slots.free.pop() {
                Some(index) => index,
                None => {
                    slots.slots.push(Slot::default());
                    u32::try_from(slots.slots.len() - 1).map_err(|_| std::io::ErrorKind::OutOfMemory)?
                }
            };
            u64::from(index) | (u64::from(slots.slots[index as usize].generation) << 32)
        };
        let watched = Watched { fd, key };
        epoll::add(&table.epoll, &watched.fd, epoll::EventData::new_u64(key), interest())?;
        Ok(watched)
    }

    /// Ready once the pidfd was readable (the process ended) since it was last watched; else keeps `cx`'s waker to
    /// wake when it is.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let Ok(table) = table() else { return Poll::Ready(()) };
        let mut slots = table.slots();
        let slot = &mut slots.slots[split(self.key).0 as usize];
        if slot.ready {
            return Poll::Ready(());
        }
        if !slot.waker.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Forgets a readiness that turned out spurious and watches the pidfd again.
    pub(crate) fn clear_ready(&self) {
        let Ok(table) = table() else { return };
        table.slots().slots[split(self.key).0 as usize].ready = false;
        let _ = epoll::modify(&table.epoll, &self.fd, epoll::EventData::new_u64(self.key), interest());
    }
}

impl AsFd for Watched {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let Ok(table) = table() else { return };
        let _ = epoll::delete(&table.epoll, &self.fd);
        let mut slots = table.slots();
        let index = split(self.key).0;
        let slot = &mut slots.slots[index as usize];
        *slot = Slot { generation: slot.generation.wrapping_add(1), ready: false, waker: None };
        slots.free.push(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A slot costs a few dozen bytes, not a reactor registration's 256 B.
    #[test]
    fn a_slot_is_small() {
        assert!(std::mem::size_of::<Slot>() <= 32, "a slot is {} B", std::mem::size_of::<Slot>());
    }

    /// A child's pidfd is ready once the child ended, not before; a freed slot taken by another pidfd does not
    /// start ready.
    #[tokio::test]
    async fn ready_when_the_child_ends() {
        for _ in 0..2 {
            let mut child = Killed(std::process::Command::new("sleep").arg("30").spawn().unwrap());
            let pid = rustix::process::Pid::from_raw(child.0.id() as i32).unwrap();
            let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
            let watched = Watched::new(fd).unwrap();
            let early =
                tokio::time::timeout(Duration::from_millis(100), std::future::poll_fn(|cx| watched.poll_ready(cx)));
            assert!(early.await.is_err(), "ready while the child runs");
            child.0.kill().unwrap();
            tokio::time::timeout(Duration::from_secs(30), std::future::poll_fn(|cx| watched.poll_ready(cx)))
                .await
                .expect("not ready after the child ended");
            child.0.wait().unwrap();
        }
    }

    /// Kills the child, pass or fail (`Child::kill` sends nothing to a child already reaped).
    struct Killed(std::process::Child);

    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
