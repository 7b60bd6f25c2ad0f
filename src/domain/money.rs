//! Currencies and amounts: `Decimal` at the edges, integer minor units inside.
//!
//! Every amount the engine stores or adds is an `i128` count of a currency's
//! minor units (cents for USD, satoshi for BTC). `rust_decimal::Decimal` is
//! only used to read amounts from callers and to show them back. Amounts
//! that arrive as text are read here too ([`parse_amount_text`]: exactly,
//! never rounded), and an amount's written scale must fit its currency.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{AmountProblem, LedgerError};

/// An amount in a currency's minor units.
pub type Units = i128;

/// Longest currency code accepted (ISO 4217 needs 3; tickers need a few more).
pub const CURRENCY_CODE_LEN_MAX: usize = 8;

/// Most decimal places a currency may have (ETH's wei needs 18).
pub const CURRENCY_DECIMALS_MAX: u8 = 18;

/// Hard ceiling on any single balance, in minor units.
///
/// Chosen below `Decimal`'s 96-bit mantissa (≈ 7.9e28) so every balance can be
/// shown exactly, and far below `i128::MAX` (≈ 1.7e38) so sums over billions of
/// balances cannot overflow.
pub const BALANCE_UNITS_MAX: Units = 10_000_000_000_000_000_000_000_000_000; // 1e28

/// A currency code: 1 to 8 characters of `A-Z` and `0-9`, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CurrencyCode([u8; CURRENCY_CODE_LEN_MAX]);

impl CurrencyCode {
    /// Parses a code; lower case is not accepted so `usd` and `USD` never
    /// become two currencies.
    pub fn new(code: &str) -> Result<Self, LedgerError> {
        let bytes = code.as_bytes();
        let well_formed = !bytes.is_empty()
            && bytes.len() <= CURRENCY_CODE_LEN_MAX
            && bytes
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !well_formed {
            return Err(LedgerError::UnknownCurrency {
                currency: truncate_for_message(code),
            });
        }
        let mut inline = [0u8; CURRENCY_CODE_LEN_MAX];
        inline[..bytes.len()].copy_from_slice(bytes);
        Ok(Self(inline))
    }

    /// The code as one number that orders as the codes do (their bytes,
    /// big-endian): a sort key compared in one instruction.
    pub fn order_key(self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        // Only ASCII bytes are ever stored (checked in `new`), so this cannot fail.
        std::str::from_utf8(&self.0[..len]).unwrap_or("?")
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

impl FromStr for CurrencyCode {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A currency the ledger was configured with: its code and decimal places.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Currency {
    pub code: CurrencyCode,
    pub decimals: u8,
}

impl Currency {
    /// Shows `units` of this currency as a decimal with exactly `decimals` places.
    pub fn to_decimal(&self, units: Units) -> Decimal {
        units_to_decimal(units, self.decimals)
    }
}

/// Shows minor units as a `Decimal` with `decimals` places.
///
/// Balances and amounts never exceed [`BALANCE_UNITS_MAX`], which fits the
/// mantissa; a value that does not (only a sum could) is clamped and that
/// can be seen, never silently wrapped.
pub fn units_to_decimal(units: Units, decimals: u8) -> Decimal {
    Decimal::try_from_i128_with_scale(units, u32::from(decimals)).unwrap_or(if units < 0 {
        Decimal::MIN
    } else {
        Decimal::MAX
    })
}

/// One configured currency with its per-operation limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrencyConfig {
    pub code: String,
    pub decimals: u8,
    /// Largest amount one operation may move, in whole units of the currency.
    pub amount_max: Decimal,
}

impl CurrencyConfig {
    /// A currency with the default per-operation limit: [`AMOUNT_MAX_DEFAULT`],
    /// or less where that many whole units would pass the balance ceiling
    /// (currencies with 17 or 18 decimals).
    pub fn new(code: &str, decimals: u8) -> Self {
        let ceiling_whole_units = 10i128
            .checked_pow(u32::from(decimals))
            .map(|scale| BALANCE_UNITS_MAX / scale)
            .map(Decimal::from)
            .unwrap_or(Decimal::ONE);
        Self {
            code: code.to_string(),
            decimals,
            amount_max: AMOUNT_MAX_DEFAULT.min(ceiling_whole_units),
        }
    }
}

/// Default largest single amount: one trillion whole units.
pub const AMOUNT_MAX_DEFAULT: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0); // 1e12

/// The registry of currencies, fixed when the ledger opens.
#[derive(Clone, Debug)]
pub struct Currencies {
    entries: Vec<(Currency, Units)>,
}

impl Currencies {
    /// Builds the registry; rejects duplicate or malformed codes and
    /// decimals above [`CURRENCY_DECIMALS_MAX`].
    pub fn new(configs: &[CurrencyConfig]) -> Result<Self, String> {
        let mut entries: Vec<(Currency, Units)> = Vec::with_capacity(configs.len());
        for config in configs {
            let code = CurrencyCode::new(&config.code).map_err(|e| e.to_string())?;
            if config.decimals > CURRENCY_DECIMALS_MAX {
                return Err(format!(
                    "currency {code}: {} decimals is more than the {CURRENCY_DECIMALS_MAX} supported",
                    config.decimals
                ));
            }
            if entries.iter().any(|(c, _)| c.code == code) {
                return Err(format!("currency {code} is configured twice"));
            }
            let currency = Currency {
                code,
                decimals: config.decimals,
            };
            let amount_max_units = decimal_to_units(config.amount_max, currency)
                .ok()
                .filter(|&u| u > 0 && u <= BALANCE_UNITS_MAX)
                .ok_or_else(|| {
                    format!(
                        "currency {code}: amount_max {} must be positive, have at most {} decimals and stay below {}",
                        config.amount_max,
                        config.decimals,
                        currency.to_decimal(BALANCE_UNITS_MAX)
                    )
                })?;
            entries.push((currency, amount_max_units));
        }
        Ok(Self { entries })
    }

