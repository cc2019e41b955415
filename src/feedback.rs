//! The feedback consumer: ground truth from the feedback topics into the
//! `feedback` table, bad records to the DLQ (table, and topic with a Kafka
//! sink). It runs beside a streaming pipeline, with its own consumer group
//! and its own roll manifests, and commits offsets after each roll.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use switchyard_ingest::{KafkaSource, SourceEvent};
use switchyard_sink::{keep_highest, KafkaSink, Offsets, ParquetSink};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::manifest::{FeedbackPlan, Plan};
use crate::pipeline::SideReport;

/// What the feedback consumer did.
#[derive(Debug, Default, Clone, Copy)]
struct FeedbackSummary {
    /// Feedback records written.
    records: u64,
    /// Bad feedback records sent to the DLQ table.
    dlq: u64,
}

/// Starts the feedback consumer when the manifest has a `feedback:`
/// section; it stops (rolling and committing what it holds) when `stop`
/// turns true.
pub fn spawn(
    plan: &Plan,
    dlq_topic: bool,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<anyhow::Result<SideReport>>>> {
    let Some(FeedbackPlan { config: fb, source: kcfg }) = plan.feedback.clone() else { return Ok(None) };
    let pq = &plan.parquet;
    let tables = &plan.tables;
    let mut parquet = ParquetSink::open_feedback(tables, pq.roll_max_rows, Duration::from_millis(pq.roll_interval_ms))
        .with_context(|| format!("opening the feedback table at {tables}"))?;
    let pipeline = plan.manifest().name.clone();
    let mut source = KafkaSource::start(&kcfg, None, Duration::from_secs(3600))
        .with_context(|| format!("consuming feedback topics {}", fb.topics.join(", ")))?;
    let committer = source.committer();
    let dlq = plan
        .kafka
        .as_ref()
        .filter(|_| dlq_topic)
        .map(|k| KafkaSink::new(k, &plan.source.bootstrap_servers))
        .transpose()
        .context("creating the producer for bad feedback (sinks.kafka.dlq_topic)")?;
    Ok(Some(tokio::spawn(async move {
        let mut stop = stop;
        let mut summary = FeedbackSummary::default();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let roll = |parquet: &mut ParquetSink| -> anyhow::Result<()> {
            if committer.assignment_lost() {
                // Fenced out: the partitions' new owner reads them again.
                parquet.abandon().context("abandoning the feedback roll")?;
                return Ok(());
            }
            let r = parquet.roll().context("rolling the feedback table")?;
            if !r.offsets.is_empty() {
                let next: HashMap<(String, i32), i64> = r.offsets.into_iter().map(|(k, v)| (k, v + 1)).collect();
                if let Err(e) = committer.commit(&next) {
                    tracing::warn!(error = %e, "feedback offset commit failed; the next roll commits again");
                }
            }
            Ok(())
        };
        loop {
            tokio::select! {
                event = source.next_event() => {
                    let chunk = match event {
                        None => break,
                        Some(SourceEvent::Records(chunk)) => chunk,
                        Some(SourceEvent::Assigned(_)) => {
                            // What their previous owner made durable.
                            tokio::task::block_in_place(|| parquet.refresh_durable())
                                .context("reading the feedback roll manifests")?;
                            continue;
                        }
                        Some(SourceEvent::Revoked { lost, done, .. }) => {
                            tokio::task::block_in_place(|| -> anyhow::Result<()> {
                                if lost {
                                    parquet.abandon().context("abandoning the feedback roll")?;
                                    Ok(())
                                } else {
                                    roll(&mut parquet)
                                }
                            })?;
                            done.done();
                            continue;
                        }
                    };
                    let (mut good, mut bad, mut seen) = (Vec::new(), Vec::new(), Offsets::new());
                    for raw in &chunk {
                        keep_highest(&mut seen, (raw.topic.clone(), raw.partition), raw.offset);
                        if parquet.is_durable(&raw.topic, raw.partition, raw.offset) {
                            continue; // replayed after a crash: already in the table
                        }
                        match fb.decode(raw, &pipeline) {
                            Ok(f) => good.push(f),
                            Err(d) => {
                                tracing::warn!(error = %d.message, "bad feedback record to the DLQ");
                                bad.push(*d);
                            }
                        }
                    }
                    summary.records += good.len() as u64;
                    summary.dlq += bad.len() as u64;
                    // Bad feedback reaches the DLQ topic before its offset can
                    // be committed (with the roll that holds its DLQ row).
                    if let (Some(sink), false) = (&dlq, bad.is_empty()) {
                        sink.send_dlq(&bad)
                            .await
                            .context("sending bad feedback to the DLQ topic")?
                            .wait()
                            .await
                            .context("sending bad feedback to the DLQ topic")?;
                    }
                    tokio::task::block_in_place(|| -> anyhow::Result<()> {
                        parquet.write_feedback(&good)?;
                        parquet.write_dlq(&bad)?;
                        parquet.note_offsets(&seen);
                        if parquet.roll_due() {
                            roll(&mut parquet)?;
                        }
                        Ok(())
                    })?;
                }
                _ = tick.tick() => {
                    if parquet.roll_due() {
                        tokio::task::block_in_place(|| roll(&mut parquet))?;
                    }
                }
                _ = stop.changed() => break,
            }
        }
        tokio::task::block_in_place(|| roll(&mut parquet))?;
        source.stop().await?;
        Ok(SideReport::Feedback { records: summary.records, dlq: summary.dlq })
    })))
}
