//! `pm-test-reaper PROGRAM [ARGS...]`: a child subreaper for the reliability suites.
//!
//! It starts PROGRAM in a process group of its own (stdin and stdout on /dev/null, stderr inherited), prints
//! PROGRAM's PID on a line of its own, and then reaps every process that ends below it: PROGRAM, and on Linux
//! also every orphan of PROGRAM's descendants, which the kernel hands to the nearest subreaper instead of PID 1.
//! It exits once it has no child left, so "the reaper has exited" means "nothing this daemon ever started is
//! left, not even a zombie" — independent of whether PID 1 of the machine reaps orphans.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: pm-test-reaper PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments only changes a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let child =
        match Command::new(program).args(rest).stdin(Stdio::null()).stdout(Stdio::null()).process_group(0).spawn() {
            Ok(child) => child,
            Err(err) => {
                eprintln!("pm-test-reaper: cannot start {}: {err}", program.to_string_lossy());
                return ExitCode::from(1);
            }
        };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{}", child.id());
    let _ = stdout.flush();
    // The child is reaped below with everything else.
    drop(child);
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local integer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // ECHILD: nothing is left below us.
            return ExitCode::SUCCESS;
        }
    }
}
