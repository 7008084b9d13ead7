//! Finding a provider's limits when nobody wrote them down: additive increase, multiplicative
//! decrease, as TCP does for its window and vector's adaptive request concurrency does for
//! its sinks.
//!
//! Two controllers, each reacting to its own signal:
//! - the request **rate**, when no per-second or per-minute quota is configured: it starts
//!   low, doubles every second while requests queue for it (slow start), and on a 429 falls
//!   back by a factor and climbs again by a small constant step, probing just under the
//!   server's limit;
//! - the **concurrency**, always: a timeout means the provider is overloaded, so the number of
//!   requests in flight is halved, then grows back by one a second while answers come.
//!
//! Both decrease at most once per round trip: answers to requests sent before the last
//! decrease report the old rate, not the new one, and must not push it down again. The rate
//! waits a second longer, since the window that refused may still be full.

use std::time::Duration;

use tokio::time::Instant;

/// Where the rate starts: low enough for any provider's smallest plan to answer a few 429s
/// at worst, high enough that slow start reaches a typical limit in seconds.
const INITIAL_RATE: f64 = 2.0;
/// Below one request every ten seconds, nothing useful happens.
const MIN_RATE: f64 = 0.1;
/// The fall back on the first 429, from the rate at which the refused request was sent:
/// slow start crossed the limit within the second before, so that rate is under twice it.
const SLOW_START_DECREASE: f64 = 0.5;
/// The fall back on later 429s: a shallow sawtooth keeps the average near the limit.
const DECREASE: f64 = 0.85;
/// The climb per second after a decrease is `CLIMB_SCALE × r²` requests per second (capped
/// at `CLIMB_MAX × r`), `r` the rate at which the server last refused: constant between
/// decreases (additive), and slow enough at any limit that a sawtooth tooth spans about a
/// hundred requests, so that the one or two 429s at its tip stay near 1% of the traffic.
const CLIMB_SCALE: f64 = 0.0015;
const CLIMB_MAX: f64 = 0.03;
/// After a decrease, 429s to requests sent within this time change nothing more: the
/// window that refused them may still be the one that was full, whatever the new rate.
const HOLD: Duration = Duration::from_secs(1);
/// How far back the rate is remembered: longer than any round trip worth adapting to.
const HISTORY: Duration = Duration::from_secs(10);
/// How often the rate is raised: short enough to be smooth, long enough to see answers.
const STEP: Duration = Duration::from_millis(100);

/// The request rate, adapted to 429 answers.
#[derive(Debug, Clone)]
pub struct Rate {
    rate: f64,
    ceiling: f64,
    slow_start: bool,
    /// The rate at the last decrease: sets the size of the additive step.
    refused_at: f64,
    last_decrease: Option<Instant>,
    last_raise: Instant,
    /// The mean round trip, in seconds.
    rtt: f64,
    /// The rate since each change of the last few seconds, to know the rate a refused
    /// request was sent at: with a long round trip the rate has moved on since.
    history: std::collections::VecDeque<(Instant, f64)>,
}

impl Rate {
    /// A controller that never goes above `ceiling` requests per second.
    pub fn new(now: Instant, ceiling: f64) -> Rate {
        Rate {
            rate: INITIAL_RATE.min(ceiling),
            ceiling,
            slow_start: true,
            refused_at: INITIAL_RATE,
            last_decrease: None,
            last_raise: now,
            rtt: 0.0,
            history: std::collections::VecDeque::new(),
        }
    }

    /// Requests per second now.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The spacing between grants at the current rate.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate)
    }

    /// A request was answered (not refused). The rate only grows while requests queue for
    /// it (`backlogged`): an idle provider proves nothing about its limit.
    pub fn answered(&mut self, now: Instant, granted: Instant, backlogged: bool) {
        let rtt = now.saturating_duration_since(granted).as_secs_f64();
        self.rtt = if self.rtt == 0.0 {
            rtt
        } else {
            0.9 * self.rtt + 0.1 * rtt
        };
        let elapsed = now.saturating_duration_since(self.last_raise);
        if elapsed < STEP {
            return;
        }
        self.last_raise = now;
        if !backlogged {
            return;
        }
        let secs = elapsed.min(Duration::from_secs(1)).as_secs_f64();
        self.rate = if self.slow_start {
            // Doubling once per second and round trip: the first 429 comes back a round
            // trip after the limit was crossed, and the rate must not run far past it.
            self.rate * 2f64.powf(secs / (1.0 + self.rtt))
        } else {
            let climb =
                (CLIMB_SCALE * self.refused_at * self.refused_at).min(CLIMB_MAX * self.refused_at);
            self.rate + climb * secs
        }
        .min(self.ceiling);
        self.remember(now);
    }

    /// A request granted at `granted` was refused with a 429.
    pub fn refused(&mut self, now: Instant, granted: Instant) {
        if self.last_decrease.is_some_and(|d| granted <= d + HOLD) {
            return;
        }
        let sent_at = self.rate_at(granted);
        self.refused_at = sent_at;
        self.rate = if self.slow_start {
            sent_at * SLOW_START_DECREASE
        } else {
            self.rate.min(sent_at) * DECREASE
        }
        .max(MIN_RATE);
        self.slow_start = false;
        self.last_decrease = Some(now);
        self.last_raise = now;
        self.remember(now);
    }

    fn remember(&mut self, now: Instant) {
        self.history.push_back((now, self.rate));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > HISTORY)
        {
            self.history.pop_front();
        }
    }

    /// The rate in force at `t`: the last change at or before it.
    fn rate_at(&self, t: Instant) -> f64 {
        self.history
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map_or(self.rate, |(_, r)| *r)
    }

    /// The provider published its quota: pace at it, and probe no further.
    pub fn learn(&mut self, rate: f64) {
        if rate.is_finite() && rate >= MIN_RATE {
            self.rate = rate;
            self.ceiling = rate;
            self.slow_start = false;
        }
    }
}

