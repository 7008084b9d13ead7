//! End-to-end throughput of `bulkverify run` against the built-in sandbox.
//!
//! Every scenario starts `bulkverify sandbox --port 0 ...` as its own process, writes a fresh
//! input CSV and config file into a temporary directory, runs `bulkverify run` as a second
//! process against the sandbox, and prints one block of figures:
//!
//! - `wall`, `rows/s`: the client process's elapsed time, from spawn to exit, and rows over it.
//! - `client CPU`, `client peak memory`: user + system seconds and the peak resident memory of
//!   the client process alone (from `wait4` when it is reaped), CPU also per input row. Compare
//!   the peak memory across row counts (`BENCH_ROWS`) to see what grows with the input.
//! - `accepted`, `429 answers`: every `/v1` request the sandbox let through (authorize, submits,
//!   polls, uploads) and the ones it refused for the rate limit, from its `/_sandbox/stats`.
//! - `quota utilisation` (scenarios with quotas): accepted requests per second over the
//!   tightest paced quota, min(per-second, per-minute / 60) (the per-day quota is a budget, not
//!   a pace). 100 % means the client used every request the plan allows; above 100 % it broke
//!   the plan (and 429s show). The "busy" figure covers the whole seconds (by the sandbox's
//!   clock) after the one of the first accepted request, through the last second in which at
//!   least 80 % of the tightest rate was accepted: while rows are still being submitted the
//!   client should run at the quota, and once the last rows are in, only their polls remain and
//!   the rate falls below that threshold. The first second is left out because the first
//!   request lands somewhere inside it, so it is only partly busy. The "whole run" figure
//!   divides all accepted requests by the client's wall time, so it also counts start-up, the
//!   final polls and the writing of the output.
//!
//! - `429 answers`: refused over arrived `/v1` requests. The goals: at most 0.5 % with a
//!   known quota, at most 3 % with an unknown one.
//! - For the unknown-quota scenario (no quota in the config, the sandbox enforcing 20/s), the
//!   seconds until the client first reached 90 % of that limit and the utilisation over the
//!   first 30 s (goal: 90 % within 30 s).
//! - `client CPU per verified row`: the client's CPU over the rows that came back `verified`.
//!
//! A run whose exit code is not 0, or whose output does not hold one line per input row plus
//! the header, prints an `ERROR` line (with the end of the client's stderr) above its figures.
//! Timing is never asserted.
//!
//! `cargo bench --bench pipeline` runs every scenario; `-- upi` runs those whose name contains
//! `upi`. `BENCH_ROWS=N` replaces the row count of every scenario (for a quick try).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

mod common;
#[path = "pipeline/gateway.rs"]
mod gateway;
#[path = "pipeline/quota.rs"]
mod quota;

use common::{BIN, Sandbox, env_list, reap, wait_with_usage};

/// Rows of the Enterprise-quota Udyam scenario: about 1.5 to 2 minutes at ~16.7 requests/s.
const ENTERPRISE_UDYAM_ROWS: usize = 600;
const UNLIMITED_UDYAM_ROWS: usize = 5_000;
const UPI_BATCH_ROWS: usize = 50_000;
/// A minute at Cashfree's per-minute pacing of 1,200 requests.
const DIGILOCKER_ROWS: usize = 1_200;
const UNLIMITED_DIGILOCKER_ROWS: usize = 5_000;

/// A second counts as busy when the sandbox accepted at least this share of the tightest rate.
const BUSY_SHARE: f64 = 0.8;

/// A client run taking longer than this is killed and reported as hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Quotas given to the client, large enough never to pace it.
const HUGE: Limits = Limits {
    per_second: 100_000,
    per_minute: 6_000_000,
    per_day: 4_000_000_000,
};

/// A rate-limit plan: requests per second, minute and day (0 = no limit, for the sandbox).
#[derive(Clone, Copy)]
struct Limits {
    per_second: u64,
    per_minute: u64,
    per_day: u64,
}

impl Limits {
    const NONE: Limits = Limits {
        per_second: 0,
        per_minute: 0,
        per_day: 0,
    };
    const ENTERPRISE: Limits = Limits {
        per_second: 17,
        per_minute: 1000,
        per_day: 50_000,
    };

    /// The tightest sustained rate, in requests per second; `None` without any paced limit.
    fn tightest_rate(&self) -> Option<f64> {
        [
            (self.per_second > 0).then_some(self.per_second as f64),
            (self.per_minute > 0).then_some(self.per_minute as f64 / 60.0),
        ]
        .into_iter()
        .flatten()
        .reduce(f64::min)
    }

