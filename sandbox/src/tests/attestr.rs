//! Attestr over HTTP: the Udyam OTP flow, its test numbers, expiry, attempts and persistence.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as STANDARD_B64;

use super::*;

const REG: &str = "UDYAM-MH-01-0000002";
const MOBILE: &str = "9876543210";

/// An Attestr call with the sandbox's token; `path` is under `corpx/udyam`.
fn call(base: &str, path: &str, body: &Value) -> RequestBuilder {
    http()
        .post(format!("{base}/api/v1/public/corpx/udyam{path}"))
        .header("authorization", format!("Basic {ATTESTR_AUTH_TOKEN}"))
        .json(body)
}

async fn otp_gen(base: &str, reg: &str, mobile: &str) -> Reply {
    reply(call(
        base,
        "/otp-gen",
        &json!({"reg": reg, "mobile": mobile}),
    ))
    .await
}

/// The `_id` of a successful OTP generation.
async fn otp_id(base: &str, reg: &str) -> String {
    let generated = otp_gen(base, reg, MOBILE).await;
    generated.expect(200)["_id"]
        .as_str()
        .expect("_id")
        .to_owned()
}

async fn verify(base: &str, id: &str, otp: &str) -> Reply {
    reply(call(base, "/otp-verify", &json!({"req": id, "otp": otp}))).await
}

/// The `status` of an OTP verification answered 200.
async fn verify_status(base: &str, id: &str, otp: &str) -> String {
    let reply = verify(base, id, otp).await;
    let body = reply.expect(200);
    if body["status"] != "SUCCESS" {
        assert_eq!(object_keys(body), ["status", "valid"], "{}", reply.text);
        assert_eq!(body["valid"], false);
    }
    body["status"].as_str().expect("status").to_owned()
}

fn assert_error(reply: &Reply, status: u16, code: u16) {
    let body = reply.expect(status);
    assert_eq!(body["code"], code, "{}", reply.text);
    assert!(body["message"].is_string(), "{}", reply.text);
    assert!(is_hex(reply.header("xattestrid"), 32));
}

#[tokio::test]
async fn an_otp_verifies_once_with_every_msme_field() {
    let sandbox = Running::start(fast()).await;
    let base = &sandbox.base;
    let generated = otp_gen(base, REG, MOBILE).await;
    let body = generated.expect_in_order(200, &["valid", "status", "_id", "number"]);
    assert_eq!(
        (&body["valid"], &body["status"]),
        (&json!(true), &json!("SUCCESS"))
    );
    assert!(is_hex(generated.header("xattestrid"), 32));
    let id = body["_id"].as_str().expect("_id");
    assert_eq!(id.len(), 24);
    assert_eq!(verify_status(base, id, "000000").await, "INVALID_OTP");
    let success = verify(base, id, SANDBOX_OTP).await;
    assert_key_order(
        &success.text,
        &[
            "valid",
            "status",
            "reg",
            "entity",
            "type",
            "majorActivity",
            "gstin",
            "category",
            "incorporated",
            "commenced",
            "registered",
            "ownerDetails",
            "owner",
            "gender",
            "pan",
            "mobile",
            "email",
            "socialCategory",
            "speciallyAbled",
            "bankDetails",
            "bank",
            "ifsc",
            "accountNumber",
            "employmentDetails",
            "male",
            "female",
            "other",
            "total",
            "financialDetails",
            "fy",
            "classification",
            "wdv",
            "exclusion",
            "investment",
            "grossTurnover",
            "exportTurnover",
            "netTurnover",
            "itrFiled",
            "itrType",
            "unitDetails",
            "unitName",
            "unitNumber",
            "building",
            "villageOrTown",
            "block",
            "road",
            "city",
            "zip",
            "state",
            "district",
            "officialAddress",
            "nicCodes",
            "digit2",
            "digit4",
            "digit5",
            "activity",
            "date",
            "dic",
            "dfo",
        ],
    );
    let msme = success.expect(200);
    assert_eq!(
        (&msme["valid"], &msme["status"], &msme["reg"]),
        (&json!(true), &json!("SUCCESS"), &json!(REG))
    );
    assert_eq!(msme["gstin"], true, "an even serial");
    assert_eq!(msme["ownerDetails"]["mobile"], MOBILE);
    assert_eq!(msme["financialDetails"].as_array().map(Vec::len), Some(2));
    assert_eq!(msme["unitDetails"].as_array().map(Vec::len), Some(2));
    assert_eq!(msme["officialAddress"]["state"], "MAHARASHTRA");
    assert!(msme["employmentDetails"]["total"].is_string());
    assert_eq!(
        verify_status(base, id, SANDBOX_OTP).await,
        "INVALID_REQUEST"
    );

    let lookup = reply(call(base, "", &json!({"reg": "UDYAM-DL-01-0000003"}))).await;
    let public = lookup.expect(200);
    assert_eq!(public["valid"], true);
    assert!(public.get("ownerDetails").is_none() && public.get("status").is_none());
    assert_eq!(public["unitDetails"], Value::Null);
    assert_eq!(public["officialAddress"]["state"], "DELHI");

    let stats = stats(base).await;
    assert_eq!(stats["udyam_otp_requests"], json!({REG: 1}));
    assert_eq!(stats["udyam_otp_verifications"], json!({REG: 3}));
    assert_eq!(stats["udyam_lookups"], json!({"UDYAM-DL-01-0000003": 1}));
    assert_counts(
        &stats["by_endpoint"],
        &[
            ("udyam_otp_gen", 1),
            ("udyam_otp_verify", 3),
            ("udyam_lookup", 1),
        ],
    );
}

