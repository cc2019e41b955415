//! `switchyard`: a stream-processing worker for hybrid ML inference.
//!
//! The binary is the CLI and the wiring: it reads a manifest once into a
//! [`manifest::Plan`], and wires the stage crates together for each
//! command — `ingest → router → workers → sink` in [`pipeline`], the
//! read side (`switchyard-analysis`) in `drift`, `monitor` and `sql`.
//!
//! | module | what it wires |
//! |---|---|
//! | [`manifest`] | loading (every problem, with its path and line), checks, the plan |
//! | [`pipeline`] | the stages of a run: prepare, dispatch, deliver; the summary |
//! | [`run`], [`backfill`] | a streaming run's source and side tasks; a bounded run's |
//! | [`feedback`], [`reload`], [`monitor`] | the side tasks of a streaming run |
//! | [`drift`], [`serve`], [`generate`], [`demo`], [`bench`] | the other commands |

mod backfill;
mod bench;
mod demo;
mod drift;
mod feedback;
mod generate;
mod kafka_util;
mod manifest;
mod monitor;
mod pipeline;
mod reload;
mod report;
mod run;
mod serve;
mod signal;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

// The pipeline allocates from several threads at once (consumer, stages,
// batcher); glibc's allocator spends a fifth of the time in arena locks there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_decommits` in mimalloc.h (v2 and v3).
const MI_OPTION_PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;
/// `mi_option_purge_delay` in mimalloc.h (v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long freed memory stays with the allocator before it goes back to
/// the OS, in ms (mimalloc's default: 10).
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// `generate --rate`: the shortest sleep between records; those that fall
/// due meanwhile are sent together.
const PACE_STEP: Duration = Duration::from_millis(1);

