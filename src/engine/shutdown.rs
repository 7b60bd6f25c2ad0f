//! Stopping the engine.
//!
//! [`Engine::shutdown`]: admission closes (later calls get
//! `shutting_down`), the operations in flight are answered, the engine's
//! threads stop, the log is flushed and closed (its last batches reach the
//! checkpointer), a final snapshot is left so the next open is quick (the
//! history writer first ingests everything and writes the store to disk),
//! the history writer stops, the history store is closed, and the data
//! folder's lock is released.
//!
//! Dropping the last handle without a shutdown (`Drop for Engine`) stops
//! the threads too, like a crash as far as the data is concerned: no final
//! snapshot, but the log's writer and the history writer are joined and
//! the store closed so the folder can be reopened.

use tokio::sync::oneshot;

use crate::engine::startup::Engine;

impl Engine {
    /// Stops accepting operations, waits for those in flight, then stops
    /// the engine threads and closes the log.
    pub async fn shutdown(&self) {
        let admission = self.router.admission();
        admission.close();
        admission.drained().await;
        let threads = self.threads.lock().take();
        if let Some(threads) = threads {
            threads.system.stop();
            let _ = threads.stopped.await;
            let _ = threads.thread.join();
        }
        let closed = self.close_log().await;
        // Every event is as durable as it will be: feed readers waiting
        // for more are told the log closed.
        self.journal.close_watchers();
        if !closed {
            // The log may still be open: keep the folder locked until the
            // last handle drops (`Drop for Engine` closes it).
            return;
        }
        self.close_history();
        // The log is closed: another ledger may open the folder now, even
        // while clones of the handle linger.
        self.lock.lock().take();
    }

    /// Flushes and closes the log, then leaves a snapshot. Blocking file
    /// work, so on a thread of its own, off the caller's async thread.
    /// False if that thread could not start.
    async fn close_log(&self) -> bool {
        let checkpointer = self.checkpointer.lock().take();
        let (Some(mut checkpointer), Some(wal)) = (checkpointer, self.journal.wal().cloned())
        else {
            return true;
        };
        let poisoned = self.journal.poisoned().is_some();
        let (done_tx, done_rx) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("burnledger-shutdown".into())
            .spawn(move || {
                // The writer hands the checkpointer its last events as it
                // stops; then the checkpointer writes the final snapshot.
                let flushed = wal.shutdown();
                if flushed.is_ok() && !poisoned {
                    if let Err(error) = checkpointer.finish() {
                        tracing::error!(
                            %error,
                            "snapshot at shutdown failed; the next open replays the log instead"
                        );
                    }
                }
                // Joins the history writer too, once it wrote the store.
                checkpointer.stop();
                let _ = done_tx.send(());
            });
        if spawned.is_err() {
            return false;
        }
        let _ = done_rx.await;
        true
    }
}

impl Engine {
    /// Lets go of the history store (its writer has stopped): it closes
    /// once the reads in progress end.
    fn close_history(&self) {
        if let Some(history) = &self.history {
            history.close();
        }
    }
}

impl Drop for Engine {
    /// The last handle is gone without `shutdown`: stop the engine threads
    /// anyway so they do not outlive every way of reaching them.
    fn drop(&mut self) {
        if let Some(threads) = self.threads.get_mut().take() {
            threads.system.stop();
            let _ = threads.thread.join();
        }
        // Like a crash as far as the data is concerned: no final snapshot,
        // but the writer thread is joined so the folder can be reopened.
        if let Some(mut checkpointer) = self.checkpointer.get_mut().take() {
            checkpointer.stop();
        }
        if let Some(wal) = self.journal.wal() {
            let _ = wal.shutdown();
        }
        self.close_history();
    }
}
