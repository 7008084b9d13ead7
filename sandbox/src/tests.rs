//! The simulator over HTTP, with reqwest as the client, on `127.0.0.1:0`: the helpers every
//! provider's tests share; the tests live in one file per provider, and the gateway's own
//! behaviour (limits, faults, outages, stats, flags) in `gateway.rs` and `limits.rs`.
//!
//! Timing: every "still running" assertion has seconds of margin, every "now ready" one polls
//! until a generous deadline, so a loaded machine slows the tests without failing them.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::ids::{Ids, sha256_hex};
use super::*;

mod attestr;
mod cashfree;
mod deepvue;
mod equal;
mod gateway;
mod limits;

const SEED: &str = "test-seed";
const DEADLINE: Duration = Duration::from_secs(30);
/// Deepvue's answer to a missing, forged or expired bearer token.
const INVALID_TOKEN: &str = r#"{"detail":"Invalid or expired token"}"#;
/// Deepvue's 429 body, the same whichever window refused.
const RATE_LIMITED: &str = r#"{"detail":"Rate limit exceeded. Please retry after some time."}"#;
/// Deepvue's body for the gateway's injected 5xx answers and its outage.
const UNAVAILABLE: &str = r#"{"detail":"Service temporarily unavailable"}"#;

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

/// At most `n` calls a minute, counted in a sliding window: the limit a test can fill and
/// hit at once, whatever the clock reads.
fn per_minute_sliding(n: u64) -> SandboxConfig {
    SandboxConfig {
        per_minute: n,
        limit_window: LimitWindow::Sliding,
        ..fast()
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("binds")
}

/// A sandbox that stops when it goes out of scope, so no test needs to stop it by hand, and
/// one that fails half-way stops its server all the same.
struct Running {
    /// An `Option` because `stop` moves the sandbox out to await its shutdown, which a type
    /// with `Drop` allows only through `take`.
    sandbox: Option<Sandbox>,
    base: String,
}

impl Running {
    async fn start(config: SandboxConfig) -> Running {
        Running::on(listener().await, config).await.expect("starts")
    }

    /// On a listener the caller bound, to know its port, or to see a refusal to start.
    async fn on(listener: TcpListener, config: SandboxConfig) -> Result<Running, SandboxError> {
        let sandbox = Sandbox::start(config, listener).await?;
        Ok(Running {
            base: sandbox.base_url(),
            sandbox: Some(sandbox),
        })
    }

    /// Waits until every answer in flight is given and written down: a test that starts a
    /// sandbox again on the same data directory must not race the one before.
    async fn stop(mut self) {
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.shutdown().await;
        }
    }
}

impl Drop for Running {
    /// Drop cannot await the graceful shutdown: it asks for it, and the test's runtime ends
    /// whatever is left of the server when the test returns.
    fn drop(&mut self) {
        if let Some(sandbox) = self.sandbox.take() {
            // An error means the server already stopped.
            let _ = sandbox.stop.send(());
        }
    }
}

