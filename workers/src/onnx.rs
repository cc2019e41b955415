//! ONNX Runtime models behind the dynamic batcher.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use switchyard_schemas::{AuditEvent, ModelRef, RolloutState};

use crate::batcher::{BatchModel, BatchStats, Batcher, Scores};
use crate::config::{ExecutionProviderKind, OnnxWorkerConfig, RolloutMode};
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
    // (or the folders above it: a crate's tests run in its own folder) or
    // from the binary's location (target/<profile>/switchyard).
    let cwd = std::env::current_dir().ok()?;
    let mut roots: Vec<PathBuf> = cwd.ancestors().take(3).map(Path::to_path_buf).collect();
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
        let mut model = Self {
            input: meta.input.clone(),
            probabilities: meta.outputs.probabilities.clone(),
            label: meta.outputs.label.clone(),
            positive: meta.outputs.positive_class_index,
            width,
            provider,
            session,
        };
        // One run before the first event: ONNX Runtime allocates and plans
        // on its first run (tens of ms), which would otherwise land on the
        // first records' latency; a model that cannot run fails here.
        model
            .run(&vec![0.0; width], 1)
            .map_err(|e| Error::Registry(format!("{path}: a trial run on one row of zeros failed: {e}")))?;
        Ok(model)
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

/// What a served row's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The stable version.
    Stable,
    /// The candidate version, answering its canary share.
    Canary,
    /// The candidate version scoring beside the stable one (not sent on).
    Shadow,
}

/// One row's answer and the version that gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowAnswer {
    /// Positive-class probability.
    pub score: f32,
    /// Predicted class.
    pub label: i64,
    /// The model version that answered.
    pub model: ModelRef,
    /// Stable, canary or shadow.
    pub role: Role,
}

/// The answers to a block of events: one served answer per row, and the
/// candidate's shadow answers `(row, answer)` when it runs in shadow.
#[derive(Debug, Clone, Default)]
pub struct EventAnswers {
    /// One per row, in order.
    pub served: Vec<RowAnswer>,
    /// Shadow answers of the candidate.
    pub shadow: Vec<(usize, RowAnswer)>,
}

/// A change of the versions a worker serves, for the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadEvent {
    /// What happened: a candidate started, was promoted, rolled back or
    /// withdrawn, a version replaced or became stable, or failed to load.
    pub event: AuditEvent,
    /// The version it is about.
    pub version: String,
    /// The version serving before.
    pub previous: String,
    /// What happened, in words.
    pub detail: String,
}

/// One loaded version: its sessions behind their batcher.
struct Version {
    batcher: Batcher,
    model: ModelRef,
}

/// The versions answering now.
struct Serving {
    stable: Arc<Version>,
    candidate: Option<Arc<Version>>,
}

/// A local ONNX worker: a registry model, its sessions and their batcher.
/// With `reload`, it reads the registry every `poll_ms` ([`OnnxWorker::poll`])
/// and takes up new versions as the rollout says, without a restart;
/// requests in flight finish on the version they started on.
pub struct OnnxWorker {
    loader: Loader,
    serving: RwLock<Arc<Serving>>,
}

/// What loading a version needs.
struct Loader {
    name: String,
    config: OnnxWorkerConfig,
    registry: PathBuf,
    features: Vec<String>,
    stats: Arc<BatchStats>,
    /// Versions that failed to load, with the reason (not tried again).
    failed: Mutex<BTreeMap<String, String>>,
}

/// FNV-1a: a stable hash, so a lineage id always falls on the same side.
fn share_of(id: &str, salt: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % 1_000_000) as f64 / 1_000_000.0
}

