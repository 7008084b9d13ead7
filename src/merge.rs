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

use std::path::Path;

use polars::prelude::*;

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

/// The result columns, one value per row in key order.
pub struct Results {
    pub keys: Vec<u64>,
    /// The `bv_*` columns, in output order.
    pub columns: Vec<(String, Values)>,
}

/// A result column's values. Counts stay numeric, for Parquet readers.
pub enum Values {
    Text(Vec<Option<String>>),
    Count(Vec<Option<u32>>),
}

/// Writes `output`: every input column, then the result columns. The file appears complete
/// or not at all (a temporary file beside it, renamed), readable only by its owner.
pub fn write_output(
    inputs: &[InputFile],
    results: Results,
    output: &Path,
    scratch: &Path,
) -> Result<(), MergeError> {
    let format = Format::for_path(output);
    let copy = scratch.join("input-copy.parquet");
    let columns = union_of_headers(inputs);
    let result = (|| {
        let read = canonical_copy(inputs, &columns, &copy, format)?;
        let known = results.keys.len() as u64;
        if read != known {
            return Err(MergeError::RowCount { read, known });
        }
        join_and_sink(&copy, &columns, results, output, format)
    })();
    let _ = std::fs::remove_file(&copy);
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
    let out = crate::journal::create_private_file(path).map_err(io)?;
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
    results: Results,
    output: &Path,
    format: Format,
) -> Result<(), MergeError> {
    let rows =
        LazyFrame::scan_parquet(PlRefPath::try_from_path(copy)?, ScanArgsParquet::default())?;

    let mut columns = vec![Column::new(KEY.into(), results.keys)];
    let mut order: Vec<String> = input_columns.to_vec();
    for (name, values) in results.columns {
        columns.push(match values {
            Values::Text(v) => Column::new(name.as_str().into(), v),
            Values::Count(v) => Column::new(name.as_str().into(), v),
        });
        order.push(name);
    }
    let outcomes = DataFrame::new_infer_height(columns)?;

    let joined = rows
        .join_builder()
        .with(outcomes.lazy())
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
    // tempfile creates the file 0600; polars truncates and fills it, keeping the mode.
    let temp = tempfile::Builder::new()
        .prefix(".bulkverify-")
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

    fn results(keys: Vec<u64>) -> Results {
        let status = keys.iter().map(|k| Some(format!("s{k}"))).collect();
        let note = keys
            .iter()
            .map(|k| (k % 2 == 0).then(|| "a,\"b\"".to_string()))
            .collect();
        let attempts = keys.iter().map(|k| (k % 3 != 0).then_some(1)).collect();
        Results {
            keys,
            columns: vec![
                ("bv_status".into(), Values::Text(status)),
                ("bv_note".into(), Values::Text(note)),
                ("bv_attempts".into(), Values::Count(attempts)),
            ],
        }
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
        write_output(&files, results(vec![0, 1, 2, 3]), &out, dir.path()).unwrap();
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
    fn many_rows_keep_order_and_match_by_key_not_position() {
        let dir = tempfile::tempdir().unwrap();
        let n = CHUNK_ROWS as u64 + 1234;
        let mut data = b"id\n".to_vec();
        for i in 0..n {
            data.extend_from_slice(format!("{i:07}\n").as_bytes());
        }
        let files = inputs(dir.path(), &[("big.csv", &data)]);
        let mut keys: Vec<u64> = (0..n).collect();
        keys.reverse();
        let out = dir.path().join("out.csv");
        write_output(&files, results(keys), &out, dir.path()).unwrap();
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
        write_output(&files, results(vec![0, 1]), &out, dir.path()).unwrap();
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
        let keys = vec![RowKey::new(0, 0).0, RowKey::new(1, 0).0];
        let mut r = results(keys);
        r.columns.truncate(1);
        r.columns[0].1 = Values::Text(vec![Some("first".into()), Some("second".into())]);
        write_output(&files, r, &out, dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "id,x,y,bv_status\n1,a,,first\n2,,q,second\n"
        );
    }

    #[test]
    fn a_row_count_mismatch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = inputs(dir.path(), &[("in.csv", b"id\n1\n2\n")]);
        let out = dir.path().join("out.csv");
        std::fs::write(&out, "previous").unwrap();
        let err = write_output(&files, results(vec![0]), &out, dir.path()).unwrap_err();
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
        write_output(&files, results(vec![0]), &out, dir.path()).unwrap();
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
