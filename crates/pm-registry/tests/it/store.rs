//! The registry store: first-start defaults, transactions, backups, change stamps and the JSON round trip.

use std::fs;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use pm_core::Registry;
use pm_registry::{Error, Paths, Store};
use serde_json::Value;

use crate::support::{add_entry, add_in_transaction, mode_of, snapshot, store, ChildGuard, TempDir};

const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn init_creates_the_default_instance() {
    let dir = TempDir::new();
    let root = dir.path().join("home/.tom/process_monitor");
    let store = store(&root, "default");
    let registry = store.init().unwrap();

    assert_eq!(registry.instance_id, "default");
    assert_eq!(registry.version, 1);
    assert!(registry.last_modified.is_some());
    assert!(!registry.standalone_mode);
    assert!(registry.remote_access.start_remote_access);
    assert_eq!(registry.remote_access.remote_port, 19881);
    assert_eq!(registry.aliveness_server.port, 19883);
    assert_eq!(registry.remote_access.trusted_hosts, ["localhost", "127.0.0.1", "::1", "0.0.0.0"]);
    assert!(registry.remote_access.executable_whitelist.is_empty());
    assert!(registry.remote_access.executable_blacklist.is_empty());
    assert!(!registry.partner_discovery.discovery_on_startup);
    assert!(registry.processes.is_empty());

    let file = store.paths().registry_file();
    assert_eq!(mode_of(&file), 0o600);
    assert_eq!(mode_of(&root), 0o700);
    assert!(store.paths().logs_dir().is_dir());
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("{\n  \"version\": 1,\n"), "{text}");
    assert!(text.ends_with("}\n"));
    assert_eq!(store.load().unwrap(), registry);
}

#[test]
fn init_creates_the_watcher_instance() {
    let dir = TempDir::new();
    let registry = store(dir.path(), "watcher").init().unwrap();
    assert_eq!(registry.instance_id, "watcher");
    assert_eq!(registry.remote_access.remote_port, 19882);
    assert_eq!(registry.aliveness_server.port, 19884);
    assert!(registry.remote_access.start_remote_access);
    let partner = &registry.partner_discovery;
    assert_eq!(partner.partner_instance_id.as_deref(), Some("default"));
    assert_eq!(partner.partner_aliveness_port, Some(19883));
    assert_eq!(partner.partner_status_url.as_deref(), Some("http://localhost:19883/status"));
    assert!(partner.discovery_on_startup);
    assert_eq!(mode_of(&dir.path().join("processes_watcher.json")), 0o600);
}

#[test]
fn init_leaves_an_existing_registry_alone() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    store.init().unwrap();
    add_in_transaction(&store, "api");
    let before = snapshot(dir.path());
    let stamp = store.stamp();
    let registry = store.init().unwrap();
    assert!(registry.processes.contains_key("api"));
    assert_eq!(store.stamp(), stamp);
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn load_of_a_missing_registry_names_the_file() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    match store.load() {
        Err(Error::Missing { path }) => assert_eq!(path, dir.path().join("processes_default.json")),
        other => panic!("expected Missing, got {other:?}"),
    }
    assert_eq!(store.stamp(), None);
}

