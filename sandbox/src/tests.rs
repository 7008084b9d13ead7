//! The simulator over HTTP, with reqwest as the client, on `127.0.0.1:0`.
//!
//! Timing: every "still running" assertion has seconds of margin, every "now ready" one polls
//! until a generous deadline, so a loaded machine slows the tests without failing them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::ids::{Ids, sha256_hex};
use super::*;

mod attestr;
mod cashfree;
mod equal;

const SEED: &str = "test-seed";
const DEADLINE: Duration = Duration::from_secs(30);

/// A fast, unlimited configuration; tests set what they exercise.
fn fast() -> SandboxConfig {
    SandboxConfig {
        per_second: 0,
        per_minute: 0,
        per_day: 0,
        udyam_delay_ms: 100,
        batch_delay_ms: 100,
        batch_ms_per_row: 0,
        seed: SEED.to_owned(),
        ..SandboxConfig::default()
    }
}

async fn start(config: SandboxConfig) -> Sandbox {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    Sandbox::start(config, listener).await.expect("starts")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// A client that authorized like the real one and sends both credentials on every call.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn new(base: &str) -> Client {
        let http = http();
        let token = authorize(&http, base).await;
        Client {
            http,
            base: base.to_owned(),
            token,
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-api-key", CLIENT_SECRET)
    }

    async fn submit(&self, number: &str) -> (StatusCode, Value) {
        let response = self
            .request(Method::POST, "/v1/verification/async/post-udyam-details")
            .query(&[("udyam_aadhaar_number", number)])
            .send()
            .await
            .expect("sends");
        json_of(response).await
    }

    async fn submit_ok(&self, number: &str) -> String {
        let (status, body) = self.submit(number).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["request_id"].as_str().expect("request_id").to_owned()
    }

    async fn result(&self, request_id: &str) -> (StatusCode, Value) {
        let response = self
            .request(Method::GET, "/v1/verification/async/get-udyam-details")
            .query(&[("request_id", request_id)])
            .send()
            .await
            .expect("sends");
        json_of(response).await
    }

    /// Polls until the answer is no longer 202.
    async fn result_after_ready(&self, request_id: &str) -> (StatusCode, Value) {
        let start = Instant::now();
        loop {
            let (status, body) = self.result(request_id).await;
            if status != StatusCode::ACCEPTED {
                return (status, body);
            }
            assert!(start.elapsed() < DEADLINE, "{request_id} never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn upload(&self, file: &[u8]) -> (StatusCode, String) {
        let part = reqwest::multipart::Part::bytes(file.to_vec())
            .file_name("batch.csv")
            .mime_str("text/csv")
            .expect("mime");
        let response = self
            .request(Method::POST, "/v1/verification/upi-basic/batch")
            .query(&[("webhook_url", "https://example.com/hook")])
            .multipart(reqwest::multipart::Form::new().part("batch_file", part))
            .send()
            .await
            .expect("sends");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    async fn upload_ok(&self, file: &[u8]) -> String {
        let (status, text) = self.upload(file).await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
        let body: Value = serde_json::from_str(&text).expect("json");
        body["request_id"].as_str().expect("request_id").to_owned()
    }

    async fn status(&self, request_id: &str) -> (StatusCode, String) {
        let response = self
            .request(Method::GET, "/v1/verification/batch-processing-status")
            .query(&[("request_id", request_id)])
            .send()
            .await
            .expect("sends");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    /// Polls the batch status until it is done; returns the output URL.
    async fn output_url(&self, request_id: &str) -> String {
        let start = Instant::now();
        loop {
            let (status, text) = self.status(request_id).await;
            assert_eq!(status, StatusCode::OK, "{text}");
            let body: Value = serde_json::from_str(&text).expect("json");
            if body["data"]["status"] == 200 {
                return body["data"]["batch_output_file_url"]
                    .as_str()
                    .expect("url")
                    .to_owned();
            }
            assert!(start.elapsed() < DEADLINE, "{request_id} never done");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn authorize(http: &reqwest::Client, base: &str) -> String {
    let form = reqwest::multipart::Form::new()
        .text("client_id", CLIENT_ID)
        .text("client_secret", CLIENT_SECRET);
    let response = http
        .post(format!("{base}/v1/authorize"))
        .multipart(form)
        .send()
        .await
        .expect("sends");
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().expect("token").to_owned()
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

/// Everything a test may check of an answer; `body` is `Null` when the body is empty.
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header: {}", self.text))
            .to_str()
            .expect("text")
    }

    /// Asserts the status and returns the body, for the common case.
    fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        &self.body
    }
}

async fn reply(request: RequestBuilder) -> Reply {
    let response = request.send().await.expect("sends");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    Reply {
        status,
        headers,
        text,
        body,
    }
}

/// A sandbox on a data directory that outlives it, to start again on the same one.
struct Restartable {
    _temp: tempfile::TempDir,
    config: SandboxConfig,
}

impl Restartable {
    fn new(config: SandboxConfig) -> Restartable {
        let temp = tempfile::tempdir().expect("temp dir");
        let config = SandboxConfig {
            data_dir: Some(temp.path().join("data")),
            ..config
        };
        Restartable {
            _temp: temp,
            config,
        }
    }

    async fn start(&self) -> Sandbox {
        start(self.config.clone()).await
    }

    /// The journal's text, to check what was (and was not) written down.
    fn journal(&self) -> String {
        let dir = self.config.data_dir.as_ref().expect("a data dir");
        std::fs::read_to_string(dir.join("jobs.jsonl")).expect("reads")
    }
}

async fn stats(base: &str) -> Value {
    let response = http()
        .get(format!("{base}/_sandbox/stats"))
        .send()
        .await
        .expect("sends");
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    body
}

/// Asserts that the counters named in `nonzero` have those values and every other one is 0.
fn assert_counts(counts: &Value, nonzero: &[(&str, u64)]) {
    for (key, count) in counts.as_object().expect("object") {
        let expected = nonzero
            .iter()
            .find(|(name, _)| name == key)
            .map_or(0, |(_, n)| *n);
        assert_eq!(count, expected, "{key} in {counts}");
    }
    for (name, _) in nonzero {
        assert!(counts.get(name).is_some(), "{name} missing in {counts}");
    }
}

/// Asserts that `keys` appear in this order in the JSON text (as top-level or nested keys).
fn assert_key_order(text: &str, keys: &[&str]) {
    let positions: Vec<usize> = keys
        .iter()
        .map(|key| {
            text.find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("{key} missing in {text}"))
        })
        .collect();
    assert!(positions.is_sorted(), "keys not in order {keys:?}: {text}");
}

fn object_keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| is_hex(group, len))
}

fn assert_recent_ms(value: &Value) {
    let ms = value.as_u64().expect("a number of ms");
    let now = clock::now_ms();
    assert!(ms <= now && now - ms < 60_000, "{ms} is not now ({now})");
}

fn assert_envelope(body: &Value, code: u16, sub_code: &str, message: &str) {
    assert_eq!(
        object_keys(body),
        ["code", "message", "sub_code", "timestamp", "transaction_id"]
    );
    assert_eq!(body["code"], code);
    assert_eq!(body["sub_code"], sub_code);
    assert_eq!(body["message"], message);
    assert!(is_hex(body["transaction_id"].as_str().expect("text"), 32));
    assert_recent_ms(&body["timestamp"]);
}

fn assert_ist(text: &Value) {
    let text = text.as_str().expect("text");
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+05:30");
    assert!(
        time::PrimitiveDateTime::parse(text, format).is_ok(),
        "{text}"
    );
}

#[test]
fn defaults_are_the_flags_defaults() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: SandboxConfig,
    }
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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let config = SandboxConfig {
        url_ttl_secs: u64::MAX,
        ..fast()
    };
    let error = Sandbox::start(config, listener)
        .await
        .err()
        .expect("refused");
    assert!(matches!(
        error,
        SandboxError::TtlTooLong {
            flag: "url-ttl-secs",
            ..
        }
    ));

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let port = listener.local_addr().expect("addr").port();
    let sandbox = Sandbox::start(fast(), listener).await.expect("starts");
    assert_eq!(sandbox.base_url(), format!("http://127.0.0.1:{port}"));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn authorize_accepts_multipart_and_urlencoded_forms() {
    let sandbox = start(SandboxConfig {
        token_ttl_secs: 3600,
        ..fast()
    })
    .await;
    let base = sandbox.base_url();
    let http = http();
    let multipart = reqwest::multipart::Form::new()
        .text("client_id", CLIENT_ID)
        .text("client_secret", CLIENT_SECRET);
    let urlencoded = [("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)];
    for request in [
        http.post(format!("{base}/v1/authorize"))
            .multipart(multipart),
        http.post(format!("{base}/v1/authorize")).form(&urlencoded),
    ] {
        let response = request.send().await.expect("sends");
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.expect("body");
        assert_key_order(&text, &["access_token", "token_type", "expiry"]);
        let body: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(object_keys(&body), ["access_token", "expiry", "token_type"]);
        assert_eq!(body["token_type"], "bearer");
        let token = body["access_token"].as_str().expect("token");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        assert!(parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }));
        assert!(token.starts_with("eyJ"), "a JWT header: {token}");
        let expiry = body["expiry"].as_str().expect("expiry");
        let expiry =
            time::OffsetDateTime::parse(expiry, &time::format_description::well_known::Rfc3339)
                .expect("RFC 3339");
        assert!(body["expiry"].as_str().expect("text").ends_with('Z'));
        let lifetime = expiry.unix_timestamp() - (clock::now_ms() / 1000) as i64;
        assert!((3500..=3601).contains(&lifetime), "{lifetime}");
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn authorize_refuses_wrong_or_missing_credentials() {
    let sandbox = start(fast()).await;
    let url = format!("{}/v1/authorize", sandbox.base_url());
    let http = http();

    let response = http
        .post(&url)
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", "free_tier_wrong"),
        ])
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"detail":"Invalid client credentials"}"#
    );

    let response = http
        .post(&url)
        .multipart(reqwest::multipart::Form::new().text("client_id", CLIENT_ID))
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"detail":[{"loc":["body","client_secret"],"msg":"field required","type":"value_error.missing"}]}"#
    );

    let response = http
        .post(&url)
        .json(&json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}))
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (_, body) = json_of(response).await;
    assert_eq!(
        body,
        json!({"detail":[
            {"loc":["body","client_id"],"msg":"field required","type":"value_error.missing"},
            {"loc":["body","client_secret"],"msg":"field required","type":"value_error.missing"}]})
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn v1_calls_need_a_valid_token_then_the_api_key() {
    let sandbox = start(fast()).await;
    let base = sandbox.base_url();
    let http = http();
    let token = authorize(&http, &base).await;
    let url = format!("{base}/v1/verification/async/get-udyam-details?request_id=unknown");
    let other_seed = Ids::new("another seed")
        .issue_token(clock::now_ms(), 3600)
        .0;

    let cases = [
        (
            None,
            Some(CLIENT_SECRET),
            401,
            r#"{"detail":"Invalid or expired token"}"#,
        ),
        (
            Some("garbage"),
            Some(CLIENT_SECRET),
            401,
            r#"{"detail":"Invalid or expired token"}"#,
        ),
        (
            Some(other_seed.as_str()),
            Some(CLIENT_SECRET),
            401,
            r#"{"detail":"Invalid or expired token"}"#,
        ),
        (
            Some(token.as_str()),
            None,
            403,
            r#"{"detail":"Invalid API key"}"#,
        ),
        (
            Some(token.as_str()),
            Some("free_tier_other"),
            403,
            r#"{"detail":"Invalid API key"}"#,
        ),
    ];
    for (bearer, key, status, expected) in cases {
        let mut request = http.get(&url);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let response = request.send().await.expect("sends");
        assert_eq!(response.status().as_u16(), status, "{bearer:?} {key:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{bearer:?} {key:?}"
        );
        assert_eq!(response.text().await.expect("body"), expected);
    }

    let client = Client::new(&base).await;
    let (status, body) = client.result("unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(
        &body,
        404,
        "NOT_FOUND",
        "No request found for the given request_id",
    );
    let response = client
        .request(Method::GET, "/v1/no-such-endpoint")
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"detail":"Not Found"}"#
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn tokens_expire_after_their_ttl() {
    let sandbox = start(SandboxConfig {
        token_ttl_secs: 2,
        ..fast()
    })
    .await;
    let base = sandbox.base_url();
    let http = http();
    let form = [("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)];
    let response = http
        .post(format!("{base}/v1/authorize"))
        .form(&form)
        .send()
        .await
        .expect("sends");
    let (_, body) = json_of(response).await;
    let token = body["access_token"].as_str().expect("token");
    let expiry = time::OffsetDateTime::parse(
        body["expiry"].as_str().expect("expiry"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    let call = || {
        http.get(format!(
            "{base}/v1/verification/batch-processing-status?request_id=x"
        ))
        .bearer_auth(token)
        .header("x-api-key", CLIENT_SECRET)
        .send()
    };
    // The token lives at least its 2 s ttl: this call is well inside it.
    assert_eq!(call().await.expect("sends").status(), StatusCode::NOT_FOUND);
    let expiry_ms = u64::try_from(expiry.unix_timestamp()).expect("positive") * 1000;
    let wait = (expiry_ms + 300).saturating_sub(clock::now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let response = call().await.expect("sends");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"detail":"Invalid or expired token"}"#
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn udyam_submission_shapes() {
    let sandbox = start(fast()).await;
    let client = Client::new(&sandbox.base_url()).await;

    let response = client
        .request(Method::POST, "/v1/verification/async/post-udyam-details")
        .query(&[("udyam_aadhaar_number", "UDYAM-MH-01-0000001")])
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert_key_order(
        &text,
        &[
            "code",
            "timestamp",
            "transaction_id",
            "sub_code",
            "message",
            "request_id",
        ],
    );
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["code"], 200);
    assert_eq!(body["sub_code"], "SUCCESS");
    assert_eq!(body["message"], "Request submitted successfully");
    assert!(is_hex(body["transaction_id"].as_str().expect("text"), 32));
    assert!(
        is_uuid(body["request_id"].as_str().expect("text")),
        "{body}"
    );
    assert_recent_ms(&body["timestamp"]);

    let response = client
        .request(Method::POST, "/v1/verification/async/post-udyam-details")
        .json(&json!({"udyam_aadhaar_number": "UDYAM-KA-02-0000002"}))
        .send()
        .await
        .expect("sends");
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(is_uuid(body["request_id"].as_str().expect("text")));

    let response = client
        .request(Method::POST, "/v1/verification/async/post-udyam-details")
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"detail":[{"loc":["query","udyam_aadhaar_number"],"msg":"field required","type":"value_error.missing"}]}"#
    );

    for bad in ["UDYAM-MH-1-0000001", "udyam-mh-01-0000001", "12345"] {
        let (status, body) = client.submit(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_envelope(&body, 400, "INVALID_INPUT", "Invalid Udyam number");
    }
    let (status, body) = client.result("no-such-request").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(
        &body,
        404,
        "NOT_FOUND",
        "No request found for the given request_id",
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn udyam_result_is_202_until_ready_then_the_completed_record() {
    let sandbox = start(SandboxConfig {
        udyam_delay_ms: 2000,
        ..fast()
    })
    .await;
    let client = Client::new(&sandbox.base_url()).await;
    let request_id = client.submit_ok("UDYAM-MH-01-0000001").await;

    let response = client
        .request(Method::GET, "/v1/verification/async/get-udyam-details")
        .query(&[("request_id", &request_id)])
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        response.text().await.expect("body"),
        format!(
            r#"{{"request_id":"{request_id}","status":"in_progress","message":"Request is being processed"}}"#
        )
    );

    let (status, body) = client.result_after_ready(&request_id).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.to_string();
    assert_eq!(
        object_keys(&body),
        [
            "action",
            "completed_at",
            "created_at",
            "group_id",
            "request_id",
            "result",
            "status",
            "task_id",
            "type"
        ]
    );
    assert_eq!(body["action"], "verify_with_source");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["type"], "udyam_aadhaar");
    assert_eq!(body["request_id"], request_id.as_str());
    assert!(is_uuid(body["group_id"].as_str().expect("text")), "{text}");
    assert!(is_uuid(body["task_id"].as_str().expect("text")), "{text}");
    assert_ist(&body["created_at"]);
    assert_ist(&body["completed_at"]);
    assert!(body["completed_at"].as_str() > body["created_at"].as_str());
    assert_eq!(
        body["result"],
        json!({"source_output": {"udyam_aadhaar_number":"UDYAM-MH-01-0000001","enterprise_name":"SANDBOX ENTERPRISES 0000001",
            "organisation_type":"Proprietary","enterprise_type":"Micro","major_activity":"Services",
            "social_category":"General","date_of_incorporation":"2019-04-01","date_of_commencement":"2019-04-15",
            "date_of_udyam_registration":"2020-07-21","state":"MAHARASHTRA","district":"MUMBAI","pin":"400001",
            "dic_name":"MUMBAI","nic_codes":[{"nic_2_digit":"62 - Computer programming","nic_4_digit":"6201 - Computer programming activities","nic_5_digit":"62011 - Writing, modifying, testing of computer program","activity":"Services"}]}})
    );

    // The raw text keeps the documented key order, source_output included.
    let response = client
        .request(Method::GET, "/v1/verification/async/get-udyam-details")
        .query(&[("request_id", &request_id)])
        .send()
        .await
        .expect("sends");
    let raw = response.text().await.expect("body");
    assert_key_order(
        &raw,
        &[
            "action",
            "completed_at",
            "created_at",
            "group_id",
            "request_id",
            "result",
            "source_output",
            "udyam_aadhaar_number",
            "enterprise_name",
            "nic_codes",
            "status",
            "task_id",
            "type",
        ],
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn udyam_test_numbers_behave_as_scripted() {
    let sandbox = start(fast()).await;
    let base = sandbox.base_url();
    let client = Client::new(&base).await;

    for (number, error, message) in [
        (
            "UDYAM-DL-05-9000001",
            "BAD_REQUEST",
            "Please enter a valid UAM number",
        ),
        (
            "UDYAM-KA-12-9000002",
            "NOT_FOUND",
            "No record found for the given Udyam number",
        ),
    ] {
        let request_id = client.submit_ok(number).await;
        let (status, body) = client.result_after_ready(&request_id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            object_keys(&body),
            [
                "action",
                "completed_at",
                "created_at",
                "error",
                "group_id",
                "message",
                "request_id",
                "status",
                "task_id",
                "type"
            ]
        );
        assert_eq!(body["status"], "failed");
        assert_eq!(body["error"], error);
        assert_eq!(body["message"], message);
        assert_eq!(body["action"], "verify_with_source");
        assert_eq!(body["type"], "udyam_aadhaar");
        assert_ist(&body["completed_at"]);
    }

    let never = client.submit_ok("UDYAM-MH-01-9000003").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..2 {
        let (status, body) = client.result(&never).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["status"], "in_progress");
    }

    for _ in 0..2 {
        let (status, body) = client.submit("UDYAM-MH-01-9000004").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, json!({"detail": "Internal Server Error"}));
    }

    let (status, body) = client.submit("UDYAM-GJ-03-9000005").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"detail": "Service Unavailable"}));
    client.submit_ok("UDYAM-GJ-03-9000005").await;
    client.submit_ok("UDYAM-GJ-03-9000005").await;

    let (status, body) = client.submit("UDYAM-MH-01-9000006").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(
        &body,
        400,
        "INVALID_UDYAM_NUMBER",
        "Udyam number is not registered",
    );

    let flaky = client.submit_ok("UDYAM-WB-09-9000007").await;
    let (status, body) = client.result_after_ready(&flaky).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, json!({"detail": "Internal Server Error"}));
    for _ in 0..2 {
        let (status, body) = client.result(&flaky).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "completed");
        assert_eq!(body["result"]["source_output"]["state"], "WEST BENGAL");
    }

    let stats = stats(&base).await;
    assert_eq!(
        stats["udyam_submissions"],
        json!({
            "UDYAM-DL-05-9000001": 1,
            "UDYAM-GJ-03-9000005": 2,
            "UDYAM-KA-12-9000002": 1,
            "UDYAM-MH-01-9000003": 1,
            "UDYAM-MH-01-9000006": 1,
            "UDYAM-WB-09-9000007": 1,
        })
    );
    assert_eq!(
        stats["udyam_rejected"],
        json!({"UDYAM-GJ-03-9000005": 1, "UDYAM-MH-01-9000004": 2})
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn udyam_source_output_varies_by_number() {
    let sandbox = start(fast()).await;
    let client = Client::new(&sandbox.base_url()).await;
    let mut outputs = Vec::new();
    for number in ["UDYAM-KA-02-0000002", "UDYAM-ZZ-07-0000003"] {
        let request_id = client.submit_ok(number).await;
        let (status, body) = client.result_after_ready(&request_id).await;
        assert_eq!(status, StatusCode::OK);
        outputs.push(body["result"]["source_output"].clone());
    }
    assert_eq!(outputs[0]["state"], "KARNATAKA");
    assert_eq!(outputs[0]["enterprise_type"], "Small");
    assert_eq!(outputs[0]["nic_codes"].as_array().expect("array").len(), 2);
    assert_eq!(outputs[0]["enterprise_name"], "SANDBOX ENTERPRISES 0000002");
    assert_eq!(outputs[1]["state"], "ZZ");
    assert_eq!(outputs[1]["enterprise_type"], "Medium");
    assert_eq!(outputs[1]["nic_codes"].as_array().expect("array").len(), 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn ids_are_deterministic_for_a_seed() {
    let file = b"vpa\nravi@okicici\n";
    let mut runs = Vec::new();
    for seed in [SEED, SEED, "another seed"] {
        let sandbox = start(SandboxConfig {
            seed: seed.to_owned(),
            ..fast()
        })
        .await;
        let client = Client::new(&sandbox.base_url()).await;
        let ids = [
            client.submit_ok("UDYAM-MH-01-0000001").await,
            client.submit_ok("UDYAM-MH-01-0000001").await,
            client.submit_ok("UDYAM-MH-01-0000002").await,
            client.upload_ok(file).await,
            client.upload_ok(file).await,
        ];
        runs.push(ids);
        sandbox.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
    assert_ne!(runs[0][0], runs[0][1], "a resubmission gets a new id");
    assert_ne!(runs[0][3], runs[0][4], "a re-upload gets a new id");
    for (same, other) in runs[0].iter().zip(&runs[2]) {
        assert_ne!(same, other);
    }
    assert_eq!(
        runs[0][1],
        Ids::new(SEED).udyam_request_id("UDYAM-MH-01-0000001", 1)
    );
    assert_eq!(
        runs[0][3],
        Ids::new(SEED).batch_request_id(&sha256_hex(file), 0)
    );
}

#[tokio::test]
async fn batch_upload_shapes_and_refusals() {
    let sandbox = start(SandboxConfig {
        batch_max_rows: 3,
        ..fast()
    })
    .await;
    let client = Client::new(&sandbox.base_url()).await;

    let (status, text) = client.upload(b"vpa,name\nravi@okicici,Ravi\n").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_key_order(
        &text,
        &[
            "code",
            "timestamp",
            "transaction_id",
            "request_id",
            "message",
            "sub_code",
            "output_batch_file",
        ],
    );
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["code"], 201);
    assert_eq!(body["message"], "batch processing in progress");
    assert_eq!(body["sub_code"], "SUCCESS");
    assert_eq!(body["output_batch_file"], "");
    assert!(is_hex(body["request_id"].as_str().expect("text"), 32));
    assert!(is_hex(body["transaction_id"].as_str().expect("text"), 32));
    assert_recent_ms(&body["timestamp"]);
    assert_eq!(object_keys(&body).len(), 7);

    let missing = r#"{"detail":[{"loc":["body","batch_file"],"msg":"field required","type":"value_error.missing"}]}"#;
    let response = client
        .request(Method::POST, "/v1/verification/upi-basic/batch")
        .multipart(reqwest::multipart::Form::new().text("file", "vpa\na@b\n"))
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.text().await.expect("body"), missing);
    let response = client
        .request(Method::POST, "/v1/verification/upi-basic/batch")
        .body("vpa\na@b\n")
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.text().await.expect("body"), missing);

    for bad in [
        &b"name,phone\nRavi,1\n"[..],
        b"vpa,name\r\n",
        b"",
        b"vpa\n\xFF@x\n",
    ] {
        let (status, text) = client.upload(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        let body: Value = serde_json::from_str(&text).expect("json");
        assert_envelope(
            &body,
            400,
            "INVALID_FILE",
            "batch_file must be a CSV file with a vpa column and at least one row",
        );
    }
    let (status, text) = client.upload(b"vpa\na@x\nb@x\nc@x\nd@x\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_envelope(
        &body,
        400,
        "BATCH_TOO_LARGE",
        "batch_file has 4 rows; at most 3 rows are accepted",
    );
    client.upload_ok(b"vpa\na@x\nb@x\nc@x\n").await;

    let (status, text) = client.status("unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_envelope(
        &body,
        404,
        "NOT_FOUND",
        "No request found for the given request_id",
    );
    let response = client
        .request(Method::GET, "/v1/verification/batch-processing-status")
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"detail":[{"loc":["query","request_id"],"msg":"field required","type":"value_error.missing"}]}"#
    );
    sandbox.shutdown().await;
}

