//! Aliveness checks against a health endpoint served by the test itself: a hung process is killed and
//! restarted; a failed startup check restarts, disables or fails the process as configured.

use serde_json::json;

use crate::support::{Env, Health, Proc};

#[test]
fn hung_process_is_killed_and_restarted() {
    let env = Env::new();
    let health = Health::new(true);
    env.start_daemon();
    let starts = env.scratch("hung.starts");
    let mut config = env.shell("hung", &format!("echo $$ >> {}; sleep 600; exit 0", starts.display()));
    config["autostart"] = json!(true);
    config["restartPolicy"] = json!({"maxAttempts": 5, "backoffIntervalsMs": [100]});
    config["alivenessCheck"] =
        json!({"url": health.url, "intervalMs": 100, "timeoutMs": 2000, "consecutiveFailuresRequired": 2});
    env.register(&config);
    let first = env.running_pid("hung");
    let answered = health.requests();
    env.wait_for("health checks of the running process", || (health.requests() >= answered + 2).then_some(()));
    assert!(first.running(), "a healthy process was killed");

    // Hang it: stopped by SIGSTOP and its endpoint failing twice in a row.
    // The process group the monitor started for this test.
    pm_registry::proc::signal_group(first.pid, libc::SIGSTOP);
    health.fail_next(2);
    env.wait_for("the hung process to be killed", || (!first.running()).then_some(()));
    let status = env.wait_for("a new run", || {
        let status = env.status("hung");
        (status["state"] == "running" && status["pid"].as_u64() != Some(u64::from(first.pid))).then_some(status)
    });
    let second = Proc::of(status["pid"].as_u64().unwrap() as u32);
    assert!(second.running(), "{status:#}");
    assert_eq!(status["restartAttempts"], 1, "{status:#}");
    assert!(status["lastError"].as_str().is_some_and(|error| error.contains("aliveness check failed")), "{status:#}");
    env.wait_for("the restart to be recorded", || (env.lines("hung.starts").len() == 2).then_some(()));
    assert_eq!(env.copies("hung"), 1);
    assert_eq!(health.failures_left(), 0);
}

#[test]
fn failed_startup_check_restarts_disables_or_fails() {
    let env = Env::new();
    let health = Health::new(false);
    env.start_daemon();
    for (id, action) in [("on-fail-restart", "restart"), ("on-fail-disable", "disable"), ("on-fail-fail", "fail")] {
        let starts = env.scratch(&format!("{id}.starts"));
        let mut config = env.shell(id, &format!("echo $$ >> {}; sleep 600; exit 0", starts.display()));
        config["autostart"] = json!(true);
        config["restartPolicy"] = json!({"maxAttempts": 50, "backoffIntervalsMs": [100]});
        config["alivenessCheck"] = json!({
            "url": health.url,
            "intervalMs": 1000,
            "timeoutMs": 1000,
            "startupCheck": {
                "enabled": true,
                "initialDelayMs": 300,
                "checkIntervalMs": 50,
                "maxAttempts": 2,
                "failAction": action
            }
        });
        env.register(&config);
    }

    let status = env.wait_state("on-fail-disable", "disabled");
    assert_eq!(status["enabled"], false, "{status:#}");
    assert!(status["lastError"].as_str().is_some_and(|error| error.contains("startup check failed")), "{status:#}");
    assert_eq!(env.entry("on-fail-disable")["enabled"], false, "stored as disabled");

    let status = env.wait_state("on-fail-fail", "failed");
    assert!(status["lastError"].as_str().is_some_and(|error| error.contains("startup check failed")), "{status:#}");

    env.wait_for("the restart action to start it again", || {
        (env.lines("on-fail-restart.starts").len() >= 2).then_some(())
    });
    let status = env.status("on-fail-restart");
    assert!(status["restartAttempts"].as_u64().is_some_and(|n| n >= 1), "{status:#}");
    assert!(
        ["starting", "retrying", "crashed"].contains(&status["state"].as_str().unwrap()),
        "restart action keeps trying: {status:#}"
    );

    // The failed startups were killed, and the processes that gave up were started once.
    for id in ["on-fail-disable", "on-fail-fail"] {
        assert_eq!(env.lines(&format!("{id}.starts")).len(), 1, "{id}");
        assert_eq!(env.copies(id), 0, "{id}");
    }
    env.ok(&["stop", "on-fail-restart"]);
    assert_eq!(env.copies("on-fail-restart"), 0);

    // Once its endpoint is healthy, the disabled one starts again and passes its startup check.
    health.set(true);
    env.ok(&["enable", "on-fail-disable"]);
    let out = env.ok(&["start", "on-fail-disable"]);
    assert!(out.stdout.starts_with("on-fail-disable: start -> "), "{out:?}");
    env.running_pid("on-fail-disable");
    assert_eq!(env.copies("on-fail-disable"), 1);
}
