//! The command-line grammar (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// ProcessMonitor keeps your services running: it starts them, captures their logs, checks their health and
/// restarts them with backoff when they crash or hang.
///
/// Without a command or flag it starts the monitor in the background and returns once it answers; `--foreground`
/// runs it in this terminal. Files live in ~/.tom/process_monitor (or --directory).
#[derive(Debug, Parser)]
#[command(version, about, long_about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Run the monitor in this process, logging to the console too, until SIGTERM or Ctrl-C.
    #[arg(long, conflicts_with_all = ["status", "stop", "restart"])]
    pub foreground: bool,

    /// Run without partner (watcher) monitoring.
    #[arg(long)]
    pub standalone: bool,

    /// The instance to run or address (`default`; `watcher` for monitor_watcher).
    #[arg(long, value_name = "ID", global = true)]
    pub instance_id: Option<String>,

    /// The monitor's folder instead of ~/.tom/process_monitor.
    #[arg(long, value_name = "DIR", global = true, env = "PROCESS_MONITOR_DIR")]
    pub directory: Option<PathBuf>,

    /// Show whether the instance runs, and its status.
    #[arg(long, conflicts_with_all = ["stop", "restart"])]
    pub status: bool,

    /// Stop the instance and the processes it manages (its partner is told not to bring it back).
    #[arg(long, conflicts_with = "restart")]
    pub stop: bool,

    /// Restart the instance in place (its processes keep running and are adopted); starts it when it is not
    /// running, and replaces it when it does not answer.
    #[arg(long)]
    pub restart: bool,

    /// Remote API port (stored in the registry).
    #[arg(long, value_name = "PORT")]
    pub remote_port: Option<u16>,

    /// Aliveness port (stored in the registry).
    #[arg(long, value_name = "PORT")]
    pub aliveness_port: Option<u16>,

    /// Address the remote API listens on, for this run (default: the registry's, `::`).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,

    /// PEM certificate chain: serve the remote API over TLS (builds with the `tls` feature only).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Log run folders kept per process, and monitor log files kept.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub keep_logs: usize,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Bearer token for `--remote` calls (made with `token create`); sent as `Authorization: Bearer`.
    #[arg(long, value_name = "TOKEN", global = true, env = "PROCESS_MONITOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Print a systemd unit for this instance and exit (same as the `systemd-unit` command).
    #[arg(long)]
    pub print_systemd_unit: bool,

    /// Internal: run the monitor in this process without console output (used by the detached start).
    #[arg(long, hide = true)]
    pub detached: bool,

    /// Internal: this process replaces a monitor that restarted itself.
    #[arg(long, hide = true)]
    pub resume: bool,

    /// Manage processes instead of the monitor.
    #[command(subcommand)]
    pub command: Option<Command>,
}

const AFTER_HELP: &str = "\
Exit codes: 0 success, 1 error, 2 usage, 3 monitor not running, 4 not found, 5 permission denied.
Files: processes_{id}.json (registry), processes_{id}.lock (instance lock), {id}_logs/ (logs).";

