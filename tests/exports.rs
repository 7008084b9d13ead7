//! The exports people actually have: Excel's "Unicode Text" (UTF-16, tabs), "CSV (Comma
//! delimited)" in Windows-1252, and semicolons. Each is refused before any call with what it is
//! and the flags that read it; with them it runs end to end, and the output is UTF-8 with
//! commas, its input columns the decoded text.

mod common;

use common::*;

/// Quick polls, quotas far above what a test sends.
const CONFIG: &str = "
[providers.deepvue]
per_second = 1000
per_minute = 60000
per_day = 1000000
concurrency = 16

[checks.deepvue-udyam]
poll_initial_secs = 0.2
poll_max_secs = 0.5
poll_deadline_secs = 3
";

const NAMES: [&str; 3] = ["Café Ñandú’s", "Zoë Straße", "plain"];

/// `run --check deepvue-udyam` on `input` with `flags`; the exit code and stderr.
fn run(sandbox: &Sandbox, job: &Job, input: &str, flags: &[&str]) -> (i32, String) {
    let args = [
        flags,
        &["--config", "bulkverify.toml", "-o", "out.csv", input],
    ]
    .concat();
    let o = output(job.run(sandbox, "deepvue-udyam", &args));
    (code(&o), stderr(&o))
}

/// The rows of the export as text: id, name, udyam.
fn rows() -> Vec<[String; 3]> {
    udyam_numbers(NAMES.len())
        .into_iter()
        .zip(NAMES)
        .enumerate()
        .map(|(i, (udyam, name))| [format!("{i:03}"), name.to_string(), udyam])
        .collect()
}

/// The export as `delimiter`-separated text with CRLF line ends, as Excel writes it.
fn text(delimiter: &str) -> String {
    let mut s = ["id", "name", "udyam"].join(delimiter) + "\r\n";
    for row in rows() {
        s.push_str(&(row.join(delimiter) + "\r\n"));
    }
    s
}

/// Every row came back verified, in order, with its input columns the export's text.
fn assert_output_is_the_text(job: &Job) {
    let raw = std::fs::read(job.path("out.csv")).unwrap();
    let out = String::from_utf8(raw).expect("the output is UTF-8");
    assert!(
        out.starts_with("id,name,udyam,bv_status,"),
        "comma-separated: {out}"
    );
    let (headers, got) = read_csv(&job.path("out.csv"));
    assert_eq!(headers[..3], ["id", "name", "udyam"]);
    assert_eq!(got.len(), NAMES.len());
    for (row, want) in got.iter().zip(rows()) {
        assert_eq!(row[..3], want, "the input columns are the decoded text");
        assert_eq!(row[3], "verified", "{row:?}");
    }
}

#[test]
fn excels_unicode_text_is_refused_then_read_with_its_flags() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let mut bytes = b"\xFF\xFE".to_vec();
    bytes.extend(text("\t").encode_utf16().flat_map(u16::to_le_bytes));
    job.write("in.txt", &bytes);

    let (code, err) = run(&sandbox, &job, "in.txt", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "in.txt: the file is UTF-16LE text with tabs between its columns, as Excel saves \
             \"Unicode Text\"; run with --encoding utf-16 --delimiter tab, or save it from \
             Excel as \"CSV UTF-8\""
        ),
        "{err}"
    );
    assert!(!job.path("out.csv").exists());
    assert!(
        sandbox.submissions().is_empty(),
        "no call for a refused file"
    );

    let (code, err) = run(
        &sandbox,
        &job,
        "in.txt",
        &["--encoding", "utf-16", "--delimiter", "tab"],
    );
    assert_eq!(code, 0, "{err}");
    assert_output_is_the_text(&job);
}

#[test]
fn a_windows_1252_export_is_refused_then_read_with_encoding() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    let utf8 = text(",");
    let (bytes, _, lossy) = encoding_rs::WINDOWS_1252.encode(&utf8);
    assert!(!lossy);
    job.write("in.csv", &bytes);

    let (code, err) = run(&sandbox, &job, "in.csv", &[]);
    assert_eq!(code, 1, "{err}");
    for says in [
        "in.csv, line 2, column 2 (name): byte 0xE9 is not valid UTF-8",
        "run with --encoding windows-1252, or save it from Excel as \"CSV UTF-8\"",
    ] {
        assert!(err.contains(says), "{err}");
    }
    assert!(
        sandbox.submissions().is_empty(),
        "no call for a refused file"
    );

    let (code, err) = run(&sandbox, &job, "in.csv", &["--encoding", "windows-1252"]);
    assert_eq!(code, 0, "{err}");
    assert_output_is_the_text(&job);
    let out = std::fs::read(job.path("out.csv")).unwrap();
    assert!(contains_bytes(&out, "Café Ñandú’s"));

    // latin1 is WHATWG's name for the same encoding: the same job, resumed, makes no call.
    let calls = sandbox.stats()["requests"].as_u64().unwrap();
    let (code, err) = run(&sandbox, &job, "in.csv", &["--encoding", "latin1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sandbox.stats()["requests"].as_u64().unwrap(), calls);
}

/// The state's fingerprint of an input covers how it is read: the same bytes resumed with
/// another --encoding or --delimiter are refused, not given the old outcomes.
#[test]
fn a_job_is_not_resumed_with_other_reading_flags() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    // One column, so that every delimiter reads the same rows from it.
    let numbers = udyam_numbers(2);
    job.write("in.csv", format!("udyam\n{}\n", numbers.join("\n")));
    let (code, err) = run(&sandbox, &job, "in.csv", &[]);
    assert_eq!(code, 0, "{err}");
    let calls = sandbox.stats()["requests"].as_u64().unwrap();
    for flags in [&["--encoding", "windows-1252"], &["--delimiter", "|"]] {
        let (code, err) = run(&sandbox, &job, "in.csv", flags);
        assert_eq!(code, 1, "{flags:?}: {err}");
        assert!(
            err.contains("or is read with another --encoding or --delimiter"),
            "{flags:?}: {err}"
        );
    }
    assert_eq!(sandbox.stats()["requests"].as_u64().unwrap(), calls);
}

#[test]
fn a_semicolon_export_names_its_delimiter_and_runs_with_it() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    job.write("bulkverify.toml", CONFIG);
    job.write("in.csv", text(";"));

    let (exit, err) = run(&sandbox, &job, "in.csv", &[]);
    assert_eq!(exit, 1, "{err}");
    assert!(
        err.contains(
            "in.csv, line 1: the header reads as one column with commas between columns \
             (\"id;name;udyam\"), but as 3 columns with semicolons; run with --delimiter ';'"
        ),
        "{err}"
    );
    assert!(!err.contains("no column for"), "{err}");
    assert!(
        sandbox.submissions().is_empty(),
        "no call for a refused file"
    );

    let plan = output(job.plan(
        &sandbox,
        "deepvue-udyam",
        &[
            "--config",
            "bulkverify.toml",
            "--delimiter",
            ";",
            "-o",
            "out.csv",
            "in.csv",
        ],
    ));
    assert_eq!(code(&plan), 0, "{}", stderr(&plan));
    let (exit, err) = run(&sandbox, &job, "in.csv", &["--delimiter", ";"]);
    assert_eq!(exit, 0, "{err}");
    assert_output_is_the_text(&job);
}
