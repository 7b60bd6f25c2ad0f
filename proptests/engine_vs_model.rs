//! The engine against the reference model (`model.rs`), operation by
//! operation, with payouts through a faulty `SimulatedBank`, snapshots, and
//! crashes (the `Ledger` dropped without `shutdown`, then reopened on the
//! same folder and the same bank).
//!
//! After every step: the same answer (success with the same key fields, or
//! the same error code), the same balances for every (account, currency),
//! the same withdrawals with the same states, a clean `audit()` and the
//! model's own invariants, and the bank's payments matching the states
//! (design §9, invariants 1–6).
//!
//! Payout outcomes are random, so the model does not predict them: it reads
//! back which withdrawals the payout moved (pending → processing, completed
//! or failed; processing → completed or failed), checks each move is one
//! the state machine allows, and applies exactly those. The payout actor
//! may also retry a processing payout in the background at any moment;
//! such a move may land before or after the step's own operation, so each
//! order is tried and one must explain the answer. The second test runs
//! the ledger on a `ManualClock` and pauses by moving it: every timer but
//! the batch interval comes due, and the pause waits until the payout actor
//! has asked again about every payout still waiting for an answer.
//!
//! `PROPTEST_CASES` sets the number of cases (default 256); see
//! `proptests/README.md` for the long run.

mod model;
#[path = "../tests/common/observed.rs"]
mod observed;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use burnledger::clock::ManualClock;
use burnledger::config::SNAPSHOT_INTERVAL_SECS_DEFAULT;
use burnledger::domain::payouts::{PayoutView, RETRY_BACKOFF_MS_MAX};
use burnledger::payment::{SimulatedBank, SimulatedBankConfig};
use burnledger::storage::data_dir::LockError;
use burnledger::{
    AccountExport, Config, Ledger, LedgerError, OpenError, TransactionId, WithdrawalOutcome,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use tempfile::TempDir;

use model::{Acct, Amount, Bal, Cur, CurSel, Model, Out, Request, Res, Status, Tx};
use support::{ledger_config, to_decimal, to_units};

/// Pending withdrawals an account may hold: low enough that sequences of
/// 40 operations reach it now and then.
const PENDING_MAX: u32 = 3;
/// Longest any single step may take before the case fails as hung.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How far a pause moves the manual clock: past the longest retry backoff,
/// the idle sweep and the snapshot interval, so all of them come due; short
/// of the batch interval (a day), so only `RunPayouts` steps make payouts.
const PAUSE: Duration = Duration::from_secs(SNAPSHOT_INTERVAL_SECS_DEFAULT + 1);
const _: () = assert!(PAUSE.as_millis() > RETRY_BACKOFF_MS_MAX as u128);
const ACCOUNT_IDS: [Acct; 4] = [1, 2, 3, 4];

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
        failed: bool,
    },
    Cancel {
        tx: TxRef,
    },
    Return {
        tx: TxRef,
    },
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

