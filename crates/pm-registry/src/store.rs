//! The registry file: loading, atomic saving, first-start defaults, corrupt-file recovery and transactions.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pm_core::{LazyRegistry, Registry, RegistryDraft, Timestamp};

use crate::fsutil::{self, with_suffix};
use crate::journal::{self, Change, Record};
use crate::{proc, Error, Paths};

/// How long `init` and `init_recovering` wait for the transaction lock.
const INIT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Cheap identity of the registry file's current version, for change detection by polling.
///
/// Every save replaces the file by a rename, so a new inode (or a new modification time or length) means
/// someone saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Modification time in nanoseconds since the Unix epoch.
    pub modified_ns: i128,
    /// Length in bytes.
    pub len: u64,
    /// Inode number (0 where the platform has none).
    pub inode: u64,
    /// Inode change time in nanoseconds since the Unix epoch (0 where the platform has none): it moves with
    /// every rename and link of the file, so two versions that agree on the rest still tell apart.
    pub changed_ns: i128,
}

/// The last registry a caching store read or wrote (with journal lines applied), with the stamp of the
/// registry file it came from and the `journalSeq` of the file itself.
#[derive(Debug)]
struct Cached {
    stamp: FileStamp,
    file_seq: u64,
    registry: Registry,
    /// Changed in memory ([`Store::change_cached`]) since the file was written: the next ordered transaction
    /// writes it even if its own `f` changes nothing.
    unsaved: bool,
}

/// What a store knows of the journal it appends to (shared by clones).
#[derive(Debug, Default)]
struct JournalState {
    /// The next sequence number to append (0: not known yet).
    next_seq: u64,
    /// The lines this store appended that the registry file may not hold yet, in order.
    unfolded: Vec<Record>,
}

/// A registry as read: the file with the journal's newer lines applied, and the file's own `journalSeq`.
struct Loaded {
    registry: Registry,
    file_seq: u64,
    /// See [`Cached::unsaved`] (false for a registry read from the file).
    unsaved: bool,
}

/// The registry of one instance on disk.
///
/// Writers go through [`Store::transaction`], which holds an exclusive flock on the sidecar
/// [`Paths::transaction_lock_file`] for the read-modify-write only; readers may [`Store::load`] at any time,
/// because every save is an atomic rename of a complete, flushed file.
///
/// A store made with [`Store::new_cached`] (the monitor's) keeps the registry of its last transaction in memory
/// and, while the file's [`FileStamp`] has not changed since, starts the next transaction from it instead of
/// reading and parsing the file again; any change of the stamp (a local client's save, a hand edit) makes it
/// read the file as before. Clones share the cache.
///
/// The registry's journal `processes_{id}.journal` holds changes stored since the file was last rewritten
/// ([`Store::journal`], [`Store::append`]: one appended line each, flushed before they return); every read
/// applies them, every write of the file holds them, and the monitor's ordered writes
/// ([`Store::transaction_existing_ordered`]) fold them and start the journal afresh. Only one store (the
/// monitor's) appends; clones share what it knows of the journal.
#[derive(Debug, Clone)]
pub struct Store {
    paths: Paths,
    cache: Option<Arc<Mutex<Option<Cached>>>>,
    journal: Arc<Mutex<JournalState>>,
    /// The stamp of the registry file version this store (or a clone) last parsed or wrote without error, with
    /// that file's own `journalSeq`, for [`Store::check_readable`].
    readable: Arc<Mutex<Option<(FileStamp, u64)>>>,
}

impl Store {
    /// A store for the files at `paths`; touches nothing on disk.
    pub fn new(paths: Paths) -> Store {
        Store { paths, cache: None, journal: Arc::default(), readable: Arc::default() }
    }

    /// Like [`Store::new`], but transactions start from the registry of the previous one while the file has
    /// not changed on disk since (judged by its [`FileStamp`]), for a long-lived writer such as the monitor.
    pub fn new_cached(paths: Paths) -> Store {
        Store { paths, cache: Some(Arc::default()), journal: Arc::default(), readable: Arc::default() }
    }

    /// The paths of this store.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// First-start setup: creates the root folder (0700) and the log folder, and the default registry
    /// ([`Registry::new_default`]) if there is none. Returns the registry.
    ///
    /// A registry that does not parse gives [`Error::Corrupt`] and is left as it is.
    pub fn init(&self) -> Result<Registry, Error> {
        self.prepare()?;
        self.load()
    }

