//! The vocabulary of `bv_reason`: every code a row can carry, defined once, with what it means
//! and the statuses it goes with.
//!
//! The codes are part of the output's contract (reports count them, scripts match on them), so
//! no call site spells one: fixed codes are the constants of [`Reason`], and codes made from a
//! provider's answer come from the constructors of their [`Family`]. The README's tables are
//! checked against this list by a test, so that what users read and what rows say cannot drift.

use std::borrow::Cow;

use super::Status;
use super::Status::{Error, InvalidInput, NeedsReview, NotVerified, Pending};

/// One fixed `bv_reason` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    pub code: &'static str,
    pub meaning: &'static str,
    /// The statuses a row with this reason can have. The reason is final when they all are
    /// ([`Status::is_final`]); it is not when none is, and the next run looks at its row again.
    /// `failed` is the one code with both (Deepvue's failed job is a verdict, Cashfree's failed
    /// entry a bank that could not be reached).
    pub statuses: &'static [Status],
}

/// Defines each fixed code once, as a constant documented by its meaning, and [`Reason::ALL`]
/// from the same lines, so that no code can be missing from the list.
macro_rules! vocabulary {
    ($($name:ident = $code:literal, [$($status:ident),+], $meaning:literal;)+) => {
        impl Reason {
            $(
                #[doc = $meaning]
                pub const $name: Reason = Reason {
                    code: $code,
                    meaning: $meaning,
                    statuses: &[$($status),+],
                };
            )+

            /// Every fixed code, for the README's test and for anyone who needs the whole list.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),+];
        }
    };
}

