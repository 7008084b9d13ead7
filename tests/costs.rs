//! What a job costs: `plan` counts, without a call, the paid calls the following `run` makes,
//! for every check and on every round of a job (first run, re-run, the OTP's second step); the
//! spending cap is never exceeded, across retries and resends, and a capped job resumes under
//! it.

mod common;

use common::*;
use serde_json::Value;

const CONFIG: &str = "
[providers.deepvue]
concurrency = 8
max_attempts = 4

[providers.cashfree]
concurrency = 4
max_attempts = 4

[checks.deepvue-udyam]
poll_initial_secs = 0.2
poll_max_secs = 0.5
poll_deadline_secs = 5

[checks.deepvue-upi-batch]
chunk_size = 3
poll_initial_secs = 0.2
poll_max_secs = 0.5
poll_deadline_secs = 5

[checks.cashfree-bank-bulk]
chunk_size = 2
poll_initial_secs = 0.3
poll_max_secs = 0.5
poll_deadline_secs = 5

[checks.cashfree-pan-bulk]
chunk_size = 2
poll_initial_secs = 0.3
poll_max_secs = 0.5
poll_deadline_secs = 5
";

const ARGS: &[&str] = &["--config", "bulkverify.toml", "-o", "out.csv", "in.csv"];

/// What the sandbox counts as the paid calls of `check`: each request of a per-row check, each
/// row of a batch, each OTP step.
fn paid(sandbox: &Sandbox, check: &str) -> u64 {
    let stats = sandbox.stats();
    let sum = |key: &str| -> u64 {
        stats[key]
            .as_object()
            .map_or(0, |m| m.values().map(|v| v.as_u64().unwrap()).sum())
    };
    let endpoint = |key: &str| stats["by_endpoint"][key].as_u64().unwrap();
    match check {
        "deepvue-udyam" => sum("udyam_submissions"),
        "deepvue-upi-batch" => sum("vpa_uploads"),
        "cashfree-digilocker" => endpoint("digilocker_status"),
        "cashfree-bank-bulk" => sum("bank_account_submissions"),
        "cashfree-pan-bulk" => sum("pan_submissions"),
        "attestr-udyam-otp" => endpoint("udyam_otp_gen") + endpoint("udyam_otp_verify"),
        "equal-aadhaar-otp" => endpoint("journey_execute"),
        other => panic!("no paid count for {other}"),
    }
}

/// The plan's figure for what [`paid`] counts. A DigiLocker row still pending is looked up
/// again as a fetch of its verification, which the sandbox counts with the first lookups: its
/// plan's calls, exact for a check that never polls, are what the sandbox's lookups must match.
fn planned(forecast: &Value, check: &str) -> u64 {
    let key = match check {
        "cashfree-digilocker" => "all_calls_at_least",
        _ => "paid_calls_this_run",
    };
    forecast[key].as_u64().unwrap()
}

