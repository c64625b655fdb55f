//! The chaos run: two client threads drive one daemon — one through the remote API, one through the local
//! (registry file) client — registering, starting, stopping and restarting processes, while the daemon is
//! SIGKILLed at random moments and started again. After every cycle the clients pause and the run checks what
//! they were told against what runs; a sampler counts copies of every process all along.
//!
//! What a client was told is kept per process id (each client has ids of its own, so their requests never race
//! on one id): a registration is acknowledged once a call returned it; the wanted state is that of the last
//! call that answered with its outcome. A call whose answer was lost with the daemon leaves the outcome
//! unknown until the check observes it; a call that could not even connect changed nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pm_client::{LocalClientOptions, ProcessMonitorClient, RemoteClientOptions, RemoteProcessMonitorClient};
use pm_core::{ProcessState, ProcessStatus};

use crate::procs;
use crate::rng::Rng;
use crate::site::{DaemonOptions, Site};

/// How a chaos run is set up.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// Kill-and-restart cycles.
    pub cycles: u64,
    /// Seed of every random choice (kill moments, operations, ids).
    pub seed: u64,
    /// Processes each client registers at most.
    pub max_per_client: usize,
}

/// What a chaos run saw. Every list holds one line per incident.
#[derive(Debug, Default)]
pub struct ChaosReport {
    /// Cycles completed.
    pub cycles: u64,
    /// Daemons SIGKILLed (some of them while starting up).
    pub kills: u64,
    /// Of those, killed before they answered.
    pub early_kills: u64,
    /// Requests of each client: (acknowledged, outcome unknown, refused to connect).
    pub remote_calls: (u64, u64, u64),
    /// Same for the local client.
    pub local_calls: (u64, u64, u64),
    /// Registrations acknowledged.
    pub registrations: u64,
    /// Process starts (one line per start in the markers' files).
    pub starts: u64,
    /// Processes that were still running with the same PID across a kill of the daemon (adopted).
    pub adopted: u64,
    /// Acknowledged registrations missing, and processes that should run but do not.
    pub lost: Vec<String>,
    /// Two live copies of one process at once.
    pub duplicates: Vec<String>,
    /// Live copies the daemon does not supervise.
    pub orphans: Vec<String>,
    /// Processes running after an acknowledged stop.
    pub resurrected: Vec<String>,
    /// Everything else that went wrong (registry does not parse, zombies, leftovers, stuck clients).
    pub other: Vec<String>,
    /// Longest time the processes took to settle after a restart of the daemon.
    pub slowest_settle: Duration,
    /// Wall time.
    pub elapsed: Duration,
}

impl ChaosReport {
    /// Lost + duplicates + orphans + resurrected + other.
    pub fn violations(&self) -> usize {
        self.lost.len() + self.duplicates.len() + self.orphans.len() + self.resurrected.len() + self.other.len()
    }

    /// The figures on one line.
    pub fn figures(&self) -> String {
        format!(
            "cycles {} (kills {}, {} while starting), calls remote {}/{}/{} local {}/{}/{} (acked/unknown/refused), \
             registrations {}, starts {}, adopted {}, lost {}, duplicates {}, orphans {}, resurrected {}, other {}, \
             slowest settle {:.2?}, elapsed {:.1?}",
            self.cycles,
            self.kills,
            self.early_kills,
            self.remote_calls.0,
            self.remote_calls.1,
            self.remote_calls.2,
            self.local_calls.0,
            self.local_calls.1,
            self.local_calls.2,
            self.registrations,
            self.starts,
            self.adopted,
            self.lost.len(),
            self.duplicates.len(),
            self.orphans.len(),
            self.resurrected.len(),
            self.other.len(),
            self.slowest_settle,
            self.elapsed
        )
    }
}

/// Which client owns an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Remote,
    Local,
}

/// Whether a registration was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    /// Sent, answer lost.
    Unknown,
    /// Acknowledged.
    Yes,
}

/// The state the last answered call asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Running,
    Stopped,
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Expect {
    client: Client,
    reg: Reg,
    want: Want,
}

/// The outcome of one call as far as the caller can tell.
enum Told {
    /// Answered with its outcome.
    Acked,
    /// Sent, but no answer: it may or may not have happened.
    Unknown,
    /// Could not connect: nothing happened.
    Refused,
}

