//! An account's controls: its tier (which withdrawal limits apply), an
//! operator's freeze, and what it withdrew recently (`usage.rs`), which the
//! limits count. Setting a freeze or a tier, and lifting a freeze, are
//! logged events like any change, so replay agrees; what a freeze stops
//! and what a limit allows are decided here for `rules.rs` and
//! `transfers.rs`.
//!
//! Kept in one box per account, made the first time any of it is set:
//! accounts that never withdrew and were never frozen or tiered pay one
//! pointer. Snapshots (format v7) keep the box beside the account, and the
//! withdrawals' extras beside them: both are put back here.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::event::Event;
use crate::domain::ids::AccountId;
use crate::domain::money::{Currency, CurrencyCode, Units};
use crate::domain::policy::{Freeze, FreezeScope, Policy, Tier, Window};
use crate::domain::time::UnixMs;
use crate::error::LedgerError;

use super::usage::Usage;
use super::{AccountState, Effect};
use crate::domain::withdrawal::{Extras, KeptExtras};

/// An account's tier, freeze and recent withdrawals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controls {
    /// `None`: [`Tier::DEFAULT`].
    pub tier: Option<Tier>,
    pub freeze: Option<Freeze>,
    pub usage: Usage,
}

/// An account's tier and freeze, as the API shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountControls {
    pub account: AccountId,
    pub tier: Tier,
    /// The freeze in force, if any (one whose `until` passed is not).
    pub freeze: Option<Freeze>,
}

/// One window of a withdrawal allowance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowAllowance {
    pub window: Window,
    pub limit: Decimal,
    pub used: Decimal,
    pub remaining: Decimal,
}

/// The most an account can withdraw of a currency now, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalAllowance {
    pub account: AccountId,
    pub currency: CurrencyCode,
    pub tier: Tier,
    /// The most one withdrawal may be for now: the available balance,
    /// capped by each window's remaining limit; zero while frozen.
    pub amount: Decimal,
    pub available: Decimal,
    /// Each window with a limit for this tier and currency.
    pub windows: Vec<WindowAllowance>,
    pub freeze: Option<Freeze>,
}

impl AccountState {
    /// The account's tier ([`Tier::DEFAULT`] unless set).
    pub fn tier(&self) -> Tier {
        self.controls
            .as_ref()
            .and_then(|c| c.tier)
            .unwrap_or(Tier::DEFAULT)
    }

    /// Its freeze, if one is set and in force at `at`.
    pub fn freeze_at(&self, at: UnixMs) -> Option<&Freeze> {
        self.controls
            .as_ref()
            .and_then(|c| c.freeze.as_ref())
            .filter(|f| f.in_force(at))
    }

    /// Its controls as stored (snapshots keep them beside the account).
    pub fn controls(&self) -> Option<&Controls> {
        self.controls.as_deref()
    }

    /// Puts back the controls a snapshot kept beside the account.
    pub fn restore_controls(&mut self, controls: Option<Controls>) {
        self.controls = controls.filter(|c| *c != Controls::default()).map(Box::new);
    }

    /// Gives the withdrawals, oldest first, the extras a snapshot keeps
    /// beside them (format v7), then recounts what each balance's
    /// withdrawals lock (their fees are locked too); refused unless there
    /// is exactly one entry per withdrawal.
    pub fn restore_withdrawal_extras(&mut self, extras: Vec<Option<Extras>>) -> Result<(), String> {
        if extras.len() != self.withdrawals.len() {
            return Err(format!(
                "account {} has {} withdrawals but {} extras",
                self.id,
                self.withdrawals.len(),
                extras.len()
            ));
        }
        for (record, extras) in self.withdrawals.records_mut().zip(extras) {
            record.extras = KeptExtras::from_extras(record.currency.code, extras);
        }
        self.recount_withdrawals_locked()
    }

    /// The tier and freeze as of `at`.
    pub fn controls_view(&self, at: UnixMs) -> AccountControls {
        AccountControls {
            account: self.id,
            tier: self.tier(),
            freeze: self.freeze_at(at).cloned(),
        }
    }

    /// An operator freezes the account (or replaces its freeze).
    pub fn set_freeze(
        &mut self,
        freeze: Freeze,
        at: UnixMs,
    ) -> Result<Effect<AccountControls>, LedgerError> {
        if freeze.until.is_some_and(|until| until <= at) {
            return Err(LedgerError::InvalidExpiry {
                problem: "a freeze's until must be in the future".into(),
            });
        }
        let event = Event::AccountFrozen {
            account: self.id,
            freeze,
        };
        self.apply_control(event, at)
    }

    /// An operator lifts the account's freeze; a no-op if none is in force.
    pub fn lift_freeze(&mut self, at: UnixMs) -> Result<Effect<AccountControls>, LedgerError> {
        if self.freeze_at(at).is_none() {
            return Ok(Effect {
                output: self.controls_view(at),
                event: None,
            });
        }
        self.apply_control(Event::AccountUnfrozen { account: self.id }, at)
    }

