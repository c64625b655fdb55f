//! Size-based rotation of a child's log files while the child keeps writing to them.
//!
//! The child holds `stdout.log` open with `O_APPEND`, so the file cannot be renamed away (the child would keep
//! writing to the renamed file). Instead the head of the file is copied to `stdout.log.1` and then removed from
//! the live file: on Linux with `fallocate(FALLOC_FL_COLLAPSE_RANGE)` (ext4, xfs), which removes exactly the
//! copied, block-aligned head atomically, so no line is lost or duplicated; elsewhere by copy-and-truncate,
//! which can lose what the child writes between the copy and the truncate.
//!
//! Only the newest `max_bytes` of the head are copied to `stdout.log.1`; anything older is dropped with the head,
//! so a child that wrote gigabytes between two passes never makes the monitor copy gigabytes.
//! A rotation holds an exclusive `flock` on the live file from the shift of the generations to the removal of the
//! head; remote log followers (`pm-http`'s `logs.rs`) hold a shared one while they look, so they see a rotation
//! whole or not at all and neither lose nor repeat lines.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rotated {
    /// The file was below the limit.
    No,
    /// The head was moved out without loss.
    Collapsed,
    /// Copy-and-truncate was used.
    Truncated,
}

/// Rotates `path` when it is larger than `max_bytes`, keeping `keep` generations (`path.1` newest).
pub(crate) fn rotate_if_needed(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Rotated> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    let meta = file.metadata()?;
    let len = meta.len();
    if len <= max_bytes {
        return Ok(Rotated::No);
    }
    shift_generations(path, keep.max(1))?;
    let target = generation(path, 1);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let block = meta.blksize().max(512);
        let head = len / block * block;
        if head > 0 {
            copy_range(&mut file, &target, head.saturating_sub(max_bytes), head)?;
            if collapse(&file, head).is_ok() {
                return Ok(Rotated::Collapsed);
            }
            // Not supported here: start the copy over for copy-and-truncate.
            let _ = std::fs::remove_file(&target);
        }
    }
    let len = file.metadata()?.len();
    copy_range(&mut file, &target, len.saturating_sub(max_bytes), len)?;
    file.set_len(0)?;
    Ok(Rotated::Truncated)
}

fn generation(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `path.{keep-1}` → `path.{keep}`, ..., `path.1` → `path.2`; the oldest beyond `keep` is dropped.
fn shift_generations(path: &Path, keep: u32) -> std::io::Result<()> {
    let _ = std::fs::remove_file(generation(path, keep));
    for n in (1..keep).rev() {
        let from = generation(path, n);
        if from.exists() {
            std::fs::rename(&from, generation(path, n + 1))?;
        }
    }
    Ok(())
}

/// Copies bytes `from..to` of `file` to a new `target`.
fn copy_range(file: &mut File, target: &Path, from: u64, to: u64) -> std::io::Result<()> {
    // 0600 whatever the umask; a symlink at the target is replaced, never written through.
    let mut out = pm_registry::create_private_file_fresh(target)?;
    file.seek(SeekFrom::Start(from))?;
    let len = to - from;
    let copied = std::io::copy(&mut Read::by_ref(file).take(len), &mut out)?;
    if copied != len {
        return Err(std::io::Error::other(format!("copied {copied} of {len} bytes")));
    }
    out.flush()
}

#[cfg(target_os = "linux")]
fn collapse(file: &File, len: u64) -> std::io::Result<()> {
    // `off_t` is signed: a length past its range is refused as before, not wrapped.
    i64::try_from(len).map_err(std::io::Error::other)?;
    Ok(rustix::fs::fallocate(file, rustix::fs::FallocateFlags::COLLAPSE_RANGE, 0, len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pm-rotate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn small_files_are_left_alone() {
        let dir = temp("small");
        let path = dir.join("stdout.log");
        std::fs::write(&path, "hello\n").unwrap();
        assert_eq!(rotate_if_needed(&path, 100, 3).unwrap(), Rotated::No);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rotation_keeps_every_byte_once_and_bounds_generations() {
        let dir = temp("keep");
        let path = dir.join("stdout.log");
        let mut expected = Vec::new();
        for round in 0..5 {
            let chunk: Vec<u8> = (0..20_000).map(|i| b'a' + ((i + round) % 26) as u8).collect();
            let mut file = OpenOptions::new().create(true).append(true).open(&path).unwrap();
            file.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
            assert_ne!(rotate_if_needed(&path, 10_000, 2).unwrap(), Rotated::No);
        }
        assert!(generation(&path, 2).exists());
        assert!(!generation(&path, 3).exists(), "only two generations kept");
        // The newest generation plus the live file are the tail of everything written, in order.
        let mut tail = std::fs::read(generation(&path, 1)).unwrap();
        tail.extend(std::fs::read(&path).unwrap());
        assert!(expected.ends_with(&tail), "rotation reordered or duplicated bytes");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_huge_head_is_dropped_not_copied() {
        let dir = temp("huge");
        let path = dir.join("stdout.log");
        let mut file = OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..8 {
            file.write_all(&chunk).unwrap();
        }
        file.write_all(b"tail\n").unwrap();
        assert_ne!(rotate_if_needed(&path, 4096, 2).unwrap(), Rotated::No);
        let kept = std::fs::metadata(generation(&path, 1)).unwrap().len();
        assert!(kept <= 4096, "the generation holds {kept} bytes, more than logMaxBytes");
        assert!(std::fs::metadata(&path).unwrap().len() <= 8192, "the live file was not cut");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
