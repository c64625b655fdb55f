//! Process commands (`list`, `start`, `logs`, ...): through the local registry by default, or the HTTP API
//! with `--remote URL`.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::CommandFactory;
use pm_client::{ProcessMonitorClient, RemoteProcessMonitorClient};
use pm_core::{AlivenessCheck, ProcessConfig, ProcessStatus, RestartPolicy};
use pm_registry::Paths;

use crate::cli::{Cli, Command, ConfigAction, ConfigArgs, ConfigKey, IdArgs, LogsArgs, RegisterArgs, Target};
use crate::code;

pub(crate) fn run(cli: &Cli, instance_id: &str, command: &Command) -> anyhow::Result<u8> {
    let paths = Paths::resolve(cli.directory.as_deref(), instance_id)?;
    match command {
        Command::List(target) => {
            let statuses = match remote(cli, target)? {
                Some(client) => block_on(client.get_all_status())?,
                None => {
                    let mut statuses = local(&paths)?.get_all_status()?;
                    add_local_figures(statuses.values_mut());
                    statuses
                }
            };
            print_list(cli.json, &statuses)
        }
        Command::Status(args) => {
            let status = match remote(cli, &args.target)? {
                Some(client) => block_on(client.get_status(&args.id))?,
                None => {
                    let mut status = local(&paths)?.get_status(&args.id)?;
                    add_local_figures(std::iter::once(&mut status));
                    status
                }
            };
            print_one(cli.json, &status)
        }
        Command::Start(args) => act(cli, &paths, args, Action::Start),
        Command::Stop(args) => act(cli, &paths, args, Action::Stop),
        Command::Restart(args) => act(cli, &paths, args, Action::Restart),
        Command::Enable(args) => act(cli, &paths, args, Action::Enable),
        Command::Disable(args) => act(cli, &paths, args, Action::Disable),
        Command::Deregister(args) => act(cli, &paths, args, Action::Deregister),
        Command::Register(args) => register(cli, &paths, args),
        Command::Logs(args) => match &args.target.remote {
            Some(url) => crate::events::remote_logs(url, args),
            None => logs(&paths, args),
        },
        Command::Events(args) => crate::events::events(cli, &paths, args),
        Command::Config(args) => config(cli, &paths, args),
        Command::Token(args) => crate::token::run(cli, &paths, args),
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&crate::stack::schema())?);
            Ok(code::OK)
        }
        Command::Diff(args) => crate::stack::diff(cli, &paths, args),
        Command::Apply(args) => crate::stack::apply(cli, &paths, args),
        Command::Up(args) => crate::stack::up(cli, &paths, args),
        Command::Down(args) => crate::stack::down(cli, &paths, args),
        Command::Completions { shell } => {
            let name = if crate::program_name() == "monitor_watcher" { "monitor_watcher" } else { "process_monitor" };
            let mut command = Cli::command().name(name).bin_name(name);
            clap_complete::generate(*shell, &mut command, name, &mut std::io::stdout());
            Ok(code::OK)
        }
        Command::SystemdUnit { user } => {
            print!("{}", systemd_unit(&paths, *user)?);
            Ok(code::OK)
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Start,
    Stop,
    Restart,
    Enable,
    Disable,
    Deregister,
}

