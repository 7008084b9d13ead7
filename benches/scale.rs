//! `cargo bench --bench scale`: `bulkverify run` over a million and ten million rows, and a
//! paced run, with the figures issue 13's goals are read from.
//!
//! For each job and row count it writes a deterministic input (with 1 % duplicate identifiers
//! and 0.2 % invalid ones) into a temporary directory, starts `bulkverify sandbox` as its own
//! process, runs `bulkverify run` against it as another, runs the same command again (the
//! resume of a finished job, which must make no call), and prints:
//!
//! - `wall`, `peak RSS`, `CPU`: the client process's own, from `wait4`;
//! - `written`: the bytes the client caused to be written to disk (`ru_oublock`, the same
//!   count as `write_bytes` in `/proc/<pid>/io`), state and output included, and over the
//!   input's size; and what of it is left on disk (the output, the job's state and the
//!   account's results store, which every job writes its answers to as a user's does), the
//!   floor any amount written stands on;
//! - `planning`: rows per second of each million planned, from the client's own log lines,
//!   and the last million's over the first's;
//! - `phases`: reading and planning, sending, writing the output (the client's log lines);
//! - `resume`: the second run's wall time and the requests the sandbox saw during it;
//! - `duckdb`: DuckDB joining the same input with a results file of as many rows, sorting
//!   and writing the CSV, in the same bench run, and the run's and its output step's ratios
//!   to it. It needs `pip install duckdb`; without it the bench says so and leaves it out.
//!
//! The paced job runs `deepvue-udyam` at 17/s with 300 ms latency and prints the client's CPU
//! and voluntary context switches per request the sandbox saw, and beside them those of
//! reqwest alone at the same pace against the same sandbox, in this process: the floor any
//! reqwest client stands on on this machine, and the product's ratio to it.
//!
//! The goals are checked on each figure (`MISS` marks one missed): peak RSS ≤ 500 MB and at
//! ten million ≤ 1.2 × at a million; written ≤ 10 × the input; the last million planned at ≥
//! 80 % of the first's rate; end to end ≤ 10 × DuckDB and the output step ≤ 2 × DuckDB; a
//! resume ≤ 30 s with no call; paced, ≤ 0.3 ms CPU and ≤ 5 voluntary context switches per
//! request.
//!
//! `-- --quick` runs 200,000 rows of the batch job only. `SCALE_ROWS` (`1000000,10000000`)
//! and `SCALE_JOBS` (`batch,rows,paced`) narrow it.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::{BIN, Sandbox, env_list, wait_with_usage};

/// A client run taking longer than this is killed and reported as hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(60 * 60);
const MB: f64 = 1e6;

/// A job the bench runs at scale.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    /// `deepvue-upi-batch`: uploads of 10,000 rows, each answered by a result file.
    Batch,
    /// `cashfree-digilocker`: one call per row.
    Rows,
    /// `deepvue-udyam` at 17/s, 300 ms latency: the paced run.
    Paced,
}

impl Job {
    fn parse(name: &str) -> anyhow::Result<Job> {
        Ok(match name {
            "batch" => Job::Batch,
            "rows" => Job::Rows,
            "paced" => Job::Paced,
            other => bail!("SCALE_JOBS: unknown job {other:?} (batch, rows, paced)"),
        })
    }