/// `plan --json`, checked to have made no call at all.
fn plan(job: &Job, sandbox: &Sandbox, check: &str, extra: &[&str]) -> Value {
    let before = sandbox.stats()["requests"].as_u64().unwrap();
    let args = [extra, ARGS].concat();
    let o = output(job.plan(sandbox, check, &args));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        sandbox.stats()["requests"].as_u64().unwrap(),
        before,
        "plan made a call"
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// One round of a job: `plan`, then `run` with the same arguments, which pays exactly what the
/// plan said.
fn round(job: &Job, sandbox: &Sandbox, check: &str, extra: &[&str]) -> Value {
    let forecast = plan(job, sandbox, check, extra);
    let before = paid(sandbox, check);
    let args = [extra, ARGS].concat();
    let o = output(job.run(sandbox, check, &args));
    assert!(matches!(code(&o), 0 | 75), "{}", stderr(&o));
    assert_eq!(
        paid(sandbox, check) - before,
        planned(&forecast, check),
        "{check}: the plan {forecast:#} against the run {}",
        stderr(&o)
    );
    forecast
}

/// Plans and runs `check` over its README fixture: the first run, then (for a two-step check)
/// the run with the OTPs filled in, then the same command again.
fn plan_matches_run(check: &str, fixture: &str) {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let input = std::fs::read_to_string(package_dir().join("fixtures").join(fixture)).unwrap();
    job.write("in.csv", &input);
    let first = round(&job, &sandbox, check, &[]);
    assert!(first["paid_calls"].as_u64().unwrap() > 0, "{first:#}");
    assert!(first["invalid"].as_u64().unwrap() > 0, "{first:#}");
    let rows = first["rows"].as_u64().unwrap();
    assert_eq!(rows as usize, input.lines().count() - 1, "{first:#}");
    if check.ends_with("-otp") {
        let filled: String = input
            .lines()
            .map(|l| match l.strip_suffix(',') {
                Some(l) => format!("{l},123456\n"),
                None => format!("{l}\n"),
            })
            .collect();
        job.write("in.csv", filled);
        let second = round(&job, &sandbox, check, &[]);
        assert!(second["paid_calls"].as_u64().unwrap() > 0, "{second:#}");
    }
    let last = round(&job, &sandbox, check, &[]);
    assert!(last["already_final"].as_u64().unwrap() > 0, "{last:#}");
}

#[test]
fn plan_matches_run_for_deepvue_udyam() {
    plan_matches_run("deepvue-udyam", "udyam.csv");
}

#[test]
fn plan_matches_run_for_deepvue_upi_batch() {
    plan_matches_run("deepvue-upi-batch", "upi.csv");
}

#[test]
fn plan_matches_run_for_cashfree_digilocker() {
    plan_matches_run("cashfree-digilocker", "digilocker.csv");
}

#[test]
fn plan_matches_run_for_cashfree_bank_bulk() {
    plan_matches_run("cashfree-bank-bulk", "bank.csv");
}

#[test]
fn plan_matches_run_for_cashfree_pan_bulk() {
    plan_matches_run("cashfree-pan-bulk", "pan.csv");
}

#[test]
fn plan_matches_run_for_attestr_udyam_otp() {
    plan_matches_run("attestr-udyam-otp", "udyam-otp.csv");
}

#[test]
fn plan_matches_run_for_equal_aadhaar_otp() {
    plan_matches_run("equal-aadhaar-otp", "aadhaar-otp.csv");
}

/// 25 identifiers, a cap of 10 a run, and a provider that fails a share of requests (each sent
/// again takes another paid call) and drops a share of answers after it took them (resent,
/// taking another): no run pays more than 10, the rows left over are pending
/// (paid_call_limit), and the same command continues until every row is done.
#[test]
fn a_capped_run_never_exceeds_its_cap_and_the_next_run_continues() {
    let sandbox = Sandbox::quick(&[
        "--error-share",
        "0.2",
        "--reset-share",
        "0.1",
        "--seed",
        "cap",
    ]);
    let job = Job::new();
    job.write(
        "bulkverify.toml",
        CONFIG.replace(
            "[checks.deepvue-udyam]\n",
            "[checks.deepvue-udyam]\nprice_per_call = 1.5\nmax_paid_calls = 100\n",
        ),
    );
    job.write("in.csv", udyam_input(&udyam_numbers(25)));
    let cap = ["--max-paid-calls", "10", "--resend-unconfirmed"];
    let first = plan(&job, &sandbox, "deepvue-udyam", &cap);
    assert_eq!(first["paid_calls"], 25);
    assert_eq!(first["paid_calls_this_run"], 10);
    assert_eq!(
        first["max_paid_calls"], 10,
        "--max-paid-calls replaces the config's cap"
    );
    assert_eq!(first["cost"].as_f64(), Some(15.0));
    let mut runs = 0;
    loop {
        let before = paid(&sandbox, "deepvue-udyam");
        let args = [&cap[..], ARGS].concat();
        let o = output(job.run(&sandbox, "deepvue-udyam", &args));
        let paid_now = paid(&sandbox, "deepvue-udyam") - before;
        assert!(paid_now <= 10, "a run paid {paid_now} under a cap of 10");
        runs += 1;
        assert!(
            job.path("out.csv").exists(),
            "run {runs} wrote no output (exit {}): {}",
            code(&o),
            stderr(&o)
        );
        let rows = rows_by_id(&job);
        assert_eq!(rows.len(), 25, "every row comes back");
        let capped = rows
            .values()
            .filter(|r| r["bv_reason"] == "paid_call_limit")
            .count();
        if runs == 1 {
            assert_eq!(code(&o), 75, "{}", stderr(&o));
            // Not sent (pending), or answered 5xx and not sent again for the cap (error).
            assert!(
                rows.values()
                    .filter(|r| r["bv_reason"] == "paid_call_limit")
                    .all(|r| matches!(r["bv_status"].as_str(), "pending" | "error")),
                "{rows:?}"
            );
            assert!(capped >= 15, "{capped} rows left for later: {}", stderr(&o));
            assert!(
                stderr(&o).contains("of its cap of 10;") && stderr(&o).contains("paid_call_limit"),
                "{}",
                stderr(&o)
            );
        }
        if code(&o) == 0 {
            assert_eq!(capped, 0);
            break;
        }
        assert!(runs < 12, "the capped job did not finish: {}", stderr(&o));
    }
    assert!(runs >= 3, "25 rows at 10 a run take at least 3 runs");
    let done = plan(&job, &sandbox, "deepvue-udyam", &cap);
    assert_eq!(done["paid_calls"], 0, "{done:#}");
    assert!(
        done["time"]["day_spent"].as_u64().unwrap() >= 25,
        "the day ledger counts the account's calls: {done:#}"
    );
}

/// A batch check's cap counts rows: the last batch under it is as full as the cap allows, and
/// `max_spend` at `price_per_call` caps the same way.
#[test]
fn a_batch_check_s_cap_counts_rows_and_max_spend_buys_calls_at_the_price() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write(
        "bulkverify.toml",
        CONFIG.replace(
            "[checks.deepvue-upi-batch]\n",
            "[checks.deepvue-upi-batch]\nprice_per_call = 0.25\nmax_spend = 1\n",
        ),
    );
    let mut input = String::from("id,name,vpa\n");
    for i in 0..10 {
        input.push_str(&format!("U{i},Person {i},person{i}@okaxis\n"));
    }
    job.write("in.csv", &input);
    let forecast = round(&job, &sandbox, "deepvue-upi-batch", &[]);
    assert_eq!(forecast["max_paid_calls"], 4, "1.00 at 0.25 a call");
    assert_eq!(paid(&sandbox, "deepvue-upi-batch"), 4);
    assert_eq!(
        sandbox.stats()["by_endpoint"]["batch_upload"],
        2,
        "3 rows, then 1"
    );
    round(&job, &sandbox, "deepvue-upi-batch", &[]);
    round(&job, &sandbox, "deepvue-upi-batch", &[]);
    assert_eq!(paid(&sandbox, "deepvue-upi-batch"), 10);
    let done = plan(&job, &sandbox, "deepvue-upi-batch", &[]);
    assert_eq!(
        (done["paid_calls"].as_u64(), done["already_final"].as_u64()),
        (Some(0), Some(10))
    );
}

/// Bad settings and bad input stop `plan` as they stop `run`: exit 1, the setting named.
#[test]
fn plan_refuses_what_run_refuses() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write(
        "bulkverify.toml",
        "[checks.deepvue-udyam]\nmax_spend = 10\n",
    );
    job.write("in.csv", udyam_input(&udyam_numbers(3)));
    for command in ["plan", "run"] {
        let o = output(job.command(&sandbox, command, "deepvue-udyam", ARGS));
        assert_eq!(code(&o), 1, "{command}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("[checks.deepvue-udyam] max_spend")
                && stderr(&o).contains("price_per_call"),
            "{command}: {}",
            stderr(&o)
        );
    }
    job.write("bulkverify.toml", "");
    job.write("in.csv", "id,name\n1,x\n");
    let o = output(job.plan(&sandbox, "deepvue-udyam", ARGS));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("in.csv"), "{}", stderr(&o));
    assert_eq!(sandbox.stats()["requests"], 0);
}
