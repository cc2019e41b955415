//! Hybrid pipelines through the real binary: `switchyard run` over
//! `pipelines/hybrid.yaml`, whose cloud worker (`kserve_v2`) talks to a
//! second switchyard, `switchyard serve`, serving the same model, either
//! directly or through the fault-injecting proxy of [`crate::proxy`], which
//! records every byte that leaves the pipeline. One test swaps the cloud
//! worker for an `openai` one (the LiteLLM peer of [`crate::peers`]), so
//! that text, not only features, is what leaves.
//!
//! Each test reads back the Parquet tables and checks that every input line
//! is accounted for (a result or a DLQ record, never both, never neither),
//! which worker answered each event and why, and, where the proxy sits in
//! between, what went over the wire.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Float32Type;

use crate::cloud::{card_number, spaced};
use crate::peers::{self, watchdog, LITELLM_KEY};
use crate::proxy::{Fault, FaultProxy};
use crate::support::{repo, sql_i64, switchyard, unique};

/// The environment variable `pipelines/hybrid.yaml` reads its token from.
const TOKEN_ENV: &str = "FRAUD_API_TOKEN";

/// Where the shipped manifest points its cloud worker.
const SHIPPED_URL: &str = "url: http://127.0.0.1:8080";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

// ------------------------------------------------------------ the endpoint

/// A `switchyard serve` child process serving `pipelines/models` on a free
/// port, with a bearer token; stopped when dropped.
struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    url: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(dir: &Path) -> Server {
        let token = unique("token");
        let token_file = dir.join("serve.token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let log = dir.join("serve.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--registry"])
            .arg(repo().join("pipelines/models"))
            .arg("--token-file")
            .arg(&token_file)
            .current_dir(repo())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .expect("starting switchyard serve");
        watchdog(child.id());
        // Its stdout is read to the end on a thread, so that it never blocks
        // on a full pipe; the address comes back over a channel.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("listening on ") {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("switchyard serve printed no address:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
        };
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Server { child, url, token }
    }
}

// ----------------------------------------------------------- the pipeline

