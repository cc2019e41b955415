//! Schema Registry formats against a real registry (Apicurio Registry's
//! Confluent-compatible API, `scripts/registry.sh`) and the real broker:
//! records written by the reference client (Python `confluent-kafka` and its
//! Avro and JSON Schema serializers) score exactly as the same events sent
//! as JSON, a writer schema that evolves mid-stream is followed record by
//! record, bad records go to the DLQ naming their schema id, and a registry
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
        let text = text.replace(
            from,
            &format!("{from}  format: {format}\n  registry:\n    url: {url}\n    timeout_ms: 2000\n{auth}"),
        );
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
fn avro_and_json_schema_records_score_as_their_json_twins_and_bad_ones_go_to_the_dlq() {
    let bootstrap = broker::bootstrap();
    let registry = RegistryServer::start(true);
    let password = registry.dir.path().join("alice.password");
    let auth = format!("    username: alice\n    password: {{file: {}}}\n", password.display());
    let user_info = format!("alice:{}", std::fs::read_to_string(&password).unwrap().trim());
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let gen = switchyard(&["generate", "--events", "600", "--out", events.to_str().unwrap(), "--malformed-rate", "0"]);
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));

    let formats = ["json", "avro", "json_schema"];
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
}

#[test]
fn a_failing_registry_holds_records_back_and_loses_none() {
    let bootstrap = broker::bootstrap();
    let registry = RegistryServer::start(false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = registry.url.trim_end_matches("/apis/ccompat/v7").to_string();
    let proxy = rt.block_on(FaultProxy::start(&upstream));
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let gen = switchyard(&["generate", "--events", "300", "--out", events.to_str().unwrap(), "--malformed-rate", "0"]);
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
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
