//! What the ledger keeps on disk: the journal actors hand events to, the
//! write-ahead log, snapshots, recovery and the checkpointer, and the data
//! folder (its lock and currency table). Knows events and bytes, never
//! actors.

pub mod checkpoint;
pub mod data_dir;
mod deadline;
pub mod inspect;
pub mod journal;
pub mod recovery;
pub mod snapshot;
pub mod wal;
