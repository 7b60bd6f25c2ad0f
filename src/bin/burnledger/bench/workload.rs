//! What the bench sends: the workloads and the deterministic stream of
//! batches each client task draws from.
//!
//! A [`Stream`] is a pure function of its seed and settings, so the
//! baseline replays exactly the operations the engine got, batch for batch,
//! without sharing anything with the engine run. Its new ops are one
//! sequence whatever the batch boundaries ([`Stream::draw`]), so the
//! open-loop run (`--rate`), whose batches depend on when answers come,
//! draws the same ops a closed-loop replay of the same quota does. Amounts
//! are integer minor units here; only the engine side turns them into
//! `Decimal`.

use clap::ValueEnum;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The first account id; accounts are `ACCOUNT_FIRST ..
/// ACCOUNT_FIRST + accounts`.
pub const ACCOUNT_FIRST: u64 = 1;

/// Every account's opening balance, in minor units (10,000,000,000.00).
/// Far more than any run withdraws or transfers away (each op moves at
/// most `AMOUNT_UNITS_MAX`), so a refusal for insufficient funds is a bug,
/// not bad luck, and the bench can treat every refusal as an error.
pub const FUNDING_UNITS: i64 = 1_000_000_000_000;

/// Largest amount of one deposit, withdrawal or transfer (100.00).
const AMOUNT_UNITS_MAX: i64 = 10_000;

/// One withdrawal in ten fails at the payment service, nine complete.
const FAILED_PERCENT: u32 = 10;

/// Decimals of the one currency the bench uses (USD, 2).
pub const DECIMALS: u32 = 2;

/// What the timed phase sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// The withdrawal lifecycle: request (lock), then complete (~90%) or
    /// fail (~10%) in the client's next batch. Two ops per withdrawal.
    Withdrawals,
    /// Deposits of small amounts to random accounts.
    Deposits,
    /// Transfers of small amounts between random distinct accounts.
    Transfers,
    /// Of all ops: 50% withdrawal lifecycle (request + outcome), 30%
    /// deposits, 20% transfers.
    Mixed,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Self::Withdrawals => "withdrawals",
            Self::Deposits => "deposits",
            Self::Transfers => "transfers",
            Self::Mixed => "mixed",
        }
    }

    /// Weights of (withdrawal request, deposit, transfer) among the new ops
    /// of a batch. Each request brings its outcome into the next batch, so
    /// for `mixed` 5:6:4 gives 10 of 20 ops lifecycle, 6 deposits, 4
    /// transfers: the 50/30/20 split above.
    fn weights(self) -> [u32; 3] {
        match self {
            Self::Withdrawals => [1, 0, 0],
            Self::Deposits => [0, 1, 0],
            Self::Transfers => [0, 0, 1],
            Self::Mixed => [5, 6, 4],
        }
    }
}

/// One operation in minor units, before it becomes an engine `Operation`
/// or a baseline step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanOp {
    /// A withdrawal request; `failed` says how its outcome will go.
    Request {
        account: u64,
        units: i64,
        failed: bool,
    },
    /// The outcome of the `request`-th request of the previous batch.
    Complete {
        request: u32,
        failed: bool,
    },
    Deposit {
        account: u64,
        units: i64,
    },
    Transfer {
        from: u64,
        to: u64,
        units: i64,
    },
}

/// One client task's batches. Each batch carries the outcomes of the
/// previous batch's requests first, then new ops up to the batch size, so
/// that batches stay full while every withdrawal is settled one round trip
/// after its request.
pub struct Stream {
    rng: SmallRng,
    weights: [u32; 3],
    accounts: u64,
    batch: usize,
    /// Ops not yet drawn (`u64::MAX` when the run is timed, not counted).
    quota: u64,
    /// Ops drawn so far (a request counts two).
    drawn: u64,
    /// Whether the previous batch's requests fail, in request order.
    owed: Vec<bool>,
    first: bool,
}

