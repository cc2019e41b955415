//! `switchyard drift`: the drift report of the manifest's model for a
//! window, with accuracy against feedback; as a table, and as HTML, SVG
//! and PNG charts.

use std::path::PathBuf;
use switchyard_schemas::now_us;

use anyhow::Context as _;
use switchyard_analysis::render::{self, Rasteriser};
use switchyard_analysis::{accuracy, agreement, analyse, catalog, drift, tables, DriftRequest, Reference, Window};
use switchyard_schemas::tables::DRIFT;

use crate::manifest::Plan;

/// RFC 3339 → µs.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    switchyard_analysis::monitor::parse_time(s).map_err(anyhow::Error::msg)
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
pub async fn command(plan: &Plan, o: DriftOptions) -> anyhow::Result<()> {
    let tables = &plan.tables;
    anyhow::ensure!(
        tables.local().is_none_or(|p| p.exists()),
        "no tables at {tables} (run a pipeline first, or pass --tables)"
    );
    let model = plan.analysed_model().context("the manifest has no onnx worker whose model could be analysed")?;
    let ctx = catalog::open(tables).await?;
    let mon = plan.manifest().monitor.as_ref();
    let reference = match (&o.reference_start, &o.reference_end, &o.reference_dataset) {
        (Some(s), Some(e), None) => Reference::Window(Window::new(parse_time(s)?, parse_time(e)?)),
        (None, None, Some(d)) => Reference::Dataset(d.clone()),
        (None, None, None) => match mon {
            Some(m) => m.reference(&plan.loaded.base)?,
            None => anyhow::bail!(
                "no reference: pass --reference-start and --reference-end, or --reference-dataset (or add `monitor.reference` to the manifest)"
            ),
        },
        _ => anyhow::bail!("give --reference-start with --reference-end, or --reference-dataset"),
    };
    let end = match &o.current_end {
        Some(e) => parse_time(e)?,
        None => drift::newest_event_time(&ctx, &model).await?.map(|t| t + 1).unwrap_or_else(now_us),
    };
    let start = match (&o.current_start, &o.last) {
        (Some(s), _) => parse_time(s)?,
        (None, Some(l)) => end - parse_duration(l)?,
        (None, None) => end - mon.map_or(3_600_000_000, |m| m.window_ms as i64 * 1000),
    };
    anyhow::ensure!(start < end, "the current window is empty: start {} is not before end {}", start, end);
    let req = DriftRequest {
        model: model.clone(),
        feature_names: plan.features.clone(),
        reference,
        current: Window::new(start, end),
        tests: mon.map(|m| m.test_choices()).unwrap_or_default(),
        drift_share: mon.map_or(0.5, |m| m.drift_share),
        buckets: o.buckets,
    };
    let started = std::time::Instant::now();
    let report = analyse(&ctx, &req).await?;
    let analysed = started.elapsed();
    anyhow::ensure!(report.reference_rows > 0, "the reference ({}) has no rows of model `{model}`", report.reference);
    let acc = accuracy(&ctx, &model, req.current).await?;
    let agreement = agreement(&ctx, req.current).await?;
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
    let png = o.png_dir.as_ref().map(|dir| (dir, Rasteriser::new()));
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
        let path = tables::append(tables, DRIFT, report.computed_at_us, &report.to_batch()?)?;
        println!("drift table: {path}");
    }
    Ok(())
}