#[test]
fn transactions_save_changes_only() {
    let dir = TempDir::new();
    let root = dir.path().join("state");
    let store = store(&root, "default");

    // A no-op on a missing registry creates nothing but the root and the lock sidecar.
    let seen = store.transaction(TIMEOUT, |registry| Ok::<_, Error>(registry.processes.len())).unwrap();
    assert_eq!(seen, 0);
    assert_eq!(store.stamp(), None);
    assert!(store.paths().transaction_lock_file().exists());

    // A change creates it, from the defaults.
    add_in_transaction(&store, "a");
    let first = store.load().unwrap();
    assert!(first.processes.contains_key("a"));
    assert_eq!(first.remote_access.remote_port, 19881);
    assert!(store.paths().logs_dir().is_dir());
    let stamp = store.stamp().unwrap();

    // A no-op leaves the file as it is.
    store.transaction(TIMEOUT, |_| Ok::<_, Error>(())).unwrap();
    assert_eq!(store.stamp(), Some(stamp));

    // A failing closure saves nothing, and its error comes back as it was.
    let res: Result<(), pm_core::Error> = store.transaction(TIMEOUT, |registry| {
        add_entry(registry, "lost");
        Err(pm_core::Error::NotAllowed("refused".to_owned()))
    });
    assert_eq!(res, Err(pm_core::Error::NotAllowed("refused".to_owned())));
    assert_eq!(store.stamp(), Some(stamp));
    assert!(!store.load().unwrap().processes.contains_key("lost"));

    // A change replaces the file, updates lastModified and keeps the previous version as the backup.
    add_in_transaction(&store, "b");
    let second = store.load().unwrap();
    assert_ne!(store.stamp(), Some(stamp));
    assert!(second.last_modified > first.last_modified);
    assert_eq!(second.processes.len(), 2);
    let backup: Registry = serde_json::from_slice(&fs::read(root.join("processes_default.json.bak")).unwrap()).unwrap();
    assert_eq!(backup, first);
    assert_eq!(mode_of(&store.paths().registry_file()), 0o600);
    assert_eq!(mode_of(&store.paths().transaction_lock_file()), 0o600);
    let leftovers: Vec<String> = snapshot(&root).into_keys().filter(|name| name.contains(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Converts this crate's error for closures that fail with the domain error.
#[test]
fn transactions_work_with_the_domain_error() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    let res: Result<(), pm_core::Error> = store.transaction(TIMEOUT, |registry| {
        if registry.processes.contains_key("api") {
            return Err(pm_core::Error::AlreadyExists("api".to_owned()));
        }
        add_entry(registry, "api");
        Ok(())
    });
    assert_eq!(res, Ok(()));
    let again: Result<(), pm_core::Error> =
        store.transaction(TIMEOUT, |_| Err(pm_core::Error::NotFound("x".to_owned())));
    assert_eq!(again, Err(pm_core::Error::NotFound("x".to_owned())));
}

#[test]
fn a_held_lock_times_out_naming_the_lock_file() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    store.init().unwrap();
    let (inside_tx, inside_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = {
        let store = store.clone();
        thread::spawn(move || {
            store.transaction(TIMEOUT, |_| {
                inside_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok::<_, Error>(())
            })
        })
    };
    inside_rx.recv().unwrap();
    let res = store.transaction(Duration::from_millis(200), |_| Ok::<_, Error>(()));
    release_tx.send(()).unwrap();
    holder.join().unwrap().unwrap();
    match res {
        Err(err @ Error::LockTimeout { .. }) => {
            let text = err.to_string();
            let Error::LockTimeout { path, waited } = err else { unreachable!() };
            assert_eq!(path, store.paths().transaction_lock_file());
            assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(2), "{waited:?}");
            assert!(text.contains("processes_default.json.lock"), "{text}");
            assert!(matches!(pm_core::Error::from(Error::LockTimeout { path, waited }), pm_core::Error::Busy(_)));
        }
        other => panic!("expected LockTimeout, got {other:?}"),
    }
    // Once released, it is free again.
    store.transaction(Duration::from_millis(200), |_| Ok::<_, Error>(())).unwrap();
}

/// The example registry of `wire-formats.md` (shared with pm-core's tests).
const WIRE_EXAMPLE: &str = include_str!("../../../pm-core/testdata/wire-example.json");

/// The text of a registry file: [`WIRE_EXAMPLE`] plus keys this version does not know.
fn wire_example_with_unknown_keys() -> String {
    let mut example: Value = serde_json::from_str(WIRE_EXAMPLE).unwrap();
    example["futureTopLevel"] = serde_json::json!({"nested": [1, 2, 3]});
    example["processes"]["api"]["futureProcessKey"] = serde_json::json!("kept");
    // Inside the nested objects too.
    example["remoteAccess"]["futureRemoteKey"] = serde_json::json!(1);
    example["partnerDiscovery"]["futurePartnerKey"] = serde_json::json!(2);
    example["alivenessServer"]["futureAlivenessKey"] = serde_json::json!(3);
    let api = &mut example["processes"]["api"];
    api["restartPolicy"]["futurePolicyKey"] = serde_json::json!(4);
    api["alivenessCheck"]["futureCheckKey"] = serde_json::json!(5);
    api["alivenessCheck"]["startupCheck"]["futureStartupKey"] = serde_json::json!(6);
    serde_json::to_string_pretty(&example).unwrap() + "\n"
}

/// Asserts that every key of `expected` is in `actual` with an equal value (recursively for objects);
/// `actual` may have more keys.
fn assert_contains(expected: &Value, actual: &Value, at: &str) {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            for (key, value) in expected {
                let Some(found) = actual.get(key) else { panic!("{at}/{key} was dropped") };
                assert_contains(value, found, &format!("{at}/{key}"));
            }
        }
        _ => assert_eq!(expected, actual, "at {at}"),
    }
}

