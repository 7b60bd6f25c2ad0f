//! Finding forgotten withdrawals again: a command or a read that names a
//! finished withdrawal its account forgot (see
//! [`horizon`](crate::engine::horizon)) gets it from the shard's
//! [`WithdrawalHistory`], so it answers as if the withdrawal had never left
//! memory.
//!
//! - A command that needs the record (a return, a repeated outcome or
//!   cancel, a claim, the replay of a keyed request: [`Job::recalls`]) has
//!   it put back into the account's state first, only if it is still
//!   absent, and counted in the gauges again; a later sweep forgets it
//!   again.
//! - A read (`withdrawal(tx)`) is answered from the history's record; the
//!   state is left as it is.
//!
//! The history may read disk, so the look-up never runs on the shard's
//! thread: it runs on the runtime's blocking pool
//! ([`tokio::task::spawn_blocking`]), while the account actor waits for it
//! (its mailbox waits too, so the account's commands keep their order) and
//! the shard's other accounts go on. It is rare: only old withdrawals are
//! looked up. A history that cannot be read answers the command or read
//! that needed it with `internal`, changing nothing.
//!
//! [`Job::recalls`]: crate::engine::command::Job::recalls

use std::future::Future;
use std::sync::Arc;

use actix::prelude::*;

use crate::domain::account::AccountState;
use crate::domain::gauges::{Counted, WithdrawalGauges};
use crate::domain::ids::TransactionId;
use crate::domain::withdrawal::{WithdrawalHistory, WithdrawalRecord};
use crate::engine::horizon::Forgetting;
use crate::engine::messages::AccountRead;
use crate::error::LedgerError;

/// What the history said of one withdrawal.
pub type Found = Result<Option<WithdrawalRecord>, LedgerError>;

/// Looks the withdrawals `txs` up in `history`, off the calling thread.
pub fn look_up(
    history: Arc<dyn WithdrawalHistory>,
    txs: Vec<TransactionId>,
) -> impl Future<Output = Vec<(TransactionId, Found)>> {
    let count = txs.len();
    let asked = tokio::task::spawn_blocking(move || {
        txs.into_iter()
            .map(|tx| (tx, history.withdrawal(tx).map_err(unreadable)))
            .collect::<Vec<_>>()
    });
    async move {
        asked.await.unwrap_or_else(|stopped| {
            let error = unreadable(stopped.to_string());
            (0..count)
                .map(|_| (TransactionId::new(0, 0), Err(error.clone())))
                .collect()
        })
    }
}

/// Puts withdrawal `tx` back into `state` as the history found it, if the
/// account still lacks it, counting it in `gauges` again. `Err` answers
/// the commands that needed it: the history could not be read. A record
/// the history lacks (or one that cannot come back: see
/// [`AccountState::restore_forgotten`]) leaves the state as it is; the
/// command then answers `unknown_withdrawal`.
pub fn restore(
    state: &mut AccountState,
    tx: TransactionId,
    found: Found,
    gauges: &mut WithdrawalGauges,
) -> Result<(), LedgerError> {
    let Some(record) = found? else {
        return Ok(());
    };
    let counted = Counted::of(&record);
    match state.restore_forgotten(tx, record) {
        Ok(true) => gauges.moved(None, Some(counted)),
        Ok(false) => {}
        Err(refused) => {
            tracing::warn!(%tx, %refused, "the history's withdrawal was not taken back")
        }
    }
    Ok(())
}

/// Answers `query` from `state`, or from the history for a withdrawal it
/// names that the account forgot.
pub fn read<Q: AccountRead>(
    query: Q,
    state: &AccountState,
    forgetting: &Forgetting,
) -> Response<Result<Q::Output, LedgerError>> {
    let recalled = forgetting
        .history()
        .and_then(|history| query.recalls(state).map(|tx| (Arc::clone(history), tx)));
    let Some((history, tx)) = recalled else {
        return Response::reply(query.read(state));
    };
    Response::fut(async move {
        let mut found = look_up(history, vec![tx]).await;
        match found.pop() {
            Some((_, found)) => query.answer_recalled(found?),
            None => Err(unreadable("no answer".into())),
        }
    })
}

/// The history could not be read.
fn unreadable(reason: String) -> LedgerError {
    LedgerError::Internal {
        reason: format!("the withdrawal history could not be read: {reason}"),
    }
}
