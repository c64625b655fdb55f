//! Every process command of the CLI in both output modes (text and `--json`), against the local registry and
//! against the remote API (`--remote`), with their exit codes; `config`; and the commands that need no
//! monitor (`--version`, `--help`, `completions`, `systemd-unit`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{Env, Proc, BIN, WATCHER_BIN};

/// The CLI bound to one test's monitor, locally or through its API.
struct Cli<'a> {
    env: &'a Env,
    remote: Option<String>,
}

impl Cli<'_> {
    /// The arguments with `--remote URL` right after the command (never after a `--`).
    fn args<'b>(&'b self, args: &[&'b str]) -> Vec<&'b str> {
        let mut res = args.to_vec();
        if let Some(url) = &self.remote {
            res.splice(1..1, ["--remote", url.as_str()]);
        }
        res
    }

    #[track_caller]
    fn text(&self, args: &[&str]) -> String {
        self.env.ok(&self.args(args)).stdout
    }

    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        self.env.json(&self.args(args))
    }

    #[track_caller]
    fn fails(&self, args: &[&str], code: i32, message: &str) {
        let out = self.env.run(&self.args(args)).code(code);
        assert!(out.stderr.contains(message), "expected {message:?} in stderr: {out:?}");
        let mut with_json = self.args(args);
        with_json.insert(0, "--json");
        let out = self.env.run(&with_json).code(code);
        assert!(out.stderr.contains(message), "expected {message:?} in stderr: {out:?}");
    }

    /// `status ID --json`, answering the running process.
    #[track_caller]
    fn running(&self, id: &str) -> Proc {
        let status = self.json(&["status", id]);
        assert_eq!(status["state"], "running", "{status:#}");
        let proc = Proc::of(status["pid"].as_u64().unwrap() as u32);
        self.env.remember(proc.pid);
        assert!(proc.running(), "{status:#}");
        proc
    }
}

