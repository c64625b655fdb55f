//! Chaos: a remote-API client and a local client keep registering, starting, stopping and restarting
//! processes while the daemon is SIGKILLed at random moments and started again. After every cycle and at the
//! end: the registry parses, every acknowledged registration is there, every process that should run runs
//! exactly once (counted by the marker in its argv, and supervised), nothing acknowledged as stopped runs,
//! and after the final stop nothing of ours is left, not even a zombie.
//!
//! `PM_CHAOS_CYCLES` sets the cycles (20 by default, 200 in `cargo xtask chaos`); `PM_CHAOS_SEED` replays a run.

use std::path::Path;
use std::time::{Duration, Instant};

use pm_tests::chaos::{self, ChaosConfig};
use pm_tests::report;
use pm_tests::rng::{count_from_env, seed_from_env};
use pm_tests::site::Site;

fn site(label: &str) -> Option<Site> {
    Site::new(label, Path::new(env!("CARGO_BIN_EXE_pm-test-reaper")))
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let Some(site) = site("chaos") else { return };
    let cycles = count_from_env("PM_CHAOS_CYCLES", 20);
    let seed = seed_from_env("PM_CHAOS_SEED");
    eprintln!("chaos | {cycles} cycles, seed {seed:#x} (replay with PM_CHAOS_SEED={seed:#x})");
    let config = ChaosConfig { cycles, seed, max_per_client: (6 + cycles / 10).min(24) as usize };
    let res = chaos::run(&site, &config);
    report("chaos: SIGKILL under load", &res.figures());
    let details = format!(
        "seed {seed:#x}\nlost: {:#?}\nduplicates: {:#?}\norphans: {:#?}\nresurrected: {:#?}\nother: {:#?}",
        res.lost, res.duplicates, res.orphans, res.resurrected, res.other
    );
    assert_eq!(res.violations(), 0, "{details}");
    assert_eq!(res.cycles, cycles, "the run ended early: {details}");
    assert!(res.registrations > 0 && res.remote_calls.0 > 0 && res.local_calls.0 > 0, "no load: {}", res.figures());
}

/// A site whose daemon runs one managed process `a`, with its PID stored in the registry; and the daemon's PID.
fn site_running_a(name: &str) -> Option<(Site, u32)> {
    let site = site(name)?;
    site.edit(|registry| {
        let entry = pm_core::ProcessEntry::new(site.sleeper("a"), pm_core::Timestamp::now());
        registry.processes.insert("a".to_owned(), entry.into());
    });
    let daemon = site.start_daemon();
    wait_until(Duration::from_secs(20), "a runs and is stored", || {
        let copies = site.copies("a");
        copies.len() == 1 && site.registry().unwrap().processes["a"].pid == Some(copies[0])
    });
    Some((site, daemon))
}

/// The chaos run's "resurrected" incidents, made deterministic: the daemon's registry writer is held up (the
/// suite holds the registry's flock, as a slow local client would) while a stop is acknowledged, and then the
/// daemon is SIGKILLed. What was acknowledged as stopped must stay stopped.
#[test]
fn a_stop_acknowledged_by_the_api_survives_a_crash_right_after() {
    let Some((site, daemon)) = site_running_a("chaos-ack") else { return };
    let held = site.hold_registry_lock();
    let port = site.remote_port;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(pm_tests::http(port, "POST", "/processes/a/stop", Some("")));
    });
    match rx.recv_timeout(Duration::from_secs(1)) {
        Ok(Some((200, body))) => {
            // Acknowledged while nothing could be written: the promise must hold across a crash.
            assert!(body.contains("stopped"), "{body}");
            assert!(site.copies("a").is_empty());
            site.kill_daemon(daemon);
            drop(held);
            site.start_daemon();
            std::thread::sleep(Duration::from_millis(1500));
            let copies = site.copies("a");
            let status = site.statuses().unwrap()["a"].clone();
            assert!(
                copies.is_empty() && status.state == pm_core::ProcessState::Stopped,
                "the API answered {body} to POST /processes/a/stop, the daemon was then killed, and its successor \
                 runs a again: copies {copies:?}, state {}, pid {:?}",
                status.state,
                status.pid
            );
            report("chaos: acknowledged stop, then SIGKILL", "stayed stopped");
        }
        // Not acknowledged before it was durable: no promise to keep.
        other => {
            drop(held);
            report("chaos: acknowledged stop, then SIGKILL", &format!("not answered while unwritable: {other:?}"));
        }
    }
}