    fn check(self) -> &'static str {
        match self {
            Job::Batch => "deepvue-upi-batch",
            Job::Rows => "cashfree-digilocker",
            Job::Paced => "deepvue-udyam",
        }
    }

    fn config(self) -> &'static str {
        match self {
            Job::Batch => {
                "[providers.deepvue]\nper_second = 100000\nper_minute = 6000000\n\
                 per_day = 4000000000\n\n[checks.deepvue-upi-batch]\npoll_initial_secs = 0.2\n"
            }
            Job::Rows => {
                "[providers.cashfree]\nper_second = 100000\nper_minute = 6000000\n\
                 per_day = 4000000000\nconcurrency = 64\n"
            }
            Job::Paced => {
                "[providers.deepvue]\nper_second = 17\nper_minute = 1000\nper_day = 50000\n\
                 concurrency = 32\n\n[checks.deepvue-udyam]\npoll_initial_secs = 3.0\n"
            }
        }
    }

    fn sandbox_args(self) -> Vec<String> {
        let args: &[&str] = match self {
            Job::Batch => &[
                "--per-second",
                "0",
                "--per-minute",
                "0",
                "--per-day",
                "0",
                "--batch-delay-ms",
                "200",
                "--batch-ms-per-row",
                "0",
            ],
            Job::Rows => &["--per-second", "0", "--per-minute", "0", "--per-day", "0"],
            Job::Paced => &[
                "--per-second",
                "17",
                "--per-minute",
                "1000",
                "--per-day",
                "50000",
                "--udyam-delay-ms",
                "3000",
                "--latency-ms",
                "300",
                "--latency-jitter-ms",
                "100",
            ],
        };
        args.iter().map(|s| s.to_string()).collect()
    }

    /// The first letter of the input's `id` column.
    fn id_prefix(self) -> char {
        if self == Job::Batch { 'L' } else { 'C' }
    }

    /// Writes `n` rows, header first: 1 % repeat the identifier of a row 50 rows back, 0.2 % are
    /// invalid. The key column (`id`) is unique, for DuckDB's join. A batch row's VPA is its
    /// customer's name and a number, and the sandbox answers the name as the name at the bank:
    /// names vary from row to row as real ones do, so that the answers the journal and the store
    /// keep compress no better than a real export's would.
    fn write_input(self, path: &Path, n: usize) -> anyhow::Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let ident = |i: usize| if i % 100 == 99 { i - 50 } else { i };
        match self {
            Job::Batch => {
                writeln!(out, "id,customer_name,upi_id,amount")?;
                for i in 0..n {
                    let id = ident(i);
                    let (first, last) = (name_of(id), name_of(id / 7 + 100_003));
                    let name = format!("{first} {last}");
                    if i % 500 == 7 {
                        writeln!(out, "L{i:08},{name},not a vpa,{:06}", i % 100_000)?;
                    } else {
                        writeln!(
                            out,
                            "L{i:08},{name},{}.{}{}@okicici,{:06}",
                            first.to_lowercase(),
                            last.to_lowercase(),
                            id,
                            i % 100_000
                        )?;
                    }
                }
            }
            Job::Rows => {
                writeln!(out, "id,verification_id")?;
                for i in 0..n {
                    writeln!(out, "C{i:08},LINK-{:08}", ident(i))?;
                }
            }
            Job::Paced => {
                writeln!(out, "id,udyam")?;
                for i in 0..n {
                    writeln!(out, "C{i:08},UDYAM-MH-01-{:07}", i + 1)?;
                }
            }
        }
        out.flush()?;
        Ok(())
    }
}

/// A made-up name for `n`, one of about 115,000 of two to four syllables, such as `Priya`.
fn name_of(n: usize) -> String {
    const SYLLABLES: [&str; 24] = [
        "ra", "vi", "an", "ta", "mo", "han", "pri", "ya", "su", "re", "sh", "la", "ksh", "mi",
        "ar", "ju", "de", "pa", "vik", "ram", "ka", "vy", "nu", "sa",
    ];
    let h = n.wrapping_mul(2_654_435_761) % 331_777;
    let mut name: String = (0..2 + h % 3)
        .map(|k| SYLLABLES[(h / 24usize.pow(k as u32)) % 24])
        .collect();
    name[..1].make_ascii_uppercase();
    name
}

/// One finished client process.
struct Run {
    status: Option<ExitStatus>,
    wall: Duration,
    cpu_secs: f64,
    max_rss_mb: f64,
    written_bytes: u64,
    voluntary_switches: u64,
    /// The client's log.
    stderr: String,
}

fn run_client(dir: &Path, job: Job, url: &str) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args(["-v", "run", "--check", job.check(), "--config"])
        .arg(dir.join("bulkverify.toml"))
        .arg("-o")
        .arg(dir.join("out.csv"))
        .args(["--progress", "off"])
        .arg(dir.join("input.csv"))
        .env("DEEPVUE_BASE_URL", url)
        .env("DEEPVUE_CLIENT_ID", "sandbox_client")
        .env("DEEPVUE_CLIENT_SECRET", "free_tier_sandbox_secret")
        .env("CASHFREE_BASE_URL", format!("{url}/verification"))
        .env("CASHFREE_CLIENT_ID", "sandbox_cf_client")
        .env("CASHFREE_CLIENT_SECRET", "sandbox_cf_secret")
        // The account's ledger, shared schedule and results store, as a user's run has them:
        // what the store writes is part of the job's.
        .env("BULKVERIFY_LEDGER_DIR", dir.join("ledger"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("client.stderr"))?)
        .spawn()
        .context("cannot start bulkverify run")?;
    let (status, usage) = wait_with_usage(&mut child, started, RUN_TIMEOUT)?;
    let wall = started.elapsed();
    Ok(Run {
        status,
        wall,
        cpu_secs: usage.as_ref().map_or(f64::NAN, cpu_secs),
        // Linux reports ru_maxrss in KiB, and ru_oublock in 512-byte blocks.
        max_rss_mb: usage.map_or(f64::NAN, |u| u.ru_maxrss as f64 * 1024.0 / MB),
        written_bytes: usage.map_or(0, |u| u.ru_oublock as u64 * 512),
        voluntary_switches: usage.map_or(0, |u| u.ru_nvcsw as u64),
        stderr: std::fs::read_to_string(dir.join("client.stderr")).unwrap_or_default(),
    })
}

