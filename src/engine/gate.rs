//! The quota gate: every request to a provider passes here first, so the provider's windows
//! are enforced in one place for every check, submit, poll and download.
//!
//! Short windows (per second, per minute) are enforced by pacing: one governor limiter with a
//! burst of one and the period of the tightest window, `(window + guard) / limit`. With a burst
//! of one, any `limit + 1` consecutive grants span more than the window, so no window of the
//! provider's — fixed or sliding, wherever its edges fall — ever sees more than its limit,
//! and the tightest window is used to within the guard (10 ms per window by default, against
//! the jitter between our send and the provider's count). A burst would let a fresh limiter
//! pass `limit` requests at once on top of the paced ones, which a fixed-window provider
//! answers with 429s. The per-day window is a count over the trailing 24 hours, carried across
//! runs through the journal: when it is spent, the gate refuses instead of waiting for hours.
//!
//! One grant loop serves the waiters: polls before new submissions, so that work already paid
//! for drains first, and a 429 pauses every worker of the provider, not just the one that got it.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::config::Quotas;

const DAY_MINUTES: i64 = 24 * 60;

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
    #[error("the run is stopping")]
    Closed,
}

/// Records each granted request, by Unix minute, for the per-day window of later runs.
pub type UsageSink = Box<dyn Fn(i64) + Send + Sync>;

/// A provider's quota gate. Cloning shares it.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    pacer: Option<DefaultDirectRateLimiter>,
    day: Option<Mutex<DayWindow>>,
    queues: Mutex<Queues>,
    wake: Notify,
    paused_until: Mutex<Option<Instant>>,
    exhausted: AtomicBool,
    usage: Option<UsageSink>,
}

#[derive(Default)]
struct Queues {
    high: VecDeque<oneshot::Sender<Result<(), GateError>>>,
    low: VecDeque<oneshot::Sender<Result<(), GateError>>>,
    /// Under the same lock as the queues, so that no waiter can join after the last sweep.
    closed: bool,
}