#[derive(Clone, Debug)]
struct Case {
    /// The host pays (external mode: no payment service, callers report
    /// every outcome) instead of the engine's batched payouts.
    external: bool,
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

/// `pauses`: how often (against 37 for everything else) to wait for the
/// payout actor's background retries; 0 for never.
fn op(pauses: u32) -> BoxedStrategy<Op> {
    if pauses == 0 {
        return busy_op().boxed();
    }
    prop_oneof![37 => busy_op(), pauses => Just(Op::Pause)].boxed()
}

fn busy_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        9 => (0u8..4, cur_sel(), amount(40), key())
            .prop_map(|(account, cur, amount, key)| Op::Deposit { account, cur, amount, key }),
        6 => (0u8..4, cur_sel(), amount(12), key())
            .prop_map(|(account, cur, amount, key)| Op::Withdraw { account, cur, amount, key }),
        5 => (0u8..4, prop::option::weighted(0.95, 0u8..3), cur_sel(), amount(12), key()).prop_map(
            |(from, to, cur, amount, key)| Op::Transfer { from, to, cur, amount, key }
        ),
        3 => (tx_ref(), any::<bool>()).prop_map(|(tx, failed)| Op::Complete { tx, failed }),
        2 => tx_ref().prop_map(|tx| Op::Cancel { tx }),
        2 => tx_ref().prop_map(|tx| Op::Return { tx }),
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

fn case(pauses: u32) -> impl Strategy<Value = Case> {
    (
        prop::bool::weighted(0.25),
        3usize..=4,
        faults(),
        prop::collection::vec(funding(), 0..=6),
        prop::collection::vec(op(pauses), 1..=40),
    )
        .prop_map(|(external, accounts, faults, mut ops, more)| {
            ops.extend(more);
            Case {
                external,
                accounts,
                faults,
                ops,
            }
        })
}

// ---- the engine's side, seen through the model's types ----

/// Balances and withdrawals as the engine holds them.
#[derive(Debug, PartialEq, Eq)]
struct EngineView {
    balances: BTreeMap<(Acct, Cur), Bal>,
    withdrawals: BTreeMap<Tx, (Cur, i128, Status)>,
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
            let cur = cur_of(w.currency.as_str())?;
            view.withdrawals.insert(
                tx_of(w.transaction_id),
                (cur, units(w.amount, cur)?, status_of(&w.status)),
            );
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

fn units(amount: burnledger::Decimal, cur: Cur) -> Result<i128, &'static str> {
    to_units(amount, cur.decimals()).ok_or("receipt amount has too many decimals")
}

/// The engine's answer in the model's terms.
fn res_of<T>(
    answer: Result<T, LedgerError>,
    convert: impl FnOnce(T) -> Result<Out, &'static str>,
) -> Res {
    match answer {
        Ok(value) => convert(value).map_err(|_| "unreadable_receipt"),
        Err(error) => Err(error.code()),
    }
}

fn withdrawal_out(w: burnledger::Withdrawal) -> Result<Out, &'static str> {
    let cur = Cur::from_code(w.currency.as_str()).ok_or("currency")?;
    Ok(Out::Withdrawal {
        tx: tx_of(w.transaction_id),
        account: w.account,
        cur,
        amount: units(w.amount, cur)?,
        status: status_of(&w.status),
    })
}

