//! The daemon's start-up and its files against the real binary: a refused start leaves nothing behind (issue 12,
//! item 1), modes are private whatever the umask (issue 12, item 7), a home another user controls is refused
//! (issue 21, item 2), and adoption by environment cannot be spoofed (issue 21, item 3).

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pm_core::ProcessState;
use pm_tests::report;
use pm_tests::site::{DaemonOptions, Site};

/// The uid tests hand foreign files and processes to (nobody).
const OTHER_UID: u32 = 65534;

fn site(label: &str) -> Option<Site> {
    Site::new(label, Path::new(env!("CARGO_BIN_EXE_pm-test-reaper")))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

fn chown(path: &Path, uid: u32) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: lchown on a NUL-terminated path; -1 keeps the group.
    let rc = unsafe { libc::lchown(c.as_ptr(), uid, u32::MAX) };
    assert_eq!(rc, 0, "lchown {}: {}", path.display(), std::io::Error::last_os_error());
}

/// Processes the test started itself, killed with their groups (and reaped) when dropped, pass or fail.
#[derive(Default)]
struct Spawned(Vec<Child>);

impl Spawned {
    fn add(&mut self, child: Child) -> u32 {
        let pid = child.id();
        self.0.push(child);
        pid
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        for child in &mut self.0 {
            pm_tests::procs::signal(-(child.id() as i32), libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kills by PID and group every process carrying one of the site's markers that is not below the site's reapers
/// (what a detached start outside the reapers may have left), pass or fail.
struct MarkedStrays<'a>(&'a Site);

impl Drop for MarkedStrays<'_> {
    fn drop(&mut self) {
        let prefix = self.0.marker_prefix();
        for info in pm_tests::procs::scan() {
            if info.args.iter().any(|arg| arg.starts_with(&prefix)) {
                pm_tests::procs::signal(-(info.pgrp as i32), libc::SIGKILL);
                pm_tests::procs::signal(info.pid as i32, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn a_refused_start_leaves_no_child_and_the_registry_as_found() {
    let Some(site) = site("df-refused") else { return };
    let _strays = MarkedStrays(&site);
    site.edit(|registry| {
        let mut config = site.sleeper("auto");
        config.autostart = true;
        registry
            .processes
            .insert("auto".to_owned(), pm_core::ProcessEntry::new(config, pm_core::Timestamp::now()).into());
    });
    let before = std::fs::read(site.paths().registry_file()).unwrap();
    // Another program holds the remote API's port.
    let squatter = TcpListener::bind(("127.0.0.1", site.remote_port)).unwrap();
    let started = Instant::now();
    let mut command = Command::new(&site.bin);
    command
        .arg("--directory")
        .arg(&site.dir)
        .args(["--instance-id", "default", "--standalone", "--foreground"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut spawned = Spawned::default();
    let pid = spawned.add(command.spawn().unwrap());
    wait_until(Duration::from_secs(20), "the refused monitor to exit", || {
        spawned.0[0].try_wait().ok().flatten().is_some()
    });
    let child = spawned.0.remove(0);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the refused start exited 0: {stderr}");
    assert!(
        stderr.contains("cannot listen for the remote API") && stderr.contains(&site.remote_port.to_string()),
        "no reason given: {stderr}"
    );
    // Nothing was started, and the registry is byte for byte what it was (monitorRunning not set).
    std::thread::sleep(Duration::from_millis(200));
    assert!(site.copies("auto").is_empty(), "the refused start left a child running");
    assert!(site.starts("auto").is_empty(), "the refused start started a child");
    assert_eq!(std::fs::read(site.paths().registry_file()).unwrap(), before, "the registry was changed");
    assert!(!site.registry().unwrap().monitor_running);
    assert!(!pm_registry::proc::alive(pid));

    // Once the port is free, the next start boots as if the refused one had never happened.
    drop(squatter);
    site.start_daemon();
    let took = wait_until(Duration::from_secs(20), "auto to be started at boot", || site.copies("auto").len() == 1);
    assert_eq!(site.starts("auto").len(), 1);
    report(
        "daemon files: refused start",
        &format!(
            "exit {:?} after {:.1?}, nothing started; next boot started auto in {took:.1?}",
            output.status.code(),
            started.elapsed()
        ),
    );
}

#[test]
fn files_are_private_whatever_the_umask() {
    let Some(site) = site("df-umask") else { return };
    // Start from a folder without the instance's files: the daemon creates every one of them under umask 0377,
    // which would leave folders 0400 and files 0400 if the modes came from the umask.
    for path in [site.paths().registry_file(), site.paths().transaction_lock_file()] {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_dir_all(site.paths().logs_dir());
    site.edit(|registry| {
        let (alive, remote) = (site.alive_port, site.remote_port);
        registry.standalone_mode = true;
        registry.remote_access.remote_port = remote;
        registry.remote_access.bind_address = "127.0.0.1".to_owned();
        registry.aliveness_server.port = alive;
        registry.aliveness_server.bind_address = "127.0.0.1".to_owned();
        registry
            .processes
            .insert("m".to_owned(), pm_core::ProcessEntry::new(site.sleeper("m"), pm_core::Timestamp::now()).into());
        registry.processes.get_mut("m").unwrap().config.autostart = true;
    });
    let _ = std::fs::remove_file(site.paths().registry_file().with_extension("json.bak"));
    // The registry the suite wrote: make the daemon write its own (a save and a backup).
    std::fs::set_permissions(site.paths().registry_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(site.paths().transaction_lock_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let daemon =
        site.spawn_daemon(&DaemonOptions { file_size_limit: None, umask: Some(0o377), extra_args: Vec::new() });
    site.wait_ready(daemon, Duration::from_secs(20)).unwrap();
    wait_until(Duration::from_secs(20), "m runs", || site.copies("m").len() == 1);
    let paths = site.paths();
    wait_until(Duration::from_secs(5), "a backup exists", || paths.registry_file().with_extension("json.bak").exists());
    let run_dir = std::fs::read_dir(paths.process_logs_dir("m")).unwrap().flatten().next().unwrap().path();
    let monitor_log = std::fs::read_dir(paths.monitor_dir()).unwrap().flatten().next().unwrap().path();
    let mut lines = Vec::new();
    for (path, want) in [
        (paths.registry_file(), 0o600),
        (paths.registry_file().with_extension("json.bak"), 0o600),
        (paths.lock_file(), 0o600),
        (paths.transaction_lock_file(), 0o600),
        (paths.logs_dir(), 0o700),
        (paths.monitor_dir(), 0o700),
        (monitor_log, 0o600),
        (paths.process_logs_dir("m"), 0o700),
        (run_dir.clone(), 0o700),
        (run_dir.join("stdout.log"), 0o600),
        (run_dir.join("stderr.log"), 0o600),
    ] {
        let got = std::fs::metadata(&path).unwrap().mode() & 0o777;
        lines.push(format!("{got:o} {}", path.strip_prefix(&site.dir).unwrap().display()));
        assert_eq!(got, want, "{} is {got:o} under umask 0377, expected {want:o}", path.display());
    }
    report("daemon files: modes under umask 0377", &lines.join(", "));
}

/// Starts a daemon that must refuse to start; answers what it said.
fn refused(site: &Site, what: &str) -> String {
    let daemon = site.spawn_daemon(&DaemonOptions::plain());
    let err = site.wait_ready(daemon, Duration::from_secs(20)).expect_err(what);
    assert!(err.contains("refuses to use it") && err.contains("fix:"), "{what}: {err}");
    err
}

#[test]
fn a_home_another_user_controls_is_refused() {
    let Some(site) = site("df-owner") else { return };
    let paths = site.paths();
    let mut cases = Vec::new();
    // A home folder others may write (another user could rename a registry into it).
    std::fs::set_permissions(&site.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = refused(&site, "a world-writable home");
    assert!(err.contains(&site.dir.display().to_string()) && err.contains("chmod go-w"), "{err}");
    cases.push("world-writable home");
    std::fs::set_permissions(&site.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    if is_root() {
        // A home folder of another user.
        chown(&site.dir, OTHER_UID);
        let err = refused(&site, "another user's home");
        assert!(err.contains(&site.dir.display().to_string()) && err.contains(&format!("uid {OTHER_UID}")), "{err}");
        chown(&site.dir, 0);
        // Another user's registry renamed into the home.
        chown(&paths.registry_file(), OTHER_UID);
        let err = refused(&site, "another user's registry");
        assert!(err.contains(&paths.registry_file().display().to_string()), "{err}");
        chown(&paths.registry_file(), 0);
        // Another user's log folder.
        std::fs::create_dir_all(paths.logs_dir()).unwrap();
        chown(&paths.logs_dir(), OTHER_UID);
        let err = refused(&site, "another user's log folder");
        assert!(err.contains(&paths.logs_dir().display().to_string()), "{err}");
        chown(&paths.logs_dir(), 0);
        cases.extend(["foreign home", "foreign registry", "foreign log folder"]);
    } else {
        eprintln!("not root: files cannot be given to another user; checking a group-writable registry instead");
        std::fs::set_permissions(paths.registry_file(), std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = refused(&site, "a world-writable registry");
        assert!(err.contains(&paths.registry_file().display().to_string()), "{err}");
        std::fs::set_permissions(paths.registry_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
        cases.push("world-writable registry");
    }
    // A symlinked registry (pointing at a file another user could edit).
    let elsewhere = site.dir.join("elsewhere.json");
    std::fs::rename(paths.registry_file(), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, paths.registry_file()).unwrap();
    let err = refused(&site, "a symlinked registry");
    assert!(err.contains("symbolic link"), "{err}");
    std::fs::remove_file(paths.registry_file()).unwrap();
    std::fs::rename(&elsewhere, paths.registry_file()).unwrap();
    cases.push("symlinked registry");
    // Nothing was started by the refused monitors, and the fixed home starts.
    assert!(site.registry().unwrap().processes.is_empty());
    site.start_daemon();
    report("daemon files: homes refused", &cases.join(", "));
}

/// A process-group leader running `program args` with the given environment (and as `uid` when given).
fn fake(spawned: &mut Spawned, program: &str, args: &[&str], env: &[(&str, String)], uid: Option<u32>) -> u32 {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
    command.env_clear().env("PATH", "/usr/bin:/bin");
    for (key, value) in env {
        command.env(key, value);
    }
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    spawned.add(command.spawn().unwrap())
}

#[test]
fn a_spoofed_adoption_environment_is_not_adopted_and_the_real_service_starts() {
    let Some(site) = site("df-spoof") else { return };
    let secret = "0123456789abcdef0123456789abcdef".to_owned();
    let dir = site.dir.display().to_string();
    // What a monitor killed between spawning and recording its children leaves: entries that ran, no PIDs.
    site.edit(|registry| {
        registry.monitor_running = true;
        registry.extra.insert("ownerSecret".to_owned(), secret.clone().into());
        for id in ["svc", "real"] {
            let mut entry = pm_core::ProcessEntry::new(site.sleeper(id), pm_core::Timestamp::now());
            entry.config.autostart = true;
            entry.state = ProcessState::Running;
            registry.processes.insert(id.to_owned(), entry.into());
        }
    });
    let key =
        |id: &str, owner: String| vec![("PROCESS_MONITOR_OWNER", owner), ("PROCESS_MONITOR_PROCESS_ID", id.to_owned())];
    let with_secret = format!("{dir}#default#{secret}");
    let mut spawned = Spawned::default();
    // The real orphan of `real`: our uid, the registered executable, the key with the secret.
    let real_config = site.sleeper("real");
    let real_args: Vec<&str> = real_config.args.iter().map(String::as_str).collect();
    let real = fake(&mut spawned, "/bin/sh", &real_args, &key("real", with_secret.clone()), None);
    // Spoofs of `svc`: the key without the secret (what anyone can derive), the right key on another executable,
    // and (as root) the full key with the secret from another user.
    let spoof_args = ["-c", "sleep 600 & wait", "pm-spoof"];
    let mut spoofs = vec![
        ("no secret", fake(&mut spawned, "/bin/sh", &spoof_args, &key("svc", format!("{dir}#default")), None)),
        ("other executable", fake(&mut spawned, "/bin/sleep", &["600"], &key("svc", with_secret.clone()), None)),
    ];
    if is_root() {
        spoofs.push((
            "other uid",
            fake(&mut spawned, "/bin/sh", &spoof_args, &key("svc", with_secret.clone()), Some(OTHER_UID)),
        ));
    } else {
        eprintln!("not root: no process of another uid can be made; the secret and executable checks are shown");
    }
    // Let the fakes exec before the monitor looks.
    std::thread::sleep(Duration::from_millis(200));

    site.start_daemon();
    wait_until(Duration::from_secs(20), "svc and real run", || {
        site.statuses().is_some_and(|statuses| {
            ["svc", "real"].iter().all(|id| {
                statuses.get(*id).is_some_and(|status| status.state == ProcessState::Running && status.pid.is_some())
            })
        })
    });
    let statuses = site.statuses().unwrap();
    assert_eq!(statuses["real"].pid, Some(real), "the real orphan was not adopted");
    let svc = statuses["svc"].pid.unwrap();
    for (what, pid) in &spoofs {
        assert_ne!(svc, *pid, "the spoof with {what} was adopted as svc");
        assert!(pm_registry::proc::alive(*pid), "the spoof with {what} was signalled");
    }
    assert_eq!(site.copies("svc"), vec![svc], "the real service is not the one running");
    assert_eq!(site.starts("svc").len(), 1, "the real service started once");
    assert_eq!(site.registry().unwrap().extra["ownerSecret"], secret.as_str(), "a resume keeps the secret");

    // A clean stop and a new boot rotate the secret.
    let daemon = site.daemon_pid().unwrap();
    site.stop_daemon(daemon);
    site.start_daemon();
    let rotated = site.registry().unwrap().extra["ownerSecret"].as_str().unwrap().to_owned();
    assert_ne!(rotated, secret, "a clean boot kept the secret");
    assert_eq!(rotated.len(), 32);
    let mode = std::fs::metadata(site.paths().registry_file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the secret is kept in a private file");
    report(
        "daemon files: spoofed adoption",
        &format!("{} spoofs left alone, the real orphan adopted, the service started once", spoofs.len()),
    );
}