impl Queues {
    fn pop(&mut self) -> Option<oneshot::Sender<Result<(), GateError>>> {
        self.high.pop_front().or_else(|| self.low.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.high.is_empty() && self.low.is_empty()
    }

    fn fail_all(&mut self, e: GateError) {
        while let Some(w) = self.pop() {
            let _ = w.send(Err(e));
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
        self.used += 1;
        match self.minutes.back_mut() {
            Some((m, n)) if *m == minute => *n += 1,
            _ => self.minutes.push_back((minute, 1)),
        }
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

impl Gate {
    /// A gate for `quotas`, each short window widened by `guard`; `used` is what earlier runs
    /// spent in the last 24 hours, per Unix minute. Must be called inside the runtime: it
    /// starts the grant loop.
    pub fn new(
        quotas: &Quotas,
        guard: Duration,
        used: Vec<(i64, u64)>,
        usage: Option<UsageSink>,
    ) -> Gate {
        let day = quotas.per_day.map(|limit| {
            let used_total = used.iter().map(|(_, n)| n).sum();
            Mutex::new(DayWindow {
                limit: u64::from(limit.get()),
                minutes: used.into_iter().collect(),
                used: used_total,
            })
        });
        Gate::build(pacing_period(quotas, guard), day, usage)
    }

    fn build(
        period: Option<Duration>,
        day: Option<Mutex<DayWindow>>,
        usage: Option<UsageSink>,
    ) -> Gate {
        let pacer = period
            .and_then(Quota::with_period)
            .map(|q| DefaultDirectRateLimiter::direct(q.allow_burst(NonZeroU32::MIN)));
        let inner = Arc::new(Inner {
            pacer,
            day,
            queues: Mutex::new(Queues::default()),
            wake: Notify::new(),
            paused_until: Mutex::new(None),
            exhausted: AtomicBool::new(false),
            usage,
        });
        tokio::spawn(grant_loop(inner.clone()));
        Gate { inner }
    }

    /// Waits for the right to send one request.
    pub async fn acquire(&self, priority: Priority) -> Result<(), GateError> {
        if self.inner.exhausted.load(Ordering::Acquire) {
            return Err(GateError::DayExhausted);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut q = lock(&self.inner.queues);
            if q.closed {
                return Err(GateError::Closed);
            }
            match priority {
                Priority::High => q.high.push_back(tx),
                Priority::Low => q.low.push_back(tx),
            }
        }
        self.inner.wake.notify_one();
        rx.await.unwrap_or(Err(GateError::Closed))
    }

    /// Holds every waiter until `d` from now (after a 429).
    pub fn pause_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut p = lock(&self.inner.paused_until);
        if p.is_none_or(|t| t < until) {
            *p = Some(until);
        }
    }

    /// Whether the per-day window ran out in this run.
    pub fn day_exhausted(&self) -> bool {
        self.inner.exhausted.load(Ordering::Acquire)
    }

    /// Refuses every waiting and future request: the run is stopping.
    pub fn close(&self) {
        let mut q = lock(&self.inner.queues);
        q.closed = true;
        q.fail_all(GateError::Closed);
        drop(q);
        self.inner.wake.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn grant_loop(inner: Arc<Inner>) {
    loop {
        loop {
            let notified = inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let q = lock(&inner.queues);
                if q.closed {
                    return;
                }
                if !q.is_empty() {
                    break;
                }
            }
            notified.await;
        }
        let paused = *lock(&inner.paused_until);
        if let Some(until) = paused
            && until > Instant::now()
        {
            // Woken early by a new waiter or by close(); either way the loop looks again.
            let notified = inner.wake.notified();
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = notified => {}
            }
            continue;
        }
        if let Some(pacer) = &inner.pacer {
            pacer.until_ready().await;
        }
        // A pause that began during the pacer's wait holds this grant back too.
        if lock(&inner.paused_until).is_some_and(|until| until > Instant::now()) {
            continue;
        }
        if let Some(day) = &inner.day
            && !lock(day).take(unix_minute())
        {
            inner.exhausted.store(true, Ordering::Release);
            lock(&inner.queues).fail_all(GateError::DayExhausted);
            continue;
        }
        // A waiter that gave up (its task ended) passes its turn to the next one.
        loop {
            let Some(waiter) = lock(&inner.queues).pop() else {
                break;
            };
            if waiter.send(Ok(())).is_ok() {
                if let Some(usage) = &inner.usage {
                    usage(unix_minute());
                }
                break;
            }
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

    #[test]
    fn the_tightest_window_sets_the_pace() {
        let enterprise = pacing_period(&q(Some(17), Some(1000), Some(50_000)), GUARD).unwrap();
        assert_eq!(enterprise, Duration::from_millis(60_010) / 1000);
        let per_second = pacing_period(&q(Some(20), None, None), GUARD).unwrap();
        assert_eq!(per_second, Duration::from_millis(1010) / 20);
        assert_eq!(pacing_period(&q(None, None, Some(5)), GUARD), None);
    }

    /// Any `limit + 1` consecutive grants span more than the window: no window, wherever its
    /// edges fall, sees more than `limit`. Slowness can only widen the spans.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_window_ever_holds_more_than_its_limit() {
        let (limit, window) = (10usize, Duration::from_millis(100));
        let gate = Gate::build(Some((window + GUARD) / limit as u32), None, None);
        let mut times = Vec::new();
        for _ in 0..45 {
            gate.acquire(Priority::Low).await.unwrap();
            times.push(std::time::Instant::now());
        }
        for w in times.windows(limit + 1) {
            assert!(w[limit] - w[0] > window, "{:?}", w[limit] - w[0]);
        }
    }

    #[tokio::test]
    async fn polls_go_before_submissions_and_a_pause_holds_everyone() {
        let gate = Gate::build(None, None, None);
        gate.pause_for(Duration::from_millis(150));
        let order = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (name, prio) in [
            ("low1", Priority::Low),
            ("low2", Priority::Low),
            ("high", Priority::High),
        ] {
            let (g, o) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                g.acquire(prio).await.unwrap();
                lock(&o).push(name);
            }));
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(*lock(&order), ["high", "low1", "low2"]);
    }

    #[tokio::test]
    async fn the_day_window_remembers_earlier_runs_and_refuses_when_spent() {
        let now = unix_minute();
        let used = vec![(now - DAY_MINUTES, 50), (now - 30, 2)];
        let recorded = Arc::new(Mutex::new(0));
        let r = recorded.clone();
        let gate = Gate::new(
            &q(None, None, Some(4)),
            GUARD,
            used,
            Some(Box::new(move |_| *lock(&r) += 1)),
        );
        gate.acquire(Priority::Low).await.unwrap();
        gate.acquire(Priority::High).await.unwrap();
        assert_eq!(
            gate.acquire(Priority::High).await,
            Err(GateError::DayExhausted)
        );
        assert!(gate.day_exhausted());
        assert_eq!(
            gate.acquire(Priority::Low).await,
            Err(GateError::DayExhausted)
        );
        assert_eq!(*lock(&recorded), 2);
    }

    #[tokio::test]
    async fn closing_refuses_waiters() {
        let gate = Gate::build(None, None, None);
        gate.pause_for(Duration::from_secs(60));
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.acquire(Priority::Low).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.close();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), Err(GateError::Closed));
    }
}
