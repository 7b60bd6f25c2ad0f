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
//! Withdrawals are run as exchanges run them
//! ([`Ledger::request_withdrawal_with`]): a fee (locked with the amount,
//! moved to [`Config::fee_account`] on completion), a destination handed to
//! the payment service, metadata (deposits and transfers carry it too),
//! an expiry, rolling 24-hour and 30-day limits per tier
//! ([`Config::withdrawal_limits`], [`Ledger::set_account_tier`],
//! [`Ledger::withdrawal_allowance`]), operators' freezes
//! ([`Ledger::freeze_account`]) and partial completion
//! ([`WithdrawalOutcome::PartlyCompleted`]).
//!
//! ## Guarantees
//! (README's *Guarantees* section states each promise and each refusal in
//! full, with the test that tries to break it.)
//! - Amounts are exact: integer minor units inside, `Decimal` at the API,
//!   checked arithmetic; overflow is an error. An amount has at most its
//!   currency's decimals as written; amount text is read exactly or refused
//!   ([`money::parse_amount_text`](domain::money::parse_amount_text)), never rounded.
//! - A rejected operation changes nothing, and says why ([`LedgerError`]).
//! - Balances never go negative; an account's locked amount always equals
//!   the sum of its pending withdrawals; per currency, the sum of totals
//!   equals deposits minus completed withdrawals (transfers net to zero).
//! - Terminal withdrawal states never change. The same idempotency key with
//!   the same parameters returns the first result; with other parameters it
//!   is an `idempotency_conflict`. Keys are scoped to the account the
//!   operation acts on (a transfer's source). A key expires
//!   [`idempotency_key_retention_ms`](Config::idempotency_key_retention_ms)
//!   after its first use (default 7 days; a logged event): its replay is
//!   then `idempotency_key_expired`, never applied twice.
//! - Finished withdrawals leave memory once a history holds them (a data
//!   folder's history store, [`Config::history`], or
//!   [`Config::withdrawal_history`]); every operation on one answers as
//!   before (it is read back from the history). With a data folder they
//!   leave the checkpointer's copy too, so snapshots do not grow with
//!   them; a return of a forgotten one replays after a crash (taken back
//!   from the store; a store that lacks it stops recovery, saying so).
//!   Without a history and a data folder, they are dropped
//!   [`finished_withdrawal_retention_ms`](Config::finished_withdrawal_retention_ms)
//!   after their last change (default 24 h): their ids then answer
//!   `unknown_withdrawal`.
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
//! it (the rule is in [`wal`](storage::wal)'s docs), refuses a corrupt record (naming file
//! and offset), logs what it did, and checks the invariants. A failed write
//! or fsync poisons the ledger: writes are refused until a restart; a failed
//! invariant check inside the engine poisons its shard the same way. Sync
//! mode `none` on a folder that holds a ledger is refused.
//!
//! ## The event feed
//! The log is the host's outbox: [`Ledger::subscribe`] reads every durable
//! record, in LSN order, as a versioned [`FeedEvent`](domain::feed::FeedEvent)
//! with the balances after it (in log order); never one the disk (and,
//! replicated, the stream) does not have. Named consumers keep durable
//! cursors ([`Ledger::ack`]) that hold the log's segments back from pruning
//! up to a cap ([`Config::event_retention_bytes`],
//! [`Config::event_retention_ms`]), past which they get `cursor_expired`.
//!
//! ## What it is not
//! Not a database: no queries beyond accounts, withdrawals and the history
//! listings (filters and cursors, no joins), no SQL. Not an archive without
//! a data folder: a ledger with none has no history store and forgets a
//! finished withdrawal past its retention. Replicated only with the
//! `replication` feature (a NATS JetStream cluster); otherwise durability
//! is one machine's disk. One ledger per data
//! folder: a second open is refused (an OS lock, [`DataDirLock`](storage::data_dir::DataDirLock)).
//!
//! ## Limits
//! See [`Config`] (shards, in-flight operations per shard, pending
//! withdrawals per account, batch size) and the constants in [`money`](domain::money)
//! (currency code length, decimals, balance ceiling) and [`ids`](domain::ids)
//! (idempotency key length).
//!
//! ## Layout
//! Folders by layer; the dependency rules are checked by `tests/layers.rs`.
//! - `lib.rs` (these docs, re-exports), `ledger/` (the public [`Ledger`]
//!   handle: `mod.rs` the operations, `requests.rs` those that carry
//!   metadata, fees, destinations and expiries, `controls.rs` freezes,
//!   tiers and allowances, `storage.rs` its data folder,
//!   `history.rs` the history reads, `events.rs` the event feed and its
//!   consumers, `standby.rs` a standby kept by mirrored batches), `config.rs` (configuration and limits with documented
//!   defaults), `error.rs` ([`LedgerError`]), `operation.rs` (what a caller
//!   submits), `clock.rs` (the injected clock every timer reads).
//! - `domain/` — the model, pure (no actix, tokio or I/O): `ids`, `money`,
//!   `event/` (what the log records; `wire` its encoding), `withdrawal` (the
//!   state machine), `details` (fees, destinations, metadata),
//!   `kept_extras` (a withdrawal's extras as its record keeps them: a fee
//!   in its own currency inline, the rest shared), `policy`
//!   (what configuration the rules read: pending cap, fee account, limits
//!   per tier; freezes), `account/` (one account's state: `rules`, `apply`,
//!   `transfers`, `invariants`, `withdrawals`, `forget`, `keys`, `controls`
//!   and `usage` (tier, freeze, what the limits count)), `payouts` (payout records and modes,
//!   and their public views), `audit` (the invariants over many accounts),
//!   `gauges`, `receipts` (what successful operations return), `export`
//!   (the read-only view of an account that `export_accounts` returns),
//!   `time` (the milliseconds every logged event is stamped with, RFC 3339
//!   text and its parser), `history` (the history reads' queries, pages,
//!   entries and transactions), `feed` (the public event type and the
//!   tracker of the balances after each event).
//! - `engine/` — actix, private to the crate: `account` (the actor owning
//!   one account's state), `command` (what runs at an account, typed by
//!   its answer), `directory` (a shard's accounts: running actors and
//!   parked states), `coordinator` (one per shard: directory, forwarding,
//!   reads, idle sweeps), `batch` (a batch in rounds, transfers across
//!   shards), `round` and `shard_log` (a round's replies; its events on
//!   their way to the journal), `router` (split by shard, gather answers)
//!   and `admission` (the per-shard in-flight bound), `edge` (operations
//!   validated into commands), `payout/` (the payout actor: `run`,
//!   `timers`), `stamp` (the time logged events carry), `horizon` (how far
//!   finished withdrawals leave memory) and `recall` (finding them again),
//!   `key_expiry` (when idempotency keys expire, as a logged event),
//!   `expiry` (when pending withdrawals past `expires_in` fail),
//!   `messages`,
//!   `startup` and `shutdown`.
//! - `storage/` — what is kept on disk, never actors: `journal` (where the
//!   engine hands events to be made durable), `wal/` (the write-ahead log, see
//!   its own Layout), `snapshot`, `recovery`, `checkpoint` (the background
//!   snapshot thread), `recall` (the history store as the engine's
//!   withdrawal history, and replay's), `data_dir/` (the folder's lock and currency table),
//!   `inspect` (the public read-only API `inspect` and `verify` use),
//!   `deadline` (the storage threads' timers on the injected clock),
//!   `history/` (the history store: withdrawals, entries, transactions and
//!   payouts on disk, fed from the log, paged by cursors), `feed/` (logged
//!   events turned into history rows, and the history writer thread that
//!   ingests them), `history_check` (`verify`'s check of the store against
//!   the log), `events/` (the event feed's side of the log: reading durable
//!   records from any position, consumers' cursors, retention for them).
//! - `payment/` — the `PaymentService` trait (`mod.rs`), the
//!   `SimulatedBank` (`simulated.rs`), and (feature `http`) the
//!   `HttpPaymentService` client of the payment-service protocol
//!   (`http.rs`) with the protocol's JSON bodies (`wire.rs`); knows
//!   payouts, not accounts.
//! - `replication/` — replication on a NATS JetStream cluster (feature
//!   `replication`): `stream` (the replicated log stream: fenced appends,
//!   reads, purging), `follow` (reading it in order), `lease` (the
//!   writer's lease and the epochs, in JetStream KV buckets), which know
//!   bytes and sequences; on them `replica` (the writer ships each
//!   batch), `follower` (a standby mirrors them), `takeover` (promotion's
//!   fence), `snapshots` (the object-store bucket, purging, bootstrap),
//!   `node` (a process's role, lease watch and promotion) and `metrics`.
//! - `http/` — the HTTP service over actix-web (feature `http`): routes, JSON
//!   bodies (`details`: a withdrawal's fee, destination, metadata and
//!   expiry), error statuses, bearer-token auth, limits, metrics, OpenAPI;
//!   an account's controls (`accounts`: tier, freeze, withdrawal
//!   allowance); the event feed's routes (`events`: long poll, Server-Sent Events,
//!   consumers' cursors, the journal's head); where handlers find the ledger (`source`: a fixed one, or a
//!   replicated node's current one) and that node's routes
//!   (`replication`); and `bank`, the simulated bank's server over the
//!   payment-service protocol.
//! - `webhook/` — signed webhooks (feature `http`): the delivery loop on its
//!   own thread, reading the feed from a consumer's durable cursor and
//!   POSTing signed batches, retried with backoff (see its own Layout).
//! - `bin/burnledger/` — the `burnledger` command: `simulate`, `inspect`,
//!   `verify`, `serve` (with `--replicate`, a replicated node:
//!   `replicate.rs`), `promote`, `bank` (the simulated bank over HTTP),
//!   `bench` (embedded workloads, or `--http URL`), `consume` (hidden: a
//!   named consumer of a server's event stream).

