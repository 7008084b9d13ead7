//! Rate-limit awareness against a misbehaving sandbox: 429 storms in every header form, a
//! provider that goes down, 5xx answers and dropped connections, a quota nobody configured.
//! Every test checks that each input row comes back with a definite outcome.

mod common;

use std::collections::BTreeMap;

use common::*;

const JOB_ARGS: &[&str] = &["--config", "bulkverify.toml", "-o", "out.csv", "in.csv"];

/// No quota configured: the client has to find the provider's limit.
const ADAPTIVE: &str = "[providers.deepvue]\nconcurrency = 16\n\n[checks.deepvue-udyam]\n\
                        poll_initial_secs = 0.3\npoll_max_secs = 0.5\n";

fn config(provider_extra: &str) -> String {
    format!(
        "[providers.deepvue]\nper_second = 50\nper_minute = 100000\nper_day = 1000000\n\
         concurrency = 16\nmax_attempts = 3\n{provider_extra}\n\n\
         [checks.deepvue-udyam]\npoll_initial_secs = 0.3\npoll_max_secs = 0.5\n\
         poll_deadline_secs = 30\n"
    )
}

fn count(stats: &serde_json::Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {stats}"))
}

/// A sandbox that answers 503 to everything from `after_ms` on, for ten minutes, keeping its
/// data in the job's directory so that [`finishes_once_back`] finds what it accepted.
fn down_after(job: &Job, after_ms: &str) -> Sandbox {
    let data = job.path("sandbox-data");
    Sandbox::quick(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--down-after-ms",
        after_ms,
        "--down-for-ms",
        "600000",
        "--down-status",
        "503",
    ])
}

