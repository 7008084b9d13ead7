//! Cashfree over HTTP: DigiLocker, the bank and PAN bulks, the gateway's Cashfree shapes.

use super::*;

/// A Cashfree call with the sandbox's credentials; `path` is under `/verification`.
fn call(base: &str, method: Method, path: &str) -> RequestBuilder {
    http()
        .request(method, format!("{base}/verification{path}"))
        .header("x-client-id", CASHFREE_CLIENT_ID)
        .header("x-client-secret", CASHFREE_CLIENT_SECRET)
        .header("x-api-version", "2024-12-01")
}

/// Fast, with a limit: Cashfree's rate-limit headers describe the limit there is.
fn limited() -> SandboxConfig {
    SandboxConfig {
        per_minute: 1000,
        ..fast()
    }
}

async fn digilocker(base: &str, query: &[(&str, &str)]) -> Reply {
    reply(call(base, Method::GET, "/digilocker").query(query)).await
}

fn assert_error(reply: &Reply, status: u16, kind: &str, code: &str) {
    let body = reply.expect_keys(status, &["code", "message", "type"]);
    assert_eq!(
        (body["type"].as_str(), body["code"].as_str()),
        (Some(kind), Some(code))
    );
}

/// Cashfree sends these on every answer that passed its rate limiter.
fn assert_rate_headers(reply: &Reply) {
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        reply.header(name).parse::<u64>().expect("a number");
    }
}

#[tokio::test]
async fn digilocker_status_follows_the_verification_id() {
    let sandbox = Running::start(limited()).await;
    let base = &sandbox.base;
    let ok = digilocker(base, &[("verification_id", "KYC-001")]).await;
    let body = ok.expect_in_order(
        200,
        &[
            "user_details",
            "name",
            "dob",
            "gender",
            "eaadhaar",
            "mobile",
            "status",
            "document_requested",
            "document_consent",
            "verification_id",
            "reference_id",
        ],
    );
    assert_eq!(body["status"], "AUTHENTICATED");
    assert_eq!(body["document_consent"], json!(["AADHAAR"]));
    assert_eq!(body["user_details"]["eaadhaar"], "Y");
    let mobile = body["user_details"]["mobile"].as_str().expect("mobile");
    assert!(mobile.len() == 10 && mobile.starts_with('9'), "{mobile}");
    let dob = body["user_details"]["dob"].as_str().expect("dob");
    assert!(
        time::Date::parse(
            dob,
            time::macros::format_description!("[day]-[month]-[year]")
        )
        .is_ok(),
        "{dob}"
    );
    assert_rate_headers(&ok);
    let reference = body["reference_id"].as_u64().expect("an integer");
    let again = digilocker(base, &[("reference_id", &reference.to_string())]).await;
    assert_eq!(
        again.expect(200),
        body,
        "the reference finds the same verification"
    );

    for (id, status) in [
        ("pending_1", "PENDING"),
        ("EXPIRED-2", "EXPIRED"),
        ("denied.3", "CONSENT_DENIED"),
    ] {
        let reply = digilocker(base, &[("verification_id", id)]).await;
        let body = reply.expect(200);
        assert_eq!(body["status"], status);
        assert_eq!(body["user_details"], json!({}));
        assert_eq!(body["document_consent"], json!([]));
    }
    for (query, status, kind, code) in [
        (
            ("verification_id", "notfound-9"),
            404,
            "not_found_error",
            "verification_id_value_invalid",
        ),
        (
            ("reference_id", "1"),
            404,
            "not_found_error",
            "reference_id_value_invalid",
        ),
        (
            ("reference_id", "x"),
            400,
            "validation_error",
            "reference_id_value_invalid",
        ),
        (
            ("verification_id", "has space"),
            400,
            "validation_error",
            "verification_id_value_invalid",
        ),
        (
            ("verification_id", "failed-1"),
            500,
            "internal_error",
            "verification_failed",
        ),
        (
            ("verification_id", "nobalance-1"),
            422,
            "validation_error",
            "insufficient_balance",
        ),
        (
            ("verification_id", "ipblocked-1"),
            403,
            "authentication_error",
            "ip_validation_failed",
        ),
        (
            ("other", "x"),
            400,
            "validation_error",
            "verification_id_missing",
        ),
    ] {
        let reply = digilocker(base, &[query]).await;
        assert_error(&reply, status, kind, code);
        assert_rate_headers(&reply);
    }
    let stats = stats(base).await;
    assert_eq!(
        stats["digilocker_lookups"],
        json!({"KYC-001": 2, "pending_1": 1, "EXPIRED-2": 1, "denied.3": 1})
    );
}

