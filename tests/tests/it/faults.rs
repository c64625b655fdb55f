//! Disk and file faults against the real daemon: a registry or lock file that cannot be read, is garbage or
//! was truncated mid-write; a log folder that cannot be created; a full disk (simulated with `RLIMIT_FSIZE`,
//! which needs no privilege). Each must give a clear error naming the file, keep the last good data (never
//! overwrite a registry that does not parse), and leave the daemon supervising what it can.
//!
//! "Unreadable" is mode 000 when the suite runs unprivileged; root reads any mode, so as root the file is
//! replaced by a folder of the same name, which no one can read as a file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pm_client::ProcessMonitorClient;
use pm_core::{ProcessEntry, ProcessState, Timestamp};
use pm_tests::report;
use pm_tests::site::{DaemonOptions, Site, INSTANCE};
use serde_json::json;

fn site(label: &str) -> Option<Site> {
    Site::new(label, Path::new(env!("CARGO_BIN_EXE_pm-test-reaper")))
}

fn wait_until(timeout: Duration, what: &str, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

/// A site with local sleepers `ids`, its daemon running them; answers the daemon's PID.
fn running(site: &Site, ids: &[&str]) -> u32 {
    site.edit(|registry| {
        for id in ids {
            registry.processes.insert(id.to_string(), ProcessEntry::new(site.sleeper(id), Timestamp::now()).into());
        }
    });
    let daemon = site.start_daemon();
    wait_until(Duration::from_secs(20), "the sleepers run and are stored", || {
        let registry = site.registry().unwrap();
        ids.iter().all(|id| {
            let copies = site.copies(id);
            copies.len() == 1 && registry.processes[*id].pid == Some(copies[0])
        })
    });
    daemon
}

/// One more save of the registry (a settings change through the API), so that the backup holds the
/// current PIDs too.
fn save_once_more(site: &Site) {
    let res = site.api("PUT", "/config/executable-blacklist", Some(r#"{"patterns":["/nonexistent/x"]}"#)).unwrap();
    assert_eq!(res.0, 200, "{}", res.1);
    let backup = backup_file(site);
    let current = site.registry().unwrap();
    wait_until(Duration::from_secs(5), "the backup holds the running processes", || {
        let Ok(bytes) = std::fs::read(&backup) else { return false };
        let Ok(saved) = serde_json::from_slice::<pm_core::Registry>(&bytes) else { return false };
        current.processes.iter().all(|(id, entry)| saved.processes.get(id).is_some_and(|s| s.pid == entry.pid))
    });
}

fn backup_file(site: &Site) -> PathBuf {
    site.paths().registry_file().with_extension("json.bak")
}

/// Replaces a file at once (as a complete new file) with `bytes`.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("fault-tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Swaps two paths in one step (`renameat2(RENAME_EXCHANGE)`), so that neither is ever missing.
fn exchange(a: &Path, b: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: two NUL-terminated paths that live across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
}

/// Makes `path` unreadable (see the module documentation) without it ever going missing; answers how to
/// undo that.
fn make_unreadable(path: &Path) -> impl FnOnce() {
    let path = path.to_path_buf();
    let aside = path.with_extension("fault-aside");
    if is_root() {
        std::fs::create_dir(&aside).unwrap();
        exchange(&path, &aside);
    } else {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    move || {
        if is_root() {
            exchange(&path, &aside);
            std::fs::remove_dir(&aside).unwrap();
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

/// Kills a managed process from outside and waits until the daemon has started it again; answers the new PID.
fn crash_and_wait_restart(site: &Site, id: &str) -> u32 {
    let old = site.copies(id);
    assert_eq!(old.len(), 1, "{id}: {old:?}");
    pm_tests::procs::signal(-(old[0] as i32), libc::SIGKILL);
    wait_until(Duration::from_secs(10), "the crashed process is started again", || {
        let now = site.copies(id);
        now.len() == 1 && now[0] != old[0]
    });
    site.copies(id)[0]
}

/// The local client's and the API's registration of a fresh sleeper `id`: (API status and error, local error).
fn try_register(site: &Site, id: &str) -> ((u16, String), String) {
    let body = serde_json::to_string(&site.sleeper(id)).unwrap();
    let (status, text) = site.api("POST", "/processes", Some(&body)).expect("the API answers");
    let error = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let client = ProcessMonitorClient::in_directory(&site.dir, INSTANCE).unwrap();
    let local = match client.register(site.sleeper(&format!("{id}-local"))) {
        Ok(()) => String::new(),
        Err(err) => err.to_string(),
    };
    ((status, error), local)
}

#[test]
fn garbage_registry_while_running_gives_clear_errors_and_is_never_overwritten() {
    let Some(site) = site("fault-garbage") else { return };
    let daemon = running(&site, &["a", "b"]);
    save_once_more(&site);
    let file = site.paths().registry_file();
    let garbage = b"{\"version\": 1, \"processes\": {\"a\": \x00\xff garbage";
    replace(&file, garbage);

    // Clear errors naming the file, from the API and from the local client.
    let ((status, error), local) = try_register(&site, "c");
    assert_eq!(status, 500, "{error}");
    assert!(error.contains("corrupt") && error.contains("processes_default.json"), "API error: {error}");
    assert!(local.contains("corrupt") && local.contains("processes_default.json"), "local error: {local}");
    // The daemon keeps answering and supervising from memory.
    assert!(site.alive());
    let statuses = site.statuses().unwrap();
    assert!(statuses["a"].state == ProcessState::Running && statuses["b"].state == ProcessState::Running);
    let restarted = crash_and_wait_restart(&site, "b");
    // The garbage stays as it was, whatever the writer tried meanwhile.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(std::fs::read(&file).unwrap(), garbage, "a registry that does not parse was overwritten");
    assert!(site.daemon_log().contains("corrupt"), "the daemon's log does not say what is wrong");

    // A clean stop stops the processes; the next start restores the last good copy and keeps the bad one aside.
    site.stop_daemon(daemon);
    assert!(site.copies("a").is_empty() && site.copies("b").is_empty(), "a clean stop left processes running");
    assert!(!pm_registry::proc::alive(restarted));
    let daemon = site.start_daemon();
    let aside: Vec<PathBuf> = std::fs::read_dir(&site.dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("processes_default.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the bad registry is not kept aside: {aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage);
    let registry = site.registry().unwrap();
    assert!(registry.processes.contains_key("a") && registry.processes.contains_key("b"));
    wait_until(Duration::from_secs(20), "both run again, once each", || {
        site.copies("a").len() == 1 && site.copies("b").len() == 1
    });
    assert!(site.daemon_log().contains("restored the last good copy"), "no clear log line about the recovery");
    let _ = daemon;
    report("faults: garbage registry while running", "clear errors; kept; supervised from memory; restored");
}

#[test]
fn a_crash_while_the_registry_is_garbage_duplicates_nothing() {
    let Some(site) = site("fault-garbage-crash") else { return };
    let daemon = running(&site, &["a"]);
    save_once_more(&site);
    replace(&site.paths().registry_file(), b"not json at all");
    // The process crashes and is started again while its new PID cannot be stored...
    let restarted = crash_and_wait_restart(&site, "a");
    // ...then the daemon itself is killed, and the next one restores the last good registry.
    site.kill_daemon(daemon);
    let daemon = site.start_daemon();
    std::thread::sleep(Duration::from_millis(1500));
    let copies = site.copies("a");
    let supervised = site.statuses().unwrap()["a"].pid;
    assert_eq!(
        copies,
        vec![restarted],
        "after recovering from the backup, process a runs {} times (the one started while the registry was \
         garbage is {restarted}); the daemon supervises {supervised:?}",
        copies.len()
    );
    assert_eq!(supervised, Some(restarted));
    let _ = daemon;
    report("faults: crash during a garbage registry", "no duplicate");
}

#[test]
fn a_registry_truncated_mid_write_is_restored_from_the_backup() {
    let Some(site) = site("fault-truncated") else { return };
    let daemon = running(&site, &["a", "b"]);
    save_once_more(&site);
    let pids = (site.copies("a"), site.copies("b"));
    site.kill_daemon(daemon);
    // A writer that died half-way: the registry cut in the middle, and a temporary file of a dead writer.
    let file = site.paths().registry_file();
    let bytes = std::fs::read(&file).unwrap();
    let truncated = bytes[..bytes.len() / 2].to_vec();
    std::fs::write(&file, &truncated).unwrap();
    let dead = {
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let stale_tmp = site.dir.join(format!("processes_default.json.tmp-{dead}"));
    std::fs::write(&stale_tmp, &truncated).unwrap();

    let daemon = site.start_daemon();
    let registry = site.registry().unwrap();
    assert!(registry.processes.contains_key("a") && registry.processes.contains_key("b"));
    assert!(!stale_tmp.exists(), "the temporary file of a dead writer was not swept");
    let aside = std::fs::read_dir(&site.dir)
        .unwrap()
        .flatten()
        .find(|entry| entry.file_name().to_string_lossy().starts_with("processes_default.json.corrupt-"))
        .expect("the truncated registry is not kept aside");
    assert_eq!(std::fs::read(aside.path()).unwrap(), truncated);
    // The processes are adopted, not started again.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!((site.copies("a"), site.copies("b")), pids, "processes were restarted or duplicated");
    let statuses = site.statuses().unwrap();
    assert_eq!(statuses["a"].pid, Some(pids.0[0]));
    assert!(site.daemon_log().contains("did not parse"), "no clear log line about the truncated registry");
    let _ = daemon;
    report("faults: registry truncated mid-write", "restored from the backup, bad copy kept, children adopted");
}

#[test]
fn a_registry_without_a_usable_backup_is_never_overwritten() {
    let Some(site) = site("fault-nobackup") else { return };
    site.edit(|registry| {
        registry.processes.insert("a".to_owned(), ProcessEntry::new(site.sleeper("a"), Timestamp::now()).into());
    });
    let file = site.paths().registry_file();
    let good = std::fs::read(&file).unwrap();
    let garbage = b"{\n  \"version\": 1,\n  \"processes\": nope\n}\n";
    std::fs::write(&file, garbage).unwrap();
    let _ = std::fs::remove_file(backup_file(&site));
    let daemon = site.spawn_daemon(&DaemonOptions::plain());
    let err = site.wait_ready(daemon, Duration::from_secs(20)).expect_err("a daemon ran on a corrupt registry");
    assert!(err.contains("processes_default.json") && err.contains("line 3"), "unclear error: {err}");
    assert_eq!(std::fs::read(&file).unwrap(), garbage, "the corrupt registry was overwritten");
    assert!(site.copies("a").is_empty(), "a process was started from a registry that does not parse");
    // Fixed by hand, it starts.
    std::fs::write(&file, good).unwrap();
    site.start_daemon();
    wait_until(Duration::from_secs(20), "a runs", || site.copies("a").len() == 1);
    report("faults: corrupt registry, no backup", &format!("refused to start: {}", err.trim()));
}

#[test]
fn an_unreadable_registry_at_start_gives_a_clear_error() {
    let Some(site) = site("fault-unreadable-start") else { return };
    site.edit(|registry| {
        registry.processes.insert("a".to_owned(), ProcessEntry::new(site.sleeper("a"), Timestamp::now()).into());
    });
    let file = site.paths().registry_file();
    let before = std::fs::read(&file).unwrap();
    let undo = make_unreadable(&file);
    let daemon = site.spawn_daemon(&DaemonOptions::plain());
    let err = site.wait_ready(daemon, Duration::from_secs(20)).expect_err("a daemon ran without its registry");
    assert!(err.contains("processes_default.json") && err.contains("cannot read"), "unclear error: {err}");
    undo();
    assert_eq!(std::fs::read(&file).unwrap(), before, "the registry was changed");
    assert!(site.copies("a").is_empty());
    site.start_daemon();
    wait_until(Duration::from_secs(20), "a runs", || site.copies("a").len() == 1);
    report("faults: unreadable registry at start", &format!("refused: {}", err.trim()));
}

#[test]
fn an_unreadable_registry_while_running_leaves_supervision_going() {
    let Some(site) = site("fault-unreadable-run") else { return };
    running(&site, &["a"]);
    let file = site.paths().registry_file();
    let undo = make_unreadable(&file);
    let ((status, error), local) = try_register(&site, "c");
    assert_eq!(status, 500, "{error}");
    // The file is now a directory: the transaction fails reading it, or (when its stamp was taken just before
    // the swap and the cached registry was used) renaming the new version over it. Either way the error names
    // the file and why.
    let why = error.contains("cannot read") || error.contains("Is a directory");
    assert!(error.contains("processes_default.json") && why, "API error: {error}");
    assert!(local.contains("processes_default.json"), "local error: {local}");
    assert!(site.alive());
    let restarted = crash_and_wait_restart(&site, "a");
    undo();
    // Readable again: the daemon catches up (the new PID is stored) and takes registrations again.
    wait_until(Duration::from_secs(10), "the restarted PID is stored", || {
        site.registry().is_ok_and(|registry| registry.processes["a"].pid == Some(restarted))
    });
    let ((status, error), local) = try_register(&site, "d");
    assert_eq!((status, local.as_str()), (200, ""), "{error}");
    wait_until(Duration::from_secs(20), "d runs", || site.copies("d").len() == 1);
    report("faults: unreadable registry while running", "clear errors, restart from memory, caught up");
}

#[test]
fn a_registry_deleted_while_running_loses_nothing() {
    let Some(site) = site("fault-deleted") else { return };
    running(&site, &["a"]);
    let a = site.copies("a");
    let settings = pm_core::Settings::of(&site.registry().unwrap());
    let file = site.paths().registry_file();
    std::fs::remove_file(&file).unwrap();
    // The next reconcile (every 100 ms) and writes find no file. A deleted file is no instruction to stop
    // every process and fall back to the default settings (which would move the remote API to [::]:19881):
    // the daemon keeps what it has, and writes it back (pm-registry: "the registry file is never missing
    // once created").
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(site.copies("a"), a, "deleting the registry stopped or restarted a managed process");
    let status = site.api("GET", "/monitor/status", None).expect("the remote API moved away from its port");
    let status: serde_json::Value = serde_json::from_str(&status.1).unwrap();
    assert_eq!(status["remotePort"], json!(site.remote_port), "the remote API moved: {status}");
    wait_until(Duration::from_secs(5), "the registry is written back from memory", || {
        site.registry().is_ok_and(|registry| registry.processes.get("a").is_some_and(|e| e.pid == Some(a[0])))
    });
    assert_eq!(pm_core::Settings::of(&site.registry().unwrap()), settings, "the settings were reset");
    report("faults: registry deleted while running", "nothing stopped, settings kept, file written back");
}

#[test]
fn lock_file_faults() {
    let Some(site) = site("fault-lock") else { return };
    site.edit(|registry| {
        registry.processes.insert("a".to_owned(), ProcessEntry::new(site.sleeper("a"), Timestamp::now()).into());
    });
    let lock = site.paths().lock_file();
    let mut lines = Vec::new();
    // Garbage, empty and truncated lock files of nobody are stale: the daemon takes over at once.
    for bytes in [&b"garbage \xff"[..], b"", b"{\"pid\": 12", b"{\"timestamp\": \"2026-01-24T10:30:00.000Z\"}"] {
        std::fs::write(&lock, bytes).unwrap();
        let started = Instant::now();
        let daemon = site.start_daemon();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "taking over a garbage lock took {took:?}");
        let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&lock).unwrap()).unwrap();
        assert_eq!(info["pid"], json!(daemon));
        site.stop_daemon(daemon);
        lines.push(format!("{:?}: taken over in {took:.0?}", String::from_utf8_lossy(bytes)));
    }
    // A lock held by a live process (in the guide's format: running when the lock was taken, no start time):
    // the daemon waits its 5 s and gives up, naming the holder.
    let holder = std::process::id();
    std::fs::write(&lock, json!({"pid": holder, "timestamp": Timestamp::now()}).to_string()).unwrap();
    let registry_before = std::fs::read(site.paths().registry_file()).unwrap();
    let daemon = site.spawn_daemon(&DaemonOptions::plain());
    let err = site.wait_ready(daemon, Duration::from_secs(20)).expect_err("two holders of one lock");
    assert!(err.contains("processes_default.lock") && err.contains(&holder.to_string()), "unclear error: {err}");
    assert_eq!(std::fs::read(site.paths().registry_file()).unwrap(), registry_before);
    lines.push(format!("live holder: {}", err.trim()));
    // An unreadable lock: a clear error, nothing touched.
    std::fs::write(&lock, json!({"pid": 1, "timestamp": "2026-01-24T10:30:00.000Z"}).to_string()).unwrap();
    std::fs::remove_file(&lock).unwrap();
    std::fs::write(&lock, "{}").unwrap();
    let undo = make_unreadable(&lock);
    let daemon = site.spawn_daemon(&DaemonOptions::plain());
    let err = site.wait_ready(daemon, Duration::from_secs(20)).expect_err("a daemon ran past an unreadable lock");
    assert!(err.contains("processes_default.lock"), "unclear error: {err}");
    assert_eq!(std::fs::read(site.paths().registry_file()).unwrap(), registry_before);
    assert!(site.copies("a").is_empty());
    undo();
    lines.push(format!("unreadable: {}", err.trim()));
    report("faults: lock file", &lines.join("; "));
}

#[test]
fn a_log_folder_that_cannot_be_created() {
    let Some(site) = site("fault-logs") else { return };
    running(&site, &["a"]);
    let a = site.copies("a");
    // The run folders of `b` cannot be created: a file is in the way.
    let blocker = site.paths().process_logs_dir("b");
    std::fs::write(&blocker, "in the way").unwrap();
    let body = serde_json::to_string(&site.sleeper("b")).unwrap();
    let (status, text) = site.api("POST", "/processes", Some(&body)).unwrap();
    assert_eq!(status, 200, "{text}");
    wait_until(Duration::from_secs(10), "b reports why it cannot start", || {
        let Some(status) = site.statuses().and_then(|mut all| all.remove("b")) else { return false };
        status.last_error.as_deref().is_some_and(|error| error.contains("cannot create log folder"))
            && matches!(status.state, ProcessState::Crashed | ProcessState::Retrying)
    });
    let error = site.statuses().unwrap()["b"].last_error.clone().unwrap();
    assert!(error.contains("default_logs/b"), "the error does not name the folder: {error}");
    assert!(site.copies("b").is_empty());
    assert_eq!(site.copies("a"), a, "the other process was disturbed");
    assert!(site.alive());
    // Once the folder can be created, the next retry starts it.
    std::fs::remove_file(&blocker).unwrap();
    let took = wait_until(Duration::from_secs(10), "b runs", || site.copies("b").len() == 1);

    // The instance's own log folder cannot be created: a clear error at start.
    let daemon = site.daemon_pid().unwrap();
    site.stop_daemon(daemon);
    let logs = site.paths().logs_dir();
    std::fs::rename(&logs, site.dir.join("logs-aside")).unwrap();
    std::fs::write(&logs, "in the way").unwrap();
    let daemon = site.spawn_daemon(&DaemonOptions::plain());
    let err = site.wait_ready(daemon, Duration::from_secs(20)).expect_err("a daemon ran without its log folder");
    assert!(err.contains("default_logs"), "unclear error: {err}");
    report(
        "faults: log folder cannot be created",
        &format!("b: {error:?}; started {took:.1?} after the fix; instance: {}", err.trim()),
    );
}

#[test]
fn a_full_disk_keeps_the_last_good_registry() {
    let Some(site) = site("fault-full") else { return };
    let daemon = running(&site, &["a"]);
    let size = std::fs::metadata(site.paths().registry_file()).unwrap().len();
    site.kill_daemon(daemon);
    // The next daemon (and everything it starts) may not write files past the registry's size plus a little:
    // enough for its own saves of the same processes, not for one more registration.
    let limit = size + 300;
    let daemon =
        site.spawn_daemon(&DaemonOptions { file_size_limit: Some(limit), umask: None, extra_args: Vec::new() });
    site.wait_ready(daemon, Duration::from_secs(20)).unwrap();
    let a = site.copies("a");
    assert_eq!(a.len(), 1);
    let ((status, error), local) = try_register(&site, "big-registration-that-does-not-fit");
    // A registration is one journal line, which fits where a rewrite of the registry does not: it is stored and
    // answered; the writer's rewrites fail (and are retried), and the registry file stays the last good version.
    assert_eq!(status, 200, "{error}");
    // The local client's registration goes through the monitor (its socket) as well; it only needs to be answered.
    let _ = local;
    let after = site.registry().expect("the registry and its journal must still read");
    assert!(after.processes.contains_key("a"));
    assert!(after.processes.contains_key("big-registration-that-does-not-fit"), "an acknowledged registration is lost");
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(site.paths().registry_file()).unwrap())
        .expect("the registry file must still parse");
    assert!(file["processes"].get("a").is_some(), "{file:#}");
    assert!(
        file["processes"].get("big-registration-that-does-not-fit").is_none(),
        "a rewrite past the limit: {file:#}"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&site.dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
    assert!(site.alive());
    assert_eq!(site.copies("a"), a, "a was disturbed");
    let restarted = crash_and_wait_restart(&site, "a");
    assert!(pm_registry::proc::alive(restarted));
    report(
        "faults: full disk (RLIMIT_FSIZE)",
        &format!("limit {limit} B: registration stored in the journal, registry file kept"),
    );
}
