//! Test fixtures: an in-memory control plane, a running API, raw HTTP over loopback, temporary folders.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use pm_core::{
    Error, MonitorState, MonitorStatus, PartnerDiscovery, ProcessConfig, ProcessState, ProcessStatus, Registry,
    RemoteAccessConfig, Settings, SettingsUpdate, Timestamp,
};
use pm_http::{ControlPlane, HttpClient, ServerConfig, ServerHandle};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An in-memory control plane that records every call.
pub struct Fake {
    pub processes: Mutex<BTreeMap<String, (ProcessConfig, ProcessState)>>,
    pub settings: Mutex<Settings>,
    pub calls: Mutex<Vec<String>>,
    pub busy: AtomicBool,
    pub panic: AtomicBool,
}

impl Fake {
    pub fn new() -> Arc<Fake> {
        Arc::new(Fake {
            processes: Mutex::new(BTreeMap::new()),
            settings: Mutex::new(Settings {
                standalone_mode: false,
                remote_access: RemoteAccessConfig::default(),
                partner_discovery: PartnerDiscovery::default(),
            }),
            calls: Mutex::new(Vec::new()),
            busy: AtomicBool::new(false),
            panic: AtomicBool::new(false),
        })
    }

    /// Adds a process directly (as the supervisor's registry would hold it).
    pub fn insert(&self, id: &str, is_remote: bool, enabled: bool) {
        let mut config = ProcessConfig::new(id, id, "/bin/true");
        config.is_remote = is_remote;
        config.enabled = enabled;
        let state = if enabled { ProcessState::Stopped } else { ProcessState::Disabled };
        self.processes.lock().unwrap().insert(id.to_owned(), (config, state));
    }

    pub fn config(&self, id: &str) -> Option<ProcessConfig> {
        self.processes.lock().unwrap().get(id).map(|(config, _)| config.clone())
    }

    pub fn state(&self, id: &str) -> Option<ProcessState> {
        self.processes.lock().unwrap().get(id).map(|(_, state)| *state)
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Makes the loopback peer untrusted: the only trusted host is an address no test ever talks to.
    pub fn untrust_loopback(&self) {
        self.edit_remote(|remote| remote.trusted_hosts = vec!["10.9.9.9".to_owned()]);
    }

    pub fn edit_remote(&self, edit: impl FnOnce(&mut RemoteAccessConfig)) {
        edit(&mut self.settings.lock().unwrap().remote_access);
    }

    fn record(&self, call: String) -> Result<(), Error> {
        self.calls.lock().unwrap().push(call);
        assert!(!self.panic.load(Ordering::SeqCst), "the fake control plane was told to panic");
        if self.busy.load(Ordering::SeqCst) {
            return Err(Error::Busy("test".to_owned()));
        }
        Ok(())
    }

    fn with<T>(
        &self,
        id: &str,
        act: impl FnOnce(&mut ProcessConfig, &mut ProcessState) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut processes = self.processes.lock().unwrap();
        let (config, state) = processes.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        act(config, state)
    }
}

fn status_of(config: &ProcessConfig, state: ProcessState) -> ProcessStatus {
    ProcessStatus {
        id: config.id.clone(),
        name: config.name.clone(),
        state,
        enabled: config.enabled,
        autostart: config.autostart,
        is_remote: config.is_remote,
        pid: None,
        last_started_at: None,
        last_stopped_at: None,
        restart_attempts: 0,
        command: Some(config.command.clone()),
        last_exit_code: None,
        last_signal: None,
        last_error: None,
        uptime: None,
        cpu_percent: None,
        memory_bytes: None,
        restarts_total: None,
        check_failures_total: None,
        last_check_ms: None,
    }
}

pub fn monitor_status() -> MonitorStatus {
    MonitorStatus {
        instance_id: "default".to_owned(),
        pid: 4242,
        started_at: Timestamp::now(),
        uptime: 7,
        state: MonitorState::Running,
        standalone_mode: false,
        partner_instance_id: Some("watcher".to_owned()),
        partner_status: Some("alive".to_owned()),
        partner_pid: Some(4343),
        managed_process_count: 1,
        running_process_count: 0,
        version: None,
        aliveness_port: None,
        remote_port: None,
    }
}

impl ControlPlane for Fake {
    async fn list(&self) -> Vec<ProcessStatus> {
        let _ = self.record("list".to_owned());
        self.processes.lock().unwrap().values().map(|(config, state)| status_of(config, *state)).collect()
    }

    async fn get(&self, id: &str) -> Result<ProcessStatus, Error> {
        self.record(format!("get:{id}"))?;
        self.with(id, |config, state| Ok(status_of(config, *state)))
    }

    async fn register(&self, config: ProcessConfig) -> Result<(), Error> {
        self.record(format!("register:{}", config.id))?;
        let mut processes = self.processes.lock().unwrap();
        if processes.contains_key(&config.id) {
            return Err(Error::AlreadyExists(config.id));
        }
        let state = if config.enabled { ProcessState::Stopped } else { ProcessState::Disabled };
        processes.insert(config.id.clone(), (config, state));
        Ok(())
    }

