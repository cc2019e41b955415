//! `switchyard demo`: the whole path on an embedded Kafka, end to end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::mocking::MockCluster;

use crate::generate::{GenOptions, Generator};
use crate::manifest::{self, Overrides, Plan};
use crate::report;
use crate::run::StreamOptions;

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
    /// `embedded`: serve the manifest's local registry with `switchyard
    /// serve` in this process and point every `kserve_v2` worker at it;
    /// `manifest`: use the endpoints the manifest names.
    pub endpoint: String,
}

/// Produces synthetic transactions, runs the pipeline over them, prints the
/// summary and a sample query.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let mut loaded = manifest::load(&opts.manifest)?;
    let problems = loaded.validate();
    if !problems.is_empty() {
        return Err(manifest::Invalid { path: loaded.path.clone(), problems }.into());
    }
    let input = loaded.manifest.source.kafka().topics.first().context("source.topics is empty")?.clone();
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
        crate::kafka_util::create_topics(&crate::kafka_util::plain(&opts.broker), &topics, -1).await?;
        eprintln!("Kafka at {}", opts.broker);
        opts.broker.clone()
    };

    clear_tables(&opts.tables)?;
    let endpoint = match opts.endpoint.as_str() {
        "embedded" => embed_endpoint(&mut loaded, &opts.tables).await?,
        "manifest" => None,
        other => anyhow::bail!("--endpoint must be `embedded` or `manifest`, not `{other}`"),
    };
    let mut gen = Generator::new(GenOptions::default());
    let records: Vec<_> = (0..opts.events).map(|_| gen.next_record()).collect();
    let malformed = records.iter().filter(|r| r.malformed).count();
    eprintln!("producing {} synthetic transactions to `{input}` ({malformed} malformed on purpose)…", opts.events);
    crate::kafka_util::produce(&bootstrap, &input, None, records.into_iter(), &[]).await?;

    eprintln!("running pipeline `{}`…", loaded.manifest.name);
    let plan =
        Plan::build(&loaded, &Overrides { bootstrap_servers: Some(bootstrap), tables: Some(opts.tables.clone()) })?;
    let summary = crate::run::stream(
        &plan,
        StreamOptions {
            idle_exit: Some(Duration::from_secs(3)),
            startup_timeout: Some(Duration::from_secs(30)),
            progress_every: Some(Duration::from_secs(2)),
            // The demo created every topic already; the mock cluster has no admin API.
            skip_topic_creation: opts.broker == "mock",
            ..StreamOptions::default()
        },
    )
    .await?;
    if let Some(server) = endpoint {
        server.abort();
    }
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

    let sql = "SELECT route, fallback, shadow, rule_id, sensitivity, count(*) AS events, \
               round(avg(score), 4) AS avg_score, sum(label) AS flagged FROM predictions \
               GROUP BY route, fallback, shadow, rule_id, sensitivity ORDER BY events DESC";
    println!("sample query: switchyard sql --tables {} \"{sql}\"", opts.tables.display());
    let ctx = switchyard_analysis::catalog::open(&opts.tables.as_path().into()).await?;
    let batches = switchyard_analysis::catalog::query(&ctx, sql).await?;
    println!("{}", switchyard_analysis::catalog::format(&batches)?);
    if summary.shadows.values().sum::<u64>() > 0 {
        let sql = "SELECT a.route AS answered_by, s.route AS shadow_by, count(*) AS pairs, \
                   max(abs(a.score - s.score)) AS max_abs_score_diff, \
                   sum(CASE WHEN a.label = s.label THEN 1 ELSE 0 END) AS same_label \
                   FROM predictions a JOIN predictions s ON a.lineage_id = s.lineage_id AND s.shadow \
                   WHERE NOT a.shadow GROUP BY 1, 2";
        println!("shadow comparison: switchyard sql --tables {} \"{sql}\"", opts.tables.display());
        println!("{}", switchyard_analysis::catalog::format(&switchyard_analysis::catalog::query(&ctx, sql).await?)?);
    }
    let sql = "SELECT error_class, stage, count(*) AS records FROM dlq GROUP BY 1, 2 ORDER BY 3 DESC";
    println!("{}", switchyard_analysis::catalog::format(&switchyard_analysis::catalog::query(&ctx, sql).await?)?);
    Ok(())
}

/// Starts `switchyard serve` on the registry of the manifest's first local
/// worker, with a fresh bearer token, and points every `kserve_v2` worker at
/// it. `None` when the manifest has no such worker.
async fn embed_endpoint(
    loaded: &mut manifest::Loaded,
    tables: &Path,
) -> anyhow::Result<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    use switchyard_workers::WorkerConfig;
    let workers = &mut loaded.manifest.workers;
    if !workers.values().any(|w| matches!(w, WorkerConfig::KserveV2(_))) {
        return Ok(None);
    }
    let registry = workers
        .values()
        .find_map(|w| match w {
            WorkerConfig::Onnx(c) => Some(loaded.base.join(&c.registry)),
            _ => None,
        })
        .context("the embedded endpoint serves the registry of a local worker, and the manifest has none")?;
    std::fs::create_dir_all(tables)?;
    let token_file = std::path::absolute(tables.join(".endpoint-token"))?;
    let token: String = (0..32).map(|_| format!("{:x}", rand::random::<u8>() % 16)).collect();
    std::fs::write(&token_file, &token).with_context(|| format!("writing {}", token_file.display()))?;
    let auth = switchyard_workers::cloud::AuthConfig { bearer_env: None, bearer_file: Some(token_file) };
    let running = crate::serve::start(crate::serve::ServeOptions {
        registry,
        models: Vec::new(),
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        auth: Some(auth.clone()),
        max_batch_size: 1024,
        max_queue_delay_ms: 2,
        instances: 1,
    })
    .await
    .context("starting the embedded endpoint")?;
    let url = format!("http://{}", running.addr);
    eprintln!("embedded KServe V2 endpoint (switchyard serve) at {url}");
    for w in workers.values_mut() {
        if let WorkerConfig::KserveV2(c) = w {
            c.url = url.clone();
            c.auth = Some(auth.clone());
        }
    }
    Ok(Some(tokio::spawn(running.until(std::future::pending()))))
}

fn clear_tables(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        // Only ever delete what looks like a switchyard table root.
        let ours = ["predictions", "dlq", "_rolls", "_spend"];
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