impl OnnxWorker {
    /// Resolves the model in the registry (relative to `base`), checks it
    /// against the pipeline's `features`, and starts its sessions. With a
    /// canary or shadow rollout, the registry's `rollout.json` names the
    /// stable version (it is recorded there on first start) and a newer
    /// version not yet decided on starts as the candidate.
    pub fn start(name: &str, config: &OnnxWorkerConfig, base: &Path, features: &[String]) -> Result<Self> {
        let worker = Loader {
            name: name.to_string(),
            config: config.clone(),
            registry: base.join(&config.registry),
            features: features.to_vec(),
            stats: Arc::new(BatchStats::default()),
            failed: Mutex::new(BTreeMap::new()),
        };
        let (stable, candidate) = match (&config.version, &config.reload) {
            (Some(v), _) => (v.clone(), None),
            (None, Some(r)) if r.rollout != RolloutMode::Replace => {
                let versions = registry::versions(&worker.registry, &config.model)?;
                let mut state = worker.rollout_state()?;
                let stable = match &state.stable {
                    Some(v) => v.clone(),
                    None => registry::latest(&worker.registry, &config.model)?,
                };
                if state.stable.is_none() {
                    // Later versions are candidates of this one, also after a restart.
                    state.stable = Some(stable.clone());
                    state.save(&worker.registry, &config.model).map_err(|e| Error::Registry(e.to_string()))?;
                }
                (stable, state.candidate_of(&versions))
            }
            (None, _) => (registry::latest(&worker.registry, &config.model)?, None),
        };
        let stable = worker.load(&stable)?;
        let candidate = match candidate {
            Some(v) => match worker.load(&v) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(worker = name, version = %v, error = %e, "candidate version cannot be loaded; serving the stable one");
                    worker.lock_failed().insert(v, e.to_string());
                    None
                }
            },
            None => None,
        };
        let provider = &stable.model.provider;
        tracing::info!(worker = name, model = %stable.model.name, version = %stable.model.version,
            candidate = candidate.as_ref().map(|c| c.model.version.as_str()), provider, "ONNX worker ready");
        Ok(Self { loader: worker, serving: RwLock::new(Arc::new(Serving { stable, candidate })) })
    }

    fn current(&self) -> Arc<Serving> {
        self.serving.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The stable version: the one that answers [`OnnxWorker::infer`].
    pub fn model(&self) -> ModelRef {
        self.current().stable.model.clone()
    }

    /// The candidate version being rolled out, if any.
    pub fn candidate(&self) -> Option<ModelRef> {
        self.current().candidate.as_ref().map(|c| c.model.clone())
    }

    /// Runs `rows` rows of features through the stable version.
    pub async fn infer(&self, features: Vec<f32>, rows: usize) -> Result<Scores> {
        let serving = self.current();
        serving.stable.batcher.infer(features, rows).await
    }

    /// Answers one row per id (`ids[i]` is row `i`'s lineage id): the
    /// stable version, or for a canary's share of the ids the candidate;
    /// in shadow, the candidate also scores its sample. A failing
    /// candidate never costs an answer: its rows go to the stable version.
    pub async fn answer(&self, features: Vec<f32>, ids: &[&str]) -> Result<EventAnswers> {
        let serving = self.current();
        let rows = ids.len();
        let width = self.loader.features.len();
        let stable = &serving.stable;
        let row_answers = |s: Scores, v: &Version, role: Role| -> Vec<RowAnswer> {
            s.score
                .into_iter()
                .zip(s.label)
                .map(|(score, label)| RowAnswer { score, label, model: v.model.clone(), role })
                .collect()
        };
        let (Some(cand), Some(reload)) = (&serving.candidate, &self.loader.config.reload) else {
            let s = stable.batcher.infer(features, rows).await?;
            return Ok(EventAnswers { served: row_answers(s, stable, Role::Stable), shadow: Vec::new() });
        };
        // Rows picked by lineage id (`salt` keeps canary and shadow picks apart).
        let split = |share: f64, salt: u64| -> (Vec<usize>, Vec<usize>) {
            (0..rows).partition(|&i| share_of(ids[i], salt) < share)
        };
        let rows_of = |idx: &[usize]| -> Vec<f32> {
            idx.iter().flat_map(|&i| features[i * width..(i + 1) * width].iter().copied()).collect()
        };
        match reload.rollout {
            RolloutMode::Shadow => {
                let chosen = split(reload.shadow_sample, 0x5348).0;
                let shadow_in = rows_of(&chosen);
                let n = chosen.len();
                let (served, shadow) =
                    tokio::join!(stable.batcher.infer(features, rows), cand.batcher.infer(shadow_in, n));
                let shadow = match shadow {
                    Ok(s) => chosen.into_iter().zip(row_answers(s, cand, Role::Shadow)).collect(),
                    Err(e) => {
                        tracing::warn!(worker = %self.loader.name, version = %cand.model.version, error = %e, "candidate failed in shadow");
                        Vec::new()
                    }
                };
                Ok(EventAnswers { served: row_answers(served?, stable, Role::Stable), shadow })
            }
            RolloutMode::Canary | RolloutMode::Replace => {
                let (chosen, rest) = split(reload.canary_fraction, 0x4341);
                let (a, b) = tokio::join!(
                    stable.batcher.infer(rows_of(&rest), rest.len()),
                    cand.batcher.infer(rows_of(&chosen), chosen.len())
                );
                let mut out: Vec<Option<RowAnswer>> = vec![None; rows];
                for (i, r) in rest.into_iter().zip(row_answers(a?, stable, Role::Stable)) {
                    out[i] = Some(r);
                }
                let canary = match b {
                    Ok(s) => row_answers(s, cand, Role::Canary),
                    Err(e) => {
                        tracing::warn!(worker = %self.loader.name, version = %cand.model.version, error = %e, "candidate failed; its canary rows go to the stable version");
                        row_answers(stable.batcher.infer(rows_of(&chosen), chosen.len()).await?, stable, Role::Stable)
                    }
                };
                for (i, r) in chosen.into_iter().zip(canary) {
                    out[i] = Some(r);
                }
                let served = out
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| Error::Internal("a row without an answer".into()))?;
                Ok(EventAnswers { served, shadow: Vec::new() })
            }
        }
    }

    /// Batching counters (all versions together).
    pub fn stats(&self) -> Arc<BatchStats> {
        self.loader.stats.clone()
    }

    /// How often [`OnnxWorker::poll`] should run; `None` without `reload`.
    pub fn poll_interval(&self) -> Option<Duration> {
        self.loader
            .config
            .reload
            .as_ref()
            .filter(|_| self.loader.config.version.is_none())
            .map(|r| Duration::from_millis(r.poll_ms))
    }

    /// Reads the registry and its rollout state and changes the serving
    /// versions to match: a new candidate starts, a promoted one becomes
    /// stable, a rejected one stops (with `replace`, the highest version
    /// serves). Blocking: new sessions load here. Returns what changed.
    pub fn poll(&self) -> Vec<ReloadEvent> {
        let Some(reload) = self.poll_interval().and(self.loader.config.reload.as_ref()) else { return Vec::new() };
        let versions = match registry::versions(&self.loader.registry, &self.loader.config.model) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(worker = %self.loader.name, error = %e, "registry unreadable; serving on");
                return Vec::new();
            }
        };
        let (state, target_stable, target_candidate) = match reload.rollout {
            RolloutMode::Replace => {
                let failed = self.loader.lock_failed();
                (RolloutState::default(), versions.iter().find(|v| !failed.contains_key(*v)).cloned(), None)
            }
            _ => match self.loader.rollout_state() {
                Ok(s) => {
                    let (st, c) = (s.stable_of(&versions), s.candidate_of(&versions));
                    (s, st, c)
                }
                Err(e) => {
                    tracing::warn!(worker = %self.loader.name, error = %e, "rollout state unreadable; serving on");
                    return Vec::new();
                }
            },
        };
        let cur = self.current();
        let old_stable = cur.stable.model.version.clone();
        let mut events = Vec::new();
        let mut stable = cur.stable.clone();
        let mut candidate = cur.candidate.clone();
        if let Some(target) = target_stable.filter(|t| *t != old_stable) {
            let reused = candidate.as_ref().filter(|c| c.model.version == target).cloned();
            let event = match (reload.rollout, &reused) {
                (RolloutMode::Replace, _) => AuditEvent::Replaced,
                (_, Some(_)) => AuditEvent::Promoted,
                _ => AuditEvent::StableChanged,
            };
            if let Ok(v) = reused.map(Ok).unwrap_or_else(|| self.loader.try_load(&target, &old_stable, &mut events)) {
                let why = state.last_promotion().map(|d| d.reason.clone()).unwrap_or_default();
                events.push(ReloadEvent {
                    event,
                    version: target.clone(),
                    previous: old_stable.clone(),
                    detail: format!(
                        "version {target} serves all events (was {old_stable}){}",
                        if why.is_empty() { String::new() } else { format!(": {why}") }
                    ),
                });
                if candidate.as_ref().is_some_and(|c| c.model.version == target) {
                    candidate = None;
                }
                stable = v;
            }
        }
        let cur_candidate = candidate.as_ref().map(|c| c.model.version.clone());
        if target_candidate != cur_candidate {
            // A new candidate that cannot be loaded leaves the current one running.
            let started = target_candidate
                .as_ref()
                .and_then(|t| self.loader.try_load(t, &stable.model.version, &mut events).ok().map(|v| (t.clone(), v)));
            if let Some(old) = &cur_candidate {
                if started.is_some() || target_candidate.is_none() || state.rejected.contains_key(old) {
                    let (event, detail) = match state.rejected.get(old) {
                        Some(d) => (AuditEvent::RolledBack, format!("version {old} stopped: {}", d.reason)),
                        None => {
                            (AuditEvent::CandidateWithdrawn, format!("version {old} stopped: no longer the candidate"))
                        }
                    };
                    events.push(ReloadEvent {
                        event,
                        version: old.clone(),
                        previous: stable.model.version.clone(),
                        detail,
                    });
                    candidate = None;
                }
            }
            if let Some((target, v)) = started {
                let share = match reload.rollout {
                    RolloutMode::Shadow => format!("scores {:.0}% of events in shadow", reload.shadow_sample * 100.0),
                    _ => format!("answers {:.0}% of events as a canary", reload.canary_fraction * 100.0),
                };
                events.push(ReloadEvent {
                    event: AuditEvent::CandidateStarted,
                    version: target.clone(),
                    previous: stable.model.version.clone(),
                    detail: format!("version {target} {share}; version {} serves the rest", stable.model.version),
                });
                candidate = Some(v);
            }
        }
        if !events.is_empty() {
            *self.serving.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Serving { stable, candidate });
        }
        for e in &events {
            tracing::info!(worker = %self.loader.name, event = %e.event, version = %e.version, "{}", e.detail);
        }
        events
    }
}

