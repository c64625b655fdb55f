//! Remote logs: `GET /processes/{id}/runs` (the kept run folders) and `GET /processes/{id}/logs` (the tail of a
//! run's `stdout.log` or `stderr.log`, optionally followed into later runs and through rotation).
//!
//! # Rotation
//! The supervisor rotates a live log by moving its head into `stdout.log.1` (older generations shift to `.2`,
//! ...), holding an exclusive `flock` on the live file while it does so. A follower holds a shared `flock` on the
//! live file while it looks at it, so it sees a rotation either entirely or not at all: when the inode of `.1`
//! changed since its last look, the new generations hold the head it may not have read yet. It reads their rest
//! (through file descriptors it opens then, so a further shift does not matter) and then the live file from its
//! shifted offset: nothing is lost or repeated. Only where the file system cannot collapse a range (not ext4 or
//! xfs) does rotation copy and truncate, and lines the child writes between the copy and the truncate are lost
//! for everybody.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;

use crate::sse::StreamTx;

/// Largest read per step of a follower (and the bound of its buffered partial line).
const CHUNK: usize = 64 * 1024;
/// Most bytes a tail answer holds (the last ones when the lines asked for are longer).
const MAX_TAIL_BYTES: u64 = 8 * 1024 * 1024;
/// Most lines `tail` may ask for.
pub(crate) const MAX_TAIL_LINES: usize = 100_000;
/// Lines of a `logs` answer without `tail`.
pub(crate) const DEFAULT_TAIL_LINES: usize = 100;
/// How often a follower looks for new lines, rotations and new run folders.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Highest rotated generation looked at.
const MAX_GENERATIONS: u32 = 100;

/// The query of `GET /processes/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogsQuery {
    pub(crate) file_name: &'static str,
    pub(crate) tail: usize,
    pub(crate) follow: bool,
    pub(crate) run: Option<String>,
}

impl LogsQuery {
    /// Parses the decoded query pairs; the error names the bad parameter.
    pub(crate) fn parse(pairs: &[(String, String)]) -> Result<LogsQuery, String> {
        let mut query = LogsQuery { file_name: "stdout.log", tail: DEFAULT_TAIL_LINES, follow: false, run: None };
        for (key, value) in pairs {
            match key.as_str() {
                "stream" => {
                    query.file_name = match value.as_str() {
                        "stdout" => "stdout.log",
                        "stderr" => "stderr.log",
                        _ => return Err("stream (must be stdout or stderr)".to_owned()),
                    }
                }
                "tail" => {
                    query.tail = value
                        .parse::<usize>()
                        .ok()
                        .filter(|lines| *lines <= MAX_TAIL_LINES)
                        .ok_or_else(|| format!("tail (must be 0 to {MAX_TAIL_LINES})"))?
                }
                "follow" => query.follow = parse_bool(value).ok_or("follow (must be true or false)")?,
                "run" => {
                    if !is_run_name(value) {
                        return Err("run (must be a run folder name such as 20250101_120000)".to_owned());
                    }
                    query.run = Some(value.clone());
                }
                other => return Err(format!("unknown query parameter {other:?}")),
            }
        }
        Ok(query)
    }
}

pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "true" | "1" | "" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Whether `name` looks like a run folder (`YYYYMMDD_HHMMSS` or `YYYYMMDD_HHMMSS_N`): nothing else is ever
/// joined to a path.
fn is_run_name(name: &str) -> bool {
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    let Some((date, rest)) = name.split_once('_') else { return false };
    let (time, number) = match rest.split_once('_') {
        Some((time, number)) => (time, Some(number)),
        None => (rest, None),
    };
    date.len() == 8 && digits(date) && time.len() == 6 && digits(time) && number.is_none_or(digits)
}

/// The JSON of one run folder in `GET /processes/{id}/runs`.
pub(crate) fn describe_runs(dirs: &[PathBuf]) -> Vec<serde_json::Value> {
    dirs.iter()
        .filter_map(|dir| {
            let name = dir.file_name()?.to_str()?.to_owned();
            let size = |file: &str| std::fs::metadata(dir.join(file)).map(|meta| meta.len()).unwrap_or(0);
            Some(serde_json::json!({
                "run": name,
                "stdoutBytes": size("stdout.log"),
                "stderrBytes": size("stderr.log"),
            }))
        })
        .collect()
}