/// `pipelines/hybrid.yaml` with its cloud worker at `url` and the model
/// registry at its absolute path, then each `(from, to)` replacement; every
/// `from` must occur, so a change of the shipped manifest breaks the test
/// loudly instead of silently testing something else.
fn manifest(dir: &Path, url: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(repo().join("pipelines/hybrid.yaml")).unwrap();
    let registry = format!("registry: {}", repo().join("pipelines/models").display());
    for (from, to) in [("registry: models", registry.as_str()), (SHIPPED_URL, &format!("url: {url}"))]
        .into_iter()
        .chain(edits.iter().copied())
    {
        assert_eq!(text.matches(from).count(), 1, "`{from}` should occur once in pipelines/hybrid.yaml");
        text = text.replace(from, to);
    }
    let path = dir.join("hybrid.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `manifest` over `input` without a broker; returns the run's JSON
/// summary.
fn run(manifest: &Path, input: &Path, tables: &Path, token: &str) -> serde_json::Value {
    let summary = tables.with_extension("summary.json");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("run")
        .arg(manifest)
        .arg("--input-file")
        .arg(input)
        .arg("--tables")
        .arg(tables)
        .arg("--summary-json")
        .arg(&summary)
        .args(["--no-kafka-sink", "--idle-exit-ms", "1000", "--progress-secs", "0"])
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .env(TOKEN_ENV, token)
        .output()
        .expect("running switchyard");
    assert!(
        out.status.success(),
        "switchyard run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap()
}

/// `switchyard generate` output: `n` events, some carrying personal data,
/// about 1% malformed.
fn generate(dir: &Path, n: usize, pii_rate: f64, seed: u64) -> PathBuf {
    let file = dir.join(format!("generated-{seed}.jsonl"));
    let out = switchyard(&[
        "generate",
        "--events",
        &n.to_string(),
        "--out",
        file.to_str().unwrap(),
        "--pii-rate",
        &pii_rate.to_string(),
        "--malformed-rate",
        "0.01",
        "--seed",
        &seed.to_string(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    file
}

/// The records of a JSON Lines file as the file source reads them: every
/// line, empty ones too, but the newline ending the file.
fn records(input: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(input).unwrap();
    text.strip_suffix('\n').unwrap_or(&text).split('\n').map(str::to_string).collect()
}

/// Writes `lines` as the JSON Lines input file `name`.
fn write_input(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// A well-formed event with a fixed amount; `extra` adds fields.
fn event(txn_id: &str, amount: f64, extra: serde_json::Value) -> String {
    let mut ev = serde_json::json!({
        "txn_id": txn_id, "amount": amount, "currency": "EUR", "merchant_category": "travel", "hour": 14,
        "card_present": false, "distance_km": 12.5, "txn_count_24h": 3, "account_age_days": 900,
        "channel": "web", "country": "NL",
    });
    for (k, v) in extra.as_object().unwrap() {
        ev[k] = v.clone();
    }
    ev.to_string()
}

// ----------------------------------------------------------------- tables

fn query(tables: &Path, sql: &str) -> Vec<RecordBatch> {
    runtime().block_on(async {
        let ctx = switchyard_analysis::catalog::open(&crate::support::root(tables)).await.unwrap();
        switchyard_analysis::catalog::query(&ctx, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    })
}

/// Rows of a query as text, one string per column.
fn rows(tables: &Path, sql: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for b in query(tables, sql) {
        for i in 0..b.num_rows() {
            out.push(b.columns().iter().map(|c| arrow::util::display::array_value_to_string(c, i).unwrap()).collect());
        }
    }
    out
}

/// `count(*)` of results (shadow rows included) matching `filter`.
fn results(tables: &Path, filter: &str) -> i64 {
    sql_i64(tables, &format!("SELECT count(*) FROM predictions WHERE {filter}"))
}

/// Every record of `input` has exactly one outcome: a result that counts
/// (not a shadow copy) or a DLQ record, with no lineage id twice.
fn assert_accounted(tables: &Path, input: &Path) {
    let n = records(input).len() as i64;
    let served = results(tables, "NOT shadow");
    let dlq = sql_i64(tables, "SELECT count(*) FROM dlq");
    assert_eq!(served + dlq, n, "{served} results + {dlq} DLQ records for {n} input records");
    let distinct = sql_i64(
        tables,
        "SELECT count(DISTINCT lineage_id) FROM \
         (SELECT lineage_id FROM predictions WHERE NOT shadow UNION ALL SELECT lineage_id FROM dlq)",
    );
    assert_eq!(distinct, n, "an event has two outcomes, or one has none");
}

/// Feature rows as f32 bit patterns.
type Row = Vec<u32>;

/// `(key, lineage_id, features)` of the results matching `filter`.
fn feature_rows(tables: &Path, filter: &str) -> Vec<(String, String, Row)> {
    let mut out = Vec::new();
    for b in query(tables, &format!("SELECT key, lineage_id, features FROM predictions WHERE {filter}")) {
        let lists = b.column(2).as_list::<i32>();
        for i in 0..b.num_rows() {
            let f = lists.value(i);
            let row = f.as_primitive::<Float32Type>().values().iter().map(|x| x.to_bits()).collect();
            out.push((
                b.column(0).as_string::<i32>().value(i).to_string(),
                b.column(1).as_string::<i32>().value(i).to_string(),
                row,
            ));
        }
    }
    out
}

// ------------------------------------------------------------------- wire

/// The feature rows the proxy saw in inference requests.
fn wire_rows(proxy: &FaultProxy) -> HashSet<Row> {
    let mut out = HashSet::new();
    for p in proxy.posts() {
        let body = p.json();
        let input = &body["inputs"][0];
        let width = input["shape"][1].as_u64().unwrap() as usize;
        let data: Vec<u32> =
            input["data"].as_array().unwrap().iter().map(|x| (x.as_f64().unwrap() as f32).to_bits()).collect();
        assert_eq!(data.len() % width, 0);
        out.extend(data.chunks(width).map(<[u32]>::to_vec));
    }
    out
}

/// Rows in the inference requests the proxy saw.
fn wire_row_count(proxy: &FaultProxy) -> usize {
    proxy.posts().iter().map(|p| p.json()["inputs"][0]["shape"][0].as_u64().unwrap() as usize).sum()
}

/// Asserts no sensitive (pii/regulated) event reached the wire: not its
/// feature row, not its lineage id (request ids derive from lineage ids);
/// and, so that the check can fail, that every cloud answer's row did.
fn assert_only_allowed_rows_left(tables: &Path, proxy: &FaultProxy) {
    let wire = wire_rows(proxy);
    let cloud = feature_rows(tables, "route = 'fraud-cloud' AND NOT shadow");
    assert!(!cloud.is_empty(), "no event was served by the cloud worker");
    for (key, _, row) in &cloud {
        assert!(wire.contains(row), "{key} was answered by fraud-cloud, but its features are not on the wire");
    }
    let sensitive = feature_rows(tables, "sensitivity IN ('pii', 'regulated')");
    assert!(!sensitive.is_empty(), "the input has no sensitive events");
    let requests = proxy.requests();
    for (key, lineage_id, row) in &sensitive {
        assert!(!wire.contains(row), "features of sensitive event {key} reached the endpoint");
        let sent = requests.iter().filter(|r| r.contains(lineage_id)).count();
        assert_eq!(sent, 0, "the lineage id of sensitive event {key} reached the endpoint");
    }
}

// ------------------------------------------------------------------ tests

/// The shipped hybrid manifest against another switchyard's `serve`:
/// non-sensitive events are answered remotely, personal and regulated ones
/// and the realtime tier locally, and for the same features the remote
/// answer is the local one (shadow rows carry both for one lineage id).
#[test]
fn kserve_worker_against_switchyard_serve() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let m = manifest(dir.path(), &server.url, &[]);
    let mut lines = records(&generate(dir.path(), 2000, 0.2, 11));
    // The realtime tier stays local (its fallback would be the cloud).
    for i in 0..20 {
        lines.insert(
            i * 97,
            event(&format!("rt-{i:03}"), 40.0 + i as f64, serde_json::json!({"latency_tier": "realtime"})),
        );
    }
    let input = write_input(dir.path(), "kserve.jsonl", &lines);
    let tables = dir.path().join("tables");
    let summary = run(&m, &input, &tables, &server.token);
    let t = tables.as_path();

    assert_accounted(t, &input);
    // Only malformed records went to the DLQ: every event had a worker.
    assert_eq!(sql_i64(t, "SELECT count(*) FROM dlq WHERE stage IN ('route', 'infer')"), 0);
    assert!(sql_i64(t, "SELECT count(*) FROM dlq") > 0, "the input has malformed records");

    // Non-sensitive standard-tier events: answered by the endpoint, first time.
    let default = results(t, "NOT shadow AND rule_id = 'default'");
    assert!(default > 1000, "{default} events took the default rule");
    let remote = results(
        t,
        "NOT shadow AND rule_id = 'default' AND route = 'fraud-cloud' AND NOT fallback \
         AND provider LIKE 'kserve_v2 http://127.0.0.1:%' AND model_request_id LIKE 'sy-%'",
    );
    assert_eq!(remote, default, "every non-sensitive event is answered by fraud-cloud, without fallback");
    let stayed = results(
        t,
        "NOT shadow AND sensitivity IN ('public', 'internal') AND route <> 'fraud-cloud' \
         AND latency_tier <> 'realtime'",
    );
    assert_eq!(stayed, 0, "events that may leave and are not realtime stayed local");
    // Personal and regulated data, and the realtime tier: the local model.
    let sensitive = results(t, "NOT shadow AND sensitivity IN ('pii', 'regulated')");
    assert!(sensitive > 200, "{sensitive} sensitive events");
    assert_eq!(
        results(t, "NOT shadow AND sensitivity IN ('pii', 'regulated') AND route = 'fraud' AND NOT fallback"),
        sensitive
    );
    assert_eq!(results(t, "NOT shadow AND rule_id IN ('pii-local', 'regulated-local')"), sensitive);
    assert_eq!(results(t, "NOT shadow AND key LIKE 'rt-%' AND route = 'fraud' AND rule_id = 'realtime-local'"), 20);
    assert_eq!(results(t, "fallback"), 0);

    // Shadow copies: 5% of the cloud answers, scored again locally.
    let shadows = results(t, "shadow");
    assert!(shadows >= 20, "{shadows} shadow rows of {default} cloud answers at 5%");
    assert_eq!(results(t, "shadow AND route = 'fraud'"), shadows);
    let pairs = rows(
        t,
        "SELECT p.key, p.score, s.score, p.label, s.label FROM predictions p JOIN predictions s \
         ON p.lineage_id = s.lineage_id WHERE NOT p.shadow AND s.shadow AND p.route = 'fraud-cloud'",
    );
    assert_eq!(pairs.len() as i64, shadows, "every shadow row pairs with the cloud answer of its event");
    let mut worst = 0f64;
    for r in &pairs {
        let (cloud, local): (f64, f64) = (r[1].parse().unwrap(), r[2].parse().unwrap());
        worst = worst.max((cloud - local).abs());
        assert!((cloud - local).abs() <= 1e-6, "{}: cloud score {cloud}, local score {local}", r[0]);
        assert_eq!(r[3], r[4], "{}: cloud label {} vs local {}", r[0], r[3], r[4]);
    }
    // Scores vary, so equal scores are not an accident of a constant model.
    let distinct: HashSet<&str> = pairs.iter().map(|r| r[1].as_str()).collect();
    assert!(distinct.len() > pairs.len() / 2, "{} distinct scores in {} pairs", distinct.len(), pairs.len());
    eprintln!("{} shadow pairs, largest score difference {worst:e}", pairs.len());

    assert_eq!(summary["by_route"]["fraud-cloud"].as_i64(), Some(default));
}

/// The proxy answers with a sustained burst of 503s after the first few
/// requests: the circuit opens and the rest of the traffic falls back to
/// the local model, with the reason on each row; nothing is lost, and no
/// personal or regulated event ever reaches the proxy.
#[test]
fn open_circuit_falls_back_to_the_local_model() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(&server.url));
    // Request 0 is the start-up readiness check; two inference requests
    // pass, then every request fails.
    proxy.set_plan(|n| if n < 3 { Fault::Pass } else { Fault::Status(503) });
    let m = manifest(dir.path(), &proxy.url(), &[]);
    let input = generate(dir.path(), 2000, 0.2, 12);
    let tables = dir.path().join("tables");
    run(&m, &input, &tables, &server.token);
    let t = tables.as_path();

    assert_accounted(t, &input);
    assert_eq!(sql_i64(t, "SELECT count(*) FROM dlq WHERE stage IN ('route', 'infer')"), 0, "nothing lost");
    let default = results(t, "NOT shadow AND rule_id = 'default'");
    let remote = results(t, "NOT shadow AND rule_id = 'default' AND route = 'fraud-cloud' AND NOT fallback");
    let fell_back = results(t, "NOT shadow AND rule_id = 'default' AND route = 'fraud' AND fallback");
    assert!(remote > 0, "the requests before the burst were answered remotely");
    assert!(fell_back > default / 2, "{fell_back} of {default} events fell back");
    assert_eq!(remote + fell_back, default);
    let circuit = results(
        t,
        "NOT shadow AND fallback AND route = 'fraud' AND route_reason LIKE '%fallback to `fraud`%' \
         AND route_reason LIKE '%worker `fraud-cloud`: circuit open%'",
    );
    assert!(circuit > 0, "no fallback row names the open circuit");
    // Requests that met the 503s were retried until the circuit opened, so
    // their events name the circuit too; every fallback says why.
    let explained = results(
        t,
        "fallback AND (route_reason LIKE '%worker `fraud-cloud`: circuit open%' \
         OR route_reason LIKE '%worker `fraud-cloud` failed: HTTP 503%')",
    );
    assert_eq!(explained, fell_back);
    assert_eq!(results(t, "NOT shadow AND sensitivity IN ('pii', 'regulated') AND route <> 'fraud'"), 0);

    // Open means open: far fewer requests than the events would need.
    let posts = proxy.posts().len();
    assert!(posts < 20, "{posts} requests reached the failing endpoint");
    assert!(proxy.posts().iter().all(|p| p.header("authorization") == Some(&*format!("Bearer {}", server.token))));
    assert_only_allowed_rows_left(t, &proxy);
    // The audit table says when the circuit opened, and why.
    let opened = sql_i64(
        t,
        "SELECT count(*) FROM audit WHERE event = 'breaker_opened' AND worker = 'fraud-cloud' \
         AND detail LIKE '%HTTP 503%' AND instance IS NOT NULL",
    );
    assert!(opened >= 1, "no breaker_opened row");
}

/// An unreachable endpoint and no fallback: events that may leave wait at
/// most `max_wait_ms` for it and then go to the DLQ as `no_path`, with a
/// message naming the worker; none is dropped, and events that may not
/// leave are still served locally.
#[test]
fn unreachable_endpoint_without_fallback_goes_to_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let m = manifest(
        dir.path(),
        &format!("http://127.0.0.1:{closed}"),
        &[("      fallback: [fraud]\n", ""), ("max_wait_ms: 5000", "max_wait_ms: 300")],
    );
    let input = generate(dir.path(), 600, 0.2, 13);
    let tables = dir.path().join("tables");
    let summary = run(&m, &input, &tables, "unused");
    let t = tables.as_path();

    assert_accounted(t, &input);
    assert_eq!(results(t, "NOT shadow AND route = 'fraud-cloud'"), 0);
    assert_eq!(results(t, "NOT shadow AND rule_id = 'default'"), 0, "no default-rule event was served");
    let sensitive = results(t, "NOT shadow AND sensitivity IN ('pii', 'regulated') AND route = 'fraud'");
    assert!(sensitive > 50, "{sensitive} sensitive events served locally");

    let infer = sql_i64(t, "SELECT count(*) FROM dlq WHERE stage = 'infer'");
    assert!(infer > 300, "{infer} events in the DLQ for want of a path");
    // Refused connections open the circuit while the first requests are
    // still retrying, so their events find no path either; only a request
    // whose every attempt failed before that would be `inference_failed`.
    let classes = rows(t, "SELECT DISTINCT error_class FROM dlq WHERE stage = 'infer' ORDER BY error_class");
    assert!(classes.iter().all(|c| c[0] == "no_path" || c[0] == "inference_failed"), "unexpected classes {classes:?}");
    let no_path = sql_i64(t, "SELECT count(*) FROM dlq WHERE error_class = 'no_path'");
    assert!(no_path > infer / 2, "{no_path} of {infer} are no_path");
    let named = sql_i64(
        t,
        &format!(
            "SELECT count(*) FROM dlq WHERE error_class = 'no_path' \
             AND error_message LIKE '%worker `fraud-cloud`: circuit open (http://127.0.0.1:{closed})%' \
             AND error_message LIKE '%waited %'"
        ),
    );
    assert_eq!(named, no_path, "every no_path message names the worker, its endpoint and the wait");
    // …and the failure that opened the circuit.
    let cause = sql_i64(
        t,
        "SELECT count(*) FROM dlq WHERE error_class = 'no_path' \
         AND error_message LIKE '%last failure: %connection refused%'",
    );
    assert_eq!(cause, no_path, "every no_path message names the cause");
    let failed_named = sql_i64(
        t,
        "SELECT count(*) FROM dlq WHERE error_class = 'inference_failed' \
         AND error_message LIKE '%worker `fraud-cloud` failed:%'",
    );
    assert_eq!(failed_named, infer - no_path);
    // The DLQ keeps the event itself, to replay it later.
    assert_eq!(sql_i64(t, "SELECT count(*) FROM dlq WHERE stage = 'infer' AND payload IS NULL"), 0);
    assert_eq!(summary["dlq_by_class"]["no_path"].as_i64(), Some(no_path));
}

/// Personal data planted in tagged fields (`customer_email`, `card_number`)
/// and hidden in the free-text `note` of otherwise clean events, among
/// generated events of which many carry personal data: the router classifies
/// every one of them as personal or regulated (the note is scanned), the
/// local model serves them, and not one planted value, feature row or
/// lineage id of theirs is in any byte the endpoint received, while the
/// clean traffic did go there.
#[test]
fn planted_personal_data_never_reaches_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(&server.url));
    let m = manifest(dir.path(), &proxy.url(), &[]);
    let mut lines = records(&generate(dir.path(), 1500, 0.4, 14));

    // (key, planted values as they may appear on the wire, expected class)
    let mut planted: Vec<(String, Vec<String>, &str)> = Vec::new();
    let mut add = |lines: &mut Vec<String>, key: String, fields: serde_json::Value, values: Vec<String>, class| {
        let at = (planted.len() * 53) % lines.len();
        lines.insert(at, event(&key, 100.0 + planted.len() as f64 * 3.17, fields));
        planted.push((key, values, class));
    };
    for i in 0..6 {
        let email = format!("planted.erin.{i}@leak-test.example");
        add(
            &mut lines,
            format!("leak-email-{i}"),
            serde_json::json!({"customer_email": email}),
            vec![email.clone()],
            "pii",
        );
        let card = card_number(300 + i);
        let card_field = if i % 2 == 0 { card.clone() } else { spaced(&card) };
        add(
            &mut lines,
            format!("leak-card-{i}"),
            serde_json::json!({"card_number": card_field}),
            vec![card.clone(), spaced(&card)],
            "regulated",
        );
        let mail = format!("frank.{i}@leak-note.example.org");
        add(
            &mut lines,
            format!("leak-note-email-{i}"),
            serde_json::json!({"note": format!("receipt please to {mail} thanks")}),
            vec![mail],
            "pii",
        );
        let phone = format!("+44 20 7946 0{:03}", 500 + i);
        add(
            &mut lines,
            format!("leak-note-phone-{i}"),
            serde_json::json!({"note": format!("call me back on {phone}")}),
            vec![phone.clone(), phone.replace(' ', "")],
            "pii",
        );
        let note_card = card_number(400 + i);
        add(
            &mut lines,
            format!("leak-note-card-{i}"),
            serde_json::json!({"note": format!("use the spare card {} next time", spaced(&note_card))}),
            vec![note_card.clone(), spaced(&note_card)],
            "regulated",
        );
    }
    let input = write_input(dir.path(), "leak.jsonl", &lines);

    // Every string that must not leave: the planted values and each
    // generated event's e-mail, card number and note.
    let mut secrets: Vec<String> = planted.iter().flat_map(|(_, v, _)| v.clone()).collect();
    let mut generated_sensitive = Vec::new();
    for line in &lines {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(key) = ev.get("txn_id").and_then(|k| k.as_str()) else { continue };
        // Malformed on purpose (no amount, or a word for one): DLQ'd at decoding.
        let well_formed = ev.get("amount").is_some_and(serde_json::Value::is_number);
        let mut sensitive = false;
        for field in ["customer_email", "card_number", "note"] {
            if let Some(v) = ev.get(field).and_then(|v| v.as_str()) {
                secrets.push(v.to_string());
                if field == "card_number" {
                    secrets.push(v.replace(' ', ""));
                }
                // Generated notes with personal data: a phone number or an address.
                sensitive |= field != "note" || v.starts_with("call back on") || v.starts_with("receipt to");
                if let Some(tail) = v.strip_prefix("receipt to ").or(v.strip_prefix("call back on ")) {
                    secrets.push(tail.to_string());
                }
            }
        }
        if sensitive && well_formed && key.starts_with("tx-") {
            generated_sensitive.push(key.to_string());
        }
    }
    assert!(generated_sensitive.len() > 300, "{} generated sensitive events", generated_sensitive.len());

    let tables = dir.path().join("tables");
    run(&m, &input, &tables, &server.token);
    let t = tables.as_path();
    assert_accounted(t, &input);

    // First what matters most: nothing planted reached the wire.
    let seen = proxy.requests();
    let mut leaks = Vec::new();
    for r in &seen {
        for s in &secrets {
            if r.contains(s) {
                leaks.push(format!("request {} carries {s:?}", r.n));
            }
        }
    }
    assert!(leaks.is_empty(), "{} values reached the endpoint:\n{}", leaks.len(), leaks.join("\n"));
    // Cloud traffic did happen, so the search could have found something.
    assert!(proxy.posts().len() >= 5, "{} inference requests", proxy.posts().len());
    assert!(wire_row_count(&proxy) > 500);
    assert_only_allowed_rows_left(t, &proxy);

    // Each planted event: classified by its planted value, served locally.
    for (key, _, class) in &planted {
        let r = rows(
            t,
            &format!(
                "SELECT sensitivity, route, fallback, route_reason FROM predictions WHERE key = '{key}' AND NOT shadow"
            ),
        );
        assert_eq!(r.len(), 1, "{key}: {r:?}");
        assert_eq!((r[0][0].as_str(), r[0][1].as_str(), r[0][2].as_str()), (*class, "fraud", "false"), "{key}: {r:?}");
        assert_eq!(results(t, &format!("key = '{key}' AND shadow")), 0, "{key} has a shadow copy");
    }
    // The note is scanned: an address or phone number in it makes the event personal.
    assert_eq!(results(t, "key LIKE 'leak-note-%' AND rule_id IN ('pii-local', 'regulated-local')"), 18);
    assert!(results(t, "key LIKE 'leak-note-%' AND route_reason LIKE '%detected%in note%'") == 18);
    // Every generated event with personal data: served locally or (never
    // here) DLQ'd, never by the cloud.
    let keys: HashSet<String> = rows(t, "SELECT key FROM predictions WHERE NOT shadow AND route = 'fraud'")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    for key in &generated_sensitive {
        assert!(keys.contains(key), "generated event {key} carries personal data but was not served locally");
    }
}

/// A budget of two requests: once it is spent, the rest of the traffic
/// falls back to the local model, each row naming the budget; the cloud
/// answered exactly the rows it was sent.
#[test]
fn spent_budget_falls_back_to_the_local_model() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(&server.url));
    let m = manifest(dir.path(), &proxy.url(), &[("limit: 0.1,", "limit: 0.002,")]);
    let input = generate(dir.path(), 1000, 0.1, 15);
    let tables = dir.path().join("tables");
    run(&m, &input, &tables, &server.token);
    let t = tables.as_path();

    assert_accounted(t, &input);
    let default = results(t, "NOT shadow AND rule_id = 'default'");
    let remote = results(t, "NOT shadow AND route = 'fraud-cloud'");
    let budget = results(
        t,
        "NOT shadow AND rule_id = 'default' AND route = 'fraud' AND fallback \
         AND route_reason LIKE '%worker `fraud-cloud`: budget of 0.002 per 3600 s spent%'",
    );
    assert!(remote > 0 && budget > 0, "{remote} cloud answers, {budget} budget fallbacks");
    assert_eq!(remote + budget, default);
    // Requests in flight hold their cost, so with `max_concurrency: 4`
    // still no more than the two the budget pays for go out.
    let posts = proxy.posts().len();
    assert_eq!(posts, 2, "{posts} requests for a budget of 2");
    assert_eq!(wire_row_count(&proxy) as i64, remote, "the cloud answered exactly the rows it was sent");
    let exhausted =
        sql_i64(t, "SELECT count(*) FROM audit WHERE event = 'budget_exhausted' AND worker = 'fraud-cloud'");
    assert_eq!(exhausted, 1, "one budget_exhausted row for the one window");
}

