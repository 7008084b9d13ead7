//! The rate chart: requests the provider accepted each second, against the quota, over every
//! run of the job. Runs sit one after another with the time between them left out, so that a
//! job resumed the next night reads as one line; each run's start is marked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::svg::{Anchor, Svg, value_axis};
use super::text::{count, duration_ms, esc, rate_text, utc, utc_clock, utc_day};
use super::{JobReport, Quota, SecondCounts};

/// At most about this many points on the line: a ten-hour night is 600 minutes, and each point
/// keeps more than half a pixel on a wide screen.
pub(super) const MAX_POINTS: i64 = 1_500;

/// The buckets a long job's seconds are summed into, shortest first: one that keeps the line
/// within [`MAX_POINTS`] is taken.
const BUCKETS: [i64; 6] = [1, 60, 300, 900, 3_600, 86_400];

/// A run's stretch of the chart, in Unix seconds, both ends included: from its start (or its
/// first request) to its end (or its last request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stretch {
    pub run: u32,
    pub from: i64,
    pub to: i64,
    /// Seconds of the chart before it: the stretches of the runs before it.
    pub offset: i64,
}

impl Stretch {
    fn len(&self) -> i64 {
        self.to - self.from + 1
    }
}

/// One point of the line: a bucket of one run's seconds, with what was sent in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Point {
    /// Its first second, Unix.
    pub at: i64,
    pub seconds: i64,
    /// Where it starts, in seconds of the chart.
    pub x: i64,
    pub sent: u64,
    pub accepted: u64,
    pub rate_limited: u64,
    pub retries: u64,
}

/// The job's seconds laid out for the chart.
#[derive(Debug)]
pub(super) struct Timeline {
    pub stretches: Vec<Stretch>,
    /// Seconds in each point.
    pub bucket: i64,
    pub points: Vec<Point>,
    /// Seconds of the chart: every stretch's.
    pub total: i64,
}

/// `None` when the job sent no request.
pub(super) fn timeline(job: &JobReport) -> Option<Timeline> {
    let mut by_run: BTreeMap<u32, Vec<&SecondCounts>> = BTreeMap::new();
    for s in &job.seconds {
        by_run.entry(s.run).or_default().push(s);
    }
    if by_run.is_empty() {
        return None;
    }
    let numbers: BTreeSet<u32> = job
        .runs
        .iter()
        .map(|r| r.number)
        .chain(by_run.keys().copied())
        .collect();
    let mut stretches = Vec::new();
    let mut offset = 0;
    for n in numbers {
        let run = job.runs.iter().find(|r| r.number == n);
        let secs = by_run.get(&n).map(Vec::as_slice).unwrap_or_default();
        let start = run.map(|r| r.started_ms.div_euclid(1000));
        // The second a run's last millisecond fell in: a run of 60 s takes 60 seconds.
        let end = run.and_then(|r| {
            r.ended_ms
                .or_else(|| r.phases.iter().map(|p| p.to_ms).max())
                .map(|ms| (ms - 1).div_euclid(1000))
        });
        let first = secs.iter().map(|s| s.second).min();
        let last = secs.iter().map(|s| s.second).max();
        let Some(from) = start.into_iter().chain(first).min() else {
            continue;
        };
        let to = end.into_iter().chain(last).fold(from, i64::max);
        let stretch = Stretch {
            run: n,
            from,
            to,
            offset,
        };
        offset += stretch.len();
        stretches.push(stretch);
    }
    let total = offset;
    let room = (MAX_POINTS - stretches.len() as i64).max(1);
    let bucket = BUCKETS
        .into_iter()
        .find(|b| (total + b - 1) / b <= room)
        .unwrap_or((total + room - 1) / room);
    let mut points = Vec::new();
    for st in &stretches {
        let first = st.from.div_euclid(bucket);
        let base = points.len();
        for k in first..=st.to.div_euclid(bucket) {
            let lo = (k * bucket).max(st.from);
            let hi = (k * bucket + bucket - 1).min(st.to);
            points.push(Point {
                at: lo,
                seconds: hi - lo + 1,
                x: st.offset + lo - st.from,
                sent: 0,
                accepted: 0,
                rate_limited: 0,
                retries: 0,
            });
        }
        for s in by_run.get(&st.run).into_iter().flatten() {
            let p = &mut points[base + (s.second.div_euclid(bucket) - first) as usize];
            p.sent += s.sent;
            p.accepted += s.accepted;
            p.rate_limited += s.rate_limited;
            p.retries += s.retries;
        }
    }
    Some(Timeline {
        stretches,
        bucket,
        points,
        total,
    })
}

