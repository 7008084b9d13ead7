//! The real binary against the sandbox: outcomes, byte-for-byte output, resume after an
//! interruption, exit codes, and what must never be printed.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// Quotas far above what a test sends, quick polls, few retries.
const FAST: &str = "
[providers.deepvue]
per_second = 1000
per_minute = 60000
per_day = 1000000
concurrency = 16
max_attempts = 3

[checks.deepvue-udyam]
poll_initial_secs = 0.2
poll_max_secs = 0.5
poll_deadline_secs = 3

[checks.deepvue-upi-batch]
chunk_size = 3
poll_initial_secs = 0.2
poll_max_secs = 0.5
poll_deadline_secs = 10
";

fn by_first_column(path: &std::path::Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let (headers, rows) = read_csv(path);
    rows.iter()
        .map(|r| (r[0].clone(), row_map(&headers, r)))
        .collect()
}

#[test]
fn checks_lists_each_check_with_its_columns() {
    let out = std::process::Command::new(BIN)
        .arg("checks")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "deepvue-udyam",
        "deepvue-upi-batch",
        "udyam",
        "vpa",
        "bv_status",
        "bv_duplicate_of",
        "bv_name_at_bank",
        "bv_enterprise_name",
        "DEEPVUE_CLIENT_SECRET",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn every_udyam_test_number_yields_its_documented_outcome() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    job.write(
        "in.csv",
        "ref,udyam\n\
         a,UDYAM-MH-01-0000001\n\
         b,UDYAM-DL-05-9000001\n\
         c,UDYAM-TN-02-9000002\n\
         d,UDYAM-UP-10-9000003\n\
         e,UDYAM-RJ-07-9000004\n\
         f,UDYAM-WB-11-9000005\n\
         g,UDYAM-HR-04-9000006\n\
         h,UDYAM-KL-08-9000007\n\
         i,UDYAM-MH-1-0000001\n\
         j,\n\
         k,udyam-mh-01-0000001\n",
    );
    let out = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(
        code(&out),
        75,
        "pending and error rows make the run incomplete\n{}",
        stderr(&out)
    );
    let rows = by_first_column(&job.path("out.csv"));
    let expect = |r: &str, status: &str, reason: &str| {
        let row = &rows[r];
        assert_eq!(row["bv_status"], status, "row {r}: {row:?}");
        assert_eq!(row["bv_reason"], reason, "row {r}: {row:?}");
        row
    };
    let a = expect("a", "verified", "");
    assert_eq!(a["bv_enterprise_name"], "SANDBOX ENTERPRISES 0000001");
    assert_eq!(a["bv_provider_status"], "completed");
    assert!(!a["bv_request_id"].is_empty());
    assert_eq!(a["bv_attempts"], "1");
    let b = expect("b", "not_verified", "bad_request");
    assert_eq!(b["bv_message"], "Please enter a valid UAM number");
    expect("c", "not_verified", "not_found");
    let d = expect("d", "pending", "still_processing");
    assert!(
        !d["bv_request_id"].is_empty(),
        "a pending row keeps its request id"
    );
    let e = expect("e", "error", "http_500");
    assert_eq!(e["bv_attempts"], "3", "retried up to max_attempts");
    assert_eq!(
        expect("f", "verified", "")["bv_attempts"],
        "2",
        "one 503, then accepted"
    );
    expect("g", "not_verified", "invalid_udyam_number");
    expect("h", "verified", "");
    expect("i", "invalid_input", "udyam_format");
    expect("j", "invalid_input", "missing_value");
    let k = expect("k", "verified", "");
    assert_eq!(k["bv_duplicate_of"], "row 1");
    assert_eq!(
        k["bv_request_id"], a["bv_request_id"],
        "the outcome is copied, not re-fetched"
    );

    let subs = sandbox.submissions();
    assert_eq!(
        subs.get("UDYAM-MH-01-0000001"),
        Some(&1),
        "duplicates are verified once"
    );
    assert!(
        !subs.contains_key("UDYAM-MH-1-0000001"),
        "invalid input is never sent"
    );

    // The same command again: final rows are not called again, the pending one is polled (not
    // resubmitted), the error one is tried again (up to max_attempts, all refused with 500).
    let before = sandbox.stats();
    let again = output(job.run(
        &sandbox,
        "deepvue-udyam",
        &["--config", "bulkverify.toml", "-o", "out.csv", "in.csv"],
    ));
    assert_eq!(code(&again), 75, "{}", stderr(&again));
    let after = sandbox.stats();
    assert_eq!(after["udyam_submissions"], before["udyam_submissions"]);
    let rejected = |s: &serde_json::Value| s["udyam_rejected"]["UDYAM-RJ-07-9000004"].as_u64();
    assert_eq!(rejected(&before), Some(3));
    assert_eq!(rejected(&after), Some(6), "the error row was tried again");
    assert!(
        after["by_endpoint"]["udyam_result"].as_u64()
            > before["by_endpoint"]["udyam_result"].as_u64(),
        "the pending row was polled again"
    );
}

