//! Canaries: jobs on every provider run with a known API secret, a synthetic Aadhaar number, a
//! PAN, a bank account number and pre-signed download URLs, at every verbosity. Everything the
//! tool wrote except the output file is then searched: stderr and stdout (logs, progress
//! lines, the summary, error messages), every file of the state and of the usage ledger, and
//! `--help`, and the summary JSON, the metrics file and the HTML report of every run, failed
//! ones included. No
//! secret, no URL signature and no full Aadhaar number may appear anywhere; the PAN and the
//! account number, personal data the state keeps only as the providers' answers, may not
//! appear in what is printed, and no identifier appears in the results store, the summary JSON,
//! the metrics or the report.

mod common;

use common::*;

const ARGS: &[&str] = &["--config", "bulkverify.toml", "-o", "out.csv", "in.csv"];
const MONITORED: &[&str] = &[
    "--summary-json",
    "summary.json",
    "--metrics-file",
    "job.prom",
];
const AADHAAR: &str = "987654321096";
const PAN: &str = "ABCPE1234F";
const ACCOUNT: &str = "026291800001191";

#[test]
fn no_secret_signature_or_full_aadhaar_is_written_anywhere() {
    let sandbox = Sandbox::quick(&[]);
    let mut printed = Vec::<u8>::new();
    let mut stored = Vec::new();
    let mut monitored = Vec::<u8>::new();
    let mut monitor = |job: &Job| {
        for file in ["summary.json", "job.prom", "out.csv.report.html"] {
            let bytes = std::fs::read(job.path(file)).expect("the run wrote its monitoring files");
            monitored.extend_from_slice(&bytes);
        }
    };
    let jobs: [(&str, String); 4] = [
        (
            "equal-aadhaar-otp",
            format!("id,aadhaar,otp\n1,{AADHAAR},\n"),
        ),
        (
            "cashfree-pan-bulk",
            format!("id,pan,name\n1,{PAN},Ravi Kumar\n"),
        ),
        (
            "cashfree-bank-bulk",
            format!("id,bank_account,ifsc,name\n1,{ACCOUNT},YESB0000262,Ravi Kumar\n"),
        ),
        (
            "deepvue-upi-batch",
            "id,vpa\n1,ravi@okicici\n2,anita@ybl\n".to_string(),
        ),
    ];
    for (check, input) in jobs {
        for verbosity in [None, Some("-v"), Some("-vv")] {
            let job = Job::new();
            job.write(
                "bulkverify.toml",
                "[checks.cashfree-bank-bulk]\npoll_initial_secs = 0.2\n\
                 [checks.cashfree-pan-bulk]\npoll_initial_secs = 0.2\n\
                 [checks.deepvue-upi-batch]\npoll_initial_secs = 0.2\n",
            );
            job.write("in.csv", &input);
            for second_step in [false, true] {
                if second_step {
                    job.write("in.csv", input.replace(",\n", ",123456\n"));
                }
                let mut c = job.run_showing(&sandbox, check, "lines", ARGS);
                c.args(["--progress-interval", "1"]).args(MONITORED);
                if let Some(v) = verbosity {
                    c.arg(v).env("RUST_LOG", "trace");
                }
                let o = output(c);
                assert!(matches!(code(&o), 0 | 75), "{check}: {}", stderr(&o));
                printed.extend_from_slice(&o.stderr);
                printed.extend_from_slice(&o.stdout);
                monitor(&job);
            }
            stored.extend(files_under(&job.path("out.csv.bulkverify")));
            let ledger = files_under(&job.path("ledger"));
            // The results store keeps answers under keyed hashes: no identifier in clear.
            let store = ledger
                .iter()
                .find(|(p, _)| p.ends_with("results.sqlite"))
                .expect("the results store was made");
            let kept: Vec<u8> = ledger
                .iter()
                .filter(|(p, _)| p.to_string_lossy().contains("results.sqlite"))
                .flat_map(|(_, b)| b.iter().copied())
                .collect();
            assert!(!store.1.is_empty());
            for ident in [AADHAAR, PAN, ACCOUNT, "ravi@okicici", "anita@ybl"] {
                assert!(
                    !contains_bytes(&kept, ident),
                    "{ident} is in the results store"
                );
            }
            stored.extend(ledger);
        }
    }
    // Refusals print what went wrong: never with the secret that was refused.
    let job = Job::new();
    job.write("in.csv", format!("id,pan,name\n1,{PAN},Ravi Kumar\n"));
    let mut c = job.run(&sandbox, "cashfree-pan-bulk", &["-o", "out.csv", "in.csv"]);
    c.env("CASHFREE_CLIENT_SECRET", "canary-wrong-secret-42")
        .args(MONITORED);
    let o = output(c);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    printed.extend_from_slice(&o.stderr);
    monitor(&job);
    // A headerless export's first row is read as its header, which an error about its columns
    // would list: it is shown by its shape alone, as a semicolon file's is.
    for (name, line) in [
        ("headerless.csv", format!("1,{PAN},Ravi Kumar\n")),
        ("semicolons.csv", format!("1;{PAN};Ravi Kumar\n")),
    ] {
        job.write(name, line);
        let mut c = job.run(&sandbox, "cashfree-pan-bulk", &[name]);
        c.args(MONITORED);
        let o = output(c);
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        assert!(
            stderr(&o).contains("looks like a row of values"),
            "{}",
            stderr(&o)
        );
        printed.extend_from_slice(&o.stderr);
        monitor(&job);
    }
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["sandbox", "--help"],
        &["purge", "--help"],
    ] {
        let o = output({
            let mut c = std::process::Command::new(BIN);
            c.args(args);
            c
        });
        printed.extend_from_slice(&o.stdout);
    }

    let secrets = [
        CLIENT_SECRET,
        "sandbox_cf_secret",
        ATTESTR_TOKEN,
        EQUAL_SECRET,
        "canary-wrong-secret-42",
        "X-Amz-Signature",
        AADHAAR,
    ];
    for s in secrets {
        assert!(!contains_bytes(&printed, s), "{s} was printed");
        for (path, bytes) in &stored {
            assert!(!contains_bytes(bytes, s), "{s} is in {}", path.display());
        }
    }
    for personal in [PAN, ACCOUNT, "Ravi Kumar"] {
        assert!(
            !contains_bytes(&printed, personal),
            "{personal} was printed"
        );
    }
    for canary in secrets
        .iter()
        .chain(&[PAN, ACCOUNT, "Ravi Kumar", "ravi@okicici", "anita@ybl"])
    {
        assert!(
            !contains_bytes(&monitored, canary),
            "{canary} is in a summary JSON or a metrics file"
        );
    }
    // The searches above had something to search: every job wrote its state, printed, and
    // wrote its monitoring files.
    assert!(stored.len() >= 12 && printed.len() > 1000 && monitored.len() > 10_000);
}
