//! The merge: every input row, in input order and with its values as read, next to its
//! outcome, written atomically as CSV or Parquet.
//!
//! polars' API moves between minor versions, so all of it stays in this file.
//!
//! polars does not parse the user's files itself: on blank lines and on a bare quote inside an
//! unquoted field it disagrees with the csv crate that every other pass uses, and a single
//! disagreement would attach outcomes to the wrong rows. The journal gives one result per
//! input row, in key order, which is the inputs' order: so each result is paired with the
//! input record the shared reader reads next (their keys must agree), a chunk of rows is
//! built into one polars frame, and polars' batched writer appends it to the output, on a
//! thread of its own while the next frame is built. Nothing is copied to disk on the way, and
//! the merge holds two chunks, whatever the number of rows.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use polars::prelude::*;

use crate::input::{InputError, InputFile, Records};

/// Rows per frame written: bounds the merge's memory, which holds two, the one being built and
/// the one being written.
const CHUNK_ROWS: usize = 32_768;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("writing the output failed: {0}")]
    Polars(#[from] PolarsError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the inputs now have {read} rows but the journal knows {known}; the files changed \
         during the run: run again"
    )]
    RowCount { read: u64, known: u64 },
    #[error("internal error: result row keys must ascend ({key} came after {last})")]
    Unordered { key: u64, last: u64 },
}

/// The output's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

impl Format {
    pub fn for_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("parquet") => Format::Parquet,
            _ => Format::Csv,
        }
    }
}

/// A result column's kind. Counts stay numeric, for Parquet readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Count,
}

/// One cell of a result row: a text is borrowed, or made for the row (a value neutralised).
#[derive(Debug, Clone)]
pub enum Cell<'a> {
    Text(Option<Cow<'a, str>>),
    Count(Option<u32>),
}

enum Builder {
    Text(StringChunkedBuilder),
    Count(PrimitiveChunkedBuilder<UInt32Type>),
}

impl Builder {
    fn new(name: &str, kind: Kind) -> Builder {
        match kind {
            Kind::Text => Builder::Text(StringChunkedBuilder::new(name.into(), CHUNK_ROWS)),
            Kind::Count => Builder::Count(PrimitiveChunkedBuilder::new(name.into(), CHUNK_ROWS)),
        }
    }

    fn finish(self) -> Column {
        match self {
            Builder::Text(b) => b.finish().into_series().into_column(),
            Builder::Count(b) => b.finish().into_series().into_column(),
        }
    }
}

enum Writer {
    Csv(polars::io::csv::write::BatchedWriter<File>),
    Parquet(Box<polars::io::parquet::write::BatchedWriter<File>>),
}

impl Writer {
    fn write(&mut self, frame: &DataFrame) -> PolarsResult<()> {
        match self {
            Writer::Csv(w) => w.write_batch(frame),
            Writer::Parquet(w) => w.write_batch(frame),
        }
    }

    fn finish(self) -> PolarsResult<()> {
        match self {
            Writer::Csv(mut w) => w.finish(),
            Writer::Parquet(w) => w.finish().map(drop),
        }
    }
}

/// The writer on a thread of its own, which writes each frame while the next is built:
/// writing a frame had the merge wait for it. It takes one frame at a time (a rendezvous),
/// so that at most two are held, the one being written and the one being built.
struct Writing {
    frames: Option<mpsc::SyncSender<DataFrame>>,
    thread: Option<std::thread::JoinHandle<PolarsResult<Writer>>>,
}

impl Writing {
    fn start(mut writer: Writer) -> std::io::Result<Writing> {
        let (frames, taken) = mpsc::sync_channel::<DataFrame>(0);
        let thread = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || {
                for frame in taken {
                    writer.write(&frame)?;
                }
                Ok(writer)
            })?;
        Ok(Writing {
            frames: Some(frames),
            thread: Some(thread),
        })
    }

    /// Hands `frame` over; a writer that stopped says why.
    fn write(&mut self, frame: DataFrame) -> Result<(), MergeError> {
        match &self.frames {
            Some(frames) if frames.send(frame).is_ok() => Ok(()),
            _ => self.end().map(drop),
        }
    }

    /// Waits for the frames handed over to be written, and gives the writer back, or says why
    /// it stopped.
    fn end(&mut self) -> Result<Writer, MergeError> {
        self.frames = None;
        let thread = self
            .thread
            .take()
            .ok_or_else(|| polars_err!(ComputeError: "the output's writer has stopped"))?;
        Ok(thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?)
    }
}

/// The input file being read, and where each of its columns goes in the output's.
struct Reading<'a> {
    records: Records<'a>,
    slots: Vec<usize>,
    missing: Vec<usize>,
}