#[test]
fn every_upi_test_vpa_yields_its_documented_outcome() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    job.write(
        "upi.csv",
        "ref,UPI ID,name\n\
         a,ravi.kumar99@okicici,Ravi\n\
         b,noaccount.x@ybl,\n\
         c,invalid.y@upi,\n\
         d,sourcedown.z@okaxis,\n\
         e,dropped.w@oksbi,\n\
         f,not-a-vpa,\n\
         g,RAVI.KUMAR99@OKICICI,\n\
         h,anita_desai@paytm,Anita\n",
    );
    let out = output(job.run(
        &sandbox,
        "deepvue-upi-batch",
        &["--config", "bulkverify.toml", "-o", "out.csv", "upi.csv"],
    ));
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    let rows = by_first_column(&job.path("out.csv"));
    let expect = |r: &str, status: &str, reason: &str| {
        let row = &rows[r];
        assert_eq!(row["bv_status"], status, "row {r}: {row:?}");
        assert_eq!(row["bv_reason"], reason, "row {r}: {row:?}");
        row
    };
    let a = expect("a", "verified", "");
    assert_eq!(a["bv_name_at_bank"], "RAVI KUMAR");
    assert_eq!(a["bv_account_exists"], "true");
    assert_eq!(
        expect("b", "not_verified", "account_not_found")["bv_account_exists"],
        "false"
    );
    expect("c", "not_verified", "invalid_vpa");
    expect("d", "error", "source_unavailable");
    expect("e", "error", "missing_from_result");
    expect("f", "invalid_input", "vpa_format");
    assert_eq!(expect("g", "verified", "")["bv_duplicate_of"], "row 1");
    assert_eq!(
        expect("h", "verified", "")["bv_name_at_bank"],
        "ANITA DESAI"
    );
    // 6 distinct valid VPAs in chunks of 3: two batches, each uploaded once.
    let uploads = sandbox.uploads();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert!(uploads.values().all(|n| *n == 1), "{uploads:?}");
    assert!(sandbox.vpa_uploads().values().all(|n| *n == 1));
}

