//! What to do after each send of a call: the decision that keeps a paid request from being
//! billed twice, apart from the I/O around it so that every case can be read in one table
//! and tested in it.
//!
//! [`classify`] takes only plain data: what the call is ([`Attempt`]), what came back
//! ([`Outcome`]) and what the gate said of a 429 ([`Refusal`]). It reads no clock, touches no
//! shared state and awaits nothing; `Api::exchange` is the loop that acts on its
//! [`Decision`].

use reqwest::StatusCode;

use crate::outcome::{Reason, ReasonCode};
use crate::quota::gate::{Refusal, Signal};
use crate::quota::hints::Hints;

/// 401s answered by renewing the credentials before a third one says they are bad: a token
/// can expire while its request waits for the quota, and once more while the renewed one waits.
const RENEWALS: u32 = 2;

/// Where a call stands when an answer (or none) comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// A paid request that may have reached the provider must never be sent again.
    pub paid: bool,
    /// The provider's credentials went with it: a 401 or a 403 is then about them.
    pub authenticated: bool,
    /// Its answer is a result file, capped by the download policy rather than as an answer.
    pub download: bool,
    /// Failures so far that count against `max_attempts` (429s and 401s do not).
    pub failures: u32,
    pub max_attempts: u32,
    /// 401s so far, each answered by renewing the credentials.
    pub renewals: u32,
    /// Whether the retry budget would pay for a retry. The loop asks the budget only once a
    /// charged retry is decided (asking takes the retry), and decides again if it says no.
    pub budget: bool,
}

/// What one send brought back, reduced to what the decision turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer. `day_spent`: a 429 the provider means as "the day's quota is spent"
    /// (its own codes), on which waiting would not help.
    Answered { status: StatusCode, day_spent: bool },
    /// No answer. `sent` is false only when the request provably never left (no connection
    /// was made); `timeout` when the provider went silent rather than refused.
    Lost { sent: bool, timeout: bool },
    /// The answer passed its size cap and was not read.
    TooLarge,
    /// The answer could not be written to disk.
    Unwritable,
}

/// Why an attempt failed in a way the retry policy handles; also the row's reason if it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A 5xx or a 408.
    Status(StatusCode),
    ConnectFailed,
    /// The connection failed or went silent after the request may have left.
    TransportError,
}

impl Why {
    /// The row's `bv_reason`, as a later run and the summary read it.
    pub fn code(self) -> ReasonCode {
        match self {
            Why::Status(status) => Reason::http(status.as_u16()),
            Why::ConnectFailed => Reason::CONNECT_FAILED.into(),
            Why::TransportError => Reason::TRANSPORT_ERROR.into(),
        }
    }
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The answer is the check's to read: a 2xx, or a business answer.
    Return,
    /// A 401 to credentials that may have gone stale while the request waited: forget them
    /// and send again. The provider did not process the call, so it is no new attempt.
    Renew,
    /// The provider refuses the credentials themselves: the run stops, naming them.
    Refused,
    /// A 429: sent again when the gate grants next, charged neither to the attempts nor to the
    /// retry budget (the provider did not process it). `first`: a pacing miss, which goes
    /// before the rest of its queue; otherwise the gate holds everyone until the provider's time.
    Pace {
        first: bool,
    },
    /// A failure worth another try: sent again after backoff number `backoff`, charged to the
    /// attempts and to the retry budget.
    Retry {
        backoff: u32,
    },
    Fail(Fail),
}

/// How a call ends without an answer for the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    /// The provider says the day's quota is spent: nothing counted goes out today.
    DaySpent,
    /// A paid request may have been billed and no answer was read: the row is held, never
    /// resent, so that the customer does not pay twice.
    Unconfirmed,
    /// The attempts ran out; the row is an error that a later run tries again.
    GaveUp(Why),
    /// The retry budget has no retry left, while the provider fails this often.
    Denied(Why),
    /// The answer passed its cap; `download` says which cap (a result file's or an answer's).
    Oversize { download: bool },
    /// The disk refused the result file: the run cannot go on.
    Unwritable,
}

