//! Stack files: the processes of a project declared once, in TOML or JSON (`docs/stack-file.md`), and the
//! commands `schema`, `diff`, `apply`, `up` and `down` that bring the registry in line with one.
//!
//! Everything acts through the local client ([`pm_client::ProcessMonitorClient`]): a running monitor takes
//! each change up at once and the client waits for outcomes; with no monitor, the registry file is edited.
//! Processes created from a file carry the additive entry key `stackFile` (the file's canonical path); only
//! those are ever pruned or taken down.

mod file;
mod keys;
mod plan;
mod up;

use anyhow::Context;
use pm_registry::Paths;

use crate::cli::{ApplyArgs, Cli, StackArgs, StackFileArg};
use crate::code;

pub(crate) use keys::schema;
pub(crate) use up::up;

/// Reads the stack file, expanding `${VAR}` from this process's environment.
fn load(file: &std::path::Path) -> anyhow::Result<file::Stack> {
    file::load(file, &|name| std::env::var(name).ok())
}

fn options(args: &StackArgs) -> plan::PlanOptions {
    plan::PlanOptions { prune: args.prune, adopt: args.adopt }
}

/// The plan for a file, with errors naming the file.
fn plan_for(stack: &file::Stack, paths: &Paths, args: &StackArgs) -> anyhow::Result<plan::Plan> {
    let registry = crate::instance::load_registry(paths)?;
    plan::plan(stack, &registry, &options(args)).with_context(|| format!("{} cannot be applied", stack.mark()))
}

/// `diff -f FILE`: what `apply` would do.
pub(crate) fn diff(cli: &Cli, paths: &Paths, args: &StackArgs) -> anyhow::Result<u8> {
    let stack = load(&args.file.file)?;
    let plan = plan_for(&stack, paths, args)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"file": stack.mark(), "plan": plan}))?);
    } else {
        print!("{}", plan::render(&plan));
    }
    Ok(code::OK)
}

/// `apply -f FILE [--prune] [--dry-run]`.
pub(crate) fn apply(cli: &Cli, paths: &Paths, args: &ApplyArgs) -> anyhow::Result<u8> {
    let stack = load(&args.stack.file.file)?;
    let client = crate::client::local(paths)?;
    let plan = plan_for(&stack, paths, &args.stack)?;
    if args.dry_run {
        if cli.json {
            let out = serde_json::json!({"file": stack.mark(), "dryRun": true, "plan": plan});
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print!("{}", plan::render(&plan));
            println!("dry run: nothing changed");
        }
        return Ok(code::OK);
    }
    let done = plan::apply(&stack, &plan, &client)?;
    print_done(cli, &stack, &plan, &done)?;
    Ok(code::OK)
}

/// Prints what `apply` did.
fn print_done(cli: &Cli, stack: &file::Stack, plan: &plan::Plan, done: &[plan::Done]) -> anyhow::Result<()> {
    if cli.json {
        let out = serde_json::json!({"file": stack.mark(), "done": done, "unchanged": plan.unchanged,
            "notPruned": if plan.prune { Vec::new() } else { plan.removed.clone() }});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for it in done {
        match &it.state {
            Some(state) => println!("{}: {} -> {state}", it.id, it.action),
            None => println!("{}: {}", it.id, it.action),
        }
    }
    for id in &plan.unchanged {
        println!("{id}: unchanged");
    }
    if !plan.prune {
        for id in &plan.removed {
            println!("{id}: no longer listed (apply --prune removes it)");
        }
    }
    Ok(())
}

/// `down -f FILE`: stops and removes every process created from the file, in reverse file order (those it no
/// longer lists last). A file that no longer parses still names its processes by its path.
pub(crate) fn down(cli: &Cli, paths: &Paths, args: &StackFileArg) -> anyhow::Result<u8> {
    let mark = file::canonical(&args.file).to_string_lossy().into_owned();
    let order: Vec<String> = match load(&args.file) {
        Ok(stack) => up::stop_order(&stack),
        Err(err) => {
            eprintln!("note: {err:#}; removing what was created from {mark} in registry order");
            Vec::new()
        }
    };
    let client = crate::client::local(paths)?;
    let registry = crate::instance::load_registry(paths)?;
    let mut ids: Vec<String> = order
        .into_iter()
        .filter(|id| registry.processes.get(id).is_some_and(|entry| plan::provenance(entry) == Some(mark.as_str())))
        .collect();
    for entry in registry.processes.values() {
        if plan::provenance(entry) == Some(mark.as_str()) && !ids.contains(&entry.config.id) {
            ids.push(entry.config.id.clone());
        }
    }
    // Refused before anything is removed when a process that stays depends on one of them (the monitor would
    // refuse that removal half-way through).
    for id in &ids {
        let kept: Vec<String> =
            pm_core::dependents_in(&registry, id).into_iter().filter(|dependent| !ids.contains(dependent)).collect();
        if !kept.is_empty() {
            anyhow::bail!(
                "{id} is a dependency of {}, which {} not created from {mark}; deregister or change them first \
                 (nothing was removed)",
                kept.join(", "),
                if kept.len() == 1 { "was" } else { "were" }
            );
        }
    }
    let mut removed = Vec::new();
    for id in &ids {
        client.deregister(id).with_context(|| format!("{id}: cannot remove"))?;
        if !cli.json {
            println!("{id}: stopped and removed");
        }
        removed.push(id.clone());
    }
    if cli.json {
        println!("{}", serde_json::json!({"file": mark, "removed": removed}));
    } else if removed.is_empty() {
        println!("nothing to remove: no process was created from {mark}");
    }
    Ok(code::OK)
}