#[test]
fn output_keeps_every_input_value_byte_for_byte_and_in_order() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    let input: &[u8] = b"\xEF\xBB\xBFcustomer_id,name,udyam,amount,note\r\n\
        000101,\"Sharma Traders, Pune\",UDYAM-MH-26-0012345,0001500,\r\n\
        000102,\"The \"\"Best\"\" Textiles\",UDYAM-GJ-01-0100002,,\"two\nlines\"\r\n\
        \r\n\
        000103, padded ,UDYAM-KA-03-0004567,007, \r\n\
        000104,a\"b,UDYAM-KA-03-0004568,\"\",x\r\n";
    job.write("in.csv", input);
    let out = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let mut r = csv::Reader::from_reader(input);
    let in_headers: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    let in_rows: Vec<Vec<String>> = r
        .records()
        .map(|x| x.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let (headers, rows) = read_csv(&job.path("out.csv"));
    assert_eq!(
        &headers[..5],
        &in_headers[..],
        "the BOM is not part of the first name"
    );
    assert_eq!(headers[5], "bv_status");
    assert_eq!(
        rows.len(),
        4,
        "every record once; a blank line is not a record"
    );
    for (got, want) in rows.iter().zip(&in_rows) {
        assert_eq!(&got[..5], &want[..], "values as read, in input order");
        assert_eq!(got[5], "verified");
    }
    let text = std::fs::read_to_string(job.path("out.csv")).unwrap();
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        lines[1]
            .starts_with("000101,\"Sharma Traders, Pune\",UDYAM-MH-26-0012345,0001500,,verified,")
    );
    assert!(
        lines[2].starts_with("000102,\"The \"\"Best\"\" Textiles\",UDYAM-GJ-01-0100002,,\"two")
    );
    assert!(text.contains("\n000103, padded ,UDYAM-KA-03-0004567,007, ,verified,"));
    assert!(text.contains("\n000104,\"a\"\"b\",UDYAM-KA-03-0004568,,x,verified,"));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(job.path("out.csv"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let pq = output(job.run(
        &sandbox,
        "deepvue-udyam",
        &[
            "--config",
            "bulkverify.toml",
            "-o",
            "out.parquet",
            "--state",
            "pq-state",
            "in.csv",
        ],
    ));
    assert_eq!(code(&pq), 0, "{}", stderr(&pq));
    let bytes = std::fs::read(job.path("out.parquet")).unwrap();
    assert_eq!(&bytes[..4], b"PAR1");
}

#[test]
fn a_finished_run_makes_no_calls_and_keeps_or_restores_the_same_output() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    job.write("in.csv", udyam_input(&udyam_numbers(20)));
    let first = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let before = std::fs::read(job.path("out.csv")).unwrap();
    let requests = sandbox.stats()["requests"].as_u64().unwrap();
    std::fs::remove_file(job.path("out.csv")).unwrap();

    let second = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert_eq!(
        sandbox.stats()["requests"].as_u64().unwrap(),
        requests,
        "zero calls"
    );
    assert!(stderr(&second).contains("calls 0"), "{}", stderr(&second));
    assert_eq!(
        std::fs::read(job.path("out.csv")).unwrap(),
        before,
        "the same bytes"
    );

    // Nothing changed since: the output is left as it is, the same file untouched.
    use std::os::unix::fs::MetadataExt;
    let identity = |m: std::fs::Metadata| (m.ino(), m.mtime(), m.mtime_nsec());
    let written = identity(std::fs::metadata(job.path("out.csv")).unwrap());
    let third = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&third), 0, "{}", stderr(&third));
    assert!(stderr(&third).contains("verified"), "{}", stderr(&third));
    assert_eq!(
        identity(std::fs::metadata(job.path("out.csv")).unwrap()),
        written
    );
    // An output edited since is written again, whole.
    let mut edited = before.clone();
    edited.extend_from_slice(b"a row someone added\n");
    std::fs::write(job.path("out.csv"), edited).unwrap();
    let fourth = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&fourth), 0, "{}", stderr(&fourth));
    assert_eq!(std::fs::read(job.path("out.csv")).unwrap(), before);
    assert_eq!(
        sandbox.stats()["requests"].as_u64().unwrap(),
        requests,
        "zero calls"
    );
}

/// Runs `check` to the end in a fresh job against a fresh sandbox: the reference output.
fn reference_run(
    check: &str,
    config: &str,
    input: &str,
    sandbox_flags: &[&str],
) -> Vec<Vec<String>> {
    let sandbox = Sandbox::quick(sandbox_flags);
    let job = Job::new();
    job.write("bulkverify.toml", config);
    job.write("in.csv", input);
    let out = output(job.run(&sandbox, check, JOB_ARGS));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    comparable(&job.path("out.csv"), &["bv_checked_at"])
}

/// Starts a job in a fresh directory against a fresh sandbox, waits until `until` holds, and
/// sends `sig`. Returns the sandbox, the job and the interrupted run's exit code.
fn interrupted(
    check: &str,
    config: &str,
    input: &str,
    sandbox_flags: &[&str],
    sig: i32,
    until: impl Fn(&Sandbox) -> bool,
) -> (Sandbox, Job, Option<i32>) {
    let sandbox = Sandbox::quick(sandbox_flags);
    let job = Job::new();
    job.write("bulkverify.toml", config);
    job.write("in.csv", input);
    let mut child = job
        .run(&sandbox, check, JOB_ARGS)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "the run to get under way", || {
        until(&sandbox)
    });
    signal(&child, sig);
    let code = child.wait().unwrap().code();
    (sandbox, job, code)
}

const JOB_ARGS: &[&str] = &["--config", "bulkverify.toml", "-o", "out.csv", "in.csv"];

const PACED: &str = "
[providers.deepvue]
per_second = 80
per_minute = 100000
per_day = 1000000
concurrency = 16

