//! The local (file-based) client, through `pm_client::ProcessMonitorClient` and through the CLI without
//! `--remote`: the whole lifecycle and its errors, requests stored while no monitor runs, stops carried out
//! by the client itself when the monitor is gone, and ids that could escape the folder.

use pm_client::{Error, ProcessMonitorClient};
use pm_core::{ProcessConfig, ProcessState};
use serde_json::json;

use crate::support::{http, signal, Env, Proc};

fn client(env: &Env) -> ProcessMonitorClient {
    ProcessMonitorClient::in_directory(&env.dir, "default").unwrap()
}

fn sleeper_config(env: &Env, id: &str) -> ProcessConfig {
    let mut config = ProcessConfig::new(id, &format!("{id} (test)"), "/bin/sh");
    config.args = vec!["-c".to_owned(), "sleep 600; exit 0".to_owned(), env.marker(id)];
    config.autostart = false;
    config.stop_timeout_ms = Some(500);
    config
}

fn running(status: &pm_core::ProcessStatus) -> Proc {
    assert_eq!(status.state, ProcessState::Running, "{status:?}");
    Proc::of(status.pid.unwrap_or_else(|| panic!("running without pid: {status:?}")))
}

#[test]
fn client_api_lifecycle_and_errors() {
    let env = Env::new();
    env.start_daemon();
    let client = client(&env);
    assert!(client.monitor().unwrap().is_some());
    let id = "api-proc";
    client.register(sleeper_config(&env, id)).unwrap();
    assert!(matches!(client.register(sleeper_config(&env, id)), Err(Error::AlreadyExists(it)) if it == id));
    assert_eq!(client.get_status(id).unwrap().state, ProcessState::Stopped);

    let first = running(&client.start(id).unwrap());
    env.remember(first.pid);
    assert!(first.running());
    assert_eq!(client.start(id).unwrap().pid, Some(first.pid), "starting a running process is a no-op");
    assert_eq!(env.copies(id), 1);

    let second = running(&client.restart(id).unwrap());
    env.remember(second.pid);
    assert_ne!(second.pid, first.pid);
    assert!(!first.running(), "restart left the old process running");
    assert_eq!(env.copies(id), 1);

    let stopped = client.stop(id).unwrap();
    assert_eq!(stopped.state, ProcessState::Stopped, "{stopped:?}");
    assert_eq!(stopped.pid, None);
    assert!(!second.running());
    assert_eq!(env.copies(id), 0);

    client.disable(id).unwrap();
    assert_eq!(client.get_status(id).unwrap().state, ProcessState::Disabled);
    assert!(matches!(client.start(id), Err(Error::Disabled(it)) if it == id));
    assert!(matches!(client.restart(id), Err(Error::Disabled(it)) if it == id));
    assert_eq!(env.copies(id), 0, "a disabled process was started");
    client.enable(id).unwrap();
    let enabled = client.get_status(id).unwrap();
    assert_eq!((enabled.state, enabled.enabled), (ProcessState::Stopped, true));

    let third = running(&client.start(id).unwrap());
    env.remember(third.pid);
    let all = client.get_all_status().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), [id]);
    assert_eq!(all[id].name, "api-proc (test)");
    client.deregister(id).unwrap();
    // Like `stop`, `deregister` implies the process ends; checked at the end so the rest runs first.
    let running_after_deregister = third.running();
    env.wait_for("the deregistered process to end", || (!third.running()).then_some(()));
    assert!(matches!(client.get_status(id), Err(Error::NotFound(it)) if it == id));
    assert!(client.get_all_status().unwrap().is_empty());
    assert_eq!(env.copies(id), 0);

    let missing = "not-registered";
    assert!(matches!(client.start(missing), Err(Error::NotFound(_))));
    assert!(matches!(client.stop(missing), Err(Error::NotFound(_))));
    assert!(matches!(client.restart(missing), Err(Error::NotFound(_))));
    assert!(matches!(client.enable(missing), Err(Error::NotFound(_))));
    assert!(matches!(client.disable(missing), Err(Error::NotFound(_))));
    assert!(matches!(client.deregister(missing), Err(Error::NotFound(_))));
    assert!(matches!(client.get_status(missing), Err(Error::NotFound(_))));
    assert!(matches!(client.register(sleeper_config(&env, "../x")), Err(Error::Invalid(_))));
    // (the remote API's deregister, and the local one without a monitor, return after it ended).
    assert!(!running_after_deregister, "deregister returned while the process still ran");
}

#[test]
fn requests_stored_without_a_monitor_are_carried_out_when_it_starts() {
    let env = Env::new();
    env.register(&env.shell("later", "sleep 600; exit 0"));
    let mut config = env.shell("auto", "sleep 600; exit 0");
    config["autostart"] = json!(true);
    env.register(&config);

    let out = env.ok(&["start", "later"]);
    assert_eq!(out.stdout.trim(), "later: start -> stopped", "{out:?}");
    assert!(out.stderr.contains("not running; the request is stored"), "{out:?}");
    assert_eq!(env.entry("later")["pendingAction"], "start");
    let out = env.json(&["start", "later"]);
    assert_eq!(out, json!({"success": true, "processId": "later", "action": "start", "state": "stopped"}));
    let list = env.json(&["list"]);
    assert!(list["processes"].as_array().unwrap().iter().all(|it| it["state"] == "stopped"), "{list:#}");
    assert_eq!(env.copies("later") + env.copies("auto"), 0, "started without a monitor");

    env.start_daemon();
    env.running_pid("later");
    env.running_pid("auto");
    assert!(env.entry("later").get("pendingAction").is_none(), "the request was not taken off");
    assert_eq!(env.copies("later"), 1);
    assert_eq!(env.copies("auto"), 1);
}

