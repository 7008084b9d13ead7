//! A check's own result fields, as a row stores them. A journal of format 2 numbers the
//! fields' names in `field_names` as they are first recorded, and a row keeps only its
//! values, at their numbers (`["true","USER",null,"User"]`); format 1 kept every name in every
//! row (`[["account_exists","true"],...]`), about 60 bytes a row more for the same fields,
//! which each page written again at every change of the row carried.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::outcome::RowKey;

/// The format whose rows keep their fields by number.
pub(super) const NUMBERED: &str = "2";
/// The format whose rows keep their fields by name: journals made before numbering.
pub(super) const NAMED: &str = "1";

/// The names the writer has numbered, and the first row each was seen in.
pub(super) struct FieldNames {
    /// `false` in a journal of format 1: its rows keep naming their fields.
    numbered: bool,
    by_name: HashMap<String, usize>,
    first: Vec<i64>,
}

impl FieldNames {
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<FieldNames> {
        let format: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let mut names = FieldNames {
            numbered: numbered(format.as_deref()),
            by_name: HashMap::new(),
            first: Vec::new(),
        };
        let mut st = conn.prepare("SELECT name, first_key FROM field_names ORDER BY idx")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (name, first) = row?;
            names.by_name.insert(name, names.first.len());
            names.first.push(first);
        }
        Ok(names)
    }

    /// `fields` as the row `key` stores them, numbering names seen for the first time in the
    /// same transaction.
    pub(super) fn encode(
        &mut self,
        tx: &Transaction,
        key: RowKey,
        fields: &[(String, String)],
    ) -> rusqlite::Result<String> {
        if !self.numbered {
            return Ok(serde_json::to_string(fields).unwrap_or_default());
        }
        let key = key.0 as i64;
        let mut values: Vec<Option<&str>> = Vec::new();
        for (pos, (name, value)) in fields.iter().enumerate() {
            let idx = match self.by_name.get(name) {
                Some(&idx) => {
                    if key < self.first[idx] {
                        tx.prepare_cached(
                            "UPDATE field_names SET first_key = ?2, first_pos = ?3 WHERE idx = ?1",
                        )?
                        .execute(params![idx as i64, key, pos as i64])?;
                        self.first[idx] = key;
                    }
                    idx
                }
                None => {
                    let idx = self.first.len();
                    tx.prepare_cached(
                        "INSERT INTO field_names (idx, name, first_key, first_pos)
                         VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![idx as i64, name, key, pos as i64])?;
                    self.by_name.insert(name.clone(), idx);
                    self.first.push(key);
                    idx
                }
            };
            if values.len() <= idx {
                values.resize(idx + 1, None);
            }
            values[idx] = Some(value);
        }
        Ok(serde_json::to_string(&values).unwrap_or_default())
    }
}

/// Whether a journal of `format` keeps its rows' fields by number: every format after 1.
pub(super) fn numbered(format: Option<&str>) -> bool {
    format != Some(NAMED)
}

/// The numbered names, by number, for reading rows back.
pub(super) fn numbered_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare("SELECT name FROM field_names ORDER BY idx")?;
    st.query_map([], |r| r.get(0))?.collect()
}

/// The names in the order they first appear over the rows in key order, and within a row in
/// its own order: the output's columns. A name stays once numbered, even when the row it came
/// from is given another outcome later.
pub(super) fn names_in_row_order(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare("SELECT name FROM field_names ORDER BY first_key, first_pos")?;
    st.query_map([], |r| r.get(0))?.collect()
}

/// A row's stored fields as (name, value) pairs, in either format; a number without a name
/// (which a damaged journal could hold) is left out.
pub(super) fn decode(text: &str, names: &[String]) -> Vec<(String, String)> {
    if text.starts_with("[[") {
        return serde_json::from_str(text).unwrap_or_default();
    }
    let values: Vec<Option<String>> = serde_json::from_str(text).unwrap_or_default();
    values
        .into_iter()
        .zip(names)
        .filter_map(|(v, name)| Some((name.clone(), v?)))
        .collect()
}