/// The input of the download test: every test VPA, a pass-through key column, a quoted field.
const BATCH: &str = "\u{feff}row_key,vpa,name,note\r\n\
    k1,ravi.kumar99@okicici,Ravi,plain\r\n\
    k2,NoAccount.1@ybl,X,\"has, comma\"\r\n\
    k3,invalid-vpa@ybl,X,\r\n\
    k4,sourcedown@upi,X,\r\n\
    k5,dropped.row@upi,X,\r\n\
    k6,meera_iyer@oksbi,Meera,\r\n\
    k7,john-paul2@okaxis,John,\r\n\
    k8,anita@paytm,Anita,\r\n\
    k9,no-at-sign,X,\r\n\
    k10,zoya.khan@ybl,Zoya,\r\n";

#[tokio::test]
async fn batch_status_then_the_output_file() {
    let sandbox = start(SandboxConfig {
        batch_delay_ms: 2000,
        ..fast()
    })
    .await;
    let base = sandbox.base_url();
    let client = Client::new(&base).await;
    let request_id = client.upload_ok(BATCH.as_bytes()).await;

    let (status, text) = client.status(&request_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_key_order(
        &text,
        &[
            "transaction_id",
            "timestamp",
            "code",
            "message",
            "sub_code",
            "data",
        ],
    );
    assert!(
        text.contains(&format!(
            r#""data":{{"request_id":"{request_id}","status":102,"product_id":"","message":"batch processing in progress","batch_output_file_url":null}}"#
        )),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["code"], 200);
    assert_eq!(body["message"], "Batch Upload status fetched successfully");
    assert_eq!(body["sub_code"], "SUCCESS");
    assert!(is_hex(body["transaction_id"].as_str().expect("text"), 32));

    let url = client.output_url(&request_id).await;
    let (status, text) = client.status(&request_id).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["data"]["message"], "batch processing completed");
    assert_eq!(body["data"]["product_id"], "");
    let prefix = format!(
        "{base}/bulk-data-processing/upi-basic-batch-output-files/{request_id}.csv?\
         X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=SANDBOXKEY%2F"
    );
    assert!(url.starts_with(&prefix), "{url}");
    let query: HashMap<String, String> = reqwest::Url::parse(&url)
        .expect("url")
        .query_pairs()
        .into_owned()
        .collect();
    let date = &query["X-Amz-Date"];
    assert!(clock::parse_amz_date(date).is_some(), "{date}");
    assert_eq!(
        query["X-Amz-Credential"],
        format!("SANDBOXKEY/{}/ap-south-1/s3/aws4_request", &date[..8])
    );
    assert_eq!(query["X-Amz-Expires"], "3600");
    assert_eq!(query["X-Amz-SignedHeaders"], "host");
    assert!(is_hex(&query["X-Amz-Signature"], 64));

    // Downloads use no bearer and no API key, like S3.
    let response = http().get(&url).send().await.expect("sends");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/csv");
    let bytes = response.bytes().await.expect("body");
    let again = http().get(&url).send().await.expect("sends");
    assert_eq!(again.bytes().await.expect("body"), bytes, "deterministic");
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "BOM");
    let text = std::str::from_utf8(&bytes[3..]).expect("utf-8");
    assert!(text.ends_with("\r\n"));
    assert_eq!(
        text.matches('\n').count(),
        text.matches("\r\n").count(),
        "CRLF only"
    );
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "row_key,vpa,name,note,code,sub_code,message,account_exists,name_at_bank,name_at_bank_cleaned"
        )
    );
    let rows: Vec<&str> = lines.collect();
    let keys: Vec<&str> = rows
        .iter()
        .map(|row| row.split(',').next().expect("key"))
        .collect();
    assert_eq!(keys.len(), 9, "the dropped row is missing: {rows:?}");
    assert!(!keys.contains(&"k5"));
    let input_order = ["k1", "k2", "k3", "k4", "k6", "k7", "k8", "k9", "k10"];
    assert_ne!(keys, input_order, "shuffled");
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    let mut expected = input_order.to_vec();
    expected.sort_unstable();
    assert_eq!(sorted, expected);
    let row = |key: &str| {
        *rows
            .iter()
            .find(|row| row.starts_with(&format!("{key},")))
            .expect("row present")
    };
    assert_eq!(
        row("k1"),
        "k1,ravi.kumar99@okicici,Ravi,plain,200,SUCCESS,VPA is valid,true,RAVI KUMAR,Ravi Kumar"
    );
    assert_eq!(
        row("k2"),
        "k2,NoAccount.1@ybl,X,\"has, comma\",200,SUCCESS,VPA does not exist,false,,"
    );
    assert_eq!(
        row("k3"),
        "k3,invalid-vpa@ybl,X,,422,INVALID_VPA,Invalid VPA,,,"
    );
    assert_eq!(
        row("k4"),
        "k4,sourcedown@upi,X,,503,SOURCE_UNAVAILABLE,\"Source unavailable, try again later\",,,"
    );
    assert_eq!(
        row("k6"),
        "k6,meera_iyer@oksbi,Meera,,200,SUCCESS,VPA is valid,true,MEERA IYER,Meera Iyer"
    );
    assert_eq!(
        row("k7"),
        "k7,john-paul2@okaxis,John,,200,SUCCESS,VPA is valid,true,JOHN PAUL,John Paul"
    );
    assert_eq!(row("k9"), "k9,no-at-sign,X,,422,INVALID_VPA,Invalid VPA,,,");

    // Each status call signs afresh; a new URL works as well.
    let fresh = client.output_url(&request_id).await;
    let response = http().get(&fresh).send().await.expect("sends");
    assert_eq!(response.status(), StatusCode::OK);
    sandbox.shutdown().await;
}

