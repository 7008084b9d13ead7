//! The reader's unit tests: parsing, headers, fingerprints, and the encodings and delimiters.

use super::*;
use crate::input::dialect::{Delimiter, TextEncoding};

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
    let files = InputFile::open_all(&[p], Dialect::default()).unwrap();
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
    let files = InputFile::open_all(&[p], Dialect::default()).unwrap();
    let err = all(&files[0]).unwrap_err().to_string();
    assert!(err.contains("r.csv, line 6:"), "{err}");
    assert!(err.contains("3 fields where the header has 2"), "{err}");
}

#[test]
fn header_problems_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "e.csv", b"");
    assert!(matches!(
        InputFile::open_all(&[empty], Dialect::default()).unwrap_err(),
        InputError::Empty { .. }
    ));
    let dup = write(dir.path(), "d.csv", b"a,b,a\n1,2,3\n");
    let err = InputFile::open_all(&[dup], Dialect::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"a\" appears twice (columns 1 and 3)"),
        "{err}"
    );
    let missing = dir.path().join("nope.csv");
    assert!(matches!(
        InputFile::open_all(&[missing], Dialect::default()).unwrap_err(),
        InputError::Io { .. }
    ));
}

#[test]
fn column_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.csv", b"UdyamNo,udyam_number,Reg\n1,2,3\n");
    let file = &InputFile::open_all(&[p], Dialect::default()).unwrap()[0];
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
    let f = &InputFile::open_all(std::slice::from_ref(&p), Dialect::default()).unwrap()[0];
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
        InputFile::open_all(std::slice::from_ref(&p), Dialect::default()).unwrap()[0]
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

fn dialect(encoding: TextEncoding, delimiter: &str) -> Dialect {
    Dialect {
        encoding,
        delimiter: Delimiter::parse(delimiter).unwrap(),
    }
}

fn open(path: &Path, dialect: Dialect) -> Result<InputFile, InputError> {
    InputFile::open_all(&[path.to_path_buf()], dialect).map(|mut f| f.remove(0))
}

fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    text.encode_utf16()
        .flat_map(|u| {
            if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            }
        })
        .collect()
}

/// A Windows-1252 byte is refused where it is (its physical line, past a quoted line break,
/// and its column), with the flag that reads it; with the flag the file reads as its text.
#[test]
fn windows_1252_is_refused_where_it_is_and_read_with_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"id,name\n1,plain\n2,\"two\nlines\"\n3,Caf\xe9 \xd1and\xfa\x92s\n";
    let p = write(dir.path(), "w.csv", data);
    let err = open(&p, Dialect::default()).unwrap_err().to_string();
    for says in [
        "w.csv, line 5, column 2 (name): byte 0xE9 is not valid UTF-8",
        "Windows-1252 (where it is \"é\")",
        "run with --encoding windows-1252, or save it from Excel as \"CSV UTF-8\"",
    ] {
        assert!(err.contains(says), "{err}");
    }
    let file = open(&p, dialect(TextEncoding::Windows1252, ",")).unwrap();
    assert_eq!(all(&file).unwrap()[2].1, ["3", "Café Ñandú’s"]);

    // Past the bytes looked at on opening: the fingerprint, which reads every byte before
    // planning, refuses it, and so would any pass that met it.
    let mut long = b"id,name\n".to_vec();
    while long.len() <= SNIFF_BYTES {
        long.extend_from_slice(b"1,plain\n");
    }
    let lines = long.iter().filter(|b| **b == b'\n').count() + 1;
    long.extend_from_slice(b"2,\x92\n");
    let p = write(dir.path(), "long.csv", &long);
    let file = open(&p, Dialect::default()).unwrap();
    let at = format!("long.csv, line {lines}, column 2 (name): byte 0x92");
    for err in [
        file.fingerprint(None).unwrap_err(),
        file.fingerprint(Some(1)).unwrap_err(),
        all(&file).unwrap_err(),
    ] {
        assert!(err.to_string().contains(&at), "{err}");
    }
    let file = open(&p, dialect(TextEncoding::Windows1252, ",")).unwrap();
    file.fingerprint(None).unwrap();
    assert_eq!(all(&file).unwrap().last().unwrap().1, ["2", "’"]);
}

