//! Starting a child directly in its cgroup: `clone3` with `CLONE_INTO_CGROUP`, then `exec`.
//!
//! Moving a process between cgroups (a write to `cgroup.procs`) takes the kernel's cgroup thread-group lock for
//! writing, which waits for an RCU grace period: several milliseconds per start. A child cloned into its cgroup
//! takes that lock only for reading, so a start costs what a plain fork and exec cost. Between the clone and
//! the exec the child makes system calls only (no allocation, no lock), from buffers prepared before the clone.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use rustix::process::{Pid, WaitOptions, WaitStatus};

/// `CLONE_PIDFD`: the kernel returns a pidfd of the child.
const CLONE_PIDFD: u64 = 0x1000;
/// `CLONE_INTO_CGROUP` (Linux 5.7): the child starts in the cgroup of the directory fd in `cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of clone3(2) (the 5.7 layout, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What the child needs, all prepared before the clone.
pub(crate) struct Launch {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    /// The variables every child gets (see [`BaseEnv`]), but those in `env`.
    pub(crate) base_env: std::sync::Arc<BaseEnv>,
    /// The process's own variables, over `base_env`.
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) cwd: std::path::PathBuf,
    pub(crate) stdin: std::os::fd::BorrowedFd<'static>,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

/// Variables made into `NAME=value` C strings once, for many children (`spawn::base_env`).
pub(crate) struct BaseEnv {
    /// Each variable's name and its `NAME=value`, by name.
    vars: Vec<(OsString, CString)>,
}

impl BaseEnv {
    /// `vars` as C strings; an error when one holds NUL.
    pub(crate) fn new(vars: impl IntoIterator<Item = (OsString, OsString)>) -> std::io::Result<BaseEnv> {
        let vars = vars.into_iter().map(|(key, value)| Ok((key.clone(), env_entry(&key, &value)?)));
        Ok(BaseEnv { vars: vars.collect::<std::io::Result<_>>()? })
    }

    /// Each `NAME=value` (for tests).
    #[cfg(test)]
    pub(crate) fn vars(&self) -> impl Iterator<Item = &[u8]> {
        self.vars.iter().map(|(_, var)| var.as_bytes())
    }
}

/// `key=value` as a C string.
fn env_entry(key: &std::ffi::OsStr, value: &std::ffi::OsStr) -> std::io::Result<CString> {
    let mut entry = Vec::with_capacity(key.len() + 1 + value.len());
    entry.extend_from_slice(key.as_bytes());
    entry.push(b'=');
    entry.extend_from_slice(value.as_bytes());
    cstring(&entry)
}

/// A child started by [`spawn_into`]: its PID and a pidfd that becomes readable when it exits.
pub(crate) struct Forked {
    pub(crate) pid: u32,
    /// Watched by the monitor's own epoll (`pidfds`), not a reactor registration of 256 B each.
    pidfd: crate::pidfds::Watched,
}

impl Forked {
    /// Waits for the exit and reaps the child; answers (exit code, signal).
    pub(crate) async fn wait(&mut self) -> (Option<i32>, Option<i32>) {
        std::future::poll_fn(|cx| self.poll_wait(cx)).await
    }

