//! The client of one process command, resolved once from its target: this host's instance (its unix socket while
//! a monitor listens there, else its registry) or the HTTP API at `--remote URL`. The commands call it without
//! knowing which; remote calls run on the program's one async runtime ([`crate::block_on`]).

use std::collections::BTreeMap;

use pm_client::{ProcessMonitorClient, RemoteProcessMonitorClient};
use pm_core::{ProcessConfig, ProcessStatus, Settings, SettingsUpdate};
use pm_registry::Paths;

use crate::cli::{Cli, LogsArgs};

/// Where a command sends its calls.
pub(crate) enum Client {
    /// This host's instance (blocking calls).
    Local(ProcessMonitorClient),
    /// A monitor's HTTP API.
    Remote(RemoteProcessMonitorClient),
}

/// A process action of the command line.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action {
    Start,
    Stop,
    Restart,
    Enable,
    Disable,
    Deregister,
    /// `deregister --force`: even when others depend on it.
    DeregisterForced,
}

impl Action {
    /// The command's name, as its answer prints it.
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Enable => "enable",
            Action::Disable => "disable",
            Action::Deregister | Action::DeregisterForced => "deregister",
        }
    }
}

/// What an action did, as the command reports it.
pub(crate) struct Outcome {
    /// The process's state after it (start, stop, restart).
    pub(crate) state: Option<String>,
    /// Processes stopped first because they depend on the stopped one (said by the running monitor).
    pub(crate) stopped_first: Vec<String>,
    /// The instance whose monitor is not running, when the request is stored for when it starts (start, restart,
    /// enable on this host).
    pub(crate) stored_in: Option<String>,
}

impl Client {
    /// The client of `paths`' instance, or of the monitor at `remote`.
    pub(crate) fn resolve(cli: &Cli, paths: &Paths, remote: Option<&str>) -> anyhow::Result<Client> {
        Ok(match remote {
            Some(url) => Client::Remote(remote_client(cli, url)?),
            None => Client::Local(local(paths)?),
        })
    }

    /// Every process's status; a local one with uptime and memory added from this host.
    pub(crate) fn all_status(&self) -> anyhow::Result<BTreeMap<String, ProcessStatus>> {
        Ok(match self {
            Client::Local(client) => {
                let mut statuses = client.get_all_status()?;
                add_local_figures(statuses.values_mut());
                statuses
            }
            Client::Remote(client) => crate::block_on(client.get_all_status())??,
        })
    }

    /// One process's status; a local one with uptime and memory added from this host.
    pub(crate) fn status(&self, id: &str) -> anyhow::Result<ProcessStatus> {
        Ok(match self {
            Client::Local(client) => {
                let mut status = client.get_status(id)?;
                add_local_figures(std::iter::once(&mut status));
                status
            }
            Client::Remote(client) => crate::block_on(client.get_status(id))??,
        })
    }

    /// Carries `action` out on process `id`.
    pub(crate) fn act(&self, id: &str, action: Action) -> anyhow::Result<Outcome> {
        match self {
            Client::Local(client) => act_locally(client, id, action),
            Client::Remote(client) => crate::block_on(act_remotely(client, id, action))?,
        }
    }

    /// Registers a process; locally, resource limits whose cgroup controllers this host lacks are refused first
    /// (the monitor refuses them too, but only when it starts the process).
    pub(crate) fn register(&self, config: ProcessConfig) -> anyhow::Result<()> {
        match self {
            Client::Local(client) => {
                pm_supervisor::cgroup::Containment::probe(client.paths()).check_limits(&config)?;
                client.register(config)?;
            }
            Client::Remote(client) => crate::block_on(client.register(config))??,
        }
        Ok(())
    }

    /// The monitor-wide settings.
    pub(crate) fn settings(&self) -> anyhow::Result<Settings> {
        Ok(match self {
            Client::Local(client) => client.settings()?,
            Client::Remote(client) => crate::block_on(async {
                Ok::<_, pm_client::Error>(Settings {
                    standalone_mode: client.is_standalone_mode().await?,
                    remote_access: client.get_remote_access().await?,
                    partner_discovery: client.get_partner_discovery().await?,
                })
            })??,
        })
    }

    /// Prints the tail of a process's log, following it with `-f`: from the run folders on this host, or streamed
    /// from the monitor.
    pub(crate) fn print_logs(&self, args: &LogsArgs) -> anyhow::Result<u8> {
        match self {
            Client::Local(client) => crate::commands::local_logs(client.paths(), args),
            Client::Remote(client) => crate::events::remote_logs(client, args),
        }
    }

