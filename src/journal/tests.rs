//! The journal's tests across its parts: planning, the writer, recovery, the reader, the
//! lock and the state directory.

use std::path::Path;

mod kept_equivalence;
mod kept_outcomes;
mod syncs;

use super::lock::LOCK_FILE;
use super::schema::DB_FILE;
use super::*;
use crate::outcome::Reason;
use crate::outcome::{Outcome, RowKey, Status};

const ID: Identity = Identity {
    check: "deepvue-udyam",
    environment: "sandbox",
};

fn hash(b: u8) -> [u8; 16] {
    [b; 16]
}

/// The keys of the first `n` rows of one file.
fn row_keys(n: u64) -> Vec<RowKey> {
    (0..n).map(|i| RowKey::new(0, i)).collect()
}

/// The first column of what `sql` selects from the journal's tables, as stored.
fn column<T: rusqlite::types::FromSql>(j: &Journal, sql: &str) -> Vec<T> {
    j.conn
        .prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A whole first pass over `rows`.
fn plan(j: &mut Journal, rows: &[(RowKey, RowPlan)]) {
    let mut planner = j.planner().unwrap();
    planner.rows(rows).unwrap();
    planner.finish(rows.len() as u64).unwrap();
}

/// A whole first pass over `keys`, each a subject with an identifier of its own.
fn plan_subjects(j: &mut Journal, keys: &[RowKey]) {
    let rows: Vec<_> = keys
        .iter()
        .map(|k| (*k, RowPlan::Subject(hash(k.0 as u8 + 1))))
        .collect();
    plan(j, &rows);
}

fn export(j: &Journal) -> Vec<ExportRow> {
    let mut rows = Vec::new();
    j.export_each(|r| rows.push(r)).unwrap();
    rows
}

/// An exported row's fields by name: each value beside its column's name.
fn named(j: &Journal, row: &ExportRow) -> Vec<(String, String)> {
    let names = j.field_names().unwrap();
    assert_eq!(row.fields.len(), names.len(), "a value for every column");
    names
        .into_iter()
        .zip(&row.fields)
        .filter_map(|(n, v)| Some((n, v.clone()?)))
        .collect()
}

#[test]
fn planning_detects_duplicates_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
    let rows = [
        (RowKey::new(0, 0), RowPlan::Subject(hash(1))),
        (RowKey::new(0, 1), RowPlan::Subject(hash(2))),
        (RowKey::new(0, 2), RowPlan::Subject(hash(1))),
        (
            RowKey::new(0, 3),
            RowPlan::Invalid(Outcome::new(Status::InvalidInput).with_reason(Reason::UDYAM_FORMAT)),
        ),
    ];
    // A pass killed before its end recorded some rows and found no duplicate yet.
    let mut planner = j.planner().unwrap();
    planner.rows(&rows[..3]).unwrap();
    drop(planner);
    assert!(j.planned_rows().unwrap().is_none());
    // The resumed pass reads every row again, in batches; once more changes nothing.
    for _ in 0..2 {
        let mut planner = j.planner().unwrap();
        planner.rows(&rows[..2]).unwrap();
        planner.rows(&rows[2..]).unwrap();
        planner.finish(4).unwrap();
    }
    let export = export(&j);
    assert_eq!(export.len(), 4);
    let leaders: Vec<_> = export.iter().map(|r| r.duplicate_of).collect();
    assert_eq!(leaders, vec![None, None, Some(RowKey::new(0, 0)), None]);
    assert_eq!(export[3].status, Some(Status::InvalidInput));
    assert_eq!(j.planned_rows().unwrap(), Some(4));
}

/// Duplicates are found over more identifiers than the planner sorts in memory: every later
/// row with an identifier takes its first row's outcome, whichever file it is in.
#[test]
fn duplicates_are_found_across_spilled_runs_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
    let n = 25_010;
    let mut planner = j.planner_sorting(10_000).unwrap();
    let key = |i: u64| RowKey::new(u32::from(i >= n / 2), i % (n / 2));
    let ident = |i: u64| {
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&(if i % 10 == 9 { i / 3 } else { i }).to_be_bytes());
        h
    };
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|&i| (key(i), RowPlan::Subject(ident(i))))
            .collect();
        planner.rows(&rows).unwrap();
    }
    planner.finish(n).unwrap();
    let mut first = std::collections::HashMap::new();
    let expected: Vec<Option<RowKey>> = (0..n)
        .map(|i| {
            let leader = *first.entry(ident(i)).or_insert(key(i));
            (leader != key(i)).then_some(leader)
        })
        .collect();
    let got: Vec<Option<RowKey>> = export(&j).iter().map(|r| r.duplicate_of).collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "duplicates differ from a hash map's");
    assert!(expected.iter().flatten().count() > 1_000);
    let states = j.reader().unwrap().page(None, 10).unwrap();
    assert_eq!(states[9].state, RowState::Duplicate);
}

