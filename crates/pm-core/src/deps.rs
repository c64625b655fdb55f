//! Service dependencies: the conditions a process waits for, and the pure graph rules (cycles, start and stop
//! order, who depends on whom) that the monitor and its clients apply.
//!
//! A graph maps each process id to the ids it depends on. Ids a process depends on need not be registered
//! (yet); they are leaves of the graph.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ProcessState;

/// When a dependency counts as met (wire name `DependencyCondition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DependencyCondition {
    /// Its child has been spawned (`starting`, `running`).
    Started,
    /// Its startup check passed, or it is `running` when it has no startup check.
    Healthy,
    /// It exited with code 0 since the dependent's start was requested.
    CompletedSuccessfully,
}

impl DependencyCondition {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::Started => "started",
            DependencyCondition::Healthy => "healthy",
            DependencyCondition::CompletedSuccessfully => "completedSuccessfully",
        }
    }

    /// Whether a dependency observed as `observed` meets this condition for a dependent whose start was
    /// requested at `requested_at` (wall clock).
    pub fn holds(self, observed: &Observed, requested_at: crate::Timestamp) -> bool {
        match self {
            DependencyCondition::Started => {
                matches!(observed.state, ProcessState::Running)
                    || observed.state == ProcessState::Starting && observed.spawned
            }
            DependencyCondition::Healthy => observed.state == ProcessState::Running,
            DependencyCondition::CompletedSuccessfully => {
                observed.last_exit_code == Some(0)
                    && !observed.state.has_child()
                    && observed.last_stopped_at.is_some_and(|at| at >= requested_at)
            }
        }
    }
}

impl std::fmt::Display for DependencyCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DependencyCondition {
    type Err = crate::Error;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [DependencyCondition::Started, DependencyCondition::Healthy, DependencyCondition::CompletedSuccessfully]
            .into_iter()
            .find(|condition| condition.as_str() == text)
            .ok_or_else(|| {
                crate::Error::InvalidField(format!(
                    "dependsOn condition {text:?} (must be started, healthy or completedSuccessfully)"
                ))
            })
    }
}

/// Read by name, with a refusal that names the `dependsOn` field and the conditions there are.
impl<'de> Deserialize<'de> for DependencyCondition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // The bare reason: whoever reports the parse error adds its own "Missing or invalid field" prefix.
        text.parse().map_err(|err: crate::Error| match err {
            crate::Error::InvalidField(reason) => serde::de::Error::custom(reason),
            other => serde::de::Error::custom(other.to_string()),
        })
    }
}

/// What a dependency condition looks at of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Its state.
    pub state: ProcessState,
    /// Whether a child has been spawned (a process waiting for its own dependencies is `starting` without one).
    pub spawned: bool,
    /// Exit code of its last exit.
    pub last_exit_code: Option<i32>,
    /// When it last stopped or exited.
    pub last_stopped_at: Option<crate::Timestamp>,
}

/// Process id → the ids it depends on.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// A cycle in `graph`, as the ids along it with the first repeated at the end (`a → b → a`), or `None`.
/// A self-dependency is the cycle `a → a`. Deterministic: the cycle found first in id order.
pub fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    for root in graph.keys() {
        if marks.contains_key(root.as_str()) {
            continue;
        }
        // Iterative depth-first search: the path and, per step, the dependencies still to visit.
        let mut path: Vec<&str> = vec![root];
        let mut todo: Vec<Vec<&str>> = vec![deps_of(graph, root)];
        marks.insert(root, Mark::Active);
        while let Some(next) = todo.last_mut() {
            match next.pop() {
                Some(dep) => match marks.get(dep) {
                    Some(Mark::Active) => {
                        let from = path.iter().position(|id| *id == dep).unwrap_or(0);
                        let mut cycle: Vec<String> = path[from..].iter().map(|id| id.to_string()).collect();
                        cycle.push(dep.to_owned());
                        return Some(cycle);
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(dep, Mark::Active);
                        path.push(dep);
                        todo.push(deps_of(graph, dep));
                    }
                },
                None => {
                    todo.pop();
                    if let Some(done) = path.pop() {
                        marks.insert(done, Mark::Done);
                    }
                }
            }
        }
    }
    None
}

