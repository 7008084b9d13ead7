//! The kept outcomes' encoding, and their reading back over a span of keys.

use super::*;

fn outcome(i: u64) -> KeptOutcome {
    KeptOutcome {
        batch_id: 7,
        status: "verified".into(),
        reason: i.is_multiple_of(3).then(|| "why".into()),
        message: Some(format!("message {i}")),
        provider_status: None,
        request_id: i.is_multiple_of(2).then(|| format!("req-{i}")),
        checked_at: None,
        fields: Some("[\"true\",\"ÄNITA\"]".into()),
        attempts: (i % 4) as u32,
    }
}

#[test]
fn outcomes_come_back_as_kept() {
    let rows: Vec<_> = [0u64, 1, 2, 300, 1 << 40]
        .into_iter()
        .map(|k| (RowKey(k), outcome(k)))
        .collect();
    let blob = encode(&rows).unwrap();
    assert_eq!(decode(&blob, 7, ALL).unwrap(), rows);
    assert_eq!(
        decode(&blob, 7, RowKey(1)..=RowKey(300)).unwrap(),
        rows[1..4],
        "a span of the chunk"
    );
    let raw = zstd::stream::decode_all(&blob[..]).unwrap();
    let cut = zstd::bulk::compress(&raw[..raw.len() - 1], LEVEL).unwrap();
    assert!(
        decode(&cut, 7, ALL).is_err(),
        "a chunk cut short is an error"
    );
    let span = RowKey(0)..=RowKey(1);
    assert!(decode(&cut, 7, span).is_err(), "read past the span too");
    assert!(decode(b"not zstd", 7, ALL).is_err());
}

/// Chunks whose spans interleave, and a leader's outcome among them, come back as one run
/// in key order, each found by its key and only within the span asked for.
#[test]
fn outcomes_over_interleaved_chunks_come_back_in_key_order() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(TABLE).unwrap();
    let chunk = |id: i64, keys: &[u64]| {
        let rows: Vec<_> = keys.iter().map(|&k| (RowKey(k), outcome(k))).collect();
        conn.execute(
            "INSERT INTO kept (chunk, batch_id, first_key, last_key, outcomes)
             VALUES (?1, 7, ?2, ?3, ?4)",
            params![
                id,
                keys[0] as i64,
                keys[keys.len() - 1] as i64,
                encode(&rows).unwrap()
            ],
        )
        .unwrap();
    };
    chunk(1, &[10, 14, 18]);
    chunk(2, &[2, 11, 15]);
    conn.execute(
        "INSERT INTO kept_leaders (row_key, batch_id, outcome) VALUES (12, 7, ?1)",
        [encode_raw(&[(RowKey(12), outcome(12))])],
    )
    .unwrap();
    // Were a row's outcome found twice, the one read last, a leader's, would stand.
    conn.execute(
        "INSERT INTO kept_leaders (row_key, batch_id, outcome) VALUES (14, 7, ?1)",
        [encode_raw(&[(RowKey(14), outcome(99))])],
    )
    .unwrap();
    let kept = kept_in(&conn, RowKey(3), RowKey(15)).unwrap();
    assert_eq!(kept.get(&RowKey(14)), Some(&outcome(99)));
    for k in [10, 11, 12, 15] {
        assert_eq!(kept.get(&RowKey(k)), Some(&outcome(k)), "row {k}");
    }
    assert!(!kept.contains_key(&RowKey(2)) && !kept.contains_key(&RowKey(13)));
    let keys: Vec<u64> = kept.into_iter().map(|(k, _)| k.0).collect();
    assert_eq!(keys, [10, 11, 12, 14, 15]);
    assert!(kept_over(&conn, None, None).unwrap().is_empty());
}
