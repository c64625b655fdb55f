//! A monitor that comes back adopts the children its predecessor left running: after a kill -9 and a new
//! start, and across `--restart`; never a second copy.

use serde_json::json;

use crate::support::{signal, Env, Proc};

/// Registers `id` (a sleeper that records each start) and answers its running process.
fn sleeper(env: &Env, id: &str) -> Proc {
    let starts = env.scratch(&format!("{id}.starts"));
    let mut config = env.shell(id, &format!("echo $$ >> {}; sleep 600; exit 0", starts.display()));
    config["autostart"] = json!(true);
    config["restartPolicy"] = json!({"maxAttempts": 5, "backoffIntervalsMs": [100]});
    env.register(&config);
    let proc = env.running_pid(id);
    env.wait_for("the start to be recorded", || (!env.lines(&format!("{id}.starts")).is_empty()).then_some(()));
    proc
}

#[test]
fn kill_9_then_start_adopts_the_same_child() {
    let env = Env::new();
    let first_monitor = Proc::of(env.start_daemon());
    let child = sleeper(&env, "kept");

    signal(first_monitor.pid, libc::SIGKILL);
    env.wait_for("the monitor to die", || first_monitor.gone().then_some(()));
    assert!(child.running(), "the child died with its monitor");

    let second_monitor = env.start_daemon();
    assert_ne!(second_monitor, first_monitor.pid);
    // A second process registered now is running only once the new monitor took over the registry, so the
    // counts below see its decisions about the first one.
    sleeper(&env, "barrier");
    let status = env.wait_state("kept", "running");
    assert_eq!(status["pid"], json!(child.pid), "adopted under its old PID: {status:#}");
    assert!(child.running());
    assert_eq!(env.copies("kept"), 1, "exactly one copy runs");
    assert_eq!(env.lines("kept.starts").len(), 1, "never started again");

    // The adopted process is supervised for real: its death is noticed and it is restarted.
    signal(child.pid, libc::SIGKILL);
    let status = env.wait_for("a restart of the adopted process", || {
        let status = env.status("kept");
        (status["state"] == "running" && status["pid"] != json!(child.pid)).then_some(status)
    });
    assert_eq!(status["restartAttempts"], 1, "{status:#}");
    env.wait_for("the restart to be recorded", || (env.lines("kept.starts").len() == 2).then_some(()));
    assert_eq!(env.copies("kept"), 1);
}

#[test]
fn restart_flag_keeps_the_children() {
    let env = Env::new();
    let first_monitor = Proc::of(env.start_daemon());
    let child = sleeper(&env, "kept");
    let other = sleeper(&env, "also-kept");

    let out = env.ok(&["--restart"]);
    assert!(out.stdout.contains("restarted (pid"), "{out:?}");
    let second_monitor = env.wait_for("the new monitor", || env.daemon_pid().filter(|pid| *pid != first_monitor.pid));
    env.remember(second_monitor);
    assert!(!first_monitor.running(), "the old monitor still runs");
    assert!(out.stdout.contains(&format!("-> {second_monitor}")), "{out:?}");

    sleeper(&env, "barrier");
    for (id, proc) in [("kept", child), ("also-kept", other)] {
        let status = env.wait_state(id, "running");
        assert_eq!(status["pid"], json!(proc.pid), "{status:#}");
        assert!(proc.running());
        assert_eq!(env.copies(id), 1, "{id}");
        assert_eq!(env.lines(&format!("{id}.starts")).len(), 1, "{id} was started again");
    }
    // `--status` reports the new monitor.
    let status = env.json(&["--status"]);
    assert_eq!(status["pid"], json!(second_monitor), "{status:#}");
    assert_eq!(status["managedProcessCount"], 3, "{status:#}");
    assert_eq!(status["runningProcessCount"], 3, "{status:#}");
}