    /// Like [`Store::init`], but a corrupt registry is replaced by the last good version kept in
    /// `processes_{id}.json.bak`; the bad file is kept as `processes_{id}.json.corrupt-{YYYYMMDD_HHMMSS}`, whose
    /// path is returned. Without a usable backup this is [`Error::Corrupt`] naming the registry file, and nothing
    /// on disk is changed.
    pub fn init_recovering(&self) -> Result<(Registry, Option<PathBuf>), Error> {
        self.prepare()?;
        match self.load() {
            Ok(registry) => return Ok((registry, None)),
            Err(Error::Corrupt { .. }) => {}
            Err(err) => return Err(err),
        }
        let _flock = self.lock(INIT_LOCK_TIMEOUT)?;
        let file = self.paths.registry_file();
        let bad_bytes = fsutil::read_optional(&file)?.ok_or_else(|| Error::Missing { path: file.clone() })?;
        let corrupt = match parse(&file, &bad_bytes) {
            // Someone else recovered it while we waited for the lock.
            Ok(registry) => return Ok((registry, None)),
            Err(err) => err,
        };
        let backup = self.backup_file();
        let Some(good_bytes) = fsutil::read_optional(&backup)? else {
            return Err(corrupt);
        };
        let Ok(registry) = parse(&backup, &good_bytes) else {
            return Err(corrupt);
        };
        let aside = self.set_aside(&file)?;
        let tmp = self.temp_file();
        if let Err(err) = fsutil::write_synced(&tmp, &good_bytes) {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        self.replace_with(&tmp)?;
        self.written(registry.journal_seq);
        tracing::warn!(
            registry = %file.display(),
            corrupt_copy = %aside.display(),
            "registry did not parse ({corrupt}); restored the last good version from {}",
            backup.display()
        );
        Ok((registry, Some(aside)))
    }

    /// Reads and parses the registry without locking, with the changes of the journal
    /// (`processes_{id}.journal`) that the file does not hold yet applied. A missing file is [`Error::Missing`];
    /// a corrupt journal line is [`Error::CorruptJournal`].
    pub fn load(&self) -> Result<Registry, Error> {
        self.load_with_journal().map(|loaded| loaded.registry)
    }

    /// Whether [`Store::load`] would succeed now, cheaply when it can: while the registry file has the stamp of
    /// the version this store last read or wrote without error, only the journal is read; otherwise the file is
    /// read and parsed. A missing registry counts as readable (readers take the defaults); the error is the one
    /// [`Store::load`] would give. For the monitor's status answer (`registryError`).
    pub fn check_readable(&self) -> Result<(), Error> {
        let known = *self.readable_stamp();
        if let Some((_, file_seq)) = known.filter(|(stamp, _)| Some(*stamp) == self.stamp()) {
            let journal_file = self.paths.journal_file();
            let records = journal::read(&journal_file)?;
            return journal::check_follows(&journal_file, file_seq, &records).map(drop);
        }
        match self.load_with_journal() {
            Ok(_) | Err(Error::Missing { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn readable_stamp(&self) -> std::sync::MutexGuard<'_, Option<(FileStamp, u64)>> {
        self.readable.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`Store::load`], with the file's own `journalSeq`.
    ///
    /// The journal is read before the registry: a fold that runs in between writes a registry that holds every
    /// line read (they are skipped by their numbers), and replaces the journal by a rename, so the lines read
    /// are a whole file's.
    fn load_with_journal(&self) -> Result<Loaded, Error> {
        let journal_file = self.paths.journal_file();
        let records = journal::read(&journal_file)?;
        let file = self.paths.registry_file();
        // Taken before the read: a save that slips in between leaves an older stamp, which only costs a parse.
        let stamp = self.stamp();
        let mut registry = match fsutil::read_optional(&file)? {
            Some(bytes) => parse(&file, &bytes)?,
            None => return Err(Error::Missing { path: file }),
        };
        *self.readable_stamp() = stamp.map(|stamp| (stamp, registry.journal_seq));
        let file_seq = registry.journal_seq;
        journal::apply_newer(&journal_file, &mut registry, &records)?;
        Ok(Loaded { registry, file_seq, unsaved: false })
    }

    /// An exclusive read-modify-write of the registry.
    ///
    /// Takes the flock of [`Paths::transaction_lock_file`] (polling until `timeout`, then
    /// [`Error::LockTimeout`]), loads the registry (a missing one starts as [`Registry::new_default`]), and runs
    /// `f` on it. If `f` succeeds and changed the registry, it is saved atomically with `last_modified` set to
    /// now. If `f` fails nothing is saved. A corrupt registry is [`Error::Corrupt`] and is never overwritten.
    /// The flock is released before this returns.
    ///
    /// Keep `f` short: it runs while every other writer waits.
    pub fn transaction<T, E: From<Error>>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Registry) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction_inner(timeout, true, false, false, |registry| f(registry).map(|res| (res, None)))
    }

    /// Like [`Store::transaction`], but a missing registry is an error ([`Error::Missing`]) instead of a first
    /// start: for a running monitor, whose registry vanishing must not read as "no processes".
    pub fn transaction_existing<T, E: From<Error>>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Registry) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction_inner(timeout, false, false, false, |registry| f(registry).map(|res| (res, None)))
    }