/// The quota as requests a second: the per-second one, or the per-minute one spread over its
/// minute when that is tighter.
pub(super) fn quota_per_second(q: &Quota) -> Option<f64> {
    let minute = q.per_minute.map(|m| m as f64 / 60.0);
    match (q.per_second, minute) {
        (Some(s), Some(m)) => Some(s.min(m)),
        (s, m) => s.or(m),
    }
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 24.0;
/// Above the plot: the unit, then the runs' flags.
const TOP: f64 = 40.0;
const PLOT_H: f64 = 220.0;
/// Under the plot, a band each for the 429s and the retries, then the time axis.
const BAND_H: f64 = 14.0;
const BASE: f64 = TOP + PLOT_H;
const HEIGHT: f64 = BASE + 2.0 * (BAND_H + 4.0) + 34.0;

/// The chart, its legend and what each point stands for; a sentence when nothing was sent.
pub(super) fn section(job: &JobReport) -> String {
    let Some(t) = timeline(job) else {
        return "<p class=\"empty\">No request was sent in this job: every row was final before \
                it started, or failed local validation.</p>"
            .to_string();
    };
    let quota = quota_per_second(&job.quota);
    let rate = |p: &Point| p.accepted as f64 / p.seconds as f64;
    let peak = t
        .points
        .iter()
        .map(rate)
        .fold(quota.unwrap_or(0.0), f64::max);
    // A little room above the quota's line, so that it does not sit on the chart's edge.
    let (top, ticks) = value_axis(peak * 1.04);
    let px = |x: f64| LEFT + x / t.total as f64 * (WIDTH - LEFT - RIGHT);
    let py = |v: f64| TOP + PLOT_H * (1.0 - v / top);
    let mut svg = Svg::new(WIDTH, HEIGHT);
    for (v, label) in &ticks {
        svg.line((LEFT, py(*v)), (WIDTH - RIGHT, py(*v)), "grid");
        svg.text((LEFT - 6.0, py(*v) + 4.0), Anchor::End, "tick", label);
    }
    svg.text((4.0, 12.0), Anchor::Start, "unit", "requests/s");
    if t.stretches.len() > 1 {
        for st in &t.stretches {
            let x = px(st.offset as f64);
            svg.line((x, TOP - 18.0), (x, BASE), "run-start");
            let title = format!("run {} started {}", st.run, utc(st.from * 1000));
            svg.rect(x, TOP - 18.0, 44.0, 14.0, "run-flag", &title);
            let label = format!("run {}", st.run);
            svg.text((x + 4.0, TOP - 7.0), Anchor::Start, "run-label", &label);
        }
    }
    if let Some(q) = quota {
        svg.line((LEFT, py(q)), (WIDTH - RIGHT, py(q)), "quota");
    }
    for st in &t.stretches {
        let steps: Vec<(f64, f64)> = t
            .points
            .iter()
            .filter(|p| p.x >= st.offset && p.x < st.offset + st.len())
            .flat_map(|p| {
                let y = py(rate(p));
                [(px(p.x as f64), y), (px((p.x + p.seconds) as f64), y)]
            })
            .collect();
        svg.polyline(&steps, "accepted");
    }
    svg.line((LEFT, BASE), (WIDTH - RIGHT, BASE), "axis");
    svg.line((LEFT, TOP), (LEFT, BASE), "axis");
    band(&mut svg, &t, &px, 0, |p| p.rate_limited);
    band(&mut svg, &t, &px, 1, |p| p.retries);
    time_ticks(&mut svg, &t, &px);
    let chart = svg.finish(
        "chart rate",
        "requests accepted per second against the quota",
    );
    format!("{chart}{}{}", legend(job, quota, &t), caption(&t))
}

/// A band under the plot that marks the points with 429 answers (`row` 0) or retries (1): a
/// bar for each, as tall as its count against the most any point had.
fn band(svg: &mut Svg, t: &Timeline, px: &dyn Fn(f64) -> f64, row: u8, n: fn(&Point) -> u64) {
    let (class, name, what) = match row {
        0 => ("mark-429", "429s", "answered 429"),
        _ => ("mark-retry", "retries", "sent again after a failure"),
    };
    let bottom = BASE + (BAND_H + 4.0) * f64::from(row + 1);
    svg.text((LEFT - 6.0, bottom - 3.0), Anchor::End, "tick", name);
    svg.line((LEFT, bottom), (WIDTH - RIGHT, bottom), "grid");
    let most = t.points.iter().map(n).max().unwrap_or(0);
    if most == 0 {
        svg.text((LEFT + 4.0, bottom - 3.0), Anchor::Start, "tick", "none");
        return;
    }
    for p in t.points.iter().filter(|p| n(p) > 0) {
        let (a, b) = (px(p.x as f64), px((p.x + p.seconds) as f64));
        let h = (BAND_H * n(p) as f64 / most as f64).max(2.0);
        let title = format!("{} UTC: {} {what}", utc_clock(p.at, true), count(n(p)));
        svg.rect(a, bottom - h, (b - a).max(1.5), h, class, &title);
    }
}

/// Ticks on the time axis at round times of day, within each run's stretch, none closer than
/// a label's width to the one before.
fn time_ticks(svg: &mut Svg, t: &Timeline, px: &dyn Fn(f64) -> f64) {
    const STEPS: [i64; 18] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200,
        86_400,
    ];
    let step = STEPS
        .into_iter()
        .find(|s| t.total / s <= 8)
        .unwrap_or(86_400);
    let several_days = t.stretches.first().map(|s| s.from.div_euclid(86_400))
        != t.stretches.last().map(|s| s.to.div_euclid(86_400));
    let base = BASE + 2.0 * (BAND_H + 4.0);
    let mut last_x = f64::NEG_INFINITY;
    let mut last_day = None;
    for st in &t.stretches {
        let mut at = st.from.div_euclid(step) * step;
        if at < st.from {
            at += step;
        }
        while at <= st.to {
            let x = px((st.offset + at - st.from) as f64);
            if x - last_x >= 80.0 {
                let day = at.div_euclid(86_400);
                let mut label = utc_clock(at, step < 60);
                if several_days && last_day != Some(day) {
                    label = format!("{} {label}", utc_day(at));
                }
                svg.line((x, base), (x, base + 5.0), "axis");
                svg.text((x, base + 18.0), Anchor::Middle, "tick", &label);
                last_x = x;
                last_day = Some(day);
            }
            at += step;
        }
    }
    svg.text(
        (WIDTH - RIGHT, HEIGHT - 4.0),
        Anchor::End,
        "unit",
        "time (UTC)",
    );
}

