//! `bulkverify status`: how far a job is, from another shell, while its run goes on or after.
//!
//! It reads the job's journal read-only ([`Peek`]): it takes no lock and writes nothing, so a
//! live run is neither blocked nor slowed, and a cron run that starts meanwhile finds its state
//! free. Whether a run is live is read from the state's lock file (the pid of the run that took
//! it last) and the job's history (that run's row has no end yet).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use crate::journal::{History, JournalError, Peek, RowState, RunRecord};
use crate::outcome::Status;
use crate::report::exit_meaning;
use crate::report::job::held_by_groups;
use crate::stats::Second;
use crate::util::time::unix_ms;

/// The seconds the current rate is read over: the last ones the run's writer recorded.
const RATE_OVER_SECS: i64 = 10;

/// The phase before any call, in `status`'s words.
const PLANNING: &str = "reading and planning the inputs";

/// What `status` finds.
struct Found {
    dir: String,
    check: String,
    by_state: BTreeMap<&'static str, u64>,
    by_status: BTreeMap<Status, u64>,
    history: History,
    /// The run working on the job now.
    live: Option<RunRecord>,
}

/// Prints the status of the job whose state is `dir`; returns the exit code (0).
pub fn status(dir: &Path, as_json: bool) -> anyhow::Result<u8> {
    let peek = match Peek::open(dir) {
        Err(JournalError::Planning { .. }) => {
            print!("{}", planning(dir, as_json));
            return Ok(0);
        }
        peek => peek?,
    };
    let history = peek.history()?;
    let groups = peek.outcome_groups()?;
    let mut by_state = BTreeMap::new();
    for g in &groups {
        *by_state.entry(state_words(g.state)).or_insert(0) += g.rows;
    }
    let by_status = held_by_groups(&groups).counts;
    let live = history
        .runs
        .last()
        .filter(|r| r.ended_ms.is_none() && Peek::lock_pid(dir) == Some(r.pid) && alive(r.pid))
        .cloned();
    let found = Found {
        dir: dir.display().to_string(),
        check: peek.check()?.unwrap_or_default(),
        by_state,
        by_status,
        history,
        live,
    };
    let text = if as_json {
        format!("{:#}\n", found.json(unix_ms()))
    } else {
        found.render(unix_ms())
    };
    print!("{text}");
    Ok(0)
}

/// What `status` says of a job whose journal is being planned, or whose planning was
/// stopped: not its rows, which planning is still recording and which reading would hold it
/// up, but whether the run that plans it is live.
fn planning(dir: &Path, as_json: bool) -> String {
    let pid = Peek::lock_pid(dir).filter(|pid| alive(*pid));
    if as_json {
        return format!(
            "{:#}\n",
            json!({
                "state_dir": dir.display().to_string(),
                "live": pid.is_some(),
                "phase": pid.map(|_| PLANNING),
                "pid": pid,
                "planning": true,
            })
        );
    }
    match pid {
        Some(pid) => format!(
            "bulkverify status: {}\n  a run is live (pid {pid}), {PLANNING}: its rows are \
             counted once it sends\n",
            dir.display()
        ),
        None => format!(
            "bulkverify status: {}\n  no run is live; the last one stopped while {PLANNING}: \
             run the same command to resume\n",
            dir.display()
        ),
    }
}

/// Whether a process with this pid exists.
fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // EPERM: it exists, under another user.
    matches!(
        rustix::process::test_kill_process(pid),
        Ok(()) | Err(rustix::io::Errno::PERM)
    )
}

/// A row state as `status` words it.
fn state_words(state: RowState) -> &'static str {
    match state {
        RowState::Planned | RowState::Duplicate => "to send",
        RowState::Sending => "sending",
        RowState::Running => "sent, result awaited",
        RowState::Unconfirmed => "held (unconfirmed)",
        RowState::Done => "done",
    }
}

impl Found {
    /// The requests of the live run's last recorded seconds, and the seconds they span.
    fn recent(&self) -> Option<(Second, i64)> {
        let run = self.live.as_ref()?.run;
        let seconds: Vec<&(i64, i64, Second)> = self
            .history
            .seconds
            .iter()
            .filter(|(r, _, _)| *r == run)
            .collect();
        let last = seconds.last()?.1;
        let mut sum = Second::default();
        for (_, _, s) in seconds
            .iter()
            .filter(|(_, at, _)| *at > last - RATE_OVER_SECS)
        {
            sum.add(s);
        }
        Some((sum, RATE_OVER_SECS))
    }

    /// Seconds until the live run has settled its work, at the pace it settled rows so far.
    fn eta_secs(&self, now_ms: i64) -> Option<i64> {
        let run = self.live.as_ref()?;
        let from = run.prepared_ms?;
        let at = run.heartbeat_ms.unwrap_or(now_ms);
        let (done, left) = (run.settled, run.work.saturating_sub(run.settled));
        if done == 0 || at <= from {
            return None;
        }
        let per_ms = done as f64 / (at - from) as f64;
        Some((left as f64 / per_ms / 1000.0).round() as i64)
    }

    /// Calls, 429s and retries over the whole job, and in the live or last run.
    fn calls(&self, run: Option<i64>) -> Second {
        let mut sum = Second::default();
        for (_, _, s) in self
            .history
            .seconds
            .iter()
            .filter(|(r, _, _)| run.is_none_or(|run| *r == run))
        {
            sum.add(s);
        }
        sum
    }

