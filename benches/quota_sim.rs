//! `cargo bench --bench quota_sim`: the quota matrix of `cargo bench --bench pipeline -- quota`
//! in a few seconds, simulated. The real learned margin (`quota::adaptive::Margin`) paces
//! requests against the real sandbox limiter (`bulkverify_sandbox::Limiter`, with its arrival
//! jitter) on a simulated clock: no server, no sockets, no waiting. It is where a change to the
//! margin is tried across every cell and many seeds before the real bench, which stays the
//! measure; in the cells both ran it comes within about 0.1–0.2 points of the real 429 share.
//! It models the margin, not the gate's pacer: a slot the pacer loses shows only in the real
//! bench.
//!
//! The model of the client: every counted request (submissions and polls alike, 1,200 of
//! them, as the real bench's 600 rows make) waits for the account's next slot, spaced by the
//! configured period over the slowest margin of the jobs sharing the account, which take turns;
//! each leaves a little late (exponential, mean 0.3 ms, as the grant thread's wake-ups measure),
//! is counted after the sandbox's arrival delay, and is answered 1 ms after its count when
//! refused, 200–400 ms after when admitted. A refused request is sent again at the next slot.
//!
//! For each (mode, jitter) the frontier is found as the real bench finds it, by open-loop
//! pacing at fixed rates, and each cell prints the mean 429 share and use (accepted requests a
//! second over the busy period, over the limit) over `SIM_SEEDS` runs (40), how many runs
//! were over the cell's 429 goal or short of its use goal, and `MISS` where a mean misses:
//! known quota without jitter ≥ 96% (99% against the bucket), with jitter within 3 points of
//! the frontier, 429s ≤ 0.5%; over-configured (25/s against 20/s) ≥ 93% of the frontier and
//! ≤ 1%; two and three jobs ≥ 95% of the frontier and ≤ 0.5%. `SIM_MODES` and `SIM_JITTER`
//! narrow it like the real bench's `QUOTA_MODES` and `QUOTA_JITTER`; `SIM_TRACE=1` prints each
//! 429 of the first run of each cell (when, the pace, the request's number) to stderr.

// Only the environment's lists: the sandbox process and the reaping serve the real benches.
#[allow(dead_code)]
mod common;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use bulkverify::quota::adaptive::{Margin, Sent};
use bulkverify_sandbox::{LimitWindow, Limiter, SandboxConfig};
use common::env_list;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The provider's limit in every cell, and what the over-configured client believes.
const LIMIT: f64 = 20.0;
const OVER: f64 = 25.0;
/// The counted requests of the real bench's 600 rows: a submission and a poll each.
const REQUESTS: usize = 1200;
/// The gate's slack on each paced window (`config::DEFAULT_PACING_GUARD`).
const GUARD_US: f64 = 5_000.0;
/// Open-loop pacing runs per rate when the frontier is searched.
const FRONTIER_RUNS: u64 = 20;

/// What happens next in a simulated run, by the microsecond.
enum Event {
    /// The account's next slot: the next request leaves.
    Slot,
    /// A request is counted by the limiter.
    Arrive(Request),
    /// Its answer reaches the client.
    Answer(Request, bool),
}

#[derive(Clone, Copy)]
struct Request {
    job: usize,
    /// What the margin said when it left; none when paced open-loop.
    sent: Option<Sent>,
    sent_us: u64,
}

/// One simulated run: its 429 share and its accepted requests in each second.
struct Run {
    refused_share: f64,
    accepted: Vec<u64>,
}

/// Paces `REQUESTS` requests against a sandbox limiter of `mode` with `jitter` ms of arrival
/// jitter: `jobs` jobs on one account configured at `per_second`, each with its margin, or
/// open-loop at `fixed` of the limit.
fn simulate(
    mode: LimitWindow,
    jitter: u64,
    jobs: usize,
    per_second: f64,
    fixed: Option<f64>,
    seed: u64,
) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let epoch = std::time::Instant::now();
    let at = |us: u64| tokio::time::Instant::from_std(epoch + Duration::from_micros(us));
    let mut limiter = Limiter::new(&SandboxConfig {
        per_second: LIMIT as u64,
        per_minute: 0,
        per_day: 0,
        limit_window: mode,
        limit_burst: 5,
        arrival_jitter_ms: jitter,
        ..SandboxConfig::default()
    });
    let mut margins: Vec<Margin> = (0..jobs).map(|_| Margin::new(at(0))).collect();
    let base_us = (1_000_000.0 + GUARD_US) / per_second;
    let mut queue = Queue::default();
    queue.schedule(rng.random_range(0..50_000), Event::Slot);
    let (mut to_send, mut turn, mut arrived, mut refused) = (REQUESTS, 0, 0u64, 0u64);
    let mut accepted: Vec<u64> = Vec::new();
    let trace = std::env::var_os("SIM_TRACE").is_some() && seed == 0 && fixed.is_none();
    while let Some((t, event)) = queue.next() {
        let paced = margins.iter().map(Margin::fraction).fold(1.0, f64::min);
        match event {
            Event::Slot if to_send > 0 => {
                to_send -= 1;
                let job = turn % jobs;
                turn += 1;
                let sent = fixed.is_none().then(|| margins[job].sent(at(t), paced));
                let late = (-300.0 * (1.0 - rng.random::<f64>()).ln()) as u64;
                let sent_us = t + late;
                let arrive = sent_us + 1000 * limiter.arrival_delay_ms(&mut rng);
                let request = Request { job, sent, sent_us };
                queue.schedule(arrive, Event::Arrive(request));
                let period = base_us / fixed.unwrap_or(paced);
                queue.schedule(t + period as u64, Event::Slot);
            }
            Event::Slot => {}
            Event::Arrive(request) => {
                arrived += 1;
                let admitted = limiter.admit(t / 1000);
                if admitted {
                    let second = (t / 1_000_000) as usize;
                    if accepted.len() <= second {
                        accepted.resize(second + 1, 0);
                    }
                    accepted[second] += 1;
                } else {
                    refused += 1;
                    to_send += 1;
                    if trace {
                        eprint!("[{:.1} s, pace {paced:.3}, #{arrived}] ", t as f64 / 1e6);
                    }
                }
                let back = if admitted {
                    rng.random_range(200_000..400_000)
                } else {
                    1_000
                };
                queue.schedule(t + back, Event::Answer(request, admitted));
            }
            Event::Answer(request, admitted) => {
                let Some(sent) = request.sent else { continue };
                let margin = &mut margins[request.job];
                if admitted {
                    let rtt = Duration::from_micros(t - request.sent_us);
                    margin.answered(at(t), sent, rtt, jobs);
                } else {
                    margin.refused(sent, jobs);
                }
            }
        }
    }
    if trace {
        eprintln!();
    }
    Run {
        refused_share: refused as f64 / arrived.max(1) as f64,
        accepted,
    }
}

