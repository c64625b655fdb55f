//! The timers of a process's task share one sleep: the soonest of its deadlines.

use tokio::time::Instant;

/// The soonest of `deadlines` and its index (the first one of equal deadlines), or `None` when none is set.
pub(crate) fn soonest<const N: usize>(deadlines: [Option<Instant>; N]) -> Option<(Instant, usize)> {
    deadlines
        .into_iter()
        .enumerate()
        .filter_map(|(which, at)| at.map(|at| (at, which)))
        .min_by_key(|&(at, which)| (at, which))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_soonest_deadline_wins_and_ties_go_to_the_first() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(soonest([None, None, None]), None);
        assert_eq!(soonest([Some(later), None, Some(now)]), Some((now, 2)));
        assert_eq!(soonest([None, Some(now), Some(now), Some(later)]), Some((now, 1)));
        assert_eq!(soonest([Some(later)]), Some((later, 0)));
    }
}
