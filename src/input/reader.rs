//! The one parser of user input: every pass (planning, dispatch, merge) reads the exports
//! through this module, so all of them agree on what a row is and which key it has.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use encoding_rs_io::DecodeReaderBytesBuilder;
use sha2::{Digest, Sha256};

use super::dialect::{Decoding, Dialect, SNIFF_BYTES, Sniffed, Utf8Scan};
use crate::outcome::RowKey;

mod explain;

/// What Excel users are told to choose instead, whatever their file was.
const SAVE_AS_UTF8: &str = "save it from Excel as \"CSV UTF-8\"";

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
    #[error(
        "{file}: the file is {what}, as Excel saves \"Unicode Text\"; run with {flags}, or \
         {SAVE_AS_UTF8}"
    )]
    Utf16 {
        file: String,
        what: String,
        flags: &'static str,
    },
    #[error(
        "{file}: the file is not UTF-16 (it has no byte-order mark, and no NUL byte beside its \
         characters); {instead}"
    )]
    NotUtf16 { file: String, instead: &'static str },
    #[error(
        "{file}: the file is a spreadsheet workbook (.xlsx or .xls), not a CSV export; \
         {SAVE_AS_UTF8} and give that file"
    )]
    Workbook { file: String },
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
    dialect: Dialect,
    decoding: Decoding,
}