/// The user and system CPU a usage counts, in seconds.
fn cpu_secs(u: &libc::rusage) -> f64 {
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

impl Run {
    /// Why the run cannot be trusted.
    fn errors(&self, out: &Path, rows: usize) -> Vec<String> {
        let mut errors = Vec::new();
        match self.status {
            None => errors.push("the client hung and was killed".to_string()),
            Some(s) if !s.success() => errors.push(format!("the client exited with {s}")),
            Some(_) => {}
        }
        match count_lines(out) {
            Ok(n) if n == rows as u64 + 1 => {}
            Ok(n) => errors.push(format!("the output has {n} lines, not {}", rows + 1)),
            Err(e) => errors.push(format!("cannot read the output: {e}")),
        }
        errors
    }

    /// Seconds a phase took, from the client's `... in X s` log line, the first that says
    /// `words`.
    fn phase(&self, words: &str) -> Option<f64> {
        self.stderr.lines().find_map(|l| {
            let (_, rest) = l.split_once(words)?;
            let (_, secs) = rest.rsplit_once(" in ")?;
            secs.trim().strip_suffix(" s")?.parse().ok()
        })
    }

    /// Rows per second of each million planned.
    fn planning(&self) -> Vec<f64> {
        self.stderr
            .lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once(" at ")?;
                l.contains("planned ")
                    .then(|| rest.strip_suffix(" rows/s")?.parse().ok())?
            })
            .collect()
    }
}

/// The bytes of a file, or of every file under a directory.
fn dir_bytes(path: &Path) -> u64 {
    match std::fs::read_dir(path) {
        Ok(entries) => entries.flatten().map(|e| dir_bytes(&e.path())).sum(),
        Err(_) => std::fs::metadata(path).map_or(0, |m| m.len()),
    }
}

fn count_lines(path: &Path) -> std::io::Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut n = 0u64;
    let mut last = b'\n';
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        n += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[buf.len() - 1];
        let len = buf.len();
        reader.consume(len);
    }
    Ok(n + u64::from(last != b'\n'))
}

fn requests(sandbox: &Sandbox) -> u64 {
    sandbox
        .stats()
        .ok()
        .and_then(|s| s["requests"].as_u64())
        .unwrap_or(0)
}

fn figure(label: &str, value: impl std::fmt::Display) {
    println!("  {label:<30} {value}");
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISS" }
}

/// DuckDB on the same rows: the input joined with a results file by `id`, sorted and written.
/// `None` when the module is not installed.
fn duckdb(dir: &Path, prefix: char, rows: usize) -> anyhow::Result<Option<f64>> {
    let have = Command::new("python3")
        .args(["-c", "import duckdb"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        return Ok(None);
    }
    // The results in another order than the input's, so that the sort has work to do.
    let results = dir.join("results.csv");
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&results)?);
    writeln!(out, "id,bv_status,bv_reason,bv_name_at_bank,bv_checked_at")?;
    let stride = 7_919;
    for j in 0..rows {
        let i = (j * stride) % rows.max(1);
        writeln!(
            out,
            "{prefix}{i:08},verified,,RAVI KUMAR,2026-12-01T02:00:00Z"
        )?;
    }
    out.flush()?;
    drop(out);
    let script = "import duckdb, sys, time\n\
        con = duckdb.connect()\n\
        con.execute('SET threads TO 2')\n\
        con.execute('SET enable_progress_bar = false')\n\
        t = time.monotonic()\n\
        con.execute(\"COPY (SELECT i.*, r.* EXCLUDE (id) FROM read_csv(?, all_varchar=true) i \
        LEFT JOIN read_csv(?, all_varchar=true) r USING (id) ORDER BY i.id) TO ? (HEADER)\", \
        [sys.argv[1], sys.argv[2], sys.argv[3]])\n\
        print(time.monotonic() - t)\n";
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(dir.join("input.csv"))
        .arg(&results)
        .arg(dir.join("duckdb.csv"))
        .output()?;
    if !output.status.success() {
        bail!("duckdb: {}", String::from_utf8_lossy(&output.stderr));
    }
    let _ = std::fs::remove_file(&results);
    let _ = std::fs::remove_file(dir.join("duckdb.csv"));
    Ok(Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .parse()
            .context("duckdb printed no time")?,
    ))
}

