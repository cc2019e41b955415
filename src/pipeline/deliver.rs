//! Delivery: each chunk's answers become result rows and DLQ records,
//! written to Kafka and Parquet. Kafka's acknowledgements are awaited off
//! the hot path, but all of them before the next roll; a roll makes the
//! rows durable and only then are the offsets it covers committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use switchyard_schemas::now_us;

use anyhow::Context as _;
use switchyard_ingest::{KafkaCommitter, RevokeDone};
use switchyard_schemas::telemetry as m;
use switchyard_schemas::{headers, DlqRecord, Lineage, Prediction, Stage};
use switchyard_sink::{keep_highest, KafkaSink, ParquetSink, PreparedRoll};
use switchyard_workers::dispatch::{Dispatched, Outcome, WorkerSet};
use switchyard_workers::Answer;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::prepare::Pending;
use super::summary::{Counters, Summary};
use crate::telemetry::trace::{self, ChunkSpans};

/// Chunks whose Kafka acknowledgements may be outstanding at once.
const MAX_INFLIGHT_CHUNKS: usize = 64;

/// Receipt → durable and Kafka timestamp → durable, in µs.
type Pair = (hdrhistogram::Histogram<u64>, hdrhistogram::Histogram<u64>);

/// Latency histograms of a run: all results, and per latency tier.
pub(super) struct LatencyBook {
    all: Pair,
    by_tier: std::collections::BTreeMap<String, Pair>,
}

impl LatencyBook {
    fn pair() -> Pair {
        (super::summary::histogram(), super::summary::histogram())
    }

    pub(super) fn new() -> Self {
        Self { all: Self::pair(), by_tier: Default::default() }
    }
}

type Latencies = Arc<std::sync::Mutex<LatencyBook>>;

/// A chunk's results, grouped by latency tier: (tier, [(receipt µs, Kafka timestamp ms)]).
type TierTimes = Vec<(String, Vec<(i64, Option<i64>)>)>;

/// The receipt and Kafka timestamps of `preds`, grouped by latency tier (a
/// chunk has a handful of tiers: a list beats a map).
fn tier_times(preds: &[Prediction]) -> TierTimes {
    let mut out: TierTimes = Vec::new();
    for p in preds {
        let s = &p.lineage.source;
        let tier = &p.lineage.route.latency_tier;
        let row = (s.ingest_time_us, s.kafka_timestamp_ms);
        match out.iter_mut().find(|(t, _)| t == tier) {
            Some((_, rows)) => rows.push(row),
            None => out.push((tier.clone(), vec![row])),
        }
    }
    out
}

/// Records, for rows made durable now, receipt → now and Kafka timestamp →
/// now: in the run's histograms, per tier, and as the metric.
fn record_latency(latency: &Latencies, rows: &TierTimes) {
    let now = now_us();
    let Ok(mut book) = latency.lock() else { return };
    let LatencyBook { all, by_tier: tiers } = &mut *book;
    for (tier, times) in rows {
        let by_tier = tiers.entry(tier.clone()).or_insert_with(LatencyBook::pair);
        let meters = m::recording().then(|| {
            let at = |from: &'static str| {
                m::RESULT_LATENCY.histogram([("tier", tier.clone().into()), ("from", from.into())])
            };
            (at("receipt"), at("timestamp"))
        });
        for &(received, kafka_ms) in times {
            let since_receipt = (now - received).max(1) as u64;
            let _ = all.0.record(since_receipt);
            let _ = by_tier.0.record(since_receipt);
            if let Some((r, _)) = &meters {
                r.record(since_receipt as f64 / 1e6);
            }
            if let Some(ms) = kafka_ms {
                let age = (now - ms * 1000).max(1) as u64;
                let _ = all.1.record(age);
                let _ = by_tier.1.record(age);
                if let Some((_, t)) = &meters {
                    t.record(age as f64 / 1e6);
                }
            }
        }
    }
}

