//! `monitor_watcher`: the same program as `process_monitor`, as instance `watcher`.

fn main() -> std::process::ExitCode {
    pm_cli::main_impl(pm_core::WATCHER_INSTANCE)
}
