//! The quota gate: every request to a provider passes here first, so the provider's windows,
//! its answers about them and its health are handled in one place for every check, submit,
//! poll and download.
//!
//! Short windows (per second, per minute) are enforced by pacing with governor's GCRA limiter
//! ([`super::pace`]): grants at least one period apart, the period of the tightest window,
//! `(window + guard) / limit`, widened by a margin learned from the provider's 429s
//! ([`super::adaptive::Margin`]). Any `limit + 1` consecutive grants then span more than the
//! window, so no window of the provider's, fixed or sliding, wherever its edges fall, sees more
//! than its limit, and a zero-burst limiter sees no two requests closer than its period. When
//! no short window is configured, the period comes from an adaptive controller instead
//! ([`super::adaptive::Rate`]). Jobs on one provider account share one schedule of slots, so
//! that together they keep to the account's windows ([`super::pace::Schedule`]).
//!
//! The per-day window is a count over the trailing 24 hours, carried across runs through the
//! journal and the usage ledger: when it is spent, the gate refuses instead of waiting for
//! hours.
//!
//! One grant loop, on a thread of its own so that slots are kept to a fraction of a
//! millisecond, serves the waiters: requests the provider does not count first, then polls
//! before new submissions, so that work already paid for drains first. A paid request is
//! granted a little before its slot, records its intent in that time, and is released when its
//! slot comes. Every grant is reported back with how it went: a 429 lowers the margin, and is
//! sent again at the next slot without holding anyone; a run of 429s, a `Retry-After` or a
//! window announced as used up pause every worker of the provider; timeouts lower the
//! concurrency, and failures feed the circuit breaker ([`super::breaker`]).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::adaptive::{Concurrency, Margin, Rate, Sent};
use super::breaker::{Admit, Breaker};
use super::pace::{Agreed, Pacer, Schedule, mono_now};
use super::retry::Backoff;
use crate::config::Quotas;
use crate::quota::hints::Hints;

pub const DAY_MINUTES: i64 = 24 * 60;

/// 429s in a row, each to a request sent after the one before came back, that make a run of
/// them: the provider is refusing everything, not catching a pacing miss, and everyone waits.
const REFUSALS_IN_A_ROW: u32 = 3;

/// The wait after a run of 429s that say nothing of when to come back: short, because the
/// pacing is what slows the stream; growing, in case the provider keeps refusing.
const REFUSED_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(250),
    cap: Duration::from_secs(30),
};

/// A reset this short is not waited for after an answer that used a window's last request:
/// with whole-second resets it could mean anything from 1 ms to 1 s, and the pacing is
/// already keeping to that window. A 429 is still waited out.
const SHORT_RESET: Duration = Duration::from_secs(1);

/// A paid request released later than this after its slot gives the slot up and takes the
/// next: sent late, it would come too close to the request after it.
const LATE: Duration = Duration::from_millis(2);

/// The lead of a paid grant: how long its intent takes to commit, with room to spare.
const MIN_LEAD: Duration = Duration::from_millis(2);
const MAX_LEAD: Duration = Duration::from_millis(100);

/// How long the grant loop sleeps at most, to notice that its gate is gone.
const LOOP_TICK: Duration = Duration::from_millis(250);

/// Which queue a request waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Polls, downloads, authentication: work already paid for.
    High,
    /// New paid submissions.
    Low,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("the provider's daily quota is used up")]
    DayExhausted,
    #[error("the provider kept failing; the circuit breaker gave up")]
    ProviderDown,
    #[error("the run is stopping")]
    Closed,
}

/// Records each granted request, by Unix minute, for the per-day window of later runs.
pub type UsageSink = Box<dyn Fn(i64) + Send + Sync>;

/// How a gate paces and protects a provider.
pub struct GateSettings {
    pub quotas: Quotas,
    /// Slack added to each paced window (see the module docs).
    pub guard: Duration,
    /// The most requests in flight at once; timeouts lower it for a while.
    pub concurrency: usize,
    /// How long the provider may stay down (circuit open) before the run gives up on it.
    pub give_up_after: Duration,
}

impl GateSettings {
    /// A provider's gate settings, as its configuration resolved them.
    pub fn of(settings: &crate::config::ProviderSettings) -> GateSettings {
        GateSettings {
            quotas: settings.quotas,
            guard: settings.pacing_guard,
            concurrency: settings.concurrency,
            give_up_after: settings.give_up_after,
        }
    }
}

/// What a request asks of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub priority: Priority,
    /// Whether the provider counts it against the quota (paced, and in the day's window) or
    /// not (only pauses and the breaker hold it).
    pub counted: bool,
    /// Whether it records an intent between its grant and its send: it is granted ahead.
    pub paid: bool,
    /// Whether it goes before the others of its queue: a request the provider refused once,
    /// sent again at the next slot.
    pub again: bool,
}

/// A provider's quota gate. Cloning shares it.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

/// A gate held without keeping it alive: for a helper that must end with it.
pub struct WeakGate(Weak<Inner>);

impl WeakGate {
    pub fn upgrade(&self) -> Option<Gate> {
        self.0.upgrade().map(|inner| Gate { inner })
    }
}

