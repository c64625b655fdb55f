//! Stack files (`schema`, `diff`, `apply`, `up`, `down`): a file with every key lands in the registry as
//! written, diffs name what changes, applying twice restarts nothing, an environment change restarts only its
//! process, pruning spares what the file did not create, `up` prefixes output and stops everything on SIGINT,
//! and a broken file changes nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{signal, Env, Guarded, Proc, DEADLINE};

/// Writes a scratch file and answers its path as a string.
fn write(env: &Env, name: &str, text: &str) -> String {
    let path = env.scratch(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// A `[processes.ID]` table running `script` under `/bin/sh` with the test's marker as `$0`.
fn shell_table(env: &Env, id: &str, script: &str, extra: &str) -> String {
    format!(
        "[processes.{id}]\ncommand = \"/bin/sh\"\nargs = [\"-c\", {script:?}, \"{marker}\"]\nstop_timeout_ms = 500\n{extra}\n",
        marker = env.marker(id)
    )
}

/// The configuration part of a registry entry: the entry without its runtime fields.
fn config_of(entry: &Value) -> Value {
    let mut entry = entry.clone();
    for key in [
        "registeredAt",
        "lastStartedAt",
        "lastStoppedAt",
        "pid",
        "pidStartTime",
        "state",
        "restartAttempts",
        "consecutiveFailures",
        "lastExitCode",
        "lastSignal",
        "lastError",
        "pendingAction",
    ] {
        entry.as_object_mut().unwrap().remove(key);
    }
    entry
}

#[test]
fn a_stack_with_every_key_round_trips() {
    let env = Env::new();
    std::fs::write(env.scratch("api.env"), "FROM_FILE=1\nSHARED=file\n").unwrap();
    let toml = r#"
trusted_hosts = ["127.0.0.1", "::1"]
executableWhitelist = ["/usr/bin/*"]
executable_blacklist = ["/usr/bin/rm"]
standalone_mode = true
[remote_access]
allow_remote_start = false
allowRemoteMonitorRestart = true
allowed_environment = ["APP_MODE", "TZ"]
maxUntrustedProcesses = 7

[processes.api]
id = "api"
name = "My API"
command = "/bin/sleep"
args = ["600", "${STACK_TEST_ARG:-fallback}"]
working_directory = "work"
env_file = "api.env"
environment = { APP_ENV = "production", SHARED = "table" }
autostart = false
enabled = true
is_remote = true
stop_timeout_ms = 1500
log_max_bytes = 1048576
log_keep = 4
keep_runs = 7

[processes.api.restart_policy]
max_attempts = 3
backoff_intervals_ms = [100, 200]
reset_after_ms = 60000
retry_indefinitely = true
indefinite_interval_ms = 90000

[processes.api.aliveness_check]
enabled = true
url = "http://127.0.0.1:9/health"
status_url = "http://127.0.0.1:9/status"
interval_ms = 1000
timeout_ms = 500
consecutive_failures_required = 3

[processes.api.aliveness_check.startup_check]
enabled = true
initial_delay_ms = 10
check_interval_ms = 20
max_attempts = 5
fail_action = "disable"
"#;
    let file = write(&env, "stack.toml", toml);
    let work = env.scratch("work").to_string_lossy().into_owned();
    let out = env.ok(&["apply", "-f", &file]);
    assert!(out.stdout.contains("api: registered"), "{out:?}");
    let expected = json!({
        "id": "api", "name": "My API", "command": "/bin/sleep", "args": ["600", "fallback"],
        "workingDirectory": work,
        "environment": {"APP_ENV": "production", "FROM_FILE": "1", "SHARED": "table"},
        "autostart": false, "enabled": true, "isRemote": true,
        "restartPolicy": {"maxAttempts": 3, "backoffIntervalsMs": [100, 200], "resetAfterMs": 60000,
            "retryIndefinitely": true, "indefiniteIntervalMs": 90000},
        "alivenessCheck": {"enabled": true, "url": "http://127.0.0.1:9/health", "statusUrl": "http://127.0.0.1:9/status",
            "intervalMs": 1000, "timeoutMs": 500, "consecutiveFailuresRequired": 3,
            "startupCheck": {"enabled": true, "initialDelayMs": 10, "checkIntervalMs": 20, "maxAttempts": 5,
                "failAction": "disable"}},
        "stopTimeoutMs": 1500, "logMaxBytes": 1048576, "logKeep": 4, "keepRuns": 7,
        "stackFile": std::fs::canonicalize(&file).unwrap().to_string_lossy(),
    });
    assert_eq!(config_of(&env.entry("api")), expected);
    let access = &env.registry()["remoteAccess"];
    assert_eq!(access["trustedHosts"], json!(["127.0.0.1", "::1"]));
    assert_eq!(access["executableWhitelist"], json!(["/usr/bin/*"]));
    assert_eq!(access["executableBlacklist"], json!(["/usr/bin/rm"]));
    assert_eq!((&access["allowRemoteStart"], &access["allowRemoteMonitorRestart"]), (&json!(false), &json!(true)));
    assert_eq!(
        (&access["allowedEnvironment"], &access["maxUntrustedProcesses"]),
        (&json!(["APP_MODE", "TZ"]), &json!(7))
    );
    assert_eq!(env.registry()["standaloneMode"], true);
    // Read back: nothing to change, in either spelling or format.
    assert_eq!(env.ok(&["diff", "-f", &file]).stdout, "= api (unchanged)\nno changes\n");
    let mut as_json: Value = expected.clone();
    as_json.as_object_mut().unwrap().remove("stackFile");
    as_json["workingDirectory"] = json!("work");
    as_json["args"] = json!(["600", "${STACK_TEST_ARG:-fallback}"]);
    as_json["environment"] = json!({"APP_ENV": "production", "SHARED": "table"});
    as_json["envFile"] = json!(["api.env"]);
    let json_stack = json!({"trustedHosts": ["127.0.0.1", "::1"], "processes": {"api": as_json}});
    let json_file = write(&env, "stack.json", &json_stack.to_string());
    let diff = env.json(&["diff", "-f", &json_file, "--adopt"]);
    // The same configuration from another file: only the take-over shows, no key differs.
    assert_eq!(
        diff["plan"]["changed"],
        json!([{"id": "api", "keys": [], "needsRestart": false, "restarts": false,
        "adopted": true}]),
        "{diff:#}"
    );
    // The schema lists every key, in both spellings.
    let schema = env.json(&["schema"]);
    let process = &schema["properties"]["processes"]["additionalProperties"]["properties"];
    for key in ["command", "workingDirectory", "working_directory", "envFile", "env_file", "keepRuns", "restartPolicy"]
    {
        assert!(process.get(key).is_some(), "{key} missing from the schema");
    }
}

/// The keys of the dependencies (#14) and containment (#13) issues read from a stack file as well, in either
/// spelling, and read back unchanged.
#[test]
fn dependency_probe_and_containment_keys_round_trip() {
    let env = Env::new();
    let toml = r#"
[processes.db]
command = "/bin/sleep"
args = ["600"]
autostart = false
memory_restart_bytes = 104857600
track_daemonized_children = true
restart_policy = { restart_on = "never" }
[processes.db.aliveness_check]
type = "exec"
command = "/bin/true"
args = ["-x"]
[processes.db.aliveness_check.startup_check]
check_interval_ms = 50

[processes.api]
command = "/bin/sleep"
args = ["600"]
autostart = false
depends_on = { db = "healthy" }
dependencyTimeoutMs = 5000
restart_dependents = true
aliveness_check = { type = "tcp", host = "127.0.0.1", port = 9 }
"#;
    let file = write(&env, "stack.toml", toml);
    let out = env.ok(&["apply", "-f", &file]);
    assert!(out.stdout.contains("db: registered") && out.stdout.contains("api: registered"), "{out:?}");
    let db = config_of(&env.entry("db"));
    assert_eq!(db["memoryRestartBytes"], 104857600);
    assert_eq!(db["trackDaemonizedChildren"], true);
    assert_eq!(db["restartPolicy"]["restartOn"], "never");
    let check = &db["alivenessCheck"];
    assert_eq!(
        (&check["type"], &check["command"], &check["args"]),
        (&json!("exec"), &json!("/bin/true"), &json!(["-x"]))
    );
    assert_eq!(check["startupCheck"]["checkIntervalMs"], 50);
    let api = config_of(&env.entry("api"));
    assert_eq!(api["dependsOn"], json!({"db": "healthy"}));
    assert_eq!((&api["dependencyTimeoutMs"], &api["restartDependents"]), (&json!(5000), &json!(true)));
    let check = &api["alivenessCheck"];
    assert_eq!((&check["type"], &check["host"], &check["port"]), (&json!("tcp"), &json!("127.0.0.1"), &json!(9)));
    assert_eq!(env.ok(&["diff", "-f", &file]).stdout, "= db (unchanged)\n= api (unchanged)\nno changes\n");
    // A condition the monitor does not know is refused, naming the key and where it is written.
    let bad = write(&env, "bad.toml", &toml.replace("\"healthy\"", "\"ready\""));
    let out = env.run(&["apply", "-f", &bad]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("processes.api.dependsOn") && out.stderr.contains("\"ready\""), "{out:?}");
    assert!(out.stderr.contains("(line 20, column 1)"), "{out:?}");
}

#[test]
fn diff_lists_added_removed_and_changed_keys() {
    let env = Env::new();
    let first = format!(
        "{}{}{}",
        shell_table(&env, "keep", "sleep 600", "autostart = false"),
        shell_table(&env, "edit", "sleep 600", "autostart = false\nenvironment = { MODE = \"one\" }"),
        shell_table(&env, "gone", "sleep 600", "autostart = false"),
    );
    let file = write(&env, "stack.toml", &first);
    env.ok(&["apply", "-f", &file]);
    let second = format!(
        "trusted_hosts = [\"127.0.0.1\"]\n{}{}{}",
        shell_table(&env, "keep", "sleep 600", "autostart = false"),
        shell_table(&env, "edit", "sleep 600", "autostart = false\nenvironment = { MODE = \"two\" }\nlog_keep = 2"),
        shell_table(&env, "new", "sleep 600", ""),
    );
    write(&env, "stack.toml", &second);
    let out = env.ok(&["diff", "-f", &file]);
    assert_eq!(
        out.stdout,
        "+ new (new; starts)\n\
         ~ edit (not running: applies at its next start)\n    \
         environment: {\"MODE\":\"one\"} -> {\"MODE\":\"two\"}\n    \
         logKeep: (default) -> 2\n\
         - gone (no longer listed; apply --prune removes it)\n\
         = keep (unchanged)\n\
         ~ setting trustedHosts: [\"localhost\",\"127.0.0.1\",\"::1\",\"0.0.0.0\"] -> [\"127.0.0.1\"]\n",
        "{out:?}"
    );
    let registry = std::fs::read(env.dir.join("processes_default.json")).unwrap();
    let dry = env.ok(&["apply", "-f", &file, "--dry-run", "--prune"]);
    assert!(dry.stdout.starts_with("+ new (new; starts)\n"), "{dry:?}");
    assert!(dry.stdout.contains("- gone (removed)\n"), "{dry:?}");
    assert!(dry.stdout.ends_with("dry run: nothing changed\n"), "{dry:?}");
    assert_eq!(
        std::fs::read(env.dir.join("processes_default.json")).unwrap(),
        registry,
        "--dry-run changed the registry"
    );
    let diff = env.json(&["diff", "-f", &file, "--prune"]);
    let plan = &diff["plan"];
    assert_eq!(plan["added"], json!(["new"]));
    assert_eq!(plan["removed"], json!(["gone"]));
    assert_eq!(plan["unchanged"], json!(["keep"]));
    assert_eq!(
        plan["changed"][0]["keys"][0],
        json!({"key": "environment", "from": {"MODE": "one"}, "to": {"MODE": "two"}})
    );
    assert_eq!(plan["changed"][0]["needsRestart"], true);
    // diff changes nothing.
    assert_eq!(env.entry("edit")["environment"], json!({"MODE": "one"}));
    assert!(env.entry("new").is_null());
}

/// The PID of a running process, remembered for cleanup.
fn pid_of(env: &Env, id: &str) -> Proc {
    env.running_pid(id)
}

#[test]
fn apply_twice_restarts_nothing_and_an_env_change_restarts_only_its_process() {
    let env = Env::new();
    env.start_daemon();
    let stack = |mode: &str, stop_timeout: u32| {
        format!(
            "{}{}",
            shell_table(&env, "db", "sleep 600", ""),
            shell_table(&env, "web", "sleep 600", &format!("environment = {{ MODE = \"{mode}\" }}"))
                .replace("stop_timeout_ms = 500", &format!("stop_timeout_ms = {stop_timeout}")),
        )
    };
    let file = write(&env, "stack.toml", &stack("one", 500));
    let out = env.ok(&["apply", "-f", &file]);
    assert!(out.stdout.contains("db: registered; started -> running"), "{out:?}");
    assert!(out.stdout.contains("web: registered; started -> running"), "{out:?}");
    let (db, web) = (pid_of(&env, "db"), pid_of(&env, "web"));

    let out = env.ok(&["apply", "-f", &file]);
    assert_eq!(out.stdout, "db: unchanged\nweb: unchanged\n", "{out:?}");
    assert_eq!((pid_of(&env, "db"), pid_of(&env, "web")), (db, web), "a no-op apply restarted something");
    assert!(db.running() && web.running());

    // A key that needs no restart: stored, nothing restarted.
    write(&env, "stack.toml", &stack("one", 600));
    let out = env.ok(&["apply", "-f", &file]);
    assert!(out.stdout.contains("web: updated stopTimeoutMs\n"), "{out:?}");
    assert_eq!(env.entry("web")["stopTimeoutMs"], 600);
    assert_eq!((pid_of(&env, "db"), pid_of(&env, "web")), (db, web));

    write(&env, "stack.toml", &stack("two", 600));
    let diff = env.ok(&["diff", "-f", &file]);
    assert_eq!(
        diff.stdout, "~ web (restarts)\n    environment: {\"MODE\":\"one\"} -> {\"MODE\":\"two\"}\n= db (unchanged)\n",
        "{diff:?}"
    );
    let out = env.ok(&["apply", "-f", &file]);
    assert!(out.stdout.contains("web: updated environment; restarted -> running"), "{out:?}");
    assert!(out.stdout.contains("db: unchanged"), "{out:?}");
    let new_web = pid_of(&env, "web");
    assert_ne!(new_web, web);
    assert!(!web.running(), "the old run of web still runs");
    assert_eq!(pid_of(&env, "db"), db, "db was restarted for web's change");
    assert!(db.running());
    assert_eq!(env.copies("web"), 1);
    // The new run has the new environment.
    let environ = std::fs::read(format!("/proc/{}/environ", new_web.pid)).unwrap();
    assert!(environ.split(|byte| *byte == 0).any(|var| var == b"MODE=two"));
}

#[test]
fn prune_and_down_spare_processes_registered_otherwise() {
    let env = Env::new();
    env.start_daemon();
    // Registered through the HTTP API.
    let api_config = env.shell("by-api", "sleep 600");
    let config_file = write(&env, "by-api.json", &api_config.to_string());
    env.ok(&["register", "--file", &config_file, "--remote", &env.remote_url()]);
    env.ok(&["start", "by-api", "--remote", &env.remote_url()]);
    let by_api = pid_of(&env, "by-api");

    let both = format!("{}{}", shell_table(&env, "a", "sleep 600", ""), shell_table(&env, "b", "sleep 600", ""));
    let file = write(&env, "stack.toml", &both);
    env.ok(&["apply", "-f", &file]);
    let a = pid_of(&env, "a");
    pid_of(&env, "b");

    // A stack naming the API's process is refused unless told to take it over, and changes nothing.
    let claims = write(&env, "claims.toml", &shell_table(&env, "by-api", "sleep 600", ""));
    let out = env.run(&["apply", "-f", &claims]).code(1);
    assert!(out.stderr.contains("by-api: already registered outside a stack file"), "{out:?}");
    assert!(out.stderr.contains("--adopt"), "{out:?}");
    assert_eq!(pid_of(&env, "by-api"), by_api);

    write(&env, "stack.toml", &shell_table(&env, "a", "sleep 600", ""));
    let out = env.ok(&["apply", "-f", &file]);
    assert!(out.stdout.contains("b: no longer listed (apply --prune removes it)"), "{out:?}");
    assert!(!env.entry("b").is_null(), "removed without --prune");

    // A process registered otherwise that depends on b: neither --prune nor down removes anything.
    env.ok(&["register", "--id", "needs-b", "--command", "/bin/true", "--no-autostart", "--depends-on", "b:started"]);
    let out = env.run(&["apply", "-f", &file, "--prune"]).code(1);
    assert!(out.stderr.contains("b: cannot be pruned: needs-b depend(s) on it"), "{out:?}");
    let out = env.run(&["down", "-f", &file]).code(1);
    assert!(out.stderr.contains("b is a dependency of needs-b, which was not created from"), "{out:?}");
    assert!(out.stderr.contains("(nothing was removed)"), "{out:?}");
    assert!(!env.entry("a").is_null() && !env.entry("b").is_null());
    assert_eq!(pid_of(&env, "a"), a);
    env.ok(&["deregister", "needs-b"]);

    let out = env.ok(&["apply", "-f", &file, "--prune"]);
    assert!(out.stdout.contains("b: removed"), "{out:?}");
    assert!(!out.stdout.contains("by-api"), "{out:?}");
    assert!(env.entry("b").is_null());
    env.wait_for("b to end", || (env.copies("b") == 0).then_some(()));
    assert_eq!(pid_of(&env, "a"), a);
    assert_eq!(pid_of(&env, "by-api"), by_api, "--prune touched a process registered through the API");

    let out = env.ok(&["down", "-f", &file]);
    assert_eq!(out.stdout, "a: stopped and removed\n", "{out:?}");
    assert!(env.entry("a").is_null());
    assert_eq!(env.copies("a"), 0);
    assert_eq!(pid_of(&env, "by-api"), by_api, "down touched a process registered through the API");
    assert!(by_api.running());
}

/// `up` as a child of the test with its output in a scratch file.
fn spawn_up(env: &Env, file: &str) -> (Guarded, PathBuf) {
    let log = env.scratch("up.out");
    let out = std::fs::File::create(&log).unwrap();
    let mut command = env.command(&["up", "-f", file]);
    command.stdout(out.try_clone().unwrap()).stderr(out);
    let child = command.spawn().expect("spawn up");
    env.remember(child.id());
    (Guarded(child), log)
}

/// Waits (under the deadline) for `up` to exit.
fn wait_exit(up: &mut Guarded) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = up.0.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < DEADLINE, "up did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn up_prefixes_output_and_sigint_stops_the_stack() {
    let env = Env::new();
    env.start_daemon();
    let stack = format!(
        "{}{}",
        shell_table(&env, "db", "echo db ready; echo db warning >&2; sleep 600", ""),
        shell_table(
            &env,
            "webserver",
            "echo listening on ${PORT}; printf unfinished; sleep 600",
            "environment = { PORT = \"8080\" }"
        ),
    );
    let file = write(&env, "stack.toml", &stack.replace("${PORT}", "$$PORT"));
    let (mut up, log) = spawn_up(&env, &file);
    let text = env.wait_for("up to show both processes' output", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains("webserver | listening on 8080\n") && text.contains("db        | db warning\n")).then_some(text)
    });
    assert!(text.contains("db        | db ready\n"), "{text}");
    let (db, web) = (pid_of(&env, "db"), pid_of(&env, "webserver"));

    signal(up.0.id(), libc::SIGINT);
    let status = wait_exit(&mut up);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {text}");
    assert!(!text[..text.find("Stopping").unwrap()].contains("unfinished"), "{text}");
    assert!(text.contains("webserver | unfinished\n"), "an unfinished last line is shown once the run is over: {text}");
    // Stopped in reverse file order.
    let web_at = text.find("webserver: stopped").unwrap_or_else(|| panic!("{text}"));
    let db_at = text.find("db: stopped").unwrap_or_else(|| panic!("{text}"));
    assert!(web_at < db_at, "{text}");
    assert!(!db.running() && !web.running(), "{text}");
    assert_eq!((env.copies("db"), env.copies("webserver")), (0, 0), "{text}");
    assert_eq!(env.status("db")["state"], "stopped");
    assert_eq!(env.status("webserver")["state"], "stopped");

    // `up -d` starts them again and returns.
    let out = env.ok(&["up", "-d", "-f", &file]);
    assert!(out.stdout.contains("db: started -> running"), "{out:?}");
    assert!(pid_of(&env, "db").running() && pid_of(&env, "webserver").running());
    env.ok(&["down", "-f", &file]);
    assert_eq!((env.copies("db"), env.copies("webserver")), (0, 0));
}

