//! The running monitor: the supervisor plus its registry, settings and status, as the remote API and the
//! daemon loop see it. Implements [`pm_http::ControlPlane`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pm_core::{
    Error, MonitorState, MonitorStatus, PendingAction, ProcessConfig, ProcessEntry, ProcessState, ProcessStatus,
    Registry, Settings, SettingsUpdate, Timestamp,
};
use pm_registry::{Change, EntryUpdate, FileStamp, Store};
use tokio::sync::mpsc;

use crate::actor::{Begin, Cmd, ConfigRevs};
use crate::daemon::DaemonEvent;
use crate::decide::{Held, Plan};
use crate::Supervisor;

/// How long an API call waits for the registry lock before it answers "busy".
const API_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the daemon knows about the registry file.
#[derive(Default)]
pub(crate) struct RegistrySync {
    /// Stamp of the file at the last reconcile.
    last_stamp: Option<FileStamp>,
}

/// The registry-sync lock, held: what the daemon knows of the file, and the right to change it.
/// [`Monitor::transaction`] takes one, so the lock order (this guard, then the registry file's lock) cannot be
/// skipped: a change decided under the guard reaches the file before any later one.
pub(crate) struct SyncGuard<'a>(tokio::sync::MutexGuard<'a, RegistrySync>);

impl std::ops::Deref for SyncGuard<'_> {
    type Target = RegistrySync;
    fn deref(&self) -> &RegistrySync {
        &self.0
    }
}

impl std::ops::DerefMut for SyncGuard<'_> {
    fn deref_mut(&mut self) -> &mut RegistrySync {
        &mut self.0
    }
}

/// The ports the monitor's servers listen on (`None` for a server that is off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ports {
    /// The aliveness server's.
    pub(crate) aliveness: Option<u16>,
    /// The remote API's.
    pub(crate) remote: Option<u16>,
}

/// The running monitor. Its fields are its own: the daemon and the API change them through its methods.
pub(crate) struct Monitor {
    instance_id: String,
    pid: u32,
    started_at: Timestamp,
    started: std::time::Instant,
    store: Arc<Store>,
    sup: Supervisor,
    sync: tokio::sync::Mutex<RegistrySync>,
    settings: RwLock<Settings>,
    standalone_override: bool,
    stopping: AtomicBool,
    events: mpsc::UnboundedSender<DaemonEvent>,
    ports: RwLock<Ports>,
    resources: Arc<crate::resources::Sampler>,
    /// CPU and memory of processes that have a cgroup, read from the cgroup (no `/proc` scan).
    cgroup_usage: std::sync::Mutex<crate::cgroup::CpuSampler>,
    /// The registry's top level as this monitor found it (processes left out), to write the file back from
    /// memory if it disappears.
    template: std::sync::Mutex<Registry>,
    /// Group commit: tickets handed to callers that need their outcome stored ([`Monitor::durable`]), and the
    /// highest ticket a finished commit or flush is known to cover.
    commit_requested: AtomicU64,
    commit_done: AtomicU64,
    /// The processes whose outcomes the tickets handed out since the last commit or flush wait for; taken
    /// together with the ticket count, under this lock.
    commit_pending: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Held by the commit under way: the callers that arrive meanwhile wait for it, then one of them commits
    /// for all (never the registry guard, which a rewrite of the registry holds for long).
    commit_lock: tokio::sync::Mutex<()>,
    /// Config revisions of each process last stored (in the registry file or the journal).
    written_rev: Arc<std::sync::Mutex<HashMap<String, ConfigRevs>>>,
    /// Local clients' requests (`pendingAction`) handed to the processes' tasks whose outcomes are not stored
    /// yet: they stay in the file until then (a client takes a cleared request for its outcome), and a reconcile
    /// meanwhile does not hand them over again.
    handed: Arc<std::sync::Mutex<HashMap<String, PendingAction>>>,
    /// Tests: the registry writer's flushes write nothing (so that a test can look at the journal before any
    /// fold).
    #[cfg(test)]
    pub(crate) folds_held: AtomicBool,
    /// Set by the final write of a shutdown (inside its transaction): every transaction of this monitor that
    /// gets the registry lock after it writes nothing, so the final states are the last word.
    closed: Arc<AtomicBool>,
}

impl Monitor {
    /// A monitor over `store`, supervising through `sup`, with the settings of `registry` (its top level, kept
    /// to write the file back from memory if it disappears).
    pub(crate) fn new(
        store: Arc<Store>,
        sup: Supervisor,
        registry: Registry,
        standalone_override: bool,
        events: mpsc::UnboundedSender<DaemonEvent>,
    ) -> Monitor {
        let remote = &registry.remote_access;
        sup.set_exec_policy(&remote.executable_whitelist, &remote.executable_blacklist);
        Monitor {
            instance_id: store.paths().instance_id().to_owned(),
            pid: std::process::id(),
            started_at: Timestamp::now(),
            started: std::time::Instant::now(),
            store,
            sup: sup.clone(),
            sync: tokio::sync::Mutex::new(RegistrySync::default()),
            settings: RwLock::new(Settings::of(&registry)),
            standalone_override,
            stopping: Default::default(),
            events,
            ports: RwLock::default(),
            resources: {
                let sup = sup.clone();
                crate::resources::Sampler::new(
                    Arc::new(move || sup.running_groups()),
                    crate::resources::read_groups_proc,
                )
            },
            cgroup_usage: Default::default(),
            template: std::sync::Mutex::new(registry),
            commit_requested: AtomicU64::new(0),
            commit_done: AtomicU64::new(0),
            commit_pending: Default::default(),
            commit_lock: Default::default(),
            written_rev: Default::default(),
            handed: Default::default(),
            #[cfg(test)]
            folds_held: AtomicBool::new(false),
            closed: Arc::default(),
        }
    }

