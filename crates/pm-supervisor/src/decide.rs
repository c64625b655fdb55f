//! The daemon's decisions as pure functions: what a start is (boot or resume), what to do with the copies of a
//! registered process found running at the start, which stray processes to stop, and the reconcile plan. They
//! read their inputs and return what to do; the callers (`daemon`, `monitor`) do it. Tested without child
//! processes, table by table.

use std::collections::{BTreeMap, HashMap};

use pm_core::{PendingAction, ProcessConfig, ProcessEntry, ProcessState, Registry, Settings, SharedEntry};

use crate::actor::ConfigRevs;
use crate::orphans::Found;

/// How a monitor starts: the one decision that tells a clean start from taking over after another monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// The last monitor stopped cleanly: nothing of it is supposed to run, stopped autostart processes start,
    /// waits for a retry are not carried on, and the owner secret is made afresh.
    Boot,
    /// This monitor replaces one that restarted itself, crashed or was killed: what runs is adopted, what was
    /// under way is carried on, and stopped processes stay stopped.
    Resume,
}

impl StartKind {
    /// A start resumes when it replaces a monitor that restarted itself (`--resume`), or when the registry is
    /// still marked `monitorRunning` (its predecessor did not shut down cleanly); otherwise it boots.
    pub(crate) fn of(resume_flag: bool, marked_running: bool) -> StartKind {
        if resume_flag || marked_running {
            StartKind::Resume
        } else {
            StartKind::Boot
        }
    }

    /// Whether this start is a boot.
    pub(crate) fn is_boot(self) -> bool {
        self == StartKind::Boot
    }
}

/// What a process's task does with its (enabled) entry when the monitor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtStart {
    /// Its partner instance runs but is shutting down: not adopted (its exit would read as a crash and be
    /// undone); `stopped`.
    LeavePartner,
    /// It still runs: adopted. `resume_startup`: its startup check had not passed yet (it is not healthy until it
    /// does); `then_stop`: a stop was under way, and is finished.
    Adopt { resume_startup: bool, then_stop: bool },
    /// It was waiting for its dependencies (never spawned): it waits on.
    WaitForDependencies,
    /// It was running and exited while no monitor ran: a crash, restarted as its policy says.
    Restart,
    /// The same for a job under `restartOn: failure`/`never`: it may have finished, and with its exit code
    /// unknown it is not run again; `stopped`.
    StopUnknownExit,
    /// It was waiting for a retry (at a resume): the wait goes on at the attempt it had reached.
    RetryAtCurrentAttempt,
    /// It settles in `state` (stopped, failed), and is started when `start`: an autostart process at a boot, or
    /// one registered while no monitor ran and never run since.
    Settle { state: ProcessState, start: bool },
}

/// Decides what [`AtStart`] is for `entry` as the registry has it: `live` whether its recorded process still
/// runs (same PID and start time), `partner_stopping` whether that process is a partner saying it is stopping.
pub(crate) fn at_start(entry: &ProcessEntry, live: bool, partner_stopping: bool, start: StartKind) -> AtStart {
    if live {
        if entry.config.partner && partner_stopping {
            return AtStart::LeavePartner;
        }
        return AtStart::Adopt {
            resume_startup: entry.state == ProcessState::Starting,
            then_stop: entry.state == ProcessState::Stopping,
        };
    }
    if entry.state == ProcessState::Starting && entry.waiting_since.is_some() {
        return AtStart::WaitForDependencies;
    }
    let state = match entry.state {
        ProcessState::Starting | ProcessState::Running | ProcessState::Crashed => {
            if entry.config.restart_policy().restart_on != pm_core::RestartOn::Always {
                return AtStart::StopUnknownExit;
            }
            return AtStart::Restart;
        }
        // At a boot (the last monitor stopped cleanly) a wait for a retry is not carried on: the process starts
        // only if it is autostart (an older monitor left `retrying` in the file at a clean stop).
        ProcessState::Retrying if start.is_boot() => ProcessState::Stopped,
        ProcessState::Retrying => return AtStart::RetryAtCurrentAttempt,
        ProcessState::Stopping | ProcessState::Disabled => ProcessState::Stopped,
        state @ (ProcessState::Stopped | ProcessState::Failed) => state,
    };
    // Registered while no monitor ran and never run since. An adopted process (a partner found running) has no
    // start time of ours, but once it ran and stopped here it has a stop time: stopped stays stopped.
    let never_started = entry.last_started_at.is_none() && entry.last_stopped_at.is_none();
    AtStart::Settle { state, start: entry.config.autostart && (start.is_boot() || never_started) }
}

