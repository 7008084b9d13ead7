//! The command line: arguments become one settings value per command; errors print with their
//! chain and map to the documented exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::checks::{CHECKS, COMMON_FIELDS, CheckName};
use crate::input::{Delimiter, Dialect, TextEncoding};
use crate::progress::{LogWriter, ProgressMode};
use crate::report::{EXIT_FATAL, EXIT_USAGE, Monitoring, ReportAt};
use crate::run::{RunOptions, run};

/// Verify the rows of CSV exports against Indian verification APIs, within the provider's
/// quota, resumably: every row comes back with a definite outcome.
///
/// Credentials are read from the environment only (each provider's own variables, listed by
/// `bulkverify checks`), or from a credentials_file named in the config.
#[derive(Debug, Parser)]
#[command(name = "bulkverify", version, propagate_version = true)]
struct Cli {
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify the rows of one or more CSV exports and write them back with their outcomes.
    // A flag given twice takes its last value, so that an alias or wrapper can be overridden.
    #[command(args_override_self = true)]
    Run(RunCommand),
    /// What `run` with the same arguments would send, cost and take at the quotas, from the
    /// inputs, the job's state, the results store and the day ledger: no call is made.
    #[command(args_override_self = true)]
    Plan(PlanArgs),
    /// Run the built-in simulator of the providers, to rehearse a job offline.
    #[cfg(feature = "sandbox")]
    #[command(args_override_self = true)]
    Sandbox(SandboxArgs),
    /// How far a job is: its rows by state and outcome, calls, 429s, the current rate, the
    /// ETA, and whether a run is live on it. Reads the job's state without taking its lock,
    /// while its run goes on or after.
    Status(StatusArgs),
    /// List the checks, the input columns each reads and the output columns each writes.
    Checks,
    /// Delete a job's state (its journal holds the providers' answers) once its output has
    /// served its purpose, the output itself kept; or, with --results, the answers the
    /// account's results store keeps for later jobs.
    Purge(PurgeArgs),
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("what")
        .required(true)
        .multiple(false)
        .args(["output", "state", "results"])
))]
struct PurgeArgs {
    /// The job's output: its state is <output>.bulkverify.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The job's state directory, when it was given with --state.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// The results store beside the usage ledger (BULKVERIFY_LEDGER_DIR): the answers later
    /// jobs reuse instead of paying again.
    #[arg(long)]
    results: bool,
    /// With --results: only the answers obtained longer ago than this (90d, 12h, ...).
    #[arg(long, value_name = "AGE", requires = "results", value_parser = parse_age)]
    older_than: Option<Duration>,
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("job")
        .required(true)
        .multiple(false)
        .args(["output", "state"])
))]
struct StatusArgs {
    /// The job's output: its state is <output>.bulkverify.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The job's state directory, when it was given with --state.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Print the status as JSON, for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The check to run (see `bulkverify checks`).
    #[arg(long, value_enum)]
    check: CheckName,
    /// The config file [default: bulkverify.toml, if present].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The output file: CSV, or Parquet when it ends in .parquet [default: <first input's
    /// name>.verified.csv in the working directory].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The state directory that makes the job resumable [default: <output>.bulkverify].
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Map a column the check reads to a header of the input, e.g. --column udyam=UdyamNo.
    #[arg(long = "column", value_name = "NAME=HEADER", value_parser = parse_mapping)]
    columns: Vec<(String, String)>,
    /// Run against the built-in sandbox (started in-process) with its credentials.
    #[arg(long)]
    sandbox: bool,
    /// Send again the rows whose paid request may have been billed without an answer.
    #[arg(long)]
    resend_unconfirmed: bool,
    /// Start over: move the existing state aside (it is kept, not deleted).
    #[arg(long)]
    fresh: bool,
    /// Send every identifier again, even those whose answer an earlier job on the account
    /// obtained within the check's reuse_within.
    #[arg(long)]
    no_reuse: bool,
    /// The most paid calls this run makes (rows, for a batch check); the rows left over stay
    /// pending for the next run. Replaces the config's max_paid_calls.
    #[arg(long, value_name = "N")]
    max_paid_calls: Option<u64>,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Seconds between plain progress lines (when not on a terminal).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    progress_interval: u64,
    /// The inputs' text encoding: utf-8; windows-1252 (or latin1), which Excel's "CSV (Comma
    /// delimited)" saves on Western Windows; or utf-16, Excel's "Unicode Text" (with
    /// --delimiter tab). The output is always UTF-8.
    #[arg(long, value_name = "NAME", default_value = "utf-8", value_parser = parse_encoding)]
    encoding: TextEncoding,
    /// What separates the inputs' columns: ',', ';', tab or '|'. The output is always
    /// comma-separated.
    #[arg(long, value_name = "CHAR", default_value = ",", value_parser = parse_delimiter)]
    delimiter: Delimiter,
    /// The CSV exports to verify.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct RunCommand {
    #[command(flatten)]
    run: RunArgs,
    /// Print nothing when every row has a final outcome (exit 0), for cron, which mails what a
    /// job prints: no progress, no log line, no summary. When the run is incomplete or fails,
    /// everything it held back is printed at the end, with the summary or the error.
    #[arg(short, long)]
    quiet: bool,
    /// Write the run's summary as JSON to this file (docs/summary.schema.json describes it),
    /// on exit 0, 75 and 1 alike: rows by status, calls, 429s, times, the exit code. Written
    /// whole or not at all, mode 0600.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// Write the run's metrics in Prometheus' text format to this file, for node_exporter's
    /// textfile collector (<its directory>/<job>.prom; one file per job), on exit 0, 75 and 1
    /// alike. Written whole or not at all, mode 0644 (node_exporter reads it).
    #[arg(long, value_name = "FILE")]
    metrics_file: Option<PathBuf>,
    /// Write the job's HTML run report to this file [default: <output>.report.html]: one
    /// self-contained page with the outcomes, the reasons, the rate against the quota, latency,
    /// the phases of each run and what to do next. Counts, codes and times only; mode 0600.
    #[arg(long, value_name = "FILE", conflicts_with = "no_report")]
    report: Option<PathBuf>,
    /// Write no HTML run report.
    #[arg(long)]
    no_report: bool,
}