async fn execute(ledger: &Ledger, request: &Request) -> Res {
    let decimal = |cur: CurSel, amount: Amount| {
        let (mantissa, scale) = amount.mantissa_and_scale(cur);
        to_decimal(mantissa, scale)
    };
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
                let cur = Cur::from_code(d.currency.as_str()).ok_or("currency")?;
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
        } => res_of(
            ledger
                .request_withdrawal(*account, cur.code(), decimal(*cur, *amount), key.as_deref())
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
                let cur = Cur::from_code(t.currency.as_str()).ok_or("currency")?;
                Ok(Out::Transfer {
                    tx: tx_of(t.transaction_id),
                    from: t.from,
                    to: t.to,
                    cur,
                    amount: units(t.amount, cur)?,
                })
            },
        ),
        Request::Complete { tx, failed } => {
            let outcome = if *failed {
                WithdrawalOutcome::Failed {
                    reason: "the host says it failed".into(),
                }
            } else {
                WithdrawalOutcome::Completed
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
    SecondOpen,
    ReopenChanged(CurrencyChange, bool),
    /// A replay with nothing to replay yet.
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
    /// The ledger's clock when the case pauses; else the system clock.
    clock: Option<ManualClock>,
}

impl Run {
    fn open(&self) -> Result<Ledger, TestCaseError> {
        Ledger::open(self.config(support::currencies()))
            .map_err(|e| fail(format!("Ledger::open failed: {e}")))
    }

    fn config(&self, currencies: Vec<burnledger::CurrencyConfig>) -> Config {
        let bank = (!self.external).then_some(&self.bank);
        let config = ledger_config(self.dir.path(), PENDING_MAX, bank);
        Config {
            currencies,
            clock: self
                .clock
                .as_ref()
                .map_or(config.clock.clone(), ManualClock::shared),
            ..config
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
                for (tx, to) in Self::payout_moves(&self.model, &engine, false)? {
                    self.model.payout_transition(tx, to).map_err(fail)?;
                }
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
            } => Request::Withdraw {
                account: account(*a),
                cur: *cur,
                amount: *amount,
                key: key.resolve(),
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
            Op::Complete { tx: r, failed } => Request::Complete {
                tx: tx(r),
                failed: *failed,
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
            let Some((_, _, now)) = engine.withdrawals.get(tx) else {
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
    async fn compare(&self, engine: &EngineView, step: &str) -> Result<(), TestCaseError> {
        self.model.check().map_err(fail)?;
        let expected_balances = self.model.nonzero_balances();
        if expected_balances != engine.balances {
            return Err(fail(format!(
                "after {step}: balances differ\n  model:  {expected_balances:?}\n  engine: {:?}",
                engine.balances
            )));
        }
        let expected: BTreeMap<Tx, (Cur, i128, Status)> = self
            .model
            .withdrawals
            .iter()
            .map(|(tx, w)| (*tx, (w.cur, w.amount, w.status)))
            .collect();
        if expected != engine.withdrawals {
            return Err(fail(format!(
                "after {step}: withdrawals differ\n  model:  {expected:?}\n  engine: {:?}",
                engine.withdrawals
            )));
        }
        let audit = self
            .ledger()
            .audit()
            .await
            .map_err(|e| fail(format!("audit failed: {e}")))?;
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

    /// Finds an order of the step's request and the payout's background
    /// moves that gives the engine's answer; applies it to the model.
    fn explain(
        &mut self,
        pre: &Model,
        request: &Request,
        got: &Res,
        moves: &[(Tx, Status)],
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
            let answer = model.apply(request);
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
            return Ok(());
        }
        let expected = pre.clone().apply(request);
        Err(fail(format!(
            "{request:?}: the model answers {expected:?}, the engine {got:?} (payout moves meanwhile: {moves:?})"
        )))
    }

    async fn step(&mut self, action: &Action) -> Result<(), TestCaseError> {
        let pre = self.model.clone();
        let label = format!("{action:?}");
        match action {
            Action::Nothing => Ok(()),
            Action::Request(request) => {
                let got = execute(self.ledger(), request).await;
                self.trace.push(format!("{request:?} -> {got:?}"));
                if matches!(request.key(), Some(k) if !k.is_empty()) {
                    self.keyed.push(request.clone());
                }
                let engine = self.export().await?;
                let moves = Self::payout_moves(&pre, &engine, false)?;
                self.explain(&pre, request, &got, &moves)?;
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
                for (tx, to) in moves {
                    self.model.payout_transition(tx, to).map_err(fail)?;
                }
                // Every withdrawal pending before the run was queued, so the
                // run claimed it (unless it was settled meanwhile).
                for (tx, w) in &pre.withdrawals {
                    if w.status == Status::Pending
                        && engine.withdrawals.get(tx).map(|e| e.2) == Some(Status::Pending)
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
                self.observe_background(&pre, &label).await
            }
            Action::SecondOpen => {
                self.second_open()?;
                self.observe_background(&pre, &label).await
            }
            Action::ReopenChanged(change, crash) => {
                self.reopen_changed(*change, *crash).await?;
                self.observe_background(&pre, &label).await
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
        for (tx, to) in Self::payout_moves(pre, &engine, false)? {
            self.model.payout_transition(tx, to).map_err(fail)?;
        }
        self.compare(&engine, label).await
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
        self.observe_background(&pre, "shutdown + reopen").await
    }
}

/// Runs one case; on `clock` if given (a case that pauses), else on the
/// system clock.
async fn run_case(case: Case, clock: Option<ManualClock>) -> Result<(), TestCaseError> {
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
        model: Model::new(PENDING_MAX, !case.external),
        external: case.external,
        accounts: ACCOUNT_IDS[..case.accounts].to_vec(),
        keyed: Vec::new(),
        trace: Vec::new(),
        clock,
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
        case(0),
        |case| rt.block_on(run_case(case, None)),
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
        case(4),
        |case| rt.block_on(run_case(case, Some(ManualClock::new()))),
    );
}
