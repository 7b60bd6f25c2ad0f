//! Tests of one account's rules and replay, through its public methods.

use super::*;
use crate::domain::money::usd;
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{TransitionAction, WithdrawalStatus};

/// The time these tests' events are stamped with, unless they say.
const T: UnixMs = UnixMs::from_millis(1_767_225_600_000);

/// An account with 100.00 USD and one pending withdrawal of 30.00;
/// also returns every event logged, to replay.
fn funded() -> (AccountState, TransactionId, Vec<Event>) {
    let mut account = AccountState::new(7);
    let mut log = Vec::new();
    log.extend(account.deposit(usd(), 10_000, None, T).unwrap().event);
    let requested = account
        .request_withdrawal(usd(), 3_000, None, 10, T)
        .unwrap();
    log.extend(requested.event);
    (account, requested.output.transaction_id, log)
}

fn replayed(log: &[Event]) -> AccountState {
    let mut account = AccountState::new(7);
    for event in log {
        account.apply(event, T).unwrap();
    }
    account
}

#[test]
fn cancel_after_payout_claim_is_rejected_and_changes_nothing() {
    let (mut account, tx, _) = funded();
    account.claim_withdrawal(tx, 1, T).unwrap();
    let before = account.clone();
    let refused = account.update_withdrawal(tx, TransitionAction::Cancel, "", T);
    assert!(matches!(
        refused,
        Err(LedgerError::InvalidTransition {
            from: crate::domain::withdrawal::StatusKind::Processing,
            action: TransitionAction::Cancel,
            ..
        })
    ));
    assert_eq!(account, before);
}

#[test]
fn only_the_owning_payout_settles_a_claimed_withdrawal_when_the_engine_pays() {
    use crate::domain::withdrawal::Settler;
    let caller = Settler::Caller { engine_pays: true };
    let (mut account, tx, _) = funded();
    // Pending: queued for the engine's payouts. A payout that did not
    // claim it cannot settle it, and neither can a caller (the bank has
    // not paid it; a payout still may); the host of an external-mode
    // ledger can (checked on a copy).
    let refused = account.update_withdrawal_by(
        tx,
        TransitionAction::Complete,
        "",
        Settler::Payout { payout_id: 5 },
        T,
    );
    assert!(matches!(
        refused,
        Err(LedgerError::InvalidTransition { .. })
    ));
    assert_eq!(
        account
            .update_withdrawal_by(tx, TransitionAction::Complete, "", caller, T)
            .unwrap_err(),
        LedgerError::PayoutInFlight {
            transaction_id: tx,
            payout_id: None
        }
    );
    let mut copy = account.clone();
    let host = Settler::Caller { engine_pays: false };
    assert!(copy
        .update_withdrawal_by(tx, TransitionAction::Complete, "", host, T)
        .is_ok());
    account.claim_withdrawal(tx, 5, T).unwrap();
    let before = account.clone();
    for action in [TransitionAction::Complete, TransitionAction::Fail] {
        let refused = account.update_withdrawal_by(tx, action, "x", caller, T);
        assert_eq!(
            refused.unwrap_err(),
            LedgerError::PayoutInFlight {
                transaction_id: tx,
                payout_id: Some(5)
            }
        );
        let other = Settler::Payout { payout_id: 6 };
        let refused = account.update_withdrawal_by(tx, action, "x", other, T);
        assert!(matches!(
            refused,
            Err(LedgerError::InvalidTransition { .. })
        ));
    }
    assert_eq!(account, before, "refusals change nothing");
    // The host pays (external mode): a caller settles it as before.
    let mut external = account.clone();
    let host = Settler::Caller { engine_pays: false };
    assert!(external
        .update_withdrawal_by(tx, TransitionAction::Fail, "x", host, T)
        .is_ok());
    // The owner settles it; repeating its outcome is a no-op.
    let owner = Settler::Payout { payout_id: 5 };
    let done = account
        .update_withdrawal_by(tx, TransitionAction::Complete, "", owner, T)
        .unwrap();
    assert!(done.event.is_some());
    let again = account
        .update_withdrawal_by(tx, TransitionAction::Complete, "", owner, T)
        .unwrap();
    assert!(again.event.is_none());
    let contradicted = account.update_withdrawal_by(tx, TransitionAction::Fail, "x", owner, T);
    assert!(matches!(
        contradicted,
        Err(LedgerError::InvalidTransition { .. })
    ));
}

