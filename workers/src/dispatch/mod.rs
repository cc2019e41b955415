//! Dispatch: which worker answers each routed event of a chunk.
//!
//! ```text
//!  events of a chunk ─▶ group by their current worker ─▶ all groups at once:
//!     local: one batcher request per group
//!     cloud: admit (breaker, budget) ─▶ latency budget ─▶ infer (coalesced)
//!  answered ─▶ done (shadow copy to the shadow worker, when sampled)
//!  not answered ─▶ next worker of the plan's fallback chain ─▶ next round
//!  chain exhausted ─▶ wait (bounded) for an unavailable endpoint, else DLQ
//! ```
//!
//! Every event either gets an answer from a worker its plan allows, or a
//! DLQ outcome with the reason: never dropped, never sent where it may not
//! go (assignments come from the router's plan, which leaves out cloud
//! workers for data that may not leave; a request the last PII check
//! blocked only goes on to local workers: the last egress guard).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_schemas::{ErrorClass, Value};

use crate::answer::Answer;
use crate::cloud::{CloudError, CloudInput, CloudWorker};
use crate::onnx::OnnxWorker;

/// A worker the pipeline can send events to.
#[derive(Clone)]
pub enum Worker {
    /// A local ONNX model behind the batcher.
    Local(Arc<OnnxWorker>),
    /// A cloud endpoint.
    Cloud(Arc<CloudWorker>),
}

impl Worker {
    /// Whether it sends data outside the trusted boundary.
    pub fn is_cloud(&self) -> bool {
        matches!(self, Worker::Cloud(_))
    }
}

/// The running workers, by index.
pub struct WorkerSet {
    /// Name and worker, in manifest order.
    pub list: Vec<(String, Worker)>,
}

impl WorkerSet {
    /// The index of the worker called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|(n, _)| n == name)
    }

    /// The worker's name.
    pub fn name(&self, w: usize) -> &str {
        &self.list[w].0
    }

    /// Whether worker `w` sends data outside the trusted boundary.
    pub fn is_cloud(&self, w: usize) -> bool {
        self.list[w].1.is_cloud()
    }

    /// The cloud workers, in manifest order.
    pub fn clouds(&self) -> impl Iterator<Item = &Arc<CloudWorker>> {
        self.list.iter().filter_map(|(_, w)| match w {
            Worker::Cloud(c) => Some(c),
            Worker::Local(_) => None,
        })
    }
}

/// One routed event's assignment: the workers its plan allows, in order.
pub struct Assignment {
    /// Lineage id (cloud request ids derive from it).
    pub id: String,
    /// Field values in schema order (`openai` templates); empty when no
    /// cloud worker is in the chain.
    pub values: Vec<Value>,
    /// The primary worker, then the fallbacks, in order.
    pub chain: Vec<usize>,
    /// The shadow worker, when the event was sampled for one.
    pub shadow: Option<usize>,
    /// The event's latency budget.
    pub deadline: Option<Duration>,
    /// Cloud workers of the rule left out because the event may not leave.
    pub withheld: Vec<String>,
    /// The event's span when it is traced (cloud requests link to it).
    pub trace: Option<opentelemetry::trace::SpanContext>,
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A worker answered.
    Served {
        /// The worker that answered.
        worker: usize,
        /// Its answer.
        answer: Answer,
        /// When a fallback answered: why the workers before it did not.
        fallback: Option<String>,
    },
    /// No allowed worker could answer; the event goes to the DLQ.
    Failed {
        /// DLQ error class.
        class: ErrorClass,
        /// What was tried and why each failed.
        message: String,
    },
}

/// The outcomes of a chunk, in assignment order, and the shadow answers.
pub struct Dispatched {
    /// One per job.
    pub outcomes: Vec<Outcome>,
    /// (job, shadow worker, answer) for each shadow answer.
    pub shadows: Vec<(usize, usize, Answer)>,
    /// Shadow requests that got no answer (they never hold up the event).
    pub shadow_failed: u64,
}

/// Why a worker did not answer an event.
enum Miss {
    /// The worker ran and failed: try the next one.
    Next(String),
    /// The worker was passed over (too slow for the latency budget).
    Skip(String),
    /// The endpoint cannot take requests now; may become available.
    Unavailable { note: String, retry_in: Duration, pause: bool },
    /// The last PII check blocked the request: only local workers may go on.
    Blocked(String),
}

