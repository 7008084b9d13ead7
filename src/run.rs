//! `bulkverify run`: one job from the inputs to the annotated output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::checks::{CheckInfo, CheckName, Pipeline};
use crate::config::ProviderSettings;
use crate::engine::plan::{self, Work, work_for};
use crate::engine::{Ctx, batches, otp, rows};
use crate::http::Api;
use crate::input::{ColumnMap, Dialect, InputFile};
use crate::journal::{Following, Identity, Journal, JournalReader, OpenBatch};
use crate::progress::{LogWriter, Phase, Progress, ProgressMode};
use crate::quota::gate::{Gate, GateError, GateSettings, unix_minute};
use crate::quota::pace::Schedule;
use crate::rehearsal::Rehearsal;
use crate::report::{Collector, EXIT_FATAL, Failure, Monitoring, Run, Stage, Summary, Tally};
use crate::stats::Stats;
use crate::store::{JobStore, StoreSide};
use crate::util::fs::create_private_dir;
use crate::util::stop::Stop;
use crate::util::sync::{MinuteCounts, lock};
use crate::util::time::Started;

mod record;
mod setup;

use record::{Record, Reporting, ended};

pub(crate) use setup::Setup;
pub use setup::default_state;

/// Everything `run` was asked to do.
pub struct RunOptions {
    pub check: CheckName,
    pub config: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub columns: Vec<(String, String)>,
    pub sandbox: bool,
    pub resend_unconfirmed: bool,
    pub fresh: bool,
    /// Send every identifier again, whatever earlier jobs on the account obtained.
    pub no_reuse: bool,
    /// `--max-paid-calls`: replaces the config's cap.
    pub max_paid_calls: Option<u64>,
    pub progress: ProgressMode,
    pub progress_every: Duration,
    /// How the inputs are read: `--encoding` and `--delimiter`.
    pub dialect: Dialect,
    pub inputs: Vec<PathBuf>,
}

/// What Ctrl-C and SIGTERM do. While requests are being sent, the first signal stops sending
/// and lets the requests in flight finish (their answers are recorded and the output is
/// written), and a second quits at once. At any other time a signal quits at once: the journal
/// is transactional and the output is replaced by a rename, so nothing is lost.
#[derive(Default)]
struct Interrupts {
    dispatch: std::sync::Mutex<Option<Arc<Ctx>>>,
    interrupted: AtomicBool,
}

impl Interrupts {
    fn listen(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            let dispatch = lock(&this.dispatch).clone();
            if let Some(ctx) = dispatch {
                this.interrupted.store(true, Ordering::Release);
                tracing::warn!(
                    "stopping: no new request will be sent; waiting for the ones in flight \
                     (press Ctrl-C again to quit at once)"
                );
                ctx.halt();
                wait_for_signal().await;
                // Commit what is queued (request ids above all), briefly, then go.
                let _ = tokio::time::timeout(Duration::from_secs(2), ctx.journal.close()).await;
            }
            crate::progress::release_lines(true);
            std::process::exit(130);
        });
    }

    fn dispatching(&self, ctx: Option<Arc<Ctx>>) {
        *lock(&self.dispatch) = ctx;
    }
}

/// Runs the job; returns the exit code. Its summary goes to stderr and, whether the job ends
/// or fails, to the files `monitoring` names.
pub async fn run(opts: RunOptions, monitoring: Monitoring) -> anyhow::Result<u8> {
    let started = Started::now();
    let interrupts = Arc::new(Interrupts::default());
    interrupts.listen();
    let stats = Arc::new(Stats::default());
    let mut stage = Stage::Setup;
    let ended = job(
        &opts,
        &monitoring,
        &stats,
        &interrupts,
        &mut stage,
        started.unix_ms(),
    )
    .await;
    let (output, state) = setup::paths_of(&opts);
    let run = Run {
        check: opts.check.info().name,
        output: &output,
        state: &state,
        files: opts.inputs.len(),
        started,
        interrupted: interrupts.interrupted.load(Ordering::Acquire),
    };
    match ended {
        Ok(tally) => {
            let summary = Summary::new(run, &stats, Ok(&tally));
            // Through the log's writer, which `--quiet` holds back until it knows the exit code.
            let _ = std::io::Write::write_all(&mut LogWriter, summary.render().as_bytes());
            monitoring.write(&summary)?;
            Ok(summary.exit_code)
        }
        Err(e) => {
            let summary = Summary::new(run, &stats, Err(Failure::of(&e, stage)));
            if let Err(unwritten) = monitoring.write(&summary) {
                tracing::error!("{unwritten}");
            }
            Err(e)
        }
    }
}

