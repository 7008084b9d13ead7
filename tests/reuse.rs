//! The account's results store across jobs: overlapping exports pay each identifier once, an
//! answer past its check's reuse_within is paid again, only final answers are reused, two
//! accounts never share, and `purge --results` empties the store.

mod common;

use std::collections::BTreeMap;

use common::*;

const CONFIG: &str = "
[providers.deepvue]
per_second = 1000
per_minute = 60000
per_day = 1000000
concurrency = 16
max_attempts = 2

[checks.deepvue-udyam]
poll_initial_secs = 0.2
poll_max_secs = 0.5
poll_deadline_secs = 2
";

type Rows = BTreeMap<String, BTreeMap<String, String>>;

/// Runs the udyam check over `input` into `out`, in `job`; returns the output's rows by id
/// and the summary.
fn night(job: &Job, sandbox: &Sandbox, input: &str, out: &str, extra: &[&str]) -> (Rows, String) {
    let name = format!("{out}.in.csv");
    job.write(&name, input);
    let mut args = vec!["--config", "bulkverify.toml", "-o", out];
    args.extend_from_slice(extra);
    args.push(&name);
    let o = output(job.run(sandbox, "deepvue-udyam", &args));
    assert!(matches!(code(&o), 0 | 75), "{}", stderr(&o));
    let (headers, rows) = read_csv(&job.path(out));
    let rows = rows
        .iter()
        .map(|r| (r[0].clone(), row_map(&headers, r)))
        .collect();
    (rows, stderr(&o))
}

/// `bulkverify purge --results ARGS` on the job's ledger; returns its stderr.
fn purge_results(job: &Job, args: &[&str]) -> String {
    let o = std::process::Command::new(BIN)
        .args(["purge", "--results"])
        .args(args)
        .env("BULKVERIFY_LEDGER_DIR", job.path("ledger"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stderr(&o)
}

fn paid(sandbox: &Sandbox) -> u64 {
    sandbox.submissions().values().sum()
}

/// January's 50 rows, then February's 60: the same 50 (in another order, one twice) and 10
/// new. February pays the 10 only, and its 50 old rows carry January's answers and times.
#[test]
fn overlapping_exports_pay_each_identifier_once() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let numbers = udyam_numbers(60);
    let (jan, _) = night(&job, &sandbox, &udyam_input(&numbers[..50]), "jan.csv", &[]);
    assert_eq!(paid(&sandbox), 50);
    let mut feb_numbers: Vec<String> = numbers.iter().rev().cloned().collect();
    feb_numbers.push(numbers[3].clone());
    let mut feb_input = String::from("id,udyam\n");
    for (i, n) in feb_numbers.iter().enumerate() {
        feb_input.push_str(&format!("f{i:03},{n}\n"));
    }
    job.write("feb.csv.in.csv", &feb_input);
    let plan = output(job.plan(
        &sandbox,
        "deepvue-udyam",
        &[
            "--config",
            "bulkverify.toml",
            "-o",
            "feb.csv",
            "feb.csv.in.csv",
        ],
    ));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        (&plan["reusable"], &plan["duplicates"], &plan["paid_calls"]),
        (&50.into(), &1.into(), &10.into()),
        "{plan:#}"
    );
    assert_eq!(paid(&sandbox), 50, "plan pays nothing");
    let (feb, summary) = night(&job, &sandbox, &feb_input, "feb.csv", &[]);
    assert_eq!(paid(&sandbox), 60, "60 distinct identifiers, 60 paid");
    assert!(sandbox.submissions().values().all(|&n| n == 1));
    assert!(
        summary.contains("reused from earlier jobs on the account: 50 rows (50 paid calls saved"),
        "{summary}"
    );
    let jan_by_number: BTreeMap<&str, &BTreeMap<String, String>> =
        jan.values().map(|r| (r["udyam"].as_str(), r)).collect();
    let mut reused = 0;
    for (i, n) in feb_numbers.iter().enumerate() {
        let row = &feb[&format!("f{i:03}")];
        assert_eq!(row["bv_status"], "verified", "{row:?}");
        match jan_by_number.get(n.as_str()) {
            Some(j) if row["bv_duplicate_of"].is_empty() => {
                reused += 1;
                assert_eq!(row["bv_reused"], "yes");
                for column in ["bv_checked_at", "bv_request_id", "bv_enterprise_name"] {
                    assert_eq!(row[column], j[column], "{column} of {n}");
                }
                assert_eq!(row["bv_attempts"], "", "no call was made");
            }
            Some(_) => assert_eq!(row["bv_reused"], "yes", "a duplicate of a reused row"),
            None => assert_eq!(row["bv_reused"], "", "{n} is new"),
        }
    }
    assert_eq!(reused, 50);

    // --no-reuse pays again; the same job run again pays nothing.
    let (_, summary) = night(&job, &sandbox, &feb_input, "again.csv", &["--no-reuse"]);
    assert_eq!(paid(&sandbox), 120, "{summary}");
    night(&job, &sandbox, &feb_input, "feb.csv", &[]);
    assert_eq!(paid(&sandbox), 120);
}

