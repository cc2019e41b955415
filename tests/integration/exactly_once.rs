//! `delivery: exactly_once` on the real broker: results and DLQ records go
//! out in Kafka transactions with the consumed offsets, and a
//! `read_committed` consumer sees each event's result once — through a
//! SIGKILL mid-run and through commits whose outcome is unknown.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The fraud manifest with `delivery: exactly_once` (and `extra` lines
/// under `sinks.kafka`).
fn eos_manifest(
    dir: &std::path::Path,
    t: &Topics,
    bootstrap: &str,
    tables: &std::path::Path,
    extra: &str,
) -> std::path::PathBuf {
    let manifest = write_manifest(dir, t, bootstrap, tables, 500);
    set_exactly_once(&manifest, t, extra);
    manifest
}

pub fn assert_topics_exactly_once(bootstrap: &str, t: &Topics, valid: usize, bad: usize) {
    let results = read_committed(bootstrap, &t.results);
    assert_eq!(results.keys.len(), valid, "every event has a committed result");
    assert_eq!(results.records, valid, "and only one");
    let dlq = read_committed(bootstrap, &t.dlq);
    assert_eq!(dlq.records, bad, "every bad record once on the DLQ topic");
}

#[test]
fn a_worker_killed_mid_transaction_leaves_every_result_once_for_read_committed_consumers() {
    let bootstrap = crate::broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("eos-kill");
    create_topics(&bootstrap, &[(&t.input, 3), (&t.results, 3), (&t.dlq, 1)]);
    let valid = 30_000;
    let (payloads, bad) = mixed_input(dir.path(), valid);
    produce(&bootstrap, &t.input, &payloads);
    let manifest = eos_manifest(dir.path(), &t, &bootstrap, &tables, "");

    let log = dir.path().join("first.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", manifest.to_str().unwrap(), "--idle-exit-ms", "5000", "--no-create-topics"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while roll_files(&tables, "json") < 3 {
        assert!(Instant::now() < deadline, "no roll committed:\n{}", std::fs::read_to_string(&log).unwrap());
        assert!(child.try_wait().unwrap().is_none(), "exited early:\n{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: mid-transaction, perhaps with a roll prepared
    child.wait().unwrap();
    let committed_before: i64 = committed(&bootstrap, &t.group, &t.input, 3).values().sum();
    assert!((committed_before as usize) < valid + bad, "killed mid-run");

    // Everything the killed worker's transactions committed is read once;
    // its open transaction is aborted when the restarted worker settles.
    run_until_idle(&manifest);
    assert_exactly_once(&tables, valid, bad);
    assert_eq!(roll_files(&tables, "prepared"), 0, "no prepared roll is left");
    assert_topics_exactly_once(&bootstrap, &t, valid, bad);
    let committed: i64 = committed(&bootstrap, &t.group, &t.input, 3).values().sum();
    assert_eq!(committed as usize, valid + bad, "the transactions committed every offset");
}

#[test]
fn a_commit_with_an_unknown_outcome_stops_the_worker_and_the_next_one_settles_its_roll() {
    let bootstrap = crate::broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let valid = 5_000;
    let (payloads, bad) = mixed_input(dir.path(), valid);
    // Every commit attempt times out at once (1 ms): the outcome stays
    // unknown. A retried commit may still find the broker done meanwhile
    // (the run then succeeds, exactly once); on an idle machine the broker
    // is often that quick, three commits in a row: up to six fresh tries.
    let mut tried = Vec::new();
    let (t, tables, err) = loop {
        let t = Topics::new("eos-ambiguous");
        let tables = dir.path().join(format!("tables-{}", tried.len()));
        create_topics(&bootstrap, &[(&t.input, 3), (&t.results, 3), (&t.dlq, 1)]);
        produce(&bootstrap, &t.input, &payloads);
        let stalling = eos_manifest(dir.path(), &t, &bootstrap, &tables, "    commit_timeout_ms: 1\n");
        let out = switchyard(&["run", stalling.to_str().unwrap(), "--idle-exit-ms", "5000", "--no-create-topics"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            break (t, tables, err);
        }
        assert_exactly_once(&tables, valid, bad);
        tried.push(err);
        assert!(tried.len() < 6, "the worker never stopped on an unknown outcome: {tried:?}");
    };
    assert!(err.contains("outcome is unknown") && err.contains("prepared"), "{err}");
    assert!(err.contains("retrying"), "a timed-out commit is retried first: {err}");
    assert_eq!(roll_files(&tables, "prepared"), 1, "its roll is left prepared");

    // The next worker reads the group's committed offsets to settle it: the
    // roll is kept if the transaction committed after all, else dropped and
    // its records read again. Either way, each result is there once.
    let manifest = eos_manifest(dir.path(), &t, &bootstrap, &tables, "");
    run_until_idle(&manifest);
    assert_eq!(roll_files(&tables, "prepared"), 0);
    assert_exactly_once(&tables, valid, bad);
    assert_topics_exactly_once(&bootstrap, &t, valid, bad);
}
