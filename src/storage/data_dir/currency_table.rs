//! The folder's currency table: the scale every stored amount was written in.
//!
//! The log and snapshots keep amounts as integer minor units, so `100` USD
//! means 1.00 at 2 decimals and 0.100 at 3. Opening a folder with a
//! configuration that changes a currency's decimals would make every stored
//! amount read as another one. `<data-dir>/CURRENCIES` records each
//! currency the folder has been opened with; against it, at open:
//!
//! - a currency whose decimals differ from the recorded ones is refused;
//! - a new currency is added to the table;
//! - a recorded currency left out of the configuration is *retired*: still
//!   in the table (so its history replays and a later re-add must keep its
//!   scale) and refused for new operations — but only if no account holds
//!   money in it (available or locked), which the open checks once the
//!   state is recovered.
//!
//! A folder written before the table existed gets one at its first open,
//! and its recovered balances are checked against the configuration the
//! same way (each balance carries the decimals it was written with).
//!
//! The file is text, one `CODE DECIMALS` line per currency under a
//! versioned header, written to a temporary file, fsynced and renamed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::domain::account::AccountState;
use crate::domain::money::{Currencies, Currency, CurrencyCode, CurrencyConfig, Units};

/// The table's file name inside the data folder.
pub const TABLE_FILE: &str = "CURRENCIES";

/// First line of the file; a future format changes the version.
const HEADER: &str = "# burnledger currency table v1: CODE DECIMALS";

/// Largest table file read: far above any real table, below a hostile one.
const TABLE_BYTES_MAX: u64 = 64 * 1024;

/// Why a configuration cannot open this folder, or its table cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyTableError {
    #[error("currency {code} was recorded in this data folder with {recorded} decimals, but the configuration says {configured}: every stored {code} amount would be misread. Configure {code}:{recorded}")]
    ScaleChanged {
        code: CurrencyCode,
        recorded: u8,
        configured: u8,
    },
    #[error("currency {code} is left out of the configuration, but accounts in this folder hold {held} {code} (available or locked): configure {code}:{decimals} again")]
    RetiredHoldsMoney {
        code: CurrencyCode,
        decimals: u8,
        held: rust_decimal::Decimal,
    },
    #[error("currency table {}: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("currency table {}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
}

/// How a configuration differs from the recorded table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableChange {
    Added(Currency),
    Retired(Currency),
}

/// Every currency the folder's money has been written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencyTable {
    currencies: BTreeMap<CurrencyCode, u8>,
}