#[test]
fn a_claimed_withdrawal_stays_locked_and_completes_or_fails_like_a_pending_one() {
    let (mut account, tx, mut log) = funded();
    let claimed = account.claim_withdrawal(tx, 42, T).unwrap();
    assert_eq!(claimed.output.payout_id, Some(42));
    log.extend(claimed.event);
    assert_eq!(account.balance(usd()).locked, 3_000);
    let done = account
        .update_withdrawal(tx, TransitionAction::Complete, "", T)
        .unwrap();
    log.extend(done.event);
    let b = account.balance(usd());
    assert_eq!((b.available, b.locked, b.burned), (7_000, 0, 3_000));
    account.check_invariants().unwrap();
    assert_eq!(replayed(&log), account);
}

#[test]
fn a_released_claim_is_pending_again_and_can_be_cancelled() {
    let (mut account, tx, mut log) = funded();
    log.extend(account.claim_withdrawal(tx, 1, T).unwrap().event);
    assert!(account.claim_withdrawal(tx, 2, T).is_err(), "claimed twice");
    log.extend(
        account
            .update_withdrawal(tx, TransitionAction::Release, "", T)
            .unwrap()
            .event,
    );
    log.extend(
        account
            .update_withdrawal(tx, TransitionAction::Cancel, "", T)
            .unwrap()
            .event,
    );
    assert_eq!(account.balance(usd()).available, 10_000);
    account.check_invariants().unwrap();
    assert_eq!(replayed(&log), account);
}

#[test]
fn a_returned_withdrawal_credits_available_back_and_keeps_the_totals_exact() {
    let (mut account, tx, mut log) = funded();
    log.extend(
        account
            .update_withdrawal(tx, TransitionAction::Complete, "", T)
            .unwrap()
            .event,
    );
    assert!(account
        .update_withdrawal(tx, TransitionAction::Fail, "x", T)
        .is_err());
    let returned = account
        .update_withdrawal(tx, TransitionAction::Return, "account closed", T)
        .unwrap();
    log.extend(returned.event);
    assert_eq!(
        returned.output.status,
        WithdrawalStatus::Returned {
            reason: "account closed".into()
        }
    );
    let b = account.balance(usd());
    assert_eq!((b.available, b.locked), (10_000, 0));
    // total = deposited − burned: 100 = (100 + 30 returned) − 30 paid.
    assert_eq!(b.total(), b.deposited - b.burned);
    let again = account
        .update_withdrawal(tx, TransitionAction::Return, "account closed", T)
        .unwrap();
    assert!(again.event.is_none(), "a repeated return changes nothing");
    assert_eq!(replayed(&log), account);
}
#[test]
fn withdrawals_logged_out_of_order_are_still_found() {
    let mut account = AccountState::new(7);
    account
        .apply(
            &Event::Deposited {
                tx: TransactionId::new(7, 1),
                currency: usd(),
                amount: 10_000,
                key: None,
                metadata: None,
            },
            T,
        )
        .unwrap();
    for seq in [9, 4, 6, 2] {
        account
            .apply(
                &Event::WithdrawalRequested {
                    tx: TransactionId::new(7, seq),
                    currency: usd(),
                    amount: seq.into(),
                    key: None,
                    details: None,
                },
                T,
            )
            .unwrap();
    }
    let seqs: Vec<u64> = account.withdrawals().map(|(tx, _)| tx.sequence()).collect();
    assert_eq!(seqs, [2, 4, 6, 9]);
    for seq in [2, 4, 6, 9] {
        let tx = TransactionId::new(7, seq);
        assert_eq!(
            account.withdrawal(tx).unwrap().status,
            WithdrawalStatus::Pending
        );
        account
            .apply(
                &Event::WithdrawalCompleted {
                    tx,
                    fee: None,
                    paid: None,
                },
                T,
            )
            .unwrap();
    }
    let again = Event::WithdrawalRequested {
        tx: TransactionId::new(7, 4),
        currency: usd(),
        amount: 1,
        key: None,
        details: None,
    };
    assert!(
        account.apply(&again, T).is_err(),
        "a withdrawal id is used once"
    );
    assert!(account.withdrawal(TransactionId::new(7, 5)).is_err());
    account.check_invariants().unwrap();
    assert_eq!(account.balance(usd()).burned, 21);
}

