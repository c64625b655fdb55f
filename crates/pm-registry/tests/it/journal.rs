//! The registry journal: appends, a torn last line, folding by the next transaction, sequence numbers, and a
//! corrupt line reported with the file and the line.

use std::fs;
use std::io::Write;
use std::time::Duration;

use pm_core::{ProcessConfig, ProcessEntry, ProcessState, Timestamp};
use pm_registry::{Change, EntryUpdate, Error, Paths, Store};
use serde_json::Value;

use crate::support::{add_in_transaction, store, TempDir};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A store over a fresh registry holding the stopped entries `a` and `b`.
fn two_entries(dir: &TempDir, cached: bool) -> Store {
    let plain = store(dir.path(), "default");
    add_in_transaction(&plain, "a");
    add_in_transaction(&plain, "b");
    if cached {
        Store::new_cached(plain.paths().clone())
    } else {
        plain
    }
}

/// `id` running as `pid`, as an update line.
fn running(store: &Store, id: &str, pid: u32) -> Change {
    let mut entry = store.load().unwrap().processes[id].clone();
    entry.state = ProcessState::Running;
    entry.pid = Some(pid);
    entry.last_started_at = Some(Timestamp::now());
    Change::Update(EntryUpdate::of(&entry, false, false))
}

fn append(store: &Store, changes: Vec<Change>) {
    store.journal(TIMEOUT, move |_| Ok::<_, Error>(((), changes))).unwrap();
}

