//! CPU and memory of managed process groups.
//!
//! Requests never read `/proc`: they are answered from the last sample. A sampling task, started by the first
//! request and ended after [`IDLE_AFTER`] without one (an idle monitor costs nothing), reads every managed group
//! at most once per [`PERIOD`] on the blocking pool, off the async workers. A request that finds no recent
//! sample at all (the first one after a quiet spell) waits for the next one, up to [`FIRST_SAMPLE_WAIT`], so a
//! one-off `status` still shows figures; under steady load no request waits.
//!
//! The per-group read is one function ([`GroupReader`], by default [`read_groups_proc`]), so another source of
//! figures (a cgroup's own counters, say) can be swapped in without touching the sampling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The least time between two samples.
const PERIOD: Duration = Duration::from_secs(1);
/// The sampling task ends after this long without a request.
const IDLE_AFTER: Duration = Duration::from_secs(3);
/// A sample older than this does not serve: a request waits for the next one (see the module documentation).
const STALE_AFTER: Duration = Duration::from_secs(3);
/// How long a request waits for a fresh sample when there is none.
const FIRST_SAMPLE_WAIT: Duration = Duration::from_millis(750);

/// Resource use of one process group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    /// CPU in percent of one core since the previous sample (`None` on the first sample).
    pub(crate) cpu_percent: Option<f32>,
    /// Resident memory of all processes in the group.
    pub(crate) rss_bytes: u64,
}

/// Raw totals of one group as read: CPU time in clock ticks and resident memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GroupTotals {
    /// utime + stime of every process of the group, in clock ticks (`sysconf(_SC_CLK_TCK)`).
    pub(crate) cpu_ticks: u64,
    /// Resident memory of every process of the group.
    pub(crate) rss_bytes: u64,
}

/// Reads the totals of the groups led by `pgids` (blocking; called on the blocking pool). Groups that cannot be
/// read are left out.
pub(crate) type GroupReader = fn(&[u32]) -> HashMap<u32, GroupTotals>;

/// Where the sampling task finds the groups to sample.
pub(crate) type GroupList = Arc<dyn Fn() -> Vec<u32> + Send + Sync>;

/// The last sample and what the next one needs.
#[derive(Default)]
struct State {
    taken_at: Option<Instant>,
    usage: HashMap<u32, Usage>,
    /// CPU ticks per group and when they were read, for the next percentage.
    ticks: HashMap<u32, (u64, Instant)>,
    /// The last request.
    asked_at: Option<Instant>,
    /// Whether a sampling task runs.
    running: bool,
}

/// Samples process groups in the background while someone asks for figures.
pub(crate) struct Sampler {
    state: Mutex<State>,
    /// Bumped after every sample (requests waiting for a first sample watch it).
    sampled: watch::Sender<u64>,
    groups: GroupList,
    reader: GroupReader,
}

impl Sampler {
    /// A sampler of the groups `groups` lists (called once per sample), read by `reader`.
    pub(crate) fn new(groups: GroupList, reader: GroupReader) -> Arc<Sampler> {
        Arc::new(Sampler { state: Mutex::default(), sampled: watch::channel(0).0, groups, reader })
    }

    /// Usage of the groups led by `pgids` (our children lead their groups) from the last sample; groups not in
    /// it are left out. Never reads `/proc` itself; waits (briefly) only when there is no recent sample at all.
    pub(crate) async fn usage(self: &Arc<Self>, pgids: &[u32]) -> HashMap<u32, Usage> {
        if pgids.is_empty() {
            return HashMap::new();
        }
        let (stale, mut sampled) = {
            let mut state = self.state.lock().expect("sampler");
            state.asked_at = Some(Instant::now());
            if !state.running {
                state.running = true;
                let sampler = self.clone();
                tokio::spawn(async move { sampler.run().await });
            }
            (state.taken_at.is_none_or(|at| at.elapsed() > STALE_AFTER), self.sampled.subscribe())
        };
        if stale {
            sampled.mark_unchanged();
            let _ = tokio::time::timeout(FIRST_SAMPLE_WAIT, sampled.changed()).await;
        }
        let state = self.state.lock().expect("sampler");
        pgids.iter().filter_map(|pgid| Some((*pgid, *state.usage.get(pgid)?))).collect()
    }

    /// The sampling loop: one sample per period while requests come, then it ends.
    async fn run(self: Arc<Self>) {
        loop {
            let pgids = (self.groups)();
            let reader = self.reader;
            let totals = tokio::task::spawn_blocking(move || reader(&pgids)).await.unwrap_or_default();
            {
                let mut state = self.state.lock().expect("sampler");
                state.record(totals, Instant::now());
                if state.asked_at.is_none_or(|at| at.elapsed() > IDLE_AFTER) {
                    state.running = false;
                    state.usage.clear();
                    state.ticks.clear();
                    state.taken_at = None;
                    return;
                }
            }
            self.sampled.send_modify(|n| *n += 1);
            tokio::time::sleep(PERIOD).await;
        }
    }
}

