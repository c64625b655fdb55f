//! What one process costs in memory: sizes of the per-process parts (a measurement, printed; see issue 19).

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use pm_core::{ProcessConfig, ProcessEntry, Timestamp};
    use tokio::sync::mpsc;

    use crate::actor::{Actor, Begin, Cmd, Snapshot};

    /// Prints the fixed sizes of the parts every supervised process has (run with `--nocapture`); fails if the
    /// task's future grows past 2 KiB (it holds the wait for the next event only: the actor is boxed, and so are
    /// the long steps while they run; it was 4.9 KiB when it held them all) or a command past 16 B (every
    /// process's channel holds a block of 32 commands; they were 40 B).
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
        let (_tx, rx) = mpsc::channel::<Cmd>(64);
        let (actor, _snapshot) = Actor::new(entry, shared, rx);
        let future = actor.run(Begin::Registered);
        let task = size_of_val(&future);
        eprintln!(
            "per process: task future {task} B, actor (boxed) {} B, ProcessEntry {} B, ProcessConfig {} B, \
             Snapshot {} B, Cmd {} B",
            size_of::<Actor>(),
            size_of::<ProcessEntry>(),
            size_of::<ProcessConfig>(),
            size_of::<Snapshot>(),
            size_of::<Cmd>(),
        );
        drop(future);
        assert!(task <= 2048, "the task's future is {task} B");
        assert!(size_of::<Cmd>() <= 16, "a command is {} B (each process's channel holds 32)", size_of::<Cmd>());
    }
}
