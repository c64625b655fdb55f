//! Events: what changed between two published snapshots of a process, put on the monitor's [`EventBus`], and the
//! `onStateChange` hooks those changes run.
//!
//! The actor calls [`changes`] from its one publishing point, so every state it publishes yields its event in
//! order; publishing never waits (the bus is a ring, hooks run on tasks of their own).

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use pm_core::{Event, EventKind, ProcessConfig, ProcessEntry, ProcessState, StateChangeHook};
use pm_http::EventBus;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::Shared;

/// Hooks running at once in one monitor; a hook due while all run is skipped (and logged).
const MAX_RUNNING_HOOKS: usize = 16;

/// The event bus of a monitor and the bound on its hooks.
pub(crate) struct Events {
    pub(crate) bus: Arc<EventBus>,
    hooks: Arc<Semaphore>,
}

impl Events {
    pub(crate) fn new(bus: Arc<EventBus>) -> Events {
        Events { bus, hooks: Arc::new(Semaphore::new(MAX_RUNNING_HOOKS)) }
    }

    /// Publishes an event of `kind` about a process (`is_remote` decides who may see it) or the monitor.
    pub(crate) fn publish(&self, kind: EventKind, is_remote: bool) -> Event {
        let mut event = Event::now(kind);
        event.id = self.bus.publish(event.clone(), is_remote);
        event
    }
}

/// The events between the entry last published (`before`) and the one being published (`after`); `retry_in` is
/// the backoff delay when a restart is now scheduled.
pub(crate) fn changes(before: &ProcessEntry, after: &ProcessEntry, retry_in: Option<Duration>) -> Vec<EventKind> {
    let mut res = Vec::new();
    if before.config != after.config {
        let fields = changed_fields(&before.config, &after.config);
        if !fields.is_empty() {
            res.push(EventKind::ConfigChanged { process_id: after.config.id.clone(), fields });
        }
    }
    if before.state != after.state {
        res.extend(state_change(before.state, before.pid, after, retry_in));
    }
    res
}

/// The events of a change of state from `from` (with `before_pid`, the PID then) to `after`'s; `retry_in` as in
/// [`changes`]. The crash path publishes `crashed` and `retrying` at once with two of these.
pub(crate) fn state_change(
    from: ProcessState,
    before_pid: Option<u32>,
    after: &ProcessEntry,
    retry_in: Option<Duration>,
) -> Vec<EventKind> {
    let mut res = Vec::new();
    let process_id = after.config.id.clone();
    let to = after.state;
    let ended = from.has_child() && !to.has_child();
    let reason = reason(from, to, after);
    res.push(EventKind::State {
        process_id: process_id.clone(),
        from,
        to,
        pid: if ended { before_pid.or(after.pid) } else { after.pid },
        reason: reason.clone(),
        exit_code: if ended { after.last_exit_code } else { None },
        signal: if ended { after.last_signal } else { None },
    });
    if to == ProcessState::Retrying {
        res.push(EventKind::RestartScheduled {
            process_id: process_id.clone(),
            attempt: after.restart_attempts,
            delay_ms: retry_in.map_or(0, |delay| delay.as_millis() as u64),
        });
    }
    if after.config.partner {
        if to == ProcessState::Running {
            res.push(EventKind::PartnerUp { partner_instance_id: process_id, pid: after.pid });
        } else if from == ProcessState::Running {
            res.push(EventKind::PartnerDown { partner_instance_id: process_id, reason });
        }
    }
    res
}

fn reason(from: ProcessState, to: ProcessState, after: &ProcessEntry) -> String {
    let error = || after.last_error.as_deref().map(|error| error.strip_prefix("process ").unwrap_or(error).to_owned());
    match to {
        ProcessState::Crashed => error().unwrap_or_else(|| "exited".to_owned()),
        ProcessState::Failed => error().unwrap_or_else(|| "restart attempts used up".to_owned()),
        ProcessState::Retrying => "restart scheduled".to_owned(),
        ProcessState::Running if from == ProcessState::Starting => "startup check passed".to_owned(),
        ProcessState::Running | ProcessState::Starting => "started".to_owned(),
        ProcessState::Stopping => "stop requested".to_owned(),
        ProcessState::Stopped => "stopped".to_owned(),
        ProcessState::Disabled => "disabled".to_owned(),
    }
}

