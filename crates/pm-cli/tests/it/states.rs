//! Every process state, reached for real and visible through `status <id> --json`, `list --json` and the
//! registry file.

use std::time::Instant;

use serde_json::json;

use crate::support::{Env, Health, Proc};

#[test]
fn every_state_is_reached_and_visible() {
    let env = Env::new();
    let health = Health::new(true);
    env.start_daemon();

    // stopped: registered, never started.
    env.register(&env.shell("idle", "sleep 600; exit 0"));
    assert_eq!(env.status("idle")["state"], "stopped");

    // running: started, with a live PID.
    let mut config = env.shell("runner", "sleep 600; exit 0");
    config["autostart"] = json!(true);
    env.register(&config);
    let runner = env.running_pid("runner");
    assert!(runner.running());
    assert_eq!(env.copies("runner"), 1);

    // starting: the startup check is still pending (its first check is far away).
    let mut config = env.shell("booting", "sleep 600; exit 0");
    config["autostart"] = json!(true);
    config["alivenessCheck"] = json!({
        "url": health.url,
        "intervalMs": 1000,
        "startupCheck": {"enabled": true, "initialDelayMs": 600000, "checkIntervalMs": 1000, "maxAttempts": 3}
    });
    env.register(&config);
    let status = env.wait_state("booting", "starting");
    assert!(status["pid"].as_u64().is_some_and(|pid| Proc::of(pid as u32).running()), "{status:#}");

    // retrying: crashed, waiting out a long backoff.
    let mut config = env.shell("crasher", "exit 3");
    config["autostart"] = json!(true);
    config["restartPolicy"] = json!({"maxAttempts": 5, "backoffIntervalsMs": [600000]});
    env.register(&config);
    let status = env.wait_state("crasher", "retrying");
    assert_eq!(status["restartAttempts"], 1, "{status:#}");
    assert_eq!(status["lastExitCode"], 3, "{status:#}");
    assert!(status.get("pid").is_none(), "{status:#}");

    // failed: the restart attempts are used up.
    let mut config = env.shell("quitter", "exit 4");
    config["autostart"] = json!(true);
    config["restartPolicy"] = json!({"maxAttempts": 1, "backoffIntervalsMs": [10]});
    env.register(&config);
    let status = env.wait_state("quitter", "failed");
    assert_eq!(status["lastExitCode"], 4, "{status:#}");

    // disabled: disabling stops it.
    let mut config = env.shell("switched-off", "sleep 600; exit 0");
    config["autostart"] = json!(true);
    env.register(&config);
    let switched_off = env.running_pid("switched-off");
    env.ok(&["disable", "switched-off"]);
    let status = env.status("switched-off");
    assert_eq!(status["state"], "disabled", "{status:#}");
    assert_eq!(status["enabled"], false, "{status:#}");
    assert!(!switched_off.running());

    // stopping: a child that ignores SIGTERM stays `stopping` until the stop timeout sends SIGKILL.
    let ready = env.scratch("stubborn.ready");
    let mut config =
        env.shell("stubborn", &format!("trap '' TERM; touch {}; while :; do sleep 0.2; done; exit 0", ready.display()));
    config["autostart"] = json!(true);
    config["stopTimeoutMs"] = json!(2500);
    env.register(&config);
    let stubborn = env.running_pid("stubborn");
    env.wait_for("the stubborn child to ignore SIGTERM", || ready.exists().then_some(()));
    let stop_started = Instant::now();
    let mut stop = env.command(&["stop", "stubborn"]);
    stop.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let stop = stop.spawn().unwrap();
    let status = env.wait_state("stubborn", "stopping");
    assert!(stubborn.running(), "still running while stopping: {status:#}");
    assert_eq!(env.entry("stubborn")["state"], "stopping");
    let output = stop.wait_with_output().unwrap();
    let took = stop_started.elapsed();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "stubborn: stop -> stopped");
    assert!(took.as_millis() >= 2000, "SIGKILL came before the stop timeout: {took:?}");
    assert!(!stubborn.running());
    assert_eq!(env.status("stubborn")["state"], "stopped");
    assert_eq!(env.copies("stubborn"), 0);

    // All at once, through `list --json` and the registry file.
    let expected = [
        ("idle", "stopped"),
        ("runner", "running"),
        ("booting", "starting"),
        ("crasher", "retrying"),
        ("quitter", "failed"),
        ("switched-off", "disabled"),
        ("stubborn", "stopped"),
    ];
    let list = env.json(&["list"]);
    let processes = list["processes"].as_array().unwrap();
    assert_eq!(processes.len(), expected.len(), "{list:#}");
    for (id, state) in expected {
        let listed = processes.iter().find(|it| it["id"] == id).unwrap_or_else(|| panic!("{id} missing: {list:#}"));
        assert_eq!(listed["state"], state, "{id}: {list:#}");
        assert_eq!(env.entry(id)["state"], state, "{id} in the registry");
    }
}
