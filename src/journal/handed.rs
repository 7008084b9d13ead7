//! The export's rows handed on, once the merge took them, to a second reader on a thread of
//! its own, then back to the export's reading thread to be filled again. The results store
//! keeps the job's answers from them: reading them from the journal a second time, beside
//! the output, was a second pass over every row and its batch's kept outcomes (a 10M-row
//! job's 20-30 s, most of it after the output was written).

use std::borrow::Cow;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use super::reader::ExportRow;
use super::reuse::REUSABLE;
use super::{Journal, JournalError, RowState, fields};
use crate::outcome::Status;

/// The chunks handed on and not yet taken: how far the second reader may fall behind the
/// merge before the merge waits for it. A chunk is [`super::reader`]'s 2,048 rows. The
/// store's thread yields the CPU to the output's and catches up where the output leaves a
/// core idle, so it falls behind at times: 32 chunks cost about 27 MB of peak memory at ten
/// million rows.
const HANDED_AHEAD: usize = 32;

enum Handing {
    Rows(Vec<ExportRow>),
    /// The export read every row and the merge took each.
    End,
}

/// The export's side, given to [`super::Journal::export_ahead`].
pub struct HandOn {
    pub(super) to: Passing,
    /// The chunks the second reader is done with, for the export to fill again.
    pub(super) back: Receiver<Vec<ExportRow>>,
    /// Where the merge sends back a chunk the second reader no longer takes.
    pub(super) spent: Sender<Vec<ExportRow>>,
}

/// Where the merge passes the chunks it took.
pub(super) struct Passing(SyncSender<Handing>);

/// The second reader's side.
pub struct Handed {
    from: Receiver<Handing>,
    back: Sender<Vec<ExportRow>>,
}

/// A way to hand the export's rows on: the export takes the first, the second reader the
/// second.
pub fn hand_on() -> (HandOn, Handed) {
    let (to, from) = mpsc::sync_channel(HANDED_AHEAD);
    let (spent, back) = mpsc::channel();
    let hand_on = HandOn {
        to: Passing(to),
        back,
        spent: spent.clone(),
    };
    (hand_on, Handed { from, back: spent })
}

impl Passing {
    /// Hands on a chunk the merge took; gives back one the second reader no longer takes
    /// (it stopped on an error).
    pub(super) fn pass(&self, chunk: Vec<ExportRow>) -> Option<Vec<ExportRow>> {
        match self.0.send(Handing::Rows(chunk)) {
            Ok(()) => None,
            Err(mpsc::SendError(Handing::Rows(chunk))) => Some(chunk),
            Err(_) => None,
        }
    }

    /// Says the rows handed on were all of them.
    pub(super) fn end(self) {
        let _ = self.0.send(Handing::End);
    }
}

impl Handed {
    /// Gives `f` each row handed on, in key order, and says whether they were every row: not
    /// when the export stopped early (an error) or never read (an output left as it was).
    /// `f`'s first error stops the taking, and the export goes on without it.
    pub fn each<E>(self, mut f: impl FnMut(&ExportRow) -> Result<(), E>) -> Result<bool, E> {
        for handing in &self.from {
            match handing {
                Handing::Rows(chunk) => {
                    chunk.iter().try_for_each(&mut f)?;
                    let _ = self.back.send(chunk);
                }
                Handing::End => return Ok(true),
            }
        }
        Ok(false)
    }
}

impl ExportRow {
    /// The identifier's hash, the status and the time of a final answer this job obtained
    /// itself (not reused, not a duplicate's copy), which the results store keeps for later
    /// jobs; `None` for every other row: the rows [`super::Journal::obtained_answers`] gives.
    pub fn obtained(&self) -> Option<([u8; 16], Status, &str)> {
        let status = self.status.filter(|s| REUSABLE.contains(s))?;
        if self.state != RowState::Done || self.reused || self.duplicate_of.is_some() {
            return None;
        }
        Some((self.ident?, status, self.checked_at.as_deref()?))
    }
}

/// An exported row's fields as the JSON array of their values by another's numbers (the
/// results store's), as [`super::values_by_number`] makes it: the row's own array, when the
/// other numbers the journal's names as the journal does (the usual case, as
/// [`super::Journal::obtained_answers`] has it); otherwise from the row's fields, in
/// [`super::Journal::field_names`]'s order, each field's number found once rather than by name
/// for every row.
pub struct ByNumbers {
    same: bool,
    at: Vec<Option<usize>>,
}

impl Journal {
    /// The export's fields by `to`'s numbers; a name `to` lacks is left out.
    pub fn by_numbers(&self, to: &[String]) -> Result<ByNumbers, JournalError> {
        let numbered = fields::numbered(self.meta("format")?.as_deref());
        let names = fields::numbered_names(&self.conn).map_err(|e| self.sql(e))?;
        let same = fields::Renumber::new(numbered, names, to).same();
        let at = self
            .field_names()?
            .iter()
            .map(|name| to.iter().position(|t| t == name))
            .collect();
        Ok(ByNumbers { same, at })
    }
}

impl ByNumbers {
    /// `row`'s values; borrowed from the row where they go over as they are, which is why
    /// the row keeps its fields' text beside the values the merge reads.
    pub fn values<'r>(&self, row: &'r ExportRow) -> Cow<'r, str> {
        if self.same {
            return Cow::Borrowed(row.fields_text.as_deref().unwrap_or("[]"));
        }
        let mut values: Vec<Option<&str>> = Vec::new();
        for (value, at) in row.fields.iter().zip(&self.at) {
            if let (Some(value), Some(at)) = (value, *at) {
                if values.len() <= at {
                    values.resize(at + 1, None);
                }
                values[at] = Some(value);
            }
        }
        Cow::Owned(serde_json::to_string(&values).unwrap_or_default())
    }
}
