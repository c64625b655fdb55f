//! The registry document `processes_{instanceId}.json` and its parts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ProcessConfig, ProcessState, ProcessStatus, Timestamp, UnusableEntry};

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
    /// Set while a monitor runs on this registry and cleared by its clean shutdown (additive). A monitor that
    /// finds it set knows its predecessor died: it resumes what ran and starts nothing that was stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub monitor_running: bool,
    /// How the partner instance is found and watched.
    #[serde(default)]
    pub partner_discovery: PartnerDiscovery,
    /// The remote API and its permissions.
    #[serde(default)]
    pub remote_access: RemoteAccessConfig,
    /// The aliveness server.
    #[serde(default)]
    pub aliveness_server: AlivenessServerConfig,
    /// Managed processes by id (each key a valid process id, equal to its entry's `id`).
    #[serde(default, deserialize_with = "processes_by_id")]
    pub processes: BTreeMap<String, ProcessEntry>,
    /// Keys this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Entries of `processes` that cannot run, by key, kept as they are on disk (see [`UnusableEntry`]): not in
    /// [`Registry::processes`], written back in place by [`Registry::to_json_pretty`].
    #[serde(skip)]
    pub unusable: BTreeMap<String, UnusableEntry>,
}

impl Registry {
    fn version() -> u32 {
        1
    }
    fn monitor_interval_ms() -> u64 {
        5000
    }

    /// Parses a registry file. Keys whose default depends on the instance (the ports, the partner) take the
    /// defaults of the file's `instanceId` when absent (a watcher registry without `remoteAccess` listens on 19882,
    /// not on the default instance's 19881); everything else defaults as the serde attributes say. Errors carry
    /// serde_json's line and column.
    ///
    /// An entry that cannot run does not make the whole file unreadable: it is set aside in
    /// [`Registry::unusable`] (see [`UnusableEntry`]) and the rest is parsed.
    pub fn from_json(bytes: &[u8]) -> Result<Registry, serde_json::Error> {
        Registry::from_json_strict(bytes).or_else(|strict| crate::unusable::parse_setting_aside(bytes, strict))
    }

    /// The registry as the file stores it, pretty-printed: its fields, with the [`Registry::unusable`] entries
    /// back in `processes` as they were read. Every write of the file goes through this.
    pub fn to_json_pretty(&self) -> Result<Vec<u8>, serde_json::Error> {
        if self.unusable.is_empty() {
            return serde_json::to_vec_pretty(self);
        }
        serde_json::to_vec_pretty(&crate::unusable::to_value(self)?)
    }

    /// [`Registry::from_json`] without setting unusable entries aside: any problem refuses the whole file.
    pub(crate) fn from_json_strict(bytes: &[u8]) -> Result<Registry, serde_json::Error> {
        let mut registry: Registry = serde_json::from_slice(bytes)?;
        if let Some(id) = &registry.partner_discovery.partner_instance_id {
            if let Err(err) = crate::validate_instance_id(id) {
                return Err(serde::de::Error::custom(format!("partnerDiscovery.partnerInstanceId: {err}")));
            }
        }
        let present: Present = serde_json::from_slice(bytes)?;
        let defaults = Registry::new_default(&registry.instance_id);
        let remote = present.remote_access.unwrap_or_default();
        if !remote.remote_port {
            registry.remote_access.remote_port = defaults.remote_access.remote_port;
        }
        if !present.aliveness_server.unwrap_or_default().port {
            registry.aliveness_server.port = defaults.aliveness_server.port;
        }
        let Some(partner) = present.partner_discovery else {
            registry.partner_discovery = defaults.partner_discovery;
            return Ok(registry);
        };
        let (ours, theirs) = (&mut registry.partner_discovery, defaults.partner_discovery);
        if !partner.partner_instance_id {
            ours.partner_instance_id = theirs.partner_instance_id;
        }
        if !partner.partner_aliveness_port {
            ours.partner_aliveness_port = theirs.partner_aliveness_port;
        }
        if !partner.partner_status_url {
            ours.partner_status_url = theirs.partner_status_url;
        }
        if !partner.discovery_on_startup {
            ours.discovery_on_startup = theirs.discovery_on_startup;
        }
        if !partner.start_partner_if_missing {
            ours.start_partner_if_missing = theirs.start_partner_if_missing;
        }
        Ok(registry)
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
            monitor_running: false,
            partner_discovery,
            remote_access: RemoteAccessConfig { remote_port, ..RemoteAccessConfig::default() },
            aliveness_server: AlivenessServerConfig { port: aliveness_port, ..AlivenessServerConfig::default() },
            processes: BTreeMap::new(),
            extra: Map::new(),
            unusable: BTreeMap::new(),
        }
    }
}

/// The `processes` object, refusing a key that is not a valid process id or differs from its entry's `id` (the
/// monitor, the API and the local client all address an entry by both): the error is raised right after that
/// entry, so its line and column point there.
fn processes_by_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, ProcessEntry>, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = BTreeMap<String, ProcessEntry>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of process entries by id")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            use serde::de::Error as _;
            let mut entries = BTreeMap::new();
            while let Some((key, entry)) = map.next_entry::<String, ProcessEntry>()? {
                if let Err(err) = crate::validate_process_id(&key) {
                    return Err(A::Error::custom(format!("processes: {err}")));
                }
                if entry.config.id != key {
                    return Err(A::Error::custom(format!(
                        "processes: the entry under {key:?} has id {:?}; the key and the id must be the same",
                        entry.config.id
                    )));
                }
                if let Err(err) = entry.config.validate() {
                    return Err(A::Error::custom(format!("processes: entry {key:?}: {err}")));
                }
                if entries.insert(key.clone(), entry).is_some() {
                    return Err(A::Error::custom(format!("processes: {key:?} appears twice")));
                }
            }
            Ok(entries)
        }
    }
    deserializer.deserialize_map(Entries)
}

