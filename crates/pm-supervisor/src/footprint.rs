//! What one process costs in memory: sizes of the per-process parts (a measurement, printed; see issue 19).

#[cfg(test)]
mod tests {
    use std::mem::size_of;

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
        let dir = std::env::temp_dir().join(format!("pm-footprint-{}", std::process::id()));
        let paths = pm_registry::Paths::new(&dir, "default").unwrap();
        let sup = crate::Supervisor::new(crate::SupervisorConfig {
            paths,
            keep_runs: 1,
            default_cwd: dir.clone(),
            extra_env: Vec::new(),
        });
        let shared = sup.shared().clone();
        let entry = ProcessEntry::new(ProcessConfig::new("job", "job", "/bin/true"), Timestamp::now());
        let (_tx, rx) = crate::inbox::inbox::<Cmd>();
        let (mut actor, snapshot) = Actor::new(entry, shared, rx);
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
}
