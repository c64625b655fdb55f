//! Engine hardening (issues 12 and 21) against the real binary: slow stops over the remote API, `--stop` that
//! waits for a shutdown already under way, and `--stop` that says so when a process was left running.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{http, signal, Env, Proc, DEADLINE};

/// A CLI run in the background, killed and reaped on drop unless it was waited for.
struct Background(Option<std::process::Child>);

impl Background {
    fn spawn(env: &Env, args: &[&str]) -> Background {
        let mut command = env.command(args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        Background(Some(command.spawn().unwrap()))
    }

    /// Waits for it to end: exit code, stdout, stderr.
    fn finish(&mut self) -> (Option<i32>, String, String) {
        let output = self.0.take().unwrap().wait_with_output().unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (output.status.code(), text(&output.stdout), text(&output.stderr))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until the monitor's own `/status` says it is stopping.
fn wait_stopping(env: &Env) {
    env.wait_for("the monitor reports stopping", || {
        http(env.alive_port, "GET", "/status", None).filter(|(_, body)| body.contains("\"state\":\"stopping\""))
    });
}

/// A process that takes `secs` seconds to stop after SIGTERM (well inside its 30 s stop timeout), autostart.
fn slow_stopper(env: &Env, id: &str, secs: u32) -> Proc {
    let script = format!("trap 'sleep {secs}; exit 0' TERM; while :; do sleep 0.2; done");
    let mut config = env.shell(id, &script);
    config["autostart"] = json!(true);
    config["stopTimeoutMs"] = json!(30_000);
    env.register(&config);
    env.running_pid(id)
}

/// Stop, restart, disable and deregister of a process that takes 6 s to stop (longer than the client's 5 s
/// timeout) succeed through `--remote`: the client's deadline covers the process's stop timeout.
#[test]
fn slow_stops_succeed_through_the_remote_api() {
    let env = Env::new();
    env.start_daemon();
    let first = slow_stopper(&env, "slow", 6);
    let url = env.remote_url();
    for (command, state) in [("stop", "stopped"), ("restart", "running"), ("disable", "disabled")] {
        if env.status("slow")["state"] != "running" {
            env.ok(&["start", "slow"]);
            env.running_pid("slow");
        }
        let started = Instant::now();
        let out = env.run(&[command, "--remote", &url, "slow"]);
        let took = started.elapsed();
        assert_eq!(out.code, 0, "{command} --remote failed after {took:?}: {out:?}");
        assert!(took >= Duration::from_secs(5), "{command} answered before the process stopped ({took:?})");
        let status = env.status("slow");
        assert_eq!(status["state"], state, "after {command}: {status:#}");
        if command == "restart" {
            env.running_pid("slow");
        }
    }
    assert!(!first.running());
    env.ok(&["enable", "slow"]);
    env.ok(&["start", "slow"]);
    let last = env.running_pid("slow");
    let started = Instant::now();
    let out = env.run(&["deregister", "--remote", &url, "slow"]);
    assert_eq!(out.code, 0, "deregister --remote failed after {:?}: {out:?}", started.elapsed());
    assert!(!last.running(), "deregistered but still running");
    assert_eq!(env.entry("slow"), serde_json::Value::Null);
}

/// A second `--stop` while the first one's shutdown is under way waits for that shutdown: the monitor does not
/// exit early, nothing is left running, and both report success.
#[test]
fn a_second_stop_waits_for_the_same_shutdown() {
    let env = Env::new();
    let monitor = Proc::of(env.start_daemon());
    let child = slow_stopper(&env, "slow", 3);
    let mut first = Background::spawn(&env, &["--stop"]);
    wait_stopping(&env);
    let started = Instant::now();
    let second = env.run(&["--stop"]);
    assert_eq!(second.code, 0, "{second:?}");
    assert!(second.stderr.contains("already stopping"), "{second:?}");
    assert!(started.elapsed() >= Duration::from_secs(1), "the second --stop returned before the shutdown ended");
    assert!(!monitor.running());
    assert!(!child.running(), "a process was abandoned by the second --stop");
    assert_eq!(env.copies("slow"), 0);
    let (code, stdout, stderr) = first.finish();
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    assert!(stdout.contains("1 running process(es) were stopped with it"), "{stdout}");

    // A plain SIGTERM during the shutdown does not cut it short either.
    let monitor = Proc::of(env.start_daemon());
    let child = env.running_pid("slow");
    signal(monitor.pid, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    signal(monitor.pid, libc::SIGTERM);
    let deadline = Instant::now() + DEADLINE;
    while !monitor.gone() {
        assert!(Instant::now() < deadline, "the monitor did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!child.running(), "a second SIGTERM left the process running");
}

/// A monitor that exits while one of its processes still runs (here: a second Ctrl-C cuts its shutdown short)
/// makes `--stop` fail and name the process; "stopped with it" is not printed.
#[test]
fn stop_fails_when_a_process_is_left_running() {
    let env = Env::new();
    let monitor = Proc::of(env.start_daemon());
    let child = slow_stopper(&env, "slow", 20);
    let mut stop = Background::spawn(&env, &["--stop"]);
    wait_stopping(&env);
    signal(monitor.pid, libc::SIGINT);
    let (code, stdout, stderr) = stop.finish();
    assert_eq!(code, Some(1), "{stdout} {stderr}");
    assert!(!stdout.contains("stopped with it"), "{stdout}");
    assert!(stderr.contains("still running: slow (pid"), "{stderr}");
    assert!(child.running());
    signal(child.pid, libc::SIGKILL);
}
