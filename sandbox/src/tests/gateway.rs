//! What every provider's requests share, over HTTP and in the flags: the defaults and the
//! banner, refusals to start, the stats, injected 5xx answers, resets, outages and stuck jobs.

use clap::Parser;

use super::*;

#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(flatten)]
    config: SandboxConfig,
}

/// An error and its sources, for asserting on the transport error under a client error.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[test]
fn defaults_are_the_flags_defaults() {
    assert_eq!(
        Cli::parse_from(["sandbox"]).config,
        SandboxConfig::default()
    );
    let parsed = Cli::parse_from([
        "sandbox",
        "--per-second",
        "2",
        "--limit-window",
        "sliding",
        "--data-dir",
        "/tmp/x",
        "--seed",
        "s",
        "--otp-ttl-secs",
        "5",
        "--journey-delay-ms",
        "7",
    ])
    .config;
    assert_eq!((parsed.otp_ttl_secs, parsed.journey_delay_ms), (5, 7));
    assert_eq!(
        (
            SandboxConfig::default().otp_ttl_secs,
            SandboxConfig::default().journey_delay_ms
        ),
        (600, 4000)
    );
    assert_eq!(parsed.per_second, 2);
    assert_eq!(parsed.limit_window, LimitWindow::Sliding);
    assert_eq!(parsed.data_dir, Some(PathBuf::from("/tmp/x")));
    assert_eq!(parsed.seed, "s");
    assert_eq!(
        (parsed.per_minute, parsed.per_day, parsed.udyam_delay_ms),
        (1000, 50_000, 4000)
    );
}

#[test]
fn fault_flags_parse_and_shares_are_checked() {
    let parsed = Cli::parse_from([
        "sandbox",
        "--error-share",
        "0.25",
        "--reset-share",
        "1",
        "--retry-after",
        "date",
        "--rate-headers",
        "ietf",
        "--down-after-ms",
        "100",
        "--down-for-ms",
        "200",
        "--down-status",
        "429",
        "--stuck-share",
        "0",
    ])
    .config;
    assert_eq!(
        (parsed.error_share, parsed.reset_share, parsed.stuck_share),
        (0.25, 1.0, 0.0)
    );
    assert_eq!(parsed.retry_after, RetryAfter::Date);
    assert_eq!(parsed.rate_headers, RateHeaders::Ietf);
    assert_eq!((parsed.down_after_ms, parsed.down_for_ms), (100, 200));
    assert_eq!(parsed.down_status, DownStatus::RateLimited);
    for (flag, value) in [
        ("--down-status", "503"),
        ("--down-status", "reset"),
        ("--rate-headers", "x"),
        ("--retry-after", "seconds"),
    ] {
        assert!(
            Cli::try_parse_from(["sandbox", flag, value]).is_ok(),
            "{value}"
        );
    }
    for (flag, value) in [
        ("--error-share", "1.5"),
        ("--reset-share", "-0.1"),
        ("--stuck-share", "NaN"),
        ("--stuck-share", "half"),
        ("--down-status", "500"),
        ("--rate-headers", "draft"),
    ] {
        let argument = format!("{flag}={value}");
        let error = Cli::try_parse_from(["sandbox", &argument]).expect_err(value);
        assert!(error.to_string().contains(flag), "{error}");
    }
}

#[test]
fn the_banner_prints_every_provider_and_credential() {
    let banner = banner("http://127.0.0.1:9");
    assert!(banner.starts_with("bulkverify sandbox listening on http://127.0.0.1:9\n"));
    for needle in [
        CLIENT_ID,
        CLIENT_SECRET,
        "http://127.0.0.1:9/verification",
        CASHFREE_CLIENT_ID,
        CASHFREE_CLIENT_SECRET,
        ATTESTR_AUTH_TOKEN,
        EQUAL_CLIENT_ID,
        EQUAL_CLIENT_SECRET,
        EQUAL_JOURNEY_ID,
        SANDBOX_OTP,
    ] {
        assert!(banner.contains(needle), "{needle} in {banner}");
    }
}

#[tokio::test]
async fn start_refuses_an_unwritable_ttl_and_base_url_has_no_trailing_slash() {
    let error = refusal(SandboxConfig {
        url_ttl_secs: u64::MAX,
        ..fast()
    })
    .await;
    assert!(matches!(
        error,
        SandboxError::TtlTooLong {
            flag: "url-ttl-secs",
            ..
        }
    ));

    let listener = listener().await;
    let port = listener.local_addr().expect("addr").port();
    let sandbox = Running::on(listener, fast()).await.expect("starts");
    assert_eq!(sandbox.base, format!("http://127.0.0.1:{port}"));
}

