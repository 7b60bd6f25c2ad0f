//! A shard's account directory: for each account, either the address of
//! its running actor or its parked state — never both, and the state is
//! never shared.
//!
//! Actors are cheap but not free (≈ 850 B each), so only accounts in use
//! have one: an actor is started on an account's first command (with the
//! state moved in) and retired once the account has been idle for a sweep,
//! or sooner when the shard runs more than its cap of actors. Retiring is a
//! message ([`Retire`]) after everything already sent to the actor: it
//! hands its state back through a oneshot channel and stops. Until the
//! state is back the account is *retiring*; a command then starts a new
//! actor that waits for that very state (see
//! [`account`](crate::engine::account)), so commands are forwarded at once
//! and run in the order sent. A sweep parks the states that came back.
//!
//! Finished withdrawals leave the states here as the shard's horizon
//! allows ([`Directory::forget_finished`], on each sweep): running actors
//! are told to, and parked states are visited a bounded number per sweep,
//! round the directory; a retiring actor forgets before handing back.
//! Idempotency keys' expiry walks the parked states the same way
//! ([`Directory::visit_parked`], see
//! [`key_expiry`](crate::engine::key_expiry)).
//!
//! Only this directory holds account actors' addresses (a round looks its
//! actors up here when it dispatches), so a retired actor gets nothing
//! after its `Retire`.

use std::rc::Rc;

use actix::prelude::*;
use tokio::sync::oneshot::{self, error::TryRecvError};

use crate::domain::account::AccountState;
use crate::domain::ids::AccountId;
use crate::domain::time::UnixMs;
use crate::engine::account::{AccountActor, Holding};
use crate::engine::command::Job;
use crate::engine::horizon::{self, Forgetting, PARKED_PER_SWEEP};
use crate::engine::messages::{ForgetFinished, Retire};
use crate::engine::round::RunCommands;
use crate::engine::shard_log::ShardLog;
use crate::error::LedgerError;

/// One account of the shard: two words, whatever the account holds.
enum Slot {
    /// Its actor runs: its entry in the running table.
    Running(usize),
    /// Its actor was told to retire and hands the state back here.
    Retiring(oneshot::Receiver<AccountState>),
    /// Boxed, so that a map sized for a million accounts (with its spare
    /// capacity) holds slots, not states.
    Parked(Box<AccountState>),
}

/// An account whose actor runs.
struct Running {
    account: AccountId,
    actor: Addr<AccountActor>,
    /// The sweep epoch of its last use.
    last_used: u64,
}

/// Where a read finds an account.
pub enum Found<'a> {
    Running(Addr<AccountActor>),
    Parked(&'a AccountState),
    /// The shard holds no such account.
    Unknown,
}

/// What new actors of the shard get besides their state.
pub struct ActorSeed {
    pub log: Rc<ShardLog>,
    pub policy: std::sync::Arc<crate::domain::policy::Policy>,
    pub forgetting: Rc<Forgetting>,
}

pub struct Directory {
    slots: foldhash::HashMap<AccountId, Slot>,
    /// The accounts whose actor runs (an actor's address is three words, so
    /// it lives here rather than in every slot); sweeps scan only these.
    running: Vec<Running>,
    /// Accounts whose state is on its way back.
    retiring: Vec<AccountId>,
    /// Retirements decided and not yet sent: they are sent once the
    /// current message's commands have been (see [`Self::send_retirements`]).
    to_retire: Vec<(Addr<AccountActor>, oneshot::Sender<AccountState>)>,
    epoch: u64,
    actors_max: usize,
    seed: ActorSeed,
    /// Where the next visit of parked states to forget in starts, in the
    /// order of `slots`.
    parked_cursor: usize,
}

impl Directory {
    /// Every recovered account starts parked.
    pub fn new(recovered: Vec<AccountState>, actors_max: usize, seed: ActorSeed) -> Self {
        let slots = recovered
            .into_iter()
            .map(|state| (state.id(), Slot::Parked(Box::new(state))))
            .collect();
        Self {
            slots,
            running: Vec::new(),
            retiring: Vec::new(),
            to_retire: Vec::new(),
            epoch: 1,
            actors_max: actors_max.max(1),
            seed,
            parked_cursor: 0,
        }
    }