    fn describe(&self) -> String {
        if self.tightest_rate().is_none() {
            return "no limit".into();
        }
        format!(
            "{}/s, {}/min, {}/day",
            self.per_second, self.per_minute, self.per_day
        )
    }
}

/// What the input rows hold.
#[derive(Clone, Copy)]
enum Rows {
    Udyam,
    Vpa,
    /// DigiLocker verification ids the sandbox answers AUTHENTICATED.
    Digilocker,
}

impl Rows {
    /// Writes `n` rows with distinct identifiers, header first.
    fn write(self, path: &Path, n: usize) -> anyhow::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        match self {
            Rows::Udyam => {
                writeln!(out, "customer_id,udyam")?;
                for i in 0..n {
                    writeln!(out, "C{i:07},{}", udyam_number(i)?)?;
                }
            }
            Rows::Vpa => {
                writeln!(out, "loan_id,vpa")?;
                for i in 0..n {
                    writeln!(out, "L{i:07},user{i}@okicici")?;
                }
            }
            Rows::Digilocker => {
                writeln!(out, "customer_id,verification_id")?;
                for i in 0..n {
                    writeln!(out, "C{i:07},LINK-{i:07}")?;
                }
            }
        }
        out.flush()?;
        Ok(())
    }
}

/// The `i`-th distinct Udyam number, skipping serials 9000001..=9000007: the sandbox scripts
/// faults on those.
fn udyam_number(i: usize) -> anyhow::Result<String> {
    let mut serial = i + 1;
    if serial >= 9_000_001 {
        serial += 7;
    }
    if serial > 9_999_999 {
        bail!("too many rows for distinct Udyam serials");
    }
    Ok(format!("UDYAM-MH-01-{serial:07}"))
}

struct Scenario {
    name: &'static str,
    check: &'static str,
    /// The `[providers.<provider>]` section the client limits go to.
    provider: &'static str,
    rows: Rows,
    default_rows: usize,
    sandbox_limits: Limits,
    /// Further `bulkverify sandbox` flags: the simulated processing times.
    sandbox_flags: &'static [&'static str],
    /// The quotas written in the config; `None` writes none, so the client must find them.
    client_limits: Option<Limits>,
    concurrency: Option<usize>,
    /// Lines of the `[checks.<check>]` section.
    check_settings: &'static [&'static str],
}