/// The same for the local client: with no monitor running, `stop` stores the request, then ends the process
/// group itself, then records `stopped`. A monitor that starts in between (after the kill, before the record)
/// sees a process that "died" while recorded as running: it must honour the stored request, not restart it.
#[test]
fn a_local_stop_while_the_daemon_starts_is_not_undone() {
    let Some((site, daemon)) = site_running_a("chaos-local") else { return };
    let pid = site.copies("a")[0];
    site.kill_daemon(daemon);

    // With no monitor, the client stores its request before it signals anything.
    let dir = site.dir.clone();
    let client = pm_client::ProcessMonitorClient::in_directory(&dir, pm_tests::site::INSTANCE).unwrap();
    let told = client.stop("a").expect("the local stop failed");
    assert_eq!(told.state, pm_core::ProcessState::Stopped);
    assert!(!pm_registry::proc::alive(pid));
    let stored = site.registry().unwrap().processes["a"].clone();
    assert_eq!(stored.pending_action, Some(pm_core::PendingAction::Stop), "the request stays for the next monitor");

    // The interleaving itself: request stored and group killed, but `stopped` not yet recorded.
    site.edit(|registry| {
        let entry = registry.processes.get_mut("a").unwrap();
        entry.state = pm_core::ProcessState::Running;
        entry.pid = Some(pid);
        entry.pending_action = Some(pm_core::PendingAction::Stop);
    });
    let daemon = site.spawn_daemon(&pm_tests::site::DaemonOptions::plain());
    site.wait_ready(daemon, Duration::from_secs(20)).unwrap();
    wait_until(Duration::from_secs(10), "the monitor took the request", || {
        site.registry().unwrap().processes["a"].pending_action.is_none()
    });
    std::thread::sleep(Duration::from_millis(1000));
    let copies = site.copies("a");
    let status = site.statuses().unwrap()["a"].clone();
    assert!(
        copies.is_empty() && status.state == pm_core::ProcessState::Stopped,
        "a local stop was in progress when the monitor started, and the monitor runs a again: copies {copies:?}, \
         state {}, pid {:?}",
        status.state,
        status.pid
    );
    // And with the monitor up, the client's stop goes through it.
    assert_eq!(client.stop("a").unwrap().state, pm_core::ProcessState::Stopped);
    report("chaos: local stop while the daemon starts", "stayed stopped");
}

/// A monitor that is SIGKILLed while it takes over from a crashed one — after it removed the stale instance
/// lock, before it wrote its own — leaves no lock file behind. The next monitor must still resume (a crash
/// came before it), not boot: a process stopped on request stays stopped. (The chaos soak met this: eight
/// stopped processes started at once.)
#[test]
fn a_monitor_killed_while_taking_over_does_not_turn_the_next_start_into_a_boot() {
    let Some((site, daemon)) = site_running_a("chaos-takeover") else { return };
    let (status, body) = site.api("POST", "/processes/a/stop", Some("")).unwrap();
    assert_eq!(status, 200, "{body}");
    wait_until(Duration::from_secs(10), "the stop is stored", || {
        site.registry().unwrap().processes["a"].state == pm_core::ProcessState::Stopped
    });
    site.kill_daemon(daemon);
    // What the interrupted successor leaves: the stale lock removed, no lock of its own yet.
    std::fs::remove_file(site.paths().lock_file()).unwrap();
    site.start_daemon();
    std::thread::sleep(Duration::from_millis(1500));
    let copies = site.copies("a");
    assert!(
        copies.is_empty(),
        "a was stopped on request before the crash, and after an interrupted takeover the next monitor started \
         it again as if the machine had booted: copies {copies:?}"
    );
    report("chaos: interrupted takeover", "stopped process stayed stopped");
}

fn wait_until(timeout: Duration, what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
