//! Accepted jobs, in memory and optionally journaled in a data directory.
//!
//! `run --sandbox` starts a fresh sandbox each run; when a run is killed and re-run, the new
//! sandbox must answer polls for what the previous one accepted. So every accepted job, and every
//! one-shot fault already served, is written before the answer that reveals it is sent, and read
//! back at start. The journal is append-only JSON lines; each batch's upload is a file of its own.
//!
//! The Cashfree, Attestr and Equal books keep their state in the provider's module; here they are
//! only journaled and replayed. Their changes go through [`Store::update`], which decides, writes
//! and applies one record at a time, so two concurrent calls never both see the state before
//! the other (a bulk id taken twice, an OTP attempt counted once for two wrong OTPs).

use std::collections::{HashMap, HashSet};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::ids::Ids;
use super::{SandboxError, attestr, cashfree, equal, lock};

const JOURNAL: &str = "jobs.jsonl";
const BATCH_DIR: &str = "batches";

#[derive(Debug, Clone)]
pub(super) struct UdyamJob {
    pub(super) number: String,
    pub(super) created_ms: u64,
    pub(super) ready_ms: u64,
}

#[derive(Debug, Clone)]
pub(super) struct BatchJob {
    pub(super) ready_ms: u64,
    pub(super) file: Bytes,
}

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Record {
    Udyam {
        request_id: String,
        number: String,
        created_ms: u64,
        ready_ms: u64,
    },
    /// The one-time 503 of a number was served: later submissions are accepted.
    UdyamUnavailableServed {
        number: String,
    },
    /// The one-time 500 of a result was served: later fetches answer normally.
    UdyamResultFaultServed {
        request_id: String,
    },
    Batch {
        request_id: String,
        sha256: String,
        created_ms: u64,
        ready_ms: u64,
    },
    Digilocker(cashfree::Digilocker),
    BankBulk(cashfree::BankBulk),
    PanBulk(cashfree::PanBulk),
    OtpRequest(attestr::OtpRequest),
    OtpAttempt(attestr::OtpAttempt),
    Journey(equal::Journey),
    JourneyVerified(equal::JourneyVerified),
}

/// Everything accepted so far; the newer providers' books are theirs to read.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    udyam: HashMap<String, UdyamJob>,
    /// Accepted submissions per number: numbers the next request id.
    udyam_accepted: HashMap<String, u64>,
    unavailable_served: HashSet<String>,
    result_fault_served: HashSet<String>,
    batches: HashMap<String, BatchJob>,
    /// Accepted uploads per content hash: numbers the next request id.
    batch_accepted: HashMap<String, u64>,
    pub(super) cashfree: cashfree::Books,
    pub(super) attestr: attestr::Books,
    pub(super) equal: equal::Books,
}

impl Jobs {
    fn apply(&mut self, record: Record, file: Option<Bytes>) {
        match record {
            Record::Udyam {
                request_id,
                number,
                created_ms,
                ready_ms,
            } => {
                *self.udyam_accepted.entry(number.clone()).or_default() += 1;
                self.udyam.insert(
                    request_id,
                    UdyamJob {
                        number,
                        created_ms,
                        ready_ms,
                    },
                );
            }
            Record::UdyamUnavailableServed { number } => {
                self.unavailable_served.insert(number);
            }
            Record::UdyamResultFaultServed { request_id } => {
                self.result_fault_served.insert(request_id);
            }
            Record::Batch {
                request_id,
                sha256,
                ready_ms,
                ..
            } => {
                *self.batch_accepted.entry(sha256).or_default() += 1;
                self.batches.insert(
                    request_id,
                    BatchJob {
                        ready_ms,
                        file: file.unwrap_or_default(),
                    },
                );
            }
            Record::Digilocker(record) => self.cashfree.digilocker(record),
            Record::BankBulk(record) => self.cashfree.bank_bulk(record),
            Record::PanBulk(record) => self.cashfree.pan_bulk(record),
            Record::OtpRequest(record) => self.attestr.request(record),
            Record::OtpAttempt(record) => self.attestr.attempt(&record),
            Record::Journey(record) => self.equal.journey(record),
            Record::JourneyVerified(record) => self.equal.verified(&record),
        }
    }
}

/// The data directory's open journal.
#[derive(Debug)]
struct Journal {
    dir: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    fn io_error(&self, path: PathBuf) -> impl FnOnce(io::Error) -> SandboxError {
        move |source| SandboxError::Io { path, source }
    }

    /// Writes the batch file (if any) first, then the journal line: a line never points to a
    /// file that is not there.
    fn write(&self, line: &[u8], batch: Option<(&str, &[u8])>) -> Result<(), SandboxError> {
        if let Some((request_id, bytes)) = batch {
            let path = batch_path(&self.dir, request_id);
            let mut file = private_file()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(self.io_error(path.clone()))?;
            file.write_all(bytes)
                .and_then(|()| file.sync_all())
                .map_err(self.io_error(path))?;
        }
        let path = self.dir.join(JOURNAL);
        let mut file = lock(&self.file);
        file.write_all(line)
            .and_then(|()| file.sync_data())
            .map_err(self.io_error(path))
    }
}

