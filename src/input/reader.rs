//! The one parser of user input: every pass (planning, dispatch, merge) reads the exports
//! through this module, so all of them agree on what a row is and which key it has.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::outcome::RowKey;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{file}: cannot read the file: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: the file is empty; it needs a header line naming its columns")]
    Empty { file: String },
    #[error("{file}, line {line}{}: {message}", column.as_ref().map(|c| format!(", column {c}")).unwrap_or_default())]
    At {
        file: String,
        line: u64,
        column: Option<String>,
        message: String,
    },
    #[error(
        "{file}: no column for `{logical}` (looked for {wanted}); the file has: {available}. \
         Name the column with --column {logical}=NAME"
    )]
    MissingColumn {
        file: String,
        logical: String,
        wanted: String,
        available: String,
    },
    #[error(
        "{file}: both {first:?} and {second:?} could be the `{logical}` column; \
         choose one with --column {logical}=NAME"
    )]
    AmbiguousColumn {
        file: String,
        logical: String,
        first: String,
        second: String,
    },
    #[error(
        "{file}: the column name {name:?} appears twice (columns {first} and {second}); rename one"
    )]
    DuplicateColumn {
        file: String,
        name: String,
        first: usize,
        second: usize,
    },
}

/// One input column a check reads, by its logical name.
#[derive(Debug, Clone, Copy)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub required: bool,
    /// Header spellings recognised without a `--column` mapping, compared ignoring case and
    /// anything but letters and digits (`Udyam No.` matches `udyamno`).
    pub aliases: &'static [&'static str],
    pub help: &'static str,
    /// Filled in by the ops team between the two runs of a two-step check (the OTP the owner
    /// received): left out of the input's fingerprint and of the recorded column mapping, so
    /// that filling it, or adding the column, is not a changed input.
    pub filled_later: bool,
}

/// An input export, opened once to learn its header.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub index: u32,
    pub path: PathBuf,
    pub headers: Vec<String>,
}

