//! `bulkverify plan`: what a job would send, what it would cost and how long it would take at
//! the quotas, without a call. It works on a copy of the job's state (or on a new one) through
//! the same planning, recovery, reuse and feed as `run`, so that its count of paid calls is the
//! run's own; the job's state, the store and the ledger are only read.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::checks::Pipeline;
use crate::config::ProviderSettings;
use crate::engine::otp::{otp_cell, otp_step};
use crate::engine::plan::{Work, feed};
use crate::journal::{Identity, Journal, RowState};
use crate::outcome::Status;
use crate::quota::gate::{DAY_MINUTES, unix_minute};
use crate::rehearsal::Rehearsal;
use crate::run::{Prepared, RunOptions, Setup, prepare, shared_usage};
use crate::stats::Stats;
use crate::util::fs::create_private_dir;
use crate::util::time::unix_now;

/// What `plan` prints, and what `--json` gives scripts.
#[derive(Debug, Default, Serialize)]
pub struct Forecast {
    pub check: &'static str,
    /// The inputs, and the rows in them.
    pub files: usize,
    pub rows: u64,
    /// Rows that fail validation: never sent, free.
    pub invalid: u64,
    /// Rows that repeat an earlier identifier: they carry its outcome, free.
    pub duplicates: u64,
    /// Rows with a final outcome from an earlier run of this job.
    pub already_final: u64,
    /// Rows an earlier job on the account answered, reused without a call.
    pub reusable: u64,
    /// Rows held as unconfirmed: sent again only with `--resend-unconfirmed`.
    pub held: u64,
    /// Rows of a two-step check that need nothing in this run: their OTP is on its way, or
    /// the cell needs correcting.
    pub waiting: u64,
    /// Rows that need a paid call.
    pub to_send: u64,
    /// Rows already accepted, whose results are only fetched (free).
    pub to_poll: u64,
    /// The paid calls the rows need: what the provider bills (a request per row, a row of a
    /// batch, an OTP step).
    pub paid_calls: u64,
    /// Of which this run makes, under its cap.
    pub paid_calls_this_run: u64,
    pub max_paid_calls: Option<u64>,
    /// The requests that carry this run's paid calls (uploads, for a batch check).
    pub paid_requests: u64,
    /// This run's polls and downloads, at the fewest: a slow provider takes more polls.
    pub free_calls_at_least: u64,
    pub all_calls_at_least: u64,
    pub price_per_call: Option<f64>,
    /// This run's paid calls at `price_per_call`.
    pub cost: Option<f64>,
    pub time: Timing,
}

/// How long this run's calls take at the configured quotas.
#[derive(Debug, Default, Serialize)]
pub struct Timing {
    /// This run's requests that count against the quotas: all of them, or the paid ones only
    /// with `polls_count = false`.
    pub counted_calls: u64,
    /// The pace, in requests a second: the tighter of `per_second` and `per_minute`.
    pub rate_per_second: Option<f64>,
    pub per_day: Option<u64>,
    /// Requests the account sent in the last 24 hours, as far as this machine knows.
    pub day_spent: u64,
    /// Nights of the day quota the calls take, one run each: 1 when they fit what is left
    /// today.
    pub nights: u64,
    /// The time at the pace: of the whole run when it fits today, else of the last night's.
    pub seconds: Option<u64>,
    /// When the last night's calls end, if each night's run starts at this time of day (RFC
    /// 3339, UTC).
    pub ends_at: Option<String>,
}

/// Runs `plan`: prints the forecast, as text or JSON; exit 0.
pub async fn plan(opts: RunOptions, json: bool) -> anyhow::Result<u8> {
    let setup = Setup::of(&opts)?;
    let settings = match &setup.live {
        Some(s) => s.clone(),
        None => Rehearsal::settings(&setup.config, setup.info.provider)?,
    };
    let ledger = setup.ledger_dir();
    let forecast =
        tokio::task::spawn_blocking(move || forecast(&setup, &opts, &settings, ledger.as_deref()))
            .await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&forecast)?);
    } else {
        print!("{}", forecast.render());
    }
    Ok(crate::report::EXIT_OK)
}

