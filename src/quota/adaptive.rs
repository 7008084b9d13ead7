//! Finding a provider's limits from its answers, as TCP does for its window and vector's
//! adaptive request concurrency does for its sinks.
//!
//! Three controllers, each reacting to its own signal:
//! - the **margin** below a configured quota ([`Margin`]): the configured rate is a ceiling,
//!   not a promise. The provider may count differently from us (a zero-burst limiter on a
//!   millisecond clock, a window that sees our requests jittered by the network path) or admit
//!   less than the config says (a downgraded plan, a quota shared with another product). The
//!   paced rate is a fraction of the configured one, lowered on 429s by as much as their share
//!   says and crept back up while answers stay clean, so that it settles where this provider,
//!   on this path, refuses about one request in a thousand;
//! - the request **rate**, when no per-second or per-minute quota is configured ([`Rate`]): it
//!   starts low, doubles every second while requests queue for it (slow start), and on a 429
//!   falls back by a factor, returns quickly to just under what the server admitted in the
//!   second before, climbs more slowly to just under the rate it refused, and slowly beyond,
//!   probing the server's limit;
//! - the **concurrency**, always: a timeout means the provider is overloaded, so the number of
//!   requests in flight is halved, then grows back by one a second while answers come.
//!
//! None of them decreases twice for one piece of evidence: 429s to requests sent before the
//! last decrease report the old rate, not the new one.

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
/// After a decrease the rate returns quickly, a share of the distance per second, to this
/// much under what the provider admitted before it refused (its limit is no lower), then
/// climbs more slowly towards as much under the rate it refused (its limit is no higher):
/// over a zero-burst limiter, the admitted rate is half the refused one at worst, the limit
/// in between.
const RETURN_PER_SEC: f64 = 0.5;
const CLIMB_PER_SEC: f64 = 0.2;
const UNDER_REFUSED: f64 = 0.02;
/// Past that, it probes: this share of the rate per second, slow enough that a sawtooth tooth
/// spans several seconds, so that the one or two 429s at its tip stay near 1% of the traffic.
const PROBE_PER_SEC: f64 = 0.005;
/// After a decrease, 429s to requests sent within this time change nothing more: the
/// window that refused them may still be the one that was full, whatever the new rate.
const HOLD: Duration = Duration::from_secs(1);
/// How far back the rate is remembered: longer than any round trip worth adapting to.
const HISTORY: Duration = Duration::from_secs(10);
/// What the provider admitted is read over this much before a refused request: the second a
/// per-second window counts.
const ADMITTED_OVER: Duration = Duration::from_secs(1);
/// How often the rate is raised: short enough to be smooth, long enough to see answers.
const STEP: Duration = Duration::from_millis(100);

/// A mean round trip, in seconds, moved towards a new one: smooth enough that one slow answer
/// does not redraw the ramp, quick enough to follow a path that changed.
fn smoothed(mean: f64, rtt: Duration) -> f64 {
    let rtt = rtt.as_secs_f64();
    if mean == 0.0 {
        rtt
    } else {
        0.9 * mean + 0.1 * rtt
    }
}

/// Drops the times in `q` older than `HISTORY` before `now`.
fn forget_before(q: &mut std::collections::VecDeque<Instant>, now: Instant) {
    while q
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > HISTORY)
    {
        q.pop_front();
    }
}

/// The request rate, adapted to 429 answers.
#[derive(Debug, Clone)]
pub struct Rate {
    rate: f64,
    ceiling: f64,
    slow_start: bool,
    /// The rate at which the server last refused a request, and what it admitted in the
    /// second before: its limit lies between.
    refused_at: f64,
    admitted_at: f64,
    last_decrease: Option<Instant>,
    last_raise: Instant,
    /// The mean round trip, in seconds.
    rtt: f64,
    /// The rate since each change of the last few seconds, to know the rate a refused
    /// request was sent at: with a long round trip the rate has moved on since.
    history: std::collections::VecDeque<(Instant, f64)>,
    /// When the requests of the last few seconds were granted, and which of them were
    /// refused: what the provider admitted, read without waiting for the admitted answers,
    /// which come a round trip after the 429s.
    grants: std::collections::VecDeque<Instant>,
    refusals: std::collections::VecDeque<Instant>,
}