vocabulary! {
    // Local validation: never sent, costs nothing.
    MISSING_VALUE = "missing_value", [InvalidInput], "A cell the check needs is empty.";
    UDYAM_FORMAT = "udyam_format", [InvalidInput], "Not a Udyam number (UDYAM-XX-00-0000000).";
    UAM_FORMAT = "uam_format", [InvalidInput], "Not a Udyog Aadhaar number (XX00X0000000).";
    VPA_FORMAT = "vpa_format", [InvalidInput], "Not a UPI address (handle@psp).";
    PAN_FORMAT = "pan_format", [InvalidInput], "Not a PAN (AAAAA9999A).";
    PAN_SERIAL = "pan_serial", [InvalidInput], "A PAN whose four digits are 0000.";
    PAN_HOLDER_TYPE = "pan_holder_type", [InvalidInput],
        "A PAN whose 4th letter is no holder type.";
    GSTIN_FORMAT = "gstin_format", [InvalidInput], "Not a GSTIN (15 characters in its shape).";
    GSTIN_CHECKSUM = "gstin_checksum", [InvalidInput],
        "A GSTIN whose mod-36 check character does not match.";
    IFSC_FORMAT = "ifsc_format", [InvalidInput], "Not an IFSC (AAAA0XXXXXX).";
    BANK_ACCOUNT_FORMAT = "bank_account_format", [InvalidInput],
        "Not a bank account number (9 to 18 digits).";
    MOBILE_FORMAT = "mobile_format", [InvalidInput], "Not an Indian mobile number.";
    AADHAAR_FORMAT = "aadhaar_format", [InvalidInput],
        "Not an Aadhaar number (12 digits, 2 to 9 first).";
    AADHAAR_CHECKSUM = "aadhaar_checksum", [InvalidInput],
        "An Aadhaar number whose Verhoeff check digit does not match.";
    VERIFICATION_ID_FORMAT = "verification_id_format", [InvalidInput],
        "Not a DigiLocker verification id (up to 50 letters, digits, '.', '-', '_').";
    REFERENCE_ID_FORMAT = "reference_id_format", [InvalidInput],
        "Not a Cashfree reference id (a number).";
    NAME_FORMAT = "name_format", [InvalidInput],
        "A name without a letter, or over 100 characters.";

    // The two-step checks: the OTP.
    OTP_SENT = "otp_sent", [Pending], "The OTP went out; the row waits for it in its otp cell.";
    OTP_FORMAT = "otp_format", [Pending],
        "The otp cell is not 6 digits: never sent, the row waits until it is corrected.";
    OTP_ALREADY_TRIED = "otp_already_tried", [Pending],
        "The otp cell holds an OTP the provider refused before: never sent twice.";
    OTP_INVALID = "otp_invalid", [Pending], "The provider refused the OTP: correct the cell.";
    OTP_EXPIRED = "otp_expired", [Pending],
        "The OTP expired before it came back: clear the cell for a new one.";
    OTP_ATTEMPTS_EXCEEDED = "otp_attempts_exceeded", [Pending],
        "Three wrong OTPs ended the request: clear the cell for a new one.";
    REQUEST_ARCHIVED = "request_archived", [Pending],
        "The provider archived the OTP request: clear the cell for a new one.";
    OTP_ALREADY_USED = "otp_already_used", [Pending],
        "The request's OTP was verified already (its answer was lost): clear the cell.";
    REG_OR_MOBILE_INVALID = "reg_or_mobile_invalid", [NotVerified],
        "No such Udyam number, or the mobile number is not the one registered with it.";
    MALFORMED_REQUEST = "malformed_request", [NotVerified],
        "Attestr refused the request as malformed (code 4001).";
    MUST_REVIEW = "must_review", [NeedsReview], "Equal's decision: MUST REVIEW.";
    NEEDS_REVIEW = "needs_review", [NeedsReview], "Equal's decision: NEEDS REVIEW.";
    UNKNOWN_DECISION = "unknown_decision", [NeedsReview],
        "Equal succeeded with a decision this tool does not know: not a verification.";
    INVALID_AADHAAR_NO = "invalid_aadhaar_no", [NotVerified],
        "Equal: no such Aadhaar number.";
    DOCUMENT_NOT_FOUND = "document_not_found", [NotVerified],
        "Equal: no document for the Aadhaar number.";

    // The providers' verdicts on a row.
    ACCOUNT_NOT_FOUND = "account_not_found", [NotVerified], "No account behind the UPI address.";
    REJECTED = "rejected", [NotVerified],
        "Refused without a code of the provider's own (a UPI row's 4xx, Cashfree's REJECTED).";
    MANUALLY_REJECTED = "manually_rejected", [NotVerified],
        "Cashfree's MANUALLY_REJECTED, without a code.";
    CANCELLED = "cancelled", [NotVerified], "Cashfree's CANCELLED, without a code.";
    INVALID = "invalid", [NotVerified], "Cashfree's INVALID account, without a code.";
    FAILED = "failed", [NotVerified, Error],
        "Deepvue's failed job without an error (not_verified), or Cashfree's FAILED entry \
         without a code: the bank could not be reached (error, sent again).";
    SOURCE_ERROR = "source_error", [Error], "A UPI row's 5xx, without a sub_code.";
    NO_RESULT = "no_result", [Error], "A UPI row that says neither yes nor no.";
    CONSENT_PENDING = "consent_pending", [Pending], "The customer has not given consent yet.";
    EXPIRED = "expired", [NotVerified], "The DigiLocker link expired before the customer acted.";
    CONSENT_DENIED = "consent_denied", [NotVerified], "The customer denied consent.";
    POOR_PARTIAL_MATCH = "poor_partial_match", [NeedsReview],
        "Valid, but the name matches poorly.";
    NO_MATCH = "no_match", [NeedsReview], "Valid, but the name does not match.";
    PAN_INVALID = "pan_invalid", [NotVerified], "The PAN is invalid at the source.";
    PAN_DELETED = "pan_deleted", [NotVerified], "The PAN was deleted.";
    PAN_DEACTIVATED = "pan_deactivated", [NotVerified], "The PAN was deactivated.";
    UNKNOWN_STATUS = "unknown_status", [Error],
        "The provider answered a status this tool does not know.";
    UNEXPECTED_ANSWER = "unexpected_answer", [Error],
        "The provider answered in a shape this tool does not know.";

    // The run: quota, polling, batches, the state.
    STILL_PROCESSING = "still_processing", [Pending],
        "Accepted, but not finished by the polling deadline: the next run polls again.";
    DAILY_QUOTA_EXHAUSTED = "daily_quota_exhausted", [Pending],
        "The day's quota was used up: the next run continues.";
    PROVIDER_UNAVAILABLE = "provider_unavailable", [Pending, Error],
        "The circuit breaker gave up on the provider: not sent (error), or accepted and not \
         fetched (pending).";
    NOT_SENT = "not_sent", [Pending], "The run stopped before the row was sent.";
    PAID_CALL_LIMIT = "paid_call_limit", [Pending, Error],
        "The run reached its cap on paid calls (max_paid_calls, max_spend): not sent \
         (pending), or failed and not sent again (error); the next run continues.";
    UNCONFIRMED_SUBMISSION = "unconfirmed_submission", [Error],
        "A paid request may have been billed, but its answer was lost.";
    STATE_MISMATCH = "state_mismatch", [Error],
        "The state holds a request of another kind of check.";
    NOT_ACCEPTED = "not_accepted", [Error],
        "An upload's answer was lost and the provider has no batch under its name.";
    MISSING_FROM_RESULT = "missing_from_result", [Error],
        "The batch's result left the row out: the next run sends it again.";
    RESULT_REJECTED = "result_rejected", [Error],
        "The batch's result names rows it never had: not merged, fetched again.";
    RESULT_FILE_UNREADABLE = "result_file_unreadable", [Error],
        "The batch's result file could not be read.";

    // The http client: no usable answer after the retry policy gave up.
    TRANSPORT_ERROR = "transport_error", [Error],
        "The request left, but no answer came back (a timeout, a reset).";
    CONNECT_FAILED = "connect_failed", [Error], "No connection to the provider could be made.";
    DOWNLOAD_REFUSED = "download_refused", [Error],
        "A result file's URL that the download policy refuses.";
    DOWNLOAD_TIMEOUT = "download_timeout", [Error],
        "A result file that took longer than download_timeout_secs.";
    DOWNLOAD_TOO_LARGE = "download_too_large", [Error],
        "A result file larger than max_download_mb.";
    ANSWER_TOO_LARGE = "answer_too_large", [Error],
        "An answer to a free call far larger than any answer of the API.";
}

