//! Figures, targets and the two outputs: the console table and `target/bench/results.json`.

use serde_json::{json, Value};

/// The median of `samples` (0 when empty).
pub(crate) fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50.0)
}

/// The `p`th percentile (nearest rank) of `samples` (0 when empty).
pub(crate) fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    if p == 50.0 && sorted.len().is_multiple_of(2) {
        let mid = sorted.len() / 2;
        return (sorted[mid - 1] + sorted[mid]) / 2.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A bound a figure should stay within.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

impl Bound {
    fn holds(self, value: f64) -> bool {
        match self {
            Bound::AtMost(limit) => value <= limit,
            Bound::AtLeast(limit) => value >= limit,
        }
    }

    fn show(self, unit: &str) -> String {
        match self {
            Bound::AtMost(limit) => format!("≤ {} {unit}", num(limit)),
            Bound::AtLeast(limit) => format!("≥ {} {unit}", num(limit)),
        }
    }

    fn to_json(self) -> Value {
        match self {
            Bound::AtMost(limit) => json!({"op": "<=", "value": limit}),
            Bound::AtLeast(limit) => json!({"op": ">=", "value": limit}),
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Stable key in results.json.
    pub(crate) key: String,
    pub(crate) metric: String,
    /// The median (or the figure itself when there is one sample).
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) target: Option<Bound>,
    /// The same thing measured without the monitor in this run, and what it is.
    pub(crate) baseline: Option<(String, f64)>,
    /// A bound on value / baseline.
    pub(crate) ratio_target: Option<Bound>,
    pub(crate) samples: Vec<f64>,
    pub(crate) note: Option<String>,
}

impl Row {
    /// A row whose value is the median of `samples`.
    pub(crate) fn median(key: &str, metric: &str, unit: &'static str, samples: Vec<f64>) -> Row {
        Row {
            key: key.to_owned(),
            metric: metric.to_owned(),
            value: median(&samples),
            unit,
            target: None,
            baseline: None,
            ratio_target: None,
            samples,
            note: None,
        }
    }

    /// Replaces the value (for a figure that is not the median of the samples, such as a p99 or a rate).
    pub(crate) fn value(mut self, value: f64) -> Row {
        self.value = value;
        self
    }

    pub(crate) fn target(mut self, bound: Bound) -> Row {
        self.target = Some(bound);
        self
    }

    pub(crate) fn baseline(mut self, what: &str, value: f64) -> Row {
        self.baseline = Some((what.to_owned(), value));
        self
    }

    pub(crate) fn ratio_target(mut self, bound: Bound) -> Row {
        self.ratio_target = Some(bound);
        self
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Row {
        self.note = Some(note.into());
        self
    }

    pub(crate) fn ratio(&self) -> Option<f64> {
        self.baseline.as_ref().filter(|(_, base)| *base > 0.0).map(|(_, base)| self.value / base)
    }

    /// `Some(true)` when every target given holds, `None` when there is none.
    pub(crate) fn met(&self) -> Option<bool> {
        let mut res = None;
        if let Some(target) = self.target {
            res = Some(target.holds(self.value));
        }
        if let (Some(bound), Some(ratio)) = (self.ratio_target, self.ratio()) {
            res = Some(res.unwrap_or(true) && bound.holds(ratio));
        }
        res
    }

    fn target_text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(target) = self.target {
            parts.push(target.show(self.unit));
        }
        if let Some(bound) = self.ratio_target {
            parts.push(bound.show("×").replace(" ×", "×"));
        }
        if parts.is_empty() {
            "-".to_owned()
        } else {
            parts.join(", ")
        }
    }

    fn ratio_text(&self) -> String {
        match (&self.baseline, self.ratio()) {
            (Some((what, base)), Some(ratio)) => format!("{ratio:.2}× of {} {} ({what})", num(*base), self.unit),
            (Some((what, base)), None) => format!("{} {} ({what})", num(*base), self.unit),
            _ => "-".to_owned(),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "key": self.key,
            "metric": self.metric,
            "value": round(self.value),
            "unit": self.unit,
            "target": self.target.map(Bound::to_json),
            "baseline": self.baseline.as_ref().map(|(what, value)| json!({"what": what, "value": round(*value)})),
            "ratio": self.ratio().map(round),
            "ratioTarget": self.ratio_target.map(Bound::to_json),
            "met": self.met(),
            "repeats": self.samples.len(),
            "samples": self.samples.iter().map(|sample| round(*sample)).collect::<Vec<f64>>(),
            "note": self.note,
        })
    }
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// A figure with a sensible number of digits.
pub(crate) fn num(value: f64) -> String {
    let abs = value.abs();
    if abs >= 1000.0 {
        let int = value.round() as i64;
        let digits = int.abs().to_string();
        let mut grouped = String::new();
        for (idx, ch) in digits.chars().enumerate() {
            if idx > 0 && (digits.len() - idx).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(ch);
        }
        if int < 0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if abs >= 100.0 {
        format!("{value:.0}")
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else if abs >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// The table as Markdown (also what the console shows).
pub(crate) fn table(rows: &[Row]) -> String {
    let header = ["metric", "value", "target", "ratio / baseline", "met?"];
    let body: Vec<[String; 5]> = rows
        .iter()
        .map(|row| {
            [
                row.metric.clone(),
                format!("{} {}", num(row.value), row.unit),
                row.target_text(),
                row.ratio_text(),
                match row.met() {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "**no**".to_owned(),
                    None => "-".to_owned(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(|title| title.chars().count());
    for cells in &body {
        for (idx, cell) in cells.iter().enumerate() {
            widths[idx] = widths[idx].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(idx, cell)| format!("{cell}{}", " ".repeat(widths[idx] - cell.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut res = line(&header.map(str::to_owned));
    res.push_str(&line(&widths.map(|width| "-".repeat(width))));
    for cells in &body {
        res.push_str(&line(cells));
    }
    res
}

/// The machine the figures come from.
pub(crate) fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);
    let rustc = std::process::Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpuModel": cpu_model,
        "kernel": kernel,
        "memoryMiB": mem_kib / 1024,
        "rustc": rustc,
        "clkTck": crate::bench::sys::clk_tck(),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "date": utc_now(),
    })
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |at| at.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99.0), 99.0);
        assert_eq!(percentile(&hundred, 100.0), 100.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn targets() {
        let row = Row::median("k", "m", "ms", vec![2.0]).target(Bound::AtMost(3.0)).baseline("spawn", 0.5);
        assert_eq!(row.ratio(), Some(4.0));
        assert_eq!(row.met(), Some(true));
        let row = row.ratio_target(Bound::AtMost(2.0));
        assert_eq!(row.met(), Some(false));
        assert_eq!(num(1234.4), "1,234");
        assert_eq!(num(0.1234), "0.123");
    }

    #[test]
    fn dates() {
        let now = utc_now();
        assert_eq!(now.len(), 20);
        assert!(now.starts_with("20"));
    }
}