/// The wire names of the configuration fields that differ.
fn changed_fields(before: &ProcessConfig, after: &ProcessConfig) -> Vec<String> {
    let (Ok(serde_json::Value::Object(before)), Ok(serde_json::Value::Object(after))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return Vec::new();
    };
    let mut res: Vec<String> =
        after.iter().filter(|(key, value)| before.get(*key) != Some(value)).map(|(key, _)| key.clone()).collect();
    res.extend(before.keys().filter(|key| !after.contains_key(*key)).cloned());
    res
}

/// Puts `kinds` about the process `entry` on the bus and runs its hook for each state change. An event no hook
/// gets goes to the bus as it is: not copied first (its process id, its reason) only for the copy to be dropped,
/// as [`Events::publish`] does to answer it (about four events per restart of a crash storm; issue 19).
pub(crate) fn emit(shared: &Shared, entry: &ProcessEntry, kinds: Vec<EventKind>) {
    for kind in kinds {
        let hook = entry.config.on_state_change.as_ref().filter(|_| matches!(kind, EventKind::State { .. }));
        match hook {
            Some(hook) => {
                let event = shared.events.publish(kind, entry.config.is_remote);
                run_hook(shared, &entry.config, hook, event);
            }
            None => {
                shared.events.bus.publish(Event::now(kind), entry.config.is_remote);
            }
        }
    }
}

/// Publishes the event of a check result: `streak` failures in a row (0 for a pass that matters, `None` for none).
pub(crate) fn emit_check(shared: &Shared, entry: &ProcessEntry, passed: bool, streak: Option<u32>) {
    let Some(streak) = streak else { return };
    let process_id = entry.config.id.clone();
    let kind = if passed {
        EventKind::CheckPassed { process_id }
    } else {
        EventKind::CheckFailed { process_id, consecutive_failures: streak }
    };
    shared.events.publish(kind, entry.config.is_remote);
}

/// Starts `hook` for `event` on a task of its own: no shell, its own process group, the event as JSON on stdin and
/// in `PM_EVENT_*` variables, its output into the monitor's log; killed (with its group) after its timeout.
fn run_hook(shared: &Shared, config: &ProcessConfig, hook: &StateChangeHook, event: Event) {
    let id = config.id.clone();
    let Ok(permit) = shared.events.hooks.clone().try_acquire_owned() else {
        tracing::warn!(process = %id, event = %event.id, "onStateChange hook skipped: {MAX_RUNNING_HOOKS} hooks already running");
        return;
    };
    let cwd = match &config.working_directory {
        Some(dir) => shared.default_cwd.join(dir),
        None => shared.default_cwd.clone(),
    };
    let program =
        crate::spawn::resolve_program(&hook.command, &cwd, config.environment.as_ref().and_then(|env| env.get("PATH")));
    // An untrusted registration's hook is checked like its command, at each run, and run from the checked file.
    let checked = if config.untrusted {
        let policy = shared.exec_policy.read().expect("exec policy").clone();
        match crate::execcheck::check(&hook.command, &policy) {
            Ok(checked) => Some(checked),
            Err(reason) => {
                tracing::warn!(process = %id, event = %event.id, "onStateChange hook not run: {reason}");
                return;
            }
        }
    } else {
        None
    };
    let program = checked.as_ref().map_or(program, |checked| checked.path.clone());
    let json = serde_json::to_string(&event).unwrap_or_default();
    let mut command = hook_command(shared, config, hook, &program, &cwd);
    for (key, value) in hook_env(&event, &json) {
        command.env(key, value);
    }
    if let Some(checked) = &checked {
        if exec_from_checked(&mut command, shared, checked, &program, hook, &hook_env(&event, &json)).is_none() {
            tracing::warn!(process = %id, "onStateChange hook not run: an argument or variable holds NUL");
            return;
        }
    }
    let run = HookRun {
        id,
        command_name: hook.command.clone(),
        timeout: Duration::from_millis(hook.timeout_ms.unwrap_or(StateChangeHook::DEFAULT_TIMEOUT_MS)),
        json,
    };
    let owned = shared.owned.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let spawned = spawn_owned(&owned, &mut command);
        // The checked descriptor must stay open until the child has exec'd from it.
        drop(checked);
        let child = match spawned {
            Ok(child) => child,
            Err(err) => {
                tracing::warn!(process = %run.id, hook = %run.command_name, "onStateChange hook cannot start: {err}");
                return;
            }
        };
        let _forget = ForgetOwned(owned, child.id());
        run.supervise(child).await;
    });
}