/// The forecast, from a copy of the job's state taken through `run`'s preparation.
fn forecast(
    setup: &Setup,
    opts: &RunOptions,
    settings: &ProviderSettings,
    ledger: Option<&Path>,
) -> anyhow::Result<Forecast> {
    let parent = setup
        .state_dir
        .parent()
        .filter(|p| p.is_dir())
        .map_or_else(std::env::temp_dir, Path::to_path_buf);
    let scratch = tempfile::Builder::new()
        .prefix(".bulkverify-plan-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot make a scratch directory in {}", parent.display()))?;
    let copy = scratch.path().join("state");
    create_private_dir(&copy).with_context(|| format!("cannot create {}", copy.display()))?;
    let environment = setup.environment();
    if !opts.fresh && Journal::exists(&setup.state_dir) {
        let identity = Identity {
            check: setup.info.name,
            environment: &environment,
        };
        Journal::open(&setup.state_dir, &identity, false)?.copy_into(&copy)?;
    }
    let stats = Arc::new(Stats::default());
    let job = setup.job(copy, false, opts.resend_unconfirmed, stats.clone());
    let prepared = prepare(job)?;
    let mut f = Forecast {
        check: setup.info.name,
        files: setup.inputs.len(),
        reusable: Stats::get(&stats.reused),
        max_paid_calls: setup.spending.max_paid_calls,
        price_per_call: setup.spending.price,
        ..Forecast::default()
    };
    f.count_rows(&prepared.journal)?;
    let sends = f.count_sends(setup, &prepared)?;
    f.calls(setup, &sends, settings.polls_count);
    f.cost = setup.spending.cost(f.paid_calls_this_run);
    let used = match ledger {
        Some(dir) => shared_usage(dir, crate::ledger::account(settings), prepared.planned.used).1,
        None => prepared.planned.used,
    };
    let since = unix_minute() - DAY_MINUTES;
    let day_spent = used
        .iter()
        .filter(|(m, _)| *m > since)
        .map(|(_, n)| n)
        .sum();
    f.time = Timing::of(&f, settings, day_spent);
    Ok(f)
}

/// What the feed would send, before the cap.
#[derive(Default)]
struct Sends {
    /// Rows that need a paid call.
    paid: u64,
    /// Rows whose results are fetched.
    polls: u64,
    /// Batches already accepted, and their rows.
    open_batches: u64,
}

impl Forecast {
    /// The rows of the prepared state, by what they are.
    fn count_rows(&mut self, journal: &Journal) -> anyhow::Result<()> {
        let mut finals = 0;
        journal.export_each(|row| {
            self.rows += 1;
            if row.duplicate_of.is_some() {
                self.duplicates += 1;
            } else if row.status == Some(Status::InvalidInput) {
                self.invalid += 1;
            } else if row.state == RowState::Unconfirmed {
                self.held += 1;
            } else if row.status.is_some_and(Status::is_final) && row.state == RowState::Done {
                finals += 1;
            }
        })?;
        self.already_final = finals - self.reusable.min(finals);
        Ok(())
    }

    /// What `run`'s feed sends, each item as the pipeline would take it.
    fn count_sends(&mut self, setup: &Setup, prepared: &Prepared) -> anyhow::Result<Sends> {
        let reader = prepared.journal.reader()?;
        let (tx, mut rx) = mpsc::channel::<Work>(1024);
        let otp_at = setup.info.otp_at();
        let now = unix_now();
        let check = &setup.check;
        let mut sends = Sends {
            open_batches: prepared.planned.open_batches.len() as u64,
            ..Sends::default()
        };
        self.to_poll = prepared
            .planned
            .open_batches
            .iter()
            .map(|b| b.rows.len() as u64)
            .sum();
        std::thread::scope(|s| {
            let fed = s.spawn(move || {
                let subject = |v: &[&str]| check.subject(v);
                feed(&setup.inputs, &setup.maps, &reader, &subject, &tx)
            });
            while let Some(work) = rx.blocking_recv() {
                match work {
                    Work::Submit { .. } => sends.paid += 1,
                    Work::Poll { .. } => sends.polls += 1,
                    Work::Otp {
                        subject, request, ..
                    } => match otp_step(&request, otp_cell(&subject, otp_at), now) {
                        step if step.paid() => sends.paid += 1,
                        crate::engine::otp::OtpStep::Fetch => sends.polls += 1,
                        _ => self.waiting += 1,
                    },
                }
            }
            fed.join().expect("the feed does not panic")
        })?;
        self.to_send = sends.paid;
        self.to_poll += sends.polls;
        self.paid_calls = sends.paid;
        Ok(sends)
    }