/// Identifiers learnt ahead of the rows: each duplicate is recorded as one with its row,
/// before planning ends (a pass killed at that point has them), across spilled runs; a row an
/// earlier killed pass recorded as planned is marked when recorded again.
#[test]
fn learnt_identifiers_record_duplicates_with_their_rows() {
    use RowState::*;
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
    let invalid = Outcome::new(Status::InvalidInput).with_reason(Reason::UDYAM_FORMAT);
    let rows = [
        (RowKey::new(0, 0), RowPlan::Subject(hash(1))),
        (RowKey::new(0, 1), RowPlan::Subject(hash(2))),
        (RowKey::new(0, 2), RowPlan::Subject(hash(1))),
        (RowKey::new(0, 3), RowPlan::Invalid(invalid)),
        (RowKey::new(1, 0), RowPlan::Subject(hash(2))),
        (RowKey::new(1, 1), RowPlan::Subject(hash(3))),
    ];
    let learn = |planner: &mut Planner| {
        for (key, plan) in &rows {
            if let RowPlan::Subject(h) = plan {
                planner.learn(*key, *h).unwrap();
            }
        }
    };
    let mut planner = j.planner().unwrap();
    planner.rows(&rows[..3]).unwrap();
    drop(planner);
    assert_eq!(states(&j), [Planned; 3], "not known without learning");

    let mut planner = j.planner_sorting(2).unwrap();
    learn(&mut planner);
    planner.rows(&rows[..4]).unwrap();
    planner.rows(&rows[4..]).unwrap();
    drop(planner);
    assert_eq!(
        states(&j),
        [Planned, Planned, Duplicate, Done, Duplicate, Planned]
    );
    assert!(j.planned_rows().unwrap().is_none());

    let mut planner = j.planner_sorting(2).unwrap();
    learn(&mut planner);
    planner.rows(&rows).unwrap();
    planner.finish(rows.len() as u64).unwrap();
    let leaders: Vec<_> = export(&j).iter().map(|r| r.duplicate_of).collect();
    assert_eq!(
        leaders,
        [None, None, Some(rows[0].0), None, Some(rows[1].0), None]
    );
    assert_eq!(j.planned_rows().unwrap(), Some(6));
}

/// A killed pass's rows recorded again, many to a statement: those now known as duplicates
/// are marked, the others left as they are.
#[test]
fn rows_recorded_again_many_at_once_take_what_is_learnt() {
    use RowState::*;
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
    let n = 100u64;
    let ident = |i: u64| {
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&(if i % 3 == 2 { i - 1 } else { i }).to_be_bytes());
        h
    };
    let rows: Vec<_> = (0..n)
        .map(|i| (RowKey::new(0, i), RowPlan::Subject(ident(i))))
        .collect();
    let mut planner = j.planner().unwrap();
    planner.rows(&rows).unwrap();
    drop(planner);
    assert_eq!(states(&j), vec![Planned; n as usize]);
    let mut planner = j.planner().unwrap();
    for (key, plan) in &rows {
        if let RowPlan::Subject(h) = plan {
            planner.learn(*key, *h).unwrap();
        }
    }
    planner.rows(&rows).unwrap();
    planner.finish(n).unwrap();
    let want: Vec<RowState> = (0..n)
        .map(|i| if i % 3 == 2 { Duplicate } else { Planned })
        .collect();
    assert_eq!(states(&j), want);
}

/// `n` rows in key order, each a subject with an identifier of its own.
fn distinct_subjects(n: u64) -> Vec<(RowKey, RowPlan)> {
    (0..n)
        .map(|i| {
            let mut h = [0u8; 16];
            h[..8].copy_from_slice(&i.to_be_bytes());
            (RowKey::new(0, i), RowPlan::Subject(h))
        })
        .collect()
}

/// Planning writes its rows in place, not through the WAL, and leaves the journal in WAL mode
/// however it ends, for the run's readers and writer.
#[test]
fn planning_writes_in_place_and_leaves_the_journal_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let mut j = Journal::open(&state, &ID, false).unwrap();
    let rows = distinct_subjects(20_000);
    let mode = |j: &Journal| -> String {
        j.conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    };
    let mut planner = j.planner().unwrap();
    planner.rows(&rows[..10_000]).unwrap();
    drop(planner);
    assert_eq!(mode(&j), "wal", "a planning that ends early");
    let mut planner = j.planner().unwrap();
    planner.rows(&rows).unwrap();
    planner.finish(rows.len() as u64).unwrap();
    assert_eq!(mode(&j), "wal");
    let wal = std::fs::metadata(state.join(format!("{DB_FILE}-wal"))).map_or(0, |m| m.len());
    let db = std::fs::metadata(state.join(DB_FILE)).unwrap().len();
    assert!(db > 500_000, "{db} bytes");
    assert!(wal < 64 << 10, "the rows went through the WAL: {wal} bytes");
    assert_eq!(j.planned_rows().unwrap(), Some(20_000));
}

/// `status` and planning keep out of each other's way: a journal that `status` reads is
/// planned through the WAL, at once rather than after the writer's busy timeout; one being
/// planned in place is not read, and neither is one whose planning was stopped midway (its
/// rollback journal left beside it), which a read-only reader could not roll back.
#[test]
fn status_and_planning_keep_out_of_each_others_way() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let mut j = Journal::open(&state, &ID, false).unwrap();
    let rows = distinct_subjects(20_000);
    let planning = |dir: &Path| matches!(Peek::open(dir), Err(JournalError::Planning { .. }));

    let mut planner = j.planner().unwrap();
    planner.rows(&rows[..10_000]).unwrap();
    assert!(planning(&state), "read while planned in place");
    drop(planner);
    // A planning stopped in a transaction: the files as a kill would leave them.
    let (copy, stopped) = (dir.path().join("copy"), dir.path().join("stopped"));
    for d in [&copy, &stopped] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::copy(state.join(DB_FILE), copy.join(DB_FILE)).unwrap();
    let conn = rusqlite::Connection::open(copy.join(DB_FILE)).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    conn.execute_batch("BEGIN").unwrap();
    let changed = conn.execute("UPDATE rows SET attempts = attempts + 1", []);
    assert_eq!(changed.unwrap(), 10_000);
    for file in [DB_FILE.to_string(), format!("{DB_FILE}-journal")] {
        std::fs::copy(copy.join(&file), stopped.join(&file)).unwrap();
    }
    drop(conn);
    assert!(
        planning(&stopped),
        "read with a stopped planning's journal beside it"
    );

    let peek = Peek::open(&state).unwrap();
    let counted =
        |peek: &Peek| -> u64 { peek.outcome_groups().unwrap().iter().map(|g| g.rows).sum() };
    assert_eq!(counted(&peek), 10_000);
    let started = std::time::Instant::now();
    let mut planner = j.planner().unwrap();
    planner.rows(&rows).unwrap();
    planner.finish(rows.len() as u64).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(counted(&peek), 20_000);
    let wal = std::fs::metadata(state.join(format!("{DB_FILE}-wal"))).map_or(0, |m| m.len());
    assert!(
        wal > 100_000,
        "the rows were not written through the WAL: {wal} bytes"
    );
}

