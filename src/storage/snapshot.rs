//! Snapshot files: every account's state, and every payout record, as of
//! one log position (LSN).
//!
//! ```text
//! header   "BURNSNAP" | format version u32 LE | lsn u64 LE
//!            v6 and later: | head: 0 (unknown) or 1 then the 32-byte
//!            SHA-256 of the log's record at lsn (the chain's head there)
//! body     account count u64 LE, then each AccountState (bincode 2, serde)
//!            v4 and later: each followed by its withdrawals' times, a
//!            sequence of (created_at, updated_at), oldest first
//!            v5 and later: then its idempotency keys' first-use times, a
//!            sequence in the order of the keys' transaction ids, then
//!            its expired keys' fingerprints, a sorted sequence of u64
//!            v7 and later: then its controls (tier, freeze, limit usage;
//!            an Option), then its withdrawals' extras (fee, destination,
//!            metadata, expiry, partly paid amount), a sequence of
//!            Options, oldest first
//!          v2 and later: payout count u64 LE, then each PayoutRecord
//!            v4 and later: each followed by (submitted_at, settled_at)
//!          v3 and later: mismatch count u64 LE, then each
//!          (payout id u64, PayoutMismatch) (bincode 2, serde)
//! trailer  crc32 (IEEE) u32 LE of header + body | "SNAPEND!"
//! ```
//! Times are milliseconds since the epoch (bincode varints), 0 for
//! unknown. Versions 1 (accounts only), 2 (no mismatches), 3 (no times:
//! every time reads as unknown), 4 (no key times, no expired keys), 5
//! (no head: it reads as unknown) and 6 (no controls, no extras) are still
//! read; version 7 is written. Keys read from a version before 5
//! count as first used at the snapshot's time, the newest time it holds (a
//! withdrawal's or a payout's last change; the snapshot was taken after
//! it): the same on every load, so recovery and the checkpointer's copy
//! agree. A key is never dated later than its real first use, so it may
//! expire early by up to the time between the snapshot's last change and
//! its keys' real use — its replay is then refused, never applied twice.
//! With no time in the snapshot (version 3 and older), the keys stay
//! undated and never expire.
//!
//! Accounts read from a version before 7 have no tier nor freeze (none
//! could be set before), and their withdrawal-limit usage is rebuilt from
//! the withdrawals the snapshot holds that count (all but failed and
//! cancelled ones) created within 30 days of the snapshot's newest time
//! ([`usage_before_v7`]). What that forgets: withdrawals the engine already
//! forgot (finished ones the history store holds) and, with no time in the
//! snapshot (version 3 and older), every withdrawal; the limits then count
//! less than was withdrawn until those requests age out of the 30 days.
//!
//! A snapshot is written to `snapshot-<lsn>.tmp`, fsynced, renamed to
//! `snapshot-<lsn>.snap`, then the folder is fsynced, so a crash leaves
//! either the old set of snapshots or the new one, never half a file under a
//! final name. A snapshot whose trailer, checksum or body does not check out
//! is reported as damaged, and recovery falls back to an older one.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::domain::account::{AccountState, Controls, Usage};
use crate::domain::payouts::{all_mismatches, PayoutMismatch, PayoutRecord};
use crate::domain::policy::Window;
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{Extras, StatusKind};

