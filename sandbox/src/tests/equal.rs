//! Equal over HTTP: the Aadhaar OTP journey, its test numbers, the gateway's bodiless answers,
//! and journeys that outlive a sandbox without the Aadhaar number being written down.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as STANDARD_B64;

use super::*;

const AADHAAR: &str = "234123412346";

fn credentials() -> String {
    let pair = format!("{EQUAL_CLIENT_ID}:{EQUAL_CLIENT_SECRET}");
    format!("Basic {}", STANDARD_B64.encode(pair))
}

fn call(base: &str, path: &str, body: &Value) -> RequestBuilder {
    http()
        .post(format!("{base}/ie/transaction/journey{path}"))
        .header("authorization", credentials())
        .json(body)
}

/// Step 1 without `otp`, step 2 with it.
async fn execute(base: &str, transaction_id: &str, aadhaar: &str, otp: Option<&str>) -> Reply {
    let mut input = json!({"aadhaar_no": aadhaar});
    if let Some(otp) = otp {
        input["otp"] = json!(otp);
    }
    let body = json!({
        "journey_id": EQUAL_JOURNEY_ID,
        "transaction_id": transaction_id,
        "input_data": input,
        "request_id": "r-1",
    });
    reply(call(base, "/execute", &body)).await
}

async fn fetch(base: &str, transaction_id: &str, journey_transaction_id: &str) -> Reply {
    let body =
        json!({"transaction_id": transaction_id, "journey_transaction_id": journey_transaction_id});
    reply(call(base, "/data/fetch", &body)).await
}

/// Asserts a 200 envelope's status and code, and returns it.
fn envelope<'a>(reply: &'a Reply, status: &str, status_code: &str) -> &'a Value {
    let body = reply.expect_keys(
        200,
        &[
            "checks",
            "data",
            "decision",
            "journey_id",
            "journey_transaction_id",
            "message",
            "status",
            "status_code",
            "transaction_id",
        ],
    );
    assert_eq!(
        (body["status"].as_str(), body["status_code"].as_str()),
        (Some(status), Some(status_code)),
        "{}",
        reply.text
    );
    assert_eq!(body["journey_id"], EQUAL_JOURNEY_ID);
    body
}

fn assert_failure(reply: &Reply, status: u16, status_code: &str) {
    let body = reply.expect_keys(status, &["message", "status", "status_code"]);
    assert_eq!(
        (body["status"].as_str(), body["status_code"].as_str()),
        (Some("FAILURE"), Some(status_code))
    );
}

