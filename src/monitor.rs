//! The retraining loop's moving parts in the worker: the feedback consumer
//! (feedback topics → `feedback` table, bad records → `dlq`), the drift and
//! accuracy monitor on its schedule, and the `drift` and `monitor` commands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use switchyard_ingest::KafkaSource;
use switchyard_sink::drift::{self, render, DriftRequest, Monitor, Reference, Window};
use switchyard_sink::{catalog, tables, Offsets, ParquetSink};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::manifest::{Loaded, SourceConfig};
use crate::resolve::{Worker, Workers};

/// What the feedback consumer did.
#[derive(Debug, Default, Clone, Copy)]
pub struct FeedbackSummary {
    /// Feedback records written.
    pub records: u64,
    /// Bad feedback records sent to the DLQ table.
    pub dlq: u64,
}

/// Starts the feedback consumer when the manifest has a `feedback:`
/// section; it stops (rolling and committing what it holds) when `stop`
/// turns true.
pub fn spawn_feedback(
    loaded: &Loaded,
    bootstrap: &str,
    tables: &Path,
    dlq: Option<&switchyard_sink::KafkaSinkConfig>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<anyhow::Result<FeedbackSummary>>>> {
    let m = &loaded.manifest;
    let Some(fb) = m.feedback.clone() else { return Ok(None) };
    let SourceConfig::Kafka(src) = &m.source;
    let mut kcfg = src.clone();
    kcfg.topics = fb.topics.clone();
    kcfg.group_id = fb.group_id.clone().unwrap_or_else(|| format!("{}-feedback", src.group_id));
    kcfg.bootstrap_servers = fb.bootstrap_servers.clone().unwrap_or_else(|| bootstrap.to_string());
    kcfg.properties.extend(fb.properties.clone());
    let pq = m.sinks.parquet.as_ref().context("sinks.parquet is required")?;
    let mut parquet = ParquetSink::open_feedback(tables, pq.roll_max_rows, Duration::from_millis(pq.roll_interval_ms))
        .with_context(|| format!("opening the feedback table at {}", tables.display()))?;
    let pipeline = m.name.clone();
    let mut source = KafkaSource::start(&kcfg, None, Duration::from_secs(3600))
        .with_context(|| format!("consuming feedback topics {}", fb.topics.join(", ")))?;
    let committer = source.committer();
    let dlq = dlq
        .map(|k| switchyard_sink::KafkaSink::new(k, bootstrap))
        .transpose()
        .context("creating the producer for bad feedback (sinks.kafka.dlq_topic)")?;
    Ok(Some(tokio::spawn(async move {
        let mut stop = stop;
        let mut summary = FeedbackSummary::default();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let roll = |parquet: &mut ParquetSink| -> anyhow::Result<()> {
            let r = parquet.roll().context("rolling the feedback table")?;
            if !r.offsets.is_empty() {
                let next: HashMap<(String, i32), i64> = r.offsets.into_iter().map(|(k, v)| (k, v + 1)).collect();
                if let Err(e) = committer.commit(&next) {
                    tracing::warn!(error = %e, "feedback offset commit failed; the next roll commits again");
                }
            }
            Ok(())
        };
        loop {
            tokio::select! {
                chunk = source.next_chunk() => {
                    let Some(chunk) = chunk else { break };
                    let (mut good, mut bad, mut seen) = (Vec::new(), Vec::new(), Offsets::new());
                    for raw in &chunk {
                        let k = seen.entry((raw.topic.clone(), raw.partition)).or_insert(raw.offset);
                        *k = (*k).max(raw.offset);
                        if parquet.is_durable(&raw.topic, raw.partition, raw.offset) {
                            continue; // replayed after a crash: already in the table
                        }
                        match fb.decode(raw, &pipeline) {
                            Ok(f) => good.push(f),
                            Err(d) => {
                                tracing::warn!(error = %d.message, "bad feedback record to the DLQ");
                                bad.push(*d);
                            }
                        }
                    }
                    summary.records += good.len() as u64;
                    summary.dlq += bad.len() as u64;
                    // Bad feedback reaches the DLQ topic before its offset can
                    // be committed (with the roll that holds its DLQ row).
                    if let (Some(sink), false) = (&dlq, bad.is_empty()) {
                        sink.send_dlq(&bad)
                            .await
                            .context("sending bad feedback to the DLQ topic")?
                            .wait()
                            .await
                            .context("sending bad feedback to the DLQ topic")?;
                    }
                    tokio::task::block_in_place(|| -> anyhow::Result<()> {
                        parquet.write_feedback(&good)?;
                        parquet.write_dlq(&bad)?;
                        parquet.note_offsets(&seen);
                        if parquet.roll_due() {
                            roll(&mut parquet)?;
                        }
                        Ok(())
                    })?;
                }
                _ = tick.tick() => {
                    if parquet.roll_due() {
                        tokio::task::block_in_place(|| roll(&mut parquet))?;
                    }
                }
                _ = stop.changed() => break,
            }
        }
        tokio::task::block_in_place(|| roll(&mut parquet))?;
        source.stop().await?;
        Ok(summary)
    })))
}

/// Starts, for each local worker with `reload`, the task that reads the
/// registry every `poll_ms` and takes up new versions; each change goes to
/// the `audit` table. The tasks end when `stop` turns true and return what
/// changed.
pub fn spawn_reload(
    workers: &Arc<Workers>,
    pipeline: &str,
    tables: &Path,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<Vec<String>>> {
    let mut tasks = Vec::new();
    for (name, w) in &workers.list {
        let Worker::Local(worker) = w else { continue };
        let Some(every) = worker.poll_interval() else { continue };
        let (worker, name, pipeline, tables) =
            (worker.clone(), name.clone(), pipeline.to_string(), tables.to_path_buf());
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut changes = Vec::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                let w = worker.clone();
                let events = match tokio::task::spawn_blocking(move || w.poll()).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(worker = %name, error = %e, "model reload failed");
                        continue;
                    }
                };
                let model = worker.model().name;
                for e in events {
                    if let Err(err) = drift::monitor::audit(
                        &tables,
                        now_us(),
                        &pipeline,
                        e.event,
                        &model,
                        &e.version,
                        &name,
                        &e.detail,
                    ) {
                        tracing::error!(error = %err, "cannot write the audit table");
                    }
                    changes.push(format!("{} {}: {}", e.event, e.version, e.detail));
                }
            }
            changes
        }));
    }
    tasks
}

