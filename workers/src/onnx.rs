//! ONNX Runtime models behind the dynamic batcher.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use switchyard_schemas::ModelRef;

use crate::batcher::{BatchModel, BatchStats, Batcher, Scores};
use crate::config::{ExecutionProviderKind, OnnxWorkerConfig};
use crate::registry::{self, ModelEntry};
use crate::{Error, Result};

static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Loads the ONNX Runtime library once per process. The library is searched
/// at `dylib` (when given), then `$ORT_DYLIB_PATH`, then the
/// `onnxruntime` wheel inside the project's `.venv`.
pub fn init_runtime(dylib: Option<&Path>) -> Result<()> {
    let _guard = INIT.lock().map_err(|_| Error::Internal("runtime init lock poisoned".into()))?;
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    let path = find_library(dylib).ok_or_else(|| {
        Error::Ort(
            "ONNX Runtime library not found: set ORT_DYLIB_PATH to libonnxruntime.so, \
             or run `make setup` to install it from PyPI's onnxruntime wheel into .venv"
                .into(),
        )
    })?;
    let env = ort::init_from(&path)
        .map_err(|e| Error::Ort(format!("loading {}: {e}", path.display())))?
        .with_name("switchyard")
        .with_telemetry(false)
        .build()?;
    let _ = ENVIRONMENT.set(env);
    tracing::debug!(library = %path.display(), "ONNX Runtime loaded");
    Ok(())
}

fn find_library(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(p));
    }
    // The wheel installed by `make setup`, found from the working directory
    // or from the binary's location (target/<profile>/switchyard).
    let mut roots = vec![std::env::current_dir().ok()?];
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    for root in roots {
        let lib = root.join(".venv/lib");
        let Ok(rd) = std::fs::read_dir(&lib) else { continue };
        for py in rd.filter_map(|e| e.ok()) {
            let capi = py.path().join("site-packages/onnxruntime/capi");
            let Ok(files) = std::fs::read_dir(&capi) else { continue };
            let mut libs: Vec<PathBuf> = files
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so.")))
                .collect();
            libs.sort();
            if let Some(l) = libs.pop() {
                return Some(l);
            }
        }
    }
    None
}

fn environment() -> Result<&'static ort::environment::Environment> {
    init_runtime(None)?;
    ENVIRONMENT.get().ok_or_else(|| Error::Internal("ONNX Runtime environment missing".into()))
}

/// One ONNX Runtime session for a registered classifier.
pub struct OnnxModel {
    session: Session,
    input: String,
    probabilities: String,
    label: Option<String>,
    positive: usize,
    width: usize,
    provider: &'static str,
}

impl OnnxModel {
    /// Opens a session for `entry`, checking the file hash and the graph's
    /// inputs/outputs against the metadata.
    pub fn load(entry: &ModelEntry, intra_op_threads: usize, ep: ExecutionProviderKind) -> Result<Self> {
        let bytes = entry.read_verified()?;
        let meta = &entry.metadata;
        let mut builder = Session::builder(environment()?)?.with_intra_threads(intra_op_threads)?;
        let provider = register_provider(&mut builder, ep)?;
        let session = builder.commit_from_memory(&bytes)?;
        let width = meta.feature_order.len();
        let path = entry.onnx_path.display();
        let input = session.inputs().iter().find(|o| o.name() == meta.input).ok_or_else(|| {
            Error::Registry(format!(
                "{path}: metadata names input `{}` but the model's inputs are [{}]",
                meta.input,
                session.inputs().iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        match input.dtype() {
            ValueType::Tensor { ty: TensorElementType::Float32, shape, .. }
                if shape.len() == 2 && (shape[1] == width as i64 || shape[1] < 0) => {}
            other => {
                return Err(Error::Registry(format!(
                    "{path}: input `{}` is {other:?}; expected float32 [batch, {width}] for the {width} features in metadata.json",
                    meta.input
                )))
            }
        }
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        for name in std::iter::once(&meta.outputs.probabilities).chain(meta.outputs.label.as_ref()) {
            if !outputs.contains(&name.as_str()) {
                return Err(Error::Registry(format!(
                    "{path}: metadata names output `{name}` but the model's outputs are [{}]",
                    outputs.join(", ")
                )));
            }
        }
        Ok(Self {
            input: meta.input.clone(),
            probabilities: meta.outputs.probabilities.clone(),
            label: meta.outputs.label.clone(),
            positive: meta.outputs.positive_class_index,
            width,
            provider,
            session,
        })
    }

    /// `cpu` or `cuda`: the execution provider that runs this session.
    pub fn provider(&self) -> &'static str {
        self.provider
    }
}

#[cfg(feature = "cuda")]
fn register_provider(
    builder: &mut ort::session::builder::SessionBuilder,
    ep: ExecutionProviderKind,
) -> Result<&'static str> {
    use ort::ep::ExecutionProvider;
    if ep == ExecutionProviderKind::Cpu {
        return Ok("cpu");
    }
    match ort::ep::CUDA::default().register(builder) {
        Ok(()) => Ok("cuda"),
        Err(e) if ep == ExecutionProviderKind::Auto => {
            tracing::warn!(error = %e, "CUDA execution provider unavailable; running on CPU");
            Ok("cpu")
        }
        Err(e) => Err(Error::Ort(format!("CUDA execution provider requested but unavailable: {e}"))),
    }
}

#[cfg(not(feature = "cuda"))]
fn register_provider(_: &mut ort::session::builder::SessionBuilder, ep: ExecutionProviderKind) -> Result<&'static str> {
    match ep {
        ExecutionProviderKind::Cuda => {
            Err(Error::Ort("this build has no CUDA support; rebuild with `--features cuda`".into()))
        }
        _ => Ok("cpu"),
    }
}

impl BatchModel for OnnxModel {
    fn width(&self) -> usize {
        self.width
    }