    /// The configured currency with this code.
    pub fn get(&self, code: &str) -> Result<Currency, LedgerError> {
        let parsed = CurrencyCode::new(code)?;
        self.get_code(parsed)
    }

    pub fn get_code(&self, code: CurrencyCode) -> Result<Currency, LedgerError> {
        self.entries
            .iter()
            .find(|(c, _)| c.code == code)
            .map(|(c, _)| *c)
            .ok_or_else(|| LedgerError::UnknownCurrency {
                currency: code.to_string(),
            })
    }

    pub fn iter(&self) -> impl Iterator<Item = Currency> + '_ {
        self.entries.iter().map(|(c, _)| *c)
    }

    /// Reads a caller's amount: > 0, no more decimals than the currency,
    /// at most the currency's per-operation limit.
    pub fn parse_amount(&self, currency: Currency, amount: Decimal) -> Result<Units, LedgerError> {
        let max_units = self
            .entries
            .iter()
            .find(|(c, _)| c.code == currency.code)
            .map(|(_, max)| *max)
            .ok_or_else(|| LedgerError::UnknownCurrency {
                currency: currency.code.to_string(),
            })?;
        let invalid = |problem| LedgerError::InvalidAmount {
            amount,
            currency: currency.code,
            problem,
        };
        if amount <= Decimal::ZERO {
            return Err(invalid(AmountProblem::NotPositive));
        }
        let units = decimal_to_units(amount, currency).map_err(invalid)?;
        if units > max_units {
            return Err(invalid(AmountProblem::AboveMaximum {
                maximum: currency.to_decimal(max_units),
            }));
        }
        Ok(units)
    }
}

/// Exact conversion to minor units. The amount's own scale counts, not its
/// normalized value: `12.500` is refused for USD. A caller who writes three
/// decimals for a two-decimal currency has its scale wrong (the mistake a
/// changed currency table would make), and guessing what was meant is how
/// money gets misread.
pub(crate) fn decimal_to_units(
    amount: Decimal,
    currency: Currency,
) -> Result<Units, AmountProblem> {
    let scale = amount.scale();
    let decimals = u32::from(currency.decimals);
    if scale > decimals {
        return Err(AmountProblem::TooManyDecimals {
            decimals: currency.decimals,
        });
    }
    10i128
        .checked_pow(decimals - scale)
        .and_then(|factor| amount.mantissa().checked_mul(factor))
        .ok_or(AmountProblem::AboveMaximum {
            maximum: currency.to_decimal(BALANCE_UNITS_MAX),
        })
}

