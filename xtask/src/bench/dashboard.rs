//! 8: what an open dashboard costs the monitor: resident memory with the traffic of one open page (its files,
//! the event stream, a followed log, and the status and monitor reads it makes every 2 s) against none.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context;

use crate::bench::home::{sleeper, Daemon, Home};
use crate::bench::http::Conn;
use crate::bench::report::{Bound, Row};
use crate::bench::scenarios::progress;
use crate::bench::{sys, Ctx};

/// Opens a streamed `GET` (the page's event stream or log tail) and checks its 200; the socket stays open.
fn open_stream(port: u16, path: &str, extra: &str) -> anyhow::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut socket = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).context("cannot connect")?;
    socket.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n").as_bytes())?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = [0u8; 12];
    socket.read_exact(&mut head)?;
    anyhow::ensure!(head.starts_with(b"HTTP/1.1 200"), "GET {path}: {}", String::from_utf8_lossy(&head));
    Ok(socket)
}

/// Resident memory of the monitor in KiB, the median of three samples 200 ms apart.
fn rss(pid: u32) -> anyhow::Result<f64> {
    let mut samples = Vec::new();
    for _ in 0..3 {
        samples.push(sys::memory(pid).context("cannot read the monitor's memory")?.rss_kib as f64);
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(crate::bench::report::median(&samples))
}

pub(crate) fn dashboard(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let cycles = if ctx.config.quick { 5 } else { 30 };
    progress(&format!("monitor memory with and without one open dashboard ({cycles} refresh cycles)"));
    let home = Home::new(ctx.root, "dashboard")?;
    home.write_registry(vec![sleeper("d1", "3621", true), sleeper("d2", "3622", true), sleeper("d3", "3623", true)])?;
    let mut daemon = Daemon::launch(&ctx.bin, &home)?;
    daemon.wait_ready(Duration::from_secs(15))?;
    let port = daemon.remote_port;
    // The same reads without a page first, so that what is measured is the page's own cost.
    let mut conn = Conn::connect(port)?;
    for _ in 0..3 {
        conn.get("/processes")?;
        conn.get("/monitor/status")?;
    }
    drop(conn);
    std::thread::sleep(Duration::from_secs(2));
    let without = rss(daemon.pid)?;

    let mut conn = Conn::connect(port)?;
    for file in ["/", "/ui/app.js", "/ui/app.css", "/ui/icon.svg"] {
        let res = conn.get(file)?;
        anyhow::ensure!(res.status == 200, "GET {file}: {}", res.status);
    }
    let events = open_stream(port, "/events", "Last-Event-ID: 0-0\r\n")?;
    let log = open_stream(port, "/processes/d1/logs?tail=200&follow=true", "")?;
    for _ in 0..cycles {
        anyhow::ensure!(conn.get("/processes")?.status == 200, "GET /processes failed");
        anyhow::ensure!(conn.get("/monitor/status")?.status == 200, "GET /monitor/status failed");
        std::thread::sleep(Duration::from_secs(2));
    }
    let with = rss(daemon.pid)?;
    drop((events, log, conn));
    daemon.stop(Duration::from_secs(15));

    let delta_mib = (with - without) / 1024.0;
    Ok(vec![Row::median(
        "rss-dashboard",
        "monitor RSS growth with one dashboard open (3 processes)",
        "MiB",
        vec![delta_mib],
    )
    .target(Bound::AtMost(0.3))
    .note(format!(
        "{:.2} MiB without, {:.2} MiB with: page files, event stream, followed log, reads every 2 s",
        without / 1024.0,
        with / 1024.0
    ))])
}