impl InputFile {
    /// Opens every input and reads its header, so that a missing or malformed file stops the
    /// run before any call is made.
    pub fn open_all(paths: &[PathBuf]) -> Result<Vec<InputFile>, InputError> {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let index = u32::try_from(i).expect("fewer than 2^32 input files");
                InputFile::open(index, p)
            })
            .collect()
    }

    fn open(index: u32, path: &Path) -> Result<InputFile, InputError> {
        let file = InputFile {
            index,
            path: path.to_path_buf(),
            headers: Vec::new(),
        };
        let mut rdr = file.csv_reader()?;
        let headers = match rdr.headers() {
            Ok(h) => h.clone(),
            Err(e) => return Err(file.csv_error(e)),
        };
        if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
            return Err(InputError::Empty {
                file: file.display(),
            });
        }
        let headers: Vec<String> = headers.iter().map(str::to_owned).collect();
        for (i, h) in headers.iter().enumerate() {
            if let Some(j) = headers[..i].iter().position(|o| o == h) {
                return Err(InputError::DuplicateColumn {
                    file: file.display(),
                    name: h.clone(),
                    first: j + 1,
                    second: i + 1,
                });
            }
        }
        Ok(InputFile { headers, ..file })
    }

    /// The path as the user gave it, for messages.
    pub fn display(&self) -> String {
        self.path.display().to_string()
    }

    /// The file name alone, for row references in the output.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.display())
    }

    /// SHA-256 of the file's bytes: a resumed run must be reading the very rows the journal
    /// describes, or old outcomes would be attached to new rows. With `skip`, a column filled
    /// in between runs, the hash is over the parsed header and records without that column
    /// instead, so that filling it (or adding it, or a spreadsheet re-quoting the file) is not
    /// a change, while any other cell that changes still is.
    pub fn fingerprint(&self, skip: Option<usize>) -> Result<String, InputError> {
        if let Some(skip) = skip {
            return self.fingerprint_without(skip);
        }
        let mut f = File::open(&self.path).map_err(|e| self.io_error(e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| self.io_error(e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(format!("{:x}", hasher.finalize()))
    }

    fn fingerprint_without(&self, skip: usize) -> Result<String, InputError> {
        let mut hasher = Sha256::new();
        let mut add = |record: &csv::StringRecord| {
            for (i, field) in record.iter().enumerate() {
                if i != skip {
                    hasher.update((field.len() as u64).to_le_bytes());
                    hasher.update(field.as_bytes());
                }
            }
            hasher.update(u64::MAX.to_le_bytes());
        };
        let mut rdr = self.csv_reader()?;
        add(rdr.headers().map_err(|e| self.csv_error(e))?);
        let mut record = csv::StringRecord::new();
        while rdr
            .read_record(&mut record)
            .map_err(|e| self.csv_error(e))?
        {
            add(&record);
        }
        Ok(format!("{:x}", hasher.finalize()))
    }

    /// A fresh pass over the data records.
    pub fn records(&self) -> Result<Records<'_>, InputError> {
        let mut rdr = self.csv_reader()?;
        // Consume the header so that positions and record numbers start at the data.
        rdr.headers().map_err(|e| self.csv_error(e))?;
        Ok(Records {
            file: self,
            rdr,
            record: csv::StringRecord::new(),
            next: 0,
        })
    }

    fn csv_reader(&self) -> Result<csv::Reader<BufReader<File>>, InputError> {
        let f = File::open(&self.path).map_err(|e| self.io_error(e))?;
        Ok(csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(BufReader::with_capacity(1 << 16, f)))
    }

    fn io_error(&self, source: std::io::Error) -> InputError {
        InputError::Io {
            file: self.display(),
            source,
        }
    }

    fn csv_error(&self, e: csv::Error) -> InputError {
        let file = self.display();
        match e.into_kind() {
            csv::ErrorKind::Io(source) => InputError::Io { file, source },
            csv::ErrorKind::Utf8 { pos, err } => {
                let column = err.field() + 1;
                let name = self
                    .headers
                    .get(err.field())
                    .map(|h| format!("{column} ({h})"))
                    .unwrap_or_else(|| column.to_string());
                InputError::At {
                    file,
                    line: pos.map_or(1, |p| self.line_at(p.byte())),
                    column: Some(name),
                    message: "not valid UTF-8 text; save the export as UTF-8 \
                              (\"CSV UTF-8\" in Excel) and run again"
                        .into(),
                }
            }
            csv::ErrorKind::UnequalLengths {
                pos,
                expected_len,
                len,
            } => InputError::At {
                file,
                line: pos.map_or(1, |p| self.line_at(p.byte())),
                column: None,
                message: format!(
                    "this row has {len} fields where the header has {expected_len}; \
                     fix the row (a missing or extra comma, or an unclosed quote above it)"
                ),
            },
            other => InputError::At {
                file,
                line: 1,
                column: None,
                message: format!("{other:?}"),
            },
        }
    }

    /// The 1-based line on which the record at a byte offset starts. The csv crate's own line
    /// counter skips blank lines and miscounts CRLF files (and its record offsets can point at
    /// the previous terminator), so the file is re-read; this runs only to report an error.
    fn line_at(&self, byte: u64) -> u64 {
        let Ok(f) = File::open(&self.path) else {
            return 1;
        };
        let mut newlines = 0u64;
        for (pos, b) in (0u64..).zip(BufReader::new(f).bytes()) {
            let Ok(b) = b else { break };
            if pos >= byte && b != b'\n' && b != b'\r' {
                break;
            }
            newlines += u64::from(b == b'\n');
        }
        newlines + 1
    }
}

/// One pass over a file's data records, reusing a single record buffer.
pub struct Records<'f> {
    file: &'f InputFile,
    rdr: csv::Reader<BufReader<File>>,
    record: csv::StringRecord,
    next: u64,
}

impl Records<'_> {
    /// Moves to the next data record and returns its key; `Ok(None)` at the end of the file.
    /// Blank lines are not records.
    pub fn advance(&mut self) -> Result<Option<RowKey>, InputError> {
        match self.rdr.read_record(&mut self.record) {
            Ok(true) => {
                let key = RowKey::new(self.file.index, self.next);
                self.next += 1;
                Ok(Some(key))
            }
            Ok(false) => Ok(None),
            Err(e) => Err(self.file.csv_error(e)),
        }
    }

    /// The record [`advance`](Self::advance) moved to.
    pub fn record(&self) -> &csv::StringRecord {
        &self.record
    }
}

/// Where a check's logical columns are in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    indices: Vec<Option<usize>>,
}

