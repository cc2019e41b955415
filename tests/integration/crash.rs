//! Kill the worker mid-run, restart it: 0 lost and 0 duplicate result rows.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::broker;
use crate::support::*;

fn committed_rows(tables: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(tables.join("_rolls")) else { return 0 };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
            v["rows"].as_u64().unwrap()
        })
        .sum()
}

#[test]
fn kill_minus_nine_mid_run_then_restart_loses_and_duplicates_nothing() {
    let bootstrap = broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("crash");
    create_topics(&bootstrap, &[(&t.input, 3), (&t.results, 3), (&t.dlq, 1)]);
    let valid = 30_000;
    let (payloads, bad) = mixed_input(dir.path(), valid);
    produce(&bootstrap, &t.input, &payloads);
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 500);

    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", manifest.to_str().unwrap(), "--idle-exit-ms", "5000", "--progress-secs", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some rolls are durable, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed_rows(&tables) < 1000 {
        assert!(Instant::now() < deadline, "no roll became durable");
        assert!(child.try_wait().unwrap().is_none(), "worker exited early");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = committed_rows(&tables);
    assert!(before < (valid + bad) as u64, "killed mid-run ({before} rows durable)");

    let out = switchyard(&["run", manifest.to_str().unwrap(), "--idle-exit-ms", "3000", "--progress-secs", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let tb = tables.as_path();
    assert_eq!(sql_i64(tb, "SELECT count(*) FROM predictions"), valid as i64, "0 lost, 0 duplicated");
    assert_eq!(sql_i64(tb, "SELECT count(DISTINCT lineage_id) FROM predictions"), valid as i64);
    assert_eq!(sql_i64(tb, "SELECT count(*) FROM dlq"), bad as i64);
    assert_eq!(sql_i64(tb, "SELECT count(DISTINCT lineage_id) FROM dlq"), bad as i64);
    // No temp files of the killed roll remain visible or on disk.
    let leftovers = walk(tb).into_iter().filter(|p| p.to_string_lossy().contains(".tmp-")).count();
    assert_eq!(leftovers, 0);
    // Kafka results are at-least-once: every key is there (duplicates possible, deduplicated by key on read).
    assert!(topic_size(&bootstrap, &t.results).0 >= valid as i64);
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