impl Scenario {
    fn config(&self) -> String {
        let mut text = format!("[providers.{}]\n", self.provider);
        if let Some(l) = self.client_limits {
            // A zero is no such window: the config leaves it out.
            for (key, n) in [
                ("per_second", l.per_second),
                ("per_minute", l.per_minute),
                ("per_day", l.per_day),
            ] {
                if n > 0 {
                    text.push_str(&format!("{key} = {n}\n"));
                }
            }
        }
        if let Some(c) = self.concurrency {
            text.push_str(&format!("concurrency = {c}\n"));
        }
        text.push_str(&format!("\n[checks.{}]\n", self.check));
        for line in self.check_settings {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    fn sandbox_args(&self) -> Vec<String> {
        let l = self.sandbox_limits;
        let mut args = vec![
            "--per-second".to_string(),
            l.per_second.to_string(),
            "--per-minute".to_string(),
            l.per_minute.to_string(),
            "--per-day".to_string(),
            l.per_day.to_string(),
        ];
        args.extend(self.sandbox_flags.iter().map(|s| s.to_string()));
        args
    }
}

/// Udyam results after 3 s, every answer after 300 ± 100 ms: the latency.
const SLOW_UDYAM: &[&str] = &[
    "--udyam-delay-ms",
    "3000",
    "--latency-ms",
    "300",
    "--latency-jitter-ms",
    "100",
];

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "udyam, known quota (Enterprise), 300 ms latency",
            check: "deepvue-udyam",
            provider: "deepvue",
            rows: Rows::Udyam,
            default_rows: ENTERPRISE_UDYAM_ROWS,
            sandbox_limits: Limits::ENTERPRISE,
            sandbox_flags: SLOW_UDYAM,
            client_limits: Some(Limits::ENTERPRISE),
            concurrency: Some(32),
            check_settings: &["poll_initial_secs = 3.0"],
        },
        Scenario {
            name: "udyam, unknown quota (20/s), 300 ms latency",
            check: "deepvue-udyam",
            provider: "deepvue",
            rows: Rows::Udyam,
            default_rows: ENTERPRISE_UDYAM_ROWS,
            sandbox_limits: Limits {
                per_second: 20,
                per_minute: 0,
                per_day: 0,
            },
            sandbox_flags: SLOW_UDYAM,
            client_limits: None,
            concurrency: Some(32),
            check_settings: &["poll_initial_secs = 3.0"],
        },
        Scenario {
            name: "udyam, unlimited provider",
            check: "deepvue-udyam",
            provider: "deepvue",
            rows: Rows::Udyam,
            default_rows: UNLIMITED_UDYAM_ROWS,
            sandbox_limits: Limits::NONE,
            sandbox_flags: &["--udyam-delay-ms", "200"],
            client_limits: Some(HUGE),
            concurrency: Some(64),
            check_settings: &["poll_initial_secs = 0.2", "poll_max_secs = 1.0"],
        },
        Scenario {
            name: "upi batch",
            check: "deepvue-upi-batch",
            provider: "deepvue",
            rows: Rows::Vpa,
            default_rows: UPI_BATCH_ROWS,
            sandbox_limits: Limits::NONE,
            sandbox_flags: &["--batch-delay-ms", "1000", "--batch-ms-per-row", "0"],
            client_limits: Some(HUGE),
            concurrency: None,
            check_settings: &["chunk_size = 10000", "poll_initial_secs = 0.5"],
        },
        Scenario {
            name: "digilocker, known quota (1200/min), 300 ms latency",
            check: "cashfree-digilocker",
            provider: "cashfree",
            rows: Rows::Digilocker,
            default_rows: DIGILOCKER_ROWS,
            sandbox_limits: Limits {
                per_second: 0,
                per_minute: 1200,
                per_day: 0,
            },
            sandbox_flags: &["--latency-ms", "300", "--latency-jitter-ms", "100"],
            client_limits: Some(Limits {
                per_second: 0,
                per_minute: 1200,
                per_day: 0,
            }),
            concurrency: Some(32),
            check_settings: &[],
        },
        Scenario {
            name: "digilocker, unlimited provider",
            check: "cashfree-digilocker",
            provider: "cashfree",
            rows: Rows::Digilocker,
            default_rows: UNLIMITED_DIGILOCKER_ROWS,
            sandbox_limits: Limits::NONE,
            sandbox_flags: &[],
            client_limits: Some(HUGE),
            concurrency: Some(64),
            check_settings: &[],
        },
    ]
}

/// One finished `bulkverify run`.
struct ClientRun {
    /// `None` when it was killed for running past [`RUN_TIMEOUT`].
    status: Option<ExitStatus>,
    wall: Duration,
    /// User + system CPU seconds of the client alone.
    cpu_secs: f64,
    /// The client's peak resident memory, in MiB.
    max_rss_mib: f64,
}

/// Runs the client to completion in `dir`, its stdout and stderr going to files there.
fn run_client(dir: &Path, check: &str, sandbox_url: &str) -> anyhow::Result<ClientRun> {
    let started = Instant::now();
    let mut child = spawn_client(dir, check, sandbox_url, None)?;
    wait_client(&mut child, started)
}

/// Starts `bulkverify run` in `dir` against the sandbox. `ledger`: the usage ledger's
/// directory, shared by jobs on one account; without one, each run is an account of its own.
fn spawn_client(
    dir: &Path,
    check: &str,
    sandbox_url: &str,
    ledger: Option<&Path>,
) -> anyhow::Result<Child> {
    Command::new(BIN)
        .current_dir(dir)
        .args(["run", "--check", check, "--config"])
        .arg(dir.join("bulkverify.toml"))
        .arg("-o")
        .arg(dir.join("out.csv"))
        .args(["--progress", "off"])
        .arg(dir.join("input.csv"))
        .env("DEEPVUE_BASE_URL", sandbox_url)
        .env(
            "BULKVERIFY_LEDGER_DIR",
            ledger.map(Path::as_os_str).unwrap_or_default(),
        )
        .env("DEEPVUE_CLIENT_ID", "sandbox_client")
        .env("DEEPVUE_CLIENT_SECRET", "free_tier_sandbox_secret")
        .env("CASHFREE_BASE_URL", format!("{sandbox_url}/verification"))
        .env("CASHFREE_CLIENT_ID", "sandbox_cf_client")
        .env("CASHFREE_CLIENT_SECRET", "sandbox_cf_secret")
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("client.stdout"))?)
        .stderr(File::create(dir.join("client.stderr"))?)
        .spawn()
        .context("cannot start bulkverify run")
}

