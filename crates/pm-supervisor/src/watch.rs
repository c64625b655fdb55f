//! Noticing edits of the registry file: inotify on Linux (no work while nothing changes), polling elsewhere.
//!
//! Saves are atomic renames into the registry's folder, so the folder is watched for files moved or written
//! into it; every wake-up is followed by a cheap `stat` comparison in the reconcile step, so spurious events
//! cost little. A slow poll backs inotify up in case an event is ever missed (an overflowing queue, say).

use std::path::Path;
use std::time::Duration;

/// How often to look when inotify is not available.
const POLL: Duration = Duration::from_millis(100);
/// How often to look anyway when inotify is available.
const SAFETY_POLL: Duration = Duration::from_secs(2);

/// Resolves whenever the registry may have changed.
pub(crate) struct RegistryWatch {
    #[cfg(target_os = "linux")]
    inotify: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl RegistryWatch {
    /// Watches the folder holding the registry.
    pub(crate) fn new(dir: &Path) -> RegistryWatch {
        #[cfg(target_os = "linux")]
        {
            let inotify = match open_inotify(dir) {
                Ok(fd) => Some(fd),
                Err(err) => {
                    tracing::info!("inotify unavailable ({err}); polling the registry every {POLL:?}");
                    None
                }
            };
            RegistryWatch { inotify }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = dir;
            RegistryWatch {}
        }
    }

    /// Waits for the next possible change (or the poll interval).
    pub(crate) async fn changed(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.inotify {
            let readable = async {
                loop {
                    let Ok(mut guard) = fd.readable().await else { return };
                    let drained = guard.try_io(|inner| drain(inner.get_ref()));
                    match drained {
                        Ok(Ok(true)) => return,
                        Ok(Ok(false)) | Err(_) => continue,
                        Ok(Err(_)) => return,
                    }
                }
            };
            let _ = tokio::time::timeout(SAFETY_POLL, readable).await;
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(target_os = "linux")]
fn open_inotify(dir: &Path) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    let mask = libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE | libc::IN_CREATE | libc::IN_DELETE;
    open_inotify_on(&[dir], mask)
}

/// An inotify descriptor watching each of `paths` for the events of `mask`, registered with tokio.
#[cfg(target_os = "linux")]
pub(crate) fn open_inotify_on(
    paths: &[&Path],
    mask: u32,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use rustix::fs::inotify;
    let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)?;
    for path in paths {
        inotify::add_watch(&fd, *path, inotify::WatchFlags::from_bits_retain(mask))?;
    }
    crate::os::watch_readable(fd)
}

/// Reads every queued event; answers whether there was any (WouldBlock when there was none).
#[cfg(target_os = "linux")]
pub(crate) fn drain(fd: &std::os::fd::OwnedFd) -> std::io::Result<bool> {
    let mut buf = [0u8; 4096];
    let mut any = false;
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return Ok(any),
            Ok(_) => any = true,
            Err(rustix::io::Errno::AGAIN) if any => return Ok(true),
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Wakes when a child's log files are written to (inotify `IN_MODIFY`), so that `logMaxBytes` is enforced by size
/// and not only by a timer. Never wakes where inotify is not available (the timer still rotates).
pub(crate) struct LogWatch {
    #[cfg(target_os = "linux")]
    inotify: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl LogWatch {
    /// Watches `stdout.log` and `stderr.log` in `run_dir`.
    pub(crate) fn new(run_dir: &Path) -> LogWatch {
        #[cfg(target_os = "linux")]
        {
            let (out, err) = (run_dir.join("stdout.log"), run_dir.join("stderr.log"));
            let inotify = open_inotify_on(&[&out, &err], libc::IN_MODIFY)
                .inspect_err(|err| tracing::debug!("cannot watch the logs in {}: {err}", run_dir.display()))
                .ok();
            LogWatch { inotify }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = run_dir;
            LogWatch {}
        }
    }

    /// Resolves once a log was written to since the last call.
    pub(crate) async fn written(&self) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.inotify {
            loop {
                let Ok(mut guard) = fd.readable().await else { break };
                match guard.try_io(|inner| drain(inner.get_ref())) {
                    Ok(Ok(true)) => return,
                    Ok(Ok(false)) | Err(_) => continue,
                    Ok(Err(_)) => break,
                }
            }
        }
        std::future::pending::<()>().await
    }
}
