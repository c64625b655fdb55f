//! `up -f FILE`: apply the file, start its processes, then show their output with a coloured `id |` prefix
//! until Ctrl-C (or SIGTERM), which stops them in reverse file order and exits. With `-d` it returns once
//! they are started and leaves them to the monitor.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pm_registry::Paths;

use crate::cli::{Cli, UpArgs};
use crate::code;
use crate::stack::file::Stack;
use crate::stack::{load, plan, plan_for, print_done};

/// How often the logs are polled.
const POLL: Duration = Duration::from_millis(100);

/// ANSI colours for the prefixes, in turn.
const COLOURS: &[&str] = &["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

/// The order in which `up` (on Ctrl-C) and `down` stop a stack: the reverse of the start order (file order with
/// dependencies first), so that dependents stop before what they depend on, and what is declared first (a
/// database, say) is stopped last.
pub(crate) fn stop_order(stack: &Stack) -> Vec<String> {
    let order = plan::start_order_of(stack.processes.iter())
        .unwrap_or_else(|_| stack.processes.iter().map(|config| config.id.clone()).collect());
    order.into_iter().rev().collect()
}

pub(crate) fn up(cli: &Cli, paths: &Paths, args: &UpArgs) -> anyhow::Result<u8> {
    // The whole file is checked before anything happens, the monitor's start included.
    let stack = load(&args.stack.file.file)?;
    let client = crate::client::local(paths)?;
    let plan = plan_for(&stack, paths, &args.stack)?;
    // From here on Ctrl-C does not end the program: it ends the start-up (once the step under way is done) and
    // then stops the stack.
    let stop = if args.detach { Arc::new(AtomicBool::new(false)) } else { on_signal()? };
    let mut started_monitor = false;
    if client.monitor()?.is_none() {
        start_monitor(paths)?;
        started_monitor = true;
    }
    let res = run(cli, paths, args, &stack, plan, started_monitor, &stop);
    if started_monitor && (res.is_err() || !args.detach) {
        stop_monitor(paths)?;
    }
    res
}

/// `up` once the monitor runs.
fn run(
    cli: &Cli,
    paths: &Paths,
    args: &UpArgs,
    stack: &Stack,
    plan: plan::Plan,
    started_monitor: bool,
    stop: &AtomicBool,
) -> anyhow::Result<u8> {
    let client = crate::client::local(paths)?;
    // Which processes run (and so restart on a change) is known only once the monitor runs.
    let plan = if started_monitor { plan_for(stack, paths, &args.stack)? } else { plan };
    let before: BTreeMap<String, Option<PathBuf>> =
        stack.processes.iter().map(|config| (config.id.clone(), paths.newest_run_dir(&config.id))).collect();
    let mut done = plan::apply(stack, &plan, &client)?;
    // Processes the file wants running that do not run (stopped by an earlier Ctrl-C, say), dependencies first.
    let order = plan::start_order_of(stack.processes.iter())?;
    for config in order.iter().filter_map(|id| stack.processes.iter().find(|config| config.id == *id)) {
        if !(config.enabled && config.autostart) || client.get_status(&config.id)?.state.has_child() {
            continue;
        }
        let status = client.start(&config.id)?;
        done.push(plan::Done {
            id: config.id.clone(),
            action: "started".to_owned(),
            state: Some(status.state.to_string()),
        });
    }
    print_done(cli, stack, &plan, &done)?;
    if args.detach {
        return Ok(code::OK);
    }
    let mut tails: Vec<Tail> = stack
        .processes
        .iter()
        .enumerate()
        .map(|(idx, config)| Tail::new(paths, &config.id, before.get(&config.id).cloned().flatten(), idx))
        .collect();
    let width = tails.iter().map(|tail| tail.id.len()).max().unwrap_or(0);
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::stdout().lock();
    // Output that cannot be written (a closed pipe) ends the loop like Ctrl-C, so the stack is still stopped.
    let mut writable = true;
    while writable && !stop.load(Ordering::SeqCst) {
        writable = tails.iter_mut().all(|tail| tail.poll(paths, width, colour, &mut out).is_ok());
        std::thread::sleep(POLL);
    }
    let _ = writeln!(out, "Stopping {} process(es)", stack.processes.len());
    let _ = out.flush();
    let mut failed = None;
    for id in stop_order(stack) {
        let _ = match client.stop(&id) {
            Ok(status) => writeln!(out, "{id}: stopped -> {}", status.state),
            Err(err) => {
                let res = writeln!(out, "{id}: cannot stop: {err}");
                failed.get_or_insert(err);
                res
            }
        };
        let _ = out.flush();
    }
    for tail in &mut tails {
        let _ = tail.poll(paths, width, colour, &mut out);
        let _ = tail.finish(width, colour, &mut out);
    }
    match failed {
        Some(err) => Err(err.into()),
        None => Ok(code::OK),
    }
}

/// Sets the flag on SIGINT or SIGTERM (handled from here on instead of ending the program).
fn on_signal() -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let flag = Arc::new(AtomicBool::new(false));
    let runtime = crate::runtime()?;
    let (mut interrupt, mut terminate) = {
        let _guard = runtime.enter();
        (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)
    };
    let set = flag.clone();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        });
        set.store(true, Ordering::SeqCst);
    });
    Ok(flag)
}

