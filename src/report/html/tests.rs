use super::text::*;
use super::*;
use crate::outcome::Reason;

/// 2026-11-22 02:00:00 UTC.
const NIGHT: i64 = 1_795_312_800;

fn counts(v: [u64; 6]) -> Vec<(Status, u64)> {
    Status::ALL.into_iter().zip(v).collect()
}

fn reason(status: Status, r: Reason, rows: u64) -> ReasonCount {
    ReasonCount {
        status,
        code: r.code.to_string(),
        meaning: r.meaning.to_string(),
        rows,
    }
}

fn run(number: u32, start_s: i64, secs: i64, exit_code: Option<u8>) -> RunRecord {
    let ms = start_s * 1000;
    let end = ms + secs * 1000;
    let span = |phase, from_ms, to_ms| PhaseSpan {
        phase,
        from_ms,
        to_ms,
    };
    RunRecord {
        number,
        started_ms: ms,
        ended_ms: exit_code.map(|_| end),
        exit_code,
        phases: vec![
            span(Phase::ReadAndPlan, ms, ms + 800),
            span(Phase::Send, ms + 800, end - 2_000),
            span(Phase::Poll, ms + 1_500, end - 1_000),
            span(Phase::Merge, end - 1_000, end),
        ],
        calls: 40,
        rate_limited: 3,
        retries: 2,
        paid: 35,
        reused: 5,
    }
}

/// `n` seconds of requests of run `run` from `from`, about `rate` a second, a 429 and a retry
/// every tenth second.
fn seconds(run: u32, from: i64, n: i64, rate: u64) -> Vec<SecondCounts> {
    (0..n)
        .map(|i| {
            let tenth = u64::from(i % 10 == 9);
            SecondCounts {
                second: from + i,
                run,
                sent: rate + tenth,
                accepted: rate,
                rate_limited: tenth,
                retries: tenth,
            }
        })
        .collect()
}

/// A night of one run: 57 seconds of requests at 20 a second under a quota of 25.
fn job() -> JobReport {
    JobReport {
        check: "deepvue-udyam".into(),
        provider: "Deepvue".into(),
        output: "udyam.verified.csv".into(),
        generated_at_ms: (NIGHT + 70) * 1000,
        counts: counts([700, 120, 30, 40, 90, 20]),
        duplicates: 12,
        reasons: vec![
            reason(Status::NotVerified, Reason::REJECTED, 100),
            ReasonCount {
                status: Status::NotVerified,
                code: "invalid_udyam_number".into(),
                meaning: "The provider's own code for its verdict or refusal, lower case.".into(),
                rows: 20,
            },
            reason(Status::NeedsReview, Reason::NO_MATCH, 30),
            reason(Status::InvalidInput, Reason::UDYAM_FORMAT, 40),
            reason(Status::Pending, Reason::DAILY_QUOTA_EXHAUSTED, 90),
            reason(Status::Error, Reason::UNCONFIRMED_SUBMISSION, 20),
        ],
        runs: vec![run(1, NIGHT, 60, Some(EXIT_INCOMPLETE))],
        seconds: seconds(1, NIGHT + 1, 57, 20),
        latency: vec![Latency {
            endpoint: "udyam submit".into(),
            count: 1_140,
            p50_ms: 84.0,
            p90_ms: 210.0,
            p99_ms: 950.0,
            max_ms: 12_400.0,
        }],
        quota: Quota {
            per_second: Some(25.0),
            per_minute: Some(1_800),
            per_day: Some(50_000),
            day_used: Some(41_200),
            pace_note: Some("the provider admitted about 20/s of the 25/s configured".into()),
        },
        spend: Spend {
            paid_calls: 1_140,
            reused: 5,
            price_per_call: Some(0.5),
        },
    }
}

/// The element `<svg class="chart NAME" ...>...</svg>` of a document.
fn chart<'a>(doc: &'a str, name: &str) -> &'a str {
    let start = doc
        .find(&format!("<svg class=\"chart {name}\""))
        .unwrap_or_else(|| panic!("no {name} chart in:\n{doc}"));
    let end = start + doc[start..].find("</svg>").unwrap() + "</svg>".len();
    &doc[start..end]
}

/// The numbers of attribute `name` on the elements that start with `element` (`<rect
/// class="bar`), in order.
fn attrs(svg: &str, element: &str, name: &str) -> Vec<f64> {
    svg.match_indices(element)
        .map(|(at, _)| {
            let tag = &svg[at..at + svg[at..].find('>').unwrap()];
            let value = tag.split(&format!(" {name}=\"")).nth(1).unwrap();
            value[..value.find('"').unwrap()].parse().unwrap()
        })
        .collect()
}

