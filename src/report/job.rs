//! A job's report, from what its journal keeps: the outcomes the output holds, and the history
//! of the runs that worked on it (`journal::runs`).

use std::collections::BTreeMap;

use super::Tally;
use super::html::{
    JobReport, Latency, Phase, PhaseSpan, Quota, ReasonCount, RunRecord, SecondCounts, Spend,
};
use crate::journal::{History, OutcomeGroup};
use crate::outcome::Status;
use crate::outcome::reasons::meaning_of;
use crate::stats::{Second, latency_bucket_ms, latency_quantile};

/// What the report says beside the journal's history: who the job is, and what it may spend.
pub struct JobFacts<'a> {
    pub check: &'a str,
    pub provider: &'a str,
    pub output: &'a str,
    pub quota: Quota,
    pub price_per_call: Option<f64>,
}

/// What the rows add up to, from the journal's rows grouped by state, status and reason:
/// what the output says of them, for a run that wrote none (it failed first) and for `status`.
pub fn held_by_groups(groups: &[OutcomeGroup]) -> Tally {
    let mut held = Tally::default();
    for g in groups {
        let (status, reason) = super::outcome_of(g.state, g.status, g.reason.as_deref());
        *held.counts.entry(status).or_insert(0) += g.rows;
        if let Some(reason) = reason {
            *held
                .reasons
                .entry((status, reason.to_string()))
                .or_insert(0) += g.rows;
        }
        held.duplicates += g.duplicates;
    }
    held
}

/// The job's report as `generated_at_ms`.
pub fn job_report(
    facts: JobFacts,
    held: &Tally,
    history: &History,
    generated_at_ms: i64,
) -> JobReport {
    let number = |run: i64| u32::try_from(run).unwrap_or(u32::MAX);
    let mut reasons: Vec<ReasonCount> = held
        .reasons
        .iter()
        .map(|((status, code), rows)| ReasonCount {
            status: *status,
            code: code.clone(),
            meaning: meaning_of(code).to_string(),
            rows: *rows,
        })
        .collect();
    reasons.sort_by(|a, b| (a.status, b.rows).cmp(&(b.status, a.rows)));
    let runs = history
        .runs
        .iter()
        .map(|r| {
            let seconds: Vec<&(i64, i64, Second)> = history
                .seconds
                .iter()
                .filter(|(run, _, _)| *run == r.run)
                .collect();
            let mut sum = Second::default();
            for (_, _, s) in &seconds {
                sum.add(s);
            }
            RunRecord {
                number: number(r.run),
                started_ms: r.started_ms,
                ended_ms: r.ended_ms,
                exit_code: r.exit_code,
                phases: phases(r, &seconds),
                calls: sum.sent(),
                rate_limited: sum.rate_limited,
                retries: sum.retries,
                paid: r.paid,
                reused: r.reused,
            }
        })
        .collect();
    JobReport {
        check: facts.check.to_string(),
        provider: facts.provider.to_string(),
        output: facts.output.to_string(),
        generated_at_ms,
        counts: Status::ALL
            .iter()
            .map(|s| (*s, held.counts.get(s).copied().unwrap_or(0)))
            .collect(),
        duplicates: held.duplicates,
        reasons,
        runs,
        seconds: history
            .seconds
            .iter()
            .map(|(run, second, s)| SecondCounts {
                second: *second,
                run: number(*run),
                sent: s.sent(),
                accepted: s.accepted,
                rate_limited: s.rate_limited,
                retries: s.retries,
            })
            .collect(),
        latency: latencies(&history.latency),
        quota: facts.quota,
        spend: Spend {
            paid_calls: history.runs.iter().map(|r| r.paid).sum(),
            reused: history.runs.iter().map(|r| r.reused).sum(),
            price_per_call: facts.price_per_call,
        },
    }
}

/// A run's phases: reading and planning until it was prepared; sending, polling and
/// downloading from the first to the end of the last second it sent each kind of request in;
/// the merge from the end of sending to the run's end.
fn phases(run: &crate::journal::RunRecord, seconds: &[&(i64, i64, Second)]) -> Vec<PhaseSpan> {
    let mut spans = Vec::new();
    if let Some(prepared) = run.prepared_ms {
        spans.push(PhaseSpan {
            phase: Phase::ReadAndPlan,
            from_ms: run.started_ms,
            to_ms: prepared,
        });
    }
    for phase in [Phase::Send, Phase::Poll, Phase::Download] {
        let sent = |s: &Second| match phase {
            Phase::Send => s.paid,
            Phase::Poll => s.polls,
            _ => s.downloads,
        };
        let mut active = seconds
            .iter()
            .filter(|(_, _, s)| sent(s) > 0)
            .map(|(_, at, _)| *at);
        if let Some(first) = active.next() {
            let last = active.next_back().unwrap_or(first);
            spans.push(PhaseSpan {
                phase,
                from_ms: first * 1000,
                to_ms: (last + 1) * 1000,
            });
        }
    }
    if let (Some(from), Some(to)) = (run.dispatched_ms, run.ended_ms) {
        spans.push(PhaseSpan {
            phase: Phase::Merge,
            from_ms: from,
            to_ms: to,
        });
    }
    spans
}

/// Round-trip percentiles per endpoint, from the answers counted by latency bucket.
fn latencies(counts: &[(String, u32, u64)]) -> Vec<Latency> {
    let mut by_endpoint: BTreeMap<&str, Vec<(u32, u64)>> = BTreeMap::new();
    for (endpoint, bucket, n) in counts {
        by_endpoint.entry(endpoint).or_default().push((*bucket, *n));
    }
    by_endpoint
        .into_iter()
        .map(|(endpoint, buckets)| {
            let q = |q| latency_quantile(&buckets, q).unwrap_or(0.0);
            Latency {
                endpoint: endpoint.to_string(),
                count: buckets.iter().map(|(_, n)| n).sum(),
                p50_ms: q(0.5),
                p90_ms: q(0.9),
                p99_ms: q(0.99),
                max_ms: buckets
                    .iter()
                    .map(|(b, _)| *b)
                    .max()
                    .map_or(0.0, latency_bucket_ms),
            }
        })
        .collect()
}
