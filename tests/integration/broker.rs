//! A real Kafka broker for the tests: `$KAFKA_BOOTSTRAP` or a tansu process.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static BOOTSTRAP: OnceLock<String> = OnceLock::new();

/// Bootstrap address of the test broker, starting tansu on first use.
pub fn bootstrap() -> String {
    BOOTSTRAP
        .get_or_init(|| match std::env::var("KAFKA_BOOTSTRAP") {
            Ok(b) if !b.is_empty() => b,
            _ => start_tansu(),
        })
        .clone()
}

fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let candidates = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| PathBuf::from(d).join("tansu"))
        .chain(std::iter::once(PathBuf::from(home).join(".cargo/bin/tansu")))
        .collect::<Vec<_>>();
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("the tansu broker is not installed: run `make setup-broker` (or set KAFKA_BOOTSTRAP to a broker)")
    })
}

fn start_tansu() -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("switchyard-tansu-{port}.log"));
    // A watchdog shell stops the broker when this test process ends, however it ends.
    let script = format!(
        "'{bin}' broker --listener-url {url} --advertised-listener-url {url} --storage-engine memory://tansu/ \
         >'{log}' 2>&1 & b=$!; while kill -0 {me} 2>/dev/null && kill -0 $b 2>/dev/null; do sleep 1; done; kill $b 2>/dev/null",
        bin = tansu_binary().display(),
        log = log.display(),
        me = std::process::id(),
    );
    // The watchdog shell outlives this function on purpose; it is never waited on.
    let _watchdog = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tansu");
    std::mem::forget(_watchdog);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen on {port} within 30 s; see {}", log.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("127.0.0.1:{port}")
}
