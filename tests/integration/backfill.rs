//! Backfills: bounded runs of the `fraud` pipeline from files (local and on
//! an S3 server) and from Kafka offset and time ranges (Apache Kafka), killed and
//! resumed, planned and compared with the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::ClientConfig;

use crate::support::*;

/// A backfill manifest over the shipped `fraud` pipeline, writing under `tables`.
pub(crate) fn write_backfill(dir: &Path, name: &str, source: &str, tables: &Path) -> PathBuf {
    let text = format!(
        "name: {name}\npipeline: {pipeline}\nsource:\n{source}\npins:\n  models: {{fraud: \"1\"}}\n  policy_version: \
         fraud-policy/1\noutput:\n  path: {tables}\n",
        pipeline = repo().join("pipelines/fraud.yaml").display(),
        tables = tables.display(),
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn run_ok(args: &[&str]) -> String {
    let out = switchyard(args);
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "switchyard {args:?} failed:\n{text}");
    text
}

fn plan_json(manifest: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["backfill", "plan", manifest.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = switchyard(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn run_json(dir: &Path, manifest: &Path, extra: &[&str]) -> serde_json::Value {
    let summary = dir.join(format!("summary-{}.json", unique("s")));
    let mut args = vec![
        "backfill",
        "run",
        manifest.to_str().unwrap(),
        "--summary-json",
        summary.to_str().unwrap(),
        "--progress-secs",
        "1",
    ];
    args.extend_from_slice(extra);
    run_ok(&args);
    serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap()
}

/// Rows made durable by the run's committed rolls.
fn durable_rows(out: &Path) -> u64 {
    let Ok(tags) = std::fs::read_dir(out.join("_rolls_backfill")) else { return 0 };
    let mut n = 0;
    for tag in tags.flatten() {
        for e in std::fs::read_dir(tag.path()).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "json") {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&std::fs::read(e.path()).unwrap_or_default())
                {
                    n += v["rows"].as_u64().unwrap_or(0);
                }
            }
        }
    }
    n
}

#[test]
fn a_million_parquet_rows_killed_at_a_random_point_resume_to_exact_counts_and_a_rerun_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("history");
    std::fs::create_dir_all(&input).unwrap();
    let rows = 1_000_000u64;
    run_ok(&[
        "generate",
        "--events",
        &rows.to_string(),
        "--malformed-rate",
        "0",
        "--out",
        input.join("tx-0001.parquet").to_str().unwrap(),
    ]);
    let tables = dir.path().join("tables");
    let source = format!("  type: files\n  paths: [\"{}/*.parquet\"]", input.display());
    let manifest = write_backfill(dir.path(), "million", &source, &tables);
    let out = tables.join("backfills/million");

    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["backfill", "run", manifest.to_str().unwrap(), "--progress-secs", "0"])
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kill_at = rand::rng().random_range(50_000..600_000u64);
    let deadline = Instant::now() + Duration::from_secs(300);
    while durable_rows(&out) < kill_at {
        assert!(Instant::now() < deadline, "no progress to {kill_at} rows");
        assert!(child.try_wait().unwrap().is_none(), "the backfill ended before it was killed");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL: a crash, no clean shutdown
    child.wait().unwrap();
    let before = durable_rows(&out);
    assert!(before < rows, "killed mid-run ({before} rows durable, killed at ≥ {kill_at})");

    let summary = run_json(dir.path(), &manifest, &[]);
    assert_eq!(summary["state"], "finished", "{summary}");
    assert_eq!(summary["rows"], rows);
    assert_eq!(summary["results"].as_u64().unwrap() + summary["dlq"].as_u64().unwrap(), rows, "{summary}");
    let q = |sql: &str| sql_i64(&out, sql);
    assert_eq!(
        q("SELECT count(*) FROM predictions") + q("SELECT count(*) FROM dlq"),
        rows as i64,
        "0 lost, 0 duplicated"
    );
    assert_eq!(q("SELECT count(DISTINCT lineage_id) FROM predictions"), q("SELECT count(*) FROM predictions"));
    assert_eq!(q("SELECT count(DISTINCT source_offset) FROM predictions"), q("SELECT count(*) FROM predictions"));
    // Every row carries the run id and the pins.
    assert_eq!(
        q("SELECT count(*) FROM predictions WHERE run_id = 'million' AND model_version = '1' AND policy_version = \
           'fraud-policy/1'"),
        q("SELECT count(*) FROM predictions")
    );

    // Finished: running it again adds nothing.
    let again = run_ok(&["backfill", "run", manifest.to_str().unwrap()]);
    assert!(again.contains("nothing to do"), "{again}");
    assert_eq!(q("SELECT count(*) FROM predictions") + q("SELECT count(*) FROM dlq"), rows as i64);
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_backfill/million.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "finished");
}