fn act(cli: &Cli, paths: &Paths, args: &IdArgs, action: Action) -> anyhow::Result<u8> {
    let id = args.id.as_str();
    let status = match remote(cli, &args.target)? {
        Some(client) => block_on(async {
            match action {
                Action::Start => client.start(id).await.map(Some),
                Action::Stop => client.stop_with_dependents(id).await.map(|(state, dependents)| {
                    if !dependents.is_empty() && !cli.json {
                        println!("stopped first (they depend on {id}): {}", dependents.join(", "));
                    }
                    Some(state)
                }),
                Action::Restart => client.restart(id).await.map(Some),
                Action::Enable => client.enable(id).await.map(|()| None),
                Action::Disable => client.disable(id).await.map(|()| None),
                Action::Deregister => client.deregister(id).await.map(|()| None),
            }
        })?
        .map(|state| format!("{state}")),
        None => {
            let client = local(paths)?;
            // A lock this user cannot read (another user on the socket) says nothing; the socket call decides.
            let not_running = matches!(client.monitor(), Ok(None));
            let res = match action {
                Action::Start => Some(client.start(id)?.state.to_string()),
                Action::Stop => Some(client.stop(id)?.state.to_string()),
                Action::Restart => Some(client.restart(id)?.state.to_string()),
                Action::Enable => client.enable(id).map(|()| None)?,
                Action::Disable => client.disable(id).map(|()| None)?,
                Action::Deregister => client.deregister(id).map(|()| None)?,
            };
            if not_running && matches!(action, Action::Start | Action::Restart | Action::Enable) && !cli.json {
                eprintln!("note: ProcessMonitor {} is not running; the request is stored", paths.instance_id());
            }
            res
        }
    };
    let verb = format!("{action:?}").to_lowercase();
    if cli.json {
        let mut out = serde_json::json!({"success": true, "processId": id, "action": verb});
        if let Some(state) = &status {
            out["state"] = serde_json::Value::String(state.clone());
        }
        println!("{out}");
    } else {
        match status {
            Some(state) => println!("{}: {verb} -> {}", esc(id), esc(&state)),
            None => println!("{}: {verb} done", esc(id)),
        }
    }
    Ok(code::OK)
}

fn register(cli: &Cli, paths: &Paths, args: &RegisterArgs) -> anyhow::Result<u8> {
    let config = match &args.file {
        Some(file) => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
            };
            serde_json::from_str::<ProcessConfig>(&text).context("not a valid ProcessConfig JSON")?
        }
        None => config_from_flags(args)?,
    };
    let id = config.id.clone();
    match remote(cli, &args.target)? {
        Some(client) => block_on(client.register(config))?,
        None => {
            // The limits need their cgroup controllers; the monitor refuses them too, but only when it starts the
            // process.
            pm_supervisor::cgroup::Containment::probe(paths).check_limits(&config)?;
            local(paths)?.register(config)?
        }
    }
    if cli.json {
        println!("{}", serde_json::json!({"success": true, "processId": id}));
    } else {
        println!("{}: registered", esc(&id));
    }
    Ok(code::OK)
}

/// `config get` / `config set`, locally or through the API; prints JSON either way.
fn config(cli: &Cli, paths: &Paths, args: &ConfigArgs) -> anyhow::Result<u8> {
    let remote = remote(cli, &Target { remote: args.remote.clone() })?;
    if let ConfigAction::Set { key, value } = &args.action {
        let update = settings_update(*key, value)?;
        match &remote {
            Some(client) => block_on(apply_remote(client, update))?,
            None => local(paths)?.update_settings(update)?,
        }
    }
    let settings = match &remote {
        Some(client) => block_on(async {
            Ok::<_, pm_client::Error>(pm_core::Settings {
                standalone_mode: client.is_standalone_mode().await?,
                remote_access: client.get_remote_access().await?,
                partner_discovery: client.get_partner_discovery().await?,
            })
        })?,
        None => local(paths)?.settings()?,
    };
    let key = match &args.action {
        ConfigAction::Get { key } => *key,
        ConfigAction::Set { key, .. } => Some(*key),
    };
    let remote_access = &settings.remote_access;
    let value = match key {
        None => serde_json::to_value(&settings)?,
        Some(ConfigKey::RemoteAccess) => serde_json::to_value(remote_access)?,
        Some(ConfigKey::TrustedHosts) => serde_json::json!({ "trustedHosts": remote_access.trusted_hosts }),
        Some(ConfigKey::ExecutableWhitelist) => serde_json::json!({ "patterns": remote_access.executable_whitelist }),
        Some(ConfigKey::ExecutableBlacklist) => serde_json::json!({ "patterns": remote_access.executable_blacklist }),
        Some(ConfigKey::StandaloneMode) => serde_json::json!({ "enabled": settings.standalone_mode }),
        Some(ConfigKey::PartnerDiscovery) => serde_json::to_value(&settings.partner_discovery)?,
    };
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(code::OK)
}

