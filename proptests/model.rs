//! A plain reference model of the ledger: `BTreeMap`s and the rules of
//! design.md §5–§9 written out again, independently of `src/` (it imports
//! nothing from the crate), so a bug there is not mirrored here.
//!
//! With issue 16's rules: a withdrawal's fee (locked with the amount in its
//! own currency; on completion moved to the fee account, else released),
//! partial completion, withdrawal limits per tier over a rolling 24-hour
//! and 30-day window, the account's tier, freezes, and the expiry of
//! pending withdrawals. Time is the caller's: each request is applied at a
//! time `now` (milliseconds since the epoch) the test passes, the time the
//! ledger's clock stamps it with.
//!
//! Amounts are integer minor units. Operations return what the ledger must
//! answer: the key fields of a success, or the error's `code()`.

use std::collections::BTreeMap;

pub const MINUTE_MS: u64 = 60_000;
pub const DAY_MS: u64 = 24 * 60 * MINUTE_MS;
pub const MONTH_MS: u64 = 30 * DAY_MS;
/// Longest freeze reason, in bytes.
pub const FREEZE_REASON_MAX: usize = 256;
/// What an account is in until someone sets its tier.
pub const DEFAULT_TIER: &str = "default";

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

/// A rolling window a withdrawal limit counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    Day,
    Month,
}

impl Window {
    pub const ALL: [Window; 2] = [Window::Day, Window::Month];

    pub fn millis(self) -> u64 {
        match self {
            Window::Day => DAY_MS,
            Window::Month => MONTH_MS,
        }
    }

    /// Its name in the configuration: `24h`, `30d`.
    pub fn code(self) -> &'static str {
        match self {
            Window::Day => "24h",
            Window::Month => "30d",
        }
    }
}

/// What a freeze stops: new withdrawals and transfers out, or every new
/// operation on the account (deposits and transfers in too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Withdrawals,
    All,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freeze {
    pub scope: Scope,
    /// `None`: until lifted.
    pub until: Option<u64>,
    pub reason: String,
}

impl Freeze {
    pub fn in_force(&self, at: u64) -> bool {
        self.until.is_none_or(|until| at < until)
    }

    /// A freeze of everything stops withdrawals too.
    pub fn stops(&self, what: Scope, at: u64) -> bool {
        self.in_force(at) && (self.scope == Scope::All || self.scope == what)
    }
}

/// A withdrawal's fee as a caller writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeeSel {
    pub cur: CurSel,
    pub amount: Amount,
}

/// Phase 3 as a caller reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    /// Completed, paying `mantissa` × 10^-`scale` of the withdrawal's
    /// currency.
    PartlyCompleted {
        mantissa: i128,
        scale: u32,
    },
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
        fee: Option<FeeSel>,
        /// Milliseconds.
        expires_in: Option<u64>,
    },
    Transfer {
        from: Acct,
        to: Acct,
        cur: CurSel,
        amount: Amount,
        key: Option<String>,
    },
    /// Phase 3 by transaction id: completed (in full or in part), or
    /// failed.
    Complete {
        tx: Tx,
        outcome: Outcome,
    },
    Cancel {
        tx: Tx,
    },
    /// The bank sent a completed withdrawal back.
    Return {
        tx: Tx,
    },
    /// An operator freezes an account (replacing any freeze it has).
    Freeze {
        account: Acct,
        scope: Scope,
        until: Option<u64>,
        reason: String,
    },
    Unfreeze {
        account: Acct,
    },
    SetTier {
        account: Acct,
        tier: String,
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
        fee: Option<(Cur, Units)>,
        /// What was paid, once completed (or returned).
        paid: Option<Units>,
    },
    /// An account's tier and the freeze in force.
    Controls {
        account: Acct,
        tier: String,
        freeze: Option<Freeze>,
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
    pub fee: Option<(Cur, Units)>,
    /// Set by a completion that paid less than the amount.
    pub partly_paid: Option<Units>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    /// Failed by its expiry (reason `expired`).
    pub expired: bool,
}

impl WRec {
    /// What it paid, as its view shows it: once completed (or returned).
    pub fn paid(&self) -> Option<Units> {
        matches!(self.status, Status::Completed | Status::Returned)
            .then(|| self.partly_paid.unwrap_or(self.amount))
    }