async fn assert_xml_error(response: reqwest::Response, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/xml");
    let text = response.text().await.expect("body");
    assert!(
        text.starts_with(&format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>"
        )),
        "{text}"
    );
    assert!(
        text.contains("<RequestId>") && text.contains("<HostId>"),
        "{text}"
    );
    assert!(text.ends_with("</HostId></Error>"), "{text}");
    text
}

#[tokio::test]
async fn download_refusals_are_s3_xml() {
    let sandbox = start(fast()).await;
    let base = sandbox.base_url();
    let client = Client::new(&base).await;
    let request_id = client.upload_ok(b"vpa\nravi@okicici\n").await;
    let url = client.output_url(&request_id).await;
    let http = http();

    let response = http
        .get(&url)
        .bearer_auth(&client.token)
        .send()
        .await
        .expect("sends");
    let text = assert_xml_error(response, StatusCode::BAD_REQUEST, "InvalidArgument").await;
    assert!(text.contains(
        "<Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
         Signature query string parameter or the Authorization header should be specified</Message>"
    ));

    let tampered = format!("{}0", &url[..url.len() - 1]);
    let tampered = if tampered == url {
        format!("{}1", &url[..url.len() - 1])
    } else {
        tampered
    };
    for bad in [
        tampered,
        url.split('?').next().expect("path").to_owned(),
        url.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200"),
        url.replace(&request_id, &"0".repeat(32)),
    ] {
        let response = http.get(&bad).send().await.expect("sends");
        assert_xml_error(response, StatusCode::FORBIDDEN, "SignatureDoesNotMatch").await;
    }

    // Correctly signed, but for a batch that does not exist.
    let path = format!(
        "/bulk-data-processing/upi-basic-batch-output-files/{}.csv",
        "f".repeat(32)
    );
    let date = clock::amz_date(clock::now_ms() / 1000);
    let signature = Ids::new(SEED).url_signature(&path, &date, "3600");
    let response = http
        .get(format!(
            "{base}{path}?X-Amz-Date={date}&X-Amz-Expires=3600&X-Amz-Signature={signature}"
        ))
        .send()
        .await
        .expect("sends");
    let text = assert_xml_error(response, StatusCode::NOT_FOUND, "NoSuchKey").await;
    assert!(text.contains(&format!(
        "<Key>upi-basic-batch-output-files/{}.csv</Key>",
        "f".repeat(32)
    )));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_batch_not_ready_has_no_downloadable_file() {
    let sandbox = start(SandboxConfig {
        batch_delay_ms: 600_000,
        ..fast()
    })
    .await;
    let base = sandbox.base_url();
    let client = Client::new(&base).await;
    let request_id = client.upload_ok(b"vpa\nravi@okicici\n").await;
    let path = format!("/bulk-data-processing/upi-basic-batch-output-files/{request_id}.csv");
    let date = clock::amz_date(clock::now_ms() / 1000);
    let signature = Ids::new(SEED).url_signature(&path, &date, "3600");
    let response = http()
        .get(format!(
            "{base}{path}?X-Amz-Date={date}&X-Amz-Expires=3600&X-Amz-Signature={signature}"
        ))
        .send()
        .await
        .expect("sends");
    assert_xml_error(response, StatusCode::NOT_FOUND, "NoSuchKey").await;
    sandbox.shutdown().await;
}

#[tokio::test]
async fn an_expired_url_is_refused_like_s3() {
    let sandbox = start(SandboxConfig {
        url_ttl_secs: 1,
        batch_delay_ms: 0,
        ..fast()
    })
    .await;
    let client = Client::new(&sandbox.base_url()).await;
    let request_id = client.upload_ok(b"vpa\nravi@okicici\n").await;
    let url = client.output_url(&request_id).await;
    // Signed at a whole second at most 1 s ago, valid 1 s: expired 2.5 s later.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = http().get(&url).send().await.expect("sends");
    let text = assert_xml_error(response, StatusCode::FORBIDDEN, "AccessDenied").await;
    let rest = text
        .strip_prefix(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
             <Message>Request has expired</Message><X-Amz-Expires>1</X-Amz-Expires><Expires>",
        )
        .expect("S3's expired body");
    let (expires, rest) = rest
        .split_once("</Expires><ServerTime>")
        .expect("ServerTime");
    let (server_time, rest) = rest
        .split_once("</ServerTime><RequestId>")
        .expect("RequestId");
    assert!(rest.contains("</RequestId><HostId>"), "{text}");
    assert!(
        expires.ends_with('Z') && server_time.ends_with('Z'),
        "{text}"
    );
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let expires = time::OffsetDateTime::parse(expires, rfc3339).expect("Expires");
    let server_time = time::OffsetDateTime::parse(server_time, rfc3339).expect("ServerTime");
    assert!(expires < server_time);

    // A fresh status call hands out a working URL again. Signed at a whole second and valid
    // for one, a URL can expire within milliseconds of being handed out on a loaded machine:
    // a few tries, each with a new URL, must find one that works.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let fresh = client.output_url(&request_id).await;
        let status = http().get(&fresh).send().await.expect("sends").status();
        statuses.push(status);
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses.last(), Some(&StatusCode::OK), "{statuses:?}");
    sandbox.shutdown().await;
}

