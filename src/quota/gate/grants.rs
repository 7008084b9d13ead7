//! The grant loop: one task on the runtime decides, for every waiter, when it may go.

use super::timer::SlotTimer;
use super::*;

/// What the grant loop does next.
enum Next {
    /// Sleep until then (a time of `CLOCK_MONOTONIC`), or until woken.
    Sleep(Duration),
    /// Wait for a report or a new waiter.
    Wait,
    Refuse(GateError),
    Grant {
        probe: bool,
        /// The slot of a counted request; `None` for one the provider does not count.
        slot: Option<Duration>,
    },
}

/// The grant loop, until its gate is gone or closed. It holds the gate only while it decides:
/// the gate ends when its last handle is dropped, which wakes the loop to end too.
pub(super) async fn grant_loop(weak: Weak<Inner>, wake: Arc<Notify>) {
    let timer = SlotTimer::new();
    loop {
        let until = {
            let Some(inner) = weak.upgrade() else { return };
            let mut st = lock(&inner.state);
            let until = loop {
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
                    Next::Sleep(until) => break Some(until),
                    Next::Wait => break None,
                }
            };
            let release = st.releases.front().map(|(slot, _)| *slot);
            let own = [until, release].into_iter().flatten().min();
            // A wait ends at the loop's own next wake-up when that comes soon enough after
            // it, and on time otherwise.
            let until = match st.sleepers.first_key_value().map(|((at, _), _)| *at) {
                Some(at) if own.is_none_or(|own| own > at + COALESCE) => Some(at),
                _ => own,
            };
            st.wakes_at = until;
            until
        };
        match until {
            Some(at) => {
                tokio::select! {
                    () = wake.notified() => {}
                    () = timer.sleep_until(at) => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// Releases the grants whose slot has come, and ends the waits that are over.
fn release_due(st: &mut State) {
    let now = mono_now();
    while st.releases.front().is_some_and(|(slot, _)| *slot <= now) {
        if let Some((_, tx)) = st.releases.pop_front() {
            let _ = tx.send(());
        }
    }
    while let Some(entry) = st.sleepers.first_entry() {
        if entry.key().0 > now {
            break;
        }
        let _ = entry.remove().send(());
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
            return Next::Sleep(mono_at(now, until));
        }
        Admit::WaitForProbe => {
            st.pacer.idle();
            return Next::Wait;
        }
        Admit::Go { probe } => probe,
    };
    if let Some(until) = c.paused_until.filter(|u| *u > now) {
        st.pacer.idle();
        return Next::Sleep(mono_at(now, until));
    }
    if c.in_flight >= c.concurrency.limit() {
        st.pacer.idle();
        return Next::Wait;
    }
    if free {
        return Next::Grant { probe, slot: None };
    }
    c.day_full = false;
    if let Some(day) = &inner.day
        && !lock(day).room(unix_minute())
    {
        if c.reserved > 0 {
            c.day_full = true;
            return Next::Wait;
        }
        return Next::Refuse(GateError::DayExhausted);
    }
    let paid = st.queues.next_counted().is_some_and(|w| w.paid);
    let lead = |st: &State| {
        if paid {
            st.control.lead(st.pacer.period())
        } else {
            Duration::ZERO
        }
    };
    if let Some(when) = st.pacer.too_early(lead(st)) {
        return Next::Sleep(when);
    }
    let agreed = st.pacer.agree(st.control.period(), st.control.settled());
    st.control.agreed(agreed);
    match st.pacer.take(lead(st)) {
        Ok(slot) => Next::Grant {
            probe,
            slot: Some(slot),
        },
        Err(when) => Next::Sleep(when),
    }
}

/// The monotonic time of `at`, as seen at `now`.
fn mono_at(now: Instant, at: Instant) -> Duration {
    mono_now() + at.saturating_duration_since(now)
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
    let minute = unix_minute();
    if counted && let Some(day) = &inner.day {
        lock(day).add(minute, 1);
    }
    let c = &mut st.control;
    c.in_flight += 1;
    c.reserved += usize::from(counted);
    c.backlogged = backlogged;
    if probe {
        c.breaker.probe_sent();
    }
    let release = slot.filter(|s| *s > mono_now()).map(|s| {
        let (tx, rx) = oneshot::channel();
        st.releases.push_back((s, tx));
        rx
    });
    let commit_by = std::time::Instant::now()
        + slot.map_or(Duration::ZERO, |s| {
            s.saturating_sub(st.control.commit_lead())
                .saturating_sub(mono_now())
        });
    let ticket = Grant {
        inner: inner.clone(),
        at: Instant::now(),
        slot,
        commit_by,
        minute,
        settled: false,
        release,
        released: None,
        // Counted as sent at its slot, when it leaves, however far ahead it was granted.
        sent: match slot {
            Some(slot) => {
                let paced = st.pacer.period();
                let at = Instant::now() + slot.saturating_sub(mono_now());
                st.control.sent(at, paced)
            }
            None => None,
        },
        probe,
        counted,
        open: true,
        seq: {
            st.control.granted += 1;
            st.control.granted
        },
    };
    // A waiter that gave up (its task ended) returns the grant, which frees its place as it
    // drops; the slot it used stays used, which errs on the safe side.
    if let Err(returned) = waiter.tx.send(Ok(ticket)) {
        drop_unlocked(st, returned);
    }
}

/// A grant returned by a waiter that is gone: freed here, since its own drop would take the
/// lock the grant loop holds.
fn drop_unlocked(st: &mut State, returned: Result<Grant, GateError>) {
    if let Ok(mut g) = returned {
        g.open = false;
        st.control.abandoned(g.probe);
        if g.counted {
            g.settled = true;
            st.control.reserved -= 1;
        }
    }
}
