//! The instance lock: one holder per instance id, stale locks taken over, releases that only remove our own.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use pm_core::Timestamp;
use pm_registry::{proc, Error, InstanceLock, Paths};
use serde_json::{json, Value};

use crate::support::{mode_of, spawn_worker, wait_for, worker_dir, ChildGuard, TempDir};

const SHORT: Duration = Duration::from_millis(300);
/// Taking over a stale lock must be quick; this is the most it may take.
const QUICK: Duration = Duration::from_secs(1);

fn paths(dir: &Path) -> Paths {
    Paths::new(dir, "default").unwrap()
}

fn write_lock(paths: &Paths, record: &Value) {
    fs::write(paths.lock_file(), serde_json::to_vec(record).unwrap()).unwrap();
}

fn lock_record(paths: &Paths) -> Value {
    serde_json::from_slice(&fs::read(paths.lock_file()).unwrap()).unwrap()
}

/// Acquires with a generous timeout and checks that it was quick and that the lock is ours.
fn acquire_quickly(paths: &Paths) -> InstanceLock {
    let started = Instant::now();
    let lock = InstanceLock::acquire(paths, Duration::from_secs(5)).unwrap();
    assert!(started.elapsed() < QUICK, "took {:?}", started.elapsed());
    assert_eq!(lock.info().pid, std::process::id());
    assert_eq!(lock_record(paths)["pid"], std::process::id());
    lock
}

fn assert_locked_by(res: Result<InstanceLock, Error>, holder: u32) {
    match res {
        Err(err @ Error::InstanceLocked { .. }) => {
            let text = err.to_string();
            assert!(text.contains(&holder.to_string()) && text.contains("processes_default.lock"), "{text}");
            let Error::InstanceLocked { pid, .. } = err else { unreachable!() };
            assert_eq!(pid, holder);
        }
        other => panic!("expected InstanceLocked by {holder}, got {other:?}"),
    }
}

#[test]
fn the_lock_file_has_the_guide_format() {
    let dir = TempDir::new();
    let paths = paths(&dir.path().join("fresh"));
    let lock = InstanceLock::acquire(&paths, SHORT).unwrap();
    let record = lock_record(&paths);
    assert_eq!(record["pid"], std::process::id());
    let stamp = record["timestamp"].as_str().unwrap();
    assert!(stamp.ends_with('Z') && Timestamp::parse(stamp).is_some(), "{stamp}");
    assert_eq!(record["startTime"].as_u64(), proc::Process::current().start_time);
    assert_eq!(mode_of(&paths.lock_file()), 0o600);
    assert_eq!(InstanceLock::holder(&paths).unwrap().as_ref(), Some(lock.info()));
    let names: Vec<_> = fs::read_dir(paths.root()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|name| !name.to_string_lossy().contains(".tmp")), "{names:?}");
    lock.release().unwrap();
    assert!(!paths.lock_file().exists());
    assert_eq!(InstanceLock::holder(&paths).unwrap(), None);
}

#[test]
fn a_second_acquire_is_refused_while_the_first_holds() {
    let dir = TempDir::new();
    let paths = paths(dir.path());
    let first = InstanceLock::acquire(&paths, SHORT).unwrap();
    let started = Instant::now();
    assert_locked_by(InstanceLock::acquire(&paths, SHORT), std::process::id());
    assert!(started.elapsed() >= SHORT);
    // Another instance id is independent.
    let watcher = InstanceLock::acquire(&paths.for_instance("watcher").unwrap(), SHORT).unwrap();
    drop(first);
    let again = acquire_quickly(&paths);
    drop((again, watcher));
}

#[test]
fn a_waiting_acquire_gets_the_lock_when_it_is_released() {
    let dir = TempDir::new();
    let paths = paths(dir.path());
    let first = InstanceLock::acquire(&paths, SHORT).unwrap();
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(150));
        first.release().unwrap();
    });
    let second = InstanceLock::acquire(&paths, Duration::from_secs(5)).unwrap();
    releaser.join().unwrap();
    assert_eq!(InstanceLock::holder(&paths).unwrap().as_ref(), Some(second.info()));
}