#[tokio::test]
async fn digilocker_create_answers_a_url_once_per_id() {
    let sandbox = Running::start(fast()).await;
    let base = &sandbox.base;
    let create = |id: &str| {
        call(base, Method::POST, "/digilocker").json(&json!({
            "verification_id": id,
            "document_requested": ["AADHAAR", "PAN"],
            "redirect_url": "https://example.com/done",
        }))
    };
    let created = reply(create("onboard-7")).await;
    let body = created.expect_in_order(
        200,
        &[
            "verification_id",
            "reference_id",
            "url",
            "status",
            "document_requested",
        ],
    );
    assert_eq!(body["status"], "PENDING");
    assert!(body["url"].as_str().expect("url").starts_with("http://"));
    let reference = body["reference_id"]
        .as_u64()
        .expect("an integer")
        .to_string();
    let status = digilocker(base, &[("reference_id", &reference)]).await;
    assert_eq!(
        status.expect(200)["document_consent"],
        json!(["AADHAAR", "PAN"])
    );
    assert_error(
        &reply(create("onboard-7")).await,
        409,
        "validation_error",
        "verification_id_already_exists",
    );
    let bad = call(base, Method::POST, "/digilocker").body("{not json");
    assert_error(
        &reply(bad).await,
        400,
        "validation_error",
        "request_body_invalid",
    );
    let none = call(base, Method::POST, "/digilocker").json(&json!({"verification_id": "x"}));
    assert_error(
        &reply(none).await,
        400,
        "validation_error",
        "document_requested_missing",
    );
    assert_eq!(
        stats(base).await["digilocker_created"],
        json!({"onboard-7": 1})
    );
}

#[tokio::test]
async fn cashfree_refuses_bad_credentials_and_limits_per_client() {
    avoid_midnight().await;
    let sandbox = Running::start(per_minute_sliding(2)).await;
    let base = &sandbox.base;
    let wrong = http()
        .get(format!("{base}/verification/digilocker?verification_id=a"))
        .header("x-client-id", CASHFREE_CLIENT_ID)
        .header("x-client-secret", "wrong")
        .header("x-cf-signature", "c2lnbmF0dXJl");
    let refused = reply(wrong).await;
    assert_error(
        &refused,
        401,
        "authentication_error",
        "authentication_failed",
    );
    assert_eq!(refused.header("x-ratelimit-remaining"), "1");
    digilocker(base, &[("verification_id", "a")])
        .await
        .expect(200);
    let limited = digilocker(base, &[("verification_id", "a")]).await;
    assert_error(
        &limited,
        429,
        "rate_limit_error",
        "too_many_requests_per_operation",
    );
    assert_eq!(limited.header("x-ratelimit-limit"), "2");
    assert_eq!(limited.header("x-ratelimit-remaining"), "0");
    let retry: u64 = limited.header("retry-after").parse().expect("seconds");
    assert!((55..=60).contains(&retry), "{retry}");
    // Another provider's quota is its own.
    let deepvue = keyed_call(base, "k").await;
    assert_eq!(deepvue.status(), StatusCode::UNAUTHORIZED);
    assert!(deepvue.headers().get("x-ratelimit-limit").is_none());
    let stats = stats(base).await;
    assert_eq!(
        stats["by_provider"]["cashfree"],
        json!({"requests": 3, "rate_limited": 1, "server_errors": 0, "resets": 0})
    );
    assert_eq!(stats["requests"], 4);
}

fn bank_entry(name: &str, account: &str, ifsc: &str) -> Value {
    json!({"name": name, "bank_account": account, "ifsc": ifsc, "phone": "9876543210"})
}

async fn submit(base: &str, path: &str, id: &str, entries: Value) -> Reply {
    let body = json!({"bulk_verification_id": id, "entries": entries});
    reply(call(base, Method::POST, path).json(&body)).await
}

/// The entry of a bulk's results whose `field` is `value`: every entry sent comes back.
fn entry<'a>(results: &'a [Value], field: &str, value: &str) -> &'a Value {
    results
        .iter()
        .find(|e| e[field] == value)
        .unwrap_or_else(|| panic!("no entry with {field} {value}"))
}