struct State {
    pos: usize,
    notes: Vec<String>,
    blocked: bool,
    /// The soonest an unavailable endpoint of the chain may take requests
    /// again, and how long events may wait for it (its `max_wait_ms`).
    unavailable: Option<(Duration, Duration)>,
    /// Only failures of the kind "the worker ran and failed".
    only_failures: bool,
    waited_since: Option<Instant>,
    ready_at: Instant,
}

impl State {
    /// Adds a note once (waiting rounds repeat the same reasons).
    fn note(&mut self, text: String) {
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }
}

/// Dispatches every assignment: rounds of grouped requests until each
/// has an outcome. `features` holds `width` floats per assignment.
pub async fn dispatch(
    workers: Arc<WorkerSet>,
    jobs: Vec<Assignment>,
    features: Arc<Vec<f32>>,
    width: usize,
) -> Dispatched {
    let n = jobs.len();
    let start = Instant::now();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    let mut state: Vec<State> = (0..n)
        .map(|_| State {
            pos: 0,
            notes: Vec::new(),
            blocked: false,
            unavailable: None,
            only_failures: true,
            waited_since: None,
            ready_at: start,
        })
        .collect();
    loop {
        let now = Instant::now();
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut next_ready: Option<Instant> = None;
        for j in 0..n {
            if outcomes[j].is_some() {
                continue;
            }
            if state[j].ready_at > now {
                next_ready = Some(next_ready.map_or(state[j].ready_at, |r| r.min(state[j].ready_at)));
                continue;
            }
            skip_cloud_if_blocked(&workers, &jobs[j], &mut state[j]);
            match jobs[j].chain.get(state[j].pos) {
                Some(&w) => groups.entry(w).or_default().push(j),
                None => {
                    // Chain exhausted: wait for an unavailable endpoint, or give up.
                    let s = &mut state[j];
                    let since = *s.waited_since.get_or_insert(now);
                    match s.unavailable {
                        Some((retry_in, max_wait)) if !s.blocked && now.duration_since(since) < max_wait => {
                            let left = max_wait - now.duration_since(since);
                            s.ready_at = now + retry_in.clamp(Duration::from_millis(10), left);
                            s.pos = 0;
                            s.unavailable = None;
                            next_ready = Some(next_ready.map_or(s.ready_at, |r| r.min(s.ready_at)));
                        }
                        _ => outcomes[j] = Some(give_up(&jobs[j], s, now.duration_since(since))),
                    }
                }
            }
        }
        if groups.is_empty() {
            match next_ready {
                Some(at) => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                    continue;
                }
                None => break,
            }
        }
        let rounds = groups.into_iter().map(|(w, js)| {
            let workers = workers.clone();
            let features = features.clone();
            let inputs: Vec<Ask> = js
                .iter()
                .map(|&j| ask_for(j, jobs[j].deadline, &jobs[j], cloud_values(&workers, w, &jobs[j])))
                .collect();
            async move { (w, ask(&workers, w, inputs, &features, width).await) }
        });
        for (w, results) in futures::future::join_all(rounds).await {
            for (j, result) in results {
                let s = &mut state[j];
                match result {
                    Ok(answer) => {
                        let fallback = (s.pos > 0).then(|| s.notes.join("; "));
                        outcomes[j] = Some(Outcome::Served { worker: w, answer, fallback });
                    }
                    Err(Miss::Next(note)) => {
                        s.note(note);
                        s.pos += 1;
                    }
                    Err(Miss::Skip(note)) => {
                        s.note(note);
                        s.only_failures = false;
                        s.pos += 1;
                    }
                    Err(Miss::Blocked(note)) => {
                        s.note(note);
                        s.blocked = true;
                        s.only_failures = false;
                        s.pos += 1;
                    }
                    Err(Miss::Unavailable { note, retry_in, pause }) => {
                        s.only_failures = false;
                        if pause {
                            // The policy says wait for this endpoint, not fall back.
                            s.ready_at = Instant::now() + retry_in.max(Duration::from_millis(10));
                            s.note(note);
                            continue;
                        }
                        s.note(note);
                        let max_wait = match &workers.list[w].1 {
                            Worker::Cloud(c) => c.max_wait(),
                            Worker::Local(_) => Duration::ZERO,
                        };
                        s.unavailable = Some(match s.unavailable {
                            Some((r, m)) => (r.min(retry_in), m.max(max_wait)),
                            None => (retry_in, max_wait),
                        });
                        s.pos += 1;
                    }
                }
            }
        }
    }
    let mut outcomes: Vec<Outcome> = outcomes.into_iter().map(|o| o.expect("every job resolved")).collect();
    let (mut shadows, shadow_failed) = shadow(&workers, &jobs, &outcomes, &features, width).await;
    // A candidate version in shadow answered beside the served one.
    for (j, o) in outcomes.iter_mut().enumerate() {
        if let Outcome::Served { worker, answer, .. } = o {
            if let Some(a) = answer.candidate_shadow.take() {
                shadows.push((j, *worker, *a));
            }
        }
    }
    shadows.sort_by_key(|s| s.0);
    Dispatched { outcomes, shadows, shadow_failed }
}