#[test]
fn the_wire_example_round_trips_with_unknown_keys() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    let example = wire_example_with_unknown_keys();
    fs::write(store.paths().registry_file(), &example).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.processes["api"].pid, Some(12345));

    store.transaction(TIMEOUT, |_| Ok::<_, Error>(())).unwrap();
    assert_eq!(fs::read_to_string(store.paths().registry_file()).unwrap(), example, "a no-op rewrote it");
    store
        .transaction(TIMEOUT, |registry| {
            registry.monitor_interval_ms = 6000;
            Ok::<_, Error>(())
        })
        .unwrap();

    let mut expected: Value = serde_json::from_str(&example).unwrap();
    let written: Value = serde_json::from_slice(&fs::read(store.paths().registry_file()).unwrap()).unwrap();
    assert_eq!(written["monitorIntervalMs"], 6000);
    assert_ne!(written["lastModified"], expected["lastModified"]);
    expected["monitorIntervalMs"] = written["monitorIntervalMs"].clone();
    expected["lastModified"] = written["lastModified"].clone();
    assert_contains(&expected, &written, "");
    assert_eq!(written["futureTopLevel"]["nested"], serde_json::json!([1, 2, 3]));
    assert_eq!(written["processes"]["api"]["futureProcessKey"], "kept");
    assert_eq!(written["remoteAccess"]["futureRemoteKey"], 1);
    assert_eq!(written["partnerDiscovery"]["futurePartnerKey"], 2);
    assert_eq!(written["alivenessServer"]["futureAlivenessKey"], 3);
    assert_eq!(written["processes"]["api"]["restartPolicy"]["futurePolicyKey"], 4);
    assert_eq!(written["processes"]["api"]["alivenessCheck"]["futureCheckKey"], 5);
    assert_eq!(written["processes"]["api"]["alivenessCheck"]["startupCheck"]["futureStartupKey"], 6);

    // The file as we first found it is the backup.
    assert_eq!(fs::read_to_string(dir.path().join("processes_default.json.bak")).unwrap(), example);
}

#[test]
fn stores_of_two_instances_share_a_root_but_not_files() {
    let dir = TempDir::new();
    let default = Store::new(Paths::new(dir.path(), "default").unwrap());
    let watcher = Store::new(default.paths().for_instance("watcher").unwrap());
    default.init().unwrap();
    watcher.init().unwrap();
    add_in_transaction(&default, "only-default");
    assert!(watcher.load().unwrap().processes.is_empty());
    assert_eq!(watcher.load().unwrap().instance_id, "watcher");
}

