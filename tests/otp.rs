//! The two-step OTP checks end to end against the sandbox: the first run sends the OTPs, the ops
//! team fills the `otp` column of the same input, the same command verifies. Every documented
//! status and error of Attestr and Equal yields its documented outcome; an expired OTP is never
//! sent; three wrong OTPs end a request; a wrong OTP is never sent twice; and no full Aadhaar
//! number is written anywhere but the output's own input column.

mod common;

use std::collections::BTreeMap;

use common::*;

const JOB_ARGS: &[&str] = &["--config", "bulkverify.toml", "-o", "out.csv", "in.csv"];

const CONFIG: &str = "[providers.attestr]\nconcurrency = 4\nmax_attempts = 2\n\n\
    [providers.equal]\nconcurrency = 4\nmax_attempts = 2\n\n\
    [checks.equal-aadhaar-otp]\npoll_initial_secs = 0.2\npoll_max_secs = 0.3\n\
    poll_deadline_secs = 10\n";

type Rows = BTreeMap<String, BTreeMap<String, String>>;

/// Writes `input` and runs `check` on it; asserts the exit code and returns the rows.
fn run(job: &Job, sandbox: &Sandbox, check: &str, input: &str, exit: i32) -> Rows {
    job.write("in.csv", input);
    let o = output(job.run(sandbox, check, JOB_ARGS));
    assert_eq!(code(&o), exit, "{}", stderr(&o));
    rows_by_id(job)
}

fn outcome(rows: &Rows, id: &str) -> (String, String) {
    let r = &rows[id];
    (r["bv_status"].clone(), r["bv_reason"].clone())
}

fn expect(rows: &Rows, expected: &[(&str, &str, &str)]) {
    for (id, status, reason) in expected {
        assert_eq!(
            outcome(rows, id),
            (status.to_string(), reason.to_string()),
            "{id}: {:?}",
            rows[*id]
        );
    }
}

fn count(sandbox: &Sandbox, stat: &str, id: &str) -> u64 {
    sandbox.stats()[stat][id].as_u64().unwrap_or(0)
}

const ATTESTR_ROWS: &[(&str, &str, &str)] = &[
    ("A1", "UDYAM-MH-01-0000011", "9876543210"),
    ("A2", "UDYAM-MH-01-8000001", "9876543210"),
    ("A3", "UDYAM-MH-01-0000013", "6000000000"),
    ("A4", "UDYAM-MH-01-8000002", "9876543210"),
    ("A5", "UDYAM-MH-01-0000015", "9876543210"),
    ("A6", "UDYAM-MH-01-8004001", "9876543210"),
    ("A7", "UDYAM-MH-01-8005001", "9876543210"),
    ("A8", "UDYAM-MH-1-0000018", "9876543210"),
    ("A9", "udyam-mh-01-0000011", "+91 98765 43210"),
    ("A10", "UDYAM-MH-01-0000017", "9876543210"),
];

/// The Attestr input, with the OTP cells given by row id (no `otp` column when `otps` is None).
fn attestr_input(otps: Option<&[(&str, &str)]>) -> String {
    let mut s = String::from(if otps.is_some() {
        "id,reg,mobile,otp\n"
    } else {
        "id,reg,mobile\n"
    });
    for (id, reg, mobile) in ATTESTR_ROWS {
        s.push_str(&format!("{id},{reg},{mobile}"));
        if let Some(otps) = otps {
            let otp = otps.iter().find(|(i, _)| i == id).map_or("", |(_, o)| o);
            s.push_str(&format!(",{otp}"));
        }
        s.push('\n');
    }
    s
}