impl Stream {
    /// `quota`: ops this client sends, or `None` to draw until told to stop.
    pub fn new(
        workload: Workload,
        seed: u64,
        client: u64,
        accounts: u64,
        batch: usize,
        quota: Option<u64>,
    ) -> Self {
        Self {
            // Distinct, reproducible streams per client.
            rng: SmallRng::seed_from_u64(seed ^ client.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            weights: workload.weights(),
            accounts,
            batch,
            quota: quota.unwrap_or(u64::MAX),
            drawn: 0,
            owed: Vec::new(),
            first: true,
        }
    }

    /// Fills `out` with the next batch: the outcomes owed, then new ops if
    /// `draw_new` and the quota allows. An empty batch means the stream is
    /// done.
    pub fn next_batch(&mut self, draw_new: bool, out: &mut Vec<PlanOp>) {
        out.clear();
        let owed = std::mem::take(&mut self.owed);
        out.extend(
            owed.iter()
                .enumerate()
                .map(|(i, &failed)| PlanOp::Complete {
                    request: i as u32,
                    failed,
                }),
        );
        if !draw_new {
            return;
        }
        for _ in 0..self.room(out.len()) {
            let Some(op) = self.draw() else { break };
            if let PlanOp::Request { failed, .. } = op {
                self.owed.push(failed);
            }
            out.push(op);
        }
    }

    /// How many new ops the next batch, which carries `outcomes` outcomes,
    /// has room for.
    pub fn room(&mut self, outcomes: usize) -> usize {
        if std::mem::replace(&mut self.first, false) {
            // Start at the steady state, where a batch holds `r` outcomes
            // per new op (`r` = the request share): for `withdrawals` half
            // outcomes, half requests. Starting full would make the next
            // batch all outcomes, and the stream would alternate.
            let [w_request, w_deposit, w_transfer] = self.weights;
            let total = u64::from(w_request + w_deposit + w_transfer);
            let steady = self.batch as u64 * total / (total + u64::from(w_request));
            (steady as usize).max(1)
        } else {
            self.batch.saturating_sub(outcomes)
        }
    }

    /// The next new op, or `None` once the quota is used up. A request
    /// counts two ops against the quota when drawn (its outcome is certain
    /// to follow), so the total can pass the quota by 1. The sequence does
    /// not depend on how the ops are cut into batches.
    pub fn draw(&mut self) -> Option<PlanOp> {
        if self.quota == 0 {
            return None;
        }
        let [w_request, w_deposit, w_transfer] = self.weights;
        let roll = self.rng.random_range(0..w_request + w_deposit + w_transfer);
        let account = self.account();
        let units = self.rng.random_range(1..=AMOUNT_UNITS_MAX);
        let (op, count) = if roll < w_request {
            let failed = self.rng.random_ratio(FAILED_PERCENT, 100);
            let request = PlanOp::Request {
                account,
                units,
                failed,
            };
            (request, 2)
        } else if roll < w_request + w_deposit {
            (PlanOp::Deposit { account, units }, 1)
        } else {
            // Any other account, uniformly: never the source itself.
            let offset = self.rng.random_range(1..self.accounts);
            let to = ACCOUNT_FIRST + (account - ACCOUNT_FIRST + offset) % self.accounts;
            let transfer = PlanOp::Transfer {
                from: account,
                to,
                units,
            };
            (transfer, 1)
        };
        self.quota = self.quota.saturating_sub(count);
        self.drawn += count;
        Some(op)
    }

    /// Ops drawn so far, a request counting two: a closed-loop replay with
    /// this as its quota draws exactly the same new ops.
    pub fn drawn(&self) -> u64 {
        self.drawn
    }

    fn account(&mut self) -> u64 {
        ACCOUNT_FIRST + self.rng.random_range(0..self.accounts)
    }
}

/// Splits `total` ops over `clients` as evenly as possible.
pub fn share(total: u64, clients: u64, client: u64) -> u64 {
    total / clients + u64::from(client < total % clients)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(workload: Workload, quota: u64, batch: usize) -> Vec<Vec<PlanOp>> {
        let mut stream = Stream::new(workload, 7, 0, 100, batch, Some(quota));
        let mut batches = Vec::new();
        let mut out = Vec::new();
        loop {
            stream.next_batch(true, &mut out);
            if out.is_empty() {
                return batches;
            }
            batches.push(out.clone());
        }
    }

    #[test]
    fn withdrawals_settle_every_request_in_the_next_batch() {
        let batches = drain(Workload::Withdrawals, 10_000, 64);
        let ops: usize = batches.iter().map(Vec::len).sum();
        assert_eq!(ops, 10_000);
        let mut owed = 0;
        for batch in &batches {
            let outcomes = batch
                .iter()
                .filter(|op| matches!(op, PlanOp::Complete { .. }))
                .count();
            assert_eq!(outcomes, owed);
            assert!(batch.len() <= 64);
            owed = batch.len() - outcomes;
        }
        assert_eq!(owed, 0, "the last batch settles everything");
        // Full batches in the steady state: all but the first (half full),
        // the one where the quota runs out, and the last (outcomes only).
        assert_eq!(batches[0].len(), 32);
        assert!(batches[1..batches.len() - 2].iter().all(|b| b.len() == 64));
    }

    /// The open loop cuts the same draws into other batches; a replay with
    /// the ops drawn as its quota must see the very same new ops.
    #[test]
    fn new_ops_do_not_depend_on_the_batches() {
        for workload in [Workload::Withdrawals, Workload::Mixed] {
            let mut open = Stream::new(workload, 5, 0, 300, 64, Some(5_001));
            let drawn: Vec<_> = std::iter::from_fn(|| open.draw()).collect();
            assert!(open.drawn() >= 5_001 && open.drawn() <= 5_002);
            let mut replay = Stream::new(workload, 5, 0, 300, 17, Some(open.drawn()));
            let mut batch = Vec::new();
            let mut replayed = Vec::new();
            loop {
                replay.next_batch(true, &mut batch);
                if batch.is_empty() {
                    break;
                }
                let new = batch
                    .iter()
                    .filter(|op| !matches!(op, PlanOp::Complete { .. }));
                replayed.extend(new.copied());
            }
            assert_eq!(replayed, drawn, "{workload:?}");
            assert_eq!(replay.drawn(), open.drawn());
        }
    }

    #[test]
    fn streams_replay_and_stop_on_request() {
        let (mut a, mut b) = (
            Stream::new(Workload::Mixed, 1, 3, 50, 32, None),
            Stream::new(Workload::Mixed, 1, 3, 50, 32, None),
        );
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            a.next_batch(true, &mut x);
            b.next_batch(true, &mut y);
            assert_eq!(x, y);
        }
        a.next_batch(false, &mut x);
        assert!(x.iter().all(|op| matches!(op, PlanOp::Complete { .. })));
        a.next_batch(false, &mut x);
        assert!(x.is_empty());
    }

    #[test]
    fn mixed_is_half_lifecycle() {
        let batches = drain(Workload::Mixed, 200_000, 1_024);
        let all: Vec<_> = batches.concat();
        let count = |f: fn(&PlanOp) -> bool| all.iter().filter(|op| f(op)).count() as f64;
        let n = all.len() as f64;
        let lifecycle = count(|op| matches!(op, PlanOp::Request { .. } | PlanOp::Complete { .. }));
        let deposits = count(|op| matches!(op, PlanOp::Deposit { .. }));
        assert!((lifecycle / n - 0.5).abs() < 0.02, "{}", lifecycle / n);
        assert!((deposits / n - 0.3).abs() < 0.02, "{}", deposits / n);
    }

    #[test]
    fn transfers_never_go_to_the_source() {
        for op in drain(Workload::Transfers, 5_000, 100).concat() {
            let PlanOp::Transfer { from, to, .. } = op else {
                panic!("{op:?}")
            };
            assert_ne!(from, to);
            assert!((ACCOUNT_FIRST..ACCOUNT_FIRST + 100).contains(&to));
        }
    }
}
