//! The outcomes a batch's rows took, kept with the batch (`kept`) in a journal of format 4,
//! the rows' own records left as planning wrote them.
//!
//! Writing each outcome into its row rewrote every page of `rows` once into the WAL and once
//! more into the database: two copies of the whole table, a third of what a batch job wrote to
//! disk (a million-row job, about 200 MB of its 590). Kept here, compressed a commit's rows of
//! a batch at a time, the same outcomes take a few bytes a row, written once.
//!
//! A row's kept outcome is its outcome: every reader of a row's state reads it through
//! [`kept_in`], and a row holds one at most. Before the writer changes a row whose outcome is
//! kept (a pending row polled again, an error sent again), it writes the kept outcome into the
//! row and takes it out of its chunk ([`Index::own`]), so that the row's own record is whole
//! again.
//!
//! A row that others repeat (a duplicate's leader) keeps its outcome alone, by its key
//! (`kept_leaders`): each duplicate reads its leader's outcome, anywhere before it, which a
//! chunk would give only by being read whole again for each.

use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::RowState;
use super::members::put_uint;
use crate::outcome::RowKey;

/// zstd's fastest level: a chunk's outcomes repeat their statuses, messages and field names,
/// which any level finds, and the writer compresses every batch result.
const LEVEL: i32 = 1;

/// The table, and the index its readers find the chunks over a range of keys by.
pub(super) const TABLE: &str = "CREATE TABLE IF NOT EXISTS kept (
                     chunk INTEGER PRIMARY KEY,
                     batch_id INTEGER NOT NULL,
                     first_key INTEGER NOT NULL,
                     last_key INTEGER NOT NULL,
                     outcomes BLOB NOT NULL) STRICT;
                 CREATE INDEX IF NOT EXISTS kept_span ON kept (first_key, last_key);
                 CREATE TABLE IF NOT EXISTS kept_leaders (
                     row_key INTEGER PRIMARY KEY,
                     batch_id INTEGER NOT NULL,
                     outcome BLOB NOT NULL) STRICT;";

/// A row's outcome as its batch keeps it: what the row's record would have said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeptOutcome {
    pub(super) batch_id: i64,
    pub(super) status: String,
    pub(super) reason: Option<String>,
    pub(super) message: Option<String>,
    pub(super) provider_status: Option<String>,
    /// Its own request id; none when it takes its batch's.
    pub(super) request_id: Option<String>,
    /// Its own time; none when it takes its batch's (`answered_at`).
    pub(super) checked_at: Option<String>,
    /// As [`super::fields::FieldNames::encode`] gives them.
    pub(super) fields: Option<String>,
    pub(super) attempts: u32,
}

impl KeptOutcome {
    /// The state of a row with a kept outcome.
    pub(super) const STATE: RowState = RowState::Done;
}

fn put_text(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(t) => {
            put_uint(out, t.len() as u64 + 1);
            out.extend_from_slice(t.as_bytes());
        }
    }
}

fn damaged() -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Blob,
        "a batch's kept outcomes are damaged".into(),
    )
}

/// Reads what [`encode`] wrote, field by field.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn uint(&mut self) -> rusqlite::Result<u64> {
        let (mut n, mut shift) = (0u64, 0u32);
        loop {
            let (&byte, rest) = self.0.split_first().ok_or_else(damaged)?;
            self.0 = rest;
            if shift >= 64 {
                return Err(damaged());
            }
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
            shift += 7;
        }
    }

    fn bytes(&mut self) -> rusqlite::Result<Option<&[u8]>> {
        let len = self.uint()?;
        if len == 0 {
            return Ok(None);
        }
        let len = usize::try_from(len - 1).map_err(|_| damaged())?;
        if len > self.0.len() {
            return Err(damaged());
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(Some(text))
    }

    fn text(&mut self) -> rusqlite::Result<Option<String>> {
        match self.bytes()? {
            None => Ok(None),
            Some(text) => String::from_utf8(text.to_vec())
                .map(Some)
                .map_err(|_| damaged()),
        }
    }
}

/// The texts of an outcome after its status, and its attempts.
const TEXTS: usize = 6;

/// Outcomes in ascending key order (each key as its distance from the one before), one
/// batch's, compressed.
fn encode(rows: &[(RowKey, KeptOutcome)]) -> rusqlite::Result<Vec<u8>> {
    zstd::bulk::compress(&encode_raw(rows), LEVEL)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
}

