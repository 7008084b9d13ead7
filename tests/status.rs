//! `bulkverify status` from another shell: against a live run, after it ends, and after a kill.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A slow job: five requests a second, answers after 100 ms.
const SLOW: &str = "
[providers.deepvue]
per_second = 5
per_minute = 300
per_day = 100000
concurrency = 4

[checks.deepvue-udyam]
poll_initial_secs = 0.2
poll_max_secs = 0.5
poll_deadline_secs = 5
";

const ROWS: usize = 40;

fn status(job: &Job, json: bool) -> (i32, String) {
    let mut c = Command::new(BIN);
    c.current_dir(job.dir.path())
        .args(["status", "-o", "out.csv"]);
    if json {
        c.arg("--json");
    }
    let o = c.output().unwrap();
    (
        code(&o),
        String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o),
    )
}

fn status_json(job: &Job) -> serde_json::Value {
    let (code, text) = status(job, true);
    assert_eq!(code, 0, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn sum(v: &serde_json::Value) -> u64 {
    v.as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

#[test]
fn status_reads_a_live_run_without_holding_it_up_and_the_job_after_it_ends() {
    let sandbox = Sandbox::quick(&["--latency-ms", "100"]);
    let job = Job::new();
    job.write("bulkverify.toml", SLOW);
    job.write("in.csv", udyam_input(&udyam_numbers(ROWS)));
    let args = ["--config", "bulkverify.toml", "-o", "out.csv", "in.csv"];
    let mut run = job.run(&sandbox, "deepvue-udyam", &args);
    let mut child = run.stderr(Stdio::null()).spawn().unwrap();

    let mut live = serde_json::Value::Null;
    wait_until(Duration::from_secs(30), "a live run with calls", || {
        if !job.path("out.csv.bulkverify/journal.sqlite").exists() {
            return false;
        }
        live = status_json(&job);
        live["live"] == true && live["calls"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(live["check"], "deepvue-udyam");
    assert_eq!(live["run"]["pid"], child.id());
    assert_eq!(live["run"]["run"], 1);
    assert_eq!(live["phase"], "sending and settling", "{live:#}");
    assert_eq!(live["rows"], ROWS as u64);
    assert_eq!(sum(&live["by_state"]), ROWS as u64, "{live:#}");
    assert_eq!(sum(&live["by_status"]), ROWS as u64, "{live:#}");
    assert!(
        live["rate"]["requests_per_second"].as_f64().unwrap() > 0.0,
        "{live:#}"
    );
    let (code, text) = status(&job, false);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("run 1 is live (pid {})", child.id())),
        "{text}"
    );
    assert!(text.contains("rate: ") && text.contains("calls "), "{text}");

    let ended = child.wait().unwrap();
    assert_eq!(
        ended.code(),
        Some(0),
        "the run went on while status read it"
    );
    let after = status_json(&job);
    assert_eq!(after["live"], false, "{after:#}");
    assert_eq!(after["run"]["exit_code"], 0, "{after:#}");
    assert_eq!(after["by_state"]["done"], ROWS as u64, "{after:#}");
    assert_eq!(after["by_status"]["pending"], 0, "{after:#}");
    assert_eq!(after["by_status"]["error"], 0, "{after:#}");
    assert!(after["calls"].as_u64().unwrap() >= ROWS as u64, "{after:#}");
    assert_eq!(after["eta_seconds"], serde_json::Value::Null);
    let (_, text) = status(&job, false);
    assert!(
        text.contains("no run is live; run 1 ended") && text.contains("complete"),
        "{text}"
    );
}

#[test]
fn status_after_a_kill_says_the_run_stopped_and_the_same_command_resumes() {
    let sandbox = Sandbox::quick(&["--latency-ms", "100"]);
    let job = Job::new();
    job.write("bulkverify.toml", SLOW);
    job.write("in.csv", udyam_input(&udyam_numbers(ROWS)));
    let args = ["--config", "bulkverify.toml", "-o", "out.csv", "in.csv"];
    let mut child = job
        .run(&sandbox, "deepvue-udyam", &args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "a live run", || {
        job.path("out.csv.bulkverify/journal.sqlite").exists() && status_json(&job)["live"] == true
    });
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let killed = status_json(&job);
    assert_eq!(killed["live"], false, "{killed:#}");
    assert_eq!(killed["run"]["exit_code"], serde_json::Value::Null);
    let (_, text) = status(&job, false);
    assert!(text.contains("stopped without finishing"), "{text}");

    let o = output(job.run(&sandbox, "deepvue-udyam", &args));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let resumed = status_json(&job);
    assert_eq!(resumed["runs"], 2);
    assert_eq!(resumed["run"]["exit_code"], 0);
}

#[test]
fn status_of_no_state_says_so() {
    let job = Job::new();
    let (code, text) = status(&job, false);
    assert_eq!(code, 1);
    assert!(
        text.contains("out.csv.bulkverify holds no bulkverify job"),
        "{text}"
    );
}