struct Inner {
    day: Option<Mutex<DayWindow>>,
    state: Mutex<State>,
    /// Wakes the grant loop: a waiter came, a slot of concurrency freed, the gate closed.
    wake: Condvar,
    usage: Option<UsageSink>,
}

struct Waiter {
    tx: oneshot::Sender<Result<Grant, GateError>>,
    paid: bool,
}

/// Everything the grant loop and the reports share, under one lock.
struct State {
    queues: Queues,
    control: Control,
    pacer: Pacer,
    /// Grants waiting for their slot, in slot order: released by the grant loop when it comes.
    releases: VecDeque<(Duration, oneshot::Sender<()>)>,
}

#[derive(Default)]
struct Queues {
    /// Requests the provider does not count (polls, when so configured): no pacing, no day.
    free: VecDeque<Waiter>,
    high: VecDeque<Waiter>,
    low: VecDeque<Waiter>,
    /// Why counted requests are refused from now on (the day is spent, the provider is down).
    refused: Option<GateError>,
    closed: bool,
}

impl Queues {
    fn counted_waiting(&self) -> bool {
        !self.high.is_empty() || !self.low.is_empty()
    }

    fn next_counted(&self) -> Option<&Waiter> {
        self.high.front().or_else(|| self.low.front())
    }

    /// Refuses counted requests from now on; every request too unless `e` is a spent day.
    fn refuse(&mut self, e: GateError) {
        if self.refused.is_none() || e == GateError::ProviderDown {
            self.refused = Some(e);
        }
        let mut failed: Vec<Waiter> = self.high.drain(..).collect();
        failed.extend(self.low.drain(..));
        if e != GateError::DayExhausted {
            failed.extend(self.free.drain(..));
        }
        for w in failed {
            let _ = w.tx.send(Err(e));
        }
    }
}

/// How the rate is found.
enum Pace {
    /// The config names the short windows: paced at `base`, widened by the learned margin.
    Known {
        base: Duration,
        margin: Margin,
        /// The configured limit, its window and unit, for the summary: 25, 1 s and "/s".
        configured: (f64, Duration, &'static str),
    },
    /// None is configured: the rate is found from the answers.
    Unknown(Rate),
}

/// The pacing, the adaptive controllers and the breaker: everything an answer feeds back.
struct Control {
    pace: Pace,
    paused_until: Option<Instant>,
    in_flight: usize,
    concurrency: Concurrency,
    breaker: Breaker,
    /// 429s in a row, counting those to requests sent after the previous one came back.
    refusals: u32,
    last_refused: Option<Instant>,
    /// Whether requests were still queued at the last grant: only then is the rate a limit.
    backlogged: bool,
    /// How long intents took to commit lately: a decaying maximum, for the lead.
    commit: Duration,
    /// How many jobs share the account's pace now, this one among them.
    runs: usize,
}

impl Control {
    fn period(&self) -> Duration {
        match &self.pace {
            Pace::Known { base, margin, .. } => base.div_f64(margin.fraction()),
            Pace::Unknown(rate) => rate.period(),
        }
    }

    /// Whether the period is learned from the provider, not a start-up ramp's.
    fn settled(&self) -> bool {
        match &self.pace {
            Pace::Known { margin, .. } => !margin.ramping(),
            Pace::Unknown(rate) => rate.refused_once(),
        }
    }

    /// The account's other jobs agreed on a pace: a job still ramping up starts from theirs.
    fn agreed(&mut self, agreed: Agreed) {
        self.runs = agreed.runs;
        if let (Pace::Known { base, margin, .. }, Some(learned)) = (&mut self.pace, agreed.learned)
        {
            margin.join(base.as_secs_f64() / learned.as_secs_f64());
        }
    }

    fn lead(&self) -> Duration {
        (self.commit * 3 / 2 + Duration::from_millis(1)).clamp(MIN_LEAD, MAX_LEAD)
    }

    fn pause(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|t| t < until) {
            self.paused_until = Some(until);
        }
    }

    fn sent(&self) -> Option<Sent> {
        match &self.pace {
            Pace::Known { margin, .. } => Some(margin.sent()),
            Pace::Unknown(_) => None,
        }
    }
}

/// The right to send one request. Report how it went; dropping it unreported frees its slot.
pub struct Grant {
    inner: Arc<Inner>,
    /// When it was sent (its release), for the round trip.
    at: Instant,
    /// The monotonic time of its slot, for a counted request.
    slot: Option<Duration>,
    release: Option<oneshot::Receiver<()>>,
    sent: Option<Sent>,
    probe: bool,
    counted: bool,
    open: bool,
}

/// How a granted request went, as the gate's controllers need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The provider answered (a 2xx, or a business answer the check reads).
    Answered(Hints),
    /// A 429.
    RateLimited(Hints),
    /// A 5xx, a 408 or a transport failure; `timeout` when the provider went silent.
    Failed { timeout: bool },
}

/// What the gate says of a 429 it was told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A pacing miss: the margin widened; send the request again at the next slot.
    Miss,
    /// The provider refuses everything, or said when to come back: everyone waits.
    Held,
}

