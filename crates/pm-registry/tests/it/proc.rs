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

#[test]
fn a_group_is_signalled_as_a_whole_and_gone_once_reaped() {
    use std::os::unix::process::CommandExt;
    let mut child = ChildGuard::spawn(Command::new("sleep").arg("30").stdout(Stdio::null()).process_group(0));
    let pgid = child.pid();
    assert!(proc::group_exists(pgid) && proc::group_alive(pgid));
    assert!(proc::is_group_member(pgid, pgid));
    assert_eq!(proc::stat(pgid).map(|stat| stat.pgrp), Some(pgid));
    assert!(proc::signal_group(pgid, 0), "signal 0 probes the group");
    assert!(proc::signal_group(pgid, libc::SIGKILL));
    assert!(wait_for(Duration::from_secs(10), || !proc::group_alive(pgid)), "the group never ended");
    assert!(!child.wait_timeout(Duration::from_secs(5)).success());
    assert!(!proc::group_exists(pgid) && !proc::signal_group(pgid, libc::SIGKILL));
    // Groups 0 and 1 (this process's own and init's) are never signalled, nor PID 0, 1 or this process.
    assert!(!proc::signal_group(0, 0) && !proc::signal_group(1, 0));
    for pid in [0, 1, std::process::id()] {
        let err = proc::signal_process(pid, 0).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "pid {pid}");
    }
}

#[test]
fn a_leader_without_a_group_is_signalled_alone_while_it_is_the_same_process() {
    // In this test's own process group: it leads none.
    let mut child = ChildGuard::spawn(Command::new("sleep").arg("30").stdout(Stdio::null()));
    let process = proc::Process::new(child.pid(), proc::start_time(child.pid()));
    assert!(process.is_running());
    assert!(!proc::Process::new(process.pid, process.start_time.map(|ticks| ticks + 1)).is_running());
    // A later process reusing the PID is not signalled.
    assert!(!proc::signal_leader(proc::Process::new(process.pid, process.start_time.map(|ticks| ticks + 1)), 0));
    assert!(proc::signal_leader(process, libc::SIGKILL));
    assert!(!child.wait_timeout(Duration::from_secs(5)).success());
    assert!(!process.is_running());
}

#[test]
fn a_detached_child_leads_a_session_and_group_of_its_own() {
    let mut command = Command::new("sleep");
    command.arg("30").stdout(Stdio::null());
    proc::detach(&mut command);
    let child = ChildGuard::spawn(&mut command);
    let text = std::fs::read_to_string(format!("/proc/{}/stat", child.pid())).unwrap();
    // Fields 5 and 6 (after the command name): process group and session.
    let fields: Vec<&str> = text.rsplit(')').next().unwrap().split_whitespace().collect();
    let own = child.pid().to_string();
    assert_eq!((fields[2], fields[3]), (own.as_str(), own.as_str()), "{text}");
    assert_ne!(proc::stat(child.pid()).map(|stat| stat.pgrp), proc::stat(std::process::id()).map(|stat| stat.pgrp));
}