impl Rate {
    /// A controller that never goes above `ceiling` requests per second.
    pub fn new(now: Instant, ceiling: f64) -> Rate {
        Rate {
            rate: INITIAL_RATE.min(ceiling),
            ceiling,
            slow_start: true,
            refused_at: INITIAL_RATE,
            admitted_at: INITIAL_RATE,
            last_decrease: None,
            last_raise: now,
            rtt: 0.0,
            history: std::collections::VecDeque::new(),
            grants: std::collections::VecDeque::new(),
            refusals: std::collections::VecDeque::new(),
        }
    }

    /// A request was granted at `at`.
    pub fn granted(&mut self, at: Instant) {
        self.grants.push_back(at);
        forget_before(&mut self.grants, at);
    }

    /// Requests per second now.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether the server has refused a request yet: until then the rate is no finding.
    pub fn refused_once(&self) -> bool {
        self.last_decrease.is_some()
    }

    /// The spacing between grants at the current rate.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate)
    }

    /// A request was answered (not refused). The rate only grows while requests queue for
    /// it (`backlogged`): an idle provider proves nothing about its limit.
    pub fn answered(&mut self, now: Instant, granted: Instant, backlogged: bool) {
        self.rtt = smoothed(self.rtt, now.saturating_duration_since(granted));
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
            let under = 1.0 - UNDER_REFUSED;
            let (low, high) = (self.admitted_at * under, self.refused_at * under);
            let towards = |to: f64, share: f64| self.rate + (to - self.rate) * share.min(1.0);
            if self.rate < high {
                towards(low, RETURN_PER_SEC * secs).max(towards(high, CLIMB_PER_SEC * secs))
            } else {
                self.rate * (1.0 + PROBE_PER_SEC * secs)
            }
        }
        .min(self.ceiling);
        self.remember(now);
    }

    /// A request granted at `granted` was refused with a 429.
    pub fn refused(&mut self, now: Instant, granted: Instant) {
        self.refusals.push_back(granted);
        forget_before(&mut self.refusals, now);
        if self.last_decrease.is_some_and(|d| granted <= d + HOLD) {
            return;
        }
        let sent_at = self.rate_at(granted);
        self.refused_at = sent_at;
        // Not under half the refused rate: a longer window that ran out admits nothing for a
        // while, which says nothing of its rate. Half, too, when the grants before are not
        // known (a 429 in the first second).
        self.admitted_at = self
            .admitted_before(granted)
            .unwrap_or_default()
            .clamp(sent_at * SLOW_START_DECREASE, sent_at);
        self.rate = if self.slow_start {
            // As far under what was admitted as a later 429 falls, if that is more than half.
            (sent_at * SLOW_START_DECREASE).max(self.admitted_at * DECREASE)
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

    /// The requests per second granted in the `ADMITTED_OVER` up to `t` and not refused, if
    /// the grants of all of it are still remembered.
    fn admitted_before(&self, t: Instant) -> Option<f64> {
        let from = t.checked_sub(ADMITTED_OVER)?;
        if self.grants.front().is_none_or(|first| *first > from) {
            return None;
        }
        let within = |q: &std::collections::VecDeque<Instant>| {
            q.iter().filter(|at| **at > from && **at <= t).count()
        };
        let admitted = within(&self.grants).saturating_sub(within(&self.refusals));
        Some(admitted as f64 / ADMITTED_OVER.as_secs_f64())
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

/// Where the margin starts: half the configured rate, ramping up to all of it within a few
/// round trips while answers are clean. The requests sent before the first answer comes back
/// are sent blind; at half the rate, a provider that admits much less than the config says
/// refuses fewer of them.
const MARGIN_START: f64 = 0.5;
/// The ramp: the rate grows by `e^RAMP` a round trip while no request is refused, all of it
/// within a second at the usual round trips.
const MARGIN_RAMP: f64 = 0.25;
/// A 429 lowers the rate to `1 - β` of the rate its request was sent at, with `β` this share
/// of the refused share of the last `MARGIN_WINDOW` requests sent up to it, not counting it:
/// one 429 is a pacing miss, whenever it comes, and each more in the window is evidence of a
/// rate over the limit. Counted by when the requests left, not by when answers came back: a
/// gateway answers a 429 at once and an admitted request a round trip later, so that counting
/// answers would read the first 429 after a cut as all of its generation ...
const MARGIN_SHARE: f64 = 0.6;
const MARGIN_WINDOW: u64 = 20;
/// ... and `β` between these: a pacing miss costs 1%, a provider far below the config at most
/// 30% a 429.
const MARGIN_MIN_CUT: f64 = 0.01;
const MARGIN_MAX_CUT: f64 = 0.3;
/// `β` is also at least the least cut for each 429 among the last `MARGIN_RECENT` requests
/// sent up to it, this one among them. A pacing miss now and then costs 1%; 429s that keep
/// coming a request in a hundred or so (a rate a few points over a jittery path's limit, which
/// refuses them one at a time, never two near each other) cut deeper each time, so that the
/// rate comes down in a few of them rather than 1% a 429. With jobs sharing the account's
/// pace, a job sends one of every `runs` of the account's requests and sees that share of its
/// 429s: each stands for `runs` of them, counted over the job's last `MARGIN_RECENT / runs`
/// requests, which span the account's last `MARGIN_RECENT`. Counted by the job alone, the
/// start-up descent of three jobs came down a third as fast, and cost half as many 429s again.
const MARGIN_RECENT: u64 = 200;
/// Each clean answer raises the rate by this share: a 1% cut takes a thousand clean answers
/// to undo, so that the rate settles where about one request in a thousand is refused.
const MARGIN_CREEP: f64 = 1e-5;
/// A run of clean answers longer than a settled rate sees (it meets a 429 about every thousand)
/// doubles the creep every `MARGIN_DOUBLING` more answers (up to a cap), so that the rate
/// comes back within minutes after a passing throttle (another product using the shared quota
/// for a while).
const MARGIN_LONG_RUN: u32 = 1000;
const MARGIN_DOUBLING: u32 = 300;
const MARGIN_MAX_CREEP: f64 = 1e-3;
/// A cut this deep may have overshot (the refused share of a zero-burst limiter overstates
/// how far over it the rate was): after each run of clean answers the rate tries the midpoint
/// back towards the refused rate, until a probe is refused or comes within 5% of it.
const MARGIN_DEEP_CUT: f64 = 0.1;
const MARGIN_PROBE_AFTER: u32 = 100;
const MARGIN_PROBE_CLOSE: f64 = 0.05;
/// The rate never falls below this share of the configured one.
const MARGIN_FLOOR: f64 = 0.01;

/// What the margin was when a request was sent, to read its answer against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sent {
    generation: u64,
    fraction: f64,
    /// Its place among the requests sent.
    seq: u64,
}

/// The share of a configured rate the provider admits on this path, learned from its 429s.
#[derive(Debug, Clone)]
pub struct Margin {
    /// The paced rate over the configured one.
    fraction: f64,
    /// While ramping: when the rate last grew, or the margin was made (until the first
    /// request starts the ramp's clock).
    ramping: Option<Instant>,
    /// Whether a request was sent: the ramp's clock runs from the first, not from before the
    /// run's token or its polls.
    started: bool,
    /// The decreases so far (a request's generation is the number before it was sent), the
    /// requests sent, and the places among them of the recently refused ones.
    generation: u64,
    seq: u64,
    refused_seqs: std::collections::VecDeque<u64>,
    /// Clean answers of the current generation, and since the last probe.
    clean: u32,
    since_probe: u32,
    /// The fraction refused before a deep cut, which probes climb back towards.
    refused_at: Option<f64>,
    /// The mean round trip, in seconds.
    rtt: f64,
    refused: u64,
}

impl Margin {
    /// A margin that starts its ramp at `now`.
    pub fn new(now: Instant) -> Margin {
        Margin {
            fraction: MARGIN_START,
            ramping: Some(now),
            started: false,
            generation: 0,
            seq: 0,
            refused_seqs: std::collections::VecDeque::new(),
            clean: 0,
            since_probe: 0,
            refused_at: None,
            rtt: 0.0,
            refused: 0,
        }
    }

    /// The paced rate over the configured one, in (0, 1].
    pub fn fraction(&self) -> f64 {
        self.fraction
    }

    /// How many 429s it has read.
    pub fn refusals(&self) -> u64 {
        self.refused
    }

    /// Whether the rate is learned from the provider's 429s, not a ramp's or a config's: only
    /// then does it say what the provider admits.
    pub fn learned(&self) -> bool {
        self.refused > 0
    }

    /// Other jobs on the account already learned what the provider admits: start from their
    /// rate, `fraction` of the configured one, instead of ramping up. A rate below where the
    /// ramp starts is another config's (a per-minute job beside a per-second one), not this
    /// one's to keep after they leave; meanwhile the account's jobs pace at the widest anyway.
    pub fn join(&mut self, fraction: f64) {
        if self.ramping.is_some() && fraction >= MARGIN_START {
            self.ramping = None;
            self.fraction = fraction.min(1.0);
        }
    }

    /// The margin a request granted at `now` is sent under: its own, or `paced` (the fraction
    /// of the configured rate the account's jobs agreed on) where that is lower. A 429 then cuts
    /// from the rate the request really went at, so that with jobs sharing an account each 429
    /// lowers the account's pace, whichever job it came to.
    pub fn sent(&mut self, now: Instant, paced: f64) -> Sent {
        if !self.started {
            self.started = true;
            if self.ramping.is_some() {
                self.ramping = Some(now);
            }
        }
        self.seq += 1;
        Sent {
            generation: self.generation,
            fraction: self.fraction.min(paced),
            seq: self.seq,
        }
    }

    /// The 429s among the last `MARGIN_WINDOW` requests sent up to `seq`, this one among them,
    /// and the account's among its last `MARGIN_RECENT`, as this job's share of them shows
    /// (`runs` jobs share the pace). Older refusals are forgotten once they are out of the
    /// window of every request that may still be answered, the oldest of them a few windows
    /// back.
    fn refused_near(&mut self, seq: u64, runs: u64) -> (u64, u64) {
        self.refused_seqs.push_back(seq);
        let oldest = self
            .seq
            .saturating_sub((4 * MARGIN_WINDOW).max(2 * MARGIN_RECENT));
        self.refused_seqs.retain(|s| *s >= oldest);
        let within = |n: u64| {
            self.refused_seqs
                .iter()
                .filter(|s| **s <= seq && **s + n > seq)
                .count() as u64
        };
        let runs = runs.max(1);
        (
            within(MARGIN_WINDOW),
            runs * within((MARGIN_RECENT / runs).max(1)),
        )
    }

    /// A request sent under `sent` was answered (not refused) at `now`, after `rtt`. `runs`:
    /// how many jobs share the account's pace now; each sees only its share of the answers,
    /// so each creeps that much faster.
    pub fn answered(&mut self, now: Instant, sent: Sent, rtt: Duration, runs: usize) {
        self.rtt = smoothed(self.rtt, rtt);
        if sent.generation != self.generation {
            return;
        }
        self.clean += 1;
        self.since_probe += 1;
        if let Some(grew) = self.ramping {
            // By the time since the last growth, so that the ramp keeps its pace however few
            // of the answers this run gets (jobs sharing an account share the answers).
            let trips = now.saturating_duration_since(grew).as_secs_f64() / self.rtt.max(0.001);
            self.fraction *= (MARGIN_RAMP * trips).exp();
            self.ramping = (self.fraction < 1.0).then_some(now);
        } else {
            if let Some(hi) = self
                .refused_at
                .filter(|_| self.since_probe >= MARGIN_PROBE_AFTER)
            {
                if hi - self.fraction > MARGIN_PROBE_CLOSE * hi {
                    self.fraction = self.fraction.max((self.fraction + hi) / 2.0);
                    self.since_probe = 0;
                } else {
                    self.refused_at = None;
                }
            }
            let doublings =
                f64::from(self.clean.saturating_sub(MARGIN_LONG_RUN)) / f64::from(MARGIN_DOUBLING);
            let creep = (MARGIN_CREEP * doublings.exp2()).min(MARGIN_MAX_CREEP);
            self.fraction *= 1.0 + creep * runs.max(1) as f64;
        }
        self.fraction = self.fraction.min(1.0);
    }

    /// A request sent under `sent` was refused with a 429, while `runs` jobs shared the
    /// account's pace.
    pub fn refused(&mut self, sent: Sent, runs: usize) {
        self.refused += 1;
        self.ramping = None;
        let (near, recent) = self.refused_near(sent.seq, runs as u64);
        let share = near.saturating_sub(1) as f64 / MARGIN_WINDOW as f64;
        let cut = (MARGIN_SHARE * share)
            .max(MARGIN_MIN_CUT * recent as f64)
            .clamp(MARGIN_MIN_CUT, MARGIN_MAX_CUT);
        let lowered = (sent.fraction * (1.0 - cut)).max(MARGIN_FLOOR);
        if lowered < self.fraction {
            self.refused_at = (cut >= MARGIN_DEEP_CUT).then_some(sent.fraction);
            self.fraction = lowered;
            if sent.generation == self.generation {
                self.generation += 1;
            }
            self.clean = 0;
            self.since_probe = 0;
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
mod tests;
