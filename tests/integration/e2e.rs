//! N events in → exactly N result rows + M DLQ records, lineage right,
//! offsets committed, Parquet readable by pyarrow.

use std::process::Command;

use sha2::Digest;

use crate::broker;
use crate::support::*;

#[test]
fn binary_end_to_end_through_a_real_broker() {
    let bootstrap = broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("e2e");
    create_topics(&bootstrap, &[(&t.input, 3), (&t.results, 3), (&t.dlq, 1)]);
    let valid = 3000;
    let (payloads, bad) = mixed_input(dir.path(), valid);
    assert!(bad >= 5, "the input carries malformed records");
    produce(&bootstrap, &t.input, &payloads);
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 1000);

    let out = switchyard(&["run", manifest.to_str().unwrap(), "--idle-exit-ms", "3000", "--progress-secs", "0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("results        {valid:>10}")), "{stdout}");

    // Exactly N rows, no duplicates, M DLQ rows.
    let tb = tables.as_path();
    assert_eq!(sql_i64(tb, "SELECT count(*) FROM predictions"), valid as i64);
    assert_eq!(sql_i64(tb, "SELECT count(DISTINCT lineage_id) FROM predictions"), valid as i64);
    assert_eq!(sql_i64(tb, "SELECT count(*) FROM dlq"), bad as i64);
    assert_eq!(sql_i64(tb, "SELECT count(DISTINCT error_class) FROM dlq"), 5, "five kinds of bad input");

    // Lineage: ids derived from coordinates, hashes of manifest and model.
    let manifest_hash = hex::encode(sha2::Sha256::digest(std::fs::read(&manifest).unwrap()));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo().join("pipelines/models/fraud/1/metadata.json")).unwrap()).unwrap();
    let model_sha = meta["sha256"].as_str().unwrap();
    let wrong = sql_i64(
        tb,
        &format!(
            "SELECT count(*) FROM predictions WHERE manifest_hash <> '{manifest_hash}' OR model_sha256 <> '{model_sha}' \
             OR model_version <> '1' OR policy_version <> 'fraud-policy/1' OR source_topic <> '{}' \
             OR pipeline <> 'fraud-scoring' OR length(preprocess_hash) <> 64 OR array_length(features) <> 16",
            t.input
        ),
    );
    assert_eq!(wrong, 0, "every row carries the run's lineage");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sample = rt.block_on(async {
        let ctx = switchyard_analysis::catalog::open(&root(tb)).await.unwrap();
        switchyard_analysis::catalog::query(
            &ctx,
            "SELECT lineage_id, source_topic, source_partition, source_offset FROM predictions LIMIT 50",
        )
        .await
        .unwrap()
    });
    use arrow::array::AsArray;
    for b in &sample {
        for i in 0..b.num_rows() {
            let id = b.column(0).as_string::<i32>().value(i);
            let topic = b.column(1).as_string::<i32>().value(i);
            let part = b.column(2).as_primitive::<arrow::datatypes::Int32Type>().value(i);
            let off = b.column(3).as_primitive::<arrow::datatypes::Int64Type>().value(i);
            let want = &hex::encode(sha2::Sha256::digest(format!("{topic}\u{0}{part}\u{0}{off}").as_bytes()))[..32];
            assert_eq!(id, want, "lineage id is derived from the source coordinates");
        }
    }
    // Sensitive events were recognised and routed by the PII rules.
    assert!(sql_i64(tb, "SELECT count(*) FROM predictions WHERE rule_id IN ('pii-local', 'regulated-local')") > 0);

    // Kafka: N results, M DLQ records with context headers, offsets committed to the end.
    let results = read_topic(&bootstrap, &t.results);
    assert_eq!(results.records, valid);
    assert_eq!(results.keys.len(), valid, "one result per event key");
    assert!(results.first_headers.iter().any(|(k, _)| k == "switchyard.lineage_id"));
    let dlq = read_topic(&bootstrap, &t.dlq);
    assert_eq!(dlq.records, bad);
    for h in [
        "__connect.errors.topic",
        "__connect.errors.offset",
        "__connect.errors.stage",
        "__connect.errors.exception.message",
    ] {
        assert!(dlq.first_headers.iter().any(|(k, _)| k == h), "DLQ header {h} in {:?}", dlq.first_headers);
    }
    let input = read_topic(&bootstrap, &t.input);
    let committed = committed(&bootstrap, &t.group, &t.input, 3);
    assert_eq!(committed, input.end_offsets, "every partition committed to its end");

    // Another Parquet reader sees the same rows.
    let py = Command::new(python())
        .args([
            "-c",
            "import sys, pyarrow.dataset as ds; d = ds.dataset(sys.argv[1], format='parquet', partitioning='hive'); \
             t = d.to_table(columns=['lineage_id', 'score', 'model_version']); \
             print(t.num_rows, len(set(t.column('lineage_id').to_pylist())), set(t.column('model_version').to_pylist()))",
            tables.join("predictions").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let line = String::from_utf8_lossy(&py.stdout);
    assert_eq!(line.trim(), format!("{valid} {valid} {{1}}"), "pyarrow reads the same table");
}

#[test]
fn validate_reports_every_problem_and_run_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topics::new("validate");
    let m = write_manifest(dir.path(), &t, "127.0.0.1:1", &dir.path().join("tables"), 100);
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("model: fraud\n", "model: nosuchmodel\n")
        .replace("{from: hour,", "{from: hour_of_day,");
    std::fs::write(&m, text).unwrap();
    let out = switchyard(&["validate", m.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("workers.fraud.model: model registry: model `nosuchmodel` not found"), "{err}");
    assert!(err.contains("preprocess.features[1].from: no field `hour_of_day`"), "{err}");
    let out = switchyard(&["run", m.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid manifest") && err.contains("nosuchmodel"), "{err}");
}

#[test]
fn validate_reports_shape_problems_with_true_lines_beside_the_others_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topics::new("shape");
    let m = write_manifest(dir.path(), &t, "127.0.0.1:1", &dir.path().join("tables"), 100);
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("chunk_size: 1024", "chunk_size: lots")
        .replace("max_batch_size: 1024", "max_batch_sise: 1024")
        .replace("roll_max_rows: 100\n", "roll_max_rows: 0\n");
    std::fs::write(&m, &text).unwrap();
    let line = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for cmd in ["validate", "run"] {
        let out = switchyard(&[cmd, m.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("source.chunk_size: line {}: ", line("chunk_size: lots"))), "{cmd}: {err}");
        assert!(err.contains(&format!("workers.fraud.max_batch_sise: line {}: ", line("max_batch_sise"))), "{err}");
        // Sections that parsed are still checked: no problem hides another.
        assert!(err.contains("sinks.parquet.roll_max_rows: must be at least 1"), "{cmd}: {err}");
        assert!(err.contains("3 problem(s)"), "{cmd}: {err}");
    }
}

#[test]
fn an_unreachable_broker_is_a_clear_error_at_start_up_not_a_silent_wait() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topics::new("unreachable");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let broker = format!("127.0.0.1:{port}");
    let m = write_manifest(dir.path(), &t, &broker, &dir.path().join("tables"), 100);
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("  chunk_size: 1024", "  connect_timeout_ms: 3000\n  chunk_size: 1024");
    std::fs::write(&m, text).unwrap();
    for extra in [&[][..], &["--idle-exit-ms", "2000"][..]] {
        let started = std::time::Instant::now();
        let mut args = vec!["run", m.to_str().unwrap(), "--no-create-topics"];
        args.extend_from_slice(extra);
        let out = switchyard(&args);
        let took = started.elapsed();
        assert!(!out.status.success(), "{extra:?}");
        assert!(took < std::time::Duration::from_secs(20), "{extra:?}: took {took:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("cannot reach the Kafka brokers {broker} within 3000 ms")), "{err}");
        assert!(err.lines().count() < 30, "a bounded number of lines:\n{err}");
    }
}