    /// An operator moves the account to `tier`; a no-op if it is there.
    pub fn set_tier(
        &mut self,
        tier: Tier,
        at: UnixMs,
    ) -> Result<Effect<AccountControls>, LedgerError> {
        if self.tier() == tier {
            return Ok(Effect {
                output: self.controls_view(at),
                event: None,
            });
        }
        let event = Event::AccountTierSet {
            account: self.id,
            tier,
        };
        self.apply_control(event, at)
    }

    fn apply_control(
        &mut self,
        event: Event,
        at: UnixMs,
    ) -> Result<Effect<AccountControls>, LedgerError> {
        self.apply_checked(&event, at)?;
        Ok(Effect {
            output: self.controls_view(at),
            event: Some(event),
        })
    }

    /// Applies a freeze, its lifting or a tier (from the log or live).
    pub(super) fn apply_control_event(&mut self, event: &Event) {
        let controls = self.controls.get_or_insert_with(Box::default);
        match event {
            Event::AccountFrozen { freeze, .. } => controls.freeze = Some(freeze.clone()),
            Event::AccountUnfrozen { .. } => controls.freeze = None,
            Event::AccountTierSet { tier, .. } => {
                controls.tier = (*tier != Tier::DEFAULT).then_some(*tier)
            }
            _ => {}
        }
        self.drop_empty_controls();
    }

    /// Refused with `account_frozen` if a freeze in force at `at` stops
    /// `what`.
    pub(super) fn check_not_frozen(
        &self,
        what: FreezeScope,
        at: UnixMs,
    ) -> Result<(), LedgerError> {
        match self.freeze_at(at) {
            Some(freeze) if freeze.stops(what, at) => Err(LedgerError::AccountFrozen {
                account: self.id,
                scope: freeze.scope,
                reason: freeze.reason.clone(),
                until: freeze.until,
            }),
            _ => Ok(()),
        }
    }

    /// Refused with `limit_exceeded` if withdrawing `amount` of `currency`
    /// at `at` takes the account past a limit of its tier.
    pub(super) fn check_limits(
        &self,
        policy: &Policy,
        currency: Currency,
        amount: Units,
        at: UnixMs,
    ) -> Result<(), LedgerError> {
        let tier = self.tier();
        let limits = policy.limits.of(tier, currency.code);
        for window in Window::ALL {
            let Some(limit) = limits.get(window) else {
                continue;
            };
            let used = self.used(currency.code, window, at);
            if used.checked_add(amount).is_none_or(|total| total > limit) {
                return Err(LedgerError::LimitExceeded {
                    currency: currency.code,
                    window,
                    tier: tier.to_string(),
                    limit: currency.to_decimal(limit),
                    used: currency.to_decimal(used),
                    requested: currency.to_decimal(amount),
                });
            }
        }
        Ok(())
    }

    /// The most this account can withdraw of `currency` at `at`.
    pub fn withdrawal_allowance(
        &self,
        policy: &Policy,
        currency: Currency,
        at: UnixMs,
    ) -> WithdrawalAllowance {
        let tier = self.tier();
        let available = self.balance(currency).available;
        let mut most = available;
        let limits = policy.limits.of(tier, currency.code);
        let windows = Window::ALL
            .into_iter()
            .filter_map(|window| {
                let limit = limits.get(window)?;
                let used = self.used(currency.code, window, at);
                let remaining = limit.saturating_sub(used).max(0);
                most = most.min(remaining);
                Some(WindowAllowance {
                    window,
                    limit: currency.to_decimal(limit),
                    used: currency.to_decimal(used),
                    remaining: currency.to_decimal(remaining),
                })
            })
            .collect();
        let freeze = self.freeze_at(at).cloned();
        if freeze
            .as_ref()
            .is_some_and(|f| f.stops(FreezeScope::Withdrawals, at))
        {
            most = 0;
        }
        WithdrawalAllowance {
            account: self.id,
            currency: currency.code,
            tier,
            amount: currency.to_decimal(most),
            available: currency.to_decimal(available),
            windows,
            freeze,
        }
    }

    fn used(&self, currency: CurrencyCode, window: Window, at: UnixMs) -> Units {
        self.controls
            .as_ref()
            .map_or(0, |c| c.usage.used(currency, window, at))
    }

    /// A withdrawal of `amount` was requested at `at`: it counts.
    pub(super) fn count_withdrawal(&mut self, currency: CurrencyCode, at: UnixMs, amount: Units) {
        let controls = self.controls.get_or_insert_with(Box::default);
        controls.usage.add(currency, at, amount);
    }

    /// `amount` of the withdrawal requested at `created_at` stops counting.
    pub(super) fn uncount_withdrawal(
        &mut self,
        currency: CurrencyCode,
        created_at: UnixMs,
        amount: Units,
    ) {
        if let Some(controls) = self.controls.as_mut() {
            controls.usage.remove(currency, created_at, amount);
        }
        self.drop_empty_controls();
    }

    fn drop_empty_controls(&mut self) {
        if self.controls.as_deref() == Some(&Controls::default()) {
            self.controls = None;
        }
    }
}
