//! `cargo xtask hot-code`: records which functions of the release `process_monitor` a monitor runs from its
//! start until it idles, and writes them to `crates/pm-cli/daemon-hot-code.txt`, the symbol ordering file the
//! release link uses to put them next to each other (see `crates/pm-cli/build.rs` and BENCHMARKS.md, "Daemon RSS
//! ≤ 5 MiB idle").
//!
//! Two monitors run in turn under `valgrind --tool=callgrind` (needs `valgrind`), each in a temporary home on free
//! loopback ports: one with no process (the idle budget), then one with three `sleep`s (the code a process's task
//! and its spawn run) and 200 processes registered (the code of maps larger than one leaf); each is asked
//! `GET /alive` once a second, as a health check would, and the second has a dashboard opened half-way (its page
//! and files, the event stream, a followed log). The functions of the first come first in the file, then
//! those only the second ran, each
//! group in the order of the current binary. Rerun it after changes to what the monitor runs at start-up or idle;
//! a stale file only costs memory (names the build no longer has are skipped), never correctness.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long each recorded monitor runs (valgrind makes its start-up about 50 times slower).
const RECORD_FOR: Duration = Duration::from_secs(25);
/// Processes registered, not started, beside the three `sleep`s of the second monitor: with a few entries the
/// maps of processes are one leaf each, and the code of larger ones (their inner nodes, their growth), which every
/// monitor with more than a dozen processes runs, was left out of the list and kept pages of its own resident
/// (about 0.7 MiB more of the binary at 10,000 registered; BENCHMARKS.md, issue 19).
const REGISTERED: usize = 200;

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(args.is_empty(), "usage: cargo xtask hot-code");
    let bins = crate::build_bins(true)?;
    let bin = bins
        .iter()
        .find(|(name, _)| name == "process_monitor")
        .map(|(_, path)| path.clone())
        .context("no process_monitor binary")?;
    let root = std::env::temp_dir().join(format!("pm-hot-code-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let recorded = record(&bin, &root, 0, 0).and_then(|idle| Ok((idle, record(&bin, &root, 3, REGISTERED)?)));
    let _ = std::fs::remove_dir_all(&root);
    let (idle, with_processes) = recorded?;
    let symbols = Command::new("nm").args(["-n", "--defined-only"]).arg(&bin).output().context("cannot run nm")?;
    anyhow::ensure!(symbols.status.success(), "nm failed on {}", bin.display());
    let functions: Vec<String> = String::from_utf8_lossy(&symbols.stdout)
        .lines()
        .filter_map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [_, "t" | "T" | "w" | "W", name] => Some(name.to_owned()),
            _ => None,
        })
        .collect();
    let mut listed: Vec<&str> = functions.iter().filter(|name| idle.contains(*name)).map(String::as_str).collect();
    let first = listed.len();
    listed.extend(
        functions.iter().filter(|name| with_processes.contains(*name) && !idle.contains(*name)).map(String::as_str),
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/pm-cli/daemon-hot-code.txt");
    std::fs::write(&out, listed.join("\n") + "\n").with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "hot-code: {first} functions run by an idle monitor, {} more with processes; wrote {}",
        listed.len() - first,
        out.display()
    );
    Ok(())
}