/// Builds the manifest's monitor, if it has one.
pub fn build_monitor(loaded: &Loaded, bootstrap: &str, tables: &Path) -> anyhow::Result<Option<Monitor>> {
    let Some(cfg) = loaded.manifest.monitor.clone() else { return Ok(None) };
    let (model, registry) = loaded.monitored_model().context("monitor.worker must name an onnx worker")?;
    let monitor = Monitor::new(
        cfg,
        model,
        loaded.feature_names(),
        &loaded.base,
        tables.to_path_buf(),
        registry,
        loaded.manifest.name.clone(),
        loaded.hash.clone(),
        bootstrap,
    )?;
    Ok(Some(monitor))
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Runs the monitor every interval until `stop` turns true. A failed
/// evaluation is logged and retried at the next tick: monitoring must not
/// stop the pipeline.
pub fn spawn_monitor(monitor: Monitor, mut stop: watch::Receiver<bool>) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(monitor.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut emitted = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => match monitor.evaluate(now_us()).await {
                    Ok(e) => {
                        emitted += e.emitted.len() as u64;
                        for g in &e.report.groups {
                            tracing::info!(version = %g.model_version, route = %g.route, rows = g.rows,
                                drift_share = g.drift_share, drifted = ?g.drifted(), "drift evaluated");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "drift evaluation failed; retrying at the next interval"),
                },
                _ = stop.changed() => break,
            }
        }
        emitted
    })
}

/// `switchyard monitor`: evaluate now (once, or on the schedule).
pub async fn monitor_command(
    loaded: &Loaded,
    tables: Option<PathBuf>,
    bootstrap: Option<String>,
    once: bool,
    now: Option<String>,
) -> anyhow::Result<()> {
    let problems = loaded.validate();
    anyhow::ensure!(problems.is_empty(), "{}: invalid manifest:\n{problems}", loaded.path.display());
    let tables = tables.or_else(|| loaded.tables_root()).context("sinks.parquet.path is required")?;
    let SourceConfig::Kafka(k) = &loaded.manifest.source;
    let bootstrap = bootstrap.unwrap_or_else(|| k.bootstrap_servers.clone());
    let monitor = build_monitor(loaded, &bootstrap, &tables)?
        .with_context(|| format!("{}: has no `monitor:` section", loaded.path.display()))?;
    if once {
        let at = match now {
            Some(t) => parse_time(&t)?,
            None => now_us(),
        };
        let e = monitor.evaluate(at).await?;
        print!("{}", render::text(&e.report, &e.accuracy, &[]));
        for t in &e.emitted {
            println!(
                "\nretrain trigger {} for {} v{} ({}): {}",
                t.trigger_id, t.model.name, t.model.version, t.reason, t.summary
            );
        }
        for (v, why) in &e.suppressed {
            println!("\nretrain trigger for v{v} held back: {why}");
        }
        match &e.rollout {
            Some(drift::RolloutOutcome::Waiting { candidate, labelled }) => {
                println!("\ncandidate v{candidate}: waiting, {labelled} labelled predictions so far")
            }
            Some(drift::RolloutOutcome::Promoted(d)) => println!("\ncandidate v{} promoted: {}", d.version, d.reason),
            Some(drift::RolloutOutcome::RolledBack(d)) => {
                println!("\ncandidate v{} rolled back: {}", d.version, d.reason)
            }
            None => {}
        }
        if e.emitted.is_empty() && e.suppressed.is_empty() {
            println!("\nno retrain trigger: nothing crossed a threshold");
        }
        return Ok(());
    }
    let (tx, rx) = watch::channel(false);
    let task = spawn_monitor(monitor, rx);
    crate::pipeline::shutdown_signal().await;
    let _ = tx.send(true);
    let n = task.await?;
    println!("monitor stopped; {n} trigger(s) emitted");
    Ok(())
}

