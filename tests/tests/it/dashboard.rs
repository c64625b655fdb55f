//! The web dashboard (issue 17) in a real headless Chromium against the real daemon: sign in with a token, the
//! process list live over the event stream, actions, a live log tail, the register form's field errors, escaped
//! output, and a `read` token that sees no actions and whose forged POST is refused.
//!
//! Screenshots go to `target/dashboard-desktop.png` and `target/dashboard-375.png`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pm_tests::browser::Browser;
use pm_tests::report;
use pm_tests::site::Site;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(30);
const XSS: &str = "<img src=x onerror=alert(1)>";

fn site(label: &str) -> Option<Site> {
    let site = Site::new(label, Path::new(env!("CARGO_BIN_EXE_pm-test-reaper")))?;
    site.start_daemon();
    Some(site)
}

/// Registers a process through the API (from 127.0.0.1, a trusted host).
fn register(site: &Site, config: &pm_core::ProcessConfig) {
    let body = serde_json::to_string(config).unwrap();
    let (status, answer) = site.api("POST", "/processes", Some(&body)).expect("the API answers");
    assert_eq!(status, 200, "register {}: {answer}", config.id);
}

/// A process that prints the content of its trigger file whenever the test writes one.
fn logger(site: &Site) -> (pm_core::ProcessConfig, PathBuf) {
    let trigger = site.dir.join("logger.trigger");
    let mut config = site.sleeper("logger");
    let script = format!(
        "echo logger started; while :; do if [ -f '{0}' ]; then cat '{0}'; rm -f '{0}'; fi; sleep 0.1; done",
        trigger.display()
    );
    config.args = vec!["-c".to_owned(), script, site.marker("logger")];
    (config, trigger)
}

/// A new token of `scope` from the CLI (`process_monitor token create`).
fn token(site: &Site, name: &str, scope: &str) -> String {
    let output = std::process::Command::new(&site.bin)
        .arg("--directory")
        .arg(&site.dir)
        .args(["token", "create", "--name", name, "--scope", scope])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "token create: {stdout} {}", String::from_utf8_lossy(&output.stderr));
    stdout.trim().to_owned()
}

