//! The pipelines that drive the checks over the journal: per row, per batch and per OTP flow,
//! each planned from what the journal already knows.

pub mod batches;
pub mod otp;
pub mod plan;
pub mod rows;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::checks::PollSchedule;
use crate::http::{Api, CallError, Intent};
use crate::journal::{BatchState, JournalWriter};
use crate::outcome::{Outcome, Reason, RowKey, Status};
use crate::quota::gate::GateError;
use crate::stats::Stats;
use crate::util::stop::Stop;
use crate::util::sync::lock;

/// What every task of a run shares.
pub struct Ctx {
    /// The check's name: identifiers are hashed with it.
    pub ident_scope: String,
    pub api: Api,
    pub journal: JournalWriter,
    pub stats: Arc<Stats>,
    pub stop: Arc<Stop>,
    /// Paid calls under way, from before they queue at the quota gate to their answer. Their
    /// intent is committed between the grant and the send, so a kill leaves unconfirmed only
    /// the calls that may have left; this bound keeps even those to the provider's
    /// concurrency in calls: that many rows, or that many batches.
    pub sending: Semaphore,
    /// The paid calls the run may still make, under its cap.
    allowance: Arc<Allowance>,
    fatal: Mutex<Option<String>>,
}

impl Ctx {
    pub fn new(
        ident_scope: String,
        api: Api,
        journal: JournalWriter,
        stats: Arc<Stats>,
        stop: Arc<Stop>,
        concurrency: usize,
        max_paid_calls: Option<u64>,
    ) -> Ctx {
        *lock(&stats.max_paid_calls) = max_paid_calls;
        let allowance = Arc::new(Allowance {
            left: max_paid_calls.map(AtomicU64::new),
            stats: stats.clone(),
        });
        Ctx {
            ident_scope,
            api,
            journal,
            stats,
            stop,
            sending: Semaphore::new(concurrency),
            allowance,
            fatal: Mutex::new(None),
        }
    }

    /// Stops sending: no new request leaves, waiting ones are refused, requests already on the
    /// wire finish and are recorded.
    pub fn halt(&self) {
        self.stop.set();
        self.api.gate().close();
    }

    /// Stops the run for a reason that makes going on pointless or harmful.
    pub fn fail(&self, message: String) {
        lock(&self.fatal).get_or_insert(message);
        self.halt();
    }

    /// Why the run failed, if it did.
    pub fn fatal(&self) -> Option<String> {
        lock(&self.fatal).clone()
    }

    /// Records a row's outcome reached in this run.
    pub fn finish(&self, key: RowKey, outcome: Outcome, attempts: Option<u32>) {
        self.journal.done(key, outcome, attempts);
        Stats::add(&self.stats.done, 1);
    }

    /// Records a running row's outcome, answered by a poll: see [`JournalWriter::polled`].
    pub fn polled(&self, key: RowKey, outcome: Outcome) {
        self.journal.polled(key, outcome);
        Stats::add(&self.stats.done, 1);
    }

    /// Takes `n` paid calls from the run's cap; see [`Allowance::take`].
    pub fn take_paid(&self, n: u64) -> bool {
        self.allowance.take(n)
    }

    /// Settles rows the cap left unsent: `pending`, and the next run sends them.
    pub fn capped(&self, keys: &[RowKey]) {
        let cap = lock(&self.stats.max_paid_calls).unwrap_or_default();
        let outcome = Outcome::new(Status::Pending)
            .with_reason(Reason::PAID_CALL_LIMIT)
            .with_message(format!(
                "not sent: the run reached its cap of {cap} paid calls (max_paid_calls or \
                 max_spend); the next run continues"
            ));
        Stats::add(&self.stats.capped, keys.len() as u64);
        for k in keys {
            self.finish(*k, outcome.clone(), None);
        }
    }

