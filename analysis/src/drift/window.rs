//! Drift of a model's inputs and scores: reference window vs current window,
//! per model version and route, over the `predictions` table.
//!
//! DataFusion selects the windows (partition pruning by `date`, filters on
//! model, shadow and time) and streams the `features` and `score` columns;
//! the columns are then compared one by one with [`super::stats::comparison`],
//! on all cores.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{coalesce, col, lit, DataFrame, Expr, ParquetReadOptions, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use serde::Serialize;

use super::chunk::{Chunk, Held};
use super::stats::{comparison, ColumnStats, TestChoice, NO_BUCKET};
use crate::tables::ts_column;
use crate::{Error, Result};
use switchyard_schemas::tables::date_partition as date_of;

/// Name of the score column in drift results.
pub const SCORE: &str = "score";
/// Name of the dataset-level row in the `drift` table.
pub const DATASET: &str = "(dataset)";

/// A half-open time range `[start, end)` over the event time
/// (`kafka_timestamp`, else `ingest_time`), in µs; open ends are unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Inclusive start.
    pub start_us: Option<i64>,
    /// Exclusive end.
    pub end_us: Option<i64>,
}

impl Window {
    /// `[start, end)`.
    pub fn new(start_us: i64, end_us: i64) -> Self {
        Self { start_us: Some(start_us), end_us: Some(end_us) }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |v: Option<i64>| v.map(format_time).unwrap_or_else(|| "…".into());
        write!(f, "{} – {}", t(self.start_us), t(self.end_us))
    }
}

/// RFC 3339 (UTC, seconds) of a µs timestamp.
pub fn format_time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| us.to_string())
}

/// What the current window is compared with.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reference {
    /// The model's own predictions in a time window (all versions and routes).
    Window(Window),
    /// A pinned Parquet dataset (file or folder) with a `features`
    /// list<float32> column and optionally `score`.
    Dataset(PathBuf),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Window(w) => write!(f, "window {w}"),
            Reference::Dataset(p) => write!(f, "dataset {}", p.display()),
        }
    }
}

/// What to analyse.
#[derive(Debug, Clone)]
pub struct DriftRequest {
    /// `predictions.model_name`.
    pub model: String,
    /// Names of the feature vector's positions (the model's feature order).
    pub feature_names: Vec<String>,
    /// The reference.
    pub reference: Reference,
    /// The current window.
    pub current: Window,
    /// Test/threshold per column; absent columns use Evidently's defaults.
    pub tests: BTreeMap<String, TestChoice>,
    /// Share of drifted features at which the dataset counts as drifted
    /// (Evidently's default: 0.5).
    pub drift_share: f64,
    /// Split the current window into this many buckets for the metric over
    /// time (0: none).
    pub buckets: usize,
}

/// One column's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnDrift {
    /// Feature name, or `score`.
    pub column: String,
    /// Every statistic.
    pub stats: ColumnStats,
    /// The deciding test's score per time bucket (NaN for an empty bucket).
    pub over_time: Vec<f64>,
}

/// Drift of one (model version, route) in the current window.
#[derive(Debug, Clone, Serialize)]
pub struct GroupDrift {
    /// Model version that answered.
    pub model_version: String,
    /// Worker that answered.
    pub route: String,
    /// Rows of the group in the current window.
    pub rows: usize,
    /// Features first, then `score`.
    pub columns: Vec<ColumnDrift>,
    /// Features that drifted.
    pub drifted_features: usize,
    /// Share of features that drifted (the score is reported, not counted).
    pub drift_share: f64,
    /// `drift_share ≥` the request's threshold.
    pub dataset_drifted: bool,
    /// Bucket bounds of `over_time`, µs.
    pub buckets: Vec<(i64, i64)>,
}

impl GroupDrift {
    /// Names of the drifted features.
    pub fn drifted(&self) -> Vec<&str> {
        self.columns.iter().filter(|c| c.column != SCORE && c.stats.drifted).map(|c| c.column.as_str()).collect()
    }
}

