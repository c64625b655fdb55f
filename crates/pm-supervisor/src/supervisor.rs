//! The handle to a set of supervised processes: one actor task per process, addressed by id.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pm_core::{Error, ProcessConfig, ProcessEntry, ProcessState, Timestamp};
use pm_registry::proc::Process;
use pm_registry::Paths;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use crate::actor::{Actor, Begin, Cmd, ConfigRevs, Snapshot};

/// What a [`Supervisor`] needs to run processes.
pub struct SupervisorConfig {
    /// Where logs go: `{root}/{instance}_logs/{process-id}/{YYYYMMDD_HHMMSS}/`.
    pub paths: Paths,
    /// Run folders kept per process (the newest ones).
    pub keep_runs: usize,
    /// Working directory of children that name none (and base of relative ones).
    pub default_cwd: PathBuf,
    /// Variables added to every child's environment.
    pub extra_env: Vec<(String, String)>,
}

/// Events kept for replay: `PROCESS_MONITOR_EVENT_RING` when set (at least 1,000), else the default.
fn event_ring() -> usize {
    std::env::var("PROCESS_MONITOR_EVENT_RING")
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(pm_http::DEFAULT_EVENT_RING)
}

/// State shared by the supervisor and its actors.
pub(crate) struct Shared {
    pub(crate) paths: Paths,
    pub(crate) keep_runs: usize,
    pub(crate) default_cwd: PathBuf,
    pub(crate) extra_env: Vec<(String, String)>,
    pub(crate) owner: String,
    pub(crate) http: pm_http::HttpClient,
    /// Signalled on every published change (the registry writer waits on it).
    pub(crate) changed: Notify,
    /// Waits for dependencies and restarts of dependents.
    pub(crate) deps: crate::deps::Coordinator,
    /// How processes are contained (a cgroup each, or process groups).
    pub(crate) containment: crate::cgroup::Containment,
    /// In the process-group fallback of a daemon: kill what carries a process's owner key when it stops.
    pub(crate) kill_carriers: bool,
    /// PIDs of the children the actors spawned and wait for; held locked across a spawn where the reaper of
    /// re-parented strays runs (process groups), so that it never reaps a managed child.
    pub(crate) owned: Arc<Mutex<std::collections::HashSet<u32>>>,
    /// The whitelist and blacklist an untrusted registration's executable is checked against at each start.
    pub(crate) exec_policy: std::sync::RwLock<crate::execcheck::ExecPolicy>,
    /// The event bus of `GET /events`, and the hooks' bound.
    pub(crate) events: crate::events::Events,
    /// Bumped whenever a process comes or goes (with [`crate::deps::Coordinator::generation`], the stamp of
    /// [`Supervisor::partner_ids`]'s last scan).
    pub(crate) membership: std::sync::atomic::AtomicU64,
    /// The last scan of [`Supervisor::partner_ids`]: its stamp (changes published, processes come or gone) and
    /// what it found.
    pub(crate) partner_scan: Mutex<Option<(ScanStamp, Vec<String>)>>,
    /// Set by [`Supervisor::shutdown`]: a task that stops its child leaves the emptied cgroup in place, and the
    /// shutdown removes every stopped process's cgroup in one batch once the last child is gone (a `rmdir` of a
    /// cgroup takes the kernel's cgroup lock, which exiting children need as well).
    pub(crate) stopping_all: std::sync::atomic::AtomicBool,
}

/// When a scan of every process was made: the changes published so far and the processes come or gone so far.
pub(crate) type ScanStamp = (u64, u64);

