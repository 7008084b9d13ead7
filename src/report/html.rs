//! The run report: one self-contained HTML file that shows, in one look, what a job's runs did.
//! It opens from a mail attachment or a shared drive, so it loads nothing: its style is
//! inline, its charts are inline SVG, and it has no script. It holds counts, codes and times
//! only, never an identifier, a name or a provider's message.

mod advice;
mod rate;
mod svg;
#[cfg(test)]
mod tests;
mod text;

use std::fmt::Write as _;

use crate::outcome::Status;
use crate::report::{EXIT_FATAL, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE};

use svg::{Anchor, Svg};
use text::{count, duration_ms, esc, money, ms_text, rate_text, rows, utc};

/// Everything the report shows of one job, across the runs that resumed it: counts, codes and
/// times only, never an identifier, a name or a provider's message.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// The check's name, as `--check` takes it.
    pub check: String,
    pub provider: String,
    /// The output file's name as the user gave it.
    pub output: String,
    /// Unix milliseconds, UTC.
    pub generated_at_ms: i64,
    /// Every status in `Status::ALL` order, zeros included.
    pub counts: Vec<(Status, u64)>,
    pub duplicates: u64,
    /// By status, then by rows, most first.
    pub reasons: Vec<ReasonCount>,
    /// Oldest first.
    pub runs: Vec<RunRecord>,
    /// One for each second in which a request was sent, in order.
    pub seconds: Vec<SecondCounts>,
    /// One for each endpoint label.
    pub latency: Vec<Latency>,
    pub quota: Quota,
    pub spend: Spend,
}

/// Rows with one `bv_reason`, with what the code means.
#[derive(Debug, Clone, PartialEq)]
pub struct ReasonCount {
    pub status: Status,
    /// A code of the vocabulary, or a provider's own: only codes of `[a-z0-9_]`, at most 64
    /// long, are shown as they are.
    pub code: String,
    pub meaning: String,
    pub rows: u64,
}

/// One run of the job: one command that took it up where the last one left it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// 1, 2, ... within the job.
    pub number: u32,
    pub started_ms: i64,
    /// `None`: killed, or still running.
    pub ended_ms: Option<i64>,
    /// `None`: killed, or still running.
    pub exit_code: Option<u8>,
    pub phases: Vec<PhaseSpan>,
    pub calls: u64,
    pub rate_limited: u64,
    pub retries: u64,
    pub paid: u64,
    pub reused: u64,
}

/// When a run was in one phase, Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseSpan {
    pub phase: Phase,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The phases of a run, in the order a run goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    ReadAndPlan,
    Send,
    Poll,
    Download,
    Merge,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::ReadAndPlan,
        Phase::Send,
        Phase::Poll,
        Phase::Download,
        Phase::Merge,
    ];

    /// The phase as the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Phase::ReadAndPlan => "read and plan",
            Phase::Send => "send",
            Phase::Poll => "poll",
            Phase::Download => "download",
            Phase::Merge => "merge",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Phase::ReadAndPlan => "phase-plan",
            Phase::Send => "phase-send",
            Phase::Poll => "phase-poll",
            Phase::Download => "phase-download",
            Phase::Merge => "phase-merge",
        }
    }
}

/// The requests of one second, by how they went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecondCounts {
    /// Unix seconds.
    pub second: i64,
    /// The [`RunRecord::number`] it belongs to.
    pub run: u32,
    /// Requests sent in that second, of every kind.
    pub sent: u64,
    /// Of them, answered without a 429: what the provider's quota counted.
    pub accepted: u64,
    /// Of them, answered 429.
    pub rate_limited: u64,
    /// Of them, sent again after a failure.
    pub retries: u64,
}

/// How long one endpoint took to answer, over the job.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    pub endpoint: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The account's quota as configured, and what the day used of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Quota {
    pub per_second: Option<f64>,
    pub per_minute: Option<u64>,
    pub per_day: Option<u64>,
    /// Requests the account counted in the last 24 hours, every job's: the per-day window.
    pub day_used: Option<u64>,
    /// What the pacing learned, as the summary says it.
    pub pace_note: Option<String>,
}

/// What the job paid for and what it did not have to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spend {
    pub paid_calls: u64,
    /// Rows answered from earlier jobs on the account, without a call.
    pub reused: u64,
    /// In the account's currency, when the check's config gives it.
    pub price_per_call: Option<f64>,
}