/// `pipelines/hybrid.yaml` with its cloud worker replaced by an `openai`
/// chat worker at `url` (the LiteLLM peer, through the proxy) whose prompt
/// carries the event's text fields, `note` among them; `edits` as in
/// [`manifest`].
fn openai_manifest(dir: &Path, url: &str, edits: &[(&str, &str)]) -> PathBuf {
    let shipped = std::fs::read_to_string(repo().join("pipelines/hybrid.yaml")).unwrap();
    let start = shipped.find("  fraud-cloud:\n    type: kserve_v2\n").expect("the fraud-cloud worker");
    let end = start + shipped[start..].find("\n\nsinks:").expect("the sinks after the workers");
    let kserve = shipped[start..end].replace(SHIPPED_URL, &format!("url: {url}"));
    let openai = format!(
        "  fraud-cloud:\n    type: openai\n    url: {url}/v1\n    model: det-chat\n    \
         template: \"Card payment of {{amount}} {{currency}} at a {{merchant_category}} merchant via {{channel}}. \
         Note: {{note}}\"\n    \
         system: Answer with a fraud risk between 0 and 1.\n    max_tokens: 32\n    \
         auth: {{bearer_env: {TOKEN_ENV}}}\n    timeout_ms: 5000\n    max_concurrency: 8\n    max_wait_ms: 300"
    );
    let mut all = vec![(kserve.as_str(), openai.as_str())];
    all.extend_from_slice(edits);
    manifest(dir, url, &all)
}

