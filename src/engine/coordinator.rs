//! The shard coordinator: keeps the shard's account directory (running
//! actors' addresses and parked states, see
//! [`directory`](crate::engine::directory)) and forwards every operation
//! for its accounts to their actors; it holds no account state itself.
//!
//! One coordinator runs on each shard's Arbiter (one thread); the account
//! actors it starts live on the same thread. An account comes into being on
//! the first operation that can create it (a deposit, an incoming transfer,
//! an operator's freeze or tier);
//! anything else aimed at an unknown account is answered against an empty
//! state without starting an actor, so made-up ids cost no memory. A batch
//! runs in rounds (see [`batch`](crate::engine::batch)), answered once the
//! round's events are durable. Transfers whose receiving account lives on
//! another shard go through that shard's coordinator, and so do the fees
//! completions collect for a fee account there ([`CollectFees`]).
//!
//! Reads go to the account's actor while it runs, and read a parked state
//! in place. Idle actors are retired by a sweep every
//! [`Config::account_idle_sweep_ms`](crate::Config::account_idle_sweep_ms)
//! on the ledger's clock, or sooner when the shard runs more than its cap
//! of actors.
//!
//! Each sweep also lets finished withdrawals leave memory up to the
//! shard's horizon (see [`horizon`](crate::engine::horizon)), and a read of
//! one the account forgot is answered from the history (see
//! [`recall`]), idempotency keys past their retention expire, and pending
//! withdrawals past their `expires_in` fail, each as a logged event (see
//! [`key_expiry`] and [`expiry`]); an alarm on the shard's earliest expiry
//! fails those as they come due, between sweeps.
//!
//! It also answers the shard's gauges (accounts, running actors, and the
//! withdrawal tallies its shard log keeps), without reading any account.

use std::rc::Rc;
use std::time::Duration;

use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::join_all;

use crate::clock::SharedClock;
use crate::domain::account::AccountState;
use crate::domain::gauges::ShardCounts;
use crate::domain::gauges::{Gauges, WithdrawalGauges};
use crate::domain::ids::AccountId;
use crate::domain::policy::Policy;
use crate::domain::time::UnixMs;
use crate::engine::account::poison_on_internal;
use crate::engine::batch::{
    cut_into_rounds, run_batch, AccountRun, BatchContext, Dispatch, Grouping, Results,
};
use crate::engine::command::{execute, Command, Job, Ran};
use crate::engine::directory::{ActorSeed, Directory, Found};
use crate::engine::expiry::{self, Expiries};
use crate::engine::horizon::Forgetting;
use crate::engine::key_expiry::{self, KeyExpiry};
use crate::engine::messages::{
    AccountRead, Ask, CollectFees, CountAccounts, ExecuteBatch, ExportAccounts, Read, ReadGauges,
    ReceiveTransfers, StateOf, WithdrawalQueued, WriteRefusal,
};
use crate::engine::recall;
use crate::engine::round::{RoundReplies, RunCommands};
use crate::engine::router::Router;
use crate::engine::shard_log::ShardLog;
use crate::engine::stamp::Stamper;
use crate::error::LedgerError;
use crate::storage::journal::Journal;

/// What a coordinator needs besides its recovered accounts.
pub struct CoordinatorSettings {
    /// This shard's number.
    pub shard: usize,
    pub journal: Journal,
    /// The rules' configuration: pending cap, limits, fee account.
    pub policy: Arc<Policy>,
    /// Every shard, for the receiving side of transfers.
    pub router: Router,
    pub payouts: Option<Recipient<WithdrawalQueued>>,
    /// Most account actors running at once on this shard.
    pub account_actors_max: usize,
    /// An actor idle for between one and two of these is retired.
    pub account_idle_sweep: Duration,
    pub clock: SharedClock,
    /// The newest time the recovered state holds: stamps never go below.
    pub stamps_from: UnixMs,
    /// How far finished withdrawals may leave memory, and where they are
    /// found again.
    pub forgetting: Forgetting,
    /// When idempotency keys expire.
    pub key_expiry: KeyExpiry,
}

pub struct Coordinator {
    directory: Directory,
    log: Rc<ShardLog>,
    policy: Arc<Policy>,
    router: Router,
    account_idle_sweep: Duration,
    clock: SharedClock,
    forgetting: Rc<Forgetting>,
    key_expiry: KeyExpiry,
    /// Account states copied out by exports so far (see
    /// [`Gauges::account_states_copied`]).
    states_copied: u64,
}

