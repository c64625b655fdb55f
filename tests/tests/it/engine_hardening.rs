//! The watcher pair under the engine hardening of issue 12: the partner checked on the port it actually serves,
//! a partner stop grace that covers the partner's slowest process, and no adoption of a partner that is
//! shutting down.

use std::time::Duration;

use pm_tests::{free_port, http, Home};

const LONG: Duration = Duration::from_secs(30);

/// Both instances running and supervising each other (the watcher started first), with the sleeper on default.
fn pair(check_interval_ms: u64) -> Option<Home> {
    let home = Home::new(check_interval_ms)?;
    home.add_sleeper("default", "sleeper");
    let (code, out, err) = home.cli(true, &[]);
    assert_eq!(code, 0, "monitor_watcher failed: {out} {err}");
    home.wait_until(LONG, "both instances answer", || {
        home.answers(home.default_ports) && home.answers(home.watcher_ports)
    });
    home.wait_until(LONG, "each supervises the other", || {
        home.child_pid("watcher", "default").is_some() && home.child_pid("default", "watcher").is_some()
    });
    Some(home)
}

/// `default` started by hand on other ports than the watcher's registry says is adopted and checked on the
/// port it serves, and never killed for failing checks on the old one.
#[test]
fn a_default_started_on_other_ports_is_adopted_and_not_killed_by_the_watcher() {
    let Some(home) = pair(500) else { return };
    let (code, out, err) = home.cli(false, &["--stop"]);
    assert_eq!(code, 0, "{out}{err}");
    let (alive, remote) = (free_port(), free_port());
    let (alive_arg, remote_arg) = (alive.to_string(), remote.to_string());
    let (code, out, err) = home.cli(false, &["--aliveness-port", &alive_arg, "--remote-port", &remote_arg]);
    assert_eq!(code, 0, "{out}{err}");
    let pid = home.holder("default").expect("default runs");
    assert!(http(alive, "GET", "/alive", None).is_some_and(|(status, _)| status == 200));
    home.wait_until(LONG, "the watcher adopts the default on its new port", || {
        home.child_pid("watcher", "default") == Some(pid)
    });
    let check = home.registry("watcher").processes["default"].config.aliveness_check.clone().unwrap();
    assert_eq!(check.url, format!("http://localhost:{alive}/alive"));
    // Twelve check intervals: never killed, never replaced.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(home.holder("default"), Some(pid), "the watcher killed or replaced the default");
    assert_eq!(home.child_pid("watcher", "default"), Some(pid));
    // Killed, it is restarted by the watcher on the ports it stored, and checked there.
    pm_tests::kill9(pid);
    home.wait_until(LONG, "the watcher restarts the default", || {
        home.holder("default").is_some_and(|new| new != pid) && http(alive, "GET", "/alive", None).is_some()
    });
    let restarted = home.holder("default").unwrap();
    home.wait_until(LONG, "the watcher supervises the restarted default", || {
        home.child_pid("watcher", "default") == Some(restarted)
    });
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(home.holder("default"), Some(restarted), "the watcher killed the default it restarted");
}

