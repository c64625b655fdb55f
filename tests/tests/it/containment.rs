//! Containment against the real daemon on this machine's cgroup v2 tree (issue 13): services that escape their
//! process group (a double-forked daemon, a child that calls `setsid`) leave nothing behind after a stop, a crash
//! of their leader, a hung check and a deregistration; nor after a kill -9 of the monitor and a restart; the
//! process-group fallback (cgroup creation denied through the test-only `PROCESS_MONITOR_CGROUP_ROOT`) still
//! kills an escaped child at stop through the child subreaper and the owner key.
//!
//! Every site runs under a `pm-test-reaper` (a subreaper), so an escaped process stays below a process of the
//! test; every scenario removes the cgroups its monitors made when its site is dropped, pass or fail.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pm_core::{AlivenessCheck, ProcessConfig, RestartPolicy};
use pm_tests::procs::{self, ProcInfo};
use pm_tests::site::{Site, INSTANCE};

fn site(label: &str) -> Option<Site> {
    Site::new(label, Path::new(env!("CARGO_BIN_EXE_pm-test-reaper")))
}

/// The site's cgroup folder, when this machine gives the tests a writable cgroup v2 tree (else the scenario
/// says so and skips).
fn cgroup_base(site: &Site) -> Option<PathBuf> {
    let base = pm_supervisor::cgroup::base_for(&site.dir, INSTANCE)?;
    let parent = base.parent()?;
    let writable = parent.join("cgroup.procs").exists()
        // SAFETY: geteuid has no preconditions.
        && unsafe { libc::geteuid() } == 0;
    if !writable {
        eprintln!("skipped: no writable cgroup v2 tree for the tests ({})", parent.display());
        return None;
    }
    Some(base)
}

fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

#[derive(Clone, Copy, Debug)]
enum Escape {
    /// The leader starts a daemon through a subshell that exits at once (`( setsid daemon & )`).
    DoubleFork,
    /// The leader's child calls `setsid` and stays its child.
    Setsid,
}

/// The marker of the escaping process of `id` (its argv holds it).
fn daemon_marker(site: &Site, id: &str) -> String {
    format!("{}-daemon", site.marker(id))
}

/// A service whose leader waits on a `sleep` after starting a process that leaves its process group and
/// ignores SIGTERM (only a SIGKILL ends it); restarted after 100 ms.
fn escaping(site: &Site, id: &str, escape: Escape) -> ProcessConfig {
    let daemon = format!("setsid sh -c 'trap \"\" TERM; sleep 600 & wait' {}", daemon_marker(site, id));
    let script = match escape {
        Escape::DoubleFork => format!("( {daemon} & ); sleep 600 & wait"),
        Escape::Setsid => format!("{daemon} & sleep 600 & wait"),
    };
    let mut config = ProcessConfig::new(id, id, "/bin/sh");
    config.args = vec!["-c".to_owned(), script, site.marker(id)];
    config.restart_policy = Some(RestartPolicy {
        max_attempts: 1000,
        backoff_intervals_ms: vec![100],
        reset_after_ms: 60_000,
        retry_indefinitely: true,
        indefinite_interval_ms: 100,
        ..Default::default()
    });
    config.stop_timeout_ms = Some(1000);
    config
}

