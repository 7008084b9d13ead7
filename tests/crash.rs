//! Crash safety, proven by killing: a job is SIGKILLed at many random instants and run again
//! until it finishes. Its output then matches an uninterrupted run's, row for row and value for
//! value (the times and request ids of the calls aside); no row was paid for twice beyond the
//! calls the kills left unconfirmed, which the summary reports and which are bounded by the
//! concurrency, and of which all but the few granted ahead of their slot had reached the
//! provider (intents are recorded between the grant and the send); after every kill the output is absent, the previous complete file or the new
//! complete one; and no temporary file is left.
//!
//! `BULKVERIFY_CRASH_KILLS` sets the number of kills per check (30 and 10 by default; the
//! README's long mode uses more). Alone in its test binary, so that no other test loads the
//! machine while it runs.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};

const ARGS: &[&str] = &["--config", "bulkverify.toml", "-o", "out.csv", "in.csv"];
const CONCURRENCY: u64 = 8;
/// Paid calls a kill can catch between their grant and their send: the gate grants a paid call
/// a few milliseconds ahead of its slot, to record its intent.
const AHEAD_OF_SLOT: u64 = 2;
/// Columns that differ between any two runs: when a call was made, its id, how often.
const VOLATILE: &[&str] = &["bv_checked_at", "bv_request_id", "bv_attempts"];

