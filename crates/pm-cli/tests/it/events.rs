//! Live events and remote logs against the real binary: a crash's events in order, reconnecting with
//! `Last-Event-ID` through a burst, a gap behind the ring, following logs through restarts and rotation, the
//! stream cap, a reader that never reads, and `onStateChange` hooks.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pm_client::{EventStream, EventsOptions, RemoteProcessMonitorClient};
use pm_core::{Event, EventKind, ProcessState};
use serde_json::json;

use crate::support::{count_with_arg, line_reader, signal, Env, Guarded, DEADLINE};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn client(env: &Env) -> RemoteProcessMonitorClient {
    RemoteProcessMonitorClient::new(&env.remote_url()).unwrap()
}

fn open(rt: &tokio::runtime::Runtime, env: &Env, options: EventsOptions) -> EventStream {
    let client = client(env);
    rt.block_on(async { client.events(options).unwrap() })
}

/// A stream of every event since the monitor started, whenever it connects: an id of no run of this monitor
/// replays the whole ring after a `gap` event, which is skipped here. The monitor under test holds far fewer
/// events than its ring when this is called.
fn open_from_start(rt: &tokio::runtime::Runtime, env: &Env, process: Option<&str>) -> EventStream {
    let options = EventsOptions {
        process: process.map(str::to_owned),
        last_event_id: Some("0-0".to_owned()),
        ..Default::default()
    };
    let mut stream = open(rt, env, options);
    let gap = until(rt, &mut stream, DEADLINE, |_| true);
    assert!(matches!(gap[0].kind, EventKind::Gap { .. }), "{gap:#?}");
    stream
}

/// Events until `done` holds for one (included), within `deadline`.
fn until(
    rt: &tokio::runtime::Runtime,
    stream: &mut EventStream,
    deadline: Duration,
    mut done: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let mut res = Vec::new();
    let until = Instant::now() + deadline;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let event = rt
            .block_on(async { tokio::time::timeout(left, stream.next()).await })
            .unwrap_or_else(|_| panic!("timed out; events so far: {res:#?}"))
            .expect("the stream ended")
            .expect("the stream failed");
        let stop = done(&event);
        res.push(event);
        if stop {
            return res;
        }
    }
}

fn seq(event: &Event) -> u64 {
    event.id.rsplit('-').next().unwrap().parse().unwrap()
}

