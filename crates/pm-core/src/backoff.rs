//! The restart schedule of a crashed process.

use crate::RestartPolicy;

/// What to do after the `attempt`-th crash in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart after this many milliseconds (state `retrying` meanwhile).
    RetryAfterMs(u64),
    /// The attempts are used up: state `failed`.
    GiveUp,
}

/// Decides the next restart, given how many restarts were already made since the last reset.
///
/// Attempt k (0-based) waits `backoff_intervals_ms[min(k, len - 1)]`. Once `max_attempts` restarts were made, the
/// process fails, or with `retry_indefinitely` keeps retrying every `indefinite_interval_ms`.
pub fn next_restart(policy: &RestartPolicy, attempts_made: u32) -> RestartDecision {
    if attempts_made < policy.max_attempts {
        let intervals = &policy.backoff_intervals_ms;
        let delay = match intervals.len() {
            0 => 0,
            len => intervals[(attempts_made as usize).min(len - 1)],
        };
        RestartDecision::RetryAfterMs(delay)
    } else if policy.retry_indefinitely {
        RestartDecision::RetryAfterMs(policy.indefinite_interval_ms)
    } else {
        RestartDecision::GiveUp
    }
}
