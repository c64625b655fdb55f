//! The partner tick: every `partnerDiscovery.checkIntervalMs` (and on a settings change) the daemon keeps its
//! partner entry in line with the settings (the guide's "Watcher Registration").

use std::path::Path;
use std::sync::Arc;

use pm_core::{
    AlivenessCheck, MonitorState, PartnerDiscovery, ProcessConfig, ProcessEntry, ProcessState, RestartPolicy,
    StartupCheck, Timestamp,
};

use crate::actor::Begin;
use crate::monitor::Monitor;
use crate::partner::PartnerFacts;
use crate::StartKind;
use pm_registry::proc::Process;

/// Keeps the partner entry in line with the settings: registers it (adopting a running partner, or starting
/// one `program` when `startPartnerIfMissing`), re-adopts a partner that came back on its own, and drops it in
/// standalone mode (leaving the partner running).
pub(crate) async fn partner_tick_once(monitor: &Arc<Monitor>, program: &Path) {
    let discovery = monitor.partner_discovery();
    let partner_id = discovery
        .partner_instance_id
        .clone()
        .filter(|id| id != monitor.instance_id() && pm_core::validate_instance_id(id).is_ok());
    let standalone = monitor.standalone();
    drop_other_partners(monitor, if standalone { None } else { partner_id.as_deref() }).await;
    let Some(partner_id) = partner_id.filter(|_| !standalone) else { return };
    let sup = monitor.supervisor();
    let live = sup.live_instance(&partner_id);
    // Where the partner serves and how long it may take to stop, from its own registry, every tick.
    let facts = {
        let (paths, id, read) = (sup.paths().clone(), partner_id.clone(), discovery.clone());
        match tokio::task::spawn_blocking(move || crate::partner::read_facts(&paths, &id, &read)).await {
            Ok(facts) => facts,
            Err(_) => crate::partner::facts_of(None, &partner_id, &discovery),
        }
    };
    let wanted = partner_config(&partner_id, &discovery, &facts, program, sup.paths().root());
    match sup.get(&partner_id) {
        Some(entry) if entry.config.partner => keep_partner(monitor, entry, wanted, live, &facts).await,
        Some(_) => {}
        None if live.is_none() && !discovery.start_partner_if_missing => {}
        None => take_up_partner(monitor, wanted, live, &facts).await,
    }
}

/// Stops supervising every partner entry but that of `partner_id` (all of them in standalone mode).
async fn drop_other_partners(monitor: &Monitor, partner_id: Option<&str>) {
    for id in monitor.supervisor().ids_where(|entry| entry.config.partner) {
        if Some(id.as_str()) != partner_id {
            tracing::info!(partner = %id, "no longer supervising the partner (standalone or reconfigured)");
            let _ = monitor.forget(&id).await;
        }
    }
}

/// The partner entry exists: its configuration follows the settings and the partner's facts, and a partner that
/// came back on its own is supervised again.
async fn keep_partner(
    monitor: &Monitor,
    entry: ProcessEntry,
    mut wanted: ProcessConfig,
    live: Option<Process>,
    facts: &PartnerFacts,
) {
    let sup = monitor.supervisor();
    // Settings changed since the entry was made (interval, threshold), or the partner serves on another port or
    // has processes that take longer to stop: store the new entry, which the reconcile step hands to the
    // process's task.
    wanted.enabled = entry.config.enabled;
    wanted.autostart = entry.config.autostart;
    let id = entry.config.id.clone();
    if wanted != entry.config {
        if let Err(err) = monitor.store_config(wanted).await {
            tracing::warn!(partner = %id, "cannot update the partner entry: {err}");
        }
    }
    if matches!(entry.state, ProcessState::Stopped | ProcessState::Failed) {
        // A partner that came back on its own is supervised again; one that is shutting down (stopped by
        // `--stop` without us) is not, or its exit would be taken for a crash and undone.
        if let Some(process) = live {
            if reported_state(monitor, facts, process.pid).await == Some(MonitorState::Running) {
                let _ = sup.adopt(&id, process).await;
            }
        }
    }
}

/// No partner entry yet: one is registered, adopting the partner that runs (unless it is shutting down: its exit
/// would read as a crash and be undone), or starting one.
async fn take_up_partner(monitor: &Monitor, config: ProcessConfig, live: Option<Process>, facts: &PartnerFacts) {
    let id = config.id.clone();
    let mut entry = ProcessEntry::new(config, Timestamp::now());
    if let Some(Process { pid, start_time }) = live {
        if reported_state(monitor, facts, pid).await == Some(MonitorState::Stopping) {
            return;
        }
        entry.pid = Some(pid);
        entry.pid_start_time = start_time;
        entry.state = ProcessState::Running;
    }
    tracing::info!(partner = %id, running = ?live.map(|process| process.pid), "supervising the partner instance");
    if let Err(err) = monitor.register_entry(entry, Begin::MonitorStart(StartKind::Boot)).await {
        tracing::warn!(partner = %id, "cannot register the partner: {err}");
    }
}

/// What the partner instance with lock holder `pid` says of itself on the port it serves.
async fn reported_state(monitor: &Monitor, facts: &PartnerFacts, pid: u32) -> Option<MonitorState> {
    crate::partner::reported_state(monitor.supervisor().http(), &facts.status_url(), pid).await
}

/// The managed-process entry through which an instance supervises its partner (the guide's "Watcher
/// Registration"): `program` with `--instance-id` on the same `home`, checked on the partner's `/alive`.
pub(crate) fn partner_config(
    partner_id: &str,
    discovery: &PartnerDiscovery,
    facts: &PartnerFacts,
    program: &Path,
    home: &Path,
) -> ProcessConfig {
    let mut check = AlivenessCheck::new(&facts.alive_url());
    check.interval_ms = discovery.check_interval_ms.max(100);
    check.timeout_ms = check.interval_ms.min(2000);
    check.consecutive_failures_required = discovery.failures_before_restart.max(1);
    check.startup_check = Some(StartupCheck {
        enabled: true,
        initial_delay_ms: 100,
        check_interval_ms: 200,
        max_attempts: 100,
        fail_action: pm_core::FailAction::Restart,
        extra: serde_json::Map::new(),
    });
    let mut res = ProcessConfig::new(partner_id, &format!("ProcessMonitor {partner_id}"), &program.to_string_lossy());
    res.args = vec![
        "--instance-id".to_owned(),
        partner_id.to_owned(),
        "--directory".to_owned(),
        home.to_string_lossy().into_owned(),
        "--detached".to_owned(),
    ];
    res.partner = true;
    res.restart_policy = Some(RestartPolicy {
        max_attempts: 5,
        backoff_intervals_ms: vec![500, 1000, 2000],
        reset_after_ms: 60_000,
        retry_indefinitely: true,
        indefinite_interval_ms: 5_000,
        restart_on: Default::default(),
        extra: serde_json::Map::new(),
    });
    res.aliveness_check = Some(Box::new(check));
    // The partner stops its processes before it exits: never SIGKILLed in the middle of that.
    res.stop_timeout_ms = Some(facts.stop_grace_ms);
    res
}
