//! Security regressions against the real daemon: every refusal of the remote API, connection floods bounded by
//! the connection limit, and private file modes.
//!
//! The sites trust 127.0.0.1 only; 127.0.0.2 (the same loopback, another source address) is the untrusted
//! peer. Every refusal is checked for its status and message, and for having changed nothing: no process
//! created, started, stopped or removed, no setting changed, no file created.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pm_core::{ProcessEntry, ProcessState, Registry, Settings, Timestamp};
use pm_tests::report;
use pm_tests::site::{DaemonOptions, Site};
use pm_tests::wire::{self, Reply};
use serde_json::{json, Value};

pub(crate) const UNTRUSTED: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
pub(crate) const TRUSTED: Option<IpAddr> = None;

pub(crate) fn site(label: &str) -> Option<Site> {
    let site = Site::new(label, Path::new(env!("CARGO_BIN_EXE_pm-test-reaper")))?;
    site.edit(|registry| registry.remote_access.trusted_hosts = vec!["127.0.0.1".to_owned()]);
    Some(site)
}

pub(crate) fn call(site: &Site, from: Option<IpAddr>, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let bytes = body.map(Value::to_string).unwrap_or_default();
    wire::request(wire::local(site.remote_port), from, method, path, &[], bytes.as_bytes())
        .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
}

pub(crate) fn call_with(
    site: &Site,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Reply {
    wire::request(wire::local(site.remote_port), from, method, path, headers, body.to_string().as_bytes())
        .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
}

pub(crate) fn wait_until(timeout: Duration, what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Everything a refusal must leave alone: stored configurations and settings, runtime states and PIDs, the
/// files of the home.
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot {
    configs: BTreeMap<String, pm_core::ProcessConfig>,
    settings: Settings,
    runtime: BTreeMap<String, (ProcessState, Option<u32>)>,
    files: Vec<PathBuf>,
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut res = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Files the daemon rewrites on its own (registry saves, monitor logs, test bookkeeping) are not
            // what a refusal could create.
            if name.contains(".tmp-") || name.ends_with(".bak") || name.ends_with(".stderr") || name == "starts" {
                continue;
            }
            if path.is_dir() {
                todo.push(path.clone());
            }
            res.push(path);
        }
    }
    res.sort();
    res
}

pub(crate) fn snapshot(site: &Site) -> Snapshot {
    let registry: Registry = site.registry().unwrap();
    Snapshot {
        configs: registry.processes.iter().map(|(id, entry)| (id.clone(), entry.config.clone())).collect(),
        settings: Settings::of(&registry),
        runtime: site.statuses().unwrap().into_iter().map(|(id, s)| (id, (s.state, s.pid))).collect(),
        files: files_under(&site.dir)
            .into_iter()
            .filter(|path| {
                !path.starts_with(site.paths().logs_dir())
                    || path.components().count() <= site.paths().logs_dir().components().count() + 1
            })
            .collect(),
    }
}

/// Registers a sleeper `id` through the API from the trusted peer (so it is a remote process) and waits
/// until it runs.
fn remote_sleeper(site: &Site, id: &str) -> u32 {
    let config = serde_json::to_value(site.sleeper(id)).unwrap();
    let res = call(site, TRUSTED, "POST", "/processes", Some(&config));
    assert_eq!(res.status, 200, "{}", res.text());
    wait_running(site, id)
}

/// Waits until the sleeper `id` runs as one process and the monitor reports it `running` with that PID: the
/// child exists a moment before the monitor publishes its start, and a snapshot taken in between is not the
/// settled state a refusal must leave unchanged.
fn wait_running(site: &Site, id: &str) -> u32 {
    wait_until(Duration::from_secs(20), &format!("{id} runs and is reported running"), || {
        let copies = site.copies(id);
        let reported = site.statuses().and_then(|statuses| statuses.get(id).map(|s| (s.state, s.pid)));
        copies.len() == 1 && reported == Some((ProcessState::Running, Some(copies[0])))
    });
    site.copies(id)[0]
}

/// Adds a local sleeper to the registry before the daemon starts.
fn local_sleeper(site: &Site, id: &str) {
    let config = site.sleeper(id);
    site.edit(|registry| {
        registry.processes.insert(id.to_owned(), ProcessEntry::new(config, Timestamp::now()).into());
    });
}

pub(crate) fn set_permissions(site: &Site, patch: Value) {
    let res = call(site, TRUSTED, "PUT", "/config/remote-access", Some(&patch));
    assert_eq!(res.status, 200, "{}", res.text());
}

