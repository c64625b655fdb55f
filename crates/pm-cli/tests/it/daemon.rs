//! The monitor itself: detached start, `--status`, `--stop` (with its processes), and `--foreground` until
//! SIGTERM.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{http, signal, Env, Proc, BIN, DEADLINE, WATCHER_BIN};

fn sleeper(env: &Env, id: &str) -> Proc {
    let mut config = env.shell(id, "sleep 600; exit 0");
    config["autostart"] = json!(true);
    env.register(&config);
    env.running_pid(id)
}

#[test]
fn stop_flag_stops_the_monitor_and_its_processes() {
    let env = Env::new();
    let monitor = Proc::of(env.start_daemon());
    let out = env.ok(&env.daemon_args().iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.stdout.trim(), format!("ProcessMonitor default is already running (pid {})", monitor.pid));

    let out = env.ok(&["--status"]);
    assert!(out.stdout.starts_with("ProcessMonitor default is running\n"), "{out:?}");
    assert!(out.stdout.contains(&format!("  pid:        {}\n", monitor.pid)), "{out:?}");
    assert!(out.stdout.contains(&format!("  remote API: port {}\n", env.remote_port)), "{out:?}");
    assert_eq!(http(env.alive_port, "GET", "/alive", None), Some((200, "OK".to_owned())));

    let first = sleeper(&env, "first");
    let second = sleeper(&env, "second");
    let status = env.json(&["--status"]);
    assert_eq!(status["instanceId"], "default", "{status:#}");
    assert_eq!(status["pid"], json!(monitor.pid), "{status:#}");
    assert_eq!(status["state"], "running", "{status:#}");
    assert_eq!(status["standaloneMode"], true, "{status:#}");
    assert_eq!(status["managedProcessCount"], 2, "{status:#}");
    assert_eq!(status["runningProcessCount"], 2, "{status:#}");

    let out = env.ok(&["--stop"]);
    assert_eq!(
        out.stdout.trim(),
        format!("ProcessMonitor default (pid {}) stopped; 2 running process(es) were stopped with it", monitor.pid)
    );
    assert!(!monitor.running(), "the monitor still runs");
    assert!(!first.running() && !second.running(), "its processes still run");
    assert_eq!(env.copies("first") + env.copies("second"), 0);
    let mut stale_pids = Vec::new();
    for id in ["first", "second"] {
        let entry = env.entry(id);
        assert_eq!(entry["state"], "stopped", "{entry:#}");
        if entry.get("pid").is_some() {
            stale_pids.push(entry);
        }
    }
    let started = Instant::now();
    let out = env.run(&["--status"]).code(3);
    assert!(started.elapsed() < Duration::from_secs(2), "--status took {:?}", started.elapsed());
    assert_eq!(out.stdout.trim(), "ProcessMonitor default is not running");
    assert_eq!(http(env.alive_port, "GET", "/alive", None), None, "the aliveness port still answers");
    env.run(&["--stop"]).code(3);

    // A clean start after a clean stop starts the autostart processes again; `--stop --json` reports it.
    let monitor = env.start_daemon();
    env.running_pid("first");
    env.running_pid("second");
    let out = env.json(&["--stop"]);
    assert_eq!(out, json!({"instanceId": "default", "pid": monitor, "stopped": true, "processesStopped": 2}));
    assert_eq!(env.copies("first") + env.copies("second"), 0);
    let out = env.run(&["--status", "--json"]).code(3);
    assert_eq!(out.json()["running"], false);

    // `--restart` of a monitor that does not run starts it.
    let mut restart = vec!["--restart".to_owned()];
    restart.extend(env.daemon_args());
    let out = env.ok(&restart.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.stdout.starts_with("ProcessMonitor default started (pid"), "{out:?}");
    env.running_pid("first");
    env.ok(&["--stop"]);
    // the registry keeps the PID of a process it calls stopped.
    assert!(stale_pids.is_empty(), "stopped entries still name a pid: {stale_pids:#?}");
}

#[test]
fn foreground_monitor_runs_until_sigterm() {
    let env = Env::new();
    let mut monitor = env.spawn_foreground();
    let pid = env.wait_for("the foreground monitor to answer", || {
        env.daemon_pid().filter(|_| http(env.alive_port, "GET", "/alive", None).is_some())
    });
    assert_eq!(pid, monitor.0.id(), "the foreground process is the monitor");
    let child = sleeper(&env, "served");

    signal(pid, libc::SIGTERM);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = monitor.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < DEADLINE, "the foreground monitor ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(!child.running(), "its process outlived it");
    assert_eq!(env.entry("served")["state"], "stopped");
    assert_eq!(env.copies("served"), 0);
    let log = std::fs::read_to_string(env.scratch("foreground.log")).unwrap();
    assert!(log.contains("ProcessMonitor starting"), "the console shows the log: {log}");
    env.run(&["--status"]).code(3);
}

