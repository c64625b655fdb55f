//! `cargo xtask bench`: measured speed and footprint of the release build (see BENCHMARKS.md).
//!
//! Everything runs against the real `process_monitor` binary in temporary homes on free loopback ports. Every
//! process the bench starts carries `PM_BENCH_RUN=<tag>` in its environment (monitors pass it on to their
//! children), so whatever is left over is found and killed at the end, on an error, and on Ctrl-C.

mod dashboard;
mod events;
mod home;
mod http;
mod report;
mod scale;
mod scenarios;
mod sys;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::bench::report::Row;

/// How much to measure: the full run, or `--quick` (a smoke run in well under a minute).
pub(crate) struct Config {
    pub(crate) quick: bool,
    /// Repeats of the single-process timings (crash, start latencies).
    pub(crate) repeats: usize,
    /// Repeats of each CLI timing.
    pub(crate) cli_repeats: usize,
    /// Bulk sizes and how often each is measured.
    pub(crate) bulk: Vec<(usize, usize)>,
    /// Length and number of the idle CPU windows.
    pub(crate) idle_window: Duration,
    pub(crate) idle_windows: usize,
    /// Settling time before the idle windows.
    pub(crate) idle_settle: Duration,
    /// Sequential requests for the single-connection API latency.
    pub(crate) api_requests: usize,
    /// Length and number of the 4-connection throughput runs.
    pub(crate) api_load: Duration,
    pub(crate) api_load_runs: usize,
    /// Length of the concurrent registry-transaction run.
    pub(crate) registry_run: Duration,
}

impl Config {
    fn new(quick: bool) -> Config {
        if quick {
            Config {
                quick,
                repeats: 8,
                cli_repeats: 6,
                bulk: vec![(100, 2), (300, 1)],
                idle_window: Duration::from_secs(3),
                idle_windows: 1,
                idle_settle: Duration::from_millis(3500),
                api_requests: 1000,
                api_load: Duration::from_secs(1),
                api_load_runs: 2,
                registry_run: Duration::from_secs(2),
            }
        } else {
            Config {
                quick,
                repeats: 30,
                cli_repeats: 20,
                bulk: vec![(100, 5), (1000, 3)],
                idle_window: Duration::from_secs(30),
                idle_windows: 3,
                idle_settle: Duration::from_secs(5),
                api_requests: 5000,
                api_load: Duration::from_secs(5),
                api_load_runs: 3,
                registry_run: Duration::from_secs(5),
            }
        }
    }
}

/// What every scenario needs.
pub(crate) struct Ctx<'a> {
    pub(crate) bin: PathBuf,
    pub(crate) root: &'a home::TempRoot,
    pub(crate) config: &'a Config,
    pub(crate) observer: sys::Observer,
}

/// Kills whatever this run left running when it ends, however it ends.
struct SweepGuard;

impl Drop for SweepGuard {
    fn drop(&mut self) {
        let killed = sys::sweep();
        if killed > 0 {
            eprintln!("bench: killed {killed} leftover process(es)");
        }
    }
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(args)?;
    anyhow::ensure!(
        cfg!(target_os = "linux") && sys::has_children_files(),
        "the bench reads /proc/<pid>/task/<tid>/children and smaps_rollup; it runs on Linux only"
    );
    anyhow::ensure!(args.only.is_none() || args.scale, "--only is a part of the scale scenario: add --scale");
    let config = Config::new(args.quick);
    let bin = bench_binary(args.prebuilt.as_deref())?;

    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |at| at.subsec_nanos());
    sys::set_tag(&format!("{}-{nanos}", std::process::id()));
    let root = home::TempRoot::new()?;
    let root_dir = root.dir.clone();
    sys::on_interrupt(move || {
        sys::sweep();
        let _ = std::fs::remove_dir_all(&root_dir);
    })?;
    let _sweep = SweepGuard;

    let mut machine = report::machine();
    machine["commit"] = json!(git_describe());
    eprintln!("bench: load average at start {}", machine["loadavg"].as_str().unwrap_or("?"));
    let started = Instant::now();
    let ctx_bin = bin.clone();
    let ctx = Ctx { bin, root: &root, config: &config, observer: sys::Observer::new() };
    eprintln!("bench: {} run, homes in {}", if args.quick { "quick" } else { "full" }, root.dir.display());
    eprintln!("bench: start timings from {}", ctx.observer.source());
    machine["timingSource"] = json!(ctx.observer.source());
    let rows = run_scenarios(&ctx, &args)?;
    let took = started.elapsed();
    machine["loadavgAtEnd"] = json!(std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    report_results(&args, &ctx_bin, took, machine, &rows)
}

