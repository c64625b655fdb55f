//! A registry transaction that builds only the entries it touches (issue 19: a local client's `register` on a
//! registry of 10,000 entries).
//!
//! A transaction's closure works on a [`RegistryDraft`]: the top-level keys, and the entries one by one. Two
//! kinds implement it:
//!
//! - [`Registry`] itself, read whole (every entry built): what every transaction did before, and what a
//!   transaction still does whenever [`LazyRegistry`] cannot be used.
//! - [`LazyRegistry`]: the registry file's top level read as usual, its entries kept as their text in the file
//!   (the JSON of the whole text checked by a scan that builds nothing, [`crate::scan`]), an entry built only when the closure asks for it,
//!   and written back by [`LazyRegistry::serialise`] as the text it was read from when the closure did not
//!   change it. This is byte for byte what [`Registry::to_json_pretty`] writes only when every entry's text is
//!   what that writer would write for it, and the order of the entries is its order: the caller
//!   (`pm_registry::Store`) uses it only for a file its own writer wrote (see `docs/daemon-files.md`,
//!   "The registry's layout mark"), and [`LazyRegistry::parse`] also refuses, by answering `None`, a text whose
//!   entries are not in key order or not laid out as that writer lays them out.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::scan::Scanner;
use crate::{Error, Graph, ProcessEntry, Registry};

/// What a registry transaction's closure reads and changes: the top-level keys, and entries by id.
pub trait RegistryDraft {
    /// The registry's top-level keys (settings, `instanceId`, `journalSeq`, unknown keys). In a
    /// [`LazyRegistry`] its `processes` is empty: entries are reached through the methods below only.
    fn top_level(&self) -> &Registry;

    /// [`RegistryDraft::top_level`], to change.
    fn top_level_mut(&mut self) -> &mut Registry;

    /// Whether a runnable entry of this id is registered (an entry that cannot run, see
    /// [`crate::UnusableEntry`], does not count: a registration replaces it).
    fn contains(&self, id: &str) -> bool;

    /// The entry of this id, built if it was not yet.
    fn entry(&mut self, id: &str) -> Result<Option<&ProcessEntry>, Error>;

    /// The entry of this id, to change (it is written anew).
    fn entry_mut(&mut self, id: &str) -> Result<Option<&mut ProcessEntry>, Error>;

    /// Adds `entry` under its id, replacing any entry of that id.
    fn insert(&mut self, entry: ProcessEntry);

    /// Removes the entry of this id; answers whether there was one.
    fn remove(&mut self, id: &str) -> bool;

    /// The dependency graph of the entries that have dependencies ([`crate::graph_of`] without the entries that
    /// have none: they are leaves, which a graph need not list, so cycles and dependents come out the same).
    fn dependency_graph(&mut self) -> Result<Graph, Error>;
}

impl RegistryDraft for Registry {
    fn top_level(&self) -> &Registry {
        self
    }

    fn top_level_mut(&mut self) -> &mut Registry {
        self
    }

    fn contains(&self, id: &str) -> bool {
        self.processes.contains_key(id)
    }

    fn entry(&mut self, id: &str) -> Result<Option<&ProcessEntry>, Error> {
        Ok(self.processes.get(id).map(|entry| &**entry))
    }

    fn entry_mut(&mut self, id: &str) -> Result<Option<&mut ProcessEntry>, Error> {
        Ok(self.processes.get_mut(id).map(|entry| &mut **entry))
    }

    fn insert(&mut self, entry: ProcessEntry) {
        self.processes.insert(entry.config.id.clone(), entry.into());
    }

    fn remove(&mut self, id: &str) -> bool {
        self.processes.remove(id).is_some()
    }

    fn dependency_graph(&mut self) -> Result<Graph, Error> {
        let mut graph = crate::graph_of(self);
        graph.retain(|_, deps| !deps.is_empty());
        Ok(graph)
    }
}