#[test]
fn attestr_sends_otps_then_verifies_what_the_ops_team_filled_in() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let step = |otps: Option<&[(&str, &str)]>, exit| {
        run(
            &job,
            &sandbox,
            "attestr-udyam-otp",
            &attestr_input(otps),
            exit,
        )
    };

    // Run 1: the export as it is, without an otp column.
    let rows = step(None, 75);
    expect(
        &rows,
        &[
            ("A1", "pending", "otp_sent"),
            ("A2", "not_verified", "reg_or_mobile_invalid"),
            ("A3", "not_verified", "reg_or_mobile_invalid"),
            ("A4", "pending", "otp_sent"),
            ("A5", "pending", "otp_sent"),
            ("A6", "not_verified", "malformed_request"),
            ("A7", "error", "http_500"),
            ("A8", "invalid_input", "udyam_format"),
            ("A9", "pending", "otp_sent"),
            ("A10", "pending", "otp_sent"),
        ],
    );
    assert!(!rows["A1"]["bv_request_id"].is_empty());
    assert!(rows["A1"]["bv_otp_expires_at"].ends_with('Z'));
    assert_eq!(rows["A9"]["bv_duplicate_of"], "row 1");
    assert_eq!(
        count(&sandbox, "udyam_otp_requests", "UDYAM-MH-01-0000011"),
        1
    );

    // Run 2: the ops team added the otp column and filled what the owners read out.
    let filled = [("A1", "123456"), ("A4", "123456"), ("A5", "111111")];
    let rows = step(Some(&filled), 75);
    expect(
        &rows,
        &[
            ("A1", "verified", ""),
            ("A4", "pending", "request_archived"),
            ("A5", "pending", "otp_invalid"),
            ("A10", "pending", "otp_sent"),
            ("A9", "verified", ""),
        ],
    );
    let a1 = &rows["A1"];
    for column in [
        "bv_entity",
        "bv_owner_details_owner",
        "bv_owner_details_pan",
        "bv_bank_details_account_number",
        "bv_employment_details_total",
        "bv_financial_details_2022_23_gross_turnover",
        "bv_financial_details_2023_24_itr_type",
        "bv_unit_details_1_unit_name",
        "bv_official_address_city",
        "bv_nic_codes_1_digit2",
        "bv_dic",
    ] {
        assert!(!a1[column].is_empty(), "{column}: {a1:?}");
    }
    assert!(rows["A4"]["bv_message"].contains("clear the otp cell"));
    // A10 still waits for its OTP: no second OTP went to its owner.
    assert_eq!(
        count(&sandbox, "udyam_otp_requests", "UDYAM-MH-01-0000017"),
        1
    );

    // Run 3, the same file: the wrong OTP is not spent again, nothing final is sent again.
    let rows = step(Some(&filled), 75);
    expect(
        &rows,
        &[
            ("A5", "pending", "otp_already_tried"),
            ("A1", "verified", ""),
        ],
    );
    assert_eq!(
        count(&sandbox, "udyam_otp_verifications", "UDYAM-MH-01-0000015"),
        1
    );
    assert_eq!(
        count(&sandbox, "udyam_otp_verifications", "UDYAM-MH-01-0000011"),
        1
    );

    // Run 4: the right OTP for A5.
    let filled = [("A1", "123456"), ("A4", "123456"), ("A5", "123456")];
    let rows = step(Some(&filled), 75);
    expect(&rows, &[("A5", "verified", "")]);
    assert_eq!(
        count(&sandbox, "udyam_otp_requests", "UDYAM-MH-01-0000015"),
        1
    );

    // Any other edit of the input is refused: old outcomes never go to other rows.
    job.write(
        "in.csv",
        attestr_input(Some(&filled)).replace("0000017", "0000019"),
    );
    let o = output(job.run(&sandbox, "attestr-udyam-otp", JOB_ARGS));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("changed since"), "{}", stderr(&o));
}

#[test]
fn three_wrong_otps_end_the_request_and_a_cleared_cell_asks_for_a_new_one() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let reg = "UDYAM-KA-02-0000021";
    let input = |otp: &str| format!("id,reg,mobile,otp\nB1,{reg},9876543210,{otp}\n");
    let rows = run(&job, &sandbox, "attestr-udyam-otp", &input(""), 75);
    expect(&rows, &[("B1", "pending", "otp_sent")]);
    for wrong in ["111111", "222222"] {
        let rows = run(&job, &sandbox, "attestr-udyam-otp", &input(wrong), 75);
        expect(&rows, &[("B1", "pending", "otp_invalid")]);
    }
    let rows = run(&job, &sandbox, "attestr-udyam-otp", &input("333333"), 75);
    expect(&rows, &[("B1", "pending", "otp_attempts_exceeded")]);
    // The request is over: even the right OTP is not sent on it.
    let rows = run(&job, &sandbox, "attestr-udyam-otp", &input("123456"), 75);
    expect(&rows, &[("B1", "pending", "otp_attempts_exceeded")]);
    assert_eq!(count(&sandbox, "udyam_otp_verifications", reg), 3);
    assert_eq!(count(&sandbox, "udyam_otp_requests", reg), 1);
    // The cell cleared: a new OTP goes out, and its OTP verifies.
    let rows = run(&job, &sandbox, "attestr-udyam-otp", &input(""), 75);
    expect(&rows, &[("B1", "pending", "otp_sent")]);
    assert_eq!(count(&sandbox, "udyam_otp_requests", reg), 2);
    let rows = run(&job, &sandbox, "attestr-udyam-otp", &input("123456"), 0);
    expect(&rows, &[("B1", "verified", "")]);
}

