//! The batch pipeline: chunk the rows, upload each chunk, poll it, and settle every row of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::plan::Work;
use super::rows::reap;
use super::stats::Stats;
use super::{Ctx, still_processing};
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
            Some(Work::Submit { key, subject }) => {
                chunk.push((key, subject));
                if chunk.len() < check.chunk_size() {
                    continue;
                }
            }
            // Batch rows are polled by batch: the feed never sends them one by one.
            Some(Work::Poll { .. }) => continue,
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
    let Some(sending) = ctx.begin_paid(&keys, Some(batch_id)).await else {
        return;
    };
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

/// Polls an accepted batch until its results, the deadline or a stop. Whatever goes wrong,
/// the batch stays open: its rows are polled again by a later run, never uploaded again.
async fn poll_batch<C: BatchCheck>(
    ctx: &Ctx,
    check: &C,
    batch_id: i64,
    request_id: String,
    keys: Vec<RowKey>,
    scratch: &Path,
) {
    let answer = ctx
        .poll_until(
            check.schedule(),
            || async {
                match check.poll(&ctx.api, &request_id, scratch).await {
                    Ok(BatchStep::Running) => None,
                    other => Some(other),
                }
            },
            || {
                for k in &keys {
                    ctx.finish(*k, still_processing(), None);
                }
            },
        )
        .await;
    match answer {
        None | Some(Ok(BatchStep::Running)) => {}
        Some(Ok(BatchStep::Done(results))) => settle(ctx, batch_id, keys, results),
        Some(Ok(BatchStep::Failed(outcome))) => {
            for k in keys {
                ctx.finish(k, outcome.clone(), None);
            }
        }
        Some(Ok(BatchStep::Lost(why))) => ctx.hold(keys, Some(batch_id), &why, None),
        Some(Err(e)) => ctx.poll_failed(keys, e),
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
