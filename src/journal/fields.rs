//! A check's own result fields, as a row stores them. A journal of format 2 numbers the
//! fields' names in `field_names` as they are first recorded, and a row keeps only its
//! values, at their numbers (`["true","USER",null,"User"]`); format 1 kept every name in every
//! row (`[["account_exists","true"],...]`), about 60 bytes a row more for the same fields,
//! which each page written again at every change of the row carried.

use foldhash::{HashMap, HashMapExt};
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
    /// The names of the last row encoded, in its order, with their numbers.
    last: Vec<(String, usize)>,
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
            last: Vec::new(),
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
    /// same transaction. A check gives nearly every row the same names in the same order, so
    /// the numbers of the last row's names are tried first: hashing every name of every row
    /// was the writer's largest cost in a 10M-row batch job.
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
        let same_names = self.last.len() == fields.len()
            && self
                .last
                .iter()
                .zip(fields)
                .all(|((n, _), (name, _))| n == name);
        if !same_names {
            self.last.clear();
            for (pos, (name, _)) in fields.iter().enumerate() {
                let idx = match self.by_name.get(name) {
                    Some(&idx) => idx,
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
                self.last.push((name.clone(), idx));
            }
        }
        let mut values: Vec<Option<&str>> = Vec::new();
        for (pos, ((_, idx), (_, value))) in self.last.iter().zip(fields).enumerate() {
            let idx = *idx;
            if key < self.first[idx] {
                tx.prepare_cached(
                    "UPDATE field_names SET first_key = ?2, first_pos = ?3 WHERE idx = ?1",
                )?
                .execute(params![idx as i64, key, pos as i64])?;
                self.first[idx] = key;
            }
            if values.len() <= idx {
                values.resize(idx + 1, None);
            }
            values[idx] = Some(value);
        }
        Ok(serde_json::to_string(&values).unwrap_or_default())
    }
}

/// `fields` as the JSON array of their values by the numbers of `names` (a name's place
/// among them), `null` where a number has no value and nothing after the last: the layout a
/// numbered row keeps, and the results store's. A field not among `names` is left out.
pub fn values_by_number<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    names: &[String],
) -> String {
    let mut values: Vec<Option<&str>> = Vec::new();
    for (name, value) in fields {
        let Some(at) = names.iter().position(|n| n == name) else {
            continue;
        };
        if values.len() <= at {
            values.resize(at + 1, None);
        }
        values[at] = Some(value);
    }
    serde_json::to_string(&values).unwrap_or_default()
}

/// Rows' stored fields as the values of other numbers (the results store's, `to`): a row's
/// array as it is when the journal numbers its names as `to` does, the usual case, which
/// neither parses nor allocates a name; otherwise read by the journal's names and numbered
/// again.
pub(super) struct Renumber<'a> {
    names: Vec<String>,
    to: &'a [String],
    same: bool,
}

