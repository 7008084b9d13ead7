//! `cargo bench --bench pipeline -- quota`: the quota gate against every way the sandbox's
//! limiter counts, with the arrival jitter of a network path, when the config knows the
//! quota, when it does not, when it says more than the provider admits, and with two and three
//! jobs on one account; a Python aiohttp + aiolimiter client on the same sandbox is the
//! reference row.
//!
//! Each (limiter mode, jitter) pair first finds its **frontier**: the highest rate that
//! open-loop fixed-rate pacing holds at ≤ 0.5% 429s, to about 1.5% of the limit, testing three
//! rates at a time, each on credentials of its own (the sandbox limits each apart) with 400
//! requests per rate. Then each scenario runs `bulkverify run --check
//! deepvue-udyam` on a fresh sandbox of that mode and prints:
//!
//! - `use`: accepted requests per second over the busy period, over the limit. The busy period
//!   is the whole seconds after the first accepted request through the last second with at
//!   least 80% of the frontier's rate accepted (when the rows are in, only polls are left);
//! - `429`: refused over arrived requests, over the whole run;
//! - `cpu`: the client's CPU per request it sent (two and three jobs: `share`, the smallest
//!   job's share of the rows started while all had work, over an equal share; an unknown
//!   quota: the seconds from the first accepted request to the first at 90% of the frontier).
//!
//! The goals, checked on each cell (`MISS` marks one missed): known quota without jitter, use
//! ≥ 96% (≥ 99% against the bucket) and 429s ≤ 0.5%; with jitter, 429s ≤ 0.5% and use within 3
//! points of the frontier; the config over the provider (25/s against 20/s), 429s ≤ 1% and use
//! ≥ 93% of the frontier; unknown quota, 90% of the frontier within 30 s and over the busy
//! period, and 429s ≤ 3%; two and three jobs,
//! together ≥ 95% of the frontier, 429s ≤ 0.5%, and no job below 60% of an equal share.
//!
//! Beside the sandbox's own limiters, the `nginx` and `haproxy` modes run the cells against a
//! real gateway in front of a sandbox that limits nothing: limiters we did not write, each on
//! its own clock and counting in its own way (nginx's `limit_req rate=20r/s` with no burst, which
//! the first measurements were taken against; HAProxy's sliding-window counter, which
//! counts the requests it refuses; see `gateway.rs`). Each runs when installed (`apt-get install
//! nginx-light haproxy`), without jitter (nothing delays the path between the client and the
//! gateway), and its 429s are counted from its log.
//!
//! `QUOTA_ROWS` (600), `QUOTA_MODES` (`fixed,sliding,bucket,gcra,nginx,haproxy`), `QUOTA_JITTER`
//! (`0,10,50`) and `QUOTA_CELLS` (`known,unknown,over,two,three,python`) narrow it, and
//! `QUOTA_FRONTIER` (a share of the limit, such as `0.97`) skips the frontier's search when it
//! is already known, to rerun a few cells after a change; `-- quota quick` is `QUOTA_ROWS=200
//! QUOTA_JITTER=0`. `QUOTA_SERIES=1` prints each cell's accepted requests a second to stderr,
//! to see where a cell lost its use. The reference row needs `pip install aiohttp
//! aiolimiter`; without them it says so and is left out.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::gateway::{Gateway, Kind};
use super::{
    ClientRun, Sandbox, accepted_per_second, busy_period, env_list, reap, run_errors, spawn_client,
    udyam_number, wait_client,
};

/// The provider's limit in every cell, and what the over-configured client believes.
const LIMIT: f64 = 20.0;
const OVER: u32 = 25;
/// How long each round of the frontier's search paces, and how many requests each rate gets in
/// it, over as many credentials as it takes.
const SWEEP_SECS: f64 = 20.0;
const SWEEP_REQUESTS: f64 = 400.0;

