//! The store's format marker: which layouts it may hold (meta key
//! `format`, a big-endian u32, an encoding that never changes). Every open
//! reads it and refuses a store this build cannot read — one a newer build
//! stamped, or a marker it cannot decode — rather than misread it or have
//! it set aside and rebuilt (which loses what the log no longer holds).
//! Only the opener that will write stamps it ([`HistoryStore::stamp_format`]),
//! so read-only openers (`verify`, a folder's recall) change nothing.

use super::error::HistoryError;
use super::schema::{Keyspaces, Ks, FORMAT_KEY};
use super::HistoryStore;

/// The layout this build writes, and the newest it reads:
/// - 1: every change of an entry value in full, or `0xFF` + a later part;
/// - 2: entry values may also hold `0xFE` compact changes
///   (`entry_value.rs`), which a build reading only 1 calls corrupt.
///
/// Stores made before the marker existed carry none: they hold 1, or 2
/// if written by a build from after compact changes, both of which this
/// build reads.
pub const FORMAT: u32 = 2;

/// The stored marker: `None` if there is none, refused if this build
/// cannot read the store it marks.
pub(super) fn check(ks: &Keyspaces) -> Result<Option<u32>, HistoryError> {
    let Some(bytes) = ks.get(Ks::Meta).get(FORMAT_KEY)? else {
        return Ok(None);
    };
    let found = <[u8; 4]>::try_from(&bytes[..])
        .map(u32::from_be_bytes)
        .map_err(|_| HistoryError::UnknownFormat {
            stored: format!("{:02x?}", &bytes[..]),
        })?;
    if found > FORMAT {
        return Err(HistoryError::NewerFormat {
            found,
            reads: FORMAT,
        });
    }
    Ok(Some(found))
}

impl HistoryStore {
    /// Stamps the store with [`FORMAT`] unless it carries it: this build
    /// may write that layout from now on. Called before the store's first
    /// write; the stamp precedes those writes in fjall's one journal, so
    /// a store on disk that holds them holds it.
    pub fn stamp_format(&self) -> Result<(), HistoryError> {
        if check(&self.ks)? != Some(FORMAT) {
            let meta = self.ks.get(Ks::Meta);
            meta.insert(FORMAT_KEY, FORMAT.to_be_bytes())?;
        }
        Ok(())
    }
}
