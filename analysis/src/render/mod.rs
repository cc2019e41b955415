//! The drift report for people: a text table for the terminal, and a
//! self-contained HTML page with SVG charts (distributions reference vs
//! current per column, the deciding metric over time, calibration), and
//! those charts as PNG ([`Rasteriser`]).

mod png;

use std::fmt::Write as _;

use crate::accuracy::{Accuracy, Agreement};
use crate::drift::stats::Shares;
use crate::drift::window::{format_time, ColumnDrift, DriftReport, GroupDrift, SCORE};

pub use self::png::Rasteriser;

fn num(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v != 0.0 && v.abs() < 0.001 {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "-".into())
}

/// The report as aligned text.
pub fn text(report: &DriftReport, accuracy: &[Accuracy], agreement: &[Agreement]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Drift of model `{}`: current {} vs reference {} ({} rows)",
        report.model, report.current, report.reference, report.reference_rows
    );
    if report.groups.is_empty() {
        let _ = writeln!(out, "no predictions of `{}` in the current window", report.model);
    }
    for g in &report.groups {
        let _ = writeln!(out, "\n{}", group_headline(g, report.drift_share_threshold));
        let header =
            ["column", "test", "score", "threshold", "drift", "psi", "ks_stat", "ks_p", "js", "wasserstein", "chi2_p"];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        for c in &g.columns {
            let s = &c.stats;
            rows.push(vec![
                c.column.clone(),
                s.test.as_str().into(),
                num(s.score),
                num(s.threshold),
                if s.drifted { "DRIFT".into() } else { "-".into() },
                num(s.psi),
                num(s.ks_statistic),
                num(s.ks_p_value),
                num(s.jensen_shannon),
                num(s.wasserstein_norm),
                opt(s.chi2_p_value),
            ]);
        }
        out += &align(&rows);
        if g.columns.iter().any(|c| !c.stats.exact) {
            out += "(KS statistic and Wasserstein from a 65,536-bin histogram: more than 2M values)\n";
        }
    }
    if report.skipped_rows > 0 {
        let _ = writeln!(out, "\n{} rows skipped: feature vector of another width", report.skipped_rows);
    }
    if !accuracy.is_empty() {
        let _ = writeln!(out, "\nAccuracy against feedback");
        let mut rows = vec![[
            "version",
            "route",
            "rows",
            "positives",
            "accuracy",
            "precision",
            "recall",
            "f1",
            "roc_auc",
            "brier",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
        for a in accuracy {
            rows.push(vec![
                a.model_version.clone(),
                a.route.clone(),
                a.rows.to_string(),
                a.positives.to_string(),
                num(a.accuracy),
                num(a.precision),
                num(a.recall),
                num(a.f1),
                opt(a.roc_auc),
                num(a.brier),
            ]);
        }
        out += &align(&rows);
    }
    if !agreement.is_empty() {
        let _ = writeln!(out, "\nServed vs shadow answers");
        let mut rows = vec![["served", "shadow", "pairs", "label_agreement", "mean_abs_score_diff"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()];
        for a in agreement {
            rows.push(vec![
                a.served_route.clone(),
                a.shadow_route.clone(),
                a.pairs.to_string(),
                num(a.label_agreement),
                num(a.mean_abs_score_diff),
            ]);
        }
        out += &align(&rows);
    }
    out
}

fn group_headline(g: &GroupDrift, threshold: f64) -> String {
    format!(
        "version {} · route {} · {} rows · {} of {} features drifted (share {:.2} {} {:.2}){}",
        g.model_version,
        g.route,
        g.rows,
        g.drifted_features,
        g.columns.iter().filter(|c| c.column != SCORE).count(),
        g.drift_share,
        if g.dataset_drifted { "≥" } else { "<" },
        threshold,
        if g.dataset_drifted { ": DATASET DRIFT" } else { "" }
    )
}

fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|j| rows.iter().filter_map(|r| r.get(j)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const REF_COLOUR: &str = "#4c78a8";
const CUR_COLOUR: &str = "#f58518";

/// Reference vs current shares of one column as an SVG bar chart.
pub fn distribution_svg(column: &str, shares: &Shares) -> String {
    let (w, h, pad) = (320.0, 160.0, 24.0);
    let n = shares.reference.len().max(1);
    let max = shares.reference.iter().chain(&shares.current).copied().fold(0.0, f64::max).max(1e-12);
    let slot = (w - 2.0 * pad) / n as f64;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="10"><title>{}</title>"#,
        esc(column)
    );
    let _ = write!(s, r#"<text x="{pad}" y="12" font-weight="bold">{}</text>"#, esc(column));
    for (i, (r, c)) in shares.reference.iter().zip(&shares.current).enumerate() {
        let x = pad + i as f64 * slot;
        let bw = (slot / 2.0 - 0.5).max(0.5);
        for (k, (v, colour)) in [(*r, REF_COLOUR), (*c, CUR_COLOUR)].into_iter().enumerate() {
            let bh = v / max * (h - 2.0 * pad);
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{bh:.1}" fill="{colour}"/>"#,
                x + k as f64 * (bw + 0.5),
                h - pad - bh
            );
        }
    }
    let label = |v: f64| if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") };
    let (lo, hi) = match (shares.edges.first(), shares.edges.last(), shares.values.first(), shares.values.last()) {
        (Some(a), Some(b), _, _) => (label(*a), label(*b)),
        (_, _, Some(a), Some(b)) => (label(*a), label(*b)),
        _ => (String::new(), String::new()),
    };
    let _ = write!(
        s,
        r##"<line x1="{pad}" y1="{y}" x2="{x2}" y2="{y}" stroke="#999"/><text x="{pad}" y="{t}">{lo}</text><text x="{x2}" y="{t}" text-anchor="end">{hi}</text>"##,
        y = h - pad,
        x2 = w - pad,
        t = h - pad + 12.0
    );
    s += "</svg>";
    s
}

/// The deciding metric per time bucket, with its threshold, as an SVG line.
pub fn over_time_svg(c: &ColumnDrift, buckets: &[(i64, i64)]) -> String {
    let (w, h, pad) = (320.0, 120.0, 24.0);
    let vals: Vec<f64> = c.over_time.clone();
    let finite: Vec<f64> = vals.iter().copied().filter(|v| v.is_finite()).collect();
    let max = finite.iter().copied().fold(c.stats.threshold, f64::max).max(1e-9) * 1.1;
    let n = vals.len().max(2);
    let x = |i: usize| pad + i as f64 * (w - 2.0 * pad) / (n - 1) as f64;
    let y = |v: f64| h - pad - v / max * (h - 2.0 * pad);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="10"><title>{} over time</title>"#,
        esc(&c.column)
    );
    let _ = write!(s, r#"<text x="{pad}" y="12">{} ({})</text>"#, esc(&c.column), c.stats.test.as_str());
    let ty = y(c.stats.threshold);
    let _ = write!(
        s,
        r##"<line x1="{pad}" y1="{ty:.1}" x2="{x2}" y2="{ty:.1}" stroke="#d62728" stroke-dasharray="4 3"/>"##,
        x2 = w - pad
    );
    let points: Vec<String> = vals
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
        .collect();
    let _ =
        write!(s, r#"<polyline fill="none" stroke="{CUR_COLOUR}" stroke-width="2" points="{}"/>"#, points.join(" "));
    if let (Some(first), Some(last)) = (buckets.first(), buckets.last()) {
        let _ = write!(
            s,
            r#"<text x="{pad}" y="{t}">{}</text><text x="{x2}" y="{t}" text-anchor="end">{}</text>"#,
            format_time(first.0),
            format_time(last.1),
            t = h - 8.0,
            x2 = w - pad
        );
    }
    s += "</svg>";
    s
}

/// Mean score vs observed positive rate per bin, as an SVG chart.
pub fn calibration_svg(a: &Accuracy) -> String {
    let (w, h, pad) = (240.0, 240.0, 28.0);
    let p = |v: f64| pad + v * (w - 2.0 * pad);
    let q = |v: f64| h - pad - v * (h - 2.0 * pad);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="10"><title>calibration</title><text x="{pad}" y="14">calibration {} / {}</text><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999" stroke-dasharray="3 3"/>"##,
        esc(&a.model_version),
        esc(&a.route),
        p(0.0),
        q(0.0),
        p(1.0),
        q(1.0)
    );
    let pts: Vec<String> = a
        .calibration
        .iter()
        .filter(|b| b.rows > 0)
        .map(|b| format!("{:.1},{:.1}", p(b.mean_score), q(b.observed_rate)))
        .collect();
    let _ = write!(s, r#"<polyline fill="none" stroke="{REF_COLOUR}" stroke-width="2" points="{}"/>"#, pts.join(" "));
    let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">mean score</text>"#, w / 2.0, h - 6.0);
    s += "</svg>";
    s
}

/// The whole report as one self-contained HTML page.
pub fn html(report: &DriftReport, accuracy: &[Accuracy], agreement: &[Agreement]) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>switchyard drift report</title><style>\
         body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}\
         td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}\
         .drift{background:#fde0dd;font-weight:bold}.charts{display:flex;flex-wrap:wrap;gap:12px}\
         .chart{border:1px solid #eee;padding:4px}.legend span{display:inline-block;width:10px;height:10px;margin:0 4px}\
         </style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>Drift of model <code>{}</code></h1><p>Current window {} vs reference {} ({} rows). Computed {} (run {}).</p>\
         <p class=\"legend\"><span style=\"background:{REF_COLOUR}\"></span>reference <span style=\"background:{CUR_COLOUR}\"></span>current</p>",
        esc(&report.model),
        esc(&report.current.to_string()),
        esc(&report.reference.to_string()),
        report.reference_rows,
        format_time(report.computed_at_us),
        report.run_id
    );
    for g in &report.groups {
        let _ = write!(out, "<h2>{}</h2><table><tr>", esc(&group_headline(g, report.drift_share_threshold)));
        for h in ["column", "test", "score", "threshold", "drift", "psi", "ks p", "js", "wasserstein", "χ² p"] {
            let _ = write!(out, "<th>{h}</th>");
        }
        out += "</tr>";
        for c in &g.columns {
            let s = &c.stats;
            let _ = write!(
                out,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if s.drifted { "drift" } else { "" },
                esc(&c.column),
                s.test.as_str(),
                num(s.score),
                num(s.threshold),
                if s.drifted { "drift" } else { "-" },
                num(s.psi),
                num(s.ks_p_value),
                num(s.jensen_shannon),
                num(s.wasserstein_norm),
                opt(s.chi2_p_value)
            );
        }
        out += "</table><div class=\"charts\">";
        // Drifted columns first: that is what a reader came for.
        let mut cols: Vec<&ColumnDrift> = g.columns.iter().collect();
        cols.sort_by_key(|c| !c.stats.drifted);
        for c in cols {
            let _ = write!(out, "<div class=\"chart\">{}", distribution_svg(&c.column, &c.stats.shares));
            if !c.over_time.is_empty() {
                out += &over_time_svg(c, &g.buckets);
            }
            out += "</div>";
        }
        out += "</div>";
    }
    if !accuracy.is_empty() {
        out += "<h2>Accuracy against feedback</h2><table><tr>";
        for h in ["version", "route", "rows", "positives", "accuracy", "precision", "recall", "f1", "ROC AUC", "Brier"]
        {
            let _ = write!(out, "<th>{h}</th>");
        }
        out += "</tr>";
        for a in accuracy {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.model_version),
                esc(&a.route),
                a.rows,
                a.positives,
                num(a.accuracy),
                num(a.precision),
                num(a.recall),
                num(a.f1),
                opt(a.roc_auc),
                num(a.brier)
            );
        }
        out += "</table><div class=\"charts\">";
        for a in accuracy {
            let _ = write!(out, "<div class=\"chart\">{}</div>", calibration_svg(a));
        }
        out += "</div>";
    }
    if !agreement.is_empty() {
        out += "<h2>Served vs shadow answers</h2><table><tr><th>served</th><th>shadow</th><th>pairs</th><th>label agreement</th><th>mean |Δ score|</th></tr>";
        for a in agreement {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.served_route),
                esc(&a.shadow_route),
                a.pairs,
                num(a.label_agreement),
                num(a.mean_abs_score_diff)
            );
        }
        out += "</table>";
    }
    out += "</body></html>\n";
    out
}
