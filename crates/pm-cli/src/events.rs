//! `events` (the monitor's event stream) and `logs --remote` (a process's log over the HTTP API).

use std::io::Write;

use anyhow::Context;
use pm_client::{EventsOptions, LogsOptions, RemoteProcessMonitorClient};
use pm_core::{Event, EventKind};
use pm_registry::Paths;

use crate::cli::{Cli, EventsArgs, LogsArgs};
use crate::code;

/// Prints events as they come until interrupted (or the stream fails for good).
pub(crate) fn events(cli: &Cli, paths: &Paths, args: &EventsArgs) -> anyhow::Result<u8> {
    let options =
        EventsOptions { process: args.process.clone(), last_event_id: args.since.clone(), ..Default::default() };
    if args.remote.is_none() {
        // This instance's own monitor: through its unix socket while it listens there (no port, no token needed,
        // works with remote access off), else its TCP port below.
        let local = pm_client::ProcessMonitorClient::in_directory(paths.root(), paths.instance_id())?;
        if local.socket_listens() {
            return print_events(cli.json, move || local.events(options));
        }
    }
    let url = match &args.remote {
        Some(url) => url.clone(),
        None => {
            // This instance's own API, on loopback, at the port its registry names.
            let settings = pm_client::ProcessMonitorClient::in_directory(paths.root(), paths.instance_id())?
                .settings()
                .context("cannot read this instance's settings (use --remote URL to watch another monitor)")?;
            format!("http://127.0.0.1:{}", settings.remote_access.remote_port)
        }
    };
    let client = crate::client::remote_client(cli, &url)?;
    print_events(cli.json, move || client.events(options))
}

/// Prints the events of the stream `open` makes (inside the runtime) until it ends.
fn print_events(
    json: bool,
    open: impl FnOnce() -> Result<pm_client::EventStream, pm_client::Error> + Send + 'static,
) -> anyhow::Result<u8> {
    crate::block_on(async move {
        let mut stream = open()?;
        let mut out = std::io::stdout();
        while let Some(event) = stream.next().await {
            let event = event?;
            let line = if json { serde_json::to_string(&event)? } else { describe(&event) };
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        Ok::<_, anyhow::Error>(code::OK)
    })?
}

/// `logs --remote`: the tail of a log, followed with `-f`.
pub(crate) fn remote_logs(client: &RemoteProcessMonitorClient, args: &LogsArgs) -> anyhow::Result<u8> {
    // A followed log reconnects by itself (as `events` does) and skips what it already printed.
    let options = LogsOptions {
        stderr: args.stderr,
        tail: Some(args.lines),
        follow: args.follow,
        run: args.run.clone(),
        ..LogsOptions::default()
    };
    let id = args.id.clone();
    crate::block_on(async move {
        let mut stream = client.logs(&id, options).await?;
        let mut out = std::io::stdout();
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?)?;
            out.flush()?;
        }
        Ok::<_, anyhow::Error>(code::OK)
    })?
}

/// One line for a person: time, subject, what happened. Control characters in texts from the monitor are escaped.
fn describe(event: &Event) -> String {
    let time = serde_json::to_value(event.time).ok().and_then(|it| it.as_str().map(str::to_owned)).unwrap_or_default();
    let what = match &event.kind {
        EventKind::State { process_id, from, to, pid, reason, exit_code, signal } => {
            let mut line = format!("{process_id}: {from} -> {to} ({})", clean(reason));
            if let Some(pid) = pid {
                line.push_str(&format!(" pid {pid}"));
            }
            if let Some(code) = exit_code {
                line.push_str(&format!(" exit code {code}"));
            }
            if let Some(signal) = signal {
                line.push_str(&format!(" signal {signal}"));
            }
            line
        }
        EventKind::RestartScheduled { process_id, attempt, delay_ms } => {
            format!("{process_id}: restart {attempt} in {delay_ms} ms")
        }
        EventKind::CheckFailed { process_id, consecutive_failures } => {
            format!("{process_id}: check failed ({consecutive_failures} in a row)")
        }
        EventKind::CheckPassed { process_id } => format!("{process_id}: check passed"),
        EventKind::Registered { process_id } => format!("{process_id}: registered"),
        EventKind::Deregistered { process_id } => format!("{process_id}: deregistered"),
        EventKind::ConfigChanged { process_id, fields } => {
            format!("{process_id}: configuration changed ({})", clean(&fields.join(", ")))
        }
        EventKind::PartnerUp { partner_instance_id, pid } => match pid {
            Some(pid) => format!("partner {partner_instance_id} up, pid {pid}"),
            None => format!("partner {partner_instance_id} up"),
        },
        EventKind::PartnerDown { partner_instance_id, reason } => {
            format!("partner {partner_instance_id} down ({})", clean(reason))
        }
        EventKind::MonitorRestart {} => "monitor restarting".to_owned(),
        EventKind::StandaloneChanged { enabled } => format!("standalone mode {}", if *enabled { "on" } else { "off" }),
        EventKind::Gap { last_event_id, .. } => {
            format!("(events after {} were missed; the monitor no longer holds them)", clean(last_event_id))
        }
        EventKind::Cut { reason } => format!("(stream cut: {}; reconnecting)", clean(reason)),
    };
    format!("{time} {what}")
}

fn clean(text: &str) -> String {
    text.chars().map(|ch| if ch.is_control() { ch.escape_default().to_string() } else { ch.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use pm_core::{ProcessState, Timestamp};

    use super::*;

    #[test]
    fn lines_for_people() {
        let event = Event {
            id: "1-1".to_owned(),
            time: Timestamp::now(),
            kind: EventKind::State {
                process_id: "api".to_owned(),
                from: ProcessState::Running,
                to: ProcessState::Crashed,
                pid: Some(7),
                reason: "killed by signal 9\n\x1b[2J".to_owned(),
                exit_code: None,
                signal: Some(9),
            },
        };
        let line = describe(&event);
        assert!(line.ends_with("api: running -> crashed (killed by signal 9\\n\\u{1b}[2J) pid 7 signal 9"), "{line}");
    }
}
