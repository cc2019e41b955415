//! Accuracy from feedback: predictions joined with the newest ground truth
//! of each event, per model version and route; agreement between served and
//! shadow answers of the same events.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use switchyard_schemas::tables::date_partition as date_of;

use crate::drift::Window;
use crate::tables::ts_column;
use crate::{Error, Result};

/// Bins of the calibration table (equal width over [0, 1]).
pub const CALIBRATION_BINS: usize = 10;

/// One bin of the calibration table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CalibrationBin {
    /// Lower score bound (inclusive).
    pub lower: f64,
    /// Upper score bound (exclusive; 1.0 inclusive).
    pub upper: f64,
    /// Labelled rows in the bin.
    pub rows: u64,
    /// Their mean score.
    pub mean_score: f64,
    /// Share of them whose truth is positive.
    pub observed_rate: f64,
}

/// Quality of one (model version, route) against feedback.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Accuracy {
    /// Model version that answered.
    pub model_version: String,
    /// Worker that answered.
    pub route: String,
    /// Predictions with feedback.
    pub rows: u64,
    /// Of which truly positive.
    pub positives: u64,
    /// Share of correct labels.
    pub accuracy: f64,
    /// TP / (TP + FP); NaN without predicted positives.
    pub precision: f64,
    /// TP / (TP + FN); NaN without true positives.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Area under the ROC curve of the score; `None` with one class only.
    pub roc_auc: Option<f64>,
    /// Mean squared difference of score and truth.
    pub brier: f64,
    /// Calibration table.
    pub calibration: Vec<CalibrationBin>,
}

/// Served answers compared with shadow answers of the same events.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Agreement {
    /// Worker that served.
    pub served_route: String,
    /// Worker that answered in shadow.
    pub shadow_route: String,
    /// Events with both answers.
    pub pairs: u64,
    /// Share of events where both labels agree.
    pub label_agreement: f64,
    /// Mean |served score − shadow score|.
    pub mean_abs_score_diff: f64,
}

/// SQL string literal.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Filter on the event time of `predictions` (alias `p`).
fn time_filter(window: Window, alias: &str) -> String {
    let t = format!("CAST(coalesce({alias}.kafka_timestamp, {alias}.ingest_time) AS BIGINT)");
    let mut f = String::new();
    if let Some(s) = window.start_us {
        f += &format!(" AND {t} >= {s} AND {alias}.date >= {}", quote(&date_of(s)));
    }
    if let Some(e) = window.end_us {
        f += &format!(" AND {t} < {e} AND {alias}.date <= {}", quote(&date_of(e - 1)));
    }
    f
}

/// Self-contained SQL over `predictions` and `feedback` giving the model's
/// served predictions in `window` with their newest ground truth (`truth`):
/// matched by `lineage_id`, else by key. With `features`, it also returns
/// the feature vector: the retrainer's training set.
pub fn labelled_sql(model: &str, window: Window, features: bool) -> String {
    labelled_where(model, &format!(" AND NOT p.shadow{}", time_filter(window, "p")), features)
}

/// [`labelled_sql`] over the model's predictions (alias `p`) that pass
/// `filter` (SQL starting with ` AND`).
pub(crate) fn labelled_where(model: &str, filter: &str, features: bool) -> String {
    let feat = if features { ", p.features" } else { "" };
    format!(
        "WITH fb AS (\
           SELECT lineage_id, key, label FROM (\
             SELECT lineage_id, key, label, row_number() OVER (\
               PARTITION BY coalesce(lineage_id, concat('key:', key)) \
               ORDER BY observed_time DESC, ingest_time DESC, feedback_offset DESC) AS rn \
             FROM feedback) WHERE rn = 1), \
         p AS (\
           SELECT lineage_id, key, model_version, route, score, label AS predicted{pfeat} \
           FROM predictions p WHERE p.model_name = {m}{filter}) \
         SELECT p.lineage_id, p.model_version, p.route, p.score, p.predicted{feat}, fb.label AS truth \
           FROM p JOIN fb ON fb.lineage_id = p.lineage_id \
         UNION ALL \
         SELECT p.lineage_id, p.model_version, p.route, p.score, p.predicted{feat}, fb.label AS truth \
           FROM p JOIN fb ON fb.lineage_id IS NULL AND fb.key = p.key \
           WHERE p.lineage_id NOT IN (SELECT lineage_id FROM fb WHERE lineage_id IS NOT NULL)",
        pfeat = if features { ", features" } else { "" },
        m = quote(model),
    )
}

