//! Where account actors hand their events to be made durable.
//!
//! An actor applies an operation in memory, appends its events here, and
//! replies to the caller only once the returned future resolves: that is
//! the moment the operation is acknowledged. Appending no events is a
//! barrier: it resolves once everything appended before it is durable, which
//! idempotent replays use so they never acknowledge a result that is not.
//!
//! This version keeps state in memory only (sync mode `none`).

use std::future::{ready, Future};

use crate::error::LedgerError;
use crate::event::Event;

/// Handle to the durability layer; cheap to clone, shared by all actors.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    _private: (),
}

impl Journal {
    /// A journal that keeps nothing: state lives in memory only.
    pub fn memory_only() -> Self {
        Self::default()
    }

    /// Appends events; the future resolves when they are durable.
    pub fn append(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send + 'static {
        drop(events);
        ready(Ok(()))
    }
}