#[test]
fn a_log_that_cancels_a_claimed_withdrawal_is_refused_on_replay() {
    let (_, tx, mut log) = funded();
    log.push(Event::WithdrawalClaimed { tx, payout_id: 1 });
    log.push(Event::WithdrawalCancelled { tx });
    let mut account = AccountState::new(7);
    let results: Vec<_> = log.iter().map(|e| account.apply(e, T)).collect();
    assert!(results[..3].iter().all(Result::is_ok));
    assert!(results[3].is_err());
}

// ---- invariants: corrupted states are caught ----

fn eur() -> Currency {
    Currency {
        code: CurrencyCode::new("EUR").unwrap(),
        decimals: 2,
    }
}

/// `funded()` with its USD balance edited by `edit`.
fn corrupted(edit: impl FnOnce(&mut BalanceEntry)) -> (AccountState, TransactionId) {
    let (account, tx, _) = funded();
    (account.corrupted(usd(), edit), tx)
}

/// A way to corrupt a balance.
type Corruption = fn(&mut BalanceEntry);

/// Each way a balance can be corrupted, named.
fn corruptions() -> Vec<(&'static str, Corruption)> {
    vec![
        ("negative available", |b| b.available = -1_000_000),
        ("negative locked", |b| {
            b.locked = -10_000;
            b.withdrawals_locked = -10_000;
        }),
        ("negative held", |b| b.held = -1_000_000),
        ("above the ceiling", |b| {
            b.available = BALANCE_UNITS_MAX + 1_000_000
        }),
        ("locked off its withdrawals", |b| {
            b.locked += 1;
            b.available -= 1;
        }),
        ("kept sum off", |b| b.withdrawals_locked += 1),
    ]
}

#[test]
fn check_invariants_finds_every_corruption() {
    let (account, _, _) = funded();
    account.check_invariants().unwrap();
    for (what, edit) in corruptions() {
        let (account, _) = corrupted(edit);
        assert!(account.check_invariants().is_err(), "{what}");
    }
    let miscounted = funded().0.with_locking_count(2);
    assert!(miscounted.check_invariants().is_err());
}

/// Every command that can change `account`'s USD balance, each on a copy:
/// its name, its result and the copy afterwards.
fn every_change(
    account: &AccountState,
    tx: TransactionId,
) -> Vec<(&'static str, Result<(), LedgerError>, AccountState)> {
    type Change = fn(&mut AccountState, TransactionId) -> Result<(), LedgerError>;
    let changes: [(&str, Change); 7] = [
        ("deposit", |a, _| a.deposit(usd(), 1, None, T).map(drop)),
        ("request", |a, _| {
            a.request_withdrawal(usd(), 1, None, 10, T).map(drop)
        }),
        ("cancel", |a, tx| {
            a.update_withdrawal(tx, TransitionAction::Cancel, "", T)
                .map(drop)
        }),
        ("complete", |a, tx| {
            a.update_withdrawal(tx, TransitionAction::Complete, "", T)
                .map(drop)
        }),
        ("claim", |a, tx| a.claim_withdrawal(tx, 1, T).map(drop)),
        ("hold", |a, _| a.hold_transfer(8, usd(), 1, None).map(drop)),
        ("receive", |a, _| {
            a.receive_transfer(TransactionId::new(8, 1), usd(), 1, None, T)
                .map(drop)
        }),
    ];
    changes
        .into_iter()
        .map(|(what, change)| {
            let mut copy = account.clone();
            let result = change(&mut copy, tx);
            (what, result, copy)
        })
        .collect()
}

