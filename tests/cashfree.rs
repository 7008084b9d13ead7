//! The Cashfree checks end to end against the sandbox: every documented status and error of
//! each check yields its documented outcome, bulk requests are never accepted twice, and a
//! bulk upload whose answer was lost is sent again under the same name and reconciled.

mod common;

use std::collections::BTreeMap;

use common::*;

const JOB_ARGS: &[&str] = &["--config", "bulkverify.toml", "-o", "out.csv", "in.csv"];

const CONFIG: &str = "[providers.cashfree]\nconcurrency = 4\nmax_attempts = 3\n\n\
    [checks.cashfree-bank-bulk]\nchunk_size = 5\npoll_initial_secs = 0.3\npoll_max_secs = 0.5\n\
    poll_deadline_secs = 4\n\n\
    [checks.cashfree-pan-bulk]\nchunk_size = 4\npoll_initial_secs = 0.3\npoll_max_secs = 0.5\n\
    poll_deadline_secs = 4\n";

/// Runs `check` over the fixture `file` and checks each row's status and reason.
fn run_fixture(
    sandbox: &Sandbox,
    check: &str,
    file: &str,
    exit: i32,
    expected: &[(&str, &str, &str)],
) -> (Job, BTreeMap<String, BTreeMap<String, String>>) {
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let fixture = std::fs::read(package_dir().join("fixtures").join(file)).unwrap();
    job.write("in.csv", &fixture);
    let o = output(job.run(sandbox, check, JOB_ARGS));
    assert_eq!(code(&o), exit, "{}", stderr(&o));
    let rows = rows_by_id(&job);
    assert_eq!(rows.len(), expected.len(), "every row comes back");
    for (id, status, reason) in expected {
        let row = &rows[*id];
        assert_eq!(
            (row["bv_status"].as_str(), row["bv_reason"].as_str()),
            (*status, *reason),
            "{id}: {row:?}"
        );
    }
    (job, rows)
}

#[test]
fn every_digilocker_status_has_its_outcome() {
    let sandbox = Sandbox::quick(&[]);
    let (_, rows) = run_fixture(
        &sandbox,
        "cashfree-digilocker",
        "digilocker.csv",
        75,
        &[
            ("C-1001", "verified", ""),
            ("C-1002", "verified", ""),
            ("C-1003", "pending", "consent_pending"),
            ("C-1004", "not_verified", "expired"),
            ("C-1005", "not_verified", "consent_denied"),
            ("C-1006", "not_verified", "verification_id_value_invalid"),
            ("C-1007", "invalid_input", "verification_id_format"),
            ("C-1008", "invalid_input", "missing_value"),
            ("C-1009", "verified", ""),
        ],
    );
    let ok = &rows["C-1001"];
    assert!(!ok["bv_name"].is_empty(), "{ok:?}");
    assert_eq!(ok["bv_provider_status"], "AUTHENTICATED");
    assert!(!ok["bv_reference_id"].is_empty());
    assert_eq!(rows["C-1003"]["bv_name"], "", "no details before consent");
    assert_eq!(rows["C-1009"]["bv_duplicate_of"], "row 1");
    // One lookup per distinct id (the sandbox counts those it answered 200): the duplicate
    // and the invalid rows cost nothing.
    let lookups = sandbox.stats()["digilocker_lookups"].clone();
    let lookups = lookups.as_object().unwrap();
    assert_eq!(lookups.len(), 5, "{lookups:?}");
    assert!(
        lookups.values().all(|n| n.as_u64() == Some(1)),
        "{lookups:?}"
    );
}

#[test]
fn a_pending_digilocker_row_is_looked_up_again_by_the_next_run() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    job.write("in.csv", "id,verification_id\n1,pending-1\n2,LINK-2\n");
    for _ in 0..2 {
        let o = output(job.run(&sandbox, "cashfree-digilocker", JOB_ARGS));
        assert_eq!(code(&o), 75, "{}", stderr(&o));
    }
    let calls = sandbox.stats()["digilocker_lookups"].clone();
    assert_eq!(calls["pending-1"], 2, "{calls}");
    assert_eq!(
        calls["LINK-2"], 1,
        "a final row is never looked up again: {calls}"
    );
}

#[test]
fn every_bank_entry_status_has_its_outcome_and_no_entry_is_sent_twice() {
    let sandbox = Sandbox::quick(&[]);
    let expected = [
        ("L-501", "verified", ""),
        ("L-502", "verified", ""),
        ("L-503", "not_verified", "invalid_account_fail"),
        ("L-504", "not_verified", "account_blocked"),
        ("L-505", "error", "imps_mode_fail"),
        ("L-506", "not_verified", "nre_account_fail"),
        ("L-507", "not_verified", "invalid_ifsc_fail"),
        ("L-508", "needs_review", "poor_partial_match"),
        ("L-509", "needs_review", "no_match"),
        ("L-510", "verified", ""),
        ("L-511", "invalid_input", "bank_account_format"),
        ("L-512", "invalid_input", "ifsc_format"),
        ("L-513", "verified", ""),
    ];
    let (job, rows) = run_fixture(&sandbox, "cashfree-bank-bulk", "bank.csv", 75, &expected);
    assert_eq!(rows["L-501"]["bv_name_at_bank"], "RAVI KUMAR");
    assert_eq!(rows["L-510"]["bv_name_match_result"], "GOOD_PARTIAL_MATCH");
    assert!(rows["L-501"]["bv_request_id"].starts_with("bv-"));
    // The same command again: only the FAILED entry is sent again, in a new bulk request.
    let o = output(job.run(&sandbox, "cashfree-bank-bulk", JOB_ARGS));
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    let stats = sandbox.stats();
    let entries = stats["bank_account_submissions"]
        .as_object()
        .unwrap()
        .clone();
    for (account, n) in &entries {
        let expected = if account.starts_with("123456782222") {
            2
        } else {
            1
        };
        assert_eq!(n.as_u64(), Some(expected), "{account}: {entries:?}");
    }
    assert_eq!(entries.len(), 11, "{entries:?}");
    let bulks = stats["bank_bulk_submissions"].as_object().unwrap().clone();
    assert!(bulks.values().all(|n| n.as_u64() == Some(1)), "{bulks:?}");
}

