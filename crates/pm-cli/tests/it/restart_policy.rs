//! Restart policies: backoff steps, giving up, retrying indefinitely, and the counter reset after a stable
//! run. Each start writes a `date +%s%N` line, so starts are counted and their spacing measured.

use serde_json::json;

use crate::support::{gaps_ms, Env};

/// A process that records its start and exits with code 1 after `run_secs`.
fn stamping(env: &Env, id: &str, run_secs: &str, policy: serde_json::Value) -> serde_json::Value {
    let stamps = env.scratch(&format!("{id}.starts"));
    let script = format!("date +%s%N >> {}; sleep {run_secs}; exit 1", stamps.display());
    let mut config = env.shell(id, &script);
    config["autostart"] = json!(true);
    config["restartPolicy"] = policy;
    config
}

#[test]
fn crash_backoff_gives_up_after_max_attempts() {
    let env = Env::new();
    env.start_daemon();
    env.register(&stamping(
        &env,
        "crashy",
        "0",
        json!({"maxAttempts": 3, "backoffIntervalsMs": [100, 200], "resetAfterMs": 600000}),
    ));
    let status = env.wait_state("crashy", "failed");
    assert_eq!(status["restartAttempts"], 3, "{status:#}");
    assert_eq!(status["lastExitCode"], 1, "{status:#}");
    assert!(status["lastError"].as_str().is_some_and(|error| error.contains("code 1")), "{status:#}");
    let starts = env.lines("crashy.starts");
    assert_eq!(starts.len(), 4, "one start and three restarts: {starts:?}");
    let gaps = gaps_ms(&starts);
    for (gap, min) in gaps.iter().zip([100, 200, 200]) {
        assert!(*gap >= min, "restart came {gap} ms after the previous start, backoff is {min} ms: {gaps:?}");
        assert!(*gap < min + 5000, "restart took {gap} ms for a {min} ms backoff: {gaps:?}");
    }
    // Failed is final: a start through the CLI begins again from zero.
    let out = env.ok(&["start", "crashy"]);
    assert!(out.stdout.starts_with("crashy: start -> "), "{out:?}");
    env.wait_for("the manual start to run", || (env.lines("crashy.starts").len() >= 5).then_some(()));
}

#[test]
fn retry_indefinitely_keeps_retrying_after_max_attempts() {
    let env = Env::new();
    env.start_daemon();
    env.register(&stamping(
        &env,
        "stubborn",
        "0",
        json!({
            "maxAttempts": 2,
            "backoffIntervalsMs": [50],
            "retryIndefinitely": true,
            "indefiniteIntervalMs": 300,
            "resetAfterMs": 600000
        }),
    ));
    // Three starts use up the attempts; two more show the indefinite retries at their own interval.
    env.wait_for("starts beyond maxAttempts", || (env.lines("stubborn.starts").len() >= 5).then_some(()));
    let status = env.wait_state("stubborn", "retrying");
    assert!(status["restartAttempts"].as_u64().is_some_and(|n| n >= 3), "{status:#}");
    let starts = env.lines("stubborn.starts");
    let gaps = gaps_ms(&starts[..5]);
    assert!(gaps[0] >= 50 && gaps[1] >= 50, "{gaps:?}");
    assert!(gaps[2] >= 300 && gaps[3] >= 300, "indefinite retries came sooner than indefiniteIntervalMs: {gaps:?}");
    let list = env.json(&["list"]);
    assert_ne!(list["processes"][0]["state"], "failed", "{list:#}");
}

#[test]
fn reset_after_a_stable_run_resets_the_attempt_counter() {
    let env = Env::new();
    env.start_daemon();
    // Both crash after 0.5 s with one restart allowed; only the one whose counter resets after 200 ms of
    // running keeps coming back.
    env.register(&stamping(
        &env,
        "resetting",
        "0.5",
        json!({"maxAttempts": 1, "backoffIntervalsMs": [50], "resetAfterMs": 200}),
    ));
    env.register(&stamping(
        &env,
        "counting",
        "0.5",
        json!({"maxAttempts": 1, "backoffIntervalsMs": [50], "resetAfterMs": 600000}),
    ));
    let status = env.wait_state("counting", "failed");
    assert_eq!(status["restartAttempts"], 1, "{status:#}");
    assert_eq!(env.lines("counting.starts").len(), 2);
    env.wait_for("a fourth start of the resetting process", || {
        (env.lines("resetting.starts").len() >= 4).then_some(())
    });
    let status = env.status("resetting");
    assert_ne!(status["state"], "failed", "{status:#}");
    assert!(status["restartAttempts"].as_u64().is_some_and(|n| n <= 1), "{status:#}");
}

#[test]
fn stop_cancels_a_pending_restart_and_start_restarts_at_once() {
    let env = Env::new();
    env.start_daemon();
    let policy = json!({"maxAttempts": 100, "backoffIntervalsMs": [400]});
    env.register(&stamping(&env, "halted", "0", policy.clone()));
    env.register(&stamping(&env, "reference", "0", policy));
    env.register(&stamping(&env, "hurried", "0", json!({"maxAttempts": 5, "backoffIntervalsMs": [600000]})));

    env.wait_state("halted", "retrying");
    let out = env.ok(&["stop", "halted"]);
    assert_eq!(out.stdout.trim(), "halted: stop -> stopped", "{out:?}");
    let halted_starts = env.lines("halted.starts").len();
    // The reference crashes on the same schedule; two more of its restarts prove the backoff has passed.
    let reference_starts = env.lines("reference.starts").len();
    env.wait_for("two more restarts of the reference", || {
        (env.lines("reference.starts").len() >= reference_starts + 2).then_some(())
    });
    assert_eq!(env.lines("halted.starts").len(), halted_starts, "a stopped process was restarted by its backoff");
    assert_eq!(env.status("halted")["state"], "stopped");

    // A manual start of a process waiting out its backoff starts it now, with the counter reset.
    let status = env.wait_state("hurried", "retrying");
    assert_eq!(status["restartAttempts"], 1, "{status:#}");
    env.ok(&["start", "hurried"]);
    env.wait_for("the manual start", || (env.lines("hurried.starts").len() == 2).then_some(()));
    let status = env.wait_state("hurried", "retrying");
    assert_eq!(status["restartAttempts"], 1, "the manual start reset the counter: {status:#}");
}