impl ColumnMap {
    /// Finds each logical column: by the user's mapping when there is one (exact header name),
    /// else by the spec's aliases.
    pub fn resolve(
        file: &InputFile,
        specs: &[ColumnSpec],
        mapping: &BTreeMap<String, String>,
    ) -> Result<ColumnMap, InputError> {
        let norm = |s: &str| -> String {
            s.chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect()
        };
        let available = || {
            file.headers
                .iter()
                .map(|h| format!("{h:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut indices = Vec::with_capacity(specs.len());
        for spec in specs {
            let found = if let Some(wanted) = mapping.get(spec.name) {
                match file.headers.iter().position(|h| h == wanted) {
                    Some(i) => Some(i),
                    None => {
                        return Err(InputError::MissingColumn {
                            file: file.display(),
                            logical: spec.name.into(),
                            wanted: format!("{wanted:?}, as mapped"),
                            available: available(),
                        });
                    }
                }
            } else {
                let mut hits = file
                    .headers
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| spec.aliases.iter().any(|a| norm(h) == *a));
                let first = hits.next();
                if let (Some((_, a)), Some((_, b))) = (first, hits.next()) {
                    return Err(InputError::AmbiguousColumn {
                        file: file.display(),
                        logical: spec.name.into(),
                        first: a.clone(),
                        second: b.clone(),
                    });
                }
                first.map(|(i, _)| i)
            };
            if found.is_none() && spec.required {
                return Err(InputError::MissingColumn {
                    file: file.display(),
                    logical: spec.name.into(),
                    wanted: spec
                        .aliases
                        .iter()
                        .map(|a| format!("{a:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    available: available(),
                });
            }
            indices.push(found);
        }
        Ok(ColumnMap { indices })
    }

    /// Which header each logical column was found in, as `udyam=UdyamNo, name=-`: what a
    /// journal records so that a resumed run reads the same columns.
    pub fn describe(&self, file: &InputFile, specs: &[ColumnSpec]) -> String {
        specs
            .iter()
            .zip(&self.indices)
            .filter(|(spec, _)| !spec.filled_later)
            .map(|(spec, i)| {
                let header = i
                    .and_then(|i| file.headers.get(i))
                    .map_or("-", String::as_str);
                format!("{}={header}", spec.name)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What [`InputFile::fingerprint`] leaves out for a check with a column filled in between
    /// runs: that column's index in this file, or `usize::MAX` while the file lacks it (so
    /// that adding it later keeps the fingerprint). `None` for other checks: their files are
    /// hashed byte for byte.
    pub fn fingerprint_skip(&self, specs: &[ColumnSpec]) -> Option<usize> {
        specs
            .iter()
            .zip(&self.indices)
            .find(|(spec, _)| spec.filled_later)
            .map(|(_, i)| i.unwrap_or(usize::MAX))
    }

    /// The values of the logical columns in spec order; an absent optional column reads as "".
    pub fn values<'r>(&self, record: &'r csv::StringRecord) -> Vec<&'r str> {
        self.indices
            .iter()
            .map(|i| i.and_then(|i| record.get(i)).unwrap_or(""))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    fn all(file: &InputFile) -> Result<Vec<(u64, Vec<String>)>, InputError> {
        let mut r = file.records()?;
        let mut out = Vec::new();
        while let Some(k) = r.advance()? {
            out.push((k.record(), r.record().iter().map(str::to_owned).collect()));
        }
        Ok(out)
    }

    const UDYAM: ColumnSpec = ColumnSpec {
        name: "udyam",
        required: true,
        aliases: &["udyam", "udyamnumber", "udyamno"],
        help: "",
        filled_later: false,
    };
    const NAME: ColumnSpec = ColumnSpec {
        name: "name",
        required: false,
        aliases: &["name"],
        help: "",
        filled_later: false,
    };

    #[test]
    fn reads_bom_quotes_blank_lines_and_crlf() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "a.csv",
            b"\xEF\xBB\xBFid,Udyam No.,x\r\n\"007\",\"a,b\",\r\n\r\n2,\"say \"\"hi\"\"\",ab\"c\r\n3,\"multi\nline\",\r\n",
        );
        let files = InputFile::open_all(&[p]).unwrap();
        assert_eq!(files[0].headers, ["id", "Udyam No.", "x"]);
        let rows = all(&files[0]).unwrap();
        assert_eq!(
            rows,
            vec![
                (0, vec!["007".into(), "a,b".into(), "".into()]),
                (1, vec!["2".into(), "say \"hi\"".into(), "ab\"c".into()]),
                (2, vec!["3".into(), "multi\nline".into(), "".into()]),
            ]
        );
        let map = ColumnMap::resolve(&files[0], &[UDYAM, NAME], &BTreeMap::new()).unwrap();
        let mut r = files[0].records().unwrap();
        r.advance().unwrap();
        assert_eq!(map.values(r.record()), ["a,b", ""]);
    }

    #[test]
    fn ragged_row_names_its_real_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "r.csv",
            b"a,b\r\n1,2\r\n\r\n3,\"x\ny\"\r\n4,5,6\r\n",
        );
        let files = InputFile::open_all(&[p]).unwrap();
        let err = all(&files[0]).unwrap_err().to_string();
        assert!(err.contains("r.csv, line 6:"), "{err}");
        assert!(err.contains("3 fields where the header has 2"), "{err}");
    }

    #[test]
    fn invalid_utf8_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "u.csv", b"a,b\n1,2\n3,caf\xe9\n");
        let files = InputFile::open_all(&[p]).unwrap();
        let err = all(&files[0]).unwrap_err().to_string();
        assert!(err.contains("u.csv, line 3, column 2 (b)"), "{err}");
        assert!(err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn header_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(dir.path(), "e.csv", b"");
        assert!(matches!(
            InputFile::open_all(&[empty]).unwrap_err(),
            InputError::Empty { .. }
        ));
        let dup = write(dir.path(), "d.csv", b"a,b,a\n1,2,3\n");
        let err = InputFile::open_all(&[dup]).unwrap_err().to_string();
        assert!(
            err.contains("\"a\" appears twice (columns 1 and 3)"),
            "{err}"
        );
        let missing = dir.path().join("nope.csv");
        assert!(matches!(
            InputFile::open_all(&[missing]).unwrap_err(),
            InputError::Io { .. }
        ));
    }

    #[test]
    fn column_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "m.csv", b"UdyamNo,udyam_number,Reg\n1,2,3\n");
        let file = &InputFile::open_all(&[p]).unwrap()[0];
        let err = ColumnMap::resolve(file, &[UDYAM], &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, InputError::AmbiguousColumn { .. }), "{err}");
        let mapping = BTreeMap::from([("udyam".to_string(), "Reg".to_string())]);
        let map = ColumnMap::resolve(file, &[UDYAM, NAME], &mapping).unwrap();
        assert_eq!(map.indices, vec![Some(2), None]);
        let wrong = BTreeMap::from([("udyam".to_string(), "reg".to_string())]);
        let err = ColumnMap::resolve(file, &[UDYAM], &wrong)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--column udyam=NAME"), "{err}");
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "f.csv", b"a\n1\n");
        let f = &InputFile::open_all(std::slice::from_ref(&p)).unwrap()[0];
        let before = f.fingerprint(None).unwrap();
        std::fs::write(&p, b"a\n2\n").unwrap();
        assert_ne!(before, f.fingerprint(None).unwrap());
    }

    /// Filling the OTP column, adding it, or re-quoting the file keeps the fingerprint of a
    /// two-step check's input; any other cell that changes does not.
    #[test]
    fn fingerprint_leaves_out_the_column_filled_later() {
        let dir = tempfile::tempdir().unwrap();
        let fp = |name: &str, data: &[u8], skip: Option<usize>| {
            let p = write(dir.path(), name, data);
            InputFile::open_all(std::slice::from_ref(&p)).unwrap()[0]
                .fingerprint(skip)
                .unwrap()
        };
        let before = fp("a.csv", b"reg,mobile\nU1,98\nU2,97\n", None);
        let spec = |skip| fp("a.csv", b"reg,mobile\nU1,98\nU2,97\n", skip);
        assert_eq!(before, spec(None), "the same bytes");
        let plain = fp("b.csv", b"reg,mobile,otp\nU1,98,\nU2,97,\n", Some(2));
        let filled = fp(
            "c.csv",
            b"reg,mobile,otp\nU1,98,123456\n\"U2\",97,654321\n",
            Some(2),
        );
        let without = fp("d.csv", b"reg,mobile\nU1,98\nU2,97\n", Some(usize::MAX));
        assert_eq!(plain, filled);
        assert_eq!(plain, without, "the column added later");
        let changed = fp("e.csv", b"reg,mobile,otp\nU1,98,123456\nU3,97,\n", Some(2));
        assert_ne!(plain, changed);
    }
}