/// Why a sandbox with `config` refuses to start.
async fn refusal(config: SandboxConfig) -> SandboxError {
    Running::on(listener().await, config)
        .await
        .err()
        .expect("refused")
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

    /// A client with a token issued offline from the seed, for sandboxes that refuse to
    /// authorize.
    fn with_issued_token(base: &str) -> Client {
        Client {
            http: http(),
            base: base.to_owned(),
            token: Ids::new(SEED).issue_token(clock::now_ms(), 3600).0,
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.keyed(method, path, CLIENT_SECRET)
    }

    /// With the API key `key` in place of the client's secret: a key has its own rate limit.
    fn keyed(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-api-key", key)
    }

    fn submission(&self, number: &str) -> RequestBuilder {
        self.request(Method::POST, "/v1/verification/async/post-udyam-details")
            .query(&[("udyam_aadhaar_number", number)])
    }

    async fn submit(&self, number: &str) -> (StatusCode, Value) {
        json_of(self.submission(number).send().await.expect("sends")).await
    }

    async fn submit_ok(&self, number: &str) -> String {
        let (status, body) = self.submit(number).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["request_id"].as_str().expect("request_id").to_owned()
    }

    fn result_request(&self, request_id: &str) -> RequestBuilder {
        self.request(Method::GET, "/v1/verification/async/get-udyam-details")
            .query(&[("request_id", request_id)])
    }

    async fn result(&self, request_id: &str) -> (StatusCode, Value) {
        json_of(self.result_request(request_id).send().await.expect("sends")).await
    }

    /// Polls until the answer is no longer 202.
    async fn result_after_ready(&self, request_id: &str) -> (StatusCode, Value) {
        eventually(|| async move {
            let (status, body) = self.result(request_id).await;
            (status != StatusCode::ACCEPTED)
                .then_some((status, body))
                .ok_or_else(|| format!("{request_id} never ready"))
        })
        .await
    }

    async fn upload(&self, file: &[u8]) -> (StatusCode, String) {
        let part = reqwest::multipart::Part::bytes(file.to_vec())
            .file_name("batch.csv")
            .mime_str("text/csv")
            .expect("mime");
        let request = self
            .request(Method::POST, "/v1/verification/upi-basic/batch")
            .query(&[("webhook_url", "https://example.com/hook")])
            .multipart(reqwest::multipart::Form::new().part("batch_file", part));
        text_of(request).await
    }

    async fn upload_ok(&self, file: &[u8]) -> String {
        let (status, text) = self.upload(file).await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
        let body: Value = serde_json::from_str(&text).expect("json");
        body["request_id"].as_str().expect("request_id").to_owned()
    }

    fn status_request(&self, request_id: &str) -> RequestBuilder {
        self.request(Method::GET, "/v1/verification/batch-processing-status")
            .query(&[("request_id", request_id)])
    }

    async fn status(&self, request_id: &str) -> (StatusCode, String) {
        text_of(self.status_request(request_id)).await
    }

    /// Polls the batch status until it is done; returns the output URL.
    async fn output_url(&self, request_id: &str) -> String {
        eventually(|| async move {
            let (status, text) = self.status(request_id).await;
            assert_eq!(status, StatusCode::OK, "{text}");
            let body: Value = serde_json::from_str(&text).expect("json");
            if body["data"]["status"] == 200 {
                Ok(body["data"]["batch_output_file_url"]
                    .as_str()
                    .expect("url")
                    .to_owned())
            } else {
                Err(format!("{request_id} never done"))
            }
        })
        .await
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

/// Deepvue's authorize call as a url-encoded form, with the sandbox's client id and `secret`.
fn authorize_form(base: &str, secret: &str) -> RequestBuilder {
    http()
        .post(format!("{base}/v1/authorize"))
        .form(&[("client_id", CLIENT_ID), ("client_secret", secret)])
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

/// A GET with no credentials at all, as S3 downloads are made.
async fn bare_get(url: &str) -> reqwest::Response {
    http().get(url).send().await.expect("sends")
}

/// A download URL for batch `request_id` signed by hand from the seed, valid an hour: reaches
/// files that no status call hands out a URL for.
fn signed_download_url(base: &str, request_id: &str) -> String {
    let path = format!("/bulk-data-processing/upi-basic-batch-output-files/{request_id}.csv");
    let date = clock::amz_date(clock::now_ms() / 1000);
    let signature = Ids::new(SEED).url_signature(&path, &date, "3600");
    format!("{base}{path}?X-Amz-Date={date}&X-Amz-Expires=3600&X-Amz-Signature={signature}")
}

/// Calls `attempt` until it gives a value, failing with its last complaint after the deadline.
async fn eventually<T, F>(mut attempt: impl FnMut() -> F) -> T
where
    F: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(complaint) => assert!(start.elapsed() < DEADLINE, "{complaint}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

async fn text_of(request: RequestBuilder) -> (StatusCode, String) {
    let response = request.send().await.expect("sends");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

/// Sends `request` and asserts the answer's status and its body to the letter.
async fn assert_answer(request: RequestBuilder, status: StatusCode, text: &str) {
    assert_eq!(text_of(request).await, (status, text.to_owned()));
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

    /// Asserts the order of the body's keys as sent (see `assert_key_order`), then the
    /// status, and returns the body.
    fn expect_in_order(&self, status: u16, keys: &[&str]) -> &Value {
        assert_key_order(&self.text, keys);
        self.expect(status)
    }

    /// Asserts the status and the body's keys (sorted), and returns the body.
    fn expect_keys(&self, status: u16, keys: &[&str]) -> &Value {
        let body = self.expect(status);
        assert_eq!(object_keys(body), keys, "{}", self.text);
        body
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

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("text")
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

    async fn start(&self) -> Running {
        Running::start(self.config.clone()).await
    }

    fn dir(&self) -> &Path {
        self.config.data_dir.as_deref().expect("a data dir")
    }

    /// The journal's text, to check what was (and was not) written down.
    fn journal(&self) -> String {
        std::fs::read_to_string(self.dir().join("jobs.jsonl")).expect("reads")
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

/// The requests the stats count as admitted, over every second.
fn accepted(stats: &Value) -> u64 {
    stats["accepted_per_second"]
        .as_object()
        .expect("object")
        .values()
        .map(|n| n.as_u64().expect("count"))
        .sum()
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

/// Asserts the key order of a value parsed from an answer: serde_json keeps the order it read
/// (its `preserve_order` feature), so a nested object can be checked on its own.
fn assert_value_key_order(value: &Value, keys: &[&str]) {
    assert_key_order(&serde_json::to_string(value).expect("serialises"), keys);
}

/// Asserts the key order of a JSON text (see `assert_key_order`) and parses it.
fn json_in_order(text: &str, keys: &[&str]) -> Value {
    assert_key_order(text, keys);
    serde_json::from_str(text).expect("json")
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

/// Asserts an S3 error document with `code`, and returns its text.
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

/// Waits out the last seconds of a UTC day, so a per-day fixed window cannot reset mid-test.
async fn avoid_midnight() {
    let into_day = clock::now_ms() % 86_400_000;
    if into_day > 86_400_000 - 30_000 {
        tokio::time::sleep(Duration::from_millis(86_400_000 - into_day + 100)).await;
    }
}

/// Wall-clock milliseconds as the client reads them, to compare with the sandbox's instants.
fn wall_ms() -> u64 {
    clock::now_ms()
}
