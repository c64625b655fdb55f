//! The budget of processes registered by untrusted peers, and escaping of text that reaches a log or a terminal.
//!
//! Every limit here is documented in `docs/security-limits.md`.

use std::borrow::Cow;

use crate::ProcessConfig;

/// The least delay before an automatic restart of an untrusted registration (a smaller `backoffIntervalsMs`
/// entry, or `indefiniteIntervalMs`, counts as this much).
pub const UNTRUSTED_MIN_BACKOFF_MS: u64 = 1000;
/// The largest `restartPolicy.maxAttempts` an untrusted peer may register.
pub const UNTRUSTED_MAX_ATTEMPTS: u32 = 20;
/// The largest `keepRuns` an untrusted peer may register.
pub const UNTRUSTED_MAX_KEEP_RUNS: u32 = 20;
/// The largest `stopTimeoutMs` an untrusted peer may register.
pub const UNTRUSTED_MAX_STOP_TIMEOUT_MS: u64 = 60_000;
/// The most `args` an untrusted peer may register.
pub const UNTRUSTED_MAX_ARGS: usize = 256;
/// The most bytes of all `args` together an untrusted peer may register.
pub const UNTRUSTED_MAX_ARGS_BYTES: usize = 64 * 1024;
/// The most `environment` variables an untrusted peer may register.
pub const UNTRUSTED_MAX_ENV_VARS: usize = 64;
/// The most bytes of all `environment` names and values together an untrusted peer may register.
pub const UNTRUSTED_MAX_ENV_BYTES: usize = 64 * 1024;
/// The most `backoffIntervalsMs` entries an untrusted peer may register.
pub const UNTRUSTED_MAX_BACKOFF_ENTRIES: usize = 32;

/// Checks the fields of an untrusted registration against the budget; the error names the field and its limit.
pub fn untrusted_budget(config: &ProcessConfig) -> Result<(), String> {
    let over = |what: &str, limit: String| Err(format!("{what} above the limit for untrusted hosts ({limit})"));
    if let Some(policy) = &config.restart_policy {
        if policy.max_attempts > UNTRUSTED_MAX_ATTEMPTS {
            return over("restartPolicy.maxAttempts", UNTRUSTED_MAX_ATTEMPTS.to_string());
        }
        if policy.backoff_intervals_ms.len() > UNTRUSTED_MAX_BACKOFF_ENTRIES {
            return over("restartPolicy.backoffIntervalsMs", format!("{UNTRUSTED_MAX_BACKOFF_ENTRIES} entries"));
        }
    }
    if config.keep_runs.is_some_and(|keep| keep > UNTRUSTED_MAX_KEEP_RUNS) {
        return over("keepRuns", UNTRUSTED_MAX_KEEP_RUNS.to_string());
    }
    if config.stop_timeout_ms.is_some_and(|ms| ms > UNTRUSTED_MAX_STOP_TIMEOUT_MS) {
        return over("stopTimeoutMs", format!("{UNTRUSTED_MAX_STOP_TIMEOUT_MS} ms"));
    }
    if config.args.len() > UNTRUSTED_MAX_ARGS {
        return over("args", format!("{UNTRUSTED_MAX_ARGS} arguments"));
    }
    if config.args.iter().map(String::len).sum::<usize>() > UNTRUSTED_MAX_ARGS_BYTES {
        return over("args", format!("{UNTRUSTED_MAX_ARGS_BYTES} bytes"));
    }
    if let Some(hook) = &config.on_state_change {
        if hook.args.len() > UNTRUSTED_MAX_ARGS {
            return over("onStateChange.args", format!("{UNTRUSTED_MAX_ARGS} arguments"));
        }
        if hook.args.iter().map(String::len).sum::<usize>() > UNTRUSTED_MAX_ARGS_BYTES {
            return over("onStateChange.args", format!("{UNTRUSTED_MAX_ARGS_BYTES} bytes"));
        }
    }
    if let Some(env) = &config.environment {
        if env.len() > UNTRUSTED_MAX_ENV_VARS {
            return over("environment", format!("{UNTRUSTED_MAX_ENV_VARS} variables"));
        }
        if env.iter().map(|(name, value)| name.len() + value.len()).sum::<usize>() > UNTRUSTED_MAX_ENV_BYTES {
            return over("environment", format!("{UNTRUSTED_MAX_ENV_BYTES} bytes"));
        }
    }
    Ok(())
}

