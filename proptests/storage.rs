//! Storage properties, without an engine:
//!
//! - any sequence of events (every variant of `Event`, with and without
//!   the optional parts format v7 added) encodes into WAL records and
//!   decodes back to itself, record by record;
//! - a WAL segment cut at any byte recovers exactly the records wholly
//!   before the cut — the same as a log that only ever held them — and the
//!   cut is reported and made permanent;
//! - account states built through the pure `AccountState` API equal the
//!   states rebuilt from the events they logged (what recovery relies on),
//!   and round-trip through a snapshot file together with payout records.
//!
//! `PROPTEST_CASES` sets the number of cases (default 256).

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use burnledger::domain::account::{AccountState, TransferHold};
use burnledger::domain::details::{Destination, Fee, FeeCollected, Metadata, WithdrawalDetails};
use burnledger::domain::event::{Event, ItemOutcome, Stamped};
use burnledger::domain::money::{Currency, CurrencyCode};
use burnledger::domain::payouts::{PayoutRecord, PayoutRecordItem};
use burnledger::domain::policy::{Freeze, FreezeScope, Tier};
use burnledger::domain::time::UnixMs;
use burnledger::domain::withdrawal::TransitionAction;
use burnledger::storage::snapshot;
use burnledger::storage::wal::{self, record};
use burnledger::{IdempotencyKey, TransactionId};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

fn config() -> ProptestConfig {
    support::proptest_config(256, file!())
}

// ---- events ----

fn tx() -> impl Strategy<Value = TransactionId> {
    (any::<u64>(), any::<u64>()).prop_map(|(a, s)| TransactionId::new(a, s))
}

fn currency() -> impl Strategy<Value = Currency> {
    ("[A-Z0-9]{1,8}", 0u8..=18).prop_map(|(code, decimals)| Currency {
        code: CurrencyCode::new(&code).expect("a well-formed code"),
        decimals,
    })
}

fn key() -> impl Strategy<Value = Option<IdempotencyKey>> {
    prop::option::of("\\PC{1,32}".prop_map(|k| IdempotencyKey::new(&k).expect("1 to 128 bytes")))
}

fn reason() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

fn outcome() -> impl Strategy<Value = ItemOutcome> {
    prop_oneof![
        Just(ItemOutcome::Paid),
        reason().prop_map(|reason| ItemOutcome::Failed { reason }),
        any::<i128>().prop_map(|paid| ItemOutcome::PartlyPaid { paid }),
    ]
}

/// Metadata, or none (`None`, as events keep no metadata).
fn metadata() -> impl Strategy<Value = Option<Box<Metadata>>> {
    prop::collection::btree_map("[a-z_]{1,8}", "\\PC{0,12}", 0..4)
        .prop_map(|pairs| Metadata::new(pairs).expect("within the limits").boxed())
}

fn destination() -> impl Strategy<Value = Destination> {
    (
        "[a-z]{1,8}",
        "[A-Z0-9]{1,34}",
        prop::option::of("[a-z]{1,12}"),
    )
        .prop_map(|(kind, value, network)| {
            Destination::new(kind, value, network).expect("well formed")
        })
}

/// A withdrawal's details: any of a fee, a destination, metadata and an
/// expiry, or none of them (`None`).
fn details() -> impl Strategy<Value = Option<Box<WithdrawalDetails>>> {
    (
        prop::option::of((currency(), any::<i128>())),
        prop::option::of(destination()),
        metadata(),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(fee, destination, metadata, expires_at)| {
            WithdrawalDetails {
                fee: fee.map(|(currency, amount)| Fee { currency, amount }),
                destination,
                metadata: metadata.map(|m| *m).unwrap_or_default(),
                expires_at: expires_at.map(UnixMs::from_millis),
            }
            .boxed()
        })
}

fn fee_collected() -> impl Strategy<Value = FeeCollected> {
    (any::<u64>(), currency(), any::<i128>()).prop_map(|(to, currency, amount)| FeeCollected {
        to,
        currency,
        amount,
    })
}

fn freeze() -> impl Strategy<Value = Freeze> {
    (
        prop_oneof![Just(FreezeScope::Withdrawals), Just(FreezeScope::All)],
        prop::option::of(any::<u64>()),
        reason(),
    )
        .prop_map(|(scope, until, reason)| Freeze {
            scope,
            until: until.map(UnixMs::from_millis),
            reason,
        })
}

fn tier() -> impl Strategy<Value = Tier> {
    "[a-z0-9_.-]{1,32}".prop_map(|name| Tier::new(&name).expect("a well-formed tier"))
}