fn settings_update(key: ConfigKey, value: &str) -> anyhow::Result<pm_core::SettingsUpdate> {
    use pm_core::SettingsUpdate;
    let list = || -> anyhow::Result<Vec<String>> {
        if value.trim_start().starts_with('[') {
            return serde_json::from_str(value).context("not a JSON array of strings");
        }
        Ok(value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect())
    };
    Ok(match key {
        ConfigKey::RemoteAccess => SettingsUpdate::RemoteAccess(
            serde_json::from_str(value).context("remote-access takes a JSON object of allowRemote* keys")?,
        ),
        ConfigKey::TrustedHosts => SettingsUpdate::TrustedHosts(list()?),
        ConfigKey::ExecutableWhitelist => SettingsUpdate::ExecutableWhitelist(list()?),
        ConfigKey::ExecutableBlacklist => SettingsUpdate::ExecutableBlacklist(list()?),
        ConfigKey::StandaloneMode => {
            SettingsUpdate::StandaloneMode(value.trim().parse().context("standalone-mode takes true or false")?)
        }
        ConfigKey::PartnerDiscovery => SettingsUpdate::PartnerDiscovery(
            serde_json::from_str(value).context("partner-discovery takes a JSON object of its keys")?,
        ),
    })
}

async fn apply_remote(
    client: &RemoteProcessMonitorClient,
    update: pm_core::SettingsUpdate,
) -> Result<(), pm_client::Error> {
    use pm_core::SettingsUpdate;
    match update {
        SettingsUpdate::RemoteAccess(patch) => client.set_remote_access_permissions(patch).await.map(drop),
        SettingsUpdate::TrustedHosts(hosts) => client.set_trusted_hosts(hosts).await,
        SettingsUpdate::ExecutableWhitelist(patterns) => client.set_remote_executable_whitelist(patterns).await,
        SettingsUpdate::ExecutableBlacklist(patterns) => client.set_remote_executable_blacklist(patterns).await,
        SettingsUpdate::StandaloneMode(on) => client.set_standalone_mode(on).await,
        SettingsUpdate::PartnerDiscovery(patch) => client.set_partner_discovery(patch).await.map(drop),
    }
}

fn config_from_flags(args: &RegisterArgs) -> anyhow::Result<ProcessConfig> {
    let id = args.id.as_deref().context("--id is required")?;
    let command = args.command.as_deref().context("--command is required")?;
    let mut config = ProcessConfig::new(id, args.name.as_deref().unwrap_or(id), command);
    config.args = args.args.clone();
    config.working_directory = args.cwd.clone();
    if !args.env.is_empty() {
        let mut env = BTreeMap::new();
        for pair in &args.env {
            let (key, value) = pair.split_once('=').with_context(|| format!("--env {pair:?} is not NAME=VALUE"))?;
            env.insert(key.to_owned(), value.to_owned());
        }
        config.environment = Some(env);
    }
    config.autostart = !args.no_autostart;
    for pair in &args.depends_on {
        let (dep, condition) =
            pair.rsplit_once(':').with_context(|| format!("--depends-on {pair:?} is not ID:CONDITION (db:healthy)"))?;
        config.depends_on.insert(dep.to_owned(), condition.parse()?);
    }
    config.dependency_timeout_ms = args.dependency_timeout_ms;
    config.restart_dependents = args.restart_dependents;
    if args.max_attempts.is_some() || args.backoff_ms.is_some() || args.retry_indefinitely || args.restart_on.is_some()
    {
        let mut policy = RestartPolicy::default();
        if let Some(n) = args.max_attempts {
            policy.max_attempts = n;
        }
        if let Some(backoff) = &args.backoff_ms {
            policy.backoff_intervals_ms = backoff.clone();
        }
        policy.retry_indefinitely = args.retry_indefinitely;
        if let Some(restart_on) = &args.restart_on {
            policy.restart_on = serde_json::from_value(serde_json::Value::String(restart_on.clone()))
                .with_context(|| format!("--restart-on {restart_on:?} (must be always, failure or never)"))?;
        }
        config.restart_policy = Some(policy);
    }
    if let Some(url) = &args.check_url {
        let mut check = AlivenessCheck::new(url);
        if let Some(ms) = args.check_interval_ms {
            check.interval_ms = ms;
        }
        config.aliveness_check = Some(check);
    }
    config.stop_timeout_ms = args.stop_timeout_ms;
    config.memory_max_bytes = args.memory_max_bytes;
    config.cpu_max_percent = args.cpu_max_percent;
    config.pids_max = args.pids_max;
    config.memory_restart_bytes = args.memory_restart_bytes;
    config.track_daemonized_children = args.track_daemonized_children;
    config.validate()?;
    Ok(config)
}

