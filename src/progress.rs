//! Progress for a person at a terminal (bars) and for cron (a plain line every few seconds).
//!
//! indicatif hides its bars when stderr is not a terminal, so the plain lines come from this
//! module's own ticker, not from the bars. Log lines go through [`LogWriter`], which suspends
//! the bars while it writes so that neither tears the other. Nothing here ever shows an
//! identifier: only counts.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::stats::Stats;
use crate::util::sync::lock;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    Bars,
    Lines,
    Off,
}

impl ProgressMode {
    /// What `auto` means here and now.
    pub fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto => {
                let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
                if std::io::stderr().is_terminal() && !dumb {
                    ProgressMode::Bars
                } else {
                    ProgressMode::Lines
                }
            }
            other => other,
        }
    }
}

/// The stage of the run, shown as the bars' prefix and in plain lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Reading,
    Verifying,
    Writing,
}

/// The bars, once drawn: log lines must suspend them.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Where log lines go: stderr, around the bars.
pub struct LogWriter;

/// What `run --quiet` holds back: the lines written while it holds, given out only when the
/// run does not complete. Cron mails what a job prints.
static HELD: Mutex<Option<Held>> = Mutex::new(None);

/// The most `--quiet` holds, in each of two parts: a run that logs more keeps its first lines,
/// which say what went wrong first, and its last, which hold the summary.
const HELD_PART: usize = 2 << 20;

#[derive(Default)]
struct Held {
    head: Vec<u8>,
    tail: Vec<u8>,
    dropped: usize,
}