    async fn deregister(&self, id: &str) -> Result<(), Error> {
        self.record(format!("deregister:{id}"))?;
        self.processes.lock().unwrap().remove(id).map(|_| ()).ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    async fn start(&self, id: &str) -> Result<ProcessState, Error> {
        self.record(format!("start:{id}"))?;
        self.with(id, |config, state| {
            if !config.enabled {
                return Err(Error::Disabled(id.to_owned()));
            }
            *state = ProcessState::Starting;
            Ok(*state)
        })
    }

    async fn stop(&self, id: &str) -> Result<ProcessState, Error> {
        self.record(format!("stop:{id}"))?;
        self.with(id, |_, state| {
            *state = ProcessState::Stopped;
            Ok(*state)
        })
    }

    async fn restart(&self, id: &str) -> Result<ProcessState, Error> {
        self.record(format!("restart:{id}"))?;
        self.with(id, |config, state| {
            if !config.enabled {
                return Err(Error::Disabled(id.to_owned()));
            }
            *state = ProcessState::Starting;
            Ok(*state)
        })
    }

    async fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), Error> {
        self.record(format!("set_enabled:{id}:{enabled}"))?;
        self.with(id, |config, state| {
            config.enabled = enabled;
            *state = if enabled { ProcessState::Stopped } else { ProcessState::Disabled };
            Ok(())
        })
    }

    async fn set_autostart(&self, id: &str, autostart: bool) -> Result<(), Error> {
        self.record(format!("set_autostart:{id}:{autostart}"))?;
        self.with(id, |config, _| {
            config.autostart = autostart;
            Ok(())
        })
    }

    fn monitor_status(&self) -> MonitorStatus {
        monitor_status()
    }

    async fn restart_monitor(&self) -> Result<(), Error> {
        self.record("restart_monitor".to_owned())
    }

    fn settings(&self) -> Settings {
        self.settings.lock().unwrap().clone()
    }

    async fn update_settings(&self, update: SettingsUpdate) -> Result<Settings, Error> {
        self.record(format!("update_settings:{update:?}"))?;
        let mut settings = self.settings.lock().unwrap();
        let mut registry = Registry::new_default("default");
        registry.standalone_mode = settings.standalone_mode;
        registry.remote_access = settings.remote_access.clone();
        registry.partner_discovery = settings.partner_discovery.clone();
        update.apply(&mut registry)?;
        *settings = Settings::of(&registry);
        Ok(settings.clone())
    }

    fn is_remote(&self, id: &str) -> Option<bool> {
        self.processes.lock().unwrap().get(id).map(|(config, _)| config.is_remote)
    }
}

/// A remote API served on loopback with a fake control plane behind it.
pub struct Api {
    pub fake: Arc<Fake>,
    pub server: ServerHandle,
    pub client: HttpClient,
}

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub json: Value,
}

impl Reply {
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_else(|| panic!("no error message in {self:?}"))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or("")
    }
}

impl Api {
    pub fn start() -> Api {
        Api::start_with(Fake::new(), ServerConfig::default())
    }

    pub fn start_with(fake: Arc<Fake>, config: ServerConfig) -> Api {
        let listener = pm_http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = pm_http::spawn_remote_api(listener, fake.clone(), config).unwrap();
        Api { fake, server, client: HttpClient::new() }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let url = format!("http://{}{path}", self.addr());
        let body = body.map(|value| serde_json::to_vec(&value).unwrap());
        let res = self.client.request(method, &url, body, Duration::from_secs(10)).await.unwrap();
        let json = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
        Reply { status: res.status, headers: res.headers, json }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Reply {
        self.call(Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }
}

/// A raw HTTP exchange: sends `request` as is (it should say `Connection: close`) and reads until EOF.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> RawReply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw_on(stream, request).await
}

/// As [`raw`], on an already connected stream.
pub async fn raw_on(mut stream: tokio::net::TcpStream, request: &[u8]) -> RawReply {
    stream.write_all(request).await.unwrap();
    read_reply(&mut stream, Duration::from_secs(10)).await
}

/// Reads a whole response (until EOF or error) within `deadline`.
pub async fn read_reply(stream: &mut tokio::net::TcpStream, deadline: Duration) -> RawReply {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(deadline, async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no EOF within {deadline:?}; got {:?}", String::from_utf8_lossy(&buf));
    RawReply::parse(&buf)
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawReply {
    /// 0 when nothing (or no status line) came back.
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawReply {
    fn parse(buf: &[u8]) -> RawReply {
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n");
        let (head, body) = match split {
            Some(at) => (String::from_utf8_lossy(&buf[..at]).into_owned(), buf[at + 4..].to_vec()),
            None => (String::from_utf8_lossy(buf).into_owned(), Vec::new()),
        };
        let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        RawReply { status, head, body }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Polls `check` until it holds or `deadline` passes; answers whether it held.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A temporary folder (canonical path), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "pm-http-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(std::fs::canonicalize(path).unwrap())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates an executable shell script `name` (folders included) and answers its path.
    pub fn executable(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
