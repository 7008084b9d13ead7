use polars::prelude::*;
use std::path::Path;

pub fn probe(input: &Path, out: &Path, keys: Vec<u64>, status: Vec<String>) -> PolarsResult<()> {
    let lf = LazyCsvReader::new(PlRefPath::try_from_path(input)?)
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .with_missing_is_null(false)
        .finish()?
        .with_row_index("__bv_idx", None)
        .with_column((col("__bv_idx").cast(DataType::UInt64) + lit(0u64)).alias("__bv_key"));
    let outcomes = DataFrame::new_infer_height(vec![
        Column::new("__bv_key".into(), keys),
        Column::new("bv_status".into(), status),
    ])?;
    let joined = lf
        .join_builder()
        .with(outcomes.lazy())
        .left_on([col("__bv_key")])
        .right_on([col("__bv_key")])
        .how(JoinType::Left)
        .maintain_order(MaintainOrderJoin::Left)
        .finish()
        .drop(cols(["__bv_idx", "__bv_key"]).into());
    joined
        .sink(
            SinkDestination::File { target: SinkTarget::Path(PlRefPath::try_from_path(out)?) },
            FileWriteFormat::Csv(CsvWriterOptions::default()),
            UnifiedSinkArgs::default(),
        )?
        .collect_with_engine(Engine::Streaming)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_cases() {
        let dir = std::env::temp_dir().join("bvprobe");
        std::fs::create_dir_all(&dir).unwrap();
        let cases: &[(&str, &[u8])] = &[
            ("q_lead0", b"id,name
\"007\",\"a,b\"
"),
            ("q_escaped", b"id,name
2,\"say \"\"hi\"\"\"
"),
            ("q_multiline", b"id,name
3,\"multi
line\"
4,x
"),
            ("q_inner", b"id,name
4,ab\"c
5,d
"),
            ("q_inner2", b"id,name
4,ab\"c
5,d\"e
"),
            ("single_empty", b"id
\"\"
1
"),
        ];
        for (name, data) in cases {
            let inp = dir.join(format!("{name}.csv"));
            let out = dir.join(format!("{name}.out.csv"));
            std::fs::write(&inp, data).unwrap();
            let n = 5u64;
            let r = super::probe(&inp, &out, (0..n).collect(), (0..n).map(|i| format!("s{i}")).collect());
            match r {
                Ok(()) => println!("== {name}: {:?}", String::from_utf8_lossy(&std::fs::read(&out).unwrap())),
                Err(e) => println!("== {name}: ERROR {e}"),
            }
        }
    }
}