impl Shared {
    /// A process came or went (see [`Shared::membership`]).
    fn came_or_went(&self) {
        self.membership.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The live monitor instance `instance_id` in the same home, if its lock is held by a running process.
    pub(crate) fn live_partner(&self, instance_id: &str) -> Option<Process> {
        let paths = self.paths.for_instance(instance_id).ok()?;
        let holder = pm_registry::InstanceLock::holder(&paths).ok()??;
        (holder.pid != std::process::id()).then_some(Process::new(holder.pid, holder.start_time))
    }
}

pub(crate) type Slots = BTreeMap<String, Slot>;

pub(crate) struct Slot {
    tx: crate::inbox::Sender<Cmd>,
    snapshot: crate::published::Published<Snapshot>,
    task: JoinHandle<()>,
}

/// Supervises a set of processes in this program.
///
/// Cloning is cheap; every clone addresses the same processes. Each process is owned by one task, which is
/// the only place its child is spawned, waited for and signalled, so two copies of one process can never be
/// started by racing requests.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
    slots: Arc<Mutex<Slots>>,
}

impl Supervisor {
    /// A supervisor with no processes. Must be called inside a tokio runtime.
    pub fn new(config: SupervisorConfig) -> Supervisor {
        Supervisor::with_owner_secret(config, None)
    }

    /// Like [`Supervisor::new`], with the instance's owner secret in the owner key every child carries (the
    /// daemon's, so that only children it started are found by [`Supervisor::orphans`]).
    pub(crate) fn with_owner_secret(config: SupervisorConfig, secret: Option<&str>) -> Supervisor {
        let containment = crate::cgroup::Containment::ProcessGroup {
            reason: "a supervisor embedded in a program uses process groups".to_owned(),
        };
        Supervisor::with_containment(config, secret, containment, false)
    }

    /// Like [`Supervisor::new`], with a cgroup per process where the home has a delegated cgroup (as the daemon
    /// does, see [`crate::cgroup::Containment::detect`]), process groups otherwise. Must be called inside a tokio
    /// runtime.
    pub fn with_detected_containment(config: SupervisorConfig) -> Supervisor {
        let containment = crate::cgroup::Containment::detect(&config.paths);
        Supervisor::with_containment(config, None, containment, false)
    }

    /// Like [`Supervisor::with_owner_secret`], containing its processes as `containment` says; `kill_carriers`
    /// also kills, at a stop, whatever carries a process's owner key (the daemon's process-group fallback).
    pub(crate) fn with_containment(
        config: SupervisorConfig,
        secret: Option<&str>,
        containment: crate::cgroup::Containment,
        kill_carriers: bool,
    ) -> Supervisor {
        let (deps, deps_task) = crate::deps::Coordinator::new();
        let shared = Shared {
            containment,
            kill_carriers,
            owned: Arc::default(),
            owner: crate::orphans::owner_key(&config.paths, secret),
            paths: config.paths,
            keep_runs: config.keep_runs.max(1),
            default_cwd: config.default_cwd,
            extra_env: config.extra_env,
            http: pm_http::HttpClient::new(),
            changed: Notify::new(),
            deps,
            exec_policy: Default::default(),
            events: crate::events::Events::new(Arc::new(pm_http::EventBus::new(event_ring()))),
            membership: Default::default(),
            partner_scan: Mutex::new(None),
            stopping_all: Default::default(),
        };
        let sup = Supervisor { shared: Arc::new(shared), slots: Arc::new(Mutex::new(BTreeMap::new())) };
        tokio::spawn(deps_task.run(Arc::downgrade(&sup.shared), Arc::downgrade(&sup.slots)));
        sup
    }

    /// The state the process tasks share (for tests that build a task by hand).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The dependency coordinator (see [`crate::deps`]).
    pub(crate) fn deps(&self) -> &crate::deps::Coordinator {
        &self.shared.deps
    }

    pub(crate) fn assemble(shared: Arc<Shared>, slots: Arc<Mutex<Slots>>) -> Supervisor {
        Supervisor { shared, slots }
    }

    /// Registers a new process and starts it when it is enabled and has `autostart`.
    pub fn register(&self, config: ProcessConfig) -> Result<(), Error> {
        config.validate()?;
        let entry = ProcessEntry::new(config, Timestamp::now());
        self.insert(entry, Begin::Registered)
    }