/// Every variant of `Event`, with any field values.
fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (tx(), currency(), any::<i128>(), key(), metadata()).prop_map(
            |(tx, currency, amount, key, metadata)| Event::Deposited {
                tx,
                currency,
                amount,
                key,
                metadata,
            }
        ),
        (tx(), currency(), any::<i128>(), key(), details()).prop_map(
            |(tx, currency, amount, key, details)| Event::WithdrawalRequested {
                tx,
                currency,
                amount,
                key,
                details,
            }
        ),
        (
            tx(),
            prop::option::of(any::<i128>()),
            prop::option::of(fee_collected())
        )
            .prop_map(|(tx, paid, fee)| Event::WithdrawalCompleted { tx, fee, paid }),
        (tx(), reason()).prop_map(|(tx, reason)| Event::WithdrawalFailed { tx, reason }),
        tx().prop_map(|tx| Event::WithdrawalCancelled { tx }),
        (
            tx(),
            any::<u64>(),
            currency(),
            any::<i128>(),
            key(),
            metadata()
        )
            .prop_map(
                |(tx, to, currency, amount, key, metadata)| Event::Transferred {
                    tx,
                    to,
                    currency,
                    amount,
                    key,
                    metadata,
                }
            ),
        (tx(), any::<u64>()).prop_map(|(tx, payout_id)| Event::WithdrawalClaimed { tx, payout_id }),
        tx().prop_map(|tx| Event::WithdrawalReleased { tx }),
        (tx(), reason()).prop_map(|(tx, reason)| Event::WithdrawalReturned { tx, reason }),
        (
            any::<u64>(),
            currency(),
            prop::collection::vec((tx(), any::<i128>()), 0..5)
        )
            .prop_map(|(payout_id, currency, items)| Event::PayoutSubmitted {
                payout_id,
                currency,
                items,
            }),
        (any::<u64>(), prop::collection::vec((tx(), outcome()), 0..5))
            .prop_map(|(payout_id, items)| Event::PayoutItemsSettled { payout_id, items }),
        (any::<u64>(), tx(), outcome(), reason()).prop_map(|(payout_id, tx, outcome, note)| {
            Event::PayoutItemResolved {
                payout_id,
                tx,
                outcome,
                note,
            }
        }),
        (any::<u64>(), tx(), outcome(), outcome()).prop_map(
            |(payout_id, tx, settled, reported)| Event::PayoutMismatch {
                payout_id,
                tx,
                settled,
                reported,
            }
        ),
        (any::<u64>(), any::<u64>()).prop_map(|(account, before)| {
            Event::IdempotencyKeysExpired {
                account,
                before: UnixMs::from_millis(before),
            }
        }),
        (any::<u64>(), freeze())
            .prop_map(|(account, freeze)| Event::AccountFrozen { account, freeze }),
        any::<u64>().prop_map(|account| Event::AccountUnfrozen { account }),
        (any::<u64>(), tier()).prop_map(|(account, tier)| Event::AccountTierSet { account, tier }),
    ]
}

/// Which optional part format v7 added an event carries, if any: 0 for
/// none, then metadata (deposit, transfer), details (request), a paid
/// amount, a collected fee (completion), a partly paid item.
fn new_part(event: &Event) -> usize {
    match event {
        Event::Deposited {
            metadata: Some(_), ..
        } => 1,
        Event::Transferred {
            metadata: Some(_), ..
        } => 2,
        Event::WithdrawalRequested {
            details: Some(_), ..
        } => 3,
        Event::WithdrawalCompleted { paid: Some(_), .. } => 4,
        Event::WithdrawalCompleted { fee: Some(_), .. } => 5,
        Event::PayoutItemsSettled { items, .. }
            if items
                .iter()
                .any(|(_, o)| matches!(o, ItemOutcome::PartlyPaid { .. })) =>
        {
            6
        }
        _ => 0,
    }
}
const NEW_PARTS: usize = 7;

/// Which variant an event is. Exhaustive on purpose: a new variant does
/// not compile here until `event()` generates it too.
fn variant(event: &Event) -> usize {
    match event {
        Event::Deposited { .. } => 0,
        Event::WithdrawalRequested { .. } => 1,
        Event::WithdrawalCompleted { .. } => 2,
        Event::WithdrawalFailed { .. } => 3,
        Event::WithdrawalCancelled { .. } => 4,
        Event::Transferred { .. } => 5,
        Event::WithdrawalClaimed { .. } => 6,
        Event::WithdrawalReleased { .. } => 7,
        Event::WithdrawalReturned { .. } => 8,
        Event::PayoutSubmitted { .. } => 9,
        Event::PayoutItemsSettled { .. } => 10,
        Event::PayoutItemResolved { .. } => 11,
        Event::PayoutMismatch { .. } => 12,
        Event::IdempotencyKeysExpired { .. } => 13,
        Event::AccountFrozen { .. } => 14,
        Event::AccountUnfrozen { .. } => 15,
        Event::AccountTierSet { .. } => 16,
    }
}
const VARIANTS: usize = 17;