/// What fills a family's placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A number from the answer: an HTTP status, Attestr's error code.
    Number,
    /// The provider's own code, lower case: new ones appear whenever a provider adds one.
    Code,
    /// The reason of a refusal, itself a code of this vocabulary.
    Reason,
}

/// Codes made from what a provider said, which no list can hold in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// What the family's codes start with, so that a report can tell them from the fixed ones.
    pub prefix: &'static str,
    /// The rest, as the README writes it: `http_<status>`.
    pub placeholder: &'static str,
    pub part: Part,
    pub meaning: &'static str,
    /// As for [`Reason::statuses`].
    pub statuses: &'static [Status],
    /// Codes the providers are known to send, for the README's examples.
    pub examples: &'static [&'static str],
}

impl Family {
    /// Where an answer names no code of its own, its status is all there is to go by.
    pub const HTTP: Family = Family {
        prefix: "http_",
        placeholder: "<status>",
        part: Part::Number,
        meaning: "The HTTP status of an answer without a code of its own: a 5xx or 408 after \
                  the retry policy gave up (error), or a refusal (not_verified, or error).",
        statuses: &[NotVerified, Error],
        examples: &[],
    };

    /// A bulk upload refused as a whole: the fault is the file's, not its rows'.
    pub const BATCH_REFUSED: Family = Family {
        prefix: "batch_refused_",
        placeholder: "<code>",
        part: Part::Reason,
        meaning: "A bulk upload refused as a whole, with the refusal's own reason after the \
                  prefix: every row of it is an error, sent again by the next run.",
        statuses: &[Error],
        examples: &[],
    };

