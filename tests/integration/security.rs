//! Kafka over TLS and SASL: the whole pipeline against a broker's
//! `SASL_SSL` listener with each SASL mechanism, its certificate signed by
//! an authority the test generated; a wrong password, an unknown authority
//! and an unreachable broker fail fast, naming the broker, the mechanism and
//! the cause; the password is never printed nor stored.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::broker;
use crate::support::*;

/// How the pipeline's clients log in.
struct Login<'a> {
    mechanism: &'a str,
    ca: &'a Path,
    /// `sasl.password`'s secret: `{ env: … }` or `{ file: … }`.
    password: String,
}

/// The fraud manifest on the secured listener: the source connects with
/// `login`, and the sinks inherit it.
fn secure_manifest(dir: &Path, t: &Topics, bootstrap: &str, login: &Login<'_>, extra: &str) -> std::path::PathBuf {
    let m = write_manifest(dir, t, bootstrap, &dir.join("tables"), 100);
    let text = std::fs::read_to_string(&m).unwrap().replace(
        "    session.timeout.ms: \"10000\"\n",
        &format!(
            "    session.timeout.ms: \"10000\"\n    security.protocol: SASL_SSL\n    sasl.mechanism: {}\n    \
             sasl.username: alice\n    ssl.ca.location: {}\n  secrets:\n    sasl.password: {}\n{extra}",
            login.mechanism,
            login.ca.display(),
            login.password
        ),
    );
    std::fs::write(&m, text).unwrap();
    m
}

