//! `cargo xtask`: the project's automation — `ci` (everything CI runs), `e2e` (the real binaries, both
//! instances, fault scenarios), `bench` (speed and footprint figures) and `hot-code` (the release link's list of the
//! functions an idle monitor runs).

mod bench;
mod chaos;
mod hotcode;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("e2e") => e2e(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("chaos") => chaos::run(&args[1..]),
        Some("hot-code") => hotcode::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | e2e [test filter] | bench [--quick] [--scale] | chaos [--cycles N] [--fuzz-cases N] | hot-code>"
            );
            return ExitCode::from(2);
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Format check, clippy with warnings denied, every test (and the `tls` feature's), then the end-to-end suite.
fn ci() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    run(cargo().args(["test", "--workspace", "--exclude", "pm-tests"]))?;
    // The optional TLS feature (off in the default build): its code and its test.
    run(cargo().args(["clippy", "-p", "pm-cli", "--features", "tls", "--all-targets", "--", "-D", "warnings"]))?;
    run(cargo().args(["test", "-p", "pm-http", "--features", "tls", "--test", "it", "tls"]))?;
    e2e(&[])?;
    eprintln!("xtask ci: all green in {:.0?}", started.elapsed());
    Ok(())
}

/// Builds the binaries and runs the end-to-end package against them.
fn e2e(filter: &[String]) -> anyhow::Result<()> {
    let bins = build_bins(false)?;
    let (chromium, driver) = browser()?;
    let mut cmd = cargo();
    cmd.env("PM_CHROMIUM", chromium).env("PM_CHROMEDRIVER", driver);
    cmd.args(["test", "-p", "pm-tests", "--"]).args(filter).args(["--nocapture", "--test-threads=2"]);
    for (name, path) in &bins {
        cmd.env(format!("PM_BIN_{}", name.to_uppercase()), path);
    }
    run(&mut cmd)
}

/// Builds `process_monitor` and `monitor_watcher` and answers their paths, as cargo reports them.
pub(crate) fn build_bins(release: bool) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "pm-cli", "--bins", "--message-format=json-render-diagnostics"]);
    if release {
        cmd.arg("--release");
    }
    eprintln!("$ {cmd:?}");
    let output = cmd.stderr(std::process::Stdio::inherit()).output()?;
    anyhow::ensure!(output.status.success(), "cargo build failed");
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(exe) = message["executable"].as_str() {
            let name = message["target"]["name"].as_str().unwrap_or_default().to_owned();
            bins.push((name, PathBuf::from(exe)));
        }
    }
    anyhow::ensure!(bins.len() == 2, "expected two binaries from pm-cli, got {bins:?}");
    Ok(bins)
}

/// The headless browser of the dashboard scenarios: Debian's `chromium` and `chromium-driver`. Installed with
/// apt when missing and running as root; otherwise a missing browser is an error naming the install command
/// (the scenarios are never skipped silently).
fn browser() -> anyhow::Result<(PathBuf, PathBuf)> {
    const INSTALL: &str = "apt-get update && apt-get install -y chromium chromium-driver";
    let find = || {
        let chromium =
            ["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from).into_iter().find(|p| p.exists());
        let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .map(PathBuf::from)
            .into_iter()
            .find(|p| p.exists());
        chromium.zip(driver)
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    anyhow::ensure!(
        is_root(),
        "the dashboard scenarios need a headless Chromium and its WebDriver; install them with `sudo sh -c '{INSTALL}'`"
    );
    eprintln!("xtask: installing chromium and chromium-driver for the dashboard scenarios");
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "chromium", "chromium-driver"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    find().ok_or_else(|| anyhow::anyhow!("chromium or chromedriver still missing after `{INSTALL}`"))
}

/// Whether this process runs as root (effective uid 0, from /proc).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2)?.parse::<u32>().ok()
        })
        .is_some_and(|euid| euid == 0)
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status()?;
    anyhow::ensure!(status.success(), "command failed ({status})");
    Ok(())
}

pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}