    /// Attestr's errors are numbers; those this tool has no rule for are passed on as they are.
    pub const NUMBERED: Family = Family {
        prefix: "code_",
        placeholder: "<code>",
        part: Part::Number,
        meaning: "An Attestr error code this tool has no rule for.",
        statuses: &[Error],
        examples: &[],
    };

    /// The provider's own code says more than any of ours could: Deepvue's `sub_code` or result
    /// `error`, Cashfree's `code` or `account_status_code`, Equal's `status_code`.
    pub const PROVIDER: Family = Family {
        prefix: "",
        placeholder: "<code>",
        part: Part::Code,
        meaning: "The provider's own code for its verdict or refusal, lower case.",
        statuses: &[NotVerified, Error],
        examples: &[
            "bad_request",
            "not_found",
            "invalid_udyam_number",
            "invalid_vpa",
            "batch_too_large",
            "source_unavailable",
            "invalid_ifsc_fail",
            "invalid_account_fail",
            "verification_id_value_invalid",
            "reference_id_value_invalid",
            "invalid_request",
        ],
    };

    pub const ALL: &'static [Family] = &[
        Family::HTTP,
        Family::BATCH_REFUSED,
        Family::NUMBERED,
        Family::PROVIDER,
    ];

    fn code(&self, part: &str) -> ReasonCode {
        ReasonCode {
            code: Cow::Owned(format!("{}{part}", self.prefix)),
            statuses: self.statuses,
        }
    }
}

impl Reason {
    /// See [`Family::HTTP`].
    pub fn http(status: u16) -> ReasonCode {
        Family::HTTP.code(&status.to_string())
    }

    /// See [`Family::BATCH_REFUSED`]; `refusal` is the reason the refusal itself would give.
    pub fn batch_refused(refusal: &str) -> ReasonCode {
        Family::BATCH_REFUSED.code(refusal)
    }

    /// See [`Family::NUMBERED`].
    pub fn numbered(code: u64) -> ReasonCode {
        Family::NUMBERED.code(&code.to_string())
    }

    /// See [`Family::PROVIDER`]. Lower-cased here, so that `BAD_REQUEST` and `bad_request`
    /// are one code whichever way a provider spells it.
    pub fn provider(code: &str) -> ReasonCode {
        Family::PROVIDER.code(&code.to_ascii_lowercase())
    }
}

/// What a `bv_reason` code means: a fixed code's own meaning, or its family's (a code that is
/// no fixed one and fits no other family is a provider's own).
pub fn meaning_of(code: &str) -> &'static str {
    if let Some(r) = Reason::ALL.iter().find(|r| r.code == code) {
        return r.meaning;
    }
    let fits = |f: &&Family| {
        !f.prefix.is_empty()
            && code
                .strip_prefix(f.prefix)
                .is_some_and(|rest| match f.part {
                    Part::Number => !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()),
                    Part::Reason | Part::Code => !rest.is_empty(),
                })
    };
    Family::ALL
        .iter()
        .find(fits)
        .map_or(Family::PROVIDER.meaning, |f| f.meaning)
}

/// A `bv_reason` as an outcome takes it. Only the vocabulary makes one, so a code cannot be
/// spelled at a call site; it carries its statuses, so that an outcome can check it goes with
/// its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonCode {
    code: Cow<'static, str>,
    statuses: &'static [Status],
}

impl ReasonCode {
    /// The code as the output spells it.
    pub fn as_str(&self) -> &str {
        &self.code
    }

    /// What an outcome checks in a debug build: a code shown with a status it does not go
    /// with would mislead whoever reads the row.
    pub fn goes_with(&self, status: Status) -> bool {
        self.statuses.contains(&status)
    }
}

impl From<Reason> for ReasonCode {
    fn from(reason: Reason) -> ReasonCode {
        ReasonCode {
            code: Cow::Borrowed(reason.code),
            statuses: reason.statuses,
        }
    }
}

