//! What a stack file changes in the registry (`diff`), and carrying it out (`apply`) through the local client:
//! a running monitor picks each change up at once; with none running, the registry file is edited and the
//! client stops processes itself where a change implies it.

use std::collections::BTreeSet;

use pm_client::ProcessMonitorClient;
use pm_core::{ProcessConfig, ProcessEntry, Registry, SettingsUpdate};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::stack::file::{Stack, PROVENANCE_KEY};

/// Keys whose change needs a new run to take effect.
pub(crate) const RESTART_KEYS: &[&str] = &["command", "args", "environment", "workingDirectory"];

/// One key's change.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KeyChange {
    pub key: String,
    /// `null` when absent (the default applies).
    pub from: Value,
    pub to: Value,
}

/// A process the file changes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Changed {
    pub id: String,
    pub keys: Vec<KeyChange>,
    /// A key of [`RESTART_KEYS`] changed.
    pub needs_restart: bool,
    /// It runs now, so applying restarts it.
    pub restarts: bool,
    /// Registered outside this file (taken over with `--adopt`).
    pub adopted: bool,
    #[serde(skip)]
    pub config: ProcessConfig,
}

/// Everything a stack file changes.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Plan {
    #[serde(serialize_with = "ids")]
    pub added: Vec<ProcessConfig>,
    pub changed: Vec<Changed>,
    pub unchanged: Vec<String>,
    /// Created from this file and no longer listed (removed with `--prune`).
    pub removed: Vec<String>,
    /// Whether `removed` is acted on.
    pub prune: bool,
    pub settings: Vec<KeyChange>,
    #[serde(skip)]
    pub updates: Vec<SettingsUpdate>,
}

fn ids<S: serde::Serializer>(configs: &[ProcessConfig], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(configs.iter().map(|config| &config.id))
}

impl Plan {
    /// Whether applying changes nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && (self.removed.is_empty() || !self.prune)
            && self.settings.is_empty()
    }
}

/// Options of a plan.
pub(crate) struct PlanOptions {
    /// Remove what the file created and no longer lists.
    pub prune: bool,
    /// Take over processes registered outside this file.
    pub adopt: bool,
}

/// Compares the file with the registry. Fails (and nothing is to be done) when a process or setting cannot be
/// applied.
pub(crate) fn plan(stack: &Stack, registry: &Registry, options: &PlanOptions) -> anyhow::Result<Plan> {
    let mark = stack.mark();
    let graph = check_dependencies(stack, registry)?;
    let mut res = Plan { prune: options.prune, ..Plan::default() };
    for config in &stack.processes {
        compare(&mut res, config, registry, &mark, options)?;
    }
    res.removed = removed_in_order(stack, registry, &mark);
    if options.prune {
        check_prune(&res.removed, &graph)?;
    }
    plan_settings(&mut res, stack, registry)?;
    Ok(res)
}

/// Checks the file's `dependsOn`: in start order within the file, every dependency listed or registered, and no
/// cycle with the processes registered otherwise (the monitor would refuse the registration that closes it
/// half-way through applying). Answers the dependency graph with the file applied.
fn check_dependencies(stack: &Stack, registry: &Registry) -> anyhow::Result<pm_core::Graph> {
    start_order_of(stack.processes.iter())?;
    let listed: BTreeSet<&str> = stack.processes.iter().map(|config| config.id.as_str()).collect();
    for config in &stack.processes {
        for dep in dependencies(config) {
            if !listed.contains(dep.as_str()) && !registry.processes.contains_key(&dep) {
                anyhow::bail!("{}: dependsOn names {dep}, which is neither in this file nor registered", config.id);
            }
        }
    }
    let mut graph = pm_core::graph_of(registry);
    for config in &stack.processes {
        graph.insert(config.id.clone(), config.depends_on.keys().cloned().collect());
    }
    if let Some(cycle) = pm_core::find_cycle(&graph) {
        anyhow::bail!("dependsOn would form a cycle with the registered processes: {}", cycle.join(" -> "));
    }
    Ok(graph)
}