impl Held {
    fn add(&mut self, buf: &[u8]) {
        if self.tail.is_empty() && self.head.len() + buf.len() <= HELD_PART {
            return self.head.extend_from_slice(buf);
        }
        self.tail.extend_from_slice(buf);
        if self.tail.len() > 2 * HELD_PART {
            // Whole lines go: the tail starts after a line's end.
            let cut = self.tail.len() - HELD_PART;
            let cut = self.tail[cut..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(cut, |i| cut + i + 1);
            self.tail.drain(..cut);
            self.dropped += cut;
        }
    }

    fn bytes(self) -> Vec<u8> {
        let mut out = self.head;
        if self.dropped > 0 {
            out.extend_from_slice(
                format!(
                    "bulkverify: ({} bytes of log lines left out here)\n",
                    self.dropped
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(&self.tail);
        out
    }
}

/// From now on, lines through [`LogWriter`] are held back, not written.
pub fn hold_lines() {
    *lock(&HELD) = Some(Held::default());
}

/// Stops holding lines back, and writes the held ones when `show`.
pub fn release_lines(show: bool) {
    let held = lock(&HELD).take();
    if let Some(held) = held.filter(|_| show) {
        let _ = std::io::stderr().write_all(&held.bytes());
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(held) = lock(&HELD).as_mut() {
            held.add(buf);
            return Ok(buf.len());
        }
        match BARS.get() {
            Some(multi) => multi.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A running display.
pub struct Progress {
    phase: watch::Sender<Phase>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `stats`. `every` is the interval of plain lines.
    pub fn start(mode: ProgressMode, stats: Arc<Stats>, every: Duration) -> Progress {
        let (phase, rx) = watch::channel(Phase::Reading);
        let task = match mode.resolve() {
            ProgressMode::Bars => Some(tokio::spawn(bars(stats, rx))),
            ProgressMode::Lines => Some(tokio::spawn(lines(stats, rx, every))),
            ProgressMode::Off | ProgressMode::Auto => None,
        };
        Progress { phase, task }
    }

    pub fn phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Draws the last state and stops.
    pub async fn finish(mut self) {
        drop(self.phase);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn bars(stats: Arc<Stats>, mut phase: watch::Receiver<Phase>) {
    let multi = BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
    let style = |template: &str| {
        ProgressStyle::with_template(template)
            .expect("the templates are valid")
            .progress_chars("=> ")
    };
    let read = multi
        .add(ProgressBar::new_spinner().with_style(style("{prefix:>9} {spinner} {pos} rows read")));
    read.set_prefix("reading");
    // The submitted and done bars appear once their total is known.
    let mut verify: Option<(ProgressBar, ProgressBar, Instant, u64)> = None;
    loop {
        read.set_position(Stats::get(&stats.rows_read));
        let current = *phase.borrow_and_update();
        if current != Phase::Reading && verify.is_none() {
            read.finish();
            let total = Stats::get(&stats.work_total);
            let sent = multi.add(
                ProgressBar::new(total)
                    .with_style(style("{prefix:>9} [{bar:30}] {pos}/{len} rows submitted")),
            );
            sent.set_prefix("verifying");
            let done = multi.add(ProgressBar::new(total).with_style(style(
                "{prefix:>9} [{bar:30}] {pos}/{len} rows done · eta {eta} · {msg}",
            )));
            verify = Some((sent, done, Instant::now(), Stats::get(&stats.done)));
        }
        if let Some((sent, done, t0, d0)) = &verify {
            let total = Stats::get(&stats.work_total);
            let finished = Stats::get(&stats.done);
            sent.set_prefix(if current == Phase::Writing {
                "writing"
            } else {
                "verifying"
            });
            sent.set_length(total);
            sent.set_position(Stats::get(&stats.submitted).min(total));
            done.set_length(total);
            done.set_position(finished.min(total));
            done.set_message(format!(
                "{:.1} rows/s · {}",
                rate(finished - d0, t0.elapsed()),
                counters(&stats)
            ));
        }
        tokio::select! {
            changed = phase.changed() => if changed.is_err() { break },
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    read.finish();
    if let Some((sent, done, _, _)) = verify {
        sent.finish();
        done.finish();
    }
    let _ = multi.clear();
}

fn rate(rows: u64, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64().max(1e-3)
}

fn counters(stats: &Stats) -> String {
    let mut parts = vec![
        format!("{} calls", Stats::get(&stats.calls)),
        format!("{} × 429", Stats::get(&stats.rate_limited)),
        format!("{} retries", Stats::get(&stats.retries)),
    ];
    let unconfirmed = Stats::get(&stats.unconfirmed);
    if unconfirmed > 0 {
        parts.push(format!("{unconfirmed} unconfirmed"));
    }
    parts.join(" · ")
}

async fn lines(stats: Arc<Stats>, mut phase: watch::Receiver<Phase>, every: Duration) {
    let started = Instant::now();
    // The rate counts from the moment verification began, not from the start of the run.
    let mut verifying_since: Option<(Instant, u64)> = None;
    loop {
        let current = *phase.borrow_and_update();
        if current == Phase::Verifying && verifying_since.is_none() {
            verifying_since = Some((Instant::now(), Stats::get(&stats.done)));
        }
        tokio::select! {
            changed = phase.changed() => if changed.is_err() { break } else { continue },
            () = tokio::time::sleep(every) => {}
        }
        let line = match current {
            Phase::Reading => format!("reading: {} rows read", Stats::get(&stats.rows_read)),
            Phase::Verifying => {
                let (t0, d0) = verifying_since.unwrap_or((started, 0));
                verifying_line(&stats, t0.elapsed(), Stats::get(&stats.done) - d0)
            }
            Phase::Writing => "writing the output".to_string(),
        };
        let _ = writeln!(
            LogWriter,
            "bulkverify [{}] {line}",
            clock(started.elapsed())
        );
    }
}

/// One plain progress line: counts, rate and time left.
fn verifying_line(stats: &Stats, elapsed: Duration, done_since: u64) -> String {
    let total = Stats::get(&stats.work_total);
    let done = Stats::get(&stats.done).min(total);
    let pct = if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    let rate = rate(done_since, elapsed);
    let eta = if rate > 0.0 {
        clock(Duration::from_secs_f64((total - done) as f64 / rate))
    } else {
        "unknown".into()
    };
    format!(
        "{done}/{total} rows done ({pct:.1}%) · {} submitted · {rate:.1} rows/s · eta {eta} · {}",
        Stats::get(&stats.submitted),
        counters(stats)
    )
}

/// `h:mm:ss`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run that logs more than `--quiet` holds keeps its first lines and its last (the
    /// summary), whole, and says what it left out.
    #[test]
    fn held_lines_keep_the_first_and_the_last() {
        let mut held = Held::default();
        held.add(b"first warning\n");
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        for _ in 0..(5 * HELD_PART / line.len()) {
            held.add(&line);
        }
        held.add(b"summary\n");
        let out = held.bytes();
        assert!(out.len() < 4 * HELD_PART + 200, "{}", out.len());
        assert!(out.starts_with(b"first warning\n"));
        assert!(out.ends_with(b"summary\n"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("bytes of log lines left out here)\n"));
        assert!(text.lines().all(|l| l.len() == 99 || !l.starts_with('x')));
    }

    #[test]
    fn plain_line_has_counts_rate_and_eta() {
        let stats = Stats::default();
        Stats::add(&stats.work_total, 100);
        Stats::add(&stats.done, 25);
        Stats::add(&stats.submitted, 40);
        Stats::add(&stats.calls, 90);
        Stats::add(&stats.rate_limited, 2);
        let line = verifying_line(&stats, Duration::from_secs(10), 25);
        assert_eq!(
            line,
            "25/100 rows done (25.0%) · 40 submitted · 2.5 rows/s · eta 0:00:30 · \
             90 calls · 2 × 429 · 0 retries"
        );
        assert!(verifying_line(&stats, Duration::from_secs(10), 0).contains("eta unknown"));
    }

    #[test]
    fn clock_format() {
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
    }
}
