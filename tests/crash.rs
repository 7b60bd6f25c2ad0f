//! Crash test: a process running a busy ledger is killed with SIGKILL, the
//! data folder is reopened, and the test proves that
//!
//! - every acknowledged operation survived,
//! - nothing unacknowledged is half-applied (each operation that was in
//!   flight at the kill is either wholly there or wholly absent),
//! - a rejected operation left no trace, and
//! - the invariants hold,
//!
//! over several rounds that keep accumulating state in the same folder.
//!
//! ## How
//! The parent test ([`acknowledged_operations_survive_sigkill`]) re-executes
//! this very test binary as a child process running only [`crash_child`],
//! with the data folder in `BURNLEDGER_CRASH_CHILD`. Without that variable
//! `crash_child` does nothing, so a plain `cargo test` runs it as a no-op.
//!
//! The child opens the ledger and runs [`TASKS`] concurrent tasks doing
//! deposits, withdrawal requests, completes/fails/cancels of pending
//! withdrawals (its own, and those earlier rounds left pending) and
//! transfers among [`ACCOUNTS`] accounts, forever: mostly one at a time
//! through the dedicated methods, now and then a batch through `submit`.
//! Before submitting an operation it prints (and flushes) a `SENT` line with
//! every parameter; after the answer it prints `ACK` (with the transaction
//! id) or `ERR` (with the error code). Every deposit, withdrawal request and
//! transfer carries a unique idempotency key (its operation id).
//!
//! The parent waits a random 50–400 ms after the first `ACK`, kills the
//! child, reopens the folder and rebuilds the expected state from the lines:
//!
//! - `ACK`ed operations are applied to a model that spans all rounds;
//! - `ERR`ed ones must have left no trace;
//! - those `SENT` without an answer (one per task, or one batch) were in
//!   flight at the kill: each may or may not have been applied. Which is
//!   found out exactly, and without side effects, through the public API:
//!   the op's key is *probed* with an operation of another kind and an
//!   amount no account can cover, which answers `idempotency_conflict` if
//!   and only if the key was used, and is refused (changing nothing)
//!   otherwise. Complete, fail and cancel show in the withdrawal's status.
//!   Before that, as a coarse first check, each recovered total must lie
//!   within the acknowledged total plus or minus what was in flight there.
//!
//! The recovered state must then equal the model exactly: every balance
//! (available, locked, total) of every account and currency, and the set of
//! withdrawals with their statuses (every withdrawal as looked up by id,
//! whether memory holds it or forgot it to the history store). Replaying every acknowledged key with its
//! parameters must return the acknowledged transaction id and change
//! nothing, and `audit()` must be clean.

#[path = "common/observed.rs"]
mod observed;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burnledger::AccountExport;
use burnledger::{
    Config, CurrencyCode, Decimal, IdempotencyKey, Ledger, LedgerError, Operation, Outcome,
    TransactionId, WithdrawalOutcome, WithdrawalStatus,
};

/// Set (to the data folder) only in the child process.
const CHILD_ENV: &str = "BURNLEDGER_CRASH_CHILD";
/// The round number, so the child's operation ids and keys never repeat.
const ROUND_ENV: &str = "BURNLEDGER_CRASH_ROUND";
/// The test the child process runs.
const CHILD_TEST: &str = "crash_child";
/// Every line of the protocol starts with this (libtest may print its own
/// `test crash_child ... ` in front of the first one).
const TAG: &str = "CRASHLOG ";

/// Rounds by default; `BURNLEDGER_CRASH_ROUNDS` overrides it (and
/// `BURNLEDGER_CRASH_SEED` the seed of the kill times) for longer hunts.
const ROUNDS: u64 = 8;
const SEED: u64 = 0xC0FF_EE00;
const TASKS: u64 = 8;
/// Accounts 1..=ACCOUNTS.
const ACCOUNTS: u64 = 50;
const CURRENCIES: [(&str, u32); 2] = [("USD", 2), ("BTC", 8)];
/// More than any account ever holds in this test, less than the per
/// operation maximum: a withdrawal or transfer of it is always refused.
const PROBE_AMOUNT: i64 = 1_000_000_000;
/// The most ops a task sends in one `submit` (it mostly sends one at a
/// time through the dedicated methods).
const BATCH_OPS_MAX: u64 = 16;
/// A child that has printed no `ACK` by then is broken.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// The child stops on its own after this, should the parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(120);
/// The most operations one `submit` of the checks carries (the test
/// configuration accepts 1,024).
const CHECK_BATCH: usize = 512;

/// The tests' configuration, durable in `dir`. It has no payment service, so
/// the ledger makes no payouts of its own: every withdrawal outcome is one
/// this test reported.
fn config(dir: &Path) -> Config {
    Config {
        // Withdrawals left pending accumulate across rounds.
        account_pending_withdrawals_max: 1_000,
        ..Config::for_tests_in(dir)
    }
}

