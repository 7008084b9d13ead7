//! Dispatch: the quota gate, retries, the per-row and batch pipelines.

pub mod batches;
pub mod gate;
pub mod plan;
pub mod retry;
pub mod rows;
pub mod stats;
pub mod stop;

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::journal::JournalWriter;
use crate::outcome::{Outcome, RowKey, Status};
use crate::providers::{Api, CallError};
use stats::Stats;
use stop::Stop;

/// What every task of a run shares.
pub struct Ctx {
    pub api: Api,
    pub journal: JournalWriter,
    pub stats: Arc<Stats>,
    pub stop: Arc<Stop>,
    /// Paid calls between their committed intent and their answer. The intent is committed
    /// before the call queues at the quota gate (a commit between grant and send would blur
    /// the pacing), so this bound is what keeps the rows a kill can leave unconfirmed to at
    /// most the provider's concurrency.
    pub sending: Semaphore,
    fatal: Mutex<Option<String>>,
}

impl Ctx {
    pub fn new(
        api: Api,
        journal: JournalWriter,
        stats: Arc<Stats>,
        stop: Arc<Stop>,
        concurrency: usize,
    ) -> Ctx {
        Ctx {
            api,
            journal,
            stats,
            stop,
            sending: Semaphore::new(concurrency),
            fatal: Mutex::new(None),
        }
    }

    /// Stops sending: no new request leaves, waiting ones are refused, requests already on the
    /// wire finish and are recorded.
    pub fn halt(&self) {
        self.stop.set();
        self.api.gate().close();
    }

    /// Stops the run for a reason that makes going on pointless or harmful.
    pub fn fail(&self, message: String) {
        self.fatal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(message);
        self.halt();
    }

    /// Why the run failed, if it did.
    pub fn fatal(&self) -> Option<String> {
        self.fatal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records a row's outcome reached in this run.
    pub fn finish(&self, key: RowKey, outcome: Outcome, attempts: Option<u32>) {
        self.journal.done(key, outcome, attempts);
        Stats::add(&self.stats.done, 1);
    }

    /// Settles rows whose paid call (or upload) got no usable answer.
    pub fn submit_failed(&self, keys: Vec<RowKey>, batch: Option<i64>, error: CallError) {
        match error {
            CallError::Stopped => self.journal.revert(keys, batch),
            CallError::DayQuota => {
                self.journal.revert(keys.clone(), batch);
                for k in keys {
                    self.finish(k, daily_quota_pending(), None);
                }
            }
            CallError::GaveUp {
                reason,
                message,
                attempts,
                ..
            } => {
                // Answered every time, never accepted: nothing was billed; a later run tries again.
                if let Some(b) = batch {
                    self.journal.batch_closed(b, "failed");
                }
                let outcome = Outcome::new(Status::Error)
                    .with_reason(reason)
                    .with_message(message);
                for k in keys {
                    self.finish(k, outcome.clone(), Some(attempts));
                }
            }
            CallError::Unconfirmed { label, message, .. } => {
                tracing::warn!(
                    "{label}: {message}; {} row(s) held as unconfirmed (re-run with \
                     --resend-unconfirmed to send them again)",
                    keys.len()
                );
                Stats::add(&self.stats.unconfirmed, keys.len() as u64);
                self.journal.unconfirmed(keys, batch);
            }
            CallError::Fatal(message) => {
                self.journal.revert(keys, batch);
                self.fail(message);
            }
        }
    }

    /// Settles rows the provider accepted but whose result could not be fetched: they keep
    /// their request id, and a later run polls again.
    pub fn poll_failed(&self, keys: Vec<RowKey>, error: CallError) {
        let outcome = match error {
            CallError::Stopped => return,
            CallError::Fatal(message) => return self.fail(message),
            CallError::DayQuota => daily_quota_pending(),
            CallError::GaveUp {
                reason, message, ..
            } => Outcome::new(Status::Error)
                .with_reason(reason)
                .with_message(message),
            CallError::Unconfirmed { message, .. } => Outcome::new(Status::Error)
                .with_reason("transport_error")
                .with_message(message),
        };
        for k in keys {
            self.finish(k, outcome.clone(), None);
        }
    }
}

pub fn daily_quota_pending() -> Outcome {
    Outcome::new(Status::Pending)
        .with_reason("daily_quota_exhausted")
        .with_message("the provider's daily quota was used up; the next run continues")
}

pub fn still_processing() -> Outcome {
    Outcome::new(Status::Pending)
        .with_reason("still_processing")
        .with_message(
            "the provider had not finished by the polling deadline; the next run polls again",
        )
}
