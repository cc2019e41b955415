//! `switchyard bench`: the baselines the pipeline is measured against, run by
//! `scripts/bench.py` in the same session as the pipeline.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use switchyard_workers::registry;
use switchyard_workers::{BatchModel, ExecutionProviderKind, OnnxModel};

/// Raw ONNX Runtime throughput of a registry model at a fixed batch size:
/// one session, one thread, random inputs, no batcher. Returns rows/s.
pub fn ort(registry: &Path, model: &str, batch: usize, seconds: f64) -> anyhow::Result<f64> {
    switchyard_workers::init_runtime(None)?;
    let entry = registry::resolve(registry, model, None)?;
    let mut m = OnnxModel::load(&entry, 1, ExecutionProviderKind::Cpu)?;
    let width = m.width();
    // A fixed pseudo-random input (xorshift), so runs are comparable.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let input: Vec<f32> = (0..batch * width)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    m.run(&input, batch)?; // warm-up
    let start = Instant::now();
    let mut rows = 0usize;
    while start.elapsed().as_secs_f64() < seconds {
        m.run(&input, batch)?;
        rows += batch;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

/// Raw consume rate of `topic`: a consumer group member that only counts
/// messages, from the first message until `idle` passes without one.
/// Returns (messages, seconds).
pub fn consume(bootstrap: &str, topic: &str, group: &str, idle: Duration) -> anyhow::Result<(u64, f64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("queued.max.messages.kbytes", "16384")
        .create()
        .context("creating consumer")?;
    c.subscribe(&[topic])?;
    let mut n = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let started = Instant::now();
    loop {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                n += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {
                let waited = if first.is_some() { last.elapsed() } else { started.elapsed() };
                if waited >= idle.max(if first.is_some() { idle } else { Duration::from_secs(60) }) {
                    break;
                }
            }
        }
    }
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
    Ok((n, secs))
}