/// One entry of a [`LazyRegistry`].
#[derive(Debug)]
struct Slot<'a> {
    key: Cow<'a, str>,
    /// Where the entry's text is in the file (start, end) and which entry of the file it is (0 for the first);
    /// `None` for an entry the closure added.
    raw: Option<(usize, usize, usize)>,
    /// The entry, once built (boxed: few are, and the slots of 10,000 entries stay small).
    built: Option<Box<ProcessEntry>>,
    /// Whether it is written from `built` (the closure added it or asked to change it).
    changed: bool,
}

/// A registry read with its entries left as their text (see the module's documentation).
#[derive(Debug)]
pub struct LazyRegistry<'a> {
    /// The file's text.
    text: &'a str,
    top: Registry,
    /// In key order.
    slots: Vec<Slot<'a>>,
}

/// The top level of a registry file as [`LazyRegistry::parse`] reads it: the keys other than `processes` with
/// their values' text, and the entries of `processes` by key with where their text is.
struct Document<'a> {
    rest: Vec<(&'a str, &'a str)>,
    processes: Vec<(&'a str, (usize, usize))>,
}

impl<'a> Document<'a> {
    /// Scans `text` (see [`crate::scan`]): `None` for what the scan does not accept, an escaped key among them.
    fn scan(text: &'a str) -> Option<Document<'a>> {
        let mut scanner = Scanner::new(text);
        let mut document = Document { rest: Vec::new(), processes: Vec::new() };
        let mut seen_processes = false;
        scanner.eat(b'{')?;
        if !scanner.eat_if(b'}') {
            loop {
                let key = scanner.plain_string()?;
                scanner.eat(b':')?;
                if key == "processes" {
                    if seen_processes {
                        return None;
                    }
                    seen_processes = true;
                    scanner.eat(b'{')?;
                    if !scanner.eat_if(b'}') {
                        loop {
                            let id = scanner.plain_string()?;
                            scanner.eat(b':')?;
                            let span = scanner.value()?;
                            // An entry that is not an object cannot run: read whole, it is set aside.
                            if text.as_bytes()[span.0] != b'{' {
                                return None;
                            }
                            document.processes.push((id, span));
                            if scanner.eat_if(b'}') {
                                break;
                            }
                            scanner.eat(b',')?;
                        }
                    }
                } else {
                    let (start, end) = scanner.value()?;
                    document.rest.push((key, &text[start..end]));
                }
                if scanner.eat_if(b'}') {
                    break;
                }
                scanner.eat(b',')?;
            }
        }
        scanner.end()?;
        Some(document)
    }
}

impl<'a> LazyRegistry<'a> {
    /// Reads the registry file's `text` leaving its entries unbuilt: the top level as [`Registry::from_json`]
    /// reads it (the instance's defaults included), the JSON of every entry checked, and each process id checked.
    /// Answers `None` for a text this does not read (it does not parse, or its top level is refused, or an entry's
    /// key is not a process id, is escaped, or appears out of key order, or the entries are not laid out as
    /// [`Registry::to_json_pretty`] lays them out): the caller reads it whole instead, which finds what is wrong.
    pub fn parse(text: &'a str) -> Option<LazyRegistry<'a>> {
        let document = Document::scan(text)?;
        // The top level without `processes`, read as the whole file is read: a few hundred bytes.
        let mut top_text = String::with_capacity(1024);
        top_text.push('{');
        for (at, (key, value)) in document.rest.iter().enumerate() {
            if at > 0 {
                top_text.push(',');
            }
            top_text.push('"');
            top_text.push_str(key);
            top_text.push_str("\":");
            top_text.push_str(value);
        }
        top_text.push('}');
        let top = Registry::from_json(top_text.as_bytes()).ok()?;
        if !top.processes.is_empty() || !top.unusable.is_empty() {
            return None;
        }
        let mut slots: Vec<Slot<'a>> = Vec::with_capacity(document.processes.len());
        let mut previous_end: Option<usize> = None;
        for (key, (start, end)) in document.processes {
            if !is_process_id(key) {
                return None;
            }
            if slots.last().is_some_and(|last| *last.key >= *key) {
                return None;
            }
            // Between two entries the writer puts exactly `,\n    "key": `.
            if let Some(end) = previous_end {
                let between = text.get(end..start)?;
                let separator = between.strip_prefix(",\n    \"")?.strip_suffix("\": ")?;
                if separator != key {
                    return None;
                }
            }
            previous_end = Some(end);
            let raw = Some((start, end, slots.len()));
            slots.push(Slot { key: Cow::Borrowed(key), raw, built: None, changed: false });
        }
        Some(LazyRegistry { text, top, slots })
    }

    fn find(&self, id: &str) -> Result<usize, usize> {
        self.slots.binary_search_by(|slot| (*slot.key).cmp(id))
    }

    /// Builds the entry of slot `at` if it is not built yet.
    fn build(&mut self, at: usize) -> Result<&mut ProcessEntry, Error> {
        let slot = &mut self.slots[at];
        if slot.built.is_none() {
            let Some((start, end, _)) = slot.raw else { unreachable!("a slot without text is built") };
            slot.built = Some(Box::new(build_entry(&slot.key, &self.text[start..end])?));
        }
        Ok(slot.built.as_mut().expect("built above"))
    }

    /// The text of the registry file holding this registry, as [`Registry::to_json_pretty`] would write it
    /// (without the final line break), in parts: the entries the closure did not change are written as parts of
    /// the text read, so that a registry of 10,000 entries is not copied to be written.
    pub fn serialise(&self) -> Result<Vec<Cow<'a, [u8]>>, serde_json::Error> {
        let top = self.top.to_json_pretty()?;
        const EMPTY: &[u8] = b"\n  \"processes\": {}";
        let Some(at) = memfind(&top, EMPTY) else {
            return Err(serde::ser::Error::custom("internal: the top level has no \"processes\""));
        };
        if self.slots.is_empty() {
            return Ok(vec![Cow::Owned(top)]);
        }
        // Where the closing bracket of `{}` is.
        let close = at + EMPTY.len() - 1;
        let mut parts: Vec<Cow<'a, [u8]>> = Vec::new();
        let mut own = top[..close].to_vec();
        // The text read that the unchanged entries since the last written one make up, separators included:
        // (start, end) in the file, and which entry of the file is its last.
        let mut run: Option<(usize, usize, usize)> = None;
        for (index, slot) in self.slots.iter().enumerate() {
            let unchanged = slot.raw.filter(|_| !slot.changed);
            if let (Some((_, end, ordinal)), Some((run_start, _, last))) = (unchanged, run) {
                // The next entry of the file (no entry between them removed or changed, none added): the text
                // between them is the separator the writer would write.
                if last + 1 == ordinal {
                    run = Some((run_start, end, ordinal));
                    continue;
                }
            }
            if let Some((run_start, run_end, _)) = run.take() {
                parts.push(Cow::Owned(std::mem::take(&mut own)));
                parts.push(Cow::Borrowed(&self.text.as_bytes()[run_start..run_end]));
            }
            own.extend_from_slice(if index == 0 { b"\n    " } else { b",\n    " });
            serde_json::to_writer(&mut own, &*slot.key)?;
            own.extend_from_slice(b": ");
            match unchanged {
                Some((start, end, ordinal)) => run = Some((start, end, ordinal)),
                None => {
                    let Some(entry) = &slot.built else { unreachable!("a changed slot is built") };
                    let mut serializer = serde_json::Serializer::with_formatter(&mut own, crate::wire::Pretty::at(2));
                    entry.serialize(&mut serializer)?;
                }
            }
        }
        if let Some((run_start, run_end, _)) = run.take() {
            parts.push(Cow::Owned(std::mem::take(&mut own)));
            parts.push(Cow::Borrowed(&self.text.as_bytes()[run_start..run_end]));
        }
        own.extend_from_slice(b"\n  }");
        own.extend_from_slice(&top[close + 1..]);
        parts.push(Cow::Owned(own));
        Ok(parts)
    }
}

/// [`crate::validate_process_id`]'s rule (`[A-Za-z0-9][A-Za-z0-9._-]{0,63}`), byte by byte: checked for every
/// key of a registry of 10,000 entries.
fn is_process_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// Whether one of the sorted offsets `named` lies in `start..end`.
fn names_in(named: &[usize], start: usize, end: usize) -> bool {
    let first = named.partition_point(|&at| at < start);
    named.get(first).is_some_and(|&at| at < end)
}

fn memfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// Builds the entry stored under `key` from its text, with the checks a whole read makes (the id equals the key,
/// the configuration is valid).
fn build_entry(key: &str, text: &str) -> Result<ProcessEntry, Error> {
    let unusable = |why: String| Error::InvalidField(format!("processes: the entry {key:?} cannot be read: {why}"));
    let entry: ProcessEntry = serde_json::from_str(text).map_err(|err| unusable(err.to_string()))?;
    if entry.config.id != key {
        return Err(unusable(format!("its id is {:?}", entry.config.id)));
    }
    entry.config.validate().map_err(|err| unusable(err.to_string()))?;
    Ok(entry)
}

impl RegistryDraft for LazyRegistry<'_> {
    fn top_level(&self) -> &Registry {
        &self.top
    }