/// The same protections when what leaves is text: an `openai` worker whose
/// prompt renders `note` and `currency`. Personal data in the scanned note
/// keeps its event local; personal data in a field the policy neither
/// tags nor scans (`currency`) is caught by the last check on the rendered
/// prompt, and the event falls back to the local model, or, without a
/// fallback, goes to the DLQ as `egress_blocked`. Not one of those values
/// is in any byte LiteLLM received, while clean notes are.
#[test]
fn openai_prompts_carry_no_personal_data() {
    let upstream = peers::litellm().url.clone();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(&upstream));
    let mut lines = records(&generate(dir.path(), 200, 0.3, 16));
    let mut secrets = Vec::new();
    let mut in_note = Vec::new();
    let mut in_currency = Vec::new();
    for i in 0..4 {
        let mail = format!("grace.{i}@leak-note.example.org");
        let phone = format!("+44 20 7946 0{:03}", 700 + i);
        let card = card_number(500 + i);
        let notes = [
            format!("receipt please to {mail}"),
            format!("call me back on {phone}"),
            format!("spare card {}", spaced(&card)),
        ];
        for (k, note) in notes.iter().enumerate() {
            let key = format!("leak-note-{i}-{k}");
            lines.insert(i * 37 + k, event(&key, 60.0 + i as f64, serde_json::json!({"note": note})));
            in_note.push(key);
        }
        let value = [mail.replace("grace", "heidi"), phone.replace("0700", "0800"), spaced(&card_number(600 + i))]
            [i % 3]
            .clone();
        let key = format!("leak-currency-{i}");
        lines.insert(i * 41 + 5, event(&key, 70.0 + i as f64, serde_json::json!({"currency": value})));
        in_currency.push(key);
        secrets.extend([
            mail,
            phone.clone(),
            phone.replace(' ', ""),
            card.clone(),
            spaced(&card),
            value.replace(' ', ""),
        ]);
        secrets.push(value);
    }
    for line in &lines {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        for field in ["customer_email", "card_number", "note"] {
            if let Some(v) = ev.get(field).and_then(|v| v.as_str()) {
                // Generated notes with personal data; clean ones may leave.
                if field != "note" || v.starts_with("call back on") || v.starts_with("receipt to") {
                    secrets.push(v.to_string());
                    secrets.extend(v.strip_prefix("receipt to ").or(v.strip_prefix("call back on ")).map(String::from));
                }
            }
        }
    }
    let input = write_input(dir.path(), "openai.jsonl", &lines);

    // With the local fallback.
    let m = openai_manifest(dir.path(), &proxy.url(), &[]);
    let tables = dir.path().join("tables");
    run(&m, &input, &tables, LITELLM_KEY);
    let t = tables.as_path();
    assert_accounted(t, &input);
    let remote = results(t, "NOT shadow AND route = 'fraud-cloud' AND provider LIKE 'openai http://127.0.0.1:%'");
    assert!(remote > 50, "{remote} events answered by the openai worker");
    assert_eq!(results(t, "NOT shadow AND route = 'fraud-cloud' AND (score IS NULL OR score < 0 OR score > 1)"), 0);
    assert!(proxy.posts().iter().any(|p| p.contains("gift wrap")), "clean notes are part of the prompt");
    for key in &in_note {
        let r = rows(t, &format!("SELECT sensitivity, route, fallback FROM predictions WHERE key = '{key}'"));
        assert_eq!(r.len(), 1, "{key}: {r:?}");
        assert!(r[0][0] == "pii" || r[0][0] == "regulated", "{key}: {r:?}");
        assert_eq!((r[0][1].as_str(), r[0][2].as_str()), ("fraud", "false"), "{key}: {r:?}");
    }
    for key in &in_currency {
        let r =
            rows(t, &format!("SELECT sensitivity, route, fallback, route_reason FROM predictions WHERE key = '{key}'"));
        assert_eq!(r.len(), 1, "{key}: {r:?}");
        // Invisible to the router (untagged, unscanned): planned for the cloud ...
        // (`internal`: the event has a `country`, which may leave.)
        assert_eq!(r[0][0], "internal", "{key}: {r:?}");
        // ... stopped by the last check, answered locally.
        assert_eq!((r[0][1].as_str(), r[0][2].as_str()), ("fraud", "true"), "{key}: {r:?}");
        assert!(r[0][3].contains("worker `fraud-cloud`: request blocked before egress"), "{key}: {r:?}");
    }
    let posts_with_fallback = proxy.posts().len();

    // Without a fallback: the blocked events go to the DLQ, said why.
    let m = openai_manifest(dir.path(), &proxy.url(), &[("      fallback: [fraud]\n", "")]);
    let tables = dir.path().join("tables-no-fallback");
    run(&m, &input, &tables, LITELLM_KEY);
    let t = tables.as_path();
    assert_accounted(t, &input);
    let blocked = rows(
        t,
        "SELECT CAST(payload AS VARCHAR), error_message FROM dlq WHERE error_class = 'egress_blocked' ORDER BY 1",
    );
    assert_eq!(blocked.len(), in_currency.len(), "{blocked:?}");
    for key in &in_currency {
        assert!(blocked.iter().any(|r| r[0].contains(&format!("\"{key}\""))), "{key} is not in {blocked:?}");
    }
    for message in blocked.iter().map(|r| &r[1]) {
        assert!(message.contains("worker `fraud-cloud`: request blocked before egress"), "{message}");
        assert!(!secrets.iter().any(|s| message.contains(s.as_str())), "the DLQ message repeats the value: {message}");
    }
    assert!(proxy.posts().len() > posts_with_fallback + 50, "the second run reached the endpoint too");

    // Over both runs, not one value that may not leave was on the wire.
    let mut leaks = Vec::new();
    for r in &proxy.requests() {
        for s in &secrets {
            if r.contains(s) {
                leaks.push(format!("request {} carries {s:?}", r.n));
            }
        }
    }
    assert!(leaks.is_empty(), "{} values reached the endpoint:\n{}", leaks.len(), leaks.join("\n"));
}

