//! The normalised result of one row: the same vocabulary for every provider and check.

pub mod reasons;

use std::fmt;

pub use reasons::{Reason, ReasonCode};

/// Where a row stands, as written to `bv_status`.
///
/// The vocabulary is shared by every check so that a nightly report can count outcomes without
/// knowing which provider produced them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Verified,
    NotVerified,
    NeedsReview,
    InvalidInput,
    Pending,
    Error,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Verified,
        Status::NotVerified,
        Status::NeedsReview,
        Status::InvalidInput,
        Status::Pending,
        Status::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Verified => "verified",
            Status::NotVerified => "not_verified",
            Status::NeedsReview => "needs_review",
            Status::InvalidInput => "invalid_input",
            Status::Pending => "pending",
            Status::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Final outcomes are never requested again; `pending` and `error` rows are picked up by the
    /// next run of the same command.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Pending | Status::Error)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a check concluded about one row.
///
/// `fields` are the check's own result columns, named without the `bv_` prefix, in the order
/// the provider gave them; the merge adds the prefix and takes the union over all rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub provider_status: Option<String>,
    pub request_id: Option<String>,
    pub fields: Vec<(String, String)>,
}

impl Outcome {
    pub fn new(status: Status) -> Self {
        Outcome {
            status,
            reason: None,
            message: None,
            provider_status: None,
            request_id: None,
            fields: Vec::new(),
        }
    }

    /// Takes the vocabulary's codes only. A debug build checks that the code goes with the
    /// outcome's status, so that every test exercises what the vocabulary says of it.
    pub fn with_reason(mut self, reason: impl Into<ReasonCode>) -> Self {
        let reason = reason.into();
        debug_assert!(
            reason.goes_with(self.status),
            "{reason:?} does not go with {}",
            self.status
        );
        self.reason = Some(reason.into());
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        let message = message.into();
        self.message = (!message.is_empty()).then_some(message);
        self
    }

    pub fn with_provider_status(mut self, status: impl Into<String>) -> Self {
        self.provider_status = Some(status.into());
        self
    }

    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    pub fn with_fields(mut self, fields: Vec<(String, String)>) -> Self {
        self.fields = fields;
        self
    }
}

/// A row's identity for the whole life of a job: which input file, which data record.
///
/// Packed into one integer so that the journal and the merge can key on it cheaply; 2^40
/// records per file and 2^23 files are far beyond any export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey(pub u64);

impl RowKey {
    const RECORD_BITS: u32 = 40;

    pub fn new(file: u32, record: u64) -> Self {
        debug_assert!(record < 1 << Self::RECORD_BITS);
        RowKey((u64::from(file) << Self::RECORD_BITS) | record)
    }

    pub fn file(self) -> u32 {
        (self.0 >> Self::RECORD_BITS) as u32
    }

    /// 0-based index of the data record within its file (the header is not a record).
    pub fn record(self) -> u64 {
        self.0 & ((1 << Self::RECORD_BITS) - 1)
    }

    /// The first key of a file: the merge adds a file's record index to it.
    pub fn file_base(file: u32) -> u64 {
        u64::from(file) << Self::RECORD_BITS
    }
}

/// A row whose journal record belongs to another kind of check (an OTP request for a one-step
/// check, a request id for a two-step one): never sent, and said.
pub fn misrouted() -> Outcome {
    Outcome::new(Status::Error)
        .with_reason(Reason::STATE_MISMATCH)
        .with_message(
            "the state holds a request this check does not make; run with --fresh to start over",
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("ok"), None);
        assert!(Status::Verified.is_final());
        assert!(!Status::Pending.is_final());
        assert!(!Status::Error.is_final());
    }

    #[test]
    fn row_key_packs_file_and_record() {
        let k = RowKey::new(3, 123_456_789);
        assert_eq!(k.file(), 3);
        assert_eq!(k.record(), 123_456_789);
        assert_eq!(k.0, RowKey::file_base(3) + 123_456_789);
        assert!(RowKey::new(0, 5) < RowKey::new(1, 0));
    }
}
