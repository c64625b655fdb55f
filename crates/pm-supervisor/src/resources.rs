//! CPU and memory of managed process groups, read from `/proc` on demand and cached briefly, so asking for
//! status often costs little and an idle monitor costs nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long one sample serves before `/proc` is read again.
const MAX_AGE: Duration = Duration::from_secs(1);

/// Resource use of one process group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    /// CPU in percent of one core since the previous sample (`None` on the first sample).
    pub(crate) cpu_percent: Option<f32>,
    /// Resident memory of all processes in the group.
    pub(crate) rss_bytes: u64,
}

/// Samples process groups on request.
#[derive(Default)]
pub(crate) struct Sampler {
    taken_at: Option<Instant>,
    usage: HashMap<u32, Usage>,
    /// CPU ticks per group and when they were read, for the next percentage.
    ticks: HashMap<u32, (u64, Instant)>,
}

impl Sampler {
    /// Usage of the groups led by `pgids` (our children lead their groups), from a sample at most a second
    /// old; groups not in the last sample trigger a new one.
    pub(crate) fn usage(&mut self, pgids: &[u32]) -> HashMap<u32, Usage> {
        let fresh = self.taken_at.is_some_and(|at| at.elapsed() < MAX_AGE);
        if !fresh || pgids.iter().any(|pgid| !self.usage.contains_key(pgid)) {
            self.sample(pgids);
        }
        pgids.iter().filter_map(|pgid| Some((*pgid, *self.usage.get(pgid)?))).collect()
    }

    fn sample(&mut self, pgids: &[u32]) {
        let now = Instant::now();
        let totals = read_groups(pgids);
        let ticks_per_sec = clock_ticks();
        let mut usage = HashMap::new();
        let mut ticks = HashMap::new();
        for (pgid, (cpu_ticks, rss_bytes)) in totals {
            let cpu_percent = self.ticks.get(&pgid).and_then(|(before, at)| {
                let wall = now.duration_since(*at).as_secs_f64();
                (wall > 0.0 && cpu_ticks >= *before)
                    .then(|| ((cpu_ticks - before) as f64 / ticks_per_sec / wall * 100.0) as f32)
            });
            usage.insert(pgid, Usage { cpu_percent, rss_bytes });
            ticks.insert(pgid, (cpu_ticks, now));
        }
        self.usage = usage;
        self.ticks = ticks;
        self.taken_at = Some(now);
    }
}

/// Resident memory in bytes of each process group led by `pgids` (one `/proc` scan; Linux only, empty
/// elsewhere). For callers outside a monitor, such as the CLI's local `list`.
pub fn group_memory(pgids: &[u32]) -> HashMap<u32, u64> {
    read_groups(pgids).into_iter().map(|(pgid, (_, rss))| (pgid, rss)).collect()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// (CPU ticks, RSS bytes) summed over the processes of each group in `pgids`.
#[cfg(target_os = "linux")]
fn read_groups(pgids: &[u32]) -> HashMap<u32, (u64, u64)> {
    let mut res: HashMap<u32, (u64, u64)> = HashMap::new();
    if pgids.is_empty() {
        return res;
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let Ok(entries) = std::fs::read_dir("/proc") else { return res };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((pgrp, ticks, rss_pages)) = parse_stat(&stat) else { continue };
        if pgids.contains(&pgrp) {
            let slot = res.entry(pgrp).or_default();
            slot.0 += ticks;
            slot.1 += rss_pages * page;
        }
    }
    res
}

#[cfg(not(target_os = "linux"))]
fn read_groups(_pgids: &[u32]) -> HashMap<u32, (u64, u64)> {
    HashMap::new()
}

/// (process group, utime + stime, rss pages) from a `/proc/{pid}/stat` line.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_stat(stat: &str) -> Option<(u32, u64, u64)> {
    // The command name is in parentheses and may contain anything; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3 of the line); pgrp is field 5, utime 14, stime 15, rss 24.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((u32::try_from(field(5)?).ok()?, field(14)? + field(15)?, field(24)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_command_name() {
        let line = "1234 (my) (proc 1) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 555 1000000 250 1844 0";
        assert_eq!(parse_stat(line), Some((1234, 10, 250)));
    }

    #[test]
    fn garbage_stat_is_none() {
        assert_eq!(parse_stat("no parens here"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn samples_our_own_group() {
        // SAFETY: getpgrp has no preconditions.
        let pgid = unsafe { libc::getpgrp() } as u32;
        let mut sampler = Sampler::default();
        let usage = sampler.usage(&[pgid]);
        let ours = usage.get(&pgid).expect("our own group is visible");
        assert!(ours.rss_bytes > 0);
        assert_eq!(ours.cpu_percent, None, "no percentage from a single sample");
    }
}
