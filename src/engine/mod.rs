//! The running engine (actix): one actor per account owning its state, one
//! coordinator per shard keeping the shard's account directory, the payout
//! actor, their messages. Private to the crate: only the
//! [`Ledger`](crate::Ledger) handle reaches it.
//!
//! - `account`: the account actor (owns one account's state by value);
//! - `command`: what runs at an account, typed by what it answers;
//! - `edge`: a caller's operations validated into commands;
//! - `router`: splits work by shard and gathers the answers; `admission`:
//!   the per-shard in-flight bound every caller passes;
//! - `directory`: a shard's accounts, running (an actor's address) or
//!   parked (the state), and the retiring of idle actors;
//! - `coordinator`: one per shard: the directory, forwarding, reads, gauges;
//! - `batch`: a batch run in rounds, transfers across shards;
//! - `round` and `shard_log`: a round's replies; its events on their way to
//!   the journal, with the round's stamp, the shard's gauges and its poison
//!   (an internal error stops the shard's writes), the fee credits its
//!   completions owe other accounts and the expiries its requests set;
//! - `stamp`: the time every logged event carries, from the injected clock;
//! - `horizon`: how far a shard forgets its finished withdrawals (its
//!   history's horizon, or a memory-only ledger's retention), and the
//!   forgetting itself; `recall`: finding a forgotten withdrawal again in
//!   the history, off the shard's thread, for the command or read that
//!   names it;
//! - `key_expiry`: when idempotency keys past their retention expire (a
//!   logged event, on the shard's idle sweep); `expiry`: when pending
//!   withdrawals past their `expires_in` fail (a logged event, on an alarm
//!   for the shard's earliest expiry, the sweep as backstop);
//! - `payout`: the payout actor;
//! - `startup`: opening the data folder and spawning the engine's threads
//!   and actors; `shutdown`: stopping them;
//! - `messages`: the messages between them.

pub(crate) mod account;
pub(crate) mod admission;
pub(crate) mod batch;
pub(crate) mod command;
pub(crate) mod coordinator;
pub(crate) mod directory;
pub(crate) mod edge;
pub(crate) mod expiry;
pub(crate) mod horizon;
pub(crate) mod key_expiry;
pub(crate) mod messages;
pub(crate) mod payout;
pub(crate) mod recall;
pub(crate) mod round;
pub(crate) mod router;
pub(crate) mod shard_log;
pub(crate) mod shutdown;
pub(crate) mod stamp;
pub(crate) mod startup;
