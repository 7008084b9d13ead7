//! How an export's bytes become text and fields. Spreadsheets save "CSV" in several ways:
//! Excel's "CSV UTF-8"; "CSV (Comma delimited)", in the Windows code page (Windows-1252 on a
//! Western Windows); "Unicode Text", UTF-16 with tabs between the columns; and semicolons
//! where the comma is the decimal mark. This module tells them apart from a file's bytes, so
//! that a file read the wrong way stops the run with what it is and which flags read it.

use std::fmt;

use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1252};

/// How many bytes at the head of a file decide what it is.
pub(super) const SNIFF_BYTES: usize = 64 << 10;

/// The text encodings the inputs may be in (`--encoding`). The output is always UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextEncoding {
    #[default]
    Utf8,
    Windows1252,
    /// Either byte order: a byte-order mark or the NUL bytes of ASCII text tell which.
    Utf16,
}

impl TextEncoding {
    /// From a WHATWG encoding label, as browsers read them: `latin1`, `iso-8859-1` and
    /// `cp1252` all name windows-1252, since that is what files labelled so really hold.
    pub fn from_label(label: &str) -> Option<TextEncoding> {
        let encoding = Encoding::for_label(label.trim().as_bytes())?;
        if encoding == UTF_8 {
            Some(TextEncoding::Utf8)
        } else if encoding == WINDOWS_1252 {
            Some(TextEncoding::Windows1252)
        } else if encoding == UTF_16LE || encoding == UTF_16BE {
            Some(TextEncoding::Utf16)
        } else {
            None
        }
    }

    /// The value of `--encoding` that names it.
    pub fn flag(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Windows1252 => "windows-1252",
            TextEncoding::Utf16 => "utf-16",
        }
    }
}

/// What separates an input's columns (`--delimiter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiter(u8);

impl Delimiter {
    pub const COMMA: Delimiter = Delimiter(b',');
    const ALL: [Delimiter; 4] = [
        Delimiter::COMMA,
        Delimiter(b';'),
        Delimiter(b'\t'),
        Delimiter(b'|'),
    ];

    /// `,`, `;`, `|`, or a tab as `tab`, `\t` or the character itself.
    pub fn parse(s: &str) -> Option<Delimiter> {
        match s {
            "," => Some(Delimiter(b',')),
            ";" => Some(Delimiter(b';')),
            "|" => Some(Delimiter(b'|')),
            "tab" | "\\t" | "\t" => Some(Delimiter(b'\t')),
            _ => None,
        }
    }

    pub fn byte(self) -> u8 {
        self.0
    }

    /// The flag that reads it, as typed in a shell: `--delimiter ';'`, `--delimiter tab`.
    pub fn flag(self) -> String {
        match self.0 {
            b'\t' => "--delimiter tab".into(),
            b => format!("--delimiter '{}'", char::from(b)),
        }
    }
}

impl Default for Delimiter {
    fn default() -> Delimiter {
        Delimiter::COMMA
    }
}

impl fmt::Display for Delimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            b',' => "commas",
            b';' => "semicolons",
            b'\t' => "tabs",
            _ => "pipes (|)",
        })
    }
}

/// How every input of a run is read: the same for each pass over it, so that all of them see
/// the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dialect {
    pub encoding: TextEncoding,
    pub delimiter: Delimiter,
}

impl Dialect {
    /// What an input's fingerprint covers besides its bytes: how they are read, since the same
    /// bytes read another way are other rows. Nothing for UTF-8 and commas, so that states made
    /// before the other readings existed keep their fingerprints.
    pub(super) fn fingerprint_tag(&self) -> Option<String> {
        (*self != Dialect::default()).then(|| {
            format!(
                "bulkverify input read as {} with the delimiter {:?}\0",
                self.encoding.flag(),
                char::from(self.delimiter.byte())
            )
        })
    }

    /// The other delimiters a header might be split at.
    pub(super) fn other_delimiters(&self) -> impl Iterator<Item = Delimiter> + '_ {
        Delimiter::ALL.into_iter().filter(|d| *d != self.delimiter)
    }
}