#[test]
fn jsonl_and_csv_with_bad_rows_land_in_the_dlq_and_the_plan_matches_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let events = 60_000u64;
    run_ok(&["generate", "--events", &events.to_string(), "--out", input.join("a.jsonl").to_str().unwrap()]);
    let csv = "txn_id,amount,hour,channel,merchant_category,card_present\n\
               c-1,12.5,3,web,online,false\n\
               c-2,abc,4,pos,grocery,true\n\
               c-3,7.25,5,app\n\
               c-4,99.0,23,pos,travel,1\n";
    std::fs::write(input.join("b.csv"), csv).unwrap();
    let tables = dir.path().join("tables");
    let source =
        format!("  type: files\n  paths: [\"{0}/*.jsonl\", \"{0}/*.csv\"]\n  chunk_size: 512", input.display());
    let manifest = write_backfill(dir.path(), "mixed", &source, &tables);

    let plan = plan_json(&manifest, &["--sample", "20000"]);
    let est = &plan["estimate"];
    assert_eq!(est["rows"], events + 4, "rows are counted exactly: {plan}");
    assert_eq!(plan["inputs"].as_array().unwrap().len(), 2);

    let started = Instant::now();
    let summary = run_json(dir.path(), &manifest, &[]);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(summary["state"], "finished", "{summary}");
    let results = summary["results"].as_u64().unwrap();
    let dlq = summary["dlq"].as_u64().unwrap();
    assert_eq!(results + dlq, events + 4, "{summary}");
    // Plan against the run: routes within 3 % (from a sample), DLQ within a
    // few points, duration within a factor of 4.
    let est_results = est["routes"]["fraud"].as_u64().unwrap();
    let actual = summary["routes"]["fraud"].as_u64().unwrap();
    assert!(
        (est_results as f64 - actual as f64).abs() <= 0.03 * actual as f64,
        "routes: planned {est_results}, ran {actual}"
    );
    let est_dlq = est["dlq"].as_u64().unwrap() as f64;
    assert!((est_dlq - dlq as f64).abs() <= 0.01 * events as f64, "dlq: planned {est_dlq}, ran {dlq}");
    let est_secs = est["seconds"].as_f64().unwrap();
    let ran_secs = summary["seconds"].as_f64().unwrap();
    eprintln!("plan {est_secs:.2} s, run {ran_secs:.2} s (process {took:.2} s)");
    assert!(
        est_secs > ran_secs / 4.0 && est_secs < ran_secs * 4.0,
        "duration: planned {est_secs:.2} s, ran {ran_secs:.2} s"
    );

    // The CSV's bad rows: a field count, and a number that is not one.
    let out = tables.join("backfills/mixed");
    let csv_src = std::fs::canonicalize(input.join("b.csv")).unwrap();
    let csv_src = csv_src.display();
    assert_eq!(sql_i64(&out, &format!("SELECT count(*) FROM predictions WHERE source_topic = '{csv_src}'")), 2);
    assert_eq!(
        sql_i64(
            &out,
            &format!(
                "SELECT count(*) FROM dlq WHERE source_topic = '{csv_src}' AND source_offset = 2 AND error_class = \
                 'unreadable' AND error_message LIKE '%row 3 (line 4) has 4 fields, the header has 6%'"
            )
        ),
        1
    );
    assert_eq!(
        sql_i64(
            &out,
            &format!(
                "SELECT count(*) FROM dlq WHERE source_topic = '{csv_src}' AND source_offset = 1 AND error_class = \
                 'wrong_type' AND run_id = 'mixed'"
            )
        ),
        1
    );
}