/// Polls a bulk's status until `done` says so.
async fn bulk_when(
    base: &str,
    path: &str,
    query: &[(&str, &str)],
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(|| {
        let status = reply(call(base, Method::GET, path).query(query));
        let done = &done;
        async move {
            let body = status.await.expect(200).clone();
            if done(&body) {
                Ok(body)
            } else {
                Err(format!("{path} never done: {body}"))
            }
        }
    })
    .await
}

#[tokio::test]
async fn bank_bulk_entries_are_processed_as_scripted_in_shuffled_order() {
    // Long enough that the entries are still `RECEIVED` (the first half) when asked early on
    // a busy machine: at 400 ms, two submissions and the query outlasted it under load.
    let sandbox = Running::start(SandboxConfig {
        batch_delay_ms: 2000,
        ..fast()
    })
    .await;
    let base = &sandbox.base;
    let entries = json!([
        bank_entry("Ravi Kumar", "1234567890", "HDFC0001234"),
        bank_entry("good Ravi Kumar", "1234567891", "SBIN0005678"),
        bank_entry("moderate Ravi Kumar", "1234567892", "SBIN0005678"),
        bank_entry("poor Ravi Kumar", "1234567893", "SBIN0005678"),
        bank_entry("nomatch Ravi", "1234567894", "SBIN0005678"),
        bank_entry("Ravi", "1234560000", "SBIN0005678"),
        bank_entry("Ravi", "1234561111", "SBIN0005678"),
        bank_entry("Ravi", "1234562222", "SBIN0005678"),
        bank_entry("Ravi", "1234563333", "SBIN0005678"),
        bank_entry("Ravi", "1234567895", "HDFC0000000"),
        bank_entry("Ravi", "1234567896", "bad-ifsc"),
        bank_entry("Ravi", "1234569999", "SBIN0005678"),
        {"bank_account": "55550001", "ifsc": "UTIB0000123"},
    ]);
    let accepted = submit(base, "/bank-account/bulk", "bank-1", entries.clone()).await;
    let body = accepted.expect_in_order(
        200,
        &["bulk_reference_id", "bulk_verification_id", "status"],
    );
    assert_eq!(body["status"], "RECEIVED");
    let reference = body["bulk_reference_id"]
        .as_u64()
        .expect("an integer")
        .to_string();
    let repeated = submit(base, "/bank-account/bulk", "bank-1", entries.clone()).await;
    assert_error(
        &repeated,
        409,
        "validation_error",
        "bulk_verification_id_already_exists",
    );

    let early = bulk_when(
        base,
        "/bank-account/bulk",
        &[("bulk_verification_id", "bank-1")],
        |_| true,
    )
    .await;
    assert!(
        early["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| e["account_status"] == "RECEIVED"),
        "{early}"
    );
    let query = [("bulk_reference_id", reference.as_str())];
    // Done when only the never-processed account is left in process.
    let done = bulk_when(base, "/bank-account/bulk", &query, |body| {
        let entries = body["entries"].as_array().expect("entries");
        let open = entries.iter().filter(|e| {
            ["RECEIVED", "IN_PROCESS"].contains(&e["account_status"].as_str().unwrap_or_default())
        });
        open.count() == 1
    })
    .await;
    assert_eq!(done["bulk_verification_id"], "bank-1");
    let results = done["entries"].as_array().expect("entries");
    let accounts: Vec<&str> = results
        .iter()
        .map(|e| e["bank_account"].as_str().expect("echoed"))
        .collect();
    let sent: Vec<&str> = entries
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["bank_account"].as_str().expect("sent"))
        .collect();
    assert_ne!(accounts, sent, "never in input order");
    let by_account = |account: &str| entry(results, "bank_account", account);
    let direct = by_account("1234567890");
    assert_value_key_order(
        direct,
        &[
            "bank_account",
            "ifsc",
            "name",
            "phone",
            "reference_id",
            "name_at_bank",
            "bank_name",
            "utr",
            "city",
            "branch",
            "micr",
            "name_match_score",
            "name_match_result",
            "account_status",
            "account_status_code",
        ],
    );
    assert_eq!(direct["name_at_bank"], "RAVI KUMAR");
    assert_eq!(direct["bank_name"], "HDFC BANK");
    assert!(direct["micr"].is_u64() && direct["reference_id"].is_u64());
    assert_eq!(direct["utr"].as_str().map(str::len), Some(12));
    for (account, status, code, result, score) in [
        (
            "1234567890",
            "VALID",
            "ACCOUNT_IS_VALID",
            "DIRECT_MATCH",
            "100.00",
        ),
        (
            "1234567891",
            "VALID",
            "ACCOUNT_IS_VALID",
            "GOOD_PARTIAL_MATCH",
            "90.00",
        ),
        (
            "1234567892",
            "VALID",
            "ACCOUNT_IS_VALID",
            "MODERATE_PARTIAL_MATCH",
            "75.00",
        ),
        (
            "1234567893",
            "VALID",
            "ACCOUNT_IS_VALID",
            "POOR_PARTIAL_MATCH",
            "45.00",
        ),
        (
            "1234567894",
            "VALID",
            "ACCOUNT_IS_VALID",
            "NO_MATCH",
            "15.00",
        ),
        ("1234560000", "INVALID", "INVALID_ACCOUNT_FAIL", "", ""),
        ("1234561111", "INVALID", "ACCOUNT_BLOCKED", "", ""),
        ("1234562222", "FAILED", "IMPS_MODE_FAIL", "", ""),
        ("1234563333", "REJECTED", "NRE_ACCOUNT_FAIL", "", ""),
        ("1234567895", "INVALID", "INVALID_IFSC_FAIL", "", ""),
        ("1234567896", "INVALID", "INVALID_IFSC_FAIL", "", ""),
        ("1234569999", "IN_PROCESS", "", "", ""),
        ("55550001", "VALID", "ACCOUNT_IS_VALID", "", ""),
    ] {
        let entry = by_account(account);
        assert_eq!(
            [
                &entry["account_status"],
                &entry["account_status_code"],
                &entry["name_match_result"],
                &entry["name_match_score"]
            ],
            [status, code, result, score],
            "{entry}"
        );
    }
    assert_eq!(
        object_keys(by_account("55550001")).len(),
        13,
        "no name or phone sent, none echoed"
    );
    assert_eq!(
        by_account("55550001")["name_at_bank"],
        "SANDBOX ACCOUNT HOLDER"
    );

    let too_many: Vec<Value> = (0..1001)
        .map(|i| bank_entry("A", &format!("{i:010}"), "SBIN0005678"))
        .collect();
    for (id, entries, code) in [
        ("bank-2", json!([]), "entries_value_invalid"),
        ("bank-2", json!(too_many), "entries_value_invalid"),
        (
            "bank-2",
            json!([{"bank_account": "123456789"}]),
            "entries_value_invalid",
        ),
        (
            "bank 2",
            json!([bank_entry("A", "123456789", "SBIN0005678")]),
            "bulk_verification_id_value_invalid",
        ),
    ] {
        assert_error(
            &submit(base, "/bank-account/bulk", id, entries).await,
            400,
            "validation_error",
            code,
        );
    }
    let unknown = reply(
        call(base, Method::GET, "/bank-account/bulk").query(&[("bulk_verification_id", "nope")]),
    )
    .await;
    assert_error(
        &unknown,
        404,
        "not_found_error",
        "bulk_verification_id_value_invalid",
    );
    let nobalance = submit(
        base,
        "/bank-account/bulk",
        "nobalance-1",
        json!([bank_entry("A", "123456789", "SBIN0005678")]),
    )
    .await;
    assert_error(&nobalance, 422, "validation_error", "insufficient_balance");
    let stats = stats(base).await;
    assert_eq!(stats["bank_bulk_submissions"], json!({"bank-1": 1}));
    let per_account = stats["bank_account_submissions"]
        .as_object()
        .expect("object");
    assert_eq!(per_account.len(), 13);
    assert_eq!(per_account["1234567890:HDFC0001234"], 1);
}