/// Dependencies of `id`, in reverse id order (popped from the back, so visited in id order).
fn deps_of<'a>(graph: &'a Graph, id: &str) -> Vec<&'a str> {
    graph.get(id).map(|deps| deps.iter().rev().map(String::as_str).collect()).unwrap_or_default()
}

/// Refuses `config` when its `dependsOn` would close a cycle with the processes of `registry` (the one it
/// replaces, if any, left out).
pub fn check_new_dependencies(registry: &crate::Registry, config: &crate::ProcessConfig) -> Result<(), crate::Error> {
    let mut graph = graph_of(registry);
    graph.insert(config.id.clone(), config.depends_on.keys().cloned().collect());
    check_acyclic(&graph)
}

/// The processes of `registry` that depend on `id` directly.
pub fn dependents_in(registry: &crate::Registry, id: &str) -> Vec<String> {
    registry
        .processes
        .iter()
        .filter(|(other, entry)| *other != id && entry.config.depends_on.contains_key(id))
        .map(|(other, _)| other.clone())
        .collect()
}

/// Why `id` cannot be started with its dependencies (`Cannot start api: its dependency db is disabled`), judged
/// from `entries` (id → entry; unregistered dependencies are waited for, not refused); `None` when it can.
pub fn start_blocker<'a>(
    entries: impl Fn(&str) -> Option<&'a crate::ProcessEntry>,
    graph: &Graph,
    id: &str,
) -> Option<String> {
    for dep in start_order(graph, &[id.to_owned()]) {
        let Some(entry) = entries(&dep).filter(|_| dep != id) else { continue };
        if !entry.config.enabled || entry.state == ProcessState::Disabled {
            return Some(format!("Cannot start {id}: its dependency {dep} is disabled"));
        }
        if entry.state == ProcessState::Failed {
            let why = entry.last_error.as_deref().map(|err| format!(" ({err})")).unwrap_or_default();
            return Some(format!("Cannot start {id}: its dependency {dep} has failed{why}"));
        }
    }
    None
}

/// The dependency graph of the processes of `registry`.
pub fn graph_of(registry: &crate::Registry) -> Graph {
    registry
        .processes
        .iter()
        .map(|(id, entry)| (id.clone(), entry.config.depends_on.keys().cloned().collect()))
        .collect()
}

/// Refuses a graph with a cycle, naming it (`dependsOn: cycle a -> b -> a`).
pub fn check_acyclic(graph: &Graph) -> Result<(), crate::Error> {
    match find_cycle(graph) {
        None => Ok(()),
        Some(cycle) => Err(crate::Error::InvalidField(format!("dependsOn: dependency cycle {}", cycle.join(" -> ")))),
    }
}

/// `targets` and everything they depend on (transitively), dependencies before their dependents; ties in id
/// order. Ids of `graph` that `targets` do not reach are left out; a cycle's members come in id order after
/// whatever they depend on outside it.
pub fn start_order(graph: &Graph, targets: &[String]) -> Vec<String> {
    let mut wanted = BTreeSet::new();
    let mut stack: Vec<&str> = targets.iter().map(String::as_str).collect();
    while let Some(id) = stack.pop() {
        if wanted.insert(id.to_owned()) {
            stack.extend(graph.get(id).into_iter().flatten().map(String::as_str));
        }
    }
    layers(graph, &wanted).into_iter().flatten().collect()
}

/// `ids` in groups that can start together: every process comes in a later group than each of its
/// dependencies among `ids` (dependencies outside `ids` are ignored). Members of a cycle come last, together.
pub fn layers(graph: &Graph, ids: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut left: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    while !left.is_empty() {
        let ready: Vec<&str> = left
            .iter()
            .copied()
            .filter(|id| {
                graph.get(*id).into_iter().flatten().all(|dep| !ids.contains(dep) || placed.contains(dep.as_str()))
            })
            .collect();
        let layer = if ready.is_empty() { left.iter().copied().collect() } else { ready };
        for id in &layer {
            left.remove(id);
            placed.insert(id);
        }
        out.push(layer.into_iter().map(str::to_owned).collect());
    }
    out
}

