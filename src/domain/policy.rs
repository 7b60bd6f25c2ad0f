//! The rules an account's commands are judged by that come from the
//! ledger's configuration rather than from the account: the pending cap,
//! the fee account, the withdrawal limits per tier; and the names those
//! rules use: [`Tier`], [`Window`], [`FreezeScope`], [`Freeze`].
//!
//! Limits follow HollaEx: per tier and currency, a rolling 24-hour and a
//! rolling 30-day cap on what an account withdraws, counting its pending,
//! processing and completed withdrawals (a partly completed one by what was
//! paid) and not its failed or cancelled ones. The account keeps what it
//! used (`domain/account/usage.rs`); this only says how much is allowed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::ids::AccountId;
use crate::domain::money::{CurrencyCode, Units};
use crate::domain::time::UnixMs;
use crate::error::LedgerError;

/// Longest tier name, in bytes.
pub const TIER_LEN_MAX: usize = 32;

/// An account's tier: which limits apply to it. Accounts never given one
/// are in [`Tier::DEFAULT`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Tier([u8; TIER_LEN_MAX]);

impl Tier {
    /// The tier of an account nobody set one for: `default`.
    pub const DEFAULT: Tier = Tier(*b"default\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");

    /// A tier name: 1 to [`TIER_LEN_MAX`] bytes of ASCII letters, digits,
    /// `_`, `-` and `.` (so `1`, `vip`, `level-2`).
    pub fn new(name: &str) -> Result<Self, LedgerError> {
        let well_formed = !name.is_empty()
            && name.len() <= TIER_LEN_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !well_formed {
            return Err(LedgerError::InvalidTier {
                tier: crate::domain::money::truncate_for_message(name),
            });
        }
        let mut bytes = [0; TIER_LEN_MAX];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(TIER_LEN_MAX);
        // Made only from ASCII by `new` (decoding goes through `new`).
        std::str::from_utf8(&self.0[..len]).unwrap_or("")
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tier({})", self.as_str())
    }
}

impl From<Tier> for String {
    fn from(tier: Tier) -> String {
        tier.as_str().to_string()
    }
}

/// Decoding checks the name again.
impl TryFrom<String> for Tier {
    type Error = LedgerError;
    fn try_from(name: String) -> Result<Self, LedgerError> {
        Tier::new(&name)
    }
}

impl std::str::FromStr for Tier {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, LedgerError> {
        Tier::new(s)
    }
}

/// A rolling window a limit counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    /// The last 24 hours.
    Day,
    /// The last 30 days.
    Month,
}

impl Window {
    pub const ALL: [Window; 2] = [Window::Day, Window::Month];

    /// Its length in milliseconds.
    pub fn millis(self) -> u64 {
        match self {
            Self::Day => 24 * 3_600_000,
            Self::Month => 30 * 24 * 3_600_000,
        }
    }

    /// Its name in errors, configuration and JSON: `24h`, `30d`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "24h",
            Self::Month => "30d",
        }
    }

    pub fn parse(text: &str) -> Option<Window> {
        Self::ALL.into_iter().find(|w| w.as_str() == text)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one tier may withdraw of one currency per window (in minor units);
/// `None`: no cap over that window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowLimits {
    pub day: Option<Units>,
    pub month: Option<Units>,
}

impl WindowLimits {
    pub fn get(&self, window: Window) -> Option<Units> {
        match window {
            Window::Day => self.day,
            Window::Month => self.month,
        }
    }

    pub fn set(&mut self, window: Window, limit: Units) {
        match window {
            Window::Day => self.day = Some(limit),
            Window::Month => self.month = Some(limit),
        }
    }
}

/// The withdrawal limits of every tier, per currency. A tier or currency
/// with no entry has no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WithdrawalLimits {
    tiers: BTreeMap<(Tier, CurrencyCode), WindowLimits>,
}

impl WithdrawalLimits {
    /// Caps what tier `tier` withdraws of `currency` over `window`.
    pub fn set(&mut self, tier: Tier, currency: CurrencyCode, window: Window, limit: Units) {
        self.tiers
            .entry((tier, currency))
            .or_default()
            .set(window, limit);
    }