/// The result of one analysis.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    /// Id of this analysis (rows of the `drift` table share it).
    pub run_id: String,
    /// When it ran (µs).
    pub computed_at_us: i64,
    /// The model.
    pub model: String,
    /// The reference.
    pub reference: Reference,
    /// Rows in the reference.
    pub reference_rows: usize,
    /// The current window.
    pub current: Window,
    /// The dataset-drift threshold used.
    pub drift_share_threshold: f64,
    /// One entry per (model version, route) seen in the current window.
    pub groups: Vec<GroupDrift>,
    /// Rows skipped because their feature vector had another width.
    pub skipped_rows: u64,
}

/// Feature columns plus score, column-major; `times` per row, in runs as
/// read (growing one vector would copy it at every doubling).
#[derive(Default)]
struct Columns {
    /// Per column, its values in runs as read (one per batch and group),
    /// runs of few distinct values dictionary-coded.
    cols: Vec<Vec<Held>>,
    times: Vec<Vec<i64>>,
}

impl Columns {
    fn new(width: usize) -> Self {
        Self { cols: vec![Vec::new(); width + 1], times: Vec::new() }
    }

    /// Rows held (every row has a score slot).
    fn rows(&self) -> usize {
        self.cols.last().map_or(0, |c| c.iter().map(Held::len).sum())
    }

    /// Column `j`'s runs.
    fn chunks(&self, j: usize) -> Vec<Chunk<'_>> {
        self.cols[j].iter().map(Held::view).collect()
    }
}

struct Acc {
    width: usize,
    groups: BTreeMap<(String, String), Columns>,
    skipped: u64,
    /// Keep each row's event time (for the metric over time).
    keep_times: bool,
}

impl Acc {
    fn new(width: usize, keep_times: bool) -> Self {
        Self { width, groups: BTreeMap::new(), skipped: 0, keep_times }
    }

    fn group(&mut self, version: &str, route: &str) -> &mut Columns {
        let width = self.width;
        self.groups.entry((version.to_string(), route.to_string())).or_insert_with(|| Columns::new(width))
    }