impl Grant {
    /// Waits until the request's slot. `false` when a grant given ahead of its slot comes
    /// back after the slot passed by more than the request may be late (its intent took too
    /// long), or the gate closed: the grant must be given up and a new one asked for.
    pub async fn until_slot(&mut self) -> bool {
        let Some(release) = self.release.take() else {
            self.at = Instant::now();
            return true;
        };
        let released = release.await.is_ok();
        self.at = Instant::now();
        released && self.slot.is_none_or(|slot| mono_now() <= slot + LATE)
    }

    /// Feeds the outcome back: the breaker, the adaptive rate, margin and concurrency, and
    /// any pause or policy the provider's headers announce.
    pub fn report(mut self, signal: Signal) -> Option<Refusal> {
        self.open = false;
        let now = Instant::now();
        let rtt = now.saturating_duration_since(self.at);
        let mut st = lock(&self.inner.state);
        let c = &mut st.control;
        c.in_flight = c.in_flight.saturating_sub(1);
        let mut refusal = None;
        let exhausted = match signal {
            Signal::Answered(hints) => {
                c.breaker.record(now, true, self.probe);
                c.concurrency.answered(now);
                c.refusals = 0;
                let backlogged = c.backlogged;
                match (&mut c.pace, self.sent) {
                    (Pace::Known { margin, .. }, Some(sent)) if self.counted => {
                        margin.answered(now, sent, rtt, c.runs);
                    }
                    (Pace::Unknown(rate), _) => match hints.policy.and_then(|p| p.period()) {
                        Some(p) => rate.learn(1.0 / p.as_secs_f64()),
                        None => rate.answered(now, self.at, backlogged),
                    },
                    _ => {}
                }
                if hints.remaining == Some(0)
                    && let Some(reset) = hints.reset.filter(|r| *r > SHORT_RESET)
                {
                    c.pause(now + reset);
                }
                hints.beyond_reach
            }
            Signal::RateLimited(hints) => {
                c.breaker.record(now, false, self.probe);
                match (&mut c.pace, self.sent) {
                    (Pace::Known { margin, .. }, Some(sent)) => {
                        margin.refused(sent);
                        tracing::debug!(
                            "429: paced at {:.3} of the configured rate now",
                            margin.fraction()
                        );
                    }
                    (Pace::Unknown(rate), _) => {
                        rate.refused(now, self.at);
                        tracing::debug!("429: paced at {:.2}/s now", rate.rate());
                    }
                    _ => {}
                }
                let announced = hints
                    .retry_after
                    .or(hints.reset.filter(|_| hints.remaining == Some(0)));
                // A 429 to a request sent before the last one came back says nothing new:
                // it must not lengthen the run of them.
                let fresh = c.last_refused.is_none_or(|t| self.at > t);
                if fresh {
                    c.refusals += 1;
                    c.last_refused = Some(now);
                }
                refusal = Some(match announced {
                    _ if hints.beyond_reach => Refusal::Held,
                    Some(wait) => {
                        c.pause(now + wait);
                        Refusal::Held
                    }
                    None if c.refusals >= REFUSALS_IN_A_ROW => {
                        if fresh {
                            let wait = REFUSED_BACKOFF.delay(c.refusals - REFUSALS_IN_A_ROW);
                            c.pause(now + wait);
                        }
                        Refusal::Held
                    }
                    None => Refusal::Miss,
                });
                hints.beyond_reach
            }
            Signal::Failed { timeout } => {
                c.breaker.record(now, false, self.probe);
                if timeout {
                    c.concurrency.overloaded(now, self.at);
                }
                false
            }
        };
        if exhausted {
            tracing::warn!("the provider says its quota is spent for today");
            st.queues.refuse(GateError::DayExhausted);
        }
        drop(st);
        self.inner.wake.notify_one();
        refusal
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.open {
            let mut st = lock(&self.inner.state);
            st.control.in_flight = st.control.in_flight.saturating_sub(1);
            if self.probe {
                st.control.breaker.probe_abandoned();
            }
            drop(st);
            self.inner.wake.notify_one();
        }
    }
}

/// Requests per minute over the trailing 24 hours.
struct DayWindow {
    limit: u64,
    minutes: VecDeque<(i64, u64)>,
    used: u64,
}

impl DayWindow {
    /// Counts `n` requests made at `minute`, keeping the minutes in order.
    fn add(&mut self, minute: i64, n: u64) {
        self.used += n;
        let at = self.minutes.partition_point(|(m, _)| *m <= minute);
        match at.checked_sub(1).map(|i| &mut self.minutes[i]) {
            Some((m, count)) if *m == minute => *count += n,
            _ => self.minutes.insert(at, (minute, n)),
        }
    }

    /// Whether a request may be made at `minute`, forgetting minutes older than a day.
    fn room(&mut self, minute: i64) -> bool {
        while let Some(&(m, n)) = self.minutes.front() {
            if m > minute - DAY_MINUTES {
                break;
            }
            self.used -= n;
            self.minutes.pop_front();
        }
        self.used < self.limit
    }
}

/// The pacing period for a provider's short windows: that of the tightest one.
pub fn pacing_period(quotas: &Quotas, guard: Duration) -> Option<Duration> {
    tightest(quotas, guard).map(|(period, _)| period)
}