/// A UTF-8 file read as Windows-1252 would come back garbled: refused once the whole file is
/// seen to be UTF-8. A UTF-8 byte-order mark makes it UTF-8 whatever the flag says.
#[test]
fn utf8_read_as_windows_1252_is_refused_unless_its_bom_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let latin = dialect(TextEncoding::Windows1252, ",");
    let p = write(dir.path(), "u.csv", "id,name\n1,x\n2,Café\n".as_bytes());
    let file = open(&p, latin).unwrap();
    let err = file.fingerprint(None).unwrap_err().to_string();
    assert!(err.contains("u.csv, line 3, column 2 (name)"), "{err}");
    assert!(
        err.contains("is UTF-8, not Windows-1252: \"é\" would be read as \"Ã©\""),
        "{err}"
    );
    assert!(err.contains("run without --encoding"), "{err}");
    let p = write(
        dir.path(),
        "bom.csv",
        "\u{feff}id,name\n2,Café\n".as_bytes(),
    );
    let file = open(&p, latin).unwrap();
    file.fingerprint(None).unwrap();
    assert_eq!(all(&file).unwrap()[0].1, ["2", "Café"]);
    let ascii = write(dir.path(), "a.csv", b"id,name\n1,x\n");
    open(&ascii, latin).unwrap().fingerprint(None).unwrap();
}

/// Excel's "Unicode Text", in either byte order, with or without a byte-order mark: refused
/// without the flags (which the error names), read with them; line numbers count its lines.
#[test]
fn utf16_is_refused_with_the_flags_that_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = "id\tname\tudyam\r\n1\tCafé Ñandú’s\tUDYAM-MH-01-0000001\r\n";
    let le = write(
        dir.path(),
        "le.txt",
        &[&b"\xFF\xFE"[..], &utf16(text, false)].concat(),
    );
    let be = write(dir.path(), "be.txt", &utf16(text, true));
    for (p, order) in [(&le, "UTF-16LE"), (&be, "UTF-16BE")] {
        for encoding in [TextEncoding::Utf8, TextEncoding::Windows1252] {
            let err = open(p, dialect(encoding, ",")).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "the file is {order} text with tabs between its columns"
                )),
                "{err}"
            );
            assert!(
                err.contains("run with --encoding utf-16 --delimiter tab, or save it from Excel"),
                "{err}"
            );
        }
        let err = open(p, dialect(TextEncoding::Utf16, ","))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1: the header reads as one column"),
            "{err}"
        );
        assert!(err.contains("run with --delimiter tab"), "{err}");
        let file = open(p, dialect(TextEncoding::Utf16, "tab")).unwrap();
        assert_eq!(file.headers, ["id", "name", "udyam"]);
        assert_eq!(
            all(&file).unwrap(),
            [(
                0,
                vec![
                    "1".into(),
                    "Café Ñandú’s".into(),
                    "UDYAM-MH-01-0000001".into()
                ]
            )]
        );
    }
    let ragged = write(
        dir.path(),
        "r.txt",
        &utf16("a\tb\r\n\"x\ny\"\t2\r\n3\t4\t5\r\n", false),
    );
    let file = open(&ragged, dialect(TextEncoding::Utf16, "tab")).unwrap();
    let err = all(&file).unwrap_err().to_string();
    assert!(
        err.contains("r.txt, line 4: this row has 3 fields"),
        "{err}"
    );

    let utf8 = write(dir.path(), "u.csv", "id,name\n1,Café\n".as_bytes());
    let err = open(&utf8, dialect(TextEncoding::Utf16, ","))
        .unwrap_err()
        .to_string();
    assert!(err.contains("u.csv: the file is not UTF-16"), "{err}");
    assert!(err.contains("run without --encoding utf-16"), "{err}");
}