    /// Like [`Store::transaction_existing`], but `f` runs with this store's [`Store::append`]s held: for a
    /// writer that stores what it reads from elsewhere (the monitor's memory), so that every journal line
    /// appended before `f` is older than what `f` reads, and every line appended after it newer.
    pub fn transaction_existing_ordered<T, E: From<Error>>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Registry) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction_inner(timeout, false, true, false, |registry| f(registry).map(|res| (res, None)))
    }

    /// Like [`Store::transaction`], but `f` answers whether it changed the registry along with its value, so no
    /// copy of the registry is taken to find out (a copy of 10,000 entries costs about as much as their parse):
    /// for a writer that knows, such as a local client adding or removing one entry. Saved when `f` says it
    /// changed something.
    pub fn transaction_declared<T, E: From<Error>>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Registry) -> Result<(T, bool), E>,
    ) -> Result<T, E> {
        self.transaction_inner(timeout, true, false, true, |registry| {
            f(registry).map(|(res, changed)| (res, Some(changed)))
        })
    }

    /// Like [`Store::transaction_declared`], but `f` works on a [`RegistryDraft`]: a store that does not cache
    /// (a local client's) reads a registry file that its own writer wrote (the file carries a matching layout mark,
    /// see `docs/daemon-files.md`) without building its entries ([`LazyRegistry`]): `f` gets the entries it asks
    /// for built, and the save writes the others back as the text they were read from, which is what the whole
    /// write would write for them. The JSON of the whole file is still checked, and the journal's lines that the
    /// file does not hold yet are applied as they are by every read. Any other file (unmarked: a hand edit, an
    /// older version's, a file system without extended attributes; or one [`LazyRegistry::parse`] does not read:
    /// a corrupt one) goes through [`Store::transaction_declared`], read and written whole, and a corrupt file is
    /// [`Error::Corrupt`] as ever and never overwritten.
    pub fn transaction_draft<T, E: From<Error>>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut dyn RegistryDraft) -> Result<(T, bool), E>,
    ) -> Result<T, E> {
        if self.cache.is_none() {
            let flock = self.lock(timeout)?;
            let journal_file = self.paths.journal_file();
            let records = journal::read(&journal_file)?;
            let file = self.paths.registry_file();
            // Taken before the read, as `load_with_journal` does.
            let stamp = self.stamp();
            if let Some((bytes, true)) = fsutil::read_marked(&file)? {
                let lazy = std::str::from_utf8(&bytes).ok().and_then(LazyRegistry::parse);
                if let Some(mut lazy) = lazy.filter(|_| self.journal_state().unfolded.is_empty()) {
                    let file_seq = lazy.top_level().journal_seq;
                    if journal::check_follows(&journal_file, file_seq, &records)? && !apply_lazily(&mut lazy, &records)
                    {
                        // An entry the journal changes does not read: the whole read says why.
                        drop(flock);
                        return self.transaction_declared(timeout, |registry| f(registry));
                    }
                    *self.readable_stamp() = stamp.map(|stamp| (stamp, file_seq));
                    let (res, changed) = f(&mut lazy)?;
                    if changed {
                        let previous = lazy.top_level().last_modified;
                        lazy.top_level_mut().last_modified = Some(next_modified(previous));
                        let parts = lazy
                            .serialise()
                            .map_err(|err| Error::Serialize { path: file.clone(), message: err.to_string() })?;
                        let mut parts: Vec<&[u8]> = parts.iter().map(|part| &**part).collect();
                        parts.push(b"\n");
                        let journal_seq = lazy.top_level().journal_seq;
                        self.save_parts_locked(&parts, true, true, journal_seq)?;
                        self.drop_folded(journal_seq)?;
                    }
                    drop(flock);
                    return Ok(res);
                }
            }
            drop(flock);
        }
        self.transaction_declared(timeout, |registry| f(registry))
    }

    fn transaction_inner<T, E: From<Error>>(
        &self,
        timeout: Duration,
        create: bool,
        ordered: bool,
        declared: bool,
        f: impl FnOnce(&mut Registry) -> Result<(T, Option<bool>), E>,
    ) -> Result<T, E> {
        let flock = self.lock(timeout)?;
        let (stamp, Loaded { mut registry, file_seq, unsaved }, existed) = match self.view() {
            Ok((stamp, loaded)) => (stamp, loaded, true),
            Err(err @ Error::Missing { .. }) if !create => return Err(err.into()),
            Err(Error::Missing { .. }) => {
                fsutil::create_dir_all_private(&self.paths.logs_dir())?;
                let registry = Registry::new_default(self.paths.instance_id());
                (None, Loaded { registry, file_seq: 0, unsaved: false }, false)
            }
            Err(err) => return Err(err.into()),
        };
        let previous = registry.last_modified;
        let (before, (res, said)) = if ordered {
            // `f` runs with the appends held; the copy is taken first, so that appends wait for `f` only. It is
            // not taken when journal lines are to be folded: the ordered writer writes for them anyway.
            let mut journal = self.journal_state();
            let folds = registry.journal_seq > file_seq
                || journal.unfolded.iter().any(|record| record.seq > registry.journal_seq);
            let before = (!folds).then(|| registry.clone());
            apply_unfolded(&mut journal, &mut registry);
            // A failing `f` may have changed the registry half-way: nothing is saved, and the cache stays empty.
            let res = f(&mut registry)?;
            drop(journal);
            (before, res)
        } else {
            // Lines appended while `f` runs are newer than the registry it writes, and stay in the journal.
            apply_unfolded(&mut self.journal_state(), &mut registry);
            // Without `f`'s word, the copy tells whether it changed anything.
            let before = (!declared).then(|| registry.clone());
            (before, f(&mut registry)?)
        };
        // Journal lines the file does not hold yet are written into it by any write; the ordered writer (the
        // monitor's background writer) writes for them alone as well.
        let unfolded = registry.journal_seq > file_seq;
        let changed = said.unwrap_or_else(|| before.as_ref().is_none_or(|before| registry != *before));
        if changed || (ordered && (unfolded || unsaved)) {
            registry.last_modified = Some(next_modified(previous));
            self.save_locked(&registry, existed)?;
            // The registry on disk (its folder flushed) holds every journal line up to its `journalSeq` now.
            self.drop_folded(registry.journal_seq)?;
            // Still under the flock: the file is the one just written.
            let file_seq = registry.journal_seq;
            self.put_cached(self.stamp(), file_seq, registry, false);
        } else if existed {
            self.put_cached(stamp, file_seq, registry, unsaved);
        }
        drop(flock);
        Ok(res)
    }

    /// Records `f`'s changes in the journal instead of rewriting the registry: under the flock, `f` looks at the
    /// registry as it is (the file with the journal applied) and answers a value and the changes to store; these
    /// are appended as journal lines and flushed to the disk (`fdatasync`) before this returns. Costs one small
    /// append whatever the number of entries when the store caches ([`Store::new_cached`]) and no other writer
    /// changed the file since its last transaction. A missing registry is [`Error::Missing`]; if `f` fails
    /// nothing is stored.
    pub fn journal<T, E: From<Error>>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&Registry) -> Result<(T, Vec<Change>), E>,
    ) -> Result<T, E> {
        let flock = self.lock(timeout)?;
        let (stamp, Loaded { mut registry, file_seq, unsaved }) = self.view()?;
        let mut journal = self.journal_state();
        apply_unfolded(&mut journal, &mut registry);
        let res = f(&registry).and_then(|(res, changes)| {
            let records = self.append_locked(&mut journal, changes)?;
            for record in &records {
                record.change.apply(&mut registry);
                registry.journal_seq = record.seq;
            }
            Ok(res)
        });
        drop(journal);
        // `f` only looked, and the lines are applied only once appended.
        self.put_cached(stamp, file_seq, registry, unsaved);
        drop(flock);
        res
    }

    /// Appends the changes `f` answers as journal lines (flushed to the disk before this returns) without the
    /// transaction flock: for changes that need no look at the registry (an entry's runtime fields), so that they
    /// never wait for a rewrite of the registry under way. `f` runs with this store's appends and the start of its
    /// transactions held: what it reads from elsewhere is newer than what any transaction before it saw.
    ///
    /// Only the one store that appends to the journal (the monitor's) may use this. Its first call takes the
    /// flock once to learn the journal's next number.
    pub fn append<T, E: From<Error>>(
        &self,
        timeout: Duration,
        f: impl FnOnce() -> Result<(T, Vec<Change>), E>,
    ) -> Result<T, E> {
        if self.journal_state().next_seq == 0 {
            let _flock = self.lock(timeout)?;
            let (stamp, Loaded { mut registry, file_seq, unsaved }) = self.view()?;
            apply_unfolded(&mut self.journal_state(), &mut registry);
            self.put_cached(stamp, file_seq, registry, unsaved);
        }
        let mut journal = self.journal_state();
        let (res, changes) = f()?;
        self.append_locked(&mut journal, changes)?;
        Ok(res)
    }

    /// Appends `changes` numbered from the next sequence number; the caller holds the journal state.
    fn append_locked(&self, journal: &mut JournalState, changes: Vec<Change>) -> Result<Vec<Record>, Error> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let journal_file = self.paths.journal_file();
        let first = journal.next_seq.max(1);
        let bytes = journal::lines(&journal_file, first, changes.iter())?;
        journal::append(&journal_file, &bytes)?;
        let records: Vec<Record> =
            changes.into_iter().enumerate().map(|(at, change)| Record { seq: first + at as u64, change }).collect();
        journal.next_seq = first + records.len() as u64;
        journal.unfolded.extend(records.iter().cloned());
        Ok(records)
    }

    /// After a write of the registry that holds every line up to `folded`: forgets those lines and, for the
    /// store that appends (the one whose lines these are), replaces the journal by one with only the newer lines
    /// (a rename, so a reader of the old one still reads a whole file). Other stores leave the journal alone: the
    /// monitor may be appending to it.
    fn drop_folded(&self, folded: u64) -> Result<(), Error> {
        let mut journal = self.journal_state();
        journal.unfolded.retain(|record| record.seq > folded);
        if self.cache.is_none() || stamp_of(&self.paths.journal_file()).is_none_or(|journal| journal.len == 0) {
            return Ok(());
        }
        let rest = journal.unfolded.first().map_or(0, |first| first.seq);
        let journal_file = self.paths.journal_file();
        let bytes = journal::lines(&journal_file, rest, journal.unfolded.iter().map(|record| &record.change))?;
        journal::replace(&journal_file, &bytes)
    }

    fn journal_state(&self) -> std::sync::MutexGuard<'_, JournalState> {
        self.journal.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The registry as it is now, under the flock: the cached one while the registry file did not change since
    /// the last transaction, else read (the journal's lines applied). Answers the stamp of the file (a caching
    /// store's only) taken before reading.
    fn view(&self) -> Result<(Option<FileStamp>, Loaded), Error> {
        // The stamp is taken before the file is read: a save that slips in between gives a newer registry under
        // an older stamp, which the next transaction sees as changed and reads again. Only the caching store
        // appends to the journal, so the journal changes under its cache by its own appends only.
        let stamp = self.cache.as_ref().and_then(|_| self.stamp());
        if let Some(cached) = self.take_cached(stamp) {
            return Ok((stamp, cached));
        }
        let mut loaded = self.load_with_journal()?;
        if self.cache.is_some() {
            // This registry becomes the cache, kept for the monitor's life.
            compact(&mut loaded.registry);
        }
        Ok((stamp, loaded))
    }

    /// The cached registry if the registry file still has `stamp` (leaving the cache empty either way).
    fn take_cached(&self, stamp: Option<FileStamp>) -> Option<Loaded> {
        let cached = self.cache.as_ref()?.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()?;
        (Some(cached.stamp) == stamp).then_some(Loaded {
            registry: cached.registry,
            file_seq: cached.file_seq,
            unsaved: cached.unsaved,
        })
    }

    fn put_cached(&self, stamp: Option<FileStamp>, file_seq: u64, registry: Registry, unsaved: bool) {
        let (Some(cache), Some(stamp)) = (&self.cache, stamp) else { return };
        *cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some(Cached { stamp, file_seq, registry, unsaved });
    }

    /// Lets `f` change the cached registry in memory, without the flock and without a write (a caching store's
    /// only; nothing happens while a transaction holds the cache or before the first read). `f` runs with this
    /// store's appends held and this store's journal lines applied first, as an ordered transaction's does, and
    /// answers whether it changed anything: if so, the next ordered transaction
    /// ([`Store::transaction_existing_ordered`]) writes the file even when its own `f` changes nothing, and any
    /// write before it holds the change too. A change of the file on disk meanwhile drops the cache, and the
    /// change with it: only for what memory holds anyway and an ordered writer stores again (the monitor's
    /// processes' runtime fields, taken up while its writer holds its writes back). Answers whether `f` ran.
    pub fn change_cached(&self, f: impl FnOnce(&mut Registry) -> bool) -> bool {
        let Some(cache) = &self.cache else { return false };
        let mut journal = self.journal_state();
        let mut cache = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(cached) = cache.as_mut() else { return false };
        apply_unfolded(&mut journal, &mut cached.registry);
        if f(&mut cached.registry) {
            cached.unsaved = true;
        }
        true
    }

    /// Modification time, length and inode of the registry file; `None` if it is missing.
    pub fn stamp(&self) -> Option<FileStamp> {
        stamp_of(&self.paths.registry_file())
    }

    /// `processes_{id}.json.bak`: the version before the last save.
    fn backup_file(&self) -> PathBuf {
        with_suffix(&self.paths.registry_file(), ".bak")
    }

    /// `processes_{id}.json.tmp-{pid}`: where a save writes before it renames (only under the flock).
    fn temp_file(&self) -> PathBuf {
        with_suffix(&self.paths.registry_file(), &format!(".tmp-{}", std::process::id()))
    }

    /// Creates the folders, sweeps temporary files of dead writers, and writes the default registry if there
    /// is none.
    fn prepare(&self) -> Result<(), Error> {
        fsutil::create_dir_all_private(self.paths.root())?;
        fsutil::create_dir_all_private(&self.paths.logs_dir())?;
        fsutil::spread_subfolders(&self.paths.logs_dir());
        self.sweep_stale_temp_files();
        let file = self.paths.registry_file();
        if exists(&file)? {
            return Ok(());
        }
        let _flock = self.lock(INIT_LOCK_TIMEOUT)?;
        if exists(&file)? {
            return Ok(());
        }
        let mut registry = Registry::new_default(self.paths.instance_id());
        registry.last_modified = Some(Timestamp::now());
        self.save_locked(&registry, false)?;
        tracing::info!(registry = %file.display(), "created the default registry");
        Ok(())
    }

    /// Takes the transaction flock (creating the root folder if needed).
    fn lock(&self, timeout: Duration) -> Result<fsutil::Flock, Error> {
        fsutil::create_dir_all_private(self.paths.root())?;
        fsutil::lock_exclusive(&self.paths.transaction_lock_file(), timeout)
    }

    /// Writes `registry` atomically; the caller holds the flock. With `previous_exists`, the current file
    /// (parsed a moment ago) becomes the backup first.
    fn save_locked(&self, registry: &Registry, previous_exists: bool) -> Result<(), Error> {
        let file = self.paths.registry_file();
        // Entries that cannot run are written back as they were read (see `pm_core::UnusableEntry`).
        let mut bytes = registry
            .to_json_pretty()
            .map_err(|err| Error::Serialize { path: file.clone(), message: err.to_string() })?;
        bytes.push(b'\n');
        // The layout mark says that every entry's text is what this writer writes for it, in its order: not so
        // for a registry with unusable entries (written after the others, as they were read).
        let mark = registry.unusable.is_empty();
        self.save_parts_locked(&[&bytes], previous_exists, mark, registry.journal_seq)
    }

    /// Writes the registry file's `parts` atomically, with the layout mark if `mark`; the caller holds the flock.
    /// With `previous_exists`, the current file becomes the backup first. `journal_seq` is the `journalSeq`
    /// written.
    fn save_parts_locked(
        &self,
        parts: &[&[u8]],
        previous_exists: bool,
        mark: bool,
        journal_seq: u64,
    ) -> Result<(), Error> {
        let file = self.paths.registry_file();
        let tmp = self.temp_file();
        if let Err(err) = fsutil::write_synced_parts(&tmp, parts, mark) {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        if previous_exists {
            if let Err(err) = self.keep_backup(&file) {
                tracing::warn!("registry backup not updated: {err}");
            }
        }
        self.replace_with(&tmp)?;
        self.written(journal_seq);
        Ok(())
    }

    /// Notes that the registry file now holds a registry with this `journalSeq`, just written under the flock
    /// (only writers holding it rename over the file, so its stamp now is that of the version written).
    fn written(&self, journal_seq: u64) {
        *self.readable_stamp() = self.stamp().map(|stamp| (stamp, journal_seq));
    }

    /// Renames `tmp` over the registry and flushes the folder.
    fn replace_with(&self, tmp: &Path) -> Result<(), Error> {
        let file = self.paths.registry_file();
        if let Err(err) = fs::rename(tmp, &file) {
            let _ = fs::remove_file(tmp);
            return Err(Error::io(tmp, &format!("rename to {}", file.display()), err));
        }
        fsutil::sync_dir(self.paths.root())
    }

    /// Makes the current registry file the backup: hard-links it to a temporary name, then renames that over
    /// `.bak`, so a backup exists at every moment once there has been one.
    fn keep_backup(&self, file: &Path) -> Result<(), Error> {
        let backup = self.backup_file();
        let staged = with_suffix(&backup, &format!(".tmp-{}", std::process::id()));
        fsutil::remove_if_exists(&staged)?;
        fs::hard_link(file, &staged).map_err(|err| Error::io(&staged, "link the previous registry", err))?;
        fs::rename(&staged, &backup).map_err(|err| {
            let _ = fs::remove_file(&staged);
            Error::io(&staged, &format!("rename to {}", backup.display()), err)
        })
    }

    /// Links the registry file to a fresh `.corrupt-{YYYYMMDD_HHMMSS}[_N]` name (never replacing a file).
    fn set_aside(&self, file: &Path) -> Result<PathBuf, Error> {
        let base = with_suffix(file, &format!(".corrupt-{}", Timestamp::now().compact()));
        for attempt in 1u32.. {
            let aside = if attempt == 1 { base.clone() } else { with_suffix(&base, &format!("_{attempt}")) };
            match fs::hard_link(file, &aside) {
                Ok(()) => return Ok(aside),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(Error::io(&aside, "keep the corrupt registry aside", err)),
            }
        }
        unreachable!("u32 range exhausted while naming the corrupt copy")
    }

    /// Removes the temporary files of the registry, its backup and the instance lock that writers which died
    /// left behind (`processes_{id}.json.tmp-{pid}`, `.json.bak.tmp-{pid}`, `.lock.tmp-{pid}-{n}`).
    fn sweep_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(self.paths.root()) else {
            return;
        };
        let id = self.paths.instance_id();
        let prefixes = [
            format!("processes_{id}.json.tmp-"),
            format!("processes_{id}.json.bak.tmp-"),
            format!("processes_{id}.lock.tmp-"),
            format!("processes_{id}.journal.tmp-"),
        ];
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(tail) = prefixes.iter().find_map(|prefix| name.strip_prefix(prefix.as_str())) else {
                continue;
            };
            if let Some(writer) = temp_file_writer(tail) {
                if writer != std::process::id() && !proc::alive(writer) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// The writer's PID in a temporary-file tail `{pid}` or `{pid}-{n}`.
fn temp_file_writer(tail: &str) -> Option<u32> {
    let (writer, counter) = tail.split_once('-').unwrap_or((tail, "0"));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(counter) {
        return None;
    }
    writer.parse().ok().filter(|_| digits(writer))
}

fn exists(path: &Path) -> Result<bool, Error> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::io(path, "inspect", err)),
    }
}

