//! Scale (issue 19): after a crash storm, the registry and the API agree with what runs; a boot starts every
//! autostart process once, and a stop leaves none.

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
            registry.processes.insert(id.clone(), ProcessEntry::new(config, Timestamp::now()).into());
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

/// A process that crashes at once, again and again, with `keepRuns` 2: from its third start on, every start
/// prunes the oldest run folder. A follower of its log over `GET /processes/{id}/logs?follow=true` goes on into
/// each new run and sees every run's line once, in order, never an earlier run's line again; the folder keeps the
/// two newest runs, private, each holding its own run's lines only.
#[test]
fn a_log_follower_sees_each_run_of_a_crashing_process_once() {
    use std::io::{Read, Write};
    let Some(home) = Home::new(500) else { return };
    let counter = home.dir.join("count");
    // Each run prints its number once on stdout and once on stderr, then crashes.
    let script = format!(
        "n=$(cat '{0}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{0}'; echo line-$n; echo err-$n >&2; sleep 0.1; exit 3",
        counter.display()
    );
    home.edit("default", |registry| {
        registry.standalone_mode = true;
        let mut config = ProcessConfig::new("crasher", "crasher", "/bin/sh");
        config.args = vec!["-c".to_owned(), script.clone(), home.marker("crasher")];
        config.keep_runs = Some(2);
        config.restart_policy = Some(RestartPolicy {
            max_attempts: 3,
            backoff_intervals_ms: vec![200],
            reset_after_ms: 3_600_000,
            retry_indefinitely: true,
            indefinite_interval_ms: 200,
            ..Default::default()
        });
        registry.processes.insert("crasher".to_owned(), ProcessEntry::new(config, Timestamp::now()).into());
    });
    let (code, out, err) = home.cli(false, &[]);
    assert_eq!(code, 0, "process_monitor failed: {out} {err}");
    let port = home.default_ports.remote;
    let paths = home.paths("default");
    home.wait_until(Duration::from_secs(30), "the first run logged", || !paths.run_dirs("crasher").is_empty());

    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let request = "GET /processes/crasher/logs?follow=true&tail=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    stream.write_all(request.as_bytes()).unwrap();
    // The numbers of the `line-N` lines seen, in order (chunk sizes are on lines of their own).
    let mut raw = Vec::new();
    let seen = |raw: &[u8]| -> Vec<u64> {
        String::from_utf8_lossy(raw)
            .split(['\r', '\n'])
            .filter_map(|line| line.strip_prefix("line-").and_then(|n| n.parse().ok()))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Eight runs after the first one seen, most of them with a prune.
    while seen(&raw).len() < 9 {
        assert!(std::time::Instant::now() < deadline, "the follower saw {:?}", String::from_utf8_lossy(&raw));
        home.track();
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => panic!("the follow stream ended: {:?}", String::from_utf8_lossy(&raw)),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(err) => panic!("reading the follow stream: {err}"),
        }
    }
    let numbers = seen(&raw);
    let first = numbers[0];
    let expected: Vec<u64> = (first..first + numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "every run once, in order: {:?}", String::from_utf8_lossy(&raw));
    assert!(
        !String::from_utf8_lossy(&raw).contains("err-"),
        "stderr lines in the stdout stream: {:?}",
        String::from_utf8_lossy(&raw)
    );

    let (code, out, err) = home.cli(false, &["--stop"]);
    assert_eq!(code, 0, "{out}{err}");
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let runs = paths.run_dirs("crasher");
    assert_eq!(runs.len(), 2, "keepRuns 2: {runs:?}");
    // Each kept run holds its own line only (the last one may have been stopped before it printed).
    let mut numbers = Vec::new();
    for run in &runs {
        assert_eq!(mode(run), 0o700, "{}", run.display());
        let stdout = std::fs::read_to_string(run.join("stdout.log")).unwrap();
        let stderr = std::fs::read_to_string(run.join("stderr.log")).unwrap();
        for name in ["stdout.log", "stderr.log"] {
            assert_eq!(mode(&run.join(name)), 0o600, "{}", run.join(name).display());
        }
        if stdout.is_empty() && run == runs.last().unwrap() {
            continue;
        }
        let n: u64 = stdout
            .strip_prefix("line-")
            .and_then(|rest| rest.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("{} holds {stdout:?}, not one run's line", run.display()));
        assert_eq!(stdout, format!("line-{n}\n"), "{}", run.display());
        assert!(stderr.is_empty() || stderr == format!("err-{n}\n"), "{} stderr {stderr:?}", run.display());
        numbers.push(n);
    }
    assert!(numbers.windows(2).all(|pair| pair[0] + 1 == pair[1]), "runs out of order: {numbers:?} {runs:?}");
    assert!(numbers[0] > first, "the kept runs are older than the followed ones: {numbers:?}");
}

