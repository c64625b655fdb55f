//! The measurements. Each function sets up its homes and monitors, measures, stops everything it started, and
//! answers report rows; every figure is a median over repeats.

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::bench::home::{sleeper, with_check, Daemon, Home};
use crate::bench::http::{Conn, HealthServer};
use crate::bench::report::{median, percentile, Bound, Row};
use crate::bench::{sys, Ctx};

/// Polling period while waiting for a child to appear (single-process timings).
const POLL: Duration = Duration::from_micros(200);
/// Polling period of the bulk timings (each poll reads up to N `/proc` entries).
const POLL_BULK: Duration = Duration::from_micros(500);

pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A pause of up to `max`, pseudo-random, so that timings do not lock onto the monitor's 100 ms reconcile tick.
pub(crate) fn jitter(max: Duration) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |at| at.subsec_nanos());
    std::thread::sleep(max.mul_f64(f64::from(nanos % 1000) / 1000.0));
}

/// Waits for a live child of `parent` that runs `sleep <arg>` (exec done, not a zombie) and is not `exclude`;
/// answers its PID and when it was seen.
pub(crate) fn wait_sleeper(
    parent: u32,
    arg: &str,
    exclude: Option<u32>,
    timeout: Duration,
) -> anyhow::Result<(u32, Instant)> {
    let started = Instant::now();
    loop {
        for pid in sys::children(parent) {
            if Some(pid) == exclude {
                continue;
            }
            let Some(stat) = sys::stat(pid) else { continue };
            if stat.comm == "sleep" && stat.state != 'Z' && sys::cmdline(pid).iter().any(|it| it == arg) {
                return Ok((pid, Instant::now()));
            }
        }
        anyhow::ensure!(started.elapsed() < timeout, "no `sleep {arg}` child of {parent} within {timeout:?}");
        std::thread::sleep(POLL);
    }
}

/// Waits until no live child of `parent` runs `sleep <arg>`.
fn wait_no_sleeper(parent: u32, arg: &str, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let any = sys::children(parent).into_iter().any(|pid| {
            sys::stat(pid).is_some_and(|stat| stat.comm == "sleep" && stat.state != 'Z')
                && sys::cmdline(pid).iter().any(|it| it == arg)
        });
        if !any {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < timeout, "`sleep {arg}` still runs after {timeout:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until `daemon` has `n` live `sleep` children; answers their PIDs.
fn wait_sleepers(daemon: &mut Daemon, n: usize, timeout: Duration) -> anyhow::Result<HashSet<u32>> {
    let started = Instant::now();
    let mut seen = HashSet::new();
    loop {
        for pid in sys::children(daemon.pid) {
            if !seen.contains(&pid) && sys::stat(pid).is_some_and(|stat| stat.comm == "sleep" && stat.state != 'Z') {
                seen.insert(pid);
            }
        }
        if seen.len() >= n {
            return Ok(seen);
        }
        anyhow::ensure!(!daemon.exited(), "the monitor exited while starting its processes");
        anyhow::ensure!(started.elapsed() < timeout, "only {} of {n} processes running after {timeout:?}", seen.len());
        std::thread::sleep(POLL_BULK);
    }
}

/// `sleep <arg>` started by the bench itself, in its own process group like the monitor's children.
fn spawn_sleep(arg: &str) -> anyhow::Result<Child> {
    Command::new("sleep")
        .arg(arg)
        .env(sys::TAG_VAR, sys::tag())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot spawn sleep")
}

fn reap(mut children: Vec<Child>) {
    for child in &mut children {
        let _ = child.kill();
    }
    for child in &mut children {
        let _ = child.wait();
    }
}

/// Bare spawns by the bench, timed like the monitor's children: a helper thread marks the time and spawns on
/// request while this thread polls `/proc`. Answers (ms until the child existed, ms `spawn()` took) per spawn.
fn bare_spawns(observer: &sys::Observer, repeats: usize) -> anyhow::Result<Vec<(f64, f64)>> {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (done, spawned) = std::sync::mpsc::channel::<anyhow::Result<(Child, sys::Mark, Duration)>>();
    let spawner = std::thread::spawn(move || {
        while wait.recv().is_ok() {
            let mark = sys::Mark::now();
            let res = spawn_sleep("3604").map(|child| (child, mark, mark.at.elapsed()));
            if done.send(res).is_err() {
                return;
            }
        }
    });
    let mut res = Vec::new();
    for _ in 0..repeats {
        std::thread::sleep(Duration::from_millis(5));
        let polled_from = sys::Mark::now();
        go.send(()).map_err(|_| anyhow::format_err!("the spawner thread is gone"))?;
        let seen = wait_sleeper(std::process::id(), "3604", None, Duration::from_secs(5));
        let (child, mark, took) = spawned.recv().map_err(|_| anyhow::format_err!("the spawner thread is gone"))??;
        let pid = child.id();
        let (_, seen) = seen?;
        // Without exec timestamps, the time counts from the request, as the poll that saw the child did.
        let mark = if observer.source().starts_with("kernel") { mark } else { polled_from };
        res.push((observer.since(mark, pid, seen), ms(took)));
        reap(vec![child]);
    }
    drop(go);
    let _ = spawner.join();
    Ok(res)
}

/// The least a supervisor can do on a crash, done by the bench: SIGKILL its own child, reap it with a blocking
/// `waitpid`, spawn it again. Answers ms from the kill until the new child existed, per restart.
fn minimal_restarts(observer: &sys::Observer, repeats: usize) -> anyhow::Result<Vec<f64>> {
    let mut child = spawn_sleep("3605")?;
    let mut res = Vec::new();
    for _ in 0..repeats {
        std::thread::sleep(Duration::from_millis(5));
        let mark = sys::Mark::now();
        child.kill()?;
        child.wait()?;
        child = spawn_sleep("3605")?;
        res.push(observer.since(mark, child.id(), Instant::now()));
    }
    reap(vec![child]);
    Ok(res)
}

/// `n` spawns one after the other, in ms.
fn serial_spawn(n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        match spawn_sleep("3600") {
            Ok(child) => children.push(child),
            Err(err) => {
                reap(children);
                return Err(err);
            }
        }
    }
    let took = ms(started.elapsed());
    reap(children);
    Ok(took)
}

/// Runs the CLI to completion; answers how long it took.
fn cli(bin: &Path, dir: Option<&Path>, args: &[&str]) -> anyhow::Result<Duration> {
    let mut cmd = Command::new(bin);
    if let Some(dir) = dir {
        cmd.arg("--directory").arg(dir);
    }
    cmd.args(args).env(sys::TAG_VAR, sys::tag()).env_remove("PROCESS_MONITOR_DIR").stdin(Stdio::null());
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("cannot run {}", bin.display()))?;
    let took = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "`process_monitor {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(took)
}

