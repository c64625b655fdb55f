//! Several processes writing at once: no lost updates, no torn reads, no lock outliving a killed writer.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pm_registry::Error;

use crate::support::{add_entry, spawn_worker, store, wait_for, worker_dir, TempDir};

const N_WORKERS: usize = 4;
const N_TRANSACTIONS: usize = 250;
/// Generous: every worker waits for the others' fsyncs.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Worker: after the `go` file appears, adds `N_TRANSACTIONS` entries `w{index}-{n}`, one per transaction.
#[test]
fn worker_adds_entries() {
    let Some(dir) = worker_dir("add-entries") else {
        return;
    };
    let worker_idx: usize = std::env::var("PM_REGISTRY_IT_INDEX").unwrap().parse().unwrap();
    assert!(wait_for(Duration::from_secs(30), || dir.join("go").exists()), "no go signal");
    let store = store(&dir, "default");
    for n in 0..N_TRANSACTIONS {
        store
            .transaction(TRANSACTION_TIMEOUT, |registry| {
                add_entry(registry, &format!("w{worker_idx}-{n}"));
                Ok::<_, Error>(())
            })
            .unwrap();
    }
}

#[test]
fn concurrent_processes_lose_no_update_and_readers_never_see_a_broken_file() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    store.init().unwrap();
    let mut workers: Vec<_> = (0..N_WORKERS)
        .map(|worker_idx| {
            let index = [("PM_REGISTRY_IT_INDEX", worker_idx.to_string())];
            spawn_worker("concurrency::worker_adds_entries", "add-entries", dir.path(), &index)
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let stop = Arc::clone(&stop);
        thread::spawn(move || -> Result<usize, String> {
            let mut n_loads = 0;
            while !stop.load(Ordering::Relaxed) {
                store.load().map_err(|err| format!("load {n_loads} failed: {err}"))?;
                n_loads += 1;
                thread::sleep(Duration::from_millis(5));
            }
            Ok(n_loads)
        })
    };

    let started = Instant::now();
    fs::write(dir.path().join("go"), "").unwrap();
    for worker in &mut workers {
        let status = worker.wait_timeout(Duration::from_secs(180));
        assert!(status.success(), "worker {} failed: {status}", worker.pid());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let n_loads = reader.join().unwrap().unwrap();
    assert!(n_loads > 0);

    let registry = store.load().unwrap();
    assert_eq!(registry.processes.len(), N_WORKERS * N_TRANSACTIONS);
    for worker_idx in 0..N_WORKERS {
        for n in 0..N_TRANSACTIONS {
            let id = format!("w{worker_idx}-{n}");
            assert!(registry.processes.contains_key(&id), "{id} lost");
        }
    }
    eprintln!("{} transactions in {elapsed:?}, {n_loads} concurrent loads", N_WORKERS * N_TRANSACTIONS);
}

/// Worker: takes the transaction lock, signals `ready`, and sleeps inside the transaction until killed.
#[test]
fn worker_holds_transaction_lock() {
    let Some(dir) = worker_dir("hold-transaction-lock") else {
        return;
    };
    let store = store(&dir, "default");
    store
        .transaction(TRANSACTION_TIMEOUT, |registry| {
            add_entry(registry, "never-saved");
            fs::write(dir.join("ready"), "").unwrap();
            thread::sleep(Duration::from_secs(60));
            Ok::<_, Error>(())
        })
        .unwrap();
}

#[test]
fn a_writer_killed_inside_a_transaction_does_not_block_the_next() {
    let dir = TempDir::new();
    let store = store(dir.path(), "default");
    store.init().unwrap();
    let before = fs::read(store.paths().registry_file()).unwrap();
    let mut child =
        spawn_worker("concurrency::worker_holds_transaction_lock", "hold-transaction-lock", dir.path(), &[]);
    assert!(wait_for(Duration::from_secs(20), || dir.path().join("ready").exists()), "worker not ready");

    let blocked = store.transaction(Duration::from_millis(100), |_| Ok::<_, Error>(()));
    assert!(matches!(blocked, Err(Error::LockTimeout { .. })), "{blocked:?}");

    child.kill_hard();
    let started = Instant::now();
    store
        .transaction(Duration::from_secs(5), |registry| {
            add_entry(registry, "after-kill");
            Ok::<_, Error>(())
        })
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));

    let registry = store.load().unwrap();
    assert!(registry.processes.contains_key("after-kill"));
    assert!(!registry.processes.contains_key("never-saved"));
    let backup = fs::read(dir.path().join("processes_default.json.bak")).unwrap();
    assert_eq!(backup, before);
}