/// The output being written: result rows pushed in key order, each written beside the input
/// record of the same key. It appears complete or not at all (a temporary file beside it,
/// renamed by [`Output::finish`]), readable only by its owner.
pub struct Output<'a> {
    inputs: &'a [InputFile],
    format: Format,
    /// The output's columns: the inputs' (every file's, in first-seen order), then the results'.
    columns: Vec<(String, Kind)>,
    inputs_width: usize,
    builders: Vec<Builder>,
    pending: usize,
    next_file: usize,
    reading: Option<Reading<'a>>,
    read: u64,
    last: Option<u64>,
    writing: Writing,
    temp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl<'a> Output<'a> {
    /// Starts writing `path`: the inputs' columns, then `results`.
    pub fn create(
        inputs: &'a [InputFile],
        results: &[(String, Kind)],
        path: &Path,
    ) -> Result<Output<'a>, MergeError> {
        let format = Format::for_path(path);
        let mut columns: Vec<(String, Kind)> = union_of_headers(inputs)
            .into_iter()
            .map(|h| (h, Kind::Text))
            .collect();
        let inputs_width = columns.len();
        columns.extend(results.iter().cloned());
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let io = |source| MergeError::Io {
            path: path.display().to_string(),
            source,
        };
        let temp = temp_beside(path, &dir).map_err(io)?;
        let file = temp.as_file().try_clone().map_err(io)?;
        let schema = Schema::from_iter(columns.iter().map(|(name, kind)| {
            let dtype = match kind {
                Kind::Text => DataType::String,
                Kind::Count => DataType::UInt32,
            };
            Field::new(name.into(), dtype)
        }));
        let writer = match format {
            Format::Csv => Writer::Csv(CsvWriter::new(file).batched(&schema)?),
            Format::Parquet => {
                Writer::Parquet(Box::new(ParquetWriter::new(file).batched(&schema)?))
            }
        };
        let writing = Writing::start(writer).map_err(io)?;
        let builders = columns.iter().map(|(n, k)| Builder::new(n, *k)).collect();
        Ok(Output {
            inputs,
            format,
            columns,
            inputs_width,
            builders,
            pending: 0,
            next_file: 0,
            reading: None,
            read: 0,
            last: None,
            writing,
            temp,
            path: path.to_path_buf(),
        })
    }

    /// Appends a row, keys ascending: one cell per result column, in column order, beside
    /// the input record of the same key.
    pub fn push<'c>(
        &mut self,
        key: u64,
        cells: impl IntoIterator<Item = Cell<'c>>,
    ) -> Result<(), MergeError> {
        // A key out of order would pair rows wrongly.
        if let Some(last) = self.last.filter(|l| key <= *l) {
            return Err(MergeError::Unordered { key, last });
        }
        self.last = Some(key);
        match self.next_record()? {
            None => {
                return Err(MergeError::RowCount {
                    read: self.read,
                    known: self.read + 1,
                });
            }
            // The journal has no result for an input row: the inputs changed.
            Some(read) if read != key => {
                return Err(MergeError::RowCount {
                    read: self.read,
                    known: self.read - 1,
                });
            }
            Some(_) => {}
        }
        let reading = self.reading.as_ref().expect("a record was read");
        let (input, results) = self.builders.split_at_mut(self.inputs_width);
        let record = reading.records.record();
        for (cell, &slot) in record.iter().zip(&reading.slots) {
            if let Builder::Text(b) = &mut input[slot] {
                // For a CSV output an empty cell is a null, written back as an empty cell
                // (polars quotes an empty string); a Parquet output keeps the empty string.
                if cell.is_empty() && self.format == Format::Csv {
                    b.append_null();
                } else {
                    b.append_value(cell);
                }
            }
        }
        for &slot in &reading.missing {
            if let Builder::Text(b) = &mut input[slot] {
                b.append_null();
            }
        }
        for (builder, cell) in results.iter_mut().zip(cells) {
            match (builder, cell) {
                (Builder::Text(b), Cell::Text(v)) => b.append_option(v),
                (Builder::Count(b), Cell::Count(v)) => b.append_option(v),
                (Builder::Text(b), Cell::Count(_)) => b.append_null(),
                (Builder::Count(b), Cell::Text(_)) => b.append_null(),
            }
        }
        self.pending += 1;
        if self.pending == CHUNK_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Moves to the next input record, across files, and returns its key; `None` after the
    /// last.
    fn next_record(&mut self) -> Result<Option<u64>, MergeError> {
        loop {
            if let Some(reading) = &mut self.reading
                && let Some(key) = reading.records.advance()?
            {
                self.read += 1;
                return Ok(Some(key.0));
            }
            let Some(file) = self.inputs.get(self.next_file) else {
                self.reading = None;
                return Ok(None);
            };
            self.next_file += 1;
            let names = &self.columns[..self.inputs_width];
            let slots: Vec<usize> = file
                .headers
                .iter()
                .map(|h| {
                    names
                        .iter()
                        .position(|(c, _)| c == h)
                        .expect("the union has every header")
                })
                .collect();
            let missing = (0..self.inputs_width)
                .filter(|i| !slots.contains(i))
                .collect();
            self.reading = Some(Reading {
                records: file.records()?,
                slots,
                missing,
            });
        }
    }

    fn flush(&mut self) -> Result<(), MergeError> {
        if self.pending == 0 {
            return Ok(());
        }
        let fresh = self
            .columns
            .iter()
            .map(|(n, k)| Builder::new(n, *k))
            .collect();
        let full = std::mem::replace(&mut self.builders, fresh);
        let frame = DataFrame::new_infer_height(full.into_iter().map(Builder::finish).collect())?;
        self.writing.write(frame)?;
        self.pending = 0;
        Ok(())
    }

    /// Writes what is left and puts the output in place; refuses when the inputs hold more
    /// rows than the results (the previous output, if any, stays).
    pub fn finish(mut self) -> Result<(), MergeError> {
        let known = self.read;
        if self.next_record()?.is_some() {
            while self.next_record()?.is_some() {}
            return Err(MergeError::RowCount {
                read: self.read,
                known,
            });
        }
        self.flush()?;
        self.writing.end()?.finish()?;
        let io = |source| MergeError::Io {
            path: self.path.display().to_string(),
            source,
        };
        crate::util::fs::persist(self.temp, &self.path).map_err(io)
    }
}