[checks.deepvue-udyam]
poll_initial_secs = 0.3
poll_max_secs = 0.5

[checks.deepvue-upi-batch]
chunk_size = 20
poll_initial_secs = 0.3
poll_max_secs = 0.5
";

#[test]
fn an_interrupted_udyam_run_resumes_without_a_second_submission() {
    let numbers = udyam_numbers(400);
    let input = udyam_input(&numbers);
    let flags = ["--udyam-delay-ms", "500", "--latency-ms", "20"];
    let reference = reference_run("deepvue-udyam", PACED, &input, &flags);

    let (sandbox, job, exit) = interrupted(
        "deepvue-udyam",
        PACED,
        &input,
        &flags,
        libc::SIGTERM,
        |sb| sb.submissions().len() >= numbers.len() / 3,
    );
    assert_eq!(exit, Some(75), "an interrupted run is incomplete");
    let (_, partial) = read_csv(&job.path("out.csv"));
    assert_eq!(
        partial.len(),
        numbers.len(),
        "the interrupted run still wrote every row"
    );
    let submitted_then = sandbox.submissions().len();
    assert!(submitted_then < numbers.len(), "interrupted mid-way");

    let resumed = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&resumed), 0, "{}", stderr(&resumed));
    assert_eq!(
        comparable(&job.path("out.csv"), &["bv_checked_at"]),
        reference
    );
    let subs = sandbox.submissions();
    assert_eq!(subs.len(), numbers.len());
    assert!(subs.values().all(|n| *n == 1), "no row was submitted twice");
}

#[test]
fn an_interrupted_batch_run_resumes_without_a_second_upload() {
    let mut input = String::from("ref,vpa\n");
    for i in 0..300 {
        input.push_str(&format!("r{i:04},user{i}@okicici\n"));
    }
    let flags = ["--batch-delay-ms", "1500", "--latency-ms", "20"];
    let config = PACED.replace("per_second = 80", "per_second = 8");
    let reference = reference_run("deepvue-upi-batch", &config, &input, &flags);

    let (sandbox, job, exit) = interrupted(
        "deepvue-upi-batch",
        &config,
        &input,
        &flags,
        libc::SIGTERM,
        |sb| sb.uploads().len() >= 3,
    );
    assert_eq!(exit, Some(75));
    assert!(sandbox.uploads().len() < 15, "interrupted mid-way");

    let resumed = output(job.run(&sandbox, "deepvue-upi-batch", JOB_ARGS));
    assert_eq!(code(&resumed), 0, "{}", stderr(&resumed));
    assert_eq!(
        comparable(&job.path("out.csv"), &["bv_checked_at"]),
        reference
    );
    let uploads = sandbox.uploads();
    assert_eq!(uploads.len(), 15);
    assert!(
        uploads.values().all(|n| *n == 1),
        "no batch was uploaded twice: {uploads:?}"
    );
    assert!(sandbox.vpa_uploads().values().all(|n| *n == 1));
}