/// What the sink side receives, in source order.
pub(super) enum ToDeliver {
    /// A prepared chunk.
    Chunk(Box<Pending>),
    /// Partitions newly assigned: with transactions, settle the prepared
    /// rolls their previous owner left.
    Assigned(Vec<(String, i32)>),
    /// Partitions are being revoked: everything before this must be durable
    /// and committed (or, when `lost`, abandoned) before `done` is answered.
    Revoked {
        /// The partitions.
        partitions: Vec<(String, i32)>,
        /// The group already gave them to another member.
        lost: bool,
        /// Lets the rebalance go on.
        done: RevokeDone,
    },
}

/// The sink side of a run: results to Kafka and Parquet, rolls, commits.
pub(super) struct Deliver {
    pub(super) kafka: Option<KafkaSink>,
    pub(super) inflight: std::collections::VecDeque<JoinHandle<anyhow::Result<()>>>,
    pub(super) latency: Latencies,
    pub(super) parquet: ParquetSink,
    pub(super) committer: Option<KafkaCommitter>,
    pub(super) workers: Arc<WorkerSet>,
    pub(super) width: usize,
    pub(super) summary: Summary,
    pub(super) first: Option<i64>,
    /// When the last chunk's results were written (idle time after it is not
    /// part of the measured run).
    pub(super) last: Option<i64>,
    pub(super) progress_every: Option<Duration>,
    pub(super) last_progress: Instant,
    pub(super) counters: Arc<Counters>,
    /// Offsets made durable whose commit failed (a rebalance in progress):
    /// sent again with the next commit, dropped when their partition is
    /// revoked.
    pub(super) uncommitted: HashMap<(String, i32), i64>,
    /// The partitions this process owns, and how many the subscribed
    /// topics have: each cloud worker uses that share of its rate limit.
    pub(super) owned: std::collections::BTreeSet<(String, i32)>,
    pub(super) partitions_total: usize,
    /// The roll being made durable in the background (its results'
    /// acknowledgements awaited, its files closed and synced).
    pub(super) rolling: Option<JoinHandle<anyhow::Result<PreparedRoll>>>,
    /// The offset commit in the background: the offsets it sends, and
    /// whether the group coordinator took them.
    pub(super) committing: Option<JoinHandle<CommitOutcome>>,
}

/// The offsets an offset commit sent, and its outcome.
pub(super) type CommitOutcome = (HashMap<(String, i32), i64>, switchyard_ingest::Result<()>);

/// A result row from a worker's answer; the lineage is complete.
fn prediction(key: String, answer: Answer, features: Vec<f32>, answered_us: i64, lineage: Lineage) -> Prediction {
    Prediction {
        key,
        score: answer.score,
        label: answer.label,
        outputs: answer.outputs,
        features,
        latency_us: answered_us - lineage.source.ingest_time_us,
        lineage,
    }
}

/// Ends the spans of the chunk's DLQ records with their error, and points
/// each record's `traceparent` header at its span.
fn trace_dlq(spans: &mut ChunkSpans, chunk: &[switchyard_schemas::RawRecord], dlq: &mut [DlqRecord]) {
    if dlq.is_empty() {
        return;
    }
    let at = trace::positions(chunk);
    for d in dlq {
        let Some(&i) = at.get(&(d.source.topic.as_str(), d.source.partition, d.source.offset)) else { continue };
        if let Some(cx) = spans.record(i) {
            let tp = trace::traceparent(&cx);
            match d.headers.iter_mut().find(|(k, _)| k == headers::TRACEPARENT) {
                Some(h) => h.1 = tp,
                None => d.headers.push((headers::TRACEPARENT.to_string(), tp)),
            }
        }
        spans.failed(i, d.stage.as_str(), d.error_class.as_str(), &d.message);
    }
}

/// Records the time since `since` as the duration of `stage`.
fn stage_time(stage: &'static str, since: Instant) {
    m::STAGE_DURATION.histogram([("stage", stage.into())]).record(since.elapsed().as_secs_f64());
}

