//! Counters shared by the engine, the progress display and the summary.

use std::sync::atomic::{AtomicU64, Ordering};

/// Run-wide counters. Relaxed atomics: they feed displays, not decisions.
#[derive(Debug, Default)]
pub struct Stats {
    /// Rows read so far by the planning pass.
    pub rows_read: AtomicU64,
    /// Rows given an earlier job's answer from the results store in this run: each saved its
    /// paid call.
    pub reused: AtomicU64,
    /// The run's cap on paid calls, when it has one.
    pub max_paid_calls: std::sync::Mutex<Option<u64>>,
    /// Paid calls counted against the cap: rows, for a batch check.
    pub paid: AtomicU64,
    /// Rows not sent because the cap was reached.
    pub capped: AtomicU64,
    /// Rows that need a call in this run.
    pub work_total: AtomicU64,
    /// Rows whose paid call (or batch upload) was sent in this run.
    pub submitted: AtomicU64,
    /// Rows that reached an outcome in this run (final or not).
    pub done: AtomicU64,
    /// HTTP requests sent to the provider.
    pub calls: AtomicU64,
    /// Of which answered 429.
    pub rate_limited: AtomicU64,
    /// Requests sent again after a retryable failure.
    pub retries: AtomicU64,
    /// Paid requests whose slot passed while their intent committed: they took the next one.
    pub slots_missed: AtomicU64,
    /// Retries not made because the retry budget was spent.
    pub retries_denied: AtomicU64,
    /// Rows whose paid call may have been billed without an answer.
    pub unconfirmed: AtomicU64,
    /// Rows of earlier runs' unconfirmed calls sent again (--resend-unconfirmed): each may be
    /// billed twice, so the summary counts them.
    pub resent: AtomicU64,
    /// Uploads sent again under the same name after a lost answer: the provider takes a name
    /// once, so none of them can be billed twice.
    pub safe_resends: AtomicU64,
    /// Rows of uploads whose answer was lost, reconciled by asking the provider for the
    /// upload's name instead of being held.
    pub reconciled: AtomicU64,
    /// OTPs a two-step check had sent in this run.
    pub otps_sent: AtomicU64,
    /// Rows of a two-step check whose OTP is on its way and not yet in the input.
    pub awaiting_otp: AtomicU64,
    /// 1 when the circuit breaker gave up on the provider.
    pub provider_down: AtomicU64,
    /// 1 when the provider's daily quota ran out.
    pub day_spent: AtomicU64,
    /// What the provider admitted, when it was well below the configured rate or none was
    /// configured: one line of the summary.
    pub pace_note: std::sync::Mutex<Option<String>>,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