/// Version of the snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 7;
/// The first version with controls beside accounts and extras beside
/// withdrawals.
const CONTROLS_SINCE_VERSION: u32 = 7;
/// The first version with the log's hash-chain head in the header.
const HEAD_SINCE_VERSION: u32 = 6;
/// The head's bytes in the header: a presence byte and the hash.
const HEAD_BYTES: usize = 1 + 32;
/// The first version with times beside withdrawals and payouts.
const TIMES_SINCE_VERSION: u32 = 4;
/// The first version with key times and expired keys beside accounts.
const KEYS_SINCE_VERSION: u32 = 5;
/// Oldest snapshot format version this build still reads.
pub const SNAPSHOT_FORMAT_VERSION_MIN: u32 = 1;
const HEADER_MAGIC: &[u8; 8] = b"BURNSNAP";
const TRAILER_MAGIC: &[u8; 8] = b"SNAPEND!";
const HEADER_BYTES: usize = 8 + 4 + 8;
const TRAILER_BYTES: usize = 4 + 8;
const EXTENSION: &str = "snap";

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot I/O on {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("snapshot {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

/// A snapshot file found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub lsn: u64,
    pub bytes: u64,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |e| SnapshotError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn file_name(lsn: u64, extension: &str) -> String {
    format!("snapshot-{lsn:020}.{extension}")
}

/// Snapshots in `dir`, newest (highest LSN) first. Leftover temp files
/// from an interrupted write are ignored.
pub fn list(dir: &Path) -> Result<Vec<SnapshotFile>, SnapshotError> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(io_error(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let lsn = name
            .strip_prefix("snapshot-")
            .and_then(|rest| rest.strip_suffix(&format!(".{EXTENSION}")))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(lsn) = lsn {
            let bytes = entry.metadata().map_err(io_error(&path))?.len();
            found.push(SnapshotFile { path, lsn, bytes });
        }
    }
    found.sort_by_key(|s| std::cmp::Reverse(s.lsn));
    Ok(found)
}

/// Everything a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotContents {
    pub lsn: u64,
    pub accounts: Vec<AccountState>,
    /// Empty in a version 1 snapshot.
    pub payouts: Vec<PayoutRecord>,
    /// The hash of the log's record at `lsn` (the hash chain's head there);
    /// `None` when unknown (before version 6, or not known when written).
    pub head: Option<[u8; 32]>,
}

/// Writes every account's state as of `lsn` into `dir`, atomically (no
/// payout records).
pub fn write<'a>(
    dir: &Path,
    lsn: u64,
    accounts: impl ExactSizeIterator<Item = &'a AccountState>,
) -> Result<SnapshotFile, SnapshotError> {
    write_full(dir, lsn, accounts, std::iter::empty())
}

/// Writes every account's state and every payout record as of `lsn` into
/// `dir`, atomically, with no head.
pub fn write_full<'a, 'p>(
    dir: &Path,
    lsn: u64,
    accounts: impl ExactSizeIterator<Item = &'a AccountState>,
    payouts: impl ExactSizeIterator<Item = &'p PayoutRecord>,
) -> Result<SnapshotFile, SnapshotError> {
    write_chained(dir, lsn, None, accounts, payouts)
}

/// [`write_full`], storing `head`, the hash of the log's record at `lsn`.
pub fn write_chained<'a, 'p>(
    dir: &Path,
    lsn: u64,
    head: Option<[u8; 32]>,
    accounts: impl ExactSizeIterator<Item = &'a AccountState>,
    payouts: impl ExactSizeIterator<Item = &'p PayoutRecord>,
) -> Result<SnapshotFile, SnapshotError> {
    write_as(SNAPSHOT_FORMAT_VERSION, dir, lsn, head, accounts, payouts)
}

