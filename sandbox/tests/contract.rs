//! Contract tests: the sandbox answers with the shapes of the providers' own documented
//! samples (kept in fixtures/contract/), field for field. The other direction — that those
//! samples parse into the outcomes they mean — is tested beside each check's reader.

use std::time::Duration;

use bulkverify_sandbox::{CLIENT_ID, CLIENT_SECRET, Sandbox, SandboxConfig};
use serde_json::Value;

/// A value's shape: object keys and value types, recursively; arrays by their first element.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

/// The package's directory as cargo gives it to the running test, since a test built in
/// another checkout (a build cache shared between clones) holds that checkout's path; the path
/// it was built with when run by hand.
fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

fn fixture(name: &str) -> Value {
    let path = package_dir().join("fixtures/contract").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn start(config: SandboxConfig) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sandbox::start(config, listener).await.unwrap()
}

#[tokio::test]
async fn sandbox_answers_match_the_documented_shapes() {
    let sb = start(SandboxConfig {
        per_second: 0,
        per_minute: 0,
        per_day: 0,
        udyam_delay_ms: 300,
        batch_delay_ms: 300,
        batch_ms_per_row: 0,
        ..SandboxConfig::default()
    })
    .await;
    let base = sb.base_url();
    let http = reqwest::Client::new();

    let form = reqwest::multipart::Form::new()
        .text("client_id", CLIENT_ID)
        .text("client_secret", CLIENT_SECRET);
    let auth: Value = http
        .post(format!("{base}/v1/authorize"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shape(&auth), shape(&fixture("deepvue-authorize.json")));
    let token = auth["access_token"].as_str().unwrap().to_string();
    let get = |url: String| {
        http.get(url)
            .bearer_auth(&token)
            .header("x-api-key", CLIENT_SECRET)
            .send()
    };
    let submit = |number: &str| {
        http.post(format!(
            "{base}/v1/verification/async/post-udyam-details?udyam_aadhaar_number={number}"
        ))
        .bearer_auth(&token)
        .header("x-api-key", CLIENT_SECRET)
        .send()
    };

    let ok: Value = submit("UDYAM-MH-01-0000001")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failed: Value = submit("UDYAM-MH-01-9000001")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let result = |id: &Value| {
        format!(
            "{base}/v1/verification/async/get-udyam-details?request_id={}",
            id["request_id"].as_str().unwrap()
        )
    };
    let running = get(result(&ok)).await.unwrap();
    assert_eq!(running.status(), 202, "the documented 202 while running");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let completed: Value = get(result(&ok)).await.unwrap().json().await.unwrap();
    assert_eq!(
        shape(&completed),
        shape(&fixture("deepvue-udyam-result-completed.json"))
    );
    let failed: Value = get(result(&failed)).await.unwrap().json().await.unwrap();
    assert_eq!(
        shape(&failed),
        shape(&fixture("deepvue-udyam-result-failed.json"))
    );

    let part = reqwest::multipart::Part::bytes(b"vpa,name\nravi@okicici,Ravi\n".to_vec())
        .file_name("b.csv");
    let upload = http
        .post(format!("{base}/v1/verification/upi-basic/batch"))
        .bearer_auth(&token)
        .header("x-api-key", CLIENT_SECRET)
        .multipart(reqwest::multipart::Form::new().part("batch_file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);
    let upload: Value = upload.json().await.unwrap();
    assert_eq!(shape(&upload), shape(&fixture("deepvue-batch-submit.json")));
    let status_url = format!(
        "{base}/v1/verification/batch-processing-status?request_id={}",
        upload["request_id"].as_str().unwrap()
    );
    let in_progress: Value = get(status_url.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(
        shape(&in_progress),
        shape(&fixture("deepvue-batch-status-in-progress.json"))
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let done: Value = get(status_url).await.unwrap().json().await.unwrap();
    assert_eq!(
        shape(&done),
        shape(&fixture("deepvue-batch-status-completed.json"))
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_answer_is_the_documented_one() {
    let sb = start(SandboxConfig {
        per_second: 0,
        per_minute: 1,
        per_day: 0,
        ..SandboxConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/authorize", sb.base_url());
    let send = || {
        http.post(&url)
            .form(&[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)])
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let limited = send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().get("retry-after").is_none());
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body, fixture("deepvue-rate-limited.json"));
    sb.shutdown().await;
}
