//! The run report as a browser shows it: headless Chromium opens the report and finds its
//! charts drawn, nothing logged to the console and nothing asked of the network.

mod common;

use std::process::Command;

use bulkverify::outcome::{Reason, Status};
use bulkverify::report::html::{
    JobReport, Latency, Phase, PhaseSpan, Quota, ReasonCount, RunRecord, SecondCounts, Spend,
    render,
};
use common::browser::{self, Page};
use common::*;

/// What every report must be in a browser: each of `charts` laid out with marks of its
/// `mark` class that take room, a real screenshot, a silent console, no request.
fn assert_drawn_and_self_contained(page: &Page, charts: &[(&str, &str, usize)]) {
    for (class, mark, at_least) in charts {
        let chart = page
            .charts
            .iter()
            .find(|c| c.class == *class)
            .unwrap_or_else(|| panic!("no {class:?} among {:#?}", page.charts));
        assert!(chart.width > 600.0 && chart.height > 20.0, "{chart:?}");
        let drawn = chart.drawn(mark);
        assert!(
            drawn.len() >= *at_least,
            "{class:?} has {} {mark:?} marks with a size, not {at_least}: {chart:?}",
            drawn.len()
        );
    }
    let png = &page.screenshot;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is no PNG"
    );
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!(size(16), 1280, "its width");
    assert!(size(20) >= 1200, "a whole report is taller: {}", size(20));
    assert!(
        png.len() > 30_000,
        "a report's picture is more than a blank page"
    );
    assert!(page.console.is_empty(), "console: {:#?}", page.console);
    assert!(page.requests.is_empty(), "requests: {:#?}", page.requests);
}

#[test]
fn the_report_of_a_sandbox_job_shows_its_charts_and_loads_nothing() {
    let job = Job::new();
    let fixture = package_dir().join("fixtures/udyam.csv");
    let out = job.path("out.csv");
    let o = Command::new(BIN)
        .current_dir(job.dir.path())
        .args([
            "run",
            "--check",
            "deepvue-udyam",
            "--sandbox",
            "--progress",
            "off",
        ])
        .arg(&fixture)
        .arg("-o")
        .arg(&out)
        .env_remove("RUST_LOG")
        .env("BULKVERIFY_LEDGER_DIR", job.path("ledger"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let report = job.path("out.csv.report.html");
    assert!(
        report.exists(),
        "no report beside the output: {}",
        stderr(&o)
    );
    let page = browser::open(&report);
    for id in [
        "outcome", "counts", "reasons", "rate", "latency", "runs", "spend", "quota",
    ] {
        assert!(page.dom.contains(&format!("<section id=\"{id}\"")), "{id}");
    }
    assert!(page.dom.contains("deepvue-udyam") && page.dom.contains("Complete (exit 0)"));
    assert_drawn_and_self_contained(
        &page,
        &[
            ("chart outcomes", "bar", 3),
            ("chart rate", "accepted", 1),
            ("chart phases", "phase-send", 1),
        ],
    );
}

/// 2026-11-22 02:00:00 UTC.
const NIGHT: i64 = 1_795_312_800;

/// A night of eight hours that ran into the daily quota, resumed the next night for half an
/// hour, with 429s in its first hour.
fn resumed_night() -> JobReport {
    let run = |number, start: i64, secs: i64, exit_code| {
        let (ms, end) = (start * 1000, (start + secs) * 1000);
        let span = |phase, from_ms, to_ms| PhaseSpan {
            phase,
            from_ms,
            to_ms,
        };
        RunRecord {
            number,
            started_ms: ms,
            ended_ms: Some(end),
            exit_code: Some(exit_code),
            phases: vec![
                span(Phase::ReadAndPlan, ms, ms + 40_000),
                span(Phase::Send, ms + 40_000, end - 90_000),
                span(Phase::Poll, ms + 45_000, end - 60_000),
                span(Phase::Merge, end - 60_000, end),
            ],
            calls: 400_000,
            rate_limited: 900,
            retries: 900,
            paid: 399_000,
            reused: 100,
        }
    };
    let seconds = |run, from: i64, to: i64| {
        (from..to).map(move |second| {
            let throttled = u64::from(second < NIGHT + 3_600 && second % 4 == 0);
            SecondCounts {
                second,
                run,
                sent: 20 + throttled,
                accepted: 20,
                rate_limited: throttled,
                retries: throttled,
            }
        })
    };
    let next = NIGHT + 86_400;
    let reason = |status, r: Reason, rows| ReasonCount {
        status,
        code: r.code.into(),
        meaning: r.meaning.into(),
        rows,
    };
    JobReport {
        check: "deepvue-udyam".into(),
        provider: "Deepvue".into(),
        output: "udyam.verified.csv".into(),
        generated_at_ms: (next + 1_800) * 1000,
        counts: Status::ALL
            .into_iter()
            .zip([540_000, 61_000, 9_000, 4_000, 0, 0])
            .collect(),
        duplicates: 1_200,
        reasons: vec![
            reason(Status::NotVerified, Reason::REJECTED, 61_000),
            reason(Status::NeedsReview, Reason::NO_MATCH, 9_000),
            reason(Status::InvalidInput, Reason::UDYAM_FORMAT, 4_000),
        ],
        runs: vec![run(1, NIGHT, 8 * 3_600, 75), run(2, next, 1_800, 0)],
        seconds: seconds(1, NIGHT + 40, NIGHT + 8 * 3_600 - 90)
            .chain(seconds(2, next + 40, next + 1_700))
            .collect(),
        latency: vec![Latency {
            endpoint: "udyam submit".into(),
            count: 600_000,
            p50_ms: 84.0,
            p90_ms: 210.0,
            p99_ms: 950.0,
            max_ms: 12_400.0,
        }],
        quota: Quota {
            per_second: Some(25.0),
            per_minute: Some(1_500),
            per_day: Some(600_000),
            day_used: Some(38_000),
            pace_note: None,
        },
        spend: Spend {
            paid_calls: 599_000,
            reused: 100,
            price_per_call: Some(0.5),
        },
    }
}

/// The renderer's document in a browser without the binary: a job of two nights, its minutes
/// on one line, each run marked.
#[test]
fn a_resumed_nights_report_draws_every_chart_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("night.report.html");
    std::fs::write(&path, render(&resumed_night())).unwrap();
    let page = browser::open(&path);
    assert_drawn_and_self_contained(
        &page,
        &[
            ("chart outcomes", "bar", 4),
            ("chart rate", "accepted", 2),
            ("chart rate", "quota", 1),
            ("chart rate", "run-start", 2),
            ("chart rate", "mark-429", 60),
            ("chart rate", "mark-retry", 60),
            ("chart phases", "phase-send", 2),
            ("chart day", "meter-used", 1),
        ],
    );
    assert!(page.dom.contains("Complete (exit 0)"));
    assert!(page.dom.contains("2 runs, one after another"));
}

/// The harness sees what it must: a page that logs and fetches is caught at both.
#[test]
fn the_browser_harness_sees_console_messages_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leaky.html");
    std::fs::write(
        &path,
        "<!DOCTYPE html><html><body><svg class=\"c\" width=\"200\" height=\"50\">\
         <rect class=\"m\" width=\"100\" height=\"20\"></rect><rect class=\"m\"></rect></svg>\
         <img src=\"http://example.invalid/pixel.png\">\
         <script>console.error('boom'); fetch('http://127.0.0.1:9/beacon').catch(() => {});\
         </script></body></html>",
    )
    .unwrap();
    let page = browser::open(&path);
    assert!(
        page.console.iter().any(|m| m.contains("\"boom\"")),
        "{:#?}",
        page.console
    );
    for url in [
        "http://example.invalid/pixel.png",
        "http://127.0.0.1:9/beacon",
    ] {
        assert!(
            page.requests.iter().any(|r| r == url),
            "{url}: {:#?}",
            page.requests
        );
    }
    assert!(
        page.requests.iter().all(|r| !r.contains("google")),
        "the browser's own requests are left out: {:#?}",
        page.requests
    );
    let chart = &page.charts[0];
    assert_eq!(
        (chart.class.as_str(), chart.width, chart.height),
        ("c", 200.0, 50.0)
    );
    assert_eq!(
        chart.drawn("m").len(),
        1,
        "the rect without a size is not drawn"
    );
    assert!(page.dom.contains("<rect class=\"m\""));
    assert!(!page.dom.contains("bv-probe"), "the DOM is the page's own");
}