/// Waits for a client started at `started`, with its own resource usage.
fn wait_client(child: &mut Child, started: Instant) -> anyhow::Result<ClientRun> {
    let (status, usage) = wait_with_usage(child, started, RUN_TIMEOUT)?;
    Ok(ClientRun::of(status, started.elapsed(), usage))
}

impl ClientRun {
    fn of(status: Option<ExitStatus>, wall: Duration, usage: Option<libc::rusage>) -> ClientRun {
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        ClientRun {
            status,
            wall,
            cpu_secs: usage.map_or(f64::NAN, |u| secs(u.ru_utime) + secs(u.ru_stime)),
            // Linux reports ru_maxrss in KiB.
            max_rss_mib: usage.map_or(f64::NAN, |u| u.ru_maxrss as f64 / 1024.0),
        }
    }
}

/// Lines of a text file (a last line without a newline counts).
/// Output rows whose `bv_status` is `verified` (0 without an output).
fn count_verified(path: &Path) -> anyhow::Result<u64> {
    let Ok(mut reader) = csv::Reader::from_path(path) else {
        return Ok(0);
    };
    let Some(status) = reader.headers()?.iter().position(|h| h == "bv_status") else {
        return Ok(0);
    };
    let mut n = 0;
    for record in reader.records() {
        if record?.get(status) == Some("verified") {
            n += 1;
        }
    }
    Ok(n)
}

fn count_lines(path: &Path) -> anyhow::Result<usize> {
    let bytes = std::fs::read(path)?;
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
    Ok(newlines + usize::from(bytes.last().is_some_and(|&b| b != b'\n')))
}

/// The last `n` lines of a file, indented, for error reports.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    | {l}\n"))
        .collect()
}

/// Why a run cannot be trusted: a failed exit or an incomplete output.
fn run_errors(run: &ClientRun, out: &Path, rows: usize) -> Vec<String> {
    let mut errors = Vec::new();
    match run.status {
        None => errors.push(format!(
            "the client was still running after {} s and was killed",
            RUN_TIMEOUT.as_secs()
        )),
        Some(s) if !s.success() => errors.push(format!("the client exited with {s}")),
        Some(_) => {}
    }
    match count_lines(out) {
        Ok(n) if n == rows + 1 => {}
        Ok(n) => errors.push(format!(
            "the output has {n} lines, expected {} ({rows} rows + header)",
            rows + 1
        )),
        Err(e) => errors.push(format!("cannot read the output {}: {e}", out.display())),
    }
    errors
}