#[test]
fn a_killed_run_holds_rows_it_cannot_confirm_and_resends_them_only_when_asked() {
    let numbers = udyam_numbers(300);
    let input = udyam_input(&numbers);
    let flags = ["--udyam-delay-ms", "500", "--latency-ms", "150"];
    let reference = reference_run("deepvue-udyam", PACED, &input, &flags);

    let (sandbox, job, _) = interrupted(
        "deepvue-udyam",
        PACED,
        &input,
        &flags,
        libc::SIGKILL,
        |sb| sb.submissions().len() >= numbers.len() / 3,
    );

    // Resuming never resends a row whose submission might have been billed.
    let resumed = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert!(matches!(code(&resumed), 0 | 75), "{}", stderr(&resumed));
    assert!(sandbox.submissions().values().all(|n| *n == 1));
    let rows = by_first_column(&job.path("out.csv"));
    let held: Vec<&String> = rows
        .iter()
        .filter(|(_, r)| r["bv_reason"] == "unconfirmed_submission")
        .map(|(id, _)| id)
        .collect();
    assert!(
        held.len() <= 16,
        "at most the requests in flight: {}",
        held.len()
    );
    assert_eq!(code(&resumed) == 75, !held.is_empty());
    for (_, r) in rows
        .iter()
        .filter(|(_, r)| r["bv_reason"] == "unconfirmed_submission")
    {
        assert_eq!(r["bv_status"], "error");
    }

    // With --resend-unconfirmed, the held rows are sent again: a held row may or may not have
    // reached the provider before the kill, but a row sent twice is always one that was held.
    let held_numbers: Vec<String> = held
        .iter()
        .map(|id| numbers[id.parse::<usize>().unwrap()].clone())
        .collect();
    let resend = output(job.run(
        &sandbox,
        "deepvue-udyam",
        &[
            "--resend-unconfirmed",
            "--config",
            "bulkverify.toml",
            "-o",
            "out.csv",
            "in.csv",
        ],
    ));
    assert_eq!(code(&resend), 0, "{}", stderr(&resend));
    let subs = sandbox.submissions();
    assert_eq!(subs.len(), numbers.len());
    for (number, n) in &subs {
        assert!(
            *n == 1 || (*n == 2 && held_numbers.contains(number)),
            "{number}: {n}"
        );
    }
    // Resent rows get a new request id and attempt count; everything else matches.
    let got = comparable(
        &job.path("out.csv"),
        &["bv_checked_at", "bv_request_id", "bv_attempts"],
    );
    let mut want = reference.clone();
    let (h, _) = read_csv(&job.path("out.csv"));
    for col in ["bv_request_id", "bv_attempts"] {
        let i = h.iter().position(|c| c == col).unwrap();
        for r in want.iter_mut().skip(1) {
            r[i].clear();
        }
    }
    assert_eq!(got, want);
}

#[test]
fn fatal_errors_exit_1_and_write_no_output() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("in.csv", "id,udyam\n1,UDYAM-MH-01-0000001\n");
    job.write("ok.toml", FAST);
    job.write(
        "bad.toml",
        "[providers.deepvue]\nper_second = 17\nper_minte = 1000\n",
    );
    job.write(
        "ragged.csv",
        "id,udyam\n1,UDYAM-MH-01-0000001\n2,UDYAM-MH-01-0000002,extra\n",
    );
    // (arguments after --config, client secret, what the error must say)
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["bad.toml", "in.csv"],
            CLIENT_SECRET,
            "bad.toml, line 3, column 1: unknown field `per_minte`",
        ),
        (
            &["ok.toml", "in.csv"],
            "free_tier_wrong",
            "refused the credentials",
        ),
        (
            &["ok.toml", "missing.csv"],
            CLIENT_SECRET,
            "missing.csv: cannot read the file",
        ),
        (
            &["ok.toml", "ragged.csv"],
            CLIENT_SECRET,
            "ragged.csv, line 3: this row has 3 fields",
        ),
        (
            &["ok.toml", "--column", "udyam=Nope", "in.csv"],
            CLIENT_SECRET,
            "--column udyam=NAME",
        ),
    ];
    for (i, (args, secret, says)) in cases.iter().enumerate() {
        let out = format!("out{i}.csv");
        let mut c = job.run(&sandbox, "deepvue-udyam", &["-o", &out, "--config"]);
        c.args(*args).env("DEEPVUE_CLIENT_SECRET", secret);
        let o = output(c);
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("free_tier_wrong"),
            "no secret in errors"
        );
        assert!(!job.path(&out).exists(), "{args:?}: no output written");
    }
    assert!(
        !job.path("out0.csv.bulkverify").exists(),
        "a bad config stops the run before the state is made"
    );

    let o = output({
        let mut c = std::process::Command::new(BIN);
        c.args(["run", "in.csv"]).current_dir(job.dir.path());
        c
    });
    assert_eq!(code(&o), 2, "a usage error");
}