/// The whole report, one self-contained HTML document.
pub fn render(job: &JobReport) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>bulkverify {} report</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n",
        esc(&job.check)
    );
    header(&mut s, job);
    let verdict = advice::verdict(job);
    let _ = write!(
        s,
        "<section id=\"outcome\" class=\"verdict {}\">\n<h2>{}</h2>\n",
        verdict.tone,
        esc(&verdict.headline)
    );
    if !verdict.steps.is_empty() {
        s.push_str("<ul>");
        for step in &verdict.steps {
            let _ = write!(s, "<li>{}</li>", esc(step));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("</section>\n");
    section(&mut s, "counts", "Outcomes", &outcome_bars(job));
    section(&mut s, "reasons", "Why: bv_reason by status", &reasons(job));
    section(
        &mut s,
        "rate",
        "Requests accepted per second, against the quota",
        &rate::section(job),
    );
    section(&mut s, "latency", "How long answers took", &latency(job));
    section(&mut s, "runs", "Runs and their phases", &runs(job));
    section(&mut s, "spend", "Paid calls and cost", &spend(job));
    section(&mut s, "quota", "The account's quota", &quota(job));
    s.push_str(
        "<footer>Counts, codes and times only: no identifier, name or provider's message. \
         Times are UTC.</footer>\n</body>\n</html>\n",
    );
    s
}

fn section(s: &mut String, id: &str, title: &str, body: &str) {
    let _ = write!(
        s,
        "<section id=\"{id}\">\n<h2>{}</h2>\n{body}\n</section>\n",
        esc(title)
    );
}

fn header(s: &mut String, job: &JobReport) {
    let total: u64 = job.counts.iter().map(|(_, n)| n).sum();
    let _ = write!(
        s,
        "<header>\n<h1>bulkverify <span class=\"check\">{}</span> ({})</h1>\n<p>output {} · \
         report written {}</p>\n<p>{} in the job",
        esc(&job.check),
        esc(&job.provider),
        esc(&job.output),
        utc(job.generated_at_ms),
        rows(total)
    );
    if job.duplicates > 0 {
        let _ = write!(
            s,
            " ({} repeated an earlier identifier and carr{} its outcome)",
            rows(job.duplicates),
            if job.duplicates == 1 { "ies" } else { "y" }
        );
    }
    if let (Some(first), Some(last)) = (job.runs.first(), job.runs.last()) {
        let _ = write!(
            s,
            " · {} run{}, from {}",
            job.runs.len(),
            if job.runs.len() == 1 { "" } else { "s" },
            utc(first.started_ms)
        );
        match last.ended_ms {
            Some(end) => {
                let _ = write!(s, " to {}", utc(end));
            }
            None => s.push_str(", the last one unfinished"),
        }
    }
    s.push_str("</p>\n</header>\n");
}

fn outcome_bars(job: &JobReport) -> String {
    let max = job.counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let total: u64 = job.counts.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return "<p class=\"empty\">The job has no rows.</p>".to_string();
    }
    const ROW: f64 = 30.0;
    // Room after the longest bar for its count and share.
    let (x0, x1) = (130.0, 820.0);
    let mut svg = Svg::new(960.0, ROW * job.counts.len() as f64 + 8.0);
    for (i, (status, n)) in job.counts.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        svg.text((x0 - 8.0, y + 19.0), Anchor::End, "label", status.as_str());
        let w = if *n == 0 {
            0.0
        } else {
            ((x1 - x0) * *n as f64 / max as f64).max(2.0)
        };
        if w > 0.0 {
            let title = format!("{status}: {}", rows(*n));
            svg.rect(x0, y + 4.0, w, ROW - 8.0, &format!("bar {status}"), &title);
        }
        let share = 100.0 * *n as f64 / total as f64;
        let label = format!("{} ({share:.1}%)", count(*n));
        svg.text((x0 + w + 6.0, y + 19.0), Anchor::Start, "value", &label);
    }
    svg.finish("chart outcomes", "rows by outcome")
}

/// A code as the report shows it: a provider's code that is not a plain lower-case word could
/// carry anything, so it is named, not shown.
fn shown_code(code: &str) -> &str {
    let plain = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain { code } else { "(other provider code)" }
}