#[test]
fn a_header_that_another_delimiter_splits_names_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (data, flag, delimiter) in [
        (&b"id;name;udyam\n1;x;U1\n"[..], "--delimiter ';'", ";"),
        (b"id|name|udyam\n1|x|U1\n", "--delimiter '|'", "|"),
        (b"id\tname\tudyam\n1\tx\tU1\n", "--delimiter tab", "tab"),
    ] {
        let p = write(dir.path(), "s.csv", data);
        let err = open(&p, Dialect::default()).unwrap_err().to_string();
        assert!(
            err.contains("s.csv, line 1: the header reads as one column with commas"),
            "{err}"
        );
        assert!(err.contains("as 3 columns with"), "{err}");
        assert!(err.ends_with(&format!("run with {flag}")), "{err}");
        let file = open(&p, dialect(TextEncoding::Utf8, delimiter)).unwrap();
        assert_eq!(file.headers, ["id", "name", "udyam"]);
        assert_eq!(all(&file).unwrap()[0].1, ["1", "x", "U1"]);
    }
    let p = write(dir.path(), "c.csv", b"id,name\n1,x\n");
    let err = open(&p, dialect(TextEncoding::Utf8, ";"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("run with --delimiter ','"), "{err}");
    let single = write(dir.path(), "one.csv", b"udyam\nU1\n");
    assert_eq!(
        open(&single, Dialect::default()).unwrap().headers,
        ["udyam"]
    );
}

#[test]
fn a_workbook_is_not_taken_for_text() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "book.csv", b"PK\x03\x04\x14\x00\x06\x00rest");
    let err = open(&p, Dialect::default()).unwrap_err().to_string();
    assert!(
        err.contains("book.csv: the file is a spreadsheet workbook"),
        "{err}"
    );
}

/// The fingerprint is of the bytes and how they are read: the same bytes read another way
/// are other rows. UTF-8 with commas adds nothing, so that states made before keep theirs.
/// With a column filled later it is of the values as read, so that saving the file again as
/// UTF-8 between the two runs keeps it.
#[test]
fn the_fingerprint_covers_how_the_bytes_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"name\nx\n";
    let p = write(dir.path(), "f.csv", data);
    let fp = |dialect: Dialect, skip| open(&p, dialect).unwrap().fingerprint(skip).unwrap();
    let plain = format!("{:x}", Sha256::digest(data));
    assert_eq!(fp(Dialect::default(), None), plain);
    assert_ne!(fp(dialect(TextEncoding::Windows1252, ","), None), plain);
    assert_ne!(
        fp(dialect(TextEncoding::Utf8, "|"), None),
        plain,
        "the same rows, read another way"
    );

    let latin = write(dir.path(), "l.csv", b"id,name,otp\n1,Caf\xe9,\n");
    let saved = write(
        dir.path(),
        "s.csv",
        "id,name,otp\n1,Café,123456\n".as_bytes(),
    );
    let latin = open(&latin, dialect(TextEncoding::Windows1252, ","))
        .unwrap()
        .fingerprint(Some(2))
        .unwrap();
    let saved = open(&saved, Dialect::default())
        .unwrap()
        .fingerprint(Some(2))
        .unwrap();
    assert_eq!(latin, saved);
}

#[test]
fn a_first_line_of_values_is_shown_by_its_shape_only() {
    for (cells, shown) in [
        (vec!["id", "pan", "name"], "\"id\", \"pan\", \"name\""),
        (
            vec!["1", "ABCPE1234F", "Ravi Kumar"],
            "a first line of 3 cells that looks like a row of values, not column names (cell 2",
        ),
        (
            vec!["ravi@okicici"],
            "a first line of 1 cell that looks like a row of values",
        ),
    ] {
        let words = super::header_in_words(&cells);
        assert!(words.starts_with(shown), "{words}");
        if words.contains("values") {
            assert!(cells.iter().all(|c| !words.contains(c)), "{words}");
        }
    }
}
