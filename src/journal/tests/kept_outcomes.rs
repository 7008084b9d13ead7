//! Outcomes a batch keeps (`kept`): every reader of a row's state reads them, and a row the
//! writer changes again takes its outcome back into its record first.

use super::*;

/// Rows 0–3 go in batch 1; row 4 stays planned; row 5 repeats row 1.
fn keys() -> Vec<RowKey> {
    row_keys(6)
}

/// A journal at `state` with its six rows planned, row 5 a duplicate of row 1.
fn planned_with_a_duplicate(state: &Path) -> Journal {
    let mut j = Journal::open(state, &ID, false).unwrap();
    let rows: Vec<_> = [1u8, 2, 3, 4, 5, 2]
        .into_iter()
        .zip(keys())
        .map(|(h, k)| (k, RowPlan::Subject(hash(h))))
        .collect();
    plan(&mut j, &rows);
    j
}

/// The rows' own records, as planning wrote them or as written since.
fn own_states(j: &Journal) -> Vec<RowState> {
    column(j, "SELECT state FROM rows ORDER BY row_key")
}

fn chunks(j: &Journal) -> i64 {
    j.conn
        .query_row("SELECT count(*) FROM kept", [], |r| r.get(0))
        .unwrap()
}

/// A writer of `j`, with batch 1 (rows 0–3) sent and accepted after `attempts` tries.
async fn accepted_batch(j: &Journal, attempts: u32) -> (JournalWriter, WriterThread) {
    let k = keys();
    let (w, thread) = j.writer().unwrap();
    w.intent(k[..4].to_vec(), Some(1), None).await.unwrap();
    w.running(k[..4].to_vec(), Some(1), "req-1".into(), attempts);
    (w, thread)
}

/// Batch 1, accepted (2 attempts), its rows answered: verified with a field, not verified
/// with a request id of its own, pending and an error; the batch still open.
async fn answer_batch(j: &Journal) {
    let k = keys();
    let (w, thread) = accepted_batch(j, 2).await;
    let fields = vec![("name_at_bank".to_string(), "ANITA".to_string())];
    w.done(
        k[0],
        Outcome::new(Status::Verified).with_fields(fields),
        None,
    );
    let own_id = Outcome::new(Status::NotVerified).with_request_id("row-1");
    w.done(k[1], own_id, None);
    let pending = Outcome::new(Status::Pending).with_reason(Reason::STILL_PROCESSING);
    w.done(k[2], pending, None);
    w.done(
        k[3],
        Outcome::new(Status::Error).with_message("timeout"),
        None,
    );
    w.close().await.unwrap();
    thread.join();
}

#[tokio::test]
async fn a_batch_keeps_its_rows_outcomes_and_every_reader_reads_them() {
    use RowState::*;
    let dir = tempfile::tempdir().unwrap();
    let j = planned_with_a_duplicate(&dir.path().join("s"));
    answer_batch(&j).await;
    assert_eq!(
        own_states(&j),
        [Planned, Planned, Planned, Planned, Planned, Duplicate],
        "the rows' records are not written again"
    );
    assert_eq!(
        chunks(&j),
        1,
        "one chunk for the commit's rows of the batch"
    );
    let leaders: Vec<i64> = column(&j, "SELECT row_key FROM kept_leaders");
    assert_eq!(
        leaders,
        [1],
        "the row another repeats keeps its outcome alone"
    );

    let page = j.reader().unwrap().page(None, 100).unwrap();
    let seen: Vec<_> = page
        .iter()
        .map(|r| (r.state, r.status, r.request_id.as_deref(), r.batch_open))
        .collect();
    assert_eq!(
        seen,
        [
            (Done, Some(Status::Verified), Some("req-1"), true),
            (Done, Some(Status::NotVerified), Some("row-1"), true),
            (Done, Some(Status::Pending), Some("req-1"), true),
            (Done, Some(Status::Error), Some("req-1"), true),
            (Planned, None, None, false),
            (Duplicate, None, None, false),
        ]
    );
    counts_as_read(&j);

    let export = export(&j);
    let out: Vec<_> = export
        .iter()
        .map(|r| (r.state, r.status, r.attempts, r.checked_at.is_some()))
        .collect();
    assert_eq!(
        out,
        [
            (Done, Some(Status::Verified), 2, true),
            (Done, Some(Status::NotVerified), 2, true),
            (Done, Some(Status::Pending), 2, true),
            (Done, Some(Status::Error), 2, true),
            (Planned, None, 0, false),
            (Done, Some(Status::NotVerified), 2, true),
        ],
        "the duplicate has its leader's outcome"
    );
    assert_eq!(
        named(&j, &export[0]),
        [("name_at_bank".into(), "ANITA".into())]
    );
    assert_eq!(export[3].message.as_deref(), Some("timeout"));
    assert_eq!(export[5].request_id.as_deref(), Some("row-1"));

    let mut groups: Vec<_> = j
        .outcome_groups()
        .unwrap()
        .into_iter()
        .map(|g| (g.state, g.status, g.rows, g.duplicates))
        .collect();
    groups.sort_by_key(|g| (g.0.as_sql(), g.1.map(Status::as_str)));
    assert_eq!(
        groups,
        [
            (Done, Some(Status::Error), 1, 0),
            (Done, Some(Status::NotVerified), 2, 1),
            (Done, Some(Status::Pending), 1, 0),
            (Done, Some(Status::Verified), 1, 0),
            (Planned, None, 1, 0),
        ]
    );

    let names = j.field_numbers().unwrap();
    let answers: Vec<_> = j
        .obtained_answers(None, &names)
        .unwrap()
        .into_iter()
        .map(|o| (o.answer.key, o.answer.ident, o.answer.outcome.request_id))
        .collect();
    assert_eq!(
        answers,
        [
            (keys()[0], hash(1), Some("req-1".into())),
            (keys()[1], hash(2), Some("row-1".into())),
        ],
        "the final answers, with their batch's request id"
    );
    let unsent: Vec<_> = j.unsent_idents(None).unwrap();
    assert_eq!(unsent, [(keys()[4], hash(5))]);
}

