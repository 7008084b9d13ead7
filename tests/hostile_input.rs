//! Hostile input files: each malformed export stops the run before any call with an error that
//! names the file, the line and (where there is one) the column, or goes through with every row
//! accounted for. Never a panic, never a row dropped without a word.

mod common;

use common::*;

const ARGS: &[&str] = &["-o", "out.csv", "in.csv"];
const UDYAM: &str = "UDYAM-MH-01-0000001";

/// Runs deepvue-udyam on `input`; returns the exit code and stderr.
fn run(sandbox: &Sandbox, job: &Job, input: &[u8]) -> (i32, String) {
    job.write("in.csv", input);
    let o = output(job.run(sandbox, "deepvue-udyam", ARGS));
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    (code(&o), err)
}

#[test]
fn malformed_exports_are_refused_with_file_line_and_column() {
    let sandbox = Sandbox::quick(&[]);
    let mut invalid_utf8 = format!("id,udyam\n1,{UDYAM}\n2,").into_bytes();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, b'\n']);
    for (case, input, says) in [
        (
            "ragged row",
            format!("id,udyam\n1,{UDYAM}\n2,{UDYAM},extra\n").into_bytes(),
            vec!["in.csv, line 3", "3 fields where the header has 2"],
        ),
        (
            "invalid UTF-8",
            invalid_utf8,
            vec!["in.csv, line 3, column 2 (udyam)", "not valid UTF-8"],
        ),
        ("empty file", Vec::new(), vec!["in.csv: the file is empty"]),
        (
            "missing column",
            b"id,name\n1,x\n".to_vec(),
            vec!["in.csv: no column for `udyam`", "--column udyam=NAME"],
        ),
        (
            "a workbook",
            b"PK\x03\x04\x14\x00\x06\x00[Content_Types].xml".to_vec(),
            vec![
                "in.csv: the file is a spreadsheet workbook",
                "\"CSV UTF-8\"",
            ],
        ),
        (
            "duplicate header",
            format!("id,id,udyam\n1,2,{UDYAM}\n").into_bytes(),
            vec!["in.csv: the column name \"id\" appears twice (columns 1 and 2)"],
        ),
    ] {
        let job = Job::new();
        let (code, err) = run(&sandbox, &job, &input);
        assert_eq!(code, 1, "{case}: {err}");
        for s in says {
            assert!(err.contains(s), "{case}: {err}");
        }
        assert!(!job.path("out.csv").exists(), "{case}: no output");
    }
    assert!(
        sandbox.submissions().is_empty(),
        "no call is made for a malformed export"
    );
}

#[test]
fn awkward_but_valid_exports_come_back_whole() {
    let sandbox = Sandbox::quick(&[]);
    let big = "x".repeat(1 << 20);
    for (case, input, rows) in [
        (
            "a BOM",
            format!("\u{feff}id,udyam\n1,{UDYAM}\n").into_bytes(),
            1,
        ),
        (
            "quotes spanning lines",
            format!("id,note,udyam\n1,\"two\nlines, and \"\"quotes\"\"\",{UDYAM}\n2,x,bad\n")
                .into_bytes(),
            2,
        ),
        (
            "a 1 MB field",
            format!("id,note,udyam\n1,{big},{UDYAM}\n").into_bytes(),
            1,
        ),
        ("header only", b"id,udyam\n".to_vec(), 0),
    ] {
        let job = Job::new();
        let (code, err) = run(&sandbox, &job, &input);
        assert!(matches!(code, 0 | 75), "{case}: {err}");
        let (headers, out) = read_csv(&job.path("out.csv"));
        assert_eq!(headers[0], "id", "{case}");
        assert_eq!(out.len(), rows, "{case}: every row comes back");
        let first_input: Vec<String> = csv::Reader::from_reader(
            String::from_utf8(input.clone())
                .unwrap()
                .trim_start_matches('\u{feff}')
                .as_bytes(),
        )
        .records()
        .map(|r| {
            r.unwrap()
                .iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
                .join("\u{1f}")
        })
        .collect();
        for (row, original) in out.iter().zip(&first_input) {
            let width = original.split('\u{1f}').count();
            assert_eq!(
                row[..width].join("\u{1f}"),
                *original,
                "{case}: values kept"
            );
        }
    }
    let job = Job::new();
    run(
        &sandbox,
        &job,
        format!("id,note,udyam\n1,\"two\nlines\",{UDYAM}\n2,x,bad\n").as_bytes(),
    );
    let rows = rows_by_id(&job);
    assert_eq!(
        rows["2"]["bv_status"], "invalid_input",
        "a bad cell is the row's"
    );
    assert_eq!(rows["2"]["bv_reason"], "udyam_format");
}
