//! A real Kafka broker for the tests: `$KAFKA_BOOTSTRAP`, or an Apache Kafka
//! broker (KRaft mode, jars from Maven Central: `scripts/kafka.sh`) started
//! once per test binary on free ports and stopped when the binary ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

static BOOTSTRAP: OnceLock<String> = OnceLock::new();

/// Bootstrap address of the test broker, starting one on first use.
pub fn bootstrap() -> String {
    BOOTSTRAP
        .get_or_init(|| match std::env::var("KAFKA_BOOTSTRAP") {
            Ok(b) if !b.is_empty() => b,
            _ => start_kafka(),
        })
        .clone()
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh")
}

/// Runs `scripts/kafka.sh` with `args`; its stdout lines.
fn kafka_sh(args: &[&str]) -> Vec<String> {
    let out =
        Command::new("bash").arg(script()).args(args).stdin(Stdio::null()).output().expect("running scripts/kafka.sh");
    assert!(
        out.status.success(),
        "scripts/kafka.sh {args:?} failed (install the broker with `make setup-broker`, or set KAFKA_BOOTSTRAP \
         to a broker):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Stops the broker(s) started in `dir` when this test process ends,
/// however it ends, from a shell of its own.
fn stop_at_exit(dir: &Path) {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; bash '{kafka}' stop '{dir}' >/dev/null 2>&1; rm -rf '{dir}'",
        me = std::process::id(),
        kafka = script().display(),
        dir = dir.display(),
    );
    let watchdog = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the broker's watchdog");
    // It outlives this function on purpose; it is never waited on.
    std::mem::forget(watchdog);
}

/// The folder of the shared broker's logs (its topics' partitions), when
/// this process started it.
pub fn data_dir() -> Option<PathBuf> {
    bootstrap();
    let dir = shared_dir().join("data");
    dir.is_dir().then_some(dir)
}

fn shared_dir() -> PathBuf {
    std::env::temp_dir().join(format!("switchyard-kafka-{}", std::process::id()))
}

fn start_kafka() -> String {
    let dir = shared_dir();
    let lines = kafka_sh(&["start", &dir.display().to_string(), "0"]);
    stop_at_exit(&dir);
    lines[0].trim().to_string()
}

/// A broker with a `SASL_SSL` listener (PLAIN, SCRAM-SHA-256 and
/// SCRAM-SHA-512 for user `alice`) whose certificate is signed by a
/// certificate authority `scripts/kafka.sh` generated for it, beside a
/// PLAINTEXT listener for setting up topics.
pub struct Secure {
    /// The PLAINTEXT listener.
    pub plaintext: String,
    /// The SASL_SSL listener.
    pub sasl_ssl: String,
    dir: PathBuf,
}

impl Secure {
    /// The authority that signed the broker's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// An authority that did not.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("tls/other-ca.pem")
    }

    /// The file holding alice's password.
    pub fn password_file(&self) -> PathBuf {
        self.dir.join("tls/alice.password")
    }

    /// Alice's password.
    pub fn password(&self) -> String {
        std::fs::read_to_string(self.password_file()).unwrap().trim().to_string()
    }
}

static SECURE: OnceLock<Secure> = OnceLock::new();

/// The secured broker of this test binary, started on first use.
pub fn secure() -> &'static Secure {
    SECURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("switchyard-kafka-secure-{}", std::process::id()));
        let lines = kafka_sh(&["start", &dir.display().to_string(), "0", "--secure"]);
        stop_at_exit(&dir);
        assert_eq!(lines.len(), 2, "kafka.sh --secure prints two addresses: {lines:?}");
        Secure { plaintext: lines[0].trim().to_string(), sasl_ssl: lines[1].trim().to_string(), dir }
    })
}

/// A cluster of brokers (each also a controller; replication factor 3,
/// `min.insync.replicas` 2) for a test that stops one. Stopped when dropped.
pub struct Cluster {
    /// Every broker's address, comma-separated.
    pub bootstrap: String,
    dir: PathBuf,
}

impl Cluster {
    /// Starts `n` nodes.
    pub fn start(n: usize) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-cluster-{}-{}",
            std::process::id(),
            crate::support::unique("c")
        ));
        let lines = kafka_sh(&["start-cluster", &dir.display().to_string(), &n.to_string()]);
        stop_at_exit(&dir);
        Cluster { bootstrap: lines[0].trim().to_string(), dir }
    }

    fn node(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node{id}"))
    }

    /// Kills node `id` (1-based) without warning (SIGKILL).
    pub fn kill(&self, id: usize) {
        let pid = std::fs::read_to_string(self.node(id).join("pid")).unwrap();
        let status = Command::new("kill").args(["-9", pid.trim()]).status().unwrap();
        assert!(status.success(), "kill -9 {pid}");
    }

    /// Starts node `id` again from its data.
    pub fn restart(&self, id: usize) {
        kafka_sh(&["restart", &self.node(id).display().to_string()]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg("stop").arg(&self.dir).stdin(Stdio::null()).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