/// The export read ahead on a thread of its own gives the rows the export on this one gives,
/// over several chunks; the consumer's first error stops it, though the reader is then held on
/// a full queue, and is the error returned.
#[test]
fn export_ahead_gives_every_row_and_stops_at_the_first_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
    // Every seventh row repeats the row before it.
    let rows: Vec<_> = (0..30_000u64)
        .map(|i| {
            let mut h = [0u8; 16];
            h[..8].copy_from_slice(&(i - u64::from(i % 7 == 6)).to_be_bytes());
            (RowKey::new(0, i), RowPlan::Subject(h))
        })
        .collect();
    plan(&mut j, &rows);
    let own: Vec<_> = export(&j)
        .into_iter()
        .map(|r| (r.key, r.duplicate_of, r.state))
        .collect();
    let mut ahead = Vec::new();
    j.export_ahead(|r| {
        ahead.push((r.key, r.duplicate_of, r.state));
        Ok::<_, JournalError>(())
    })
    .unwrap();
    assert_eq!(ahead.len(), 30_000);
    assert_eq!(ahead, own);
    assert_eq!(ahead[6].1, Some(RowKey::new(0, 5)));

    let mut taken = 0;
    let stopped = j.export_ahead(|_| {
        taken += 1;
        if taken == 10 {
            return Err(JournalError::WriteFailed(
                "the output's disk is full".into(),
            ));
        }
        Ok(())
    });
    assert!(
        matches!(stopped, Err(JournalError::WriteFailed(m)) if m == "the output's disk is full")
    );
    assert_eq!(taken, 10);
}

#[tokio::test]
async fn lifecycle_survives_reopen_and_recovery_holds_in_flight_rows() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    {
        let mut j = Journal::open(&state, &ID, false).unwrap();
        let keys = row_keys(4);
        plan(
            &mut j,
            &keys
                .iter()
                .map(|k| (*k, RowPlan::Subject(hash(k.0 as u8))))
                .collect::<Vec<_>>(),
        );
        let (w, thread) = j.writer().unwrap();
        w.intent(vec![keys[0]], None, None).await.unwrap();
        w.running(vec![keys[0]], None, "req-0".into(), 1);
        w.intent(vec![keys[1]], None, None).await.unwrap();
        w.done(
            keys[1],
            Outcome::new(Status::Verified).with_fields(vec![("a".into(), "1".into())]),
            Some(2),
        );
        w.intent(vec![keys[2]], None, None).await.unwrap();
        w.close().await.unwrap();
        thread.join();
    }
    let mut j = Journal::open(&state, &ID, false).unwrap();
    assert_eq!(j.recover(false).unwrap(), (1, 0));
    let page = j.reader().unwrap().page(None, 10).unwrap();
    let states: Vec<_> = page.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            RowState::Running,
            RowState::Done,
            RowState::Unconfirmed,
            RowState::Planned
        ]
    );
    assert_eq!(page[0].request_id.as_deref(), Some("req-0"));
    counts_as_read(&j);
    let export = export(&j);
    assert_eq!(export[1].attempts, 2);
    assert_eq!(j.field_names().unwrap(), ["a"]);
    assert_eq!(
        named(&j, &export[1]),
        vec![("a".to_string(), "1".to_string())]
    );
    assert_eq!(j.recover(true).unwrap(), (0, 1));
    let page = j
        .reader()
        .unwrap()
        .page(Some(RowKey::new(0, 1)), 1)
        .unwrap();
    assert_eq!(page[0].state, RowState::Planned);
    counts_as_read(&j);
}

/// `JournalReader::count` counts what reading every row would: it skips reading the rows
/// planned and untouched, a planned row released from unconfirmed is not one of them.
fn counts_as_read(j: &Journal) {
    let reader = j.reader().unwrap();
    let all = reader.page(None, 100).unwrap();
    let tests: [fn(&RowRecord) -> bool; 4] = [
        |r| r.state == RowState::Planned,
        |r| r.request_id.is_some(),
        |r| r.state != RowState::Planned,
        |_| true,
    ];
    for needs in tests {
        let read = all.iter().filter(|r| needs(r)).count() as u64;
        assert_eq!(reader.count(needs).unwrap(), read, "{all:?}");
    }
}

/// A run killed between committing a named upload and its answer: the next run asks for
/// the name (the batch is open, unconfirmed), while an unnamed upload is held.
#[tokio::test]
async fn recovery_reconciles_named_uploads_and_holds_unnamed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let keys = row_keys(4);
    let token = {
        let mut j = Journal::open(&state, &ID, false).unwrap();
        plan_subjects(&mut j, &keys);
        let (w, thread) = j.writer().unwrap();
        w.intent(keys[..2].to_vec(), Some(1), Some("bv-t-1".into()))
            .await
            .unwrap();
        w.intent(keys[2..].to_vec(), Some(2), None).await.unwrap();
        w.close().await.unwrap();
        thread.join();
        j.job_token().unwrap()
    };
    let mut j = Journal::open(&state, &ID, false).unwrap();
    assert_eq!(j.job_token().unwrap(), token, "the token is kept");
    assert_eq!(
        j.recover(false).unwrap(),
        (2, 0),
        "the unnamed batch is held"
    );
    let open = j.open_batches().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].request_id, "bv-t-1");
    assert!(!open[0].confirmed);
    assert_eq!(open[0].rows, vec![(keys[0], hash(1)), (keys[1], hash(2))]);
    let page = j.reader().unwrap().page(None, 10).unwrap();
    assert!(
        page[..2]
            .iter()
            .all(|r| r.batch_open && r.state == RowState::Running)
    );
    assert!(page[2..].iter().all(|r| r.state == RowState::Unconfirmed));
}

