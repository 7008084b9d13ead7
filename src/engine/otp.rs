//! The two-step pipeline of the OTP checks, designed once for all of them.
//!
//! One state and one command serve both steps. A run looks at each open row's OTP request (in
//! the journal) and OTP cell (in the input, as it is now) and does what the row needs:
//!
//! | request | OTP cell | this run |
//! |---|---|---|
//! | none yet, or closed, or expired | empty | step one: a new OTP is sent (paid) |
//! | waiting, not expired | empty | nothing: the row stays `pending` (`otp_sent`) |
//! | waiting, not expired | an OTP not tried before | step two (paid) |
//! | waiting, not expired | an OTP the provider refused, or one that was in the cell before this request | nothing: `pending` (`otp_already_tried`) until it is corrected |
//! | waiting, not expired | not 6 digits | nothing: `pending` (`otp_format`) |
//! | expired, or closed | an OTP | nothing: `pending` (`otp_expired`, ...); clearing the cell asks for a new OTP |
//! | step two accepted, result not ready | any | the result is fetched (free) |
//!
//! Both steps are paid calls: each is journalled before it leaves, and one whose answer is
//! lost is held, never sent again blindly. The journal keeps the request's handle, expiry and
//! digests of the OTPs the provider refused, never an OTP: a re-run never spends one of the
//! owner's few attempts on an OTP already known to be wrong.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::plan::Work;
use super::rows::each;
use super::{Ctx, still_processing};
use crate::checks::{OtpAnswer, OtpCheck, OtpSent, Subject};
use crate::input::validate;
use crate::journal::{OtpChange, OtpPhase, OtpRequest};
use crate::outcome::misrouted;
use crate::outcome::{Outcome, Reason, RowKey, Status};
use crate::stats::Stats;
use crate::util::time::unix_now;

/// Runs every row the feed sends. `otp_at` is the position of the OTP among a subject's values.
pub async fn run<C: OtpCheck + ?Sized>(
    ctx: Arc<Ctx>,
    check: Arc<C>,
    otp_at: usize,
    feed: mpsc::Receiver<Work>,
    max_in_flight: usize,
) {
    each(ctx, feed, max_in_flight, move |ctx, work| {
        let check = check.clone();
        async move { row(&ctx, &*check, otp_at, work).await }
    })
    .await;
}

async fn row<C: OtpCheck + ?Sized>(ctx: &Ctx, check: &C, otp_at: usize, work: Work) {
    match work {
        Work::Submit { key, subject } => {
            let cell = otp_cell(&subject, otp_at);
            send_otp(ctx, check, key, &subject, cell).await;
        }
        Work::Otp {
            key,
            subject,
            request,
        } => next_step(ctx, check, key, &subject, otp_at, &request).await,
        Work::Poll { key, .. } => ctx.finish(key, misrouted(), None),
    }
}