/// The job from its arguments to its output: the rows the output holds, or the error that
/// stopped it, with `stage` where it stopped.
async fn job(
    opts: &RunOptions,
    monitoring: &Monitoring,
    stats: &Arc<Stats>,
    interrupts: &Interrupts,
    stage: &mut Stage,
    started_ms: i64,
) -> anyhow::Result<Tally> {
    let started = Instant::now();
    monitoring.check()?;
    let setup = Setup::of(opts)?;
    let progress = Progress::start(opts.progress, stats.clone(), opts.progress_every);
    let job = Job {
        run_started_ms: Some(started_ms),
        ..setup.job(
            setup.state_dir.clone(),
            opts.fresh,
            opts.resend_unconfirmed,
            stats.clone(),
        )
    };
    let ledger = setup.ledger_dir();
    let Setup {
        config,
        info,
        check,
        spending,
        inputs,
        maps,
        output,
        state_dir,
        live,
        ..
    } = setup;
    *stage = Stage::State;
    let Prepared {
        journal,
        run: recorded,
        planned:
            Planned {
                work,
                open_batches,
                next_batch_id,
                used,
                token,
                ident_scope,
                store,
            },
    } = tokio::task::spawn_blocking(move || prepare(job)).await??;
    tracing::info!(
        "read the inputs and the state in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    *stage = Stage::Sending;
    let scratch = state_dir.join("scratch");
    let mut record = Record {
        run: recorded,
        stats: stats.clone(),
        report: None,
    };
    let (sandbox, settings) = match provider(live, &config, info, &state_dir).await {
        Ok(started) => started,
        Err(e) => return Err(record.failed(&journal, e)),
    };
    let at = monitoring.report.path(&output);
    record.report = at.map(|at| Reporting::of(at, info, &output, &settings, &spending, &ledger));
    progress.phase(Phase::Verifying);
    let verifying = Instant::now();
    let sent = if work > 0 {
        let d = Dispatch {
            check,
            ident_scope,
            settings: &settings,
            inputs: inputs.clone(),
            maps: maps.clone(),
            stats: stats.clone(),
            scratch,
            open_batches,
            next_batch_id,
            used,
            token,
            max_paid_calls: spending.max_paid_calls,
            otp_at: info.otp_at(),
            ledger,
            recorded,
        };
        dispatch(&journal, d, interrupts).await
    } else {
        Ok(())
    };
    if let Some(sb) = sandbox {
        sb.shutdown().await;
    }
    tracing::info!(
        "sent and settled {work} rows in {:.2} s",
        verifying.elapsed().as_secs_f64()
    );
    if let Err(e) = sent {
        progress.finish().await;
        return Err(record.failed(&journal, e));
    }
    if let Some(run) = recorded {
        journal.run_dispatched(run)?;
    }

    *stage = Stage::Output;
    progress.phase(Phase::Writing);
    let tally = tokio::task::spawn_blocking(move || {
        record.finish(&journal, || write_output(&journal, store, &inputs, &output))
    })
    .await??;
    progress.finish().await;
    Ok(tally)
}

/// The provider a job talks to: the live one `live` names, or the built-in sandbox, started
/// for the run.
async fn provider(
    live: Option<ProviderSettings>,
    config: &crate::config::ConfigFile,
    info: &'static CheckInfo,
    state_dir: &Path,
) -> anyhow::Result<(Option<Rehearsal>, ProviderSettings)> {
    match live {
        Some(settings) => Ok((None, settings)),
        None => Rehearsal::start(config, info.provider, state_dir)
            .await
            .map(|(sb, settings)| (Some(sb), settings)),
    }
}

/// How much the thread that hands the results store a job's answers yields to the output's.
#[cfg(target_os = "linux")]
const KEEP_NICENESS: i32 = 10;

/// Writes every row with its outcome, and meanwhile hands the results store the answers the
/// job obtained, on a thread and a connection of its own: the store's later jobs do not wait
/// for the output, and the operator no longer waits for the store after it (a 10M-row job's
/// 40 s). A failure to keep loses only the reuse; a run killed before the store took them
/// hands them over the next time. The journal, and with it the state's lock, lives until both
/// are done.
fn write_output(
    journal: &Journal,
    store: Option<JobStore>,
    inputs: &[InputFile],
    out: &Path,
) -> anyhow::Result<Tally> {
    let beside = store.and_then(|store| match journal.beside() {
        Ok(second) => Some((store, second)),
        Err(e) => {
            tracing::warn!("{e}; the results store takes this job's answers the next time");
            None
        }
    });
    std::thread::scope(|scope| {
        if let Some((store, second)) = beside {
            let keep = move || {
                // The output is what the operator waits for: where both want the CPU, it has
                // it first. Niceness is the thread's own on Linux, the whole process's elsewhere.
                #[cfg(target_os = "linux")]
                if let Err(e) = rustix::process::setpriority_process(None, KEEP_NICENESS) {
                    tracing::debug!("the results store keeps at the run's priority: {e}");
                }
                store.keep_from(&second)
            };
            if let Err(e) = std::thread::Builder::new()
                .name("store".into())
                .spawn_scoped(scope, keep)
            {
                tracing::warn!("{e}; the results store takes this job's answers the next time");
            }
        }
        write_rows(journal, inputs, out)
    })
}

/// Writes every row with its outcome: the journal's results beside the inputs' rows, in
/// input order; unless the output on disk already holds every row as the journal has it (the
/// same command again after a finished job).
fn write_rows(journal: &Journal, inputs: &[InputFile], out: &Path) -> anyhow::Result<Tally> {
    if let Some(held) = journal.output_unchanged(out)? {
        tracing::info!(
            "{} already holds every row as the state has it; left as it is",
            out.display()
        );
        return Ok(held);
    }
    let writing = Instant::now();
    let context = || format!("writing {}", out.display());
    let mut collector =
        Collector::new(inputs, journal.field_names()?, out).with_context(context)?;
    journal.export_ahead(|row| collector.add(row).with_context(context))?;
    let tally = collector.finish().with_context(context)?;
    tracing::info!(
        "wrote the output in {:.2} s",
        writing.elapsed().as_secs_f64()
    );
    // Only saves the next run the writing: a failure here loses nothing.
    if let Err(e) = journal.output_written(out, &tally) {
        tracing::warn!("{e}");
    }
    Ok(tally)
}

/// What the journal work before any call needs.
pub(crate) struct Job {
    state_dir: PathBuf,
    store: Option<StoreSide>,
    info: &'static CheckInfo,
    environment: String,
    fresh: bool,
    resend_unconfirmed: bool,
    inputs: Arc<Vec<InputFile>>,
    maps: Arc<Vec<ColumnMap>>,
    subject: Pipeline,
    stats: Arc<Stats>,
    /// When this run began, in Unix ms, to record it in the job's history; `None` for `plan`,
    /// which is no run.
    run_started_ms: Option<i64>,
}

/// The journal, ready for dispatch, and what it says.
pub(crate) struct Prepared {
    pub journal: Journal,
    /// This run's number in the job's history, when it is a run.
    pub run: Option<i64>,
    pub planned: Planned,
}

/// What [`prepare`] finds beside the journal.
pub(crate) struct Planned {
    /// Rows that need a call in this run.
    pub work: u64,
    pub open_batches: Vec<OpenBatch>,
    pub next_batch_id: i64,
    /// Requests sent in the last 24 hours, per Unix minute.
    pub used: Vec<(i64, u64)>,
    /// The job's token, for the names of its uploads.
    pub token: String,
    /// What identifiers are hashed with.
    pub ident_scope: String,
    /// The results store, when this job's hashes are its own.
    pub store: Option<JobStore>,
}

/// Opens the state, checks the inputs against it, plans first-seen rows, settles what a dead
/// run left in flight and counts the work: file and SQLite work, kept off the async runtime.
pub(crate) fn prepare(job: Job) -> anyhow::Result<Prepared> {
    let mut journal = Journal::open(
        &job.state_dir,
        &Identity {
            check: job.info.name,
            environment: &job.environment,
        },
        job.fresh,
    )?;
    let run = job
        .run_started_ms
        .map(|at| journal.begin_run(at))
        .transpose()?;
    let stats = job.stats.clone();
    let planned = match prepare_opened(job, &mut journal) {
        Ok(planned) => planned,
        Err(e) => {
            if let Some(run) = run {
                ended(&journal, run, EXIT_FATAL, 0);
            }
            return Err(e);
        }
    };
    if let Some(run) = run {
        journal.run_prepared(run, planned.work, Stats::get(&stats.reused))?;
    }
    Ok(Prepared {
        journal,
        run,
        planned,
    })
}

/// [`prepare`], once the journal is open.
fn prepare_opened(job: Job, journal: &mut Journal) -> anyhow::Result<Planned> {
    prepare_scratch(&job.state_dir.join("scratch"))?;
    let fingerprints = job
        .inputs
        .iter()
        .zip(job.maps.iter())
        .map(|(f, m)| {
            Ok((
                f.display(),
                f.fingerprint(m.fingerprint_skip(job.info.columns))?,
            ))
        })
        .collect::<Result<Vec<_>, crate::input::InputError>>()?;
    let columns = job
        .inputs
        .iter()
        .zip(job.maps.iter())
        .map(|(f, m)| m.describe(f, job.info.columns))
        .collect::<Vec<_>>()
        .join(" | ");
    let store = job.store.and_then(|side| side.open(job.info));
    let (ident_scope, shared) =
        journal.ident_scope_for(job.info.name, store.as_ref().map(JobStore::hash_key))?;
    // The rows to send, when planning has just written every row: then no request was ever
    // sent, nothing is left to recover, and the rows need not be read again to be counted.
    let planned_now = if journal.check_inputs(&fingerprints, &columns)? {
        let n = journal.planned_rows()?.unwrap_or(0);
        Stats::add(&job.stats.rows_read, n);
        None
    } else {
        let subject = |v: &[&str]| job.subject.subject(v);
        plan::plan(
            journal,
            &ident_scope,
            &job.inputs,
            &job.maps,
            &subject,
            &job.stats,
        )?
    };
    let (held, released) = match planned_now {
        Some(_) => (0, 0),
        None => journal.recover(job.resend_unconfirmed)?,
    };
    Stats::add(&job.stats.resent, released);
    if held > 0 {
        tracing::warn!(
            "{held} row(s) are held as unconfirmed: an earlier run sent their paid request but \
             lost the answer. They are reported as errors; re-run with --resend-unconfirmed to \
             send them again (they may be billed twice)"
        );
    }
    let store = store.filter(|_| shared);
    // Reuse takes only planned rows, each counted once.
    let reused = store.as_ref().map_or(0, |store| store.reuse_into(journal));
    Stats::add(&job.stats.reused, reused);
    let open_batches = journal.open_batches()?;
    let work = match planned_now {
        Some(to_send) => to_send.saturating_sub(reused),
        None => {
            count_work(&journal.reader()?)?
                + open_batches
                    .iter()
                    .map(|b| b.rows.len() as u64)
                    .sum::<u64>()
        }
    };
    Stats::add(&job.stats.work_total, work);
    if work > 0 && store.is_some() {
        journal.set_answers_stored(false)?;
    }
    Ok(Planned {
        store,
        token: journal.job_token()?,
        next_batch_id: journal.next_batch_id()?,
        used: journal.usage_since(unix_minute() - 24 * 60)?,
        work,
        open_batches,
        ident_scope,
    })
}

/// What dispatch works with.
struct Dispatch<'a> {
    check: Pipeline,
    ident_scope: String,
    settings: &'a ProviderSettings,
    inputs: Arc<Vec<InputFile>>,
    maps: Arc<Vec<ColumnMap>>,
    stats: Arc<Stats>,
    scratch: PathBuf,
    open_batches: Vec<OpenBatch>,
    next_batch_id: i64,
    used: Vec<(i64, u64)>,
    token: String,
    max_paid_calls: Option<u64>,
    /// A two-step check's OTP among a subject's values.
    otp_at: usize,
    /// The usage ledger shared by the jobs on one account (live runs only).
    ledger: Option<PathBuf>,
    /// This run's number in the job's history, whose progress the journal's writer records.
    recorded: Option<i64>,
}