    /// The limits of `tier` in `currency` (none: no cap).
    pub fn of(&self, tier: Tier, currency: CurrencyCode) -> WindowLimits {
        self.tiers
            .get(&(tier, currency))
            .copied()
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// Every configured limit: tier, currency, window, cap.
    pub fn iter(&self) -> impl Iterator<Item = (Tier, CurrencyCode, Window, Units)> + '_ {
        self.tiers.iter().flat_map(|(&(tier, currency), limits)| {
            Window::ALL
                .into_iter()
                .filter_map(move |w| limits.get(w).map(|cap| (tier, currency, w, cap)))
        })
    }
}

/// What an account's freeze stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FreezeScope {
    /// New withdrawals and outgoing transfers.
    Withdrawals,
    /// Every new operation on the account: deposits, withdrawals, transfers
    /// out of it and into it.
    All,
}

impl FreezeScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Withdrawals => "withdrawals",
            Self::All => "all",
        }
    }

    pub fn parse(text: &str) -> Option<FreezeScope> {
        [Self::Withdrawals, Self::All]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// Longest freeze reason, in bytes.
pub const FREEZE_REASON_LEN_MAX: usize = 256;

/// An account's freeze, as set by an operator: what it stops, until when
/// (`None`: until lifted) and why. Withdrawals already made go on (a
/// payout settles them; a caller may still cancel one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub scope: FreezeScope,
    pub until: Option<UnixMs>,
    pub reason: String,
}

impl Freeze {
    /// Whether it still stops anything at `at`.
    pub fn in_force(&self, at: UnixMs) -> bool {
        self.until.is_none_or(|until| at < until)
    }

    /// Whether it stops `what` at `at`.
    pub fn stops(&self, what: FreezeScope, at: UnixMs) -> bool {
        self.in_force(at) && (self.scope == FreezeScope::All || what == self.scope)
    }
}

/// The configuration an account's rules read: built once from `Config` and
/// shared by every shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Most withdrawals an account may have holding a lock at once.
    pub pending_withdrawals_max: u32,
    /// Where completed withdrawals' fees go; `None`: fees are refused.
    pub fee_account: Option<AccountId>,
    pub limits: WithdrawalLimits,
}

impl Policy {
    /// No limits, no fee account.
    pub fn new(pending_withdrawals_max: u32) -> Self {
        Self {
            pending_withdrawals_max,
            fee_account: None,
            limits: WithdrawalLimits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_names_are_checked_and_default_reads_default() {
        assert_eq!(Tier::DEFAULT.as_str(), "default");
        assert_eq!(Tier::new("default"), Ok(Tier::DEFAULT));
        assert_eq!(
            Tier::new("vip-2").map(|t| t.to_string()),
            Ok("vip-2".into())
        );
        for bad in ["", "has space", "é", &"x".repeat(33)] {
            assert!(Tier::new(bad).is_err(), "{bad:?}");
        }
        assert!(Tier::new(&"x".repeat(32)).is_ok());
    }

    #[test]
    fn a_freeze_stops_its_scope_until_its_end() {
        let at = UnixMs::from_millis;
        let freeze = Freeze {
            scope: FreezeScope::Withdrawals,
            until: Some(at(100)),
            reason: "kyc".into(),
        };
        assert!(freeze.stops(FreezeScope::Withdrawals, at(99)));
        assert!(!freeze.stops(FreezeScope::Withdrawals, at(100)));
        assert!(!freeze.stops(FreezeScope::All, at(50)));
        let all = Freeze {
            scope: FreezeScope::All,
            until: None,
            reason: "fraud".into(),
        };
        assert!(all.stops(FreezeScope::Withdrawals, at(u64::MAX >> 20)));
        assert!(all.stops(FreezeScope::All, at(1)));
    }

    #[test]
    fn limits_are_per_tier_currency_and_window() {
        let usd = CurrencyCode::new("USD").unwrap();
        let vip = Tier::new("vip").unwrap();
        let mut limits = WithdrawalLimits::default();
        limits.set(Tier::DEFAULT, usd, Window::Day, 100);
        limits.set(vip, usd, Window::Month, 5_000);
        assert_eq!(limits.of(Tier::DEFAULT, usd).day, Some(100));
        assert_eq!(limits.of(Tier::DEFAULT, usd).month, None);
        assert_eq!(limits.of(vip, usd).day, None);
        assert_eq!(limits.iter().count(), 2);
    }
}