/// Runs `bin` under callgrind in a new home with `sleepers` autostart `sleep`s and `registered` more not started
/// for [`RECORD_FOR`], stops it with SIGTERM, and answers the names of the binary's own functions it executed.
fn record(
    bin: &Path,
    root: &Path,
    sleepers: usize,
    registered: usize,
) -> anyhow::Result<std::collections::HashSet<String>> {
    let home = root.join(format!("home-{sleepers}"));
    std::fs::create_dir_all(&home)?;
    let port = || -> anyhow::Result<u16> { Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port()) };
    let processes: serde_json::Map<String, serde_json::Value> = (0..sleepers + registered)
        .map(|idx| {
            let id = format!("s{idx}");
            let autostart = idx < sleepers;
            let entry =
                serde_json::json!({"id": id, "name": id, "command": "sleep", "args": ["60"], "autostart": autostart});
            (id, entry)
        })
        .collect();
    let (alive_port, remote_port) = (port()?, port()?);
    let registry = serde_json::json!({
        "version": 1,
        "instanceId": "default",
        "standaloneMode": true,
        "remoteAccess": {"startRemoteAccess": true, "remotePort": remote_port, "bindAddress": "127.0.0.1", "trustedHosts": ["127.0.0.1"]},
        "alivenessServer": {"enabled": true, "port": alive_port, "bindAddress": "127.0.0.1"},
        "processes": processes,
    });
    std::fs::write(home.join("processes_default.json"), serde_json::to_vec_pretty(&registry)?)?;
    let out = root.join(format!("callgrind-{sleepers}.out"));
    let mut child = Command::new("valgrind")
        .args(["--tool=callgrind", "--dump-instr=no", "--demangle=no"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(bin)
        .arg("--directory")
        .arg(&home)
        .args(["--foreground", "--standalone"])
        .env("RUST_LOG", "info")
        .env_remove("PROCESS_MONITOR_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run valgrind (apt-get install valgrind)")?;
    // `GET /alive` once a second, as a health check (and `cargo xtask bench`) does: the aliveness server's code is
    // run by every watched monitor, and left out of the list it kept pages of its own resident.
    let started = Instant::now();
    let mut dashboard = None;
    while started.elapsed() < RECORD_FOR {
        still_running(&mut child, started, bin, &home)?;
        ask_alive(alive_port);
        // With processes, a dashboard is opened half-way: its page and files, the event stream and a followed
        // log, kept open to the end (their code, left out of the list, was most of the RSS a dashboard added).
        if sleepers > 0 && dashboard.is_none() && started.elapsed() > RECORD_FOR / 2 {
            dashboard = Some(open_dashboard(remote_port));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(dashboard);
    // By its PID, with kill(1): the monitor stops as at any SIGTERM and callgrind writes its file.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the recorded monitor did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&out).with_context(|| format!("callgrind wrote no {}", out.display()))?;
    Ok(executed(&text, &bin.file_name().unwrap_or_default().to_string_lossy()))
}

/// Fails when the recorded monitor `child` has ended already: a monitor that ended early (a crash under valgrind)
/// recorded only its start-up, and its list would leave out what it never ran, silently.
fn still_running(child: &mut std::process::Child, started: Instant, bin: &Path, home: &Path) -> anyhow::Result<()> {
    match child.try_wait()? {
        None => Ok(()),
        Some(status) => anyhow::bail!(
            "the recorded monitor ended after {:.1} s ({status}); run `valgrind --tool=callgrind {} --directory {} \
             --foreground --standalone` to see why",
            started.elapsed().as_secs_f64(),
            bin.display(),
            home.display()
        ),
    }
}

/// What a dashboard asks of the remote API on 127.0.0.1:`port`: its page and files (answers read and ignored),
/// then `GET /events` and a followed log of `s0`, whose connections are answered and kept open.
fn open_dashboard(port: u16) -> Vec<std::net::TcpStream> {
    use std::io::{Read, Write};
    let connect = || std::net::TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1));
    for file in ["/", "/ui/app.js", "/ui/app.css", "/ui/icon.svg", "/processes", "/monitor/status"] {
        if let Ok(mut conn) = connect() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!("GET {file} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            if conn.write_all(request.as_bytes()).is_ok() {
                let _ = conn.read_to_end(&mut Vec::new());
            }
        }
    }
    let mut streams = Vec::new();
    for path in ["/events", "/processes/s0/logs?tail=200&follow=true"] {
        if let Ok(mut conn) = connect() {
            let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: 0-0\r\n\r\n");
            if conn.write_all(request.as_bytes()).is_ok() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = conn.read(&mut [0u8; 4096]);
                streams.push(conn);
            }
        }
    }
    streams
}

/// One `GET /alive` on 127.0.0.1:`port`, its answer read and ignored (the server may not be up yet).
fn ask_alive(port: u16) {
    use std::io::{Read, Write};
    let Ok(mut conn) =
        std::net::TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1))
    else {
        return;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    if conn.write_all(b"GET /alive HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_ok() {
        let _ = conn.read_to_end(&mut Vec::new());
    }
}

/// The functions callgrind saw executing in the object named `object` (its `ob=` and `fn=` lines; names are
/// given once with their number, then by number alone).
fn executed(callgrind: &str, object: &str) -> std::collections::HashSet<String> {
    let (mut objects, mut functions) = (std::collections::HashMap::new(), std::collections::HashMap::new());
    let mut in_object = false;
    let mut res = std::collections::HashSet::new();
    for line in callgrind.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        let Some(rest) = value.strip_prefix('(') else { continue };
        let Some((number, name)) = rest.split_once(')') else { continue };
        let name = name.trim();
        let table = match key {
            "ob" | "cob" => &mut objects,
            "fn" | "cfn" => &mut functions,
            _ => continue,
        };
        if !name.is_empty() {
            table.insert(number.to_owned(), name.to_owned());
        }
        let Some(name) = table.get(number) else { continue };
        match key {
            "ob" => in_object = Path::new(name).file_name().is_some_and(|file| file.to_string_lossy() == object),
            // Callgrind marks recursion levels as `name'2`.
            "fn" if in_object => {
                res.insert(name.split('\'').next().unwrap_or(name).to_owned());
            }
            _ => {}
        }
    }
    res
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_functions_of_one_object() {
        let text = "ob=(1) /x/process_monitor\nfn=(1) _ZN3foo\ncob=(2) /lib/libc.so.6\ncfn=(2) malloc\n\
                    ob=(2)\nfn=(2)\nob=(1)\nfn=(3) _ZN3bar'2\nfn=(1)\n";
        let found = super::executed(text, "process_monitor");
        let mut found: Vec<_> = found.into_iter().collect();
        found.sort();
        assert_eq!(found, ["_ZN3bar", "_ZN3foo"]);
    }
}
