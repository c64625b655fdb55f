//! An in-process daemon for tests: [`Daemon::run`]'s whole path (`tokio::spawn`ed on the test's runtime) on a
//! temporary home and free loopback ports, with tests of its reconcile, its registry writer and its partner
//! tick. Torn down on drop: the daemon task is stopped and every process it reported is killed by process group,
//! pass or fail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pm_core::{ProcessConfig, ProcessEntry, ProcessState, Registry};
use pm_registry::{Paths, Store};

use crate::daemon::{DaemonEvent, Hooks};
use crate::monitor::Monitor;
use crate::{Daemon, DaemonConfig, Error, Exit};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A free TCP port on 127.0.0.1 (free when asked: the OS hands out ephemeral ports in turn).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A daemon running in this process on its own temporary home.
pub(crate) struct DaemonFixture {
    pub(crate) home: PathBuf,
    pub(crate) paths: Paths,
    pub(crate) monitor: Arc<Monitor>,
    task: Option<tokio::task::JoinHandle<Result<Exit, Error>>>,
    /// Process groups seen, killed on drop.
    seen: Mutex<Vec<u32>>,
}

impl DaemonFixture {
    /// Starts a daemon on a fresh home whose registry `prepare` edits first (both servers on free loopback
    /// ports); `partner_program` is what it starts as its partner.
    pub(crate) async fn start(prepare: impl FnOnce(&mut Registry), partner_program: &Path) -> DaemonFixture {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let home = std::env::temp_dir().join(format!("pm-inproc-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let paths = Paths::new(&home, "default").unwrap();
        Store::new(paths.clone())
            .transaction(Duration::from_secs(5), |registry: &mut Registry| {
                registry.partner_discovery.partner_instance_id = None;
                prepare(registry);
                Ok::<_, pm_registry::Error>(())
            })
            .unwrap();
        DaemonFixture::launch(home, paths, partner_program).await
    }

    /// Starts a daemon on the existing home `home` (the registry as it is there).
    async fn launch(home: PathBuf, paths: Paths, partner_program: &Path) -> DaemonFixture {
        let config = DaemonConfig {
            paths: paths.clone(),
            standalone: false,
            remote_port: Some(free_port()),
            aliveness_port: Some(free_port()),
            remote_bind: Some("127.0.0.1".to_owned()),
            restart_command: Vec::new(),
            partner_program: partner_program.to_path_buf(),
            resume: false,
            keep_runs: 5,
            lock_timeout: Duration::from_secs(5),
            tls: None,
        };
        let (serving, served) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(Daemon::run_with(config, Hooks { serving: Some(serving) }));
        let monitor = match tokio::time::timeout(Duration::from_secs(30), served).await {
            Ok(Ok(monitor)) => monitor,
            _ => panic!("the daemon did not start: {:?}", task.await),
        };
        DaemonFixture { home, paths, monitor, task: Some(task), seen: Mutex::default() }
    }

    /// The registry file as it is now.
    pub(crate) fn stored(&self) -> Registry {
        Store::new(self.paths.clone()).load().unwrap()
    }

    /// Edits the registry file as a local client does.
    pub(crate) fn edit(&self, edit: impl FnOnce(&mut Registry)) {
        Store::new(self.paths.clone())
            .transaction(Duration::from_secs(5), |registry: &mut Registry| {
                edit(registry);
                Ok::<_, pm_registry::Error>(())
            })
            .unwrap();
    }

    /// Remembers the process groups of every process the daemon reports, for the cleanup.
    pub(crate) fn track(&self) {
        let mut seen = self.seen.lock().unwrap();
        for pid in self.monitor.supervisor().list().into_iter().filter_map(|entry| entry.pid) {
            if !seen.contains(&pid) {
                seen.push(pid);
            }
        }
    }

    /// Polls the registry file until `done` holds (tracking processes on the way); panics after `timeout`.
    pub(crate) async fn stored_when(&self, timeout: Duration, done: impl Fn(&Registry) -> bool) -> Registry {
        let deadline = Instant::now() + timeout;
        loop {
            self.track();
            let stored = self.stored();
            if done(&stored) {
                return stored;
            }
            assert!(Instant::now() < deadline, "timed out; the registry holds {:#?}", stored.processes);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the daemon as `kill -9` would its process, as far as its files go: its task is dropped where it is,
    /// without the final write (its processes keep running, as a killed monitor's do). Then starts a new daemon
    /// on the same home, which takes over as after a crash.
    pub(crate) async fn crash_and_restart(&mut self) -> DaemonFixture {
        self.track();
        let task = self.task.take().unwrap();
        task.abort();
        let _ = task.await;
        DaemonFixture::launch(self.home.clone(), self.paths.clone(), Path::new("/bin/false")).await
    }

    /// Stops the daemon as SIGTERM does and waits for its end (what it leaves running is killed on drop).
    pub(crate) async fn stop(&mut self) -> Exit {
        self.track();
        self.monitor.request(DaemonEvent::Stop);
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(60), task).await.expect("daemon stops").unwrap().unwrap()
    }
}

impl Drop for DaemonFixture {
    fn drop(&mut self) {
        self.track();
        if let Some(task) = self.task.take() {
            task.abort();
        }
        for pgid in self.seen.lock().unwrap().drain(..) {
            crate::os::signal_group(pgid, libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A registered process running `sleep 60`, enabled with autostart.
fn sleeper(id: &str) -> ProcessEntry {
    let mut config = ProcessConfig::new(id, id, "sleep");
    config.args = vec!["60".to_owned()];
    ProcessEntry::new(config, pm_core::Timestamp::now())
}

fn state_of(registry: &Registry, id: &str) -> Option<ProcessState> {
    registry.processes.get(id).map(|entry| entry.state)
}

/// The register → running → saved path through a local client: an entry the client adds to the file is taken
/// up by the reconcile, started, and its run stored by the writer; a pending stop is handed over once and its
/// outcome stored; a removed entry is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_takes_up_a_local_client_s_edits_and_the_writer_stores_their_outcome() {
    let mut fx = DaemonFixture::start(|_| {}, Path::new("/bin/false")).await;
    fx.edit(|registry| {
        registry.processes.insert("job".to_owned(), sleeper("job").into());
    });
    let stored = fx
        .stored_when(Duration::from_secs(20), |registry| {
            registry.processes.get("job").is_some_and(|job| job.state == ProcessState::Running && job.pid.is_some())
        })
        .await;
    let pid = stored.processes["job"].pid.unwrap();
    assert!(stored.monitor_running);
    assert_eq!(fx.monitor.supervisor().get("job").unwrap().pid, Some(pid), "the file holds the run memory holds");
    fx.edit(|registry| registry.processes.get_mut("job").unwrap().pending_action = Some(pm_core::PendingAction::Stop));
    let stored =
        fx.stored_when(Duration::from_secs(20), |registry| registry.processes["job"].pending_action.is_none()).await;
    assert_eq!(state_of(&stored, "job"), Some(ProcessState::Stopped), "the request is cleared with its outcome");
    assert_eq!(stored.processes["job"].pid, None);
    fx.edit(|registry| {
        registry.processes.remove("job");
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while fx.monitor.supervisor().get("job").is_some() {
        assert!(Instant::now() < deadline, "the deregistered process is still supervised");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fx.stop().await, Exit::Stopped);
}

/// A local client's request is cleared from the file only together with its outcome, which is what the client
/// takes for its answer: a stop asked for with the registration of an autostart process (its start still to
/// come) is not cleared while the file holds the state from before the start. The writer's rewrites are held, so
/// only the request's own storing can show its outcome; then a new request while one is under way is carried
/// out as well, after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_request_is_cleared_only_with_its_outcome() {
    use pm_core::PendingAction;
    let mut fx = DaemonFixture::start(|_| {}, Path::new("/bin/false")).await;
    fx.monitor.folds_held.store(true, Ordering::SeqCst);
    fx.edit(|registry| {
        let mut entry = sleeper("job");
        entry.pending_action = Some(PendingAction::Stop);
        registry.processes.insert("job".to_owned(), entry.into());
    });
    let stored = fx
        .stored_when(Duration::from_secs(20), |registry| {
            registry.processes.get("job").is_some_and(|job| job.pending_action.is_none())
        })
        .await;
    let job = &stored.processes["job"];
    assert_eq!(job.state, ProcessState::Stopped, "{job:#?}");
    assert!(job.last_started_at.is_some() && job.last_stopped_at.is_some(), "started, then stopped: {job:#?}");
    // A start asked for now is handed over and answered in turn (not taken for the stop's, not dropped).
    fx.edit(|registry| registry.processes.get_mut("job").unwrap().pending_action = Some(PendingAction::Start));
    let stored =
        fx.stored_when(Duration::from_secs(20), |registry| registry.processes["job"].pending_action.is_none()).await;
    let job = &stored.processes["job"];
    assert_eq!(job.state, ProcessState::Running, "{job:#?}");
    assert!(job.pid.is_some_and(|pid| fx.monitor.supervisor().get("job").unwrap().pid == Some(pid)));
    fx.monitor.folds_held.store(false, Ordering::SeqCst);
    assert_eq!(fx.stop().await, Exit::Stopped);
}

/// An action the API acknowledged is in the file when the answer comes, without waiting for the writer's gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_stores_acknowledged_actions_before_they_are_answered() {
    use pm_http::ControlPlane;
    let mut fx = DaemonFixture::start(
        |registry| {
            registry.processes.insert("job".to_owned(), sleeper("job").into());
        },
        Path::new("/bin/false"),
    )
    .await;
    fx.stored_when(Duration::from_secs(20), |registry| state_of(registry, "job") == Some(ProcessState::Running)).await;
    for round in 0..3 {
        assert_eq!(fx.monitor.stop("job").await.unwrap(), ProcessState::Stopped);
        let stored = fx.stored();
        assert_eq!(state_of(&stored, "job"), Some(ProcessState::Stopped), "round {round}: stop answered before stored");
        assert_eq!(stored.processes["job"].pid, None);
        let state = fx.monitor.start("job").await.unwrap();
        fx.track();
        let stored = fx.stored();
        assert_eq!(state_of(&stored, "job"), Some(state), "round {round}: start answered before stored");
        assert_eq!(stored.processes["job"].pid, fx.monitor.supervisor().get("job").unwrap().pid);
    }
    fx.monitor.set_enabled("job", false).await.unwrap();
    let stored = fx.stored();
    assert!(!stored.processes["job"].config.enabled);
    assert_eq!(state_of(&stored, "job"), Some(ProcessState::Disabled));
    assert_eq!(fx.stop().await, Exit::Stopped);
}

/// Asks for `action` on `job` as a hand edit does: the file rewritten (by a rename) with the request, its
/// journal neither read nor folded.
fn ask_by_hand(fx: &DaemonFixture, action: &str) {
    let file = fx.paths.registry_file();
    let mut registry: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    registry["processes"]["job"]["pendingAction"] = serde_json::json!(action);
    let edited = file.with_extension("edited");
    std::fs::write(&edited, serde_json::to_vec_pretty(&registry).unwrap()).unwrap();
    std::fs::rename(&edited, &file).unwrap();
}

/// A request asked for again by a hand edit, while the answer to the same request before it is still a journal
/// line (the writer's folds held), is carried out: the old answer does not clear the new request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_asked_again_by_hand_is_not_cleared_by_the_answer_to_the_one_before() {
    use pm_http::ControlPlane;
    let mut fx = with_a_stopped_job().await;
    fx.monitor.folds_held.store(true, Ordering::SeqCst);
    for round in 0..2 {
        ask_by_hand(&fx, "start");
        // (`wait_for` answers the entry as it is when the time is up.)
        let job = fx.monitor.supervisor().wait_for("job", Duration::from_secs(20), |e| e.state.has_child()).await;
        assert!(job.unwrap().state.has_child(), "round {round}: the hand-edited start was not carried out");
        fx.stored_when(Duration::from_secs(20), |registry| registry.processes["job"].pending_action.is_none()).await;
        assert_eq!(fx.monitor.stop("job").await.unwrap(), ProcessState::Stopped, "round {round}");
    }
    fx.monitor.folds_held.store(false, Ordering::SeqCst);
    assert_eq!(fx.stop().await, Exit::Stopped);
}

/// A daemon whose registry holds one process, `job`, a `sleep` without autostart.
async fn with_a_stopped_job() -> DaemonFixture {
    DaemonFixture::start(
        |registry| {
            let mut job = sleeper("job");
            job.config.autostart = false;
            registry.processes.insert("job".to_owned(), job.into());
        },
        Path::new("/bin/false"),
    )
    .await
}

/// An acknowledged start is durable before its answer through the journal alone: with the registry writer
/// held (no fold), the registry file does not hold it yet, the journal does, and a monitor killed right after
/// the answer finds the started process again when it comes back (the journal folded at its start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_start_survives_a_kill_before_the_journal_is_folded() {
    use pm_http::ControlPlane;
    let mut fx = with_a_stopped_job().await;
    fx.stored_when(Duration::from_secs(20), |registry| {
        registry.monitor_running && state_of(registry, "job") == Some(ProcessState::Stopped)
    })
    .await;
    fx.monitor.folds_held.store(true, std::sync::atomic::Ordering::SeqCst);
    let file_before = std::fs::read(fx.paths.registry_file()).unwrap();
    assert_eq!(fx.monitor.start("job").await.unwrap(), ProcessState::Running);
    fx.track();
    let pid = fx.monitor.supervisor().get("job").unwrap().pid.expect("a running job has a PID");
    // Stored before the answer, in the journal only.
    assert_eq!(std::fs::read(fx.paths.registry_file()).unwrap(), file_before, "the registry was rewritten");
    let journal = std::fs::read_to_string(fx.paths.journal_file()).unwrap();
    assert!(journal.contains(&format!("\"pid\":{pid}")), "the journal lacks the start: {journal}");
    let seen = fx.stored();
    assert_eq!((state_of(&seen, "job"), seen.processes["job"].pid), (Some(ProcessState::Running), Some(pid)));

    let mut again = fx.crash_and_restart().await;
    let held = again.monitor.supervisor().get("job").unwrap();
    assert_eq!((held.state, held.pid), (ProcessState::Running, Some(pid)), "the new monitor lost the start");
    // Its first write folds the journal into the registry file.
    let deadline = Instant::now() + Duration::from_secs(20);
    let file = loop {
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(again.paths.registry_file()).unwrap()).unwrap();
        if file["journalSeq"].as_u64().is_some_and(|seq| seq >= 1) {
            break file;
        }
        assert!(Instant::now() < deadline, "the journal was not folded: {}", file["journalSeq"]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(file["processes"]["job"]["pid"], pid);
    assert_eq!(file["processes"]["job"]["state"], "running");
    assert_eq!(std::fs::read(again.paths.journal_file()).unwrap(), b"", "the journal was not emptied");
    assert_eq!(again.stop().await, Exit::Stopped);
}

/// A registry deleted by hand is written back from memory with the journal's lines counted in: the file and the
/// journal read together again (no gap in the sequence numbers), with the acknowledged start in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_written_back_after_a_deletion_reads_with_the_journal() {
    use pm_http::ControlPlane;
    let mut fx = with_a_stopped_job().await;
    fx.stored_when(Duration::from_secs(20), |registry| registry.monitor_running).await;
    // A start folded into the file (its `journalSeq` moves past what the monitor read at its start), then a
    // restart stored in the journal only.
    assert_eq!(fx.monitor.start("job").await.unwrap(), ProcessState::Running);
    fx.track();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(fx.paths.registry_file()).unwrap().contains("\"journalSeq\"") {
        assert!(Instant::now() < deadline, "the writer did not fold the journal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fx.monitor.folds_held.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(fx.monitor.restart("job").await.unwrap(), ProcessState::Running);
    fx.track();
    let pid = fx.monitor.supervisor().get("job").unwrap().pid;
    assert!(!std::fs::read_to_string(fx.paths.journal_file()).unwrap().is_empty());
    std::fs::remove_file(fx.paths.registry_file()).unwrap();
    fx.monitor.reconcile().await.unwrap();
    let stored = Store::new(fx.paths.clone()).load().expect("the written-back registry reads with its journal");
    assert_eq!((state_of(&stored, "job"), stored.processes["job"].pid), (Some(ProcessState::Running), pid));
    fx.monitor.folds_held.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(fx.stop().await, Exit::Stopped);
}

/// Processes that crash and restart many times a second are written a few times a second, not once per change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_coalesces_a_burst_of_changes_into_a_few_writes() {
    use std::os::unix::fs::MetadataExt;
    let crasher = |id: &str| {
        let mut config = ProcessConfig::new(id, id, "/bin/sh");
        config.args = vec!["-c".to_owned(), "exit 3".to_owned()];
        config.restart_policy = Some(pm_core::RestartPolicy {
            max_attempts: 100_000,
            backoff_intervals_ms: vec![5],
            reset_after_ms: 600_000,
            retry_indefinitely: true,
            indefinite_interval_ms: 5,
            restart_on: Default::default(),
            extra: serde_json::Map::new(),
        });
        ProcessEntry::new(config, pm_core::Timestamp::now())
    };
    let mut fx = DaemonFixture::start(
        |registry| {
            for id in ["c1", "c2", "c3"] {
                registry.processes.insert(id.to_owned(), crasher(id).into());
            }
        },
        Path::new("/bin/false"),
    )
    .await;
    let restarts = || -> u64 { fx.monitor.supervisor().snapshots().iter().map(|s| s.counters.restarts).sum() };
    let identity = || std::fs::metadata(fx.paths.registry_file()).map(|meta| (meta.ino(), meta.mtime_nsec())).ok();
    let (began, restarts_before) = (Instant::now(), restarts());
    let (mut last, mut writes) = (identity(), 0u32);
    while began.elapsed() < Duration::from_secs(3) {
        let now = identity();
        if now != last {
            writes += 1;
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (took, churn) = (began.elapsed(), restarts() - restarts_before);
    let most = (took.as_millis() / crate::writer::WRITER_GAP.as_millis()) as u32 + 2;
    eprintln!("{writes} writes in {took:?} for {churn} restarts");
    assert!(writes >= 2, "the writer did not write ({churn} restarts)");
    assert!(writes <= most, "{writes} writes in {took:?} (at most {most}) for {churn} restarts");
    assert!(u64::from(writes) < churn, "{writes} writes for only {churn} restarts: nothing to coalesce");
    // What the last write stored is what memory held then: the restart counts keep growing in the file too.
    let stored = fx.stored();
    assert!(stored.processes.values().map(|entry| u64::from(entry.restart_attempts)).sum::<u64>() > 0);
    assert_eq!(fx.stop().await, Exit::Stopped);
}

/// The partner tick registers and starts the partner when `startPartnerIfMissing`, with the entry the guide
/// describes, and drops it (leaving it running) once standalone mode is turned on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partner_tick_supervises_the_partner_and_lets_go_of_it_in_standalone_mode() {
    use pm_http::ControlPlane;
    let script_dir = std::env::temp_dir().join(format!("pm-inproc-partner-{}", std::process::id()));
    std::fs::create_dir_all(&script_dir).unwrap();
    let program = script_dir.join("partner.sh");
    std::fs::write(&program, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let partner_port = free_port();
    let mut fx = DaemonFixture::start(
        |registry| {
            let discovery = &mut registry.partner_discovery;
            discovery.partner_instance_id = Some("watcher".to_owned());
            discovery.partner_aliveness_port = Some(partner_port);
            discovery.start_partner_if_missing = true;
            discovery.check_interval_ms = 200;
            registry.standalone_mode = false;
        },
        &program,
    )
    .await;
    let stored = fx
        .stored_when(Duration::from_secs(20), |registry| {
            registry.processes.get("watcher").is_some_and(|entry| entry.pid.is_some())
        })
        .await;
    let partner = &stored.processes["watcher"];
    assert!(partner.config.partner);
    assert_eq!(partner.config.command, program.to_string_lossy());
    let home = fx.home.to_string_lossy().into_owned();
    assert_eq!(partner.config.args, ["--instance-id", "watcher", "--directory", home.as_str(), "--detached"]);
    let check = partner.config.aliveness_check.as_ref().unwrap();
    assert_eq!(check.url, format!("http://localhost:{partner_port}/alive"));
    let pid = partner.pid.unwrap();
    fx.monitor.update_settings(pm_core::SettingsUpdate::StandaloneMode(true)).await.unwrap();
    fx.stored_when(Duration::from_secs(20), |registry| !registry.processes.contains_key("watcher")).await;
    assert!(fx.monitor.supervisor().get("watcher").is_none());
    assert!(pm_registry::proc::alive(pid), "the partner is left running");
    assert_eq!(fx.stop().await, Exit::Stopped);
    assert!(pm_registry::proc::alive(pid), "a stop leaves the partner running");
    drop(fx);
    let _ = std::fs::remove_dir_all(&script_dir);
}
