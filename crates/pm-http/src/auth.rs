//! Authentication of the remote API: scoped bearer tokens (only their SHA-256 hashes are stored, in a 0600 file
//! beside the registry), the browser rule (`Origin`, `Sec-Fetch-Site`) and the scope each endpoint needs.
//!
//! The decision itself (who may do what) is [`authenticate`] plus [`Access::permits`]; the router in `api.rs`
//! applies the guide's address rules (trusted hosts, `allowRemote*`, whitelist) on top of it. See
//! `docs/authentication.md` for the decision table.

use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, HOST, ORIGIN, WWW_AUTHENTICATE};
use hyper::StatusCode;
use pm_core::{RemoteAccessConfig, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::server::{json_error, HttpResponse};

/// Prefix of every token this monitor makes; the rest is 64 lower-case hex digits (256 random bits).
const TOKEN_PREFIX: &str = "pmt_";
/// Length of a whole token.
const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 64;

/// What a token may do. Ordered: each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every `GET`.
    Read,
    /// `read`, and start, stop, restart, enable, disable and autostart of processes.
    Operate,
    /// Everything: register, deregister, configuration changes, monitor restart.
    Admin,
}

impl Scope {
    /// Parses `read`, `operate` or `admin`.
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "read" => Some(Scope::Read),
            "operate" => Some(Scope::Operate),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: the `token list` table aligns the scope column with a width.
        f.pad(self.as_str())
    }
}

/// One token as stored: never the token itself, only the hex SHA-256 of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// Unique name, for `token list` and `token revoke`.
    pub name: String,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
    /// What it may do.
    pub scope: Scope,
    /// The processes it may act on; empty means every process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working (`None`: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's name (for the log; never sent back to the peer).
    pub name: String,
    /// Its scope.
    pub scope: Scope,
    /// The processes it is limited to (empty: all).
    pub processes: Vec<String>,
}

impl Grant {
    /// Whether the token may act on process `id`.
    pub fn covers(&self, id: &str) -> bool {
        self.processes.is_empty() || self.processes.iter().any(|allowed| allowed == id)
    }
}

/// The token file `processes_{id}.tokens.json`: created 0600, replaced atomically, read on every request that
/// carries a token (so a revocation takes effect on the next request).
///
/// A file that does not parse is never replaced: [`TokenStore::create`] and [`TokenStore::revoke`] refuse with an
/// error naming it, and every token is refused until it is fixed.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
}