fn wait_running(site: &Site, ids: &[&str]) {
    let started = Instant::now();
    while !site.statuses().is_some_and(|statuses| {
        ids.iter().all(|id| statuses.get(*id).is_some_and(|status| status.state == pm_core::ProcessState::Running))
    }) {
        assert!(started.elapsed() < LONG, "{ids:?} not running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("target"))
}

/// Opens the dashboard and signs in with `token`; waits until `rows` processes are listed and the stream is live.
fn sign_in(browser: &Browser, site: &Site, token: &str, rows: usize) {
    browser.goto(&format!("http://127.0.0.1:{}/", site.remote_port));
    let input = browser.wait_for("#token", LONG);
    browser.type_text(&input, token);
    browser.click(&browser.wait_for("#login-form button[type=submit]", LONG));
    browser.wait_js(
        LONG,
        "the process list and the live stream",
        &format!(
            "return document.querySelectorAll('#procs-body tr').length === {rows} \
             && document.getElementById('conn').textContent === 'live'"
        ),
    );
    let stored = browser.eval("return [sessionStorage.getItem('pm-token'), localStorage.length]", json!([]));
    assert_eq!(stored, json!([token, 0]), "the token is kept in sessionStorage only");
}

fn state_of(browser: &Browser, id: &str) -> Value {
    browser.eval(
        "const row = document.querySelector(`tr[data-id=\"${arguments[0]}\"] .state`); return row && row.textContent",
        json!([id]),
    )
}

#[test]
fn dashboard_in_a_real_browser_shows_and_acts_live() {
    let Some(site) = site("dash") else { return };
    let mut alpha = site.sleeper("alpha");
    // A visible backoff: `retrying` lasts half a second.
    alpha.restart_policy.as_mut().unwrap().backoff_intervals_ms = vec![500];
    register(&site, &alpha);
    let mut beta = site.sleeper("beta");
    beta.name = XSS.to_owned();
    register(&site, &beta);
    let (logger, trigger) = logger(&site);
    register(&site, &logger);
    wait_running(&site, &["alpha", "beta", "logger"]);
    let admin = token(&site, "dash-admin", "admin");

    let browser = Browser::start(1366, 860);
    sign_in(&browser, &site, &admin, 3);

    // The hostile name is text: the link reads it verbatim, no image element exists, no alert opened.
    let name = browser.eval("return document.querySelector('tr[data-id=\"beta\"] .proc-link').textContent", json!([]));
    assert_eq!(name, json!(XSS));
    assert_eq!(browser.eval("return document.querySelectorAll('img').length", json!([])), json!(0));
    assert_eq!(browser.alert_text(), None, "an alert opened: the name ran as markup");
    browser.wait_js(
        LONG,
        "CPU and memory figures",
        "return document.querySelector('tr[data-id=\"alpha\"] td:nth-child(7)').textContent.includes('iB')",
    );

    // A crash and its restart appear live in the row: every state badge the row shows is recorded.
    browser.eval(
        "window.seen = []; const cell = document.querySelector('tr[data-id=\"alpha\"] .state-cell'); \
         new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach((n) => window.seen.push(n.textContent)))) \
         .observe(cell, {childList: true}); \
         return true",
        json!([]),
    );
    let pid = site.statuses().unwrap()["alpha"].pid.expect("alpha runs");
    pm_tests::kill9(pid);
    let (seen, took) = browser.wait_js(
        LONG,
        "crashed, retrying and running again in the row",
        "const s = window.seen.join(' '); const c = s.indexOf('crashed'), r = s.indexOf('retrying', c); \
         return c >= 0 && r > c && s.indexOf('running', r) > r ? window.seen : null",
    );
    report("dashboard: crash shown live", &format!("{seen} in {took:.0?}"));
    let new_pid = site.statuses().unwrap()["alpha"].pid;
    assert!(new_pid.is_some_and(|new| new != pid), "alpha was restarted with a new PID");

    // Stop with its confirmation: the row turns `stopped` without a reload, within 2 s of the click on Confirm
    // (timed in the page, so WebDriver's own round trips do not count).
    browser.eval(
        "window.notReloaded = true; \
         document.getElementById('confirm-ok').addEventListener('click', () => window.clickAt = performance.now()); \
         const cell = document.querySelector('tr[data-id=\"alpha\"] .state-cell'); \
         new MutationObserver(() => { if (cell.textContent === 'stopped' && window.clickAt && !window.stoppedAt) \
           window.stoppedAt = performance.now(); }).observe(cell, {childList: true, subtree: true}); \
         return true",
        json!([]),
    );
    browser.click(&browser.wait_for("tr[data-id=\"alpha\"] button[data-action=\"stop\"]", LONG));
    browser.click(&browser.wait_for("#confirm[open] #confirm-ok", LONG));
    let (took, _) =
        browser.wait_js(LONG, "alpha shown stopped", "return window.stoppedAt && window.stoppedAt - window.clickAt");
    let took = Duration::from_secs_f64(took.as_f64().unwrap() / 1000.0);
    report("dashboard: stop shown", &format!("{took:.0?} after the click"));
    assert!(took < Duration::from_secs(2), "the row turned stopped {took:?} after the click");
    assert_eq!(browser.eval("return window.notReloaded === true", json!([])), json!(true), "the page reloaded");
    assert_eq!(site.statuses().unwrap()["alpha"].state, pm_core::ProcessState::Stopped);
    assert_eq!(state_of(&browser, "beta"), json!("running"));
    browser.screenshot(&target_dir().join("dashboard-desktop.png"));

    // The log tail follows: a line printed after the page opened shows up.
    browser.click(&browser.wait_for("tr[data-id=\"logger\"] .proc-link", LONG));
    browser.wait_js(
        LONG,
        "the log follows",
        "return document.getElementById('log-status').textContent === 'following'",
    );
    browser.wait_js(
        LONG,
        "the tail's first line",
        "return document.getElementById('log').textContent.includes('logger started')",
    );
    let line = format!("printed-after-open-{}", std::process::id());
    std::fs::write(&trigger, format!("{line}\n")).unwrap();
    let (_, took) = browser.wait_js(
        LONG,
        "the new log line",
        &format!("return document.getElementById('log').textContent.includes('{line}')"),
    );
    report("dashboard: log line shown", &format!("{took:.0?}"));
    // The monitor restarts in place (the logger is adopted): the followed log reconnects by itself and goes on
    // where it stood, showing no line twice and none missing.
    browser.eval(
        "window.logSeen = []; window.firstLogNode = document.getElementById('log').firstChild; \
         const st = document.getElementById('log-status'); \
         new MutationObserver(() => window.logSeen.push(st.textContent)) \
         .observe(st, {childList: true, characterData: true, subtree: true}); return true",
        json!([]),
    );
    let monitor = site.daemon_pid().expect("the monitor runs");
    let (status, answer) = site.api("POST", "/monitor/restart", None).expect("the API answers");
    assert_eq!(status, 200, "monitor restart: {answer}");
    browser.wait_js(
        LONG,
        "the log followed again after the restart",
        "return window.logSeen.some(t => t !== 'following') \
         && document.getElementById('log-status').textContent === 'following'",
    );
    assert!(site.daemon_pid().is_some_and(|pid| pid != monitor), "the monitor restarted");
    let after = format!("printed-after-restart-{}", std::process::id());
    std::fs::write(&trigger, format!("{after}\n")).unwrap();
    browser.wait_js(
        LONG,
        "the line printed after the restart",
        &format!("return document.getElementById('log').textContent.includes('{after}')"),
    );
    let text = browser.eval("return document.getElementById('log').textContent", json!([]));
    let text = text.as_str().unwrap();
    for once in ["logger started", line.as_str(), after.as_str()] {
        assert_eq!(text.matches(once).count(), 1, "{once:?} shown once: {text}");
    }
    assert!(!text.contains("may be missing"), "{text}");
    let kept = browser.eval("return window.firstLogNode.isConnected", json!([]));
    assert_eq!(kept, json!(true), "the lines shown before the reconnection were kept, not shown afresh");
    let timeline = browser.eval("return document.getElementById('proc-events').textContent", json!([]));
    assert!(timeline.as_str().unwrap_or_default().contains("running"), "events timeline: {timeline}");

    // The register form puts the API's error next to the field.
    browser.goto(&format!("http://127.0.0.1:{}/#/register", site.remote_port));
    // A navigation to the same document keeps the session (sessionStorage) and signs in again by itself.
    browser.wait_js(LONG, "the register form", "return !document.getElementById('view-register').hidden");
    browser.type_text(&browser.wait_for("#reg-id", LONG), "bad id!");
    browser.type_text(&browser.wait_for("#reg-command", LONG), "/bin/true");
    browser.click(&browser.wait_for("#reg-form button[type=submit]", LONG));
    let (error, _) = browser.wait_js(LONG, "the id error", "return document.getElementById('err-id').textContent");
    assert!(error.as_str().unwrap().contains("id"), "error next to the id: {error}");
    assert_eq!(browser.eval("return document.getElementById('err-form').textContent", json!([])), json!(""));
    assert_eq!(browser.eval("return document.activeElement.id", json!([])), json!("reg-id"));
    assert!(!site.statuses().unwrap().contains_key("bad id!"));

    // The monitor panel and, for an admin token, editable settings and the monitor restart button.
    browser.goto(&format!("http://127.0.0.1:{}/#/monitor", site.remote_port));
    browser.wait_js(
        LONG,
        "the monitor panel",
        "return document.getElementById('mon-fields').textContent.includes('default')",
    );
    assert_eq!(browser.eval("return document.getElementById('mon-restart').hidden", json!([])), json!(false));
    browser.goto(&format!("http://127.0.0.1:{}/#/settings", site.remote_port));
    browser.wait_js(LONG, "the settings", "return document.querySelectorAll('#settings textarea').length >= 3");
    let editable = browser
        .eval("return [...document.querySelectorAll('#settings textarea')].filter(e => !e.readOnly).length", json!([]));
    assert_eq!(editable, json!(3), "trusted hosts, whitelist and blacklist are editable for admin");

    // A phone-sized window: no sideways scrolling, the states still shown.
    browser.resize(375, 780);
    browser.goto(&format!("http://127.0.0.1:{}/#/", site.remote_port));
    browser.wait_js(LONG, "the list again", "return document.querySelectorAll('#procs-body tr').length === 3");
    let width = browser.eval("return document.documentElement.scrollWidth", json!([]));
    assert!(width.as_u64().unwrap() <= 375, "the page is {width} px wide at 375 px");
    browser.screenshot(&target_dir().join("dashboard-375.png"));
}

#[test]
fn dashboard_with_a_read_token_offers_no_actions_and_a_forged_post_is_refused() {
    let Some(site) = site("dash-read") else { return };
    register(&site, &site.sleeper("alpha"));
    wait_running(&site, &["alpha"]);
    let read = token(&site, "dash-read", "read");
    let browser = Browser::start(1280, 800);
    sign_in(&browser, &site, &read, 1);
    browser.wait_js(LONG, "the scope is known", "return document.body.dataset.scope");
    assert_eq!(browser.eval("return document.body.dataset.scope", json!([])), json!("read"));
    let buttons = "return document.querySelectorAll('button[data-action]').length";
    assert_eq!(browser.eval(buttons, json!([])), json!(0), "action buttons in the list");
    assert_eq!(browser.eval("return document.getElementById('nav-register').hidden", json!([])), json!(true));
    browser.click(&browser.wait_for("tr[data-id=\"alpha\"] .proc-link", LONG));
    browser.wait_js(LONG, "the process page", "return document.getElementById('proc-title').textContent === 'alpha'");
    assert_eq!(browser.eval(buttons, json!([])), json!(0), "action buttons on the process page");
    browser.goto(&format!("http://127.0.0.1:{}/#/settings", site.remote_port));
    browser.wait_js(LONG, "the settings", "return document.querySelectorAll('#settings textarea').length >= 3");
    let editable = browser.eval(
        "return [...document.querySelectorAll('#settings textarea, #settings input')].filter(e => !e.readOnly && !e.disabled).length",
        json!([]),
    );
    assert_eq!(editable, json!(0), "settings are read-only for a read token");
    // A request forged in the page with the read token is refused, and changes nothing.
    let answer = browser.eval_async(
        "const done = arguments[arguments.length - 1]; \
         fetch('/processes/alpha/stop', {method: 'POST', headers: {Authorization: 'Bearer ' + sessionStorage.getItem('pm-token')}}) \
           .then(r => r.json().then(j => done([r.status, j.error]))).catch(e => done(String(e)))",
        json!([]),
    );
    assert_eq!(answer, json!([403, "Not permitted for this token"]));
    assert_eq!(site.statuses().unwrap()["alpha"].state, pm_core::ProcessState::Running);
}

/// Clicks the action button `action` of process `id` (in its list row, or on its page when `on_page`).
fn click_action(browser: &Browser, id: &str, action: &str, on_page: bool) {
    let css = if on_page {
        format!("#proc-actions button[data-action=\"{action}\"]")
    } else {
        format!("tr[data-id=\"{id}\"] button[data-action=\"{action}\"]")
    };
    browser.click(&browser.wait_for(&css, LONG));
}

/// Waits until the monitor reports `check` of process `id` true.
fn wait_status(site: &Site, id: &str, what: &str, check: impl Fn(&pm_core::ProcessStatus) -> bool) {
    let started = Instant::now();
    while !site.statuses().is_some_and(|statuses| statuses.get(id).is_some_and(&check)) {
        assert!(
            started.elapsed() < LONG,
            "{id}: {what} not reached: {:?}",
            site.statuses().and_then(|s| s.get(id).cloned())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dashboard_every_action_goes_through_the_api() {
    let Some(site) = site("dash-actions") else { return };
    let mut alpha = site.sleeper("alpha");
    alpha.environment = Some([("SECRET_KEY".to_owned(), "visible-to-admin".to_owned())].into());
    register(&site, &alpha);
    wait_running(&site, &["alpha"]);
    let admin = token(&site, "dash-admin", "admin");
    let browser = Browser::start(1366, 860);
    sign_in(&browser, &site, &admin, 1);
    assert_eq!(browser.eval("return document.body.dataset.scope", json!([])), json!("admin"));

    // The process page shows the whole configuration (GET /processes/{id}/config).
    browser.click(&browser.wait_for("tr[data-id=\"alpha\"] .proc-link", LONG));
    browser.wait_js(
        LONG,
        "the configuration",
        "const dd = document.querySelector('#proc-config dd[data-key=\"command\"]'); return dd && dd.textContent === '/bin/sh'",
    );
    let config = browser.eval("return document.getElementById('proc-config').textContent", json!([]));
    let config = config.as_str().unwrap();
    for part in ["restartPolicy", "backoffIntervalsMs", "args", "SECRET_KEY", "visible-to-admin", "stopTimeoutMs"] {
        assert!(config.contains(part), "{part} missing from the configuration: {config}");
    }

    // Restart: a new child.
    let pid = site.statuses().unwrap()["alpha"].pid.unwrap();
    click_action(&browser, "alpha", "restart", true);
    wait_status(&site, "alpha", "a new pid", |status| status.pid.is_some_and(|new| new != pid));
    // Disable, then enable: the page follows each change live.
    click_action(&browser, "alpha", "disable", true);
    wait_status(&site, "alpha", "disabled", |status| !status.enabled);
    browser.wait_js(LONG, "shown disabled", "return document.getElementById('proc-state').textContent === 'disabled'");
    click_action(&browser, "alpha", "enable", true);
    wait_status(&site, "alpha", "enabled", |status| status.enabled);
    // Start (the button is offered once it is enabled and not running).
    click_action(&browser, "alpha", "start", true);
    wait_status(&site, "alpha", "running", |status| status.state == pm_core::ProcessState::Running);
    browser.wait_js(LONG, "shown running", "return document.getElementById('proc-state').textContent === 'running'");
    // Autostart off and on.
    let autostart = site.statuses().unwrap()["alpha"].autostart;
    let (first, second) = if autostart { ("autostart-off", "autostart-on") } else { ("autostart-on", "autostart-off") };
    click_action(&browser, "alpha", first, true);
    wait_status(&site, "alpha", "autostart toggled", |status| status.autostart != autostart);
    click_action(&browser, "alpha", second, true);
    wait_status(&site, "alpha", "autostart back", |status| status.autostart == autostart);

    // Register through the form: it appears in the list and its page opens.
    browser.goto(&format!("http://127.0.0.1:{}/#/register", site.remote_port));
    browser.wait_js(LONG, "the register form", "return !document.getElementById('view-register').hidden");
    browser.type_text(&browser.wait_for("#reg-id", LONG), "gamma");
    browser.type_text(&browser.wait_for("#reg-command", LONG), "/bin/sleep");
    browser.type_text(&browser.wait_for("#reg-args", LONG), "600");
    browser.click(&browser.wait_for("#reg-form button[type=submit]", LONG));
    wait_status(&site, "gamma", "registered", |_| true);
    browser.wait_js(LONG, "gamma's page", "return document.getElementById('proc-title').textContent === 'gamma'");
    // gamma now runs like alpha (enabled, autostart): its page's buttons must be its own, not those left from
    // alpha's page (they once were, when the buttons were kept by state alone).
    wait_status(&site, "gamma", "running", |status| status.state == pm_core::ProcessState::Running);
    // Within the page (no reload): alpha's page, the list, then gamma's page.
    for id in ["alpha", "gamma"] {
        browser.click(&browser.wait_for("#nav a[href=\"#/\"]", LONG));
        browser.click(&browser.wait_for(&format!("tr[data-id=\"{id}\"] .proc-link"), LONG));
        browser.wait_js(
            LONG,
            "the process page, running",
            &format!(
                "return document.getElementById('proc-title').textContent === '{id}' \
                 && document.getElementById('proc-state').textContent === 'running'"
            ),
        );
    }
    let label = browser.eval(
        "return document.querySelector('#proc-actions button[data-action=\"deregister\"]').getAttribute('aria-label')",
        json!([]),
    );
    assert_eq!(label, json!("Deregister gamma"));

    // Deregister asks first: Cancel keeps it, Confirm removes it.
    click_action(&browser, "gamma", "deregister", true);
    browser.click(&browser.wait_for("#confirm[open] #confirm-cancel", LONG));
    browser.wait_js(LONG, "the dialog closed", "return !document.getElementById('confirm').open");
    assert!(site.statuses().unwrap().contains_key("gamma"), "a cancelled deregister removed gamma");
    click_action(&browser, "gamma", "deregister", true);
    browser.click(&browser.wait_for("#confirm[open] #confirm-ok", LONG));
    let started = Instant::now();
    while site.statuses().unwrap().contains_key("gamma") {
        if started.elapsed() > LONG {
            let page = browser.eval(
                "return [document.getElementById('toast').textContent, document.getElementById('confirm').open, \
                 location.hash, document.getElementById('proc-actions').innerHTML]",
                json!([]),
            );
            panic!("gamma still registered; the page: {page}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    browser.wait_js(LONG, "gamma gone from the list", "return !document.querySelector('tr[data-id=\"gamma\"]')");
    assert!(site.statuses().unwrap().contains_key("alpha"), "alpha was deregistered instead of gamma");

    // Monitor self-restart (confirmed): a new monitor process, alpha adopted, the page live again by itself.
    let monitor = site.daemon_pid().expect("the monitor runs");
    let alpha_pid = site.statuses().unwrap()["alpha"].pid;
    browser.goto(&format!("http://127.0.0.1:{}/#/monitor", site.remote_port));
    browser.eval(
        "window.connSeen = []; const conn = document.getElementById('conn'); \
         new MutationObserver(() => window.connSeen.push(conn.textContent)) \
         .observe(conn, {childList: true, characterData: true, subtree: true}); return true",
        json!([]),
    );
    browser.click(&browser.wait_for("#mon-restart:not([hidden])", LONG));
    browser.click(&browser.wait_for("#confirm[open] #confirm-ok", LONG));
    let started = Instant::now();
    while site.daemon_pid().is_none_or(|pid| pid == monitor) {
        assert!(started.elapsed() < LONG, "the monitor did not restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    browser.wait_js(
        LONG,
        "disconnected, then live again",
        "return window.connSeen.some(t => t !== 'live') && document.getElementById('conn').textContent === 'live'",
    );
    wait_status(&site, "alpha", "adopted", |status| status.pid == alpha_pid);
}