pub(super) struct Store {
    jobs: Mutex<Jobs>,
    journal: Option<Arc<Journal>>,
    /// Held by [`Store::update`] from its decision until its record is applied.
    writer: tokio::sync::Mutex<()>,
}

impl Store {
    /// An in-memory store, or the data directory's, created 0700 when missing (its files are
    /// 0600: they hold uploaded rows) and read back when present.
    pub(super) fn open(dir: Option<&Path>) -> Result<Store, SandboxError> {
        let Some(dir) = dir else {
            return Ok(Store {
                jobs: Mutex::default(),
                journal: None,
                writer: tokio::sync::Mutex::default(),
            });
        };
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SandboxError::Io { path, source }
        };
        let batch_dir = dir.join(BATCH_DIR);
        private_dir(&batch_dir).map_err(io_error(&batch_dir))?;
        let path = dir.join(JOURNAL);
        let mut file = private_file()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io_error(&path))?;
        // A run killed mid-write leaves a partial last line: drop it, so the next line appended
        // does not fuse with it.
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            file.set_len(complete as u64).map_err(io_error(&path))?;
            text.truncate(complete);
        }
        let mut jobs = Jobs::default();
        for (index, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let journal_error = |source| SandboxError::Journal {
                path: path.clone(),
                line: index + 1,
                source,
            };
            let record: Record = serde_json::from_slice(line).map_err(journal_error)?;
            let file = match &record {
                Record::Batch { request_id, .. } => {
                    if !request_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(journal_error(serde::de::Error::custom(
                            "a batch request id is not hex",
                        )));
                    }
                    let batch = batch_path(dir, request_id);
                    Some(Bytes::from(
                        std::fs::read(&batch).map_err(io_error(&batch))?,
                    ))
                }
                _ => None,
            };
            jobs.apply(record, file);
        }
        Ok(Store {
            jobs: Mutex::new(jobs),
            journal: Some(Arc::new(Journal {
                dir: dir.to_path_buf(),
                file: Mutex::new(file),
            })),
            writer: tokio::sync::Mutex::default(),
        })
    }

    /// Journals `record` (and the batch upload) off the async threads; a no-op in memory.
    async fn persist(
        &self,
        record: &Record,
        batch: Option<(String, Bytes)>,
    ) -> Result<(), SandboxError> {
        let Some(journal) = self.journal.clone() else {
            return Ok(());
        };
        let dir = journal.dir.clone();
        let mut line = serde_json::to_vec(record).map_err(|error| SandboxError::Io {
            path: dir.join(JOURNAL),
            source: io::Error::other(error),
        })?;
        line.push(b'\n');
        tokio::task::spawn_blocking(move || {
            journal.write(
                &line,
                batch
                    .as_ref()
                    .map(|(request_id, bytes)| (request_id.as_str(), &bytes[..])),
            )
        })
        .await
        .map_err(|error| SandboxError::Io {
            path: dir,
            source: io::Error::other(error),
        })?
    }

    /// Accepts a submission of `number`, persisted before the id is returned to be answered.
    pub(super) async fn accept_udyam(
        &self,
        ids: &Ids,
        number: &str,
        created_ms: u64,
        ready_ms: u64,
    ) -> Result<String, SandboxError> {
        let request_id = {
            let mut jobs = lock(&self.jobs);
            let prior = jobs.udyam_accepted.get(number).copied().unwrap_or_default();
            let request_id = ids.udyam_request_id(number, prior);
            jobs.apply(
                Record::Udyam {
                    request_id: request_id.clone(),
                    number: number.to_owned(),
                    created_ms,
                    ready_ms,
                },
                None,
            );
            request_id
        };
        let record = Record::Udyam {
            request_id: request_id.clone(),
            number: number.to_owned(),
            created_ms,
            ready_ms,
        };
        if let Err(error) = self.persist(&record, None).await {
            lock(&self.jobs).udyam.remove(&request_id);
            return Err(error);
        }
        Ok(request_id)
    }

    pub(super) fn udyam(&self, request_id: &str) -> Option<UdyamJob> {
        lock(&self.jobs).udyam.get(request_id).cloned()
    }

    /// True exactly once per number: the submission that gets the one-time 503.
    pub(super) async fn first_unavailable(&self, number: &str) -> Result<bool, SandboxError> {
        let first = lock(&self.jobs)
            .unavailable_served
            .insert(number.to_owned());
        if first {
            let record = Record::UdyamUnavailableServed {
                number: number.to_owned(),
            };
            self.persist(&record, None).await?;
        }
        Ok(first)
    }

    /// True exactly once per request: the fetch that gets the one-time 500.
    pub(super) async fn first_result_fault(&self, request_id: &str) -> Result<bool, SandboxError> {
        let first = lock(&self.jobs)
            .result_fault_served
            .insert(request_id.to_owned());
        if first {
            let record = Record::UdyamResultFaultServed {
                request_id: request_id.to_owned(),
            };
            self.persist(&record, None).await?;
        }
        Ok(first)
    }

    /// Accepts an upload whose content hashes to `sha256`, persisted before the id is returned.
    pub(super) async fn accept_batch(
        &self,
        ids: &Ids,
        sha256: &str,
        created_ms: u64,
        ready_ms: u64,
        file: Bytes,
    ) -> Result<String, SandboxError> {
        let record = |request_id: &str| Record::Batch {
            request_id: request_id.to_owned(),
            sha256: sha256.to_owned(),
            created_ms,
            ready_ms,
        };
        let request_id = {
            let mut jobs = lock(&self.jobs);
            let prior = jobs.batch_accepted.get(sha256).copied().unwrap_or_default();
            let request_id = ids.batch_request_id(sha256, prior);
            jobs.apply(record(&request_id), Some(file.clone()));
            request_id
        };
        let persisted = self
            .persist(&record(&request_id), Some((request_id.clone(), file)))
            .await;
        if let Err(error) = persisted {
            lock(&self.jobs).batches.remove(&request_id);
            return Err(error);
        }
        Ok(request_id)
    }

    pub(super) fn batch(&self, request_id: &str) -> Option<BatchJob> {
        lock(&self.jobs).batches.get(request_id).cloned()
    }

    /// Reads the books under the lock: `read` must be quick, it holds up every other call.
    pub(super) fn read<T>(&self, read: impl FnOnce(&Jobs) -> T) -> T {
        read(&lock(&self.jobs))
    }

    /// Decides from the books what to record, journals it, then applies it, one update at a
    /// time: the record is on disk before the answer that reveals it leaves, and no other update
    /// decides in between. `decide` returns the record (if any) and the value to hand back.
    pub(super) async fn update<T>(
        &self,
        decide: impl FnOnce(&Jobs) -> (Option<Record>, T),
    ) -> Result<T, SandboxError> {
        let _writer = self.writer.lock().await;
        let (record, value) = self.read(decide);
        if let Some(record) = record {
            self.persist(&record, None).await?;
            lock(&self.jobs).apply(record, None);
        }
        Ok(value)
    }
}

