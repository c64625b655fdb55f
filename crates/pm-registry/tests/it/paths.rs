//! The file layout: names, root resolution, instance-id checks and run folders.

use std::fs;
use std::path::{Path, PathBuf};

use pm_core::Timestamp;
use pm_registry::{Error, Paths};

use crate::support::{mode_of, TempDir};

fn at(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap()
}

#[test]
fn layout_follows_the_guide() {
    let paths = Paths::new(Path::new("/srv/pm"), "default").unwrap();
    assert_eq!(paths.root(), Path::new("/srv/pm"));
    assert_eq!(paths.instance_id(), "default");
    assert_eq!(paths.registry_file(), Path::new("/srv/pm/processes_default.json"));
    assert_eq!(paths.lock_file(), Path::new("/srv/pm/processes_default.lock"));
    assert_eq!(paths.transaction_lock_file(), Path::new("/srv/pm/processes_default.json.lock"));
    assert_eq!(paths.logs_dir(), Path::new("/srv/pm/default_logs"));
    assert_eq!(
        paths.monitor_log_file(at("2026-01-24T10:30:00.999Z")),
        Path::new("/srv/pm/default_logs/_monitor/20260124_103000_default.log")
    );
    assert_eq!(paths.startup_log_file(), Path::new("/srv/pm/default_logs/_monitor/startup.log"));
    // No process id can name the monitor's folder (ids start with a letter or digit).
    assert!(pm_core::validate_process_id(pm_registry::MONITOR_DIR).is_err());
    assert_eq!(paths.process_logs_dir("my-server"), Path::new("/srv/pm/default_logs/my-server"));

    let watcher = paths.for_instance("watcher").unwrap();
    assert_eq!(watcher.root(), paths.root());
    assert_eq!(watcher.registry_file(), Path::new("/srv/pm/processes_watcher.json"));
    assert_eq!(watcher.logs_dir(), Path::new("/srv/pm/watcher_logs"));
}

#[test]
fn relative_roots_become_absolute() {
    let paths = Paths::new(Path::new("some/dir"), "default").unwrap();
    assert_eq!(paths.root(), std::env::current_dir().unwrap().join("some/dir"));
    assert!(paths.registry_file().is_absolute());
}

#[test]
fn resolve_uses_the_directory_or_the_home_folder() {
    let given = Paths::resolve(Some(Path::new("/opt/pm-state")), "watcher").unwrap();
    assert_eq!(given.root(), Path::new("/opt/pm-state"));
    assert_eq!(given.instance_id(), "watcher");

    let default = Paths::resolve(None, "default").unwrap();
    let home = Paths::home_dir();
    let expected = if home.is_absolute() { home } else { std::env::current_dir().unwrap().join(home) };
    assert_eq!(default.root(), expected.join(".tom").join("process_monitor"));
}