const FLAGS: &[&str] = &[
    "allowRemoteRegister",
    "allowRemoteDeregister",
    "allowRemoteStart",
    "allowRemoteStop",
    "allowRemoteDisable",
    "allowRemoteAutostart",
    "allowRemoteMonitorRestart",
];

pub(crate) fn all_flags(on: bool) -> Value {
    Value::Object(FLAGS.iter().map(|flag| (flag.to_string(), Value::Bool(on))).collect())
}

#[test]
fn untrusted_peers_need_the_permission_of_each_action() {
    let Some(site) = site("sec-perm") else { return };
    site.start_daemon();
    let pid = remote_sleeper(&site, "rp");
    set_permissions(&site, all_flags(false));
    let autostart = json!({"autostart": false});
    let cases: &[(&str, &str, &str, Option<&Value>, &str)] = &[
        ("allowRemoteStart", "POST", "/processes/rp/start", None, "Remote start not allowed"),
        ("allowRemoteStop", "POST", "/processes/rp/stop", None, "Remote stop not allowed"),
        ("allowRemoteStart", "POST", "/processes/rp/restart", None, "Remote restart not allowed"),
        ("allowRemoteStop", "POST", "/processes/rp/restart", None, "Remote restart not allowed"),
        ("allowRemoteDisable", "POST", "/processes/rp/disable", None, "Remote disable not allowed"),
        ("allowRemoteDisable", "POST", "/processes/rp/enable", None, "Remote enable not allowed"),
        (
            "allowRemoteAutostart",
            "PUT",
            "/processes/rp/autostart",
            Some(&autostart),
            "Remote autostart change not allowed",
        ),
        ("allowRemoteDeregister", "DELETE", "/processes/rp", None, "Remote deregistration not allowed"),
        ("allowRemoteMonitorRestart", "POST", "/monitor/restart", None, "Monitor restart not allowed"),
    ];
    for (flag, method, path, body, refusal) in cases {
        // Every other flag on: only the one that governs the action is missing.
        let mut flags = all_flags(true);
        flags[*flag] = Value::Bool(false);
        if *path == "/processes/rp/restart" {
            flags["allowRemoteMonitorRestart"] = Value::Bool(false);
        }
        set_permissions(&site, flags);
        let before = snapshot(&site);
        let res = call(&site, UNTRUSTED, method, path, *body);
        assert_eq!((res.status, res.error().as_str()), (403, *refusal), "{method} {path} without {flag}");
        assert_eq!(snapshot(&site), before, "{method} {path} without {flag} changed something");
        assert_eq!(site.copies("rp"), vec![pid]);
    }
    // Registration without allowRemoteRegister, even of a command the whitelist allows.
    let allowed = allowed_tool(&site);
    let mut flags = all_flags(true);
    flags["allowRemoteRegister"] = Value::Bool(false);
    set_permissions(&site, flags);
    whitelist(&site, &[&format!("{}/*", allowed.parent().unwrap().display())], &[]);
    let before = snapshot(&site);
    let body = json!({"id": "newp", "name": "n", "command": allowed.to_str().unwrap()});
    let res = call(&site, UNTRUSTED, "POST", "/processes", Some(&body));
    assert_eq!((res.status, res.error().as_str()), (403, "Remote registration not allowed"));
    assert_eq!(snapshot(&site), before);

    // With the flags on, the same peer may act on the remote process (the refusals above were the flags).
    set_permissions(&site, all_flags(true));
    let res = call(&site, UNTRUSTED, "POST", "/processes/rp/stop", None);
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(site.copies("rp").is_empty());
    let res = call(&site, UNTRUSTED, "POST", "/processes/rp/start", None);
    assert_eq!(res.status, 200, "{}", res.text());
    let res = call(&site, UNTRUSTED, "DELETE", "/processes/rp", None);
    assert_eq!(res.status, 200, "{}", res.text());
    wait_until(Duration::from_secs(10), "rp stopped with its deregistration", || site.copies("rp").is_empty());
    report("security: permission flags", &format!("{} refusals, each changing nothing", cases.len() + 1));
}