/// Produces `n` records to each partition of `topic`, with timestamps
/// `t0_ms + i * 1000` (i the offset).
fn produce_timed(bootstrap: &str, topic: &str, partitions: i32, n: i64, t0_ms: i64) {
    // Multi-record batches, as real producers write them: a range that
    // starts or ends inside a batch must still be exact.
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "20").create().unwrap();
    let mut gen = 0;
    for p in 0..partitions {
        for i in 0..n {
            let payload = format!(
                "{{\"txn_id\": \"k-{p}-{i}\", \"amount\": {}.5, \"hour\": {}, \"channel\": \"web\"}}",
                10 + i % 50,
                i % 24
            );
            let key = format!("k-{p}-{i}");
            let mut rec = BaseRecord::to(topic).partition(p).key(&key).payload(&payload).timestamp(t0_ms + i * 1000);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((e, back)) => {
                        assert!(matches!(e, rdkafka::error::KafkaError::MessageProduction(_)), "{e}");
                        producer.poll(Duration::from_millis(10));
                        rec = back;
                    }
                }
            }
            gen += 1;
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(gen, partitions as i64 * n);
}

#[test]
fn kafka_offset_and_time_ranges_on_a_real_broker_read_exactly_their_records() {
    let bootstrap = crate::broker::bootstrap();
    let topic = unique("backfill-range");
    create_topics(&bootstrap, &[(&topic, 2)]);
    let t0 = 1_780_000_000_000i64; // 2026-05-28T...
    produce_timed(&bootstrap, &topic, 2, 200, t0);
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");

    // Offsets, per partition.
    let source = format!(
        "  type: kafka\n  bootstrap_servers: {bootstrap}\n  topic: {topic}\n  start: {{offsets: {{0: 10, 1: 20}}}}\n  \
         end: {{offsets: {{0: 60, 1: 110}}}}"
    );
    let manifest = write_backfill(dir.path(), "by-offset", &source, &tables);
    let plan = plan_json(&manifest, &[]);
    assert_eq!(plan["estimate"]["rows"], 140, "{plan}");
    let summary = run_json(dir.path(), &manifest, &[]);
    assert_eq!(summary["results"], 140, "{summary}");
    let out = tables.join("backfills/by-offset");
    let q = |sql: &str| sql_i64(&out, sql);
    assert_eq!(q("SELECT min(source_offset) FROM predictions WHERE source_partition = 0"), 10);
    assert_eq!(q("SELECT max(source_offset) FROM predictions WHERE source_partition = 0"), 59);
    assert_eq!(q("SELECT min(source_offset) FROM predictions WHERE source_partition = 1"), 20);
    assert_eq!(q("SELECT max(source_offset) FROM predictions WHERE source_partition = 1"), 109);
    assert_eq!(q("SELECT count(DISTINCT lineage_id) FROM predictions"), 140);
    // Run again: nothing new.
    run_ok(&["backfill", "run", manifest.to_str().unwrap()]);
    assert_eq!(q("SELECT count(*) FROM predictions"), 140);

    // Times: [t0 + 50 s, t0 + 80 s) is offsets 50..79 of each partition.
    let iso = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339();
    let source = format!(
        "  type: kafka\n  bootstrap_servers: {bootstrap}\n  topic: {topic}\n  start: {{time: \"{}\"}}\n  end: {{time: \
         \"{}\"}}",
        iso(t0 + 50_000),
        iso(t0 + 80_000)
    );
    // Into the main tables, this one.
    let manifest = write_backfill(dir.path(), "by-time", &source, &tables);
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{text}  tables: main\n")).unwrap();
    let summary = run_json(dir.path(), &manifest, &[]);
    assert_eq!(summary["results"], 60, "{summary}");
    let out = tables.clone();
    assert_eq!(sql_i64(&out, "SELECT count(*) FROM predictions WHERE run_id = 'by-time'"), 60);
    assert_eq!(sql_i64(&out, "SELECT min(source_offset) FROM predictions"), 50);
    assert_eq!(sql_i64(&out, "SELECT max(source_offset) FROM predictions"), 79);
    assert_eq!(
        sql_i64(
            &out,
            &format!("SELECT count(*) FROM predictions WHERE kafka_timestamp < TIMESTAMP '{}'", iso(t0 + 50_000))
        ),
        0
    );
}

