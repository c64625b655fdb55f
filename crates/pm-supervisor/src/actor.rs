//! One task per managed process: it owns the child, runs its timers and checks, and is the only writer of its
//! state. Commands arrive through its inbox (`crate::inbox`) with oneshot replies; every change is published on a watch
//! channel that status queries and the registry writer read.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Duration;

use pm_core::{
    next_restart, Error, FailAction, ProcessConfig, ProcessEntry, ProcessState, RestartDecision, RestartOn,
    SharedEntry, Timestamp,
};
use pm_registry::proc::Process;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cgroup::ProcCgroup;
use crate::decide::{self, AtStart};
use crate::os::{self, ExitWatch};
use crate::Shared;

/// Revisions of the configuration fields a process's task changes itself; the registry writer stores a field
/// when its revision moved since it last wrote it, and leaves the others as the file has them (a local client
/// may have changed them meanwhile).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigRevs {
    /// Revision of `enabled`.
    pub enabled: u64,
    /// Revision of `autostart`.
    pub autostart: u64,
}

/// What a status query or the registry writer sees of one process.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The entry as the actor holds it: the same allocation as the task's own copy until the task changes it (one
    /// copy of each entry in memory, not two; issue 19, memory per process).
    pub entry: Arc<ProcessEntry>,
    /// Bumped whenever the actor itself changed a field of the configuration (enable, disable, autostart, a
    /// startup check that disabled the process), so the writer knows to store that field.
    pub config_rev: ConfigRevs,
    /// When the current run started (monotonic), for uptime.
    pub running_since: Option<std::time::Instant>,
    /// Counters since this monitor took the process over.
    pub counters: Counters,
}

/// In-memory counters of one process (not stored in the registry).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Restarts after crashes.
    pub restarts: u64,
    /// Failed aliveness and startup checks.
    pub check_failures: u64,
    /// Duration of the last check.
    pub last_check: Option<Duration>,
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// How often log sizes are checked when `logMaxBytes` is set (besides every write, through inotify).
const ROTATE_EVERY: Duration = Duration::from_millis(500);
/// The least time between two rotation passes of one process's logs, however fast its child writes.
const MIN_ROTATE_GAP: Duration = Duration::from_millis(10);
/// How long a process that SIGKILL could not be sent to is waited for before it is given up as unkillable.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// The least time between a failed spawn (missing executable, bad working directory) and the next attempt.
const SPAWN_FAILURE_PAUSE: Duration = Duration::from_millis(100);
/// How often memory is sampled when `memoryRestartBytes` is set.
const MEMORY_EVERY: Duration = Duration::from_secs(1);

/// A request to the actor. The rare large payloads are boxed, so that a command is 16 bytes: every process's
/// queue holds the ones waiting (issue 19, memory per process).
pub(crate) enum Cmd {
    Start(Reply<ProcessState>),
    Stop(Reply<ProcessState>),
    Restart(Reply<ProcessState>),
    SetEnabled(bool, Reply<()>),
    SetAutostart(bool, Reply<()>),
    /// A configuration read from the registry (a local client's edit); not stored back. `base` is the revision
    /// of the fields the task changes itself that the edit was read against (`None`: apply it whatever came
    /// since): a field the task changed after that keeps the task's value, so an older reading never undoes a
    /// newer change.
    UpdateConfig(Box<(ProcessConfig, Option<ConfigRevs>)>),
    /// Take over a running process (used for a partner monitor that came up on its own).
    Adopt(Box<Process>),
    /// The dependencies of wait `gen` (first) that do not hold yet (see [`crate::deps`]).
    DepsPending(Box<(u64, std::collections::BTreeMap<String, pm_core::DependencyCondition>)>),
    /// Every dependency of wait `gen` holds: spawn now.
    DepsReady {
        gen: u64,
    },
    /// Wait `gen` (first) failed (timeout, a dependency that failed): `failed` with this reason.
    DepsFailed(Box<(u64, String)>),
    /// End the actor: stop the child first, or leave it running for a successor monitor.
    Shutdown {
        leave_running: bool,
        done: oneshot::Sender<ProcessEntry>,
    },
}

/// How the actor begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    /// A new registration: start when enabled and autostart.
    Registered,
    /// The monitor is starting: adopt what still runs, carry on what was under way; a
    /// [`StartKind::Boot`](crate::StartKind::Boot) also starts autostart processes that are stopped.
    MonitorStart(crate::StartKind),
}

/// A running child, boxed in its actor (see [`Actor::child`]).
pub(crate) struct Child {
    pid: u32,
    watch: Watch,
    /// The run folder holding its logs (unknown for an adopted process).
    run_dir: Option<std::path::PathBuf>,
    /// Its cgroup, with cgroup containment.
    cgroup: Option<ProcCgroup>,
}

pub(crate) enum Watch {
    /// Our child, spawned by tokio (where the kernel cannot clone into a cgroup, without cgroup containment, or
    /// for an untrusted registration); boxed: 120 B more for every running child otherwise.
    Own(Box<tokio::process::Child>),
    /// Our child, cloned straight into its cgroup.
    Forked(crate::cgroup_spawn::Forked),
    Adopted(ExitWatch),
    /// The leader exited 0 and `trackDaemonizedChildren` keeps the process running while its cgroup is populated.
    Daemons(ProcCgroup),
}

impl Watch {
    pub(crate) fn own(child: tokio::process::Child) -> Watch {
        Watch::Own(Box::new(child))
    }
}

/// How a run ended.
struct ExitInfo {
    code: Option<i32>,
    signal: Option<i32>,
}

enum Phase {
    /// No checks (no child, or no aliveness check configured).
    Idle,
    /// Startup checks: `attempts` made so far.
    Startup { attempts: u32 },
    /// Regular aliveness checks.
    Alive,
}

enum Event {
    Cmd(Option<Cmd>),
    Exited(ExitInfo),
    RetryDue,
    ResetDue,
    CheckDue,
    CheckDone((bool, Duration)),
    RotateDue,
    MemoryDue,
    LogsWritten,
}

pub(crate) struct Actor {
    entry: SharedEntry,
    config_rev: ConfigRevs,
    shared: Arc<Shared>,
    publish: crate::published::Publisher<Snapshot>,
    rx: crate::inbox::Receiver<Cmd>,
    /// Boxed: 256 B that a process which does not run would keep for nothing.
    child: Option<Box<Child>>,
    running_since: Option<std::time::Instant>,
    retry_at: Option<Instant>,
    reset_at: Option<Instant>,
    phase: Phase,
    check_at: Option<Instant>,
    check_task: Option<JoinHandle<(bool, Duration)>>,
    counters: Counters,
    rotate_at: Option<Instant>,
    /// Number of the current wait for dependencies (a stale answer of an earlier wait is ignored).
    wait_gen: u64,
    /// The current wait for dependencies is a restart after a crash (see [`Actor::restart_after_crash`]).
    crash_wait: bool,
    /// Next memory sample (with `memoryRestartBytes`) and how many samples in a row were above it.
    memory_at: Option<Instant>,
    memory_over: u32,
    /// The process's cgroup was left empty by a leader's exit without a kill: the restart may use it again.
    cgroup_reusable: bool,
    /// Wakes on writes to the current run's logs (only with `logMaxBytes`).
    log_watch: Option<crate::watch::LogWatch>,
    last_rotation: Option<Instant>,
    /// The launch turn taken before the process's first step (see [`Actor::run_boxed`]), for its launch.
    turn: Option<crate::launch::Turn>,
    /// The last launch kept the process's run folders for the next one (a restart after a crash), which then does
    /// not list its log folder (`launch::Runs`).
    runs_kept: bool,
}

impl Actor {
    /// The task of `entry`, which it shares with its published [`Snapshot`] (and with the registry `entry` came
    /// from, if any) until it changes it: [`SharedEntry`] copies it on the first change.
    pub(crate) fn new(
        entry: impl Into<SharedEntry>,
        shared: Arc<Shared>,
        rx: crate::inbox::Receiver<Cmd>,
    ) -> (Actor, crate::published::Published<Snapshot>) {
        let entry = entry.into();
        let (publish, snapshot) = crate::published::channel(Snapshot {
            entry: entry.arc().clone(),
            config_rev: ConfigRevs::default(),
            running_since: None,
            counters: Counters::default(),
        });
        let actor = Actor {
            entry,
            config_rev: ConfigRevs::default(),
            shared,
            publish,
            rx,
            child: None,
            running_since: None,
            retry_at: None,
            reset_at: None,
            phase: Phase::Idle,
            check_at: None,
            check_task: None,
            counters: Counters::default(),
            rotate_at: None,
            wait_gen: 0,
            crash_wait: false,
            memory_at: None,
            memory_over: 0,
            cgroup_reusable: false,
            log_watch: None,
            last_rotation: None,
            turn: None,
            runs_kept: false,
        };
        (actor, snapshot)
    }

