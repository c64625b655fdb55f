//! The registry document `processes_{instanceId}.json` and its parts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ProcessConfig, ProcessState, ProcessStatus, Timestamp};

/// Id of the main instance.
pub const DEFAULT_INSTANCE: &str = "default";
/// Id of the instance that guards the main one.
pub const WATCHER_INSTANCE: &str = "watcher";

fn yes() -> bool {
    true
}

/// The whole registry of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    /// Format version (1).
    #[serde(default = "Registry::version")]
    pub version: u32,
    /// When the file was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<Timestamp>,
    /// The instance this registry belongs to.
    pub instance_id: String,
    /// Interval of the monitor's housekeeping tick.
    #[serde(default = "Registry::monitor_interval_ms")]
    pub monitor_interval_ms: u64,
    /// No partner monitoring when set.
    #[serde(default)]
    pub standalone_mode: bool,
    /// How the partner instance is found and watched.
    #[serde(default)]
    pub partner_discovery: PartnerDiscovery,
    /// The remote API and its permissions.
    #[serde(default)]
    pub remote_access: RemoteAccessConfig,
    /// The aliveness server.
    #[serde(default)]
    pub aliveness_server: AlivenessServerConfig,
    /// Managed processes by id.
    #[serde(default)]
    pub processes: BTreeMap<String, ProcessEntry>,
    /// Keys this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Registry {
    fn version() -> u32 {
        1
    }
    fn monitor_interval_ms() -> u64 {
        5000
    }

    /// The registry a first start creates for `instance_id`: the guide's ports and partners for `default` and
    /// `watcher`; other ids get the default instance's settings with partner discovery off.
    pub fn new_default(instance_id: &str) -> Registry {
        let watcher = instance_id == WATCHER_INSTANCE;
        let (remote_port, aliveness_port) = if watcher { (19882, 19884) } else { (19881, 19883) };
        let partner_discovery = if watcher {
            PartnerDiscovery::for_partner(DEFAULT_INSTANCE, 19883, true)
        } else if instance_id == DEFAULT_INSTANCE {
            PartnerDiscovery::for_partner(WATCHER_INSTANCE, 19884, false)
        } else {
            PartnerDiscovery::default()
        };
        Registry {
            version: 1,
            last_modified: None,
            instance_id: instance_id.to_owned(),
            monitor_interval_ms: Self::monitor_interval_ms(),
            standalone_mode: false,
            partner_discovery,
            remote_access: RemoteAccessConfig { remote_port, ..RemoteAccessConfig::default() },
            aliveness_server: AlivenessServerConfig { port: aliveness_port, ..AlivenessServerConfig::default() },
            processes: BTreeMap::new(),
            extra: Map::new(),
        }
    }
}

/// One managed process: its configuration plus what the monitor observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessEntry {
    /// The desired configuration.
    #[serde(flatten)]
    pub config: ProcessConfig,
    /// When it was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<Timestamp>,
    /// Last start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started_at: Option<Timestamp>,
    /// Last stop or exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stopped_at: Option<Timestamp>,
    /// PID of the running child (also the id of its process group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Start time of `pid` as the OS reports it, to tell the process from a later one that reuses the PID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_time: Option<u64>,
    /// Current state.
    #[serde(default)]
    pub state: ProcessState,
    /// Restarts since the last reset.
    #[serde(default)]
    pub restart_attempts: u32,
    /// Aliveness-check failures in a row.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Exit code of the last exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    /// Signal that ended the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_signal: Option<i32>,
    /// Why the last start or run failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// A request of a local client that the monitor has not taken up yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_action: Option<PendingAction>,
    /// Keys this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ProcessEntry {
    /// A newly registered entry (stopped, counters zero).
    pub fn new(config: ProcessConfig, registered_at: Timestamp) -> ProcessEntry {
        ProcessEntry {
            state: if config.enabled { ProcessState::Stopped } else { ProcessState::Disabled },
            config,
            registered_at: Some(registered_at),
            last_started_at: None,
            last_stopped_at: None,
            pid: None,
            pid_start_time: None,
            restart_attempts: 0,
            consecutive_failures: 0,
            last_exit_code: None,
            last_signal: None,
            last_error: None,
            pending_action: None,
            extra: Map::new(),
        }
    }

    /// The API view of this entry.
    pub fn status(&self) -> ProcessStatus {
        ProcessStatus {
            id: self.config.id.clone(),
            name: self.config.name.clone(),
            state: self.state,
            enabled: self.config.enabled,
            autostart: self.config.autostart,
            is_remote: self.config.is_remote,
            pid: if self.state.has_child() { self.pid } else { None },
            last_started_at: self.last_started_at,
            last_stopped_at: self.last_stopped_at,
            restart_attempts: self.restart_attempts,
            command: Some(self.config.command.clone()),
            last_exit_code: self.last_exit_code,
            last_signal: self.last_signal,
            last_error: self.last_error.clone(),
            uptime: None,
            cpu_percent: None,
            memory_bytes: None,
        }
    }
}