impl Told {
    fn name(&self) -> &'static str {
        match self {
            Told::Acked => "acknowledged",
            Told::Unknown => "outcome unknown",
            Told::Refused => "refused",
        }
    }
}

#[derive(Default)]
struct Control {
    paused: bool,
    stop: bool,
    idle: [bool; 2],
}

struct Shared {
    control: Mutex<Control>,
    wake: Condvar,
    model: Mutex<BTreeMap<String, Expect>>,
    calls: [[AtomicU64; 3]; 2],
    registrations: AtomicU64,
    problems: Mutex<Vec<String>>,
    /// What happened when (client calls with their answers, daemon kills and starts), for the incident reports.
    events: Mutex<Vec<(Duration, Option<String>, String)>>,
    started: Instant,
}

impl Shared {
    /// Blocks while paused; false once the run is over.
    fn may_go(&self, worker: usize) -> bool {
        let mut control = self.control.lock().unwrap();
        control.idle[worker] = true;
        self.wake.notify_all();
        while control.paused && !control.stop {
            control = self.wake.wait(control).unwrap();
        }
        if control.stop {
            return false;
        }
        control.idle[worker] = false;
        true
    }

    fn count(&self, worker: usize, told: &Told) {
        let idx = match told {
            Told::Acked => 0,
            Told::Unknown => 1,
            Told::Refused => 2,
        };
        self.calls[worker][idx].fetch_add(1, Ordering::Relaxed);
    }

    fn set(&self, id: &str, client: Client, reg: Option<Reg>, want: Option<Want>) {
        let mut model = self.model.lock().unwrap();
        let expect = model.entry(id.to_owned()).or_insert(Expect { client, reg: Reg::Unknown, want: Want::Unknown });
        if let Some(reg) = reg {
            expect.reg = reg;
        }
        if let Some(want) = want {
            expect.want = want;
        }
    }

    fn ids_of(&self, client: Client) -> Vec<String> {
        self.model.lock().unwrap().iter().filter(|(_, e)| e.client == client).map(|(id, _)| id.clone()).collect()
    }

    /// Notes an event about process `id` (or about the daemon when `None`).
    fn event(&self, id: Option<&str>, text: String) {
        self.events.lock().unwrap().push((self.started.elapsed(), id.map(str::to_owned), text));
    }

    /// The events about `id` and about the daemon, one per line.
    fn history(&self, id: &str) -> String {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|(_, about, _)| about.as_deref().is_none_or(|about| about == id))
            .map(|(at, about, text)| {
                format!("  {:>8.3}s {:<5} {text}\n", at.as_secs_f64(), about.as_deref().unwrap_or("-"))
            })
            .collect()
    }

    fn problem(&self, text: String) {
        eprintln!("chaos | {text}");
        self.problems.lock().unwrap().push(text);
    }
}

