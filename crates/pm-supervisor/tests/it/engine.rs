//! The state machine against real processes: crashes, backoff, checks, stops, adoption.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pm_core::{AlivenessCheck, FailAction, ProcessEntry, ProcessState, RestartPolicy, StartupCheck, Timestamp};
use pm_http::{AlivenessCallback, AlivenessServerHelper};
use pm_supervisor::StartKind;

use crate::support::{alive, eventually, read_numbers, sh, ChildGuard, Fixture};

const LONG: Duration = Duration::from_secs(20);

fn policy(max_attempts: u32, backoff: &[u64]) -> RestartPolicy {
    RestartPolicy {
        max_attempts,
        backoff_intervals_ms: backoff.to_vec(),
        reset_after_ms: 300_000,
        retry_indefinitely: false,
        indefinite_interval_ms: 21_600_000,
        restart_on: Default::default(),
        extra: serde_json::Map::new(),
    }
}

/// A health endpoint on loopback whose answer the test flips.
async fn health_server(healthy: Arc<AtomicBool>) -> (AlivenessServerHelper, String) {
    let callback = AlivenessCallback::default().with_health_check(move || {
        let healthy = healthy.clone();
        async move { healthy.load(Ordering::SeqCst) }
    });
    let mut helper = AlivenessServerHelper::with_address("127.0.0.1:0".parse().unwrap(), callback);
    let addr = helper.start().await.unwrap();
    (helper, format!("http://{addr}/health"))
}