/// The run folder `name` among `dirs`, or the newest without a name.
pub(crate) fn pick_run<'a>(dirs: &'a [PathBuf], name: Option<&str>) -> Option<&'a PathBuf> {
    match name {
        None => dirs.last(),
        Some(name) => dirs.iter().find(|dir| dir.file_name().and_then(|it| it.to_str()) == Some(name)),
    }
}

/// Opens `path` and holds a shared lock on it (against a rotation running at the same time). `Ok(None)` when the
/// file does not exist.
fn open_locked(path: &Path) -> std::io::Result<Option<File>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)?;
    Ok(Some(file))
}

/// Where the last `lines` lines of `file` (of length `len`) begin; never more than [`MAX_TAIL_BYTES`] back.
fn tail_start(file: &mut File, len: u64, lines: usize) -> std::io::Result<u64> {
    if lines == 0 {
        return Ok(len);
    }
    let floor = len.saturating_sub(MAX_TAIL_BYTES);
    let mut end = len;
    // A final line without its newline counts as a line.
    let mut newlines_needed = lines + 1;
    let mut last_byte_checked = false;
    let mut buf = vec![0u8; CHUNK];
    while end > floor {
        let start = end.saturating_sub(CHUNK as u64).max(floor);
        let block = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(block)?;
        for (idx, byte) in block.iter().enumerate().rev() {
            if !last_byte_checked {
                last_byte_checked = true;
                if *byte != b'\n' {
                    newlines_needed -= 1;
                }
            }
            if *byte == b'\n' {
                newlines_needed -= 1;
                if newlines_needed == 0 {
                    return Ok(start + idx as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(floor)
}

/// Where the last whole line between `start` and `len` ends (looked for in the last chunk only: a longer partial
/// line is sent in pieces anyway); `len` when there is no newline there.
fn last_line_end(file: &mut File, start: u64, len: u64) -> std::io::Result<u64> {
    let from = len.saturating_sub(CHUNK as u64).max(start);
    let mut buf = vec![0u8; (len - from) as usize];
    file.seek(SeekFrom::Start(from))?;
    file.read_exact(&mut buf)?;
    Ok(match buf.iter().rposition(|byte| *byte == b'\n') {
        Some(at) => from + at as u64 + 1,
        None if len - start > CHUNK as u64 => len,
        None => start,
    })
}

/// The identity of a file, to notice a rotation: device, inode and modification time (an inode freed by a shift of
/// the generations is often reused at once for the next `.1`; its modification time tells the two apart, and unlike
/// the change time it stays the same when a generation is renamed to the next).
type FileId = (u64, u64, i64, i64);

fn identity(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|meta| (meta.dev(), meta.ino(), meta.mtime(), meta.mtime_nsec()))
}

fn generation(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Follows one log file of a process from a run folder on, into later run folders and through rotations.
pub(crate) struct Follower {
    dir: PathBuf,
    file_name: &'static str,
    /// Offset in the live file up to which everything was read.
    offset: u64,
    /// Identity of `{file}.1` at the last look.
    generation_one: Option<FileId>,
    /// Rotated generations still to read (oldest first), opened when the rotation was noticed, with the offset to
    /// read from.
    rotated: Vec<(File, u64)>,
    /// Bytes after the last complete line.
    partial: Vec<u8>,
    /// For a one-off read: the length of the live file when it began (what is written later is not sent).
    until: Option<u64>,
    /// The length of the tail it starts with (the live file's end when it began, less the start offset).
    tail_bytes: u64,
}

/// What one step of a follower found.
pub(crate) struct Step {
    /// Complete lines (or a long partial line).
    pub(crate) data: Vec<u8>,
    /// More may be read at once.
    pub(crate) more: bool,
}

impl Follower {
    /// A follower of `file_name` in the run folder `dir`, starting at its last `tail` lines; with `snapshot` it
    /// reads only up to the file's present end.
    pub(crate) fn start(
        dir: PathBuf,
        file_name: &'static str,
        tail: usize,
        snapshot: bool,
    ) -> std::io::Result<Follower> {
        let path = dir.join(file_name);
        let mut follower = Follower {
            dir,
            file_name,
            offset: 0,
            generation_one: None,
            rotated: Vec::new(),
            partial: Vec::new(),
            until: snapshot.then_some(0),
            tail_bytes: 0,
        };
        if let Some(mut file) = open_locked(&path)? {
            follower.generation_one = identity(&generation(&path, 1));
            let len = file.metadata()?.len();
            follower.offset = tail_start(&mut file, len, tail)?;
            follower.until = snapshot.then_some(len);
            // A follower sends whole lines only: its tail ends after the last newline.
            follower.tail_bytes = match snapshot {
                true => len - follower.offset,
                false => last_line_end(&mut file, follower.offset, len)? - follower.offset,
            };
        }
        Ok(follower)
    }

    /// The length in bytes of the tail the answer begins with (the `X-Log-Tail-Bytes` header): what follows it
    /// was written after the request came.
    pub(crate) fn tail_bytes(&self) -> u64 {
        self.tail_bytes
    }

    /// The name of the run folder the answer begins in (the `X-Log-Run` header).
    pub(crate) fn run_name(&self) -> Option<&str> {
        self.dir.file_name().and_then(|name| name.to_str())
    }

    /// The bytes after the last complete line (at the end of a one-off read).
    fn take_partial(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.partial)
    }

    fn read_live(&mut self, file: &mut File, len: u64) -> std::io::Result<Vec<u8>> {
        let end = self.until.map_or(len, |until| until.min(len));
        let want = (end.saturating_sub(self.offset)).min(CHUNK as u64);
        let mut buf = Vec::with_capacity(want as usize);
        file.seek(SeekFrom::Start(self.offset))?;
        Read::by_ref(file).take(want).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        Ok(buf)
    }

    /// Reads what is new (at most one chunk). `next` is the run folder after this one (if there is one yet), to
    /// move on to once this run's file is read to its end.
    pub(crate) fn step(&mut self, next: Option<&Path>) -> std::io::Result<Step> {
        // Rotated generations first, in order.
        while let Some((file, offset)) = self.rotated.first_mut() {
            let mut buf = Vec::with_capacity(CHUNK);
            file.seek(SeekFrom::Start(*offset))?;
            Read::by_ref(file).take(CHUNK as u64).read_to_end(&mut buf)?;
            if buf.is_empty() {
                self.rotated.remove(0);
                continue;
            }
            *offset += buf.len() as u64;
            return Ok(Step { data: self.lines(buf), more: true });
        }
        let path = self.dir.join(self.file_name);
        let data = match open_locked(&path)? {
            None => Vec::new(),
            Some(mut file) => {
                let now_one = identity(&generation(&path, 1));
                if now_one.is_some() && now_one != self.generation_one {
                    // The present end moved with the rotation: a one-off read goes on to the end of the file.
                    self.until = None;
                    self.take_rotation(&path);
                    self.generation_one = now_one;
                    drop(file);
                    return Ok(Step { data: Vec::new(), more: true });
                }
                let len = file.metadata()?.len();
                if len < self.offset {
                    // Truncated by someone else than the rotation: start over.
                    tracing::debug!(path = %path.display(), "log file shrank; reading it from its start");
                    self.offset = 0;
                }
                self.read_live(&mut file, len)?
            }
        };
        if !data.is_empty() {
            return Ok(Step { data: self.lines(data), more: true });
        }
        match next {
            Some(next) if next != self.dir => {
                // This run's file is read to its end (just now, after the newer folder was seen): go on there.
                let mut data = std::mem::take(&mut self.partial);
                if !data.is_empty() {
                    data.push(b'\n');
                }
                self.dir = next.to_path_buf();
                self.offset = 0;
                self.generation_one = identity(&generation(&self.dir.join(self.file_name), 1));
                Ok(Step { data, more: true })
            }
            _ => Ok(Step { data: Vec::new(), more: false }),
        }
    }

    /// A rotation happened (the lock is held): open the new generations and shift the offset past them.
    fn take_rotation(&mut self, path: &Path) {
        // The generations made since the last look: those before the one that was `.1` then.
        let mut new_generations = Vec::new();
        for n in 1..=MAX_GENERATIONS {
            let gen_path = generation(path, n);
            let id = identity(&gen_path);
            if id.is_none() || id == self.generation_one {
                break;
            }
            new_generations.push(gen_path);
        }
        // Oldest first: each holds the head of what followed it.
        for gen_path in new_generations.into_iter().rev() {
            let Ok(file) = File::open(&gen_path) else { continue };
            let len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
            if self.offset < len {
                self.rotated.push((file, self.offset));
                self.offset = 0;
            } else {
                self.offset -= len;
            }
        }
    }

    /// Adds `data` to the partial line; answers the complete lines (or everything, when the partial line grew
    /// past a chunk).
    fn lines(&mut self, data: Vec<u8>) -> Vec<u8> {
        self.partial.extend(data);
        match self.partial.iter().rposition(|byte| *byte == b'\n') {
            Some(last) => {
                let rest = self.partial.split_off(last + 1);
                std::mem::replace(&mut self.partial, rest)
            }
            None if self.partial.len() > CHUNK => std::mem::take(&mut self.partial),
            None => Vec::new(),
        }
    }
}

/// The run folder after `current` among `runs` (oldest first): the next one, or the newest when `current` is no
/// longer listed (pruned); `None` while `current` is the newest.
fn next_run(runs: Vec<PathBuf>, current: &Path) -> Option<PathBuf> {
    match runs.iter().position(|run| run == current) {
        Some(at) => runs.into_iter().nth(at + 1),
        None => runs.into_iter().last().filter(|run| run != current),
    }
}

/// Streams a log step by step: with `follow` until the client goes away or `closing` says the monitor is shutting
/// down (`runs` lists the process's run folders, oldest first), else until the end of the file.
pub(crate) async fn follow(
    mut follower: Follower,
    follow: bool,
    runs: Arc<dyn Fn() -> Vec<PathBuf> + Send + Sync>,
    tx: StreamTx,
    closing: impl Fn() -> bool,
) {
    loop {
        if closing() {
            return;
        }
        let runs_now = runs.clone();
        let stepped = tokio::task::spawn_blocking(move || {
            let next = if follow { next_run(runs_now(), &follower.dir) } else { None };
            let res = follower.step(next.as_deref());
            (follower, res)
        })
        .await;
        let Ok((back, res)) = stepped else { return };
        follower = back;
        let step = match res {
            Ok(step) => step,
            Err(err) => {
                tracing::warn!("cannot follow a log: {err}");
                return;
            }
        };
        if !step.data.is_empty() && tx.send(Bytes::from(step.data), || None).await.is_err() {
            return;
        }
        if !step.more && !follow {
            let rest = follower.take_partial();
            if !rest.is_empty() {
                let _ = tx.send(Bytes::from(rest), || None).await;
            }
            return;
        }
        if !step.more {
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                () = tx.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pm-http-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    /// Rotation as the supervisor does it where ranges cannot be collapsed: under an exclusive lock, shift the
    /// generations, copy the whole file to `.1`, truncate.
    fn rotate(path: &Path) {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).unwrap();
        if generation(path, 1).exists() {
            std::fs::rename(generation(path, 1), generation(path, 2)).unwrap();
        }
        std::fs::copy(path, generation(path, 1)).unwrap();
        file.set_len(0).unwrap();
    }

    fn drain(follower: &mut Follower, next: Option<&Path>) -> String {
        let mut res = Vec::new();
        loop {
            let step = follower.step(next).unwrap();
            res.extend(step.data);
            if !step.more {
                return String::from_utf8(res).unwrap();
            }
        }
    }

    #[test]
    fn queries() {
        let pairs = |text: &[(&str, &str)]| -> Vec<(String, String)> {
            text.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let query = LogsQuery::parse(&pairs(&[("stream", "stderr"), ("tail", "5"), ("follow", "true")])).unwrap();
        assert_eq!((query.file_name, query.tail, query.follow), ("stderr.log", 5, true));
        assert_eq!(LogsQuery::parse(&[]).unwrap().tail, DEFAULT_TAIL_LINES);
        assert!(LogsQuery::parse(&pairs(&[("stream", "stdin")])).is_err());
        assert!(LogsQuery::parse(&pairs(&[("tail", "-1")])).is_err());
        assert!(LogsQuery::parse(&pairs(&[("run", "../../etc")])).is_err());
        assert!(LogsQuery::parse(&pairs(&[("run", "20250101_120000_2")])).is_ok());
        assert!(LogsQuery::parse(&pairs(&[("color", "1")])).is_err());
    }

    #[test]
    fn next_runs() {
        let runs: Vec<PathBuf> = ["a/1", "a/2", "a/3"].iter().map(PathBuf::from).collect();
        assert_eq!(next_run(runs.clone(), Path::new("a/1")), Some(PathBuf::from("a/2")));
        assert_eq!(next_run(runs.clone(), Path::new("a/3")), None);
        assert_eq!(next_run(runs.clone(), Path::new("a/0")), Some(PathBuf::from("a/3")));
        assert_eq!(next_run(Vec::new(), Path::new("a/0")), None);
    }

    /// A one-off read of the last `tail` lines, as `GET .../logs` without `follow` does it.
    fn one_off(dir: &Path, file_name: &'static str, tail: usize) -> Vec<u8> {
        let mut follower = Follower::start(dir.to_path_buf(), file_name, tail, true).unwrap();
        let mut res = drain(&mut follower, None).into_bytes();
        res.extend(follower.take_partial());
        res
    }

    #[test]
    fn the_tail_length_counts_whole_lines_for_a_follower() {
        let dir = scratch("tail-bytes");
        append(&dir.join("stdout.log"), "a\nbb\npart");
        // The partial line counts as one of the lines asked for, but a follower does not send it yet.
        let follower = Follower::start(dir.clone(), "stdout.log", 3, false).unwrap();
        assert_eq!(follower.tail_bytes(), 5, "a, bb");
        let follower = Follower::start(dir.clone(), "stdout.log", 2, true).unwrap();
        assert_eq!(follower.tail_bytes(), 7, "a one-off read sends the partial line at its end");
        let follower = Follower::start(dir.clone(), "stdout.log", 0, false).unwrap();
        assert_eq!(follower.tail_bytes(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tails() {
        let dir = scratch("tail");
        let path = dir.join("stdout.log");
        append(&path, "a\nb\nc\n");
        assert_eq!(one_off(&dir, "stdout.log", 2), b"b\nc\n");
        assert_eq!(one_off(&dir, "stdout.log", 10), b"a\nb\nc\n");
        assert_eq!(one_off(&dir, "stdout.log", 0), b"");
        append(&path, "partial");
        assert_eq!(one_off(&dir, "stdout.log", 2), b"c\npartial");
        assert_eq!(one_off(&dir, "missing.log", 2), b"");
        // A one-off read ends at the end the file had when it began.
        let mut follower = Follower::start(dir.clone(), "stdout.log", 1, true).unwrap();
        append(&path, "\nlater\n");
        assert_eq!(drain(&mut follower, None), "");
        assert_eq!(follower.take_partial(), b"partial");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn follows_through_rotations_and_into_the_next_run() {
        let dir = scratch("follow");
        let (run1, run2) = (dir.join("20250101_120000"), dir.join("20250101_120001"));
        std::fs::create_dir_all(&run1).unwrap();
        let path = run1.join("stdout.log");
        append(&path, "old1\nold2\n");
        let mut follower = Follower::start(run1.clone(), "stdout.log", 1, false).unwrap();
        assert_eq!(drain(&mut follower, None), "old2\n");
        append(&path, "l1\nl2\npart");
        assert_eq!(drain(&mut follower, None), "l1\nl2\n");
        append(&path, "ial\nl3\n");
        rotate(&path);
        append(&path, "l4\n");
        assert_eq!(drain(&mut follower, None), "partial\nl3\nl4\n");
        // One rotation while an older generation is kept (renamed to `.2`): only the new `.1` is read.
        append(&path, "l4b\n");
        rotate(&path);
        append(&path, "l4c\n");
        assert_eq!(drain(&mut follower, None), "l4b\nl4c\n");
        // Two rotations between looks, the second after the follower had read part of the first's head.
        append(&path, "l5\n");
        assert_eq!(drain(&mut follower, None), "l5\n");
        append(&path, "l6\n");
        rotate(&path);
        append(&path, "l7\n");
        rotate(&path);
        append(&path, "l8\n");
        assert_eq!(drain(&mut follower, None), "l6\nl7\nl8\n");
        // The next run: the rest of this one first, then the new one from its start.
        append(&path, "last");
        std::fs::create_dir_all(&run2).unwrap();
        append(&run2.join("stdout.log"), "second\n");
        assert_eq!(drain(&mut follower, Some(&run2)), "last\nsecond\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
