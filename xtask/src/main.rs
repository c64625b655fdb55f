//! `cargo xtask`: the project's automation — `ci` (everything CI runs), `e2e` (the real binaries, both
//! instances, fault scenarios) and `bench` (speed and footprint figures).

mod bench;
mod chaos;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("e2e") => e2e(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("chaos") => chaos::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | e2e [test filter] | bench [--quick] [--scale] | chaos [--cycles N] [--fuzz-cases N]>"
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
    let mut cmd = cargo();
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