/// Autostart processes of the boot-and-stop scenario.
const FLEET: usize = 300;

/// A monitor booted on a home of 300 autostart processes starts each exactly once, each child holds only its
/// stdio (none of the monitor's descriptors, its pidfds included, leaks into a child, whatever the spawn path),
/// and `--stop` leaves none running, with every process stored `stopped`.
#[test]
fn a_boot_starts_every_autostart_process_once_and_a_stop_leaves_none() {
    let Some(home) = Home::new(500) else { return };
    let ids: Vec<String> = (0..FLEET).map(|idx| format!("fleet{idx:03}")).collect();
    home.edit("default", |registry| registry.standalone_mode = true);
    for id in &ids {
        home.add_sleeper("default", id);
    }
    let (code, out, err) = home.cli(false, &[]);
    assert_eq!(code, 0, "process_monitor failed: {out} {err}");
    let monitor = home.holder("default").expect("the monitor runs");
    home.wait_until(Duration::from_secs(120), "every autostart process runs", || {
        let all = procs::scan();
        ids.iter().all(|id| procs::with_marker(&all, &home.marker(id)).len() == 1)
    });
    home.wait_until(Duration::from_secs(60), "the registry stores every process running", || {
        home.registry("default").processes.values().all(|entry| entry.state == ProcessState::Running)
    });
    let all = procs::scan();
    let logs = home.paths("default").logs_dir();
    for id in &ids {
        assert_eq!(home.starts(id), 1, "{id} was started more than once");
        let copies = procs::with_marker(&all, &home.marker(id));
        let pid = copies[0];
        assert_eq!(
            pm_registry::proc::family(pid).map(|family| family.ppid),
            Some(monitor),
            "{id}: not the monitor's child"
        );
        let fds: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| {
                dir.flatten()
                    .filter_map(|fd| {
                        Some((fd.file_name().to_string_lossy().into_owned(), std::fs::read_link(fd.path()).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (fd, target) in &fds {
            let stdio = matches!(fd.as_str(), "0" | "1" | "2");
            let expected = target == std::path::Path::new("/dev/null") || target.starts_with(&logs);
            assert!(stdio && expected, "{id} (pid {pid}) holds descriptor {fd} -> {}: {fds:?}", target.display());
        }
    }
    let (code, out, err) = home.cli(false, &["--stop"]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(Duration::from_secs(60), "no process of the fleet runs", || {
        let all = procs::scan();
        ids.iter().all(|id| procs::with_marker(&all, &home.marker(id)).is_empty())
    });
    home.wait_until(Duration::from_secs(60), "the monitor has exited", || home.holder("default").is_none());
    let registry = home.registry("default");
    assert!(!registry.monitor_running, "the registry still says a monitor runs");
    for id in &ids {
        let entry = &registry.processes[id];
        assert_eq!(entry.state, ProcessState::Stopped, "{id}");
        assert_eq!(entry.pid, None, "{id} is stopped but stores a PID");
    }
}
