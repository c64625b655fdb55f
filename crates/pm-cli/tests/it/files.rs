//! The monitor's files from the command line: the lifeline commands with a registry that does not parse
//! (issue 12, item 6), a private `startup.log` that is never written through a symlink whatever the umask
//! (issue 12, item 7; issue 21, item 2), and process ids named like the monitor's own files (issue 21, item 5).

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use serde_json::json;

use crate::support::{Env, Proc};

/// Registers and starts a sleeper `id`; answers its running process.
fn sleeper(env: &Env, id: &str) -> Proc {
    let mut config = env.shell(id, "sleep 600; exit 0");
    config["autostart"] = json!(true);
    env.register(&config);
    env.running_pid(id)
}

#[test]
fn status_and_stop_work_with_a_registry_that_does_not_parse() {
    let env = Env::new();
    let monitor = Proc::of(env.start_daemon());
    let child = sleeper(&env, "kept-alive");
    // The monitor published the ports it serves on in its lock: the lifeline commands find it there.
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.dir.join("processes_default.lock")).unwrap()).unwrap();
    assert_eq!(lock["alivenessPort"], json!(env.alive_port), "{lock:#}");
    assert_eq!(lock["remotePort"], json!(env.remote_port), "{lock:#}");

    // The corrupt file is written the way a hand edit is, without the registry's lock: first the monitor folds
    // the child's start from its journal into the registry, or that rewrite could replace the corrupt file.
    let journal = env.dir.join("processes_default.journal");
    env.wait_for("the journal to be folded into the registry", || {
        std::fs::metadata(&journal).map_or(true, |meta| meta.len() == 0).then_some(())
    });
    std::fs::write(env.dir.join("processes_default.json"), "{ this is not json").unwrap();
    let out = env.run(&["--status"]).ok();
    assert!(out.stdout.contains(&format!("pid:        {}", monitor.pid)), "{out:?}");
    assert!(out.stdout.contains("registry:   UNREADABLE") && out.stdout.contains("line 1"), "{out:?}");
    let status = env.run(&["--status", "--json"]).ok().json();
    assert_eq!(status["pid"], json!(monitor.pid), "{status:#}");
    assert!(status["registryError"].as_str().is_some_and(|err| err.contains("processes_default.json")), "{status:#}");

    let out = env.run(&["--stop"]).ok();
    assert!(out.stderr.contains("registry is unreadable"), "{out:?}");
    assert!(out.stdout.contains("stopped"), "{out:?}");
    assert!(!monitor.running(), "the monitor still runs");
    env.wait_for("the child to be stopped with its monitor", || (!child.running()).then_some(()));
    // The corrupt registry is left as it was.
    assert_eq!(std::fs::read_to_string(env.dir.join("processes_default.json")).unwrap(), "{ this is not json");
    env.run(&["--status"]).code(3);
}

/// Resumes a process stopped with SIGSTOP when dropped, pass or fail.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        crate::support::signal(self.0, libc::SIGCONT);
    }
}

#[test]
fn status_reports_a_registry_that_does_not_parse_whether_the_monitor_answers_or_not() {
    let env = Env::new();
    let monitor = Proc::of(env.start_daemon());
    let file = env.dir.join("processes_default.json");
    let good = std::fs::read_to_string(&file).unwrap();
    let registry_error =
        |status: &serde_json::Value| status.get("registryError").and_then(|err| err.as_str()).map(str::to_owned);
    assert_eq!(registry_error(&env.run(&["--status", "--json"]).ok().json()), None);

    // JSON, but not a registry: the monitor says so in its own status answer (it checks the file as it is now,
    // not as it last read it), and `--status` reports it from there.
    std::fs::write(&file, "{\"instanceId\": 3}").unwrap();
    let (code, body) = crate::support::http(env.remote_port, "GET", "/monitor/status", None).expect("the API answers");
    let answered: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(registry_error(&answered).is_some_and(|err| err.contains("processes_default.json")), "{answered:#}");
    let status = env.run(&["--status", "--json"]).ok().json();
    assert_eq!(status["pid"], json!(monitor.pid), "{status:#}");
    assert!(
        registry_error(&status).is_some_and(|err| err.contains("processes_default.json") && err.contains("line 1")),
        "{status:#}"
    );
    let out = env.run(&["--status"]).ok();
    assert!(out.stdout.contains("registry:   UNREADABLE"), "{out:?}");

    // Repaired: no error any more, from the monitor's answer either.
    std::fs::write(&file, &good).unwrap();
    assert_eq!(registry_error(&env.run(&["--status", "--json"]).ok().json()), None);

    // A monitor that holds its lock but does not answer: `--status` reads the registry itself.
    std::fs::write(&file, "{ this is not json").unwrap();
    crate::support::signal(monitor.pid, libc::SIGSTOP);
    let resume = Resume(monitor.pid);
    let status = env.run(&["--status", "--json"]).code(3).json();
    assert_eq!((status["running"].clone(), status["answering"].clone()), (json!(true), json!(false)), "{status:#}");
    assert!(registry_error(&status).is_some_and(|err| err.contains("processes_default.json")), "{status:#}");
    drop(resume);
    std::fs::write(&file, &good).unwrap();
    env.run(&["--stop"]).ok();
}

