//! Property tests of the state machine: random sequences of events — unrequested exits, signals from outside,
//! stop, start, restart, enable, disable, failing health checks, time passing (timers firing), a restart of the
//! monitor (adoption), and races between them — applied to one process through the public [`Supervisor`] API,
//! with a real `/bin/sh` child carrying a unique marker and a health endpoint the test flips.
//!
//! Checked on every state the supervisor publishes: a child exists exactly in `starting`, `running` and
//! `stopping`; a disabled process is never started; `disabled` iff not enabled (bar the `stopping` on the
//! way); the attempt counter stays within the policy and `failed` means it ran out. Checked all along from
//! /proc: never two live copies. Checked after every event, once things settle: the state, PID and counter
//! a reference model of the guide predicts, and no spontaneous start after a stop or disable.
//!
//! `PM_PROPS_CASES` sets the number of cases (24 by default, each of at most 12 events).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pm_core::{AlivenessCheck, FailAction, ProcessConfig, ProcessEntry, ProcessState, RestartPolicy, StartupCheck};
use pm_http::{AlivenessCallback, AlivenessServerHelper};
use pm_supervisor::{Supervisor, SupervisorConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const ID: &str = "p";
const BACKOFF_MS: u64 = 30;
const CHECK_INTERVAL_MS: u64 = 40;
static CASE: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    Stop,
    Restart,
    Enable,
    Disable,
    /// The child exits on its own (code 3).
    Exit,
    /// SIGKILL to the child from outside.
    Kill,
    /// SIGKILL to the child's whole process group from outside.
    KillGroup,
    /// The health endpoint fails until the supervisor acts (or, without a check, for a while).
    Unhealthy,
    /// Time passes: timers (reset, checks) fire.
    Wait(u16),
    /// The monitor restarts: its supervisor shuts down leaving the child running; a new one resumes it.
    MonitorRestart,
    /// A crash, and a stop before the backoff timer fires.
    KillThenStop,
    /// Two starts at once.
    DoubleStart,
    /// A start and a stop at once.
    StartStopRace,
}

#[derive(Debug, Clone)]
struct Case {
    max_attempts: u32,
    retry_indefinitely: bool,
    /// `resetAfterMs` of 1 ms (the counter resets right after each start) or of ten minutes (never).
    reset_quick: bool,
    /// An aliveness check, and with it maybe a startup check with this fail action.
    check: Option<Option<FailAction>>,
    autostart: bool,
    steps: Vec<Step>,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Start),
        3 => Just(Step::Stop),
        2 => Just(Step::Restart),
        1 => Just(Step::Enable),
        2 => Just(Step::Disable),
        2 => Just(Step::Exit),
        2 => Just(Step::Kill),
        1 => Just(Step::KillGroup),
        2 => Just(Step::Unhealthy),
        1 => (0u16..200).prop_map(Step::Wait),
        2 => Just(Step::MonitorRestart),
        1 => Just(Step::KillThenStop),
        1 => Just(Step::DoubleStart),
        1 => Just(Step::StartStopRace),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let check = prop_oneof![
        Just(None),
        Just(Some(None)),
        prop_oneof![Just(FailAction::Restart), Just(FailAction::Disable), Just(FailAction::Fail)]
            .prop_map(|a| Some(Some(a))),
    ];
    (1u32..=3, any::<bool>(), any::<bool>(), check, prop::bool::weighted(0.7), prop::collection::vec(step(), 1..=12))
        .prop_map(|(max_attempts, retry_indefinitely, reset_quick, check, autostart, steps)| Case {
            max_attempts,
            retry_indefinitely,
            reset_quick,
            check,
            autostart,
            steps,
        })
}

#[test]
fn random_event_sequences_keep_the_state_machine_legal() {
    let cases = std::env::var("PM_PROPS_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(24);
    let started = Instant::now();
    let mut runner =
        TestRunner::new(Config { cases, max_shrink_iters: 24, failure_persistence: None, ..Config::default() });
    let res = runner.run(&case(), |case| run_case(&case).map_err(TestCaseError::fail));
    eprintln!("props | {cases} cases in {:.1?}", started.elapsed());
    if let Err(err) = res {
        panic!("{err}");
    }
}

/// What the guide says the process must look like once an event has played out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Stopped,
    Running,
    Failed,
    Disabled,
}

#[derive(Debug, Clone)]
struct Model {
    enabled: bool,
    state: Settled,
    attempts: u32,
    /// The running child was adopted by a restarted monitor (its exit status is then unknown).
    adopted: bool,
}