fn kills(default: usize) -> usize {
    std::env::var("BULKVERIFY_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits for `child` up to `limit`; `None` if it is still running.
fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The output, if there is one, is a whole file: every row under the header.
fn assert_whole(path: &Path, rows: usize, after: &str) {
    if !path.exists() {
        return;
    }
    let mut reader = csv::Reader::from_path(path).unwrap();
    let mut n = 0;
    for record in reader.records() {
        record.unwrap_or_else(|e| panic!("{after}: a torn output: {e}"));
        n += 1;
    }
    assert_eq!(n, rows, "{after}: the output holds every row");
}

/// What a finishing run's summary says it resent after a lost answer.
fn resent(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.split("(may be billed twice): ").nth(1))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Case {
    check: &'static str,
    config: String,
    input: String,
    rows: usize,
    sandbox: Vec<&'static str>,
    /// Paid calls per identifier, from the sandbox's counters.
    paid: fn(&Sandbox) -> BTreeMap<String, u64>,
    /// Rows one paid call carries: a kill leaves at most the concurrency in calls unconfirmed.
    rows_per_call: u64,
}

/// Runs `case` once uninterrupted, then again under `kills` SIGKILLs; compares.
fn survive(case: &Case, kills: usize, seed: u64) {
    let reference = {
        let sandbox = Sandbox::quick(&case.sandbox);
        let job = Job::new();
        job.write("bulkverify.toml", &case.config);
        job.write("in.csv", &case.input);
        let o = output(job.run(&sandbox, case.check, ARGS));
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        comparable(&job.path("out.csv"), VOLATILE)
    };

    let sandbox = Sandbox::quick(&case.sandbox);
    let job = Job::new();
    job.write("bulkverify.toml", &case.config);
    job.write("in.csv", &case.input);
    let out = job.path("out.csv");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut killed = 0;
    while killed < kills {
        let mut child = job
            .run(&sandbox, case.check, ARGS)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let after = Duration::from_millis(rng.random_range(30..1200));
        if let Some(status) = wait_for(&mut child, after) {
            // The job got to its end between two kills.
            assert!(matches!(status.code(), Some(0 | 75)), "{status}");
            break;
        }
        signal(&child, libc::SIGKILL);
        child.wait().unwrap();
        killed += 1;
        assert_whole(&out, case.rows, &format!("kill {killed} after {after:?}"));
    }
    assert!(
        killed >= kills.min(10),
        "only {killed} kills before the job ended"
    );

    // The same command to the end, then once more sending what the kills left unconfirmed.
    let o = output(job.run(&sandbox, case.check, ARGS));
    assert!(matches!(code(&o), 0 | 75), "{}", stderr(&o));
    let mut last = job.run(&sandbox, case.check, ARGS);
    last.arg("--resend-unconfirmed");
    let o = output(last);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let resent = resent(&stderr(&o));

    assert_eq!(
        comparable(&out, VOLATILE),
        reference,
        "{}: the output after {killed} kills differs from an uninterrupted run's",
        case.check
    );
    let paid = (case.paid)(&sandbox);
    assert_eq!(paid.len(), case.rows, "every row was paid for");
    let twice: u64 = paid.values().map(|n| n.saturating_sub(1)).sum();
    assert!(
        twice <= resent,
        "{twice} rows paid twice, but only {resent} reported resent"
    );
    assert!(
        resent <= killed as u64 * CONCURRENCY * case.rows_per_call,
        "{resent} unconfirmed after {killed} kills: more than the concurrency allows"
    );
    // Intents are recorded between the grant and the send: what a kill holds is what may have
    // left. A held row the provider never saw can only be one granted ahead of its slot.
    let never_sent = resent - twice;
    assert!(
        never_sent <= killed as u64 * AHEAD_OF_SLOT * case.rows_per_call,
        "{resent} rows held after {killed} kills, of which only {twice} had reached the \
         provider: the rest were held without leaving"
    );
    let stale: Vec<_> = std::fs::read_dir(job.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(stale.is_empty(), "temporary files left: {stale:?}");
    eprintln!(
        "{}: {killed} kills, {resent} rows held as unconfirmed and resent, {twice} of them had \
         been paid (paid twice now), {never_sent} had not left",
        case.check
    );
}

#[test]
fn per_row_calls_survive_kills_at_random_instants() {
    let numbers = udyam_numbers(3000);
    survive(
        &Case {
            check: "deepvue-udyam",
            config: format!(
                "[providers.deepvue]\nper_second = 300\nconcurrency = {CONCURRENCY}\n\n\
                 [checks.deepvue-udyam]\npoll_initial_secs = 0.2\npoll_max_secs = 0.5\n"
            ),
            input: udyam_input(&numbers),
            rows: numbers.len(),
            sandbox: vec!["--per-second", "300", "--udyam-delay-ms", "200"],
            paid: Sandbox::submissions,
            rows_per_call: 1,
        },
        kills(30),
        1,
    );
}

#[test]
fn batch_uploads_survive_kills_at_random_instants() {
    let rows = 4000;
    let input: String = std::iter::once("id,vpa\n".to_string())
        .chain((0..rows).map(|i| format!("{i:06},user{i}@okicici\n")))
        .collect();
    survive(
        &Case {
            check: "deepvue-upi-batch",
            config: format!(
                "[providers.deepvue]\nconcurrency = {CONCURRENCY}\n\n\
                 [checks.deepvue-upi-batch]\nchunk_size = 200\npoll_initial_secs = 0.2\n\
                 poll_max_secs = 0.5\n"
            ),
            input,
            rows,
            sandbox: vec!["--batch-delay-ms", "400", "--batch-ms-per-row", "1"],
            paid: Sandbox::vpa_uploads,
            rows_per_call: 200,
        },
        kills(10),
        2,
    );
}

/// A disk that fills up under the journal: no further paid call leaves, the run stops with
/// what to do, and the previous output stays as it was. Simulated by a file size limit
/// (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored): writes past it fail as on a full disk.
#[test]
fn a_full_disk_stops_paid_calls_and_keeps_the_previous_output() {
    use std::os::unix::process::CommandExt;

    let sandbox = Sandbox::quick(&["--udyam-delay-ms", "100"]);
    let job = Job::new();
    let numbers = udyam_numbers(600);
    job.write("in.csv", udyam_input(&numbers));
    // The first run spends a day's quota of 100 and writes an output with the rest pending.
    job.write(
        "bulkverify.toml",
        "[providers.deepvue]\nper_day = 201\nconcurrency = 4\n\n\
         [checks.deepvue-udyam]\npoll_initial_secs = 0.1\npoll_max_secs = 0.2\n",
    );
    let o = output(job.run(&sandbox, "deepvue-udyam", ARGS));
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    let previous = std::fs::read(job.path("out.csv")).unwrap();
    let state = job.path("out.csv.bulkverify");
    let journal_size = std::fs::metadata(state.join("journal.sqlite"))
        .unwrap()
        .len();
    let paid_before: u64 = sandbox.submissions().values().sum();

    // The next run (a new day's quota) on a disk with 32 KiB left for the journal.
    job.write(
        "bulkverify.toml",
        "[providers.deepvue]\nconcurrency = 4\n\n\
         [checks.deepvue-udyam]\npoll_initial_secs = 0.1\npoll_max_secs = 0.2\n",
    );
    let limit = journal_size + 32 * 1024;
    let mut c = job.run(&sandbox, "deepvue-udyam", ARGS);
    // SAFETY: between fork and exec only async-signal-safe calls: signal(2), setrlimit(2).
    unsafe {
        c.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = output(c);
    let err = stderr(&o);
    assert_eq!(code(&o), 1, "{err}");
    assert!(err.contains("journal could not be written"), "{err}");
    assert!(err.contains("Free disk space"), "{err}");
    assert_eq!(
        std::fs::read(job.path("out.csv")).unwrap(),
        previous,
        "the previous output is intact"
    );
    let paid_full: u64 = sandbox.submissions().values().sum();
    assert!(
        paid_full < numbers.len() as u64,
        "the run stopped sending: {paid_before} then {paid_full} submissions"
    );

    // Space again: the same command finishes. Calls whose answers could not be recorded are
    // held, and paid for twice only when sent again on request, as the summary reports.
    let mut c = job.run(&sandbox, "deepvue-udyam", ARGS);
    c.arg("--resend-unconfirmed");
    let o = output(c);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let paid = sandbox.submissions();
    assert_eq!(paid.len(), numbers.len());
    let twice: u64 = paid.values().map(|n| n.saturating_sub(1)).sum();
    assert!(
        twice <= resent(&stderr(&o)),
        "{twice} rows paid twice unreported"
    );
    assert!(twice <= CONCURRENCY, "{twice} rows paid twice");
}

/// A kill while the output is being written leaves the previous output whole, byte for byte;
/// the temporary file of the killed write is removed by the next run. The job's rows are all
/// final (invalid input costs no call), and the output is touched before each run so that it
/// is written again: each run is mostly its output write.
#[test]
fn a_kill_during_the_output_write_leaves_the_previous_output_whole() {
    let sandbox = Sandbox::quick(&[]);
    let job = Job::new();
    let input: String = std::iter::once("id,udyam\n".to_string())
        .chain((0..100_000).map(|i| format!("{i:06},not-a-udyam-{i}\n")))
        .collect();
    job.write("in.csv", input);
    job.write("bulkverify.toml", "");
    let o = output(job.run(&sandbox, "deepvue-udyam", ARGS));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let previous = std::fs::read(job.path("out.csv")).unwrap();
    let temporaries = || {
        std::fs::read_dir(job.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".out.csv.bulkverify-") && n.ends_with(".tmp"))
            .count()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (mut kills, mut mid_write) = (0, 0);
    for round in 0..80u64 {
        if kills >= 40 || mid_write >= 3 {
            break;
        }
        // A finished job leaves an output it wrote as it is; one touched since is written
        // again, which is the write this test kills.
        let touched = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + round);
        std::fs::File::options()
            .append(true)
            .open(job.path("out.csv"))
            .unwrap()
            .set_modified(touched)
            .unwrap();
        let mut child = job
            .run(&sandbox, "deepvue-udyam", ARGS)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let after = Duration::from_millis(rng.random_range(100..4000));
        if wait_for(&mut child, after).is_some() {
            continue;
        }
        signal(&child, libc::SIGKILL);
        child.wait().unwrap();
        kills += 1;
        mid_write += usize::from(temporaries() > 0);
        assert_eq!(
            std::fs::read(job.path("out.csv")).unwrap(),
            previous,
            "after kill {kills} ({after:?}): the previous output, whole"
        );
    }
    assert!(
        mid_write > 0,
        "no kill landed in the write in {kills} tries"
    );
    let o = output(job.run(&sandbox, "deepvue-udyam", ARGS));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read(job.path("out.csv")).unwrap(), previous);
    assert_eq!(
        temporaries(),
        0,
        "the killed writes' temporary files are gone"
    );
    assert!(sandbox.submissions().is_empty());
}