#[test]
fn a_detached_start_writes_a_private_startup_log_never_through_a_symlink_whatever_the_umask() {
    let env = Env::new();
    let monitor_dir = env.dir.join("default_logs").join("_monitor");
    std::fs::create_dir_all(&monitor_dir).unwrap();
    std::fs::set_permissions(&env.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    for dir in [env.dir.join("default_logs"), monitor_dir.clone()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let victim = env.scratch("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, monitor_dir.join("startup.log")).unwrap();
    let args = env.daemon_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The CLI starts with umask 0: a shell sets it, then execs the CLI in its place (same PID).
    let cli = env.command(&args);
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg("umask 0 && exec \"$0\" \"$@\"").arg(cli.get_program()).args(cli.get_args());
    for (name, value) in cli.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command.stdin(std::process::Stdio::null());
    let out = env.run_command(command, &args, None).ok();
    assert!(out.stdout.contains("started (pid"), "{out:?}");
    env.remember(env.daemon_pid().unwrap());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious", "startup.log was written through a symlink");
    let startup = std::fs::symlink_metadata(monitor_dir.join("startup.log")).unwrap();
    assert!(startup.file_type().is_file(), "startup.log is still a symlink");
    assert_eq!(startup.mode() & 0o777, 0o600);
    let logs: Vec<_> = std::fs::read_dir(&monitor_dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().is_some_and(|name| name != "startup.log"))
        .collect();
    assert_eq!(logs.len(), 1, "one monitor log in _monitor: {logs:?}");
    assert_eq!(std::fs::metadata(&logs[0]).unwrap().mode() & 0o777, 0o600, "{}", logs[0].display());
    env.ok(&["--stop"]);
}

#[test]
fn ids_named_like_the_monitors_files_cannot_break_it() {
    let env = Env::new();
    let first = Proc::of(env.start_daemon());
    let startup = sleeper(&env, "startup.log");
    let stamped = sleeper(&env, "20261207_044540_default.log");
    let logs = env.dir.join("default_logs");
    assert!(logs.join("startup.log").is_dir() && logs.join("20261207_044540_default.log").is_dir());

    // A self-restart (SIGHUP) comes back and adopts both.
    let out = env.ok(&["--restart"]);
    assert!(out.stdout.contains("restarted (pid"), "{out:?}");
    let second = env.wait_for("the new monitor", || env.daemon_pid().filter(|pid| *pid != first.pid));
    env.remember(second);
    for (id, proc) in [("startup.log", startup), ("20261207_044540_default.log", stamped)] {
        let status = env.wait_state(id, "running");
        assert_eq!(status["pid"], json!(proc.pid), "{id}: {status:#}");
    }

    // Even a monitor folder that cannot be used (a file in its way) does not keep a self-restart from coming back:
    // the new monitor logs to stderr and supervises.
    let monitor_dir = logs.join("_monitor");
    std::fs::rename(&monitor_dir, env.scratch("monitor-aside")).unwrap();
    std::fs::write(&monitor_dir, "in the way").unwrap();
    std::fs::set_permissions(&monitor_dir, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.ok(&["--restart"]);
    assert!(out.stdout.contains("restarted (pid"), "{out:?}");
    let third = env.wait_for("the third monitor", || env.daemon_pid().filter(|pid| *pid != second));
    env.remember(third);
    assert!(startup.running() && stamped.running());
    assert_eq!(env.wait_state("startup.log", "running")["pid"], json!(startup.pid));

    // A clean stop and a detached start of a fresh monitor work with those folders there.
    std::fs::remove_file(&monitor_dir).unwrap();
    env.ok(&["--stop"]);
    env.start_daemon();
    env.running_pid("startup.log");
    env.running_pid("20261207_044540_default.log");
    env.ok(&["--stop"]);
}

#[test]
fn one_entry_that_cannot_run_leaves_the_rest_working_and_is_kept_as_it_is() {
    let env = Env::new();
    env.start_daemon();
    let mut config = env.shell("good", "sleep 600; exit 0");
    config["autostart"] = json!(true);
    env.register(&config);
    env.running_pid("good");
    env.ok(&["--stop"]);
    // Entries a hand edit (or a newer version) left that this monitor cannot run: an unknown state, a check URL
    // scheme it does not support, a key the file system cannot take.
    let mut ghost = env.shell("ghost", "sleep 600; exit 0");
    ghost["autostart"] = json!(true);
    ghost["state"] = json!("hibernating");
    let mut ftp = env.shell("ftp", "sleep 600; exit 0");
    ftp["autostart"] = json!(true);
    ftp["alivenessCheck"] = json!({"url": "ftp://127.0.0.1/health"});
    let mut slash = env.shell("a/b", "sleep 600; exit 0");
    slash["autostart"] = json!(true);
    let bad = [("ghost", ghost, "hibernating"), ("ftp", ftp, "alivenessCheck.url"), ("a/b", slash, "a/b")];
    let file = env.dir.join("processes_default.json");
    let mut registry = env.registry();
    for (key, entry, _) in &bad {
        registry["processes"][*key] = entry.clone();
    }
    std::fs::write(&file, serde_json::to_vec_pretty(&registry).unwrap()).unwrap();

    env.start_daemon();
    env.running_pid("good");
    // The monitor reports each one as failed with the reason, through its API and the local client.
    let listed = crate::support::http(env.remote_port, "GET", "/processes", None).expect("the API answers");
    assert_eq!(listed.0, 200, "{listed:?}");
    let listed: serde_json::Value = serde_json::from_str(&listed.1).unwrap();
    for (key, _, reason) in &bad {
        let status = listed["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|status| status["id"] == *key)
            .unwrap_or_else(|| panic!("{key} not listed: {listed:#}"));
        assert_eq!(status["state"], "failed", "{status:#}");
        assert!(status["lastError"].as_str().is_some_and(|err| err.contains(reason)), "{status:#}");
    }
    let ghost = env.status("ghost");
    assert_eq!(ghost["state"], "failed", "{ghost:#}");
    // None of them runs.
    for id in ["ghost", "ftp", "a/b"] {
        assert_eq!(env.copies(id), 0, "{id} was started");
    }
    // The rest works: a registration goes through, and every write keeps the unusable entries as they were.
    let other = env.shell("other", "sleep 600; exit 0");
    env.register(&other);
    env.ok(&["start", "other"]);
    env.running_pid("other");
    let stored = env.registry();
    for (key, entry, _) in &bad {
        assert_eq!(&stored["processes"][*key], entry, "{key} was changed on disk");
    }
    assert_eq!(stored["processes"]["other"]["id"], "other");
    env.ok(&["--stop"]);
    let stored = env.registry();
    for (key, entry, _) in &bad {
        assert_eq!(&stored["processes"][*key], entry, "{key} was changed on disk by the shutdown");
    }
}

#[test]
fn a_self_restart_into_a_home_that_became_unsafe_keeps_the_running_monitor() {
    let env = Env::new();
    let monitor = Proc::of(env.start_daemon());
    let child = sleeper(&env, "kept");
    // Someone made the home writable by others: a replacement would refuse to start, so the monitor does not go.
    std::fs::set_permissions(&env.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.run(&["--restart"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(monitor.running(), "the monitor went away");
    assert_eq!(env.daemon_pid(), Some(monitor.pid));
    assert!(child.running());
    let log_dir = env.dir.join("default_logs").join("_monitor");
    let log: String = std::fs::read_dir(&log_dir)
        .unwrap()
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
        .collect();
    assert!(log.contains("not restarting") && log.contains("chmod go-w"), "{log}");
    // Fixed, the restart goes through and keeps the child.
    std::fs::set_permissions(&env.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    env.ok(&["--restart"]);
    let second = env.wait_for("the new monitor", || env.daemon_pid().filter(|pid| *pid != monitor.pid));
    env.remember(second);
    assert_eq!(env.wait_state("kept", "running")["pid"], json!(child.pid));
    env.ok(&["--stop"]);
}