/// A local client's request, left in the registry for the monitor to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PendingAction {
    /// Start (a no-op when running).
    Start,
    /// Stop.
    Stop,
    /// Stop, then start.
    Restart,
}

/// How the partner instance is found and watched (wire name `partnerDiscovery`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartnerDiscovery {
    /// The partner's instance id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_instance_id: Option<String>,
    /// The partner's aliveness port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_aliveness_port: Option<u16>,
    /// The partner's status URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_status_url: Option<String>,
    /// Look for the partner when this instance starts, and supervise it once found.
    #[serde(default)]
    pub discovery_on_startup: bool,
    /// Start the partner when it is not running.
    #[serde(default)]
    pub start_partner_if_missing: bool,
    /// Time between partner checks (additive; 3000 by default).
    #[serde(default = "PartnerDiscovery::default_interval_ms")]
    pub check_interval_ms: u64,
    /// Failed checks in a row before the partner is restarted (additive; 2 by default).
    #[serde(default = "PartnerDiscovery::default_failures")]
    pub failures_before_restart: u32,
}

impl PartnerDiscovery {
    fn default_interval_ms() -> u64 {
        3000
    }
    fn default_failures() -> u32 {
        2
    }

    /// Discovery settings for a partner with the given id and aliveness port.
    pub fn for_partner(partner_id: &str, aliveness_port: u16, enabled: bool) -> PartnerDiscovery {
        PartnerDiscovery {
            partner_instance_id: Some(partner_id.to_owned()),
            partner_aliveness_port: Some(aliveness_port),
            partner_status_url: Some(format!("http://localhost:{aliveness_port}/status")),
            discovery_on_startup: enabled,
            start_partner_if_missing: enabled,
            check_interval_ms: Self::default_interval_ms(),
            failures_before_restart: Self::default_failures(),
        }
    }

    /// Applies the keys given in `patch`.
    pub fn apply(&mut self, patch: &PartnerDiscoveryPatch) {
        if let Some(id) = &patch.partner_instance_id {
            self.partner_instance_id = Some(id.clone());
        }
        if let Some(port) = patch.partner_aliveness_port {
            self.partner_aliveness_port = Some(port);
        }
        if let Some(url) = &patch.partner_status_url {
            self.partner_status_url = Some(url.clone());
        }
        if let Some(on) = patch.discovery_on_startup {
            self.discovery_on_startup = on;
        }
        if let Some(on) = patch.start_partner_if_missing {
            self.start_partner_if_missing = on;
        }
        if let Some(ms) = patch.check_interval_ms {
            self.check_interval_ms = ms;
        }
        if let Some(n) = patch.failures_before_restart {
            self.failures_before_restart = n;
        }
    }
}

impl Default for PartnerDiscovery {
    fn default() -> Self {
        PartnerDiscovery {
            partner_instance_id: None,
            partner_aliveness_port: None,
            partner_status_url: None,
            discovery_on_startup: false,
            start_partner_if_missing: false,
            check_interval_ms: Self::default_interval_ms(),
            failures_before_restart: Self::default_failures(),
        }
    }
}

/// A partial update of [`PartnerDiscovery`] (`PUT /config/partner-discovery` merges the given keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PartnerDiscoveryPatch {
    pub partner_instance_id: Option<String>,
    pub partner_aliveness_port: Option<u16>,
    pub partner_status_url: Option<String>,
    pub discovery_on_startup: Option<bool>,
    pub start_partner_if_missing: Option<bool>,
    pub check_interval_ms: Option<u64>,
    pub failures_before_restart: Option<u32>,
}

