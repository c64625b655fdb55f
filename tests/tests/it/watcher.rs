//! The watcher pair: mutual supervision, recovery after kill -9, self-restart, standalone mode.

use std::time::Duration;

use pm_tests::{http, kill9, report, Home};

/// Recovery must happen within this bound at the default 3 s x 2 settings.
const RECOVERY_BOUND: Duration = Duration::from_secs(7);
const LONG: Duration = Duration::from_secs(30);

/// Starts the watcher first (it starts the default instance), with one managed sleeper on `default`, and
/// waits until both instances answer and supervise each other.
fn pair(check_interval_ms: u64) -> Option<Home> {
    let home = Home::new(check_interval_ms)?;
    home.add_sleeper("default", "sleeper");
    let (code, out, err) = home.cli(true, &[]);
    assert_eq!(code, 0, "monitor_watcher failed: {out} {err}");
    assert!(out.contains("started (pid"), "{out}");
    home.wait_until(LONG, "both instances answer", || {
        home.answers(home.default_ports) && home.answers(home.watcher_ports)
    });
    home.wait_until(LONG, "the sleeper runs", || home.child_pid("default", "sleeper").is_some());
    home.wait_until(LONG, "each supervises the other", || {
        home.child_pid("watcher", "default").is_some() && home.child_pid("default", "watcher").is_some()
    });
    Some(home)
}

