//! Per-key rate limits over several windows, each checked separately like the provider's.
//!
//! Pure bookkeeping over caller-supplied times, so the window arithmetic is tested exactly
//! without waiting for clocks. Every decision also reports each window's state, because the
//! header faults (`--retry-after`, `--rate-headers`) tell clients what a real gateway would.

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};

use super::{LimitWindow, SandboxConfig};

/// A bucket paces the short windows only: a day stays counted in its UTC day.
const DAY_MS: u64 = 86_400_000;

/// One configured window: at most `limit` requests per `length_ms`.
#[derive(Debug, Clone, Copy)]
struct Window {
    name: &'static str,
    length_ms: u64,
    limit: u64,
    /// For a bucket: requests let through at once beyond the rate.
    burst: u64,
}

impl Window {
    /// Milli-requests a bucket drains in `ms` milliseconds, as nginx computes it.
    fn drained(&self, ms: u64) -> u64 {
        self.limit.saturating_mul(1000).saturating_mul(ms) / self.length_ms
    }
}

/// One window's state for one key at one moment, as rate-limit headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WindowState {
    /// The policy name rate-limit headers use: `per-second`, `per-minute`, `per-day`.
    pub(super) name: &'static str,
    pub(super) length_ms: u64,
    pub(super) limit: u64,
    pub(super) remaining: u64,
    /// When the window next makes room: the end of a fixed window; for a sliding one, when its
    /// oldest arrival leaves (the moment itself when it holds none).
    pub(super) frees_at_ms: u64,
}

/// The limiter's answer to one request: whether it passes, and every window's state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decision {
    pub(super) admitted: bool,
    /// One per configured window, in the order second, minute, day.
    pub(super) windows: Vec<WindowState>,
}

impl Decision {
    /// For a refusal, when the key is admitted again if it waits: once every full window has
    /// made room. Refusals count nothing, so no other window can fill up meanwhile.
    pub(super) fn retry_at_ms(&self) -> Option<u64> {
        if self.admitted {
            return None;
        }
        self.windows
            .iter()
            .filter(|window| window.remaining == 0)
            .map(|window| window.frees_at_ms)
            .max()
    }

    /// The window closest to refusing: the fewest remaining, then the one that frees last.
    pub(super) fn tightest(&self) -> Option<&WindowState> {
        self.windows
            .iter()
            .min_by_key(|window| (window.remaining, Reverse(window.frees_at_ms)))
    }
}

/// What one key has used of one window.
#[derive(Debug)]
enum Usage {
    /// Requests counted in the aligned window numbered `index`.
    Fixed { index: u64, count: u64 },
    /// Arrival times of the admitted requests still inside the window.
    Sliding(VecDeque<u64>),
    /// nginx's `limit_req` state: the excess over the rate in thousandths of a request, at the
    /// last admitted request (none yet: the first is admitted).
    Bucket { excess: u64, last_ms: Option<u64> },
}

