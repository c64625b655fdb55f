//! Service dependencies at run time: waiting for `dependsOn` conditions before a spawn, and restarting
//! dependents after a dependency restarted. The graph rules themselves are pure functions in `pm_core`.
//!
//! A process that must wait is `starting` without a child; its actor hands a [`Wait`] to the coordinator, whose
//! waiter task watches the other processes' snapshots (woken by every published change) and answers the actor
//! with `DepsPending`, `DepsReady` or `DepsFailed`. The actor ignores answers of a wait it has given up (a stop,
//! a disable), by the wait's number.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pm_core::{DependencyCondition, Observed, ProcessState, Timestamp};
use tokio::sync::{mpsc, watch};

use crate::actor::Cmd;
use crate::supervisor::Slots;
use crate::{Shared, Supervisor};

/// One wait for dependencies.
#[derive(Debug, Clone)]
pub(crate) struct Wait {
    /// The waiting process.
    pub(crate) id: String,
    /// Number of the wait, echoed in the answers.
    pub(crate) gen: u64,
    /// When the start was requested (`completedSuccessfully` counts exits from then on).
    pub(crate) since: Timestamp,
    /// The conditions.
    pub(crate) depends_on: BTreeMap<String, DependencyCondition>,
    /// How long to wait before the process fails.
    pub(crate) timeout: Duration,
}

enum Request {
    Wait(Wait),
    Restarted(String),
}

/// The actors' handle to the coordinator.
pub(crate) struct Coordinator {
    tx: mpsc::UnboundedSender<Request>,
    changes: watch::Sender<u64>,
    /// When the start that is starting these processes (a process and its dependencies) was requested: their
    /// waits count `completedSuccessfully` exits from then on, not from when each one's turn came, so a job
    /// started (and finished) for a dependent before the dependent's own wait began still counts.
    requested: Mutex<BTreeMap<String, Timestamp>>,
    /// When the supervisor was made (the monitor's start): a boot requests the autostart processes' starts then.
    started_at: Timestamp,
    /// The processes that depend on others, with the ids they depend on, as their tasks last published them:
    /// what [`Supervisor::dependents_of`] looks through, instead of every process's snapshot (at 10,000 processes
    /// that scan took about 3 ms of every stop, most processes depending on nothing; issue 19).
    depending: Mutex<HashMap<String, Vec<String>>>,
}

impl Coordinator {
    /// A coordinator whose task [`Coordinator::run`] must be spawned with the receiver.
    pub(crate) fn new() -> (Coordinator, CoordinatorTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (changes, _) = watch::channel(0);
        let coordinator = Coordinator {
            tx,
            changes,
            requested: Mutex::new(BTreeMap::new()),
            started_at: Timestamp::now(),
            depending: Mutex::new(HashMap::new()),
        };
        (coordinator, CoordinatorTask { rx })
    }

    /// When the monitor started (see `started_at`).
    pub(crate) fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// The start of `ids` was requested `at` (see `requested`).
    fn mark_requested(&self, ids: &[String], at: Timestamp) {
        let mut requested = self.requested.lock().expect("requested lock");
        for id in ids {
            requested.insert(id.clone(), at);
        }
    }

    /// When the start of `id` was requested, if a start with dependencies is under way (taken: used once).
    pub(crate) fn take_requested(&self, id: &str) -> Option<Timestamp> {
        self.requested.lock().expect("requested lock").remove(id)
    }

    /// Forgets what [`Coordinator::mark_requested`] noted of `ids` and was not used.
    fn clear_requested(&self, ids: &[String]) {
        let mut requested = self.requested.lock().expect("requested lock");
        for id in ids {
            requested.remove(id);
        }
    }

    /// Starts waiting for the conditions of `wait`.
    pub(crate) fn wait(&self, wait: Wait) {
        let _ = self.tx.send(Request::Wait(wait));
    }

    /// `id` was restarted after a crash and has `restartDependents`.
    pub(crate) fn restarted(&self, id: &str) {
        let _ = self.tx.send(Request::Restarted(id.to_owned()));
    }