/// RFC 3339 → µs.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    drift::monitor::parse_time(s).map_err(anyhow::Error::msg)
}

/// `30m`, `2h`, `7d`, `90s` → µs.
pub fn parse_duration(s: &str) -> anyhow::Result<i64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().map_err(|_| anyhow::anyhow!("`{s}`: expected a number and a unit, e.g. 30m, 2h, 7d"))?;
    let unit_us = match unit {
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => anyhow::bail!("`{s}`: unit must be s, m, h or d"),
    };
    Ok(n * unit_us)
}

/// Options of `switchyard drift`.
#[derive(clap::Args)]
pub struct DriftOptions {
    /// Override the manifest's table folder.
    #[arg(long)]
    pub tables: Option<PathBuf>,
    /// Current window start (RFC 3339).
    #[arg(long)]
    pub current_start: Option<String>,
    /// Current window end (RFC 3339; default: just after the newest prediction).
    #[arg(long)]
    pub current_end: Option<String>,
    /// Current window length, e.g. 30m, 2h, 7d (default: monitor.window_ms, else 1h).
    #[arg(long, conflicts_with = "current_start")]
    pub last: Option<String>,
    /// Reference window start (RFC 3339; default: monitor.reference).
    #[arg(long, requires = "reference_end")]
    pub reference_start: Option<String>,
    /// Reference window end (RFC 3339).
    #[arg(long, requires = "reference_start")]
    pub reference_end: Option<String>,
    /// Reference dataset: Parquet with a `features` column (and `score`).
    #[arg(long, conflicts_with_all = ["reference_start", "reference_end"])]
    pub reference_dataset: Option<PathBuf>,
    /// Split the current window into this many buckets for the metric over time.
    #[arg(long, default_value_t = 12)]
    pub buckets: usize,
    /// Write a self-contained HTML report (tables and SVG charts) here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Write every chart as an SVG file into this folder.
    #[arg(long)]
    pub svg_dir: Option<PathBuf>,
    /// Write every chart as a PNG file (twice the SVG's size) into this folder.
    #[arg(long)]
    pub png_dir: Option<PathBuf>,
    /// Append the results to the `drift` table.
    #[arg(long)]
    pub write: bool,
}

