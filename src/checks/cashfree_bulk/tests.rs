use super::*;

fn bulk(kind: Kind) -> CashfreeBulk {
    CashfreeBulk::new(kind, &ConfigFile::default(), &CheckConfig::default()).unwrap()
}

fn done(step: BatchStep) -> Vec<(String, Outcome)> {
    match step {
        BatchStep::Done(v) => v
            .into_iter()
            .map(|(m, o)| match m {
                Match::Ident(i) => (i, o),
                Match::Row(_) => panic!("matched by identifier"),
            })
            .collect(),
        other => panic!("not done: {other:?}"),
    }
}

#[test]
fn bank_rows_go_out_normalised_and_come_back_by_identifier() {
    let b = bulk(Kind::Bank);
    let s = b
        .subject(&[
            " 026291800001191 ",
            "ybes0000001",
            "  john   doe ",
            "+91 98765 43210",
        ])
        .unwrap();
    assert_eq!(s.ident, "026291800001191|YBES0000001|JOHN DOE|9876543210");
    let body = request_body(Kind::Bank, &[(RowKey(1), s.clone())], "bv-x-1");
    assert_eq!(body["bulk_verification_id"], "bv-x-1");
    assert_eq!(body["entries"][0]["phone"], "9876543210");
    let answer = Answer::sample(
        200,
        r#"{"bulk_reference_id":1,"bulk_verification_id":"bv-x-1","entries":[
          {"bank_account":"026291800001191","ifsc":"YBES0000001","name":"John Doe","phone":"9876543210",
           "reference_id":7,"name_at_bank":"JOHN DOE","bank_name":"YES BANK","utr":"U1","city":"X",
           "branch":"Y","micr":0,"name_match_score":"90.00","name_match_result":"DIRECT_MATCH",
           "account_status":"VALID","account_status_code":"ACCOUNT_IS_VALID"}]}"#,
    );
    let rows = done(read_status(Kind::Bank, &answer, "bv-x-1").unwrap());
    assert_eq!(rows[0].0, s.ident);
    assert_eq!(rows[0].1.status, Status::Verified);
    assert!(
        rows[0]
            .1
            .fields
            .contains(&("name_at_bank".into(), "JOHN DOE".into()))
    );
    assert!(!rows[0].1.fields.iter().any(|(k, _)| k == "bank_account"));
}

#[test]
fn bank_statuses() {
    let entry = |status: &str, code: &str, matched: &str| {
        Answer::sample(
            200,
            &format!(
                r#"{{"entries":[{{"bank_account":"123456789","ifsc":"SBIN0000001","account_status":"{status}",
                "account_status_code":"{code}","name_match_result":"{matched}"}}]}}"#
            ),
        )
    };
    let one = |a: Answer| done(read_status(Kind::Bank, &a, "b").unwrap()).remove(0).1;
    let o = one(entry("INVALID", "INVALID_IFSC_FAIL", ""));
    assert_eq!(
        (o.status, o.reason.as_deref()),
        (Status::NotVerified, Some("invalid_ifsc_fail"))
    );
    for weak in ["POOR_PARTIAL_MATCH", "NO_MATCH"] {
        assert_eq!(
            one(entry("VALID", "ACCOUNT_IS_VALID", weak)).status,
            Status::NeedsReview
        );
    }
    assert_eq!(
        one(entry("VALID", "", "MODERATE_PARTIAL_MATCH")).status,
        Status::Verified
    );
    assert_eq!(one(entry("FAILED", "", "")).status, Status::Error);
    assert_eq!(
        one(entry("REJECTED", "", "")).reason.as_deref(),
        Some("rejected")
    );
    for running in ["RECEIVED", "IN_PROCESS", "PROCESSING", "APPROVAL_PENDING"] {
        assert!(matches!(
            read_status(Kind::Bank, &entry(running, "", ""), "b").unwrap(),
            BatchStep::Running
        ));
    }
    assert!(matches!(
        read_status(Kind::Bank, &Answer::sample(404, r#"{"code":"x"}"#), "b").unwrap(),
        BatchStep::Lost(_)
    ));
}

#[test]
fn pan_answers() {
    let p = bulk(Kind::Pan);
    let s = p.subject(&["abcpe1234f", "Ravi Kumar"]).unwrap();
    assert_eq!(s.ident, "ABCPE1234F|RAVI KUMAR");
    let processing = Answer::sample(
        200,
        r#"{"message":"File is being processed. Try again after some time.","entries":[]}"#,
    );
    assert!(matches!(
        read_status(Kind::Pan, &processing, "p").unwrap(),
        BatchStep::Running
    ));
    let entry = |status: &str, matched: &str| {
        Answer::sample(
            200,
            &format!(
                r#"{{"reference_id":612,"count":1,"entries":[{{"pan":"ABCPE1234F","type":"Individual",
                "reference_id":9,"name_provided":"Ravi Kumar","registered_name":"RAVI KUMAR","valid":true,
                "message":"PAN verified successfully","name_match_score":"100.00",
                "name_match_result":"{matched}","aadhaar_seeding_status":"Y","pan_status":"{status}"}}]}}"#
            ),
        )
    };
    let one = |a: Answer| done(read_status(Kind::Pan, &a, "p").unwrap()).remove(0);
    let (ident, ok) = one(entry("VALID", "DIRECT_MATCH"));
    assert_eq!(ident, s.ident);
    assert_eq!(ok.status, Status::Verified);
    assert!(
        ok.fields
            .contains(&("registered_name".into(), "RAVI KUMAR".into()))
    );
    assert_eq!(
        one(entry("VALID", "NO_MATCH")).1.status,
        Status::NeedsReview
    );
    for (status, reason) in [
        ("INVALID", "pan_invalid"),
        ("DELETED", "pan_deleted"),
        ("DEACTIVATED", "pan_deactivated"),
    ] {
        let o = one(entry(status, "")).1;
        assert_eq!(
            (o.status, o.reason.as_deref()),
            (Status::NotVerified, Some(reason))
        );
    }
}

#[test]
fn uploads() {
    let ok = read_upload(&Answer::sample(200, r#"{"reference_id":612}"#), "x", "n").unwrap();
    assert!(matches!(ok, Uploaded::Accepted(n) if n == "n"));
    let again = read_upload(&Answer::sample(409, r#"{"code":"id_exists"}"#), "x", "n").unwrap();
    assert!(
        matches!(again, Uploaded::Accepted(n) if n == "n"),
        "a 409 is already accepted"
    );
    let refused = read_upload(
        &Answer::sample(
            400,
            r#"{"type":"validation_error","code":"entries_invalid","message":"m"}"#,
        ),
        "x",
        "n",
    )
    .unwrap();
    assert!(
        matches!(refused, Uploaded::Refused(o) if o.reason.as_deref() == Some("batch_refused_entries_invalid"))
    );
    assert!(
        read_upload(
            &Answer::sample(422, r#"{"code":"insufficient_balance"}"#),
            "x",
            "n"
        )
        .is_err()
    );
}
