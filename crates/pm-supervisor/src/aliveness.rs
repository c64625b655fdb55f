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