    /// Takes over an entry from a registry when the monitor starts: processes that still run (same PID and
    /// start time) are adopted, not started again; ones that died meanwhile go down the crash path. At a
    /// [`StartKind::Boot`](crate::StartKind::Boot), stopped autostart processes are started as well.
    ///
    /// The process's task shares `entry` with the registry it came from until either changes it (see
    /// [`pm_core::SharedEntry`]).
    pub fn resume(&self, entry: impl Into<pm_core::SharedEntry>, start: crate::StartKind) -> Result<(), Error> {
        self.insert(entry, Begin::MonitorStart(start))
    }

    pub(crate) fn insert(&self, entry: impl Into<pm_core::SharedEntry>, begin: Begin) -> Result<(), Error> {
        let entry = entry.into();
        let id = entry.config.id.clone();
        pm_core::validate_process_id(&id)?;
        let mut slots = self.slots.lock().expect("slots lock");
        if slots.contains_key(&id) {
            return Err(Error::AlreadyExists(id));
        }
        if begin == Begin::Registered {
            let kind = pm_core::EventKind::Registered { process_id: id.clone() };
            self.shared.events.publish(kind, entry.config.is_remote);
        }
        if !entry.config.depends_on.is_empty() {
            self.shared.deps.note_dependencies(&id, &entry.config.depends_on);
        }
        let (tx, rx) = crate::inbox::inbox();
        let (actor, snapshot) = Actor::new(entry, self.shared.clone(), rx);
        let task = tokio::spawn(actor.run(begin));
        slots.insert(id, Slot { tx, snapshot, task });
        self.shared.came_or_went();
        Ok(())
    }

    /// Starts a process (a no-op when it runs); answers its state afterwards. Its stopped dependencies are
    /// started first, and it waits in `starting` until its `dependsOn` conditions hold.
    pub async fn start(&self, id: &str) -> Result<ProcessState, Error> {
        self.start_with_dependencies(id).await
    }

    /// Stops a process: SIGTERM to its process group, SIGKILL after its stop timeout. Returns once stopped.
    /// The processes that depend on it are stopped first.
    pub async fn stop(&self, id: &str) -> Result<ProcessState, Error> {
        Ok(self.stop_with_dependents(id).await?.0)
    }

    /// Stops, then starts a process (and its dependents with `restartDependents`).
    pub async fn restart(&self, id: &str) -> Result<ProcessState, Error> {
        self.restart_with_dependents(id).await
    }

    pub(crate) async fn start_one(&self, id: &str) -> Result<ProcessState, Error> {
        self.ask(id, Cmd::Start).await
    }

    pub(crate) async fn stop_one(&self, id: &str) -> Result<ProcessState, Error> {
        self.ask(id, Cmd::Stop).await
    }

    pub(crate) async fn restart_one(&self, id: &str) -> Result<ProcessState, Error> {
        self.ask(id, Cmd::Restart).await
    }

    /// Sends a command that needs no answer (dropped when the process is gone).
    pub(crate) async fn tell(&self, id: &str, cmd: Cmd) {
        if let Ok(tx) = self.sender(id) {
            let _ = tx.send(cmd).await;
        }
    }

