//! The ownership check of a home (issue 21, item 2) and the private, symlink-proof file helpers (issue 12,
//! item 7).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use pm_registry::{check_home, Error, Paths, Store};

use crate::support::TempDir;

/// The uid tests hand foreign files to (nobody).
const OTHER_UID: u32 = 65534;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn chown(path: &Path, uid: u32) {
    // The group is kept.
    let res = std::os::unix::fs::lchown(path, Some(uid), None);
    assert!(res.is_ok(), "lchown {}: {res:?}", path.display());
}

fn refused(paths: &Paths, path: &Path, what: &str) -> String {
    let err = check_home(paths).expect_err(what);
    let Error::Unsafe { path: named, .. } = &err else { panic!("{what}: not Unsafe: {err:?}") };
    assert_eq!(named, path, "{what}: {err}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("fix:"), "{what}: {text}");
    text
}

/// A home with a registry, as a first start leaves it.
fn home(dir: &TempDir) -> Paths {
    let root = dir.path().join("home");
    let paths = Paths::new(&root, "default").unwrap();
    Store::new(paths.clone()).init().unwrap();
    paths
}

#[test]
fn a_private_home_passes_and_a_missing_one_too() {
    let dir = TempDir::new();
    let missing = Paths::new(&dir.path().join("not-yet"), "default").unwrap();
    check_home(&missing).unwrap();
    let paths = home(&dir);
    check_home(&paths).unwrap();
}

#[test]
fn folders_and_files_writable_by_group_or_others_are_refused() {
    let dir = TempDir::new();
    let paths = home(&dir);
    fs::set_permissions(paths.root(), fs::Permissions::from_mode(0o777)).unwrap();
    let text = refused(&paths, paths.root(), "a world-writable home");
    assert!(text.contains("chmod go-w") && text.contains("0777"), "{text}");
    fs::set_permissions(paths.root(), fs::Permissions::from_mode(0o700)).unwrap();

    fs::set_permissions(paths.registry_file(), fs::Permissions::from_mode(0o620)).unwrap();
    refused(&paths, &paths.registry_file(), "a group-writable registry");
    fs::set_permissions(paths.registry_file(), fs::Permissions::from_mode(0o600)).unwrap();

    fs::set_permissions(paths.logs_dir(), fs::Permissions::from_mode(0o770)).unwrap();
    refused(&paths, &paths.logs_dir(), "a group-writable log folder");
    fs::set_permissions(paths.logs_dir(), fs::Permissions::from_mode(0o700)).unwrap();
    check_home(&paths).unwrap();
}

#[test]
fn files_of_another_user_are_refused() {
    let dir = TempDir::new();
    let paths = home(&dir);
    if !is_root() {
        // Without root no file can be given away: the weaker property (a file others may write) is what a non-root
        // run can show.
        eprintln!("not root: checking a group-writable lock file instead of a foreign owner");
        fs::write(paths.lock_file(), "{}").unwrap();
        fs::set_permissions(paths.lock_file(), fs::Permissions::from_mode(0o666)).unwrap();
        refused(&paths, &paths.lock_file(), "a world-writable lock");
        return;
    }
    // Another user's registry renamed into the home.
    chown(&paths.registry_file(), OTHER_UID);
    let text = refused(&paths, &paths.registry_file(), "a foreign registry");
    assert!(text.contains(&format!("uid {OTHER_UID}")) && text.contains("chown 0"), "{text}");
    chown(&paths.registry_file(), 0);
    // A home folder owned by another user.
    chown(paths.root(), OTHER_UID);
    refused(&paths, paths.root(), "a foreign home folder");
    chown(paths.root(), 0);
    // A foreign log folder.
    chown(&paths.logs_dir(), OTHER_UID);
    refused(&paths, &paths.logs_dir(), "a foreign log folder");
    chown(&paths.logs_dir(), 0);
    check_home(&paths).unwrap();
}

#[test]
fn symlinks_among_the_instances_files_are_refused_but_a_symlinked_home_is_followed() {
    let dir = TempDir::new();
    let paths = home(&dir);
    let elsewhere = dir.path().join("elsewhere.json");
    fs::copy(paths.registry_file(), &elsewhere).unwrap();
    fs::remove_file(paths.registry_file()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, paths.registry_file()).unwrap();
    let text = refused(&paths, &paths.registry_file(), "a symlinked registry");
    assert!(text.contains("symbolic link"), "{text}");
    fs::remove_file(paths.registry_file()).unwrap();

    // The operator's own symlink to the home folder is fine.
    let link = dir.path().join("home-link");
    std::os::unix::fs::symlink(paths.root(), &link).unwrap();
    check_home(&Paths::new(&link, "default").unwrap()).unwrap();
}

#[test]
fn private_helpers_never_write_through_a_symlink_and_fix_the_mode() {
    let dir = TempDir::new();
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.path().join("startup.log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    // Appending through a symlink is refused.
    let err = pm_registry::open_private_append(&link).expect_err("appended through a symlink");
    assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
    // Creating afresh replaces the symlink by a private file of our own.
    let file = pm_registry::create_private_file_fresh(&link).unwrap();
    drop(file);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o777, 0o644);
    let meta = fs::symlink_metadata(&link).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o777, 0o600);
    // A FIFO is not a log file: refused instead of blocking.
    let fifo = dir.path().join("fifo.log");
    rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    // Opening a FIFO for writing blocks until a reader comes unless O_NONBLOCK: open it from a reader first.
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || fs::File::open(fifo).map(|_| ())
    });
    assert!(pm_registry::open_private_append(&fifo).is_err(), "a FIFO was taken for a log");
    let _ = reader.join();
    // Folders: 0700 exactly, and a file in the way is an error.
    let nested = dir.path().join("a/b/c");
    pm_registry::create_private_dir_all(&nested).unwrap();
    for path in [dir.path().join("a"), dir.path().join("a/b"), nested] {
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o700, "{}", path.display());
    }
    assert!(pm_registry::create_private_dir_all(&victim.join("x")).is_err());
}

#[test]
fn a_symlinked_process_log_folder_is_not_written_through() {
    let dir = TempDir::new();
    let paths = home(&dir);
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, paths.process_logs_dir("api")).unwrap();
    let err = paths.new_run_dir("api", pm_core::Timestamp::now()).expect_err("a run folder through a symlink");
    assert!(matches!(err, Error::Unsafe { .. }), "{err:?}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0, "something was created through the symlink");
}
