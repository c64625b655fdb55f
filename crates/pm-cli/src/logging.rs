//! The monitor's own log: `{id}_logs/{YYYYMMDD_HHMMSS}_{id}.log`, plus the console in the foreground.

use std::sync::Mutex;

use pm_core::Timestamp;
use pm_registry::Paths;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the subscriber: `RUST_LOG` (default `info`) filters; output goes to a new log file in
/// `{id}_logs/_monitor/`, and to stderr when `console`. Keeps the newest `keep` monitor log files.
///
/// A log file that cannot be opened never stops the monitor (a monitor that restarts itself must come back
/// whatever is in its log folder, or its children would run unsupervised): it then logs to stderr only, and the
/// reason is the first thing it logs. Answers the log file, `None` in that case.
pub(crate) fn init(paths: &Paths, console: bool, keep: usize) -> Option<std::path::PathBuf> {
    let file_path = paths.monitor_log_file(Timestamp::now());
    let opened = pm_registry::create_private_dir_all(&paths.monitor_dir())
        .map_err(|err| format!("cannot create {}: {err}", paths.monitor_dir().display()))
        .and_then(|()| {
            pm_registry::open_private_append(&file_path)
                .map_err(|err| format!("cannot open log {}: {err}", file_path.display()))
        });
    if opened.is_ok() {
        prune(paths, keep);
    }
    // RUST_LOG as `level` or `target=level,...` (no regex-based filter: it would double the daemon's code).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer().with_target(false).with_ansi(false);
    match opened {
        Ok(file) => {
            let file = Mutex::new(file);
            if console {
                let writer = Escaping(file.and(std::io::stderr));
                tracing_subscriber::registry().with(layer.with_writer(writer)).with(filter).init();
            } else {
                tracing_subscriber::registry().with(layer.with_writer(Escaping(file))).with(filter).init();
            }
            Some(file_path)
        }
        Err(reason) => {
            tracing_subscriber::registry().with(layer.with_writer(Escaping(std::io::stderr))).with(filter).init();
            tracing::error!("{reason}; logging to stderr only");
            None
        }
    }
}

/// Escapes control characters in every log line (a name, command, path or error with a newline or an ESC in it
/// can neither forge a line of the log nor drive the terminal that shows it); only the newline that ends the
/// line stays.
struct Escaping<M>(M);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        EscapingWriter(self.0.make_writer_for(meta))
    }
}

/// Writes each buffer (the formatter hands over one whole event per write) with its control characters escaped.
struct EscapingWriter<W>(W);

impl<W: std::io::Write> std::io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(escape_line(buf).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `buf` as one line: control characters escaped, one final newline kept.
fn escape_line(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf);
    let (body, newline) = match text.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (&*text, ""),
    };
    format!("{}{newline}", pm_core::escape_control(body))
}

/// Deletes all but the newest `keep` monitor log files of this instance.
fn prune(paths: &Paths, keep: usize) {
    let suffix = format!("_{}.log", paths.instance_id());
    let Ok(entries) = std::fs::read_dir(paths.monitor_dir()) else { return };
    let mut logs: Vec<_> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file())
                && path.file_name().and_then(|name| name.to_str()).is_some_and(|name| {
                    name.ends_with(&suffix) && name.as_bytes().first().is_some_and(u8::is_ascii_digit)
                })
        })
        .collect();
    logs.sort();
    let excess = logs.len().saturating_sub(keep.max(1));
    for path in logs.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_log_line_cannot_be_forged() {
        let line = b"2026-12-07T05:00:00Z  WARN process started name=x\n2026-12-07T05:00:01Z  INFO forged \x1b[2J\n";
        let escaped = super::escape_line(line);
        assert_eq!(escaped.matches('\n').count(), 1, "{escaped:?}");
        assert!(escaped.ends_with("\\e[2J\n"), "{escaped:?}");
        assert!(!escaped.contains('\x1b'));
        assert_eq!(super::escape_line(b"plain\n"), "plain\n");
    }
}
