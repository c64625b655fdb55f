//! What one process costs in memory: one copy of each entry, and the sizes of the per-process parts (a
//! measurement, printed; see issue 19).

use std::sync::Arc;

use pm_core::{ProcessEntry, SharedEntry};

/// Makes the registry's `stored` entry the task's `observed` one when they are equal, so that the monitor's cached
/// registry and the process's task hold one copy of the entry, not two (about 0.8 KiB per process with its
/// strings). Where they differ (a local client's edit not taken up yet, a field the registry writer does not
/// store) each keeps its own. Either holder's next change copies the entry first ([`SharedEntry`]).
pub(crate) fn share(stored: &mut SharedEntry, observed: &Arc<ProcessEntry>) {
    if !stored.shares(observed) && **stored == **observed {
        *stored = SharedEntry::from_arc(observed.clone());
    }
}

/// Makes the registry's `stored` entry the task's `observed` one, without a copy, when the two differ at most in
/// what the writer takes from the task ([`only_runtime_differs`]): what a merge would make of it. Answers whether
/// it did; an entry shared already is left as it is (and answers `false`).
pub(crate) fn take_observed(stored: &mut SharedEntry, observed: &Arc<ProcessEntry>) -> bool {
    if stored.shares(observed) || !only_runtime_differs(stored, observed) {
        return false;
    }
    *stored = SharedEntry::from_arc(observed.clone());
    true
}