    /// The task of the process. The actor lives in a box of its own and the rare long steps (a start, a stop,
    /// an exit) in boxes made when they run: the task's future, which every process keeps for its whole life,
    /// holds little more than the wait for the next event (issue 19, memory per process).
    pub(crate) fn run(self, begin: Begin) -> impl std::future::Future<Output = ()> + Send {
        Box::new(self).run_boxed(begin)
    }

    async fn run_boxed(mut self: Box<Self>, begin: Begin) {
        // A process that launches as it begins takes its launch turn before its first step is built: the
        // thousands of a start-up then wait holding nothing but this task, instead of each holding its step
        // (about 1.4 KiB) until its turn, which left those steps' places in holes among the started processes'
        // allocations (issue 19, see `launch::turn`).
        if self.launches_at_begin() {
            self.turn = Some(crate::launch::turn().await);
        }
        Box::pin(self.begin(begin)).await;
        self.turn = None;
        loop {
            let event = self.next_event().await;
            match event {
                Event::Cmd(None) => {
                    // The supervisor is gone without a shutdown: leave the child to a successor.
                    self.cancel_check();
                    return;
                }
                Event::Cmd(Some(Cmd::Shutdown { leave_running, done })) => {
                    self.cancel_check();
                    if !leave_running && self.is_waiting() {
                        self.cancel_wait();
                        self.entry.state = ProcessState::Stopped;
                        self.publish();
                    }
                    if !leave_running && self.child.is_some() {
                        let info = Box::pin(self.terminate()).await;
                        self.record_exit(&info);
                        self.entry.state = ProcessState::Stopped;
                        self.publish();
                    } else if !leave_running
                        && matches!(self.entry.state, ProcessState::Retrying | ProcessState::Crashed)
                    {
                        // A clean stop ends the wait for a retry as well: the next boot starts the process only if
                        // it is autostart, like any stopped one.
                        self.retry_at = None;
                        self.entry.state = ProcessState::Stopped;
                        self.publish();
                    }
                    if self.child.is_none() {
                        self.remove_idle_cgroup();
                    }
                    let _ = done.send(ProcessEntry::clone(&self.entry));
                    return;
                }
                Event::Cmd(Some(cmd)) => Box::pin(self.handle(cmd)).await,
                Event::Exited(info) => Box::pin(self.on_unrequested_exit(info)).await,
                Event::RetryDue => {
                    self.retry_at = None;
                    Box::pin(self.restart_after_crash()).await;
                }
                Event::ResetDue => {
                    self.reset_at = None;
                    self.forget_runs();
                    if self.entry.restart_attempts != 0 {
                        self.entry.restart_attempts = 0;
                        self.publish();
                    }
                }
                Event::CheckDue => self.launch_check(),
                Event::RotateDue => Box::pin(self.rotate_logs()).await,
                Event::MemoryDue => Box::pin(self.check_memory()).await,
                Event::LogsWritten => {
                    let soonest = self.soonest_rotation();
                    self.rotate_at = Some(self.rotate_at.map_or(soonest, |at| at.min(soonest)));
                }
                Event::CheckDone((passed, took)) => {
                    crate::events::emit_check(&self.shared, &self.entry, passed, self.check_streak(passed));
                    self.counters.last_check = Some(took);
                    if !passed {
                        self.counters.check_failures += 1;
                    }
                    Box::pin(self.on_check(passed)).await
                }
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        // A restart due now (backoff 0) goes ahead without a round trip through the timer wheel, which would
        // add up to a millisecond.
        if self.retry_at.is_some_and(|at| at <= Instant::now()) {
            return Event::RetryDue;
        }
        let soonest = self.soonest_rotation();
        let child = &mut self.child;
        let check_task = &mut self.check_task;
        let check_at = if check_task.is_none() { self.check_at } else { None };
        // Writes matter only while no rotation is due sooner than the next one may run.
        let log_watch =
            self.log_watch.as_ref().filter(|_| child.is_some() && self.rotate_at.is_some_and(|at| at > soonest));
        // One timer, at the soonest deadline (each timer is about 110 bytes that every process would hold).
        let timers = [self.retry_at, self.reset_at, check_at, self.rotate_at, self.memory_at];
        let soonest_timer = crate::timers::soonest(timers);
        tokio::select! {
            cmd = self.rx.recv() => Event::Cmd(cmd),
            info = wait_child(child) => Event::Exited(info),
            () = sleep_until(soonest_timer.map(|(at, _)| at)) => match soonest_timer.map(|(_, which)| which) {
                Some(1) => Event::ResetDue,
                Some(2) => Event::CheckDue,
                Some(3) => Event::RotateDue,
                Some(4) => Event::MemoryDue,
                _ => Event::RetryDue,
            },
            passed = join_check(check_task) => Event::CheckDone(passed),
            () = logs_written(log_watch) => Event::LogsWritten,
        }
    }

    /// Whether the first step launches a child right away: an enabled autostart process with no child to adopt
    /// and no dependency to wait for.
    fn launches_at_begin(&self) -> bool {
        let config = &self.entry.config;
        config.enabled && config.autostart && config.depends_on.is_empty() && self.entry.pid.is_none()
    }

    async fn begin(&mut self, begin: Begin) {
        if !self.entry.config.enabled {
            self.begin_disabled(begin).await;
            return;
        }
        if let Begin::MonitorStart(start) = begin {
            self.begin_at_monitor_start(start).await;
            return;
        }
        if self.entry.config.autostart {
            let _ = self.spawn_or_wait().await;
        } else {
            self.publish();
        }
    }

    /// A disabled process is `disabled`. One that still runs at monitor start was disabled while a monitor was
    /// stopping it (and that monitor was killed meanwhile): the stop is finished rather than the process left
    /// running unsupervised.
    async fn begin_disabled(&mut self, begin: Begin) {
        let entry = &self.entry;
        let live = matches!(begin, Begin::MonitorStart(_)).then(|| pm_registry::proc::live_pid_of(entry));
        if let Some(pid) = live.flatten() {
            self.adopt(Process::new(pid, self.entry.pid_start_time));
            self.stop_child(ProcessState::Disabled).await;
            return;
        }
        self.entry.state = ProcessState::Disabled;
        self.entry.pid = None;
        self.entry.waiting_for.clear();
        self.entry.waiting_since = None;
        self.publish();
    }

    /// The monitor is starting: does what [`decide::at_start`] says of this entry (adopt what still runs, carry on
    /// what was under way, start or leave stopped the rest).
    async fn begin_at_monitor_start(&mut self, start: crate::StartKind) {
        let live = pm_registry::proc::live_pid_of(&self.entry);
        let partner_stopping = match live {
            Some(pid) if self.entry.config.partner => self.partner_stopping(pid).await,
            _ => false,
        };
        let decision = decide::at_start(&self.entry, live.is_some(), partner_stopping, start);
        // Changed only where they are set: an entry left as it is stays shared with the registry it came from.
        let waited = !self.entry.waiting_for.is_empty() || self.entry.waiting_since.is_some();
        if waited && !matches!(decision, AtStart::Adopt { .. } | AtStart::LeavePartner | AtStart::WaitForDependencies) {
            self.entry.waiting_for.clear();
            self.entry.waiting_since = None;
        }
        match decision {
            AtStart::LeavePartner => {
                let pid = live.unwrap_or_default();
                self.entry.pid = None;
                self.entry.last_error = Some(format!("partner (pid {pid}) was shutting down; not adopted"));
                self.entry.state = ProcessState::Stopped;
                self.publish();
            }
            AtStart::Adopt { resume_startup, then_stop } => {
                self.adopt_with(Process::new(live.unwrap_or_default(), self.entry.pid_start_time), resume_startup);
                if then_stop {
                    self.stop_child(ProcessState::Stopped).await;
                }
            }
            AtStart::WaitForDependencies => {
                let since = self.entry.waiting_since;
                self.entry.pid = None;
                // Restart attempts are counted only by crashes (a requested start and a boot reset them): the
                // wait was one of a restart after a crash, and goes on as such.
                if self.entry.restart_attempts > 0 {
                    self.wait_for(since, live_conditions(&self.entry.config.depends_on), true);
                } else {
                    self.wait_for_dependencies(since);
                }
            }
            AtStart::Restart | AtStart::StopUnknownExit => {
                self.entry.pid = None;
                self.entry.last_stopped_at = Some(Timestamp::now());
                if decision == AtStart::Restart {
                    self.entry.last_error = Some("exited while the monitor was not running".to_owned());
                    self.entry.state = ProcessState::Crashed;
                    self.schedule_restart();
                } else {
                    self.entry.last_error =
                        Some("exited while the monitor was not running (exit code unknown)".to_owned());
                    self.entry.state = ProcessState::Stopped;
                    self.publish();
                }
            }
            AtStart::RetryAtCurrentAttempt => {
                self.entry.pid = None;
                self.schedule_retry_at_current_attempt();
            }
            AtStart::Settle { state, start } => {
                if self.entry.pid.is_some() || self.entry.state != state {
                    self.entry.pid = None;
                    self.entry.state = state;
                }
                if start {
                    self.entry.restart_attempts = 0;
                    if self.entry.config.depends_on.is_empty() {
                        let _ = self.spawn_now().await;
                    } else {
                        // The boot requested this start when the monitor started: a job that finished since
                        // (before this task's turn came) counts for `completedSuccessfully`.
                        self.wait_for_dependencies(Some(self.shared.deps.started_at()));
                    }
                } else {
                    self.publish();
                }
            }
        }
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Start(reply) => {
                let res = self.start().await;
                let _ = reply.send(res);
            }
            Cmd::Stop(reply) => {
                let state = self.stop().await;
                let _ = reply.send(Ok(state));
            }
            Cmd::Restart(reply) => {
                if !self.entry.config.enabled {
                    let _ = reply.send(Err(Error::Disabled(self.entry.config.id.clone())));
                    return;
                }
                self.stop().await;
                let _ = reply.send(self.start().await);
            }
            Cmd::SetEnabled(enabled, reply) => {
                self.set_enabled(enabled).await;
                self.config_rev.enabled += 1;
                self.publish();
                let _ = reply.send(Ok(()));
            }
            Cmd::SetAutostart(autostart, reply) => {
                self.entry.config.autostart = autostart;
                self.config_rev.autostart += 1;
                self.publish();
                let _ = reply.send(Ok(()));
            }
            Cmd::UpdateConfig(update) => {
                let (config, base) = *update;
                self.update_config(config, base).await;
            }
            Cmd::Adopt(process) => {
                let process = *process;
                if self.child.is_none() && process.is_running() {
                    self.retry_at = None;
                    self.adopt(process);
                }
            }
            Cmd::DepsPending(pending) => {
                let (gen, waiting_for) = *pending;
                if gen == self.wait_gen && self.is_waiting() && self.entry.waiting_for != waiting_for {
                    self.entry.waiting_for = waiting_for;
                    self.publish();
                }
            }
            Cmd::DepsReady { gen } => {
                if gen == self.wait_gen && self.is_waiting() {
                    self.entry.waiting_for.clear();
                    self.entry.waiting_since = None;
                    tracing::info!(process = %self.entry.config.id, "dependencies met");
                    let after_crash = std::mem::take(&mut self.crash_wait);
                    let _ = self.spawn_now().await;
                    if after_crash {
                        self.restarted_after_crash();
                    }
                }
            }
            Cmd::DepsFailed(failed) => {
                let (gen, reason) = *failed;
                self.on_dependencies_failed(gen, reason);
            }
            Cmd::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    /// A configuration read from the registry (see [`Cmd::UpdateConfig`]): `enabled` and `autostart` keep the
    /// task's value where the task changed them after `base`; a change of `enabled` takes effect at once.
    async fn update_config(&mut self, mut config: ProcessConfig, base: Option<ConfigRevs>) {
        let base = base.unwrap_or(self.config_rev);
        let enabled = if base.enabled == self.config_rev.enabled { config.enabled } else { self.entry.config.enabled };
        if base.autostart != self.config_rev.autostart {
            config.autostart = self.entry.config.autostart;
        }
        config.enabled = self.entry.config.enabled;
        if config.aliveness_check != self.entry.config.aliveness_check {
            // Failures of the old check (a partner that moved to another port, say) do not count
            // against the new one.
            self.entry.consecutive_failures = 0;
        }
        let limits = |config: &ProcessConfig| (config.memory_max_bytes, config.cpu_max_percent, config.pids_max);
        if limits(&config) != limits(&self.entry.config) {
            // A cgroup used again keeps the limits it has: the next run's is made afresh with the new ones.
            self.cgroup_reusable = false;
        }
        self.entry.config = config;
        if enabled != self.entry.config.enabled {
            self.set_enabled(enabled).await;
        }
        self.publish();
    }

    /// Wait `gen` for dependencies failed: `failed` with `reason` (a stale wait is ignored).
    fn on_dependencies_failed(&mut self, gen: u64, reason: String) {
        if gen == self.wait_gen && self.is_waiting() {
            tracing::warn!(process = %self.entry.config.id, "{reason}");
            self.entry.waiting_for.clear();
            self.entry.waiting_since = None;
            self.entry.last_error = Some(reason);
            self.entry.state = ProcessState::Failed;
            if std::mem::take(&mut self.crash_wait) {
                // No restart follows: the cgroup the crashed run left for it goes.
                self.remove_idle_cgroup();
            }
            self.publish();
        }
    }

    /// The restart policy's restart after a crash (its backoff is over). A process whose `started` or `healthy`
    /// dependencies do not hold (a database that went down with it, say) waits for them in `starting`, as a
    /// requested start does, bounded by `dependencyTimeoutMs`; `completedSuccessfully` ones are not asked again
    /// (a one-shot job that ran before the first start is not rerun for a crash of its dependent).
    async fn restart_after_crash(&mut self) {
        let live = live_conditions(&self.entry.config.depends_on);
        if live.is_empty() {
            let _ = self.spawn_now().await;
            self.restarted_after_crash();
        } else {
            self.wait_for(None, live, true);
        }
    }

    /// After a restart after a crash: with `restartDependents`, its dependents under way restart too.
    fn restarted_after_crash(&self) {
        if self.entry.config.restart_dependents && self.child.is_some() {
            self.shared.deps.restarted(&self.entry.config.id);
        }
    }

    async fn start(&mut self) -> Result<ProcessState, Error> {
        if !self.entry.config.enabled {
            return Err(Error::Disabled(self.entry.config.id.clone()));
        }
        if self.child.is_some() {
            return Ok(self.entry.state);
        }
        if self.is_waiting() {
            return Ok(self.entry.state);
        }
        self.retry_at = None;
        self.entry.restart_attempts = 0;
        self.entry.last_error = None;
        self.spawn_or_wait().await.map_err(Error::NotAllowed)?;
        Ok(self.entry.state)
    }

    /// Spawns now, or first waits in `starting` for the `dependsOn` conditions.
    async fn spawn_or_wait(&mut self) -> Result<(), String> {
        if self.entry.config.depends_on.is_empty() {
            self.spawn_now().await
        } else {
            self.wait_for_dependencies(None);
            Ok(())
        }
    }

    /// Waits in `starting` (no child yet) until every dependency's condition holds; `since` is when the start
    /// was requested (now when `None`; kept across a monitor restart).
    fn wait_for_dependencies(&mut self, since: Option<Timestamp>) {
        // A start with dependencies notes when it was requested, before it started them (see `deps`).
        let since = since.or_else(|| self.shared.deps.take_requested(&self.entry.config.id));
        self.wait_for(since, self.entry.config.depends_on.clone(), false);
    }

    /// Waits in `starting` until `conditions` hold; `after_crash`: the wait of a restart after a crash.
    fn wait_for(
        &mut self,
        since: Option<Timestamp>,
        conditions: std::collections::BTreeMap<String, pm_core::DependencyCondition>,
        after_crash: bool,
    ) {
        self.retry_at = None;
        self.wait_gen += 1;
        self.crash_wait = after_crash;
        let since = since.unwrap_or_else(Timestamp::now);
        self.entry.state = ProcessState::Starting;
        self.entry.waiting_since = Some(since);
        self.entry.waiting_for = conditions.clone();
        self.publish();
        self.shared.deps.wait(crate::deps::Wait {
            id: self.entry.config.id.clone(),
            gen: self.wait_gen,
            since,
            depends_on: conditions,
            timeout: Duration::from_millis(self.entry.config.dependency_timeout_ms()),
        });
    }

    /// Whether it waits for its dependencies (`starting` without a child).
    fn is_waiting(&self) -> bool {
        self.child.is_none() && self.entry.state == ProcessState::Starting && self.entry.waiting_since.is_some()
    }

    /// Ends a wait for dependencies (a stop or disable came first).
    fn cancel_wait(&mut self) {
        self.wait_gen += 1;
        self.crash_wait = false;
        self.entry.waiting_for.clear();
        self.entry.waiting_since = None;
    }

    /// Stops whatever runs or waits; answers the resulting state.
    async fn stop(&mut self) -> ProcessState {
        // A stop of a start still waiting for its dependencies is a stop all the same: recorded, so that a monitor
        // killed later does not take an autostart process stopped this way for one registered and never run
        // since, and start it (`decide::at_start`).
        if self.is_waiting() {
            self.entry.last_stopped_at = Some(Timestamp::now());
        }
        self.retry_at = None;
        self.forget_runs();
        self.cancel_wait();
        let target = if self.entry.config.enabled { ProcessState::Stopped } else { ProcessState::Disabled };
        if self.child.is_some() {
            self.stop_child(target).await;
        } else {
            self.remove_idle_cgroup();
            if self.entry.state != target {
                self.entry.state = target;
                self.publish();
            }
        }
        self.entry.state
    }

    /// Removes the (empty) cgroup a crashed run left for its restart, once no restart follows; at the monitor's
    /// shutdown the shutdown removes it, with every other one, once all children are gone.
    fn remove_idle_cgroup(&self) {
        if self.stopping_all() {
            return;
        }
        if let Some(dir) = self.cgroup_dir() {
            crate::cgroup::remove_empty(&dir);
        }
    }

    /// Whether the monitor is stopping every process ([`crate::Supervisor::shutdown`]).
    fn stopping_all(&self) -> bool {
        self.shared.stopping_all.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn set_enabled(&mut self, enabled: bool) {
        self.entry.config.enabled = enabled;
        if enabled {
            if self.entry.state == ProcessState::Disabled {
                self.entry.state = ProcessState::Stopped;
            }
        } else {
            self.retry_at = None;
            self.cancel_wait();
            if self.child.is_some() {
                self.stop_child(ProcessState::Disabled).await;
            } else {
                self.remove_idle_cgroup();
            }
            self.entry.state = ProcessState::Disabled;
        }
    }

    /// SIGTERM, grace, SIGKILL; then `target`.
    async fn stop_child(&mut self, target: ProcessState) {
        self.entry.state = ProcessState::Stopping;
        self.publish();
        let info = self.terminate().await;
        self.record_exit(&info);
        self.entry.state = target;
        self.publish();
    }

    /// Ends the child's process group: SIGTERM to the group, up to the stop timeout for the leader and the rest
    /// of the group to exit, then SIGKILL to whatever is left. Returns how the leader ended.
    async fn terminate(&mut self) -> ExitInfo {
        let grace = Duration::from_millis(self.entry.config.stop_timeout_ms());
        self.terminate_within(grace).await
    }

    /// Like [`Actor::terminate`] with the given grace; zero sends SIGKILL at once.
    async fn terminate_within(&mut self, grace: Duration) -> ExitInfo {
        self.cancel_check();
        self.reset_at = None;
        let Some(mut child) = self.child.take() else {
            return ExitInfo { code: None, signal: None };
        };
        self.memory_at = None;
        let deadline = Instant::now() + grace;
        let pgid = child.pid;
        let leader = Process::new(pgid, self.entry.pid_start_time);
        let cgroup = child.cgroup.clone();
        let carriers = self.carrier_key();
        if grace.is_zero() {
            os::signal_leader(leader, libc::SIGKILL);
        } else {
            os::signal_leader(leader, libc::SIGTERM);
            // A stopped (SIGSTOP) process only acts on SIGTERM once continued.
            os::signal_leader(leader, libc::SIGCONT);
            // When many processes stop at once (the monitor's shutdown), the groups get their SIGTERM first and the
            // tasks read their cgroups and `/proc` for the rest after.
            tokio::task::yield_now().await;
            // Processes that left the group (a double fork, setsid) get the same graceful stop.
            if let Some(cgroup) = &cgroup {
                cgroup.signal_members_outside(pgid, &[libc::SIGTERM, libc::SIGCONT]);
            }
            if let Some((owner, id)) = carriers.clone() {
                let _ = tokio::task::spawn_blocking(move || {
                    crate::cgroup::signal_carriers_outside(&owner, &id, pgid, libc::SIGTERM)
                })
                .await;
            }
        }
        let info = self.wait_or_kill(&mut child, leader, deadline, grace).await;
        self.shared.owned.lock().expect("owned lock").remove(&pgid);
        // The leader is gone; give the rest of its group (and of its cgroup) the remaining grace, then kill it.
        crate::groupwait::wait_group_gone(pgid, deadline).await;
        // Whether the cgroup still holds anything: read once, and again only while it does.
        let mut populated = cgroup.as_ref().is_some_and(ProcCgroup::populated);
        if let Some(cgroup) = cgroup.as_ref().filter(|_| populated) {
            let mut pause = Duration::from_millis(10);
            while populated && Instant::now() < deadline {
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
                pause = (pause * 2).min(Duration::from_millis(100));
                populated = cgroup.populated();
            }
        }
        if os::group_exists(pgid) {
            os::signal_group(pgid, libc::SIGKILL);
        }
        match cgroup.as_ref() {
            // Empty, and nothing can enter a cgroup none of whose members is left to fork: at the monitor's
            // shutdown it stays until every child is gone (the shutdown removes it), otherwise it goes now.
            Some(cgroup) if !populated => {
                if !self.stopping_all() {
                    cgroup.remove();
                }
                self.kill_leftovers(None, carriers, Some(deadline)).await;
            }
            cgroup => self.kill_leftovers(cgroup, carriers, Some(deadline)).await,
        }
        self.running_since = None;
        info
    }

    /// Waits until `deadline` for the child to exit after its SIGTERM; then kills its cgroup and group. Returns how
    /// the leader ended.
    async fn wait_or_kill(
        &mut self,
        child: &mut Child,
        leader: Process,
        deadline: Instant,
        grace: Duration,
    ) -> ExitInfo {
        let pgid = child.pid;
        let cgroup = child.cgroup.as_ref();
        match tokio::time::timeout_at(deadline, child.watch.wait()).await {
            Ok(info) => info,
            Err(_) => {
                tracing::warn!(process = %self.entry.config.id, pid = pgid, "did not stop in {grace:?}; killing its process group");
                if let Some(cgroup) = cgroup {
                    cgroup.kill_now();
                }
                if os::signal_leader(leader, libc::SIGKILL) {
                    // Delivered: it ends (a process in uninterruptible sleep only later); until then it is
                    // still ours, and no second copy may start.
                    child.watch.wait().await
                } else {
                    match tokio::time::timeout(KILL_WAIT, child.watch.wait()).await {
                        Ok(info) => info,
                        Err(_) => {
                            // Cannot be signalled (another user's process, say): report it rather than wait forever.
                            tracing::error!(process = %self.entry.config.id, pid = pgid, "cannot be killed; no longer supervised");
                            self.set_error(&format!("pid {pgid} could not be killed; left running"));
                            ExitInfo { code: None, signal: None }
                        }
                    }
                }
            }
        }
    }

    /// The owner key and process id whose carriers are killed at a stop (the process-group fallback).
    fn carrier_key(&self) -> Option<(String, String)> {
        (self.shared.kill_carriers && !self.entry.config.partner)
            .then(|| (self.shared.owner.clone(), self.entry.config.id.clone()))
    }

    /// After the leader is gone: kills whatever is left in its cgroup and removes the cgroup; in the process-group
    /// fallback, waits for the processes carrying its owner key until `deadline` (if any), then kills them.
    async fn kill_leftovers(
        &self,
        cgroup: Option<&ProcCgroup>,
        carriers: Option<(String, String)>,
        deadline: Option<Instant>,
    ) {
        if let Some(cgroup) = cgroup {
            if self.stopping_all() {
                cgroup.kill_and_wait(KILL_WAIT).await;
            } else {
                cgroup.kill_and_remove(KILL_WAIT).await;
            }
        }
        let Some((owner, id)) = carriers else { return };
        let mut pause = Duration::from_millis(20);
        while deadline.is_some_and(|deadline| Instant::now() < deadline) {
            let (owner, id) = (owner.clone(), id.clone());
            let left = tokio::task::spawn_blocking(move || crate::cgroup::carriers(&owner, &id)).await;
            if left.map_or(true, |left| left.is_empty()) {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        let killed = tokio::task::spawn_blocking(move || crate::cgroup::signal_carriers(&owner, &id, libc::SIGKILL))
            .await
            .unwrap_or(0);
        if killed > 0 {
            tracing::info!(process = %self.entry.config.id, killed, "killed processes that had left its process group");
        }
    }

    /// The cgroup of this process, when it has one (never for a partner monitor).
    fn cgroup_dir(&self) -> Option<std::path::PathBuf> {
        if self.entry.config.partner {
            return None;
        }
        self.shared.containment.dir(&self.entry.config.id)
    }

    fn schedule_memory(&mut self) {
        self.memory_over = 0;
        self.memory_at = self.entry.config.memory_restart_bytes.map(|_| Instant::now() + MEMORY_EVERY);
    }

    /// One memory sample against `memoryRestartBytes`: the second in a row above it restarts the process.
    async fn check_memory(&mut self) {
        self.memory_at = None;
        let (Some(limit), Some(child)) = (self.entry.config.memory_restart_bytes, self.child.as_ref()) else { return };
        let (cgroup, pgid) = (child.cgroup.clone(), child.pid);
        let used = tokio::task::spawn_blocking(move || match cgroup {
            Some(cgroup) => cgroup.memory_bytes(),
            None => crate::resources::group_memory(&[pgid]).get(&pgid).copied().unwrap_or(0),
        })
        .await
        .unwrap_or(0);
        let over = if used > limit { self.memory_over + 1 } else { 0 };
        if over < 2 {
            self.memory_at = Some(Instant::now() + MEMORY_EVERY);
            self.memory_over = over;
            return;
        }
        let reason = format!(
            "memory use {used} bytes stayed above memoryRestartBytes ({limit} bytes) for two samples; restarted"
        );
        tracing::warn!(process = %self.entry.config.id, "{reason}");
        // The reason is published with `stopping`: a reader sees why before the new child runs.
        self.entry.last_error = Some(reason);
        self.entry.state = ProcessState::Stopping;
        self.publish();
        let info = self.terminate().await;
        self.record_exit(&info);
        self.counters.restarts += 1;
        let _ = self.spawn_now().await;
    }

    fn adopt(&mut self, process: Process) {
        self.adopt_with(process, false);
    }

    /// Adopts `pid`; with `resume_startup`, it runs its startup checks (if it has any) before it counts as up,
    /// without being reported `running` meanwhile.
    fn adopt_with(&mut self, process: Process, resume_startup: bool) {
        let Process { pid, start_time } = process;
        tracing::info!(process = %self.entry.config.id, pid, "adopted running process");
        let run_dir = self.newest_run_dir();
        let cgroup = self.cgroup_dir().and_then(ProcCgroup::existing);
        let watch = match &cgroup {
            // A tracked daemon whose leader is long gone: the process lives as long as its cgroup holds any.
            Some(cgroup)
                if self.entry.config.track_daemonized_children
                    && pm_registry::proc::family(pid).is_some_and(|family| family.pgrp != pid) =>
            {
                Watch::Daemons(cgroup.clone())
            }
            _ => Watch::Adopted(ExitWatch::new(process)),
        };
        self.child = Some(Box::new(Child { pid, watch, run_dir, cgroup }));
        self.schedule_rotation();
        self.schedule_memory();
        self.watch_logs();
        self.entry.pid = Some(pid);
        self.entry.pid_start_time = start_time;
        self.running_since = Some(std::time::Instant::now());
        self.enter_startup_or_running(self.startup_check().filter(|_| resume_startup));
    }

    /// Spawns the process now (state `starting`, or `running` without startup checks); a failure to spawn
    /// goes down the crash path with the reason kept on the entry. An untrusted registration whose executable
    /// no longer passes the whitelist and blacklist is not started: it is `failed` with the reason in
    /// `lastError`, which is also the error returned.
    async fn spawn_now(&mut self) -> Result<(), String> {
        if self.entry.config.partner {
            if let Some(partner) = self.shared.live_partner(&self.entry.config.id) {
                // Nothing to launch: a turn taken as the task began is not held across the partner's status check.
                self.turn = None;
                self.adopt_live_partner(partner).await;
                return Ok(());
            }
        }
        let checked = self.check_untrusted_executable()?;
        // Before anything of the launch is built (see `launch::turn`); the first step may have taken it already.
        // Held until the launch's outcome is here (or its job panicked).
        let _turn = match self.turn.take() {
            Some(turn) => turn,
            None => crate::launch::turn().await,
        };
        let now = Timestamp::now();
        let cgroup_dir = self.cgroup_dir();
        // Kept for the next launch while the process restarts after crashes (its attempts counted), not for a
        // process started once, which would keep them for nothing.
        let kept = std::mem::take(&mut self.runs_kept);
        let runs = crate::launch::Runs { kept, keep: self.entry.restart_attempts > 0 };
        let (shared, entry) = (&self.shared, self.entry.arc());
        let reuse = &mut self.cgroup_reusable;
        let launch = crate::launch::launch(shared, entry, checked, cgroup_dir, reuse, now, runs);
        let res = Box::pin(launch).await;
        self.entry.last_started_at = Some(now);
        match res {
            Ok(spawned) => self.on_spawned(spawned),
            Err(err) => self.on_spawn_failed(&err),
        }
        Ok(())
    }

    /// A partner monitor found running instead of spawned: adopted, unless it is shutting down.
    async fn adopt_live_partner(&mut self, partner: Process) {
        let pid = partner.pid;
        if self.partner_stopping(pid).await {
            // Shutting down (a `--stop` or a self-restart): adopting it would take its exit for a crash
            // and undo the stop. Left alone; a partner that comes back is adopted by the partner check.
            tracing::info!(process = %self.entry.config.id, pid, "the partner is shutting down; not adopted");
            self.retry_at = None;
            self.entry.pid = None;
            self.entry.last_error = Some(format!("partner (pid {pid}) was shutting down; not adopted"));
            self.entry.state = ProcessState::Stopped;
            self.publish();
            return;
        }
        self.adopt(partner);
    }

    /// For an untrusted registration, its executable checked against the whitelist and blacklist now (the file
    /// to run from); one that no longer passes leaves the process `failed` with the reason, which is the error.
    fn check_untrusted_executable(&mut self) -> Result<Option<crate::execcheck::Checked>, String> {
        if !self.entry.config.untrusted {
            return Ok(None);
        }
        let policy = self.shared.exec_policy.read().expect("exec policy").clone();
        match crate::execcheck::check(&self.entry.config.command, &policy) {
            Ok(checked) => Ok(Some(checked)),
            Err(reason) => {
                tracing::warn!(process = %self.entry.config.id, "not started: {reason}");
                self.retry_at = None;
                self.entry.pid = None;
                self.set_error(&reason);
                self.entry.state = ProcessState::Failed;
                self.publish();
                Err(reason)
            }
        }
    }

    /// The child runs (its old run folders go on the spawner thread): it is `starting` or `running`.
    fn on_spawned(&mut self, spawned: crate::launch::Launched) {
        let crate::launch::Launched { watch, pid, run_dir, cgroup, start_time, runs_kept } = spawned;
        tracing::info!(process = %self.entry.config.id, pid, "started");
        self.runs_kept = runs_kept;
        self.entry.pid = Some(pid);
        // Told by the clone where it could (no read of the child's `/proc` files at every start, nor the
        // kernel's clean-up of what that read looked up at its exit; issue 19).
        self.entry.pid_start_time = start_time.or_else(|| pm_registry::proc::start_time(pid));
        self.entry.consecutive_failures = 0;
        self.child = Some(Box::new(Child { pid, watch, run_dir: Some(run_dir), cgroup }));
        self.schedule_rotation();
        self.schedule_memory();
        self.watch_logs();
        self.running_since = Some(std::time::Instant::now());
        self.enter_startup_or_running(self.startup_check());
    }

    /// Forgets the run folders the last launch kept for the next one (at a stop, at the reset of the attempts).
    fn forget_runs(&mut self) {
        if std::mem::take(&mut self.runs_kept) {
            crate::launch::forget_runs(&self.shared, &self.entry.config.id);
        }
    }

    /// The child could not start: a crash, with the reason kept and at least [`SPAWN_FAILURE_PAUSE`] before the
    /// next attempt.
    fn on_spawn_failed(&mut self, err: &std::io::Error) {
        tracing::warn!(process = %self.entry.config.id, "{err}");
        self.entry.pid = None;
        self.set_error(&err.to_string());
        self.entry.state = ProcessState::Crashed;
        self.schedule_restart();
        // A spawn that failed will not succeed a moment later: whatever the backoff says, wait a little,
        // so that a zero delay cannot turn into a busy loop.
        if let Some(at) = self.retry_at.as_mut() {
            *at = (*at).max(Instant::now() + SPAWN_FAILURE_PAUSE);
        }
    }

    /// Keeps `reason` as `lastError`, with control characters escaped (it reaches logs and terminals).
    fn set_error(&mut self, reason: &str) {
        self.entry.last_error = Some(pm_core::escape_control(reason).into_owned());
    }

    /// Whether the partner instance `pid` (holding its lock) reports itself stopping on its `/status`.
    async fn partner_stopping(&self, pid: u32) -> bool {
        let Some(url) = self
            .entry
            .config
            .aliveness_check
            .as_ref()
            .and_then(|check| crate::partner::status_url_of_check(&check.url))
        else {
            return false;
        };
        crate::partner::reported_state(&self.shared.http, &url, pid).await == Some(pm_core::MonitorState::Stopping)
    }

    /// The newest run folder of this process (where an adopted process is logging).
    fn newest_run_dir(&self) -> Option<std::path::PathBuf> {
        self.shared.paths.newest_run_dir(&self.entry.config.id)
    }

    fn schedule_rotation(&mut self) {
        self.rotate_at = self.entry.config.log_max_bytes.map(|_| Instant::now() + ROTATE_EVERY);
    }

    /// Watches the logs of the child's run folder for writes when `logMaxBytes` is set.
    fn watch_logs(&mut self) {
        let run_dir = self.child.as_ref().and_then(|child| child.run_dir.as_deref());
        self.log_watch = match (self.entry.config.log_max_bytes, run_dir) {
            (Some(_), Some(dir)) => Some(crate::watch::LogWatch::new(dir)),
            _ => None,
        };
    }

    /// The earliest a rotation pass may run (at most one per [`MIN_ROTATE_GAP`]).
    fn soonest_rotation(&self) -> Instant {
        let now = Instant::now();
        self.last_rotation.map_or(now, |at| (at + MIN_ROTATE_GAP).max(now))
    }

    /// Rotates the current run's logs that grew past `logMaxBytes`.
    async fn rotate_logs(&mut self) {
        self.rotate_at = None;
        let (Some(max), Some(run_dir)) =
            (self.entry.config.log_max_bytes, self.child.as_ref().and_then(|child| child.run_dir.clone()))
        else {
            return;
        };
        let keep = self.entry.config.log_keep.unwrap_or(3);
        let id = self.entry.config.id.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for name in ["stdout.log", "stderr.log"] {
                match crate::logrotate::rotate_if_needed(&run_dir.join(name), max, keep) {
                    Ok(crate::logrotate::Rotated::Truncated) => {
                        tracing::debug!(process = %id, "{name} rotated by copy-and-truncate")
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(process = %id, "cannot rotate {name}: {err}"),
                }
            }
        })
        .await;
        self.last_rotation = Some(Instant::now());
        if self.child.is_some() {
            self.schedule_rotation();
        } else {
            self.log_watch = None;
        }
    }

    fn startup_check(&self) -> Option<Duration> {
        let check = self.entry.config.aliveness_check.as_ref().filter(|check| check.enabled)?;
        let startup = check.startup_check.as_ref().filter(|startup| startup.enabled)?;
        Some(Duration::from_millis(startup.initial_delay_ms))
    }

    /// A process just started: state `starting` with the first startup check after `startup` (its initial delay),
    /// or `running` when there are no startup checks.
    fn enter_startup_or_running(&mut self, startup: Option<Duration>) {
        match startup {
            Some(initial_delay) => {
                self.entry.state = ProcessState::Starting;
                self.phase = Phase::Startup { attempts: 0 };
                self.check_at = Some(Instant::now() + initial_delay);
                self.publish();
            }
            None => self.enter_running(),
        }
    }

    fn enter_running(&mut self) {
        self.entry.state = ProcessState::Running;
        // The reset of the restart attempts after `resetAfterMs` of running: a timer only when there are attempts
        // to reset (each is about 110 B that a running process kept for nothing; nothing else changes them while
        // it runs).
        let policy = self.entry.config.restart_policy();
        self.reset_at =
            (self.entry.restart_attempts != 0).then(|| Instant::now() + Duration::from_millis(policy.reset_after_ms));
        match self.entry.config.aliveness_check.as_ref().filter(|check| check.enabled) {
            Some(check) => {
                self.phase = Phase::Alive;
                self.check_at = Some(Instant::now() + Duration::from_millis(check.interval_ms));
            }
            None => {
                self.phase = Phase::Idle;
                self.check_at = None;
            }
        }
        self.publish();
    }

    async fn on_unrequested_exit(&mut self, info: ExitInfo) {
        let Some(child) = self.child.take() else { return };
        let pid = Some(child.pid);
        self.shared.owned.lock().expect("owned lock").remove(&child.pid);
        let Some(child) = self.follow_daemonized_children(child, &info) else { return };
        self.cancel_check();
        self.reset_at = None;
        self.memory_at = None;
        self.running_since = None;
        self.record_exit(&info);
        let how = match (info.code, info.signal) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "exited".to_owned(),
        };
        // Read before the leftovers are killed: the kill does not count as the kernel's OOM kill.
        let oom = child.cgroup.as_ref().and_then(ProcCgroup::oom_error);
        self.kill_remains_of(&child).await;
        if self.ended_without_restart(&info, pid, &how, oom.as_deref()) {
            return;
        }
        tracing::warn!(process = %self.entry.config.id, pid, "{how}");
        self.set_error(&format!("process {how}"));
        if let Some(oom) = &oom {
            self.set_error(oom);
        }
        self.crash();
    }

    /// With `trackDaemonizedChildren`, a leader that exited 0 leaving members in its cgroup forked a daemon and
    /// returned: the process runs on as those members, now watched (`None`). Otherwise the exited `child` back.
    fn follow_daemonized_children(&mut self, child: Box<Child>, info: &ExitInfo) -> Option<Box<Child>> {
        let Some(cgroup) = child.cgroup.as_ref().filter(|_| self.entry.config.track_daemonized_children) else {
            return Some(child);
        };
        if info.code != Some(0) || matches!(child.watch, Watch::Daemons(_)) || !cgroup.populated() {
            return Some(child);
        }
        let Some(Process { pid: member, start_time }) = cgroup.first_member() else { return Some(child) };
        tracing::info!(process = %self.entry.config.id, pid = member, "leader exited 0; tracking its daemonized children");
        self.entry.last_exit_code = Some(0);
        self.entry.pid = Some(member);
        self.entry.pid_start_time = start_time;
        let cgroup = cgroup.clone();
        self.child = Some(Box::new(Child {
            pid: member,
            watch: Watch::Daemons(cgroup.clone()),
            run_dir: child.run_dir,
            cgroup: Some(cgroup),
        }));
        self.publish();
        None
    }

    /// Kills what is left of an exited child: its process group, and whatever remains in its cgroup.
    async fn kill_remains_of(&mut self, child: &Child) {
        // Orphans of the leader would otherwise outlive it (and hold its ports).
        let pgid = child.pid;
        if os::group_exists(pgid) {
            os::signal_group(pgid, libc::SIGKILL);
        }
        // The owner key is for stops only: an exit kills the group (and what is left in the cgroup), as without
        // containment.
        if let Some(cgroup) = &child.cgroup {
            self.cgroup_reusable = cgroup.kill_leftovers(KILL_WAIT).await;
        }
    }

    /// Ends the process without a restart where `restartOn` says an exit is not a crash: a job done (`stopped`), an
    /// adopted process with its exit code unknown (`stopped`), or any exit under `never` (`failed`). `how` says how
    /// it exited, `oom` the out-of-memory kill if there was one (`pid`: the leader, for the log). `false` when the exit is a crash.
    fn ended_without_restart(&mut self, info: &ExitInfo, pid: Option<u32>, how: &str, oom: Option<&str>) -> bool {
        let restart_on = self.entry.config.restart_policy.as_ref().map(|policy| policy.restart_on).unwrap_or_default();
        match (restart_on, info.code, info.signal) {
            (RestartOn::Failure | RestartOn::Never, Some(0), _) => {
                // A job that finished: done, not a crash.
                tracing::info!(process = %self.entry.config.id, pid, "completed (exit code 0)");
                self.entry.last_error = None;
                self.entry.state = ProcessState::Stopped;
            }
            (RestartOn::Failure | RestartOn::Never, None, None) => {
                // An adopted process: its exit code is not known, so it is neither restarted nor counted as done.
                self.entry.last_error = Some("exited (exit code unknown: adopted after a monitor restart)".to_owned());
                self.entry.state = ProcessState::Stopped;
            }
            (RestartOn::Never, _, _) => {
                tracing::warn!(process = %self.entry.config.id, pid, "{how}; not restarted (restartOn never)");
                self.set_error(&format!("process {how} (restartOn never)"));
                if let Some(oom) = oom {
                    self.set_error(oom);
                }
                self.entry.state = ProcessState::Failed;
            }
            _ => return false,
        }
        self.publish();
        true
    }

    fn record_exit(&mut self, info: &ExitInfo) {
        self.entry.pid = None;
        self.entry.pid_start_time = None;
        self.entry.last_exit_code = info.code;
        self.entry.last_signal = info.signal;
        self.entry.last_stopped_at = Some(Timestamp::now());
    }

    /// The crash path: `retrying` with the next backoff delay, or `failed` once the attempts are used up.
    fn schedule_restart(&mut self) {
        self.decide_restart();
        self.publish();
    }

    /// A crash (the exit or the kill already recorded, `lastError` set): `crashed`, then `retrying` or `failed`
    /// ([`Actor::schedule_restart`]) in one publish, with the events of both state changes in order. Published
    /// one after the other, each change copied the entry (the snapshot shared it), woke the registry writer and the
    /// dependency waiters, and the `crashed` snapshot was replaced a moment later (issue 19, the crash storm).
    fn crash(&mut self) {
        self.entry.state = ProcessState::Crashed;
        let mut events = crate::events::changes(&self.publish.borrow().entry, &self.entry, None);
        self.decide_restart();
        let retry_in = self.retry_at.map(|at| at.saturating_duration_since(Instant::now()));
        events.extend(crate::events::state_change(ProcessState::Crashed, None, &self.entry, retry_in));
        self.publish_with(events);
    }

    /// [`Actor::schedule_restart`]'s decision, not published yet.
    fn decide_restart(&mut self) {
        let policy = self.entry.config.restart_policy();
        match next_restart(&policy, self.entry.restart_attempts) {
            RestartDecision::RetryAfterMs(delay) => {
                self.entry.restart_attempts = self.entry.restart_attempts.saturating_add(1);
                self.counters.restarts += 1;
                self.entry.state = ProcessState::Retrying;
                self.retry_at = Some(Instant::now() + Duration::from_millis(delay));
            }
            RestartDecision::GiveUp => {
                self.entry.state = ProcessState::Failed;
                self.retry_at = None;
                self.remove_idle_cgroup();
            }
        }
    }

    /// After a monitor restart in `retrying`: wait the delay of the attempt already counted.
    fn schedule_retry_at_current_attempt(&mut self) {
        let policy = self.entry.config.restart_policy();
        let attempt = self.entry.restart_attempts.saturating_sub(1);
        let delay = match next_restart(&policy, attempt) {
            RestartDecision::RetryAfterMs(delay) => delay,
            RestartDecision::GiveUp => 0,
        };
        self.entry.state = ProcessState::Retrying;
        self.retry_at = Some(Instant::now() + Duration::from_millis(delay));
        self.publish();
    }

    fn launch_check(&mut self) {
        let Some(check) = self.entry.config.aliveness_check.clone() else {
            self.check_at = None;
            return;
        };
        let interval = match self.phase {
            Phase::Startup { .. } => {
                check.startup_check.as_ref().map(|startup| startup.check_interval_ms).unwrap_or(check.interval_ms)
            }
            _ => check.interval_ms,
        };
        self.check_at = Some(Instant::now() + Duration::from_millis(interval.max(1)));
        let http = self.shared.http.clone();
        let timeout = Duration::from_millis(check.timeout_ms.max(1));
        let ctx = crate::probe::ExecContext {
            default_cwd: self.shared.default_cwd.clone(),
            extra_env: self.shared.extra_env.clone(),
            config: self.entry.config.clone(),
        };
        let untrusted = self.entry.config.untrusted;
        self.check_task = Some(tokio::spawn(async move {
            let started = std::time::Instant::now();
            // An untrusted registration's HTTP check stays on loopback (also when the registry was edited since),
            // and a failure is reported only once the check's timeout is over, so that when it fails does not
            // tell a closed port from one that does not answer HTTP.
            let loopback = check.probe_type != pm_core::ProbeType::Http || pm_core::url_is_loopback(&check.url);
            let passed = (!untrusted || loopback) && crate::probe::run(&http, &check, &ctx, timeout).await;
            if untrusted && !passed {
                tokio::time::sleep_until(Instant::from_std(started) + timeout).await;
            }
            (passed, started.elapsed())
        }));
    }

    async fn on_check(&mut self, passed: bool) {
        let Some(check) = self.entry.config.aliveness_check.clone() else { return };
        match self.phase {
            Phase::Idle => {}
            Phase::Startup { attempts } => {
                if passed {
                    self.entry.consecutive_failures = 0;
                    self.enter_running();
                    return;
                }
                let attempts = attempts + 1;
                let startup = check.startup_check.clone().unwrap_or_default();
                if attempts < startup.max_attempts.max(1) {
                    self.phase = Phase::Startup { attempts };
                    return;
                }
                let reason = format!("startup check failed {attempts} times ({})", check.target());
                tracing::warn!(process = %self.entry.config.id, "{reason}; action {:?}", startup.fail_action);
                let info = if self.entry.config.partner {
                    self.terminate_within(Duration::ZERO).await
                } else {
                    self.terminate().await
                };
                self.record_exit(&info);
                self.set_error(&reason);
                match startup.fail_action {
                    FailAction::Restart => self.crash(),
                    FailAction::Disable => {
                        self.entry.config.enabled = false;
                        self.entry.state = ProcessState::Disabled;
                        self.config_rev.enabled += 1;
                        self.publish();
                    }
                    FailAction::Fail => {
                        self.entry.state = ProcessState::Failed;
                        self.publish();
                    }
                }
            }
            Phase::Alive => {
                if passed {
                    if self.entry.consecutive_failures != 0 {
                        self.entry.consecutive_failures = 0;
                        self.publish();
                    }
                    return;
                }
                self.entry.consecutive_failures += 1;
                let failures = self.entry.consecutive_failures;
                if failures < check.consecutive_failures_required.max(1) {
                    self.publish();
                    return;
                }
                let reason = format!("aliveness check failed {failures} times in a row ({})", check.target());
                tracing::warn!(process = %self.entry.config.id, "{reason}; killing its process group");
                // A hung partner monitor is killed outright: a graceful shutdown would stop the processes it
                // manages, which its replacement adopts instead.
                let info = if self.entry.config.partner {
                    self.terminate_within(Duration::ZERO).await
                } else {
                    self.terminate().await
                };
                self.record_exit(&info);
                self.set_error(&reason);
                self.crash();
            }
        }
    }

    /// For the check event of a result: failures in a row with this one (`Some(0)` for a pass that ends a streak
    /// or a startup phase; `None` for a pass of a healthy process, which makes no event).
    fn check_streak(&self, passed: bool) -> Option<u32> {
        match (&self.phase, passed) {
            (Phase::Startup { attempts }, false) => Some(attempts + 1),
            (Phase::Startup { .. }, true) => Some(0),
            (_, false) => Some(self.entry.consecutive_failures + 1),
            (_, true) => (self.entry.consecutive_failures > 0).then_some(0),
        }
    }

    fn cancel_check(&mut self) {
        if let Some(task) = self.check_task.take() {
            task.abort();
        }
        self.check_at = None;
        self.phase = Phase::Idle;
    }

    /// Whether the task's entry and `snapshot`'s are one allocation (for the footprint test).
    #[cfg(test)]
    pub(crate) fn shares_entry_with(&self, snapshot: &Snapshot) -> bool {
        self.entry.shares(&snapshot.entry)
    }

    /// Changes the entry's state and publishes it (for the footprint test).
    #[cfg(test)]
    pub(crate) fn publish_state(&mut self, state: ProcessState) {
        self.entry.state = state;
        self.publish();
    }

    fn publish(&mut self) {
        let retry_in = self.retry_at.map(|at| at.saturating_duration_since(Instant::now()));
        let events = crate::events::changes(&self.publish.borrow().entry, &self.entry, retry_in);
        self.publish_with(events);
    }

    /// Publishes the entry as it is now, with `events` (the changes since the last publish).
    fn publish_with(&mut self, events: Vec<pm_core::EventKind>) {
        let depends_on_changed = {
            let before = self.publish.borrow();
            !self.entry.shares(&before.entry) && before.entry.config.depends_on != self.entry.config.depends_on
        };
        if depends_on_changed {
            self.shared.deps.note_dependencies(&self.entry.config.id, &self.entry.config.depends_on);
        }
        let snapshot = Snapshot {
            entry: self.entry.arc().clone(),
            config_rev: self.config_rev,
            running_since: self.running_since,
            counters: self.counters,
        };
        self.publish.send_replace(snapshot);
        self.shared.changed.notify_one();
        self.shared.deps.changed();
        crate::events::emit(&self.shared, &self.entry, events);
    }
}

async fn wait_child(child: &mut Option<Box<Child>>) -> ExitInfo {
    let Some(child) = child else { return std::future::pending().await };
    if let Watch::Forked(forked) = &mut child.watch {
        // The usual child (cloned into its cgroup): polled, with no future kept for the wait.
        let (code, signal) = std::future::poll_fn(|cx| forked.poll_wait(cx)).await;
        return ExitInfo { code, signal };
    }
    Box::pin(child.watch.wait()).await
}

impl Watch {
    async fn wait(&mut self) -> ExitInfo {
        match self {
            Watch::Own(child) => match child.wait().await {
                Ok(status) => ExitInfo { code: status.code(), signal: status.signal() },
                Err(err) => {
                    tracing::error!("waiting for child failed: {err}");
                    ExitInfo { code: None, signal: None }
                }
            },
            Watch::Adopted(watch) => {
                watch.wait().await;
                ExitInfo { code: None, signal: None }
            }
            Watch::Daemons(cgroup) => {
                cgroup.wait_empty().await;
                ExitInfo { code: None, signal: None }
            }
            Watch::Forked(forked) => {
                let (code, signal) = forked.wait().await;
                ExitInfo { code, signal }
            }
        }
    }
}

// The waits of `next_event` that only some processes have (a child, a deadline, a log watch) are boxed while they
// are under way: the task's future keeps every branch of its `select!` side by side for the process's whole life,
// and a process that is registered and not running would keep about 580 B of waits it never makes.

async fn logs_written(watch: Option<&crate::watch::LogWatch>) {
    match watch {
        Some(watch) => Box::pin(watch.written()).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => Box::pin(tokio::time::sleep_until(at)).await,
        None => std::future::pending().await,
    }
}

async fn join_check(task: &mut Option<JoinHandle<(bool, Duration)>>) -> (bool, Duration) {
    let Some(handle) = task else { return std::future::pending().await };
    let passed = handle.await.unwrap_or((false, Duration::ZERO));
    *task = None;
    passed
}

/// The `started` and `healthy` conditions of `depends_on`: what a restart after a crash waits for.
fn live_conditions(
    depends_on: &std::collections::BTreeMap<String, pm_core::DependencyCondition>,
) -> std::collections::BTreeMap<String, pm_core::DependencyCondition> {
    depends_on
        .iter()
        .filter(|(_, condition)| **condition != pm_core::DependencyCondition::CompletedSuccessfully)
        .map(|(id, condition)| (id.clone(), *condition))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use pm_core::{ProcessConfig, ProcessEntry, ProcessState, Timestamp};

    use super::{Actor, Cmd};

    /// A crash is published once (the registry writer and the dependency waiters woken once, the entry copied
    /// once), with its three events in order: `running → crashed`, `crashed → retrying`, `restartScheduled`.
    /// Published as two changes before, the storm's restarts paid for a second snapshot each (issue 19).
    #[tokio::test]
    async fn a_crash_is_one_publish_with_both_state_changes() {
        let (dir, sup, mut actor, snapshot) = lone_actor("pm-crash-publish");
        let shared = sup.shared().clone();
        actor.publish_state(ProcessState::Running);
        let (publishes, first) = (shared.deps.generation(), next_seq(&shared));
        actor.record_exit(&super::ExitInfo { code: Some(3), signal: None });
        actor.set_error("process exited with code 3");
        actor.crash();
        assert_eq!(shared.deps.generation().wrapping_sub(publishes), 1, "a crash was published more than once");
        assert_eq!(snapshot.borrow().entry.state, ProcessState::Retrying);
        assert_eq!(snapshot.borrow().entry.restart_attempts, 1);
        assert!(actor.shares_entry_with(&snapshot.borrow()));
        // The events between the two probes: two state changes and the scheduled restart.
        assert_eq!(next_seq(&shared) - first - 1, 3, "the crash's events are not three");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The run folders a launch leaves are kept for the next launch only while the process restarts after
    /// crashes (so that a crash storm's restart does not list the process's log folder, issue 19): not after a
    /// first start, and forgotten at a stop. The launches from what was kept still prune to `keepRuns` (1 here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_runs_are_kept_only_for_restarts_after_crashes() {
        let (dir, sup, mut actor, _snapshot) = lone_actor("pm-known-runs");
        let logs = sup.shared().paths.process_logs_dir("job");
        actor.spawn_now().await.unwrap();
        assert!(actor.child.is_some(), "not started: {:?}", actor.entry.last_error);
        assert!(!actor.runs_kept, "kept after a first start");
        for restart in 1..=3 {
            super::wait_child(&mut actor.child).await;
            actor.child = None;
            actor.entry.restart_attempts = restart;
            actor.spawn_now().await.unwrap();
            assert!(actor.child.is_some(), "not restarted: {:?}", actor.entry.last_error);
            assert!(actor.runs_kept, "not kept at restart {restart}");
            assert_eq!(crate::launch::kept_runs(&logs), Some(1), "restart {restart}");
        }
        // The older runs go on a spawner thread once the launches are done.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::read_dir(&logs).unwrap().count() != 1 {
            assert!(std::time::Instant::now() < deadline, "runs left: {:?}", std::fs::read_dir(&logs).unwrap().count());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        actor.stop().await;
        assert!(!actor.runs_kept, "kept after a stop");
        assert_eq!(crate::launch::kept_runs(&logs), None, "kept after a stop");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A task of its own (not spawned) for a process `job` running `/bin/true`, of a supervisor whose home is a
    /// new folder named after `tag` (answered for the clean-up), with the task's published snapshot.
    pub(crate) fn lone_actor(
        tag: &str,
    ) -> (std::path::PathBuf, crate::Supervisor, Actor, crate::published::Published<super::Snapshot>) {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        let paths = pm_registry::Paths::new(&dir, "default").unwrap();
        let sup = crate::Supervisor::new(crate::SupervisorConfig {
            paths,
            keep_runs: 1,
            default_cwd: dir.clone(),
            extra_env: Vec::new(),
        });
        let entry = ProcessEntry::new(ProcessConfig::new("job", "job", "/bin/true"), Timestamp::now());
        let (_tx, rx) = crate::inbox::inbox::<Cmd>();
        let (actor, snapshot) = Actor::new(entry, sup.shared().clone(), rx);
        (dir, sup, actor, snapshot)
    }

    /// The sequence number of an event published now to find it out.
    fn next_seq(shared: &crate::Shared) -> u64 {
        let id = shared.events.publish(pm_core::EventKind::MonitorRestart {}, false).id;
        id.rsplit('-').next().unwrap().parse().unwrap()
    }
}