fn stamp_of(path: &Path) -> Option<FileStamp> {
    let meta = fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let modified_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let changed_ns = i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
        Some(FileStamp { modified_ns, len: meta.len(), inode: meta.ino(), changed_ns })
    }
    #[cfg(not(unix))]
    {
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_nanos() as i128);
        Some(FileStamp { modified_ns, len: meta.len(), inode: 0, changed_ns: 0 })
    }
}

/// Applies this store's appended lines that `registry` does not hold yet, and makes sure the next number
/// follows them.
fn apply_unfolded(journal: &mut JournalState, registry: &mut Registry) {
    let held = registry.journal_seq;
    for record in journal.unfolded.iter().filter(|record| record.seq > held) {
        record.change.apply(registry);
        registry.journal_seq = record.seq;
    }
    journal.next_seq = journal.next_seq.max(registry.journal_seq + 1);
}

/// The `lastModified` of a write after one at `previous`: now, but strictly after the previous write even within
/// one millisecond (the written precision).
fn next_modified(previous: Option<Timestamp>) -> Timestamp {
    let now = Timestamp::now();
    let after_previous = previous.map(|previous| previous.plus_millis(1));
    after_previous.filter(|next| *next > now).unwrap_or(now)
}

/// Applies the journal's `records` newer than `lazy`'s `journalSeq` to it, as [`journal::apply_newer`] does to a
/// whole registry (the caller checked that they follow it); answers false, having stopped, when an entry a line
/// updates does not read.
fn apply_lazily(lazy: &mut LazyRegistry<'_>, records: &[Record]) -> bool {
    let held = lazy.top_level().journal_seq;
    for record in records.iter().filter(|record| record.seq > held) {
        match &record.change {
            Change::Update(update) => match lazy.entry_mut(&update.id) {
                Ok(Some(stored)) => update.apply(stored),
                Ok(None) => {}
                Err(_) => return false,
            },
            Change::Add(entry) => lazy.insert((**entry).clone()),
            Change::Remove(id) => {
                lazy.remove(id);
            }
        }
        lazy.top_level_mut().journal_seq = record.seq;
    }
    true
}