impl Coordinator {
    /// Starts on the shard's recovered accounts, all parked; counting their
    /// withdrawals for the gauges is the one O(accounts) step, done here
    /// once.
    pub fn new(settings: CoordinatorSettings, recovered: Vec<AccountState>) -> Self {
        let gauges = WithdrawalGauges::scan(&recovered);
        let stamper = Stamper::new(settings.clock.clone(), settings.stamps_from);
        let log = ShardLog::new(
            settings.shard,
            settings.journal,
            settings.payouts,
            gauges,
            stamper,
        );
        log.collect_fees_through(settings.router.clone());
        log.note_expiries(Expiries::of(&recovered));
        let log = Rc::new(log);
        let forgetting = Rc::new(settings.forgetting);
        let seed = ActorSeed {
            log: Rc::clone(&log),
            policy: Arc::clone(&settings.policy),
            forgetting: Rc::clone(&forgetting),
        };
        Self {
            directory: Directory::new(recovered, settings.account_actors_max, seed),
            log,
            policy: settings.policy,
            router: settings.router,
            account_idle_sweep: settings.account_idle_sweep,
            clock: settings.clock,
            forgetting,
            key_expiry: settings.key_expiry,
            states_copied: 0,
        }
    }

    /// Sends one round's runs to their accounts' actors (starting them as
    /// needed), stamped with a fresh reading of the clock; their replies
    /// gather on the returned round.
    fn dispatch<J: Job>(&mut self, runs: Vec<AccountRun<J>>) -> RoundReplies<J> {
        self.log.tick();
        let jobs = runs.iter().map(|r| r.jobs.len()).sum();
        let round = RoundReplies::expecting(runs.len(), jobs);
        for run in runs {
            self.forward(run.account, RunCommands::new(run.jobs, round.clone()));
        }
        self.directory.send_retirements();
        round
    }

    /// Forwards jobs to their account's actor. Every account a round names
    /// exists (or is created by its first job), so an actor is always
    /// found; were it not, the dropped message answers each job.
    fn forward<J: Job>(&mut self, account: AccountId, jobs: RunCommands<J>) {
        if let Some(actor) = self.directory.actor_of(account, true) {
            actor.do_send(jobs);
        }
    }

    /// Answers a command for an account that does not exist, against an
    /// empty state. Such commands can only be rejected; should one ever
    /// change anything, that is a bug and is reported, not dropped.
    fn answer_unknown_account<C: Command>(
        &self,
        account: AccountId,
        command: C,
    ) -> Result<C::Answer, LedgerError> {
        let mut empty = AccountState::new(account);
        // Nothing here may change (see below): throwaway gauges.
        let mut unchanged = WithdrawalGauges::default();
        let ran = execute(
            &mut empty,
            command,
            &self.policy,
            &mut unchanged,
            self.log.now(),
        );
        let answer = match ran {
            Ok((Ran::Done(answer), None)) => Ok(answer),
            Ok(_) => Err(LedgerError::Internal {
                reason: format!("a command on unknown account {account} changed it"),
            }),
            Err(error) => Err(error),
        };
        answer.inspect_err(|error| poison_on_internal(&self.log, error))
    }

    /// Logs the expiry of the idempotency keys past their retention in
    /// this sweep's accounts (see [`key_expiry`]), as a round of upkeep:
    /// it keeps no idle actor from retiring.
    fn expire_keys(&mut self, ctx: &mut Context<Self>) {
        let runs = self.key_expiry.round(&mut self.directory);
        if runs.is_empty() {
            return;
        }
        self.log.tick();
        let round = RoundReplies::expecting(runs.len(), runs.len());
        for run in runs {
            let jobs = RunCommands::new(run.jobs, round.clone());
            self.directory.upkeep(run.account, jobs);
        }
        let settled = key_expiry::settle(round, Rc::clone(&self.log));
        ctx.spawn(actix::fut::wrap_future::<_, Self>(settled));
    }

    /// Fails the pending withdrawals past their expiry (see [`expiry`]), as
    /// a round of upkeep.
    fn expire_withdrawals(&mut self, ctx: &mut Context<Self>) {
        let now = UnixMs::from_millis(self.clock.unix_ms());
        let runs = self.log.take_due_expiries(now);
        if runs.is_empty() {
            return;
        }
        self.log.tick();
        let jobs = runs.iter().map(|r| r.jobs.len()).sum();
        let round = RoundReplies::expecting(runs.len(), jobs);
        for run in runs {
            let jobs = RunCommands::new(run.jobs, round.clone());
            self.directory.upkeep(run.account, jobs);
        }
        let settled = expiry::settle(round, Rc::clone(&self.log));
        ctx.spawn(actix::fut::wrap_future::<_, Self>(settled));
    }