/// [`write_chained`] in format `version` (6 or 7): what a build writing
/// `version` wrote. Only tests write anything but the current version.
fn write_as<'a, 'p>(
    version: u32,
    dir: &Path,
    lsn: u64,
    head: Option<[u8; 32]>,
    accounts: impl ExactSizeIterator<Item = &'a AccountState>,
    payouts: impl ExactSizeIterator<Item = &'p PayoutRecord>,
) -> Result<SnapshotFile, SnapshotError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let temp = dir.join(file_name(lsn, "tmp"));
    let path = dir.join(file_name(lsn, EXTENSION));
    let file = File::create(&temp).map_err(io_error(&temp))?;
    let mut out = ChecksummedWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    let encode_error = |e: bincode::error::EncodeError| SnapshotError::Io {
        path: temp.clone(),
        reason: e.to_string(),
    };
    out.write_all(HEADER_MAGIC).map_err(io_error(&temp))?;
    out.write_all(&version.to_le_bytes())
        .map_err(io_error(&temp))?;
    out.write_all(&lsn.to_le_bytes()).map_err(io_error(&temp))?;
    let mut head_bytes = [0u8; HEAD_BYTES];
    if let Some(head) = head {
        head_bytes[0] = 1;
        head_bytes[1..].copy_from_slice(&head);
    }
    out.write_all(&head_bytes).map_err(io_error(&temp))?;
    out.write_all(&(accounts.len() as u64).to_le_bytes())
        .map_err(io_error(&temp))?;
    for account in accounts {
        debug_assert!(account.check_invariants().is_ok());
        bincode::serde::encode_into_std_write(account, &mut out, bincode::config::standard())
            .map_err(encode_error)?;
        let times = WithdrawalTimes(account);
        bincode::serde::encode_into_std_write(times, &mut out, bincode::config::standard())
            .map_err(encode_error)?;
        let keys = (account.key_times(), account.expired_key_fingerprints());
        bincode::serde::encode_into_std_write(keys, &mut out, bincode::config::standard())
            .map_err(encode_error)?;
        if version >= CONTROLS_SINCE_VERSION {
            let controls = (account.controls(), WithdrawalExtras(account));
            bincode::serde::encode_into_std_write(controls, &mut out, bincode::config::standard())
                .map_err(encode_error)?;
        }
    }
    out.write_all(&(payouts.len() as u64).to_le_bytes())
        .map_err(io_error(&temp))?;
    let mut with_mismatches = Vec::new();
    for payout in payouts {
        bincode::serde::encode_into_std_write(payout, &mut out, bincode::config::standard())
            .map_err(encode_error)?;
        let times = (payout.submitted_at, payout.settled_at);
        bincode::serde::encode_into_std_write(times, &mut out, bincode::config::standard())
            .map_err(encode_error)?;
        if !payout.mismatches.is_empty() {
            with_mismatches.push(payout);
        }
    }
    let mismatches: Vec<_> = all_mismatches(with_mismatches).collect();
    out.write_all(&(mismatches.len() as u64).to_le_bytes())
        .map_err(io_error(&temp))?;
    for mismatch in mismatches {
        bincode::serde::encode_into_std_write(mismatch, &mut out, bincode::config::standard())
            .map_err(encode_error)?;
    }
    let crc = out.crc.clone().finalize();
    let mut file = out
        .inner
        .into_inner()
        .map_err(|e| io_error(&temp)(e.into_error()))?;
    file.write_all(&crc.to_le_bytes())
        .map_err(io_error(&temp))?;
    file.write_all(TRAILER_MAGIC).map_err(io_error(&temp))?;
    file.sync_all().map_err(io_error(&temp))?;
    drop(file);
    fs::rename(&temp, &path).map_err(io_error(&path))?;
    sync_dir(dir)?;
    let bytes = fs::metadata(&path).map_err(io_error(&path))?.len();
    Ok(SnapshotFile { path, lsn, bytes })
}

/// Reads a snapshot: its LSN and every account state in it. Checks the
/// framing and checksum before decoding anything.
pub fn read(path: &Path) -> Result<(u64, Vec<AccountState>), SnapshotError> {
    read_full(path).map(|contents| (contents.lsn, contents.accounts))
}

