//! The batch pipeline: chunk the rows, upload each chunk, poll it, and settle every row of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::plan::{Work, WorkKind};
use super::rows::reap;
use super::stats::Stats;
use super::{Ctx, daily_quota_pending, still_processing};
use crate::checks::{BatchCheck, BatchStep, Subject, Uploaded};
use crate::journal::OpenBatch;
use crate::outcome::{Outcome, RowKey, Status};

/// Polls the batches earlier runs uploaded, and uploads the rows the feed sends in chunks.
/// At most `max_batches` batches are in flight at once.
pub async fn run<C: BatchCheck>(
    ctx: Arc<Ctx>,
    check: Arc<C>,
    mut feed: mpsc::Receiver<Work>,
    open: Vec<OpenBatch>,
    mut next_batch_id: i64,
    scratch: PathBuf,
    max_batches: usize,
) {
    let slots = Arc::new(Semaphore::new(max_batches));
    let scratch = Arc::new(scratch);
    let mut tasks = JoinSet::new();
    for b in open {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (c, k, s) = (ctx.clone(), check.clone(), scratch.clone());
        tasks.spawn(async move {
            let _permit = permit;
            poll_batch(&c, &*k, b.batch_id, b.request_id, b.rows, &s).await;
        });
    }
    let mut chunk: Vec<(RowKey, Subject)> = Vec::new();
    let mut fed_all = false;
    while !fed_all {
        let work = tokio::select! {
            w = feed.recv() => w,
            () = ctx.stop.wait() => break,
        };
        match work {
            Some(w) => {
                debug_assert_eq!(w.kind, WorkKind::Submit, "batch rows are polled by batch");
                chunk.push((w.key, w.subject));
                if chunk.len() < check.chunk_size() {
                    continue;
                }
            }
            None if chunk.is_empty() => break,
            None => fed_all = true,
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            () = ctx.stop.wait() => break,
        };
        let rows = std::mem::take(&mut chunk);
        let batch_id = next_batch_id;
        next_batch_id += 1;
        let (c, k, s) = (ctx.clone(), check.clone(), scratch.clone());
        tasks.spawn(async move {
            let _permit = permit;
            batch(&c, &*k, batch_id, rows, &s).await;
        });
        while let Some(done) = tasks.try_join_next() {
            reap(&ctx, done);
        }
    }
    drop(feed);
    while let Some(done) = tasks.join_next().await {
        reap(&ctx, done);
    }
}

async fn batch<C: BatchCheck>(
    ctx: &Ctx,
    check: &C,
    batch_id: i64,
    rows: Vec<(RowKey, Subject)>,
    scratch: &Path,
) {
    let keys: Vec<RowKey> = rows.iter().map(|(k, _)| *k).collect();
    if ctx.stop.is_set() {
        return;
    }
    if ctx.api.gate().day_exhausted() {
        for k in keys {
            ctx.finish(k, daily_quota_pending(), None);
        }
        return;
    }
    let Ok(sending) = ctx.sending.acquire().await else {
        return;
    };
    if ctx.stop.is_set() {
        return;
    }
    if let Err(e) = ctx.journal.intent(keys.clone(), Some(batch_id)).await {
        ctx.fail(e.to_string());
        return;
    }
    let uploaded = check.upload(&ctx.api, &rows).await;
    drop(sending);
    match uploaded {
        Ok((Uploaded::Accepted(id), attempts)) => {
            drop(rows);
            ctx.journal
                .running(keys.clone(), Some(batch_id), id.clone(), attempts);
            Stats::add(&ctx.stats.submitted, keys.len() as u64);
            poll_batch(ctx, check, batch_id, id, keys, scratch).await;
        }
        Ok((Uploaded::Refused(outcome), attempts)) => {
            Stats::add(&ctx.stats.submitted, keys.len() as u64);
            ctx.journal.batch_closed(batch_id, "refused");
            for k in keys {
                ctx.finish(k, outcome.clone(), Some(attempts));
            }
        }
        Err(e) => ctx.submit_failed(keys, Some(batch_id), e),
    }
}

async fn poll_batch<C: BatchCheck>(
    ctx: &Ctx,
    check: &C,
    batch_id: i64,
    request_id: String,
    keys: Vec<RowKey>,
    scratch: &Path,
) {
    let schedule = check.schedule();
    let deadline = Instant::now() + schedule.deadline;
    for n in 0u32.. {
        let now = Instant::now();
        if now >= deadline {
            for k in keys {
                ctx.finish(k, still_processing(), None);
            }
            return;
        }
        if !ctx.stop.sleep(schedule.delay(n).min(deadline - now)).await {
            return;
        }
        match check.poll(&ctx.api, &request_id, scratch).await {
            Ok(BatchStep::Running) => {}
            Ok(BatchStep::Done(results)) => return settle(ctx, batch_id, keys, results),
            Ok(BatchStep::Failed(outcome)) => {
                ctx.journal.batch_closed(batch_id, "failed");
                for k in keys {
                    ctx.finish(k, outcome.clone(), None);
                }
                return;
            }
            Err(e) => return ctx.poll_failed(keys, e),
        }
    }
}

/// Gives every row of the batch its result, by key; a row the result file left out is an
/// error that a later run sends again, in a new batch.
fn settle(ctx: &Ctx, batch_id: i64, keys: Vec<RowKey>, results: Vec<(RowKey, Outcome)>) {
    let mut by_key: HashMap<RowKey, Outcome> = HashMap::with_capacity(results.len());
    for (k, o) in results {
        by_key.entry(k).or_insert(o);
    }
    for k in keys {
        let outcome = by_key.remove(&k).unwrap_or_else(|| {
            Outcome::new(Status::Error)
                .with_reason("missing_from_result")
                .with_message("the provider's result file has no row for this one; the next run sends it again")
        });
        ctx.finish(k, outcome, None);
    }
    if !by_key.is_empty() {
        tracing::warn!(
            "{} row(s) of a batch result file match no row of that batch; ignored",
            by_key.len()
        );
    }
    ctx.journal.batch_closed(batch_id, "done");
}
