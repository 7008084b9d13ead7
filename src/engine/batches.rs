//! The batch pipeline: chunk the rows, upload each chunk, poll it, and settle every row of it.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::plan::Work;
use super::rows::reap;
use super::{Ctx, still_processing};
use crate::checks::{BatchCheck, BatchStep, Match, Subject, Uploaded};
use crate::http::CallError;
use crate::journal::{BatchState, OpenBatch, ident_hash};
use crate::outcome::{Outcome, Reason, RowKey, Status};
use crate::stats::Stats;

/// Where batches go: the private directory for files in transit, and the job's token that
/// makes the names of its uploads unique.
pub struct Place {
    pub scratch: PathBuf,
    pub token: String,
}

/// Batches whose results are held in memory at once, from their download to the writer's
/// commit of their rows' outcomes. A batch's results are about 5 MB a 10,000 rows; with every
/// batch in flight free to hold them, the peak was however many happened to come together,
/// which a longer run made more (10M rows: 1.2-1.5 x the RSS of 1M).
const HELD: usize = 4;

/// Polls the batches earlier runs uploaded, and uploads the rows the feed sends in chunks.
/// At most `max_batches` batches are in flight at once, [`HELD`] of them with their results.
pub async fn run<C: BatchCheck + ?Sized>(
    ctx: Arc<Ctx>,
    check: Arc<C>,
    mut feed: mpsc::Receiver<Work>,
    open: Vec<OpenBatch>,
    mut next_batch_id: i64,
    place: Place,
    max_batches: usize,
) {
    let slots = Arc::new(Semaphore::new(max_batches));
    let held = Arc::new(Semaphore::new(HELD));
    let place = Arc::new(place);
    let mut tasks = JoinSet::new();
    for b in open {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (c, k, p, h) = (ctx.clone(), check.clone(), place.clone(), held.clone());
        if !b.confirmed {
            Stats::add(&ctx.stats.reconciled, b.rows.len() as u64);
        }
        tasks.spawn(async move {
            let _permit = permit;
            poll_batch(&c, &*k, b, &p.scratch, &h).await;
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
                // Each row takes its paid call from the cap as it joins: the last batch under
                // the cap is as full as the cap allows.
                if !ctx.take_paid(1) {
                    ctx.capped(&[key]);
                    continue;
                }
                chunk.push((key, subject));
                if chunk.len() < check.chunk_size() {
                    continue;
                }
            }
            // Batch rows are polled by batch, and batch checks make no OTP requests: the feed
            // sends neither.
            Some(Work::Poll { .. } | Work::Otp { .. }) => continue,
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
        let (c, k, p, h) = (ctx.clone(), check.clone(), place.clone(), held.clone());
        tasks.spawn(async move {
            let _permit = permit;
            batch(&c, &*k, batch_id, rows, &p, &h).await;
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

async fn batch<C: BatchCheck + ?Sized>(
    ctx: &Ctx,
    check: &C,
    batch_id: i64,
    rows: Vec<(RowKey, Subject)>,
    place: &Place,
    held: &Arc<Semaphore>,
) {
    let keys: Vec<RowKey> = rows.iter().map(|(k, _)| *k).collect();
    let name = check
        .names_uploads()
        .then(|| format!("bv-{}-{batch_id}", place.token));
    let Some((sending, intent)) = ctx.begin_paid(&keys, 0, Some(batch_id), name.clone()).await
    else {
        return;
    };
    let label = name.as_deref().unwrap_or_default();
    let mut uploaded = check.upload(&ctx.api, &rows, label, &intent).await;
    if name.is_some() && matches!(uploaded, Err(CallError::Unconfirmed { .. })) {
        // The provider takes a name once and answers 409 to it again: sending it again
        // cannot be billed twice, and most often gets the answer that was lost.
        Stats::add(&ctx.stats.safe_resends, 1);
        uploaded = check.upload(&ctx.api, &rows, label, &intent).await;
    }
    drop(sending);
    let (request_id, confirmed) = match (uploaded, name) {
        (Ok((Uploaded::Accepted(id), attempts)), _) => {
            ctx.journal
                .running(keys.clone(), Some(batch_id), id.clone(), attempts);
            (id, true)
        }
        // A named upload that got no usable answer (lost, or 5xx past the retry policy: a
        // gateway can time out after the provider took it) is asked for by its name, so that
        // rows are never sent again under another name while the provider may hold them.
        (
            Err(CallError::Unconfirmed { attempts, .. } | CallError::GaveUp { attempts, .. }),
            Some(name),
        ) => {
            ctx.journal
                .reconciling(keys.clone(), batch_id, name.clone(), attempts);
            Stats::add(&ctx.stats.reconciled, keys.len() as u64);
            (name, false)
        }
        (Ok((Uploaded::Refused(outcome), attempts)), _) => {
            Stats::add(&ctx.stats.submitted, keys.len() as u64);
            ctx.journal.batch_closed(batch_id, BatchState::Refused);
            for k in keys {
                ctx.finish(k, outcome.clone(), Some(attempts));
            }
            return;
        }
        (Err(e), _) => return ctx.submit_failed(keys, Some(batch_id), e),
    };
    Stats::add(&ctx.stats.submitted, keys.len() as u64);
    let open = OpenBatch {
        batch_id,
        request_id,
        rows: rows
            .into_iter()
            .map(|(k, s)| (k, ident_hash(&ctx.ident_scope, &s.ident)))
            .collect(),
        confirmed,
    };
    poll_batch(ctx, check, open, &place.scratch, held).await;
}

/// Polls an accepted batch until its results, the deadline or a stop. Whatever goes wrong,
/// the batch stays open: its rows are polled again by a later run, never uploaded again. Each
/// poll holds one of the `held` permits, and the one that brings the results keeps it until
/// the writer has their outcomes.
async fn poll_batch<C: BatchCheck + ?Sized>(
    ctx: &Ctx,
    check: &C,
    batch: OpenBatch,
    scratch: &Path,
    held: &Arc<Semaphore>,
) {
    let OpenBatch {
        batch_id,
        request_id,
        rows,
        confirmed,
    } = batch;
    let keys: Vec<RowKey> = rows.iter().map(|(k, _)| *k).collect();
    let answer = ctx
        .poll_until(
            check.schedule(),
            || async {
                let permit = held.clone().acquire_owned().await.expect("never closed");
                match check.poll(&ctx.api, &request_id, scratch).await {
                    Ok(BatchStep::Running) => None,
                    other => Some((other, permit)),
                }
            },
            || {
                for k in &keys {
                    ctx.finish(*k, still_processing(), None);
                }
            },
        )
        .await;
    let (answer, _held) = answer.unzip();
    match answer {
        None | Some(Ok(BatchStep::Running)) => {}
        Some(Ok(BatchStep::Done(results))) => settle(ctx, batch_id, &rows, results),
        Some(Ok(BatchStep::Failed(outcome))) => {
            for k in keys {
                ctx.finish(k, outcome.clone(), None);
            }
        }
        // Uploaded under our name, never confirmed, and the provider has no such name: it
        // took nothing, so the rows are sent again by the next run.
        Some(Ok(BatchStep::Lost(_))) if !confirmed => ctx.not_sent(
            keys,
            Some(batch_id),
            &Outcome::new(Status::Error)
                .with_reason(Reason::NOT_ACCEPTED)
                .with_message(
                    "the upload's answer was lost and the provider has no batch under its \
                     name: nothing was taken; the next run sends the row again",
                ),
        ),
        Some(Ok(BatchStep::Lost(why))) => ctx.hold(keys, Some(batch_id), &why, None),
        Some(Err(e)) => ctx.poll_failed(keys, e),
    }
    // The batch keeps its slot until the writer has committed its rows' outcomes: batches
    // answered faster than the writer wrote them piled their outcomes up in its queue, which
    // grew with the job (10M rows: 216 MB by the end of sending, 180 MB with the wait). Not a
    // flush, which would write the rows of the batches still in flight. A write that failed
    // is the writer's to report.
    let _ = ctx.journal.committed().await;
}

/// Gives every row of the batch its result, by key or by identifier; a row the result left out
/// is an error that a later run sends again, in a new batch. A result that names a row the
/// batch never sent, or one row twice, is not the batch's: nothing of it is merged, its rows
/// are errors, and the batch stays open for the next run to fetch again (never to upload).
fn settle(ctx: &Ctx, batch_id: i64, rows: &[(RowKey, [u8; 16])], results: Vec<(Match, Outcome)>) {
    match match_results(&ctx.ident_scope, rows, results) {
        Ok(mut by_key) => {
            for &(k, _) in rows {
                let outcome = by_key.remove(&k).unwrap_or_else(|| {
                    Outcome::new(Status::Error)
                        .with_reason(Reason::MISSING_FROM_RESULT)
                        .with_message(
                            "the provider's result file has no row for this one; the next run \
                             sends it again",
                        )
                });
                ctx.finish(k, outcome, None);
            }
            ctx.journal.batch_closed(batch_id, BatchState::Done);
        }
        Err(rejected) => {
            tracing::warn!("the result of batch {batch_id} was rejected: {rejected}");
            let outcome = Outcome::new(Status::Error)
                .with_reason(Reason::RESULT_REJECTED)
                .with_message(format!(
                    "the provider's result was not merged: {rejected}; the next run fetches it \
                     again (the batch is never uploaded again)"
                ));
            for &(k, _) in rows {
                ctx.finish(k, outcome.clone(), None);
            }
        }
    }
}

/// Why a batch's result is not the batch's.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("{0} of its rows name no row of the batch")]
    Unknown(usize),
    #[error("it holds {0} row(s) of the batch more than once")]
    Duplicate(usize),
}

/// Pairs each result with its row of the batch, or rejects the whole result.
pub fn match_results(
    check: &str,
    rows: &[(RowKey, [u8; 16])],
    results: Vec<(Match, Outcome)>,
) -> Result<HashMap<RowKey, Outcome>, Rejected> {
    let by_ident: HashMap<[u8; 16], RowKey> = rows.iter().map(|(k, h)| (*h, *k)).collect();
    let in_batch: HashSet<RowKey> = rows.iter().map(|(k, _)| *k).collect();
    let mut by_key: HashMap<RowKey, Outcome> = HashMap::with_capacity(results.len());
    let (mut unknown, mut repeated) = (0usize, 0usize);
    for (m, o) in results {
        let key = match m {
            Match::Row(k) => Some(k).filter(|k| in_batch.contains(k)),
            Match::Ident(ident) => by_ident.get(&ident_hash(check, &ident)).copied(),
        };
        match key {
            Some(k) => {
                if by_key.insert(k, o).is_some() {
                    repeated += 1;
                }
            }
            None => unknown += 1,
        }
    }
    if unknown > 0 {
        return Err(Rejected::Unknown(unknown));
    }
    if repeated > 0 {
        return Err(Rejected::Duplicate(repeated));
    }
    Ok(by_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<(RowKey, [u8; 16])> {
        vec![
            (RowKey(1), ident_hash("c", "a")),
            (RowKey(2), ident_hash("c", "b")),
        ]
    }

    fn ok() -> Outcome {
        Outcome::new(Status::Verified)
    }

    #[test]
    fn results_are_matched_by_key_or_identifier() {
        let got = match_results(
            "c",
            &rows(),
            vec![
                (Match::Row(RowKey(1)), ok()),
                (Match::Ident("b".into()), ok()),
            ],
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        let partial = match_results("c", &rows(), vec![(Match::Row(RowKey(2)), ok())]).unwrap();
        assert_eq!(
            partial.len(),
            1,
            "a row left out is the caller's missing_from_result"
        );
    }

    #[test]
    fn unknown_or_repeated_rows_reject_the_whole_result() {
        assert_eq!(
            match_results(
                "c",
                &rows(),
                vec![(Match::Row(RowKey(1)), ok()), (Match::Row(RowKey(9)), ok())]
            ),
            Err(Rejected::Unknown(1))
        );
        assert_eq!(
            match_results("c", &rows(), vec![(Match::Ident("zzz".into()), ok())]),
            Err(Rejected::Unknown(1))
        );
        assert_eq!(
            match_results(
                "c",
                &rows(),
                vec![
                    (Match::Row(RowKey(1)), ok()),
                    (Match::Ident("a".into()), ok())
                ]
            ),
            Err(Rejected::Duplicate(1))
        );
    }
}
