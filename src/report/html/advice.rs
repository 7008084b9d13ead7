//! The job's exit code in words, and what to do next, from its counts and reasons.

use crate::outcome::{Reason, Status};
use crate::report::{EXIT_FATAL, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE};

use super::JobReport;
use super::text::rows;

/// What the report says first.
pub(super) struct Verdict {
    /// `ok`, `warn` or `bad`: the colour of the box.
    pub tone: &'static str,
    pub headline: String,
    pub steps: Vec<String>,
}

/// What to do about rows left open with a reason, for the reasons that have a step of their
/// own; the others are sent again by the next run of the same command.
const STEPS: &[(Reason, &str)] = &[
    (
        Reason::DAILY_QUOTA_EXHAUSTED,
        "the provider's daily quota was used up: tomorrow's run of the same command continues",
    ),
    (
        Reason::UNCONFIRMED_SUBMISSION,
        "their request may have been billed but its answer was lost: run the same command with \
         --resend-unconfirmed to send them again (each may be billed twice)",
    ),
    (
        Reason::OTP_SENT,
        "wait for their OTP: fill the otp column of the input and run the same command again \
         before bv_otp_expires_at",
    ),
    (
        Reason::OTP_FORMAT,
        "their otp cell is not 6 digits: correct it and run the same command again",
    ),
    (
        Reason::OTP_INVALID,
        "the provider refused their OTP: correct the otp cell and run the same command again",
    ),
    (
        Reason::OTP_ALREADY_TRIED,
        "their otp cell holds an OTP refused before: put the new one in and run again",
    ),
    (
        Reason::OTP_EXPIRED,
        "their OTP expired: clear the otp cell and run again for a new one",
    ),
    (
        Reason::OTP_ATTEMPTS_EXCEEDED,
        "three wrong OTPs ended their request: clear the otp cell and run again for a new one",
    ),
    (
        Reason::REQUEST_ARCHIVED,
        "the provider archived their OTP request: clear the otp cell and run again for a new one",
    ),
    (
        Reason::OTP_ALREADY_USED,
        "their OTP was verified already but the answer was lost: clear the otp cell and run again",
    ),
    (
        Reason::PROVIDER_UNAVAILABLE,
        "the provider kept failing and the run gave up on it: run the same command again \
         later, when it is back",
    ),
    (
        Reason::PAID_CALL_LIMIT,
        "the run reached its cap on paid calls: the same command sends them, up to the cap \
         again (max_paid_calls or max_spend sets it)",
    ),
    (
        Reason::CONSENT_PENDING,
        "the customer has not given consent yet: run the same command again later",
    ),
    (
        Reason::STILL_PROCESSING,
        "the provider had not finished them: the next run of the same command asks again",
    ),
    (
        Reason::NOT_SENT,
        "the run stopped before sending them: run the same command again",
    ),
    (
        Reason::STATE_MISMATCH,
        "the state holds a request of another kind of check: run with --fresh to start over",
    ),
];

pub(super) fn verdict(job: &JobReport) -> Verdict {
    let open: u64 = job
        .counts
        .iter()
        .filter(|(s, _)| !s.is_final())
        .map(|(_, n)| n)
        .sum();
    let last = job.runs.last();
    let (tone, headline) = match last.map(|r| r.exit_code) {
        None => ("warn", "No run of this job is recorded.".to_string()),
        Some(None) => (
            "bad",
            "The last run did not finish: it was killed, or it is still running. Run the same \
             command again: it resumes where the run stopped."
                .to_string(),
        ),
        Some(Some(EXIT_OK)) => (
            "ok",
            format!("Complete (exit {EXIT_OK}): every row has a final outcome."),
        ),
        Some(Some(EXIT_INCOMPLETE)) => (
            "warn",
            format!(
                "Incomplete (exit {EXIT_INCOMPLETE}): {} pending or error. Run the same command \
                 again to resume.",
                rows(open)
            ),
        ),
        Some(Some(EXIT_FATAL)) => (
            "bad",
            format!(
                "Failed (exit {EXIT_FATAL}): the last run could not go on (configuration, \
                 credentials, input or disk). Its log says why; fix that and run the same \
                 command again."
            ),
        ),
        Some(Some(EXIT_USAGE)) => (
            "bad",
            format!("The command line was wrong (exit {EXIT_USAGE}): see the run's log."),
        ),
        Some(Some(code)) => ("bad", format!("The last run ended with exit code {code}.")),
    };
    Verdict {
        tone,
        headline,
        steps: steps(job),
    }
}

/// One step for each reason that has its own, for the other open rows together, and for the
/// final rows that still ask something of a person.
fn steps(job: &JobReport) -> Vec<String> {
    let of = |status: Status| {
        job.counts
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    };
    let open = of(Status::Pending) + of(Status::Error);
    let mut steps = Vec::new();
    let mut stepped = 0;
    for r in job.reasons.iter().filter(|r| !r.status.is_final()) {
        if let Some((reason, what)) = STEPS.iter().find(|(reason, _)| reason.code == r.code) {
            stepped += r.rows;
            steps.push(format!(
                "{} {} ({}): {what}.",
                rows(r.rows),
                r.status,
                reason.code
            ));
        }
    }
    let rest = open.saturating_sub(stepped);
    if rest > 0 {
        steps.push(format!(
            "{} pending or error for other reasons (the reasons table lists them): the next run \
             of the same command sends them again.",
            rows(rest)
        ));
    }
    let invalid = of(Status::InvalidInput);
    if invalid > 0 {
        steps.push(format!(
            "{} failed local validation and {} never sent (nothing paid): bv_reason says what \
             to correct in the input.",
            rows(invalid),
            if invalid == 1 { "was" } else { "were" }
        ));
    }
    let review = of(Status::NeedsReview);
    if review > 0 {
        steps.push(format!(
            "{} need{} a person's review: the source answered but flagged {}.",
            rows(review),
            if review == 1 { "s" } else { "" },
            if review == 1 { "it" } else { "them" }
        ));
    }
    if steps.is_empty() && job.counts.iter().any(|(_, n)| *n > 0) {
        steps.push("Nothing to do: every row is final.".to_string());
    }
    steps
}
