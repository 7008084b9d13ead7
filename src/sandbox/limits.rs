//! Per-key rate limits over several windows, each checked separately like the provider's.
//!
//! Pure bookkeeping over caller-supplied times, so the window arithmetic is tested exactly
//! without waiting for clocks.

use std::collections::{HashMap, VecDeque};

use super::{LimitWindow, SandboxConfig};

/// One configured window: at most `limit` requests per `length_ms`.
#[derive(Debug, Clone, Copy)]
struct Window {
    length_ms: u64,
    limit: u64,
}

/// What one key has used of one window.
#[derive(Debug)]
enum Usage {
    /// Requests counted in the aligned window numbered `index`.
    Fixed { index: u64, count: u64 },
    /// Arrival times of the admitted requests still inside the window.
    Sliding(VecDeque<u64>),
}

impl Usage {
    fn is_full(&mut self, window: Window, now_ms: u64) -> bool {
        match self {
            Usage::Fixed { index, count } => {
                *index == now_ms / window.length_ms && *count >= window.limit
            }
            Usage::Sliding(arrivals) => {
                while arrivals
                    .front()
                    .is_some_and(|&t| now_ms.saturating_sub(t) >= window.length_ms)
                {
                    arrivals.pop_front();
                }
                arrivals.len() as u64 >= window.limit
            }
        }
    }

    fn record(&mut self, window: Window, now_ms: u64) {
        match self {
            Usage::Fixed { index, count } => {
                let current = now_ms / window.length_ms;
                if *index != current {
                    *index = current;
                    *count = 0;
                }
                *count += 1;
            }
            Usage::Sliding(arrivals) => arrivals.push_back(now_ms),
        }
    }
}

#[derive(Debug)]
pub(super) struct RateLimiter {
    mode: LimitWindow,
    windows: Vec<Window>,
    keys: HashMap<String, Vec<Usage>>,
}

impl RateLimiter {
    pub(super) fn new(config: &SandboxConfig) -> RateLimiter {
        let windows = [
            (1000, config.per_second),
            (60_000, config.per_minute),
            (86_400_000, config.per_day),
        ]
        .into_iter()
        .filter(|&(_, limit)| limit > 0)
        .map(|(length_ms, limit)| Window { length_ms, limit })
        .collect();
        RateLimiter {
            mode: config.limit_window,
            windows,
            keys: HashMap::new(),
        }
    }

    /// Admits and counts a request of `key` arriving at `now_ms`, or refuses it without counting
    /// it: a refused request uses up nothing, as on the provider.
    pub(super) fn admit(&mut self, key: &str, now_ms: u64) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        let mode = self.mode;
        let usages = self.keys.entry(key.to_owned()).or_insert_with(|| {
            self.windows
                .iter()
                .map(|_| match mode {
                    LimitWindow::Fixed => Usage::Fixed { index: 0, count: 0 },
                    LimitWindow::Sliding => Usage::Sliding(VecDeque::new()),
                })
                .collect()
        });
        let mut full = false;
        for (usage, &window) in usages.iter_mut().zip(&self.windows) {
            full |= usage.is_full(window, now_ms);
        }
        if full {
            return false;
        }
        for (usage, &window) in usages.iter_mut().zip(&self.windows) {
            usage.record(window, now_ms);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(mode: LimitWindow, per_second: u64, per_minute: u64, per_day: u64) -> RateLimiter {
        RateLimiter::new(&SandboxConfig {
            per_second,
            per_minute,
            per_day,
            limit_window: mode,
            ..SandboxConfig::default()
        })
    }

    fn admitted(limiter: &mut RateLimiter, key: &str, times: &[u64]) -> Vec<bool> {
        times.iter().map(|&t| limiter.admit(key, t)).collect()
    }

    #[test]
    fn fixed_window_refuses_exactly_at_the_limit_and_resets_at_the_boundary() {
        let mut l = limiter(LimitWindow::Fixed, 3, 0, 0);
        // Three in second 5, the fourth refused; second 6 starts afresh even 1 ms later.
        assert_eq!(
            admitted(
                &mut l,
                "k",
                &[5000, 5100, 5999, 5999, 6000, 6001, 6002, 6003]
            ),
            [true, true, true, false, true, true, true, false]
        );
    }

    #[test]
    fn fixed_window_allows_a_burst_across_the_boundary() {
        // Aligned windows: 3 at the end of one second and 3 at the start of the next all pass.
        let mut l = limiter(LimitWindow::Fixed, 3, 0, 0);
        assert_eq!(
            admitted(&mut l, "k", &[1997, 1998, 1999, 2000, 2001, 2002]),
            [true; 6]
        );
    }

    #[test]
    fn sliding_window_refuses_any_n_plus_one_within_the_length() {
        let mut l = limiter(LimitWindow::Sliding, 3, 0, 0);
        assert_eq!(
            admitted(&mut l, "k", &[1997, 1998, 1999, 2000, 2996, 2997, 2998]),
            [true, true, true, false, false, true, true]
        );
    }

    #[test]
    fn refused_requests_do_not_count() {
        let mut l = limiter(LimitWindow::Sliding, 2, 0, 0);
        // Refusals at 500..900 would otherwise keep the window full past 1000.
        assert_eq!(
            admitted(&mut l, "k", &[0, 1, 500, 900, 1000, 1001, 1002]),
            [true, true, false, false, true, true, false]
        );
        let mut l = limiter(LimitWindow::Fixed, 0, 2, 0);
        assert_eq!(
            admitted(&mut l, "k", &[0, 1, 2, 3, 60_000, 60_001, 60_002]),
            [true, true, false, false, true, true, false]
        );
    }

    #[test]
    fn every_window_is_checked_separately() {
        let mut l = limiter(LimitWindow::Fixed, 2, 3, 0);
        // Per second allows 2 in each second, but the minute caps the total at 3.
        assert_eq!(
            admitted(&mut l, "k", &[0, 1, 1000, 1001, 2000, 60_000]),
            [true, true, true, false, false, true]
        );
        let mut l = limiter(LimitWindow::Sliding, 0, 0, 1);
        assert_eq!(
            admitted(&mut l, "k", &[0, 86_399_999, 86_400_000]),
            [true, false, true]
        );
    }

    #[test]
    fn keys_are_limited_independently_and_zero_means_unlimited() {
        let mut l = limiter(LimitWindow::Fixed, 1, 0, 0);
        assert_eq!(admitted(&mut l, "a", &[0, 1]), [true, false]);
        assert_eq!(admitted(&mut l, "b", &[2]), [true]);
        let mut l = limiter(LimitWindow::Sliding, 0, 0, 0);
        assert!(admitted(&mut l, "k", &[0; 1000]).into_iter().all(|ok| ok));
    }
}
