//! Locks that outlive a panic elsewhere: the state they guard is counters and queues, still
//! worth reading after a task panicked while holding it, where stopping the whole run is not.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The guard of `m`, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
