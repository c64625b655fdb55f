//! Chaos: a remote-API client and a local client keep registering, starting, stopping and restarting
//! processes while the daemon is SIGKILLed at random moments and started again. After every cycle and at the
//! end: the registry parses, every acknowledged registration is there, every process that should run runs
//! exactly once (counted by the marker in its argv, and supervised), nothing acknowledged as stopped runs,
//! and after the final stop nothing of ours is left, not even a zombie.
//!
//! `PM_CHAOS_CYCLES` sets the cycles (20 by default, 200 in `cargo xtask chaos`); `PM_CHAOS_SEED` replays a run.

use std::path::Path;

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
