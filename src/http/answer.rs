//! A provider's answer as the client reads it off the wire: capped in size so that no body
//! can exhaust memory, streamed to disk for a result file, and described in words that never
//! carry the URL (it can hold identifiers and signatures).

use std::error::Error as _;
use std::path::Path;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tokio::io::AsyncWriteExt;

use super::decide::Outcome;

/// A provider's answer that is not a transport-level failure.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// How many times the request was sent.
    pub attempts: u32,
}

/// The status and size only: a body can carry a token (the authorize answer) or personal data.
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Answer {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// An answer as a check's reader sees it, for tests of the readers.
    #[cfg(test)]
    pub fn sample(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("a valid status"),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
            attempts: 1,
        }
    }
}

/// Why no answer came back.
pub(super) enum Failed {
    /// Below HTTP. `sent` is false only when the request provably never left (the connection
    /// was never made).
    Transport { error: reqwest::Error, sent: bool },
    /// The answer could not be written to disk.
    Local(std::io::Error),
    /// The body passed this many bytes.
    TooLarge(u64),
}

/// The largest API answer read (result files have their own cap): a JSON answer of these APIs
/// is kilobytes, so this only stops a body that would exhaust memory.
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// The largest result file kept in memory: a batch's results are a few megabytes, and a file
/// kept in memory is neither written to the disk nor left there holding personal data. A
/// larger one goes to the disk as it arrives.
pub const DOWNLOAD_IN_MEMORY: usize = 8 << 20;

/// Sends and reads the answer; with `dest`, a 2xx body up to a size, in memory up to
/// [`DOWNLOAD_IN_MEMORY`] and streamed to that file past it (the answer's body is empty then).
pub(super) async fn receive(
    builder: reqwest::RequestBuilder,
    dest: Option<(&Path, u64)>,
) -> Result<Answer, Failed> {
    let transport = |error: reqwest::Error| Failed::Transport {
        sent: !error.is_connect(),
        error,
    };
    let mut resp = builder.send().await.map_err(transport)?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = match dest {
        Some((path, max)) if status.is_success() => {
            if resp.content_length().is_some_and(|n| n > max) {
                return Err(Failed::TooLarge(max));
            }
            // What an attempt cut short left there is not this answer's.
            match tokio::fs::remove_file(path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Failed::Local(e));
                }
                _ => {}
            }
            let mut body = Vec::new();
            let mut out = None;
            let mut written = 0u64;
            while let Some(bytes) = resp.chunk().await.map_err(transport)? {
                written += bytes.len() as u64;
                if written > max {
                    return Err(Failed::TooLarge(max));
                }
                if out.is_none() && body.len() + bytes.len() > DOWNLOAD_IN_MEMORY {
                    let mut file = crate::util::fs::create_private_file_async(path)
                        .await
                        .map_err(Failed::Local)?;
                    file.write_all(&body).await.map_err(Failed::Local)?;
                    body = Vec::new();
                    out = Some(file);
                }
                match &mut out {
                    Some(file) => file.write_all(&bytes).await.map_err(Failed::Local)?,
                    None => body.extend_from_slice(&bytes),
                }
            }
            if let Some(mut file) = out {
                file.flush().await.map_err(Failed::Local)?;
            }
            Bytes::from(body)
        }
        _ => {
            if resp.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES) {
                return Err(Failed::TooLarge(MAX_ANSWER_BYTES));
            }
            let mut body = Vec::new();
            while let Some(bytes) = resp.chunk().await.map_err(transport)? {
                if (body.len() + bytes.len()) as u64 > MAX_ANSWER_BYTES {
                    return Err(Failed::TooLarge(MAX_ANSWER_BYTES));
                }
                body.extend_from_slice(&bytes);
            }
            Bytes::from(body)
        }
    };
    Ok(Answer {
        status,
        headers,
        body,
        attempts: 0,
    })
}

impl Failed {
    /// The failure as the decision reads it.
    pub(super) fn outcome(&self) -> Outcome {
        match self {
            Failed::Transport { error, sent } => Outcome::Lost {
                sent: *sent,
                timeout: error.is_timeout(),
            },
            Failed::Local(_) => Outcome::Unwritable,
            Failed::TooLarge(_) => Outcome::TooLarge,
        }
    }
}

/// What went wrong with an attempt, for the log and the row's message.
pub(super) fn failure_words(result: &Result<Answer, Failed>, download: bool) -> String {
    match result {
        Ok(answer) if answer.status == StatusCode::TOO_MANY_REQUESTS => {
            "the provider answered 429 (rate limit exceeded)".into()
        }
        Ok(answer) => format!(
            "the provider answered HTTP {}{}",
            answer.status.as_u16(),
            provider_words(answer)
                .map(|w| format!(": {w}"))
                .unwrap_or_default()
        ),
        Err(Failed::Transport { error, .. }) => describe(error),
        Err(Failed::TooLarge(max)) if download => format!(
            "the result file is larger than {} MiB (max_download_mb): not fetched",
            max / (1024 * 1024)
        ),
        Err(Failed::TooLarge(max)) => format!(
            "the provider's answer passed {} MiB, far beyond any answer of this API: not read",
            max / (1024 * 1024)
        ),
        Err(Failed::Local(e)) => format!(
            "cannot write the downloaded file ({e}); free disk space and run the same command \
             again"
        ),
    }
}

/// A transport error's words, without the URL (which can carry identifiers and signatures).
fn describe(error: &reqwest::Error) -> String {
    let mut words = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "could not connect".to_string()
    } else {
        "connection failed".to_string()
    };
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !words.contains(&text) && !text.contains("://") {
            words.push_str(": ");
            words.push_str(&text);
        }
        source = s.source();
    }
    words
}

/// The provider's own words in an error body: `detail` or `message`, as most of them send.
pub fn provider_words(answer: &Answer) -> Option<String> {
    let v = answer.json()?;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|i| i.get("msg").and_then(|m| m.as_str()).map(str::to_owned))
                .collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        _ => None,
    };
    ["message", "detail", "error"]
        .iter()
        .find_map(|k| v.get(k).and_then(text))
}
