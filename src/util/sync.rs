//! Locks that outlive a panic elsewhere: the state they guard is counters and queues, still
//! worth reading after a task panicked while holding it, where stopping the whole run is not.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The guard of `m`, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Requests counted per minute: the gate adds one as each request leaves, and the journal's
/// writer and the account ledger's thread take them on their own schedules. Adding wakes no
/// thread, which at one wake-up per request would cost a paced run more than its requests.
#[derive(Debug, Default)]
pub struct MinuteCounts(Mutex<Vec<(i64, u64)>>);

impl MinuteCounts {
    pub fn add(&self, minute: i64) {
        let mut counts = lock(&self.0);
        match counts.last_mut() {
            Some((m, n)) if *m == minute => *n += 1,
            _ => counts.push((minute, 1)),
        }
    }

    /// Everything added since the last take, oldest minute first.
    pub fn take(&self) -> Vec<(i64, u64)> {
        std::mem::take(&mut *lock(&self.0))
    }
}