/// The tightest short window: its pacing period, and its limit, length and unit.
fn tightest(quotas: &Quotas, guard: Duration) -> Option<(Duration, (f64, Duration, &'static str))> {
    let per = |window: Duration, n: Option<NonZeroU32>, unit: &'static str| {
        n.map(|n| {
            (
                (window + guard) / n.get(),
                (f64::from(n.get()), window, unit),
            )
        })
    };
    [
        per(Duration::from_secs(1), quotas.per_second, "/s"),
        per(Duration::from_secs(60), quotas.per_minute, "/min"),
    ]
    .into_iter()
    .flatten()
    .max_by_key(|(period, _)| *period)
}

pub fn unix_minute() -> i64 {
    time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .div_euclid(60)
}

/// The adaptive rate never goes past what the concurrency could carry at 1 ms a request.
fn adaptive_ceiling(concurrency: usize) -> f64 {
    concurrency as f64 * 1000.0
}

/// A rate for people: whole above ten, one decimal below.
fn rate_words(rate: f64, unit: &str) -> String {
    if rate >= 10.0 {
        format!("{rate:.0}{unit}")
    } else {
        format!("{rate:.1}{unit}")
    }
}

impl Gate {
    /// A gate for `settings` that paces alone; `used` is what earlier runs spent in the last
    /// 24 hours, per Unix minute.
    pub fn new(settings: &GateSettings, used: Vec<(i64, u64)>, usage: Option<UsageSink>) -> Gate {
        Gate::on(settings, used, usage, Schedule::local())
    }

    /// A gate whose slots come from `schedule`, which other jobs of the account may share.
    pub fn on(
        settings: &GateSettings,
        used: Vec<(i64, u64)>,
        usage: Option<UsageSink>,
        schedule: Schedule,
    ) -> Gate {
        let day = settings.quotas.per_day.map(|limit| {
            let used_total = used.iter().map(|(_, n)| n).sum();
            Mutex::new(DayWindow {
                limit: u64::from(limit.get()),
                minutes: used.into_iter().collect(),
                used: used_total,
            })
        });
        let now = Instant::now();
        let pace = match tightest(&settings.quotas, settings.guard) {
            Some((base, configured)) => Pace::Known {
                base,
                margin: Margin::new(now),
                configured,
            },
            None => Pace::Unknown(Rate::new(now, adaptive_ceiling(settings.concurrency))),
        };
        let control = Control {
            pace,
            paused_until: None,
            in_flight: 0,
            concurrency: Concurrency::new(now, settings.concurrency),
            breaker: Breaker::new(settings.give_up_after),
            refusals: 0,
            last_refused: None,
            backlogged: false,
            commit: Duration::ZERO,
            runs: 1,
        };
        let pacer = Pacer::new(schedule, control.period());
        let inner = Arc::new(Inner {
            day,
            state: Mutex::new(State {
                queues: Queues::default(),
                control,
                pacer,
                releases: VecDeque::new(),
            }),
            wake: Condvar::new(),
            usage,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("bulkverify-gate".into())
            .spawn(move || grant_loop(&weak))
            .expect("cannot start the quota gate's thread");
        Gate { inner }
    }

    /// Waits for the right to send one request.
    pub async fn acquire(&self, ask: Ask) -> Result<Grant, GateError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.inner.state);
            let q = &mut st.queues;
            if q.closed {
                return Err(GateError::Closed);
            }
            match q.refused {
                Some(e) if ask.counted || e != GateError::DayExhausted => return Err(e),
                _ => {}
            }
            let waiter = Waiter { tx, paid: ask.paid };
            let queue = match (ask.counted, ask.priority) {
                (false, _) => &mut q.free,
                (true, Priority::High) => &mut q.high,
                (true, Priority::Low) => &mut q.low,
            };
            if ask.again {
                queue.push_front(waiter);
            } else {
                queue.push_back(waiter);
            }
        }
        self.inner.wake.notify_one();
        rx.await.unwrap_or(Err(GateError::Closed))
    }

    /// An intent took this long to commit: paid grants come that much ahead of their slot.
    pub fn committed_in(&self, took: Duration) {
        let mut st = lock(&self.inner.state);
        let c = &mut st.control;
        c.commit = took.max(c.commit.mul_f64(0.97));
    }

    /// Why new paid requests would be refused now, if they would.
    pub fn refusal(&self) -> Option<GateError> {
        lock(&self.inner.state).queues.refused
    }

    pub fn downgrade(&self) -> WeakGate {
        WeakGate(Arc::downgrade(&self.inner))
    }

    /// Other runs on the same provider account spent these requests (per Unix minute): they
    /// count against this run's per-day window too.
    pub fn spent_elsewhere(&self, spent: &[(i64, u64)]) {
        if let Some(day) = &self.inner.day {
            let mut day = lock(day);
            for &(minute, n) in spent {
                day.add(minute, n);
            }
        }
    }

    /// The provider said its quota is spent for the day (a daily-limit error code): refuse
    /// counted requests from now on.
    pub fn exhaust(&self) {
        lock(&self.inner.state)
            .queues
            .refuse(GateError::DayExhausted);
    }

    /// One line for the summary when the provider admitted well below the configured rate
    /// (or when no rate was configured and one was found): what it admitted.
    pub fn pace_note(&self) -> Option<String> {
        let st = lock(&self.inner.state);
        let period = st.control.period();
        match &st.control.pace {
            Pace::Known {
                margin,
                configured: (limit, window, unit),
                ..
            } if margin.refusals() > 0 && margin.fraction() < 0.9 => Some(format!(
                "the provider admitted about {} of the {} configured",
                rate_words(window.as_secs_f64() / period.as_secs_f64(), unit),
                rate_words(*limit, unit)
            )),
            Pace::Unknown(rate) if rate.refused_once() => Some(format!(
                "no per-second or per-minute quota is configured; the provider admitted about \
                 {} (per_second in the provider's section of the config starts there)",
                rate_words(rate.rate(), "/s")
            )),
            _ => None,
        }
    }

    /// The request rate now, when it is adaptive.
    #[cfg(test)]
    pub fn adaptive_rate(&self) -> Option<f64> {
        match &lock(&self.inner.state).control.pace {
            Pace::Unknown(rate) => Some(rate.rate()),
            Pace::Known { .. } => None,
        }
    }

    /// The share of the configured rate paced at now, when the rate is configured.
    #[cfg(test)]
    pub fn margin(&self) -> Option<f64> {
        match &lock(&self.inner.state).control.pace {
            Pace::Known { margin, .. } => Some(margin.fraction()),
            Pace::Unknown(_) => None,
        }
    }

    /// Refuses every waiting and future request: the run is stopping.
    pub fn close(&self) {
        let mut st = lock(&self.inner.state);
        let q = &mut st.queues;
        q.closed = true;
        let waiting: Vec<Waiter> = q
            .free
            .drain(..)
            .chain(q.high.drain(..))
            .chain(q.low.drain(..))
            .collect();
        st.releases.clear();
        drop(st);
        for w in waiting {
            let _ = w.tx.send(Err(GateError::Closed));
        }
        self.inner.wake.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the grant loop does next.
enum Next {
    /// Sleep until then, or until woken.
    Sleep(Instant),
    /// Wait for a report or a new waiter.
    Wait,
    Refuse(GateError),
    Grant {
        probe: bool,
        /// The slot of a counted request; `None` for one the provider does not count.
        slot: Option<Duration>,
    },
}

/// The grant loop, until its gate is gone or closed.
fn grant_loop(weak: &Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let mut st = lock(&inner.state);
        let wait = loop {
            if st.queues.closed {
                return;
            }
            release_due(&mut st);
            match decide(&inner, &mut st) {
                Next::Grant { probe, slot } => grant(&inner, &mut st, probe, slot),
                Next::Refuse(e) => {
                    if e == GateError::ProviderDown {
                        tracing::warn!(
                            "the provider kept failing: no more calls in this run; the rows \
                             left stay for the next run"
                        );
                    }
                    st.queues.refuse(e);
                }
                Next::Sleep(until) => break until.saturating_duration_since(Instant::now()),
                Next::Wait => break LOOP_TICK,
            }
        };
        let wait = match st.releases.front() {
            Some((slot, _)) => wait.min(slot.saturating_sub(mono_now())),
            None => wait,
        };
        let (st, _) = inner
            .wake
            .wait_timeout(st, wait.min(LOOP_TICK))
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(st);
    }
}