/// Reads everything a snapshot holds.
pub fn read_full(path: &Path) -> Result<SnapshotContents, SnapshotError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    let damaged = |reason: String| SnapshotError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < HEADER_BYTES + 8 + TRAILER_BYTES {
        return Err(damaged(format!("only {} bytes", bytes.len())));
    }
    let (content, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
    if &trailer[4..] != TRAILER_MAGIC {
        return Err(damaged("no end marker: the file was cut short".into()));
    }
    let stored_crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let actual_crc = crc32fast::hash(content);
    if stored_crc != actual_crc {
        return Err(damaged(format!(
            "checksum {actual_crc:08x} does not match the stored {stored_crc:08x}"
        )));
    }
    if &content[..8] != HEADER_MAGIC {
        return Err(damaged("not a burnledger snapshot (bad magic)".into()));
    }
    let version = u32::from_le_bytes(array(&content[8..12]));
    if !(SNAPSHOT_FORMAT_VERSION_MIN..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
        return Err(damaged(format!(
            "format version {version}; this build reads versions {SNAPSHOT_FORMAT_VERSION_MIN} to {SNAPSHOT_FORMAT_VERSION}"
        )));
    }
    let lsn = u64::from_le_bytes(array(&content[12..20]));
    let (head, rest) = read_head(version, &content[20..]).map_err(damaged)?;
    let count = u64::from_le_bytes(array(&rest[..8]));
    let mut body = &rest[8..];
    // Each account takes at least a few bytes: cap the allocation by what
    // the file could hold, so a bogus count cannot exhaust memory.
    let mut accounts = Vec::with_capacity(count.min(body.len() as u64) as usize);
    for index in 0..count {
        let (mut account, used): (AccountState, usize) =
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map_err(|e| damaged(format!("account #{index}: {e}")))?;
        body = &body[used..];
        if version >= TIMES_SINCE_VERSION {
            let (times, used): (Vec<(UnixMs, UnixMs)>, usize) =
                bincode::serde::decode_from_slice(body, bincode::config::standard())
                    .map_err(|e| damaged(format!("account #{index}'s times: {e}")))?;
            account
                .restore_withdrawal_times(&times)
                .map_err(|e| damaged(format!("account #{index}'s times: {e}")))?;
            body = &body[used..];
        }
        if version >= KEYS_SINCE_VERSION {
            body = read_keys(body, &mut account)
                .map_err(|e| damaged(format!("account #{index}'s keys: {e}")))?;
        }
        if version >= CONTROLS_SINCE_VERSION {
            body = read_controls(body, &mut account)
                .map_err(|e| damaged(format!("account #{index}'s controls: {e}")))?;
        }
        account
            .check_invariants()
            .map_err(|e| damaged(format!("account #{index} breaks an invariant: {e}")))?;
        accounts.push(account);
    }
    let mut payouts = Vec::new();
    if version >= 2 {
        if body.len() < 8 {
            return Err(damaged("the payout count is missing".into()));
        }
        let count = u64::from_le_bytes(array(&body[..8]));
        body = &body[8..];
        for index in 0..count {
            let (mut payout, used): (PayoutRecord, usize) =
                bincode::serde::decode_from_slice(body, bincode::config::standard())
                    .map_err(|e| damaged(format!("payout #{index}: {e}")))?;
            body = &body[used..];
            if version >= TIMES_SINCE_VERSION {
                let ((submitted_at, settled_at), used): ((UnixMs, UnixMs), usize) =
                    bincode::serde::decode_from_slice(body, bincode::config::standard())
                        .map_err(|e| damaged(format!("payout #{index}'s times: {e}")))?;
                (payout.submitted_at, payout.settled_at) = (submitted_at, settled_at);
                body = &body[used..];
            }
            payouts.push(payout);
        }
    }
    if version >= 3 {
        body = read_mismatches(body, &mut payouts).map_err(damaged)?;
    }
    if !body.is_empty() {
        return Err(damaged(format!(
            "{} unexpected bytes after the last record",
            body.len()
        )));
    }
    let taken = newest_time(&accounts, &payouts);
    if version < KEYS_SINCE_VERSION {
        for account in &mut accounts {
            account.date_undated_keys(taken);
        }
    }
    if version < CONTROLS_SINCE_VERSION {
        for account in &mut accounts {
            let usage = usage_before_v7(account, taken);
            account.restore_controls(usage);
        }
    }
    Ok(SnapshotContents {
        lsn,
        accounts,
        payouts,
        head,
    })
}

/// The head a version 6 header holds after the LSN, and what follows it
/// (which must hold the account count); no head before version 6.
fn read_head(version: u32, after_lsn: &[u8]) -> Result<(Option<[u8; 32]>, &[u8]), String> {
    if version < HEAD_SINCE_VERSION {
        return Ok((None, after_lsn));
    }
    let (head, rest) = after_lsn
        .split_at_checked(HEAD_BYTES)
        .filter(|(_, rest)| rest.len() >= 8)
        .ok_or("the header's head is cut short")?;
    match head[0] {
        0 if head[1..].iter().all(|&b| b == 0) => Ok((None, rest)),
        1 => Ok((Some(array(&head[1..])), rest)),
        _ => Err("the header's head is neither absent nor present".to_owned()),
    }
}

/// An account's withdrawal times as format v4 keeps them after it: a
/// sequence of `(created_at, updated_at)`, oldest withdrawal first, written
/// without collecting them.
struct WithdrawalTimes<'a>(&'a AccountState);

impl Serialize for WithdrawalTimes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let times = self
            .0
            .withdrawals()
            .map(|(_, w)| (w.created_at, w.updated_at));
        serializer.collect_seq(times)
    }
}

/// An account's withdrawals' extras as format v7 keeps them: a sequence
/// of `Option`s, oldest withdrawal first, written without collecting them.
struct WithdrawalExtras<'a>(&'a AccountState);

impl Serialize for WithdrawalExtras<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.0
                .withdrawals()
                .map(|(_, w)| w.extras.encoding(w.currency.code)),
        )
    }
}

/// Reads an account's v5 key section (key times, expired keys) into it;
/// returns what follows it.
fn read_keys<'b>(body: &'b [u8], account: &mut AccountState) -> Result<&'b [u8], String> {
    let ((times, expired), used): ((Vec<UnixMs>, Vec<u64>), usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| e.to_string())?;
    account.restore_key_times(&times)?;
    account.restore_expired_keys(expired)?;
    Ok(&body[used..])
}

