//! Dynamic batching on dedicated threads.
//!
//! Requests (each a block of rows) queue on a bounded channel. A batch starts
//! with the oldest request and closes when it holds `max_batch_size` rows or
//! `max_queue_delay` has passed since that request was queued — Triton's
//! dynamic batcher. A batch larger than `max_batch_size` (one big request) is
//! run in slices of at most `max_batch_size` rows.
//!
//! Requests made inside [`urgent`] (the priority lane's) have a queue of
//! their own that every batch takes from first: they never wait behind the
//! requests already queued, only behind the batch running now.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_schemas::telemetry as m;
use tokio::sync::oneshot;

use crate::{Error, Result};

/// The model's answers for a block of rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    /// Positive-class probability per row.
    pub score: Vec<f32>,
    /// Predicted class per row.
    pub label: Vec<i64>,
}

/// A model the batcher can run: a row-major block of `rows × width` floats in,
/// one score and label per row out.
pub trait BatchModel: Send + 'static {
    /// Features per row.
    fn width(&self) -> usize;
    /// Runs the model on `rows` rows.
    fn run(&mut self, input: &[f32], rows: usize) -> Result<Scores>;
}

/// Counters of a batcher, shared with its threads.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Model executions.
    pub batches: AtomicU64,
    /// Rows run.
    pub rows: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
}

impl BatchStats {
    /// Mean rows per model execution so far.
    pub fn mean_batch_rows(&self) -> f64 {
        let b = self.batches.load(Ordering::Relaxed);
        if b == 0 {
            0.0
        } else {
            self.rows.load(Ordering::Relaxed) as f64 / b as f64
        }
    }
}

tokio::task_local! {
    /// Set by [`urgent`] for the requests of the future it runs.
    static URGENT: bool;
}

/// Runs `work` with its model requests ahead of every queued one (the
/// priority lane's chunks).
pub async fn urgent<F: std::future::Future>(work: F) -> F::Output {
    URGENT.scope(true, work).await
}

/// True inside [`urgent`].
fn is_urgent() -> bool {
    URGENT.try_with(|u| *u).unwrap_or(false)
}

/// The nice value model threads take when they start (0, the default,
/// leaves them as they are): see [`set_model_thread_nice`].
static MODEL_NICE: AtomicI32 = AtomicI32::new(0);

/// The threads of batchers started from now on run at `nice`. With a
/// priority lane, the model threads it shares run at its priority: an urgent
/// request does not wait for the scheduler to pick a model thread that other
/// threads of the same priority are ahead of.
pub fn set_model_thread_nice(nice: i32) {
    MODEL_NICE.store(nice, Ordering::Relaxed);
}

/// Gives the calling thread `nice` (Linux: a thread id with PRIO_PROCESS
/// changes that thread alone). Raising it needs `CAP_SYS_NICE`; without,
/// the error says so and the thread keeps its priority.
#[allow(unsafe_code)]
pub fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid and setpriority only read their arguments.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One request waiting for a batch: its rows and where the scores go.
struct BatchRequest {
    features: Vec<f32>,
    rows: usize,
    queued: Instant,
    reply: oneshot::Sender<Result<Scores>>,
}

