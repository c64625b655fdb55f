//! `Store::transaction_draft` (a local client's `register` and `deregister`): a registry file its own writer wrote
//! (it carries the layout mark) is read without building its entries and written back with the entries the
//! transaction did not touch as their text; the result must be byte for byte what the whole read and write give.
//! Any other file is read and written whole, and a corrupt one is refused and left as it is.

use std::fs;
use std::path::Path;
use std::time::Duration;

use pm_core::{DependencyCondition, ProcessConfig, ProcessEntry, ProcessState, Registry, RegistryDraft, Timestamp};
use pm_registry::{Change, EntryUpdate, Error, Store};
use serde_json::json;

use crate::support::{store, TempDir};

const TIMEOUT: Duration = Duration::from_secs(5);
const MARK: &str = "user.process_monitor.layout";

/// A stopped entry with unknown keys at its top and in a nested section.
fn entry(id: &str) -> ProcessEntry {
    let mut config = ProcessConfig::new(id, &format!("{id} \"quoted\" ü"), "/bin/sleep");
    config.args = vec!["100".to_owned()];
    config.restart_policy =
        Some(serde_json::from_value(json!({"maxAttempts": 3, "futurePolicyKey": [1, {}]})).unwrap());
    // A fixed time: the twin homes' entries must be the same.
    let mut entry = ProcessEntry::new(config, Timestamp::parse("2026-12-07T10:00:00.123Z").unwrap());
    entry.state = ProcessState::Stopped;
    entry.last_exit_code = Some(0);
    entry.extra.insert("zFuture".to_owned(), json!({"nested": [1, 2.5, null], "empty": []}));
    entry.extra.insert("aFuture".to_owned(), json!("kept"));
    entry
}