    /// What the limits count of it: pending, processing and completed ones
    /// (by what they paid), not failed or cancelled ones.
    fn counted(&self) -> Units {
        match self.status {
            Status::Pending | Status::Processing => self.amount,
            Status::Completed | Status::Returned => self.partly_paid.unwrap_or(self.amount),
            Status::Failed | Status::Cancelled => 0,
        }
    }
}

/// The ledger's configuration, as far as the rules read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub pending_max: usize,
    /// The ledger makes payouts: callers' outcomes are refused while a
    /// withdrawal holds its lock.
    pub engine_pays: bool,
    /// Where completed withdrawals' fees go; `None`: fees are refused.
    pub fee_account: Option<Acct>,
    /// Withdrawal limits: (tier, currency, window) → cap.
    pub limits: BTreeMap<(String, Cur, Window), Units>,
    /// Longest `expires_in`, in milliseconds.
    pub expiry_max_ms: u64,
}

/// An account's tier (`None`: the default) and freeze.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Controls {
    tier: Option<String>,
    freeze: Option<Freeze>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyUse {
    Deposit(Cur, Units),
    /// Currency, amount, fee, `expires_in`.
    Withdrawal(Cur, Units, Option<(Cur, Units)>, Option<u64>),
    Transfer(Acct, Cur, Units),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    pub rules: Rules,
    pub balances: BTreeMap<(Acct, Cur), Bal>,
    pub withdrawals: BTreeMap<Tx, WRec>,
    keys: BTreeMap<(Acct, String), (KeyUse, u64)>,
    next_seq: BTreeMap<Acct, u64>,
    /// The highest id per account that an operation the ledger logged took.
    logged_seq: BTreeMap<Acct, u64>,
    controls: BTreeMap<Acct, Controls>,
    /// Per account and currency: withdrawals requested at or before this
    /// time are counted by the minute they were requested in (the ledger
    /// folds what is a day older than its latest request into one-minute
    /// buckets), so the 30-day window counts them up to a minute longer.
    folded_to: BTreeMap<(Acct, Cur), u64>,
    pub deposited: BTreeMap<Cur, Units>,
    pub burned: BTreeMap<Cur, Units>,
}

impl Model {
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            balances: BTreeMap::new(),
            withdrawals: BTreeMap::new(),
            keys: BTreeMap::new(),
            next_seq: BTreeMap::new(),
            logged_seq: BTreeMap::new(),
            controls: BTreeMap::new(),
            folded_to: BTreeMap::new(),
            deposited: BTreeMap::new(),
            burned: BTreeMap::new(),
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

    /// Operation `seq` of `account` is logged; a key remembers it.
    fn remember(&mut self, account: Acct, key: &Option<String>, used_for: KeyUse, seq: u64) {
        let logged = self.logged_seq.entry(account).or_default();
        *logged = (*logged).max(seq);
        if let Some(key) = key {
            self.keys.insert((account, key.clone()), (used_for, seq));
        }
    }

    /// The ledger reopened: it knows the ids its log holds (snapshots keep
    /// only what the log held), so one that a transfer the receiving side
    /// refused took is free again.
    pub fn reopened(&mut self) {
        for (account, next) in self.next_seq.iter_mut() {
            *next = self.logged_seq.get(account).map_or(1, |seq| seq + 1);
        }
    }

    fn locking(&self, account: Acct) -> usize {
        self.withdrawals
            .iter()
            .filter(|((a, _), w)| *a == account && w.status.holds_lock())
            .count()
    }