/// Files one process of the file under added, unchanged or changed.
fn compare(
    res: &mut Plan,
    config: &ProcessConfig,
    registry: &Registry,
    mark: &str,
    options: &PlanOptions,
) -> anyhow::Result<()> {
    let Some(entry) = registry.processes.get(&config.id) else {
        res.added.push(config.clone());
        return Ok(());
    };
    if entry.config.partner {
        anyhow::bail!("{}: is the partner monitor's entry; a stack file cannot declare it", config.id);
    }
    let adopted = provenance(entry) != Some(mark);
    if adopted && !options.adopt {
        let by = match provenance(entry) {
            Some(other) => format!("by the stack file {other}"),
            None => "outside a stack file".to_owned(),
        };
        anyhow::bail!(
            "{}: already registered {by}; deregister it first, or pass --adopt to manage it from this file",
            config.id
        );
    }
    let keys = key_changes(&entry.config, config);
    if keys.is_empty() && !adopted {
        res.unchanged.push(config.id.clone());
        return Ok(());
    }
    let needs_restart = keys.iter().any(|change| RESTART_KEYS.contains(&change.key.as_str()));
    res.changed.push(Changed {
        id: config.id.clone(),
        restarts: needs_restart && entry.state.has_child(),
        needs_restart,
        keys,
        adopted,
        config: config.clone(),
    });
    Ok(())
}

/// The processes this file created and no longer lists, dependents first (registry order should the stored
/// entries form a cycle).
fn removed_in_order(stack: &Stack, registry: &Registry, mark: &str) -> Vec<String> {
    let listed: BTreeSet<&str> = stack.processes.iter().map(|config| config.id.as_str()).collect();
    let removed: Vec<&ProcessConfig> = registry
        .processes
        .values()
        .filter(|entry| provenance(entry) == Some(mark) && !listed.contains(entry.config.id.as_str()))
        .map(|entry| &entry.config)
        .collect();
    let order = start_order_of(removed.iter().copied())
        .unwrap_or_else(|_| removed.iter().map(|config| config.id.clone()).collect());
    order.into_iter().rev().collect()
}

/// A process that stays (in the file or registered otherwise) and depends on one to prune would make the monitor
/// refuse the removal half-way through: refused up front.
fn check_prune(removed: &[String], graph: &pm_core::Graph) -> anyhow::Result<()> {
    for id in removed {
        let kept: Vec<String> = pm_core::direct_dependents(graph, id)
            .into_iter()
            .filter(|dependent| !removed.contains(dependent))
            .collect();
        if !kept.is_empty() {
            anyhow::bail!("{id}: cannot be pruned: {} depend(s) on it; change or remove them first", kept.join(", "));
        }
    }
    Ok(())
}

/// Settings: checked on a copy (all or nothing), listed where they differ.
fn plan_settings(res: &mut Plan, stack: &Stack, registry: &Registry) -> anyhow::Result<()> {
    let mut scratch = registry.clone();
    for (key, update) in &stack.settings {
        let before = setting_value(&scratch, key);
        update.apply(&mut scratch).map_err(|err| anyhow::format_err!("{key}: {err}"))?;
        let after = setting_value(&scratch, key);
        if before != after {
            res.settings.push(KeyChange { key: key.clone(), from: before, to: after });
            res.updates.push(update.clone());
        }
    }
    Ok(())
}

/// The stack file a process was created from.
pub(crate) fn provenance(entry: &ProcessEntry) -> Option<&str> {
    entry.extra.get(PROVENANCE_KEY).and_then(Value::as_str)
}

fn setting_value(registry: &Registry, key: &str) -> Value {
    let access = serde_json::to_value(&registry.remote_access).unwrap_or(Value::Null);
    match key {
        "trustedHosts" | "executableWhitelist" | "executableBlacklist" => access[key].clone(),
        "standaloneMode" => json!(registry.standalone_mode),
        "remoteAccess" => {
            let keys: Map<String, Value> = crate::stack::keys::REMOTE_ACCESS
                .iter()
                .map(|name| ((*name).to_owned(), access[*name].clone()))
                .collect();
            Value::Object(keys)
        }
        _ => Value::Null,
    }
}

