//! Operating a running worker, against the real programs: a real
//! Prometheus server scrapes `/metrics` during an end-to-end run on the
//! real broker and its query API must agree with the run's own counts;
//! `/healthz` and `/readyz` answer while it runs; SIGTERM under load stops
//! it cleanly (restart: nothing lost, no duplicate row, no duplicate result
//! on the topic); a second signal exits at once and still loses nothing.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::peers;
use crate::support::*;

/// Rows the rolls made durable so far (predictions + DLQ).
fn spawn_run(manifest: &Path, extra: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", manifest.to_str().unwrap(), "--progress-secs", "0", "--no-create-topics"])
        .args(extra)
        .env("RUST_LOG", "warn,switchyard=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: i32) {
    // The `kill` command keeps `unsafe` (libc::kill) out of the tests.
    let ok = Command::new("kill").args([format!("-{sig}"), child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, within: Duration, log: &Path) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("switchyard did not exit within {within:?}\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One value of an instant query through Prometheus's HTTP API (`None`
/// while the result is empty).
fn query(prom: &str, q: &str) -> Option<f64> {
    let url = format!("{prom}/api/v1/query");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let text = rt.block_on(async {
        reqwest::Client::new().get(&url).query(&[("query", q)]).send().await.unwrap().text().await.unwrap()
    });
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "success", "{q}: {body}");
    let result = body["data"]["result"].as_array().unwrap();
    let first = result.first()?;
    first["value"][1].as_str().unwrap().parse().ok()
}

/// Waits until `q` answers `want` (scrapes come every second).
fn wait_for(prom: &str, q: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = query(prom, q);
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "Prometheus: `{q}` = {got:?}, want {want}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn get(port: u16, path: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn prometheus_scrapes_a_running_pipeline_and_agrees_with_its_counts() {
    let bootstrap = crate::broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("metrics");
    create_topics(&bootstrap, &[(&t.input, 3), (&t.results, 3), (&t.dlq, 1)]);
    let valid = 20_000;
    let (payloads, bad) = mixed_input(dir.path(), valid);
    produce(&bootstrap, &t.input, &payloads);
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 2000);
    let port = peers::free_port();
    let prom = peers::prometheus(dir.path(), port);

    let log = dir.path().join("run.log");
    let listen = format!("127.0.0.1:{port}");
    let mut child = spawn_run(&manifest, &["--listen", &listen], &log);
    let total = (valid + bad) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while durable_rows(tables.join("_rolls")) < total {
        assert!(Instant::now() < deadline, "not every row became durable\n{}", std::fs::read_to_string(&log).unwrap());
        assert!(child.try_wait().unwrap().is_none(), "worker exited\n{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }

    // The probes, while it runs.
    assert_eq!(get(port, "/healthz").0, 200);
    let (status, ready) = get(port, "/readyz");
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains(r#""assigned_partitions":3"#), "{ready}");

    // What Prometheus scraped agrees with the run's own counts: events in =
    // results + DLQ, and with the tables.
    let url = &prom.url;
    wait_for(url, "sum(switchyard_records_consumed_total)", total as f64);
    wait_for(url, "count(switchyard_records_consumed_total)", 3.0); // one series per partition
    wait_for(url, "sum(switchyard_events_total)", valid as f64);
    wait_for(url, "sum(switchyard_dlq_records_total)", bad as f64);
    for stage in ["decode", "validate"] {
        let in_table = sql_i64(&tables, &format!("SELECT count(*) FROM dlq WHERE stage = '{stage}'"));
        let q = format!(r#"sum(switchyard_dlq_records_total{{stage="{stage}"}}) or vector(0)"#);
        wait_for(url, &q, in_table as f64);
    }
    wait_for(url, r#"sum(switchyard_events_total{route="fraud",fallback="false"})"#, valid as f64);
    wait_for(url, r#"sum(switchyard_parquet_rows_total{table="predictions"})"#, valid as f64);
    wait_for(url, r#"sum(switchyard_parquet_rows_total{table="dlq"})"#, bad as f64);
    wait_for(url, "sum(switchyard_batch_rows_sum)", valid as f64);
    wait_for(url, r#"sum(switchyard_kafka_records_produced_total)"#, total as f64);
    wait_for(url, "switchyard_consumer_assigned_partitions", 3.0);
    wait_for(url, r#"switchyard_model_info{worker="fraud",model="fraud"}"#, 1.0);
    wait_for(url, r#"count(switchyard_build_info{pipeline="fraud-scoring"} == 1)"#, 1.0);
    // The group's lag (librdkafka statistics, every 5 s) drains to zero.
    wait_for(url, "sum(switchyard_consumer_lag_records)", 0.0);
    wait_for(url, "count(switchyard_consumer_lag_records)", 3.0);
    // Every offset committed is the partition's end.
    let committed = committed(&bootstrap, &t.group, &t.input, 3);
    let sum: i64 = committed.values().sum();
    assert_eq!(sum as u64, total, "{committed:?}");
    wait_for(url, "sum(switchyard_committed_offset)", total as f64);
    assert!(query(url, r#"switchyard_offset_commits_total{outcome="ok"}"#).unwrap() >= 1.0);
    // Durations are histograms, one series per stage.
    for stage in ["decode", "preprocess", "route", "queue_wait", "inference", "sink_write", "roll", "commit"] {
        let q = format!(r#"sum(switchyard_stage_duration_seconds_count{{stage="{stage}"}})"#);
        assert!(query(url, &q).unwrap_or(0.0) > 0.0, "no `{stage}` durations");
    }
    let q = r#"histogram_quantile(0.99, sum by (le) (rate(switchyard_stage_duration_seconds_bucket{stage="inference"}[1m])))"#;
    let _ = query(url, q); // valid PromQL on real buckets (the value depends on timing)

    // Bounded labels: the scrape names no key or lineage id, and every
    // series is one the catalogue declares.
    let (_, text) = get(port, "/metrics");
    assert!(!text.contains("k1234"), "a record key leaked into a label");
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap();
        let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        assert!(
            switchyard_schemas::telemetry::ALL.iter().any(|m| m.name == name || m.name == base),
            "`{name}` is not in the catalogue"
        );
    }
    let series = text.lines().filter(|l| l.starts_with("switchyard_events_total")).count();
    assert!(series <= 4, "{series} series of switchyard_events_total");

    signal(&child, 15);
    let status = wait_exit(&mut child, Duration::from_secs(30), &log);
    assert!(status.success(), "{status}\n{}", std::fs::read_to_string(&log).unwrap());
}

#[test]
fn sigterm_under_load_stops_cleanly_and_a_restart_duplicates_nothing() {
    let bootstrap = crate::broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("sigterm");
    create_topics(&bootstrap, &[(&t.input, 3), (&t.results, 3), (&t.dlq, 1)]);
    let valid = 60_000;
    let (payloads, bad) = mixed_input(dir.path(), valid);
    produce(&bootstrap, &t.input, &payloads);
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 2000);
    let total = (valid + bad) as u64;

    let log = dir.path().join("first.log");
    let mut child = spawn_run(&manifest, &[], &log);
    let deadline = Instant::now() + Duration::from_secs(120);
    while durable_rows(tables.join("_rolls")) < 5_000 {
        assert!(Instant::now() < deadline, "no roll became durable\n{}", std::fs::read_to_string(&log).unwrap());
        assert!(child.try_wait().unwrap().is_none(), "worker exited\n{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&child, 15); // SIGTERM mid-stream
    let status = wait_exit(&mut child, Duration::from_secs(30), &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "a graceful stop exits 0: {status}\n{text}");
    assert!(text.contains("stopping"), "{text}");
    let first = durable_rows(tables.join("_rolls"));
    assert!(first < total, "stopped mid-stream ({first} of {total} rows durable)");
    // Everything durable is committed, nothing beyond it.
    let committed: i64 = committed(&bootstrap, &t.group, &t.input, 3).values().sum();
    assert_eq!(committed as u64, first, "offsets committed = rows made durable at the stop");
    // The audit table tells the run's story.
    let tb = tables.as_path();
    for (event, detail) in [
        ("manifest_loaded", "pipeline.yaml (sha256 "),
        ("policy_loaded", "rules (sha256 "),
        ("partitions_assigned", &format!("{}/0, {}/1, {}/2", t.input, t.input, t.input)),
        ("shutdown_requested", "grace period 30.0 s"),
        ("stopped", "stopped by a signal"),
    ] {
        let q = format!(
            "SELECT count(*) FROM audit WHERE event = '{event}' AND detail LIKE '%{detail}%' \
             AND pipeline = 'fraud-scoring' AND instance LIKE '%/{}'",
            child.id()
        );
        assert_eq!(sql_i64(tb, &q), 1, "audit: {event} with `{detail}`");
    }
    let q = "SELECT count(*) FROM audit WHERE event = 'policy_loaded' AND model_version <> ''";
    assert_eq!(sql_i64(tb, q), 1, "the policy's version");

    run_until_idle(&manifest);
    assert_exactly_once(&tables, valid, bad);
    // A clean stop leaves no duplicate on the results topic either.
    let results = read_topic(&bootstrap, &t.results);
    assert_eq!(results.keys.len(), valid, "every event has a result on the topic");
    assert_eq!(results.records, valid, "no result sent twice");
}

#[test]
fn a_second_signal_exits_at_once_and_loses_nothing() {
    let bootstrap = crate::broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("twice");
    create_topics(&bootstrap, &[(&t.input, 3), (&t.results, 3), (&t.dlq, 1)]);
    let valid = 40_000;
    let (payloads, bad) = mixed_input(dir.path(), valid);
    produce(&bootstrap, &t.input, &payloads);
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 2000);

    let log = dir.path().join("first.log");
    let mut child = spawn_run(&manifest, &[], &log);
    let deadline = Instant::now() + Duration::from_secs(120);
    while durable_rows(tables.join("_rolls")) < 2_000 {
        let ended = child.try_wait().unwrap().is_some();
        assert!(
            !ended && Instant::now() < deadline,
            "no roll became durable\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Ctrl-C twice, as a person presses it: the second once the first is
    // seen. Two signals a millisecond apart may arrive as one (neither the
    // kernel nor Tokio counts a signal that is already pending).
    signal(&child, 2);
    while !std::fs::read_to_string(&log).unwrap().contains("stopping: finishing") {
        assert!(child.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(1));
    }
    signal(&child, 2);
    let status = wait_exit(&mut child, Duration::from_secs(10), &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("second signal; exiting now"), "{text}");

    run_until_idle(&manifest);
    assert_exactly_once(&tables, valid, bad);
}

/// Produces `payloads` with the headers `headers(i)` (key `k<i>`).
fn produce_with_headers(
    bootstrap: &str,
    topic: &str,
    payloads: &[Vec<u8>],
    headers: impl Fn(usize) -> Vec<(String, String)>,
) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys: Vec<String> = (0..payloads.len()).map(|i| format!("k{i}")).collect();
    rt.block_on(async {
        let mut sent = Vec::new();
        for (i, (p, key)) in payloads.iter().zip(&keys).enumerate() {
            let mut h = OwnedHeaders::new();
            for (k, v) in headers(i) {
                h = h.insert(Header { key: &k, value: Some(v.as_bytes()) });
            }
            let mut rec = FutureRecord::to(topic).key(key).headers(h);
            if !p.is_empty() {
                rec = rec.payload(p);
            }
            sent.push(producer.send(rec, Duration::from_secs(10)));
        }
        for f in futures::future::join_all(sent).await {
            f.unwrap();
        }
    });
}

/// Every record of `topic` (one partition or many) by `id(key, headers)`: its headers.
fn headers_by(
    bootstrap: &str,
    topic: &str,
    id: impl Fn(&str, &[(String, String)]) -> String,
) -> std::collections::HashMap<String, Vec<(String, String)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("headers"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let end = read_topic(bootstrap, topic).records;
    c.subscribe(&[topic]).unwrap();
    let mut out = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    while n < end {
        assert!(Instant::now() < deadline, "read {n} of {end} records of {topic}");
        let Some(m) = c.poll(Duration::from_millis(100)) else { continue };
        let m = m.unwrap();
        n += 1;
        let hs = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let hs: Vec<(String, String)> = hs;
        out.insert(id(&String::from_utf8_lossy(m.key().unwrap_or_default()), &hs), hs);
    }
    out
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> &'a str {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no `{name}` in {hs:?}"))
}

#[test]
fn traces_follow_each_event_from_its_record_to_its_result() {
    let bootstrap = crate::broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("traces");
    create_topics(&bootstrap, &[(&t.input, 2), (&t.results, 2), (&t.dlq, 1)]);
    let valid = 600;
    let (payloads, bad) = mixed_input(dir.path(), valid);
    // Records 0, 3, 6, … carry a sampled context, 1, 4, … one that is not
    // sampled, the rest none (they start traces of their own).
    let trace_of = |i: usize| format!("{:032x}", 0x5100_0000_u64 + i as u64);
    let parent_of = |i: usize| format!("{:016x}", 0xa000 + i as u64);
    let ctx = |i: usize| match i % 3 {
        0 => vec![
            ("traceparent".to_string(), format!("00-{}-{}-01", trace_of(i), parent_of(i))),
            ("tracestate".to_string(), "vendor=abc".to_string()),
        ],
        1 => vec![("traceparent".to_string(), format!("00-{}-{}-00", trace_of(i), parent_of(i)))],
        _ => vec![],
    };
    produce_with_headers(&bootstrap, &t.input, &payloads, ctx);
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 2000);
    let receiver = peers::OtlpReceiver::start(dir.path());

    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", manifest.to_str().unwrap(), "--idle-exit-ms", "3000", "--progress-secs", "0"])
        .args(["--no-create-topics"])
        .env("RUST_LOG", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.peer.url)
        .env("OTEL_SERVICE_NAME", "switchyard-test")
        .envs(peers::OtlpReceiver::PROMPT_EXPORT)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spans = receiver.spans();
    assert!(!spans.is_empty(), "no span arrived");
    assert!(spans.iter().all(|s| s["service"] == "switchyard-test"), "OTEL_SERVICE_NAME names the service");
    // Results by the record they answer, DLQ records by the original key.
    let results = headers_by(&bootstrap, &t.results, |_, h| header(h, "switchyard.source").to_string());
    let dead = headers_by(&bootstrap, &t.dlq, |k, _| k.to_string());
    let source = |span: &serde_json::Value| {
        let a = &span["attributes"];
        format!(
            "{}/{}/{}",
            t.input,
            a["messaging.destination.partition.id"].as_str().unwrap(),
            a["messaging.kafka.offset"]
        )
    };
    let name = format!("process {}", t.input);

    let mut checked = 0;
    for i in (0..payloads.len()).step_by(3) {
        let key = format!("k{i}");
        // The record's span: a consumer span, child of the record's context.
        let mine: Vec<&serde_json::Value> =
            spans.iter().filter(|s| s["trace_id"] == trace_of(i) && s["parent_span_id"] == parent_of(i)).collect();
        assert_eq!(mine.len(), 1, "record {i}: {mine:?}");
        let span = mine[0];
        assert_eq!(span["kind"], "SPAN_KIND_CONSUMER");
        assert_eq!(span["name"], name.as_str());
        let a = &span["attributes"];
        assert_eq!(a["messaging.system"], "kafka");
        assert_eq!(a["messaging.operation.type"], "process");
        assert_eq!(a["messaging.destination.name"], t.input.as_str());
        assert_eq!(a["messaging.consumer.group.name"], t.group.as_str());
        assert!(a["messaging.destination.partition.id"].is_string() && a["messaging.kafka.offset"].is_i64(), "{a}");
        // Its result (or DLQ record) carries the span's context on.
        let want = format!("00-{}-{}-01", trace_of(i), span["span_id"].as_str().unwrap());
        match (results.get(&source(span)), dead.get(&key)) {
            (Some(h), None) => {
                assert_eq!(header(h, "traceparent"), want, "result of record {i}");
                assert_eq!(a["switchyard.route"], "fraud");
                checked += 1;
            }
            (None, Some(h)) => {
                assert_eq!(header(h, "traceparent"), want, "DLQ record of record {i}");
                assert_eq!(span["status"], 2, "a DLQ record's span is an error");
                assert!(a["error.type"].is_string(), "{a}");
            }
            other => panic!("record {i}: {other:?}"),
        }
    }
    assert!(checked >= valid / 3 - bad, "{checked} results checked");
    // Not sampled upstream: no span, and the result keeps the context it came with.
    for i in (1..payloads.len()).step_by(3) {
        assert!(!spans.iter().any(|s| s["trace_id"] == trace_of(i)), "record {i} was not sampled");
    }
    let unsampled = results.values().filter(|h| header(h, "traceparent").ends_with("-00")).count();
    assert!(unsampled >= valid / 3 - bad, "{unsampled} results keep their unsampled context");
    for h in results.values().filter(|h| header(h, "traceparent").ends_with("-00")) {
        let tp = header(h, "traceparent");
        assert!(tp.starts_with("00-00000000000000000000000051"), "{tp}: the context it came with");
    }
    // Without a context: a trace of its own, continued by the result.
    let own: Vec<&Vec<(String, String)>> =
        results.values().filter(|h| !header(h, "traceparent").contains("0000000000000000000000005")).collect();
    assert!(own.len() >= valid / 3 - bad, "{} results of records without a context", own.len());
    for h in own {
        let tp = header(h, "traceparent");
        let span_id = &tp[36..52];
        let span = spans.iter().find(|s| s["span_id"] == span_id).unwrap_or_else(|| panic!("no span {span_id}: {tp}"));
        assert_eq!(span["trace_id"], &tp[3..35]);
        assert_eq!(span["parent_span_id"], "", "a root span");
        assert_eq!(source(span), header(h, "switchyard.source"));
    }
    // Batch spans link the records' contexts; stages are their children.
    let batches: Vec<&serde_json::Value> =
        spans.iter().filter(|s| s["attributes"]["messaging.batch.message_count"].is_i64()).collect();
    assert!(!batches.is_empty());
    let linked: usize = batches.iter().map(|b| b["links"].as_array().unwrap().len()).sum();
    assert!(linked > 0, "batch spans link the sampled records");
    assert!(batches.iter().flat_map(|b| b["links"].as_array().unwrap()).any(|l| l["trace_id"] == trace_of(0)));
    for stage in ["prepare", "inference", "sink_write"] {
        let s = spans.iter().find(|s| s["name"] == stage).unwrap_or_else(|| panic!("no `{stage}` span"));
        assert!(batches.iter().any(|b| b["span_id"] == s["parent_span_id"] && b["trace_id"] == s["trace_id"]));
    }
}

/// A server that records what it receives: every `POST` body, in order.
struct Recorder {
    url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    _rt: tokio::runtime::Runtime,
}

impl Recorder {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = got.clone();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/api/v1/lineage",
            axum::routing::post(move |body: axum::body::Bytes| {
                let store = store.clone();
                async move {
                    store.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                    axum::http::StatusCode::CREATED
                }
            }),
        );
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder { url, got, _rt: rt }
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.got.lock().unwrap().clone()
    }
}

fn with_openlineage(manifest: &Path, url: &str, file: &Path, interval_ms: u64) {
    let text = std::fs::read_to_string(manifest).unwrap();
    let text = format!(
        "{text}\nservice:\n  openlineage:\n    url: {url}\n    file: {}\n    namespace: test-ns\n    running_interval_ms: {interval_ms}\n",
        file.display()
    );
    std::fs::write(manifest, text).unwrap();
}

#[test]
fn openlineage_run_events_start_run_and_complete() {
    let bootstrap = crate::broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("lineage");
    create_topics(&bootstrap, &[(&t.input, 2), (&t.results, 2), (&t.dlq, 1)]);
    let (payloads, _) = mixed_input(dir.path(), 3000);
    produce(&bootstrap, &t.input, &payloads);
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 500);
    let recorder = Recorder::start();
    let file = dir.path().join("lineage.jsonl");
    with_openlineage(&manifest, &recorder.url, &file, 300);
    let out = switchyard(&[
        "run",
        manifest.to_str().unwrap(),
        "--idle-exit-ms",
        "2000",
        "--progress-secs",
        "0",
        "--no-create-topics",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = recorder.events();
    let kinds: Vec<&str> = events.iter().map(|e| e["eventType"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"START"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"COMPLETE"), "{kinds:?}");
    assert!(kinds.contains(&"RUNNING"), "a RUNNING event every 300 ms: {kinds:?}");
    let run_id = &events[0]["run"]["runId"];
    assert!(run_id.as_str().is_some_and(|r| r.len() == 36));
    let hash = switchyard_schemas::sha256_hex(&std::fs::read(&manifest).unwrap());
    for e in &events {
        assert_eq!(&e["run"]["runId"], run_id, "one run");
        assert_eq!(e["job"]["namespace"], "test-ns");
        assert_eq!(e["job"]["name"], "fraud-scoring");
        assert_eq!(e["job"]["facets"]["jobType"]["processingType"], "STREAMING");
        assert!(e["schemaURL"].as_str().unwrap().starts_with("https://openlineage.io/spec/"));
        let facet = &e["run"]["facets"]["switchyard_run"];
        assert_eq!(facet["manifestHash"], hash.as_str());
        assert!(facet["policyHash"].as_str().is_some_and(|h| h.len() == 64));
        assert!(facet["_producer"].is_string() && facet["_schemaURL"].is_string());
        let kafka = format!("kafka://{}", bootstrap.split(',').next().unwrap());
        assert_eq!(e["inputs"], serde_json::json!([{"namespace": kafka, "name": t.input}]));
        let outputs: Vec<String> = e["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| format!("{} {}", o["namespace"].as_str().unwrap(), o["name"].as_str().unwrap()))
            .collect();
        for want in [format!("{kafka} {}", t.results), format!("{kafka} {}", t.dlq)] {
            assert!(outputs.contains(&want), "{outputs:?}");
        }
        assert!(outputs.iter().any(|o| o.starts_with("file://") && o.ends_with(" predictions")), "{outputs:?}");
    }
    // The file transport got the same events.
    let lines = std::fs::read_to_string(&file).unwrap();
    assert_eq!(lines.lines().count(), events.len());
}

#[test]
fn openlineage_fail_event_names_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topics::new("lineage-fail");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let manifest = write_manifest(dir.path(), &t, &format!("127.0.0.1:{closed}"), &dir.path().join("tables"), 500);
    let text =
        std::fs::read_to_string(&manifest).unwrap().replace("group_id:", "connect_timeout_ms: 1500\n  group_id:");
    std::fs::write(&manifest, text).unwrap();
    let recorder = Recorder::start();
    with_openlineage(&manifest, &recorder.url, &dir.path().join("lineage.jsonl"), 60_000);
    let out = switchyard(&["run", manifest.to_str().unwrap(), "--progress-secs", "0"]);
    assert!(!out.status.success());
    let events = recorder.events();
    let kinds: Vec<&str> = events.iter().map(|e| e["eventType"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["START", "FAIL"]);
    let error = &events[1]["run"]["facets"]["errorMessage"];
    assert!(error["message"].as_str().unwrap().contains(&format!("127.0.0.1:{closed}")), "{error}");
    assert_eq!(error["programmingLanguage"], "Rust");
}