#[test]
fn a_change_to_a_corrupted_balance_is_an_internal_error() {
    for (corruption, edit) in corruptions() {
        let (account, tx) = corrupted(edit);
        let mut internal = 0;
        for (what, result, after) in every_change(&account, tx) {
            match result {
                Err(LedgerError::Internal { .. }) => internal += 1,
                // A rule refused it first: then nothing changed.
                Err(_) => assert_eq!(after, account, "{corruption}, {what}"),
                Ok(()) => panic!("{corruption}, {what}: a change to a broken balance succeeded"),
            }
        }
        assert!(internal > 0, "{corruption}: no change was checked");
        let replayed = account.clone().apply(
            &Event::Deposited {
                tx: TransactionId::new(7, 9),
                currency: usd(),
                amount: 1,
                key: None,
                metadata: None,
            },
            T,
        );
        assert!(replayed.is_err(), "{corruption}: replay");
    }
}

#[test]
fn a_healthy_account_takes_every_change() {
    let (account, tx, _) = funded();
    for (what, result, after) in every_change(&account, tx) {
        assert!(result.is_ok(), "{what}: {result:?}");
        if what != "hold" {
            after.check_invariants().unwrap();
        }
    }
}

#[test]
fn only_the_touched_balance_is_checked_after_a_change() {
    // The USD balance is broken; a deposit in EUR touches only EUR, so it
    // passes its check (the cost is the change's, not the account's),
    // while the account's full check still finds USD broken.
    let (mut account, _) = corrupted(|b| b.locked += 1);
    account.deposit(eur(), 1, None, T).unwrap();
    assert!(account.check_invariants().is_err());
}

#[test]
fn a_released_transfer_is_checked_too() {
    let (account, _, _) = funded();
    let mut account = account.clone();
    let TransferHold::Held(tx) = account.hold_transfer(8, usd(), 100, None).unwrap() else {
        panic!("no key: nothing to replay");
    };
    let mut broken = account.clone().corrupted(usd(), |b| b.locked += 1);
    assert!(matches!(
        broken.finish_transfer(tx, None),
        Err(LedgerError::Internal { .. })
    ));
    account.finish_transfer(tx, None).unwrap();
    account.check_invariants().unwrap();
}

#[test]
fn an_account_read_back_rebuilds_what_its_withdrawals_lock() {
    let config = bincode::config::standard();
    let (mut account, tx, _) = funded();
    account.claim_withdrawal(tx, 3, T).unwrap();
    account.request_withdrawal(usd(), 500, None, 10, T).unwrap();
    let done = account.request_withdrawal(usd(), 200, None, 10, T).unwrap();
    let done = done.output.transaction_id;
    account
        .update_withdrawal(done, TransitionAction::Complete, "", T)
        .unwrap();
    account.deposit(eur(), 100, None, T).unwrap();
    // The account's own encoding leaves the withdrawals' times and the
    // account's controls to the snapshot's sections beside it (tested in
    // storage/snapshot.rs): here the times are unknown, as after reading a
    // v3 snapshot, and the controls are put back as a v7 snapshot's reader
    // does.
    let unknown = (UnixMs::UNKNOWN, UnixMs::UNKNOWN);
    account.restore_withdrawal_times(&[unknown; 3]).unwrap();
    let bytes = bincode::serde::encode_to_vec(&account, config).unwrap();
    let (mut read, _): (AccountState, _) =
        bincode::serde::decode_from_slice(&bytes, config).unwrap();
    read.restore_controls(account.controls().cloned());
    assert_eq!(read, account, "the kept sums included");
    assert_eq!(read.balance(usd()).withdrawals_locked, 3_500);
    read.check_invariants().unwrap();
    // A stored account whose locked disagrees with its withdrawals reads
    // back with the sums its withdrawals give, so the full check (which a
    // snapshot's reader runs) finds it.
    let broken = account.corrupted(usd(), |b| b.locked += 1);
    let bytes = bincode::serde::encode_to_vec(&broken, config).unwrap();
    let (read, _): (AccountState, _) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert!(read.check_invariants().is_err());
}