/// An answer obtained longer ago than the check's reuse_within is paid for again.
#[test]
fn an_answer_older_than_reuse_within_is_paid_again() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write(
        "bulkverify.toml",
        format!("{CONFIG}reuse_within = \"3s\"\n"),
    );
    let input = udyam_input(&udyam_numbers(5));
    night(&job, &sandbox, &input, "a.csv", &[]);
    let (b, _) = night(&job, &sandbox, &input, "b.csv", &[]);
    assert_eq!(paid(&sandbox), 5, "reused within 3 s");
    assert!(b.values().all(|r| r["bv_reused"] == "yes"));
    std::thread::sleep(std::time::Duration::from_millis(4_100));
    let (c, _) = night(&job, &sandbox, &input, "c.csv", &[]);
    assert_eq!(paid(&sandbox), 10, "older than 3 s: paid again");
    assert!(c.values().all(|r| r["bv_reused"].is_empty()));
    // The newer answer replaced the old one: it is reused now.
    let (d, _) = night(&job, &sandbox, &input, "d.csv", &[]);
    assert_eq!(paid(&sandbox), 10);
    for (id, row) in &d {
        assert_eq!(row["bv_checked_at"], c[id]["bv_checked_at"]);
    }
    // `0` turns reuse off.
    job.write("bulkverify.toml", format!("{CONFIG}reuse_within = \"0\"\n"));
    night(&job, &sandbox, &input, "e.csv", &[]);
    assert_eq!(paid(&sandbox), 15);
}

/// Only the provider's final word is reused: rows that ended pending or in error are sent
/// again by the next job, while a `not_verified` answer is reused like a `verified` one.
#[test]
fn pending_and_error_rows_are_never_reused() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let input = "id,udyam\n\
                 nf,UDYAM-MH-01-9000002\n\
                 slow,UDYAM-MH-01-9000003\n\
                 down,UDYAM-MH-01-9000004\n\
                 ok,UDYAM-MH-01-0000042\n";
    let (first, _) = night(&job, &sandbox, input, "first.csv", &[]);
    assert_eq!(first["nf"]["bv_status"], "not_verified");
    assert_eq!(first["slow"]["bv_status"], "pending");
    assert_eq!(first["down"]["bv_status"], "error");
    let subs = sandbox.submissions();
    let (second, _) = night(&job, &sandbox, input, "second.csv", &[]);
    let after = sandbox.submissions();
    for id in ["nf", "ok"] {
        assert_eq!(second[id]["bv_reused"], "yes", "{id}");
    }
    for id in ["slow", "down"] {
        assert_eq!(second[id]["bv_reused"], "", "{id} must be sent again");
        assert_ne!(second[id]["bv_attempts"], "", "{id} was sent");
    }
    assert_eq!(
        after["UDYAM-MH-01-9000003"],
        subs["UDYAM-MH-01-9000003"] + 1,
        "the pending row was paid again"
    );
    assert_eq!(after["UDYAM-MH-01-0000042"], 1);
}

/// The same export on two accounts (another provider endpoint, the same machine and store):
/// the second account pays for every row.
#[test]
fn two_accounts_never_share_answers() {
    let (one, two) = (Sandbox::quick(&[]), Sandbox::quick(&[]));
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let input = udyam_input(&udyam_numbers(20));
    night(&job, &one, &input, "one.csv", &[]);
    let (rows, _) = night(&job, &two, &input, "two.csv", &[]);
    assert_eq!(paid(&one), 20);
    assert_eq!(paid(&two), 20, "another account pays for its own answers");
    assert!(rows.values().all(|r| r["bv_reused"].is_empty()));
}