/// `switchyard serve` speaks the KServe V2 REST protocol: open health
/// probes, metadata and readiness behind the token, clear errors naming
/// what is wrong, and answers equal to the local worker's.
#[test]
fn serve_speaks_kserve_v2_with_bearer_auth() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let get = |path: &str, token: Option<&str>| {
            let mut r = http.get(format!("{}{path}", server.url));
            if let Some(t) = token {
                r = r.header("authorization", format!("Bearer {t}"));
            }
            r.send()
        };
        let json = |r: reqwest::Response| async move {
            let status = r.status().as_u16();
            let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            (status, body)
        };
        // Probes need no token.
        assert_eq!(json(get("/v2/health/live", None).await.unwrap()).await, (200, serde_json::json!({"live": true})));
        assert_eq!(json(get("/v2/health/ready", None).await.unwrap()).await.0, 200);
        // Everything else does, and says so.
        let (status, body) = json(get("/v2/models/fraud", None).await.unwrap()).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("missing bearer token")));
        let (status, body) = json(get("/v2/models/fraud", Some("wrong")).await.unwrap()).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid bearer token")));
        let token = Some(server.token.as_str());
        let (status, meta) = json(get("/v2/models/fraud", token).await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(meta["inputs"][0]["name"], "features");
        assert_eq!(meta["inputs"][0]["shape"], serde_json::json!([-1, 16]));
        assert_eq!(meta["versions"], serde_json::json!(["1"]));
        assert_eq!(json(get("/v2/models/fraud/versions/1/ready", token).await.unwrap()).await.0, 200);
        let (status, body) = json(get("/v2/models/fraud/versions/9", token).await.unwrap()).await;
        assert_eq!(status, 404);
        assert!(body["error"].as_str().unwrap().contains("version `9` of model `fraud` is not served"), "{body}");
        let (status, body) = json(get("/v2/models/other", token).await.unwrap()).await;
        assert_eq!(status, 404);
        assert!(body["error"].as_str().unwrap().contains("served: fraud"), "{body}");

        let post = |body: serde_json::Value| {
            http.post(format!("{}/v2/models/fraud/infer", server.url))
                .header("authorization", format!("Bearer {}", server.token))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap())
                .send()
        };
        let rows: Vec<Vec<f32>> = (0..5).map(|r| (0..16).map(|c| ((r * 16 + c) % 7) as f32 / 3.0 - 1.0).collect()).collect();
        let (status, body) = json(
            post(serde_json::json!({"id": "q1", "inputs": [{"name": "features", "shape": [5, 16], "datatype": "FP32", "data": rows}]}))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"], "q1");
        assert_eq!(body["model_version"], "1");
        let probs = &body["outputs"][0];
        assert_eq!(probs["name"], "probabilities");
        assert_eq!(probs["shape"], serde_json::json!([5, 2]));
        let p: Vec<f64> = probs["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let labels: Vec<i64> = body["outputs"][1]["data"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        for r in 0..5 {
            assert!((p[2 * r] + p[2 * r + 1] - 1.0).abs() < 1e-6, "row {r}: {p:?}");
            assert_eq!(labels[r], i64::from(p[2 * r + 1] >= 0.5), "row {r}");
        }
        // The same rows one at a time give the same answers (batching does
        // not change them).
        for (r, row) in rows.iter().enumerate() {
            let (_, one) = json(
                post(serde_json::json!({"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP64", "data": row}]}))
                    .await
                    .unwrap(),
            )
            .await;
            let s = one["outputs"][0]["data"][1].as_f64().unwrap();
            assert!((s - p[2 * r + 1]).abs() < 1e-6, "row {r}: {s} vs {}", p[2 * r + 1]);
        }
        // Bad requests name what is wrong.
        let (status, body) =
            json(post(serde_json::json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": rows[0]}]})).await.unwrap())
                .await;
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains("the model's input is `features`"), "{body}");
        let (status, body) =
            json(post(serde_json::json!({"inputs": [{"name": "features", "shape": [2, 16], "datatype": "FP32", "data": rows[0]}]})).await.unwrap())
                .await;
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains("16 values for shape [2, 16]"), "{body}");
    });
}