fn decimals(currency: &str) -> u32 {
    CURRENCIES
        .iter()
        .find(|(code, _)| *code == currency)
        .map(|(_, d)| *d)
        .unwrap()
}

fn code(currency: &str) -> CurrencyCode {
    CurrencyCode::new(currency).unwrap()
}

fn key(op_id: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::new(op_id).unwrap())
}

/// A tiny deterministic generator (xorshift64*): the only randomness is in
/// what the child does and when it is killed, never in what is asserted.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// In `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
}

// ---------------------------------------------------------------------------
// The operations and the line protocol.
// ---------------------------------------------------------------------------

/// An operation as the child sends it. Deposits, withdrawal requests and
/// transfers use their operation id as idempotency key; a failure's reason
/// is its operation id too.
#[derive(Clone, Debug, PartialEq)]
enum Op {
    Deposit {
        account: u64,
        currency: String,
        amount: Decimal,
    },
    Withdraw {
        account: u64,
        currency: String,
        amount: Decimal,
    },
    Complete {
        tx: TransactionId,
    },
    Fail {
        tx: TransactionId,
    },
    Cancel {
        tx: TransactionId,
    },
    Transfer {
        from: u64,
        to: u64,
        currency: String,
        amount: Decimal,
    },
}

impl Op {
    /// How the op is written after `SENT <op id> `.
    fn to_line(&self) -> String {
        match self {
            Op::Deposit {
                account,
                currency,
                amount,
            } => format!("deposit {account} {currency} {amount}"),
            Op::Withdraw {
                account,
                currency,
                amount,
            } => format!("withdraw {account} {currency} {amount}"),
            Op::Complete { tx } => format!("complete {tx}"),
            Op::Fail { tx } => format!("fail {tx}"),
            Op::Cancel { tx } => format!("cancel {tx}"),
            Op::Transfer {
                from,
                to,
                currency,
                amount,
            } => format!("transfer {from} {to} {currency} {amount}"),
        }
    }

    fn parse(words: &[&str]) -> Option<Op> {
        let account = |s: &str| s.parse::<u64>().ok();
        let amount = |s: &str| Decimal::from_str(s).ok();
        let tx = |s: &str| s.parse::<TransactionId>().ok();
        Some(match words {
            ["deposit", a, c, m] => Op::Deposit {
                account: account(a)?,
                currency: c.to_string(),
                amount: amount(m)?,
            },
            ["withdraw", a, c, m] => Op::Withdraw {
                account: account(a)?,
                currency: c.to_string(),
                amount: amount(m)?,
            },
            ["complete", t] => Op::Complete { tx: tx(t)? },
            ["fail", t] => Op::Fail { tx: tx(t)? },
            ["cancel", t] => Op::Cancel { tx: tx(t)? },
            ["transfer", f, t, c, m] => Op::Transfer {
                from: account(f)?,
                to: account(t)?,
                currency: c.to_string(),
                amount: amount(m)?,
            },
            _ => return None,
        })
    }

    /// The operation itself, as a batch entry; `op_id` is its key (or, for
    /// a failure, its reason).
    fn operation(&self, op_id: &str) -> Operation {
        match self.clone() {
            Op::Deposit {
                account,
                currency,
                amount,
            } => Operation::Deposit {
                account,
                currency: code(&currency),
                amount,
                idempotency_key: key(op_id),
                metadata: Default::default(),
            },
            Op::Withdraw {
                account,
                currency,
                amount,
            } => Operation::RequestWithdrawal {
                account,
                currency: code(&currency),
                amount,
                idempotency_key: key(op_id),
                options: Default::default(),
            },
            Op::Complete { tx } => Operation::CompleteWithdrawal {
                transaction_id: tx,
                outcome: WithdrawalOutcome::Completed,
            },
            Op::Fail { tx } => Operation::CompleteWithdrawal {
                transaction_id: tx,
                outcome: WithdrawalOutcome::Failed {
                    reason: op_id.to_string(),
                },
            },
            Op::Cancel { tx } => Operation::CancelWithdrawal { transaction_id: tx },
            Op::Transfer {
                from,
                to,
                currency,
                amount,
            } => Operation::Transfer {
                from,
                to,
                currency: code(&currency),
                amount,
                idempotency_key: key(op_id),
                metadata: Default::default(),
            },
        }
    }

    /// An operation that answers `idempotency_conflict` if and only if this
    /// op's key was used on its account, and is refused (changing nothing)
    /// otherwise: same key, another kind of operation, an amount no account
    /// has. `None` for ops without a key.
    fn probe(&self, op_id: &str) -> Option<Operation> {
        let huge = Decimal::new(PROBE_AMOUNT, 0);
        match self {
            Op::Deposit {
                account: scope,
                currency,
                ..
            }
            | Op::Transfer {
                from: scope,
                currency,
                ..
            } => Some(Operation::RequestWithdrawal {
                account: *scope,
                currency: code(currency),
                amount: huge,
                idempotency_key: key(op_id),
                options: Default::default(),
            }),
            Op::Withdraw {
                account, currency, ..
            } => Some(Operation::Transfer {
                from: *account,
                to: account % ACCOUNTS + 1,
                currency: code(currency),
                amount: huge,
                idempotency_key: key(op_id),
                metadata: Default::default(),
            }),
            Op::Complete { .. } | Op::Fail { .. } | Op::Cancel { .. } => None,
        }
    }