impl CurrencyTable {
    /// The table in `dir`, or `None` if the folder has none yet.
    pub fn read(dir: &Path) -> Result<Option<Self>, CurrencyTableError> {
        let path = dir.join(TABLE_FILE);
        let damaged = |reason: String| CurrencyTableError::Damaged {
            path: path.clone(),
            reason,
        };
        let bytes = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, &e)),
            Ok(meta) if meta.len() > TABLE_BYTES_MAX => {
                return Err(damaged(format!("{} bytes is too large", meta.len())))
            }
            Ok(_) => std::fs::read(&path).map_err(|e| io_error(&path, &e))?,
        };
        let text = String::from_utf8(bytes).map_err(|_| damaged("not UTF-8 text".into()))?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(damaged(format!("the first line is not {HEADER:?}")));
        }
        let mut currencies = BTreeMap::new();
        for (index, line) in lines.enumerate() {
            let (code, decimals) = parse_line(line)
                .map_err(|reason| damaged(format!("line {}: {reason}", index + 2)))?;
            if currencies.insert(code, decimals).is_some() {
                return Err(damaged(format!("line {}: {code} appears twice", index + 2)));
            }
        }
        Ok(Some(Self { currencies }))
    }

    /// Reconciles the recorded table (if any) with the configuration:
    /// the table to record from now on, and what changed. A changed scale
    /// is refused.
    pub fn reconcile(
        recorded: Option<&Self>,
        configured: &Currencies,
    ) -> Result<(Self, Vec<TableChange>), CurrencyTableError> {
        let mut table = recorded.cloned().unwrap_or(Self {
            currencies: BTreeMap::new(),
        });
        let mut changes = Vec::new();
        for currency in configured.iter() {
            match table.currencies.get(&currency.code) {
                Some(&recorded) if recorded != currency.decimals => {
                    return Err(CurrencyTableError::ScaleChanged {
                        code: currency.code,
                        recorded,
                        configured: currency.decimals,
                    })
                }
                Some(_) => {}
                None => {
                    table.currencies.insert(currency.code, currency.decimals);
                    changes.push(TableChange::Added(currency));
                }
            }
        }
        changes.extend(table.retired(configured).map(TableChange::Retired));
        Ok((table, changes))
    }

    /// Recorded currencies the configuration leaves out.
    pub fn retired<'a>(
        &'a self,
        configured: &'a Currencies,
    ) -> impl Iterator<Item = Currency> + 'a {
        self.iter()
            .filter(move |c| configured.get_code(c.code).is_err())
    }

    /// The registry that reads this folder's history: the configuration's
    /// currencies (with their limits) plus the retired ones.
    pub fn history_registry(
        &self,
        configured: &[CurrencyConfig],
        registry: &Currencies,
    ) -> Result<Currencies, String> {
        let mut all = configured.to_vec();
        all.extend(
            self.retired(registry)
                .map(|c| CurrencyConfig::new(c.code.as_str(), c.decimals)),
        );
        Currencies::new(&all)
    }

    /// Every recorded currency, at its recorded scale (what a reader such
    /// as `verify` reads the folder with).
    pub fn registry(&self) -> Result<Currencies, String> {
        let all: Vec<_> = self
            .iter()
            .map(|c| CurrencyConfig::new(c.code.as_str(), c.decimals))
            .collect();
        Currencies::new(&all)
    }

    /// Checks recovered state against the table: every balance in a
    /// recorded currency at its recorded scale, and no money left in a
    /// retired one.
    pub fn check_state<'a>(
        &self,
        accounts: impl IntoIterator<Item = &'a AccountState>,
        configured: &Currencies,
    ) -> Result<(), CurrencyTableError> {
        let mut retired_held: BTreeMap<CurrencyCode, Units> = BTreeMap::new();
        for balance in accounts.into_iter().flat_map(AccountState::balances) {
            let code = balance.currency.code;
            let recorded = self.currencies.get(&code).copied();
            if recorded != Some(balance.currency.decimals) {
                return Err(CurrencyTableError::ScaleChanged {
                    code,
                    recorded: balance.currency.decimals,
                    configured: recorded.unwrap_or(balance.currency.decimals),
                });
            }
            if configured.get_code(code).is_err() {
                let held = retired_held.entry(code).or_default();
                *held = held
                    .saturating_add(balance.available)
                    .saturating_add(balance.locked);
            }
        }
        match retired_held.into_iter().find(|(_, held)| *held != 0) {
            Some((code, held)) => {
                let decimals = self.currencies.get(&code).copied().unwrap_or_default();
                Err(CurrencyTableError::RetiredHoldsMoney {
                    code,
                    decimals,
                    held: crate::domain::money::units_to_decimal(held, decimals),
                })
            }
            None => Ok(()),
        }
    }

    /// Writes the table atomically: temporary file, fsync, rename, fsync of
    /// the folder.
    pub fn write(&self, dir: &Path) -> Result<(), CurrencyTableError> {
        let path = dir.join(TABLE_FILE);
        let temp = dir.join(format!("{TABLE_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temp)?;
            writeln!(file, "{HEADER}")?;
            for currency in self.iter() {
                writeln!(file, "{} {}", currency.code, currency.decimals)?;
            }
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| io_error(&path, &e))
    }

    /// Says what an open recorded: the whole table when it is new, else
    /// each currency added (info) or retired (warning).
    pub fn log_changes(&self, dir: &Path, new_table: bool, changes: &[TableChange]) {
        let folder = dir.display();
        if new_table {
            let listed: Vec<String> = self
                .iter()
                .map(|c| format!("{}:{}", c.code, c.decimals))
                .collect();
            tracing::info!(%folder, currencies = %listed.join(","), "currency table recorded");
            return;
        }
        for change in changes {
            match change {
                TableChange::Added(c) => tracing::info!(
                    %folder, currency = %c.code, decimals = c.decimals,
                    "currency added to the folder's table"
                ),
                TableChange::Retired(c) => tracing::warn!(
                    %folder, currency = %c.code, decimals = c.decimals,
                    "currency recorded in the folder but not configured: retired (no money \
                     is held in it); new operations in it are refused"
                ),
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Currency> + '_ {
        self.currencies
            .iter()
            .map(|(&code, &decimals)| Currency { code, decimals })
    }
}

fn parse_line(line: &str) -> Result<(CurrencyCode, u8), String> {
    let (code, decimals) = line
        .split_once(' ')
        .ok_or_else(|| format!("{line:?} is not `CODE DECIMALS`"))?;
    let code = CurrencyCode::new(code).map_err(|e| e.to_string())?;
    let decimals = decimals
        .parse::<u8>()
        .ok()
        .filter(|&d| d <= crate::domain::money::CURRENCY_DECIMALS_MAX)
        .ok_or_else(|| format!("{decimals:?} is not a number of decimals"))?;
    Ok((code, decimals))
}

fn io_error(path: &Path, error: &std::io::Error) -> CurrencyTableError {
    CurrencyTableError::Io {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(list: &[(&str, u8)]) -> Currencies {
        let configs: Vec<_> = list
            .iter()
            .map(|(code, decimals)| CurrencyConfig::new(code, *decimals))
            .collect();
        Currencies::new(&configs).unwrap()
    }

    #[test]
    fn a_table_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CurrencyTable::read(dir.path()).unwrap(), None);
        let (table, changes) =
            CurrencyTable::reconcile(None, &registry(&[("USD", 2), ("BTC", 8)])).unwrap();
        assert_eq!(changes.len(), 2);
        table.write(dir.path()).unwrap();
        assert_eq!(CurrencyTable::read(dir.path()).unwrap(), Some(table));
        for bad in [
            "",
            "USD 2\n",
            &format!("{HEADER}\nUSD two\n"),
            &format!("{HEADER}\nUSD 2\nUSD 2\n"),
            &format!("{HEADER}\nusd 2\n"),
            &format!("{HEADER}\nUSD 99\n"),
        ] {
            std::fs::write(dir.path().join(TABLE_FILE), bad).unwrap();
            let error = CurrencyTable::read(dir.path()).unwrap_err();
            assert!(
                matches!(error, CurrencyTableError::Damaged { .. }),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn a_changed_scale_is_refused_a_new_currency_added_a_missing_one_retired() {
        let (recorded, _) =
            CurrencyTable::reconcile(None, &registry(&[("USD", 2), ("BTC", 8)])).unwrap();
        let error =
            CurrencyTable::reconcile(Some(&recorded), &registry(&[("USD", 3)])).unwrap_err();
        assert!(error.to_string().contains("USD was recorded in this data folder with 2 decimals, but the configuration says 3"), "{error}");
        let (table, changes) =
            CurrencyTable::reconcile(Some(&recorded), &registry(&[("USD", 2), ("EUR", 2)]))
                .unwrap();
        let code = |c: &str| CurrencyCode::new(c).unwrap();
        assert_eq!(
            changes,
            vec![
                TableChange::Added(Currency {
                    code: code("EUR"),
                    decimals: 2
                }),
                TableChange::Retired(Currency {
                    code: code("BTC"),
                    decimals: 8
                }),
            ]
        );
        assert_eq!(table.iter().count(), 3, "a retired currency stays recorded");
        // Re-adding the retired one must keep its scale.
        assert!(CurrencyTable::reconcile(Some(&table), &registry(&[("BTC", 2)])).is_err());
    }
}