/// What the gate is told of the send: its breaker, pacing and concurrency learn from every
/// answer, while an answer not read (too large, or not written) tells it nothing.
pub fn signal(outcome: Outcome, hints: Hints) -> Option<Signal> {
    match outcome {
        Outcome::Answered { status, day_spent } if status == StatusCode::TOO_MANY_REQUESTS => {
            Some(if day_spent {
                Signal::Answered(hints)
            } else {
                Signal::RateLimited(hints)
            })
        }
        Outcome::Answered { status, .. } if failed(status) => {
            Some(Signal::Failed { timeout: false })
        }
        Outcome::Answered { .. } => Some(Signal::Answered(hints)),
        Outcome::Lost { timeout, .. } => Some(Signal::Failed { timeout }),
        Outcome::TooLarge | Outcome::Unwritable => None,
    }
}

/// The decision after one send. `refusal` is what the gate said of a 429 it was told of.
pub fn classify(attempt: &Attempt, outcome: Outcome, refusal: Option<Refusal>) -> Decision {
    match outcome {
        Outcome::Answered { status, day_spent } if status == StatusCode::TOO_MANY_REQUESTS => {
            if day_spent {
                Decision::Fail(Fail::DaySpent)
            } else {
                Decision::Pace {
                    first: refusal == Some(Refusal::Miss),
                }
            }
        }
        Outcome::Answered { status, .. } if failed(status) => attempt.retry(Why::Status(status)),
        Outcome::Answered { status, .. }
            if attempt.authenticated && status == StatusCode::UNAUTHORIZED =>
        {
            if attempt.renewals < RENEWALS {
                Decision::Renew
            } else {
                Decision::Refused
            }
        }
        Outcome::Answered { status, .. }
            if attempt.authenticated && status == StatusCode::FORBIDDEN =>
        {
            Decision::Refused
        }
        Outcome::Answered { .. } => Decision::Return,
        // The provider answered, so a paid call may have been billed.
        Outcome::TooLarge if attempt.paid && !attempt.download => Decision::Fail(Fail::Unconfirmed),
        Outcome::TooLarge => Decision::Fail(Fail::Oversize {
            download: attempt.download,
        }),
        Outcome::Unwritable => Decision::Fail(Fail::Unwritable),
        Outcome::Lost { sent: true, .. } if attempt.paid => Decision::Fail(Fail::Unconfirmed),
        Outcome::Lost { sent: true, .. } => attempt.retry(Why::TransportError),
        Outcome::Lost { sent: false, .. } => attempt.retry(Why::ConnectFailed),
    }
}

/// A 5xx or a 408: the provider failed to process the call, and may manage next time.
fn failed(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT
}