#[test]
fn a_second_run_on_the_same_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let _first = Journal::open(&state, &ID, false).unwrap();
    let err = Journal::open(&state, &ID, false).err().unwrap();
    assert!(matches!(err, JournalError::Busy { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id()))
    );
}

/// Purging deletes the state and the old states moved aside, never a directory that is
/// not a state, and never a state a run is using.
#[test]
fn purge_deletes_states_only_when_no_run_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("out.csv.bulkverify");
    drop(Journal::open(&state, &ID, false).unwrap());
    drop(Journal::open(&state, &ID, true).unwrap());
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".old-"))
        .collect();
    assert_eq!(aside.len(), 1, "--fresh moved one aside");
    let other = dir.path().join("out.csv.bulkverify.old-notes");
    std::fs::create_dir(&other).unwrap();

    let running = Journal::open(&state, &ID, false).unwrap();
    let busy = Journal::purge(&state).unwrap_err();
    assert!(matches!(busy, JournalError::Busy { .. }), "{busy}");
    assert!(state.join(DB_FILE).exists());
    drop(running);

    let deleted = Journal::purge(&state).unwrap();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(!state.exists() && !aside[0].exists());
    assert!(other.exists(), "not a state: kept");
    let gone = Journal::purge(&state).unwrap_err();
    assert!(matches!(gone, JournalError::NotAState { .. }), "{gone}");
    assert!(matches!(
        Journal::purge(&other).unwrap_err(),
        JournalError::NotAState { .. }
    ));
}

/// A new state hashes with a key of its own, kept across runs; a state with rows from
/// before keys keeps hashing with the check's name alone.
#[test]
fn identifiers_are_hashed_with_the_states_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let scope_a = Journal::open(&a, &ID, false)
        .unwrap()
        .ident_scope("c")
        .unwrap();
    let scope_b = Journal::open(&b, &ID, false)
        .unwrap()
        .ident_scope("c")
        .unwrap();
    assert!(
        scope_a.starts_with("c\0") && scope_a.len() > 60,
        "{scope_a:?}"
    );
    assert_ne!(scope_a, scope_b, "each state its own key");
    let again = Journal::open(&a, &ID, false)
        .unwrap()
        .ident_scope("c")
        .unwrap();
    assert_eq!(scope_a, again, "kept across runs");

    let old = dir.path().join("old");
    let mut j = Journal::open(&old, &ID, false).unwrap();
    plan(&mut j, &[(RowKey::new(0, 0), RowPlan::Subject(hash(1)))]);
    assert_eq!(j.ident_scope("c").unwrap(), "c", "rows from before keys");
}

#[test]
fn identity_and_inputs_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    {
        let mut j = Journal::open(&state, &ID, false).unwrap();
        let inputs = vec![("a.csv".to_string(), "aa".to_string())];
        assert!(!j.check_inputs(&inputs, "udyam=Udyam").unwrap());
        j.planner().unwrap().finish(10).unwrap();
        assert!(j.check_inputs(&inputs, "udyam=Udyam").unwrap());
        let err = j
            .check_inputs(&[("a.csv".to_string(), "bb".to_string())], "udyam=Udyam")
            .unwrap_err();
        assert!(matches!(err, JournalError::InputChanged { .. }));
        let err = j.check_inputs(&inputs, "udyam=Reg").unwrap_err();
        assert!(matches!(err, JournalError::OtherColumns { .. }), "{err}");
    }
    let other = Identity {
        check: "deepvue-upi-batch",
        environment: "sandbox",
    };
    assert!(matches!(
        Journal::open(&state, &other, false).err().unwrap(),
        JournalError::OtherCheck { .. }
    ));
    let live = Identity {
        check: "deepvue-udyam",
        environment: "https://production.deepvue.tech/",
    };
    assert!(matches!(
        Journal::open(&state, &live, false).err().unwrap(),
        JournalError::OtherEnvironment { .. }
    ));
    let j = Journal::open(&state, &live, true).unwrap();
    assert!(j.planned_rows().unwrap().is_none());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "the old state is kept aside"
    );
}

#[cfg(unix)]
#[test]
fn state_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let _j = Journal::open(&state, &ID, false).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join(DB_FILE)), 0o600);
    assert_eq!(mode(&state.join(LOCK_FILE)), 0o600);
}

fn states(j: &Journal) -> Vec<RowState> {
    let page = j.reader().unwrap().page(None, 100).unwrap();
    page.iter().map(|r| r.state).collect()
}

/// An intent sent ahead of its time is committed at that time, not before, while what is
/// sent after it is committed in its own time; its commit says how long it took from then.
/// A flush takes an intent held for later along.
#[tokio::test]
async fn an_intent_sent_ahead_is_committed_at_its_time() {
    use RowState::*;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let keys = row_keys(3);
    let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
    plan_subjects(&mut j, &keys);
    let (w, thread) = j.writer().unwrap();
    let at = Instant::now() + Duration::from_millis(400);
    let ahead = w.intent_at(vec![keys[0]], None, None, at);
    w.intent(vec![keys[1]], None, None).await.unwrap();
    w.running(vec![keys[1]], None, "req-1".into(), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        states(&j),
        [Planned, Running, Planned],
        "what came after the intent is committed before its time"
    );
    let took = ahead.await.unwrap();
    assert!(Instant::now() >= at, "committed at its time, not before");
    assert!(
        took < Duration::from_millis(300),
        "how long its commit took from its time: {took:?}"
    );
    assert_eq!(states(&j), [Sending, Running, Planned]);

    let later = w.intent_at(
        vec![keys[2]],
        None,
        None,
        Instant::now() + Duration::from_secs(60),
    );
    w.flush().await.unwrap();
    assert_eq!(
        states(&j),
        [Sending, Running, Sending],
        "a flush takes it along"
    );
    later.await.unwrap();
    w.close().await.unwrap();
    thread.join();
}