#[test]
fn files_on_an_s3_server_are_listed_by_glob_and_read_and_an_unreachable_store_is_named() {
    let s3 = crate::peers::moto();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("a.jsonl");
    run_ok(&["generate", "--events", "3000", "--out", local.to_str().unwrap(), "--malformed-rate", "0"]);
    let parquet = dir.path().join("b.parquet");
    run_ok(&["generate", "--events", "2000", "--out", parquet.to_str().unwrap(), "--seed", "7"]);
    let bucket = unique("hist").to_lowercase();
    let upload = format!(
        "import boto3,sys\ns3=boto3.client('s3',endpoint_url='{url}',aws_access_key_id='test',aws_secret_access_key='test',\
         region_name='us-east-1')\ns3.create_bucket(Bucket='{bucket}')\ns3.upload_file(sys.argv[1],'{bucket}','2026/q3/a.jsonl')\n\
         s3.upload_file(sys.argv[2],'{bucket}','2026/q3/b.parquet')\ns3.put_object(Bucket='{bucket}',Key='2026/q4/c.jsonl',Body=b'{{}}')\n",
        url = s3.url
    );
    let ok = Command::new(crate::peers::peers_bin("python"))
        .args(["-c", &upload, local.to_str().unwrap(), parquet.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success(), "uploading to the S3 server");
    let tables = dir.path().join("tables");
    let options = format!(
        "  storage_options: {{aws_endpoint: \"{}\", aws_allow_http: \"true\", aws_region: us-east-1, aws_access_key_id: \
         test, aws_secret_access_key: test}}",
        s3.url
    );
    let source = format!("  type: files\n  paths: [\"s3://{bucket}/2026/q3/*\"]\n{options}");
    let manifest = write_backfill(dir.path(), "from-s3", &source, &tables);
    let plan = plan_json(&manifest, &[]);
    let inputs = plan["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 2, "q4 is outside the glob: {plan}");
    assert_eq!(inputs[0]["source"], format!("s3://{bucket}/2026/q3/a.jsonl"));
    let parquet_rows = inputs[1]["end"].as_u64().unwrap();
    assert!(parquet_rows > 1900 && parquet_rows <= 2000, "{plan}");
    let summary = run_json(dir.path(), &manifest, &[]);
    assert_eq!(
        summary["results"].as_u64().unwrap() + summary["dlq"].as_u64().unwrap(),
        3000 + parquet_rows,
        "{summary}"
    );

    // A store nobody answers at: the error names it.
    let source = format!(
        "  type: files\n  paths: [\"s3://{bucket}/2026/q3/*\"]\n{}",
        options.replace(&s3.url, "http://127.0.0.1:9")
    );
    let manifest = write_backfill(dir.path(), "nowhere", &source, &tables);
    let out = switchyard(&["backfill", "plan", manifest.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("s3://{bucket}")) && err.contains("listing"), "{err}");
}

#[test]
fn ctrl_c_stops_a_backfill_cleanly_and_the_same_command_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tx.jsonl");
    let rows = 400_000u64;
    run_ok(&["generate", "--events", &rows.to_string(), "--out", input.to_str().unwrap()]);
    let tables = dir.path().join("tables");
    let source = format!("  type: files\n  paths: [\"{}\"]", input.display());
    let manifest = write_backfill(dir.path(), "interrupted", &source, &tables);
    let out = tables.join("backfills/interrupted");
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["backfill", "run", manifest.to_str().unwrap(), "--progress-secs", "0"])
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while durable_rows(&out) < 20_000 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "Ctrl-C is a clean stop: {stderr}");
    assert!(stderr.contains("interrupted at") && stderr.contains("resumes it"), "{stderr}");
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_backfill/interrupted.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "interrupted");
    let done = durable_rows(&out);
    assert!(done < rows, "stopped early ({done} rows durable)");

    let summary = run_json(dir.path(), &manifest, &[]);
    assert_eq!(summary["state"], "finished");
    assert_eq!(summary["attempts"], 2);
    assert_eq!(summary["results"].as_u64().unwrap() + summary["dlq"].as_u64().unwrap(), rows, "{summary}");
    let n = sql_i64(&out, "SELECT count(*) FROM predictions") + sql_i64(&out, "SELECT count(*) FROM dlq");
    assert_eq!(n, rows as i64, "nothing lost or repeated across the stop");
}

