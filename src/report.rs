//! Human-readable run summaries.

use std::fmt::Write as _;

use crate::pipeline::Summary;

/// The end-of-run summary: throughput, routes, DLQ, latency.
pub fn summary(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n── switchyard run summary ─────────────────────────────");
    let _ = writeln!(
        out,
        "records        {:>10}   ({:.0} events/s over {:.2} s)",
        s.records,
        s.rate(),
        s.elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "results        {:>10}", s.predictions);
    let _ = writeln!(out, "dlq            {:>10}", s.dlq);
    if s.replayed > 0 {
        let _ = writeln!(out, "replayed       {:>10}   (already durable, skipped)", s.replayed);
    }
    for (route, n) in &s.by_route {
        let fallback = s.fallbacks.get(route).copied().unwrap_or(0);
        let note = if fallback > 0 { format!("   ({fallback} as a fallback)") } else { String::new() };
        let _ = writeln!(out, "route {route:<14} {n:>9}{note}");
    }
    for (route, n) in &s.shadows {
        let _ = writeln!(out, "shadow {route:<13} {n:>9}   (comparison rows, Parquet only)");
    }
    if s.shadow_failed > 0 {
        let _ = writeln!(out, "shadow unanswered    {:>9}", s.shadow_failed);
    }
    for (rule, n) in &s.by_rule {
        let _ = writeln!(out, "  rule {rule:<20} {n:>9}");
    }
    if s.feedback > 0 || s.feedback_dlq > 0 {
        let _ = writeln!(out, "feedback       {:>10}   ({} bad, to the DLQ table)", s.feedback, s.feedback_dlq);
    }
    for change in &s.model_changes {
        let _ = writeln!(out, "model change   {change}");
    }
    if s.triggers > 0 {
        let _ = writeln!(out, "retrain triggers {:>8}", s.triggers);
    }
    for (class, n) in &s.dlq_by_class {
        let _ = writeln!(out, "  dlq {class:<21} {n:>9}");
    }
    percentiles(&mut out, "latency ms", &s.latency_us, "receipt → durable");
    percentiles(&mut out, "event age ms", &s.event_latency_us, "Kafka timestamp → durable");
    if s.latency_by_tier.len() > 1 {
        for (tier, (receipt, _)) in &s.latency_by_tier {
            percentiles(&mut out, &format!("  {tier}"), receipt, "receipt → durable");
        }
    }
    for (w, (batches, rows)) in &s.batches {
        if *batches > 0 {
            let _ = writeln!(
                out,
                "worker {w:<9} {batches:>6} model runs, {:.0} rows per run",
                *rows as f64 / *batches as f64
            );
        }
    }
    for (w, c) in &s.cloud {
        let _ = writeln!(
            out,
            "cloud {w:<14} {:>6} requests, {:.1} rows per request, {} retries, {} throttled (429), circuit {:?}{}",
            c.requests,
            c.rows as f64 / c.requests.max(1) as f64,
            c.retries,
            c.throttled,
            c.breaker,
            if c.breaker_opened > 0 { format!(" (opened {}×)", c.breaker_opened) } else { String::new() },
        );
        let mut refused = Vec::new();
        if c.unavailable_rows > 0 {
            refused
                .push(format!("{} rows refused while unavailable (circuit open or budget spent)", c.unavailable_rows));
        }
        if c.failed_rows > 0 {
            refused.push(format!("{} rows failed after retries", c.failed_rows));
        }
        if c.blocked_rows > 0 {
            refused.push(format!("{} rows blocked by the last PII check", c.blocked_rows));
        }
        if let Some(spent) = c.budget_spent {
            refused.push(format!("budget spent {spent:.4}"));
        }
        if !refused.is_empty() {
            let _ = writeln!(out, "      {:<14} {}", "", refused.join("; "));
        }
    }
    let _ = writeln!(out, "consumer pauses {:>9}   (backpressure)", s.pauses);
    let _ = writeln!(out, "parquet rolls  {:>10}   tables at {}", s.rolls, s.tables);
    out
}

/// One line of p50/p95/p99/max in ms for a µs histogram; nothing when empty.
fn percentiles(out: &mut String, label: &str, h: &hdrhistogram::Histogram<u64>, what: &str) {
    if h.is_empty() {
        return;
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let _ = writeln!(
        out,
        "{label:<14} p50 {:.1}   p95 {:.1}   p99 {:.1}   max {:.1}   ({what})",
        ms(0.5),
        ms(0.95),
        ms(0.99),
        h.max() as f64 / 1000.0
    );
}

/// The summary as JSON, for benchmarks and automation.
pub fn json(s: &Summary) -> serde_json::Value {
    let q = |h: &hdrhistogram::Histogram<u64>, q: f64| {
        if h.is_empty() {
            None
        } else {
            Some(h.value_at_quantile(q) as f64 / 1000.0)
        }
    };
    serde_json::json!({
        "records": s.records,
        "results": s.predictions,
        "feedback": s.feedback,
        "feedback_dlq": s.feedback_dlq,
        "triggers": s.triggers,
        "model_changes": s.model_changes,
        "dlq": s.dlq,
        "replayed": s.replayed,
        "seconds": s.elapsed.as_secs_f64(),
        "first_us": s.span_us.0,
        "last_us": s.span_us.1,
        "events_per_s": s.rate(),
        "latency_ms": {"p50": q(&s.latency_us, 0.5), "p95": q(&s.latency_us, 0.95), "p99": q(&s.latency_us, 0.99)},
        "event_age_ms": {"p50": q(&s.event_latency_us, 0.5), "p95": q(&s.event_latency_us, 0.95), "p99": q(&s.event_latency_us, 0.99)},
        "by_tier": s.latency_by_tier.iter().map(|(tier, (receipt, age))| (tier.clone(), serde_json::json!({
            "results": receipt.len(),
            "latency_ms": {"p50": q(receipt, 0.5), "p95": q(receipt, 0.95), "p99": q(receipt, 0.99)},
            "event_age_ms": {"p50": q(age, 0.5), "p95": q(age, 0.95), "p99": q(age, 0.99)},
        }))).collect::<serde_json::Map<_, _>>(),
        "by_route": s.by_route,
        "fallbacks": s.fallbacks,
        "shadows": s.shadows,
        "shadow_failed": s.shadow_failed,
        "cloud": s.cloud.iter().map(|(w, c)| (w.clone(), serde_json::json!({
            "requests": c.requests,
            "attempts": c.attempts,
            "retries": c.retries,
            "rows": c.rows,
            "failed_rows": c.failed_rows,
            "unavailable_rows": c.unavailable_rows,
            "blocked_rows": c.blocked_rows,
            "throttled": c.throttled,
            "breaker": format!("{:?}", c.breaker).to_lowercase(),
            "breaker_opened": c.breaker_opened,
            "budget_spent": c.budget_spent,
        }))).collect::<serde_json::Map<_, _>>(),
        "by_rule": s.by_rule,
        "dlq_by_class": s.dlq_by_class,
        "pauses": s.pauses,
        "rolls": s.rolls,
    })
}