/// The number of requests allowed in flight, adapted to timeouts.
#[derive(Debug, Clone)]
pub struct Concurrency {
    limit: usize,
    max: usize,
    last_decrease: Option<Instant>,
    last_raise: Instant,
}

impl Concurrency {
    pub fn new(now: Instant, max: usize) -> Concurrency {
        Concurrency {
            limit: max.max(1),
            max: max.max(1),
            last_decrease: None,
            last_raise: now,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A request was answered: one more slot a second, up to the configured maximum.
    pub fn answered(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_raise) >= Duration::from_secs(1) {
            self.last_raise = now;
            self.limit = (self.limit + 1).min(self.max);
        }
    }

    /// A request granted at `granted` timed out.
    pub fn overloaded(&mut self, now: Instant, granted: Instant) {
        if self.last_decrease.is_some_and(|d| granted <= d) {
            return;
        }
        self.limit = (self.limit / 2).max(1);
        self.last_decrease = Some(now);
        self.last_raise = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server with a fixed one-second window of `limit` requests, answering after
    /// `latency`, driven by the controller for `secs` seconds in 1 ms steps. Returns the
    /// accepted count per second and the number of 429s.
    fn simulate(limit: u64, latency: Duration, secs: u64) -> (Vec<u64>, u64) {
        let start = Instant::now();
        let mut rate = Rate::new(start, 10_000.0);
        let mut next_grant = start;
        let mut in_flight: std::collections::VecDeque<(Instant, Instant, bool)> =
            Default::default();
        let mut window = (0u64, 0u64);
        let mut accepted = vec![0u64; secs as usize];
        let mut refused = 0;
        for ms in 0..secs * 1000 {
            let now = start + Duration::from_millis(ms);
            while let Some(&(granted, answer_at, ok)) = in_flight.front() {
                if answer_at > now {
                    break;
                }
                in_flight.pop_front();
                if ok {
                    rate.answered(now, granted, true);
                } else {
                    rate.refused(now, granted);
                }
            }
            while next_grant <= now {
                let second = ms / 1000;
                if window.0 != second {
                    window = (second, 0);
                }
                let ok = window.1 < limit;
                if ok {
                    window.1 += 1;
                    accepted[second as usize] += 1;
                } else {
                    refused += 1;
                }
                in_flight.push_back((now, now + latency, ok));
                next_grant += rate.period();
            }
        }
        (accepted, refused)
    }

    #[test]
    fn converges_near_an_unknown_limit_with_few_refusals() {
        for (limit, latency_ms) in [(20, 300), (5, 300), (100, 50), (17, 1000), (50, 300)] {
            let (accepted, refused) = simulate(limit, Duration::from_millis(latency_ms), 120);
            eprintln!("{limit} {latency_ms}: {accepted:?} refused {refused}");
            let first_near = accepted
                .iter()
                .position(|&n| n as f64 >= 0.9 * limit as f64)
                .unwrap();
            assert!(first_near < 30, "{limit}/s: {accepted:?}");
            let tail = &accepted[30..];
            let share = tail.iter().sum::<u64>() as f64 / (tail.len() as u64 * limit) as f64;
            let total: u64 = accepted.iter().sum();
            let refused_share = refused as f64 / (total + refused) as f64;
            assert!(share >= 0.9, "{limit}/s: utilisation {share}: {accepted:?}");
            assert!(
                refused_share <= 0.03,
                "{limit}/s: 429 share {refused_share} ({refused} of {})",
                total + refused
            );
        }
    }

    #[test]
    fn one_decrease_per_round_trip_and_idle_time_is_no_evidence() {
        let t0 = Instant::now();
        let mut r = Rate::new(t0, 1000.0);
        let t1 = t0 + Duration::from_secs(1);
        r.answered(t1, t1, false);
        assert_eq!(r.rate(), INITIAL_RATE, "not backlogged: no increase");
        let t2 = t0 + Duration::from_secs(2);
        r.answered(t2, t2, true);
        assert_eq!(
            r.rate(),
            2.0 * INITIAL_RATE,
            "slow start doubles each second"
        );
        let t = t0 + Duration::from_secs(3);
        r.refused(t, t0);
        assert_eq!(r.rate(), INITIAL_RATE);
        r.refused(t + Duration::from_millis(10), t - Duration::from_millis(1));
        assert_eq!(r.rate(), INITIAL_RATE, "sent before the decrease: ignored");
        r.refused(t + Duration::from_millis(20), t + Duration::from_millis(5));
        assert_eq!(
            r.rate(),
            INITIAL_RATE,
            "sent within a second of it: ignored"
        );
        r.refused(t + Duration::from_secs(2), t + Duration::from_millis(1500));
        assert_eq!(r.rate(), INITIAL_RATE * DECREASE);
        r.learn(17.0);
        assert_eq!(r.period(), Duration::from_secs_f64(1.0 / 17.0));
    }

    #[test]
    fn concurrency_halves_on_timeouts_and_grows_back_by_one_a_second() {
        let t0 = Instant::now();
        let mut c = Concurrency::new(t0, 16);
        c.overloaded(t0, t0);
        c.overloaded(t0 + Duration::from_millis(1), t0);
        assert_eq!(c.limit(), 8, "one halving per round trip");
        c.overloaded(t0 + Duration::from_millis(2), t0 + Duration::from_millis(1));
        assert_eq!(c.limit(), 4);
        for s in 1..=20 {
            c.answered(t0 + Duration::from_secs(s));
        }
        assert_eq!(c.limit(), 16, "capped at the configured maximum");
    }
}