    /// Takes the registry-sync guard, which every transaction needs (see [`SyncGuard`]).
    pub(crate) async fn sync(&self) -> SyncGuard<'_> {
        SyncGuard(self.sync.lock().await)
    }

    /// Runs a registry transaction on the blocking pool, under the registry-sync guard `held`.
    pub(crate) async fn transaction<T: Send + 'static>(
        &self,
        held: &SyncGuard<'_>,
        timeout: Duration,
        f: impl FnOnce(&mut Registry) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.transaction_of(held, timeout, false, f).await
    }

    /// [`Monitor::transaction`] for a write of what memory holds: `f` runs with the journal's appends held (see
    /// [`Store::transaction_existing_ordered`]).
    async fn transaction_ordered<T: Send + 'static>(
        &self,
        held: &SyncGuard<'_>,
        timeout: Duration,
        f: impl FnOnce(&mut Registry) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.transaction_of(held, timeout, true, f).await
    }

    async fn transaction_of<T: Send + 'static>(
        &self,
        _held: &SyncGuard<'_>,
        timeout: Duration,
        ordered: bool,
        f: impl FnOnce(&mut Registry) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.store.clone();
        let closed = self.closed.clone();
        on_blocking_pool(move || {
            let run = |registry: &mut Registry| {
                // Checked under the registry lock: a transaction that was under way when the monitor wrote its
                // final states (an aborted flush on the blocking pool) does not overwrite them.
                not_closed(&closed)?;
                f(registry)
            };
            if ordered {
                store.transaction_existing_ordered(timeout, run)
            } else {
                store.transaction_existing(timeout, run)
            }
        })
        .await
    }

    pub(crate) fn standalone(&self) -> bool {
        self.standalone_override || self.settings.read().expect("settings").standalone_mode
    }

    /// This monitor's instance id.
    pub(crate) fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The supervisor that runs the processes (a shared handle).
    pub(crate) fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    /// The remote-access settings in force.
    pub(crate) fn remote_access(&self) -> pm_core::RemoteAccessConfig {
        self.settings.read().expect("settings").remote_access.clone()
    }

    /// The partner-discovery settings in force.
    pub(crate) fn partner_discovery(&self) -> pm_core::PartnerDiscovery {
        self.settings.read().expect("settings").partner_discovery.clone()
    }

    /// The ports the servers listen on.
    pub(crate) fn ports(&self) -> Ports {
        *self.ports.read().expect("ports")
    }

    /// Records the port of the aliveness server (`None`: off).
    pub(crate) fn set_aliveness_port(&self, port: Option<u16>) {
        self.ports.write().expect("ports").aliveness = port;
    }

    /// Records the port of the remote API (`None`: off).
    pub(crate) fn set_remote_port(&self, port: Option<u16>) {
        self.ports.write().expect("ports").remote = port;
    }

    /// Hands `event` to the daemon loop (a no-op once the loop has ended).
    pub(crate) fn request(&self, event: DaemonEvent) {
        let _ = self.events.send(event);
    }

    /// Enters the shutdown: the API refuses changes from now on, the status says `stopping`, and open event
    /// streams end (with a `cut` event) so that they do not hold up the servers' shutdown. A `restart` is
    /// announced first.
    pub(crate) fn begin_shutdown(&self, restart: bool) {
        if restart {
            self.sup.publish_monitor_event(pm_core::EventKind::MonitorRestart {});
        }
        self.sup.event_bus().close();
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Drops the entry `id` from supervision and from the registry, leaving its process running (a partner no
    /// longer supervised).
    pub(crate) async fn forget(&self, id: &str) -> Result<(), Error> {
        let _ = self.sup.detach(id).await;
        let sync = self.sync().await;
        let id = id.to_owned();
        self.transaction(&sync, API_LOCK_TIMEOUT, move |registry| {
            registry.processes.remove(&id);
            Ok(())
        })
        .await
    }

    /// Stores a new configuration of the entry `id` in the registry; the next reconcile hands it to the
    /// process's task.
    pub(crate) async fn store_config(&self, config: ProcessConfig) -> Result<(), Error> {
        let sync = self.sync().await;
        self.transaction(&sync, API_LOCK_TIMEOUT, move |registry| {
            if let Some(stored) = registry.processes.get_mut(&config.id) {
                stored.config = config;
            }
            Ok(())
        })
        .await
    }

    /// Writes the observed state of every process to the registry in one transaction (the registry writer's
    /// write, which also folds the journal into the file).
    ///
    /// Every outcome in memory when it takes the guard is in what it writes: a caller holding a commit ticket
    /// taken before then is covered by it ([`Monitor::durable`]).
    pub(crate) async fn flush(&self) -> Result<(), Error> {
        #[cfg(test)]
        if self.folds_held.load(Ordering::SeqCst) {
            return Ok(());
        }
        let sync = self.sync().await;
        // Read before the snapshots: every ticket up to here belongs to an outcome already in memory.
        let covers = self.commit_requested.load(Ordering::SeqCst);
        let (sup, written) = (self.sup.clone(), self.written_rev.clone());
        let revs = self
            .transaction_ordered(&sync, Duration::from_secs(10), move |registry| {
                // Taken here, with the journal's appends held: every line appended before is older than these
                // snapshots (and is in `registry`), every line appended after is newer.
                let snapshots = sup.snapshots();
                let written = written.lock().expect("written revisions");
                let mut revs = Vec::new();
                for snapshot in snapshots {
                    let id = &snapshot.entry.config.id;
                    let Some(stored) = registry.processes.get_mut(id) else { continue };
                    let (revs_now, before) = (snapshot.config_rev, written.get(id).copied().unwrap_or_default());
                    // An entry the registry shares with the task is what memory holds already.
                    // Else the task's entry itself, taken without a copy when that is what the merge would make.
                    if !stored.shares(&snapshot.entry) && !crate::footprint::take_observed(stored, &snapshot.entry) {
                        merge_runtime(stored, &snapshot.entry);
                        if revs_now.enabled > before.enabled {
                            stored.config.enabled = snapshot.entry.config.enabled;
                        }
                        if revs_now.autostart > before.autostart {
                            stored.config.autostart = snapshot.entry.config.autostart;
                        }
                        crate::footprint::share(stored, &snapshot.entry);
                    }
                    if revs_now != before {
                        revs.push((id.clone(), revs_now));
                    }
                }
                Ok(revs)
            })
            .await?;
        self.note_written(revs);
        self.commit_done.fetch_max(covers, Ordering::SeqCst);
        Ok(())
    }

    /// Lets the cached registry take each task's entry where the two differ only in what the writer takes from the
    /// task (what [`Monitor::flush`] would store without a merge), in memory, without writing the file: the next
    /// flush writes it ([`Store::change_cached`]). For the writer while it holds its writes back during a mass
    /// start: every start copies its entry (the cache shares it with the task), and without this the cache kept
    /// each parsed entry until the write after the start, which then freed them all at once among the start's own
    /// allocations, leaving the heap in holes that stay resident (about 0.5 MiB at 1,000; issue 19). Answers how
    /// many entries the cache took.
    pub(crate) fn adopt_entries(&self) -> usize {
        let sup = self.sup.clone();
        let mut adopted = 0;
        self.store.change_cached(|registry| {
            // Taken with the appends held, after the journal's lines were applied: newer than every one of them.
            sup.for_each_entry(|entry| {
                let Some(stored) = registry.processes.get_mut(&entry.config.id) else { return };
                if crate::footprint::take_observed(stored, entry) {
                    adopted += 1;
                }
            });
            adopted > 0
        });
        adopted
    }

    /// Stores the outcomes of `ids` now in memory before the caller answers, as journal lines (one small append
    /// and `fdatasync`, whatever the number of processes), sharing the append with concurrent callers (group
    /// commit): a caller takes a ticket, and returns as soon as a commit or flush that began after its ticket
    /// has finished, its own or another caller's (or the writer's); only when none did, it commits itself, for
    /// every caller waiting then. It never waits for a rewrite of the registry under way (see
    /// [`Store::append`]).
    pub(crate) async fn commit(&self, ids: impl IntoIterator<Item = String>) -> Result<(), Error> {
        let ticket = {
            let mut pending = self.commit_pending.lock().expect("commit pending");
            pending.extend(ids);
            self.commit_requested.fetch_add(1, Ordering::SeqCst) + 1
        };
        let _commit = self.commit_lock.lock().await;
        if self.commit_done.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let (covers, pending) = {
            let mut pending = self.commit_pending.lock().expect("commit pending");
            (self.commit_requested.load(Ordering::SeqCst), std::mem::take(&mut *pending))
        };
        let (store, closed, sup, written) =
            (self.store.clone(), self.closed.clone(), self.sup.clone(), self.written_rev.clone());
        let ids = pending.clone();
        let res = on_blocking_pool(move || {
            store.append(Duration::from_secs(10), move || {
                // Checked with the appends held: nothing is stored after the final states.
                not_closed(&closed)?;
                let written = written.lock().expect("written revisions");
                let mut changes = Vec::with_capacity(ids.len());
                let mut revs = Vec::new();
                for id in ids {
                    let Some(snapshot) = sup.snapshot(&id) else { continue };
                    let (update, rev) = update_of(&snapshot, &written);
                    changes.push(Change::Update(update));
                    revs.extend(rev.map(|rev| (id, rev)));
                }
                Ok((revs, changes))
            })
        })
        .await;
        match res {
            Ok(revs) => {
                self.note_written(revs);
                self.commit_done.fetch_max(covers, Ordering::SeqCst);
                Ok(())
            }
            Err(err) => {
                // Handed back to the next commit.
                self.commit_pending.lock().expect("commit pending").extend(pending);
                Err(err)
            }
        }
    }

    /// Stores the outcome of a local client's request `action` on `id`, now in memory, with the request cleared
    /// from the entry's `pendingAction` (unless the client asked for something else since), in one registry
    /// transaction: the client, which takes a cleared request as done, reads the outcome and never the state
    /// from before it (a stop of a process whose start was still under way answered "stopped" before it ran, and
    /// a monitor killed then started it again). A request whose outcome cannot be stored stays in the file: the
    /// next monitor carries it out.
    ///
    /// The registry file itself, with the journal folded in, not a journal line: a line answering the request
    /// (`pendingDone`) stayed unfolded until the writer's next rewrite, and a hand edit of the file that asked
    /// for the same action again meanwhile (an editor does not fold the journal) had its new request cleared by
    /// the old answer when the file was read with the journal (`cargo xtask bench`'s local starts, every time).
    async fn answer_request(&self, id: String, action: PendingAction) {
        let (sup, written) = (self.sup.clone(), self.written_rev.clone());
        let key = id.clone();
        let sync = self.sync().await;
        let res = self
            .transaction_ordered(&sync, Duration::from_secs(10), move |registry| {
                let Some(snapshot) = sup.snapshot(&key) else { return Ok(None) };
                let (mut update, rev) = update_of(&snapshot, &written.lock().expect("written revisions"));
                update.pending_done = Some(action);
                Change::Update(update).apply(registry);
                Ok(rev.map(|rev| (key, rev)))
            })
            .await;
        drop(sync);
        match res {
            Ok(rev) => self.note_written(rev.into_iter().collect()),
            Err(err) => {
                tracing::warn!(process = %id, "cannot store the outcome of a local {action:?} request: {err}");
                return;
            }
        }
        let mut handed = self.handed.lock().expect("handed requests");
        if handed.get(&id) == Some(&action) {
            handed.remove(&id);
        }
    }

    /// Records config revisions stored (each field's highest: a commit and a rewrite may finish in any order).
    fn note_written(&self, revs: Vec<(String, ConfigRevs)>) {
        let mut written = self.written_rev.lock().expect("written revisions");
        for (id, revs) in revs {
            let held = written.entry(id).or_default();
            held.enabled = held.enabled.max(revs.enabled);
            held.autostart = held.autostart.max(revs.autostart);
        }
    }

    /// Forgets the stored revisions of `id` (a process that comes or goes starts its revisions afresh).
    fn forget_written(&self, id: &str) {
        self.written_rev.lock().expect("written revisions").remove(id);
    }

    /// Stores changes as journal lines on the blocking pool, under the registry-sync guard `_held` (see
    /// [`Store::journal`]); nothing once the final states are written.
    pub(crate) async fn journal<T: Send + 'static>(
        &self,
        _held: &SyncGuard<'_>,
        timeout: Duration,
        f: impl FnOnce(&Registry) -> Result<(T, Vec<Change>), Error> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.store.clone();
        let closed = self.closed.clone();
        on_blocking_pool(move || {
            store.journal(timeout, |registry| {
                not_closed(&closed)?;
                f(registry)
            })
        })
        .await
    }

    /// Stores final entries (after the supervisor shut down) in one transaction; `clean` marks a clean
    /// shutdown (the next start is a boot, not a resume).
    pub(crate) async fn flush_entries(&self, entries: Vec<ProcessEntry>, clean: bool) -> Result<(), Error> {
        let sync = self.sync().await;
        let closed = self.closed.clone();
        let handed = self.handed.clone();
        // With the appends held: no acknowledged outcome is appended after the final states.
        self.transaction_ordered(&sync, Duration::from_secs(10), move |registry| {
            closed.store(true, Ordering::SeqCst);
            if clean {
                registry.monitor_running = false;
                // The clean stop ended every process: requests under way are over with it (a start asked for
                // then is not carried out at the next boot).
                for (id, action) in handed.lock().expect("handed requests").drain() {
                    if let Some(stored) = registry.processes.get_mut(&id) {
                        if stored.pending_action == Some(action) {
                            stored.pending_action = None;
                        }
                    }
                }
            }
            for entry in entries {
                if let Some(stored) = registry.processes.get_mut(&entry.config.id) {
                    merge_runtime(stored, &entry);
                    stored.config.enabled = entry.config.enabled;
                    stored.config.autostart = entry.config.autostart;
                }
            }
            Ok(())
        })
        .await
    }

    /// Picks up edits of local clients: new and removed entries, configuration changes, pending actions and
    /// settings. Cheap when the file did not change (one `stat`).
    pub(crate) async fn reconcile(self: &Arc<Self>) -> Result<(), Error> {
        let stamp = self.store.stamp();
        let mut sync = self.sync().await;
        if stamp.is_none() {
            drop(sync);
            return self.restore_registry().await;
        }
        if stamp == sync.last_stamp {
            return Ok(());
        }
        // Per process: the configuration in memory and which of its fields the task changed since they were last
        // written (those keep memory's value; the file's edits of every other field are taken up).
        let memory: BTreeMap<String, Held> = {
            let written_rev = self.written_rev.lock().expect("written revisions");
            self.sup
                .snapshots()
                .into_iter()
                .map(|snapshot| {
                    let id = snapshot.entry.config.id.clone();
                    let written = written_rev.get(&id).copied().unwrap_or_default();
                    (id, Held::of(snapshot.entry.config.clone(), snapshot.config_rev, written))
                })
                .collect()
        };
        let handed = self.handed.lock().expect("handed requests").clone();
        let unusable_sink = self.clone();
        let plan = self
            .transaction(&sync, Duration::from_secs(10), move |registry| {
                unusable_sink.template.lock().expect("template").unusable = registry.unusable.clone();
                Ok(crate::decide::reconcile_plan(registry, &memory, &handed))
            })
            .await?;
        sync.last_stamp = stamp;
        // Processes that come or go start their revisions afresh.
        for id in plan.added.iter().map(|entry| &entry.config.id).chain(&plan.removed) {
            self.forget_written(id);
        }
        // Applied under the same guard: an API change cannot come between reading the file and handing its edits
        // to the processes' tasks, and requests reach each task in the order they were decided.
        self.apply_plan(plan).await;
        drop(sync);
        Ok(())
    }

    /// Hands a reconcile plan over; called with the registry guard held. Nothing here waits on a process:
    /// requests are queued to the tasks in order, and their outcomes awaited elsewhere.
    async fn apply_plan(self: &Arc<Self>, plan: Plan) {
        let standalone_before = self.standalone();
        let settings_changed = {
            let mut current = self.settings.write().expect("settings");
            let changed = *current != plan.settings;
            *current = plan.settings;
            let remote = &current.remote_access;
            self.sup.set_exec_policy(&remote.executable_whitelist, &remote.executable_blacklist);
            changed
        };
        if settings_changed {
            self.note_standalone(standalone_before);
            self.request(DaemonEvent::SettingsChanged);
        }
        for entry in plan.added {
            tracing::info!(process = %entry.config.id, "registered by a local client");
            if let Err(err) = self.sup.insert(entry, Begin::Registered) {
                tracing::warn!("cannot take up a new registry entry: {err}");
            }
        }
        for (config, base) in plan.changed {
            let _ = self.sup.update_config_since(config, base).await;
        }
        for id in plan.removed {
            tracing::info!(process = %id, "deregistered by a local client");
            if let Ok(removal) = self.sup.begin_remove(&id) {
                tokio::spawn(removal);
            }
        }
        for (id, action) in plan.actions {
            self.handed.lock().expect("handed requests").insert(id.clone(), action);
            let monitor = self.clone();
            if self.needs_dependency_steps(&id, action) {
                // Dependencies to start or dependents to stop first: not a single hand-over to one task.
                tokio::spawn(async move {
                    let res = match action {
                        PendingAction::Start => monitor.start_after_dependencies(&id).await,
                        PendingAction::Stop => monitor.stop_after_dependents(&id).await.map(|(state, _)| state),
                        PendingAction::Restart => monitor.restart_with_dependencies(&id).await,
                    };
                    monitor.request_done(id, action, res).await;
                });
                continue;
            }
            let queued = match action {
                PendingAction::Start => self.sup.enqueue(&id, Cmd::Start).await,
                PendingAction::Stop => self.sup.enqueue(&id, Cmd::Stop).await,
                PendingAction::Restart => self.sup.enqueue(&id, Cmd::Restart).await,
            };
            tokio::spawn(async move {
                let res = match queued {
                    Ok(reply) => reply.await.unwrap_or(Err(Error::ShuttingDown)),
                    Err(err) => Err(err),
                };
                monitor.request_done(id, action, res).await;
            });
        }
    }

    /// A local client's request has been carried out (or has failed: its `lastError` says why): its outcome is
    /// stored with the request cleared.
    async fn request_done(&self, id: String, action: PendingAction, res: Result<ProcessState, Error>) {
        if let Err(err) = res {
            tracing::warn!(process = %id, "local {action:?} request failed: {err}");
        }
        self.answer_request(id, action).await;
    }

    /// Writes the registry back from memory after it disappeared (deleted by hand, say): every process with
    /// its configuration and state, and the settings in force. Nothing is stopped meanwhile.
    pub(crate) async fn restore_registry(&self) -> Result<(), Error> {
        let _sync = self.sync().await;
        let mut rebuilt = self.template.lock().expect("template").clone();
        let settings = self.settings.read().expect("settings").clone();
        rebuilt.standalone_mode = settings.standalone_mode;
        rebuilt.remote_access = settings.remote_access;
        rebuilt.partner_discovery = settings.partner_discovery;
        rebuilt.monitor_running = true;
        rebuilt.processes = self.sup.list().into_iter().map(|entry| (entry.config.id.clone(), entry.into())).collect();
        tracing::error!(
            "registry {} is missing; writing it back from memory ({} processes)",
            self.store.paths().registry_file().display(),
            rebuilt.processes.len()
        );
        let store = self.store.clone();
        let closed = self.closed.clone();
        on_blocking_pool(move || {
            store.transaction(Duration::from_secs(10), move |registry| {
                not_closed(&closed)?;
                // Memory holds every journal line this monitor appended: the rebuilt file holds them all.
                let folded = registry.journal_seq;
                *registry = rebuilt;
                registry.journal_seq = folded;
                Ok::<_, Error>(())
            })
        })
        .await
    }

    /// Registers a process: stored in the registry first, then supervised (started when it has autostart).
    pub(crate) async fn register_entry(&self, entry: ProcessEntry, begin: Begin) -> Result<(), Error> {
        // Nothing the registry would refuse on its next read is stored.
        entry.config.validate()?;
        self.sup.containment().check_limits(&entry.config)?;
        let sync = self.sync().await;
        let id = entry.config.id.clone();
        if self.sup.get(&id).is_some() {
            return Err(Error::AlreadyExists(id));
        }
        // A new process starts its revisions afresh; an earlier one of the same id wrote its own.
        self.forget_written(&id);
        let stored = entry.clone();
        // One journal line, not a rewrite of the registry: the answer costs the same whatever the number of
        // processes.
        self.journal(&sync, API_LOCK_TIMEOUT, move |registry| {
            if registry.processes.contains_key(&stored.config.id) {
                return Err(Error::AlreadyExists(stored.config.id.clone()));
            }
            if stored.config.untrusted {
                let max = registry.remote_access.max_untrusted_processes;
                let count = registry.processes.values().filter(|entry| entry.config.untrusted).count();
                if count >= max as usize {
                    return Err(Error::NotAllowed(format!(
                        "Too many processes registered by untrusted hosts (limit {max}, \
                         remoteAccess.maxUntrustedProcesses)"
                    )));
                }
            }
            // A cycle is refused before anything is stored (a new entry without dependencies closes none).
            if !stored.config.depends_on.is_empty() {
                pm_core::check_new_dependencies(registry, &stored.config)?;
            }
            Ok(((), vec![Change::Add(Box::new(stored))]))
        })
        .await?;
        self.sup.insert(entry, begin)
    }

    /// Removes a process from the registry, then stops it (outside the registry lock). Unless `force`, a process
    /// others depend on is refused, naming them.
    pub(crate) async fn deregister_entry(&self, id: &str, force: bool) -> Result<(), Error> {
        if !force {
            let dependents = self.sup.dependents_of(id);
            if !dependents.is_empty() {
                return Err(crate::deps::needed_by(id, &dependents));
            }
        }
        let known = {
            let sync = self.sync().await;
            self.forget_written(id);
            let known = self.sup.get(id);
            let key = id.to_owned();
            let removed = self
                .journal(&sync, API_LOCK_TIMEOUT, move |registry| {
                    let removed = registry.processes.contains_key(&key);
                    Ok((removed, if removed { vec![Change::Remove(key)] } else { Vec::new() }))
                })
                .await?;
            if known.is_none() && !removed {
                return Err(Error::NotFound(id.to_owned()));
            }
            known
        };
        match self.sup.remove(id).await {
            Ok(_) => Ok(()),
            Err(Error::NotFound(_)) => {
                // The registry watch saw the entry go and the reconcile is ending the process: the answer still
                // waits until it has ended, as a deregister's does.
                if let Some(entry) = known {
                    wait_until_ended(&entry).await;
                }
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    pub(crate) fn status(&self) -> MonitorStatus {
        let (managed, running) = self.sup.counts();
        let settings = self.settings.read().expect("settings").clone();
        let partner_id = settings.partner_discovery.partner_instance_id.clone();
        let partner = partner_id.as_deref().and_then(|id| self.sup.get(id)).filter(|entry| entry.config.partner);
        let partner_status = partner_id.as_ref().map(|_| match &partner {
            Some(entry) if entry.state == ProcessState::Running => "alive".to_owned(),
            Some(entry) if entry.state == ProcessState::Starting => "starting".to_owned(),
            Some(_) => "unreachable".to_owned(),
            None => "unknown".to_owned(),
        });
        let Ports { aliveness: aliveness_port, remote: remote_port } = self.ports();
        MonitorStatus {
            instance_id: self.instance_id.clone(),
            pid: self.pid,
            started_at: self.started_at,
            uptime: self.started.elapsed().as_secs(),
            state: if self.stopping.load(Ordering::Relaxed) { MonitorState::Stopping } else { MonitorState::Running },
            standalone_mode: self.standalone(),
            partner_instance_id: partner_id,
            partner_status,
            partner_pid: partner.and_then(|entry| entry.pid),
            managed_process_count: managed,
            running_process_count: running,
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            aliveness_port,
            remote_port,
            containment: Some(self.sup.containment().mode().to_owned()),
            containment_reason: Some(self.sup.containment().reason().to_owned()),
            // Cheap while the file is the version the monitor last read or wrote (a stat and the journal): so
            // that `--status` need not parse the registry itself.
            registry_error: self.store.check_readable().err().map(|err| error_chain(&err)),
        }
    }
}

/// `err` with its sources, as `{:#}` of an `anyhow` error prints it (the CLI's wording when it reads the registry
/// itself).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs a registry file operation on the blocking pool.
async fn on_blocking_pool<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|err| Error::internal("registry task failed", err))?
}

/// Refuses to store anything once the final states of a shutdown are written.
fn not_closed(closed: &AtomicBool) -> Result<(), Error> {
    if closed.load(Ordering::SeqCst) {
        return Err(Error::ShuttingDown);
    }
    Ok(())
}

/// The journal update of a process's `snapshot` (with `enabled`/`autostart` when the task changed them since
/// they were `written`), and its config revisions when they are not all written yet.
fn update_of(snapshot: &crate::Snapshot, written: &HashMap<String, ConfigRevs>) -> (EntryUpdate, Option<ConfigRevs>) {
    let before = written.get(&snapshot.entry.config.id).copied().unwrap_or_default();
    let now = snapshot.config_rev;
    let update = EntryUpdate::of(&snapshot.entry, now.enabled > before.enabled, now.autostart > before.autostart);
    (update, (now != before).then_some(now))
}

/// Copies what the monitor observes (never the configuration, never a pending request) onto a stored entry:
/// the fields a journal line's `update` holds.
fn merge_runtime(stored: &mut ProcessEntry, observed: &ProcessEntry) {
    pm_registry::EntryUpdate::of(observed, false, false).apply(stored);
}

impl pm_http::ControlPlane for Monitor {
    async fn list(&self) -> Vec<ProcessStatus> {
        self.statuses(None).await
    }

    async fn list_body(&self, keep: impl Fn(&str) -> bool + Send) -> Result<Vec<u8>, serde_json::Error> {
        Monitor::list_body(self, keep).await
    }

    async fn get(&self, id: &str) -> Result<ProcessStatus, Error> {
        self.statuses(Some(id)).await.pop().ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    fn process_config(&self, id: &str) -> Result<ProcessConfig, Error> {
        self.sup.get(id).map(|entry| entry.config).ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    async fn register(&self, config: ProcessConfig) -> Result<(), Error> {
        self.guard()?;
        config.validate()?;
        // The partner's id is how the two monitors supervise each other: an entry of that id taken by another
        // process would silently end mutual supervision.
        let partner = self.settings.read().expect("settings").partner_discovery.partner_instance_id.clone();
        if pm_core::is_partner_id(&self.instance_id, partner.as_deref(), &config.id) {
            return Err(Error::AlreadyExists(config.id));
        }
        self.register_entry(ProcessEntry::new(config, Timestamp::now()), Begin::Registered).await
    }

    async fn deregister(&self, id: &str) -> Result<(), Error> {
        self.guard()?;
        self.deregister_entry(id, false).await
    }

    async fn deregister_with(&self, id: &str, force: bool) -> Result<(), Error> {
        self.guard()?;
        self.deregister_entry(id, force).await
    }

    async fn stop_reporting(&self, id: &str) -> Result<(ProcessState, Vec<String>), Error> {
        let res = self.stop_after_dependents(id).await;
        let touched = res.as_ref().map(|(_, stopped)| stopped.clone()).unwrap_or_default();
        self.durable(res, std::iter::once(id.to_owned()).chain(touched)).await
    }

    async fn start(&self, id: &str) -> Result<ProcessState, Error> {
        self.guard()?;
        let res = self.start_after_dependencies(id).await;
        self.durable(res, self.with_dependencies(id)).await
    }

    async fn stop(&self, id: &str) -> Result<ProcessState, Error> {
        let res = self.stop_after_dependents(id).await;
        let touched = res.as_ref().map(|(_, stopped)| stopped.clone()).unwrap_or_default();
        self.durable(res.map(|(state, _)| state), std::iter::once(id.to_owned()).chain(touched)).await
    }

    async fn restart(&self, id: &str) -> Result<ProcessState, Error> {
        self.guard()?;
        let res = self.restart_with_dependencies(id).await;
        let mut touched = self.with_dependencies(id);
        if self.sup.get(id).is_some_and(|entry| entry.config.restart_dependents) {
            touched.extend(self.with_dependents(id));
        }
        self.durable(res, touched).await
    }

    async fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), Error> {
        if !enabled && self.supervisor().get(id).is_some() {
            // Disabling stops it: the processes that depend on it stop first, as for a stop.
            self.supervisor().stop_dependents(id).await;
        }
        let res = self.ask_in_order(id, |reply| Cmd::SetEnabled(enabled, reply)).await;
        self.durable(res, [id.to_owned()]).await
    }

    async fn set_autostart(&self, id: &str, autostart: bool) -> Result<(), Error> {
        let res = self.ask_in_order(id, |reply| Cmd::SetAutostart(autostart, reply)).await;
        self.durable(res, [id.to_owned()]).await
    }

    fn monitor_status(&self) -> MonitorStatus {
        self.status()
    }

    async fn restart_monitor(&self) -> Result<(), Error> {
        self.guard()?;
        self.events.send(DaemonEvent::RestartMonitor).map_err(|_| Error::ShuttingDown)
    }

    /// The settings in force: standalone mode includes a `--standalone` of this run.
    fn settings(&self) -> Settings {
        let mut settings = self.settings.read().expect("settings").clone();
        settings.standalone_mode |= self.standalone_override;
        settings
    }

    async fn update_settings(&self, update: SettingsUpdate) -> Result<Settings, Error> {
        if self.standalone_override && update == SettingsUpdate::StandaloneMode(false) {
            return Err(Error::InvalidField(
                "standalone mode is forced by --standalone for this run; restart the monitor without the flag to \
                 turn it off"
                    .to_owned(),
            ));
        }
        let sync = self.sync().await;
        let settings = self
            .transaction(&sync, API_LOCK_TIMEOUT, move |registry| {
                update.apply(registry)?;
                Ok(Settings::of(registry))
            })
            .await?;
        self.sup.set_exec_policy(
            &settings.remote_access.executable_whitelist,
            &settings.remote_access.executable_blacklist,
        );
        let standalone_before = self.standalone();
        *self.settings.write().expect("settings") = settings;
        self.note_standalone(standalone_before);
        self.request(DaemonEvent::SettingsChanged);
        Ok(pm_http::ControlPlane::settings(self))
    }

    fn is_remote(&self, id: &str) -> Option<bool> {
        self.sup.get(id).map(|entry| entry.config.is_remote)
    }

    fn event_bus(&self) -> Arc<pm_http::EventBus> {
        self.sup.event_bus()
    }

    fn run_dirs(&self, id: &str) -> Result<Vec<std::path::PathBuf>, Error> {
        if self.sup.get(id).is_none() {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(self.sup.paths().run_dirs(id))
    }
}

impl Monitor {
    /// Hands a request to a process's task under the registry guard (so it is ordered with what a reconcile
    /// hands over, never overtaken by an older reading of the file), then waits for the outcome without it.
    pub(crate) async fn ask_in_order<T>(
        &self,
        id: &str,
        make: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, Error>>) -> Cmd,
    ) -> Result<T, Error> {
        let reply = {
            let _sync = self.sync().await;
            self.sup.enqueue(id, make).await?
        };
        reply.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Stores the outcome of an acknowledged action on the processes `touched` before the answer goes out, so
    /// that a monitor killed right after answering does not undo it.
    async fn durable<T>(&self, res: Result<T, Error>, touched: impl IntoIterator<Item = String>) -> Result<T, Error> {
        if res.is_ok() {
            if let Err(err) = self.commit(touched).await {
                tracing::warn!("cannot store the outcome before answering: {err}");
            }
        }
        res
    }

    /// `id` and what it depends on, transitively (the processes a start of `id` may start).
    fn with_dependencies(&self, id: &str) -> Vec<String> {
        let mut found = vec![id.to_owned()];
        let mut next = 0;
        while let Some(current) = found.get(next).cloned() {
            next += 1;
            let Some(entry) = self.sup.get(&current) else { continue };
            for dep in entry.config.depends_on.into_keys() {
                if !found.contains(&dep) {
                    found.push(dep);
                }
            }
        }
        found
    }

    /// What depends on `id`, transitively (the processes a restart of `id` may stop and start again).
    fn with_dependents(&self, id: &str) -> Vec<String> {
        let mut found = vec![id.to_owned()];
        let mut next = 0;
        while let Some(current) = found.get(next).cloned() {
            next += 1;
            for dependent in self.sup.dependents_of(&current) {
                if !found.contains(&dependent) {
                    found.push(dependent);
                }
            }
        }
        found
    }

    /// Status of every process (or of `only`), with uptime, counters and the resource use of its group.
    pub(crate) async fn statuses(&self, only: Option<&str>) -> Vec<ProcessStatus> {
        let snapshots: Vec<crate::Snapshot> = match only {
            Some(id) => self.sup.snapshot(id).into_iter().collect(),
            None => self.sup.snapshots(),
        };
        let figures = self.figures(&snapshots).await;
        let statuses = snapshots.iter().map(|snapshot| figures.view(snapshot).to_status()).collect();
        crate::unusable::with_unusable(statuses, &self.template.lock().expect("template").unusable, only)
    }

    /// The body of `GET /processes`, written from the snapshots without a [`ProcessStatus`] (and copies of its
    /// strings) per process; with unusable registry entries, from [`Monitor::statuses`].
    pub(crate) async fn list_body(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<u8>, serde_json::Error> {
        if !self.template.lock().expect("template").unusable.is_empty() {
            let statuses = self.statuses(None).await;
            let views = statuses.iter().map(ProcessStatus::view).filter(|status| keep(status.id));
            return pm_http::list_body(views, statuses.len());
        }
        let snapshots = self.sup.snapshots();
        let figures = self.figures(&snapshots).await;
        let views = snapshots.iter().filter(|snapshot| keep(&snapshot.entry.config.id));
        pm_http::list_body(views.map(|snapshot| figures.view(snapshot)), snapshots.len())
    }

    /// CPU and memory of the processes of `snapshots` that have a child: from their cgroups where they have one,
    /// else from the sampler by process group.
    async fn figures(&self, snapshots: &[crate::Snapshot]) -> Figures {
        let from_cgroups = self.sup.cgroup_usage(snapshots, &mut self.cgroup_usage.lock().expect("cgroup usage"));
        let pgids: Vec<u32> = snapshots
            .iter()
            .filter(|snapshot| {
                snapshot.entry.state.has_child() && !from_cgroups.contains_key(&snapshot.entry.config.id)
            })
            .filter_map(|snapshot| snapshot.entry.pid)
            .collect();
        let usage = self.resources.usage(&pgids).await;
        Figures { from_cgroups, usage }
    }

    /// Publishes `standaloneChanged` when standalone mode is no longer `before`.
    fn note_standalone(&self, before: bool) {
        let now = self.standalone();
        if now != before {
            self.sup.publish_monitor_event(pm_core::EventKind::StandaloneChanged { enabled: now });
        }
    }

    fn guard(&self) -> Result<(), Error> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(Error::ShuttingDown);
        }
        Ok(())
    }
}

/// What [`Monitor::figures`] found.
struct Figures {
    from_cgroups: HashMap<String, (Option<f32>, u64)>,
    usage: HashMap<u32, crate::resources::Usage>,
}

impl Figures {
    /// The status of `snapshot` with its figures.
    fn view<'a>(&self, snapshot: &'a crate::Snapshot) -> pm_core::StatusView<'a> {
        let mut status = snapshot_view(snapshot);
        if let Some((cpu_percent, memory_bytes)) = self.from_cgroups.get(status.id) {
            status.cpu_percent = *cpu_percent;
            status.memory_bytes = Some(*memory_bytes);
        } else if let Some(usage) = status.pid.and_then(|pid| self.usage.get(&pid)) {
            status.cpu_percent = usage.cpu_percent;
            status.memory_bytes = Some(usage.rss_bytes);
        }
        status
    }
}