/// [`encode`]'s outcomes, not compressed: a leader's, alone.
fn encode_raw(rows: &[(RowKey, KeptOutcome)]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(rows.len() * 64);
    let mut last = 0u64;
    for (key, o) in rows {
        put_uint(&mut raw, key.0 - last);
        last = key.0;
        put_text(&mut raw, Some(&o.status));
        for text in [
            &o.reason,
            &o.message,
            &o.provider_status,
            &o.request_id,
            &o.checked_at,
            &o.fields,
        ] {
            put_text(&mut raw, text.as_deref());
        }
        put_uint(&mut raw, u64::from(o.attempts));
    }
    raw
}

/// The outcomes [`encode`] wrote for the batch `batch_id`, of the rows with keys in `keys`
/// (a reader's span of a chunk read whole). A damaged chunk is an error, never fewer rows: a
/// row left out would read as planned, and be sent again.
fn decode(
    blob: &[u8],
    batch_id: i64,
    keys: RangeInclusive<RowKey>,
) -> rusqlite::Result<Vec<(RowKey, KeptOutcome)>> {
    let raw = zstd::stream::decode_all(blob).map_err(|_| damaged())?;
    decode_raw(&raw, batch_id, keys)
}

/// What [`encode_raw`] wrote, as [`decode`] reads it.
fn decode_raw(
    raw: &[u8],
    batch_id: i64,
    keys: RangeInclusive<RowKey>,
) -> rusqlite::Result<Vec<(RowKey, KeptOutcome)>> {
    let mut at = Cursor(raw);
    let mut rows = Vec::new();
    let mut last = 0u64;
    while !at.0.is_empty() {
        last = last.checked_add(at.uint()?).ok_or_else(damaged)?;
        if !keys.contains(&RowKey(last)) {
            at.bytes()?.ok_or_else(damaged)?;
            for _ in 0..TEXTS {
                at.bytes()?;
            }
            at.uint()?;
            continue;
        }
        let status = at.text()?.ok_or_else(damaged)?;
        let outcome = KeptOutcome {
            batch_id,
            status,
            reason: at.text()?,
            message: at.text()?,
            provider_status: at.text()?,
            request_id: at.text()?,
            checked_at: at.text()?,
            fields: at.text()?,
            attempts: u32::try_from(at.uint()?).map_err(|_| damaged())?,
        };
        rows.push((RowKey(last), outcome));
    }
    Ok(rows)
}

/// Every key: a chunk read whole.
const ALL: RangeInclusive<RowKey> = RowKey(0)..=RowKey(u64::MAX);

/// Whether the journal has the table: a journal made before format 4, read by `status`
/// without being opened for a run, does not.
fn has_table(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'kept'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )
}

/// The kept outcomes of a run of keys, in key order: looked up by key, or walked beside the
/// rows. A sorted vector, not a map: readers of ten million rows built and dropped a tree
/// node for each, an eighth of the export's time.
#[derive(Debug, Default)]
pub(super) struct KeptRows(Vec<(RowKey, KeptOutcome)>);

impl KeptRows {
    pub(super) fn get(&self, key: &RowKey) -> Option<&KeptOutcome> {
        self.0
            .binary_search_by_key(key, |(k, _)| *k)
            .ok()
            .map(|at| &self.0[at].1)
    }

