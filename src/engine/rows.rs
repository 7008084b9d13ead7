//! The per-row pipeline: submit each row's paid request, then poll its result.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::plan::Work;
use super::{Ctx, still_processing};
use crate::checks::{RowCheck, Step, Subject};
use crate::outcome::RowKey;
use crate::outcome::misrouted;
use crate::stats::Stats;

/// Runs every row the feed sends until the feed ends or the run stops. At most
/// `max_in_flight` rows are between submission and outcome at once.
pub async fn run<C: RowCheck + ?Sized>(
    ctx: Arc<Ctx>,
    check: Arc<C>,
    feed: mpsc::Receiver<Work>,
    max_in_flight: usize,
) {
    each(ctx, feed, max_in_flight, move |ctx, work| {
        let check = check.clone();
        async move { row(&ctx, &*check, work).await }
    })
    .await;
}

/// Hands each row the feed sends to `handle`, at most `max_in_flight` at once, until the feed
/// ends or the run stops; then waits for the rows under way.
pub(super) async fn each<F, Fut>(
    ctx: Arc<Ctx>,
    mut feed: mpsc::Receiver<Work>,
    max_in_flight: usize,
    handle: F,
) where
    F: Fn(Arc<Ctx>, Work) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
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
        let task = handle(ctx.clone(), work);
        tasks.spawn(async move {
            let _permit = permit;
            task.await;
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

async fn row<C: RowCheck + ?Sized>(ctx: &Ctx, check: &C, work: Work) {
    let (key, request_id) = match work {
        Work::Poll { key, request_id } => (key, request_id),
        Work::Otp { key, .. } => return ctx.finish(key, misrouted(), None),
        Work::Submit { key, subject } => match submit(ctx, check, key, &subject).await {
            Some(id) => (key, id),
            None => return,
        },
    };
    poll(ctx, check, key, request_id).await;
}

/// Sends the paid request. Returns the request id to poll, if there is one.
async fn submit<C: RowCheck + ?Sized>(
    ctx: &Ctx,
    check: &C,
    key: RowKey,
    subject: &Subject,
) -> Option<String> {
    let (_sending, intent) = ctx.begin_paid(&[key], 1, None, None).await?;
    match check.submit(&ctx.api, subject, &intent).await {
        Ok((step, attempts)) => {
            Stats::add(&ctx.stats.submitted, 1);
            match step {
                Step::Running(id) => {
                    ctx.journal.running(vec![key], None, id.clone(), attempts);
                    Some(id)
                }
                Step::Done(outcome) => {
                    ctx.finish(key, outcome, Some(attempts));
                    None
                }
                Step::Lost(why) => {
                    ctx.hold(vec![key], None, &why, Some(attempts));
                    None
                }
            }
        }
        Err(e) => {
            ctx.submit_failed(vec![key], None, e);
            None
        }
    }
}

/// Polls until an outcome, the deadline (pending), or a stop (the row stays running and the
/// next run polls it).
async fn poll<C: RowCheck + ?Sized>(ctx: &Ctx, check: &C, key: RowKey, request_id: String) {
    let answer = ctx
        .poll_until(
            check.schedule(),
            || async {
                match check.poll(&ctx.api, &request_id).await {
                    Ok(Step::Running(_)) => None,
                    other => Some(other),
                }
            },
            || ctx.finish(key, still_processing(), None),
        )
        .await;
    match answer {
        None | Some(Ok(Step::Running(_))) => {}
        Some(Ok(Step::Done(outcome))) => ctx.polled(key, outcome),
        Some(Ok(Step::Lost(why))) => ctx.hold(vec![key], None, &why, None),
        Some(Err(e)) => ctx.poll_failed(vec![key], e),
    }
}