/// Longest amount text [`parse_amount_text`] reads, in bytes: far more than
/// any amount the ledger can hold, short enough to keep messages bounded.
pub const AMOUNT_TEXT_LEN_MAX: usize = 64;

/// Why an amount's text is not a decimal the ledger can read exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountTextError {
    #[error("amount {shown:?} is not a decimal such as \"12.50\" (digits, at most one '.', an optional leading '-'; no exponent, '+', spaces or separators)")]
    Malformed { shown: String },
    #[error("amount {shown:?} is longer than {AMOUNT_TEXT_LEN_MAX} bytes")]
    TooLong { shown: String },
    #[error("amount {shown:?} has more digits than a decimal holds exactly; it is refused, never rounded")]
    NotExact { shown: String },
}

/// Reads an amount written as text — the one parser the HTTP service, the
/// CLI and embedders that take strings share. The text is judged as
/// written: its syntax, then that it converts to a `Decimal` *exactly*.
/// `Decimal::from_str` would round `1.999…9` (30 nines) to `2` and
/// `0.000…01` (62 places) to `0`, so that a too-precise amount passed the
/// currency's check as a different one; here it is an error, and the
/// currency's check ([`Currencies::parse_amount`]) sees every digit the
/// caller wrote, trailing zeros included. Whether the amount is positive
/// and fits the currency is that check's to judge.
pub fn parse_amount_text(text: &str) -> Result<Decimal, AmountTextError> {
    let shown = || truncate_for_message(text);
    if text.len() > AMOUNT_TEXT_LEN_MAX {
        return Err(AmountTextError::TooLong { shown: shown() });
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !fraction.is_none_or(all_digits) {
        return Err(AmountTextError::Malformed { shown: shown() });
    }
    let exact =
        Decimal::from_str_exact(text).map_err(|_| AmountTextError::NotExact { shown: shown() })?;
    // Belt and braces: the scale must be the number of places written, or
    // some digit was dropped on the way.
    let places = fraction.map_or(0, str::len);
    if exact.scale() as usize != places {
        return Err(AmountTextError::NotExact { shown: shown() });
    }
    Ok(exact)
}

/// Keeps error messages bounded when a caller sends a huge bogus string.
pub(crate) fn truncate_for_message(s: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 32;
    if s.chars().count() <= SHOWN_CHARS_MAX {
        s.to_string()
    } else {
        let mut shown: String = s.chars().take(SHOWN_CHARS_MAX).collect();
        shown.push('…');
        shown
    }
}

/// USD with 2 decimals, for the crate's unit tests.
#[cfg(test)]
pub(crate) fn usd() -> Currency {
    Currency {
        code: CurrencyCode::new("USD").expect("a valid code"),
        decimals: 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::prelude::FromStr;

    #[test]
    fn a_codes_order_key_orders_as_the_code_does() {
        let codes = [
            "A", "AA", "AB", "B", "USD", "USDC", "USDT", "Z9", "ZZZZZZZZ", "0", "9Z",
        ];
        for a in codes {
            for b in codes {
                let (a, b) = (CurrencyCode::new(a).unwrap(), CurrencyCode::new(b).unwrap());
                assert_eq!(a.order_key().cmp(&b.order_key()), a.cmp(&b), "{a:?} {b:?}");
            }
        }
    }

    fn registry() -> Currencies {
        Currencies::new(&[CurrencyConfig::new("USD", 2), CurrencyConfig::new("BTC", 8)]).unwrap()
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn amounts_convert_exactly_to_minor_units() {
        let r = registry();
        let usd = r.get("USD").unwrap();
        let btc = r.get("BTC").unwrap();
        assert_eq!(r.parse_amount(usd, dec("12.5")).unwrap(), 1250);
        assert_eq!(r.parse_amount(usd, dec("12.50")).unwrap(), 1250);
        assert_eq!(r.parse_amount(btc, dec("0.00000001")).unwrap(), 1);
        assert_eq!(usd.to_decimal(1250).to_string(), "12.50");
    }

    #[test]
    fn bad_amounts_are_rejected_with_the_reason() {
        let r = registry();
        let usd = r.get("USD").unwrap();
        let problem = |a: &str| match r.parse_amount(usd, dec(a)) {
            Err(LedgerError::InvalidAmount { problem, .. }) => problem,
            other => panic!("expected invalid amount for {a}, got {other:?}"),
        };
        assert_eq!(problem("0"), AmountProblem::NotPositive);
        assert_eq!(problem("-1"), AmountProblem::NotPositive);
        assert_eq!(
            problem("0.001"),
            AmountProblem::TooManyDecimals { decimals: 2 }
        );
        // Trailing zeros are digits the caller wrote: a scale of 3 for a
        // 2-decimal currency is a caller who has the currency wrong.
        assert_eq!(
            problem("12.500"),
            AmountProblem::TooManyDecimals { decimals: 2 }
        );
        assert!(matches!(
            problem("1000000000000.01"),
            AmountProblem::AboveMaximum { .. }
        ));
    }

    /// The review's cases: text that `Decimal::from_str` rounds into an
    /// amount the currency accepts (or calls zero) must be refused whole.
    #[test]
    fn amount_text_is_judged_as_written_never_rounded() {
        let r = registry();
        let usd = r.get("USD").unwrap();
        let judged = |text: &str| -> Result<Units, String> {
            let amount = parse_amount_text(text).map_err(|e| e.to_string())?;
            r.parse_amount(usd, amount).map_err(|e| e.to_string())
        };
        assert_eq!(judged("12.50"), Ok(1250));
        assert_eq!(judged("7"), Ok(700));
        assert_eq!(judged("0.01"), Ok(1));
        for over_precise in [
            "1.999999999999999999999999999999".to_string(),
            format!("0.0{}", "9".repeat(40)),
            format!("0.{}1", "0".repeat(61)),
            "1.999".to_string(),
            "12.500".to_string(),
        ] {
            let error = judged(&over_precise).expect_err(&over_precise);
            assert!(
                error.contains("never rounded") || error.contains("decimal places"),
                "{over_precise}: {error}"
            );
            assert!(
                !error.contains("greater than zero"),
                "{over_precise}: {error}"
            );
        }
        for malformed in [
            "", "-", ".", "1.", ".5", "1e3", "+1", " 1", "1 ", "1_000", "1,5", "0x10", "1.2.3", "١",
        ] {
            assert!(
                matches!(
                    parse_amount_text(malformed),
                    Err(AmountTextError::Malformed { .. })
                ),
                "{malformed:?}"
            );
        }
        assert!(matches!(
            parse_amount_text(&"1".repeat(AMOUNT_TEXT_LEN_MAX + 1)),
            Err(AmountTextError::TooLong { .. })
        ));
        // 30 digits do not fit a Decimal's 96-bit mantissa: refused.
        assert!(matches!(
            parse_amount_text(&"9".repeat(30)),
            Err(AmountTextError::NotExact { .. })
        ));
        assert_eq!(parse_amount_text("-1.5"), Ok(Decimal::new(-15, 1)));
    }

    #[test]
    fn default_amount_max_is_one_trillion_or_the_ceiling() {
        assert_eq!(AMOUNT_MAX_DEFAULT, dec("1000000000000"));
        assert_eq!(CurrencyConfig::new("USD", 2).amount_max, AMOUNT_MAX_DEFAULT);
        // 18 decimals: 1e28 minor units is 1e10 whole units.
        let eth = CurrencyConfig::new("ETH", 18);
        assert_eq!(eth.amount_max, dec("10000000000"));
        assert!(Currencies::new(&[eth, CurrencyConfig::new("XRP", 17)]).is_ok());
    }

    #[test]
    fn currency_codes_are_validated() {
        assert!(CurrencyCode::new("USDT").is_ok());
        assert!(CurrencyCode::new("usd").is_err());
        assert!(CurrencyCode::new("").is_err());
        assert!(CurrencyCode::new("TOOLONGCODE").is_err());
        assert!(registry().get("EUR").is_err());
        assert!(
            Currencies::new(&[CurrencyConfig::new("USD", 2), CurrencyConfig::new("USD", 2)])
                .is_err()
        );
        assert!(Currencies::new(&[CurrencyConfig::new("X", 19)]).is_err());
    }
}