    /// This run's paid calls under the cap, and the requests that carry them.
    fn calls(&mut self, setup: &Setup, sends: &Sends, polls_count: bool) {
        let this_run = self
            .max_paid_calls
            .map_or(sends.paid, |c| c.min(sends.paid));
        self.paid_calls_this_run = this_run;
        let (requests, free) = match &setup.check {
            Pipeline::Rows(c) => (this_run, this_run * u64::from(c.polls()) + sends.polls),
            Pipeline::Batches(c) => {
                let uploads = this_run.div_ceil(c.chunk_size().max(1) as u64);
                let per_batch = 1 + u64::from(c.downloads());
                (uploads, (uploads + sends.open_batches) * per_batch)
            }
            Pipeline::Otp(_) => (this_run, sends.polls),
        };
        self.paid_requests = requests;
        self.free_calls_at_least = free;
        self.all_calls_at_least = requests + free;
        self.time.counted_calls = if polls_count {
            requests + free
        } else {
            requests
        };
    }

    /// The forecast as `plan` prints it: one figure a line, counts only, never an identifier.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "bulkverify plan {}: {} rows in {} file{} (no call was made)",
            self.check,
            grouped(self.rows),
            self.files,
            if self.files == 1 { "" } else { "s" }
        );
        let mut line = |label: &str, n: u64, note: &str| {
            let _ = writeln!(s, "  {label:<34}{:>12}{note}", grouped(n));
        };
        line("invalid (free)", self.invalid, "");
        line("duplicates (free)", self.duplicates, "");
        line("already final in this job", self.already_final, "");
        line("reusable from earlier jobs", self.reusable, "");
        if self.held > 0 {
            line(
                "held unconfirmed",
                self.held,
                "  (not sent without --resend-unconfirmed)",
            );
        }
        if self.waiting > 0 {
            line("waiting for their OTP", self.waiting, "");
        }
        line("to send", self.to_send, "");
        if self.to_poll > 0 {
            line("to fetch (already accepted)", self.to_poll, "");
        }
        let capped = self.paid_calls - self.paid_calls_this_run;
        let cap_note = match self.max_paid_calls {
            Some(cap) if capped > 0 => format!(
                "  (this run sends {} under its cap of {}; {} wait for the next)",
                grouped(self.paid_calls_this_run),
                grouped(cap),
                grouped(capped)
            ),
            Some(cap) => format!("  (under the run's cap of {})", grouped(cap)),
            None => String::new(),
        };
        line("paid calls", self.paid_calls, &cap_note);
        line(
            "all calls, at the fewest",
            self.all_calls_at_least,
            &format!(
                "  ({} paid request{}, {} polls and downloads or more)",
                grouped(self.paid_requests),
                if self.paid_requests == 1 { "" } else { "s" },
                grouped(self.free_calls_at_least)
            ),
        );
        if let (Some(cost), Some(price)) = (self.cost, self.price_per_call) {
            let cents = (cost * 100.0).round() as u64;
            let amount = format!("{}.{:02}", grouped(cents / 100), cents % 100);
            let _ = writeln!(s, "  {:<34}{amount:>12}  (at {price} a paid call)", "cost");
        }
        let _ = writeln!(s, "  time: {}", self.time.words());
        if let Some(day) = self.time.day_words() {
            let _ = writeln!(s, "  day quota: {day}");
        }
        s
    }
}

impl Timing {
    fn of(f: &Forecast, settings: &ProviderSettings, day_spent: u64) -> Timing {
        let q = &settings.quotas;
        let rate = [
            q.per_second.map(|n| f64::from(n.get())),
            q.per_minute.map(|n| f64::from(n.get()) / 60.0),
        ]
        .into_iter()
        .flatten()
        .reduce(f64::min);
        let per_day = q.per_day.map(|n| u64::from(n.get()));
        let calls = f.time.counted_calls;
        let left_today = per_day.map_or(u64::MAX, |d| d.saturating_sub(day_spent));
        let (nights, last) = match per_day {
            Some(day) if calls > left_today => {
                let later = calls - left_today;
                let more = later.div_ceil(day);
                (1 + more, later - (more - 1) * day)
            }
            _ => (1, calls),
        };
        let seconds = rate.map(|r| (last as f64 / r).ceil() as u64);
        let ends_at = seconds.and_then(|secs| {
            let at = unix_now() + ((nights - 1) * 86_400 + secs) as i64;
            time::OffsetDateTime::from_unix_timestamp(at)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
        });
        Timing {
            counted_calls: calls,
            rate_per_second: rate,
            per_day,
            day_spent,
            nights,
            seconds,
            ends_at,
        }
    }