#[test]
fn instance_id_and_monitor_watcher_use_their_own_registry() {
    let env = Env::new();
    let (remote_port, alive_port) = crate::support::free_ports();
    let ports = [remote_port.to_string(), alive_port.to_string()];
    let daemon = |bin: &str, instance: Option<&str>| {
        let mut args =
            vec!["--remote-port", &ports[0], "--aliveness-port", &ports[1], "--bind", "127.0.0.1", "--standalone"];
        if let Some(instance) = instance {
            args.extend(["--instance-id", instance]);
        }
        env.run_command(env.command_of(bin, &args), &args, None)
    };
    let watcher = |args: &[&str]| env.run_command(env.command_of(WATCHER_BIN, args), args, None);

    // monitor_watcher is instance `watcher`, with files of its own.
    let out = daemon(WATCHER_BIN, None).ok();
    assert!(out.stdout.starts_with("ProcessMonitor watcher started (pid"), "{out:?}");
    let status = watcher(&["--status", "--json"]).ok().json();
    assert_eq!(status["instanceId"], "watcher", "{status:#}");
    assert_eq!(status["remotePort"], json!(remote_port), "{status:#}");
    let mut config = env.shell("watched", "sleep 600; exit 0");
    config["autostart"] = json!(true);
    let file = env.scratch("watched.json");
    std::fs::write(&file, config.to_string()).unwrap();
    watcher(&["register", "--file", &file.to_string_lossy()]).ok();
    let status = env.wait_for("the watcher to start its process", || {
        let status = watcher(&["--json", "status", "watched"]).ok().json();
        (status["state"] == "running").then_some(status)
    });
    env.remember(status["pid"].as_u64().unwrap() as u32);
    assert_eq!(env.copies("watched"), 1);
    // The status came from the monitor's memory (through its socket); its writer stores it within moments.
    let registry = env.wait_for("the watcher's registry to record the running process", || {
        let text = std::fs::read_to_string(env.dir.join("processes_watcher.json")).ok()?;
        let registry: serde_json::Value = serde_json::from_str(&text).ok()?;
        (registry["processes"]["watched"]["state"] == "running").then_some(registry)
    });
    assert_eq!(registry["instanceId"], "watcher");
    // The default instance is a different one: not running, and it knows nothing of that process.
    env.run(&["--status"]).code(3);
    env.run(&["status", "watched"]).code(4);
    let out = env.run(&["--instance-id", "watcher", "status", "watched", "--json"]).ok();
    assert_eq!(out.json()["state"], "running");

    let out = watcher(&["--stop"]).ok();
    assert!(out.stdout.contains("ProcessMonitor watcher (pid"), "{out:?}");
    assert_eq!(env.copies("watched"), 0);
    watcher(&["--status"]).code(3);

    // Any other id works the same with `--instance-id`.
    let out = daemon(BIN, Some("blue")).ok();
    assert!(out.stdout.starts_with("ProcessMonitor blue started (pid"), "{out:?}");
    assert!(env.dir.join("processes_blue.json").exists() && env.dir.join("blue_logs").is_dir());
    env.ok(&["--instance-id", "blue", "--status"]);
    env.run(&["--status"]).code(3);
    env.ok(&["--instance-id", "blue", "--stop"]);
    env.run(&["--instance-id", "blue", "--status"]).code(3);
    assert!(!env.dir.join("processes_default.json").exists(), "the default instance was touched");
}

#[test]
fn a_taken_port_is_named_with_what_to_do() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind(("127.0.0.1", env.alive_port)).unwrap();
    let args = env.daemon_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run(&args);
    assert_ne!(out.code, 0, "{out:?}");
    let message = format!("{}{}", out.stdout, out.stderr);
    assert!(message.contains(&format!("aliveness server on 127.0.0.1:{}", env.alive_port)), "{out:?}");
    assert!(message.contains("the port is taken") && message.contains("--aliveness-port"), "{out:?}");
    assert_eq!(env.daemon_pid(), None, "no monitor keeps running");
    drop(taken);
}

#[test]
fn status_without_an_aliveness_server_asks_the_remote_api_and_says_when_nothing_answers() {
    let env = Env::new();
    std::fs::create_dir_all(&env.dir).unwrap();
    let registry = json!({"instanceId": "default", "alivenessServer": {"enabled": false}});
    std::fs::write(env.dir.join("processes_default.json"), registry.to_string()).unwrap();
    let pid = env.start_daemon();
    let status = env.json(&["--status"]);
    assert_eq!((status["instanceId"].clone(), status["pid"].clone()), (json!("default"), json!(pid)), "{status:#}");
    let out = env.run(&["--status"]).ok();
    assert!(out.stdout.contains("ProcessMonitor default is running"), "{out:?}");

    // A monitor that holds its lock but answers nowhere is reported as such, with exit code 3 in both modes.
    signal(pid, libc::SIGSTOP);
    // A process-directed SIGSTOP wakes one thread, which then stops the others: on a loaded machine the other
    // threads may serve a request meanwhile. Wait until every thread is stopped.
    env.wait_for("every thread of the monitor to stop", || all_threads_stopped(pid).then_some(()));
    let out = env.run(&["--status", "--json"]).code(3);
    assert_eq!(out.json()["answering"], false, "{out:?}");
    let out = env.run(&["--status"]).code(3);
    assert!(out.stdout.contains("answers neither"), "{out:?}");
    signal(pid, libc::SIGCONT);
}

/// Whether every thread of `pid` is in the stopped state `T`.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('T')))
            .unwrap_or(false)
    })
}
