//! The lifecycles of rows, batches and OTP requests: the word each state is stored as, and the
//! moves the journal lets a row or a batch make.
//!
//! States are stored as words so that the journal can be read with `sqlite3`. The words are
//! spelled here and nowhere else: every statement that names a state binds it or is built from
//! it, and states written by earlier versions must keep reading the same. The moves are here
//! too, and the writer refuses any other: a row moved the wrong way is a paid call sent twice
//! (an accepted or held row planned again) or a result overwritten.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::outcome::RowKey;

/// Where a row is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    /// Nothing sent yet.
    Planned,
    /// Intent committed; the paid call is about to leave or is in flight.
    Sending,
    /// The provider accepted it and gave a request id: poll, never resend.
    Running,
    /// An outcome is recorded (which may itself be `pending` or `error`).
    Done,
    /// A paid call may have reached the provider but its answer was lost.
    Unconfirmed,
    /// Same identifier as an earlier row: that row's outcome is copied.
    Duplicate,
}

impl RowState {
    /// Every state: what a stored word is read back as, and what the move tables cover.
    pub const ALL: [RowState; 6] = [
        RowState::Planned,
        RowState::Sending,
        RowState::Running,
        RowState::Done,
        RowState::Unconfirmed,
        RowState::Duplicate,
    ];

    /// The stored word: states on disk depend on it never changing.
    pub fn as_sql(self) -> &'static str {
        match self {
            RowState::Planned => "planned",
            RowState::Sending => "sending",
            RowState::Running => "running",
            RowState::Done => "done",
            RowState::Unconfirmed => "unconfirmed",
            RowState::Duplicate => "duplicate",
        }
    }

    /// A state read back. An unknown word is an error, never a default: reading a damaged
    /// state as `planned` would send a paid call again.
    fn from_sql(text: &str) -> Option<RowState> {
        RowState::ALL.into_iter().find(|s| s.as_sql() == text)
    }
}

/// Where a batch upload is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    /// Intent committed; the upload is about to leave or is in flight.
    Sending,
    /// The provider accepted it: its rows are polled through it, never uploaded again.
    Uploaded,
    /// Uploaded under a name we chose, its answer lost: the provider is asked for the name
    /// before anything else happens to its rows.
    Reconcile,
    /// The upload may have been taken but its answer was lost; its rows are held.
    Unconfirmed,
    /// Every row has its result.
    Done,
    /// The provider refused the upload: nothing was taken.
    Refused,
    /// Answered every time, never accepted: nothing was billed.
    Failed,
    /// Unconfirmed, and its rows planned again on the user's `--resend-unconfirmed`.
    Abandoned,
}

impl BatchState {
    /// Every state: what a stored word is read back as, and what the move tables cover.
    pub const ALL: [BatchState; 8] = [
        BatchState::Sending,
        BatchState::Uploaded,
        BatchState::Reconcile,
        BatchState::Unconfirmed,
        BatchState::Done,
        BatchState::Refused,
        BatchState::Failed,
        BatchState::Abandoned,
    ];

    /// Batches whose rows are polled through them, whatever the rows' own status: the
    /// provider has (or may have, under our name) the upload.
    pub const OPEN: [BatchState; 2] = [BatchState::Uploaded, BatchState::Reconcile];

