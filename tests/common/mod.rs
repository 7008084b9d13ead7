//! The integration-test harness: the real binary, against the sandbox running as a separate
//! process on a loopback port, in a temporary directory per test.

#![allow(dead_code)]

pub mod browser;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bulkverify");

/// The package's directory as cargo gives it to the running test, since a test built in
/// another checkout (a build cache shared between clones) holds that checkout's path; the path
/// it was built with when run by hand.
pub fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
pub const CLIENT_ID: &str = "sandbox_client";
pub const CLIENT_SECRET: &str = "free_tier_sandbox_secret";
pub const ATTESTR_TOKEN: &str = "sandbox_attestr_token";
pub const EQUAL_SECRET: &str = "sandbox_equal_secret";

/// `bulkverify sandbox`, killed when dropped.
pub struct Sandbox {
    child: Child,
    pub url: String,
}

impl Sandbox {
    /// Starts a sandbox with these flags on a free port.
    pub fn start(flags: &[&str]) -> Sandbox {
        Sandbox::start_on(0, flags)
    }

    /// Starts a sandbox on `port` (0: a free one).
    pub fn start_on(port: u16, flags: &[&str]) -> Sandbox {
        let mut child = Command::new(BIN)
            .args(["sandbox", "--port", &port.to_string()])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the sandbox");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // Keep reading what the sandbox prints, so that it never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let url = line
            .trim()
            .strip_prefix("bulkverify sandbox listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Sandbox { child, url }
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// A sandbox without rate limits and with quick results.
    pub fn quick(extra: &[&str]) -> Sandbox {
        Sandbox::start(&quick_flags(extra))
    }

    pub fn stats(&self) -> serde_json::Value {
        let hostport = self.url.trim_start_matches("http://");
        let mut s = TcpStream::connect(hostport).unwrap();
        write!(
            s,
            "GET /_sandbox/stats HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        serde_json::from_str(&body).unwrap()
    }

    /// Accepted (paid) submissions of each Udyam number.
    pub fn submissions(&self) -> std::collections::BTreeMap<String, u64> {
        counts(&self.stats()["udyam_submissions"])
    }

    pub fn uploads(&self) -> std::collections::BTreeMap<String, u64> {
        counts(&self.stats()["batch_uploads"])
    }

    pub fn vpa_uploads(&self) -> std::collections::BTreeMap<String, u64> {
        counts(&self.stats()["vpa_uploads"])
    }
}

/// The flags of [`Sandbox::quick`], then `extra` (a flag given twice takes its last value).
pub fn quick_flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec![
        "--per-second",
        "0",
        "--per-minute",
        "0",
        "--per-day",
        "0",
        "--udyam-delay-ms",
        "300",
        "--batch-delay-ms",
        "300",
        "--batch-ms-per-row",
        "0",
    ];
    flags.extend_from_slice(extra);
    flags
}

fn counts(v: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A job's directory: inputs, config, output and state.
pub struct Job {
    pub dir: tempfile::TempDir,
}

impl Job {
    pub fn new() -> Job {
        Job {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    /// `bulkverify run --check CHECK --config bulkverify.toml -o out.csv --progress off ARGS`,
    /// in the job's directory, against `sandbox`.
    pub fn run(&self, sandbox: &Sandbox, check: &str, args: &[&str]) -> Command {
        self.run_showing(sandbox, check, "off", args)
    }

    /// [`Job::run`] with another `--progress` mode.
    pub fn run_showing(
        &self,
        sandbox: &Sandbox,
        check: &str,
        progress: &str,
        args: &[&str],
    ) -> Command {
        self.command(
            sandbox,
            "run",
            check,
            &[&["--progress", progress], args].concat(),
        )
    }

    /// `bulkverify plan --check CHECK --json ARGS`, in the job's directory, against `sandbox`.
    pub fn plan(&self, sandbox: &Sandbox, check: &str, args: &[&str]) -> Command {
        self.command(sandbox, "plan", check, &[&["--json"], args].concat())
    }

    /// `bulkverify COMMAND --check CHECK ARGS` with the sandbox's environment.
    pub fn command(&self, sandbox: &Sandbox, command: &str, check: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path())
            .args([command, "--check", check])
            .args(args)
            .env_remove("RUST_LOG")
            .env("BULKVERIFY_LEDGER_DIR", self.path("ledger"))
            .env("DEEPVUE_BASE_URL", &sandbox.url)
            .env("DEEPVUE_CLIENT_ID", CLIENT_ID)
            .env("DEEPVUE_CLIENT_SECRET", CLIENT_SECRET)
            .env("CASHFREE_BASE_URL", format!("{}/verification", sandbox.url))
            .env("CASHFREE_CLIENT_ID", "sandbox_cf_client")
            .env("CASHFREE_CLIENT_SECRET", "sandbox_cf_secret")
            .env("ATTESTR_BASE_URL", &sandbox.url)
            .env("ATTESTR_AUTH_TOKEN", ATTESTR_TOKEN)
            .env("EQUAL_BASE_URL", &sandbox.url)
            .env("EQUAL_CLIENT_ID", "sandbox_equal_client")
            .env("EQUAL_CLIENT_SECRET", EQUAL_SECRET)
            .env("EQUAL_JOURNEY_ID", "sandbox-aadhaar-otp");
        c
    }
}

pub fn output(mut c: Command) -> Output {
    c.output().expect("run bulkverify")
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The job's `out.csv` rows by their first column, each as a map of column to value.
pub fn rows_by_id(
    job: &Job,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    let (headers, rows) = read_csv(&job.path("out.csv"));
    rows.iter()
        .map(|r| (r[0].clone(), row_map(&headers, r)))
        .collect()
}

/// An output CSV as a header and records of strings.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (headers, rows)
}

/// One output row as `column → value`.
pub fn row_map(headers: &[String], row: &[String]) -> std::collections::BTreeMap<String, String> {
    headers.iter().cloned().zip(row.iter().cloned()).collect()
}

/// An output with the columns that legitimately differ between two runs blanked.
pub fn comparable(path: &Path, volatile: &[&str]) -> Vec<Vec<String>> {
    let (headers, rows) = read_csv(path);
    let blank: Vec<usize> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| volatile.contains(&h.as_str()))
        .map(|(i, _)| i)
        .collect();
    let mut out = vec![headers];
    for mut r in rows {
        for &i in &blank {
            r[i].clear();
        }
        out.push(r);
    }
    out
}

/// Every file under `dir`, recursively, with its bytes; none when `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            out.push((p, bytes));
        }
    }
    out
}

/// Whether `needle` occurs in `haystack`, which need not be text.
pub fn contains_bytes(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Waits until `f` holds, or panics after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a pid we own.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// `n` distinct Udyam numbers that are none of the scripted test serials.
pub fn udyam_numbers(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("UDYAM-MH-01-{:07}", 100_000 + i))
        .collect()
}

pub fn udyam_input(numbers: &[String]) -> String {
    let mut s = String::from("id,udyam\n");
    for (i, n) in numbers.iter().enumerate() {
        s.push_str(&format!("{i:06},{n}\n"));
    }
    s
}