    fn words(&self) -> String {
        let Some(rate) = self.rate_per_second else {
            return "no per_second or per_minute quota is configured: it depends on what the \
                    provider admits"
                .into();
        };
        if self.counted_calls == 0 {
            return "none: nothing to send".into();
        }
        let pace = format!("{}/s", trimmed(rate));
        let secs = self.seconds.unwrap_or(0);
        if self.nights <= 1 {
            return format!("about {} at {pace}", duration_words(secs));
        }
        let end = self
            .ends_at
            .as_deref()
            .and_then(|t| Some(format!("{} UTC on {}", t.get(11..16)?, t.get(..10)?)))
            .unwrap_or_default();
        format!(
            "{} nights at {} a day, the last ending about {end} ({} at {pace} that night)",
            self.nights,
            grouped(self.per_day.unwrap_or(0)),
            duration_words(secs)
        )
    }

    /// The day quota and what the account spent of it, when there is one.
    fn day_words(&self) -> Option<String> {
        self.per_day.map(|day| {
            format!(
                "{} of {} spent in the last 24 h",
                grouped(self.day_spent),
                grouped(day)
            )
        })
    }
}

/// `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn trimmed(rate: f64) -> String {
    if (rate - rate.round()).abs() < 1e-9 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.2}")
    }
}

/// `7830` → `2 h 10 min`; `45` → `45 s`.
fn duration_words(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs.div_ceil(60)),
        _ => {
            let minutes = secs.div_ceil(60);
            format!("{} h {} min", minutes / 60, minutes % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_as_a_person_writes_them() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(duration_words(45), "45 s");
        assert_eq!(duration_words(61), "2 min");
        assert_eq!(duration_words(7_800), "2 h 10 min");
        assert_eq!(trimmed(17.0), "17");
        assert_eq!(trimmed(100.0 / 60.0), "1.67");
    }

    fn forecast(counted: u64) -> Forecast {
        Forecast {
            time: Timing {
                counted_calls: counted,
                ..Timing::default()
            },
            ..Forecast::default()
        }
    }

    fn settings(per_second: u32, per_minute: u32, per_day: u32) -> ProviderSettings {
        let config = crate::config::ConfigFile::parse(
            &format!(
                "[providers.deepvue]\nper_second = {per_second}\nper_minute = {per_minute}\n\
                 per_day = {per_day}\n"
            ),
            Path::new("bulkverify.toml"),
        )
        .unwrap();
        let env = |k: &str| match k {
            "DEEPVUE_CLIENT_ID" | "DEEPVUE_CLIENT_SECRET" => Some("x".to_string()),
            _ => None,
        };
        ProviderSettings::resolve(&crate::http::deepvue::DEFAULTS, &config, &env, None).unwrap()
    }

    #[test]
    fn the_time_is_at_the_tighter_window_and_the_day_quota_counts_what_was_spent() {
        // 17/s, 600 a minute (10/s) is tighter: 7,200 calls take 12 min.
        let t = Timing::of(&forecast(7_200), &settings(17, 600, 50_000), 0);
        assert_eq!(
            (t.rate_per_second, t.nights, t.seconds),
            (Some(10.0), 1, Some(720))
        );
        assert_eq!(t.words(), "about 12 min at 10/s");
        assert_eq!(t.day_words().unwrap(), "0 of 50,000 spent in the last 24 h");
        // 120,000 calls with 10,000 spent: 40,000 tonight, 50,000 tomorrow, 30,000 after.
        let t = Timing::of(&forecast(120_000), &settings(200, 6_000, 50_000), 10_000);
        assert_eq!((t.nights, t.seconds), (3, Some(300)));
        let words = t.words();
        assert!(
            words.starts_with("3 nights at 50,000 a day, the last ending about ")
                && words.ends_with(" (5 min at 100/s that night)")
                && words.contains(" UTC on 20"),
            "{words}"
        );
        assert_eq!(
            t.day_words().unwrap(),
            "10,000 of 50,000 spent in the last 24 h"
        );
        // Exactly what is left today fits in one night.
        let t = Timing::of(&forecast(40_000), &settings(200, 6_000, 50_000), 10_000);
        assert_eq!(t.nights, 1);
    }
}
