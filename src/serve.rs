//! `switchyard serve`: the local model registry over the KServe V2 / Open
//! Inference Protocol REST API, so one switchyard can be the inference
//! endpoint (`type: kserve_v2`) of others.
//!
//! ```text
//!  GET  /v2/health/live | /v2/health/ready          (no auth: for probes)
//!  GET  /v2                                         server metadata
//!  GET  /v2/models/{m}[/versions/{v}]               model metadata
//!  GET  /v2/models/{m}[/versions/{v}]/ready         model readiness
//!  POST /v2/models/{m}[/versions/{v}]/infer         FP32/FP64/INT [n, width]
//! ```
//!
//! Requests go through the same [`OnnxWorker`] batcher as the streaming
//! pipeline, so concurrent requests share model executions. Answers carry
//! `probabilities` (FP32 `[n, 2]`: the negative and positive class) and
//! `label` (INT64 `[n]`). With a token (from an environment variable or a
//! file), every route but the health probes wants `Authorization: Bearer`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value as J};
use switchyard_workers::cloud::{AuthConfig, Secret};
use switchyard_workers::{init_runtime, registry, OnnxWorker, OnnxWorkerConfig};

/// Settings of `switchyard serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The registry folder (`<name>/<version>/model.onnx`).
    pub registry: PathBuf,
    /// Models to serve as `name` or `name:version`; every model of the
    /// registry (its highest version) when empty.
    pub models: Vec<String>,
    /// Address to listen on (port 0: any free port, printed at start).
    pub listen: SocketAddr,
    /// Where the bearer token comes from; no auth when `None`.
    pub auth: Option<AuthConfig>,
    /// Most rows per model execution.
    pub max_batch_size: usize,
    /// Longest a request waits for others to join its batch, in ms.
    pub max_queue_delay_ms: u64,
    /// Sessions per model.
    pub instances: usize,
}

struct Served {
    worker: OnnxWorker,
    version: String,
    input: String,
    width: usize,
}

struct AppState {
    models: BTreeMap<String, Served>,
    token: Option<Secret>,
}

/// A server that is listening.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it serves: (model, version, features).
    pub models: Vec<(String, String, usize)>,
    /// Whether a bearer token is required.
    pub auth: bool,
    server: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>,
}

impl Running {
    /// Serves until `stop` resolves.
    pub async fn until(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Running { server, .. } = self;
        tokio::select! {
            r = server => r.context("server failed")?,
            _ = stop => {}
        }
        Ok(())
    }
}

/// Loads the models and binds the listener.
pub async fn start(opts: ServeOptions) -> anyhow::Result<Running> {
    init_runtime(None)?;
    let names = if opts.models.is_empty() { registry_models(&opts.registry)? } else { opts.models.clone() };
    anyhow::ensure!(!names.is_empty(), "{}: no models in the registry", opts.registry.display());
    let mut models = BTreeMap::new();
    for spec in &names {
        let (name, version) = match spec.split_once(':') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (spec.as_str(), None),
        };
        let entry = registry::lookup(&opts.registry, name, version.as_deref())
            .with_context(|| format!("model `{spec}` in {}", opts.registry.display()))?;
        let config = OnnxWorkerConfig {
            model: name.to_string(),
            version: Some(entry.metadata.version.clone()),
            registry: opts.registry.clone(),
            max_batch_size: opts.max_batch_size,
            max_queue_delay_ms: opts.max_queue_delay_ms,
            max_queued_requests: 256,
            instances: opts.instances.max(1),
            intra_op_threads: 1,
            execution_provider: Default::default(),
            reload: None,
        };
        let worker = OnnxWorker::start(name, &config, Path::new("."), &entry.metadata.feature_order)
            .with_context(|| format!("loading model `{spec}`"))?;
        models.insert(
            name.to_string(),
            Served {
                worker,
                version: entry.metadata.version.clone(),
                input: entry.metadata.input.clone(),
                width: entry.metadata.feature_order.len(),
            },
        );
    }
    let token = opts.auth.as_ref().map(|a| a.load(Path::new("."))).transpose()?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let served = models.iter().map(|(n, m)| (n.clone(), m.version.clone(), m.width)).collect();
    let auth = token.is_some();
    let state = Arc::new(AppState { models, token });
    let server = Box::pin(async move { axum::serve(listener, app(state)).await });
    Ok(Running { addr, models: served, auth, server })
}

/// Loads the models and serves until Ctrl-C / SIGTERM.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let running = start(opts).await?;
    for (name, version, width) in &running.models {
        println!("serving model {name} version {version} ({width} features)");
    }
    println!(
        "listening on http://{} (KServe V2 REST{})",
        running.addr,
        if running.auth { ", bearer token required" } else { "" }
    );
    running.until(crate::signal::shutdown_signal()).await
}

fn registry_models(registry: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let dir = std::fs::read_dir(registry).with_context(|| format!("cannot read registry {}", registry.display()))?;
    for entry in dir {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !registry::versions(registry, &name).unwrap_or_default().is_empty() {
                names.push(name);
            }
        }
    }
    names.sort();
    Ok(names)
}

fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2/health/live", get(|| async { Json(json!({"live": true})) }))
        .route("/v2/health/ready", get(|| async { Json(json!({"ready": true})) }))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata_v))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(model_ready_v))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_v))
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(state)
}