    fn is_keyed(&self) -> bool {
        matches!(
            self,
            Op::Deposit { .. } | Op::Withdraw { .. } | Op::Transfer { .. }
        )
    }

    /// The withdrawal status this op leads to, for complete/fail/cancel.
    fn target_status(&self, op_id: &str) -> Option<(TransactionId, WithdrawalStatus)> {
        match self {
            Op::Complete { tx } => Some((*tx, WithdrawalStatus::Completed)),
            Op::Fail { tx } => Some((
                *tx,
                WithdrawalStatus::Failed {
                    reason: op_id.to_string(),
                },
            )),
            Op::Cancel { tx } => Some((*tx, WithdrawalStatus::Cancelled)),
            _ => None,
        }
    }
}

/// How the child answered one op, if it did before it died.
#[derive(Clone, Debug)]
enum Answer {
    Ack(TransactionId),
    Err { code: String, message: String },
}

/// Everything one child printed.
#[derive(Default)]
struct RoundLog {
    /// In the order they were sent (per task; tasks interleave).
    sent: Vec<(String, Op)>,
    answers: HashMap<String, Answer>,
    /// Pending withdrawals the child found at start.
    pending_at_start: usize,
    /// Tagged lines that did not parse: there must be none (a line the
    /// kill cut short never reaches the parser).
    unparsed: Vec<String>,
    stderr: String,
    /// From spawning the child to its first `ACK`.
    first_ack_after: Duration,
    /// From the first `ACK` to the kill.
    killed_after: Duration,
}

impl RoundLog {
    fn parse(lines: &[String]) -> RoundLog {
        let mut log = RoundLog::default();
        let mut sent_ids = HashSet::new();
        for line in lines {
            let Some(at) = line.find(TAG) else { continue };
            let words: Vec<&str> = line[at + TAG.len()..].split_whitespace().collect();
            match words.as_slice() {
                ["READY", pending] => log.pending_at_start = pending.parse().unwrap(),
                ["SENT", op_id, rest @ ..] => {
                    let op = Op::parse(rest).unwrap_or_else(|| panic!("bad SENT line {line:?}"));
                    assert!(sent_ids.insert(op_id.to_string()), "op {op_id} sent twice");
                    log.sent.push((op_id.to_string(), op));
                }
                ["ACK", op_id, tx] => {
                    let tx = tx
                        .parse()
                        .unwrap_or_else(|_| panic!("bad ACK line {line:?}"));
                    assert!(sent_ids.contains(*op_id), "ACK before SENT: {line:?}");
                    let old = log.answers.insert(op_id.to_string(), Answer::Ack(tx));
                    assert!(old.is_none(), "op {op_id} answered twice");
                }
                ["ERR", op_id, code, message @ ..] => {
                    assert!(sent_ids.contains(*op_id), "ERR before SENT: {line:?}");
                    let answer = Answer::Err {
                        code: code.to_string(),
                        message: message.join(" "),
                    };
                    let old = log.answers.insert(op_id.to_string(), answer);
                    assert!(old.is_none(), "op {op_id} answered twice");
                }
                _ => log.unparsed.push(line.clone()),
            }
        }
        log
    }

    fn acks(&self) -> usize {
        self.answers
            .values()
            .filter(|a| matches!(a, Answer::Ack(_)))
            .count()
    }
}

// ---------------------------------------------------------------------------
// The child.
// ---------------------------------------------------------------------------

/// One protocol line, written and flushed at once (one `write` on a pipe,
/// so a kill never leaves half of it).
fn emit(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(format!("{TAG}{line}\n").as_bytes())
        .and_then(|()| out.flush());
    if written.is_err() {
        // The parent is gone: nobody will ever kill this process.
        std::process::exit(3);
    }
}

/// Runs the workload forever when started by the parent test; a no-op
/// otherwise.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(child_main(PathBuf::from(dir), round));
}