/// The input columns of the output: every file's, in first-seen order.
fn union_of_headers(inputs: &[InputFile]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for f in inputs {
        for h in &f.headers {
            if !order.contains(h) {
                order.push(h.clone());
            }
        }
    }
    order
}

/// A private temporary file beside the output. A run killed while writing leaves its
/// temporary file behind: it holds personal data, and only a run of this job (which holds the
/// job's lock) writes under this name, so an old one is removed first.
fn temp_beside(output: &Path, dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let prefix = format!(
        ".{}.bulkverify-",
        output
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    // tempfile creates the file 0600.
    tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::RowKey;

    fn inputs(dir: &Path, files: &[(&str, &[u8])]) -> Vec<InputFile> {
        let paths: Vec<_> = files
            .iter()
            .map(|(name, data)| {
                let p = dir.join(name);
                std::fs::write(&p, data).unwrap();
                p
            })
            .collect();
        InputFile::open_all(&paths, Default::default()).unwrap()
    }

    /// Writes `out` from `files` with a result row for each of `keys`.
    fn write(files: &[InputFile], keys: Vec<u64>, out: &Path) -> Result<(), MergeError> {
        let mut o = Output::create(
            files,
            &[
                ("bv_status".into(), Kind::Text),
                ("bv_note".into(), Kind::Text),
                ("bv_attempts".into(), Kind::Count),
            ],
            out,
        )?;
        for k in keys {
            o.push(
                k,
                [
                    Cell::Text(Some(format!("s{k}").into())),
                    Cell::Text((k % 2 == 0).then_some("a,\"b\"".into())),
                    Cell::Count((k % 3 != 0).then_some(1)),
                ],
            )?;
        }
        o.finish()
    }

    #[test]
    fn values_come_back_as_read_in_input_order() {
        let dir = tempfile::tempdir().unwrap();
        let files = inputs(
            dir.path(),
            &[(
                "in.csv",
                b"\xEF\xBB\xBFid,name,x\r\n\"007\",\"a,b\",\r\n\r\n0042,\"say \"\"hi\"\"\",ab\"c\r\n3,\"multi\nline\", sp \r\n,,\r\n",
            )],
        );
        let out = dir.path().join("out.csv");
        write(&files, vec![0, 1, 2, 3], &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "id,name,x,bv_status,bv_note,bv_attempts\n\
             007,\"a,b\",,s0,\"a,\"\"b\"\"\",\n\
             0042,\"say \"\"hi\"\"\",\"ab\"\"c\",s1,,1\n\
             3,\"multi\nline\", sp ,s2,\"a,\"\"b\"\"\",1\n\
             ,,,s3,,\n"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "nothing but the input and the output"
        );
    }

    #[test]
    fn many_rows_keep_input_order_across_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let n = CHUNK_ROWS as u64 + 1234;
        let mut data = b"id\n".to_vec();
        for i in 0..n {
            data.extend_from_slice(format!("{i:07}\n").as_bytes());
        }
        let files = inputs(dir.path(), &[("big.csv", &data)]);
        let out = dir.path().join("out.csv");
        write(&files, (0..n).collect(), &out).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        for (i, line) in text.lines().skip(1).enumerate() {
            let (id, status) = line.split_once(',').unwrap();
            assert_eq!(id, format!("{i:07}"));
            assert!(status.starts_with(&format!("s{i},")), "{line}");
        }
        assert_eq!(text.lines().count() as u64, n + 1);
    }

    #[test]
    fn parquet_output_keeps_empty_strings_and_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let files = inputs(dir.path(), &[("in.csv", b"id,name\n007,\n2,b\n")]);
        let out = dir.path().join("out.parquet");
        write(&files, vec![0, 1], &out).unwrap();
        let df = LazyFrame::scan_parquet(
            PlRefPath::try_from_path(&out).unwrap(),
            ScanArgsParquet::default(),
        )
        .unwrap()
        .collect()
        .unwrap();
        assert_eq!(df.height(), 2);
        let name = df.column("name").unwrap().str().unwrap();
        assert_eq!(
            name.get(0),
            Some(""),
            "an empty cell is an empty string, not null"
        );
        assert_eq!(df.column("id").unwrap().str().unwrap().get(0), Some("007"));
        assert_eq!(df.column("bv_attempts").unwrap().dtype(), &DataType::UInt32);
    }

    #[test]
    fn several_files_union_their_columns_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let files = inputs(
            dir.path(),
            &[("a.csv", b"id,x\n1,a\n"), ("b.csv", b"y,id\nq,2\n")],
        );
        let out = dir.path().join("out.csv");
        let mut o = Output::create(&files, &[("bv_status".into(), Kind::Text)], &out).unwrap();
        o.push(RowKey::new(0, 0).0, [Cell::Text(Some("first".into()))])
            .unwrap();
        o.push(RowKey::new(1, 0).0, [Cell::Text(Some("second".into()))])
            .unwrap();
        o.finish().unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "id,x,y,bv_status\n1,a,,first\n2,,q,second\n"
        );
    }

    #[test]
    fn result_keys_out_of_order_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = inputs(dir.path(), &[("in.csv", b"id\n1\n2\n3\n")]);
        let out = dir.path().join("out.csv");
        let mut o = Output::create(&files, &[("bv_status".into(), Kind::Text)], &out).unwrap();
        o.push(0, [Cell::Text(None)]).unwrap();
        o.push(1, [Cell::Text(None)]).unwrap();
        let err = o.push(0, [Cell::Text(None)]).unwrap_err();
        assert!(
            matches!(err, MergeError::Unordered { key: 0, last: 1 }),
            "{err}"
        );
    }

    /// A result for no input row, or an input row without a result: the files changed.
    #[test]
    fn results_that_do_not_pair_with_the_input_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = inputs(dir.path(), &[("in.csv", b"id\n1\n2\n3\n")]);
        let out = dir.path().join("out.csv");
        for keys in [vec![0, 2, 3], vec![0, 1, 2, 3]] {
            let err = write(&files, keys, &out).unwrap_err();
            assert!(matches!(err, MergeError::RowCount { .. }), "{err}");
            assert!(!out.exists());
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["in.csv"], "no temporary file is left");
    }

    #[test]
    fn a_row_count_mismatch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = inputs(dir.path(), &[("in.csv", b"id\n1\n2\n")]);
        let out = dir.path().join("out.csv");
        std::fs::write(&out, "previous").unwrap();
        let err = write(&files, vec![0], &out).unwrap_err();
        assert!(
            matches!(err, MergeError::RowCount { read: 2, known: 1 }),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous");
    }

    #[cfg(unix)]
    #[test]
    fn output_is_private_and_replaces_atomically() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = inputs(dir.path(), &[("in.csv", b"id\n1\n")]);
        let out = dir.path().join("out.csv");
        std::fs::write(&out, "previous").unwrap();
        // What a run killed while writing left, and another output's file in progress.
        std::fs::write(dir.path().join(".out.csv.bulkverify-x1Y2z3.tmp"), "torn").unwrap();
        let other = dir.path().join(".other.csv.bulkverify-a1B2c3.tmp");
        std::fs::write(&other, "someone else's").unwrap();
        write(&files, vec![0], &out).unwrap();
        assert!(
            other.exists(),
            "another output's temporary file is left alone"
        );
        std::fs::remove_file(&other).unwrap();
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            std::fs::read_to_string(&out)
                .unwrap()
                .starts_with("id,bv_status")
        );
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
    }
}