fn reasons(job: &JobReport) -> String {
    if job.reasons.is_empty() {
        return "<p class=\"empty\">No row carries a bv_reason.</p>".to_string();
    }
    let mut s = String::from(
        "<table>\n<thead><tr><th>bv_status</th><th>bv_reason</th><th class=\"n\">rows</th>\
         <th>what it means</th></tr></thead>\n<tbody>\n",
    );
    for r in &job.reasons {
        let _ = writeln!(
            s,
            "<tr><td class=\"t\"><span class=\"key {st}\"></span>{st}</td><td><code>{}</code></td>\
             <td class=\"n\">{}</td><td>{}</td></tr>",
            esc(shown_code(&r.code)),
            count(r.rows),
            esc(&r.meaning),
            st = r.status
        );
    }
    s.push_str("</tbody>\n</table>");
    s
}

fn latency(job: &JobReport) -> String {
    if job.latency.is_empty() {
        return "<p class=\"empty\">No answer was timed.</p>".to_string();
    }
    let mut s = String::from(
        "<table>\n<thead><tr><th>endpoint</th><th class=\"n\">answers</th><th class=\"n\">\
         median</th><th class=\"n\">90th percentile</th><th class=\"n\">99th percentile</th>\
         <th class=\"n\">slowest</th></tr></thead>\n<tbody>\n",
    );
    for l in &job.latency {
        let _ = writeln!(
            s,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&l.endpoint),
            count(l.count),
            ms_text(l.p50_ms),
            ms_text(l.p90_ms),
            ms_text(l.p99_ms),
            ms_text(l.max_ms)
        );
    }
    s.push_str("</tbody>\n</table>");
    s
}

/// How a run ended, in a word or two.
fn run_end(run: &RunRecord) -> &'static str {
    match run.exit_code {
        Some(EXIT_OK) => "complete",
        Some(EXIT_INCOMPLETE) => "incomplete",
        Some(EXIT_FATAL) => "failed",
        Some(EXIT_USAGE) => "wrong command line",
        Some(_) => "ended",
        None => "did not finish (killed, or still running)",
    }
}

/// A run's length: to its end, or to the end of its last phase.
fn run_ms(run: &RunRecord) -> i64 {
    let end = run
        .ended_ms
        .or_else(|| run.phases.iter().map(|p| p.to_ms).max())
        .unwrap_or(run.started_ms);
    (end - run.started_ms).max(0)
}