#[derive(Default)]
struct Labelled {
    scores: Vec<f64>,
    predicted: Vec<i64>,
    truth: Vec<i64>,
}

/// Accuracy of the model per model version and route in `window`.
pub async fn accuracy(ctx: &SessionContext, model: &str, window: Window) -> Result<Vec<Accuracy>> {
    accuracy_of(ctx, &labelled_sql(model, window, false)).await
}

/// Accuracy per model version and route of the rows of a labelled query
/// ([`labelled_where`]).
pub(crate) async fn accuracy_of(ctx: &SessionContext, sql: &str) -> Result<Vec<Accuracy>> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut groups: BTreeMap<(String, String), Labelled> = BTreeMap::new();
    for b in &batches {
        let s = |name: &str| -> Result<ArrayRef> {
            let a = b.column_by_name(name).ok_or_else(|| Error::Internal(format!("accuracy query lost `{name}`")))?;
            Ok(a.clone())
        };
        let version = arrow::compute::cast(&s("model_version")?, &DataType::Utf8)?;
        let (version, route) = (version.as_string::<i32>(), s("route")?);
        let route = route.as_string::<i32>();
        let score = s("score")?;
        let score = score.as_primitive::<Float64Type>();
        let predicted = s("predicted")?;
        let predicted = predicted.as_primitive::<Int64Type>();
        let truth = s("truth")?;
        let truth = truth.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if score.is_null(i) || truth.is_null(i) {
                continue;
            }
            let g = groups.entry((version.value(i).to_string(), route.value(i).to_string())).or_default();
            g.scores.push(score.value(i));
            g.predicted.push(if predicted.is_null(i) { (score.value(i) >= 0.5) as i64 } else { predicted.value(i) });
            g.truth.push(truth.value(i));
        }
    }
    Ok(groups.into_iter().map(|((v, r), l)| metrics(v, r, &l)).collect())
}

fn metrics(model_version: String, route: String, l: &Labelled) -> Accuracy {
    let n = l.truth.len() as f64;
    let (mut tp, mut fp, mut fn_, mut correct) = (0f64, 0f64, 0f64, 0f64);
    for (&p, &t) in l.predicted.iter().zip(&l.truth) {
        let (p, t) = (p != 0, t != 0);
        correct += (p == t) as u8 as f64;
        tp += (p && t) as u8 as f64;
        fp += (p && !t) as u8 as f64;
        fn_ += (!p && t) as u8 as f64;
    }
    let precision = tp / (tp + fp);
    let recall = tp / (tp + fn_);
    let f1 = 2.0 * precision * recall / (precision + recall);
    let brier = l.scores.iter().zip(&l.truth).map(|(s, &t)| (s - (t != 0) as u8 as f64).powi(2)).sum::<f64>() / n;
    let mut calibration: Vec<CalibrationBin> = (0..CALIBRATION_BINS)
        .map(|k| CalibrationBin {
            lower: k as f64 / CALIBRATION_BINS as f64,
            upper: (k + 1) as f64 / CALIBRATION_BINS as f64,
            rows: 0,
            mean_score: 0.0,
            observed_rate: 0.0,
        })
        .collect();
    for (&s, &t) in l.scores.iter().zip(&l.truth) {
        let b = &mut calibration[((s * CALIBRATION_BINS as f64) as usize).min(CALIBRATION_BINS - 1)];
        b.rows += 1;
        b.mean_score += s;
        b.observed_rate += (t != 0) as u8 as f64;
    }
    for b in &mut calibration {
        if b.rows > 0 {
            b.mean_score /= b.rows as f64;
            b.observed_rate /= b.rows as f64;
        }
    }
    Accuracy {
        model_version,
        route,
        rows: l.truth.len() as u64,
        positives: l.truth.iter().filter(|&&t| t != 0).count() as u64,
        accuracy: correct / n,
        precision,
        recall,
        f1,
        roc_auc: roc_auc(&l.scores, &l.truth),
        brier,
        calibration,
    }
}