/// Turns standalone mode on for the default instance through its API and waits until it dropped its watcher entry.
fn standalone_default(home: &Home) {
    let (status, body) =
        http(home.default_ports.remote, "PUT", "/config/standalone-mode", Some(r#"{"enabled":true}"#)).unwrap();
    assert_eq!(status, 200, "{body}");
    home.wait_until(LONG, "watcher entry dropped", || !home.registry("default").processes.contains_key("watcher"));
}

fn assert_one_of_each(home: &Home) {
    // Give racing restarts time to show up before counting.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(home.instances("default"), 1, "exactly one default instance");
    assert_eq!(home.instances("watcher"), 1, "exactly one watcher instance");
    assert_eq!(home.copies("sleeper"), 1, "exactly one sleeper");
}

#[test]
fn watcher_first_starts_default_and_both_supervise_each_other() {
    let Some(home) = pair(3000) else { return };
    let status = home.get(home.default_ports.alive, "/status").unwrap();
    assert_eq!(status.0, 200);
    let status: serde_json::Value = serde_json::from_str(&status.1).unwrap();
    assert_eq!(status["instanceId"], "default");
    assert_eq!(status["partnerInstanceId"], "watcher");
    let (code, out, _) = home.cli(true, &["--status"]);
    assert_eq!(code, 0);
    assert!(out.contains("ProcessMonitor watcher is running"), "{out}");
    assert_one_of_each(&home);
}

#[test]
fn kill_9_of_default_is_repaired_by_the_watcher_and_children_are_adopted() {
    let Some(home) = pair(3000) else { return };
    let old = home.holder("default").unwrap();
    let sleeper = home.child_pid("default", "sleeper").unwrap();
    kill9(old);
    let took = home.wait_until(LONG, "a new default answers", || {
        home.holder("default").is_some_and(|pid| pid != old) && home.answers(home.default_ports)
    });
    report("kill -9 default -> watcher restarts it", &format!("{took:.2?}"));
    assert!(took < RECOVERY_BOUND, "recovery took {took:?}");
    home.wait_until(LONG, "sleeper adopted", || home.child_pid("default", "sleeper") == Some(sleeper));
    assert_eq!(home.starts("sleeper"), 1, "the managed child must not be restarted");
    assert_one_of_each(&home);
}

#[test]
fn kill_9_of_watcher_is_repaired_by_default() {
    let Some(home) = pair(3000) else { return };
    let old = home.holder("watcher").unwrap();
    kill9(old);
    let took = home.wait_until(LONG, "a new watcher answers", || {
        home.holder("watcher").is_some_and(|pid| pid != old) && home.answers(home.watcher_ports)
    });
    report("kill -9 watcher -> default restarts it", &format!("{took:.2?}"));
    assert!(took < RECOVERY_BOUND, "recovery took {took:?}");
    assert_eq!(home.starts("sleeper"), 1);
    assert_one_of_each(&home);
    // Started detached: a session (and process group) of its own, not the default's.
    let new = home.holder("watcher").unwrap();
    let default = home.holder("default").unwrap();
    assert_eq!(session_and_group(new), Some((new, new)), "the restarted watcher leads its own session");
    assert_ne!(session_and_group(new).map(|ids| ids.0), session_and_group(default).map(|ids| ids.0));
}

/// (session id, process group id) of a live process, from /proc.
fn session_and_group(pid: u32) -> Option<(u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    // After the command: state, ppid, pgrp, session.
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some((fields.get(3)?.parse().ok()?, fields.get(2)?.parse().ok()?))
}

#[test]
fn faster_intervals_recover_faster_from_a_hung_partner() {
    let Some(home) = pair(500) else { return };
    let old = home.holder("watcher").unwrap();
    // A stopped (hung) watcher: its PID lives but it does not answer. The default must notice through the
    // aliveness check (2 x 500 ms), kill it and start another.
    // SAFETY: signalling a process this scenario started.
    unsafe { libc::kill(old as i32, libc::SIGSTOP) };
    let took = home.wait_until(LONG, "a new watcher answers", || {
        home.holder("watcher").is_some_and(|pid| pid != old) && home.answers(home.watcher_ports)
    });
    report("SIGSTOP watcher (500 ms x 2) -> replaced", &format!("{took:.2?}"));
    assert!(took < Duration::from_secs(10), "replacing a hung watcher took {took:?}");
    assert!(!pm_registry::proc::alive(old) || home.holder("watcher") != Some(old));
    assert_one_of_each(&home);
}

#[test]
fn kill_both_within_100_ms_leaves_no_duplicates() {
    let Some(home) = pair(3000) else { return };
    let default = home.holder("default").unwrap();
    let watcher = home.holder("watcher").unwrap();
    kill9(default);
    std::thread::sleep(Duration::from_millis(50));
    kill9(watcher);
    // Whoever noticed first may have restarted the other in the window; the guide's "both crash" case
    // otherwise needs a system restart. Either way nothing may be duplicated.
    std::thread::sleep(Duration::from_secs(4));
    let default_count = home.instances("default");
    let watcher_count = home.instances("watcher");
    report(
        "kill -9 both within 50 ms",
        &format!("afterwards: {default_count} default, {watcher_count} watcher instance(s)"),
    );
    assert!(default_count <= 1 && watcher_count <= 1);
    assert!(home.copies("sleeper") <= 1);
    // The guide's remedy: start it again; the children are adopted, not duplicated.
    let (code, out, err) = home.cli(true, &[]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(LONG, "both back", || home.answers(home.default_ports) && home.answers(home.watcher_ports));
    assert_one_of_each(&home);
    assert_eq!(home.starts("sleeper"), 1, "the sleeper survived and was adopted");
}

#[test]
fn self_restart_through_the_api_keeps_children() {
    let Some(home) = pair(3000) else { return };
    let old = home.holder("default").unwrap();
    let sleeper = home.child_pid("default", "sleeper").unwrap();
    let started = std::time::Instant::now();
    let (status, body) = http(home.default_ports.remote, "POST", "/monitor/restart", Some("")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ProcessMonitor restart initiated"), "{body}");
    home.wait_until(LONG, "the replacement answers", || {
        home.holder("default").is_some_and(|pid| pid != old) && home.answers(home.default_ports)
    });
    report("POST /monitor/restart -> replacement answers", &format!("{:.2?}", started.elapsed()));
    home.wait_until(LONG, "sleeper adopted", || home.child_pid("default", "sleeper") == Some(sleeper));
    assert_eq!(home.starts("sleeper"), 1);
    assert_one_of_each(&home);
}

#[test]
fn cli_restart_of_the_watcher_keeps_everything() {
    let Some(home) = pair(3000) else { return };
    let old = home.holder("watcher").unwrap();
    let (code, out, err) = home.cli(true, &["--restart"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("restarted"), "{out}");
    assert_ne!(home.holder("watcher"), Some(old));
    assert_eq!(home.starts("sleeper"), 1);
    assert_one_of_each(&home);
}

#[test]
fn standalone_mode_leaves_a_killed_partner_dead() {
    let Some(home) = pair(500) else { return };
    // The default no longer supervises its watcher.
    standalone_default(&home);
    // Keep the watcher from restarting the default as well: it is the default's partner that must stay dead.
    let watcher = home.holder("watcher").unwrap();
    kill9(watcher);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(home.holder("watcher"), None, "the killed watcher must stay dead in standalone mode");
    assert!(home.answers(home.default_ports));
    report("standalone: killed watcher stays dead", "3 s = 6 check intervals");
}

#[test]
fn stop_of_default_through_the_cli_is_not_undone_by_the_watcher() {
    let Some(home) = pair(500) else { return };
    let sleeper = home.child_pid("default", "sleeper").unwrap();
    let (code, out, err) = home.cli(false, &["--stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stopped"), "{out}");
    assert_eq!(home.holder("default"), None);
    home.wait_until(LONG, "sleeper stopped with its monitor", || !pm_registry::proc::alive(sleeper));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(home.holder("default"), None, "the watcher must not bring a stopped default back");
    assert!(home.answers(home.watcher_ports));
    // Started again by hand, it is supervised again.
    let (code, _, _) = home.cli(false, &[]);
    assert_eq!(code, 0);
    home.wait_until(LONG, "watcher re-adopts default", || home.child_pid("watcher", "default").is_some());
}

#[test]
fn a_child_the_registry_lost_track_of_is_adopted_not_duplicated() {
    let Some(home) = Home::new(3000) else { return };
    home.add_sleeper("default", "sleeper");
    let port = home.default_ports.alive.to_string();
    let (code, out, err) = home.cli(false, &["--standalone", "--aliveness-port", &port]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(LONG, "the sleeper runs", || home.child_pid("default", "sleeper").is_some());
    let sleeper = home.child_pid("default", "sleeper").unwrap();
    kill9(home.holder("default").unwrap());
    home.wait_until(LONG, "lock stale", || home.holder("default").is_none());
    // As if the monitor had died between spawning the child and storing its PID.
    home.edit("default", |registry| {
        let entry = registry.processes.get_mut("sleeper").unwrap();
        entry.pid = None;
        entry.pid_start_time = None;
        entry.state = pm_core::ProcessState::Stopped;
    });
    let (code, out, err) = home.cli(false, &["--standalone"]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(LONG, "sleeper adopted", || home.child_pid("default", "sleeper") == Some(sleeper));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(home.starts("sleeper"), 1, "a second copy was started");
    assert_eq!(home.copies("sleeper"), 1);
}

#[test]
fn a_hung_default_is_killed_and_replaced_and_its_children_adopted() {
    let Some(home) = pair(500) else { return };
    let old = home.holder("default").unwrap();
    let sleeper = home.child_pid("default", "sleeper").unwrap();
    // SAFETY: signalling a process this scenario started.
    unsafe { libc::kill(old as i32, libc::SIGSTOP) };
    let took = home.wait_until(LONG, "a new default answers", || {
        home.holder("default").is_some_and(|pid| pid != old) && home.answers(home.default_ports)
    });
    report("SIGSTOP default (500 ms x 2) -> replaced", &format!("{took:.2?}"));
    home.wait_until(LONG, "the hung default is gone", || !pm_registry::proc::alive(old));
    home.wait_until(LONG, "sleeper adopted", || home.child_pid("default", "sleeper") == Some(sleeper));
    assert_eq!(home.starts("sleeper"), 1, "the managed child must survive its monitor's replacement");
    assert_one_of_each(&home);
}

#[test]
fn a_child_whose_registration_is_gone_is_stopped_at_start_not_left_running() {
    let Some(home) = Home::new(3000) else { return };
    home.add_sleeper("default", "sleeper");
    home.add_sleeper("default", "other");
    let port = home.default_ports.alive.to_string();
    let (code, out, err) = home.cli(false, &["--standalone", "--aliveness-port", &port]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(LONG, "both sleepers run", || {
        home.child_pid("default", "sleeper").is_some() && home.child_pid("default", "other").is_some()
    });
    let (sleeper, other) = (home.child_pid("default", "sleeper").unwrap(), home.child_pid("default", "other").unwrap());
    kill9(home.holder("default").unwrap());
    home.wait_until(LONG, "lock stale", || home.holder("default").is_none());
    // As a deregistration leaves it when its monitor is killed before it stopped the child.
    home.edit("default", |registry| {
        registry.processes.remove("sleeper");
    });
    assert!(pm_registry::proc::alive(sleeper));
    let (code, out, err) = home.cli(false, &["--standalone"]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(LONG, "the unregistered sleeper is stopped", || !pm_registry::proc::alive(sleeper));
    assert_eq!(home.copies("sleeper"), 0);
    assert!(!home.registry("default").processes.contains_key("sleeper"), "registered again");
    // The registered one is adopted, untouched.
    assert_eq!(home.child_pid("default", "other"), Some(other));
    assert!(pm_registry::proc::alive(other));
}

#[test]
fn a_partner_left_unsupervised_by_standalone_mode_survives_its_starters_restart() {
    let Some(home) = pair(500) else { return };
    // A watcher started by the default instance carries the default's owner key in its environment.
    let first = home.holder("watcher").unwrap();
    kill9(first);
    home.wait_until(LONG, "default starts a new watcher", || {
        home.holder("watcher").is_some_and(|pid| pid != first) && home.answers(home.watcher_ports)
    });
    let watcher = home.holder("watcher").unwrap();
    standalone_default(&home);
    // The default comes back (started again by its watcher) and finds the watcher among the processes it started
    // that are not registered: a monitor, which it leaves running.
    let old = home.holder("default").unwrap();
    kill9(old);
    home.wait_until(LONG, "a new default answers", || {
        home.holder("default").is_some_and(|pid| pid != old) && home.answers(home.default_ports)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(home.holder("watcher"), Some(watcher), "the watcher was stopped or replaced");
    assert!(home.answers(home.watcher_ports));
    assert_one_of_each(&home);
}

/// Restarts the default instance in place (`--restart`: a new process) and waits until the new one answers.
fn restart_default(home: &Home) -> u32 {
    let old = home.holder("default").unwrap();
    let (code, out, err) = home.cli(false, &["--restart"]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(LONG, "the restarted default answers", || {
        home.holder("default").is_some_and(|pid| pid != old) && home.answers(home.default_ports)
    });
    home.holder("default").unwrap()
}

#[test]
fn stop_after_a_self_restart_with_the_watcher_gone_stops_directly() {
    let Some(home) = pair(500) else { return };
    let (code, out, err) = home.cli(true, &["--stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(home.holder("watcher"), None);
    // The watcher's registry still names the default's old process.
    restart_default(&home);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(home.holder("watcher"), None, "the stopped watcher came back with the default's restart");
    let sleeper = home.child_pid("default", "sleeper").unwrap();
    let started = std::time::Instant::now();
    let (code, out, err) = home.cli(false, &["--stop"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(home.holder("default"), None);
    assert!(!pm_registry::proc::alive(sleeper), "its process was stopped with it");
    assert!(took < Duration::from_secs(20), "--stop took {took:?}");
    report("--stop after --restart, watcher gone", &format!("{took:.2?}"));
}

#[test]
fn stop_right_after_a_self_restart_goes_through_the_watcher_and_stays_stopped() {
    let Some(home) = pair(500) else { return };
    restart_default(&home);
    let (code, out, err) = home.cli(false, &["--stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("its partner will not restart it"), "{out}");
    assert_eq!(home.holder("default"), None);
    // Six check intervals: the watcher must not bring it back.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(home.holder("default"), None, "the watcher restarted a stopped default");
    assert!(home.answers(home.watcher_ports));
}

/// Kills one process when dropped (a process the monitor does not track).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill9(self.0);
    }
}

#[test]
fn a_detached_helper_of_a_managed_process_is_not_taken_for_a_copy() {
    let Some(home) = Home::new(3000) else { return };
    // The service starts a helper in a session (and group) of its own, which inherits its environment.
    let helper_file = home.dir.join("helper.pid");
    let mut config = pm_core::ProcessConfig::new("server", "server", "/bin/sh");
    let script = format!("setsid sleep 600 & echo $! > {}; exec sleep 600", helper_file.display());
    config.args = vec!["-c".to_owned(), script];
    home.edit("default", |registry| {
        registry
            .processes
            .insert("server".to_owned(), pm_core::ProcessEntry::new(config, pm_core::Timestamp::now()).into());
    });
    let port = home.default_ports.alive.to_string();
    let (code, out, err) = home.cli(false, &["--standalone", "--aliveness-port", &port]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(LONG, "the server and its helper run", || {
        home.child_pid("default", "server").is_some()
            && std::fs::read_to_string(&helper_file).is_ok_and(|text| text.trim().parse::<u32>().is_ok())
    });
    let helper: u32 = std::fs::read_to_string(&helper_file).unwrap().trim().parse().unwrap();
    let _helper = KillOnDrop(helper);
    let server = home.child_pid("default", "server").unwrap();
    assert!(pm_registry::proc::alive(helper));

    kill9(home.holder("default").unwrap());
    home.wait_until(LONG, "lock stale", || home.holder("default").is_none());
    let (code, out, err) = home.cli(false, &["--standalone"]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(LONG, "the server adopted", || home.child_pid("default", "server") == Some(server));
    std::thread::sleep(Duration::from_millis(500));
    assert!(pm_registry::proc::alive(helper), "the helper was taken for a second copy and stopped");
    assert!(pm_registry::proc::alive(server));
}