/// The same job over two runs: the first stops at its cap on paid calls (exit 75), the second
/// finishes. The report covers the job and marks each run; `--report` moves it and
/// `--no-report` leaves none.
#[test]
fn the_report_of_a_resumed_job_covers_every_run_and_goes_where_it_is_told() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("in.csv", udyam_input(&udyam_numbers(6)));
    let args = ["-o", "out.csv", "in.csv"];
    let o = output(job.run(
        &sandbox,
        "deepvue-udyam",
        &[&["--max-paid-calls", "2"][..], &args].concat(),
    ));
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    let first = std::fs::read_to_string(job.path("out.csv.report.html")).unwrap();
    assert!(
        first.contains("Incomplete (exit 75)"),
        "the first run's verdict"
    );
    assert!(
        first.contains("paid_call_limit"),
        "the rows left, by reason"
    );

    let o = output(job.run(&sandbox, "deepvue-udyam", &args));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let report = job.path("out.csv.report.html");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&report).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the report is private");
    }
    let page = browser::open(&report);
    assert!(
        page.dom.contains("Complete (exit 0)"),
        "the job's verdict is its last run's"
    );
    for run in ["run 1", "run 2"] {
        assert!(page.dom.contains(run), "{run} is marked");
    }
    assert!(
        !page.dom.contains("paid_call_limit"),
        "no row is left at the cap"
    );
    assert_drawn_and_self_contained(
        &page,
        &[
            ("chart outcomes", "bar", 1),
            ("chart rate", "accepted", 2),
            ("chart phases", "phase-send", 2),
        ],
    );

    std::fs::create_dir(job.path("reports")).unwrap();
    let o = output(job.run(
        &sandbox,
        "deepvue-udyam",
        &[&["--report", "reports/udyam.html"][..], &args].concat(),
    ));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let moved = std::fs::read_to_string(job.path("reports/udyam.html")).unwrap();
    assert!(
        moved.contains("run 3"),
        "a third run, which had nothing to send"
    );

    std::fs::remove_file(&report).unwrap();
    let o = output(job.run(
        &sandbox,
        "deepvue-udyam",
        &[&["--no-report"][..], &args].concat(),
    ));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!report.exists(), "--no-report writes none");

    let o = output(job.run(
        &sandbox,
        "deepvue-udyam",
        &[&["--report", "missing/udyam.html"][..], &args].concat(),
    ));
    assert_eq!(
        code(&o),
        1,
        "a report nowhere to go is refused before any call"
    );
    assert!(
        stderr(&o).contains("--report missing/udyam.html"),
        "{}",
        stderr(&o)
    );
}
