//! The merge: every input row, in input order and with its values as read, joined with its
//! outcome by row key, written atomically as CSV or Parquet.
//!
//! polars' API moves between minor versions, so all of it stays in this file.
//!
//! polars does not parse the user's files itself: on blank lines and on a bare quote inside an
//! unquoted field it disagrees with the csv crate that every other pass uses, and a single
//! disagreement would attach outcomes to the wrong rows. Instead this module streams the
//! records from the shared reader into a canonical Parquet copy (row key plus every column, as
//! strings) in the state directory, joins that with the outcomes, and deletes the copy.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::io::parquet::write::BatchedWriter;
use polars::prelude::*;
use polars_plan::plans::AExprSorted;

use crate::input::{InputError, InputFile};

/// The name of the join key inside the merge; never written out.
const KEY: &str = "__bv_key";
/// Rows per Parquet row group of the canonical copy: bounds the merge's input buffer.
const CHUNK_ROWS: usize = 65_536;

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

/// The result columns, written row by row in key order to a Parquet file in the state
/// directory, a row group at a time: like the input's copy, it is streamed into the join, so
/// the merge's memory does not grow with the number of rows.
pub struct Results {
    path: PathBuf,
    writer: BatchedWriter<File>,
    columns: Vec<(String, Kind)>,
    keys: PrimitiveChunkedBuilder<UInt64Type>,
    builders: Vec<Builder>,
    pending: usize,
    rows: u64,
    last: Option<u64>,
}

/// A finished results file.
pub struct ResultsFile {
    path: PathBuf,
    rows: u64,
    columns: Vec<String>,
}

/// A result column's kind. Counts stay numeric, for Parquet readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Count,
}

/// One cell of a result row.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    Text(Option<&'a str>),
    Count(Option<u32>),
}

enum Builder {
    Text(StringChunkedBuilder),
    Count(PrimitiveChunkedBuilder<UInt32Type>),
}

fn builders(columns: &[(String, Kind)]) -> (PrimitiveChunkedBuilder<UInt64Type>, Vec<Builder>) {
    let keys = PrimitiveChunkedBuilder::new(KEY.into(), CHUNK_ROWS);
    let builders = columns
        .iter()
        .map(|(name, kind)| match kind {
            Kind::Text => Builder::Text(StringChunkedBuilder::new(name.into(), CHUNK_ROWS)),
            Kind::Count => Builder::Count(PrimitiveChunkedBuilder::new(name.into(), CHUNK_ROWS)),
        })
        .collect();
    (keys, builders)
}

impl Results {
    /// A results file at `path` (created 0600) with these columns.
    pub fn create(path: &Path, columns: &[(String, Kind)]) -> Result<Results, MergeError> {
        let file = crate::util::fs::create_private_file(path).map_err(|source| MergeError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut fields = vec![Field::new(KEY.into(), DataType::UInt64)];
        fields.extend(columns.iter().map(|(name, kind)| {
            let dtype = match kind {
                Kind::Text => DataType::String,
                Kind::Count => DataType::UInt32,
            };
            Field::new(name.into(), dtype)
        }));
        let writer = ParquetWriter::new(file)
            .with_compression(ParquetCompression::Uncompressed)
            .batched(&Schema::from_iter(fields))?;
        let (keys, builders) = builders(columns);
        Ok(Results {
            path: path.to_path_buf(),
            writer,
            columns: columns.to_vec(),
            keys,
            builders,
            pending: 0,
            rows: 0,
            last: None,
        })
    }

    /// Appends a row, keys ascending: one cell per column, in column order.
    pub fn push<'a>(
        &mut self,
        key: u64,
        cells: impl IntoIterator<Item = Cell<'a>>,
    ) -> Result<(), MergeError> {
        // The join trusts the file to be sorted: a key out of order would pair rows wrongly.
        if let Some(last) = self.last.filter(|l| key <= *l) {
            return Err(MergeError::Unordered { key, last });
        }
        self.last = Some(key);
        self.keys.append_value(key);
        for (builder, cell) in self.builders.iter_mut().zip(cells) {
            match (builder, cell) {
                (Builder::Text(b), Cell::Text(v)) => b.append_option(v),
                (Builder::Count(b), Cell::Count(v)) => b.append_option(v),
                (Builder::Text(b), Cell::Count(_)) => b.append_null(),
                (Builder::Count(b), Cell::Text(_)) => b.append_null(),
            }
        }
        self.pending += 1;
        self.rows += 1;
        if self.pending == CHUNK_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), MergeError> {
        if self.pending == 0 {
            return Ok(());
        }
        let (keys, builders) = builders(&self.columns);
        let keys = std::mem::replace(&mut self.keys, keys);
        let full = std::mem::replace(&mut self.builders, builders);
        let mut frame = vec![keys.finish().into_series().into_column()];
        frame.extend(full.into_iter().map(|b| match b {
            Builder::Text(b) => b.finish().into_series().into_column(),
            Builder::Count(b) => b.finish().into_series().into_column(),
        }));
        self.writer
            .write_batch(&DataFrame::new_infer_height(frame)?)?;
        self.pending = 0;
        Ok(())
    }