impl<'a> Renumber<'a> {
    /// From a journal whose numbered names are `names` (`numbered`: format 2 on), or which
    /// names each row's fields (format 1).
    pub(super) fn new(numbered: bool, names: Vec<String>, to: &'a [String]) -> Renumber<'a> {
        let same = numbered && names.iter().zip(to).all(|(n, t)| n == t) && names.len() <= to.len();
        Renumber { names, to, same }
    }

    pub(super) fn values(&self, text: Option<String>) -> String {
        match text {
            None => "[]".to_string(),
            Some(text) if self.same => text,
            Some(text) => {
                let fields = decode(&text, &self.names);
                values_by_number(
                    fields.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                    self.to,
                )
            }
        }
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

/// Where each of a row's fields goes among the output's: by number in a numbered journal, by
/// name in one of format 1.
pub(super) enum Positions {
    /// Each number's column, and how many columns there are.
    ByNumber(Vec<Option<usize>>, usize),
    ByName(HashMap<String, usize>),
}

impl Positions {
    /// The positions of the fields `numbered` (the names by number) among `columns` (the
    /// output's, [`names_in_row_order`]).
    pub(super) fn new(numbered: bool, names: &[String], columns: &[String]) -> Positions {
        let at: HashMap<&str, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        if numbered {
            Positions::ByNumber(
                names.iter().map(|n| at.get(n.as_str()).copied()).collect(),
                columns.len(),
            )
        } else {
            Positions::ByName(
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.clone(), i))
                    .collect(),
            )
        }
    }

    /// The output's columns: a row's slots.
    pub(super) fn width(&self) -> usize {
        match self {
            Positions::ByNumber(_, width) => *width,
            Positions::ByName(at) => at.len(),
        }
    }

    /// Reads a row's stored fields into `slots`, one per output column, keeping the strings
    /// already there for their next values: the export fills the same rows again and again,
    /// and an allocation for every value was a third of its reading thread's time. A field the
    /// row lacks is `None`; a row that does not parse has none (as [`decode`] reads it).
    pub(super) fn decode_into(&self, text: Option<&str>, slots: &mut [Option<String>]) {
        match (self, text) {
            (Positions::ByNumber(at, _), Some(text)) => {
                let mut de = serde_json::Deserializer::from_str(text);
                match serde::de::DeserializeSeed::deserialize(Values { at, slots }, &mut de) {
                    // The numbers after the row's last value are fields it lacks.
                    Ok(read) => at[read.min(at.len())..]
                        .iter()
                        .flatten()
                        .for_each(|&i| slots[i] = None),
                    Err(_) => slots.iter_mut().for_each(|s| *s = None),
                }
            }
            (_, None) => slots.iter_mut().for_each(|s| *s = None),
            (Positions::ByName(at), Some(text)) => {
                slots.iter_mut().for_each(|s| *s = None);
                for (name, value) in decode(text, &[]) {
                    if let Some(&i) = at.get(&name) {
                        slots[i] = Some(value);
                    }
                }
            }
        }
    }
}

/// Puts `value` in `slot`, in the string already there when there is one.
pub(super) fn set_text(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value) {
        (Some(s), Some(v)) => {
            s.clear();
            s.push_str(v);
        }
        (None, Some(v)) => *slot = Some(v.to_owned()),
        (_, None) => *slot = None,
    }
}

/// A numbered row's values (`["true",null,"User"]`), read into the slots their numbers go to.
struct Values<'s> {
    at: &'s [Option<usize>],
    slots: &'s mut [Option<String>],
}

impl<'de> serde::de::DeserializeSeed<'de> for Values<'_> {
    /// How many values the row has.
    type Value = usize;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Values<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of strings and nulls")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut read = 0;
        loop {
            // Numbers without a name, which a damaged journal could hold, are left out.
            let more = match self.at.get(read).copied().flatten() {
                Some(i) => seq.next_element_seed(Value(&mut self.slots[i]))?.is_some(),
                None => seq.next_element::<serde::de::IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(read);
            }
            read += 1;
        }
    }
}

/// One value, a string or null, read into its slot.
struct Value<'s>(&'s mut Option<String>);