#[test]
fn an_expired_otp_is_not_sent_and_the_provider_s_expiry_is_read() {
    let sandbox = Sandbox::quick(&["--otp-ttl-secs", "1"]);
    let reg = "UDYAM-DL-03-0000031";
    let input = |otp: &str| format!("id,reg,mobile,otp\nC1,{reg},9876543210,{otp}\n");

    // Our clock says expired: nothing is sent.
    let job = Job::new();
    job.write(
        "bulkverify.toml",
        format!("{CONFIG}\n[checks.attestr-udyam-otp]\notp_valid_secs = 1\n"),
    );
    run(&job, &sandbox, "attestr-udyam-otp", &input(""), 75);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let rows = run(&job, &sandbox, "attestr-udyam-otp", &input("123456"), 75);
    expect(&rows, &[("C1", "pending", "otp_expired")]);
    assert!(rows["C1"]["bv_message"].contains("clear the otp cell"));
    assert_eq!(count(&sandbox, "udyam_otp_verifications", reg), 0);

    // Our clock says valid, the provider says expired: REQUEST_EXPIRED is read as expired.
    let reg2 = "UDYAM-DL-03-0000033";
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let input2 = |otp: &str| format!("id,reg,mobile,otp\nC2,{reg2},9876543210,{otp}\n");
    run(&job, &sandbox, "attestr-udyam-otp", &input2(""), 75);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let rows = run(&job, &sandbox, "attestr-udyam-otp", &input2("123456"), 75);
    expect(&rows, &[("C2", "pending", "otp_expired")]);
    assert_eq!(rows["C2"]["bv_provider_status"], "REQUEST_EXPIRED");
    // Still filled: not sent again. Cleared: a new OTP.
    run(&job, &sandbox, "attestr-udyam-otp", &input2("123456"), 75);
    assert_eq!(count(&sandbox, "udyam_otp_verifications", reg2), 1);
    let rows = run(&job, &sandbox, "attestr-udyam-otp", &input2(""), 75);
    expect(&rows, &[("C2", "pending", "otp_sent")]);
    assert_eq!(count(&sandbox, "udyam_otp_requests", reg2), 2);
}