/// The store is private, holds no identifier in clear, and `purge --results` empties it:
/// `--older-than` keeps what is younger.
#[test]
fn the_store_is_private_and_purged_on_demand() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let numbers = udyam_numbers(10);
    let input = udyam_input(&numbers);
    night(&job, &sandbox, &input, "a.csv", &[]);
    let store = job.path("ledger/results.sqlite");
    assert!(store.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for (path, _) in files_under(&job.path("ledger")) {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        let mode = std::fs::metadata(job.path("ledger"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    for (path, bytes) in files_under(&job.path("ledger")) {
        for n in &numbers {
            // Without its prefix too, as a provider might echo it in another form.
            assert!(
                !contains_bytes(&bytes, &n[6..]),
                "{n} in {}",
                path.display()
            );
        }
    }
    let purge = |args: &[&str]| purge_results(&job, args);
    let kept = purge(&["--older-than", "1h"]);
    assert!(kept.contains("deleted 0 answers"), "{kept}");
    night(&job, &sandbox, &input, "b.csv", &[]);
    assert_eq!(paid(&sandbox), 10, "younger than an hour: kept and reused");
    let gone = purge(&[]);
    assert!(gone.contains("deleted 10 answers"), "{gone}");
    night(&job, &sandbox, &input, "c.csv", &[]);
    assert_eq!(paid(&sandbox), 20, "purged: paid again");
}

/// A month of nights: five cumulative exports, each about 20% larger than the last, with
/// repeated rows and invalid ones, the third killed (SIGKILL) while it sends and run again.
/// Paid calls ÷ distinct valid identifiers is 1.000 plus only the resends the kill forced:
/// rows it held as unconfirmed, which a later night pays again and the outputs report.
#[test]
fn a_month_of_nights_pays_each_identifier_once() {
    let sandbox = Sandbox::quick(&["--latency-ms", "50"]);
    let job = Job::new();
    job.write(
        "bulkverify.toml",
        CONFIG.replace("per_second = 1000", "per_second = 25"),
    );
    let numbers = udyam_numbers(210);
    let mut distinct = std::collections::BTreeSet::new();
    let mut held_by_kill = 0;
    for k in 0..5u32 {
        let n = (100.0 * 1.2f64.powi(k as i32)).round() as usize;
        let mut rows: Vec<String> = numbers[..n].to_vec();
        distinct.extend(rows.iter().cloned());
        if k % 2 == 1 {
            rows.reverse();
        }
        let mut input = String::from("id,udyam\n");
        for (i, number) in rows.iter().enumerate() {
            input.push_str(&format!("n{k}-{i:04},{number}\n"));
            if i % 10 == 0 {
                input.push_str(&format!("n{k}-{i:04}-again,{number}\n"));
            }
            if i % 15 == 0 {
                input.push_str(&format!("n{k}-{i:04}-bad,UDYAM-{i}\n"));
            }
        }
        let name = format!("night{k}.csv");
        job.write(&format!("{name}.in.csv"), &input);
        let args = ["--config", "bulkverify.toml", "-o", &name];
        if k == 2 {
            let before = paid(&sandbox);
            let mut c = job.run(&sandbox, "deepvue-udyam", &args);
            c.arg(format!("{name}.in.csv"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let mut child = c.spawn().unwrap();
            wait_until(std::time::Duration::from_secs(30), "the new rows", || {
                paid(&sandbox) >= before + 8
            });
            signal(&child, libc::SIGKILL);
            child.wait().unwrap();
        }
        let (out, summary) = night(&job, &sandbox, &input, &name, &[]);
        let held = out
            .values()
            .filter(|r| r["bv_reason"] == "unconfirmed_submission")
            .count();
        if k == 2 {
            held_by_kill = held;
        }
        let open = out.values().filter(|r| r["bv_status"] == "pending").count();
        assert_eq!(open, 0, "night {k}: {summary}");
    }
    let paid = paid(&sandbox);
    let ratio = paid as f64 / distinct.len() as f64;
    println!(
        "a month of nights: {paid} paid calls for {} distinct valid identifiers: {ratio:.3} \
         ({held_by_kill} rows held by the kill)",
        distinct.len()
    );
    assert!(
        paid as usize <= distinct.len() + held_by_kill,
        "{paid} paid for {} identifiers, {held_by_kill} held by the kill",
        distinct.len()
    );
    assert!(paid as usize >= distinct.len());
}

/// A run that wrote its output but was killed before the store took its answers hands them
/// over the next time, though its output is left as it is.
#[test]
fn answers_the_store_missed_are_handed_over_by_the_next_run() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let numbers = udyam_numbers(20);
    let input = udyam_input(&numbers);
    job.write("a.csv.in.csv", &input);
    let run = || {
        let mut c = job.run(
            &sandbox,
            "deepvue-udyam",
            &["--config", "bulkverify.toml", "-o", "a.csv", "a.csv.in.csv"],
        );
        c.env("RUST_LOG", "bulkverify=info");
        let o = output(c);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        stderr(&o)
    };
    let log = run();
    assert!(
        log.contains("kept 20 answers in the results store"),
        "{log}"
    );
    // What a kill after the output and before the store leaves.
    purge_results(&job, &[]);
    rusqlite::Connection::open(job.path("a.csv.bulkverify/journal.sqlite"))
        .unwrap()
        .execute(
            "UPDATE meta SET value = '0' WHERE key = 'answers_stored'",
            [],
        )
        .unwrap();
    let log = run();
    assert!(log.contains("left as it is"), "{log}");
    assert!(
        log.contains("kept 20 answers in the results store"),
        "{log}"
    );
    assert_eq!(paid(&sandbox), 20);
    let (rows, _) = night(&job, &sandbox, &input, "b.csv", &[]);
    assert_eq!(paid(&sandbox), 20, "the second job reuses every answer");
    assert!(rows.values().all(|r| r["bv_reused"] == "yes"));
}