fn exercise_process_commands(remote: bool) {
    let env = Env::new();
    env.start_daemon();
    let cli = Cli { env: &env, remote: remote.then(|| env.remote_url()) };
    let markers = [env.marker("text-proc"), env.marker("json-proc")];

    // register
    let out = cli.text(&[
        "register",
        "--id",
        "text-proc",
        "--command",
        "/bin/sh",
        "--no-autostart",
        "--stop-timeout-ms",
        "500",
        "--",
        "-c",
        "sleep 600; exit 0",
        &markers[0],
    ]);
    assert_eq!(out.trim(), "text-proc: registered");
    let out = cli.json(&[
        "register",
        "--id",
        "json-proc",
        "--name",
        "JSON process",
        "--command",
        "/bin/sh",
        "--no-autostart",
        "--stop-timeout-ms",
        "500",
        "--",
        "-c",
        "sleep 600; exit 0",
        &markers[1],
    ]);
    assert_eq!(out, json!({"success": true, "processId": "json-proc"}));
    cli.fails(&["register", "--id", "text-proc", "--command", "/bin/true"], 1, "already exists");
    let from_stdin = r#"{"id": "stdin-proc", "name": "from stdin", "command": "/bin/true", "autostart": false}"#;
    let out = env.run_with_input(&cli.args(&["register", "--file", "-"]), from_stdin).ok();
    assert_eq!(out.stdout.trim(), "stdin-proc: registered", "{out:?}");
    let out = env.run_with_input(&cli.args(&["register", "--file", "-"]), from_stdin).code(1);
    assert!(out.stderr.contains("already exists"), "{out:?}");
    let out = env.run_with_input(&cli.args(&["register", "--file", "-"]), "{not json").code(1);
    assert!(out.stderr.contains("not a valid ProcessConfig JSON"), "{out:?}");
    assert_eq!(cli.json(&["status", "stdin-proc"])["name"], "from stdin");
    assert_eq!(cli.text(&["deregister", "stdin-proc"]).trim(), "stdin-proc: deregister done");
    let stored = env.entry("text-proc");
    assert_eq!(stored["args"], json!(["-c", "sleep 600; exit 0", markers[0]]), "{stored:#}");
    assert_eq!(stored["isRemote"], remote, "{stored:#}");

    // list and status, before any start
    let out = cli.text(&["list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for word in ["ID", "STATE", "PID", "RESTARTS", "UPTIME", "ENABLED", "COMMAND"] {
        assert!(lines[0].contains(word), "{out}");
    }
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row, ["text-proc", "stopped", "-", "0", "-", "yes", "/bin/sh"], "{out}");
    let list = cli.json(&["list"]);
    let ids: Vec<&str> = list["processes"].as_array().unwrap().iter().map(|it| it["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["json-proc", "text-proc"], "{list:#}");
    assert_eq!(list["processes"][0]["name"], "JSON process");
    assert_eq!(list["processes"][0]["state"], "stopped");
    let out = cli.text(&["status", "json-proc"]);
    assert!(out.starts_with("json-proc (JSON process)\n  state:     stopped\n"), "{out}");
    let status = cli.json(&["status", "json-proc"]);
    assert_eq!(status["id"], "json-proc");
    assert_eq!(status["state"], "stopped");
    assert_eq!(status["enabled"], true);
    assert_eq!(status["autostart"], false);
    assert_eq!(status["isRemote"], remote);
    assert_eq!(status["restartAttempts"], 0);
    assert!(status.get("pid").is_none(), "{status:#}");

    // start
    let out = cli.text(&["start", "text-proc"]);
    assert_eq!(out.trim(), "text-proc: start -> running");
    let out = cli.json(&["start", "json-proc"]);
    assert_eq!(out, json!({"success": true, "processId": "json-proc", "action": "start", "state": "running"}));
    let text_proc = cli.running("text-proc");
    let json_proc = cli.running("json-proc");
    assert_eq!(env.copies("text-proc"), 1);
    let out = cli.text(&["status", "text-proc"]);
    assert!(out.contains(&format!("  pid:       {}\n", text_proc.pid)), "{out}");
    let list = cli.text(&["list"]);
    assert!(
        list.lines().any(|line| line.split_whitespace().take(3).eq([
            "text-proc",
            "running",
            &text_proc.pid.to_string()
        ])),
        "{list}"
    );

    // restart
    let out = cli.text(&["restart", "text-proc"]);
    assert_eq!(out.trim(), "text-proc: restart -> running");
    let out = cli.json(&["restart", "json-proc"]);
    assert_eq!(out, json!({"success": true, "processId": "json-proc", "action": "restart", "state": "running"}));
    let (text_again, json_again) = (cli.running("text-proc"), cli.running("json-proc"));
    assert!(!text_proc.running() && !json_proc.running(), "restart left the old processes running");
    assert_ne!(text_again.pid, text_proc.pid);
    assert_ne!(json_again.pid, json_proc.pid);
    assert_eq!(env.copies("text-proc") + env.copies("json-proc"), 2);

    // stop
    let out = cli.text(&["stop", "text-proc"]);
    assert_eq!(out.trim(), "text-proc: stop -> stopped");
    let out = cli.json(&["stop", "json-proc"]);
    assert_eq!(out, json!({"success": true, "processId": "json-proc", "action": "stop", "state": "stopped"}));
    assert!(!text_again.running() && !json_again.running(), "stop left the processes running");
    assert_eq!(cli.json(&["status", "text-proc"])["state"], "stopped");

    // disable, refused start, enable
    let out = cli.text(&["disable", "text-proc"]);
    assert_eq!(out.trim(), "text-proc: disable done");
    let out = cli.json(&["disable", "json-proc"]);
    assert_eq!(out, json!({"success": true, "processId": "json-proc", "action": "disable"}));
    for id in ["text-proc", "json-proc"] {
        let status = cli.json(&["status", id]);
        assert_eq!((&status["state"], &status["enabled"]), (&json!("disabled"), &json!(false)), "{status:#}");
        cli.fails(&["start", id], 1, "disabled");
        cli.fails(&["restart", id], 1, "disabled");
    }
    assert_eq!(env.copies("text-proc") + env.copies("json-proc"), 0, "a disabled process was started");
    let out = cli.text(&["enable", "text-proc"]);
    assert_eq!(out.trim(), "text-proc: enable done");
    let out = cli.json(&["enable", "json-proc"]);
    assert_eq!(out, json!({"success": true, "processId": "json-proc", "action": "enable"}));
    for id in ["text-proc", "json-proc"] {
        let status = cli.json(&["status", id]);
        assert_eq!((&status["state"], &status["enabled"]), (&json!("stopped"), &json!(true)), "{status:#}");
    }

    // deregister (one of them while running)
    cli.text(&["start", "json-proc"]);
    let last = cli.running("json-proc");
    let out = cli.text(&["deregister", "text-proc"]);
    assert_eq!(out.trim(), "text-proc: deregister done");
    let out = cli.json(&["deregister", "json-proc"]);
    assert_eq!(out, json!({"success": true, "processId": "json-proc", "action": "deregister"}));
    env.wait_for("the deregistered process to end", || (!last.running()).then_some(()));
    assert_eq!(cli.json(&["list"]), json!({"processes": []}));
    assert_eq!(cli.text(&["list"]).lines().count(), 1, "only the header");
    assert_eq!(env.registry()["processes"], json!({}));

    // not found: exit code 4 for every command that names a process
    for command in ["status", "start", "stop", "restart", "enable", "disable", "deregister"] {
        cli.fails(&[command, "text-proc"], 4, "not found");
    }
}

#[test]
fn process_commands_on_the_local_registry() {
    exercise_process_commands(false);
}

#[test]
fn process_commands_through_the_remote_api() {
    exercise_process_commands(true);
}

fn exercise_config(remote: bool) {
    let env = Env::new();
    env.start_daemon();
    let url = env.remote_url();
    let config = |args: &[&str]| -> Value {
        let mut all = vec!["config"];
        all.extend(args);
        if remote {
            all.extend(["--remote", url.as_str()]);
        }
        env.ok(&all).json()
    };
    let all = config(&["get"]);
    assert_eq!(all["remoteAccess"]["remotePort"], env.remote_port, "{all:#}");
    assert!(all["remoteAccess"]["trustedHosts"].as_array().unwrap().contains(&json!("127.0.0.1")), "{all:#}");
    assert_eq!(config(&["get", "trusted-hosts"]), json!({"trustedHosts": all["remoteAccess"]["trustedHosts"]}));

    let out = config(&["set", "executable-whitelist", "/usr/bin/*, /opt/app/**"]);
    assert_eq!(out, json!({"patterns": ["/usr/bin/*", "/opt/app/**"]}));
    assert_eq!(config(&["get", "executable-whitelist"]), out);
    let out = config(&["set", "executable-blacklist", r#"["/usr/bin/rm"]"#]);
    assert_eq!(out, json!({"patterns": ["/usr/bin/rm"]}));
    let out = config(&["set", "remote-access", r#"{"allowRemoteRegister": false}"#]);
    assert_eq!(out["allowRemoteRegister"], false, "{out:#}");
    assert_eq!(out["allowRemoteStart"], true, "only the given key changes: {out:#}");
    if remote {
        assert_eq!(env.registry()["standaloneMode"], false);
        assert_eq!(config(&["get", "standalone-mode"]), json!({"enabled": true}), "--standalone is in force");
    }
    let out = config(&["set", "standalone-mode", "true"]);
    assert_eq!(out, json!({"enabled": true}));
    let out = config(&["set", "trusted-hosts", "localhost,127.0.0.1,10.0.*.*"]);
    assert_eq!(out, json!({"trustedHosts": ["localhost", "127.0.0.1", "10.0.*.*"]}));

    // Stored in the registry, whichever way it was set.
    let registry = env.registry();
    let access = &registry["remoteAccess"];
    assert_eq!(access["executableWhitelist"], json!(["/usr/bin/*", "/opt/app/**"]), "{registry:#}");
    assert_eq!(access["executableBlacklist"], json!(["/usr/bin/rm"]), "{registry:#}");
    assert_eq!(access["allowRemoteRegister"], false, "{registry:#}");
    assert_eq!(access["trustedHosts"], json!(["localhost", "127.0.0.1", "10.0.*.*"]), "{registry:#}");
    assert_eq!(registry["standaloneMode"], true, "{registry:#}");

    let mut bad = vec!["config", "set", "standalone-mode", "maybe"];
    if remote {
        bad.extend(["--remote", url.as_str()]);
    }
    let out = env.run(&bad).code(1);
    assert!(out.stderr.contains("true or false"), "{out:?}");
    if remote {
        // The daemon runs with --standalone: the API cannot turn it off for this run.
        let out = env.run(&["config", "set", "standalone-mode", "false", "--remote", url.as_str()]);
        assert_ne!(out.code, 0, "{out:?}");
        assert!(out.stderr.contains("forced by --standalone"), "{out:?}");
        assert_eq!(env.registry()["standaloneMode"], true, "a refused change is not stored");
    }
}

#[test]
fn config_on_the_local_registry() {
    exercise_config(false);
}

#[test]
fn config_through_the_remote_api() {
    exercise_config(true);
}

#[test]
fn exit_codes_without_a_monitor() {
    let env = Env::new();
    let started = Instant::now();
    let out = env.run(&["--status"]).code(3);
    assert!(started.elapsed() < Duration::from_secs(2), "--status took {:?}", started.elapsed());
    assert_eq!(out.stdout.trim(), "ProcessMonitor default is not running");
    let out = env.run(&["--status", "--json"]).code(3);
    assert_eq!(out.json(), json!({"instanceId": "default", "running": false}));
    let out = env.run(&["--stop"]).code(3);
    assert!(out.stdout.contains("not running"), "{out:?}");
    let out = env.run_command(env.command_of(WATCHER_BIN, &["--status"]), &["--status"], None).code(3);
    assert_eq!(out.stdout.trim(), "ProcessMonitor watcher is not running");

    // Nothing answers on the API port: 3 as well, and promptly.
    let url = env.remote_url();
    let started = Instant::now();
    let out = env.run(&["list", "--remote", &url]).code(3);
    assert!(out.stderr.contains("cannot reach"), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());

    // Not found without a monitor: 4, locally.
    let out = env.run(&["status", "nothing-here"]).code(4);
    assert!(out.stderr.contains("not found"), "{out:?}");
    // Usage errors: 2.
    env.run(&["start"]).code(2);
    env.run(&["no-such-command"]).code(2);
    env.run(&["--stop", "--restart"]).code(2);
}

#[test]
fn a_request_without_a_monitor_is_stored_and_said_so() {
    let env = Env::new();
    env.ok(&["register", "--id", "later", "--command", "/bin/true", "--no-autostart"]);
    for (args, noted) in [(&["start", "later"][..], true), (&["enable", "later"], true), (&["disable", "later"], false)]
    {
        let out = env.ok(args);
        let note = "note: ProcessMonitor default is not running; the request is stored";
        assert_eq!(out.stderr.contains(note), noted, "{args:?}: {out:?}");
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let out = env.ok(&with_json);
        assert!(!out.stderr.contains("note:"), "--json {args:?} prints JSON only: {out:?}");
        assert_eq!(out.json()["success"], true, "{out:?}");
    }
}

#[test]
fn help_completions_and_systemd_unit() {
    let env = Env::new();
    for bin in [BIN, WATCHER_BIN] {
        let out = env.run_command(env.command_of(bin, &["--version"]), &["--version"], None).ok();
        assert!(out.stdout.trim().ends_with(&format!(" {}", env!("CARGO_PKG_VERSION"))), "{out:?}");
        let out = env.run_command(env.command_of(bin, &["--help"]), &["--help"], None).ok();
        for needle in
            ["--foreground", "--standalone", "--instance-id", "--directory", "--status", "--stop", "--restart"]
        {
            assert!(out.stdout.contains(needle), "{needle} missing from --help: {out:?}");
        }
        for command in
            ["list", "status", "start", "stop", "restart", "enable", "disable", "register", "deregister", "logs"]
        {
            assert!(out.stdout.lines().any(|line| line.trim_start().starts_with(command)), "{command}: {out:?}");
        }
        assert!(out.stdout.contains("Exit codes: 0 success"), "{out:?}");
    }
    let out = env.ok(&["register", "--help"]);
    assert!(out.stdout.contains("--backoff-ms"), "{out:?}");

    let bash = env.ok(&["completions", "bash"]).stdout;
    assert!(bash.contains("--foreground") && bash.contains("deregister"), "{bash}");
    let out = env.ok(&["completions", "zsh"]);
    assert!(out.stdout.starts_with("#compdef "), "{}", &out.stdout[..out.stdout.len().min(200)]);

    let unit = env.ok(&["systemd-unit"]).stdout;
    let exec = format!("ExecStart=\"{BIN}\" --foreground --instance-id default --directory \"{}\"", env.dir_str());
    assert!(unit.lines().any(|line| line == exec), "{unit}");
    assert!(unit.contains("[Service]") && unit.contains("WantedBy=multi-user.target"), "{unit}");
    // Containment: the service's cgroup subtree is the monitor's, and systemd signals only the monitor.
    assert!(unit.lines().any(|line| line == "Delegate=yes"), "{unit}");
    assert!(unit.lines().any(|line| line == "KillMode=process"), "{unit}");
    let user_unit = env.ok(&["systemd-unit", "--user"]).stdout;
    assert!(user_unit.contains("WantedBy=default.target"), "{user_unit}");
    assert_eq!(env.ok(&["--print-systemd-unit"]).stdout, unit);
    assert!(!env.dir.exists(), "printing created the monitor's folder");
}

#[test]
fn version_names_the_program() {
    let env = Env::new();
    for bin in [BIN, WATCHER_BIN] {
        let name = std::path::Path::new(bin).file_name().unwrap().to_string_lossy().into_owned();
        let out = env.run_command(env.command_of(bin, &["--version"]), &["--version"], None).ok();
        assert_eq!(out.stdout.trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")), "{out:?}");
    }
}

#[test]
fn bash_completion_is_registered_for_the_program() {
    let env = Env::new();
    let bash = env.ok(&["completions", "bash"]).stdout;
    let registered: Vec<&str> = bash.lines().filter(|line| line.trim_start().starts_with("complete ")).collect();
    assert!(
        !registered.is_empty() && registered.iter().all(|line| line.trim_end().ends_with(" process_monitor")),
        "bash completion is not registered for process_monitor: {registered:?}"
    );
}

/// Splits a systemd command line into words (double and single quotes, backslash escapes).
fn systemd_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                word.extend(chars.next());
                in_word = true;
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[test]
fn systemd_unit_keeps_a_folder_with_spaces_in_one_argument() {
    let env = Env::new();
    let dir = env.scratch("my monitor");
    let dir = dir.to_string_lossy().into_owned();
    let out = env.run_command(env.command(&["systemd-unit", "--directory", &dir]), &["systemd-unit"], None).ok();
    let exec = out.stdout.lines().find_map(|line| line.strip_prefix("ExecStart=")).expect("an ExecStart line");
    let words = systemd_words(exec);
    assert_eq!(words[0], BIN, "{exec}");
    let after = words.iter().position(|word| word == "--directory").map(|at| words.get(at + 1));
    assert_eq!(after, Some(Some(&dir)), "systemd reads ExecStart as {words:?}");
}

#[test]
fn untrusted_peers_are_held_to_the_permissions() {
    let env = Env::new();
    env.start_daemon();
    let url = env.remote_url();
    let remote = |args: &[&str]| {
        let mut all = args.to_vec();
        all.splice(1..1, ["--remote", url.as_str()]);
        env.run(&all)
    };
    // Local settings reach the running monitor promptly; the API shows them once they are in force.
    let set_locally = |key: &str, value: &str, shown: Value| {
        env.ok(&["config", "set", key, value]);
        env.wait_for("the monitor to apply the setting", || {
            (remote(&["config", "get", key]).ok().json() == shown).then_some(())
        });
    };
    env.ok(&["register", "--id", "local-proc", "--command", "/bin/sleep", "--no-autostart", "--", "600"]);
    set_locally("trusted-hosts", "10.9.9.9", json!({"trustedHosts": ["10.9.9.9"]}));

    let register = ["register", "--id", "remote-proc", "--command", "/bin/sleep", "--no-autostart", "--", "600"];
    let out = remote(&register).code(5);
    assert!(out.stderr.contains("not permitted by whitelist/blacklist"), "empty whitelist: {out:?}");
    let out = remote(&["config", "set", "executable-whitelist", "/usr/bin/*"]).code(5);
    assert!(out.stderr.contains("Configuration changes require trusted host"), "{out:?}");
    set_locally("executable-whitelist", "/usr/bin/*,/bin/*", json!({"patterns": ["/usr/bin/*", "/bin/*"]}));
    set_locally("executable-blacklist", "/usr/bin/rm", json!({"patterns": ["/usr/bin/rm"]}));
    let out = remote(&["register", "--id", "rm", "--command", "/bin/rm"]).code(5);
    assert!(out.stderr.contains("not permitted"), "blacklisted: {out:?}");

    remote(&register).ok();
    let status = remote(&["status", "remote-proc", "--json"]).ok().json();
    assert_eq!(status["isRemote"], true, "{status:#}");
    let real = std::fs::canonicalize("/bin/sleep").unwrap();
    assert_eq!(env.entry("remote-proc")["command"], real.to_string_lossy().as_ref(), "the checked path is stored");
    let out = remote(&["start", "remote-proc"]).ok();
    assert_eq!(out.stdout.trim(), "remote-proc: start -> running");
    env.running_pid("remote-proc");
    remote(&["stop", "remote-proc"]).ok();

    for command in ["start", "stop", "restart", "disable", "deregister"] {
        let out = remote(&[command, "local-proc"]).code(5);
        assert!(out.stderr.contains("Cannot modify local process"), "{out:?}");
    }
    set_locally("remote-access", r#"{"allowRemoteStart": false}"#, {
        let mut shown = remote(&["config", "get", "remote-access"]).ok().json();
        shown["allowRemoteStart"] = json!(false);
        shown
    });
    let out = remote(&["start", "remote-proc"]).code(5);
    assert!(out.stderr.contains("Remote start not allowed"), "{out:?}");
    assert_eq!(env.status("remote-proc")["state"], "stopped");
    assert_eq!(env.status("local-proc")["state"], "stopped");
}
