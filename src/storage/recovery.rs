//! Rebuilding account states from disk: the newest valid snapshot, then the
//! WAL from the snapshot's LSN on, each event applied with its logged time
//! (so the times rebuilt are the times the live engine had); and the hash
//! chain's head at the last LSN ([`RecoveryReport::head`]), which the WAL
//! writer continues the chain from.
//!
//! The same rebuild serves three callers: opening a ledger (which may cut a
//! torn WAL tail), the background checkpointer (read-only, up to a durable
//! LSN, while the writer keeps appending), and `verify` (read-only, through
//! [`crate::storage::inspect`]). After every rebuild the invariants are
//! checked: a state that breaks one is an error, never a ledger that opens.
//! When a ledger opens, the report of what recovery did is logged
//! ([`RecoveryReport::log`]): a warning for any cut tail or skipped
//! snapshot, or history the store lacks and the log no longer holds.
//!
//! [`rebuild_feeding`] also feeds the history store (see
//! [`crate::storage::feed`]) every event after what it holds, derived from
//! the state as the replay rebuilds it. The store holds at least what the
//! newest snapshot does, unless it was lost or deleted: then the rebuild
//! starts from the newest snapshot the store is not behind and the log can
//! still replay from (or, failing that, the oldest the log can), so that as
//! much history as the log still has is re-derived; and the store is given
//! that start's withdrawal and payout rows (`feed::state_rows`), so every
//! withdrawal memory holds is in the store before it may leave memory.
//!
//! Snapshots hold no finished withdrawal the history store held when they
//! were written (the checkpointer's copy forgets them, see
//! [`crate::storage::recall`]), so replay may meet the return of a
//! completed withdrawal its state forgot: it is taken back from the store
//! first ([`restore_for_replay`]); a store that cannot give it back fails
//! the rebuild ([`RecoveryError::Apply`]), never a guess.

use std::borrow::BorrowMut;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::domain::account::AccountState;
use crate::domain::audit::audit_and;
use crate::domain::event::Event;
use crate::domain::feed::JournalHead;
use crate::domain::ids::AccountId;
use crate::domain::money::{Currencies, Currency};
use crate::domain::payouts::{PayoutRecord, PayoutRecordItem};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{WithdrawalHistory, WithdrawalStatus};
use crate::storage::feed::{apply_logged, state_rows, Feeder};
use crate::storage::recall::{restore_for_replay, FolderHistory};
use crate::storage::snapshot::{self, SnapshotFile};
use crate::storage::wal::{self, ReplayError, ReplayMode};

/// Where snapshots live inside the data folder.
pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// What a rebuild did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The snapshot the state started from, if any.
    pub snapshot: Option<SnapshotFile>,
    /// Newer snapshots that were skipped as damaged, with why.
    pub damaged_snapshots: Vec<(PathBuf, String)>,
    /// WAL records applied on top of the snapshot.
    pub records_replayed: u64,
    /// The last LSN the state includes.
    pub last_lsn: u64,
    /// The latest time among the WAL records replayed
    /// ([`UnixMs::UNKNOWN`] if none has one).
    pub newest_event_at: UnixMs,
    /// Where the WAL writer continues.
    pub next_lsn: u64,
    /// Bytes of a torn WAL tail cut off (or, read-only, that would be).
    pub bytes_truncated: u64,
    /// The segment cut (or, read-only, that would be), and where.
    pub truncated_segment: Option<PathBuf>,
    pub truncated_at: u64,
    pub accounts: usize,
    pub elapsed: Duration,
    /// LSNs (first, last) the history store lacked and the log no longer
    /// holds: that history is lost.
    pub history_lost: Option<(u64, u64)>,
    /// The hash of the record at `last_lsn` (zeros for an empty log): the
    /// start snapshot's stored head when it is at `last_lsn`, else read
    /// from the log (one record, where the replay found it). `None` when
    /// neither holds it (a snapshot from before format v6 past the log's
    /// end).
    pub head: Option<JournalHead>,
}