/// A backfill of the hybrid pipeline against `switchyard serve`: the cloud
/// worker spends the run's own budget, not the pipeline's, and what the
/// budget cannot pay for falls back to the local model, as the plan said.
#[test]
fn a_backfill_spends_its_own_cloud_budget_and_the_rest_falls_back_as_planned() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    manifest(dir.path(), &server.url, &[]);
    let input = generate(dir.path(), 4000, 0.1, 11);
    let n = records(&input).len() as u64;
    let tables = dir.path().join("tables");
    let backfill = dir.path().join("cloud-backfill.yaml");
    std::fs::write(
        &backfill,
        format!(
            "name: cloud-backfill\npipeline: hybrid.yaml\nsource:\n  type: files\n  paths: [\"{}\"]\npins:\n  models: \
             {{fraud: \"1\"}}\n  policy_version: fraud-policy/2\noutput:\n  path: {}\ncloud:\n  fraud-cloud:\n    budget: \
             {{cost_per_request: 0.001, limit: 0.01, on_exhausted: fallback}}\n    rate_limit: {{requests_per_second: 100}}\n",
            input.display(),
            tables.display()
        ),
    )
    .unwrap();
    let bf = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .current_dir(repo())
            .env("RUST_LOG", "warn")
            .env(TOKEN_ENV, &server.token)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let plan: serde_json::Value =
        serde_json::from_slice(&bf(&["backfill", "plan", backfill.to_str().unwrap(), "--json"])).unwrap();
    let cloud = &plan["estimate"]["cloud"]["fraud-cloud"];
    assert_eq!(cloud["requests"], 10, "the budget pays for 10 requests: {plan}");
    assert!(cloud["fall_back"].as_u64().unwrap() > 0, "{plan}");
    assert!((cloud["cost"].as_f64().unwrap() - 0.01).abs() < 1e-9, "{plan}");

    let summary_file = dir.path().join("summary.json");
    bf(&["backfill", "run", backfill.to_str().unwrap(), "--summary-json", summary_file.to_str().unwrap()]);
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary_file).unwrap()).unwrap();
    assert_eq!(s["results"].as_u64().unwrap() + s["dlq"].as_u64().unwrap(), n, "{s}");
    let spent = s["cost"]["fraud-cloud"].as_f64().unwrap();
    assert!(spent > 0.0 && spent <= 0.01 + 1e-9, "the run's budget, not the pipeline's (0.1): {s}");
    let cloud_rows = s["routes"]["fraud-cloud"].as_u64().unwrap();
    assert!(cloud_rows > 0 && cloud_rows <= 10 * 64, "{s}");
    let out = tables.join("backfills/cloud-backfill");
    let fell_back = results(&out, "NOT shadow AND fallback AND route = 'fraud' AND route_reason LIKE '%budget%'");
    assert!(fell_back > 0, "events past the budget fall back to the local model");
    let planned = plan["estimate"]["routes"]["fraud-cloud"].as_u64().unwrap();
    assert!(cloud_rows <= planned + 64, "planned {planned} cloud results, got {cloud_rows}");
}