impl TokenStore {
    /// The store in `path`.
    pub fn new(path: impl Into<PathBuf>) -> TokenStore {
        TokenStore { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every token record (an absent file has none).
    pub fn list(&self) -> io::Result<Vec<TokenRecord>> {
        Ok(self.read()?.tokens)
    }

    /// Makes a token and stores its hash; returns the token, which is shown only this once.
    ///
    /// Refuses an empty or duplicate name, a name with control characters, and process ids that are not valid.
    pub fn create(
        &self,
        name: &str,
        scope: Scope,
        expires_in: Option<Duration>,
        processes: Vec<String>,
    ) -> io::Result<String> {
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(invalid(format!("token name {name:?} must be 1 to 128 printable characters")));
        }
        for id in &processes {
            pm_core::validate_process_id(id).map_err(|err| invalid(err.to_string()))?;
        }
        let mut file = self.read()?;
        if file.tokens.iter().any(|record| record.name == name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("a token named {name:?} exists already; revoke it first or choose another name"),
            ));
        }
        let token = new_token()?;
        let now = Timestamp::now();
        let expires_at = match expires_in {
            Some(duration) => {
                let millis = i64::try_from(duration.as_millis()).map_err(|_| invalid("expiry too far".to_owned()))?;
                Some(now.plus_millis(millis))
            }
            None => None,
        };
        file.tokens.push(TokenRecord {
            name: name.to_owned(),
            sha256: hex(&Sha256::digest(token.as_bytes())),
            scope,
            processes,
            created_at: now,
            expires_at,
        });
        self.write(&file)?;
        Ok(token)
    }

    /// Removes the token named `name`; `false` when there is none.
    pub fn revoke(&self, name: &str) -> io::Result<bool> {
        let mut file = self.read()?;
        let before = file.tokens.len();
        file.tokens.retain(|record| record.name != name);
        if file.tokens.len() == before {
            return Ok(false);
        }
        self.write(&file)?;
        Ok(true)
    }

    /// What `presented` grants at `now`: `None` when it is malformed, unknown, expired, or the file cannot be
    /// read. Every stored hash is compared, in constant time, whatever matches.
    pub fn verify(&self, presented: &str, now: Timestamp) -> Option<Grant> {
        if !well_formed(presented) {
            return None;
        }
        let file = match self.read() {
            Ok(file) => file,
            Err(err) => {
                tracing::error!("cannot read the token file {}: {err}; refusing every token", self.path.display());
                return None;
            }
        };
        let digest = Sha256::digest(presented.as_bytes());
        let mut found: Option<&TokenRecord> = None;
        for record in &file.tokens {
            let Some(stored) = unhex32(&record.sha256) else { continue };
            if constant_time_eq(&stored, digest.as_slice()) {
                found = Some(record);
            }
        }
        let record = found?;
        if record.expires_at.is_some_and(|at| at.unix_millis() <= now.unix_millis()) {
            return None;
        }
        Some(Grant { name: record.name.clone(), scope: record.scope, processes: record.processes.clone() })
    }

    fn read(&self) -> io::Result<TokenFile> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(TokenFile::default()),
            Err(err) => return Err(io::Error::new(err.kind(), format!("cannot read {}: {err}", self.path.display()))),
        };
        serde_json::from_slice(&text).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a valid token file ({err}); fix or remove it", self.path.display()),
            )
        })
    }

    /// Writes a temporary file with mode 0600 beside the target, syncs it, and renames it over the target.
    fn write(&self, file: &TokenFile) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        // A home made here is private, as the monitor makes it.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700).create(dir)?;
        let name = self.path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let body = serde_json::to_vec_pretty(file).map_err(io::Error::other)?;
        let res = (|| {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            out.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            out.write_all(&body)?;
            out.write_all(b"\n")?;
            out.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.map_err(|err| io::Error::new(err.kind(), format!("cannot write {}: {err}", self.path.display())))
    }
}

/// 256 random bits from the kernel, as `pmt_` and 64 hex digits.
fn new_token() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (idx, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(idx * 2..idx * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Parses an expiry like `30d`, `12h`, `90m`, `3600s` or `2w` (a positive whole number and one unit).
pub fn parse_expiry(text: &str) -> Option<Duration> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let number: u64 = number.parse().ok().filter(|n| *n > 0)?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    number.checked_mul(seconds).filter(|secs| *secs <= 100 * 365 * 86_400).map(Duration::from_secs)
}

/// How the request reached the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A TCP peer at this (normalised) address; `tls` when the connection is TLS.
    Tcp { ip: IpAddr, tls: bool },
    /// A peer on the unix socket with these credentials (`SO_PEERCRED`).
    Unix { uid: u32 },
}

/// Who a request is from, once authenticated.
#[derive(Debug, Clone)]
pub(crate) enum Access {
    /// A unix-socket peer that is the monitor's own user, root, or a user named in `socketUsers`: trusted.
    Local,
    /// A TCP peer, with the grant of its token if it sent one.
    Remote { ip: IpAddr, grant: Option<Grant> },
}

/// The scope an endpoint needs from a token: `read` for every `GET`, `operate` for the process actions, `admin`
/// for everything else.
pub(crate) fn needed_scope(method: &hyper::Method, is_action: bool) -> Scope {
    if method == hyper::Method::GET || method == hyper::Method::HEAD {
        Scope::Read
    } else if is_action {
        Scope::Operate
    } else {
        Scope::Admin
    }
}

impl Access {
    /// The grant of the request's token, if any.
    pub(crate) fn grant(&self) -> Option<&Grant> {
        match self {
            Access::Local => None,
            Access::Remote { grant, .. } => grant.as_ref(),
        }
    }

