//! `burnledger serve`'s flags for the withdrawal rules an exchange runs:
//! the fee account (`--fee-account`), the limits per tier
//! (`--withdrawal-limit TIER:CURRENCY:WINDOW=AMOUNT`, repeatable) and the
//! longest expiry a withdrawal may ask for (`--withdrawal-expiry-max`).
//! Each is checked before anything opens, against the currencies the
//! server runs with, so a bad value is a clear error at start.

use burnledger::config::WithdrawalLimit;
use burnledger::domain::money::Currencies;
use burnledger::http::details::parse_duration_text;
use burnledger::{AccountId, Config};
use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct WithdrawalArgs {
    /// The account completed withdrawals' fees are credited to. Without
    /// it, a withdrawal with a fee is refused (`fees_disabled`).
    #[arg(long, value_name = "ACCOUNT")]
    fee_account: Option<AccountId>,
    /// A rolling withdrawal limit: accounts of TIER withdraw at most
    /// AMOUNT of CURRENCY per WINDOW (24h or 30d), counting pending,
    /// processing and completed withdrawals; say default:USD:24h=10000.
    /// Repeat it for each tier, currency and window. Accounts are in tier
    /// `default` until `PUT /v1/accounts/{account}/tier` moves them.
    #[arg(long, value_name = "TIER:CURRENCY:WINDOW=AMOUNT")]
    withdrawal_limit: Vec<String>,
    /// The longest `expires_in` a withdrawal may carry: digits and a unit
    /// (ms, s, m, h, d), say 7d. Default: 30d.
    #[arg(long, value_name = "DURATION")]
    withdrawal_expiry_max: Option<String>,
}

impl WithdrawalArgs {
    /// `config` with these rules, each checked against its currencies.
    pub fn apply(&self, config: Config) -> Result<Config, String> {
        let withdrawal_limits = self
            .withdrawal_limit
            .iter()
            .map(|text| WithdrawalLimit::parse(text).map_err(|e| format!("--withdrawal-limit {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let withdrawal_expiry_max_ms = match &self.withdrawal_expiry_max {
            None => config.withdrawal_expiry_max_ms,
            Some(text) => expiry_max_ms(text)?,
        };
        let config = Config {
            fee_account: self.fee_account,
            withdrawal_limits,
            withdrawal_expiry_max_ms,
            ..config
        };
        let currencies = Currencies::new(&config.currencies)?;
        config
            .policy(&currencies)
            .map_err(|e| format!("--withdrawal-limit: {e}"))?;
        Ok(config)
    }
}

/// `--withdrawal-expiry-max` in milliseconds: more than zero.
fn expiry_max_ms(text: &str) -> Result<u64, String> {
    parse_duration_text(text)
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            format!(
                "--withdrawal-expiry-max {text:?}: expected digits and a unit (ms, s, m, h, d), \
                 more than zero, say 7d"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        withdrawals: WithdrawalArgs,
    }

    fn config(flags: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.withdrawals.apply(Config::default())
    }

    #[test]
    fn the_rules_come_from_the_flags() {
        let plain = config(&[]).unwrap();
        assert_eq!(plain.fee_account, None);
        assert!(plain.withdrawal_limits.is_empty());
        assert_eq!(
            plain.withdrawal_expiry_max_ms,
            Config::default().withdrawal_expiry_max_ms
        );
        let set = config(&[
            "--fee-account=9",
            "--withdrawal-limit=default:USD:24h=100",
            "--withdrawal-limit",
            "vip:BTC:30d=1.5",
            "--withdrawal-expiry-max=2h",
        ])
        .unwrap();
        assert_eq!(set.fee_account, Some(9));
        assert_eq!(
            set.withdrawal_limits,
            vec![
                WithdrawalLimit::parse("default:USD:24h=100").unwrap(),
                WithdrawalLimit::parse("vip:BTC:30d=1.5").unwrap(),
            ]
        );
        assert_eq!(set.withdrawal_expiry_max_ms, 2 * 3_600_000);
    }

    #[test]
    fn a_bad_value_is_refused_saying_which_flag() {
        for (flags, needle) in [
            (vec!["--fee-account=-1"], "fee-account"),
            (vec!["--fee-account=x"], "fee-account"),
            (
                vec!["--withdrawal-limit=default:USD=100"],
                "--withdrawal-limit",
            ),
            (
                vec!["--withdrawal-limit=default:USD:7d=100"],
                "--withdrawal-limit",
            ),
            (
                vec!["--withdrawal-limit=bad tier:USD:24h=1"],
                "--withdrawal-limit",
            ),
            (
                vec!["--withdrawal-limit=default:XYZ:24h=1"],
                "--withdrawal-limit",
            ),
            (
                vec!["--withdrawal-limit=default:USD:24h=1.001"],
                "--withdrawal-limit",
            ),
            (
                vec!["--withdrawal-limit=default:USD:24h=ten"],
                "--withdrawal-limit",
            ),
            (
                vec!["--withdrawal-limit=default:USD:24h=0"],
                "--withdrawal-limit",
            ),
            (
                vec!["--withdrawal-limit=default:USD:24h=-5"],
                "--withdrawal-limit",
            ),
            (
                vec!["--withdrawal-expiry-max=0s"],
                "--withdrawal-expiry-max",
            ),
            (vec!["--withdrawal-expiry-max=7"], "--withdrawal-expiry-max"),
            (
                vec!["--withdrawal-expiry-max=1w"],
                "--withdrawal-expiry-max",
            ),
        ] {
            let refused = config(&flags).unwrap_err();
            assert!(refused.contains(needle), "{flags:?}: {refused}");
        }
    }
}
