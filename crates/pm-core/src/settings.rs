//! The monitor-wide settings sections of the registry (`remoteAccess`, `partnerDiscovery`, `alivenessServer`),
//! the partial updates the configuration endpoints send, and how an update is checked and applied.

use serde::{Deserialize, Serialize};

use crate::Registry;

fn yes() -> bool {
    true
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
    use crate::{Error, ProcessConfig, ProcessEntry, Timestamp, DEFAULT_INSTANCE, WATCHER_INSTANCE};

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
        registry.processes.insert(
            "a".to_owned(),
            ProcessEntry::new(ProcessConfig::new("a", "A", "/bin/true"), Timestamp::now()).into(),
        );
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