fn post(conn: &mut Conn, path: &str) -> anyhow::Result<()> {
    let res = conn.request("POST", path, Some(""))?;
    anyhow::ensure!(res.status == 200, "POST {path}: {} {}", res.status, String::from_utf8_lossy(&res.body));
    Ok(())
}

pub(crate) fn progress(what: &str) {
    eprintln!("bench: {what}");
}

/// 1 and 2: crash → restart against a bare spawn, and start latency over the remote API and the local client.
pub(crate) fn restart_and_start(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let repeats = ctx.config.repeats;
    progress(&format!("crash → restart and start latencies ({repeats} repeats each)"));
    let home = Home::new(ctx.root, "small")?;
    home.write_registry(vec![
        sleeper("crash", "3601", true),
        sleeper("api", "3602", false),
        sleeper("local", "3603", false),
    ])?;
    let mut daemon = Daemon::launch(&ctx.bin, &home)?;
    daemon.wait_ready(Duration::from_secs(15))?;
    let (pid, _) = wait_sleeper(daemon.pid, "3601", None, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(300));

    let observer = &ctx.observer;
    let spawns = bare_spawns(observer, repeats)?;
    let floor = minimal_restarts(observer, repeats)?;
    let crash = crash_restarts(observer, daemon.pid, pid, repeats)?;
    let mut conn = Conn::connect(daemon.remote_port)?;
    let (api, api_reply) = api_starts(observer, &mut conn, daemon.pid, repeats)?;
    let local = local_starts(observer, &home, &mut conn, daemon.pid, repeats)?;
    let mut local_cli = Vec::new();
    for _ in 0..ctx.config.cli_repeats {
        jitter(Duration::from_millis(100));
        local_cli.push(ms(cli(&ctx.bin, Some(&home.dir), &["start", "local"])?));
        wait_sleeper(daemon.pid, "3603", None, Duration::from_secs(1))?;
        post(&mut conn, "/processes/local/stop")?;
        std::thread::sleep(Duration::from_millis(150));
    }
    drop(conn);
    daemon.stop(Duration::from_secs(15));
    Ok(StartTimings { spawns, floor, crash, api, api_reply, local, local_cli }.rows())
}

/// SIGKILL of the managed child `pid` (`sleep 3601`) until the monitor `daemon_pid` has a new one alive, `repeats`
/// times.
fn crash_restarts(observer: &sys::Observer, daemon_pid: u32, mut pid: u32, repeats: usize) -> anyhow::Result<Vec<f64>> {
    let mut crash = Vec::new();
    for _ in 0..repeats {
        let mark = sys::Mark::now();
        anyhow::ensure!(sys::send(pid, sys::SIGKILL), "cannot kill the managed child {pid}");
        let (new_pid, seen) = wait_sleeper(daemon_pid, "3601", Some(pid), Duration::from_secs(5))?;
        crash.push(observer.since(mark, new_pid, seen));
        pid = new_pid;
        std::thread::sleep(Duration::from_millis(80));
        jitter(Duration::from_millis(40));
    }
    Ok(crash)
}

/// Starts of `api` (`sleep 3602`) over the remote API: request sent → child alive, and request → 200 reply.
fn api_starts(
    observer: &sys::Observer,
    conn: &mut Conn,
    daemon_pid: u32,
    repeats: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut api = Vec::new();
    let mut api_reply = Vec::new();
    for _ in 0..repeats {
        let mark = sys::Mark::now();
        conn.send("POST", "/processes/api/start", Some(""))?;
        let (child, seen) = wait_sleeper(daemon_pid, "3602", None, Duration::from_secs(5))?;
        let res = conn.read_response()?;
        anyhow::ensure!(res.status == 200, "start over the API: {}", res.status);
        api.push(observer.since(mark, child, seen));
        post(conn, "/processes/api/stop")?;
        wait_no_sleeper(daemon_pid, "3602", Duration::from_secs(5))?;
        // The reply on its own: the child exists when it arrives (the actor answers after the spawn).
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        post(conn, "/processes/api/start")?;
        api_reply.push(ms(started.elapsed()));
        post(conn, "/processes/api/stop")?;
        jitter(Duration::from_millis(30));
    }
    Ok((api, api_reply))
}