#[derive(Debug, Args)]
struct PlanArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Print the plan as JSON, for scripts.
    #[arg(long)]
    json: bool,
}

impl RunArgs {
    fn options(self) -> RunOptions {
        RunOptions {
            check: self.check,
            config: self.config,
            output: self.output,
            state: self.state,
            columns: self.columns,
            sandbox: self.sandbox,
            resend_unconfirmed: self.resend_unconfirmed,
            fresh: self.fresh,
            no_reuse: self.no_reuse,
            max_paid_calls: self.max_paid_calls,
            progress: self.progress,
            progress_every: Duration::from_secs(self.progress_interval.max(1)),
            dialect: Dialect {
                encoding: self.encoding,
                delimiter: self.delimiter,
            },
            inputs: self.inputs,
        }
    }
}

#[cfg(feature = "sandbox")]
#[derive(Debug, Args)]
struct SandboxArgs {
    /// The loopback port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[command(flatten)]
    config: bulkverify_sandbox::SandboxConfig,
}

fn parse_mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.is_empty() => {
            Ok((k.trim().to_string(), v.to_string()))
        }
        _ => Err("expected NAME=HEADER, e.g. udyam=UdyamNo".into()),
    }
}

fn parse_encoding(s: &str) -> Result<TextEncoding, String> {
    TextEncoding::from_label(s).ok_or_else(|| {
        "expected utf-8, windows-1252 (or latin1) or utf-16; save an export in another \
         encoding from Excel as \"CSV UTF-8\""
            .into()
    })
}

fn parse_delimiter(s: &str) -> Result<Delimiter, String> {
    Delimiter::parse(s).ok_or_else(|| "expected ',', ';', tab or '|'".into())
}