#[tokio::test]
async fn pan_bulk_answers_processing_then_each_pan_as_scripted() {
    let sandbox = Running::start(SandboxConfig {
        batch_delay_ms: 300,
        ..fast()
    })
    .await;
    let base = &sandbox.base;
    let entries = json!([
        {"pan": "ABCPE1234F", "name": "Ravi Kumar"},
        {"pan": "ABCCE1234F", "name": "poor Acme Traders"},
        {"pan": "ABCPE9001F", "name": "Ravi"},
        {"pan": "ABCPE9002F", "name": "Ravi"},
        {"pan": "ABCPE9003F", "name": "Ravi"},
        {"pan": "ABCPE9004F", "name": "Ravi"},
        {"pan": "ABCPE0000F", "name": "Ravi"},
        {"pan": "NOTAPAN"},
    ]);
    let accepted = submit(base, "/pan/bulk", "pan-1", entries.clone()).await;
    let body = accepted.expect(200);
    assert_eq!(object_keys(body), ["message", "reference_id"]);
    assert_eq!(
        body["message"],
        "Request accepted. You can check the status after some time."
    );
    let reference = body["reference_id"]
        .as_u64()
        .expect("an integer")
        .to_string();
    assert_error(
        &submit(base, "/pan/bulk", "pan-1", entries).await,
        409,
        "validation_error",
        "bulk_verification_id_already_exists",
    );
    let query = [
        ("reference_id", reference.as_str()),
        ("bulk_verification_id", "pan-1"),
    ];
    let processing = reply(call(base, Method::GET, "/pan/bulk").query(&query)).await;
    assert_eq!(
        processing.text,
        r#"{"message":"File is being processed. Try again after some time.","entries":[]}"#
    );
    let done = bulk_when(base, "/pan/bulk", &query, |body| {
        body.get("count").is_some()
    })
    .await;
    assert_eq!(done["count"], 8);
    assert_eq!(done["reference_id"].as_u64(), reference.parse().ok());
    let results = done["entries"].as_array().expect("entries");
    let by_pan = |pan: &str| entry(results, "pan", pan);
    let valid = by_pan("ABCPE1234F");
    assert_value_key_order(
        valid,
        &[
            "pan",
            "type",
            "reference_id",
            "name_provided",
            "registered_name",
            "valid",
            "message",
            "name_match_score",
            "name_match_result",
            "aadhaar_seeding_status",
            "pan_status",
        ],
    );
    assert_eq!(valid["type"], "Individual");
    assert_eq!(valid["registered_name"], "RAVI KUMAR");
    for (pan, status, is_valid, seeding, result) in [
        ("ABCPE1234F", "VALID", true, "Y", "DIRECT_MATCH"),
        ("ABCCE1234F", "VALID", true, "Y", "POOR_PARTIAL_MATCH"),
        ("ABCPE9001F", "INVALID", false, "NA", ""),
        ("ABCPE9002F", "DELETED", false, "NA", ""),
        ("ABCPE9003F", "DEACTIVATED", false, "NA", ""),
        ("ABCPE9004F", "VALID", true, "N", "DIRECT_MATCH"),
        ("ABCPE0000F", "INVALID", false, "NA", ""),
        ("NOTAPAN", "INVALID", false, "NA", ""),
    ] {
        let entry = by_pan(pan);
        assert_eq!(
            (
                entry["pan_status"].as_str(),
                entry["valid"].as_bool(),
                entry["aadhaar_seeding_status"].as_str(),
                entry["name_match_result"].as_str()
            ),
            (Some(status), Some(is_valid), Some(seeding), Some(result)),
            "{entry}"
        );
    }
    assert_eq!(by_pan("ABCCE1234F")["type"], "Company");
    let unknown = reply(call(base, Method::GET, "/pan/bulk").query(&[("reference_id", "1")])).await;
    assert_error(
        &unknown,
        404,
        "not_found_error",
        "reference_id_value_invalid",
    );
    let stats = stats(base).await;
    assert_eq!(stats["pan_bulk_submissions"], json!({"pan-1": 1}));
    assert_eq!(stats["pan_submissions"]["ABCPE1234F"], 1);
}

