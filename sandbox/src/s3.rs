//! The S3 look-alike that serves batch output files through pre-signed URLs.
//!
//! A pre-signed URL is a bearer secret with an expiry; S3 refuses a second auth mechanism and
//! answers errors as XML. Clients that download from the real bucket must cope with all of that,
//! so the simulator does the same.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::batch::Batch;
use super::{Shared, clock};

/// The object key prefix of output files.
const KEY_PREFIX: &str = "upi-basic-batch-output-files/";
/// Bucket and key prefix, path-style under the sandbox's base URL.
const OBJECT_PREFIX: &str = "/bulk-data-processing/upi-basic-batch-output-files/";

/// A URL for the output file of batch `request_id`, valid for the URL ttl from `now_secs`.
pub(super) fn presign(app: &Shared, request_id: &str, now_secs: u64) -> String {
    let path = format!("{OBJECT_PREFIX}{request_id}.csv");
    let date = clock::amz_date(now_secs);
    let expires = app.config.url_ttl_secs.to_string();
    let signature = app.ids.url_signature(&path, &date, &expires);
    let day = &date[..8];
    format!(
        "{base}{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=SANDBOXKEY%2F{day}%2Fap-south-1%2Fs3%2Faws4_request\
         &X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host\
         &X-Amz-Signature={signature}",
        base = app.base_url
    )
}

/// `GET /bulk-data-processing/upi-basic-batch-output-files/{file}`: no rate limit, no bearer.
pub(super) async fn download(
    State(app): State<Shared>,
    Path(file): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if headers.contains_key(AUTHORIZATION) {
        return xml_error(
            &app,
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
             Signature query string parameter or the Authorization header should be specified",
            "<ArgumentName>Authorization</ArgumentName>",
        );
    }
    let path = format!("{OBJECT_PREFIX}{file}");
    let param = |name: &str| params.get(name).map(String::as_str);
    let signed = match (
        param("X-Amz-Date"),
        param("X-Amz-Expires"),
        param("X-Amz-Signature"),
    ) {
        (Some(date), Some(expires), Some(signature))
            if app.ids.url_signature(&path, date, expires) == signature =>
        {
            clock::parse_amz_date(date).zip(expires.parse::<u64>().ok())
        }
        _ => None,
    };
    let Some((date_secs, expires)) = signed else {
        return xml_error(
            &app,
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your key and signing method.",
            "",
        );
    };
    let now_ms = clock::now_ms();
    let expires_at = date_secs.saturating_add(expires);
    if now_ms > expires_at.saturating_mul(1000) {
        let extra = format!(
            "<X-Amz-Expires>{expires}</X-Amz-Expires><Expires>{}</Expires>\
             <ServerTime>{}</ServerTime>",
            clock::rfc3339_utc(expires_at),
            clock::rfc3339_utc(now_ms / 1000)
        );
        return xml_error(
            &app,
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Request has expired",
            &extra,
        );
    }
    let job = file.strip_suffix(".csv").and_then(|request_id| {
        app.store
            .batch(request_id)
            .filter(|job| app.is_ready(request_id, job.ready_ms, now_ms))
            .map(|job| (request_id, job))
    });
    let Some((request_id, job)) = job else {
        let key = format!("<Key>{}</Key>", xml_escape(&format!("{KEY_PREFIX}{file}")));
        return xml_error(
            &app,
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
            &key,
        );
    };
    let Some(batch) = Batch::parse(&job.file) else {
        tracing::error!(%request_id, "a stored batch no longer parses");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match batch.output(request_id) {
        Ok(csv) => ([(CONTENT_TYPE, "text/csv")], csv).into_response(),
        Err(error) => {
            tracing::error!(%error, %request_id, "cannot write a batch output file");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// S3's XML error body; `extra` holds the code-specific elements.
fn xml_error(app: &Shared, status: StatusCode, code: &str, message: &str, extra: &str) -> Response {
    let (request_id, host_id) = app.ids.s3_request_ids();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message>{extra}<RequestId>{request_id}</RequestId>\
         <HostId>{host_id}</HostId></Error>"
    );
    (status, [(CONTENT_TYPE, "application/xml")], body).into_response()
}

fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            _ => escaped.push(c),
        }
    }
    escaped
}
