//! A three-broker cluster (replication factor 3, `min.insync.replicas` 2):
//! one broker is killed with SIGKILL while three workers of one group run
//! and is started again; the workers keep running, and every event produced
//! is in the shared tables exactly once and on the results topic.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::broker::Cluster;
use crate::support::*;

fn create_replicated(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<_> = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let new: Vec<_> = topics.iter().map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(3))).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for r in rt.block_on(admin.create_topics(&new, &AdminOptions::new())).unwrap() {
        r.unwrap();
    }
}

#[test]
fn a_broker_killed_and_restarted_mid_run_loses_and_duplicates_nothing() {
    let cluster = Cluster::start(3);
    let bootstrap = cluster.bootstrap.clone();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("cluster");
    create_replicated(&bootstrap, &[(&t.input, 6), (&t.results, 3), (&t.dlq, 1)]);
    let valid = 24_000;
    let (payloads, bad) = mixed_input(dir.path(), valid);
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 1000);

    // The input arrives over ~8 s (acks=all, idempotent: the producer rides
    // out the broker's loss too), so the kill lands while the pipeline runs.
    let produced = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let (bootstrap, topic, produced, done) = (bootstrap.clone(), t.input.clone(), produced.clone(), done.clone());
        std::thread::spawn(move || {
            let p: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("enable.idempotence", "true")
                .set("linger.ms", "5")
                .create()
                .unwrap();
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let keys: Vec<String> = (0..payloads.len()).map(|i| format!("k{i}")).collect();
                for (i, chunk) in payloads.chunks(300).enumerate() {
                    let mut futs = Vec::new();
                    for (j, payload) in chunk.iter().enumerate() {
                        let mut rec = FutureRecord::to(&topic).key(&keys[i * 300 + j]);
                        if !payload.is_empty() {
                            rec = rec.payload(payload);
                        }
                        futs.push(p.send(rec, Duration::from_secs(60)));
                    }
                    for f in futures::future::join_all(futs).await {
                        f.expect("every input record is acknowledged");
                    }
                    produced.fetch_add(chunk.len(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            done.store(true, Ordering::Relaxed);
        })
    };

    // Three workers of one group share the partitions and the tables.
    let workers: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
                .args(["run", manifest.to_str().unwrap(), "--idle-exit-ms", "8000", "--progress-secs", "0"])
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Kill a broker once a third of the input is in, and start it again a few
    // seconds later.
    let deadline = Instant::now() + Duration::from_secs(60);
    while produced.load(Ordering::Relaxed) < (valid + bad) / 3 {
        assert!(Instant::now() < deadline, "the input was not produced");
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.kill(2);
    let killed_at = produced.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(4));
    cluster.restart(2);
    producer_thread.join().unwrap();
    assert!(done.load(Ordering::Relaxed));
    for child in workers {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    }
    assert!(killed_at < valid + bad, "the broker was killed mid-run ({killed_at} records in)");

    let tb = tables.as_path();
    assert_eq!(sql_i64(tb, "SELECT count(*) FROM predictions"), valid as i64, "0 lost, 0 duplicated");
    assert_eq!(sql_i64(tb, "SELECT count(DISTINCT lineage_id) FROM predictions"), valid as i64);
    assert_eq!(sql_i64(tb, "SELECT count(DISTINCT key) FROM predictions"), valid as i64);
    assert_eq!(sql_i64(tb, "SELECT count(*) FROM dlq"), bad as i64);
    let results = read_topic(&bootstrap, &t.results);
    assert_eq!(results.keys.len(), valid, "every event's result is on the results topic");
    let input = read_topic(&bootstrap, &t.input);
    assert_eq!(input.records, valid + bad, "the input topic holds each record once");
    let committed = committed(&bootstrap, &t.group, &t.input, 6);
    assert_eq!(committed, input.end_offsets, "every partition committed to its end");
}