    /// The stored word: states on disk depend on it never changing.
    pub fn as_sql(self) -> &'static str {
        match self {
            BatchState::Sending => "sending",
            BatchState::Uploaded => "uploaded",
            BatchState::Reconcile => "reconcile",
            BatchState::Unconfirmed => "unconfirmed",
            BatchState::Done => "done",
            BatchState::Refused => "refused",
            BatchState::Failed => "failed",
            BatchState::Abandoned => "abandoned",
        }
    }

    fn from_sql(text: &str) -> Option<BatchState> {
        BatchState::ALL.into_iter().find(|s| s.as_sql() == text)
    }

    /// The batch moves the journal allows. A batch the provider took (`uploaded`) can end
    /// only in results or held rows; the closed states are final.
    pub fn can_become(self, next: BatchState) -> bool {
        use BatchState::*;
        match self {
            // The same intent is recorded again when a named upload is safely resent.
            Sending => matches!(
                next,
                Sending | Uploaded | Reconcile | Unconfirmed | Refused | Failed
            ),
            Uploaded => matches!(next, Done | Unconfirmed),
            Reconcile => next == Done,
            Unconfirmed => next == Abandoned,
            Done | Refused | Failed | Abandoned => false,
        }
    }

    /// Whether the batch may be forgotten and its rows planned again: only while the
    /// provider has nothing of it, because it never left (`sending`) or because the provider
    /// says it has no upload under its name (`reconcile`).
    pub fn can_be_forgotten(self) -> bool {
        matches!(self, BatchState::Sending | BatchState::Reconcile)
    }

    /// [`BatchState::OPEN`] as an SQL list.
    pub(super) fn open_sql() -> String {
        sql_list(BatchState::OPEN.into_iter().map(BatchState::as_sql))
    }

    /// The states a batch may reach `next` from, as an SQL list.
    pub(super) fn sources_sql(next: BatchState) -> String {
        sql_list(
            BatchState::ALL
                .into_iter()
                .filter(|s| s.can_become(next))
                .map(BatchState::as_sql),
        )
    }
}

/// Where a two-step check's OTP request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpPhase {
    /// The OTP went to the owner's phone; step two waits for it in the input.
    Awaiting,
    /// Step two was accepted and its result is being prepared: fetch it, never resend.
    Verifying,
    /// The provider will take no OTP for this request any more (expired, archived, already
    /// used): a new OTP is needed.
    Closed,
}

impl OtpPhase {
    const ALL: [OtpPhase; 3] = [OtpPhase::Awaiting, OtpPhase::Verifying, OtpPhase::Closed];

    /// The stored word: states on disk depend on it never changing.
    pub fn as_sql(self) -> &'static str {
        match self {
            OtpPhase::Awaiting => "awaiting",
            OtpPhase::Verifying => "verifying",
            OtpPhase::Closed => "closed",
        }
    }

    /// A phase read back; an unknown word reads as closed, so that a damaged request leads to
    /// a new OTP, never to a resend.
    pub(super) fn from_sql_or_closed(text: &str) -> OtpPhase {
        OtpPhase::ALL
            .into_iter()
            .find(|p| p.as_sql() == text)
            .unwrap_or(OtpPhase::Closed)
    }
}

/// What happens to a row. A move is allowed or refused for its reason, not only for its two
/// states: planning an accepted row again is right when the provider says it never took the
/// row's batch and wrong otherwise, and planning a held row again is the user's decision only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The intent to call is committed.
    Intent,
    /// The call did not leave after all.
    Revert,
    /// The provider accepted the call, or an upload under our name is to be asked for.
    Accept,
    /// The call may have been billed and its answer was lost, or the provider no longer
    /// knows the request.
    Hold,
    /// An outcome is recorded.
    Finish,
    /// The row's batch is forgotten: the provider has nothing of it.
    Forget,
    /// `--resend-unconfirmed`: a held row is planned again.
    Release,
}

impl Step {
    /// The state the step leaves a row in.
    pub fn target(self) -> RowState {
        match self {
            Step::Intent => RowState::Sending,
            Step::Revert | Step::Forget | Step::Release => RowState::Planned,
            Step::Accept => RowState::Running,
            Step::Hold => RowState::Unconfirmed,
            Step::Finish => RowState::Done,
        }
    }

    /// Whether a row in `from` may take the step. Held and duplicate rows are never sent, an
    /// accepted row is never sent again, and only the user plans a held row again.
    pub fn allows(self, from: RowState) -> bool {
        use RowState::*;
        match self {
            // A done row is sent again while its outcome is pending or an error; a named
            // upload sent again safely records its intent again.
            Step::Intent | Step::Revert => matches!(from, Planned | Sending | Done),
            Step::Accept => from == Sending,
            // A running or pending row is held when the provider no longer knows its request.
            Step::Hold => matches!(from, Sending | Running | Done),
            // A row refused before it is sent (the quota is spent, its OTP is malformed) gets
            // its outcome straight from planned.
            Step::Finish => matches!(from, Planned | Sending | Running | Done),
            Step::Forget => matches!(from, Planned | Sending | Running | Done),
            Step::Release => from == Unconfirmed,
        }
    }