#[tokio::test]
async fn cashfree_bulks_and_references_survive_a_restart() {
    let data = Restartable::new(SandboxConfig {
        batch_delay_ms: 0,
        ..fast()
    });
    let first = data.start().await;
    let base = &first.base;
    let entries = json!([bank_entry("Ravi", "1234567890", "SBIN0005678")]);
    let reference = submit(base, "/bank-account/bulk", "bank-r", entries.clone())
        .await
        .expect(200)["bulk_reference_id"]
        .clone();
    let digilocker_reference = digilocker(base, &[("verification_id", "kyc-r")])
        .await
        .expect(200)["reference_id"]
        .to_string();
    first.stop().await;

    let second = data.start().await;
    let base = &second.base;
    assert_error(
        &submit(base, "/bank-account/bulk", "bank-r", entries).await,
        409,
        "validation_error",
        "bulk_verification_id_already_exists",
    );
    let status = reply(
        call(base, Method::GET, "/bank-account/bulk").query(&[("bulk_verification_id", "bank-r")]),
    )
    .await;
    let body = status.expect(200);
    assert_eq!(body["bulk_reference_id"], reference);
    assert_eq!(body["entries"][0]["account_status"], "VALID");
    let again = digilocker(base, &[("reference_id", &digilocker_reference)]).await;
    assert_eq!(again.expect(200)["verification_id"], "kyc-r");
}