impl Attempt {
    fn retry(&self, why: Why) -> Decision {
        if self.failures + 1 >= self.max_attempts {
            Decision::Fail(Fail::GaveUp(why))
        } else if !self.budget {
            Decision::Fail(Fail::Denied(why))
        } else {
            Decision::Retry {
                backoff: self.failures,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds of call the client makes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Call {
        /// A check's paid submission.
        Paid,
        /// A check's free call (a poll).
        Free,
        /// An authenticator's own request (a token), without credentials.
        Token,
        /// A result file.
        Download,
    }

    const CALLS: [Call; 4] = [Call::Paid, Call::Free, Call::Token, Call::Download];
    const ALL: &[Call] = &CALLS;
    const PAID: &[Call] = &[Call::Paid];
    const UNPAID: &[Call] = &[Call::Free, Call::Token, Call::Download];
    const AUTHED: &[Call] = &[Call::Paid, Call::Free];
    const BARE: &[Call] = &[Call::Token, Call::Download];
    const ANSWERS: &[Call] = &[Call::Free, Call::Token];
    const FILE: &[Call] = &[Call::Download];

    /// What came back, with what the gate said of it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Case(Outcome, Option<Refusal>);

    const fn answered(status: StatusCode, day_spent: bool, refusal: Option<Refusal>) -> Case {
        Case(Outcome::Answered { status, day_spent }, refusal)
    }

    const fn lost(sent: bool, timeout: bool) -> Case {
        Case(Outcome::Lost { sent, timeout }, None)
    }

    const OK: Case = answered(StatusCode::OK, false, None);
    const NOT_FOUND: Case = answered(StatusCode::NOT_FOUND, false, None);
    const UNAUTHORIZED: Case = answered(StatusCode::UNAUTHORIZED, false, None);
    const FORBIDDEN: Case = answered(StatusCode::FORBIDDEN, false, None);
    const TIMEOUT_408: Case = answered(StatusCode::REQUEST_TIMEOUT, false, None);
    const ERROR_500: Case = answered(StatusCode::INTERNAL_SERVER_ERROR, false, None);
    const UNAVAILABLE_503: Case = answered(StatusCode::SERVICE_UNAVAILABLE, false, None);
    /// A 429 in the provider's words for "the day's quota is spent".
    const DAY_SPENT: Case = answered(StatusCode::TOO_MANY_REQUESTS, true, None);
    /// A 429 at a known quota: a pacing miss, the gate's margin widened.
    const MISS: Case = answered(StatusCode::TOO_MANY_REQUESTS, false, Some(Refusal::Miss));
    /// A 429 after a run of them, with a `Retry-After`, or with a wait beyond reach (the gate
    /// then refuses counted requests for the day, so the resend stops at its grant).
    const HELD: Case = answered(StatusCode::TOO_MANY_REQUESTS, false, Some(Refusal::Held));
    const NO_CONNECTION: Case = lost(false, false);
    const CONNECT_TIMEOUT: Case = lost(false, true);
    /// The connection reset after the request may have left.
    const RESET: Case = lost(true, false);
    /// The provider went silent after the request may have left.
    const SILENT: Case = lost(true, true);
    const TOO_LARGE: Case = Case(Outcome::TooLarge, None);
    const UNWRITABLE: Case = Case(Outcome::Unwritable, None);

    const HINTS: Hints = Hints {
        retry_after: None,
        remaining: Some(3),
        reset: None,
        policy: None,
        beyond_reach: false,
    };

    /// Every outcome, and what the gate hears of it.
    #[rustfmt::skip]
    const CASES: [(Case, Option<Signal>); 16] = [
        (OK,              Some(Signal::Answered(HINTS))),
        (NOT_FOUND,       Some(Signal::Answered(HINTS))),
        (UNAUTHORIZED,    Some(Signal::Answered(HINTS))),
        (FORBIDDEN,       Some(Signal::Answered(HINTS))),
        (TIMEOUT_408,     Some(Signal::Failed { timeout: false })),
        (ERROR_500,       Some(Signal::Failed { timeout: false })),
        (UNAVAILABLE_503, Some(Signal::Failed { timeout: false })),
        // Said as an answer: the breaker must not count the day's end as a failure.
        (DAY_SPENT,       Some(Signal::Answered(HINTS))),
        (MISS,            Some(Signal::RateLimited(HINTS))),
        (HELD,            Some(Signal::RateLimited(HINTS))),
        (NO_CONNECTION,   Some(Signal::Failed { timeout: false })),
        (CONNECT_TIMEOUT, Some(Signal::Failed { timeout: true })),
        (RESET,           Some(Signal::Failed { timeout: false })),
        (SILENT,          Some(Signal::Failed { timeout: true })),
        // Not read: nothing to learn from.
        (TOO_LARGE,       None),
        (UNWRITABLE,      None),
    ];

    /// Which states of the call a row covers. The states are renewals 0 to 2, one failure
    /// behind it of three allowed (an attempt left) or two (none left), and the retry budget
    /// paying or not.
    #[derive(Debug, Clone, Copy)]
    enum When {
        Any,
        /// Renewed fewer than twice.
        Renewable,
        RenewedTwice,
        /// An attempt left, and the budget pays for it.
        Funded,
        /// An attempt left, and the budget empty.
        Unfunded,
        /// No attempt left, whatever the budget.
        Last,
    }

    impl When {
        fn holds(self, a: &Attempt) -> bool {
            let left = a.failures + 1 < a.max_attempts;
            match self {
                When::Any => true,
                When::Renewable => a.renewals < RENEWALS,
                When::RenewedTwice => a.renewals == RENEWALS,
                When::Funded => left && a.budget,
                When::Unfunded => left && !a.budget,
                When::Last => !left,
            }
        }
    }

    fn states(call: Call) -> impl Iterator<Item = Attempt> {
        (0..=RENEWALS).flat_map(move |renewals| {
            [1, 2].into_iter().flat_map(move |failures| {
                [true, false].map(|budget| Attempt {
                    paid: call == Call::Paid,
                    authenticated: matches!(call, Call::Paid | Call::Free),
                    download: call == Call::Download,
                    failures,
                    max_attempts: 3,
                    renewals,
                    budget,
                })
            })
        })
    }

    use Decision::{Pace, Refused, Renew, Return};
    use Fail::{DaySpent, Denied, GaveUp, Oversize, Unconfirmed, Unwritable};

    const W408: Why = Why::Status(StatusCode::REQUEST_TIMEOUT);
    const W500: Why = Why::Status(StatusCode::INTERNAL_SERVER_ERROR);
    const W503: Why = Why::Status(StatusCode::SERVICE_UNAVAILABLE);
    const CONNECT: Why = Why::ConnectFailed;
    const TRANSPORT: Why = Why::TransportError;
    /// One failure behind it: the retry waits out the second backoff.
    const RETRY: Decision = Decision::Retry { backoff: 1 };
    const fn end(fail: Fail) -> Decision {
        Decision::Fail(fail)
    }

    /// Every call kind × outcome × state falls in exactly one row.
    #[rustfmt::skip]
    const TABLE: &[(&[Call], Case, When, Decision)] = &[
        (ALL,    OK,              When::Any,          Return),
        (ALL,    NOT_FOUND,       When::Any,          Return),
        // Renewed twice, then the credentials are refused; a call without them reads it.
        (AUTHED, UNAUTHORIZED,    When::Renewable,    Renew),
        (AUTHED, UNAUTHORIZED,    When::RenewedTwice, Refused),
        (BARE,   UNAUTHORIZED,    When::Any,          Return),
        (AUTHED, FORBIDDEN,       When::Any,          Refused),
        (BARE,   FORBIDDEN,       When::Any,          Return),
        // The provider did not process it, paid or not.
        (ALL,    TIMEOUT_408,     When::Funded,       RETRY),
        (ALL,    TIMEOUT_408,     When::Unfunded,     end(Denied(W408))),
        (ALL,    TIMEOUT_408,     When::Last,         end(GaveUp(W408))),
        (ALL,    ERROR_500,       When::Funded,       RETRY),
        (ALL,    ERROR_500,       When::Unfunded,     end(Denied(W500))),
        (ALL,    ERROR_500,       When::Last,         end(GaveUp(W500))),
        (ALL,    UNAVAILABLE_503, When::Funded,       RETRY),
        (ALL,    UNAVAILABLE_503, When::Unfunded,     end(Denied(W503))),
        (ALL,    UNAVAILABLE_503, When::Last,         end(GaveUp(W503))),
        // The day spent stops; any other 429 is resent at the gate's word, whatever the
        // attempts and the budget, since it is charged to neither.
        (ALL,    DAY_SPENT,       When::Any,          end(DaySpent)),
        (ALL,    MISS,            When::Any,          Pace { first: true }),
        (ALL,    HELD,            When::Any,          Pace { first: false }),
        // Never connected, so never sent: even a paid request is retried.
        (ALL,    NO_CONNECTION,   When::Funded,       RETRY),
        (ALL,    NO_CONNECTION,   When::Unfunded,     end(Denied(CONNECT))),
        (ALL,    NO_CONNECTION,   When::Last,         end(GaveUp(CONNECT))),
        (ALL,    CONNECT_TIMEOUT, When::Funded,       RETRY),
        (ALL,    CONNECT_TIMEOUT, When::Unfunded,     end(Denied(CONNECT))),
        (ALL,    CONNECT_TIMEOUT, When::Last,         end(GaveUp(CONNECT))),
        // The bytes may have left and no answer came: a paid request is held, never resent,
        // even with attempts and budget to spare; a free one is retried.
        (PAID,   RESET,           When::Any,          end(Unconfirmed)),
        (PAID,   SILENT,          When::Any,          end(Unconfirmed)),
        (UNPAID, RESET,           When::Funded,       RETRY),
        (UNPAID, RESET,           When::Unfunded,     end(Denied(TRANSPORT))),
        (UNPAID, RESET,           When::Last,         end(GaveUp(TRANSPORT))),
        (UNPAID, SILENT,          When::Funded,       RETRY),
        (UNPAID, SILENT,          When::Unfunded,     end(Denied(TRANSPORT))),
        (UNPAID, SILENT,          When::Last,         end(GaveUp(TRANSPORT))),
        // Oversize answers fail; a paid one may have been billed, so it is held.
        (PAID,   TOO_LARGE,       When::Any,          end(Unconfirmed)),
        (ANSWERS, TOO_LARGE,      When::Any,          end(Oversize { download: false })),
        (FILE,   TOO_LARGE,       When::Any,          end(Oversize { download: true })),
        (ALL,    UNWRITABLE,      When::Any,          end(Unwritable)),
    ];

    #[test]
    fn every_send_of_every_call_has_one_decision() {
        let mut used = [0usize; TABLE.len()];
        let mut cases = 0;
        for call in CALLS {
            for (case, _) in CASES {
                for attempt in states(call) {
                    let what = format!("{call:?} {case:?} {attempt:?}");
                    let rows: Vec<usize> = (0..TABLE.len())
                        .filter(|&i| {
                            let (calls, c, when, _) = TABLE[i];
                            calls.contains(&call) && c == case && when.holds(&attempt)
                        })
                        .collect();
                    assert_eq!(rows.len(), 1, "{what}: rows {rows:?}");
                    let Case(outcome, refusal) = case;
                    assert_eq!(
                        classify(&attempt, outcome, refusal),
                        TABLE[rows[0]].3,
                        "{what}"
                    );
                    used[rows[0]] += 1;
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 4 * 16 * 12);
        let unused: Vec<usize> = (0..TABLE.len()).filter(|&i| used[i] == 0).collect();
        assert!(unused.is_empty(), "rows that no case reaches: {unused:?}");
    }

    #[test]
    fn the_gate_hears_of_every_answer_read() {
        for (Case(outcome, _), expected) in CASES {
            assert_eq!(signal(outcome, HINTS), expected, "{outcome:?}");
        }
    }

    #[test]
    fn the_backoff_follows_the_failures_and_the_reasons_keep_their_codes() {
        let first = Attempt {
            paid: false,
            authenticated: true,
            download: false,
            failures: 0,
            max_attempts: 3,
            renewals: 0,
            budget: true,
        };
        assert_eq!(
            classify(&first, RESET.0, None),
            Decision::Retry { backoff: 0 }
        );
        let single = Attempt {
            max_attempts: 1,
            ..first
        };
        assert_eq!(
            classify(&single, ERROR_500.0, None),
            end(GaveUp(W500)),
            "one attempt allowed: no retry at all"
        );
        assert_eq!(W503.code().as_str(), "http_503");
        assert_eq!(CONNECT.code().as_str(), "connect_failed");
        assert_eq!(TRANSPORT.code().as_str(), "transport_error");
    }
}