    /// Adds a batch of (model_version, route, features, score, event_time);
    /// without the first two all rows land in one group.
    fn add(&mut self, batch: &RecordBatch, grouped: bool) -> Result<()> {
        let n = batch.num_rows();
        let utf8 = |name: &str| -> Result<Option<StringArray>> {
            match batch.column_by_name(name) {
                Some(a) if grouped => Ok(Some(arrow::compute::cast(a, &DataType::Utf8)?.as_string::<i32>().clone())),
                _ => Ok(None),
            }
        };
        let (versions, routes) = (utf8("model_version")?, utf8("route")?);
        let features = batch
            .column_by_name("features")
            .ok_or_else(|| Error::Internal("drift input has no `features` column".into()))?;
        let features =
            arrow::compute::cast(features, &DataType::List(Arc::new(Field::new("item", DataType::Float32, true))))?;
        let features = features.as_list::<i32>();
        let values = features.values().as_primitive::<Float32Type>().values().clone();
        let offsets = features.value_offsets();
        let scores = match batch.column_by_name("score") {
            Some(s) => Some(arrow::compute::cast(s, &DataType::Float64)?),
            None => None,
        };
        let scores = scores.as_ref().map(|s| s.as_primitive::<Float64Type>());
        let times = batch
            .column_by_name("event_time")
            .map(|t| arrow::compute::cast(t, &DataType::Timestamp(TimeUnit::Microsecond, None)))
            .transpose()?;
        let times = times.as_ref().map(|t| t.as_primitive::<arrow::datatypes::TimestampMicrosecondType>());

        let (width, keep_times) = (self.width, self.keep_times);
        let mut i = 0;
        while i < n {
            // Rows of one partition share version and route: take runs.
            let (v, r) = (
                versions.as_ref().map(|a| a.value(i)).unwrap_or(""),
                routes.as_ref().map(|a| a.value(i)).unwrap_or(""),
            );
            let mut end = i + 1;
            while end < n
                && versions.as_ref().is_none_or(|a| a.value(end) == v)
                && routes.as_ref().is_none_or(|a| a.value(end) == r)
            {
                end += 1;
            }
            let mut skipped = 0;
            let g = self.group(v, r);
            let mut chunk: Vec<Vec<f32>> = (0..=width).map(|_| Vec::with_capacity(end - i)).collect();
            let mut kept_times: Vec<i64> = Vec::new();
            let (lo, hi) = (offsets[i] as usize, offsets[end] as usize);
            let regular = features.null_count() == 0
                && hi - lo == (end - i) * width
                && offsets[i..=end].windows(2).all(|w| (w[1] - w[0]) as usize == width);
            if regular && width > 0 {
                // Every row has the model's width: transpose blocks that stay
                // in cache, one column at a time.
                for block in values[lo..hi].chunks(1024 * width) {
                    for (j, c) in chunk[..width].iter_mut().enumerate() {
                        c.extend(block[j..].iter().step_by(width));
                    }
                }
                match scores {
                    Some(s) if s.null_count() == 0 => {
                        chunk[width].extend(s.values()[i..end].iter().map(|&x| x as f32));
                    }
                    _ => chunk[width].extend((i..end).map(|row| score_at(scores, row))),
                }
                if keep_times {
                    kept_times.extend((i..end).map(|row| times.map(|t| t.value(row)).unwrap_or(0)));
                }
            } else {
                for row in i..end {
                    let (lo, hi) = (offsets[row] as usize, offsets[row + 1] as usize);
                    if hi - lo != width || features.is_null(row) {
                        skipped += 1;
                        continue;
                    }
                    for (j, c) in chunk[..width].iter_mut().enumerate() {
                        c.push(values[lo + j]);
                    }
                    chunk[width].push(score_at(scores, row));
                    if keep_times {
                        kept_times.push(times.map(|t| t.value(row)).unwrap_or(0));
                    }
                }
            }
            for (col, c) in g.cols.iter_mut().zip(chunk) {
                if !c.is_empty() {
                    col.push(Held::encode(c));
                }
            }
            if !kept_times.is_empty() {
                g.times.push(kept_times);
            }
            self.skipped += skipped;
            i = end;
        }
        Ok(())
    }
}

/// The score of `row` as f32, NaN where there is none.
fn score_at(scores: Option<&Float64Array>, row: usize) -> f32 {
    scores.and_then(|s| (!s.is_null(row)).then(|| s.value(row) as f32)).unwrap_or(f32::NAN)
}

fn ts_lit(us: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into())))
}

/// The model's non-shadow predictions in `window`: `model_version`,
/// `route`, `features`, `score`, `event_time`.
pub async fn window_frame(ctx: &SessionContext, model: &str, window: Window) -> Result<DataFrame> {
    let event_time = coalesce(vec![col("kafka_timestamp"), col("ingest_time")]);
    let mut filter = col("model_name").eq(lit(model)).and(col("shadow").eq(lit(false)));
    if let Some(s) = window.start_us {
        filter = filter.and(event_time.clone().gt_eq(ts_lit(s))).and(col("date").gt_eq(lit(date_of(s))));
    }
    if let Some(e) = window.end_us {
        // The end is exclusive: a window ending at midnight reads no file of the next day.
        filter = filter.and(event_time.clone().lt(ts_lit(e))).and(col("date").lt_eq(lit(date_of(e - 1))));
    }
    Ok(ctx.table("predictions").await?.filter(filter)?.select(vec![
        col("model_version"),
        col("route"),
        col("features"),
        col("score"),
        event_time.alias("event_time"),
    ])?)
}