#[test]
fn init_sweeps_temporary_files_of_dead_writers() {
    let dir = TempDir::new();
    let mut exited = Command::new("true").stdout(Stdio::null()).spawn().unwrap();
    let dead = exited.id();
    exited.wait().unwrap();
    let live = ChildGuard::spawn(Command::new("sleep").arg("30").stdout(Stdio::null()));
    let live = live.pid();
    let stale = [
        format!("processes_default.json.tmp-{dead}"),
        format!("processes_default.json.bak.tmp-{dead}"),
        format!("processes_default.lock.tmp-{dead}-7"),
    ];
    let kept = [
        format!("processes_default.json.tmp-{live}"),
        format!("processes_watcher.json.tmp-{dead}"),
        "processes_default.json.tmp-notes".to_owned(),
    ];
    for name in stale.iter().chain(&kept) {
        fs::write(dir.path().join(name), "x").unwrap();
    }
    store(dir.path(), "default").init().unwrap();
    for name in &stale {
        assert!(!dir.path().join(name).exists(), "{name} left");
    }
    for name in &kept {
        assert!(dir.path().join(name).exists(), "{name} removed");
    }
}

/// A caching store (the monitor's) starts from its last registry only while the file is the one it wrote: a
/// local client's save in between is read, and a transaction that failed half-way leaves nothing behind.
#[test]
fn a_cached_store_sees_other_writers_and_forgets_failed_changes() {
    let dir = TempDir::new();
    let paths = Paths::new(dir.path(), "default").unwrap();
    let cached = Store::new_cached(paths.clone());
    let local = Store::new(paths);
    cached.init().unwrap();
    add_in_transaction(&cached, "a");
    add_in_transaction(&local, "b");
    let seen = cached
        .transaction(TIMEOUT, |registry: &mut Registry| {
            add_entry(registry, "c");
            Ok::<_, Error>(registry.processes.keys().cloned().collect::<Vec<_>>())
        })
        .unwrap();
    assert_eq!(seen, ["a", "b", "c"], "the local client's entry was not read");
    let failed = cached.transaction(TIMEOUT, |registry: &mut Registry| {
        add_entry(registry, "half-done");
        Err::<(), _>(Error::Missing { path: "refused".into() })
    });
    assert!(failed.is_err());
    let after = cached.transaction(TIMEOUT, |registry: &mut Registry| Ok::<_, Error>(registry.clone())).unwrap();
    assert!(!after.processes.contains_key("half-done"), "a failed transaction's change survived in the cache");
    assert_eq!(after, local.load().unwrap());
    // A copy of the file laid over it by hand (a rename, as an editor saves) is read as well.
    let mut edited = local.load().unwrap();
    edited.processes.remove("a");
    let tmp = dir.path().join("edited.json");
    fs::write(&tmp, serde_json::to_vec_pretty(&edited).unwrap()).unwrap();
    fs::rename(&tmp, local.paths().registry_file()).unwrap();
    let keys = cached
        .transaction(TIMEOUT, |registry: &mut Registry| {
            Ok::<_, Error>(registry.processes.keys().cloned().collect::<Vec<_>>())
        })
        .unwrap();
    assert_eq!(keys, ["b", "c"]);
}

