//! The grant loop's clock: it sleeps until a slot, to the microsecond, on the runtime.
//!
//! tokio's own timers round a deadline up to the next millisecond, which would blur the
//! pacing by as much: a zero-burst limiter refuses a request that arrives a fraction of a
//! millisecond early. A timerfd on `CLOCK_MONOTONIC` (the clock of the account's schedule)
//! wakes the runtime's own poll at the slot's nanosecond, so that the grant loop can run on the
//! runtime, beside the requests it releases, rather than on a thread that wakes for every slot
//! and then wakes the runtime. Where there is no timerfd, tokio's timer serves.

use std::time::Duration;

#[cfg(target_os = "linux")]
use std::os::fd::OwnedFd;

#[cfg(target_os = "linux")]
use tokio::io::unix::AsyncFd;

use super::mono_now;

/// A timerfd registered with the runtime, or tokio's own timer where there is none.
pub(super) enum SlotTimer {
    #[cfg(target_os = "linux")]
    Fd(AsyncFd<OwnedFd>),
    Tokio,
}

impl SlotTimer {
    /// A timer on the runtime this is called from.
    pub(super) fn new() -> SlotTimer {
        #[cfg(target_os = "linux")]
        {
            use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
            use tokio::io::Interest;
            let flags = TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC;
            let fd = timerfd_create(TimerfdClockId::Monotonic, flags)
                .map_err(std::io::Error::from)
                .and_then(|fd| {
                    // SAFETY: the descriptor was just made and is owned here; the `AsyncFd`
                    // owns it from now on, so that it stays open and the same while registered.
                    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                        .map_err(std::io::Error::from)
                });
            match fd {
                Ok(fd) => return SlotTimer::Fd(fd),
                Err(e) => tracing::debug!("no timerfd ({e}): slots are kept to the millisecond"),
            }
        }
        SlotTimer::Tokio
    }

    /// Returns at `at`, a time of `CLOCK_MONOTONIC`, or at once if it has passed.
    pub(super) async fn sleep_until(&self, at: Duration) {
        match self {
            #[cfg(target_os = "linux")]
            SlotTimer::Fd(fd) => {
                if Self::arm(fd, at).is_err() {
                    return Self::tokio(at).await;
                }
                loop {
                    let Ok(mut ready) = fd.readable().await else {
                        return Self::tokio(at).await;
                    };
                    let mut expirations = [0u8; 8];
                    match ready.try_io(|fd| {
                        rustix::io::read(fd.get_ref(), &mut expirations[..]).map_err(Into::into)
                    }) {
                        Ok(Ok(_)) => return,
                        Ok(Err(_)) => return Self::tokio(at).await,
                        // Readiness left from an earlier deadline, which arming again reset.
                        Err(_would_block) => {}
                    }
                }
            }
            SlotTimer::Tokio => Self::tokio(at).await,
        }
    }

    #[cfg(target_os = "linux")]
    fn arm(fd: &AsyncFd<OwnedFd>, at: Duration) -> rustix::io::Result<()> {
        use crate::util::alarm::timespec;
        use rustix::time::{Itimerspec, TimerfdTimerFlags, timerfd_settime};
        let spec = Itimerspec {
            it_interval: timespec(Duration::ZERO),
            // A zero time would disarm the timer rather than fire it.
            it_value: timespec(at.max(Duration::from_nanos(1))),
        };
        timerfd_settime(fd.get_ref(), TimerfdTimerFlags::ABSTIME, &spec).map(drop)
    }

    async fn tokio(at: Duration) {
        tokio::time::sleep(at.saturating_sub(mono_now())).await;
    }
}
