//! A run's launch (its cgroup, its run folder, the spawn) on the spawner thread, never on an async worker.
//!
//! A spawn does not return before the child has executed its program: `posix_spawn` is a `vfork`, and the other
//! ways wait on a pipe or a `clone` until the `exec`. On a loaded machine that wait is long (the child must be
//! scheduled first), and a tokio worker stuck in it serves nothing else: with both workers in it, `/alive` and
//! every API call waited behind a crash storm's restarts (issue 19, BENCHMARKS.md "Scale"). The launch's blocking
//! steps therefore run on one thread of their own, started at the first launch, one launch after the other (the
//! spawns were one after the other before as well: each holds the `owned` lock); the process's task awaits the
//! outcome and the workers carry on meanwhile.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use pm_core::{ProcessConfig, ProcessEntry, Timestamp};
use pm_registry::KnownRuns;
use tokio::sync::oneshot;

use crate::actor::Watch;
use crate::cgroup::{Prepared, ProcCgroup};
use crate::execcheck::Checked;
use crate::spawn::{self, SpawnContext};
use crate::Shared;

/// The spawner threads' stacks: a launch needs little (the child of `posix_spawn` gets a stack of its own).
const SPAWNER_STACK: usize = 256 * 1024;
/// Spawner threads: one prepares a run (its cgroup, its run folder) while the other waits for its child's `exec`.
const SPAWNERS: usize = 2;
/// Launches handed to the spawner threads at once (running or queued); the other processes' tasks wait for a turn
/// before they build theirs.
const IN_FLIGHT: usize = 2 * SPAWNERS;

/// The turns of [`IN_FLIGHT`]. A launch's request (a copy of the configuration, the job, its reply channel: about
/// 1.5 KiB) was built at once by every process that starts: the 1,000 or 10,000 of a start-up were all alive
/// together, and the pieces of each, freed one by one while the started processes' own allocations (their child,
/// its pidfd's registration, their run folder) took their places, left the heap full of holes no page could be
/// returned from (about 2 KiB per running process; issue 19, BENCHMARKS.md "Per-process memory").
static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(IN_FLIGHT);

/// A launch's turn (see [`turn`]), given back when dropped. It holds nothing: the turns are one static
/// semaphore's permits, and a process's actor keeps an `Option<Turn>` in a byte of its padding.
pub(crate) struct Turn(());

impl Drop for Turn {
    fn drop(&mut self) {
        TURNS.add_permits(1);
    }
}

/// Waits for a turn to launch (at most [`IN_FLIGHT`] launches at once, first come first served); taken before
/// anything of the launch is built, so that a process waiting for its turn holds nothing for it.
pub(crate) async fn turn() -> Turn {
    // Never closed: a turn always comes.
    TURNS.acquire().await.expect("the launch turns are never closed").forget();
    Turn(())
}

/// Whether launches take every turn now (a start-up of many processes, a crash storm's restarts): the registry
/// writer holds its whole-file writes back meanwhile (see `writer`).
pub(crate) fn every_turn_taken() -> bool {
    TURNS.available_permits() == 0
}

/// What one launch needs, owned: it runs on another thread.
struct Launch {
    shared: Arc<Shared>,
    /// The process's entry as its task holds it (shared, not copied: a copy of the configuration was a few dozen
    /// allocations and frees per restart of a crash storm; issue 19). Its `config` is what is launched.
    entry: Arc<ProcessEntry>,
    checked: Option<Checked>,
    /// The process's cgroup folder, with cgroup containment.
    cgroup_dir: Option<PathBuf>,
    /// The cgroup was left empty by the last run and may be used again.
    reuse_cgroup: bool,
    /// The start of the run (names its run folder).
    now: Timestamp,
    /// Whether the last launch kept the process's runs, and whether this one keeps them (see [`Runs`]).
    runs: Runs,
}