/// Reads `df` on all partitions at once into per-group columns.
async fn collect(df: DataFrame, width: usize, grouped: bool, keep_times: bool) -> Result<Acc> {
    let streams = df.execute_stream_partitioned().await?;
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut acc = Acc::new(width, keep_times);
                while let Some(b) = s.next().await {
                    acc.add(&b?, grouped)?;
                }
                Ok::<_, Error>(acc)
            })
        })
        .collect();
    let mut total = Acc::new(width, keep_times);
    for t in tasks {
        let acc = t.await.map_err(|e| Error::Internal(format!("drift reader panicked: {e}")))??;
        total.skipped += acc.skipped;
        for (k, mut g) in acc.groups {
            let dst = total.group(&k.0, &k.1);
            for (d, s) in dst.cols.iter_mut().zip(g.cols.iter_mut()) {
                d.append(s);
            }
            dst.times.append(&mut g.times);
        }
    }
    Ok(total)
}

/// The two frames an analysis reads, with only the columns it uses: the
/// reference (`features`, `score`), then the current window (`model_version`,
/// `route`, `features`, `score`, and `event_time` when there are buckets).
pub async fn input_frames(ctx: &SessionContext, req: &DriftRequest) -> Result<(DataFrame, DataFrame)> {
    let reference = match &req.reference {
        Reference::Window(w) => window_frame(ctx, &req.model, *w).await?.select_columns(&["features", SCORE])?,
        Reference::Dataset(path) => {
            let p = path.to_string_lossy();
            let df = ctx
                .read_parquet(p.as_ref(), ParquetReadOptions::default())
                .await
                .map_err(|e| Error::Internal(format!("reference dataset {}: cannot read: {e}", path.display())))?;
            let has_score = df.schema().fields().iter().any(|f| f.name() == SCORE);
            if !df.schema().fields().iter().any(|f| f.name() == "features") {
                return Err(Error::Internal(format!(
                    "reference dataset {}: has no `features` column (list<float32> in the model's feature order)",
                    path.display()
                )));
            }
            df.select_columns(if has_score { &["features", SCORE] } else { &["features"] })?
        }
    };
    let mut current = vec!["model_version", "route", "features", SCORE];
    if req.buckets > 0 {
        current.push("event_time");
    }
    let current = window_frame(ctx, &req.model, req.current).await?.select_columns(&current)?;
    Ok((reference, current))
}

/// The newest event time of the model's predictions, µs.
pub async fn newest_event_time(ctx: &SessionContext, model: &str) -> Result<Option<i64>> {
    let df = ctx.table("predictions").await?.filter(col("model_name").eq(lit(model)))?.aggregate(
        vec![],
        vec![datafusion::functions_aggregate::expr_fn::max(coalesce(vec![col("kafka_timestamp"), col("ingest_time")]))
            .alias("t")],
    )?;
    let batches = df.collect().await?;
    let Some(b) = batches.first() else { return Ok(None) };
    let t = arrow::compute::cast(b.column(0), &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let t = t.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    Ok((b.num_rows() > 0 && !t.is_null(0)).then(|| t.value(0)))
}

/// Runs the analysis.
pub async fn analyse(ctx: &SessionContext, req: &DriftRequest) -> Result<DriftReport> {
    let width = req.feature_names.len();
    let started = std::time::Instant::now();
    let (reference, current) = input_frames(ctx, req).await?;
    let reference = collect(reference, width, false, false).await?;
    let ref_skipped = reference.skipped;
    let reference = reference.groups.into_values().next().unwrap_or_else(|| Columns::new(width));
    let current = collect(current, width, true, req.buckets > 0).await?;
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "drift windows read");
    let reference_rows = reference.rows();
    let names: Vec<String> = req.feature_names.iter().cloned().chain([SCORE.to_string()]).collect();
    let choices: Vec<TestChoice> = names.iter().map(|n| req.tests.get(n).copied().unwrap_or_default()).collect();
    let reference = Arc::new(reference);
    let mut groups = Vec::new();
    for ((version, route), cur) in current.groups {
        let rows = cur.rows();
        let buckets = bucket_bounds(req.current, cur.times.iter().flatten().copied(), req.buckets);
        let (reference, names, choices, bounds) = (reference.clone(), names.clone(), choices.clone(), buckets.clone());
        let columns = tokio::task::spawn_blocking(move || compare_all(&reference, &cur, &names, &choices, &bounds))
            .await
            .map_err(|e| Error::Internal(format!("drift computation panicked: {e}")))?;
        let features = columns.iter().filter(|c| c.column != SCORE).count();
        let drifted_features = columns.iter().filter(|c| c.column != SCORE && c.stats.drifted).count();
        let drift_share = if features == 0 { 0.0 } else { drifted_features as f64 / features as f64 };
        groups.push(GroupDrift {
            model_version: version,
            route,
            rows,
            drifted_features,
            drift_share,
            dataset_drifted: features > 0 && drift_share >= req.drift_share,
            buckets,
            columns,
        });
    }
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "drift statistics done");
    Ok(DriftReport {
        run_id: uuid::Uuid::new_v4().simple().to_string(),
        computed_at_us: chrono::Utc::now().timestamp_micros(),
        model: req.model.clone(),
        reference: req.reference.clone(),
        reference_rows,
        current: req.current,
        drift_share_threshold: req.drift_share,
        groups,
        skipped_rows: current.skipped + ref_skipped,
    })
}