#[test]
fn no_secret_token_or_signed_url_is_ever_printed_or_journaled() {
    // The happy path, then download URLs that are already expired (every download is refused
    // with S3's 403 and the batch ends pending), with debug logs on.
    let mut everything = String::new();
    for (flags, want) in [(&[][..], 0), (&["--url-ttl-secs", "0"][..], 75)] {
        let sandbox = Sandbox::quick(flags);
        let job = Job::new();
        job.write(
            "bulkverify.toml",
            FAST.replace("poll_deadline_secs = 10", "poll_deadline_secs = 2"),
        );
        job.write(
            "upi.csv",
            "ref,vpa\na,ravi@okicici\nb,anita@ybl\nc,x@paytm\nd,y@okaxis\n",
        );
        let mut c = job.run(
            &sandbox,
            "deepvue-upi-batch",
            &["-vv", "--progress", "lines", "--progress-interval", "1"],
        );
        c.args(JOB_ARGS[..4].iter())
            .arg("upi.csv")
            .env("RUST_LOG", "debug");
        let o = output(c);
        assert_eq!(code(&o), want, "{}", stderr(&o));
        everything.push_str(&stderr(&o));
        everything.push_str(&String::from_utf8_lossy(&o.stdout));
        everything.push_str(&std::fs::read_to_string(job.path("out.csv")).unwrap());
        for entry in std::fs::read_dir(job.path("out.csv.bulkverify")).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                everything.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
            }
        }
    }
    // A base URL with credentials in it is refused without being repeated.
    let job = Job::new();
    job.write("in.csv", udyam_input(&udyam_numbers(1)));
    let o = output({
        let mut c = std::process::Command::new(BIN);
        c.current_dir(job.dir.path())
            .args(["run", "--check", "deepvue-udyam", "in.csv"])
            .env("DEEPVUE_BASE_URL", "https://ops:live_password@example.test")
            .env("DEEPVUE_CLIENT_ID", CLIENT_ID)
            .env("DEEPVUE_CLIENT_SECRET", CLIENT_SECRET);
        c
    });
    assert_eq!(code(&o), 1);
    everything.push_str(&stderr(&o));
    for secret in [
        CLIENT_SECRET,
        "Bearer",
        "eyJ",
        "X-Amz-Signature",
        "x-api-key",
        "live_password",
    ] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
    assert!(
        everything.contains("could not be fetched"),
        "the 403 path ran"
    );
}

#[test]
fn plain_progress_lines_under_cron() {
    let sandbox = Sandbox::quick(&["--udyam-delay-ms", "1500"]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    job.write("in.csv", udyam_input(&udyam_numbers(5)));
    let mut c = job.run(&sandbox, "deepvue-udyam", JOB_ARGS);
    c.args(["--progress", "auto", "--progress-interval", "1"]);
    let o = output(c);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("rows done"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no terminal escapes when not on a terminal: {err}"
    );
    assert!(err.contains("verified              5"), "{err}");
}

#[test]
fn a_second_run_on_the_same_state_is_refused_while_the_first_runs() {
    let sandbox = Sandbox::quick(&["--udyam-delay-ms", "3000"]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    job.write("in.csv", udyam_input(&udyam_numbers(3)));
    let mut first = job
        .run(&sandbox, "deepvue-udyam", JOB_ARGS)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "the first run to submit", || {
        !sandbox.submissions().is_empty()
    });
    let second = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&second), 1);
    assert!(
        stderr(&second).contains("another bulkverify run"),
        "{}",
        stderr(&second)
    );
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert!(sandbox.submissions().values().all(|n| *n == 1));
}

/// `purge` deletes a finished job's state and keeps its output; it never deletes a state a
/// run is using, nor a directory that is not a state.
#[test]
fn purge_deletes_the_state_and_keeps_the_output() {
    let sandbox = Sandbox::quick(&["--udyam-delay-ms", "3000"]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    job.write("in.csv", udyam_input(&udyam_numbers(3)));
    let purge = || {
        let mut c = std::process::Command::new(BIN);
        c.current_dir(job.dir.path())
            .args(["purge", "-o", "out.csv"]);
        output(c)
    };
    let mut running = job
        .run(&sandbox, "deepvue-udyam", JOB_ARGS)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "the run to submit", || {
        !sandbox.submissions().is_empty()
    });
    let busy = purge();
    assert_eq!(code(&busy), 1);
    assert!(
        stderr(&busy).contains("another bulkverify run"),
        "{}",
        stderr(&busy)
    );
    assert_eq!(running.wait().unwrap().code(), Some(0));

    let state = job.path("out.csv.bulkverify");
    assert!(state.is_dir());
    let done = purge();
    assert_eq!(code(&done), 0, "{}", stderr(&done));
    assert!(stderr(&done).contains("deleted"), "{}", stderr(&done));
    assert!(!state.exists());
    assert!(job.path("out.csv").is_file(), "the output is kept");
    let again = purge();
    assert_eq!(code(&again), 1);
    assert!(
        stderr(&again).contains("not a bulkverify state directory"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_changed_input_is_not_resumed_against_old_results() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    job.write("in.csv", udyam_input(&udyam_numbers(3)));
    assert_eq!(
        code(&output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS))),
        0
    );
    job.write("in.csv", udyam_input(&udyam_numbers(4)));
    let o = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("changed since the state"),
        "{}",
        stderr(&o)
    );
    let fresh = output(job.run(
        &sandbox,
        "deepvue-udyam",
        &[
            "--fresh",
            "--config",
            "bulkverify.toml",
            "-o",
            "out.csv",
            "in.csv",
        ],
    ));
    assert_eq!(code(&fresh), 0, "{}", stderr(&fresh));
    let (_, rows) = read_csv(&job.path("out.csv"));
    assert_eq!(rows.len(), 4);
}

