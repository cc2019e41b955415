//! Helpers shared by the test modules.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
pub use switchyard_sink::TableRoot;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running switchyard")
}

pub struct Topics {
    pub input: String,
    pub results: String,
    pub dlq: String,
    pub group: String,
}

impl Topics {
    pub fn new(test: &str) -> Self {
        Self {
            input: unique(&format!("{test}-in")),
            results: unique(&format!("{test}-results")),
            dlq: unique(&format!("{test}-dlq")),
            group: unique(&format!("{test}-group")),
        }
    }
}

/// The shipped fraud manifest, pointed at the test's topics, broker and tables.
pub fn write_manifest(dir: &Path, t: &Topics, bootstrap: &str, tables: &Path, roll_max_rows: usize) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("pipelines/fraud.yaml")).unwrap();
    let text = text
        .replace("bootstrap_servers: 127.0.0.1:9092", &format!("bootstrap_servers: {bootstrap}"))
        .replace("topics: [transactions]", &format!("topics: [{}]", t.input))
        .replace("group_id: switchyard-fraud", &format!("group_id: {}", t.group))
        .replace("registry: models", &format!("registry: {}", repo().join("pipelines/models").display()))
        .replace("results_topic: predictions", &format!("results_topic: {}", t.results))
        .replace("dlq_topic: transactions-dlq", &format!("dlq_topic: {}", t.dlq))
        .replace("path: ../data/tables", &format!("path: {}", tables.display()))
        .replace("roll_max_rows: 50000", &format!("roll_max_rows: {roll_max_rows}"))
        .replace("roll_interval_ms: 2000", "roll_interval_ms: 300");
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Sets `sinks.kafka.delivery: exactly_once` in a manifest from
/// [`write_manifest`], with `extra` lines under `sinks.kafka`. A killed
/// worker's open transaction holds `read_committed` readers back until the
/// broker aborts it: after 10 s here (librdkafka's default is 60 s).
pub fn set_exactly_once(manifest: &Path, t: &Topics, extra: &str) {
    let text = std::fs::read_to_string(manifest).unwrap();
    let from = format!("    dlq_topic: {}\n", t.dlq);
    assert!(text.contains(&from));
    let eos = "    delivery: exactly_once\n    delivery_timeout_ms: 10000\n    \
               properties: {transaction.timeout.ms: \"10000\"}\n";
    let text = text.replace(&from, &format!("{from}{eos}{extra}"));
    std::fs::write(manifest, text).unwrap();
}

/// Rows of the committed roll manifests (`*.json`) in `rolls` (a table
/// root's `_rolls`); manifests being renamed meanwhile are left out.
pub fn durable_rows(rolls: impl Into<TableRoot>) -> u64 {
    let rolls = rolls.into();
    let Ok(entries) = rolls.list("") else { return 0 };
    entries
        .iter()
        .filter(|e| e.rel.ends_with(".json"))
        .filter_map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&rolls.get(&e.rel).ok()??).ok()?;
            v["rows"].as_u64()
        })
        .sum()
}

/// Files in a table root's `_rolls` with extension `ext` (`json`: committed
/// rolls; `prepared`: rolls waiting for their transaction).
pub fn roll_files(tables: impl Into<TableRoot>, ext: &str) -> usize {
    let suffix = format!(".{ext}");
    tables.into().list("_rolls").map(|v| v.iter().filter(|e| e.rel.ends_with(&suffix)).count()).unwrap_or(0)
}

pub fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<_> = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let new: Vec<_> = topics.iter().map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1))).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for r in rt.block_on(admin.create_topics(&new, &AdminOptions::new())).unwrap() {
        r.unwrap();
    }
}