/// Starts of `local` (`sleep 3603`) by a `pendingAction` written into the registry: edit → child alive.
fn local_starts(
    observer: &sys::Observer,
    home: &Home,
    conn: &mut Conn,
    daemon_pid: u32,
    repeats: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut local = Vec::new();
    for _ in 0..repeats {
        jitter(Duration::from_millis(100));
        let mark = sys::Mark::now();
        home.edit_registry(|registry| registry["processes"]["local"]["pendingAction"] = json!("start"))?;
        let (child, seen) = wait_sleeper(daemon_pid, "3603", None, Duration::from_secs(5))?;
        local.push(observer.since(mark, child, seen));
        post(conn, "/processes/local/stop")?;
        wait_no_sleeper(daemon_pid, "3603", Duration::from_secs(5))?;
        std::thread::sleep(Duration::from_millis(150));
    }
    Ok(local)
}

/// The samples of [`restart_and_start`], in ms.
struct StartTimings {
    /// Bare spawns by the bench: (child observed alive, `spawn()` returned).
    spawns: Vec<(f64, f64)>,
    /// Kill → reap → respawn by the bench itself.
    floor: Vec<f64>,
    crash: Vec<f64>,
    api: Vec<f64>,
    api_reply: Vec<f64>,
    local: Vec<f64>,
    local_cli: Vec<f64>,
}

impl StartTimings {
    fn rows(self) -> Vec<Row> {
        let spawn: Vec<f64> = self.spawns.iter().map(|(observed, _)| *observed).collect();
        let spawn_call: Vec<f64> = self.spawns.iter().map(|(_, call)| *call).collect();
        let spawn_ms = median(&spawn);
        let floor_ms = median(&self.floor);
        let crash_ms = median(&self.crash);
        vec![
            Row::median("spawn-bare", "bare spawn of `sleep` by the bench (baseline)", "ms", spawn)
                .note(format!("spawn() itself returns after {:.3} ms (median)", median(&spawn_call))),
            Row::median(
                "restart-floor",
                "kill → reap → respawn by the bench itself (what bounds a restart)",
                "ms",
                self.floor,
            )
            .baseline("bare spawn", spawn_ms),
            Row::median("crash-restart", "crash → restart, backoff [0] (SIGKILL → new child alive)", "ms", self.crash)
                .target(Bound::AtMost(3.0))
                .baseline("bare spawn", spawn_ms)
                .ratio_target(Bound::AtMost(2.0))
                .note(format!("{:.2}× the bench's own kill → reap → respawn ({floor_ms:.3} ms)", crash_ms / floor_ms)),
            Row::median("start-api", "start over the remote API (request sent → child alive)", "ms", self.api)
                .baseline("bare spawn", spawn_ms),
            Row::median("start-api-reply", "start over the remote API (request → 200 reply)", "ms", self.api_reply)
                .baseline("bare spawn", spawn_ms),
            Row::median("start-local", "start over the local client (registry edit → child alive)", "ms", self.local)
                .target(Bound::AtMost(250.0))
                .note("the monitor learns of registry edits through inotify on its folder"),
            Row::median(
                "start-local-cli",
                "`process_monitor start` CLI call (returns once started)",
                "ms",
                self.local_cli,
            ),
        ]
    }
}