#[test]
fn a_token_that_expires_mid_run_is_renewed_without_failing_a_row() {
    let sandbox = Sandbox::quick(&["--token-ttl-secs", "2", "--udyam-delay-ms", "500"]);
    let job = Job::new();
    job.write(
        "bulkverify.toml",
        PACED.replace("per_second = 80", "per_second = 15"),
    );
    job.write("in.csv", udyam_input(&udyam_numbers(60)));
    let o = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (headers, rows) = read_csv(&job.path("out.csv"));
    let status = headers.iter().position(|h| h == "bv_status").unwrap();
    assert!(rows.iter().all(|r| r[status] == "verified"));
    let authorizations = sandbox.stats()["by_endpoint"]["authorize"]
        .as_u64()
        .unwrap();
    assert!(
        authorizations >= 3,
        "the token was renewed: {authorizations} authorizations"
    );
    assert!(
        sandbox.submissions().values().all(|n| *n == 1),
        "no row resent for a 401"
    );
}

#[test]
fn a_spent_daily_quota_leaves_rows_pending_for_the_next_days_run() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    let config = |per_day: u32| {
        format!(
            "[providers.deepvue]\nper_second = 100\nper_day = {per_day}\n\n\
             [checks.deepvue-udyam]\npoll_initial_secs = 0.4\npoll_max_secs = 0.5\n"
        )
    };
    job.write("in.csv", udyam_input(&udyam_numbers(10)));

    job.write("bulkverify.toml", config(8));
    let first = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&first), 75, "{}", stderr(&first));
    let sent = sandbox.stats()["requests"].as_u64().unwrap();
    assert_eq!(
        sent, 8,
        "the day's quota is used to the last request and not beyond"
    );
    let rows = by_first_column(&job.path("out.csv"));
    let exhausted = rows
        .values()
        .filter(|r| r["bv_status"] == "pending" && r["bv_reason"] == "daily_quota_exhausted")
        .count();
    assert!(exhausted > 0, "{rows:?}");

    // The same day: the journal remembers what was spent, so no call is made.
    let second = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&second), 75, "{}", stderr(&second));
    assert_eq!(sandbox.stats()["requests"].as_u64().unwrap(), sent);

    // A day with quota to spare (a bigger plan stands in for tomorrow): the run completes,
    // polling what was accepted and sending only what was not.
    job.write("bulkverify.toml", config(1000));
    let third = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&third), 0, "{}", stderr(&third));
    assert_eq!(sandbox.submissions().len(), 10);
    assert!(sandbox.submissions().values().all(|n| *n == 1));
}

#[test]
fn an_accepted_batch_whose_polling_gives_up_is_polled_again_never_uploaded_again() {
    // The batch's status endpoint answers 503 four times: with max_attempts = 3 the first run
    // gives up on it, the second polls it again and gets the results.
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    job.write("in.csv", "ref,vpa\na,statusdown.one@ybl\nb,ravi@okicici\n");
    let first = output(job.run(&sandbox, "deepvue-upi-batch", JOB_ARGS));
    assert_eq!(code(&first), 75, "{}", stderr(&first));
    let rows = by_first_column(&job.path("out.csv"));
    assert_eq!(rows["a"]["bv_status"], "error");
    assert_eq!(rows["a"]["bv_reason"], "http_503");
    let second = output(job.run(&sandbox, "deepvue-upi-batch", JOB_ARGS));
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    let rows = by_first_column(&job.path("out.csv"));
    assert_eq!(rows["a"]["bv_status"], "verified");
    assert_eq!(rows["b"]["bv_name_at_bank"], "RAVI");
    let uploads = sandbox.uploads();
    assert_eq!(uploads.len(), 1);
    assert!(
        uploads.values().all(|n| *n == 1),
        "never uploaded again: {uploads:?}"
    );
}