/// Rebuilds the map of entries with full nodes: the parse inserts the entries one after the other in key order,
/// which leaves every node of the B-tree about half full (a node holds each entry's key and a pointer to the
/// entry, [`pm_core::SharedEntry`]: about 30 B per entry of empty room in a parsed registry held for long, the
/// cache).
fn compact(registry: &mut Registry) {
    registry.processes = std::mem::take(&mut registry.processes).into_iter().collect();
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Registry, Error> {
    Registry::from_json(bytes).map_err(|err| Error::corrupt(path, &err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reports_line_and_column() {
        let err = parse(Path::new("/x/processes_default.json"), b"{\n  \"instanceId\": 3\n}").unwrap_err();
        let Error::Corrupt { path, line, column, .. } = &err else { panic!("not Corrupt: {err:?}") };
        assert_eq!(path, Path::new("/x/processes_default.json"));
        assert_eq!((*line, *column), (2, 17));
    }

    #[test]
    fn temp_file_tails() {
        assert_eq!(temp_file_writer("123"), Some(123));
        assert_eq!(temp_file_writer("123-4"), Some(123));
        for other in ["", "x", "12x", "123-", "123-x", "5.json", "-1", "+5"] {
            assert_eq!(temp_file_writer(other), None, "{other}");
        }
    }

    #[test]
    fn parse_gives_a_minimal_watcher_registry_the_watchers_ports_and_partner() {
        let registry = parse(Path::new("/x/processes_watcher.json"), br#"{"instanceId": "watcher"}"#).unwrap();
        assert_eq!((registry.remote_access.remote_port, registry.aliveness_server.port), (19882, 19884));
        assert_eq!(registry.partner_discovery.partner_instance_id.as_deref(), Some("default"));
        assert_eq!(registry.partner_discovery.partner_aliveness_port, Some(19883));
    }

    #[test]
    fn parse_refuses_an_empty_file() {
        let err = parse(Path::new("/x/r.json"), b"").unwrap_err();
        assert!(matches!(err, Error::Corrupt { line: 1, column: 0, .. }), "{err:?}");
    }
}