#[test]
fn attestr_refusals_stop_the_run_with_what_to_do_and_daily_limits_leave_rows_pending() {
    let sandbox = Sandbox::quick(&[]);
    for (serial, says) in [
        ("8004005", "credits are low"),
        ("8004016", "ATTESTR_AUTH_TOKEN"),
        ("8004031", "may use this API"),
        ("8004035", "not provisioned"),
        ("8004039", "allow-list"),
    ] {
        let job = Job::new();
        job.write("bulkverify.toml", CONFIG);
        job.write(
            "in.csv",
            format!("id,reg,mobile\nD1,UDYAM-MH-01-{serial},9876543210\n"),
        );
        let o = output(job.run(&sandbox, "attestr-udyam-otp", JOB_ARGS));
        let err = stderr(&o);
        assert_eq!(code(&o), 1, "{serial}: {err}");
        assert!(err.contains(says), "{serial}: {err}");
        assert!(
            !err.contains(ATTESTR_TOKEN),
            "the token is never printed: {err}"
        );
    }

    // 4293: the day's quota is spent; the rows not sent wait for tomorrow's run.
    let sandbox = Sandbox::quick(&["--per-day", "2"]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let input = "id,reg,mobile\nE1,UDYAM-MH-01-0000041,9876543210\n\
                 E2,UDYAM-MH-01-0000042,9876543210\nE3,UDYAM-MH-01-0000043,9876543210\n";
    let rows = run(&job, &sandbox, "attestr-udyam-otp", input, 75);
    let exhausted = rows
        .values()
        .filter(|r| r["bv_reason"] == "daily_quota_exhausted" && r["bv_status"] == "pending")
        .count();
    assert_eq!(exhausted, 1, "{rows:?}");
    assert_eq!(
        rows.values()
            .filter(|r| r["bv_reason"] == "otp_sent")
            .count(),
        2
    );
}

const EQUAL_ROWS: &[(&str, &str)] = &[
    ("E1", "2341 2341 2346"),
    ("E2", "999900000016"),
    ("E3", "999900000028"),
    ("E4", "999900000037"),
    ("E5", "999900000044"),
    ("E6", "999900000059"),
    ("E7", "234123412347"),
    ("E8", "987654321096"),
];

fn equal_input(otps: &[(&str, &str)]) -> String {
    let mut s = String::from("id,aadhaar,otp\n");
    for (id, number) in EQUAL_ROWS {
        let otp = otps.iter().find(|(i, _)| i == id).map_or("", |(_, o)| o);
        s.push_str(&format!("{id},{number},{otp}\n"));
    }
    s
}

#[test]
fn equal_runs_both_steps_and_no_aadhaar_number_is_written_unmasked() {
    let sandbox = Sandbox::quick(&["--journey-delay-ms", "600"]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let numbers = ["234123412346", "999900000028", "987654321096"];

    let mut logs = String::new();
    let mut step = |input: String, exit: i32| -> Rows {
        job.write("in.csv", input);
        let mut c = job.run_showing(&sandbox, "equal-aadhaar-otp", "lines", JOB_ARGS);
        c.args(["-vv", "--progress-interval", "1"])
            .env("RUST_LOG", "trace");
        let o = output(c);
        logs.push_str(&stderr(&o));
        logs.push_str(&String::from_utf8_lossy(&o.stdout));
        assert_eq!(code(&o), exit, "{}", stderr(&o));
        rows_by_id(&job)
    };

    let rows = step(equal_input(&[]), 75);
    expect(
        &rows,
        &[
            ("E1", "pending", "otp_sent"),
            ("E2", "not_verified", "document_not_found"),
            ("E3", "pending", "otp_sent"),
            ("E4", "pending", "otp_sent"),
            ("E5", "pending", "otp_sent"),
            ("E6", "error", "http_500"),
            ("E7", "invalid_input", "aadhaar_checksum"),
            ("E8", "pending", "otp_sent"),
        ],
    );
    assert!(rows["E1"]["bv_request_id"].starts_with("bv-"));
    assert!(!rows["E1"]["bv_journey_transaction_id"].is_empty());

    let filled = [
        ("E1", "123456"),
        ("E3", "123456"),
        ("E4", "123456"),
        ("E5", "123456"),
        ("E8", "000000"),
    ];
    let rows = step(equal_input(&filled), 75);
    expect(
        &rows,
        &[
            ("E1", "verified", ""),
            ("E3", "needs_review", "must_review"),
            ("E4", "needs_review", "needs_review"),
            ("E5", "verified", ""),
            ("E8", "pending", "otp_invalid"),
        ],
    );
    assert_eq!(rows["E1"]["bv_aadhaar_masked"], "XXXX XXXX 2346");
    assert!(!rows["E1"]["bv_name"].is_empty());
    assert_eq!(rows["E1"]["bv_decision"], "CLEAR");
    assert_eq!(rows["E5"]["bv_provider_status"], "SUCCESS");
    assert_eq!(
        rows["E5"]["bv_aadhaar_masked"], "XXXX XXXX 0044",
        "a fetched result is masked too"
    );

    // The wrong OTP is not sent again; the right one verifies.
    let rows = step(equal_input(&filled), 75);
    expect(&rows, &[("E8", "pending", "otp_already_tried")]);
    let mut fixed = filled.to_vec();
    fixed[4] = ("E8", "123456");
    let rows = step(equal_input(&fixed), 75);
    expect(&rows, &[("E8", "verified", "")]);
    assert_eq!(
        count(&sandbox, "aadhaar_otp_verifications", "XXXXXXXX1096"),
        2
    );
    assert_eq!(count(&sandbox, "aadhaar_otp_requests", "XXXXXXXX2346"), 1);

    // Nothing the tool wrote but the output's own input column holds a full number: not
    // the logs at trace level, the progress lines, the summary, the journal or anything else
    // in the state.
    assert!(
        logs.contains("rows done"),
        "progress lines were shown: {logs}"
    );
    let state = files_under(&job.path("out.csv.bulkverify"));
    assert!(!state.is_empty(), "the state was searched");
    for n in numbers {
        assert!(!logs.contains(n), "{n} in the logs");
        for (path, bytes) in &state {
            assert!(!contains_bytes(bytes, n), "{n} in {}", path.display());
        }
    }
    let (headers, out) = read_csv(&job.path("out.csv"));
    for row in out {
        for (h, v) in headers.iter().zip(row) {
            if h.starts_with("bv_") {
                for n in numbers {
                    assert!(!v.contains(n), "{n} in {h}");
                }
            }
        }
    }
}

#[test]
fn equal_refusals_are_classified() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    job.write("in.csv", "id,aadhaar\nF1,234123412346\n");
    let mut c = job.run(&sandbox, "equal-aadhaar-otp", JOB_ARGS);
    c.env("EQUAL_CLIENT_SECRET", "not-the-secret");
    let o = output(c);
    let err = stderr(&o);
    assert_eq!(code(&o), 1, "{err}");
    assert!(err.contains("EQUAL_CLIENT_ID"), "{err}");
    assert!(!err.contains("not-the-secret"), "{err}");

    let mut c = job.run(&sandbox, "equal-aadhaar-otp", JOB_ARGS);
    c.env_remove("EQUAL_JOURNEY_ID");
    let o = output(c);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("EQUAL_JOURNEY_ID"), "{}", stderr(&o));
}