/// Starts the instance detached (the plain `process_monitor` command) and waits for it to answer.
fn start_monitor(paths: &Paths) -> anyhow::Result<()> {
    run_self(paths, &[]).context("cannot start the monitor")
}

/// Stops the instance `up` started.
fn stop_monitor(paths: &Paths) -> anyhow::Result<()> {
    run_self(paths, &["--stop"]).context("cannot stop the monitor")
}

fn run_self(paths: &Paths, args: &[&str]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let status = std::process::Command::new(exe)
        .arg("--directory")
        .arg(paths.root())
        .arg("--instance-id")
        .arg(paths.instance_id())
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "{status}");
    Ok(())
}

/// Following one process's output across its runs.
struct Tail {
    id: String,
    colour: &'static str,
    run: Option<PathBuf>,
    offsets: [u64; 2],
}

const FILES: [&str; 2] = ["stdout.log", "stderr.log"];

/// Lines shown of a run that was already under way when `up` began.
const BACKLOG: usize = 10;

/// The offset of the last [`BACKLOG`] complete lines of a file.
fn backlog_start(path: &Path) -> u64 {
    let text = std::fs::read(path).unwrap_or_default();
    let complete = text.iter().rposition(|byte| *byte == b'\n').map_or(0, |pos| pos + 1);
    let start = text[..complete]
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, byte)| **byte == b'\n')
        .nth(BACKLOG)
        .map_or(0, |(pos, _)| pos + 1);
    start as u64
}

impl Tail {
    /// Output of runs newer than `before` is shown from its start; of the run current before `up`, the last
    /// [`BACKLOG`] lines of each file.
    fn new(paths: &Paths, id: &str, before: Option<PathBuf>, idx: usize) -> Tail {
        let run = paths.newest_run_dir(id);
        let mut offsets = [0, 0];
        if let Some(dir) = run.as_ref().filter(|dir| Some(*dir) == before.as_ref()) {
            for (offset, name) in offsets.iter_mut().zip(FILES) {
                *offset = backlog_start(&dir.join(name));
            }
        }
        Tail { id: id.to_owned(), colour: COLOURS[idx % COLOURS.len()], run, offsets }
    }

    fn poll(&mut self, paths: &Paths, width: usize, colour: bool, out: &mut impl Write) -> anyhow::Result<()> {
        let newest = paths.newest_run_dir(&self.id);
        if newest != self.run {
            // The old run is over: its last line is shown even without a line end.
            self.print(width, colour, true, out)?;
            self.run = newest;
            self.offsets = [0, 0];
        }
        self.print(width, colour, false, out)
    }

    /// Shows what is left of the current run, its unfinished last line included (after the stack stopped).
    fn finish(&mut self, width: usize, colour: bool, out: &mut impl Write) -> anyhow::Result<()> {
        self.print(width, colour, true, out)
    }

    fn print(&mut self, width: usize, colour: bool, partial: bool, out: &mut impl Write) -> anyhow::Result<()> {
        let Some(run) = self.run.clone() else { return Ok(()) };
        let prefix = if colour {
            format!("\x1b[{}m{:<width$} |\x1b[0m ", self.colour, self.id)
        } else {
            format!("{:<width$} | ", self.id)
        };
        for (offset, name) in self.offsets.iter_mut().zip(FILES) {
            *offset = print_lines(&run.join(name), *offset, &prefix, partial, out)?;
        }
        out.flush()?;
        Ok(())
    }
}

/// Prints the complete lines of `path` from `offset` (with `partial`, an unfinished last line too, ended
/// here), each after `prefix`; answers the offset after the last.
fn print_lines(path: &Path, offset: u64, prefix: &str, partial: bool, out: &mut impl Write) -> anyhow::Result<u64> {
    let Ok(mut file) = std::fs::File::open(path) else { return Ok(offset) };
    let len = file.metadata()?.len();
    // A rotated (shortened) log starts over.
    let offset = if len < offset { 0 } else { offset };
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut reader = std::io::BufReader::new(file);
    let mut consumed = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            if partial {
                out.write_all(prefix.as_bytes())?;
                out.write_all(&line)?;
                out.write_all(b"\n")?;
                consumed += n as u64;
            }
            break;
        }
        out.write_all(prefix.as_bytes())?;
        out.write_all(&line)?;
        consumed += n as u64;
    }
    Ok(consumed)
}