fn sandbox_args(mode: &str, jitter: u64) -> Vec<String> {
    // Behind a gateway the sandbox limits nothing: the gateway does.
    let (per_second, mode) = if Kind::of(mode).is_some() {
        ("0", "fixed")
    } else {
        ("20", mode)
    };
    [
        "--per-second",
        per_second,
        "--per-minute",
        "0",
        "--per-day",
        "0",
        "--limit-window",
        mode,
        "--limit-burst",
        "5",
        "--latency-ms",
        "300",
        "--latency-jitter-ms",
        "100",
        "--udyam-delay-ms",
        "3000",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--arrival-jitter-ms".to_string(), jitter.to_string()])
    .collect()
}

/// The provider a cell runs against: a sandbox limiting as `mode` says, or for a gateway's
/// mode a sandbox that limits nothing behind the gateway. Both stop when dropped.
struct Limited {
    /// Where the client and the sweeps send: the gateway's address in its mode.
    url: String,
    gateway: Option<Gateway>,
    sandbox: Sandbox,
}

impl Limited {
    fn start(mode: &str, jitter: u64) -> anyhow::Result<Limited> {
        let sandbox = Sandbox::start(&sandbox_args(mode, jitter))?;
        let gateway = Kind::of(mode)
            .map(|kind| Gateway::start(kind, LIMIT as u32, &sandbox.url))
            .transpose()?;
        Ok(Limited {
            url: gateway.as_ref().map_or(&sandbox.url, |g| &g.url).clone(),
            gateway,
            sandbox,
        })
    }

    /// The requests that arrived and those refused with a 429, and the accepted ones a second.
    fn counts(&self) -> anyhow::Result<(u64, u64, BTreeMap<u64, u64>)> {
        let stats = self.sandbox.stats()?;
        let gateway_refused = self.gateway.as_ref().map_or(0, Gateway::refused);
        let refused = stats["rate_limited"].as_u64().unwrap_or(0) + gateway_refused;
        let arrived = stats["requests"].as_u64().unwrap_or(0) + gateway_refused;
        Ok((arrived, refused, accepted_per_second(&stats)))
    }
}

/// One cell's figures.
struct Cell {
    use_share: Option<f64>,
    refused_share: f64,
    /// CPU per request (ms), or for several jobs the smallest share over an equal one.
    extra: f64,
    /// Seconds from the first accepted request to the first second at 90% of the frontier.
    to_90: Option<u64>,
    errors: Vec<String>,
}

impl Cell {
    fn render(&self, extra: &str, miss: bool) -> String {
        let used = self
            .use_share
            .map_or("  n/a".to_string(), |u| format!("{:5.1}%", 100.0 * u));
        let flag = if !self.errors.is_empty() {
            " ERROR"
        } else if miss {
            " MISS"
        } else {
            ""
        };
        format!(
            "{used} {:5.2}% {extra}{flag}",
            100.0 * self.refused_share,
            extra = match extra {
                "share" => format!("share {:3.0}%", 100.0 * self.extra),
                "t90" => self
                    .to_90
                    .map_or("90% never".to_string(), |t| format!("90% at {t}s")),
                _ => format!("{:.2}ms", self.extra),
            }
        )
    }
}

/// Open-loop pacing at `fractions` of the limit at once, each on credentials of its own (the
/// sandbox limits each apart), about `SWEEP_REQUESTS` requests each: the 429 share of each.
fn paced(server: &Limited, fractions: &[f64]) -> anyhow::Result<Vec<f64>> {
    let url = format!(
        "{}/v1/verification/async/get-udyam-details?request_id=sweep",
        server.url
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let counts: Arc<Vec<(AtomicU64, AtomicU64)>> = Arc::new(
        fractions
            .iter()
            .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
            .collect(),
    );
    // (next send, stream): each stream is a credential paced at one rate; slow rates get more
    // streams, so that every rate gets its requests in the same time.
    let start = Instant::now();
    let mut heap = BinaryHeap::new();
    let mut streams = Vec::new();
    for (i, f) in fractions.iter().enumerate() {
        let per_stream = LIMIT * f * SWEEP_SECS;
        let reps = (SWEEP_REQUESTS / per_stream).ceil().max(1.0) as usize;
        let period = Duration::from_secs_f64(1.0 / (LIMIT * f));
        for r in 0..reps {
            let offset = period.mul_f64(streams.len() as f64 / 7.0 % 1.0);
            heap.push(Reverse((start + offset, streams.len())));
            let key = format!("sweep-{}-{i}-{r}", rand::random::<u32>());
            streams.push((i, key, period, per_stream.ceil() as u64));
        }
    }
    let outstanding = Arc::new(AtomicU64::new(0));
    let mut sent = vec![0u64; streams.len()];
    while let Some(Reverse((at, s))) = heap.pop() {
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let (i, key, period, n) = &streams[s];
        let (client, url, key, counts, outstanding, i) = (
            client.clone(),
            url.clone(),
            key.clone(),
            counts.clone(),
            outstanding.clone(),
            *i,
        );
        outstanding.fetch_add(1, Ordering::SeqCst);
        rt.spawn(async move {
            if let Ok(r) = client.get(&url).header("x-api-key", key).send().await {
                counts[i].0.fetch_add(1, Ordering::Relaxed);
                if r.status().as_u16() == 429 {
                    counts[i].1.fetch_add(1, Ordering::Relaxed);
                }
            }
            outstanding.fetch_sub(1, Ordering::SeqCst);
        });
        sent[s] += 1;
        if sent[s] < *n {
            heap.push(Reverse((at + *period, s)));
        }
    }
    while outstanding.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(counts
        .iter()
        .map(|(n, refused)| {
            refused.load(Ordering::Relaxed) as f64 / n.load(Ordering::Relaxed).max(1) as f64
        })
        .collect())
}

/// The best fixed rate for a limiter mode and jitter: the highest fraction of the limit that
/// open-loop pacing holds at ≤ 0.5% 429s, found to about 1.5% by narrowing an interval with
/// three rates at a time (no more load on the machine than three jobs), on a server of its
/// own.
fn frontier(mode: &str, jitter: u64) -> anyhow::Result<f64> {
    let server = Limited::start(mode, jitter)?;
    if paced(&server, &[1.0])?[0] <= 0.005 {
        return Ok(1.0);
    }
    let (mut good, mut bad) = (0.05, 1.0);
    for _ in 0..3 {
        let points: Vec<f64> = (1..=3)
            .map(|k| good + (bad - good) * k as f64 / 4.0)
            .collect();
        let shares = paced(&server, &points)?;
        for (p, share) in points.iter().zip(shares) {
            if share <= 0.005 {
                good = good.max(*p);
            } else {
                bad = bad.min(*p);
            }
        }
        if good >= bad {
            bad = (good + 0.02).min(1.0);
        }
    }
    Ok(good)
}

/// A job's directory with `numbers` to verify and a config with `per_second`, if any.
fn job(numbers: &[String], per_second: Option<u32>) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let mut input = String::from("customer_id,udyam\n");
    for (i, n) in numbers.iter().enumerate() {
        input.push_str(&format!("C{i:07},{n}\n"));
    }
    std::fs::write(dir.path().join("input.csv"), input)?;
    let mut config = String::from("[providers.deepvue]\nconcurrency = 32\n");
    if let Some(n) = per_second {
        config.push_str(&format!("per_second = {n}\n"));
    }
    config.push_str("\n[checks.deepvue-udyam]\npoll_initial_secs = 3.0\n");
    std::fs::write(dir.path().join("bulkverify.toml"), config)?;
    Ok(dir)
}

/// The requests a finished client sent, from its summary.
fn calls(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("client.stderr")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("calls "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Rows a running job has started (sent, or further), from its journal.
fn started_rows(dir: &Path) -> u64 {
    let path = dir.join("out.csv.bulkverify").join("journal.sqlite");
    rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM rows WHERE state NOT IN ('planned', 'duplicate')",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .map_or(0, |n| n as u64)
}

/// The use of the busy period, the 429 share and the seconds to 90% of the frontier, from
/// the server's counts.
fn sandbox_figures(
    server: &Limited,
    frontier: f64,
) -> anyhow::Result<(Option<f64>, f64, Option<u64>)> {
    let (arrived, refused, per_second) = server.counts()?;
    let busy = busy_period(&per_second, 0.8 * frontier * LIMIT);
    if std::env::var_os("QUOTA_SERIES").is_some() {
        let series: Vec<u64> = per_second.values().copied().collect();
        eprintln!("accepted a second: {series:?}");
    }
    let first = per_second.keys().next().copied().unwrap_or(0);
    let to_90 = per_second
        .iter()
        .find(|(_, n)| **n as f64 >= 0.9 * frontier * LIMIT)
        .map(|(s, _)| s - first);
    Ok((
        busy.map(|b| b.accepted as f64 / b.seconds as f64 / LIMIT),
        refused as f64 / arrived.max(1) as f64,
        to_90,
    ))
}

/// `jobs` jobs on one account, started together, the rows split between them.
fn jobs(
    mode: &str,
    jitter: u64,
    rows: usize,
    count: usize,
    per_second: Option<u32>,
    frontier: f64,
) -> anyhow::Result<Cell> {
    let server = Limited::start(mode, jitter)?;
    let numbers: Vec<String> = (0..rows).map(udyam_number).collect::<Result<_, _>>()?;
    let parts: Vec<&[String]> = numbers.chunks(rows.div_ceil(count)).collect();
    let dirs: Vec<tempfile::TempDir> = parts
        .iter()
        .map(|part| job(part, per_second))
        .collect::<Result<_, _>>()?;
    let ledger = tempfile::tempdir()?;
    let started = Instant::now();
    let mut children = Vec::with_capacity(count);
    for dir in &dirs {
        children.push(spawn_client(
            dir.path(),
            "deepvue-udyam",
            &server.url,
            Some(ledger.path()),
        )?);
    }
    // While all have work: until the first job ends, what each has started.
    let mut shares = None;
    let mut runs: Vec<Option<ClientRun>> = (0..count).map(|_| None).collect();
    while runs.iter().any(Option::is_none) {
        for (i, child) in children.iter_mut().enumerate() {
            if runs[i].is_some() {
                continue;
            }
            let pid = libc::pid_t::try_from(child.id())?;
            if let Some((status, usage)) = reap(pid)? {
                if shares.is_none() && count > 1 {
                    let done: Vec<u64> = dirs
                        .iter()
                        .enumerate()
                        .map(|(j, d)| {
                            if j == i {
                                parts[j].len() as u64
                            } else {
                                started_rows(d.path())
                            }
                        })
                        .collect();
                    let total: u64 = done.iter().sum();
                    let least = *done.iter().min().unwrap_or(&0);
                    shares = Some(least as f64 * count as f64 / total.max(1) as f64);
                }
                runs[i] = Some(ClientRun::of(Some(status), started.elapsed(), Some(usage)));
            }
        }
        if started.elapsed() > super::RUN_TIMEOUT {
            anyhow::bail!("the jobs were still running after the bench's timeout");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut errors = Vec::new();
    let mut cpu = 0.0;
    let mut sent = 0;
    for ((run, dir), part) in runs.iter().flatten().zip(&dirs).zip(&parts) {
        errors.extend(run_errors(run, &dir.path().join("out.csv"), part.len()));
        cpu += run.cpu_secs;
        sent += calls(dir.path());
    }
    let (use_share, refused_share, to_90) = sandbox_figures(&server, frontier)?;
    Ok(Cell {
        use_share,
        refused_share,
        extra: shares.unwrap_or(1000.0 * cpu / sent.max(1) as f64),
        to_90,
        errors,
    })
}

/// The Python reference on a sandbox of this mode, if aiohttp and aiolimiter are there.
fn python(mode: &str, jitter: u64, rows: usize, frontier: f64) -> anyhow::Result<Option<Cell>> {
    let has = Command::new("python3")
        .args(["-c", "import aiohttp, aiolimiter"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        return Ok(None);
    }
    // Cargo's variable at run time: a bench built in another checkout holds that one's path.
    let script = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("benches/reference/udyam_aiolimiter.py");
    let server = Limited::start(mode, jitter)?;
    let numbers: Vec<String> = (0..rows).map(udyam_number).collect::<Result<_, _>>()?;
    let dir = job(&numbers, None)?;
    let started = Instant::now();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(&server.url)
        .arg(dir.path().join("input.csv"))
        .arg(LIMIT.to_string())
        .env("DEEPVUE_CLIENT_ID", "sandbox_client")
        .env("DEEPVUE_CLIENT_SECRET", "free_tier_sandbox_secret")
        .stdout(std::fs::File::create(dir.path().join("client.stdout"))?)
        .stderr(std::fs::File::create(dir.path().join("client.stderr"))?)
        .spawn()
        .context("cannot start python3")?;
    let run = wait_client(&mut child, started)?;
    let out = std::fs::read_to_string(dir.path().join("client.stdout")).unwrap_or_default();
    let counts: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    let sent = counts["requests"].as_u64().unwrap_or(0);
    let mut errors = Vec::new();
    if run.status.is_none_or(|s| !s.success()) || counts["verified"].as_u64() != Some(rows as u64) {
        errors.push(format!(
            "the reference script did not verify every row: {out}"
        ));
    }
    let (use_share, refused_share, to_90) = sandbox_figures(&server, frontier)?;
    Ok(Some(Cell {
        use_share,
        refused_share,
        extra: 1000.0 * run.cpu_secs / sent.max(1) as f64,
        to_90,
        errors,
    }))
}

pub fn matrix() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "quick");
    let rows: usize = std::env::var("QUOTA_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 200 } else { 600 });
    let modes = env_list("QUOTA_MODES", "fixed,sliding,bucket,gcra,nginx,haproxy");
    let jitters: Vec<u64> = env_list("QUOTA_JITTER", if quick { "0" } else { "0,10,50" })
        .iter()
        .filter_map(|j| j.parse().ok())
        .collect();
    let cells = env_list("QUOTA_CELLS", "known,unknown,over,two,three,python");
    let frontier_override: Option<f64> = std::env::var("QUOTA_FRONTIER")
        .ok()
        .and_then(|v| v.parse().ok());
    println!(
        "deepvue-udyam, {rows} rows; the sandbox admits 20/s (burst 5 in bucket mode), answers \
         in 300 ± 100 ms, results after 3 s"
    );
    println!(
        "cells: use of the limit over the busy period, 429 share, then CPU per request (unknown: \
         the seconds to 90% of the frontier; jobs: the smallest job's share of an equal one)"
    );
    println!(
        "{:<8} {:>6} {:>8} | {:<22} | {:<22} | {:<22} | {:<24} | {:<24} | {:<22}",
        "mode",
        "jitter",
        "frontier",
        "known (20/s)",
        "unknown",
        "over (25/s)",
        "two jobs",
        "three jobs",
        "python aiolimiter"
    );
    for mode in &modes {
        let gateway = Kind::of(mode);
        if let Some(kind) = gateway.filter(|k| !k.installed()) {
            println!("{mode:<8} (apt-get install {})", kind.package());
            continue;
        }
        for &jitter in &jitters {
            if gateway.is_some() && jitter > 0 {
                continue;
            }
            let front = match frontier_override {
                Some(f) => f,
                None => frontier(mode, jitter)?,
            };
            let want = |name: &str| cells.iter().any(|c| c == name);
            let run = |name: &str, per_second: Option<u32>, count: usize| {
                want(name)
                    .then(|| jobs(mode, jitter, rows, count, per_second, front))
                    .transpose()
            };
            let known = run("known", Some(20), 1)?;
            let unknown = run("unknown", None, 1)?;
            let over = run("over", Some(OVER), 1)?;
            let two = run("two", Some(20), 2)?;
            let three = run("three", Some(20), 3)?;
            let reference = if want("python") {
                python(mode, jitter, rows, front)?
            } else {
                None
            };
            let u = |c: &Cell| c.use_share.unwrap_or(0.0);
            let known_miss = |c: &Cell| {
                if jitter == 0 {
                    let want: f64 = if mode == "bucket" { 0.99 } else { 0.96 };
                    u(c) < want || c.refused_share > 0.005
                } else {
                    c.refused_share > 0.005 || u(c) < front - 0.03
                }
            };
            let unknown_miss = |c: &Cell| {
                c.to_90.is_none_or(|t| t > 30) || u(c) < 0.9 * front || c.refused_share > 0.03
            };
            let over_miss = |c: &Cell| u(c) < 0.93 * front || c.refused_share > 0.01;
            let jobs_miss =
                |c: &Cell| u(c) < 0.95 * front || c.refused_share > 0.005 || c.extra < 0.6;
            let show = |cell: &Option<Cell>, extra: &str, miss: &dyn Fn(&Cell) -> bool| {
                cell.as_ref()
                    .map_or("-".to_string(), |c| c.render(extra, miss(c)))
            };
            let python_cell = if !want("python") {
                "-".to_string()
            } else {
                reference
                    .as_ref()
                    .map_or("(pip install aiohttp aiolimiter)".to_string(), |c| {
                        c.render("cpu", false)
                    })
            };
            println!(
                "{:<8} {:>4}ms {:>7.0}% | {:<22} | {:<22} | {:<22} | {:<24} | {:<24} | {:<22}",
                mode,
                jitter,
                100.0 * front,
                show(&known, "cpu", &known_miss),
                show(&unknown, "t90", &unknown_miss),
                show(&over, "cpu", &over_miss),
                show(&two, "share", &jobs_miss),
                show(&three, "share", &jobs_miss),
                python_cell,
            );
            for (name, cell) in [
                ("known", &known),
                ("unknown", &unknown),
                ("over", &over),
                ("two jobs", &two),
                ("three jobs", &three),
                ("python", &reference),
            ] {
                for e in cell.iter().flat_map(|c| &c.errors) {
                    println!("    ERROR {mode} {jitter} ms {name}: {e}");
                }
            }
        }
    }
    Ok(())
}