    pub fn finish(mut self) -> Result<ResultsFile, MergeError> {
        self.flush()?;
        self.writer.finish()?;
        Ok(ResultsFile {
            path: self.path,
            rows: self.rows,
            columns: self.columns.into_iter().map(|(n, _)| n).collect(),
        })
    }
}

/// Writes `output`: every input column, then the result columns. The file appears complete
/// or not at all (a temporary file beside it, renamed), readable only by its owner.
pub fn write_output(
    inputs: &[InputFile],
    results: ResultsFile,
    output: &Path,
    scratch: &Path,
) -> Result<(), MergeError> {
    let format = Format::for_path(output);
    let copy = scratch.join("input-copy.parquet");
    let columns = union_of_headers(inputs);
    let result = (|| {
        let read = canonical_copy(inputs, &columns, &copy, format)?;
        if read != results.rows {
            return Err(MergeError::RowCount {
                read,
                known: results.rows,
            });
        }
        join_and_sink(&copy, &columns, &results, output, format)
    })();
    // Both files hold personal data: they live only as long as the merge.
    let _ = std::fs::remove_file(&copy);
    let _ = std::fs::remove_file(&results.path);
    result
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

/// Streams every file's records into one Parquet copy keyed by row key, with the union of the
/// files' columns (a column a file lacks is null). For a CSV output, empty cells become nulls
/// so that they are written back as empty cells (polars quotes an empty string); a Parquet
/// output keeps them as empty strings.
fn canonical_copy(
    inputs: &[InputFile],
    columns: &[String],
    path: &Path,
    format: Format,
) -> Result<u64, MergeError> {
    let io = |source| MergeError::Io {
        path: path.display().to_string(),
        source,
    };
    let out = crate::util::fs::create_private_file(path).map_err(io)?;
    let mut fields = vec![Field::new(KEY.into(), DataType::UInt64)];
    fields.extend(
        columns
            .iter()
            .map(|h| Field::new(h.as_str().into(), DataType::String)),
    );
    let mut writer = ParquetWriter::new(out)
        .with_compression(ParquetCompression::Uncompressed)
        .batched(&Schema::from_iter(fields))?;
    let mut keys: Vec<u64> = Vec::with_capacity(CHUNK_ROWS);
    let mut cells: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(CHUNK_ROWS); columns.len()];
    let mut flush =
        |keys: &mut Vec<u64>, cells: &mut Vec<Vec<Option<String>>>| -> PolarsResult<()> {
            if keys.is_empty() {
                return Ok(());
            }
            let mut frame = Vec::with_capacity(columns.len() + 1);
            frame.push(Column::new(KEY.into(), std::mem::take(keys)));
            for (h, c) in columns.iter().zip(cells.iter_mut()) {
                frame.push(Column::new(h.as_str().into(), std::mem::take(c)));
            }
            writer.write_batch(&DataFrame::new_infer_height(frame)?)
        };
    let mut n = 0u64;
    for file in inputs {
        // Where each of this file's columns goes in the union.
        let slots: Vec<usize> = file
            .headers
            .iter()
            .map(|h| {
                columns
                    .iter()
                    .position(|c| c == h)
                    .expect("the union has every header")
            })
            .collect();
        let missing: Vec<usize> = (0..columns.len()).filter(|i| !slots.contains(i)).collect();
        let mut records = file.records()?;
        while let Some(key) = records.advance()? {
            keys.push(key.0);
            for (cell, &slot) in records.record().iter().zip(&slots) {
                cells[slot].push(if cell.is_empty() && format == Format::Csv {
                    None
                } else {
                    Some(cell.to_string())
                });
            }
            for &slot in &missing {
                cells[slot].push(None);
            }
            n += 1;
            if keys.len() == CHUNK_ROWS {
                flush(&mut keys, &mut cells)?;
            }
        }
    }
    flush(&mut keys, &mut cells)?;
    writer.finish()?;
    Ok(n)
}