impl RecoveryReport {
    /// Tells the operator what recovery did, through `tracing`: a warning
    /// for every snapshot skipped as damaged and for a cut WAL tail (what
    /// was lost, where), then an info summary. Called when a ledger opens.
    pub fn log(&self) {
        if let Some((first, last)) = self.history_lost {
            tracing::warn!(
                first_lsn = first,
                last_lsn = last,
                "the history store lacks LSNs {first}..={last} and the log no longer holds \
                 them: the withdrawals, entries, transactions and payouts those events made \
                 are missing from the history (balances and the ledger's state are not \
                 affected); the store is rebuilt from what the log still has"
            );
        }
        for (path, reason) in &self.damaged_snapshots {
            tracing::warn!(
                snapshot = %path.display(),
                %reason,
                "recovery skipped a damaged snapshot and fell back to an older one"
            );
        }
        if let Some(segment) = &self.truncated_segment {
            tracing::warn!(
                segment = %segment.display(),
                offset = self.truncated_at,
                bytes = self.bytes_truncated,
                "recovery cut a torn WAL tail: {} bytes after byte {} of {} \
                 (what a crash mid-write leaves; such a write is never acknowledged \
                 under fsync)",
                self.bytes_truncated,
                self.truncated_at,
                segment.display()
            );
        }
        let snapshot = self
            .snapshot
            .as_ref()
            .map_or_else(|| "none".to_owned(), |s| s.path.display().to_string());
        tracing::info!(
            %snapshot,
            records_replayed = self.records_replayed,
            last_lsn = self.last_lsn,
            accounts = self.accounts,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "recovered: snapshot {snapshot}, {} WAL records replayed, last LSN {}, {} accounts",
            self.records_replayed,
            self.last_lsn,
            self.accounts
        );
    }
}

/// Why a rebuild failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("WAL record {lsn} cannot be applied: {reason}")]
    Apply { lsn: u64, reason: String },
    #[error("recovered state breaks an invariant: {0}")]
    Invariant(String),
    /// A snapshot was held back: the history store does not hold its LSN.
    #[error("{0}")]
    History(String),
}

/// Account states and payout records rebuilt from disk, and how.
pub struct Recovered {
    pub accounts: HashMap<AccountId, AccountState>,
    /// Payout records: from the log after the snapshot, plus one rebuilt
    /// from the accounts for every payout still holding processing items
    /// (snapshot format v1 keeps no payout records).
    pub payouts: BTreeMap<u64, PayoutRecord>,
    pub report: RecoveryReport,
}

/// The accounts while they are rebuilt. foldhash costs less than std's
/// SipHash for the lookups every event makes (applying, and warming ahead);
/// [`Recovered`] hands them over in a std map.
type Rebuilding = HashMap<AccountId, AccountState, foldhash::fast::RandomState>;

/// Rebuilds every account from `data_dir`. `currencies` must agree with
/// every currency the log mentions (same decimals), or the rebuild stops.
pub fn rebuild(
    data_dir: &Path,
    currencies: &Currencies,
    mode: ReplayMode,
) -> Result<Recovered, RecoveryError> {
    rebuild_feeding(data_dir, currencies, mode, None)
}

/// [`rebuild`], feeding `feed` the history of every event after what it
/// holds ([`Feeder::fed_lsn`]). A forgotten withdrawal a return needs is
/// read from the folder's history store, opened only then
/// ([`FolderHistory`]).
pub fn rebuild_feeding(
    data_dir: &Path,
    currencies: &Currencies,
    mode: ReplayMode,
    feed: Option<&mut Feeder>,
) -> Result<Recovered, RecoveryError> {
    let folder = FolderHistory::new(data_dir, currencies);
    rebuild_recalling(data_dir, currencies, mode, feed, &folder)
}

/// [`rebuild_feeding`], reading forgotten withdrawals from `recall` (the
/// store the running ledger holds open).
pub fn rebuild_recalling(
    data_dir: &Path,
    currencies: &Currencies,
    mode: ReplayMode,
    mut feed: Option<&mut Feeder>,
    recall: &dyn WithdrawalHistory,
) -> Result<Recovered, RecoveryError> {
    let history_at = feed.as_ref().map(|feed| feed.fed_lsn());
    let replay = Replay {
        data_dir,
        currencies,
        mode,
        recall,
    };
    match rebuild_from(&replay, feed.as_deref_mut(), history_at) {
        Ok(Some(recovered)) => return Ok(recovered),
        // The log does not reach the newest snapshot from the older start
        // the store wanted.
        Ok(None) => {}
        // The history must never keep a ledger from opening: an older
        // start may replay damage the newest snapshot covers.
        Err(error) if history_at.is_some() => {
            tracing::warn!(%error, "the history store could not be caught up from an older start");
        }
        Err(error) => return Err(error),
    }
    // Start from the newest snapshot, as without a store.
    rebuild_from(&replay, feed, None)?
        .ok_or_else(|| RecoveryError::Invariant("the rebuild has no start".into()))
}

