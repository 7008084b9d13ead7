//! Deepvue over HTTP: authorize and its tokens, the async Udyam lookup, ids and persistence;
//! the UPI batches and their downloads in `deepvue/batch.rs`.

use super::*;

mod batch;

/// Deepvue's answer to a request id it never issued, from both of its async endpoints.
const NO_REQUEST: &str = "No request found for the given request_id";

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

#[tokio::test]
async fn authorize_accepts_multipart_and_urlencoded_forms() {
    let sandbox = Running::start(SandboxConfig {
        token_ttl_secs: 3600,
        ..fast()
    })
    .await;
    let base = &sandbox.base;
    let multipart = reqwest::multipart::Form::new()
        .text("client_id", CLIENT_ID)
        .text("client_secret", CLIENT_SECRET);
    for request in [
        http()
            .post(format!("{base}/v1/authorize"))
            .multipart(multipart),
        authorize_form(base, CLIENT_SECRET),
    ] {
        let response = request.send().await.expect("sends");
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.expect("body");
        let body = json_in_order(&text, &["access_token", "token_type", "expiry"]);
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
}

#[tokio::test]
async fn authorize_refuses_wrong_or_missing_credentials() {
    let sandbox = Running::start(fast()).await;
    let url = format!("{}/v1/authorize", sandbox.base);

    assert_answer(
        authorize_form(&sandbox.base, "free_tier_wrong"),
        StatusCode::UNAUTHORIZED,
        r#"{"detail":"Invalid client credentials"}"#,
    )
    .await;
    assert_answer(
        http()
            .post(&url)
            .multipart(reqwest::multipart::Form::new().text("client_id", CLIENT_ID)),
        StatusCode::UNPROCESSABLE_ENTITY,
        r#"{"detail":[{"loc":["body","client_secret"],"msg":"field required","type":"value_error.missing"}]}"#,
    )
    .await;

    let response = http()
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
}

#[tokio::test]
async fn v1_calls_need_a_valid_token_then_the_api_key() {
    let sandbox = Running::start(fast()).await;
    let base = &sandbox.base;
    let http = http();
    let token = authorize(&http, base).await;
    let url = format!("{base}/v1/verification/async/get-udyam-details?request_id=unknown");
    let other_seed = Ids::new("another seed")
        .issue_token(clock::now_ms(), 3600)
        .0;
    let invalid_key = r#"{"detail":"Invalid API key"}"#;

    let cases = [
        (None, Some(CLIENT_SECRET), 401, INVALID_TOKEN),
        (Some("garbage"), Some(CLIENT_SECRET), 401, INVALID_TOKEN),
        (
            Some(other_seed.as_str()),
            Some(CLIENT_SECRET),
            401,
            INVALID_TOKEN,
        ),
        (Some(token.as_str()), None, 403, invalid_key),
        (
            Some(token.as_str()),
            Some("free_tier_other"),
            403,
            invalid_key,
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

    let client = Client::new(base).await;
    let (status, body) = client.result("unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, 404, "NOT_FOUND", NO_REQUEST);
    assert_answer(
        client.request(Method::GET, "/v1/no-such-endpoint"),
        StatusCode::NOT_FOUND,
        r#"{"detail":"Not Found"}"#,
    )
    .await;
}

#[tokio::test]
async fn tokens_expire_after_their_ttl() {
    let sandbox = Running::start(SandboxConfig {
        token_ttl_secs: 2,
        ..fast()
    })
    .await;
    let base = &sandbox.base;
    let response = authorize_form(base, CLIENT_SECRET)
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
        http()
            .get(format!(
                "{base}/v1/verification/batch-processing-status?request_id=x"
            ))
            .bearer_auth(token)
            .header("x-api-key", CLIENT_SECRET)
    };
    // The token lives at least its 2 s ttl: this call is well inside it.
    assert_eq!(
        call().send().await.expect("sends").status(),
        StatusCode::NOT_FOUND
    );
    let expiry_ms = u64::try_from(expiry.unix_timestamp()).expect("positive") * 1000;
    let wait = (expiry_ms + 300).saturating_sub(clock::now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_answer(call(), StatusCode::UNAUTHORIZED, INVALID_TOKEN).await;
}

#[tokio::test]
async fn udyam_submission_shapes() {
    let sandbox = Running::start(fast()).await;
    let client = Client::new(&sandbox.base).await;

    let (status, text) = text_of(client.submission("UDYAM-MH-01-0000001")).await;
    assert_eq!(status, StatusCode::OK);
    let body = json_in_order(
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

    assert_answer(
        client.request(Method::POST, "/v1/verification/async/post-udyam-details"),
        StatusCode::UNPROCESSABLE_ENTITY,
        r#"{"detail":[{"loc":["query","udyam_aadhaar_number"],"msg":"field required","type":"value_error.missing"}]}"#,
    )
    .await;

    for bad in ["UDYAM-MH-1-0000001", "udyam-mh-01-0000001", "12345"] {
        let (status, body) = client.submit(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_envelope(&body, 400, "INVALID_INPUT", "Invalid Udyam number");
    }
    let (status, body) = client.result("no-such-request").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, 404, "NOT_FOUND", NO_REQUEST);
}

#[tokio::test]
async fn udyam_result_is_202_until_ready_then_the_completed_record() {
    let sandbox = Running::start(SandboxConfig {
        udyam_delay_ms: 2000,
        ..fast()
    })
    .await;
    let client = Client::new(&sandbox.base).await;
    let request_id = client.submit_ok("UDYAM-MH-01-0000001").await;

    assert_answer(
        client.result_request(&request_id),
        StatusCode::ACCEPTED,
        &format!(
            r#"{{"request_id":"{request_id}","status":"in_progress","message":"Request is being processed"}}"#
        ),
    )
    .await;

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
    let (_, raw) = text_of(client.result_request(&request_id)).await;
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
}

#[tokio::test]
async fn udyam_test_numbers_behave_as_scripted() {
    let sandbox = Running::start(fast()).await;
    let client = Client::new(&sandbox.base).await;

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

    let stats = stats(&sandbox.base).await;
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
}

#[tokio::test]
async fn udyam_source_output_varies_by_number() {
    let sandbox = Running::start(fast()).await;
    let client = Client::new(&sandbox.base).await;
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
}

#[tokio::test]
async fn ids_are_deterministic_for_a_seed() {
    let file = b"vpa\nravi@okicici\n";
    let mut runs = Vec::new();
    for seed in [SEED, SEED, "another seed"] {
        let sandbox = Running::start(SandboxConfig {
            seed: seed.to_owned(),
            ..fast()
        })
        .await;
        let client = Client::new(&sandbox.base).await;
        runs.push([
            client.submit_ok("UDYAM-MH-01-0000001").await,
            client.submit_ok("UDYAM-MH-01-0000001").await,
            client.submit_ok("UDYAM-MH-01-0000002").await,
            client.upload_ok(file).await,
            client.upload_ok(file).await,
        ]);
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
async fn jobs_persist_across_a_restart_with_a_data_dir() {
    let data = Restartable::new(SandboxConfig {
        udyam_delay_ms: 300,
        batch_delay_ms: 300,
        ..fast()
    });
    let first = data.start().await;
    let client = Client::new(&first.base).await;
    let udyam = client.submit_ok("UDYAM-MH-01-0000001").await;
    let (status, _) = client.submit("UDYAM-MH-01-9000005").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let batch = client.upload_ok(batch::BATCH.as_bytes()).await;
    let token = client.token;
    first.stop().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("exists")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(data.dir()), 0o700);
        assert_eq!(mode(&data.dir().join("jobs.jsonl")), 0o600);
        assert_eq!(
            mode(&data.dir().join("batches").join(format!("{batch}.csv"))),
            0o600
        );
    }

    let second = data.start().await;
    let client = Client {
        http: http(),
        base: second.base.clone(),
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
    assert!(url.starts_with(&second.base));
    let response = bare_get(&url).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert_eq!(text.lines().count(), 10, "header and 9 rows: {text}");
}