/// The processes that depend on `id`, directly or through others, in the order to stop them: every process
/// before each of its dependencies (`id` itself is not included).
pub fn dependents_stop_order(graph: &Graph, id: &str) -> Vec<String> {
    let mut dependents = BTreeSet::new();
    let mut stack = vec![id.to_owned()];
    while let Some(current) = stack.pop() {
        for (other, deps) in graph {
            if deps.contains(&current) && other != id && dependents.insert(other.clone()) {
                stack.push(other.clone());
            }
        }
    }
    let mut order: Vec<String> = layers(graph, &dependents).into_iter().flatten().collect();
    order.reverse();
    order
}

/// The processes that depend on `id` directly.
pub fn direct_dependents(graph: &Graph, id: &str) -> Vec<String> {
    graph.iter().filter(|(other, deps)| *other != id && deps.contains(id)).map(|(other, _)| other.clone()).collect()
}

/// The groups in which to stop every process of `graph` at shutdown: dependents before their dependencies.
pub fn shutdown_layers(graph: &Graph) -> Vec<Vec<String>> {
    let ids: BTreeSet<String> = graph.keys().cloned().collect();
    let mut out = layers(graph, &ids);
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        edges.iter().map(|(id, deps)| (id.to_string(), deps.iter().map(|d| d.to_string()).collect())).collect()
    }

    fn strings(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn cycles_are_found_and_named() {
        type Edges<'a> = &'a [(&'a str, &'a [&'a str])];
        let cases: &[(Edges, Option<&[&str]>)] = &[
            (&[], None),
            (&[("a", &[])], None),
            (&[("a", &["a"])], Some(&["a", "a"])),
            (&[("a", &["b"]), ("b", &["a"])], Some(&["a", "b", "a"])),
            (&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])], Some(&["a", "b", "c", "a"])),
            (&[("a", &["b"]), ("b", &["c"]), ("c", &["b"])], Some(&["b", "c", "b"])),
            (&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])], None),
            (&[("a", &["missing"])], None),
            (&[("web", &["api"]), ("api", &["db", "migrate"]), ("migrate", &["db"])], None),
        ];
        for (edges, want) in cases {
            let got = find_cycle(&graph(edges));
            assert_eq!(got, want.map(strings), "{edges:?}");
            assert_eq!(check_acyclic(&graph(edges)).is_ok(), want.is_none());
        }
        let err = check_acyclic(&graph(&[("a", &["b"]), ("b", &["a"])])).unwrap_err().to_string();
        assert!(err.contains("a -> b -> a"), "{err}");
    }

    #[test]
    fn start_order_puts_dependencies_first() {
        let chain = graph(&[("web", &["api"]), ("api", &["migrate", "db"]), ("migrate", &["db"]), ("db", &[])]);
        assert_eq!(start_order(&chain, &strings(&["web"])), strings(&["db", "migrate", "api", "web"]));
        assert_eq!(start_order(&chain, &strings(&["migrate"])), strings(&["db", "migrate"]));
        assert_eq!(start_order(&chain, &strings(&["db"])), strings(&["db"]));
        // An id nothing registered still comes first (it is waited for).
        let open = graph(&[("a", &["later"])]);
        assert_eq!(start_order(&open, &strings(&["a"])), strings(&["later", "a"]));
        // Independent processes share a layer.
        let fan = graph(&[("a", &[]), ("b", &[]), ("c", &["a", "b"])]);
        let all: BTreeSet<String> = fan.keys().cloned().collect();
        assert_eq!(layers(&fan, &all), vec![strings(&["a", "b"]), strings(&["c"])]);
    }

    #[test]
    fn stop_order_puts_dependents_first() {
        let chain = graph(&[("web", &["api"]), ("api", &["migrate", "db"]), ("migrate", &["db"]), ("db", &[])]);
        assert_eq!(dependents_stop_order(&chain, "db"), strings(&["web", "api", "migrate"]));
        assert_eq!(dependents_stop_order(&chain, "api"), strings(&["web"]));
        assert_eq!(dependents_stop_order(&chain, "web"), Vec::<String>::new());
        assert_eq!(direct_dependents(&chain, "db"), strings(&["api", "migrate"]));
        assert_eq!(
            shutdown_layers(&chain),
            vec![strings(&["web"]), strings(&["api"]), strings(&["migrate"]), strings(&["db"])]
        );
    }

    #[test]
    fn a_disabled_or_failed_dependency_blocks_a_start() {
        use crate::{ProcessConfig, ProcessEntry, Timestamp};
        let chain = graph(&[("web", &["api"]), ("api", &["db", "later"]), ("db", &[]), ("other", &[])]);
        let entry = |id: &str, state: ProcessState, enabled: bool| {
            let mut config = ProcessConfig::new(id, id, "/bin/true");
            config.enabled = enabled;
            let mut entry = ProcessEntry::new(config, Timestamp::now());
            entry.state = state;
            entry.last_error = (state == ProcessState::Failed).then(|| "exited with code 3".to_owned());
            entry
        };
        let cases = [
            (ProcessState::Stopped, true, None),
            (ProcessState::Running, true, None),
            (ProcessState::Retrying, true, None),
            (ProcessState::Disabled, false, Some("Cannot start web: its dependency db is disabled")),
            (ProcessState::Failed, true, Some("Cannot start web: its dependency db has failed (exited with code 3)")),
        ];
        for (state, enabled, want) in cases {
            let entries: BTreeMap<String, ProcessEntry> = [
                ("web", entry("web", ProcessState::Stopped, true)),
                ("api", entry("api", ProcessState::Stopped, true)),
                ("db", entry("db", state, enabled)),
                ("other", entry("other", ProcessState::Failed, true)),
            ]
            .into_iter()
            .map(|(id, entry)| (id.to_owned(), entry))
            .collect();
            assert_eq!(start_blocker(|id| entries.get(id), &chain, "web").as_deref(), want, "{state}");
            assert_eq!(start_blocker(|id| entries.get(id), &chain, "other"), None, "a failed process itself may start");
        }
    }

    #[test]
    fn conditions() {
        use crate::Timestamp;
        let t0 = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let t1 = Timestamp::parse("2026-01-01T00:00:01Z").unwrap();
        let seen = |state, spawned, code, at| Observed { state, spawned, last_exit_code: code, last_stopped_at: at };
        use DependencyCondition::*;
        use ProcessState as S;
        let cases = [
            (Started, seen(S::Starting, true, None, None), true),
            (Started, seen(S::Starting, false, None, None), false),
            (Started, seen(S::Running, true, None, None), true),
            (Started, seen(S::Stopped, false, None, None), false),
            (Healthy, seen(S::Starting, true, None, None), false),
            (Healthy, seen(S::Running, true, None, None), true),
            (Healthy, seen(S::Failed, false, None, None), false),
            (CompletedSuccessfully, seen(S::Stopped, false, Some(0), Some(t1)), true),
            (CompletedSuccessfully, seen(S::Stopped, false, Some(0), Some(t0)), true),
            (CompletedSuccessfully, seen(S::Stopped, false, Some(1), Some(t1)), false),
            (CompletedSuccessfully, seen(S::Running, true, Some(0), Some(t1)), false),
            (CompletedSuccessfully, seen(S::Stopped, false, None, None), false),
        ];
        for (condition, observed, want) in cases {
            assert_eq!(condition.holds(&observed, t0), want, "{condition} {observed:?}");
        }
        let before = Observed { state: S::Stopped, spawned: false, last_exit_code: Some(0), last_stopped_at: Some(t0) };
        assert!(!CompletedSuccessfully.holds(&before, t1), "an exit before the request does not count");
    }

    #[test]
    fn condition_names() {
        for (condition, name) in [
            (DependencyCondition::Started, "started"),
            (DependencyCondition::Healthy, "healthy"),
            (DependencyCondition::CompletedSuccessfully, "completedSuccessfully"),
        ] {
            assert_eq!(serde_json::to_value(condition).unwrap(), serde_json::json!(name));
            assert_eq!(serde_json::from_value::<DependencyCondition>(serde_json::json!(name)).unwrap(), condition);
            assert_eq!(name.parse::<DependencyCondition>(), Ok(condition));
        }
        let err = serde_json::from_value::<DependencyCondition>(serde_json::json!("ready")).unwrap_err().to_string();
        assert!(err.contains("ready") && err.contains("completedSuccessfully"), "{err}");
        // The reason alone: the API adds "Missing or invalid field: " once (it said it twice).
        assert!(err.starts_with("dependsOn condition \"ready\""), "{err}");
        assert!("ready".parse::<DependencyCondition>().unwrap_err().to_string().contains("\"ready\""));
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;

        /// A random DAG of up to 20 processes: ids shuffled, each process depending on some of those before it
        /// in a hidden order (so no cycle), sometimes on an id that is not registered.
        fn dag() -> impl Strategy<Value = Graph> {
            (1usize..=20).prop_flat_map(|n| {
                (
                    Just(n),
                    proptest::collection::vec(any::<u32>(), n * n),
                    Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                )
                    .prop_map(|(n, bits, names)| {
                        let mut graph = Graph::new();
                        for i in 0..n {
                            let mut deps = BTreeSet::new();
                            for j in 0..i {
                                if bits[i * n + j] % 4 == 0 {
                                    deps.insert(format!("p{}", names[j]));
                                }
                            }
                            if bits[i * n + i] % 10 == 0 {
                                deps.insert(format!("unregistered{i}"));
                            }
                            graph.insert(format!("p{}", names[i]), deps);
                        }
                        graph
                    })
            })
        }

        fn position(order: &[String], id: &str) -> Option<usize> {
            order.iter().position(|other| other == id)
        }

        proptest! {
            #[test]
            fn start_order_respects_every_edge_and_stop_order_reverses_it(graph in dag(), pick in any::<usize>()) {
                prop_assert_eq!(find_cycle(&graph), None);
                let all: Vec<String> = graph.keys().cloned().collect();
                let order = start_order(&graph, &all);
                for (id, deps) in &graph {
                    let at = position(&order, id).expect("every target is in the order");
                    for dep in deps {
                        let dep_at = position(&order, dep).expect("every dependency is in the order");
                        prop_assert!(dep_at < at, "{} starts before its dependency {}", id, dep);
                    }
                }
                // Starting one process brings exactly what it depends on, dependencies first.
                let target = all[pick % all.len()].clone();
                let partial = start_order(&graph, std::slice::from_ref(&target));
                prop_assert_eq!(partial.last(), Some(&target));
                for id in &partial {
                    for dep in graph.get(id).into_iter().flatten() {
                        prop_assert!(position(&partial, dep).unwrap() < position(&partial, id).unwrap());
                    }
                }
                // Shutdown: every dependent in an earlier group than its dependencies.
                let shutdown: Vec<String> = shutdown_layers(&graph).into_iter().flatten().collect();
                prop_assert_eq!(shutdown.len(), graph.len());
                for (id, deps) in &graph {
                    for dep in deps.iter().filter(|dep| graph.contains_key(*dep)) {
                        prop_assert!(position(&shutdown, id).unwrap() < position(&shutdown, dep).unwrap());
                    }
                }
                // Stopping one process: its dependents, each before whatever it depends on.
                let stops = dependents_stop_order(&graph, &target);
                prop_assert!(!stops.contains(&target));
                for id in &stops {
                    for dep in graph[id].iter() {
                        if let Some(dep_at) = position(&stops, dep) {
                            prop_assert!(position(&stops, id).unwrap() < dep_at);
                        }
                    }
                }
                for (id, deps) in &graph {
                    if deps.contains(&target) {
                        prop_assert!(stops.contains(id), "{} depends on {} but is not stopped", id, target);
                    }
                }
            }

            #[test]
            fn an_added_back_edge_is_a_cycle(graph in dag()) {
                // Making the first process of a chain depend on its last closes a cycle, which is named.
                if let Some((last, deps)) = graph.iter().find(|(_, deps)| deps.iter().any(|d| graph.contains_key(d))) {
                    let dep = deps.iter().find(|d| graph.contains_key(*d)).unwrap().clone();
                    let mut cyclic = graph.clone();
                    cyclic.get_mut(&dep).unwrap().insert(last.clone());
                    let cycle = find_cycle(&cyclic).expect("a cycle");
                    prop_assert_eq!(cycle.first(), cycle.last());
                    for pair in cycle.windows(2) {
                        prop_assert!(cyclic[&pair[0]].contains(&pair[1]), "{:?} is not a path", cycle);
                    }
                }
            }
        }
    }
}
