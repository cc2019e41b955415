//! OpenLineage run events of a streaming run: `START` when it begins,
//! `RUNNING` at an interval, `COMPLETE` when it ends, `FAIL` with the error
//! when it fails; the job is the pipeline, the inputs its topics, the
//! outputs its topics and tables, and a run facet carries the manifest's and
//! the policy's hashes. Sent to an HTTP endpoint (`POST {url}/api/v1/lineage`,
//! as Marquez and other OpenLineage servers take them) and/or appended to a
//! JSON Lines file. A transport that fails is logged; the run goes on.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::manifest::{OpenLineageConfig, Plan};

/// The OpenLineage spec version of the events.
const SCHEMA_URL: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
/// Who produces them (the `producer` of events and facets).
const PRODUCER: &str = concat!("https://github.com/switchyard/switchyard/tree/v", env!("CARGO_PKG_VERSION"));

/// Sends the run events of one run.
pub struct RunEvents {
    transport: Transport,
    stop: watch::Sender<bool>,
    ticker: JoinHandle<()>,
}

/// Where a run's events go, and what every one of them says.
#[derive(Clone)]
struct Transport {
    post: Option<(reqwest::Client, String)>,
    file: Option<PathBuf>,
    /// The event without its type and time.
    base: Value,
}

fn facet(schema: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("_producer".into(), json!(PRODUCER));
    m.insert("_schemaURL".into(), json!(schema));
    m
}

impl RunEvents {
    /// Sends `START` for `plan`'s run (writing to Kafka when `kafka_sink`)
    /// and starts the `RUNNING` ticker.
    pub async fn start(config: &OpenLineageConfig, plan: &Plan, kafka_sink: bool) -> Self {
        let m = plan.manifest();
        let kafka_ns = |servers: &str| format!("kafka://{}", servers.split(',').next().unwrap_or_default().trim());
        let inputs: Vec<Value> = plan
            .source
            .topics
            .iter()
            .map(|t| json!({"namespace": kafka_ns(&plan.source.bootstrap_servers), "name": t}))
            .collect();
        let tables_ns = match plan.tables.local() {
            Some(p) => format!("file://{}", std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display()),
            None => plan.tables.to_string(),
        };
        let mut outputs: Vec<Value> =
            ["predictions", "dlq"].into_iter().map(|t| json!({"namespace": tables_ns, "name": t})).collect();
        if let (Some(k), true) = (&plan.kafka, kafka_sink) {
            let servers = k.bootstrap_servers.as_deref().unwrap_or(&plan.source.bootstrap_servers);
            for t in [&k.results_topic, &k.dlq_topic] {
                outputs.push(json!({"namespace": kafka_ns(servers), "name": t}));
            }
        }
        let mut run_facet = facet(&format!("{PRODUCER}/openlineage/SwitchyardRunFacet.json"));
        run_facet.insert("manifestPath".into(), json!(plan.loaded.path.display().to_string()));
        run_facet.insert("manifestHash".into(), json!(plan.loaded.hash));
        run_facet.insert("policyVersion".into(), json!(m.routing.version));
        run_facet.insert("policyHash".into(), json!(plan.policy_hash()));
        run_facet.insert("instance".into(), json!(switchyard_schemas::audit_instance()));
        let mut job_type = facet("https://openlineage.io/spec/facets/2-0-3/JobTypeJobFacet.json");
        job_type.insert("processingType".into(), json!("STREAMING"));
        job_type.insert("integration".into(), json!("SWITCHYARD"));
        job_type.insert("jobType".into(), json!("JOB"));
        let base = json!({
            "run": {"runId": uuid::Uuid::new_v4().to_string(), "facets": {"switchyard_run": run_facet}},
            "job": {"namespace": config.namespace, "name": m.name, "facets": {"jobType": job_type}},
            "inputs": inputs,
            "outputs": outputs,
            "producer": PRODUCER,
            "schemaURL": SCHEMA_URL,
        });
        let file = config.file.as_ref().map(|f| if f.is_absolute() { f.clone() } else { plan.loaded.base.join(f) });
        let post = config.url.as_ref().map(|u| {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
            (client, format!("{}/api/v1/lineage", u.trim_end_matches('/')))
        });
        let transport = Transport { post, file, base };
        transport.send("START", None).await;
        let every = Duration::from_millis(config.running_interval_ms.max(1));
        let stop = watch::channel(false).0;
        let (running, mut stopped) = (transport.clone(), stop.subscribe());
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => running.send("RUNNING", None).await,
                    _ = stopped.changed() => return,
                }
            }
        });
        RunEvents { transport, stop, ticker }
    }

    /// Sends `COMPLETE` (or `FAIL` with `error`) and stops the ticker.
    pub async fn finish(self, error: Option<String>) {
        let _ = self.stop.send(true);
        let _ = self.ticker.await;
        match error {
            None => self.transport.send("COMPLETE", None).await,
            Some(e) => self.transport.send("FAIL", Some(e)).await,
        }
    }
}

impl Transport {
    async fn send(&self, event_type: &str, error: Option<String>) {
        let mut event = self.base.clone();
        event["eventType"] = json!(event_type);
        event["eventTime"] = json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        if let Some(message) = error {
            let mut f = facet("https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json");
            f.insert("message".into(), json!(message));
            f.insert("programmingLanguage".into(), json!("Rust"));
            event["run"]["facets"]["errorMessage"] = Value::Object(f);
        }
        if let Some(path) = &self.file {
            let line = format!("{event}\n");
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
            if let Err(e) = appended {
                tracing::warn!(error = %e, file = %path.display(), "cannot write the OpenLineage event");
            }
        }
        if let Some((client, url)) = &self.post {
            let body = serde_json::to_vec(&event).unwrap_or_default();
            let request = client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
            match request.send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(%url, status = r.status().as_u16(), "the OpenLineage server refused {event_type}")
                }
                Err(e) => tracing::warn!(%url, error = %e, "cannot send the OpenLineage {event_type} event"),
            }
        }
    }
}
