//! The real servers the cloud worker tests talk to, run from `.venv-peers`
//! (installed by `scripts/setup.sh --peers`):
//!
//! * MLServer 1.7.1 (KServe V2 / Open Inference Protocol) serving the
//!   scikit-learn model of `tests/peers/mlserver`;
//! * the LiteLLM proxy (OpenAI-compatible) with the deterministic offline
//!   provider of `tests/peers/litellm`;
//! * moto's S3 server, the object store of the backfill tests.
//!
//! Each starts once per test binary, on the first test that asks for it,
//! on free ports, and is waited for until it answers its readiness checks.
//! Start-up takes seconds, so the tests share one instance of each. A
//! watchdog process stops a peer when this test process ends, however it
//! ends (statics are never dropped); a [`Peer`] that is dropped stops its
//! process at once.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::repo;

/// The LiteLLM proxy's master key (`tests/peers/litellm/config.yaml`): a
/// test-only key, the one every other key is refused for.
pub const LITELLM_KEY: &str = "sk-switchyard-test-0001";

/// How long a peer may take to become ready. Generous: the first start
/// after an install compiles Python bytecode, and the machine may be busy
/// building.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// A running peer process.
pub struct Peer {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    name: &'static str,
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("name", &self.name).field("url", &self.url).finish()
    }
}

/// MLServer serving `fraud-sk` (version `v1`).
pub fn mlserver() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| {
        let [http, grpc, metrics] = [free_port(), free_port(), free_port()];
        let mut cmd = Command::new(peers_bin("mlserver"));
        cmd.arg("start")
            .arg(repo().join("tests/peers/mlserver"))
            .current_dir(repo())
            .env("MLSERVER_HTTP_PORT", http.to_string())
            .env("MLSERVER_GRPC_PORT", grpc.to_string())
            .env("MLSERVER_METRICS_PORT", metrics.to_string());
        start("mlserver", cmd, http, &[("/v2/health/ready", None), ("/v2/models/fraud-sk/ready", None)])
    })
}

/// The LiteLLM proxy; its OpenAI API root is `{url}/v1`, its key
/// [`LITELLM_KEY`].
pub fn litellm() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| {
        let port = free_port();
        let mut cmd = Command::new(peers_bin("litellm"));
        // det_provider.py is imported relative to the working directory.
        cmd.args(["--config", "config.yaml", "--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(repo().join("tests/peers/litellm"))
            // No model price list from the network at start-up, no telemetry.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_TELEMETRY", "False");
        start("litellm", cmd, port, &[("/health/liveliness", None), ("/v1/models", Some(LITELLM_KEY))])
    })
}

/// moto's S3-compatible server (any credentials are accepted).
pub fn moto() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| {
        let port = free_port();
        let mut cmd = Command::new(peers_bin("moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]).current_dir(std::env::temp_dir());
        start("moto", cmd, port, &[("/moto-api/", None)])
    })
}

