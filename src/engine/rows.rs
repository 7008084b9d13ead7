//! The per-row pipeline: submit each row's paid request, then poll its result.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::plan::{Work, WorkKind};
use super::stats::Stats;
use super::{Ctx, daily_quota_pending, still_processing};
use crate::checks::{RowCheck, Step, Subject};
use crate::outcome::RowKey;

/// Runs every row the feed sends until the feed ends or the run stops. At most
/// `max_in_flight` rows are between submission and outcome at once.
pub async fn run<C: RowCheck>(
    ctx: Arc<Ctx>,
    check: Arc<C>,
    mut feed: mpsc::Receiver<Work>,
    max_in_flight: usize,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = JoinSet::new();
    loop {
        let work = tokio::select! {
            w = feed.recv() => w,
            () = ctx.stop.wait() => None,
        };
        let Some(work) = work else { break };
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = ctx.stop.wait() => break,
        };
        let (c, k) = (ctx.clone(), check.clone());
        tasks.spawn(async move {
            let _permit = permit;
            row(&c, &*k, work).await;
        });
        while let Some(done) = tasks.try_join_next() {
            reap(&ctx, done);
        }
    }
    // The feeder sees the channel close and stops reading.
    drop(feed);
    while let Some(done) = tasks.join_next().await {
        reap(&ctx, done);
    }
}

pub(super) fn reap(ctx: &Ctx, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        ctx.fail(format!("internal error in a worker: {e}"));
    }
}

async fn row<C: RowCheck>(ctx: &Ctx, check: &C, work: Work) {
    let request_id = match work.kind {
        WorkKind::Poll { request_id } => request_id,
        WorkKind::Submit => match submit(ctx, check, work.key, &work.subject).await {
            Some(id) => id,
            None => return,
        },
    };
    poll(ctx, check, work.key, request_id).await;
}

/// Sends the paid request. Returns the request id to poll, if there is one.
async fn submit<C: RowCheck>(
    ctx: &Ctx,
    check: &C,
    key: RowKey,
    subject: &Subject,
) -> Option<String> {
    if ctx.stop.is_set() {
        return None;
    }
    if ctx.api.gate().day_exhausted() {
        ctx.finish(key, daily_quota_pending(), None);
        return None;
    }
    let Ok(_sending) = ctx.sending.acquire().await else {
        return None;
    };
    if ctx.stop.is_set() {
        return None;
    }
    if let Err(e) = ctx.journal.intent(vec![key], None).await {
        ctx.fail(e.to_string());
        return None;
    }
    match check.submit(&ctx.api, subject).await {
        Ok((Step::Running(id), attempts)) => {
            ctx.journal.running(vec![key], None, id.clone(), attempts);
            Stats::add(&ctx.stats.submitted, 1);
            Some(id)
        }
        Ok((Step::Done(outcome), attempts)) => {
            Stats::add(&ctx.stats.submitted, 1);
            ctx.finish(key, outcome, Some(attempts));
            None
        }
        Err(e) => {
            ctx.submit_failed(vec![key], None, e);
            None
        }
    }
}

/// Polls on the check's schedule until an outcome, the deadline (pending), or a stop (the row
/// stays running and the next run polls it).
async fn poll<C: RowCheck>(ctx: &Ctx, check: &C, key: RowKey, request_id: String) {
    let schedule = check.schedule();
    let deadline = Instant::now() + schedule.deadline;
    for n in 0u32.. {
        let now = Instant::now();
        if now >= deadline {
            ctx.finish(key, still_processing(), None);
            return;
        }
        if !ctx.stop.sleep(schedule.delay(n).min(deadline - now)).await {
            return;
        }
        match check.poll(&ctx.api, &request_id).await {
            Ok(Step::Running(_)) => {}
            Ok(Step::Done(outcome)) => {
                ctx.finish(key, outcome, None);
                return;
            }
            Err(e) => {
                ctx.poll_failed(vec![key], e);
                return;
            }
        }
    }
}