/// A poll's answer waits for another change's commit, which takes it along, or commits
/// within its patience by itself: a row whose answer a kill lost is polled again.
#[tokio::test]
async fn a_poll_s_answer_goes_with_another_commit_or_within_its_patience() {
    use RowState::*;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let keys = row_keys(3);
    let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
    plan_subjects(&mut j, &keys);
    let (w, thread) = j.writer().unwrap();
    w.intent(keys.clone(), None, None).await.unwrap();
    for (i, k) in keys.iter().enumerate() {
        w.running(vec![*k], None, format!("req-{i}"), 1);
    }
    w.committed().await.unwrap();
    let sent = Instant::now();
    w.polled(keys[0], Outcome::new(Status::Verified));
    tokio::time::sleep(Duration::from_millis(200)).await;
    if sent.elapsed() < Duration::from_millis(800) {
        assert_eq!(states(&j), [Running, Running, Running], "it waits");
    }
    w.done(keys[1], Outcome::new(Status::Verified), None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        states(&j),
        [Done, Done, Running],
        "another change's commit takes it along"
    );
    w.polled(keys[2], Outcome::new(Status::NotVerified));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(states(&j), [Done, Done, Done], "within its patience");
    w.close().await.unwrap();
    thread.join();
}

/// A move the lifecycle refuses is not written, and nothing after it: a held row is never
/// sent again without the user's word, whatever the engine asks.
#[tokio::test]
async fn a_refused_move_stops_the_writer_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let keys = row_keys(2);
    {
        let mut j = Journal::open(&state, &ID, false).unwrap();
        plan_subjects(&mut j, &keys);
        let (w, thread) = j.writer().unwrap();
        w.intent(vec![keys[0]], None, None).await.unwrap();
        w.unconfirmed(vec![keys[0]], None, Some(1));
        w.flush().await.unwrap();
        let err = w.intent(keys.clone(), None, None).await.unwrap_err();
        assert!(matches!(err, JournalError::Refused(_)), "{err}");
        assert!(
            err.to_string()
                .contains("row 1 of input file 1 is unconfirmed and cannot be sent"),
            "{err}"
        );
        w.done(keys[1], Outcome::new(Status::Verified), None);
        assert!(matches!(w.flush().await, Err(JournalError::Refused(_))));
        assert!(matches!(w.check(), Err(JournalError::Refused(_))));
        assert!(w.close().await.is_err());
        thread.join();
    }
    let j = Journal::open(&state, &ID, false).unwrap();
    assert_eq!(
        states(&j),
        [RowState::Unconfirmed, RowState::Planned],
        "the refused transaction was rolled back whole"
    );
}

/// A batch's intent is refused for a row that cannot be sent, whether the batch's rows lie
/// next to each other (their states read in one pass) or spread over the input (one by one).
#[tokio::test]
async fn a_batch_with_a_held_row_is_refused_however_its_rows_lie() {
    for spread in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<_> = (0..3u32)
            .map(|i| match spread {
                true => RowKey::new(i, u64::from(i)),
                false => RowKey::new(0, u64::from(i)),
            })
            .collect();
        let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
        plan_subjects(&mut j, &keys);
        let (w, thread) = j.writer().unwrap();
        w.intent(vec![keys[1]], None, None).await.unwrap();
        w.unconfirmed(vec![keys[1]], None, Some(1));
        w.flush().await.unwrap();
        let err = w.intent(keys.clone(), Some(1), None).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("is unconfirmed and cannot be sent"),
            "{spread}: {err}"
        );
        assert!(w.close().await.is_err());
        thread.join();
    }
}

/// Reverting a batch forgets it only while the provider has nothing of it: a named upload it
/// has no trace of is planned again, an accepted one never.
#[tokio::test]
async fn only_a_batch_the_provider_never_took_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
    let keys = row_keys(4);
    plan_subjects(&mut j, &keys);
    let (w, thread) = j.writer().unwrap();
    let (named, accepted) = (keys[..2].to_vec(), keys[2..].to_vec());
    w.intent(named.clone(), Some(1), Some("bv-t-1".into()))
        .await
        .unwrap();
    w.reconciling(named.clone(), 1, "bv-t-1".into(), 1);
    w.intent(accepted.clone(), Some(2), None).await.unwrap();
    w.running(accepted.clone(), Some(2), "req-2".into(), 1);
    w.flush().await.unwrap();
    assert_eq!(states(&j), [RowState::Running; 4]);

    w.revert(named, Some(1));
    w.flush().await.unwrap();
    let page = j.reader().unwrap().page(None, 10).unwrap();
    assert!(
        page[..2]
            .iter()
            .all(|r| r.state == RowState::Planned && r.batch_id.is_none() && !r.batch_open)
    );
    assert_eq!(j.open_batches().unwrap().len(), 1, "batch 1 is gone");

    w.revert(accepted, Some(2));
    let err = w.flush().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("batch 2 is uploaded and cannot be forgotten"),
        "{err}"
    );
    assert!(w.close().await.is_err());
    thread.join();
    assert_eq!(j.open_batches().unwrap()[0].request_id, "req-2");
}

