//! `cargo xtask bench`: measured speed and footprint (see BENCHMARKS.md).

pub(crate) fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("the benchmark is not written yet")
}
