//! The two passes over the input that come before any call, and the feed that walks it again
//! while calls are made. Both read the input through the same reader, so they agree on keys.

use tokio::sync::mpsc;

use crate::checks::Subject;
use crate::input::validate::Invalid;
use crate::input::{ColumnMap, InputError, InputFile};
use crate::journal::{
    Journal, JournalError, JournalReader, OtpRequest, RowPlan, RowState, ident_hash,
};
use crate::outcome::{Outcome, RowKey, Status};
use crate::stats::Stats;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(
        "cannot start the thread that reads the input ({0}): the machine is short of memory or threads; try again when it is less busy"
    )]
    Thread(std::io::Error),
}

/// Validates a row's values into what is sent.
pub type SubjectFn<'a> = &'a (dyn Fn(&[&str]) -> Result<Subject, Invalid> + Sync);

/// The first pass: every row is validated, checked for an earlier duplicate, and recorded in
/// the journal. Returns the number of rows it planned to send, when planning began on an empty
/// journal (see `Planner::finish`): nothing else can be waiting then.
///
/// The identifiers are read first, in a pass of their own that writes nothing, so that each
/// row is recorded once with what it is, a duplicate included: marking duplicates afterwards
/// wrote nearly every page of rows a second time (a 10M-row job: 0.86 GB).
pub fn plan(
    journal: &mut Journal,
    scope: &str,
    inputs: &[InputFile],
    maps: &[ColumnMap],
    subject: SubjectFn,
    stats: &Stats,
) -> Result<Option<u64>, PassError> {
    // Rows per transaction: planning writes its pages in place, each commit syncing the file.
    const BATCH: usize = 100_000;
    let mut planner = journal.planner()?;
    let learning = std::time::Instant::now();
    let mut learnt = 0u64;
    // Both passes read and validate the rows on a thread of their own while this one sorts or
    // records them: alone, each left the other core idle (a 10M-row job planned at 1.1M rows/s,
    // and read its identifiers in 3.3-4.5 s). The identifiers are hashed here, beside the sort,
    // and the rows to record on the reading thread, since recording is most of planning.
    let read_idents = |key, values: &[&str]| subject(values).ok().map(|s| (key, s.ident));
    read_ahead("plan-learn", inputs, maps, read_idents, |chunk| {
        for (key, ident) in chunk {
            planner.learn(key, ident_hash(scope, &ident))?;
            learnt += 1;
        }
        Ok(())
    })?;
    tracing::info!(
        "read the identifiers of {learnt} rows in {:.2} s",
        learning.elapsed().as_secs_f64()
    );
    let read_plans = |key, values: &[&str]| {
        let plan = match subject(values) {
            Ok(s) => RowPlan::Subject(ident_hash(scope, &s.ident)),
            Err(invalid) => RowPlan::Invalid(invalid_outcome(invalid)),
        };
        Some((key, plan))
    };
    let (mut total, mut pending) = (0u64, Vec::with_capacity(BATCH));
    let mut pace = PlanPace::new();
    read_ahead("plan-read", inputs, maps, read_plans, |chunk| {
        for row in chunk {
            pending.push(row);
            total += 1;
            if pending.len() == BATCH {
                planner.rows(&pending)?;
                Stats::add(&stats.rows_read, pending.len() as u64);
                pending.clear();
                pace.planned(total);
            }
        }
        Ok(())
    })?;
    planner.rows(&pending)?;
    Stats::add(&stats.rows_read, pending.len() as u64);
    Ok(planner.finish(total)?)
}

/// Rows read ahead of the planner: a few chunks, so that memory stays flat.
const READ_AHEAD: usize = 4;

/// Hands `each` what `read` makes of every row of `inputs` (nothing, for `None`), a chunk at
/// a time, read on a thread of its own (`name`) a few chunks ahead; stops at the first error,
/// either side's.
fn read_ahead<T: Send>(
    name: &str,
    inputs: &[InputFile],
    maps: &[ColumnMap],
    read: impl Fn(RowKey, &[&str]) -> Option<T> + Send,
    mut each: impl FnMut(Vec<T>) -> Result<(), PassError>,
) -> Result<(), PassError> {
    std::thread::scope(|threads| {
        let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD);
        std::thread::Builder::new()
            .name(name.into())
            .spawn_scoped(threads, move || read_chunks(inputs, maps, read, &tx))
            .map_err(PassError::Thread)?;
        for chunk in rx {
            each(chunk?)?;
        }
        Ok(())
    })
}