/// Uptime (from the stored start) and resident memory (from /proc) of running processes, which the registry
/// does not hold.
fn add_local_figures<'a>(statuses: impl Iterator<Item = &'a mut ProcessStatus>) {
    let statuses: Vec<&mut ProcessStatus> = statuses.collect();
    let pgids: Vec<u32> = statuses.iter().filter_map(|status| status.pid).collect();
    let memory = pm_supervisor::group_memory(&pgids);
    let now = pm_core::Timestamp::now().unix_millis();
    for status in statuses {
        let Some(pid) = status.pid else { continue };
        status.memory_bytes = memory.get(&pid).copied();
        status.uptime =
            status.last_started_at.map(|at| u64::try_from((now - at.unix_millis()).max(0) / 1000).unwrap_or(0));
    }
}

pub(crate) fn local(paths: &Paths) -> anyhow::Result<ProcessMonitorClient> {
    Ok(ProcessMonitorClient::in_directory(paths.root(), paths.instance_id())?)
}

fn remote(cli: &Cli, target: &Target) -> anyhow::Result<Option<RemoteProcessMonitorClient>> {
    match &target.remote {
        Some(url) => Ok(Some(RemoteProcessMonitorClient::with_options(pm_client::RemoteClientOptions {
            base_url: url.clone(),
            token: cli.token.clone().filter(|token| !token.trim().is_empty()),
            ..pm_client::RemoteClientOptions::default()
        })?)),
        None => Ok(None),
    }
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(future)
}

fn print_list(json: bool, statuses: &BTreeMap<String, ProcessStatus>) -> anyhow::Result<u8> {
    if json {
        let list: Vec<&ProcessStatus> = statuses.values().collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "processes": list }))?);
        return Ok(code::OK);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:<9} {:>8} {:>8} {:>9} {:>8}  COMMAND",
        "ID", "STATE", "PID", "RESTARTS", "UPTIME", "ENABLED"
    )?;
    for status in statuses.values() {
        writeln!(
            out,
            "{:<24} {:<9} {:>8} {:>8} {:>9} {:>8}  {}",
            esc(&status.id),
            status.state,
            status.pid.map(|pid| pid.to_string()).unwrap_or_else(|| "-".to_owned()),
            status.restart_attempts,
            status.uptime.map(human_duration).unwrap_or_else(|| "-".to_owned()),
            if status.enabled { "yes" } else { "no" },
            esc(status.command.as_deref().unwrap_or("")),
        )?;
    }
    Ok(code::OK)
}

fn print_one(json: bool, status: &ProcessStatus) -> anyhow::Result<u8> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(code::OK);
    }
    println!("{} ({})", esc(&status.id), esc(&status.name));
    println!("  state:     {}", status.state);
    if let Some(pid) = status.pid {
        println!("  pid:       {pid}");
    }
    if let Some(uptime) = status.uptime {
        println!("  uptime:    {}", human_duration(uptime));
    }
    if let Some(cpu) = status.cpu_percent {
        println!("  cpu:       {cpu:.1}%");
    }
    if let Some(memory) = status.memory_bytes {
        println!("  memory:    {}", human_bytes(memory));
    }
    println!("  enabled:   {}  autostart: {}  remote: {}", status.enabled, status.autostart, status.is_remote);
    println!("  restarts:  {}", status.restart_attempts);
    if let Some(at) = status.last_started_at {
        println!("  started:   {at}");
    }
    if let Some(at) = status.last_stopped_at {
        println!("  stopped:   {at}");
    }
    if let Some(code) = status.last_exit_code {
        println!("  exit code: {code}");
    }
    if let Some(signal) = status.last_signal {
        println!("  signal:    {signal}");
    }
    if let Some(error) = &status.last_error {
        println!("  error:     {}", esc(error));
    }
    Ok(code::OK)
}