/// Whether `stored` and `observed` differ at most in the fields the registry writer takes from the task
/// ([`pm_registry::EntryUpdate`]: state, PID, times, counters, last error, dependency wait), so that the writer's
/// merge would make `stored` equal to `observed`: the cache can then take the task's entry as it is, without first
/// copying its own (shared with the writer's copy of the registry) to merge into it. Every field is named, so
/// that a field added to [`ProcessEntry`] must be placed on one side or the other.
pub(crate) fn only_runtime_differs(stored: &ProcessEntry, observed: &ProcessEntry) -> bool {
    let ProcessEntry {
        config,
        registered_at,
        pending_action,
        extra,
        // What the writer takes from the task.
        state: _,
        pid: _,
        pid_start_time: _,
        last_started_at: _,
        last_stopped_at: _,
        restart_attempts: _,
        consecutive_failures: _,
        last_exit_code: _,
        last_signal: _,
        last_error: _,
        waiting_for: _,
        waiting_since: _,
    } = stored;
    *config == observed.config
        && *registered_at == observed.registered_at
        && *pending_action == observed.pending_action
        && *extra == observed.extra
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;
    use std::time::Duration;

    use pm_core::{ProcessConfig, ProcessEntry, Timestamp};

    use crate::actor::{Actor, Begin, Child, Cmd, Snapshot};

    /// Prints the fixed sizes of the parts every supervised process has (run with `--nocapture`); fails if:
    /// - the task's future grows past 272 B (it holds the wait for the next event only: the actor is boxed, and so
    ///   are the long steps and the waits only some processes make, a child's exit, a deadline, a log watch,
    ///   while they run, and the wait for a command is a poll of the inbox, with no `Notified` of its own; it was
    ///   320 B with that, 824 B with those waits inline and 4.9 KiB when it held everything);
    /// - a command passes 16 B (every process's tokio channel held a block of 32 commands; they were 40 B);
    /// - the boxed actor passes 320 B (its running child is in a box of its own: 512 B with the child inline,
    ///   1,552 B when it also held a copy of the entry);
    /// - a snapshot passes 128 B (it holds the entry through the `Arc` the task shares: 1,112 B with a copy);
    /// - a `ProcessEntry` passes 704 B or a `ProcessConfig` 464 B (1,048 B and 808 B before their rare large
    ///   options were boxed);
    /// - a running child passes 128 B (its box, kept for the whole run: 232 B with tokio's `Child` inline);
    /// - the task's entry and its published snapshot stop sharing one allocation.
    #[tokio::test]
    async fn per_process_parts() {
        let (_dir, _sup, mut actor, snapshot) = crate::actor::tests::lone_actor("pm-footprint");
        // One entry per process: the snapshot shares the task's, a change copies it once and the publish of the
        // change shares the new one again.
        assert!(actor.shares_entry_with(&snapshot.borrow()), "a new process holds its entry twice");
        actor.publish_state(pm_core::ProcessState::Crashed);
        assert!(actor.shares_entry_with(&snapshot.borrow()), "a published change left two copies of the entry");
        assert_eq!(snapshot.borrow().entry.state, pm_core::ProcessState::Crashed);
        let future = actor.run(Begin::Registered);
        let task = size_of_val(&future);
        eprintln!(
            "per process: task future {task} B, actor (boxed) {} B, ProcessEntry {} B, ProcessConfig {} B, \
             Snapshot {} B, Cmd {} B, running child (boxed) {} B",
            size_of::<Actor>(),
            size_of::<ProcessEntry>(),
            size_of::<ProcessConfig>(),
            size_of::<Snapshot>(),
            size_of::<Cmd>(),
            size_of::<Child>(),
        );
        drop(future);
        // tokio's task cell is aligned to 128 B: with the future above about 280 B a task takes 512 B, 384 B below.
        assert!(task <= 272, "the task's future is {task} B");
        // Every process's entry is held by its task and by the monitor's cached registry; the rare large options
        // (an aliveness check, a state-change hook) are boxed (they were 1,048 B and 808 B inline).
        assert!(size_of::<ProcessEntry>() <= 704, "a ProcessEntry is {} B", size_of::<ProcessEntry>());
        assert!(size_of::<ProcessConfig>() <= 464, "a ProcessConfig is {} B", size_of::<ProcessConfig>());
        assert!(size_of::<Cmd>() <= 16, "a command is {} B", size_of::<Cmd>());
        assert!(size_of::<Actor>() <= 320, "the boxed actor is {} B", size_of::<Actor>());
        assert!(size_of::<Child>() <= 128, "a running child is {} B", size_of::<Child>());
        assert!(
            size_of::<Snapshot>() <= 128,
            "a snapshot is {} B: does it hold a copy of the entry?",
            size_of::<Snapshot>()
        );
    }

    /// Kills what the supervisor's processes run, pass or fail (their process groups).
    struct Killed(crate::Supervisor);

    impl Drop for Killed {
        fn drop(&mut self) {
            for pgid in self.0.running_groups() {
                crate::os::signal_group(pgid, libc::SIGKILL);
            }
        }
    }

    /// How many of the monitor's cached registry's entries are the very allocation its tasks hold (looked at
    /// through a journal transaction that stores nothing: it starts from the cache while the file is unchanged).
    async fn shared_with_tasks(monitor: &crate::monitor::Monitor) -> usize {
        let sup = monitor.supervisor().clone();
        let sync = monitor.sync().await;
        monitor
            .journal(&sync, Duration::from_secs(5), move |registry| {
                let shared = sup
                    .snapshots()
                    .iter()
                    .filter(|snapshot| {
                        registry
                            .processes
                            .get(&snapshot.entry.config.id)
                            .is_some_and(|stored| stored.shares(&snapshot.entry))
                    })
                    .count();
                Ok((shared, Vec::new()))
            })
            .await
            .unwrap()
    }

    /// A local client's edit of `id`'s name to `edited`, which memory does not hold.
    fn edit_name(plain: &pm_registry::Store, id: &str) {
        plain
            .transaction(Duration::from_secs(5), |registry| {
                registry.processes.get_mut(id).unwrap().config.name = "edited".to_owned();
                Ok::<_, pm_registry::Error>(())
            })
            .unwrap();
    }

    /// A monitor over a fresh registry in a temp dir of its own (`name`) with `n` `sleep`s registered (`p000`,
    /// ...), stopped, each task given a copy of its entry of its own, as a monitor whose tasks were made from
    /// another reading would have; answers the dir, a plain store of it, the supervisor and the monitor.
    fn registered_monitor(
        name: &str,
        n: usize,
    ) -> (std::path::PathBuf, pm_registry::Store, crate::Supervisor, crate::monitor::Monitor) {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let paths = pm_registry::Paths::new(&dir, "default").unwrap();
        let plain = pm_registry::Store::new(paths.clone());
        plain.init().unwrap();
        let ids: Vec<String> = (0..n).map(|idx| format!("p{idx:03}")).collect();
        plain
            .transaction(Duration::from_secs(5), move |registry| {
                for id in &ids {
                    let mut config = ProcessConfig::new(id, id, "/bin/sleep");
                    config.args = vec!["3600".to_owned()];
                    config.autostart = false;
                    let mut entry = ProcessEntry::new(config, Timestamp::now());
                    entry.state = pm_core::ProcessState::Stopped;
                    registry.processes.insert(id.clone(), entry.into());
                }
                Ok::<_, pm_registry::Error>(())
            })
            .unwrap();
        let store = std::sync::Arc::new(pm_registry::Store::new_cached(paths.clone()));
        let registry = store.load().unwrap();
        let sup = crate::Supervisor::new(crate::SupervisorConfig {
            paths,
            keep_runs: 1,
            default_cwd: dir.clone(),
            extra_env: Vec::new(),
        });
        for entry in registry.processes.values() {
            sup.resume((**entry).clone(), crate::StartKind::Resume).unwrap();
        }
        let (events, _events) = tokio::sync::mpsc::unbounded_channel();
        let monitor = crate::monitor::Monitor::new(store, sup.clone(), registry, true, events);
        (dir, plain, sup, monitor)
    }

    /// The monitor's cached registry and the processes' tasks hold one copy of each entry, not two: after the
    /// registry writer's write every entry of the cache is the task's own allocation (without it the cache held
    /// a copy of each, about 0.8 KiB per process with its strings), again after a task changed its entry, while an
    /// entry a local client edited (not taken up by its task yet) keeps the edit in a copy of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cached_registry_and_the_tasks_share_each_entry() {
        const N: usize = 50;
        let (dir, plain, sup, monitor) = registered_monitor("pm-footprint-share", N);
        monitor.flush().await.unwrap();
        assert_eq!(shared_with_tasks(&monitor).await, N, "the cache holds copies of the tasks' entries");

        // A task's change: the task copies its entry, the next write stores the change and shares it again.
        sup.set_enabled("p000", false).await.unwrap();
        monitor.flush().await.unwrap();
        assert_eq!(shared_with_tasks(&monitor).await, N, "a changed entry is held twice after the write");
        assert!(!plain.load().unwrap().processes["p000"].config.enabled, "the change was not stored");

        // A change of state only (a start): stored, and shared again, without a copy made to merge it.
        let _killed = Killed(sup.clone());
        sup.start("p002").await.unwrap();
        monitor.flush().await.unwrap();
        assert_eq!(shared_with_tasks(&monitor).await, N, "a started entry is held twice after the write");
        let stored = plain.load().unwrap().processes["p002"].clone();
        assert_eq!((stored.state, stored.pid), (pm_core::ProcessState::Running, sup.get("p002").unwrap().pid));

        // A local client's edit that memory does not hold: the cache keeps the file's entry, a copy of its own.
        edit_name(&plain, "p001");
        monitor.flush().await.unwrap();
        assert_eq!(shared_with_tasks(&monitor).await, N - 1);
        assert_eq!(plain.load().unwrap().processes["p001"].config.name, "edited", "the edit was overwritten");
        assert_eq!(sup.get("p001").unwrap().config.name, "p001");
        sup.shutdown(|_| false).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// While the registry writer holds its writes back (a mass start), the cached registry takes the tasks'
    /// started entries without a write (`Monitor::adopt_entries`), so that each start's copy replaces the parsed
    /// entry at once instead of both staying until the write after the start (0.6–0.8 MiB of heap left in holes
    /// at 1,000 running; issue 19); an entry a local client edited is not taken; the next write stores what was
    /// taken although the cache then holds it already.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cache_takes_the_started_entries_without_a_write() {
        const N: usize = 12;
        let (dir, plain, sup, monitor) = registered_monitor("pm-footprint-adopt", N);
        // A local client's edit that memory does not hold: the cache keeps it in a copy of its own.
        edit_name(&plain, "p011");
        monitor.flush().await.unwrap();
        assert_eq!(shared_with_tasks(&monitor).await, N - 1);
        let _killed = Killed(sup.clone());
        for idx in 0..4 {
            sup.start(&format!("p{idx:03}")).await.unwrap();
        }
        assert_eq!(shared_with_tasks(&monitor).await, N - 5, "the starts did not copy their entries");
        let stamp = plain.stamp();

        assert_eq!(monitor.adopt_entries(), 4, "the cache did not take the started entries");
        assert_eq!(shared_with_tasks(&monitor).await, N - 1);
        assert_eq!(plain.stamp(), stamp, "taking the entries wrote the registry");
        assert_eq!(plain.load().unwrap().processes["p000"].state, pm_core::ProcessState::Stopped);

        monitor.flush().await.unwrap();
        let stored = plain.load().unwrap();
        for idx in 0..4 {
            let id = format!("p{idx:03}");
            assert_eq!(
                (stored.processes[&id].state, stored.processes[&id].pid),
                (pm_core::ProcessState::Running, sup.get(&id).unwrap().pid),
                "the write after the entries were taken did not store {id}'s start"
            );
        }
        assert_eq!(stored.processes["p011"].config.name, "edited", "the edit was overwritten");
        assert_eq!(shared_with_tasks(&monitor).await, N - 1);
        sup.shutdown(|_| false).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