impl Model {
    /// A crash of a running process: another attempt, or failed.
    fn crash(&mut self, case: &Case) {
        if case.reset_quick {
            // It ran for longer than resetAfterMs: the counter was reset.
            self.attempts = 0;
        }
        if self.attempts < case.max_attempts || case.retry_indefinitely {
            self.attempts += 1;
            self.state = Settled::Running;
        } else {
            self.state = Settled::Failed;
        }
        self.adopted = false;
    }

    fn start(&mut self) {
        if self.enabled && self.state != Settled::Running {
            self.state = Settled::Running;
            self.attempts = 0;
            self.adopted = false;
        }
    }

    fn stop(&mut self) {
        self.state = if self.enabled { Settled::Stopped } else { Settled::Disabled };
    }
}

/// Everything one case started, found again and killed on drop, pass or fail.
struct Cleanup {
    starts: PathBuf,
    marker: String,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in read_pids(&self.starts).into_iter().chain(copies(&self.marker)) {
            // Process groups this case started (each child leads its own group).
            pm_registry::proc::signal_group(pid, libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|line| line.trim().parse().ok()).collect()
}

/// Live process-group leaders with `marker` in their argv (a forked child that has not exec'd yet shows the
/// same argv but does not lead a group).
fn copies(marker: &str) -> Vec<u32> {
    let Ok(pids) = pm_registry::proc::all_pids() else { return Vec::new() };
    pids.filter(|pid| {
        let Some(stat) = pm_registry::proc::stat(*pid) else { return false };
        if stat.state == 'Z' || stat.pgrp != *pid {
            return false;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        cmdline.split(|byte| *byte == 0).any(|arg| arg == marker.as_bytes())
    })
    .collect()
}

fn signal(pid: u32, signal: i32) {
    // A process this case started.
    let _ = pm_registry::proc::signal_process(pid, signal);
}

/// What the observers collected.
#[derive(Default)]
struct Seen {
    /// Published states, in order (per supervisor).
    states: Vec<ProcessState>,
    violations: Vec<String>,
}

struct Run {
    case: Case,
    dir: PathBuf,
    marker: String,
    config: ProcessConfig,
    sup: Supervisor,
    seen: Arc<Mutex<Seen>>,
    healthy: Arc<AtomicBool>,
    max_copies: Arc<AtomicUsize>,
}

fn run_case(case: &Case) -> Result<(), String> {
    let n = CASE.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pm-props-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|err| err.to_string())?;
    let marker = format!("pm-props-marker-{}-{n}", std::process::id());
    let starts = dir.join("starts");
    let _cleanup = Cleanup { starts: starts.clone(), marker: marker.clone(), dir: dir.clone() };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| err.to_string())?;
    // Never two copies, sampled from /proc all along.
    let max_copies = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (marker, max_copies, done) = (marker.clone(), max_copies.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                max_copies.fetch_max(copies(&marker).len(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let res = runtime.block_on(async {
        let healthy = Arc::new(AtomicBool::new(true));
        let callback = AlivenessCallback::default().with_health_check({
            let healthy = healthy.clone();
            move || {
                let healthy = healthy.clone();
                async move { healthy.load(Ordering::SeqCst) }
            }
        });
        let mut server = AlivenessServerHelper::new(0, callback);
        let addr = server.start().await.map_err(|err| err.to_string())?;
        let config = process_config(case, &starts, &marker, &format!("http://{addr}/health"));
        let sup = supervisor(&dir);
        let mut run = Run {
            case: case.clone(),
            dir: dir.clone(),
            marker,
            config,
            sup,
            seen: Default::default(),
            healthy,
            max_copies: max_copies.clone(),
        };
        let res = run.play().await;
        let left = run.sup.shutdown(|_| false).await;
        server.stop().await;
        res?;
        if let Some(entry) = left.iter().find(|entry| entry.pid.is_some()) {
            return Err(format!("after the final shutdown the entry still has a child: {entry:?}"));
        }
        Ok(())
    });
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    res?;
    // After the final shutdown no copy is left.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !copies(&_cleanup.marker).is_empty() {
        if Instant::now() > deadline {
            return Err(format!("copies left after the final shutdown: {:?}", copies(&_cleanup.marker)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let max = max_copies.load(Ordering::Relaxed);
    if max > 1 {
        return Err(format!("{max} live copies of one process at once"));
    }
    Ok(())
}

fn supervisor(dir: &Path) -> Supervisor {
    let paths = pm_registry::Paths::new(dir, "props").expect("paths");
    Supervisor::new(SupervisorConfig { paths, keep_runs: 3, default_cwd: dir.to_path_buf(), extra_env: Vec::new() })
}

fn process_config(case: &Case, starts: &Path, marker: &str, url: &str) -> ProcessConfig {
    let mut config = ProcessConfig::new(ID, ID, "/bin/sh");
    config.args = vec![
        "-c".to_owned(),
        format!("echo $$ >> '{}'; trap 'kill $! 2>/dev/null; exit 3' USR1; sleep 600 & wait", starts.display()),
        marker.to_owned(),
    ];
    config.autostart = case.autostart;
    config.stop_timeout_ms = Some(2000);
    config.restart_policy = Some(RestartPolicy {
        max_attempts: case.max_attempts,
        backoff_intervals_ms: vec![BACKOFF_MS, BACKOFF_MS * 2],
        reset_after_ms: if case.reset_quick { 1 } else { 600_000 },
        retry_indefinitely: case.retry_indefinitely,
        indefinite_interval_ms: BACKOFF_MS,
        restart_on: Default::default(),
        extra: serde_json::Map::new(),
    });
    if let Some(startup) = case.check {
        let mut check = AlivenessCheck::new(url);
        check.interval_ms = CHECK_INTERVAL_MS;
        check.timeout_ms = 300;
        check.consecutive_failures_required = 2;
        check.startup_check = startup.map(|fail_action| StartupCheck {
            enabled: true,
            initial_delay_ms: 20,
            check_interval_ms: 30,
            max_attempts: 4,
            fail_action,
            extra: serde_json::Map::new(),
        });
        config.aliveness_check = Some(Box::new(check));
    }
    config
}

impl Run {
    /// Watches every state the current supervisor publishes and checks the invariants that hold at every moment.
    fn observe(&self) {
        let seen = self.seen.clone();
        let case = self.case.clone();
        let sup = self.sup.clone();
        tokio::spawn(async move {
            let _ = sup
                .wait_for(ID, Duration::from_secs(3600), move |entry| {
                    let mut seen = seen.lock().unwrap();
                    seen.states.push(entry.state);
                    if let Some(violation) = moment_violation(&case, entry) {
                        seen.violations.push(violation);
                    }
                    false
                })
                .await;
        });
    }

    fn entry(&self) -> Result<ProcessEntry, String> {
        self.sup.get(ID).ok_or_else(|| "the process is gone".to_owned())
    }

    fn states_seen(&self) -> usize {
        self.seen.lock().unwrap().states.len()
    }

    async fn play(&mut self) -> Result<(), String> {
        self.sup.register(self.config.clone()).map_err(|err| err.to_string())?;
        self.observe();
        let mut model = Model { enabled: true, state: Settled::Stopped, attempts: 0, adopted: false };
        if self.case.autostart {
            model.start();
        }
        self.settle(&model, None, "registration").await?;
        for (idx, step) in self.case.steps.clone().into_iter().enumerate() {
            let what = format!("step {idx} {step:?}");
            let before = self.entry()?;
            let old_pid = before.pid;
            let mut quiet_from = None;
            match step {
                Step::Start | Step::Restart => {
                    let res = if step == Step::Start { self.sup.start(ID).await } else { self.sup.restart(ID).await };
                    match (model.enabled, res) {
                        (true, Ok(_)) => {}
                        (false, Err(pm_core::Error::Disabled(_))) => {}
                        (enabled, res) => return Err(format!("{what}: enabled {enabled}, answered {res:?}")),
                    }
                    if step == Step::Restart && model.enabled {
                        model.state = Settled::Stopped;
                    }
                    model.start();
                    if step == Step::Start && before.state == ProcessState::Running {
                        // A no-op: the same child.
                        self.settle(&model, None, &what).await?;
                        let now = self.entry()?;
                        if now.pid != old_pid {
                            return Err(format!(
                                "{what}: starting a running process replaced it ({old_pid:?} -> {:?})",
                                now.pid
                            ));
                        }
                        continue;
                    }
                }
                Step::Stop => {
                    let state = self.sup.stop(ID).await.map_err(|err| format!("{what}: {err}"))?;
                    model.stop();
                    let want = if model.enabled { ProcessState::Stopped } else { ProcessState::Disabled };
                    if state != want {
                        return Err(format!("{what}: stop answered {state}, expected {want}"));
                    }
                    quiet_from = Some(self.states_seen());
                }
                Step::Enable => {
                    self.sup.set_enabled(ID, true).await.map_err(|err| format!("{what}: {err}"))?;
                    model.enabled = true;
                    if model.state == Settled::Disabled {
                        model.state = Settled::Stopped;
                        quiet_from = Some(self.states_seen());
                    }
                }
                Step::Disable => {
                    self.sup.set_enabled(ID, false).await.map_err(|err| format!("{what}: {err}"))?;
                    model.enabled = false;
                    model.state = Settled::Disabled;
                    quiet_from = Some(self.states_seen());
                }
                Step::Exit | Step::Kill | Step::KillGroup => {
                    let Some(pid) = old_pid.filter(|_| model.state == Settled::Running) else { continue };
                    match step {
                        Step::Exit => signal(pid, libc::SIGUSR1),
                        Step::Kill => signal(pid, libc::SIGKILL),
                        _ => {
                            pm_registry::proc::signal_group(pid, libc::SIGKILL);
                        }
                    }
                    let adopted = model.adopted;
                    model.crash(&self.case);
                    self.wait_replaced(pid, &what).await?;
                    let entry = self.entry()?;
                    if !adopted && entry.state == ProcessState::Failed {
                        let (code, sig) = (entry.last_exit_code, entry.last_signal);
                        let ok = match step {
                            Step::Exit => code == Some(3),
                            _ => sig == Some(libc::SIGKILL),
                        };
                        if !ok {
                            return Err(format!("{what}: exit recorded as code {code:?} signal {sig:?}"));
                        }
                    }
                }
                Step::Unhealthy => {
                    let Some(pid) = old_pid.filter(|_| model.state == Settled::Running) else { continue };
                    self.healthy.store(false, Ordering::SeqCst);
                    if self.case.check.is_some() {
                        // The checks fail until the supervisor kills the child; then healthy again (before the
                        // startup checks of the next child, which come after the backoff).
                        let res = self.wait_dropped(pid, &what).await;
                        self.healthy.store(true, Ordering::SeqCst);
                        res?;
                        model.crash(&self.case);
                    } else {
                        // Without a check nothing looks at health.
                        tokio::time::sleep(Duration::from_millis(CHECK_INTERVAL_MS * 4)).await;
                        self.healthy.store(true, Ordering::SeqCst);
                    }
                }
                Step::Wait(ms) => {
                    tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
                    if model.state != Settled::Running {
                        quiet_from = Some(self.states_seen());
                    }
                }
                Step::MonitorRestart => {
                    let entries = self.sup.shutdown(|_| true).await;
                    let entry = entries.into_iter().next().ok_or("shutdown answered no entry")?;
                    self.sup = supervisor(&self.dir);
                    self.sup.resume(entry, pm_supervisor::StartKind::Resume).map_err(|err| format!("{what}: {err}"))?;
                    self.observe();
                    if model.state == Settled::Running {
                        model.adopted = true;
                    }
                }
                Step::KillThenStop => {
                    if let Some(pid) = old_pid.filter(|_| model.state == Settled::Running) {
                        signal(pid, libc::SIGKILL);
                    }
                    self.sup.stop(ID).await.map_err(|err| format!("{what}: {err}"))?;
                    model.stop();
                    quiet_from = Some(self.states_seen());
                }
                Step::DoubleStart => {
                    let (a, b) = tokio::join!(self.sup.start(ID), self.sup.start(ID));
                    if model.enabled && (a.is_err() || b.is_err()) {
                        return Err(format!("{what}: {a:?} {b:?}"));
                    }
                    let was_running = model.state == Settled::Running;
                    model.start();
                    if was_running {
                        self.settle(&model, None, &what).await?;
                        if self.entry()?.pid != old_pid {
                            return Err(format!("{what}: a running process was replaced"));
                        }
                        continue;
                    }
                }
                Step::StartStopRace => {
                    let (_, stopped) = tokio::join!(self.sup.start(ID), self.sup.stop(ID));
                    stopped.map_err(|err| format!("{what}: {err}"))?;
                    // Either order is fine; what settles must be one of the two outcomes, consistently.
                    tokio::time::sleep(Duration::from_millis(BACKOFF_MS * 3)).await;
                    let entry = self.entry()?;
                    match entry.state {
                        ProcessState::Running | ProcessState::Starting if model.enabled => {
                            model.state = Settled::Stopped;
                            model.start();
                        }
                        _ => model.stop(),
                    }
                }
            }
            self.settle(&model, quiet_from, &what).await?;
        }
        let violations = self.seen.lock().unwrap().violations.clone();
        if !violations.is_empty() {
            return Err(format!("states that must never be published: {violations:#?}"));
        }
        Ok(())
    }

    /// Waits until the supervisor has let go of the child `pid` (killed it, or seen it end).
    async fn wait_dropped(&self, pid: u32, what: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.entry()?.pid == Some(pid) {
            if Instant::now() > deadline {
                return Err(format!("{what}: the supervisor did not act on failing checks within 5 s"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Waits until the child `pid` is gone and the process has settled somewhere else (a new child, or failed).
    async fn wait_replaced(&self, pid: u32, what: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let entry = self.entry()?;
            let replaced = entry.pid.is_some_and(|now| now != pid) && entry.state == ProcessState::Running;
            let ended =
                !entry.state.has_child() && matches!(entry.state, ProcessState::Failed | ProcessState::Disabled);
            if replaced || ended {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{what}: the supervisor did not act on the end of {pid} within 5 s: {entry:?}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the process matches the model (state, child in /proc, counter), then holds it there a
    /// moment; with `quiet_from`, no `starting`/`running` may be published after that observation.
    async fn settle(&self, model: &Model, quiet_from: Option<usize>, what: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let entry = self.entry()?;
            match self.matches(model, &entry) {
                Ok(()) => break,
                Err(why) if Instant::now() > deadline => {
                    return Err(format!("{what}: did not settle as {model:?} within 5 s: {why}; entry {entry:?}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        // Held: the backoff and check timers would have fired by now.
        tokio::time::sleep(Duration::from_millis(BACKOFF_MS * 2 + 20)).await;
        let entry = self.entry()?;
        self.matches(model, &entry).map_err(|why| format!("{what}: settled, then changed: {why}; entry {entry:?}"))?;
        if let Some(from) = quiet_from {
            let seen = self.seen.lock().unwrap();
            if let Some(state) = seen
                .states
                .iter()
                .skip(from)
                .find(|state| matches!(state, ProcessState::Starting | ProcessState::Running))
            {
                return Err(format!(
                    "{what}: started on its own afterwards ({state}); states {:?}",
                    &seen.states[from..]
                ));
            }
        }
        let max = self.max_copies.load(Ordering::Relaxed);
        if max > 1 {
            return Err(format!("{what}: {max} live copies at once"));
        }
        Ok(())
    }

    fn matches(&self, model: &Model, entry: &ProcessEntry) -> Result<(), String> {
        let want = match model.state {
            Settled::Stopped => ProcessState::Stopped,
            Settled::Running => ProcessState::Running,
            Settled::Failed => ProcessState::Failed,
            Settled::Disabled => ProcessState::Disabled,
        };
        if entry.state != want {
            return Err(format!("state {} (expected {want})", entry.state));
        }
        if entry.config.enabled != model.enabled {
            return Err(format!("enabled {} (expected {})", entry.config.enabled, model.enabled));
        }
        let live = copies(&self.marker);
        match model.state {
            Settled::Running => {
                if live.len() != 1 || entry.pid != Some(live[0]) {
                    return Err(format!("running with pid {:?} but live copies {live:?}", entry.pid));
                }
            }
            _ => {
                if !live.is_empty() || entry.pid.is_some() {
                    return Err(format!("{} with pid {:?} and live copies {live:?}", entry.state, entry.pid));
                }
            }
        }
        let deterministic_counter = !self.case.reset_quick && matches!(model.state, Settled::Running | Settled::Failed);
        if deterministic_counter && entry.restart_attempts != model.attempts {
            return Err(format!("restartAttempts {} (expected {})", entry.restart_attempts, model.attempts));
        }
        if self.case.reset_quick && model.state == Settled::Running && entry.restart_attempts != 0 {
            return Err(format!("restartAttempts {} not reset after resetAfterMs 1", entry.restart_attempts));
        }
        Ok(())
    }
}

/// The invariants of a single published state.
fn moment_violation(case: &Case, entry: &ProcessEntry) -> Option<String> {
    let state = entry.state;
    if entry.pid.is_some() != state.has_child() {
        return Some(format!("{state} with pid {:?}", entry.pid));
    }
    if state == ProcessState::Disabled && entry.config.enabled {
        return Some("disabled but enabled".to_owned());
    }
    if !entry.config.enabled && !matches!(state, ProcessState::Disabled | ProcessState::Stopping) {
        return Some(format!("{state} while not enabled"));
    }
    if !case.retry_indefinitely && entry.restart_attempts > case.max_attempts {
        return Some(format!("restartAttempts {} over maxAttempts {}", entry.restart_attempts, case.max_attempts));
    }
    let failed_by_startup = matches!(case.check, Some(Some(FailAction::Fail)));
    if state == ProcessState::Failed
        && !failed_by_startup
        && (case.retry_indefinitely || entry.restart_attempts != case.max_attempts)
    {
        return Some(format!("failed with restartAttempts {} of {}", entry.restart_attempts, case.max_attempts));
    }
    None
}