    fn phase(run: &RunRecord) -> &'static str {
        match (run.prepared_ms, run.dispatched_ms) {
            (None, _) => PLANNING,
            (Some(_), None) => "sending and settling",
            (Some(_), Some(_)) => "writing the output",
        }
    }

    fn render(&self, now_ms: i64) -> String {
        let mut s = String::new();
        let rows: u64 = self.by_state.values().sum();
        let _ = writeln!(s, "bulkverify status: {} ({})", self.dir, self.check);
        match (&self.live, self.history.runs.last()) {
            (Some(run), _) => {
                let _ = writeln!(
                    s,
                    "  run {} is live (pid {}), started {}, {}: {} of {} rows settled",
                    run.run,
                    run.pid,
                    utc(run.started_ms),
                    Found::phase(run),
                    run.settled,
                    run.work
                );
            }
            (None, Some(last)) => {
                let ended = match (last.ended_ms, last.exit_code) {
                    (Some(at), Some(code)) => format!("ended {} ({})", utc(at), exit_meaning(code)),
                    _ => format!(
                        "stopped without finishing (killed?) after {}; run the same command to \
                         resume",
                        utc(last.heartbeat_ms.unwrap_or(last.started_ms))
                    ),
                };
                let _ = writeln!(s, "  no run is live; run {} {ended}", last.run);
            }
            (None, None) => {
                let _ = writeln!(s, "  no run is live, and none has been recorded");
            }
        }
        let states: Vec<String> = self
            .by_state
            .iter()
            .map(|(st, n)| format!("{st} {n}"))
            .collect();
        let _ = writeln!(s, "  rows {rows}: {}", states.join(" · "));
        let statuses: Vec<String> = Status::ALL
            .iter()
            .map(|st| {
                let n = self.by_status.get(st).copied().unwrap_or(0);
                format!("{} {n}", st.as_str())
            })
            .collect();
        let _ = writeln!(s, "  outcomes: {}", statuses.join(" · "));
        let job = self.calls(None);
        let _ = writeln!(
            s,
            "  calls {} · 429 answers {} · retries {} (every run of the job)",
            job.sent(),
            job.rate_limited,
            job.retries
        );
        if let Some((recent, secs)) = self.recent() {
            let _ = writeln!(
                s,
                "  rate: {:.1} requests/s ({:.1}/s accepted) over the last {secs} s recorded",
                recent.sent() as f64 / secs as f64,
                recent.accepted as f64 / secs as f64
            );
        }
        if let Some(eta) = self.eta_secs(now_ms) {
            let _ = writeln!(
                s,
                "  eta: about {} at the pace so far",
                crate::progress::clock(std::time::Duration::from_secs(eta.max(0) as u64))
            );
        }
        s
    }

    fn json(&self, now_ms: i64) -> serde_json::Value {
        let run_json = |r: &RunRecord| {
            json!({
                "run": r.run,
                "pid": r.pid,
                "started": utc(r.started_ms),
                "ended": r.ended_ms.map(utc),
                "exit_code": r.exit_code,
                "work": r.work,
                "settled": r.settled,
                "paid_calls": r.paid,
                "reused": r.reused,
            })
        };
        let job = self.calls(None);
        let rate = self.recent().map(|(recent, secs)| {
            json!({
                "requests_per_second": recent.sent() as f64 / secs as f64,
                "accepted_per_second": recent.accepted as f64 / secs as f64,
                "over_seconds": secs,
            })
        });
        json!({
            "state_dir": self.dir,
            "check": self.check,
            "live": self.live.is_some(),
            "phase": self.live.as_ref().map(Found::phase),
            "run": self.live.as_ref().or(self.history.runs.last()).map(run_json),
            "runs": self.history.runs.len(),
            "rows": self.by_state.values().sum::<u64>(),
            "by_state": self.by_state,
            "by_status": Status::ALL
                .iter()
                .map(|st| (st.as_str(), self.by_status.get(st).copied().unwrap_or(0)))
                .collect::<BTreeMap<_, _>>(),
            "calls": job.sent(),
            "rate_limited": job.rate_limited,
            "retries": job.retries,
            "rate": rate,
            "eta_seconds": self.eta_secs(now_ms),
        })
    }
}

/// Unix ms as RFC 3339 in UTC, to the second.
fn utc(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal being planned is not read: `status` says whether the run planning it is live,
    /// from the pid in the state's lock file, and what to do when it is not.
    #[test]
    fn a_job_being_planned_is_told_by_its_run_alone() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("lock");
        std::fs::write(&lock, std::process::id().to_string()).unwrap();
        let live = planning(dir.path(), false);
        assert!(live.contains(&format!("a run is live (pid {})", std::process::id())));
        assert!(live.contains(PLANNING), "{live}");
        let json: serde_json::Value = serde_json::from_str(&planning(dir.path(), true)).unwrap();
        assert_eq!(json["live"], true);
        assert_eq!(json["planning"], true);
        assert_eq!(json["phase"], PLANNING);

        // No process has a pid this high (pid_max is at most 2^22).
        std::fs::write(&lock, "99999999").unwrap();
        let stopped = planning(dir.path(), false);
        assert!(stopped.contains("no run is live"), "{stopped}");
        assert!(
            stopped.contains("run the same command to resume"),
            "{stopped}"
        );
        let json: serde_json::Value = serde_json::from_str(&planning(dir.path(), true)).unwrap();
        assert_eq!(json["live"], false);
        assert_eq!(json["phase"], serde_json::Value::Null);
    }
}
