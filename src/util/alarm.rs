//! An alarm a thread sleeps on, which other threads may set earlier without waking it.
//!
//! A condition variable's sleeper can only be told to look again: a change that must be
//! handled by a given time, sent while it sleeps until later, wakes it once to shorten its
//! sleep and once more at that time. A timerfd is set by whoever needs it, and wakes its
//! sleeper once, at the earliest time asked for. Where there is none, a condition variable
//! serves, at the cost of those wake-ups.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::sync::lock;

/// What the journal's writer sleeps on: a held intent must be committed by its time, and a
/// change sent meanwhile must not wake the writer twice.
pub struct Alarm(Inner);

enum Inner {
    #[cfg(target_os = "linux")]
    Fd(std::os::fd::OwnedFd),
    Cond {
        at: Mutex<Option<Instant>>,
        rung: Condvar,
    },
}

impl Alarm {
    /// An alarm that is not set.
    pub fn new() -> Alarm {
        #[cfg(target_os = "linux")]
        {
            use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
            match timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC) {
                Ok(fd) => return Alarm(Inner::Fd(fd)),
                Err(e) => tracing::debug!("no timerfd ({e}): a condition variable serves"),
            }
        }
        Alarm::cond()
    }

    fn cond() -> Alarm {
        Alarm(Inner::Cond {
            at: Mutex::new(None),
            rung: Condvar::new(),
        })
    }

    /// Rings at `at` (at once if it has passed) instead of when it was set for. Callers keep
    /// to themselves which of their times is the earliest.
    pub fn set(&self, at: Instant) {
        match &self.0 {
            #[cfg(target_os = "linux")]
            Inner::Fd(fd) => {
                use rustix::time::{Itimerspec, TimerfdTimerFlags, timerfd_settime};
                let spec = Itimerspec {
                    it_interval: timespec(Duration::ZERO),
                    // A zero time would disarm the timer rather than ring it.
                    it_value: timespec(
                        at.saturating_duration_since(Instant::now())
                            .max(Duration::from_nanos(1)),
                    ),
                };
                if let Err(e) = timerfd_settime(fd, TimerfdTimerFlags::empty(), &spec) {
                    // Not for a valid descriptor and time; if it ever were, the sleeper still
                    // wakes at the time it set itself.
                    tracing::debug!("timerfd_settime: {e}");
                }
            }
            Inner::Cond { at: set, rung } => {
                *lock(set) = Some(at);
                rung.notify_one();
            }
        }
    }

    /// Sleeps until the alarm rings; one that is not set rings when it is set and its time
    /// comes.
    pub fn wait(&self) {
        match &self.0 {
            #[cfg(target_os = "linux")]
            Inner::Fd(fd) => {
                let mut expirations = [0u8; 8];
                // Blocks until the time set, however often it changes meanwhile; an error
                // (a signal) only ends this sleep early, and the sleeper looks again.
                let _ = rustix::io::read(fd, &mut expirations[..]);
            }
            Inner::Cond { at, rung } => {
                let mut set = lock(at);
                loop {
                    let now = Instant::now();
                    set = match *set {
                        Some(t) if t <= now => {
                            *set = None;
                            return;
                        }
                        Some(t) => rung
                            .wait_timeout(set, t - now)
                            .map_or_else(|e| e.into_inner().0, |(set, _)| set),
                        None => rung.wait(set).unwrap_or_else(PoisonError::into_inner),
                    };
                }
            }
        }
    }
}

impl Default for Alarm {
    fn default() -> Alarm {
        Alarm::new()
    }
}

/// A duration as the kernel's timers take it.
#[cfg(target_os = "linux")]
pub fn timespec(d: Duration) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A sleeper set for later wakes at an earlier time set meanwhile by another thread, never
    /// before it; a time that has passed rings at once.
    fn rings_at_the_earliest_time_set(alarm: Alarm) {
        let alarm = Arc::new(alarm);
        alarm.set(Instant::now() + Duration::from_secs(60));
        let sleeper = {
            let alarm = alarm.clone();
            std::thread::spawn(move || {
                alarm.wait();
                Instant::now()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let at = Instant::now() + Duration::from_millis(100);
        alarm.set(at);
        let rang = sleeper.join().unwrap();
        assert!(rang >= at, "{:?} early", at - rang);
        assert!(
            rang < at + Duration::from_secs(10),
            "at the earlier time, not the first: {:?} late",
            rang - at
        );
        alarm.set(Instant::now());
        let started = Instant::now();
        alarm.wait();
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn an_alarm_rings_at_the_earliest_time_set() {
        let alarm = Alarm::new();
        #[cfg(target_os = "linux")]
        assert!(matches!(alarm.0, Inner::Fd(_)), "a timerfd on Linux");
        rings_at_the_earliest_time_set(alarm);
    }

    #[test]
    fn without_a_timerfd_a_condition_variable_rings_the_same() {
        rings_at_the_earliest_time_set(Alarm::cond());
    }
}