/// After the last PII check blocked a request, cloud workers are passed over.
fn skip_cloud_if_blocked(workers: &WorkerSet, job: &Assignment, s: &mut State) {
    if !s.blocked {
        return;
    }
    while let Some(&w) = job.chain.get(s.pos) {
        if !workers.list[w].1.is_cloud() {
            break;
        }
        s.note(format!("worker `{}` skipped: the request was blocked before egress", workers.name(w)));
        s.pos += 1;
    }
}

fn give_up(job: &Assignment, s: &State, waited: Duration) -> Outcome {
    let mut message = if s.notes.is_empty() { "no worker in the plan".to_string() } else { s.notes.join("; ") };
    if !job.withheld.is_empty() {
        message.push_str(&format!(
            "; not offered (the event may not leave the trusted boundary): {}",
            job.withheld.join(", ")
        ));
    }
    if waited >= Duration::from_millis(1) && !s.blocked && !s.only_failures {
        message.push_str(&format!("; waited {} ms", waited.as_millis()));
    }
    let class = if s.blocked {
        ErrorClass::EgressBlocked
    } else if s.only_failures {
        ErrorClass::InferenceFailed
    } else {
        ErrorClass::NoPath
    };
    Outcome::Failed { class, message }
}

fn cloud_values(workers: &WorkerSet, w: usize, job: &Assignment) -> Vec<Value> {
    if workers.list[w].1.is_cloud() {
        job.values.clone()
    } else {
        Vec::new()
    }
}

fn rows_of(features: &[f32], width: usize, jobs: impl Iterator<Item = usize>) -> Vec<f32> {
    let mut out = Vec::new();
    for j in jobs {
        out.extend_from_slice(&features[j * width..(j + 1) * width]);
    }
    out
}

/// One event of a request: its index, latency budget, lineage id, field
/// values (cloud templates) and trace context.
type Ask = (usize, Option<Duration>, String, Vec<Value>, Option<opentelemetry::trace::SpanContext>);

fn ask_for(j: usize, deadline: Option<Duration>, job: &Assignment, values: Vec<Value>) -> Ask {
    (j, deadline, job.id.clone(), values, job.trace.clone())
}

/// One request of a group of events to worker `w`.
async fn ask(
    workers: &WorkerSet,
    w: usize,
    inputs: Vec<Ask>,
    features: &[f32],
    width: usize,
) -> Vec<(usize, Result<Answer, Miss>)> {
    let name = workers.name(w);
    match &workers.list[w].1 {
        Worker::Local(worker) => {
            let input = rows_of(features, width, inputs.iter().map(|i| i.0));
            let ids: Vec<&str> = inputs.iter().map(|i| i.2.as_str()).collect();
            match worker.answer(input, &ids).await {
                Ok(a) => {
                    let mut shadow: Vec<Option<Answer>> = vec![None; inputs.len()];
                    for (row, r) in a.shadow {
                        shadow[row] = Some(Answer::from(r));
                    }
                    inputs
                        .iter()
                        .zip(a.served)
                        .zip(shadow)
                        .map(|((i, r), sh)| {
                            let mut answer = Answer::from(r);
                            answer.candidate_shadow = sh.map(Box::new);
                            (i.0, Ok(answer))
                        })
                        .collect()
                }
                Err(e) => {
                    inputs.iter().map(|i| (i.0, Err(Miss::Next(format!("worker `{name}` failed: {e}"))))).collect()
                }
            }
        }
        Worker::Cloud(worker) => {
            if let Err(e) = worker.admit() {
                return inputs.iter().map(|i| (i.0, Err(miss(name, e.clone())))).collect();
            }
            let expected = worker.expected_latency();
            let mut out = Vec::with_capacity(inputs.len());
            let mut send = Vec::with_capacity(inputs.len());
            let mut sent = Vec::with_capacity(inputs.len());
            for (j, deadline, id, values, trace) in inputs {
                match (deadline, expected) {
                    (Some(d), Some(e)) if e > d => out.push((
                        j,
                        Err(Miss::Skip(format!(
                            "worker `{name}` too slow for the event's latency budget (expected {} ms > {} ms)",
                            e.as_millis(),
                            d.as_millis()
                        ))),
                    )),
                    _ => {
                        send.push(CloudInput {
                            id,
                            features: features[j * width..(j + 1) * width].to_vec(),
                            values,
                            trace,
                        });
                        sent.push(j);
                    }
                }
            }
            if !send.is_empty() {
                let answers = worker.infer(send).await;
                for (j, a) in sent.into_iter().zip(answers) {
                    out.push((j, a.map_err(|e| miss(name, e))));
                }
            }
            out
        }
    }
}

