//! Process commands (`list`, `start`, `logs`, ...): through the local registry by default, or the HTTP API
//! with `--remote URL`.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::CommandFactory;
use pm_core::{AlivenessCheck, ProcessConfig, ProcessStatus, RestartPolicy};
use pm_registry::Paths;

use crate::cli::{Cli, Command, ConfigAction, ConfigArgs, ConfigKey, LogsArgs, RegisterArgs, Target};
use crate::client::{Action, Client};
use crate::code;

pub(crate) fn run(cli: &Cli, instance_id: &str, command: &Command) -> anyhow::Result<u8> {
    let paths = Paths::resolve(cli.directory.as_deref(), instance_id)?;
    let target = |target: &Target| Client::resolve(cli, &paths, target.remote.as_deref());
    match command {
        Command::List(list) => print_list(cli.json, &target(list)?.all_status()?),
        Command::Status(args) => print_one(cli.json, &target(&args.target)?.status(&args.id)?),
        Command::Start(args) => act(cli, &target(&args.target)?, &args.id, Action::Start),
        Command::Stop(args) => act(cli, &target(&args.target)?, &args.id, Action::Stop),
        Command::Restart(args) => act(cli, &target(&args.target)?, &args.id, Action::Restart),
        Command::Enable(args) => act(cli, &target(&args.target)?, &args.id, Action::Enable),
        Command::Disable(args) => act(cli, &target(&args.target)?, &args.id, Action::Disable),
        Command::Deregister(args) => {
            let action = if args.force { Action::DeregisterForced } else { Action::Deregister };
            act(cli, &target(&args.target)?, &args.id, action)
        }
        Command::Register(args) => register(cli, &paths, args),
        Command::Logs(args) => target(&args.target)?.print_logs(args),
        Command::Events(args) => crate::events::events(cli, &paths, args),
        Command::Config(args) => config(&Client::resolve(cli, &paths, args.remote.as_deref())?, args),
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

fn act(cli: &Cli, client: &Client, id: &str, action: Action) -> anyhow::Result<u8> {
    let outcome = client.act(id, action)?;
    if !outcome.stopped_first.is_empty() && !cli.json {
        println!("stopped first (they depend on {id}): {}", outcome.stopped_first.join(", "));
    }
    if let Some(instance) = outcome.stored_in.as_deref().filter(|_| !cli.json) {
        eprintln!("note: ProcessMonitor {instance} is not running; the request is stored");
    }
    let verb = action.verb();
    if cli.json {
        let mut out = serde_json::json!({"success": true, "processId": id, "action": verb});
        if let Some(state) = &outcome.state {
            out["state"] = serde_json::Value::String(state.clone());
        }
        if !outcome.stopped_first.is_empty() {
            out["stoppedDependents"] = serde_json::json!(outcome.stopped_first);
        }
        println!("{out}");
    } else {
        match outcome.state {
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
    Client::resolve(cli, paths, args.target.remote.as_deref())?.register(config)?;
    if cli.json {
        println!("{}", serde_json::json!({"success": true, "processId": id}));
    } else {
        println!("{}: registered", esc(&id));
    }
    Ok(code::OK)
}

/// `config get` / `config set`, locally or through the API; prints JSON either way.
fn config(client: &Client, args: &ConfigArgs) -> anyhow::Result<u8> {
    if let ConfigAction::Set { key, value } = &args.action {
        client.update_settings(settings_update(*key, value)?)?;
    }
    let settings = client.settings()?;
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
        config.aliveness_check = Some(Box::new(check));
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
            // (The state's Display ignores widths.)
            status.state.to_string(),
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
    if let Some(waiting_for) = status.waiting_for.as_ref().filter(|waiting_for| !waiting_for.is_empty()) {
        let what: Vec<String> =
            waiting_for.iter().map(|(dep, condition)| format!("{} ({condition})", esc(dep))).collect();
        println!("  waiting:   for {}", what.join(", "));
    }
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
pub(crate) fn local_logs(paths: &Paths, args: &LogsArgs) -> anyhow::Result<u8> {
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
