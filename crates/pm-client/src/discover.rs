//! Finding a monitor: `RemoteProcessMonitorClient::discover` (the guide's "Auto-Discovery for Remote Clients").
//!
//! A host runs a monitor when `GET http://{host}:{port}/monitor/status` answers 2xx with a `MonitorStatus`.
//! The candidate hosts are tried one after the other, then, only when asked for, the hosts of one IPv4 /24 are
//! probed concurrently; the first to answer wins. Everything happens within one overall timeout.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use pm_core::MonitorStatus;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::remote::normalize_base_url;
use crate::{Error, RemoteProcessMonitorClient};

/// How [`RemoteProcessMonitorClient::discover_with`] looks for a monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverOptions {
    /// The remote API port probed on every host (default 19881).
    pub port: u16,
    /// Time allowed for the whole discovery (default 5 s).
    pub timeout: Duration,
    /// Time allowed for one probe (default 300 ms).
    pub probe_timeout: Duration,
    /// Hosts tried first, one after the other, in this order (default `0.0.0.0`, `127.0.0.1`, `localhost`).
    pub candidates: Vec<String>,
    /// The /24 scanned when no candidate answers; `None` (the default) scans nothing. See
    /// [`DiscoverOptions::with_local_subnet`] and [`DiscoverOptions::guide`].
    pub subnet: Option<Subnet>,
    /// Probes of the subnet in flight at once (default 64).
    pub concurrency: usize,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions {
            port: 19881,
            timeout: Duration::from_secs(5),
            probe_timeout: Duration::from_millis(300),
            candidates: ["0.0.0.0", "127.0.0.1", "localhost"].iter().map(|host| host.to_string()).collect(),
            subnet: None,
            concurrency: 64,
        }
    }
}

impl DiscoverOptions {
    /// The guide's discovery, as [`RemoteProcessMonitorClient::discover`] does it: the loopback candidates, then
    /// the /24 of this host's own address.
    pub fn guide() -> DiscoverOptions {
        DiscoverOptions::default().with_local_subnet()
    }

    /// These options with the /24 of this host's own address as the subnet to scan (as the guide's step 4), or
    /// none when the host has no non-loopback IPv4 address (see [`Subnet::of_this_host`]).
    pub fn with_local_subnet(mut self) -> DiscoverOptions {
        self.subnet = Subnet::of_this_host();
        self
    }
}

/// An IPv4 /24 network, whose hosts `.1` to `.254` discovery may probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: [u8; 3],
}

impl Subnet {
    /// Parses `a.b.c.d/24` (the host part `d` is ignored); only /24 networks are supported.
    pub fn parse(text: &str) -> Result<Subnet, Error> {
        let invalid = || Error::Invalid(format!("subnet {text:?}: expected an IPv4 /24 such as 192.168.1.0/24"));
        let (addr, prefix) = text.trim().split_once('/').ok_or_else(invalid)?;
        if prefix != "24" {
            return Err(invalid());
        }
        let ip: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        Ok(Subnet::from_ip(ip))
    }

    /// The /24 that `ip` belongs to.
    pub fn from_ip(ip: Ipv4Addr) -> Subnet {
        let [a, b, c, _] = ip.octets();
        Subnet { network: [a, b, c] }
    }

    /// The /24 of this host's own IPv4 address: the first address of an interface that is up, running and not
    /// loopback, leaving out link-local addresses; `None` when there is none. Read from the interface list
    /// (`getifaddrs`); nothing is sent anywhere.
    pub fn of_this_host() -> Option<Subnet> {
        interface_ipv4s()
            .into_iter()
            .find(|ip| !(ip.is_loopback() || ip.is_unspecified() || ip.is_link_local()))
            .map(Subnet::from_ip)
    }

    /// The network address (`a.b.c.0`).
    pub fn network(&self) -> Ipv4Addr {
        let [a, b, c] = self.network;
        Ipv4Addr::new(a, b, c, 0)
    }

    /// The hosts probed, `.1` to `.254` in order.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let [a, b, c] = self.network;
        (1..=254).map(move |d| Ipv4Addr::new(a, b, c, d))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/24", self.network())
    }
}

impl RemoteProcessMonitorClient {
    /// Finds a monitor as the guide describes ([`DiscoverOptions::guide`]): the candidates `0.0.0.0`, `127.0.0.1`
    /// and `localhost` on port 19881, then the hosts of this host's own /24, 5 s overall. This probes up to 254
    /// addresses of the local network; [`RemoteProcessMonitorClient::discover_with`] with
    /// [`DiscoverOptions::default`] stays on this host.
    pub async fn discover() -> Result<RemoteProcessMonitorClient, Error> {
        RemoteProcessMonitorClient::discover_with(DiscoverOptions::guide()).await
    }