/// Whether a launch finds the process's runs where its last launch kept them ([`KEPT_RUNS`]) instead of listing
/// the process's folder, and whether it keeps them there for the next one.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Runs {
    /// The last launch kept them.
    pub(crate) kept: bool,
    /// This launch keeps them (a restart after a crash: more are likely to follow).
    pub(crate) keep: bool,
}

/// The run folders of the processes that restart after crashes, as their last launch left them, by the process's
/// log folder (`pm_registry::KnownRuns`, 16 B a run): a restart names its run folder and finds the runs to delete
/// from them, without the process folder's `mkdir`, `lstat` and listing (a crash storm listed every process's
/// folder at each restart; issue 19). Kept here rather than in the process's task, whose box every process has
/// (8 B more there were 16 B of heap for each of 10,000 running processes); a task knows whether its process's
/// runs are here (its `runs_kept`). An entry whose process went without a stop stays until a launch of that
/// folder replaces it (a few hundred bytes).
#[allow(clippy::type_complexity)]
static KEPT_RUNS: std::sync::Mutex<Option<std::collections::HashMap<PathBuf, Box<KnownRuns>>>> =
    std::sync::Mutex::new(None);

/// Forgets the runs kept for the process `id` (see [`KEPT_RUNS`]): at a stop, at the reset of its attempts.
pub(crate) fn forget_runs(shared: &Shared, id: &str) {
    let mut kept = KEPT_RUNS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(map) = kept.as_mut() {
        map.remove(&shared.paths.process_logs_dir(id));
    }
}

/// Takes the runs kept for the process whose log folder is `logs` (see [`KEPT_RUNS`]).
fn take_runs(logs: &std::path::Path) -> Option<Box<KnownRuns>> {
    KEPT_RUNS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut()?.remove(logs)
}

/// Keeps `runs` for the process whose log folder is `logs` (see [`KEPT_RUNS`]).
fn keep_runs(logs: PathBuf, runs: Box<KnownRuns>) {
    let mut kept = KEPT_RUNS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    kept.get_or_insert_with(Default::default).insert(logs, runs);
}

/// How many runs are kept for the process whose log folder is `logs` (tests).
#[cfg(test)]
pub(crate) fn kept_runs(logs: &std::path::Path) -> Option<usize> {
    KEPT_RUNS.lock().unwrap().as_ref()?.get(logs).map(|runs| runs.len())
}

/// A child that runs.
pub(crate) struct Launched {
    pub(crate) watch: Watch,
    pub(crate) pid: u32,
    /// Its run folder (logs).
    pub(crate) run_dir: PathBuf,
    /// Its cgroup, with cgroup containment.
    pub(crate) cgroup: Option<ProcCgroup>,
    /// Its start time in clock ticks since boot, when the spawn could tell it without reading `/proc`.
    pub(crate) start_time: Option<u64>,
    /// The process's runs were kept for its next launch ([`Runs::keep`]).
    pub(crate) runs_kept: bool,
}