/// What to do with the copies of one registered process found running at the start (each carries this
/// monitor's owner key and runs the registered executable).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Copies {
    /// The copy to adopt as the process (PID, start time), when the registry recorded none that still runs.
    pub(crate) adopt: Option<(u32, Option<u64>)>,
    /// Duplicate copies started by an earlier monitor: stopped (PID, start time).
    pub(crate) stop: Vec<(u32, Option<u64>)>,
    /// Other processes of this id (detached helpers, a partner's): left running.
    pub(crate) leave: Vec<u32>,
}

/// Sorts the copies `found` of a process whose recorded run is `known` (its PID when it still runs): the first
/// copy is adopted when nothing known runs; a further copy with the kept one's command line (`cmdline_of` the
/// kept PID) is a duplicate and stopped; anything else carrying the id, or any copy of a partner, is left alone.
pub(crate) fn sort_copies(
    known: Option<u32>,
    partner: bool,
    found: &[Found],
    cmdline_of: impl Fn(u32) -> Vec<u8>,
) -> Copies {
    let mut copies = Copies::default();
    let mut keep = known;
    for found in found {
        let pid = found.pid;
        if Some(pid) == keep {
            continue;
        }
        let Some(kept) = keep else {
            copies.adopt = Some((pid, found.start_time));
            keep = Some(pid);
            continue;
        };
        if partner || found.cmdline != cmdline_of(kept) {
            copies.leave.push(pid);
        } else {
            copies.stop.push((pid, found.start_time));
        }
    }
    copies
}

/// Applies a stop asked for while no monitor ran (`pendingAction: stop`): a process that still runs is
/// `stopping` (its task finishes the stop); one that does not is `stopped` (a disabled one stays disabled).
pub(crate) fn honour_pending_stop(entry: &mut ProcessEntry, runs: bool) {
    if entry.pending_action != Some(PendingAction::Stop) {
        return;
    }
    if runs {
        entry.state = ProcessState::Stopping;
    } else {
        entry.pid = None;
        if entry.state != ProcessState::Disabled {
            entry.state = ProcessState::Stopped;
        }
    }
}

/// What to do with a process found at the start whose registration is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stray {
    /// A monitor of this home (a partner dropped by standalone mode): it holds its instance lock; left running.
    LeaveMonitor { id: String, pid: u32 },
    /// Started by this instance, nothing supervises it any more: stopped.
    Stop { id: String, pid: u32, start_time: Option<u64> },
}

/// Decides about the processes found at the start for ids no longer registered (`orphans`, by id):
/// `instance_of(id)` is the PID of the monitor instance of that id, if one runs.
pub(crate) fn strays(orphans: HashMap<String, Vec<Found>>, instance_of: impl Fn(&str) -> Option<u32>) -> Vec<Stray> {
    let mut res = Vec::new();
    for (id, found) in orphans {
        let monitor = instance_of(&id);
        for Found { pid, start_time, .. } in found {
            if Some(pid) == monitor {
                res.push(Stray::LeaveMonitor { id: id.clone(), pid });
            } else {
                res.push(Stray::Stop { id: id.clone(), pid, start_time });
            }
        }
    }
    res
}

/// A process's configuration as memory holds it, and which of its fields its task changed since they were
/// last written (those keep memory's value in a reconcile; the file's edits of every other field are taken up).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Held {
    /// The configuration in memory.
    pub(crate) config: ProcessConfig,
    /// The task's revisions of its own changes.
    pub(crate) revs: ConfigRevs,
    /// `enabled` was changed by the task and not written yet.
    pub(crate) enabled_dirty: bool,
    /// `autostart` was changed by the task and not written yet.
    pub(crate) autostart_dirty: bool,
}

impl Held {
    /// The configuration `config` at revisions `revs`, of which `written` were last written to the file.
    pub(crate) fn of(config: ProcessConfig, revs: ConfigRevs, written: ConfigRevs) -> Held {
        Held {
            config,
            revs,
            enabled_dirty: revs.enabled > written.enabled,
            autostart_dirty: revs.autostart > written.autostart,
        }
    }
}

