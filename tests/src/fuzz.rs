//! HTTP fuzzing of a live daemon: a bounded generator of malformed requests — broken request lines, huge or
//! repeated headers, broken framing, invalid UTF-8 and JSON, wrong types, deep nesting, oversized bodies,
//! odd paths, pipelining — sent whole, slowly, cut off or reset, by a few threads at once, while a watchdog
//! asks `/alive` and the daemon's memory and open files are sampled.
//!
//! Every case is a function of the run's seed and its index, so one case can be replayed alone
//! ([`generate`]). Requests from a trusted peer (127.0.0.1) are built so that none of them can change
//! anything stored (unknown or invalid ids, bodies that cannot parse or carry an unknown key); requests from
//! an untrusted peer (127.0.0.2) may be anything, since the permissions refuse them.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::procs;
use crate::rng::Rng;
use crate::wire;

/// The untrusted source address (the site trusts 127.0.0.1 only).
pub const UNTRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// How a case's bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    /// All at once, then the answer is read.
    Whole,
    /// `chunk` bytes at a time with `pause_ms` between, then the answer is read.
    Slow {
        /// Bytes per write.
        chunk: usize,
        /// Pause between writes.
        pause_ms: u64,
    },
    /// The first `n` bytes, then the connection is closed.
    Cut(usize),
    /// The first `n` bytes, then the connection is reset (`SO_LINGER` 0).
    Reset(usize),
    /// All bytes, then closed without reading.
    NoRead,
}

/// One generated request.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its category.
    pub label: &'static str,
    /// Sent from 127.0.0.1 (trusted) rather than 127.0.0.2.
    pub trusted: bool,
    /// Sent to the aliveness port rather than the remote API.
    pub alive_port: bool,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// How they are sent.
    pub send: Send,
    /// For well-formed requests: the status they must get.
    pub expect: Option<u16>,
}

/// The processes a run aims its requests at (registered locally, so untrusted peers may not touch them).
#[derive(Debug, Clone)]
pub struct Target {
    /// Their ids.
    pub ids: Vec<String>,
}

const CONFIG_ITEMS: &[&str] = &[
    "remote-access",
    "trusted-hosts",
    "executable-whitelist",
    "executable-blacklist",
    "standalone-mode",
    "partner-discovery",
];
const ACTIONS: &[&str] = &["start", "stop", "restart", "enable", "disable", "autostart", "explode", ""];
const METHODS: &[&str] =
    &["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE", "CONNECT", "FOO", "get", "G\0T"];
const BAD_IDS: &[&str] = &[
    "",
    ".",
    "..",
    "../../etc",
    "a/b",
    "%2e%2e",
    "%2E%2E%2Fetc",
    "a%2Fb",
    "a%00b",
    "%ff%fe",
    "-x",
    ".hidden",
    "caf%C3%A9",
    "a%20b",
    "a*",
];

/// Case number `index` of the run with `seed`.
pub fn generate(seed: u64, index: u64, target: &Target) -> Case {
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let kind = rng.below(17);
    let trusted_ok = rng.chance(35);
    let (label, trusted, alive_port, bytes, expect) = match kind {
        0 => ("request-line", trusted_ok, rng.chance(30), broken_request_line(&mut rng), None),
        1 => ("huge-header", trusted_ok, rng.chance(20), huge_header(&mut rng), None),
        2 => ("many-headers", trusted_ok, rng.chance(20), many_headers(&mut rng), None),
        3 => ("framing", trusted_ok, false, bad_framing(&mut rng, trusted_ok, target), None),
        4 => ("utf8", false, rng.chance(20), bad_utf8(&mut rng, target), None),
        5 | 6 => {
            let (bytes, expect) = json_request(&mut rng, trusted_ok, target);
            ("json", trusted_ok, false, bytes, expect)
        }
        7 => ("nesting", trusted_ok, false, deep_nesting(&mut rng, trusted_ok), None),
        8 => ("oversized", trusted_ok, false, oversized(&mut rng, trusted_ok, target), None),
        9 => ("paths", false, false, odd_paths(&mut rng, target), None),
        10 => ("pipelined", trusted_ok, false, pipelined(&mut rng, trusted_ok, target), None),
        11 => ("aliveness", false, true, aliveness(&mut rng), None),
        12 => {
            let (bytes, expect) = well_formed(&mut rng, target);
            ("valid", trusted_ok, false, bytes, Some(expect))
        }
        13 => {
            let n = rng.range(1, 4096) as usize;
            ("random-bytes", false, rng.chance(30), rng.bytes(n), None)
        }
        14 => ("header-syntax", trusted_ok, rng.chance(20), header_syntax(&mut rng), None),
        15 => ("mutated", false, false, mutated(&mut rng, target), None),
        _ => ("expect-continue", trusted_ok, false, expect_continue(&mut rng, trusted_ok, target), None),
    };
    let len = bytes.len().max(1) as u64;
    let send = match rng.below(100) {
        0..=1 => Send::Slow { chunk: rng.range(1, 64) as usize, pause_ms: rng.range(2, 40) },
        2..=7 => Send::Cut(rng.below(len) as usize),
        8..=10 => Send::Reset(rng.below(len) as usize),
        11..=14 => Send::NoRead,
        _ => Send::Whole,
    };
    // A slow send of a big request would take minutes; those go whole.
    let send = match send {
        Send::Slow { chunk, pause_ms } if bytes.len() / chunk * pause_ms as usize > 1500 => Send::Whole,
        other => other,
    };
    let expect = expect.filter(|_| matches!(send, Send::Whole | Send::Slow { .. }));
    Case { label, trusted, alive_port, bytes, send, expect }
}