/// Where a transaction's time goes with 10,000 entries (not a test: run with
/// `cargo test --release -p pm-registry --test it -- --ignored --nocapture transaction_phases`).
#[test]
#[ignore = "a measurement, run by hand"]
fn transaction_phases_with_10000_entries() {
    use std::time::Instant;
    let dir = TempDir::new();
    let paths = Paths::new(dir.path(), "default").unwrap();
    let plain = Store::new(paths.clone());
    plain.init().unwrap();
    plain
        .transaction(TIMEOUT, |registry: &mut Registry| {
            for idx in 0..10_000 {
                add_entry(registry, &format!("p{idx:05}"));
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    let file = plain.paths().registry_file();
    let bytes = fs::read(&file).unwrap();
    let ms = |at: Instant| at.elapsed().as_secs_f64() * 1000.0;
    let at = Instant::now();
    let registry = Registry::from_json(&bytes).unwrap();
    let parse = ms(at);
    let at = Instant::now();
    let copy = registry.clone();
    let clone = ms(at);
    let at = Instant::now();
    assert!(copy == registry);
    let compare = ms(at);
    let at = Instant::now();
    let out = serde_json::to_vec_pretty(&registry).unwrap();
    let serialize = ms(at);
    let at = Instant::now();
    plain
        .transaction(TIMEOUT, |registry: &mut Registry| {
            registry.monitor_running = !registry.monitor_running;
            Ok::<_, Error>(())
        })
        .unwrap();
    let whole = ms(at);
    let cached = Store::new_cached(paths);
    cached
        .transaction(TIMEOUT, |registry: &mut Registry| {
            registry.monitor_running = !registry.monitor_running;
            Ok::<_, Error>(())
        })
        .unwrap();
    let at = Instant::now();
    cached
        .transaction(TIMEOUT, |registry: &mut Registry| {
            registry.monitor_running = !registry.monitor_running;
            Ok::<_, Error>(())
        })
        .unwrap();
    let whole_cached = ms(at);
    eprintln!(
        "10,000 entries, {} KiB: parse {parse:.1} ms, clone {clone:.1} ms, compare {compare:.1} ms, serialize {serialize:.1} ms; \
         transaction {whole:.1} ms, cached {whole_cached:.1} ms",
        out.len() / 1024
    );
}

#[test]
fn a_declared_transaction_saves_exactly_when_its_closure_says_it_changed_something() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    store.init().unwrap();
    let file = store.paths().registry_file();
    let backup = dir.path().join("processes_default.json.bak");
    store
        .transaction_declared(TIMEOUT, |registry: &mut Registry| {
            add_entry(registry, "a");
            Ok::<_, Error>(((), true))
        })
        .unwrap();
    let first = fs::read(&file).unwrap();
    assert!(store.load().unwrap().processes.contains_key("a"));
    // Said unchanged: nothing is written, whatever the closure did.
    store.transaction_declared(TIMEOUT, |_: &mut Registry| Ok::<_, Error>(((), false))).unwrap();
    assert_eq!(fs::read(&file).unwrap(), first);
    // A failing closure stores nothing.
    let err = store.transaction_declared(TIMEOUT, |registry: &mut Registry| {
        add_entry(registry, "b");
        Err::<((), bool), _>(Error::Missing { path: file.clone() })
    });
    assert!(err.is_err());
    assert_eq!(fs::read(&file).unwrap(), first);
    // Said changed: written atomically, the previous version kept as the backup.
    store
        .transaction_declared(TIMEOUT, |registry: &mut Registry| {
            registry.processes.remove("a");
            Ok::<_, Error>(((), true))
        })
        .unwrap();
    assert_eq!(fs::read(&backup).unwrap(), first);
    assert!(store.load().unwrap().processes.is_empty());
}

#[test]
fn check_readable_follows_the_file_as_it_is_now() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    // Missing: readers take the defaults.
    store.check_readable().unwrap();
    store.init().unwrap();
    store.check_readable().unwrap();
    let file = store.paths().registry_file();
    let good = fs::read(&file).unwrap();
    // Replaced by another writer with a file that does not parse: seen at once, named, never written.
    fs::write(&file, b"{ \"instanceId\": 3 }").unwrap();
    let err = store.check_readable().unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("processes_default.json"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"{ \"instanceId\": 3 }");
    fs::write(&file, &good).unwrap();
    store.check_readable().unwrap();
    // A journal whose lines do not follow the file is an error too, also while the file is unchanged.
    let journal = store.paths().journal_file();
    fs::write(&journal, b"{\"seq\":5,\"remove\":\"x\"}\n").unwrap();
    let err = store.check_readable().unwrap_err();
    assert!(matches!(err, Error::CorruptJournal { .. }), "{err:?}");
    assert!(err.to_string().contains("does not follow"), "{err}");
}