/// What a reconcile hands over: the settings of the file, the pending actions local clients left, and the
/// entries added, changed and removed since memory's view.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub(crate) settings: Settings,
    pub(crate) actions: Vec<(String, PendingAction)>,
    /// Shared with the registry they were read from until either changes them ([`pm_core::SharedEntry`]).
    pub(crate) added: Vec<SharedEntry>,
    /// New configurations, with the revisions of the task's own changes they were read against.
    pub(crate) changed: Vec<(ProcessConfig, ConfigRevs)>,
    pub(crate) removed: Vec<String>,
}

/// The reconcile plan of `registry` (as read from the file, under its lock) against `memory`: pending actions
/// not `handed` to a task already are handed over (they stay in the file until their outcome is stored with
/// them cleared, see [`pm_registry::EntryUpdate::pending_done`]), entries memory lacks are added, entries whose
/// configuration differs (keeping memory's unwritten `enabled`/`autostart`) are changed, and entries gone from
/// the file are removed, unless a hand edit made them unusable (their processes go on from memory).
pub(crate) fn reconcile_plan(
    registry: &Registry,
    memory: &BTreeMap<String, Held>,
    handed: &HashMap<String, PendingAction>,
) -> Plan {
    let mut plan = Plan {
        settings: Settings::of(registry),
        actions: Vec::new(),
        added: Vec::new(),
        changed: Vec::new(),
        removed: Vec::new(),
    };
    for (id, stored) in &registry.processes {
        if let Some(action) = stored.pending_action {
            if handed.get(id) != Some(&action) {
                plan.actions.push((id.clone(), action));
            }
        }
        match memory.get(id) {
            None => plan.added.push(stored.clone()),
            Some(held) => {
                let mut wanted = stored.config.clone();
                if held.enabled_dirty {
                    wanted.enabled = held.config.enabled;
                }
                if held.autostart_dirty {
                    wanted.autostart = held.config.autostart;
                }
                if wanted != held.config {
                    plan.changed.push((wanted, held.revs));
                }
            }
        }
    }
    plan.removed = memory
        .keys()
        .filter(|id| !registry.processes.contains_key(*id) && !registry.unusable.contains_key(*id))
        .cloned()
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use pm_core::{PendingAction, ProcessConfig, ProcessEntry, ProcessState, Registry, Timestamp, UnusableEntry};

    use super::*;

    fn found(pid: u32, cmdline: &str) -> Found {
        Found { pid, start_time: Some(u64::from(pid) * 10), cmdline: cmdline.as_bytes().to_vec(), exe: None }
    }

    /// The command line of the process `pid` in these tables: `job` for PIDs below 100, `helper` above.
    fn cmdline_of(pid: u32) -> Vec<u8> {
        if pid < 100 {
            b"job".to_vec()
        } else {
            b"helper".to_vec()
        }
    }

    #[test]
    fn a_start_boots_only_after_a_clean_stop_and_without_resume() {
        let cases = [
            (false, false, StartKind::Boot),
            (true, false, StartKind::Resume),
            (false, true, StartKind::Resume),
            (true, true, StartKind::Resume),
        ];
        for (resume_flag, marked_running, expected) in cases {
            assert_eq!(
                StartKind::of(resume_flag, marked_running),
                expected,
                "--resume {resume_flag}, marked {marked_running}"
            );
            assert_eq!(expected.is_boot(), expected == StartKind::Boot);
        }
    }

    #[test]
    fn what_a_task_does_with_its_entry_at_the_start() {
        use ProcessState::*;
        use StartKind::{Boot, Resume};
        let settle = |state, start| AtStart::Settle { state, start };
        let adopt = |resume_startup, then_stop| AtStart::Adopt { resume_startup, then_stop };
        // (state in the file, facts, start) → decision. Facts: `live` (its process still runs), `auto`
        // (autostart), `ran` (started before), `waiting` (for dependencies), `failure`/`never` (its restartOn).
        let cases = [
            (Running, "live auto ran", Boot, adopt(false, false)),
            (Starting, "live auto ran", Resume, adopt(true, false)),
            (Stopping, "live auto ran", Resume, adopt(false, true)),
            (Starting, "auto waiting", Resume, AtStart::WaitForDependencies),
            (Running, "auto ran", Boot, AtStart::Restart),
            (Crashed, "ran", Resume, AtStart::Restart),
            (Running, "auto ran failure", Resume, AtStart::StopUnknownExit),
            (Starting, "auto ran never", Boot, AtStart::StopUnknownExit),
            (Retrying, "auto ran", Resume, AtStart::RetryAtCurrentAttempt),
            (Retrying, "auto ran", Boot, settle(Stopped, true)),
            (Retrying, "ran", Boot, settle(Stopped, false)),
            (Stopped, "auto ran", Boot, settle(Stopped, true)),
            (Stopped, "auto ran", Resume, settle(Stopped, false)),
            (Stopped, "auto", Resume, settle(Stopped, true)),
            (Stopped, "", Boot, settle(Stopped, false)),
            (Failed, "auto ran", Resume, settle(Failed, false)),
            (Failed, "auto ran", Boot, settle(Failed, true)),
            (Stopping, "auto ran", Resume, settle(Stopped, false)),
            (Disabled, "auto ran", Resume, settle(Stopped, false)),
        ];
        for (state, facts, start, expected) in cases {
            let has = |fact: &str| facts.split(' ').any(|it| it == fact);
            let restart_on = match () {
                () if has("failure") => pm_core::RestartOn::Failure,
                () if has("never") => pm_core::RestartOn::Never,
                () => pm_core::RestartOn::Always,
            };
            let mut entry = ProcessEntry::new(ProcessConfig::new("job", "job", "/bin/true"), Timestamp::now());
            entry.state = state;
            entry.config.autostart = has("auto");
            entry.config.restart_policy = Some(pm_core::RestartPolicy { restart_on, ..Default::default() });
            entry.last_started_at = has("ran").then(Timestamp::now);
            entry.waiting_since = has("waiting").then(Timestamp::now);
            let decided = at_start(&entry, has("live"), false, start);
            assert_eq!(decided, expected, "{state:?} with \"{facts}\" at {start:?}");
        }
    }

    #[test]
    fn a_partner_that_is_shutting_down_is_not_adopted() {
        let mut entry = ProcessEntry::new(ProcessConfig::new("watcher", "watcher", "/bin/true"), Timestamp::now());
        entry.state = ProcessState::Running;
        entry.config.partner = true;
        assert_eq!(at_start(&entry, true, true, StartKind::Resume), AtStart::LeavePartner);
        assert_eq!(
            at_start(&entry, true, false, StartKind::Resume),
            AtStart::Adopt { resume_startup: false, then_stop: false }
        );
        entry.config.partner = false;
        assert_eq!(
            at_start(&entry, true, true, StartKind::Resume),
            AtStart::Adopt { resume_startup: false, then_stop: false }
        );
    }

    #[test]
    fn copies_found_at_the_start_are_adopted_stopped_or_left() {
        let adopt = |pid: u32| Some((pid, Some(u64::from(pid) * 10)));
        // (recorded run still alive, partner, copies found) → (adopted, stopped, left)
        #[allow(clippy::type_complexity)]
        let cases: Vec<(Option<u32>, bool, Vec<Found>, Option<(u32, Option<u64>)>, Vec<u32>, Vec<u32>)> = vec![
            // Nothing found: nothing to do, whether the recorded run lives or not.
            (None, false, vec![], None, vec![], vec![]),
            (Some(7), false, vec![], None, vec![], vec![]),
            // The recorded run is what was found: nothing to do.
            (Some(7), false, vec![found(7, "job")], None, vec![], vec![]),
            // The recorded run is gone and a copy runs: it is adopted.
            (None, false, vec![found(8, "job")], adopt(8), vec![], vec![]),
            // A second copy with the same command line is a duplicate: stopped.
            (Some(7), false, vec![found(7, "job"), found(9, "job")], None, vec![9], vec![]),
            (None, false, vec![found(8, "job"), found(9, "job")], adopt(8), vec![9], vec![]),
            // Something else carrying the id (a detached helper) is left running.
            (Some(7), false, vec![found(150, "helper")], None, vec![], vec![150]),
            (None, false, vec![found(8, "job"), found(150, "helper")], adopt(8), vec![], vec![150]),
            // A partner's copies are never stopped.
            (Some(7), true, vec![found(9, "job")], None, vec![], vec![9]),
        ];
        for (known, partner, found, adopted, stopped, left) in cases {
            let copies = sort_copies(known, partner, &found, cmdline_of);
            let what = format!(
                "known {known:?}, partner {partner}, found {:?}",
                found.iter().map(|f| f.pid).collect::<Vec<_>>()
            );
            assert_eq!(copies.adopt, adopted, "adopted: {what}");
            assert_eq!(copies.stop.iter().map(|(pid, _)| *pid).collect::<Vec<_>>(), stopped, "stopped: {what}");
            assert_eq!(copies.leave, left, "left: {what}");
        }
    }

    #[test]
    fn a_pending_stop_is_honoured_at_the_start() {
        // (pending action, state in the file, still runs) → state handed to the task, PID kept
        let cases = [
            (Some(PendingAction::Stop), ProcessState::Running, true, ProcessState::Stopping, true),
            (Some(PendingAction::Stop), ProcessState::Running, false, ProcessState::Stopped, false),
            (Some(PendingAction::Stop), ProcessState::Disabled, false, ProcessState::Disabled, false),
            (Some(PendingAction::Start), ProcessState::Stopped, false, ProcessState::Stopped, true),
            (Some(PendingAction::Restart), ProcessState::Running, true, ProcessState::Running, true),
            (None, ProcessState::Running, false, ProcessState::Running, true),
        ];
        for (action, state, runs, expected, pid_kept) in cases {
            let mut entry = ProcessEntry::new(ProcessConfig::new("job", "job", "/bin/true"), Timestamp::now());
            entry.pending_action = action;
            entry.state = state;
            entry.pid = Some(42);
            honour_pending_stop(&mut entry, runs);
            assert_eq!(entry.state, expected, "{action:?} on {state:?}, runs {runs}");
            assert_eq!(entry.pid.is_some(), pid_kept, "{action:?} on {state:?}, runs {runs}");
        }
    }

    #[test]
    fn strays_are_stopped_unless_they_are_a_monitor_of_this_home() {
        let orphans = HashMap::from([
            ("gone".to_owned(), vec![found(11, "gone"), found(12, "gone")]),
            ("watcher".to_owned(), vec![found(21, "monitor"), found(22, "helper")]),
        ]);
        let mut decided = strays(orphans, |id| (id == "watcher").then_some(21));
        decided.sort_by_key(|stray| match stray {
            Stray::LeaveMonitor { pid, .. } | Stray::Stop { pid, .. } => *pid,
        });
        let stop = |id: &str, pid: u32| Stray::Stop { id: id.to_owned(), pid, start_time: Some(u64::from(pid) * 10) };
        assert_eq!(
            decided,
            vec![
                stop("gone", 11),
                stop("gone", 12),
                Stray::LeaveMonitor { id: "watcher".to_owned(), pid: 21 },
                stop("watcher", 22),
            ]
        );
        assert!(strays(HashMap::new(), |_| None).is_empty());
    }

    fn entry(id: &str) -> ProcessEntry {
        ProcessEntry::new(ProcessConfig::new(id, id, "/bin/true"), Timestamp::now())
    }

    fn held(id: &str, edit: impl FnOnce(&mut Held)) -> (String, Held) {
        let mut held = Held::of(entry(id).config, ConfigRevs::default(), ConfigRevs::default());
        edit(&mut held);
        (id.to_owned(), held)
    }

    /// A registry holding `ids`, each as [`entry`] makes it, edited by `edit`.
    fn registry(ids: &[&str], edit: impl FnOnce(&mut Registry)) -> Registry {
        let mut registry = Registry::new_default("default");
        for id in ids {
            registry.processes.insert((*id).to_owned(), entry(id).into());
        }
        edit(&mut registry);
        registry
    }

    #[test]
    fn the_reconcile_plan_of_a_file_against_memory() {
        /// What the case is, the file, memory, and the checks of the plan (and of the file after it).
        type Case = (&'static str, Registry, Vec<(String, Held)>, fn(&Plan, &Registry));
        let cases: Vec<Case> = vec![
            ("nothing changed", registry(&["a"], |_| {}), vec![held("a", |_| {})], |plan, _| {
                assert!(plan.added.is_empty() && plan.changed.is_empty() && plan.removed.is_empty());
                assert!(plan.actions.is_empty());
            }),
            ("an entry memory lacks is added", registry(&["a", "b"], |_| {}), vec![held("a", |_| {})], |plan, _| {
                assert_eq!(plan.added.iter().map(|e| e.config.id.as_str()).collect::<Vec<_>>(), ["b"]);
            }),
            ("an entry gone from the file is removed", registry(&[], |_| {}), vec![held("a", |_| {})], |plan, _| {
                assert_eq!(plan.removed, ["a"]);
            }),
            (
                "an entry a hand edit made unusable is not removed",
                registry(&[], |registry| {
                    registry.unusable.insert(
                        "a".to_owned(),
                        UnusableEntry { reason: "bad".to_owned(), raw: serde_json::Value::Null },
                    );
                }),
                vec![held("a", |_| {})],
                |plan, _| assert!(plan.removed.is_empty()),
            ),
            (
                "a configuration edited in the file is changed, at memory's revisions",
                registry(&["a"], |registry| {
                    registry.processes.get_mut("a").unwrap().config.args = vec!["x".to_owned()]
                }),
                vec![held("a", |held| held.revs = ConfigRevs { enabled: 3, autostart: 1 })],
                |plan, _| {
                    assert_eq!(plan.changed.len(), 1);
                    assert_eq!(plan.changed[0].0.args, ["x"]);
                    assert_eq!(plan.changed[0].1, ConfigRevs { enabled: 3, autostart: 1 });
                },
            ),
            (
                "memory's unwritten enabled/autostart win over the file's",
                registry(&["a"], |_| {}),
                vec![held("a", |held| {
                    held.config.enabled = false;
                    held.enabled_dirty = true;
                    held.config.autostart = false;
                    held.autostart_dirty = true;
                })],
                |plan, _| assert!(plan.changed.is_empty(), "{:?}", plan.changed),
            ),
            (
                "the file's enabled is taken up when memory's was written",
                registry(&["a"], |registry| registry.processes.get_mut("a").unwrap().config.enabled = false),
                vec![held("a", |_| {})],
                |plan, _| assert!(!plan.changed[0].0.enabled),
            ),
            (
                "pending actions are handed over and left in the file until their outcome is stored",
                registry(&["a", "b"], |registry| {
                    registry.processes.get_mut("a").unwrap().pending_action = Some(PendingAction::Restart);
                }),
                vec![held("a", |_| {}), held("b", |_| {})],
                |plan, registry| {
                    assert_eq!(plan.actions, [("a".to_owned(), PendingAction::Restart)]);
                    assert_eq!(registry.processes["a"].pending_action, Some(PendingAction::Restart));
                },
            ),
            (
                "the settings are the file's",
                registry(&[], |registry| registry.standalone_mode = true),
                vec![],
                |plan, _| assert!(plan.settings.standalone_mode),
            ),
        ];
        for (what, registry, memory, check) in cases {
            let memory: BTreeMap<String, Held> = memory.into_iter().collect();
            let plan = reconcile_plan(&registry, &memory, &HashMap::new());
            eprintln!("case: {what}");
            check(&plan, &registry);
        }
    }

    #[test]
    fn a_request_already_handed_over_is_not_handed_over_again_but_another_one_is() {
        use PendingAction::*;
        let file = registry(&["a", "b", "c", "d"], |registry| {
            for (id, action) in [("a", Restart), ("b", Start), ("c", Stop)] {
                registry.processes.get_mut(id).unwrap().pending_action = Some(action);
            }
        });
        let memory: BTreeMap<String, Held> = ["a", "b", "c", "d"].into_iter().map(|id| held(id, |_| {})).collect();
        // `a`'s restart is under way; `b` asked for a start after its stop was handed over; `d`'s request is done.
        let handed: HashMap<String, PendingAction> = [("a", Restart), ("b", Stop), ("d", Stop)]
            .into_iter()
            .map(|(id, action)| (id.to_owned(), action))
            .collect();
        let plan = reconcile_plan(&file, &memory, &handed);
        assert_eq!(plan.actions, [("b".to_owned(), Start), ("c".to_owned(), Stop)]);
    }

    #[test]
    fn dirty_fields_are_those_changed_since_the_last_write() {
        let config = ProcessConfig::new("a", "a", "/bin/true");
        let revs = ConfigRevs { enabled: 2, autostart: 5 };
        let cases = [
            (ConfigRevs { enabled: 2, autostart: 5 }, (false, false)),
            (ConfigRevs { enabled: 1, autostart: 5 }, (true, false)),
            (ConfigRevs { enabled: 2, autostart: 4 }, (false, true)),
            (ConfigRevs::default(), (true, true)),
        ];
        for (written, expected) in cases {
            let held = Held::of(config.clone(), revs, written);
            assert_eq!((held.enabled_dirty, held.autostart_dirty), expected, "written {written:?}");
        }
    }
}
