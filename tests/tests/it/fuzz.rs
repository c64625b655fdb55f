//! HTTP fuzzing against a live daemon on loopback: malformed requests from a trusted and an untrusted peer,
//! sent whole, slowly, cut off or reset. Throughout, the daemon keeps answering `/alive`; its memory and open
//! files stay bounded; and nothing stored is lost or changed.
//!
//! `PM_FUZZ_CASES` sets the number of cases (3000 by default, 100 000 in `cargo xtask chaos`);
//! `PM_FUZZ_SEED` replays a run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use pm_core::{ProcessEntry, ProcessState, Settings, Timestamp};
use pm_tests::fuzz::{self, FuzzConfig, Target};
use pm_tests::report;
use pm_tests::rng::{count_from_env, seed_from_env};
use pm_tests::site::Site;

fn site(label: &str) -> Option<Site> {
    Site::new(label, Path::new(env!("CARGO_BIN_EXE_pm-test-reaper")))
}

/// Growth of the daemon's resident memory allowed at the peak of the run, and left after it.
const PEAK_GROWTH_KIB: u64 = 128 * 1024;
const LEFT_GROWTH_KIB: u64 = 64 * 1024;

fn wait_until(timeout: Duration, what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn log_folders(site: &Site) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(site.paths().logs_dir())
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn malformed_requests_keep_the_daemon_up_bounded_and_lose_nothing() {
    let Some(site) = site("fuzz") else { return };
    let ids: Vec<String> = (0..3).map(|idx| format!("fz{idx}")).collect();
    site.edit(|registry| {
        // 127.0.0.1 is trusted, 127.0.0.2 is not; untrusted peers keep the default permissions.
        registry.remote_access.trusted_hosts = vec!["127.0.0.1".to_owned()];
        for id in &ids {
            registry.processes.insert(id.clone(), ProcessEntry::new(site.sleeper(id), Timestamp::now()).into());
        }
    });
    let daemon = site.start_daemon();
    wait_until(Duration::from_secs(20), "the sleepers run", || {
        let statuses = site.statuses().unwrap_or_default();
        ids.iter()
            .all(|id| statuses.get(id).is_some_and(|s| s.state == ProcessState::Running) && site.copies(id).len() == 1)
    });
    let before = site.registry().unwrap();
    let pids: BTreeMap<String, u32> = ids.iter().map(|id| (id.clone(), site.copies(id)[0])).collect();
    let folders = log_folders(&site);

    let cases = count_from_env("PM_FUZZ_CASES", 3000);
    let seed = seed_from_env("PM_FUZZ_SEED");
    eprintln!("fuzz | {cases} cases, seed {seed:#x} (replay with PM_FUZZ_SEED={seed:#x})");
    let config = FuzzConfig {
        cases,
        seed,
        threads: 8,
        daemon_pid: daemon,
        remote_port: site.remote_port,
        alive_port: site.alive_port,
        target: Target { ids: ids.clone() },
    };
    let res = fuzz::run(&config);
    report("fuzz: malformed HTTP", &res.figures());

    assert!(res.bad.is_empty(), "{} bad answers (seed {seed:#x}):\n{:#?}", res.bad.len(), res.bad);
    assert!(res.alive_failures.is_empty(), "/alive failed while fuzzing: {:#?}", res.alive_failures);
    assert!(res.alive_checks > 0);
    assert_eq!(res.slow_not_cut, 0, "slow header senders were not cut off: {}", res.figures());
    assert!(res.slow_senders.0 >= 8, "the slow senders could not connect: {}", res.figures());
    let (rss_before, rss_peak, rss_after) = res.rss_kib;
    assert!(rss_peak <= rss_before + PEAK_GROWTH_KIB, "memory grew too much: {}", res.figures());
    assert!(rss_after <= rss_before + LEFT_GROWTH_KIB, "memory not given back: {}", res.figures());
    assert!(res.fds.2 <= res.fds.0 + 8, "open files not given back: {}", res.figures());
    assert!(res.fds.1 < 600, "open files unbounded: {}", res.figures());
    assert!(res.answered > cases / 2, "most cases got no answer: {}", res.figures());

    // Nothing stored is lost or changed, nothing was restarted, nothing was created.
    assert_eq!(site.daemon_pid(), Some(daemon), "the daemon was replaced");
    let after = site.registry().unwrap();
    assert_eq!(Settings::of(&after), Settings::of(&before), "settings changed");
    let configs = |registry: &pm_core::Registry| -> BTreeMap<String, pm_core::ProcessConfig> {
        registry.processes.iter().map(|(id, entry)| (id.clone(), entry.config.clone())).collect()
    };
    assert_eq!(configs(&after), configs(&before), "registrations changed");
    let statuses = site.statuses().unwrap();
    for (id, pid) in &pids {
        assert_eq!(site.copies(id), vec![*pid], "{id} was restarted or duplicated");
        assert_eq!(statuses[id].pid, Some(*pid), "{id}");
        assert_eq!(statuses[id].state, ProcessState::Running, "{id}");
    }
    assert_eq!(statuses.len(), ids.len(), "processes appeared: {:?}", statuses.keys());
    assert_eq!(log_folders(&site), folders, "log folders appeared");
}

#[test]
fn the_generator_is_replayable_and_trusted_cases_are_harmless() {
    // Runs without binaries: the generator itself.
    let target = Target { ids: vec!["a".to_owned()] };
    let mut labels = BTreeMap::new();
    for index in 0..3000 {
        let case = fuzz::generate(7, index, &target);
        let again = fuzz::generate(7, index, &target);
        assert_eq!(case.bytes, again.bytes, "case {index} is not a function of seed and index");
        *labels.entry(case.label).or_insert(0) += 1;
        if case.trusted {
            // Trusted requests never act on a registered process and never restart the monitor.
            let text = String::from_utf8_lossy(&case.bytes);
            assert!(!text.contains("/monitor/restart"), "case {index}: a trusted monitor restart");
            for method in ["POST", "PUT", "DELETE"] {
                assert!(!text.contains(&format!("{method} /processes/a")), "case {index}: trusted {method} on a");
            }
        }
    }
    assert!(labels.len() >= 15, "categories: {labels:?}");
    assert!(fuzz::harmless("/processes", r#"{"id":"../x","name":"n","command":"/bin/sh"}"#));
    assert!(!fuzz::harmless("/processes", r#"{"id":"ok","name":"n","command":"/bin/sh"}"#));
    assert!(!fuzz::harmless("/config/standalone-mode", r#"{"enabled":true}"#));
    assert!(fuzz::harmless("/config/standalone-mode", r#"{"enabled":true,"fuzzUnknownKey":1}"#));
    assert!(fuzz::harmless("/config/standalone-mode", "[true]"));
}