fn check(url: &str, interval_ms: u64, failures: u32) -> AlivenessCheck {
    let mut check = AlivenessCheck::new(url);
    check.interval_ms = interval_ms;
    check.timeout_ms = 500;
    check.consecutive_failures_required = failures;
    check
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_backoff_ends_failed_with_the_right_starts_and_gaps() {
    let fx = Fixture::new();
    let starts = fx.file("starts");
    let mut config = sh("crasher", &format!("date +%s%N >> {}; exit 3", starts.display()));
    config.restart_policy = Some(policy(3, &[100, 200]));
    fx.sup.register(config).unwrap();
    let entry = fx.wait("crasher", LONG, |e| e.state == ProcessState::Failed).await;
    assert_eq!(entry.last_exit_code, Some(3));
    assert_eq!(entry.restart_attempts, 3);
    let times = read_numbers(&starts);
    assert_eq!(times.len(), 4, "one start plus three restarts: {times:?}");
    let gaps: Vec<u128> = times.windows(2).map(|w| (w[1] - w[0]) / 1_000_000).collect();
    for (gap, want) in gaps.iter().zip([100u128, 200, 200]) {
        assert!(*gap >= want - 5, "gap {gap} ms shorter than the backoff {want} ms: {gaps:?}");
        assert!(*gap < want + 2000, "gap {gap} ms far longer than the backoff {want} ms: {gaps:?}");
    }
    // Stays failed: no further start.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(read_numbers(&starts).len(), 4);
    assert_eq!(fx.sup.get("crasher").unwrap().state, ProcessState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_indefinitely_keeps_retrying_after_max_attempts() {
    let fx = Fixture::new();
    let starts = fx.file("starts");
    let mut config = sh("forever", &format!("echo x >> {}; exit 1", starts.display()));
    let mut restart = policy(1, &[20]);
    restart.retry_indefinitely = true;
    restart.indefinite_interval_ms = 50;
    config.restart_policy = Some(restart);
    fx.sup.register(config).unwrap();
    eventually(LONG, "five starts", || std::fs::read_to_string(&starts).unwrap_or_default().lines().count() >= 5).await;
    let entry = fx.sup.get("forever").unwrap();
    assert_ne!(entry.state, ProcessState::Failed);
    assert!(entry.restart_attempts >= 4, "{entry:?}");
    fx.wait("forever", LONG, |e| e.state == ProcessState::Retrying).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_after_stable_running_resets_the_counter() {
    let fx = Fixture::new();
    let starts = fx.file("starts");
    // Runs 400 ms, then crashes; with resetAfterMs 100 the counter is back to 0 before each crash, so one
    // allowed attempt is never used up.
    let mut config = sh("flaky", &format!("echo x >> {}; sleep 0.4; exit 1", starts.display()));
    let mut restart = policy(1, &[10]);
    restart.reset_after_ms = 100;
    config.restart_policy = Some(restart);
    fx.sup.register(config).unwrap();
    eventually(LONG, "four starts", || std::fs::read_to_string(&starts).unwrap_or_default().lines().count() >= 4).await;
    let entry = fx.sup.get("flaky").unwrap();
    assert_ne!(entry.state, ProcessState::Failed, "{entry:?}");
    assert!(entry.restart_attempts <= 1, "{entry:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reset_the_same_crashes_fail() {
    let fx = Fixture::new();
    let mut config = sh("flaky", "sleep 0.2; exit 1");
    config.restart_policy = Some(policy(1, &[10]));
    fx.sup.register(config).unwrap();
    let entry = fx.wait("flaky", LONG, |e| e.state == ProcessState::Failed).await;
    assert_eq!(entry.restart_attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_process_is_killed_and_restarted() {
    let fx = Fixture::new();
    let healthy = Arc::new(AtomicBool::new(true));
    let (mut server, url) = health_server(healthy.clone()).await;
    let mut config = sh("hung", "sleep 300");
    config.aliveness_check = Some(Box::new(check(&url, 100, 2)));
    config.restart_policy = Some(policy(5, &[50]));
    config.stop_timeout_ms = Some(500);
    fx.sup.register(config).unwrap();
    let first = fx.wait("hung", LONG, |e| e.state == ProcessState::Running).await;
    let old_pid = first.pid.unwrap();
    // Healthy checks keep it running.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fx.sup.get("hung").unwrap().pid, Some(old_pid));
    healthy.store(false, Ordering::SeqCst);
    let entry = fx.wait("hung", LONG, |e| e.pid.is_some_and(|pid| pid != old_pid)).await;
    assert!(entry.last_error.as_deref().unwrap_or("").contains("aliveness check failed"), "{entry:?}");
    eventually(LONG, "old pid gone", || !alive(old_pid)).await;
    healthy.store(true, Ordering::SeqCst);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_check_fail_actions() {
    for (action, want) in [
        (FailAction::Restart, ProcessState::Retrying),
        (FailAction::Disable, ProcessState::Disabled),
        (FailAction::Fail, ProcessState::Failed),
    ] {
        let fx = Fixture::new();
        // Nothing listens on this port: every startup check fails.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config = sh("slow", "sleep 300");
        let mut aliveness = check(&format!("http://127.0.0.1:{port}/health"), 1000, 2);
        aliveness.startup_check = Some(StartupCheck {
            enabled: true,
            initial_delay_ms: 10,
            check_interval_ms: 30,
            max_attempts: 3,
            fail_action: action,
            extra: serde_json::Map::new(),
        });
        config.aliveness_check = Some(Box::new(aliveness));
        config.restart_policy = Some(policy(5, &[60_000]));
        config.stop_timeout_ms = Some(500);
        fx.sup.register(config).unwrap();
        let starting = fx.wait("slow", LONG, |e| e.state == ProcessState::Starting).await;
        let pid = starting.pid.unwrap();
        let entry = fx.wait("slow", LONG, |e| e.state == want).await;
        assert!(entry.last_error.as_deref().unwrap_or("").contains("startup check failed"), "{action:?}: {entry:?}");
        assert_eq!(entry.config.enabled, action != FailAction::Disable);
        eventually(LONG, "startup-failed process killed", || !alive(pid)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_check_pass_leads_to_running() {
    let fx = Fixture::new();
    let (mut server, url) = health_server(Arc::new(AtomicBool::new(true))).await;
    let mut config = sh("web", "sleep 300");
    let mut aliveness = check(&url, 1000, 2);
    aliveness.startup_check =
        Some(StartupCheck { initial_delay_ms: 10, check_interval_ms: 20, ..StartupCheck::default() });
    config.aliveness_check = Some(Box::new(aliveness));
    fx.sup.register(config).unwrap();
    fx.wait("web", LONG, |e| e.state == ProcessState::Running).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_leaves_neither_child_nor_grandchild() {
    let fx = Fixture::new();
    let gc = fx.file("grandchild");
    let mut config = sh("parent", &format!("sleep 300 & echo $! > {}; wait", gc.display()));
    config.stop_timeout_ms = Some(2000);
    fx.sup.register(config).unwrap();
    let entry = fx.wait("parent", LONG, |e| e.state == ProcessState::Running).await;
    let pid = entry.pid.unwrap();
    eventually(LONG, "grandchild pid written", || read_numbers(&gc).len() == 1).await;
    let grandchild = read_numbers(&gc)[0] as u32;
    assert!(alive(grandchild));
    assert_eq!(fx.sup.stop("parent").await.unwrap(), ProcessState::Stopped);
    eventually(LONG, "child and grandchild gone", || !alive(pid) && !alive(grandchild)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_escalates_to_sigkill_for_a_process_ignoring_sigterm() {
    let fx = Fixture::new();
    let mut config = sh("stubborn", "trap '' TERM; sleep 300 & wait; sleep 300");
    config.stop_timeout_ms = Some(300);
    fx.sup.register(config).unwrap();
    let pid = fx.wait("stubborn", LONG, |e| e.state == ProcessState::Running).await.pid.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let entry_state = fx.sup.stop("stubborn").await.unwrap();
    assert_eq!(entry_state, ProcessState::Stopped);
    assert!(started.elapsed() < Duration::from_secs(10), "stop took {:?}", started.elapsed());
    let entry = fx.sup.get("stubborn").unwrap();
    assert_eq!(entry.last_signal, Some(libc::SIGKILL), "{entry:?}");
    eventually(LONG, "group gone", || !pm_registry::proc::signal_group(pid, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_arrives_verbatim_without_a_shell() {
    let fx = Fixture::new();
    let out = fx.file("argv");
    let tricky = ["a b", "\"quoted\"", "'single'", "$HOME", "; rm -rf /", "*", "", "back\\slash"];
    let mut config = pm_core::ProcessConfig::new("argv", "argv", "/bin/sh");
    config.args =
        vec!["-c".to_owned(), format!("printf '%s\\n' \"$@\" > {}; sleep 300", out.display()), "sh".to_owned()];
    config.args.extend(tricky.iter().map(|arg| arg.to_string()));
    config.environment = Some([("PM_TEST_VAR".to_owned(), "x y".to_owned())].into());
    fx.sup.register(config).unwrap();
    fx.wait("argv", LONG, |e| e.state == ProcessState::Running).await;
    eventually(LONG, "argv written", || {
        std::fs::read_to_string(&out).unwrap_or_default().lines().count() == tricky.len()
    })
    .await;
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, tricky);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_and_working_directory_are_honoured() {
    let fx = Fixture::new();
    let work = fx.file("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut config = sh("env", "printf '%s|%s' \"$PM_TEST_VAR\" \"$PWD\" > out; sleep 300");
    config.environment = Some([("PM_TEST_VAR".to_owned(), "x y".to_owned())].into());
    config.working_directory = Some(work.to_string_lossy().into_owned());
    fx.sup.register(config).unwrap();
    let out = work.join("out");
    eventually(LONG, "out written", || out.exists() && !std::fs::read_to_string(&out).unwrap().is_empty()).await;
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text, format!("x y|{}", work.display()));
}

/// A process whose executable does not exist fails with an error that names it as not found.
async fn missing_executable_reads_as_not_found(fx: Fixture) {
    let mut config = pm_core::ProcessConfig::new("ghost", "ghost", "/nonexistent/bin/ghost");
    config.restart_policy = Some(policy(1, &[10]));
    fx.sup.register(config).unwrap();
    let entry = fx.wait("ghost", LONG, |e| e.state == ProcessState::Failed).await;
    let error = entry.last_error.unwrap_or_default();
    assert!(error.contains("not found") && error.contains("/nonexistent/bin/ghost"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_executable_gives_a_readable_error() {
    missing_executable_reads_as_not_found(Fixture::new()).await;
}

/// The same where the child is cloned into its cgroup: the child that cannot execute reports its errno in the
/// monitor's memory (no pipe), and it still reads as "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_executable_in_a_cgroup_gives_a_readable_error() {
    missing_executable_reads_as_not_found(Fixture::with_cgroups()).await;
}

/// A child cloned into its cgroup is recorded with the start time the kernel gives it (told by the clone, not read
/// from `/proc`), the one a later check of the PID compares against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_in_a_cgroup_has_the_kernels_start_time() {
    let fx = Fixture::with_cgroups();
    for idx in 0..5 {
        fx.sup.register(sh(&format!("t{idx}"), "sleep 300")).unwrap();
    }
    for idx in 0..5 {
        let entry = fx.wait(&format!("t{idx}"), LONG, |e| e.state == ProcessState::Running && e.pid.is_some()).await;
        fx.track();
        let pid = entry.pid.unwrap();
        assert_eq!(entry.pid_start_time, pm_registry::proc::start_time(pid), "t{idx}'s start time");
        assert!(entry.pid_start_time.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_failing_with_zero_backoff_forever_neither_spins_nor_fills_the_disk() {
    let fx = Fixture::new();
    let mut config = pm_core::ProcessConfig::new("ghost", "ghost", "/nonexistent/bin/ghost");
    let mut restart = policy(1, &[]);
    restart.retry_indefinitely = true;
    restart.indefinite_interval_ms = 0;
    config.restart_policy = Some(restart);
    fx.sup.register(config).unwrap();
    fx.wait("ghost", LONG, |e| e.restart_attempts >= 2).await;
    let before = fx.sup.get("ghost").unwrap().restart_attempts;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempts = fx.sup.get("ghost").unwrap().restart_attempts - before;
    // 100 ms apart at the least: about 10 in that second, not thousands.
    assert!((2..=12).contains(&attempts), "{attempts} attempts in 1 s");
    let runs = fx.sup.paths().run_dirs("ghost");
    assert!(runs.is_empty(), "failed spawns leave no run folders: {runs:?}");
    // The process's task still answers.
    let stopped = tokio::time::timeout(Duration::from_secs(2), fx.sup.stop("ghost")).await;
    assert_eq!(stopped.expect("stop answered in time").unwrap(), ProcessState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_go_to_a_new_run_folder_per_start() {
    let fx = Fixture::new();
    let mut config = sh("talker", "echo out-line; echo err-line >&2; exit 1");
    config.restart_policy = Some(policy(2, &[10]));
    fx.sup.register(config).unwrap();
    fx.wait("talker", LONG, |e| e.state == ProcessState::Failed).await;
    let dir = fx.sup.paths().process_logs_dir("talker");
    let mut runs: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    runs.sort();
    assert_eq!(runs.len(), 3, "{runs:?}");
    for run in runs {
        assert_eq!(std::fs::read_to_string(run.join("stdout.log")).unwrap(), "out-line\n");
        assert_eq!(std::fs::read_to_string(run.join("stderr.log")).unwrap(), "err-line\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_a_running_process_is_a_no_op() {
    let fx = Fixture::new();
    fx.sup.register(sh("once", "sleep 300")).unwrap();
    let pid = fx.wait("once", LONG, |e| e.state == ProcessState::Running).await.pid;
    assert_eq!(fx.sup.start("once").await.unwrap(), ProcessState::Running);
    assert_eq!(fx.sup.start("once").await.unwrap(), ProcessState::Running);
    assert_eq!(fx.sup.get("once").unwrap().pid, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_stops_and_blocks_start_enable_allows_it() {
    let fx = Fixture::new();
    fx.sup.register(sh("toggle", "sleep 300")).unwrap();
    let pid = fx.wait("toggle", LONG, |e| e.state == ProcessState::Running).await.pid.unwrap();
    fx.sup.set_enabled("toggle", false).await.unwrap();
    assert_eq!(fx.sup.get("toggle").unwrap().state, ProcessState::Disabled);
    eventually(LONG, "stopped", || !alive(pid)).await;
    assert!(matches!(fx.sup.start("toggle").await, Err(pm_core::Error::Disabled(_))));
    fx.sup.set_enabled("toggle", true).await.unwrap();
    assert_eq!(fx.sup.get("toggle").unwrap().state, ProcessState::Stopped);
    fx.sup.start("toggle").await.unwrap();
    fx.wait("toggle", LONG, |e| e.state == ProcessState::Running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_start_after_failed_resets_attempts() {
    let fx = Fixture::new();
    let mut config = sh("fails", "exit 1");
    config.restart_policy = Some(policy(1, &[10]));
    fx.sup.register(config).unwrap();
    fx.wait("fails", LONG, |e| e.state == ProcessState::Failed).await;
    fx.sup.start("fails").await.unwrap();
    // A fresh budget: one more restart, then failed again with attempts == 1.
    let entry = fx.wait("fails", LONG, |e| e.state == ProcessState::Failed && e.restart_attempts == 1).await;
    assert_eq!(entry.restart_attempts, 1);
}

/// Spawns a process the way the supervisor does (own group), outside any supervisor.
fn spawn_orphan(marker: &std::path::Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("echo started >> {}; exec sleep 300", marker.display()))
        .process_group(0)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_start_adopts_a_running_process_instead_of_starting_another() {
    let fx = Fixture::new();
    let marker = fx.file("marker");
    let mut orphan = spawn_orphan(&marker);
    let pid = orphan.id();
    let mut entry = ProcessEntry::new(
        sh("kept", &format!("echo started >> {}; exec sleep 300", marker.display())),
        Timestamp::now(),
    );
    entry.state = ProcessState::Running;
    entry.pid = Some(pid);
    entry.pid_start_time = pm_registry::proc::start_time(pid);
    fx.sup.resume(entry, StartKind::Boot).unwrap();
    let adopted = fx.wait("kept", LONG, |e| e.state == ProcessState::Running).await;
    assert_eq!(adopted.pid, Some(pid));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().count(), 1, "a second copy was started");
    // An adopted process that dies is noticed at once and restarted.
    // The process we spawned.
    pm_registry::proc::signal_process(pid, libc::SIGKILL).unwrap();
    let _ = orphan.wait();
    let restarted =
        fx.wait("kept", LONG, |e| e.pid.is_some_and(|p| p != pid) && e.state == ProcessState::Running).await;
    assert!(restarted.pid.is_some());
    eventually(LONG, "restarted copy wrote its marker", || {
        std::fs::read_to_string(&marker).unwrap().lines().count() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_entry_whose_process_still_runs_is_stopped_at_monitor_start() {
    let fx = Fixture::new();
    let mut orphan = ChildGuard(spawn_orphan(&fx.file("marker")));
    let pid = orphan.0.id();
    // Disabled while the previous monitor was stopping it, and that monitor was killed before it finished.
    let mut entry = ProcessEntry::new(sh("off", "exec sleep 300"), Timestamp::now());
    entry.config.enabled = false;
    entry.state = ProcessState::Stopping;
    entry.pid = Some(pid);
    entry.pid_start_time = pm_registry::proc::start_time(pid);
    fx.sup.resume(entry, StartKind::Resume).unwrap();
    let entry = fx.wait("off", LONG, |e| e.state == ProcessState::Disabled && e.pid.is_none()).await;
    assert_eq!(entry.pid, None);
    let status = orphan.0.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGTERM), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_process_that_leads_no_group_is_still_stopped() {
    let fx = Fixture::new();
    // In the test's own process group, as a monitor started by a script without job control would be.
    let mut stray = ChildGuard(std::process::Command::new("/bin/sleep").arg("300").spawn().unwrap());
    let pid = stray.0.id();
    let mut entry = ProcessEntry::new(sh("grouped", "exec sleep 300"), Timestamp::now());
    entry.state = ProcessState::Running;
    entry.pid = Some(pid);
    entry.pid_start_time = pm_registry::proc::start_time(pid);
    entry.config.autostart = false;
    fx.sup.resume(entry, StartKind::Resume).unwrap();
    fx.wait("grouped", LONG, |e| e.state == ProcessState::Running && e.pid == Some(pid)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(15), fx.sup.stop("grouped")).await;
    assert_eq!(stopped.expect("the stop finished").unwrap(), ProcessState::Stopped);
    let status = stray.0.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGTERM), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_start_does_not_adopt_a_reused_pid() {
    let fx = Fixture::new();
    let marker = fx.file("marker");
    let mut orphan = spawn_orphan(&fx.file("other"));
    let pid = orphan.id();
    let mut entry = ProcessEntry::new(
        sh("reused", &format!("echo started >> {}; exec sleep 300", marker.display())),
        Timestamp::now(),
    );
    entry.state = ProcessState::Running;
    entry.pid = Some(pid);
    // A start time that is not this process's: the PID now belongs to someone else.
    entry.pid_start_time = pm_registry::proc::start_time(pid).map(|t| t + 12345);
    entry.config.restart_policy = Some(policy(3, &[10]));
    fx.sup.resume(entry, StartKind::Boot).unwrap();
    let running =
        fx.wait("reused", LONG, |e| e.state == ProcessState::Running && e.pid.is_some_and(|p| p != pid)).await;
    assert_ne!(running.pid, Some(pid));
    assert!(alive(pid), "the unrelated process must not be touched");
    // The process we spawned.
    pm_registry::proc::signal_process(pid, libc::SIGKILL).unwrap();
    let _ = orphan.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_keeps_stopped_processes_stopped_but_boot_starts_autostart() {
    let fx = Fixture::new();
    let mut entry = ProcessEntry::new(sh("resumed", "sleep 300"), Timestamp::now());
    entry.last_started_at = Some(Timestamp::now());
    fx.sup.resume(entry.clone(), StartKind::Resume).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fx.sup.get("resumed").unwrap().state, ProcessState::Stopped);
    entry.config.id = "booted".to_owned();
    fx.sup.resume(entry, StartKind::Boot).unwrap();
    fx.wait("booted", LONG, |e| e.state == ProcessState::Running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_can_leave_processes_running_for_a_successor() {
    let fx = Fixture::new();
    fx.sup.register(sh("survivor", "sleep 300")).unwrap();
    let pid = fx.wait("survivor", LONG, |e| e.state == ProcessState::Running).await.pid.unwrap();
    let entries = fx.sup.shutdown(|_| true).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].pid, Some(pid));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(alive(pid));
    // Cleanup of the group we started.
    pm_registry::proc::signal_group(pid, libc::SIGKILL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_rotation_loses_and_duplicates_no_line_while_the_child_writes() {
    let fx = Fixture::new();
    let n = 1500;
    let done = fx.file("done");
    let mut config = sh(
        "chatty",
        &format!(
            "i=1; while [ $i -le {n} ]; do echo line-$i; i=$((i+1)); sleep 0.002; done; touch {}; sleep 300",
            done.display()
        ),
    );
    config.log_max_bytes = Some(4096);
    config.log_keep = Some(50);
    fx.sup.register(config).unwrap();
    fx.wait("chatty", LONG, |e| e.state == ProcessState::Running).await;
    eventually(Duration::from_secs(60), "child finished writing", || done.exists()).await;
    // One more rotation pass may run; wait until the live log is small again or stable.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let run = std::fs::read_dir(fx.sup.paths().process_logs_dir("chatty")).unwrap().flatten().next().unwrap().path();
    let mut generations: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("stdout.log.")?.parse().ok()?;
            Some((n, entry.path()))
        })
        .collect();
    assert!(generations.len() >= 2, "expected several rotations, got {}", generations.len());
    generations.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut all = Vec::new();
    for (_, path) in &generations {
        all.extend(std::fs::read(path).unwrap());
    }
    all.extend(std::fs::read(run.join("stdout.log")).unwrap());
    let text = String::from_utf8(all).unwrap();
    let want: String = (1..=n).map(|i| format!("line-{i}\n")).collect();
    assert!(text == want, "lines lost, duplicated or reordered across {} rotations", generations.len());
}

/// A process waiting for a retry when the monitor stops cleanly is stopped, not `retrying`; at the next boot it
/// starts only if it is autostart (also from an entry an older monitor left `retrying`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_retrying_at_a_clean_stop_starts_at_boot_only_if_autostart() {
    let fx = Fixture::new();
    let starts = fx.file("starts");
    let mut config = sh("flaky", &format!("echo x >> {}; exit 1", starts.display()));
    config.restart_policy = Some(policy(5, &[600_000]));
    fx.sup.register(config).unwrap();
    fx.wait("flaky", LONG, |e| e.state == ProcessState::Retrying).await;
    let entries = fx.sup.shutdown(|_| false).await;
    assert_eq!(entries[0].state, ProcessState::Stopped, "{:#?}", entries[0]);
    // Booted again without autostart: it stays stopped (its retry was one second away).
    let mut manual = entries[0].clone();
    manual.config.autostart = false;
    manual.config.restart_policy = Some(policy(5, &[1000]));
    let mut older = manual.clone();
    fx.sup.resume(manual, StartKind::Boot).unwrap();
    // An older monitor's file: `retrying` after a clean stop.
    older.config.id = "older".to_owned();
    older.state = ProcessState::Retrying;
    older.restart_attempts = 1;
    fx.sup.resume(older, StartKind::Boot).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for id in ["flaky", "older"] {
        let entry = fx.sup.get(id).unwrap();
        assert_eq!(entry.state, ProcessState::Stopped, "{id}: {entry:#?}");
    }
    let runs = || std::fs::read_to_string(&starts).unwrap_or_default().lines().count();
    assert_eq!(runs(), 1, "only the first run before the stop");
    // With autostart it starts at boot.
    let mut auto = fx.sup.get("older").unwrap();
    auto.config.id = "auto".to_owned();
    auto.config.autostart = true;
    auto.state = ProcessState::Retrying;
    fx.sup.resume(auto, StartKind::Boot).unwrap();
    eventually(LONG, "the autostart process starts at boot", || runs() >= 2).await;
}