/// A new, empty bucket on [`moto`]; returns its name and the object store
/// settings (`storage_options`) that reach it.
pub fn moto_bucket(prefix: &str) -> (String, std::collections::BTreeMap<String, String>) {
    let s3 = moto();
    let bucket = crate::support::unique(prefix).to_lowercase();
    let create = format!(
        "import boto3\nboto3.client('s3',endpoint_url='{}',aws_access_key_id='test',aws_secret_access_key='test',\
         region_name='us-east-1').create_bucket(Bucket='{bucket}')\n",
        s3.url
    );
    let ok = Command::new(peers_bin("python")).args(["-c", &create]).status().unwrap();
    assert!(ok.success(), "creating bucket {bucket} on the S3 server");
    let options = [
        ("aws_endpoint", s3.url.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
    ];
    (bucket, options.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// A program of `.venv-peers`.
pub fn peers_bin(name: &str) -> PathBuf {
    let p = repo().join(".venv-peers/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: the cloud worker tests need their peer servers; run `scripts/setup.sh --peers` (or `make test`)",
        p.display()
    );
    p
}

/// Prometheus (Debian's `prometheus` package, installed by `scripts/setup.sh
/// --peers`) scraping `127.0.0.1:target` every second, its data in `dir`.
/// One per test: its configuration names the test's worker.
pub fn prometheus(dir: &Path, target: u16) -> Peer {
    let bin = PathBuf::from("/usr/bin/prometheus");
    assert!(bin.exists(), "Prometheus is not installed: run `make setup-peers` (Debian package `prometheus`)");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: switchyard\n    \
             scrape_interval: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn");
    start("prometheus", cmd, port, &[("/-/ready", None)])
}

/// An OTLP/HTTP trace receiver (`tests/peers/otlp/receiver.py`, decoding
/// with PyPI's `opentelemetry-proto`) writing every span it gets to a file.
pub struct OtlpReceiver {
    /// The receiver; its base URL is the `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub peer: Peer,
    spans: PathBuf,
}

impl OtlpReceiver {
    /// Batch span processor settings that export every span within a
    /// fraction of a second and drop none (for a test to read them back).
    pub const PROMPT_EXPORT: [(&'static str, &'static str); 2] =
        [("OTEL_BSP_SCHEDULE_DELAY", "200"), ("OTEL_BSP_MAX_QUEUE_SIZE", "65536")];

    /// Starts one, its spans in `dir`.
    pub fn start(dir: &Path) -> Self {
        let port = free_port();
        let spans = dir.join("spans.jsonl");
        let mut cmd = Command::new(peers_bin("python"));
        cmd.arg(repo().join("tests/peers/otlp/receiver.py")).args(["--port", &port.to_string(), "--out"]).arg(&spans);
        OtlpReceiver { peer: start("otlp-receiver", cmd, port, &[("/ready", None)]), spans }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.spans).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(name: &'static str, mut cmd: Command, port: u16, checks: &[(&str, Option<&str>)]) -> Peer {
    let log = std::env::temp_dir().join(format!("switchyard-peer-{name}-{}-{port}.log", std::process::id()));
    let out = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // Its own process group, so that stopping it stops whatever it spawned.
        .process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {name} ({:?}): {e}", cmd.get_program()));
    watchdog(child.id());
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        let statuses: Vec<Result<u16, String>> =
            checks.iter().map(|(path, bearer)| http_status(port, path, *bearer)).collect();
        if statuses.iter().all(|s| matches!(s, Ok(200))) {
            eprintln!(
                "peer {name} ready at {url} after {:.1} s (log: {})",
                started.elapsed().as_secs_f64(),
                log.display()
            );
            return Peer { url, name, child };
        }
        let last: Vec<String> = checks
            .iter()
            .zip(&statuses)
            .map(|((path, _), s)| match s {
                Ok(code) => format!("GET {path}: HTTP {code}"),
                Err(e) => format!("GET {path}: {e}"),
            })
            .collect();
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited ({status}) before it was ready\n{}", tail(&log));
        }
        if started.elapsed() > READY_TIMEOUT {
            stop(&mut child);
            panic!(
                "{name} was not ready at {url} within {} s (last: {})\n{}",
                READY_TIMEOUT.as_secs(),
                last.join("; "),
                tail(&log)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last lines a peer wrote, for failure messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    format!("--- last {} lines of {} ---\n{}", lines.len() - from, log.display(), lines[from..].join("\n"))
}

/// Stops `child` and its process group: TERM, then KILL after 5 s.
fn stop(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-TERM", "--", &group]).stderr(Stdio::null()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
    let _ = child.wait();
}

/// A shell that stops process group `pgid` once this test process has
/// ended. It outlives this function on purpose and is never waited on.
pub(crate) fn watchdog(pgid: u32) {
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 -{pgid} 2>/dev/null; do sleep 1; done; \
         kill -TERM -{pgid} 2>/dev/null; sleep 5; kill -KILL -{pgid} 2>/dev/null",
        me = std::process::id()
    );
    let shell = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the peer watchdog");
    std::mem::forget(shell);
}

/// Status of `GET path` on 127.0.0.1:`port`, without an async runtime.
pub(crate) fn http_status(port: u16, path: &str, bearer: Option<&str>) -> Result<u16, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return Err("connection closed without a status line".into()),
            Ok(n) => head.extend_from_slice(&byte[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {:?}", line.lines().next().unwrap_or_default()))
}