/// Makes the child's cgroup (with containment) and its run folder for a run started `now`, and spawns the
/// configuration of `entry`; all of it on the spawner thread. `reuse_cgroup` is taken (cleared) once the
/// configuration's limits are known to apply. The run folder is named, and the runs beyond `keepRuns` found, from
/// the runs the last launch kept ([`Runs`]), else from a listing of the process's folder. Once the child runs and
/// its task has it, the same thread deletes the run folders beyond `keepRuns` (no thread of the blocking pool
/// woken, no second listing of the folder).
pub(crate) async fn launch(
    shared: &Arc<Shared>,
    entry: &Arc<ProcessEntry>,
    checked: Option<Checked>,
    cgroup_dir: Option<PathBuf>,
    reuse_cgroup: &mut bool,
    now: Timestamp,
    runs: Runs,
) -> std::io::Result<Launched> {
    shared.containment.check_limits(&entry.config).map_err(|err| std::io::Error::other(err.to_string()))?;
    let launch = Launch {
        shared: shared.clone(),
        entry: entry.clone(),
        checked,
        cgroup_dir,
        reuse_cgroup: std::mem::take(reuse_cgroup),
        now,
        runs,
    };
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = oneshot::channel();
    submit(Box::new(move || {
        // The child's exit watch (tokio's child, a pidfd) registers with the runtime of the task.
        let _in_runtime = runtime.enter();
        let shared = launch.shared.clone();
        let (res, old_runs) = match launch.run() {
            Ok((launched, old_runs)) => (Ok(launched), old_runs),
            Err(err) => (Err(err), Vec::new()),
        };
        if let Err(Ok(launched)) = tx.send(res) {
            // The task is gone (its runtime shut down meanwhile): nothing would ever wait for this child.
            launched.abandon(&shared);
        }
        if !old_runs.is_empty() {
            // After the launches that wait: a spawner thread is the bottleneck of a crash storm's restarts.
            submit_later(Box::new(move || {
                if let Err(err) = shared.paths.remove_run_dirs(&old_runs) {
                    // The process's folder is named after it.
                    let id = old_runs[0].parent().and_then(std::path::Path::file_name).unwrap_or_default();
                    tracing::warn!(process = %id.to_string_lossy(), "cannot remove old log folders: {err}");
                }
            }));
        }
    }));
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("the launch ended abnormally (a panic on the spawner thread)")))
}

impl Launch {
    /// The configuration launched.
    fn config(&self) -> &ProcessConfig {
        &self.entry.config
    }

    /// The launch; with the child, the old run folders to delete once its task has it.
    fn run(self) -> std::io::Result<(Launched, Vec<PathBuf>)> {
        let prepared = self
            .cgroup_dir
            .as_deref()
            .map(|dir| {
                let memory_events = self.shared.containment.memory_events();
                ProcCgroup::prepare(dir, self.config(), self.reuse_cgroup, memory_events)
            })
            .transpose()?;
        let keep = self.config().keep_runs_or(self.shared.keep_runs);
        let logs = self.shared.paths.process_logs_dir(&self.config().id);
        let known = if self.runs.kept { take_runs(&logs) } else { None };
        let (run_dir, old_runs, runs) =
            self.shared
                .paths
                .new_run_dir_known(&self.config().id, self.now, keep, known)
                .map_err(|err| std::io::Error::other(format!("cannot create log folder: {err}")))?;
        let launched = self.spawn_child(prepared, run_dir)?;
        if self.runs.keep {
            keep_runs(logs, runs);
        }
        Ok((launched, old_runs))
    }

    /// Spawns the child logging into `run_dir`, in its `prepared` cgroup if any, known as ours across the spawn;
    /// when it cannot start, the run folder and the cgroup are removed again.
    fn spawn_child(&self, prepared: Option<Prepared>, run_dir: PathBuf) -> std::io::Result<Launched> {
        let ctx = SpawnContext {
            default_cwd: &self.shared.default_cwd,
            run_dir: &run_dir,
            extra_env: &self.shared.extra_env,
            owner: &self.shared.owner,
            // Opened only for a spawn that needs it (`spawn_watch`).
            cgroup_procs: None,
            checked: self.checked.as_ref(),
        };
        // Held across the spawn where a reaper of re-parented strays runs (process-group containment): it must not
        // take this child for one. With a cgroup per process nothing reaps strays, and the spawner threads clone
        // and wait for their children's `exec` side by side instead of one after the other (issue 19).
        let held = holds_owned_across_spawn(&self.shared.containment).then(|| self.shared.owned.lock());
        let res = self.spawn_watch(&ctx, prepared.as_ref()).map(|(watch, start_time)| {
            let pid = match &watch {
                Watch::Own(child) => child.id().unwrap_or(0),
                Watch::Forked(forked) => forked.pid,
                _ => 0,
            };
            (watch, pid, start_time)
        });
        let mut owned = held.unwrap_or_else(|| self.shared.owned.lock()).expect("owned lock");
        if let Ok((_, pid, _)) = &res {
            owned.insert(*pid);
        }
        drop(owned);
        let cgroup = prepared.map(|prepared| prepared.cgroup);
        match res {
            Ok((watch, pid, start_time)) => {
                Ok(Launched { watch, pid, run_dir, cgroup, start_time, runs_kept: self.runs.keep })
            }
            Err(err) => {
                // Nothing ran: the folder (two empty log files) would only push real runs out, and the cgroup
                // would outlive the process.
                let _ = std::fs::remove_dir_all(&run_dir);
                if let Some(cgroup) = &cgroup {
                    let _ = std::fs::remove_dir(&cgroup.dir);
                }
                Err(err)
            }
        }
    }