    /// Fails pending withdrawals as their expiry comes: waits, on the
    /// ledger's clock, for the shard's earliest expiry or for a sooner one
    /// to be noted, expires what is then due and re-arms (see [`expiry`]).
    /// With no expiry noted it sets no timer, only waits to hear of one.
    fn arm_expiry_alarm(&self, ctx: &mut Context<Self>) {
        let (next, sooner) = self.log.next_expiry();
        let ring = next.map(|at| {
            let now = self.clock.unix_ms();
            let wait = at.as_millis().saturating_sub(now);
            self.clock.sleep(Duration::from_millis(wait))
        });
        let alarm = async move {
            let noted = Box::pin(sooner.notified());
            match ring {
                Some(ring) => drop(futures_util::future::select(ring, noted).await),
                None => noted.await,
            }
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(alarm).map(|(), coordinator, ctx| {
                coordinator.expire_withdrawals(ctx);
                coordinator.arm_expiry_alarm(ctx);
            }),
        );
    }

    /// Retires idle actors, forgets finished withdrawals before the
    /// horizon, expires idempotency keys and pending withdrawals every
    /// sweep interval, on the ledger's clock (the expiry alarm fails
    /// withdrawals as they come due; the sweep is its backstop).
    fn arm_sweep(&self, ctx: &mut Context<Self>) {
        let tick = self.clock.sleep(self.account_idle_sweep);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(tick).map(|(), coordinator, ctx| {
                coordinator.directory.sweep();
                let before = coordinator.forgetting.horizon();
                coordinator.directory.forget_finished(before);
                coordinator.expire_keys(ctx);
                coordinator.expire_withdrawals(ctx);
                coordinator.directory.send_retirements();
                coordinator.arm_sweep(ctx);
            }),
        );
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.arm_sweep(ctx);
        self.arm_expiry_alarm(ctx);
    }
}

/// Runs a batch: per account, in order; accounts in parallel.
impl<C: Command> Handler<ExecuteBatch<C>> for Coordinator {
    type Result = ResponseFuture<Vec<Result<C::Answer, LedgerError>>>;

    fn handle(&mut self, msg: ExecuteBatch<C>, ctx: &mut Self::Context) -> Self::Result {
        if let Some(refusal) = self.log.write_refusal() {
            let refused = msg.ops.iter().map(|_| Err(refusal.clone())).collect();
            return Box::pin(std::future::ready(refused));
        }
        let mut results: Results<C::Answer> = std::iter::repeat_with(|| None)
            .take(msg.ops.len())
            .collect();
        let mut grouping = Grouping::with_capacity(msg.ops.len());
        for (index, (account, command)) in msg.ops.into_iter().enumerate() {
            let new = !grouping.contains(account) && !self.directory.contains(account);
            if new && !command.creates_account() {
                results[index] = Some(self.answer_unknown_account(account, command));
                continue;
            }
            grouping.push(account, (index, command));
        }
        let rounds = cut_into_rounds(grouping.into_runs());
        let first = self.dispatch(rounds.first);
        let context = BatchContext {
            coordinator: ctx.address(),
            router: self.router.clone(),
            log: Rc::clone(&self.log),
        };
        Box::pin(run_batch(first, rounds.later, results, context))
    }
}

/// A running batch's later round: forwarded through the directory.
impl<J: Job> Handler<Dispatch<J>> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: Dispatch<J>, _ctx: &mut Self::Context) {
        self.log.tick();
        for (account, jobs) in msg.0 {
            self.forward(account, jobs);
        }
        self.directory.send_retirements();
    }
}

/// Credits the receiving sides of transfers on this shard's accounts, and
/// answers once the credits are durable.
impl Handler<ReceiveTransfers> for Coordinator {
    type Result = ResponseFuture<Vec<Result<UnixMs, LedgerError>>>;

    fn handle(&mut self, msg: ReceiveTransfers, _ctx: &mut Self::Context) -> Self::Result {
        let count = msg.credits.len();
        let mut grouping = Grouping::with_capacity(count);
        for (position, (to, credit)) in msg.credits.into_iter().enumerate() {
            grouping.push(to, (position, credit));
        }
        let round = self.dispatch(grouping.into_runs());
        let log = Rc::clone(&self.log);
        Box::pin(async move {
            let mut answers = vec![Err(LedgerError::ShuttingDown); count];
            let replies = round.all().await;
            if let Err(error) = log.flush().await {
                return vec![Err(error); count];
            }
            for (position, reply) in replies {
                answers[position] = reply;
            }
            answers
        })
    }
}