/// An account's v7 section: its controls, then its withdrawals' extras
/// (an `Option` each, oldest first); returns what follows it. The extras
/// go back before the account's invariants are checked: its fees are
/// locked too.
fn read_controls<'b>(body: &'b [u8], account: &mut AccountState) -> Result<&'b [u8], String> {
    let ((controls, extras), used): ((Option<Controls>, Vec<Option<Extras>>), usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| e.to_string())?;
    account.restore_controls(controls);
    account.restore_withdrawal_extras(extras)?;
    Ok(&body[used..])
}

/// The withdrawal-limit usage of an account read from a snapshot before
/// v7, which kept none: its withdrawals that count (pending, processing,
/// completed and returned ones, by what was paid: `usage.rs`'s rule)
/// requested within 30 days before `taken`, the snapshot's newest time.
/// Withdrawals of unknown time are left out.
fn usage_before_v7(account: &AccountState, taken: UnixMs) -> Option<Controls> {
    let since = taken.as_millis().saturating_sub(Window::Month.millis());
    let mut usage = Usage::default();
    for (_, w) in account.withdrawals() {
        let counts = !matches!(w.status.kind(), StatusKind::Failed | StatusKind::Cancelled);
        let recent = w.created_at.known().is_some() && w.created_at.as_millis() > since;
        if counts && recent {
            usage.add(w.currency.code, w.created_at, w.paid());
        }
    }
    (!usage.is_empty()).then(|| Controls {
        usage,
        ..Controls::default()
    })
}

/// The newest time a snapshot holds: its withdrawals' and payouts' last
/// changes ([`UnixMs::UNKNOWN`] if none is known).
fn newest_time(accounts: &[AccountState], payouts: &[PayoutRecord]) -> UnixMs {
    let withdrawals = accounts
        .iter()
        .flat_map(|a| a.withdrawals())
        .map(|(_, w)| w.created_at.max(w.updated_at));
    let payouts = payouts.iter().map(|p| p.submitted_at.max(p.settled_at));
    withdrawals.chain(payouts).max().unwrap_or(UnixMs::UNKNOWN)
}

/// Reads the v3 mismatch section into the payout records it names;
/// returns what follows it.
fn read_mismatches<'b>(
    mut body: &'b [u8],
    payouts: &mut [PayoutRecord],
) -> Result<&'b [u8], String> {
    if body.len() < 8 {
        return Err("the mismatch count is missing".into());
    }
    let count = u64::from_le_bytes(array(&body[..8]));
    body = &body[8..];
    for index in 0..count {
        let ((payout_id, mismatch), used): ((u64, PayoutMismatch), usize) =
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map_err(|e| format!("mismatch #{index}: {e}"))?;
        let record = payouts
            .iter_mut()
            .find(|p| p.payout_id == payout_id)
            .ok_or_else(|| {
                format!("mismatch #{index} names payout {payout_id}, not in the file")
            })?;
        record.mismatches.push(mismatch);
        body = &body[used..];
    }
    Ok(body)
}

/// Deletes all but the newest `keep` snapshots and any leftover temp files.
pub fn prune(dir: &Path, keep: usize) -> Result<(), SnapshotError> {
    for old in list(dir)?.into_iter().skip(keep) {
        fs::remove_file(&old.path).map_err(io_error(&old.path))?;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) == Some("tmp") {
                let _ = fs::remove_file(path);
            }
        }
    }
    Ok(())
}

/// Makes a rename or file creation in `dir` itself durable.
pub fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

fn array<const N: usize>(slice: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&slice[..N]);
    out
}