/// Reads every row of `inputs` into what `read` makes of it, a chunk at a time into `tx`, and
/// stops at the first error, which it sends, or once nobody takes the chunks.
fn read_chunks<T>(
    inputs: &[InputFile],
    maps: &[ColumnMap],
    read: impl Fn(RowKey, &[&str]) -> Option<T>,
    tx: &std::sync::mpsc::SyncSender<Result<Vec<T>, InputError>>,
) {
    const CHUNK: usize = 8_192;
    let mut chunk = Vec::with_capacity(CHUNK);
    let result = (|| {
        for (file, map) in inputs.iter().zip(maps) {
            let mut records = file.records()?;
            while let Some(key) = records.advance()? {
                let Some(item) = read(key, &map.values(records.record())) else {
                    continue;
                };
                chunk.push(item);
                if chunk.len() == CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    if tx.send(Ok(full)).is_err() {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    })();
    let _ = tx.send(result.map(|()| chunk));
}

/// Planning's speed, a line per million rows: a planner that slows as the journal grows shows
/// in the log of a long job, not only as a late start.
struct PlanPace {
    since: std::time::Instant,
    at: u64,
}

impl PlanPace {
    const EVERY: u64 = 1_000_000;

    fn new() -> PlanPace {
        PlanPace {
            since: std::time::Instant::now(),
            at: 0,
        }
    }

    fn planned(&mut self, total: u64) {
        if total / Self::EVERY == self.at / Self::EVERY {
            return;
        }
        let secs = self.since.elapsed().as_secs_f64().max(1e-6);
        tracing::info!(
            "planned {total} rows, the last {} at {:.0} rows/s",
            total - self.at,
            (total - self.at) as f64 / secs
        );
        *self = PlanPace {
            since: std::time::Instant::now(),
            at: total,
        };
    }
}

pub fn invalid_outcome(invalid: Invalid) -> Outcome {
    Outcome::new(Status::InvalidInput)
        .with_reason(invalid.reason)
        .with_message(invalid.message)
}

/// A row that needs a call in this run.
#[derive(Debug)]
pub enum Work {
    /// Send the paid request.
    Submit { key: RowKey, subject: Subject },
    /// Already accepted: poll its result, never resend.
    Poll { key: RowKey, request_id: String },
    /// A two-step check's row with an OTP request: what it needs (step two, a fetch, a new
    /// OTP, or nothing yet) depends on the request and on the row's cells as they are now.
    Otp {
        key: RowKey,
        subject: Subject,
        request: OtpRequest,
    },
}

/// What a row needs in this run.
#[derive(Debug, PartialEq, Eq)]
pub enum Need {
    Submit,
    Poll(String),
    Otp(OtpRequest),
}

/// What a row needs, from its journal record. A row of a batch still open is polled through
/// its batch, whatever its status: an accepted batch is never uploaded again.
pub fn work_for(rec: &crate::journal::RowRecord) -> Option<Need> {
    let unsettled = matches!(rec.status, Some(Status::Pending | Status::Error));
    if rec.batch_open {
        return None;
    }
    if let Some(otp) = &rec.otp {
        // Held and duplicate rows stay as they are; a final outcome is final.
        let open = matches!(rec.state, RowState::Planned | RowState::Running)
            || (rec.state == RowState::Done && unsettled);
        return open.then(|| Need::Otp(otp.clone()));
    }
    match (rec.state, rec.batch_id, &rec.request_id) {
        (RowState::Planned, _, _) => Some(Need::Submit),
        (RowState::Running, None, Some(id)) => Some(Need::Poll(id.clone())),
        (RowState::Done, None, Some(id)) if unsettled => Some(Need::Poll(id.clone())),
        (RowState::Done, None, None) if unsettled => Some(Need::Submit),
        // A batch row in error whose batch is closed: the batch was refused, or its result
        // file left the row out. It goes into a new batch.
        (RowState::Done, Some(_), _) if rec.status == Some(Status::Error) => Some(Need::Submit),
        _ => None,
    }
}

/// The second pass: walks the input and the journal side by side (both in key order) and
/// sends each row that needs a call. Blocks when the engine is busy, so memory stays flat.
pub fn feed(
    inputs: &[InputFile],
    maps: &[ColumnMap],
    reader: &JournalReader,
    subject: SubjectFn,
    tx: &mpsc::Sender<Work>,
) -> Result<(), PassError> {
    const PAGE: usize = 10_000;
    let mut page = reader.page(None, PAGE)?.into_iter().peekable();
    let mut last = None;
    for (file, map) in inputs.iter().zip(maps) {
        let mut records = file.records()?;
        while let Some(key) = records.advance()? {
            let rec = loop {
                match page.peek() {
                    Some(r) if r.key < key => {
                        last = Some(r.key);
                        page.next();
                    }
                    Some(r) if r.key == key => break page.next(),
                    Some(_) => break None,
                    None => {
                        let next = reader.page(last, PAGE)?;
                        if next.is_empty() {
                            break None;
                        }
                        page = next.into_iter().peekable();
                    }
                }
            };
            let Some(rec) = rec else {
                tracing::warn!(
                    "row {} of {} is missing from the journal",
                    key.record() + 1,
                    file.display()
                );
                continue;
            };
            last = Some(rec.key);
            let Some(need) = work_for(&rec) else {
                continue;
            };
            let work = if let Need::Poll(request_id) = need {
                Work::Poll { key, request_id }
            } else {
                let subject = match subject(&map.values(records.record())) {
                    Ok(subject) => subject,
                    Err(e) => {
                        tracing::warn!(
                            "row {} of {} no longer passes validation ({}); skipped",
                            key.record() + 1,
                            file.display(),
                            e.reason.code
                        );
                        continue;
                    }
                };
                match need {
                    Need::Otp(request) => Work::Otp {
                        key,
                        subject,
                        request,
                    },
                    _ => Work::Submit { key, subject },
                }
            };
            if tx.blocking_send(work).is_err() {
                // The engine stopped taking work: the run is ending.
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::RowRecord;

    fn rec(
        state: RowState,
        status: Option<Status>,
        request: Option<&str>,
        batch: Option<(i64, bool)>,
    ) -> RowRecord {
        RowRecord {
            key: RowKey(0),
            state,
            status,
            request_id: request.map(str::to_owned),
            batch_id: batch.map(|(b, _)| b),
            batch_open: batch.is_some_and(|(_, open)| open),
            otp: None,
        }
    }

    #[test]
    fn what_each_journal_state_needs() {
        use RowState::*;
        use Status::*;
        let poll = |id: &str| Some(Need::Poll(id.to_string()));
        let submit = Some(Need::Submit);
        assert_eq!(work_for(&rec(Planned, None, None, None)), submit);
        assert_eq!(work_for(&rec(Running, None, Some("r"), None)), poll("r"));
        assert_eq!(
            work_for(&rec(Done, Some(Pending), Some("r"), None)),
            poll("r")
        );
        assert_eq!(
            work_for(&rec(Done, Some(Error), Some("r"), None)),
            poll("r")
        );
        assert_eq!(work_for(&rec(Done, Some(Error), None, None)), submit);
        assert_eq!(work_for(&rec(Done, Some(Pending), None, None)), submit);
        assert_eq!(work_for(&rec(Done, Some(Verified), Some("r"), None)), None);
        assert_eq!(work_for(&rec(Done, Some(InvalidInput), None, None)), None);
        assert_eq!(work_for(&rec(Unconfirmed, None, None, None)), None, "held");
        assert_eq!(work_for(&rec(Duplicate, None, None, None)), None);
        // An open batch is polled as a batch, whatever its rows say; a closed one's errors
        // go into a new batch.
        for (state, status) in [(Running, None), (Done, Some(Error)), (Done, Some(Pending))] {
            assert_eq!(
                work_for(&rec(state, status, Some("b"), Some((3, true)))),
                None
            );
        }
        assert_eq!(
            work_for(&rec(Done, Some(Error), Some("b"), Some((3, false)))),
            submit
        );
        assert_eq!(
            work_for(&rec(Done, Some(Pending), Some("b"), Some((3, false)))),
            None
        );
    }

    /// A row with an OTP request goes to the two-step pipeline while it is open, whatever its
    /// request id; held, duplicate and final rows stay as they are.
    #[test]
    fn rows_with_an_otp_request() {
        use RowState::*;
        use Status::*;
        let request = OtpRequest {
            handle: "h".into(),
            expires_at: 0,
            phase: crate::journal::OtpPhase::Awaiting,
            tried: vec![],
            sent: 1,
        };
        let with = |state, status| RowRecord {
            otp: Some(request.clone()),
            ..rec(state, status, Some("r"), None)
        };
        let otp = Some(Need::Otp(request.clone()));
        assert_eq!(work_for(&with(Done, Some(Pending))), otp);
        assert_eq!(work_for(&with(Done, Some(Error))), otp);
        assert_eq!(
            work_for(&with(Planned, Some(Pending))),
            otp,
            "a reverted step two"
        );
        assert_eq!(work_for(&with(Running, None)), otp);
        for status in [Verified, NotVerified, NeedsReview] {
            assert_eq!(work_for(&with(Done, Some(status))), None);
        }
        assert_eq!(work_for(&with(Unconfirmed, Some(Pending))), None, "held");
        assert_eq!(work_for(&with(Duplicate, None)), None);
    }

    /// The rows planning counts as to send are the ones a count of the journal finds, for
    /// any mix of invalid rows, duplicates and rows of their own; a planning that cannot know
    /// (rows already there, duplicates found only at the end) counts none.
    #[test]
    fn a_planning_on_an_empty_journal_counts_its_work_as_the_journal_does() {
        use crate::journal::{Identity, RowPlan};
        use rand::{Rng, SeedableRng};
        let id = Identity {
            check: "deepvue-upi-batch",
            environment: "sandbox",
        };
        for seed in 0..8u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut rows: Vec<(RowKey, RowPlan)> = (0..rng.random_range(0..3_000u64))
                .map(|i| {
                    let key = RowKey::new(u32::from(i % 7 == 6), i);
                    let plan = if rng.random_bool(0.05) {
                        RowPlan::Invalid(Outcome::new(Status::InvalidInput))
                    } else {
                        // Few enough identifiers that many rows repeat one.
                        let mut hash = [0u8; 16];
                        hash[..8].copy_from_slice(&rng.random_range(0..2_000u64).to_le_bytes());
                        RowPlan::Subject(hash)
                    };
                    (key, plan)
                })
                .collect();
            rows.sort_by_key(|(k, _)| *k);
            let dir = tempfile::tempdir().unwrap();
            let mut journal = Journal::open(&dir.path().join("s"), &id, false).unwrap();
            let mut planner = journal.planner().unwrap();
            for (key, plan) in &rows {
                if let RowPlan::Subject(hash) = plan {
                    planner.learn(*key, *hash).unwrap();
                }
            }
            for chunk in rows.chunks(500) {
                planner.rows(chunk).unwrap();
            }
            let counted = planner.finish(rows.len() as u64).unwrap();
            let read = journal
                .reader()
                .unwrap()
                .count(|r| work_for(r).is_some())
                .unwrap();
            assert_eq!(counted, Some(read), "seed {seed}");

            let mut again = journal.planner().unwrap();
            again.rows(&rows[..rows.len() / 2]).unwrap();
            assert_eq!(again.finish(rows.len() as u64).unwrap(), None, "rows there");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join("s"), &id, false).unwrap();
        let mut unlearnt = journal.planner().unwrap();
        unlearnt
            .rows(&[(RowKey::new(0, 0), RowPlan::Subject([1; 16]))])
            .unwrap();
        assert_eq!(
            unlearnt.finish(1).unwrap(),
            None,
            "duplicates found at the end"
        );
    }

    #[test]
    fn ident_hash_separates_checks() {
        assert_ne!(ident_hash("a", "x"), ident_hash("b", "x"));
        assert_eq!(ident_hash("a", "x"), ident_hash("a", "x"));
    }
}