impl Loader {
    fn rollout_state(&self) -> Result<RolloutState> {
        RolloutState::load(&self.registry, &self.config.model).map_err(|e| Error::Registry(e.to_string()))
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads `version` of the model: checks it and starts its sessions.
    fn load(&self, version: &str) -> Result<Arc<Version>> {
        let c = &self.config;
        let entry = registry::lookup(&self.registry, &c.model, Some(version))?;
        entry.check_features(&self.features)?;
        let models = (0..c.instances.max(1))
            .map(|_| OnnxModel::load(&entry, c.intra_op_threads, c.execution_provider))
            .collect::<Result<Vec<_>>>()?;
        let provider = models[0].provider();
        let model = ModelRef {
            name: entry.metadata.name.clone(),
            version: entry.metadata.version.clone(),
            sha256: entry.metadata.sha256.to_lowercase(),
            provider: format!("local/{provider}"),
            request_id: String::new(),
        };
        let batcher = Batcher::start_counting(
            &format!("{}-v{version}", self.name),
            models,
            c.max_batch_size,
            Duration::from_millis(c.max_queue_delay_ms),
            c.max_queued_requests,
            self.stats.clone(),
        )?;
        Ok(Arc::new(Version { batcher, model }))
    }

    /// Loads `version` unless it failed before; a failure is reported once.
    fn try_load(
        &self,
        version: &str,
        serving: &str,
        events: &mut Vec<ReloadEvent>,
    ) -> std::result::Result<Arc<Version>, ()> {
        if self.lock_failed().contains_key(version) {
            return Err(());
        }
        self.load(version).map_err(|e| {
            self.lock_failed().insert(version.to_string(), e.to_string());
            events.push(ReloadEvent {
                event: AuditEvent::LoadFailed,
                version: version.to_string(),
                previous: serving.to_string(),
                detail: format!("version {version} cannot be loaded, version {serving} serves on: {e}"),
            });
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the loaded ONNX Runtime library was built with CUDA (the
    /// `onnxruntime` CPU wheel is not; `onnxruntime-gpu` is).
    #[cfg(feature = "cuda")]
    fn runtime_has_cuda() -> bool {
        use ort::ep::ExecutionProvider;
        ort::ep::CUDA::is_available().unwrap_or(false)
    }

    #[cfg(not(feature = "cuda"))]
    fn runtime_has_cuda() -> bool {
        false
    }

    /// `auto` runs on the CPU when CUDA cannot be used (a build without the
    /// `cuda` feature, or a runtime library without the CUDA provider), and
    /// `cuda` then fails at session creation naming why; `cpu` is always
    /// the CPU. `make test` runs this with and without `--features cuda`.
    #[test]
    fn auto_falls_back_to_the_cpu_and_cuda_says_why_it_cannot_run() {
        init_runtime(None).expect("ONNX Runtime (make setup)");
        let registry = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/models");
        let entry = crate::registry::lookup(&registry, "fraud", None).unwrap();
        let cpu = OnnxModel::load(&entry, 1, ExecutionProviderKind::Cpu).unwrap();
        assert_eq!(cpu.provider(), "cpu");
        if runtime_has_cuda() {
            eprintln!("this ONNX Runtime has the CUDA provider: the fallback is not exercised");
            return;
        }
        let auto = OnnxModel::load(&entry, 1, ExecutionProviderKind::Auto).unwrap();
        assert_eq!(auto.provider(), "cpu");
        let err = OnnxModel::load(&entry, 1, ExecutionProviderKind::Cuda).err().expect("no CUDA here").to_string();
        assert!(err.contains("CUDA"), "{err}");
        if cfg!(not(feature = "cuda")) {
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