/// Releases the grants whose slot has come.
fn release_due(st: &mut State) {
    let now = mono_now();
    while st.releases.front().is_some_and(|(slot, _)| *slot <= now) {
        if let Some((_, tx)) = st.releases.pop_front() {
            let _ = tx.send(());
        }
    }
}

/// Whether a request may go now, and which kind: free requests first (they cost no quota),
/// then counted ones when their slot allows.
fn decide(inner: &Inner, st: &mut State) -> Next {
    let now = Instant::now();
    let (counted, free) = (st.queues.counted_waiting(), !st.queues.free.is_empty());
    if !counted {
        st.pacer.idle();
        if !free {
            return Next::Wait;
        }
    }
    let c = &mut st.control;
    let probe = match c.breaker.admit(now) {
        Admit::GiveUp => return Next::Refuse(GateError::ProviderDown),
        Admit::WaitUntil(until) => {
            st.pacer.idle();
            return Next::Sleep(until);
        }
        Admit::WaitForProbe => {
            st.pacer.idle();
            return Next::Wait;
        }
        Admit::Go { probe } => probe,
    };
    if let Some(until) = c.paused_until.filter(|u| *u > now) {
        st.pacer.idle();
        return Next::Sleep(until);
    }
    if c.in_flight >= c.concurrency.limit() {
        st.pacer.idle();
        return Next::Wait;
    }
    if free {
        return Next::Grant { probe, slot: None };
    }
    if let Some(day) = &inner.day
        && !lock(day).room(unix_minute())
    {
        return Next::Refuse(GateError::DayExhausted);
    }
    let paid = st.queues.next_counted().is_some_and(|w| w.paid);
    let lead = if paid { c.lead() } else { Duration::ZERO };
    let agreed = st.pacer.agree(c.period(), c.settled());
    st.control.agreed(agreed);
    match st.pacer.take(lead) {
        Ok(slot) => Next::Grant {
            probe,
            slot: Some(slot),
        },
        Err(when) => Next::Sleep(now + when.saturating_sub(mono_now())),
    }
}