/// A state written before the lifecycles had types, killed with calls in flight: the same
/// words on disk, read, recovered and moved on the same.
#[tokio::test]
async fn a_state_written_by_an_earlier_version_opens_and_resumes() {
    use RowState::*;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    drop(Journal::open(&state, &ID, false).unwrap());
    let conn = rusqlite::Connection::open(state.join(DB_FILE)).unwrap();
    conn.execute_batch(include_str!("../../fixtures/journal-v1.sql"))
        .unwrap();
    drop(conn);
    let mut j = Journal::open(&state, &ID, false).unwrap();
    assert_eq!(j.planned_rows().unwrap(), Some(9));
    assert_eq!(j.recover(false).unwrap(), (2, 0));
    assert_eq!(
        states(&j),
        [
            Done,
            Planned,
            Running,
            Unconfirmed,
            Duplicate,
            Running,
            Unconfirmed,
            Done,
            Running
        ]
    );
    let page = j.reader().unwrap().page(None, 10).unwrap();
    assert_eq!(page[5].request_id.as_deref(), Some("bv-0123-2"));
    assert!(page[5].batch_open, "the named upload is reconciled");
    assert_eq!(
        page[7].otp.as_ref().map(|o| o.phase),
        Some(OtpPhase::Awaiting)
    );
    let open = j.open_batches().unwrap();
    let open: Vec<_> = open.iter().map(|b| (b.batch_id, b.confirmed)).collect();
    assert_eq!(open, [(1, true), (2, false)]);

    let (w, thread) = j.writer().unwrap();
    w.done(RowKey(8), Outcome::new(Status::Verified), None);
    w.batch_closed(1, BatchState::Done);
    w.revert(vec![RowKey(5)], Some(2));
    w.close().await.unwrap();
    thread.join();
    assert_eq!(states(&j)[5], Planned, "the provider had no such name");
    assert!(j.open_batches().unwrap().is_empty());
    assert_eq!(j.recover(true).unwrap(), (0, 2), "held rows released");
    assert_eq!(states(&j)[3], Planned);
}

/// Rows keep their fields by number: each row's own fields come back, names never seen in a
/// row are not invented for it, and the columns are in the order the names first appear over
/// the rows in key order, whichever row was answered first. A journal made before numbering
/// (format 1) is read, and written, as it was.
#[tokio::test]
async fn fields_are_kept_by_number_and_named_fields_still_read() {
    let fields = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    for format in [fields::NUMBERED, fields::NAMED] {
        let state = dir.path().join(format);
        let mut j = Journal::open(&state, &ID, false).unwrap();
        if format == fields::NAMED {
            j.set_meta("format", format).unwrap();
        }
        let keys = row_keys(3);
        plan_subjects(&mut j, &keys);
        let (w, thread) = j.writer().unwrap();
        let answer = |pairs| Outcome::new(Status::Verified).with_fields(fields(pairs));
        // The last row is answered first, with a name the first row has too.
        w.done(keys[2], answer(&[("z", "3"), ("b", "2")]), None);
        w.done(keys[0], answer(&[("a", "1"), ("b", "x,\"y\"")]), None);
        w.done(keys[1], answer(&[]), None);
        w.close().await.unwrap();
        thread.join();
        // A row's fields come back by name; their order within it is the output's columns'.
        let export: Vec<_> = export(&j)
            .into_iter()
            .map(|r| {
                let mut named = named(&j, &r);
                named.sort();
                named
            })
            .collect();
        assert_eq!(export[0], fields(&[("a", "1"), ("b", "x,\"y\"")]));
        assert_eq!(export[1], fields(&[]));
        assert_eq!(export[2], fields(&[("b", "2"), ("z", "3")]));
        assert_eq!(j.field_names().unwrap(), ["a", "b", "z"], "format {format}");
        let stored: String = j
            .conn
            .query_row(
                "SELECT fields FROM rows WHERE row_key = ?1",
                [keys[0].0 as i64],
                |r| r.get(0),
            )
            .unwrap();
        if format == fields::NUMBERED {
            assert_eq!(stored, r#"[null,"x,\"y\"","1"]"#, "no name in the row");
        } else {
            assert_eq!(stored, r#"[["a","1"],["b","x,\"y\""]]"#);
        }
    }
}

/// A batch's intent and acceptance are the batch's alone: its rows' records are not written
/// until their outcome (what `status` counts puts them where the batch says), and a run that
/// dies first leaves what recovery needs: the accepted batch's rows are polled through it, the
/// rows of the upload that may have left are held.
#[tokio::test]
async fn a_batch_s_rows_are_written_once_with_their_outcome() {
    use RowState::*;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let keys = row_keys(6);
    {
        let mut j = Journal::open(&state, &ID, false).unwrap();
        plan_subjects(&mut j, &keys);
        let (w, thread) = j.writer().unwrap();
        w.intent(keys[..3].to_vec(), Some(1), None).await.unwrap();
        w.running(keys[..3].to_vec(), Some(1), "req-1".into(), 2);
        let own_id = Outcome::new(Status::Verified).with_request_id("row-0");
        w.done(keys[0], own_id, None);
        // Committed with everything sent before it.
        w.intent(keys[3..5].to_vec(), Some(2), None).await.unwrap();
        assert_eq!(
            states(&j),
            [Done, Planned, Planned, Planned, Planned, Planned],
            "only the row with an outcome was written"
        );
        let mut by_state: Vec<_> = j
            .outcome_groups()
            .unwrap()
            .iter()
            .map(|g| (g.state.as_sql(), g.rows))
            .collect();
        by_state.sort();
        assert_eq!(
            by_state,
            [("done", 1), ("planned", 1), ("running", 2), ("sending", 2)]
        );
        // The run dies: nothing more is written.
        drop(w);
        thread.join();
    }
    let mut j = Journal::open(&state, &ID, false).unwrap();
    assert_eq!(
        j.recover(false).unwrap(),
        (2, 0),
        "the second upload is held"
    );
    assert_eq!(
        states(&j),
        [Done, Running, Running, Unconfirmed, Unconfirmed, Planned]
    );
    let open = j.open_batches().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].rows, vec![(keys[1], hash(2)), (keys[2], hash(3))]);
    let export = export(&j);
    let ids: Vec<_> = export.iter().map(|r| r.request_id.as_deref()).collect();
    assert_eq!(
        ids,
        [
            Some("row-0"),
            Some("req-1"),
            Some("req-1"),
            None,
            None,
            None
        ]
    );
    let attempts: Vec<_> = export.iter().map(|r| r.attempts).collect();
    assert_eq!(
        attempts,
        [2, 2, 2, 0, 0, 0],
        "the accepted upload's attempts"
    );
}

