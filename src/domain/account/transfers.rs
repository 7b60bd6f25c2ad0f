//! A transfer's three steps on the accounts it joins: the source holds the
//! funds (`hold_transfer`), the receiving account credits them and makes
//! the one event that records both sides (`receive_transfer`), then the
//! source finishes (`finish_transfer`): the held funds leave for good, or
//! return to available if the receiving side refused. Between hold and
//! finish the funds sit in `BalanceEntry::held` and the transfer in the
//! account's held transfers, neither of them logged; the source's
//! idempotency key is marked in flight meanwhile (no expiry drops it, see
//! `keys.rs`). Both sides apply the one
//! event with the time the receiving side stamped it with.

use crate::domain::details::Metadata;
use crate::domain::event::Event;
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, Units};
use crate::domain::policy::FreezeScope;
use crate::domain::receipts::Transfer;
use crate::domain::time::UnixMs;
use crate::error::LedgerError;

use super::{AccountState, HeldTransfer, KeyRecord, KeyUse, TransferHold};

impl AccountState {
    /// Transfer, step 1 at the source, without metadata, judged as of no
    /// particular time (any freeze set refuses it).
    pub fn hold_transfer(
        &mut self,
        to: AccountId,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
    ) -> Result<TransferHold, LedgerError> {
        self.hold_transfer_with(
            to,
            currency,
            amount,
            key,
            Metadata::default(),
            UnixMs::UNKNOWN,
        )
    }

    /// Transfer, step 1 at the source: hold the funds so nothing else can
    /// spend them while the receiving account is asked. A freeze of the
    /// source (withdrawals or all) refuses it as of `at`.
    pub fn hold_transfer_with(
        &mut self,
        to: AccountId,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
        metadata: Metadata,
        at: UnixMs,
    ) -> Result<TransferHold, LedgerError> {
        let metadata = metadata.boxed();
        let used_for = || KeyUse::transfer(to, currency.code, amount, metadata.as_deref());
        if let Some(tx) = self.replayed_key(key.as_ref(), used_for)? {
            return Ok(TransferHold::Replayed(Transfer {
                transaction_id: tx,
                from: self.id,
                to,
                currency: currency.code,
                amount: currency.to_decimal(amount),
                metadata: metadata.as_deref().cloned().unwrap_or_default(),
            }));
        }
        self.check_not_frozen(FreezeScope::Withdrawals, at)?;
        self.check_available(currency, amount)?;
        let tx = self.take_transaction_id();
        let entry = self.entry_mut(currency);
        entry.available -= amount;
        entry.held += amount;
        if let Some(key) = &key {
            // Dated when the transfer's event is applied.
            let record = KeyRecord {
                used_for: used_for(),
                tx,
                in_flight: true,
                first_used: UnixMs::UNKNOWN,
            };
            self.idempotency.insert(key.clone(), record);
        }
        self.held_transfers.push(HeldTransfer {
            tx,
            to,
            currency,
            amount,
            key,
            metadata,
        });
        self.verify_balance(currency.code, "holding a transfer")?;
        Ok(TransferHold::Held(tx))
    }

    /// Transfer, step 2 at the receiving account, without metadata.
    pub fn receive_transfer(
        &mut self,
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
        at: UnixMs,
    ) -> Result<Event, LedgerError> {
        self.receive_transfer_with(tx, currency, amount, key, None, at)
    }

    /// Transfer, step 2 at the receiving account: credit it and return the
    /// one event that records both sides, to be stamped `at`. A freeze of
    /// everything on the receiver refuses it.
    pub fn receive_transfer_with(
        &mut self,
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
        metadata: Option<Box<Metadata>>,
        at: UnixMs,
    ) -> Result<Event, LedgerError> {
        self.check_not_frozen(FreezeScope::All, at)?;
        self.check_credit_fits(currency, amount)?;
        let event = Event::Transferred {
            tx,
            to: self.id,
            currency,
            amount,
            key,
            metadata,
        };
        self.apply_checked(&event, at)?;
        Ok(event)
    }

    /// Transfer, step 3 at the source: the receiving side answered. On
    /// success (`received`: the time its event was stamped with) the held
    /// funds leave for good; otherwise (`None`) they are released.
    pub fn finish_transfer(
        &mut self,
        tx: TransactionId,
        received: Option<UnixMs>,
    ) -> Result<Transfer, LedgerError> {
        let held = self.take_held(tx)?;
        let entry = self.entry_mut(held.currency);
        entry.held -= held.amount;
        entry.available += held.amount;
        if let Some(key) = &held.key {
            self.idempotency.remove(key);
        }
        let receipt = Transfer {
            transaction_id: tx,
            from: self.id,
            to: held.to,
            currency: held.currency.code,
            amount: held.currency.to_decimal(held.amount),
            metadata: held.metadata.as_deref().cloned().unwrap_or_default(),
        };
        let Some(at) = received else {
            self.verify_balance(held.currency.code, "releasing a transfer")?;
            return Ok(receipt);
        };
        // The receiving side logged the event; apply our side of it.
        self.apply_checked(
            &Event::Transferred {
                tx,
                to: held.to,
                currency: held.currency,
                amount: held.amount,
                key: held.key,
                metadata: held.metadata,
            },
            at,
        )?;
        Ok(receipt)
    }

    /// Removes held transfer `tx` from the account's held transfers. Only
    /// the engine finishes a transfer, and only one it held here: a miss is
    /// a bug.
    fn take_held(&mut self, tx: TransactionId) -> Result<HeldTransfer, LedgerError> {
        let index = self
            .held_transfers
            .iter()
            .position(|h| h.tx == tx)
            .ok_or_else(|| LedgerError::Internal {
                reason: format!("no transfer {tx} is held on account {}", self.id),
            })?;
        Ok(self.held_transfers.swap_remove(index))
    }
}
