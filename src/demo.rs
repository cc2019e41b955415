//! `switchyard demo`: the whole path on an embedded Kafka, end to end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::mocking::MockCluster;

use crate::generate::{GenOptions, Generator};
use crate::manifest;
use crate::pipeline::{self, RunOptions};
use crate::report;

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Events to produce.
    pub events: u64,
    /// `mock` for librdkafka's in-process cluster, else a bootstrap address.
    pub broker: String,
    /// Manifest to run (its source and sink topics are used).
    pub manifest: PathBuf,
    /// Where the demo's tables go (emptied first).
    pub tables: PathBuf,
}

/// Produces synthetic transactions, runs the pipeline over them, prints the
/// summary and a sample query.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let loaded = manifest::load(&opts.manifest)?;
    let problems = loaded.validate();
    if !problems.is_empty() {
        anyhow::bail!("{}: invalid manifest:\n{problems}", opts.manifest.display());
    }
    let manifest::SourceConfig::Kafka(src) = &loaded.manifest.source;
    let input = src.topics.first().context("source.topics is empty")?.clone();
    let sinks = loaded.manifest.sinks.kafka.clone();
    let mut topics = vec![(input.as_str(), 3)];
    if let Some(k) = &sinks {
        topics.push((k.results_topic.as_str(), 3));
        topics.push((k.dlq_topic.as_str(), 1));
    }

    // Keep the mock cluster alive for the whole run.
    let mock;
    let bootstrap = if opts.broker == "mock" {
        mock = MockCluster::new(1).context("starting the embedded Kafka (librdkafka mock cluster)")?;
        for (t, p) in &topics {
            mock.create_topic(t, *p, 1)?;
        }
        eprintln!("embedded Kafka (librdkafka mock cluster) at {}", mock.bootstrap_servers());
        mock.bootstrap_servers()
    } else {
        crate::kafka_util::create_topics(&opts.broker, &topics).await?;
        eprintln!("Kafka at {}", opts.broker);
        opts.broker.clone()
    };

    clear_tables(&opts.tables)?;
    let mut gen = Generator::new(GenOptions::default());
    let records: Vec<_> = (0..opts.events).map(|_| gen.next_record()).collect();
    let malformed = records.iter().filter(|r| r.malformed).count();
    eprintln!("producing {} synthetic transactions to `{input}` ({malformed} malformed on purpose)…", opts.events);
    crate::kafka_util::produce(&bootstrap, &input, records.into_iter(), &[]).await?;

    eprintln!("running pipeline `{}`…", loaded.manifest.name);
    let summary = pipeline::run(
        &loaded,
        RunOptions {
            idle_exit: Some(Duration::from_secs(3)),
            startup_timeout: Some(Duration::from_secs(30)),
            bootstrap_servers: Some(bootstrap),
            tables: Some(opts.tables.clone()),
            progress_every: Some(Duration::from_secs(2)),
            // The demo created every topic already; the mock cluster has no admin API.
            skip_topic_creation: opts.broker == "mock",
            ..RunOptions::default()
        },
    )
    .await?;
    println!("{}", report::summary(&summary));
    let accounted = summary.predictions + summary.dlq;
    if accounted == opts.events {
        println!(
            "all {} produced events accounted for: {} results + {} in the DLQ\n",
            opts.events, summary.predictions, summary.dlq
        );
    } else {
        println!("warning: produced {} events but {} were accounted for\n", opts.events, accounted);
    }

    let sql = "SELECT route, rule_id, sensitivity, count(*) AS events, round(avg(score), 4) AS avg_score, \
               sum(label) AS flagged FROM predictions GROUP BY route, rule_id, sensitivity ORDER BY events DESC";
    println!("sample query: switchyard sql --tables {} \"{sql}\"", opts.tables.display());
    let ctx = switchyard_sink::catalog::open(&opts.tables).await?;
    let batches = switchyard_sink::catalog::query(&ctx, sql).await?;
    println!("{}", switchyard_sink::catalog::format(&batches)?);
    let sql = "SELECT error_class, stage, count(*) AS records FROM dlq GROUP BY 1, 2 ORDER BY 3 DESC";
    println!("{}", switchyard_sink::catalog::format(&switchyard_sink::catalog::query(&ctx, sql).await?)?);
    Ok(())
}

fn clear_tables(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        // Only ever delete what looks like a switchyard table root.
        let ours = ["predictions", "dlq", "_rolls"];
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if ours.contains(&name.as_str()) {
                std::fs::remove_dir_all(&p).with_context(|| format!("clearing {}", p.display()))?;
            }
        }
    }
    Ok(())
}