    /// Answers `request` as the ledger must, applied at `now`.
    pub fn apply(&mut self, request: &Request, now: u64) -> Res {
        match request {
            Request::Deposit {
                account,
                cur,
                amount,
                key,
            } => self.deposit(*account, *cur, *amount, key, now),
            Request::Withdraw {
                account,
                cur,
                amount,
                key,
                fee,
                expires_in,
            } => {
                let (cur, units) = Self::edge(key, *cur, *amount)?;
                let fee = fee.map(|f| Self::money(f.cur, f.amount)).transpose()?;
                if expires_in.is_some_and(|ms| ms == 0 || ms > self.rules.expiry_max_ms) {
                    return Err("invalid_expiry");
                }
                let asked = Asked {
                    account: *account,
                    cur,
                    units,
                    fee,
                    expires_in: *expires_in,
                };
                self.withdraw(asked, key, now)
            }
            Request::Transfer {
                from,
                to,
                cur,
                amount,
                key,
            } => self.transfer(*from, *to, *cur, *amount, key, now),
            Request::Complete { tx, outcome } => {
                let target = match outcome {
                    Outcome::Failed => Status::Failed,
                    _ => Status::Completed,
                };
                // Issue 11 item 4: when the engine pays, phase 3 is its
                // payouts' (a claimed withdrawal, and one still queued for
                // a payout); a caller's outcome is refused. Terminal ones
                // answer as always (a repeat, or invalid_transition).
                let owned = self.rules.engine_pays
                    && self
                        .withdrawals
                        .get(tx)
                        .is_some_and(|w| w.status.holds_lock());
                if owned {
                    return Err("payout_in_flight");
                }
                let paid = match outcome {
                    Outcome::PartlyCompleted { mantissa, scale } => Some((*mantissa, *scale)),
                    _ => None,
                };
                self.update(*tx, target, &[Status::Pending], true, paid)
            }
            Request::Cancel { tx } => {
                self.update(*tx, Status::Cancelled, &[Status::Pending], false, None)
            }
            Request::Return { tx } => {
                self.update(*tx, Status::Returned, &[Status::Completed], false, None)
            }
            Request::Freeze {
                account,
                scope,
                until,
                reason,
            } => {
                if reason.len() > FREEZE_REASON_MAX {
                    return Err("reason_too_long");
                }
                if reason.trim().is_empty() {
                    return Err("reason_missing");
                }
                if until.is_some_and(|until| until <= now) {
                    return Err("invalid_expiry");
                }
                let freeze = Freeze {
                    scope: *scope,
                    until: *until,
                    reason: reason.clone(),
                };
                self.controls.entry(*account).or_default().freeze = Some(freeze);
                Ok(self.controls_view(*account, now))
            }
            Request::Unfreeze { account } => {
                if self.freeze_at(*account, now).is_some() {
                    self.controls.entry(*account).or_default().freeze = None;
                }
                Ok(self.controls_view(*account, now))
            }
            Request::SetTier { account, tier } => {
                let well_formed = !tier.is_empty()
                    && tier.len() <= 32
                    && tier
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                if !well_formed {
                    return Err("invalid_tier");
                }
                let tier = (tier != DEFAULT_TIER).then(|| tier.clone());
                self.controls.entry(*account).or_default().tier = tier;
                Ok(self.controls_view(*account, now))
            }
        }
    }

    fn deposit(
        &mut self,
        account: Acct,
        cur: CurSel,
        amount: Amount,
        key: &Option<String>,
        now: u64,
    ) -> Res {
        let (cur, units) = Self::edge(key, cur, amount)?;
        let used_for = KeyUse::Deposit(cur, units);
        let seq = match self.replayed(account, key, used_for)? {
            Some(seq) => seq,
            None => {
                self.check_not_frozen(account, Scope::All, now)?;
                let seq = self.take_seq(account);
                self.bal_mut(account, cur).available += units;
                *self.deposited.entry(cur).or_default() += units;
                self.remember(account, key, used_for, seq);
                seq
            }
        };
        Ok(Out::Deposit {
            tx: (account, seq),
            account,
            cur,
            amount: units,
        })
    }