/// The program: parse, run, map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    init_logging(cli.verbose);
    // One thread runs every task: a run waits on the provider and the quota, not on CPU, and
    // tasks woken from the gate's and the journal's threads wake it alone, not a pool of
    // workers that then wake each other (a paced run's context switches per request fell
    // from 16.8 to 13.4 with this alone). The merge and the reading run on blocking threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fatal(&anyhow::Error::new(e).context("cannot start the runtime")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(a) => {
                let mut options = a.run.options();
                if a.quiet {
                    options.progress = ProgressMode::Off;
                    crate::progress::hold_lines();
                }
                let monitoring = Monitoring {
                    summary_json: a.summary_json,
                    metrics_file: a.metrics_file,
                    report: match (a.no_report, a.report) {
                        (true, _) => ReportAt::Nowhere,
                        (false, Some(file)) => ReportAt::File(file),
                        (false, None) => ReportAt::BesideOutput,
                    },
                };
                run(options, monitoring).await
            }
            Command::Plan(a) => crate::forecast::plan(a.run.options(), a.json).await,
            #[cfg(feature = "sandbox")]
            Command::Sandbox(a) => bulkverify_sandbox::serve(a.port, a.config)
                .await
                .map(|()| 0),
            Command::Status(a) => {
                state_dir(a.output, a.state).and_then(|dir| crate::status::status(&dir, a.json))
            }
            Command::Checks => {
                print_checks();
                Ok(0)
            }
            Command::Purge(a) => purge(a),
        }
    });
    // Background tasks (a sandbox's connections, timers) must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    crate::progress::release_lines(!matches!(result, Ok(0)));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => fatal(&e),
    }
}

fn parse_age(s: &str) -> Result<Duration, String> {
    crate::util::time::parse_age(s).ok_or_else(|| "expected an age such as 90d, 12h or 30m".into())
}

fn purge(a: PurgeArgs) -> anyhow::Result<u8> {
    if a.results {
        let dir = crate::ledger::default_dir(&|k| std::env::var(k).ok()).ok_or_else(|| {
            anyhow::anyhow!(
                "no results store: set BULKVERIFY_LEDGER_DIR, XDG_STATE_HOME or HOME to where \
                 the jobs keep it"
            )
        })?;
        let n = crate::store::ResultsStore::open(&dir)?.purge(a.older_than)?;
        let _ = writeln!(
            LogWriter,
            "bulkverify: deleted {n} answers from the results store in {}",
            dir.display()
        );
        return Ok(0);
    }
    let dir = state_dir(a.output, a.state)?;
    for deleted in crate::journal::Journal::purge(&dir)? {
        let _ = writeln!(LogWriter, "bulkverify: deleted {}", deleted.display());
    }
    Ok(0)
}

/// A job's state directory, from its output (`-o`) or as given (`--state`).
fn state_dir(output: Option<PathBuf>, state: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    state
        .or_else(|| output.as_deref().map(crate::run::default_state))
        .ok_or_else(|| anyhow::anyhow!("give the job's output (-o) or its --state"))
}

fn fatal(e: &anyhow::Error) -> ExitCode {
    let _ = writeln!(LogWriter, "bulkverify: error: {e:#}");
    ExitCode::from(EXIT_FATAL)
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "bulkverify=warn",
        1 => "bulkverify=info",
        _ => "bulkverify=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| LogWriter)
        .init();
}

fn print_checks() {
    let mut out = String::new();
    for name in CHECKS {
        let info = name.info();
        out.push_str(&format!("{}\n  {}\n", info.name, info.summary));
        out.push_str(&format!(
            "  provider: {}; reads from the environment:\n",
            info.provider.name
        ));
        for (var, what) in info.variables() {
            out.push_str(&format!("    {var:<24} {what}\n"));
        }
        out.push_str("  reads:\n");
        for c in info.columns {
            out.push_str(&format!(
                "    {:<10} {:<9} {}; recognised headers: {}\n",
                c.name,
                if c.required { "required" } else { "optional" },
                c.help,
                c.aliases.join(", ")
            ));
        }
        out.push_str("  writes, after every input column:\n");
        for (f, help) in COMMON_FIELDS {
            out.push_str(&format!("    bv_{f:<22} {help}\n"));
        }
        for (f, help) in info.fields {
            out.push_str(&format!("    bv_{f:<22} {help}\n"));
        }
        out.push_str(&format!(
            "  reuses earlier jobs' answers: {} by default ({})\n",
            info.reuse.within.describe(),
            info.reuse.why
        ));
        out.push('\n');
    }
    print!("{out}");
}
