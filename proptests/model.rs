//! A plain reference model of the ledger: `BTreeMap`s and the rules of
//! design.md §5–§9 written out again, independently of `src/` (it imports
//! nothing from the crate), so a bug there is not mirrored here.
//!
//! Amounts are integer minor units. Operations return what the ledger must
//! answer: the key fields of a success, or the error's `code()`.

use std::collections::BTreeMap;

pub type Acct = u64;
pub type Units = i128;
/// A transaction id: the owning account and its sequence number there.
pub type Tx = (Acct, u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cur {
    Usd,
    Btc,
}

impl Cur {
    pub const ALL: [Cur; 2] = [Cur::Usd, Cur::Btc];

    pub fn code(self) -> &'static str {
        match self {
            Cur::Usd => "USD",
            Cur::Btc => "BTC",
        }
    }

    pub fn decimals(self) -> u32 {
        match self {
            Cur::Usd => 2,
            Cur::Btc => 8,
        }
    }

    pub fn from_code(code: &str) -> Option<Cur> {
        Cur::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The "small amount" step of the generated amounts: 0.25 USD, 0.01 BTC.
    pub fn step(self) -> Units {
        match self {
            Cur::Usd => 25,
            Cur::Btc => 1_000_000,
        }
    }
}

/// A currency as a caller names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CurSel {
    Known(Cur),
    /// "EUR": well formed, but not configured.
    Unknown,
}

impl CurSel {
    pub fn code(self) -> &'static str {
        match self {
            CurSel::Known(c) => c.code(),
            CurSel::Unknown => "EUR",
        }
    }

    pub fn decimals(self) -> u32 {
        match self {
            CurSel::Known(c) => c.decimals(),
            CurSel::Unknown => 2,
        }
    }
}

/// An amount as a caller writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    /// `n` steps of the currency (see [`Cur::step`]).
    Steps(u8),
    /// `n` minor units (0.01 USD, 1 satoshi).
    Minor(u8),
    Zero,
    /// Minus `n` minor units.
    Negative(u8),
    /// Half a minor unit: more decimals than the currency has.
    TooPrecise,
}

impl Amount {
    /// Minor units (scale = the currency's decimals, except `TooPrecise`,
    /// which has one more) — what the caller's Decimal holds.
    pub fn mantissa_and_scale(self, cur: CurSel) -> (i128, u32) {
        let d = cur.decimals();
        match self {
            Amount::Steps(n) => match cur {
                CurSel::Known(c) => (i128::from(n) * c.step(), d),
                CurSel::Unknown => (i128::from(n) * 25, d),
            },
            Amount::Minor(n) => (i128::from(n), d),
            Amount::Zero => (0, d),
            Amount::Negative(n) => (-i128::from(n.max(1)), d),
            Amount::TooPrecise => (5, d + 1),
        }
    }

    /// Valid minor units, or `None` for an invalid amount.
    pub fn units(self, cur: Cur) -> Option<Units> {
        match self.mantissa_and_scale(CurSel::Known(cur)) {
            (units, scale) if scale == cur.decimals() && units > 0 => Some(units),
            _ => None,
        }
    }

    /// The same kind of amount, but a different value (for a conflicting
    /// idempotent replay).
    pub fn other(self) -> Amount {
        match self {
            Amount::Steps(n) => Amount::Steps(n % 12 + 1),
            Amount::Minor(n) => Amount::Minor(n % 3 + 1),
            Amount::Zero => Amount::Steps(1),
            Amount::Negative(_) | Amount::TooPrecise => Amount::Steps(2),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
    Returned,
}

impl Status {
    pub fn holds_lock(self) -> bool {
        matches!(self, Status::Pending | Status::Processing)
    }
}

/// A request a caller makes, as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Deposit {
        account: Acct,
        cur: CurSel,
        amount: Amount,
        key: Option<String>,
    },
    Withdraw {
        account: Acct,
        cur: CurSel,
        amount: Amount,
        key: Option<String>,
    },
    Transfer {
        from: Acct,
        to: Acct,
        cur: CurSel,
        amount: Amount,
        key: Option<String>,
    },
    /// Phase 3 by transaction id: completed, or failed.
    Complete {
        tx: Tx,
        failed: bool,
    },
    Cancel {
        tx: Tx,
    },
    /// The bank sent a completed withdrawal back.
    Return {
        tx: Tx,
    },
}

