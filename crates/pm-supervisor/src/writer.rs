//! The registry writer: the task that stores what the processes' tasks observe (states, PIDs, exits, restart
//! counts) in the registry file, coalescing bursts of changes into at most a few whole-file writes a second.
//!
//! Acknowledged API actions do not wait for it: they store their outcome before they answer
//! ([`Monitor::commit`]); the writer covers everything else (restarts, exits, a start-up).

use std::sync::Arc;
use std::time::Duration;

use crate::monitor::Monitor;

/// Least time between two background registry writes.
pub(crate) const WRITER_GAP: Duration = Duration::from_millis(250);
/// The gap after a write is also at least this many times what the write took: a whole-file write of a large
/// registry (about 0.1 s at 10,000 entries, more on a loaded machine) then takes at most a sixth of a core,
/// and a start-up of many processes is not slowed down by rewrites of their states every quarter second.
const GAP_PER_WRITE_TIME: u32 = 5;
/// How long the writer lets a change settle before it writes: the acknowledged action that made it has stored its
/// outcome in the journal by then (a few milliseconds), so the rewrite does not hold up its answer.
const SETTLE: Duration = Duration::from_millis(50);
/// Longest the writer holds a write back while launches take every turn (a start-up of many processes): each
/// whole-file write of 10,000 entries took CPU from the start itself (about a fifth of the monitor's CPU in a start
/// of 10,000; issue 19), and a successor finds processes started meanwhile by their owner key anyway.
const HOLD_DURING_LAUNCHES: Duration = Duration::from_secs(5);
/// How often a held-back write looks whether the launches are over.
const HOLD_STEP: Duration = Duration::from_millis(100);
/// How long the writer waits after a failed write before it tries again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How long changes must have settled before the heap a burst freed goes back to the system.
const SETTLED: Duration = Duration::from_secs(1);

/// The running writer task; stopped by [`Writer::stop`] (or on drop).
pub(crate) struct Writer(tokio::task::JoinHandle<()>);

impl Writer {
    /// Starts the writer of `monitor`'s registry, and has it write once now.
    pub(crate) fn start(monitor: Arc<Monitor>) -> Writer {
        let sup = monitor.supervisor().clone();
        let writer = Writer(tokio::spawn(write_changes(monitor)));
        sup.notify_changed();
        writer
    }

    /// Stops the writer (a write under way on the blocking pool finishes; the final states are written by the
    /// shutdown, after which nothing else is).
    pub(crate) fn stop(self) {
        self.0.abort();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for a change, lets it settle for [`SETTLE`], writes every process's state (folding the journal), then
/// keeps a gap ([`gap_after`]) before the next write: the changes of the gap go out together in the next one. A
/// failed write is retried; the daemon supervises from memory meanwhile.
async fn write_changes(monitor: Arc<Monitor>) {
    let sup = monitor.supervisor().clone();
    let mut failing = false;
    loop {
        // Once a burst of changes (a start-up, many restarts) has settled for a second, the heap it freed goes
        // back to the system instead of staying resident; then wait for the next change.
        if tokio::time::timeout(SETTLED, sup.changed()).await.is_err() {
            crate::os::trim_heap();
            sup.changed().await;
        }
        tokio::time::sleep(SETTLE).await;
        // Meanwhile the cached registry takes up the tasks' changed entries, so that each start's copy of its
        // entry replaces the parsed one at once, not in the write after the start (see `Monitor::adopt_entries`).
        hold_during_launches(|| {
            monitor.adopt_entries();
        })
        .await;
        let started = tokio::time::Instant::now();
        match monitor.flush().await {
            Ok(()) => {
                if failing {
                    tracing::info!("registry writes work again");
                }
                failing = false;
                tokio::time::sleep(gap_after(started.elapsed())).await;
            }
            Err(err) => {
                if !failing {
                    tracing::error!("cannot write the registry: {err}; supervising from memory and retrying");
                }
                failing = true;
                tokio::time::sleep(RETRY_AFTER).await;
                sup.notify_changed();
            }
        }
    }
}

/// Waits while launches take every turn (see [`HOLD_DURING_LAUNCHES`]), at most that long, calling `each_step`
/// every [`HOLD_STEP`] meanwhile.
async fn hold_during_launches(mut each_step: impl FnMut()) {
    let until = tokio::time::Instant::now() + HOLD_DURING_LAUNCHES;
    while crate::launch::every_turn_taken() && tokio::time::Instant::now() < until {
        tokio::time::sleep(HOLD_STEP).await;
        each_step();
    }
}

/// The gap after a write that took `took`: [`WRITER_GAP`], or [`GAP_PER_WRITE_TIME`] times `took` when longer.
fn gap_after(took: Duration) -> Duration {
    WRITER_GAP.max(took * GAP_PER_WRITE_TIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write is held back while launches take every turn, and goes ahead once one is free (or after
    /// [`HOLD_DURING_LAUNCHES`]); meanwhile the hold's step runs again and again (the cache taking up the tasks'
    /// entries, `Monitor::adopt_entries`).
    #[tokio::test]
    async fn a_write_waits_while_launches_take_every_turn() {
        let mut turns = Vec::new();
        for _ in 0..4 {
            turns.push(tokio::time::timeout(Duration::from_secs(30), crate::launch::turn()).await.expect("a turn"));
        }
        assert!(crate::launch::every_turn_taken(), "the launches take four turns at most");
        let steps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = steps.clone();
        let held = tokio::spawn(hold_during_launches(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while steps.load(std::sync::atomic::Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(steps.load(std::sync::atomic::Ordering::SeqCst) >= 2, "the hold's step did not run while it held");
        assert!(!held.is_finished(), "the write went ahead while every turn was taken");
        drop(turns);
        tokio::time::timeout(Duration::from_secs(30), held).await.expect("the write waits no longer").unwrap();
    }

    /// Quick writes keep the usual gap; a slow write (a large registry) spaces the next one out in proportion.
    #[test]
    fn the_gap_grows_with_the_cost_of_a_write() {
        assert_eq!(gap_after(Duration::from_millis(3)), WRITER_GAP);
        assert_eq!(gap_after(Duration::from_millis(50)), WRITER_GAP);
        assert_eq!(gap_after(Duration::from_millis(200)), Duration::from_secs(1));
    }
}