    /// Applies one change to the monitor-wide settings.
    pub(crate) fn update_settings(&self, update: SettingsUpdate) -> anyhow::Result<()> {
        match self {
            Client::Local(client) => client.update_settings(update)?,
            Client::Remote(client) => crate::block_on(update_remotely(client, update))??,
        }
        Ok(())
    }
}

fn act_locally(client: &ProcessMonitorClient, id: &str, action: Action) -> anyhow::Result<Outcome> {
    // A lock this user cannot read (another user on the socket) says nothing; the socket call decides.
    let not_running = matches!(client.monitor(), Ok(None));
    let mut stopped_first = Vec::new();
    let state = match action {
        Action::Start => Some(client.start(id)?.state.to_string()),
        Action::Stop => {
            let (status, dependents) = client.stop_with_dependents(id)?;
            stopped_first = dependents;
            Some(status.state.to_string())
        }
        Action::Restart => Some(client.restart(id)?.state.to_string()),
        Action::Enable => client.enable(id).map(|()| None)?,
        Action::Disable => client.disable(id).map(|()| None)?,
        Action::Deregister => client.deregister(id).map(|()| None).map_err(force_hint)?,
        Action::DeregisterForced => client.deregister_forced(id).map(|()| None)?,
    };
    let stored = not_running && matches!(action, Action::Start | Action::Restart | Action::Enable);
    let stored_in = stored.then(|| client.paths().instance_id().to_owned());
    Ok(Outcome { state, stopped_first, stored_in })
}

async fn act_remotely(client: &RemoteProcessMonitorClient, id: &str, action: Action) -> anyhow::Result<Outcome> {
    let mut stopped_first = Vec::new();
    let state = match action {
        Action::Start => Some(client.start(id).await?),
        Action::Stop => {
            let (state, dependents) = client.stop_with_dependents(id).await?;
            stopped_first = dependents;
            Some(state)
        }
        Action::Restart => Some(client.restart(id).await?),
        Action::Enable => client.enable(id).await.map(|()| None)?,
        Action::Disable => client.disable(id).await.map(|()| None)?,
        Action::Deregister => client.deregister(id).await.map(|()| None).map_err(force_hint)?,
        Action::DeregisterForced => client.deregister_forced(id).await.map(|()| None)?,
    };
    Ok(Outcome { state: state.map(|state| state.to_string()), stopped_first, stored_in: None })
}

/// A refused deregistration names the command line's way round it (the monitor names its API's).
fn force_hint(err: pm_client::Error) -> pm_client::Error {
    match err {
        pm_client::Error::Conflict(message) => pm_client::Error::Conflict(
            message.replace("or use ?force=true", "or use --force").replace("or force it", "or use --force"),
        ),
        other => other,
    }
}

async fn update_remotely(client: &RemoteProcessMonitorClient, update: SettingsUpdate) -> Result<(), pm_client::Error> {
    match update {
        SettingsUpdate::RemoteAccess(patch) => client.set_remote_access_permissions(patch).await.map(drop),
        SettingsUpdate::TrustedHosts(hosts) => client.set_trusted_hosts(hosts).await,
        SettingsUpdate::ExecutableWhitelist(patterns) => client.set_remote_executable_whitelist(patterns).await,
        SettingsUpdate::ExecutableBlacklist(patterns) => client.set_remote_executable_blacklist(patterns).await,
        SettingsUpdate::StandaloneMode(on) => client.set_standalone_mode(on).await,
        SettingsUpdate::PartnerDiscovery(patch) => client.set_partner_discovery(patch).await.map(drop),
    }
}

/// The local client of `paths`' instance.
pub(crate) fn local(paths: &Paths) -> anyhow::Result<ProcessMonitorClient> {
    Ok(ProcessMonitorClient::in_directory(paths.root(), paths.instance_id())?)
}

/// The HTTP client of the monitor at `url`, with the command line's bearer token (`--token`), if any.
pub(crate) fn remote_client(cli: &Cli, url: &str) -> anyhow::Result<RemoteProcessMonitorClient> {
    Ok(RemoteProcessMonitorClient::with_options(pm_client::RemoteClientOptions {
        base_url: url.to_owned(),
        token: cli.token.clone().filter(|token| !token.trim().is_empty()),
        ..pm_client::RemoteClientOptions::default()
    })?)
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
