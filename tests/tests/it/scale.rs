//! Scale (issue 19): after a crash storm, the registry and the API agree with what runs.

use std::collections::BTreeMap;
use std::time::Duration;

use pm_core::{ProcessConfig, ProcessEntry, ProcessState, RestartPolicy, Timestamp};
use pm_tests::{http, procs, Home};

/// Processes in the storm.
const STORM: usize = 200;
/// Of them, stopped over the API while the storm rages.
const STOPPED: usize = 20;
/// Length of the storm.
const STORM_FOR: Duration = Duration::from_secs(10);

/// 200 processes each crash about once a second (they exit after 0.2 s; backoff `[1000]`, retried
/// indefinitely) for 10 s, while 20 of them are stopped over the API. Then the others turn stable (a file makes
/// their script loop on `sleep`), and the registry and `GET /processes` must agree with `/proc`: every process
/// stored as running has exactly one live copy, whose PID, start time and parent (the monitor) are the stored
/// ones; every stopped one has no live copy and no PID.
#[test]
fn after_a_crash_storm_the_registry_agrees_with_what_runs() {
    let Some(home) = Home::new(500) else { return };
    let calm = home.dir.join("calm");
    // Once `calm` exists, a start turns into a stable loop that keeps the marker (`$0`) and adds `calm`.
    let script = format!(
        "if [ -e '{}' ]; then exec /bin/sh -c 'while :; do sleep 600; done' \"$0\" calm; fi; sleep 0.2; exit 3",
        calm.display()
    );
    let ids: Vec<String> = (0..STORM).map(|idx| format!("storm{idx:03}")).collect();
    home.edit("default", |registry| {
        registry.standalone_mode = true;
        for id in &ids {
            let mut config = ProcessConfig::new(id, id, "/bin/sh");
            config.args = vec!["-c".to_owned(), script.clone(), home.marker(id)];
            config.restart_policy = Some(RestartPolicy {
                max_attempts: 3,
                backoff_intervals_ms: vec![1000],
                reset_after_ms: 3_600_000,
                retry_indefinitely: true,
                indefinite_interval_ms: 1000,
                ..Default::default()
            });
            registry.processes.insert(id.clone(), ProcessEntry::new(config, Timestamp::now()));
        }
    });
    let (code, out, err) = home.cli(false, &[]);
    assert_eq!(code, 0, "process_monitor failed: {out} {err}");
    let monitor = home.holder("default").expect("the monitor runs");
    let port = home.default_ports.remote;

    let storm_started = std::time::Instant::now();
    home.wait_until(Duration::from_secs(60), "the storm is under way (restarts counted)", || {
        home.registry("default").processes.values().filter(|entry| entry.restart_attempts > 0).count() >= STORM / 2
    });
    for id in &ids[..STOPPED] {
        let (status, body) = http(port, "POST", &format!("/processes/{id}/stop"), Some("")).expect("stop answered");
        assert_eq!(status, 200, "stop {id}: {body}");
    }
    if let Some(left) = STORM_FOR.checked_sub(storm_started.elapsed()) {
        std::thread::sleep(left);
    }
    assert_eq!(home.holder("default"), Some(monitor), "the monitor did not survive the storm");
    std::fs::write(&calm, b"").unwrap();

    // Every process not stopped is restarted into its stable form within a backoff or two.
    home.wait_until(Duration::from_secs(60), "the registry stores every process's settled state", || {
        let registry = home.registry("default");
        registry.processes.iter().all(|(id, entry)| {
            let stopped = ids[..STOPPED].contains(id);
            if stopped {
                entry.state == ProcessState::Stopped
            } else {
                entry.state == ProcessState::Running
                    && entry.pid.and_then(procs::read).is_some_and(|info| info.has_arg("calm"))
            }
        })
    });

    let registry = home.registry("default");
    assert!(registry.monitor_running);
    assert_eq!(registry.processes.len(), STORM);
    let all = procs::scan();
    let api: BTreeMap<String, serde_json::Value> = {
        let (status, body) = http(port, "GET", "/processes", None).expect("GET /processes answered");
        assert_eq!(status, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let items = list.as_array().or_else(|| list["processes"].as_array()).expect("a list of processes").clone();
        items.into_iter().map(|item| (item["id"].as_str().unwrap().to_owned(), item)).collect()
    };
    assert_eq!(api.len(), STORM, "GET /processes lists every process");
    for (id, entry) in &registry.processes {
        let copies = procs::with_marker(&all, &home.marker(id));
        let listed = &api[id];
        if ids[..STOPPED].contains(id) {
            assert_eq!(entry.state, ProcessState::Stopped, "{id}");
            assert_eq!(entry.pid, None, "{id} is stopped but stores a PID");
            assert!(copies.is_empty(), "{id} is stopped but runs as {copies:?}");
            assert_eq!(listed["state"], "stopped", "{id}: {listed}");
            continue;
        }
        assert_eq!(entry.state, ProcessState::Running, "{id}");
        let pid = entry.pid.unwrap_or_else(|| panic!("{id} runs without a stored PID"));
        assert_eq!(copies, vec![pid], "{id}: the live copies are not the stored PID");
        let family = pm_registry::proc::family(pid).unwrap_or_else(|| panic!("{id}: stored PID {pid} is not alive"));
        assert_eq!(family.ppid, monitor, "{id}: PID {pid} is not the monitor's child");
        assert_eq!(family.pgrp, pid, "{id}: PID {pid} does not lead its process group");
        assert_eq!(entry.pid_start_time, Some(family.start_time), "{id}: stored start time is not PID {pid}'s");
        assert_eq!(listed["state"], "running", "{id}: {listed}");
        assert_eq!(listed["pid"], pid, "{id}: {listed}");
    }
    let (code, out, err) = home.cli(false, &["--stop"]);
    assert_eq!(code, 0, "{out}{err}");
}