/// The cost of containment: a start over the API and a crash → restart with a cgroup per process, side by side
/// with the process-group fallback (forced with the monitor's test-only `PROCESS_MONITOR_CGROUP_ROOT`). Both
/// monitors run at once and the measurements alternate between them, so that both see the same machine load.
pub(crate) fn containment(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let repeats = ctx.config.repeats * 2;
    progress(&format!(
        "start and restart, cgroup against process-group containment ({repeats} repeats each, alternating)"
    ));
    let mut sides = Vec::new();
    for mode in ["process-group", "cgroup"] {
        match ContainmentSide::launch(ctx, mode)? {
            Ok(side) => sides.push(side),
            Err(not_measured) => return Ok(vec![not_measured]),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..repeats {
        // Which side goes first alternates too.
        for n in 0..sides.len() {
            sides[(n + round) % 2].measure_once(&ctx.observer)?;
        }
    }
    let mut cgroup = sides.pop().context("two monitors")?;
    let mut group = sides.pop().context("two monitors")?;
    for side in [&mut group, &mut cgroup] {
        side.daemon.stop(Duration::from_secs(15));
    }
    Ok(containment_rows(group, cgroup))
}

/// One monitor of [`containment`] with its samples.
struct ContainmentSide {
    daemon: Daemon,
    conn: Conn,
    /// The managed child `crash` (`sleep 3611`).
    pid: u32,
    start: Vec<f64>,
    restart: Vec<f64>,
}

impl ContainmentSide {
    /// A monitor with `crash` and `api` registered, running with `mode` containment (`process-group` is forced by
    /// pointing the cgroup root elsewhere); `Err` holds the row that says why it does not run with `mode`.
    fn launch(ctx: &Ctx<'_>, mode: &str) -> anyhow::Result<Result<ContainmentSide, Row>> {
        let home = Home::new(ctx.root, &format!("contain-{mode}"))?;
        home.write_registry(vec![sleeper("crash", "3611", true), sleeper("api", "3612", false)])?;
        let not_a_cgroup = home.dir.join("not-a-cgroup");
        std::fs::create_dir_all(&not_a_cgroup)?;
        let env: Vec<(&str, &Path)> =
            if mode == "cgroup" { Vec::new() } else { vec![("PROCESS_MONITOR_CGROUP_ROOT", &not_a_cgroup)] };
        let mut daemon = Daemon::launch_with_env(&ctx.bin, &home, &env)?;
        daemon.wait_ready(Duration::from_secs(15))?;
        let mut conn = Conn::connect(daemon.remote_port)?;
        let status = conn.get("/monitor/status")?;
        let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap_or_default();
        if status["containment"] != mode {
            let reason = status["containmentReason"].as_str().unwrap_or("not reported").to_owned();
            return Ok(Err(Row::median(
                "start-api-cgroup",
                "start over the API with cgroup containment",
                "ms",
                Vec::new(),
            )
            .note(format!("not measured: the monitor runs with {} containment ({reason})", status["containment"]))));
        }
        let (pid, _) = wait_sleeper(daemon.pid, "3611", None, Duration::from_secs(10))?;
        Ok(Ok(ContainmentSide { daemon, conn, pid, start: Vec::new(), restart: Vec::new() }))
    }

    /// One crash → restart of `crash` and one start (and stop) of `api` over the API.
    fn measure_once(&mut self, observer: &sys::Observer) -> anyhow::Result<()> {
        let mark = sys::Mark::now();
        anyhow::ensure!(sys::send(self.pid, sys::SIGKILL), "cannot kill the managed child {}", self.pid);
        let (new_pid, seen) = wait_sleeper(self.daemon.pid, "3611", Some(self.pid), Duration::from_secs(5))?;
        self.restart.push(observer.since(mark, new_pid, seen));
        self.pid = new_pid;
        std::thread::sleep(Duration::from_millis(40));

        let mark = sys::Mark::now();
        self.conn.send("POST", "/processes/api/start", Some(""))?;
        let (child, seen) = wait_sleeper(self.daemon.pid, "3612", None, Duration::from_secs(5))?;
        let res = self.conn.read_response()?;
        anyhow::ensure!(res.status == 200, "start over the API: {}", res.status);
        self.start.push(observer.since(mark, child, seen));
        post(&mut self.conn, "/processes/api/stop")?;
        wait_no_sleeper(self.daemon.pid, "3612", Duration::from_secs(5))?;
        jitter(Duration::from_millis(30));
        Ok(())
    }
}

/// The start and restart rows of both sides, cgroup against process-group.
fn containment_rows(group: ContainmentSide, cgroup: ContainmentSide) -> Vec<Row> {
    let (group_start_ms, group_restart_ms) = (median(&group.start), median(&group.restart));
    vec![
        Row::median(
            "start-api-pgroup",
            "start over the API, process-group containment (request → child alive)",
            "ms",
            group.start,
        ),
        Row::median(
            "start-api-cgroup",
            "start over the API, cgroup containment (request → child alive)",
            "ms",
            cgroup.start,
        )
        .baseline("process-group", group_start_ms)
        .ratio_target(Bound::AtMost(1.3)),
        Row::median(
            "restart-pgroup",
            "crash → restart, process-group containment (SIGKILL → new child alive)",
            "ms",
            group.restart,
        ),
        Row::median(
            "restart-cgroup",
            "crash → restart, cgroup containment (SIGKILL → new child alive)",
            "ms",
            cgroup.restart,
        )
        .baseline("process-group", group_restart_ms)
        .ratio_target(Bound::AtMost(1.3)),
    ]
}

/// 3: bulk start and stop of N registered `sleep`s; footprint and `GET /processes` with N entries.
pub(crate) fn bulk(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let mut rows = vec![boot_empty(ctx)?];
    let largest = ctx.config.bulk.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let smallest = ctx.config.bulk.iter().map(|(n, _)| *n).min().unwrap_or(0);
    let mut get_smallest = None;
    for &(n, reps) in &ctx.config.bulk {
        progress(&format!("bulk start and stop of {n} processes ({reps} repeats)"));
        let mut samples = BulkSamples::default();
        for rep in 0..reps {
            samples.measure(ctx, n, rep, n == largest)?;
        }
        rows.extend(samples.rows(n, n == largest, smallest, &mut get_smallest));
    }
    Ok(rows)
}

/// The monitor's own start-up with nothing to start: part of every bulk figure.
fn boot_empty(ctx: &Ctx<'_>) -> anyhow::Result<Row> {
    let mut boot = Vec::new();
    for rep in 0..ctx.config.bulk.first().map_or(3, |(_, reps)| (*reps).max(3)) {
        let home = Home::new(ctx.root, &format!("boot-{rep}"))?;
        home.write_registry(Vec::new())?;
        let mut daemon = Daemon::launch(&ctx.bin, &home)?;
        boot.push(ms(daemon.wait_ready(Duration::from_secs(15))?));
        daemon.stop(Duration::from_secs(10));
    }
    Ok(Row::median("boot-empty", "monitor start-up, empty registry (launch → answers /alive)", "ms", boot))
}

/// The samples of [`bulk`] at one size, over its repeats.
#[derive(Default)]
struct BulkSamples {
    starts: Vec<f64>,
    stops: Vec<f64>,
    /// The bench's own serial spawns of as many children.
    bases: Vec<f64>,
    lists: Vec<f64>,
    gets: Vec<f64>,
    /// Footprint, at the largest size only.
    rss: Vec<f64>,
    pss: Vec<f64>,
    list_bytes: usize,
}

impl BulkSamples {
    /// One repeat with `n` autostart processes: start all, footprint (when `largest`), reads, stop all.
    fn measure(&mut self, ctx: &Ctx<'_>, n: usize, rep: usize, largest: bool) -> anyhow::Result<()> {
        self.bases.push(serial_spawn(n)?);
        let home = Home::new(ctx.root, &format!("bulk-{n}-{rep}"))?;
        home.write_registry((0..n).map(|idx| sleeper(&format!("p{idx:04}"), "3600", true)).collect())?;
        let mut daemon = Daemon::launch(&ctx.bin, &home)?;
        let pids = wait_sleepers(&mut daemon, n, Duration::from_secs(60))?;
        let seen = Instant::now();
        let last = pids.iter().map(|pid| ctx.observer.since(daemon.launched, *pid, seen)).fold(0.0, f64::max);
        self.starts.push(last);

        daemon.wait_ready(Duration::from_secs(15))?;
        std::thread::sleep(if ctx.config.quick { Duration::from_secs(1) } else { Duration::from_secs(2) });
        if largest {
            let memory = sys::memory(daemon.pid).context("cannot read the monitor's smaps_rollup")?;
            self.rss.push(memory.rss_kib as f64 / 1024.0);
            self.pss.push(memory.pss_kib as f64 / 1024.0);
        }
        self.measure_reads(&mut Conn::connect(daemon.remote_port)?, n)?;

        let started = Instant::now();
        sys::send(daemon.pid, sys::SIGTERM);
        let mut remaining: Vec<u32> = pids.into_iter().collect();
        while !remaining.is_empty() {
            remaining.retain(|pid| sys::alive(*pid));
            anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "{} processes still run", remaining.len());
            std::thread::sleep(POLL_BULK);
        }
        self.stops.push(ms(started.elapsed()));
        daemon.wait_exit(Duration::from_secs(15));
        Ok(())
    }

    /// `GET /processes` 10 times and `GET /processes/{id}` 2000 times over `conn`, with `n` entries.
    fn measure_reads(&mut self, conn: &mut Conn, n: usize) -> anyhow::Result<()> {
        conn.get("/processes")?;
        for _ in 0..10 {
            let started = Instant::now();
            let res = conn.get("/processes")?;
            self.lists.push(ms(started.elapsed()));
            anyhow::ensure!(res.status == 200, "GET /processes: {}", res.status);
            self.list_bytes = res.body.len();
        }
        // Alternating ids: each request is for another group than the one before.
        let ids: Vec<String> = [n / 2, n / 3, n / 4, n - 1].iter().map(|idx| format!("/processes/p{idx:04}")).collect();
        // Long enough that the once-a-second background sample (which competes for the same cores) is a
        // small part of the window, as it is of any second of a busy API.
        for idx in 0..2000 {
            let one = &ids[idx % ids.len()];
            let started = Instant::now();
            let res = conn.get(one)?;
            self.gets.push(ms(started.elapsed()));
            anyhow::ensure!(res.status == 200, "GET {one}: {}", res.status);
        }
        Ok(())
    }

    /// The rows of size `n`; `get_smallest` is the single-read figure at the `smallest` size, the baseline of the
    /// larger ones (set when `n` is the smallest).
    fn rows(self, n: usize, largest: bool, smallest: usize, get_smallest: &mut Option<f64>) -> Vec<Row> {
        let mut rows = Vec::new();
        let target = match n {
            100 => Some(50.0),
            1000 => Some(500.0),
            _ => None,
        };
        let mut start_row = Row::median(
            &format!("bulk-start-{n}"),
            &format!("{n} processes running (monitor launch → all alive)"),
            "ms",
            self.starts,
        )
        .baseline(&format!("bench spawns {n} serially"), median(&self.bases));
        if let Some(target) = target {
            start_row = start_row.target(Bound::AtMost(target));
        }
        rows.push(start_row);
        rows.push(
            Row::median(
                &format!("bulk-stop-{n}"),
                &format!("stop of all {n} (SIGTERM to the monitor → last child gone)"),
                "ms",
                self.stops,
            )
            .note("a stopping monitor stops all its processes at once"),
        );
        rows.push(
            Row::median(&format!("list-{n}"), &format!("`GET /processes` with {n} entries"), "ms", self.lists)
                .note(format!("{} KiB body", self.list_bytes / 1024)),
        );
        let mut get_row = Row::median(
            &format!("get-one-{n}"),
            &format!("`GET /processes/{{id}}` with {n} entries, one connection, alternating ids"),
            "ms",
            self.gets,
        );
        match *get_smallest {
            // Served from the last resource sample: the cost does not grow with the number of processes.
            Some(base) if n > smallest => {
                get_row = get_row.baseline(&format!("with {smallest} entries"), base).ratio_target(Bound::AtMost(1.5))
            }
            _ => *get_smallest = Some(get_row.value),
        }
        rows.push(get_row);
        if largest {
            rows.push(Row::median(&format!("rss-{n}"), &format!("monitor RSS with {n} children"), "MiB", self.rss));
            rows.push(Row::median(&format!("pss-{n}"), &format!("monitor PSS with {n} children"), "MiB", self.pss));
        }
        rows
    }
}

/// 4 and 5: idle footprint and CPU (no processes, 100, 100 with aliveness checks every 3 s), then the API and
/// `--status` against the monitor with 100. Answers the rows and the `--version` spawn cost (ms).
pub(crate) fn idle_and_api(ctx: &Ctx<'_>) -> anyhow::Result<(Vec<Row>, f64)> {
    let config = ctx.config;
    progress(&format!(
        "idle footprint and CPU ({} × {:?} windows, three monitors side by side)",
        config.idle_windows, config.idle_window
    ));
    let health = HealthServer::start()?;
    let check_url = format!("http://127.0.0.1:{}/health", health.port);
    let sleepers = |checks: bool| {
        (0..100)
            .map(|idx| {
                let entry = sleeper(&format!("p{idx:03}"), "3600", true);
                if checks {
                    with_check(entry, &check_url, 3000)
                } else {
                    entry
                }
            })
            .collect::<Vec<_>>()
    };
    let empty = Home::new(ctx.root, "idle-empty")?;
    empty.write_registry(Vec::new())?;
    let plain = Home::new(ctx.root, "idle-100")?;
    plain.write_registry(sleepers(false))?;
    let checked = Home::new(ctx.root, "idle-100-checks")?;
    checked.write_registry(sleepers(true))?;
    let mut daemons =
        [Daemon::launch(&ctx.bin, &empty)?, Daemon::launch(&ctx.bin, &plain)?, Daemon::launch(&ctx.bin, &checked)?];
    for daemon in &mut daemons {
        daemon.wait_ready(Duration::from_secs(15))?;
    }
    wait_sleepers(&mut daemons[1], 100, Duration::from_secs(30))?;
    wait_sleepers(&mut daemons[2], 100, Duration::from_secs(30))?;
    std::thread::sleep(config.idle_settle);

    let hits_before = health.hits.load(std::sync::atomic::Ordering::Relaxed);
    let window_started = Instant::now();
    let idle = IdleSamples::measure(config, &daemons)?;
    let hits = health.hits.load(std::sync::atomic::Ordering::Relaxed) - hits_before;
    let checks_per_30s = hits as f64 * 30.0 / window_started.elapsed().as_secs_f64();
    let [mut empty_daemon, mut plain_daemon, mut checked_daemon] = daemons;
    empty_daemon.stop(Duration::from_secs(10));
    checked_daemon.stop(Duration::from_secs(15));
    drop(health);
    let mut rows = idle.rows(config, checks_per_30s);

    progress("API latency and throughput, CLI --status");
    rows.extend(api_latency(ctx, &plain, &plain_daemon)?);
    rows.extend(api_load(config, plain_daemon.remote_port)?);
    rows.extend(alive_under_api_load(config, plain_daemon.remote_port, plain_daemon.alive_port)?);
    let (cli_rows, version_ms) = cli_status_and_version(ctx, &plain)?;
    rows.extend(cli_rows);
    plain_daemon.stop(Duration::from_secs(15));
    Ok((rows, version_ms))
}

/// CPU and memory of the three idle monitors of [`idle_and_api`] (no processes, 100, 100 with checks), per window.
#[derive(Default)]
struct IdleSamples {
    /// CPU ms, scaled to 30 s.
    cpu: [Vec<f64>; 3],
    /// How the CPU time was read.
    how: [&'static str; 3],
    rss: [Vec<f64>; 3],
    pss: [Vec<f64>; 3],
    /// Anonymous memory in the last window, KiB.
    anon: [u64; 3],
}

impl IdleSamples {
    fn measure(config: &crate::bench::Config, daemons: &[Daemon; 3]) -> anyhow::Result<IdleSamples> {
        let scale = 30.0 / config.idle_window.as_secs_f64();
        let mut res = IdleSamples::default();
        for _ in 0..config.idle_windows {
            let before: Vec<sys::Cpu> = daemons
                .iter()
                .map(|daemon| sys::cpu(daemon.pid).context("cannot read the monitor's CPU"))
                .collect::<Result<_, _>>()?;
            std::thread::sleep(config.idle_window);
            for (idx, daemon) in daemons.iter().enumerate() {
                let after = sys::cpu(daemon.pid).context("cannot read the monitor's CPU")?;
                let (used, method) = sys::cpu_ms_between(&before[idx], &after);
                res.cpu[idx].push(used * scale);
                res.how[idx] = method;
                let memory = sys::memory(daemon.pid).context("cannot read the monitor's smaps_rollup")?;
                res.rss[idx].push(memory.rss_kib as f64 / 1024.0);
                res.pss[idx].push(memory.pss_kib as f64 / 1024.0);
                res.anon[idx] = memory.anon_kib;
            }
        }
        Ok(res)
    }

    fn rows(self, config: &crate::bench::Config, checks_per_30s: f64) -> Vec<Row> {
        let IdleSamples { cpu, how, rss, pss, anon } = self;
        let per_window = format!("{:?} windows scaled to 30 s", config.idle_window);
        let cpu_plain = median(&cpu[1]);
        let [cpu_empty_samples, cpu_plain_samples, cpu_checked_samples] = cpu;
        let [rss_empty, rss_plain, rss_checked] = rss;
        let [pss_empty, pss_plain, _] = pss;
        let anon_note = |kib: u64| format!("{:.2} MiB of it anonymous (heap, stacks)", kib as f64 / 1024.0);
        vec![
            Row::median("rss-idle", "monitor RSS, idle (no processes)", "MiB", rss_empty)
                .target(Bound::AtMost(5.0))
                .note(anon_note(anon[0])),
            Row::median("pss-idle", "monitor PSS, idle (no processes)", "MiB", pss_empty)
                .note("three monitors of the same binary ran side by side, sharing its pages"),
            Row::median("rss-100", "monitor RSS with 100 children", "MiB", rss_plain)
                .target(Bound::AtMost(6.0))
                .note(anon_note(anon[1])),
            Row::median("pss-100", "monitor PSS with 100 children", "MiB", pss_plain)
                .note("three monitors of the same binary ran side by side, sharing its pages"),
            Row::median("rss-100-checks", "monitor RSS with 100 children, checks every 3 s", "MiB", rss_checked)
                .note(anon_note(anon[2])),
            Row::median("cpu-idle-empty", "monitor CPU per 30 s idle, no processes", "ms", cpu_empty_samples)
                .note(format!("{per_window}; {}", how[0])),
            Row::median("cpu-idle-100", "monitor CPU per 30 s idle, 100 children, no checks", "ms", cpu_plain_samples)
                .target(Bound::AtMost(5.0))
                .note(format!("{per_window}; {}", how[1])),
            Row::median(
                "cpu-idle-100-checks",
                "monitor CPU per 30 s idle, 100 children, checks every 3 s",
                "ms",
                cpu_checked_samples,
            )
            .baseline("no checks", cpu_plain)
            .note(format!("{per_window}; {}; {checks_per_30s:.0} checks answered per 30 s", how[2])),
        ]
    }
}

/// `GET /processes/{id}` p50 and p99 over one keep-alive TCP connection to `daemon` (home `home`), then p50 over
/// the unix socket and over TCP with a bearer token.
fn api_latency(ctx: &Ctx<'_>, home: &Home, daemon: &Daemon) -> anyhow::Result<Vec<Row>> {
    let config = ctx.config;
    let latency = keepalive_latency(
        Conn::connect(daemon.remote_port)?,
        IDLE_API_PATH,
        config.api_requests,
        &format!("GET {IDLE_API_PATH}"),
    )?;
    let p99 = percentile(&latency, 99.0);
    let mut rows = vec![
        Row::median("api-get-p50", "`GET /processes/{id}` p50, one keep-alive connection", "ms", latency.clone())
            .target(Bound::AtMost(0.2)),
        Row::median("api-get-p99", "`GET /processes/{id}` p99, one keep-alive connection", "ms", latency.clone())
            .value(p99),
    ];
    let tcp_p50 = median(&latency);

    // The same request over the local unix socket, and over TCP with a bearer token (checked against the token
    // file on every request).
    let socket = home.dir.join("processes_default.sock");
    let token = read_token(ctx, home)?;
    for (id, label, conn) in [
        ("api-get-p50-socket", "`GET /processes/{id}` p50 over the unix socket", Conn::connect_unix(&socket)?),
        (
            "api-get-p50-token",
            "`GET /processes/{id}` p50 over TCP with a bearer token",
            Conn::connect(daemon.remote_port)?.with_token(&token),
        ),
    ] {
        let latency = keepalive_latency(conn, IDLE_API_PATH, config.api_requests, label)?;
        rows.push(Row::median(id, label, "ms", latency).baseline("TCP without a token", tcp_p50));
    }
    Ok(rows)
}

/// The process whose `GET /processes/{id}` the API figures time.
const IDLE_API_PATH: &str = "/processes/p050";

/// `requests` timed `GET path` over `conn` after 200 untimed ones; `what` names the request in an error.
fn keepalive_latency(mut conn: Conn, path: &str, requests: usize, what: &str) -> anyhow::Result<Vec<f64>> {
    for _ in 0..200 {
        conn.get(path)?;
    }
    let mut latency = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let res = conn.get(path)?;
        latency.push(ms(started.elapsed()));
        anyhow::ensure!(res.status == 200, "{what}: {}", res.status);
    }
    Ok(latency)
}

/// A new read-scoped token of the monitor in `home`, made by the CLI.
fn read_token(ctx: &Ctx<'_>, home: &Home) -> anyhow::Result<String> {
    let out = std::process::Command::new(&ctx.bin)
        .arg("--directory")
        .arg(&home.dir)
        .args(["token", "create", "--name", "bench", "--scope", "read"])
        .output()
        .context("cannot run token create")?;
    anyhow::ensure!(out.status.success(), "token create failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Throughput of `GET /processes/{id}` over 4 keep-alive connections to `port`, and its latency under that load.
fn api_load(config: &crate::bench::Config, port: u16) -> anyhow::Result<Vec<Row>> {
    let path = IDLE_API_PATH;
    let mut rps = Vec::new();
    let mut loaded = Vec::new();
    for _ in 0..config.api_load_runs {
        let deadline = Instant::now() + config.api_load;
        let started = Instant::now();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                    let mut conn = Conn::connect(port)?;
                    let mut latency = Vec::new();
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        let res = conn.get(path)?;
                        latency.push(ms(started.elapsed()));
                        anyhow::ensure!(res.status == 200, "GET {path}: {}", res.status);
                    }
                    Ok(latency)
                })
            })
            .collect();
        let mut count = 0;
        for worker in workers {
            let latency = worker.join().map_err(|_| anyhow::format_err!("a load thread panicked"))??;
            count += latency.len();
            loaded.extend(latency);
        }
        rps.push(count as f64 / started.elapsed().as_secs_f64());
    }
    let (loaded_p50, loaded_p99) = (median(&loaded), percentile(&loaded, 99.0));
    let loaded_note = format!("{} requests", loaded.len());

    Ok(vec![
        Row::median("api-rps", "`GET /processes/{id}` throughput, 4 keep-alive connections", "req/s", rps)
            .target(Bound::AtLeast(5000.0))
            .note(format!("{:?} per run", config.api_load)),
        Row::median("api-get-p50-load", "`GET /processes/{id}` p50 under that load", "ms", Vec::new())
            .value(loaded_p50)
            .note(loaded_note.clone()),
        Row::median("api-get-p99-load", "`GET /processes/{id}` p99 under that load", "ms", Vec::new())
            .value(loaded_p99)
            .note(loaded_note),
    ])
}