    /// Enables or disables a process; disabling stops it, after the processes that depend on it (as a stop does).
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), Error> {
        if !enabled && self.get(id).is_some() {
            self.stop_dependents(id).await;
        }
        self.ask(id, |reply| Cmd::SetEnabled(enabled, reply)).await
    }

    /// Changes whether a process starts with the monitor.
    pub async fn set_autostart(&self, id: &str, autostart: bool) -> Result<(), Error> {
        self.ask(id, |reply| Cmd::SetAutostart(autostart, reply)).await
    }

    /// Applies a configuration read from the registry (takes effect at the next start; `enabled` at once).
    pub async fn update_config(&self, config: ProcessConfig) -> Result<(), Error> {
        let tx = self.sender(&config.id)?;
        tx.send(Cmd::UpdateConfig(Box::new((config, None)))).await.map_err(|_| Error::ShuttingDown)
    }

    /// Like [`Supervisor::update_config`] for a configuration read while the task's own changes stood at `base`:
    /// `enabled` and `autostart` changed by the task since then keep the task's value.
    pub(crate) async fn update_config_since(&self, config: ProcessConfig, base: ConfigRevs) -> Result<(), Error> {
        let tx = self.sender(&config.id)?;
        tx.send(Cmd::UpdateConfig(Box::new((config, Some(base))))).await.map_err(|_| Error::ShuttingDown)
    }

    /// Hands a request to the process's task and answers the receiver of its reply: requests handed over in
    /// some order are carried out in that order, whenever their replies are awaited.
    pub(crate) async fn enqueue<T>(
        &self,
        id: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Cmd,
    ) -> Result<oneshot::Receiver<Result<T, Error>>, Error> {
        let tx = self.sender(id)?;
        let (reply, wait) = oneshot::channel();
        tx.send(make(reply)).await.map_err(|_| Error::ShuttingDown)?;
        Ok(wait)
    }

    /// Forgets a process at once (no request reaches it after this returns) and answers the future that stops
    /// it and yields its last entry.
    pub(crate) fn begin_remove(
        &self,
        id: &str,
    ) -> Result<impl std::future::Future<Output = Result<ProcessEntry, Error>> + Send + 'static, Error> {
        let slot = self.slots.lock().expect("slots lock").remove(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        self.shared.came_or_went();
        self.shared.deps.forget_dependencies(Some(id));
        let shared = self.shared.clone();
        Ok(async move { finish_end(slot, false, &shared).await })
    }

    /// Asks the process's task to adopt a running process (a partner monitor that came up on its own).
    pub async fn adopt(&self, id: &str, process: Process) -> Result<(), Error> {
        let tx = self.sender(id)?;
        tx.send(Cmd::Adopt(Box::new(process))).await.map_err(|_| Error::ShuttingDown)
    }

    /// Stops a process and forgets it; answers its last entry.
    pub async fn remove(&self, id: &str) -> Result<ProcessEntry, Error> {
        self.end(id, false).await
    }

    /// Forgets a process without stopping it.
    pub async fn detach(&self, id: &str) -> Result<ProcessEntry, Error> {
        self.end(id, true).await
    }

    async fn end(&self, id: &str, leave_running: bool) -> Result<ProcessEntry, Error> {
        let slot = self.slots.lock().expect("slots lock").remove(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        self.shared.came_or_went();
        self.shared.deps.forget_dependencies(Some(id));
        finish_end(slot, leave_running, &self.shared).await
    }

    /// The entry of one process, from memory.
    pub fn get(&self, id: &str) -> Option<ProcessEntry> {
        self.slots.lock().expect("slots lock").get(id).map(|slot| ProcessEntry::clone(&slot.snapshot.borrow().entry))
    }

    /// One process's snapshot, from memory.
    pub fn snapshot(&self, id: &str) -> Option<Snapshot> {
        self.slots.lock().expect("slots lock").get(id).map(|slot| slot.snapshot.borrow().clone())
    }

    /// Ids of the processes whose entry satisfies `which` (looked at in place, not copied).
    pub fn ids_where(&self, which: impl Fn(&ProcessEntry) -> bool) -> Vec<String> {
        let slots = self.slots.lock().expect("slots lock");
        slots.iter().filter(|(_, slot)| which(&slot.snapshot.borrow().entry)).map(|(id, _)| id.clone()).collect()
    }

    /// Ids of the partner entries (`config.partner`), as [`Supervisor::ids_where`] finds them. Every process is
    /// looked at again only when some process published a change, or one came or went, since the last call: the
    /// partner tick asks every few seconds, and at 10,000 processes a scan is about a millisecond of an otherwise
    /// idle monitor's CPU.
    pub(crate) fn partner_ids(&self) -> Vec<String> {
        // The stamp is read before the scan: a change during the scan leaves a stale stamp, so the next call
        // scans again (a publish replaces the snapshot before it bumps the generation).
        let stamp = (self.shared.deps.generation(), self.shared.membership.load(std::sync::atomic::Ordering::Acquire));
        if let Some((at, ids)) = &*self.shared.partner_scan.lock().expect("partner scan lock") {
            if *at == stamp {
                return ids.clone();
            }
        }
        let ids = self.ids_where(|entry| entry.config.partner);
        *self.shared.partner_scan.lock().expect("partner scan lock") = Some((stamp, ids.clone()));
        ids
    }

    /// Every process's snapshot, from memory, ordered by id.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.slots.lock().expect("slots lock").values().map(|slot| slot.snapshot.borrow().clone()).collect()
    }

    /// Calls `f` with every process's published entry, in id order, under the lock of the processes' map: no
    /// list of them is built (a list of 10,000 snapshots is about 0.8 MB of heap, which the registry writer would
    /// allocate and free again while a mass start fills the heap).
    pub(crate) fn for_each_entry(&self, mut f: impl FnMut(&Arc<ProcessEntry>)) {
        for slot in self.slots.lock().expect("slots lock").values() {
            f(&slot.snapshot.borrow().entry);
        }
    }

    /// Every process's entry, from memory, ordered by id.
    pub fn list(&self) -> Vec<ProcessEntry> {
        self.slots
            .lock()
            .expect("slots lock")
            .values()
            .map(|slot| ProcessEntry::clone(&slot.snapshot.borrow().entry))
            .collect()
    }

    /// Leaders of the process groups of every process that has a child (the groups the resource sampler reads).
    pub(crate) fn running_groups(&self) -> Vec<u32> {
        let slots = self.slots.lock().expect("slots lock");
        slots
            .values()
            .filter_map(|slot| {
                let snapshot = slot.snapshot.borrow();
                // Processes in a cgroup of their own are read from it (`cgroup_usage`), not from /proc.
                let in_cgroup = !snapshot.entry.config.partner
                    && self.shared.containment.dir(&snapshot.entry.config.id).is_some_and(|dir| dir.is_dir());
                (snapshot.entry.state.has_child() && !in_cgroup).then_some(snapshot.entry.pid).flatten()
            })
            .collect()
    }

    /// Ids of every process.
    pub fn ids(&self) -> Vec<String> {
        self.slots.lock().expect("slots lock").keys().cloned().collect()
    }

    /// Number of processes and of those running.
    pub fn counts(&self) -> (usize, usize) {
        let slots = self.slots.lock().expect("slots lock");
        let running = slots.values().filter(|slot| slot.snapshot.borrow().entry.state == ProcessState::Running).count();
        (slots.len(), running)
    }

    /// Waits until the process reaches a state that satisfies `done`, or `timeout` passes; answers the last
    /// entry seen.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&ProcessEntry) -> bool,
    ) -> Result<ProcessEntry, Error> {
        let rx = {
            let slots = self.slots.lock().expect("slots lock");
            slots.get(id).ok_or_else(|| Error::NotFound(id.to_owned()))?.snapshot.clone()
        };
        let res = match tokio::time::timeout(timeout, rx.wait_for(|snapshot| done(&snapshot.entry))).await {
            Ok(Ok(snapshot)) => Some(Ok(ProcessEntry::clone(&snapshot.entry))),
            Ok(Err(_)) => Some(Err(Error::NotFound(id.to_owned()))),
            Err(_) => None,
        };
        res.unwrap_or_else(|| Ok(ProcessEntry::clone(&rx.borrow().entry)))
    }

    /// Ends every process task: processes for which `leave_running` answers true keep running (for a
    /// successor monitor), the others are stopped, all at once. Answers the final entries.
    ///
    /// With dependencies, it goes in groups in reverse dependency order: a process is stopped only after every
    /// process that depends on it; processes of one group stop at once.
    pub async fn shutdown(&self, leave_running: impl Fn(&ProcessEntry) -> bool) -> Vec<ProcessEntry> {
        let mut slots = std::mem::take(&mut *self.slots.lock().expect("slots lock"));
        self.shared.came_or_went();
        self.shared.deps.forget_dependencies(None);
        let graph: pm_core::Graph = slots
            .iter()
            .map(|(id, slot)| (id.clone(), slot.snapshot.borrow().entry.config.depends_on.keys().cloned().collect()))
            .collect();
        self.shared.stopping_all.store(true, std::sync::atomic::Ordering::Release);
        let mut res = Vec::new();
        let mut cgroups = Vec::new();
        for group in pm_core::shutdown_layers(&graph) {
            let mut waits = Vec::new();
            for id in group {
                let Some(slot) = slots.remove(&id) else { continue };
                let leave = leave_running(&slot.snapshot.borrow().entry);
                if !leave {
                    cgroups.extend(self.shared.containment.dir(&id));
                }
                let (done, wait) = oneshot::channel();
                if slot.tx.send(Cmd::Shutdown { leave_running: leave, done }).await.is_ok() {
                    waits.push((wait, slot.task, slot.snapshot));
                }
            }
            for (wait, task, snapshot) in waits {
                let entry = wait.await.unwrap_or_else(|_| ProcessEntry::clone(&snapshot.borrow().entry));
                let _ = task.await;
                res.push(entry);
            }
        }
        // Every stopped process is gone (its task made sure, killing leftovers after its stop timeout): now, and
        // not while other children still exit, their cgroups go, on one thread.
        if !cgroups.is_empty() {
            let _ =
                tokio::task::spawn_blocking(move || cgroups.iter().for_each(|dir| crate::cgroup::remove_empty(dir)))
                    .await;
        }
        res
    }

    /// Resolves when some process published a change since the last call (used by the registry writer).
    pub async fn changed(&self) {
        self.shared.changed.notified().await;
    }

    /// Live process-group leaders this monitor (same folder and instance) started earlier, by process id, found
    /// through the environment every child carries, earliest started first; descendants of a managed process
    /// that lead a group of their own are left out. Linux only; empty elsewhere.
    pub(crate) fn orphans(&self) -> std::collections::HashMap<String, Vec<crate::orphans::Found>> {
        crate::orphans::scan(&self.shared.owner)
    }

    /// Sets the whitelist and blacklist that untrusted registrations are checked against when they start.
    pub(crate) fn set_exec_policy(&self, whitelist: &[String], blacklist: &[String]) {
        let mut policy = self.shared.exec_policy.write().expect("exec policy");
        policy.whitelist = whitelist.to_vec();
        policy.blacklist = blacklist.to_vec();
    }

    /// Whether a process found by [`Supervisor::orphans`] runs the executable `config` names (resolved as a spawn
    /// resolves it), so that it may be adopted as that process.
    pub(crate) fn runs_registered(&self, found: &crate::orphans::Found, config: &ProcessConfig) -> bool {
        found.runs(&crate::spawn::program_of(config, &self.shared.default_cwd))
    }

    /// Wakes the registry writer as if a process had changed.
    pub fn notify_changed(&self) {
        self.shared.changed.notify_one();
    }

    /// The live monitor instance `instance_id` in the same home (PID and start time), if its lock is held by
    /// another running process.
    pub fn live_instance(&self, instance_id: &str) -> Option<Process> {
        self.shared.live_partner(instance_id)
    }

    /// The HTTP client the checks use (pooled connections), for the daemon's own checks.
    pub(crate) fn http(&self) -> &pm_http::HttpClient {
        &self.shared.http
    }

    /// How processes are contained.
    pub fn containment(&self) -> &crate::cgroup::Containment {
        &self.shared.containment
    }

    /// CPU percent and memory of the running processes that have a cgroup, by id, from their cgroups.
    pub(crate) fn cgroup_usage(
        &self,
        snapshots: &[Snapshot],
        sampler: &mut crate::cgroup::CpuSampler,
    ) -> std::collections::HashMap<String, (Option<f32>, u64)> {
        let mut res = std::collections::HashMap::new();
        for snapshot in
            snapshots.iter().filter(|snapshot| snapshot.entry.state.has_child() && !snapshot.entry.config.partner)
        {
            let id = &snapshot.entry.config.id;
            let Some(dir) = self.shared.containment.dir(id) else { return res };
            if let Some(usage) = sampler.usage(&dir) {
                res.insert(id.clone(), usage);
            }
        }
        res
    }

    /// Reaps ended descendants that were re-parented to this monitor (a child subreaper) and are not managed
    /// processes.
    pub(crate) fn reap_strays(&self) {
        let owned = self.shared.owned.lock().expect("owned lock");
        crate::cgroup::reap_strays(&owned);
    }

    /// The bus every change of these processes is published on (`GET /events`).
    pub fn event_bus(&self) -> Arc<pm_http::EventBus> {
        self.shared.events.bus.clone()
    }

    /// Publishes an event about the monitor itself (seen by trusted peers only).
    pub(crate) fn publish_monitor_event(&self, kind: pm_core::EventKind) {
        self.shared.events.publish(kind, false);
    }

    /// The layout this supervisor logs into.
    pub fn paths(&self) -> &Paths {
        &self.shared.paths
    }

    fn sender(&self, id: &str) -> Result<crate::inbox::Sender<Cmd>, Error> {
        let slots = self.slots.lock().expect("slots lock");
        Ok(slots.get(id).ok_or_else(|| Error::NotFound(id.to_owned()))?.tx.clone())
    }

    async fn ask<T>(&self, id: &str, make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Cmd) -> Result<T, Error> {
        self.enqueue(id, make).await?.await.map_err(|_| Error::ShuttingDown)?
    }
}