#[tokio::test]
async fn the_third_wrong_otp_ends_the_request() {
    let sandbox = Running::start(fast()).await;
    let base = &sandbox.base;
    let id = otp_id(base, REG).await;
    let mut statuses = Vec::new();
    for otp in ["111111", "222222", "333333", SANDBOX_OTP] {
        statuses.push(verify_status(base, &id, otp).await);
    }
    assert_eq!(
        statuses,
        [
            "INVALID_OTP",
            "INVALID_OTP",
            "MAX_ATTEMPTS_EXCEEDED",
            "MAX_ATTEMPTS_EXCEEDED"
        ]
    );
    // A new request starts afresh, with another id.
    let other = otp_id(base, REG).await;
    assert_ne!(other, id);
    assert_eq!(verify_status(base, &other, SANDBOX_OTP).await, "SUCCESS");
}

#[tokio::test]
async fn an_otp_expires_after_its_ttl() {
    let sandbox = Running::start(SandboxConfig {
        otp_ttl_secs: 1,
        ..fast()
    })
    .await;
    let base = &sandbox.base;
    let id = otp_id(base, REG).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        verify_status(base, &id, SANDBOX_OTP).await,
        "REQUEST_EXPIRED"
    );
}

#[tokio::test]
async fn test_numbers_script_every_documented_answer() {
    let sandbox = Running::start(fast()).await;
    let base = &sandbox.base;
    for (reg, mobile, status) in [
        ("UDYAM-MH-01-8000001", MOBILE, "INVALID"),
        (REG, "6000000000", "INVALID"),
    ] {
        let reply = otp_gen(base, reg, mobile).await;
        assert_eq!(
            reply.expect(200),
            &json!({"valid": false, "status": status})
        );
    }
    let archived = otp_id(base, "UDYAM-KA-22-8000002").await;
    assert_eq!(
        verify_status(base, &archived, SANDBOX_OTP).await,
        "ARCHIVED"
    );
    for (serial, status, code) in [
        ("8004001", 400, 4001),
        ("8004005", 400, 4005),
        ("8004016", 401, 4016),
        ("8004031", 403, 4031),
        ("8004035", 403, 4035),
        ("8004039", 403, 4039),
        ("8005001", 500, 5001),
    ] {
        let reg = format!("UDYAM-MH-01-{serial}");
        assert_error(&otp_gen(base, &reg, MOBILE).await, status, code);
        assert_error(
            &reply(call(base, "", &json!({"reg": reg}))).await,
            status,
            code,
        );
    }
    for body in [
        json!({"reg": "UDYAM-MH-1-0000001", "mobile": MOBILE}),
        json!({"reg": REG, "mobile": "12345"}),
        json!({"reg": REG}),
        json!("not an object"),
    ] {
        assert_error(&reply(call(base, "/otp-gen", &body)).await, 400, 4001);
    }
    let unknown = verify(base, "0123456789abcdef01234567", SANDBOX_OTP).await;
    assert_error(&unknown, 400, 4001);
    assert!(unknown.body["details"].is_string());
}

#[tokio::test]
async fn attestr_refusals_tell_auth_bursts_and_the_daily_limit_apart() {
    avoid_midnight().await;
    for (config, code, message) in [
        (
            per_minute_sliding(2),
            4291,
            "Maximum account rate limit exceeded",
        ),
        (
            SandboxConfig {
                per_minute: 3,
                per_day: 2,
                ..fast()
            },
            4293,
            "Maximum account daily limit exceeded",
        ),
    ] {
        let sandbox = Running::start(config).await;
        let base = &sandbox.base;
        let unauthorised = http()
            .post(format!("{base}/api/v1/public/corpx/udyam/otp-gen"))
            .header(
                "authorization",
                format!("Basic {}", STANDARD_B64.encode(ATTESTR_AUTH_TOKEN)),
            )
            .json(&json!({"reg": REG, "mobile": MOBILE}));
        let refused = reply(unauthorised).await;
        assert_error(&refused, 401, 4016);
        assert_eq!(
            refused.body,
            json!({"code": 4016, "message": "Invalid client authorization"})
        );
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(otp_gen(base, REG, MOBILE).await);
        }
        let codes: Vec<u16> = statuses.iter().map(|r| r.status.as_u16()).collect();
        assert_eq!(codes, [200, 200, 429], "the refused call was keyed apart");
        assert_error(&statuses[2], 429, code);
        assert_eq!(statuses[2].body["message"], message);
    }
}

#[tokio::test]
async fn otp_requests_and_attempts_survive_a_restart() {
    let data = Restartable::new(fast());
    let first = data.start().await;
    let base = &first.base;
    let spent = otp_id(base, REG).await;
    let fresh = otp_id(base, REG).await;
    assert_eq!(verify_status(base, &spent, "111111").await, "INVALID_OTP");
    assert_eq!(verify_status(base, &spent, "222222").await, "INVALID_OTP");
    first.stop().await;

    // A later run's sandbox, with a short lifetime that must not apply to the old requests.
    let second = Running::start(SandboxConfig {
        otp_ttl_secs: 0,
        ..data.config.clone()
    })
    .await;
    let base = &second.base;
    assert_eq!(
        verify_status(base, &spent, "333333").await,
        "MAX_ATTEMPTS_EXCEEDED"
    );
    assert_eq!(verify_status(base, &fresh, SANDBOX_OTP).await, "SUCCESS");
    let third = otp_id(base, REG).await;
    assert!(
        ![&spent, &fresh].contains(&&third),
        "ids keep counting after a restart"
    );
    assert_eq!(
        verify_status(base, &third, SANDBOX_OTP).await,
        "REQUEST_EXPIRED"
    );
}