/// Waits out the last seconds of a UTC day, so a per-day fixed window cannot reset mid-test.
async fn avoid_midnight() {
    let into_day = clock::now_ms() % 86_400_000;
    if into_day > 86_400_000 - 30_000 {
        tokio::time::sleep(Duration::from_millis(86_400_000 - into_day + 100)).await;
    }
}

/// Sends `count` calls with the API key `key` and returns the answers' status codes.
async fn limited_calls(client: &Client, key: &str, count: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..count {
        let response = client
            .http
            .get(format!(
                "{}/v1/verification/batch-processing-status?request_id=x",
                client.base
            ))
            .bearer_auth(&client.token)
            .header("x-api-key", key)
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
            assert_eq!(
                response.text().await.expect("body"),
                r#"{"detail":"Rate limit exceeded. Please retry after some time."}"#
            );
        }
        statuses.push(status);
    }
    statuses
}

#[tokio::test]
async fn fixed_window_answers_429_exactly_at_the_limit() {
    avoid_midnight().await;
    let sandbox = start(SandboxConfig {
        per_day: 4,
        limit_window: LimitWindow::Fixed,
        ..fast()
    })
    .await;
    let base = sandbox.base_url();
    // The authorize call counts against the secret's limit too: 1 + 3 = 4.
    let client = Client::new(&base).await;
    assert_eq!(
        limited_calls(&client, CLIENT_SECRET, 5).await,
        [404, 404, 404, 429, 429]
    );
    // Another key has its own windows; downloads and stats are never limited.
    assert_eq!(limited_calls(&client, "free_tier_other", 1).await, [403]);
    let response = http()
        .get(format!(
            "{base}/bulk-data-processing/upi-basic-batch-output-files/x.csv"
        ))
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let stats = stats(&base).await;
    assert_eq!(stats["requests"], 7);
    assert_eq!(stats["rate_limited"], 2);
    let accepted: u64 = stats["accepted_per_second"]
        .as_object()
        .expect("object")
        .values()
        .map(|n| n.as_u64().expect("count"))
        .sum();
    assert_eq!(accepted, 5);
    assert_eq!(stats["by_endpoint"]["batch_status"], 6);
    assert_eq!(stats["by_endpoint"]["download"], 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sliding_window_answers_429_exactly_at_the_limit() {
    let sandbox = start(SandboxConfig {
        per_minute: 3,
        limit_window: LimitWindow::Sliding,
        ..fast()
    })
    .await;
    let client = Client::new(&sandbox.base_url()).await;
    assert_eq!(
        limited_calls(&client, CLIENT_SECRET, 4).await,
        [404, 404, 429, 429]
    );
    // The authorize endpoint is keyed by its client_secret field: refused as well.
    let response = http()
        .post(format!("{}/v1/authorize", sandbox.base_url()))
        .form(&[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)])
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let response = http()
        .post(format!("{}/v1/authorize", sandbox.base_url()))
        .form(&[("client_id", CLIENT_ID), ("client_secret", "free_tier_x")])
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_comes_before_latency_and_authentication() {
    avoid_midnight().await;
    let sandbox = start(SandboxConfig {
        per_day: 1,
        latency_ms: 300,
        ..fast()
    })
    .await;
    let url = format!(
        "{}/v1/verification/batch-processing-status?request_id=x",
        sandbox.base_url()
    );
    let http = http();
    let started = Instant::now();
    let first = http
        .get(&url)
        .header("x-api-key", "k")
        .send()
        .await
        .expect("sends");
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "latency added"
    );
    let second = http
        .get(&url)
        .header("x-api-key", "k")
        .send()
        .await
        .expect("sends");
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn jobs_persist_across_a_restart_with_a_data_dir() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let config = SandboxConfig {
        data_dir: Some(data.clone()),
        udyam_delay_ms: 300,
        batch_delay_ms: 300,
        ..fast()
    };
    let first = start(config.clone()).await;
    let client = Client::new(&first.base_url()).await;
    let udyam = client.submit_ok("UDYAM-MH-01-0000001").await;
    let (status, _) = client.submit("UDYAM-MH-01-9000005").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let batch = client.upload_ok(BATCH.as_bytes()).await;
    let token = client.token.clone();
    first.shutdown().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &std::path::Path| {
            std::fs::metadata(path)
                .expect("exists")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("jobs.jsonl")), 0o600);
        assert_eq!(
            mode(&data.join("batches").join(format!("{batch}.csv"))),
            0o600
        );
    }

    let second = start(config).await;
    let client = Client {
        http: http(),
        base: second.base_url(),
        token,
    };
    let (status, body) = client.result_after_ready(&udyam).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the old token and request are both known"
    );
    assert_eq!(body["status"], "completed");
    client.submit_ok("UDYAM-MH-01-9000005").await;
    let again = client.submit_ok("UDYAM-MH-01-0000001").await;
    assert_eq!(
        again,
        Ids::new(SEED).udyam_request_id("UDYAM-MH-01-0000001", 1)
    );
    let url = client.output_url(&batch).await;
    assert!(url.starts_with(&second.base_url()));
    let response = http().get(&url).send().await.expect("sends");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert_eq!(text.lines().count(), 10, "header and 9 rows: {text}");
    second.shutdown().await;
}