/// A rebuild starting from the newest snapshot, or, with `history_at`
/// (the LSN the history store holds), from one it is not behind (see the
/// module docs); `None` when the log ends before the newest snapshot from
/// there.
fn rebuild_from(
    replay: &Replay<'_>,
    mut feed: Option<&mut Feeder>,
    history_at: Option<u64>,
) -> Result<Option<Recovered>, RecoveryError> {
    let (data_dir, currencies, mode) = (replay.data_dir, replay.currencies, replay.mode);
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let begin = begin(data_dir, history_at, &mut report)?;
    let (mut accounts, mut payouts, from_lsn) = (begin.accounts, begin.payouts, begin.lsn);
    let begin_head = begin.head;
    let must_reach = begin.must_reach;
    if let Some(feed) = feed.as_deref_mut().filter(|feed| feed.fed_lsn() < from_lsn) {
        report.history_lost = Some((feed.fed_lsn() + 1, from_lsn));
        feed.skip_to(from_lsn);
        // What memory starts from must be in the store, or a finished
        // withdrawal could leave memory for a store that never had it.
        feed.feed_state(from_lsn, state_rows(&accounts, &payouts));
    }
    let mut newest_event_at = UnixMs::UNKNOWN;
    // Records come decoded from the log's reader thread, in chunks.
    let replayed = wal::replay_chunks(data_dir, from_lsn + 1, mode, |entries| {
        for group in entries.chunks(WARM_GROUP) {
            // Reading the group's accounts first overlaps their cache
            // misses, instead of taking them one after another.
            let warmed = group
                .iter()
                .fold(0, |warmed, entry| warmed ^ warm(&accounts, &entry.event));
            std::hint::black_box(warmed);
            for entry in group {
                let lsn = entry.lsn;
                newest_event_at = newest_event_at.max(entry.at);
                let restored = restore_for_replay(&mut accounts, &entry.event, replay.recall);
                let state = (&mut accounts, &mut payouts);
                let logged = (lsn, &entry.event, entry.at);
                restored
                    .and_then(
                        |()| match feed.as_deref_mut().filter(|f| lsn > f.fed_lsn()) {
                            Some(feed) => {
                                apply_logged(state, currencies, logged, Some(feed.changes()))
                                    .map(|()| feed.fed(lsn, &entry.event, entry.at))
                            }
                            None => apply_logged(state, currencies, logged, None),
                        },
                    )
                    .map_err(|reason| (lsn, RecoveryError::Apply { lsn, reason }))?;
            }
        }
        Ok(())
    })
    .map_err(|error| match error {
        ReplayError::Wal(error) => RecoveryError::Wal(error),
        ReplayError::Apply { error, .. } => error,
    })?;
    if let Some(feed) = feed {
        feed.flush();
    }
    if must_reach > replayed.last_lsn.max(from_lsn) {
        return Ok(None);
    }
    report.records_replayed = replayed.records;
    report.newest_event_at = newest_event_at;
    report.last_lsn = replayed.last_lsn.max(from_lsn);
    report.next_lsn = replayed.next_lsn.max(from_lsn + 1);
    report.bytes_truncated = replayed.bytes_truncated;
    report.truncated_segment = replayed.truncated_segment;
    report.truncated_at = replayed.truncated_at;
    report.accounts = accounts.len();
    let read_last = replayed.last_record.filter(|r| r.lsn == report.last_lsn);
    report.head = head_at(data_dir, report.last_lsn, (from_lsn, begin_head), read_last)?;

    // One pass over the accounts: audit them and note the payouts still
    // processing.
    let checked = audit_and(accounts.values(), |account| {
        add_processing_payouts(account, &mut payouts);
    });
    if let Some(violation) = checked.violations.first() {
        return Err(RecoveryError::Invariant(violation.clone()));
    }
    let mut handed_over = HashMap::with_capacity(accounts.len());
    handed_over.extend(accounts);
    report.elapsed = started.elapsed();
    if mode == ReplayMode::Recover {
        report.log();
    }
    Ok(Some(Recovered {
        accounts: handed_over,
        payouts,
        report,
    }))
}

