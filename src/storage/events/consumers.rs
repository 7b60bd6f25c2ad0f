//! Named consumers' durable cursors: `<data_dir>/consumers/<name>.cursor`,
//! one small file each holding the LSN of the last event the consumer
//! acknowledged, written to a temporary file, synced and renamed over the
//! old one (then the folder synced), so a crash leaves the old cursor or
//! the new, never neither. Kept in memory too; the retention rule reads the
//! lowest ([`Consumers::lowest`]).
//!
//! A name is 1 to [`CONSUMER_NAME_MAX`] of `A-Z a-z 0-9 _ - .`, not
//! starting with a dot: it becomes a file name.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::error::LedgerError;

/// Longest consumer name.
pub const CONSUMER_NAME_MAX: usize = 64;

const EXTENSION: &str = "cursor";

/// The cursors, on disk and in memory.
pub struct Consumers {
    dir: PathBuf,
    /// name → LSN; the lock also orders writes of one file.
    cursors: Mutex<BTreeMap<String, u64>>,
}

/// Refuses a name that cannot be a consumer's.
pub fn check_name(name: &str) -> Result<(), LedgerError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() || name.len() > CONSUMER_NAME_MAX {
        return Err(LedgerError::InvalidConsumer {
            reason: format!(
                "a consumer name has 1 to {CONSUMER_NAME_MAX} characters, not {}",
                name.len()
            ),
        });
    }
    if name.starts_with('.') || !name.chars().all(allowed) {
        return Err(LedgerError::InvalidConsumer {
            reason: format!(
                "consumer name {name:?} may hold only A-Z a-z 0-9 _ - . and not start with a dot"
            ),
        });
    }
    Ok(())
}

impl Consumers {
    /// The cursors kept in `data_dir`. A cursor file that does not read as
    /// an LSN is an error: skipping it would let retention prune events
    /// that consumer has not seen.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join("consumers");
        fs::create_dir_all(&dir)?;
        let mut cursors = BTreeMap::new();
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
                continue;
            }
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let lsn = fs::read_to_string(&path)?.trim().parse::<u64>();
            match (check_name(name), lsn) {
                (Ok(()), Ok(lsn)) => {
                    cursors.insert(name.to_owned(), lsn);
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not a consumer cursor", path.display()),
                    ))
                }
            }
        }
        Ok(Self {
            dir,
            cursors: Mutex::new(cursors),
        })
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        self.cursors.lock().get(name).copied()
    }

    pub fn all(&self) -> Vec<(String, u64)> {
        let cursors = self.cursors.lock();
        cursors.iter().map(|(n, l)| (n.clone(), *l)).collect()
    }

    /// The lowest cursor: every consumer has read up to it.
    pub fn lowest(&self) -> Option<u64> {
        self.cursors.lock().values().min().copied()
    }

    /// Sets `name`'s cursor, durably.
    pub fn set(&self, name: &str, lsn: u64) -> io::Result<()> {
        let mut cursors = self.cursors.lock();
        let path = self.path(name);
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let mut file = File::create(&temporary)?;
        file.write_all(format!("{lsn}\n").as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        File::open(&self.dir)?.sync_all()?;
        cursors.insert(name.to_owned(), lsn);
        Ok(())
    }

    /// Forgets `name`; whether it had a cursor.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        let mut cursors = self.cursors.lock();
        if cursors.remove(name).is_none() {
            return Ok(false);
        }
        fs::remove_file(self.path(name))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(true)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.{EXTENSION}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_survive_a_reopen_and_removal_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let consumers = Consumers::open(dir.path()).unwrap();
        consumers.set("mail", 7).unwrap();
        consumers.set("audit", 3).unwrap();
        consumers.set("mail", 9).unwrap();
        assert_eq!(consumers.lowest(), Some(3));
        assert!(consumers.remove("audit").unwrap());
        assert!(!consumers.remove("audit").unwrap());
        let reopened = Consumers::open(dir.path()).unwrap();
        assert_eq!(reopened.all(), vec![("mail".to_owned(), 9)]);
    }

    #[test]
    fn names_that_could_escape_the_folder_or_hide_are_refused() {
        for bad in ["", ".hidden", "a/b", "../x", "sp ace", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["webhook", "mail-v2", "a.b_c", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn a_damaged_cursor_file_fails_the_open_instead_of_being_skipped() {
        let dir = tempfile::tempdir().unwrap();
        Consumers::open(dir.path()).unwrap().set("mail", 5).unwrap();
        fs::write(dir.path().join("consumers/mail.cursor"), "five").unwrap();
        assert!(Consumers::open(dir.path()).is_err());
    }
}