#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod domain;
pub(crate) mod engine;
pub mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod ledger;
pub mod operation;
pub mod payment;
#[cfg(feature = "replication")]
pub mod replication;
pub mod storage;
#[cfg(feature = "http")]
pub mod webhook;

pub use config::{Config, WithdrawalLimit};
pub use domain::account::{AccountControls, WindowAllowance, WithdrawalAllowance};
pub use domain::audit::Audit;
pub use domain::details::{Destination, Metadata};
pub use domain::export::{AccountBalance, AccountExport};
pub use domain::gauges::{Gauges, ShardCounts};
pub use domain::history::{
    Entry, EntryKind, Order, Page, PayoutQuery, Transaction, WithdrawalQuery,
};
pub use domain::ids::{AccountId, IdempotencyKey, TransactionId};
pub use domain::money::{CurrencyCode, CurrencyConfig};
pub use domain::policy::{Freeze, FreezeScope, Tier, Window};
pub use domain::receipts::{Balance, Deposit, Outcome, Transfer};
pub use domain::time::{TimeTextError, UnixMs};
pub use domain::withdrawal::{Withdrawal, WithdrawalOutcome, WithdrawalStatus};
pub use error::{AmountProblem, FundsPart, LedgerError};
pub use ledger::{
    ConsumerCursor, Ledger, MirrorError, Mirrored, OpenError, Promoter, Subscription,
    FEED_BATCH_MAX,
};
pub use operation::{FeeRequest, Operation, WithdrawalOptions};
pub use rust_decimal::Decimal;

/// Compiles and runs README.md's Rust example as a doc test, so the README
/// cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
