//! A real Kafka broker for the tests: `$KAFKA_BOOTSTRAP`, or an Apache Kafka
//! broker (KRaft mode, jars from Maven Central: `scripts/kafka.sh`) started
//! once per test binary on free ports and stopped when the binary ends.

use std::path::PathBuf;
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

fn start_kafka() -> String {
    let dir = std::env::temp_dir().join(format!("switchyard-kafka-{}", std::process::id()));
    let out = Command::new("bash")
        .arg(script())
        .args(["start", &dir.display().to_string(), "0"])
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/kafka.sh");
    assert!(
        out.status.success(),
        "the Kafka test broker did not start (install it with `make setup-broker`, or set KAFKA_BOOTSTRAP \
         to a broker):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // A watchdog shell stops the broker when this test process ends, however it ends.
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
    addr
}