    /// Accounts held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Accounts whose actor runs.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn contains(&self, account: AccountId) -> bool {
        self.slots.contains_key(&account)
    }

    /// The account's actor, started if it has none: on its parked state,
    /// on the state its retiring actor hands back, or (with `create`) on a
    /// new account. `None` for an account the shard does not hold when
    /// `create` is false.
    pub fn actor_of(&mut self, account: AccountId, create: bool) -> Option<Addr<AccountActor>> {
        let epoch = self.epoch;
        if let Some(Slot::Running(index)) = self.slots.get(&account) {
            if let Some(running) = self.running.get_mut(*index) {
                running.last_used = epoch;
                return Some(running.actor.clone());
            }
        }
        if self.running.len() >= self.actors_max {
            self.sweep();
        }
        self.start(account, create)
    }

    /// Starts the account's actor (see [`Self::actor_of`]) without a sweep,
    /// so no other actor is retired meanwhile.
    fn start(&mut self, account: AccountId, create: bool) -> Option<Addr<AccountActor>> {
        let epoch = self.epoch;
        let holding = match self.slots.remove(&account) {
            Some(Slot::Parked(state)) => Holding::State(*state),
            // (It stays in `retiring`; sweeps skip what is no longer.)
            Some(Slot::Retiring(handover)) => Holding::Awaiting(handover),
            // Only a running table out of step with the slots gets here
            // (a bug): the account's state is with an actor nobody can
            // reach, so refuse rather than start it afresh.
            Some(Slot::Running(_)) => return None,
            None if create => Holding::State(AccountState::new(account)),
            None => return None,
        };
        let actor = AccountActor::new(
            holding,
            Rc::clone(&self.seed.log),
            std::sync::Arc::clone(&self.seed.policy),
            Rc::clone(&self.seed.forgetting),
        )
        .start();
        self.slots
            .insert(account, Slot::Running(self.running.len()));
        self.running.push(Running {
            account,
            actor: actor.clone(),
            last_used: epoch,
        });
        Some(actor)
    }

    /// Where a read finds the account: its running actor, its parked state
    /// (a state just handed back is parked first), or nowhere. A state
    /// still on its way is read by a new actor that waits for it.
    pub fn find(&mut self, account: AccountId) -> Result<Found<'_>, LedgerError> {
        park_if_back(&mut self.slots, account)?;
        let parked = match self.slots.get(&account) {
            None => return Ok(Found::Unknown),
            Some(slot) => matches!(slot, Slot::Parked(_)),
        };
        if !parked {
            let actor = self.actor_of(account, false);
            return Ok(actor.map_or(Found::Unknown, Found::Running));
        }
        match self.slots.get(&account) {
            Some(Slot::Parked(state)) => Ok(Found::Parked(state)),
            _ => Ok(Found::Unknown),
        }
    }

    /// Every account: the running actors, and the parked states in place.
    /// A state still on its way back is given to a new actor that waits
    /// for it — started past the cap rather than by a sweep, which would
    /// put other accounts on their way and out of both lists (the next
    /// sweep brings the count back). O(accounts), like what it answers.
    pub fn all(&mut self) -> Result<(Vec<Addr<AccountActor>>, Vec<&AccountState>), LedgerError> {
        let on_their_way: Vec<AccountId> = self
            .slots
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Retiring(_)))
            .map(|(account, _)| *account)
            .collect();
        for account in on_their_way {
            if !park_if_back(&mut self.slots, account)? {
                self.start(account, false);
            }
        }
        let running = self.running.iter().map(|r| r.actor.clone()).collect();
        let parked = self
            .slots
            .values()
            .filter_map(|slot| match slot {
                Slot::Parked(state) => Some(&**state),
                Slot::Running(_) | Slot::Retiring(_) => None,
            })
            .collect();
        Ok((running, parked))
    }

    /// Retires the actors of accounts unused since the current epoch
    /// began, parks the states retired actors handed back since the last
    /// sweep, then starts a new epoch. The `Retire` messages go out with
    /// [`Self::send_retirements`]. O(running + retiring).
    pub fn sweep(&mut self) {
        let slots = &mut self.slots;
        // Kept: states still on their way. A state lost on the way (only
        // when the shard stops) is not waited for again.
        self.retiring
            .retain(|account| matches!(park_if_back(slots, *account), Ok(false)));
        let epoch = self.epoch;
        let mut index = 0;
        while let Some(running) = self.running.get(index) {
            if running.last_used >= epoch {
                index += 1;
                continue;
            }
            let retired = self.running.swap_remove(index);
            if let Some(moved) = self.running.get(index) {
                slots.insert(moved.account, Slot::Running(index));
            }
            let (to, handover) = oneshot::channel();
            slots.insert(retired.account, Slot::Retiring(handover));
            self.to_retire.push((retired.actor, to));
            self.retiring.push(retired.account);
        }
        self.epoch += 1;
    }

    /// Forgets the finished withdrawals last changed before `before`: each
    /// running actor is told to, and up to [`PARKED_PER_SWEEP`] accounts'
    /// slots are visited for parked states, from where the last call
    /// stopped (round the directory, so every parked state is visited in
    /// turn whatever the shard holds). A map that grew or shrank in between
    /// may shift the order: a state missed is visited on the next round.
    pub fn forget_finished(&mut self, before: UnixMs) {
        if before == UnixMs::UNKNOWN {
            return;
        }
        for running in &self.running {
            running.actor.do_send(ForgetFinished { before });
        }
        let log = Rc::clone(&self.seed.log);
        let Some(mut gauges) = log.gauges_mut() else {
            return;
        };
        let mut cursor = self.parked_cursor;
        self.visit_parked(&mut cursor, PARKED_PER_SWEEP, |state| {
            horizon::forget(state, before, &mut gauges);
        });
        self.parked_cursor = cursor;
    }

    /// Sends upkeep `jobs` (the engine's own, not a caller's) to the
    /// account's actor: a running one is not counted as used, so upkeep
    /// never keeps an idle actor from retiring; a parked state gets an
    /// actor. Dropped (each job answered `shutting_down`) for an account
    /// the shard does not hold.
    pub fn upkeep<J: Job>(&mut self, account: AccountId, jobs: RunCommands<J>) {
        if let Some(Slot::Running(index)) = self.slots.get(&account) {
            if let Some(running) = self.running.get(*index) {
                return running.actor.do_send(jobs);
            }
        }
        if let Some(actor) = self.actor_of(account, false) {
            actor.do_send(jobs);
        }
    }

    /// The accounts whose actor runs.
    pub fn running_accounts(&self) -> impl Iterator<Item = AccountId> + '_ {
        self.running.iter().map(|running| running.account)
    }

    /// Shows `visit` the parked states among up to `limit` accounts' slots,
    /// from `cursor` on (then moved past them), round the directory: each
    /// periodic task that walks parked states keeps its own cursor.
    pub fn visit_parked(
        &mut self,
        cursor: &mut usize,
        limit: usize,
        mut visit: impl FnMut(&mut AccountState),
    ) {
        if *cursor >= self.slots.len() {
            *cursor = 0;
        }
        for slot in self.slots.values_mut().skip(*cursor).take(limit) {
            if let Slot::Parked(state) = slot {
                visit(state);
            }
            *cursor += 1;
        }
    }

    /// Sends the retirements decided since the last call. Called once a
    /// message's commands have been sent, so a command for an account
    /// retired while its batch was being grouped still reaches the actor
    /// before its `Retire` does.
    pub fn send_retirements(&mut self) {
        for (actor, to) in self.to_retire.drain(..) {
            actor.do_send(Retire { to });
        }
    }
}