impl Request {
    /// The withdrawal this request updates, if it updates one.
    pub fn target(&self) -> Option<Tx> {
        match self {
            Request::Complete { tx, .. } | Request::Cancel { tx } | Request::Return { tx } => {
                Some(*tx)
            }
            _ => None,
        }
    }

    /// The same request with a different amount.
    pub fn conflicting(&self) -> Request {
        let mut other = self.clone();
        match &mut other {
            Request::Deposit { amount, .. }
            | Request::Withdraw { amount, .. }
            | Request::Transfer { amount, .. } => *amount = amount.other(),
            _ => {}
        }
        other
    }

    pub fn key(&self) -> Option<&str> {
        match self {
            Request::Deposit { key, .. }
            | Request::Withdraw { key, .. }
            | Request::Transfer { key, .. } => key.as_deref(),
            _ => None,
        }
    }
}

/// The key fields of a success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    Deposit {
        tx: Tx,
        account: Acct,
        cur: Cur,
        amount: Units,
    },
    Withdrawal {
        tx: Tx,
        account: Acct,
        cur: Cur,
        amount: Units,
        status: Status,
    },
    Transfer {
        tx: Tx,
        from: Acct,
        to: Acct,
        cur: Cur,
        amount: Units,
    },
}

/// A success, or the error's `code()`.
pub type Res = Result<Out, &'static str>;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bal {
    pub available: Units,
    pub locked: Units,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WRec {
    pub cur: Cur,
    pub amount: Units,
    pub status: Status,
    /// The host (not the payout) reported its outcome, or asked for one
    /// while it was processing: what the bank paid is not tied to its
    /// status any more.
    pub settled_by_host: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyUse {
    Deposit(Cur, Units),
    Withdrawal(Cur, Units),
    Transfer(Acct, Cur, Units),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    /// The ledger makes payouts: callers' outcomes are refused while a
    /// withdrawal holds its lock.
    pub engine_pays: bool,
    pub balances: BTreeMap<(Acct, Cur), Bal>,
    pub withdrawals: BTreeMap<Tx, WRec>,
    keys: BTreeMap<(Acct, String), (KeyUse, u64)>,
    next_seq: BTreeMap<Acct, u64>,
    pub deposited: BTreeMap<Cur, Units>,
    pub burned: BTreeMap<Cur, Units>,
    pending_max: usize,
}

impl Model {
    /// `engine_pays`: the ledger pays withdrawals through a payment service
    /// (else the host does, external mode).
    pub fn new(pending_max: u32, engine_pays: bool) -> Self {
        Self {
            engine_pays,
            balances: BTreeMap::new(),
            withdrawals: BTreeMap::new(),
            keys: BTreeMap::new(),
            next_seq: BTreeMap::new(),
            deposited: BTreeMap::new(),
            burned: BTreeMap::new(),
            pending_max: pending_max as usize,
        }
    }

    pub fn balance(&self, account: Acct, cur: Cur) -> Bal {
        self.balances
            .get(&(account, cur))
            .copied()
            .unwrap_or_default()
    }

    fn bal_mut(&mut self, account: Acct, cur: Cur) -> &mut Bal {
        self.balances.entry((account, cur)).or_default()
    }

    fn take_seq(&mut self, account: Acct) -> u64 {
        let next = self.next_seq.entry(account).or_insert(1);
        let seq = *next;
        *next += 1;
        seq
    }

    /// Checks at the edge, in the ledger's order: key, currency, amount.
    fn edge(
        key: &Option<String>,
        cur: CurSel,
        amount: Amount,
    ) -> Result<(Cur, Units), &'static str> {
        Self::key_ok(key)?;
        Self::money(cur, amount)
    }

    fn key_ok(key: &Option<String>) -> Result<(), &'static str> {
        match key {
            Some(k) if k.is_empty() || k.len() > 128 => Err("invalid_idempotency_key"),
            _ => Ok(()),
        }
    }

    fn money(cur: CurSel, amount: Amount) -> Result<(Cur, Units), &'static str> {
        let CurSel::Known(cur) = cur else {
            return Err("unknown_currency");
        };
        let units = amount.units(cur).ok_or("invalid_amount")?;
        Ok((cur, units))
    }

    /// `Some(seq)` if the key was used for exactly this; an error if for
    /// something else; `None` if never used.
    fn replayed(
        &self,
        account: Acct,
        key: &Option<String>,
        used_for: KeyUse,
    ) -> Result<Option<u64>, &'static str> {
        let Some(key) = key else { return Ok(None) };
        match self.keys.get(&(account, key.clone())) {
            None => Ok(None),
            Some((used, seq)) if *used == used_for => Ok(Some(*seq)),
            Some(_) => Err("idempotency_conflict"),
        }
    }

    fn remember(&mut self, account: Acct, key: &Option<String>, used_for: KeyUse, seq: u64) {
        if let Some(key) = key {
            self.keys.insert((account, key.clone()), (used_for, seq));
        }
    }

    fn locking(&self, account: Acct) -> usize {
        self.withdrawals
            .iter()
            .filter(|((a, _), w)| *a == account && w.status.holds_lock())
            .count()
    }

    pub fn apply(&mut self, request: &Request) -> Res {
        match request {
            Request::Deposit {
                account,
                cur,
                amount,
                key,
            } => {
                let (cur, units) = Self::edge(key, *cur, *amount)?;
                let used_for = KeyUse::Deposit(cur, units);
                let seq = match self.replayed(*account, key, used_for)? {
                    Some(seq) => seq,
                    None => {
                        let seq = self.take_seq(*account);
                        self.bal_mut(*account, cur).available += units;
                        *self.deposited.entry(cur).or_default() += units;
                        self.remember(*account, key, used_for, seq);
                        seq
                    }
                };
                Ok(Out::Deposit {
                    tx: (*account, seq),
                    account: *account,
                    cur,
                    amount: units,
                })
            }
            Request::Withdraw {
                account,
                cur,
                amount,
                key,
            } => {
                let (cur, units) = Self::edge(key, *cur, *amount)?;
                let used_for = KeyUse::Withdrawal(cur, units);
                let seq = match self.replayed(*account, key, used_for)? {
                    Some(seq) => seq,
                    None => {
                        if self.locking(*account) >= self.pending_max {
                            return Err("too_many_pending_withdrawals");
                        }
                        if self.balance(*account, cur).available < units {
                            return Err("insufficient_funds");
                        }
                        let seq = self.take_seq(*account);
                        let bal = self.bal_mut(*account, cur);
                        bal.available -= units;
                        bal.locked += units;
                        self.withdrawals.insert(
                            (*account, seq),
                            WRec {
                                cur,
                                amount: units,
                                status: Status::Pending,
                                settled_by_host: false,
                            },
                        );
                        self.remember(*account, key, used_for, seq);
                        seq
                    }
                };
                // A replay answers the withdrawal as it was created.
                Ok(Out::Withdrawal {
                    tx: (*account, seq),
                    account: *account,
                    cur,
                    amount: units,
                    status: Status::Pending,
                })
            }
            Request::Transfer {
                from,
                to,
                cur,
                amount,
                key,
            } => {
                Self::key_ok(key)?;
                if from == to {
                    return Err("same_account_transfer");
                }
                let (cur, units) = Self::money(*cur, *amount)?;
                let used_for = KeyUse::Transfer(*to, cur, units);
                let seq = match self.replayed(*from, key, used_for)? {
                    Some(seq) => seq,
                    None => {
                        if self.balance(*from, cur).available < units {
                            return Err("insufficient_funds");
                        }
                        let seq = self.take_seq(*from);
                        self.bal_mut(*from, cur).available -= units;
                        self.bal_mut(*to, cur).available += units;
                        self.remember(*from, key, used_for, seq);
                        seq
                    }
                };
                Ok(Out::Transfer {
                    tx: (*from, seq),
                    from: *from,
                    to: *to,
                    cur,
                    amount: units,
                })
            }
            Request::Complete { tx, failed } => {
                let target = if *failed {
                    Status::Failed
                } else {
                    Status::Completed
                };
                // Issue 11 item 4: when the engine pays, phase 3 is its
                // payouts' (a claimed withdrawal, and one still queued for
                // a payout); a caller's outcome is refused. Terminal ones
                // answer as always (a repeat, or invalid_transition).
                let owned = self.engine_pays
                    && self
                        .withdrawals
                        .get(tx)
                        .is_some_and(|w| w.status.holds_lock());
                if owned {
                    return Err("payout_in_flight");
                }
                self.update(*tx, target, &[Status::Pending], true)
            }
            Request::Cancel { tx } => {
                self.update(*tx, Status::Cancelled, &[Status::Pending], false)
            }
            Request::Return { tx } => {
                self.update(*tx, Status::Returned, &[Status::Completed], false)
            }
        }
    }

    /// The state machine of design §6: `target` is reached from the states
    /// in `from`; being there already is a no-op that reports it; anything
    /// else is an invalid transition.
    fn update(&mut self, tx: Tx, target: Status, from: &[Status], host_outcome: bool) -> Res {
        let w = self.withdrawals.get(&tx).ok_or("unknown_withdrawal")?;
        if w.status == target {
            return Ok(self.view(tx));
        }
        if !from.contains(&w.status) {
            return Err("invalid_transition");
        }
        self.move_to(tx, target);
        if host_outcome {
            self.mark_host(tx);
        }
        Ok(self.view(tx))
    }

    pub fn mark_host(&mut self, tx: Tx) {
        if let Some(w) = self.withdrawals.get_mut(&tx) {
            w.settled_by_host = true;
        }
    }

    /// Moves a withdrawal and its money; the caller checked it may.
    fn move_to(&mut self, tx: Tx, to: Status) {
        let w = self.withdrawals.get_mut(&tx).expect("a known withdrawal");
        let (from, cur, amount) = (w.status, w.cur, w.amount);
        w.status = to;
        let bal = self.bal_mut(tx.0, cur);
        match (from.holds_lock(), to) {
            (true, Status::Processing | Status::Pending) => {}
            (true, Status::Completed) => {
                bal.locked -= amount;
                *self.burned.entry(cur).or_default() += amount;
            }
            (true, Status::Failed | Status::Cancelled) => {
                bal.locked -= amount;
                bal.available += amount;
            }
            (false, Status::Returned) => {
                bal.available += amount;
                *self.deposited.entry(cur).or_default() += amount;
            }
            (held, to) => panic!("model: no money rule for {from:?} (lock {held}) -> {to:?}"),
        }
    }

    /// What the payout may do to a withdrawal: claim a pending one, and
    /// settle a pending or processing one as completed or failed.
    pub fn payout_transition(&mut self, tx: Tx, to: Status) -> Result<(), String> {
        let w = self
            .withdrawals
            .get(&tx)
            .ok_or_else(|| format!("{tx:?} is not a withdrawal the model knows"))?;
        let allowed = match (w.status, to) {
            (a, b) if a == b => return Ok(()),
            (Status::Pending, Status::Processing) => true,
            (Status::Pending | Status::Processing, Status::Completed | Status::Failed) => true,
            _ => false,
        };
        if !allowed {
            return Err(format!(
                "{tx:?}: the payout cannot move {:?} to {to:?}",
                w.status
            ));
        }
        self.move_to(tx, to);
        Ok(())
    }

    pub fn view(&self, tx: Tx) -> Out {
        let w = &self.withdrawals[&tx];
        Out::Withdrawal {
            tx,
            account: tx.0,
            cur: w.cur,
            amount: w.amount,
            status: w.status,
        }
    }

    /// Balances that are not zero (the engine may or may not keep an entry
    /// for a currency an account no longer holds).
    pub fn nonzero_balances(&self) -> BTreeMap<(Acct, Cur), Bal> {
        self.balances
            .iter()
            .filter(|(_, b)| **b != Bal::default())
            .map(|(k, b)| (*k, *b))
            .collect()
    }

    /// The model's own consistency (invariants 1–3 of design §9), so a
    /// model bug is not mistaken for an engine bug.
    pub fn check(&self) -> Result<(), String> {
        let mut locked: BTreeMap<(Acct, Cur), Units> = BTreeMap::new();
        for ((account, _), w) in &self.withdrawals {
            if w.status.holds_lock() {
                *locked.entry((*account, w.cur)).or_default() += w.amount;
            }
        }
        let mut totals: BTreeMap<Cur, Units> = BTreeMap::new();
        for (key, bal) in &self.balances {
            if bal.available < 0 || bal.locked < 0 {
                return Err(format!("model: negative balance {key:?} {bal:?}"));
            }
            if bal.locked != locked.get(key).copied().unwrap_or(0) {
                return Err(format!("model: locked of {key:?} is not its withdrawals'"));
            }
            *totals.entry(key.1).or_default() += bal.available + bal.locked;
        }
        for cur in Cur::ALL {
            let expected = self.deposited.get(&cur).copied().unwrap_or(0)
                - self.burned.get(&cur).copied().unwrap_or(0);
            if totals.get(&cur).copied().unwrap_or(0) != expected {
                return Err(format!("model: {cur:?} totals do not add up"));
            }
        }
        Ok(())
    }
}
