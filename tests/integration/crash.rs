//! Kill the worker mid-run with SIGKILL, restart it: 0 lost and 0 duplicate
//! result rows, on the real broker (the restarted worker joins the group
//! while the killed one is still a member until its session times out).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn kill_minus_nine_mid_run_then_restart_loses_and_duplicates_nothing() {
    let bootstrap = crate::broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("crash");
    create_topics(&bootstrap, &[(&t.input, 3), (&t.results, 3), (&t.dlq, 1)]);
    let valid = 30_000;
    let (payloads, bad) = mixed_input(dir.path(), valid);
    produce(&bootstrap, &t.input, &payloads);
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 500);

    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "run",
            manifest.to_str().unwrap(),
            "--idle-exit-ms",
            "5000",
            "--progress-secs",
            "0",
            "--no-create-topics",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some rolls are durable, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(120);
    while durable_rows(tables.join("_rolls")) < 1000 {
        assert!(Instant::now() < deadline, "no roll became durable");
        assert!(child.try_wait().unwrap().is_none(), "worker exited early");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = durable_rows(tables.join("_rolls"));
    assert!(before < (valid + bad) as u64, "killed mid-run ({before} rows durable)");

    run_until_idle(&manifest);

    let tb = tables.as_path();
    assert_eq!(sql_i64(tb, "SELECT count(*) FROM predictions"), valid as i64, "0 lost, 0 duplicated");
    let distinct = sql_i64(tb, "SELECT count(DISTINCT lineage_id) FROM predictions");
    if distinct != valid as i64 {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let text = rt.block_on(async {
            let ctx = switchyard_analysis::catalog::open(&root(tb)).await.unwrap();
            let q = "SELECT source_partition, min(source_offset), max(source_offset), count(*), count(DISTINCT key) \
                     FROM (SELECT source_partition, source_offset, key, count(*) OVER (PARTITION BY lineage_id) AS n FROM predictions) \
                     WHERE n > 1 GROUP BY 1";
            let b = switchyard_analysis::catalog::query(&ctx, q).await.unwrap();
            switchyard_analysis::catalog::format(&b).unwrap()
        });
        panic!(
            "{distinct} distinct lineage ids for {valid} rows; duplicated rows:\n{text}\nrolls: {:?}",
            std::fs::read_dir(tb.join("_rolls")).unwrap().count()
        );
    }
    assert_eq!(sql_i64(tb, "SELECT count(*) FROM dlq"), bad as i64);
    assert_eq!(sql_i64(tb, "SELECT count(DISTINCT lineage_id) FROM dlq"), bad as i64);
    // No temp files of the killed roll remain visible or on disk.
    let leftovers = walk(tb).into_iter().filter(|p| p.to_string_lossy().contains(".tmp-")).count();
    assert_eq!(leftovers, 0);
    // The results topic is at-least-once (README): every event's result is
    // on it, some perhaps twice (sent before the kill, not yet committed).
    let results = read_topic(&bootstrap, &t.results);
    assert_eq!(results.keys.len(), valid, "every event has a result on the topic");
    assert!(results.records >= valid, "{} records", results.records);
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
