//! Compressed topics: records written by another client (Python's
//! confluent-kafka) with gzip, snappy, lz4 and zstd are all read, and the
//! results topic is written with the configured codec.

use std::process::Command;

use crate::broker;
use crate::support::*;

#[test]
fn records_in_every_codec_are_read_and_results_use_the_configured_codec() {
    let bootstrap = broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let t = Topics::new("codecs");
    create_topics(&bootstrap, &[(&t.input, 2), (&t.results, 2), (&t.dlq, 1)]);
    let events = dir.path().join("events.jsonl");
    let out = switchyard(&["generate", "--events", "2000", "--out", events.to_str().unwrap(), "--malformed-rate", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(python())
        .arg(repo().join("tests/kafka/produce_compressed.py"))
        .args([&bootstrap, &t.input, events.to_str().unwrap(), "gzip", "snappy", "lz4", "zstd"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        assert_eq!(counts[codec], 500, "{counts}");
    }

    let tables = dir.path().join("tables");
    let m = write_manifest(dir.path(), &t, &bootstrap, &tables, 1000);
    let text = std::fs::read_to_string(&m).unwrap().replace("    dlq_topic:", "    compression: gzip\n    dlq_topic:");
    assert!(text.contains("compression: gzip"), "{text}");
    std::fs::write(&m, text).unwrap();
    let out = switchyard(&["run", m.to_str().unwrap(), "--idle-exit-ms", "3000", "--progress-secs", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Every record, whatever its codec, is a result: none unreadable.
    assert_eq!(sql_i64(&tables, "SELECT count(*) FROM predictions"), 2000);
    assert_eq!(sql_i64(&tables, "SELECT count(DISTINCT key) FROM predictions"), 2000);
    assert_eq!(sql_i64(&tables, "SELECT count(*) FROM dlq"), 0, "no record was unreadable");
    let results = read_topic(&bootstrap, &t.results);
    assert_eq!(results.records, 2000);
    // The results' record batches on the broker's disk say gzip.
    if let Some(data) = broker::data_dir() {
        let mut codecs = std::collections::BTreeSet::new();
        for p in 0..2 {
            let log = data.join(format!("{}-{p}/00000000000000000000.log", t.results));
            codecs.extend(batch_codecs(&std::fs::read(&log).unwrap()));
        }
        assert_eq!(codecs.into_iter().collect::<Vec<_>>(), vec!["gzip"]);
    }
}

/// The codec of each record batch in a Kafka log segment (message format v2:
/// base offset i64, length i32, leader epoch i32, magic i8, crc u32,
/// attributes i16 whose low 3 bits are the codec).
fn batch_codecs(log: &[u8]) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 23 <= log.len() {
        let len = i32::from_be_bytes(log[at + 8..at + 12].try_into().unwrap()) as usize;
        assert_eq!(log[at + 16], 2, "record batch magic");
        let attributes = i16::from_be_bytes(log[at + 21..at + 23].try_into().unwrap());
        out.push(["none", "gzip", "snappy", "lz4", "zstd"][(attributes & 7) as usize]);
        at += 12 + len;
    }
    out
}
