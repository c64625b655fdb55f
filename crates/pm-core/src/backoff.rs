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

#[cfg(test)]
mod tests {
    use super::*;
    use RestartDecision::{GiveUp, RetryAfterMs};

    fn policy(max_attempts: u32, backoff: &[u64], retry_indefinitely: bool) -> RestartPolicy {
        RestartPolicy {
            max_attempts,
            backoff_intervals_ms: backoff.to_vec(),
            retry_indefinitely,
            indefinite_interval_ms: 60_000,
            ..RestartPolicy::default()
        }
    }

    /// The decisions for attempts 0, 1, 2, ... in order.
    fn check(policy: &RestartPolicy, expected: &[RestartDecision]) {
        let got: Vec<RestartDecision> = (0..expected.len() as u32).map(|k| next_restart(policy, k)).collect();
        assert_eq!(got, expected, "{policy:?}");
    }

    #[test]
    fn backoff_steps_then_gives_up() {
        check(
            &policy(3, &[100, 200], false),
            &[RetryAfterMs(100), RetryAfterMs(200), RetryAfterMs(200), GiveUp, GiveUp],
        );
    }

    #[test]
    fn default_policy_follows_the_guide() {
        check(
            &RestartPolicy::default(),
            &[
                RetryAfterMs(1000),
                RetryAfterMs(2000),
                RetryAfterMs(5000),
                RetryAfterMs(5000),
                RetryAfterMs(5000),
                GiveUp,
            ],
        );
    }

    #[test]
    fn empty_backoff_means_no_delay() {
        check(&policy(2, &[], false), &[RetryAfterMs(0), RetryAfterMs(0), GiveUp]);
    }

    #[test]
    fn retry_indefinitely_switches_to_the_long_interval() {
        check(
            &policy(2, &[100, 200, 300], true),
            &[RetryAfterMs(100), RetryAfterMs(200), RetryAfterMs(60_000), RetryAfterMs(60_000)],
        );
    }

    #[test]
    fn zero_max_attempts() {
        check(&policy(0, &[100], false), &[GiveUp, GiveUp]);
        check(&policy(0, &[100], true), &[RetryAfterMs(60_000), RetryAfterMs(60_000)]);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        assert_eq!(next_restart(&policy(u32::MAX, &[7, 9], false), u32::MAX - 1), RetryAfterMs(9));
        assert_eq!(next_restart(&policy(u32::MAX, &[7, 9], false), u32::MAX), GiveUp);
    }
}