    /// The spawn itself: cloned straight into its cgroup; where the kernel cannot, and for an untrusted
    /// registration (executed from its checked descriptor), moved there before it executes. With the watch, the
    /// child's start time where the clone told it.
    fn spawn_watch(
        &self,
        ctx: &SpawnContext<'_>,
        prepared: Option<&Prepared>,
    ) -> std::io::Result<(Watch, Option<u64>)> {
        let own = |child| (Watch::own(child), None);
        match prepared {
            Some(prepared) if ctx.checked.is_none() && !self.config().untrusted => {
                match spawn::spawn_into_cgroup(self.config(), ctx, prepared.dir.as_raw_fd()) {
                    Err(err) if err.kind() == std::io::ErrorKind::Unsupported => {
                        self.spawn_joining(ctx, prepared).map(own)
                    }
                    res => res.map(|(forked, start_time)| (Watch::Forked(forked), start_time)),
                }
            }
            Some(prepared) => self.spawn_joining(ctx, prepared).map(own),
            None => spawn::spawn(self.config(), ctx).map(own),
        }
    }

    /// A spawn whose child joins its `prepared` cgroup itself, through its `cgroup.procs` (opened for it alone),
    /// before it executes.
    fn spawn_joining(&self, ctx: &SpawnContext<'_>, prepared: &Prepared) -> std::io::Result<tokio::process::Child> {
        let procs = prepared.procs()?;
        let ctx = SpawnContext { cgroup_procs: Some(procs.as_raw_fd()), ..*ctx };
        spawn::spawn(self.config(), &ctx)
    }
}

/// Whether a spawn holds the `owned` lock until its child is in the set: only where the reaper of re-parented strays
/// runs, which is with process groups (the daemon's fallback) and never with a cgroup per process.
fn holds_owned_across_spawn(containment: &crate::cgroup::Containment) -> bool {
    containment.base().is_none()
}

impl Launched {
    /// Kills a child whose task went away during its launch, so that it does not run on unsupervised.
    fn abandon(self, shared: &Shared) {
        tracing::warn!(pid = self.pid, "started while its monitor was shutting down; killed");
        crate::os::signal_group(self.pid, libc::SIGKILL);
        shared.owned.lock().expect("owned lock").remove(&self.pid);
    }
}

/// Work for the spawner thread.
type Job = Box<dyn FnOnce() + Send>;

/// The spawner threads' queue: the jobs under a lock, and a condition variable that wakes one idle thread per job
/// (a shared `mpsc` receiver behind a mutex woke two: the thread waiting in `recv` while holding the mutex, and then
/// the other one, blocked on the mutex, to take its place in `recv`).
/// Clean-up work (the deletion of old run folders) waits in a second list, taken only when no launch waits.
#[derive(Default)]
struct Queue {
    jobs: std::sync::Mutex<Jobs>,
    ready: std::sync::Condvar,
}

/// Launches, and clean-up that waits for them.
#[derive(Default)]
struct Jobs {
    now: std::collections::VecDeque<Job>,
    later: std::collections::VecDeque<Job>,
    /// Threads waiting for a job: a job queued while none waits wakes nobody (the condition variable's wake is a
    /// system call whether or not a thread waits, and in a crash storm both threads are busy most of the time).
    idle: usize,
}