    /// [`Forked::wait`] as a poll: a task waiting for its child this way keeps no future of the wait (the
    /// reactor keeps the waker), where the future of `wait` is about 230 B that a running process held for its
    /// whole run (issue 19, memory per process).
    pub(crate) fn poll_wait(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<(Option<i32>, Option<i32>)> {
        use std::task::Poll;
        loop {
            if self.pidfd.poll_ready(cx).is_pending() {
                return Poll::Pending;
            }
            match waitpid(self.pid, WaitOptions::NOHANG) {
                Ok(Some(status)) => return Poll::Ready(decode(status)),
                Ok(None) => self.pidfd.clear_ready(),
                Err(_) => return Poll::Ready((None, None)),
            }
        }
    }
}

/// `waitpid` on our own child `pid`: its status once it has ended, `None` while it runs (with `NOHANG`).
fn waitpid(pid: u32, options: WaitOptions) -> std::io::Result<Option<WaitStatus>> {
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or(std::io::ErrorKind::InvalidInput)?;
    Ok(rustix::process::waitpid(Some(pid), options)?.map(|(_, status)| status))
}

fn decode(status: WaitStatus) -> (Option<i32>, Option<i32>) {
    (status.exit_status(), status.terminating_signal())
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in an argument"))
}

/// What the child execs: C strings and the NULL-terminated pointer arrays `execve` takes, all made before the
/// clone (the child must not allocate).
struct ExecImage {
    program: CString,
    cwd: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// The strings `argv` and `envp` point into.
    _strings: (Vec<CString>, Vec<CString>, std::sync::Arc<BaseEnv>),
}

impl ExecImage {
    fn new(launch: &Launch) -> std::io::Result<ExecImage> {
        let program = cstring(launch.program.as_bytes())?;
        let mut argv_owned = vec![program.clone()];
        for arg in &launch.args {
            argv_owned.push(cstring(arg.as_bytes())?);
        }
        let envp_owned =
            launch.env.iter().map(|(key, value)| env_entry(key, value)).collect::<std::io::Result<Vec<_>>>()?;
        let cwd = cstring(launch.cwd.as_os_str().as_bytes())?;
        let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|arg| arg.as_ptr()).collect();
        argv.push(std::ptr::null());
        let base = launch.base_env.clone();
        let inherited = base.vars.iter().filter(|(name, _)| !launch.env.iter().any(|(key, _)| key == name));
        let mut envp: Vec<*const libc::c_char> = Vec::with_capacity(base.vars.len() + envp_owned.len() + 1);
        envp.extend(inherited.map(|(_, var)| var.as_ptr()));
        envp.extend(envp_owned.iter().map(|var| var.as_ptr()));
        envp.push(std::ptr::null());
        Ok(ExecImage { program, cwd, argv, envp, _strings: (argv_owned, envp_owned, base) })
    }
}

/// The descriptors the child takes as its stdin, stdout and stderr, and the pipe it reports a failed exec on
/// where it does not share the monitor's memory (-1 where it does: see [`SHARED_VM`]).
struct ChildFds {
    stdio: [RawFd; 3],
    report: RawFd,
}

/// The child runs in the monitor's memory until it executes (`CLONE_VM | CLONE_VFORK`, x86_64; see
/// [`clone_into`]): a failed exec is reported in [`ChildPlan::failed`], where the monitor reads it once its thread
/// resumes, instead of through a pipe (a pipe made, read and closed at every start: four system calls and two
/// descriptors fewer per restart of a crash storm, issue 19).
const SHARED_VM: bool = cfg!(target_arch = "x86_64");

/// [`ChildPlan::failed`] while the child has not failed.
const NOT_FAILED: i32 = -1;

impl ChildFds {
    /// The lowest descriptor above every one the child needs: with a shared descriptor table, the child copies
    /// only the descriptors below it into a table of its own (see [`child_main`]).
    fn keep_below(&self) -> u32 {
        let highest = self.stdio.iter().copied().chain([self.report]).max().unwrap_or(2).max(2);
        u32::try_from(highest).map_or(u32::MAX, |fd| fd.saturating_add(1))
    }
}

/// Starts `launch` as a new process-group leader inside the cgroup whose directory is open as `cgroup`; with the
/// child, its start time in clock ticks since boot when the clone did not straddle a tick (see
/// `pm_registry::proc::start_time_between`), which spares the caller a read of the child's `/proc` files.
pub(crate) fn spawn_into(launch: Launch, cgroup: RawFd) -> std::io::Result<(Forked, Option<u64>)> {
    let image = ExecImage::new(&launch)?;
    // Without the monitor's memory, the child reports a failed exec through this pipe (closed on a successful
    // exec).
    let pipe = if SHARED_VM { None } else { Some(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?) };
    let fds = ChildFds {
        stdio: [launch.stdin.as_raw_fd(), launch.stdout.as_raw_fd(), launch.stderr.as_raw_fd()],
        report: pipe.as_ref().map_or(-1, |(_, write_end)| write_end.as_raw_fd()),
    };
    let failed = std::sync::atomic::AtomicI32::new(NOT_FAILED);
    let before = pm_registry::proc::boot_ticks();
    let (pid, pidfd) = clone_into(cgroup, &image, &fds, &failed)?;
    let start_time = pm_registry::proc::start_time_between(before, pm_registry::proc::boot_ticks());
    let pidfd = crate::os::park_fd(pidfd);
    let exec_failed = match pipe {
        Some((read_end, write_end)) => {
            drop(write_end);
            exec_error(&read_end)
        }
        // The child has executed or exited by now (`CLONE_VFORK`), having stored its errno if it failed.
        None => Some(failed.load(std::sync::atomic::Ordering::SeqCst)).filter(|errno| *errno != NOT_FAILED),
    };
    if let Some(errno) = exec_failed {
        // Reap the child that failed to exec.
        let _ = waitpid(pid, WaitOptions::empty());
        return Err(std::io::Error::from_raw_os_error(errno));
    }
    match crate::pidfds::Watched::new(pidfd) {
        Ok(pidfd) => Ok((Forked { pid, pidfd }, start_time)),
        Err(err) => {
            // Unwatchable: not left running unsupervised (our own child, not reaped yet: the PID is still its own).
            let _ = pm_registry::proc::signal_process(pid, libc::SIGKILL);
            let _ = waitpid(pid, WaitOptions::empty());
            Err(err)
        }
    }
}

