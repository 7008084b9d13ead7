//! The quota gate: every request to a provider passes here first, so the provider's windows,
//! its answers about them and its health are handled in one place for every check, submit,
//! poll and download.
//!
//! Short windows (per second, per minute) are enforced by pacing: grants at least one period
//! apart, the period of the tightest window, `(window + guard) / limit` (a burst of one, as a
//! GCRA limiter with no burst allowance would give). Any `limit + 1` consecutive grants then
//! span more than the window, so no window of the provider's, fixed or sliding, wherever its
//! edges fall, ever sees more than its limit, and the tightest window is used to within the
//! guard (10 ms per window by default, against the jitter between our send and the provider's
//! count). A burst would let a fresh limiter pass `limit` requests at once on top of the paced
//! ones, which a fixed-window provider answers with 429s. When no short window is configured,
//! the period comes from an adaptive controller instead ([`super::adaptive`]). The pacer is
//! our own rather than governor's because that period changes while the run goes on.
//!
//! The per-day window is a count over the trailing 24 hours, carried across runs through the
//! journal: when it is spent, the gate refuses instead of waiting for hours.
//!
//! One grant loop serves the waiters: requests the provider does not count first, then polls
//! before new submissions, so that work already paid for drains first. Every grant is reported
//! back with how it went: a 429 pauses every worker of the provider until the time the server
//! gave (or a short jittered wait when it gave none), a window announced as used up pauses
//! until its reset, timeouts lower the concurrency, and failures feed the circuit breaker
//! ([`super::breaker`]).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::adaptive::{Concurrency, Rate};
use super::breaker::{Admit, Breaker};
use super::retry::Backoff;
use crate::config::Quotas;
use crate::providers::ratelimit::Hints;

pub const DAY_MINUTES: i64 = 24 * 60;

/// The wait after a 429 that says nothing of when to come back: short, because the pacing
/// (known quotas) or the rate controller (unknown ones) is what slows the stream; growing, in
/// case the provider keeps refusing.
const REFUSED_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(250),
    cap: Duration::from_secs(30),
};

/// A reset this short is not waited for after an answer that used a window's last request:
/// with whole-second resets it could mean anything from 1 ms to 1 s, and the pacing is
/// already keeping to that window. A 429 is still waited out.
const SHORT_RESET: Duration = Duration::from_secs(1);

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

/// A provider's quota gate. Cloning shares it.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

/// A gate held without keeping it alive: for a helper that must end with it.
pub struct WeakGate(std::sync::Weak<Inner>);

impl WeakGate {
    pub fn upgrade(&self) -> Option<Gate> {
        self.0.upgrade().map(|inner| Gate { inner })
    }
}

struct Inner {
    day: Option<Mutex<DayWindow>>,
    queues: Mutex<Queues>,
    control: Mutex<Control>,
    wake: Notify,
    usage: Option<UsageSink>,
}

type Waiter = oneshot::Sender<Result<Grant, GateError>>;

#[derive(Default)]
struct Queues {
    /// Requests the provider does not count (polls, when so configured): no pacing, no day.
    free: VecDeque<Waiter>,
    high: VecDeque<Waiter>,
    low: VecDeque<Waiter>,
    /// Why counted requests are refused from now on (the day is spent, the provider is down).
    refused: Option<GateError>,
    /// Under the same lock as the queues, so that no waiter can join after the last sweep.
    closed: bool,
}

impl Queues {
    fn counted_waiting(&self) -> bool {
        !self.high.is_empty() || !self.low.is_empty()
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
            let _ = w.send(Err(e));
        }
    }
}

/// The pacing, the adaptive controllers and the breaker: everything an answer feeds back.
struct Control {
    /// The pacing period of the configured short windows; `None` when the rate is adaptive.
    known_period: Option<Duration>,
    /// The adaptive rate, when no short window is configured.
    rate: Option<Rate>,
    next_grant: Instant,
    paused_until: Option<Instant>,
    in_flight: usize,
    concurrency: Concurrency,
    breaker: Breaker,
    /// 429s in a row, counting those to requests sent after the previous one came back.
    refusals: u32,
    last_refused: Option<Instant>,
    /// How late a grant may be and still keep the pacing grid (see [`decide`]).
    slack: Duration,
    /// Whether requests were still queued at the last grant: only then is the rate a limit.
    backlogged: bool,
}