/// Which instance-dependent keys a registry file gives, `null` included (values skipped unread).
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Present {
    remote_access: Option<PresentRemote>,
    aliveness_server: Option<PresentAliveness>,
    partner_discovery: Option<PresentPartner>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PresentRemote {
    #[serde(default, deserialize_with = "given")]
    remote_port: bool,
}

#[derive(Default, Deserialize)]
struct PresentAliveness {
    #[serde(default, deserialize_with = "given")]
    port: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PresentPartner {
    #[serde(default, deserialize_with = "given")]
    partner_instance_id: bool,
    #[serde(default, deserialize_with = "given")]
    partner_aliveness_port: bool,
    #[serde(default, deserialize_with = "given")]
    partner_status_url: bool,
    #[serde(default, deserialize_with = "given")]
    discovery_on_startup: bool,
    #[serde(default, deserialize_with = "given")]
    start_partner_if_missing: bool,
}

/// True for a key that is there, whatever its value.
fn given<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
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
    /// Dependencies whose condition does not hold yet, while the process waits in `starting` before it is
    /// spawned (additive).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waiting_for: BTreeMap<String, crate::DependencyCondition>,
    /// When the start that is waiting for dependencies was requested (additive; `completedSuccessfully` counts
    /// exits since then, and `dependencyTimeoutMs` runs from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Timestamp>,
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
            waiting_for: BTreeMap::new(),
            waiting_since: None,
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
            waiting_for: (!self.waiting_for.is_empty()).then(|| self.waiting_for.clone()),
            uptime: None,
            cpu_percent: None,
            memory_bytes: None,
            restarts_total: None,
            check_failures_total: None,
            last_check_ms: None,
            stop_timeout_ms: Some(self.config.stop_timeout_ms()),
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
    #[serde(default)]
    pub partner_instance_id: Option<String>,
    /// The partner's aliveness port.
    #[serde(default)]
    pub partner_aliveness_port: Option<u16>,
    /// The partner's status URL.
    #[serde(default)]
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
    /// Keys this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
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
            extra: serde_json::Map::new(),
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
            extra: serde_json::Map::new(),
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
    /// TCP peers need a valid bearer token whatever their address (additive; default off, so the guide's
    /// address-based model stays the default). The address rules then only narrow further.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_token: bool,
    /// Users other than the monitor's own and root that may use the unix socket API, by name or numeric uid
    /// (additive; default none). Naming any makes the socket file mode 0666; the peer's credentials decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub socket_users: Vec<String>,
    /// Names of the environment variables an untrusted registration may set (additive; empty by default, so
    /// untrusted peers may set none). `LD_*` and `DYLD_*` stay refused even when listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_environment: Vec<String>,
    /// How many processes registered by untrusted peers may be registered at once (additive; default 50).
    #[serde(
        default = "RemoteAccessConfig::default_max_untrusted_processes",
        skip_serializing_if = "RemoteAccessConfig::is_default_max_untrusted"
    )]
    pub max_untrusted_processes: u32,
    /// Keys this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl RemoteAccessConfig {
    fn default_port() -> u16 {
        19881
    }
    fn default_bind() -> String {
        "::".to_owned()
    }
    /// The default of `maxUntrustedProcesses`.
    pub fn default_max_untrusted_processes() -> u32 {
        50
    }
    fn is_default_max_untrusted(max: &u32) -> bool {
        *max == Self::default_max_untrusted_processes()
    }
    /// The guide's default trusted hosts.
    pub fn default_trusted_hosts() -> Vec<String> {
        ["localhost", "127.0.0.1", "::1", "0.0.0.0"].iter().map(|host| host.to_string()).collect()
    }

    /// Applies the permission keys given in `patch`; refuses it, changing nothing, when it carries a key this
    /// update cannot change with a value other than the current one.
    pub fn apply(&mut self, patch: &RemoteAccessPatch) -> Result<(), crate::Error> {
        let elsewhere = |key: &str, place: &str| {
            crate::Error::InvalidField(format!("{key} cannot be changed through /config/remote-access; {place}"))
        };
        if patch.remote_port.is_some_and(|port| port != self.remote_port) {
            return Err(elsewhere("remotePort", "set remoteAccess.remotePort in the registry and restart the monitor"));
        }
        if patch.bind_address.as_ref().is_some_and(|address| *address != self.bind_address) {
            return Err(elsewhere(
                "bindAddress",
                "set remoteAccess.bindAddress in the registry and restart the monitor",
            ));
        }
        if patch.trusted_hosts.as_ref().is_some_and(|hosts| *hosts != self.trusted_hosts) {
            return Err(elsewhere("trustedHosts", "use PUT /config/trusted-hosts"));
        }
        if patch.executable_whitelist.as_ref().is_some_and(|patterns| *patterns != self.executable_whitelist) {
            return Err(elsewhere("executableWhitelist", "use PUT /config/executable-whitelist"));
        }
        if patch.executable_blacklist.as_ref().is_some_and(|patterns| *patterns != self.executable_blacklist) {
            return Err(elsewhere("executableBlacklist", "use PUT /config/executable-blacklist"));
        }
        if let Some(names) = &patch.allowed_environment {
            if let Some(bad) = names.iter().find(|name| name.is_empty() || name.contains(['=', '\0'])) {
                return Err(crate::Error::InvalidField(format!(
                    "allowedEnvironment: {bad:?} is not a variable name (non-empty, without '=' or NUL)"
                )));
            }
            self.allowed_environment = names.clone();
        }
        if let Some(max) = patch.max_untrusted_processes {
            self.max_untrusted_processes = max;
        }
        let pairs = [
            (&mut self.start_remote_access, patch.start_remote_access),
            (&mut self.allow_remote_register, patch.allow_remote_register),
            (&mut self.allow_remote_deregister, patch.allow_remote_deregister),
            (&mut self.allow_remote_start, patch.allow_remote_start),
            (&mut self.allow_remote_stop, patch.allow_remote_stop),
            (&mut self.allow_remote_disable, patch.allow_remote_disable),
            (&mut self.allow_remote_autostart, patch.allow_remote_autostart),
            (&mut self.allow_remote_monitor_restart, patch.allow_remote_monitor_restart),
            (&mut self.require_token, patch.require_token),
        ];
        for (field, value) in pairs {
            if let Some(value) = value {
                *field = value;
            }
        }
        if let Some(users) = &patch.socket_users {
            self.socket_users = users.clone();
        }
        Ok(())
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
            require_token: false,
            socket_users: Vec::new(),
            allowed_environment: Vec::new(),
            max_untrusted_processes: Self::default_max_untrusted_processes(),
            extra: serde_json::Map::new(),
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
    /// TCP peers need a bearer token (see [`RemoteAccessConfig::require_token`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_token: Option<bool>,
    /// Other users allowed on the unix socket (see [`RemoteAccessConfig::socket_users`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_users: Option<Vec<String>>,
    /// Replaces `allowedEnvironment` (additive).
    pub allowed_environment: Option<Vec<String>>,
    /// Changes `maxUntrustedProcesses` (additive).
    pub max_untrusted_processes: Option<u32>,
    /// The keys below are part of what `GET /config/remote-access` answers but are changed elsewhere (their own
    /// endpoints, or the registry for the port and address). They are accepted when they repeat the current value,
    /// so the whole object read by `GET` can be edited and sent back; a different value is refused, naming the
    /// place where it can be changed.
    pub remote_port: Option<u16>,
    pub bind_address: Option<String>,
    pub trusted_hosts: Option<Vec<String>>,
    pub executable_whitelist: Option<Vec<String>>,
    pub executable_blacklist: Option<Vec<String>>,
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
    /// Keys this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
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
        AlivenessServerConfig {
            enabled: true,
            port: Self::default_port(),
            bind_address: Self::default_bind(),
            extra: serde_json::Map::new(),
        }
    }
}