#[test]
fn untrusted_peers_may_act_only_on_remote_processes() {
    let Some(site) = site("sec-local") else { return };
    local_sleeper(&site, "lp");
    site.start_daemon();
    let pid = wait_running(&site, "lp");
    set_permissions(&site, all_flags(true));
    let autostart = json!({"autostart": false});
    let cases: &[(&str, &str, Option<&Value>)] = &[
        ("POST", "/processes/lp/stop", None),
        ("POST", "/processes/lp/start", None),
        ("POST", "/processes/lp/restart", None),
        ("POST", "/processes/lp/disable", None),
        ("POST", "/processes/lp/enable", None),
        ("PUT", "/processes/lp/autostart", Some(&autostart)),
        ("DELETE", "/processes/lp", None),
    ];
    for (method, path, body) in cases {
        let before = snapshot(&site);
        let res = call(&site, UNTRUSTED, method, path, *body);
        assert_eq!((res.status, res.error().as_str()), (403, "Cannot modify local process"), "{method} {path}");
        assert_eq!(snapshot(&site), before, "{method} {path} changed something");
    }
    assert_eq!(site.copies("lp"), vec![pid], "the local process was touched");
    // Reading is open to every peer.
    assert_eq!(call(&site, UNTRUSTED, "GET", "/processes/lp", None).status, 200);
    report("security: local processes", &format!("{} refusals", cases.len()));
}

#[test]
fn untrusted_peers_may_not_change_the_configuration() {
    let Some(site) = site("sec-config") else { return };
    site.start_daemon();
    let cases = [
        ("remote-access", json!({"allowRemoteMonitorRestart": true})),
        ("trusted-hosts", json!({"trustedHosts": ["127.0.0.2"]})),
        ("executable-whitelist", json!({"patterns": ["/**"]})),
        ("executable-blacklist", json!({"patterns": []})),
        ("standalone-mode", json!({"enabled": false})),
        ("partner-discovery", json!({"startPartnerIfMissing": true})),
    ];
    for (item, body) in &cases {
        let before = snapshot(&site);
        let path = format!("/config/{item}");
        let res = call(&site, UNTRUSTED, "PUT", &path, Some(body));
        assert_eq!((res.status, res.error().as_str()), (403, "Configuration changes require trusted host"), "{path}");
        assert_eq!(snapshot(&site), before, "PUT {path} changed something");
        assert_eq!(call(&site, UNTRUSTED, "GET", &path, None).status, 200, "GET {path}");
    }
    report("security: configuration", &format!("{} refusals", cases.len()));
}