/// Whether `id` is reserved for the partner instance of `own_instance`: `watcher` for `default`, `default` for
/// `watcher`, and the configured `partnerInstanceId`. The partner's entry is how two monitors supervise each
/// other, so no registration may take its id.
pub fn is_partner_id(own_instance: &str, configured_partner: Option<&str>, id: &str) -> bool {
    let default_partner = match own_instance {
        crate::DEFAULT_INSTANCE => Some(crate::WATCHER_INSTANCE),
        crate::WATCHER_INSTANCE => Some(crate::DEFAULT_INSTANCE),
        _ => None,
    };
    configured_partner == Some(id) || default_partner == Some(id)
}

/// Whether `url` (an `http://` URL) names a loopback host: `localhost`, an address of 127.0.0.0/8 or `[::1]`.
pub fn url_is_loopback(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, tail)) if tail.is_empty() || tail.starts_with(':') => host,
            _ => return false,
        }
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// Whether `c` is a control character that could forge a line or drive a terminal: C0 (tab included), DEL, C1.
pub fn is_control(c: char) -> bool {
    c.is_control()
}

/// `text` with every control character (C0 including newline, tab and ESC; DEL; C1) written as a `\n`, `\t`,
/// `\r`, `\e` or `\u{..}` escape, and `\` doubled when anything was escaped, so that it can neither start a new
/// line in a log nor drive a terminal. Borrowed when nothing needs escaping.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            c if is_control(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_control_character() {
        assert!(matches!(escape_control("plain text / ünïcode"), Cow::Borrowed(_)));
        assert_eq!(escape_control("a\nb"), "a\\nb");
        assert_eq!(escape_control("\u{1b}[31mred"), "\\e[31mred");
        assert_eq!(escape_control("del\u{7f} c1\u{9b}"), "del\\u{7f} c1\\u{9b}");
        assert_eq!(escape_control("back\\slash\r"), "back\\\\slash\\r");
        assert_eq!(escape_control("tab\t\0"), "tab\\t\\u{0}");
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let escaped = escape_control(&c.to_string()).into_owned();
            assert!(!escaped.chars().any(is_control), "{c:?} -> {escaped:?}");
        }
    }

    #[test]
    fn partner_ids() {
        assert!(is_partner_id("default", None, "watcher"));
        assert!(is_partner_id("watcher", None, "default"));
        assert!(is_partner_id("staging", Some("staging-watch"), "staging-watch"));
        assert!(!is_partner_id("staging", None, "watcher"));
        assert!(!is_partner_id("default", Some("watcher"), "api"));
    }

    #[test]
    fn loopback_urls() {
        for url in [
            "http://localhost:1/a",
            "http://LOCALHOST/",
            "http://127.0.0.1:80",
            "http://127.9.9.9/x",
            "http://[::1]:8/",
        ] {
            assert!(url_is_loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.1/",
            "http://example.com/",
            "http://localhost.example.com/",
            "http://127.0.0.1@10.0.0.1/",
            "http://[::2]/",
            "http://[::1]x/",
            "https://localhost/",
            "http://0.0.0.0:80/",
            "http://2130706433/",
        ] {
            assert!(!url_is_loopback(url), "{url}");
        }
    }

    #[test]
    fn budget_names_the_field() {
        let mut config = ProcessConfig::new("a", "a", "/bin/true");
        assert_eq!(untrusted_budget(&config), Ok(()));
        config.stop_timeout_ms = Some(UNTRUSTED_MAX_STOP_TIMEOUT_MS + 1);
        assert!(untrusted_budget(&config).unwrap_err().starts_with("stopTimeoutMs"));
        config.stop_timeout_ms = None;
        config.keep_runs = Some(UNTRUSTED_MAX_KEEP_RUNS + 1);
        assert!(untrusted_budget(&config).unwrap_err().starts_with("keepRuns"));
        config.keep_runs = None;
        config.args = vec!["x".repeat(1024); 65];
        assert!(untrusted_budget(&config).unwrap_err().starts_with("args"));
        config.args = vec![String::new(); UNTRUSTED_MAX_ARGS + 1];
        assert!(untrusted_budget(&config).unwrap_err().starts_with("args"));
        config.args.clear();
        config.restart_policy = Some(crate::RestartPolicy { max_attempts: 1000, ..Default::default() });
        assert!(untrusted_budget(&config).unwrap_err().starts_with("restartPolicy.maxAttempts"));
    }
}