fn journal_lines(paths: &Paths) -> Vec<Value> {
    let text = fs::read_to_string(paths.journal_file()).unwrap_or_default();
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn registry_json(paths: &Paths) -> Value {
    serde_json::from_slice(&fs::read(paths.registry_file()).unwrap()).unwrap()
}

#[test]
fn an_append_is_one_line_that_readers_apply_and_the_registry_file_is_not_rewritten() {
    let dir = TempDir::new();
    for cached in [false, true] {
        let store = two_entries(&dir, cached);
        let before = fs::read(store.paths().registry_file()).unwrap();
        let change = running(&store, "a", 4242);
        append(&store, vec![change]);
        assert_eq!(fs::read(store.paths().registry_file()).unwrap(), before, "the registry was rewritten");
        let lines = journal_lines(store.paths());
        let last = lines.last().unwrap();
        assert_eq!(last["update"]["id"], "a");
        assert_eq!(last["update"]["state"], "running");
        assert_eq!(last["update"]["pid"], 4242);
        // Every reader sees the change: a fresh store, and the same one.
        for reader in [Store::new(store.paths().clone()), store.clone()] {
            let seen = reader.load().unwrap();
            assert_eq!((seen.processes["a"].state, seen.processes["a"].pid), (ProcessState::Running, Some(4242)));
            assert_eq!(seen.processes["b"].state, ProcessState::Stopped);
        }
        // A fold (the monitor's ordered write) empties it again.
        store.transaction_existing_ordered(TIMEOUT, |_| Ok::<_, Error>(())).unwrap();
    }
}

#[test]
fn sequence_numbers_follow_each_other_across_folds_and_the_registry_records_the_last_folded() {
    let dir = TempDir::new();
    let store = two_entries(&dir, true);
    let first = running(&store, "a", 1);
    let second = running(&store, "b", 2);
    append(&store, vec![first, second]);
    let seqs: Vec<u64> = journal_lines(store.paths()).iter().map(|line| line["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2]);
    assert!(registry_json(store.paths()).get("journalSeq").is_none(), "nothing folded yet");

    // A plain transaction that changes nothing does not write.
    store.transaction(TIMEOUT, |_| Ok::<_, Error>(())).unwrap();
    assert!(registry_json(store.paths()).get("journalSeq").is_none(), "written for nothing");
    // The ordered writer's transaction folds the journal even when it changes nothing else: the file holds both
    // changes and their number.
    store.transaction_existing_ordered(TIMEOUT, |_| Ok::<_, Error>(())).unwrap();
    let file = registry_json(store.paths());
    assert_eq!(file["journalSeq"], 2);
    assert_eq!(file["processes"]["a"]["pid"], 1);
    assert_eq!(file["processes"]["b"]["state"], "running");
    assert_eq!(fs::read(store.paths().journal_file()).unwrap(), b"", "the journal starts afresh");

    let third = running(&store, "a", 3);
    append(&store, vec![third]);
    let seqs: Vec<u64> = journal_lines(store.paths()).iter().map(|line| line["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3]);
    assert_eq!(Store::new(store.paths().clone()).load().unwrap().processes["a"].pid, Some(3));
}

#[test]
fn adds_and_removes_are_journaled_and_folded() {
    let dir = TempDir::new();
    let store = two_entries(&dir, true);
    let entry = ProcessEntry::new(ProcessConfig::new("c", "c", "/bin/true"), Timestamp::now());
    append(&store, vec![Change::Add(Box::new(entry)), Change::Remove("b".to_owned())]);
    let seen = Store::new(store.paths().clone()).load().unwrap();
    assert_eq!(seen.processes.keys().collect::<Vec<_>>(), ["a", "c"]);
    // A local client's write (a store that does not cache) holds them as well, and leaves the journal to the
    // monitor (which may be appending to it): its lines are skipped by their numbers.
    Store::new(store.paths().clone())
        .transaction(TIMEOUT, |registry| {
            registry.processes.get_mut("a").unwrap().config.args = vec!["y".to_owned()];
            Ok::<_, Error>(())
        })
        .unwrap();
    let file = registry_json(store.paths());
    assert_eq!(file["processes"].as_object().unwrap().keys().collect::<Vec<_>>(), ["a", "c"]);
    assert_eq!(file["journalSeq"], 2);
    assert_eq!(Store::new(store.paths().clone()).load().unwrap().processes.keys().collect::<Vec<_>>(), ["a", "c"]);
    // The caching store sees that someone else folded, and numbers on from there; its own next write empties the
    // journal.
    let update = running(&store, "c", 9);
    store.append(TIMEOUT, move || Ok::<_, Error>(((), vec![update]))).unwrap();
    let seqs: Vec<u64> = journal_lines(store.paths()).iter().map(|line| line["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(Store::new(store.paths().clone()).load().unwrap().processes["c"].pid, Some(9));
    store.transaction_existing_ordered(TIMEOUT, |_| Ok::<_, Error>(())).unwrap();
    assert_eq!(registry_json(store.paths())["journalSeq"], 3);
    assert_eq!(registry_json(store.paths())["processes"]["c"]["pid"], 9);
    assert!(journal_lines(store.paths()).is_empty());
}

#[test]
fn lines_appended_without_the_flock_during_a_fold_are_kept() {
    let dir = TempDir::new();
    let store = two_entries(&dir, true);
    let first = running(&store, "a", 1);
    store.append(TIMEOUT, move || Ok::<_, Error>(((), vec![first]))).unwrap();
    // A rewrite that is under way (its closure runs) while another thread appends: the append waits for the
    // closure only, and its line outlives the rewrite.
    let (entered, proceed) = (std::sync::mpsc::channel::<()>(), std::sync::mpsc::channel::<()>());
    let writer = {
        let store = store.clone();
        let (entered, proceed) = (entered.0, proceed.1);
        std::thread::spawn(move || {
            store
                .transaction_existing_ordered(TIMEOUT, move |registry| {
                    registry.processes.get_mut("b").unwrap().config.args = vec!["x".to_owned()];
                    entered.send(()).unwrap();
                    proceed.recv().unwrap();
                    Ok::<_, Error>(())
                })
                .unwrap()
        })
    };
    entered.1.recv().unwrap();
    let appender = {
        let store = store.clone();
        let second = running(&store, "b", 2);
        std::thread::spawn(move || store.append(TIMEOUT, move || Ok::<_, Error>(((), vec![second]))).unwrap())
    };
    proceed.0.send(()).unwrap();
    writer.join().unwrap();
    appender.join().unwrap();
    let seen = Store::new(store.paths().clone()).load().unwrap();
    assert_eq!((seen.processes["a"].pid, seen.processes["b"].pid), (Some(1), Some(2)));
    assert_eq!(seen.processes["b"].config.args, ["x"]);
    store.transaction_existing_ordered(TIMEOUT, |_| Ok::<_, Error>(())).unwrap();
    let file = registry_json(store.paths());
    assert_eq!((file["processes"]["b"]["pid"].clone(), file["journalSeq"].clone()), (2.into(), 2.into()));
}

#[test]
fn a_torn_last_line_is_ignored_and_cut_off_by_the_next_append() {
    let dir = TempDir::new();
    let store = two_entries(&dir, false);
    let change = running(&store, "a", 7);
    append(&store, vec![change]);
    let journal = store.paths().journal_file();
    // An append that never finished (the monitor killed while writing): half a line, no newline.
    fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap()
        .write_all(br#"{"seq":2,"update":{"id":"b","st"#)
        .unwrap();
    let seen = store.load().unwrap();
    assert_eq!(seen.processes["a"].pid, Some(7));
    assert_eq!(seen.processes["b"].state, ProcessState::Stopped);
    let change = running(&store, "b", 8);
    append(&store, vec![change]);
    let lines = journal_lines(store.paths());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["seq"], 2);
    assert_eq!(store.load().unwrap().processes["b"].pid, Some(8));
}

#[test]
fn a_corrupt_line_before_the_last_is_an_error_naming_the_file_and_the_line() {
    let dir = TempDir::new();
    let store = two_entries(&dir, false);
    let first = running(&store, "a", 7);
    let second = running(&store, "b", 8);
    append(&store, vec![first, second]);
    let journal = store.paths().journal_file();
    let text = fs::read_to_string(&journal).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(1, "{not json");
    fs::write(&journal, lines.join("\n") + "\n").unwrap();
    let registry_before = fs::read(store.paths().registry_file()).unwrap();
    for res in [store.load().map(|_| ()), store.transaction_existing_ordered(TIMEOUT, |_| Ok::<_, Error>(()))] {
        let err = res.unwrap_err();
        let Error::CorruptJournal { path, line, .. } = &err else { panic!("not CorruptJournal: {err:?}") };
        assert_eq!((path, *line), (&journal, 2));
        let text = err.to_string();
        assert!(text.contains(&journal.display().to_string()) && text.contains("line 2"), "{text}");
    }
    // Nothing was dropped or rewritten.
    assert_eq!(fs::read(store.paths().registry_file()).unwrap(), registry_before);
    assert_eq!(fs::read_to_string(&journal).unwrap(), lines.join("\n") + "\n");
}

#[test]
fn a_line_out_of_sequence_is_an_error() {
    let dir = TempDir::new();
    let store = two_entries(&dir, false);
    let first = running(&store, "a", 7);
    append(&store, vec![first]);
    let journal = store.paths().journal_file();
    let line = fs::read_to_string(&journal).unwrap().replace("\"seq\":1", "\"seq\":5");
    fs::write(&journal, format!("{}{line}", fs::read_to_string(&journal).unwrap())).unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, Error::CorruptJournal { line: 2, .. }), "{err:?}");
}

#[test]
fn a_failing_closure_appends_nothing() {
    let dir = TempDir::new();
    let store = two_entries(&dir, true);
    let res = store.journal(TIMEOUT, |_| Err::<((), Vec<Change>), Error>(Error::Missing { path: "x".into() }));
    assert!(res.is_err());
    assert!(journal_lines(store.paths()).is_empty());
}

/// An update that answers a local client's request (`pendingDone`) clears the entry's `pendingAction` when it
/// still is that request, for every reader (the cached store's and a plain reader's), and leaves a request the
/// client made since; the key is written only when set.
#[test]
fn an_answering_update_clears_only_the_request_it_answers() {
    use pm_core::PendingAction;
    let dir = TempDir::new();
    let store = two_entries(&dir, true);
    store
        .transaction(TIMEOUT, |registry| {
            registry.processes.get_mut("a").unwrap().pending_action = Some(PendingAction::Stop);
            registry.processes.get_mut("b").unwrap().pending_action = Some(PendingAction::Start);
            Ok::<_, Error>(())
        })
        .unwrap();
    let answer = |id: &str| {
        let mut update = EntryUpdate::of(&store.load().unwrap().processes[id], false, false);
        update.pending_done = Some(PendingAction::Stop);
        Change::Update(update)
    };
    let changes = vec![answer("a"), answer("b"), running(&store, "a", 4242)];
    append(&store, changes);
    let lines = journal_lines(store.paths());
    assert_eq!(lines[lines.len() - 3]["update"]["pendingDone"], "stop");
    assert!(lines[lines.len() - 1]["update"].get("pendingDone").is_none(), "{}", lines[lines.len() - 1]);
    for reader in [&store, &Store::new(store.paths().clone())] {
        let registry = reader.load().unwrap();
        assert_eq!(registry.processes["a"].pending_action, None, "the stop is answered");
        assert_eq!(registry.processes["b"].pending_action, Some(PendingAction::Start), "another request stays");
        assert_eq!(registry.processes["a"].pid, Some(4242), "an update without pendingDone clears nothing else");
    }
}