/// `CLONE_VM`: the child runs in the parent's memory until it executes (no copy of the page tables).
const CLONE_VM: u64 = 0x100;
/// `CLONE_VFORK`: the parent is suspended until the child executes or exits.
const CLONE_VFORK: u64 = 0x4000;
/// `CLONE_FILES`: the child starts on the parent's descriptor table (it takes a small copy of its own first).
const CLONE_FILES: u64 = 0x400;
/// `close_range` flag: give the caller a table of its own first, copying only the descriptors below the range
/// when the range reaches the top of the table (Linux 5.9).
const CLOSE_RANGE_UNSHARE: libc::c_uint = 1 << 1;

/// The size of the stack the child runs on between the clone and the exec, in 16-byte words (16 KiB: it calls a
/// handful of system call wrappers).
const CHILD_STACK_WORDS: usize = 1024;

/// What the child reads, in the parent's memory, between the clone and the exec.
struct ChildPlan<'a> {
    image: &'a ExecImage,
    fds: &'a ChildFds,
    /// The child starts on the parent's descriptor table (`CLONE_FILES`) and must take one of its own first,
    /// with the descriptors below this one ([`ChildFds::keep_below`]).
    shared_files: Option<u32>,
    /// Where the child stores its errno when it cannot execute, in the monitor's memory (see [`SHARED_VM`]).
    failed: &'a std::sync::atomic::AtomicI32,
}

