//! A real headless Chromium for the dashboard scenarios, driven over WebDriver by a small hand-written client
//! (plain HTTP/1.1 on loopback, JSON through serde_json): no browser-automation
//! crate to compile, and only the handful of commands the scenarios use.
//!
//! `cargo xtask e2e` makes sure Debian's `chromium` and `chromium-driver` are installed and passes their paths in
//! `PM_CHROMIUM` and `PM_CHROMEDRIVER`. [`Browser::start`] runs chromedriver on a free loopback port in a process
//! group of its own; chromedriver starts Chromium with a fresh profile folder. Dropping the [`Browser`] ends the
//! session and kills chromedriver, Chromium and every process below them by PID (and the group), pass or fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::procs;

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The paths of the browser and its driver, from `PM_CHROMIUM` / `PM_CHROMEDRIVER` (set by `cargo xtask e2e`),
/// else the Debian locations. Panics, naming the install command, when they are missing.
pub fn executables() -> (PathBuf, PathBuf) {
    let pick = |var: &str, default: &str| std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| default.into());
    let chromium = pick("PM_CHROMIUM", "/usr/bin/chromium");
    let driver = pick("PM_CHROMEDRIVER", "/usr/bin/chromedriver");
    for path in [&chromium, &driver] {
        assert!(
            path.exists(),
            "{} is missing: install it with `apt-get install -y chromium chromium-driver` (cargo xtask e2e does this \
             when run as root)",
            path.display()
        );
    }
    (chromium, driver)
}

/// One browser session; see the module documentation.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    profile: PathBuf,
}

/// A WebDriver element reference.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium with a window of `width` x `height`.
    pub fn start(width: u32, height: u32) -> Browser {
        use std::os::unix::process::CommandExt;
        let (chromium, driver_bin) = executables();
        let port = crate::free_port();
        let profile = std::env::temp_dir().join(format!("pm-chromium-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}.log", profile.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", driver_bin.display()));
        let mut browser = Browser { driver, port, session: String::new(), profile };
        let started = Instant::now();
        while request(port, "GET", "/status", None, Duration::from_secs(2))
            .ok()
            .is_none_or(|(status, body)| status != 200 || !body.contains("\"ready\":true"))
        {
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not answer on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .chain([format!("--user-data-dir={}", browser.profile.display()), format!("--window-size={width},{height}")])
        .collect::<Vec<_>>();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "unhandledPromptBehavior": "ignore",
        }}});
        let answer = browser.command("POST", "/session", Some(capabilities));
        browser.session = answer["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {answer}")).to_owned();
        browser
    }

    /// Sends one WebDriver command; answers its `value`. Panics on an error answer.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body).unwrap_or_else(|err| panic!("WebDriver {method} {path}: {err}"))
    }

    /// Sends one WebDriver command; answers its `value`, or the error's message.
    pub fn try_command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|value| value.to_string()).or_else(|| (method == "POST").then(|| "{}".to_owned()));
        let (status, text) = request(self.port, method, path, body.as_deref(), Duration::from_secs(90))
            .map_err(|err| format!("no answer from chromedriver: {err}"))?;
        let value: Value = serde_json::from_str(&text).map_err(|err| format!("{err}: {text}"))?;
        if status != 200 {
            return Err(format!("{status}: {}", value["value"]));
        }
        Ok(value["value"].clone())
    }

    fn session_path(&self, tail: &str) -> String {
        format!("/session/{}{tail}", self.session)
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.command("POST", &self.session_path("/url"), Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and answers what it returns.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.command("POST", &self.session_path("/execute/sync"), Some(json!({ "script": script, "args": args })))
    }

    /// Runs an async `script` whose last argument is the callback to call with the result.
    pub fn eval_async(&self, script: &str, args: Value) -> Value {
        self.command("POST", &self.session_path("/execute/async"), Some(json!({ "script": script, "args": args })))
    }

    /// The first element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        let value = self
            .try_command("POST", &self.session_path("/element"), Some(json!({"using": "css selector", "value": css})))
            .ok()?;
        Some(Element(value[ELEMENT].as_str()?.to_owned()))
    }

    /// Waits until an element matching `css` exists.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let started = Instant::now();
        loop {
            if let Some(element) = self.find(css) {
                return element;
            }
            assert!(started.elapsed() < timeout, "no element {css:?} after {timeout:?}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Polls the expression `script` (a function body) until it returns something truthy; answers that and how
    /// long it took. Panics after `timeout`, with `what` and the last value.
    pub fn wait_js(&self, timeout: Duration, what: &str, script: &str) -> (Value, Duration) {
        let started = Instant::now();
        loop {
            let value = self.eval(script, json!([]));
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(it) => *it,
                Value::String(it) => !it.is_empty(),
                Value::Number(it) => it.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return (value, started.elapsed());
            }
            assert!(started.elapsed() < timeout, "timed out after {timeout:?}: {what} (last value {value})");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Clicks an element.
    pub fn click(&self, element: &Element) {
        self.command("POST", &self.session_path(&format!("/element/{}/click", element.0)), None);
    }

    /// Types `text` into an element.
    pub fn type_text(&self, element: &Element, text: &str) {
        self.command("POST", &self.session_path(&format!("/element/{}/value", element.0)), Some(json!({"text": text})));
    }

    /// The visible text of an element.
    pub fn text(&self, element: &Element) -> String {
        self.command("GET", &self.session_path(&format!("/element/{}/text", element.0)), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The text of an open alert, if one is open (an XSS payload that ran would open one).
    pub fn alert_text(&self) -> Option<String> {
        self.try_command("GET", &self.session_path("/alert/text"), None).ok().map(|value| value.to_string())
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.command("POST", &self.session_path("/window/rect"), Some(json!({"width": width, "height": height})));
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let encoded = self.command("GET", &self.session_path("/screenshot"), None);
        let bytes = base64_decode(encoded.as_str().unwrap_or_default());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = request(self.port, "DELETE", &format!("/session/{}", self.session), None, Duration::from_secs(5));
        }
        // Whatever is left below chromedriver (Chromium and its helpers), by PID, then chromedriver's group.
        let pid = self.driver.id();
        for info in procs::descendants(&procs::scan(), &[pid]) {
            procs::signal(info.pid as i32, libc::SIGKILL);
        }
        procs::signal(-(pid as i32), libc::SIGKILL);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One HTTP/1.1 request to chromedriver on 127.0.0.1; (status, body). chromedriver keeps connections open
/// whatever the request says, so the answer is read by its `Content-Length`.
fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(timeout))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {line:?}"));
    let status: u16 =
        line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or_else(|| bad("status line"))?;
    let mut length = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let mut bytes = Vec::new();
    match length {
        Some(length) => {
            bytes.resize(length, 0);
            reader.read_exact(&mut bytes)?;
        }
        None => {
            reader.read_to_end(&mut bytes)?;
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Decodes standard base64 (the screenshot encoding); other characters are skipped.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::with_capacity(text.len() * 3 / 4), 0u32, 0u32);
    for c in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64_decode("aGVsbG8="), b"hello");
        assert_eq!(super::base64_decode("aGk="), b"hi");
        assert_eq!(super::base64_decode("YWJj"), b"abc");
    }
}