/// A home whose registry holds `ids` and an unknown top-level key, written by the store (so marked).
fn home(dir: &Path, ids: &[&str]) -> Store {
    let store = store(dir, "default");
    store
        .transaction(TIMEOUT, |registry| {
            registry.extra.insert("futureTop".to_owned(), json!({"k": [true, "v"]}));
            for id in ids {
                registry.processes.insert((*id).to_owned(), entry(id).into());
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    store
}

/// The registry file without its `lastModified` line (the only line two writes of the same change differ in).
fn written(store: &Store) -> String {
    let text = fs::read_to_string(store.paths().registry_file()).unwrap();
    text.lines().filter(|line| !line.starts_with("  \"lastModified\": ")).collect::<Vec<_>>().join("\n")
}

fn marked(path: &Path) -> bool {
    let file = fs::File::open(path).unwrap();
    let mut value = [0u8; 64];
    rustix::fs::fgetxattr(&file, MARK, &mut value[..]).is_ok()
}

/// Gives `path` the layout mark its writer gives, whatever its text (a file that claims to be the writer's).
fn forge_mark(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let file = fs::File::open(path).unwrap();
    let meta = file.metadata().unwrap();
    let value =
        format!("1 {} {}", meta.len(), i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()));
    rustix::fs::fsetxattr(&file, MARK, value.as_bytes(), rustix::fs::XattrFlags::empty()).unwrap();
}

/// Runs `change` as a draft transaction in one home and as a whole transaction in a twin home, and checks that
/// both write the same bytes (and that both files carry the mark after).
fn check_same(ids: &[&str], change: impl Fn(&mut dyn RegistryDraft) -> bool) {
    let (one, two) = (TempDir::new(), TempDir::new());
    let (draft, whole) = (home(one.path(), ids), home(two.path(), ids));
    assert!(marked(&draft.paths().registry_file()), "the store's writer marks the file");
    draft.transaction_draft(TIMEOUT, |registry| Ok::<_, Error>(((), change(registry)))).unwrap();
    whole.transaction_declared(TIMEOUT, |registry: &mut Registry| Ok::<_, Error>(((), change(registry)))).unwrap();
    assert_eq!(written(&draft), written(&whole), "{ids:?}");
    assert!(marked(&draft.paths().registry_file()));
    assert_eq!(draft.load().unwrap(), {
        let mut expected = whole.load().unwrap();
        expected.last_modified = draft.load().unwrap().last_modified;
        expected
    });
}

const IDS: &[&str] = &["b", "d", "f"];

#[test]
fn a_draft_transaction_writes_byte_for_byte_what_the_whole_write_writes() {
    // Added first, in the middle, last, and into an empty registry.
    for new in ["a", "c", "e", "g"] {
        check_same(IDS, |registry| {
            registry.insert(entry(new));
            true
        });
    }
    check_same(&[], |registry| {
        registry.insert(entry("a"));
        true
    });
    // Removed, changed, looked at only, and several at once.
    for id in IDS {
        check_same(IDS, |registry| registry.remove(id));
        check_same(IDS, |registry| {
            let stored = registry.entry_mut(id).unwrap().unwrap();
            stored.pid = Some(4242);
            stored.extra.insert("added".to_owned(), json!(1));
            true
        });
    }
    check_same(IDS, |registry| {
        assert!(registry.entry("d").unwrap().is_some());
        true
    });
    check_same(IDS, |registry| {
        registry.remove("b");
        registry.insert(entry("c"));
        registry.entry_mut("f").unwrap().unwrap().restart_attempts = 2;
        registry.insert(entry("z"));
        true
    });
    // Said unchanged: nothing written.
    let dir = TempDir::new();
    let store = home(dir.path(), IDS);
    let before = fs::read(store.paths().registry_file()).unwrap();
    store
        .transaction_draft(TIMEOUT, |registry| {
            registry.insert(entry("x"));
            Ok::<_, Error>(((), false))
        })
        .unwrap();
    assert_eq!(fs::read(store.paths().registry_file()).unwrap(), before);
}

#[test]
fn a_draft_answers_what_the_whole_registry_answers() {
    let dir = TempDir::new();
    let store = home(dir.path(), IDS);
    store
        .transaction(TIMEOUT, |registry| {
            let dependent = registry.processes.get_mut("f").unwrap();
            dependent.config.depends_on.insert("b".to_owned(), DependencyCondition::Healthy);
            Ok::<_, Error>(())
        })
        .unwrap();
    let whole = store.load().unwrap();
    store
        .transaction_draft(TIMEOUT, |registry| {
            let mut expected = pm_core::graph_of(&whole);
            expected.retain(|_, deps| !deps.is_empty());
            assert_eq!(registry.dependency_graph().unwrap(), expected);
            assert_eq!(expected.len(), 1);
            assert_eq!(registry.top_level().remote_access, whole.remote_access);
            assert_eq!(registry.top_level().extra, whole.extra);
            assert!(registry.contains("d") && !registry.contains("e"));
            assert_eq!(registry.entry("f").unwrap(), whole.processes.get("f").map(|v| &**v));
            Ok::<_, Error>(((), false))
        })
        .unwrap();
}

/// The decision for a file the writer did not lay out (a hand edit, an older version's file): it is read and
/// written whole, as before, so the result is the writer's layout.
#[test]
fn a_file_not_marked_by_the_writer_is_read_and_written_whole() {
    let (one, two) = (TempDir::new(), TempDir::new());
    let (draft, whole) = (home(one.path(), IDS), home(two.path(), IDS));
    for store in [&draft, &whole] {
        let file = store.paths().registry_file();
        let value: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        // As an editor saves it: a new file, compact, the mark gone.
        let tmp = file.with_extension("edit");
        fs::write(&tmp, serde_json::to_string(&value).unwrap()).unwrap();
        fs::rename(&tmp, &file).unwrap();
        assert!(!marked(&file));
    }
    draft
        .transaction_draft(TIMEOUT, |registry| {
            registry.insert(entry("c"));
            Ok::<_, Error>(((), true))
        })
        .unwrap();
    whole
        .transaction_declared(TIMEOUT, |registry: &mut Registry| {
            registry.insert(entry("c"));
            Ok::<_, Error>(((), true))
        })
        .unwrap();
    assert_eq!(written(&draft), written(&whole));
    assert!(written(&draft).contains("\n    \"d\": {\n      \"id\": \"d\""), "laid out anew: {}", written(&draft));
    assert!(marked(&draft.paths().registry_file()), "marked once written whole");

    // Edited in place (same inode, the mark kept but no longer matching the file), keys of `d` swapped (same
    // length): read whole as well, and laid out anew.
    let name = "\"name\": \"d \\\"quoted\\\" ü\",";
    for store in [&draft, &whole] {
        let file = store.paths().registry_file();
        let text = fs::read_to_string(&file).unwrap();
        let swapped =
            text.replacen(&format!("\"id\": \"d\",\n      {name}"), &format!("{name}\n      \"id\": \"d\","), 1);
        assert_ne!(swapped, text);
        std::thread::sleep(Duration::from_millis(10));
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&file)
            .and_then(|mut handle| std::io::Write::write_all(&mut handle, swapped.as_bytes()))
            .unwrap();
    }
    let file = draft.paths().registry_file();
    assert!(marked(&file), "the in-place edit keeps the attribute");
    draft.transaction_draft(TIMEOUT, |registry| Ok::<_, Error>(((), registry.remove("c")))).unwrap();
    whole.transaction_declared(TIMEOUT, |registry: &mut Registry| Ok::<_, Error>(((), registry.remove("c")))).unwrap();
    assert_eq!(written(&draft), written(&whole));
    assert!(written(&draft).contains("\"d\": {\n      \"id\": \"d\""), "laid out anew");
}

/// The mark is what makes the draft trust the text: an entry it does not touch is written back as its text, even
/// one laid out otherwise (here forged: a file that claims to be the writer's).
#[test]
fn untouched_entries_of_a_marked_file_are_written_back_as_their_text() {
    let dir = TempDir::new();
    let store = home(dir.path(), IDS);
    let file = store.paths().registry_file();
    let text = fs::read_to_string(&file).unwrap();
    let odd = text.replacen("\"aFuture\": \"kept\"", "\"aFuture\": \"k\\/ept\"", 1);
    fs::write(&file, &odd).unwrap();
    forge_mark(&file);
    store
        .transaction_draft(TIMEOUT, |registry| {
            registry.insert(entry("c"));
            Ok::<_, Error>(((), true))
        })
        .unwrap();
    let after = fs::read_to_string(&file).unwrap();
    assert!(after.contains("\"aFuture\": \"k\\/ept\""), "{after}");
    assert!(after.contains("\"c\": {"));
}

#[test]
fn a_corrupt_registry_is_refused_and_left_as_it_is_even_with_the_mark() {
    for id in IDS {
        let dir = TempDir::new();
        let store = home(dir.path(), IDS);
        let file = store.paths().registry_file();
        let text = fs::read_to_string(&file).unwrap();
        for (what, bad) in [
            ("unclosed string", text.replacen(&format!("\"id\": \"{id}\","), &format!("\"id\": \"{id},"), 1)),
            ("missing comma", text.replacen(&format!("\"id\": \"{id}\","), &format!("\"id\": \"{id}\""), 1)),
            ("cut short", text[..text.find(&format!("\"id\": \"{id}\"")).unwrap()].to_owned()),
        ] {
            fs::write(&file, &bad).unwrap();
            forge_mark(&file);
            let err = store
                .transaction_draft(TIMEOUT, |registry| {
                    registry.insert(entry("c"));
                    Ok::<_, Error>(((), true))
                })
                .unwrap_err();
            let Error::Corrupt { path, line, .. } = &err else { panic!("{id} {what}: not Corrupt: {err:?}") };
            assert_eq!((path, *line > 0), (&file, true), "{id} {what}: {err}");
            assert_eq!(fs::read_to_string(&file).unwrap(), bad, "{id} {what}: the corrupt file was replaced");
        }
    }
}

#[test]
fn journal_lines_the_file_does_not_hold_are_applied_as_a_whole_read_applies_them() {
    let (one, two) = (TempDir::new(), TempDir::new());
    let stores = [home(one.path(), IDS), home(two.path(), IDS)];
    for store in &stores {
        // The monitor's journal, not folded (as when it was killed after answering).
        let monitor = Store::new_cached(store.paths().clone());
        let mut running = store.load().unwrap().processes["d"].clone();
        running.state = ProcessState::Running;
        running.pid = Some(4242);
        let changes = vec![
            Change::Update(EntryUpdate::of(&running, false, false)),
            Change::Add(Box::new(entry("e"))),
            Change::Remove("f".to_owned()),
        ];
        monitor.journal(TIMEOUT, move |_| Ok::<_, Error>(((), changes))).unwrap();
    }
    let [draft, whole] = stores;
    draft
        .transaction_draft(TIMEOUT, |registry| {
            assert_eq!(registry.entry("d").unwrap().unwrap().pid, Some(4242));
            assert!(registry.contains("e") && !registry.contains("f"));
            registry.insert(entry("a"));
            Ok::<_, Error>(((), true))
        })
        .unwrap();
    whole
        .transaction_declared(TIMEOUT, |registry: &mut Registry| {
            registry.insert(entry("a"));
            Ok::<_, Error>(((), true))
        })
        .unwrap();
    assert_eq!(written(&draft), written(&whole));
    let registry = draft.load().unwrap();
    assert_eq!(registry.journal_seq, 3);
    assert_eq!(registry.processes.keys().collect::<Vec<_>>(), ["a", "b", "d", "e"]);
}