impl Queue {
    fn push(&self, job: Job) {
        let mut jobs = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        jobs.now.push_back(job);
        self.wake_one(jobs);
    }

    /// Queues clean-up work, run once no launch waits.
    fn push_later(&self, job: Job) {
        let mut jobs = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        jobs.later.push_back(job);
        self.wake_one(jobs);
    }

    /// Wakes a waiting thread for the job just queued, if one waits (a busy one takes it when it is done).
    fn wake_one(&self, jobs: std::sync::MutexGuard<'_, Jobs>) {
        let idle = jobs.idle > 0;
        drop(jobs);
        if idle {
            self.ready.notify_one();
        }
    }

    /// The next job (a launch before any clean-up), waiting for one.
    fn pop(&self) -> Job {
        let mut jobs = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(job) = jobs.now.pop_front().or_else(|| jobs.later.pop_front()) {
                return job;
            }
            jobs.idle += 1;
            jobs = self.ready.wait(jobs).unwrap_or_else(std::sync::PoisonError::into_inner);
            jobs.idle -= 1;
        }
    }
}

/// Runs `job` on a spawner thread (started on first use); here, when no such thread can be started.
fn submit(job: Job) {
    match queue() {
        Some(queue) => queue.push(job),
        None => job(),
    }
}

/// Runs clean-up `job` on a spawner thread once no launch waits; here, when there is no such thread.
fn submit_later(job: Job) {
    match queue() {
        Some(queue) => queue.push_later(job),
        None => job(),
    }
}

/// The spawner threads' queue, the threads started on first use; `None` when none can be started.
fn queue() -> Option<&'static Arc<Queue>> {
    static QUEUE: OnceLock<Option<Arc<Queue>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let queue = Arc::new(Queue::default());
        let started = (0..SPAWNERS).filter(|_| start_spawner(queue.clone())).count();
        if started == 0 {
            tracing::warn!("cannot start a spawner thread; processes are spawned on the async workers");
            return None;
        }
        Some(queue)
    });
    queue.as_ref()
}

