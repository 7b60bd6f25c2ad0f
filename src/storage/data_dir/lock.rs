//! One ledger per data folder, enforced by the operating system.
//!
//! A ledger holds an exclusive lock on `<data-dir>/LOCK` (`flock` on Unix,
//! `LockFileEx` on Windows, through `std::fs::File::try_lock`) for as long
//! as it is open, and writes its pid into the file so a refused second
//! opener can name it. The OS drops the lock when the holder exits, however
//! it exits (kill -9 included), so there is no stale lock to clean up; a
//! pid left in the file by a dead holder is never read, since the lock is
//! then free.
//!
//! A lock found taken is tried again for up to [`CONTENDED_WAIT`] before the
//! folder is called in use: a process that forks (any `Command::spawn` in
//! the embedding program or its test harness) lends the child its open
//! files until the child's `exec` closes them, so a lock released just
//! before can stay held for that moment. A folder truly in use is refused
//! after the wait.
//!
//! Read-only tools (`inspect`, `verify`, through
//! [`crate::storage::inspect`]) take the lock *shared*: any number of them
//! may read together and no ledger opens while they read. Beside a running
//! ledger (whose log grows as they read) none can take it: `verify` then
//! refuses, `inspect` reads anyway and says so.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file's name inside the data folder.
pub const LOCK_FILE: &str = "LOCK";

/// Longest pid text read back from the lock file.
const PID_TEXT_LEN_MAX: u64 = 32;

/// How long a taken lock is retried before the folder is called in use
/// (see the module docs: a forked child holds it until its `exec`).
pub const CONTENDED_WAIT: Duration = Duration::from_secs(1);

/// Pause between tries while the lock is taken.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// Why the folder's lock could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Another process (or another ledger in this one) holds the folder.
    #[error("data folder {} is in use by {}: one ledger per folder (stop it first, or use another folder)", path.display(), holder_text(*pid))]
    InUse { path: PathBuf, pid: Option<u32> },
    #[error("cannot lock data folder {}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
}

fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("a running ledger (pid {pid})"),
        None => "a running ledger or a reader (inspect, verify)".to_string(),
    }
}

/// A held lock on a data folder; released when dropped.
#[derive(Debug)]
pub struct DataDirLock {
    /// The open lock file: the OS lock lives as long as this handle.
    file: File,
    /// A ledger's lock (its pid is in the file), not a reader's.
    exclusive: bool,
}

impl Drop for DataDirLock {
    /// A ledger that closes cleanly takes its pid out, so a reader refused
    /// later is not told of a process long gone. (After kill -9 the pid
    /// stays; the lock itself is free all the same.)
    fn drop(&mut self) {
        if self.exclusive {
            let _ = self.file.set_len(0);
        }
    }
}

impl DataDirLock {
    /// Takes the folder for a ledger: exclusive, created if missing, with
    /// this process's pid written inside.
    pub fn exclusive(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |e: std::io::Error| LockError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        // Not truncated on open: until the lock is ours, the pid inside
        // is the holder's, and a refusal reads it.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match try_lock_patiently(&file, File::try_lock) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::InUse {
                    pid: read_pid(&mut file),
                    path: dir.to_path_buf(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self {
            file,
            exclusive: true,
        })
    }

    /// Takes the folder for reading beside other readers but no ledger.
    /// `Ok(None)` when the folder has no lock file (no ledger ever opened
    /// it with locking): a reader creates nothing.
    pub fn shared(dir: &Path) -> Result<Option<Self>, LockError> {
        let path = dir.join(LOCK_FILE);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(LockError::Io {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        match try_lock_patiently(&file, File::try_lock_shared) {
            Ok(()) => Ok(Some(Self {
                file,
                exclusive: false,
            })),
            Err(TryLockError::WouldBlock) => Err(LockError::InUse {
                pid: read_pid(&mut file),
                path: dir.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(LockError::Io {
                path,
                reason: e.to_string(),
            }),
        }
    }
}

/// Tries `lock` until it is taken, fails, or [`CONTENDED_WAIT`] has passed
/// with the lock taken by someone else.
fn try_lock_patiently(
    file: &File,
    lock: fn(&File) -> Result<(), TryLockError>,
) -> Result<(), TryLockError> {
    let deadline = Instant::now() + CONTENDED_WAIT;
    loop {
        match lock(file) {
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(RETRY_PAUSE)
            }
            other => return other,
        }
    }
}

/// The holder's pid as written in the file, if it reads as one.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(PID_TEXT_LEN_MAX).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_exclusive_lock_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::exclusive(dir.path()).unwrap();
        let refused = DataDirLock::exclusive(dir.path()).unwrap_err();
        assert_eq!(
            refused,
            LockError::InUse {
                path: dir.path().to_path_buf(),
                pid: Some(std::process::id())
            }
        );
        assert!(refused
            .to_string()
            .contains(&format!("pid {}", std::process::id())));
        assert!(matches!(
            DataDirLock::shared(dir.path()),
            Err(LockError::InUse { .. })
        ));
        drop(held);
        let again = DataDirLock::exclusive(dir.path()).unwrap();
        drop(again);
    }

    /// A lock released a moment after it was found taken (as when a forked
    /// child closes its inherited copy at `exec`) is taken, not refused.
    #[test]
    fn a_lock_released_within_the_wait_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::exclusive(dir.path()).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(CONTENDED_WAIT / 5);
            drop(held);
        });
        let taken = DataDirLock::exclusive(dir.path());
        releaser.join().unwrap();
        assert!(taken.is_ok(), "{taken:?}");
    }

    #[test]
    fn readers_share_and_keep_a_ledger_out() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            DataDirLock::shared(dir.path()).unwrap().is_none(),
            "no file, no lock"
        );
        assert!(
            !dir.path().join(LOCK_FILE).exists(),
            "a reader creates nothing"
        );
        drop(DataDirLock::exclusive(dir.path()).unwrap());
        let first = DataDirLock::shared(dir.path()).unwrap();
        let second = DataDirLock::shared(dir.path()).unwrap();
        assert!(first.is_some() && second.is_some());
        assert!(matches!(
            DataDirLock::exclusive(dir.path()),
            Err(LockError::InUse { .. })
        ));
    }
}