/// `n` equal buckets over the window (or over the rows' times where the
/// window is open).
fn bucket_bounds(window: Window, times: impl Iterator<Item = i64> + Clone, n: usize) -> Vec<(i64, i64)> {
    if n == 0 {
        return Vec::new();
    }
    let lo = window.start_us.or_else(|| times.clone().min()).unwrap_or(0);
    let hi = window.end_us.or_else(|| times.max().map(|t| t + 1)).unwrap_or(lo + 1);
    let step = ((hi - lo) / n as i64).max(1);
    (0..n as i64).map(|k| (lo + k * step, if k + 1 == n as i64 { hi } else { lo + (k + 1) * step })).collect()
}

fn compare_all(
    reference: &Columns,
    current: &Columns,
    names: &[String],
    choices: &[TestChoice],
    buckets: &[(i64, i64)],
) -> Vec<ColumnDrift> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(names.len().max(1));
    let bucket_of: Vec<u32> = if buckets.is_empty() {
        Vec::new()
    } else {
        let of = |t: i64| buckets.iter().position(|&(s, e)| t >= s && t < e).map_or(NO_BUCKET, |b| b as u32);
        current.times.iter().flatten().map(|&t| of(t)).collect()
    };
    let one = |j: usize| -> Option<ColumnDrift> {
        let r = reference.chunks(j);
        let c = current.chunks(j);
        let cmp = comparison(&r, &c, choices[j])?;
        let over_time = if buckets.is_empty() { Vec::new() } else { cmp.over_time(&c, &bucket_of, buckets.len()) };
        Some(ColumnDrift { column: names[j].clone(), stats: cmp.stats, over_time })
    };
    // Columns are taken one at a time by whichever thread is free, the score
    // (continuous, often the slowest) first.
    let last = names.len().saturating_sub(1);
    let order: Vec<usize> = std::iter::once(last).chain(0..last).take(names.len()).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<Option<ColumnDrift>> = vec![None; names.len()];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (one, order, next) = (&one, &order, &next);
                s.spawn(move || {
                    let mut done = Vec::new();
                    while let Some(&j) = order.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                        done.push((j, one(j)));
                    }
                    done
                })
            })
            .collect();
        for h in handles {
            for (j, c) in h.join().expect("drift column thread panicked") {
                out[j] = c;
            }
        }
    });
    out.into_iter().flatten().collect()
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Arrow schema of the `drift` table (`date` of `computed_at` is a partition
/// column). One row per column per (model version, route) per analysis, and
/// a `(dataset)` row with the drift share.
pub fn drift_arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("computed_at", ts_type(), false),
        Field::new("model_name", DataType::Utf8, false),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("route", DataType::Utf8, false),
        Field::new("column", DataType::Utf8, false),
        Field::new("test", DataType::Utf8, false),
        Field::new("drift_score", DataType::Float64, false),
        Field::new("threshold", DataType::Float64, false),
        Field::new("drifted", DataType::Boolean, false),
        Field::new("psi", DataType::Float64, true),
        Field::new("ks_statistic", DataType::Float64, true),
        Field::new("ks_p_value", DataType::Float64, true),
        Field::new("jensen_shannon", DataType::Float64, true),
        Field::new("wasserstein_norm", DataType::Float64, true),
        Field::new("chi2_p_value", DataType::Float64, true),
        Field::new("reference_rows", DataType::Int64, false),
        Field::new("current_rows", DataType::Int64, false),
        Field::new("reference", DataType::Utf8, false),
        Field::new("current_start", ts_type(), true),
        Field::new("current_end", ts_type(), true),
        Field::new("exact", DataType::Boolean, false),
    ]))
}

