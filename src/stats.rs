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
    /// The requests of each second and their round trips, for the journal to keep.
    pub timeline: Timeline,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What one request was, for the timeline: the phases of a run are read from when each kind
/// was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// A paid request: a submission, an upload, an OTP.
    Paid,
    /// A free request to the provider's API: a poll, a lookup, a token.
    Poll,
    /// A result file fetched from where the provider put it.
    Download,
}

/// One second's requests, counted by the second they were sent in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Second {
    pub paid: u64,
    pub polls: u64,
    pub downloads: u64,
    /// Answered with anything but a 429: what the provider's quota counted.
    pub accepted: u64,
    pub rate_limited: u64,
    /// Sent again after a failure (a 429, a 5xx, a lost answer).
    pub retries: u64,
}

impl Second {
    /// Every request sent in the second.
    pub fn sent(&self) -> u64 {
        self.paid + self.polls + self.downloads
    }

    pub fn add(&mut self, other: &Second) {
        self.paid += other.paid;
        self.polls += other.polls;
        self.downloads += other.downloads;
        self.accepted += other.accepted;
        self.rate_limited += other.rate_limited;
        self.retries += other.retries;
    }
}

/// What the timeline gathered since it was last taken.
#[derive(Debug, Default)]
pub struct Taken {
    /// By Unix second, ascending.
    pub seconds: Vec<(i64, Second)>,
    /// Answers' round trips by endpoint label and [`latency_bucket`].
    pub latency: Vec<(&'static str, u32, u64)>,
}

impl Taken {
    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty() && self.latency.is_empty()
    }
}

/// The run's requests per second and their round trips per endpoint, as compact counters: what
/// the run report draws and `status` reads, kept by the journal as a few rows a second rather
/// than a line per request. Adding wakes no thread; the journal's writer takes the counts with
/// its commits.
#[derive(Debug, Default)]
pub struct Timeline(std::sync::Mutex<Gathered>);

#[derive(Debug, Default)]
struct Gathered {
    seconds: std::collections::BTreeMap<i64, Second>,
    latency: std::collections::HashMap<(&'static str, u32), u64>,
}

/// What became of one request.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub label: &'static str,
    pub kind: Sent,
    /// Unix milliseconds when it left.
    pub sent_ms: i64,
    pub retry: bool,
    /// The HTTP status of its answer; `None` when none came.
    pub status: Option<u16>,
    pub round_trip: std::time::Duration,
}

impl Timeline {
    pub fn record(&self, e: &Exchange) {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let second = g.seconds.entry(e.sent_ms.div_euclid(1000)).or_default();
        match e.kind {
            Sent::Paid => second.paid += 1,
            Sent::Poll => second.polls += 1,
            Sent::Download => second.downloads += 1,
        }
        second.retries += u64::from(e.retry);
        match e.status {
            Some(429) => second.rate_limited += 1,
            Some(_) => second.accepted += 1,
            None => {}
        }
        if e.status.is_some() {
            *g.latency
                .entry((e.label, latency_bucket(e.round_trip)))
                .or_default() += 1;
        }
    }

    /// Everything recorded since the last take.
    pub fn take(&self) -> Taken {
        let g = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        Taken {
            seconds: g.seconds.into_iter().collect(),
            latency: g
                .latency
                .into_iter()
                .map(|((label, bucket), n)| (label, bucket, n))
                .collect(),
        }
    }
}

/// Latency buckets per doubling of the round trip: eight keep a percentile within 9% of the
/// true one, in about 180 buckets from a millisecond to a day.
const BUCKETS_PER_DOUBLING: f64 = 8.0;

/// The bucket of a round trip: 0 below a millisecond, then eight per doubling.
pub fn latency_bucket(d: std::time::Duration) -> u32 {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        0
    } else {
        1 + (ms.log2() * BUCKETS_PER_DOUBLING) as u32
    }
}

/// The round trip a bucket stands for, in milliseconds: the middle of its range (in the
/// logarithm), so that a percentile read from it is off by at most half a bucket.
pub fn latency_bucket_ms(bucket: u32) -> f64 {
    if bucket == 0 {
        0.5
    } else {
        ((f64::from(bucket - 1) + 0.5) / BUCKETS_PER_DOUBLING).exp2()
    }
}

/// The `q` quantile (0 to 1) of round trips counted by bucket, in milliseconds; `None` for
/// no counts.
pub fn latency_quantile(counts: &[(u32, u64)], q: f64) -> Option<f64> {
    let mut sorted: Vec<(u32, u64)> = counts.to_vec();
    sorted.sort_unstable();
    let total: u64 = sorted.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    sorted.iter().find_map(|(bucket, n)| {
        seen += n;
        (seen >= rank).then(|| latency_bucket_ms(*bucket))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_stands_for_round_trips_within_nine_percent() {
        for ms in [1.0, 1.5, 3.0, 47.0, 300.0, 301.0, 2_999.0, 86_400_000.0] {
            let d = Duration::from_secs_f64(ms / 1000.0);
            let back = latency_bucket_ms(latency_bucket(d));
            assert!(
                (back / ms - 1.0).abs() < 0.09,
                "{ms} ms read back as {back}"
            );
        }
        assert_eq!(latency_bucket(Duration::from_micros(300)), 0);
    }

    #[test]
    fn quantiles_come_from_the_counts() {
        let d = |ms| latency_bucket(Duration::from_millis(ms));
        let counts = [(d(100), 90), (d(1_000), 9), (d(10_000), 1)];
        let q = |q| latency_quantile(&counts, q).unwrap();
        assert!((q(0.5) / 100.0 - 1.0).abs() < 0.09);
        assert!((q(0.9) / 100.0 - 1.0).abs() < 0.09);
        assert!((q(0.99) / 1_000.0 - 1.0).abs() < 0.09);
        assert!((q(1.0) / 10_000.0 - 1.0).abs() < 0.09);
        assert_eq!(latency_quantile(&[], 0.5), None);
    }

    #[test]
    fn the_timeline_counts_each_request_in_the_second_it_left() {
        let t = Timeline::default();
        let at = |sent_ms, kind, status, retry| Exchange {
            label: "udyam submit",
            kind,
            sent_ms,
            retry,
            status,
            round_trip: Duration::from_millis(300),
        };
        t.record(&at(1_000_999, Sent::Paid, Some(200), false));
        t.record(&at(1_000_500, Sent::Paid, Some(429), false));
        t.record(&at(1_001_000, Sent::Paid, Some(200), true));
        t.record(&at(1_001_001, Sent::Poll, None, false));
        t.record(&at(1_001_002, Sent::Download, Some(503), false));
        let taken = t.take();
        assert_eq!(
            taken.seconds,
            vec![
                (
                    1_000,
                    Second {
                        paid: 2,
                        accepted: 1,
                        rate_limited: 1,
                        ..Second::default()
                    }
                ),
                (
                    1_001,
                    Second {
                        paid: 1,
                        polls: 1,
                        downloads: 1,
                        accepted: 2,
                        retries: 1,
                        ..Second::default()
                    }
                ),
            ]
        );
        let answered: u64 = taken.latency.iter().map(|(_, _, n)| n).sum();
        assert_eq!(answered, 4, "a request without an answer has no round trip");
        assert!(t.take().is_empty());
    }
}