fn legend(job: &JobReport, quota: Option<f64>, t: &Timeline) -> String {
    let sum = |f: fn(&Point) -> u64| t.points.iter().map(f).sum::<u64>();
    let mut s = String::from("<p class=\"legend\">");
    let _ = write!(
        s,
        "<span class=\"key accepted\"></span>accepted ({} of {} sent) ",
        count(sum(|p| p.accepted)),
        count(sum(|p| p.sent))
    );
    let _ = write!(
        s,
        "<span class=\"key mark-429\"></span>answered 429 ({}) \
         <span class=\"key mark-retry\"></span>sent again after a failure ({}) ",
        count(sum(|p| p.rate_limited)),
        count(sum(|p| p.retries))
    );
    match quota {
        Some(q) => {
            let _ = write!(
                s,
                "<span class=\"key quota\"></span>quota: {} requests/s",
                esc(&rate_text(q))
            );
        }
        None if job.quota.per_day.is_some() => {
            s.push_str("no quota a second or a minute is configured, only a daily one");
        }
        None => s.push_str("no quota is configured"),
    }
    s.push_str("</p>");
    s
}

fn caption(t: &Timeline) -> String {
    let runs = if t.stretches.len() > 1 {
        format!(
            "; {} runs, one after another, with the time between them left out",
            t.stretches.len()
        )
    } else {
        String::new()
    };
    let each = match t.bucket {
        1 => "one second".to_string(),
        b => format!(
            "the average over {} (the job's {} of runs in {} points)",
            duration_ms(b * 1000),
            duration_ms(t.total * 1000),
            count(t.points.len() as u64)
        ),
    };
    format!(
        "<p class=\"note\">Each step of the line is {each}{runs}. The bands under it mark when \
         the provider answered 429 and when requests were sent again, each bar as tall as its \
         count against the highest.</p>"
    )
}