fn grant(inner: &Arc<Inner>, st: &mut State, probe: bool, slot: Option<Duration>) {
    let counted = slot.is_some();
    let q = &mut st.queues;
    let waiter = if counted {
        q.high.pop_front().or_else(|| q.low.pop_front())
    } else {
        q.free.pop_front()
    };
    let backlogged = q.counted_waiting();
    let Some(waiter) = waiter else { return };
    if counted && let Some(day) = &inner.day {
        lock(day).add(unix_minute(), 1);
    }
    let c = &mut st.control;
    c.in_flight += 1;
    c.backlogged = backlogged;
    if probe {
        c.breaker.probe_sent();
    }
    let release = slot.filter(|s| *s > mono_now()).map(|s| {
        let (tx, rx) = oneshot::channel();
        st.releases.push_back((s, tx));
        rx
    });
    let ticket = Grant {
        inner: inner.clone(),
        at: Instant::now(),
        slot,
        release,
        sent: if counted { st.control.sent() } else { None },
        probe,
        counted,
        open: true,
    };
    // A waiter that gave up (its task ended) returns the grant, which frees its place as it
    // drops; the slot it used stays used, which errs on the safe side.
    match waiter.tx.send(Ok(ticket)) {
        Ok(()) => {
            if counted && let Some(usage) = &inner.usage {
                usage(unix_minute());
            }
        }
        Err(returned) => drop_unlocked(st, returned),
    }
}