    /// Everything before a paid call queues: the stop, the day's quota and the run's cap are
    /// checked (`share`: the paid calls it takes from the cap, 0 for a batch whose rows took
    /// theirs as they joined it) and a sending permit is taken. Returns the permit and the
    /// intent the client records after its grant; `None` when the call must not be made (the
    /// rows are settled already, or stay as they are for the next run).
    pub async fn begin_paid(
        &self,
        keys: &[RowKey],
        share: u64,
        batch: Option<i64>,
        name: Option<String>,
    ) -> Option<(SemaphorePermit<'_>, PaidIntent)> {
        if self.stop.is_set() {
            return None;
        }
        if let Some(refusal) = self.api.gate().refusal() {
            let outcome = match refusal {
                GateError::DayExhausted => daily_quota_pending(),
                GateError::ProviderDown => provider_down(),
                GateError::Closed => return None,
            };
            for k in keys {
                self.finish(*k, outcome.clone(), None);
            }
            return None;
        }
        if !self.take_paid(share) {
            self.capped(keys);
            return None;
        }
        let permit = self.sending.acquire().await.ok()?;
        if self.stop.is_set() {
            return None;
        }
        let intent = PaidIntent {
            journal: self.journal.clone(),
            allowance: self.allowance.clone(),
            keys: keys.to_vec(),
            batch,
            name,
        };
        Some((permit, intent))
    }

    /// Settles rows whose paid call (or upload) got no usable answer.
    pub fn submit_failed(&self, keys: Vec<RowKey>, batch: Option<i64>, error: CallError) {
        match error {
            CallError::Stopped => self.journal.revert(keys, batch),
            CallError::DayQuota => self.not_sent(keys, batch, &daily_quota_pending()),
            CallError::ProviderDown => self.not_sent(keys, batch, &provider_down()),
            CallError::GaveUp {
                reason,
                message,
                attempts,
                ..
            } => {
                // Answered every time, never accepted: nothing was billed; a later run tries again.
                if let Some(b) = batch {
                    self.journal.batch_closed(b, BatchState::Failed);
                }
                let outcome = Outcome::new(Status::Error)
                    .with_reason(reason)
                    .with_message(message);
                for k in keys {
                    self.finish(k, outcome.clone(), Some(attempts));
                }
            }
            CallError::Unconfirmed {
                label,
                message,
                attempts,
            } => self.hold(keys, batch, &format!("{label}: {message}"), Some(attempts)),
            CallError::Fatal(message) => {
                self.journal.revert(keys, batch);
                self.fail(message);
            }
        }
    }

    /// Settles rows whose committed intent the gate refused to send: nothing left, nothing
    /// was billed.
    pub fn not_sent(&self, keys: Vec<RowKey>, batch: Option<i64>, outcome: &Outcome) {
        self.journal.revert(keys.clone(), batch);
        for k in keys {
            self.finish(k, outcome.clone(), None);
        }
    }

    /// Holds rows whose paid call may have been billed without an answer that can be had; a
    /// run with --resend-unconfirmed sends them again.
    pub fn hold(&self, keys: Vec<RowKey>, batch: Option<i64>, why: &str, attempts: Option<u32>) {
        tracing::warn!(
            "{why}; {} row(s) held as unconfirmed (re-run with --resend-unconfirmed to send \
             them again)",
            keys.len()
        );
        Stats::add(&self.stats.unconfirmed, keys.len() as u64);
        Stats::add(&self.stats.done, keys.len() as u64);
        self.journal.unconfirmed(keys, batch, attempts);
    }

    /// Settles rows the provider accepted but whose result could not be fetched: they keep
    /// their request id, and a later run polls again.
    pub fn poll_failed(&self, keys: Vec<RowKey>, error: CallError) {
        let outcome = match error {
            CallError::Stopped => return,
            CallError::Fatal(message) => return self.fail(message),
            CallError::DayQuota => daily_quota_pending(),
            CallError::ProviderDown => Outcome::new(Status::Pending)
                .with_reason(Reason::PROVIDER_UNAVAILABLE)
                .with_message(
                    "accepted, but the provider kept failing before the result could be \
                     fetched; the next run polls again",
                ),
            CallError::GaveUp {
                reason, message, ..
            } => Outcome::new(Status::Error)
                .with_reason(reason)
                .with_message(message),
            // Polls cost nothing, so a lost answer is retried like any transport failure and
            // never comes back unconfirmed; the arm only completes the match.
            CallError::Unconfirmed { message, .. } => Outcome::new(Status::Error)
                .with_reason(Reason::TRANSPORT_ERROR)
                .with_message(message),
        };
        for k in keys {
            self.finish(k, outcome.clone(), None);
        }
    }

