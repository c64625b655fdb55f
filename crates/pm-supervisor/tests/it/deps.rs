//! Service dependencies, one-shot jobs and tcp/exec probes on real processes, supervised in-process.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pm_core::{
    AlivenessCheck, DependencyCondition, Error, ProbeType, ProcessConfig, ProcessState, RestartOn, RestartPolicy,
    StartupCheck,
};

use crate::support::{eventually, read_numbers, sh, Fixture};

const LONG: Duration = Duration::from_secs(20);

/// `date +%s%N >> file` (the time a process got to run, in ns).
fn stamp(file: &Path) -> String {
    format!("date +%s%N >> '{}'", file.display())
}

fn one_shot(restart_on: RestartOn) -> Option<RestartPolicy> {
    Some(RestartPolicy { restart_on, backoff_intervals_ms: vec![50], ..RestartPolicy::default() })
}

fn exec_check(script: &str, startup: bool) -> AlivenessCheck {
    let mut check = AlivenessCheck::new("");
    check.probe_type = ProbeType::Exec;
    check.command = Some("/bin/sh".to_owned());
    check.args = vec!["-c".to_owned(), script.to_owned()];
    check.interval_ms = 60_000;
    check.timeout_ms = 1000;
    if startup {
        check.startup_check = Some(StartupCheck {
            initial_delay_ms: 50,
            check_interval_ms: 50,
            max_attempts: 1000,
            ..StartupCheck::default()
        });
    }
    check
}

fn needs(config: &mut ProcessConfig, deps: &[(&str, DependencyCondition)]) {
    config.depends_on = deps.iter().map(|(id, condition)| (id.to_string(), *condition)).collect();
}

/// db (healthy ~1 s after it starts: an exec startup check looks for its ready file) ← migrate (one-shot) ←
/// api (healthy once it has run) ← web, none with autostart.
fn chain(fx: &Fixture) {
    use DependencyCondition::*;
    let ready = fx.file("db.ready");
    let mut db =
        sh("db", &format!("{}; sleep 1; touch '{}'; exec sleep 600", stamp(&fx.file("db.t")), ready.display()));
    db.aliveness_check = Some(Box::new(exec_check(&format!("test -f '{}'", ready.display()), true)));
    let mut migrate = sh("migrate", &format!("{}; sleep 0.2; exit 0", stamp(&fx.file("migrate.t"))));
    migrate.restart_policy = one_shot(RestartOn::Never);
    needs(&mut migrate, &[("db", Healthy)]);
    let mut api = sh("api", &format!("{}; exec sleep 600", stamp(&fx.file("api.t"))));
    needs(&mut api, &[("db", Healthy), ("migrate", CompletedSuccessfully)]);
    // Healthy once its shell has run (so that the stamps can prove the order).
    api.aliveness_check = Some(Box::new(exec_check(&format!("test -s '{}'", fx.file("api.t").display()), true)));
    let mut web = sh("web", &format!("{}; exec sleep 600", stamp(&fx.file("web.t"))));
    needs(&mut web, &[("api", Healthy)]);
    for mut config in [db, migrate, api, web] {
        config.autostart = false;
        config.stop_timeout_ms = Some(2000);
        fx.sup.register(config).unwrap();
    }
}