#[test]
fn a_broken_file_changes_nothing() {
    let env = Env::new();
    std::fs::write(env.scratch("ok.env"), "A=1\n").unwrap();
    let good = format!(
        "{}{}",
        shell_table(&env, "one", "sleep 600", "autostart = false"),
        shell_table(&env, "two", "sleep 600", "autostart = false\nenv_file = \"ok.env\""),
    );
    let file = write(&env, "stack.toml", &good);
    env.ok(&["apply", "-f", &file]);
    // Registered otherwise, depending on the file's `two`.
    env.ok(&["register", "--id", "outside", "--command", "/bin/true", "--no-autostart", "--depends-on", "two:started"]);
    let registry = std::fs::read(env.dir.join("processes_default.json")).unwrap();
    // Each broken file also changes `one` and adds `three`, ahead of the problem.
    let changed_first = |broken: &str| {
        format!(
            "{}{}{}",
            shell_table(&env, "one", "sleep 601", "autostart = false"),
            shell_table(&env, "three", "sleep 600", "autostart = false"),
            broken
        )
    };
    // (before the tables, after them, what the error must say)
    let cases = [
        ("", "[processes.two]\ncommand = \"/bin/sh\"\nargs = [\"x\",\n", "line 13, column 13: unclosed array"),
        (
            "",
            "[processes.two]\ncommand = \"/bin/sh\"\ncomand = \"x\"\n",
            "processes.two.comand: unknown key; did you mean command?",
        ),
        ("", "[processes.two]\ncommand = \"/bin/sh\"\nenv_file = \"missing.env\"\n", "missing.env"),
        ("", "[processes.two]\ncommand = \"${STACK_TEST_UNSET_VAR}\"\n", "STACK_TEST_UNSET_VAR} is not set"),
        ("", "[processes.two]\ncommand = \"/bin/sh\"\nlog_keep = 1000\n", "logKeep"),
        (
            "",
            "[processes.two]\ncommand = \"/bin/sh\"\nstop_timeout_ms = \"soon\"\n",
            "processes.two.stopTimeoutMs: invalid type",
        ),
        (
            "",
            "[processes.two]\ncommand = \"/bin/sh\"\ndepends_on = { outside = \"started\" }\n",
            "dependsOn would form a cycle with the registered processes: outside -> two -> outside",
        ),
        ("trusted_hosts = [\"\"]\n", "", "trustedHosts"),
        ("standalone_mod = true\n", "", "standalone_mod: unknown key; did you mean standalone_mode?"),
    ];
    for (top, broken, expected) in cases {
        let text = format!("{top}{}", changed_first(broken));
        write(&env, "stack.toml", &text);
        for command in ["apply", "diff", "up"] {
            let out = env.run(&[command, "-f", &file]).code(1);
            assert!(out.stderr.contains(expected), "{expected:?} not in {out:?}");
            assert!(out.stderr.contains("stack.toml"), "the error does not name the file: {out:?}");
        }
        assert_eq!(
            std::fs::read(env.dir.join("processes_default.json")).unwrap(),
            registry,
            "a broken file ({expected}) changed the registry"
        );
    }
    assert!(env.daemon_pid().is_none(), "up started a monitor for a broken file");
}