/// `GET path` on the API, with a few tries (one answer can take its time on two loaded cores).
fn get(site: &Site, path: &str) -> (u16, String) {
    for _ in 0..5 {
        if let Some(res) = site.api("GET", path, None) {
            return res;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("GET {path}: no answer");
}

fn register(site: &Site, config: &ProcessConfig) {
    let body = serde_json::to_string(config).unwrap();
    let (status, body) = site.api("POST", "/processes", Some(&body)).expect("the API answers");
    assert!(status == 200 || status == 201, "register {}: {status} {body}", config.id);
}

fn act(site: &Site, id: &str, action: &str) {
    // A stop answers once the process is gone: up to its stop timeout and more on two loaded cores.
    let path = format!("/processes/{id}/{action}");
    let answer =
        pm_tests::http_with(site.remote_port, "POST", &path, None, Duration::from_secs(5), Duration::from_secs(30));
    let (status, body) = answer.expect("the API answers");
    assert_eq!(status, 200, "{action} {id}: {body}");
}

/// The live escaped daemons of `id`.
fn daemons(site: &Site, id: &str) -> Vec<u32> {
    let marker = daemon_marker(site, id);
    procs::scan().into_iter().filter(|info| !info.is_zombie() && info.has_arg(&marker)).map(|info| info.pid).collect()
}

/// Everything below the site's reapers except the daemon `monitor` itself (zombies included).
fn left(site: &Site, monitor: u32) -> Vec<ProcInfo> {
    site.descendants().into_iter().filter(|info| info.pid != monitor).collect()
}

fn assert_nothing_left(site: &Site, monitor: u32, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = left(site, monitor);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "after {after}, left behind: {left:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The PIDs of the current run of `id` (its leader and everything in its cgroup), waiting until its daemon runs.
fn run_of(site: &Site, base: Option<&Path>, id: &str) -> Vec<u32> {
    wait_until(Duration::from_secs(20), &format!("{id} runs with its escaped daemon"), || daemons(site, id).len() == 1);
    let mut pids = daemons(site, id);
    if let Some(base) = base {
        let procs = std::fs::read_to_string(base.join(id).join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.lines().filter_map(|line| line.parse::<u32>().ok()));
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn all_gone(pids: &[u32]) -> bool {
    pids.iter().all(|pid| procs::read(*pid).is_none_or(|info| info.is_zombie()))
}

fn status(site: &Site, id: &str) -> pm_core::ProcessStatus {
    site.statuses().expect("the API answers").remove(id).unwrap_or_else(|| panic!("{id} is not listed"))
}

/// Stop, crash of the leader, hung check and deregistration of a service that escapes its group.
fn every_way_out(escape: Escape, label: &str) {
    let Some(site) = site(label) else { return };
    let Some(base) = cgroup_base(&site) else { return };
    let monitor = site.start_daemon();
    let (code, body) = get(&site, "/monitor/status");
    assert_eq!(code, 200);
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["containment"], "cgroup", "{body}");
    let (_, metrics) = get(&site, "/metrics");
    assert!(metrics.contains("pm_monitor_containment{") && metrics.contains("mode=\"cgroup\""), "{metrics}");

    register(&site, &escaping(&site, "svc", escape));
    let run = run_of(&site, Some(&base), "svc");
    // Placed before it executed: the leader and the escaped daemon are both in the process's cgroup.
    let members = std::fs::read_to_string(base.join("svc").join("cgroup.procs")).unwrap();
    let leader = status(&site, "svc").pid.expect("a pid");
    for pid in [leader, daemons(&site, "svc")[0]] {
        assert!(members.lines().any(|line| line == pid.to_string()), "{pid} not in the cgroup: {members}");
    }

    // Figures from the cgroup (no memory controller here: its members' resident memory).
    wait_until(Duration::from_secs(10), "memory figures from the cgroup", || {
        status(&site, "svc").memory_bytes.is_some_and(|bytes| bytes > 0)
    });

    // 1. stop
    act(&site, "svc", "stop");
    assert_nothing_left(&site, monitor, "stop");
    assert!(all_gone(&run));
    wait_until(Duration::from_secs(10), "the stopped process's cgroup is removed", || !base.join("svc").exists());

    // 2. crash of the leader: the leftovers go with it, the restart is a fresh run.
    act(&site, "svc", "start");
    let run = run_of(&site, Some(&base), "svc");
    let leader = status(&site, "svc").pid.expect("a pid");
    procs::signal(leader as i32, libc::SIGKILL);
    wait_until(Duration::from_secs(15), "the crashed run's daemon is killed", || all_gone(&run));
    let second = run_of(&site, Some(&base), "svc");
    assert!(second.iter().all(|pid| !run.contains(pid)), "the restart reuses {run:?}: {second:?}");

    // 3. a hung check (nothing answers its URL): killed with everything it started.
    let mut hung = escaping(&site, "hung", escape);
    let mut check = AlivenessCheck::new(&format!("http://127.0.0.1:{}/health", pm_tests::free_port()));
    check.interval_ms = 300;
    check.timeout_ms = 200;
    check.consecutive_failures_required = 2;
    hung.aliveness_check = Some(Box::new(check));
    register(&site, &hung);
    let hung_run = run_of(&site, Some(&base), "hung");
    wait_until(Duration::from_secs(20), "the hung run is killed with its daemon", || all_gone(&hung_run));
    let mut error = String::new();
    wait_until(Duration::from_secs(10), "the failed check is the recorded reason", || {
        error = status(&site, "hung").last_error.unwrap_or_default();
        error.contains("aliveness check failed")
    });

    // A start that fails (no such executable) leaves no cgroup behind either.
    let mut missing = ProcessConfig::new("missing", "missing", "/nonexistent/pm-no-such-program");
    missing.restart_policy = escaping(&site, "x", escape).restart_policy;
    register(&site, &missing);
    wait_until(Duration::from_secs(10), "the failed start is recorded", || {
        status(&site, "missing").last_error.is_some_and(|error| error.contains("not found"))
    });

    // 4. deregistration, of all three.
    for id in ["hung", "svc", "missing"] {
        let (code, body) = site.api("DELETE", &format!("/processes/{id}"), None).unwrap();
        assert_eq!(code, 200, "{body}");
    }
    assert_nothing_left(&site, monitor, "deregister");
    wait_until(Duration::from_secs(10), "the cgroups of deregistered processes are removed", || {
        ["svc", "hung", "missing"].iter().all(|id| !base.join(id).exists())
    });
    site.stop_daemon(monitor);
    wait_until(Duration::from_secs(10), "a clean stop removes the monitor's cgroup folder", || !base.exists());
}

#[test]
fn a_double_forked_daemon_is_left_behind_by_no_way_out() {
    every_way_out(Escape::DoubleFork, "cg-double");
}

#[test]
fn a_setsid_child_is_left_behind_by_no_way_out() {
    every_way_out(Escape::Setsid, "cg-setsid");
}

#[test]
fn after_a_kill_9_of_the_monitor_the_next_one_adopts_by_cgroup_and_stop_leaves_nothing() {
    let Some(site) = site("cg-adopt") else { return };
    let Some(base) = cgroup_base(&site) else { return };
    let first = site.start_daemon();
    register(&site, &escaping(&site, "svc", Escape::DoubleFork));
    register(&site, &escaping(&site, "stray", Escape::Setsid));
    let run = run_of(&site, Some(&base), "svc");
    let stray = run_of(&site, Some(&base), "stray");
    site.kill_daemon(first);
    // While no monitor runs, `stray` is deregistered: its cgroup is a stray the next monitor empties.
    site.edit(|registry| {
        registry.processes.remove("stray");
    });
    let second = site.start_daemon();
    wait_until(Duration::from_secs(15), "the stray cgroup is emptied and removed", || {
        all_gone(&stray) && !base.join("stray").exists()
    });
    // Adopted, not started again: the same run, one copy.
    let entry = status(&site, "svc");
    assert_eq!(entry.state, pm_core::ProcessState::Running);
    assert!(run.contains(&entry.pid.unwrap()), "pid {:?} is not of the first run {run:?}", entry.pid);
    assert_eq!(site.copies("svc").len(), 1);
    assert_eq!(daemons(&site, "svc").len(), 1);
    act(&site, "svc", "stop");
    assert_nothing_left(&site, second, "stop after a restart of the monitor");
    assert!(all_gone(&run));
}

#[test]
fn memory_restart_bytes_restarts_a_process_that_grows_past_it() {
    let Some(site) = site("cg-memory") else { return };
    let monitor = site.start_daemon();
    let starts = site.dir.join("starts").join("hog");
    let mut config = ProcessConfig::new("hog", "hog", "/bin/sh");
    // About 40 MB held in a shell variable, against a threshold of 16 MB.
    config.args = vec![
        "-c".to_owned(),
        format!("echo $$ >> '{}'; x=$(head -c 40000000 /dev/zero | tr '\\0' a); sleep 600 & wait", starts.display()),
        site.marker("hog"),
    ];
    config.memory_restart_bytes = Some(16 * 1024 * 1024);
    config.stop_timeout_ms = Some(1000);
    register(&site, &config);
    wait_until(Duration::from_secs(30), "the hog is restarted for its memory", || site.starts("hog").len() >= 2);
    let error = status(&site, "hog").last_error.unwrap_or_default();
    assert!(error.contains("memoryRestartBytes"), "{error}");
    act(&site, "hog", "stop");
    assert_nothing_left(&site, monitor, "stop of the hog");
}

#[test]
fn a_leader_that_forks_a_daemon_and_exits_stays_running_with_track_daemonized_children() {
    let Some(site) = site("cg-track") else { return };
    let Some(base) = cgroup_base(&site) else { return };
    let monitor = site.start_daemon();
    let mut config = ProcessConfig::new("forker", "forker", "/bin/sh");
    let daemon = format!("setsid sh -c 'sleep 600 & wait' {}", daemon_marker(&site, "forker"));
    config.args = vec!["-c".to_owned(), format!("( {daemon} & ); exit 0"), site.marker("forker")];
    config.track_daemonized_children = true;
    config.stop_timeout_ms = Some(1000);
    register(&site, &config);
    let run = run_of(&site, Some(&base), "forker");
    wait_until(Duration::from_secs(10), "the leader has exited", || site.copies("forker").is_empty());
    // Well past the exit, it still runs, as its daemon.
    std::thread::sleep(Duration::from_millis(500));
    let entry = status(&site, "forker");
    assert_eq!(entry.state, pm_core::ProcessState::Running, "{entry:?}");
    assert_eq!(daemons(&site, "forker").len(), 1);
    act(&site, "forker", "stop");
    assert_nothing_left(&site, monitor, "stop of a tracked daemon");
    assert!(all_gone(&run));
}

#[test]
fn without_cgroup_access_the_subreaper_and_owner_key_still_kill_an_escaped_child_at_stop() {
    let Some(site) = site("cg-fallback") else { return };
    let not_a_cgroup = site.dir.join("not-a-cgroup");
    std::fs::create_dir_all(&not_a_cgroup).unwrap();
    site.set_daemon_env(pm_supervisor::cgroup::ROOT_VAR, &not_a_cgroup.to_string_lossy());
    let monitor = site.start_daemon();
    let (_, body) = get(&site, "/monitor/status");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["containment"], "process-group", "{body}");
    let reason = value["containmentReason"].as_str().unwrap_or_default();
    assert!(reason.contains("not a cgroup v2 file system") && reason.contains("subreaper"), "{reason}");
    let (_, metrics) = get(&site, "/metrics");
    assert!(metrics.contains("mode=\"process-group\""), "{metrics}");
    let output = std::process::Command::new(&site.bin)
        .arg("--directory")
        .arg(&site.dir)
        .args(["--instance-id", INSTANCE, "--status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("containment: process-group"), "{text}");

    // Limits need their controller: refused at register time, naming it (API and local CLI alike).
    let mut limited = escaping(&site, "limited", Escape::Setsid);
    limited.memory_max_bytes = Some(64 << 20);
    let (code, body) = site.api("POST", "/processes", Some(&serde_json::to_string(&limited).unwrap())).unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("memoryMaxBytes") && body.contains("memory controller"), "{body}");
    let output = std::process::Command::new(&site.bin)
        .arg("--directory")
        .arg(&site.dir)
        .args(["--instance-id", INSTANCE, "register", "--id", "limited", "--command", "/bin/true", "--pids-max", "5"])
        .env(pm_supervisor::cgroup::ROOT_VAR, &not_a_cgroup)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && text.contains("pids controller"), "{text}");

    register(&site, &escaping(&site, "setsid", Escape::Setsid));
    register(&site, &escaping(&site, "double", Escape::DoubleFork));
    let run = [run_of(&site, None, "setsid"), run_of(&site, None, "double")].concat();
    // The double-forked daemon was re-parented to the monitor, its child subreaper.
    let daemon = procs::read(daemons(&site, "double")[0]).unwrap();
    assert_eq!(daemon.ppid, monitor, "{daemon:?}");
    act(&site, "setsid", "stop");
    act(&site, "double", "stop");
    // Nothing left, not even a zombie: the monitor reaped what was re-parented to it.
    assert_nothing_left(&site, monitor, "stop in the process-group fallback");
    assert!(all_gone(&run));
}

/// At a monitor's shutdown the cgroups of the stopped processes are removed in one batch once every child is gone
/// (issue 19: a cgroup's removal takes the kernel's cgroup lock, which the children's exits need as well): a
/// process that stopped at once keeps its (empty) cgroup while another one's escaped daemon, which ignores
/// SIGTERM, waits out its stop timeout; at the end every cgroup is gone, nothing is left and every entry is
/// stored `stopped`.
#[test]
fn at_a_shutdown_the_cgroups_go_once_every_child_is_gone() {
    let Some(site) = site("cg-shutdown") else { return };
    let Some(base) = cgroup_base(&site) else { return };
    let monitor = site.start_daemon();
    let mut slow = escaping(&site, "slow", Escape::Setsid);
    slow.stop_timeout_ms = Some(3000);
    register(&site, &slow);
    register(&site, &site.sleeper("quick"));
    let slow_run = run_of(&site, Some(&base), "slow");
    let mut quick = None;
    wait_until(Duration::from_secs(20), "quick runs", || {
        quick = status(&site, "quick").pid;
        quick.is_some()
    });
    let quick = quick.unwrap();
    assert!(base.join("quick").join("cgroup.procs").exists(), "quick runs in a cgroup of its own");

    procs::signal(monitor as i32, libc::SIGTERM);
    wait_until(Duration::from_secs(20), "quick's leader is gone", || all_gone(&[quick]));
    let mut polls = 0;
    while !all_gone(&slow_run) {
        assert!(
            base.join("quick").exists(),
            "quick's cgroup was removed while slow's daemon still ran (after {polls} polls)"
        );
        polls += 1;
        assert!(polls < 1500, "slow's daemon outlived its stop timeout by far");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(polls > 0, "slow's daemon, which ignores SIGTERM, was gone as soon as quick");
    site.wait_gone(monitor, Duration::from_secs(60));
    assert_nothing_left(&site, monitor, "the shutdown");
    assert!(!base.join("quick").exists() && !base.join("slow").exists(), "a process's cgroup outlived the monitor");
    assert!(!base.exists(), "the monitor's cgroup folder outlived it");
    let registry = site.registry().expect("the registry reads");
    for id in ["quick", "slow"] {
        assert_eq!(registry.processes[id].state, pm_core::ProcessState::Stopped, "{id}");
    }
}