fn runs(job: &JobReport) -> String {
    if job.runs.is_empty() {
        return "<p class=\"empty\">No run is recorded.</p>".to_string();
    }
    let mut s = phase_bars(job);
    s.push_str(
        "\n<table>\n<thead><tr><th>run</th><th>started</th><th>ended</th><th class=\"n\">took\
         </th><th>exit</th><th class=\"n\">calls</th><th class=\"n\">429 answers</th>\
         <th class=\"n\">retries</th><th class=\"n\">paid</th><th class=\"n\">reused</th></tr>\
         </thead>\n<tbody>\n",
    );
    for r in &job.runs {
        let ended = r.ended_ms.map_or_else(|| "—".to_string(), utc);
        let exit = r.exit_code.map_or_else(String::new, |c| format!("{c}: "));
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td class=\"t\">{}</td><td class=\"t\">{ended}</td><td class=\"n\">{}</td>\
             <td class=\"t\">{exit}{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            r.number,
            utc(r.started_ms),
            duration_ms(run_ms(r)),
            run_end(r),
            count(r.calls),
            count(r.rate_limited),
            count(r.retries),
            count(r.paid),
            count(r.reused)
        );
    }
    s.push_str("</tbody>\n</table>\n<table>\n<thead><tr><th>run</th>");
    for p in Phase::ALL {
        let _ = write!(
            s,
            "<th class=\"n\"><span class=\"key {}\"></span>{}</th>",
            p.class(),
            p.label()
        );
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for r in &job.runs {
        let _ = write!(s, "<tr><td>{}</td>", r.number);
        for p in Phase::ALL {
            let ms: i64 = r
                .phases
                .iter()
                .filter(|span| span.phase == p)
                .map(|span| (span.to_ms - span.from_ms).max(0))
                .sum();
            let shown = if r.phases.iter().any(|span| span.phase == p) {
                duration_ms(ms)
            } else {
                "—".to_string()
            };
            let _ = write!(s, "<td class=\"n\">{shown}</td>");
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody>\n</table>");
    s
}

/// Each run's phases on a bar of its own length, so that a short resumed run reads as well as
/// a long night.
fn phase_bars(job: &JobReport) -> String {
    // Each phase in a lane of its own, since a run sends, polls and downloads at once.
    const LANE: f64 = 9.0;
    const ROW: f64 = LANE * Phase::ALL.len() as f64 + 12.0;
    let (x0, x1) = (90.0, 840.0);
    let mut svg = Svg::new(960.0, ROW * job.runs.len() as f64 + 8.0);
    for (i, run) in job.runs.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let middle = y + ROW / 2.0 + 4.0;
        svg.text(
            (8.0, middle),
            Anchor::Start,
            "label",
            &format!("run {}", run.number),
        );
        let length = run_ms(run).max(1) as f64;
        let x = |ms: i64| x0 + (x1 - x0) * ((ms - run.started_ms) as f64 / length).clamp(0.0, 1.0);
        for span in &run.phases {
            let (a, b) = (x(span.from_ms), x(span.to_ms));
            if b <= a {
                continue;
            }
            let title = format!(
                "run {}, {}: {} ({} to {})",
                run.number,
                span.phase.label(),
                duration_ms(span.to_ms - span.from_ms),
                utc(span.from_ms),
                utc(span.to_ms)
            );
            let lane = Phase::ALL
                .iter()
                .position(|p| *p == span.phase)
                .unwrap_or(0);
            svg.rect(
                a,
                y + 6.0 + LANE * lane as f64,
                (b - a).max(1.0),
                LANE - 2.0,
                span.phase.class(),
                &title,
            );
        }
        let took = duration_ms(run_ms(run));
        svg.text((x1 + 8.0, middle), Anchor::Start, "value", &took);
    }
    svg.finish("chart phases", "the phases of each run over its time")
}

fn spend(job: &JobReport) -> String {
    let sp = &job.spend;
    let mut s = format!(
        "<dl>\n<dt>paid calls</dt><dd>{}</dd>\n<dt>rows answered from earlier jobs, without a \
         call</dt><dd>{}</dd>\n",
        count(sp.paid_calls),
        count(sp.reused)
    );
    match sp.price_per_call {
        Some(price) => {
            let _ = write!(
                s,
                "<dt>cost</dt><dd>{} ({} paid calls at {} each, in the account's currency)</dd>\n\
                 <dt>saved by reuse</dt><dd>{}</dd>\n",
                money(sp.paid_calls as f64 * price),
                count(sp.paid_calls),
                money(price),
                money(sp.reused as f64 * price)
            );
        }
        None => s.push_str(
            "<dt>cost</dt><dd>not known: the check's config gives no price_per_call</dd>\n",
        ),
    }
    s.push_str("</dl>");
    s
}

fn quota(job: &JobReport) -> String {
    let q = &job.quota;
    let mut s = String::from("<dl>\n");
    let configured = |v: Option<String>| v.unwrap_or_else(|| "not configured".to_string());
    let _ = write!(
        s,
        "<dt>a second</dt><dd>{}</dd>\n<dt>a minute</dt><dd>{}</dd>\n<dt>a day</dt><dd>{}</dd>\n",
        configured(q.per_second.map(rate_text)),
        configured(q.per_minute.map(count)),
        configured(q.per_day.map(count))
    );
    let used = match (q.day_used, q.per_day) {
        (Some(used), Some(day)) if day > 0 => format!(
            "{} of {} ({:.0}%)",
            count(used),
            count(day),
            100.0 * used as f64 / day as f64
        ),
        (Some(used), _) => format!("{} (no daily quota configured)", count(used)),
        (None, _) => "not known".to_string(),
    };
    let _ = writeln!(
        s,
        "<dt>used in the last 24 hours, every job of the account</dt><dd>{used}</dd>"
    );
    if let Some(note) = &q.pace_note {
        let _ = writeln!(s, "<dt>pacing</dt><dd>{}</dd>", esc(note));
    }
    s.push_str("</dl>");
    if let (Some(used), Some(day)) = (q.day_used, q.per_day)
        && day > 0
    {
        let share = (used as f64 / day as f64).min(1.0);
        let mut svg = Svg::new(960.0, 24.0);
        svg.rect(0.0, 4.0, 960.0, 16.0, "meter", "");
        if used > 0 {
            let tone = if used >= day {
                "meter-used full"
            } else {
                "meter-used"
            };
            let title = format!(
                "{} of {} used in the last 24 hours",
                count(used),
                count(day)
            );
            svg.rect(0.0, 4.0, (960.0 * share).max(2.0), 16.0, tone, &title);
        }
        s.push_str(&svg.finish("chart day", "the day's quota used"));
    }
    s
}

/// The report's style, inline: a file that opens anywhere loads no stylesheet.
const STYLE: &str = include_str!("html/style.css");