/// `(from, to)` of the state events of `id`.
fn transitions(events: &[Event], id: &str) -> Vec<(ProcessState, ProcessState)> {
    events
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::State { process_id, from, to, .. } if process_id == id => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

/// Waits until the monitor's API answers (the detached start returns once `/alive` does).
fn wait_api(env: &Env, rt: &tokio::runtime::Runtime) {
    let client = client(env);
    env.wait_for("the remote API", || rt.block_on(client.get_monitor_status()).ok());
}

#[test]
fn a_crash_is_running_crashed_retrying_running_with_the_signal_as_reason() {
    let env = Env::new();
    env.start_daemon();
    let rt = runtime();
    wait_api(&env, &rt);
    let mut stream = open_from_start(&rt, &env, Some("victim"));
    let mut config = env.shell("victim", "sleep 600");
    config["autostart"] = json!(true);
    config["restartPolicy"] = json!({"maxAttempts": 5, "backoffIntervalsMs": [100]});
    env.register(&config);
    let started = until(&rt, &mut stream, DEADLINE, |event| {
        matches!(event.kind, EventKind::State { to: ProcessState::Running, .. })
    });
    assert!(matches!(&started[0].kind, EventKind::Registered { process_id } if process_id == "victim"), "{started:#?}");
    let pid = env.running_pid("victim");
    signal(pid.pid, libc::SIGKILL);
    let events = until(&rt, &mut stream, DEADLINE, |event| {
        matches!(event.kind, EventKind::State { to: ProcessState::Running, .. })
    });
    assert_eq!(
        transitions(&events, "victim"),
        [
            (ProcessState::Running, ProcessState::Crashed),
            (ProcessState::Crashed, ProcessState::Retrying),
            (ProcessState::Retrying, ProcessState::Running),
        ],
        "{events:#?}"
    );
    let EventKind::State { pid: crashed_pid, reason, signal: crash_signal, exit_code, .. } = &events[0].kind else {
        panic!("{events:#?}")
    };
    assert_eq!((*crashed_pid, *crash_signal, *exit_code), (Some(pid.pid), Some(9), None));
    assert!(reason.contains("signal 9"), "{reason}");
    assert!(
        events.iter().any(
            |event| matches!(event.kind, EventKind::RestartScheduled { attempt: 1, delay_ms, .. } if delay_ms <= 100)
        ),
        "{events:#?}"
    );
    // Ids only grow.
    assert!(events.windows(2).all(|pair| seq(&pair[0]) < seq(&pair[1])), "{events:#?}");
}

/// A process that exits at once and is restarted without delay, `attempts` times: four events per restart.
fn flapper(env: &Env, id: &str, attempts: u32) -> serde_json::Value {
    let mut config = env.shell(id, "exit 3");
    config["autostart"] = json!(true);
    config["restartPolicy"] = json!({"maxAttempts": attempts, "backoffIntervalsMs": [0]});
    config
}

fn failed(event: &Event) -> bool {
    matches!(event.kind, EventKind::State { to: ProcessState::Failed, .. })
}

#[test]
fn reconnecting_with_last_event_id_through_a_burst_loses_and_repeats_nothing() {
    let env = Env::new();
    env.start_daemon();
    let rt = runtime();
    wait_api(&env, &rt);
    let mut first = open_from_start(&rt, &env, None);
    env.register(&flapper(&env, "burst", 150));
    // Read part of the burst, then go away in the middle of it.
    let mut seen = until(&rt, &mut first, DEADLINE, false_after(200));
    drop(first);
    let last_id = seen.last().unwrap().id.clone();
    let mut second = open(&rt, &env, EventsOptions { last_event_id: Some(last_id), ..Default::default() });
    seen.extend(until(&rt, &mut second, DEADLINE * 3, failed));
    assert!(seen.len() >= 500, "only {} events", seen.len());
    let seqs: Vec<u64> = seen.iter().map(seq).collect();
    let first_seq = seqs[0];
    assert_eq!(seqs, (first_seq..first_seq + seqs.len() as u64).collect::<Vec<_>>(), "a hole or a repeat");
    assert!(!seen.iter().any(|event| matches!(event.kind, EventKind::Gap { .. })));
    // Every state event starts where the previous one ended.
    let states = transitions(&seen, "burst");
    assert!(states.windows(2).all(|pair| pair[0].1 == pair[1].0), "{states:?}");
    let crashes = states.iter().filter(|(_, to)| *to == ProcessState::Crashed).count();
    assert_eq!(crashes, 151, "150 restarts, then the last crash fails it");
}

/// A predicate that holds from its `n`th call on.
fn false_after(n: usize) -> impl FnMut(&Event) -> bool {
    let mut calls = 0;
    move |_| {
        calls += 1;
        calls >= n
    }
}

#[test]
fn a_client_behind_the_ring_gets_a_gap_event() {
    let env = Env::new();
    env.start_daemon();
    let rt = runtime();
    wait_api(&env, &rt);
    // 300 restarts make some 1,200 events, more than the ring's 1,024.
    env.register(&flapper(&env, "flood", 300));
    env.wait_state("flood", "failed");
    let mut all = open_from_start(&rt, &env, None);
    let held = until(&rt, &mut all, DEADLINE, failed);
    assert_eq!(held.len(), 1024, "the ring holds the last 1,024 events");
    let epoch = held[0].id.split('-').next().unwrap().to_owned();
    let oldest = format!("{epoch}-1");
    let mut late = open(&rt, &env, EventsOptions { last_event_id: Some(oldest.clone()), ..Default::default() });
    let replay = until(&rt, &mut late, DEADLINE, failed);
    let EventKind::Gap { last_event_id, first_available_id } = &replay[0].kind else { panic!("{replay:#?}") };
    assert_eq!((last_event_id, first_available_id.as_deref()), (&oldest, Some(held[0].id.as_str())));
    assert_eq!(
        replay[1..].iter().map(|event| &event.id).collect::<Vec<_>>(),
        held.iter().map(|event| &event.id).collect::<Vec<_>>()
    );
}

#[test]
fn logs_follow_sees_two_runs_and_goes_through_a_rotation() {
    let env = Env::new();
    env.start_daemon();
    let counter = env.scratch("runs");
    // Each run writes 120 numbered lines of 64 bytes (7.5 KiB, past the 4 KiB limit) over about 3 s, then exits;
    // the monitor rotates while it writes.
    let script = format!(
        "n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); echo $n > {c}; i=1; while [ $i -le 120 ]; do \
         printf 'run%d line%03d %049d\\n' $n $i 0; i=$((i+1)); sleep 0.025; done; \
         if [ $n -ge 2 ]; then sleep 600; fi; exit 1",
        c = counter.display()
    );
    let mut config = env.shell("writer", &script);
    config["autostart"] = json!(true);
    config["restartPolicy"] = json!({"maxAttempts": 5, "backoffIntervalsMs": [300]});
    config["logMaxBytes"] = json!(4096);
    config["logKeep"] = json!(10);
    let remote = env.remote_url();
    let mut command = env.command(&["logs", "writer", "--remote", &remote, "-f", "-n", "100000"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    // Registered first, so the follower has a process (and soon a run folder) to follow.
    env.register(&config);
    env.wait_for("the first run folder", || {
        std::fs::read_dir(env.dir.join("default_logs").join("writer")).ok()?.next().map(|_| ())
    });
    let mut follower = Guarded(command.spawn().unwrap());
    env.remember(follower.0.id());
    let lines = line_reader(follower.0.stdout.take().unwrap());
    let mut seen = Vec::new();
    let started = Instant::now();
    while seen.last().map(String::as_str).is_none_or(|line: &str| !line.starts_with("run2 line120")) {
        let left = (DEADLINE * 2).saturating_sub(started.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let mut stderr = String::new();
                let _ = follower.0.stderr.take().unwrap().read_to_string(&mut stderr);
                panic!("timed out; saw {} lines, last {:?}; stderr {stderr}", seen.len(), seen.last());
            }
        }
    }
    let expected: Vec<String> =
        (1..=2).flat_map(|run| (1..=120).map(move |i| format!("run{run} line{i:03} {:049}", 0))).collect();
    assert_eq!(seen, expected);
    let rotated = env.dir.join("default_logs").join("writer");
    let n_rotated =
        std::fs::read_dir(&rotated).unwrap().flatten().filter(|run| run.path().join("stdout.log.1").exists()).count();
    assert!(n_rotated >= 1, "no run was rotated; the test did not test rotation");
}

#[test]
fn streams_beyond_64_get_503_and_alive_is_unaffected() {
    let env = Env::new();
    env.start_daemon();
    let rt = runtime();
    wait_api(&env, &rt);
    // From 64 loopback addresses, so that no limit per peer address is what refuses the next one.
    let mut sockets: Vec<_> = (2..66).map(|n| never_reading_stream(&env, &rt, [127, 0, 0, n])).collect();
    let url = format!("{}/events", env.remote_url());
    let refused = rt.block_on(pm_http::HttpClient::new().get(&url, DEADLINE)).unwrap();
    assert_eq!(refused.status, 503, "{:?}", String::from_utf8_lossy(&refused.body));
    assert_eq!(refused.json().unwrap()["error"], "Too many streams");
    // /alive and ordinary requests are served meanwhile.
    let alive =
        rt.block_on(pm_http::HttpClient::new().get(&format!("http://127.0.0.1:{}/alive", env.alive_port), DEADLINE));
    assert_eq!(alive.unwrap().status, 200);
    assert!(rt.block_on(client(&env).get_all_status()).is_ok());
    // A slot frees up when a stream closes.
    sockets.pop();
    env.wait_for("a stream slot", || {
        let status =
            rt.block_on(async { Some(pm_http::HttpClient::new().get_stream(&url, &[], DEADLINE).await.ok()?.status) });
        (status == Some(200)).then_some(())
    });
}

#[test]
fn a_reader_that_never_reads_does_not_grow_the_monitor() {
    let env = Env::new();
    let daemon_pid = env.start_daemon();
    let rt = runtime();
    wait_api(&env, &rt);
    // Fill the ring first, so what it holds is already counted.
    env.register(&flapper(&env, "warmup", 300));
    env.wait_state("warmup", "failed");
    let rss_before = rss_kib(daemon_pid);
    let _socket = never_reading_stream(&env, &rt, [127, 0, 0, 1]);
    env.register(&flapper(&env, "noisy", 300));
    env.wait_state("noisy", "failed");
    let rss_after = rss_kib(daemon_pid);
    assert!(
        rss_after <= rss_before + 1024,
        "the monitor grew from {rss_before} KiB to {rss_after} KiB with a reader that never reads"
    );
}

/// `GET /events` from the loopback address `source` on a raw socket that is never read after the response head.
fn never_reading_stream(env: &Env, rt: &tokio::runtime::Runtime, source: [u8; 4]) -> std::net::TcpStream {
    let socket = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((std::net::Ipv4Addr::from(source), 0).into()).unwrap();
        socket.connect(([127, 0, 0, 1], env.remote_port).into()).await.unwrap()
    });
    let mut socket = socket.into_std().unwrap();
    socket.set_nonblocking(false).unwrap();
    std::io::Write::write_all(&mut socket, b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut head = [0u8; 12];
    socket.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    socket
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn state_change_hooks_get_the_event_on_stdin_and_in_the_environment() {
    let env = Env::new();
    env.start_daemon();
    let out = env.scratch("hook-out");
    let hook = env.scratch("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >> {o}.json\necho \"$PM_PROCESS_ID $PM_EVENT_FROM $PM_EVENT_TO $PM_EVENT_SIGNAL\" >> {o}.env\n",
            o = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let slow = env.scratch("slow-hook.sh");
    std::fs::write(&slow, "#!/bin/sh\nsleep 600\n").unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let mut config = env.shell("hooked", "sleep 600");
    config["autostart"] = json!(true);
    config["onStateChange"] = json!({"command": hook.to_string_lossy(), "timeoutMs": 5000});
    env.register(&config);
    let pid = env.running_pid("hooked");
    signal(pid.pid, libc::SIGKILL);
    // The hook copies its stdin first, then writes the variables: once these are there, so is the JSON.
    env.wait_for("the hook's record of the crash", || {
        let text = std::fs::read_to_string(format!("{}.env", out.display())).ok()?;
        text.lines().any(|line| line == "hooked running crashed 9").then_some(())
    });
    let json_lines = std::fs::read_to_string(format!("{}.json", out.display())).unwrap();
    let crash: Event = json_lines
        .lines()
        .map(|line| serde_json::from_str::<Event>(line).unwrap())
        .find(|event| matches!(event.kind, EventKind::State { to: ProcessState::Crashed, .. }))
        .expect("the crash event on stdin");
    assert!(matches!(crash.kind, EventKind::State { signal: Some(9), .. }));

    // A hook that hangs is killed after its timeout, and supervision goes on meanwhile.
    let mut config = env.shell("slowhooked", "sleep 600");
    config["autostart"] = json!(true);
    config["onStateChange"] = json!({"command": slow.to_string_lossy(), "timeoutMs": 300});
    env.register(&config);
    env.running_pid("slowhooked");
    env.ok(&["stop", "slowhooked"]);
    env.wait_state("slowhooked", "stopped");
    env.wait_for("the slow hooks to be killed", || (count_with_arg(&slow.to_string_lossy()) == 0).then_some(()));
}

#[test]
fn the_events_command_prints_json_lines_and_people_lines() {
    let env = Env::new();
    env.start_daemon();
    let rt = runtime();
    wait_api(&env, &rt);
    // Without --remote it watches this instance's own API; `--since` an id of no run replays from the start.
    let spawn = |json: bool| {
        let mut args = vec!["events", "--process", "watched", "--since", "0-0"];
        if json {
            args.insert(0, "--json");
        }
        let mut command = env.command(&args);
        command.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = Guarded(command.spawn().unwrap());
        env.remember(child.0.id());
        let lines = line_reader(child.0.stdout.take().unwrap());
        (child, lines)
    };
    let (_json_child, json_lines) = spawn(true);
    let (_text_child, text_lines) = spawn(false);
    let mut config = env.shell("watched", "sleep 600");
    config["autostart"] = json!(true);
    env.register(&config);
    let next = |lines: &std::sync::mpsc::Receiver<String>| lines.recv_timeout(DEADLINE).expect("no line in time");
    let gap: serde_json::Value = serde_json::from_str(&next(&json_lines)).unwrap();
    assert_eq!((gap["type"].as_str(), gap["lastEventId"].as_str()), (Some("gap"), Some("0-0")));
    let registered: serde_json::Value = serde_json::from_str(&next(&json_lines)).unwrap();
    assert_eq!((registered["type"].as_str(), registered["processId"].as_str()), (Some("registered"), Some("watched")));
    let started: serde_json::Value = serde_json::from_str(&next(&json_lines)).unwrap();
    assert_eq!((started["from"].as_str(), started["to"].as_str()), (Some("stopped"), Some("running")), "{started}");
    assert!(next(&text_lines).contains("were missed"));
    assert!(next(&text_lines).ends_with("watched: registered"));
    let line = next(&text_lines);
    assert!(line.contains("watched: stopped -> running (started) pid "), "{line}");
}

#[test]
fn the_events_command_of_this_instance_goes_through_the_socket_with_remote_access_off() {
    let env = Env::new();
    env.start_daemon();
    let rt = runtime();
    wait_api(&env, &rt);
    // Neither a token nor the TCP port is needed: the monitor's own user on its socket is trusted.
    let status = env
        .command(&["config", "set", "remote-access", r#"{"requireToken":true,"startRemoteAccess":false}"#])
        .status()
        .unwrap();
    assert!(status.success());
    env.wait_for("remote access off", || rt.block_on(client(&env).get_monitor_status()).err());
    let mut command = env.command(&["--json", "events", "--process", "quiet", "--since", "0-0"]);
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = Guarded(command.spawn().unwrap());
    env.remember(child.0.id());
    let lines = line_reader(child.0.stdout.take().unwrap());
    let mut config = env.shell("quiet", "sleep 600");
    config["autostart"] = json!(true);
    env.register(&config);
    let next =
        || -> serde_json::Value { serde_json::from_str(&lines.recv_timeout(DEADLINE).expect("no line")).unwrap() };
    assert_eq!(next()["type"], json!("gap"));
    let registered = next();
    assert_eq!((registered["type"].as_str(), registered["processId"].as_str()), (Some("registered"), Some("quiet")));
}
