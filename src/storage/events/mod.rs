//! The event feed's storage side: reading the log's durable records from
//! any position ([`reader`]), named consumers' durable cursors
//! ([`consumers`]), and how long the log is kept for them ([`retention`]).
//! [`EventLog`] holds what one ledger's subscriptions share. What a record
//! becomes for the host is `domain/feed.rs`; the API is `ledger/events.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod consumers;
pub mod reader;
pub mod retention;

pub use consumers::{check_name, Consumers};
pub use reader::{LogReader, PositionIndex, ReadError};
pub use retention::{Retention, RETENTION_BYTES_DEFAULT, RETENTION_MS_DEFAULT};

/// One durable ledger's feed state, shared by its subscriptions.
pub struct EventLog {
    data_dir: PathBuf,
    index: Arc<PositionIndex>,
    pub consumers: Arc<Consumers>,
}

impl EventLog {
    /// The feed over `data_dir`'s log, with the consumers kept there.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            data_dir: data_dir.to_owned(),
            index: Arc::default(),
            consumers: Arc::new(Consumers::open(data_dir)?),
        })
    }

    /// A reader from the record after `after`.
    pub fn reader(&self, after: u64) -> LogReader {
        LogReader::new(&self.data_dir, after, Arc::clone(&self.index))
    }
}