/// Process commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the registered processes.
    List(Target),
    /// Show one process.
    Status(IdArgs),
    /// Start a process.
    Start(IdArgs),
    /// Stop a process (SIGTERM to its process group, SIGKILL after its stop timeout).
    Stop(IdArgs),
    /// Restart a process.
    Restart(IdArgs),
    /// Enable a process.
    Enable(IdArgs),
    /// Disable (and stop) a process.
    Disable(IdArgs),
    /// Register a process from a JSON file or from flags.
    Register(Box<RegisterArgs>),
    /// Remove a process (stopping it); refused while others depend on it, unless `--force`.
    Deregister(DeregisterArgs),
    /// Show a process's log.
    Logs(LogsArgs),
    /// Watch the monitor's events (state changes, restarts, checks, registrations) as they happen.
    Events(EventsArgs),
    /// Show or change the monitor-wide settings (remote access, trusted hosts, executable lists, standalone
    /// mode, partner discovery).
    Config(ConfigArgs),
    /// Make, list or revoke bearer tokens of the remote API (kept as hashes in processes_{id}.tokens.json).
    Token(TokenArgs),
    /// Print the JSON Schema of stack files (for editor completion; see docs/stack-file.md).
    Schema,
    /// Show what applying a stack file would change: processes added, removed, changed key by key, and
    /// which of them restart.
    Diff(StackArgs),
    /// Make the registry match a stack file (restarting only processes whose command, args, environment or
    /// working directory changed).
    Apply(ApplyArgs),
    /// Apply a stack file, then show its processes' output until Ctrl-C, which stops them.
    Up(UpArgs),
    /// Stop and remove the processes a stack file created.
    Down(StackFileArg),
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print a systemd unit that starts this instance at boot.
    SystemdUnit {
        /// A user unit (~/.config/systemd/user) instead of a system one.
        #[arg(long)]
        user: bool,
    },
}

/// Which monitor a process command talks to.
#[derive(Debug, Args)]
pub struct Target {
    /// Use the HTTP API at this URL (e.g. http://127.0.0.1:19881) instead of the local registry.
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
}

/// A process id and target.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The process id.
    pub id: String,
    #[command(flatten)]
    pub target: Target,
}

/// `deregister ID [--force]`.
#[derive(Debug, Args)]
pub struct DeregisterArgs {
    /// The process id.
    pub id: String,
    /// Remove it even when other processes depend on it (they then wait for it in vain when started).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub target: Target,
}

/// How to register.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// A ProcessConfig JSON file (`-` for standard input); flags below are ignored when given.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["id", "command"])]
    pub file: Option<PathBuf>,
    /// Process id.
    #[arg(long, required_unless_present = "file")]
    pub id: Option<String>,
    /// Display name (the id when absent).
    #[arg(long)]
    pub name: Option<String>,
    /// Executable.
    #[arg(long, required_unless_present = "file")]
    pub command: Option<String>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Environment variable NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Do not start with the monitor.
    #[arg(long)]
    pub no_autostart: bool,
    /// Restarts before failing.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Backoff delays in ms, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub backoff_ms: Option<Vec<u64>>,
    /// Keep retrying after the attempts are used up.
    #[arg(long)]
    pub retry_indefinitely: bool,
    /// Health check URL (2xx passes).
    #[arg(long)]
    pub check_url: Option<String>,
    /// Health check interval in ms.
    #[arg(long)]
    pub check_interval_ms: Option<u64>,
    /// Stop timeout (SIGTERM to SIGKILL) in ms.
    #[arg(long)]
    pub stop_timeout_ms: Option<u64>,
    /// A dependency ID:CONDITION, condition `started`, `healthy` or `completedSuccessfully` (repeatable).
    #[arg(long = "depends-on", value_name = "ID:CONDITION")]
    pub depends_on: Vec<String>,
    /// How long a start waits for its dependencies, in ms (default 60000).
    #[arg(long)]
    pub dependency_timeout_ms: Option<u64>,
    /// Restart the processes that depend on this one after it restarts.
    #[arg(long)]
    pub restart_dependents: bool,
    /// Which exits are restarted: `always` (default), `failure` or `never` (one-shot jobs).
    #[arg(long, value_name = "always|failure|never")]
    pub restart_on: Option<String>,
    /// Hard memory limit of the process's cgroup in bytes (needs the cgroup v2 memory controller).
    #[arg(long)]
    pub memory_max_bytes: Option<u64>,
    /// CPU limit of the process's cgroup in percent of one core (needs the cgroup v2 cpu controller).
    #[arg(long)]
    pub cpu_max_percent: Option<u32>,
    /// Most processes and threads in the process's cgroup (needs the cgroup v2 pids controller).
    #[arg(long)]
    pub pids_max: Option<u64>,
    /// Restart the process when its memory stays above this many bytes for two samples.
    #[arg(long)]
    pub memory_restart_bytes: Option<u64>,
    /// Keep the process running while its cgroup holds the daemon its leader forked (the leader exited 0).
    #[arg(long)]
    pub track_daemonized_children: bool,
    #[command(flatten)]
    pub target: Target,
    /// Arguments of the command (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// What log to show.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The process id.
    pub id: String,
    /// Show stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Lines to show from the end.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub lines: usize,
    /// Keep printing new lines, following into new run folders after restarts.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// A run folder (YYYYMMDD_HHMMSS) instead of the newest; with --remote only.
    #[arg(long, requires = "remote")]
    pub run: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

