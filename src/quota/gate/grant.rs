//! A grant, and what its request's answer tells the gate.

use super::*;

/// The right to send one request. Report how it went; dropping it unreported frees its slot.
pub struct Grant {
    pub(super) inner: Arc<Inner>,
    /// When it was sent (its release), for the round trip.
    pub(super) at: Instant,
    /// The monotonic time of its slot, for a counted request.
    pub(super) slot: Option<Duration>,
    /// When its intent, if it has one, is to be committed.
    pub(super) commit_by: std::time::Instant,
    /// The minute its reservation in the day's window is counted in.
    pub(super) minute: i64,
    /// Whether its reservation is settled: used as the request left, or given back.
    pub(super) settled: bool,
    pub(super) release: Option<oneshot::Receiver<()>>,
    /// Whether its release came (`false`: the gate closed first); `None` for a grant given at
    /// its slot, which has none.
    pub(super) released: Option<bool>,
    pub(super) sent: Option<Sent>,
    pub(super) probe: bool,
    pub(super) counted: bool,
    pub(super) open: bool,
    /// Its number among the gate's grants.
    pub(super) seq: u64,
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
    /// When a paid request's intent is to be committed: as long before its slot as recent
    /// commits took, with room to spare, however far ahead it was granted.
    pub fn commit_by(&self) -> std::time::Instant {
        self.commit_by
    }

    /// Waits for the request's slot, or for the gate to close, and decides nothing: a paid
    /// request's intent, sent to the journal as it was granted, is awaited after this, so that
    /// its commit, done just before the slot, wakes nobody.
    pub async fn slot(&mut self) {
        if let Some(release) = self.release.take() {
            self.released = Some(release.await.is_ok());
        }
    }

    /// Waits until the request's slot. `false` when a grant given ahead of its slot comes
    /// back after the slot passed by more than the request may be late (its intent took too
    /// long), or the gate closed: the grant must be given up and a new one asked for.
    ///
    /// A counted request is reserved in the day's window when it is granted, so that grants
    /// ahead of their slots never pass the day's quota, and recorded as used (the journal,
    /// the account's ledger) here, as it leaves. A grant given up returns its reservation.
    pub async fn until_slot(&mut self) -> bool {
        self.slot().await;
        let on_time = match self.released {
            None => true,
            Some(released) => released && self.slot.is_none_or(|slot| mono_now() <= slot + LATE),
        };
        if on_time && self.slot.is_some() {
            self.space().await;
        }
        self.at = Instant::now();
        if self.counted && !self.settled {
            self.settled = true;
            if on_time {
                if let Some(usage) = &self.inner.usage {
                    usage(unix_minute());
                }
            } else if let Some(day) = &self.inner.day {
                lock(day).remove(self.minute, 1);
            }
            let waits = {
                let mut st = lock(&self.inner.state);
                st.control.reserved -= 1;
                st.control.day_full
            };
            // The grant loop waits on reservations only when the day's window is full: for
            // one given back, or for the last one to settle.
            if waits {
                self.inner.wake.notify_one();
            }
        }
        on_time
    }

    /// Keeps this request a period (less [`DEPARTURE_SLACK`]) behind the one that left before
    /// it, this job's or another's on the account, whenever that one left late: their slots
    /// are a period apart, their departures need not be.
    async fn space(&self) {
        let due = lock(&self.inner.state).pacer.depart(DEPARTURE_SLACK);
        let wait = due.saturating_sub(mono_now());
        if wait.is_zero() {
            return;
        }
        // The timer wakes on a millisecond tick, after `due`: the next one keeps its distance
        // from when this one really leaves.
        tokio::time::sleep(wait).await;
        lock(&self.inner.state).pacer.departed(mono_now());
    }

    /// Feeds the outcome back: the breaker, the adaptive rate, margin and concurrency, and
    /// any pause or policy the provider's headers announce.
    pub fn report(mut self, signal: Signal) -> Option<Refusal> {
        self.open = false;
        let now = Instant::now();
        let rtt = now.saturating_duration_since(self.at);
        let mut st = lock(&self.inner.state);
        let c = &mut st.control;
        // What the grant loop may be waiting for: room under the concurrency limit, a probe's
        // answer, a rate still being learned, or what a refusal or failure changes.
        let wake = c.in_flight >= c.concurrency.limit()
            || self.probe
            || matches!(c.pace, Pace::Unknown(_))
            || !matches!(signal, Signal::Answered(_));
        c.in_flight = c.in_flight.saturating_sub(1);
        let mut refusal = None;
        let exhausted = match signal {
            Signal::Answered(hints) => {
                c.breaker.record(now, true, self.probe);
                c.concurrency.answered(now);
                if c.last_refused.is_none_or(|r| self.seq > r) {
                    c.refusals = 0;
                    c.holds = 0;
                }
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
                        margin.refused(sent, c.runs);
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
                // A 429 to a request granted before the last refused one says nothing new: it
                // must not lengthen the run of them; one granted after an admitted one starts
                // a new run.
                let fresh = c.last_refused.is_none_or(|r| self.seq > r);
                if fresh {
                    let follows = c.last_refused.is_some_and(|r| self.seq == r + 1);
                    c.refusals = if follows { c.refusals + 1 } else { 1 };
                    c.last_refused = Some(self.seq);
                    if c.refusals < REFUSALS_IN_A_ROW {
                        c.holds = 0;
                    }
                }
                refusal = Some(match announced {
                    _ if hints.beyond_reach => Refusal::Held,
                    Some(wait) => {
                        c.pause(now + wait);
                        Refusal::Held
                    }
                    None if c.refusals >= REFUSALS_IN_A_ROW => {
                        // The wait grows once a pause, not once a 429: those granted before
                        // the last pause began tell nothing of how it went.
                        if self.seq > c.held_at {
                            let wait = REFUSED_BACKOFF.delay(c.holds);
                            c.holds += 1;
                            c.held_at = c.granted;
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
        if wake || exhausted {
            self.inner.wake.notify_one();
        }
        refusal
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let unsettled = self.counted && !self.settled;
        if self.open || unsettled {
            let mut st = lock(&self.inner.state);
            if self.open {
                st.control.abandoned(self.probe);
            }
            if unsettled {
                // Kept as used: whether it left is not known here, and over-counting is safe.
                st.control.reserved -= 1;
            }
            drop(st);
            self.inner.wake.notify_one();
        }
    }
}