/// The command line of `cargo xtask bench`.
struct Args {
    quick: bool,
    scale: bool,
    /// `--only storm|rss|calls|fleet|checks`: one part of the scale scenario.
    only: Option<scale::Only>,
    /// `--bin PATH`: a binary built some other way, instead of a release build.
    prebuilt: Option<PathBuf>,
}

impl Args {
    fn parse(args: &[String]) -> anyhow::Result<Args> {
        let mut res = Args { quick: false, scale: false, only: None, prebuilt: None };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => res.quick = true,
                "--scale" => res.scale = true,
                "--only" => {
                    res.only = Some(
                        args.next()
                            .context("--only needs storm, rss, calls, fleet or checks")?
                            .parse::<scale::Only>()?,
                    );
                }
                "--bin" => res.prebuilt = Some(PathBuf::from(args.next().context("--bin needs a path")?)),
                other => {
                    anyhow::bail!(
                        "unknown argument {other:?} (usage: cargo xtask bench [--quick] [--scale [--only storm|rss|calls|fleet|checks]] [--bin PATH])"
                    )
                }
            }
        }
        Ok(res)
    }
}

/// The `process_monitor` binary measured: `prebuilt`, or a fresh release build.
fn bench_binary(prebuilt: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    match prebuilt {
        // A binary built some other way (another profile, say), to compare builds.
        Some(path) => std::fs::canonicalize(path).with_context(|| format!("no binary at {}", path.display())),
        None => crate::build_bins(true)?
            .into_iter()
            .find(|(name, _)| name == "process_monitor")
            .map(|(_, path)| path)
            .context("cargo did not report the process_monitor binary"),
    }
}

/// Every scenario in turn (or the scale scenario alone), their rows in table order.
fn run_scenarios(ctx: &Ctx, args: &Args) -> anyhow::Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    if args.scale {
        // The scale scenario on its own (issue #19): 1,000 and 10,000 processes.
        rows.extend(scale::run(ctx, args.quick, args.only)?);
    } else {
        rows.extend(scenarios::restart_and_start(ctx)?);
        rows.extend(scenarios::containment(ctx)?);
        rows.extend(events::events(ctx)?);
        rows.extend(dashboard::dashboard(ctx)?);
        rows.extend(scenarios::bulk(ctx)?);
        let (idle_rows, version_ms) = scenarios::idle_and_api(ctx)?;
        rows.extend(idle_rows);
        rows.extend(scenarios::registry(ctx, version_ms)?);
    }
    Ok(rows)
}

/// Prints the table and the missed targets, and writes the results file under `target/bench`.
fn report_results(
    args: &Args,
    bin: &std::path::Path,
    took: Duration,
    machine: serde_json::Value,
    rows: &[Row],
) -> anyhow::Result<()> {
    let table = report::table(rows);
    println!("\n{table}");
    let missed: Vec<&str> = rows.iter().filter(|row| row.met() == Some(false)).map(|row| row.metric.as_str()).collect();
    if missed.is_empty() {
        println!("every target met");
    } else {
        println!("targets missed ({}): {}", missed.len(), missed.join("; "));
    }
    let results = json!({
        "quick": args.quick,
        "scale": args.scale,
        "only": args.only.map(scale::Only::name),
        "binary": bin.display().to_string(),
        "durationSecs": took.as_secs_f64().round(),
        "machine": machine,
        "results": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "table": table,
    });
    let out_dir = crate::project_root().join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join(results_file(args.scale, args.only));
    std::fs::write(&out, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("bench: done in {:.0?}; wrote {}", took, out.display());
    Ok(())
}

/// The file the figures go to: `results.json`, `scale-results.json`, or `scale-{part}-results.json` (`storm`,
/// `rss`, `calls`, `fleet`, `checks`) for one part of the scale run.
fn results_file(scale: bool, only: Option<scale::Only>) -> String {
    match (scale, only) {
        (true, Some(only)) => format!("scale-{}-results.json", only.name()),
        (true, None) => "scale-results.json".to_owned(),
        (false, _) => "results.json".to_owned(),
    }
}

/// The commit the figures belong to, with `-dirty` when the product crates have uncommitted changes.
fn git_describe() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(crate::project_root())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else { return "unknown".to_owned() };
    let dirty =
        git(&["status", "--porcelain", "--", "crates", "Cargo.lock", "Cargo.toml"]).is_some_and(|out| !out.is_empty());
    if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}