/// The monitor-wide settings the configuration endpoints and setters read and change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// No partner monitoring when set.
    pub standalone_mode: bool,
    /// The remote API and its permissions.
    pub remote_access: RemoteAccessConfig,
    /// How the partner is found and watched.
    pub partner_discovery: PartnerDiscovery,
}

impl Settings {
    /// The settings part of a registry.
    pub fn of(registry: &Registry) -> Settings {
        Settings {
            standalone_mode: registry.standalone_mode,
            remote_access: registry.remote_access.clone(),
            partner_discovery: registry.partner_discovery.clone(),
        }
    }
}

/// One change to the monitor-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsUpdate {
    /// Merge the given permission keys.
    RemoteAccess(RemoteAccessPatch),
    /// Replace the trusted hosts.
    TrustedHosts(Vec<String>),
    /// Replace the executable whitelist (patterns are validated).
    ExecutableWhitelist(Vec<String>),
    /// Replace the executable blacklist (patterns are validated).
    ExecutableBlacklist(Vec<String>),
    /// Turn standalone mode on or off.
    StandaloneMode(bool),
    /// Merge the given partner-discovery keys.
    PartnerDiscovery(PartnerDiscoveryPatch),
}

impl SettingsUpdate {
    /// Checks the update, then applies it to `registry`; on error nothing is changed.
    pub fn apply(&self, registry: &mut Registry) -> Result<(), crate::Error> {
        match self {
            SettingsUpdate::RemoteAccess(patch) => registry.remote_access.apply(patch)?,
            SettingsUpdate::TrustedHosts(hosts) => {
                if hosts.len() > 1024 || hosts.iter().any(|host| host.trim().is_empty() || host.len() > 255) {
                    return Err(crate::Error::InvalidField(
                        "trustedHosts (at most 1024 non-empty entries of at most 255 characters)".to_owned(),
                    ));
                }
                // A pattern that can never match is refused rather than stored (as for executable patterns).
                if let Some((host, reason)) =
                    hosts.iter().find_map(|host| crate::trust::host_pattern_problem(host).map(|reason| (host, reason)))
                {
                    return Err(crate::Error::InvalidPattern { pattern: host.clone(), reason: reason.to_owned() });
                }
                registry.remote_access.trusted_hosts = hosts.clone();
            }
            SettingsUpdate::ExecutableWhitelist(patterns) | SettingsUpdate::ExecutableBlacklist(patterns) => {
                if patterns.len() > 1024 {
                    return Err(crate::Error::InvalidField("patterns (at most 1024)".to_owned()));
                }
                for pattern in patterns {
                    crate::validate_executable_pattern(pattern)?;
                }
                if matches!(self, SettingsUpdate::ExecutableWhitelist(_)) {
                    registry.remote_access.executable_whitelist = patterns.clone();
                } else {
                    registry.remote_access.executable_blacklist = patterns.clone();
                }
            }
            SettingsUpdate::StandaloneMode(on) => registry.standalone_mode = *on,
            SettingsUpdate::PartnerDiscovery(patch) => {
                if let Some(id) = &patch.partner_instance_id {
                    crate::validate_instance_id(id)?;
                }
                if patch.check_interval_ms == Some(0) || patch.failures_before_restart == Some(0) {
                    return Err(crate::Error::InvalidField(
                        "checkIntervalMs and failuresBeforeRestart must be positive".to_owned(),
                    ));
                }
                registry.partner_discovery.apply(patch);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Error, RestartPolicy};

    /// The example registry of `shared/spec/wire-formats.md`, verbatim (shared with pm-registry's tests).
    const WIRE_EXAMPLE: &str = include_str!("../testdata/wire-example.json");

    /// Removes `pointer`'s last key from `value` after checking that it holds `expected`.
    fn take_added(value: &mut Value, pointer: &str, expected: Value) {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let object = value.pointer_mut(parent).and_then(Value::as_object_mut).unwrap();
        assert_eq!(object.remove(key), Some(expected), "additive key {pointer}");
    }

    /// Reads `input` as a registry, writes it back, and compares the meaning: the output must equal the input
    /// plus exactly the `added` keys (JSON pointer, value), the additive defaults this implementation writes.
    fn check_round_trip(input: &Value, added: &[(&str, Value)]) -> Registry {
        let registry: Registry = serde_json::from_value(input.clone()).unwrap();
        let mut output = serde_json::to_value(&registry).unwrap();
        for (pointer, expected) in added {
            take_added(&mut output, pointer, expected.clone());
        }
        assert_eq!(&output, input);
        // And the text form reads back to the same document.
        let text = serde_json::to_string_pretty(&registry).unwrap();
        assert_eq!(serde_json::from_str::<Registry>(&text).unwrap(), registry);
        registry
    }

    /// The keys a rewrite adds to a registry written by the original, with their default values.
    fn additive_defaults() -> Vec<(&'static str, Value)> {
        vec![
            ("/remoteAccess/bindAddress", json!("::")),
            ("/alivenessServer/bindAddress", json!("127.0.0.1")),
            ("/partnerDiscovery/checkIntervalMs", json!(3000)),
            ("/partnerDiscovery/failuresBeforeRestart", json!(2)),
        ]
    }

    fn example() -> Value {
        serde_json::from_str(WIRE_EXAMPLE).unwrap()
    }

    #[test]
    fn wire_example_round_trips() {
        let registry = check_round_trip(&example(), &additive_defaults());
        assert_eq!(registry.instance_id, "default");
        assert_eq!(registry.last_modified.unwrap().to_string(), "2026-01-24T10:30:00.123Z");
        let api = &registry.processes["api"];
        assert_eq!(api.state, ProcessState::Running);
        assert_eq!(api.pid, Some(12345));
        assert_eq!(api.config.args, ["--port", "8080"]);
        assert_eq!(api.config.environment.as_ref().unwrap()["APP_ENV"], "production");
        assert_eq!(api.config.restart_policy(), RestartPolicy::default());
        let startup = api.config.aliveness_check.as_ref().unwrap().startup_check.as_ref().unwrap();
        assert_eq!(startup.fail_action, crate::FailAction::Restart);
        assert!(api.extra.is_empty() && registry.extra.is_empty());
    }

    #[test]
    fn written_additive_keys_round_trip_unchanged() {
        // Once the additive keys are written, a second round trip changes nothing.
        let first: Registry = serde_json::from_value(example()).unwrap();
        let written = serde_json::to_value(&first).unwrap();
        check_round_trip(&written, &[]);
    }

    #[test]
    fn unknown_keys_survive() {
        let mut input = example();
        input["futureTop"] = json!({"nested": [1, 2, {"deep": null}]});
        input["zzz"] = json!("last");
        input["processes"]["api"]["futureEntry"] = json!("kept");
        input["processes"]["api"]["cpuLimit"] = json!(1.5);
        let registry = check_round_trip(&input, &additive_defaults());
        assert_eq!(registry.extra["futureTop"], json!({"nested": [1, 2, {"deep": null}]}));
        let api = &registry.processes["api"];
        assert_eq!(api.extra.len(), 2, "only the unknown keys land in extra: {:?}", api.extra);
        assert_eq!(api.extra["futureEntry"], json!("kept"));
    }

    #[test]
    fn additive_entry_keys_round_trip() {
        let mut input = example();
        let api = input["processes"]["api"].as_object_mut().unwrap();
        api.insert("stopTimeoutMs".to_owned(), json!(2500));
        api.insert("partner".to_owned(), json!(true));
        api.insert("pidStartTime".to_owned(), json!(987654));
        api.insert("lastExitCode".to_owned(), json!(-1));
        api.insert("lastSignal".to_owned(), json!(9));
        api.insert("lastError".to_owned(), json!("boom"));
        api.insert("pendingAction".to_owned(), json!("restart"));
        let registry = check_round_trip(&input, &additive_defaults());
        let api = &registry.processes["api"];
        assert!(api.extra.is_empty(), "{:?}", api.extra);
        assert_eq!(api.pending_action, Some(PendingAction::Restart));
        assert_eq!(api.config.stop_timeout_ms(), 2500);
    }

    #[test]
    fn pending_action_names() {
        for (action, name) in
            [(PendingAction::Start, "start"), (PendingAction::Stop, "stop"), (PendingAction::Restart, "restart")]
        {
            assert_eq!(serde_json::to_value(action).unwrap(), json!(name));
            assert_eq!(serde_json::from_value::<PendingAction>(json!(name)).unwrap(), action);
        }
    }

    #[test]
    fn entry_defaults_on_read() {
        let entry: ProcessEntry =
            serde_json::from_value(json!({"id": "a", "name": "A", "command": "/bin/true"})).unwrap();
        assert_eq!(entry.config, ProcessConfig::new("a", "A", "/bin/true"));
        assert!(entry.config.args.is_empty());
        assert!(entry.config.autostart && entry.config.enabled && !entry.config.is_remote);
        assert_eq!(entry.state, ProcessState::Stopped);
        assert_eq!((entry.restart_attempts, entry.consecutive_failures), (0, 0));
        assert_eq!(
            (entry.pid, entry.registered_at, entry.last_started_at, entry.last_stopped_at),
            (None, None, None, None)
        );
        assert_eq!(entry.config.restart_policy, None);
        assert_eq!(entry.config.restart_policy(), RestartPolicy::default());
        assert!(entry.extra.is_empty());
    }

    #[test]
    fn entry_requires_id_name_command() {
        for missing in ["id", "name", "command"] {
            let mut input = example();
            input["processes"]["api"].as_object_mut().unwrap().remove(missing);
            let err = serde_json::from_value::<Registry>(input).unwrap_err().to_string();
            assert!(err.contains(missing), "{err}");
        }
    }

    #[test]
    fn entry_rejects_bad_values() {
        for (key, value) in [("state", json!("paused")), ("pid", json!(-1)), ("registeredAt", json!("later"))] {
            let mut input = example();
            input["processes"]["api"][key] = value;
            assert!(serde_json::from_value::<Registry>(input).is_err(), "{key}");
        }
    }

    #[test]
    fn instance_dependent_keys_default_by_the_files_instance() {
        for instance in ["default", "watcher", "other"] {
            let text = json!({"instanceId": instance}).to_string();
            assert_eq!(Registry::from_json(text.as_bytes()).unwrap(), Registry::new_default(instance), "{instance}");
        }
        // Partial sections: only the absent instance-dependent keys take the instance's values.
        let text = json!({
            "instanceId": "watcher",
            "remoteAccess": {"allowRemoteStop": false},
            "alivenessServer": {"enabled": true},
            "partnerDiscovery": {"checkIntervalMs": 1000, "partnerAlivenessPort": 20000}
        })
        .to_string();
        let registry = Registry::from_json(text.as_bytes()).unwrap();
        let mut expected = Registry::new_default("watcher");
        expected.remote_access.allow_remote_stop = false;
        expected.partner_discovery.check_interval_ms = 1000;
        expected.partner_discovery.partner_aliveness_port = Some(20000);
        assert_eq!(registry, expected);
        // Given values, null included, are kept as given.
        let text = json!({"instanceId": "watcher", "remoteAccess": {"remotePort": 1},
                          "partnerDiscovery": {"partnerInstanceId": null}})
        .to_string();
        let registry = Registry::from_json(text.as_bytes()).unwrap();
        assert_eq!(registry.remote_access.remote_port, 1);
        assert_eq!(registry.aliveness_server.port, 19884);
        assert_eq!(registry.partner_discovery.partner_instance_id, None);
        assert_eq!(registry.partner_discovery.partner_aliveness_port, Some(19883));
        // Errors still say where.
        let err = Registry::from_json(b"{\"instanceId\": \"watcher\",\n \"remoteAccess\": {\"remotePort\": \"x\"}}")
            .unwrap_err();
        assert_eq!(err.line(), 2, "{err}");
    }

    #[test]
    fn process_keys_must_be_valid_ids_equal_to_the_entries_ids() {
        let entry = |id: &str| json!({"id": id, "name": "n", "command": "/bin/true"});
        // An entry that cannot run is set aside, kept as it is, and the rest of the registry is read.
        let cases = [
            ("mismatch", entry("other"), "has id \"other\""),
            ("../x", entry("../x"), "invalid id \"../x\""),
            ("", entry(""), "invalid id \"\""),
            (
                "big",
                json!({"id": "big", "name": "n", "command": "/bin/true", "logKeep": 4294967295u64}),
                "Missing or invalid field: logKeep",
            ),
            (
                "odd-state",
                json!({"id": "odd-state", "name": "n", "command": "/bin/true", "state": "sleeping"}),
                "sleeping",
            ),
            (
                "ftp-check",
                json!({"id": "ftp-check", "name": "n", "command": "/bin/true", "alivenessCheck": {"url": "ftp://h/x"}}),
                "alivenessCheck.url",
            ),
        ];
        for (key, bad, expected) in cases {
            let document = json!({"instanceId": "default", "processes": {"good": entry("good"), key: bad.clone()}});
            let text = serde_json::to_string_pretty(&document).unwrap();
            let registry = Registry::from_json(text.as_bytes()).unwrap_or_else(|err| panic!("{key:?}: {err}"));
            assert_eq!(registry.processes.keys().collect::<Vec<_>>(), ["good"], "{key:?}");
            let unusable = &registry.unusable[key];
            assert!(unusable.reason.contains(expected), "{key:?}: {}", unusable.reason);
            assert_eq!(unusable.raw, bad, "{key:?} kept as it is");
            let status = unusable.status(key);
            assert_eq!((status.state, status.enabled, status.autostart), (ProcessState::Failed, false, false));
            assert!(status.last_error.as_deref().is_some_and(|err| err.contains(expected)), "{status:?}");
            // Written back in place, byte for byte the same value.
            let written: Value = serde_json::from_slice(&registry.to_json_pretty().unwrap()).unwrap();
            assert_eq!(written["processes"][key], bad, "{key:?}");
            assert_eq!(written["processes"]["good"]["id"], "good");
            assert_eq!(Registry::from_json(&registry.to_json_pretty().unwrap()).unwrap(), registry, "{key:?}");
        }
        // A new registration under the same id replaces the unusable entry.
        let text = json!({"instanceId": "default", "processes": {"x": {"id": "x", "state": "sleeping"}}}).to_string();
        let mut registry = Registry::from_json(text.as_bytes()).unwrap();
        registry
            .processes
            .insert("x".to_owned(), ProcessEntry::new(ProcessConfig::new("x", "n", "/bin/true"), Timestamp::now()));
        let written: Value = serde_json::from_slice(&registry.to_json_pretty().unwrap()).unwrap();
        assert_eq!(written["processes"]["x"]["command"], "/bin/true");
        // A file that is not JSON, or whose problem is not an entry, is still refused as a whole.
        let err = Registry::from_json(b"{\"instanceId\": \"default\", \"processes\": {\"a\": ").unwrap_err();
        assert!(err.is_eof(), "{err}");
        let text = json!({"instanceId": 3, "processes": {"odd": {"id": "odd", "state": "sleeping"}}}).to_string();
        assert!(Registry::from_json(text.as_bytes()).is_err());
        let text = r#"{"instanceId": "default", "processes": {"a": {"id": "a", "name": "n", "command": "/bin/true"},
                        "a": {"id": "a", "name": "n", "command": "/bin/true"}}}"#;
        let err = Registry::from_json(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        let text = json!({"instanceId": "default", "processes": {"a": entry("a")}}).to_string();
        assert_eq!(Registry::from_json(text.as_bytes()).unwrap().processes["a"].config.id, "a");
        // A stop timeout over the one-hour cap (accepted by earlier versions) is read, and used as one hour.
        let text = json!({"instanceId": "default", "processes": {"slow": {"id": "slow", "name": "n",
                          "command": "/bin/true", "stopTimeoutMs": 86_400_000u64}}})
        .to_string();
        let registry = Registry::from_json(text.as_bytes()).unwrap();
        assert_eq!(registry.processes["slow"].config.stop_timeout_ms(), 3_600_000);
        // The partner's id becomes a process id (and file names): an unusable one is refused, named.
        let text =
            json!({"instanceId": "watcher", "partnerDiscovery": {"partnerInstanceId": "my watcher"}}).to_string();
        let err = Registry::from_json(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("partnerDiscovery.partnerInstanceId"), "{err}");
    }

    #[test]
    fn registry_defaults_on_read() {
        let registry: Registry = serde_json::from_value(json!({"instanceId": "default"})).unwrap();
        let mut expected = Registry::new_default("other");
        expected.instance_id = "default".to_owned();
        assert_eq!(registry, expected);
        assert_eq!((registry.version, registry.monitor_interval_ms), (1, 5000));
        assert!(serde_json::from_value::<Registry>(json!({"version": 1})).is_err());
        // Partial sub-objects take defaults key by key.
        let registry: Registry =
            serde_json::from_value(json!({"instanceId": "x", "remoteAccess": {"remotePort": 1}})).unwrap();
        assert_eq!(registry.remote_access, RemoteAccessConfig { remote_port: 1, ..RemoteAccessConfig::default() });
    }

    #[test]
    fn all_states_round_trip_in_an_entry() {
        for state in ProcessState::ALL {
            let mut input = example();
            input["processes"]["api"]["state"] = json!(state.as_str());
            let registry = check_round_trip(&input, &additive_defaults());
            assert_eq!(registry.processes["api"].state, state);
        }
    }

    /// The first-start registry of `instance_id`, written as JSON.
    fn check_new_default(instance_id: &str, expected: Value) {
        let registry = Registry::new_default(instance_id);
        assert_eq!(serde_json::to_value(&registry).unwrap(), expected, "{instance_id}");
        assert_eq!(serde_json::from_value::<Registry>(expected).unwrap(), registry);
    }

    fn default_remote_access(remote_port: u16) -> Value {
        json!({
            "startRemoteAccess": true,
            "remotePort": remote_port,
            "bindAddress": "::",
            "trustedHosts": ["localhost", "127.0.0.1", "::1", "0.0.0.0"],
            "allowRemoteRegister": true,
            "allowRemoteDeregister": true,
            "allowRemoteStart": true,
            "allowRemoteStop": true,
            "allowRemoteDisable": true,
            "allowRemoteAutostart": true,
            "allowRemoteMonitorRestart": false,
            "executableWhitelist": [],
            "executableBlacklist": []
        })
    }

    #[test]
    fn first_start_of_default() {
        check_new_default(
            "default",
            json!({
                "version": 1,
                "instanceId": "default",
                "monitorIntervalMs": 5000,
                "standaloneMode": false,
                "partnerDiscovery": {
                    "partnerInstanceId": "watcher",
                    "partnerAlivenessPort": 19884,
                    "partnerStatusUrl": "http://localhost:19884/status",
                    "discoveryOnStartup": false,
                    "startPartnerIfMissing": false,
                    "checkIntervalMs": 3000,
                    "failuresBeforeRestart": 2
                },
                "remoteAccess": default_remote_access(19881),
                "alivenessServer": {"enabled": true, "port": 19883, "bindAddress": "127.0.0.1"},
                "processes": {}
            }),
        );
    }

    #[test]
    fn first_start_of_watcher() {
        check_new_default(
            "watcher",
            json!({
                "version": 1,
                "instanceId": "watcher",
                "monitorIntervalMs": 5000,
                "standaloneMode": false,
                "partnerDiscovery": {
                    "partnerInstanceId": "default",
                    "partnerAlivenessPort": 19883,
                    "partnerStatusUrl": "http://localhost:19883/status",
                    "discoveryOnStartup": true,
                    "startPartnerIfMissing": true,
                    "checkIntervalMs": 3000,
                    "failuresBeforeRestart": 2
                },
                "remoteAccess": default_remote_access(19882),
                "alivenessServer": {"enabled": true, "port": 19884, "bindAddress": "127.0.0.1"},
                "processes": {}
            }),
        );
    }

    #[test]
    fn first_start_of_another_instance() {
        check_new_default(
            "staging",
            json!({
                "version": 1,
                "instanceId": "staging",
                "monitorIntervalMs": 5000,
                "standaloneMode": false,
                "partnerDiscovery": {
                    // Written as null, so that a rewrite keeps "no partner" (absent keys take the instance's
                    // defaults).
                    "partnerInstanceId": null,
                    "partnerAlivenessPort": null,
                    "partnerStatusUrl": null,
                    "discoveryOnStartup": false,
                    "startPartnerIfMissing": false,
                    "checkIntervalMs": 3000,
                    "failuresBeforeRestart": 2
                },
                "remoteAccess": default_remote_access(19881),
                "alivenessServer": {"enabled": true, "port": 19883, "bindAddress": "127.0.0.1"},
                "processes": {}
            }),
        );
    }

    #[test]
    fn new_entry_state_follows_enabled() {
        let at = Timestamp::parse("2026-01-24T10:00:00Z").unwrap();
        let entry = ProcessEntry::new(ProcessConfig::new("a", "A", "/bin/true"), at);
        assert_eq!((entry.state, entry.registered_at, entry.pid), (ProcessState::Stopped, Some(at), None));
        assert_eq!((entry.restart_attempts, entry.consecutive_failures), (0, 0));
        let mut config = ProcessConfig::new("a", "A", "/bin/true");
        config.enabled = false;
        assert_eq!(ProcessEntry::new(config, at).state, ProcessState::Disabled);
    }

    /// `status()` of the example entry in `state` reports `expected_pid`.
    fn check_status(state: ProcessState, expected_pid: Option<u32>) {
        let registry: Registry = serde_json::from_value(example()).unwrap();
        let mut entry = registry.processes["api"].clone();
        entry.state = state;
        entry.restart_attempts = 4;
        entry.last_exit_code = Some(3);
        let status = entry.status();
        assert_eq!(status.pid, expected_pid, "{state}");
        assert_eq!(status.state, state);
        assert_eq!((status.id.as_str(), status.name.as_str()), ("api", "My API"));
        assert_eq!((status.enabled, status.autostart, status.is_remote), (true, true, false));
        assert_eq!(status.restart_attempts, 4);
        assert_eq!(status.last_exit_code, Some(3));
        assert_eq!(status.command.as_deref(), Some("/usr/bin/my-api"));
        assert_eq!(status.last_started_at, entry.last_started_at);
        assert_eq!(status.last_stopped_at, entry.last_stopped_at);
    }

    #[test]
    fn status_reports_a_pid_only_with_a_child() {
        check_status(ProcessState::Starting, Some(12345));
        check_status(ProcessState::Running, Some(12345));
        check_status(ProcessState::Stopping, Some(12345));
        check_status(ProcessState::Stopped, None);
        check_status(ProcessState::Crashed, None);
        check_status(ProcessState::Retrying, None);
        check_status(ProcessState::Failed, None);
        check_status(ProcessState::Disabled, None);
    }

    /// Applies `update` to the first-start registry of `default`. On success it must equal that registry changed
    /// by `edit`; on error (whose text must contain the fragment) it must be unchanged.
    fn check_update(update: SettingsUpdate, expected: Result<fn(&mut Registry), &str>) {
        let before = Registry::new_default(DEFAULT_INSTANCE);
        let mut registry = before.clone();
        let res = update.apply(&mut registry);
        match expected {
            Ok(edit) => {
                assert_eq!(res, Ok(()), "{update:?}");
                let mut want = before;
                edit(&mut want);
                assert_eq!(registry, want, "{update:?}");
            }
            Err(fragment) => {
                let err = res.expect_err(&format!("{update:?} should fail")).to_string();
                assert!(err.contains(fragment), "{err:?} lacks {fragment:?}");
                assert_eq!(registry, before, "a failed update changes nothing");
            }
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|it| it.to_string()).collect()
    }

    #[test]
    fn executable_lists_are_validated_before_they_are_stored() {
        check_update(
            SettingsUpdate::ExecutableWhitelist(strings(&["/usr/bin/*", "/opt/workers/**"])),
            Ok(|it| it.remote_access.executable_whitelist = strings(&["/usr/bin/*", "/opt/workers/**"])),
        );
        check_update(
            SettingsUpdate::ExecutableBlacklist(strings(&["/usr/bin/rm", "**/*.sh"])),
            Ok(|it| it.remote_access.executable_blacklist = strings(&["/usr/bin/rm", "**/*.sh"])),
        );
        check_update(SettingsUpdate::ExecutableWhitelist(Vec::new()), Ok(|_| {}));
        check_update(SettingsUpdate::ExecutableWhitelist(strings(&["/usr/bin/*", "/usr/[bin"])), Err("/usr/[bin"));
        check_update(SettingsUpdate::ExecutableBlacklist(strings(&["relative/*"])), Err("relative/*"));
        check_update(SettingsUpdate::ExecutableBlacklist(strings(&["/usr/{a,b"])), Err("/usr/{a,b"));
        check_update(SettingsUpdate::ExecutableWhitelist(vec!["/a".to_owned(); 1025]), Err("patterns"));
    }

    #[test]
    fn malformed_whitelist_keeps_the_old_one() {
        let mut registry = Registry::new_default(DEFAULT_INSTANCE);
        SettingsUpdate::ExecutableWhitelist(strings(&["/usr/bin/*"])).apply(&mut registry).unwrap();
        let before = registry.clone();
        let err = SettingsUpdate::ExecutableWhitelist(strings(&["/opt/*", ""])).apply(&mut registry).unwrap_err();
        assert!(matches!(err, Error::InvalidPattern { ref pattern, .. } if pattern.is_empty()), "{err:?}");
        assert_eq!(registry, before);
        assert_eq!(registry.remote_access.executable_whitelist, ["/usr/bin/*"]);
    }

    #[test]
    fn trusted_hosts_update() {
        check_update(
            SettingsUpdate::TrustedHosts(strings(&["10.0.*.*", "*.mydomain.com"])),
            Ok(|it| it.remote_access.trusted_hosts = strings(&["10.0.*.*", "*.mydomain.com"])),
        );
        check_update(SettingsUpdate::TrustedHosts(Vec::new()), Ok(|it| it.remote_access.trusted_hosts.clear()));
        check_update(SettingsUpdate::TrustedHosts(strings(&["localhost", " "])), Err("trustedHosts"));
        check_update(SettingsUpdate::TrustedHosts(vec!["h".repeat(256)]), Err("trustedHosts"));
        check_update(SettingsUpdate::TrustedHosts(vec!["localhost".to_owned(); 1025]), Err("trustedHosts"));
        check_update(SettingsUpdate::TrustedHosts(strings(&["localhost", "192.168.1.*.*"])), Err("192.168.1.*.*"));
        check_update(SettingsUpdate::TrustedHosts(strings(&["300.1.*.1"])), Err("300.1.*.1"));
    }

    #[test]
    fn remote_access_patch_merges_given_keys() {
        check_update(SettingsUpdate::RemoteAccess(RemoteAccessPatch::default()), Ok(|_| {}));
        check_update(
            SettingsUpdate::RemoteAccess(RemoteAccessPatch {
                allow_remote_register: Some(false),
                allow_remote_monitor_restart: Some(true),
                ..RemoteAccessPatch::default()
            }),
            Ok(|it| {
                it.remote_access.allow_remote_register = false;
                it.remote_access.allow_remote_monitor_restart = true;
            }),
        );
        check_update(
            SettingsUpdate::RemoteAccess(RemoteAccessPatch {
                start_remote_access: Some(false),
                allow_remote_deregister: Some(false),
                allow_remote_start: Some(false),
                allow_remote_stop: Some(false),
                allow_remote_disable: Some(false),
                allow_remote_autostart: Some(false),
                ..RemoteAccessPatch::default()
            }),
            Ok(|it| {
                let access = &mut it.remote_access;
                access.start_remote_access = false;
                access.allow_remote_deregister = false;
                access.allow_remote_start = false;
                access.allow_remote_stop = false;
                access.allow_remote_disable = false;
                access.allow_remote_autostart = false;
            }),
        );
    }

    #[test]
    fn authentication_keys_are_additive() {
        // Omitted while at their defaults, so files and answers stay as the guide's.
        let default = serde_json::to_value(RemoteAccessConfig::default()).unwrap();
        assert!(default.get("requireToken").is_none() && default.get("socketUsers").is_none(), "{default}");
        let mut remote = RemoteAccessConfig::default();
        let patch: RemoteAccessPatch =
            serde_json::from_value(json!({"requireToken": true, "socketUsers": ["alice", "1001"]})).unwrap();
        remote.apply(&patch).unwrap();
        assert!(remote.require_token);
        assert_eq!(remote.socket_users, ["alice", "1001"]);
        let value = serde_json::to_value(&remote).unwrap();
        assert_eq!(
            (value["requireToken"].clone(), value["socketUsers"].clone()),
            (json!(true), json!(["alice", "1001"]))
        );
        let back: RemoteAccessConfig = serde_json::from_value(value).unwrap();
        assert_eq!(back, remote);
        assert!(serde_json::from_value::<RemoteAccessPatch>(json!({"requireToken": "yes"})).is_err());
    }

    #[test]
    fn remote_access_patch_json() {
        let patch: RemoteAccessPatch =
            serde_json::from_value(json!({"allowRemoteStop": false, "allowRemoteMonitorRestart": true})).unwrap();
        assert_eq!(
            patch,
            RemoteAccessPatch {
                allow_remote_stop: Some(false),
                allow_remote_monitor_restart: Some(true),
                ..RemoteAccessPatch::default()
            }
        );
        assert!(serde_json::from_value::<RemoteAccessPatch>(json!({"allowRemoteStop": "no"})).is_err());
        let err = serde_json::from_value::<RemoteAccessPatch>(json!({"allowRemoteStopp": false})).unwrap_err();
        assert!(err.to_string().contains("allowRemoteStopp"), "{err}");
    }

    #[test]
    fn remote_access_object_read_back_is_accepted_and_other_endpoints_keys_only_when_unchanged() {
        let mut registry = Registry::new_default("default");
        registry.remote_access.trusted_hosts = strings(&["127.0.0.1"]);
        // What GET /config/remote-access answers, edited in one permission and sent back whole.
        let mut read = serde_json::to_value(&registry.remote_access).unwrap();
        read["allowRemoteStop"] = json!(false);
        let patch: RemoteAccessPatch = serde_json::from_value(read.clone()).unwrap();
        let mut expected = registry.clone();
        expected.remote_access.allow_remote_stop = false;
        SettingsUpdate::RemoteAccess(patch).apply(&mut registry).unwrap();
        assert_eq!(registry, expected);

        let changes = [
            ("remotePort", json!(1), "restart the monitor"),
            ("bindAddress", json!("0.0.0.0"), "restart the monitor"),
            ("trustedHosts", json!(["10.0.0.1"]), "PUT /config/trusted-hosts"),
            ("executableWhitelist", json!(["/opt/**"]), "PUT /config/executable-whitelist"),
            ("executableBlacklist", json!(["/opt/**"]), "PUT /config/executable-blacklist"),
        ];
        for (key, value, place) in changes {
            let mut body = read.clone();
            body["allowRemoteStart"] = json!(false);
            body[key] = value;
            let patch: RemoteAccessPatch = serde_json::from_value(body).unwrap();
            let err = SettingsUpdate::RemoteAccess(patch).apply(&mut registry).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(key) && text.contains(place), "{key}: {text}");
            assert_eq!(registry, expected, "{key}: a refused update changes nothing");
        }
    }