    /// Finds a monitor: tries `options.candidates` in order, then scans `options.subnet` (if any) with at most
    /// `options.concurrency` probes at once, and answers a client (with the default [`crate::RemoteClientOptions`])
    /// of the first host that answers with a `MonitorStatus`. [`Error::NotDiscovered`], naming what was tried,
    /// when none answers within `options.timeout`.
    ///
    /// Every probe task has ended when this returns; when the returned future is dropped early, the probes still
    /// in flight are aborted.
    ///
    /// # Caveats
    /// A candidate given as a host name is resolved by the system resolver on tokio's blocking pool; a lookup
    /// still running at the deadline is abandoned, not stopped.
    pub async fn discover_with(options: DiscoverOptions) -> Result<RemoteProcessMonitorClient, Error> {
        let deadline = Instant::now() + options.timeout;
        // A client of its own, so that no pooled probe connection outlives the discovery.
        let http = pm_http::HttpClient::new();
        let mut tried = Vec::new();
        let mut timed_out = false;
        for host in &options.candidates {
            let Ok(base_url) = candidate_url(host, options.port) else {
                tried.push(format!("{host:?} (not a host)"));
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                timed_out = true;
                break;
            }
            if probe(&http, &base_url, options.probe_timeout.min(remaining)).await {
                return RemoteProcessMonitorClient::new(&base_url);
            }
            tried.push(base_url);
        }
        if let (Some(subnet), false) = (options.subnet, timed_out) {
            let (found, scan_timed_out) = scan(&http, subnet, &options, deadline).await;
            if let Some(base_url) = found {
                return RemoteProcessMonitorClient::new(&base_url);
            }
            timed_out = scan_timed_out;
            tried.push(format!("the hosts of {subnet} on port {}", options.port));
        }
        let tried = if tried.is_empty() { "nothing to try".to_owned() } else { format!("tried {}", tried.join(", ")) };
        let outcome = if timed_out {
            format!("stopped at the {:?} timeout", options.timeout)
        } else {
            "no monitor answered".to_owned()
        };
        Err(Error::NotDiscovered(format!("{tried}; {outcome}")))
    }
}

/// `http://host:port` for a candidate host (IPv6 addresses get their brackets).
fn candidate_url(host: &str, port: u16) -> Result<String, Error> {
    let host = host.trim();
    let url = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("http://[{ip}]:{port}"),
        _ => format!("http://{host}:{port}"),
    };
    normalize_base_url(&url)
}

/// Whether a monitor answers at `base_url` within `timeout`.
async fn probe(http: &pm_http::HttpClient, base_url: &str, timeout: Duration) -> bool {
    let url = format!("{base_url}/monitor/status");
    match http.get(&url, timeout).await {
        Ok(res) if res.is_success() => serde_json::from_slice::<MonitorStatus>(&res.body).is_ok(),
        Ok(res) => {
            tracing::debug!(%url, status = res.status, "not a monitor");
            false
        }
        Err(_) => false,
    }
}

/// Probes the hosts of `subnet` with at most `options.concurrency` probes in flight until one answers or
/// `deadline` passes; answers the winner's base URL and whether the deadline cut the scan short. Every probe task
/// has ended when this returns.
async fn scan(
    http: &pm_http::HttpClient,
    subnet: Subnet,
    options: &DiscoverOptions,
    deadline: Instant,
) -> (Option<String>, bool) {
    let mut hosts = subnet.hosts();
    let mut probes = JoinSet::new();
    let concurrency = options.concurrency.max(1);
    let mut res = (None, false);
    loop {
        while probes.len() < concurrency {
            let Some(ip) = hosts.next() else { break };
            let base_url = format!("http://{ip}:{}", options.port);
            let http = http.clone();
            let probe_timeout = options.probe_timeout;
            probes.spawn(async move { probe(&http, &base_url, probe_timeout).await.then_some(base_url) });
        }
        let next = tokio::select! {
            next = probes.join_next() => next,
            () = tokio::time::sleep_until(deadline) => {
                res.1 = true;
                break;
            }
        };
        match next {
            // Every host probed, none answered.
            None => break,
            Some(Ok(Some(base_url))) => {
                res.0 = Some(base_url);
                break;
            }
            Some(Ok(None)) => {}
            Some(Err(err)) => tracing::debug!("a discovery probe failed: {err}"),
        }
    }
    // Aborts the probes still in flight and waits until they are gone.
    probes.shutdown().await;
    res
}