/// An error answer: `{"error": "..."}` as the protocol says.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type ApiResult = Result<Response, ApiError>;

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.token else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing bearer token".into()))?;
    if !constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "invalid bearer token".into()));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn model<'a>(state: &'a AppState, name: &str, version: Option<&str>) -> Result<&'a Served, ApiError> {
    let m = state.models.get(name).ok_or_else(|| {
        let served: Vec<&str> = state.models.keys().map(String::as_str).collect();
        ApiError(StatusCode::NOT_FOUND, format!("model `{name}` is not served; served: {}", served.join(", ")))
    })?;
    match version {
        Some(v) if v != m.version => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("version `{v}` of model `{name}` is not served; served: {}", m.version),
        )),
        _ => Ok(m),
    }
}

async fn server_metadata(State(state): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult {
    authorize(&state, &headers)?;
    Ok(Json(json!({"name": "switchyard", "version": env!("CARGO_PKG_VERSION"), "extensions": []})).into_response())
}

fn metadata(state: &AppState, headers: &HeaderMap, name: &str, version: Option<&str>) -> ApiResult {
    authorize(state, headers)?;
    let m = model(state, name, version)?;
    Ok(Json(json!({
        "name": name,
        "versions": [m.version],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": m.input, "datatype": "FP32", "shape": [-1, m.width]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
    }))
    .into_response())
}

async fn model_metadata(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> ApiResult {
    metadata(&state, &headers, &name, None)
}

async fn model_metadata_v(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> ApiResult {
    metadata(&state, &headers, &name, Some(&version))
}

async fn model_ready(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> ApiResult {
    authorize(&state, &headers)?;
    model(&state, &name, None)?;
    Ok(Json(json!({"name": name, "ready": true})).into_response())
}

async fn model_ready_v(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> ApiResult {
    authorize(&state, &headers)?;
    model(&state, &name, Some(&version))?;
    Ok(Json(json!({"name": name, "ready": true})).into_response())
}

#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: J,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
}

async fn infer(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    run_infer(&state, &headers, &name, None, &body).await
}

async fn infer_v(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    UrlPath((name, version)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    run_infer(&state, &headers, &name, Some(&version), &body).await
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

async fn run_infer(state: &AppState, headers: &HeaderMap, name: &str, version: Option<&str>, body: &[u8]) -> ApiResult {
    authorize(state, headers)?;
    let m = model(state, name, version)?;
    let req: InferRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("request is not a V2 inference request: {e}")))?;
    let (features, rows) = decode_input(m, &req.inputs)?;
    let wanted: Vec<String> = match &req.outputs {
        Some(o) if !o.is_empty() => o.iter().map(|o| o.name.clone()).collect(),
        _ => vec!["probabilities".into(), "label".into()],
    };
    if let Some(unknown) = wanted.iter().find(|w| *w != "probabilities" && *w != "label") {
        return Err(bad(format!("model `{name}` has no output `{unknown}`; outputs: probabilities, label")));
    }
    let scores = if rows == 0 {
        switchyard_workers::Scores { score: Vec::new(), label: Vec::new() }
    } else {
        m.worker
            .infer(features, rows)
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("inference failed: {e}")))?
    };
    let outputs: Vec<J> = wanted
        .iter()
        .map(|w| match w.as_str() {
            "probabilities" => {
                let data: Vec<f32> = scores.score.iter().flat_map(|&s| [1.0 - s, s]).collect();
                json!({"name": "probabilities", "datatype": "FP32", "shape": [rows, 2], "data": data})
            }
            _ => json!({"name": "label", "datatype": "INT64", "shape": [rows], "data": scores.label}),
        })
        .collect();
    let id = req.id.unwrap_or_default();
    Ok(Json(json!({"model_name": name, "model_version": m.version, "id": id, "outputs": outputs})).into_response())
}

/// The features of the request's one input tensor, and its row count.
fn decode_input(m: &Served, inputs: &[InputTensor]) -> Result<(Vec<f32>, usize), ApiError> {
    let [input] = inputs else {
        return Err(bad(format!("expected 1 input tensor (`{}`), got {}", m.input, inputs.len())));
    };
    if input.name != m.input {
        return Err(bad(format!("unknown input `{}`; the model's input is `{}`", input.name, m.input)));
    }
    let numeric = ["FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"];
    if !numeric.contains(&input.datatype.as_str()) {
        return Err(bad(format!("input `{}`: datatype {} is not numeric", input.name, input.datatype)));
    }
    let rows = match input.shape.as_slice() {
        [n, w] if *n >= 0 && *w as usize == m.width => *n as usize,
        [w] if *w as usize == m.width => 1,
        other => {
            return Err(bad(format!("input `{}`: shape {other:?}, expected [n, {}]", input.name, m.width)));
        }
    };
    let mut flat = Vec::with_capacity(rows * m.width);
    flatten(&input.data, &mut flat).map_err(|e| bad(format!("input `{}`: {e}", input.name)))?;
    if flat.len() != rows * m.width {
        return Err(bad(format!(
            "input `{}`: {} values for shape [{rows}, {}] ({} expected)",
            input.name,
            flat.len(),
            m.width,
            rows * m.width
        )));
    }
    Ok((flat, rows))
}

fn flatten(v: &J, out: &mut Vec<f32>) -> Result<(), String> {
    match v {
        J::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        J::Number(n) => {
            out.push(n.as_f64().ok_or("number out of range")? as f32);
            Ok(())
        }
        other => Err(format!("non-numeric value {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn flatten_accepts_nested_and_flat_data() {
        let mut out = Vec::new();
        flatten(&json!([[1, 2.5], [3, 4]]), &mut out).unwrap();
        assert_eq!(out, vec![1.0, 2.5, 3.0, 4.0]);
        assert!(flatten(&json!([1, "x"]), &mut Vec::new()).unwrap_err().contains("non-numeric"));
    }
}
