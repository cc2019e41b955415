//! Tables that cannot be written (a full disk, a folder gone wrong): the
//! worker stops consuming with a clear error, commits nothing it has not
//! written, and resumes by itself once the tables are writable again.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn unwritable_tables_stop_consuming_commit_nothing_unwritten_and_resume_once_writable() {
    let bootstrap = crate::broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let t = Topics::new("storage");
    create_topics(&bootstrap, &[(&t.input, 3), (&t.results, 3), (&t.dlq, 1)]);
    let valid = 60_000;
    let (payloads, bad) = mixed_input(dir.path(), valid);
    produce(&bootstrap, &t.input, &payloads);
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &tables, 500);

    let log = dir.path().join("worker.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", manifest.to_str().unwrap(), "--idle-exit-ms", "5000", "--no-create-topics"])
        .env("RUST_LOG", "warn,switchyard::run=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let rolls = tables.join("_rolls");
    let deadline = Instant::now() + Duration::from_secs(120);
    while durable_rows(&rolls) < 2_000 {
        assert!(Instant::now() < deadline, "no roll became durable:\n{}", text());
        std::thread::sleep(Duration::from_millis(5));
    }
    // The roll manifests' folder becomes a file: no roll can commit (as
    // with a full disk, writing fails; root ignores permissions).
    let saved = tables.join("_rolls.saved");
    std::fs::rename(&rolls, &saved).unwrap();
    std::fs::write(&rolls, b"not a folder").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !text().contains("the tables cannot be written") {
        assert!(Instant::now() < deadline, "no clear error:\n{}", text());
        assert!(child.try_wait().unwrap().is_none(), "the worker waits, it does not exit:\n{}", text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = text();
    assert!(err.contains(&rolls.display().to_string()), "the error names the path:\n{err}");
    let durable = durable_rows(&saved);
    assert!(durable < (valid + bad) as u64, "broken mid-run");
    let committed = || committed(&bootstrap, &t.group, &t.input, 3).values().sum::<i64>() as u64;
    let at_error = committed();
    assert!(at_error <= durable, "offsets committed ({at_error}) only for durable rows ({durable})");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(committed(), at_error, "nothing is committed while the tables cannot be written");
    assert!(child.try_wait().unwrap().is_none(), "still waiting:\n{}", text());

    // The space is back: the worker resumes by itself and finishes.
    std::fs::remove_file(&rolls).unwrap();
    std::fs::rename(&saved, &rolls).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not finish after the tables came back:\n{}", text());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{}", text());
    assert!(text().contains("writable again"), "{}", text());
    assert_exactly_once(&tables, valid, bad);
    assert_eq!(committed() as usize, valid + bad, "every offset committed in the end");
}
