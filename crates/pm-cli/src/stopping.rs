//! What `--stop` checks around the signal: whether a shutdown is already under way (then it only waits for it),
//! how long it may take, and whether every managed process is in fact gone afterwards.

use std::time::Duration;

use pm_core::Registry;

/// Added to the longest `stopTimeoutMs` for the time `--stop` waits for the monitor to exit.
const STOP_WAIT_MARGIN: Duration = Duration::from_secs(60);
/// The least time `--stop` waits for the monitor to exit.
const MIN_STOP_WAIT: Duration = Duration::from_secs(90);

/// A managed process that ran when `--stop` began: id, PID (its group leader) and start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Child {
    pub(crate) id: String,
    pub(crate) pid: u32,
    pub(crate) start_time: Option<u64>,
}

/// The managed processes of `registry` that have a child (partners left out: they outlive a stop).
pub(crate) fn children(registry: &Registry) -> Vec<Child> {
    registry
        .processes
        .values()
        .filter(|entry| entry.state.has_child() && !entry.config.partner)
        .filter_map(|entry| {
            Some(Child { id: entry.config.id.clone(), pid: entry.pid?, start_time: entry.pid_start_time })
        })
        .collect()
}

/// How long `--stop` waits for the monitor to exit: its processes stop side by side, each within its
/// `stopTimeoutMs`, so the longest of them plus a margin (at least 90 s).
pub(crate) fn stop_wait(registry: &Registry) -> Duration {
    let longest = registry.processes.values().map(|entry| entry.config.stop_timeout_ms()).max().unwrap_or(0);
    (Duration::from_millis(longest) + STOP_WAIT_MARGIN).max(MIN_STOP_WAIT)
}

/// Those of `children` (merged with the ones `after` still records) that still run: the same process, or
/// live members of its group.
pub(crate) fn left_running(mut children: Vec<Child>, after: Option<&Registry>) -> Vec<Child> {
    if let Some(after) = after {
        for child in self::children(after) {
            if !children.contains(&child) {
                children.push(child);
            }
        }
    }
    children.retain(|child| {
        pm_registry::proc::is_same_process(child.pid, child.start_time)
            || (!pm_registry::proc::alive(child.pid) && pm_registry::proc::group_alive(child.pid))
    });
    children
}

#[cfg(test)]
mod tests {
    use pm_core::{ProcessConfig, ProcessEntry, ProcessState, Timestamp};

    use super::*;

    #[test]
    fn waits_cover_the_longest_stop_timeout() {
        let mut registry = Registry::new_default("default");
        assert_eq!(stop_wait(&registry), MIN_STOP_WAIT);
        let mut slow = ProcessConfig::new("slow", "slow", "/bin/true");
        slow.stop_timeout_ms = Some(120_000);
        let mut entry = ProcessEntry::new(slow, Timestamp::now());
        entry.state = ProcessState::Running;
        entry.pid = Some(std::process::id());
        entry.pid_start_time = pm_registry::proc::start_time(std::process::id());
        registry.processes.insert("slow".to_owned(), entry.into());
        assert_eq!(stop_wait(&registry), Duration::from_secs(180));
        let left = left_running(children(&registry), None);
        assert_eq!(left.len(), 1, "this test process is alive");
        assert_eq!(left[0].id, "slow");
    }
}