/// The provider back on the same port with the same data: the same command verifies every
/// row.
fn finishes_once_back(job: &Job, down: Sandbox) {
    let port = down.port();
    drop(down);
    let data = job.path("sandbox-data");
    let healthy = Sandbox::start_on(port, &quick_flags(&["--data-dir", data.to_str().unwrap()]));
    let again = output(job.run(&healthy, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(
        rows_by_id(job)
            .values()
            .all(|r| r["bv_status"] == "verified")
    );
}

#[test]
fn a_429_storm_pauses_every_worker_until_the_servers_time_in_each_header_form() {
    for form in ["seconds", "date", "none"] {
        let sandbox = Sandbox::quick(&[
            "--down-after-ms",
            "700",
            "--down-for-ms",
            "2000",
            "--down-status",
            "429",
            "--retry-after",
            form,
        ]);
        let job = Job::new();
        job.write("bulkverify.toml", config(""));
        job.write("in.csv", udyam_input(&udyam_numbers(150)));
        let o = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
        assert_eq!(code(&o), 0, "{form}: {}", stderr(&o));
        let rows = rows_by_id(&job);
        assert_eq!(rows.len(), 150);
        assert!(
            rows.values().all(|r| r["bv_status"] == "verified"),
            "{form}: a 429 costs no row"
        );
        let stats = sandbox.stats();
        let refused = count(&stats, "rate_limited");
        assert!(refused > 0, "{form}: the storm happened: {stats}");
        // Sixteen workers hammering a two-second storm with their own backoff would draw
        // hundreds of 429s; paused together, they draw those in flight when it began, and
        // (with no header to say when it ends) one probe per growing pause.
        let bound = if form == "none" { 50 } else { 20 };
        assert!(refused <= bound, "{form}: {refused} 429s: {stats}");
        assert!(sandbox.submissions().values().all(|n| *n == 1));
    }
}

#[test]
fn a_provider_that_stays_down_trips_the_breaker_and_the_run_ends_incomplete() {
    let job = Job::new();
    let sandbox = down_after(&job, "1000");
    job.write("bulkverify.toml", config("give_up_after_secs = 4"));
    job.write("in.csv", udyam_input(&udyam_numbers(400)));
    let started = std::time::Instant::now();
    let o = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    let err = stderr(&o);
    assert_eq!(code(&o), 75, "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(err.contains("circuit breaker gave up"), "{err}");

    let rows = rows_by_id(&job);
    assert_eq!(rows.len(), 400, "every row is in the output");
    let mut by_outcome: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in rows.values() {
        *by_outcome
            .entry((r["bv_status"].clone(), r["bv_reason"].clone()))
            .or_default() += 1;
    }
    for (status, reason) in by_outcome.keys() {
        assert!(
            matches!(
                (status.as_str(), reason.as_str()),
                ("verified", _)
                    | ("error", "provider_unavailable" | "http_503")
                    | ("pending", "provider_unavailable" | "still_processing")
            ),
            "{by_outcome:?}"
        );
    }
    assert!(
        by_outcome.contains_key(&("error".into(), "provider_unavailable".into())),
        "{by_outcome:?}"
    );
    // The breaker stops the hammering: a few calls fail before it opens, then one probe at a
    // time on a growing interval.
    let stats = sandbox.stats();
    assert!(count(&stats, "server_errors") <= 60, "{stats}");
    assert!(sandbox.submissions().values().all(|n| *n == 1));

    // When the provider is back, the same command finishes the job without paying twice.
    finishes_once_back(&job, sandbox);
}

/// Down before the first token: the calls waiting for it fail unbilled, the breaker ends the
/// run, and the output still holds every row, which the same command finishes later.
#[test]
fn a_provider_down_from_the_first_request_still_writes_every_row() {
    let job = Job::new();
    let sandbox = down_after(&job, "0");
    job.write("bulkverify.toml", config("give_up_after_secs = 3"));
    job.write("in.csv", udyam_input(&udyam_numbers(40)));
    let o = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    let err = stderr(&o);
    assert_eq!(code(&o), 75, "{err}");
    assert!(err.contains("circuit breaker gave up"), "{err}");
    let rows = rows_by_id(&job);
    assert_eq!(rows.len(), 40, "every row is in the output: {err}");
    for r in rows.values() {
        assert!(
            matches!(
                (r["bv_status"].as_str(), r["bv_reason"].as_str()),
                ("error", "http_503" | "provider_unavailable")
            ),
            "{r:?}"
        );
    }
    assert!(
        rows.values()
            .any(|r| r["bv_message"].contains("could not authenticate with deepvue")),
        "{rows:?}"
    );
    assert!(sandbox.submissions().is_empty(), "nothing was sent");

    finishes_once_back(&job, sandbox);
}

#[test]
fn server_errors_and_dropped_connections_leave_every_row_definite() {
    let sandbox = Sandbox::quick(&["--error-share", "0.1", "--reset-share", "0.03"]);
    let job = Job::new();
    job.write(
        "bulkverify.toml",
        config("max_attempts = 5").replace("max_attempts = 3\n", ""),
    );
    job.write("in.csv", udyam_input(&udyam_numbers(300)));
    let o = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    let err = stderr(&o);
    let rows = rows_by_id(&job);
    assert_eq!(rows.len(), 300);
    let held = rows
        .values()
        .filter(|r| r["bv_reason"] == "unconfirmed_submission")
        .count();
    for r in rows.values() {
        assert!(
            r["bv_status"] == "verified" || r["bv_reason"] == "unconfirmed_submission",
            "5xx answers are retried; only a submission whose answer was lost is held: {r:?}"
        );
    }
    assert_eq!(code(&o), if held > 0 { 75 } else { 0 }, "{err}");
    let stats = sandbox.stats();
    assert!(count(&stats, "server_errors") > 0, "{stats}");
    // A dropped submission may have been billed: it is never sent again by this run.
    assert!(sandbox.submissions().values().all(|n| *n == 1), "{stats}");
}

#[test]
fn an_unknown_quota_is_found_and_used_without_many_429s() {
    let sandbox = Sandbox::quick(&["--per-second", "20", "--latency-ms", "100"]);
    let job = Job::new();
    job.write("bulkverify.toml", ADAPTIVE);
    // Long enough that slow start's crossing of the limit is a small part of the run: a fixed
    // window refuses only at the end of each second, so the first 429 comes back when the
    // rate is already up to twice the limit, and the descent from there costs 5 to 20 429s,
    // the more the busier the machine. Over 150 rows that was up to 5% of the requests.
    job.write("in.csv", udyam_input(&udyam_numbers(300)));
    let o = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        rows_by_id(&job)
            .values()
            .all(|r| r["bv_status"] == "verified")
    );
    let stats = sandbox.stats();
    let (requests, refused) = (count(&stats, "requests"), count(&stats, "rate_limited"));
    // The utilisation is measured by the benchmark; here: it got there, and politely.
    assert!(
        refused * 100 <= requests * 5,
        "{refused} of {requests}: {stats}"
    );
}

#[test]
fn a_published_policy_sets_the_pace_of_an_unknown_quota() {
    let headers = "ietf";
    let sandbox = Sandbox::start(&[
        "--per-second",
        "0",
        "--per-minute",
        "600",
        "--per-day",
        "0",
        "--udyam-delay-ms",
        "300",
        "--rate-headers",
        headers,
        "--retry-after",
        "seconds",
    ]);
    let job = Job::new();
    job.write("bulkverify.toml", ADAPTIVE);
    job.write("in.csv", udyam_input(&udyam_numbers(40)));
    let o = output(job.run(&sandbox, "deepvue-udyam", JOB_ARGS));
    assert_eq!(code(&o), 0, "{headers}: {}", stderr(&o));
    let stats = sandbox.stats();
    // The IETF policy names its window, so the pace is set from the first answer: ten a
    // second, where probing would have doubled its way past it.
    assert_eq!(count(&stats, "rate_limited"), 0, "{headers}: {stats}");
    let busiest = stats["accepted_per_second"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(serde_json::Value::as_u64)
        .max()
        .unwrap();
    assert!((8..=11).contains(&busiest), "{headers}: {stats}");
}

/// Two jobs on one provider account, each with its own state directory, draw on one day: the
/// second spends only what the first left of `per_day`, and its other rows wait for tomorrow.
#[test]
fn jobs_on_one_account_share_the_days_quota() {
    let sandbox = Sandbox::quick(&[]);
    let ledger = tempfile::tempdir().unwrap();
    let config = "[providers.cashfree]\nper_day = 5\nconcurrency = 2\n";
    let job = |ids: &[&str]| {
        let job = Job::new();
        job.write("bulkverify.toml", config);
        let rows: String = ids.iter().map(|i| format!("{i},LINK-{i}\n")).collect();
        job.write("in.csv", format!("id,verification_id\n{rows}"));
        let mut c = job.run(
            &sandbox,
            "cashfree-digilocker",
            &["--config", "bulkverify.toml", "-o", "out.csv", "in.csv"],
        );
        c.env("BULKVERIFY_LEDGER_DIR", ledger.path());
        let o = output(c);
        (job, o)
    };
    let (_, first) = job(&["a1", "a2", "a3"]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let (second, o) = job(&["b1", "b2", "b3", "b4"]);
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    let rows = rows_by_id(&second);
    let waiting = rows
        .values()
        .filter(|r| r["bv_reason"] == "daily_quota_exhausted")
        .count();
    assert_eq!(waiting, 2, "{rows:?}");
    let lookups = sandbox.stats()["digilocker_lookups"].clone();
    assert_eq!(lookups.as_object().unwrap().len(), 5, "{lookups}");
}