/// `{dir}/allowed/tool`: an executable script in an allowed folder.
pub(crate) fn allowed_tool(site: &Site) -> PathBuf {
    let folder = site.dir.join("allowed");
    std::fs::create_dir_all(&folder).unwrap();
    let tool = folder.join("tool");
    std::fs::write(&tool, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::canonicalize(tool).unwrap()
}

pub(crate) fn whitelist(site: &Site, white: &[&str], black: &[&str]) {
    let res = call(site, TRUSTED, "PUT", "/config/executable-whitelist", Some(&json!({"patterns": white})));
    assert_eq!(res.status, 200, "{}", res.text());
    let res = call(site, TRUSTED, "PUT", "/config/executable-blacklist", Some(&json!({"patterns": black})));
    assert_eq!(res.status, 200, "{}", res.text());
}

#[test]
fn remote_registration_needs_a_whitelisted_canonical_executable() {
    let Some(site) = site("sec-exec") else { return };
    site.start_daemon();
    let tool = allowed_tool(&site);
    let allowed = tool.parent().unwrap().to_path_buf();
    std::os::unix::fs::symlink("/bin/sh", allowed.join("sh")).unwrap();
    let outside = site.dir.join("outside-tool");
    std::fs::write(&outside, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
    whitelist(&site, &[&format!("{}/*", allowed.display())], &[]);
    let ups = "../".repeat(30);
    let dir = site.dir.to_str().unwrap();
    let refused = [
        ("dotdot-abs", json!({"command": format!("{}/{ups}bin/sh", allowed.display())})),
        ("dotdot-rel", json!({"command": format!("allowed/{ups}bin/sh"), "workingDirectory": dir})),
        ("dotdot-glob", json!({"command": format!("{}/../allowed/../outside-tool", allowed.display())})),
        ("symlink-sh", json!({"command": allowed.join("sh").to_str().unwrap()})),
        ("symlink-out", json!({"command": allowed.join("escape").to_str().unwrap()})),
        ("bare-sh", json!({"command": "sh"})),
        ("bare-tool", json!({"command": "tool"})),
        ("missing", json!({"command": allowed.join("nothing").to_str().unwrap()})),
        ("relative-no-cwd", json!({"command": "allowed/tool"})),
    ];
    let mut n_refused = 0;
    for (id, fields) in &refused {
        let mut body = json!({"id": id, "name": id});
        for (key, value) in fields.as_object().unwrap() {
            body[key] = value.clone();
        }
        let before = snapshot(&site);
        let res = call(&site, UNTRUSTED, "POST", "/processes", Some(&body));
        assert_eq!(
            (res.status, res.error().as_str()),
            (403, "Executable not permitted by whitelist/blacklist"),
            "{body}"
        );
        assert_eq!(snapshot(&site), before, "{body} created something");
        assert_eq!(call(&site, TRUSTED, "GET", &format!("/processes/{id}"), None).status, 404);
        n_refused += 1;
    }
    // Loader variables would load code into a whitelisted program.
    let body = json!({"id": "ld", "name": "ld", "command": tool.to_str().unwrap(), "environment": {"LD_PRELOAD": "/tmp/x.so"}});
    let before = snapshot(&site);
    let res = call(&site, UNTRUSTED, "POST", "/processes", Some(&body));
    assert_eq!(
        (res.status, res.error().as_str()),
        (403, "Environment variable LD_PRELOAD not permitted for untrusted hosts")
    );
    assert_eq!(snapshot(&site), before);
    n_refused += 1;
    // The blacklist wins over the whitelist; an empty whitelist allows nothing.
    let tool_text = tool.to_str().unwrap();
    for (white, black) in [(vec![format!("{}/*", allowed.display())], vec![tool_text.to_owned()]), (vec![], vec![])] {
        let white: Vec<&str> = white.iter().map(String::as_str).collect();
        let black: Vec<&str> = black.iter().map(String::as_str).collect();
        whitelist(&site, &white, &black);
        let before = snapshot(&site);
        let body = json!({"id": "listed", "name": "l", "command": tool_text});
        let res = call(&site, UNTRUSTED, "POST", "/processes", Some(&body));
        assert_eq!(
            (res.status, res.error().as_str()),
            (403, "Executable not permitted by whitelist/blacklist"),
            "{white:?} {black:?}"
        );
        assert_eq!(snapshot(&site), before);
        n_refused += 1;
    }
    // The control: the whitelisted file itself, through a path with `.` in it, is accepted and stored canonical.
    whitelist(&site, &[&format!("{}/*", allowed.display())], &[]);
    let body = json!({"id": "ok", "name": "ok", "command": format!("{}/./tool", allowed.display())});
    let res = call(&site, UNTRUSTED, "POST", "/processes", Some(&body));
    assert_eq!(res.status, 200, "{}", res.text());
    let stored = site.registry().unwrap().processes["ok"].config.clone();
    assert_eq!(stored.command, tool_text, "stored command is not the canonical path");
    assert!(stored.is_remote);
    report("security: executable whitelist", &format!("{n_refused} registrations refused, nothing created"));
}

#[test]
fn forwarding_headers_and_browsers_do_not_grant_trust() {
    let Some(site) = site("sec-spoof") else { return };
    site.edit(|registry| registry.remote_access.trusted_hosts = vec!["127.0.0.1".to_owned(), "10.9.9.9".to_owned()]);
    site.start_daemon();
    let spoofs: &[&[(&str, &str)]] = &[
        &[("X-Forwarded-For", "10.9.9.9")],
        &[("X-Forwarded-For", "127.0.0.1")],
        &[("X-Forwarded-For", "10.9.9.9, 127.0.0.1")],
        &[("X-Real-IP", "10.9.9.9")],
        &[("Forwarded", "for=127.0.0.1")],
        &[("X-Forwarded-For", "10.9.9.9"), ("X-Real-IP", "127.0.0.1"), ("X-Client-IP", "127.0.0.1")],
    ];
    let body = json!({"enabled": false});
    let register = json!({"id": "spoof", "name": "s", "command": "/bin/sh", "args": ["-c", "sleep 600"]});
    for headers in spoofs {
        let before = snapshot(&site);
        let res = call_with(&site, UNTRUSTED, "PUT", "/config/standalone-mode", headers, &body);
        assert_eq!(
            (res.status, res.error().as_str()),
            (403, "Configuration changes require trusted host"),
            "{headers:?}"
        );
        let res = call_with(&site, UNTRUSTED, "POST", "/processes", headers, &register);
        assert_eq!(res.status, 403, "{headers:?}: {}", res.text());
        assert_eq!(snapshot(&site), before, "{headers:?}");
    }
    // A web page in a browser on a trusted host acts for the page, not for the host's user: another site's page
    // is refused outright (issue 21 item 1).
    let before = snapshot(&site);
    let res = call_with(&site, TRUSTED, "PUT", "/config/standalone-mode", &[("Origin", "http://evil.example")], &body);
    assert_eq!((res.status, res.error().as_str()), (403, "Cross-site requests are refused"));
    assert_eq!(snapshot(&site), before);
    // Trust follows the settings and the TCP peer only: with 10.9.9.9 the only trusted host (a pattern; it is
    // never contacted), 127.0.0.1 is refused as well.
    let res = call(&site, TRUSTED, "PUT", "/config/trusted-hosts", Some(&json!({"trustedHosts": ["10.9.9.9"]})));
    assert_eq!(res.status, 200, "{}", res.text());
    let before = snapshot(&site);
    let res = call_with(&site, TRUSTED, "PUT", "/config/standalone-mode", &[("X-Forwarded-For", "10.9.9.9")], &body);
    assert_eq!((res.status, res.error().as_str()), (403, "Configuration changes require trusted host"));
    assert_eq!(snapshot(&site), before);
    report(
        "security: spoofed headers",
        &format!("{} spoofs refused, Origin refused, trust follows the peer", spoofs.len()),
    );
}

#[test]
fn invalid_process_ids_are_refused_and_create_nothing() {
    let Some(site) = site("sec-ids") else { return };
    site.start_daemon();
    let long = "x".repeat(300);
    let path_ids = ["a%2Fb", "%2e%2e", "..", ".", "", &long, "%2E%2E%2Fescape", "a%00b"];
    let mut n = 0;
    for id in path_ids {
        for (method, suffix) in
            [("GET", ""), ("DELETE", ""), ("POST", "/start"), ("POST", "/stop"), ("PUT", "/autostart")]
        {
            let before = snapshot(&site);
            let path = format!("/processes/{id}{suffix}");
            let body = json!({"autostart": true});
            let res = call(&site, TRUSTED, method, &path, (method == "PUT").then_some(&body));
            assert_eq!(res.status, 400, "{method} {path}: {}", res.text());
            assert!(res.error().starts_with("Invalid process ID"), "{method} {path}: {}", res.text());
            assert_eq!(snapshot(&site), before, "{method} {path}");
            n += 1;
        }
    }
    // The same ids in a registration from the trusted peer (so trust is not what refuses them).
    for id in ["a/b", "..", "../escape", "", &long, "-x", "a\u{0}b", "café"] {
        let before = snapshot(&site);
        let body = json!({"id": id, "name": "n", "command": "/bin/sh", "args": ["-c", "sleep 600"]});
        let res = call(&site, TRUSTED, "POST", "/processes", Some(&body));
        assert_eq!(res.status, 400, "{id:?}: {}", res.text());
        assert!(res.error().starts_with("Missing or invalid field: id"), "{id:?}: {}", res.text());
        assert_eq!(snapshot(&site), before, "{id:?}");
        n += 1;
    }
    assert!(!site.dir.join("escape").exists() && !site.dir.parent().unwrap().join("escape").exists());
    report("security: invalid ids", &format!("{n} requests refused with 400, nothing created"));
}

#[test]
fn a_10_mib_body_is_refused_quickly() {
    let Some(site) = site("sec-body") else { return };
    site.start_daemon();
    let before = snapshot(&site);
    let ten_mib = 10 * 1024 * 1024;
    for from in [TRUSTED, UNTRUSTED] {
        for chunked in [false, true] {
            let mut stream = wire::connect(wire::local(site.remote_port), from).unwrap();
            let head = if chunked {
                "POST /processes HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned()
            } else {
                format!("POST /processes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {ten_mib}\r\n\r\n")
            };
            let started = Instant::now();
            stream.write_all(head.as_bytes()).unwrap();
            // Send the body from another thread, as a client would, until the server closes.
            let mut writer = stream.try_clone().unwrap();
            let sender = std::thread::spawn(move || {
                let block = vec![b'{'; 64 * 1024];
                let mut sent = 0;
                while sent < ten_mib {
                    let res = if chunked {
                        writer.write_all(format!("{:x}\r\n", block.len()).as_bytes()).and_then(|()| {
                            writer.write_all(&block)?;
                            writer.write_all(b"\r\n")
                        })
                    } else {
                        writer.write_all(&block)
                    };
                    if res.is_err() {
                        break;
                    }
                    sent += block.len();
                }
                sent
            });
            let reply = wire::read_reply(&mut stream, Duration::from_secs(5)).unwrap().expect("no answer");
            let took = started.elapsed();
            assert_eq!((reply.status, reply.error().as_str()), (413, "Request body too large"), "chunked {chunked}");
            assert!(took < Duration::from_secs(2), "413 took {took:?} (chunked {chunked})");
            drop(stream);
            let sent = sender.join().unwrap();
            assert!(sent < ten_mib || !chunked, "the server read all 10 MiB of a chunked body");
            report(
                "security: 10 MiB body",
                &format!("413 after {took:.0?} (chunked {chunked}, trusted {})", from.is_none()),
            );
        }
    }
    assert_eq!(snapshot(&site), before);
    assert!(site.alive());
}

#[test]
fn slow_senders_are_cut_off() {
    let Some(site) = site("sec-slow") else { return };
    site.start_daemon();
    let before = snapshot(&site);
    // A head that never ends, one byte every 250 ms: cut off by the 5 s header read timeout.
    let mut head_sender = wire::connect(wire::local(site.remote_port), UNTRUSTED).unwrap();
    head_sender.write_all(b"POST /processes HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").unwrap();
    // A complete head whose body never arrives in full: answered 408 and closed after the same time.
    let mut body_sender = wire::connect(wire::local(site.remote_port), TRUSTED).unwrap();
    body_sender.write_all(b"POST /processes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{").unwrap();
    let started = Instant::now();
    let mut head_cut = None;
    let mut body_answer = None;
    head_sender.set_nonblocking(true).unwrap();
    body_sender.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let mut answer = Vec::new();
    while started.elapsed() < Duration::from_secs(9) && (head_cut.is_none() || body_answer.is_none()) {
        if head_cut.is_none() {
            let mut buf = [0u8; 256];
            match std::io::Read::read(&mut head_sender, &mut buf) {
                Ok(0) => head_cut = Some(started.elapsed()),
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    if head_sender.write_all(b"a").is_err() {
                        head_cut = Some(started.elapsed());
                    }
                }
                Err(_) => head_cut = Some(started.elapsed()),
            }
        }
        if body_answer.is_none() {
            let mut buf = [0u8; 1024];
            match std::io::Read::read(&mut body_sender, &mut buf) {
                Ok(0) => body_answer = Some((started.elapsed(), String::from_utf8_lossy(&answer).into_owned())),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    let _ = body_sender.write_all(b" ");
                }
                Err(_) => body_answer = Some((started.elapsed(), String::from_utf8_lossy(&answer).into_owned())),
            }
        }
        assert!(site.alive(), "/alive must answer while slow senders hold connections");
        std::thread::sleep(Duration::from_millis(250));
    }
    let head_cut = head_cut.expect("a slow header sender was not cut off within 9 s");
    let (body_cut, body_answer) = body_answer.expect("a slow body sender was not cut off within 9 s");
    assert!(head_cut <= Duration::from_millis(7500), "slow header sender cut off only after {head_cut:?}");
    assert!(body_cut <= Duration::from_millis(7500), "slow body sender cut off only after {body_cut:?}");
    assert!(body_answer.starts_with("HTTP/1.1 408"), "slow body answered {body_answer:?}");
    assert_eq!(snapshot(&site), before);
    report("security: slow senders", &format!("head cut after {head_cut:.1?}, body answered 408 after {body_cut:.1?}"));
}