#[tokio::test]
async fn start_refuses_a_share_out_of_range() {
    let error = refusal(SandboxConfig {
        reset_share: f64::NAN,
        ..fast()
    })
    .await;
    assert!(
        matches!(
            error,
            SandboxError::ShareOutOfRange {
                flag: "reset-share",
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn stats_report_what_the_sandbox_saw() {
    let sandbox = Running::start(fast()).await;
    let client = Client::new(&sandbox.base).await;
    let request_id = client.submit_ok("UDYAM-MH-01-0000001").await;
    client.result(&request_id).await;
    let file = b"vpa,name\nravi@okicici,Ravi\nravi@okicici,Ravi\nmeera@oksbi,Meera\n";
    let batch = client.upload_ok(file).await;
    client.status(&batch).await;

    let response = bare_get(&format!("{}/_sandbox/stats", sandbox.base)).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.expect("body");
    let stats = json_in_order(
        &text,
        &[
            "requests",
            "rate_limited",
            "accepted_per_second",
            "by_endpoint",
            "udyam_submissions",
            "batch_uploads",
            "vpa_uploads",
        ],
    );
    assert_eq!(stats["requests"], 5);
    assert_eq!(stats["rate_limited"], 0);
    let per_second = stats["accepted_per_second"].as_object().expect("object");
    assert!(
        per_second
            .keys()
            .all(|second| second.parse::<u64>().is_ok())
    );
    assert_eq!(accepted(&stats), 5);
    assert_counts(
        &stats["by_endpoint"],
        &[
            ("authorize", 1),
            ("udyam_submit", 1),
            ("udyam_result", 1),
            ("batch_upload", 1),
            ("batch_status", 1),
        ],
    );
    assert_eq!(
        stats["by_provider"]["deepvue"],
        json!({"requests": 5, "rate_limited": 0, "server_errors": 0, "resets": 0})
    );
    assert_eq!(stats["by_provider"]["cashfree"]["requests"], 0);
    assert_eq!(
        stats["udyam_submissions"],
        json!({"UDYAM-MH-01-0000001": 1})
    );
    let mut uploads = serde_json::Map::new();
    uploads.insert(sha256_hex(file), json!(1));
    assert_eq!(stats["batch_uploads"], Value::Object(uploads));
    assert_eq!(
        stats["vpa_uploads"],
        json!({"ravi@okicici": 2, "meera@oksbi": 1})
    );
}

#[tokio::test]
async fn an_error_share_of_one_answers_5xx_and_accepts_nothing() {
    let sandbox = Running::start(SandboxConfig {
        error_share: 1.0,
        ..fast()
    })
    .await;
    let base = &sandbox.base;
    let client = Client::with_issued_token(base);
    let response = authorize_form(base, CLIENT_SECRET)
        .send()
        .await
        .expect("sends");
    assert!(response.status().is_server_error(), "authorize too");
    for _ in 0..6 {
        let response = client
            .submission("UDYAM-MH-01-0000001")
            .send()
            .await
            .expect("sends");
        assert!(
            [502, 503, 504].contains(&response.status().as_u16()),
            "{}",
            response.status()
        );
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.text().await.expect("body"), UNAVAILABLE);
    }
    let (status, _) = client.upload(b"vpa\nravi@okicici\n").await;
    assert!(status.is_server_error(), "{status}");
    let stats = stats(base).await;
    assert_eq!(stats["requests"], 8);
    assert_eq!(stats["server_errors"], 8);
    assert_eq!(stats["rate_limited"], 0);
    assert_eq!(stats["resets"], 0);
    assert_eq!(stats["udyam_submissions"], json!({}));
    assert_eq!(stats["batch_uploads"], json!({}));
}

#[tokio::test]
async fn a_reset_share_of_one_drops_the_connection_after_the_submission_is_accepted() {
    let sandbox = Running::start(SandboxConfig {
        reset_share: 1.0,
        ..fast()
    })
    .await;
    let base = &sandbox.base;
    let error = Client::with_issued_token(base)
        .submission("UDYAM-MH-01-0000001")
        .send()
        .await
        .expect_err("no answer at all, not even a status line");
    assert!(error.is_request() && !error.is_timeout(), "{error:?}");
    assert!(
        error_chain(&error).contains("connection closed before message completed"),
        "{error:?}"
    );
    // Authorize is dropped too: clients must cope there as well.
    let error = authorize_form(base, CLIENT_SECRET)
        .send()
        .await
        .expect_err("no answer");
    assert!(error.is_request(), "{error:?}");
    let stats = stats(base).await;
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["resets"], 2);
    assert_eq!(stats["server_errors"], 0);
    assert_eq!(
        stats["udyam_submissions"],
        json!({"UDYAM-MH-01-0000001": 1}),
        "the submission was accepted and billed, and sent once"
    );
}

#[tokio::test]
async fn an_outage_answers_its_status_then_recovers() {
    // A second before and one inside it: margin for a loaded machine, within 2.1 s in all.
    const AFTER: u64 = 1000;
    const FOR: u64 = 1000;
    async fn case(down_status: DownStatus) {
        let started = Instant::now();
        let wall_before = wall_ms();
        let sandbox = Running::start(SandboxConfig {
            down_after_ms: AFTER,
            down_for_ms: FOR,
            down_status,
            retry_after: RetryAfter::Seconds,
            rate_headers: RateHeaders::X,
            per_minute: 1000,
            ..fast()
        })
        .await;
        let wall_after = wall_ms();
        let base = &sandbox.base;
        // Before the outage: business as usual, authorize included.
        let client = Client::new(base).await;
        tokio::time::sleep(Duration::from_millis(AFTER + 200).saturating_sub(started.elapsed()))
            .await;
        let authorize = authorize_form(base, CLIENT_SECRET).send().await;
        let submit = client.submission("UDYAM-MH-01-0000001").send().await;
        for answer in [authorize, submit] {
            match down_status {
                DownStatus::Reset => {
                    let error = answer.expect_err("dropped");
                    assert!(error.is_request(), "{error:?}");
                }
                DownStatus::Unavailable => {
                    let response = answer.expect("answered");
                    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
                    assert!(response.headers().get("x-ratelimit-remaining").is_none());
                    assert_eq!(response.text().await.expect("body"), UNAVAILABLE);
                }
                DownStatus::RateLimited => {
                    let response = answer.expect("answered");
                    let received = wall_ms();
                    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
                    let seconds: u64 = header(&response, "retry-after").parse().expect("secs");
                    // Points at the outage's end, rounded up to a whole second.
                    let retry_at = received + seconds * 1000;
                    let (earliest, latest) = (wall_before + AFTER + FOR, wall_after + AFTER + FOR);
                    assert!(
                        (earliest..=latest + 1200).contains(&retry_at),
                        "{seconds} s: {retry_at} not in {earliest}..={latest}+1.2 s"
                    );
                    assert_eq!(response.text().await.expect("body"), RATE_LIMITED);
                }
            }
        }
        // It recovers by itself, and not before the outage's end.
        eventually(|| {
            let submit = client.submission("UDYAM-MH-01-0000001").send();
            async move {
                match submit.await {
                    Ok(response) if response.status() == StatusCode::OK => Ok(()),
                    _ => Err("never recovered".to_owned()),
                }
            }
        })
        .await;
        assert!(
            started.elapsed() >= Duration::from_millis(AFTER + FOR - 50),
            "recovered after {:?}",
            started.elapsed()
        );
        let stats = stats(base).await;
        let counter = match down_status {
            DownStatus::Unavailable => "server_errors",
            DownStatus::RateLimited => "rate_limited",
            DownStatus::Reset => "resets",
        };
        let faults = stats[counter].as_u64().expect("count");
        let requests = stats["requests"].as_u64().expect("count");
        let accepted = accepted(&stats);
        assert!(faults >= 2, "{stats}");
        assert_eq!(
            accepted, 2,
            "the authorize before and the submission after: {stats}"
        );
        assert_eq!(requests, faults + accepted, "{stats}");
        assert_eq!(
            stats["udyam_submissions"],
            json!({"UDYAM-MH-01-0000001": 1})
        );
    }
    tokio::join!(
        case(DownStatus::Unavailable),
        case(DownStatus::RateLimited),
        case(DownStatus::Reset)
    );
}

#[tokio::test]
async fn a_stuck_share_of_one_never_finishes() {
    let sandbox = Running::start(SandboxConfig {
        stuck_share: 1.0,
        udyam_delay_ms: 0,
        batch_delay_ms: 0,
        ..fast()
    })
    .await;
    let client = Client::new(&sandbox.base).await;
    let udyam = client.submit_ok("UDYAM-MH-01-0000001").await;
    let batch = client.upload_ok(b"vpa\nravi@okicici\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let (status, body) = client.result(&udyam).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["status"], "in_progress");
        let (status, text) = client.status(&batch).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let body: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(body["data"]["status"], 102, "{text}");
        assert_eq!(body["data"]["batch_output_file_url"], Value::Null);
    }
    // Nor can its output file be fetched with a URL signed by hand.
    let response = bare_get(&signed_download_url(&sandbox.base, &batch)).await;
    assert_xml_error(response, StatusCode::NOT_FOUND, "NoSuchKey").await;
}