#[tokio::test]
async fn a_journey_sends_one_otp_then_succeeds_with_a_masked_number() {
    let sandbox = Running::start(fast()).await;
    let base = &sandbox.base;
    let step1 = execute(base, "t-1", AADHAAR, None).await;
    assert_key_order(
        &step1.text,
        &[
            "transaction_id",
            "journey_transaction_id",
            "journey_id",
            "status",
            "status_code",
            "message",
            "decision",
            "checks",
            "data",
        ],
    );
    let started = envelope(&step1, "IN_PROGRESS", "otp_sent");
    assert_eq!(
        (
            &started["transaction_id"],
            &started["decision"],
            &started["checks"],
            &started["data"]
        ),
        (&json!("t-1"), &json!(""), &json!([]), &json!({}))
    );
    let journey = started["journey_transaction_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(is_uuid(&journey));
    let repeated = execute(base, "t-1", AADHAAR, None).await;
    assert_eq!(repeated.body, step1.body, "the same journey, no second OTP");
    assert_failure(
        &execute(base, "t-1", "999900000028", None).await,
        400,
        "invalid_request",
    );

    let wrong = execute(base, "t-1", AADHAAR, Some("654321")).await;
    envelope(&wrong, "FAILURE", "invalid_otp");
    let success = execute(base, "t-1", AADHAAR, Some(SANDBOX_OTP)).await;
    let done = envelope(&success, "SUCCESS", "success");
    assert_eq!(done["decision"], "CLEAR");
    let key = &done["data"]["keys"]["aadhaar"][0];
    assert_value_key_order(
        key,
        &[
            "aadhaar_no",
            "name",
            "source",
            "issuer",
            "decision",
            "checks",
        ],
    );
    assert_eq!(key["aadhaar_no"], "XXXXXXXX2346");
    assert_eq!(
        (&key["source"], &key["decision"], &key["checks"]),
        (&json!("nsdl"), &json!("CLEAR"), &json!([]))
    );
    assert!(!success.text.contains(AADHAAR));
    assert_eq!(fetch(base, "t-1", &journey).await.body, success.body);
    assert_eq!(
        execute(base, "t-1", AADHAAR, Some(SANDBOX_OTP)).await.body,
        success.body
    );

    let stats = stats(base).await;
    assert_eq!(stats["aadhaar_otp_requests"], json!({"XXXXXXXX2346": 1}));
    assert_eq!(
        stats["aadhaar_otp_verifications"],
        json!({"XXXXXXXX2346": 3})
    );
    assert_counts(
        &stats["by_endpoint"],
        &[("journey_execute", 6), ("journey_fetch", 1)],
    );
}

#[tokio::test]
async fn test_aadhaar_numbers_script_every_documented_answer() {
    let sandbox = Running::start(fast()).await;
    let base = &sandbox.base;
    for (transaction, aadhaar, status_code) in [
        ("t-nf", "999900000016", "document_not_found"),
        ("t-bad", "234123412347", "invalid_aadhaar_no"),
        ("t-short", "23412341234", "invalid_aadhaar_no"),
    ] {
        let reply = execute(base, transaction, aadhaar, None).await;
        envelope(&reply, "FAILURE", status_code);
    }
    assert_failure(
        &execute(base, "t-500", "999900000059", None).await,
        500,
        "internal_server_error",
    );
    for (aadhaar, decision) in [
        ("999900000028", "MUST REVIEW"),
        ("999900000037", "NEEDS REVIEW"),
    ] {
        let transaction = format!("t-{aadhaar}");
        envelope(
            &execute(base, &transaction, aadhaar, None).await,
            "IN_PROGRESS",
            "otp_sent",
        );
        let reply = execute(base, &transaction, aadhaar, Some(SANDBOX_OTP)).await;
        let done = envelope(&reply, "SUCCESS", "success");
        assert_eq!(
            (
                &done["decision"],
                &done["data"]["keys"]["aadhaar"][0]["decision"]
            ),
            (&json!(decision), &json!(decision))
        );
    }
    for body in [
        json!({"journey_id": EQUAL_JOURNEY_ID, "transaction_id": "t-x", "input_data": {}}),
        json!({"journey_id": "other", "transaction_id": "t-x", "input_data": {"aadhaar_no": AADHAAR}}),
        json!({"journey_id": EQUAL_JOURNEY_ID, "input_data": {"aadhaar_no": AADHAAR}}),
        json!([1, 2]),
    ] {
        assert_failure(
            &reply(call(base, "/execute", &body)).await,
            400,
            "invalid_request",
        );
    }
    let missing = reply(call(
        base,
        "/execute",
        &json!({"journey_id": EQUAL_JOURNEY_ID, "transaction_id": "t", "input_data": {}}),
    ))
    .await;
    assert_eq!(missing.body["message"], "aadhaar_no is required");
    assert_failure(
        &execute(base, "t-none", AADHAAR, Some(SANDBOX_OTP)).await,
        400,
        "invalid_request",
    );
    assert_failure(&fetch(base, "t-none", "x").await, 400, "invalid_request");
}

#[tokio::test]
async fn a_delayed_journey_resolves_through_fetch_and_an_otp_expires() {
    let sandbox = Running::start(SandboxConfig {
        journey_delay_ms: 300,
        ..fast()
    })
    .await;
    let base = &sandbox.base;
    let delayed = "999900000044";
    let started = execute(base, "t-d", delayed, None).await;
    let journey = started.expect(200)["journey_transaction_id"]
        .as_str()
        .expect("id")
        .to_owned();
    envelope(
        &execute(base, "t-d", delayed, Some(SANDBOX_OTP)).await,
        "IN_PROGRESS",
        "in_progress",
    );
    let resolved = eventually(|| {
        let fetched = fetch(base, "t-d", &journey);
        async move {
            let reply = fetched.await;
            if reply.body["status"] == "SUCCESS" {
                return Ok(reply);
            }
            envelope(&reply, "IN_PROGRESS", "in_progress");
            Err("never resolved".to_owned())
        }
    })
    .await;
    assert_eq!(
        envelope(&resolved, "SUCCESS", "success")["decision"],
        "CLEAR"
    );

    let expiring = Running::start(SandboxConfig {
        otp_ttl_secs: 1,
        ..fast()
    })
    .await;
    let base = &expiring.base;
    envelope(
        &execute(base, "t-e", AADHAAR, None).await,
        "IN_PROGRESS",
        "otp_sent",
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    envelope(
        &execute(base, "t-e", AADHAAR, Some(SANDBOX_OTP)).await,
        "FAILURE",
        "otp_expired",
    );
}

#[tokio::test]
async fn equal_refusals_are_its_own_and_its_gateway_sends_no_body() {
    let sandbox = Running::start(per_minute_sliding(2)).await;
    let base = &sandbox.base;
    for authorization in [
        format!(
            "Basic {}",
            STANDARD_B64.encode(format!("{EQUAL_CLIENT_ID}:wrong"))
        ),
        format!(
            "Bearer {}",
            STANDARD_B64.encode(format!("{EQUAL_CLIENT_ID}:{EQUAL_CLIENT_SECRET}"))
        ),
    ] {
        let refused = http()
            .post(format!("{base}/ie/transaction/journey/execute"))
            .header("authorization", authorization)
            .json(&json!({}));
        assert_eq!(
            reply(refused).await.expect(401),
            &json!({"status": "FAILURE", "status_code": "invalid_credentials", "message": "Invalid Client Credentials"})
        );
    }
    let codes = [
        execute(base, "t-1", AADHAAR, None).await,
        execute(base, "t-1", AADHAAR, None).await,
        execute(base, "t-1", AADHAAR, None).await,
    ]
    .map(|reply| (reply.status.as_u16(), reply.text));
    assert_eq!(codes[2], (429, String::new()));
    assert_eq!(codes.map(|(status, _)| status), [200, 200, 429]);

    let down_sandbox = Running::start(SandboxConfig {
        down_for_ms: 60_000,
        ..fast()
    })
    .await;
    let down = execute(&down_sandbox.base, "t-1", AADHAAR, None).await;
    assert_eq!((down.status.as_u16(), down.text.as_str()), (503, ""));
}

#[tokio::test]
async fn journeys_survive_a_restart_without_the_aadhaar_number() {
    let data = Restartable::new(fast());
    let first = data.start().await;
    let started = execute(&first.base, "t-r", AADHAAR, None).await;
    let journey = started.expect(200)["journey_transaction_id"].clone();
    first.stop().await;
    let journal = data.journal();
    assert!(
        journal.contains("XXXXXXXX2346") && !journal.contains(AADHAAR),
        "{journal}"
    );

    let second = data.start().await;
    let base = &second.base;
    let repeated = execute(base, "t-r", AADHAAR, None).await;
    assert_eq!(
        envelope(&repeated, "IN_PROGRESS", "otp_sent")["journey_transaction_id"],
        journey
    );
    assert_eq!(
        stats(base).await["aadhaar_otp_requests"],
        json!({}),
        "no second OTP after the restart"
    );
    let done = execute(base, "t-r", AADHAAR, Some(SANDBOX_OTP)).await;
    envelope(&done, "SUCCESS", "success");
    second.stop().await;

    let third = data.start().await;
    let fetched = fetch(&third.base, "t-r", journey.as_str().expect("id")).await;
    assert_eq!(fetched.body, done.body);
    third.stop().await;
    assert!(!data.journal().contains(AADHAAR));
}

#[tokio::test]
async fn every_provider_answers_injected_faults_in_its_own_shape() {
    let sandbox = Running::start(SandboxConfig {
        error_share: 1.0,
        per_minute: 1000,
        ..fast()
    })
    .await;
    let base = &sandbox.base;
    let equal = execute(base, "t-1", AADHAAR, None).await;
    assert!(
        equal.status.is_server_error() && equal.text.is_empty(),
        "{}",
        equal.text
    );
    let attestr = reply(
        http()
            .post(format!("{base}/api/v1/public/corpx/udyam/otp-gen"))
            .json(&json!({})),
    )
    .await;
    assert!(attestr.status.is_server_error());
    assert_eq!(attestr.body["code"], 5001);
    assert!(is_hex(attestr.header("xattestrid"), 32));
    let cashfree = reply(http().get(format!("{base}/verification/digilocker"))).await;
    assert!(cashfree.status.is_server_error());
    assert_eq!(cashfree.body["type"], "internal_error");
    assert_eq!(cashfree.header("x-ratelimit-limit"), "1000");
    let stats = stats(base).await;
    assert_eq!(stats["server_errors"], 3);
    for provider in ["cashfree", "attestr", "equal"] {
        assert_eq!(
            stats["by_provider"][provider]["server_errors"], 1,
            "{provider}"
        );
    }
}
