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
//! One grant loop, a task on the runtime woken at each slot by a clock of its own that keeps
//! slots to a fraction of a millisecond ([`timer`]), serves the waiters: requests the provider
//! does not count first, then polls before new submissions, so that work already paid for
//! drains first. A paid request is granted ahead of its slot, records its intent in that time,
//! and is released when its slot comes; a run that paces its account alone grants it a period
//! ahead, as the slot before it is released, so that the loop and the runtime wake once a slot.
//! A request whose task a busy runtime polls late keeps the next one a period behind it, so
//! that what the provider sees keeps the spacing the slots have. Every grant is reported
//! back with how it went: a 429 lowers the margin, and is sent again at the next slot without
//! holding anyone; a run of 429s, a `Retry-After` or a window announced as used up pause every
//! worker of the provider; timeouts lower the concurrency, and failures feed the circuit
//! breaker ([`super::breaker`]).

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::adaptive::{Concurrency, Margin, Rate, Sent};
use super::breaker::{Admit, Breaker};
use super::pace::{Agreed, Pacer, Schedule, mono_now};
use super::retry::Backoff;
use crate::config::Quotas;
use crate::quota::hints::Hints;
use crate::util::sync::lock;

mod day;
mod grant;
mod grants;
mod timer;

use day::DayWindow;
pub use grant::{Grant, Refusal, Signal};
use grants::grant_loop;

pub const DAY_MINUTES: i64 = 24 * 60;

/// 429s in a row, to requests granted one after the other, that make a run of them: the
/// provider is refusing everything, not catching a pacing miss, and everyone waits. In grant
/// order, not answer order: a gateway answers a 429 at once and an admitted request a round
/// trip later, so that over a zero-burst limiter every other 429 comes back before the answers
/// between them.
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
/// next: sent late, it would come too close to the request after it when that is another job's
/// (the spacing below keeps only this job's own apart), and hold up this job's next.
const LATE: Duration = Duration::from_millis(2);
/// A counted request leaves at least a period after the one before it, less this (or a tenth
/// of the period, if less): a grant whose task a busy runtime polled late leaves its successor
/// a short gap, which a zero-burst limiter refuses, and the tolerance keeps the timer's
/// millisecond rounding from adding up into a slower pace.
const DEPARTURE_SLACK: Duration = Duration::from_millis(1);

/// The lead of a paid grant: how long its intent takes to commit, with room to spare.
const MIN_LEAD: Duration = Duration::from_millis(2);
const MAX_LEAD: Duration = Duration::from_millis(100);
/// The longest lead of a paid grant given a period ahead (see [`Control::lead`]).
const MAX_AHEAD: Duration = Duration::from_secs(1);
/// How much later than asked a wait of [`Gate::after`] may end: the grant loop wakes for one
/// only when no slot of its own comes within this.
const COALESCE: Duration = Duration::from_millis(100);

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
    /// Wakes the grant loop: a waiter came, a slot of concurrency freed, the gate closed or
    /// went away.
    wake: Arc<Notify>,
    usage: Option<UsageSink>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
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
    /// Waits the grant loop ends ([`Gate::after`]), by their end and their number.
    sleepers: BTreeMap<(Duration, u64), oneshot::Sender<()>>,
    /// Waits so far, to number them.
    slept: u64,
    /// When the grant loop wakes next by itself; `None` while it waits to be told.
    wakes_at: Option<Duration>,
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
        for w in self.take(e != GateError::DayExhausted) {
            let _ = w.tx.send(Err(e));
        }
    }

    /// Every counted waiter, and the free ones too if `free`.
    fn take(&mut self, free: bool) -> Vec<Waiter> {
        let mut taken: Vec<Waiter> = self.high.drain(..).collect();
        taken.extend(self.low.drain(..));
        if free {
            taken.extend(self.free.drain(..));
        }
        taken
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
    /// 429s in a row, by grant: the number of the last one refused, and how many granted just
    /// before it were refused too.
    refusals: u32,
    last_refused: Option<u64>,
    /// Grants given so far, to number them.
    granted: u64,
    /// Pauses in the present run of 429s, and the last grant given before the last of them.
    holds: u32,
    held_at: u64,
    /// Whether requests were still queued at the last grant: only then is the rate a limit.
    backlogged: bool,
    /// How long intents took to commit lately: a decaying maximum, for the lead.
    commit: Duration,
    /// How many jobs share the account's pace now, this one among them.
    runs: usize,
    /// Counted grants whose reservation in the day's window is not settled yet: while any is,
    /// a full day may still have room, given back by a grant that missed its slot.
    reserved: usize,
    /// Whether the grant loop waits for those reservations to settle: the day is full.
    day_full: bool,
}

impl Control {
    fn period(&self) -> Duration {
        match &self.pace {
            Pace::Known { base, margin, .. } => base.div_f64(margin.fraction()),
            Pace::Unknown(rate) => rate.period(),
        }
    }