fn polyline_points(svg: &str) -> Vec<usize> {
    svg.split("<polyline class=\"accepted\" points=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].split(' ').count())
        .collect()
}

#[test]
fn every_section_is_there_and_the_charts_have_marks() {
    let doc = render(&job());
    assert!(doc.starts_with("<!DOCTYPE html>"));
    for id in [
        "outcome", "counts", "reasons", "rate", "latency", "runs", "spend", "quota",
    ] {
        assert!(doc.contains(&format!("<section id=\"{id}\"")), "{id}");
    }
    let bars = chart(&doc, "outcomes");
    let widths = attrs(bars, "<rect class=\"bar", "width");
    assert_eq!(widths.len(), 6, "{bars}");
    assert!(widths.iter().all(|w| *w > 0.0), "{widths:?}");
    assert_eq!(widths[0], 690.0, "the largest count fills the bar");
    let rate = chart(&doc, "rate");
    assert_eq!(
        polyline_points(rate),
        [2 * 60],
        "a step for each second of the run"
    );
    assert_eq!(rate.matches("<line class=\"quota\"").count(), 1);
    for mark in ["<rect class=\"mark-429\"", "<rect class=\"mark-retry\""] {
        let heights = attrs(rate, mark, "height");
        assert!(
            heights.len() == 5 && heights.iter().all(|h| *h == 14.0),
            "{mark}: {rate}"
        );
    }
    assert!(rate.contains(">requests/s<") && rate.contains(">time (UTC)<"));
    assert!(rate.contains(">02:00:10<"), "ticks at round times: {rate}");
    assert!(!rate.contains("run-start"), "one run needs no mark");
    let phases = chart(&doc, "phases");
    for class in ["phase-plan", "phase-send", "phase-poll", "phase-merge"] {
        let w = attrs(phases, &format!("<rect class=\"{class}\""), "width");
        assert!(w.len() == 1 && w[0] > 0.0, "{class}: {phases}");
    }
    let day = chart(&doc, "day");
    assert_eq!(attrs(day, "<rect class=\"meter-used\"", "width"), [791.0]);
    for text in [
        "Incomplete (exit 75): 110 rows pending or error",
        "udyam.verified.csv",
        "2026-11-22 02:00:00 UTC",
        "12 rows repeated an earlier identifier",
        "<code>invalid_udyam_number</code>",
        Reason::NO_MATCH.meaning,
        "<td class=\"n\">1,140</td><td class=\"n\">84 ms</td>",
        "12.4 s",
        "41,200 of 50,000 (82%)",
        "about 20/s of the 25/s configured",
        "570.00 (1,140 paid calls at 0.50 each",
        "quota: 25 requests/s",
        "accepted (1,140 of 1,145 sent)",
    ] {
        assert!(doc.contains(text), "{text:?} missing from:\n{doc}");
    }
}

#[test]
fn nothing_is_loaded_from_anywhere() {
    let mut several = job();
    several.runs.push(run(2, NIGHT + 86_400, 30, Some(EXIT_OK)));
    let mut empty = job();
    empty.seconds.clear();
    empty.latency.clear();
    empty.runs.clear();
    for doc in [render(&job()), render(&several), render(&empty)] {
        for reference in [
            "http:", "https:", "src=", "href=", "url(", "@import", "<script", "<link", "<img",
            "<iframe", "<object", "xlink",
        ] {
            assert!(!doc.contains(reference), "{reference} in:\n{doc}");
        }
    }
}

#[test]
fn every_text_is_escaped_and_odd_provider_codes_are_not_shown() {
    let hostile = "<script>alert('x')</script> & \"quoted\"";
    let mut j = job();
    j.check = hostile.into();
    j.provider = hostile.into();
    j.output = hostile.into();
    j.latency[0].endpoint = hostile.into();
    j.quota.pace_note = Some(hostile.into());
    j.reasons = [
        "<b>bold</b>",
        &"a".repeat(65),
        "INVALID_VPA",
        "",
        "ok_code_1",
    ]
    .into_iter()
    .map(|code| ReasonCount {
        status: Status::NotVerified,
        code: code.into(),
        meaning: hostile.into(),
        rows: 1,
    })
    .collect();
    let doc = render(&j);
    assert!(!doc.contains("<script") && !doc.contains("<b>"), "{doc}");
    assert!(!doc.contains(&"a".repeat(65)) && !doc.contains("INVALID_VPA"));
    assert!(
        doc.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;")
    );
    assert_eq!(doc.matches("<code>(other provider code)</code>").count(), 4);
    assert!(doc.contains("<code>ok_code_1</code>"));
}

#[test]
fn a_long_night_is_summed_into_minutes() {
    let mut j = job();
    j.runs = vec![run(1, NIGHT, 10 * 3600, Some(EXIT_OK))];
    j.seconds = seconds(1, NIGHT + 1, 10 * 3600 - 2, 20);
    let t = rate::timeline(&j).unwrap();
    assert_eq!((t.bucket, t.total, t.points.len()), (60, 10 * 3600, 600));
    let accepted: u64 = t.points.iter().map(|p| p.accepted).sum();
    assert_eq!(accepted, 20 * (10 * 3600 - 2));
    assert!(t.points.iter().all(|p| p.seconds == 60 && p.at % 60 == 0));
    let doc = render(&j);
    let rate = chart(&doc, "rate");
    assert_eq!(polyline_points(rate), [2 * 600]);
    assert!(doc.contains("the average over 1 min (the job's 10 h of runs in 600 points)"));
    // A minute's average of 20 a second stays under the quota's 25, which is in the chart.
    let quota_y = attrs(rate, "<line class=\"quota\"", "y1")[0];
    let line = rate.split("points=\"").nth(1).unwrap();
    let ys: Vec<f64> = line[..line.find('"').unwrap()]
        .split(' ')
        .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(
        quota_y > 28.0 && ys.iter().all(|y| *y > quota_y),
        "{quota_y} {ys:?}"
    );
    // Past a day, five minutes a point.
    j.runs = vec![run(1, NIGHT, 30 * 3600, Some(EXIT_OK))];
    j.seconds = seconds(1, NIGHT, 30 * 3600, 2);
    let t = rate::timeline(&j).unwrap();
    assert_eq!(t.bucket, 300);
    assert!(t.points.len() as i64 <= rate::MAX_POINTS);
    // A few seconds: one point each.
    j.runs = vec![run(1, NIGHT, 10, Some(EXIT_OK))];
    j.seconds = seconds(1, NIGHT + 2, 6, 5);
    let t = rate::timeline(&j).unwrap();
    assert_eq!((t.bucket, t.points.len()), (1, 10));
}

#[test]
fn several_runs_sit_one_after_another_and_each_is_marked() {
    let mut j = job();
    let next_night = NIGHT + 86_400;
    j.runs.push(run(2, next_night, 30, None));
    j.seconds.extend(seconds(2, next_night + 1, 20, 10));
    let t = rate::timeline(&j).unwrap();
    assert_eq!(t.stretches.len(), 2);
    assert_eq!(
        (t.stretches[0].offset, t.stretches[1].offset, t.total),
        (0, 60, 60 + 30),
        "the day between the runs is left out"
    );
    let doc = render(&j);
    let rate = chart(&doc, "rate");
    assert_eq!(polyline_points(rate), [2 * 60, 2 * 30]);
    assert_eq!(rate.matches("<line class=\"run-start\"").count(), 2);
    assert!(rate.contains(">run 1<") && rate.contains(">run 2<"));
    assert!(rate.contains("run 2 started 2026-11-23 02:00:00 UTC"));
    assert!(
        rate.contains(">23 Nov "),
        "the day is named where it changes: {rate}"
    );
    assert_eq!(
        attrs(chart(&doc, "phases"), "<rect class=\"phase-send\"", "width").len(),
        2
    );
    assert!(doc.contains("2 runs, from 2026-11-22 02:00:00 UTC, the last one unfinished"));
    assert!(doc.contains("did not finish (killed, or still running)"));
    assert!(
        doc.contains("The last run did not finish"),
        "the job's verdict is its last run's"
    );
}

#[test]
fn empty_jobs_say_so() {
    // A finished job run again: nothing to send.
    let mut done = job();
    done.counts = counts([10, 0, 0, 0, 0, 0]);
    done.reasons.clear();
    done.seconds.clear();
    done.latency.clear();
    done.runs = vec![run(1, NIGHT, 2, Some(EXIT_OK))];
    done.quota.day_used = Some(0);
    let doc = render(&done);
    assert!(doc.contains("No request was sent in this job"));
    assert!(!doc.contains("chart rate"));
    assert!(doc.contains("No row carries a bv_reason."));
    assert!(doc.contains("No answer was timed"));
    assert!(doc.contains("Complete (exit 0)") && doc.contains("Nothing to do"));
    assert_eq!(
        attrs(chart(&doc, "outcomes"), "<rect class=\"bar", "width"),
        [690.0]
    );
    assert!(
        !chart(&doc, "day").contains("meter-used"),
        "none used, no bar"
    );
    // Only invalid rows, and no run recorded yet.
    let mut invalid = done.clone();
    invalid.counts = counts([0, 0, 0, 3, 0, 0]);
    invalid.runs.clear();
    invalid.quota = Quota::default();
    invalid.spend = Spend::default();
    let doc = render(&invalid);
    assert!(doc.contains("No run of this job is recorded."));
    assert!(doc.contains("No run is recorded."));
    assert!(doc.contains("3 rows failed local validation and were never sent"));
    assert!(doc.contains("no price_per_call") && doc.contains("not configured"));
    assert!(!doc.contains("chart day"));
    // No rows at all.
    let mut nothing = invalid;
    nothing.counts = counts([0; 6]);
    let doc = render(&nothing);
    assert!(doc.contains("The job has no rows."));
    assert!(!doc.contains("chart outcomes"));
}

#[test]
fn what_to_do_follows_the_reasons_and_the_exit_code() {
    let mut j = job();
    j.counts = counts([0, 0, 0, 0, 60, 12]);
    j.reasons = vec![
        reason(Status::Pending, Reason::DAILY_QUOTA_EXHAUSTED, 20),
        reason(Status::Pending, Reason::OTP_SENT, 15),
        reason(Status::Pending, Reason::CONSENT_PENDING, 5),
        reason(Status::Pending, Reason::PROVIDER_UNAVAILABLE, 20),
        reason(Status::Error, Reason::UNCONFIRMED_SUBMISSION, 4),
        reason(Status::Error, Reason::TRANSPORT_ERROR, 8),
    ];
    let v = advice::verdict(&j);
    assert_eq!(v.tone, "warn");
    let steps = v.steps.join("\n");
    for text in [
        "20 rows pending (daily_quota_exhausted): the provider's daily quota was used up: \
         tomorrow's run of the same command continues.",
        "15 rows pending (otp_sent): wait for their OTP: fill the otp column",
        "5 rows pending (consent_pending)",
        "20 rows pending (provider_unavailable): the provider kept failing and the run gave up \
         on it: run the same command again later",
        "4 rows error (unconfirmed_submission): their request may have been billed but its \
         answer was lost: run the same command with --resend-unconfirmed",
        "8 rows pending or error for other reasons",
    ] {
        assert!(steps.contains(text), "{text:?} missing from:\n{steps}");
    }
    for (code, tone, words) in [
        (Some(EXIT_OK), "ok", "Complete (exit 0)"),
        (
            Some(EXIT_INCOMPLETE),
            "warn",
            "Incomplete (exit 75): 72 rows pending or error",
        ),
        (Some(EXIT_FATAL), "bad", "Failed (exit 1)"),
        (Some(EXIT_USAGE), "bad", "command line was wrong (exit 2)"),
        (Some(9), "bad", "exit code 9"),
        (None, "bad", "did not finish"),
    ] {
        j.runs[0].exit_code = code;
        let v = advice::verdict(&j);
        assert_eq!(v.tone, tone, "{code:?}");
        assert!(v.headline.contains(words), "{code:?}: {}", v.headline);
    }
}

#[test]
fn the_quota_line_is_the_tighter_window() {
    let q = |per_second, per_minute| Quota {
        per_second,
        per_minute,
        ..Quota::default()
    };
    assert_eq!(
        rate::quota_per_second(&q(Some(25.0), Some(600))),
        Some(10.0)
    );
    assert_eq!(rate::quota_per_second(&q(Some(5.0), Some(600))), Some(5.0));
    assert_eq!(rate::quota_per_second(&q(None, Some(90))), Some(1.5));
    assert_eq!(rate::quota_per_second(&q(None, None)), None);
    let mut j = job();
    j.quota.per_minute = Some(600);
    assert!(render(&j).contains("quota: 10 requests/s"));
    j.quota = Quota::default();
    let doc = render(&j);
    assert!(doc.contains("no quota is configured"));
    assert!(!chart(&doc, "rate").contains("class=\"quota\""));
}

#[test]
fn numbers_and_times_read_plainly() {
    assert_eq!(count(0), "0");
    assert_eq!(count(999), "999");
    assert_eq!(count(1_234_567), "1,234,567");
    assert_eq!(money(0.1 * 3.0), "0.30");
    assert_eq!(money(1_234.996), "1,235.00");
    assert_eq!(duration_ms(850), "850 ms");
    assert_eq!(duration_ms(4_210), "4.2 s");
    assert_eq!(duration_ms(12_000), "12 s");
    assert_eq!(duration_ms(245_000), "4 min 05 s");
    assert_eq!(duration_ms(300_000), "5 min");
    assert_eq!(duration_ms(7_200_000), "2 h");
    assert_eq!(duration_ms(11_530_000), "3 h 12 min");
    assert_eq!(ms_text(0.84), "0.8 ms");
    assert_eq!(utc(NIGHT * 1000 + 999), "2026-11-22 02:00:00 UTC");
    assert_eq!(utc_clock(NIGHT + 65, false), "02:01");
    assert_eq!(utc_day(NIGHT), "22 Nov");
    assert_eq!(rows(1), "1 row");
}