    pub(super) fn contains_key(&self, key: &RowKey) -> bool {
        self.get(key).is_some()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for KeptRows {
    type Item = (RowKey, KeptOutcome);
    type IntoIter = std::vec::IntoIter<(RowKey, KeptOutcome)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// The kept outcomes of the rows with keys in `lo..=hi`.
pub(super) fn kept_in(conn: &Connection, lo: RowKey, hi: RowKey) -> rusqlite::Result<KeptRows> {
    let mut kept = Vec::new();
    if !has_table(conn)? {
        return Ok(KeptRows(kept));
    }
    let mut st = conn.prepare_cached(
        "SELECT batch_id, outcomes FROM kept WHERE first_key <= ?2 AND last_key >= ?1
         ORDER BY first_key",
    )?;
    let range = params![lo.0 as i64, hi.0 as i64];
    let mut chunks = st.query(range)?;
    while let Some(r) = chunks.next()? {
        let blob: Vec<u8> = r.get(1)?;
        let rows = decode(&blob, r.get(0)?, lo..=hi)?;
        if kept.is_empty() {
            kept = rows;
        } else {
            kept.extend(rows);
        }
    }
    let mut leaders = conn.prepare_cached(
        "SELECT batch_id, outcome FROM kept_leaders WHERE row_key BETWEEN ?1 AND ?2",
    )?;
    let mut rows = leaders.query(range)?;
    while let Some(r) = rows.next()? {
        let blob: Vec<u8> = r.get(1)?;
        kept.extend(decode_raw(&blob, r.get(0)?, lo..=hi)?);
    }
    // Each chunk's keys ascend, and chunks mostly follow one another: the stable sort finds
    // the runs and merges them, and moves nothing when they already follow. A row holds one
    // kept outcome at most; were one found twice, the one read last stands, as it did in a
    // map.
    kept.sort_by_key(|(k, _)| *k);
    if kept.windows(2).any(|w| w[0].0 == w[1].0) {
        kept.reverse();
        kept.dedup_by_key(|(k, _)| *k);
        kept.reverse();
    }
    Ok(KeptRows(kept))
}

/// [`kept_in`] over a run of keys in ascending order, from its first to its last; none for an
/// empty run.
pub(super) fn kept_over(
    conn: &Connection,
    first: Option<RowKey>,
    last: Option<RowKey>,
) -> rusqlite::Result<KeptRows> {
    match (first, last) {
        (Some(lo), Some(hi)) => kept_in(conn, lo, hi),
        _ => Ok(KeptRows::default()),
    }
}

/// The kept outcome of the row `key`, a duplicate's leader.
fn leader(conn: &Connection, key: RowKey) -> rusqlite::Result<Option<KeptOutcome>> {
    let found: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT batch_id, outcome FROM kept_leaders WHERE row_key = ?1")?
        .query_row([key.0 as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((batch_id, blob)) = found else {
        return Ok(None);
    };
    Ok(decode_raw(&blob, batch_id, key..=key)?
        .pop()
        .map(|(_, o)| o))
}

/// The rows that others repeat, of `keys`: their outcomes are kept by their keys.
pub(super) fn leaders_among(
    conn: &Connection,
    keys: &[RowKey],
) -> rusqlite::Result<foldhash::HashSet<RowKey>> {
    let (Some(lo), Some(hi)) = (keys.iter().min(), keys.iter().max()) else {
        return Ok(Default::default());
    };
    let members: foldhash::HashSet<RowKey> = keys.iter().copied().collect();
    let mut st = conn.prepare_cached(
        "SELECT DISTINCT dup_of FROM rows WHERE dup_of IS NOT NULL AND dup_of BETWEEN ?1 AND ?2",
    )?;
    let found = st.query_map(params![lo.0 as i64, hi.0 as i64], |r| {
        r.get::<_, i64>(0).map(|k| RowKey(k as u64))
    })?;
    let mut leaders = foldhash::HashSet::default();
    for key in found {
        let key = key?;
        if members.contains(&key) {
            leaders.insert(key);
        }
    }
    Ok(leaders)
}

/// Every chunk's rows in turn, each with its keys, for a reader that takes them all.
pub(super) fn each_chunk(
    conn: &Connection,
    mut f: impl FnMut(Vec<(RowKey, KeptOutcome)>) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    if !has_table(conn)? {
        return Ok(());
    }
    let mut st = conn.prepare("SELECT batch_id, outcomes FROM kept ORDER BY first_key")?;
    let mut chunks = st.query([])?;
    while let Some(r) = chunks.next()? {
        let blob: Vec<u8> = r.get(1)?;
        f(decode(&blob, r.get(0)?, ALL)?)?;
    }
    // The leaders, as chunks of a few thousand.
    let mut st = conn.prepare("SELECT batch_id, outcome FROM kept_leaders ORDER BY row_key")?;
    let mut rows = st.query([])?;
    let mut leaders = Vec::new();
    while let Some(r) = rows.next()? {
        let blob: Vec<u8> = r.get(1)?;
        leaders.extend(decode_raw(&blob, r.get(0)?, ALL)?);
        if leaders.len() >= 4096 {
            f(std::mem::take(&mut leaders))?;
        }
    }
    if !leaders.is_empty() {
        f(leaders)?;
    }
    Ok(())
}

/// The kept outcomes of a reader walking the rows in key order: those of a span of keys at a
/// time, read again once the walk passes it.
pub(super) struct Window {
    lo: RowKey,
    hi: RowKey,
    rows: KeptRows,
    /// Whether the journal keeps any outcome, and any of a leader: most journals of a per-row
    /// check keep none.
    any: bool,
    leaders: bool,
}

impl Window {
    /// Keys a span covers from the one that moved it: about a batch's chunk.
    const SPAN: u64 = 1 << 14;

    pub(super) fn new(conn: &Connection) -> rusqlite::Result<Window> {
        let exists = |table: &str| -> rusqlite::Result<bool> {
            conn.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), [], |r| {
                r.get(0)
            })
        };
        let kept = has_table(conn)?;
        let leaders = kept && exists("kept_leaders")?;
        Ok(Window {
            lo: RowKey(1),
            hi: RowKey(0),
            rows: KeptRows::default(),
            any: leaders || (kept && exists("kept")?),
            leaders,
        })
    }

    /// The kept outcome of the row `key`; the keys asked for go up.
    pub(super) fn get(
        &mut self,
        conn: &Connection,
        key: RowKey,
    ) -> rusqlite::Result<Option<&KeptOutcome>> {
        if !self.any {
            return Ok(None);
        }
        if key < self.lo || key > self.hi {
            self.lo = key;
            self.hi = RowKey(key.0.saturating_add(Self::SPAN));
            self.rows = kept_in(conn, self.lo, self.hi)?;
        }
        Ok(self.rows.get(&key))
    }

    /// The kept outcome of the row `key`, a duplicate's leader, anywhere before.
    pub(super) fn leader(
        &self,
        conn: &Connection,
        key: RowKey,
    ) -> rusqlite::Result<Option<KeptOutcome>> {
        if !self.leaders {
            return Ok(None);
        }
        leader(conn, key)
    }
}

/// A chunk as the writer finds it: which keys it may hold.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    id: i64,
    first: RowKey,
    last: RowKey,
}

/// The writer's view of the kept outcomes: the span of each chunk, to find without reading
/// whether a row it is to change has one, and the outcomes of the transaction being built.
#[derive(Default)]
pub(super) struct Index {
    /// By first key.
    chunks: Vec<Chunk>,
    /// The highest last key of `chunks` up to each.
    reach: Vec<RowKey>,
    /// The rows whose outcomes are kept alone, as leaders.
    leaders: BTreeSet<RowKey>,
    /// This transaction's, by batch, stored as its chunks when it commits, and its leaders'.
    pending: HashMap<i64, Vec<(RowKey, KeptOutcome)>>,
    pending_keys: HashMap<RowKey, i64>,
    pending_leaders: HashMap<RowKey, KeptOutcome>,
}

impl Index {
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Index> {
        let mut index = Index::default();
        if !has_table(conn)? {
            return Ok(index);
        }
        let mut st = conn.prepare("SELECT chunk, first_key, last_key FROM kept")?;
        let chunks = st.query_map([], |r| {
            Ok(Chunk {
                id: r.get(0)?,
                first: RowKey(r.get::<_, i64>(1)? as u64),
                last: RowKey(r.get::<_, i64>(2)? as u64),
            })
        })?;
        for chunk in chunks {
            index.chunks.push(chunk?);
        }
        index.sort();
        let mut st = conn.prepare("SELECT row_key FROM kept_leaders")?;
        for key in st.query_map([], |r| r.get::<_, i64>(0))? {
            index.leaders.insert(RowKey(key? as u64));
        }
        Ok(index)
    }

    fn sort(&mut self) {
        self.chunks.sort_by_key(|c| (c.first, c.id));
        self.reach.clear();
        let mut reach = RowKey(0);
        for c in &self.chunks {
            reach = reach.max(c.last);
            self.reach.push(reach);
        }
    }

    /// Keeps the outcome of the row `key`, with the transaction: alone when others repeat
    /// the row (`leader`).
    pub(super) fn keep(&mut self, key: RowKey, outcome: KeptOutcome, leader: bool) {
        if leader {
            self.pending_leaders.insert(key, outcome);
            return;
        }
        self.pending_keys.insert(key, outcome.batch_id);
        self.pending
            .entry(outcome.batch_id)
            .or_default()
            .push((key, outcome));
    }

    /// Stores the transaction's kept outcomes, a chunk a batch.
    pub(super) fn store(&mut self, tx: &Transaction) -> rusqlite::Result<()> {
        for (key, outcome) in std::mem::take(&mut self.pending_leaders) {
            let batch_id = outcome.batch_id;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO kept_leaders (row_key, batch_id, outcome)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                key.0 as i64,
                batch_id,
                encode_raw(&[(key, outcome)])
            ])?;
            self.leaders.insert(key);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut added = false;
        let mut batches: Vec<i64> = self.pending.keys().copied().collect();
        batches.sort_unstable();
        for batch_id in batches {
            let Some(mut rows) = self.pending.remove(&batch_id) else {
                continue;
            };
            rows.sort_by_key(|(k, _)| *k);
            rows.dedup_by_key(|(k, _)| *k);
            let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                continue;
            };
            let (first, last) = (first.0, last.0);
            tx.prepare_cached(
                "INSERT INTO kept (batch_id, first_key, last_key, outcomes) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                batch_id,
                first.0 as i64,
                last.0 as i64,
                encode(&rows)?
            ])?;
            self.chunks.push(Chunk {
                id: tx.last_insert_rowid(),
                first,
                last,
            });
            added = true;
        }
        self.pending_keys.clear();
        if added {
            self.sort();
        }
        Ok(())
    }

    /// Writes the kept outcomes of `keys` into their rows and takes them out of their chunks,
    /// before the writer changes the rows: a row's own record is then its whole state again.
    pub(super) fn own(&mut self, tx: &Transaction, keys: &[RowKey]) -> rusqlite::Result<()> {
        if self.chunks.is_empty()
            && self.pending_keys.is_empty()
            && self.leaders.is_empty()
            && self.pending_leaders.is_empty()
        {
            return Ok(());
        }
        for key in keys {
            if let Some(outcome) = self.pending_leaders.remove(key) {
                write_row(tx, *key, &outcome)?;
                continue;
            }
            if self.leaders.remove(key) {
                if let Some(outcome) = leader(tx, *key)? {
                    write_row(tx, *key, &outcome)?;
                }
                tx.prepare_cached("DELETE FROM kept_leaders WHERE row_key = ?1")?
                    .execute([key.0 as i64])?;
                continue;
            }
            if let Some(batch_id) = self.pending_keys.remove(key) {
                let rows = self.pending.entry(batch_id).or_default();
                if let Some(at) = rows.iter().position(|(k, _)| k == key) {
                    let (_, outcome) = rows.swap_remove(at);
                    write_row(tx, *key, &outcome)?;
                }
                continue;
            }
            for id in self.covering(*key) {
                if take(tx, id, *key)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The chunks whose span holds `key`.
    fn covering(&self, key: RowKey) -> Vec<i64> {
        let end = self.chunks.partition_point(|c| c.first <= key);
        let mut ids = Vec::new();
        for i in (0..end).rev() {
            if self.reach[i] < key {
                break;
            }
            if self.chunks[i].last >= key {
                ids.push(self.chunks[i].id);
            }
        }
        ids
    }
}

/// Writes the row `key`'s kept outcome into it from the chunk `chunk`, and takes it out of the
/// chunk; false when the chunk does not hold it.
fn take(tx: &Transaction, chunk: i64, key: RowKey) -> rusqlite::Result<bool> {
    let found: Option<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT batch_id, outcomes FROM kept WHERE chunk = ?1")?
        .query_row([chunk], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((batch_id, blob)) = found else {
        return Ok(false);
    };
    let mut rows = decode(&blob, batch_id, ALL)?;
    let Ok(at) = rows.binary_search_by_key(&key, |(k, _)| *k) else {
        return Ok(false);
    };
    let (_, outcome) = rows.remove(at);
    write_row(tx, key, &outcome)?;
    if rows.is_empty() {
        tx.prepare_cached("DELETE FROM kept WHERE chunk = ?1")?
            .execute([chunk])?;
    } else {
        tx.prepare_cached("UPDATE kept SET outcomes = ?2 WHERE chunk = ?1")?
            .execute(params![chunk, encode(&rows)?])?;
    }
    Ok(true)
}

/// The row's record as its kept outcome says, with its batch, and its time: the batch's when
/// it kept none of its own, which the row would lose with the batch once sent again.
fn write_row(tx: &Transaction, key: RowKey, o: &KeptOutcome) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE rows SET state = ?2, status = ?3, reason = ?4, message = ?5,
                provider_status = ?6, request_id = ?7,
                checked_at = coalesce(?8, (SELECT answered_at FROM batches WHERE batch_id = ?11)),
                fields = ?9, attempts = ?10, batch_id = ?11
         WHERE row_key = ?1",
    )?
    .execute(params![
        key.0 as i64,
        KeptOutcome::STATE,
        o.status,
        o.reason,
        o.message,
        o.provider_status,
        o.request_id,
        o.checked_at,
        o.fields,
        i64::from(o.attempts),
        o.batch_id,
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests;
