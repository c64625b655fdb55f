//! What the monitor's caching store keeps in memory per entry (issue 19), counted by this binary's allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use pm_registry::{Paths, Store};

use crate::support::{add_entry, TempDir};

/// The system allocator, counting the bytes live that each thread allocated (less what it freed), so that a test
/// measures its own thread's allocations whatever the other tests of the binary do at the same time.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(bytes: isize) {
    // `try_with`: nothing to count while the thread is being torn down.
    let _ = LIVE.try_with(|live| live.set(live.get() + bytes));
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches a `const` thread-local
// `Cell` only (no allocation, no lock).
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
    LIVE.with(Cell::get)
}

/// The caching store keeps the registry of its last transaction; parsed as it is read (one entry after the other,
/// which leaves each node of the map's B-tree about half full, and an entry is stored in its node) it cost about
/// 1.9 KiB per small entry. The cache holds its map rebuilt with full nodes: about 1.1 KiB per entry (a
/// `ProcessEntry` is 680 B since its rare large options are boxed, and the small entry's strings come on top).
#[test]
fn the_cache_holds_about_one_entry_size_per_entry() {
    const N: usize = 1000;
    let dir = TempDir::new();
    let paths = Paths::new(dir.path(), "default").unwrap();
    let plain = Store::new(paths.clone());
    plain.init().unwrap();
    plain
        .transaction(Duration::from_secs(5), |registry| {
            for idx in 0..N {
                add_entry(registry, &format!("p{idx:05}"));
            }
            Ok::<_, pm_registry::Error>(())
        })
        .unwrap();
    let cached = Store::new_cached(paths);
    let before = live();
    // Reads the file (nothing changes, nothing is written) and keeps what it read.
    cached.transaction_existing(Duration::from_secs(5), |_| Ok::<_, pm_registry::Error>(())).unwrap();
    let per_entry = (live() - before) / N as isize;
    let entry = std::mem::size_of::<pm_core::ProcessEntry>() as isize;
    eprintln!("the cache holds {per_entry} B per entry (a ProcessEntry is {entry} B)");
    assert!(per_entry > entry, "the cache holds {per_entry} B per entry: is it kept at all?");
    assert!(per_entry <= entry + 200, "the cache holds {per_entry} B per entry, a ProcessEntry being {entry} B");
    // Still what is on disk.
    assert_eq!(cached.load().unwrap(), plain.load().unwrap());
}