fn run(manifest: &Path, env: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    c.arg("run").arg(manifest).args(["--progress-secs", "0"]).args(extra).current_dir(repo());
    // Everything switchyard and librdkafka log, so that a leak would show.
    c.env("RUST_LOG", "debug");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn the_pipeline_runs_over_sasl_ssl_with_plain_and_scram_and_never_shows_the_password() {
    let b = broker::secure();
    let password = b.password();
    let ca = b.ca();
    let pw_file = b.password_file();
    for (mechanism, secret) in [
        ("SCRAM-SHA-256", "{ env: SY_TEST_KAFKA_PASSWORD }".to_string()),
        ("SCRAM-SHA-512", format!("{{ file: {} }}", pw_file.display())),
        ("PLAIN", "{ env: SY_TEST_KAFKA_PASSWORD }".to_string()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let t = Topics::new(&format!("sasl-{}", mechanism.to_lowercase()));
        // Topics and input through the PLAINTEXT listener; switchyard uses SASL_SSL only.
        create_topics(&b.plaintext, &[(&t.input, 2), (&t.results, 2), (&t.dlq, 1)]);
        let valid = 400;
        let (payloads, bad) = mixed_input(dir.path(), valid);
        produce(&b.plaintext, &t.input, &payloads);
        let login = Login { mechanism, ca: &ca, password: secret };
        let m = secure_manifest(dir.path(), &t, &b.sasl_ssl, &login, "");
        let out = run(&m, &[("SY_TEST_KAFKA_PASSWORD", &password)], &["--idle-exit-ms", "3000", "--no-create-topics"]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{mechanism}:\n{stdout}\n{}", &stderr[stderr.len().saturating_sub(4000)..]);
        let tables = dir.path().join("tables");
        assert_eq!(sql_i64(&tables, "SELECT count(*) FROM predictions"), valid as i64, "{mechanism}");
        assert_eq!(sql_i64(&tables, "SELECT count(*) FROM dlq"), bad as i64, "{mechanism}");
        // The producer inherited the source's login: results and DLQ records are on the topics.
        assert_eq!(read_topic(&b.plaintext, &t.results).records, valid, "{mechanism}");
        assert_eq!(read_topic(&b.plaintext, &t.dlq).records, bad, "{mechanism}");
        assert!(!stdout.contains(&password) && !stderr.contains(&password), "{mechanism}: the password was printed");
        assert!(!contains(&all_bytes(&tables), &password), "{mechanism}: the password is in the tables");
        assert!(stderr.contains("DEBUG"), "{mechanism}: debug logging was on");
    }
}

#[test]
fn a_wrong_password_an_unknown_ca_and_an_unreachable_broker_fail_fast_and_say_why() {
    let b = broker::secure();
    let password = b.password();
    let wrong = format!("{password}-wrong");
    let dir = tempfile::tempdir().unwrap();
    let t = Topics::new("sasl-fail");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let closed = format!("127.0.0.1:{closed}");
    let ca = b.ca();
    let other = b.other_ca();
    let cases: [(&str, &str, &Path, &str, &[&str]); 3] = [
        ("wrong password", &b.sasl_ssl, &ca, &wrong, &["refused the connection", "SCRAM-SHA-256", "uthentication"]),
        ("unknown CA", &b.sasl_ssl, &other, &password, &["refused the connection", "certificate verify failed"]),
        ("unreachable", &closed, &ca, &password, &["cannot reach the Kafka brokers", "within 3000 ms"]),
    ];
    for (case, bootstrap, ca, pw, want) in cases {
        let login = Login { mechanism: "SCRAM-SHA-256", ca, password: "{ env: SY_TEST_KAFKA_PASSWORD }".into() };
        let m = secure_manifest(dir.path(), &t, bootstrap, &login, "  connect_timeout_ms: 3000\n");
        let started = Instant::now();
        let out = run(&m, &[("SY_TEST_KAFKA_PASSWORD", pw)], &["--idle-exit-ms", "2000"]);
        let took = started.elapsed();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{case}: {stdout}");
        assert!(took < Duration::from_secs(15), "{case}: took {took:?}");
        let last = stderr.lines().rev().find(|l| l.contains("Error") || l.contains("error:")).unwrap_or_default();
        for w in want.iter().copied().chain([bootstrap, "source", "SASL_SSL", "SCRAM-SHA-256"]) {
            assert!(stderr.contains(w), "{case}: `{w}` not in the error:\n{last}\n{stderr}");
        }
        for p in [&password, &wrong] {
            assert!(!stdout.contains(p.as_str()) && !stderr.contains(p.as_str()), "{case}: a password was printed");
        }
    }
    // A refused login is not retried until the timeout: it ends at once.
    let login = Login { mechanism: "SCRAM-SHA-512", ca: &ca, password: "{ env: SY_TEST_KAFKA_PASSWORD }".into() };
    let m = secure_manifest(dir.path(), &t, &b.sasl_ssl, &login, "");
    let started = Instant::now();
    let out = run(&m, &[("SY_TEST_KAFKA_PASSWORD", &wrong)], &[]);
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10), "a wrong password under the default 30 s timeout failed fast");
}

#[test]
fn a_password_written_in_the_manifest_or_a_secret_that_cannot_be_read_is_a_problem_before_anything_runs() {
    let b = broker::secure();
    let dir = tempfile::tempdir().unwrap();
    let t = Topics::new("sasl-validate");
    let ca = b.ca();
    let login = Login { mechanism: "PLAIN", ca: &ca, password: "{ env: SY_TEST_KAFKA_PASSWORD_UNSET }".into() };
    let m = secure_manifest(dir.path(), &t, &b.sasl_ssl, &login, "");
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("    sasl.username: alice\n", "    sasl.username: alice\n    ssl.key.password: plain-text-secret\n");
    std::fs::write(&m, text).unwrap();
    for cmd in ["validate", "run"] {
        let out = switchyard(&[cmd, m.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("source.properties.ssl.key.password: is a secret"), "{cmd}: {err}");
        assert!(
            err.contains(
                "source.secrets.sasl.password: env: environment variable `SY_TEST_KAFKA_PASSWORD_UNSET` is not set"
            ),
            "{cmd}: {err}"
        );
        assert!(!err.contains("plain-text-secret"), "{cmd}: {err}");
    }
}

#[test]
fn a_backfill_reads_a_kafka_range_over_sasl_ssl() {
    let b = broker::secure();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sasl-backfill");
    create_topics(&b.plaintext, &[(&topic, 2)]);
    let (payloads, bad) = mixed_input(dir.path(), 300);
    produce(&b.plaintext, &topic, &payloads);
    let source = format!(
        "  type: kafka\n  bootstrap_servers: {}\n  topic: {topic}\n  properties:\n    security.protocol: SASL_SSL\n    \
         sasl.mechanism: SCRAM-SHA-512\n    sasl.username: alice\n    ssl.ca.location: {}\n  secrets:\n    \
         sasl.password: {{ file: {} }}",
        b.sasl_ssl,
        b.ca().display(),
        b.password_file().display()
    );
    let tables = dir.path().join("tables");
    let manifest = crate::backfill::write_backfill(dir.path(), "sasl", &source, &tables);
    let summary = crate::backfill::run_json(dir.path(), &manifest, &[]);
    assert_eq!(summary["results"], 300, "{summary}");
    let out = tables.join("backfills/sasl");
    assert_eq!(sql_i64(&out, "SELECT count(DISTINCT lineage_id) FROM predictions"), 300);
    assert_eq!(sql_i64(&out, "SELECT count(*) FROM dlq"), bad as i64);
    // Neither the manifest, the tables nor the status and summary files hold the password.
    assert!(!contains(&all_bytes(dir.path()), &b.password()));
}
