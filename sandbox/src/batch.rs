//! UPI batch files: lenient parsing of the upload and the output file the provider produces.
//!
//! The output is generated from the stored upload whenever it is downloaded, deterministically,
//! so a persisted upload is all a restarted sandbox needs to serve it.

use super::ids::shuffled;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The columns the provider appends to every input row.
const RESULT_COLUMNS: [&str; 6] = [
    "code",
    "sub_code",
    "message",
    "account_exists",
    "name_at_bank",
    "name_at_bank_cleaned",
];

/// A parsed upload: a header with a `vpa` column and at least one row.
#[derive(Debug)]
pub(super) struct Batch {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    vpa_column: usize,
}

impl Batch {
    /// Parses like a lenient server: optional BOM, LF or CRLF, ragged rows, the `vpa` header
    /// matched case-insensitively. `None` when it is no such CSV.
    pub(super) fn parse(bytes: &[u8]) -> Option<Batch> {
        let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
        let headers: Vec<String> = reader.headers().ok()?.iter().map(str::to_owned).collect();
        let vpa_column = headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case("vpa"))?;
        let mut rows = Vec::new();
        for record in reader.records() {
            let mut row: Vec<String> = record.ok()?.iter().map(str::to_owned).collect();
            row.resize(headers.len(), String::new());
            rows.push(row);
        }
        if rows.is_empty() {
            return None;
        }
        Some(Batch {
            headers,
            rows,
            vpa_column,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether `bytes` could hold a `statusdown…` VPA at all: a status poll reads only that of
    /// the upload, and parsing every upload again at every poll took a scale run's sandbox as
    /// long as answering it.
    pub(super) fn may_be_status_down(bytes: &[u8]) -> bool {
        const WORD: &[u8] = b"statusdown";
        bytes
            .windows(WORD.len())
            .any(|w| w.eq_ignore_ascii_case(WORD))
    }

    /// Whether the batch holds a `statusdown…` VPA: its status endpoint then answers 503 to
    /// the first [`STATUS_DOWN_ANSWERS`] calls, so that a client's poll gives up once.
    pub(super) fn status_down(&self) -> bool {
        self.vpas().any(|v| {
            v.split_once('@')
                .is_some_and(|(local, _)| local.to_lowercase().starts_with("statusdown"))
        })
    }

    pub(super) fn vpas(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().map(|row| row[self.vpa_column].trim())
    }

    /// The output file of batch `request_id`: UTF-8 BOM, CRLF, the input columns then the
    /// result columns, rows shuffled by a generator seeded from the request id (never left in
    /// input order when there are two rows or more), test VPAs answered as scripted.
    pub(super) fn output(&self, request_id: &str) -> Result<Vec<u8>, csv::Error> {
        let results: Vec<Vec<String>> = self
            .rows
            .iter()
            .filter_map(|row| {
                let outcome = Outcome::of(row[self.vpa_column].trim());
                outcome.fields().map(|fields| {
                    let mut out = row.clone();
                    out.extend(fields);
                    out
                })
            })
            .collect();
        let order = shuffled(results.len(), request_id);
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(BOM.to_vec());
        writer.write_record(
            self.headers
                .iter()
                .map(String::as_str)
                .chain(RESULT_COLUMNS),
        )?;
        for index in order {
            writer.write_record(&results[index])?;
        }
        writer
            .into_inner()
            .map_err(|error| csv::Error::from(error.into_error()))
    }
}

/// What the provider answers for one VPA, chosen by the part before `@`.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Valid { name: String },
    NoAccount,
    Invalid,
    SourceDown,
    Dropped,
}

/// How many status calls of a `statusdown` batch are answered 503.
pub(super) const STATUS_DOWN_ANSWERS: u32 = 4;

impl Outcome {
    /// A VPA with no `handle@psp` shape is answered as invalid, as the single-VPA call does.
    fn of(vpa: &str) -> Outcome {
        let Some((local, psp)) = vpa.split_once('@') else {
            return Outcome::Invalid;
        };
        if local.is_empty() || psp.is_empty() {
            return Outcome::Invalid;
        }
        let lower = local.to_lowercase();
        if lower.starts_with("noaccount") {
            Outcome::NoAccount
        } else if lower.starts_with("invalid") {
            Outcome::Invalid
        } else if lower.starts_with("sourcedown") {
            Outcome::SourceDown
        } else if lower.starts_with("dropped") {
            Outcome::Dropped
        } else {
            Outcome::Valid {
                name: name_at_bank(local),
            }
        }
    }