    /// Whether a token limits this request to its processes, and `id` is not one of them. Without a token
    /// every process is visible.
    pub(crate) fn hides(&self, id: &str) -> bool {
        self.grant().is_some_and(|grant| !grant.covers(id))
    }

    /// Checks the token's scope against an endpoint needing `needed`, acting on `target` (endpoints about the
    /// monitor as a whole a token limited to processes may only read). The error is the 403 to send. Requests
    /// without a token pass: the address rules decide for them.
    // The error is the response to send, made only on refusal; boxing it would cost every caller an unbox.
    #[allow(clippy::result_large_err)]
    pub(crate) fn permits(&self, needed: Scope, target: Target<'_>) -> Result<(), HttpResponse> {
        let Some(grant) = self.grant() else { return Ok(()) };
        let in_scope = grant.scope >= needed
            && match target {
                Target::Process(id) => grant.covers(id),
                Target::Monitor => grant.processes.is_empty() || needed == Scope::Read,
                Target::InBody => true,
            };
        if in_scope {
            Ok(())
        } else {
            tracing::info!(token = %grant.name, "refused: outside the token's scope");
            Err(json_error(StatusCode::FORBIDDEN, "Not permitted for this token"))
        }
    }
}

/// What a request acts on, for a token limited to processes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// This process.
    Process(&'a str),
    /// The monitor as a whole (its status, settings, restart, the list).
    Monitor,
    /// A process named in the body (registration): checked again once the body is read.
    InBody,
}

/// Users allowed on the socket: the monitor's own (effective) user, root, and the users named in `socketUsers`
/// (by name or numeric uid).
pub(crate) fn socket_peer_allowed(uid: u32, remote: &RemoteAccessConfig) -> bool {
    let own = rustix::process::geteuid().as_raw();
    if uid == 0 || uid == own {
        return true;
    }
    if remote.socket_users.is_empty() {
        return false;
    }
    let name = user_name(uid);
    remote.socket_users.iter().map(|entry| entry.trim()).any(|entry| {
        entry.parse::<u32>().is_ok_and(|allowed| allowed == uid) || name.as_deref().is_some_and(|name| name == entry)
    })
}

/// The login name of `uid` (`getpwuid_r`, which asks NSS as well as `/etc/passwd`; no safe crate in the build
/// has it), `None` when it has none.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids), only read after a successful call; every
    // pointer passed is valid for the call; on success `pw_name` is null or points at a NUL-terminated string
    // inside `buf`, which outlives its copy here.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result);
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned())
    }
}

/// The `Authorization` header, as far as a bearer token goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Bearer<'a> {
    /// No `Authorization` header.
    Absent,
    /// A header that is not exactly one `Bearer <token>`.
    Malformed,
    /// The token.
    Token(&'a str),
}

/// Reads the bearer token of a request from its one `Authorization` header (never from the query string).
pub(crate) fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Bearer::Absent };
    if values.next().is_some() {
        return Bearer::Malformed;
    }
    let Ok(value) = value.to_str() else { return Bearer::Malformed };
    let Some((scheme, token)) = value.trim().split_once(' ') else { return Bearer::Malformed };
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Bearer::Malformed;
    }
    Bearer::Token(token)
}

/// What the browser headers of a request say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Browser {
    /// No `Origin` and no cross-site `Sec-Fetch-Site`: a command-line client (or a same-origin navigation).
    No,
    /// A request from a page of the monitor's own origin.
    SameOrigin,
    /// A request from another site: refused.
    CrossSite,
}