async fn child_main(dir: PathBuf, round: u64) {
    let ledger = Ledger::open(config(&dir)).expect("the child opens the ledger");
    // Pending withdrawals of earlier rounds get their outcome now too.
    let mut pending: Vec<TransactionId> = ledger
        .export_accounts()
        .await
        .unwrap()
        .iter()
        .flat_map(|account| {
            account
                .withdrawals
                .iter()
                .filter(|w| w.status == WithdrawalStatus::Pending)
                .map(|w| w.transaction_id)
                .collect::<Vec<_>>()
        })
        .collect();
    pending.sort();
    emit(format_args!("READY {}", pending.len()));
    let deadline = Instant::now() + CHILD_LIFETIME;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let mine = pending
                .iter()
                .enumerate()
                .filter(|(i, _)| *i as u64 % TASKS == task)
                .map(|(_, tx)| *tx)
                .collect();
            tokio::spawn(child_task(ledger.clone(), round, task, mine, deadline))
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

fn amount_in(currency: &str, units: u64) -> Decimal {
    Decimal::new(units as i64, decimals(currency))
}

/// A random op: an outcome for one of `pending` (taking it out) a quarter
/// of the time, else a deposit, withdrawal request or transfer.
fn random_op(rng: &mut XorShift, pending: &mut Vec<TransactionId>) -> Op {
    let (currency, _) = CURRENCIES[rng.below(CURRENCIES.len() as u64) as usize];
    let currency = currency.to_string();
    // Amounts are a few dollars, or a few hundredths of a bitcoin.
    let scale = if currency == "USD" { 1 } else { 1_000 };
    let account = rng.between(1, ACCOUNTS);
    let roll = rng.below(100);
    if !pending.is_empty() && roll < 25 {
        let tx = pending.swap_remove(rng.below(pending.len() as u64) as usize);
        match rng.below(3) {
            0 => Op::Complete { tx },
            1 => Op::Fail { tx },
            _ => Op::Cancel { tx },
        }
    } else if roll < 50 {
        let amount = amount_in(&currency, rng.between(100, 10_000) * scale);
        Op::Deposit {
            account,
            currency,
            amount,
        }
    } else if roll < 70 {
        let amount = amount_in(&currency, rng.between(1, 2_000) * scale);
        Op::Withdraw {
            account,
            currency,
            amount,
        }
    } else {
        let to = (account + rng.between(1, ACCOUNTS - 1) - 1) % ACCOUNTS + 1;
        let amount = amount_in(&currency, rng.between(1, 3_000) * scale);
        Op::Transfer {
            from: account,
            to,
            currency,
            amount,
        }
    }
}

/// Sends one op through the `Ledger` method made for it.
async fn send_one(ledger: &Ledger, op: &Op, op_id: &str) -> Result<TransactionId, LedgerError> {
    let key = Some(op_id);
    match op.clone() {
        Op::Deposit {
            account,
            currency,
            amount,
        } => ledger
            .deposit(account, &currency, amount, key)
            .await
            .map(|d| d.transaction_id),
        Op::Withdraw {
            account,
            currency,
            amount,
        } => ledger
            .request_withdrawal(account, &currency, amount, key)
            .await
            .map(|w| w.transaction_id),
        Op::Complete { tx } => ledger
            .complete_withdrawal(tx, WithdrawalOutcome::Completed)
            .await
            .map(|w| w.transaction_id),
        Op::Fail { tx } => {
            let reason = op_id.to_string();
            ledger
                .complete_withdrawal(tx, WithdrawalOutcome::Failed { reason })
                .await
                .map(|w| w.transaction_id)
        }
        Op::Cancel { tx } => ledger.cancel_withdrawal(tx).await.map(|w| w.transaction_id),
        Op::Transfer {
            from,
            to,
            currency,
            amount,
        } => ledger
            .transfer(from, to, &currency, amount, key)
            .await
            .map(|t| t.transaction_id),
    }
}

fn outcome_tx(outcome: &Outcome) -> TransactionId {
    match outcome {
        Outcome::Deposited(d) => d.transaction_id,
        Outcome::Withdrawal(w) => w.transaction_id,
        Outcome::Transferred(t) => t.transaction_id,
    }
}

/// Prints how an op was answered; a new withdrawal joins `pending`.
fn report(
    op_id: &str,
    op: &Op,
    answer: Result<TransactionId, LedgerError>,
    pending: &mut Vec<TransactionId>,
) {
    match answer {
        Ok(tx) => {
            emit(format_args!("ACK {op_id} {tx}"));
            if matches!(op, Op::Withdraw { .. }) {
                pending.push(tx);
            }
        }
        Err(error) => {
            let message = error.to_string().replace('\n', " ");
            emit(format_args!("ERR {op_id} {} {message}", error.code()));
        }
    }
}

/// One task: one op at a time, now and then a batch of them through
/// `submit`; each op announced before it is sent.
async fn child_task(
    ledger: Ledger,
    round: u64,
    task: u64,
    mut pending: Vec<TransactionId>,
    deadline: Instant,
) {
    let mut rng = XorShift::new(round * 1_000 + task + 1);
    let mut n = 0u64;
    while Instant::now() < deadline {
        let count = if rng.below(100) < 5 {
            rng.between(2, BATCH_OPS_MAX)
        } else {
            1
        };
        let ops: Vec<(String, Op)> = (0..count)
            .map(|_| {
                n += 1;
                (
                    format!("r{round}.t{task}.{n}"),
                    random_op(&mut rng, &mut pending),
                )
            })
            .collect();
        for (op_id, op) in &ops {
            emit(format_args!("SENT {op_id} {}", op.to_line()));
        }
        if let [(op_id, op)] = ops.as_slice() {
            let answer = send_one(&ledger, op, op_id).await;
            report(op_id, op, answer, &mut pending);
        } else {
            let batch = ops.iter().map(|(id, op)| op.operation(id)).collect();
            let answers = ledger.submit(batch).await;
            for ((op_id, op), answer) in ops.iter().zip(answers) {
                report(op_id, op, answer.map(|o| outcome_tx(&o)), &mut pending);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The parent.
// ---------------------------------------------------------------------------

/// Kills the child if the parent panics before it does.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spawns the child on `dir`, kills it a random while after its first
/// acknowledgement, and returns what it printed.
fn run_child(dir: &Path, round: u64, rng: &mut XorShift) -> RoundLog {
    let spawned = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test binary re-executes itself");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut guard = ChildGuard(Some(child));

    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdout.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    // A line without its newline was cut by the kill: its
                    // flush never returned, so what it announced never ran.
                    if buf.last() == Some(&b'\n') && lines_tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut lines = Vec::new();
    loop {
        match lines_rx.recv_timeout(FIRST_ACK_TIMEOUT) {
            Ok(line) => {
                let first_ack = line.contains(&format!("{TAG}ACK "));
                lines.push(line);
                if first_ack {
                    break;
                }
            }
            Err(why) => {
                drop(guard);
                panic!(
                    "round {round}: no ACK from the child ({why:?}); it printed:\n{}\nstderr:\n{}",
                    lines.join("\n"),
                    errors.join().unwrap()
                );
            }
        }
    }
    let first_ack_after = spawned.elapsed();
    let wait = Duration::from_millis(rng.between(50, 400));
    std::thread::sleep(wait);
    let mut child = guard.0.take().unwrap();
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(lines_rx.iter());
    let stderr = errors.join().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the child must die by SIGKILL, not on its own ({status}); stderr:\n{stderr}"
        );
    }
    #[cfg(not(unix))]
    let _ = status;
    let mut log = RoundLog::parse(&lines);
    log.stderr = stderr;
    log.first_ack_after = first_ack_after;
    log.killed_after = wait;
    log
}

/// A withdrawal as the model expects to find it.
#[derive(Clone, Debug, PartialEq)]
struct ModelWithdrawal {
    account: u64,
    currency: CurrencyCode,
    amount: Decimal,
    status: WithdrawalStatus,
}

/// What every acknowledged (or proven applied) operation adds up to.
#[derive(Default)]
struct Model {
    /// Total (available + locked) per account and currency.
    totals: BTreeMap<(u64, CurrencyCode), Decimal>,
    withdrawals: BTreeMap<TransactionId, ModelWithdrawal>,
    /// Every applied keyed op with its transaction id, for the replays.
    keyed: Vec<(String, Op, TransactionId)>,
    /// Every transaction id handed out: none may ever be handed out twice.
    tx_ids: HashSet<TransactionId>,
}

impl Model {
    fn add(&mut self, account: u64, currency: &str, amount: Decimal) {
        *self.totals.entry((account, code(currency))).or_default() += amount;
    }

    fn new_tx(&mut self, op_id: &str, owner: u64, tx: TransactionId) {
        assert_eq!(
            tx.account(),
            owner,
            "{op_id}: {tx:?} belongs to another account"
        );
        assert!(
            self.tx_ids.insert(tx),
            "{op_id}: transaction id {tx:?} was handed out twice"
        );
    }

    /// Records `op` as applied with transaction id `tx`.
    fn apply(&mut self, op_id: &str, op: &Op, tx: TransactionId) {
        match op {
            Op::Deposit {
                account,
                currency,
                amount,
            } => {
                self.new_tx(op_id, *account, tx);
                self.add(*account, currency, *amount);
            }
            Op::Withdraw {
                account,
                currency,
                amount,
            } => {
                self.new_tx(op_id, *account, tx);
                let withdrawal = ModelWithdrawal {
                    account: *account,
                    currency: code(currency),
                    amount: *amount,
                    status: WithdrawalStatus::Pending,
                };
                self.withdrawals.insert(tx, withdrawal);
            }
            Op::Transfer {
                from,
                to,
                currency,
                amount,
            } => {
                self.new_tx(op_id, *from, tx);
                self.add(*from, currency, -*amount);
                self.add(*to, currency, *amount);
            }
            Op::Complete { .. } | Op::Fail { .. } | Op::Cancel { .. } => {
                let (id, status) = op.target_status(op_id).unwrap();
                assert_eq!(id, tx, "{op_id}: acknowledged for another withdrawal");
                let withdrawal = self
                    .withdrawals
                    .get_mut(&id)
                    .unwrap_or_else(|| panic!("{op_id}: {id:?} is not a known withdrawal"));
                assert_eq!(
                    withdrawal.status,
                    WithdrawalStatus::Pending,
                    "{op_id}: {id:?} was updated twice"
                );
                withdrawal.status = status;
                if matches!(op, Op::Complete { .. }) {
                    let (account, amount) = (withdrawal.account, withdrawal.amount);
                    let currency = withdrawal.currency.as_str().to_string();
                    self.add(account, &currency, -amount);
                }
            }
        }
        if op.is_keyed() {
            self.keyed.push((op_id.to_string(), op.clone(), tx));
        }
    }

    /// (total, locked) per account and currency, leaving out zeros.
    fn balances(&self) -> BTreeMap<(u64, CurrencyCode), (Decimal, Decimal)> {
        let mut out: BTreeMap<(u64, CurrencyCode), (Decimal, Decimal)> = self
            .totals
            .iter()
            .map(|(k, total)| (*k, (*total, Decimal::ZERO)))
            .collect();
        for w in self.withdrawals.values() {
            if w.status == WithdrawalStatus::Pending {
                out.entry((w.account, w.currency)).or_default().1 += w.amount;
            }
        }
        out.retain(|_, (total, locked)| !total.is_zero() || !locked.is_zero());
        out
    }
}

/// (total, locked) per account and currency as recovered, leaving out zeros.
fn recovered_balances(
    accounts: &[AccountExport],
) -> BTreeMap<(u64, CurrencyCode), (Decimal, Decimal)> {
    let mut out = BTreeMap::new();
    for account in accounts {
        for view in &account.balances {
            assert_eq!(view.available + view.locked, view.total);
            if !view.total.is_zero() || !view.locked.is_zero() {
                out.insert((account.id, view.currency), (view.total, view.locked));
            }
        }
    }
    out
}

fn recovered_withdrawals(accounts: &[AccountExport]) -> BTreeMap<TransactionId, ModelWithdrawal> {
    let mut out = BTreeMap::new();
    for account in accounts {
        for view in &account.withdrawals {
            assert_eq!(view.account, account.id);
            let withdrawal = ModelWithdrawal {
                account: view.account,
                currency: view.currency,
                amount: view.amount,
                status: view.status.clone(),
            };
            out.insert(view.transaction_id, withdrawal);
        }
    }
    out
}

/// Describes where two maps differ (at most a dozen entries).
fn diff<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    expected: &BTreeMap<K, V>,
    actual: &BTreeMap<K, V>,
) -> String {
    let mut out = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => out.push(format!("missing {k:?}: expected {v:?}")),
            Some(a) if a != v => out.push(format!("{k:?}: expected {v:?}, recovered {a:?}")),
            Some(_) => {}
        }
    }
    for (k, v) in actual {
        if !expected.contains_key(k) {
            out.push(format!("unexpected {k:?}: recovered {v:?}"));
        }
    }
    let more = out.len().saturating_sub(12);
    out.truncate(12);
    if more > 0 {
        out.push(format!("... and {more} more"));
    }
    out.join("\n")
}