#[test]
fn invalid_instance_ids_are_refused() {
    let valid = Paths::new(Path::new("/srv/pm"), "default").unwrap();
    let too_long = "x".repeat(65);
    for id in ["", "../x", "a/b", ".hidden", "-dash", "with space", "a\\b", too_long.as_str()] {
        for res in [Paths::new(Path::new("/srv/pm"), id), Paths::resolve(None, id), valid.for_instance(id)] {
            match res {
                Err(Error::InvalidId { id: refused, .. }) => assert_eq!(refused, id),
                other => panic!("{id:?} accepted or wrong error: {other:?}"),
            }
        }
    }
    assert!(Paths::new(Path::new("/srv/pm"), &"x".repeat(64)).is_ok());
    assert!(Paths::new(Path::new("/srv/pm"), "a.b_c-9").is_ok());
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn run_folders_are_private_and_never_clash() {
    let dir = TempDir::new();
    let paths = Paths::new(dir.path(), "default").unwrap();
    let when = at("2026-01-24T10:30:00.000Z");
    let first = paths.create_run_dir("api", when, 10).unwrap();
    let second = paths.create_run_dir("api", when, 10).unwrap();
    let third = paths.create_run_dir("api", when, 10).unwrap();
    let parent = dir.path().join("default_logs").join("api");
    assert_eq!(first, parent.join("20260124_103000"));
    assert_eq!(second, parent.join("20260124_103000_2"));
    assert_eq!(third, parent.join("20260124_103000_3"));
    assert!(third.is_dir());
    assert_eq!(mode_of(&first), 0o700);
    assert_eq!(mode_of(&parent), 0o700);
}

#[test]
fn run_folders_keep_only_the_newest() {
    let dir = TempDir::new();
    let paths = Paths::new(dir.path(), "default").unwrap();
    let parent = paths.process_logs_dir("api");
    fs::create_dir_all(&parent).unwrap();
    fs::write(parent.join("notes.txt"), "keep me").unwrap();
    fs::create_dir(parent.join("unrelated")).unwrap();
    let mut created: Vec<PathBuf> = Vec::new();
    for second in 0..5 {
        let path = paths.create_run_dir("api", at(&format!("2026-01-24T10:30:0{second}.000Z")), 3).unwrap();
        fs::write(path.join("stdout.log"), "x").unwrap();
        created.push(path);
    }
    assert_eq!(names_in(&parent), ["20260124_103002", "20260124_103003", "20260124_103004", "notes.txt", "unrelated"]);
    // A clashing name sorts after its base, and keep = 0 still keeps the new folder.
    let again = paths.create_run_dir("api", at("2026-01-24T10:30:04.000Z"), 0).unwrap();
    assert_eq!(again, parent.join("20260124_103004_2"));
    assert_eq!(names_in(&parent), ["20260124_103004_2", "notes.txt", "unrelated"]);
}

/// The listing made with a new run folder names exactly what a prune to `keep` would delete (the oldest, never the
/// new one, nothing that is not a run folder), and deleting it leaves what the prune leaves; a folder already gone
/// by then is no error.
#[test]
fn a_new_run_folder_lists_the_runs_a_prune_would_delete() {
    let dir = TempDir::new();
    let paths = Paths::new(dir.path(), "default").unwrap();
    let parent = paths.process_logs_dir("api");
    fs::create_dir_all(&parent).unwrap();
    fs::create_dir(parent.join("unrelated")).unwrap();
    let mut created: Vec<PathBuf> = Vec::new();
    for second in 0..3 {
        let (path, old) = paths.new_run_dir_listed("api", at(&format!("2026-01-24T10:30:0{second}.000Z")), 3).unwrap();
        assert!(old.is_empty(), "run {second} of at most 3: {old:?}");
        created.push(path);
    }
    // Three runs and the new one, two to keep: the two oldest are listed.
    let (fourth, old) = paths.new_run_dir_listed("api", at("2026-01-24T10:30:05.000Z"), 2).unwrap();
    assert_eq!(old, created[..2].to_vec(), "the two oldest, not the new one");
    assert!(old.iter().all(|run| run.is_dir()), "listed, not deleted yet");
    fs::remove_dir_all(&old[0]).unwrap();
    paths.remove_run_dirs(&old).unwrap();
    assert_eq!(names_in(&parent), ["20260124_103002", "20260124_103005", "unrelated"]);
    assert_eq!(fourth, parent.join("20260124_103005"));
    // keep 0 keeps the new folder; an earlier clock continues the newest's numbering.
    let (again, old) = paths.new_run_dir_listed("api", at("2026-01-24T10:29:00.000Z"), 0).unwrap();
    assert_eq!(again, parent.join("20260124_103005_2"));
    paths.remove_run_dirs(&old).unwrap();
    assert_eq!(names_in(&parent), ["20260124_103005_2", "unrelated"]);
    // A file where the process's folder should be is refused, and nothing is created.
    let other = paths.process_logs_dir("web");
    fs::write(&other, "not a folder").unwrap();
    assert!(paths.new_run_dir_listed("web", Timestamp::now(), 3).is_err());
    assert!(other.is_file());
}

/// A restart that passes on the runs its last start answered names its folder and finds the runs to delete as a
/// listing would (same second, clock gone back, `keep` changed), without listing the process's folder: a folder
/// someone else made meanwhile is not counted (its name is skipped when taken); a process folder that is gone is
/// made again and listed.
#[test]
fn known_runs_name_and_prune_run_folders_as_a_listing_would() {
    let dir = TempDir::new();
    let paths = Paths::new(dir.path(), "default").unwrap();
    let parent = paths.process_logs_dir("api");
    let (first, old, known) = paths.new_run_dir_known("api", at("2026-01-24T10:30:00.000Z"), 3, None).unwrap();
    assert!(old.is_empty());
    assert_eq!(first, parent.join("20260124_103000"));
    let (second, old, known) = paths.new_run_dir_known("api", at("2026-01-24T10:30:00.500Z"), 3, Some(known)).unwrap();
    assert_eq!((second, old), (parent.join("20260124_103000_2"), Vec::new()), "the same second: numbered");
    // Someone else's folder with a run's name: not known, not counted; its name is skipped.
    fs::create_dir(parent.join("20260124_103001")).unwrap();
    let (third, old, known) = paths.new_run_dir_known("api", at("2026-01-24T10:30:01.000Z"), 3, Some(known)).unwrap();
    assert_eq!((third, old), (parent.join("20260124_103001_2"), Vec::new()));
    let (fourth, old, known) = paths.new_run_dir_known("api", at("2026-01-24T10:29:00.000Z"), 3, Some(known)).unwrap();
    assert_eq!(fourth, parent.join("20260124_103001_3"), "the clock went back: after the newest known");
    assert_eq!(old, [first], "four known, three to keep");
    paths.remove_run_dirs(&old).unwrap();
    let (fifth, old, known) = paths.new_run_dir_known("api", at("2026-01-24T10:31:00.000Z"), 1, Some(known)).unwrap();
    assert_eq!(
        old,
        [parent.join("20260124_103000_2"), parent.join("20260124_103001_2"), fourth.clone()],
        "keep changed to 1"
    );
    assert_eq!(known.len(), 1);
    paths.remove_run_dirs(&old).unwrap();
    assert_eq!(names_in(&parent), ["20260124_103001", "20260124_103100"]);
    assert_eq!(fifth, parent.join("20260124_103100"));
    // The process's folder deleted meanwhile: made again, and what is in it known from a listing again.
    fs::remove_dir_all(&parent).unwrap();
    let (sixth, old, known) = paths.new_run_dir_known("api", at("2026-01-24T10:32:00.000Z"), 3, Some(known)).unwrap();
    assert_eq!((sixth, old, known.len()), (parent.join("20260124_103200"), Vec::new(), 1));
}

/// An old run folder goes whole, its rotated logs too; a symlink where a run folder was is removed, never followed.
#[test]
fn old_run_folders_go_whole_and_symlinks_are_not_followed() {
    let dir = TempDir::new();
    let paths = Paths::new(dir.path(), "default").unwrap();
    let parent = paths.process_logs_dir("api");
    let plain = paths.new_run_dir("api", at("2026-01-24T10:30:00.000Z")).unwrap();
    let rotated = paths.new_run_dir("api", at("2026-01-24T10:30:01.000Z")).unwrap();
    let empty = paths.new_run_dir("api", at("2026-01-24T10:30:02.000Z")).unwrap();
    for run in [&plain, &rotated] {
        fs::write(run.join("stdout.log"), "out").unwrap();
        fs::write(run.join("stderr.log"), "err").unwrap();
    }
    fs::write(rotated.join("stdout.log.1"), "older").unwrap();
    let target = dir.path().join("elsewhere");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("stdout.log"), "keep me").unwrap();
    let link = parent.join("20260124_103003");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    paths.remove_run_dirs(&[plain, rotated, empty, link.clone(), parent.join("20260124_103009")]).unwrap();
    assert!(names_in(&parent).is_empty(), "left: {:?}", names_in(&parent));
    assert_eq!(fs::read_to_string(target.join("stdout.log")).unwrap(), "keep me", "followed the symlink");
}