#[test]
fn every_pan_status_has_its_outcome() {
    let sandbox = Sandbox::quick(&[]);
    let (_, rows) = run_fixture(
        &sandbox,
        "cashfree-pan-bulk",
        "pan.csv",
        0,
        &[
            ("A-1", "verified", ""),
            ("A-2", "verified", ""),
            ("A-3", "not_verified", "pan_invalid"),
            ("A-4", "not_verified", "pan_deleted"),
            ("A-5", "not_verified", "pan_deactivated"),
            ("A-6", "verified", ""),
            ("A-7", "needs_review", "poor_partial_match"),
            ("A-8", "invalid_input", "pan_serial"),
            ("A-9", "invalid_input", "pan_holder_type"),
            ("A-10", "invalid_input", "pan_format"),
        ],
    );
    assert_eq!(rows["A-1"]["bv_registered_name"], "RAVI KUMAR");
    assert_eq!(rows["A-2"]["bv_pan_status"], "VALID");
}

#[test]
fn a_lost_bulk_answer_is_sent_again_under_the_same_name_and_never_accepted_twice() {
    // Half the answers are dropped after the sandbox processed the request.
    let sandbox = Sandbox::quick(&["--reset-share", "0.5", "--seed", "lost-answers"]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let mut input = String::from("id,bank_account,ifsc,name\n");
    for i in 0..80 {
        input.push_str(&format!("{i},5{i:08}7,SBIN0005943,Holder {i}\n"));
    }
    job.write("in.csv", &input);
    let (mut runs, mut summaries) = (0, String::new());
    loop {
        runs += 1;
        let o = output(job.run(&sandbox, "cashfree-bank-bulk", JOB_ARGS));
        summaries.push_str(&stderr(&o));
        let rows = rows_by_id(&job);
        assert_eq!(rows.len(), 80);
        if code(&o) == 0 {
            let statuses: BTreeMap<&str, &str> = rows
                .iter()
                .map(|(id, r)| (id.as_str(), r["bv_status"].as_str()))
                .collect();
            assert!(statuses.values().all(|s| *s == "verified"), "{statuses:?}");
            break;
        }
        assert!(runs < 8, "no end after {runs} runs: {}", stderr(&o));
    }
    let stats = sandbox.stats();
    let entries = stats["bank_account_submissions"]
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(entries.len(), 80);
    assert!(
        entries.values().all(|n| n.as_u64() == Some(1)),
        "an entry was accepted twice: {entries:?}"
    );
    // 16 uploads, each answer dropped with even odds: some were sent again under their name.
    assert!(
        summaries.contains("uploads sent again under the same name"),
        "{summaries}"
    );
}

#[test]
fn a_bulk_answered_5xx_is_asked_for_by_name_and_sent_again_only_once_unknown() {
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    job.write("in.csv", "id,pan\n1,ABCPE1234F\n2,ABCPE1235F\n");
    // Every call is answered 503: the upload may have been taken before the gateway failed.
    let failing = Sandbox::quick(&["--error-share", "1"]);
    let o = output(job.run(&failing, "cashfree-pan-bulk", JOB_ARGS));
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    assert!(rows_by_id(&job).values().all(|r| r["bv_status"] == "error"));
    assert!(
        stderr(&o).contains("asked for by the upload's name"),
        "{}",
        stderr(&o)
    );
    let port = failing.port();
    drop(failing);
    // The provider back, with no bulk under that name: it took nothing, so the rows are sent
    // again.
    let sandbox = Sandbox::start_on(port, &quick_flags(&[]));
    let o = output(job.run(&sandbox, "cashfree-pan-bulk", JOB_ARGS));
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    assert!(
        rows_by_id(&job)
            .values()
            .all(|r| r["bv_reason"] == "not_accepted")
    );
    let o = output(job.run(&sandbox, "cashfree-pan-bulk", JOB_ARGS));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        rows_by_id(&job)
            .values()
            .all(|r| r["bv_status"] == "verified")
    );
    let sent = sandbox.stats()["pan_submissions"].clone();
    assert_eq!(sent["ABCPE1234F"], 1, "{sent}");
    assert_eq!(sent["ABCPE1235F"], 1, "{sent}");
}

#[test]
fn answers_that_end_the_run_say_what_to_do_and_never_show_the_secret() {
    let sandbox = Sandbox::quick(&[]);
    for (id, words) in [("ipblocked-1", "allow-list"), ("nobalance-1", "top it up")] {
        let job = Job::new();
        job.write("bulkverify.toml", CONFIG);
        job.write("in.csv", format!("id,verification_id\n1,{id}\n"));
        let o = output(job.run(&sandbox, "cashfree-digilocker", JOB_ARGS));
        let err = stderr(&o);
        assert_eq!(code(&o), 1, "{err}");
        assert!(err.contains(words), "{err}");
        assert!(!err.contains("sandbox_cf_secret"), "{err}");
    }
}
