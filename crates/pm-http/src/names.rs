//! Confirmed host names of a peer address, for hostname trusted-host patterns.
//!
//! A name counts only when the reverse lookup of the peer (`getnameinfo` with `NI_NAMEREQD`) is confirmed by a
//! forward lookup of that name that contains the peer address, so a peer cannot claim a trusted name through its
//! own reverse DNS zone. Lookups run on the blocking pool, are bounded by a timeout (a late answer counts as no
//! name) and by a small number running at once, and their results are cached per address for a minute.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// How long a lookup result is reused.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Time allowed for the reverse plus forward lookup of one request.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// Lookups running at once; when all are busy a peer gets no names (and so no hostname trust). A lookup holds a
/// thread of the blocking pool until the resolver gives up, well past the request's timeout, so this stays far
/// below the pool's size (16 in the daemon): slow DNS for untrusted peers cannot starve registry and log work.
const MAX_LOOKUPS: usize = 4;
/// Cached addresses kept at most.
const MAX_CACHED: usize = 4096;

/// A cache of confirmed names per peer address.
#[derive(Debug)]
pub(crate) struct NameResolver {
    cache: Mutex<HashMap<IpAddr, (Instant, Vec<String>)>>,
    lookups: Arc<Semaphore>,
}

impl NameResolver {
    pub(crate) fn new() -> Arc<NameResolver> {
        Arc::new(NameResolver { cache: Mutex::new(HashMap::new()), lookups: Arc::new(Semaphore::new(MAX_LOOKUPS)) })
    }

    /// The confirmed names of `ip` (already normalised); empty when there are none or the lookup was too slow.
    pub(crate) async fn confirmed_names(self: &Arc<Self>, ip: IpAddr) -> Vec<String> {
        if let Some(names) = self.cached(ip) {
            return names;
        }
        let Ok(permit) = self.lookups.clone().try_acquire_owned() else {
            tracing::warn!(%ip, "too many host name lookups running; treating the peer as unnamed");
            return Vec::new();
        };
        let this = self.clone();
        let lookup = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let names = confirmed_names_blocking(ip);
            this.store(ip, names.clone());
            names
        });
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(names)) => names,
            Ok(Err(err)) => {
                tracing::warn!(%ip, "host name lookup failed: {err}");
                Vec::new()
            }
            Err(_) => {
                tracing::info!(%ip, "host name lookup timed out; treating the peer as unnamed");
                Vec::new()
            }
        }
    }

    fn cached(&self, ip: IpAddr) -> Option<Vec<String>> {
        let cache = self.cache.lock().unwrap_or_else(|poison| poison.into_inner());
        let (at, names) = cache.get(&ip)?;
        (at.elapsed() < CACHE_TTL).then(|| names.clone())
    }

    fn store(&self, ip: IpAddr, names: Vec<String>) {
        let mut cache = self.cache.lock().unwrap_or_else(|poison| poison.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(ip, (Instant::now(), names));
    }
}

/// Reverse-resolves `ip` and keeps the name only when its forward lookup contains `ip` again.
fn confirmed_names_blocking(ip: IpAddr) -> Vec<String> {
    let Some(name) = reverse_lookup(ip) else {
        return Vec::new();
    };
    let confirmed = (name.as_str(), 0)
        .to_socket_addrs()
        .map(|mut addrs| addrs.any(|addr| pm_core::normalize_ip(addr.ip()) == ip))
        .unwrap_or(false);
    if confirmed {
        vec![name]
    } else {
        tracing::info!(%ip, %name, "reverse name not confirmed by its forward lookup");
        Vec::new()
    }
}

/// `getnameinfo(NI_NAMEREQD)`: the host name of `ip`, or `None` when it has none (the system resolver, with
/// `/etc/hosts` and NSS; no safe crate in the build has it).
fn reverse_lookup(ip: IpAddr) -> Option<String> {
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: an all-zero sockaddr_storage is a valid value, large and aligned enough for any sockaddr type, so
    // it may be written as a sockaddr_in or sockaddr_in6; getnameinfo reads `len` initialised bytes of it and
    // writes at most `host.len()` bytes into `host` (no service buffer is requested); on success it wrote a
    // NUL-terminated string there, which is copied before `host` goes away.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let len = match ip {
            IpAddr::V4(v4) => {
                let sin = &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(v4.octets()) };
                #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd", target_os = "openbsd"))]
                {
                    sin.sin_len = std::mem::size_of::<libc::sockaddr_in>() as u8;
                }
                std::mem::size_of::<libc::sockaddr_in>()
            }
            IpAddr::V6(v6) => {
                let sin6 = &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_addr = libc::in6_addr { s6_addr: v6.octets() };
                #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd", target_os = "openbsd"))]
                {
                    sin6.sin6_len = std::mem::size_of::<libc::sockaddr_in6>() as u8;
                }
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        let rc = libc::getnameinfo(
            (&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        );
        if rc != 0 {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(host.as_ptr());
        let name = name.to_str().ok()?.trim_end_matches('.').to_owned();
        (!name.is_empty()).then_some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_reverse_lookup_is_confirmed() {
        // 127.0.0.1 is named in /etc/hosts on any sane system, so this needs no network.
        let names = confirmed_names_blocking("127.0.0.1".parse().unwrap());
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(pm_core::host_is_trusted("127.0.0.1".parse().unwrap(), &names, &[names[0].clone()]));
    }

    #[tokio::test]
    async fn results_are_cached() {
        let resolver = NameResolver::new();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        resolver.store(ip, vec!["cached.example".to_owned()]);
        assert_eq!(resolver.confirmed_names(ip).await, vec!["cached.example".to_owned()]);
    }
}