/// A run that polls a kept pending row again, and sends a kept error again, writes each
/// row's kept outcome into its record first; recovery and the open batch see the rest.
#[tokio::test]
async fn a_kept_row_changed_again_takes_its_outcome_back() {
    use RowState::*;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let k = keys();
    {
        let j = planned_with_a_duplicate(&state);
        answer_batch(&j).await;
    }
    let mut j = Journal::open(&state, &ID, false).unwrap();
    assert_eq!(j.recover(false).unwrap(), (0, 0), "nothing was in flight");
    let open = j.open_batches().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        open[0].rows,
        [(k[2], hash(3)), (k[3], hash(4))],
        "its pending and failed rows are polled again"
    );
    let (w, thread) = j.writer().unwrap();
    w.done(k[2], Outcome::new(Status::Verified), None);
    w.intent(vec![k[3]], Some(2), None).await.unwrap();
    w.close().await.unwrap();
    thread.join();
    assert_eq!(
        own_states(&j),
        [Planned, Planned, Done, Sending, Planned, Duplicate],
        "the rows changed again have their records, the batch's outcome in them"
    );
    let rows: Vec<(Option<String>, Option<i64>, i64)> = j
        .conn
        .prepare(
            "SELECT status, batch_id, attempts FROM rows WHERE row_key IN (2, 3) ORDER BY row_key",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [
            (Some("verified".into()), Some(1), 2),
            (Some("error".into()), Some(2), 2)
        ],
        "the error sent again kept its outcome's attempts, its record now in batch 2"
    );
    let kept = crate::journal::kept::kept_in(&j.conn, k[0], k[5]).unwrap();
    assert_eq!(
        kept.into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
        [k[0], k[1]]
    );
    let page = j.reader().unwrap().page(None, 100).unwrap();
    let states: Vec<_> = page.iter().map(|r| (r.state, r.batch_id)).collect();
    assert_eq!(
        states,
        [
            (Done, Some(1)),
            (Done, Some(1)),
            (Done, Some(1)),
            (Sending, Some(2)),
            (Planned, None),
            (Duplicate, None)
        ],
        "the row sent again is in its new batch, on that batch alone"
    );
    counts_as_read(&j);
}

/// A run killed with a batch's rows part answered: recovery writes the rows still in flight
/// as the batch says and leaves those whose outcome it keeps.
#[tokio::test]
async fn recovery_leaves_the_outcomes_a_batch_keeps() {
    use RowState::*;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let k = keys();
    {
        let j = planned_with_a_duplicate(&state);
        let (w, thread) = accepted_batch(&j, 1).await;
        w.done(k[1], Outcome::new(Status::Verified), None);
        w.flush().await.unwrap();
        let groups: Vec<_> = j
            .outcome_groups()
            .unwrap()
            .into_iter()
            .map(|g| (g.state, g.status, g.rows))
            .collect();
        assert!(
            groups.contains(&(Done, Some(Status::Verified), 2)),
            "{groups:?}"
        );
        assert!(groups.contains(&(Running, None, 3)), "{groups:?}");
        // The run dies.
        drop(w);
        thread.join();
    }
    let mut j = Journal::open(&state, &ID, false).unwrap();
    assert_eq!(j.recover(false).unwrap(), (0, 0));
    assert_eq!(
        own_states(&j),
        [Running, Planned, Running, Running, Planned, Duplicate]
    );
    let page = j.reader().unwrap().page(None, 100).unwrap();
    let states: Vec<_> = page.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [Running, Done, Running, Running, Planned, Duplicate]
    );
    assert_eq!(
        j.open_batches().unwrap()[0].rows,
        [(k[0], hash(1)), (k[2], hash(3)), (k[3], hash(4))]
    );
    counts_as_read(&j);
}

/// A writer started on what a dead run left, before recovery wrote it, takes the rows whose
/// outcomes the batch keeps as settled: a later answer for one of them is written into its
/// record, never kept a second time.
#[tokio::test]
async fn a_writer_started_before_recovery_leaves_kept_rows_settled() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let k = keys();
    {
        let j = planned_with_a_duplicate(&state);
        let (w, thread) = accepted_batch(&j, 1).await;
        w.done(k[0], Outcome::new(Status::Pending), None);
        // Committed with everything sent before it, the batch left unwritten.
        w.intent(vec![k[4]], Some(2), None).await.unwrap();
        drop(w);
        thread.join();
    }
    let j = Journal::open(&state, &ID, false).unwrap();
    let (w, thread) = j.writer().unwrap();
    w.done(k[0], Outcome::new(Status::Verified), None);
    w.done(k[1], Outcome::new(Status::Verified), None);
    w.close().await.unwrap();
    thread.join();
    let kept = crate::journal::kept::kept_in(&j.conn, k[0], k[5]).unwrap();
    assert_eq!(kept.into_iter().map(|(k, _)| k).collect::<Vec<_>>(), [k[1]]);
    assert_eq!(own_states(&j)[0], RowState::Done, "written into its record");
    let statuses: Vec<_> = export(&j).iter().map(|r| r.status).collect();
    assert_eq!(
        statuses[..2],
        [Some(Status::Verified), Some(Status::Verified)]
    );
}