fn batch_path(dir: &Path, request_id: &str) -> PathBuf {
    dir.join(BATCH_DIR).join(format!("{request_id}.csv"))
}

/// Creates `path` and missing parents 0700. An existing directory keeps its mode: it was the
/// user's choice.
fn private_dir(path: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Options that create files 0600.
fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn journal_survives_a_restart_and_a_torn_last_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let ids = Ids::new("seed");
        let (udyam, batch) = {
            let store = Store::open(Some(&data)).expect("opens");
            let udyam = store
                .accept_udyam(&ids, "UDYAM-MH-01-0000001", 1, 2)
                .await
                .expect("accepts");
            assert!(
                store
                    .first_unavailable("UDYAM-MH-01-9000005")
                    .await
                    .expect("persists")
            );
            let batch = store
                .accept_batch(&ids, "abc", 3, 4, Bytes::from_static(b"vpa\na@ok\n"))
                .await
                .expect("accepts");
            (udyam, batch)
        };
        let journal = data.join(JOURNAL);
        let mut file = OpenOptions::new()
            .append(true)
            .open(&journal)
            .expect("opens");
        file.write_all(br#"{"kind":"udyam","request_"#)
            .expect("writes");
        drop(file);

        let store = Store::open(Some(&data)).expect("reopens");
        let job = store.udyam(&udyam).expect("udyam job kept");
        assert_eq!(
            (job.number.as_str(), job.created_ms, job.ready_ms),
            ("UDYAM-MH-01-0000001", 1, 2)
        );
        assert!(
            !store
                .first_unavailable("UDYAM-MH-01-9000005")
                .await
                .expect("persists")
        );
        assert_eq!(
            &store.batch(&batch).expect("batch kept").file[..],
            b"vpa\na@ok\n"
        );
        // Counts continue: the next submission of the same number gets a new id.
        let next = store
            .accept_udyam(&ids, "UDYAM-MH-01-0000001", 5, 6)
            .await
            .expect("accepts");
        assert_ne!(next, udyam);
        assert_eq!(next, ids.udyam_request_id("UDYAM-MH-01-0000001", 1));
        let text = std::fs::read_to_string(&journal).expect("reads");
        assert!(
            text.ends_with("}\n") && !text.contains("request_\""),
            "{text}"
        );
        assert_eq!(text.lines().count(), 4);
    }

    #[tokio::test]
    async fn a_corrupt_line_is_an_error_not_data_loss() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join(BATCH_DIR)).expect("creates");
        std::fs::write(dir.path().join(JOURNAL), "not json\n").expect("writes");
        let error = Store::open(Some(dir.path())).err().expect("refuses");
        assert!(
            matches!(error, SandboxError::Journal { line: 1, .. }),
            "{error}"
        );
    }
}
