//! `cargo xtask bench --scale`: the cost of each process at 1,000 and 10,000 (issue #19).
//!
//! Per size N: a monitor with N registered `sleep`s (not started) for the footprint per registered entry and
//! the request times against N; a monitor with N autostart `sleep`s for the start of all N (against the
//! bench's own spawn of N on two threads), the footprint per running process, idle CPU and the stop of all N;
//! and at 1,000 a crash storm (each process exits after 50 ms and is restarted after 1 s, indefinitely).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::bench::home::{sleeper, with_check, Daemon, Home};
use crate::bench::http::{get_once, Conn, HealthServer};
use crate::bench::report::{median, percentile, Bound, Row};
use crate::bench::{sys, Ctx};

/// The `sleep` argument of every scale process (tells them apart from other scenarios' children).
const ARG: &str = "3700";

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn progress(what: &str) {
    eprintln!("bench: {what}");
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// How much the scale run measures.
struct Plan {
    sizes: Vec<usize>,
    /// Sequential API calls per kind (start, stop, register) at each size.
    calls: usize,
    /// Sequential `GET /processes/{id}`.
    gets: usize,
    /// Idle CPU window.
    idle: Duration,
    /// Crash storm: processes and length.
    storm: (usize, Duration),
}

/// Children of `pid` that run `sleep ARG` and are not zombies.
fn live_sleepers(pid: u32) -> Vec<u32> {
    sys::children(pid)
        .into_iter()
        .filter(|child| sys::stat(*child).is_some_and(|stat| stat.comm == "sleep" && stat.state != 'Z'))
        .collect()
}

/// Waits until `daemon` has `n` live `sleep` children; answers them, and when they were seen.
///
/// Polls every [`COUNT_EVERY`], and reads the children's own `stat` files only once there are `n` children: with
/// 10,000 children a full look costs tens of milliseconds of CPU, which polling every few milliseconds would take
/// from the monitor it measures (the bench's own spawn, the baseline, has no such observer). When the last child
/// started comes from the kernel's exec timestamps where the bench has them ([`sys::Observer::last_of`]).
fn wait_count(daemon: &mut Daemon, n: usize, timeout: Duration) -> anyhow::Result<(Vec<u32>, Instant)> {
    let started = Instant::now();
    loop {
        let children = sys::children(daemon.pid).len();
        if children >= n {
            let live = live_sleepers(daemon.pid);
            if live.len() >= n {
                return Ok((live, Instant::now()));
            }
        }
        anyhow::ensure!(!daemon.exited(), "the monitor exited while starting its processes");
        anyhow::ensure!(started.elapsed() < timeout, "only {children} of {n} processes running after {timeout:?}");
        std::thread::sleep(COUNT_EVERY);
    }
}

/// How often [`wait_count`] looks (the start figures' resolution without exec timestamps).
const COUNT_EVERY: Duration = Duration::from_millis(100);

/// The bench's own spawn of `n` `sleep`s on two threads (what bounds the monitor's start of all of them), in ms.
fn spawn_two_threads(n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let halves: Vec<std::thread::JoinHandle<anyhow::Result<Vec<Child>>>> = (0..2)
        .map(|half| {
            std::thread::spawn(move || {
                let count = n / 2 + if half == 0 { n % 2 } else { 0 };
                let mut children = Vec::with_capacity(count);
                for _ in 0..count {
                    let child = Command::new("sleep")
                        .arg(ARG)
                        .env(sys::TAG_VAR, sys::tag())
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .process_group(0)
                        .spawn();
                    match child {
                        Ok(child) => children.push(child),
                        Err(err) => {
                            kill_all(children);
                            return Err(err).context("cannot spawn sleep");
                        }
                    }
                }
                Ok(children)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = None;
    for half in halves {
        match half.join().map_err(|_| anyhow::format_err!("a spawner thread panicked"))? {
            Ok(children) => all.extend(children),
            Err(err) => failed = Some(err),
        }
    }
    let took = ms(started.elapsed());
    kill_all(all);
    match failed {
        Some(err) => Err(err),
        None => Ok(took),
    }
}

fn kill_all(mut children: Vec<Child>) {
    for child in &mut children {
        let _ = child.kill();
    }
    for child in &mut children {
        let _ = child.wait();
    }
}

/// Runs the CLI against `home`; answers how long it took.
fn cli(ctx: &Ctx<'_>, home: &Home, args: &[&str]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = Command::new(&ctx.bin)
        .arg("--directory")
        .arg(&home.dir)
        .args(args)
        .env(sys::TAG_VAR, sys::tag())
        .env_remove("PROCESS_MONITOR_DIR")
        .stdin(Stdio::null())
        .output()?;
    let took = ms(started.elapsed());
    anyhow::ensure!(
        out.status.success(),
        "`process_monitor {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(took)
}

fn timed_post(conn: &mut Conn, path: &str, body: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let res = conn.request("POST", path, Some(body))?;
    let took = ms(started.elapsed());
    anyhow::ensure!(
        res.status == 200 || res.status == 201,
        "POST {path}: {} {}",
        res.status,
        String::from_utf8_lossy(&res.body)
    );
    Ok(took)
}

/// Request times against a monitor with `n` registered, stopped entries; also its RSS (KiB).
struct Calls {
    rss_kib: f64,
    start: Vec<f64>,
    stop: Vec<f64>,
    register: Vec<f64>,
    get_one: Vec<f64>,
    list: Vec<f64>,
    status: Vec<f64>,
    status_one: Vec<f64>,
    /// A local client's `register` (and its `deregister`) once the monitor has stopped.
    local_register: Vec<f64>,
}

fn calls(ctx: &Ctx<'_>, plan: &Plan, n: usize) -> anyhow::Result<Calls> {
    progress(&format!("scale: {n} registered processes, request times (load {})", loadavg()));
    let home = Home::new(ctx.root, &format!("scale-registered-{n}"))?;
    home.write_registry((0..n).map(|idx| sleeper(&format!("p{idx:05}"), ARG, false)).collect())?;
    let mut daemon = Daemon::launch(&ctx.bin, &home)?;
    daemon.wait_ready(Duration::from_secs(120))?;
    std::thread::sleep(Duration::from_secs(2));
    let rss_kib = sys::memory(daemon.pid).context("cannot read the monitor's smaps_rollup")?.rss_kib as f64;
    let mut conn = Conn::connect(daemon.remote_port)?;
    let k = plan.calls.min(n);
    let ids: Vec<String> = (0..k).map(|idx| format!("p{:05}", idx * (n / k))).collect();
    let mut out = Calls {
        rss_kib,
        start: Vec::new(),
        stop: Vec::new(),
        register: Vec::new(),
        get_one: Vec::new(),
        list: Vec::new(),
        status: Vec::new(),
        status_one: Vec::new(),
        local_register: Vec::new(),
    };
    for id in &ids {
        out.start.push(timed_post(&mut conn, &format!("/processes/{id}/start"), "")?);
    }
    for id in &ids {
        out.stop.push(timed_post(&mut conn, &format!("/processes/{id}/stop"), "")?);
    }
    for idx in 0..k {
        let entry = sleeper(&format!("r{idx:05}"), ARG, false);
        out.register.push(timed_post(&mut conn, "/processes", &entry.to_string())?);
    }
    for idx in 0..plan.gets {
        let id = &ids[idx % ids.len()];
        let started = Instant::now();
        let res = conn.get(&format!("/processes/{id}"))?;
        out.get_one.push(ms(started.elapsed()));
        anyhow::ensure!(res.status == 200, "GET /processes/{id}: {}", res.status);
    }
    for _ in 0..5 {
        let started = Instant::now();
        let res = conn.get("/processes")?;
        out.list.push(ms(started.elapsed()));
        anyhow::ensure!(res.status == 200, "GET /processes: {}", res.status);
    }
    drop(conn);
    for _ in 0..5 {
        out.status.push(cli(ctx, &home, &["--status"])?);
        out.status_one.push(cli(ctx, &home, &["status", &ids[0]])?);
    }
    daemon.stop(Duration::from_secs(60));
    for idx in 0..5 {
        let id = format!("l{idx:05}");
        out.local_register.push(cli(
            ctx,
            &home,
            &["register", "--id", &id, "--command", "sleep", "--no-autostart", "--", ARG],
        )?);
        out.local_register.push(cli(ctx, &home, &["deregister", &id])?);
    }
    Ok(out)
}

/// Processes of the sequential-starts run (the comparison: supervisord took 4,087 ms for as many).
const SEQUENTIAL: usize = 500;
/// supervisord's time for [`SEQUENTIAL`] starts, one call each, measured on this machine (issue 19).
const SUPERVISORD_SEQUENTIAL_MS: f64 = 4087.0;

/// The wall time (ms) of [`SEQUENTIAL`] `POST /processes/{id}/start`, one after the other on one connection, each
/// answered (and so stored) before the next is sent, against a monitor with as many registered and stopped.
fn sequential_starts(ctx: &Ctx<'_>) -> anyhow::Result<f64> {
    let n = SEQUENTIAL;
    progress(&format!("scale: {n} sequential API starts (load {})", loadavg()));
    let home = Home::new(ctx.root, &format!("scale-sequential-{n}"))?;
    home.write_registry((0..n).map(|idx| sleeper(&format!("s{idx:05}"), ARG, false)).collect())?;
    let mut daemon = Daemon::launch(&ctx.bin, &home)?;
    daemon.wait_ready(Duration::from_secs(120))?;
    let mut conn = Conn::connect(daemon.remote_port)?;
    let started = Instant::now();
    for idx in 0..n {
        timed_post(&mut conn, &format!("/processes/s{idx:05}/start"), "")?;
    }
    let took = ms(started.elapsed());
    drop(conn);
    daemon.stop(Duration::from_secs(60));
    Ok(took)
}

fn sequential_row(took_ms: f64, load: &str) -> Row {
    Row::median(
        &format!("scale-sequential-starts-{SEQUENTIAL}"),
        &format!("{SEQUENTIAL} sequential `POST /processes/{{id}}/start`, each answered before the next"),
        "ms",
        vec![took_ms],
    )
    .baseline("supervisord, the issue's figure", SUPERVISORD_SEQUENTIAL_MS)
    .target(Bound::AtMost(1500.0))
    .note(format!("{:.2} ms per start; load average {load}", took_ms / SEQUENTIAL as f64))
}

/// Start, footprint, idle CPU and stop of `n` autostart processes.
struct Fleet {
    baseline_ms: f64,
    start_ms: f64,
    /// The monitor's CPU from its launch until all were seen running (its threads' run time).
    start_cpu_ms: f64,
    rss_kib: f64,
    idle_cpu_ms_per_30s: f64,
    /// How the idle CPU was read.
    idle_how: &'static str,
    stop_ms: f64,
}

fn fleet(ctx: &Ctx<'_>, plan: &Plan, n: usize) -> anyhow::Result<Fleet> {
    progress(&format!("scale: bench spawns {n} sleeps on two threads (load {})", loadavg()));
    let baseline_ms = spawn_two_threads(n)?;
    progress(&format!("scale: {n} autostart processes (load {})", loadavg()));
    let home = Home::new(ctx.root, &format!("scale-running-{n}"))?;
    home.write_registry((0..n).map(|idx| sleeper(&format!("p{idx:05}"), ARG, true)).collect())?;
    let mut daemon = Daemon::launch(&ctx.bin, &home)?;
    let (pids, seen) = wait_count(&mut daemon, n, Duration::from_secs(300))?;
    // What the start cost the monitor: on a loaded machine a steadier figure than its wall time.
    let start_cpu_ms = sys::cpu_ms_so_far(daemon.pid).unwrap_or(f64::NAN);
    let start_ms = ctx.observer.last_of(daemon.launched, &pids, seen);
    daemon.wait_ready(Duration::from_secs(60))?;
    // Let the start-up's registry writes and heap trim settle.
    std::thread::sleep(Duration::from_secs(3));
    let rss_kib = sys::memory(daemon.pid).context("cannot read the monitor's smaps_rollup")?.rss_kib as f64;
    let (idle_ms, idle_how) = sys::cpu_ms_over(daemon.pid, plan.idle).context("cannot read the monitor's CPU")?;
    let idle_cpu_ms_per_30s = idle_ms * 30.0 / plan.idle.as_secs_f64();
    let stopped = sys::Mark::now();
    sys::send(daemon.pid, sys::SIGTERM);
    let stop_ms = ctx
        .observer
        .wait_exits(stopped, &pids, Duration::from_secs(120))
        .map_err(|left| anyhow::format_err!("{left} processes still run 120 s after the SIGTERM"))?;
    daemon.wait_exit(Duration::from_secs(60));
    Ok(Fleet { baseline_ms, start_ms, start_cpu_ms, rss_kib, idle_cpu_ms_per_30s, idle_how, stop_ms })
}

/// The monitor's CPU with [`CHECKED`] processes, each with an HTTP aliveness check every 3 s.
struct Checks {
    /// Percent of one core.
    cpu_percent: f64,
    /// Checks answered a second by the bench's server during the window.
    checks_per_s: f64,
    /// How the CPU was read.
    how: &'static str,
}

/// Processes of the aliveness-check run.
const CHECKED: usize = 1000;

/// A monitor with [`CHECKED`] autostart `sleep`s, each with an HTTP aliveness check every 3 s against a server the
/// bench runs on 127.0.0.1 (keep-alive, answers `{"healthy":true}`): its CPU once every check runs.
fn checks(ctx: &Ctx<'_>, plan: &Plan) -> anyhow::Result<Checks> {
    let n = CHECKED;
    progress(&format!("scale: {n} processes with HTTP aliveness checks every 3 s (load {})", loadavg()));
    let health = HealthServer::start()?;
    let url = format!("http://127.0.0.1:{}/health", health.port);
    let home = Home::new(ctx.root, &format!("scale-checks-{n}"))?;
    home.write_registry((0..n).map(|idx| with_check(sleeper(&format!("p{idx:05}"), ARG, true), &url, 3000)).collect())?;
    let mut daemon = Daemon::launch(&ctx.bin, &home)?;
    wait_count(&mut daemon, n, Duration::from_secs(300))?;
    daemon.wait_ready(Duration::from_secs(60))?;
    // Every process's first check is due 3 s after its start; then let the start-up's writes settle.
    std::thread::sleep(Duration::from_secs(8));
    let hits_before = health.hits.load(Ordering::Relaxed);
    let started = Instant::now();
    let (cpu_ms, how) = sys::cpu_ms_over(daemon.pid, plan.idle).context("cannot read the monitor's CPU")?;
    let took = started.elapsed().as_secs_f64();
    let hits = health.hits.load(Ordering::Relaxed) - hits_before;
    daemon.stop(Duration::from_secs(60));
    Ok(Checks { cpu_percent: cpu_ms / (took * 1000.0) * 100.0, checks_per_s: hits as f64 / took, how })
}

fn checks_rows(checks: &Checks, plan: &Plan, load: &str) -> Vec<Row> {
    vec![Row::median(
        &format!("scale-checks-cpu-{CHECKED}"),
        &format!("monitor CPU with {CHECKED} HTTP aliveness checks every 3 s"),
        "% of a core",
        vec![checks.cpu_percent],
    )
    .target(Bound::AtMost(5.0))
    .note(format!(
        "{:.0} checks a second answered; {:?} window, {}; load average {load}",
        checks.checks_per_s, plan.idle, checks.how
    ))]
}

/// What the crash storm measured.
struct Storm {
    cpu_percent: f64,
    alive_p99: f64,
    alive_p50: f64,
    alive_failed: usize,
    alive_count: usize,
    writes_per_s: f64,
    registry_bytes_per_s: f64,
    written_bytes_per_s: f64,
    exits_per_s: f64,
}

/// `/proc/<pid>/io` `wchar`: bytes this process passed to write calls.
fn wchar(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines().find_map(|line| line.strip_prefix("wchar:")).and_then(|value| value.trim().parse().ok())
}

fn storm(ctx: &Ctx<'_>, plan: &Plan) -> anyhow::Result<Storm> {
    let (n, length) = plan.storm;
    progress(&format!(
        "scale: crash storm, {n} processes crashing about once a second for {length:?} (load {})",
        loadavg()
    ));
    let home = Home::new(ctx.root, &format!("scale-storm-{n}"))?;
    let entries = (0..n)
        .map(|idx| {
            let mut entry = sleeper(&format!("c{idx:05}"), "0.05", true);
            entry["restartPolicy"] = json!({
                "maxAttempts": 3,
                "backoffIntervalsMs": [1000],
                "resetAfterMs": 3_600_000,
                "retryIndefinitely": true,
                "indefiniteIntervalMs": 1000,
            });
            entry
        })
        .collect();
    home.write_registry(entries)?;
    let mut daemon = Daemon::launch(&ctx.bin, &home)?;
    daemon.wait_ready(Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(3));
    let file = home.registry_file();
    let stamp = |path: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|meta| (meta.ino(), meta.len()))
    };
    let cpu_before = sys::cpu(daemon.pid).context("cannot read the monitor's CPU")?;
    let wchar_before = wchar(daemon.pid).unwrap_or(0);
    let exits_before = storm_exits(daemon.remote_port);
    let started = Instant::now();
    let (mut alive, mut writes, mut registry_bytes, mut alive_failed) = (Vec::new(), 0u64, 0u64, 0usize);
    let mut last = stamp(&file);
    let mut next_alive = Instant::now();
    while started.elapsed() < length {
        let now = stamp(&file);
        if now.is_some() && now != last {
            writes += 1;
            registry_bytes += now.map_or(0, |(_, len)| len);
            last = now;
        }
        if Instant::now() >= next_alive {
            let asked = Instant::now();
            // An answer that does not come within the client's 2 s counts as a failure, with the time waited.
            if get_once(daemon.alive_port, "/alive").is_none_or(|res| res.status != 200) {
                alive_failed += 1;
            }
            alive.push(ms(asked.elapsed()));
            next_alive = asked + Duration::from_millis(50);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = started.elapsed().as_secs_f64();
    let cpu_after = sys::cpu(daemon.pid).context("cannot read the monitor's CPU")?;
    let wchar_after = wchar(daemon.pid).unwrap_or(0);
    let exits = storm_exits(daemon.remote_port).saturating_sub(exits_before);
    daemon.stop(Duration::from_secs(60));
    Ok(Storm {
        cpu_percent: sys::cpu_ms_between(&cpu_before, &cpu_after).0 / (took * 1000.0) * 100.0,
        alive_p99: percentile(&alive, 99.0),
        alive_p50: median(&alive),
        alive_failed,
        alive_count: alive.len(),
        writes_per_s: writes as f64 / took,
        registry_bytes_per_s: registry_bytes as f64 / took,
        written_bytes_per_s: wchar_after.saturating_sub(wchar_before) as f64 / took,
        exits_per_s: exits as f64 / took,
    })
}

/// Restarts of every process so far, summed from `GET /processes` (`restartsTotal`).
fn storm_exits(port: u16) -> u64 {
    // The connection's own 10 s read timeout: a monitor busy with a storm may take seconds to answer.
    let Some(res) = Conn::connect(port).ok().and_then(|mut conn| conn.get("/processes").ok()) else { return 0 };
    let Ok(list) = serde_json::from_slice::<serde_json::Value>(&res.body) else { return 0 };
    list["processes"]
        .as_array()
        .map(|items| items.iter().filter_map(|item| item["restartsTotal"].as_u64()).sum())
        .unwrap_or(0)
}

pub(crate) fn run(ctx: &Ctx<'_>, quick: bool, only: Option<Only>) -> anyhow::Result<Vec<Row>> {
    let limit = sys::raise_nofile_limit();
    progress(&format!("scale: open-files limit {limit} (load {})", loadavg()));
    let plan = Plan::new(quick);
    if let Some(only) = only {
        return run_only(ctx, &plan, only);
    }
    let small = calls(ctx, &plan, 100)?;
    let mut rows = small_call_rows(&small);
    let load = loadavg();
    rows.push(sequential_row(sequential_starts(ctx)?, &load));
    for &n in &plan.sizes {
        let load = loadavg();
        let calls = calls(ctx, &plan, n)?;
        rows.extend(call_rows(n, &calls, &small, &format!("load average {load}")));
        rows.push(local_register_row(n, &calls));
        let load = loadavg();
        let fleet = fleet(ctx, &plan, n)?;
        rows.extend(fleet_rows(n, &fleet, &plan, &format!("load average {load}")));
    }
    let load = loadavg();
    rows.extend(checks_rows(&checks(ctx, &plan)?, &plan, &load));
    let load = loadavg();
    let storm = match storm(ctx, &plan) {
        Ok(storm) => storm,
        Err(err) => {
            eprintln!("bench: the crash storm failed: {err:#}");
            return Ok(rows);
        }
    };
    rows.extend(storm_rows(&storm, &plan, &load));
    Ok(rows)
}

impl Plan {
    /// The sizes and lengths of a full run, or of `--quick`.
    fn new(quick: bool) -> Plan {
        let (calls, gets, idle_secs, storm_secs) = if quick { (50, 500, 10, 20) } else { (200, 2000, 30, 60) };
        Plan {
            sizes: vec![1000, 10_000],
            calls,
            gets,
            idle: Duration::from_secs(idle_secs),
            storm: (1000, Duration::from_secs(storm_secs)),
        }
    }
}

/// The API calls with 100 entries, the baseline of the larger sizes.
fn small_call_rows(small: &Calls) -> Vec<Row> {
    let n = 100;
    vec![
        calls_row(n, "scale-start-call", "`POST /processes/{id}/start` p50", &small.start).target(Bound::AtMost(2.0)),
        calls_row(n, "scale-stop-call", "`POST /processes/{id}/stop` p50", &small.stop).target(Bound::AtMost(2.0)),
        calls_row(n, "scale-register-call", "`POST /processes` p50", &small.register).target(Bound::AtMost(2.0)),
        calls_row(n, "scale-get-one", "`GET /processes/{id}` p50", &small.get_one),
    ]
}

/// The API and CLI calls with `n` registered entries, none started (`small`: the same with 100).
fn call_rows(n: usize, calls: &Calls, small: &Calls, note: &str) -> Vec<Row> {
    vec![
        rss_row(
            n,
            "scale-rss-registered",
            &format!("monitor RSS with {n} registered, not started"),
            calls.rss_kib,
            "entry",
        )
        .note(format!("{}; {note}", above_idle_budget(n, calls.rss_kib, "entry"))),
        calls_row(n, "scale-start-call", "`POST /processes/{id}/start` p50", &calls.start)
            .target(Bound::AtMost(2.0))
            .note(format!("p99 {:.1} ms; {note}", percentile(&calls.start, 99.0))),
        calls_row(n, "scale-stop-call", "`POST /processes/{id}/stop` p50", &calls.stop).target(Bound::AtMost(2.0)),
        calls_row(n, "scale-register-call", "`POST /processes` p50", &calls.register).target(Bound::AtMost(2.0)),
        calls_row(n, "scale-get-one", "`GET /processes/{id}` p50", &calls.get_one)
            .baseline("with 100 entries", median(&small.get_one))
            .ratio_target(Bound::AtMost(1.5)),
        calls_row(n, "scale-list", "`GET /processes`", &calls.list).target(Bound::AtMost(30.0)),
        calls_row(n, "scale-cli-status", "`process_monitor --status`", &calls.status).target(Bound::AtMost(10.0)),
        calls_row(n, "scale-cli-status-one", "`process_monitor status ID`", &calls.status_one)
            .target(Bound::AtMost(10.0)),
    ]
}

/// A local client's `register` and `deregister` with `n` entries and no monitor.
fn local_register_row(n: usize, calls: &Calls) -> Row {
    calls_row(n, "scale-local-register", "local `register` (no monitor) time", &calls.local_register)
        .target(Bound::AtMost(50.0))
}

/// The row `{id}-{n}` of the call timings `samples` (ms), described as "`what` with `n` entries".
fn calls_row(n: usize, id: &str, what: &str, samples: &[f64]) -> Row {
    Row::median(&format!("{id}-{n}"), &format!("{what} with {n} entries"), "ms", samples.to_vec())
}

/// The RSS row `{id}-{n}` (`rss_kib` with `n` entries) against its budget, 5 MiB idle and 3 KiB for each entry;
/// its note says how much each `entry` (an entry, a process) takes above the idle budget.
fn rss_row(n: usize, id: &str, description: &str, rss_kib: f64, entry: &str) -> Row {
    Row::median(&format!("{id}-{n}"), description, "MiB", vec![rss_kib / 1024.0])
        .target(Bound::AtMost(5.0 + 3.0 * n as f64 / 1024.0))
        .note(above_idle_budget(n, rss_kib, entry))
}

/// "x KiB per `entry` above the 5 MiB idle budget", for `rss_kib` with `n` entries.
fn above_idle_budget(n: usize, rss_kib: f64, entry: &str) -> String {
    format!("{:.1} KiB per {entry} above the 5 MiB idle budget", (rss_kib - 5120.0) / n as f64)
}

/// Start, footprint, idle CPU and stop of `n` running processes.
fn fleet_rows(n: usize, fleet: &Fleet, plan: &Plan, note: &str) -> Vec<Row> {
    vec![
        Row::median(
            &format!("scale-start-all-{n}"),
            &format!("{n} autostart processes running (launch → all alive)"),
            "ms",
            vec![fleet.start_ms],
        )
        .baseline(&format!("bench spawns {n} on two threads"), fleet.baseline_ms)
        .ratio_target(Bound::AtMost(1.5))
        .note(format!(
            "{:.0} µs per process; monitor CPU {:.0} ms ({:.0} µs per process); {note}",
            fleet.start_ms * 1000.0 / n as f64,
            fleet.start_cpu_ms,
            fleet.start_cpu_ms * 1000.0 / n as f64
        )),
        rss_row(n, "scale-rss-running", &format!("monitor RSS with {n} running"), fleet.rss_kib, "process"),
        Row::median(
            &format!("scale-idle-cpu-{n}"),
            &format!("monitor CPU with {n} children, no checks"),
            "ms/30s",
            vec![fleet.idle_cpu_ms_per_30s],
        )
        .target(Bound::AtMost(20.0))
        .note(format!("{:?} window scaled to 30 s, {}", plan.idle, fleet.idle_how)),
        Row::median(
            &format!("scale-stop-all-{n}"),
            &format!("stop of all {n} (SIGTERM to the monitor → last child gone)"),
            "ms",
            vec![fleet.stop_ms],
        )
        .target(Bound::AtMost(2000.0)),
    ]
}

/// The crash storm's figures (`load`: the load average before it).
fn storm_rows(storm: &Storm, plan: &Plan, load: &str) -> Vec<Row> {
    let (n, length) = plan.storm;
    let note = format!("{n} processes, {length:?}, load average {load}");
    vec![
        Row::median("storm-cpu", "crash storm: monitor CPU", "% of a core", vec![storm.cpu_percent])
            .target(Bound::AtMost(25.0))
            .note(format!(
                "{:.0} restarts a second, {:.2} ms of monitor CPU per restart; {note}",
                storm.exits_per_s,
                storm.cpu_percent * 10.0 / storm.exits_per_s.max(1.0)
            )),
        Row::median("storm-alive-p99", "crash storm: `GET /alive` p99 (every 50 ms)", "ms", vec![storm.alive_p99])
            .target(Bound::AtMost(10.0))
            .note(format!(
                "p50 {:.2} ms; {} of {} unanswered within 2 s",
                storm.alive_p50, storm.alive_failed, storm.alive_count
            )),
        Row::median("storm-registry-writes", "crash storm: registry rewrites", "per s", vec![storm.writes_per_s])
            .target(Bound::AtMost(5.0)),
        Row::median(
            "storm-registry-bytes",
            "crash storm: registry bytes written",
            "KiB/s",
            vec![storm.registry_bytes_per_s / 1024.0],
        )
        .note(format!(
            "{:.0} KiB/s written by the monitor in all (registry and its own log)",
            storm.written_bytes_per_s / 1024.0
        )),
    ]
}

/// One part of the scale run on its own (`--only storm|rss|calls|fleet|checks`), to compare two builds back to back without the
/// whole run (which starts 10,000 processes twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Only {
    /// The crash storm.
    Storm,
    /// The monitor's RSS with [`RSS_ONLY_N`] processes registered and not started, then with as many running.
    Rss,
    /// The request times with 100 and 10,000 registered entries, a local client's `register` (no monitor)
    /// with 10,000, and 500 sequential API starts.
    Calls,
    /// The start of 1,000, then of 10,000 autostart processes (each against the bench's own spawn of as many),
    /// their idle CPU and their stop.
    Fleet,
    /// The monitor's CPU with 1,000 HTTP aliveness checks every 3 s.
    Checks,
}

/// The size of `--only rss`, unless `PM_BENCH_RSS_N` in the bench's environment names another (10,000, say).
fn rss_only_n() -> usize {
    std::env::var("PM_BENCH_RSS_N").ok().and_then(|n| n.parse().ok()).unwrap_or(1000)
}

impl Only {
    /// Its name on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Only::Storm => "storm",
            Only::Rss => "rss",
            Only::Calls => "calls",
            Only::Fleet => "fleet",
            Only::Checks => "checks",
        }
    }
}

impl std::str::FromStr for Only {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Only> {
        match text {
            "storm" => Ok(Only::Storm),
            "rss" => Ok(Only::Rss),
            "calls" => Ok(Only::Calls),
            "fleet" => Ok(Only::Fleet),
            "checks" => Ok(Only::Checks),
            other => anyhow::bail!("--only {other:?}: expected storm, rss, calls, fleet or checks"),
        }
    }
}

fn run_only(ctx: &Ctx<'_>, plan: &Plan, only: Only) -> anyhow::Result<Vec<Row>> {
    let load = loadavg();
    match only {
        Only::Storm => Ok(storm_rows(&storm(ctx, plan)?, plan, &load)),
        Only::Checks => Ok(checks_rows(&checks(ctx, plan)?, plan, &load)),
        Only::Fleet => {
            // Both sizes of the start target (each against the bench's own spawn of as many).
            let mut rows = Vec::new();
            for n in [1_000, 10_000] {
                let load = loadavg();
                rows.extend(fleet_rows(n, &fleet(ctx, plan, n)?, plan, &format!("load average {load}")));
            }
            Ok(rows)
        }
        Only::Calls => {
            let small = calls(ctx, plan, 100)?;
            let mut rows = small_call_rows(&small);
            let n = 10_000;
            let large = calls(ctx, plan, n)?;
            rows.extend(call_rows(n, &large, &small, &format!("load average {load}")));
            rows.push(local_register_row(n, &large));
            let load = loadavg();
            rows.push(sequential_row(sequential_starts(ctx)?, &load));
            Ok(rows)
        }
        Only::Rss => {
            let n = rss_only_n();
            let registered = idle_rss_kib(ctx, n, false)?;
            let running = idle_rss_kib(ctx, n, true)?;
            let note = format!("load average {load}");
            Ok(vec![
                rss_row(
                    n,
                    "scale-rss-registered",
                    &format!("monitor RSS with {n} registered, not started"),
                    registered,
                    "entry",
                )
                .note(format!("{}; {note}", above_idle_budget(n, registered, "entry"))),
                rss_row(n, "scale-rss-running", &format!("monitor RSS with {n} running"), running, "process")
                    .note(format!("{}; {note}", above_idle_budget(n, running, "process"))),
            ])
        }
    }
}

/// The RSS (KiB) of a monitor with `n` `sleep`s, registered only or (`autostart`) all running, once it settled.
fn idle_rss_kib(ctx: &Ctx<'_>, n: usize, autostart: bool) -> anyhow::Result<f64> {
    let what = if autostart { "running" } else { "registered" };
    progress(&format!("scale: RSS with {n} {what} processes (load {})", loadavg()));
    let home = Home::new(ctx.root, &format!("scale-rss-{what}-{n}"))?;
    home.write_registry((0..n).map(|idx| sleeper(&format!("p{idx:05}"), ARG, autostart)).collect())?;
    let mut daemon = Daemon::launch(&ctx.bin, &home)?;
    if autostart {
        wait_count(&mut daemon, n, Duration::from_secs(300))?;
    }
    daemon.wait_ready(Duration::from_secs(120))?;
    // Let the start-up's registry writes and heap trim settle, as the full run does.
    std::thread::sleep(Duration::from_secs(3));
    let rss_kib = sys::memory(daemon.pid).context("cannot read the monitor's smaps_rollup")?.rss_kib as f64;
    daemon.stop(Duration::from_secs(60));
    Ok(rss_kib)
}
