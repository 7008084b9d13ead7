//! Why a file is not read as the run's flags say, and what reads it: the errors of the
//! encoding and the delimiter, worked out (re-reading the file where needed) only when one
//! occurs.

use std::fs::File;
use std::io::{BufReader, Read};

use encoding_rs::WINDOWS_1252;

use super::{InputError, InputFile, SAVE_AS_UTF8};
use crate::input::dialect::{Decoding, Mismatch, Sniffed, TextEncoding, Utf8Scan};

impl InputFile {
    /// Why a file is not read as the run's `--encoding` says, with what reads it.
    pub(super) fn mismatch(&self, mismatch: Mismatch, sniffed: Sniffed, head: &[u8]) -> InputError {
        let file = self.display();
        match mismatch {
            Mismatch::Utf16 { encoding } => {
                let tabs = sniffed.tabbed(head);
                InputError::Utf16 {
                    file,
                    what: format!(
                        "{} text{}",
                        encoding.name(),
                        if tabs {
                            " with tabs between its columns"
                        } else {
                            ""
                        }
                    ),
                    flags: if tabs && self.dialect.delimiter.byte() != b'\t' {
                        "--encoding utf-16 --delimiter tab"
                    } else {
                        "--encoding utf-16"
                    },
                }
            }
            Mismatch::NotUtf16 => {
                let mut scan = Utf8Scan::default();
                scan.feed(head);
                InputError::NotUtf16 {
                    file,
                    instead: if scan.invalid.is_some() {
                        "its bytes are not UTF-8 either: run with --encoding windows-1252"
                    } else {
                        "it reads as UTF-8: run without --encoding utf-16"
                    },
                }
            }
            Mismatch::Workbook => InputError::Workbook { file },
        }
    }

    /// A header read as one column that another delimiter splits into several is a file
    /// saved with that delimiter: say so, rather than that the check's columns are missing.
    pub(super) fn check_delimiter(&self, header: &str) -> Result<(), InputError> {
        let widest = self
            .dialect
            .other_delimiters()
            .map(|d| {
                let width = self
                    .csv_reader_with(d.byte())
                    .ok()
                    .map_or(0, |mut r| r.headers().map_or(0, csv::StringRecord::len));
                (width, d)
            })
            .max_by_key(|(width, _)| *width);
        match widest {
            Some((width, d)) if width > 1 => Err(InputError::At {
                file: self.display(),
                line: 1,
                column: None,
                message: format!(
                    "the header reads as one column with {} between columns ({}), but as \
                     {width} columns with {d}; run with {}",
                    self.dialect.delimiter,
                    super::header_in_words(&[header]),
                    d.flag()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses a file whose bytes are not in the encoding it is read in: a byte that is not
    /// UTF-8 in a file read as UTF-8, or, once `whole` file is seen, a file read as
    /// Windows-1252 that is all UTF-8, whose every character beyond ASCII would come out
    /// garbled.
    pub(super) fn check_scan(&self, scan: &Utf8Scan, whole: bool) -> Result<(), InputError> {
        match (self.decoding, scan.invalid, scan.wide) {
            (Decoding::Utf8, Some(offset), _) => Err(self.not_utf8(offset)),
            (Decoding::From(e), None, Some(offset)) if whole && e == WINDOWS_1252 => {
                Err(self.utf8_read_as_1252(offset))
            }
            _ => Ok(()),
        }
    }

    /// The error for the first byte that is not UTF-8, at `offset`, in a file read as UTF-8.
    pub(super) fn not_utf8(&self, offset: u64) -> InputError {
        let (line, bytes) = self.at_byte(offset);
        let byte = bytes.first().copied().unwrap_or_default();
        let message = if self.dialect.encoding == TextEncoding::Windows1252 {
            // Read as UTF-8 for its byte-order mark.
            format!(
                "byte 0x{byte:02X} is not valid UTF-8, though the file starts with UTF-8's \
                 byte-order mark (which --encoding windows-1252 gives way to); {SAVE_AS_UTF8} \
                 again"
            )
        } else {
            let byte_alone = [byte];
            let (as_1252, _) = WINDOWS_1252.decode_without_bom_handling(&byte_alone);
            format!(
                "byte 0x{byte:02X} is not valid UTF-8; the file looks like Windows-1252 \
                 (where it is \"{as_1252}\"), which Excel's \"CSV (Comma delimited)\" saves on \
                 Windows: run with --encoding windows-1252, or {SAVE_AS_UTF8}"
            )
        };
        InputError::At {
            file: self.display(),
            line,
            column: self.column_where(|field| std::str::from_utf8(field).is_err()),
            message,
        }
    }

    /// The error for a file read as Windows-1252 that is UTF-8, at its first character beyond
    /// ASCII.
    pub(super) fn utf8_read_as_1252(&self, offset: u64) -> InputError {
        let (line, bytes) = self.at_byte(offset);
        let valid = match std::str::from_utf8(&bytes) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
        };
        let c = valid.chars().next().unwrap_or_default();
        let garbled = WINDOWS_1252
            .decode_without_bom_handling(c.to_string().as_bytes())
            .0
            .into_owned();
        InputError::At {
            file: self.display(),
            line,
            column: self.column_where(|field| !field.is_ascii()),
            message: format!(
                "the file is UTF-8, not Windows-1252: \"{c}\" would be read as \"{garbled}\"; \
                 run without --encoding"
            ),
        }
    }

    /// The 1-based line of the byte at `offset` of the file, and the bytes from it (up to a
    /// character's 4). Only for files read as UTF-8 or Windows-1252, whose line ends are
    /// ASCII's, and only to report an error.
    pub(super) fn at_byte(&self, offset: u64) -> (u64, Vec<u8>) {
        let Ok(f) = File::open(&self.path) else {
            return (1, Vec::new());
        };
        let mut r = BufReader::new(f);
        let mut newlines = 0u64;
        let mut before = r.by_ref().take(offset);
        let mut buf = [0u8; 1 << 16];
        while let Ok(n @ 1..) = before.read(&mut buf) {
            newlines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        }
        let mut bytes = Vec::new();
        let _ = r.take(4).read_to_end(&mut bytes);
        (newlines + 1, bytes)
    }

    /// The first column, in file order, whose bytes `bad` finds fault with, as the header
    /// names it: the column of the file's first such byte, since CSV's quotes and delimiters
    /// are ASCII. Only for files read as UTF-8 or Windows-1252, and only to report an error.
    pub(super) fn column_where(&self, bad: impl Fn(&[u8]) -> bool) -> Option<String> {
        let f = File::open(&self.path).ok()?;
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(self.dialect.delimiter.byte())
            .from_reader(BufReader::with_capacity(1 << 16, f));
        let mut record = csv::ByteRecord::new();
        let mut header = true;
        while rdr.read_byte_record(&mut record).ok()? {
            if let Some(i) = record.iter().position(&bad) {
                let column = i + 1;
                return Some(match self.headers.get(i).filter(|_| !header) {
                    Some(h) => format!("{column} ({h})"),
                    None => column.to_string(),
                });
            }
            header = false;
        }
        None
    }
}