#[test]
fn run_folders_refuse_bad_process_ids() {
    let dir = TempDir::new();
    let paths = Paths::new(dir.path(), "default").unwrap();
    for id in ["..", "../escape", "a/b", ""] {
        let res = paths.create_run_dir(id, Timestamp::now(), 10);
        assert!(matches!(res, Err(Error::InvalidId { .. })), "{id:?}: {res:?}");
    }
    assert_eq!(names_in(dir.path()), Vec::<String>::new());
}

/// The store marks its log folder as a top of a hierarchy (`chattr +T`), on a file system that has the flag, so
/// that the file system spreads the process folders made in it.
#[test]
fn the_log_folder_asks_the_file_system_to_spread_process_folders() {
    use rustix::fs::{ioctl_getflags, IFlags};
    let dir = TempDir::new();
    let probe = fs::File::open(dir.path()).unwrap();
    if ioctl_getflags(&probe).is_err() {
        eprintln!("skipped: the file system under {} has no inode flags", dir.path().display());
        return;
    }
    let paths = Paths::new(&dir.path().join("home"), "default").unwrap();
    pm_registry::Store::new(paths.clone()).init().unwrap();
    let logs = fs::File::open(paths.logs_dir()).unwrap();
    assert!(
        ioctl_getflags(&logs).unwrap().contains(IFlags::TOPDIR),
        "no FS_TOPDIR_FL on {}",
        paths.logs_dir().display()
    );
    // Asking again is harmless and says the flag is there.
    assert!(pm_registry::spread_subfolders(&paths.logs_dir()));
}