impl Usage {
    /// The window's state at `now_ms`; forgets sliding arrivals that have left the window.
    fn state(&mut self, window: Window, now_ms: u64) -> WindowState {
        let (used, frees_at_ms) = match self {
            Usage::Fixed { index, count } => {
                let current = now_ms / window.length_ms;
                let used = if *index == current { *count } else { 0 };
                (
                    used,
                    current.saturating_add(1).saturating_mul(window.length_ms),
                )
            }
            Usage::Sliding(arrivals) => {
                while arrivals
                    .front()
                    .is_some_and(|&t| now_ms.saturating_sub(t) >= window.length_ms)
                {
                    arrivals.pop_front();
                }
                let frees_at_ms = arrivals
                    .front()
                    .map_or(now_ms, |&oldest| oldest.saturating_add(window.length_ms));
                (arrivals.len() as u64, frees_at_ms)
            }
            Usage::Bucket { excess, last_ms } => {
                let (remaining, frees_at_ms) = match *last_ms {
                    None => (window.burst + 1, now_ms),
                    Some(last) => {
                        // nginx: a request's excess is the last one's, drained since, plus one
                        // request; it is admitted while that is within the burst.
                        let allowed = window.burst * 1000;
                        let drained = window.drained(now_ms.saturating_sub(last));
                        let remaining = (allowed + drained).saturating_sub(*excess) / 1000;
                        let frees_at_ms = if remaining > 0 {
                            now_ms
                        } else {
                            let needed = (*excess + 1000).saturating_sub(allowed);
                            let ms = (needed * window.length_ms)
                                .div_ceil(window.limit.saturating_mul(1000));
                            last + ms
                        };
                        (remaining, frees_at_ms)
                    }
                };
                return WindowState {
                    name: window.name,
                    length_ms: window.length_ms,
                    limit: window.limit,
                    remaining,
                    frees_at_ms,
                };
            }
        };
        WindowState {
            name: window.name,
            length_ms: window.length_ms,
            limit: window.limit,
            remaining: window.limit.saturating_sub(used),
            frees_at_ms,
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
            Usage::Bucket { excess, last_ms } => {
                *excess = match *last_ms {
                    None => 0,
                    Some(last) => {
                        (*excess + 1000).saturating_sub(window.drained(now_ms.saturating_sub(last)))
                    }
                };
                *last_ms = Some(now_ms);
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    mode: LimitWindow,
    windows: Vec<Window>,
    keys: HashMap<String, Vec<Usage>>,
}

impl RateLimiter {
    pub(crate) fn new(config: &SandboxConfig) -> RateLimiter {
        let windows = [
            ("per-second", 1000, config.per_second),
            ("per-minute", 60_000, config.per_minute),
            ("per-day", 86_400_000, config.per_day),
        ]
        .into_iter()
        .filter(|&(_, _, limit)| limit > 0)
        .map(|(name, length_ms, limit)| Window {
            name,
            length_ms,
            limit,
            burst: match config.limit_window {
                LimitWindow::Bucket => config.limit_burst,
                _ => 0,
            },
        })
        .collect();
        RateLimiter {
            mode: config.limit_window,
            windows,
            keys: HashMap::new(),
        }
    }

    /// Admits and counts a request of `key` arriving at `now_ms`, or refuses it without counting
    /// it: a refused request uses up nothing, as on the provider.
    pub(crate) fn admit(&mut self, key: &str, now_ms: u64) -> Decision {
        if self.windows.is_empty() {
            return Decision {
                admitted: true,
                windows: Vec::new(),
            };
        }
        let mode = self.mode;
        let usages = self.keys.entry(key.to_owned()).or_insert_with(|| {
            self.windows
                .iter()
                .map(|w| match mode {
                    LimitWindow::Sliding => Usage::Sliding(VecDeque::new()),
                    LimitWindow::Bucket | LimitWindow::Gcra if w.length_ms < DAY_MS => {
                        Usage::Bucket {
                            excess: 0,
                            last_ms: None,
                        }
                    }
                    _ => Usage::Fixed { index: 0, count: 0 },
                })
                .collect()
        });
        let states = |usages: &mut Vec<Usage>| -> Vec<WindowState> {
            usages
                .iter_mut()
                .zip(&self.windows)
                .map(|(usage, &window)| usage.state(window, now_ms))
                .collect()
        };
        let before = states(usages);
        if before.iter().any(|window| window.remaining == 0) {
            return Decision {
                admitted: false,
                windows: before,
            };
        }
        for (usage, &window) in usages.iter_mut().zip(&self.windows) {
            usage.record(window, now_ms);
        }
        Decision {
            admitted: true,
            windows: states(usages),
        }
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
        times
            .iter()
            .map(|&t| limiter.admit(key, t).admitted)
            .collect()
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

    fn bucket(mode: LimitWindow, per_second: u64, burst: u64) -> RateLimiter {
        RateLimiter::new(&SandboxConfig {
            per_second,
            per_minute: 0,
            per_day: 0,
            limit_window: mode,
            limit_burst: burst,
            ..SandboxConfig::default()
        })
    }

    /// nginx's `limit_req rate=20r/s` on a millisecond clock: any two admitted requests 50 ms
    /// apart or more; a refusal counts nothing.
    #[test]
    fn gcra_refuses_any_request_closer_than_the_period_to_the_last_admitted() {
        let mut l = bucket(LimitWindow::Gcra, 20, 99);
        assert_eq!(
            admitted(&mut l, "k", &[0, 50, 99, 100, 149, 150, 151, 250]),
            [true, true, false, true, false, true, false, true]
        );
        let refused = l.admit("k", 260);
        assert!(!refused.admitted);
        assert_eq!(refused.retry_at_ms(), Some(300));
        assert!(l.admit("k", 300).admitted);
    }

    /// `burst=2 nodelay`: three at once, then one per period as the bucket drains.
    #[test]
    fn a_bucket_lets_its_burst_through_then_paces() {
        let mut l = bucket(LimitWindow::Bucket, 20, 2);
        assert_eq!(
            admitted(&mut l, "k", &[0, 0, 0, 0, 49, 50, 100, 100]),
            [true, true, true, false, false, true, true, false]
        );
        // Idle for a second: the bucket is empty again, the burst available.
        assert_eq!(
            admitted(&mut l, "k", &[1200, 1200, 1200, 1200]),
            [true, true, true, false]
        );
        let state = l.admit("k", 1300).windows[0];
        assert_eq!(
            state.remaining, 1,
            "two periods drained, one taken: {state:?}"
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

    /// The instant a refused key may come back, and the refusal just before it.
    fn retry_at(limiter: &mut RateLimiter, key: &str, now_ms: u64) -> u64 {
        let decision = limiter.admit(key, now_ms);
        assert!(!decision.admitted, "refused at {now_ms}");
        decision
            .retry_at_ms()
            .expect("a refusal has a retry instant")
    }

    #[test]
    fn a_refusal_reports_when_the_key_is_admitted_again() {
        // Fixed: the end of the full window.
        let mut l = limiter(LimitWindow::Fixed, 3, 0, 0);
        admitted(&mut l, "k", &[5000, 5100, 5999]);
        assert_eq!(retry_at(&mut l, "k", 5999), 6000);
        assert!(l.admit("k", 6000).admitted);

        // Sliding: when the oldest arrival leaves, not the end of any aligned window.
        let mut l = limiter(LimitWindow::Sliding, 3, 0, 0);
        admitted(&mut l, "k", &[1997, 1998, 1999]);
        assert_eq!(retry_at(&mut l, "k", 2000), 2997);
        assert!(!l.admit("k", 2996).admitted);
        assert!(l.admit("k", 2997).admitted);

        // Only full windows count: the minute is full, the second is not.
        let mut l = limiter(LimitWindow::Sliding, 2, 3, 0);
        admitted(&mut l, "k", &[0, 1, 1000]);
        assert_eq!(retry_at(&mut l, "k", 1001), 60_000);
        assert!(!l.admit("k", 59_999).admitted);
        assert!(l.admit("k", 60_000).admitted);
    }

    #[test]
    fn a_refusal_waits_for_the_latest_of_several_full_windows() {
        let mut l = limiter(LimitWindow::Fixed, 2, 2, 0);
        admitted(&mut l, "k", &[10, 20]);
        // Both the second (frees at 1000) and the minute (frees at 60 000) are full.
        assert_eq!(retry_at(&mut l, "k", 30), 60_000);
        assert!(!l.admit("k", 1000).admitted);
        assert!(l.admit("k", 60_000).admitted);

        let mut l = limiter(LimitWindow::Sliding, 1, 2, 0);
        admitted(&mut l, "k", &[0, 1000]);
        assert_eq!(retry_at(&mut l, "k", 1500), 60_000);
        // Once the second frees at 2000 the minute still holds two arrivals.
        assert!(!l.admit("k", 2000).admitted);
        assert!(l.admit("k", 60_000).admitted);

        let mut l = limiter(LimitWindow::Fixed, 0, 0, 1);
        admitted(&mut l, "k", &[86_400_000 + 5]);
        assert_eq!(retry_at(&mut l, "k", 86_400_000 + 6), 2 * 86_400_000);
    }

    #[test]
    fn decisions_report_every_window_after_the_request() {
        let mut l = limiter(LimitWindow::Fixed, 3, 10, 0);
        let decision = l.admit("k", 5100);
        assert!(decision.admitted);
        assert_eq!(decision.retry_at_ms(), None);
        let second = WindowState {
            name: "per-second",
            length_ms: 1000,
            limit: 3,
            remaining: 2,
            frees_at_ms: 6000,
        };
        let minute = WindowState {
            name: "per-minute",
            length_ms: 60_000,
            limit: 10,
            remaining: 9,
            frees_at_ms: 60_000,
        };
        assert_eq!(decision.windows, [second, minute]);
        assert_eq!(decision.tightest(), Some(&second));
        let decision = l.admit("k", 5200);
        assert_eq!(
            decision
                .windows
                .iter()
                .map(|w| w.remaining)
                .collect::<Vec<_>>(),
            [1, 8]
        );
        // A new aligned second starts full again; the minute keeps counting.
        let decision = l.admit("k", 6000);
        assert_eq!(
            decision
                .windows
                .iter()
                .map(|w| (w.remaining, w.frees_at_ms))
                .collect::<Vec<_>>(),
            [(2, 7000), (7, 60_000)]
        );

        let mut l = limiter(LimitWindow::Sliding, 2, 2, 0);
        let decision = l.admit("k", 100);
        // Equal remaining: the window that frees last is the tighter one.
        assert_eq!(decision.tightest().map(|w| w.name), Some("per-minute"));
        assert_eq!(
            decision
                .windows
                .iter()
                .map(|w| w.frees_at_ms)
                .collect::<Vec<_>>(),
            [1100, 60_100]
        );
        // A refusal reports the full windows at zero without counting itself.
        l.admit("k", 200);
        let refused = l.admit("k", 300);
        assert!(!refused.admitted);
        assert_eq!(
            refused
                .windows
                .iter()
                .map(|w| w.remaining)
                .collect::<Vec<_>>(),
            [0, 0]
        );
        // No windows: nothing to report, everything admitted.
        let decision = limiter(LimitWindow::Fixed, 0, 0, 0).admit("k", 0);
        assert!(decision.admitted && decision.windows.is_empty());
        assert_eq!(decision.tightest(), None);
    }
}
