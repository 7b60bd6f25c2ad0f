//! The engine against the reference model (`model.rs`), operation by
//! operation, with payouts through a faulty `SimulatedBank`, snapshots, and
//! crashes (the `Ledger` dropped without `shutdown`, then reopened on the
//! same folder and the same bank).
//!
//! The operations include issue 16's: withdrawals with a fee (in their own
//! currency or the other; the case picks a dedicated fee account, one of
//! the accounts, or none, which refuses fees) and an expiry, partial
//! completions, freezes (scope, end, lifting), tiers, under withdrawal
//! limits per tier over 24 hours and 30 days (see [`LIMITS`]).
//!
//! After every step: the same answer (success with the same key fields, or
//! the same error code), the same balances for every (account, currency),
//! the same withdrawals with the same states (and fee, paid amount, and
//! whether they failed by expiry), every account's tier, freeze and
//! withdrawal allowance (what its limits have used), a clean `audit()` and
//! the model's own invariants, and the bank's payments matching the states
//! (design §9, invariants 1–6).
//!
//! Payout outcomes are random, so the model does not predict them: it reads
//! back which withdrawals the payout moved (pending → processing, completed
//! or failed; processing → completed or failed), checks each move is one
//! the state machine allows, and applies exactly those. The payout actor
//! may also retry a processing payout in the background at any moment;
//! such a move may land before or after the step's own operation, so each
//! order is tried and one must explain the answer.
//!
//! Time: half the cases of the first test, and every case of the second,
//! run the ledger on a `ManualClock` that only the test moves (`Advance`
//! steps, from a millisecond to 31 days, to hit each window's edges; and
//! the second test's pauses), so the model knows the time of every event
//! to the millisecond: windows roll, freezes end, and each move waits for
//! the shards' sweep to fail exactly the pending withdrawals past their
//! expiry. The other cases run on the system clock, where nothing is due
//! within a case (expiries and freezes a day away or more). The second
//! test pauses by moving the clock: every timer but the batch interval
//! comes due, and the pause waits until the payout actor has asked again
//! about every payout still waiting for an answer.
//!
//! `PROPTEST_CASES` sets the number of cases (default 256); see
//! `proptests/README.md` for the long run.