/// `accepted_per_second` of the sandbox stats, by Unix second.
fn accepted_per_second(stats: &Value) -> BTreeMap<u64, u64> {
    stats["accepted_per_second"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Accepted requests per second over the busy period.
struct Busy {
    seconds: u64,
    accepted: u64,
    min: u64,
    max: u64,
}

/// The busy period: the seconds after the first one with an accepted request (partly busy at
/// best) through the last second with at least `threshold` accepted.
fn busy_period(per_second: &BTreeMap<u64, u64>, threshold: f64) -> Option<Busy> {
    let first = *per_second.keys().next()? + 1;
    let last = per_second
        .iter()
        .rev()
        .find(|&(_, &n)| n as f64 >= threshold)
        .map(|(&s, _)| s)
        .filter(|&s| s >= first)?;
    // A second missing from the map had no accepted request.
    let counts: Vec<u64> = (first..=last)
        .map(|s| per_second.get(&s).copied().unwrap_or(0))
        .collect();
    Some(Busy {
        seconds: counts.len() as u64,
        accepted: counts.iter().sum(),
        min: counts.iter().copied().min()?,
        max: counts.iter().copied().max()?,
    })
}

fn figure(label: &str, value: impl std::fmt::Display) {
    println!("  {label:<34} {value}");
}

fn run_scenario(s: &Scenario, rows: usize) -> anyhow::Result<()> {
    println!(
        "\n== {} ({} rows; sandbox: {}, {}) ==",
        s.name,
        rows,
        s.sandbox_limits.describe(),
        s.sandbox_flags.join(" ")
    );
    let dir = tempfile::tempdir()?;
    s.rows.write(&dir.path().join("input.csv"), rows)?;
    std::fs::write(dir.path().join("bulkverify.toml"), s.config())?;
    let sandbox = Sandbox::start(&s.sandbox_args())?;

    let run = run_client(dir.path(), s.check, &sandbox.url)?;
    let out = dir.path().join("out.csv");
    let errors = run_errors(&run, &out, rows);
    for e in &errors {
        println!("  ERROR: {e}");
    }
    if !errors.is_empty() {
        println!("  client stderr (last lines):");
        print!("{}", tail(&dir.path().join("client.stderr"), 20));
    }
    let stats = sandbox.stats()?;
    drop(sandbox);

    let wall = run.wall.as_secs_f64();
    let accepted: u64 = accepted_per_second(&stats).values().sum();
    let endpoints = stats["by_endpoint"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.as_u64() != Some(0))
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();

    figure("rows", rows);
    figure("wall", format!("{wall:.1} s"));
    figure("rows/s", format!("{:.1}", rows as f64 / wall));
    figure("requests accepted by the sandbox", accepted);
    figure("requests arrived, by endpoint", endpoints);
    let arrived = stats["requests"].as_u64().unwrap_or(0);
    let refused = stats["rate_limited"].as_u64().unwrap_or(0);
    figure(
        "429 answers",
        format!(
            "{refused} of {arrived} requests = {:.2} %",
            100.0 * refused as f64 / arrived.max(1) as f64
        ),
    );
    if let Some(rate) = s.sandbox_limits.tightest_rate() {
        let threshold = BUSY_SHARE * rate;
        match busy_period(&accepted_per_second(&stats), threshold) {
            Some(b) => {
                figure(
                    "quota utilisation, busy period",
                    format!(
                        "{:.1} %  ({} requests in {} s: the whole seconds after the first \
                         accepted request, through the last second with >= {threshold:.1} \
                         accepted = {:.0} % of {rate:.2}/s)",
                        100.0 * b.accepted as f64 / b.seconds as f64 / rate,
                        b.accepted,
                        b.seconds,
                        100.0 * BUSY_SHARE
                    ),
                );
                figure(
                    "accepted per second, busy period",
                    format!("min {}, max {}", b.min, b.max),
                );
            }
            None => figure(
                "quota utilisation, busy period",
                format!("n/a (no later second reached {threshold:.1} accepted requests)"),
            ),
        }
        if s.client_limits.is_none() {
            let per_second = accepted_per_second(&stats);
            let first = per_second.keys().next().copied().unwrap_or(0);
            let reached = per_second
                .iter()
                .find(|(_, n)| **n as f64 >= 0.9 * rate)
                .map(|(sec, _)| sec - first);
            figure(
                "time to 90 % of the unknown limit",
                reached.map_or("never".into(), |t| format!("{t} s after the first request")),
            );
            let early: u64 = per_second
                .range(first + 1..=first + 30)
                .map(|(_, n)| n)
                .sum();
            figure(
                "utilisation in seconds 1-30",
                format!("{:.1} %", 100.0 * early as f64 / 30.0 / rate),
            );
        }
        figure(
            "quota utilisation, whole run",
            format!(
                "{:.1} %  (all accepted / client wall time / {rate:.2}/s)",
                100.0 * accepted as f64 / wall / rate
            ),
        );
    }
    figure("client CPU", format!("{:.2} s", run.cpu_secs));
    figure(
        "client CPU per row",
        format!("{:.3} ms", 1000.0 * run.cpu_secs / rows as f64),
    );
    let verified = count_verified(&out)?;
    figure(
        "client CPU per verified row",
        format!(
            "{:.3} ms ({verified} verified)",
            1000.0 * run.cpu_secs / verified.max(1) as f64
        ),
    );
    figure("client peak memory", format!("{:.1} MiB", run.max_rss_mib));
    let bytes = std::fs::metadata(&out).map_or(0, |m| m.len());
    figure("output", format!("{bytes} bytes"));
    if !errors.is_empty() {
        println!(
            "  (files of the failed run kept in {})",
            dir.keep().display()
        );
    }
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments select scenarios by name.
    if std::env::args().skip(1).any(|a| a == "quota") {
        println!("bulkverify quota matrix: {BIN}");
        if let Err(e) = quota::matrix() {
            println!("  ERROR: {e:#}");
        }
        return;
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let rows_override = match std::env::var("BENCH_ROWS") {
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                eprintln!("BENCH_ROWS={v:?} is not a positive number of rows");
                std::process::exit(2);
            }
        },
        Err(_) => None,
    };
    println!("bulkverify pipeline benchmark: {BIN}");
    for s in scenarios() {
        if !filters.is_empty() && !filters.iter().any(|f| s.name.contains(f.as_str())) {
            continue;
        }
        if let Err(e) = run_scenario(&s, rows_override.unwrap_or(s.default_rows)) {
            println!("  ERROR: {e:#}");
        }
    }
}