/// A row that repeats one in a batch in flight is counted where its leader is, with the batch,
/// as it was when the leader's record moved with the batch.
#[tokio::test]
async fn a_batch_row_s_duplicates_are_counted_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
    let keys = row_keys(4);
    let rows: Vec<_> = [1, 2, 2, 2]
        .into_iter()
        .zip(&keys)
        .map(|(h, k)| (*k, RowPlan::Subject(hash(h))))
        .collect();
    plan(&mut j, &rows);
    let (w, thread) = j.writer().unwrap();
    w.intent(keys[..2].to_vec(), Some(1), None).await.unwrap();
    let groups: Vec<_> = j
        .outcome_groups()
        .unwrap()
        .iter()
        .map(|g| (g.state.as_sql(), g.rows, g.duplicates))
        .collect();
    assert_eq!(groups, [("sending", 4, 2)]);
    drop(w);
    thread.join();
}

/// The rows of a batch that take their outcome with its first rows read their time from the
/// batch, keeping none of their own; a row of it answered by a later run keeps its own.
#[tokio::test]
async fn a_batch_s_rows_answered_together_read_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let keys = row_keys(3);
    let stored =
        |j: &Journal| column::<Option<String>>(j, "SELECT checked_at FROM rows ORDER BY row_key");
    {
        let mut j = Journal::open(&state, &ID, false).unwrap();
        plan_subjects(&mut j, &keys);
        let (w, thread) = j.writer().unwrap();
        w.intent(keys.clone(), Some(1), None).await.unwrap();
        w.running(keys.clone(), Some(1), "req-1".into(), 1);
        w.done(keys[0], Outcome::new(Status::Verified), None);
        w.done(keys[1], Outcome::new(Status::Verified), None);
        let pending = Outcome::new(Status::Pending).with_reason(Reason::STILL_PROCESSING);
        w.done(keys[2], pending, None);
        w.close().await.unwrap();
        thread.join();
        let answered: String = j
            .conn
            .query_row("SELECT answered_at FROM batches", [], |r| r.get(0))
            .unwrap();
        let stored = stored(&j);
        assert_eq!(
            stored[0], None,
            "the first row answered has the batch's time"
        );
        for (row, own) in export(&j).iter().zip(&stored) {
            assert_eq!(
                row.checked_at.as_ref(),
                Some(own.as_ref().unwrap_or(&answered))
            );
        }
    }
    let mut j = Journal::open(&state, &ID, false).unwrap();
    j.recover(false).unwrap();
    assert_eq!(j.open_batches().unwrap()[0].rows.len(), 1);
    let (w, thread) = j.writer().unwrap();
    w.done(keys[2], Outcome::new(Status::Verified), None);
    w.close().await.unwrap();
    thread.join();
    assert!(stored(&j)[2].is_some(), "answered later: its own time");
    assert!(export(&j).iter().all(|r| r.checked_at.is_some()));
}

/// A journal of format 2 (its batches' rows written at every move, indexed by batch) opens as
/// format 3: the index is gone, its open batch is still polled through its rows, and a new
/// batch keeps its rows.
#[tokio::test]
async fn a_journal_of_format_2_takes_batches_that_keep_their_rows() {
    use RowState::*;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let keys = row_keys(4);
    {
        let mut j = Journal::open(&state, &ID, false).unwrap();
        plan_subjects(&mut j, &keys);
    }
    let conn = rusqlite::Connection::open(state.join(DB_FILE)).unwrap();
    conn.execute_batch(
        "ALTER TABLE batches DROP COLUMN members;
         ALTER TABLE batches DROP COLUMN rows_written;
         CREATE INDEX rows_batch ON rows(batch_id) WHERE batch_id IS NOT NULL;
         UPDATE meta SET value = '2' WHERE key = 'format';
         INSERT INTO batches (batch_id, state, request_id, attempts, created_at)
             VALUES (1, 'uploaded', 'req-1', 1, '2026-01-05T10:00:00Z');
         UPDATE rows SET state = 'running', batch_id = 1 WHERE row_key IN (0, 1);",
    )
    .unwrap();
    drop(conn);
    let mut j = Journal::open(&state, &ID, false).unwrap();
    assert_eq!(j.meta("format").unwrap().as_deref(), Some(schema::KEPT));
    let index: i64 = j
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'rows_batch'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 0);
    assert_eq!(j.recover(false).unwrap(), (0, 0));
    let open = j.open_batches().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].rows, vec![(keys[0], hash(1)), (keys[1], hash(2))]);

    let (w, thread) = j.writer().unwrap();
    w.intent(keys[2..].to_vec(), Some(2), None).await.unwrap();
    w.running(keys[2..].to_vec(), Some(2), "req-2".into(), 1);
    w.done(keys[0], Outcome::new(Status::Verified), None);
    w.flush().await.unwrap();
    assert_eq!(states(&j), [Done, Running, Running, Running]);
    w.close().await.unwrap();
    thread.join();
    let members: Option<Vec<u8>> = j
        .conn
        .query_row("SELECT members FROM batches WHERE batch_id = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(members.is_some());
    let open = j.open_batches().unwrap();
    let open: Vec<_> = open.iter().map(|b| (b.batch_id, b.rows.len())).collect();
    assert_eq!(open, [(1, 1), (2, 2)]);
}