#[test]
fn a_connection_flood_is_bounded_by_the_connection_limit() {
    let Some(site) = site("sec-flood") else { return };
    let daemon = site.start_daemon();
    let before = snapshot(&site);
    let fds_before = pm_tests::procs::fd_count(daemon).unwrap();
    let n = 400;
    let limit = 256;
    let started = Instant::now();
    let mut streams: Vec<TcpStream> = Vec::new();
    for idx in 0..n {
        let from = if idx % 2 == 0 { TRUSTED } else { UNTRUSTED };
        streams.push(wire::connect(wire::local(site.remote_port), from).expect("connect"));
    }
    let opened = started.elapsed();
    // Let the server take every connection off its backlog, then look (well within the 5 s header timeout
    // that closes idle connections).
    std::thread::sleep(Duration::from_millis(300));
    let fds_flood = pm_tests::procs::fd_count(daemon).unwrap();
    assert!(opened < Duration::from_secs(4), "opening {n} connections took {opened:?}");
    // The aliveness server has its own limit: it keeps answering.
    assert!(site.alive(), "/alive must answer during a flood of the remote API");
    // Over the limit, connections get a canned 503 and are closed; the others are held (no request yet).
    let mut refused = 0;
    let mut held = 0;
    let mut other = Vec::new();
    for stream in &mut streams {
        stream.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        match std::io::Read::read(stream, &mut buf) {
            Ok(len) if String::from_utf8_lossy(&buf[..len]).starts_with("HTTP/1.1 503 Service Unavailable") => {
                refused += 1
            }
            Ok(len) => other.push(String::from_utf8_lossy(&buf[..len]).into_owned()),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => held += 1,
            Err(err) => other.push(err.to_string()),
        }
    }
    assert!(started.elapsed() < Duration::from_millis(4500), "the flood took too long to look at");
    assert!(other.is_empty(), "connections neither held nor refused with 503: {other:?}");
    assert!(held <= limit, "{held} connections held, more than the limit {limit}");
    assert!(refused >= n - limit - 4, "only {refused} of {n} refused");
    assert!(fds_flood <= fds_before + limit + 16, "open files during the flood: {fds_before} -> {fds_flood}");
    drop(streams);
    // Once the flood is gone, the API serves again at once.
    wait_until(Duration::from_secs(3), "the API serves again", || {
        site.api("GET", "/processes", None).is_some_and(|(status, _)| status == 200)
    });
    wait_until(Duration::from_secs(8), "connections closed", || {
        pm_tests::procs::fd_count(daemon).unwrap_or(usize::MAX) <= fds_before + 4
    });
    assert_eq!(snapshot(&site), before);
    report(
        "security: connection flood",
        &format!("{n} connections: {held} held, {refused} refused 503; fds {fds_before} -> {fds_flood} -> back"),
    );
}

