//! The baseline: the same operations the engine got, applied by one thread
//! to a plain `HashMap` — no actors, no log, no `Decimal`, no batching, no
//! concurrency. It keeps the same rules as the engine (available and
//! locked balances, funds checked, withdrawals kept with their status and
//! moved only from pending), so the ratio shows what the engine's
//! machinery costs over the bare bookkeeping.
//!
//! The op list is built from the same streams (same seeds, same number of
//! batches per client) before the clock starts; only applying it is timed.
//! Clients are applied one after the other: the order across clients does
//! not matter because every account is funded far beyond what a run moves.
//! At the end the totals are checked against what the list adds up to, so
//! the work cannot be optimised away and a wrong baseline cannot pass.

use std::collections::HashMap;
use std::time::Instant;

use super::workload::{PlanOp, Stream, ACCOUNT_FIRST, FUNDING_UNITS};

/// One op with its withdrawal reference resolved to the baseline's own id.
#[derive(Clone, Copy)]
enum Step {
    Request { account: u64, units: i64 },
    Complete { id: u64, failed: bool },
    Deposit { account: u64, units: i64 },
    Transfer { from: u64, to: u64, units: i64 },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Completed,
    Failed,
}

struct Account {
    available: i128,
    locked: i128,
}

struct Withdrawal {
    account: u64,
    units: i128,
    status: Status,
}

pub struct BaselineReport {
    pub ops: u64,
    pub seconds: f64,
    /// Time spent drawing the streams and listing the steps (untimed for
    /// the baseline; the engine's clients draw inside their timed loop, so
    /// this shows what that costs them).
    pub generate_seconds: f64,
}

