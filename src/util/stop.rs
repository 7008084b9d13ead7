//! The run's stop signal: set by Ctrl-C, SIGTERM, a fatal error or a tripped quota.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Once set, no new paid call starts; calls already on the wire finish so that their request
/// ids are recorded.
#[derive(Debug, Default)]
pub struct Stop {
    flag: AtomicBool,
    notify: Notify,
}

impl Stop {
    pub fn set(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Resolves once the signal is set.
    pub async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_set() {
            return;
        }
        notified.await;
    }

    /// Sleeps for `d` unless the signal is set first; returns whether the full time passed.
    pub async fn sleep(&self, d: std::time::Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => !self.is_set(),
            () = self.wait() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn sleep_is_cut_short() {
        let stop = Arc::new(Stop::default());
        let s = stop.clone();
        let t = tokio::spawn(async move { s.sleep(Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.set();
        assert!(
            !tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .unwrap()
                .unwrap()
        );
        assert!(!stop.sleep(Duration::from_secs(30)).await, "already set");
    }
}