    /// How many changes processes have published so far (wrapping).
    pub(crate) fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Some process published a change.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Notes that `id` now depends on `depends_on` (on nothing: forgotten); see `depending`.
    pub(crate) fn note_dependencies(&self, id: &str, depends_on: &BTreeMap<String, DependencyCondition>) {
        let mut depending = self.depending.lock().expect("depending lock");
        if depends_on.is_empty() {
            depending.remove(id);
        } else {
            depending.insert(id.to_owned(), depends_on.keys().cloned().collect());
        }
    }

    /// Forgets what `id` depends on (it is no longer registered); `None` forgets every process's.
    pub(crate) fn forget_dependencies(&self, id: Option<&str>) {
        let mut depending = self.depending.lock().expect("depending lock");
        match id {
            Some(id) => {
                depending.remove(id);
            }
            None => depending.clear(),
        }
    }

    /// The processes other than `id` that depend on `id` directly, by id.
    fn dependents_of(&self, id: &str) -> Vec<String> {
        let depending = self.depending.lock().expect("depending lock");
        let mut found: Vec<String> = depending
            .iter()
            .filter(|(dependent, deps)| dependent.as_str() != id && deps.iter().any(|dep| dep == id))
            .map(|(dependent, _)| dependent.clone())
            .collect();
        drop(depending);
        found.sort_unstable();
        found
    }
}

/// The receiving side, run by [`CoordinatorTask::run`].
pub(crate) struct CoordinatorTask {
    rx: mpsc::UnboundedReceiver<Request>,
}

impl CoordinatorTask {
    /// Serves requests until every actor and the supervisor are gone.
    pub(crate) async fn run(mut self, shared: Weak<Shared>, slots: Weak<Mutex<Slots>>) {
        while let Some(request) = self.rx.recv().await {
            let (Some(strong_shared), Some(strong_slots)) = (shared.upgrade(), slots.upgrade()) else { return };
            match request {
                Request::Wait(wait) => {
                    let changes = strong_shared.deps.changes.subscribe();
                    tokio::spawn(waiter(wait, changes, shared.clone(), slots.clone()));
                }
                Request::Restarted(id) => {
                    let sup = Supervisor::from_parts(strong_shared, strong_slots);
                    tokio::spawn(async move { sup.restart_dependents_of(&id).await });
                }
            }
        }
    }
}

/// What a condition looks at of process `id`, when it is registered.
pub(crate) fn observe(sup: &Supervisor, id: &str) -> Option<Observed> {
    let entry = sup.get(id)?;
    Some(Observed {
        state: entry.state,
        spawned: entry.pid.is_some() && entry.state.has_child(),
        last_exit_code: entry.last_exit_code,
        last_stopped_at: entry.last_stopped_at,
    })
}