#[test]
fn up_starts_a_monitor_when_none_runs_and_stops_it_on_sigint() {
    let env = Env::new();
    // The instance's ports and address come from its registry, as for a plain start.
    std::fs::create_dir_all(&env.dir).unwrap();
    let registry = json!({
        "version": 1, "instanceId": "default", "standaloneMode": true,
        "remoteAccess": {"remotePort": env.remote_port, "bindAddress": "127.0.0.1"},
        "alivenessServer": {"port": env.alive_port},
        "processes": {},
    });
    std::fs::write(env.dir.join("processes_default.json"), registry.to_string()).unwrap();
    let file = write(&env, "stack.toml", &shell_table(&env, "solo", "echo solo up; sleep 600", ""));
    let (mut up, log) = spawn_up(&env, &file);
    env.wait_for("up to show the output", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("solo | solo up\n").then_some(())
    });
    let monitor = Proc::of(env.daemon_pid().expect("up started a monitor"));
    env.remember(monitor.pid);
    let solo = pid_of(&env, "solo");
    signal(up.0.id(), libc::SIGINT);
    let status = wait_exit(&mut up);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {text}");
    assert!(!solo.running(), "{text}");
    assert!(!monitor.running(), "the monitor up started still runs: {text}");
    assert_eq!(env.copies("solo"), 0);
    assert_eq!(env.entry("solo")["state"], "stopped");
}

