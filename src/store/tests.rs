//! The store's numbering, encoding and keeping of answers, and its journal modes.

use super::answer::{Times, encode};
use super::*;
use crate::outcome::{Outcome, Status};

fn answer(fields: &[(&str, &str)]) -> Answer {
    Answer {
        key: RowKey(7),
        ident: [3; 16],
        outcome: Outcome {
            status: Status::NeedsReview,
            reason: Some("name_mismatch".into()),
            message: None,
            provider_status: Some("SUCCESS".into()),
            request_id: Some("r1".into()),
            fields: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        },
        checked_at: "2026-12-01T02:00:00Z".into(),
    }
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// The answer's fields by the scope's numbers, as the journal hands them over.
fn values(a: &Answer, names: &[String]) -> String {
    let fields = a.outcome.fields.iter();
    crate::journal::values_by_number(fields.map(|(n, v)| (n.as_str(), v.as_str())), names)
}

/// Keeps `answers` as a job does: their names numbered, then each encoded and kept.
fn keep(store: &mut ResultsStore, answers: &[Answer]) {
    let mut all: Vec<String> = Vec::new();
    for (name, _) in answers.iter().flat_map(|a| &a.outcome.fields) {
        if !all.contains(name) {
            all.push(name.clone());
        }
    }
    let (scope, numbered) = store.numbered("acct", "check", &all).unwrap();
    let mut times = Times::default();
    let kept: Vec<Kept> = answers
        .iter()
        .map(|a| {
            let (obtained, with_time) = times.of(&a.checked_at).unwrap();
            Kept {
                ident: a.ident,
                obtained,
                text: encode(a, with_time, &values(a, &numbered)),
            }
        })
        .collect();
    store.keep(scope, &kept).unwrap();
}

/// Field names are numbered once per scope, in the order they are first seen: a later
/// job with other fields adds to them, and each answer reads back as it was.
#[test]
fn answers_keep_their_fields_by_number_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ResultsStore::open(dir.path()).unwrap();
    let first = answer(&[("name_at_bank", "RAVI"), ("account_exists", "true")]);
    let second = answer(&[("account_exists", "false"), ("ifsc", "HDFC0001234")]);
    // The first as the journal writes its time; the second with one of an older version's.
    let second = Answer {
        checked_at: "2026-12-01T07:30:00+05:30".into(),
        ..second
    };
    let at = |a: &Answer| Times::default().of(&a.checked_at).unwrap();
    let (scope, numbered) = store
        .numbered("acct", "check", &owned(&["name_at_bank", "account_exists"]))
        .unwrap();
    let a = encode(&first, at(&first).1, &values(&first, &numbered));
    let (again, names) = store
        .numbered("acct", "check", &owned(&["account_exists", "ifsc"]))
        .unwrap();
    assert_eq!(again, scope);
    let b = encode(&second, at(&second).1, &values(&second, &names));
    assert_eq!(names, ["name_at_bank", "account_exists", "ifsc"]);
    assert!(
        !a.contains("name_at_bank") && !b.contains("ifsc"),
        "{a} {b}"
    );
    assert!(
        !a.contains("2026"),
        "the time is the row's obtained_at: {a}"
    );
    assert!(b.contains("+05:30"), "{b}");
    for (text, original) in [(a, first), (b, second)] {
        let back = decode(&text, at(&original).0, &names, RowKey(9), [5; 16]).unwrap();
        assert_eq!((back.key, back.ident), (RowKey(9), [5; 16]));
        assert_eq!(back.checked_at, original.checked_at);
        let mut want = original.outcome.fields.clone();
        let mut got = back.outcome.fields.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(
            (
                back.outcome.status,
                back.outcome.reason,
                back.outcome.request_id
            ),
            (
                Status::NeedsReview,
                original.outcome.reason,
                original.outcome.request_id
            )
        );
    }
    let pending = encode(
        &Answer {
            outcome: Outcome::new(Status::Pending),
            ..answer(&[])
        },
        false,
        "[]",
    );
    assert!(
        decode(&pending, 0, &names, RowKey(1), [0; 16]).is_none(),
        "never reused"
    );
}

/// Answers go in many to a statement and the rest one at a time; either way a newer answer
/// for an identifier replaces an older one, never the other way, even within a statement.
#[test]
fn many_answers_at_once_keep_the_newest_of_each() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ResultsStore::open(dir.path()).unwrap();
    let (scope, _) = store.numbered("acct", "check", &[]).unwrap();
    let kept = |i: u8, obtained: i64| Kept {
        ident: [i; 16],
        obtained,
        text: format!("[{obtained}]"),
    };
    let n = 2 * KEEP_AT_ONCE as u8 + 6;
    store
        .keep(scope, &(0..n).map(|i| kept(i, 100)).collect::<Vec<_>>())
        .unwrap();
    let mut second: Vec<Kept> = (0..n)
        .map(|i| kept(i, if i % 2 == 0 { 200 } else { 50 }))
        .collect();
    second.insert(1, kept(0, 300));
    store.keep(scope, &second).unwrap();
    let read: Vec<(Vec<u8>, i64, String)> = store
        .conn
        .prepare("SELECT ident, obtained_at, answer FROM results ORDER BY ident")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(read.len(), usize::from(n));
    for (ident, at, text) in read {
        let want = match ident[0] {
            0 => 300,
            i if i % 2 == 0 => 200,
            _ => 100,
        };
        assert_eq!((at, text), (want, format!("[{want}]")), "{ident:?}");
    }
}

/// A job's answers go in place when the store is its alone, through the WAL while another
/// job holds it open; either way the store is back in WAL after, and whole.
#[test]
fn answers_go_in_place_only_on_a_store_no_other_job_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mode = |store: &ResultsStore| {
        store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .unwrap()
    };
    let mut store = ResultsStore::open(dir.path()).unwrap();
    let other = ResultsStore::open(dir.path()).unwrap();
    store.journal(JournalMode::Rollback).unwrap();
    assert_eq!(mode(&store), "wal", "another job holds the store open");
    keep(&mut store, &[answer(&[("name", "RAVI")])]);
    store.journal(JournalMode::Wal).unwrap();
    drop(other);

    let second = Answer {
        ident: [4; 16],
        ..answer(&[("name", "ASHA")])
    };
    store.journal(JournalMode::Rollback).unwrap();
    assert_eq!(mode(&store), "delete");
    keep(&mut store, &[second]);
    store.journal(JournalMode::Wal).unwrap();
    assert_eq!(mode(&store), "wal");

    let reader = ResultsStore::open(dir.path()).unwrap();
    let found = reader
        .lookup(
            "acct",
            "check",
            0,
            &[(RowKey(1), [3; 16]), (RowKey(2), [4; 16])],
        )
        .unwrap();
    let names: Vec<_> = found
        .iter()
        .map(|a| (a.key, a.outcome.fields.clone(), a.checked_at.clone()))
        .collect();
    let field = |v: &str| vec![("name".to_string(), v.to_string())];
    let at = "2026-12-01T02:00:00Z".to_string();
    assert_eq!(
        names,
        [
            (RowKey(1), field("RAVI"), at.clone()),
            (RowKey(2), field("ASHA"), at)
        ]
    );
}