impl DriftReport {
    /// The report as rows of the `drift` table.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        struct Row<'a> {
            g: &'a GroupDrift,
            column: &'a str,
            test: &'a str,
            score: f64,
            threshold: f64,
            drifted: bool,
            s: Option<&'a ColumnStats>,
            reference_rows: usize,
        }
        let mut rows = Vec::new();
        for g in &self.groups {
            for c in &g.columns {
                rows.push(Row {
                    g,
                    column: &c.column,
                    test: c.stats.test.as_str(),
                    score: c.stats.score,
                    threshold: c.stats.threshold,
                    drifted: c.stats.drifted,
                    s: Some(&c.stats),
                    reference_rows: c.stats.reference_rows,
                });
            }
            rows.push(Row {
                g,
                column: DATASET,
                test: "drift_share",
                score: g.drift_share,
                threshold: self.drift_share_threshold,
                drifted: g.dataset_drifted,
                s: None,
                reference_rows: self.reference_rows,
            });
        }
        let n = rows.len();
        let strs =
            |f: &dyn Fn(&Row) -> String| -> ArrayRef { Arc::new(StringArray::from_iter_values(rows.iter().map(f))) };
        let f64s =
            |f: &dyn Fn(&Row) -> Option<f64>| -> ArrayRef { Arc::new(Float64Array::from_iter(rows.iter().map(f))) };
        let ts = |v: Option<i64>| -> ArrayRef { ts_column(std::iter::repeat_n(v, n)) };
        let columns: Vec<ArrayRef> = vec![
            strs(&|_| self.run_id.clone()),
            ts(Some(self.computed_at_us)),
            strs(&|_| self.model.clone()),
            strs(&|r| r.g.model_version.clone()),
            strs(&|r| r.g.route.clone()),
            strs(&|r| r.column.to_string()),
            strs(&|r| r.test.to_string()),
            f64s(&|r| Some(r.score)),
            f64s(&|r| Some(r.threshold)),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.drifted)))),
            f64s(&|r| r.s.map(|s| s.psi)),
            f64s(&|r| r.s.map(|s| s.ks_statistic)),
            f64s(&|r| r.s.map(|s| s.ks_p_value)),
            f64s(&|r| r.s.map(|s| s.jensen_shannon)),
            f64s(&|r| r.s.map(|s| s.wasserstein_norm)),
            f64s(&|r| r.s.and_then(|s| s.chi2_p_value)),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.reference_rows as i64))),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.s.map_or(r.g.rows, |s| s.current_rows) as i64),
            )),
            strs(&|_| self.reference.to_string()),
            ts(self.current.start_us),
            ts(self.current.end_us),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.s.is_none_or(|s| s.exact))))),
        ];
        Ok(RecordBatch::try_new(drift_arrow_schema(), columns)?)
    }
}
