//! How long to wait before trying again, and whether to.

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

use crate::util::sync::lock;

/// Exponential backoff with full jitter: spreading retries uniformly over the whole interval
/// keeps a crowd of workers that failed together from retrying together.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The ceiling of the wait before retry number `retry` (0 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A wait drawn uniformly from zero to [`ceiling`](Self::ceiling).
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        rand::rng().random_range(Duration::ZERO..=ceiling)
    }
}

/// Retries at most a share of calls, as Finagle's and linkerd's retry budgets do: each first
/// attempt deposits `ratio` of a retry, each retry withdraws one. A small reserve lets a
/// quiet run retry its first failures; a sick provider soon finds the account empty, and
/// its calls fail fast instead of multiplying its load by the attempt count.
#[derive(Debug)]
pub struct Budget {
    ratio: f64,
    balance: Mutex<f64>,
}

/// Retries available before any call was made, and the most that can be saved up.
const BUDGET_RESERVE: f64 = 10.0;
const BUDGET_CAP: f64 = 100.0;

impl Budget {
    pub fn new(ratio: f64) -> Budget {
        Budget {
            ratio,
            balance: Mutex::new(BUDGET_RESERVE),
        }
    }

    /// A first attempt was made.
    pub fn deposit(&self) {
        let mut b = lock(&self.balance);
        *b = (*b + self.ratio).min(BUDGET_CAP);
    }

    /// Whether a retry may be made; takes it from the budget if so.
    pub fn withdraw(&self) -> bool {
        let mut b = lock(&self.balance);
        if *b >= 1.0 {
            *b -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_retries_to_a_share_of_calls() {
        let budget = Budget::new(0.2);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            // Every call fails and would retry four times.
            for _ in 0..4 {
                if budget.withdraw() {
                    retries += 1;
                }
            }
        }
        assert!((200..=210).contains(&retries), "{retries}");
        let quiet = Budget::new(0.2);
        assert!(
            (0..10).all(|_| quiet.withdraw()),
            "a reserve for the first failures"
        );
        assert!(!quiet.withdraw());
    }

    #[test]
    fn grows_then_caps_and_stays_within_ceiling() {
        let b = Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(500));
        assert_eq!(b.ceiling(3), Duration::from_secs(4));
        assert_eq!(b.ceiling(10), Duration::from_secs(30));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
        let draws: Vec<_> = (0..200).map(|_| b.delay(2)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(2)));
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(distinct.len() > 100, "jittered, not fixed");
    }
}
