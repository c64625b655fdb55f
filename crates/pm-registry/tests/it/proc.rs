//! PID liveness and start times against real processes.

use std::process::{Command, Stdio};
use std::time::Duration;

use pm_registry::proc;

use crate::support::{wait_for, ChildGuard};

#[test]
fn this_process_is_alive_with_a_start_time() {
    let proc::Process { pid: own, start_time: start } = proc::Process::current();
    assert_eq!(own, std::process::id());
    assert!(proc::alive(own));
    let start = start.expect("a start time on Linux");
    assert_eq!(proc::start_time(own), Some(start));
    assert!(proc::is_same_process(own, Some(start)));
    assert!(proc::is_same_process(own, None));
    assert!(!proc::is_same_process(own, Some(start + 1)));
}

#[test]
fn a_running_child_is_alive_and_the_same() {
    let child = ChildGuard::spawn(Command::new("sleep").arg("30").stdout(Stdio::null()));
    assert!(proc::alive(child.pid()));
    let start = proc::start_time(child.pid());
    assert!(start.is_some());
    assert!(proc::is_same_process(child.pid(), start));
}

#[test]
fn a_reaped_child_is_dead() {
    let mut child = Command::new("true").stdout(Stdio::null()).spawn().unwrap();
    let child_pid = child.id();
    child.wait().unwrap();
    assert!(!proc::alive(child_pid));
    assert_eq!(proc::start_time(child_pid), None);
    assert!(!proc::is_same_process(child_pid, None));
}

#[test]
fn a_zombie_is_not_alive() {
    let mut child = ChildGuard::spawn(Command::new("true").stdout(Stdio::null()));
    let child_pid = child.pid();
    assert!(wait_for(Duration::from_secs(10), || !proc::alive(child_pid)), "child never exited");
    // Not reaped yet: the process table still has it, as a zombie.
    let stat = std::fs::read_to_string(format!("/proc/{child_pid}/stat")).unwrap();
    assert!(stat.rsplit(')').next().unwrap().trim_start().starts_with('Z'), "{stat}");
    assert!(!proc::is_same_process(child_pid, None));
    assert!(child.wait_timeout(Duration::from_secs(5)).success());
}