/// `clone3` into the cgroup open as `cgroup`, the child becoming `image` (a new process group, `fds` as its stdio,
/// the signal handlers and mask reset, SIGPIPE included); answers the child's PID and pidfd. A child that cannot
/// exec stores its errno in `failed` (in the monitor's memory, [`SHARED_VM`]) or writes it into `fds.report`, and
/// exits 127.
///
/// On x86_64 the child shares the monitor's memory and runs on a stack of its own until it executes, the monitor's
/// thread waiting meanwhile (`CLONE_VM | CLONE_VFORK`, what `posix_spawn` does): a fork would copy the page tables
/// of the whole monitor and leave it copy-on-write faults afterwards, a cost that grows with the number of
/// processes (17 ms a start with 10,000 registered). Elsewhere the clone is a fork.
///
/// With `CLONE_VFORK` the child also starts on the monitor's descriptor table (`CLONE_FILES`) and takes a copy of
/// only its low part (see [`child_main`]): a copy of the whole table, and its close at the exec, cost a moment per
/// descriptor, and the monitor holds one (a pidfd) per running process (2 ms a start with 10,000 running).
fn clone_into(
    cgroup: RawFd,
    image: &ExecImage,
    fds: &ChildFds,
    failed: &std::sync::atomic::AtomicI32,
) -> std::io::Result<(u32, OwnedFd)> {
    let mut pidfd: libc::c_int = -1;
    let mut stack = vec![0u128; CHILD_STACK_WORDS];
    let shared = SHARED_VM;
    let plan = ChildPlan { image, fds, shared_files: shared.then(|| fds.keep_below()), failed };
    let args = CloneArgs {
        flags: CLONE_PIDFD | CLONE_INTO_CGROUP | if shared { CLONE_VM | CLONE_VFORK | CLONE_FILES } else { 0 },
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: if shared { stack.as_mut_ptr() as u64 } else { 0 },
        stack_size: if shared { (stack.len() * std::mem::size_of::<u128>()) as u64 } else { 0 },
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    let cloned = clone3(&args, &plan);
    drop(stack);
    cloned.map_err(|errno| {
        let err = std::io::Error::from_raw_os_error(errno);
        // A kernel without clone3 (ENOSYS) or without its `cgroup` field (E2BIG): the caller falls back.
        if matches!(errno, libc::ENOSYS | libc::E2BIG) {
            return std::io::Error::new(std::io::ErrorKind::Unsupported, format!("clone3 into a cgroup: {err}"));
        }
        err
    })
}

/// Runs `clone3(args)`; the child runs [`child_main`] on `plan` and never returns here. Answers the child's PID and
/// the pidfd the kernel stored through `args.pidfd`, or the errno. Every signal is blocked in the calling thread around the clone, so that no handler of the
/// monitor runs in the child (which, with `CLONE_VM`, would run in the monitor's memory) before the child has reset
/// the handlers.
fn clone3(args: &CloneArgs, plan: &ChildPlan<'_>) -> Result<(u32, OwnedFd), i32> {
    // SAFETY: the signal mask calls take valid sigset pointers. The clone: without CLONE_VM the child is a copy of
    // the process (fork); with it (x86_64), the child runs on the fresh stack in `args.stack` and the parent is
    // suspended until the child executes or exits (CLONE_VFORK), so the child may read `plan` and the buffers it
    // points to, which the parent keeps alive until then; it shares the parent's descriptor table as well
    // (CLONE_FILES), and its first system call gives it a table of its own, so that nothing it does to descriptors
    // reaches the parent's. Either way the child makes only async-signal-safe system
    // calls, allocates nothing, and ends in execve or _exit ([`child_main`]). On x86_64 the system call is made
    // in assembly: the child must not return into this function's frame, which is the parent's; it calls
    // `child_main` on its own stack straight after the `syscall` instruction instead. In the parent, a successful
    // clone3 with CLONE_PIDFD stored a fresh pidfd of the child through `args.pidfd`, which nothing else owns.
    unsafe {
        let mut all = std::mem::zeroed::<libc::sigset_t>();
        let mut before = std::mem::zeroed::<libc::sigset_t>();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
        let plan_ptr = plan as *const ChildPlan<'_> as *mut libc::c_void;
        #[cfg(target_arch = "x86_64")]
        let ret: isize = {
            let ret: isize;
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "mov rdi, r12",
                "call r13",
                "ud2",
                "2:",
                inlateout("rax") libc::SYS_clone3 as isize => ret,
                in("rdi") args as *const CloneArgs,
                in("rsi") std::mem::size_of::<CloneArgs>(),
                in("r12") plan_ptr,
                in("r13") child_main as extern "C" fn(*mut libc::c_void) -> !,
                lateout("rcx") _,
                lateout("r11") _,
            );
            ret
        };
        #[cfg(not(target_arch = "x86_64"))]
        let ret: isize = {
            let pid = libc::syscall(libc::SYS_clone3, args as *const CloneArgs, std::mem::size_of::<CloneArgs>());
            if pid == 0 {
                child_main(plan_ptr);
            }
            if pid < 0 {
                -(*libc::__errno_location() as isize)
            } else {
                pid as isize
            }
        };
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        if ret <= 0 {
            return Err(if ret < 0 { -ret as i32 } else { libc::EINVAL });
        }
        Ok((ret as u32, OwnedFd::from_raw_fd(*(args.pidfd as *const libc::c_int))))
    }
}