/// The events to come, earliest first.
#[derive(Default)]
struct Queue {
    at: BinaryHeap<Reverse<(u64, usize)>>,
    events: Vec<Option<Event>>,
}

impl Queue {
    fn schedule(&mut self, t: u64, event: Event) {
        self.events.push(Some(event));
        self.at.push(Reverse((t, self.events.len() - 1)));
    }

    fn next(&mut self) -> Option<(u64, Event)> {
        let Reverse((t, i)) = self.at.pop()?;
        self.events[i].take().map(|e| (t, e))
    }
}

/// Accepted requests a second over the busy period, over the limit: the whole seconds after
/// the first accepted request through the last second at 80% of the frontier's rate.
fn busy_use(accepted: &[u64], frontier: f64) -> f64 {
    let first = accepted.iter().position(|&n| n > 0).unwrap_or(0);
    let last = accepted
        .iter()
        .rposition(|&n| n as f64 >= 0.8 * frontier * LIMIT)
        .unwrap_or(first);
    let busy = &accepted[(first + 1).min(last)..=last];
    busy.iter().sum::<u64>() as f64 / busy.len().max(1) as f64 / LIMIT
}

/// The highest share of the limit that open-loop pacing holds at ≤ 0.5% 429s, in steps of
/// half a point.
fn frontier(mode: LimitWindow, jitter: u64) -> f64 {
    let mut f = 1.0;
    while f > 0.05 {
        let share = (0..FRONTIER_RUNS)
            .map(|s| simulate(mode, jitter, 1, LIMIT, Some(f), 1_000 + s).refused_share)
            .sum::<f64>()
            / FRONTIER_RUNS as f64;
        if share <= 0.005 {
            return f;
        }
        f -= 0.005;
    }
    0.05
}

fn mode_of(name: &str) -> LimitWindow {
    match name {
        "fixed" => LimitWindow::Fixed,
        "sliding" => LimitWindow::Sliding,
        "bucket" => LimitWindow::Bucket,
        "gcra" => LimitWindow::Gcra,
        other => panic!("SIM_MODES: unknown mode {other:?} (fixed, sliding, bucket, gcra)"),
    }
}

fn main() {
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut misses = 0;
    println!(
        "mode    jitter  cell   frontier   429 mean (runs over)   use mean (runs short of goal)"
    );
    for name in env_list("SIM_MODES", "fixed,sliding,bucket,gcra") {
        let mode = mode_of(&name);
        for jitter in env_list("SIM_JITTER", "0,10,50") {
            let jitter: u64 = jitter.parse().expect("SIM_JITTER: milliseconds");
            let front = frontier(mode, jitter);
            for (cell, jobs, per_second) in [
                ("known", 1, LIMIT),
                ("over", 1, OVER),
                ("two", 2, LIMIT),
                ("three", 3, LIMIT),
            ] {
                let (max_refused, min_use) = match cell {
                    "over" => (0.01, 0.93 * front),
                    "two" | "three" => (0.005, 0.95 * front),
                    _ if jitter == 0 && mode == LimitWindow::Bucket => (0.005, 0.99),
                    _ if jitter == 0 => (0.005, 0.96),
                    _ => (0.005, front - 0.03),
                };
                let runs: Vec<Run> = (0..seeds)
                    .map(|s| simulate(mode, jitter, jobs, per_second, None, s))
                    .collect();
                let refused: Vec<f64> = runs.iter().map(|r| r.refused_share).collect();
                let used: Vec<f64> = runs.iter().map(|r| busy_use(&r.accepted, front)).collect();
                let over = refused.iter().filter(|&&r| r > max_refused).count();
                let short = used.iter().filter(|&&u| u < min_use).count();
                let miss = mean(&refused) > max_refused || mean(&used) < min_use;
                misses += usize::from(miss);
                println!(
                    "{name:<8}J{jitter:<6} {cell:<6} {:5.1}%   {:5.2}% ({over:2}/{seeds})        \
                     {:5.1}% ({short:2}/{seeds} short of {:4.1}%){}",
                    100.0 * front,
                    100.0 * mean(&refused),
                    100.0 * mean(&used),
                    100.0 * min_use,
                    if miss { "  MISS" } else { "" }
                );
            }
        }
    }
    println!("{misses} cells miss a goal");
}
