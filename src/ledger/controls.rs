//! The `Ledger` calls on an account's controls: an operator's freeze and
//! its lifting, the account's tier, and the withdrawal allowance its tier's
//! limits leave it now. Freezes and tiers are logged operations, so replay
//! agrees; reads are answered as of the ledger's clock.

use std::sync::Arc;

use crate::domain::account::{AccountControls, AccountState, WithdrawalAllowance};
use crate::domain::ids::AccountId;
use crate::domain::money::{Currency, CurrencyCode};
use crate::domain::policy::{Freeze, FreezeScope, Policy, Tier, FREEZE_REASON_LEN_MAX};
use crate::domain::time::UnixMs;
use crate::engine::command::ControlCommand;
use crate::engine::messages::AccountRead;
use crate::error::LedgerError;
use crate::operation::check_reason_max;

use super::Ledger;

impl Ledger {
    /// Freezes `account` for `scope` until `until` (`None`: until lifted),
    /// for `reason` (said, not blank: every refusal the freeze causes
    /// shows it): what the scope covers is refused `account_frozen` from
    /// then on. Replaces any freeze already set.
    #[tracing::instrument(level = "debug", name = "ledger.freeze_account", skip_all, fields(account = account))]
    pub async fn freeze_account(
        &self,
        account: AccountId,
        scope: FreezeScope,
        until: Option<UnixMs>,
        reason: &str,
    ) -> Result<AccountControls, LedgerError> {
        self.check_open()?;
        check_reason_max("reason", reason, FREEZE_REASON_LEN_MAX)?;
        if reason.trim().is_empty() {
            return Err(LedgerError::ReasonMissing { field: "reason" });
        }
        let freeze = Freeze {
            scope,
            until,
            reason: reason.to_string(),
        };
        let command = ControlCommand::Freeze(freeze);
        self.router().execute_one(account, command).await
    }

    /// Lifts `account`'s freeze (nothing happens if none is in force).
    #[tracing::instrument(level = "debug", name = "ledger.unfreeze_account", skip_all, fields(account = account))]
    pub async fn unfreeze_account(
        &self,
        account: AccountId,
    ) -> Result<AccountControls, LedgerError> {
        self.check_open()?;
        let command = ControlCommand::Unfreeze;
        let answer = self.router().execute_one(account, command).await;
        self.controls_of_unknown(account, answer)
    }

    /// Moves `account` to `tier`: that tier's withdrawal limits apply to it.
    #[tracing::instrument(level = "debug", name = "ledger.set_account_tier", skip_all, fields(account = account))]
    pub async fn set_account_tier(
        &self,
        account: AccountId,
        tier: &str,
    ) -> Result<AccountControls, LedgerError> {
        self.check_open()?;
        let command = ControlCommand::SetTier(Tier::new(tier)?);
        self.router().execute_one(account, command).await
    }

    /// `account`'s tier and the freeze in force, if any.
    pub async fn account_controls(
        &self,
        account: AccountId,
    ) -> Result<AccountControls, LedgerError> {
        self.check_not_closed()?;
        let at = self.now();
        self.router().ask(account, ControlsOf(at)).await
    }

    /// The most `account` can withdraw of `currency` now: its available
    /// balance, capped by what each of its tier's windows has left; zero
    /// while a freeze stops withdrawals.
    pub async fn withdrawal_allowance(
        &self,
        account: AccountId,
        currency: &str,
    ) -> Result<WithdrawalAllowance, LedgerError> {
        self.check_not_closed()?;
        let currency = self.currencies().get_code(CurrencyCode::new(currency)?)?;
        let policy = self
            .config()
            .policy(self.currencies())
            .map_err(|reason| LedgerError::Internal { reason })?;
        let read = AllowanceOf {
            currency,
            policy: Arc::new(policy),
            at: self.now(),
        };
        self.router().ask(account, read).await
    }

    /// The ledger's clock now, as the engine stamps with it.
    fn now(&self) -> UnixMs {
        UnixMs::from_millis(self.config().clock.unix_ms())
    }

    /// Lifting the freeze of an account that does not exist changes
    /// nothing: its controls are the defaults.
    fn controls_of_unknown(
        &self,
        account: AccountId,
        answer: Result<AccountControls, LedgerError>,
    ) -> Result<AccountControls, LedgerError> {
        answer.or_else(|error| match error {
            LedgerError::UnknownWithdrawal { .. } => {
                Ok(AccountState::new(account).controls_view(self.now()))
            }
            other => Err(other),
        })
    }
}

/// An account's tier and freeze as of a time.
struct ControlsOf(UnixMs);

impl AccountRead for ControlsOf {
    type Output = AccountControls;
    fn read(&self, state: &AccountState) -> Result<AccountControls, LedgerError> {
        Ok(state.controls_view(self.0))
    }
}

/// An account's withdrawal allowance in one currency as of a time.
struct AllowanceOf {
    currency: Currency,
    policy: Arc<Policy>,
    at: UnixMs,
}

impl AccountRead for AllowanceOf {
    type Output = WithdrawalAllowance;
    fn read(&self, state: &AccountState) -> Result<WithdrawalAllowance, LedgerError> {
        Ok(state.withdrawal_allowance(&self.policy, self.currency, self.at))
    }
}