mod model;
#[path = "../tests/common/observed.rs"]
mod observed;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use burnledger::clock::{Clock, ManualClock};
use burnledger::config::{PayoutMode, SNAPSHOT_INTERVAL_SECS_DEFAULT};
use burnledger::domain::details::EXPIRED_REASON;
use burnledger::domain::payouts::{PayoutView, RETRY_BACKOFF_MS_MAX};
use burnledger::payment::{SimulatedBank, SimulatedBankConfig};
use burnledger::storage::data_dir::LockError;
use burnledger::{
    AccountControls, AccountExport, Config, CurrencyCode, FeeRequest, FreezeScope, Ledger,
    LedgerError, OpenError, TransactionId, UnixMs, WithdrawalLimit, WithdrawalOptions,
    WithdrawalOutcome,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use tempfile::TempDir;

use model::{
    Acct, Amount, Bal, Cur, CurSel, FeeSel, Freeze, Model, Out, Outcome, Request, Res, Rules,
    Scope, Status, Tx, Window, DAY_MS, FREEZE_REASON_MAX, MINUTE_MS,
};
use support::{ledger_config, to_decimal, to_units};

/// Pending withdrawals an account may hold: low enough that sequences of
/// 40 operations reach it now and then.
const PENDING_MAX: u32 = 3;
/// Longest any single step may take before the case fails as hung.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How far a pause moves the manual clock: past the longest retry backoff,
/// the idle sweep and the snapshot interval, so all of them come due; short
/// of the batch interval ([`BATCH_INTERVAL_SECS`]), so only `RunPayouts`
/// steps make payouts.
const PAUSE: Duration = Duration::from_secs(SNAPSHOT_INTERVAL_SECS_DEFAULT + 1);
const _: () = assert!(PAUSE.as_millis() > RETRY_BACKOFF_MS_MAX as u128);
const ACCOUNT_IDS: [Acct; 4] = [1, 2, 3, 4];
/// A fee account that is none of [`ACCOUNT_IDS`].
const FEE_ACCOUNT: Acct = 9;
/// The withdrawal limits of every case, (tier, currency, window, cap in
/// minor units): tight enough for the generated withdrawals (0.25 to 3 USD,
/// 0.01 to 0.12 BTC) to meet them; tier `vip` has more, `gold` none.
const LIMITS: [(&str, Cur, Window, i128); 5] = [
    ("default", Cur::Usd, Window::Day, 300),
    ("default", Cur::Usd, Window::Month, 500),
    ("default", Cur::Btc, Window::Day, 10_000_000),
    ("vip", Cur::Usd, Window::Day, 600),
    ("vip", Cur::Btc, Window::Month, 20_000_000),
];
const TIERS: [&str; 4] = ["default", "vip", "gold", "not a tier"];
/// Longest `expires_in` (the ledger's default, 30 days).
const EXPIRY_MAX_MS: u64 = burnledger::config::WITHDRAWAL_EXPIRY_MAX_MS_DEFAULT;
/// A withdrawal's `expires_in` on the manual clock: from 1 ms to the
/// longest, and two refused (0, and 1 ms past the longest).
const EXPIRIES_MS: [u64; 9] = [
    1,
    20,
    1_000,
    MINUTE_MS,
    3_600_000,
    DAY_MS,
    EXPIRY_MAX_MS,
    0,
    EXPIRY_MAX_MS + 1,
];
/// How long a freeze lasts on the manual clock (on the system clock: a day).
const FREEZES_MS: [u64; 4] = [1_000, MINUTE_MS, 3_600_000, DAY_MS];
/// How far an `Advance` moves the manual clock: around each window's edge
/// (a day less a millisecond, a day, 30 days: the 30-day window counts a
/// request up to a minute longer), and small steps.
const ADVANCES_MS: [u64; 10] = [
    1,
    1_000,
    MINUTE_MS,
    3_600_000,
    DAY_MS - 1,
    DAY_MS,
    10 * DAY_MS,
    29 * DAY_MS,
    30 * DAY_MS,
    31 * DAY_MS,
];
/// The batch interval: longer than any case moves the manual clock (40
/// steps of 31 days), so only `RunPayouts` steps make payouts.
const BATCH_INTERVAL_SECS: u64 = 10 * 365 * 86_400;

// ---- what proptest generates ----

#[derive(Clone, Copy, Debug)]
enum KeySel {
    None,
    /// One of a few keys, so keys are reused (per account: keys are scoped
    /// to the account an operation acts on).
    Pool(u8),
    /// The empty key: invalid input.
    Invalid,
}

impl KeySel {
    fn resolve(self) -> Option<String> {
        match self {
            KeySel::None => None,
            KeySel::Pool(n) => Some(format!("k{n}")),
            KeySel::Invalid => Some(String::new()),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum TxRef {
    /// One of the withdrawals made so far.
    Known(Index),
    /// Anything: another transaction, a withdrawal, or nothing at all.
    MadeUp { account: u8, sequence: u8 },
}

#[derive(Clone, Debug)]
enum Op {
    Deposit {
        account: u8,
        cur: CurSel,
        amount: Amount,
        key: KeySel,
    },
    Withdraw {
        account: u8,
        cur: CurSel,
        amount: Amount,
        key: KeySel,
        fee: Option<FeeSel>,
        /// An index into [`EXPIRIES_MS`].
        expiry: Option<u8>,
    },
    Transfer {
        from: u8,
        /// `None`: to itself (invalid input); else an offset to another.
        to: Option<u8>,
        cur: CurSel,
        amount: Amount,
        key: KeySel,
    },
    Complete {
        tx: TxRef,
        outcome: OutcomeSel,
    },
    Cancel {
        tx: TxRef,
    },
    Return {
        tx: TxRef,
    },
    Freeze {
        account: u8,
        all: bool,
        until: UntilSel,
        /// A reason one byte too long: refused.
        long_reason: bool,
    },
    Unfreeze {
        account: u8,
    },
    SetTier {
        account: u8,
        /// An index into [`TIERS`].
        tier: u8,
    },
    /// Moves the manual clock by [`ADVANCES_MS`]`[i]` (nothing on the
    /// system clock), then waits for the shards' sweep to expire what is
    /// due.
    Advance(u8),
    /// Sends an earlier keyed request again, unchanged or with another
    /// amount.
    Replay {
        pick: Index,
        conflicting: bool,
    },
    RunPayouts,
    Snapshot,
    CrashReopen,
    /// Moves the clock far enough for the payout actor to retry, on its
    /// own, every payout whose outcome is unknown, and waits until it has.
    Pause,
    /// Opens the folder a second time while the ledger runs: refused.
    SecondOpen,
    /// Closes the ledger (cleanly or by a crash), opens the folder with a
    /// changed currency table, then goes back to the usual one.
    ReopenChanged {
        change: CurrencyChange,
        crash: bool,
    },
}

/// Phase 3 as a caller reports it.
#[derive(Clone, Copy, Debug)]
enum OutcomeSel {
    Completed,
    Failed,
    /// Paid part of the withdrawal's amount.
    Partly(PaidSel),
}

/// A partial completion's paid amount, relative to the withdrawal's.
#[derive(Clone, Copy, Debug)]
enum PaidSel {
    /// `n` quarters of the amount (rounded down to a minor unit, at least
    /// one): 4 is all of it.
    Quarters(u8),
    /// One minor unit more than the amount: refused.
    MoreThanAll,
    Zero,
    Negative,
    /// Half a minor unit: refused.
    TooPrecise,
}

/// When a freeze ends.
#[derive(Clone, Copy, Debug)]
enum UntilSel {
    /// Until lifted.
    Lifted,
    /// Now (manual clock) or a second ago (system clock): refused.
    Past,
    /// An index into [`FREEZES_MS`] (on the system clock: a day).
    In(u8),
}

/// How a reopen's configuration differs from the folder's currency table.
#[derive(Clone, Copy, Debug)]
enum CurrencyChange {
    /// Another number of decimals for a currency that exists: refused.
    Scale { usd: bool, decimals: u8 },
    /// Leaves a currency out: refused while any account holds money in it
    /// (available or locked), else it opens with that currency retired.
    Drop { usd: bool },
    /// A new currency: opens.
    AddEur,
}

impl CurrencyChange {
    fn currencies(self) -> Vec<burnledger::CurrencyConfig> {
        use burnledger::CurrencyConfig;
        let (usd, btc) = (CurrencyConfig::new("USD", 2), CurrencyConfig::new("BTC", 8));
        match self {
            Self::Scale {
                usd: true,
                decimals,
            } => vec![CurrencyConfig::new("USD", decimals), btc],
            Self::Scale {
                usd: false,
                decimals,
            } => vec![usd, CurrencyConfig::new("BTC", decimals)],
            Self::Drop { usd: true } => vec![btc],
            Self::Drop { usd: false } => vec![usd],
            Self::AddEur => vec![usd, btc, CurrencyConfig::new("EUR", 2)],
        }
    }
}

fn currency_change() -> impl Strategy<Value = CurrencyChange> {
    prop_oneof![
        (
            any::<bool>(),
            prop_oneof![Just(0u8), Just(1), Just(3), Just(6), Just(18)]
        )
            .prop_filter("a changed scale", |(usd, d)| *d != if *usd { 2 } else { 8 })
            .prop_map(|(usd, decimals)| CurrencyChange::Scale { usd, decimals }),
        any::<bool>().prop_map(|usd| CurrencyChange::Drop { usd }),
        Just(CurrencyChange::AddEur),
    ]
}

#[derive(Clone, Debug)]
struct Faults {
    item_failure: u32,
    unknown_outcome: u32,
    lost_response: u32,
    pending: u32,
    seed: u64,
}

/// Where a case's ledger puts collected fees.
#[derive(Clone, Copy, Debug)]
enum FeeAccountSel {
    /// None: fees are refused (`fees_disabled`).
    Off,
    /// [`FEE_ACCOUNT`], which makes no operations of its own.
    Dedicated,
    /// The first account, which withdraws (with fees) too.
    FirstAccount,
}

impl FeeAccountSel {
    fn account(self) -> Option<Acct> {
        match self {
            Self::Off => None,
            Self::Dedicated => Some(FEE_ACCOUNT),
            Self::FirstAccount => Some(ACCOUNT_IDS[0]),
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    /// The host pays (external mode: no payment service, callers report
    /// every outcome) instead of the engine's batched payouts.
    external: bool,
    /// The ledger runs on a `ManualClock` only the test moves.
    manual_clock: bool,
    fee_account: FeeAccountSel,
    accounts: usize,
    faults: Faults,
    ops: Vec<Op>,
}

fn cur_sel() -> impl Strategy<Value = CurSel> {
    prop_oneof![
        10 => Just(CurSel::Known(Cur::Usd)),
        10 => Just(CurSel::Known(Cur::Btc)),
        1 => Just(CurSel::Unknown),
    ]
}

/// Small amounts, so insufficient funds happen; deposits a little larger
/// than what is taken out.
fn amount(steps_max: u8) -> impl Strategy<Value = Amount> {
    prop_oneof![
        30 => (1u8..=steps_max).prop_map(Amount::Steps),
        3 => (1u8..=3).prop_map(Amount::Minor),
        1 => Just(Amount::Zero),
        1 => (1u8..=3).prop_map(Amount::Negative),
        1 => Just(Amount::TooPrecise),
    ]
}

fn key() -> impl Strategy<Value = KeySel> {
    prop_oneof![
        12 => Just(KeySel::None),
        12 => (0u8..3).prop_map(KeySel::Pool),
        1 => Just(KeySel::Invalid),
    ]
}

fn tx_ref() -> impl Strategy<Value = TxRef> {
    prop_oneof![
        8 => any::<Index>().prop_map(TxRef::Known),
        1 => (0u8..4, 0u8..30).prop_map(|(account, sequence)| TxRef::MadeUp { account, sequence }),
    ]
}

/// `pauses`: how often (against 46 for everything else) to wait for the
/// payout actor's background retries; 0 for never.
fn op(pauses: u32) -> BoxedStrategy<Op> {
    if pauses == 0 {
        return busy_op().boxed();
    }
    prop_oneof![46 => busy_op(), pauses => Just(Op::Pause)].boxed()
}

/// A withdrawal's fee: mostly small and valid, in either currency.
fn fee() -> impl Strategy<Value = FeeSel> {
    let amount = prop_oneof![
        6 => (1u8..=3).prop_map(Amount::Minor),
        3 => (1u8..=2).prop_map(Amount::Steps),
        1 => Just(Amount::Zero),
        1 => Just(Amount::TooPrecise),
    ];
    (cur_sel(), amount).prop_map(|(cur, amount)| FeeSel { cur, amount })
}

fn outcome() -> impl Strategy<Value = OutcomeSel> {
    let paid = prop_oneof![
        6 => (1u8..=4).prop_map(PaidSel::Quarters),
        2 => Just(PaidSel::MoreThanAll),
        1 => Just(PaidSel::Zero),
        1 => Just(PaidSel::Negative),
        1 => Just(PaidSel::TooPrecise),
    ];
    prop_oneof![
        3 => Just(OutcomeSel::Completed),
        3 => Just(OutcomeSel::Failed),
        3 => paid.prop_map(OutcomeSel::Partly),
    ]
}

fn until() -> impl Strategy<Value = UntilSel> {
    prop_oneof![
        4 => Just(UntilSel::Lifted),
        1 => Just(UntilSel::Past),
        4 => (0..FREEZES_MS.len() as u8).prop_map(UntilSel::In),
    ]
}

fn busy_op() -> impl Strategy<Value = Op> {
    // Mostly the ones that come due within a case.
    let expiry = prop_oneof![6 => 0u8..=5, 1 => 6..EXPIRIES_MS.len() as u8];
    let expiry = prop::option::weighted(0.5, expiry);
    prop_oneof![
        9 => (0u8..4, cur_sel(), amount(40), key())
            .prop_map(|(account, cur, amount, key)| Op::Deposit { account, cur, amount, key }),
        10 => (0u8..4, cur_sel(), amount(12), key(), prop::option::weighted(0.4, fee()), expiry)
            .prop_map(|(account, cur, amount, key, fee, expiry)| Op::Withdraw {
                account, cur, amount, key, fee, expiry
            }),
        5 => (0u8..4, prop::option::weighted(0.95, 0u8..3), cur_sel(), amount(12), key()).prop_map(
            |(from, to, cur, amount, key)| Op::Transfer { from, to, cur, amount, key }
        ),
        4 => (tx_ref(), outcome()).prop_map(|(tx, outcome)| Op::Complete { tx, outcome }),
        2 => tx_ref().prop_map(|tx| Op::Cancel { tx }),
        2 => tx_ref().prop_map(|tx| Op::Return { tx }),
        2 => (0u8..4, any::<bool>(), until(), prop::bool::weighted(0.05)).prop_map(
            |(account, all, until, long_reason)| Op::Freeze { account, all, until, long_reason }
        ),
        1 => (0u8..4).prop_map(|account| Op::Unfreeze { account }),
        1 => (0u8..4, 0..TIERS.len() as u8).prop_map(|(account, tier)| Op::SetTier { account, tier }),
        3 => (0..ADVANCES_MS.len() as u8).prop_map(Op::Advance),
        3 => (any::<Index>(), any::<bool>())
            .prop_map(|(pick, conflicting)| Op::Replay { pick, conflicting }),
        4 => Just(Op::RunPayouts),
        1 => Just(Op::Snapshot),
        2 => Just(Op::CrashReopen),
        1 => Just(Op::SecondOpen),
        1 => (currency_change(), any::<bool>())
            .prop_map(|(change, crash)| Op::ReopenChanged { change, crash }),
    ]
}

fn faults() -> impl Strategy<Value = Faults> {
    let rate = prop_oneof![1 => Just(0u32), 3 => 50u32..=500];
    (rate.clone(), rate.clone(), rate.clone(), rate, any::<u64>()).prop_map(
        |(item_failure, unknown_outcome, lost_response, pending, seed)| Faults {
            item_failure,
            unknown_outcome,
            lost_response,
            pending,
            seed,
        },
    )
}

/// A few deposits first, so that withdrawals and transfers often have
/// something to take.
fn funding() -> impl Strategy<Value = Op> {
    (
        0u8..4,
        prop_oneof![Just(Cur::Usd), Just(Cur::Btc)],
        8u8..=40,
    )
        .prop_map(|(account, cur, steps)| Op::Deposit {
            account,
            cur: CurSel::Known(cur),
            amount: Amount::Steps(steps),
            key: KeySel::None,
        })
}

fn fee_account() -> impl Strategy<Value = FeeAccountSel> {
    prop_oneof![
        1 => Just(FeeAccountSel::Off),
        4 => Just(FeeAccountSel::Dedicated),
        2 => Just(FeeAccountSel::FirstAccount),
    ]
}

/// `manual_clock`: the share of cases on the manual clock (all of them at
/// 1.0, then even when shrinking).
fn case(pauses: u32, manual_clock: f64) -> impl Strategy<Value = Case> {
    let manual_clock = match manual_clock {
        all if all >= 1.0 => Just(true).boxed(),
        share => prop::bool::weighted(share).boxed(),
    };
    (
        (prop::bool::weighted(0.25), manual_clock),
        fee_account(),
        3usize..=4,
        faults(),
        prop::collection::vec(funding(), 0..=6),
        prop::collection::vec(op(pauses), 1..=40),
    )
        .prop_map(
            |((external, manual_clock), fee_account, accounts, faults, mut ops, more)| {
                ops.extend(more);
                Case {
                    external,
                    manual_clock,
                    fee_account,
                    accounts,
                    faults,
                    ops,
                }
            },
        )
}

// ---- the engine's side, seen through the model's types ----

/// Balances and withdrawals as the engine holds them.
#[derive(Debug, PartialEq, Eq)]
struct EngineView {
    balances: BTreeMap<(Acct, Cur), Bal>,
    withdrawals: BTreeMap<Tx, WSeen>,
}

/// A withdrawal's compared fields.
#[derive(Clone, Debug, PartialEq, Eq)]
struct WSeen {
    cur: Cur,
    amount: i128,
    status: Status,
    /// Failed with reason `expired`.
    expired: bool,
    fee: Option<(Cur, i128)>,
    paid: Option<i128>,
}

impl WSeen {
    fn of_model(w: &model::WRec) -> Self {
        Self {
            cur: w.cur,
            amount: w.amount,
            status: w.status,
            expired: w.expired,
            fee: w.fee,
            paid: w.paid(),
        }
    }

    fn of_engine(w: &burnledger::Withdrawal) -> Result<Self, String> {
        let cur = cur_of(w.currency.as_str())?;
        let fee = match &w.fee {
            Some(fee) => {
                let fee_cur = cur_of(fee.currency.as_str())?;
                Some((fee_cur, units(fee.amount, fee_cur)?))
            }
            None => None,
        };
        let expired = matches!(&w.status, burnledger::WithdrawalStatus::Failed { reason } if reason == EXPIRED_REASON);
        Ok(Self {
            cur,
            amount: units(w.amount, cur)?,
            status: status_of(&w.status),
            expired,
            fee,
            paid: w.paid.map(|p| units(p, cur)).transpose()?,
        })
    }
}

fn status_of(status: &burnledger::WithdrawalStatus) -> Status {
    use burnledger::WithdrawalStatus as W;
    match status {
        W::Pending => Status::Pending,
        W::Processing { .. } => Status::Processing,
        W::Completed => Status::Completed,
        W::Failed { .. } => Status::Failed,
        W::Cancelled => Status::Cancelled,
        W::Returned { .. } => Status::Returned,
    }
}

fn cur_of(code: &str) -> Result<Cur, String> {
    Cur::from_code(code).ok_or_else(|| format!("the engine holds an unknown currency {code}"))
}

fn view_of(accounts: &[AccountExport]) -> Result<EngineView, String> {
    let mut view = EngineView {
        balances: BTreeMap::new(),
        withdrawals: BTreeMap::new(),
    };
    for account in accounts {
        for entry in &account.balances {
            let cur = cur_of(entry.currency.as_str())?;
            let bal = Bal {
                available: units(entry.available, cur)?,
                locked: units(entry.locked, cur)?,
            };
            if bal != Bal::default() {
                view.balances.insert((account.id, cur), bal);
            }
        }
        for w in &account.withdrawals {
            view.withdrawals
                .insert(tx_of(w.transaction_id), WSeen::of_engine(w)?);
        }
    }
    Ok(view)
}

fn tx_id(tx: Tx) -> TransactionId {
    TransactionId::new(tx.0, tx.1)
}

fn tx_of(id: TransactionId) -> Tx {
    (id.account(), id.sequence())
}

fn units(amount: burnledger::Decimal, cur: Cur) -> Result<i128, String> {
    to_units(amount, cur.decimals())
        .ok_or_else(|| format!("{amount} has too many decimals for {cur:?}"))
}

/// The engine's answer in the model's terms.
fn res_of<T>(
    answer: Result<T, LedgerError>,
    convert: impl FnOnce(T) -> Result<Out, String>,
) -> Res {
    match answer {
        Ok(value) => convert(value).map_err(|_| "unreadable_receipt"),
        Err(error) => Err(error.code()),
    }
}

fn withdrawal_out(w: burnledger::Withdrawal) -> Result<Out, String> {
    let seen = WSeen::of_engine(&w)?;
    Ok(Out::Withdrawal {
        tx: tx_of(w.transaction_id),
        account: w.account,
        cur: seen.cur,
        amount: seen.amount,
        status: seen.status,
        fee: seen.fee,
        paid: seen.paid,
    })
}

fn controls_out(c: AccountControls) -> Result<Out, String> {
    let freeze = c.freeze.map(|f| Freeze {
        scope: match f.scope {
            FreezeScope::Withdrawals => Scope::Withdrawals,
            FreezeScope::All => Scope::All,
        },
        until: f.until.map(|u| u.as_millis()),
        reason: f.reason,
    });
    Ok(Out::Controls {
        account: c.account,
        tier: c.tier.to_string(),
        freeze,
    })
}

fn decimal(cur: CurSel, amount: Amount) -> burnledger::Decimal {
    let (mantissa, scale) = amount.mantissa_and_scale(cur);
    to_decimal(mantissa, scale)
}

/// A code as the caller sends it (well formed, configured or not).
fn code(cur: CurSel) -> CurrencyCode {
    CurrencyCode::new(cur.code()).expect("a well-formed currency code")
}

fn options(fee: &Option<FeeSel>, expires_in: Option<u64>) -> WithdrawalOptions {
    WithdrawalOptions {
        fee: fee.map(|f| FeeRequest {
            currency: code(f.cur),
            amount: decimal(f.cur, f.amount),
        }),
        expires_in: expires_in.map(Duration::from_millis),
        ..WithdrawalOptions::default()
    }
}

async fn execute(ledger: &Ledger, request: &Request) -> Res {
    match request {
        Request::Deposit {
            account,
            cur,
            amount,
            key,
        } => res_of(
            ledger
                .deposit(*account, cur.code(), decimal(*cur, *amount), key.as_deref())
                .await,
            |d| {
                let cur = cur_of(d.currency.as_str())?;
                Ok(Out::Deposit {
                    tx: tx_of(d.transaction_id),
                    account: d.account,
                    cur,
                    amount: units(d.amount, cur)?,
                })
            },
        ),
        Request::Withdraw {
            account,
            cur,
            amount,
            key,
            fee,
            expires_in,
        } => res_of(
            ledger
                .request_withdrawal_with(
                    *account,
                    cur.code(),
                    decimal(*cur, *amount),
                    key.as_deref(),
                    options(fee, *expires_in),
                )
                .await,
            withdrawal_out,
        ),
        Request::Transfer {
            from,
            to,
            cur,
            amount,
            key,
        } => res_of(
            ledger
                .transfer(
                    *from,
                    *to,
                    cur.code(),
                    decimal(*cur, *amount),
                    key.as_deref(),
                )
                .await,
            |t| {
                let cur = cur_of(t.currency.as_str())?;
                Ok(Out::Transfer {
                    tx: tx_of(t.transaction_id),
                    from: t.from,
                    to: t.to,
                    cur,
                    amount: units(t.amount, cur)?,
                })
            },
        ),
        Request::Complete { tx, outcome } => {
            let outcome = match *outcome {
                Outcome::Failed => WithdrawalOutcome::Failed {
                    reason: "the host says it failed".into(),
                },
                Outcome::Completed => WithdrawalOutcome::Completed,
                Outcome::PartlyCompleted { mantissa, scale } => {
                    WithdrawalOutcome::PartlyCompleted {
                        paid: to_decimal(mantissa, scale),
                    }
                }
            };
            res_of(
                ledger.complete_withdrawal(tx_id(*tx), outcome).await,
                withdrawal_out,
            )
        }
        Request::Cancel { tx } => {
            res_of(ledger.cancel_withdrawal(tx_id(*tx)).await, withdrawal_out)
        }
        Request::Return { tx } => res_of(
            ledger
                .return_withdrawal(tx_id(*tx), "sent back by the bank")
                .await,
            withdrawal_out,
        ),
        Request::Freeze {
            account,
            scope,
            until,
            reason,
        } => {
            let scope = match scope {
                Scope::Withdrawals => FreezeScope::Withdrawals,
                Scope::All => FreezeScope::All,
            };
            let until = until.map(UnixMs::from_millis);
            let answer = ledger.freeze_account(*account, scope, until, reason).await;
            res_of(answer, controls_out)
        }
        Request::Unfreeze { account } => {
            res_of(ledger.unfreeze_account(*account).await, controls_out)
        }
        Request::SetTier { account, tier } => {
            res_of(ledger.set_account_tier(*account, tier).await, controls_out)
        }
    }
}

// ---- one case ----

/// What a step does, resolved against the state so far.
#[derive(Clone, Debug)]
enum Action {
    Request(Request),
    RunPayouts,
    Snapshot,
    CrashReopen,
    Pause,
    /// Moves the manual clock this many milliseconds.
    Advance(u64),
    SecondOpen,
    ReopenChanged(CurrencyChange, bool),
    /// A replay with nothing to replay yet; a move of the system clock.
    Nothing,
}

fn fail(message: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(message.into())
}

struct Run {
    /// External mode: no payment service; payout runs are no-ops.
    external: bool,
    dir: TempDir,
    bank: SimulatedBank,
    ledger: Option<Ledger>,
    model: Model,
    accounts: Vec<Acct>,
    /// Requests made with a valid key, for replays.
    keyed: Vec<Request>,
    /// Every step and its answer, for the failure message.
    trace: Vec<String>,
    /// The ledger's clock on a manual-clock case; else the system clock.
    clock: Option<ManualClock>,
    /// Withdrawals the model expired since the last reopen: an expiry is
    /// logged after the sweep fails it in memory, so a crash may take it
    /// (the withdrawal is pending again, and fails at the next sweep).
    fresh_expiries: Vec<Tx>,
    /// Fees the model credited to the fee account for completions the
    /// payout made, which the engine credits there once the completion is
    /// durable, so a view taken meanwhile may lack any of them. Emptied by
    /// a view with every fee in.
    uncredited: Vec<(Cur, i128)>,
}

impl Run {
    fn open(&self) -> Result<Ledger, TestCaseError> {
        Ledger::open(self.config(support::currencies()))
            .map_err(|e| fail(format!("Ledger::open failed: {e}")))
    }

    fn config(&self, currencies: Vec<burnledger::CurrencyConfig>) -> Config {
        let bank = (!self.external).then_some(&self.bank);
        let config = ledger_config(self.dir.path(), PENDING_MAX, bank);
        let configured = |cur: &Cur| currencies.iter().any(|c| c.code.as_str() == cur.code());
        let limits: Vec<_> = LIMITS
            .iter()
            .filter(|l| configured(&l.1))
            .map(|(tier, cur, window, cap)| {
                let cap = to_decimal(*cap, cur.decimals());
                WithdrawalLimit::parse(&format!("{tier}:{}:{}={cap}", cur.code(), window.code()))
                    .expect("a well-formed limit")
            })
            .collect();
        Config {
            currencies,
            clock: self
                .clock
                .as_ref()
                .map_or(config.clock.clone(), ManualClock::shared),
            // Every move of the manual clock sweeps (and so expires what
            // is due) once the sweep is armed.
            account_idle_sweep_ms: match self.clock {
                Some(_) => 1,
                None => config.account_idle_sweep_ms,
            },
            payout_mode: PayoutMode::Batched {
                interval_secs: BATCH_INTERVAL_SECS,
            },
            fee_account: self.model.rules.fee_account,
            withdrawal_limits: limits,
            withdrawal_expiry_max_ms: EXPIRY_MAX_MS,
            // Keys outlive every case (the model keeps them for ever).
            idempotency_key_retention_ms: BATCH_INTERVAL_SECS * 1_000,
            ..config
        }
    }

    /// The time the ledger stamps what it does now with.
    fn now(&self) -> u64 {
        match &self.clock {
            Some(clock) => clock.unix_ms(),
            None => burnledger::clock::SystemClock::new().unix_ms(),
        }
    }

    fn open_with(&self, currencies: Vec<burnledger::CurrencyConfig>) -> Result<Ledger, OpenError> {
        Ledger::open(self.config(currencies))
    }

    /// Whether any account holds money (available or locked) in `cur`.
    fn model_holds(&self, cur: Cur) -> bool {
        self.model
            .balances
            .iter()
            .any(|((_, c), b)| *c == cur && b.available + b.locked != 0)
    }

    /// A second `Ledger::open` of the running ledger's folder.
    fn second_open(&mut self) -> Result<(), TestCaseError> {
        let answer = self.open_with(support::currencies()).map(drop);
        self.trace.push(format!("SecondOpen -> {answer:?}"));
        match answer {
            Err(OpenError::Lock(LockError::InUse { pid, .. }))
                if pid == Some(std::process::id()) =>
            {
                Ok(())
            }
            other => Err(fail(format!(
                "a second open of a folder in use must be refused naming this pid, got {other:?}"
            ))),
        }
    }

    /// Closes the ledger, opens with a changed table (which must open or
    /// be refused as the table's rules say), then reopens as usual.
    async fn reopen_changed(
        &mut self,
        change: CurrencyChange,
        crash: bool,
    ) -> Result<(), TestCaseError> {
        let ledger = self.ledger.take().expect("the ledger is open");
        if !crash {
            ledger.shutdown().await;
        }
        drop(ledger);
        let opens = match change {
            CurrencyChange::Scale { .. } => false,
            CurrencyChange::Drop { usd } => {
                !self.model_holds(if usd { Cur::Usd } else { Cur::Btc })
            }
            CurrencyChange::AddEur => true,
        };
        let answer = self.open_with(change.currencies());
        self.trace.push(format!(
            "ReopenChanged {change:?} (crash: {crash}) -> {:?}",
            answer.as_ref().map(|_| "opened")
        ));
        match (answer, opens) {
            (Ok(changed), true) => {
                // What it recovered is the state before, whatever the table.
                let engine = view_of(
                    &observed::observed(&changed)
                        .await
                        .map_err(|e| fail(e.to_string()))?,
                )
                .map_err(fail)?;
                changed.shutdown().await;
                drop(changed);
                self.ledger = Some(self.open()?);
                self.recovered(&engine, crash)?;
                let moves = Self::payout_moves(&self.model, &engine, false)?;
                self.apply_moves(&moves)?;
                return self.compare(&engine, "reopened with a changed table").await;
            }
            (Err(OpenError::Currencies(_)), false) => {}
            (answer, _) => {
                return Err(fail(format!(
                    "reopen with {change:?}: expected {}, got {:?}",
                    if opens {
                        "to open"
                    } else {
                        "a currency table refusal"
                    },
                    answer.map(|_| "opened")
                )))
            }
        }
        self.ledger = Some(self.open()?);
        Ok(())
    }

    fn ledger(&self) -> &Ledger {
        self.ledger.as_ref().expect("the ledger is open")
    }

    /// After a reopen: the model's expiries a crash took (`crashed`) are
    /// undone where the engine recovered the withdrawal still pending; what
    /// the reopened ledger holds is durable from then on. Ids taken by
    /// nothing logged are free again.
    fn recovered(&mut self, engine: &EngineView, crashed: bool) -> Result<(), TestCaseError> {
        self.model.reopened();
        for tx in std::mem::take(&mut self.fresh_expiries) {
            let pending = engine.withdrawals.get(&tx).map(|w| w.status) == Some(Status::Pending);
            if crashed && pending && self.model.withdrawals[&tx].expired {
                self.trace
                    .push(format!("  the crash took the expiry of {tx:?}"));
                self.model.unexpire(tx).map_err(fail)?;
            }
        }
        Ok(())
    }

    /// A withdrawal's `expires_in` for `EXPIRIES_MS[i]`: on the system
    /// clock, nothing shorter than a day (nothing comes due in a case).
    fn expires_in(&self, i: u8) -> u64 {
        let ms = EXPIRIES_MS[usize::from(i) % EXPIRIES_MS.len()];
        match self.clock {
            None if ms != 0 && ms < DAY_MS => DAY_MS,
            _ => ms,
        }
    }

    /// A freeze's end as an absolute time.
    fn until(&self, until: UntilSel, now: u64) -> Option<u64> {
        let manual = self.clock.is_some();
        match until {
            UntilSel::Lifted => None,
            UntilSel::Past if manual => Some(now),
            UntilSel::Past => Some(now - 1_000),
            UntilSel::In(_) if !manual => Some(now + DAY_MS),
            UntilSel::In(i) => Some(now + FREEZES_MS[usize::from(i) % FREEZES_MS.len()]),
        }
    }

    /// A partial completion's paid amount for withdrawal `tx` (of 1.00 USD
    /// if there is no such withdrawal), as (mantissa, scale).
    fn paid(&self, tx: Tx, paid: PaidSel) -> Outcome {
        let (amount, decimals) = self
            .model
            .withdrawals
            .get(&tx)
            .map_or((100, 2), |w| (w.amount, w.cur.decimals()));
        let (mantissa, scale) = match paid {
            PaidSel::Quarters(q) => ((amount * i128::from(q) / 4).max(1), decimals),
            PaidSel::MoreThanAll => (amount + 1, decimals),
            PaidSel::Zero => (0, decimals),
            PaidSel::Negative => (-1, decimals),
            PaidSel::TooPrecise => (5, decimals + 1),
        };
        Outcome::PartlyCompleted { mantissa, scale }
    }

    fn resolve(&self, op: &Op) -> Action {
        let account = |i: u8| self.accounts[usize::from(i) % self.accounts.len()];
        let tx = |r: &TxRef| match r {
            TxRef::Known(index) if !self.model.withdrawals.is_empty() => *self
                .model
                .withdrawals
                .keys()
                .nth(index.index(self.model.withdrawals.len()))
                .expect("index within bounds"),
            TxRef::Known(index) => (account(index.index(256) as u8), 1),
            TxRef::MadeUp {
                account: a,
                sequence,
            } => (account(*a), u64::from(*sequence)),
        };
        let request = match op {
            Op::Deposit {
                account: a,
                cur,
                amount,
                key,
            } => Request::Deposit {
                account: account(*a),
                cur: *cur,
                amount: *amount,
                key: key.resolve(),
            },
            Op::Withdraw {
                account: a,
                cur,
                amount,
                key,
                fee,
                expiry,
            } => Request::Withdraw {
                account: account(*a),
                cur: *cur,
                amount: *amount,
                key: key.resolve(),
                fee: *fee,
                expires_in: expiry.map(|i| self.expires_in(i)),
            },
            Op::Transfer {
                from,
                to,
                cur,
                amount,
                key,
            } => Request::Transfer {
                from: account(*from),
                to: match to {
                    None => account(*from),
                    Some(offset) => {
                        let n = self.accounts.len() as u8;
                        account((*from % n + 1 + offset % (n - 1)) % n)
                    }
                },
                cur: *cur,
                amount: *amount,
                key: key.resolve(),
            },
            Op::Complete { tx: r, outcome } => {
                let tx = tx(r);
                let outcome = match *outcome {
                    OutcomeSel::Completed => Outcome::Completed,
                    OutcomeSel::Failed => Outcome::Failed,
                    OutcomeSel::Partly(paid) => self.paid(tx, paid),
                };
                Request::Complete { tx, outcome }
            }
            Op::Freeze {
                account: a,
                all,
                until,
                long_reason,
            } => Request::Freeze {
                account: account(*a),
                scope: if *all { Scope::All } else { Scope::Withdrawals },
                until: self.until(*until, self.now()),
                reason: if *long_reason {
                    "x".repeat(FREEZE_REASON_MAX + 1)
                } else {
                    "kyc review".into()
                },
            },
            Op::Unfreeze { account: a } => Request::Unfreeze {
                account: account(*a),
            },
            Op::SetTier { account: a, tier } => Request::SetTier {
                account: account(*a),
                tier: TIERS[usize::from(*tier) % TIERS.len()].to_string(),
            },
            Op::Advance(i) => match self.clock {
                Some(_) => {
                    return Action::Advance(ADVANCES_MS[usize::from(*i) % ADVANCES_MS.len()])
                }
                None => return Action::Nothing,
            },
            Op::Cancel { tx: r } => Request::Cancel { tx: tx(r) },
            Op::Return { tx: r } => Request::Return { tx: tx(r) },
            Op::Replay { pick, conflicting } => {
                if self.keyed.is_empty() {
                    return Action::Nothing;
                }
                let earlier = &self.keyed[pick.index(self.keyed.len())];
                if *conflicting {
                    earlier.conflicting()
                } else {
                    earlier.clone()
                }
            }
            Op::RunPayouts if self.external => return Action::Nothing,
            Op::RunPayouts => return Action::RunPayouts,
            Op::Snapshot => return Action::Snapshot,
            Op::CrashReopen => return Action::CrashReopen,
            Op::Pause => return Action::Pause,
            Op::SecondOpen => return Action::SecondOpen,
            Op::ReopenChanged { change, crash } => return Action::ReopenChanged(*change, *crash),
        };
        Action::Request(request)
    }

    async fn export(&self) -> Result<EngineView, TestCaseError> {
        // As a caller observes it: the ledger may have forgotten finished
        // withdrawals its history store holds (looked up by id instead).
        let accounts = observed::observed(self.ledger())
            .await
            .map_err(|e| fail(format!("observing the accounts failed: {e}")))?;
        view_of(&accounts).map_err(fail)
    }

    /// Withdrawals the payout moved since `pre`, with where to: from
    /// processing only, or (during a payout run) from pending too.
    fn payout_moves(
        pre: &Model,
        engine: &EngineView,
        from_pending: bool,
    ) -> Result<Vec<(Tx, Status)>, TestCaseError> {
        let mut moves = Vec::new();
        for (tx, w) in &pre.withdrawals {
            let Some(now) = engine.withdrawals.get(tx).map(|w| &w.status) else {
                return Err(fail(format!("withdrawal {tx:?} vanished from the engine")));
            };
            let movable =
                w.status == Status::Processing || (from_pending && w.status == Status::Pending);
            if !movable || *now == w.status {
                continue;
            }
            let to = match (w.status, *now) {
                (_, Status::Completed | Status::Failed) => *now,
                (Status::Pending, Status::Processing) => Status::Processing,
                // Completed by the payout, then returned by this step.
                (Status::Processing, Status::Returned) if !from_pending => Status::Completed,
                // Anything else would be the operation itself, or a bug;
                // the comparison after the step tells which.
                _ => continue,
            };
            moves.push((*tx, to));
        }
        Ok(moves)
    }

    /// Checks the engine against the model, the audit, and the bank.
    async fn compare(&mut self, engine: &EngineView, step: &str) -> Result<(), TestCaseError> {
        self.model.check().map_err(fail)?;
        let expected_balances = self.model.nonzero_balances();
        if !self.balances_match(&expected_balances, &engine.balances) {
            return Err(fail(format!(
                "after {step}: balances differ\n  model:  {expected_balances:?}\n  engine: {:?}\n  fees on their way to the fee account: {:?}",
                engine.balances, self.uncredited
            )));
        }
        if expected_balances == engine.balances {
            self.uncredited.clear();
        }
        let expected: BTreeMap<Tx, WSeen> = self
            .model
            .withdrawals
            .iter()
            .map(|(tx, w)| (*tx, WSeen::of_model(w)))
            .collect();
        if expected != engine.withdrawals {
            return Err(fail(format!(
                "after {step}: withdrawals differ\n  model:  {expected:?}\n  engine: {:?}",
                engine.withdrawals
            )));
        }
        self.compare_controls(step).await?;
        let audit = self.audit_once_fees_landed().await?;
        if !audit.is_clean() {
            return Err(fail(format!(
                "after {step}: audit violations {:?}",
                audit.violations
            )));
        }
        // Invariant 5: the bank pays a withdrawal at most once, a completed
        // one exactly once, and one the payout failed (or never sent) not
        // at all.
        for (tx, w) in &self.model.withdrawals {
            let paid = self.bank.times_paid(tx_id(*tx));
            let expected_paid = match w.status {
                _ if w.settled_by_host => None,
                Status::Completed | Status::Returned => Some(1),
                Status::Failed | Status::Pending | Status::Cancelled => Some(0),
                Status::Processing => None,
            };
            if paid > 1 || expected_paid.is_some_and(|n| n != paid) {
                return Err(fail(format!(
                    "after {step}: withdrawal {tx:?} is {:?} but the bank paid it {paid} times",
                    w.status
                )));
            }
        }
        Ok(())
    }

    /// Whether the engine's balances are the model's, but for fees on their
    /// way to the fee account (any of [`Run::uncredited`] may be missing
    /// from its available balance).
    fn balances_match(
        &self,
        model: &BTreeMap<(Acct, Cur), Bal>,
        engine: &BTreeMap<(Acct, Cur), Bal>,
    ) -> bool {
        let keys: std::collections::BTreeSet<_> = model.keys().chain(engine.keys()).collect();
        keys.into_iter().all(|key| {
            let m = model.get(key).copied().unwrap_or_default();
            let e = engine.get(key).copied().unwrap_or_default();
            m == e
                || (Some(key.0) == self.model.rules.fee_account
                    && m.locked == e.locked
                    && self
                        .missing_fees(key.1)
                        .contains(&(m.available - e.available)))
        })
    }

    /// Every sum of fees in `cur` that may still be on their way.
    fn missing_fees(&self, cur: Cur) -> std::collections::BTreeSet<i128> {
        let mut sums = std::collections::BTreeSet::from([0]);
        for (_, fee) in self.uncredited.iter().filter(|(c, _)| *c == cur) {
            let more: Vec<i128> = sums.iter().map(|s| s + fee).collect();
            sums.extend(more);
        }
        sums
    }

    /// The ledger's audit, taken again (for up to 5 s) while it fails with
    /// a fee account configured: the audit is meant for a quiet ledger, and
    /// a fee is credited a moment after its completion is durable — also a
    /// completion the model has not seen yet (a payout the clock set off
    /// may still be completing withdrawals as the audit reads). A violation
    /// that stays is reported.
    async fn audit_once_fees_landed(&self) -> Result<burnledger::Audit, TestCaseError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let audit = self.ledger().audit().await;
            let audit = audit.map_err(|e| fail(format!("audit failed: {e}")))?;
            let no_fees = self.model.rules.fee_account.is_none();
            if audit.is_clean() || no_fees || std::time::Instant::now() > deadline {
                return Ok(audit);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Waits until every fee on its way reached the fee account (nothing
    /// else moves: called once the payouts settled). A bounded poll (the
    /// step's timeout bounds it): nothing announces a credit.
    async fn await_fee_credits(&mut self) -> Result<(), TestCaseError> {
        while !self.uncredited.is_empty() {
            let engine = self.export().await?;
            if engine.balances == self.model.nonzero_balances() {
                self.uncredited.clear();
            }
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Every account's tier, freeze in force and withdrawal allowance in
    /// each currency (with what each window of its limits used), as the
    /// model has them now. The allowances are read after the view the
    /// model was brought up to date with: if the payout moved a withdrawal
    /// meanwhile, they are not compared this time.
    async fn compare_controls(&self, step: &str) -> Result<(), TestCaseError> {
        let now = self.now();
        let mut allowances = Vec::new();
        for &account in &self.accounts {
            let got = res_of(self.ledger().account_controls(account).await, controls_out);
            let expected = Ok(self.model.controls_view(account, now));
            if got != expected {
                return Err(fail(format!(
                    "after {step}: controls of {account} differ\n  model:  {expected:?}\n  engine: {got:?}"
                )));
            }
            for cur in Cur::ALL {
                let credits_due = self.uncredited.iter().any(|(c, _)| *c == cur);
                if credits_due && self.model.rules.fee_account == Some(account) {
                    continue; // its available balance may lack them
                }
                allowances.push((account, cur, self.allowance(account, cur).await?));
            }
        }
        if !self.still_processing().await? {
            return Ok(());
        }
        for (account, cur, got) in allowances {
            let expected = self.model.allowance(account, cur, now);
            if got != expected {
                return Err(fail(format!(
                    "after {step}: the {cur:?} allowance of {account} at {now} differs\n  model:  {expected:?}\n  engine: {got:?}\n  its withdrawals: {:?}",
                    self.model.withdrawals.range((account, 0)..=(account, u64::MAX)).collect::<Vec<_>>()
                )));
            }
        }
        Ok(())
    }

    /// The engine's withdrawal allowance in the model's terms: the amount,
    /// and what each window with a limit used.
    async fn allowance(
        &self,
        account: Acct,
        cur: Cur,
    ) -> Result<(i128, Vec<(Window, i128)>), TestCaseError> {
        let allowance = self
            .ledger()
            .withdrawal_allowance(account, cur.code())
            .await;
        let allowance = allowance.map_err(|e| fail(format!("allowance failed: {e}")))?;
        let windows = allowance.windows.iter().map(|w| {
            let window = match w.window {
                burnledger::Window::Day => Window::Day,
                burnledger::Window::Month => Window::Month,
            };
            units(w.used, cur).map(|used| (window, used))
        });
        Ok((
            units(allowance.amount, cur).map_err(fail)?,
            windows.collect::<Result<Vec<_>, _>>().map_err(fail)?,
        ))
    }

    /// Whether every withdrawal the model has processing still is (the
    /// only ones the payout moves in the background).
    async fn still_processing(&self) -> Result<bool, TestCaseError> {
        let processing = self.model.withdrawals.iter();
        let processing = processing.filter(|(_, w)| w.status == Status::Processing);
        for (tx, _) in processing {
            let w = self.ledger().withdrawal(tx_id(*tx)).await;
            let w = w.map_err(|e| fail(format!("reading {tx:?} failed: {e}")))?;
            if status_of(&w.status) != Status::Processing {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Finds an order of the step's request and the payout's background
    /// moves that gives the engine's answer; applies it to the model.
    fn explain(
        &mut self,
        pre: &Model,
        request: &Request,
        got: &Res,
        moves: &[(Tx, Status)],
        now: u64,
    ) -> Result<(), TestCaseError> {
        if !moves.is_empty() {
            self.trace.push(format!(
                "  background payout moves around the step: {moves:?}"
            ));
        }
        if moves.len() > 12 {
            return Err(fail(format!("too many background moves: {moves:?}")));
        }
        let mut masks: Vec<u32> = (0..1u32 << moves.len()).collect();
        masks.sort_by_key(|m| m.count_ones());
        let bit = |mask: u32, i: usize| mask & (1 << i) != 0;
        for mask in masks {
            let mut model = pre.clone();
            let before = moves.iter().enumerate().filter(|(i, _)| bit(mask, *i));
            if before
                .map(|(_, (tx, to))| model.payout_transition(*tx, *to))
                .any(|r| r.is_err())
            {
                continue;
            }
            let answer = model.apply(request, now);
            if answer != *got {
                continue;
            }
            let after = moves.iter().enumerate().filter(|(i, _)| !bit(mask, *i));
            if after
                .map(|(_, (tx, to))| model.payout_transition(*tx, *to))
                .any(|r| r.is_err())
            {
                continue;
            }
            if let Some(tx) = request.target() {
                if pre
                    .withdrawals
                    .get(&tx)
                    .is_some_and(|w| w.status == Status::Processing)
                {
                    model.mark_host(tx);
                }
            }
            self.model = model;
            self.note_fee_credits(moves);
            return Ok(());
        }
        if self.refused_before_fees_arrived(pre, request, got, moves, now) {
            let mut model = pre.clone();
            for (tx, to) in moves {
                model.payout_transition(*tx, *to).map_err(fail)?;
            }
            self.model = model;
            self.note_fee_credits(moves);
            return Ok(());
        }
        let expected = pre.clone().apply(request, now);
        Err(fail(format!(
            "{request:?}: the model answers {expected:?}, the engine {got:?} (payout moves meanwhile: {moves:?})"
        )))
    }

    /// Whether the engine refused `request` for funds only because fees
    /// are still on their way to the fee account ([`Run::uncredited`]):
    /// the model refuses it too without them (before or after the payout's
    /// moves). Such a refusal changes nothing.
    fn refused_before_fees_arrived(
        &self,
        pre: &Model,
        request: &Request,
        got: &Res,
        moves: &[(Tx, Status)],
        now: u64,
    ) -> bool {
        let Some(fee_account) = pre.rules.fee_account else {
            return false;
        };
        if *got != Err("insufficient_funds") || self.uncredited.is_empty() {
            return false;
        }
        [false, true].into_iter().any(|moved_first| {
            let mut short = pre.clone();
            for (cur, fee) in &self.uncredited {
                short
                    .balances
                    .entry((fee_account, *cur))
                    .or_default()
                    .available -= fee;
            }
            if moved_first {
                for (tx, to) in moves {
                    if short.payout_transition(*tx, *to).is_err() {
                        return false;
                    }
                }
            }
            short.apply(request, now) == *got
        })
    }

    async fn step(&mut self, action: &Action) -> Result<(), TestCaseError> {
        let pre = self.model.clone();
        let label = format!("{action:?}");
        match action {
            Action::Nothing => Ok(()),
            Action::Request(request) => {
                let now = self.now();
                let got = execute(self.ledger(), request).await;
                self.trace.push(format!("{request:?} -> {got:?}"));
                if matches!(request.key(), Some(k) if !k.is_empty()) {
                    self.keyed.push(request.clone());
                }
                let engine = self.export().await?;
                let moves = Self::payout_moves(&pre, &engine, false)?;
                self.explain(&pre, request, &got, &moves, now)?;
                self.compare(&engine, &label).await
            }
            Action::RunPayouts => {
                let views = self
                    .ledger()
                    .run_payouts_now()
                    .await
                    .map_err(|e| fail(format!("run_payouts_now failed: {e}")))?;
                self.trace
                    .push(format!("RunPayouts -> {} payouts", views.len()));
                let engine = self.export().await?;
                let moves = Self::payout_moves(&pre, &engine, true)?;
                self.trace.push(format!("  payout moves: {moves:?}"));
                self.apply_moves(&moves)?;
                // Every withdrawal pending before the run was queued, so the
                // run claimed it (unless it was settled meanwhile).
                for (tx, w) in &pre.withdrawals {
                    if w.status == Status::Pending
                        && engine.withdrawals.get(tx).map(|e| e.status) == Some(Status::Pending)
                    {
                        return Err(fail(format!(
                            "withdrawal {tx:?} is still pending after a payout run"
                        )));
                    }
                }
                self.compare(&engine, &label).await
            }
            Action::Pause => {
                let retried = self.pause().await?;
                self.trace
                    .push(format!("Pause -> retried payouts {retried:?}"));
                self.settle_expiries().await?;
                self.observe_background(&pre, &label).await
            }
            Action::Advance(by) => {
                let clock = self.clock.as_ref().ok_or_else(|| fail("no manual clock"))?;
                clock.advance(Duration::from_millis(*by));
                self.trace
                    .push(format!("Advance {by} ms -> {}", clock.unix_ms()));
                self.settle_expiries().await?;
                self.observe_background(&pre, &label).await
            }
            Action::Snapshot => {
                let taken = self
                    .ledger()
                    .snapshot()
                    .await
                    .map_err(|e| fail(format!("snapshot failed: {e}")))?;
                self.trace
                    .push(format!("Snapshot -> {:?}", taken.map(|s| s.lsn)));
                self.observe_background(&pre, &label).await
            }
            Action::CrashReopen => {
                drop(self.ledger.take());
                let ledger = self.open()?;
                let report = ledger.recovery_report().cloned();
                self.ledger = Some(ledger);
                self.trace.push(format!(
                    "CrashReopen -> replayed {:?} records, snapshot {:?}",
                    report.as_ref().map(|r| r.records_replayed),
                    report
                        .as_ref()
                        .and_then(|r| r.snapshot.as_ref().map(|s| s.lsn))
                ));
                if let Some(report) = report {
                    if report.bytes_truncated != 0 {
                        return Err(fail(format!(
                            "a drop without shutdown left a torn WAL tail: {report:?}"
                        )));
                    }
                }
                self.observe_reopened(&pre, &label, true).await
            }
            Action::SecondOpen => {
                self.second_open()?;
                self.observe_background(&pre, &label).await
            }
            Action::ReopenChanged(change, crash) => {
                self.reopen_changed(*change, *crash).await?;
                self.observe_reopened(&pre, &label, *crash).await
            }
        }
    }

    /// Moves the manual clock by [`PAUSE`], then waits until the payout
    /// actor has asked the service again about every payout that was
    /// waiting for an answer (its `attempts` grew). Returns their ids.
    ///
    /// A bounded poll (the step's timeout bounds it): the retry is a run the
    /// actor starts on its own thread when its timer fires, and nothing
    /// announces its end; each poll is a message to the actor, which
    /// answers only between runs.
    async fn pause(&self) -> Result<Vec<u64>, TestCaseError> {
        let clock = self
            .clock
            .as_ref()
            .ok_or_else(|| fail("a pause needs the manual clock"))?;
        let awaiting: Vec<(u64, u32)> = self
            .payout_attempts()
            .await?
            .into_iter()
            .filter(|(_, (_, waits))| *waits)
            .map(|(id, (attempts, _))| (id, attempts))
            .collect();
        clock.advance(PAUSE);
        loop {
            let now = self.payout_attempts().await?;
            let asked_again = |(id, was): &(u64, u32)| now.get(id).is_some_and(|(a, _)| a > was);
            if awaiting.iter().all(asked_again) {
                return Ok(awaiting.into_iter().map(|(id, _)| id).collect());
            }
            tokio::task::yield_now().await;
        }
    }

    /// Every payout's calls to the service so far, and whether an item of
    /// it still waits for the service's answer.
    async fn payout_attempts(&self) -> Result<BTreeMap<u64, (u32, bool)>, TestCaseError> {
        let payouts = self.ledger().payouts().await;
        let payouts = payouts.map_err(|e| fail(format!("payouts failed: {e}")))?;
        let waits = |p: &PayoutView| p.items.iter().any(|i| i.outcome.is_none());
        Ok(payouts
            .iter()
            .map(|p| (p.payout_id, (p.attempts, waits(p))))
            .collect())
    }

    /// After a step that changes nothing itself: apply what the payout did
    /// in the background, then compare.
    async fn observe_background(&mut self, pre: &Model, label: &str) -> Result<(), TestCaseError> {
        let engine = self.export().await?;
        self.apply_moves(&Self::payout_moves(pre, &engine, false)?)?;
        self.compare(&engine, label).await
    }

    /// Applies the payout's moves to the model.
    fn apply_moves(&mut self, moves: &[(Tx, Status)]) -> Result<(), TestCaseError> {
        for (tx, to) in moves {
            self.model.payout_transition(*tx, *to).map_err(fail)?;
        }
        self.note_fee_credits(moves);
        Ok(())
    }

    /// The fees of the payout's completions among `moves`, which reach
    /// another fee account only once the completion is durable: a view
    /// taken meanwhile may miss them (see [`Run::uncredited`]).
    fn note_fee_credits(&mut self, moves: &[(Tx, Status)]) {
        let fee_account = self.model.rules.fee_account;
        for (tx, to) in moves {
            let fee = self.model.withdrawals.get(tx).and_then(|w| w.fee);
            if let (Status::Completed, Some(fee)) = (to, fee) {
                if fee_account.is_some_and(|f| f != tx.0) {
                    self.uncredited.push(fee);
                }
            }
        }
    }

    /// [`observe_background`](Self::observe_background) after a reopen,
    /// `crashed` or not (see [`recovered`](Self::recovered)).
    async fn observe_reopened(
        &mut self,
        pre: &Model,
        label: &str,
        crashed: bool,
    ) -> Result<(), TestCaseError> {
        let engine = self.export().await?;
        self.recovered(&engine, crashed)?;
        self.apply_moves(&Self::payout_moves(pre, &engine, false)?)?;
        self.compare(&engine, label).await
    }

    /// After the manual clock moved: waits until the engine failed every
    /// pending withdrawal whose expiry passed, then fails the same in the
    /// model. A bounded poll (the step's timeout bounds it): the shards'
    /// sweep runs on their own threads and announces nothing. If a sweep
    /// was between runs (not armed) when the clock moved, it comes only
    /// with the next move: the clock moves on a millisecond now and then.
    async fn settle_expiries(&mut self) -> Result<(), TestCaseError> {
        let Some(clock) = self.clock.clone() else {
            return Ok(());
        };
        for polls in 1u32.. {
            let now = clock.unix_ms();
            let due = self.model.due(now);
            if due.is_empty() {
                break;
            }
            if self.all_settled(&due).await? {
                let expired = self.model.expire_due(now);
                self.trace.push(format!("  expired at {now}: {expired:?}"));
                self.fresh_expiries.extend(expired);
                break;
            }
            if polls % 200 == 0 {
                clock.advance(Duration::from_millis(1));
            }
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Whether none of `txs` is pending in the engine any more.
    async fn all_settled(&self, txs: &[Tx]) -> Result<bool, TestCaseError> {
        for tx in txs {
            let w = self.ledger().withdrawal(tx_id(*tx)).await;
            let w = w.map_err(|e| fail(format!("reading {tx:?} failed: {e}")))?;
            if status_of(&w.status) == Status::Pending {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// With the bank's faults off, one payout run settles everything.
    async fn drain(&mut self) -> Result<(), TestCaseError> {
        if self.external {
            return Ok(());
        }
        self.bank.set_faults(SimulatedBankConfig::default());
        self.step(&Action::RunPayouts).await?;
        let open: Vec<_> = self
            .model
            .withdrawals
            .iter()
            .filter(|(_, w)| w.status.holds_lock())
            .map(|(tx, w)| (*tx, w.status))
            .collect();
        if !open.is_empty() {
            return Err(fail(format!(
                "with the bank's faults off, a payout run left {open:?} unsettled"
            )));
        }
        Ok(())
    }

    /// A clean shutdown, then a reopen from the snapshot it leaves.
    async fn restart_cleanly(&mut self) -> Result<(), TestCaseError> {
        let ledger = self.ledger.take().expect("the ledger is open");
        ledger.shutdown().await;
        drop(ledger);
        self.ledger = Some(self.open()?);
        self.trace.push("Shutdown + reopen".into());
        let pre = self.model.clone();
        self.observe_reopened(&pre, "shutdown + reopen", false)
            .await
    }
}

/// Runs one case.
async fn run_case(case: Case) -> Result<(), TestCaseError> {
    let faults = &case.faults;
    let bank = SimulatedBank::new(SimulatedBankConfig {
        item_failure_per_mille: faults.item_failure,
        unknown_outcome_per_mille: faults.unknown_outcome,
        lost_response_per_mille: faults.lost_response,
        pending_per_mille: faults.pending,
        seed: faults.seed,
        ..SimulatedBankConfig::default()
    });
    let mut run = Run {
        dir: tempfile::tempdir().map_err(|e| fail(e.to_string()))?,
        bank,
        ledger: None,
        model: Model::new(Rules {
            pending_max: PENDING_MAX as usize,
            engine_pays: !case.external,
            fee_account: case.fee_account.account(),
            limits: LIMITS
                .iter()
                .map(|(tier, cur, window, cap)| ((tier.to_string(), *cur, *window), *cap))
                .collect(),
            expiry_max_ms: EXPIRY_MAX_MS,
        }),
        external: case.external,
        accounts: ACCOUNT_IDS[..case.accounts].to_vec(),
        keyed: Vec::new(),
        trace: Vec::new(),
        clock: case.manual_clock.then(ManualClock::new),
        fresh_expiries: Vec::new(),
        uncredited: Vec::new(),
    };
    run.ledger = Some(run.open()?);
    let outcome = async {
        for op in &case.ops {
            let action = run.resolve(op);
            tokio::time::timeout(STEP_TIMEOUT, run.step(&action))
                .await
                .map_err(|_| fail(format!("{action:?} hung")))??;
        }
        tokio::time::timeout(STEP_TIMEOUT, run.drain())
            .await
            .map_err(|_| fail("the final payout run hung"))??;
        tokio::time::timeout(STEP_TIMEOUT, run.await_fee_credits())
            .await
            .map_err(|_| fail("collected fees never reached the fee account"))??;
        tokio::time::timeout(STEP_TIMEOUT, run.restart_cleanly())
            .await
            .map_err(|_| fail("shutdown + reopen hung"))??;
        Ok::<_, TestCaseError>(())
    }
    .await;
    if let Some(ledger) = run.ledger.take() {
        ledger.shutdown().await;
    }
    if std::env::var_os("BURNLEDGER_PROPTEST_TRACE").is_some() {
        eprintln!("case:\n  {}", run.trace.join("\n  "));
    }
    outcome.map_err(|e| {
        let TestCaseError::Fail(reason) = e else {
            return e;
        };
        fail(format!("{reason}\nsteps:\n  {}", run.trace.join("\n  ")))
    })
}

#[test]
fn the_engine_behaves_like_the_model_through_payouts_snapshots_and_crashes() {
    let rt = support::runtime();
    support::check(
        "engine vs model",
        support::proptest_config(256, file!()),
        case(0, 0.5),
        |case| rt.block_on(run_case(case)),
    );
}

/// The same, with pauses in which the payout actor retries unknown
/// outcomes on its own, on a manual clock the pauses move (so idle sweeps
/// and timed snapshots run only then, too). Fewer cases: an eighth of
/// `PROPTEST_CASES`, 12 by default.
#[test]
fn the_engine_behaves_like_the_model_while_payouts_retry_in_the_background() {
    let rt = support::runtime();
    let mut config = support::proptest_config(96, file!());
    config.cases = (config.cases / 8).max(1);
    support::check(
        "engine vs model, background retries",
        config,
        case(4, 1.0),
        |case| rt.block_on(run_case(case)),
    );
}