/// What a file's first bytes say it is, before any of it is read as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sniffed {
    /// No byte-order mark and no NUL byte: UTF-8 or a single-byte code page, which only
    /// their bytes tell apart.
    Text,
    /// Starts with UTF-8's byte-order mark, as Excel's "CSV UTF-8" saves.
    Utf8Bom,
    /// UTF-16, by its byte-order mark or, without one, by the NUL byte beside each ASCII
    /// character (on the right in little-endian, on the left in big-endian).
    Utf16 { encoding: &'static Encoding },
    /// A spreadsheet workbook (a zip archive, or the older compound file), not a CSV export.
    Workbook,
}

impl Sniffed {
    pub(super) fn of(head: &[u8]) -> Sniffed {
        if head.starts_with(b"\xEF\xBB\xBF") {
            return Sniffed::Utf8Bom;
        }
        if head.starts_with(b"\xFF\xFE") {
            return Sniffed::Utf16 { encoding: UTF_16LE };
        }
        if head.starts_with(b"\xFE\xFF") {
            return Sniffed::Utf16 { encoding: UTF_16BE };
        }
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"\xD0\xCF\x11\xE0") {
            return Sniffed::Workbook;
        }
        let (mut even, mut odd) = (0usize, 0usize);
        for pair in head.chunks(2) {
            even += usize::from(pair[0] == 0);
            odd += usize::from(pair.get(1) == Some(&0));
        }
        // ASCII text in UTF-16 has a NUL beside every character, always on the same side:
        // delimiters, digits and line ends alone are more than an eighth of any export, and
        // outnumber the other side's NULs many times. A stray NUL is text's, as it always was.
        let pairs = head.len().div_ceil(2);
        if odd * 8 >= pairs && odd > 4 * even {
            Sniffed::Utf16 { encoding: UTF_16LE }
        } else if even * 8 >= pairs && even > 4 * odd {
            Sniffed::Utf16 { encoding: UTF_16BE }
        } else {
            Sniffed::Text
        }
    }

    /// Whether the first line of a UTF-16 file has tabs: Excel's "Unicode Text" separates its
    /// columns with them.
    pub(super) fn tabbed(self, head: &[u8]) -> bool {
        let Sniffed::Utf16 { encoding } = self else {
            return false;
        };
        let (text, _) = encoding.decode_with_bom_removal(head);
        text.lines().next().is_some_and(|l| l.contains('\t'))
    }
}

/// How a file's bytes are turned into the UTF-8 the CSV reader takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoding {
    /// Read as they are: the CSV reader checks that every field is UTF-8, and skips a BOM.
    Utf8,
    /// Transcoded by `encoding_rs`, its byte-order mark removed.
    From(&'static Encoding),
}

/// What stops a file from being read as the run's `--encoding` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mismatch {
    /// UTF-16 read without `--encoding utf-16`.
    Utf16 {
        encoding: &'static Encoding,
    },
    /// `--encoding utf-16` for a file that has neither a byte-order mark nor NUL bytes.
    NotUtf16,
    Workbook,
}

impl Decoding {
    /// How a file that sniffs so is read with `--encoding encoding`. A byte-order mark is
    /// definite, so a UTF-8 one makes a file UTF-8 even under `--encoding windows-1252`: one
    /// flag then reads a job's inputs when some were saved as "CSV UTF-8" and some not.
    pub(super) fn choose(encoding: TextEncoding, sniffed: Sniffed) -> Result<Decoding, Mismatch> {
        match (sniffed, encoding) {
            (Sniffed::Workbook, _) => Err(Mismatch::Workbook),
            (Sniffed::Utf16 { encoding }, TextEncoding::Utf16) => Ok(Decoding::From(encoding)),
            (Sniffed::Utf16 { encoding }, _) => Err(Mismatch::Utf16 { encoding }),
            (_, TextEncoding::Utf16) => Err(Mismatch::NotUtf16),
            (Sniffed::Utf8Bom, _) | (Sniffed::Text, TextEncoding::Utf8) => Ok(Decoding::Utf8),
            (Sniffed::Text, TextEncoding::Windows1252) => Ok(Decoding::From(WINDOWS_1252)),
        }
    }
}

