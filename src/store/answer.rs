//! An answer as the results store's row holds it: its outcome and result fields as a JSON
//! array, the fields by the scope's numbers, the time in the row's `obtained_at` column.

use crate::journal::Answer;
use crate::outcome::{Outcome, RowKey, Status};
use crate::util::time::{rfc3339, rfc3339_unix};

/// An answer as the store keeps it: `[status, reason, message, provider_status, request_id,
/// [field values by number]]`, `values` being that last array (its fields numbered by the
/// scope's names, [`crate::journal::values_by_number`]). Its `checked_at` is the row's
/// `obtained_at`, unless `with_time` ([`Times::of`]): a time written otherwise (a state of an
/// older version) goes in too, before the values, as the first layout had it.
pub(super) fn encode(a: &Answer, with_time: bool, values: &str) -> String {
    let o = &a.outcome;
    // A tuple serializes as the array, without a `Value` built for each answer.
    let (s, r, m, p, q) = (
        o.status.as_str(),
        &o.reason,
        &o.message,
        &o.provider_status,
        &o.request_id,
    );
    let head = if with_time {
        serde_json::to_string(&(s, r, m, p, q, &a.checked_at))
    } else {
        serde_json::to_string(&(s, r, m, p, q))
    };
    let mut text = head.unwrap_or_default();
    // The values go in whole before the array's closing bracket.
    text.pop();
    text.push(',');
    text.push_str(values);
    text.push(']');
    text
}

/// The times of a job's answers, which come many to a time (a batch's rows share its): each
/// is parsed, and formatted back, once for each run of consecutive answers that share it.
#[derive(Default)]
pub(super) struct Times {
    last: Option<(String, Option<(i64, bool)>)>,
}

impl Times {
    /// `checked_at` in Unix seconds, the row's `obtained_at`, and whether the answer's text
    /// must carry it too: only when the seconds do not format back to exactly it.
    pub(super) fn of(&mut self, checked_at: &str) -> Option<(i64, bool)> {
        if let Some((text, known)) = &self.last
            && text == checked_at
        {
            return *known;
        }
        let known = rfc3339_unix(checked_at)
            .map(|unix| (unix, self::checked_at(unix).as_deref() != Some(checked_at)));
        self.last = Some((checked_at.to_string(), known));
        known
    }
}

/// Unix seconds as `bv_checked_at` has them.
fn checked_at(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .map(rfc3339)
}

/// The answer [`encode`] kept, obtained at `obtained`, for row `key`; `None` for one that is
/// not a reusable outcome.
pub(super) fn decode(
    text: &str,
    obtained: i64,
    names: &[String],
    key: RowKey,
    ident: [u8; 16],
) -> Option<Answer> {
    type Compact = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Vec<Option<String>>,
    );
    // The time before the values: written when `obtained_at` would not give it back as it was.
    type WithTime = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
        Vec<Option<String>>,
    );
    let (status, reason, message, provider_status, request_id, checked_at, values) =
        match serde_json::from_str::<Compact>(text) {
            Ok((s, r, m, p, q, values)) => (s, r, m, p, q, checked_at(obtained)?, values),
            Err(_) => serde_json::from_str::<WithTime>(text).ok()?,
        };
    let status = Status::parse(&status).filter(|s| crate::journal::REUSABLE.contains(s))?;
    let fields = values
        .into_iter()
        .zip(names)
        .filter_map(|(v, n)| Some((n.clone(), v?)))
        .collect();
    Some(Answer {
        key,
        ident,
        outcome: Outcome {
            status,
            reason,
            message,
            provider_status,
            request_id,
            fields,
        },
        checked_at,
    })
}