/// The keys whose values differ, in the order of the configuration's keys.
fn key_changes(from: &ProcessConfig, to: &ProcessConfig) -> Vec<KeyChange> {
    let as_map = |config: &ProcessConfig| match serde_json::to_value(config) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let (from, to) = (as_map(from), as_map(to));
    let mut keys: Vec<&String> = to.keys().collect();
    keys.extend(from.keys().filter(|key| !to.contains_key(*key)));
    keys.into_iter()
        .filter(|key| from.get(*key) != to.get(*key))
        .map(|key| KeyChange {
            key: key.clone(),
            from: from.get(key).cloned().unwrap_or(Value::Null),
            to: to.get(key).cloned().unwrap_or(Value::Null),
        })
        .collect()
}

/// The ids a configuration depends on: the keys of its `dependsOn` (read from its serialized form, so that
/// this follows the field whatever its type: a map keyed by id, or a list of ids).
pub(crate) fn dependencies(config: &ProcessConfig) -> Vec<String> {
    let value = serde_json::to_value(config).unwrap_or(Value::Null);
    match value.get("dependsOn") {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// The order to start (and register) processes in: file order, except that a process comes after those of
/// the list it depends on. Dependencies outside the list are ignored here; a cycle is an error.
pub(crate) fn start_order(processes: &[(String, Vec<String>)]) -> anyhow::Result<Vec<String>> {
    let ids: BTreeSet<&str> = processes.iter().map(|(id, _)| id.as_str()).collect();
    let mut placed: Vec<String> = Vec::with_capacity(processes.len());
    let mut left: Vec<&(String, Vec<String>)> = processes.iter().collect();
    while !left.is_empty() {
        let ready = left.iter().position(|(_, deps)| {
            deps.iter().all(|dep| !ids.contains(dep.as_str()) || placed.iter().any(|it| it == dep))
        });
        let Some(idx) = ready else {
            let names: Vec<&str> = left.iter().map(|(id, _)| id.as_str()).collect();
            anyhow::bail!("dependsOn forms a cycle among {}", names.join(", "));
        };
        placed.push(left.remove(idx).0.clone());
    }
    Ok(placed)
}

/// [`start_order`] of configurations.
pub(crate) fn start_order_of<'a>(configs: impl Iterator<Item = &'a ProcessConfig>) -> anyhow::Result<Vec<String>> {
    let list: Vec<(String, Vec<String>)> = configs.map(|config| (config.id.clone(), dependencies(config))).collect();
    start_order(&list)
}

/// One thing `apply` did.
#[derive(Debug, Serialize)]
pub(crate) struct Done {
    pub id: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Carries the plan out. Settings first, then removals (with `--prune`), changes, and new processes, in file
/// order; stops on the first failure (what was done so far is returned with the error).
pub(crate) fn apply(stack: &Stack, plan: &Plan, client: &ProcessMonitorClient) -> anyhow::Result<Vec<Done>> {
    let mut done = Vec::new();
    let res = apply_steps(stack, plan, client, &mut done);
    match res {
        Ok(()) => Ok(done),
        Err(err) => {
            let so_far: Vec<String> = done.iter().map(|it| format!("{}: {}", it.id, it.action)).collect();
            Err(err.context(format!("applying stopped; done before: [{}]", so_far.join(", "))))
        }
    }
}

fn apply_steps(stack: &Stack, plan: &Plan, client: &ProcessMonitorClient, done: &mut Vec<Done>) -> anyhow::Result<()> {
    let monitor_runs = client.monitor()?.is_some();
    let mark = || {
        let mut keys = Map::new();
        keys.insert(PROVENANCE_KEY.to_owned(), Value::String(stack.mark()));
        keys
    };
    for (change, update) in plan.settings.iter().zip(&plan.updates) {
        client.update_settings(update.clone())?;
        done.push(Done { id: change.key.clone(), action: "set".to_owned(), state: None });
    }
    if plan.prune {
        for id in &plan.removed {
            client.deregister(id)?;
            done.push(Done { id: id.clone(), action: "removed".to_owned(), state: None });
        }
    }
    for change in &plan.changed {
        let config = &change.config;
        let enabled_changed = change.keys.iter().any(|key| key.key == "enabled");
        if enabled_changed && !config.enabled {
            client.disable(&config.id)?;
        }
        client.update_config(config.clone(), mark())?;
        if enabled_changed && config.enabled {
            client.enable(&config.id)?;
        }
        let names: Vec<&str> = change.keys.iter().map(|key| key.key.as_str()).collect();
        let mut action = if names.is_empty() { "adopted".to_owned() } else { format!("updated {}", names.join(", ")) };
        let mut state = None;
        if change.restarts && config.enabled {
            let status = client.restart(&config.id)?;
            action.push_str("; restarted");
            state = Some(status.state.to_string());
        } else if change.needs_restart {
            action.push_str(" (applies at its next start)");
        }
        done.push(Done { id: config.id.clone(), action, state });
    }
    let order = start_order_of(plan.added.iter())?;
    let added = order.iter().filter_map(|id| plan.added.iter().find(|config| config.id == *id));
    for config in added {
        client.register_with_keys(config.clone(), mark())?;
        let mut action = "registered".to_owned();
        let mut state = None;
        if config.autostart && config.enabled {
            if monitor_runs {
                let status = client.start(&config.id)?;
                action.push_str("; started");
                state = Some(status.state.to_string());
            } else {
                action.push_str(" (starts with the monitor)");
            }
        }
        done.push(Done { id: config.id.clone(), action, state });
    }
    Ok(())
}

/// The plan as text, one line per process (and per changed key).
pub(crate) fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let line = |out: &mut String, text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    for config in &plan.added {
        let starts = if config.autostart && config.enabled { "starts" } else { "stays stopped" };
        line(&mut out, format!("+ {} (new; {starts})", config.id));
    }
    for change in &plan.changed {
        let what = if change.restarts {
            "restarts".to_owned()
        } else if change.needs_restart {
            "not running: applies at its next start".to_owned()
        } else {
            "no restart".to_owned()
        };
        let adopted = if change.adopted { "; taken over from outside this file" } else { "" };
        line(&mut out, format!("~ {} ({what}{adopted})", change.id));
        for key in &change.keys {
            line(&mut out, format!("    {}: {} -> {}", key.key, shown(&key.from), shown(&key.to)));
        }
    }
    for id in &plan.removed {
        let what = if plan.prune { "removed" } else { "no longer listed; apply --prune removes it" };
        line(&mut out, format!("- {id} ({what})"));
    }
    for id in &plan.unchanged {
        line(&mut out, format!("= {id} (unchanged)"));
    }
    for key in &plan.settings {
        line(&mut out, format!("~ setting {}: {} -> {}", key.key, shown(&key.from), shown(&key.to)));
    }
    if plan.is_empty() {
        line(&mut out, "no changes".to_owned());
    }
    out
}

fn shown(value: &Value) -> String {
    match value {
        Value::Null => "(default)".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(list: &[(&str, &[&str])], expected: &[&str]) {
        let list: Vec<(String, Vec<String>)> = list
            .iter()
            .map(|(id, deps)| ((*id).to_owned(), deps.iter().map(|dep| (*dep).to_owned()).collect()))
            .collect();
        assert_eq!(start_order(&list).unwrap(), expected);
    }

    #[test]
    fn start_order_puts_dependencies_first_and_keeps_file_order_otherwise() {
        check(&[("a", &[]), ("b", &[]), ("c", &[])], &["a", "b", "c"]);
        check(&[("web", &["db"]), ("db", &[]), ("cache", &[])], &["db", "web", "cache"]);
        check(&[("web", &["db", "cache"]), ("db", &["cache"]), ("cache", &[])], &["cache", "db", "web"]);
        check(&[("web", &["elsewhere"]), ("db", &[])], &["web", "db"]);
        let cycle = vec![("a".to_owned(), vec!["b".to_owned()]), ("b".to_owned(), vec!["a".to_owned()])];
        let err = start_order(&cycle).unwrap_err().to_string();
        assert!(err.contains("cycle among a, b"), "{err}");
    }
}