/// A batch's rows read the batch's request id once it was accepted, and keep none of their
/// own: a row sent again in a new batch has the new batch's, a row whose upload never left
/// has none.
#[tokio::test]
async fn batch_rows_have_their_accepted_batch_s_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
    let keys = row_keys(3);
    plan_subjects(&mut j, &keys);
    let (w, thread) = j.writer().unwrap();
    w.intent(keys[..2].to_vec(), Some(1), Some("up-1".into()))
        .await
        .unwrap();
    w.running(keys[..2].to_vec(), Some(1), "req-1".into(), 1);
    // The first row's answer names the batch; the second's is an error with no id of its own.
    w.done(keys[0], Outcome::new(Status::Verified), None);
    let failed = Outcome::new(Status::Error).with_request_id("req-1");
    w.done(keys[1], failed, None);
    w.batch_closed(1, BatchState::Done);
    // The second row goes again in a batch that is accepted; the third in one whose upload
    // is only intended.
    w.intent(vec![keys[1]], Some(2), None).await.unwrap();
    w.running(vec![keys[1]], Some(2), "req-2".into(), 1);
    w.intent(vec![keys[2]], Some(3), Some("up-3".into()))
        .await
        .unwrap();
    w.close().await.unwrap();
    thread.join();
    let ids: Vec<_> = export(&j).into_iter().map(|r| r.request_id).collect();
    assert_eq!(ids, [Some("req-1".into()), Some("req-2".into()), None]);
    counts_as_read(&j);
    let own: Vec<Option<String>> = column(&j, "SELECT request_id FROM rows ORDER BY row_key");
    assert_eq!(own, [None, None, None], "no row keeps a copy");
}

/// A state made beside a results store hashes with the store's key, so that the store can
/// look its rows up; one made before, or with another store, keeps its own key and says so.
#[test]
fn a_state_made_with_a_store_hashes_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new");
    let j = Journal::open(&new, &ID, false).unwrap();
    let store = Some(("store-1", "k1"));
    assert_eq!(
        j.ident_scope_for("c", store).unwrap(),
        ("c\0k1".to_string(), true)
    );
    drop(j);
    let j = Journal::open(&new, &ID, false).unwrap();
    assert!(j.ident_scope_for("c", store).unwrap().1);
    let other = j.ident_scope_for("c", Some(("store-2", "k2"))).unwrap();
    assert_eq!(other, ("c\0k1".to_string(), false), "another store");

    let own = Journal::open(&dir.path().join("own"), &ID, false).unwrap();
    let scope = own.ident_scope("c").unwrap();
    assert_eq!(own.ident_scope_for("c", store).unwrap(), (scope, false));
}

/// Reused answers go to planned rows only, keep their time and say they were reused; the
/// answers the store is given are those the job obtained itself.
#[tokio::test]
async fn reused_rows_keep_their_answer_and_are_not_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("s"), &ID, false).unwrap();
    let keys = row_keys(4);
    plan_subjects(&mut j, &keys);
    let (w, thread) = j.writer().unwrap();
    w.intent(vec![keys[1]], None, None).await.unwrap();
    w.done(
        keys[1],
        Outcome::new(Status::Verified).with_fields(vec![("name".into(), "B".into())]),
        Some(1),
    );
    w.intent(vec![keys[3]], None, None).await.unwrap();
    w.done(keys[3], Outcome::new(Status::Error), Some(1));
    w.close().await.unwrap();
    thread.join();

    let unsent = j.unsent_idents(None).unwrap();
    assert_eq!(unsent, vec![(keys[0], hash(1)), (keys[2], hash(3))]);
    let answer = |key: RowKey| Answer {
        key,
        ident: hash(key.0 as u8 + 1),
        outcome: Outcome::new(Status::NotVerified)
            .with_request_id("jan-1")
            .with_fields(vec![("name".into(), "A".into())]),
        checked_at: "2026-01-05T00:00:00Z".into(),
    };
    assert_eq!(j.reuse(&[answer(keys[0]), answer(keys[1])]).unwrap(), 1);
    assert_eq!(j.unsent_idents(None).unwrap(), vec![(keys[2], hash(3))]);
    let rows = export(&j);
    assert!(rows[0].reused && !rows[1].reused);
    assert_eq!(rows[0].status, Some(Status::NotVerified));
    assert_eq!(rows[0].checked_at.as_deref(), Some("2026-01-05T00:00:00Z"));
    assert_eq!(rows[0].request_id.as_deref(), Some("jan-1"));
    assert_eq!(
        named(&j, &rows[0]),
        vec![("name".to_string(), "A".to_string())]
    );
    assert_eq!(
        named(&j, &rows[1]),
        vec![("name".to_string(), "B".to_string())]
    );

    let numbers = j.field_numbers().unwrap();
    assert_eq!(numbers, ["name"]);
    let given = j.obtained_answers(None, &numbers).unwrap();
    assert_eq!(
        given.len(),
        1,
        "the reused row and the error stay out: {given:?}"
    );
    let a = &given[0].answer;
    assert_eq!((a.key, a.ident), (keys[1], hash(2)));
    assert_eq!(a.outcome.status, Status::Verified);
    assert_eq!(given[0].values, r#"["B"]"#, "the row's own array");
    let renumbered = j
        .obtained_answers(None, &["ifsc".into(), "name".into()])
        .unwrap();
    assert_eq!(
        renumbered[0].values, r#"[null,"B"]"#,
        "by the store's numbers"
    );
    let without = j.obtained_answers(None, &["ifsc".into()]).unwrap();
    assert_eq!(
        without[0].values, "[]",
        "a name the store lacks is left out"
    );
    assert!(!j.answers_stored().unwrap());
    j.set_answers_stored(true).unwrap();
    assert!(j.answers_stored().unwrap());
}