    #[test]
    fn partner_discovery_patch_merges_given_keys() {
        check_update(SettingsUpdate::PartnerDiscovery(PartnerDiscoveryPatch::default()), Ok(|_| {}));
        check_update(
            SettingsUpdate::PartnerDiscovery(PartnerDiscoveryPatch {
                discovery_on_startup: Some(true),
                ..PartnerDiscoveryPatch::default()
            }),
            Ok(|it| it.partner_discovery.discovery_on_startup = true),
        );
        check_update(
            SettingsUpdate::PartnerDiscovery(PartnerDiscoveryPatch {
                partner_instance_id: Some("backup".to_owned()),
                partner_aliveness_port: Some(29884),
                partner_status_url: Some("http://localhost:29884/status".to_owned()),
                start_partner_if_missing: Some(true),
                check_interval_ms: Some(500),
                failures_before_restart: Some(5),
                ..PartnerDiscoveryPatch::default()
            }),
            Ok(|it| {
                let partner = &mut it.partner_discovery;
                partner.partner_instance_id = Some("backup".to_owned());
                partner.partner_aliveness_port = Some(29884);
                partner.partner_status_url = Some("http://localhost:29884/status".to_owned());
                partner.start_partner_if_missing = true;
                partner.check_interval_ms = 500;
                partner.failures_before_restart = 5;
            }),
        );
        check_update(
            SettingsUpdate::PartnerDiscovery(PartnerDiscoveryPatch {
                partner_instance_id: Some("../etc".to_owned()),
                discovery_on_startup: Some(true),
                ..PartnerDiscoveryPatch::default()
            }),
            Err("../etc"),
        );
        check_update(
            SettingsUpdate::PartnerDiscovery(PartnerDiscoveryPatch {
                check_interval_ms: Some(0),
                ..PartnerDiscoveryPatch::default()
            }),
            Err("checkIntervalMs"),
        );
        check_update(
            SettingsUpdate::PartnerDiscovery(PartnerDiscoveryPatch {
                failures_before_restart: Some(0),
                discovery_on_startup: Some(true),
                ..PartnerDiscoveryPatch::default()
            }),
            Err("failuresBeforeRestart"),
        );
    }

