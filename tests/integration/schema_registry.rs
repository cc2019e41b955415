//! Schema Registry formats against a real registry (Apicurio Registry's
//! Confluent-compatible API, `scripts/registry.sh`) and the real broker:
//! records written by the reference client (Python `confluent-kafka` and its
//! Avro, Protobuf and JSON Schema serializers) score exactly as the same
//! events sent as JSON, a writer schema that evolves mid-stream is followed
//! record by record, a Protobuf message nested in a referenced file is read
//! through `from` paths, bad records go to the DLQ naming their schema id, and a registry
//! that fails for a while holds records back instead of losing them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::broker;
use crate::proxy::{Fault, FaultProxy};
use crate::support::*;

/// A registry started in its own folder, stopped when dropped.
struct RegistryServer {
    dir: tempfile::TempDir,
    url: String,
}

impl RegistryServer {
    fn start(auth: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            repo().join("scripts/registry.sh").display().to_string(),
            "start".into(),
            dir.path().display().to_string(),
            "0".into(),
        ];
        if auth {
            args.push("--auth".into());
        }
        let out = Command::new("bash").args(&args).stdin(Stdio::null()).output().expect("scripts/registry.sh");
        assert!(
            out.status.success(),
            "scripts/registry.sh start failed (install it with `make setup-broker`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        RegistryServer { dir, url }
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/registry.sh"))
            .args(["stop", self.dir.path().to_str().unwrap()])
            .stdin(Stdio::null())
            .output();
    }
}

/// `n` generated events without malformed ones, as JSON Lines in `dir`.
fn generated_events(dir: &Path, n: u32) -> PathBuf {
    let events = dir.join("events.jsonl");
    let n = n.to_string();
    let gen = switchyard(&["generate", "--events", &n, "--out", events.to_str().unwrap(), "--malformed-rate", "0"]);
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    events
}

/// Produces `events` with the reference client; its JSON report.
fn produce_with_reference_client(bootstrap: &str, registry: &str, events: &Path, topics: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/peers/registry_produce.py")).args([
        "--bootstrap",
        bootstrap,
        "--registry",
        registry,
        "--events",
        events.to_str().unwrap(),
    ]);
    cmd.args(topics);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "registry_produce.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The fraud manifest on `t`, reading `format` from `registry` (none for JSON).
fn manifest(dir: &Path, t: &Topics, bootstrap: &str, format: &str, registry: Option<&str>, auth: &str) -> PathBuf {
    let tables = dir.join("tables");
    let path = write_manifest(dir, t, bootstrap, &tables, 100_000);
    if let Some(url) = registry {
        let text = std::fs::read_to_string(&path).unwrap();
        let from = "schema:\n  id: card_txn\n";
        assert!(text.contains(from));
        let mut text = text.replace(
            from,
            &format!("{from}  format: {format}\n  registry:\n    url: {url}\n    timeout_ms: 2000\n{auth}"),
        );
        if format == "protobuf" {
            // The Protobuf writer keeps these two in a nested `Geo` message.
            for (field, nested) in [
                ("{name: distance_km, type: float", "{name: distance_km, type: float, from: geo.distance_km"),
                ("{name: country, type: string", "{name: country, type: string, from: geo.country"),
            ] {
                assert!(text.contains(field), "{field}");
                text = text.replace(field, nested);
            }
        }
        std::fs::write(&path, text).unwrap();
    }
    path
}

