//! `switchyard bench`: the baselines the pipeline is measured against, run by
//! `scripts/bench.py` in the same session as the pipeline.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use switchyard_workers::registry;
use switchyard_workers::{BatchModel, ExecutionProviderKind, OnnxModel};

/// Raw ONNX Runtime throughput of a registry model at a fixed batch size:
/// one session, one thread, random inputs, no batcher. Returns rows/s.
pub fn ort(registry: &Path, model: &str, batch: usize, seconds: f64) -> anyhow::Result<f64> {
    switchyard_workers::init_runtime(None)?;
    let entry = registry::lookup(registry, model, None)?;
    let mut m = OnnxModel::load(&entry, 1, ExecutionProviderKind::Cpu)?;
    let width = m.width();
    // A fixed pseudo-random input (xorshift), so runs are comparable.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let input: Vec<f32> = (0..batch * width)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    m.run(&input, batch)?; // warm-up
    let start = Instant::now();
    let mut rows = 0usize;
    while start.elapsed().as_secs_f64() < seconds {
        m.run(&input, batch)?;
        rows += batch;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

/// Raw consume rate of `topic`: a consumer group member that only counts
/// messages, from the first message until `idle` passes without one.
/// Returns (messages, seconds).
pub fn consume(bootstrap: &str, topic: &str, group: &str, idle: Duration) -> anyhow::Result<(u64, f64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("queued.max.messages.kbytes", "16384")
        .create()
        .context("creating consumer")?;
    c.subscribe(&[topic])?;
    let mut n = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let started = Instant::now();
    loop {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                n += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {
                let waited = if first.is_some() { last.elapsed() } else { started.elapsed() };
                if waited >= idle.max(if first.is_some() { idle } else { Duration::from_secs(60) }) {
                    break;
                }
            }
        }
    }
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
    Ok((n, secs))
}

/// What `switchyard bench cloud` measures, against an in-process
/// `switchyard serve` on loopback.
#[derive(Debug, Clone)]
pub struct CloudBench {
    /// Model registry folder.
    pub registry: std::path::PathBuf,
    /// Model name (highest version).
    pub model: String,
    /// Configured requests per second of the rate-limit run.
    pub rps: f64,
    /// Length of the rate-limit run, in seconds.
    pub seconds: f64,
    /// Requests per latency measurement.
    pub requests: usize,
}

/// The cloud worker against its baselines, in one run: the rate it reaches
/// under excess demand against the configured limit; events per request
/// with coalescing; the latency it adds to a bare HTTP client posting the
/// same body to the same server.
pub async fn cloud(b: &CloudBench) -> anyhow::Result<serde_json::Value> {
    use std::sync::Arc;
    use switchyard_workers::cloud::{CloudInput, CloudWorker, CloudWorkerConfig, Protocol};

    let entry = registry::lookup(&b.registry, &b.model, None)?;
    let width = entry.metadata.feature_order.len();
    let input_name = entry.metadata.input.clone();
    let server = crate::serve::start(crate::serve::ServeOptions {
        registry: b.registry.clone(),
        models: vec![b.model.clone()],
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        auth: None,
        max_batch_size: 1024,
        max_queue_delay_ms: 0,
        instances: 1,
    })
    .await?;
    let url = format!("http://{}", server.addr);
    let server = tokio::spawn(server.until(std::future::pending()));

    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut row = move || -> Vec<f32> {
        (0..width)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    };
    let scanner: Arc<dyn switchyard_schemas::PiiScanner> =
        Arc::new(switchyard_router::DetectorSet(switchyard_router::Detector::ALL.to_vec()));
    let worker = |yaml: String| -> anyhow::Result<CloudWorker> {
        let cfg: CloudWorkerConfig = serde_yaml::from_str(&yaml)?;
        Ok(CloudWorker::start("bench", Protocol::KserveV2, &cfg, Path::new("."), &[], width, scanner.clone())?)
    };
    let base = format!(
        "{{url: '{url}', model: {}, input_name: {input_name}, timeout_ms: 5000, \
         retry: {{max_attempts: 1}}, circuit_breaker: {{failure_threshold: 1000000}}",
        b.model
    );

    // 1. Added latency: the same single-event request, bare client vs worker.
    let http = reqwest::Client::new();
    let infer_url = format!("{url}/v2/models/{}/infer", b.model);
    let single = worker(format!("{base}, max_batch_size: 1, max_queue_delay_ms: 0, max_concurrency: 1}}"))?;
    // Interleaved, so drift of the machine affects both alike.
    let mut bare = Vec::with_capacity(b.requests);
    let mut client = Vec::with_capacity(b.requests);
    for i in 0..b.requests + 20 {
        let body = serde_json::json!({"id": format!("b{i}"),
            "inputs": [{"name": input_name, "shape": [1, width], "datatype": "FP32", "data": row()}]});
        let t = Instant::now();
        let r = http
            .post(&infer_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await?
            .error_for_status()?;
        let _: serde_json::Value = serde_json::from_slice(&r.bytes().await?)?;
        let took = t.elapsed();
        let input = CloudInput { id: format!("c{i}"), features: row(), values: Vec::new(), trace: None };
        let t = Instant::now();
        let answer = single.infer(vec![input]).await.remove(0);
        answer.map_err(|e| anyhow::anyhow!("worker request failed: {e}"))?;
        if i >= 20 {
            bare.push(took);
            client.push(t.elapsed());
        }
    }
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    let p99 = |v: &Vec<Duration>| v[(v.len() * 99 / 100).min(v.len() - 1)].as_secs_f64() * 1000.0;
    let (bare_p50, client_p50) = (p50(&mut bare), p50(&mut client));
    let (bare_p99, client_p99) = (p99(&bare), p99(&client));

    // 2. Rate limit under excess demand: twice the events the limit allows,
    //    one event per request, 8 in flight, the default burst.
    let limited = worker(format!(
        "{base}, max_batch_size: 1, max_queue_delay_ms: 0, max_concurrency: 8, \
         rate_limit: {{requests_per_second: {}}}}}",
        b.rps
    ))?;
    let rate_burst = switchyard_workers::cloud::default_burst(b.rps);
    let demand = (b.rps * b.seconds * 2.0) as usize;
    let inputs: Vec<CloudInput> = (0..demand)
        .map(|i| CloudInput { id: format!("r{i}"), features: row(), values: Vec::new(), trace: None })
        .collect();
    let limited = Arc::new(limited);
    let run = {
        let w = limited.clone();
        tokio::spawn(async move { w.infer(inputs).await })
    };
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(b.seconds)).await;
    // Attempts are counted as they pass the limiter, i.e. as they go out.
    let sent = limited.snapshot().attempts;
    let elapsed = start.elapsed().as_secs_f64();
    let achieved = sent as f64 / elapsed;
    let answers = run.await?;
    let failed = answers.iter().filter(|a| a.is_err()).count();

    // 3. Coalescing: 4096 events at once, and a steady stream of single
    //    events, into a worker with max_batch_size 64 / max_queue_delay_ms 5.
    let coalescing =
        Arc::new(worker(format!("{base}, max_batch_size: 64, max_queue_delay_ms: 5, max_concurrency: 4}}"))?);
    let burst: Vec<CloudInput> = (0..4096)
        .map(|i| CloudInput { id: format!("k{i}"), features: row(), values: Vec::new(), trace: None })
        .collect();
    let t = Instant::now();
    let burst_failed = coalescing.infer(burst).await.iter().filter(|a| a.is_err()).count();
    let burst_secs = t.elapsed().as_secs_f64();
    let after_burst = coalescing.snapshot();
    let steady_rate = 2000.0;
    let mut tasks = Vec::new();
    let t = Instant::now();
    for i in 0..2000usize {
        let due = Duration::from_secs_f64(i as f64 / steady_rate);
        if let Some(wait) = due.checked_sub(t.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let w = coalescing.clone();
        let input = CloudInput { id: format!("s{i}"), features: row(), values: Vec::new(), trace: None };
        tasks.push(tokio::spawn(async move { w.infer(vec![input]).await.remove(0).is_err() }));
    }
    let mut steady_failed = 0;
    for task in tasks {
        steady_failed += usize::from(task.await?);
    }
    let after_steady = coalescing.snapshot();
    server.abort();

    anyhow::ensure!(
        failed + burst_failed + steady_failed == 0,
        "{} requests failed against the local server",
        failed + burst_failed + steady_failed
    );
    Ok(serde_json::json!({
        "bench": "cloud",
        "latency": {
            "requests": b.requests,
            "bare_http_p50_ms": bare_p50, "bare_http_p99_ms": bare_p99,
            "worker_p50_ms": client_p50, "worker_p99_ms": client_p99,
            "added_p50_ms": client_p50 - bare_p50, "added_p99_ms": client_p99 - bare_p99,
        },
        "rate_limit": {
            "limit_rps": b.rps, "seconds": elapsed, "demand_events": demand,
            "requests": sent, "achieved_rps": achieved, "ratio": achieved / b.rps,
            "burst": rate_burst, "most_allowed": (b.rps * elapsed).floor() + f64::from(rate_burst),
        },
        "coalescing": {
            "max_batch_size": 64, "max_queue_delay_ms": 5,
            "burst_events": 4096, "burst_requests": after_burst.requests,
            "burst_events_per_request": 4096.0 / after_burst.requests.max(1) as f64,
            "burst_events_per_s": 4096.0 / burst_secs,
            "steady_rate": steady_rate, "steady_events": 2000,
            "steady_requests": after_steady.requests - after_burst.requests,
            "steady_events_per_request": 2000.0 / (after_steady.requests - after_burst.requests).max(1) as f64,
        },
    }))
}

/// 2026-01-01T00:00:00Z in µs: the drift benchmark's reference day; the
/// current window is the day after.
const DRIFT_DAY0_US: i64 = 1_767_225_600_000_000;

/// Feature names of the drift benchmark's data: six numbers, ten 0/1 columns
/// (the shape of the fraud model's features).
fn drift_features() -> Vec<String> {
    (0..6).map(|i| format!("num{i}")).chain((0..10).map(|i| format!("flag{i}"))).collect()
}

/// Writes `rows` synthetic prediction rows to `tables/predictions`: half
/// spread over the reference day (2026-01-01), half over the current day
/// (2026-01-02) with drift in `num0` and `num1`. Written by the Parquet sink, in rolls of
/// 250k rows.
fn drift_data(tables: &Path, rows: usize) -> anyhow::Result<()> {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use switchyard_schemas::{Lineage, ModelRef, Prediction, RouteInfo};

    let mut rng = StdRng::seed_from_u64(11);
    let day0 = DRIFT_DAY0_US;
    let lineage = Lineage {
        pipeline: "bench".into(),
        model: ModelRef {
            name: "fraud".into(),
            version: "1".into(),
            provider: "local/cpu".into(),
            ..Default::default()
        },
        route: RouteInfo { route: "fraud".into(), rule_id: "default".into(), ..Default::default() },
        ..Default::default()
    };
    let per_file = 250_000;
    let mut written = 0;
    let mut sink = switchyard_sink::ParquetSink::open(&tables.into(), per_file, Duration::from_secs(3600))?;
    while written < rows {
        let current = written >= rows / 2;
        let half_end = if current { rows } else { rows / 2 };
        let n = per_file.min(half_end - written);
        let day = if current { 1 } else { 0 };
        // Rows spread evenly over their day.
        let step = 86_400_000_000 / (rows / 2).max(1) as i64;
        let start = day0 + day * 86_400_000_000 + (written % (rows / 2).max(1)) as i64 * step;
        let preds: Vec<Prediction> = (0..n)
            .map(|i| {
                let mut l = lineage.clone();
                l.source.ingest_time_us = start + i as i64 * step;
                l.source.kafka_timestamp_ms = Some(l.source.ingest_time_us / 1000);
                let mut normal = || {
                    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                };
                let mut features: Vec<f32> = (0..6).map(|_| normal()).collect();
                if current {
                    features[0] = features[0] * 1.5 + 0.8;
                    features[1] += 0.5;
                }
                features.extend((0..10).map(|k| f32::from(rng.random::<f32>() < 0.1 + 0.05 * k as f32)));
                let score = 1.0 / (1.0 + (-(features[0] + features[1])).exp());
                Prediction {
                    key: String::new(),
                    score: Some(f64::from(score)),
                    label: Some(i64::from(score >= 0.5)),
                    outputs: None,
                    features,
                    latency_us: 100,
                    lineage: l,
                }
            })
            .collect();
        sink.write_predictions(&preds)?;
        sink.roll()?;
        written += n;
        eprint!("\rwriting benchmark data: {written}/{rows} rows");
    }
    eprintln!();
    Ok(())
}

/// What one process of the drift benchmark times.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DriftPart {
    /// A DataFusion scan of the columns the report reads.
    Scan,
    /// The report.
    Report,
}

/// The drift benchmark's request: 2026-01-01 against 2026-01-02, with the
/// metric over time in 12 buckets as `switchyard drift` draws by default.
fn drift_request() -> switchyard_analysis::DriftRequest {
    use switchyard_analysis::{DriftRequest, Reference, Window};
    let (day0, day) = (DRIFT_DAY0_US, 86_400_000_000);
    DriftRequest {
        model: "fraud".into(),
        feature_names: drift_features(),
        reference: Reference::Window(Window::new(day0, day0 + day)),
        current: Window::new(day0 + day, day0 + 2 * day),
        tests: Default::default(),
        drift_share: 0.5,
        buckets: 12,
    }
}

/// Times one part of the drift benchmark in this process, from opening the
/// tables to the result.
pub async fn drift_part(dir: &Path, part: DriftPart) -> anyhow::Result<serde_json::Value> {
    use futures::StreamExt as _;
    let req = drift_request();
    let t = Instant::now();
    let ctx = switchyard_analysis::catalog::open(&dir.into()).await?;
    Ok(match part {
        DriftPart::Scan => {
            let (reference, current) = switchyard_analysis::drift::window::input_frames(&ctx, &req).await?;
            let mut rows = 0;
            // Each window's partitions read at once, on all cores, as the
            // report reads them.
            for df in [reference, current] {
                let tasks: Vec<_> = df
                    .execute_stream_partitioned()
                    .await?
                    .into_iter()
                    .map(|mut s| {
                        tokio::spawn(async move {
                            let mut rows = 0;
                            while let Some(b) = s.next().await {
                                rows += b?.num_rows();
                            }
                            Ok::<_, anyhow::Error>(rows)
                        })
                    })
                    .collect();
                for t in tasks {
                    rows += t.await??;
                }
            }
            serde_json::json!({"part": "scan", "s": t.elapsed().as_secs_f64(), "rows": rows})
        }
        DriftPart::Report => {
            let report = switchyard_analysis::analyse(&ctx, &req).await?;
            let s = t.elapsed().as_secs_f64();
            let g = report.groups.first().context("the drift report found no rows in the current window")?;
            serde_json::json!({
                "part": "report",
                "s": s,
                "reference_rows": report.reference_rows,
                "current_rows": g.rows,
                "columns": g.columns.len(),
                "buckets": g.buckets.len(),
                "filled_buckets": g.columns[0].over_time.iter().filter(|v| v.is_finite()).count(),
                "drifted": g.drifted(),
                "exact": g.columns.iter().all(|c| c.stats.exact),
            })
        }
    })
}

/// The drift report over `rows` prediction rows (half reference, half
/// current) against a DataFusion scan of the columns it reads, in the same
/// run: each timing in a fresh process (as `switchyard drift` runs),
/// alternating scan and report, the median of `repeat` each. The data is
/// written to `dir` once and reused while its row count matches.
pub async fn drift(dir: &Path, rows: usize, repeat: usize) -> anyhow::Result<serde_json::Value> {
    // The marker names the layout too: data of an older layout is rewritten.
    let marker = dir.join("rows");
    let layout = format!("{rows} spread-over-day");
    if std::fs::read_to_string(&marker).ok().as_deref().map(str::trim) != Some(layout.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join("predictions"));
        let d = dir.to_path_buf();
        tokio::task::spawn_blocking(move || drift_data(&d, rows)).await??;
        std::fs::write(&marker, &layout)?;
    }
    let exe = std::env::current_exe().context("finding the switchyard binary")?;
    let one = |part: &str| -> anyhow::Result<serde_json::Value> {
        let out = std::process::Command::new(&exe)
            .args(["bench", "drift", "--rows", &rows.to_string(), "--one", part, "--dir"])
            .arg(dir)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        anyhow::ensure!(out.status.success(), "the drift benchmark's {part} process failed");
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut report_s, mut scan_s) = (Vec::new(), Vec::new());
    let mut last = None;
    let mut scanned = 0;
    for _ in 0..repeat.max(1) {
        let scan = one("scan")?;
        scan_s.push(scan["s"].as_f64().context("scan time")?);
        scanned = scan["rows"].as_u64().context("scan rows")?;
        let report = one("report")?;
        report_s.push(report["s"].as_f64().context("report time")?);
        last = Some(report);
    }
    let report = last.context("no run")?;
    let (report_s, scan_s) = (median(report_s), median(scan_s));
    Ok(serde_json::json!({
        "bench": "drift",
        "rows": rows,
        "reference_rows": report["reference_rows"],
        "current_rows": report["current_rows"],
        "columns": report["columns"],
        "buckets": report["buckets"],
        "filled_buckets": report["filled_buckets"],
        "drifted": report["drifted"],
        "exact": report["exact"],
        "report_s": report_s,
        "scan_rows": scanned,
        "scan_s": scan_s,
        "ratio": report_s / scan_s,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "fresh_process": true,
    }))
}