/// Runs the chaos scenario on `site` (which must not have a daemon yet) and answers what it saw.
pub fn run(site: &Site, config: &ChaosConfig) -> ChaosReport {
    let started = Instant::now();
    let mut rng = Rng::new(config.seed);
    let mut report = ChaosReport::default();
    let shared = Arc::new(Shared {
        control: Mutex::new(Control { paused: true, ..Control::default() }),
        wake: Condvar::new(),
        model: Mutex::new(BTreeMap::new()),
        calls: Default::default(),
        registrations: AtomicU64::new(0),
        problems: Mutex::new(Vec::new()),
        events: Mutex::new(Vec::new()),
        started,
    });
    let mut daemon = site.start_daemon();
    shared.event(None, format!("daemon {daemon} ready"));

    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let prefix = site.marker_prefix();
        let stop = sampler_stop.clone();
        let shared = shared.clone();
        std::thread::spawn(move || sample_copies(&prefix, &stop, &shared))
    };
    let workers = [Client::Remote, Client::Local].map(|client| {
        let shared = shared.clone();
        let rng = rng.fork();
        let ctx = WorkerCtx {
            client,
            dir: site.dir.clone(),
            remote_port: site.remote_port,
            max_ids: config.max_per_client,
            site_sleeper: SleeperFactory { dir: site.dir.clone(), marker_prefix: site.marker_prefix() },
        };
        std::thread::spawn(move || worker(ctx, shared, rng))
    });

    for cycle in 0..config.cycles {
        resume(&shared);
        std::thread::sleep(Duration::from_millis(rng.range(100, 900)));
        let running_before = running_pids(site, &shared);
        shared.event(None, format!("cycle {cycle}: SIGKILL daemon {daemon}"));
        site.kill_daemon(daemon);
        note_stored(site, &shared);
        report.kills += 1;
        std::thread::sleep(Duration::from_millis(rng.range(0, 150)));
        if rng.chance(15) {
            // Killed again while it starts up: lock taken, registry half taken over, servers not up yet.
            let early = site.spawn_daemon(&DaemonOptions::plain());
            std::thread::sleep(Duration::from_millis(rng.range(0, 80)));
            shared.event(None, format!("cycle {cycle}: SIGKILL daemon {early} while it starts"));
            site.kill_daemon(early);
            note_stored(site, &shared);
            report.kills += 1;
            report.early_kills += 1;
        }
        daemon = site.spawn_daemon(&DaemonOptions::plain());
        shared.event(None, format!("cycle {cycle}: daemon {daemon} spawned"));
        if let Err(err) = site.wait_ready(daemon, Duration::from_secs(20)) {
            shared.problem(format!("cycle {cycle}: the daemon did not come back: {err}"));
            break;
        }
        shared.event(None, format!("cycle {cycle}: daemon {daemon} ready; clients pause"));
        if !pause(&shared, Duration::from_secs(30)) {
            shared.problem(format!("cycle {cycle}: a client did not finish its call within 30 s"));
            break;
        }
        let took = check(site, &shared, &mut report, &format!("cycle {cycle}"));
        report.slowest_settle = report.slowest_settle.max(took);
        let running_after = running_pids(site, &shared);
        report.adopted += running_before.iter().filter(|(id, pid)| running_after.get(*id) == Some(*pid)).count() as u64;
        report.cycles += 1;
        if cycle % 10 == 9 || cycle + 1 == config.cycles {
            eprintln!(
                "chaos | after cycle {}: {} processes, {} violations so far, {:.1?}",
                cycle + 1,
                shared.model.lock().unwrap().len(),
                report.violations() + shared.problems.lock().unwrap().len(),
                started.elapsed()
            );
        }
    }

    // The end: clients stop, a last check, then the final stop of the daemon.
    {
        let mut control = shared.control.lock().unwrap();
        control.stop = true;
        shared.wake.notify_all();
    }
    for worker in workers {
        let _ = worker.join();
    }
    check(site, &shared, &mut report, "end");
    let zombie_deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let zombies: Vec<u32> =
            procs::scan().into_iter().filter(|p| p.is_zombie() && p.ppid == daemon).map(|p| p.pid).collect();
        if zombies.is_empty() {
            break;
        }
        if Instant::now() > zombie_deadline {
            shared.problem(format!("unreaped children of the daemon (zombies): {zombies:?}"));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = std::process::Command::new(&site.bin)
        .arg("--directory")
        .arg(&site.dir)
        .args(["--instance-id", crate::site::INSTANCE, "--stop"])
        .output()
        .expect("cannot run process_monitor --stop");
    if !output.status.success() {
        shared.problem(format!(
            "process_monitor --stop failed: {} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if let Err(left) = site.wait_all_gone(Duration::from_secs(15)) {
        let left: Vec<String> = left
            .iter()
            .map(|p| format!("pid {} ppid {} pgrp {} state {} {:?}", p.pid, p.ppid, p.pgrp, p.state, p.args))
            .collect();
        shared.problem(format!("after the final stop, processes of ours are left: {left:#?}"));
    }
    sampler_stop.store(true, Ordering::Relaxed);
    let incidents = sampler.join().unwrap_or_default();
    report.duplicates.extend(incidents);
    report.registrations = shared.registrations.load(Ordering::Relaxed);
    let calls = |worker: usize| {
        let counts = &shared.calls[worker];
        (counts[0].load(Ordering::Relaxed), counts[1].load(Ordering::Relaxed), counts[2].load(Ordering::Relaxed))
    };
    report.remote_calls = calls(0);
    report.local_calls = calls(1);
    report.starts = shared.model.lock().unwrap().keys().map(|id| site.starts(id).len() as u64).sum();
    report.other.extend(shared.problems.lock().unwrap().drain(..));
    report.elapsed = started.elapsed();
    report
}

/// Notes what the registry holds for every process (right after a kill: what the next daemon will find).
fn note_stored(site: &Site, shared: &Shared) {
    match site.registry() {
        Ok(registry) => {
            for (id, entry) in &registry.processes {
                let pending = entry.pending_action.map(|action| format!(", pending {action:?}")).unwrap_or_default();
                shared.event(Some(id), format!("stored: {} pid {:?}{pending}", entry.state, entry.pid));
            }
        }
        Err(err) => shared.event(None, format!("registry unreadable: {err}")),
    }
}

fn resume(shared: &Shared) {
    let mut control = shared.control.lock().unwrap();
    control.paused = false;
    shared.wake.notify_all();
}

/// Pauses the clients and waits until both are between calls.
fn pause(shared: &Shared, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut control = shared.control.lock().unwrap();
    control.paused = true;
    control.idle = [false; 2];
    loop {
        if control.idle.iter().all(|idle| *idle) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        control = shared.wake.wait_timeout(control, left).unwrap().0;
    }
}

/// The supervised PID of every process the daemon reports running.
fn running_pids(site: &Site, shared: &Shared) -> BTreeMap<String, u32> {
    let ids: BTreeSet<String> = shared.model.lock().unwrap().keys().cloned().collect();
    site.statuses()
        .unwrap_or_default()
        .into_iter()
        .filter(|(id, status)| ids.contains(id) && status.state == ProcessState::Running)
        .filter_map(|(id, status)| Some((id, status.pid?)))
        .collect()
}

/// Checks the clients' view against the daemon and the machine (clients paused); answers how long it took
/// the processes to settle. Incidents are added to `report`, and the model is brought in line with what
/// runs so that one incident is reported once.
fn check(site: &Site, shared: &Shared, report: &mut ChaosReport, when: &str) -> Duration {
    let started = Instant::now();
    // Requests a local client left in the file are carried out first.
    let deadline = started + Duration::from_secs(10);
    loop {
        match site.registry() {
            Ok(registry) if registry.processes.values().all(|entry| entry.pending_action.is_none()) => break,
            Ok(_) => {}
            Err(err) => {
                report.other.push(format!("{when}: the registry does not parse: {err}"));
                return started.elapsed();
            }
        }
        if Instant::now() > deadline {
            report.other.push(format!("{when}: requests of the local client still pending after 10 s"));
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    // Settling takes well under a second (backoff 50 ms); what has not settled in 6 s is an incident.
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut stable_since: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let model = shared.model.lock().unwrap().clone();
        let registry = match site.registry() {
            Ok(registry) => registry,
            Err(err) => {
                report.other.push(format!("{when}: the registry does not parse: {err}"));
                return started.elapsed();
            }
        };
        let Some(statuses) = site.statuses() else {
            report.other.push(format!("{when}: the daemon does not answer GET /processes"));
            return started.elapsed();
        };
        let all = procs::scan();
        let mut pending = Vec::new();
        for (id, expect) in &model {
            let copies = procs::with_marker(&all, &site.marker(id));
            let in_file = registry.processes.contains_key(id);
            let status = statuses.get(id);
            let verdict = judge(expect, in_file, status, &copies);
            match verdict {
                Verdict::Settled(reg, want) => {
                    // An outcome that was unknown must also stay put for a moment before it counts.
                    if expect.want == Want::Unknown || expect.reg == Reg::Unknown {
                        let since = *stable_since.entry(id.clone()).or_insert_with(Instant::now);
                        if since.elapsed() < Duration::from_millis(300) {
                            pending.push((id.clone(), verdict_text(expect, in_file, status, &copies)));
                            continue;
                        }
                    }
                    shared.set(id, expect.client, reg, want);
                    if reg.is_none() && want.is_none() && expect.reg == Reg::Unknown && !in_file {
                        shared.model.lock().unwrap().remove(id);
                    }
                }
                Verdict::NotYet => {
                    stable_since.remove(id);
                    pending.push((id.clone(), verdict_text(expect, in_file, status, &copies)));
                }
            }
        }
        if pending.is_empty() {
            return started.elapsed();
        }
        if Instant::now() > deadline {
            for (id, text) in pending {
                let expect = model[&id];
                let copies = procs::with_marker(&procs::scan(), &site.marker(&id));
                let status = statuses.get(&id);
                let supervised = status.filter(|s| s.state == ProcessState::Running).and_then(|s| s.pid);
                let line = format!("{when}: {id}: {text}");
                if expect.reg == Reg::Yes && (status.is_none() || !registry.processes.contains_key(&id)) {
                    report.lost.push(format!("{line} (acknowledged registration missing)"));
                } else if copies.len() > 1 {
                    report.duplicates.push(line.clone());
                } else if copies.iter().any(|pid| Some(*pid) != supervised) {
                    report.orphans.push(line.clone());
                } else if expect.want == Want::Running && copies.is_empty() {
                    report.lost.push(format!("{line} (should run)"));
                } else if expect.want == Want::Stopped && !copies.is_empty() {
                    report.resurrected.push(line.clone());
                } else {
                    report.other.push(format!("{line} (did not settle)"));
                }
                eprintln!("chaos | {line}\nchaos | history of {id}:\n{}", shared.history(&id));
                // Repair, so that one incident is counted once: unsupervised copies go, the rest is taken as it is.
                for pid in copies.iter().filter(|pid| Some(**pid) != supervised) {
                    procs::signal(-(*pid as i32), libc::SIGKILL);
                }
                let want = if supervised.is_some() { Want::Running } else { Want::Unknown };
                shared.set(&id, expect.client, Some(Reg::Yes).filter(|_| status.is_some()), Some(want));
            }
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

enum Verdict {
    /// Consistent; the model may learn the registration and wanted state given.
    Settled(Option<Reg>, Option<Want>),
    NotYet,
}

fn judge(expect: &Expect, in_file: bool, status: Option<&ProcessStatus>, copies: &[u32]) -> Verdict {
    let Some(status) = status else {
        // Not known to the daemon: fine only for a registration that was never acknowledged and is not in
        // the file either (the daemon loaded the file when it started), and with nothing running.
        return if expect.reg == Reg::Unknown && !in_file && copies.is_empty() {
            Verdict::Settled(None, None)
        } else {
            Verdict::NotYet
        };
    };
    if !in_file {
        return Verdict::NotYet;
    }
    let runs = copies.len() == 1 && status.state == ProcessState::Running && status.pid == Some(copies[0]);
    let stopped = copies.is_empty() && status.state == ProcessState::Stopped;
    match expect.want {
        Want::Running if runs => Verdict::Settled(Some(Reg::Yes), None),
        Want::Stopped if stopped => Verdict::Settled(Some(Reg::Yes), None),
        Want::Unknown if runs => Verdict::Settled(Some(Reg::Yes), Some(Want::Running)),
        Want::Unknown if stopped => Verdict::Settled(Some(Reg::Yes), Some(Want::Stopped)),
        _ => Verdict::NotYet,
    }
}

fn verdict_text(expect: &Expect, in_file: bool, status: Option<&ProcessStatus>, copies: &[u32]) -> String {
    format!(
        "client {:?} registration {:?} wants {:?}; in registry file: {in_file}; daemon says {}; live copies {copies:?}",
        expect.client,
        expect.reg,
        expect.want,
        match status {
            Some(status) => format!("{} pid {:?}", status.state, status.pid),
            None => "unknown process".to_owned(),
        }
    )
}

/// Counts live copies of every marked process every few milliseconds; answers one line per time two copies
/// of one process were alive at once.
fn sample_copies(prefix: &str, stop: &AtomicBool, shared: &Shared) -> Vec<String> {
    let mut incidents = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        let mut copies: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for info in procs::scan() {
            if !info.is_copy() {
                continue;
            }
            if let Some(marker) = info.args.iter().find(|arg| arg.starts_with(prefix)) {
                copies.entry(marker[prefix.len()..].to_owned()).or_default().push(info.pid);
            }
        }
        for (id, pids) in copies {
            // A PID that is gone by now was already exiting (a zombie a moment later); count only copies that are
            // still alive after the scan.
            let live: Vec<u32> = pids.into_iter().filter(|pid| pm_registry::proc::alive(*pid)).collect();
            if live.len() > 1 {
                let line = format!("{id}: {} live copies at once: {live:?}", live.len());
                if incidents.insert(line.clone()) {
                    shared.event(Some(&id), format!("sampler: {} live copies {live:?}", live.len()));
                    eprintln!("chaos | duplicate: {line}\nchaos | history of {id}:\n{}", shared.history(&id));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    incidents.into_iter().collect()
}

/// Makes the sleeper configurations of a site inside a worker thread.
struct SleeperFactory {
    dir: std::path::PathBuf,
    marker_prefix: String,
}

impl SleeperFactory {
    fn config(&self, id: &str, autostart: bool) -> pm_core::ProcessConfig {
        let marker = format!("{}{id}", self.marker_prefix);
        let mut config = crate::site::sleeper_config(&self.dir, &marker, id);
        config.autostart = autostart;
        config
    }
}

struct WorkerCtx {
    client: Client,
    dir: std::path::PathBuf,
    remote_port: u16,
    max_ids: usize,
    site_sleeper: SleeperFactory,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Register(bool),
    Start,
    Stop,
    Restart,
}

fn worker(ctx: WorkerCtx, shared: Arc<Shared>, mut rng: Rng) {
    let index = match ctx.client {
        Client::Remote => 0,
        Client::Local => 1,
    };
    let prefix = match ctx.client {
        Client::Remote => "r",
        Client::Local => "l",
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let remote = RemoteProcessMonitorClient::with_options(RemoteClientOptions {
        base_url: format!("http://127.0.0.1:{}", ctx.remote_port),
        timeout: Duration::from_secs(3),
        retries: 0,
        retry_delay: Duration::from_millis(10),
        token: None,
    })
    .unwrap();
    let local = ProcessMonitorClient::with_options(&LocalClientOptions {
        directory: Some(ctx.dir.clone()),
        instance_id: crate::site::INSTANCE.to_owned(),
        wait_timeout: Duration::from_secs(3),
        // The registry path under chaos; the socket path is what the CLI suites exercise.
        use_socket: false,
    })
    .unwrap();
    let mut next_id = 0usize;
    let mut n_calls = 0u64;
    while shared.may_go(index) {
        n_calls += 1;
        let ids = shared.ids_of(ctx.client);
        // The pool grows with the run so that registrations keep happening under chaos.
        let allowed = (4 + (n_calls as usize / 40)).min(ctx.max_ids).max(1);
        let op = if ids.is_empty() || (ids.len() < allowed && rng.chance(30)) {
            Op::Register(rng.chance(70))
        } else {
            match rng.below(10) {
                0..=3 => Op::Start,
                4..=7 => Op::Stop,
                _ => Op::Restart,
            }
        };
        let id = match op {
            Op::Register(_) => {
                let id = format!("{prefix}{next_id}");
                next_id += 1;
                id
            }
            _ => rng.pick(&ids).clone(),
        };
        shared.event(Some(&id), format!("{:?} {op:?} sent", ctx.client));
        let told = match ctx.client {
            Client::Remote => runtime.block_on(remote_call(&remote, &ctx.site_sleeper, &shared, &id, op)),
            Client::Local => local_call(&local, &ctx.site_sleeper, &shared, &id, op),
        };
        let model = shared.model.lock().unwrap().get(&id).copied();
        shared.event(
            Some(&id),
            format!("{:?} {op:?} -> {}; now {:?}", ctx.client, told.name(), model.map(|e| (e.reg, e.want))),
        );
        shared.count(index, &told);
        std::thread::sleep(Duration::from_millis(rng.range(2, 30)));
    }
}

fn remote_told(err: &pm_client::Error) -> Told {
    match err {
        pm_client::Error::Transport { message, .. } if message.contains("(Connect)") => Told::Refused,
        _ => Told::Unknown,
    }
}

async fn remote_call(
    client: &RemoteProcessMonitorClient,
    sleepers: &SleeperFactory,
    shared: &Shared,
    id: &str,
    op: Op,
) -> Told {
    let res = match op {
        Op::Register(autostart) => {
            shared.set(id, Client::Remote, None, None);
            match client.register(sleepers.config(id, autostart)).await {
                Ok(()) => {
                    let want = if autostart { Want::Running } else { Want::Stopped };
                    shared.set(id, Client::Remote, Some(Reg::Yes), Some(want));
                    shared.registrations.fetch_add(1, Ordering::Relaxed);
                    return Told::Acked;
                }
                Err(pm_client::Error::AlreadyExists(_)) => {
                    shared.set(id, Client::Remote, Some(Reg::Yes), None);
                    return Told::Acked;
                }
                Err(err) => {
                    let told = remote_told(&err);
                    if matches!(told, Told::Refused) {
                        shared.model.lock().unwrap().remove(id);
                    }
                    return told;
                }
            }
        }
        Op::Start => client.start(id).await.map(|state| (state, Want::Running)),
        Op::Stop => client.stop(id).await.map(|state| (state, Want::Stopped)),
        Op::Restart => client.restart(id).await.map(|state| (state, Want::Running)),
    };
    shared.event(
        Some(id),
        match &res {
            Ok((state, _)) => format!("remote {op:?} returned {state}"),
            Err(err) => format!("remote {op:?} failed: {err}"),
        },
    );
    let res = res.map(|(_, want)| want);
    match res {
        Ok(want) => {
            shared.set(id, Client::Remote, Some(Reg::Yes), Some(want));
            Told::Acked
        }
        Err(err) => {
            let told = remote_told(&err);
            match (&told, &err) {
                (Told::Refused, _) => {}
                (_, pm_client::Error::NotFound(_)) => {
                    let registered = shared.model.lock().unwrap().get(id).map(|e| e.reg);
                    if registered == Some(Reg::Yes) {
                        shared.problem(format!("remote {op:?} {id}: acknowledged registration not found: {err}"));
                    }
                }
                _ => shared.set(id, Client::Remote, None, Some(Want::Unknown)),
            }
            told
        }
    }
}

fn local_call(client: &ProcessMonitorClient, sleepers: &SleeperFactory, shared: &Shared, id: &str, op: Op) -> Told {
    let settled = |state: ProcessState, want: Want| match want {
        Want::Running if matches!(state, ProcessState::Running | ProcessState::Starting) => Want::Running,
        Want::Stopped if state == ProcessState::Stopped => Want::Stopped,
        _ => Want::Unknown,
    };
    let res = match op {
        Op::Register(autostart) => {
            shared.set(id, Client::Local, None, None);
            return match client.register(sleepers.config(id, autostart)) {
                Ok(()) => {
                    let want = if autostart { Want::Running } else { Want::Stopped };
                    shared.set(id, Client::Local, Some(Reg::Yes), Some(want));
                    shared.registrations.fetch_add(1, Ordering::Relaxed);
                    Told::Acked
                }
                Err(pm_client::Error::Busy(_)) => {
                    shared.model.lock().unwrap().remove(id);
                    Told::Refused
                }
                Err(err) => {
                    shared.problem(format!("local register {id} failed: {err}"));
                    Told::Unknown
                }
            };
        }
        Op::Start => client.start(id).map(|status| (status, Want::Running)),
        Op::Stop => client.stop(id).map(|status| (status, Want::Stopped)),
        Op::Restart => client.restart(id).map(|status| (status, Want::Running)),
    };
    shared.event(
        Some(id),
        match &res {
            Ok((status, _)) => format!("local {op:?} returned {} pid {:?}", status.state, status.pid),
            Err(err) => format!("local {op:?} failed: {err}"),
        },
    );
    let res = res.map(|(status, want)| settled(status.state, want));
    match res {
        Ok(want) => {
            shared.set(id, Client::Local, Some(Reg::Yes), Some(want));
            if want == Want::Unknown {
                Told::Unknown
            } else {
                Told::Acked
            }
        }
        Err(pm_client::Error::NotFound(_)) => {
            shared.problem(format!("local {op:?} {id}: acknowledged registration not found"));
            Told::Acked
        }
        Err(pm_client::Error::Busy(_)) => Told::Refused,
        Err(err) => {
            shared.set(id, Client::Local, None, Some(Want::Unknown));
            shared.problem(format!("local {op:?} {id} failed: {err}"));
            Told::Unknown
        }
    }
}