/// A chunk's results, shadow answers and DLQ records as metrics: one
/// update per distinct label set, not per event.
fn count_chunk(preds: &[Prediction], shadows: &[Prediction], dlq: &[DlqRecord], shadow_failed: u64) {
    // A chunk has a handful of distinct label sets: a list beats hashing
    // every event's labels.
    type Key<'a> = (&'a str, &'a str, &'a str, &'a str, &'static str, bool);
    let mut events: Vec<(Key<'_>, u64)> = Vec::new();
    for p in preds {
        let l = &p.lineage;
        let (r, m) = (&l.route, &l.model);
        let key = (
            r.route.as_str(),
            r.rule_id.as_str(),
            m.name.as_str(),
            m.version.as_str(),
            r.sensitivity.as_str(),
            l.fallback,
        );
        match events.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => events.push((key, 1)),
        }
    }
    for ((route, rule, name, version, sensitivity, fallback), n) in events {
        m::EVENTS
            .counter([
                ("route", route.to_string().into()),
                ("rule", rule.to_string().into()),
                ("model", format!("{name}/{version}").into()),
                ("sensitivity", sensitivity.into()),
                ("fallback", if fallback { "true" } else { "false" }.into()),
            ])
            .increment(n);
    }
    let mut shadow: HashMap<(&str, &str, &str), u64> = HashMap::new();
    for p in shadows {
        let l = &p.lineage;
        *shadow.entry((&l.route.route, &l.model.name, &l.model.version)).or_default() += 1;
    }
    for ((worker, name, version), n) in shadow {
        let model = format!("{name}/{version}");
        m::SHADOW_ANSWERS.counter([("worker", worker.to_string().into()), ("model", model.into())]).increment(n);
    }
    if shadow_failed > 0 {
        m::SHADOW_FAILURES.counter([]).increment(shadow_failed);
    }
    let mut dead: HashMap<(&'static str, &'static str), u64> = HashMap::new();
    for d in dlq {
        *dead.entry((d.stage.as_str(), d.error_class.as_str())).or_default() += 1;
    }
    for ((stage, class), n) in dead {
        m::DLQ_RECORDS.counter([("stage", stage.into()), ("class", class.into())]).increment(n);
    }
}