impl From<ReasonCode> for String {
    fn from(reason: ReasonCode) -> String {
        reason.code.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statuses a code goes with, if the vocabulary has it: a fixed code, or a member of a
    /// family (its placeholder as written, `http_<status>`, or filled in, `http_500`).
    fn lookup(code: &str) -> Option<&'static [Status]> {
        if let Some(r) = Reason::ALL.iter().find(|r| r.code == code) {
            return Some(r.statuses);
        }
        Family::ALL
            .iter()
            .find(|f| is_member(f, code))
            .map(|f| f.statuses)
    }

    fn is_member(family: &Family, code: &str) -> bool {
        let Some(rest) = code.strip_prefix(family.prefix) else {
            return false;
        };
        rest == family.placeholder
            || family.examples.contains(&rest)
            || match family.part {
                Part::Number => !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()),
                Part::Code => false,
                Part::Reason => lookup(rest).is_some(),
            }
    }

    #[test]
    fn codes_are_defined_once_and_spelled_as_the_output_spells_them() {
        let snake = |c: &str| {
            c.starts_with(|ch: char| ch.is_ascii_lowercase())
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert!(snake(r.code), "{}", r.code);
            assert!(
                !r.meaning.is_empty() && !r.statuses.is_empty(),
                "{}",
                r.code
            );
            assert!(
                Reason::ALL[..i].iter().all(|o| o.code != r.code),
                "{} is defined twice",
                r.code
            );
            // A fixed code that a family could also make would be ambiguous in a report.
            for f in Family::ALL {
                assert!(
                    f.prefix.is_empty() || !r.code.starts_with(f.prefix),
                    "{} looks like a member of {}{}",
                    r.code,
                    f.prefix,
                    f.placeholder
                );
            }
        }
        for f in Family::ALL {
            for e in f.examples {
                assert!(snake(e), "{e}");
                assert!(
                    Reason::ALL.iter().all(|r| r.code != *e),
                    "{e} is a fixed code, not an example of a family"
                );
            }
        }
    }

    #[test]
    fn every_code_has_a_meaning() {
        assert_eq!(meaning_of("not_sent"), Reason::NOT_SENT.meaning);
        assert_eq!(meaning_of("http_503"), Family::HTTP.meaning);
        assert_eq!(
            meaning_of("batch_refused_unconfirmed_submission"),
            Family::BATCH_REFUSED.meaning
        );
        assert_eq!(meaning_of("code_4042"), Family::NUMBERED.meaning);
        assert_eq!(meaning_of("invalid_vpa"), Family::PROVIDER.meaning);
        assert_eq!(meaning_of("http_abc"), Family::PROVIDER.meaning);
    }

    #[test]
    fn families_build_their_codes() {
        let code = |r: ReasonCode| String::from(r);
        assert_eq!(code(Reason::http(503)), "http_503");
        assert_eq!(code(Reason::numbered(4999)), "code_4999");
        assert_eq!(
            code(Reason::provider("INVALID_IFSC_FAIL")),
            "invalid_ifsc_fail"
        );
        assert_eq!(
            code(Reason::batch_refused("batch_too_large")),
            "batch_refused_batch_too_large"
        );
        assert_eq!(code(Reason::OTP_SENT.into()), "otp_sent");
        assert!(Reason::http(500).goes_with(Status::Error));
        assert!(!Reason::http(500).goes_with(Status::Verified));
    }

    /// A README section: its lines from the heading to the next heading of its level or above.
    fn section<'a>(readme: &'a str, heading: &str) -> Vec<&'a str> {
        let level = heading.len() - heading.trim_start_matches('#').len();
        let mut lines = readme.lines().skip_while(|l| *l != heading);
        assert!(lines.next().is_some(), "the README has no {heading:?}");
        lines
            .take_while(|l| {
                let hashes = l.len() - l.trim_start_matches('#').len();
                !(hashes > 0 && hashes <= level && l[hashes..].starts_with(' '))
            })
            .collect()
    }

    fn cells(line: &str) -> Vec<&str> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        inner.split('|').map(str::trim).collect()
    }

    /// The cells of `column` in the section's tables that have it, each with the row's `status`
    /// cell when the table has that column too.
    fn column<'a>(lines: &[&'a str], name: &str, status: &str) -> Vec<(&'a str, Option<&'a str>)> {
        let mut out = Vec::new();
        let mut header: Option<Vec<&str>> = None;
        for line in lines {
            if !line.starts_with('|') {
                header = None;
                continue;
            }
            let row = cells(line);
            match &header {
                None => header = Some(row),
                Some(_) if row.iter().all(|c| c.chars().all(|ch| ch == '-')) => {}
                Some(h) => {
                    let at = |n: &str| h.iter().position(|c| c.trim_matches('`') == n);
                    if let Some(i) = at(name) {
                        out.push((row[i], at(status).map(|s| row[s])));
                    }
                }
            }
        }
        assert!(!out.is_empty(), "no table with a {name:?} column");
        out
    }

    /// The backticked words of a text that can be codes, leaving out the provider's fields the
    /// README names ("its `sub_code`", "the answer's `error`"), output columns (`bv_*`), and
    /// statuses unless `statuses_too`.
    fn codes(text: &str, statuses_too: bool) -> Vec<&str> {
        let shaped = |w: &str| {
            let base = w.split_once('<').map_or(w, |(b, p)| {
                assert!(p.ends_with('>'), "{w}");
                b
            });
            w.starts_with(|c: char| c.is_ascii_lowercase())
                && base
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        text.split('`')
            .enumerate()
            .skip(1)
            .step_by(2)
            .filter(|&(i, _)| {
                let before = text.split('`').nth(i - 1).unwrap_or_default();
                !(before.ends_with("its ") || before.ends_with("'s "))
            })
            .map(|(_, w)| w)
            .filter(|w| shaped(w) && !w.starts_with("bv_"))
            .filter(|w| statuses_too || Status::parse(w).is_none())
            .collect()
    }

    fn statuses(text: &str) -> Vec<Status> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter_map(Status::parse)
            .collect()
    }

    /// Every code the README names, with the statuses it shows it with (none where it shows
    /// none), from the tables and lists that give the outcomes.
    fn readme_codes(readme: &str) -> Vec<(String, Vec<Status>)> {
        let mut named = Vec::new();
        let answers = section(readme, "### Provider answers and outcomes");
        for (reason, status) in column(&answers, "bv_reason", "bv_status") {
            let shown = statuses(status.unwrap_or_default());
            for code in codes(reason, true) {
                named.push((code.to_string(), shown.clone()));
            }
        }
        for (heading, name) in [
            ("### Two-step checks: OTPs", "this run"),
            ("## The sandbox", "outcome"),
        ] {
            for (cell, _) in column(&section(readme, heading), name, "") {
                for code in codes(cell, false) {
                    named.push((code.to_string(), statuses(cell)));
                }
            }
        }
        for heading in ["### Local validation", "### Outcomes"] {
            let prose: Vec<&str> = section(readme, heading)
                .into_iter()
                .filter(|l| !l.starts_with('|'))
                .collect();
            for code in codes(&prose.join("\n"), false) {
                named.push((code.to_string(), Vec::new()));
            }
        }
        named
    }

    #[test]
    fn the_readme_and_the_vocabulary_name_the_same_codes() {
        let path = crate::util::package_dir().join("README.md");
        let readme = std::fs::read_to_string(path).expect("the README is readable");
        let named = readme_codes(&readme);
        let mut wrong = Vec::new();
        for (code, shown) in &named {
            match lookup(code) {
                None => wrong.push(format!("the README names {code}, which is not a reason")),
                Some(goes) if !shown.is_empty() && !shown.iter().any(|s| goes.contains(s)) => {
                    wrong.push(format!(
                        "the README shows {code} with {shown:?}, not {goes:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        for r in Reason::ALL {
            if !named.iter().any(|(c, _)| c == r.code) {
                wrong.push(format!("the README never names {}", r.code));
            }
        }
        for f in Family::ALL {
            if !named.iter().any(|(c, _)| is_member(f, c)) {
                wrong.push(format!(
                    "the README never names {}{}",
                    f.prefix, f.placeholder
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