impl<'de> serde::de::DeserializeSeed<'de> for Value<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Value<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string or null")
    }

    fn visit_none<E>(self) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        set_text(self.0, Some(v));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Filling the same slots row after row gives each row its own values only: a value the
    /// next row lacks, or holds as null, is gone; a damaged row has none; a number without a
    /// name is left out; the columns' order is the output's, not the numbers'.
    #[test]
    fn slots_filled_again_hold_each_row_alone() {
        let names: Vec<String> = ["b", "a", "c"].map(String::from).into();
        let columns: Vec<String> = ["a", "b", "c"].map(String::from).into();
        let at = Positions::new(true, &names, &columns);
        assert_eq!(at.width(), 3);
        let mut slots = vec![None; at.width()];
        let mut fill = |text: Option<&str>| {
            at.decode_into(text, &mut slots);
            slots.clone()
        };
        let some = |v: &str| Some(v.to_string());
        assert_eq!(
            fill(Some(r#"["B","A\"q","C"]"#)),
            [some("A\"q"), some("B"), some("C")]
        );
        assert_eq!(fill(Some(r#"[null,"a"]"#)), [some("a"), None, None]);
        assert_eq!(
            fill(Some(r#"["b","a","c","x"]"#)),
            [some("a"), some("b"), some("c")]
        );
        assert_eq!(fill(Some("[\"b\",")), [None, None, None]);
        assert_eq!(fill(None), [None, None, None]);
        let by_name = Positions::new(false, &[], &columns);
        let mut slots = vec![some("old"); by_name.width()];
        by_name.decode_into(Some(r#"[["c","3"],["z","9"]]"#), &mut slots);
        assert_eq!(slots, [None, None, some("3")]);
    }

    /// A row's array goes over as it is only when the other side numbers the journal's names
    /// as the journal does, more of them after or not; otherwise, and from a journal that names
    /// its fields, each value goes to its name's number there, and a name it lacks is left out.
    #[test]
    fn rows_fields_go_over_whole_only_when_the_numbers_agree() {
        let owned = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let row = || Some(r#"["B","A\"q"]"#.to_string());
        let (journal, more) = (owned(&["b", "a"]), owned(&["b", "a", "c"]));
        for to in [&journal, &more] {
            let same = Renumber::new(true, journal.clone(), to);
            assert_eq!(same.values(row()), r#"["B","A\"q"]"#);
            assert_eq!(same.values(None), "[]");
        }
        let swapped = owned(&["a", "c", "b"]);
        let again = Renumber::new(true, journal.clone(), &swapped);
        assert_eq!(again.values(row()), r#"["A\"q",null,"B"]"#);
        let fewer = owned(&["a"]);
        let left_out = Renumber::new(true, journal.clone(), &fewer);
        assert_eq!(left_out.values(row()), r#"["A\"q"]"#);
        let named = Renumber::new(false, Vec::new(), &journal);
        let text = r#"[["a","1"],["z","9"]]"#.to_string();
        assert_eq!(named.values(Some(text)), r#"[null,"1"]"#);
    }

    /// Rows whose names repeat the last row's take its numbers; a row with the same names in
    /// another order, more of them, or fewer, is numbered name by name, and each row's values
    /// land at their names' numbers. A name's first row and place move to the earliest row
    /// that gives it, whichever way the numbers were found.
    #[test]
    fn names_repeated_row_after_row_keep_their_numbers() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE field_names (idx INTEGER PRIMARY KEY, name TEXT NOT NULL,
                 first_key INTEGER NOT NULL, first_pos INTEGER NOT NULL);",
        )
        .unwrap();
        let mut names = FieldNames::load(&conn).unwrap();
        let row = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let tx = conn.transaction().unwrap();
        let mut encode =
            |key: u64, fields: &[(String, String)]| names.encode(&tx, RowKey(key), fields).unwrap();
        assert_eq!(encode(5, &row(&[("a", "1"), ("b", "2")])), r#"["1","2"]"#);
        assert_eq!(encode(6, &row(&[("a", "3"), ("b", "4")])), r#"["3","4"]"#);
        assert_eq!(encode(7, &row(&[("b", "5"), ("a", "6")])), r#"["6","5"]"#);
        assert_eq!(
            encode(8, &row(&[("b", "7"), ("a", "8"), ("c", "9")])),
            r#"["8","7","9"]"#
        );
        assert_eq!(encode(9, &row(&[("c", "x")])), r#"[null,null,"x"]"#);
        assert_eq!(encode(2, &row(&[("c", "y")])), r#"[null,null,"y"]"#);
        assert_eq!(encode(1, &row(&[("b", "z")])), r#"[null,"z"]"#);
        let firsts: Vec<(String, i64, i64)> = tx
            .prepare("SELECT name, first_key, first_pos FROM field_names ORDER BY idx")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let firsts: Vec<(&str, i64, i64)> = firsts
            .iter()
            .map(|(n, k, p)| (n.as_str(), *k, *p))
            .collect();
        assert_eq!(firsts, [("a", 5, 0), ("b", 1, 0), ("c", 2, 0)]);
    }
}
