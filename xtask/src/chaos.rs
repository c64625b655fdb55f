//! `cargo xtask chaos [--cycles N] [--fuzz-cases N]`: the soak settings of the reliability suites (see
//! RELIABILITY.md). Builds the binaries as `e2e` does and runs the chaos and fuzz suites of `pm-tests` with
//! `PM_CHAOS_CYCLES` (default 200) and `PM_FUZZ_CASES` (default 100 000); CI runs the same suites with 20 cycles
//! and 3000 cases inside `cargo xtask e2e`. `PM_CHAOS_SEED` and `PM_FUZZ_SEED` pass through to replay a run.

/// Soak defaults.
const CYCLES: u64 = 200;
const FUZZ_CASES: u64 = 100_000;

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut cycles = CYCLES;
    let mut fuzz_cases = FUZZ_CASES;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<u64> {
            let text = args.next().ok_or_else(|| anyhow::format_err!("{name} needs a number"))?;
            text.parse().map_err(|_| anyhow::format_err!("{name} needs a number, not {text:?}"))
        };
        match arg.as_str() {
            "--cycles" => cycles = value("--cycles")?,
            "--fuzz-cases" => fuzz_cases = value("--fuzz-cases")?,
            other => {
                anyhow::bail!("unknown argument {other:?}; usage: cargo xtask chaos [--cycles N] [--fuzz-cases N]")
            }
        }
    }
    let started = std::time::Instant::now();
    let bins = crate::build_bins(false)?;
    let mut cmd = crate::cargo();
    cmd.args(["test", "-p", "pm-tests", "--test", "it", "--", "chaos::", "fuzz::", "--nocapture", "--test-threads=2"]);
    for (name, path) in &bins {
        cmd.env(format!("PM_BIN_{}", name.to_uppercase()), path);
    }
    cmd.env("PM_CHAOS_CYCLES", cycles.to_string()).env("PM_FUZZ_CASES", fuzz_cases.to_string());
    crate::run(&mut cmd)?;
    eprintln!("xtask chaos: {cycles} cycles and {fuzz_cases} fuzz cases passed in {:.0?}", started.elapsed());
    Ok(())
}