fn join_and_sink(
    copy: &Path,
    input_columns: &[String],
    results: &ResultsFile,
    output: &Path,
    format: Format,
) -> Result<(), MergeError> {
    // Both sides are written in key order and say so: polars then merges them as two sorted
    // streams instead of holding one side in a hash table.
    let sorted = AExprSorted {
        descending: Some(false),
        nulls_last: Some(false),
    };
    let scan = |p: &Path| -> PolarsResult<LazyFrame> {
        Ok(
            LazyFrame::scan_parquet(PlRefPath::try_from_path(p)?, ScanArgsParquet::default())?
                .with_column(col(KEY).set_sorted_flag(sorted)),
        )
    };
    let rows = scan(copy)?;
    let outcomes = scan(&results.path)?;
    let mut order: Vec<String> = input_columns.to_vec();
    order.extend(results.columns.iter().cloned());

    let joined = rows
        .join_builder()
        .with(outcomes)
        .left_on([col(KEY)])
        .right_on([col(KEY)])
        .how(JoinType::Left)
        .maintain_order(MaintainOrderJoin::Left)
        .finish()
        .select(order.iter().map(|c| col(c.as_str())).collect::<Vec<_>>());

    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |source| MergeError::Io {
        path: output.display().to_string(),
        source,
    };
    // A run killed while writing leaves its temporary file behind: it holds personal data,
    // and only a run of this job (which holds the job's lock) writes under this name.
    let prefix = format!(
        ".{}.bulkverify-",
        output
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    // tempfile creates the file 0600; polars truncates and fills it, keeping the mode.
    let temp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    let file_format = match format {
        Format::Csv => FileWriteFormat::Csv(CsvWriterOptions::default()),
        Format::Parquet => FileWriteFormat::Parquet(Arc::new(ParquetWriteOptions::default())),
    };
    joined
        .sink(
            SinkDestination::File {
                target: SinkTarget::Path(PlRefPath::try_from_path(temp.path())?),
            },
            file_format,
            UnifiedSinkArgs::default(),
        )?
        .collect_with_engine(Engine::Streaming)?;
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(output).map_err(|e| io(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Make the rename itself durable.
        let _ = d.sync_all();
    }
    Ok(())
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
        InputFile::open_all(&paths).unwrap()
    }

    fn results(dir: &Path, keys: Vec<u64>) -> ResultsFile {
        let mut r = Results::create(
            &dir.join("results.parquet"),
            &[
                ("bv_status".into(), Kind::Text),
                ("bv_note".into(), Kind::Text),
                ("bv_attempts".into(), Kind::Count),
            ],
        )
        .unwrap();
        for k in keys {
            let status = format!("s{k}");
            r.push(
                k,
                [
                    Cell::Text(Some(&status)),
                    Cell::Text((k % 2 == 0).then_some("a,\"b\"")),
                    Cell::Count((k % 3 != 0).then_some(1)),
                ],
            )
            .unwrap();
        }
        r.finish().unwrap()
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
        write_output(
            &files,
            results(dir.path(), vec![0, 1, 2, 3]),
            &out,
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "id,name,x,bv_status,bv_note,bv_attempts\n\
             007,\"a,b\",,s0,\"a,\"\"b\"\"\",\n\
             0042,\"say \"\"hi\"\"\",\"ab\"\"c\",s1,,1\n\
             3,\"multi\nline\", sp ,s2,\"a,\"\"b\"\"\",1\n\
             ,,,s3,,\n"
        );
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("copy")),
            "the canonical copy is removed"
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
        write_output(
            &files,
            results(dir.path(), (0..n).collect()),
            &out,
            dir.path(),
        )
        .unwrap();
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
        write_output(&files, results(dir.path(), vec![0, 1]), &out, dir.path()).unwrap();
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
        let mut r = Results::create(
            &dir.path().join("r.parquet"),
            &[("bv_status".into(), Kind::Text)],
        )
        .unwrap();
        r.push(RowKey::new(0, 0).0, [Cell::Text(Some("first"))])
            .unwrap();
        r.push(RowKey::new(1, 0).0, [Cell::Text(Some("second"))])
            .unwrap();
        write_output(&files, r.finish().unwrap(), &out, dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "id,x,y,bv_status\n1,a,,first\n2,,q,second\n"
        );
    }

    #[test]
    fn result_keys_out_of_order_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Results::create(
            &dir.path().join("r.parquet"),
            &[("bv_status".into(), Kind::Text)],
        )
        .unwrap();
        r.push(5, [Cell::Text(None)]).unwrap();
        let err = r.push(3, [Cell::Text(None)]).unwrap_err();
        assert!(
            matches!(err, MergeError::Unordered { key: 3, last: 5 }),
            "{err}"
        );
    }

    #[test]
    fn a_row_count_mismatch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = inputs(dir.path(), &[("in.csv", b"id\n1\n2\n")]);
        let out = dir.path().join("out.csv");
        std::fs::write(&out, "previous").unwrap();
        let err = write_output(&files, results(dir.path(), vec![0]), &out, dir.path()).unwrap_err();
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
        write_output(&files, results(dir.path(), vec![0]), &out, dir.path()).unwrap();
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