/// Which events to watch.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only the events of this process.
    #[arg(long, value_name = "ID")]
    pub process: Option<String>,
    /// Start after this event id (the monitor replays what it still holds).
    #[arg(long, value_name = "ID")]
    pub since: Option<String>,
    /// Use the HTTP API at this URL instead of this instance's own (on loopback, at its remoteAccess port).
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
}

/// `config get [KEY]` or `config set KEY VALUE`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
    /// Use the HTTP API at this URL instead of the local registry.
    #[arg(long, value_name = "URL", global = true)]
    pub remote: Option<String>,
}

/// What to do with the settings.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print one setting, or all of them, as JSON.
    Get {
        /// remote-access, trusted-hosts, executable-whitelist, executable-blacklist, standalone-mode or
        /// partner-discovery.
        key: Option<ConfigKey>,
    },
    /// Change one setting.
    ///
    /// remote-access and partner-discovery take a JSON object of the keys to change (e.g.
    /// '{"allowRemoteStart":false}'); trusted-hosts and the executable lists a JSON array or a comma-separated
    /// list; standalone-mode true or false.
    Set {
        /// The setting.
        key: ConfigKey,
        /// Its new value.
        value: String,
    },
}

/// The guide's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigKey {
    /// The allowRemote* permissions (and startRemoteAccess).
    RemoteAccess,
    /// Peers that bypass the permissions.
    TrustedHosts,
    /// Executables untrusted peers may register.
    ExecutableWhitelist,
    /// Executables they may not.
    ExecutableBlacklist,
    /// No partner supervision.
    StandaloneMode,
    /// How the partner is found and watched.
    PartnerDiscovery,
}

/// `token create|list|revoke`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: TokenAction,
}

/// What to do with the tokens.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Make a token and print it once (only its SHA-256 hash is kept).
    Create {
        /// A unique name, for `token list` and `token revoke`.
        #[arg(long)]
        name: String,
        /// read (every GET), operate (also start/stop/restart/enable/disable/autostart) or admin (everything).
        #[arg(long, value_parser = ["read", "operate", "admin"])]
        scope: String,
        /// Lifetime such as 30d, 12h, 90m, 2w (default: no expiry).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// Limit the token to these processes (repeatable).
        #[arg(long = "process", value_name = "ID", num_args = 1..)]
        processes: Vec<String>,
    },
    /// List the tokens (names, scopes, processes, expiry; never the tokens).
    List,
    /// Revoke a token; takes effect on the monitor's next request.
    Revoke {
        /// Its name.
        name: String,
    },
}

/// The stack file.
#[derive(Debug, Args)]
pub struct StackFileArg {
    /// The stack file (TOML, or JSON when it ends in .json).
    #[arg(short = 'f', long = "file", value_name = "FILE", default_value = "stack.toml")]
    pub file: PathBuf,
}

/// `diff -f FILE`.
#[derive(Debug, Args)]
pub struct StackArgs {
    #[command(flatten)]
    pub file: StackFileArg,
    /// Also remove the processes this file created and no longer lists.
    #[arg(long)]
    pub prune: bool,
    /// Take over processes of the same id registered outside this file (otherwise an error).
    #[arg(long)]
    pub adopt: bool,
}

/// `apply -f FILE`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Show what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `up -f FILE`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Leave the processes to the monitor and return once they are started.
    #[arg(short = 'd', long)]
    pub detach: bool,
}