#[test]
fn client_keeps_additive_keys_and_runtime_fields_on_update() {
    use pm_client::{Error, ProcessMonitorClient};
    use pm_core::ProcessConfig;

    let env = Env::new();
    let client = ProcessMonitorClient::in_directory(&env.dir, "default").unwrap();
    let mut config = ProcessConfig::new("svc", "svc", "/bin/sleep");
    config.autostart = false;
    let keys = |value: Value| value.as_object().unwrap().clone();
    client.register_with_keys(config.clone(), keys(json!({"stackFile": "/a/stack.toml", "note": 1}))).unwrap();
    assert_eq!(env.entry("svc")["stackFile"], "/a/stack.toml");
    // Keys that are fields of the entry are refused, configuration or runtime.
    for key in ["command", "pid", "state", "stopTimeoutMs"] {
        let err = client.register_with_keys(ProcessConfig::new("other", "o", "/bin/true"), keys(json!({key: 1})));
        assert!(matches!(err, Err(Error::Invalid(_))), "{key}: {err:?}");
    }
    assert!(env.entry("other").is_null());

    // Runtime fields survive a configuration update; `enabled` is left to enable/disable; null removes a key.
    let registered_at = env.entry("svc")["registeredAt"].clone();
    client.disable("svc").unwrap();
    config.args = vec!["5".to_owned()];
    config.enabled = true;
    client.update_config(config.clone(), keys(json!({"note": null, "stackFile": "/b/stack.toml"}))).unwrap();
    let entry = env.entry("svc");
    assert_eq!(entry["args"], json!(["5"]));
    assert_eq!((&entry["enabled"], &entry["state"]), (&json!(false), &json!("disabled")));
    assert_eq!(entry["registeredAt"], registered_at);
    assert_eq!(entry["stackFile"], "/b/stack.toml");
    assert!(entry.get("note").is_none(), "{entry:#}");
    let missing = client.update_config(ProcessConfig::new("nope", "n", "/bin/true"), serde_json::Map::new());
    assert!(matches!(missing, Err(Error::NotFound(id)) if id == "nope"));
}
