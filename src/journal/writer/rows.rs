//! The writer's moves of rows and the outcomes they take, checked against their lifecycle in
//! `state`.

use std::sync::LazyLock;

use rusqlite::{CachedStatement, OptionalExtension, Transaction, params};

use super::batch::Unwritten;
use super::{OtpChange, WriteError};
use crate::journal::fields::FieldNames;
use crate::journal::kept::KeptOutcome;
use crate::journal::state::Step;
use crate::journal::{OtpPhase, RowState};
use crate::outcome::{Outcome, RowKey};

/// The statement that moves a row by a step the writer makes with [`set_state`], built once.
fn move_sql(step: Step) -> &'static str {
    static MOVES: LazyLock<Vec<(Step, String)>> = LazyLock::new(|| {
        [Step::Intent, Step::Revert, Step::Accept, Step::Hold]
            .into_iter()
            .map(|step| {
                let sql = format!(
                    "UPDATE rows SET state = ?2, batch_id = coalesce(?3, batch_id),
                            request_id = coalesce(?4, request_id),
                            attempts = coalesce(?5, attempts)
                     WHERE row_key = ?1 AND {}",
                    step.sources_where("state")
                );
                (step, sql)
            })
            .collect()
    });
    MOVES
        .iter()
        .find(|(s, _)| *s == step)
        .map(|(_, sql)| sql.as_str())
        .expect("every step set_state takes has its statement")
}

/// The statement that records a row's outcome, built once. A member row of an unwritten
/// batch takes the batch with it (?13), once the batch was accepted the attempts of its
/// upload (?12) and no request id of an earlier outcome (?11), and no time of its own (?7)
/// when it has the batch's.
pub(super) static FINISH_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE rows SET state = ?10, status = ?2, reason = ?3, message = ?4,
                provider_status = ?5,
                request_id = CASE WHEN ?11 THEN ?6 ELSE coalesce(?6, request_id) END,
                checked_at = ?7, fields = ?8, attempts = coalesce(?9, ?12, attempts),
                batch_id = coalesce(?13, batch_id)
         WHERE row_key = ?1 AND {}",
        Step::Finish.sources_where("state")
    )
});

/// Moves rows by `step`, only from the states it may start from.
pub(super) fn set_state(
    tx: &Transaction,
    keys: &[RowKey],
    step: Step,
    batch_id: Option<i64>,
    request_id: Option<&str>,
    attempts: Option<u32>,
) -> Result<(), WriteError> {
    let mut st = tx.prepare_cached(move_sql(step))?;
    for k in keys {
        let moved = st.execute(params![
            k.0 as i64,
            step.target(),
            batch_id,
            request_id,
            attempts.map(i64::from)
        ])?;
        if moved == 0 {
            refuse_row(tx, *k, step)?;
        }
    }
    Ok(())
}

/// Records the row `key`'s outcome with `finish`, the transaction's [`FINISH_SQL`].
pub(super) fn done(
    tx: &Transaction,
    finish: &mut CachedStatement,
    (names, unwritten): (&mut FieldNames, &mut Unwritten),
    key: RowKey,
    outcome: &Outcome,
    attempts: Option<u32>,
    now: &str,
) -> Result<(), WriteError> {
    let member = unwritten.member(key);
    if member.is_none() {
        unwritten.outcomes.own(tx, &[key])?;
    }
    let accepted = member.and_then(|(_, accepted)| accepted);
    let own_time = match member {
        Some((batch_id, _)) if unwritten.answered_at(tx, batch_id, now)? => None,
        _ => Some(now),
    };
    let fields = if outcome.fields.is_empty() {
        None
    } else {
        Some(names.encode(tx, key, &outcome.fields)?)
    };
    // A row of an accepted batch in flight keeps its outcome with the batch: its record, as
    // planning wrote it, is not written again (see `kept`).
    if let (Some((batch_id, Some(accepted))), true) = (member, unwritten.kept) {
        let o = outcome;
        let leader = unwritten.leads(batch_id, key);
        unwritten.outcomes.keep(
            key,
            KeptOutcome {
                batch_id,
                status: o.status.as_str().to_string(),
                reason: o.reason.clone(),
                message: o.message.clone(),
                provider_status: o.provider_status.clone(),
                request_id: o.request_id.clone(),
                checked_at: own_time.map(str::to_string),
                fields,
                attempts: attempts.unwrap_or(accepted),
            },
            leader,
        );
        unwritten.settled(tx, key)?;
        return Ok(());
    }
    let moved = finish.execute(params![
        key.0 as i64,
        outcome.status.as_str(),
        outcome.reason,
        outcome.message,
        outcome.provider_status,
        outcome.request_id,
        own_time,
        fields,
        attempts.map(i64::from),
        Step::Finish.target(),
        accepted.is_some(),
        accepted.map(i64::from),
        member.map(|(b, _)| b),
    ])?;
    if moved == 0 {
        refuse_row(tx, key, Step::Finish)?;
    }
    unwritten.settled(tx, key)?;
    Ok(())
}

/// A row `step` did not move: refused when it is in a state the step cannot start from. A
/// row the journal does not have is left alone, as it always was.
pub(super) fn refuse_row(tx: &Transaction, key: RowKey, step: Step) -> Result<(), WriteError> {
    let from: Option<RowState> = tx
        .query_row(
            "SELECT state FROM rows WHERE row_key = ?1",
            [key.0 as i64],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(from) = from {
        step.move_from(key, from)?;
    }
    Ok(())
}

pub(super) fn otp_change(
    tx: &Transaction,
    key: RowKey,
    change: &OtpChange,
) -> Result<(), WriteError> {
    let key = key.0 as i64;
    match change {
        OtpChange::Sent {
            handle,
            expires_at,
            stale,
        } => tx.execute(
            "INSERT INTO otp_requests (row_key, handle, expires_at, phase, tried, sent)
             VALUES (?1, ?2, ?3, ?5, ?4, 1)
             ON CONFLICT (row_key) DO UPDATE SET handle = excluded.handle,
                 expires_at = excluded.expires_at, phase = excluded.phase,
                 tried = excluded.tried, sent = sent + 1",
            params![
                key,
                handle,
                expires_at,
                stale.as_deref().unwrap_or_default(),
                OtpPhase::Awaiting
            ],
        ),
        OtpChange::Refused(digest) => tx.execute(
            "UPDATE otp_requests SET phase = ?3,
                    tried = CASE WHEN ?2 IS NULL THEN tried ELSE ltrim(tried || ' ' || ?2) END
             WHERE row_key = ?1",
            params![key, digest, OtpPhase::Awaiting],
        ),
        OtpChange::Verifying | OtpChange::Closed => {
            let phase = if matches!(change, OtpChange::Verifying) {
                OtpPhase::Verifying
            } else {
                OtpPhase::Closed
            };
            tx.execute(
                "UPDATE otp_requests SET phase = ?2 WHERE row_key = ?1",
                params![key, phase],
            )
        }
    }?;
    Ok(())
}