#[test]
fn the_event_strategy_generates_every_variant() {
    let mut runner = TestRunner::deterministic();
    let mut seen = [false; VARIANTS];
    let mut parts = [false; NEW_PARTS];
    for _ in 0..2_000 {
        let event = event().new_tree(&mut runner).expect("a value").current();
        seen[variant(&event)] = true;
        parts[new_part(&event)] = true;
    }
    assert!(seen.iter().all(|s| *s), "variants generated: {seen:?}");
    assert!(parts.iter().all(|s| *s), "new parts generated: {parts:?}");
}

/// The time the record at `lsn` is stamped with.
fn stamp_of(lsn: u64) -> UnixMs {
    UnixMs::from_millis(1_767_225_600_000 + lsn)
}

/// The records of `events` from `first_lsn` on (each stamped
/// [`stamp_of`] its LSN), and where each ends.
fn encode(events: &[Event], first_lsn: u64) -> (Vec<u8>, Vec<usize>) {
    let mut buf = Vec::new();
    let mut ends = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let before = buf.len();
        let lsn = first_lsn + i as u64;
        let stamped = Stamped {
            at: stamp_of(lsn),
            event: event.clone(),
        };
        let len = record::encode_into(&mut buf, lsn, &stamped).expect("encodes");
        assert_eq!(
            buf.len(),
            before + len,
            "the size returned is the size written"
        );
        ends.push(buf.len());
    }
    (buf, ends)
}

/// Writes `bytes` as the log's only segment, starting at LSN 1.
fn write_segment(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join("wal").join("00000000000000000001.wal");
    assert_eq!(path, wal::segment_path(dir, 1));
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(&path, bytes).expect("write");
    path
}