#[test]
fn a_withdrawal_is_created_and_updated_at_its_events_times_live_and_in_replay() {
    let at = |ms: u64| UnixMs::from_millis(1_767_225_600_000 + ms);
    let mut account = AccountState::new(7);
    let mut log = Vec::new();
    let deposited = account.deposit(usd(), 10_000, None, at(0)).unwrap();
    log.push((deposited.event.unwrap(), at(0)));
    let key = IdempotencyKey::new("w").ok();
    let requested = account
        .request_withdrawal(usd(), 3_000, key.clone(), 10, at(5))
        .unwrap();
    let tx = requested.output.transaction_id;
    log.push((requested.event.unwrap(), at(5)));
    assert_eq!(requested.output.created_at, Some(at(5)));
    assert_eq!(requested.output.updated_at, Some(at(5)));
    let claimed = account.claim_withdrawal(tx, 1, at(70)).unwrap();
    log.push((claimed.event.unwrap(), at(70)));
    assert_eq!(
        (claimed.output.created_at, claimed.output.updated_at),
        (Some(at(5)), Some(at(70)))
    );
    // A repeat changes nothing, so it moves no time either.
    let by = crate::domain::withdrawal::Settler::Payout { payout_id: 1 };
    let done = account.update_withdrawal_by(tx, TransitionAction::Complete, "", by, at(900));
    log.push((done.unwrap().event.unwrap(), at(900)));
    let again = account.update_withdrawal_by(tx, TransitionAction::Complete, "", by, at(999));
    assert!(again.as_ref().unwrap().event.is_none());
    assert_eq!(again.unwrap().output.updated_at, Some(at(900)));
    // The key's replay answers the first result, created and updated when
    // it was created, not now.
    let replay = account
        .request_withdrawal(usd(), 3_000, key, 10, at(5_000))
        .unwrap();
    assert_eq!(
        (replay.output.created_at, replay.output.updated_at),
        (Some(at(5)), Some(at(5)))
    );
    let mut rebuilt = AccountState::new(7);
    for (event, at) in &log {
        rebuilt.apply(event, *at).unwrap();
    }
    assert_eq!(rebuilt, account);
    assert_eq!(rebuilt.withdrawal(tx).unwrap().updated_at, Some(at(900)));
    // Replayed at other times, the same events make another state: the
    // times are part of it.
    let mut elsewhen = AccountState::new(7);
    for (event, _) in &log {
        elsewhen.apply(event, at(1)).unwrap();
    }
    assert_ne!(elsewhen, account);
}

#[test]
fn withdrawal_times_are_restored_only_one_pair_per_withdrawal() {
    let (mut account, tx, _) = funded();
    let before = account.clone();
    let pair = (UnixMs::from_millis(1), UnixMs::from_millis(2));
    assert!(account.restore_withdrawal_times(&[]).is_err());
    assert!(account.restore_withdrawal_times(&[pair, pair]).is_err());
    assert_eq!(account, before, "a refusal changes nothing");
    account.restore_withdrawal_times(&[pair]).unwrap();
    let restored = account.withdrawal(tx).unwrap();
    assert_eq!(
        (restored.created_at, restored.updated_at),
        (Some(pair.0), Some(pair.1))
    );
}