/// Replays each client's stream (`draws` batches with new ops, then the
/// outcomes owed) and times applying it all.
pub fn run(streams: Vec<(Stream, u64)>, accounts: u64) -> Result<BaselineReport, String> {
    let generating = Instant::now();
    let (steps, expected_total) = build(streams, accounts);
    let generate_seconds = generating.elapsed().as_secs_f64();
    let mut ledger = Ledger::funded(accounts);
    let started = Instant::now();
    for step in &steps {
        ledger.apply(*step)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    ledger.check(expected_total)?;
    Ok(BaselineReport {
        ops: steps.len() as u64,
        seconds,
        generate_seconds,
    })
}

/// The steps, and the total all balances must add up to after them.
fn build(streams: Vec<(Stream, u64)>, accounts: u64) -> (Vec<Step>, i128) {
    let mut steps = Vec::new();
    let mut total = i128::from(FUNDING_UNITS) * i128::from(accounts);
    // Withdrawal ids are given in request order, as `Ledger::apply` does.
    let mut next_id = 0u64;
    let mut batch = Vec::new();
    for (mut stream, draws) in streams {
        // Ids of the previous batch's requests start here.
        let mut previous_first = 0;
        for round in 0.. {
            stream.next_batch(round < draws, &mut batch);
            if batch.is_empty() {
                break;
            }
            let first = next_id;
            for op in &batch {
                steps.push(match *op {
                    PlanOp::Request { account, units, .. } => {
                        next_id += 1;
                        Step::Request { account, units }
                    }
                    PlanOp::Complete { request, failed } => Step::Complete {
                        id: previous_first + u64::from(request),
                        failed,
                    },
                    PlanOp::Deposit { account, units } => {
                        total += i128::from(units);
                        Step::Deposit { account, units }
                    }
                    PlanOp::Transfer { from, to, units } => Step::Transfer { from, to, units },
                });
            }
            previous_first = first;
        }
    }
    // Completed withdrawals leave the total; which amount each removes is
    // known only from its request, so subtract them in a second pass.
    let mut requested = Vec::with_capacity(next_id as usize);
    for step in &steps {
        match *step {
            Step::Request { units, .. } => requested.push(units),
            Step::Complete { id, failed: false } => {
                total -= requested.get(id as usize).map_or(0, |&u| i128::from(u));
            }
            _ => {}
        }
    }
    (steps, total)
}

/// The bookkeeping itself.
struct Ledger {
    accounts: HashMap<u64, Account>,
    withdrawals: HashMap<u64, Withdrawal>,
    next_id: u64,
}

impl Ledger {
    fn funded(accounts: u64) -> Self {
        let funding = i128::from(FUNDING_UNITS);
        Self {
            accounts: (ACCOUNT_FIRST..ACCOUNT_FIRST + accounts)
                .map(|id| {
                    let account = Account {
                        available: funding,
                        locked: 0,
                    };
                    (id, account)
                })
                .collect(),
            withdrawals: HashMap::new(),
            next_id: 0,
        }
    }

    fn account(&mut self, id: u64) -> Result<&mut Account, String> {
        self.accounts
            .get_mut(&id)
            .ok_or_else(|| format!("baseline: unknown account {id}"))
    }

    fn apply(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::Request { account, units } => {
                let units = i128::from(units);
                let balance = self.account(account)?;
                if balance.available < units {
                    return Err(format!("baseline: account {account} lacks funds"));
                }
                balance.available -= units;
                balance.locked += units;
                let id = self.next_id;
                self.next_id += 1;
                self.withdrawals.insert(
                    id,
                    Withdrawal {
                        account,
                        units,
                        status: Status::Pending,
                    },
                );
            }
            Step::Complete { id, failed } => {
                let withdrawal = self
                    .withdrawals
                    .get_mut(&id)
                    .filter(|w| w.status == Status::Pending)
                    .ok_or_else(|| format!("baseline: withdrawal {id} is not pending"))?;
                withdrawal.status = if failed {
                    Status::Failed
                } else {
                    Status::Completed
                };
                let (account, units) = (withdrawal.account, withdrawal.units);
                let balance = self.account(account)?;
                balance.locked -= units;
                if failed {
                    balance.available += units;
                }
            }
            Step::Deposit { account, units } => {
                let balance = self.account(account)?;
                balance.available = balance
                    .available
                    .checked_add(i128::from(units))
                    .ok_or_else(|| format!("baseline: account {account} overflows"))?;
            }
            Step::Transfer { from, to, units } => {
                let units = i128::from(units);
                let source = self.account(from)?;
                if source.available < units {
                    return Err(format!("baseline: account {from} lacks funds"));
                }
                source.available -= units;
                self.account(to)?.available += units;
            }
        }
        Ok(())
    }

    /// Every withdrawal settled, and the totals what the steps add up to.
    fn check(&self, expected_total: i128) -> Result<(), String> {
        let (total, locked) = self
            .accounts
            .values()
            .fold((0i128, 0i128), |(total, locked), a| {
                (total + a.available + a.locked, locked + a.locked)
            });
        let pending = self
            .withdrawals
            .values()
            .filter(|w| w.status == Status::Pending)
            .count();
        if total != expected_total || locked != 0 || pending != 0 {
            return Err(format!(
                "baseline: totals {total} (expected {expected_total}), locked {locked}, \
                 {pending} withdrawals still pending"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::workload::Workload;
    use super::*;

    #[test]
    fn replays_every_workload_and_checks_out() {
        for workload in [
            Workload::Withdrawals,
            Workload::Deposits,
            Workload::Transfers,
            Workload::Mixed,
        ] {
            let streams = (0..3)
                .map(|c| (Stream::new(workload, 9, c, 20, 16, Some(1_000)), u64::MAX))
                .collect();
            let report = run(streams, 20).expect("baseline");
            // A request drawn last passes a client's quota by one.
            assert!((3_000..=3_003).contains(&report.ops), "{workload:?}");
        }
    }

    #[test]
    fn stops_drawing_after_the_recorded_batches() {
        let stream = Stream::new(Workload::Withdrawals, 1, 0, 10, 8, None);
        let report = run(vec![(stream, 5)], 10).expect("baseline");
        // 4 + 4 × 4 new ops in 5 batches (the first holds half a batch),
        // then the last batch's 4 outcomes: 20 withdrawals, 40 ops.
        assert_eq!(report.ops, 40);
    }
}
