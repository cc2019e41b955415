//! The priority lane (`source.priority`): urgent topics are read by a second
//! consumer of the group with its own producer and Parquet writer, so their
//! records are answered while a backlog on the main topics is still being
//! drained; both lanes' rows are durable and their offsets committed.

use crate::broker;
use crate::support::*;

/// Gives the manifest a priority lane reading `urgent` in chunks of 64.
fn add_priority_lane(manifest: &std::path::Path, urgent: &str) {
    let text = std::fs::read_to_string(manifest).unwrap();
    assert!(text.contains("  chunk_size: 1024\n"), "{text}");
    let lane = format!("  chunk_size: 1024\n  priority: {{topics: [{urgent}], chunk_size: 64}}\n");
    std::fs::write(manifest, text.replace("  chunk_size: 1024\n", &lane)).unwrap();
}

#[test]
fn urgent_records_are_answered_before_a_backlog_on_the_main_topic_is_drained() {
    let bootstrap = broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("lane");
    let urgent = unique("lane-urgent");
    create_topics(&bootstrap, &[(&t.input, 3), (&urgent, 1), (&t.results, 3), (&t.dlq, 1)]);
    let backlog_dir = dir.path().join("backlog");
    std::fs::create_dir_all(&backlog_dir).unwrap();
    let (backlog, bad) = mixed_input(&backlog_dir, 200_000);
    let urgent_dir = dir.path().join("urgent");
    std::fs::create_dir_all(&urgent_dir).unwrap();
    let (urgent_records, urgent_bad) = mixed_input(&urgent_dir, 300);
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 50_000);
    add_priority_lane(&manifest, &urgent);

    let summary = dir.path().join("summary.json");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", manifest.to_str().unwrap(), "--idle-exit-ms", "3000", "--progress-secs", "0"])
        .arg("--summary-json")
        .arg(&summary)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Both lanes hold their partitions (a record each is committed) before
    // the backlog arrives: a group's later member gets its partitions only
    // after the others' next heartbeat, which would blur what is measured.
    produce(&bootstrap, &t.input, &backlog[..1]);
    produce(&bootstrap, &urgent, &urgent_records[..1]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // 0 while the broker cannot say yet (its group coordinator is starting).
    let total = |topic: &str, n: i32| {
        try_committed(&bootstrap, &t.group, topic, n, std::time::Duration::from_secs(5))
            .map_or(0, |c| c.values().sum::<i64>())
    };
    while total(&t.input, 3) < 1 || total(&urgent, 1) < 1 {
        assert!(std::time::Instant::now() < deadline, "the first record of each lane was not committed in 60 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A backlog the worker needs seconds for, then urgent records.
    produce(&bootstrap, &t.input, &backlog);
    produce(&bootstrap, &urgent, &urgent_records);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed:\n{}\n{stderr}", String::from_utf8_lossy(&out.stdout));

    // Both lanes' rows, once each; their bad records in the DLQ.
    let tb = tables.as_path();
    // Each lane's first record was sent twice (once to start it).
    let (main_valid, urgent_valid) = (backlog.len() - bad + 1, urgent_records.len() - urgent_bad + 1);
    let count = |topic: &str| sql_i64(tb, &format!("SELECT count(*) FROM predictions WHERE source_topic = '{topic}'"));
    assert_eq!(count(&t.input), main_valid as i64);
    assert_eq!(count(&urgent), urgent_valid as i64);
    assert_eq!(sql_i64(tb, "SELECT count(DISTINCT lineage_id) FROM predictions"), (main_valid + urgent_valid) as i64);
    assert_eq!(sql_i64(tb, "SELECT count(*) FROM dlq"), (bad + urgent_bad) as i64);
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["records"], (backlog.len() + urgent_records.len() + 2) as u64, "the summary counts both lanes: {s}");
    assert_eq!(read_topic(&bootstrap, &t.results).records, main_valid + urgent_valid);

    // The group committed both lanes' topics to their ends.
    let ends = read_topic(&bootstrap, &t.input).end_offsets;
    assert_eq!(committed(&bootstrap, &t.group, &t.input, 3), ends, "main topic committed to its end");
    let ends = read_topic(&bootstrap, &urgent).end_offsets;
    assert_eq!(committed(&bootstrap, &t.group, &urgent, 1), ends, "urgent topic committed to its end");

    // Every urgent record was answered while the backlog was still being
    // drained.
    let answered = |topic: &str, agg: &str| {
        sql_i64(
            tb,
            &format!(
                "SELECT CAST({agg}(CAST(ingest_time AS BIGINT) + latency_us) AS BIGINT) FROM predictions \
                 WHERE source_topic = '{topic}'"
            ),
        )
    };
    let backlog_first = answered(&t.input, "min");
    let at = |topic: &str, agg: &str| (answered(topic, agg) - backlog_first) / 1000;
    let (urgent_last, backlog_last) = (at(&urgent, "max"), at(&t.input, "max"));
    assert!(
        urgent_last < backlog_last,
        "the last urgent answer came {urgent_last} ms after the first answer of the backlog, which took \
         {backlog_last} ms (median {} ms)",
        at(&t.input, "median")
    );
}

/// When the priority lane fails, the main lane stops too (cleanly: what it
/// read is durable and committed) and the run fails naming the lane,
/// rather than going on without its urgent topics. The fault: with
/// `delivery: exactly_once`, another producer takes the lane's
/// transactional id, which fences the lane's producer out at the broker.
#[test]
fn a_failed_priority_lane_stops_the_main_lane_and_the_run() {
    use rdkafka::producer::{BaseProducer, Producer as _};
    use std::time::{Duration, Instant};

    let bootstrap = broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("lanefail");
    let urgent = unique("lanefail-urgent");
    create_topics(&bootstrap, &[(&t.input, 3), (&urgent, 1), (&t.results, 3), (&t.dlq, 1)]);
    let input_dir = dir.path().join("input");
    std::fs::create_dir_all(&input_dir).unwrap();
    let (records, _) = mixed_input(&input_dir, 200);
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 500);
    set_exactly_once(&manifest, &t, "");
    add_priority_lane(&manifest, &urgent);

    // An idle exit far away: only the lane's failure may end this run.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", manifest.to_str().unwrap(), "--idle-exit-ms", "600000", "--progress-secs", "0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Each writer takes a lease named by its id: the main lane's writer
    // first, the priority lane's once the main lane's producer is open.
    let writers = tables.join("_writers");
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 2 {
        assert!(Instant::now() < deadline, "two writers did not start in 60 s: {seen:?}");
        let mut new: Vec<String> = std::fs::read_dir(&writers)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        // Lease files only, not the temporary files they are written through.
        new.retain(|w| !w.contains('.') && !seen.contains(w));
        assert!(new.len() <= 1, "both writers' leases appeared at once, so which is the lane's is unknown: {new:?}");
        seen.extend(new);
        std::thread::sleep(Duration::from_millis(1));
    }

    // Both lanes at work: the main topic's 100 records and one urgent
    // record committed.
    produce(&bootstrap, &t.input, &records[..100]);
    produce(&bootstrap, &urgent, &records[..1]);
    let total = |topic: &str, n: i32| {
        try_committed(&bootstrap, &t.group, topic, n, Duration::from_secs(5)).map_or(0, |c| c.values().sum::<i64>())
    };
    while total(&t.input, 3) < 100 || total(&urgent, 1) < 1 {
        assert!(Instant::now() < deadline, "the first records of each lane were not committed in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Another producer takes the lane's transactional id: the lane's next
    // transaction is refused.
    let fencer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("transactional.id", format!("switchyard-{}-{}", t.group, seen[1]))
        .create()
        .unwrap();
    fencer.init_transactions(Duration::from_secs(30)).unwrap();
    let fenced = Instant::now();
    produce(&bootstrap, &urgent, &records[100..]);

    while child.try_wait().unwrap().is_none() {
        if fenced.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the run went on for 60 s after its priority lane was fenced out:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run succeeded with a failed lane:\n{stderr}");
    assert!(stderr.contains("the priority lane (source.priority) failed"), "{stderr}");
    assert!(stderr.to_lowercase().contains("fenced"), "the lane's error names the fencing:\n{stderr}");

    // The main lane stopped cleanly: its records durable once each, its
    // topic committed to its end.
    let ends = read_topic(&bootstrap, &t.input).end_offsets;
    assert_eq!(committed(&bootstrap, &t.group, &t.input, 3), ends, "main topic committed to its end:\n{stderr}");
    let main_rows =
        sql_i64(tables.as_path(), &format!("SELECT count(*) FROM predictions WHERE source_topic = '{}'", t.input))
            + sql_i64(tables.as_path(), &format!("SELECT count(*) FROM dlq WHERE source_topic = '{}'", t.input));
    assert_eq!(main_rows, 100, "each of the main topic's records once, as a result or in the DLQ");
}