#[test]
fn stop_disable_deregister_without_a_monitor_end_the_processes() {
    let env = Env::new();
    let monitor = Proc::of(env.start_daemon());
    let mut procs = Vec::new();
    for id in ["to-stop", "to-disable", "to-deregister"] {
        let mut config = env.shell(id, "sleep 600; exit 0");
        config["autostart"] = json!(true);
        env.register(&config);
        procs.push(env.running_pid(id));
    }
    signal(monitor.pid, libc::SIGKILL);
    env.wait_for("the monitor to die", || monitor.gone().then_some(()));
    assert!(procs.iter().all(Proc::running), "the children died with their monitor");
    env.run(&["--status"]).code(3);

    let out = env.ok(&["stop", "to-stop"]);
    assert_eq!(out.stdout.trim(), "to-stop: stop -> stopped", "{out:?}");
    assert!(!procs[0].running(), "stop without a monitor left the process running");
    let entry = env.entry("to-stop");
    assert_eq!(entry["state"], "stopped", "{entry:#}");
    assert!(entry.get("pid").is_none(), "{entry:#}");
    assert!(entry.get("lastStoppedAt").is_some(), "{entry:#}");

    let out = env.json(&["disable", "to-disable"]);
    assert_eq!(out, json!({"success": true, "processId": "to-disable", "action": "disable"}));
    assert!(!procs[1].running(), "disable without a monitor left the process running");
    assert_eq!(env.entry("to-disable")["state"], "disabled");
    assert_eq!(env.entry("to-disable")["enabled"], false);

    env.ok(&["deregister", "to-deregister"]);
    assert!(!procs[2].running(), "deregister without a monitor left the process running");
    assert!(env.entry("to-deregister").is_null());
    assert_eq!(env.copies("to-stop") + env.copies("to-disable") + env.copies("to-deregister"), 0);

    // A monitor started afterwards keeps it that way.
    env.start_daemon();
    env.register(&{
        let mut config = env.shell("barrier", "sleep 600; exit 0");
        config["autostart"] = json!(true);
        config
    });
    env.running_pid("barrier");
    assert_eq!(env.status("to-stop")["state"], "stopped");
    assert_eq!(env.status("to-disable")["state"], "disabled");
    env.run(&["status", "to-deregister"]).code(4);
    assert_eq!(env.copies("to-stop") + env.copies("to-disable") + env.copies("to-deregister"), 0);
}

/// Everything under `dir`, as sorted relative paths.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut res = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            res.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if path.is_dir() {
                todo.push(path);
            }
        }
    }
    res.sort();
    res
}

#[test]
fn ids_that_escape_the_folder_are_refused_and_create_nothing() {
    let env = Env::new();
    let config = env.scratch("escape.json");
    std::fs::write(&config, r#"{"id": "../x", "name": "x", "command": "/bin/true"}"#).unwrap();
    let config = config.to_string_lossy().into_owned();
    let attempts: Vec<Vec<&str>> = vec![
        vec!["register", "--id", "../x", "--command", "/bin/true"],
        vec!["register", "--file", &config],
        vec!["status", "../x"],
        vec!["start", "../x"],
        vec!["stop", "../x"],
        vec!["restart", "../x"],
        vec!["enable", "../x"],
        vec!["disable", "../x"],
        vec!["deregister", "../x"],
        vec!["logs", "../x"],
    ];
    let before = tree(&env.root);
    for args in &attempts {
        let out = env.run(args).code(1);
        assert!(out.stderr.contains("invalid id \"../x\""), "{out:?}");
    }
    assert_eq!(tree(&env.root), before, "a refused id left files behind");

    // With a monitor running (locally and through its API): refused, and the registry stays empty.
    env.start_daemon();
    let before = tree(&env.root);
    let remote = env.remote_url();
    for args in &attempts {
        let out = env.run(args).code(1);
        assert!(out.stderr.contains("invalid id"), "{out:?}");
        if args[0] != "logs" {
            let mut args = args.clone();
            args.extend(["--remote", &remote]);
            let out = env.run(&args).code(1);
            assert!(out.stderr.contains("invalid id"), "{out:?}");
        }
    }
    // The API itself refuses them too (the client above checks before sending).
    let (status, body) =
        http(env.remote_port, "POST", "/processes", Some(r#"{"id": "../x", "name": "x", "command": "/bin/true"}"#))
            .expect("the remote API answers");
    assert_eq!(status, 400, "{body}");
    for path in ["/processes/..%2Fx", "/processes/..%2Fx/start"] {
        let method = if path.ends_with("start") { "POST" } else { "GET" };
        let (status, body) = http(env.remote_port, method, path, None).expect("the remote API answers");
        assert!(status == 400 || status == 404, "{path}: {status} {body}");
    }
    let registry = env.registry();
    assert_eq!(registry["processes"], json!({}), "{registry:#}");
    // The running monitor may save its registry meanwhile (a backup and a temporary file); nothing else.
    let new: Vec<String> = tree(&env.root)
        .into_iter()
        .filter(|path| !before.contains(path) && !path.contains(".tmp-") && !path.ends_with(".bak"))
        .collect();
    assert!(new.is_empty(), "a refused id left files behind: {new:?}");
    assert!(!env.root.join("x").exists());
}