/// Attestr's 4291 and Equal's bodiless 429, and 502/503/504 from either gateway, are waited
/// out: every OTP goes out once, none twice.
#[test]
fn rate_limits_and_gateway_errors_are_waited_out_without_a_second_otp() {
    let sandbox = Sandbox::quick(&["--per-second", "3", "--error-share", "0.3"]);
    let config = "[providers.attestr]\nconcurrency = 8\nmax_attempts = 10\nretry_budget = 10\n\n\
        [providers.equal]\nconcurrency = 8\nmax_attempts = 10\nretry_budget = 10\n";
    let attestr = Job::new();
    attestr.write("bulkverify.toml", config);
    let regs: Vec<String> = (0..12)
        .map(|i| format!("UDYAM-GJ-05-{:07}", 100 + i))
        .collect();
    let input: String = std::iter::once("id,reg,mobile\n".to_string())
        .chain(regs.iter().map(|r| format!("{r},{r},9876543210\n")))
        .collect();
    let rows = run(&attestr, &sandbox, "attestr-udyam-otp", &input, 75);
    assert!(
        rows.values().all(|r| r["bv_reason"] == "otp_sent"),
        "{rows:?}"
    );
    let stats = sandbox.stats();
    assert!(
        stats["rate_limited"].as_u64().unwrap() > 0,
        "the limit was hit"
    );
    for r in &regs {
        assert_eq!(count(&sandbox, "udyam_otp_requests", r), 1, "{r}");
    }

    let equal = Job::new();
    equal.write("bulkverify.toml", config);
    let input = "id,aadhaar\nG1,234123412346\nG2,987654321096\nG3,999900000028\n\
                 G4,999900000037\nG5,999900000044\n";
    let rows = run(&equal, &sandbox, "equal-aadhaar-otp", input, 75);
    assert!(
        rows.values().all(|r| r["bv_reason"] == "otp_sent"),
        "{rows:?}"
    );
    let requests = sandbox.stats()["aadhaar_otp_requests"].clone();
    assert!(
        requests
            .as_object()
            .unwrap()
            .values()
            .all(|n| n.as_u64() == Some(1)),
        "{requests}"
    );
    assert_eq!(requests.as_object().unwrap().len(), 5, "{requests}");
}