#[test]
fn an_avro_container_file_scores_as_the_same_events_in_json_lines_even_for_a_registry_format_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let jsonl = input.join("events.jsonl");
    run_ok(&["generate", "--events", "3000", "--out", jsonl.to_str().unwrap(), "--malformed-rate", "0"]);
    let avro = input.join("events.avro");
    let out = Command::new(python())
        .arg(repo().join("tests/peers/avro_file.py"))
        .args(["--events", jsonl.to_str().unwrap(), "--out", avro.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "avro_file.py: {}", String::from_utf8_lossy(&out.stderr));

    // The Avro backfill's pipeline reads `avro` from a registry on Kafka; a
    // file's rows are read as the file's own format, so that registry (here
    // one that does not exist) is never asked.
    let pipeline = std::fs::read_to_string(repo().join("pipelines/fraud.yaml")).unwrap();
    let from = "schema:\n  id: card_txn\n";
    assert!(pipeline.contains(from));
    let pipeline = pipeline
        .replace(from, &format!("{from}  format: avro\n  registry: {{url: \"http://127.0.0.1:9/none\"}}\n"))
        .replace("registry: models", &format!("registry: {}", repo().join("pipelines/models").display()))
        .replace("path: ../data/tables", &format!("path: {}", dir.path().join("unused").display()));
    let avro_pipeline = dir.path().join("fraud-avro.yaml");
    std::fs::write(&avro_pipeline, pipeline).unwrap();

    let mut tables = Vec::new();
    for (name, path, pipeline) in
        [("from-jsonl", &jsonl, repo().join("pipelines/fraud.yaml")), ("from-avro", &avro, avro_pipeline.clone())]
    {
        let t = dir.path().join(format!("tables-{name}"));
        let manifest =
            write_backfill(dir.path(), name, &format!("  type: files\n  paths: [\"{}\"]", path.display()), &t);
        let text = std::fs::read_to_string(&manifest).unwrap();
        let text =
            text.replace(&repo().join("pipelines/fraud.yaml").display().to_string(), &pipeline.display().to_string());
        std::fs::write(&manifest, text).unwrap();
        let plan = plan_json(&manifest, &[]);
        assert_eq!(plan["estimate"]["rows"], 3000, "{plan}");
        let summary = run_json(dir.path(), &manifest, &[]);
        assert_eq!(summary["state"], "finished", "{summary}");
        assert_eq!(summary["dlq"], 0, "{summary}");
        tables.push(t.join(format!("backfills/{name}")));
    }
    let rows = |t: &Path| {
        sql_json(
            t,
            "SELECT key, score, label, route, rule_id, arrow_cast(features, 'Utf8') AS f, source_offset \
             FROM predictions ORDER BY key",
        )
    };
    let (json_rows, avro_rows) = (rows(&tables[0]), rows(&tables[1]));
    assert_eq!(json_rows.len(), 3000);
    assert_eq!(avro_rows, json_rows, "row for row, the same predictions and row numbers");
}
