//! The monitoring loop end to end against a real broker: events with a
//! reference period and a current period (drift injected into chosen
//! features, or not), ground truth on a feedback topic (with a duplicate, a
//! late correction and bad records), the streaming worker's monitor on its
//! schedule, and the retrain trigger it emits — once, with its evidence —
//! which the reference retrainer turns into a new model version.

use std::path::Path;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::broker;
use crate::support::{
    copy_registry, create_topics, repo, retrain, sql_i64, switchyard, unique, write_manifest, Topics,
};

/// `(key, payload, kafka timestamp ms)` records to `topic`.
fn produce_at(bootstrap: &str, topic: &str, records: &[(String, String, i64)]) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let futs: Vec<_> = records
            .iter()
            .map(|(k, p, ts)| {
                producer.send(FutureRecord::to(topic).key(k).payload(p).timestamp(*ts), Duration::from_secs(10))
            })
            .collect();
        for f in futures::future::join_all(futs).await {
            f.unwrap();
        }
    });
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

struct Run {
    tables: std::path::PathBuf,
    manifest: std::path::PathBuf,
    triggers_topic: String,
    stdout: String,
    _dir: tempfile::TempDir,
}

/// 2,000 reference events three hours ago and 2,000 current events in the
/// last ten minutes, `drift` applied to the current ones; feedback for 600
/// current events; then the worker runs until idle.
fn run_loop(test: &str, drift: impl Fn(&mut serde_json::Map<String, serde_json::Value>)) -> Run {
    let bootstrap = broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new(test);
    let (feedback, triggers) = (unique(&format!("{test}-feedback")), unique(&format!("{test}-triggers")));
    create_topics(&bootstrap, &[(&t.input, 3), (&t.results, 3), (&t.dlq, 1), (&feedback, 1), (&triggers, 1)]);

    let file = dir.path().join("events.jsonl");
    let out = switchyard(&["generate", "--events", "4000", "--out", file.to_str().unwrap(), "--malformed-rate", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let now = chrono::Utc::now().timestamp_millis();
    let (ref_start, cur_start) = (now - 3 * 3_600_000, now - 600_000);
    let mut records = Vec::new();
    let mut labelled = Vec::new();
    for (i, line) in std::fs::read_to_string(&file).unwrap().lines().enumerate() {
        let mut e: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        let key = e["txn_id"].as_str().unwrap().to_string();
        let ts = if i < 2000 {
            ref_start + i as i64
        } else {
            drift(&mut e);
            if i < 2600 {
                labelled.push((key.clone(), truth(&e)));
            }
            cur_start + i as i64
        };
        records.push((key, serde_json::Value::Object(e).to_string(), ts));
    }
    produce_at(&bootstrap, &t.input, &records);

    let mut fb: Vec<(String, String, i64)> = labelled
        .iter()
        .map(|(k, y)| (k.clone(), serde_json::json!({"key": k, "label": *y as i64}).to_string(), now))
        .collect();
    // A duplicate, a later correction of the first label, and two bad records.
    fb.push(fb[1].clone());
    let (k0, y0) = &labelled[0];
    fb.push((
        k0.clone(),
        serde_json::json!({"key": k0, "label": 1 - *y0 as i64, "source": "review"}).to_string(),
        now + 1,
    ));
    fb.push(("bad".into(), r#"{"label": 1}"#.into(), now));
    fb.push(("bad".into(), r#"{"key": "x", "label": 1, "comment": "?"}"#.into(), now));
    produce_at(&bootstrap, &feedback, &fb);

    // Two of sixteen features drift: a drift share of 0.1 asks for retraining
    // (Evidently's dataset-level default, 0.5, would wait for eight).
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 1000);
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text += &monitor_yaml(&feedback, &triggers, ref_start, "");
    std::fs::write(&manifest, text).unwrap();
    let out = switchyard(&["run", manifest.to_str().unwrap(), "--idle-exit-ms", "5000", "--progress-secs", "0"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    Run { tables, manifest, triggers_topic: triggers, stdout, _dir: dir }
}

/// The drift of these tests: `amount` and `distance_km` shifted and scaled.
fn drift_amount_and_distance(e: &mut serde_json::Map<String, serde_json::Value>) {
    let amount = e["amount"].as_f64().unwrap();
    e.insert("amount".into(), (amount * 6.0 + 150.0).into());
    let d = e["distance_km"].as_f64().unwrap_or(5.0);
    e.insert("distance_km".into(), (d * 20.0 + 200.0).into());
}

/// The ground truth of these tests.
fn truth(e: &serde_json::Map<String, serde_json::Value>) -> bool {
    e.get("txn_count_24h").and_then(|v| v.as_i64()).unwrap_or(2) > 2
}

/// The `feedback:` and `monitor:` sections: reference window around
/// `ref_start`, drift share 0.1, accuracy floor 0.2, one-hour cooldown.
fn monitor_yaml(feedback: &str, triggers: &str, ref_start: i64, extra: &str) -> String {
    format!(
        "\nfeedback:\n  topics: [{feedback}]\n\
         monitor:\n  worker: fraud\n  interval_ms: 500\n  window_ms: 3600000\n  min_rows: 500\n  drift_share: 0.1\n\
         \x20 reference: {{start: \"{}\", end: \"{}\"}}\n\
         \x20 accuracy: {{min_accuracy: 0.2, min_rows: 100}}\n\
         \x20 triggers:\n    topic: {triggers}\n    cooldown_ms: 3600000\n{extra}",
        rfc3339(ref_start - 1000),
        rfc3339(ref_start + 3_600_000)
    )
}

fn triggers(tables: &Path) -> Vec<serde_json::Value> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ctx = switchyard_analysis::catalog::open(&crate::support::root(tables)).await.unwrap();
        let b = switchyard_analysis::catalog::query(&ctx, "SELECT record FROM triggers").await.unwrap();
        use arrow::array::AsArray;
        b.iter()
            .flat_map(|b| {
                let a = b.column(0).as_string::<i32>();
                (0..b.num_rows()).map(|i| serde_json::from_str(a.value(i)).unwrap()).collect::<Vec<_>>()
            })
            .collect()
    })
}

#[test]
fn injected_drift_emits_one_trigger_with_its_evidence_and_the_retrainer_registers_a_new_version() {
    let run = run_loop("drift", drift_amount_and_distance);
    let tables = &run.tables;

    // Feedback: 600 + duplicate + correction stored, the newest per event
    // counted once, the bad ones in the DLQ with the stage named.
    assert_eq!(sql_i64(tables, "SELECT count(*) FROM feedback"), 602, "{}", run.stdout);
    assert_eq!(sql_i64(tables, "SELECT count(*) FROM feedback_latest"), 600);
    assert_eq!(sql_i64(tables, "SELECT count(*) FROM dlq WHERE stage = 'feedback'"), 2);
    assert_eq!(
        sql_i64(tables, "SELECT count(*) FROM feedback_latest WHERE source = 'review'"),
        1,
        "the later correction replaces the first label"
    );

    // Exactly one trigger, on Kafka and in the table, despite many evaluations.
    let evaluations = sql_i64(tables, "SELECT count(DISTINCT run_id) FROM drift");
    assert!(evaluations >= 3, "the monitor evaluated {evaluations} times");
    let on_kafka = crate::support::read_topic(&broker::bootstrap(), &run.triggers_topic);
    assert_eq!(on_kafka.records, 1, "{}", run.stdout);
    let t = triggers(tables);
    assert_eq!(t.len(), 1);
    let t = &t[0];
    assert_eq!((t["model"]["name"].as_str(), t["model"]["version"].as_str()), (Some("fraud"), Some("1")));
    assert!(t["reason"].as_str().unwrap().starts_with("drift"), "{t}");
    let drifted: Vec<&str> =
        t["evidence"]["drift"][0]["drifted"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(drifted.contains(&"amount") && drifted.contains(&"distance_km"), "{drifted:?}");
    for untouched in ["hour", "txn_count_24h", "channel=web", "merchant_category=travel"] {
        assert!(!drifted.contains(&untouched), "{untouched} was not changed but is flagged: {drifted:?}");
    }
    let amount =
        t["evidence"]["drift"][0]["metrics"].as_array().unwrap().iter().find(|m| m["column"] == "amount").unwrap();
    assert_eq!(amount["test"], "wasserstein", "2,000 reference rows: Evidently's default for numbers");
    assert!(amount["score"].as_f64().unwrap() >= 0.1);
    assert!(t["windows"]["reference"].as_str().unwrap().starts_with("window"));
    assert_eq!(sql_i64(tables, "SELECT count(*) FROM audit WHERE event = 'trigger_emitted'"), 1);

    drift_command_reports_what_the_monitor_found(&run);

    // The trigger's training data, run by the reference retrainer, gives a
    // new registered version.
    let registry = run._dir.path().join("models");
    copy_registry(&registry);
    retrain(run._dir.path(), t, &registry);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(registry.join("fraud/2/metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["training"]["trigger_id"], t["trigger_id"]);
    assert_eq!(meta["training"]["rows"].as_i64(), Some(600), "one row per labelled prediction");
}

/// `switchyard drift` on the same tables: the table names the drifted
/// columns, and the HTML page, SVG and PNG charts are written; `--write`
/// appends to the `drift` table.
fn drift_command_reports_what_the_monitor_found(run: &Run) {
    let out_dir = run._dir.path().join("report");
    let (html, svg, png) = (out_dir.join("report.html"), out_dir.join("svg"), out_dir.join("png"));
    let before = sql_i64(&run.tables, "SELECT count(*) FROM drift");
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let out = switchyard(&[
        "drift",
        &p(&run.manifest),
        "--html",
        &p(&html),
        "--svg-dir",
        &p(&svg),
        "--png-dir",
        &p(&png),
        "--write",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for column in ["amount", "distance_km"] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(column)).unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains("DRIFT"), "{column} not flagged: {line}");
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("amount"), "the HTML report has its charts");
    let charts = |dir: &Path, ext: &str| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| f.extension().is_some_and(|e| e == ext))
            .collect();
        v.sort();
        v
    };
    let (svgs, pngs) = (charts(&svg, "svg"), charts(&png, "png"));
    assert!(svgs.len() >= 17, "a chart per column and its metric over time: {svgs:?}");
    assert_eq!(svgs.len(), pngs.len());
    // A PNG is a picture: the chart's size doubled, bars and text on white.
    let amount = pngs.iter().find(|f| f.file_name().unwrap().to_str().unwrap().ends_with("-amount.png")).unwrap();
    let pixmap = resvg::tiny_skia::Pixmap::decode_png(&std::fs::read(amount).unwrap()).unwrap();
    let svg_text = std::fs::read_to_string(svg.join(amount.with_extension("svg").file_name().unwrap())).unwrap();
    let width: u32 = svg_text.split("width=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    assert_eq!(pixmap.width(), 2 * width);
    let dark = pixmap.pixels().iter().filter(|p| p.red() < 80 && p.green() < 80 && p.blue() < 80).count();
    let colours: std::collections::HashSet<_> =
        pixmap.pixels().iter().map(|p| (p.red(), p.green(), p.blue())).collect();
    assert!(dark > 200 && colours.len() > 8, "{dark} dark pixels, {} colours", colours.len());
    assert!(sql_i64(&run.tables, "SELECT count(*) FROM drift") > before, "--write appends to the drift table");
}

#[test]
fn stable_stream_emits_no_trigger() {
    let run = run_loop("stable", |_| {});
    let tables = &run.tables;
    assert!(sql_i64(tables, "SELECT count(DISTINCT run_id) FROM drift") >= 3, "{}", run.stdout);
    assert_eq!(sql_i64(tables, "SELECT count(*) FROM drift WHERE \"column\" = '(dataset)' AND drifted"), 0);
    assert!(triggers(tables).is_empty(), "{}", run.stdout);
}

/// `sql`'s single number, or `None` while its tables do not exist yet.
fn try_sql_i64(tables: &Path, sql: &str) -> Option<i64> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use arrow::array::AsArray;
        let ctx = switchyard_analysis::catalog::open(&crate::support::root(tables)).await.ok()?;
        let b = switchyard_analysis::catalog::query(&ctx, sql).await.ok()?;
        Some(b.first()?.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0))
    })
}

/// Waits until `sql` gives at least `want`, or fails naming what it waited for.
fn wait_for(tables: &Path, sql: &str, want: i64, secs: u64, log: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let got = try_sql_i64(tables, sql);
        if got.is_some_and(|n| n >= want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited {secs} s for `{sql}` ≥ {want}, got {got:?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_loop_closes_the_retrained_version_serves_after_its_canary_is_promoted() {
    let bootstrap = broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let (tables, registry, log) = (dir.path().join("tables"), dir.path().join("models"), dir.path().join("run.log"));
    copy_registry(&registry);
    let t = Topics::new("loop");
    let (feedback, trig) = (unique("loop-feedback"), unique("loop-triggers"));
    create_topics(&bootstrap, &[(&t.input, 3), (&t.results, 3), (&t.dlq, 1), (&feedback, 1), (&trig, 1)]);

    // Phase 1: reference events three hours ago, drifted ones now, 600 labelled.
    // Phase 2: 1,500 drifted events, all labelled (the canary's evidence).
    // Phase 3: 500 events after the promotion.
    let file = dir.path().join("events.jsonl");
    let out = switchyard(&["generate", "--events", "6000", "--out", file.to_str().unwrap(), "--malformed-rate", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let now = chrono::Utc::now().timestamp_millis();
    let ref_start = now - 3 * 3_600_000;
    let mut phases: [Vec<(String, String, i64)>; 3] = Default::default();
    let mut labels: [Vec<(String, String, i64)>; 2] = Default::default();
    for (i, line) in std::fs::read_to_string(&file).unwrap().lines().enumerate() {
        let mut e: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        let key = e["txn_id"].as_str().unwrap().to_string();
        let phase = match i {
            0..4000 => 0,
            4000..5500 => 1,
            _ => 2,
        };
        let ts = if i < 2000 { ref_start + i as i64 } else { now - 600_000 + i as i64 };
        if i >= 2000 {
            drift_amount_and_distance(&mut e);
        }
        if (2000..2600).contains(&i) || phase == 1 {
            let label = serde_json::json!({"key": key, "label": truth(&e) as i64}).to_string();
            labels[phase.min(1)].push((key.clone(), label, now));
        }
        phases[phase].push((key, serde_json::Value::Object(e).to_string(), ts));
    }

    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 1000);
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace(
            &format!("registry: {}", repo().join("pipelines/models").display()),
            &format!("registry: {}", registry.display()),
        )
        .replace(
            "    intra_op_threads: 1\n",
            "    intra_op_threads: 1\n    reload: {poll_ms: 200, rollout: canary, canary_fraction: 0.5}\n",
        )
        + &monitor_yaml(&feedback, &trig, ref_start, "  rollout: {min_rows: 150, max_accuracy_drop: 0.05}\n");
    std::fs::write(&manifest, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", manifest.to_str().unwrap(), "--progress-secs", "0"])
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    produce_at(&bootstrap, &t.input, &phases[0]);
    produce_at(&bootstrap, &feedback, &labels[0]);
    wait_for(&tables, "SELECT count(*) FROM triggers", 1, 60, &log);
    let trigger = triggers(&tables).remove(0);
    assert_eq!(trigger["model"]["version"], "1");

    // The reference retrainer turns the trigger into version 2 ...
    retrain(dir.path(), &trigger, &registry);

    // ... which the running worker takes up as a canary, the monitor judges
    // on feedback, and promotes; then it serves everything.
    let audit = |event: &str| format!("SELECT count(*) FROM audit WHERE event = '{event}' AND model_version = '2'");
    wait_for(&tables, &audit("candidate_started"), 1, 30, &log);
    produce_at(&bootstrap, &t.input, &phases[1]);
    produce_at(&bootstrap, &feedback, &labels[1]);
    wait_for(&tables, &audit("promoted"), 1, 90, &log);
    produce_at(&bootstrap, &t.input, &phases[2]);
    wait_for(&tables, "SELECT count(*) FROM predictions WHERE NOT shadow", 6000, 60, &log);
    let term = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success(), "{}", std::fs::read_to_string(&log).unwrap());
    let stdout = std::fs::read_to_string(&log).unwrap();
    assert!(stdout.contains("model change   promoted 2"), "{stdout}");

    let in_keys =
        |phase: &[(String, String, i64)]| phase.iter().map(|(k, _, _)| format!("'{k}'")).collect::<Vec<_>>().join(",");
    let count = |phase: usize, cond: &str| {
        sql_i64(
            &tables,
            &format!("SELECT count(*) FROM predictions WHERE key IN ({}) AND {cond}", in_keys(&phases[phase])),
        )
    };
    // Phase 1: version 1 alone. Phase 2: both, version 2 as the marked canary.
    assert_eq!(count(0, "CAST(model_version AS VARCHAR) = '1'"), 4000);
    let canary = count(1, "CAST(model_version AS VARCHAR) = '2'");
    assert!(canary > 300 && canary < 1200, "about half of 1,500 events: {canary}");
    assert_eq!(count(1, "CAST(model_version AS VARCHAR) = '2' AND route_reason LIKE '%canary of version 2%'"), canary);
    // Phase 3 and anything after the promotion: version 2 only, no canary.
    assert_eq!(count(2, "CAST(model_version AS VARCHAR) = '2' AND route_reason NOT LIKE '%canary%'"), 500);

    // The audit trail tells the story in order; rollout.json says 2 serves.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let events: Vec<String> = rt.block_on(async {
        use arrow::array::AsArray;
        let ctx = switchyard_analysis::catalog::open(&crate::support::root(&tables)).await.unwrap();
        let b = switchyard_analysis::catalog::query(
            &ctx,
            // Model lifecycle rows (operational rows name no model).
            "SELECT concat(event, ' ', model_version) FROM audit WHERE model_name <> '' ORDER BY time",
        )
        .await
        .unwrap();
        b.iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(|i| b.column(0).as_string::<i32>().value(i).to_string()).collect::<Vec<_>>()
            })
            .collect()
    });
    assert_eq!(events, ["trigger_emitted 1", "candidate_started 2", "promote_decided 2", "promoted 2"], "{stdout}");
    let state = switchyard_schemas::RolloutState::load(&registry, "fraud").unwrap();
    assert_eq!(state.stable.as_deref(), Some("2"));
    assert!(state.promoted[0].reason.contains("labelled predictions"), "{:?}", state.promoted);
    assert_eq!(triggers(&tables).len(), 1, "version 2, judged on the drifted traffic, asks for no retraining");
}

#[test]
fn feedback_offsets_follow_the_rolls_and_a_replay_adds_no_rows() {
    let bootstrap = broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("fbreplay");
    let feedback = unique("fbreplay-feedback");
    create_topics(&bootstrap, &[(&t.input, 1), (&t.results, 1), (&t.dlq, 1), (&feedback, 2)]);
    let now = chrono::Utc::now().timestamp_millis();
    // One event per run: a run waits for its first event before idling out.
    let event = |k: &str| (k.to_string(), format!(r#"{{"txn_id": "{k}", "amount": 5.0, "hour": 3}}"#), now);
    produce_at(&bootstrap, &t.input, &[event("k0")]);
    let mut fb: Vec<(String, String, i64)> = (0..120)
        .map(|i| (format!("k{i}"), serde_json::json!({"key": format!("k{i}"), "label": i % 2}).to_string(), now))
        .collect();
    fb.push(("bad".into(), r#"{"key": "k1", "label": "maybe"}"#.into(), now));
    produce_at(&bootstrap, &feedback, &fb);

    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 1000);
    let base = std::fs::read_to_string(&manifest).unwrap();
    let run = |group: &str| {
        std::fs::write(&manifest, format!("{base}\nfeedback:\n  topics: [{feedback}]\n  group_id: {group}\n")).unwrap();
        let out = switchyard(&["run", manifest.to_str().unwrap(), "--idle-exit-ms", "4000", "--progress-secs", "0"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let first = run(&format!("{}-fb", t.group));
    assert_eq!(sql_i64(&tables, "SELECT count(*) FROM feedback"), 120, "{first}");
    assert_eq!(sql_i64(&tables, "SELECT count(*) FROM dlq WHERE stage = 'feedback'"), 1);
    // The bad record is on the DLQ topic too, with its stage and source.
    let on_kafka = crate::support::read_topic(&bootstrap, &t.dlq);
    assert_eq!(on_kafka.records, 1, "{first}");
    let header = |k: &str| on_kafka.first_headers.iter().find(|h| h.0 == k).map(|h| h.1.as_str());
    assert_eq!(header("__connect.errors.stage"), Some("feedback"));
    assert_eq!(header("__connect.errors.topic"), Some(feedback.as_str()));
    // Committed offsets cover every record, good or bad, once rolled.
    let committed = crate::support::committed(&bootstrap, &format!("{}-fb", t.group), &feedback, 2);
    assert_eq!(committed.values().sum::<i64>(), 121, "{committed:?}");

    // A consumer that starts over (another group: everything is replayed)
    // recognises the rolled offsets and writes nothing twice.
    produce_at(&bootstrap, &t.input, &[event("k1")]);
    let second = run(&format!("{}-fb2", t.group));
    assert_eq!(sql_i64(&tables, "SELECT count(*) FROM feedback"), 120, "{second}");
    assert_eq!(sql_i64(&tables, "SELECT count(*) FROM dlq WHERE stage = 'feedback'"), 1);
    assert_eq!(crate::support::read_topic(&bootstrap, &t.dlq).records, 1, "not sent again on replay");
}