    /// The appended columns, or `None` when the row is missing from the output.
    fn fields(self) -> Option<[String; 6]> {
        let row = |code: &str, sub: &str, message: &str, exists: &str, name: String| {
            let cleaned = title_case(&name);
            [
                code.to_owned(),
                sub.to_owned(),
                message.to_owned(),
                exists.to_owned(),
                name,
                cleaned,
            ]
        };
        match self {
            Outcome::Valid { name } => Some(row("200", "SUCCESS", "VPA is valid", "true", name)),
            Outcome::NoAccount => Some(row(
                "200",
                "SUCCESS",
                "VPA does not exist",
                "false",
                String::new(),
            )),
            Outcome::Invalid => Some(row("422", "INVALID_VPA", "Invalid VPA", "", String::new())),
            Outcome::SourceDown => Some(row(
                "503",
                "SOURCE_UNAVAILABLE",
                "Source unavailable, try again later",
                "",
                String::new(),
            )),
            Outcome::Dropped => None,
        }
    }
}

/// `ravi.kumar99` → `RAVI KUMAR`: separators as spaces, digits removed, upper case.
fn name_at_bank(local: &str) -> String {
    let spaced: String = local
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .map(|c| if matches!(c, '.' | '_' | '-') { ' ' } else { c })
        .collect();
    spaced
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

/// `RAVI KUMAR` → `Ravi Kumar`.
fn title_case(name: &str) -> String {
    name.split(' ')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect()
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_text(input: &str, request_id: &str) -> String {
        let batch = Batch::parse(input.as_bytes()).expect("valid batch");
        let bytes = batch.output(request_id).expect("writes");
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn parses_leniently() {
        let batch = Batch::parse(b"\xEF\xBB\xBFid,VPA ,name\r\n1,a@ok,A\r\n\r\n2,b@ok\r\n")
            .expect("valid batch");
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.vpas().collect::<Vec<_>>(), ["a@ok", "b@ok"]);
        assert!(
            Batch::parse(b"name,phone\nA,1\n").is_none(),
            "no vpa column"
        );
        assert!(Batch::parse(b"vpa,name\n").is_none(), "no rows");
        assert!(Batch::parse(b"").is_none(), "empty");
        assert!(Batch::parse(b"vpa\n\xFF\xFE@ok\n").is_none(), "not UTF-8");
    }

    #[test]
    fn only_an_upload_that_spells_statusdown_is_parsed_for_it() {
        for (upload, down) in [
            (&b"vpa\nStatusDown.x@ybl\nravi@okicici\n"[..], true),
            (b"id,vpa\n1,statusdown@ybl\n", true),
            (b"vpa,name\nravi@okicici,statusdown\n", false),
            (b"vpa\nravi@okicici\nstatus.down@ybl\n", false),
        ] {
            let batch = Batch::parse(upload).expect("valid batch");
            assert_eq!(batch.status_down(), down, "{upload:?}");
            assert!(
                Batch::may_be_status_down(upload) || !down,
                "{upload:?} skipped though its batch is down"
            );
        }
        assert!(!Batch::may_be_status_down(
            b"vpa\nravi@okicici\nstatus.down@ybl\n"
        ));
    }

    #[test]
    fn names_come_from_the_local_part() {
        assert_eq!(name_at_bank("ravi.kumar99"), "RAVI KUMAR");
        assert_eq!(name_at_bank("a_b-c..d9"), "A B C D");
        assert_eq!(title_case("RAVI KUMAR"), "Ravi Kumar");
        assert_eq!(title_case(""), "");
    }

    #[test]
    fn test_vpas_are_answered_as_scripted() {
        assert_eq!(
            Outcome::of("Ravi.Kumar99@okicici"),
            Outcome::Valid {
                name: "RAVI KUMAR".into()
            }
        );
        assert_eq!(Outcome::of("NOACCOUNT1@ybl"), Outcome::NoAccount);
        assert_eq!(Outcome::of("invalid.x@ybl"), Outcome::Invalid);
        assert_eq!(Outcome::of("sourcedown@ybl"), Outcome::SourceDown);
        assert_eq!(Outcome::of("Dropped7@ybl"), Outcome::Dropped);
        assert_eq!(Outcome::of("no-at-sign"), Outcome::Invalid);
        assert_eq!(Outcome::of("@ybl"), Outcome::Invalid);
    }

    #[test]
    fn output_has_bom_crlf_appended_columns_and_needed_quotes_only() {
        let text = output_text("key,vpa,note\n1,ravi.kumar@ok,\"a, b\"\n", "r");
        assert_eq!(
            text,
            "\u{feff}key,vpa,note,code,sub_code,message,account_exists,name_at_bank,name_at_bank_cleaned\r\n\
             1,ravi.kumar@ok,\"a, b\",200,SUCCESS,VPA is valid,true,RAVI KUMAR,Ravi Kumar\r\n"
        );
    }

    #[test]
    fn output_rows_are_shuffled_deterministically_never_in_input_order() {
        for rows in 2..12 {
            let input: String = std::iter::once("n,vpa\n".to_owned())
                .chain((0..rows).map(|i| format!("{i},user{i}@ok\n")))
                .collect();
            for request_id in ["a", "b", "c", "d"] {
                let text = output_text(&input, request_id);
                assert_eq!(text, output_text(&input, request_id));
                let keys: Vec<usize> = text
                    .lines()
                    .skip(1)
                    .map(|line| {
                        line.split(',')
                            .next()
                            .and_then(|k| k.parse().ok())
                            .expect("key")
                    })
                    .collect();
                let mut sorted = keys.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..rows).collect::<Vec<_>>());
                assert_ne!(keys, sorted, "{rows} rows, request {request_id}");
            }
        }
    }
}