impl State {
    fn record(&mut self, totals: HashMap<u32, GroupTotals>, now: Instant) {
        let ticks_per_sec = clock_ticks();
        let mut usage = HashMap::with_capacity(totals.len());
        let mut ticks = HashMap::with_capacity(totals.len());
        for (pgid, GroupTotals { cpu_ticks, rss_bytes }) in totals {
            let cpu_percent = self.ticks.get(&pgid).and_then(|(before, at)| {
                let wall = now.duration_since(*at).as_secs_f64();
                (wall > 0.0 && cpu_ticks >= *before)
                    .then(|| ((cpu_ticks - before) as f64 / ticks_per_sec / wall * 100.0) as f32)
            });
            usage.insert(pgid, Usage { cpu_percent, rss_bytes });
            ticks.insert(pgid, (cpu_ticks, now));
        }
        self.usage = usage;
        self.ticks = ticks;
        self.taken_at = Some(now);
    }
}

/// Resident memory in bytes of each process group led by `pgids` (one `/proc` scan; Linux only, empty
/// elsewhere). For callers outside a monitor, such as the CLI's local `list`.
pub fn group_memory(pgids: &[u32]) -> HashMap<u32, u64> {
    read_groups_proc(pgids).into_iter().map(|(pgid, totals)| (pgid, totals.rss_bytes)).collect()
}

fn clock_ticks() -> f64 {
    pm_registry::proc::clock_ticks_per_second() as f64
}

/// The default [`GroupReader`]: CPU ticks and RSS summed over the processes of each group in `pgids`, from one
/// scan of `/proc` (Linux only; empty elsewhere).
#[cfg(target_os = "linux")]
pub(crate) fn read_groups_proc(pgids: &[u32]) -> HashMap<u32, GroupTotals> {
    let mut res: HashMap<u32, GroupTotals> = HashMap::new();
    if pgids.is_empty() {
        return res;
    }
    let wanted: std::collections::HashSet<u32> = pgids.iter().copied().collect();
    let page = pm_registry::proc::page_size();
    let Ok(pids) = pm_registry::proc::all_pids() else { return res };
    for pid in pids {
        let Some(stat) = pm_registry::proc::stat(pid) else { continue };
        if wanted.contains(&stat.pgrp) {
            let slot = res.entry(stat.pgrp).or_default();
            slot.cpu_ticks += stat.cpu_ticks;
            slot.rss_bytes += stat.rss_pages * page;
        }
    }
    res
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn read_groups_proc(_pgids: &[u32]) -> HashMap<u32, GroupTotals> {
    HashMap::new()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn our_group() -> u32 {
        rustix::process::getpgrp().as_raw_nonzero().get() as u32
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn samples_our_own_group() {
        let pgid = our_group();
        let sampler = Sampler::new(Arc::new(move || vec![pgid]), read_groups_proc);
        let usage = sampler.usage(&[pgid]).await;
        let ours = usage.get(&pgid).expect("our own group is visible");
        assert!(ours.rss_bytes > 0);
        assert_eq!(ours.cpu_percent, None, "no percentage from a single sample");
    }

    static READS: AtomicUsize = AtomicUsize::new(0);

    fn counting_reader(pgids: &[u32]) -> HashMap<u32, GroupTotals> {
        READS.fetch_add(1, Ordering::SeqCst);
        pgids.iter().map(|pgid| (*pgid, GroupTotals { cpu_ticks: 1, rss_bytes: 4096 })).collect()
    }

    /// Requests are answered from the last sample: however many come, and for whichever groups, the groups are
    /// read at most about once per period, and never on the requesting task.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_never_trigger_reads_of_their_own() {
        let groups: Vec<u32> = (1000..1100).collect();
        let listed = groups.clone();
        let sampler = Sampler::new(Arc::new(move || listed.clone()), counting_reader);
        let started = Instant::now();
        let first = sampler.usage(&[1000]).await;
        assert_eq!(first.get(&1000).map(|usage| usage.rss_bytes), Some(4096), "the first request waits for a sample");
        let mut answered = 0;
        while started.elapsed() < Duration::from_millis(2500) {
            // Alternating ids, and one that is in no sample: none of them reads anything.
            for pgid in [1001, 1050, 99_999] {
                let usage = sampler.usage(&[pgid]).await;
                assert_eq!(usage.contains_key(&pgid), pgid != 99_999);
                answered += 1;
            }
            tokio::task::yield_now().await;
        }
        let reads = READS.load(Ordering::SeqCst);
        assert!(answered > 1000, "requests were slow: {answered}");
        assert!((2..=5).contains(&reads), "{reads} reads in 2.5 s for {answered} requests");
    }
}