/// Sends every row that needs a call; an error is what stopped it (the journal keeps what was
/// done).
async fn dispatch(
    journal: &Journal,
    d: Dispatch<'_>,
    interrupts: &Interrupts,
) -> anyhow::Result<()> {
    let settings = d.settings;
    let following = d.recorded.map(|run| Following {
        run,
        stats: d.stats.clone(),
    });
    let (writer, writer_thread) = journal.writer_following(following)?;
    let usage_writer = writer.clone();
    let account = crate::ledger::account(settings);
    let (ledger, used, schedule) = match d.ledger {
        Some(dir) => {
            tokio::task::spawn_blocking(move || {
                let (ledger, used) = shared_usage(&dir, account.clone(), d.used);
                (ledger, used, Schedule::of_account(&dir, &account))
            })
            .await?
        }
        None => (None, d.used, Schedule::local()),
    };
    let granted = Arc::new(MinuteCounts::default());
    let for_ledger = granted.clone();
    let gate = Gate::on(
        &GateSettings::of(settings),
        used,
        Some(Box::new(move |minute| {
            usage_writer.usage(minute);
            // Taken by the ledger's thread when there is one; the journal has them anyway.
            for_ledger.add(minute);
        })),
        schedule,
    );
    let ledger_thread = ledger.map(|l| l.follow(gate.downgrade(), granted));
    let stop = Arc::new(Stop::default());
    let provider = crate::http::provider(settings).map_err(|e| anyhow::anyhow!("{e}"))?;
    let api = Api::new(settings, provider, gate, d.stats.clone(), stop.clone())
        .context("cannot set up the HTTP client")?;
    let ctx = Arc::new(Ctx::new(
        d.ident_scope,
        api,
        writer.clone(),
        d.stats,
        stop,
        settings.concurrency,
        d.max_paid_calls,
    ));

    interrupts.dispatching(Some(ctx.clone()));
    let (tx, rx) = mpsc::channel::<Work>(1024);
    let reader = journal.reader()?;
    let feeder = {
        let (inputs, maps, check) = (d.inputs.clone(), d.maps.clone(), d.check.clone());
        tokio::task::spawn_blocking(move || {
            let subject = |v: &[&str]| check.subject(v);
            plan::feed(&inputs, &maps, &reader, &subject, &tx)
        })
    };
    let concurrency = settings.concurrency;
    let in_flight = (concurrency * 64).max(1024);
    let place = batches::Place {
        scratch: d.scratch,
        token: d.token,
    };
    let (open, next) = (d.open_batches, d.next_batch_id);
    match d.check {
        Pipeline::Rows(c) => rows::run(ctx.clone(), c, rx, in_flight).await,
        Pipeline::Batches(c) => {
            batches::run(ctx.clone(), c, rx, open, next, place, concurrency).await;
        }
        Pipeline::Otp(c) => otp::run(ctx.clone(), c, d.otp_at, rx, in_flight).await,
    }
    let fed = feeder.await?;
    interrupts.dispatching(None);
    match ctx.api.gate().refusal() {
        Some(GateError::ProviderDown) => Stats::add(&ctx.stats.provider_down, 1),
        Some(GateError::DayExhausted) => Stats::add(&ctx.stats.day_spent, 1),
        _ => {}
    }
    *lock(&ctx.stats.pace_note) = ctx.api.gate().pace_note();
    // Ends the gate's grant loop, which holds a journal handle for the usage counts.
    ctx.api.gate().close();
    if let Err(e) = fed {
        ctx.fail(e.to_string());
    }
    let closed = writer.close().await;
    let fatal = ctx.fatal();
    drop(ctx);
    tokio::task::spawn_blocking(move || {
        writer_thread.join();
        // Nothing is sent any more: the ledger's thread writes what is left.
        if let Some(following) = ledger_thread {
            following.finish();
        }
    })
    .await?;
    match (fatal, closed) {
        (Some(message), _) => bail!("{message}"),
        (None, Err(e)) => Err(e.into()),
        (None, Ok(())) => Ok(()),
    }
}

