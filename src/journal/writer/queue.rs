//! The changes sent to the writer thread, and when it wakes to commit them: at once for a
//! change somebody waits for, at its time for an intent sent ahead of it, within
//! [`PATIENCE`] for a poll's answer, within [`COMMIT_EVERY`] for the rest, and never once a
//! change when one wake-up can take several.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Op;
use crate::util::alarm::Alarm;
use crate::util::sync::lock;

/// How often the requests counted in [`super::JournalWriter::usage`] are taken into a commit:
/// a kill loses at most this much of the day's count, as the account ledger, which records
/// once a second too, does. Taken with every commit, they would add a page to each.
pub(super) const USAGE_EVERY: Duration = Duration::from_secs(1);
/// The shortest time between two commits that nobody waits for.
const COMMIT_EVERY: Duration = Duration::from_millis(20);
/// How long a poll's answer waits for another change's commit to go with ([`Op::patient`]):
/// a kill loses at most this much of them, each polled again by the next run.
pub(super) const PATIENCE: Duration = Duration::from_secs(1);
/// The most changes in one transaction.
const MAX_OPS: usize = 4096;

#[derive(Default)]
pub(super) struct Queue {
    inbox: Mutex<Inbox>,
    /// What the writer thread sleeps on: set to the earliest time it must look again.
    alarm: Alarm,
}

#[derive(Default)]
struct Inbox {
    ops: Vec<Op>,
    /// Intents sent ahead of their time to commit ([`super::JournalWriter::intent_at`]): each
    /// joins `ops` when its time comes. Nothing else about their rows is sent before their
    /// commit is acknowledged, so that the changes sent after them may be committed first.
    held: Vec<Op>,
    /// Whether a change in `ops` is awaited: it is committed at once.
    awaited: bool,
    /// Whether a change in `ops` may not wait longer than [`COMMIT_EVERY`], and by when the
    /// patient ones must be committed.
    hurried: bool,
    patient_by: Option<Instant>,
    /// Until when the writer thread sleeps (its alarm's time), while it does.
    sleeping: Option<Instant>,
    /// Every handle is gone: what is left is committed, then the thread ends.
    closed: bool,
    /// The thread ended: what is sent now is dropped.
    ended: bool,
}

impl Queue {
    /// Queues `op`, and sets the writer thread's alarm earlier when it would not come to it in
    /// time by itself: for a change somebody waits for (an intent when its time comes), or
    /// when it sleeps longer than a change nobody waits for may wait. It wakes once a commit,
    /// not once a change, and an answer that comes a little before an intent's time goes with
    /// the intent.
    pub(super) fn send(&self, op: Op) {
        let mut inbox = lock(&self.inbox);
        if inbox.ended {
            return;
        }
        let now = Instant::now();
        let needed = match op.due() {
            Some(due) if due > now => {
                inbox.held.push(op);
                due
            }
            _ => {
                let awaited = op.awaited();
                inbox.awaited |= awaited;
                let patient = op.patient();
                inbox.hurried |= !patient;
                inbox.ops.push(op);
                if awaited || inbox.ops.len() >= MAX_OPS {
                    now
                } else if patient {
                    *inbox.patient_by.get_or_insert(now + PATIENCE)
                } else {
                    now + COMMIT_EVERY
                }
            }
        };
        inbox.wake_by(&self.alarm, needed);
    }

    /// Every handle is gone: the thread commits what is left and ends.
    pub(super) fn close(&self) {
        let mut inbox = lock(&self.inbox);
        inbox.closed = true;
        inbox.wake_by(&self.alarm, Instant::now());
    }

    /// The thread ended: what is sent from now on is dropped.
    pub(super) fn end(&self) {
        let mut inbox = lock(&self.inbox);
        inbox.ended = true;
        inbox.ops.clear();
        inbox.held.clear();
    }

    /// Waits for the next commit's changes (up to [`MAX_OPS`]), and says whether any handle
    /// is left. A change somebody waits for is committed at once, with what gathered; changes
    /// nobody waits for at most every [`COMMIT_EVERY`] (after the commit `committed`), since
    /// under a flow of answers one commit each would write a page of the journal for every
    /// row. With nothing to commit, the thread wakes when the requests counted since
    /// `counted_at` are due ([`USAGE_EVERY`]).
    pub(super) fn next(&self, committed: Option<Instant>, counted_at: Instant) -> (Vec<Op>, bool) {
        let mut inbox = lock(&self.inbox);
        loop {
            let now = Instant::now();
            let came: Vec<Op> = inbox
                .held
                .extract_if(.., |op| op.due().is_none_or(|due| due <= now))
                .collect();
            if !came.is_empty() {
                inbox.awaited = true;
                inbox.ops.extend(came);
            }
            let due = (!inbox.ops.is_empty()).then(|| match inbox.patient_by {
                Some(by) if !inbox.hurried => by,
                _ => committed.map_or(now, |at| at + COMMIT_EVERY),
            });
            let usage_due = counted_at + USAGE_EVERY;
            let ready = inbox.closed
                || inbox.awaited
                || inbox.ops.len() >= MAX_OPS
                || due.is_some_and(|due| due <= now)
                || usage_due <= now;
            if ready {
                return inbox.take();
            }
            let held = inbox.held.iter().filter_map(Op::due).min();
            let until = [held, due]
                .into_iter()
                .flatten()
                .fold(usage_due, Instant::min);
            inbox.sleeping = Some(until);
            self.alarm.set(until);
            drop(inbox);
            self.alarm.wait();
            inbox = lock(&self.inbox);
            inbox.sleeping = None;
        }
    }
}

impl Inbox {
    /// Makes the writer thread, if it sleeps, look again by `needed`.
    fn wake_by(&mut self, alarm: &Alarm, needed: Instant) {
        if self.sleeping.is_some_and(|until| until > needed) {
            self.sleeping = Some(needed);
            alarm.set(needed);
        }
    }

    /// The changes of the next commit. A flush or a wait for the commit (or the last handle
    /// gone) takes the intents held too, before it: everything sent before either is
    /// committed when it returns.
    fn take(&mut self) -> (Vec<Op>, bool) {
        if !self.held.is_empty() {
            let flush = self
                .ops
                .iter()
                .position(|op| matches!(op, Op::Flush { .. } | Op::Committed { .. }));
            if let Some(at) = flush.or(self.closed.then_some(self.ops.len())) {
                let held: Vec<Op> = self.held.drain(..).collect();
                self.ops.splice(at..at, held);
            }
        }
        let n = self.ops.len().min(MAX_OPS);
        let ops: Vec<Op> = self.ops.drain(..n).collect();
        self.awaited = self.ops.iter().any(Op::awaited);
        self.hurried = self.ops.iter().any(|op| !op.patient());
        if !self.ops.iter().any(Op::patient) {
            self.patient_by = None;
        }
        let open = !self.closed || !self.ops.is_empty() || !self.held.is_empty();
        (ops, open)
    }
}