/// Parks the account's state if its retiring actor has handed it back.
/// `Ok(true)` unless the account is still retiring; refused if the actor
/// stopped without handing its state back (only when the shard stops).
fn park_if_back(
    slots: &mut foldhash::HashMap<AccountId, Slot>,
    account: AccountId,
) -> Result<bool, LedgerError> {
    let Some(Slot::Retiring(handover)) = slots.get_mut(&account) else {
        return Ok(true);
    };
    match handover.try_recv() {
        Ok(state) => {
            slots.insert(account, Slot::Parked(Box::new(state)));
            Ok(true)
        }
        Err(TryRecvError::Empty) => Ok(false),
        Err(TryRecvError::Closed) => {
            tracing::error!(
                account,
                "a retiring account actor stopped without handing its state back \
                 (the shard is stopping); the account is refused until a restart"
            );
            Err(LedgerError::ShuttingDown)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::gauges::WithdrawalGauges;
    use crate::domain::money::usd;
    use crate::engine::command::{DepositCommand, Job, Ran, WithdrawalCommand};
    use crate::engine::messages::{BalanceOf, Read};
    use crate::engine::round::{RoundReplies, RunCommands};
    use crate::storage::journal::Journal;

    fn directory(actors_max: usize) -> Directory {
        forgetting_directory(Vec::new(), actors_max, Forgetting::never())
    }

    /// A directory on `recovered` states whose shard forgets as
    /// `forgetting` says; its gauges count the states' withdrawals.
    fn forgetting_directory(
        recovered: Vec<AccountState>,
        actors_max: usize,
        forgetting: Forgetting,
    ) -> Directory {
        let stamper = crate::engine::stamp::Stamper::new(
            crate::clock::SharedClock::system(),
            crate::domain::time::UnixMs::UNKNOWN,
        );
        let gauges = WithdrawalGauges::scan(&recovered);
        let log = ShardLog::new(0, Journal::memory_only(), None, gauges, stamper);
        let seed = ActorSeed {
            log: Rc::new(log),
            policy: std::sync::Arc::new(crate::domain::policy::Policy::new(8)),
            forgetting: Rc::new(forgetting),
        };
        Directory::new(recovered, actors_max, seed)
    }

    /// Sends one job to an actor; its reply once run.
    async fn run<J: Job>(actor: &Addr<AccountActor>, job: J) -> J::Reply {
        let round = RoundReplies::expecting(1, 1);
        actor.do_send(RunCommands::new(vec![(0, job)], round.clone()));
        let mut replies = round.all().await;
        replies.pop().unwrap().1.unwrap()
    }

    fn deposit(amount: i128) -> DepositCommand {
        DepositCommand {
            currency: usd(),
            amount,
            key: None,
            metadata: Default::default(),
        }
    }

    /// A command for an account whose actor was just told to retire goes
    /// to a new actor at once, which runs it only on the state handed
    /// back: after everything sent to the old actor, nothing lost.
    #[test]
    fn a_command_during_a_handover_runs_on_the_state_handed_back() {
        actix::System::new().block_on(async {
            let mut directory = directory(8);
            let first = directory.actor_of(1, true).unwrap();
            // Sent, not yet run: the retirement must come after it.
            let round = RoundReplies::expecting(1, 1);
            first.do_send(RunCommands::new(vec![(0, deposit(500))], round.clone()));
            directory.sweep();
            directory.sweep();
            assert_eq!(directory.running(), 0, "idle for a whole sweep: retired");
            // Retiring: a new actor takes the command and waits for the state.
            let second = directory.actor_of(1, true).unwrap();
            assert_ne!(first, second);
            drop(first);
            let round2 = RoundReplies::expecting(1, 1);
            let request = WithdrawalCommand::request(usd(), 200, None);
            second.do_send(RunCommands::new(vec![(0, request)], round2.clone()));
            directory.send_retirements();
            assert!(round.all().await[0].1.is_ok());
            let withdrawal = round2.all().await.pop().unwrap().1;
            assert!(
                matches!(withdrawal, Ok(Ran::Done(_))),
                "the withdrawal was refused or held"
            );
            let balance = second.send(Read(BalanceOf(usd()))).await.unwrap().unwrap();
            assert_eq!((balance.available, balance.locked), (3.into(), 2.into()));
        });
    }

    /// Retired and idle, the state comes back and is parked; reads find it
    /// in place and the next command starts an actor on it.
    #[test]
    fn a_retired_state_is_parked_and_moved_into_the_next_actor() {
        actix::System::new().block_on(async {
            let mut directory = directory(8);
            let actor = directory.actor_of(7, true).unwrap();
            run(&actor, deposit(900)).await;
            drop(actor);
            directory.sweep();
            directory.sweep();
            directory.send_retirements();
            // Let the actor take its `Retire` (a bounded wait on the
            // handover itself).
            for _ in 0..1_000 {
                if park_if_back(&mut directory.slots, 7).unwrap() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            match directory.find(7).unwrap() {
                Found::Parked(state) => assert_eq!(state.balance(usd()).available, 900),
                Found::Running(_) => panic!("still running"),
                Found::Unknown => panic!("lost"),
            }
            assert_eq!(directory.len(), 1);
            let actor = directory.actor_of(7, false).unwrap();
            run(&actor, deposit(100)).await;
            let balance = actor.send(Read(BalanceOf(usd()))).await.unwrap().unwrap();
            assert_eq!(balance.available, 10.into());
            assert!(
                directory.actor_of(8, false).is_none(),
                "unknown, not created"
            );
            assert_eq!(directory.len(), 1);
        });
    }

    /// Every account is in what `all` answers, even when starting an
    /// actor for a state on its way back meets the cap of running actors:
    /// a sweep then would retire idle actors into states on their way,
    /// which neither list holds (a full export missed accounts so).
    #[test]
    fn all_answers_every_account_when_a_handover_meets_the_cap() {
        actix::System::new().block_on(async {
            let mut directory = directory(2);
            directory.actor_of(1, true).unwrap();
            directory.sweep();
            directory.sweep();
            // Account 1 is on its way back (its `Retire` not even sent).
            directory.actor_of(2, true).unwrap();
            directory.actor_of(3, true).unwrap();
            directory.sweep();
            // 2 and 3 now idle for a sweep, at the cap of two actors.
            let (running, parked) = directory.all().unwrap();
            assert_eq!(running.len() + parked.len(), 3, "an account was left out");
        });
    }

    /// A directory entry stays small whatever an account holds: parked
    /// states are boxed and running actors' addresses kept apart, so a map
    /// sized for many accounts (with its spare capacity) holds 24-byte
    /// buckets, not states.
    #[test]
    fn a_slot_is_two_words() {
        assert_eq!(std::mem::size_of::<Slot>(), 16);
    }

    /// Finished withdrawals leave memory on each path the engine forgets
    /// on: a retiring actor's state, a running actor told by the sweep,
    /// parked states visited by it (a bounded number per call, in turn).
    mod forgetting {
        use super::*;
        use crate::clock::ManualClock;
        use crate::config::Config;
        use crate::domain::ids::TransactionId;
        use crate::domain::withdrawal::{StatusKind, TransitionAction};
        use crate::engine::messages::{StateOf, WithdrawalOf};

        const RETENTION_MS: u64 = 60_000;

        /// A memory-only shard keeping finished withdrawals a minute, on
        /// `clock`.
        fn retention(clock: &ManualClock) -> Forgetting {
            let config = Config {
                clock: clock.shared(),
                finished_withdrawal_retention_ms: RETENTION_MS,
                ..Config::for_tests()
            };
            Forgetting::for_shard(&config, 0, None)
        }

        /// Account `id` with one withdrawal completed at `clock`'s now.
        fn with_completed(id: AccountId, clock: &ManualClock) -> AccountState {
            let at = UnixMs::from_millis(crate::clock::Clock::unix_ms(clock));
            let mut state = AccountState::new(id);
            state.deposit(usd(), 1_000, None, at).unwrap();
            let w = state.request_withdrawal(usd(), 100, None, 8, at).unwrap();
            let tx = w.output.transaction_id;
            state
                .update_withdrawal(tx, TransitionAction::Complete, "", at)
                .unwrap();
            state
        }

        fn past_retention(clock: &ManualClock) -> UnixMs {
            clock.advance(std::time::Duration::from_millis(RETENTION_MS + 1));
            UnixMs::from_millis(crate::clock::Clock::unix_ms(clock) - RETENTION_MS)
        }

        fn completed_count(directory: &Directory) -> u64 {
            let gauges = directory.seed.log.gauges().unwrap();
            gauges.get("USD", StatusKind::Completed).count
        }

        #[test]
        fn a_retiring_actor_forgets_before_handing_its_state_back() {
            actix::System::new().block_on(async {
                let clock = ManualClock::new();
                let state = with_completed(3, &clock);
                let mut directory = forgetting_directory(vec![state], 8, retention(&clock));
                let actor = directory.actor_of(3, false).unwrap();
                past_retention(&clock);
                drop(actor);
                // Only the retirement forgets: no `forget_finished` here.
                directory.sweep();
                directory.sweep();
                directory.send_retirements();
                for _ in 0..1_000 {
                    if park_if_back(&mut directory.slots, 3).unwrap() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                let Ok(Found::Parked(state)) = directory.find(3) else {
                    panic!("not parked");
                };
                assert_eq!(state.withdrawals().count(), 0);
                assert_eq!(state.balance(usd()).burned, 100);
                assert_eq!(completed_count(&directory), 0);
            });
        }

        #[test]
        fn the_sweep_tells_running_actors_to_forget() {
            actix::System::new().block_on(async {
                let clock = ManualClock::new();
                let state = with_completed(4, &clock);
                let tx = TransactionId::new(4, 2);
                let mut directory = forgetting_directory(vec![state], 8, retention(&clock));
                let actor = directory.actor_of(4, false).unwrap();
                assert!(actor.send(Read(WithdrawalOf(tx))).await.unwrap().is_ok());
                let before = past_retention(&clock);
                directory.forget_finished(before);
                assert_eq!(directory.running(), 1, "still running");
                let read = actor.send(Read(WithdrawalOf(tx))).await.unwrap();
                assert_eq!(
                    read,
                    Err(LedgerError::UnknownWithdrawal { transaction_id: tx })
                );
                let state = actor.send(Read(StateOf)).await.unwrap().unwrap();
                assert_eq!(state.withdrawals().count(), 0);
                assert_eq!(completed_count(&directory), 0);
            });
        }

        #[test]
        fn parked_states_are_visited_a_bounded_number_per_sweep_and_all_in_turn() {
            let clock = ManualClock::new();
            let count = PARKED_PER_SWEEP + 10;
            let states = (1..=count as AccountId)
                .map(|id| with_completed(id, &clock))
                .collect();
            let mut directory = forgetting_directory(states, 8, retention(&clock));
            // Not past the retention: nothing goes (the first
            // PARKED_PER_SWEEP slots are visited).
            directory.forget_finished(UnixMs::from_millis(1));
            assert_eq!(completed_count(&directory), count as u64);
            let before = past_retention(&clock);
            directory.forget_finished(before);
            assert_eq!(
                completed_count(&directory),
                PARKED_PER_SWEEP as u64,
                "the 10 slots after the last visit"
            );
            directory.forget_finished(before);
            assert_eq!(completed_count(&directory), 0, "round again from the start");
            let (_, parked) = directory.all().unwrap();
            assert!(parked.iter().all(|s| s.withdrawals().count() == 0));
        }

        #[test]
        fn an_unknown_horizon_forgets_nothing_and_tells_no_actor() {
            actix::System::new().block_on(async {
                let clock = ManualClock::new();
                let state = with_completed(5, &clock);
                let mut directory = forgetting_directory(vec![state], 8, Forgetting::never());
                let _actor = directory.actor_of(5, false).unwrap();
                past_retention(&clock);
                directory.forget_finished(directory.seed.forgetting.horizon());
                directory.sweep();
                directory.sweep();
                directory.send_retirements();
                assert_eq!(completed_count(&directory), 1);
            });
        }
    }
}