/// What a rebuild reads: the folder, at the scale of `currencies`, in
/// `mode`, and where forgotten withdrawals are found again.
struct Replay<'a> {
    data_dir: &'a Path,
    currencies: &'a Currencies,
    mode: ReplayMode,
    recall: &'a dyn WithdrawalHistory,
}

/// Where a rebuild starts: a snapshot's contents, or nothing (LSN 0).
struct Begin {
    accounts: Rebuilding,
    payouts: BTreeMap<u64, PayoutRecord>,
    lsn: u64,
    /// An older start than the newest snapshot was chosen for the history
    /// store: the rebuilt state must reach the newest snapshot's LSN.
    must_reach: u64,
    /// The snapshot's stored chain head at `lsn`, if it has one.
    head: Option<wal::record::Hash>,
}

/// The chain's head at `last_lsn`: zeros for an empty log, the start
/// snapshot's (`snapshot`: its LSN and head) if it is at `last_lsn`, else
/// the hash of the log's record: read again where the replay found it
/// (`replayed`: one small read), or, when the replay did not read it (its
/// segment held nothing to replay), found in its segment.
fn head_at(
    data_dir: &Path,
    last_lsn: u64,
    snapshot: (u64, Option<wal::record::Hash>),
    replayed: Option<wal::RecordPlace>,
) -> Result<Option<JournalHead>, RecoveryError> {
    let hash = match (snapshot, replayed) {
        _ if last_lsn == 0 => Some(wal::record::GENESIS),
        ((lsn, Some(head)), _) if lsn == last_lsn => Some(head),
        (_, Some(place)) => Some(place.hash()?),
        _ => wal::record_hash_at(data_dir, last_lsn)?,
    };
    Ok(hash.map(|hash| JournalHead {
        lsn: last_lsn,
        hash,
    }))
}

/// Reads the first of the starts [`starts`] lists that reads back; the
/// damaged ones are noted in `report`.
fn begin(
    data_dir: &Path,
    history_at: Option<u64>,
    report: &mut RecoveryReport,
) -> Result<Begin, RecoveryError> {
    let snapshots = snapshot::list(&snapshot_dir(data_dir))?;
    let newest_lsn = snapshots.first().map_or(0, |s| s.lsn);
    let mut begin = Begin {
        accounts: Rebuilding::default(),
        payouts: BTreeMap::new(),
        lsn: 0,
        head: None,
        must_reach: if history_at.is_some_and(|at| at < newest_lsn) {
            newest_lsn
        } else {
            0
        },
    };
    for candidate in starts(data_dir, snapshots, history_at)? {
        let Some(candidate) = candidate else {
            return Ok(begin);
        };
        match snapshot::read_full(&candidate.path) {
            Ok(contents) => {
                begin.accounts = contents.accounts.into_iter().map(|a| (a.id(), a)).collect();
                begin.payouts = contents
                    .payouts
                    .into_iter()
                    .map(|p| (p.payout_id, p))
                    .collect();
                begin.lsn = contents.lsn;
                begin.head = contents.head;
                report.snapshot = Some(candidate);
                return Ok(begin);
            }
            Err(snapshot::SnapshotError::Damaged { path, reason }) => {
                if !report.damaged_snapshots.iter().any(|(p, _)| *p == path) {
                    report.damaged_snapshots.push((path, reason));
                }
            }
            Err(other) => return Err(other.into()),
        }
    }
    Ok(begin)
}