/// A queue in front of one or more model instances, each on its own thread.
pub struct Batcher {
    name: String,
    tx: Option<flume::Sender<BatchRequest>>,
    /// The queue of [`urgent`] requests, served first.
    urgent_tx: Option<flume::Sender<BatchRequest>>,
    width: usize,
    stats: Arc<BatchStats>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Batcher {
    /// Starts one thread per model in `models` (all must have the same width).
    pub fn start<M: BatchModel>(
        name: &str,
        models: Vec<M>,
        max_batch_size: usize,
        max_queue_delay: Duration,
        max_queued_requests: usize,
    ) -> Result<Self> {
        let stats = Arc::new(BatchStats::default());
        Self::start_counting(name, models, max_batch_size, max_queue_delay, max_queued_requests, stats)
    }

    /// [`Batcher::start`] adding to `stats`, which other batchers may share
    /// (the versions of one worker).
    pub fn start_counting<M: BatchModel>(
        name: &str,
        models: Vec<M>,
        max_batch_size: usize,
        max_queue_delay: Duration,
        max_queued_requests: usize,
        stats: Arc<BatchStats>,
    ) -> Result<Self> {
        let width =
            models.first().map(BatchModel::width).ok_or_else(|| Error::Internal("batcher needs a model".into()))?;
        let (tx, rx) = flume::bounded::<BatchRequest>(max_queued_requests.max(1));
        let (urgent_tx, urgent_rx) = flume::bounded::<BatchRequest>(max_queued_requests.max(1));
        let nice = MODEL_NICE.load(Ordering::Relaxed);
        let threads = models
            .into_iter()
            .enumerate()
            .map(|(i, model)| {
                let queues = Queues { urgent: urgent_rx.clone(), normal: rx.clone() };
                let stats = stats.clone();
                let meters = Meters::new(name);
                std::thread::Builder::new()
                    .name(format!("sy-{name}-{i}"))
                    .spawn(move || {
                        if nice != 0 {
                            if let Err(e) = set_thread_nice(nice) {
                                tracing::info!(error = %e, nice, "model thread keeps the default scheduling priority");
                            }
                        }
                        batch_loop(queues, model, max_batch_size.max(1), max_queue_delay, &stats, &meters)
                    })
                    .map_err(|e| Error::Internal(format!("cannot start worker thread: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { name: name.to_string(), tx: Some(tx), urgent_tx: Some(urgent_tx), width, stats, threads })
    }

    /// Features per row the model expects.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Counters.
    pub fn stats(&self) -> Arc<BatchStats> {
        self.stats.clone()
    }

    /// Queues `rows` rows (row-major, `rows × width` floats) and waits for
    /// their answers. Waits for queue space when the model is behind. Inside
    /// [`urgent`], the rows go ahead of every queued request.
    pub async fn infer(&self, features: Vec<f32>, rows: usize) -> Result<Scores> {
        if features.len() != rows * self.width {
            return Err(Error::Internal(format!("{} floats for {rows} rows of width {}", features.len(), self.width)));
        }
        if rows == 0 {
            return Ok(Scores::default());
        }
        let (reply, answer) = oneshot::channel();
        let tx = if is_urgent() { &self.urgent_tx } else { &self.tx };
        let tx = tx.as_ref().ok_or_else(|| Error::Stopped(self.name.clone()))?;
        tx.send_async(BatchRequest { features, rows, queued: Instant::now(), reply })
            .await
            .map_err(|_| Error::Stopped(self.name.clone()))?;
        answer.await.map_err(|_| Error::Stopped(self.name.clone()))?
    }

    /// Stops accepting requests, lets queued ones finish and joins the threads.
    pub fn shutdown(&mut self) {
        self.tx = None;
        self.urgent_tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A batcher's metrics, their labels resolved once.
struct Meters {
    rows: metrics::Histogram,
    fill: metrics::Histogram,
    duration: metrics::Histogram,
    queued: metrics::Gauge,
}

impl Meters {
    fn new(worker: &str) -> Self {
        let w = || [("worker", metrics::SharedString::from(worker.to_string()))];
        Self {
            rows: m::BATCH_ROWS.histogram(w()),
            fill: m::BATCH_FILL.histogram(w()),
            duration: m::BATCH_DURATION.histogram(w()),
            queued: m::BATCHER_QUEUE.gauge(w()),
        }
    }
}

/// A model thread's two queues.
struct Queues {
    urgent: flume::Receiver<BatchRequest>,
    normal: flume::Receiver<BatchRequest>,
}

impl Queues {
    /// The next request, an urgent one first; waits for one. `None` once
    /// both queues are closed and empty.
    fn next(&self) -> Option<BatchRequest> {
        if let Ok(j) = self.urgent.try_recv() {
            return Some(j);
        }
        match flume::Selector::new().recv(&self.urgent, |r| r).recv(&self.normal, |r| r).wait() {
            Ok(j) => Some(j),
            // Shutting down (both senders go together): what is left.
            Err(_) => self.urgent.try_recv().ok().or_else(|| self.normal.recv().ok()),
        }
    }

    /// A request queued by `deadline`, urgent ones first.
    fn next_by(&self, deadline: Instant) -> Option<BatchRequest> {
        self.urgent.try_recv().ok().or_else(|| self.normal.recv_deadline(deadline).ok())
    }

    fn len(&self) -> usize {
        self.urgent.len() + self.normal.len()
    }
}

fn batch_loop<M: BatchModel>(
    queues: Queues,
    mut model: M,
    max_batch: usize,
    max_delay: Duration,
    stats: &BatchStats,
    meters: &Meters,
) {
    let width = model.width();
    let mut input: Vec<f32> = Vec::new();
    while let Some(first) = queues.next() {
        meters.queued.set(queues.len() as f64);
        let deadline = first.queued + max_delay;
        let mut rows = first.rows;
        let mut jobs = vec![first];
        while rows < max_batch {
            match queues.next_by(deadline) {
                Some(j) => {
                    rows += j.rows;
                    jobs.push(j);
                }
                None => break,
            }
        }
        let result = if jobs.len() == 1 {
            run_sliced(&mut model, &jobs[0].features, rows, width, max_batch, stats, meters)
        } else {
            input.clear();
            for j in &jobs {
                input.extend_from_slice(&j.features);
            }
            run_sliced(&mut model, &input, rows, width, max_batch, stats, meters)
        };
        stats.requests.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        match result {
            Ok(scores) => {
                let mut at = 0;
                for j in jobs {
                    let part = Scores {
                        score: scores.score[at..at + j.rows].to_vec(),
                        label: scores.label[at..at + j.rows].to_vec(),
                    };
                    at += j.rows;
                    let _ = j.reply.send(Ok(part));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for j in jobs {
                    let _ = j.reply.send(Err(Error::Ort(msg.clone())));
                }
            }
        }
    }
}

fn run_sliced<M: BatchModel>(
    model: &mut M,
    input: &[f32],
    rows: usize,
    width: usize,
    max_batch: usize,
    stats: &BatchStats,
    meters: &Meters,
) -> Result<Scores> {
    let mut out = Scores { score: Vec::with_capacity(rows), label: Vec::with_capacity(rows) };
    let mut start = 0;
    while start < rows {
        let n = (rows - start).min(max_batch);
        let began = Instant::now();
        let s = model.run(&input[start * width..(start + n) * width], n)?;
        meters.duration.record(began.elapsed().as_secs_f64());
        meters.rows.record(n as f64);
        meters.fill.record(n as f64 / max_batch as f64);
        if s.score.len() != n || s.label.len() != n {
            return Err(Error::Internal(format!("model returned {} scores for {n} rows", s.score.len())));
        }
        out.score.extend_from_slice(&s.score);
        out.label.extend_from_slice(&s.label);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.rows.fetch_add(n as u64, Ordering::Relaxed);
        start += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Scores each row with the sum of its features; records batch sizes.
    struct SumModel {
        width: usize,
        batches: Arc<Mutex<Vec<usize>>>,
        delay: Duration,
    }

    impl BatchModel for SumModel {
        fn width(&self) -> usize {
            self.width
        }
        fn run(&mut self, input: &[f32], rows: usize) -> Result<Scores> {
            self.batches.lock().unwrap().push(rows);
            std::thread::sleep(self.delay);
            let score: Vec<f32> = input.chunks(self.width).map(|r| r.iter().sum()).collect();
            let label = score.iter().map(|s| i64::from(*s > 0.0)).collect();
            Ok(Scores { score, label })
        }
    }

    /// The nice value of the thread that runs it.
    struct NiceModel(Arc<Mutex<Option<i32>>>);

    impl BatchModel for NiceModel {
        fn width(&self) -> usize {
            1
        }
        #[allow(unsafe_code)]
        fn run(&mut self, _: &[f32], rows: usize) -> Result<Scores> {
            // SAFETY: gettid and getpriority only read their arguments.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            *self.0.lock().unwrap() = Some(nice);
            Ok(Scores { score: vec![0.0; rows], label: vec![0; rows] })
        }
    }

    #[tokio::test]
    async fn model_threads_start_at_the_nice_value_set_for_them() {
        let seen = Arc::new(Mutex::new(None));
        // Lowering the priority needs no privilege, so the test runs anywhere.
        set_model_thread_nice(3);
        let b = Batcher::start("nice", vec![NiceModel(seen.clone())], 8, Duration::ZERO, 8);
        set_model_thread_nice(0);
        b.unwrap().infer(vec![1.0], 1).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), Some(3));
        let seen = Arc::new(Mutex::new(None));
        Batcher::start("plain", vec![NiceModel(seen.clone())], 8, Duration::ZERO, 8)
            .unwrap()
            .infer(vec![1.0], 1)
            .await
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), Some(0), "later threads keep the default");
    }

    fn batcher(max_batch: usize, delay_ms: u64, run_delay_ms: u64) -> (Batcher, Arc<Mutex<Vec<usize>>>) {
        let batches = Arc::new(Mutex::new(vec![]));
        let m = SumModel { width: 2, batches: batches.clone(), delay: Duration::from_millis(run_delay_ms) };
        (Batcher::start("t", vec![m], max_batch, Duration::from_millis(delay_ms), 1024).unwrap(), batches)
    }

    /// Records the first feature of every batch it runs, slowly.
    struct OrderModel {
        seen: Arc<Mutex<Vec<f32>>>,
    }

    impl BatchModel for OrderModel {
        fn width(&self) -> usize {
            1
        }
        fn run(&mut self, input: &[f32], rows: usize) -> Result<Scores> {
            self.seen.lock().unwrap().push(input[0]);
            std::thread::sleep(Duration::from_millis(150));
            Ok(Scores { score: input.to_vec(), label: vec![0; rows] })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_urgent_request_runs_before_the_requests_queued_ahead_of_it() {
        let seen = Arc::new(Mutex::new(vec![]));
        // One row per batch, so the order of batches is the order of service.
        let b = Arc::new(Batcher::start("t", vec![OrderModel { seen: seen.clone() }], 1, Duration::ZERO, 64).unwrap());
        let ask = |b: &Arc<Batcher>, v: f32| {
            let b = b.clone();
            tokio::spawn(async move { b.infer(vec![v], 1).await.unwrap().score })
        };
        let mut normal = vec![ask(&b, 0.0)];
        tokio::time::sleep(Duration::from_millis(40)).await; // 0 is running
        normal.extend((1..=4).map(|i| ask(&b, i as f32)));
        tokio::time::sleep(Duration::from_millis(40)).await; // 1..4 are queued
        assert_eq!(urgent(b.infer(vec![99.0], 1)).await.unwrap().score, vec![99.0]);
        for (i, h) in normal.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), vec![i as f32]);
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[..2], [0.0, 99.0], "the urgent request runs right after the one running: {seen:?}");
        // The ones queued before it all ran after it.
        let mut rest = seen[2..].to_vec();
        rest.sort_by(f32::total_cmp);
        assert_eq!(rest, [1.0, 2.0, 3.0, 4.0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_are_coalesced_and_answers_routed_back() {
        // A long queue delay: 8 single-row requests must meet in one batch.
        let (b, batches) = batcher(8, 2_000, 0);
        let b = Arc::new(b);
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.infer(vec![i as f32, 1.0], 1).await.unwrap() })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap().score, vec![i as f32 + 1.0]);
        }
        assert_eq!(*batches.lock().unwrap(), vec![8], "one full batch, closed by size not by delay");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_request_waits_at_most_the_queue_delay() {
        let (b, batches) = batcher(1024, 30, 0);
        let t = Instant::now();
        assert_eq!(b.infer(vec![1.0, 2.0], 1).await.unwrap().score, vec![3.0]);
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(waited < Duration::from_millis(1_000), "{waited:?}");
        assert_eq!(*batches.lock().unwrap(), vec![1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_no_queue_delay_a_lone_request_runs_at_once_and_those_queued_meanwhile_share_a_batch() {
        // Each model run takes 100 ms.
        let (b, batches) = batcher(1024, 0, 100);
        let b = Arc::new(b);
        let t = Instant::now();
        let first = {
            let b = b.clone();
            tokio::spawn(async move { b.infer(vec![1.0, 0.0], 1).await.unwrap() })
        };
        // While the first runs, five more arrive: they wait for it, not for
        // a delay, and then run together.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let rest: Vec<_> = (0..5)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.infer(vec![i as f32, 0.0], 1).await.unwrap() })
            })
            .collect();
        assert_eq!(first.await.unwrap().score, vec![1.0]);
        let alone = t.elapsed();
        assert!(alone < Duration::from_millis(190), "the lone request waited {alone:?} for a 100 ms run");
        for (i, h) in rest.into_iter().enumerate() {
            assert_eq!(h.await.unwrap().score, vec![i as f32]);
        }
        assert_eq!(*batches.lock().unwrap(), vec![1, 5]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn big_requests_are_sliced_to_max_batch_size() {
        let (b, batches) = batcher(4, 0, 0);
        let rows = 10;
        let input: Vec<f32> = (0..rows * 2).map(|i| i as f32).collect();
        let s = b.infer(input, rows).await.unwrap();
        assert_eq!(s.score.len(), rows);
        assert_eq!(s.score[9], 18.0 + 19.0);
        assert_eq!(*batches.lock().unwrap(), vec![4, 4, 2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn width_mismatch_is_an_error_not_a_panic() {
        let (b, _) = batcher(4, 0, 0);
        assert!(matches!(b.infer(vec![1.0; 3], 1).await, Err(Error::Internal(_))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Whatever the request sizes and batch limits, every row gets its own
        /// answer and no model execution exceeds max_batch_size.
        #[test]
        fn every_row_answered_once(sizes in proptest::collection::vec(1usize..40, 1..12), max_batch in 1usize..64) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let (b, batches) = batcher(max_batch, 1, 0);
            let b = Arc::new(b);
            rt.block_on(async {
                let mut hs = vec![];
                for (k, n) in sizes.iter().copied().enumerate() {
                    let b = b.clone();
                    hs.push(tokio::spawn(async move {
                        let input: Vec<f32> = (0..n).flat_map(|r| [k as f32 * 1000.0 + r as f32, 0.0]).collect();
                        (k, n, b.infer(input, n).await.unwrap())
                    }));
                }
                for h in hs {
                    let (k, n, s) = h.await.unwrap();
                    let want: Vec<f32> = (0..n).map(|r| k as f32 * 1000.0 + r as f32).collect();
                    assert_eq!(s.score, want);
                }
            });
            let bs = batches.lock().unwrap();
            proptest::prop_assert!(bs.iter().all(|&n| n <= max_batch));
            proptest::prop_assert_eq!(bs.iter().sum::<usize>(), sizes.iter().sum::<usize>());
        }
    }
}