/// Starts one spawner thread taking its jobs from `queue`; answers whether it runs.
fn start_spawner(queue: Arc<Queue>) -> bool {
    let serve = move || loop {
        let job = queue.pop();
        // A panicking launch drops its reply (its task reports it); the thread serves the next one.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    };
    let started = std::thread::Builder::new().name("pm-spawner".to_owned()).stack_size(SPAWNER_STACK).spawn(serve);
    if let Err(err) = &started {
        tracing::warn!("cannot start a spawner thread: {err}");
    }
    started.is_ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// At most [`super::IN_FLIGHT`] launches at once; a dropped turn lets the next waiting one in. (The turns are
    /// the whole test binary's: other tests' launches wait meanwhile, or are ahead in the queue for a moment.)
    #[tokio::test]
    async fn at_most_four_launches_at_once_and_a_dropped_turn_lets_the_next_in() {
        let mut turns = Vec::new();
        for _ in 0..super::IN_FLIGHT {
            turns.push(tokio::time::timeout(Duration::from_secs(30), super::turn()).await.expect("a free turn"));
        }
        let next = tokio::spawn(super::turn());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!next.is_finished(), "a fifth launch got a turn while four were taken");
        drop(turns.pop());
        tokio::time::timeout(Duration::from_secs(30), next).await.expect("the freed turn went to the next").unwrap();
    }

    /// Only a spawn with process-group containment (where the reaper of re-parented strays runs) holds the `owned`
    /// lock across the clone: with a cgroup per process the two spawner threads clone side by side.
    #[test]
    fn only_a_spawn_beside_the_reaper_holds_the_owned_lock_across_the_clone() {
        use crate::cgroup::Containment;
        let groups = Containment::ProcessGroup { reason: "test".to_owned() };
        assert!(super::holds_owned_across_spawn(&groups));
        let cgroups = Containment::Cgroup {
            base: std::path::PathBuf::from("/sys/fs/cgroup/pm-test"),
            controllers: Vec::new(),
            reason: "test".to_owned(),
        };
        assert!(!super::holds_owned_across_spawn(&cgroups));
    }

    /// Every turn taken says so (the registry writer holds its writes back then); a turn given back says no more.
    #[tokio::test]
    async fn every_turn_taken_follows_the_turns() {
        let mut turns = Vec::new();
        for _ in 0..super::IN_FLIGHT {
            turns.push(tokio::time::timeout(Duration::from_secs(30), super::turn()).await.expect("a free turn"));
        }
        assert!(super::every_turn_taken());
        drop(turns);
        // Other tests of this binary may take a turn for a moment meanwhile.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while super::every_turn_taken() {
            assert!(std::time::Instant::now() < deadline, "every turn still taken after they were given back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Launches run on the spawner threads, never on the async worker that asked (a spawn there stalled the
    /// worker until the child's exec).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn launches_run_on_a_spawner_thread() {
        for _ in 0..3 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            super::submit(Box::new(move || {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
            }));
            assert_eq!(rx.await.unwrap().as_deref(), Some("pm-spawner"));
        }
    }

    /// Two threads serve one queue: while one is busy with a job (one that waits for the next job, here), the other
    /// takes the next one, and every job runs exactly once.
    #[test]
    fn a_busy_spawner_leaves_the_next_job_to_the_other() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{mpsc, Arc};
        let queue = Arc::new(super::Queue::default());
        for _ in 0..2 {
            let queue = queue.clone();
            std::thread::spawn(move || loop {
                (queue.pop())();
            });
        }
        let (second_ran, wait_second) = mpsc::channel::<()>();
        let (first_done, wait_first) = mpsc::channel::<bool>();
        queue.push(Box::new(move || {
            let _ = first_done.send(wait_second.recv_timeout(std::time::Duration::from_secs(30)).is_ok());
        }));
        queue.push(Box::new(move || {
            let _ = second_ran.send(());
        }));
        assert!(wait_first.recv().unwrap(), "the second job did not run while the first waited for it");
        // Clean-up queued before launches runs after them: with both threads held, queue one of each, then free
        // one thread.
        let (release, held) = mpsc::channel::<()>();
        let held = Arc::new(std::sync::Mutex::new(held));
        let (started, both_held) = mpsc::channel::<()>();
        for _ in 0..2 {
            let (held, started) = (held.clone(), started.clone());
            queue.push(Box::new(move || {
                let _ = started.send(());
                let _ = held.lock().unwrap().recv_timeout(std::time::Duration::from_secs(30));
            }));
        }
        for _ in 0..2 {
            both_held.recv_timeout(std::time::Duration::from_secs(30)).expect("both threads busy");
        }
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ran, each_ran) = mpsc::channel::<()>();
        let (later_order, later_ran) = (order.clone(), ran.clone());
        queue.push_later(Box::new(move || {
            later_order.lock().unwrap().push("clean-up");
            let _ = later_ran.send(());
        }));
        let (now_order, now_ran) = (order.clone(), ran.clone());
        queue.push(Box::new(move || {
            now_order.lock().unwrap().push("launch");
            let _ = now_ran.send(());
        }));
        release.send(()).unwrap();
        for _ in 0..2 {
            each_ran.recv_timeout(std::time::Duration::from_secs(30)).expect("a job was lost");
        }
        assert_eq!(*order.lock().unwrap(), ["launch", "clean-up"]);
        release.send(()).unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let (done, all_done) = mpsc::channel();
        for _ in 0..200 {
            let (runs, done) = (runs.clone(), done.clone());
            queue.push(Box::new(move || {
                runs.fetch_add(1, Ordering::SeqCst);
                let _ = done.send(());
            }));
        }
        for _ in 0..200 {
            all_done.recv_timeout(std::time::Duration::from_secs(30)).expect("a job was lost");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 200);
    }
}
