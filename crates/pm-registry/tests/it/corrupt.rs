//! A registry that does not parse: reported with its place, never overwritten, recovered from the backup.

use std::fs;
use std::time::Duration;

use pm_registry::Error;

use crate::support::{add_entry, add_in_transaction, snapshot, store, TempDir};

const GARBAGE: &[u8] = b"{\n  \"version\": 1,\n  \"processes\": oops\n}\n";
const TIMEOUT: Duration = Duration::from_secs(5);

fn assert_corrupt<T: std::fmt::Debug>(res: Result<T, Error>, file: &std::path::Path) {
    match res {
        Err(err @ Error::Corrupt { .. }) => {
            let text = err.to_string();
            assert!(text.contains(&file.display().to_string()), "{text}");
            assert!(text.contains("line 3, column"), "{text}");
            let Error::Corrupt { path, line, column, .. } = err else { unreachable!() };
            assert_eq!(path, file);
            assert_eq!((line, column), (3, 16));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn garbage_is_reported_and_left_on_disk() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    let file = store.paths().registry_file();
    fs::write(&file, GARBAGE).unwrap();

    assert_corrupt(store.load(), &file);
    assert_corrupt(
        store.transaction(TIMEOUT, |registry| {
            add_entry(registry, "a");
            Ok::<_, Error>(())
        }),
        &file,
    );
    assert_corrupt(store.init(), &file);
    assert_eq!(fs::read(&file).unwrap(), GARBAGE);
    let names: Vec<String> = snapshot(dir.path()).into_keys().collect();
    assert_eq!(names, ["default_logs", "processes_default.json", "processes_default.json.lock"]);

    let as_domain = pm_core::Error::from(store.load().unwrap_err());
    let pm_core::Error::Storage(cause) = &as_domain else { panic!("not Storage: {as_domain:?}") };
    assert!(cause.to_string().contains("processes_default.json"), "{cause}");
    assert!(matches!(cause.downcast_ref::<Error>(), Some(Error::Corrupt { .. })), "{cause:?}");
}

#[test]
fn an_empty_registry_is_corrupt_too() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    fs::write(store.paths().registry_file(), "").unwrap();
    assert!(matches!(store.load(), Err(Error::Corrupt { line: 1, column: 0, .. })));
    assert!(matches!(store.init(), Err(Error::Corrupt { .. })));
    assert_eq!(fs::read(store.paths().registry_file()).unwrap(), b"");
}

#[test]
fn recovery_restores_the_backup_and_keeps_the_bad_copy() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    store.init().unwrap();
    add_in_transaction(&store, "a");
    let good = store.load().unwrap();
    add_in_transaction(&store, "b");
    let file = store.paths().registry_file();
    fs::write(&file, GARBAGE).unwrap();

    let (registry, aside) = store.init_recovering().unwrap();
    assert_eq!(registry, good);
    let aside = aside.expect("the corrupt copy's path");
    let aside_name = aside.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(aside_name.starts_with("processes_default.json.corrupt-"), "{aside_name}");
    assert_eq!(aside.parent(), Some(dir.path()));
    assert_eq!(fs::read(&aside).unwrap(), GARBAGE);
    assert_eq!(store.load().unwrap(), good);
    assert!(dir.path().join("processes_default.json.bak").exists());

    // Healthy now: nothing more to do, and transactions work again.
    let (again, none) = store.init_recovering().unwrap();
    assert_eq!((again, none), (good, None));
    add_in_transaction(&store, "c");

    // A second recovery in the same second keeps both bad copies.
    fs::write(&file, GARBAGE).unwrap();
    let (_, second_aside) = store.init_recovering().unwrap();
    let second_aside = second_aside.unwrap();
    assert_ne!(second_aside, aside);
    assert!(aside.exists() && second_aside.exists());
}

#[test]
fn recovery_without_a_backup_changes_nothing() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    let file = store.paths().registry_file();
    fs::create_dir(store.paths().logs_dir()).unwrap();
    fs::write(&file, GARBAGE).unwrap();
    let before = snapshot(dir.path());
    assert_corrupt(store.init_recovering(), &file);
    let after = snapshot(dir.path());
    // Only the (empty, never renamed) transaction lock sidecar may have appeared.
    let mut expected = before.clone();
    expected.insert("processes_default.json.lock".to_owned(), Vec::new());
    assert_eq!(after, expected);
}

#[test]
fn recovery_with_a_corrupt_backup_changes_nothing() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    let file = store.paths().registry_file();
    store.init().unwrap();
    fs::write(&file, GARBAGE).unwrap();
    fs::write(dir.path().join("processes_default.json.bak"), b"{\"half\": ").unwrap();
    let before = snapshot(dir.path());
    assert_corrupt(store.init_recovering(), &file);
    assert_eq!(snapshot(dir.path()), before);
}