/// Worker: holds the instance lock of its folder until killed.
#[test]
fn worker_holds_instance_lock() {
    let Some(dir) = worker_dir("hold-instance-lock") else {
        return;
    };
    let _lock = InstanceLock::acquire(&paths(&dir), Duration::from_secs(5)).unwrap();
    fs::write(dir.join("ready"), "").unwrap();
    thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_lock_of_another_process_is_refused_then_taken_over_when_it_dies() {
    let dir = TempDir::new();
    let paths = paths(dir.path());
    let mut child = spawn_worker("lock::worker_holds_instance_lock", "hold-instance-lock", dir.path(), &[]);
    assert!(wait_for(Duration::from_secs(20), || dir.path().join("ready").exists()), "worker not ready");

    assert_locked_by(InstanceLock::acquire(&paths, SHORT), child.pid());
    assert_eq!(InstanceLock::holder(&paths).unwrap().map(|info| info.pid), Some(child.pid()));

    child.kill_hard();
    assert_eq!(InstanceLock::holder(&paths).unwrap(), None);
    let lock = acquire_quickly(&paths);
    drop(lock);
}

#[test]
fn a_lock_of_a_dead_pid_is_taken_over() {
    let dir = TempDir::new();
    let paths = paths(dir.path());
    let mut exited = Command::new("true").stdout(Stdio::null()).spawn().unwrap();
    let dead_pid = exited.id();
    exited.wait().unwrap();
    write_lock(&paths, &json!({"pid": dead_pid, "timestamp": "2026-01-24T10:30:00.000Z"}));
    assert_eq!(InstanceLock::holder(&paths).unwrap(), None);
    assert!(paths.lock_file().exists(), "holder() must not change anything");
    acquire_quickly(&paths);
}

#[test]
fn empty_and_garbage_lock_files_are_taken_over() {
    let contents: [&[u8]; 6] = [
        b"",
        b"  \n",
        b"not json at all",
        b"{\"pid\": \"twelve\", \"timestamp\": \"2026-01-24T10:30:00.000Z\"}",
        b"{\"pid\": 1}",
        b"\0\0\0\0",
    ];
    for content in contents {
        let dir = TempDir::new();
        let paths = paths(dir.path());
        fs::write(paths.lock_file(), content).unwrap();
        assert_eq!(InstanceLock::holder(&paths).unwrap(), None);
        assert_eq!(fs::read(paths.lock_file()).unwrap(), content);
        acquire_quickly(&paths).release().unwrap();
    }
}

#[test]
fn our_own_pid_is_stale_only_with_another_start_time() {
    let proc::Process { pid: own_pid, start_time: own_start } = proc::Process::current();
    let own_start = own_start.expect("start time of this process");
    let dir = TempDir::new();
    let paths = paths(dir.path());

    // Same PID, other start time: an earlier process that had our PID.
    let earlier = json!({"pid": own_pid, "timestamp": "2026-01-24T10:30:00.000Z", "startTime": own_start - 1});
    write_lock(&paths, &earlier);
    assert_eq!(InstanceLock::holder(&paths).unwrap(), None);
    acquire_quickly(&paths).release().unwrap();

    // Same PID and start time: really us, so it is held.
    let us = json!({"pid": own_pid, "timestamp": "2026-01-24T10:30:00.000Z", "startTime": own_start});
    write_lock(&paths, &us);
    assert_eq!(InstanceLock::holder(&paths).unwrap().map(|info| info.pid), Some(own_pid));
    assert_locked_by(InstanceLock::acquire(&paths, SHORT), own_pid);

    // No start time recorded (the guide's format): a live PID that was already running when the lock was taken
    // counts as the holder ...
    write_lock(&paths, &json!({"pid": own_pid, "timestamp": Timestamp::now()}));
    assert_locked_by(InstanceLock::acquire(&paths, SHORT), own_pid);
    // ... one that started after the lock was taken only reuses the PID: the lock is stale.
    write_lock(&paths, &json!({"pid": own_pid, "timestamp": "2026-01-24T10:30:00.000Z"}));
    assert_eq!(InstanceLock::holder(&paths).unwrap(), None);
    acquire_quickly(&paths).release().unwrap();
}

#[test]
fn release_leaves_a_lock_that_is_no_longer_ours() {
    let dir = TempDir::new();
    let paths = paths(dir.path());
    let other = ChildGuard::spawn(Command::new("sleep").arg("30").stdout(Stdio::null()));
    let other_start = proc::start_time(other.pid()).expect("start time of the child");
    let foreign = json!({"pid": other.pid(), "timestamp": "2026-01-24T10:30:00.000Z", "startTime": other_start});

    let lock = InstanceLock::acquire(&paths, SHORT).unwrap();
    write_lock(&paths, &foreign);
    lock.release().unwrap();
    assert_eq!(lock_record(&paths), foreign);

    // The same through drop.
    fs::remove_file(paths.lock_file()).unwrap();
    let lock = InstanceLock::acquire(&paths, SHORT).unwrap();
    write_lock(&paths, &foreign);
    drop(lock);
    assert_eq!(lock_record(&paths), foreign);
    assert_eq!(InstanceLock::holder(&paths).unwrap().map(|info| info.pid), Some(other.pid()));
    assert_locked_by(InstanceLock::acquire(&paths, SHORT), other.pid());
}

#[test]
fn drop_releases_the_lock() {
    let dir = TempDir::new();
    let paths = paths(dir.path());
    let lock = InstanceLock::acquire(&paths, SHORT).unwrap();
    assert!(paths.lock_file().exists());
    drop(lock);
    assert!(!paths.lock_file().exists());
}

#[test]
fn racing_contenders_take_over_a_stale_lock_only_once() {
    let dir = TempDir::new();
    let paths = paths(dir.path());
    for _round in 0..3 {
        fs::write(paths.lock_file(), "garbage").unwrap();
        let contenders: Vec<_> = (0..4)
            .map(|_| {
                let paths = paths.clone();
                thread::spawn(move || InstanceLock::acquire(&paths, SHORT))
            })
            .collect();
        let results: Vec<_> = contenders.into_iter().map(|it| it.join().unwrap()).collect();
        let n_won = results.iter().filter(|res| res.is_ok()).count();
        assert_eq!(n_won, 1, "{results:?}");
        for res in &results {
            if let Err(err) = res {
                assert!(matches!(err, Error::InstanceLocked { .. }), "{err:?}");
            }
        }
        drop(results);
        assert!(!paths.lock_file().exists());
    }
}