    /// The step's move from `from`, or its refusal for the row `key`.
    pub fn move_from(self, key: RowKey, from: RowState) -> Result<RowState, Refused> {
        if self.allows(from) {
            Ok(self.target())
        } else {
            Err(Refused::Row {
                key,
                from,
                step: self,
            })
        }
    }

    /// Whether `column` holds a state the row may take the step from, as an SQL condition.
    /// Comparisons rather than `IN (...)`: SQLite builds a temporary b-tree of a constant list
    /// at every execution, which the writer's statement for each row would pay each time.
    pub(super) fn sources_where(self, column: &str) -> String {
        let each: Vec<String> = RowState::ALL
            .into_iter()
            .filter(|s| self.allows(*s))
            .map(|s| format!("{column} = '{}'", s.as_sql()))
            .collect();
        format!("({})", each.join(" OR "))
    }

    /// The states a row may take the step from, as an SQL list.
    pub(super) fn sources_sql(self) -> String {
        sql_list(
            RowState::ALL
                .into_iter()
                .filter(|s| self.allows(*s))
                .map(RowState::as_sql),
        )
    }

    fn as_str(self) -> &'static str {
        match self {
            Step::Intent => "sent",
            Step::Revert => "reverted to planned",
            Step::Accept => "marked accepted",
            Step::Hold => "held as unconfirmed",
            Step::Finish => "given an outcome",
            Step::Forget => "planned again with its batch",
            Step::Release => "released for sending again",
        }
    }
}

/// A move the journal refused. It means a bug, not a bad input: the run stops sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "row {} of input file {} is {from} and cannot be {step}",
        key.record() + 1,
        key.file() + 1
    )]
    Row {
        key: RowKey,
        from: RowState,
        step: Step,
    },
    #[error("batch {batch_id} is {from} and cannot {}", batch_move(*to))]
    Batch {
        batch_id: i64,
        from: BatchState,
        /// `None`: the batch was to be forgotten.
        to: Option<BatchState>,
    },
}

fn batch_move(to: Option<BatchState>) -> String {
    to.map_or_else(|| "be forgotten".into(), |to| format!("become {to}"))
}

/// Quoted words for an SQL `IN (...)` list. The words are this module's own, free of quotes.
pub(super) fn sql_list(words: impl IntoIterator<Item = &'static str>) -> String {
    words
        .into_iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for RowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

impl fmt::Display for BatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn unknown(what: &str, text: &str) -> FromSqlError {
    FromSqlError::Other(format!("unknown {what} {text:?}").into())
}

impl FromSql for RowState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        RowState::from_sql(text).ok_or_else(|| unknown("row state", text))
    }
}

impl ToSql for RowState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_sql()))
    }
}

impl FromSql for BatchState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        BatchState::from_sql(text).ok_or_else(|| unknown("batch state", text))
    }
}

impl ToSql for BatchState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_sql()))
    }
}

impl ToSql for OtpPhase {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_sql()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words on disk: a state written by an earlier version must read the same.
    #[test]
    fn stored_words_never_change() {
        let rows: Vec<_> = RowState::ALL.iter().map(|s| s.as_sql()).collect();
        assert_eq!(
            rows,
            [
                "planned",
                "sending",
                "running",
                "done",
                "unconfirmed",
                "duplicate"
            ]
        );
        let batches: Vec<_> = BatchState::ALL.iter().map(|s| s.as_sql()).collect();
        assert_eq!(
            batches,
            [
                "sending",
                "uploaded",
                "reconcile",
                "unconfirmed",
                "done",
                "refused",
                "failed",
                "abandoned"
            ]
        );
        let phases: Vec<_> = OtpPhase::ALL.iter().map(|p| p.as_sql()).collect();
        assert_eq!(phases, ["awaiting", "verifying", "closed"]);
        for s in RowState::ALL {
            assert_eq!(RowState::from_sql(s.as_sql()), Some(s));
        }
        for s in BatchState::ALL {
            assert_eq!(BatchState::from_sql(s.as_sql()), Some(s));
        }
        assert_eq!(RowState::from_sql("Planned"), None, "never a default");
        assert_eq!(OtpPhase::from_sql_or_closed("?"), OtpPhase::Closed);
    }