/// What a row count of a job measured, for the comparisons across row counts.
struct Measured {
    rows: usize,
    max_rss_mb: f64,
}

fn scale(job: Job, rows: usize) -> anyhow::Result<Measured> {
    println!("\n== {} × {rows} rows ==", job.check());
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("input.csv");
    job.write_input(&input, rows)?;
    let input_bytes = std::fs::metadata(&input)?.len();
    std::fs::write(dir.path().join("bulkverify.toml"), job.config())?;
    let sandbox = Sandbox::start(&job.sandbox_args())?;
    let run = run_client(dir.path(), job, &sandbox.url)?;
    let out = dir.path().join("out.csv");
    let errors = run.errors(&out, rows);
    for e in &errors {
        println!("  ERROR: {e}");
    }
    let calls = requests(&sandbox);
    let wall = run.wall.as_secs_f64();
    figure("input", format!("{:.0} MB", input_bytes as f64 / MB));
    figure(
        "wall",
        format!("{wall:.1} s ({:.0} rows/s)", rows as f64 / wall),
    );
    figure(
        "CPU",
        format!(
            "{:.1} s ({:.2} µs per row)",
            run.cpu_secs,
            run.cpu_secs * 1e6 / rows as f64
        ),
    );
    figure(
        "peak RSS",
        format!(
            "{:.0} MB  {}",
            run.max_rss_mb,
            verdict(run.max_rss_mb <= 500.0)
        ),
    );
    let ratio = run.written_bytes as f64 / input_bytes as f64;
    figure(
        "written",
        format!(
            "{:.2} GB = {ratio:.1} × the input  {}",
            run.written_bytes as f64 / 1e9,
            verdict(ratio <= 10.0)
        ),
    );
    let kept = |name: &str| dir_bytes(&dir.path().join(name));
    let (output, state, store) = (kept("out.csv"), kept("out.csv.bulkverify"), kept("ledger"));
    figure(
        "left on disk",
        format!(
            "output {:.0} MB, state {:.0} MB, results store {:.0} MB: {:.1} × the input",
            output as f64 / MB,
            state as f64 / MB,
            store as f64 / MB,
            (output + state + store) as f64 / input_bytes as f64
        ),
    );
    figure(
        "phases",
        format!(
            "reading and planning {:.1} s, sending {:.1} s, writing {:.1} s",
            run.phase("read the inputs and the state")
                .unwrap_or(f64::NAN),
            // Not "read the identifiers of N rows in", which comes first.
            run.phase("sent and settled").unwrap_or(f64::NAN),
            run.phase("wrote the output").unwrap_or(f64::NAN)
        ),
    );
    let planning = run.planning();
    if planning.len() < 2 {
        figure(
            "planning, rows/s per million",
            "n/a (fewer than two million rows)",
        );
    }
    if let (Some(first), Some(last)) = (planning.first(), planning.last())
        && planning.len() >= 2
    {
        let shown: Vec<String> = planning
            .iter()
            .map(|r| format!("{:.0}k", r / 1e3))
            .collect();
        figure(
            "planning, rows/s per million",
            format!(
                "{}; last / first {:.2}  {}",
                shown.join(" "),
                last / first,
                verdict(last / first >= 0.8)
            ),
        );
    }
    figure("requests", calls);
    let cpu_ms_per_request = run.cpu_secs * 1e3 / calls.max(1) as f64;
    if job == Job::Paced {
        figure(
            "CPU per request",
            format!(
                "{cpu_ms_per_request:.3} ms  {}",
                verdict(cpu_ms_per_request <= 0.3)
            ),
        );
        let switches = run.voluntary_switches as f64 / calls.max(1) as f64;
        figure(
            "voluntary switches per request",
            format!("{switches:.1}  {}", verdict(switches <= 5.0)),
        );
    }
    if errors.is_empty() {
        let again = run_client(dir.path(), job, &sandbox.url)?;
        let more = requests(&sandbox) - calls;
        let secs = again.wall.as_secs_f64();
        let ok = again.status.is_some_and(|s| s.success()) && more == 0 && secs <= 30.0;
        figure(
            "resume of the finished job",
            format!(
                "{secs:.1} s, {more} requests, {:.0} MB peak RSS  {}",
                again.max_rss_mb,
                verdict(ok)
            ),
        );
    } else {
        println!("  client log (last lines):");
        for l in run
            .stderr
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .iter()
            .rev()
        {
            println!("    | {l}");
        }
    }
    if job == Job::Paced {
        match reqwest_floor(&sandbox.url) {
            Ok((cpu, switches)) => figure(
                "reqwest alone, same pace",
                format!(
                    "{cpu:.3} ms CPU, {switches:.1} voluntary switches per request; bulkverify \
                     {:.1} × its CPU",
                    cpu_ms_per_request / cpu
                ),
            ),
            Err(e) => figure("reqwest alone", format!("not measured: {e:#}")),
        }
    }
    drop(sandbox);
    if job != Job::Paced {
        match duckdb(dir.path(), job.id_prefix(), rows)? {
            Some(duck) => {
                let writing = run.phase("wrote the output").unwrap_or(f64::NAN);
                figure(
                    "duckdb join, sort, write",
                    format!(
                        "{duck:.1} s; end to end {:.1} ×  {}, output step {:.1} ×  {}",
                        wall / duck,
                        verdict(wall / duck <= 10.0),
                        writing / duck,
                        verdict(writing / duck <= 2.0)
                    ),
                );
            }
            None => figure("duckdb", "not installed: pip install duckdb"),
        }
    }
    Ok(Measured {
        rows,
        max_rss_mb: run.max_rss_mb,
    })
}

