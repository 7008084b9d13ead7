//! The day's window: requests per minute over the trailing 24 hours.

use super::*;

/// Requests per minute over the trailing 24 hours.
pub(super) struct DayWindow {
    pub(super) limit: u64,
    pub(super) minutes: VecDeque<(i64, u64)>,
    pub(super) used: u64,
}

impl DayWindow {
    /// Counts `n` requests made at `minute`, keeping the minutes in order.
    pub(super) fn add(&mut self, minute: i64, n: u64) {
        self.used += n;
        let at = self.minutes.partition_point(|(m, _)| *m <= minute);
        match at.checked_sub(1).map(|i| &mut self.minutes[i]) {
            Some((m, count)) if *m == minute => *count += n,
            _ => self.minutes.insert(at, (minute, n)),
        }
    }

    /// Takes back `n` requests counted at `minute` that were not made after all.
    pub(super) fn remove(&mut self, minute: i64, n: u64) {
        if let Some((_, count)) = self.minutes.iter_mut().find(|(m, _)| *m == minute) {
            let n = n.min(*count);
            *count -= n;
            self.used -= n;
        }
    }

    /// Whether a request may be made at `minute`, forgetting minutes older than a day.
    pub(super) fn room(&mut self, minute: i64) -> bool {
        while let Some(&(m, n)) = self.minutes.front() {
            if m > minute - DAY_MINUTES {
                break;
            }
            self.used -= n;
            self.minutes.pop_front();
        }
        self.used < self.limit
    }
}