/// ROC AUC by the rank-sum (Mann–Whitney) formula, ties at mean rank, as
/// `sklearn.metrics.roc_auc_score`.
pub fn roc_auc(scores: &[f64], truth: &[i64]) -> Option<f64> {
    let pos = truth.iter().filter(|&&t| t != 0).count();
    let neg = truth.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mean_rank * idx[i..=j].iter().filter(|&&k| truth[k] != 0).count() as f64;
        i = j + 1;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Served vs shadow answers of the same events in `window` (of the served row).
pub async fn agreement(ctx: &SessionContext, window: Window) -> Result<Vec<Agreement>> {
    let sql = format!(
        "SELECT s.route AS served_route, h.route AS shadow_route, count(*) AS pairs, \
           avg(CASE WHEN s.label = h.label THEN 1.0 ELSE 0.0 END) AS label_agreement, \
           avg(abs(s.score - h.score)) AS mean_abs_score_diff \
         FROM predictions s JOIN predictions h ON s.lineage_id = h.lineage_id \
         WHERE NOT s.shadow AND h.shadow AND s.score IS NOT NULL AND h.score IS NOT NULL{} \
         GROUP BY s.route, h.route ORDER BY s.route, h.route",
        time_filter(window, "s")
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        let (sr, hr) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
        let pairs = b.column(2).as_primitive::<Int64Type>();
        let (la, md) = (b.column(3).as_primitive::<Float64Type>(), b.column(4).as_primitive::<Float64Type>());
        for i in 0..b.num_rows() {
            out.push(Agreement {
                served_route: sr.value(i).to_string(),
                shadow_route: hr.value(i).to_string(),
                pairs: pairs.value(i) as u64,
                label_agreement: la.value(i),
                mean_abs_score_diff: md.value(i),
            });
        }
    }
    Ok(out)
}

/// Arrow schema of the `accuracy` table (`date` of `computed_at` is a
/// partition column): one row per model version and route per evaluation.
pub fn accuracy_arrow_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("computed_at", ts.clone(), false),
        Field::new("model_name", DataType::Utf8, false),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("route", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("positives", DataType::Int64, false),
        Field::new("accuracy", DataType::Float64, false),
        Field::new("precision", DataType::Float64, true),
        Field::new("recall", DataType::Float64, true),
        Field::new("f1", DataType::Float64, true),
        Field::new("roc_auc", DataType::Float64, true),
        Field::new("brier", DataType::Float64, false),
        Field::new("calibration", DataType::Utf8, false),
        Field::new("window_start", ts.clone(), true),
        Field::new("window_end", ts, true),
    ]))
}

/// Accuracy rows as a batch of the `accuracy` table.
pub fn accuracy_batch(
    run_id: &str,
    computed_at_us: i64,
    model: &str,
    window: Window,
    rows: &[Accuracy],
) -> Result<RecordBatch> {
    let n = rows.len();
    let strs =
        |f: &dyn Fn(&Accuracy) -> String| -> ArrayRef { Arc::new(StringArray::from_iter_values(rows.iter().map(f))) };
    let nan_null = |v: f64| (!v.is_nan()).then_some(v);
    let f64s =
        |f: &dyn Fn(&Accuracy) -> Option<f64>| -> ArrayRef { Arc::new(Float64Array::from_iter(rows.iter().map(f))) };
    let ts = |v: Option<i64>| -> ArrayRef { ts_column(std::iter::repeat_n(v, n)) };
    let columns: Vec<ArrayRef> = vec![
        strs(&|_| run_id.to_string()),
        ts(Some(computed_at_us)),
        strs(&|_| model.to_string()),
        strs(&|a| a.model_version.clone()),
        strs(&|a| a.route.clone()),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|a| a.rows as i64))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|a| a.positives as i64))),
        f64s(&|a| Some(a.accuracy)),
        f64s(&|a| nan_null(a.precision)),
        f64s(&|a| nan_null(a.recall)),
        f64s(&|a| nan_null(a.f1)),
        f64s(&|a| a.roc_auc),
        f64s(&|a| Some(a.brier)),
        strs(&|a| serde_json::to_string(&a.calibration).unwrap_or_default()),
        ts(window.start_us),
        ts(window.end_us),
    ];
    Ok(RecordBatch::try_new(accuracy_arrow_schema(), columns)?)
}