/// What tells UTF-8 from a single-byte code page in a file's bytes, followed chunk by chunk:
/// the first byte that is not UTF-8, and the first character beyond ASCII.
#[derive(Debug, Default)]
pub(super) struct Utf8Scan {
    /// The file offset of the next byte fed.
    offset: u64,
    /// The start of a character split between two chunks.
    partial: Vec<u8>,
    /// The offset of the first byte that is not UTF-8.
    pub invalid: Option<u64>,
    /// The offset of the first character beyond ASCII, while the bytes before it are UTF-8.
    pub wide: Option<u64>,
}

impl Utf8Scan {
    /// Takes the next bytes of the file; `feed(&[])` marks its end.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.invalid.is_some() {
            return;
        }
        let end = chunk.is_empty();
        let start = self.offset - self.partial.len() as u64;
        self.offset += chunk.len() as u64;
        let joined;
        let bytes = if self.partial.is_empty() {
            chunk
        } else {
            self.partial.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.partial);
            &joined[..]
        };
        let valid = match std::str::from_utf8(bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() && !end => {
                self.partial = bytes[e.valid_up_to()..].to_vec();
                e.valid_up_to()
            }
            Err(e) => {
                self.invalid = Some(start + e.valid_up_to() as u64);
                e.valid_up_to()
            }
        };
        if self.wide.is_none()
            && let Some(i) = bytes[..valid].iter().position(|b| !b.is_ascii())
        {
            self.wide = Some(start + i as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(text: &str, encoding: &'static Encoding, bom: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if bom {
            out.extend_from_slice(if encoding == UTF_16LE {
                b"\xFF\xFE"
            } else {
                b"\xFE\xFF"
            });
        }
        for unit in text.encode_utf16() {
            out.extend_from_slice(&if encoding == UTF_16LE {
                unit.to_le_bytes()
            } else {
                unit.to_be_bytes()
            });
        }
        out
    }

    #[test]
    fn utf16_is_known_by_its_bom_or_its_nul_bytes() {
        let text = "id\tname\tudyam\r\n1\tCafé Ñandú’s\tUDYAM-MH-01-0000001\r\n";
        for encoding in [UTF_16LE, UTF_16BE] {
            for bom in [true, false] {
                let bytes = utf16(text, encoding, bom);
                let sniffed = Sniffed::of(&bytes);
                assert_eq!(sniffed, Sniffed::Utf16 { encoding }, "{encoding:?} {bom}");
                assert!(sniffed.tabbed(&bytes));
            }
        }
        // Indian scripts have no NUL byte, but the delimiters, digits and line ends do.
        let hindi = utf16("नाम,उद्यम\nराम,UDYAM-MH-01-0000001\n", UTF_16LE, false);
        let sniffed = Sniffed::of(&hindi);
        assert_eq!(sniffed, Sniffed::Utf16 { encoding: UTF_16LE });
        assert!(!sniffed.tabbed(&hindi), "commas, not tabs");
    }

    #[test]
    fn text_and_workbooks_are_told_apart() {
        assert_eq!(Sniffed::of(b"id,name\n1,Caf\xe9\n"), Sniffed::Text);
        assert_eq!(Sniffed::of("id,name\n1,Café\n".as_bytes()), Sniffed::Text);
        assert_eq!(Sniffed::of(b""), Sniffed::Text);
        assert_eq!(Sniffed::of(b"\xEF\xBB\xBFid\n"), Sniffed::Utf8Bom);
        assert_eq!(
            Sniffed::of(b"PK\x03\x04\x14\x00\x06\x00"),
            Sniffed::Workbook
        );
        assert_eq!(
            Sniffed::of(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1"),
            Sniffed::Workbook
        );
        assert_eq!(
            Sniffed::of(b"id,name\n1,ab\x00cd\n2,efgh\n"),
            Sniffed::Text,
            "a stray NUL"
        );
    }

    #[test]
    fn the_decoding_follows_the_flag_and_the_bytes() {
        use TextEncoding::*;
        let le = Sniffed::Utf16 { encoding: UTF_16LE };
        assert_eq!(Decoding::choose(Utf8, Sniffed::Text), Ok(Decoding::Utf8));
        assert_eq!(Decoding::choose(Utf8, Sniffed::Utf8Bom), Ok(Decoding::Utf8));
        assert_eq!(
            Decoding::choose(Windows1252, Sniffed::Text),
            Ok(Decoding::From(WINDOWS_1252))
        );
        assert_eq!(
            Decoding::choose(Windows1252, Sniffed::Utf8Bom),
            Ok(Decoding::Utf8),
            "the BOM is definite"
        );
        assert_eq!(Decoding::choose(Utf16, le), Ok(Decoding::From(UTF_16LE)));
        for encoding in [Utf8, Windows1252] {
            assert_eq!(
                Decoding::choose(encoding, le),
                Err(Mismatch::Utf16 { encoding: UTF_16LE })
            );
        }
        assert_eq!(
            Decoding::choose(Utf16, Sniffed::Text),
            Err(Mismatch::NotUtf16)
        );
        assert_eq!(
            Decoding::choose(Utf16, Sniffed::Workbook),
            Err(Mismatch::Workbook)
        );
    }

    #[test]
    fn labels_and_delimiters() {
        for (label, encoding) in [
            ("utf-8", TextEncoding::Utf8),
            ("UTF8", TextEncoding::Utf8),
            ("windows-1252", TextEncoding::Windows1252),
            ("latin1", TextEncoding::Windows1252),
            ("iso-8859-1", TextEncoding::Windows1252),
            ("cp1252", TextEncoding::Windows1252),
            ("utf-16", TextEncoding::Utf16),
            ("utf-16be", TextEncoding::Utf16),
        ] {
            assert_eq!(TextEncoding::from_label(label), Some(encoding), "{label}");
        }
        assert_eq!(TextEncoding::from_label("shift_jis"), None);
        assert_eq!(TextEncoding::from_label("nonsense"), None);
        for (s, byte) in [(",", b','), (";", b';'), ("|", b'|'), ("tab", b'\t')] {
            assert_eq!(Delimiter::parse(s).map(Delimiter::byte), Some(byte), "{s}");
        }
        assert_eq!(Delimiter::parse("\t"), Delimiter::parse("\\t"));
        assert_eq!(Delimiter::parse(":"), None);
        assert_eq!(Delimiter::parse(";").unwrap().flag(), "--delimiter ';'");
        assert_eq!(Delimiter::parse("\t").unwrap().flag(), "--delimiter tab");
        assert_eq!(Dialect::default().fingerprint_tag(), None);
        let semicolons = Dialect {
            delimiter: Delimiter::parse(";").unwrap(),
            ..Dialect::default()
        };
        let latin = Dialect {
            encoding: TextEncoding::Windows1252,
            ..Dialect::default()
        };
        assert_ne!(semicolons.fingerprint_tag(), latin.fingerprint_tag());
        assert!(latin.fingerprint_tag().is_some());
    }

    /// A character split between two chunks is neither invalid nor missed; the first byte that
    /// is not UTF-8 and the first character beyond ASCII are found at their file offsets.
    #[test]
    fn the_scan_finds_offsets_across_chunks() {
        let scan = |data: &[u8], size: usize| {
            let mut s = Utf8Scan::default();
            for chunk in data.chunks(size) {
                s.feed(chunk);
            }
            s.feed(&[]);
            (s.invalid, s.wide)
        };
        let utf8 = "id,name\n1,Café Ñandú’s\n".as_bytes();
        let latin = b"id,name\n1,Caf\xe9 \x92\n";
        for size in 1..8 {
            assert_eq!(scan(utf8, size), (None, Some(13)), "{size}");
            assert_eq!(scan(latin, size), (Some(13), None), "{size}");
            assert_eq!(scan(b"a,b\n1,2\n", size), (None, None), "{size}");
        }
        assert_eq!(scan(b"ab\xC3", 2), (Some(2), None), "cut short at the end");
    }
}