    /// Polls on `schedule` until `poll` gives an answer, the deadline passes (`None`: the rows
    /// are pending, and the next run polls again), or the run stops (`None` too: the rows stay
    /// running).
    pub async fn poll_until<T, F>(
        &self,
        schedule: PollSchedule,
        mut poll: impl FnMut() -> F,
        on_deadline: impl FnOnce(),
    ) -> Option<T>
    where
        F: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + schedule.deadline;
        for n in 0u32.. {
            let now = Instant::now();
            if now >= deadline {
                on_deadline();
                return None;
            }
            if !self.pause(schedule.delay(n).min(deadline - now)).await {
                return None;
            }
            if let Some(answer) = poll().await {
                return Some(answer);
            }
        }
        None
    }

    /// Waits `d` unless the run stops first (then `false`), on the quota gate's clock, which
    /// wakes the runtime for its slots anyway ([`crate::quota::gate::Gate::after`]).
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.api.gate().after(d) => !self.stop.is_set(),
            () = self.stop.wait() => false,
        }
    }
}

/// The paid calls a run may still make under its cap (`max_paid_calls`; `left` is `None`
/// without one), and the count of those it took.
struct Allowance {
    left: Option<AtomicU64>,
    stats: Arc<Stats>,
}

impl Allowance {
    /// Takes `n` paid calls; `false`, and nothing taken, when fewer are left. A call takes its
    /// share before it queues and keeps it, whatever becomes of it (the gate may refuse it
    /// later), and a request the provider answered with a failure takes another to be sent
    /// again: so the cap holds across retries and resends, however the provider bills them.
    fn take(&self, n: u64) -> bool {
        let taken = self.left.as_ref().is_none_or(|left| {
            left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| l.checked_sub(n))
                .is_ok()
        });
        if taken {
            Stats::add(&self.stats.paid, n);
        }
        taken
    }
}

/// A paid call's rows, batch and chosen name, committed to the journal as its intent.
pub struct PaidIntent {
    journal: JournalWriter,
    allowance: Arc<Allowance>,
    keys: Vec<RowKey>,
    batch: Option<i64>,
    name: Option<String>,
}

impl Intent for PaidIntent {
    /// Sends the intent to the journal, to be committed at `at`; the future is its commit. A
    /// journal that cannot take it stops the run before the request leaves.
    fn record(
        &self,
        at: std::time::Instant,
    ) -> Pin<Box<dyn Future<Output = Result<Duration, CallError>> + Send + '_>> {
        let committed =
            self.journal
                .intent_at(self.keys.clone(), self.batch, self.name.clone(), at);
        Box::pin(async move { committed.await.map_err(|e| CallError::Fatal(e.to_string())) })
    }

    /// A batch takes one paid call per row again, as it took them first.
    fn again(&self) -> bool {
        self.allowance.take(self.keys.len() as u64)
    }
}

pub fn daily_quota_pending() -> Outcome {
    Outcome::new(Status::Pending)
        .with_reason(Reason::DAILY_QUOTA_EXHAUSTED)
        .with_message("the provider's daily quota was used up; the next run continues")
}

/// A row not sent because the circuit breaker gave up on the provider: nothing was billed,
/// and the next run sends it.
pub fn provider_down() -> Outcome {
    Outcome::new(Status::Error)
        .with_reason(Reason::PROVIDER_UNAVAILABLE)
        .with_message(
            "not sent: the provider kept failing and the run gave up on it; the next run sends it",
        )
}

pub fn still_processing() -> Outcome {
    Outcome::new(Status::Pending)
        .with_reason(Reason::STILL_PROCESSING)
        .with_message(
            "the provider had not finished by the polling deadline; the next run polls again",
        )
}