/// The digest the journal keeps of an OTP tried on a request: enough to recognise it, and
/// bound to the request, so that the same six digits are not refused on the next request.
pub fn otp_digest(handle: &str, otp: &str) -> String {
    let d = Sha256::new()
        .chain_update(handle.as_bytes())
        .chain_update([0])
        .chain_update(otp.as_bytes())
        .finalize();
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `pending` while an OTP request waits, with its expiry as a column.
fn waiting(reason: Reason, message: String, request: &OtpRequest) -> Outcome {
    Outcome::new(Status::Pending)
        .with_reason(reason)
        .with_message(message)
        .with_fields(vec![("otp_expires_at".into(), rfc3339(request.expires_at))])
}

fn record(ctx: &Ctx, key: RowKey, change: OtpChange, outcome: Outcome, attempts: Option<u32>) {
    ctx.journal.otp(key, change, outcome, attempts);
    Stats::add(&ctx.stats.done, 1);
}

/// Step one. `cell` is what the OTP cell holds now: it cannot be this request's OTP.
async fn send_otp<C: OtpCheck + ?Sized>(
    ctx: &Ctx,
    check: &C,
    key: RowKey,
    subject: &Subject,
    cell: &str,
) {
    let Some((_sending, intent)) = ctx.begin_paid(&[key], 1, None, None).await else {
        return;
    };
    let (sent, attempts) = match check.send_otp(&ctx.api, subject, &intent).await {
        Ok(answer) => answer,
        Err(e) => return ctx.submit_failed(vec![key], None, e),
    };
    Stats::add(&ctx.stats.submitted, 1);
    match sent {
        OtpSent::Done(outcome) => ctx.finish(key, outcome, Some(attempts)),
        OtpSent::Sent { handle, outcome } => {
            Stats::add(&ctx.stats.otps_sent, 1);
            Stats::add(&ctx.stats.awaiting_otp, 1);
            let validity = i64::try_from(check.otp_validity().as_secs()).unwrap_or(i64::MAX);
            let expires_at = unix_now().saturating_add(validity);
            let mut fields = outcome.fields.clone();
            fields.push(("otp_expires_at".into(), rfc3339(expires_at)));
            let stale = (!cell.is_empty()).then(|| otp_digest(&handle, cell));
            let change = OtpChange::Sent {
                handle,
                expires_at,
                stale,
            };
            record(
                ctx,
                key,
                change,
                outcome.with_fields(fields),
                Some(attempts),
            );
        }
    }
}

/// What a row with an OTP request needs now, from the request and the OTP cell as it is: the
/// decision `run` acts on and `plan` counts.
#[derive(Debug)]
pub enum OtpStep {
    /// Step two was accepted: fetch its result (free).
    Fetch,
    /// The OTP is on its way: nothing to do.
    Wait,
    /// Step one (paid): no live request, and an empty cell.
    SendOtp,
    /// The request expired before its OTP came back.
    Expire,
    /// The provider closed the request: the outcome recorded then says what to do.
    Closed,
    /// The cell holds something that is not an OTP.
    Malformed(crate::input::validate::Invalid),
    /// The cell holds an OTP the provider refused, or one there before the request.
    AlreadyTried,
    /// Step two (paid), with the OTP and its digest.
    Verify { otp: String, digest: String },
}

impl OtpStep {
    /// Whether the step is a paid call.
    pub fn paid(&self) -> bool {
        matches!(self, OtpStep::SendOtp | OtpStep::Verify { .. })
    }
}

/// The [`OtpStep`] of a row whose request is `request` and whose OTP cell holds `cell`, at
/// Unix time `now`.
pub fn otp_step(request: &OtpRequest, cell: &str, now: i64) -> OtpStep {
    if request.phase == OtpPhase::Verifying {
        return OtpStep::Fetch;
    }
    let live = request.phase == OtpPhase::Awaiting && now < request.expires_at;
    match (cell.is_empty(), live) {
        (true, true) => return OtpStep::Wait,
        (true, false) => return OtpStep::SendOtp,
        (false, false) if request.phase == OtpPhase::Awaiting => return OtpStep::Expire,
        (false, false) => return OtpStep::Closed,
        (false, true) => {}
    }
    let otp = match validate::otp(cell) {
        Ok(otp) => otp,
        Err(invalid) => return OtpStep::Malformed(invalid),
    };
    let digest = otp_digest(&request.handle, &otp);
    if request.tried.contains(&digest) {
        return OtpStep::AlreadyTried;
    }
    OtpStep::Verify { otp, digest }
}

/// What a subject's OTP cell holds, trimmed.
pub fn otp_cell(subject: &Subject, at: usize) -> &str {
    subject.values.get(at).map_or("", |v| v.trim())
}

/// A row with an OTP request: what it needs now.
async fn next_step<C: OtpCheck + ?Sized>(
    ctx: &Ctx,
    check: &C,
    key: RowKey,
    subject: &Subject,
    otp_at: usize,
    request: &OtpRequest,
) {
    let cell = otp_cell(subject, otp_at);
    match otp_step(request, cell, unix_now()) {
        OtpStep::Fetch => fetch(ctx, check, key, &request.handle, subject).await,
        OtpStep::Wait => {
            Stats::add(&ctx.stats.awaiting_otp, 1);
            Stats::add(&ctx.stats.done, 1);
        }
        OtpStep::SendOtp => send_otp(ctx, check, key, subject, cell).await,
        OtpStep::Expire => {
            let outcome = Outcome::new(Status::Pending)
                .with_reason(Reason::OTP_EXPIRED)
                .with_message(format!(
                    "the OTP expired at {} before it was sent back; clear the otp cell and run \
                     again to send a new one",
                    rfc3339(request.expires_at)
                ));
            record(ctx, key, OtpChange::Closed, outcome, None);
        }
        // Closed by the provider: the outcome recorded then says to clear the cell.
        OtpStep::Closed => Stats::add(&ctx.stats.done, 1),
        OtpStep::Malformed(invalid) => {
            let message = format!("{}; correct the otp cell and run again", invalid.message);
            let outcome = waiting(invalid.reason, message, request);
            record(ctx, key, OtpChange::Refused(None), outcome, None);
        }
        OtpStep::AlreadyTried => {
            let outcome = waiting(
                Reason::OTP_ALREADY_TRIED,
                "this OTP was sent before and refused, or was in the cell before the OTP \
                 request was made: enter the OTP the owner received and run again"
                    .into(),
                request,
            );
            record(ctx, key, OtpChange::Refused(None), outcome, None);
        }
        OtpStep::Verify { otp, digest } => {
            verify(ctx, check, key, subject, request, &otp, digest).await;
        }
    }
}

/// Step two.
async fn verify<C: OtpCheck + ?Sized>(
    ctx: &Ctx,
    check: &C,
    key: RowKey,
    subject: &Subject,
    request: &OtpRequest,
    otp: &str,
    digest: String,
) {
    let Some((_sending, intent)) = ctx.begin_paid(&[key], 1, None, None).await else {
        return;
    };
    match check
        .verify(&ctx.api, &request.handle, subject, otp, &intent)
        .await
    {
        Ok((answer, attempts)) => {
            Stats::add(&ctx.stats.submitted, 1);
            let running = matches!(answer, OtpAnswer::Running);
            settle(ctx, key, answer, Some(attempts), Some(digest));
            if running {
                fetch(ctx, check, key, &request.handle, subject).await;
            }
        }
        Err(e) => ctx.submit_failed(vec![key], None, e),
    }
}

/// Polls a step two under way until its result, the deadline (`pending`, and the next run
/// fetches again) or a stop.
async fn fetch<C: OtpCheck + ?Sized>(
    ctx: &Ctx,
    check: &C,
    key: RowKey,
    handle: &str,
    subject: &Subject,
) {
    let answer = ctx
        .poll_until(
            check.schedule(),
            || async {
                match check.fetch(&ctx.api, handle, subject).await {
                    Ok(OtpAnswer::Running) => None,
                    other => Some(other),
                }
            },
            || ctx.finish(key, still_processing(), None),
        )
        .await;
    match answer {
        None | Some(Ok(OtpAnswer::Running)) => {}
        Some(Ok(answer)) => settle(ctx, key, answer, None, None),
        Some(Err(e)) => ctx.poll_failed(vec![key], e),
    }
}

/// Records an answer to step two or a fetch. `digest` is the OTP's, when step two sent one.
fn settle(
    ctx: &Ctx,
    key: RowKey,
    answer: OtpAnswer,
    attempts: Option<u32>,
    digest: Option<String>,
) {
    match answer {
        OtpAnswer::Done(outcome) => ctx.finish(key, outcome, attempts),
        OtpAnswer::Refused(outcome) => {
            record(ctx, key, OtpChange::Refused(digest), outcome, attempts);
        }
        OtpAnswer::Closed(outcome) => record(ctx, key, OtpChange::Closed, outcome, attempts),
        OtpAnswer::Running => {
            let outcome = Outcome::new(Status::Pending)
                .with_reason(Reason::STILL_PROCESSING)
                .with_message("the OTP was accepted and the result is being prepared");
            ctx.journal
                .otp(key, OtpChange::Verifying, outcome, attempts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(phase: OtpPhase, expires_at: i64, tried: &[&str]) -> OtpRequest {
        OtpRequest {
            handle: "h".into(),
            expires_at,
            phase,
            tried: tried.iter().map(|t| t.to_string()).collect(),
            sent: 1,
        }
    }

    /// The module's table, row by row: what `run` does with a row and what `plan` counts.
    #[test]
    fn each_request_and_cell_has_its_step() {
        let now = 1_000;
        let live = request(OtpPhase::Awaiting, now + 60, &[]);
        let expired = request(OtpPhase::Awaiting, now - 1, &[]);
        let closed = request(OtpPhase::Closed, now + 60, &[]);
        let tried = request(OtpPhase::Awaiting, now + 60, &[&otp_digest("h", "111111")]);
        let verifying = request(OtpPhase::Verifying, now - 1, &[]);
        let step = |r: &OtpRequest, cell: &str| otp_step(r, cell, now);
        assert!(matches!(step(&live, ""), OtpStep::Wait));
        assert!(matches!(step(&expired, ""), OtpStep::SendOtp));
        assert!(matches!(step(&closed, ""), OtpStep::SendOtp));
        assert!(matches!(step(&expired, "123456"), OtpStep::Expire));
        assert!(matches!(step(&closed, "123456"), OtpStep::Closed));
        assert!(matches!(step(&live, "12345"), OtpStep::Malformed(_)));
        assert!(matches!(step(&tried, "111111"), OtpStep::AlreadyTried));
        assert!(matches!(step(&verifying, ""), OtpStep::Fetch));
        match step(&tried, "123456") {
            OtpStep::Verify { otp, digest } => {
                assert_eq!(
                    (otp.as_str(), digest),
                    ("123456", otp_digest("h", "123456"))
                );
            }
            other => panic!("{other:?}"),
        }
        let paid: Vec<bool> = [
            step(&expired, ""),
            step(&live, "123456"),
            step(&live, ""),
            step(&verifying, ""),
        ]
        .iter()
        .map(OtpStep::paid)
        .collect();
        assert_eq!(paid, [true, true, false, false]);
    }

    #[test]
    fn digests_bind_the_otp_to_its_request() {
        assert_eq!(otp_digest("a", "123456"), otp_digest("a", "123456"));
        assert_ne!(otp_digest("a", "123456"), otp_digest("b", "123456"));
        assert_ne!(otp_digest("a", "123456"), otp_digest("a", "123457"));
        assert_eq!(otp_digest("a", "123456").len(), 16);
        assert!(!otp_digest("a", "123456").contains("123456"));
    }

    #[test]
    fn expiry_is_written_in_utc() {
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