impl Deliver {
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<ToDeliver>,
        tick_every: Duration,
    ) -> anyhow::Result<Summary> {
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                p = rx.recv() => match p {
                    Some(ToDeliver::Chunk(p)) => self.handle(*p).await?,
                    Some(ToDeliver::Assigned(parts)) => {
                        self.settle_prepared(&parts).await?;
                        self.owned.extend(parts);
                        self.reshare(true);
                    }
                    Some(ToDeliver::Revoked { partitions, lost, done }) => {
                        self.hand_over(lost).await?;
                        for p in &partitions {
                            // Their next owner commits from now on.
                            self.uncommitted.remove(p);
                            self.owned.remove(p);
                        }
                        // Before the partitions go: the next owner's share
                        // grows only once this one's has shrunk.
                        self.reshare(false);
                        done.done();
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if self.rolling.as_ref().is_some_and(JoinHandle::is_finished) {
                        self.finish_roll().await?;
                    }
                    if self.parquet.roll_due() {
                        self.start_roll().await?;
                    }
                    self.progress();
                }
            }
        }
        self.roll_and_commit().await?;
        self.commit_leftovers().await;
        self.summary.durable = self.parquet.durable_offsets().clone();
        let book = std::mem::replace(
            &mut *self.latency.lock().map_err(|_| anyhow::anyhow!("latency lock poisoned"))?,
            LatencyBook::new(),
        );
        (self.summary.latency_us, self.summary.event_latency_us) = book.all;
        self.summary.latency_by_tier = book.by_tier;
        if let (Some(first), Some(last)) = (self.first, self.last) {
            self.summary.elapsed = Duration::from_micros((last - first).max(1) as u64);
            self.summary.span_us = (first, last);
        }
        Ok(self.summary)
    }

    fn progress(&mut self) {
        let Some(every) = self.progress_every else { return };
        if self.last_progress.elapsed() >= every {
            self.last_progress = Instant::now();
            let s = &self.summary;
            let secs = self.first.map_or(0.0, |f| (now_us() - f) as f64 / 1e6);
            eprintln!(
                "[{secs:7.1}s] records {:>9}  results {:>9}  dlq {:>6}  {:>9.0} rec/s",
                s.records,
                s.predictions,
                s.dlq,
                s.records as f64 / secs.max(1e-9)
            );
        }
    }

    async fn handle(&mut self, p: Pending) -> anyhow::Result<()> {
        let Pending { chunk, events, features, answers, mut dlq, offsets, replayed, prepared, mut spans } = p;
        stage_time("queue_wait", prepared);
        if self.first.is_none() {
            self.first = chunk.iter().map(|r| r.received_us).min();
        }
        self.summary.records += chunk.len() as u64;
        self.summary.replayed += replayed;
        let dispatched = match answers {
            None => Dispatched { outcomes: Vec::new(), shadows: Vec::new(), shadow_failed: 0 },
            Some(h) => {
                let (d, since, until) = h.await.context("dispatch task failed")?;
                if let Some(s) = &spans {
                    s.stage("inference", since, until);
                }
                d
            }
        };
        anyhow::ensure!(dispatched.outcomes.len() == events.len(), "internal error: an event without an outcome");
        let answered_us = now_us();
        let row_features = |j: usize| features[j * self.width..(j + 1) * self.width].to_vec();
        let mut preds = Vec::with_capacity(events.len());
        // Lineage and key of served events, kept when shadow answers need them.
        let mut served: Vec<Option<(Lineage, String)>> =
            if dispatched.shadows.is_empty() { Vec::new() } else { vec![None; events.len()] };
        for (j, ((i, event), outcome)) in events.into_iter().zip(dispatched.outcomes).enumerate() {
            match outcome {
                Outcome::Served { worker, mut answer, fallback } => {
                    let mut lineage = event.lineage;
                    let name = self.workers.name(worker);
                    if let Some(why) = fallback {
                        count(&mut self.summary.fallbacks, name);
                        lineage.fell_back_to(name, &why);
                    }
                    let note = answer.rollout_note();
                    lineage.served_by(name, std::mem::take(&mut answer.model), note.as_deref());
                    if let Some(s) = &mut spans {
                        if let Some(cx) = s.record(i) {
                            // The trace goes on from this record's span.
                            lineage.traceparent = trace::traceparent(&cx);
                        }
                        s.served(i, &lineage);
                    }
                    if !dispatched.shadows.is_empty() {
                        served[j] = Some((lineage.clone(), event.key.clone()));
                    }
                    preds.push(prediction(event.key, answer, row_features(j), answered_us, lineage));
                }
                Outcome::Failed { class, message } => {
                    dlq.push(DlqRecord::from_raw(
                        &chunk[i],
                        event.lineage.lineage_id,
                        Stage::Infer,
                        class,
                        message,
                        event.lineage.pipeline,
                    ));
                }
            }
        }
        if let Some(s) = &mut spans {
            trace_dlq(s, &chunk, &mut dlq);
        }
        // Shadow answers: Parquet rows marked `shadow`, for comparison; the
        // results topic carries only the answers that count.
        let mut shadow_rows = Vec::with_capacity(dispatched.shadows.len());
        self.summary.shadow_failed += dispatched.shadow_failed;
        for (j, w, mut answer) in dispatched.shadows {
            let Some((lineage, key)) = served.get(j).and_then(Option::as_ref) else { continue };
            let name = self.workers.name(w);
            count(&mut self.summary.shadows, name);
            let note = answer.rollout_note();
            let lineage = lineage.shadow_copy(name, std::mem::take(&mut answer.model), note.as_deref());
            shadow_rows.push(prediction(key.clone(), answer, row_features(j), answered_us, lineage));
        }
        let ingest_us = tier_times(&preds);
        for p in &preds {
            count(&mut self.summary.by_route, &p.lineage.route.route);
            count(&mut self.summary.by_rule, &p.lineage.route.rule_id);
        }
        if m::recording() {
            count_chunk(&preds, &shadow_rows, &dlq, dispatched.shadow_failed);
        }
        let writing = Instant::now();
        match &self.kafka {
            Some(k) => {
                // Acknowledgements are awaited off the hot path; every one must
                // have arrived before the next offset commit (see `roll_and_commit`).
                let results = k.send_predictions(&preds).await.context("writing results to Kafka")?;
                let dead = k.send_dlq(&dlq).await.context("writing to the DLQ topic")?;
                let latency = self.latency.clone();
                self.inflight.push_back(tokio::spawn(async move {
                    results.wait().await.context("results topic did not acknowledge")?;
                    dead.wait().await.context("DLQ topic did not acknowledge")?;
                    record_latency(&latency, &ingest_us);
                    Ok(())
                }));
                while self.inflight.len() > MAX_INFLIGHT_CHUNKS {
                    self.await_oldest().await?;
                }
            }
            None => record_latency(&self.latency, &ingest_us),
        }
        for d in &dlq {
            count(&mut self.summary.dlq_by_class, d.error_class.as_str());
        }
        self.summary.predictions += preds.len() as u64;
        self.summary.dlq += dlq.len() as u64;
        {
            use std::sync::atomic::Ordering::Relaxed;
            self.counters.records.fetch_add(chunk.len() as u64, Relaxed);
            self.counters.results.fetch_add(preds.len() as u64, Relaxed);
            self.counters.dlq.fetch_add(dlq.len() as u64, Relaxed);
        }
        tokio::task::block_in_place(|| -> anyhow::Result<()> {
            self.parquet.write_predictions(&preds)?;
            if !shadow_rows.is_empty() {
                self.parquet.write_predictions(&shadow_rows)?;
            }
            self.parquet.write_dlq(&dlq)?;
            Ok(())
        })?;
        stage_time("sink_write", writing);
        if let Some(s) = spans {
            s.stage("sink_write", SystemTime::now() - writing.elapsed(), SystemTime::now());
            s.finish();
        }
        self.parquet.note_offsets(&offsets);
        if self.parquet.roll_due() {
            self.start_roll().await?;
        }
        self.last = Some(now_us());
        self.progress();
        Ok(())
    }

    /// `exactly_once`: the roll is prepared (files synced, manifest written
    /// as prepared), then the Kafka transaction holding its results and its
    /// offsets commits, then the roll commits. A transaction that aborts
    /// takes the roll with it and stops the run (the records after the last
    /// commit are read again at the restart); one whose outcome is unknown
    /// leaves the roll prepared for the partitions' next owner to settle.
    async fn roll_in_transaction(&mut self, committer: &KafkaCommitter) -> anyhow::Result<()> {
        let rolling = Instant::now();
        let Some(prepared) =
            tokio::task::block_in_place(|| self.parquet.prepare_roll()).context("rolling Parquet files")?
        else {
            return Ok(());
        };
        stage_time("roll", rolling);
        let next: HashMap<(String, i32), i64> = prepared.offsets().iter().map(|(k, v)| (k.clone(), v + 1)).collect();
        let committing = Instant::now();
        let group = committer.group_metadata().context("the consumer has no group metadata")?;
        let kafka = self.kafka.as_ref().context("no producer")?;
        let outcome = tokio::task::block_in_place(|| kafka.commit_transaction(&next, &group));
        stage_time("commit", committing);
        match outcome {
            Ok(()) => {
                tokio::task::block_in_place(|| self.parquet.commit_prepared(prepared))
                    .context("committing the roll")?;
                self.summary.rolls += 1;
                for ((topic, partition), offset) in &next {
                    m::COMMITTED_OFFSET
                        .gauge([("topic", topic.clone().into()), ("partition", partition.to_string().into())])
                        .set(*offset as f64);
                }
                Ok(())
            }
            Err(e @ switchyard_sink::Error::TxnAborted(_)) => {
                tokio::task::block_in_place(|| self.parquet.discard_prepared(prepared))
                    .context("discarding the roll of an aborted transaction")?;
                Err(anyhow::Error::new(e).context("the records since the last commit are read again"))
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!(
                "stopping with roll {} ({} rows) prepared: the next owner of its partitions commits or drops it \
                 by the group's committed offsets",
                prepared.id(),
                prepared.rows()
            ))),
        }
    }

    async fn await_oldest(&mut self) -> anyhow::Result<()> {
        if let Some(h) = self.inflight.pop_front() {
            h.await.context("delivery task panicked")??;
        }
        Ok(())
    }

    /// Partitions are being revoked: makes everything received so far
    /// durable and commits it, so the next owner starts where this one
    /// ended; or, when the partitions were `lost` (the group gave them away
    /// already), abandons the open roll so none of their rows become
    /// durable here after the next owner started.
    async fn hand_over(&mut self, lost: bool) -> anyhow::Result<()> {
        if lost {
            self.abandon().await?;
            // No commit of these partitions may land after the next owner's.
            self.settle_commit().await
        } else {
            self.roll_and_commit().await
        }
    }

    /// Gives each cloud worker the share of its endpoint's quota that this
    /// process's partitions are of all the subscribed topics' partitions
    /// (re-reading their number from the brokers when `recount`).
    fn reshare(&mut self, recount: bool) {
        let Some(c) = &self.committer else { return };
        if self.workers.clouds().next().is_none() {
            return;
        }
        if recount || self.partitions_total == 0 {
            match tokio::task::block_in_place(|| c.subscribed_partitions(Duration::from_secs(10))) {
                Ok(n) => self.partitions_total = n,
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot count the input topics' partitions; the cloud quota share is computed from the last count"
                ),
            }
        }
        let total = self.partitions_total.max(self.owned.len()).max(1);
        let share = self.owned.len() as f64 / total as f64;
        tracing::info!(owned = self.owned.len(), total, share, "cloud quota share");
        for w in self.workers.clouds() {
            w.set_share(share);
        }
    }

    /// With transactions: the previous owner of `parts` may have left a
    /// prepared roll (it died between preparing it and committing its
    /// transaction); the group's committed offsets say whether that
    /// transaction committed.
    async fn settle_prepared(&mut self, parts: &[(String, i32)]) -> anyhow::Result<()> {
        let (Some(c), Some(k)) = (&self.committer, &self.kafka) else { return Ok(()) };
        if !k.is_transactional() || parts.is_empty() {
            return Ok(());
        }
        tokio::task::block_in_place(|| -> anyhow::Result<()> {
            let committed = c
                .committed_of(parts, Duration::from_secs(60))
                .context("reading the group's committed offsets of newly assigned partitions")?;
            let (kept, dropped) =
                self.parquet.resolve_prepared(parts, &committed).context("settling prepared rolls")?;
            if kept + dropped > 0 {
                tracing::info!(kept, dropped, "settled prepared rolls of the partitions' previous owner");
            }
            Ok(())
        })
    }

    async fn abandon(&mut self) -> anyhow::Result<()> {
        // A roll cut before the loss holds rows that were this worker's.
        self.finish_roll().await?;
        while !self.inflight.is_empty() {
            self.await_oldest().await?;
        }
        if let Some(k) = &self.kafka {
            tokio::task::block_in_place(|| k.abort_transaction()).context("aborting the Kafka transaction")?;
        }
        let rows = tokio::task::block_in_place(|| self.parquet.abandon()).context("abandoning the open roll")?;
        tracing::warn!(rows, "partitions lost: abandoned the open roll; its records are read again by their owner");
        Ok(())
    }

    /// Makes everything delivered so far durable and commits its offsets.
    async fn roll_and_commit(&mut self) -> anyhow::Result<()> {
        self.start_roll().await?;
        self.finish_roll().await?;
        self.settle_commit().await
    }

    /// Starts a roll of what was delivered so far. Waiting for Kafka to
    /// acknowledge its results and closing and syncing its files go on in
    /// the background while later chunks are delivered (their rows go to
    /// the next roll's files); [`Deliver::finish_roll`] commits it and its
    /// offsets. The roll before is finished first: rolls commit in order.
    /// With transactions the whole roll happens now.
    async fn start_roll(&mut self) -> anyhow::Result<()> {
        self.finish_roll().await?;
        if self.committer.as_ref().is_some_and(|c| c.assignment_lost()) {
            // Fenced out: the group gave this worker's partitions to another
            // member, which reads them from the last commit.
            return self.abandon().await;
        }
        let transaction = match (&self.kafka, &self.committer) {
            (Some(k), Some(c)) if k.is_transactional() => Some(c.clone()),
            _ => None,
        };
        if let Some(c) = transaction {
            // The transaction's results must all be acknowledged first.
            while !self.inflight.is_empty() {
                self.await_oldest().await?;
            }
            return self.roll_in_transaction(&c).await;
        }
        let Some(job) = tokio::task::block_in_place(|| self.parquet.cut_roll()).context("rolling Parquet files")?
        else {
            return Ok(());
        };
        // The results of everything in this roll must be acknowledged by
        // Kafka before its offsets may be committed.
        let acks = std::mem::take(&mut self.inflight);
        self.rolling = Some(tokio::spawn(async move {
            for h in acks {
                h.await.context("delivery task panicked")??;
            }
            // The roll's own time: closing and syncing its files, not the wait for acknowledgements.
            let rolling = Instant::now();
            let prepared = tokio::task::spawn_blocking(move || job.prepare())
                .await
                .context("rolling Parquet files panicked")?
                .context("rolling Parquet files")?;
            stage_time("roll", rolling);
            Ok(prepared)
        }));
        Ok(())
    }

    /// Waits for the roll in the background, if any, commits it (its rows
    /// are durable from here) and then its offsets.
    async fn finish_roll(&mut self) -> anyhow::Result<()> {
        let Some(h) = self.rolling.take() else { return Ok(()) };
        let prepared = h.await.context("roll task panicked")??;
        let roll =
            tokio::task::block_in_place(|| self.parquet.commit_prepared(prepared)).context("committing the roll")?;
        if roll.offsets.is_empty() {
            return Ok(());
        }
        self.summary.rolls += 1;
        let Some(c) = self.committer.clone() else { return Ok(()) };
        // One commit at a time, in order: the one before has long finished
        // unless the group coordinator is slow.
        self.settle_commit().await?;
        for (k, v) in roll.offsets {
            keep_highest(&mut self.uncommitted, k, v + 1);
        }
        // The commit is a round trip to the group coordinator (tens of ms on
        // a busy broker): it runs beside delivery rather than holding the
        // next chunks back.
        let offsets = std::mem::take(&mut self.uncommitted);
        self.committing = Some(tokio::task::spawn_blocking(move || {
            let committing = Instant::now();
            let result = c.commit(&offsets);
            stage_time("commit", committing);
            (offsets, result)
        }));
        Ok(())
    }

    /// Waits for the offset commit in the background, if any. A failed
    /// commit loses nothing: the records are replayed and recognised as
    /// durable. Its offsets go back to `uncommitted`, and the next commit
    /// sends them again.
    async fn settle_commit(&mut self) -> anyhow::Result<()> {
        let Some(h) = self.committing.take() else { return Ok(()) };
        let (offsets, result) = h.await.context("offset commit task panicked")?;
        if let Err(e) = result {
            tracing::warn!(error = %e, "offset commit failed; the next roll commits again");
            for (k, v) in offsets {
                keep_highest(&mut self.uncommitted, k, v);
            }
        }
        Ok(())
    }

    /// At the end of a run: offsets whose commit failed (a rebalance was in
    /// progress) are committed again, a few times, so a restart does not
    /// read them again (it would skip them as durable, but read them).
    async fn commit_leftovers(&mut self) {
        let Some(c) = &self.committer else { return };
        for attempt in 1..=5 {
            if self.uncommitted.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            match tokio::task::block_in_place(|| c.commit(&self.uncommitted)) {
                Ok(()) => self.uncommitted.clear(),
                Err(e) => tracing::warn!(attempt, error = %e, "offset commit at the end of the run failed"),
            }
        }
    }
}

/// Adds one to `name`'s count, copying the name only the first time.
fn count(counts: &mut std::collections::BTreeMap<String, u64>, name: &str) {
    match counts.get_mut(name) {
        Some(n) => *n += 1,
        None => {
            counts.insert(name.to_owned(), 1);
        }
    }
}