/// Watches the dependencies of `wait` until they hold, one has failed, or the time is up, and tells the actor.
async fn waiter(wait: Wait, mut changes: watch::Receiver<u64>, shared: Weak<Shared>, slots: Weak<Mutex<Slots>>) {
    let deadline = tokio::time::Instant::now() + wait.timeout;
    let mut reported: Option<BTreeMap<String, DependencyCondition>> = None;
    loop {
        changes.borrow_and_update();
        let (Some(strong_shared), Some(strong_slots)) = (shared.upgrade(), slots.upgrade()) else { return };
        let sup = Supervisor::from_parts(strong_shared, strong_slots);
        // The process gave the wait up (stopped, disabled, deregistered, spawned): nothing more to do.
        match sup.get(&wait.id) {
            Some(entry) if entry.state == ProcessState::Starting && entry.waiting_since == Some(wait.since) => {}
            _ => return,
        }
        let mut pending = BTreeMap::new();
        let mut broken = None;
        for (dep, condition) in &wait.depends_on {
            let observed = observe(&sup, dep);
            if observed.is_some_and(|observed| condition.holds(&observed, wait.since)) {
                continue;
            }
            if let Some(observed) = observed {
                if matches!(observed.state, ProcessState::Failed | ProcessState::Disabled) && broken.is_none() {
                    broken = Some(format!(
                        "dependency {dep:?} is {} ({condition} needed); {:?} not started",
                        observed.state, wait.id
                    ));
                }
            }
            pending.insert(dep.clone(), *condition);
        }
        let answer = if pending.is_empty() {
            Some(Cmd::DepsReady { gen: wait.gen })
        } else if let Some(reason) = broken {
            Some(Cmd::DepsFailed(Box::new((wait.gen, reason))))
        } else if tokio::time::Instant::now() >= deadline {
            Some(Cmd::DepsFailed(Box::new((wait.gen, timeout_reason(&sup, &wait, &pending)))))
        } else {
            None
        };
        if let Some(answer) = answer {
            sup.tell(&wait.id, answer).await;
            return;
        }
        if reported.as_ref() != Some(&pending) {
            sup.tell(&wait.id, Cmd::DepsPending(Box::new((wait.gen, pending.clone())))).await;
            reported = Some(pending);
        }
        drop(sup);
        tokio::select! {
            res = changes.changed() => if res.is_err() { return },
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// `dependencies not met after 2000 ms (dependencyTimeoutMs): "db" healthy (it is starting)`.
fn timeout_reason(sup: &Supervisor, wait: &Wait, pending: &BTreeMap<String, DependencyCondition>) -> String {
    let what: Vec<String> = pending
        .iter()
        .map(|(dep, condition)| match sup.get(dep) {
            Some(entry) => format!("{dep:?} {condition} (it is {})", entry.state),
            None => format!("{dep:?} {condition} (not registered)"),
        })
        .collect();
    format!("dependencies not met within {} ms (dependencyTimeoutMs): {}", wait.timeout.as_millis(), what.join(", "))
}

impl Supervisor {
    /// The dependency graph of the registered processes.
    pub fn graph(&self) -> pm_core::Graph {
        self.list().into_iter().map(|entry| (entry.config.id, entry.config.depends_on.into_keys().collect())).collect()
    }

    /// Ids of the processes that depend on `id` directly, sorted (from the coordinator's note of the processes
    /// that depend on any: no look at every process).
    pub fn dependents_of(&self, id: &str) -> Vec<String> {
        self.deps().dependents_of(id)
    }

    /// Starts what `id` depends on (transitively) and is not under way, then `id`; refuses when a dependency is
    /// disabled or failed. Each process then waits for its own conditions.
    pub(crate) async fn start_with_dependencies(&self, id: &str) -> Result<ProcessState, pm_core::Error> {
        let under_way_already = self.get(id).is_some_and(|entry| entry.state.has_child());
        let mut marked = Vec::new();
        if !under_way_already {
            // (A start of a running process is a no-op, and must not rerun its finished jobs.)
            marked = self.start_dependencies_of(id).await?;
        }
        let res = self.start_one(id).await;
        self.deps().clear_requested(&marked);
        res
    }

    /// Starts the stopped dependencies of `id` (transitively, dependencies first); refuses when one is disabled
    /// or failed. Notes the time of the request for `id` and its dependencies (see `Coordinator::requested`) and
    /// answers their ids: the caller clears what is left of the note once `id` has been told to start.
    pub(crate) async fn start_dependencies_of(&self, id: &str) -> Result<Vec<String>, pm_core::Error> {
        // Most processes depend on nothing: no graph of every entry for them.
        if self.get(id).is_some_and(|entry| entry.config.depends_on.is_empty()) {
            return Ok(Vec::new());
        }
        let graph = self.graph();
        if graph.get(id).is_none_or(|deps| deps.is_empty()) {
            return Ok(Vec::new());
        }
        let entries: BTreeMap<String, pm_core::ProcessEntry> =
            self.list().into_iter().map(|entry| (entry.config.id.clone(), entry)).collect();
        if let Some(problem) = pm_core::start_blocker(|dep| entries.get(dep), &graph, id) {
            return Err(pm_core::Error::Dependency(problem));
        }
        let order = pm_core::start_order(&graph, &[id.to_owned()]);
        self.deps().mark_requested(&order, Timestamp::now());
        for dep in &order {
            let Some(entry) = entries.get(dep).filter(|_| dep != id) else { continue };
            if matches!(entry.state, ProcessState::Stopped | ProcessState::Crashed) {
                tracing::info!(process = %id, "starting its dependency {dep}");
                if let Err(err) = self.start_one(dep).await {
                    self.deps().clear_requested(&order);
                    return Err(err);
                }
            }
        }
        Ok(order)
    }

    /// Stops the processes that depend on `id` and are under way (dependents first), then `id`; answers its
    /// state and the dependents stopped, in the order they were stopped.
    pub async fn stop_with_dependents(&self, id: &str) -> Result<(ProcessState, Vec<String>), pm_core::Error> {
        if self.get(id).is_none() {
            return Err(pm_core::Error::NotFound(id.to_owned()));
        }
        let mut stopped = Vec::new();
        let graph = if self.dependents_of(id).is_empty() { pm_core::Graph::default() } else { self.graph() };
        for dependent in pm_core::dependents_stop_order(&graph, id) {
            if self.get(&dependent).is_some_and(|entry| under_way(entry.state)) {
                tracing::info!(process = %id, "stopping its dependent {dependent} first");
                match self.stop_one(&dependent).await {
                    Ok(_) => stopped.push(dependent),
                    Err(pm_core::Error::NotFound(_)) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok((self.stop_one(id).await?, stopped))
    }

    /// Restarts `id`; with `restartDependents`, its dependents under way are stopped first and started again
    /// afterwards (they wait for it as usual).
    pub(crate) async fn restart_with_dependents(&self, id: &str) -> Result<ProcessState, pm_core::Error> {
        let restart_dependents = self.get(id).is_some_and(|entry| entry.config.restart_dependents);
        let mut marked = Vec::new();
        if self.get(id).is_some_and(|entry| entry.config.enabled) {
            marked = self.start_dependencies_of(id).await?;
        }
        if !restart_dependents {
            let state = self.restart_one(id).await;
            self.deps().clear_requested(&marked);
            return state;
        }
        let stopped = self.stop_dependents(id).await;
        let state = self.restart_one(id).await;
        self.deps().clear_requested(&marked);
        for dependent in stopped.iter().rev() {
            if let Err(err) = self.start_with_dependencies(dependent).await {
                tracing::warn!(process = %dependent, "cannot start again after {id} restarted: {err}");
            }
        }
        state
    }

    /// After `id` restarted on its own (a crash): restart its dependents under way. They are started as a start
    /// does, their stopped dependencies first: a one-shot job a dependent needs (`completedSuccessfully`) runs
    /// again, rather than the dependent waiting for a job that nobody starts.
    pub(crate) async fn restart_dependents_of(&self, id: &str) {
        let stopped = self.stop_dependents(id).await;
        for dependent in stopped.iter().rev() {
            tracing::info!(process = %dependent, "restarting after its dependency {id} restarted");
            if let Err(err) = self.start_with_dependencies(dependent).await {
                tracing::warn!(process = %dependent, "cannot start again after {id} restarted: {err}");
            }
        }
    }

    /// Stops the dependents of `id` that are under way, dependents first; answers them in that order.
    pub(crate) async fn stop_dependents(&self, id: &str) -> Vec<String> {
        let mut stopped = Vec::new();
        // Most processes have no dependents: no graph of every entry for them.
        if self.dependents_of(id).is_empty() {
            return stopped;
        }
        for dependent in pm_core::dependents_stop_order(&self.graph(), id) {
            if self.get(&dependent).is_some_and(|entry| under_way(entry.state))
                && self.stop_one(&dependent).await.is_ok()
            {
                stopped.push(dependent);
            }
        }
        stopped
    }
}

/// The monitor's requests with their dependency steps: the steps on other processes first, then the request
/// itself handed to the process's task in order with the registry (see `Monitor::ask_in_order`).
impl crate::monitor::Monitor {
    /// Whether a local client's `action` on `id` involves other processes.
    pub(crate) fn needs_dependency_steps(&self, id: &str, action: pm_core::PendingAction) -> bool {
        let Some(entry) = self.supervisor().get(id) else { return false };
        match action {
            pm_core::PendingAction::Start => !entry.config.depends_on.is_empty(),
            pm_core::PendingAction::Stop => !self.supervisor().dependents_of(id).is_empty(),
            pm_core::PendingAction::Restart => {
                !entry.config.depends_on.is_empty()
                    || (entry.config.restart_dependents && !self.supervisor().dependents_of(id).is_empty())
            }
        }
    }

    /// Starts the stopped dependencies of `id` (refusing a disabled or failed one), then `id`.
    pub(crate) async fn start_after_dependencies(&self, id: &str) -> Result<ProcessState, pm_core::Error> {
        let under_way =
            self.supervisor().get(id).ok_or_else(|| pm_core::Error::NotFound(id.to_owned()))?.state.has_child();
        let mut marked = Vec::new();
        if !under_way {
            marked = self.supervisor().start_dependencies_of(id).await?;
        }
        let res = self.ask_in_order(id, Cmd::Start).await;
        self.supervisor().deps().clear_requested(&marked);
        res
    }

    /// Stops the dependents of `id` under way (dependents first), then `id`; answers its state and them.
    pub(crate) async fn stop_after_dependents(&self, id: &str) -> Result<(ProcessState, Vec<String>), pm_core::Error> {
        if self.supervisor().get(id).is_none() {
            return Err(pm_core::Error::NotFound(id.to_owned()));
        }
        let stopped = self.supervisor().stop_dependents(id).await;
        Ok((self.ask_in_order(id, Cmd::Stop).await?, stopped))
    }

    /// Restarts `id` after starting its stopped dependencies; with `restartDependents`, its dependents under way
    /// are stopped first and started again after it.
    pub(crate) async fn restart_with_dependencies(&self, id: &str) -> Result<ProcessState, pm_core::Error> {
        let entry = self.supervisor().get(id).ok_or_else(|| pm_core::Error::NotFound(id.to_owned()))?;
        let mut marked = Vec::new();
        if entry.config.enabled {
            marked = self.supervisor().start_dependencies_of(id).await?;
        }
        let stopped =
            if entry.config.restart_dependents { self.supervisor().stop_dependents(id).await } else { Vec::new() };
        let state = self.ask_in_order(id, Cmd::Restart).await;
        self.supervisor().deps().clear_requested(&marked);
        for dependent in stopped.iter().rev() {
            if let Err(err) = self.supervisor().start_with_dependencies(dependent).await {
                tracing::warn!(process = %dependent, "cannot start again after {id} restarted: {err}");
            }
        }
        state
    }
}

/// The refusal of a deregistration that would leave `dependents` without `id`.
pub(crate) fn needed_by(id: &str, dependents: &[String]) -> pm_core::Error {
    pm_core::Error::Dependency(format!(
        "Process {id} is a dependency of {}; deregister or change them first, or use ?force=true",
        dependents.join(", ")
    ))
}

/// Whether a process is running or on its way to run (what a stop of a dependency must stop first).
fn under_way(state: ProcessState) -> bool {
    matches!(state, ProcessState::Starting | ProcessState::Running | ProcessState::Retrying | ProcessState::Crashed)
}

/// `Arc` helpers so the coordinator can act like the supervisor without owning it.
impl Supervisor {
    pub(crate) fn from_parts(shared: Arc<Shared>, slots: Arc<Mutex<Slots>>) -> Supervisor {
        Supervisor::assemble(shared, slots)
    }
}