/// Valid synthetic events (from `switchyard generate`) with known-bad
/// payloads at known places. Returns (payloads, number of bad ones).
pub fn mixed_input(dir: &Path, valid: usize) -> (Vec<Vec<u8>>, usize) {
    let file = dir.join("valid.jsonl");
    let out = switchyard(&[
        "generate",
        "--events",
        &valid.to_string(),
        "--out",
        file.to_str().unwrap(),
        "--malformed-rate",
        "0",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let good: Vec<Vec<u8>> =
        std::fs::read(&file).unwrap().split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    assert_eq!(good.len(), valid);
    let bad: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        b"[1,2,3]".to_vec(),
        br#"{"txn_id":"x1","hour":3}"#.to_vec(),
        br#"{"txn_id":"x2","amount":"lots","hour":3}"#.to_vec(),
        br#"{"txn_id":"x3","amount":12.5,"hour":"noon"}"#.to_vec(),
        Vec::new(),
    ];
    let mut all = Vec::with_capacity(valid + bad.len());
    let step = valid / bad.len();
    let mut bad_iter = bad.iter();
    for (i, g) in good.into_iter().enumerate() {
        if i % step == step / 2 {
            if let Some(b) = bad_iter.next() {
                all.push(b.clone());
            }
        }
        all.push(g);
    }
    let n_bad = all.len() - valid;
    (all, n_bad)
}

pub fn produce(bootstrap: &str, topic: &str, payloads: &[Vec<u8>]) {
    produce_keyed(bootstrap, topic, payloads, 0);
}

/// Produces `payloads` with keys `k{first}`, `k{first + 1}`, …
fn produce_keyed(bootstrap: &str, topic: &str, payloads: &[Vec<u8>], first: usize) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys: Vec<String> = (first..first + payloads.len()).map(|i| format!("k{i}")).collect();
    rt.block_on(async {
        let mut futs = Vec::new();
        for (p, key) in payloads.iter().zip(&keys) {
            let mut rec = FutureRecord::to(topic).key(key);
            if !p.is_empty() {
                rec = rec.payload(p);
            }
            futs.push(producer.send(rec, Duration::from_secs(10)));
            if futs.len() == 5000 {
                for f in futures::future::join_all(futs.drain(..)).await {
                    f.unwrap();
                }
            }
        }
        for f in futures::future::join_all(futs).await {
            f.unwrap();
        }
    });
}

/// Produces `payloads` in a thread, in `slices` equal parts one `every`
/// apart (traffic that lasts through what a test does meanwhile).
pub fn produce_over(
    bootstrap: &str,
    topic: &str,
    payloads: Vec<Vec<u8>>,
    slices: usize,
    every: Duration,
) -> std::thread::JoinHandle<()> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    std::thread::spawn(move || {
        let size = payloads.len().div_ceil(slices.max(1)).max(1);
        for (i, part) in payloads.chunks(size).enumerate() {
            if i > 0 {
                std::thread::sleep(every);
            }
            produce_keyed(&bootstrap, &topic, part, i * size);
        }
    })
}

/// What a topic holds, read back with a fresh consumer group.
pub struct TopicContents {
    /// Records read.
    pub records: usize,
    /// Next offset after the last record, per partition.
    pub end_offsets: HashMap<i32, i64>,
    /// Distinct message keys.
    pub keys: std::collections::HashSet<Vec<u8>>,
    /// Headers of the first record.
    pub first_headers: Vec<(String, String)>,
}

