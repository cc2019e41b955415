//! `docker/` checked as far as these machines allow (they have no container
//! engine): the compose file's shape (healthchecks, what depends on what),
//! Prometheus's configuration with the real `promtool`, and the commands of
//! the `switchyard`, `serve` and `producer` services run outside a
//! container with the same arguments, paths and hosts mapped to this
//! machine. The Grafana dashboard's every query names a metric that the
//! running pipeline's `/metrics` exports.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::peers;
use crate::support::*;

fn compose() -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(repo().join("docker/compose.yaml")).unwrap()).unwrap()
}

/// A service's `command` with this machine's paths, broker and ports.
fn command(compose: &serde_yaml::Value, service: &str, map: &[(&str, String)]) -> Vec<String> {
    let cmd = compose["services"][service]["command"].as_sequence().unwrap_or_else(|| panic!("{service}: no command"));
    cmd.iter()
        .map(|a| {
            let mut a = a.as_str().unwrap().to_string();
            for (from, to) in map {
                a = a.replace(from, to);
            }
            a
        })
        .collect()
}

#[test]
fn compose_services_have_healthchecks_and_start_in_order() {
    let c = compose();
    let services = c["services"].as_mapping().unwrap();
    let one_shot: HashSet<&str> = ["topics", "producer"].into();
    for (name, s) in services {
        let name = name.as_str().unwrap();
        if one_shot.contains(name) {
            continue;
        }
        let test = &s["healthcheck"]["test"];
        assert!(test.as_sequence().is_some_and(|t| t.len() >= 2), "service `{name}` has no healthcheck");
    }
    for expected in ["kafka", "topics", "serve", "switchyard", "producer", "prometheus", "jaeger", "grafana"] {
        assert!(services.contains_key(expected), "no `{expected}` service");
    }
    let deps = &c["services"]["switchyard"]["depends_on"];
    assert_eq!(deps["topics"]["condition"], "service_completed_successfully");
    assert_eq!(deps["serve"]["condition"], "service_healthy");
    let run = command(&c, "switchyard", &[]);
    assert!(run.contains(&"--listen".to_string()), "metrics on: {run:?}");
    let env = &c["services"]["switchyard"]["environment"];
    assert!(env["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str().unwrap().ends_with(":4318"), "traces to the OTLP/HTTP port");
    // The healthcheck probes the port the run listens on.
    let probe = c["services"]["switchyard"]["healthcheck"]["test"].as_sequence().unwrap();
    assert!(probe.iter().any(|a| a.as_str() == Some("http://localhost:9464/readyz")), "{probe:?}");
    assert!(run.iter().any(|a| a == "0.0.0.0:9464"));
}

#[test]
fn prometheus_config_is_valid_for_the_real_promtool() {
    let promtool = Path::new("/usr/bin/promtool");
    assert!(promtool.exists(), "promtool missing: run `make setup-peers` (Debian package `prometheus`)");
    let out =
        Command::new(promtool).arg("check").arg("config").arg(repo().join("docker/prometheus.yml")).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// Metric names a PromQL expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("switchyard_") {
        let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        out.push(name);
    }
    out
}

#[test]
fn the_services_commands_run_here_and_the_dashboard_matches_a_scrape() {
    let bootstrap = crate::broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let c = compose();
    let port = peers::free_port();
    let tables = dir.path().join("tables");
    let map = [
        ("/etc/switchyard/pipelines", repo().join("pipelines").display().to_string()),
        ("/var/lib/switchyard/tables", tables.display().to_string()),
        ("kafka:9092", bootstrap.clone()),
        ("0.0.0.0:9464", format!("127.0.0.1:{port}")),
        ("0.0.0.0:8080", "127.0.0.1:0".to_string()),
    ];
    // The topics job's topics, then the producer's command (fewer events).
    create_topics(&bootstrap, &[("transactions", 3), ("predictions-hybrid", 3), ("transactions-dlq", 1)]);
    let mut produce = command(&c, "producer", &map);
    let at = produce.iter().position(|a| a == "--events").unwrap();
    produce[at + 1] = "3000".into();
    let at = produce.iter().position(|a| a == "--rate").unwrap();
    produce[at + 1] = "0".into();
    let token = "demo-token-change-me";

    let serve = command(&c, "serve", &map);
    let mut serve = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(&serve)
        .env("FRAUD_API_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = command(&c, "switchyard", &map);
    let log = dir.path().join("run.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(&run)
        .env("FRAUD_API_TOKEN", token)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard")).args(&produce).output().unwrap();
    assert!(out.status.success(), "{produce:?}: {}", String::from_utf8_lossy(&out.stderr));

    // Every metric a dashboard query names.
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo().join("docker/grafana/dashboards/switchyard.json")).unwrap())
            .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut wanted: Vec<(String, String)> = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            wanted.extend(names.into_iter().map(|n| (p["title"].as_str().unwrap().to_string(), n)));
        }
    }

    // Ready, every event counted on /metrics, and every dashboard metric
    // exported (consumer lag comes with librdkafka's statistics, every 5 s).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let get = |path: &str| {
        rt.block_on(async {
            let r = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await.ok()?;
            Some((r.status().as_u16(), r.text().await.ok()?))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(child.try_wait().unwrap().is_none(), "{run:?} exited\n{}", std::fs::read_to_string(&log).unwrap());
        let ready = matches!(get("/readyz"), Some((200, _)));
        let scrape = get("/metrics").map(|(_, t)| t).unwrap_or_default();
        let exported: HashSet<&str> = scrape
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap())
            .collect();
        let consumed: f64 = scrape
            .lines()
            .filter(|l| l.starts_with("switchyard_records_consumed_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let missing: Vec<&(String, String)> = wanted.iter().filter(|(_, n)| !exported.contains(n.as_str())).collect();
        if ready && consumed >= 3000.0 && missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ready {ready}, {consumed} records counted; dashboard metrics not on /metrics (panel, metric): {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", std::fs::read_to_string(&log).unwrap());
    let _ = serve.kill();
    let _ = serve.wait();
}
