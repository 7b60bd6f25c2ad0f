//! Where the bench's ledger keeps its log: nowhere (`--sync none`), the
//! caller's folder (kept), or a fresh temporary folder removed at the end.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the ledger keeps its log during the run.
pub enum DataDir {
    /// `--sync none`: nothing on disk.
    Memory,
    /// The caller's folder, kept.
    Kept(PathBuf),
    /// A fresh temporary folder, removed when dropped.
    Temporary(PathBuf),
}

impl DataDir {
    pub fn choose(given: Option<PathBuf>, memory_only: bool) -> Result<Self, String> {
        if memory_only {
            if let Some(dir) = given {
                eprintln!(
                    "bench: --sync none keeps everything in memory; {} is not used",
                    dir.display()
                );
            }
            return Ok(Self::Memory);
        }
        if let Some(dir) = given {
            return Ok(Self::Kept(dir));
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("burnledger-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir)
            .map_err(|e| format!("bench: cannot create {}: {e}", dir.display()))?;
        Ok(Self::Temporary(dir))
    }

    pub fn path(&self) -> Option<PathBuf> {
        match self {
            Self::Memory => None,
            Self::Kept(dir) | Self::Temporary(dir) => Some(dir.clone()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Memory => "in memory".into(),
            Self::Kept(dir) => dir.display().to_string(),
            Self::Temporary(dir) => format!("{} (temporary)", dir.display()),
        }
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if let Self::Temporary(dir) = self {
            if let Err(error) = std::fs::remove_dir_all(&*dir) {
                eprintln!("bench: could not remove {}: {error}", dir.display());
            }
        }
    }
}