/// The status of `snapshot` (its figures aside), borrowing the snapshot's strings.
fn snapshot_view(snapshot: &crate::Snapshot) -> pm_core::StatusView<'_> {
    let mut status = snapshot.entry.status_view();
    if snapshot.entry.state.has_child() {
        status.uptime = snapshot.running_since.map(|since| since.elapsed().as_secs());
    }
    status.restarts_total = Some(snapshot.counters.restarts);
    status.check_failures_total = Some(snapshot.counters.check_failures);
    // An untrusted registration learns pass or fail of its checks, not how long they took (which would tell a
    // closed port from a filtered one).
    if !snapshot.entry.config.untrusted {
        status.last_check_ms = snapshot.counters.last_check.map(|took| took.as_secs_f64() * 1000.0);
    }
    status
}

/// Waits until the process `entry` recorded has ended (its stop timeout plus a margin at most).
async fn wait_until_ended(entry: &ProcessEntry) {
    let Some(pid) = entry.pid else { return };
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(entry.config.stop_timeout_ms()) + Duration::from_secs(5);
    while pm_registry::proc::is_same_process(pid, entry.pid_start_time) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use pm_core::{ProcessConfig, ProcessEntry, ProcessState, Registry, Timestamp};
    use pm_http::ControlPlane;
    use pm_registry::{Paths, Store};

    use super::*;
    use crate::SupervisorConfig;

    /// A monitor over a fresh registry holding one stopped process `job` (enabled, autostart), not started.
    pub(crate) async fn monitor_with_job(root: &std::path::Path) -> Arc<Monitor> {
        let paths = Paths::new(root, "default").unwrap();
        let store = Arc::new(Store::new(paths.clone()));
        let mut entry = ProcessEntry::new(ProcessConfig::new("job", "job", "/bin/true"), Timestamp::now());
        entry.state = ProcessState::Stopped;
        entry.last_started_at = Some(Timestamp::now());
        entry.last_stopped_at = Some(Timestamp::now());
        let stored = entry.clone();
        store
            .transaction(Duration::from_secs(5), move |registry: &mut Registry| {
                registry.processes.insert("job".to_owned(), stored.into());
                Ok::<_, pm_registry::Error>(())
            })
            .unwrap();
        let sup = Supervisor::new(SupervisorConfig {
            paths: paths.clone(),
            keep_runs: 10,
            default_cwd: root.to_path_buf(),
            extra_env: Vec::new(),
        });
        sup.resume(entry, crate::StartKind::Resume).unwrap();
        let (events, _) = mpsc::unbounded_channel();
        let registry = store.load().unwrap();
        let monitor = Arc::new(Monitor::new(store, sup, registry, true, events));
        monitor.reconcile().await.unwrap();
        monitor
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_list_body_written_from_snapshots_is_the_list_of_statuses() {
        let root = std::env::temp_dir().join(format!("pm-monitor-list-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let monitor = monitor_with_job(&root).await;
        let statuses = monitor.statuses(None).await;
        let body: serde_json::Value = serde_json::from_slice(&monitor.list_body(|_| true).await.unwrap()).unwrap();
        assert_eq!(body, serde_json::json!({ "processes": serde_json::to_value(&statuses).unwrap() }));
        assert_eq!(body["processes"][0]["id"], "job", "{body:#}");
        let hidden: serde_json::Value =
            serde_json::from_slice(&monitor.list_body(|id| id != "job").await.unwrap()).unwrap();
        assert_eq!(hidden, serde_json::json!({ "processes": [] }));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_local_edit_survives_an_api_change_of_another_field_stored_before_it_was_read() {
        let root = std::env::temp_dir().join(format!("pm-monitor-merge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let monitor = monitor_with_job(&root).await;
        // A local client turns autostart off; before the monitor reads the file, the API disables the process,
        // and that answer is stored first.
        monitor
            .store
            .transaction(Duration::from_secs(5), |registry: &mut Registry| {
                registry.processes.get_mut("job").unwrap().config.autostart = false;
                Ok::<_, pm_registry::Error>(())
            })
            .unwrap();
        monitor.set_enabled("job", false).await.unwrap();
        let stored = monitor.store.load().unwrap().processes["job"].config.clone();
        assert_eq!((stored.enabled, stored.autostart), (false, false), "the local autostart change was overwritten");
        // Reading the file then takes the local change up without undoing the API's (the process's task applies
        // it a moment after the reconcile hands it over).
        monitor.reconcile().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let held = loop {
            let held = monitor.sup.get("job").unwrap().config;
            if !held.autostart || std::time::Instant::now() > deadline {
                break held;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!((held.enabled, held.autostart), (false, false));
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A reading of the file taken before an API change (the plan of a reconcile that raced it) does not undo
    /// that change: the process stays disabled, while the reading's other edits are taken up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_reading_of_the_file_never_undoes_a_newer_api_change() {
        let root = std::env::temp_dir().join(format!("pm-monitor-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let monitor = monitor_with_job(&root).await;
        let read_at = monitor.sup.snapshot("job").unwrap().config_rev;
        let mut edited = monitor.sup.get("job").unwrap().config;
        edited.args = vec!["edited".to_owned()];
        assert!(edited.enabled && edited.autostart);
        monitor.set_enabled("job", false).await.unwrap();
        monitor.set_autostart("job", false).await.unwrap();
        monitor.sup.update_config_since(edited, read_at).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let held = loop {
            let held = monitor.sup.get("job").unwrap();
            if !held.config.args.is_empty() || std::time::Instant::now() > deadline {
                break held;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(held.config.args, vec!["edited".to_owned()], "the reading's own edit is taken up");
        assert!(!held.config.enabled && !held.config.autostart, "the API's newer changes were undone");
        assert_eq!(held.state, ProcessState::Disabled);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Concurrent callers share a commit: sixteen callers that want their outcome stored at the same moment cost
    /// two appends (the one under way when the others arrive, then one for all of them), not sixteen.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_callers_share_one_journal_append() {
        let root = std::env::temp_dir().join(format!("pm-monitor-group-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let monitor = monitor_with_job(&root).await;
        let journal = monitor.store.paths().journal_file();
        let lines = || std::fs::read_to_string(&journal).unwrap_or_default().lines().count();
        let before = lines();
        // On this one-thread runtime the callers all take their tickets before the first append has finished.
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let monitor = monitor.clone();
                tokio::spawn(async move { monitor.commit(["job".to_owned()]).await })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap().unwrap();
        }
        assert_eq!(lines() - before, 2, "{}", std::fs::read_to_string(&journal).unwrap_or_default());
        // What they stored is what memory holds.
        let stored = monitor.store.load().unwrap().processes["job"].clone();
        assert_eq!(stored.state, monitor.sup.get("job").unwrap().state);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The final write of a shutdown is the last one: a transaction that gets the registry lock after it (a
    /// flush still under way on the blocking pool) writes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_written_after_the_final_states() {
        let root = std::env::temp_dir().join(format!("pm-monitor-final-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let monitor = monitor_with_job(&root).await;
        let entries = monitor.sup.shutdown(|_| false).await;
        monitor.flush_entries(entries, true).await.unwrap();
        let stamp = monitor.store.stamp();
        let sync = monitor.sync().await;
        let late = monitor
            .transaction(&sync, Duration::from_secs(5), |registry| {
                registry.monitor_running = true;
                registry.processes.get_mut("job").unwrap().state = ProcessState::Running;
                Ok(())
            })
            .await;
        assert!(matches!(late, Err(Error::ShuttingDown)), "{late:?}");
        assert_eq!(monitor.store.stamp(), stamp);
        let stored = monitor.store.load().unwrap();
        assert!(!stored.monitor_running);
        assert_eq!(stored.processes["job"].state, ProcessState::Stopped);
        let _ = std::fs::remove_dir_all(&root);
    }
}
