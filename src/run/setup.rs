//! The job as its arguments and config make it, before its state is opened: what `run` and
//! `plan` both start from, so that they refuse the same things.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;

use super::{Job, RunOptions};
use crate::checks::spending::Spending;
use crate::checks::{CheckInfo, Pipeline, ReuseWithin, validate_sections};
use crate::config::{ConfigFile, ProviderSettings};
use crate::input::{ColumnMap, InputFile};
use crate::rehearsal::Rehearsal;
use crate::stats::Stats;
use crate::store::StoreSide;

/// A job as its arguments and config make it, before its state is opened: what `run` and
/// `plan` both start from, with the same errors.
pub(crate) struct Setup {
    pub info: &'static CheckInfo,
    pub config: ConfigFile,
    pub check: Pipeline,
    pub reuse_within: ReuseWithin,
    pub spending: Spending,
    pub inputs: Arc<Vec<InputFile>>,
    pub maps: Arc<Vec<ColumnMap>>,
    pub output: PathBuf,
    pub state_dir: PathBuf,
    /// The provider's settings for a live job; `None` for a rehearsal.
    pub live: Option<ProviderSettings>,
}

impl Setup {
    /// Reads the config, builds the check, opens the inputs and resolves the provider's
    /// settings: what a job cannot run with is refused before its state is touched.
    pub fn of(opts: &RunOptions) -> anyhow::Result<Setup> {
        let config = ConfigFile::load(opts.config.as_deref())?;
        validate_sections(&config)?;
        let info = opts.check.info();
        let check = if opts.sandbox {
            info.build(&config, &|k| Rehearsal::env("", k))?
        } else {
            info.build(&config, &|k| std::env::var(k).ok())?
        };
        let reuse_within = info.reuse_within(&config, opts.no_reuse)?;
        let spending = Spending::of(info.name, &config, opts.max_paid_calls)?;
        let (inputs, maps) = open_inputs(opts, info, &config)?;
        let (output, state_dir) = paths(opts)?;
        // Resolved before anything is opened, so that a missing credential stops the run first.
        let env = |k: &str| std::env::var(k).ok();
        let live = (!opts.sandbox)
            .then(|| ProviderSettings::resolve(info.provider, &config, &env, None))
            .transpose()?;
        Ok(Setup {
            info,
            config,
            check,
            reuse_within,
            spending,
            inputs: Arc::new(inputs),
            maps: Arc::new(maps),
            output,
            state_dir,
            live,
        })
    }

    /// Where the job's calls go, as its state records it: a state is never resumed elsewhere.
    pub fn environment(&self) -> String {
        self.live
            .as_ref()
            .map_or_else(|| "sandbox".to_string(), |s| s.base_url.to_string())
    }

    /// The directory of the account's usage ledger and results store, for a live job; none for
    /// a rehearsal, whose calls and answers are the sandbox's.
    pub fn ledger_dir(&self) -> Option<PathBuf> {
        self.live.as_ref()?;
        crate::ledger::default_dir(&|k| std::env::var(k).ok())
    }

    /// Where a live job finds the account's results store, and which answers it reuses.
    fn store_side(&self) -> Option<StoreSide> {
        Some(StoreSide {
            dir: self.ledger_dir()?,
            account: crate::ledger::account(self.live.as_ref()?),
            since: self.reuse_within.since(crate::util::time::unix_now()),
        })
    }

    /// The journal work before any call, on the state in `state_dir`.
    pub fn job(
        &self,
        state_dir: PathBuf,
        fresh: bool,
        resend_unconfirmed: bool,
        stats: Arc<Stats>,
    ) -> Job {
        Job {
            state_dir,
            store: self.store_side(),
            info: self.info,
            environment: self.environment(),
            fresh,
            resend_unconfirmed,
            inputs: self.inputs.clone(),
            maps: self.maps.clone(),
            subject: self.check.clone(),
            stats,
            run_started_ms: None,
        }
    }
}

/// Opens the inputs and finds the check's columns in each; an input that holds our own result
/// columns is an earlier output, not an export.
fn open_inputs(
    opts: &RunOptions,
    info: &'static CheckInfo,
    config: &ConfigFile,
) -> anyhow::Result<(Vec<InputFile>, Vec<ColumnMap>)> {
    let mapping = info.mapping(config, &opts.columns)?;
    let inputs = InputFile::open_all(&opts.inputs, opts.dialect)?;
    let maps = inputs
        .iter()
        .map(|f| ColumnMap::resolve(f, info.columns, &mapping))
        .collect::<Result<Vec<_>, _>>()?;
    for f in &inputs {
        if let Some(h) = f.headers.iter().find(|h| h.starts_with("bv_")) {
            bail!(
                "{}: the column {h:?} uses the bv_ prefix under which bulkverify writes its \
                 results; rename it (or give the original export, not an earlier output)",
                f.display()
            );
        }
    }
    Ok((inputs, maps))
}

/// The output file and the state directory, checked not to overwrite an input.
fn paths(opts: &RunOptions) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (output, state_dir) = paths_of(opts);
    if opts.inputs.iter().any(|i| same_file(i, &output)) {
        bail!(
            "the output {} is one of the inputs; choose another with -o",
            output.display()
        );
    }
    Ok((output, state_dir))
}

/// The output file and the state directory the arguments name, unchecked: what a run's
/// summary names even when the run failed before it could check them.
pub fn paths_of(opts: &RunOptions) -> (PathBuf, PathBuf) {
    let output = match &opts.output {
        Some(o) => o.clone(),
        None => default_output(&opts.inputs[0]),
    };
    let state_dir = opts.state.clone().unwrap_or_else(|| default_state(&output));
    (output, state_dir)
}

/// A job's state directory when `--state` is not given: beside its output.
pub fn default_state(output: &Path) -> PathBuf {
    PathBuf::from(format!("{}.bulkverify", output.display()))
}

/// `exports/jan.csv` → `jan.verified.csv` in the working directory.
fn default_output(first_input: &Path) -> PathBuf {
    let stem = first_input
        .file_stem()
        .map_or_else(|| "output".into(), |s| s.to_string_lossy().into_owned());
    PathBuf::from(format!("{stem}.verified.csv"))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_output_is_beside_the_working_directory() {
        assert_eq!(
            default_output(Path::new("exports/jan.csv")),
            PathBuf::from("jan.verified.csv")
        );
    }
}
