//! `GET /metrics`, checked against the rules of the Prometheus text exposition format.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hyper::Method;

use crate::support::Api;

/// One sample line: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses an exposition text strictly, failing on anything the format does not allow.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = BTreeSet::new();
    let mut seen_series = BTreeSet::new();
    let mut samples = Vec::new();
    let valid_name = |name: &str| {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for (idx, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}: {line:?}", idx + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), Some(_)) if valid_name(name) => {
                    if !helped.insert(name.to_owned()) {
                        return Err(at("second HELP"));
                    }
                }
                (Some("TYPE"), Some(name), Some(kind)) if valid_name(name) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("unknown type"));
                    }
                    if typed.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(at("second TYPE"));
                    }
                }
                _ => return Err(at("malformed comment")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            other => other.parse().map_err(|_| at("bad value"))?,
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').ok_or_else(|| at("unclosed labels"))?)?),
            None => (series, BTreeMap::new()),
        };
        if !valid_name(name) {
            return Err(at("bad metric name"));
        }
        if !typed.contains_key(name) {
            return Err(at("sample before its TYPE"));
        }
        if typed[name] == "counter" && !name.ends_with("_total") {
            return Err(at("counter without _total"));
        }
        if !seen_series.insert(format!("{name}{labels:?}")) {
            return Err(at("duplicate series"));
        }
        samples.push((name.to_owned(), labels, value));
    }
    Ok(samples)
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut res = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {name:?}"));
        }
        if chars.next() != Some('"') {
            return Err(format!("label {name} not quoted"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => return Err("unterminated label value".to_owned()),
            }
        }
        if res.insert(name.clone(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        match chars.next() {
            Some(',') | None => {}
            Some(c) => return Err(format!("unexpected {c:?} after a label")),
        }
    }
    Ok(res)
}

#[tokio::test]
async fn metrics_follow_the_exposition_format() {
    let api = Api::start();
    api.fake.insert("web", true, true);
    api.fake.insert("db.v2", false, false);
    let url = format!("http://{}/metrics", api.addr());
    let res = api.client.request(Method::GET, &url, None, Duration::from_secs(10)).await.unwrap();
    assert_eq!(res.status, 200);
    let content_type = res.headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = String::from_utf8(res.body).unwrap();
    let samples = parse_exposition(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));

    // One state per process is 1, the seven others 0.
    for id in ["web", "db.v2"] {
        let states: Vec<&Sample> =
            samples.iter().filter(|(name, labels, _)| name == "pm_process_state" && labels["id"] == id).collect();
        assert_eq!(states.len(), 8, "{id}");
        assert_eq!(states.iter().map(|(_, _, value)| value).sum::<f64>(), 1.0, "{id}");
    }
    let info = samples.iter().find(|(name, _, _)| name == "pm_monitor_info").expect("monitor info");
    assert_eq!(info.1["instance"], "default");
    assert!(samples.iter().any(|(name, _, _)| name == "pm_monitor_uptime_seconds"));
    let managed = samples.iter().find(|(name, _, _)| name == "pm_monitor_processes").unwrap();
    assert_eq!(managed.2, crate::support::monitor_status().managed_process_count as f64);
}

#[tokio::test]
async fn metrics_only_answer_get() {
    let api = Api::start();
    let res = api.post("/metrics", None).await;
    assert_eq!(res.status, 405);
    assert!(res.header("allow").contains("GET"));
}

#[test]
fn the_parser_refuses_what_the_format_forbids() {
    assert!(parse_exposition("x 1\n").is_err(), "sample without TYPE");
    assert!(parse_exposition("# TYPE x gauge\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n").is_err(), "duplicate series");
    assert!(parse_exposition("# TYPE x gauge\nx{a=1} 1\n").is_err(), "unquoted label");
    assert!(parse_exposition("# TYPE x counter\nx 1\n").is_err(), "counter without _total");
    assert!(parse_exposition("# TYPE x gauge\nx{a=\"\\q\"} 1\n").is_err(), "bad escape");
    assert!(parse_exposition("# TYPE x gauge\nx{a=\"\\\"\"} 1\n").is_ok());
}
