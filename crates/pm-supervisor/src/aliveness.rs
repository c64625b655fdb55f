//! The aliveness server (`GET /alive`, `GET /status`) on a thread of its own, with a small runtime of its own.
//!
//! `/alive` is what a partner monitor and outside health checks ask to decide whether this monitor still works;
//! its answer must not wait behind whatever the engine's runtime is busy with (a crash storm's restarts, a large
//! registry write, 10,000 processes starting: issue 19 wants `/alive` p99 ≤ 10 ms during a storm). The thread
//! runs a current-thread tokio runtime that serves only this listener; `/status` answers from the monitor's memory
//! as before. The thread ends once the server has shut down.

use std::net::TcpListener;
use std::sync::Arc;

use pm_http::{ServerConfig, ServerHandle};

use crate::monitor::Monitor;

/// The aliveness thread's stack: one small HTTP server (its connections live on the heap).
const ALIVENESS_STACK: usize = 256 * 1024;

/// Starts the aliveness server of `monitor` on `listener` on its own thread; [`ServerHandle::shutdown`] (awaited
/// on any runtime) stops it as before, and the thread then ends.
pub(crate) fn serve_on_own_thread(listener: TcpListener, monitor: Arc<Monitor>) -> std::io::Result<ServerHandle> {
    let (served_tx, served_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new().name("pm-aliveness".to_owned()).stack_size(ALIVENESS_STACK).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
            Ok(runtime) => runtime,
            Err(err) => {
                let _ = served_tx.send(Err(err));
                return;
            }
        };
        // Dropped with the server's handler, once the server and its connections are done.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let status = move || {
            let _until_done = &done_tx;
            monitor.status()
        };
        let served = runtime.block_on(async { pm_http::spawn_aliveness(listener, status, ServerConfig::default()) });
        let serving = served.is_ok();
        let _ = served_tx.send(served);
        if serving {
            runtime.block_on(async {
                let _ = done_rx.await;
            });
        }
    })?;
    served_rx.recv().map_err(|_| std::io::Error::other("the aliveness thread ended before it served"))?
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    /// `GET /alive` on `port` over a plain blocking socket (the engine's runtime may be stuck): the status line.
    fn get_alive(port: u16) -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.write_all(b"GET /alive HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer.lines().next().unwrap_or_default().to_owned())
    }

    /// The engine's only worker is blocked (as a `vfork` on an async worker blocked it): `/alive` still answers,
    /// and the usual shutdown closes the port.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn alive_answers_while_the_engine_runtime_is_stuck() {
        let root = std::env::temp_dir().join(format!("pm-aliveness-thread-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let monitor = crate::monitor::tests::monitor_with_job(&root).await;
        let listener = pm_http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let handle = super::serve_on_own_thread(listener, monitor).unwrap();
        let port = handle.local_addr().port();
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let (blocked, is_blocked) = std::sync::mpsc::channel::<()>();
        let worker = tokio::spawn(async move {
            blocked.send(()).unwrap();
            // Blocks the worker thread itself, bounded in case the test fails before it releases it.
            let _ = stuck.recv_timeout(Duration::from_secs(60));
        });
        is_blocked.recv_timeout(Duration::from_secs(20)).expect("the worker took the blocking task");
        let answer = get_alive(port);
        release.send(()).unwrap();
        worker.await.unwrap();
        assert_eq!(answer.unwrap(), "HTTP/1.1 200 OK");
        handle.shutdown().await;
        // The thread drops its listener as it winds down: polled, with a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(std::time::Instant::now() < deadline, "the port is still open 10 s after the shutdown");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
