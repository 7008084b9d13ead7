//! What a provider said about its limits, in the terms the gate acts on. The client reads it
//! from whichever headers the provider sends (`http::ratelimit`); the gate only sees this.

use std::time::Duration;

/// The longest wait a header is believed for. Beyond it, the provider is saying "not today":
/// the gate treats the quota as spent rather than holding every worker for hours.
pub const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);

/// What the headers of one answer say; every field is what the provider sent, or nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hints {
    /// How long to wait before the next request (`Retry-After`), at most [`LONGEST_WAIT`]
    /// unless [`Hints::beyond_reach`] is set.
    pub retry_after: Option<Duration>,
    /// Requests left in the most constrained window.
    pub remaining: Option<u64>,
    /// When that window frees up.
    pub reset: Option<Duration>,
    /// A window's quota and length, when the provider publishes its policy: enough to pace
    /// at exactly its rate.
    pub policy: Option<Policy>,
    /// A wait longer than [`LONGEST_WAIT`] was asked for: the quota is spent for the day.
    pub beyond_reach: bool,
}

/// One published window: `quota` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub quota: u64,
    pub window: Duration,
}

impl Policy {
    /// The spacing between requests that keeps to this window.
    pub fn period(&self) -> Option<Duration> {
        let quota = u32::try_from(self.quota).ok().filter(|q| *q > 0)?;
        Some(self.window / quota)
    }
}
