//! The run's results for monitoring, from real runs against the sandbox: `--summary-json`
//! validates against `docs/summary.schema.json` on a complete, an incomplete and a failed run;
//! `--metrics-file` passes `promtool check metrics` and keeps the job's last success across
//! runs that did not succeed; the alert rules pass `promtool check rules` and their own
//! `promtool test rules`, and the README shows them as committed.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

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
";

/// The summary JSON at `path`, checked against the committed schema.
fn valid_summary(path: &Path) -> Value {
    let schema_path = package_dir().join("docs/summary.schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(&schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid draft 2020-12 schema");
    let json: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\nin {json:#}");
    // The schema admits nothing it does not name.
    let mut extra = json.clone();
    extra["rows_per_second"] = Value::from(1);
    assert!(!validator.is_valid(&extra));
    json
}

/// `promtool ARGS`, with `stdin`; fails saying how to install it when it is missing.
fn promtool(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let child = Command::new("promtool")
        .args(args)
        .current_dir(package_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: it comes with Debian's prometheus package \
             (`apt-get install --no-install-recommends prometheus`, which .ci/run does)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The metrics file at `path`, passed through `promtool check metrics` (parse and lint).
fn checked_metrics(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let o = promtool(&["check", "metrics"], text.as_bytes());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && said.trim().is_empty(),
        "{said}\nin\n{text}"
    );
    text
}

/// The value of the first series of `metric` whose labels contain `having`.
fn value(text: &str, metric: &str, having: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(having))
        .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no {metric} with {having} in\n{text}"))
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// One cron job over three nights: a complete run, an incomplete one on the next night's
/// export, a failed one. Each writes a summary that the schema admits and metrics that
/// promtool passes; the last success stays the first night's; nothing else is left in the
/// collector's directory.
#[cfg(unix)]
#[test]
fn summary_and_metrics_on_a_complete_an_incomplete_and_a_failed_run() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    std::fs::create_dir(job.path("textfile")).unwrap();
    let prom = job.path("textfile/udyam.prom");
    let monitored = [
        "--summary-json",
        "night.json",
        "--metrics-file",
        "textfile/udyam.prom",
        "--config",
        "bulkverify.toml",
    ];
    let night = |args: &[&str]| job.run(&sandbox, "deepvue-udyam", &[&monitored, args].concat());
    let only_the_prom_file = || {
        let names: Vec<_> = std::fs::read_dir(job.path("textfile"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["udyam.prom"], "no temporary file is left");
    };

    job.write("in.csv", udyam_input(&udyam_numbers(3)));
    let o = output(night(&["-o", "out.csv", "in.csv"]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let json = valid_summary(&job.path("night.json"));
    assert_eq!(
        (&json["exit_code"], &json["error"], &json["output"]),
        (&Value::from(0), &Value::Null, &Value::from("out.csv"))
    );
    assert_eq!(json["rows"]["total"], 3);
    assert_eq!(json["rows"]["by_status"]["verified"], 3);
    assert_eq!(json["rows"]["by_status"]["error"], 0);
    assert_eq!((mode(&job.path("night.json")), mode(&prom)), (0o600, 0o644));
    let first = checked_metrics(&prom);
    let labels = "check=\"deepvue-udyam\",output=\"out.csv\"";
    assert_eq!(value(&first, "bulkverify_rows", "status=\"verified\""), 3.0);
    assert_eq!(value(&first, "bulkverify_rows", "status=\"pending\""), 0.0);
    assert_eq!(
        value(&first, "bulkverify_calls_total", labels),
        json["calls"].as_f64().unwrap()
    );
    assert_eq!(value(&first, "bulkverify_last_run_exit_code", labels), 0.0);
    let success = value(&first, "bulkverify_last_success_timestamp_seconds", labels);
    assert_eq!(
        success,
        value(&first, "bulkverify_last_run_timestamp_seconds", labels)
    );
    only_the_prom_file();

    // The next night's export, over the cap: rows stay pending.
    job.write("more.csv", udyam_input(&udyam_numbers(6)));
    let more = ["--max-paid-calls", "1", "-o", "more.out.csv", "more.csv"];
    let o = output(night(&more));
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    let json = valid_summary(&job.path("night.json"));
    assert_eq!(
        (&json["exit_code"], &json["error"]),
        (&Value::from(75), &Value::Null)
    );
    assert!(
        json["rows"]["by_status"]["pending"].as_u64() > Some(0),
        "{json:#}"
    );
    assert_eq!(
        (&json["max_paid_calls"], &json["paid_calls"]),
        (&Value::from(1), &Value::from(1))
    );
    let second = checked_metrics(&prom);
    let labels = "check=\"deepvue-udyam\",output=\"more.out.csv\"";
    assert_eq!(
        value(&second, "bulkverify_last_run_exit_code", labels),
        75.0
    );
    assert_eq!(
        value(&second, "bulkverify_last_success_timestamp_seconds", labels),
        success
    );
    let calls = value(&second, "bulkverify_calls_total", labels);
    only_the_prom_file();

    // The same night's job again, with a secret the provider refuses.
    let mut c = night(&more);
    c.env("DEEPVUE_CLIENT_SECRET", "free_tier_wrong");
    let o = output(c);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let json = valid_summary(&job.path("night.json"));
    assert_eq!(
        (&json["exit_code"], &json["rows"]),
        (&Value::from(1), &Value::Null)
    );
    assert_eq!(json["error"]["kind"], "sending");
    let third = checked_metrics(&prom);
    assert!(
        !third.contains("bulkverify_rows{"),
        "a failed run wrote no rows"
    );
    assert_eq!(value(&third, "bulkverify_last_run_exit_code", labels), 1.0);
    assert_eq!(
        value(&third, "bulkverify_last_success_timestamp_seconds", labels),
        success
    );
    assert_eq!(
        value(&third, "bulkverify_calls_total", labels),
        calls + json["calls"].as_f64().unwrap(),
        "the counters go on over the job's runs"
    );
    only_the_prom_file();
}

/// A failed run's summary says what failed in fixed words, never the error's own text (which
/// can quote a line of the config, an input's header or the provider's words).
#[test]
fn a_failed_run_says_what_failed_in_fixed_words() {
    let sandbox = Sandbox::quick(&["--udyam-delay-ms", "3000"]);
    let job = Job::new();
    job.write("ok.toml", FAST);
    job.write("bad.toml", "[providers.deepvue]\nper_minte = 5\n");
    job.write("in.csv", udyam_input(&udyam_numbers(3)));
    job.write("headerless.csv", "UDYAM-MH-01-0000001\n");
    let summary = ["--summary-json", "failed.json"];
    // (arguments, what stderr says, the kind)
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--config", "bad.toml", "in.csv"], "per_minte", "config"),
        (
            &["--config", "ok.toml", "missing.csv"],
            "missing.csv",
            "input",
        ),
        (
            &["--config", "ok.toml", "headerless.csv"],
            "looks like a row of values",
            "input",
        ),
    ];
    for (args, says, kind) in cases {
        let o = output(job.run(&sandbox, "deepvue-udyam", &[&summary[..], args].concat()));
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        let json = valid_summary(&job.path("failed.json"));
        assert_eq!(json["error"]["kind"], *kind, "{args:?}");
        assert!(!json.to_string().contains(says), "{args:?}: {json:#}");
    }
    let mut c = job.run(
        &sandbox,
        "deepvue-udyam",
        &[&summary[..], &["--config", "ok.toml", "in.csv"]].concat(),
    );
    c.env_remove("DEEPVUE_CLIENT_SECRET");
    let o = output(c);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(
        valid_summary(&job.path("failed.json"))["error"]["kind"],
        "credentials"
    );

    // The previous night's run still going: this one is refused and says so.
    let mut first = job
        .run(
            &sandbox,
            "deepvue-udyam",
            &["--config", "ok.toml", "-o", "out.csv", "in.csv"],
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "the first run to submit", || {
        !sandbox.submissions().is_empty()
    });
    let args = [
        &summary[..],
        &["--config", "ok.toml", "-o", "out.csv", "in.csv"],
    ]
    .concat();
    let o = output(job.run(&sandbox, "deepvue-udyam", &args));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let json = valid_summary(&job.path("failed.json"));
    assert_eq!(json["error"]["kind"], "state_in_use");
    assert_eq!(json["calls"], 0);
    assert_eq!(first.wait().unwrap().code(), Some(0));
}

/// A monitoring file whose directory does not exist stops the run before any call, rather
/// than after a night of them; the other file still says why.
#[test]
fn a_monitoring_file_in_a_missing_directory_is_refused_before_any_call() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", FAST);
    job.write("in.csv", udyam_input(&udyam_numbers(3)));
    let args = [
        "--summary-json",
        "night.json",
        "--metrics-file",
        "textfile/udyam.prom",
        "--config",
        "bulkverify.toml",
        "in.csv",
    ];
    let o = output(job.run(&sandbox, "deepvue-udyam", &args));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("--metrics-file textfile/udyam.prom: the directory textfile does not exist"),
        "{}",
        stderr(&o)
    );
    assert!(sandbox.submissions().is_empty());
    assert_eq!(
        valid_summary(&job.path("night.json"))["error"]["kind"],
        "config"
    );
}

/// The alert rules pass promtool, fire when their tests say (a day without a success, a
/// failed run; not an incomplete run), and are the README's.
#[test]
fn the_alert_rules_pass_promtool_and_are_the_readmes() {
    for args in [
        ["check", "rules", "docs/bulkverify.rules.yml"],
        ["test", "rules", "docs/bulkverify.rules.test.yml"],
    ] {
        let o = promtool(&args, b"");
        assert!(
            o.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let rules = std::fs::read_to_string(package_dir().join("docs/bulkverify.rules.yml")).unwrap();
    let readme = std::fs::read_to_string(package_dir().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```yaml\n{rules}```")),
        "the README's monitoring section shows docs/bulkverify.rules.yml as it is"
    );
}
