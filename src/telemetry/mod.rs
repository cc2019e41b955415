//! Operating a running worker: Prometheus metrics (the catalogue is
//! `switchyard_schemas::telemetry`), the health probes and the listener
//! that serves both, and OpenTelemetry traces ([`trace`]).
//!
//! ```text
//!  service.listen ──▶ GET /metrics   the Prometheus text format
//!                     GET /healthz   200 while the process is alive
//!                     GET /readyz    200 when consumer assigned, models loaded, sinks open, not stopping
//! ```

mod audit;
mod health;
pub mod lineage;
pub mod trace;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use switchyard_schemas::telemetry::{self as m, Kind};
use switchyard_workers::dispatch::{Worker, WorkerSet};

pub use self::audit::AuditLog;
pub use self::health::Health;

/// The process's Prometheus recorder, installed once.
static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process), with every
/// metric's description and histogram buckets from the catalogue. Until
/// it is installed, recording a metric does nothing.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = RECORDER.get() {
        return Ok(h.clone());
    }
    let mut builder = PrometheusBuilder::new();
    for metric in m::ALL.iter().filter(|x| x.kind == Kind::Histogram) {
        builder = builder.set_buckets_for_metric(Matcher::Full(metric.name.to_string()), metric.buckets)?;
    }
    let handle = builder.install_recorder().context("installing the metrics recorder")?;
    m::describe_all();
    m::set_recording(true);
    m::BUILD_INFO.gauge([("version", env!("CARGO_PKG_VERSION").into()), ("pipeline", "".into())]).set(0.0);
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("sy-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        })
        .context("starting the metrics upkeep thread")?;
    Ok(RECORDER.get_or_init(|| handle).clone())
}

/// Sets `switchyard_build_info` for the pipeline now running.
pub fn note_pipeline(name: &str) {
    m::BUILD_INFO
        .gauge([("version", env!("CARGO_PKG_VERSION").into()), ("pipeline", name.to_string().into())])
        .set(1.0);
}

/// Model versions last reported by [`note_models`], to zero when replaced.
static SERVED: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

/// Sets `switchyard_model_info` to the versions each local worker serves
/// now (live model and canary or shadow candidate), and to 0 for those it
/// served before.
pub fn note_models(workers: &WorkerSet) {
    let mut now = Vec::new();
    for (name, w) in &workers.list {
        let Worker::Local(w) = w else { continue };
        for model in std::iter::once(w.model()).chain(w.candidate()) {
            now.push((name.clone(), model.name, model.version));
        }
    }
    let Ok(mut served) = SERVED.lock() else { return };
    let labels = |(w, n, v): &(String, String, String)| {
        [("worker", w.clone().into()), ("model", n.clone().into()), ("version", v.clone().into())]
    };
    for old in served.iter().filter(|o| !now.contains(o)) {
        m::MODEL_INFO.gauge(labels(old)).set(0.0);
    }
    for new in &now {
        m::MODEL_INFO.gauge(labels(new)).set(1.0);
    }
    *served = now;
}

/// Serves `/metrics` (when `metrics` is given), `/healthz` and `/readyz`
/// on `listen` until the process ends. Binding fails at once, naming the
/// address.
pub async fn serve(
    listen: SocketAddr,
    metrics: Option<PrometheusHandle>,
    health: Arc<Health>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("service.listen: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state((metrics, health));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics and health listener stopped");
        }
    });
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(addr)
}

type ServiceState = (Option<PrometheusHandle>, Arc<Health>);

async fn render_metrics(State((metrics, _)): State<ServiceState>) -> impl IntoResponse {
    match metrics {
        Some(h) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()),
        None => (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain")], "metrics are off\n".to_string()),
    }
}

async fn ready(State((_, health)): State<ServiceState>) -> impl IntoResponse {
    let (ready, body) = health.report();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README's metric table is the catalogue's (`switchyard metrics`).
    #[test]
    fn readme_lists_every_metric() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        assert!(
            readme.contains(&m::markdown()),
            "README's metric table is out of date: paste the output of `switchyard metrics`"
        );
    }

    #[tokio::test]
    async fn readyz_names_what_is_missing() {
        let health = Arc::new(Health::default());
        let addr = serve("127.0.0.1:0".parse().unwrap(), None, health.clone()).await.unwrap();
        let get = |path: &'static str| async move {
            let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(get("/healthz").await.0, 200);
        let (status, body) = get("/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains(r#""models_loaded":false"#), "{body}");
        health.models_loaded.store(true, std::sync::atomic::Ordering::Relaxed);
        health.sinks_open.store(true, std::sync::atomic::Ordering::Relaxed);
        health.no_consumer.store(true, std::sync::atomic::Ordering::Relaxed);
        let (status, body) = get("/readyz").await;
        assert_eq!(status, 200, "{body}");
        health.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(get("/readyz").await.0, 503);
        assert_eq!(get("/metrics").await.0, 404, "metrics off: no recorder handed over");
    }
}