#[test]
fn a_withdrawal_updated_before_it_was_created_breaks_an_invariant() {
    let (mut account, _, _) = funded();
    assert!(account.check_invariants().is_ok());
    let at = UnixMs::from_millis;
    account.restore_withdrawal_times(&[(at(5), at(4))]).unwrap();
    let broken = account.check_invariants().unwrap_err();
    assert!(broken.contains("updated at"), "{broken}");
    account.restore_withdrawal_times(&[(at(5), at(5))]).unwrap();
    assert!(account.check_invariants().is_ok());
}

/// The clock the forgetting tests stamp with: `at(n)` is `n` ms after T.
fn at(ms: u64) -> UnixMs {
    UnixMs::from_millis(T.as_millis() + ms)
}

/// An account with 100.00 USD and one withdrawal in each state, each last
/// changed at its own time: pending (t+1), processing (t+2), completed
/// (t+3), failed (t+4), cancelled (t+5), returned (t+6); and one more,
/// cancelled at T. Answers the first six ids in that order.
fn one_of_each() -> (AccountState, [TransactionId; 6]) {
    let mut account = AccountState::new(7);
    account.deposit(usd(), 10_000, None, T).unwrap();
    let mut request = |amount| {
        let effect = account.request_withdrawal(usd(), amount, None, 10, T);
        effect.unwrap().output.transaction_id
    };
    let ids = [100, 200, 300, 400, 500, 600].map(&mut request);
    let [early, processing, completed, failed, cancelled, returned] = ids;
    let update = |account: &mut AccountState, tx, action, time| {
        account.update_withdrawal(tx, action, "no", time).unwrap();
    };
    update(&mut account, early, TransitionAction::Cancel, T);
    account.claim_withdrawal(processing, 9, at(2)).unwrap();
    update(&mut account, completed, TransitionAction::Complete, at(3));
    update(&mut account, failed, TransitionAction::Fail, at(4));
    update(&mut account, cancelled, TransitionAction::Cancel, at(5));
    update(&mut account, returned, TransitionAction::Complete, at(6));
    update(&mut account, returned, TransitionAction::Return, at(6));
    let pending = account
        .request_withdrawal(usd(), 700, None, 10, at(1))
        .unwrap()
        .output
        .transaction_id;
    (
        account,
        [pending, processing, completed, failed, cancelled, returned],
    )
}

#[test]
fn forgetting_drops_only_finished_withdrawals_before_the_horizon_and_keeps_every_balance() {
    let (mut account, [pending, processing, completed, failed, cancelled, returned]) =
        one_of_each();
    let balances = account.balances().to_vec();
    // Nothing finished before t+4 but the completed one (t+3) and the
    // one cancelled at T.
    assert_eq!(account.forget_finished(at(4)), 2);
    assert!(account.withdrawal(completed).is_err());
    assert!(account.withdrawal(failed).is_ok(), "changed at t+4: kept");
    // Far past everything: every finished one goes, pending and
    // processing never.
    assert_eq!(account.forget_finished(UnixMs::MAX), 3);
    for gone in [completed, failed, cancelled, returned] {
        assert_eq!(account.remember(gone), Remembered::Forgotten, "{gone}");
    }
    let held: Vec<_> = account.withdrawals().map(|(tx, _)| tx).collect();
    assert_eq!(held, [processing, pending]);
    assert_eq!(account.balances(), &balances[..], "balances unchanged");
    account.check_invariants().unwrap();
    let audit = crate::domain::audit::audit([&account]);
    assert!(audit.violations.is_empty(), "{:?}", audit.violations);
    assert_eq!(account.forget_finished(UnixMs::MAX), 0);
}