#[test]
fn a_changed_column_mapping_is_not_resumed_against_old_results() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    job.write(
        "in.csv",
        "ref,Primary,Alternate\na,ravi@okicici,anita@ybl\n",
    );
    let with = |header: &str| {
        let mut c = job.run(&sandbox, "deepvue-upi-batch", JOB_ARGS);
        c.args(["--column", &format!("vpa={header}")]);
        output(c)
    };
    assert_eq!(code(&with("Primary")), 0);
    let o = with("Alternate");
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("reading other columns"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        sandbox.vpa_uploads().len(),
        1,
        "nothing sent for the other column"
    );
}

#[test]
fn a_request_the_provider_no_longer_knows_is_held_not_polled_for_ever() {
    let numbers = udyam_numbers(60);
    let input = udyam_input(&numbers);
    let (first, job, exit) = interrupted(
        "deepvue-udyam",
        PACED,
        &input,
        &["--udyam-delay-ms", "60000"],
        libc::SIGTERM,
        |sb| sb.submissions().len() >= 10,
    );
    assert_eq!(exit, Some(75));
    let accepted = first.submissions().len();
    let port = first.port();
    drop(first);

    // A new sandbox at the same address knows none of the first one's requests: its polls
    // answer 404.
    let second = Sandbox::start_on(port, &quick_flags(&[]));
    let o = output(job.run(&second, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    let rows = by_first_column(&job.path("out.csv"));
    let held = rows
        .values()
        .filter(|r| r["bv_reason"] == "unconfirmed_submission")
        .count();
    assert_eq!(held, accepted, "each forgotten request is held");
    let polls = second.stats()["by_endpoint"]["udyam_result"].as_u64();
    let o = output(job.run(&second, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&o), 75);
    assert_eq!(
        second.stats()["by_endpoint"]["udyam_result"].as_u64(),
        polls,
        "held rows are not polled again"
    );
    let o = output({
        let mut c = job.run(&second, "deepvue-udyam", JOB_ARGS);
        c.arg("--resend-unconfirmed");
        c
    });
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(second.submissions().len(), numbers.len());
}

/// Under a permissive umask (0000), the state directory is still 0700 and every file the run
/// writes there, the ledger and the output are 0600: they hold personal data.
#[test]
fn state_and_output_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    job.write("in.csv", udyam_input(&udyam_numbers(3)));
    let mut c = job.run(&sandbox, "deepvue-udyam", JOB_ARGS);
    // SAFETY: umask(2) is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let o = output(c);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let state = job.path("out.csv.bulkverify");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&job.path("out.csv")), 0o600);
    let mut checked = 0;
    for dir in [state.clone(), job.path("ledger")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                checked += 1;
            } else {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
            }
        }
    }
    assert!(
        checked >= 3,
        "the journal, its lock and the ledger were checked"
    );
}

/// `--quiet` prints nothing when every row has a final outcome, as cron wants, and everything
/// it held back, with the summary and what to do, when the run is incomplete or fails.
#[test]
fn quiet_prints_nothing_on_a_complete_run_and_the_summary_on_an_incomplete_one() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    job.write("in.csv", udyam_input(&udyam_numbers(3)));
    let args = [
        "-q",
        "--config",
        "bulkverify.toml",
        "-o",
        "out.csv",
        "in.csv",
    ];
    let o = output(job.run(&sandbox, "deepvue-udyam", &args));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!((stderr(&o), o.stdout.len()), (String::new(), 0));
    assert_eq!(rows_by_id(&job).len(), 3);

    job.write("more.csv", udyam_input(&udyam_numbers(6)));
    let capped = [
        "-q",
        "--max-paid-calls",
        "1",
        "--config",
        "bulkverify.toml",
        "-o",
        "more.out.csv",
    ];
    let o = output(job.run(
        &sandbox,
        "deepvue-udyam",
        &[&capped[..], &["more.csv"]].concat(),
    ));
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("bulkverify deepvue-udyam: 6 rows") && err.contains("incomplete:"),
        "{err}"
    );

    let o = output(job.run(&sandbox, "deepvue-udyam", &["-q", "missing.csv"]));
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("missing.csv"), "{}", stderr(&o));
}