#[test]
fn registry_lock_and_logs_are_created_private() {
    let Some(site) = site("sec-modes") else { return };
    // Start from an empty folder: the daemon creates every file, under umask 0, so that the modes come from
    // the code and not from a umask.
    for entry in std::fs::read_dir(&site.dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let daemon = site.spawn_daemon(&DaemonOptions {
        file_size_limit: None,
        umask: Some(0),
        extra_args: vec![
            "--remote-port".to_owned(),
            site.remote_port.to_string(),
            "--aliveness-port".to_owned(),
            site.alive_port.to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
        ],
    });
    site.wait_ready(daemon, Duration::from_secs(20)).unwrap();
    // A registration through the API gives a save, a backup and a run folder.
    let config = serde_json::to_value(site.sleeper("m")).unwrap();
    let res = call(&site, TRUSTED, "POST", "/processes", Some(&config));
    assert_eq!(res.status, 200, "{}", res.text());
    wait_until(Duration::from_secs(20), "m runs", || site.copies("m").len() == 1);
    let paths = site.paths();
    wait_until(Duration::from_secs(5), "a backup exists", || paths.registry_file().with_extension("json.bak").exists());
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let run_dir = std::fs::read_dir(paths.process_logs_dir("m")).unwrap().flatten().next().unwrap().path();
    let monitor_log = std::fs::read_dir(paths.monitor_dir())
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "log"))
        .unwrap();
    let files = [
        (paths.registry_file(), 0o600),
        (paths.registry_file().with_extension("json.bak"), 0o600),
        (paths.lock_file(), 0o600),
        (paths.transaction_lock_file(), 0o600),
        (paths.logs_dir(), 0o700),
        (paths.monitor_dir(), 0o700),
        (paths.process_logs_dir("m"), 0o700),
        (run_dir.clone(), 0o700),
        (run_dir.join("stdout.log"), 0o600),
        (run_dir.join("stderr.log"), 0o600),
        (monitor_log, 0o600),
    ];
    let mut lines = Vec::new();
    for (path, want) in &files {
        let got = mode(path);
        lines.push(format!("{:o} {}", got, path.strip_prefix(&site.dir).unwrap().display()));
        assert_eq!(got, *want, "{} is {got:o}, expected {want:o}", path.display());
    }
    report("security: file modes (umask 0)", &lines.join(", "));
}

