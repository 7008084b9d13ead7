//! Deepvue's UPI batches over HTTP: the upload, its status, and the output file behind a
//! pre-signed URL, refused as S3 refuses.

use std::collections::HashMap;

use super::*;

/// The input of the download test: every test VPA, a pass-through key column, a quoted field.
pub(super) const BATCH: &str = "\u{feff}row_key,vpa,name,note\r\n\
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

/// Asserts that the answer text is Deepvue's error envelope.
fn assert_envelope_text(text: &str, code: u16, sub_code: &str, message: &str) {
    let body: Value = serde_json::from_str(text).expect("json");
    assert_envelope(&body, code, sub_code, message);
}

#[tokio::test]
async fn batch_upload_shapes_and_refusals() {
    let sandbox = Running::start(SandboxConfig {
        batch_max_rows: 3,
        ..fast()
    })
    .await;
    let client = Client::new(&sandbox.base).await;

    let (status, text) = client.upload(b"vpa,name\nravi@okicici,Ravi\n").await;
    assert_eq!(status, StatusCode::CREATED);
    let body = json_in_order(
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
    assert_eq!(body["code"], 201);
    assert_eq!(body["message"], "batch processing in progress");
    assert_eq!(body["sub_code"], "SUCCESS");
    assert_eq!(body["output_batch_file"], "");
    assert!(is_hex(body["request_id"].as_str().expect("text"), 32));
    assert!(is_hex(body["transaction_id"].as_str().expect("text"), 32));
    assert_recent_ms(&body["timestamp"]);
    assert_eq!(object_keys(&body).len(), 7);

    let missing = r#"{"detail":[{"loc":["body","batch_file"],"msg":"field required","type":"value_error.missing"}]}"#;
    let upload = || client.request(Method::POST, "/v1/verification/upi-basic/batch");
    for request in [
        upload().multipart(reqwest::multipart::Form::new().text("file", "vpa\na@b\n")),
        upload().body("vpa\na@b\n"),
    ] {
        assert_answer(request, StatusCode::UNPROCESSABLE_ENTITY, missing).await;
    }

    for bad in [
        &b"name,phone\nRavi,1\n"[..],
        b"vpa,name\r\n",
        b"",
        b"vpa\n\xFF@x\n",
    ] {
        let (status, text) = client.upload(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert_envelope_text(
            &text,
            400,
            "INVALID_FILE",
            "batch_file must be a CSV file with a vpa column and at least one row",
        );
    }
    let (status, text) = client.upload(b"vpa\na@x\nb@x\nc@x\nd@x\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope_text(
        &text,
        400,
        "BATCH_TOO_LARGE",
        "batch_file has 4 rows; at most 3 rows are accepted",
    );
    client.upload_ok(b"vpa\na@x\nb@x\nc@x\n").await;

    let (status, text) = client.status("unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope_text(&text, 404, "NOT_FOUND", NO_REQUEST);
    assert_answer(
        client.request(Method::GET, "/v1/verification/batch-processing-status"),
        StatusCode::UNPROCESSABLE_ENTITY,
        r#"{"detail":[{"loc":["query","request_id"],"msg":"field required","type":"value_error.missing"}]}"#,
    )
    .await;
}

#[tokio::test]
async fn batch_status_then_the_output_file() {
    let sandbox = Running::start(SandboxConfig {
        batch_delay_ms: 2000,
        ..fast()
    })
    .await;
    let base = &sandbox.base;
    let client = Client::new(base).await;
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
    let response = bare_get(&url).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/csv");
    let bytes = response.bytes().await.expect("body");
    let again = bare_get(&url).await;
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
    let response = bare_get(&fresh).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn download_refusals_are_s3_xml() {
    let sandbox = Running::start(fast()).await;
    let client = Client::new(&sandbox.base).await;
    let request_id = client.upload_ok(b"vpa\nravi@okicici\n").await;
    let url = client.output_url(&request_id).await;

    let response = http()
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
        let response = bare_get(&bad).await;
        assert_xml_error(response, StatusCode::FORBIDDEN, "SignatureDoesNotMatch").await;
    }

    // Correctly signed, but for a batch that does not exist.
    let missing = "f".repeat(32);
    let response = bare_get(&signed_download_url(&sandbox.base, &missing)).await;
    let text = assert_xml_error(response, StatusCode::NOT_FOUND, "NoSuchKey").await;
    assert!(text.contains(&format!(
        "<Key>upi-basic-batch-output-files/{missing}.csv</Key>"
    )));
}

#[tokio::test]
async fn a_batch_not_ready_has_no_downloadable_file() {
    let sandbox = Running::start(SandboxConfig {
        batch_delay_ms: 600_000,
        ..fast()
    })
    .await;
    let client = Client::new(&sandbox.base).await;
    let request_id = client.upload_ok(b"vpa\nravi@okicici\n").await;
    let response = bare_get(&signed_download_url(&sandbox.base, &request_id)).await;
    assert_xml_error(response, StatusCode::NOT_FOUND, "NoSuchKey").await;
}

#[tokio::test]
async fn an_expired_url_is_refused_like_s3() {
    let sandbox = Running::start(SandboxConfig {
        url_ttl_secs: 1,
        batch_delay_ms: 0,
        ..fast()
    })
    .await;
    let client = Client::new(&sandbox.base).await;
    let request_id = client.upload_ok(b"vpa\nravi@okicici\n").await;
    let url = client.output_url(&request_id).await;
    // Signed at a whole second at most 1 s ago, valid 1 s: expired 2.5 s later.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = bare_get(&url).await;
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
        let status = bare_get(&fresh).await.status();
        statuses.push(status);
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses.last(), Some(&StatusCode::OK), "{statuses:?}");
}

#[tokio::test]
async fn a_statusdown_batch_refuses_its_first_status_calls() {
    let sandbox = Running::start(fast()).await;
    let client = Client::new(&sandbox.base).await;
    let request_id = client
        .upload_ok(b"vpa\nstatusdown.x@ybl\nravi@okicici\n")
        .await;
    for _ in 0..crate::batch::STATUS_DOWN_ANSWERS {
        let (status, text) = client.status(&request_id).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(text, r#"{"detail":"Service Unavailable"}"#);
    }
    let (status, _) = client.status(&request_id).await;
    assert_eq!(status, StatusCode::OK, "then it answers as usual");
    let other = client.upload_ok(b"vpa\nravi@okicici\n").await;
    assert_eq!(client.status(&other).await.0, StatusCode::OK);
}