async fn first(fx: &Fixture, id: &str) -> u128 {
    let file = fx.file(&format!("{id}.t"));
    eventually(LONG, &format!("{id} ran"), || !read_numbers(&file).is_empty()).await;
    read_numbers(&file)[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_the_last_of_a_chain_starts_it_in_order_and_stopping_the_first_stops_the_rest_first() {
    let fx = Fixture::new();
    chain(&fx);
    // Starting web alone: it waits, and says for what.
    assert_eq!(fx.sup.start("web").await.unwrap(), ProcessState::Starting);
    let waiting = fx.sup.get("web").unwrap();
    assert_eq!(waiting.pid, None, "nothing spawned while waiting");
    assert_eq!(waiting.waiting_for, BTreeMap::from([("api".to_owned(), DependencyCondition::Healthy)]));
    assert_eq!(waiting.status().waiting_for.unwrap().len(), 1);
    fx.wait("web", LONG, |e| e.state == ProcessState::Running).await;
    let migrate = fx.sup.get("migrate").unwrap();
    assert_eq!((migrate.state, migrate.last_exit_code), (ProcessState::Stopped, Some(0)), "{migrate:?}");
    let (db, mig) = (first(&fx, "db").await, first(&fx, "migrate").await);
    let (api, web) = (first(&fx, "api").await, first(&fx, "web").await);
    assert!(mig > db + 900_000_000, "migrate ran {} ms after db, before db was healthy", (mig - db) / 1_000_000);
    assert!(api > mig && web > api, "order db {db} migrate {mig} api {api} web {web}");
    assert!(fx.sup.get("web").unwrap().waiting_for.is_empty());
    // Starting web again is a no-op: the finished job is not run again.
    assert_eq!(fx.sup.start("web").await.unwrap(), ProcessState::Running);
    assert_eq!(fx.sup.get("migrate").unwrap().state, ProcessState::Stopped);
    assert_eq!(read_numbers(&fx.file("migrate.t")).len(), 1);
    // Stopping db stops web and api first (migrate is done already).
    let (state, stopped) = fx.sup.stop_with_dependents("db").await.unwrap();
    assert_eq!(state, ProcessState::Stopped);
    assert_eq!(stopped, ["web", "api"]);
    for id in ["db", "api", "web"] {
        assert_eq!(fx.sup.get(id).unwrap().state, ProcessState::Stopped, "{id}");
    }
    let stop_times: Vec<_> =
        ["web", "api", "db"].iter().map(|id| fx.sup.get(id).unwrap().last_stopped_at.unwrap()).collect();
    assert!(stop_times.windows(2).all(|pair| pair[0] <= pair[1]), "{stop_times:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_that_never_gets_healthy_fails_the_dependent_after_its_timeout() {
    let fx = Fixture::new();
    let mut db = sh("db", "exec sleep 600");
    db.aliveness_check = Some(Box::new(exec_check("exit 1", true)));
    db.autostart = false;
    fx.sup.register(db).unwrap();
    let mut api = sh("api", "exec sleep 600");
    needs(&mut api, &[("db", DependencyCondition::Healthy)]);
    api.dependency_timeout_ms = Some(700);
    api.autostart = false;
    fx.sup.register(api).unwrap();
    let started = std::time::Instant::now();
    fx.sup.start("api").await.unwrap();
    let failed = fx.wait("api", LONG, |e| e.state == ProcessState::Failed).await;
    assert!(started.elapsed() >= Duration::from_millis(650), "{:?}", started.elapsed());
    let error = failed.last_error.unwrap();
    assert!(error.contains("\"db\" healthy") && error.contains("700 ms") && error.contains("starting"), "{error}");
    assert_eq!(failed.pid, None);
    assert!(failed.waiting_for.is_empty());
    assert_eq!(fx.sup.get("db").unwrap().state, ProcessState::Starting, "the dependency itself carries on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_processes_start_at_once_while_a_dependent_waits() {
    let fx = Fixture::new();
    let ready = fx.file("slow.ready");
    let mut slow = sh("slow", &format!("sleep 3; touch '{}'; exec sleep 600", ready.display()));
    slow.aliveness_check = Some(Box::new(exec_check(&format!("test -f '{}'", ready.display()), true)));
    fx.sup.register(slow).unwrap();
    let mut waiting = sh("waiting", "exec sleep 600");
    needs(&mut waiting, &[("slow", DependencyCondition::Healthy)]);
    fx.sup.register(waiting).unwrap();
    fx.sup.register(sh("free", "exec sleep 600")).unwrap();
    fx.wait("free", LONG, |e| e.state == ProcessState::Running).await;
    assert!(!ready.exists(), "free waited for slow");
    assert_eq!(fx.sup.get("waiting").unwrap().state, ProcessState::Starting);
    assert_eq!(fx.sup.get("waiting").unwrap().pid, None);
    fx.wait("waiting", LONG, |e| e.state == ProcessState::Running).await;
    assert!(ready.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_or_failed_dependency_refuses_the_start_naming_it() {
    let fx = Fixture::new();
    let mut db = sh("db", "exit 3");
    db.restart_policy = one_shot(RestartOn::Never);
    db.autostart = false;
    fx.sup.register(db).unwrap();
    let mut api = sh("api", "exec sleep 600");
    needs(&mut api, &[("db", DependencyCondition::Started)]);
    api.autostart = false;
    fx.sup.register(api).unwrap();
    fx.sup.set_enabled("db", false).await.unwrap();
    let err = fx.sup.start("api").await.unwrap_err();
    assert_eq!(err, Error::Dependency("Cannot start api: its dependency db is disabled".to_owned()));
    fx.sup.set_enabled("db", true).await.unwrap();
    fx.sup.start("db").await.unwrap();
    fx.wait("db", LONG, |e| e.state == ProcessState::Failed).await;
    let err = fx.sup.start("api").await.unwrap_err().to_string();
    assert!(err.contains("dependency db has failed") && err.contains("exited with code 3"), "{err}");
    assert_eq!(fx.sup.get("api").unwrap().state, ProcessState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_not_registered_yet_is_waited_for() {
    let fx = Fixture::new();
    let mut api = sh("api", "exec sleep 600");
    needs(&mut api, &[("later", DependencyCondition::Started)]);
    fx.sup.register(api).unwrap();
    let waiting = fx.wait("api", LONG, |e| !e.waiting_for.is_empty()).await;
    assert_eq!(waiting.state, ProcessState::Starting);
    assert!(waiting.waiting_for.contains_key("later"));
    fx.sup.register(sh("later", "exec sleep 600")).unwrap();
    let running = fx.wait("api", LONG, |e| e.state == ProcessState::Running).await;
    assert!(running.pid.is_some() && running.waiting_for.is_empty());
    // A stop while waiting ends the wait for good.
    fx.sup.stop("later").await.unwrap();
    assert_eq!(fx.sup.get("api").unwrap().state, ProcessState::Stopped, "dependent stopped first");
}

/// A stop that ends a wait for dependencies is recorded as a stop (`lastStoppedAt`): a successor monitor does not
/// take the autostart process for one registered while no monitor ran and never run since, which it would start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_ends_a_wait_for_dependencies_is_recorded() {
    let fx = Fixture::new();
    let mut api = sh("api", "exec sleep 600");
    needs(&mut api, &[("later", DependencyCondition::Started)]);
    fx.sup.register(api).unwrap();
    fx.wait("api", LONG, |e| !e.waiting_for.is_empty()).await;
    assert_eq!(fx.sup.stop("api").await.unwrap(), ProcessState::Stopped);
    let stopped = fx.sup.get("api").unwrap();
    assert!(stopped.last_stopped_at.is_some() && stopped.last_started_at.is_none(), "{stopped:#?}");
    assert!(stopped.waiting_for.is_empty() && stopped.waiting_since.is_none(), "{stopped:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_jobs_follow_restart_on() {
    let fx = Fixture::new();
    let cases = [
        ("ok-failure", RestartOn::Failure, 0, ProcessState::Stopped),
        ("ok-never", RestartOn::Never, 0, ProcessState::Stopped),
        ("bad-never", RestartOn::Never, 3, ProcessState::Failed),
    ];
    for (id, restart_on, code, _) in cases {
        let mut config = sh(id, &format!("{}; exit {code}", stamp(&fx.file(&format!("{id}.t")))));
        config.restart_policy = one_shot(restart_on);
        fx.sup.register(config).unwrap();
    }
    let mut retried = sh("bad-failure", &format!("{}; exit 4", stamp(&fx.file("bad-failure.t"))));
    retried.restart_policy = Some(RestartPolicy { max_attempts: 2, ..one_shot(RestartOn::Failure).unwrap() });
    fx.sup.register(retried).unwrap();
    for (id, _, code, state) in cases {
        let entry = fx.wait(id, LONG, |e| e.state == state && e.last_stopped_at.is_some()).await;
        assert_eq!(entry.last_exit_code, Some(code), "{id}");
        assert_eq!(entry.restart_attempts, 0, "{id}");
    }
    let failed = fx.wait("bad-failure", LONG, |e| e.state == ProcessState::Failed).await;
    assert_eq!(failed.last_exit_code, Some(4));
    assert_eq!(read_numbers(&fx.file("bad-failure.t")).len(), 3, "first run and two restarts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (id, ..) in cases {
        assert_eq!(read_numbers(&fx.file(&format!("{id}.t"))).len(), 1, "{id} ran once");
    }
    let done = fx.sup.get("ok-never").unwrap();
    assert_eq!(done.last_error, None);
    assert!(fx.sup.get("bad-never").unwrap().last_error.unwrap().contains("restartOn never"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_dependents_restarts_what_depends_on_a_restarted_process() {
    let fx = Fixture::new();
    let mut db = sh("db", &format!("{}; exec sleep 600", stamp(&fx.file("db.t"))));
    db.restart_dependents = true;
    db.stop_timeout_ms = Some(2000);
    fx.sup.register(db).unwrap();
    let mut api = sh("api", &format!("{}; exec sleep 600", stamp(&fx.file("api.t"))));
    needs(&mut api, &[("db", DependencyCondition::Healthy)]);
    api.stop_timeout_ms = Some(2000);
    fx.sup.register(api).unwrap();
    fx.wait("api", LONG, |e| e.state == ProcessState::Running).await;
    // Both shells have run (a stop before that would lose a stamp).
    eventually(LONG, "db and api ran", || {
        read_numbers(&fx.file("db.t")).len() == 1 && read_numbers(&fx.file("api.t")).len() == 1
    })
    .await;
    let first_api = fx.sup.get("api").unwrap().pid;
    fx.sup.restart("db").await.unwrap();
    let again = fx.wait("api", LONG, |e| e.state == ProcessState::Running && e.pid != first_api).await;
    let db = fx.sup.get("db").unwrap();
    assert!(again.last_started_at >= db.last_started_at, "api restarted after db: {again:?} {db:?}");
    eventually(LONG, "api ran twice", || read_numbers(&fx.file("api.t")).len() == 2).await;
    // A crash restart of db restarts api too.
    let db_pid = fx.sup.get("db").unwrap().pid.unwrap();
    // A process the supervisor started.
    pm_registry::proc::signal_process(db_pid, libc::SIGKILL).unwrap();
    eventually(LONG, "api ran a third time", || read_numbers(&fx.file("api.t")).len() == 3).await;
    fx.wait("api", LONG, |e| e.state == ProcessState::Running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_dependents_before_their_dependencies() {
    let fx = Fixture::new();
    let stops = fx.file("stops");
    let trap = |id: &str| {
        let ready = stops.with_file_name(format!("{id}.ready"));
        sh(
            id,
            &format!(
                "trap 'echo {id} >> \"{}\"; exit 0' TERM; touch '{}'; sleep 600 & wait",
                stops.display(),
                ready.display()
            ),
        )
    };
    fx.sup.register(trap("db")).unwrap();
    let mut api = trap("api");
    needs(&mut api, &[("db", DependencyCondition::Started)]);
    fx.sup.register(api).unwrap();
    let mut web = trap("web");
    needs(&mut web, &[("api", DependencyCondition::Started)]);
    fx.sup.register(web).unwrap();
    fx.sup.register(trap("other")).unwrap();
    for id in ["db", "api", "web", "other"] {
        fx.wait(id, LONG, |e| e.state == ProcessState::Running).await;
    }
    eventually(LONG, "every trap is set", || {
        ["db", "api", "web", "other"].iter().all(|id| fx.file(&format!("{id}.ready")).exists())
    })
    .await;
    fx.sup.shutdown(|_| false).await;
    let order = std::fs::read_to_string(&stops).unwrap();
    let order: Vec<&str> = order.lines().filter(|id| *id != "other").collect();
    assert_eq!(order, ["web", "api", "db"]);
}

/// Live processes whose command line holds `needle`.
fn count_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| pm_registry::proc::alive(*pid))
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|arg| arg == needle.as_bytes())
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_pass_and_fail_as_specified() {
    let fx = Fixture::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = listener.local_addr().unwrap().port();
    let closed_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let tcp = |port: u16| {
        let mut check = AlivenessCheck::new("");
        check.probe_type = ProbeType::Tcp;
        check.host = Some("127.0.0.1".to_owned());
        check.port = Some(port);
        check.interval_ms = 60_000;
        check.timeout_ms = 500;
        check.startup_check =
            Some(StartupCheck { initial_delay_ms: 10, check_interval_ms: 30, max_attempts: 3, ..Default::default() });
        check
    };
    let exec_marked = |script: &str, marker: &str| {
        let mut check = exec_check(script, true);
        check.args.push(marker.to_owned());
        check.timeout_ms = 300;
        check.startup_check.as_mut().unwrap().max_attempts = 3;
        check.startup_check.as_mut().unwrap().fail_action = pm_core::FailAction::Fail;
        check
    };
    let exec = |script: &str| {
        let mut check = exec_check(script, true);
        check.timeout_ms = 300;
        check.startup_check.as_mut().unwrap().max_attempts = 3;
        check.startup_check.as_mut().unwrap().fail_action = pm_core::FailAction::Fail;
        check
    };
    // The hung probe is a shell (marked by its $0) waiting on a sleep of a telling length: both must go.
    let marker = format!("pm-probe-hang-{}", std::process::id());
    let nap = format!("601.{}", std::process::id());
    let cases = [
        ("tcp-open", tcp(open_port), ProcessState::Running),
        (
            "tcp-closed",
            {
                let mut c = tcp(closed_port);
                c.startup_check.as_mut().unwrap().fail_action = pm_core::FailAction::Fail;
                c
            },
            ProcessState::Failed,
        ),
        // The process's environment and working directory reach the probe.
        ("exec-pass", exec("test \"$PROBE_VAR\" = yes && test -f here"), ProcessState::Running),
        ("exec-fail", exec("exit 1"), ProcessState::Failed),
        ("exec-hang", exec_marked(&format!("sleep {nap} & wait"), &marker), ProcessState::Failed),
    ];
    let cwd = fx.file("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("here"), "").unwrap();
    for (id, check, _) in &cases {
        let mut config = sh(id, "exec sleep 600");
        config.aliveness_check = Some(Box::new(check.clone()));
        config.working_directory = Some(cwd.display().to_string());
        config.environment = Some(BTreeMap::from([("PROBE_VAR".to_owned(), "yes".to_owned())]));
        fx.sup.register(config).unwrap();
    }
    for (id, _, state) in &cases {
        let entry = fx.wait(id, LONG, |e| e.state == *state).await;
        if *state == ProcessState::Failed {
            let error = entry.last_error.unwrap();
            assert!(error.contains("startup check failed 3 times"), "{id}: {error}");
        }
    }
    assert!(fx.sup.get("tcp-closed").unwrap().last_error.unwrap().contains(&format!("tcp 127.0.0.1:{closed_port}")));
    // Each hung probe was killed at its timeout, with its group: nothing is left.
    eventually(Duration::from_secs(5), "no hung probe left", || count_with(&marker) + count_with(&nap) == 0).await;
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_exec_probe_leaves_no_process_behind() {
    let fx = Fixture::new();
    let marker = format!("pm-probe-cancel-{}", std::process::id());
    let nap = format!("602.{}", std::process::id());
    let mut config = sh("svc", "exec sleep 600");
    let mut check = exec_check(&format!("sleep {nap} & wait"), true);
    check.args.push(marker.clone());
    check.timeout_ms = 60_000;
    config.aliveness_check = Some(Box::new(check));
    config.stop_timeout_ms = Some(2000);
    fx.sup.register(config).unwrap();
    eventually(LONG, "the probe runs", || count_with(&marker) == 1 && count_with(&nap) == 1).await;
    // Stopping the process cancels the check in flight: the probe goes with it.
    fx.sup.stop("svc").await.unwrap();
    eventually(Duration::from_secs(5), "the probe is gone", || count_with(&marker) + count_with(&nap) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_found_gone_at_monitor_start_is_not_run_again_unless_it_restarts_always() {
    let fx = Fixture::new();
    for (id, restart_on, want) in [
        ("job", RestartOn::Never, ProcessState::Stopped),
        ("retry", RestartOn::Failure, ProcessState::Stopped),
        ("service", RestartOn::Always, ProcessState::Retrying),
    ] {
        let mut config = sh(id, &format!("{}; exec sleep 600", stamp(&fx.file(&format!("{id}.t")))));
        config.restart_policy =
            Some(RestartPolicy { backoff_intervals_ms: vec![60_000], ..one_shot(restart_on).unwrap() });
        let mut entry = pm_core::ProcessEntry::new(config, pm_core::Timestamp::now());
        // It ran under a monitor that is gone, and is gone too (no such PID and start time).
        entry.state = ProcessState::Running;
        entry.pid = Some(std::process::id());
        entry.pid_start_time = Some(1);
        fx.sup.resume(entry, pm_supervisor::StartKind::Resume).unwrap();
        let seen = fx.wait(id, LONG, |e| e.state == want).await;
        assert!(seen.last_error.unwrap().contains("exited while the monitor was not running"), "{id}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in ["job", "retry"] {
        assert_eq!(fx.sup.get(id).unwrap().state, ProcessState::Stopped, "{id}");
        assert!(read_numbers(&fx.file(&format!("{id}.t"))).is_empty(), "{id} was run again");
    }
}

/// A restart after a crash waits for the `started`/`healthy` dependencies that do not hold (here db, down at the
/// same time), in `starting` with `waitingFor`, bounded by `dependencyTimeoutMs`; it does not ask again for a
/// one-shot job that completed before the first start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_crash_waits_for_dependencies_that_went_down() {
    use DependencyCondition::*;
    let fx = Fixture::new();
    let up = fx.file("db.up");
    std::fs::write(&up, "").unwrap();
    let mut db = sh("db", &format!("{}; exec sleep 600", stamp(&fx.file("db.t"))));
    db.aliveness_check = Some(Box::new(exec_check(&format!("test -f '{}'", up.display()), true)));
    db.restart_policy = Some(RestartPolicy { backoff_intervals_ms: vec![1000], ..RestartPolicy::default() });
    let mut migrate = sh("migrate", &format!("{}; exit 0", stamp(&fx.file("migrate.t"))));
    migrate.restart_policy = one_shot(RestartOn::Never);
    let mut api = sh("api", &format!("{}; exec sleep 600", stamp(&fx.file("api.t"))));
    needs(&mut api, &[("db", Healthy), ("migrate", CompletedSuccessfully)]);
    api.restart_policy = Some(RestartPolicy { backoff_intervals_ms: vec![50], ..RestartPolicy::default() });
    api.dependency_timeout_ms = Some(60_000);
    let mut quick = sh("quick", "exec sleep 600");
    needs(&mut quick, &[("db", Healthy)]);
    quick.restart_policy = api.restart_policy.clone();
    quick.dependency_timeout_ms = Some(1000);
    for mut config in [db, migrate, api, quick] {
        config.autostart = false;
        config.stop_timeout_ms = Some(2000);
        fx.sup.register(config).unwrap();
    }
    fx.sup.start("api").await.unwrap();
    fx.sup.start("quick").await.unwrap();
    fx.wait("api", LONG, |e| e.state == ProcessState::Running).await;
    fx.wait("quick", LONG, |e| e.state == ProcessState::Running).await;
    eventually(LONG, "api ran", || read_numbers(&fx.file("api.t")).len() == 1).await;

    // db goes down and stays unhealthy; api and quick crash meanwhile.
    std::fs::remove_file(&up).unwrap();
    let kill = |id: &str| {
        let pid = fx.sup.get(id).unwrap().pid.unwrap();
        // A process the supervisor started.
        pm_registry::proc::signal_process(pid, libc::SIGKILL).unwrap();
    };
    kill("db");
    fx.wait("db", LONG, |e| e.state != ProcessState::Running).await;
    kill("api");
    kill("quick");
    let waiting = fx.wait("api", LONG, |e| e.state == ProcessState::Starting && !e.waiting_for.is_empty()).await;
    assert_eq!(waiting.pid, None, "not spawned while db is down");
    assert_eq!(waiting.waiting_for, BTreeMap::from([("db".to_owned(), Healthy)]), "the job is not asked again");
    assert_eq!(waiting.restart_attempts, 1, "still a crash restart");
    assert_eq!(waiting.status().waiting_for.unwrap().len(), 1);
    // The wait is bounded by dependencyTimeoutMs.
    let failed = fx.wait("quick", LONG, |e| e.state == ProcessState::Failed).await;
    let error = failed.last_error.unwrap();
    assert!(error.contains("dependencies not met within 1000 ms") && error.contains("\"db\" healthy"), "{error}");
    assert_eq!(failed.pid, None);
    assert_eq!(read_numbers(&fx.file("api.t")).len(), 1, "api waits");

    // db healthy again: api is spawned, after it; the job is not run again.
    std::fs::write(&up, "").unwrap();
    let running = fx.wait("api", LONG, |e| e.state == ProcessState::Running).await;
    assert!(running.waiting_for.is_empty() && running.pid.is_some());
    eventually(LONG, "api ran again", || read_numbers(&fx.file("api.t")).len() == 2).await;
    let (db_runs, api_runs) = (read_numbers(&fx.file("db.t")), read_numbers(&fx.file("api.t")));
    assert!(api_runs[1] > db_runs[1], "api restarted before db came back: {db_runs:?} {api_runs:?}");
    assert_eq!(read_numbers(&fx.file("migrate.t")).len(), 1);
    assert_eq!(fx.sup.get("quick").unwrap().state, ProcessState::Failed, "a failed wait stays failed");
}

/// A successor monitor resumes the wait of a restart after a crash as such: a job that completed before the
/// dependent's first start is not waited for again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_restart_wait_resumed_by_a_successor_does_not_ask_for_the_job_again() {
    use DependencyCondition::*;
    let fx = Fixture::new();
    let mut db = sh("db", "exec sleep 600");
    db.stop_timeout_ms = Some(2000);
    fx.sup.register(db).unwrap();
    fx.wait("db", LONG, |e| e.state == ProcessState::Running).await;
    let mut migrate = sh("migrate", "exit 0");
    migrate.restart_policy = one_shot(RestartOn::Never);
    migrate.autostart = false;
    let mut entry = pm_core::ProcessEntry::new(migrate, pm_core::Timestamp::now());
    entry.state = ProcessState::Stopped;
    entry.last_exit_code = Some(0);
    entry.last_stopped_at = Some(pm_core::Timestamp::now().plus_millis(-60_000));
    fx.sup.resume(entry, pm_supervisor::StartKind::Resume).unwrap();
    let mut api = sh("api", &format!("{}; exec sleep 600", stamp(&fx.file("api.t"))));
    needs(&mut api, &[("db", Healthy), ("migrate", CompletedSuccessfully)]);
    api.dependency_timeout_ms = Some(3000);
    api.stop_timeout_ms = Some(2000);
    let mut entry = pm_core::ProcessEntry::new(api, pm_core::Timestamp::now());
    // It was waiting to restart after its first crash when the last monitor went.
    entry.state = ProcessState::Starting;
    entry.restart_attempts = 1;
    entry.waiting_since = Some(pm_core::Timestamp::now());
    entry.waiting_for = BTreeMap::from([("db".to_owned(), Healthy)]);
    fx.sup.resume(entry, pm_supervisor::StartKind::Resume).unwrap();
    let running = fx.wait("api", LONG, |e| e.state != ProcessState::Starting).await;
    assert_eq!(running.state, ProcessState::Running, "{running:?}");
    eventually(LONG, "api's shell ran", || read_numbers(&fx.file("api.t")).len() == 1).await;
    assert_eq!(fx.sup.get("migrate").unwrap().state, ProcessState::Stopped);
}

/// `restartDependents` starts the dependents again as a start does: a dependent that also needs a one-shot job
/// gets it run again, rather than waiting in vain for a job nobody starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_dependents_get_their_one_shot_job_run_again() {
    use DependencyCondition::*;
    let fx = Fixture::new();
    let mut db = sh("db", &format!("{}; exec sleep 600", stamp(&fx.file("db.t"))));
    db.restart_dependents = true;
    let mut migrate = sh("migrate", &format!("{}; exit 0", stamp(&fx.file("migrate.t"))));
    migrate.restart_policy = one_shot(RestartOn::Never);
    needs(&mut migrate, &[("db", Healthy)]);
    let mut api = sh("api", &format!("{}; exec sleep 600", stamp(&fx.file("api.t"))));
    needs(&mut api, &[("db", Healthy), ("migrate", CompletedSuccessfully)]);
    api.dependency_timeout_ms = Some(5000);
    for mut config in [db, migrate, api] {
        config.autostart = false;
        config.stop_timeout_ms = Some(2000);
        fx.sup.register(config).unwrap();
    }
    fx.sup.start("api").await.unwrap();
    let first = fx.wait("api", LONG, |e| e.state == ProcessState::Running).await;
    eventually(LONG, "db and api ran", || {
        read_numbers(&fx.file("db.t")).len() == 1 && read_numbers(&fx.file("api.t")).len() == 1
    })
    .await;
    fx.sup.restart("db").await.unwrap();
    let again = fx.wait("api", LONG, |e| e.pid != first.pid && e.state != ProcessState::Starting).await;
    assert_eq!(again.state, ProcessState::Running, "{again:?}");
    eventually(LONG, "api ran again", || read_numbers(&fx.file("api.t")).len() == 2).await;
    let (migrate_runs, api_runs) = (read_numbers(&fx.file("migrate.t")), read_numbers(&fx.file("api.t")));
    assert_eq!(migrate_runs.len(), 2, "the job ran again for the restarted api");
    assert!(api_runs[1] > migrate_runs[1]);
    // The same after a crash restart of db.
    let db_pid = fx.sup.get("db").unwrap().pid.unwrap();
    // A process the supervisor started.
    pm_registry::proc::signal_process(db_pid, libc::SIGKILL).unwrap();
    eventually(LONG, "api ran a third time", || read_numbers(&fx.file("api.t")).len() == 3).await;
    let third = fx.wait("api", LONG, |e| e.state != ProcessState::Starting).await;
    assert_eq!(third.state, ProcessState::Running, "{third:?}");
    assert_eq!(read_numbers(&fx.file("migrate.t")).len(), 3);
}

/// Disabling a process stops it as a stop does: the processes that depend on it stop first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_dependency_stops_its_dependents_first() {
    let fx = Fixture::new();
    let mut db = sh("db", "exec sleep 600");
    db.autostart = false;
    db.stop_timeout_ms = Some(2000);
    fx.sup.register(db).unwrap();
    let mut api = sh("api", "exec sleep 600");
    needs(&mut api, &[("db", DependencyCondition::Started)]);
    api.autostart = false;
    api.stop_timeout_ms = Some(2000);
    fx.sup.register(api).unwrap();
    fx.sup.start("api").await.unwrap();
    fx.wait("api", LONG, |e| e.state == ProcessState::Running).await;
    fx.sup.set_enabled("db", false).await.unwrap();
    let (db, api) = (fx.sup.get("db").unwrap(), fx.sup.get("api").unwrap());
    assert_eq!((db.state, api.state), (ProcessState::Disabled, ProcessState::Stopped));
    assert!(api.last_stopped_at <= db.last_stopped_at, "{api:?} {db:?}");
    assert!(api.config.enabled, "only the process named is disabled");
}

/// Jobs started for a dependent count from when the dependent's start was requested, before they were started:
/// one that finished before the dependent's own wait began (a fast job) still counts as completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_jobs_started_for_a_dependent_count_as_completed() {
    let fx = Fixture::new();
    let jobs: Vec<String> = (1..=5).map(|n| format!("job{n}")).collect();
    for id in &jobs {
        let mut job = ProcessConfig::new(id, id, "/bin/true");
        job.restart_policy = one_shot(RestartOn::Never);
        job.autostart = false;
        fx.sup.register(job).unwrap();
    }
    let mut api = sh("api", "exec sleep 600");
    api.depends_on = jobs.iter().map(|id| (id.clone(), DependencyCondition::CompletedSuccessfully)).collect();
    api.dependency_timeout_ms = Some(5000);
    api.autostart = false;
    api.stop_timeout_ms = Some(2000);
    fx.sup.register(api).unwrap();
    fx.sup.start("api").await.unwrap();
    let api = fx.wait("api", LONG, |e| matches!(e.state, ProcessState::Running | ProcessState::Failed)).await;
    assert_eq!(api.state, ProcessState::Running, "{:?}", api.last_error);
    for id in &jobs {
        assert_eq!(fx.sup.get(id).unwrap().last_exit_code, Some(0), "{id}");
    }
}

/// At a boot, a job that finished before its dependent's task came to start counts: the boot requested both
/// starts when the monitor started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_boot_a_job_that_finished_before_its_dependent_began_counts() {
    let fx = Fixture::new();
    let mut job = ProcessConfig::new("job", "job", "/bin/true");
    job.restart_policy = one_shot(RestartOn::Never);
    let mut entry = pm_core::ProcessEntry::new(job, pm_core::Timestamp::now());
    entry.state = ProcessState::Stopped;
    fx.sup.resume(entry, pm_supervisor::StartKind::Boot).unwrap();
    fx.wait("job", LONG, |e| e.state == ProcessState::Stopped && e.last_exit_code == Some(0)).await;
    let mut web = sh("web", "exec sleep 600");
    needs(&mut web, &[("job", DependencyCondition::CompletedSuccessfully)]);
    web.dependency_timeout_ms = Some(3000);
    web.stop_timeout_ms = Some(2000);
    let mut entry = pm_core::ProcessEntry::new(web, pm_core::Timestamp::now());
    entry.state = ProcessState::Stopped;
    fx.sup.resume(entry, pm_supervisor::StartKind::Boot).unwrap();
    let web = fx.wait("web", LONG, |e| matches!(e.state, ProcessState::Running | ProcessState::Failed)).await;
    assert_eq!(web.state, ProcessState::Running, "{:?}", web.last_error);
}

/// The dependents of a process follow registrations, configuration changes and removals (they are noted as the
/// processes' tasks publish them, not looked for in every process at each stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dependents_of_a_process_follow_registrations_changes_and_removals() {
    use DependencyCondition::Started;
    let fx = Fixture::new();
    for id in ["db", "cache"] {
        let mut config = sh(id, "exec sleep 600");
        config.autostart = false;
        fx.sup.register(config).unwrap();
    }
    let dependent = |id: &str, deps: &[(&str, DependencyCondition)]| {
        let mut config = sh(id, "exec sleep 600");
        config.autostart = false;
        needs(&mut config, deps);
        config
    };
    fx.sup.register(dependent("api", &[("db", Started)])).unwrap();
    fx.sup.register(dependent("web", &[("db", Started), ("cache", Started)])).unwrap();
    assert_eq!(fx.sup.dependents_of("db"), ["api", "web"]);
    assert_eq!(fx.sup.dependents_of("cache"), ["web"]);
    assert!(fx.sup.dependents_of("api").is_empty());

    // A changed configuration: web now needs only the cache, api needs the cache as well.
    // (A configuration is handed to the task, which takes it up in its own time.)
    fx.sup.update_config(dependent("web", &[("cache", Started)])).await.unwrap();
    fx.sup.update_config(dependent("api", &[("db", Started), ("cache", Started)])).await.unwrap();
    fx.wait("web", LONG, |e| e.config.depends_on.len() == 1).await;
    fx.wait("api", LONG, |e| e.config.depends_on.len() == 2).await;
    assert_eq!(fx.sup.dependents_of("db"), ["api"]);
    assert_eq!(fx.sup.dependents_of("cache"), ["api", "web"]);

    // Depending on nothing any more, and removed.
    fx.sup.update_config(dependent("web", &[])).await.unwrap();
    fx.wait("web", LONG, |e| e.config.depends_on.is_empty()).await;
    fx.sup.remove("api").await.unwrap();
    assert!(fx.sup.dependents_of("db").is_empty());
    assert!(fx.sup.dependents_of("cache").is_empty());

    // A stop of a process with a dependent under way still stops the dependent first.
    fx.sup.register(dependent("api", &[("db", Started)])).unwrap();
    fx.sup.start("api").await.unwrap();
    fx.wait("api", LONG, |e| e.state == ProcessState::Running).await;
    let (state, stopped) = fx.sup.stop_with_dependents("db").await.unwrap();
    assert_eq!((state, stopped), (ProcessState::Stopped, vec!["api".to_owned()]));
    assert_eq!(fx.sup.get("api").unwrap().state, ProcessState::Stopped);
}