/// Classifies a request by its `Origin` and `Sec-Fetch-Site` headers. The monitor's own origin is `http://` or
/// `https://` followed by the request's `Host` (with or without the scheme's default port): only the monitor
/// serves on that host and port, whichever scheme a page (or a TLS proxy in front) used. `tls` says which scheme
/// this connection has; either is accepted.
pub(crate) fn browser(headers: &HeaderMap, tls: bool) -> Browser {
    let _ = tls;
    let fetch_site = headers.get_all("sec-fetch-site").iter().any(|value| {
        value.to_str().map_or(true, |value| {
            let value = value.trim();
            value.eq_ignore_ascii_case("cross-site") || value.eq_ignore_ascii_case("same-site")
        })
    });
    if fetch_site {
        return Browser::CrossSite;
    }
    let mut origins = headers.get_all(ORIGIN).iter();
    let Some(origin) = origins.next() else { return Browser::No };
    if origins.next().is_some() {
        return Browser::CrossSite;
    }
    let mut hosts = headers.get_all(HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else { return Browser::CrossSite };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else { return Browser::CrossSite };
    let host = host.trim();
    let own = |scheme: &str, default_port: &str| {
        let bare = host.strip_suffix(default_port).unwrap_or(host);
        [host, bare].iter().any(|candidate| {
            origin.eq_ignore_ascii_case(&format!("{scheme}{candidate}"))
                || origin.eq_ignore_ascii_case(&format!("{scheme}{candidate}{default_port}"))
        })
    };
    if !host.is_empty() && (own("http://", ":80") || own("https://", ":443")) {
        Browser::SameOrigin
    } else {
        Browser::CrossSite
    }
}

/// The 401 answer: no detail on what was wrong with the token.
pub(crate) fn unauthorized() -> HttpResponse {
    let mut res = json_error(StatusCode::UNAUTHORIZED, "Authentication required");
    res.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"process-monitor\""));
    res
}