/// The remote API and its permissions (wire name `remoteAccess`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteAccessConfig {
    /// Whether the remote API server runs.
    #[serde(default = "yes")]
    pub start_remote_access: bool,
    /// Its port.
    #[serde(default = "RemoteAccessConfig::default_port")]
    pub remote_port: u16,
    /// Address it binds (additive; `::` = every IPv4 and IPv6 interface).
    #[serde(default = "RemoteAccessConfig::default_bind")]
    pub bind_address: String,
    /// Peers that bypass the permissions below (exact addresses, `*` octet wildcards, hostname patterns).
    #[serde(default = "RemoteAccessConfig::default_trusted_hosts")]
    pub trusted_hosts: Vec<String>,
    /// Untrusted peers may register processes.
    #[serde(default = "yes")]
    pub allow_remote_register: bool,
    /// Untrusted peers may deregister remote processes.
    #[serde(default = "yes")]
    pub allow_remote_deregister: bool,
    /// Untrusted peers may start remote processes.
    #[serde(default = "yes")]
    pub allow_remote_start: bool,
    /// Untrusted peers may stop remote processes.
    #[serde(default = "yes")]
    pub allow_remote_stop: bool,
    /// Untrusted peers may enable and disable remote processes.
    #[serde(default = "yes")]
    pub allow_remote_disable: bool,
    /// Untrusted peers may change autostart of remote processes.
    #[serde(default = "yes")]
    pub allow_remote_autostart: bool,
    /// Untrusted peers may restart the monitor.
    #[serde(default)]
    pub allow_remote_monitor_restart: bool,
    /// Glob patterns an untrusted registration's resolved executable must match.
    #[serde(default)]
    pub executable_whitelist: Vec<String>,
    /// Glob patterns it must not match.
    #[serde(default)]
    pub executable_blacklist: Vec<String>,
}

impl RemoteAccessConfig {
    fn default_port() -> u16 {
        19881
    }
    fn default_bind() -> String {
        "::".to_owned()
    }
    /// The guide's default trusted hosts.
    pub fn default_trusted_hosts() -> Vec<String> {
        ["localhost", "127.0.0.1", "::1", "0.0.0.0"].iter().map(|host| host.to_string()).collect()
    }

    /// Applies the permission keys given in `patch`.
    pub fn apply(&mut self, patch: &RemoteAccessPatch) {
        let pairs = [
            (&mut self.start_remote_access, patch.start_remote_access),
            (&mut self.allow_remote_register, patch.allow_remote_register),
            (&mut self.allow_remote_deregister, patch.allow_remote_deregister),
            (&mut self.allow_remote_start, patch.allow_remote_start),
            (&mut self.allow_remote_stop, patch.allow_remote_stop),
            (&mut self.allow_remote_disable, patch.allow_remote_disable),
            (&mut self.allow_remote_autostart, patch.allow_remote_autostart),
            (&mut self.allow_remote_monitor_restart, patch.allow_remote_monitor_restart),
        ];
        for (field, value) in pairs {
            if let Some(value) = value {
                *field = value;
            }
        }
    }
}

impl Default for RemoteAccessConfig {
    fn default() -> Self {
        RemoteAccessConfig {
            start_remote_access: true,
            remote_port: Self::default_port(),
            bind_address: Self::default_bind(),
            trusted_hosts: Self::default_trusted_hosts(),
            allow_remote_register: true,
            allow_remote_deregister: true,
            allow_remote_start: true,
            allow_remote_stop: true,
            allow_remote_disable: true,
            allow_remote_autostart: true,
            allow_remote_monitor_restart: false,
            executable_whitelist: Vec::new(),
            executable_blacklist: Vec::new(),
        }
    }
}

/// A partial update of the permissions (`PUT /config/remote-access`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RemoteAccessPatch {
    pub start_remote_access: Option<bool>,
    pub allow_remote_register: Option<bool>,
    pub allow_remote_deregister: Option<bool>,
    pub allow_remote_start: Option<bool>,
    pub allow_remote_stop: Option<bool>,
    pub allow_remote_disable: Option<bool>,
    pub allow_remote_autostart: Option<bool>,
    pub allow_remote_monitor_restart: Option<bool>,
}

/// The aliveness server (wire name `alivenessServer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlivenessServerConfig {
    /// Whether it runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Its port.
    #[serde(default = "AlivenessServerConfig::default_port")]
    pub port: u16,
    /// Address it binds (additive; loopback by default).
    #[serde(default = "AlivenessServerConfig::default_bind")]
    pub bind_address: String,
}

impl AlivenessServerConfig {
    fn default_port() -> u16 {
        19883
    }
    fn default_bind() -> String {
        "127.0.0.1".to_owned()
    }
}

impl Default for AlivenessServerConfig {
    fn default() -> Self {
        AlivenessServerConfig { enabled: true, port: Self::default_port(), bind_address: Self::default_bind() }
    }
}