/// Requests of the reference client below: enough for a steady figure, without the paced
/// job's minute and more.
const FLOOR_REQUESTS: usize = 300;

/// What a client that does nothing but send costs on this machine at the paced job's pace:
/// reqwest on a runtime of one thread, as the product's, one small JSON POST every 1/17 s to
/// the sandbox, which answers after its latency. Its CPU and voluntary context switches per
/// request (the bench's whole process, which does nothing else meanwhile) are the floor a
/// reqwest client stands on here: where a wake-up costs tens of microseconds, as on a small
/// VM, this floor alone can be near the paced goal. Its timer is tokio's, which rounds to the
/// millisecond and may wake twice a tick.
fn reqwest_floor(url: &str) -> anyhow::Result<(f64, f64)> {
    let usage = || {
        // SAFETY: rusage is plain data, and getrusage only writes the struct it is given.
        let u = unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut u);
            u
        };
        (cpu_secs(&u), u.ru_nvcsw)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let endpoint = format!("{url}/v1/authorize");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / 17.0));
        let mut sent = tokio::task::JoinSet::new();
        let (cpu, switches) = usage();
        for _ in 0..FLOOR_REQUESTS {
            tick.tick().await;
            let request = client
                .post(&endpoint)
                .header("content-type", "application/json")
                .body(r#"{"client_id":"none"}"#)
                .send();
            sent.spawn(async move {
                // Any answer will do: a refusal costs the client what an answer does.
                if let Ok(answer) = request.await {
                    let _ = answer.bytes().await;
                }
            });
        }
        while sent.join_next().await.is_some() {}
        let (cpu_after, switches_after) = usage();
        let n = FLOOR_REQUESTS as f64;
        Ok((
            (cpu_after - cpu) * 1e3 / n,
            (switches_after - switches) as f64 / n,
        ))
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rows_default, jobs_default) = if quick {
        ("200000", "batch")
    } else {
        ("1000000,10000000", "batch,rows,paced")
    };
    let rows: Vec<usize> = match env_list("SCALE_ROWS", rows_default)
        .iter()
        .map(|r| r.parse())
        .collect()
    {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("SCALE_ROWS: {e}");
            std::process::exit(2);
        }
    };
    let jobs: Vec<Job> = match env_list("SCALE_JOBS", jobs_default)
        .iter()
        .map(|j| Job::parse(j))
        .collect()
    {
        Ok(jobs) => jobs,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    println!("bulkverify scale benchmark: {BIN}");
    for job in jobs {
        if job == Job::Paced {
            if let Err(e) = scale(job, 600) {
                println!("  ERROR: {e:#}");
            }
            continue;
        }
        let mut measured = Vec::new();
        for &n in &rows {
            match scale(job, n) {
                Ok(m) => measured.push(m),
                Err(e) => println!("  ERROR: {e:#}"),
            }
        }
        if let (Some(small), Some(large)) = (measured.first(), measured.last())
            && large.rows > small.rows
        {
            let growth = large.max_rss_mb / small.max_rss_mb;
            println!(
                "\n  {} peak RSS at {} rows / at {} rows: {growth:.2}  {}",
                job.check(),
                large.rows,
                small.rows,
                verdict(growth <= 1.2)
            );
        }
    }
}