#[test]
fn a_withdrawal_of_unknown_time_is_never_forgotten() {
    let (mut account, tx, _) = funded();
    account
        .update_withdrawal(tx, TransitionAction::Complete, "", UnixMs::UNKNOWN)
        .unwrap();
    let mut unknown = account.clone();
    // As a v3 snapshot reads back: times unknown.
    unknown
        .restore_withdrawal_times(&[(UnixMs::UNKNOWN, UnixMs::UNKNOWN)])
        .unwrap();
    assert_eq!(unknown.forget_finished(UnixMs::MAX), 0);
    assert!(unknown.withdrawal(tx).is_ok());
}

#[test]
fn a_forgotten_id_is_told_apart_from_one_never_made() {
    let (mut account, [_, _, completed, ..]) = one_of_each();
    let next = TransactionId::new(7, completed.sequence() + 100);
    let elsewhere = TransactionId::new(8, completed.sequence());
    assert!(matches!(account.remember(completed), Remembered::Held(_)));
    account.forget_finished(UnixMs::MAX);
    assert_eq!(account.remember(completed), Remembered::Forgotten);
    assert_eq!(account.remember(next), Remembered::NeverMade);
    assert_eq!(account.remember(elsewhere), Remembered::NeverMade);
    assert_eq!(
        account.remember(TransactionId::new(7, 0)),
        Remembered::NeverMade
    );
}

#[test]
fn a_restored_withdrawal_answers_every_command_as_before_it_was_forgotten() {
    let (account, [_, _, completed, failed, cancelled, returned]) = one_of_each();
    let commands = [
        (completed, TransitionAction::Complete),
        (completed, TransitionAction::Return),
        (completed, TransitionAction::Cancel),
        (failed, TransitionAction::Fail),
        (failed, TransitionAction::Complete),
        (cancelled, TransitionAction::Cancel),
        (returned, TransitionAction::Return),
    ];
    for (tx, action) in commands {
        let mut kept = account.clone();
        let expected = kept.update_withdrawal(tx, action, "back", at(9));
        let mut forgetful = account.clone();
        let record = forgetful.withdrawal_record_of(tx).unwrap().clone();
        forgetful.forget_finished(UnixMs::MAX);
        assert!(forgetful
            .update_withdrawal(tx, action, "back", at(9))
            .is_err());
        assert_eq!(forgetful.restore_forgotten(tx, record.clone()), Ok(true));
        assert_eq!(forgetful.restore_forgotten(tx, record), Ok(false));
        let answered = forgetful.update_withdrawal(tx, action, "back", at(9));
        assert_eq!(
            answered.map(|e| (e.output, e.event)).map_err(|e| e.code()),
            expected.map(|e| (e.output, e.event)).map_err(|e| e.code()),
            "{tx} {action}"
        );
        forgetful.check_invariants().unwrap();
        assert_eq!(forgetful.balances(), kept.balances(), "{tx} {action}");
    }
}

#[test]
fn a_keyed_request_names_its_forgotten_withdrawal_and_replays_the_first_result() {
    let mut account = AccountState::new(7);
    account.deposit(usd(), 10_000, None, T).unwrap();
    let key = IdempotencyKey::new("w-1").unwrap();
    let first = account
        .request_withdrawal(usd(), 500, Some(key.clone()), 10, at(1))
        .unwrap()
        .output;
    let tx = first.transaction_id;
    account
        .update_withdrawal(tx, TransitionAction::Complete, "", at(2))
        .unwrap();
    assert_eq!(account.forgotten_by_key(&key), None, "still in memory");
    let record = account.withdrawal_record_of(tx).unwrap().clone();
    account.forget_finished(UnixMs::MAX);
    assert_eq!(account.forgotten_by_key(&key), Some(tx));
    assert_eq!(account.restore_forgotten(tx, record), Ok(true));
    let replay = account
        .request_withdrawal(usd(), 500, Some(key), 10, at(3))
        .unwrap();
    assert_eq!((replay.output, replay.event), (first, None));
}