impl Control {
    fn period(&self) -> Option<Duration> {
        self.known_period
            .or_else(|| self.rate.as_ref().map(Rate::period))
    }

    fn pause(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|t| t < until) {
            self.paused_until = Some(until);
        }
    }
}

/// The right to send one request. Report how it went; dropping it unreported frees its slot.
pub struct Grant {
    inner: Arc<Inner>,
    at: Instant,
    probe: bool,
    open: bool,
}

/// How a granted request went, as the gate's controllers need to know it.
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    /// The provider answered (a 2xx, or a business answer the check reads).
    Answered(Hints),
    /// A 429.
    RateLimited(Hints),
    /// A 5xx, a 408 or a transport failure; `timeout` when the provider went silent.
    Failed { timeout: bool },
}

impl Grant {
    /// Feeds the outcome back: the breaker, the adaptive rate and concurrency, and any pause
    /// or policy the provider's headers announce.
    pub fn report(mut self, signal: Signal) {
        self.open = false;
        let now = Instant::now();
        let mut c = lock(&self.inner.control);
        c.in_flight = c.in_flight.saturating_sub(1);
        let exhausted = match signal {
            Signal::Answered(hints) => {
                c.breaker.record(now, true, self.probe);
                c.concurrency.answered(now);
                c.refusals = 0;
                let backlogged = c.backlogged;
                if let Some(rate) = &mut c.rate {
                    match hints.policy.and_then(|p| p.period()) {
                        Some(p) => rate.learn(1.0 / p.as_secs_f64()),
                        None => rate.answered(now, self.at, backlogged),
                    }
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
                if let Some(rate) = &mut c.rate {
                    rate.refused(now, self.at);
                }
                let announced = hints
                    .retry_after
                    .or(hints.reset.filter(|_| hints.remaining == Some(0)));
                // A 429 to a request sent before the last one came back says nothing new:
                // it must not grow the pause that one started.
                let fresh = c.last_refused.is_none_or(|t| self.at > t);
                if fresh {
                    c.refusals += 1;
                    c.last_refused = Some(now);
                }
                match announced {
                    _ if hints.beyond_reach => {}
                    Some(wait) => c.pause(now + wait),
                    None if fresh => {
                        let wait = REFUSED_BACKOFF.delay(c.refusals - 1);
                        c.pause(now + wait);
                    }
                    None => {}
                }
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
        drop(c);
        if exhausted {
            tracing::warn!("the provider says its quota is spent for today");
            lock(&self.inner.queues).refuse(GateError::DayExhausted);
        }
        self.inner.wake.notify_one();
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.open {
            let mut c = lock(&self.inner.control);
            c.in_flight = c.in_flight.saturating_sub(1);
            if self.probe {
                c.breaker.probe_abandoned();
            }
            drop(c);
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

    fn take(&mut self, minute: i64) -> bool {
        while let Some(&(m, n)) = self.minutes.front() {
            if m > minute - DAY_MINUTES {
                break;
            }
            self.used -= n;
            self.minutes.pop_front();
        }
        if self.used >= self.limit {
            return false;
        }
        self.add(minute, 1);
        true
    }
}

/// The pacing period for a provider's short windows: that of the tightest one.
pub fn pacing_period(quotas: &Quotas, guard: Duration) -> Option<Duration> {
    let per = |window: Duration, n: Option<NonZeroU32>| n.map(|n| (window + guard) / n.get());
    [
        per(Duration::from_secs(1), quotas.per_second),
        per(Duration::from_secs(60), quotas.per_minute),
    ]
    .into_iter()
    .flatten()
    .max()
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

impl Gate {
    /// A gate for `settings`; `used` is what earlier runs spent in the last 24 hours, per Unix
    /// minute. Must be called inside the runtime: it starts the grant loop.
    pub fn new(settings: &GateSettings, used: Vec<(i64, u64)>, usage: Option<UsageSink>) -> Gate {
        let day = settings.quotas.per_day.map(|limit| {
            let used_total = used.iter().map(|(_, n)| n).sum();
            Mutex::new(DayWindow {
                limit: u64::from(limit.get()),
                minutes: used.into_iter().collect(),
                used: used_total,
            })
        });
        let known_period = pacing_period(&settings.quotas, settings.guard);
        let now = Instant::now();
        let control = Control {
            known_period,
            rate: known_period
                .is_none()
                .then(|| Rate::new(now, adaptive_ceiling(settings.concurrency))),
            next_grant: now,
            paused_until: None,
            in_flight: 0,
            concurrency: Concurrency::new(now, settings.concurrency),
            breaker: Breaker::new(settings.give_up_after),
            refusals: 0,
            last_refused: None,
            slack: settings.guard / 2,
            backlogged: false,
        };
        let inner = Arc::new(Inner {
            day,
            queues: Mutex::new(Queues::default()),
            control: Mutex::new(control),
            wake: Notify::new(),
            usage,
        });
        tokio::spawn(grant_loop(inner.clone()));
        Gate { inner }
    }

    /// Waits for the right to send one request. `counted`: whether the provider counts it
    /// against the quota (paced, and in the day's window) or not (only pauses and the
    /// breaker hold it).
    pub async fn acquire(&self, priority: Priority, counted: bool) -> Result<Grant, GateError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut q = lock(&self.inner.queues);
            if q.closed {
                return Err(GateError::Closed);
            }
            match q.refused {
                Some(e) if counted || e != GateError::DayExhausted => return Err(e),
                _ => {}
            }
            match (counted, priority) {
                (false, _) => q.free.push_back(tx),
                (true, Priority::High) => q.high.push_back(tx),
                (true, Priority::Low) => q.low.push_back(tx),
            }
        }
        self.inner.wake.notify_one();
        rx.await.unwrap_or(Err(GateError::Closed))
    }

    /// Why new paid requests would be refused now, if they would.
    pub fn refusal(&self) -> Option<GateError> {
        lock(&self.inner.queues).refused
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
        lock(&self.inner.queues).refuse(GateError::DayExhausted);
    }

    /// The request rate now, when it is adaptive.
    #[cfg(test)]
    pub fn adaptive_rate(&self) -> Option<f64> {
        lock(&self.inner.control).rate.as_ref().map(Rate::rate)
    }

    /// Refuses every waiting and future request: the run is stopping.
    pub fn close(&self) {
        let mut guard = lock(&self.inner.queues);
        let q = &mut *guard;
        q.closed = true;
        let waiting: Vec<Waiter> = q
            .free
            .drain(..)
            .chain(q.high.drain(..))
            .chain(q.low.drain(..))
            .collect();
        drop(guard);
        for w in waiting {
            let _ = w.send(Err(GateError::Closed));
        }
        self.inner.wake.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
        counted: bool,
    },
}

async fn grant_loop(inner: Arc<Inner>) {
    loop {
        // Armed before looking, so that a wake between the look and the wait is not lost.
        let notified = inner.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (counted, free) = {
            let q = lock(&inner.queues);
            if q.closed {
                return;
            }
            (q.counted_waiting(), !q.free.is_empty())
        };
        let next = if !counted && !free {
            Next::Wait
        } else {
            decide(&inner, Instant::now(), free)
        };
        match next {
            Next::Wait => notified.await,
            Next::Sleep(until) => {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = notified => {}
                }
            }
            Next::Refuse(e) => {
                if e == GateError::ProviderDown {
                    tracing::warn!(
                        "the provider kept failing: no more calls in this run; the rows left \
                         stay for the next run"
                    );
                }
                lock(&inner.queues).refuse(e);
            }
            Next::Grant { probe, counted } => grant(&inner, probe, counted),
        }
    }
}

/// Whether a request may go now, and which kind: free requests first (`free`: some wait),
/// since they cost no quota, then counted ones when the pacing allows.
fn decide(inner: &Inner, now: Instant, free: bool) -> Next {
    let mut c = lock(&inner.control);
    let probe = match c.breaker.admit(now) {
        Admit::GiveUp => return Next::Refuse(GateError::ProviderDown),
        Admit::WaitUntil(until) => return Next::Sleep(until),
        Admit::WaitForProbe => return Next::Wait,
        Admit::Go { probe } => probe,
    };
    if let Some(until) = c.paused_until.filter(|u| *u > now) {
        return Next::Sleep(until);
    }
    if c.in_flight >= c.concurrency.limit() {
        return Next::Wait;
    }
    if free {
        return Next::Grant {
            probe,
            counted: false,
        };
    }
    if c.period().is_some() && c.next_grant > now {
        return Next::Sleep(c.next_grant);
    }
    if let Some(day) = &inner.day
        && !lock(day).take(unix_minute())
    {
        return Next::Refuse(GateError::DayExhausted);
    }
    // The next slot is on the grid of the last one, not a period after this grant: the timer
    // wakes up to a millisecond late, and a period counted from each late grant would lose
    // that millisecond every time (2% of the quota at 17/s). Grants a little late on the grid
    // still keep any `limit + 1` of them more than the window apart, since the guard exceeds
    // the slack; a grant later than that (the gate was idle) starts the grid afresh.
    if let Some(period) = c.period() {
        c.next_grant = if now.saturating_duration_since(c.next_grant) <= c.slack {
            c.next_grant + period
        } else {
            now + period
        };
    }
    Next::Grant {
        probe,
        counted: true,
    }
}

fn grant(inner: &Arc<Inner>, probe: bool, counted: bool) {
    let mut q = lock(&inner.queues);
    let waiter = if counted {
        q.high.pop_front().or_else(|| q.low.pop_front())
    } else {
        q.free.pop_front()
    };
    let backlogged = q.counted_waiting();
    drop(q);
    let Some(waiter) = waiter else { return };
    {
        let mut c = lock(&inner.control);
        c.in_flight += 1;
        c.backlogged = backlogged;
        if probe {
            c.breaker.probe_sent();
        }
    }
    let ticket = Grant {
        inner: inner.clone(),
        at: Instant::now(),
        probe,
        open: true,
    };
    // A waiter that gave up (its task ended) returns the grant, which frees its slot as it
    // drops; the pacing slot it used stays used, which errs on the safe side.
    if waiter.send(Ok(ticket)).is_ok()
        && counted
        && let Some(usage) = &inner.usage
    {
        usage(unix_minute());
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

    fn gate_with(quotas: Quotas, used: Vec<(i64, u64)>, usage: Option<UsageSink>) -> Gate {
        Gate::new(
            &GateSettings {
                quotas,
                guard: GUARD,
                concurrency: 16,
                give_up_after: Duration::from_secs(60),
            },
            used,
            usage,
        )
    }

    /// Any `limit + 1` consecutive grants span more than the window: no window, wherever its
    /// edges fall, sees more than `limit`. Slowness can only widen the spans.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_window_ever_holds_more_than_its_limit() {
        let limit = 20usize;
        let gate = gate(q(Some(limit as u32), None, None));
        let mut times = Vec::new();
        for _ in 0..45 {
            let g = gate.acquire(Priority::Low, true).await.unwrap();
            times.push(std::time::Instant::now());
            g.report(Signal::Answered(Hints::default()));
        }
        let window = Duration::from_secs(1);
        for w in times.windows(limit + 1) {
            assert!(w[limit] - w[0] > window, "{:?}", w[limit] - w[0]);
        }
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

    #[tokio::test]
    async fn polls_go_before_submissions_and_a_429_holds_everyone_for_its_retry_after() {
        let gate = gate(fast());
        let started = Instant::now();
        let g = gate.acquire(Priority::Low, true).await.unwrap();
        g.report(Signal::RateLimited(hints(Some(300), None, None)));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, prio) in [
            ("low1", Priority::Low),
            ("low2", Priority::Low),
            ("high", Priority::High),
        ] {
            let (g, o) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let grant = g.acquire(prio, true).await.unwrap();
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
        let g = gate.acquire(Priority::Low, true).await.unwrap();
        g.report(Signal::Answered(hints(None, Some(0), Some(1))));
        let g = gate.acquire(Priority::Low, true).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "short reset"
        );
        g.report(Signal::Answered(hints(None, Some(0), Some(2))));
        let g = gate.acquire(Priority::Low, true).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(2));
        g.report(Signal::RateLimited(hints(None, Some(0), Some(1))));
        let before = Instant::now();
        drop(gate.acquire(Priority::Low, true).await.unwrap());
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
        drop(gate.acquire(Priority::Low, true).await.unwrap());
        drop(gate.acquire(Priority::High, true).await.unwrap());
        assert_eq!(
            gate.acquire(Priority::High, true).await.err(),
            Some(GateError::DayExhausted)
        );
        assert_eq!(gate.refusal(), Some(GateError::DayExhausted));
        assert_eq!(
            gate.acquire(Priority::Low, true).await.err(),
            Some(GateError::DayExhausted)
        );
        assert!(
            gate.acquire(Priority::High, false).await.is_ok(),
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
        drop(gate.acquire(Priority::Low, true).await.unwrap());
        assert_eq!(
            gate.acquire(Priority::Low, true).await.err(),
            Some(GateError::DayExhausted),
            "1 earlier + 3 elsewhere + 1 now spend the 5"
        );
    }

    #[tokio::test]
    async fn a_not_today_answer_spends_the_day() {
        let gate = gate(fast());
        let g = gate.acquire(Priority::Low, true).await.unwrap();
        g.report(Signal::RateLimited(Hints {
            retry_after: Some(crate::providers::ratelimit::LONGEST_WAIT),
            beyond_reach: true,
            ..Hints::default()
        }));
        assert_eq!(gate.refusal(), Some(GateError::DayExhausted));
        gate.exhaust();
        assert_eq!(
            gate.acquire(Priority::High, true).await.err(),
            Some(GateError::DayExhausted)
        );
    }

    #[tokio::test]
    async fn at_most_the_concurrency_is_in_flight() {
        let gate = Gate::new(
            &GateSettings {
                quotas: fast(),
                guard: GUARD,
                concurrency: 2,
                give_up_after: Duration::from_secs(60),
            },
            Vec::new(),
            None,
        );
        let a = gate.acquire(Priority::Low, true).await.unwrap();
        let b = gate.acquire(Priority::Low, true).await.unwrap();
        let g = gate.clone();
        let third = tokio::spawn(async move { g.acquire(Priority::Low, true).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished());
        a.report(Signal::Answered(Hints::default()));
        assert!(third.await.unwrap());
        // A timeout halves the concurrency: with two in flight of a limit now 1, none goes.
        b.report(Signal::Failed { timeout: true });
        let c = gate.acquire(Priority::Low, true).await.unwrap();
        let g = gate.clone();
        let fourth = tokio::spawn(async move { g.acquire(Priority::Low, true).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!fourth.is_finished(), "limit 1 after the timeout");
        drop(c);
        assert!(fourth.await.unwrap());
    }

    #[tokio::test]
    async fn a_failing_provider_trips_the_breaker_which_probes_then_gives_up() {
        let gate = Gate::new(
            &GateSettings {
                quotas: fast(),
                guard: GUARD,
                concurrency: 16,
                give_up_after: Duration::from_millis(3500),
            },
            Vec::new(),
            None,
        );
        let started = Instant::now();
        let mut grants = Vec::new();
        for _ in 0..10 {
            grants.push(gate.acquire(Priority::Low, true).await.unwrap());
        }
        for g in grants {
            g.report(Signal::Failed { timeout: false });
        }
        // Open: nothing for a second, then one probe at a time; each failed probe waits longer.
        let mut probes = Vec::new();
        loop {
            match gate.acquire(Priority::High, false).await {
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
        assert_eq!(
            gate.acquire(Priority::Low, true).await.err(),
            Some(GateError::ProviderDown)
        );
    }

    #[tokio::test]
    async fn an_unknown_quota_is_learned_from_a_published_policy() {
        assert_eq!(gate(fast()).adaptive_rate(), None, "known quotas are paced");
        let gate = gate(q(None, None, None));
        assert_eq!(gate.adaptive_rate(), Some(2.0));
        let g = gate.acquire(Priority::Low, true).await.unwrap();
        g.report(Signal::Answered(Hints {
            policy: Some(crate::providers::ratelimit::Policy {
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
        let g = gate.acquire(Priority::Low, true).await.unwrap();
        g.report(Signal::RateLimited(hints(Some(60_000), None, None)));
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.acquire(Priority::Low, true).await.err() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.close();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), Some(GateError::Closed));
    }
}