/// Reads `topic` from the start up to its high watermarks (as they were
/// when the read began), partition by partition.
pub fn read_topic(bootstrap: &str, topic: &str) -> TopicContents {
    use rdkafka::message::{Headers, Message};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let meta = c.fetch_metadata(Some(topic), timeout).unwrap();
    let partitions: Vec<i32> = meta.topics()[0].partitions().iter().map(|p| p.id()).collect();
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    let mut left: HashMap<i32, i64> = HashMap::new();
    let mut out =
        TopicContents { records: 0, end_offsets: HashMap::new(), keys: Default::default(), first_headers: vec![] };
    for p in partitions {
        let (low, high) = c.fetch_watermarks(topic, p, timeout).unwrap();
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low)).unwrap();
            left.insert(p, high);
            out.end_offsets.insert(p, high);
        }
    }
    c.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !left.is_empty() {
        assert!(std::time::Instant::now() < deadline, "reading {topic}: partitions {left:?} not read to their end");
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let Some(&high) = left.get(&m.partition()) else { continue };
                if out.records == 0 {
                    out.first_headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_string(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                }
                out.records += 1;
                out.keys.insert(m.key().unwrap_or_default().to_vec());
                if m.offset() + 1 >= high {
                    left.remove(&m.partition());
                }
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Committed offsets of `group` on `topic`, per partition.
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    try_committed(bootstrap, group, topic, partitions, Duration::from_secs(10)).unwrap()
}

/// [`committed`], or the broker's error (its group coordinator may still be
/// starting).
pub fn try_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<HashMap<i32, i64>> {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, timeout)?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Runs `manifest` again until no record has come for 3 s: the restart
/// after a stop or a crash.
pub fn run_until_idle(manifest: &Path) {
    let out = switchyard(&[
        "run",
        manifest.to_str().unwrap(),
        "--idle-exit-ms",
        "3000",
        "--progress-secs",
        "0",
        "--no-create-topics",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The tables hold one prediction for each of `valid` events, no lineage id
/// twice, and `bad` DLQ records.
pub fn assert_exactly_once(tables: impl Into<TableRoot>, valid: usize, bad: usize) {
    let tables = tables.into();
    assert_eq!(sql_i64(&tables, "SELECT count(*) FROM predictions"), valid as i64, "0 lost, 0 duplicated");
    assert_eq!(sql_i64(&tables, "SELECT count(DISTINCT lineage_id) FROM predictions"), valid as i64);
    assert_eq!(sql_i64(&tables, "SELECT count(*) FROM dlq"), bad as i64);
}

/// A local table root.
pub fn root(p: &Path) -> TableRoot {
    p.into()
}

/// Runs a SQL query over the tables and returns the single i64 it yields.
pub fn sql_i64(tables: impl Into<TableRoot>, sql: &str) -> i64 {
    let tables = tables.into();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ctx = switchyard_analysis::catalog::open(&tables).await.unwrap();
        let b = switchyard_analysis::catalog::query(&ctx, sql).await.unwrap();
        let col = b[0].column(0);
        assert_eq!(col.len(), 1);
        col.as_primitive::<Int64Type>().value(0)
    })
}

/// Runs a SQL query over the tables; its rows as JSON objects.
pub fn sql_json(tables: impl Into<TableRoot>, sql: &str) -> Vec<serde_json::Value> {
    let tables = tables.into();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ctx = switchyard_analysis::catalog::open(&tables).await.unwrap();
        let batches = switchyard_analysis::catalog::query(&ctx, sql).await.unwrap();
        let mut w = arrow::json::ArrayWriter::new(Vec::new());
        for b in &batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        let bytes = w.into_inner();
        if bytes.is_empty() {
            return Vec::new();
        }
        serde_json::from_slice(&bytes).unwrap()
    })
}

/// A copy of the committed model registry (`pipelines/models`) at `dest`.
pub fn copy_registry(dest: &Path) {
    let ok = Command::new("cp")
        .args(["-r", repo().join("pipelines/models").to_str().unwrap(), dest.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success(), "copying the registry to {}", dest.display());
}

/// Runs the reference retrainer on `trigger` (written to `dir`) against `registry`.
pub fn retrain(dir: &Path, trigger: &serde_json::Value, registry: &Path) {
    let trigger_file = dir.join("trigger.json");
    std::fs::write(&trigger_file, trigger.to_string()).unwrap();
    let out = Command::new(python())
        .arg(repo().join("pipelines/retrain.py"))
        .args(["--trigger-file", trigger_file.to_str().unwrap(), "--registry", registry.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

pub fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(p.exists(), "Python environment missing: run `make setup`");
    p
}

/// Reads `topic` as a `read_committed` consumer from the start to its high
/// watermarks: only records of committed transactions. The end is found by
/// position (transaction markers take offsets too), and reached once every
/// transaction before it is settled (a killed producer's open one is aborted
/// by the broker after `transaction.timeout.ms`).
pub fn read_committed(bootstrap: &str, topic: &str) -> TopicContents {
    use rdkafka::message::Message;
    let consumer = |isolation: &str| -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation)
            .create()
            .unwrap()
    };
    // A read_committed client's watermark query answers the last stable
    // offset, which an open transaction holds back: ask for the real end.
    let ends = consumer("read_uncommitted");
    let c = consumer("read_committed");
    let timeout = Duration::from_secs(10);
    let meta = c.fetch_metadata(Some(topic), timeout).unwrap();
    let partitions: Vec<i32> = meta.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    let mut out =
        TopicContents { records: 0, end_offsets: HashMap::new(), keys: Default::default(), first_headers: vec![] };
    for p in partitions {
        let (low, high) = ends.fetch_watermarks(topic, p, timeout).unwrap();
        tpl.add_partition_offset(topic, p, Offset::Offset(low)).unwrap();
        out.end_offsets.insert(p, high);
    }
    c.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.records += 1;
                out.keys.insert(m.key().unwrap_or_default().to_vec());
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
        let positions = c.position().unwrap();
        let done = out.end_offsets.iter().all(|(&p, &high)| {
            high == 0
                || positions
                    .find_partition(topic, p)
                    .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= high))
        });
        if done {
            return out;
        }
        assert!(std::time::Instant::now() < deadline, "reading {topic} read_committed: not at its end");
    }
}