fn miss(name: &str, e: CloudError) -> Miss {
    match e {
        CloudError::Unavailable { reason, retry_in, pause } => Miss::Unavailable { note: reason, retry_in, pause },
        CloudError::Blocked(msg) => Miss::Blocked(format!("worker `{name}`: request blocked before egress: {msg}")),
        CloudError::Failed(msg) => Miss::Next(format!("worker `{name}` failed: {msg}")),
    }
}

/// Sends the sampled events to their shadow workers (once, no fallback).
async fn shadow(
    workers: &Arc<WorkerSet>,
    jobs: &[Assignment],
    outcomes: &[Outcome],
    features: &Arc<Vec<f32>>,
    width: usize,
) -> (Vec<(usize, usize, Answer)>, u64) {
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (j, job) in jobs.iter().enumerate() {
        if let (Some(sw), Outcome::Served { worker, .. }) = (job.shadow, &outcomes[j]) {
            if sw != *worker {
                groups.entry(sw).or_default().push(j);
            }
        }
    }
    if groups.is_empty() {
        return (Vec::new(), 0);
    }
    let rounds = groups.into_iter().map(|(w, js)| {
        let inputs: Vec<_> =
            js.iter().map(|&j| ask_for(j, None, &jobs[j], cloud_values(workers, w, &jobs[j]))).collect();
        async move { (w, ask(workers, w, inputs, features, width).await) }
    });
    let mut shadows = Vec::new();
    let mut failed = 0;
    for (w, results) in futures::future::join_all(rounds).await {
        for (j, r) in results {
            match r {
                Ok(a) => shadows.push((j, w, a)),
                Err(_) => failed += 1,
            }
        }
    }
    shadows.sort_by_key(|s| s.0);
    (shadows, failed)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use switchyard_schemas::PiiScanner;

    use crate::cloud::{CloudWorkerConfig, Protocol};
    use crate::OnnxWorkerConfig;

    use super::*;

    fn local() -> (String, Worker, usize) {
        crate::init_runtime(None).expect("ONNX Runtime (make setup)");
        let registry = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/models");
        let entry = crate::registry::lookup(&registry, "fraud", None).unwrap();
        let features = entry.metadata.feature_order.clone();
        let cfg: OnnxWorkerConfig =
            serde_yaml::from_str(&format!("{{model: fraud, registry: '{}'}}", registry.display())).unwrap();
        let w = OnnxWorker::start("fraud", &cfg, Path::new("."), &features).unwrap();
        ("fraud".into(), Worker::Local(Arc::new(w)), features.len())
    }

    /// A cloud worker whose endpoint refuses connections.
    fn unreachable(extra: &str, width: usize) -> (String, Worker) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let yaml = format!(
            "{{url: 'http://127.0.0.1:{port}', model: fraud, timeout_ms: 500, \
             retry: {{max_attempts: 1}}{extra}}}"
        );
        let cfg: CloudWorkerConfig = serde_yaml::from_str(&yaml).unwrap();
        let scanner = Arc::new(NoPii);
        let w = CloudWorker::start("cloud", Protocol::KserveV2, &cfg, Path::new("."), &[], width, scanner).unwrap();
        ("cloud".into(), Worker::Cloud(Arc::new(w)))
    }

    /// These requests carry features only: nothing for a detector to find.
    struct NoPii;
    impl PiiScanner for NoPii {
        fn find(&self, _: &str) -> Vec<(std::ops::Range<usize>, &'static str)> {
            Vec::new()
        }
    }

    fn job(i: usize, chain: Vec<usize>, shadow: Option<usize>) -> Assignment {
        Assignment {
            id: format!("e{i}"),
            values: Vec::new(),
            chain,
            shadow,
            deadline: None,
            withheld: Vec::new(),
            trace: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_cloud_endpoint_falls_back_to_the_local_model() {
        let (ln, l, width) = local();
        let (cn, c) = unreachable("", width);
        let workers = Arc::new(WorkerSet { list: vec![(ln, l), (cn, c)] });
        let features = Arc::new(vec![0.5f32; 3 * width]);
        let jobs = (0..3).map(|i| job(i, vec![1, 0], None)).collect();
        let r = dispatch(workers, jobs, features, width).await;
        assert_eq!(r.outcomes.len(), 3);
        for o in &r.outcomes {
            match o {
                Outcome::Served { worker: 0, answer, fallback: Some(why) } => {
                    assert!(why.contains("worker `cloud` failed"), "{why}");
                    assert!(answer.score.is_some_and(|s| (0.0..=1.0).contains(&s)));
                    assert_eq!(answer.model.provider, "local/cpu");
                }
                other => panic!("expected a local fallback answer, got {other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_no_path_left_events_wait_then_go_to_the_dlq_with_the_reason() {
        let (ln, l, width) = local();
        // One failure opens the circuit for longer than events may wait.
        let (cn, c) = unreachable(", max_wait_ms: 300, circuit_breaker: {failure_threshold: 1, open_ms: 60000}", width);
        let workers = Arc::new(WorkerSet { list: vec![(ln, l), (cn, c)] });
        let features = Arc::new(vec![0.5f32; 2 * width]);
        // The first event fails at the endpoint (which opens the circuit);
        // the second finds it open.
        let first = dispatch(workers.clone(), vec![job(0, vec![1], None)], features.clone(), width).await;
        match &first.outcomes[0] {
            Outcome::Failed { class: ErrorClass::InferenceFailed, message } => {
                assert!(message.contains("worker `cloud` failed"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let started = Instant::now();
        let mut j = job(1, vec![1], None);
        j.withheld = vec!["other-cloud".into()];
        let second = dispatch(workers, vec![j], features, width).await;
        let waited = started.elapsed();
        match &second.outcomes[0] {
            Outcome::Failed { class: ErrorClass::NoPath, message } => {
                assert!(message.contains("circuit open"), "{message}");
                assert!(message.contains("waited"), "{message}");
                assert!(message.contains("other-cloud"), "{message}");
            }
            other => panic!("expected no_path, got {other:?}"),
        }
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(5), "{waited:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_shadow_never_holds_up_the_answer() {
        let (ln, l, width) = local();
        let (cn, c) = unreachable("", width);
        let workers = Arc::new(WorkerSet { list: vec![(ln, l), (cn, c)] });
        let features = Arc::new(vec![0.1f32; 2 * width]);
        let jobs = vec![job(0, vec![0], Some(1)), job(1, vec![0], None)];
        let r = dispatch(workers, jobs, features, width).await;
        assert!(r.outcomes.iter().all(|o| matches!(o, Outcome::Served { worker: 0, fallback: None, .. })));
        assert!(r.shadows.is_empty());
        assert_eq!(r.shadow_failed, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shadow_answers_come_back_for_sampled_events_only() {
        let (ln, l, width) = local();
        let (_, l2, _) = local();
        let workers = Arc::new(WorkerSet { list: vec![(ln, l), ("fraud-b".into(), l2)] });
        let features = Arc::new((0..3 * width).map(|i| i as f32 / 10.0).collect::<Vec<_>>());
        let jobs = vec![job(0, vec![0], Some(1)), job(1, vec![0], None), job(2, vec![0], Some(1))];
        let r = dispatch(workers, jobs, features, width).await;
        let shadowed: Vec<usize> = r.shadows.iter().map(|s| s.0).collect();
        assert_eq!(shadowed, vec![0, 2]);
        for (j, w, a) in &r.shadows {
            assert_eq!(*w, 1);
            let Outcome::Served { answer, .. } = &r.outcomes[*j] else { panic!() };
            assert_eq!(answer.score, a.score, "the same model answers the same features alike");
        }
    }
}
