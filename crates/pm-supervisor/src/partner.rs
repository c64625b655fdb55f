//! What an instance needs to know of its partner instance, read from the partner's own files rather than from a
//! copy in its own registry: the port its aliveness server actually serves, and how long its shutdown may take.

use std::time::Duration;

use pm_core::{MonitorState, MonitorStatus, PartnerDiscovery, Registry};
use pm_registry::{Paths, Store};

/// Added to the longest stop timeout among the partner's processes for the partner entry's own stop grace: the
/// partner's shutdown stops its processes side by side, then writes its registry and releases its lock.
pub(crate) const STOP_MARGIN_MS: u64 = 15_000;
/// The least stop grace of a partner entry.
pub(crate) const MIN_STOP_GRACE_MS: u64 = 30_000;

/// The partner as its own files describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartnerFacts {
    /// Host to reach its aliveness server on.
    pub(crate) host: String,
    /// The port its aliveness server serves.
    pub(crate) aliveness_port: u16,
    /// How long the partner entry waits between SIGTERM and SIGKILL: the longest `stopTimeoutMs` among the
    /// partner's own processes plus [`STOP_MARGIN_MS`], at least [`MIN_STOP_GRACE_MS`].
    pub(crate) stop_grace_ms: u64,
}

/// Reads the partner's registry (blocking). The partner stores the ports it serves in its own registry when it
/// starts (`--aliveness-port` included), so that file, not `partnerAlivenessPort` in ours, says where it answers;
/// `partnerAlivenessPort` and then the partner instance's default serve only while it has no readable registry.
pub(crate) fn read_facts(paths: &Paths, partner_id: &str, discovery: &PartnerDiscovery) -> PartnerFacts {
    let registry = paths.for_instance(partner_id).ok().and_then(|paths| Store::new(paths).load().ok());
    facts_of(registry.as_ref(), partner_id, discovery)
}

/// [`read_facts`] from a registry already read (`None`: none could be read).
pub(crate) fn facts_of(registry: Option<&Registry>, partner_id: &str, discovery: &PartnerDiscovery) -> PartnerFacts {
    let fallback_port =
        discovery.partner_aliveness_port.unwrap_or_else(|| Registry::new_default(partner_id).aliveness_server.port);
    let Some(registry) = registry else {
        return PartnerFacts {
            host: "localhost".to_owned(),
            aliveness_port: fallback_port,
            stop_grace_ms: MIN_STOP_GRACE_MS,
        };
    };
    let longest = registry
        .processes
        .values()
        .filter(|entry| !entry.config.partner)
        .map(|entry| entry.config.stop_timeout_ms())
        .max()
        .unwrap_or(0);
    PartnerFacts {
        host: connect_host(&registry.aliveness_server.bind_address),
        aliveness_port: registry.aliveness_server.port,
        stop_grace_ms: longest.saturating_add(STOP_MARGIN_MS).max(MIN_STOP_GRACE_MS),
    }
}

/// Where to connect to reach a server bound to `bind` (`localhost` for loopback and the unspecified address).
fn connect_host(bind: &str) -> String {
    match bind.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() || ip.is_loopback() => "localhost".to_owned(),
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        Ok(ip) => ip.to_string(),
        Err(_) => "localhost".to_owned(),
    }
}

impl PartnerFacts {
    /// The partner's `/alive` URL.
    pub(crate) fn alive_url(&self) -> String {
        format!("http://{}:{}/alive", self.host, self.aliveness_port)
    }

    /// The partner's `/status` URL.
    pub(crate) fn status_url(&self) -> String {
        format!("http://{}:{}/status", self.host, self.aliveness_port)
    }
}

/// What the partner with lock holder `pid` says of itself on `status_url`: its state when it answers as that
/// process, `None` when nothing (or another process) answers.
pub(crate) async fn reported_state(http: &pm_http::HttpClient, status_url: &str, pid: u32) -> Option<MonitorState> {
    let res = http.get(status_url, Duration::from_secs(1)).await.ok()?;
    let status: MonitorStatus = res.is_success().then(|| serde_json::from_slice(&res.body).ok()).flatten()?;
    (status.pid == pid).then_some(status.state)
}

/// The partner's `/status` URL derived from the `/alive` URL its entry checks.
pub(crate) fn status_url_of_check(alive_url: &str) -> Option<String> {
    alive_url.strip_suffix("/alive").map(|base| format!("{base}/status"))
}

#[cfg(test)]
mod tests {
    use pm_core::{ProcessConfig, ProcessEntry, Timestamp};

    use super::*;

    #[test]
    fn facts_come_from_the_partner_registry() {
        let discovery = PartnerDiscovery::for_partner("default", 19883, false);
        let missing = facts_of(None, "default", &discovery);
        assert_eq!((missing.aliveness_port, missing.stop_grace_ms), (19883, MIN_STOP_GRACE_MS));
        let mut registry = Registry::new_default("default");
        registry.aliveness_server.port = 24_001;
        let mut slow = ProcessConfig::new("slow", "slow", "/bin/true");
        slow.stop_timeout_ms = Some(50_000);
        registry.processes.insert("slow".to_owned(), ProcessEntry::new(slow, Timestamp::now()).into());
        let mut partner = ProcessConfig::new("watcher", "watcher", "/bin/true");
        partner.partner = true;
        partner.stop_timeout_ms = Some(3_600_000);
        registry.processes.insert("watcher".to_owned(), ProcessEntry::new(partner, Timestamp::now()).into());
        let facts = facts_of(Some(&registry), "default", &discovery);
        assert_eq!(facts.aliveness_port, 24_001, "the port the partner serves, not partnerAlivenessPort");
        assert_eq!(facts.stop_grace_ms, 50_000 + STOP_MARGIN_MS, "its own partner entry does not count");
        assert_eq!(facts.alive_url(), "http://localhost:24001/alive");
        assert_eq!(status_url_of_check(&facts.alive_url()).unwrap(), facts.status_url());
    }
}