/// A grant returned by a waiter that is gone: freed here, since its own drop would take the
/// lock the grant loop holds.
fn drop_unlocked(st: &mut State, returned: Result<Grant, GateError>) {
    if let Ok(mut g) = returned {
        g.open = false;
        st.control.in_flight = st.control.in_flight.saturating_sub(1);
        if g.probe {
            st.control.breaker.probe_abandoned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: Option<u32>, m: Option<u32>, d: Option<u32>) -> Quotas {
        Quotas {
            per_second: s.and_then(NonZeroU32::new),
            per_minute: m.and_then(NonZeroU32::new),
            per_day: d.and_then(NonZeroU32::new),
        }
    }

    const GUARD: Duration = Duration::from_millis(10);

    fn ask(priority: Priority, counted: bool) -> Ask {
        Ask {
            priority,
            counted,
            paid: false,
            again: false,
        }
    }

    const LOW: Ask = Ask {
        priority: Priority::Low,
        counted: true,
        paid: false,
        again: false,
    };

    #[test]
    fn the_tightest_window_sets_the_pace() {
        let enterprise = pacing_period(&q(Some(17), Some(1000), Some(50_000)), GUARD).unwrap();
        assert_eq!(enterprise, Duration::from_millis(60_010) / 1000);
        let per_second = pacing_period(&q(Some(20), None, None), GUARD).unwrap();
        assert_eq!(per_second, Duration::from_millis(1010) / 20);
        assert_eq!(pacing_period(&q(None, None, Some(5)), GUARD), None);
    }

    fn gate(quotas: Quotas) -> Gate {
        gate_with(quotas, Vec::new(), None)
    }

    fn settings(quotas: Quotas, concurrency: usize, give_up_after: Duration) -> GateSettings {
        GateSettings {
            quotas,
            guard: GUARD,
            concurrency,
            give_up_after,
        }
    }

    fn gate_with(quotas: Quotas, used: Vec<(i64, u64)>, usage: Option<UsageSink>) -> Gate {
        Gate::new(&settings(quotas, 16, Duration::from_secs(60)), used, usage)
    }

    /// Any `limit + 1` consecutive grants span more than the window: no window, wherever its
    /// edges fall, sees more than `limit`. Slowness can only widen the spans.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_window_ever_holds_more_than_its_limit() {
        let limit = 20usize;
        let gate = gate(q(Some(limit as u32), None, None));
        let mut times = Vec::new();
        for _ in 0..45 {
            let mut g = gate.acquire(LOW).await.unwrap();
            assert!(g.until_slot().await);
            times.push(std::time::Instant::now());
            g.report(Signal::Answered(Hints::default()));
        }
        let window = Duration::from_secs(1);
        for w in times.windows(limit + 1) {
            assert!(w[limit] - w[0] > window, "{:?}", w[limit] - w[0]);
        }
    }

    /// The first two requests of a run are a full period apart: a fresh limiter lets no
    /// burst through, which a zero-burst limiter would answer with a 429.
    #[tokio::test]
    async fn the_pacing_starts_without_a_burst() {
        let gate = gate(q(Some(20), None, None));
        let mut sent = Vec::new();
        for _ in 0..3 {
            let mut g = gate.acquire(LOW).await.unwrap();
            assert!(g.until_slot().await);
            sent.push(std::time::Instant::now());
            drop(g);
        }
        for w in sent.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(50),
                "{:?}",
                w[1] - w[0]
            );
        }
    }

    /// A paid request is granted ahead of its slot, to record its intent, and released when
    /// its slot comes; one released too late gives the slot up.
    #[tokio::test]
    async fn a_paid_request_is_granted_ahead_and_released_at_its_slot() {
        let gate = gate(q(Some(10), None, None));
        gate.committed_in(Duration::from_millis(20));
        let paid = Ask { paid: true, ..LOW };
        drop(gate.acquire(paid).await.unwrap());
        let mut g = gate.acquire(paid).await.unwrap();
        let granted = std::time::Instant::now();
        assert!(g.until_slot().await);
        let waited = granted.elapsed();
        assert!(
            waited >= Duration::from_millis(20),
            "released at its slot: {waited:?}"
        );
        drop(g);
        let mut late = gate.acquire(paid).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!late.until_slot().await, "a slot passed is given up");
    }

    fn hints(retry_after_ms: Option<u64>, remaining: Option<u64>, reset_s: Option<u64>) -> Hints {
        Hints {
            retry_after: retry_after_ms.map(Duration::from_millis),
            remaining,
            reset: reset_s.map(Duration::from_secs),
            ..Hints::default()
        }
    }

    fn fast() -> Quotas {
        q(Some(1000), None, None)
    }

    /// At a configured quota, one 429 is a pacing miss: the margin widens and nobody waits. A
    /// run of them means the provider refuses everything: then everyone waits.
    #[tokio::test]
    async fn a_single_429_widens_the_margin_and_a_run_of_them_holds_everyone() {
        let gate = gate(q(Some(100), None, None));
        for _ in 0..30 {
            gate.acquire(LOW)
                .await
                .unwrap()
                .report(Signal::Answered(Hints::default()));
        }
        let before = gate.margin().unwrap();
        let g = gate.acquire(LOW).await.unwrap();
        assert_eq!(
            g.report(Signal::RateLimited(Hints::default())),
            Some(Refusal::Miss)
        );
        assert!(gate.margin().unwrap() < before, "the margin widened");
        let started = Instant::now();
        drop(gate.acquire(LOW).await.unwrap());
        assert!(started.elapsed() < Duration::from_millis(100), "no pause");
        let mut last = None;
        for _ in 0..REFUSALS_IN_A_ROW {
            let g = gate.acquire(LOW).await.unwrap();
            last = g.report(Signal::RateLimited(Hints::default()));
        }
        assert_eq!(last, Some(Refusal::Held));
        assert!(lock(&gate.inner.state).control.paused_until.is_some());
    }

    #[tokio::test]
    async fn polls_go_before_submissions_and_a_429_holds_everyone_for_its_retry_after() {
        let gate = gate(fast());
        let started = Instant::now();
        let g = gate.acquire(LOW).await.unwrap();
        assert_eq!(
            g.report(Signal::RateLimited(hints(Some(300), None, None))),
            Some(Refusal::Held)
        );
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, prio) in [
            ("low1", Priority::Low),
            ("low2", Priority::Low),
            ("high", Priority::High),
        ] {
            let (g, o) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let grant = g.acquire(ask(prio, true)).await.unwrap();
                lock(&o).push((name, Instant::now()));
                grant.report(Signal::Answered(Hints::default()));
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order = lock(&order);
        let names: Vec<_> = order.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["high", "low1", "low2"]);
        assert!(order[0].1 - started >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_window_announced_as_used_up_pauses_until_its_reset_unless_the_reset_is_short() {
        let gate = gate(fast());
        let started = Instant::now();
        let g = gate.acquire(LOW).await.unwrap();
        g.report(Signal::Answered(hints(None, Some(0), Some(1))));
        let g = gate.acquire(LOW).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "short reset"
        );
        g.report(Signal::Answered(hints(None, Some(0), Some(2))));
        let g = gate.acquire(LOW).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(2));
        g.report(Signal::RateLimited(hints(None, Some(0), Some(1))));
        let before = Instant::now();
        drop(gate.acquire(LOW).await.unwrap());
        assert!(
            before.elapsed() >= Duration::from_millis(900),
            "a 429 waits out any reset"
        );
    }

    #[tokio::test]
    async fn the_day_window_remembers_earlier_runs_and_refuses_when_spent() {
        let now = unix_minute();
        let used = vec![(now - DAY_MINUTES, 50), (now - 30, 2)];
        let recorded = Arc::new(Mutex::new(0));
        let r = recorded.clone();
        let gate = gate_with(
            q(None, None, Some(4)),
            used,
            Some(Box::new(move |_| *lock(&r) += 1)),
        );
        drop(gate.acquire(LOW).await.unwrap());
        drop(gate.acquire(ask(Priority::High, true)).await.unwrap());
        assert_eq!(
            gate.acquire(ask(Priority::High, true)).await.err(),
            Some(GateError::DayExhausted)
        );
        assert_eq!(gate.refusal(), Some(GateError::DayExhausted));
        assert_eq!(gate.acquire(LOW).await.err(), Some(GateError::DayExhausted));
        assert!(
            gate.acquire(ask(Priority::High, false)).await.is_ok(),
            "what the provider does not count still goes"
        );
        assert_eq!(*lock(&recorded), 2);
    }

    /// What other runs on the account spend counts too, from when it is heard of; minutes of
    /// theirs older than a day drop out like this run's own.
    #[tokio::test]
    async fn requests_spent_elsewhere_count_against_the_day() {
        let now = unix_minute();
        let gate = gate_with(q(None, None, Some(5)), vec![(now - 1, 1)], None);
        gate.spent_elsewhere(&[(now - DAY_MINUTES, 40), (now - 2, 2), (now, 1)]);
        drop(gate.acquire(LOW).await.unwrap());
        assert_eq!(
            gate.acquire(LOW).await.err(),
            Some(GateError::DayExhausted),
            "1 earlier + 3 elsewhere + 1 now spend the 5"
        );
    }

    #[tokio::test]
    async fn a_not_today_answer_spends_the_day() {
        let gate = gate(fast());
        let g = gate.acquire(LOW).await.unwrap();
        g.report(Signal::RateLimited(Hints {
            retry_after: Some(crate::quota::hints::LONGEST_WAIT),
            beyond_reach: true,
            ..Hints::default()
        }));
        assert_eq!(gate.refusal(), Some(GateError::DayExhausted));
        gate.exhaust();
        assert_eq!(
            gate.acquire(ask(Priority::High, true)).await.err(),
            Some(GateError::DayExhausted)
        );
    }

    #[tokio::test]
    async fn at_most_the_concurrency_is_in_flight() {
        let gate = Gate::new(
            &settings(fast(), 2, Duration::from_secs(60)),
            Vec::new(),
            None,
        );
        let a = gate.acquire(LOW).await.unwrap();
        let b = gate.acquire(LOW).await.unwrap();
        let g = gate.clone();
        let third = tokio::spawn(async move { g.acquire(LOW).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished());
        a.report(Signal::Answered(Hints::default()));
        assert!(third.await.unwrap());
        // A timeout halves the concurrency: with two in flight of a limit now 1, none goes.
        b.report(Signal::Failed { timeout: true });
        let c = gate.acquire(LOW).await.unwrap();
        let g = gate.clone();
        let fourth = tokio::spawn(async move { g.acquire(LOW).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!fourth.is_finished(), "limit 1 after the timeout");
        drop(c);
        assert!(fourth.await.unwrap());
    }

    #[tokio::test]
    async fn a_failing_provider_trips_the_breaker_which_probes_then_gives_up() {
        let gate = Gate::new(
            &settings(fast(), 16, Duration::from_millis(3500)),
            Vec::new(),
            None,
        );
        let started = Instant::now();
        let mut grants = Vec::new();
        for _ in 0..10 {
            grants.push(gate.acquire(LOW).await.unwrap());
        }
        for g in grants {
            g.report(Signal::Failed { timeout: false });
        }
        // Open: nothing for a second, then one probe at a time; each failed probe waits longer.
        let mut probes = Vec::new();
        loop {
            match gate.acquire(ask(Priority::High, false)).await {
                Ok(g) => {
                    probes.push(started.elapsed());
                    g.report(Signal::Failed { timeout: false });
                }
                Err(e) => {
                    assert_eq!(e, GateError::ProviderDown);
                    break;
                }
            }
        }
        assert_eq!(probes.len(), 2, "{probes:?}");
        assert!(probes[0] >= Duration::from_secs(1), "{probes:?}");
        assert!(
            probes[1] - probes[0] >= Duration::from_secs(2),
            "{probes:?}"
        );
        assert_eq!(gate.refusal(), Some(GateError::ProviderDown));
        assert_eq!(gate.acquire(LOW).await.err(), Some(GateError::ProviderDown));
    }

    #[tokio::test]
    async fn an_unknown_quota_is_learned_from_a_published_policy() {
        assert_eq!(gate(fast()).adaptive_rate(), None, "known quotas are paced");
        let gate = gate(q(None, None, None));
        assert_eq!(gate.adaptive_rate(), Some(2.0));
        let g = gate.acquire(LOW).await.unwrap();
        g.report(Signal::Answered(Hints {
            policy: Some(crate::quota::hints::Policy {
                quota: 600,
                window: Duration::from_secs(60),
            }),
            ..Hints::default()
        }));
        assert_eq!(gate.adaptive_rate(), Some(10.0));
    }

    #[tokio::test]
    async fn closing_refuses_waiters() {
        let gate = gate(fast());
        let g = gate.acquire(LOW).await.unwrap();
        g.report(Signal::RateLimited(hints(Some(60_000), None, None)));
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.acquire(LOW).await.err() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.close();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), Some(GateError::Closed));
    }

    #[tokio::test]
    async fn the_summary_says_when_the_provider_admitted_well_below_the_config() {
        let gate = gate(q(Some(25), None, None));
        assert_eq!(gate.pace_note(), None);
        for _ in 0..12 {
            let g = gate.acquire(LOW).await.unwrap();
            g.report(Signal::RateLimited(Hints::default()));
            let g = gate.acquire(LOW).await.unwrap();
            g.report(Signal::Answered(Hints::default()));
        }
        let note = gate.pace_note().expect("a note");
        assert!(note.starts_with("the provider admitted about "), "{note}");
        assert!(note.ends_with(" of the 25/s configured"), "{note}");
    }
}