/// With tracing on, each HTTP attempt of the cloud worker is a client span
/// in the trace of the first event it carries (linking the others), and
/// its context reaches the endpoint as `traceparent`.
#[test]
fn cloud_requests_are_traced_and_carry_the_trace_to_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(&server.url));
    let m = manifest(dir.path(), &proxy.url(), &[]);
    let input = generate(dir.path(), 400, 0.0, 21);
    let receiver = peers::OtlpReceiver::start(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("run")
        .arg(&m)
        .arg("--input-file")
        .arg(&input)
        .arg("--tables")
        .arg(dir.path().join("tables"))
        .args(["--no-kafka-sink", "--idle-exit-ms", "1000", "--progress-secs", "0"])
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .env(TOKEN_ENV, &server.token)
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", format!("{}/v1/traces", receiver.peer.url))
        .envs(peers::OtlpReceiver::PROMPT_EXPORT)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spans = receiver.spans();
    let posts: Vec<&serde_json::Value> = spans.iter().filter(|s| s["kind"] == "SPAN_KIND_CLIENT").collect();
    let requests = proxy.posts();
    assert!(!requests.is_empty());
    assert_eq!(posts.len(), requests.len(), "one client span per HTTP attempt");
    for p in &posts {
        let a = &p["attributes"];
        assert_eq!(p["name"], "POST");
        assert_eq!(a["http.request.method"], "POST");
        assert_eq!(a["http.response.status_code"], 200);
        assert_eq!(a["server.address"], "127.0.0.1");
        assert_eq!(a["switchyard.worker"], "fraud-cloud");
        // Its parent is the span of an event it carries, in the same trace.
        let parent = spans
            .iter()
            .find(|s| s["span_id"] == p["parent_span_id"])
            .unwrap_or_else(|| panic!("the parent of {p} was not exported"));
        assert_eq!(parent["trace_id"], p["trace_id"]);
        assert_eq!(parent["kind"], "SPAN_KIND_CONSUMER");
        let rows = a["switchyard.rows"].as_i64().unwrap();
        assert_eq!(p["links"].as_array().unwrap().len() as i64, rows - 1, "the other events are links");
    }
    // What reached the endpoint names each request's span.
    for r in &requests {
        let tp = r.header("traceparent").expect("the request carries the trace context");
        assert!(
            posts
                .iter()
                .any(|p| tp == format!("00-{}-{}-01", p["trace_id"].as_str().unwrap(), p["span_id"].as_str().unwrap())),
            "{tp}"
        );
    }
}

/// One `switchyard run` of the hybrid pipeline on Kafka, in the group of
/// `manifest`, in its own process group (killed with the test); it stops
/// after `idle_exit_ms` without records.
fn kafka_worker(manifest: &Path, dir: &Path, name: &str, token: &str, idle_exit_ms: u64) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", manifest.to_str().unwrap(), "--idle-exit-ms", &idle_exit_ms.to_string(), "--progress-secs", "0"])
        .args(["--no-create-topics"])
        .current_dir(repo())
        .env("RUST_LOG", "warn,switchyard=info,switchyard_ingest=info")
        .env(TOKEN_ENV, token)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .process_group(0)
        .spawn()
        .expect("starting switchyard run");
    watchdog(child.id());
    child
}

/// `pipelines/hybrid.yaml` on the broker at `bootstrap` with topics and
/// group `t`, tables at `tables`, the endpoint at `url`, then `edits`.
fn kafka_manifest(
    dir: &Path,
    url: &str,
    bootstrap: &str,
    t: &crate::support::Topics,
    tables: &Path,
    edits: &[(&str, &str)],
) -> PathBuf {
    let kafka = [
        ("bootstrap_servers: 127.0.0.1:9092", format!("bootstrap_servers: {bootstrap}")),
        ("topics: [transactions]", format!("topics: [{}]", t.input)),
        ("group_id: switchyard-fraud-hybrid", format!("group_id: {}", t.group)),
        ("results_topic: predictions-hybrid", format!("results_topic: {}", t.results)),
        ("dlq_topic: transactions-dlq", format!("dlq_topic: {}", t.dlq)),
        ("path: ../data/hybrid", format!("path: {}", tables.display())),
    ];
    let all: Vec<(&str, &str)> = kafka.iter().map(|(f, to)| (*f, to.as_str())).chain(edits.iter().copied()).collect();
    manifest(dir, url, &all)
}

/// Workers that stop only when told (the test waits for the group's commits).
const RUN_ON: u64 = 600_000;

/// The endpoint fails in bursts — 429s with `Retry-After`, 503s, requests
/// that hang — while events keep coming and workers join, are killed and
/// leave the group: every event still has exactly one outcome, none is lost
/// to the faults (the local model takes over), no sensitive event reaches
/// the endpoint, and the group together keeps the endpoint's rate limit on
/// the wire.
#[test]
fn cloud_faults_during_rebalances_lose_nothing_leak_nothing_and_keep_the_rate_limit() {
    use crate::support::{create_topics, produce_over, Topics};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(&server.url));
    // Every kind of fault early (the 503s open the circuit for a while),
    // and again every 40 requests.
    proxy.set_plan(|n| match n % 40 {
        3..=5 => Fault::TooManyRequests { retry_after_s: 1 },
        12 => Fault::Hang,
        20..=24 => Fault::Status(503),
        _ => Fault::Pass,
    });
    let bootstrap = crate::broker::bootstrap();
    let t = Topics::new("hybrid-rebalance");
    create_topics(&bootstrap, &[(&t.input, 6), (&t.results, 3), (&t.dlq, 1)]);
    let input = generate(dir.path(), 20_000, 0.2, 41);
    let payloads: Vec<Vec<u8>> = records(&input).into_iter().map(String::into_bytes).collect();
    // Over the 14 s of joins, kills and leaves.
    let producer = produce_over(&bootstrap, &t.input, payloads, 16, Duration::from_secs(1));
    let tables = dir.path().join("tables");
    let (rps, burst) = (40.0, 4.0);
    let m = kafka_manifest(
        dir.path(),
        &proxy.url(),
        &bootstrap,
        &t,
        &tables,
        &[
            ("roll_interval_ms: 2000", "roll_interval_ms: 500"),
            ("session.timeout.ms: \"10000\"", "session.timeout.ms: \"6000\""),
            ("rate_limit: {requests_per_second: 200, burst: 20}", "rate_limit: {requests_per_second: 40, burst: 4}"),
            // Small requests: the demand (about 125 a second) is well above
            // the limit; what waits longer than 1 s takes the local model,
            // so that a worker told to stop finishes its chunks in time.
            ("max_batch_size: 64", "max_batch_size: 8"),
            ("max_wait_ms: 5000", "max_wait_ms: 1000"),
            ("limit: 0.1,", "limit: 1000,"),
        ],
    );
    let token = server.token.clone();
    let mut a = kafka_worker(&m, dir.path(), "a", &token, RUN_ON);
    let mut b = kafka_worker(&m, dir.path(), "b", &token, RUN_ON);
    std::thread::sleep(Duration::from_secs(6));
    // A third joins and is killed; a fourth joins; the second leaves.
    let mut c = kafka_worker(&m, dir.path(), "c", &token, RUN_ON);
    std::thread::sleep(Duration::from_secs(4));
    c.kill().unwrap();
    c.wait().unwrap();
    let mut d = kafka_worker(&m, dir.path(), "d", &token, RUN_ON);
    std::thread::sleep(Duration::from_secs(4));
    assert!(Command::new("kill").args(["-TERM", &b.id().to_string()]).status().unwrap().success());
    producer.join().unwrap();
    let log = |name: &str| std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
    let status = b.wait().unwrap();
    assert!(status.success(), "worker b failed ({status}):\n{}", log("b"));
    // The others stop once the group has committed every record: how long
    // the partitions of the killed and the leaving worker wait for a new
    // owner depends on the machine's load, so no idle timeout decides it.
    let ends = crate::support::read_topic(&bootstrap, &t.input).end_offsets;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while crate::support::committed(&bootstrap, &t.group, &t.input, 6) != ends {
        assert!(std::time::Instant::now() < deadline, "the group did not commit every record in 180 s");
        std::thread::sleep(Duration::from_millis(500));
    }
    for (name, child) in [("a", &mut a), ("d", &mut d)] {
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        let status = child.wait().unwrap();
        assert!(status.success(), "worker {name} failed ({status}):\n{}", log(name));
    }

    let tb = tables.as_path();
    let outcomes = results(tb, "NOT shadow") + sql_i64(tb, "SELECT count(*) FROM dlq");
    if outcomes != 20_000 {
        // Where the missing events were, and what each worker saw.
        let per_partition: Vec<_> = (0..6)
            .map(|p| {
                let q = |t: &str| sql_i64(tb, &format!("SELECT count(*) FROM {t} WHERE source_partition = {p}"));
                (
                    p,
                    q("predictions")
                        - sql_i64(
                            tb,
                            &format!("SELECT count(*) FROM predictions WHERE shadow AND source_partition = {p}"),
                        )
                        + q("dlq"),
                )
            })
            .collect();
        let committed = crate::support::committed(&bootstrap, &t.group, &t.input, 6);
        let input_ends = crate::support::read_topic(&bootstrap, &t.input).end_offsets;
        let logs: String = ["a", "b", "c", "d"].iter().map(|n| format!("--- {n}\n{}", log(n))).collect();
        panic!(
            "{outcomes} outcomes for 20000 events; outcomes per partition {per_partition:?}; \
             committed {committed:?}; input ends {input_ends:?}\n{logs}"
        );
    }
    assert_accounted(tb, &input);
    assert_eq!(sql_i64(tb, "SELECT count(*) FROM dlq WHERE stage IN ('route', 'infer')"), 0, "nothing lost");
    assert!(results(tb, "NOT shadow AND route = 'fraud' AND fallback") > 0, "the local model took over");
    assert_only_allowed_rows_left(tb, &proxy);
    let faults = proxy.requests();
    for (what, hit) in [
        ("503", faults.iter().any(|r| r.fault == Fault::Status(503))),
        ("429", faults.iter().any(|r| matches!(r.fault, Fault::TooManyRequests { .. }))),
        ("hang", faults.iter().any(|r| r.fault == Fault::Hang)),
    ] {
        assert!(hit, "no request met a {what}");
    }
    // The limit is the group's (README): each worker uses the share of its
    // partitions. In any second, the rate plus the scaled bursts (at most
    // the burst plus one per worker), again for each change of shares the
    // second may see.
    let posts = proxy.posts();
    let most = posts
        .iter()
        .map(|p| posts.iter().filter(|q| q.at >= p.at && q.at < p.at + Duration::from_secs(1)).count())
        .max()
        .unwrap_or(0);
    let allowed = (rps + 3.0 * (burst + 3.0)) as usize;
    eprintln!("hybrid rebalance: {} requests, at most {most} in a second (allowed {allowed})", posts.len());
    assert!(most <= allowed, "{most} requests in one second");
}