/// A process folder is made by the first run's call itself (no look first), with the log folder when that is
/// missing too; where something is in its place, a symlink (even to a real folder) or a file is refused and left
/// as it was, and nothing is created through it.
#[test]
fn a_process_folder_is_made_at_its_first_run_and_never_taken_through_a_symlink() {
    let dir = TempDir::new();
    let paths = Paths::new(&dir.path().join("home"), "default").unwrap();
    let (first, old) = paths.new_run_dir_listed("api", at("2026-01-24T10:30:00.000Z"), 3).unwrap();
    assert!(old.is_empty());
    assert_eq!(first, paths.process_logs_dir("api").join("20260124_103000"));
    assert_eq!(mode_of(&paths.logs_dir()), 0o700);
    assert_eq!(mode_of(&paths.process_logs_dir("api")), 0o700);
    assert_eq!(mode_of(&first), 0o700);
    // An existing process folder is listed: a second run of the same second continues its numbering.
    let (second, _) = paths.new_run_dir_listed("api", at("2026-01-24T10:30:00.000Z"), 3).unwrap();
    assert_eq!(second, paths.process_logs_dir("api").join("20260124_103000_2"));
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, paths.process_logs_dir("web")).unwrap();
    let res = paths.new_run_dir_listed("web", Timestamp::now(), 3);
    assert!(matches!(res, Err(Error::Unsafe { .. })), "{res:?}");
    assert_eq!(names_in(&elsewhere), Vec::<String>::new(), "nothing made through the symlink");
    std::os::unix::fs::symlink(dir.path().join("missing"), paths.process_logs_dir("db")).unwrap();
    let res = paths.new_run_dir_listed("db", Timestamp::now(), 3);
    assert!(matches!(res, Err(Error::Unsafe { .. })), "a dangling symlink: {res:?}");
    assert!(!dir.path().join("missing").exists());
}

/// A run's log file is created private and regular, and one that is there already is appended to; a symlink in
/// its place is refused (never written through), and so is a folder.
#[test]
fn log_files_are_created_private_or_appended_and_never_opened_through_a_symlink() {
    use std::io::Write;
    let dir = TempDir::new();
    let log = dir.path().join("stdout.log");
    pm_registry::open_private_append(&log).unwrap().write_all(b"one\n").unwrap();
    assert_eq!(mode_of(&log), 0o600);
    assert!(fs::symlink_metadata(&log).unwrap().is_file());
    pm_registry::open_private_append(&log).unwrap().write_all(b"two\n").unwrap();
    assert_eq!(fs::read_to_string(&log).unwrap(), "one\ntwo\n");
    let target = dir.path().join("target");
    fs::write(&target, "kept").unwrap();
    let link = dir.path().join("stderr.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(pm_registry::open_private_append(&link).is_err());
    assert_eq!(fs::read_to_string(&target).unwrap(), "kept");
    fs::create_dir(dir.path().join("folder.log")).unwrap();
    assert!(pm_registry::open_private_append(&dir.path().join("folder.log")).is_err());
}