fn run(manifest: &Path) -> String {
    let out = switchyard(&["run", manifest.to_str().unwrap(), "--idle-exit-ms", "3000", "--progress-secs", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    stderr
}

/// Every prediction's key, score, route and features, in key order.
fn predictions(tables: &Path) -> String {
    let out = switchyard(&[
        "sql",
        "--tables",
        tables.to_str().unwrap(),
        "SELECT key, score, label, route, rule_id, sensitivity, latency_tier, arrow_cast(features, 'Utf8') AS f \
         FROM predictions ORDER BY key",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn avro_protobuf_and_json_schema_records_score_as_their_json_twins_and_bad_ones_go_to_the_dlq() {
    let bootstrap = broker::bootstrap();
    let registry = RegistryServer::start(true);
    let password = registry.dir.path().join("alice.password");
    let auth = format!("    username: alice\n    password: {{file: {}}}\n", password.display());
    let user_info = format!("alice:{}", std::fs::read_to_string(&password).unwrap().trim());
    let dir = tempfile::tempdir().unwrap();
    let events = generated_events(dir.path(), 600);

    let formats = ["json", "avro", "json_schema", "protobuf"];
    let dirs: Vec<tempfile::TempDir> = formats.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let topics: Vec<Topics> = formats.iter().map(|f| Topics::new(&format!("sr-{f}"))).collect();
    for t in &topics {
        create_topics(&bootstrap, &[(&t.input, 2)]);
    }
    let ids = produce_with_reference_client(
        &bootstrap,
        &registry.url,
        &events,
        &[
            "--user-info",
            &user_info,
            "--json-topic",
            &topics[0].input,
            "--avro-topic",
            &topics[1].input,
            "--json-schema-topic",
            &topics[2].input,
            "--protobuf-topic",
            &topics[3].input,
            "--bad",
        ],
    );
    let avro_ids: Vec<u64> = ids["avro_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(avro_ids.len(), 2);
    assert_ne!(avro_ids[0], avro_ids[1], "the writer schema evolved mid-stream");

    let mut tables = Vec::new();
    for ((format, d), t) in formats.iter().zip(&dirs).zip(&topics) {
        let registry_url = (*format != "json").then_some(registry.url.as_str());
        let m = manifest(d.path(), t, &bootstrap, format, registry_url, &auth);
        let stderr = run(&m);
        let secret = std::fs::read_to_string(&password).unwrap();
        assert!(!stderr.contains(secret.trim()), "the registry password is never printed");
        tables.push(d.path().join("tables"));
    }

    // Row for row, the same predictions whatever the encoding.
    let json = predictions(&tables[0]);
    assert!(json.lines().count() > 600, "every row printed:\n{json}");
    assert_eq!(sql_i64(root(&tables[0]), "SELECT count(*) FROM predictions"), 600);
    assert_eq!(predictions(&tables[1]), json, "Avro (two writer schemas) scores as JSON");
    assert_eq!(predictions(&tables[2]), json, "JSON Schema scores as JSON");
    assert_eq!(predictions(&tables[3]), json, "Protobuf (nested, referenced, wrapped, enum) scores as JSON");
    for t in &tables {
        assert_eq!(sql_i64(root(t), "SELECT count(DISTINCT lineage_id) FROM predictions"), 600);
    }

    // The three bad Avro records, each with its class and schema id.
    let avro = root(&tables[1]);
    assert_eq!(sql_i64(avro.clone(), "SELECT count(*) FROM dlq"), 3);
    assert_eq!(sql_i64(avro.clone(), "SELECT count(*) FROM dlq WHERE error_class = 'unframed'"), 1);
    assert_eq!(
        sql_i64(
            avro.clone(),
            "SELECT count(*) FROM dlq WHERE error_class = 'unknown_schema' AND error_message LIKE '%schema id 999999%'"
        ),
        1
    );
    let cut = format!(
        "SELECT count(*) FROM dlq WHERE error_class = 'undecodable' AND error_message LIKE '%schema id {} (subject {}-value)%'",
        avro_ids[0], topics[1].input
    );
    assert_eq!(sql_i64(avro.clone(), &cut), 1);
    assert_eq!(
        sql_i64(avro, "SELECT count(*) FROM dlq WHERE encode(payload, 'hex') LIKE '00000f423f%'"),
        1,
        "the DLQ keeps the original bytes (magic byte, id 999999)"
    );
    for t in [&tables[0], &tables[2]] {
        assert_eq!(sql_i64(root(t), "SELECT count(*) FROM dlq"), 0);
    }

    // The Protobuf record whose message index names no message type.
    let proto = root(&tables[3]);
    assert_eq!(sql_i64(proto.clone(), "SELECT count(*) FROM dlq"), 1);
    let bad_index = format!(
        "SELECT count(*) FROM dlq WHERE error_class = 'unknown_schema' AND error_message LIKE \
         '%message index [7] names no message type in schema id {} (subject {}-value)%'",
        ids["protobuf_id"], topics[3].input
    );
    assert_eq!(sql_i64(proto, &bad_index), 1);
}

#[test]
fn a_failing_registry_holds_records_back_and_loses_none() {
    let bootstrap = broker::bootstrap();
    let registry = RegistryServer::start(false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = registry.url.trim_end_matches("/apis/ccompat/v7").to_string();
    let proxy = rt.block_on(FaultProxy::start(&upstream));
    let dir = tempfile::tempdir().unwrap();
    let events = generated_events(dir.path(), 300);
    let t = Topics::new("sr-faults");
    create_topics(&bootstrap, &[(&t.input, 1)]);
    produce_with_reference_client(&bootstrap, &registry.url, &events, &["--avro-topic", &t.input]);

    // The start-up check passes; then the first schema lookups fail with
    // 503, a dropped connection and a hang past the client's timeout.
    proxy.set_plan(|n| match n {
        0 => Fault::Pass,
        1 | 2 => Fault::Status(503),
        3 => Fault::Drop,
        4 => Fault::Hang,
        _ => Fault::Pass,
    });
    let via_proxy = format!("{}/apis/ccompat/v7", proxy.url());
    let m = manifest(dir.path(), &t, &bootstrap, "avro", Some(&via_proxy), "");
    let stderr = run(&m);
    let tables = dir.path().join("tables");
    assert_eq!(sql_i64(root(&tables), "SELECT count(*) FROM predictions"), 300, "every record scored");
    assert_eq!(sql_i64(root(&tables), "SELECT count(*) FROM dlq"), 0, "none sent to the DLQ for the registry's fault");
    let lookups = proxy.requests().iter().filter(|r| r.path.starts_with("/apis/ccompat/v7/schemas/ids/")).count();
    assert!(lookups >= 5, "the lookup was tried again ({lookups} requests)");
    assert!(stderr.contains("the records that need this schema wait"), "{stderr}");
}

#[test]
fn an_unreachable_registry_or_a_refused_login_stops_the_run_at_start_naming_the_url() {
    let bootstrap = broker::bootstrap();
    let registry = RegistryServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let t = Topics::new("sr-start");
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let cases = [
        (registry.url.clone(), format!("    username: alice\n    password: {{file: {}}}\n", wrong.display()), "401"),
        ("http://127.0.0.1:9/apis/ccompat/v7".to_string(), String::new(), "cannot be reached"),
    ];
    for (url, auth, why) in cases {
        let m = manifest(dir.path(), &t, &bootstrap, "avro", Some(&url), &auth);
        let out = switchyard(&["run", m.to_str().unwrap(), "--idle-exit-ms", "3000", "--progress-secs", "0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the run must not start: {stderr}");
        assert!(stderr.contains(&url) && stderr.contains(why), "names the URL and why: {stderr}");
        assert!(!stderr.contains("not-the-password"), "the password is never printed");
    }
}

#[test]
fn results_as_avro_are_registered_under_the_topic_subject_and_read_by_the_reference_deserializer() {
    let bootstrap = broker::bootstrap();
    let registry = RegistryServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let events = generated_events(dir.path(), 200);
    let t = Topics::new("sr-results");
    create_topics(&bootstrap, &[(&t.input, 2)]);
    produce_with_reference_client(&bootstrap, &registry.url, &events, &["--json-topic", &t.input]);

    // JSON in, Avro out: the registry is named under sinks.kafka.
    let m = manifest(dir.path(), &t, &bootstrap, "json", None, "");
    let text = std::fs::read_to_string(&m).unwrap();
    let dlq = format!("    dlq_topic: {}\n", t.dlq);
    assert!(text.contains(&dlq));
    let avro = format!("{dlq}    value_format: avro\n    registry: {{url: \"{}\"}}\n", registry.url);
    std::fs::write(&m, text.replace(&dlq, &avro)).unwrap();
    run(&m);

    // The reference deserializer reads every result with the registered schema.
    let out = Command::new(python())
        .arg(repo().join("tests/peers/registry_consume.py"))
        .args(["--bootstrap", &bootstrap, "--registry", &registry.url, "--topic", &t.results, "--count", "200"])
        .output()
        .unwrap();
    assert!(out.status.success(), "registry_consume.py: {}", String::from_utf8_lossy(&out.stderr));
    let mut read: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(read.len(), 200);
    read.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    let ids: std::collections::BTreeSet<u64> = read.iter().map(|r| r["schema_id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one schema for every result: {ids:?}");

    // Registered under <results topic>-value (TopicNameStrategy) with that id.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let latest: serde_json::Value = rt.block_on(async {
        let url = format!("{}/subjects/{}-value/versions/latest", registry.url, t.results);
        serde_json::from_str(&reqwest::get(url).await.unwrap().text().await.unwrap()).unwrap()
    });
    assert_eq!(latest["id"].as_u64(), ids.first().copied(), "{latest}");

    // The same results as the Parquet table, lineage as fields.
    let tables = dir.path().join("tables");
    let rows = sql_json(
        root(&tables),
        "SELECT key, score, label, lineage_id, source_topic, source_offset, rule_id, model_version \
         FROM predictions ORDER BY key",
    );
    assert_eq!(rows.len(), 200);
    for (r, row) in read.iter().zip(&rows) {
        let v = &r["value"];
        assert_eq!(r["key"], row["key"]);
        assert_eq!(v["key"], row["key"]);
        assert_eq!(v["score"], row["score"]);
        assert_eq!(v["label"], row["label"]);
        assert_eq!(v["lineage"]["lineage_id"], row["lineage_id"]);
        assert_eq!(v["lineage"]["source_topic"], row["source_topic"]);
        assert_eq!(v["lineage"]["source_offset"], row["source_offset"]);
        assert_eq!(v["lineage"]["route"]["rule_id"], row["rule_id"]);
        assert_eq!(v["lineage"]["model"]["version"], row["model_version"]);
        assert!(v["features"].as_array().is_some_and(|f| !f.is_empty()), "{v}");
    }
}