/// The accounts as a caller observes them: balances, and every withdrawal
/// as looked up by id (the ledger may have forgotten finished ones its
/// history store holds; a replay may take one back into memory).
async fn exported(ledger: &Ledger) -> Vec<AccountExport> {
    observed::observed_accounts(ledger).await
}

async fn submit_all(ledger: &Ledger, ops: Vec<Operation>) -> Vec<Result<Outcome, LedgerError>> {
    let mut results = Vec::with_capacity(ops.len());
    for chunk in ops.chunks(CHECK_BATCH) {
        results.extend(ledger.submit(chunk.to_vec()).await);
    }
    results
}

/// What a round saw, for the record.
struct RoundStats {
    sent: usize,
    acked: usize,
    rejected: usize,
    in_flight: usize,
    in_flight_applied: usize,
    records_replayed: u64,
    bytes_truncated: u64,
    snapshot_lsn: Option<u64>,
    withdrawals: usize,
}

/// Reopens `dir` after the kill and checks it against the model, which it
/// then brings up to date.
async fn check_round(dir: &Path, round: u64, log: &RoundLog, model: &mut Model) -> RoundStats {
    assert!(
        log.unparsed.is_empty(),
        "round {round}: unparsable lines {:?}",
        log.unparsed
    );
    let ledger = Ledger::open(config(dir))
        .unwrap_or_else(|e| panic!("round {round}: reopening after SIGKILL failed: {e}"));
    let report = ledger
        .recovery_report()
        .expect("a durable ledger reports its recovery")
        .clone();
    let before = exported(&ledger).await;
    let audit = ledger.audit().await.unwrap();
    assert!(
        audit.is_clean(),
        "round {round}: invariants broken after recovery: {:?}",
        audit.violations
    );

    // 1. Acknowledged ops go into the model; rejected and in-flight ones
    //    are set aside.
    let mut rejected: Vec<(&str, &Op)> = Vec::new();
    let mut in_flight: Vec<(&str, &Op)> = Vec::new();
    for (op_id, op) in &log.sent {
        match log.answers.get(op_id) {
            Some(Answer::Ack(tx)) => model.apply(op_id, op, *tx),
            Some(Answer::Err { code, message }) => {
                let expected = [
                    "insufficient_funds",
                    "too_many_pending_withdrawals",
                    "overloaded",
                ];
                assert!(
                    expected.contains(&code.as_str()),
                    "round {round}: {op_id} {op:?} was refused unexpectedly: {code} {message}"
                );
                rejected.push((op_id, op));
            }
            None => in_flight.push((op_id, op)),
        }
    }
    let mut unanswered_per_task: HashMap<&str, u64> = HashMap::new();
    for (op_id, _) in &in_flight {
        let task = op_id.split('.').nth(1).unwrap();
        *unanswered_per_task.entry(task).or_default() += 1;
    }
    assert!(
        unanswered_per_task.values().all(|n| *n <= BATCH_OPS_MAX),
        "round {round}: more ops unanswered than one task ever has in flight: {unanswered_per_task:?}"
    );

    // 2. Bounds: against what was acknowledged, each recovered total may
    //    differ by at most what was in flight there.
    let acked_balances = model.balances();
    let recovered = recovered_balances(&before);
    let mut slack: BTreeMap<(u64, CurrencyCode), Decimal> = BTreeMap::new();
    for (_, op) in &in_flight {
        let touched: Vec<(u64, &str, Decimal)> = match op {
            Op::Deposit {
                account,
                currency,
                amount,
            } => vec![(*account, currency, *amount)],
            Op::Transfer {
                from,
                to,
                currency,
                amount,
            } => vec![(*from, currency, *amount), (*to, currency, *amount)],
            Op::Complete { tx } => model
                .withdrawals
                .get(tx)
                .map(|w| vec![(w.account, w.currency.as_str(), w.amount)])
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        for (account, currency, amount) in touched {
            *slack.entry((account, code(currency))).or_default() += amount;
        }
    }
    let keys: HashSet<_> = acked_balances.keys().chain(recovered.keys()).collect();
    for k in keys {
        let acked = acked_balances.get(k).map_or(Decimal::ZERO, |b| b.0);
        let got = recovered.get(k).map_or(Decimal::ZERO, |b| b.0);
        let allowed = slack.get(k).copied().unwrap_or_default();
        assert!(
            (got - acked).abs() <= allowed,
            "round {round}: {k:?} total {got} is {} away from the acknowledged {acked}, \
             but only {allowed} was in flight there",
            got - acked
        );
    }

    // 3. Probe every key of a rejected or in-flight op: used or not?
    let probed: Vec<(&str, &Op, Operation)> = rejected
        .iter()
        .chain(&in_flight)
        .filter_map(|(id, op)| op.probe(id).map(|p| (*id, *op, p)))
        .collect();
    let answers = submit_all(&ledger, probed.iter().map(|(_, _, p)| p.clone()).collect()).await;
    let mut used = HashSet::new();
    for ((op_id, op, _), answer) in probed.iter().zip(answers) {
        match answer {
            Err(LedgerError::IdempotencyConflict { .. }) => {
                used.insert(*op_id);
            }
            Err(LedgerError::InsufficientFunds { .. })
            | Err(LedgerError::TooManyPendingWithdrawals { .. }) => {}
            other => panic!("round {round}: probing {op_id} {op:?} answered {other:?}"),
        }
    }
    for (op_id, op) in &rejected {
        assert!(
            !used.contains(op_id),
            "round {round}: {op_id} {op:?} was refused, yet its key is on record"
        );
    }

    // 4. In-flight ops that were applied join the model: a keyed one with
    //    the transaction id its replay returns, an update when the
    //    withdrawal's recovered status says so.
    let recovered_ws = recovered_withdrawals(&before);
    let mut in_flight_applied = 0;
    let applied_keyed: Vec<(&str, &Op)> = in_flight
        .iter()
        .filter(|(id, _)| used.contains(id))
        .copied()
        .collect();
    let replays = submit_all(
        &ledger,
        applied_keyed
            .iter()
            .map(|(id, op)| op.operation(id))
            .collect(),
    )
    .await;
    for ((op_id, op), replay) in applied_keyed.iter().zip(replays) {
        let tx = match replay {
            Ok(Outcome::Deposited(d)) => d.transaction_id,
            Ok(Outcome::Withdrawal(w)) => w.transaction_id,
            Ok(Outcome::Transferred(t)) => t.transaction_id,
            other => panic!("round {round}: replaying in-flight {op_id} {op:?} gave {other:?}"),
        };
        model.apply(op_id, op, tx);
        in_flight_applied += 1;
    }
    for (op_id, op) in &in_flight {
        let Some((tx, target)) = op.target_status(op_id) else {
            continue;
        };
        let status = &recovered_ws
            .get(&tx)
            .unwrap_or_else(|| panic!("round {round}: withdrawal {tx:?} of {op_id} vanished"))
            .status;
        if *status == target {
            model.apply(op_id, op, tx);
            in_flight_applied += 1;
        } else {
            assert_eq!(
                *status,
                WithdrawalStatus::Pending,
                "round {round}: {op_id} {op:?} was in flight, yet {tx:?} ended {status:?}"
            );
        }
    }

    // 5. Exactness: balances and withdrawals are what the model says, no
    //    more (nothing from nowhere) and no less (nothing acknowledged lost).
    let expected = model.balances();
    assert!(
        expected == recovered,
        "round {round}: recovered balances (total, locked) differ from the model:\n{}",
        diff(&expected, &recovered)
    );
    assert!(
        model.withdrawals == recovered_ws,
        "round {round}: recovered withdrawals differ from the model:\n{}",
        diff(&model.withdrawals, &recovered_ws)
    );

    // 6. Every applied key, this round's and earlier ones', replays to its
    //    transaction id...
    let replays = submit_all(
        &ledger,
        model
            .keyed
            .iter()
            .map(|(id, op, _)| op.operation(id))
            .collect(),
    )
    .await;
    for ((op_id, op, tx), replay) in model.keyed.iter().zip(replays) {
        let got = match &replay {
            Ok(Outcome::Deposited(d)) => Some(d.transaction_id),
            Ok(Outcome::Withdrawal(w)) => Some(w.transaction_id),
            Ok(Outcome::Transferred(t)) => Some(t.transaction_id),
            _ => None,
        };
        assert_eq!(
            got,
            Some(*tx),
            "round {round}: replaying {op_id} {op:?} gave {replay:?}"
        );
    }
    // ...and neither the probes nor the replays changed anything.
    let after = exported(&ledger).await;
    assert!(
        after == before,
        "round {round}: probes or idempotent replays changed the state"
    );
    assert!(ledger.audit().await.unwrap().is_clean());

    let stats = RoundStats {
        sent: log.sent.len(),
        acked: log.acks(),
        rejected: rejected.len(),
        in_flight: in_flight.len(),
        in_flight_applied,
        records_replayed: report.records_replayed,
        bytes_truncated: report.bytes_truncated,
        snapshot_lsn: report.snapshot.as_ref().map(|s| s.lsn),
        withdrawals: recovered_ws.len(),
    };
    // Alternate a clean shutdown (which leaves a snapshot) with a plain drop
    // (which leaves the log to replay), so the next child starts both ways.
    if round.is_multiple_of(2) {
        ledger.shutdown().await;
    } else {
        drop(ledger);
    }
    stats
}

#[test]
fn acknowledged_operations_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let setting = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map_or(default, |v| v.parse().expect(name))
    };
    let rounds = setting("BURNLEDGER_CRASH_ROUNDS", ROUNDS);
    let seed = setting("BURNLEDGER_CRASH_SEED", SEED);
    let mut model = Model::default();
    let mut rng = XorShift::new(seed);
    let (mut acks, mut truncated_rounds) = (0, 0);
    for round in 0..rounds {
        let round_started = Instant::now();
        let log = run_child(dir.path(), round, &mut rng);
        assert!(log.acks() > 0, "round {round}: nothing was acknowledged");
        let stats = runtime.block_on(check_round(dir.path(), round, &log, &mut model));
        acks += stats.acked;
        truncated_rounds += usize::from(stats.bytes_truncated > 0);
        eprintln!(
            "crash round {round}: first ACK after {:?}, killed {:?} later; \
             {} sent, {} acked, {} refused, {} in flight ({} of them applied); \
             {} pending withdrawals picked up; recovery: snapshot LSN {:?}, \
             {} records replayed, {} bytes truncated; {} withdrawals on record; \
             round took {:?}",
            log.first_ack_after,
            log.killed_after,
            stats.sent,
            stats.acked,
            stats.rejected,
            stats.in_flight,
            stats.in_flight_applied,
            log.pending_at_start,
            stats.snapshot_lsn,
            stats.records_replayed,
            stats.bytes_truncated,
            stats.withdrawals,
            round_started.elapsed(),
        );
        if !log.stderr.trim().is_empty() {
            eprintln!("crash round {round}: the child's stderr:\n{}", log.stderr);
        }
    }
    eprintln!(
        "crash test (seed {seed}): {rounds} rounds, {acks} acknowledged operations, \
         {} keyed ops replayed, {truncated_rounds} rounds with a torn tail, {:?} in all",
        model.keyed.len(),
        started.elapsed()
    );
}