/// What the account spent in the last day, as far as this machine knows: per minute, the
/// larger of the job's own count and the shared ledger's (which holds the job's earlier runs
/// too, when it was reachable then), and the ledger to keep following. Without a ledger, the
/// job's own count.
pub(crate) fn shared_usage(
    dir: &Path,
    account: String,
    own: Vec<(i64, u64)>,
) -> (Option<crate::ledger::Ledger>, Vec<(i64, u64)>) {
    let opened = crate::ledger::Ledger::open(dir, account).and_then(|mut l| {
        let spent = l.spent_since(unix_minute() - 24 * 60)?;
        Ok((l, spent))
    });
    match opened {
        Ok((ledger, spent)) => {
            let mut merged: BTreeMap<i64, u64> = own.into_iter().collect();
            for (minute, n) in spent {
                let m = merged.entry(minute).or_default();
                *m = (*m).max(n);
            }
            (Some(ledger), merged.into_iter().collect())
        }
        Err(e) => {
            tracing::warn!("{e}");
            (None, own)
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Rows that need a call in this run: the progress total.
fn count_work(reader: &JournalReader) -> anyhow::Result<u64> {
    Ok(reader.count(|r| work_for(r).is_some())?)
}

/// The directory for files in transit; whatever a killed run left there is stale.
fn prepare_scratch(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    create_private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))
}