    fn top_level_mut(&mut self) -> &mut Registry {
        &mut self.top
    }

    fn contains(&self, id: &str) -> bool {
        self.find(id).is_ok()
    }

    fn entry(&mut self, id: &str) -> Result<Option<&ProcessEntry>, Error> {
        match self.find(id) {
            Ok(at) => self.build(at).map(|entry| Some(&*entry)),
            Err(_) => Ok(None),
        }
    }

    fn entry_mut(&mut self, id: &str) -> Result<Option<&mut ProcessEntry>, Error> {
        match self.find(id) {
            Ok(at) => {
                self.build(at)?;
                let slot = &mut self.slots[at];
                slot.changed = true;
                Ok(slot.built.as_deref_mut())
            }
            Err(_) => Ok(None),
        }
    }

    fn insert(&mut self, entry: ProcessEntry) {
        let key = Cow::Owned(entry.config.id.clone());
        let slot = Slot { key, raw: None, built: Some(Box::new(entry)), changed: true };
        match self.find(&slot.key) {
            Ok(at) => self.slots[at] = slot,
            Err(at) => self.slots.insert(at, slot),
        }
    }

    fn remove(&mut self, id: &str) -> bool {
        match self.find(id) {
            Ok(at) => {
                self.slots.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    fn dependency_graph(&mut self) -> Result<Graph, Error> {
        // Where the text names `dependsOn` (in one pass over the whole text): only the entries whose text holds one
        // of these places are built, as an entry whose text does not name it has no dependencies.
        let named: Vec<usize> = memchr::memmem::find_iter(self.text.as_bytes(), b"\"dependsOn\"").collect();
        let mut graph = BTreeMap::new();
        for at in 0..self.slots.len() {
            let slot = &self.slots[at];
            if let (None, Some((start, end, _))) = (&slot.built, slot.raw) {
                if !names_in(&named, start, end) {
                    continue;
                }
            }
            let deps: BTreeSet<String> = self.build(at)?.config.depends_on.keys().cloned().collect();
            if !deps.is_empty() {
                graph.insert(self.slots[at].key.to_string(), deps);
            }
        }
        Ok(graph)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{DependencyCondition, ProcessConfig, Timestamp};

    /// An entry as the monitor leaves it, with unknown keys at the entry and in a nested section.
    fn entry(id: &str) -> ProcessEntry {
        let mut config = ProcessConfig::new(id, &format!("name of {id}"), "/bin/sleep");
        config.args = vec!["100".to_owned(), "é \"quoted\" \\ ünïcode\n".to_owned()];
        let mut entry = ProcessEntry::new(config, Timestamp::parse("2026-12-07T10:00:00.123Z").unwrap());
        entry.last_exit_code = Some(-1);
        entry.extra.insert("zFuture".to_owned(), json!({"nested": [1, 2.5, {"deep": null}], "empty": {}}));
        entry.extra.insert("aFuture".to_owned(), json!([]));
        entry
    }

    /// A registry of `ids`, with unknown top-level keys, as the whole writer writes it.
    fn registry(ids: &[&str]) -> Registry {
        let mut registry = Registry::new_default("default");
        registry.last_modified = Some(Timestamp::parse("2026-12-07T10:00:00.000Z").unwrap());
        registry.extra.insert("futureTop".to_owned(), json!({"k": [true, "v"]}));
        registry.extra.insert("aaa".to_owned(), json!(1));
        for id in ids {
            registry.processes.insert((*id).to_owned(), entry(id).into());
        }
        registry
    }

    fn text(registry: &Registry) -> String {
        String::from_utf8(registry.to_json_pretty().unwrap()).unwrap()
    }

    /// Runs `change` on the registry read whole and on the same text read lazily, and checks that both write the
    /// same bytes.
    fn check_same(ids: &[&str], change: impl Fn(&mut dyn RegistryDraft)) {
        let original = text(&registry(ids));
        let mut whole = Registry::from_json(original.as_bytes()).unwrap();
        change(&mut whole);
        let mut lazy = LazyRegistry::parse(&original).expect("the writer's text reads lazily");
        change(&mut lazy);
        let written: Vec<u8> = lazy.serialise().unwrap().concat();
        let expected = whole.to_json_pretty().unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(expected).unwrap(), "{ids:?}");
    }

    const IDS: &[&str] = &["b", "d", "f", "h"];

    #[test]
    fn untouched_entries_are_written_back_as_the_whole_writer_writes_them() {
        check_same(IDS, |_| {});
        check_same(&[], |_| {});
        check_same(IDS, |draft| draft.top_level_mut().journal_seq = 7);
    }

    #[test]
    fn added_entries_land_where_the_whole_writer_puts_them() {
        for new in ["a", "c", "e", "g", "i"] {
            check_same(IDS, |draft| draft.insert(entry(new)));
        }
        check_same(&[], |draft| draft.insert(entry("a")));
        check_same(IDS, |draft| {
            draft.insert(entry("a"));
            draft.insert(entry("e"));
            draft.insert(entry("z"));
        });
        // A new entry under an existing id replaces it.
        check_same(IDS, |draft| {
            let mut other = entry("d");
            other.config.command = "/bin/true".to_owned();
            draft.insert(other);
        });
    }

    #[test]
    fn removed_and_changed_entries_are_written_as_the_whole_writer_writes_them() {
        for gone in IDS {
            check_same(IDS, |draft| assert!(draft.remove(gone)));
            check_same(IDS, |draft| {
                let stored = draft.entry_mut(gone).unwrap().unwrap();
                stored.restart_attempts = 9;
                stored.extra.insert("added".to_owned(), json!("x"));
            });
        }
        check_same(IDS, |draft| assert!(!draft.remove("nothing")));
        check_same(IDS, |draft| IDS.iter().for_each(|id| assert!(draft.remove(id))));
        check_same(IDS, |draft| {
            draft.remove("b");
            draft.entry_mut("f").unwrap().unwrap().pid = Some(42);
            draft.insert(entry("g"));
            draft.remove("h");
            draft.insert(entry("a"));
        });
        // An entry only looked at is written back as it was read.
        check_same(IDS, |draft| assert_eq!(draft.entry("d").unwrap().unwrap().config.id, "d"));
    }

    #[test]
    fn the_draft_answers_as_the_whole_registry_does() {
        let mut with_deps = registry(IDS);
        let dependent = with_deps.processes.get_mut("f").unwrap();
        dependent.config.depends_on.insert("b".to_owned(), DependencyCondition::Healthy);
        // A value that names `dependsOn` without being one.
        with_deps.processes.get_mut("h").unwrap().config.name = "\"dependsOn\"".to_owned();
        let original = text(&with_deps);
        let mut lazy = LazyRegistry::parse(&original).unwrap();
        let mut whole = Registry::from_json(original.as_bytes()).unwrap();
        assert_eq!(lazy.dependency_graph().unwrap(), whole.dependency_graph().unwrap());
        assert_eq!(lazy.top_level(), &{
            let mut top = whole.clone();
            top.processes.clear();
            top
        });
        for id in ["a", "b", "f", "z"] {
            assert_eq!(lazy.contains(id), whole.contains(id), "{id}");
            assert_eq!(lazy.entry(id).unwrap().cloned(), whole.entry(id).unwrap().cloned(), "{id}");
        }
    }

    #[test]
    fn text_not_laid_out_by_the_writer_is_not_read_lazily() {
        let original = text(&registry(IDS));
        let value: serde_json::Value = serde_json::from_str(&original).unwrap();
        let compact = serde_json::to_string(&value).unwrap();
        let four_spaces = {
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            serde::Serialize::serialize(&value, &mut serde_json::Serializer::with_formatter(&mut out, formatter))
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        let reordered = original.replacen("\"b\": {", "\"zz\": {", 1).replacen("\"id\": \"b\"", "\"id\": \"zz\"", 1);
        let escaped = original.replacen("\"d\": {", "\"\\u0064\": {", 1);
        let spaced = original.replacen(",\n    \"f\": {", " ,\n    \"f\": {", 1);
        for (what, other) in
            [("compact", compact), ("indented by 4", four_spaces), ("out of order", reordered), ("escaped", escaped)]
        {
            assert!(LazyRegistry::parse(&other).is_none(), "{what}");
            assert!(Registry::from_json(other.as_bytes()).is_ok(), "{what}: still a registry");
        }
        assert!(LazyRegistry::parse(&spaced).is_none());
    }

    #[test]
    fn a_corrupt_entry_anywhere_is_not_read_lazily() {
        let original = text(&registry(IDS));
        for id in IDS {
            let start = original.find(&format!("\"id\": \"{id}\"")).unwrap();
            for (what, bad) in [
                ("unclosed string", original.replacen(&format!("\"id\": \"{id}\","), &format!("\"id\": \"{id},"), 1)),
                ("missing comma", original[..start].to_owned() + "\"x\": 1 " + &original[start..]),
                ("truncated", original[..start].to_owned()),
            ] {
                assert!(LazyRegistry::parse(&bad).is_none(), "{id}: {what}");
                assert!(Registry::from_json(bad.as_bytes()).is_err(), "{id}: {what}: refused whole too");
            }
        }
        // Two entries of one id, and a key that is not a process id.
        let twice = original.replacen("\"d\": {", "\"b\": {", 1);
        assert!(LazyRegistry::parse(&twice).is_none());
        let bad_key = original.replacen("\"b\": {", "\"../b\": {", 1);
        assert!(LazyRegistry::parse(&bad_key).is_none());
        // A top level that is refused.
        assert!(
            LazyRegistry::parse(&original.replacen("\"instanceId\": \"default\"", "\"instanceId\": 3", 1)).is_none()
        );
    }

    #[test]
    fn process_ids_are_checked_as_everywhere_else() {
        let long = "a".repeat(64);
        let too_long = "a".repeat(65);
        for id in ["a", "A-1.b_c", "0", &long, "", &too_long, "-a", ".a", "a/b", "a b", "ü", "aü", "a\n"] {
            assert_eq!(is_process_id(id), crate::validate_process_id(id).is_ok(), "{id:?}");
        }
    }

    #[test]
    fn an_entry_that_does_not_build_is_an_error_naming_it() {
        let original = text(&registry(IDS)).replacen("\"id\": \"d\"", "\"id\": \"other\"", 1);
        let mut lazy = LazyRegistry::parse(&original).unwrap();
        let err = lazy.entry("d").unwrap_err().to_string();
        assert!(err.contains("\"d\"") && err.contains("other"), "{err}");
    }
}