/// Hashes everything written through it.
struct ChecksummedWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for ChecksummedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.crc.update(&buf[..written]);
        Ok(written)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::{Settlement, WithdrawalRequest};
    use crate::domain::details::{Destination, Fee, Metadata, WithdrawalDetails};
    use crate::domain::money::{Currency, CurrencyCode};
    use crate::domain::policy::{Freeze, FreezeScope, Policy, Tier};
    use crate::domain::withdrawal::{Settler, TransitionAction};

    fn usd() -> Currency {
        Currency {
            code: CurrencyCode::new("USD").unwrap(),
            decimals: 2,
        }
    }

    fn eur() -> Currency {
        Currency {
            code: CurrencyCode::new("EUR").unwrap(),
            decimals: 2,
        }
    }

    fn at(ms: u64) -> UnixMs {
        UnixMs::from_millis(1_767_225_600_000 + ms)
    }

    /// Three accounts, each with a withdrawal (account 2's completed), all
    /// at different times, and a key (account 3's expired); and account 4
    /// with what format v7 keeps (`account_with_controls_and_extras`).
    fn sample_accounts() -> Vec<AccountState> {
        let usd = usd();
        let mut accounts: Vec<AccountState> = (1..=3)
            .map(|id| {
                let mut account = AccountState::new(id);
                let key = Some(crate::IdempotencyKey::new("k").unwrap());
                account.deposit(usd, 10_000, key, at(id)).unwrap();
                let w = account.request_withdrawal(usd, 2_500, None, 10, at(10 * id));
                let tx = w.unwrap().output.transaction_id;
                if id == 2 {
                    let done =
                        account.update_withdrawal(tx, TransitionAction::Complete, "", at(999));
                    assert!(done.is_ok());
                }
                if id == 3 {
                    // Format v5: an expired key's fingerprint.
                    let expiry = account.expire_keys(at(4), at(1_000)).unwrap();
                    assert_eq!(expiry.output, 1);
                }
                account
            })
            .collect();
        accounts.push(account_with_controls_and_extras());
        accounts
    }

    /// The fee account of the samples.
    const FEE_ACCOUNT: u64 = 99;

    fn policy() -> Policy {
        let mut limits = crate::domain::policy::WithdrawalLimits::default();
        for tier in [Tier::DEFAULT, Tier::new("vip").unwrap()] {
            for window in Window::ALL {
                limits.set(tier, usd().code, window, 1_000_000);
            }
        }
        Policy {
            fee_account: Some(FEE_ACCOUNT),
            limits,
            ..Policy::new(10)
        }
    }

    /// Account 4: a tier, a freeze, limit usage; a pending withdrawal with
    /// a fee in its own currency, a destination, metadata and an expiry
    /// (its fee locked with it); one completed in part, with its fee in
    /// another currency (paid 6.00 of 10.00); a pending one whose only
    /// extra is its fee in its own currency (kept in the record itself).
    fn account_with_controls_and_extras() -> AccountState {
        let mut account = AccountState::new(4);
        let metadata = Metadata::new([("order", "o-1")]).unwrap();
        account
            .deposit_with(usd(), 10_000, None, metadata.clone(), at(1))
            .unwrap();
        account.deposit(eur(), 500, None, at(2)).unwrap();
        let fee = |currency, amount| Some(Fee { currency, amount });
        let request = |amount, details| WithdrawalRequest {
            currency: usd(),
            amount,
            key: None,
            details,
            expires_in: Some(60_000),
        };
        let details = WithdrawalDetails {
            fee: fee(usd(), 50),
            destination: Some(Destination::new("iban", "DE89", Some("sepa".into())).unwrap()),
            metadata,
            expires_at: None,
        };
        let policy = policy();
        let pending = account.request_withdrawal_with(request(2_000, details), &policy, at(3));
        assert!(pending.is_ok(), "{pending:?}");
        let details = WithdrawalDetails {
            fee: fee(eur(), 20),
            ..WithdrawalDetails::default()
        };
        let part = account.request_withdrawal_with(request(1_000, details), &policy, at(4));
        let part = part.unwrap().output.transaction_id;
        let settlement = Settlement {
            action: TransitionAction::Complete,
            reason: String::new(),
            paid: Some(rust_decimal::Decimal::new(600, 2)),
        };
        let caller = Settler::Caller { engine_pays: false };
        let done = account.settle_withdrawal(part, settlement, Some(FEE_ACCOUNT), caller, at(5));
        assert_eq!(
            done.unwrap().output.paid,
            Some(rust_decimal::Decimal::new(600, 2))
        );
        let details = WithdrawalDetails {
            fee: fee(usd(), 3),
            ..WithdrawalDetails::default()
        };
        let no_expiry = WithdrawalRequest {
            expires_in: None,
            ..request(300, details)
        };
        let fee_only = account.request_withdrawal_with(no_expiry, &policy, at(6));
        assert!(fee_only.is_ok(), "{fee_only:?}");
        account.set_tier(Tier::new("vip").unwrap(), at(6)).unwrap();
        let freeze = Freeze {
            scope: FreezeScope::Withdrawals,
            until: Some(at(100_000)),
            reason: "kyc".into(),
        };
        account.set_freeze(freeze, at(7)).unwrap();
        account
    }

    #[test]
    fn snapshot_round_trips_every_account_with_its_withdrawals_and_keys_times() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = sample_accounts();
        let written = write(dir.path(), 77, accounts.iter()).unwrap();
        let (lsn, read_back) = read(&written.path).unwrap();
        assert_eq!(lsn, 77);
        assert_eq!(read_back, accounts);
        let keys: Vec<_> = read_back.iter().map(|a| a.key_times().len()).collect();
        assert_eq!(keys, [1, 1, 0, 0]);
        assert_eq!(read_back[2].expired_key_fingerprints().len(), 1);
        let times = |a: &AccountState| {
            let w = a.withdrawals().next().unwrap().1;
            (
                w.created_at.as_millis() % 1_000,
                w.updated_at.as_millis() % 1_000,
            )
        };
        let read_times: Vec<_> = read_back.iter().map(times).collect();
        assert_eq!(read_times, [(10, 10), (20, 999), (30, 30), (3, 3)]);
        assert_eq!(list(dir.path()).unwrap(), vec![written]);
    }

    #[test]
    fn payout_records_mismatches_and_times_round_trip_in_format_v5() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = sample_accounts();
        let usd = accounts[0].balances()[0].currency;
        let payout = PayoutRecord {
            payout_id: 3,
            currency: usd,
            items: vec![crate::domain::payouts::PayoutRecordItem {
                transaction_id: crate::TransactionId::new(1, 2),
                amount: 2_500,
                outcome: Some(crate::domain::event::ItemOutcome::Paid),
            }],
            attempts: 0,
            last_error: None,
            mismatches: vec![crate::domain::payouts::PayoutMismatch {
                transaction_id: crate::TransactionId::new(1, 2),
                settled: crate::domain::event::ItemOutcome::Paid,
                reported: crate::domain::event::ItemOutcome::Failed {
                    reason: "closed".into(),
                },
            }],
            submitted_at: UnixMs::from_millis(1_767_225_600_123),
            settled_at: UnixMs::from_millis(1_767_225_601_456),
        };
        let written = write_full(dir.path(), 9, accounts.iter(), std::iter::once(&payout)).unwrap();
        let contents = read_full(&written.path).unwrap();
        assert_eq!(contents.lsn, 9);
        assert_eq!(contents.accounts, accounts);
        assert_eq!(contents.payouts, vec![payout]);
    }

    #[test]
    fn any_flipped_byte_or_cut_is_reported_as_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path(), 5, sample_accounts().iter()).unwrap();
        let original = fs::read(&written.path).unwrap();
        for offset in 0..original.len() {
            let mut bytes = original.clone();
            bytes[offset] ^= 0x40;
            fs::write(&written.path, &bytes).unwrap();
            assert!(
                matches!(read(&written.path), Err(SnapshotError::Damaged { .. })),
                "flip at {offset} went unnoticed"
            );
        }
        for cut in [0, 10, original.len() / 2, original.len() - 1] {
            fs::write(&written.path, &original[..cut]).unwrap();
            assert!(matches!(
                read(&written.path),
                Err(SnapshotError::Damaged { .. })
            ));
        }
    }

    /// Format v6 keeps the chain's head in its header, or says it has
    /// none; a presence byte that is neither is damage (after the checksum,
    /// which a forger would fix).
    #[test]
    fn the_chain_head_round_trips_in_format_v6_and_a_bad_presence_byte_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = sample_accounts();
        let head = [0xAB; 32];
        let with = write_chained(dir.path(), 12, Some(head), accounts.iter(), [].iter()).unwrap();
        let contents = read_full(&with.path).unwrap();
        assert_eq!((contents.lsn, contents.head), (12, Some(head)));
        assert_eq!(contents.accounts, accounts);
        let without = write_full(dir.path(), 13, accounts.iter(), [].iter()).unwrap();
        assert_eq!(read_full(&without.path).unwrap().head, None);

        let mut bytes = fs::read(&with.path).unwrap();
        assert_eq!(&bytes[8..12], &SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        bytes[HEADER_BYTES] = 2;
        let content_len = bytes.len() - TRAILER_BYTES;
        let crc = crc32fast::hash(&bytes[..content_len]);
        bytes[content_len..content_len + 4].copy_from_slice(&crc.to_le_bytes());
        fs::write(&with.path, &bytes).unwrap();
        let error = read_full(&with.path).unwrap_err().to_string();
        assert!(error.contains("neither absent nor present"), "{error}");
    }

    /// Format v7 keeps an account's tier, freeze and limit usage, and each
    /// withdrawal's fee, destination, metadata, expiry and partly paid
    /// amount; the fees are locked again when it is read back.
    #[test]
    fn controls_and_extras_round_trip_in_format_v7_with_the_fees_locked() {
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path(), 3, sample_accounts().iter()).unwrap();
        let account = read(&written.path).unwrap().1.pop().unwrap();
        assert_eq!(account, account_with_controls_and_extras());
        account.check_invariants().unwrap();
        assert_eq!(account.tier().as_str(), "vip");
        assert_eq!(
            account.freeze_at(at(8)).map(|f| f.reason.as_str()),
            Some("kyc")
        );
        // 20.00 and 3.00 pending and their 0.50 and 0.03 fees are locked;
        // the part paid counts.
        assert_eq!(account.balance(usd()).locked, 2_353);
        let allowance = account.withdrawal_allowance(&policy(), usd(), at(8));
        let used: Vec<_> = allowance.windows.iter().map(|w| w.used).collect();
        assert_eq!(used, [rust_decimal::Decimal::new(2_900, 2); 2]);
        let views: Vec<_> = account.withdrawals().map(|(tx, w)| w.view(tx)).collect();
        let pending = &views[0];
        assert_eq!(
            pending.fee.as_ref().map(|f| f.amount),
            Some(rust_decimal::Decimal::new(50, 2))
        );
        assert_eq!(
            pending.destination.as_ref().map(|d| d.value.as_str()),
            Some("DE89")
        );
        assert_eq!(pending.metadata.get("order"), Some("o-1"));
        assert_eq!(pending.expires_at, Some(at(3 + 60_000)));
        assert_eq!(views[1].paid, Some(rust_decimal::Decimal::new(600, 2)));
        assert_eq!(views[1].fee.as_ref().map(|f| f.currency), Some(eur().code));
        let fee_only = views[2].fee.as_ref().map(|f| (f.currency, f.amount));
        assert_eq!(
            fee_only,
            Some((usd().code, rust_decimal::Decimal::new(3, 2)))
        );
        assert!(views[2].destination.is_none() && views[2].metadata.is_empty());
        assert_eq!(views[2].expires_at, None);
    }

    /// A v6 snapshot has no controls: its accounts read back untiered and
    /// unfrozen, with the limit usage of the withdrawals it holds that
    /// count — the live account's, when it forgot none.
    #[test]
    fn a_v6_snapshot_reads_with_the_usage_of_its_withdrawals_rebuilt() {
        let day = Window::Day.millis();
        let mut live = AccountState::new(5);
        live.deposit(usd(), 100_000, None, at(0)).unwrap();
        let mut request = |amount, when| {
            let made = live.request_withdrawal_with(
                WithdrawalRequest {
                    currency: usd(),
                    amount,
                    key: None,
                    details: WithdrawalDetails::default(),
                    expires_in: None,
                },
                &policy(),
                when,
            );
            made.unwrap().output.transaction_id
        };
        // Older than 30 days at the snapshot's newest time: counts nowhere.
        request(1_000, at(1));
        let completed = request(2_000, at(40 * day));
        let failed = request(4_000, at(40 * day + 5));
        request(8_000, at(55 * day));
        request(16_000, at(60 * day));
        let complete =
            live.update_withdrawal(completed, TransitionAction::Complete, "", at(60 * day + 1));
        assert!(complete.is_ok());
        let fail = live.update_withdrawal(failed, TransitionAction::Fail, "no", at(60 * day + 2));
        assert!(fail.is_ok());
        let dir = tempfile::tempdir().unwrap();
        let v6 = write_as(6, dir.path(), 9, None, std::iter::once(&live), [].iter()).unwrap();
        let read_back = read(&v6.path).unwrap().1.pop().unwrap();
        assert_eq!(read_back.tier(), Tier::DEFAULT);
        let now = at(60 * day + 2);
        let used = |a: &AccountState| -> Vec<_> {
            let allowance = a.withdrawal_allowance(&policy(), usd(), now);
            allowance.windows.iter().map(|w| w.used).collect()
        };
        let dec = |units| rust_decimal::Decimal::new(units, 2);
        assert_eq!(used(&read_back), [dec(16_000), dec(26_000)]);
        assert_eq!(used(&read_back), used(&live));
        // Nothing else differs: the rest was in v6 too.
        let mut without = read_back.clone();
        without.restore_controls(live.controls().cloned());
        assert_eq!(without, live);
    }

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for lsn in [1, 2, 3, 4] {
            write(dir.path(), lsn, sample_accounts().iter()).unwrap();
        }
        prune(dir.path(), 2).unwrap();
        let lsns: Vec<u64> = list(dir.path()).unwrap().iter().map(|s| s.lsn).collect();
        assert_eq!(lsns, vec![4, 3]);
    }
}
