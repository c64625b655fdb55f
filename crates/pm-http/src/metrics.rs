//! `GET /metrics`: the monitor and its processes in the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;

use pm_core::{MonitorStatus, ProcessState, ProcessStatus};

/// One per-process metric family: name, type, help, and how to read its value.
type Series = (&'static str, &'static str, &'static str, fn(&ProcessStatus) -> Option<f64>);

/// Renders the metrics of a monitor and its processes.
pub fn render(monitor: &MonitorStatus, processes: &[ProcessStatus]) -> String {
    let mut out = String::with_capacity(256 + processes.len() * 1024);
    let instance = escape(&monitor.instance_id);

    family(&mut out, "pm_monitor_info", "gauge", "Monitor instance and version (always 1).");
    let version = escape(monitor.version.as_deref().unwrap_or("unknown"));
    let _ = writeln!(out, "pm_monitor_info{{instance=\"{instance}\",version=\"{version}\",pid=\"{}\"}} 1", monitor.pid);
    family(&mut out, "pm_monitor_uptime_seconds", "gauge", "Seconds since this monitor process started.");
    let _ = writeln!(out, "pm_monitor_uptime_seconds{{instance=\"{instance}\"}} {}", monitor.uptime);
    family(&mut out, "pm_monitor_processes", "gauge", "Registered processes.");
    let _ = writeln!(out, "pm_monitor_processes{{instance=\"{instance}\"}} {}", monitor.managed_process_count);
    family(&mut out, "pm_monitor_running_processes", "gauge", "Processes in state running.");
    let _ = writeln!(out, "pm_monitor_running_processes{{instance=\"{instance}\"}} {}", monitor.running_process_count);
    family(&mut out, "pm_monitor_standalone", "gauge", "1 when partner monitoring is off.");
    let _ = writeln!(out, "pm_monitor_standalone{{instance=\"{instance}\"}} {}", u8::from(monitor.standalone_mode));
    if let Some(containment) = &monitor.containment {
        family(
            &mut out,
            "pm_monitor_containment",
            "gauge",
            "How processes are contained (`cgroup` or `process-group`; always 1).",
        );
        let reason = escape(monitor.containment_reason.as_deref().unwrap_or(""));
        let _ = writeln!(
            out,
            "pm_monitor_containment{{instance=\"{instance}\",mode=\"{}\",reason=\"{reason}\"}} 1",
            escape(containment)
        );
    }
    if let Some(partner) = &monitor.partner_instance_id {
        family(&mut out, "pm_monitor_partner_up", "gauge", "1 when the partner instance answers its checks.");
        let up = u8::from(monitor.partner_status.as_deref() == Some("alive"));
        let _ = writeln!(out, "pm_monitor_partner_up{{instance=\"{instance}\",partner=\"{}\"}} {up}", escape(partner));
    }

    family(&mut out, "pm_process_state", "gauge", "1 for the state the process is in, 0 for the others.");
    for process in processes {
        let id = escape(&process.id);
        for state in ProcessState::ALL {
            let value = u8::from(process.state == state);
            let _ = writeln!(out, "pm_process_state{{instance=\"{instance}\",id=\"{id}\",state=\"{state}\"}} {value}");
        }
    }
    let series: [Series; 7] = [
        ("pm_process_restarts_total", "counter", "Restarts after crashes since the monitor started.", |p| {
            p.restarts_total.map(|n| n as f64)
        }),
        ("pm_process_restart_attempts", "gauge", "Restart attempts since the last reset.", |p| {
            Some(f64::from(p.restart_attempts))
        }),
        ("pm_process_uptime_seconds", "gauge", "Seconds since the current run started.", |p| {
            p.uptime.map(|n| n as f64)
        }),
        ("pm_process_cpu_percent", "gauge", "CPU use of the process group, percent of one core.", |p| {
            p.cpu_percent.map(f64::from)
        }),
        ("pm_process_memory_bytes", "gauge", "Resident memory of the process group.", |p| {
            p.memory_bytes.map(|n| n as f64)
        }),
        ("pm_process_check_failures_total", "counter", "Failed aliveness and startup checks.", |p| {
            p.check_failures_total.map(|n| n as f64)
        }),
        ("pm_process_check_duration_seconds", "gauge", "Duration of the last aliveness or startup check.", |p| {
            p.last_check_ms.map(|ms| ms / 1000.0)
        }),
    ];
    for (name, kind, help, value_of) in series {
        family(&mut out, name, kind, help);
        for process in processes {
            if let Some(value) = value_of(process) {
                let _ =
                    writeln!(out, "{name}{{instance=\"{instance}\",id=\"{}\"}} {}", escape(&process.id), number(value));
            }
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped as the format requires.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else if value.is_nan() {
        "NaN".to_owned()
    } else if value > 0.0 {
        "+Inf".to_owned()
    } else {
        "-Inf".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }

    #[test]
    fn numbers_are_prometheus_numbers() {
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}
