//! 7: live events: how soon a crash reaches an event stream, and what idle streams cost the monitor.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::bench::home::{sleeper, Daemon, Home};
use crate::bench::report::{percentile, Row};
use crate::bench::scenarios::{jitter, ms, progress, wait_sleeper};
use crate::bench::{sys, Ctx};

/// Idle streams held open for the footprint figure.
const IDLE_STREAMS: usize = 50;

/// An open `GET` stream on a raw socket, with what was read past the last match.
struct Stream {
    socket: TcpStream,
    pending: Vec<u8>,
}

impl Stream {
    /// Sends `GET path` and reads the response head (which must be 200).
    fn open(port: u16, path: &str) -> anyhow::Result<Stream> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut socket = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("cannot connect to {addr}"))?;
        socket.set_nodelay(true)?;
        socket.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())?;
        let mut stream = Stream { socket, pending: Vec::new() };
        let head = stream.read_until(b"\r\n\r\n", Duration::from_secs(10))?;
        anyhow::ensure!(head.starts_with(b"HTTP/1.1 200"), "GET {path}: {}", String::from_utf8_lossy(&head));
        Ok(stream)
    }

    /// Reads until `needle` arrived (after what was matched before); answers what came up to it and keeps what
    /// follows for the next call.
    fn read_until(&mut self, needle: &[u8], timeout: Duration) -> anyhow::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(at) = self.pending.windows(needle.len()).position(|window| window == needle) {
                return Ok(self.pending.drain(..at + needle.len()).collect());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(!left.is_zero(), "no {:?} within {timeout:?}", String::from_utf8_lossy(needle));
            self.socket.set_read_timeout(Some(left))?;
            let n = self.socket.read(&mut chunk).context("reading the event stream")?;
            anyhow::ensure!(n > 0, "the event stream ended");
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }
}

pub(crate) fn events(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let repeats = ctx.config.repeats;
    progress(&format!("event latency ({repeats} crashes) and {IDLE_STREAMS} idle event streams"));
    let home = Home::new(ctx.root, "events")?;
    home.write_registry(vec![sleeper("ev", "3611", true)])?;
    let mut daemon = Daemon::launch(&ctx.bin, &home)?;
    daemon.wait_ready(Duration::from_secs(15))?;
    let (mut pid, _) = wait_sleeper(daemon.pid, "3611", None, Duration::from_secs(10))?;
    let mut stream = Stream::open(daemon.remote_port, "/events?process=ev")?;
    std::thread::sleep(Duration::from_millis(300));

    let mut latency = Vec::new();
    for _ in 0..repeats {
        let killed = Instant::now();
        anyhow::ensure!(sys::send(pid, sys::SIGKILL), "cannot kill the managed child {pid}");
        stream.read_until(b"\"to\":\"crashed\"", Duration::from_secs(5))?;
        latency.push(ms(killed.elapsed()));
        let (new_pid, _) = wait_sleeper(daemon.pid, "3611", Some(pid), Duration::from_secs(5))?;
        pid = new_pid;
        std::thread::sleep(Duration::from_millis(80));
        jitter(Duration::from_millis(40));
    }
    drop(stream);

    std::thread::sleep(Duration::from_millis(500));
    let before = sys::memory(daemon.pid).context("cannot read the monitor's memory")?;
    let streams: Vec<Stream> =
        (0..IDLE_STREAMS).map(|_| Stream::open(daemon.remote_port, "/events")).collect::<anyhow::Result<_>>()?;
    std::thread::sleep(Duration::from_secs(1));
    let with_streams = sys::memory(daemon.pid).context("cannot read the monitor's memory")?;
    drop(streams);
    daemon.stop(Duration::from_secs(15));

    let p99 = percentile(&latency, 99.0);
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(vec![
        Row::median(
            "event-latency",
            "crash → `state` event read off GET /events (SIGKILL → event), p50",
            "ms",
            latency.clone(),
        ),
        Row::median("event-latency-p99", "crash → `state` event read off GET /events, p99", "ms", latency).value(p99),
        Row::median(
            "rss-50-streams",
            &format!("monitor RSS with {IDLE_STREAMS} idle event streams (one process)"),
            "MiB",
            vec![mib(with_streams.rss_kib)],
        )
        .baseline("no stream", mib(before.rss_kib))
        .note(format!(
            "{:+.0} KiB for {IDLE_STREAMS} streams ({:.1} KiB each)",
            with_streams.rss_kib as f64 - before.rss_kib as f64,
            (with_streams.rss_kib as f64 - before.rss_kib as f64) / IDLE_STREAMS as f64
        )),
    ])
}
