//! The circuit breaker: when most recent calls fail, a provider is sick, and sending more only
//! hammers it and burns the retry budget. The breaker stops dispatch, waits, lets one probe
//! through, and resumes when the probe is answered, waiting longer after each failed probe.
//! When the provider stays down past a limit, it gives up: the run ends with what it has.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How many recent calls are weighed.
const WINDOW: usize = 20;
/// Fewer calls than this prove nothing.
const MIN_CALLS: usize = 10;
/// The share of failures in the window that trips the breaker: most recent calls.
const TRIP_SHARE: f64 = 0.5;
const FIRST_COOLDOWN: Duration = Duration::from_secs(1);
const MAX_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// No calls until `until`; down since `since`.
    Open {
        since: Instant,
        until: Instant,
        cooldown: Duration,
    },
    /// One probe may go (`probing` once it went).
    HalfOpen {
        since: Instant,
        cooldown: Duration,
        probing: bool,
    },
    /// Down for longer than the run waits.
    GaveUp,
}

/// What the breaker allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Send; `probe` when this call decides whether the provider is back.
    Go { probe: bool },
    /// Nothing until this instant.
    WaitUntil(Instant),
    /// Nothing until the probe in flight is answered.
    WaitForProbe,
    /// The provider stayed down: stop.
    GiveUp,
}

#[derive(Debug)]
pub struct Breaker {
    recent: VecDeque<bool>,
    state: State,
    give_up_after: Duration,
    /// Times the breaker opened from closed.
    pub trips: u64,
}

impl Breaker {
    /// A breaker that gives up once the provider has been down for `give_up_after`.
    pub fn new(give_up_after: Duration) -> Breaker {
        Breaker {
            recent: VecDeque::with_capacity(WINDOW),
            state: State::Closed,
            give_up_after,
            trips: 0,
        }
    }

    /// What may be sent now. Asking changes nothing but the give-up: a grant that then waits
    /// for the pacer must find the same answer when it comes back.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed => Admit::Go { probe: false },
            State::GaveUp => Admit::GiveUp,
            State::Open { since, .. } | State::HalfOpen { since, .. }
                if now.saturating_duration_since(since) >= self.give_up_after =>
            {
                self.state = State::GaveUp;
                Admit::GiveUp
            }
            State::Open { since, until, .. } if now < until => {
                Admit::WaitUntil(until.min(since + self.give_up_after))
            }
            State::HalfOpen { probing: true, .. } => Admit::WaitForProbe,
            State::Open { .. } | State::HalfOpen { .. } => Admit::Go { probe: true },
        }
    }

    /// The probe [`admit`](Self::admit) allowed was granted: no other until it is answered.
    pub fn probe_sent(&mut self) {
        if let State::Open {
            since, cooldown, ..
        }
        | State::HalfOpen {
            since, cooldown, ..
        } = self.state
        {
            self.state = State::HalfOpen {
                since,
                cooldown,
                probing: true,
            };
        }
    }

    /// The answer to a call: `ok` unless it failed (5xx, timeout, transport, 429). Calls
    /// other than the probe that come back while the breaker is open change nothing: they
    /// were sent before it opened.
    pub fn record(&mut self, now: Instant, ok: bool, probe: bool) {
        match self.state {
            State::Closed => {
                if self.recent.len() == WINDOW {
                    self.recent.pop_front();
                }
                self.recent.push_back(ok);
                let failed = self.recent.iter().filter(|ok| !**ok).count();
                if self.recent.len() >= MIN_CALLS
                    && failed as f64 >= TRIP_SHARE * self.recent.len() as f64
                {
                    self.trips += 1;
                    tracing::warn!(
                        "{failed} of the last {} calls failed: pausing dispatch for {} s \
                         before probing the provider",
                        self.recent.len(),
                        FIRST_COOLDOWN.as_secs()
                    );
                    self.state = State::Open {
                        since: now,
                        until: now + FIRST_COOLDOWN,
                        cooldown: FIRST_COOLDOWN,
                    };
                }
            }
            State::HalfOpen {
                since, cooldown, ..
            } if probe => {
                if ok {
                    tracing::info!("the provider answered the probe: dispatch resumes");
                    self.recent.clear();
                    self.state = State::Closed;
                } else {
                    let cooldown = (cooldown * 2).min(MAX_COOLDOWN);
                    self.state = State::Open {
                        since,
                        until: now + cooldown,
                        cooldown,
                    };
                }
            }
            _ => {}
        }
    }

    /// The probe's grant was dropped unanswered (the run is stopping, or its task ended):
    /// another call may probe.
    pub fn probe_abandoned(&mut self) {
        if let State::HalfOpen {
            since, cooldown, ..
        } = self.state
        {
            self.state = State::HalfOpen {
                since,
                cooldown,
                probing: false,
            };
        }
    }

    pub fn gave_up(&self) -> bool {
        self.state == State::GaveUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_on_mostly_failures_probes_and_recovers() {
        let t0 = Instant::now();
        let mut b = Breaker::new(Duration::from_secs(60));
        // A 10% failure share never trips it.
        for i in 0..100 {
            b.record(t0, i % 10 != 0, false);
            assert_eq!(b.admit(t0), Admit::Go { probe: false });
        }
        for _ in 0..10 {
            b.record(t0, false, false);
        }
        assert_eq!(b.trips, 1);
        assert_eq!(b.admit(t0), Admit::WaitUntil(t0 + FIRST_COOLDOWN));
        let t1 = t0 + FIRST_COOLDOWN;
        assert_eq!(b.admit(t1), Admit::Go { probe: true });
        assert_eq!(
            b.admit(t1),
            Admit::Go { probe: true },
            "asking changes nothing"
        );
        b.probe_sent();
        assert_eq!(b.admit(t1), Admit::WaitForProbe, "one probe at a time");
        b.record(t1, true, false);
        assert_eq!(b.admit(t1), Admit::WaitForProbe, "only the probe decides");
        b.record(t1, false, true);
        assert_eq!(b.admit(t1), Admit::WaitUntil(t1 + FIRST_COOLDOWN * 2));
        let t2 = t1 + FIRST_COOLDOWN * 2;
        assert_eq!(b.admit(t2), Admit::Go { probe: true });
        b.probe_sent();
        b.probe_abandoned();
        assert_eq!(b.admit(t2), Admit::Go { probe: true });
        b.probe_sent();
        b.record(t2, true, true);
        assert_eq!(b.admit(t2), Admit::Go { probe: false });
    }

    #[test]
    fn gives_up_when_down_too_long() {
        let t0 = Instant::now();
        let mut b = Breaker::new(Duration::from_secs(5));
        for _ in 0..MIN_CALLS {
            b.record(t0, false, false);
        }
        let mut t = t0;
        loop {
            match b.admit(t) {
                Admit::WaitUntil(until) => t = until,
                Admit::Go { probe: true } => {
                    b.probe_sent();
                    b.record(t, false, true);
                }
                Admit::GiveUp => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(b.gave_up());
        assert!(t - t0 >= Duration::from_secs(5));
        assert_eq!(b.admit(t + Duration::from_secs(600)), Admit::GiveUp);
    }
}