/// The watcher's entry for `default` waits as long as default's slowest process may take to stop, plus a
/// margin, before it would SIGKILL the default; `--stop` through the watcher stops that process in full.
#[test]
fn the_partner_stop_grace_covers_the_partner_slowest_process() {
    let Some(home) = Home::new(500) else { return };
    home.add_slow_stopper("default", "slow", 2, 45_000);
    let (code, out, err) = home.cli(true, &[]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(LONG, "the watcher supervises the default", || home.child_pid("watcher", "default").is_some());
    home.wait_until(LONG, "the slow process runs", || home.child_pid("default", "slow").is_some());
    home.wait_until(LONG, "the partner entry's stop grace covers the slow process", || {
        home.registry("watcher").processes["default"].config.stop_timeout_ms == Some(60_000)
    });
    let slow = home.child_pid("default", "slow").unwrap();
    let (code, out, err) = home.cli(false, &["--stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 running process(es) were stopped with it"), "{out}");
    assert!(!pm_registry::proc::alive(slow));
    assert_eq!(home.copies("slow"), 0);
}

/// A watcher that starts while the default is shutting down (its processes still stopping) does not adopt it,
/// so the default's exit is not taken for a crash and undone.
#[test]
fn a_partner_that_is_shutting_down_is_not_adopted() {
    let Some(home) = Home::new(500) else { return };
    home.add_slow_stopper("default", "slow", 4, 30_000);
    let (code, out, err) = home.cli(true, &[]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(LONG, "the watcher supervises the default", || home.child_pid("watcher", "default").is_some());
    home.wait_until(LONG, "the slow process runs", || home.child_pid("default", "slow").is_some());
    let (code, out, err) = home.cli(true, &["--stop"]);
    assert_eq!(code, 0, "{out}{err}");
    let default = home.holder("default").expect("the default outlives the watcher");
    // SAFETY: kill(2) on the default monitor this scenario started.
    unsafe { libc::kill(default as i32, libc::SIGTERM) };
    home.wait_until(LONG, "the default reports stopping", || {
        home.get(home.default_ports.alive, "/status").is_some_and(|(_, body)| body.contains("\"state\":\"stopping\""))
    });
    let (code, out, err) = home.cli(true, &[]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(LONG, "the default exits", || home.holder("default").is_none());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(home.holder("default"), None, "the watcher adopted a stopping default and restarted it");
    assert_eq!(home.copies("slow"), 0);
    assert!(home.answers(home.watcher_ports));
}

/// p-th percentile of `samples` (sorted in place).
fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// `/alive` and `/status` keep answering fast while 3 clients hammer the remote API (alternating
/// `GET /processes/{id}` over 60 running processes, `GET /processes`, `GET /metrics`): resource figures come
/// from a background sample, so no request scans `/proc` on the runtime's workers.
#[test]
fn alive_and_status_stay_fast_while_the_api_is_hammered() {
    let Some(home) = Home::new(3000) else { return };
    for idx in 0..60 {
        home.add_sleeper("default", &format!("p{idx:02}"));
    }
    let (code, out, err) = home.cli(false, &["--standalone"]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(LONG, "60 processes run", || {
        home.registry("default").processes.values().filter(|entry| entry.pid.is_some()).count() == 60
    });
    let remote = home.default_ports.remote;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let hammers: Vec<_> = (0..3)
        .map(|worker| {
            std::thread::spawn(move || {
                let mut count = 0usize;
                while std::time::Instant::now() < deadline {
                    let path = match count % 6 {
                        0 => "/processes".to_owned(),
                        1 => "/metrics".to_owned(),
                        k => format!("/processes/p{:02}", (worker * 31 + k * 17 + count) % 60),
                    };
                    let res = http(remote, "GET", &path, None);
                    assert!(res.is_some_and(|(status, _)| status == 200), "GET {path}");
                    count += 1;
                }
                count
            })
        })
        .collect();
    let (mut alive, mut status) = (Vec::new(), Vec::new());
    while std::time::Instant::now() < deadline {
        for (path, into) in [("/alive", &mut alive), ("/status", &mut status)] {
            let started = std::time::Instant::now();
            let res = http(home.default_ports.alive, "GET", path, None);
            into.push(started.elapsed());
            assert!(res.is_some_and(|(code, _)| code == 200), "GET {path}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let hammered: usize = hammers.into_iter().map(|hammer| hammer.join().unwrap()).sum();
    let (alive_p99, status_p99) = (percentile(&mut alive, 99.0), percentile(&mut status, 99.0));
    pm_tests::report(
        "/alive, /status p99 under API load (60 processes)",
        &format!("{alive_p99:.2?}, {status_p99:.2?} ({} probes, {hammered} API requests)", alive.len()),
    );
    assert!(hammered > 300, "the API was hardly loaded: {hammered} requests");
    // 10 ms is the target of the release build on an idle machine (`cargo xtask bench`, row alive-p99-load).
    // This debug build gets 25 ms, scaled by how overloaded the machine is (load average per core above 1),
    // since on a shared machine the probes wait for a core whatever the monitor does.
    let bound = Duration::from_millis(if cfg!(debug_assertions) { 25 } else { 10 }).mul_f64(overload());
    assert!(
        alive_p99 <= bound && status_p99 <= bound,
        "p99 /alive {alive_p99:?}, /status {status_p99:?} (bound {bound:?} at load {:.1})",
        overload()
    );
}

/// The 1-minute load average per core, at least 1.
fn overload() -> f64 {
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    (load / cores).max(1.0)
}
