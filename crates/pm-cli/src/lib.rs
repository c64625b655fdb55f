//! The `process_monitor` and `monitor_watcher` programs: parse the command line, call the library crates,
//! print, and exit with a meaningful code. The binaries only call [`main_impl`].

mod cli;
mod client;
mod commands;
mod events;
mod instance;
mod logging;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod nolibm;
mod stack;
mod stopping;
mod token;

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

pub use cli::Cli;

/// Exit codes.
pub mod code {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other failure.
    pub const ERROR: u8 = 1;
    /// Bad command line.
    pub const USAGE: u8 = 2;
    /// The monitor is not running (or not answering).
    pub const NOT_RUNNING: u8 = 3;
    /// No such process.
    pub const NOT_FOUND: u8 = 4;
    /// Refused by the monitor.
    pub const DENIED: u8 = 5;
}

/// Runs the program as instance `default_instance` unless `--instance-id` says otherwise.
pub fn main_impl(default_instance: &str) -> ExitCode {
    let name = program_for(default_instance);
    let matches = Cli::command().name(name).bin_name(name).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let instance_id = cli.instance_id.clone().unwrap_or_else(|| default_instance.to_owned());
    let res = match &cli.command {
        Some(command) => commands::run(&cli, &instance_id, command),
        None if cli.print_systemd_unit => commands::run(&cli, &instance_id, &cli::Command::SystemdUnit { user: false }),
        None => instance::run(&cli, &instance_id),
    };
    match res {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = exit_code_of(&err);
            if is_broken_pipe(&err) {
                return ExitCode::from(code::OK);
            }
            // An error can carry a remote monitor's message or a name from the registry: no control characters.
            eprintln!("{}: {}", program_name(), pm_core::escape_control(&format!("{err:#}")));
            ExitCode::from(code)
        }
    }
}

/// The program's name for an instance: `monitor_watcher` for the watcher, `process_monitor` otherwise.
pub(crate) fn program_for(default_instance: &str) -> &'static str {
    if default_instance == pm_core::WATCHER_INSTANCE {
        "monitor_watcher"
    } else {
        "process_monitor"
    }
}

pub(crate) fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|arg0| std::path::Path::new(&arg0).file_name().map(|name| name.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "process_monitor".to_owned())
}

/// The program's one async runtime (current-thread), built on first use: the remote client, the event and log
/// streams, loopback HTTP probes and signal waits of a command all run on it, however many calls it makes.
pub(crate) fn runtime() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Runs `future` to completion on [`runtime`].
pub(crate) fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    Ok(runtime()?.block_on(future))
}

fn exit_code_of(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(err) = cause.downcast_ref::<pm_client::Error>() {
            return match err {
                pm_client::Error::NotFound(_) => code::NOT_FOUND,
                pm_client::Error::PermissionDenied(_) => code::DENIED,
                pm_client::Error::Transport { .. } | pm_client::Error::NotDiscovered(_) => code::NOT_RUNNING,
                _ => code::ERROR,
            };
        }
        if cause.downcast_ref::<instance::NotRunning>().is_some() {
            return code::NOT_RUNNING;
        }
    }
    code::ERROR
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|err| err.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
