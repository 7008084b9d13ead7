//! The gateway's rate limits over HTTP: windows that refuse exactly at the limit, what a 429
//! says about when to come back, and the headers that count a window down.

use super::*;

/// Sends `count` calls with the API key `key` and returns the answers' status codes.
async fn limited_calls(client: &Client, key: &str, count: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..count {
        let response = client
            .keyed(Method::GET, "/v1/verification/batch-processing-status", key)
            .query(&[("request_id", "x")])
            .send()
            .await
            .expect("sends");
        let status = response.status().as_u16();
        if status == 429 {
            assert_eq!(response.headers()["content-type"], "application/json");
            for header in response.headers().keys() {
                let name = header.as_str();
                assert!(
                    !name.starts_with("x-ratelimit")
                        && !name.starts_with("ratelimit")
                        && name != "retry-after",
                    "{name}"
                );
            }
            assert_eq!(response.text().await.expect("body"), RATE_LIMITED);
        }
        statuses.push(status);
    }
    statuses
}

#[tokio::test]
async fn fixed_window_answers_429_exactly_at_the_limit() {
    avoid_midnight().await;
    let sandbox = Running::start(SandboxConfig {
        per_day: 4,
        limit_window: LimitWindow::Fixed,
        ..fast()
    })
    .await;
    let base = &sandbox.base;
    // The authorize call counts against the secret's limit too: 1 + 3 = 4.
    let client = Client::new(base).await;
    assert_eq!(
        limited_calls(&client, CLIENT_SECRET, 5).await,
        [404, 404, 404, 429, 429]
    );
    // Another key has its own windows; downloads and stats are never limited.
    assert_eq!(limited_calls(&client, "free_tier_other", 1).await, [403]);
    let response = bare_get(&format!(
        "{base}/bulk-data-processing/upi-basic-batch-output-files/x.csv"
    ))
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let stats = stats(base).await;
    assert_eq!(stats["requests"], 7);
    assert_eq!(stats["rate_limited"], 2);
    assert_eq!(accepted(&stats), 5);
    assert_eq!(stats["by_endpoint"]["batch_status"], 6);
    assert_eq!(stats["by_endpoint"]["download"], 1);
}

#[tokio::test]
async fn sliding_window_answers_429_exactly_at_the_limit() {
    let sandbox = Running::start(per_minute_sliding(3)).await;
    let client = Client::new(&sandbox.base).await;
    assert_eq!(
        limited_calls(&client, CLIENT_SECRET, 4).await,
        [404, 404, 429, 429]
    );
    // The authorize endpoint is keyed by its client_secret field: refused as well.
    for (secret, status) in [
        (CLIENT_SECRET, StatusCode::TOO_MANY_REQUESTS),
        ("free_tier_x", StatusCode::UNAUTHORIZED),
    ] {
        let response = authorize_form(&sandbox.base, secret)
            .send()
            .await
            .expect("sends");
        assert_eq!(response.status(), status, "{secret}");
    }
}

#[tokio::test]
async fn the_rate_limit_comes_before_latency_and_authentication() {
    avoid_midnight().await;
    let sandbox = Running::start(SandboxConfig {
        per_day: 1,
        latency_ms: 300,
        ..fast()
    })
    .await;
    let started = Instant::now();
    let first = keyed_call(&sandbox.base, "k").await;
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "latency added"
    );
    let second = keyed_call(&sandbox.base, "k").await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn retry_after_says_when_the_key_is_admitted_again() {
    for style in [RetryAfter::Seconds, RetryAfter::Date] {
        let sandbox = Running::start(SandboxConfig {
            retry_after: style,
            ..per_minute_sliding(2)
        })
        .await;
        let base = &sandbox.base;
        // The oldest of the two admitted calls leaves the sliding minute 60 s after it arrived.
        let first_sent = wall_ms();
        assert_eq!(keyed_call(base, "k").await.status(), 401);
        let first_answered = wall_ms();
        assert!(
            keyed_call(base, "k")
                .await
                .headers()
                .get("retry-after")
                .is_none()
        );
        let refused = keyed_call(base, "k").await;
        let received = wall_ms();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let value = header(&refused, "retry-after").to_owned();
        let retry_at_ms = match style {
            RetryAfter::Seconds => {
                let seconds: u64 = value.parse().expect("whole seconds");
                assert!(seconds >= 1);
                received + seconds * 1000
            }
            _ => {
                assert!(value.ends_with(" GMT") && value.len() == 29, "{value}");
                let at = httpdate::parse_http_date(&value).expect("an HTTP date");
                let since = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("after 1970");
                u64::try_from(since.as_millis()).expect("fits")
            }
        };
        // Rounded up to a whole second, so never early and at most 1 s late.
        let earliest = first_sent + 60_000;
        let latest = first_answered + 60_000 + 1000;
        assert!(
            (earliest..=latest).contains(&retry_at_ms),
            "{value}: {retry_at_ms} not in {earliest}..={latest}"
        );
        assert_eq!(refused.text().await.expect("body"), RATE_LIMITED);
    }
}

#[tokio::test]
async fn x_rate_headers_count_down_the_tightest_window() {
    let sandbox = Running::start(SandboxConfig {
        per_day: 100,
        rate_headers: RateHeaders::X,
        ..per_minute_sliding(4)
    })
    .await;
    let base = &sandbox.base;
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let response = keyed_call(base, "k").await;
        assert_eq!(header(&response, "x-ratelimit-limit"), "4");
        let reset: u64 = header(&response, "x-ratelimit-reset")
            .parse()
            .expect("seconds");
        assert!((55..=60).contains(&reset), "{reset}");
        assert!(response.headers().get("ratelimit").is_none());
        remaining.push((
            response.status().as_u16(),
            header(&response, "x-ratelimit-remaining").to_owned(),
        ));
    }
    let expected = [(401, "3"), (401, "2"), (401, "1"), (401, "0"), (429, "0")];
    assert_eq!(
        remaining,
        expected.map(|(status, left)| (status, left.to_owned()))
    );
    // An authenticated answer carries them too, counted under its own key after authorize.
    let client = Client::new(base).await;
    let response = client.status_request("x").send().await.expect("sends");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&response, "x-ratelimit-remaining"), "2");
}

#[tokio::test]
async fn ietf_rate_headers_list_every_window_and_count_down_the_tightest() {
    let sandbox = Running::start(SandboxConfig {
        per_second: 17,
        per_day: 50_000,
        rate_headers: RateHeaders::Ietf,
        ..per_minute_sliding(3)
    })
    .await;
    let mut states = Vec::new();
    for _ in 0..4 {
        let response = keyed_call(&sandbox.base, "k").await;
        assert_eq!(
            header(&response, "ratelimit-policy"),
            r#""per-second";q=17;w=1, "per-minute";q=3;w=60, "per-day";q=50000;w=86400"#
        );
        assert!(response.headers().get("x-ratelimit-remaining").is_none());
        let state = header(&response, "ratelimit").to_owned();
        let (left, t) = state
            .strip_prefix(r#""per-minute";r="#)
            .and_then(|rest| rest.split_once(";t="))
            .unwrap_or_else(|| panic!("{state}"));
        let t: u64 = t.parse().expect("seconds");
        assert!((55..=60).contains(&t), "{state}");
        states.push((response.status().as_u16(), left.to_owned()));
    }
    let expected = [(401, "2"), (401, "1"), (401, "0"), (429, "0")];
    assert_eq!(
        states,
        expected.map(|(status, left)| (status, left.to_owned()))
    );
}