#[tokio::test]
async fn stats_report_what_the_sandbox_saw() {
    let sandbox = start(fast()).await;
    let base = sandbox.base_url();
    let client = Client::new(&base).await;
    let request_id = client.submit_ok("UDYAM-MH-01-0000001").await;
    client.result(&request_id).await;
    let file = b"vpa,name\nravi@okicici,Ravi\nravi@okicici,Ravi\nmeera@oksbi,Meera\n";
    let batch = client.upload_ok(file).await;
    client.status(&batch).await;

    let response = http()
        .get(format!("{base}/_sandbox/stats"))
        .send()
        .await
        .expect("sends");
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.expect("body");
    assert_key_order(
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
    let stats: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(stats["requests"], 5);
    assert_eq!(stats["rate_limited"], 0);
    let per_second = stats["accepted_per_second"].as_object().expect("object");
    assert!(
        per_second
            .keys()
            .all(|second| second.parse::<u64>().is_ok())
    );
    assert_eq!(
        per_second
            .values()
            .map(|n| n.as_u64().expect("count"))
            .sum::<u64>(),
        5
    );
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
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_statusdown_batch_refuses_its_first_status_calls() {
    let sandbox = start(fast()).await;
    let client = Client::new(&sandbox.base_url()).await;
    let request_id = client
        .upload_ok(b"vpa\nstatusdown.x@ybl\nravi@okicici\n")
        .await;
    for _ in 0..super::batch::STATUS_DOWN_ANSWERS {
        let (status, text) = client.status(&request_id).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(text, r#"{"detail":"Service Unavailable"}"#);
    }
    let (status, _) = client.status(&request_id).await;
    assert_eq!(status, StatusCode::OK, "then it answers as usual");
    let other = client.upload_ok(b"vpa\nravi@okicici\n").await;
    assert_eq!(client.status(&other).await.0, StatusCode::OK);
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

/// A client with a token issued offline from the seed, for sandboxes that refuse to authorize.
fn client_with_issued_token(base: &str) -> Client {
    Client {
        http: http(),
        base: base.to_owned(),
        token: Ids::new(SEED).issue_token(clock::now_ms(), 3600).0,
    }
}

#[test]
fn fault_flags_parse_and_shares_are_checked() {
    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        config: SandboxConfig,
    }
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

#[tokio::test]
async fn start_refuses_a_share_out_of_range() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let config = SandboxConfig {
        reset_share: f64::NAN,
        ..fast()
    };
    let error = Sandbox::start(config, listener)
        .await
        .err()
        .expect("refused");
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
async fn an_error_share_of_one_answers_5xx_and_accepts_nothing() {
    let sandbox = start(SandboxConfig {
        error_share: 1.0,
        ..fast()
    })
    .await;
    let base = sandbox.base_url();
    let client = client_with_issued_token(&base);
    let response = http()
        .post(format!("{base}/v1/authorize"))
        .form(&[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)])
        .send()
        .await
        .expect("sends");
    assert!(response.status().is_server_error(), "authorize too");
    for _ in 0..6 {
        let response = client
            .request(Method::POST, "/v1/verification/async/post-udyam-details")
            .query(&[("udyam_aadhaar_number", "UDYAM-MH-01-0000001")])
            .send()
            .await
            .expect("sends");
        assert!(
            [502, 503, 504].contains(&response.status().as_u16()),
            "{}",
            response.status()
        );
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(
            response.text().await.expect("body"),
            r#"{"detail":"Service temporarily unavailable"}"#
        );
    }
    let (status, _) = client.upload(b"vpa\nravi@okicici\n").await;
    assert!(status.is_server_error(), "{status}");
    let stats = stats(&base).await;
    assert_eq!(stats["requests"], 8);
    assert_eq!(stats["server_errors"], 8);
    assert_eq!(stats["rate_limited"], 0);
    assert_eq!(stats["resets"], 0);
    assert_eq!(stats["udyam_submissions"], json!({}));
    assert_eq!(stats["batch_uploads"], json!({}));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_reset_share_of_one_drops_the_connection_after_the_submission_is_accepted() {
    let sandbox = start(SandboxConfig {
        reset_share: 1.0,
        ..fast()
    })
    .await;
    let base = sandbox.base_url();
    let client = client_with_issued_token(&base);
    let error = client
        .request(Method::POST, "/v1/verification/async/post-udyam-details")
        .query(&[("udyam_aadhaar_number", "UDYAM-MH-01-0000001")])
        .send()
        .await
        .expect_err("no answer at all, not even a status line");
    assert!(error.is_request() && !error.is_timeout(), "{error:?}");
    assert!(
        error_chain(&error).contains("connection closed before message completed"),
        "{error:?}"
    );
    // Authorize is dropped too: clients must cope there as well.
    let error = http()
        .post(format!("{base}/v1/authorize"))
        .form(&[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)])
        .send()
        .await
        .expect_err("no answer");
    assert!(error.is_request(), "{error:?}");
    let stats = stats(&base).await;
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["resets"], 2);
    assert_eq!(stats["server_errors"], 0);
    assert_eq!(
        stats["udyam_submissions"],
        json!({"UDYAM-MH-01-0000001": 1}),
        "the submission was accepted and billed, and sent once"
    );
    sandbox.shutdown().await;
}

/// Wall-clock milliseconds as the client reads them, to compare with the sandbox's instants.
fn wall_ms() -> u64 {
    clock::now_ms()
}

/// One batch-status call keyed `key` without a token: admitted calls answer 401, refused 429.
async fn keyed_call(base: &str, key: &str) -> reqwest::Response {
    http()
        .get(format!(
            "{base}/v1/verification/batch-processing-status?request_id=x"
        ))
        .header("x-api-key", key)
        .send()
        .await
        .expect("sends")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("text")
}

#[tokio::test]
async fn retry_after_says_when_the_key_is_admitted_again() {
    for style in [RetryAfter::Seconds, RetryAfter::Date] {
        let sandbox = start(SandboxConfig {
            per_minute: 2,
            limit_window: LimitWindow::Sliding,
            retry_after: style,
            ..fast()
        })
        .await;
        let base = sandbox.base_url();
        // The oldest of the two admitted calls leaves the sliding minute 60 s after it arrived.
        let first_sent = wall_ms();
        assert_eq!(keyed_call(&base, "k").await.status(), 401);
        let first_answered = wall_ms();
        assert!(
            keyed_call(&base, "k")
                .await
                .headers()
                .get("retry-after")
                .is_none()
        );
        let refused = keyed_call(&base, "k").await;
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
        assert_eq!(
            refused.text().await.expect("body"),
            r#"{"detail":"Rate limit exceeded. Please retry after some time."}"#
        );
        sandbox.shutdown().await;
    }
}

#[tokio::test]
async fn x_rate_headers_count_down_the_tightest_window() {
    let sandbox = start(SandboxConfig {
        per_minute: 4,
        per_day: 100,
        limit_window: LimitWindow::Sliding,
        rate_headers: RateHeaders::X,
        ..fast()
    })
    .await;
    let base = sandbox.base_url();
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let response = keyed_call(&base, "k").await;
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
    let client = Client::new(&base).await;
    let response = client
        .request(Method::GET, "/v1/verification/batch-processing-status")
        .query(&[("request_id", "x")])
        .send()
        .await
        .expect("sends");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&response, "x-ratelimit-remaining"), "2");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn ietf_rate_headers_list_every_window_and_count_down_the_tightest() {
    let sandbox = start(SandboxConfig {
        per_second: 17,
        per_minute: 3,
        per_day: 50_000,
        limit_window: LimitWindow::Sliding,
        rate_headers: RateHeaders::Ietf,
        ..fast()
    })
    .await;
    let base = sandbox.base_url();
    let mut states = Vec::new();
    for _ in 0..4 {
        let response = keyed_call(&base, "k").await;
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
    sandbox.shutdown().await;
}

#[tokio::test]
async fn an_outage_answers_its_status_then_recovers() {
    // A second before and one inside it: margin for a loaded machine, within 2.1 s in all.
    const AFTER: u64 = 1000;
    const FOR: u64 = 1000;
    async fn case(down_status: DownStatus) {
        let started = Instant::now();
        let wall_before = wall_ms();
        let sandbox = start(SandboxConfig {
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
        let base = sandbox.base_url();
        // Before the outage: business as usual, authorize included.
        let client = Client::new(&base).await;
        tokio::time::sleep(Duration::from_millis(AFTER + 200).saturating_sub(started.elapsed()))
            .await;
        let authorize = http()
            .post(format!("{base}/v1/authorize"))
            .form(&[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)])
            .send()
            .await;
        let submit = client
            .request(Method::POST, "/v1/verification/async/post-udyam-details")
            .query(&[("udyam_aadhaar_number", "UDYAM-MH-01-0000001")])
            .send()
            .await;
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
                    assert_eq!(
                        response.text().await.expect("body"),
                        r#"{"detail":"Service temporarily unavailable"}"#
                    );
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
                    assert_eq!(
                        response.text().await.expect("body"),
                        r#"{"detail":"Rate limit exceeded. Please retry after some time."}"#
                    );
                }
            }
        }
        // It recovers by itself, and not before the outage's end.
        loop {
            let answer = client
                .request(Method::POST, "/v1/verification/async/post-udyam-details")
                .query(&[("udyam_aadhaar_number", "UDYAM-MH-01-0000001")])
                .send()
                .await;
            if let Ok(response) = answer
                && response.status() == StatusCode::OK
            {
                break;
            }
            assert!(started.elapsed() < DEADLINE, "never recovered");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(AFTER + FOR - 50),
            "recovered after {:?}",
            started.elapsed()
        );
        let stats = stats(&base).await;
        let counter = match down_status {
            DownStatus::Unavailable => "server_errors",
            DownStatus::RateLimited => "rate_limited",
            DownStatus::Reset => "resets",
        };
        let faults = stats[counter].as_u64().expect("count");
        let requests = stats["requests"].as_u64().expect("count");
        let accepted: u64 = stats["accepted_per_second"]
            .as_object()
            .expect("object")
            .values()
            .map(|n| n.as_u64().expect("count"))
            .sum();
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
        sandbox.shutdown().await;
    }
    tokio::join!(
        case(DownStatus::Unavailable),
        case(DownStatus::RateLimited),
        case(DownStatus::Reset)
    );
}

#[tokio::test]
async fn a_stuck_share_of_one_never_finishes() {
    let sandbox = start(SandboxConfig {
        stuck_share: 1.0,
        udyam_delay_ms: 0,
        batch_delay_ms: 0,
        ..fast()
    })
    .await;
    let client = Client::new(&sandbox.base_url()).await;
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
    let path = format!("/bulk-data-processing/upi-basic-batch-output-files/{batch}.csv");
    let date = clock::amz_date(clock::now_ms() / 1000);
    let signature = Ids::new(SEED).url_signature(&path, &date, "3600");
    let response = http()
        .get(format!(
            "{}{path}?X-Amz-Date={date}&X-Amz-Expires=3600&X-Amz-Signature={signature}",
            sandbox.base_url()
        ))
        .send()
        .await
        .expect("sends");
    assert_xml_error(response, StatusCode::NOT_FOUND, "NoSuchKey").await;
    sandbox.shutdown().await;
}