    #[test]
    fn partner_discovery_patch_json() {
        let patch: PartnerDiscoveryPatch =
            serde_json::from_value(json!({"discoveryOnStartup": true, "partnerAlivenessPort": 19884})).unwrap();
        assert_eq!(
            patch,
            PartnerDiscoveryPatch {
                discovery_on_startup: Some(true),
                partner_aliveness_port: Some(19884),
                ..PartnerDiscoveryPatch::default()
            }
        );
        assert!(serde_json::from_value::<PartnerDiscoveryPatch>(json!({"partnerPort": 1})).is_err());
        assert!(serde_json::from_value::<PartnerDiscoveryPatch>(json!({"partnerAlivenessPort": 70000})).is_err());
    }

    #[test]
    fn standalone_mode_update() {
        check_update(SettingsUpdate::StandaloneMode(true), Ok(|it| it.standalone_mode = true));
        check_update(SettingsUpdate::StandaloneMode(false), Ok(|_| {}));
    }

    #[test]
    fn settings_of_a_registry() {
        let mut registry = Registry::new_default(WATCHER_INSTANCE);
        registry.standalone_mode = true;
        registry
            .processes
            .insert("a".to_owned(), ProcessEntry::new(ProcessConfig::new("a", "A", "/bin/true"), Timestamp::now()));
        let settings = Settings::of(&registry);
        assert!(settings.standalone_mode);
        assert_eq!(settings.remote_access, registry.remote_access);
        assert_eq!(settings.partner_discovery, registry.partner_discovery);
        let value = serde_json::to_value(&settings).unwrap();
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["standaloneMode", "remoteAccess", "partnerDiscovery"]);
        assert_eq!(serde_json::from_value::<Settings>(value).unwrap(), settings);
    }
}