fn replay(dir: &Path) -> (Vec<(u64, Event)>, wal::ReplayReport) {
    let mut seen = Vec::new();
    let report = wal::replay(dir, 1, |entry| {
        assert_eq!(entry.at, stamp_of(entry.lsn), "the time logged with it");
        seen.push((entry.lsn, entry.event));
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap_or_else(|e| panic!("replay failed: {e}"));
    (seen, report)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_event_sequence_decodes_to_itself(
        events in prop::collection::vec(event(), 0..30),
        first_lsn in 1u64..u64::MAX / 2,
    ) {
        let (buf, ends) = encode(&events, first_lsn);
        let mut at = 0;
        for (i, event) in events.iter().enumerate() {
            let lsn = first_lsn + i as u64;
            match record::decode(&buf[at..], lsn) {
                record::Decoded::Complete { entry, len } => {
                    prop_assert_eq!(entry.lsn, lsn);
                    prop_assert_eq!(&entry.event, event);
                    at += len;
                    prop_assert_eq!(at, ends[i]);
                }
                other => prop_assert!(false, "record {} at {}: {:?}", i, at, other),
            }
        }
        prop_assert_eq!(at, buf.len());
        prop_assert_eq!(record::decode(&buf[at..], first_lsn + events.len() as u64), record::Decoded::Torn);
    }

    #[test]
    fn a_wal_cut_anywhere_recovers_exactly_the_whole_records_before_the_cut(
        events in prop::collection::vec(event(), 1..20),
        cut in any::<Index>(),
    ) {
        let (buf, ends) = encode(&events, 1);
        let cut = cut.index(buf.len() + 1);
        let whole = ends.iter().filter(|end| **end <= cut).count();
        let boundary = if whole == 0 { 0 } else { ends[whole - 1] };

        let dir = tempfile::tempdir().expect("tempdir");
        let segment = write_segment(dir.path(), &buf[..cut]);
        let (recovered, report) = replay(dir.path());
        let expected: Vec<(u64, Event)> =
            events[..whole].iter().cloned().enumerate().map(|(i, e)| (i as u64 + 1, e)).collect();
        prop_assert_eq!(&recovered, &expected);
        prop_assert_eq!(report.records, whole as u64);
        prop_assert_eq!(report.last_lsn, whole as u64);
        prop_assert_eq!(report.next_lsn, whole as u64 + 1);
        prop_assert_eq!(report.bytes_truncated, (cut - boundary) as u64);
        prop_assert_eq!(report.truncated_segment.is_some(), cut != boundary);
        // The cut is permanent: the segment now ends at the last whole record.
        prop_assert_eq!(std::fs::metadata(&segment).expect("stat").len(), boundary as u64);
        let (again, report_again) = replay(dir.path());
        prop_assert_eq!(&again, &expected);
        prop_assert_eq!(report_again.bytes_truncated, 0);

        // The same as a log that only ever held those records.
        let prefix_dir = tempfile::tempdir().expect("tempdir");
        write_segment(prefix_dir.path(), &buf[..boundary]);
        let (from_prefix, prefix_report) = replay(prefix_dir.path());
        prop_assert_eq!(&from_prefix, &recovered);
        prop_assert_eq!(
            (prefix_report.records, prefix_report.last_lsn, prefix_report.next_lsn, prefix_report.bytes_truncated),
            (report.records, report.last_lsn, report.next_lsn, 0)
        );
    }
}

// ---- account states and snapshots ----

const ACCOUNTS: [u64; 3] = [1, 2, 3];

fn usd() -> Currency {
    Currency {
        code: CurrencyCode::new("USD").expect("USD"),
        decimals: 2,
    }
}

fn btc() -> Currency {
    Currency {
        code: CurrencyCode::new("BTC").expect("BTC"),
        decimals: 8,
    }
}

#[derive(Clone, Debug)]
enum AccountOp {
    Deposit {
        account: usize,
        btc: bool,
        amount: i128,
        key: Option<u8>,
    },
    Withdraw {
        account: usize,
        btc: bool,
        amount: i128,
        key: Option<u8>,
    },
    Transfer {
        from: usize,
        to: usize,
        btc: bool,
        amount: i128,
        key: Option<u8>,
    },
    Update {
        pick: Index,
        action: usize,
    },
    Claim {
        pick: Index,
        payout_id: u64,
    },
}

const ACTIONS: [TransitionAction; 5] = [
    TransitionAction::Complete,
    TransitionAction::Fail,
    TransitionAction::Cancel,
    TransitionAction::Return,
    TransitionAction::Release,
];

fn account_op() -> impl Strategy<Value = AccountOp> {
    let money = (
        0usize..3,
        any::<bool>(),
        1i128..=1_000,
        prop::option::of(0u8..3),
    );
    prop_oneof![
        3 => money.clone().prop_map(|(account, btc, amount, key)| AccountOp::Deposit {
            account, btc, amount: amount * 3, key
        }),
        3 => money.clone().prop_map(|(account, btc, amount, key)| AccountOp::Withdraw {
            account, btc, amount, key
        }),
        2 => (money, 1usize..3).prop_map(|((from, btc, amount, key), offset)| AccountOp::Transfer {
            from, to: (from + offset) % 3, btc, amount, key
        }),
        3 => (any::<Index>(), 0usize..ACTIONS.len())
            .prop_map(|(pick, action)| AccountOp::Update { pick, action }),
        2 => (any::<Index>(), 1u64..100)
            .prop_map(|(pick, payout_id)| AccountOp::Claim { pick, payout_id }),
    ]
}

fn idempotency_key(key: Option<u8>) -> Option<IdempotencyKey> {
    key.map(|k| IdempotencyKey::new(&format!("key-{k}")).expect("a valid key"))
}

/// Runs the operations through the pure API (refusals change nothing and
/// are skipped), the n-th at `n` ms; returns the states and every event
/// they logged, with its time.
fn build(ops: &[AccountOp]) -> (BTreeMap<u64, AccountState>, Vec<(Event, UnixMs)>) {
    let mut states: BTreeMap<u64, AccountState> = ACCOUNTS
        .iter()
        .map(|id| (*id, AccountState::new(*id)))
        .collect();
    let mut log = Vec::new();
    let mut withdrawals: Vec<TransactionId> = Vec::new();
    let cur = |is_btc: bool| if is_btc { btc() } else { usd() };
    for (n, op) in ops.iter().enumerate() {
        let at = UnixMs::from_millis(n as u64);
        let mut log_at = |event: Option<Event>| log.extend(event.map(|e| (e, at)));
        match op {
            AccountOp::Deposit {
                account,
                btc,
                amount,
                key,
            } => {
                let state = states.get_mut(&ACCOUNTS[*account]).expect("an account");
                if let Ok(effect) = state.deposit(cur(*btc), *amount, idempotency_key(*key), at) {
                    log_at(effect.event);
                }
            }
            AccountOp::Withdraw {
                account,
                btc,
                amount,
                key,
            } => {
                let state = states.get_mut(&ACCOUNTS[*account]).expect("an account");
                if let Ok(effect) =
                    state.request_withdrawal(cur(*btc), *amount, idempotency_key(*key), 5, at)
                {
                    if effect.event.is_some() {
                        withdrawals.push(effect.output.transaction_id);
                    }
                    log_at(effect.event);
                }
            }
            AccountOp::Transfer {
                from,
                to,
                btc,
                amount,
                key,
            } => {
                let (from, to) = (ACCOUNTS[*from], ACCOUNTS[*to]);
                let key = idempotency_key(*key);
                let held = states.get_mut(&from).expect("an account").hold_transfer(
                    to,
                    cur(*btc),
                    *amount,
                    key.clone(),
                );
                if let Ok(TransferHold::Held(tx)) = held {
                    let received = states.get_mut(&to).expect("an account").receive_transfer(
                        tx,
                        cur(*btc),
                        *amount,
                        key,
                        at,
                    );
                    let ok = received.is_ok().then_some(at);
                    log_at(received.ok());
                    states
                        .get_mut(&from)
                        .expect("an account")
                        .finish_transfer(tx, ok)
                        .expect("a held transfer finishes");
                }
            }
            AccountOp::Update { pick, action } if !withdrawals.is_empty() => {
                let tx = withdrawals[pick.index(withdrawals.len())];
                let state = states.get_mut(&tx.account()).expect("an account");
                if let Ok(effect) = state.update_withdrawal(tx, ACTIONS[*action], "because", at) {
                    log_at(effect.event);
                }
            }
            AccountOp::Claim { pick, payout_id } if !withdrawals.is_empty() => {
                let tx = withdrawals[pick.index(withdrawals.len())];
                let state = states.get_mut(&tx.account()).expect("an account");
                if let Ok(effect) = state.claim_withdrawal(tx, *payout_id, at) {
                    log_at(effect.event);
                }
            }
            AccountOp::Update { .. } | AccountOp::Claim { .. } => {}
        }
    }
    (states, log)
}

fn payout_record() -> impl Strategy<Value = PayoutRecord> {
    (
        any::<u64>(),
        currency(),
        prop::collection::vec((tx(), any::<i128>(), prop::option::of(outcome())), 0..5),
        (any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(payout_id, currency, items, (submitted, settled))| PayoutRecord {
                payout_id,
                currency,
                items: items
                    .into_iter()
                    .map(|(transaction_id, amount, outcome)| PayoutRecordItem {
                        transaction_id,
                        amount,
                        outcome,
                    })
                    .collect(),
                // Neither is written to disk.
                attempts: 0,
                last_error: None,
                mismatches: Vec::new(),
                submitted_at: UnixMs::from_millis(submitted),
                settled_at: UnixMs::from_millis(settled),
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn account_states_equal_their_replayed_log_and_round_trip_through_a_snapshot(
        ops in prop::collection::vec(account_op(), 0..60),
        payouts in prop::collection::vec(payout_record(), 0..4),
        lsn in any::<u64>(),
    ) {
        let (states, log) = build(&ops);
        for state in states.values() {
            prop_assert!(state.check_invariants().is_ok(), "{:?}", state.check_invariants());
        }

        // What recovery does: the logged events, applied to empty accounts.
        let mut replayed: BTreeMap<u64, AccountState> =
            ACCOUNTS.iter().map(|id| (*id, AccountState::new(*id))).collect();
        for (event, at) in &log {
            let (owner, receiver) = event.accounts().expect("an account event");
            for id in std::iter::once(owner).chain(receiver) {
                let state = replayed.get_mut(&id).expect("an account");
                let applied = state.apply(event, *at);
                prop_assert!(applied.is_ok(), "{:?}: {:?}", event, applied);
            }
        }
        prop_assert_eq!(&replayed, &states);

        let dir = tempfile::tempdir().expect("tempdir");
        let written = snapshot::write_full(dir.path(), lsn, states.values(), payouts.iter())
            .expect("the snapshot is written");
        prop_assert_eq!(written.lsn, lsn);
        let contents = snapshot::read_full(&written.path).expect("the snapshot is read");
        prop_assert_eq!(contents.lsn, lsn);
        prop_assert_eq!(&contents.accounts, &states.values().cloned().collect::<Vec<_>>());
        prop_assert_eq!(&contents.payouts, &payouts);
        let (read_lsn, accounts) = snapshot::read(&written.path).expect("the snapshot is read");
        prop_assert_eq!(read_lsn, lsn);
        prop_assert_eq!(accounts, contents.accounts);
        prop_assert_eq!(snapshot::list(dir.path()).expect("listed"), vec![written]);
    }
}