/// The starts a rebuild tries in turn (`None`: from nothing). Without a
/// history store, or one not behind the newest snapshot: the snapshots
/// newest first. With a store behind it (at `history_at`): first the
/// snapshots it is not behind, newest first, then nothing, then those it
/// is behind, oldest first (each only if the log still replays from it),
/// then the rest as without a store.
fn starts(
    data_dir: &Path,
    snapshots: Vec<SnapshotFile>,
    history_at: Option<u64>,
) -> Result<Vec<Option<SnapshotFile>>, RecoveryError> {
    let newest_lsn = snapshots.first().map_or(0, |s| s.lsn);
    let behind = history_at.filter(|&at| at < newest_lsn);
    let mut order: Vec<Option<SnapshotFile>> = Vec::with_capacity(snapshots.len() * 2 + 1);
    if let Some(at) = behind {
        let log_from = wal::first_lsn(data_dir)?.unwrap_or(u64::MAX);
        let replayable = |lsn: u64| log_from <= lsn.saturating_add(1);
        let (not_behind, ahead): (Vec<_>, Vec<_>) = snapshots
            .iter()
            .filter(|s| replayable(s.lsn))
            .partition(|s| s.lsn <= at);
        order.extend(not_behind.into_iter().cloned().map(Some));
        if replayable(0) {
            order.push(None);
        }
        order.extend(ahead.into_iter().rev().cloned().map(Some));
    }
    order.extend(snapshots.into_iter().map(Some));
    order.push(None);
    Ok(order)
}

/// Makes sure every payout with items still processing in `account` has a
/// record, built from the account when the log that submitted it was
/// already compacted (its submit time is then unknown).
fn add_processing_payouts(account: &AccountState, payouts: &mut BTreeMap<u64, PayoutRecord>) {
    for (tx, record) in account.withdrawals() {
        let WithdrawalStatus::Processing { payout_id } = record.status else {
            continue;
        };
        let payout = payouts
            .entry(payout_id)
            .or_insert_with(|| PayoutRecord::new(payout_id, record.currency, []));
        if !payout.items.iter().any(|i| i.transaction_id == tx) {
            payout.items.push(PayoutRecordItem {
                transaction_id: tx,
                amount: record.amount,
                outcome: None,
            });
        }
    }
}

/// Events whose accounts replay reads (see [`AccountState::warm`]) before
/// applying them: enough misses in flight to overlap, few enough that what
/// the first read is still in cache when its event is applied.
const WARM_GROUP: usize = 8;

/// Reads the accounts `event` concerns, for [`WARM_GROUP`].
fn warm<S: BuildHasher>(accounts: &HashMap<AccountId, AccountState, S>, event: &Event) -> u64 {
    let (Some(tx), Some((owner, receiver))) = (event.transaction_id(), event.accounts()) else {
        return 0;
    };
    std::iter::once(owner)
        .chain(receiver)
        .filter_map(|id| accounts.get(&id))
        .fold(0, |warmed, account| warmed ^ account.warm(tx))
}

/// Applies one logged event, with its logged time `at`, to the accounts it
/// concerns.
///
/// The map holds account states inline or boxed (`V`): the checkpointer
/// boxes its copy, whose table then holds pointers, not ≈ 150-byte states.
pub fn apply_event<V, S>(
    accounts: &mut HashMap<AccountId, V, S>,
    currencies: &Currencies,
    event: &Event,
    at: UnixMs,
) -> Result<(), String>
where
    V: BorrowMut<AccountState> + From<AccountState>,
    S: BuildHasher,
{
    for logged in event_currencies(event).into_iter().flatten() {
        let configured = currencies
            .get_code(logged.code)
            .map_err(|e| e.to_string())?;
        if configured != logged {
            return Err(format!(
                "the log has {} with {} decimals but the configuration says {}",
                logged.code, logged.decimals, configured.decimals
            ));
        }
    }
    let Some((owner, receiver)) = event.accounts() else {
        // Payout records change no account; the payout registry reads them.
        return Ok(());
    };
    for id in std::iter::once(owner).chain(receiver) {
        accounts
            .entry(id)
            .or_insert_with(|| V::from(AccountState::new(id)))
            .borrow_mut()
            .apply(event, at)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The currencies (with their decimals) an event carries: its amount's,
/// and a fee's.
fn event_currencies(event: &Event) -> [Option<Currency>; 2] {
    match event {
        Event::WithdrawalRequested {
            currency, details, ..
        } => [
            Some(*currency),
            details.as_ref().and_then(|d| d.fee).map(|f| f.currency),
        ],
        Event::Deposited { currency, .. }
        | Event::Transferred { currency, .. }
        | Event::PayoutSubmitted { currency, .. } => [Some(*currency), None],
        Event::WithdrawalCompleted { fee, .. } => [fee.map(|f| f.currency), None],
        _ => [None, None],
    }
}