/// Credits the fee account's side of completions logged elsewhere (already
/// durable): nothing to log or flush here.
impl Handler<CollectFees> for Coordinator {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: CollectFees, _ctx: &mut Self::Context) -> Self::Result {
        // Sized for one account, not one per credit: the credits of a
        // round almost always go to the one fee account.
        let mut grouping = Grouping::with_capacity(1);
        for (position, (to, credit)) in msg.credits.into_iter().enumerate() {
            grouping.push(to, (position, credit));
        }
        let round = self.dispatch(grouping.into_runs());
        Box::pin(async move {
            for (_, reply) in round.all().await {
                if let Err(error) = reply {
                    tracing::error!(%error, "a collected fee was not credited in memory: the log holds it, a restart applies it");
                }
            }
        })
    }
}

/// Answers a read: from the account's actor while it runs, from its parked
/// state in place, from an empty state for an account the shard does not
/// hold. Refused once the ledger is poisoned: memory may hold changes the
/// disk lacks.
impl<Q: AccountRead> Handler<Ask<Q>> for Coordinator {
    type Result = Response<Result<Q::Output, LedgerError>>;

    fn handle(&mut self, msg: Ask<Q>, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(poisoned) = self.log.read_refusal() {
            return Response::reply(Err(poisoned));
        }
        let found = self.directory.find(msg.account);
        let answer = match found {
            Err(lost) => Response::reply(Err(lost)),
            Ok(Found::Unknown) => Response::reply(msg.query.read(&AccountState::new(msg.account))),
            Ok(Found::Parked(state)) => recall::read(msg.query, state, &self.forgetting),
            Ok(Found::Running(actor)) => {
                let asked = actor.send(Read(msg.query));
                Response::fut(async move { asked.await.unwrap_or(Err(LedgerError::ShuttingDown)) })
            }
        };
        self.directory.send_retirements();
        answer
    }
}

/// Says whether this shard refuses writes, and why.
impl Handler<WriteRefusal> for Coordinator {
    type Result = MessageResult<WriteRefusal>;

    fn handle(&mut self, _msg: WriteRefusal, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.log.write_refusal())
    }
}

/// Counts this shard's accounts and running actors.
impl Handler<CountAccounts> for Coordinator {
    type Result = MessageResult<CountAccounts>;

    fn handle(&mut self, _msg: CountAccounts, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(ShardCounts {
            accounts: self.directory.len(),
            actors_running: self.directory.running(),
        })
    }
}

/// Copies out every account state of this shard: parked ones in place,
/// running ones by asking their actors.
impl Handler<ExportAccounts> for Coordinator {
    type Result = ResponseFuture<Result<Vec<AccountState>, LedgerError>>;

    fn handle(&mut self, _msg: ExportAccounts, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(poisoned) = self.log.read_refusal() {
            return Box::pin(std::future::ready(Err(poisoned)));
        }
        let all = self.directory.all();
        let (asks, copied) = match all {
            Err(lost) => return Box::pin(std::future::ready(Err(lost))),
            Ok((running, parked)) => {
                let asks: Vec<_> = running
                    .iter()
                    .map(|actor| actor.send(Read(StateOf)))
                    .collect();
                let copied: Vec<AccountState> = parked.into_iter().cloned().collect();
                (asks, copied)
            }
        };
        self.directory.send_retirements();
        self.states_copied = self
            .states_copied
            .saturating_add((asks.len() + copied.len()) as u64);
        Box::pin(async move {
            let mut states = copied;
            for answer in join_all(asks).await {
                states.push(answer.unwrap_or(Err(LedgerError::ShuttingDown))?);
            }
            Ok(states)
        })
    }
}

/// This shard's gauges, as kept while it runs: no account is read, so the
/// answer costs the same whatever the shard holds. Refused once the ledger
/// is poisoned, like exports: memory may hold changes the disk lacks.
impl Handler<ReadGauges> for Coordinator {
    type Result = Result<Gauges, LedgerError>;

    fn handle(&mut self, _msg: ReadGauges, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(poisoned) = self.log.read_refusal() {
            return Err(poisoned);
        }
        let withdrawals = self.log.gauges().ok_or_else(|| LedgerError::Internal {
            reason: "the shard's gauges were borrowed while being read".into(),
        })?;
        Ok(Gauges {
            accounts: self.directory.len(),
            account_actors_running: self.directory.running(),
            withdrawals,
            account_states_copied: self.states_copied,
        })
    }
}