/// Fresh memory is what a scan pays for: every new page is zeroed by the
/// kernel, and on a virtual machine it may first cost the host a fault.
/// Scans that decode Parquet pages into new buffers (drift reports,
/// backfills) spent most of their system time there. So:
///
/// * memory the allocator no longer needs goes back to the OS after a
///   second unused (not after 10 ms), with `MADV_FREE` rather than
///   `MADV_DONTNEED`: the kernel takes it when it needs it, and until then
///   reusing it costs no page faults. Long-running commands (`run`,
///   `serve`, `monitor`) use `MADV_DONTNEED` instead: pages freed with
///   `MADV_FREE` stay counted in the resident memory until the kernel
///   needs them, and over a 3-minute run at half load they grew it from
///   210 MB to 480 MB while the memory in use stayed at 240–260 MB (with
///   `MADV_DONTNEED` it stays at 230–280 MB, at the same events/s), so the
///   figure that operators watch and limit said nothing about the worker;
/// * transparent huge pages are off for the process: a first touch zeroes
///   4 KiB, not 2 MiB, and freed small pages are reused while still warm
///   (on a 2-core VM this took a 10M-row drift report from 3.0 s to 2.2 s).
///
/// `MIMALLOC_PURGE_DECOMMITS`, `MIMALLOC_PURGE_DELAY` and
/// `MIMALLOC_ALLOW_THP` in the environment override each choice (mimalloc
/// reads them itself).
#[allow(unsafe_code)]
fn tune_allocator(long_running: bool) {
    if std::env::var_os("MIMALLOC_PURGE_DECOMMITS").is_none() {
        // SAFETY: sets an integer option; mimalloc reads it on its next purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DECOMMITS, long_running.into()) };
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: as above.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: a process-wide flag; no memory is passed.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// Stream-processing worker for hybrid ML inference: Kafka in, local ONNX
/// models, Kafka and Parquet out, SQL over the results.
#[derive(Parser)]
#[command(name = "switchyard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a pipeline manifest and report every problem with its path.
    Validate {
        /// The manifest (YAML).
        manifest: PathBuf,
    },
    /// Run a streaming pipeline until Ctrl-C (or until idle with --idle-exit-ms).
    Run {
        /// The manifest (YAML).
        manifest: PathBuf,
        /// Override the manifest's Kafka bootstrap servers.
        #[arg(long)]
        bootstrap_servers: Option<String>,
        /// Override the manifest's table folder.
        #[arg(long)]
        tables: Option<PathBuf>,
        /// Stop after this many ms without a new record (counted again from
        /// each assignment of partitions, which may hold a backlog). A group
        /// member stays on while partitions it does not hold have records the
        /// group has not committed (a rebalance may hand them to it), for at
        /// most two session timeouts.
        #[arg(long)]
        idle_exit_ms: Option<u64>,
        /// Read records from a JSON Lines file instead of Kafka.
        #[arg(long)]
        input_file: Option<PathBuf>,
        /// Do not write results to Kafka (Parquet only).
        #[arg(long)]
        no_kafka_sink: bool,
        /// Also write the run summary as JSON to this file.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// Do not create missing results/DLQ topics at start-up.
        #[arg(long)]
        no_create_topics: bool,
        /// Print progress every N seconds (0: never).
        #[arg(long, default_value_t = 5)]
        progress_secs: u64,
        /// Serve /metrics, /healthz and /readyz on this host:port (overrides
        /// the manifest's `service.listen`).
        #[arg(long)]
        listen: Option<String>,
    },
    /// List every metric `run` exports on /metrics (a Markdown table).
    Metrics,
    /// Backfills: bounded runs of a pipeline over files or Kafka ranges,
    /// described by a backfill manifest (pinned versions, own limits).
    #[command(subcommand)]
    Backfill(BackfillCommand),
    /// Run a SQL query over the tables (predictions, dlq, feedback,
    /// feedback_latest, drift, accuracy, triggers, audit).
    Sql {
        /// The query, e.g. "SELECT route, count(*) FROM predictions GROUP BY route".
        query: String,
        /// Table folder.
        #[arg(long, default_value = "data/tables")]
        tables: PathBuf,
    },
    /// Report drift of the manifest's model: the current window against the
    /// reference, per model version and route, with accuracy against
    /// feedback; as a table, and as HTML/SVG charts.
    Drift {
        /// The manifest (YAML); its `monitor:` section gives the defaults.
        manifest: PathBuf,
        /// Override the manifest's table folder.
        #[arg(long)]
        tables: Option<PathBuf>,
        #[command(flatten)]
        options: drift::DriftOptions,
    },
    /// Evaluate drift and accuracy and emit retrain triggers, on the
    /// manifest's schedule (the streaming worker does this too), or once.
    Monitor {
        /// The manifest (YAML) with a `monitor:` section.
        manifest: PathBuf,
        /// Override the manifest's table folder.
        #[arg(long)]
        tables: Option<PathBuf>,
        /// Override the Kafka bootstrap servers (trigger topic).
        #[arg(long)]
        bootstrap_servers: Option<String>,
        /// Evaluate once, print the result and exit.
        #[arg(long)]
        once: bool,
        /// With --once: evaluate the window ending at this time (RFC 3339) instead of now.
        #[arg(long, requires = "once")]
        now: Option<String>,
    },
    /// Produce synthetic transactions, run the pipeline on them, print a summary.
    Demo {
        /// Events to produce (the embedded mock cluster is meant for tens of thousands).
        #[arg(long, default_value_t = 20_000)]
        events: u64,
        /// `mock` (embedded librdkafka mock cluster) or a real broker's host:port.
        #[arg(long, default_value = "mock")]
        broker: String,
        /// Manifest to run.
        #[arg(long, default_value = "pipelines/hybrid.yaml")]
        manifest: PathBuf,
        /// Table folder for the demo's results (emptied first).
        #[arg(long, default_value = "data/demo")]
        tables: PathBuf,
        /// `embedded`: serve the local registry in-process (`switchyard
        /// serve`) as the endpoint of every `kserve_v2` worker; `manifest`:
        /// the endpoints the manifest names.
        #[arg(long, default_value = "embedded")]
        endpoint: String,
    },
    /// Serve the model registry over the KServe V2 REST protocol (health,
    /// metadata, infer), batching like the local worker.
    Serve {
        /// Model registry folder.
        #[arg(long, default_value = "pipelines/models")]
        registry: PathBuf,
        /// Model to serve, `name` or `name:version` (repeatable); default:
        /// every model of the registry at its highest version.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Require `Authorization: Bearer <token>` with the token in this
        /// environment variable.
        #[arg(long, conflicts_with = "token_file")]
        token_env: Option<String>,
        /// Require a bearer token read from this file.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Most rows per model execution.
        #[arg(long, default_value_t = 1024)]
        max_batch_size: usize,
        /// Longest a request waits for others to join its batch, in ms.
        #[arg(long, default_value_t = 2)]
        max_queue_delay_ms: u64,
        /// ONNX Runtime sessions per model.
        #[arg(long, default_value_t = 1)]
        instances: usize,
    },
    /// Measure baselines: raw ONNX Runtime throughput, raw Kafka consume rate.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Generate synthetic transactions to a Kafka topic or a JSON Lines file.
    Generate {
        /// Number of events.
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// Write to this file: JSON Lines (malformed records kept, one per
        /// line), or Parquet when it ends in `.parquet` (well-formed rows only).
        #[arg(long, conflicts_with = "topic")]
        out: Option<PathBuf>,
        /// Produce to this topic (created if missing).
        #[arg(long, requires = "bootstrap_servers")]
        topic: Option<String>,
        /// Kafka bootstrap servers.
        #[arg(long)]
        bootstrap_servers: Option<String>,
        /// Partitions when creating the topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// RNG seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Share of malformed records.
        #[arg(long, default_value_t = 0.01)]
        malformed_rate: f64,
        /// Share of records carrying personal data.
        #[arg(long, default_value_t = 0.10)]
        pii_rate: f64,
        /// Produce at most this many events per second (0: as fast as possible).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Append this many characters of plain prose (no personal data) to
        /// every event's `note`: longer text for the PII scan to read.
        #[arg(long, default_value_t = 0)]
        note_pad: usize,
        /// Extra librdkafka producer property, `key=value` (repeatable).
        #[arg(long = "producer-property", value_parser = parse_key_value)]
        producer_properties: Vec<(String, String)>,
        /// Share of events asking for the `realtime` latency tier (the
        /// `switchyard.latency_tier` header).
        #[arg(long, default_value_t = 0.10)]
        realtime_rate: f64,
        /// Produce the `realtime` events to this topic instead (created if
        /// missing): the input of a priority lane (`source.priority`).
        #[arg(long, requires = "topic")]
        realtime_topic: Option<String>,
        /// Latency tier header of the other events (`batch`, `standard`;
        /// none by default: the pipeline's default tier).
        #[arg(long)]
        other_tier: Option<String>,
    },
}

#[derive(Subcommand)]
enum BackfillCommand {
    /// Count the input, estimate routes, cloud requests and cost, and the
    /// duration from measured throughput; runs nothing.
    Plan {
        /// The backfill manifest (YAML).
        manifest: PathBuf,
        #[command(flatten)]
        options: backfill::PlanOptions,
    },
    /// Run the backfill, or resume it where it stopped; a finished backfill
    /// run again adds nothing.
    Run {
        /// The backfill manifest (YAML).
        manifest: PathBuf,
        #[command(flatten)]
        options: backfill::RunCommandOptions,
    },
    /// Check a backfill manifest and its pipeline; report every problem.
    Validate {
        /// The backfill manifest (YAML).
        manifest: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Rows/s of one ONNX Runtime session at a fixed batch size (no pipeline).
    Ort {
        /// Model registry folder.
        #[arg(long, default_value = "pipelines/models")]
        registry: PathBuf,
        /// Model name (latest version).
        #[arg(long, default_value = "fraud")]
        model: String,
        /// Rows per run.
        #[arg(long, default_value_t = 1024)]
        batch: usize,
        /// How long to measure.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// The cloud worker against an in-process `switchyard serve`: achieved
    /// requests/s against the configured limit, events per request with
    /// coalescing, latency added to a bare HTTP client.
    Cloud {
        /// Model registry folder.
        #[arg(long, default_value = "pipelines/models")]
        registry: PathBuf,
        /// Model name (latest version).
        #[arg(long, default_value = "fraud")]
        model: String,
        /// Configured requests per second of the rate-limit run.
        #[arg(long, default_value_t = 200.0)]
        rps: f64,
        /// Length of the rate-limit run, in seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Requests per latency measurement.
        #[arg(long, default_value_t = 500)]
        requests: usize,
    },
    /// The drift report over synthetic prediction rows (half reference, half
    /// current) against a DataFusion scan of the same columns, same run.
    Drift {
        /// Prediction rows in all (half in each window).
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        /// Folder for the data (written once, reused while `--rows` matches).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Timings per measurement (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Time one measurement in this process and print it (the benchmark
        /// runs each timing in a fresh process, as a user's command runs).
        #[arg(long, hide = true)]
        one: Option<bench::DriftPart>,
    },
    /// Messages/s of a consumer that only counts (no decoding, no processing).
    Consume {
        /// Kafka bootstrap servers.
        #[arg(long)]
        bootstrap_servers: String,
        /// Topic to read from the start.
        #[arg(long)]
        topic: String,
        /// Consumer group (use a fresh one per run).
        #[arg(long)]
        group: String,
        /// Stop after this many ms without a message.
        #[arg(long, default_value_t = 3000)]
        idle_exit_ms: u64,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got `{s}`"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,switchyard=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    tune_allocator(matches!(cli.command, Command::Run { .. } | Command::Serve { .. } | Command::Monitor { .. }));
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        // A manifest with problems: every one of them, and the documented exit code.
        Err(e) if e.chain().any(|c| c.is::<manifest::Invalid>()) => {
            let context: Vec<String> =
                e.chain().take_while(|c| !c.is::<manifest::Invalid>()).map(|c| c.to_string()).collect();
            let invalid = e.chain().find_map(|c| c.downcast_ref::<manifest::Invalid>()).expect("found above");
            if !context.is_empty() {
                eprintln!("error: {}", context.join(": "));
            }
            eprint!("error: {invalid}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `ok` or every problem of a manifest; exit code 2 for problems.
fn report_problems(manifest: &std::path::Path, problems: &switchyard_schemas::Problems) -> ExitCode {
    if problems.is_empty() {
        println!("{}: ok", manifest.display());
        ExitCode::SUCCESS
    } else {
        eprint!("{}: {} problem(s)\n{problems}", manifest.display(), problems.items().len());
        ExitCode::from(2)
    }
}

/// A manifest with shape problems is reported like any other invalid one;
/// other errors (an unreadable file) go on up.
fn invalid_or(manifest: &std::path::Path, e: anyhow::Error) -> anyhow::Result<ExitCode> {
    match e.downcast::<manifest::Invalid>() {
        Ok(invalid) => Ok(report_problems(manifest, &invalid.problems)),
        Err(e) => Err(e),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            registry,
            models,
            listen,
            token_env,
            token_file,
            max_batch_size,
            max_queue_delay_ms,
            instances,
        } => {
            let auth = (token_env.is_some() || token_file.is_some())
                .then_some(switchyard_workers::cloud::AuthConfig { bearer_env: token_env, bearer_file: token_file });
            anyhow::ensure!(max_batch_size > 0, "--max-batch-size must be at least 1");
            serve::serve(serve::ServeOptions {
                registry,
                models,
                listen,
                auth,
                max_batch_size,
                max_queue_delay_ms,
                instances,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { manifest } => match manifest::load(&manifest) {
            Ok(loaded) => Ok(report_problems(&manifest, &loaded.validate())),
            Err(e) => invalid_or(&manifest, e),
        },
        Command::Run {
            manifest,
            bootstrap_servers,
            tables,
            idle_exit_ms,
            input_file,
            no_kafka_sink,
            no_create_topics,
            progress_secs,
            summary_json,
            listen,
        } => {
            let plan =
                manifest::Plan::build(&manifest::load(&manifest)?, &manifest::Overrides { bootstrap_servers, tables })?;
            let summary = run::stream(
                &plan,
                run::StreamOptions {
                    idle_exit: idle_exit_ms.map(Duration::from_millis),
                    startup_timeout: None,
                    input_file,
                    no_kafka_sink,
                    skip_topic_creation: no_create_topics,
                    progress_every: (progress_secs > 0).then(|| Duration::from_secs(progress_secs)),
                    listen,
                },
            )
            .await?;
            println!("{}", report::summary(&summary));
            if let Some(path) = summary_json {
                std::fs::write(&path, report::json(&summary).to_string())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Metrics => {
            print!("{}", switchyard_schemas::telemetry::markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill(BackfillCommand::Plan { manifest, options }) => {
            backfill::plan_command(backfill::load(&manifest)?, options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill(BackfillCommand::Run { manifest, options }) => {
            backfill::run_command(backfill::load(&manifest)?, options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill(BackfillCommand::Validate { manifest }) => match backfill::load(&manifest) {
            Ok(b) => Ok(report_problems(&manifest, &b.validate())),
            Err(e) => invalid_or(&manifest, e),
        },
        Command::Drift { manifest, tables, options } => {
            let overrides = manifest::Overrides { bootstrap_servers: None, tables };
            drift::command(&manifest::Plan::resolve(&manifest::load(&manifest)?, &overrides)?, options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Monitor { manifest, tables, bootstrap_servers, once, now } => {
            let overrides = manifest::Overrides { bootstrap_servers, tables };
            monitor::command(&manifest::Plan::build(&manifest::load(&manifest)?, &overrides)?, once, now).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sql { query, tables } => {
            let tables = switchyard_sink::TableRoot::parse(
                &tables.to_string_lossy(),
                std::path::Path::new(""),
                &Default::default(),
            )
            .context("--tables")?;
            if tables.local().is_some_and(|p| !p.exists()) {
                anyhow::bail!("no tables at {tables} (run a pipeline first, or pass --tables)");
            }
            let ctx = switchyard_analysis::catalog::open(&tables).await?;
            let batches = switchyard_analysis::catalog::query(&ctx, &query).await?;
            println!("{}", switchyard_analysis::catalog::format(&batches)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Ort { registry, model, batch, seconds }) => {
            let rate = tokio::task::spawn_blocking(move || bench::ort(&registry, &model, batch, seconds)).await??;
            println!("{}", serde_json::json!({"bench": "ort", "batch": batch, "rows_per_s": rate}));
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Cloud { registry, model, rps, seconds, requests }) => {
            anyhow::ensure!(
                rps > 0.0 && seconds > 0.0 && requests > 0,
                "--rps, --seconds and --requests must be positive"
            );
            let r = bench::cloud(&bench::CloudBench { registry, model, rps, seconds, requests }).await?;
            println!("{r}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Drift { rows, dir, repeat, one }) => {
            anyhow::ensure!(rows >= 2, "--rows must be at least 2");
            let dir = dir.unwrap_or_else(|| std::env::temp_dir().join("switchyard-bench-drift"));
            match one {
                Some(part) => println!("{}", bench::drift_part(&dir, part).await?),
                None => println!("{}", bench::drift(&dir, rows, repeat).await?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Consume { bootstrap_servers, topic, group, idle_exit_ms }) => {
            let (n, secs) = tokio::task::spawn_blocking(move || {
                bench::consume(&bootstrap_servers, &topic, &group, Duration::from_millis(idle_exit_ms))
            })
            .await??;
            let rate = n as f64 / secs.max(1e-9);
            println!("{}", serde_json::json!({"bench": "consume", "messages": n, "seconds": secs, "rows_per_s": rate}));
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { events, broker, manifest, tables, endpoint } => {
            demo::run(demo::DemoOptions { events, broker, manifest, tables, endpoint }).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            events,
            out,
            topic,
            bootstrap_servers,
            partitions,
            seed,
            malformed_rate,
            pii_rate,
            producer_properties,
            rate,
            note_pad,
            realtime_rate,
            realtime_topic,
            other_tier,
        } => {
            let mut gen = generate::Generator::new(generate::GenOptions {
                seed,
                malformed_rate,
                pii_rate,
                note_pad,
                realtime_rate,
                other_tier,
            });
            match (out, topic, bootstrap_servers) {
                (Some(path), _, _) if path.extension().is_some_and(|e| e == "parquet") => {
                    let (n, skipped) = generate::write_parquet(&mut gen, events, &path)?;
                    eprintln!("wrote {n} rows to {} ({skipped} malformed records left out)", path.display());
                }
                (Some(path), _, _) => {
                    use std::io::Write as _;
                    let f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(f);
                    for _ in 0..events {
                        let r = gen.next_record();
                        // Newlines inside a payload would split it; generated payloads have none.
                        w.write_all(&r.payload)?;
                        w.write_all(b"\n")?;
                    }
                    w.flush()?;
                    eprintln!("wrote {events} records to {}", path.display());
                }
                (None, Some(topic), Some(bootstrap)) => {
                    let mut admin = kafka_util::plain(&bootstrap);
                    for (k, v) in
                        producer_properties.iter().filter(|(k, _)| switchyard_schemas::kafka::is_connection_property(k))
                    {
                        admin.set(k, v);
                    }
                    let mut topics = vec![(topic.as_str(), partitions)];
                    topics.extend(realtime_topic.as_deref().map(|t| (t, partitions)));
                    kafka_util::create_topics(&admin, &topics, -1).await?;
                    // The pace starts with the first record, once the producer is ready.
                    let mut started = None;
                    let records = (0..events).map(|i| {
                        if rate > 0.0 {
                            // Paced production for latency measurements.
                            let started = *started.get_or_insert_with(std::time::Instant::now);
                            let due = started + Duration::from_secs_f64(i as f64 / rate);
                            // Sleeping once per record would cost the load generator
                            // more CPU than producing (a wake-up every 25 µs at 40k/s);
                            // it sleeps at least PACE_STEP, then sends what fell due
                            // meanwhile at once, as a client batching on linger.ms does.
                            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                                std::thread::sleep(wait.max(PACE_STEP));
                            }
                        }
                        gen.next_record()
                    });
                    let realtime = realtime_topic.as_deref();
                    let n = kafka_util::produce(&bootstrap, &topic, realtime, records, &producer_properties).await?;
                    match realtime {
                        Some(rt) => eprintln!("produced {n} records to {topic} and {rt} (realtime) at {bootstrap}"),
                        None => eprintln!("produced {n} records to {topic} at {bootstrap}"),
                    }
                }
                _ => anyhow::bail!("give --out FILE, or --topic and --bootstrap-servers"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