    /// Phase 1, once the request itself passed: fees need a fee account;
    /// then the key, a freeze, the pending cap, the limits, the funds (the
    /// amount's, then the fee's).
    fn withdraw(&mut self, asked: Asked, key: &Option<String>, now: u64) -> Res {
        let Asked {
            account,
            cur,
            units,
            fee,
            expires_in,
        } = asked;
        if fee.is_some() && self.rules.fee_account.is_none() {
            return Err("fees_disabled");
        }
        let used_for = KeyUse::Withdrawal(cur, units, fee, expires_in);
        let seq = match self.replayed(account, key, used_for)? {
            Some(seq) => seq,
            None => {
                self.check_not_frozen(account, Scope::Withdrawals, now)?;
                if self.locking(account) >= self.rules.pending_max {
                    return Err("too_many_pending_withdrawals");
                }
                self.check_limits(account, cur, units, now)?;
                self.check_funds(account, cur, units, fee)?;
                let seq = self.take_seq(account);
                self.lock(account, cur, units, fee);
                self.withdrawals.insert(
                    (account, seq),
                    WRec {
                        cur,
                        amount: units,
                        status: Status::Pending,
                        settled_by_host: false,
                        fee,
                        partly_paid: None,
                        created_at: now,
                        expires_at: expires_in.map(|ms| now + ms),
                        expired: false,
                    },
                );
                let folded = self.folded_to.entry((account, cur)).or_default();
                *folded = (*folded).max(now.saturating_sub(DAY_MS));
                self.remember(account, key, used_for, seq);
                seq
            }
        };
        // A replay answers the withdrawal as it was created.
        Ok(Out::Withdrawal {
            tx: (account, seq),
            account,
            cur,
            amount: units,
            status: Status::Pending,
            fee,
            paid: None,
        })
    }