/// Authenticates a request; the error is the response to send (403 for another site or socket user, 401 for a
/// missing or bad token). See `docs/authentication.md` for the table.
#[allow(clippy::result_large_err)] // as for `Access::permits`
pub(crate) fn authenticate(
    headers: &HeaderMap,
    transport: Transport,
    remote: &RemoteAccessConfig,
    tokens: Option<&TokenStore>,
) -> Result<Access, HttpResponse> {
    let (ip, tls) = match transport {
        Transport::Unix { uid } => {
            return if socket_peer_allowed(uid, remote) {
                Ok(Access::Local)
            } else {
                tracing::info!(uid, "refused: socket peer not permitted");
                Err(json_error(StatusCode::FORBIDDEN, "Forbidden"))
            };
        }
        Transport::Tcp { ip, tls } => (ip, tls),
    };
    let browser = browser(headers, tls);
    if browser == Browser::CrossSite {
        tracing::info!(peer = %ip, "refused: cross-site request");
        return Err(json_error(StatusCode::FORBIDDEN, "Cross-site requests are refused"));
    }
    let grant = match bearer(headers) {
        Bearer::Absent => None,
        Bearer::Malformed => return Err(unauthorized()),
        Bearer::Token(token) => match tokens.and_then(|store| store.verify(token, Timestamp::now())) {
            Some(grant) => Some(grant),
            None => {
                tracing::info!(peer = %ip, "refused: invalid token");
                return Err(unauthorized());
            }
        },
    };
    if grant.is_none() && (remote.require_token || browser == Browser::SameOrigin) {
        return Err(unauthorized());
    }
    Ok(Access::Remote { ip, grant })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn expiries() {
        assert_eq!(parse_expiry("30d"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_expiry("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_expiry("90m"), Some(Duration::from_secs(90 * 60)));
        assert_eq!(parse_expiry("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_expiry("2w"), Some(Duration::from_secs(14 * 86_400)));
        for bad in ["", "d", "0d", "-1d", "1.5d", "10", "10y", "1d2h", "99999999999999d"] {
            assert_eq!(parse_expiry(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer(&headers(&[])), Bearer::Absent);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer abc")])), Bearer::Token("abc"));
        assert_eq!(bearer(&headers(&[("authorization", "bearer  abc ")])), Bearer::Token("abc"));
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), Bearer::Malformed);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer")])), Bearer::Malformed);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), Bearer::Malformed);
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")])),
            Bearer::Malformed
        );
    }

    #[test]
    fn browser_headers() {
        let check = |pairs: &[(&'static str, &str)], tls: bool, expected: Browser| {
            assert_eq!(browser(&headers(pairs), tls), expected, "{pairs:?}")
        };
        check(&[], false, Browser::No);
        check(&[("host", "127.0.0.1:19881")], false, Browser::No);
        check(&[("host", "127.0.0.1:19881"), ("origin", "http://127.0.0.1:19881")], false, Browser::SameOrigin);
        check(&[("host", "localhost:80"), ("origin", "http://localhost")], false, Browser::SameOrigin);
        check(&[("host", "localhost"), ("origin", "http://localhost:80")], false, Browser::SameOrigin);
        check(&[("host", "mon:19881"), ("origin", "https://mon:19881")], true, Browser::SameOrigin);
        check(&[("host", "mon:19881"), ("origin", "https://mon:19881")], false, Browser::SameOrigin);
        check(&[("host", "mon:443"), ("origin", "https://mon")], false, Browser::SameOrigin);
        check(&[("host", "mon:19881"), ("origin", "https://mon:19882")], true, Browser::CrossSite);
        check(&[("host", "mon:19881"), ("origin", "ftp://mon:19881")], false, Browser::CrossSite);
        check(&[("host", "mon"), ("origin", "http://mon.evil")], false, Browser::CrossSite);
        check(&[("host", "127.0.0.1:19881"), ("origin", "http://evil.example")], false, Browser::CrossSite);
        check(&[("host", "127.0.0.1:19881"), ("origin", "null")], false, Browser::CrossSite);
        check(&[("origin", "http://127.0.0.1:19881")], false, Browser::CrossSite);
        check(&[("host", ""), ("origin", "http://")], false, Browser::CrossSite);
        check(&[("sec-fetch-site", "cross-site")], false, Browser::CrossSite);
        check(&[("sec-fetch-site", "same-site")], false, Browser::CrossSite);
        check(&[("sec-fetch-site", "same-origin")], false, Browser::No);
        check(&[("sec-fetch-site", "none")], false, Browser::No);
        check(
            &[("host", "h:1"), ("origin", "http://h:1"), ("sec-fetch-site", "cross-site")],
            false,
            Browser::CrossSite,
        );
    }

    #[test]
    fn scopes_are_ordered() {
        assert!(Scope::Read < Scope::Operate && Scope::Operate < Scope::Admin);
        for scope in [Scope::Read, Scope::Operate, Scope::Admin] {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("root"), None);
        // The `token list` table pads the column.
        assert_eq!(format!("{:<8}|", Scope::Read), "read    |");
    }

    #[test]
    fn token_store_round_trip() {
        let dir = std::env::temp_dir().join(format!("pm-auth-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = TokenStore::new(dir.join("tokens.json"));
        let token = store.create("ci", Scope::Operate, None, vec!["api".to_owned()]).unwrap();
        assert!(well_formed(&token), "{token}");
        let grant = store.verify(&token, Timestamp::now()).unwrap();
        assert_eq!((grant.scope, grant.processes.as_slice()), (Scope::Operate, ["api".to_owned()].as_slice()));
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(&token[TOKEN_PREFIX.len()..]), "plain token stored: {text}");
        assert_eq!(std::fs::metadata(store.path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(store.create("ci", Scope::Read, None, vec![]).is_err(), "duplicate name");
        let mut other = token.clone();
        other.replace_range(10..11, if &token[10..11] == "0" { "1" } else { "0" });
        assert_eq!(store.verify(&other, Timestamp::now()), None);
        let short = store.create("short", Scope::Read, Some(Duration::from_secs(1)), vec![]).unwrap();
        assert!(store.verify(&short, Timestamp::now()).is_some());
        assert_eq!(store.verify(&short, Timestamp::now().plus_millis(2_000)), None, "expired");
        assert!(store.revoke("ci").unwrap());
        assert!(!store.revoke("ci").unwrap());
        assert_eq!(store.verify(&token, Timestamp::now()), None, "revoked");
        std::fs::write(store.path(), "{not json").unwrap();
        assert_eq!(store.verify(&short, Timestamp::now()), None);
        let err = store.create("x", Scope::Read, None, vec![]).unwrap_err();
        assert!(err.to_string().contains("not a valid token file"), "{err}");
        assert_eq!(std::fs::read_to_string(store.path()).unwrap(), "{not json", "a corrupt file is kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn constant_time_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