/// The hook's command before its `PM_EVENT_*` variables: no stdin/stdout/stderr inherited, a process group of its
/// own, killed on drop, and the monitor's extra variables without the markers of a managed process (and without
/// those hidden from untrusted registrations).
fn hook_command(
    shared: &Shared,
    config: &ProcessConfig,
    hook: &StateChangeHook,
    program: &std::path::Path,
    cwd: &std::path::Path,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command
        .args(&hook.args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        // Not a managed process: without the markers the orphan scan looks for.
        .env_remove(crate::orphans::OWNER_VAR)
        .env_remove(crate::orphans::PROCESS_VAR);
    for (key, value) in &shared.extra_env {
        command.env(key, value);
    }
    if config.untrusted {
        for name in crate::execcheck::HIDDEN_FROM_UNTRUSTED {
            command.env_remove(name);
        }
    }
    command
}

/// Makes `command` exec the checked file of an untrusted hook, with the environment of an untrusted child plus the
/// monitor's extra variables and the hook's `vars`. `None` when an argument or variable holds NUL.
fn exec_from_checked(
    command: &mut tokio::process::Command,
    shared: &Shared,
    checked: &crate::execcheck::Checked,
    program: &std::path::Path,
    hook: &StateChangeHook,
    vars: &[(&'static str, String)],
) -> Option<()> {
    let extra = shared
        .extra_env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .chain(vars.iter().map(|(name, value)| (*name, value.as_str())))
        .map(|(name, value)| (std::ffi::OsStr::new(name), std::ffi::OsStr::new(value)));
    let mut env = crate::execcheck::child_env(true, extra);
    env.retain(|(name, _)| name != crate::orphans::OWNER_VAR && name != crate::orphans::PROCESS_VAR);
    let exec = crate::execcheck::FdExec::new(checked, program, hook.args.iter().map(String::as_str), &env)?;
    crate::execcheck::before_exec(command.as_std_mut(), None, Some(exec));
    Some(())
}

/// Spawns `command`, its pid known as ours (in `owned`) across the spawn, so that the reaper of re-parented strays
/// (the process-group fallback of containment) never reaps it.
fn spawn_owned(
    owned: &std::sync::Mutex<HashSet<u32>>,
    command: &mut tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    let mut owned = owned.lock().expect("owned lock");
    let spawned = command.spawn();
    if let Some(pid) = spawned.as_ref().ok().and_then(|child| child.id()) {
        owned.insert(pid);
    }
    spawned
}

/// Takes a hook's pid out of the monitor's own processes when the hook is done.
struct ForgetOwned(Arc<std::sync::Mutex<HashSet<u32>>>, Option<u32>);

impl Drop for ForgetOwned {
    fn drop(&mut self) {
        if let Some(pid) = self.1 {
            self.0.lock().expect("owned lock").remove(&pid);
        }
    }
}

/// A started hook as its task sees it.
struct HookRun {
    /// The process the hook is about.
    id: String,
    /// The hook's command as configured, for messages.
    command_name: String,
    timeout: Duration,
    /// The event, written to the hook's stdin.
    json: String,
}

impl HookRun {
    /// Writes the event to the hook's stdin and waits for it to exit, both within the timeout; logs how it ended,
    /// and kills its process group when it ran too long.
    async fn supervise(&self, mut child: tokio::process::Child) {
        let (id, command_name, timeout) = (&self.id, &self.command_name, self.timeout);
        let pid = child.id();
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that does not read its stdin must not hold this up: the write is bounded by the timeout too.
            let _ = tokio::time::timeout(timeout, async {
                let _ = stdin.write_all(self.json.as_bytes()).await;
                let _ = stdin.write_all(b"\n").await;
            })
            .await;
        }
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(output)) if output.status.success() => {
                tracing::debug!(process = %id, hook = %command_name, "onStateChange hook done");
            }
            Ok(Ok(output)) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let stderr = stderr.trim();
                let stderr: String = stderr.chars().take(2000).collect();
                tracing::warn!(process = %id, hook = %command_name, "onStateChange hook failed ({}): {stderr}", output.status);
            }
            Ok(Err(err)) => tracing::warn!(process = %id, hook = %command_name, "onStateChange hook: {err}"),
            Err(_) => {
                tracing::warn!(process = %id, hook = %command_name, "onStateChange hook ran longer than {timeout:?}; killing its process group");
                if let Some(pid) = pid {
                    crate::os::signal_group(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// The `PM_EVENT_*` variables of a hook.
fn hook_env(event: &Event, json: &str) -> Vec<(&'static str, String)> {
    let mut res = vec![
        ("PM_EVENT_JSON", json.to_owned()),
        ("PM_EVENT_ID", event.id.clone()),
        ("PM_EVENT_TYPE", event.kind.name().to_owned()),
    ];
    res.push((
        "PM_EVENT_TIME",
        serde_json::to_value(event.time).ok().and_then(|it| it.as_str().map(str::to_owned)).unwrap_or_default(),
    ));
    if let EventKind::State { process_id, from, to, pid, reason, exit_code, signal } = &event.kind {
        res.push(("PM_PROCESS_ID", process_id.clone()));
        res.push(("PM_EVENT_FROM", from.to_string()));
        res.push(("PM_EVENT_TO", to.to_string()));
        res.push(("PM_EVENT_REASON", reason.clone()));
        if let Some(pid) = pid {
            res.push(("PM_EVENT_PID", pid.to_string()));
        }
        if let Some(code) = exit_code {
            res.push(("PM_EVENT_EXIT_CODE", code.to_string()));
        }
        if let Some(signal) = signal {
            res.push(("PM_EVENT_SIGNAL", signal.to_string()));
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use pm_core::{ProcessConfig, Timestamp};

    use super::*;

    fn entry(state: ProcessState) -> ProcessEntry {
        let mut entry = ProcessEntry::new(ProcessConfig::new("api", "api", "/bin/true"), Timestamp::now());
        entry.state = state;
        entry
    }

    #[test]
    fn a_crash_names_its_signal_and_schedules_a_restart() {
        let mut running = entry(ProcessState::Running);
        running.pid = Some(42);
        let mut crashed = entry(ProcessState::Crashed);
        crashed.last_signal = Some(9);
        crashed.last_error = Some("process killed by signal 9".to_owned());
        let kinds = changes(&running, &crashed, None);
        assert_eq!(
            kinds,
            [EventKind::State {
                process_id: "api".to_owned(),
                from: ProcessState::Running,
                to: ProcessState::Crashed,
                pid: Some(42),
                reason: "killed by signal 9".to_owned(),
                exit_code: None,
                signal: Some(9),
            }]
        );
        let mut retrying = crashed.clone();
        retrying.state = ProcessState::Retrying;
        retrying.restart_attempts = 1;
        let kinds = changes(&crashed, &retrying, Some(Duration::from_millis(250)));
        assert_eq!(kinds[1], EventKind::RestartScheduled { process_id: "api".to_owned(), attempt: 1, delay_ms: 250 });
        assert!(changes(&retrying, &retrying, None).is_empty());
    }

    #[test]
    fn config_changes_name_their_fields() {
        let before = entry(ProcessState::Stopped);
        let mut after = before.clone();
        after.config.autostart = false;
        after.config.args = vec!["x".to_owned()];
        let kinds = changes(&before, &after, None);
        let [EventKind::ConfigChanged { fields, .. }] = kinds.as_slice() else { panic!("{kinds:?}") };
        assert_eq!(fields, &["args", "autostart"]);
    }
}
