//! Reading the log's records for the event feed: from any LSN the log still
//! holds up to a bound (the durable LSN), across segment rollovers, while
//! the writer appends. A shared sparse [`PositionIndex`] remembers where
//! every [`INDEX_EVERY`]-th record starts, so a read that starts mid-segment
//! (each long poll opens one) does not walk the segment from its start.
//!
//! The reader never looks past the bound: bytes after the durable LSN may
//! be a batch the writer has not finished, or one a failed sync left
//! behind. An open segment stays readable when retention deletes it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::storage::wal::record::{self, Decoded, HEADER_BYTES};
use crate::storage::wal::{list_segments, WalEntry, WalError};

/// One index entry per this many records.
pub const INDEX_EVERY: u64 = 4096;

/// Bytes read from a segment at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// Where records start: LSN → (its segment's first LSN, byte offset).
#[derive(Default)]
pub struct PositionIndex {
    starts: Mutex<BTreeMap<u64, (u64, u64)>>,
}

impl PositionIndex {
    /// The indexed record nearest at or before `lsn` in the segment
    /// starting at `segment`.
    fn nearest(&self, segment: u64, lsn: u64) -> Option<(u64, u64)> {
        let starts = self.starts.lock();
        let (&at, &(seg, offset)) = starts.range(segment..=lsn).next_back()?;
        (seg == segment).then_some((at, offset))
    }

    fn remember(&self, lsn: u64, segment: u64, offset: u64) {
        self.starts.lock().insert(lsn, (segment, offset));
    }

    /// Drops what points into segments the log no longer has.
    fn forget_below(&self, lsn: u64) {
        let mut starts = self.starts.lock();
        *starts = starts.split_off(&lsn);
    }
}

/// Why a read stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The log no longer holds LSN `after + 1`; it starts at `oldest`.
    Expired { after: u64, oldest: u64 },
    /// The log could not be read, or holds something it should not.
    Log(WalError),
}

/// A segment being read: its file, and a window of its bytes.
struct Open {
    first_lsn: u64,
    path: PathBuf,
    file: File,
    /// Bytes read from `file`, from offset `window_at` on.
    window: Vec<u8>,
    window_at: u64,
    /// How far into `window` the next record starts.
    used: usize,
}

/// Reads records in LSN order from one position on.
pub struct LogReader {
    data_dir: PathBuf,
    /// The LSN of the next record to read.
    next: u64,
    open: Option<Open>,
    index: std::sync::Arc<PositionIndex>,
}