/// The IPv4 addresses of the interfaces that are up, running and not loopback, in the order `getifaddrs` lists
/// them (no safe crate in the build reads the interface list).
fn interface_ipv4s() -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that stays valid until the freeifaddrs below, which
    // releases it once; only non-null elements and addresses are read, and an address is read as a sockaddr_in
    // only when its family says AF_INET.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut cursor = list;
        while let Some(entry) = cursor.as_ref() {
            cursor = entry.ifa_next;
            let flags = entry.ifa_flags;
            let usable = flags & libc::IFF_UP as u32 != 0 && flags & libc::IFF_RUNNING as u32 != 0;
            if !usable || flags & libc::IFF_LOOPBACK as u32 != 0 || entry.ifa_addr.is_null() {
                continue;
            }
            if i32::from((*entry.ifa_addr).sa_family) == libc::AF_INET {
                let addr = &*(entry.ifa_addr as *const libc::sockaddr_in);
                found.push(Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)));
            }
        }
        libc::freeifaddrs(list);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<&str>) {
        match (Subnet::parse(text), expected) {
            (Ok(subnet), Some(want)) => assert_eq!(subnet.to_string(), want, "{text:?}"),
            (Err(Error::Invalid(message)), None) => assert!(message.contains("/24"), "{message}"),
            (got, want) => panic!("{text:?}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn the_guides_discovery_adds_this_hosts_own_subnet_to_the_loopback_candidates() {
        // The options only: a test must not probe anything beyond loopback.
        let guide = DiscoverOptions::guide();
        assert_eq!(guide.subnet, Subnet::of_this_host());
        assert_eq!(DiscoverOptions { subnet: None, ..guide }, DiscoverOptions::default());
        assert_eq!(DiscoverOptions::default().subnet, None);
        if let Some(subnet) = Subnet::of_this_host() {
            let network = subnet.network();
            assert!(!network.is_loopback() && !network.is_link_local(), "{subnet}");
        }
    }

    #[test]
    fn subnets() {
        check("127.0.0.0/24", Some("127.0.0.0/24"));
        check("192.168.1.77/24", Some("192.168.1.0/24"));
        check(" 10.0.0.0/24 ", Some("10.0.0.0/24"));
        for bad in ["127.0.0.0", "127.0.0.0/16", "127.0.0.0/", "127.0.0/24", "::1/24", "a.b.c.d/24", ""] {
            check(bad, None);
        }
        let subnet = Subnet::from_ip(Ipv4Addr::new(127, 0, 0, 9));
        assert_eq!(subnet.network(), Ipv4Addr::new(127, 0, 0, 0));
        let hosts: Vec<Ipv4Addr> = subnet.hosts().collect();
        assert_eq!(hosts.len(), 254);
        assert_eq!(hosts[0], Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(hosts[253], Ipv4Addr::new(127, 0, 0, 254));
    }

    #[test]
    fn defaults_scan_no_subnet() {
        let options = DiscoverOptions::default();
        assert_eq!(options.subnet, None);
        assert_eq!(options.candidates, ["0.0.0.0", "127.0.0.1", "localhost"]);
        assert_eq!((options.port, options.concurrency), (19881, 64));
        assert_eq!(options.timeout, Duration::from_secs(5));
        assert_eq!(options.probe_timeout, Duration::from_millis(300));
    }

    #[test]
    fn own_subnet_is_never_loopback() {
        // Sends nothing: a UDP connect only picks a route.
        if let Some(subnet) = Subnet::of_this_host() {
            assert!(!subnet.network().is_loopback(), "{subnet}");
        }
        assert_eq!(DiscoverOptions::default().with_local_subnet().subnet, Subnet::of_this_host());
    }

    #[test]
    fn candidate_urls() {
        assert_eq!(candidate_url("localhost", 1).unwrap(), "http://localhost:1");
        assert_eq!(candidate_url("0.0.0.0", 19881).unwrap(), "http://0.0.0.0:19881");
        assert_eq!(candidate_url("::1", 2).unwrap(), "http://[::1]:2");
        assert!(candidate_url("a/b", 2).is_err());
        assert!(candidate_url("", 2).is_err());
    }
}