/// `--status` against the monitor in `home` (100 processes) next to `--version`; also answers the `--version`
/// spawn cost (ms).
fn cli_status_and_version(ctx: &Ctx<'_>, home: &Home) -> anyhow::Result<(Vec<Row>, f64)> {
    let mut version = Vec::new();
    let mut status = Vec::new();
    for _ in 0..ctx.config.cli_repeats {
        version.push(ms(cli(&ctx.bin, None, &["--version"])?));
        status.push(ms(cli(&ctx.bin, Some(&home.dir), &["--status"])?));
    }
    let version_ms = median(&version);
    let rows = vec![
        Row::median("cli-status", "`process_monitor --status` (100 processes)", "ms", status)
            .target(Bound::AtMost(10.0))
            .baseline("`process_monitor --version`", version_ms),
        Row::median("cli-version", "`process_monitor --version` (process spawn and exit)", "ms", version),
    ];
    Ok((rows, version_ms))
}

/// `/alive` and `/status` latency on the aliveness port while 3 clients hammer the remote API (alternating
/// `GET /processes/{id}`, `GET /processes`, `GET /metrics`) of a monitor with 100 running processes.
fn alive_under_api_load(config: &crate::bench::Config, remote_port: u16, alive_port: u16) -> anyhow::Result<Vec<Row>> {
    let run = config.api_load * u32::try_from(config.api_load_runs).unwrap_or(1);
    let deadline = Instant::now() + run;
    let hammers: Vec<_> = (0..3)
        .map(|worker: usize| {
            std::thread::spawn(move || -> anyhow::Result<usize> {
                let mut conn = Conn::connect(remote_port)?;
                let mut count = 0;
                while Instant::now() < deadline {
                    let path = match count % 6 {
                        0 => "/processes".to_owned(),
                        1 => "/metrics".to_owned(),
                        k => format!("/processes/p{:03}", (worker * 31 + k * 17 + count) % 100),
                    };
                    let res = conn.get(&path)?;
                    anyhow::ensure!(res.status == 200, "GET {path}: {}", res.status);
                    count += 1;
                }
                Ok(count)
            })
        })
        .collect();
    let mut conn = Conn::connect(alive_port)?;
    let (mut alive, mut status) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        for (path, into) in [("/alive", &mut alive), ("/status", &mut status)] {
            let started = Instant::now();
            let res = conn.get(path)?;
            into.push(ms(started.elapsed()));
            anyhow::ensure!(res.status == 200, "GET {path}: {}", res.status);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut hammered = 0;
    for hammer in hammers {
        hammered += hammer.join().map_err(|_| anyhow::format_err!("a load thread panicked"))??;
    }
    let note = format!("{} + {} probes, {hammered} API requests by 3 clients in {run:?}", alive.len(), status.len());
    let (alive_p99, status_p99) = (percentile(&alive, 99.0), percentile(&status, 99.0));
    Ok(vec![
        Row::median("alive-p99-load", "`/alive` p99 while 3 clients load the API (100 processes)", "ms", alive)
            .value(alive_p99)
            .target(Bound::AtMost(10.0))
            .note(note.clone()),
        Row::median("status-p99-load", "`/status` p99 while 3 clients load the API (100 processes)", "ms", status)
            .value(status_p99)
            .target(Bound::AtMost(10.0))
            .note(note),
    ])
}

/// 6: registry transactions through the CLI (`register` / `deregister`), one client and four at once, with no
/// monitor running.
pub(crate) fn registry(ctx: &Ctx<'_>, version_ms: f64) -> anyhow::Result<Vec<Row>> {
    progress("registry transactions through the CLI");
    let home = Home::new(ctx.root, "registry")?;
    home.write_registry((0..10).map(|idx| sleeper(&format!("base{idx}"), "3600", false)).collect())?;
    let register = |bin: &Path, dir: &Path, id: &str| -> anyhow::Result<f64> {
        Ok(ms(cli(bin, Some(dir), &["register", "--id", id, "--command", "sleep", "--no-autostart", "--", "1"])?))
    };
    let deregister =
        |bin: &Path, dir: &Path, id: &str| -> anyhow::Result<f64> { Ok(ms(cli(bin, Some(dir), &["deregister", id])?)) };

    let mut single = Vec::new();
    for idx in 0..ctx.config.cli_repeats {
        let id = format!("s{idx}");
        single.push(register(&ctx.bin, &home.dir, &id)?);
        single.push(deregister(&ctx.bin, &home.dir, &id)?);
    }

    let deadline = Instant::now() + ctx.config.registry_run;
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (bin, dir) = (ctx.bin.clone(), home.dir.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                let mut latency = Vec::new();
                let mut idx = 0;
                while Instant::now() < deadline {
                    let id = format!("w{worker}-{idx}");
                    latency.push(register(&bin, &dir, &id)?);
                    latency.push(deregister(&bin, &dir, &id)?);
                    idx += 1;
                }
                Ok(latency)
            })
        })
        .collect();
    let mut concurrent = Vec::new();
    for worker in workers {
        concurrent.extend(worker.join().map_err(|_| anyhow::format_err!("a registry worker panicked"))??);
    }
    let tx_per_s = concurrent.len() as f64 / started.elapsed().as_secs_f64();

    let registry: serde_json::Value = serde_json::from_slice(&std::fs::read(home.registry_file())?)?;
    let left = registry["processes"].as_object().map_or(0, |processes| processes.len());
    anyhow::ensure!(left == 10, "the registry holds {left} processes after the run, not the 10 it started with");

    let single_ms = median(&single);
    Ok(vec![
        Row::median("registry-tx-4", "registry transactions/s, 4 concurrent CLI processes", "tx/s", Vec::new())
            .value(tx_per_s)
            .note(format!(
                "{} transactions in {:?}; each is a whole CLI process",
                concurrent.len(),
                ctx.config.registry_run
            )),
        Row::median("registry-cli-call", "one CLI registry transaction (register or deregister), alone", "ms", single)
            .baseline("`process_monitor --version`", version_ms)
            .note(format!("≈ {:.2} ms of it is the transaction, the rest the process", single_ms - version_ms)),
        Row::median("registry-cli-call-4", "one CLI registry transaction, 4 clients at once", "ms", concurrent),
    ])
}
