//! What a running process costs the engine in heap, counted by this binary's allocator (issue 19).
//!
//! A binary of its own with one test: the allocator counts the whole process's allocations (the engine's tasks
//! run on tokio's workers and its launches on spawner threads), so nothing else may run beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use pm_core::{Event, EventKind, ProcessConfig, ProcessState};

#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

use support::Fixture;

/// The system allocator, counting the bytes live (requested sizes) and their highest level since [`reset_peak`].
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn count(bytes: isize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches two atomics only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` was allocated by `System` with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: as for `GlobalAlloc::realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

const N: usize = 200;

fn sleeper(id: &str, autostart: bool) -> ProcessConfig {
    let mut config = ProcessConfig::new(id, id, "sleep");
    config.args = vec!["3600".to_owned()];
    config.autostart = autostart;
    config
}

/// Fills the supervisor's event ring with events the size of the ones a start publishes, so that the events
/// of the processes below replace them instead of adding to the count.
fn fill_event_ring(fx: &Fixture) {
    let bus = fx.sup.event_bus();
    for idx in 0..bus.capacity() + 10 {
        let kind = EventKind::State {
            process_id: format!("x{idx:05}"),
            from: ProcessState::Starting,
            to: ProcessState::Running,
            pid: Some(4_000_000),
            reason: "started".to_owned(),
            exit_code: None,
            signal: None,
        };
        bus.publish(Event::now(kind), false);
    }
}

/// Lets what the start left (spawner replies, run-folder pruning on the blocking pool) finish.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn all_running(fx: &Fixture, ids: &[String]) {
    for id in ids {
        fx.wait(id, Duration::from_secs(60), |entry| entry.state == ProcessState::Running).await;
    }
}

/// The heap a running process costs more than a registered one, on `fx`: `N` processes registered, then started
/// with one request each, all at once.
async fn per_running_process(fx: &Fixture, prefix: &str) -> isize {
    fill_event_ring(fx);
    let ids: Vec<String> = (0..N).map(|idx| format!("{prefix}{idx:05}")).collect();
    for id in &ids {
        fx.sup.register(sleeper(id, false)).unwrap();
    }
    settle().await;
    let registered = live();
    let mut starts = tokio::task::JoinSet::new();
    for id in &ids {
        let (sup, id) = (fx.sup.clone(), id.clone());
        starts.spawn(async move { sup.start(&id).await });
    }
    while let Some(res) = starts.join_next().await {
        res.unwrap().unwrap();
    }
    all_running(fx, &ids).await;
    settle().await;
    let per_running = (live() - registered) / N as isize;
    eprintln!(
        "a running process: {per_running} B of heap more than a registered one ({} containment)",
        fx.sup.containment().mode()
    );
    assert!(per_running > 200, "a running process costs {per_running} B more: is the child kept at all?");
    per_running
}

/// - A running process costs at most 448 B of heap more than a registered one with a cgroup each (the daemon's
///   usual containment): its child (120 B, boxed), its pidfd's slot in the monitor's own epoll table (24 B; a
///   registration with tokio's reactor was 256 B, about 590 B in all then), its run folder's and cgroup's paths.
///   It was about 1,000 B when the wait for the child's exit (232 B) and the
///   reset timer (112 B) were futures in boxes kept for the whole run, and the child 232 B with tokio's `Child`
///   inline. With process groups (tokio's child and its wait, boxed) at most 1,024 B (about 1,080 B with the
///   reset timer).
/// - Starting 200 autostart processes at once allocates at most 256 KiB more at its peak than the processes
///   keep afterwards (about 175 KiB): every process built its first step and its launch request at once before
///   the launch turns (about 530 KiB for 200), which left the heap of a real monitor full of holes that no page
///   could be returned from (BENCHMARKS.md, issue 19).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_process_costs_little_more_than_a_registered_one() {
    let groups = Fixture::new();
    let per_running = per_running_process(&groups, "g").await;
    assert!(per_running <= 1024, "a running process costs {per_running} B more than a registered one");
    groups.sup.shutdown(|_| false).await;

    let cgroups = Fixture::with_cgroups();
    if cgroups.sup.containment().mode() == "cgroup" {
        let per_running = per_running_process(&cgroups, "c").await;
        assert!(per_running <= 448, "a running process costs {per_running} B more than a registered one");
        cgroups.sup.shutdown(|_| false).await;
    } else {
        eprintln!("no delegated cgroup here: the cgroup child's cost is not measured");
    }

    // The start-up of as many autostart processes, on another supervisor.
    let fx = Fixture::with_cgroups();
    fill_event_ring(&fx);
    let ids: Vec<String> = (0..N).map(|idx| format!("q{idx:05}")).collect();
    settle().await;
    let before = live();
    reset_peak();
    for id in &ids {
        fx.sup.register(sleeper(id, true)).unwrap();
    }
    all_running(&fx, &ids).await;
    let peak = PEAK.load(Ordering::Relaxed);
    settle().await;
    let after = live();
    let transient = peak - after.max(before);
    eprintln!(
        "the start of {N} autostart processes: {} B kept per process, {transient} B more at its peak",
        (after - before) / N as isize
    );
    assert!(transient <= 256 * 1024, "the start of {N} processes allocated {transient} B more at its peak");
    fx.sup.shutdown(|_| false).await;
}
