//! # burnledger
//!
//! An embedded, actor-based, in-memory ledger engine for the money path of
//! exchanges, trading and gaming backends. Its core job is the
//! **withdrawal with a pending burn**:
//!
//! 1. [`Ledger::request_withdrawal`] locks the amount (available → locked)
//!    and returns the withdrawal's `transaction_id`;
//! 2. a payout pays it through a [`payment::PaymentService`] — batched per
//!    currency on an interval (default), one by one, or by the host;
//! 3. [`Ledger::complete_withdrawal`] records the answer by `transaction_id`
//!    alone: completed removes the locked amount from the total, failed
//!    returns it to available.
//!
//! Deposits credit accounts; transfers move available funds between them.
//!
//! ## Guarantees
//! (README's *Guarantees* section states each promise and each refusal in
//! full, with the test that tries to break it.)
//! - Amounts are exact: integer minor units inside, `Decimal` at the API,
//!   checked arithmetic; overflow is an error. An amount has at most its
//!   currency's decimals as written; amount text is read exactly or refused
//!   ([`money::parse_amount_text`]), never rounded.
//! - A rejected operation changes nothing, and says why ([`LedgerError`]).
//! - Balances never go negative; an account's locked amount always equals
//!   the sum of its pending withdrawals; per currency, the sum of totals
//!   equals deposits minus completed withdrawals (transfers net to zero).
//! - Terminal withdrawal states never change. The same idempotency key with
//!   the same parameters returns the first result; with other parameters it
//!   is an `idempotency_conflict`. Keys are scoped to the account the
//!   operation acts on (a transfer's source).
//! - Overload is refused (`overloaded`), never queued without limit.
//! - When the engine makes payouts, only its payouts settle a withdrawal
//!   (or an operator's logged [`Ledger::resolve_payout_item`]); a caller's
//!   outcome is `payout_in_flight`. A service answer contradicting a
//!   settled item is a mismatch that [`Ledger::audit`] reports.
//!
//! ## Durability
//! With a data folder ([`Config::data_dir`]) every change is an event in a
//! write-ahead log, group-committed by one writer thread; in sync mode
//! `fsync` (the default) a call returns only after its record is on disk.
//! Snapshots are built in the background by a checkpointer that follows
//! the log (the writer hands it every written batch) in its own copy of the
//! state, never by pausing the engine. Opening a folder takes its lock,
//! checks the configuration's currencies against the folder's table (a
//! changed scale is refused), recovers the newest valid snapshot plus the
//! log after it, cuts a torn tail only where nothing acknowledged can follow
//! it (the rule is in [`wal`]'s docs), refuses a corrupt record (naming file
//! and offset), logs what it did, and checks the invariants. A failed write
//! or fsync poisons the ledger: writes are refused until a restart. Sync
//! mode `none` on a folder that holds a ledger is refused.
//!
//! ## What it is not
//! Not a database: no queries beyond accounts and withdrawals, no SQL. Not
//! replicated: durability is one machine's disk. One ledger per data
//! folder: a second open is refused (an OS lock, [`data_dir::DataDirLock`]).
//!
//! ## Limits
//! See [`Config`] (shards, in-flight operations per shard, pending
//! withdrawals per account, batch size) and the constants in [`money`]
//! (currency code length, decimals, balance ceiling) and [`ids`]
//! (idempotency key length).
//!
//! ## Layout
//! - `config.rs` — configuration and limits with documented defaults.
//! - `error.rs` — [`LedgerError`], every business rejection.
//! - `money.rs` — currencies, `Decimal` ↔ minor units.
//! - `ids.rs` — account ids, transaction ids, idempotency keys.
//! - `withdrawal.rs` — the withdrawal state machine (pure).
//! - `event.rs` — events, what changed, as the log records it.
//! - `account.rs` — one account's state and rules (pure, no actix).
//! - `receipts.rs` — what successful operations return.
//! - `operation.rs` — the operations a caller submits.
//! - `audit.rs` — invariant checks over account states.
//! - `gauges.rs` — withdrawals by currency and status, accounts: kept as
//!   the engine runs, so reading them costs nothing per account.
//! - `messages.rs` — every actor message.
//! - `actors/account.rs` — the actor owning one account (started on use,
//!   stopped when idle; its state cell stays with the coordinator).
//! - `actors/coordinator.rs` — one per shard: account directory, routing,
//!   batches in rounds, idle-actor sweeps, the shard's gauges.
//! - `actors/round.rs` — gathering one round's replies from account actors.
//! - `actors/shard_log.rs` — a shard's events on their way to the journal:
//!   one append per round; the shard's gauges.
//! - `actors/payout.rs` — the payout actor: batches, submits, settles,
//!   retries unknown outcomes, reconciles after a restart.
//! - `payment.rs` — the `PaymentService` trait and `SimulatedBank`.
//! - `payouts.rs` — payout records and modes (pure), retry backoff.
//! - `journal.rs` — where actors hand events to be made durable.
//! - `wal/` — the write-ahead log: record framing, segments, the
//!   group-commit writer thread, replay (see its own Layout).
//! - `data_dir/` — the data folder as a whole: its lock (one ledger per
//!   folder) and its currency table (the scale stored amounts were written in).
//! - `snapshot.rs` — snapshot files: write (temp, fsync, rename), read, prune.
//! - `recovery.rs` — rebuilding account states: snapshot, then WAL.
//! - `checkpoint.rs` — the background thread that follows the log and
//!   writes snapshots.
//! - `ledger.rs` — the public [`Ledger`] handle and the engine's threads.
//! - `http/` — the HTTP service over actix-web (feature `http`): routes,
//!   JSON bodies, error statuses, bearer-token auth, metrics.
//! - `bin/burnledger/` — the `burnledger` command: `simulate`, `inspect`,
//!   `verify`, `serve`, `bench` (embedded workloads, or `--http URL`); it
//!   uses only the public API.

#![forbid(unsafe_code)]

pub mod account;
pub mod actors;
pub mod audit;
pub mod checkpoint;
pub mod config;
pub mod data_dir;
pub mod error;
pub mod event;
pub mod gauges;
#[cfg(feature = "http")]
pub mod http;
pub mod ids;
pub mod journal;
pub mod ledger;
pub mod messages;
pub mod money;
pub mod operation;
pub mod payment;
pub mod payouts;
pub mod receipts;
pub mod recovery;
pub mod snapshot;
pub mod wal;
pub mod withdrawal;

pub use audit::Audit;
pub use config::Config;
pub use error::{AmountProblem, LedgerError};
pub use gauges::Gauges;
pub use ids::{AccountId, IdempotencyKey, TransactionId};
pub use ledger::{Ledger, OpenError};
pub use money::{CurrencyCode, CurrencyConfig};
pub use operation::Operation;
pub use receipts::{Balance, Deposit, Outcome, Transfer};
pub use rust_decimal::Decimal;
pub use withdrawal::{Withdrawal, WithdrawalOutcome, WithdrawalStatus};

/// Compiles and runs README.md's Rust example as a doc test, so the README
/// cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