impl InputFile {
    /// Opens every input and reads its header, so that a missing or malformed file, or one
    /// that `dialect` does not read, stops the run before any call is made.
    pub fn open_all(paths: &[PathBuf], dialect: Dialect) -> Result<Vec<InputFile>, InputError> {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let index = u32::try_from(i).expect("fewer than 2^32 input files");
                InputFile::open(index, p, dialect)
            })
            .collect()
    }

    fn open(index: u32, path: &Path, dialect: Dialect) -> Result<InputFile, InputError> {
        let mut file = InputFile {
            index,
            path: path.to_path_buf(),
            headers: Vec::new(),
            dialect,
            decoding: Decoding::Utf8,
        };
        let mut head = Vec::new();
        File::open(path)
            .and_then(|f| f.take(SNIFF_BYTES as u64).read_to_end(&mut head))
            .map_err(|e| file.io_error(e))?;
        let sniffed = Sniffed::of(&head);
        file.decoding = Decoding::choose(dialect.encoding, sniffed)
            .map_err(|m| file.mismatch(m, sniffed, &head))?;
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
        if headers.len() == 1 {
            file.check_delimiter(&headers[0])?;
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
        file.headers = headers;
        // Most non-UTF-8 files show it in their first rows: said now, before the job's state
        // is made; the rest of the file is checked as it is fingerprinted.
        let mut scan = Utf8Scan::default();
        scan.feed(&head);
        if head.len() < SNIFF_BYTES {
            scan.feed(&[]);
        }
        file.check_scan(&scan, false)?;
        Ok(file)
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
    /// describes, or old outcomes would be attached to new rows. The bytes are preceded by how
    /// they are read when that is not UTF-8 with commas ([`Dialect`]), since the same bytes
    /// read with another `--encoding` or `--delimiter` are other rows. With `skip`, a column
    /// filled in between runs, the hash is over the header and records as read (decoded and
    /// split), without that column, instead: filling it (or adding it, or a spreadsheet
    /// re-quoting the file, or saving it again as UTF-8) is not a change, while any other
    /// value that reads differently is.
    ///
    /// This is the one pass over every byte before planning, so it also proves that the file
    /// is in the encoding it is read in: a job never plans part of a file it cannot read.
    pub fn fingerprint(&self, skip: Option<usize>) -> Result<String, InputError> {
        let mut hasher = Sha256::new();
        if let Some(tag) = self.dialect.fingerprint_tag() {
            hasher.update(tag.as_bytes());
        }
        let scan = self.scan(|chunk| {
            if skip.is_none() {
                hasher.update(chunk);
            }
        })?;
        self.check_scan(&scan, true)?;
        match skip {
            Some(skip) => self.fingerprint_without(skip),
            None => Ok(format!("{:x}", hasher.finalize())),
        }
    }

    /// Reads every byte of the file, in chunks given to `each`, following them for what tells
    /// UTF-8 apart.
    fn scan(&self, mut each: impl FnMut(&[u8])) -> Result<Utf8Scan, InputError> {
        let mut f = File::open(&self.path).map_err(|e| self.io_error(e))?;
        let mut scan = Utf8Scan::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| self.io_error(e))?;
            scan.feed(&buf[..n]);
            if n == 0 {
                return Ok(scan);
            }
            each(&buf[..n]);
        }
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

    fn csv_reader(&self) -> Result<csv::Reader<Box<dyn Read + Send>>, InputError> {
        self.csv_reader_with(self.dialect.delimiter.byte())
    }

    fn csv_reader_with(
        &self,
        delimiter: u8,
    ) -> Result<csv::Reader<Box<dyn Read + Send>>, InputError> {
        Ok(csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .delimiter(delimiter)
            .from_reader(self.text()?))
    }

    /// The file as the UTF-8 text every pass reads.
    fn text(&self) -> Result<Box<dyn Read + Send>, InputError> {
        let f = File::open(&self.path).map_err(|e| self.io_error(e))?;
        Ok(match self.decoding {
            Decoding::Utf8 => Box::new(BufReader::with_capacity(1 << 16, f)),
            Decoding::From(encoding) => Box::new(
                DecodeReaderBytesBuilder::new()
                    .encoding(Some(encoding))
                    .build_with_buffer(f, vec![0u8; 1 << 16])
                    .map_err(|e| self.io_error(e))?,
            ),
        })
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
                match self.scan(|_| ()).ok().and_then(|scan| scan.invalid) {
                    Some(offset) => self.not_utf8(offset),
                    None => InputError::At {
                        file,
                        line: pos.map_or(1, |p| self.line_at(p.byte())),
                        column: Some((err.field() + 1).to_string()),
                        message: "not valid UTF-8 text, and the file changed while it was \
                                  read; run again"
                            .into(),
                    },
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

    /// The 1-based line on which the record at a byte offset of the text starts. The csv
    /// crate's own line counter skips blank lines and miscounts CRLF files (and its record
    /// offsets can point at the previous terminator), so the text is read again; this runs
    /// only to report an error.
    fn line_at(&self, byte: u64) -> u64 {
        let Ok(text) = self.text() else {
            return 1;
        };
        let mut newlines = 0u64;
        for (pos, b) in (0u64..).zip(BufReader::new(text).bytes()) {
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
    rdr: csv::Reader<Box<dyn Read + Send>>,
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
/// Whether a header cell is a value rather than a column's name: four digits in a row or an
/// `@`, as identifiers have (PAN, Aadhaar, account and mobile numbers, UPI addresses, Udyam
/// numbers, IFSCs) and column names do not.
fn looks_like_a_value(cell: &str) -> bool {
    cell.contains('@')
        || cell
            .as_bytes()
            .windows(4)
            .any(|w| w.iter().all(u8::is_ascii_digit))
}

/// A header line as an error shows it: its names, quoted; or, when it holds what looks like a
/// value (a headerless export's first line is a customer's row), its shape alone.
pub(super) fn header_in_words<S: AsRef<str>>(cells: &[S]) -> String {
    match cells.iter().position(|c| looks_like_a_value(c.as_ref())) {
        Some(i) => format!(
            "a first line of {} cell{} that looks like a row of values, not column names (cell \
             {} looks like an identifier; the line is not shown): the file needs a header line \
             naming its columns",
            cells.len(),
            if cells.len() == 1 { "" } else { "s" },
            i + 1
        ),
        None => cells
            .iter()
            .map(|h| format!("{:?}", h.as_ref()))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

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
        let available = || header_in_words(&file.headers);
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
mod tests;