impl LogReader {
    /// A reader of the log in `data_dir` from the record after `after`.
    pub fn new(data_dir: &Path, after: u64, index: std::sync::Arc<PositionIndex>) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            next: after + 1,
            open: None,
            index,
        }
    }

    /// The LSN of the last record read (or the starting `after`).
    pub fn position(&self) -> u64 {
        self.next - 1
    }

    /// The records after [`position`](Self::position) up to LSN `upto`, at
    /// most `max`.
    pub fn read(&mut self, upto: u64, max: usize) -> Result<Vec<WalEntry>, ReadError> {
        let mut out = Vec::new();
        while self.next <= upto && out.len() < max {
            let entry = self.read_one()?;
            out.push(entry);
            self.next += 1;
        }
        Ok(out)
    }

    /// Whether the log still holds the record after [`position`](Self::position).
    pub fn check_held(&mut self) -> Result<(), ReadError> {
        if self.open.is_none() {
            self.open_segment()?;
        }
        Ok(())
    }

    fn read_one(&mut self) -> Result<WalEntry, ReadError> {
        loop {
            if self.open.is_none() {
                self.open_segment()?;
            }
            let next = self.next;
            let open = self
                .open
                .as_mut()
                .ok_or_else(|| missing(next, "no segment"))?;
            match record::decode(&open.window[open.used..], next) {
                Decoded::Complete { entry, len } => {
                    if next.is_multiple_of(INDEX_EVERY) {
                        let offset = open.window_at + open.used as u64;
                        self.index.remember(next, open.first_lsn, offset);
                    }
                    open.used += len;
                    return Ok(entry);
                }
                Decoded::Corrupt { reason } => {
                    let offset = open.window_at + open.used as u64;
                    return Err(ReadError::Log(WalError::Corrupt {
                        path: open.path.clone(),
                        offset,
                        reason,
                    }));
                }
                Decoded::Torn => {
                    if open.fill()? == 0 {
                        // This segment ends here: the record is in the next.
                        self.open = None;
                        self.open_next_segment()?;
                    }
                }
            }
        }
    }

    /// Opens the segment holding `next` and moves to it.
    fn open_segment(&mut self) -> Result<(), ReadError> {
        let segments = list_segments(&self.data_dir).map_err(ReadError::Log)?;
        let oldest = segments.first().map_or(self.next, |s| s.first_lsn);
        self.index.forget_below(oldest);
        let Some(segment) = segments.iter().rev().find(|s| s.first_lsn <= self.next) else {
            return Err(ReadError::Expired {
                after: self.next - 1,
                oldest,
            });
        };
        let file = File::open(&segment.path)
            .map_err(|error| ReadError::Log(WalError::io(&segment.path, &error)))?;
        let (mut lsn, offset) = self
            .index
            .nearest(segment.first_lsn, self.next)
            .unwrap_or((segment.first_lsn, 0));
        let mut open = Open {
            first_lsn: segment.first_lsn,
            path: segment.path.clone(),
            file,
            window: Vec::new(),
            window_at: offset,
            used: 0,
        };
        while lsn < self.next {
            open.skip(lsn)?;
            lsn += 1;
        }
        self.open = Some(open);
        Ok(())
    }

    /// After a segment's last record: the next segment must start at `next`.
    fn open_next_segment(&mut self) -> Result<(), ReadError> {
        let segments = list_segments(&self.data_dir).map_err(ReadError::Log)?;
        if !segments.iter().any(|s| s.first_lsn == self.next) {
            return Err(missing(self.next, "its segment ends before it"));
        }
        self.open_segment()
    }
}

impl Open {
    /// Reads more of the file into the window; how many bytes (0: none).
    fn fill(&mut self) -> Result<usize, ReadError> {
        self.window.drain(..self.used);
        self.window_at += self.used as u64;
        self.used = 0;
        let have = self.window.len();
        self.window.resize(have + CHUNK_BYTES, 0);
        let at = self.window_at + have as u64;
        let read = match self.file.read_at(&mut self.window[have..], at) {
            Ok(read) => read,
            Err(error) => {
                self.window.truncate(have);
                return Err(ReadError::Log(WalError::io(&self.path, &error)));
            }
        };
        self.window.truncate(have + read);
        Ok(read)
    }

    /// Steps over the record `lsn` by its header alone.
    fn skip(&mut self, lsn: u64) -> Result<(), ReadError> {
        loop {
            if let Some(header) = self.window.get(self.used..self.used + HEADER_BYTES) {
                let mut len = [0u8; 4];
                len.copy_from_slice(&header[..4]);
                let mut at = [0u8; 8];
                at.copy_from_slice(&header[8..16]);
                let total = HEADER_BYTES + u32::from_le_bytes(len) as usize;
                if u64::from_le_bytes(at) != lsn {
                    return Err(missing(lsn, "a record before it has another LSN"));
                }
                if self.window.len() >= self.used + total {
                    self.used += total;
                    return Ok(());
                }
            }
            if self.fill()? == 0 {
                return Err(missing(lsn, "its segment ends before it"));
            }
        }
    }
}

fn missing(lsn: u64, why: &str) -> ReadError {
    ReadError::Log(WalError::Corrupt {
        path: PathBuf::new(),
        offset: 0,
        reason: format!("record {lsn} is not where the log says: {why}"),
    })
}