/// The child, between the clone and the exec: takes a descriptor table of its own (when it started on the
/// parent's), takes its stdio, leads a new process group, changes to its folder, resets every signal handler and
/// unblocks every signal, and executes. System calls only, on buffers prepared by the parent; on failure it stores
/// the errno in the plan's `failed` (the monitor's memory where it is shared) or writes it into the report pipe, and
/// exits 127.
extern "C" fn child_main(plan: *mut libc::c_void) -> ! {
    // SAFETY: `plan` is the `ChildPlan` the parent keeps alive until this child executes or exits (see `clone3`);
    // every call below is an async-signal-safe system call wrapper on descriptors and NUL-terminated buffers
    // prepared before the clone.
    unsafe {
        let plan = &*(plan as *const ChildPlan<'_>);
        let (report, [stdin, stdout, stderr]) = (plan.fds.report, plan.fds.stdio);
        let fail = |report: RawFd| -> ! {
            let errno = *libc::__errno_location();
            if report < 0 {
                plan.failed.store(errno, std::sync::atomic::Ordering::SeqCst);
            } else {
                let bytes = errno.to_ne_bytes();
                libc::write(report, bytes.as_ptr().cast(), bytes.len());
            }
            libc::_exit(127)
        };
        // On the parent's table nothing may change: first a table of our own, a copy of the descriptors below the
        // highest one needed (the monitor's pidfds are parked above them, `os::park_fd`), the rest not copied at
        // all; on a kernel without `close_range` (before 5.9), a copy of the whole table.
        if let Some(keep_below) = plan.shared_files {
            if libc::syscall(libc::SYS_close_range, keep_below, libc::c_uint::MAX, CLOSE_RANGE_UNSHARE) != 0
                && libc::unshare(libc::CLONE_FILES) != 0
            {
                fail(report);
            }
        }
        if libc::dup2(stdin, 0) < 0 || libc::dup2(stdout, 1) < 0 || libc::dup2(stderr, 2) < 0 {
            fail(report);
        }
        if libc::setpgid(0, 0) != 0 {
            fail(report);
        }
        if libc::chdir(plan.image.cwd.as_ptr()) != 0 {
            fail(report);
        }
        // Handlers of the monitor's (ignored signals stay ignored, as across a fork and exec; SIGPIPE, which
        // Rust's runtime ignores, is restored).
        let mut action = std::mem::zeroed::<libc::sigaction>();
        for signal in 1..libc::SIGRTMAX() {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            if libc::sigaction(signal, std::ptr::null(), &mut action) == 0
                && (action.sa_sigaction != libc::SIG_IGN || signal == libc::SIGPIPE)
                && action.sa_sigaction != libc::SIG_DFL
            {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        let mut empty_set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut empty_set);
        libc::sigprocmask(libc::SIG_SETMASK, &empty_set, std::ptr::null_mut());
        libc::execve(plan.image.program.as_ptr(), plan.image.argv.as_ptr(), plan.image.envp.as_ptr());
        fail(report)
    }
}

/// The errno a child that could not exec wrote into the pipe; `None` when the pipe closed on a successful exec.
fn exec_error(read_end: &OwnedFd) -> Option<i32> {
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < errno.len() {
        match rustix::io::read(read_end, &mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    (got == errno.len()).then(|| i32::from_ne_bytes(errno))
}

#[cfg(test)]
mod tests {
    use std::ffi::{CStr, OsString};

    /// The child's environment is the shared base's variables but those the process sets itself, then the
    /// process's own: each name once, the process's value winning, no copy of the base made for the spawn.
    #[test]
    fn the_process_variables_go_over_the_shared_base() {
        let pair = |key: &str, value: &str| (OsString::from(key), OsString::from(value));
        let base = std::sync::Arc::new(super::BaseEnv::new([pair("A", "1"), pair("B", "2")]).unwrap());
        let null = || std::fs::File::open("/dev/null").unwrap().into();
        let launch = super::Launch {
            program: "/bin/true".into(),
            args: Vec::new(),
            base_env: base.clone(),
            env: vec![pair("B", "3"), pair("C", "4")],
            cwd: "/".into(),
            stdin: super::super::spawn::tests::dev_null_for_tests(),
            stdout: null(),
            stderr: null(),
        };
        let image = super::ExecImage::new(&launch).unwrap();
        let vars: Vec<&str> = image
            .envp
            .iter()
            .take_while(|var| !var.is_null())
            // SAFETY: every pointer before the NULL is one of the image's C strings, alive with it.
            .map(|var| unsafe { CStr::from_ptr(*var) }.to_str().unwrap())
            .collect();
        assert_eq!(vars, ["A=1", "B=3", "C=4"]);
        assert_eq!(image.envp.last(), Some(&std::ptr::null()));
        // The base's strings themselves, not copies of them.
        assert_eq!(image.envp[0], base.vars[0].1.as_ptr());
    }
}