#[test]
fn restoring_refuses_a_locking_record_and_an_id_never_made() {
    let (mut account, [pending, _, completed, ..]) = one_of_each();
    let locking = account.withdrawal_record_of(pending).unwrap().clone();
    let finished = account.withdrawal_record_of(completed).unwrap().clone();
    account.forget_finished(UnixMs::MAX);
    let before = account.clone();
    assert!(account.restore_forgotten(completed, locking).is_err());
    let never = TransactionId::new(7, 999);
    assert!(account.restore_forgotten(never, finished).is_err());
    assert_eq!(account, before, "a refusal changes nothing");
}

#[test]
fn replay_takes_a_forgotten_withdrawal_back_for_its_return_as_the_return_found_it() {
    let (account, [_, _, completed, failed, ..]) = one_of_each();
    let return_of = |tx| Event::WithdrawalReturned {
        tx,
        reason: "bank".into(),
    };
    // The live side: returned after forgetting and taking it back.
    let mut live = account.clone();
    let kept = live.withdrawal_record_of(completed).unwrap().clone();
    let effect = live
        .update_withdrawal(completed, TransitionAction::Return, "bank", at(9))
        .unwrap();
    let event = effect.event.unwrap();
    let in_history = live.withdrawal_record_of(completed).unwrap().clone();
    // The copy forgot it: the return cannot apply as is.
    let mut copy = account.clone();
    copy.forget_finished(UnixMs::MAX);
    assert_eq!(copy.forgotten_for(&event), Some(completed));
    assert!(copy.clone().apply(&event, at(9)).is_err());
    // Whether the history holds it completed or already returned, the
    // copy ends where the live state is.
    for record in [kept.clone(), in_history] {
        let mut copy = copy.clone();
        assert_eq!(copy.restore_for_replay(&event, record), Ok(true));
        copy.apply(&event, at(9)).unwrap();
        assert_eq!(copy.balances(), live.balances());
        assert_eq!(
            copy.withdrawal(completed).unwrap(),
            live.withdrawal(completed).unwrap()
        );
        copy.check_invariants().unwrap();
    }
    // Nothing to take back: in memory, or not a return.
    assert_eq!(account.forgotten_for(&event), None);
    let failed_record = account.withdrawal_record_of(failed).unwrap().clone();
    assert_eq!(
        copy.forgotten_for(&Event::WithdrawalCompleted {
            tx: failed,
            fee: None,
            paid: None,
        }),
        None
    );
    // A return cannot follow a failed withdrawal: refused, nothing changes.
    let before = copy.clone();
    assert!(copy
        .restore_for_replay(&return_of(failed), failed_record)
        .is_err());
    assert_eq!(copy, before);
}

/// The fee account's live credit ([`AccountState::collect_fee`]) leaves it
/// as replaying the completion's event does; a fee for another account, or
/// one from the account itself, is refused and changes nothing.
#[test]
fn a_collected_fee_credits_the_fee_account_as_replaying_its_completion_does() {
    use crate::domain::details::FeeCollected;
    let tx = TransactionId::new(7, 3);
    let fee = FeeCollected {
        to: 99,
        currency: usd(),
        amount: 125,
    };
    let mut live = AccountState::new(99);
    live.collect_fee(tx, &fee).unwrap();
    let mut replayed = AccountState::new(99);
    let completion = Event::WithdrawalCompleted {
        tx,
        paid: None,
        fee: Some(fee),
    };
    replayed.apply(&completion, T).unwrap();
    assert_eq!(live.balance(usd()), replayed.balance(usd()));
    assert_eq!(live.balance(usd()).available, 125);

    let before = live.clone();
    let elsewhere = FeeCollected { to: 98, ..fee };
    assert!(live.collect_fee(tx, &elsewhere).is_err());
    assert!(live.collect_fee(TransactionId::new(99, 1), &fee).is_err());
    assert_eq!(live, before);
}