    /// Every step from every state: `.` refused, a letter the state it leaves the row in.
    #[test]
    fn row_moves_table() {
        use Step::*;
        // Columns: planned, sending, running, done, unconfirmed, duplicate. The match makes a
        // new step fail here until its row is written.
        let expected = |step| match step {
            Intent => "SS.S..",
            Revert => "PP.P..",
            Accept => ".R....",
            Hold => ".UUU..",
            Finish => "DDDD..",
            Forget => "PPPP..",
            Release => "....P.",
        };
        let letter = |s: RowState| match s {
            RowState::Planned => 'P',
            RowState::Sending => 'S',
            RowState::Running => 'R',
            RowState::Done => 'D',
            RowState::Unconfirmed => 'U',
            RowState::Duplicate => '2',
        };
        for step in [Intent, Revert, Accept, Hold, Finish, Forget, Release] {
            let expected: Vec<char> = expected(step).chars().collect();
            let got: Vec<char> = RowState::ALL
                .iter()
                .map(|from| step.move_from(RowKey(0), *from).map_or('.', letter))
                .collect();
            assert_eq!(got, expected, "{step:?}");
        }
    }

    /// The moves that would bill a row twice or lose what the provider has are refused.
    #[test]
    fn dangerous_row_moves_are_refused() {
        use RowState::*;
        let refused = [
            (Running, Step::Intent),
            (Running, Step::Revert),
            (Unconfirmed, Step::Intent),
            (Unconfirmed, Step::Revert),
            (Unconfirmed, Step::Finish),
            (Duplicate, Step::Intent),
            (Duplicate, Step::Finish),
            (Planned, Step::Accept),
            (Done, Step::Release),
        ];
        for (from, step) in refused {
            let err = step.move_from(RowKey::new(1, 4), from).unwrap_err();
            assert!(
                err.to_string().starts_with("row 5 of input file 2 is "),
                "{err}"
            );
        }
    }

    /// The writer's conditions name the same states as the step's lists.
    #[test]
    fn sources_as_comparisons() {
        assert_eq!(
            Step::Hold.sources_where("state"),
            "(state = 'sending' OR state = 'running' OR state = 'done')"
        );
        assert_eq!(
            Step::Accept.sources_where("r.state"),
            "(r.state = 'sending')"
        );
    }

    #[test]
    fn batch_moves_table() {
        use BatchState::*;
        // Rows: from; columns: to, in `BatchState::ALL` order.
        let table = [
            (Sending, "SURU.RF."),
            (Uploaded, "...UD..."),
            (Reconcile, "....D..."),
            (Unconfirmed, ".......A"),
            (Done, "........"),
            (Refused, "........"),
            (Failed, "........"),
            (Abandoned, "........"),
        ];
        for (from, row) in table {
            let allowed: Vec<bool> = BatchState::ALL
                .iter()
                .map(|to| from.can_become(*to))
                .collect();
            let expected: Vec<bool> = row.chars().map(|c| c != '.').collect();
            assert_eq!(allowed, expected, "{from:?}");
        }
        let forgettable: Vec<_> = BatchState::ALL
            .into_iter()
            .filter(|s| s.can_be_forgotten())
            .collect();
        assert_eq!(forgettable, [Sending, Reconcile]);
        assert_eq!(BatchState::sources_sql(Done), "'uploaded', 'reconcile'");
        assert_eq!(Step::Hold.sources_sql(), "'sending', 'running', 'done'");
    }
}