fn head(method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    for (name, value) in headers {
        bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    bytes.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn harmless_path(rng: &mut Rng) -> String {
    let unknown = format!("fz-unknown-{}", rng.below(1000));
    match rng.below(8) {
        0 => "/processes".to_owned(),
        1 => format!("/processes/{unknown}"),
        2 => format!("/config/{}", rng.pick(CONFIG_ITEMS)),
        3 => "/monitor/status".to_owned(),
        4 => "/metrics".to_owned(),
        5 => format!("/processes/{unknown}/{}", rng.pick(ACTIONS)),
        6 => "/alive".to_owned(),
        _ => "/nowhere".to_owned(),
    }
}

fn broken_request_line(rng: &mut Rng) -> Vec<u8> {
    let path = harmless_path(rng);
    let line: Vec<u8> = match rng.below(14) {
        0 => b"GET".to_vec(),
        1 => format!("GET {path}").into_bytes(),
        2 => format!("GET {path} HTTP/1.1 extra").into_bytes(),
        3 => format!("GET  {path}  HTTP/1.1").into_bytes(),
        4 => format!("GET {path} HTTP/2.0").into_bytes(),
        5 => format!("GET {path} HTTP/0.9").into_bytes(),
        6 => format!("GET {path} http/1.1").into_bytes(),
        7 => format!("GET /{} HTTP/1.1", "a".repeat(rng.range(8_000, 200_000) as usize)).into_bytes(),
        8 => format!("{} {path} HTTP/1.1", "G".repeat(rng.range(100, 20_000) as usize)).into_bytes(),
        9 => format!("GET {path}\0\x01\x7f HTTP/1.1").into_bytes(),
        10 => format!(" GET {path} HTTP/1.1").into_bytes(),
        11 => format!("GET\t{path}\tHTTP/1.1").into_bytes(),
        12 => {
            let n = rng.range(1, 200) as usize;
            rng.bytes(n)
        }
        _ => format!("GET http://127.0.0.1{path} HTTP/1.1").into_bytes(),
    };
    let mut bytes = line;
    let lf_only = rng.chance(20);
    let eol: &[u8] = if lf_only { b"\n" } else { b"\r\n" };
    bytes.extend_from_slice(eol);
    bytes.extend_from_slice(b"Host: 127.0.0.1");
    bytes.extend_from_slice(eol);
    if rng.chance(90) {
        bytes.extend_from_slice(eol);
    }
    bytes
}

fn huge_header(rng: &mut Rng) -> Vec<u8> {
    let size = match rng.below(4) {
        0 => rng.range(8_000, 20_000),
        1 => rng.range(60_000, 70_000),
        2 => rng.range(100_000, 500_000),
        _ => rng.range(1_000_000, 2_000_000),
    } as usize;
    let path = harmless_path(rng);
    head("GET", &path, &[("X-Fuzz", "v".repeat(size))], b"")
}

fn many_headers(rng: &mut Rng) -> Vec<u8> {
    let n = *rng.pick(&[90u64, 100, 101, 500, 5_000, 20_000]);
    let repeated = rng.chance(50);
    let headers: Vec<(&str, String)> = (0..n)
        .map(|idx| {
            let value = format!("value-{idx}");
            if repeated {
                ("X-Same", value)
            } else {
                ("X-Many", format!("{idx}-{value}"))
            }
        })
        .collect();
    let path = harmless_path(rng);
    head("GET", &path, &headers, b"")
}

fn mutating_path(rng: &mut Rng, trusted: bool, target: &Target) -> (&'static str, String) {
    if trusted {
        // Unknown ids and bodies that cannot apply: nothing stored can change.
        let item = *rng.pick(CONFIG_ITEMS);
        return match rng.below(3) {
            0 => ("PUT", format!("/config/{item}")),
            1 => ("PUT", format!("/processes/fz-unknown-{}/autostart", rng.below(100))),
            _ => ("POST", "/processes".to_owned()),
        };
    }
    let id = if rng.chance(70) && !target.ids.is_empty() { rng.pick(&target.ids).clone() } else { "x".to_owned() };
    match rng.below(6) {
        0 => ("POST", "/processes".to_owned()),
        1 => ("PUT", format!("/config/{}", rng.pick(CONFIG_ITEMS))),
        2 => ("PUT", format!("/processes/{id}/autostart")),
        3 => ("POST", format!("/processes/{id}/{}", rng.pick(&ACTIONS[..5]))),
        4 => ("DELETE", format!("/processes/{id}")),
        _ => ("POST", "/monitor/restart".to_owned()),
    }
}

fn bad_framing(rng: &mut Rng, trusted: bool, target: &Target) -> Vec<u8> {
    let (method, path) = mutating_path(rng, trusted, target);
    let body = safe_body(rng, trusted, &path).into_bytes();
    let mut bytes = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    let framing: String = match rng.below(12) {
        0 => format!("Content-Length: {}\r\nContent-Length: {}\r\n", body.len(), body.len() + 7),
        1 => "Content-Length: -1\r\n".to_owned(),
        2 => "Content-Length: abc\r\n".to_owned(),
        3 => "Content-Length: 99999999999999999999999\r\n".to_owned(),
        4 => format!("Content-Length: +{}\r\n", body.len()),
        5 => format!("Transfer-Encoding: chunked\r\nContent-Length: {}\r\n", body.len()),
        6 => "Transfer-Encoding: gzip, chunked\r\n".to_owned(),
        7 => "Transfer-Encoding: identity\r\n".to_owned(),
        8 => "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n".to_owned(),
        9 => format!("Content-Length: {}\r\n", body.len() + rng.range(1, 100) as usize),
        10 => format!("Content-Length: {}\r\n", body.len() / 2),
        _ => String::new(),
    };
    bytes.extend_from_slice(framing.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    if framing.contains("chunked") && rng.chance(60) {
        // Broken chunks: bad sizes, missing terminators, a huge announced chunk.
        let chunk = match rng.below(4) {
            0 => format!("zz\r\n{}\r\n0\r\n\r\n", String::from_utf8_lossy(&body)),
            1 => format!("ffffffffffffffff\r\n{}", String::from_utf8_lossy(&body)),
            2 => format!("{:x}\r\n{}", body.len() + 10, String::from_utf8_lossy(&body)),
            _ => format!("{:x};ext=1\r\n{}\r\n0\r\nTrailer: x\r\n\r\n", body.len(), String::from_utf8_lossy(&body)),
        };
        bytes.extend_from_slice(chunk.as_bytes());
    } else {
        bytes.extend_from_slice(&body);
    }
    bytes
}

fn bad_utf8(rng: &mut Rng, target: &Target) -> Vec<u8> {
    let (method, path) = mutating_path(rng, false, target);
    let garbage: &[u8] = rng.pick::<&[u8]>(&[b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\xbc", b"\x80"]);
    match rng.below(4) {
        0 => {
            let mut bytes = format!("{method} {path}").into_bytes();
            bytes.extend_from_slice(garbage);
            bytes.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
            bytes
        }
        1 => {
            let mut bytes = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: ").into_bytes();
            bytes.extend_from_slice(garbage);
            bytes.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
            bytes
        }
        2 => {
            let mut body = br#"{"id":"u1","name":""#.to_vec();
            body.extend_from_slice(garbage);
            body.extend_from_slice(br#"","command":"/bin/sh"}"#);
            head("POST", "/processes", &[("Content-Type", "application/json".to_owned())], &body)
        }
        _ => {
            let mut body = br#"{"trustedHosts":[""#.to_vec();
            body.extend_from_slice(garbage);
            body.extend_from_slice(br#""]}"#);
            head("PUT", "/config/trusted-hosts", &[], &body)
        }
    }
}

/// A JSON-ish value as text: right or wrong types, odd numbers and strings, sometimes not JSON at all.
fn value(rng: &mut Rng, depth: u32) -> String {
    let pick = if depth > 3 { rng.below(12) } else { rng.below(16) };
    match pick {
        0 => "null".to_owned(),
        1 => "true".to_owned(),
        2 => rng.pick(&["0", "-1", "1.5", "1e999", "-0", "18446744073709551616", "9223372036854775807"]).to_string(),
        3 => "\"\"".to_owned(),
        4 => format!("\"{}\"", "s".repeat(rng.range(1, 100) as usize)),
        5 => format!("\"{}\"", "L".repeat(rng.range(10_000, 200_000) as usize)),
        6 => rng.pick(&[r#""\ud800""#, r#""\x41""#, r#""a\u0000b""#, r#""\u""#, r#""tab	raw""#]).to_string(),
        7 => rng.pick(&["NaN", "Infinity", "'single'", "undefined", "0x10", "01"]).to_string(),
        8 => "\"/bin/sh\"".to_owned(),
        9 => "\"../../../../bin/sh\"".to_owned(),
        10 => "\"http://127.0.0.1:1/health\"".to_owned(),
        11 => "[]".to_owned(),
        12 | 13 => {
            let n = rng.below(5);
            let items: Vec<String> = (0..n).map(|_| value(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let n = rng.below(5);
            let items: Vec<String> = (0..n).map(|idx| format!("\"k{idx}\":{}", value(rng, depth + 1))).collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// Invalid process ids as JSON values.
const BAD_BODY_IDS: &[&str] = &[
    r#""""#,
    r#"".""#,
    r#""..""#,
    r#""../../etc""#,
    r#""a/b""#,
    r#""-x""#,
    r#"".hidden""#,
    r#""caf\u00e9""#,
    r#""a b""#,
    r#""a*""#,
    r#""a\u0000b""#,
    r#""a\nb""#,
    r#""\ud800""#,
];

const CONFIG_FIELDS: &[&str] = &[
    "name",
    "command",
    "args",
    "workingDirectory",
    "environment",
    "autostart",
    "enabled",
    "isRemote",
    "restartPolicy",
    "alivenessCheck",
    "stopTimeoutMs",
    "partner",
];

/// A body that cannot change anything from a trusted peer (for `path`), or anything at all from an untrusted one.
fn safe_body(rng: &mut Rng, trusted: bool, path: &str) -> String {
    let body = any_body(rng, trusted, path);
    if trusted && !harmless(path, &body) {
        return "{".to_owned();
    }
    body
}

/// Whether a body sent by a trusted peer to `path` cannot change anything stored: it does not parse, or (a
/// registration) its id is invalid, or (settings) it is not an object or it carries a key no settings body
/// accepts. Autostart bodies only ever go to unknown ids.
pub fn harmless(path: &str, body: &str) -> bool {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else { return true };
    if path == "/processes" {
        return value["id"].as_str().is_none_or(|id| pm_core::validate_process_id(id).is_err());
    }
    if path.starts_with("/config/") {
        return value.as_object().is_none_or(|map| map.contains_key("fuzzUnknownKey"));
    }
    true
}

fn any_body(rng: &mut Rng, trusted: bool, path: &str) -> String {
    if path == "/processes" {
        let id = if trusted || rng.chance(40) {
            match rng.below(4) {
                0 => rng.pick(&["5", "null", "[]", "{}", "true"]).to_string(),
                1 => format!("\"{}\"", "x".repeat(rng.range(65, 400) as usize)),
                _ => rng.pick(BAD_BODY_IDS).to_string(),
            }
        } else {
            format!("\"fz{}\"", rng.below(1000))
        };
        let mut fields = vec![format!("\"id\":{id}")];
        for field in CONFIG_FIELDS {
            if rng.chance(50) {
                fields.push(format!("\"{field}\":{}", value(rng, 1)));
            }
        }
        return format!("{{{}}}", fields.join(","));
    }
    let mut fields: Vec<String> = Vec::new();
    for key in [
        "trustedHosts",
        "patterns",
        "enabled",
        "autostart",
        "allowRemoteRegister",
        "allowRemoteMonitorRestart",
        "partnerInstanceId",
        "checkIntervalMs",
    ] {
        if rng.chance(30) {
            fields.push(format!("\"{key}\":{}", value(rng, 1)));
        }
    }
    if trusted || rng.chance(50) {
        // Every settings body has `deny_unknown_fields`: this key alone makes it a 400.
        fields.push(format!("\"fuzzUnknownKey\":{}", value(rng, 2)));
    }
    match rng.below(6) {
        0 => value(rng, 0).replace("null", "[]"),
        1 => format!("{{{}", fields.join(",")),
        _ => format!("{{{}}}", fields.join(",")),
    }
}

fn json_request(rng: &mut Rng, trusted: bool, target: &Target) -> (Vec<u8>, Option<u16>) {
    let (method, path) = mutating_path(rng, trusted, target);
    let body = safe_body(rng, trusted, &path);
    let body = match rng.below(6) {
        // Truncated or with garbage after it.
        0 => body[..body.len() / 2].to_owned(),
        1 => format!("{body} trailing"),
        _ => body,
    };
    (head(method, &path, &[("Content-Type", "application/json".to_owned())], body.as_bytes()), None)
}

fn deep_nesting(rng: &mut Rng, trusted: bool) -> Vec<u8> {
    let depth = *rng.pick(&[64u64, 127, 128, 129, 1_000, 10_000, 100_000]) as usize;
    let (open, close) = if rng.chance(50) { ("[", "]") } else { ("{\"a\":", "}") };
    let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
    let (method, path, body) = match rng.below(3) {
        0 => ("POST", "/processes".to_owned(), nested),
        1 if !trusted => (
            "POST",
            "/processes".to_owned(),
            format!("{{\"id\":\"deep\",\"name\":\"d\",\"command\":\"/bin/sh\",\"x\":{nested}}}"),
        ),
        1 => (
            "POST",
            "/processes".to_owned(),
            format!("{{\"id\":\"../deep\",\"name\":\"d\",\"command\":\"/bin/sh\",\"x\":{nested}}}"),
        ),
        _ => ("PUT", format!("/config/{}", rng.pick(CONFIG_ITEMS)), format!("{{\"fuzzUnknownKey\":{nested}}}")),
    };
    head(method, &path, &[], body.as_bytes())
}

fn oversized(rng: &mut Rng, trusted: bool, target: &Target) -> Vec<u8> {
    let (method, path) = mutating_path(rng, trusted, target);
    match rng.below(4) {
        0 => {
            // Announces 10 MiB, sends a little: answered 413 from the header alone.
            let mut bytes =
                format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10485760\r\n\r\n").into_bytes();
            bytes.extend(std::iter::repeat_n(b'x', rng.range(0, 65_536) as usize));
            bytes
        }
        1 => {
            // Exactly one byte over the 1 MiB limit, really sent.
            let body = vec![b' '; 1024 * 1024 + 1];
            head(method, &path, &[], &body)
        }
        2 => {
            // Chunked, 1.5 to 2 MiB: the limit applies while reading.
            let mut bytes =
                format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .into_bytes();
            let total = rng.range(1_536 * 1024, 2048 * 1024) as usize;
            let mut sent = 0;
            while sent < total {
                let n = (total - sent).min(64 * 1024);
                bytes.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                bytes.extend(std::iter::repeat_n(b'[', n));
                bytes.extend_from_slice(b"\r\n");
                sent += n;
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
            bytes
        }
        _ => {
            // Just under the limit, harmless content (whitespace around an invalid body).
            let mut body = vec![b' '; 1024 * 1024 - 16];
            body.extend_from_slice(b"{\"id\":5}");
            head(method, &path, &[], &body)
        }
    }
}

fn odd_paths(rng: &mut Rng, target: &Target) -> Vec<u8> {
    let id = match rng.below(4) {
        0 => rng.pick(BAD_IDS).to_string(),
        1 => "y".repeat(rng.range(60, 400) as usize),
        2 if !target.ids.is_empty() => rng.pick(&target.ids).clone(),
        _ => format!("fz-unknown-{}", rng.below(50)),
    };
    let path = match rng.below(10) {
        0 => format!("/processes/{id}"),
        1 => format!("/processes/{id}/{}", rng.pick(ACTIONS)),
        2 => format!("/processes/{id}/start/now"),
        3 => format!("/config/../processes/{id}"),
        4 => format!("/processes/{id}?force=1#frag"),
        5 => "*".to_owned(),
        6 => format!("//processes//{id}"),
        7 => format!("/processes/{id}/{}", "%2F".repeat(rng.range(1, 50) as usize)),
        8 => format!("/config/{}", rng.pick(&["", "secrets", "trusted-hosts/extra", "%2e%2e"])),
        _ => format!("/{}", "../".repeat(rng.range(1, 30) as usize)),
    };
    let method = *rng.pick(METHODS);
    head(method, &path, &[], b"")
}

fn pipelined(rng: &mut Rng, trusted: bool, target: &Target) -> Vec<u8> {
    let mut bytes = Vec::new();
    for _ in 0..rng.range(2, 6) {
        let part = match rng.below(4) {
            0 => well_formed(rng, target).0,
            1 => json_request(rng, trusted, target).0,
            2 => bad_framing(rng, trusted, target),
            _ => {
                let mut line = broken_request_line(rng);
                line.truncate(line.len().min(2000));
                line
            }
        };
        bytes.extend(part);
    }
    bytes
}

fn aliveness(rng: &mut Rng) -> Vec<u8> {
    let method = *rng.pick(METHODS);
    let path = *rng.pick(&["/alive", "/status", "/alive/", "/alive?x", "/", "/health", "/status/../alive", "*"]);
    let n = rng.below(64) as usize;
    let mut bytes = head(method, path, &[], &rng.bytes(n));
    if rng.chance(30) {
        let at = rng.below(bytes.len() as u64) as usize;
        bytes[at] = rng.next_u64() as u8;
    }
    bytes
}

/// A well-formed, harmless request and the status it must get.
fn well_formed(rng: &mut Rng, target: &Target) -> (Vec<u8>, u16) {
    let id = target.ids.first().cloned().unwrap_or_else(|| "x".to_owned());
    let (path, status) = match rng.below(6) {
        0 => ("/processes".to_owned(), 200),
        1 => (format!("/processes/{id}"), 200),
        2 => (format!("/config/{}", rng.pick(CONFIG_ITEMS)), 200),
        3 => ("/monitor/status".to_owned(), 200),
        4 => ("/metrics".to_owned(), 200),
        _ => (format!("/processes/fz-unknown-{}", rng.below(10)), 404),
    };
    (format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes(), status)
}

fn header_syntax(rng: &mut Rng) -> Vec<u8> {
    let path = harmless_path(rng);
    let line: &[u8] = rng.pick::<&[u8]>(&[
        b"No-Colon-Here",
        b"Bad Name: x",
        b": empty-name",
        b" folded: continuation",
        b"X-A: a\r\n continued",
        b"X-Ctl: a\x01b",
        b"X-Nul: a\x00b",
        b"Host: second.example",
        b"Content-Type: text/\xff",
        b"Connection: keep-alive, upgrade\r\nUpgrade: h2c",
        b"X-Forwarded-For: 10.9.9.9",
        b"Origin: http://evil.example",
        b"Sec-Fetch-Site: cross-site",
        // Bearer tokens: unknown, empty, wrong scheme, not UTF-8, repeated, oversized, in odd case.
        b"Authorization: Bearer pmt_0000000000000000000000000000000000000000000000000000000000000000",
        b"Authorization: Bearer ",
        b"Authorization: Bearer",
        b"Authorization: Basic YWRtaW46YWRtaW4=",
        b"Authorization: Bearer \xff\xfe\x80",
        b"Authorization: Bearer a\r\nAuthorization: Bearer b",
        b"authorization: bEaReR pmt_zz",
        b"Authorization: Bearer pmt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ]);
    let mut bytes = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    bytes.extend_from_slice(line);
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes
}

fn mutated(rng: &mut Rng, target: &Target) -> Vec<u8> {
    let (method, path) = mutating_path(rng, false, target);
    let body = safe_body(rng, false, &path);
    let mut bytes = head(method, &path, &[], body.as_bytes());
    for _ in 0..rng.range(1, 8) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len() as u64) as usize;
        match rng.below(3) {
            0 => bytes[at] = rng.next_u64() as u8,
            1 => {
                bytes.remove(at);
            }
            _ => bytes.insert(at, rng.next_u64() as u8),
        }
    }
    bytes
}

fn expect_continue(rng: &mut Rng, trusted: bool, target: &Target) -> Vec<u8> {
    let (method, path) = mutating_path(rng, trusted, target);
    // Announces a body, asks for 100-continue, and never sends it (or sends half).
    let body = safe_body(rng, trusted, &path);
    let mut bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len() * 2
    )
    .into_bytes();
    if rng.chance(50) {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}

/// How a fuzz run is set up.
#[derive(Debug, Clone)]
pub struct FuzzConfig {
    /// Cases to send.
    pub cases: u64,
    /// Seed of the run.
    pub seed: u64,
    /// Sender threads.
    pub threads: u64,
    /// PID of the daemon (for memory and open files).
    pub daemon_pid: u32,
    /// Remote API port.
    pub remote_port: u16,
    /// Aliveness port.
    pub alive_port: u16,
    /// What the requests aim at.
    pub target: Target,
}

/// What a fuzz run saw.
#[derive(Debug, Default)]
pub struct FuzzReport {
    /// Cases sent.
    pub cases: u64,
    /// Cases answered with a status.
    pub answered: u64,
    /// Cases the server closed without an answer.
    pub closed: u64,
    /// Cases that were cut off, reset or not read by design, or gave up waiting for an answer.
    pub gave_up: u64,
    /// Answers per status.
    pub statuses: BTreeMap<u16, u64>,
    /// Cases per category.
    pub labels: BTreeMap<&'static str, u64>,
    /// What went wrong, one line per case (5xx other than 503, no HTTP answer, wrong status, slow answer).
    pub bad: Vec<String>,
    /// `/alive` checks made while fuzzing.
    pub alive_checks: u64,
    /// `/alive` checks that failed.
    pub alive_failures: Vec<String>,
    /// Slowest `/alive` answer.
    pub alive_slowest: Duration,
    /// Slow-header connections held open, and how long the slowest took to be cut off.
    pub slow_senders: (u64, Duration),
    /// Slow-header connections that were not cut off.
    pub slow_not_cut: u64,
    /// Daemon RSS in KiB: before, peak, after.
    pub rss_kib: (u64, u64, u64),
    /// Daemon open files: before, peak, after.
    pub fds: (usize, usize, usize),
    /// Daemon threads: before, peak.
    pub threads: (usize, usize),
    /// Wall time.
    pub elapsed: Duration,
}

impl FuzzReport {
    /// The figures on one line.
    pub fn figures(&self) -> String {
        format!(
            "{} cases ({} answered, {} closed unanswered, {} cut off or given up), statuses {:?}, bad {}, /alive {} checks ({} failed, \
             slowest {:.0?}), slow senders {} (cut after <= {:.1?}, {} not cut), RSS KiB {} -> peak {} -> {}, \
             fds {} -> peak {} -> {}, threads {} -> peak {}, {:.1?}",
            self.cases,
            self.answered,
            self.closed,
            self.gave_up,
            self.statuses,
            self.bad.len(),
            self.alive_checks,
            self.alive_failures.len(),
            self.alive_slowest,
            self.slow_senders.0,
            self.slow_senders.1,
            self.slow_not_cut,
            self.rss_kib.0,
            self.rss_kib.1,
            self.rss_kib.2,
            self.fds.0,
            self.fds.1,
            self.fds.2,
            self.threads.0,
            self.threads.1,
            self.elapsed
        )
    }
}

/// What came back for one case.
#[derive(Debug)]
pub enum Outcome {
    /// An answer with this status, after this long.
    Answered(u16, Duration),
    /// The server closed (or reset) the connection without an answer.
    Closed,
    /// The case does not read answers, or no answer came within the patience of the case (the client gives
    /// up and disconnects, one more abrupt disconnect).
    GaveUp,
    /// Something that is not an HTTP answer, or no connection.
    Failed(String),
}

/// Sends one case and reads the answer, waiting up to 5 s for well-formed requests and 0.6 s for the rest.
pub fn send(case: &Case, remote_port: u16, alive_port: u16) -> Outcome {
    let port = if case.alive_port { alive_port } else { remote_port };
    let from = if case.trusted { None } else { Some(UNTRUSTED) };
    let mut stream = match wire::connect(wire::local(port), from) {
        Ok(stream) => stream,
        Err(err) => return Outcome::Failed(format!("cannot connect: {err}")),
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let started = Instant::now();
    match case.send {
        Send::Whole | Send::NoRead => write_tolerant(&mut stream, &case.bytes),
        Send::Slow { chunk, pause_ms } => {
            for part in case.bytes.chunks(chunk.max(1)) {
                if !write_tolerant(&mut stream, part) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(pause_ms));
            }
            true
        }
        Send::Cut(n) => {
            write_tolerant(&mut stream, &case.bytes[..n.min(case.bytes.len())]);
            return Outcome::GaveUp;
        }
        Send::Reset(n) => {
            write_tolerant(&mut stream, &case.bytes[..n.min(case.bytes.len())]);
            reset(stream);
            return Outcome::GaveUp;
        }
    };
    if case.send == Send::NoRead {
        return Outcome::GaveUp;
    }
    // The server may answer (and close) before it read everything: read what it said. The write side stays
    // open: a half-close in the middle of a request lets the server drop it unanswered.
    let patience = if case.expect.is_some() { Duration::from_secs(5) } else { Duration::from_millis(600) };
    match wire::read_reply(&mut stream, patience) {
        Ok(Some(reply)) => Outcome::Answered(reply.status, started.elapsed()),
        Ok(None) => Outcome::Closed,
        Err(err) if err.kind() == std::io::ErrorKind::TimedOut => Outcome::GaveUp,
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => Outcome::Closed,
        Err(err) => Outcome::Failed(format!("unreadable answer: {err}")),
    }
}

/// Writes; false when the server already closed the connection (which is fine: it may answer early).
fn write_tolerant(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    stream.write_all(bytes).is_ok()
}

/// Closes with a reset (`SO_LINGER` 0).
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on an open socket with a pointer to a local value and its size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// Checks one answered case; the problem, if any.
fn judge(case: &Case, status: u16, took: Duration) -> Option<String> {
    if let Some(expected) = case.expect {
        if status != expected {
            return Some(format!("well-formed request answered {status}, expected {expected}"));
        }
    }
    if status == 500 || status == 502 || status == 504 || status > 505 {
        return Some(format!("answered {status}"));
    }
    if !matches!(case.send, Send::Slow { .. }) && took > Duration::from_secs(7) {
        return Some(format!("answered {status} only after {took:.1?}"));
    }
    None
}

/// Throws `config.cases` cases at the daemon from `config.threads` threads, with the watchdogs running.
pub fn run(config: &FuzzConfig) -> FuzzReport {
    let started = Instant::now();
    let mut report = FuzzReport::default();
    let pid = config.daemon_pid;
    let stop = Arc::new(AtomicBool::new(false));

    // Warm up, then the baseline.
    for _ in 0..50 {
        let _ = wire::request(wire::local(config.remote_port), None, "GET", "/processes", &[], b"");
    }
    let baseline =
        (procs::rss_kib(pid).unwrap_or(0), procs::fd_count(pid).unwrap_or(0), procs::thread_count(pid).unwrap_or(0));

    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = (0u64, 0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                peak.0 = peak.0.max(procs::rss_kib(pid).unwrap_or(0));
                peak.1 = peak.1.max(procs::fd_count(pid).unwrap_or(0));
                peak.2 = peak.2.max(procs::thread_count(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let watchdog = {
        let stop = stop.clone();
        let port = config.alive_port;
        std::thread::spawn(move || {
            let (mut checks, mut failures, mut slowest) = (0u64, Vec::new(), Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let res = wire::request(wire::local(port), None, "GET", "/alive", &[], b"");
                let took = asked.elapsed();
                checks += 1;
                slowest = slowest.max(took);
                match res {
                    Ok(reply) if reply.status == 200 && reply.body == b"OK" && took < Duration::from_secs(2) => {}
                    Ok(reply) => {
                        failures.push(format!("/alive answered {} {:?} after {took:.0?}", reply.status, reply.text()))
                    }
                    Err(err) => failures.push(format!("/alive failed after {took:.0?}: {err}")),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (checks, failures, slowest)
        })
    };
    // Slow header senders: each must be cut off by the header read timeout (5 s) while the rest goes on.
    let slowloris = {
        let port = config.remote_port;
        std::thread::spawn(move || slow_senders(port, 16))
    };

    let next = Arc::new(AtomicU64::new(0));
    let results = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..config.threads.max(1))
        .map(|_| {
            let next = next.clone();
            let results = results.clone();
            let config = config.clone();
            std::thread::spawn(move || loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= config.cases {
                    break;
                }
                let case = generate(config.seed, index, &config.target);
                let outcome = send(&case, config.remote_port, config.alive_port);
                let bad = match &outcome {
                    Outcome::Answered(status, took) => judge(&case, *status, *took),
                    Outcome::Closed | Outcome::GaveUp if case.expect.is_some() => {
                        Some(format!("well-formed request not answered ({outcome:?})"))
                    }
                    Outcome::Closed | Outcome::GaveUp => None,
                    Outcome::Failed(err) => Some(err.clone()),
                };
                let bad = bad.map(|why| {
                    let shown: String =
                        String::from_utf8_lossy(&case.bytes[..case.bytes.len().min(160)]).escape_debug().collect();
                    format!(
                        "case {index} ({}, {:?}, trusted {}, {} bytes): {why}; starts {shown}",
                        case.label,
                        case.send,
                        case.trusted,
                        case.bytes.len()
                    )
                });
                if let Some(line) = &bad {
                    eprintln!("fuzz | {line}");
                }
                let status = match outcome {
                    Outcome::Answered(status, _) => Some(status),
                    Outcome::Closed | Outcome::Failed(_) => None,
                    Outcome::GaveUp => Some(0),
                };
                results.lock().unwrap().push((case.label, status, bad));
                if index % 2000 == 1999 {
                    eprintln!("fuzz | {} cases sent", index + 1);
                }
            })
        })
        .collect();
    for sender in senders {
        let _ = sender.join();
    }
    let (slow_count, slow_longest, slow_not_cut) = slowloris.join().unwrap_or((0, Duration::ZERO, 0));

    // Connections the cases left open close by the header timeout; then the daemon should be back to its
    // baseline of open files.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(8) && procs::fd_count(pid).unwrap_or(0) > baseline.1 + 4 {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap_or_default();
    let (checks, failures, slowest) = watchdog.join().unwrap_or_default();

    for (label, status, bad) in results.lock().unwrap().drain(..) {
        report.cases += 1;
        *report.labels.entry(label).or_default() += 1;
        match status {
            Some(0) => report.gave_up += 1,
            Some(status) => {
                report.answered += 1;
                *report.statuses.entry(status).or_default() += 1;
            }
            None => report.closed += 1,
        }
        if let Some(bad) = bad {
            report.bad.push(bad);
        }
    }
    report.alive_checks = checks;
    report.alive_failures = failures;
    report.alive_slowest = slowest;
    report.slow_senders = (slow_count, slow_longest);
    report.slow_not_cut = slow_not_cut;
    let end = (procs::rss_kib(pid).unwrap_or(0), procs::fd_count(pid).unwrap_or(0));
    report.rss_kib = (baseline.0, peak.0.max(end.0), end.0);
    report.fds = (baseline.1, peak.1.max(end.1), end.1);
    report.threads = (baseline.2, peak.2);
    report.elapsed = started.elapsed();
    report
}

/// Opens `n` connections that send a request head one byte every 300 ms; answers how many there were, the
/// longest time until the server cut one off, and how many it did not cut off within 9 s.
fn slow_senders(port: u16, n: usize) -> (u64, Duration, u64) {
    let head = b"GET /processes HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    let mut streams: Vec<(TcpStream, Instant, Option<Duration>)> = (0..n)
        .filter_map(|idx| {
            let from = if idx % 2 == 0 { None } else { Some(UNTRUSTED) };
            let mut stream = wire::connect(wire::local(port), from).ok()?;
            stream.write_all(head).ok()?;
            stream.set_nonblocking(true).ok()?;
            Some((stream, Instant::now(), None))
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(9) && streams.iter().any(|(_, _, cut)| cut.is_none()) {
        for (stream, since, cut) in streams.iter_mut().filter(|(_, _, cut)| cut.is_none()) {
            let mut buf = [0u8; 1024];
            let closed = match std::io::Read::read(stream, &mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => stream.write_all(b"a").is_err(),
                Err(_) => true,
            };
            if closed {
                *cut = Some(since.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let longest = streams.iter().filter_map(|(_, _, cut)| *cut).max().unwrap_or_default();
    let not_cut = streams.iter().filter(|(_, _, cut)| cut.is_none()).count() as u64;
    (streams.len() as u64, longest, not_cut)
}
