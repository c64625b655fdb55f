//! `process_monitor`: the ProcessMonitor daemon and its command line (instance `default`).

fn main() -> std::process::ExitCode {
    pm_cli::main_impl(pm_core::DEFAULT_INSTANCE)
}
