//! Service dependencies against the real daemon: a chain db ← migrate (one-shot) ← api ← web started from its
//! end and stopped from its start, a dependency that never gets healthy, graphs refused at the door, a monitor
//! killed mid-chain, and the tcp and exec probes (a hung exec probe leaves nothing behind).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use pm_core::{DependencyCondition, ProcessState, ProcessStatus};
use pm_tests::site::Site;
use pm_tests::{procs, report, wire};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(30);

fn site(label: &str) -> Option<Site> {
    let site = Site::new(label, Path::new(env!("CARGO_BIN_EXE_pm-test-reaper")))?;
    site.edit(|registry| registry.remote_access.trusted_hosts = vec!["127.0.0.1".to_owned()]);
    Some(site)
}

/// Starts the site's daemon and waits until its remote API answers too (it binds after the aliveness server
/// that `start_daemon` waits for); answers the daemon's PID.
fn start_daemon(site: &Site) -> u32 {
    let pid = site.start_daemon();
    wait_until(LONG, "the remote API answers", || site.api("GET", "/monitor/status", None).is_some());
    pid
}

fn wait_until(timeout: Duration, what: &str, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// `POST`/`DELETE`... on the API from 127.0.0.1; (status, parsed body). Generous deadlines: on two shared
/// cores under the other suites' load, one answer can take its time.
fn call(site: &Site, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let text = body.map(Value::to_string);
    let (status, body) = pm_tests::http_with(
        site.remote_port,
        method,
        path,
        text.as_deref(),
        Duration::from_secs(5),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("{method} {path}: no answer"));
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn status(site: &Site, id: &str) -> Option<ProcessStatus> {
    site.statuses()?.remove(id)
}

fn state(site: &Site, id: &str) -> Option<ProcessState> {
    status(site, id).map(|status| status.state)
}

/// Runs the CLI on the site's home: its exit code and its stdout followed by its stderr.
fn run_cli(site: &Site, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(&site.bin)
        .arg("--directory")
        .arg(&site.dir)
        .args(["--instance-id", "default"])
        .args(args)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Runs the CLI on the site's home, asserts that it succeeded, and answers its stdout.
fn cli_ok(site: &Site, args: &[&str]) -> String {
    let out = std::process::Command::new(&site.bin).arg("--directory").arg(&site.dir).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `/bin/sh -c script` process with the site's marker of `id` as `$0` (to count its copies), no autostart.
fn shell(site: &Site, id: &str, script: &str) -> Value {
    json!({"id": id, "name": id, "command": "/bin/sh", "args": ["-c", script, site.marker(id)], "autostart": false,
           "stopTimeoutMs": 3000})
}

/// `date +%s%N >> {dir}/{id}.t`: when the process got to run.
fn stamp(site: &Site, id: &str) -> String {
    format!("date +%s%N >> '{}'", site.dir.join(format!("{id}.t")).display())
}

fn stamps(site: &Site, id: &str) -> Vec<u128> {
    std::fs::read_to_string(site.dir.join(format!("{id}.t")))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Registers db (healthy about `db_ready_s` after it starts: an exec startup check waits for its ready file) ←
/// migrate (one-shot, `restartOn: never`) ← api (db healthy, migrate completedSuccessfully; healthy once it wrote
/// its time stamp) ← web (api healthy).
fn register_chain(site: &Site, db_ready_s: f64) {
    let ready = site.dir.join("db.ready");
    let mut db = shell(
        site,
        "db",
        &format!("{}; sleep {db_ready_s}; touch '{}'; sleep 600 & wait", stamp(site, "db"), ready.display()),
    );
    db["alivenessCheck"] = json!({
        "type": "exec", "command": "/bin/sh", "args": ["-c", format!("test -f '{}'", ready.display())],
        "intervalMs": 60000, "timeoutMs": 2000,
        "startupCheck": {"initialDelayMs": 100, "checkIntervalMs": 100, "maxAttempts": 1000}
    });
    let mut migrate = shell(site, "migrate", &format!("{}; sleep 0.3; exit 0", stamp(site, "migrate")));
    migrate["restartPolicy"] = json!({"restartOn": "never"});
    migrate["dependsOn"] = json!({"db": "healthy"});
    let mut api = shell(site, "api", &format!("{}; sleep 600 & wait", stamp(site, "api")));
    api["dependsOn"] = json!({"db": "healthy", "migrate": "completedSuccessfully"});
    api["alivenessCheck"] = json!({
        "type": "exec", "command": "/bin/sh", "args": ["-c", format!("test -s '{}'", site.dir.join("api.t").display())],
        "intervalMs": 60000, "timeoutMs": 2000,
        "startupCheck": {"initialDelayMs": 0, "checkIntervalMs": 50, "maxAttempts": 1000}
    });
    let mut web = shell(site, "web", &format!("{}; sleep 600 & wait", stamp(site, "web")));
    web["dependsOn"] = json!({"api": "healthy"});
    for config in [db, migrate, api, web] {
        let (code, body) = call(site, "POST", "/processes", Some(&config));
        assert_eq!(code, 200, "{body}");
    }
}

fn first_stamps(site: &Site) -> [u128; 4] {
    ["db", "migrate", "api", "web"].map(|id| {
        wait_until(LONG, &format!("{id} ran"), || !stamps(site, id).is_empty());
        stamps(site, id)[0]
    })
}

#[test]
fn starting_web_brings_the_chain_up_in_order_and_stopping_db_takes_api_and_web_down_first() {
    let Some(site) = site("deps-chain") else { return };
    start_daemon(&site);
    register_chain(&site, 1.0);
    let started = Instant::now();
    let (code, body) = call(&site, "POST", "/processes/web/start", None);
    assert_eq!((code, body["state"].as_str()), (200, Some("starting")), "{body}");
    // While it waits, web says for what.
    let waiting = status(&site, "web").unwrap();
    assert_eq!(waiting.state, ProcessState::Starting);
    assert_eq!(waiting.pid, None);
    assert_eq!(waiting.waiting_for, Some(BTreeMap::from([("api".to_owned(), DependencyCondition::Healthy)])));
    wait_until(LONG, "the chain is up", || {
        state(&site, "web") == Some(ProcessState::Running) && state(&site, "api") == Some(ProcessState::Running)
    });
    let took = started.elapsed();
    let [db, migrate, api, web] = first_stamps(&site);
    assert!(migrate >= db + 900_000_000, "migrate ran {} ms after db started", (migrate - db) / 1_000_000);
    assert!(api > migrate + 250_000_000, "api ran before migrate finished");
    assert!(web > api, "web before api");
    let job = status(&site, "migrate").unwrap();
    assert_eq!((job.state, job.last_exit_code), (ProcessState::Stopped, Some(0)), "{job:?}");
    assert_eq!(status(&site, "web").unwrap().waiting_for, None);
    for id in ["db", "api", "web"] {
        assert_eq!(site.copies(id).len(), 1, "{id} runs once");
    }
    report("deps: chain of 4 up from `start web`", &format!("{:.2} s (db healthy after 1 s)", took.as_secs_f64()));

    let (code, body) = call(&site, "POST", "/processes/db/stop", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["stoppedDependents"], json!(["web", "api"]));
    assert_eq!(body["state"], "stopped");
    let statuses = site.statuses().unwrap();
    for id in ["db", "api", "web"] {
        assert_eq!(statuses[id].state, ProcessState::Stopped, "{id}");
        assert!(site.copies(id).is_empty(), "{id} still runs");
    }
    let stopped = |id: &str| statuses[id].last_stopped_at.unwrap();
    assert!(stopped("web") <= stopped("api") && stopped("api") <= stopped("db"));

    // The same through the local client (the CLI without --remote): a start of web brings the chain up again,
    // the job included, and a stop of db takes web and api down first.
    std::fs::remove_file(site.dir.join("db.ready")).unwrap();
    let cli = |args: &[&str]| cli_ok(&site, args);
    cli(&["start", "web"]);
    wait_until(LONG, "the chain is up again", || {
        state(&site, "web") == Some(ProcessState::Running) && state(&site, "api") == Some(ProcessState::Running)
    });
    for id in ["db", "migrate", "api", "web"] {
        // A process is running once its shell runs, a moment before the shell writes its stamp.
        wait_until(LONG, &format!("{id} ran a second time"), || stamps(&site, id).len() >= 2);
        assert_eq!(stamps(&site, id).len(), 2, "{id} ran a second time");
    }
    let second = |id: &str| stamps(&site, id)[1];
    assert!(second("migrate") >= second("db") + 900_000_000 && second("api") > second("migrate"));
    assert!(second("web") > second("api"));
    // The local stop (through the monitor's socket) says which dependents went first.
    let out = cli(&["stop", "db"]);
    assert!(out.contains("stopped first (they depend on db): web, api"), "{out}");
    assert!(out.contains("db: stop -> stopped"), "{out}");
    let statuses = site.statuses().unwrap();
    for id in ["db", "api", "web"] {
        assert_eq!(statuses[id].state, ProcessState::Stopped, "{id}");
    }
    assert!(statuses["web"].last_stopped_at <= statuses["db"].last_stopped_at);
}

#[test]
fn autostart_processes_start_in_dependency_order_at_boot() {
    let Some(site) = site("deps-boot") else { return };
    // The chain goes into the registry before the monitor starts (as if it had been stopped cleanly).
    let daemon = start_daemon(&site);
    register_chain(&site, 0.5);
    site.stop_daemon(daemon);
    site.edit(|registry| {
        for entry in registry.processes.values_mut() {
            entry.config.autostart = true;
        }
    });
    let started = Instant::now();
    start_daemon(&site);
    wait_until(LONG, "the chain is up after boot", || {
        state(&site, "web") == Some(ProcessState::Running) && state(&site, "api") == Some(ProcessState::Running)
    });
    let [db, migrate, api, web] = first_stamps(&site);
    assert!(migrate >= db + 400_000_000 && migrate < api && api < web, "{db} {migrate} {api} {web}");
    for id in ["db", "migrate", "api", "web"] {
        assert_eq!(stamps(&site, id).len(), 1, "{id} started once");
    }
    report(
        "deps: chain of 4 up at boot",
        &format!("{:.2} s (db healthy after 0.5 s)", started.elapsed().as_secs_f64()),
    );
}

#[test]
fn a_dependency_that_never_gets_healthy_fails_the_dependent_after_its_timeout() {
    let Some(site) = site("deps-timeout") else { return };
    start_daemon(&site);
    let mut db = shell(&site, "db", "sleep 600 & wait");
    db["alivenessCheck"] = json!({"type": "tcp", "port": pm_tests::free_port(), "timeoutMs": 200,
        "startupCheck": {"initialDelayMs": 0, "checkIntervalMs": 100, "maxAttempts": 100000}});
    let mut api = shell(&site, "api", "sleep 600 & wait");
    api["dependsOn"] = json!({"db": "healthy"});
    api["dependencyTimeoutMs"] = json!(1500);
    for config in [db, api] {
        assert_eq!(call(&site, "POST", "/processes", Some(&config)).0, 200);
    }
    let (code, _) = call(&site, "POST", "/processes/api/start", None);
    assert_eq!(code, 200);
    let took = wait_until(LONG, "api failed", || state(&site, "api") == Some(ProcessState::Failed));
    assert!(took >= Duration::from_millis(1200), "failed after {took:?}, before its timeout");
    let api = status(&site, "api").unwrap();
    let error = api.last_error.unwrap();
    assert_eq!(
        error, "dependencies not met within 1500 ms (dependencyTimeoutMs): \"db\" healthy (it is starting)",
        "readable and names the dependency"
    );
    assert_eq!(api.pid, None);
    assert!(site.copies("api").is_empty(), "api was never spawned");
    assert_eq!(state(&site, "db"), Some(ProcessState::Starting));
    // The CLI's status says what a waiting process waits for.
    let mut web = shell(&site, "web", "sleep 600 & wait");
    web["dependsOn"] = json!({"db": "healthy"});
    assert_eq!(call(&site, "POST", "/processes", Some(&web)).0, 200);
    assert_eq!(call(&site, "POST", "/processes/web/start", None).0, 200);
    let cli = |args: &[&str]| cli_ok(&site, args);
    let text = cli(&["status", "web"]);
    assert!(text.contains("state:     starting") && text.contains("waiting:   for db (healthy)"), "{text}");
    let json: Value = serde_json::from_str(&cli(&["--json", "status", "web"])).unwrap();
    assert_eq!(json["waitingFor"], json!({"db": "healthy"}));
    assert_eq!(call(&site, "POST", "/processes/web/stop", None).0, 200);
}

#[test]
fn bad_graphs_are_refused_at_the_door_and_nothing_is_stored() {
    let Some(site) = site("deps-graph") else { return };
    start_daemon(&site);
    let mut b = shell(&site, "b", "sleep 600 & wait");
    b["dependsOn"] = json!({"a": "started"});
    assert_eq!(call(&site, "POST", "/processes", Some(&b)).0, 200, "a dependency not registered yet is allowed");
    assert_eq!(status(&site, "b").unwrap().state, ProcessState::Stopped);
    let before = site.registry().unwrap();
    let mut c = shell(&site, "c", "true");
    c["dependsOn"] = json!({"b": "started"});
    assert_eq!(call(&site, "POST", "/processes", Some(&c)).0, 200);
    let before_c = site.registry().unwrap();
    assert!(before_c.processes.contains_key("c"));
    let mut a = shell(&site, "a", "sleep 600 & wait");
    a["dependsOn"] = json!({"c": "healthy"});
    let mut selfish = shell(&site, "s", "true");
    selfish["dependsOn"] = json!({"s": "started"});
    let mut unknown = shell(&site, "u", "true");
    unknown["dependsOn"] = json!({"b": "ready"});
    let cases = [
        (a, "dependency cycle a -> c -> b -> a"),
        (selfish, "\"s\" cannot depend on itself"),
        (unknown, "dependsOn condition \"ready\" (must be started, healthy or completedSuccessfully)"),
    ];
    for (config, fragment) in cases {
        let (code, body) = call(&site, "POST", "/processes", Some(&config));
        let error = body["error"].as_str().unwrap_or_default().to_owned();
        assert_eq!(code, 400, "{body}");
        assert!(error.contains(fragment), "{error:?} lacks {fragment:?}");
        assert!(error.contains("dependsOn"), "{error:?} names the field");
        assert_eq!(error.matches("Missing or invalid field").count(), 1, "{error:?}");
    }
    assert_eq!(site.registry().unwrap().processes, before_c.processes, "nothing stored");
    assert!(site.statuses().unwrap().keys().eq(["b", "c"]));
    let _ = before;

    // b is needed by c: deregistering it is refused, naming c, unless forced.
    let (code, body) = call(&site, "DELETE", "/processes/b", None);
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("dependency of c"), "{body}");
    assert!(site.registry().unwrap().processes.contains_key("b"));
    let client = pm_client::RemoteProcessMonitorClient::new(&format!("http://127.0.0.1:{}", site.remote_port)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    match runtime.block_on(client.deregister("b")) {
        Err(pm_client::Error::Conflict(message)) => assert!(message.contains("dependency of c"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The CLI through the running monitor's socket: refused, then forced.
    let cli = |args: &[&str]| run_cli(&site, args);
    let (code, out) = cli(&["deregister", "b"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Process b is a dependency of c") && out.contains("or use --force"), "{out}");
    assert!(site.registry().unwrap().processes.contains_key("b"));
    let (code, out) = cli(&["deregister", "--force", "b"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("b: deregister done"), "{out}");
    assert!(!site.registry().unwrap().processes.contains_key("b"));
    assert!(site.statuses().unwrap().keys().eq(["c"]));
    // The remote client forces it too.
    let mut again = shell(&site, "b", "sleep 600 & wait");
    again["dependsOn"] = json!({"a": "started"});
    assert_eq!(call(&site, "POST", "/processes", Some(&again)).0, 200);
    runtime.block_on(client.deregister_forced("b")).unwrap();
    assert!(!site.registry().unwrap().processes.contains_key("b"));
}

#[test]
fn the_cli_registers_dependencies_and_refuses_an_unknown_condition() {
    let Some(site) = site("deps-cli") else { return };
    let cli = |args: &[&str]| run_cli(&site, args);
    let (code, out) = cli(&[
        "register",
        "--id",
        "api",
        "--command",
        "/bin/true",
        "--no-autostart",
        "--depends-on",
        "db:healthy",
        "--depends-on",
        "migrate:completedSuccessfully",
        "--dependency-timeout-ms",
        "5000",
        "--restart-on",
        "failure",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let config = site.registry().unwrap().processes["api"].config.clone();
    assert_eq!(config.depends_on["db"], DependencyCondition::Healthy);
    assert_eq!(config.depends_on["migrate"], DependencyCondition::CompletedSuccessfully);
    assert_eq!(config.dependency_timeout_ms, Some(5000));
    assert_eq!(config.restart_policy.unwrap().restart_on, pm_core::RestartOn::Failure);
    let (code, out) = cli(&["register", "--id", "x", "--command", "/bin/true", "--depends-on", "db:ready"]);
    assert_ne!(code, Some(0));
    assert!(out.contains("\"ready\"") && out.contains("completedSuccessfully"), "{out}");
    let (code, out) = cli(&["register", "--id", "db", "--command", "/bin/true", "--depends-on", "api:started"]);
    assert_ne!(code, Some(0));
    assert!(out.contains("dependency cycle api -> db -> api"), "{out}");
    assert!(!site.registry().unwrap().processes.contains_key("db"));
    // Once db is registered, api depends on it: deregistering db is refused, naming api.
    let (code, out) = cli(&["register", "--id", "db", "--command", "/bin/true", "--no-autostart"]);
    assert_eq!(code, Some(0), "{out}");
    // A disabled dependency makes a start fail at once, naming it.
    assert_eq!(cli(&["disable", "db"]).0, Some(0));
    let (code, out) = cli(&["start", "api"]);
    assert_ne!(code, Some(0));
    assert!(out.contains("Cannot start api: its dependency db is disabled"), "{out}");
    assert_eq!(cli(&["enable", "db"]).0, Some(0));
    let (code, out) = cli(&["deregister", "db"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("Process db is a dependency of api"), "{out}");
    assert!(out.contains("--force"), "names the way round it: {out}");
    assert!(site.registry().unwrap().processes.contains_key("db"));
    let (code, out) = cli(&["deregister", "api"]);
    assert_eq!(code, Some(0), "nothing depends on api: {out}");
    let (code, out) = cli(&["deregister", "db"]);
    assert_eq!(code, Some(0), "nothing depends on db any more: {out}");
    // `deregister --force` removes a process others depend on; they keep their dependsOn.
    for args in [
        &["register", "--id", "db", "--command", "/bin/true", "--no-autostart"][..],
        &["register", "--id", "api", "--command", "/bin/true", "--no-autostart", "--depends-on", "db:healthy"],
    ] {
        assert_eq!(cli(args).0, Some(0));
    }
    let (code, out) = cli(&["--json", "deregister", "--force", "db"]);
    assert_eq!(code, Some(0), "{out}");
    let answer: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(answer, json!({"success": true, "processId": "db", "action": "deregister"}));
    let registry = site.registry().unwrap();
    assert!(!registry.processes.contains_key("db"));
    assert_eq!(registry.processes["api"].config.depends_on["db"], DependencyCondition::Healthy);
}

#[test]
fn a_monitor_killed_mid_chain_resumes_it_without_duplicates() {
    let Some(site) = site("deps-kill9") else { return };
    let daemon = start_daemon(&site);
    register_chain(&site, 3.0);
    assert_eq!(call(&site, "POST", "/processes/web/start", None).0, 200);
    // Mid-chain: db started (not healthy yet), the others wait, and the registry says so.
    wait_until(LONG, "db spawned and web waiting, stored", || {
        let Ok(registry) = site.registry() else { return false };
        let entry = |id: &str| registry.processes[id].clone();
        entry("db").pid.is_some() && !entry("web").waiting_for.is_empty() && !entry("api").waiting_for.is_empty()
    });
    assert!(site.copies("migrate").is_empty() && site.copies("api").is_empty());
    site.kill_daemon(daemon);
    let restarted = Instant::now();
    start_daemon(&site);
    wait_until(LONG, "the chain completes after the restart", || {
        state(&site, "web") == Some(ProcessState::Running) && state(&site, "api") == Some(ProcessState::Running)
    });
    let [db, migrate, api, web] = first_stamps(&site);
    assert!(migrate >= db + 2_900_000_000, "migrate ran before the adopted db passed its startup check");
    assert!(migrate < api && api < web);
    for id in ["db", "migrate", "api", "web"] {
        assert_eq!(stamps(&site, id).len(), 1, "{id} started once");
    }
    for id in ["db", "api", "web"] {
        assert_eq!(site.copies(id).len(), 1, "{id}: one copy");
    }
    assert_eq!(status(&site, "migrate").unwrap().last_exit_code, Some(0));
    report("deps: chain resumed after kill -9 mid-chain", &format!("{:.2} s", restarted.elapsed().as_secs_f64()));
    // The CLI through the API says which dependents it stopped first.
    let url = format!("http://127.0.0.1:{}", site.remote_port);
    let out = std::process::Command::new(&site.bin).args(["stop", "db", "--remote", &url]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("stopped first (they depend on db): web, api"), "{text}");
    assert!(text.contains("db: stop -> stopped"), "{text}");
}

/// Live processes whose command line holds `needle`.
fn count_with(needle: &str) -> usize {
    procs::scan().iter().filter(|info| info.state != 'Z' && info.args.iter().any(|arg| arg == needle)).count()
}

#[test]
fn probes_pass_and_fail_as_specified_and_a_hung_exec_probe_leaves_nothing_behind() {
    let Some(site) = site("deps-probes") else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = pm_tests::free_port();
    let nap = format!("603.{}", std::process::id());
    let startup = json!({"initialDelayMs": 0, "checkIntervalMs": 100, "maxAttempts": 3, "failAction": "fail"});
    let probe = |fields: Value| {
        let mut check = json!({"intervalMs": 60000, "timeoutMs": 400, "startupCheck": startup});
        check.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        check
    };
    let cases = [
        ("tcp-open", probe(json!({"type": "tcp", "host": "127.0.0.1", "port": open})), ProcessState::Running),
        ("tcp-closed", probe(json!({"type": "tcp", "port": closed})), ProcessState::Failed),
        (
            "exec-pass",
            probe(
                json!({"type": "exec", "command": "/bin/sh", "args": ["-c", "test \"$PROBE\" = yes && test -f here"]}),
            ),
            ProcessState::Running,
        ),
        ("exec-fail", probe(json!({"type": "exec", "command": "false"})), ProcessState::Failed),
        (
            "exec-hang",
            probe(json!({"type": "exec", "command": "/bin/sh", "args": ["-c", format!("sleep {nap} & wait")]})),
            ProcessState::Failed,
        ),
    ];
    let cwd = site.dir.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("here"), "").unwrap();
    start_daemon(&site);
    for (id, check, _) in &cases {
        let mut config = shell(&site, id, "sleep 600 & wait");
        config["autostart"] = json!(true);
        config["alivenessCheck"] = check.clone();
        config["workingDirectory"] = json!(cwd.to_str().unwrap());
        config["environment"] = json!({"PROBE": "yes"});
        let (code, body) = call(&site, "POST", "/processes", Some(&config));
        assert_eq!(code, 200, "{id}: {body}");
    }
    let most_hung = std::cell::Cell::new(0);
    for (id, _, want) in &cases {
        wait_until(LONG, &format!("{id} {want}"), || {
            most_hung.set(most_hung.get().max(count_with(&nap)));
            state(&site, id) == Some(*want)
        });
    }
    let most_hung = most_hung.get();
    let failed = status(&site, "tcp-closed").unwrap().last_error.unwrap();
    assert!(failed.contains(&format!("tcp 127.0.0.1:{closed}")), "{failed}");
    let failed = status(&site, "exec-hang").unwrap().last_error.unwrap();
    assert!(failed.contains("startup check failed 3 times (exec /bin/sh)"), "{failed}");
    wait_until(Duration::from_secs(5), "no hung probe left", || count_with(&nap) == 0);
    assert!(most_hung <= 1, "probes overlapped: {most_hung}");
    drop(listener);
}

#[test]
fn an_exec_probe_from_an_untrusted_peer_obeys_the_whitelist_and_blacklist() {
    let Some(site) = site("deps-untrusted") else { return };
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    let falsy = std::fs::canonicalize("/bin/false").unwrap();
    let truthy = std::fs::canonicalize("/bin/true").unwrap();
    site.edit(|registry| {
        registry.remote_access.allow_remote_register = true;
        registry.remote_access.executable_whitelist = vec![format!("{}/*", sleep.parent().unwrap().display())];
        registry.remote_access.executable_blacklist = vec![falsy.display().to_string()];
    });
    start_daemon(&site);
    let untrusted = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let register = |id: &str, probe: &str| {
        let body = json!({"id": id, "name": id, "command": "/bin/sleep", "args": ["600"], "autostart": false,
            "alivenessCheck": {"type": "exec", "command": probe}});
        wire::request_json(wire::local(site.remote_port), untrusted, "POST", "/processes", &body).unwrap()
    };
    let refused = register("bad", "/bin/false");
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("Probe executable not permitted"), "{}", refused.text());
    let refused = register("outside", "/no/such/tool");
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(!site.registry().unwrap().processes.contains_key("bad"));
    let allowed = register("good", "true");
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let stored = site.registry().unwrap().processes["good"].config.aliveness_check.clone().unwrap();
    assert_eq!(stored.command.as_deref(), Some(truthy.to_str().unwrap()), "stored as the canonical path");
}

/// Disabling a dependency through the API stops the processes that depend on it first.
#[test]
fn disabling_a_dependency_through_the_api_stops_its_dependents_first() {
    let Some(site) = site("deps-disable") else { return };
    start_daemon(&site);
    let db = shell(&site, "db", "sleep 600 & wait");
    let mut api = shell(&site, "api", "sleep 600 & wait");
    api["dependsOn"] = json!({"db": "started"});
    for config in [&db, &api] {
        assert_eq!(call(&site, "POST", "/processes", Some(config)).0, 200);
    }
    assert_eq!(call(&site, "POST", "/processes/api/start", None).0, 200);
    wait_until(LONG, "api runs", || state(&site, "api") == Some(ProcessState::Running));
    let (code, body) = call(&site, "POST", "/processes/db/disable", None);
    assert_eq!(code, 200, "{body}");
    let statuses = site.statuses().unwrap();
    assert_eq!(statuses["db"].state, ProcessState::Disabled);
    assert_eq!(statuses["api"].state, ProcessState::Stopped);
    assert!(statuses["api"].enabled);
    assert!(statuses["api"].last_stopped_at <= statuses["db"].last_stopped_at);
    for id in ["db", "api"] {
        assert!(site.copies(id).is_empty(), "{id} still runs");
    }
}

/// A restart after a crash waits for a `healthy` dependency that went down meanwhile (in `starting`, with
/// `waitingFor`), and goes ahead once it is healthy again.
#[test]
fn a_crash_restart_waits_for_a_dependency_that_went_down() {
    let Some(site) = site("deps-crash-wait") else { return };
    start_daemon(&site);
    let up = site.dir.join("db.up");
    std::fs::write(&up, "").unwrap();
    let mut db = shell(&site, "db", &format!("{}; sleep 600 & wait", stamp(&site, "db")));
    db["alivenessCheck"] = json!({
        "type": "exec", "command": "/bin/sh", "args": ["-c", format!("test -f '{}'", up.display())],
        "intervalMs": 60000, "timeoutMs": 2000,
        "startupCheck": {"initialDelayMs": 0, "checkIntervalMs": 50, "maxAttempts": 100000}
    });
    db["restartPolicy"] = json!({"backoffIntervalsMs": [300]});
    let mut api = shell(&site, "api", &format!("{}; sleep 600 & wait", stamp(&site, "api")));
    api["dependsOn"] = json!({"db": "healthy"});
    api["restartPolicy"] = json!({"backoffIntervalsMs": [100]});
    for config in [&db, &api] {
        assert_eq!(call(&site, "POST", "/processes", Some(config)).0, 200);
    }
    assert_eq!(call(&site, "POST", "/processes/api/start", None).0, 200);
    wait_until(LONG, "api runs", || state(&site, "api") == Some(ProcessState::Running));
    wait_until(LONG, "api's shell ran", || stamps(&site, "api").len() == 1);
    // db goes down and does not get healthy again; then api crashes.
    std::fs::remove_file(&up).unwrap();
    pm_tests::kill9(status(&site, "db").unwrap().pid.unwrap());
    wait_until(LONG, "db restarted", || stamps(&site, "db").len() == 2);
    pm_tests::kill9(status(&site, "api").unwrap().pid.unwrap());
    wait_until(LONG, "api waits for db", || status(&site, "api").is_some_and(|api| api.waiting_for.is_some()));
    let waiting = status(&site, "api").unwrap();
    assert_eq!(waiting.state, ProcessState::Starting);
    assert_eq!(waiting.pid, None);
    assert_eq!(waiting.waiting_for, Some(BTreeMap::from([("db".to_owned(), DependencyCondition::Healthy)])));
    assert_eq!(stamps(&site, "api").len(), 1, "api was spawned while db was not healthy");
    // db healthy again: api is spawned.
    std::fs::write(&up, "").unwrap();
    wait_until(LONG, "api runs again", || state(&site, "api") == Some(ProcessState::Running));
    wait_until(LONG, "api's shell ran again", || stamps(&site, "api").len() == 2);
    assert_eq!(status(&site, "api").unwrap().waiting_for, None);
    assert_eq!(site.copies("api").len(), 1);
}

/// Fast jobs started for a dependent through the API count as completed for it, even when they finished before
/// its own wait began.
#[test]
fn fast_jobs_started_for_a_dependent_through_the_api_count_as_completed() {
    let Some(site) = site("deps-fast-jobs") else { return };
    start_daemon(&site);
    let mut needs = serde_json::Map::new();
    for n in 1..=4 {
        let id = format!("job{n}");
        let job = json!({"id": id, "name": id, "command": "/bin/true", "autostart": false,
                         "restartPolicy": {"restartOn": "never"}});
        assert_eq!(call(&site, "POST", "/processes", Some(&job)).0, 200);
        needs.insert(id, json!("completedSuccessfully"));
    }
    let mut api = shell(&site, "api", "sleep 600 & wait");
    api["dependsOn"] = Value::Object(needs);
    api["dependencyTimeoutMs"] = json!(5000);
    assert_eq!(call(&site, "POST", "/processes", Some(&api)).0, 200);
    assert_eq!(call(&site, "POST", "/processes/api/start", None).0, 200);
    wait_until(LONG, "api runs or fails", || {
        matches!(state(&site, "api"), Some(ProcessState::Running | ProcessState::Failed))
    });
    let api = status(&site, "api").unwrap();
    assert_eq!(api.state, ProcessState::Running, "{:?}", api.last_error);
}