    fn check_funds(
        &self,
        account: Acct,
        cur: Cur,
        units: Units,
        fee: Option<(Cur, Units)>,
    ) -> Result<(), &'static str> {
        let same = fee.filter(|(c, _)| *c == cur).map_or(0, |(_, f)| f);
        if self.balance(account, cur).available < units + same {
            return Err("insufficient_funds");
        }
        match fee {
            Some((c, f)) if c != cur && self.balance(account, c).available < f => {
                Err("insufficient_funds")
            }
            _ => Ok(()),
        }
    }

    /// Moves a new withdrawal's amount and fee available → locked.
    fn lock(&mut self, account: Acct, cur: Cur, units: Units, fee: Option<(Cur, Units)>) {
        let bal = self.bal_mut(account, cur);
        bal.available -= units;
        bal.locked += units;
        if let Some((c, f)) = fee {
            let bal = self.bal_mut(account, c);
            bal.available -= f;
            bal.locked += f;
        }
    }

    fn transfer(
        &mut self,
        from: Acct,
        to: Acct,
        cur: CurSel,
        amount: Amount,
        key: &Option<String>,
        now: u64,
    ) -> Res {
        Self::key_ok(key)?;
        if from == to {
            return Err("same_account_transfer");
        }
        let (cur, units) = Self::money(cur, amount)?;
        let used_for = KeyUse::Transfer(to, cur, units);
        let seq = match self.replayed(from, key, used_for)? {
            Some(seq) => seq,
            None => {
                self.check_not_frozen(from, Scope::Withdrawals, now)?;
                if self.balance(from, cur).available < units {
                    return Err("insufficient_funds");
                }
                // The source took its id before the receiving side was
                // asked: a refusal there leaves it used.
                let seq = self.take_seq(from);
                self.check_not_frozen(to, Scope::All, now)?;
                self.bal_mut(from, cur).available -= units;
                self.bal_mut(to, cur).available += units;
                self.remember(from, key, used_for, seq);
                seq
            }
        };
        Ok(Out::Transfer {
            tx: (from, seq),
            from,
            to,
            cur,
            amount: units,
        })
    }

    fn freeze_at(&self, account: Acct, at: u64) -> Option<&Freeze> {
        self.controls
            .get(&account)
            .and_then(|c| c.freeze.as_ref())
            .filter(|f| f.in_force(at))
    }

    fn check_not_frozen(&self, account: Acct, what: Scope, at: u64) -> Result<(), &'static str> {
        match self.freeze_at(account, at) {
            Some(freeze) if freeze.stops(what, at) => Err("account_frozen"),
            _ => Ok(()),
        }
    }

    pub fn tier(&self, account: Acct) -> String {
        self.controls
            .get(&account)
            .and_then(|c| c.tier.clone())
            .unwrap_or_else(|| DEFAULT_TIER.to_string())
    }

    /// The account's tier and the freeze in force at `at`.
    pub fn controls_view(&self, account: Acct, at: u64) -> Out {
        Out::Controls {
            account,
            tier: self.tier(account),
            freeze: self.freeze_at(account, at).cloned(),
        }
    }

    fn limit(&self, account: Acct, cur: Cur, window: Window) -> Option<Units> {
        let key = (self.tier(account), cur, window);
        self.rules.limits.get(&key).copied()
    }

    fn check_limits(
        &self,
        account: Acct,
        cur: Cur,
        units: Units,
        at: u64,
    ) -> Result<(), &'static str> {
        for window in Window::ALL {
            let Some(limit) = self.limit(account, cur, window) else {
                continue;
            };
            if self.used(account, cur, window, at) + units > limit {
                return Err("limit_exceeded");
            }
        }
        Ok(())
    }

    /// What the account's withdrawals of `cur` requested within `window`
    /// before `at` count: exactly by the millisecond, except those folded
    /// into their minute, which count until that minute is `window` old.
    pub fn used(&self, account: Acct, cur: Cur, window: Window, at: u64) -> Units {
        let since = at.saturating_sub(window.millis());
        let folded_to = self.folded_to.get(&(account, cur)).copied().unwrap_or(0);
        let counts = |w: &WRec| {
            if w.created_at <= folded_to {
                window == Window::Month && w.created_at / MINUTE_MS * MINUTE_MS + MINUTE_MS > since
            } else {
                w.created_at > since
            }
        };
        self.withdrawals
            .iter()
            .filter(|((a, _), w)| *a == account && w.cur == cur && counts(w))
            .map(|(_, w)| w.counted())
            .sum()
    }

    /// The most `account` may withdraw of `cur` at `at`, and what each
    /// window with a limit has used.
    pub fn allowance(&self, account: Acct, cur: Cur, at: u64) -> (Units, Vec<(Window, Units)>) {
        let mut most = self.balance(account, cur).available;
        let mut windows = Vec::new();
        for window in Window::ALL {
            let Some(limit) = self.limit(account, cur, window) else {
                continue;
            };
            let used = self.used(account, cur, window, at);
            most = most.min((limit - used).max(0));
            windows.push((window, used));
        }
        if self
            .check_not_frozen(account, Scope::Withdrawals, at)
            .is_err()
        {
            most = 0;
        }
        (most, windows)
    }

    /// The state machine of design §6: `target` is reached from the states
    /// in `from`; being there already is a no-op that reports it, unless a
    /// completion reports another paid amount than the one that made it
    /// (judged as the first time, then compared); anything else is an
    /// invalid transition.
    fn update(
        &mut self,
        tx: Tx,
        target: Status,
        from: &[Status],
        host_outcome: bool,
        paid: Option<(i128, u32)>,
    ) -> Res {
        let w = self.withdrawals.get(&tx).ok_or("unknown_withdrawal")?;
        let partly = |w| match paid {
            Some((mantissa, scale)) => Self::partly_paid(w, mantissa, scale),
            None => Ok(None),
        };
        if w.status == target {
            if target == Status::Completed && partly(w)? != w.partly_paid {
                return Err("invalid_transition");
            }
            return Ok(self.view(tx));
        }
        if !from.contains(&w.status) {
            return Err("invalid_transition");
        }
        let partly = partly(w)?;
        self.move_to(tx, target, partly);
        if host_outcome {
            self.mark_host(tx);
        }
        Ok(self.view(tx))
    }

    /// A partial completion's paid amount in minor units: `None` when it is
    /// the whole amount; refused unless above 0, exact in the currency and
    /// at most the amount.
    fn partly_paid(w: &WRec, mantissa: i128, scale: u32) -> Result<Option<Units>, &'static str> {
        let decimals = w.cur.decimals();
        if mantissa <= 0 || scale > decimals {
            return Err("invalid_amount");
        }
        let units = mantissa * 10i128.pow(decimals - scale);
        match units {
            u if u == w.amount => Ok(None),
            u if u < w.amount => Ok(Some(u)),
            _ => Err("invalid_paid_amount"),
        }
    }

    pub fn mark_host(&mut self, tx: Tx) {
        if let Some(w) = self.withdrawals.get_mut(&tx) {
            w.settled_by_host = true;
        }
    }

    /// Moves a withdrawal and its money; the caller checked it may. A
    /// completion burns what was paid (`partly`, else the amount), releases
    /// the rest, and moves the fee to the fee account; a failure or cancel
    /// releases the amount and the fee; a return mints what was paid.
    fn move_to(&mut self, tx: Tx, to: Status, partly: Option<Units>) {
        let fee_account = self.rules.fee_account.unwrap_or(tx.0);
        let w = self.withdrawals.get_mut(&tx).expect("a known withdrawal");
        let from = w.status;
        w.status = to;
        if to == Status::Completed {
            w.partly_paid = partly;
        }
        let (cur, amount, fee, paid) = (w.cur, w.amount, w.fee, w.paid());
        match (from.holds_lock(), to) {
            (true, Status::Processing | Status::Pending) => {}
            (true, Status::Completed) => {
                let paid = paid.expect("a completed withdrawal paid");
                let bal = self.bal_mut(tx.0, cur);
                bal.locked -= amount;
                bal.available += amount - paid;
                *self.burned.entry(cur).or_default() += paid;
                if let Some((c, f)) = fee {
                    self.bal_mut(tx.0, c).locked -= f;
                    self.bal_mut(fee_account, c).available += f;
                }
            }
            (true, Status::Failed | Status::Cancelled) => self.unlock(tx.0, cur, amount, fee),
            (false, Status::Returned) => {
                let paid = paid.expect("a returned withdrawal paid");
                self.bal_mut(tx.0, cur).available += paid;
                *self.deposited.entry(cur).or_default() += paid;
            }
            (held, to) => panic!("model: no money rule for {from:?} (lock {held}) -> {to:?}"),
        }
    }

    /// Moves a withdrawal's amount and fee locked → available.
    fn unlock(&mut self, account: Acct, cur: Cur, units: Units, fee: Option<(Cur, Units)>) {
        let bal = self.bal_mut(account, cur);
        bal.locked -= units;
        bal.available += units;
        if let Some((c, f)) = fee {
            let bal = self.bal_mut(account, c);
            bal.locked -= f;
            bal.available += f;
        }
    }

    /// The pending withdrawals whose expiry passed at `now`.
    pub fn due(&self, now: u64) -> Vec<Tx> {
        self.withdrawals
            .iter()
            .filter(|(_, w)| w.status == Status::Pending && w.expires_at.is_some_and(|e| e <= now))
            .map(|(tx, _)| *tx)
            .collect()
    }

    /// The ledger's sweep at `now`: every pending withdrawal past its
    /// expiry fails with reason `expired`. Returns them.
    pub fn expire_due(&mut self, now: u64) -> Vec<Tx> {
        let due = self.due(now);
        for tx in &due {
            self.move_to(*tx, Status::Failed, None);
            if let Some(w) = self.withdrawals.get_mut(tx) {
                w.expired = true;
            }
        }
        due
    }

    /// Undoes the expiry of `tx` (a crash took it before it was durable):
    /// pending again, its amount and fee locked again.
    pub fn unexpire(&mut self, tx: Tx) -> Result<(), String> {
        let w = self
            .withdrawals
            .get_mut(&tx)
            .filter(|w| w.expired)
            .ok_or_else(|| format!("model: {tx:?} did not expire"))?;
        w.status = Status::Pending;
        w.expired = false;
        let (cur, amount, fee) = (w.cur, w.amount, w.fee);
        self.lock(tx.0, cur, amount, fee);
        Ok(())
    }

    /// What the payout may do to a withdrawal: claim a pending one, and
    /// settle a pending or processing one as completed (in full: the bank
    /// pays whole amounts) or failed.
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
        self.move_to(tx, to, None);
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
            fee: w.fee,
            paid: w.paid(),
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

    /// The model's own consistency (invariants 1–3 of design §9, a fee
    /// locked with its withdrawal), so a model bug is not mistaken for an
    /// engine bug.
    pub fn check(&self) -> Result<(), String> {
        let mut locked: BTreeMap<(Acct, Cur), Units> = BTreeMap::new();
        for ((account, _), w) in &self.withdrawals {
            if w.status.holds_lock() {
                *locked.entry((*account, w.cur)).or_default() += w.amount;
                if let Some((c, f)) = w.fee {
                    *locked.entry((*account, c)).or_default() += f;
                }
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

/// A withdrawal request that passed the checks of the request itself.
struct Asked {
    account: Acct,
    cur: Cur,
    units: Units,
    fee: Option<(Cur, Units)>,
    expires_in: Option<u64>,
}
