//! The payment-service side of payouts (design §7): what a payout is (each
//! item with the withdrawal's destination, when it has one), what the
//! service answers ([`PaymentService`]; an item may be paid only in part). [`SimulatedBank`] (in
//! `simulated.rs`) is a deterministic in-process service with configurable
//! faults for tests, benches and `simulate`. [`HttpPaymentService`] (in
//! `http.rs`, feature `http`) is a service in another process, spoken to
//! with the JSON protocol documented there, whose bodies `wire.rs` defines.
//!
//! This module knows payouts only, not accounts' balances or actors.

use futures_util::future::BoxFuture;
use rust_decimal::Decimal;

use crate::domain::details::Destination;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::CurrencyCode;

/// A payout's id, minted once by the payout side and reused on every retry.
pub type PayoutId = u64;

/// One withdrawal to pay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutItem {
    pub transaction_id: TransactionId,
    pub account: AccountId,
    pub amount: Decimal,
    /// Where to pay it: the withdrawal's destination (`None`: it was
    /// requested without one, and the service pays the account's default).
    pub destination: Option<Destination>,
}

/// Withdrawals of one currency paid in one service call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payout {
    pub payout_id: PayoutId,
    pub currency: CurrencyCode,
    pub items: Vec<PayoutItem>,
}

/// The service's view of one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemStatus {
    Paid,
    /// Paid, but only `paid` of the item's amount. The ledger burns that
    /// and releases the rest; `paid` must be more than 0 and at most the
    /// amount (and fit the currency's decimals), else the whole answer is
    /// an unknown outcome and settles nothing.
    PartlyPaid {
        paid: Decimal,
    },
    Failed {
        reason: String,
    },
    /// Not decided yet; ask again with `status`.
    Pending,
    /// Paid (in full or in part), then sent back by the receiving bank.
    Returned {
        reason: String,
    },
}

/// Every item of a payout with its status, in the payout's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutReport {
    pub payout_id: PayoutId,
    pub items: Vec<(TransactionId, ItemStatus)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// Definite: the service refused the whole payout and paid nothing; safe to release.
    #[error("payout rejected: {reason}")]
    Rejected { reason: String },
    /// Unknown outcome (timeout, dropped connection, 5xx): it may or may not
    /// have been paid. Never release; retry with the SAME payout_id or ask status.
    #[error("payout outcome unknown: {reason}")]
    Unknown { reason: String },
    /// status(): the service never received this payout_id (so nothing was paid under it).
    #[error("payout {payout_id} not found")]
    NotFound { payout_id: PayoutId },
}

impl PaymentError {
    /// Whether the answer is definite (nothing was paid under the payout id);
    /// false only for [`PaymentError::Unknown`].
    pub fn is_definite(&self) -> bool {
        !matches!(self, Self::Unknown { .. })
    }
}

/// What [`PaymentService`] calls return.
pub type PaymentFuture = BoxFuture<'static, Result<PayoutReport, PaymentError>>;

pub trait PaymentService: Send + Sync + 'static {
    /// Most items one submit may carry; the payout actor splits bigger groups.
    fn max_items_per_payout(&self) -> usize;
    /// Pays a payout. MUST be idempotent by payout_id: submitting the same id
    /// again never pays twice and answers the current report.
    fn submit(&self, payout: Payout) -> PaymentFuture;
    /// The current report of a payout submitted before.
    fn status(&self, payout_id: PayoutId) -> PaymentFuture;
}

#[cfg(feature = "http")]
mod http;
mod simulated;
#[cfg(feature = "http")]
pub mod wire;

#[cfg(feature = "http")]
pub use http::{HttpPaymentService, HttpPaymentSettings};
pub use simulated::{SimulatedBank, SimulatedBankConfig};