/// `switchyard drift`: the report for the manifest's model and a window.
pub async fn drift_command(loaded: &Loaded, o: DriftOptions) -> anyhow::Result<()> {
    let tables = o.tables.clone().or_else(|| loaded.tables_root()).context("sinks.parquet.path is required")?;
    anyhow::ensure!(tables.exists(), "no tables at {} (run a pipeline first, or pass --tables)", tables.display());
    let model = match loaded.monitored_model() {
        Some((m, _)) => m,
        None => loaded
            .manifest
            .workers
            .values()
            .find_map(|w| match w {
                switchyard_workers::WorkerConfig::Onnx(c) => Some(c.model.clone()),
                _ => None,
            })
            .context("the manifest has no onnx worker whose model could be analysed")?,
    };
    let ctx = catalog::open(&tables).await?;
    let mon = loaded.manifest.monitor.as_ref();
    let reference = match (&o.reference_start, &o.reference_end, &o.reference_dataset) {
        (Some(s), Some(e), None) => Reference::Window(Window::new(parse_time(s)?, parse_time(e)?)),
        (None, None, Some(d)) => Reference::Dataset(d.clone()),
        (None, None, None) => match mon {
            Some(m) => m.reference(&loaded.base)?,
            None => anyhow::bail!(
                "no reference: pass --reference-start and --reference-end, or --reference-dataset (or add `monitor.reference` to the manifest)"
            ),
        },
        _ => anyhow::bail!("give --reference-start with --reference-end, or --reference-dataset"),
    };
    let end = match &o.current_end {
        Some(e) => parse_time(e)?,
        None => drift::analysis::newest_event_time(&ctx, &model).await?.map(|t| t + 1).unwrap_or_else(now_us),
    };
    let start = match (&o.current_start, &o.last) {
        (Some(s), _) => parse_time(s)?,
        (None, Some(l)) => end - parse_duration(l)?,
        (None, None) => end - mon.map_or(3_600_000_000, |m| m.window_ms as i64 * 1000),
    };
    anyhow::ensure!(start < end, "the current window is empty: start {} is not before end {}", start, end);
    let req = DriftRequest {
        model: model.clone(),
        feature_names: loaded.feature_names(),
        reference,
        current: Window::new(start, end),
        tests: mon.map(|m| m.test_choices()).unwrap_or_default(),
        drift_share: mon.map_or(0.5, |m| m.drift_share),
        buckets: o.buckets,
    };
    let started = std::time::Instant::now();
    let report = drift::analyse(&ctx, &req).await?;
    let analysed = started.elapsed();
    anyhow::ensure!(report.reference_rows > 0, "the reference ({}) has no rows of model `{model}`", report.reference);
    let acc = drift::accuracy(&ctx, &model, req.current).await?;
    let agreement = drift::agreement(&ctx, req.current).await?;
    print!("{}", render::text(&report, &acc, &agreement));
    println!("\nanalysed in {:.2} s", analysed.as_secs_f64());
    if let Some(path) = &o.html {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(path, render::html(&report, &acc, &agreement))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("HTML report: {}", path.display());
    }
    let png = match &o.png_dir {
        Some(dir) => Some((dir, Rasteriser::new()?)),
        None => None,
    };
    if o.svg_dir.is_some() || png.is_some() {
        let mut charts = Vec::new();
        for g in &report.groups {
            for c in &g.columns {
                let stem = format!("{}-{}-{}", g.model_version, g.route, c.column).replace(['/', ' ', '='], "_");
                charts.push((stem.clone(), render::distribution_svg(&c.column, &c.stats.shares)));
                if !c.over_time.is_empty() {
                    charts.push((format!("{stem}-over-time"), render::over_time_svg(c, &g.buckets)));
                }
            }
        }
        for (dir, ext) in [(o.svg_dir.as_ref(), "svg"), (png.as_ref().map(|p| p.0), "png")] {
            let Some(dir) = dir else { continue };
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (stem, svg) in &charts {
                let path = dir.join(format!("{stem}.{ext}"));
                let bytes = match &png {
                    Some((_, r)) if ext == "png" => {
                        r.png(svg).with_context(|| format!("drawing {}", path.display()))?
                    }
                    _ => svg.clone().into_bytes(),
                };
                std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            }
            println!("{} charts in {}", charts.len(), dir.display());
        }
    }
    if o.write && !report.groups.is_empty() {
        let path = tables::append(&tables, tables::DRIFT, report.computed_at_us, &report.to_batch()?)?;
        println!("drift table: {}", path.display());
    }
    Ok(())
}

/// SVG charts to PNG, text in the machine's fonts (loaded once).
struct Rasteriser {
    options: resvg::usvg::Options<'static>,
}

impl Rasteriser {
    fn new() -> anyhow::Result<Self> {
        let mut options = resvg::usvg::Options::default();
        let db = options.fontdb_mut();
        db.load_system_fonts();
        if db.is_empty() {
            tracing::warn!("no system fonts found: PNG charts are drawn without their text (the SVG and HTML have it)");
        }
        // `sans-serif` resolves to Arial unless told otherwise: take the
        // first sans-serif family this machine has.
        let has = |name: &str| db.faces().any(|f| f.families.iter().any(|(n, _)| n == name));
        if let Some(name) =
            ["Arial", "Helvetica", "DejaVu Sans", "Liberation Sans", "Noto Sans"].into_iter().find(|n| has(n))
        {
            db.set_sans_serif_family(name);
        }
        Ok(Self { options })
    }

    /// The chart at twice its size, as PNG.
    fn png(&self, svg: &str) -> anyhow::Result<Vec<u8>> {
        use resvg::tiny_skia::{Pixmap, Transform};
        let tree = resvg::usvg::Tree::from_str(svg, &self.options).context("reading the chart's SVG")?;
        let size = tree.size().to_int_size();
        let mut pixmap = Pixmap::new(size.width() * 2, size.height() * 2).context("an empty chart")?;
        pixmap.fill(resvg::tiny_skia::Color::WHITE);
        resvg::render(&tree, Transform::from_scale(2.0, 2.0), &mut pixmap.as_mut());
        pixmap.encode_png().context("encoding PNG")
    }
}