/// Ends the task of a slot already taken out of the map: stop the child first, or leave it running.
async fn finish_end(slot: Slot, leave_running: bool, shared: &Shared) -> Result<ProcessEntry, Error> {
    let (done, wait) = oneshot::channel();
    let res = match slot.tx.send(Cmd::Shutdown { leave_running, done }).await {
        Ok(()) => wait.await.map_err(|_| Error::ShuttingDown),
        Err(_) => Err(Error::ShuttingDown),
    };
    let _ = slot.task.await;
    shared.changed.notify_one();
    let (process_id, is_remote) = {
        let snapshot = slot.snapshot.borrow();
        (snapshot.entry.config.id.clone(), snapshot.entry.config.is_remote)
    };
    shared.events.publish(pm_core::EventKind::Deregistered { process_id }, is_remote);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(id: &str, partner: bool) -> ProcessConfig {
        let mut config = ProcessConfig::new(id, id, "/bin/true");
        config.autostart = false;
        config.partner = partner;
        config
    }

    #[tokio::test]
    async fn partner_ids_follow_registrations_changes_and_removals_and_are_not_rescanned_without_them() {
        let dir = std::env::temp_dir().join(format!("pm-sup-partner-ids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sup = Supervisor::new(SupervisorConfig {
            paths: Paths::new(&dir, "test").unwrap(),
            keep_runs: 2,
            default_cwd: dir.clone(),
            extra_env: Vec::new(),
        });
        sup.register(stopped("api", false)).unwrap();
        sup.register(stopped("watcher", true)).unwrap();
        assert_eq!(sup.partner_ids(), ["watcher"]);
        // Once the new tasks have published their first states, nothing changes: the last scan is answered (a
        // planted answer under the same stamp proves it).
        let planted = vec!["planted".to_owned()];
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            sup.partner_ids();
            sup.shared.partner_scan.lock().unwrap().as_mut().unwrap().1 = planted.clone();
            if sup.partner_ids() == planted {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "every call scanned again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A published change (the flag set by a configuration change) is seen.
        sup.update_config(stopped("api", true)).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !sup.get("api").unwrap().config.partner {
            assert!(std::time::Instant::now() < deadline, "the configuration change was not applied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sup.partner_ids(), ["api", "watcher"]);
        // A process that goes is seen, and so is one that comes.
        sup.remove("watcher").await.unwrap();
        assert_eq!(sup.partner_ids(), ["api"]);
        sup.register(stopped("watcher", true)).unwrap();
        assert_eq!(sup.partner_ids(), ["api", "watcher"]);
        sup.shutdown(|_| false).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