/// Three workers share one budget: together they spend it (within the
/// documented error bound) and not three times over; a worker started
/// afterwards in the same window finds it spent and sends nothing. The
/// spend files add up to what reached the wire.
#[test]
fn a_group_shares_one_budget_and_a_restart_does_not_refill_it() {
    use crate::support::{create_topics, produce, produce_over, Topics};
    // The test's requests must fall in one budget window (a day).
    let day = 86_400;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    if now % day > day - 180 {
        std::thread::sleep(Duration::from_secs(day - now % day + 1));
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(&server.url));
    let bootstrap = crate::broker::bootstrap();
    let t = Topics::new("hybrid-budget");
    create_topics(&bootstrap, &[(&t.input, 6), (&t.results, 3), (&t.dlq, 1)]);
    let input = generate(dir.path(), 14_000, 0.2, 43);
    let payloads: Vec<Vec<u8>> = records(&input).into_iter().map(String::into_bytes).collect();
    let (first, later) = payloads.split_at(12_000);
    let (rps, limit) = (60.0, 150.0);
    let tables = dir.path().join("tables");
    let m = kafka_manifest(
        dir.path(),
        &proxy.url(),
        &bootstrap,
        &t,
        &tables,
        &[
            ("rate_limit: {requests_per_second: 200, burst: 20}", "rate_limit: {requests_per_second: 60, burst: 3}"),
            (
                "budget: {cost_per_request: 0.001, limit: 0.1, window_s: 3600, on_exhausted: fallback}",
                "budget: {cost_per_request: 1, limit: 150, window_s: 86400, on_exhausted: fallback}",
            ),
        ],
    );
    let token = server.token.clone();
    let producer = produce_over(&bootstrap, &t.input, first.to_vec(), 8, Duration::from_secs(1));
    let mut workers: Vec<(&str, Child)> =
        ["a", "b", "c"].into_iter().map(|n| (n, kafka_worker(&m, dir.path(), n, &token, 8000))).collect();
    producer.join().unwrap();
    let log = |name: &str| std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
    for (name, child) in &mut workers {
        let status = child.wait().unwrap();
        assert!(status.success(), "worker {name} failed ({status}):\n{}", log(name));
    }
    let sent = proxy.posts().len();
    // Each worker sees the others' spend at most two syncs (2 s) late: the
    // group may overshoot by what it can send in that time.
    let bound = limit + 2.0 * rps;
    eprintln!(
        "shared budget: {sent} requests for a budget of {limit} (bound {bound}; per worker it would be {})",
        3.0 * limit
    );
    assert!(sent as f64 >= limit, "the budget was not used: {sent} requests");
    assert!(sent as f64 <= bound, "{sent} requests for a budget of {limit}");
    // The spend files hold what reached the wire (every request answered).
    let spend_dir = tables.join("_spend").join("fraud-cloud");
    let mut files = 0.0;
    for window in std::fs::read_dir(&spend_dir).unwrap() {
        for f in std::fs::read_dir(window.unwrap().path()).unwrap() {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f.unwrap().path()).unwrap()).unwrap();
            files += v["spent"].as_f64().unwrap();
        }
    }
    assert_eq!(files, sent as f64, "the spend files add up to the requests sent");

    // A worker started later in the same window: the budget stays spent.
    produce(&bootstrap, &t.input, later);
    let mut d = kafka_worker(&m, dir.path(), "d", &token, 8000);
    let status = d.wait().unwrap();
    assert!(status.success(), "worker d failed ({status}):\n{}", log("d"));
    assert_eq!(proxy.posts().len(), sent, "a restarted worker got a fresh budget");
    let tb = tables.as_path();
    assert_accounted(tb, &input);
    assert_eq!(sql_i64(tb, "SELECT count(*) FROM dlq WHERE stage IN ('route', 'infer')"), 0, "nothing lost");
    assert!(results(tb, "NOT shadow AND route = 'fraud' AND fallback") > 0, "the local model took over");
}