    /// Whether the period is learned from the provider, not a start-up ramp's or the config's.
    fn settled(&self) -> bool {
        match &self.pace {
            Pace::Known { margin, .. } => margin.learned(),
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

    /// How far ahead of its slot a paid request is granted, at `period`: long enough for its
    /// intent to commit. A run that paces the account alone takes a whole period (up to
    /// [`MAX_AHEAD`]): its grant then falls due as the slot before it is released, and the loop
    /// and the runtime wake once for both; its intent still commits only the commit's time
    /// before the slot ([`Grant::commit_by`]). With other runs it keeps to the commit's time,
    /// since a slot another run lets pass is taken a lead late.
    fn lead(&self, period: Duration) -> Duration {
        let commit = self.commit_lead();
        if self.runs == 1 {
            commit.max(period.min(MAX_AHEAD))
        } else {
            commit
        }
    }

    /// How long before its slot a paid request's intent is committed: as long as recent
    /// commits took, with room to spare.
    fn commit_lead(&self) -> Duration {
        (self.commit * 3 / 2 + Duration::from_millis(1)).clamp(MIN_LEAD, MAX_LEAD)
    }

    /// A grant went unused: its place in flight is free, and a probe it was is no probe.
    fn abandoned(&mut self, probe: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if probe {
            self.breaker.probe_abandoned();
        }
    }

    fn pause(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|t| t < until) {
            self.paused_until = Some(until);
        }
    }

    /// A counted request was granted at `now`, paced at `paced` (the period the account's jobs
    /// agreed on: wider than this job's own while another job learned a slower one).
    fn sent(&mut self, now: Instant, paced: Duration) -> Option<Sent> {
        match &mut self.pace {
            Pace::Known { base, margin, .. } => {
                // Requests go at the account's pace: a 429 to one says that pace is too fast,
                // even when it is another job's, slower than this one's own.
                Some(margin.sent(now, base.as_secs_f64() / paced.as_secs_f64()))
            }
            Pace::Unknown(rate) => {
                rate.granted(now);
                None
            }
        }
    }
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
    /// 24 hours, per Unix minute. Its grant loop runs on the runtime it is made on.
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
            granted: 0,
            holds: 0,
            held_at: 0,
            backlogged: false,
            commit: Duration::ZERO,
            runs: 1,
            reserved: 0,
            day_full: false,
        };
        let pacer = Pacer::new(schedule, control.period());
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            day,
            state: Mutex::new(State {
                queues: Queues::default(),
                control,
                pacer,
                releases: VecDeque::new(),
                sleepers: BTreeMap::new(),
                slept: 0,
                wakes_at: None,
            }),
            wake: wake.clone(),
            usage,
        });
        tokio::spawn(grant_loop(Arc::downgrade(&inner), wake));
        Gate { inner }
    }

    /// Waits for the right to send one request.
    pub async fn acquire(&self, ask: Ask) -> Result<Grant, GateError> {
        let (tx, rx) = oneshot::channel();
        let first = {
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
            // Behind others of its kind, a waiter changes nothing the grant loop waits for:
            // it is woken only for the first, not once a request.
            let first = if ask.counted {
                !q.counted_waiting()
            } else {
                q.free.is_empty()
            };
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
            first
        };
        if first {
            self.inner.wake.notify_one();
        }
        rx.await.unwrap_or(Err(GateError::Closed))
    }

    /// Resolves `d` from now, or up to [`COALESCE`] later, or when the gate closes: the grant
    /// loop ends the wait at its own next wake-up when that comes within [`COALESCE`] after
    /// it, which while requests flow is the next slot's. A wait between polls then costs the
    /// runtime no wake-up of its own, where tokio's timer would wake it twice for a wait of
    /// seconds (to move the timer down its wheel, then to fire it).
    pub fn after(&self, d: Duration) -> impl Future<Output = ()> + Send + 'static {
        let at = mono_now() + d;
        let (tx, rx) = oneshot::channel();
        let wake = {
            let mut st = lock(&self.inner.state);
            if st.queues.closed {
                false
            } else {
                st.slept += 1;
                let n = st.slept;
                st.sleepers.insert((at, n), tx);
                st.wakes_at.is_none_or(|w| w > at + COALESCE)
            }
        };
        if wake {
            self.inner.wake.notify_one();
        }
        async move {
            let _ = rx.await;
        }
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
        st.queues.closed = true;
        let waiting = st.queues.take(true);
        st.releases.clear();
        st.sleepers.clear();
        st.pacer.leave();
        drop(st);
        for w in waiting {
            let _ = w.tx.send(Err(GateError::Closed));
        }
        self.inner.wake.notify_one();
    }
}

#[cfg(test)]
mod tests;