    fn run(&mut self, input: &[f32], rows: usize) -> Result<Scores> {
        let tensor = TensorRef::from_array_view(([rows, self.width], input))?;
        let outputs = self.session.run(ort::inputs![self.input.as_str() => tensor])?;
        let (shape, probs) = outputs[self.probabilities.as_str()].try_extract_tensor::<f32>()?;
        let classes = shape.get(1).copied().unwrap_or(1).max(1) as usize;
        if self.positive >= classes || probs.len() != rows * classes {
            return Err(Error::Registry(format!(
                "output `{}` has shape {shape:?}; cannot read class {} for {rows} rows",
                self.probabilities, self.positive
            )));
        }
        let score: Vec<f32> = probs.chunks_exact(classes).map(|r| r[self.positive]).collect();
        let label = match &self.label {
            Some(name) => outputs[name.as_str()].try_extract_tensor::<i64>()?.1.to_vec(),
            None => score.iter().map(|s| i64::from(*s >= 0.5)).collect(),
        };
        Ok(Scores { score, label })
    }
}

/// A local ONNX worker: a registry model, its sessions and their batcher.
pub struct OnnxWorker {
    batcher: Batcher,
    model: ModelRef,
}

impl OnnxWorker {
    /// Resolves the model in the registry (relative to `base`), checks it
    /// against the pipeline's `features`, and starts its sessions.
    pub fn start(name: &str, config: &OnnxWorkerConfig, base: &Path, features: &[String]) -> Result<Self> {
        let registry = base.join(&config.registry);
        let entry = registry::resolve(&registry, &config.model, config.version.as_deref())?;
        entry.check_features(features)?;
        let models = (0..config.instances.max(1))
            .map(|_| OnnxModel::load(&entry, config.intra_op_threads, config.execution_provider))
            .collect::<Result<Vec<_>>>()?;
        let provider = models[0].provider();
        tracing::info!(worker = name, model = %entry.metadata.name, version = %entry.metadata.version, provider, "ONNX worker ready");
        let model = ModelRef {
            name: entry.metadata.name.clone(),
            version: entry.metadata.version.clone(),
            sha256: entry.metadata.sha256.to_lowercase(),
            provider: format!("local/{provider}"),
            request_id: String::new(),
        };
        let batcher = Batcher::start(
            name,
            models,
            config.max_batch_size,
            Duration::from_millis(config.max_queue_delay_ms),
            config.max_queued_requests,
        )?;
        Ok(Self { batcher, model })
    }

    /// The model that answers.
    pub fn model(&self) -> &ModelRef {
        &self.model
    }

    /// Runs `rows` rows of features through the batcher.
    pub async fn infer(&self, features: Vec<f32>, rows: usize) -> Result<Scores> {
        self.batcher.infer(features, rows).await
    }

    /// Batching counters.
    pub fn stats(&self) -> Arc<BatchStats> {
        self.batcher.stats()
    }
}