/// Sends a request as a web page can without a CORS preflight: `text/plain` body, the given extra headers.
fn simple_post(site: &Site, from: Option<IpAddr>, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n", site.remote_port);
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
    let mut stream = wire::connect(wire::local(site.remote_port), from).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    wire::read_reply(&mut stream, Duration::from_secs(10)).unwrap().expect("an answer")
}

#[test]
fn cross_site_requests_change_nothing_and_required_tokens_are_checked() {
    let Some(site) = site("sec-auth") else { return };
    site.start_daemon();
    let pid = remote_sleeper(&site, "victim");
    let own_origin = format!("http://127.0.0.1:{}", site.remote_port);
    let foreign: &[&[(&str, &str)]] = &[
        &[("Origin", "http://evil.example")],
        &[("Origin", "null")],
        &[("Origin", "http://127.0.0.1")],
        &[("Sec-Fetch-Site", "cross-site")],
        &[("Sec-Fetch-Site", "same-site")],
        &[("Origin", &own_origin), ("Sec-Fetch-Site", "cross-site")],
    ];
    let mut n = 0;
    for from in [TRUSTED, UNTRUSTED] {
        for action in ["stop", "disable", "restart", "start"] {
            for headers in foreign {
                let before = snapshot(&site);
                let res = simple_post(&site, from, &format!("/processes/victim/{action}"), headers);
                assert_eq!(res.status, 403, "{from:?} {action} {headers:?}: {}", res.text());
                assert_eq!(snapshot(&site), before, "{from:?} {action} {headers:?}");
                assert_eq!(site.copies("victim"), [pid], "{from:?} {action} {headers:?}");
                n += 1;
            }
        }
    }
    // A command-line client sends no Origin: a text/plain POST from the trusted peer still works.
    let res = simple_post(&site, TRUSTED, "/processes/victim/stop", &[]);
    assert_eq!(res.status, 200, "{}", res.text());
    wait_until(Duration::from_secs(20), "the victim stops", || site.copies("victim").is_empty());

    // requireToken: the trusted peer needs a token too, never taken from the query string.
    set_permissions(&site, json!({"requireToken": true}));
    let registry_before = site.registry().unwrap();
    let res = call(&site, TRUSTED, "POST", "/processes/victim/start", None);
    assert_eq!(res.status, 401, "{}", res.text());
    assert!(res.head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{}", res.head);
    let out = std::process::Command::new(&site.bin)
        .arg("--directory")
        .arg(&site.dir)
        .args(["token", "create", "--name", "e2e", "--scope", "operate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    for query in ["token", "access_token"] {
        let res = call(&site, TRUSTED, "POST", &format!("/processes/victim/start?{query}={token}"), None);
        assert_eq!(res.status, 401, "{query}: {}", res.text());
    }
    assert_eq!(site.registry().unwrap().processes["victim"].config, registry_before.processes["victim"].config);
    assert!(site.copies("victim").is_empty(), "nothing started without a valid token");
    let bearer = format!("Bearer {token}");
    let res = call_with(&site, TRUSTED, "POST", "/processes/victim/start", &[("Authorization", &bearer)], &json!({}));
    assert_eq!(res.status, 200, "{}", res.text());
    wait_until(Duration::from_secs(20), "the victim runs again", || site.copies("victim").len() == 1);
    // An operate token cannot change the configuration, even from the trusted peer.
    let res = call_with(
        &site,
        TRUSTED,
        "PUT",
        "/config/remote-access",
        &[("Authorization", &bearer)],
        &json!({"requireToken": false}),
    );
    assert_eq!(res.status, 403, "{}", res.text());
    assert!(site.registry().unwrap().remote_access.require_token);
    report("security: cross-site and tokens", &format!("{n} cross-site requests refused; tokens required"));
}

/// Issue 21 item 7: a second `--stop` while the first one's shutdown is under way waits for that shutdown
/// instead of making the monitor exit at once; no child is left running, and both report success.
#[test]
fn a_double_stop_leaves_no_child() {
    let Some(home) = pm_tests::Home::new(3000) else { return };
    home.add_slow_stopper("default", "slow", 3, 30_000);
    let (code, out, err) = home.cli(false, &["--standalone"]);
    assert_eq!(code, 0, "{out}{err}");
    home.wait_until(Duration::from_secs(30), "the slow process runs", || home.child_pid("default", "slow").is_some());
    let child = home.child_pid("default", "slow").unwrap();
    /// The background `--stop`, killed on drop unless it was waited for.
    struct Background(Option<std::process::Child>);
    impl Drop for Background {
        fn drop(&mut self) {
            if let Some(mut child) = self.0.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    let mut first = Background(Some(
        std::process::Command::new(&home.main_bin)
            .arg("--directory")
            .arg(&home.dir)
            .arg("--stop")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    home.wait_until(Duration::from_secs(30), "the monitor reports stopping", || {
        home.get(home.default_ports.alive, "/status").is_some_and(|(_, body)| body.contains("\"state\":\"stopping\""))
    });
    let (code, out, err) = home.cli(false, &["--stop"]);
    assert_eq!(code, 0, "the second --stop: {out}{err}");
    assert!(!pm_registry::proc::alive(child), "the second --stop left the child running");
    assert_eq!(home.copies("slow"), 0);
    let output = first.0.take().unwrap().wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "the first --stop: {stdout}");
    assert!(stdout.contains("1 running process(es) were stopped with it"), "{stdout}");
}