/// Text from the registry or a (possibly remote) monitor, made safe for a terminal: control characters escaped.
pub(crate) fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    pm_core::escape_control(text)
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..=1023 => format!("{bytes}B"),
        1024..=1_048_575 => format!("{:.1}K", bytes as f64 / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1}M", bytes as f64 / 1_048_576.0),
        _ => format!("{:.1}G", bytes as f64 / 1_073_741_824.0),
    }
}

fn human_duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{}s", secs / 60, secs % 60),
        3600..=86399 => format!("{}h{}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d{}h", secs / 86400, (secs % 86400) / 3600),
    }
}

/// The newest run folder of a process, if any.
fn newest_run(paths: &Paths, id: &str) -> Option<PathBuf> {
    paths.newest_run_dir(id)
}

/// Prints the last lines of the newest run's log; with `follow`, keeps printing, moving on to the next run
/// folder when the process restarts.
fn logs(paths: &Paths, args: &LogsArgs) -> anyhow::Result<u8> {
    pm_core::validate_process_id(&args.id)?;
    let file_name = if args.stderr { "stderr.log" } else { "stdout.log" };
    let Some(mut run) = newest_run(paths, &args.id) else {
        anyhow::bail!("no logs for {} in {}", args.id, paths.process_logs_dir(&args.id).display());
    };
    let mut out = std::io::stdout().lock();
    let path = run.join(file_name);
    let text = std::fs::read(&path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[lines.len().saturating_sub(args.lines)..] {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    if !args.follow {
        return Ok(code::OK);
    }
    let mut offset = text.len() as u64;
    loop {
        offset = print_from(&run.join(file_name), offset, &mut out)?;
        if let Some(newer) = newest_run(paths, &args.id).filter(|newer| *newer != run) {
            // Drain what the old run wrote last, then follow the new one from its start.
            print_from(&run.join(file_name), offset, &mut out)?;
            run = newer;
            offset = 0;
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints complete lines of `path` from `offset`; answers the offset after the last printed line.
fn print_from(path: &Path, offset: u64, out: &mut impl Write) -> anyhow::Result<u64> {
    let Ok(mut file) = std::fs::File::open(path) else { return Ok(offset) };
    let len = file.metadata()?.len();
    let offset = if len < offset { 0 } else { offset };
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut reader = std::io::BufReader::new(file);
    let mut consumed = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        out.write_all(&line)?;
        consumed += n as u64;
    }
    out.flush()?;
    Ok(consumed)
}

/// One argument of a systemd `ExecStart=` line: double-quoted, with `\\`, `"`, `%` and `$` escaped.
fn systemd_quote(arg: &str) -> String {
    let escaped = arg.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%").replace('$', "$$");
    format!("\"{escaped}\"")
}

fn systemd_unit(paths: &Paths, user: bool) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let wanted_by = if user { "default.target" } else { "multi-user.target" };
    Ok(format!(
        "[Unit]\n\
         Description=ProcessMonitor ({id})\n\
         After=network.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exe} --foreground --instance-id {id} --directory {dir}\n\
         # A cgroup per managed process below the service's own (see docs/containment.md); the monitor stops\n\
         # them itself, and after a crash or a self-restart its successor adopts them.\n\
         Delegate=yes\n\
         KillMode=process\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy={wanted_by}\n",
        id = paths.instance_id(),
        exe = systemd_quote(&exe.to_string_lossy()),
        dir = systemd_quote(&paths.root().to_string_lossy()),
    ))
}
