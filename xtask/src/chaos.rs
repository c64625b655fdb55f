//! `cargo xtask chaos`: the soak settings of the reliability suites (see RELIABILITY.md).

pub(crate) fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("the chaos suite is not written yet")
}
