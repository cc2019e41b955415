//! Many workers, one consumer group, one table root, on the real broker:
//! workers join, leave and are killed with SIGKILL at random moments while
//! the input is consumed, and the tables end with exactly one row per event.
//!
//! `SWITCHYARD_SCALE_EVENTS` sets the number of events (default 1,000,000)
//! and `SWITCHYARD_SCALE_KILLS` the number of kills (default 10). The same
//! run with the tables on an S3 server (moto) uses
//! `SWITCHYARD_SCALE_S3_EVENTS` (default 300,000) and
//! `SWITCHYARD_SCALE_S3_KILLS` (default 5): every roll there is a dozen
//! HTTP calls to a server written in Python.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small xorshift generator: the moments of the kills, from a seed the
/// test prints (rerun with `SWITCHYARD_SCALE_SEED`).
struct Rng(u64);

impl Rng {
    fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low)
    }
}

/// One `switchyard run` process of the group, its log in `dir`.
struct Worker {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(manifest: &Path, dir: &Path, name: &str, idle_exit_ms: u64) -> Worker {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", manifest.to_str().unwrap(), "--progress-secs", "0", "--no-create-topics"])
            .args(["--idle-exit-ms", &idle_exit_ms.to_string()])
            .env("RUST_LOG", "warn,switchyard_ingest=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Worker { name: name.to_string(), child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "worker {} exited early:\n{}", self.name, self.log());
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn wait(mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "worker {} failed ({s}):\n{}", self.name, self.log());
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("worker {} did not finish within {limit:?}:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM: a graceful leave (hands its partitions over).
    fn leave(self) -> ExitStatus {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        self.wait(Duration::from_secs(60))
    }
}

/// Files of rolls not committed (`.tmp-<roll>`) under the tables.
fn open_files(tables: &TableRoot) -> usize {
    tables.list("").unwrap().iter().filter(|e| e.rel.contains(".tmp-")).count()
}

/// Where a scale run keeps its tables.
#[derive(Clone, Copy, PartialEq)]
enum Storage {
    Local,
    S3,
}

#[test]
fn workers_joining_leaving_and_killed_at_random_write_every_row_exactly_once() {
    scale(false, Storage::Local);
}

#[test]
fn with_the_tables_on_an_s3_server_workers_joining_leaving_and_killed_write_every_row_exactly_once() {
    scale(false, Storage::S3);
}

#[test]
fn with_transactions_the_results_topic_too_holds_every_result_exactly_once() {
    scale(true, Storage::Local);
}

/// Two workers, a third killed and restarted again and again, a fourth
/// joining and the second leaving mid-run; with `exactly_once` results
/// go out in transactions.
fn scale(exactly_once: bool, storage: Storage) {
    let bootstrap = crate::broker::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let (tables, storage_options) = match storage {
        Storage::Local => (root(&dir.path().join("tables")), String::new()),
        Storage::S3 => {
            let (bucket, options) = crate::peers::moto_bucket("scale");
            let root = TableRoot::parse(&format!("s3://{bucket}/tables"), Path::new(""), &options).unwrap();
            let yaml: Vec<String> = options.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
            (root, format!("\n    storage_options: {{{}}}", yaml.join(", ")))
        }
    };
    let t = Topics::new(if exactly_once { "scale-eos" } else { "scale" });
    create_topics(&bootstrap, &[(&t.input, 6), (&t.results, 3), (&t.dlq, 1)]);
    let (valid, kills) = match storage {
        Storage::Local => (env_or("SWITCHYARD_SCALE_EVENTS", 1_000_000), env_or("SWITCHYARD_SCALE_KILLS", 10)),
        Storage::S3 => (env_or("SWITCHYARD_SCALE_S3_EVENTS", 300_000), env_or("SWITCHYARD_SCALE_S3_KILLS", 5)),
    };
    let (payloads, bad) = mixed_input(dir.path(), valid);
    produce(&bootstrap, &t.input, &payloads);
    drop(payloads);
    let location = PathBuf::from(tables.to_string());
    let manifest = write_manifest(dir.path(), &t, &bootstrap, &location, 20_000);
    // A killed member's partitions wait for its session to time out.
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"10000\"", "\"6000\"")
        .replace(&format!("path: {}", location.display()), &format!("path: {}{storage_options}", location.display()));
    std::fs::write(&manifest, text).unwrap();
    if exactly_once {
        set_exactly_once(&manifest, &t, "");
    }
    let seed = std::env::var("SWITCHYARD_SCALE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let mode = match (exactly_once, storage) {
        (true, _) => "exactly_once",
        (false, Storage::Local) => "at_least_once",
        (false, Storage::S3) => "at_least_once, tables on S3",
    };
    eprintln!("scale ({mode}): {valid} events, {kills} kills, seed {seed}");
    let mut rng = Rng(seed | 1);
    let started = Instant::now();

    let a = Worker::start(&manifest, dir.path(), "a", 20_000);
    let b = Worker::start(&manifest, dir.path(), "b", 20_000);
    let mut b = Some(b);
    let mut joined = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while durable_rows(tables.join("_rolls")) == 0 {
        assert!(Instant::now() < deadline, "no roll became durable:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..kills {
        let c = Worker::start(&manifest, dir.path(), &format!("c{i}"), 20_000);
        std::thread::sleep(Duration::from_millis(rng.between(500, 2_500)));
        if i == kills / 3 {
            joined = Some(Worker::start(&manifest, dir.path(), "d", 20_000));
        }
        if i == 2 * kills / 3 {
            b.take().unwrap().leave();
        }
        c.kill();
    }
    let durable_at_last_kill = durable_rows(tables.join("_rolls"));
    eprintln!("scale: last kill after {:.0?}, {durable_at_last_kill} rows durable", started.elapsed());
    assert!(durable_at_last_kill < (valid + bad) as u64, "the kills came while the input was being consumed");
    // The survivors take over the killed worker's partitions and finish.
    let limit = Duration::from_secs(600);
    a.wait(limit);
    joined.unwrap().wait(limit);
    eprintln!("scale: done after {:.0?}", started.elapsed());

    let tb = &tables;
    let rows = sql_i64(tb, "SELECT count(*) FROM predictions");
    let distinct = sql_i64(tb, "SELECT count(DISTINCT lineage_id) FROM predictions");
    let assigned = sql_i64(tb, "SELECT count(*) FROM audit WHERE event = 'partitions_assigned'");
    let revoked = sql_i64(tb, "SELECT count(*) FROM audit WHERE event = 'partitions_revoked'");
    eprintln!(
        "scale ({mode}): {valid} events, {kills} kills, {assigned} assignments, {revoked} revocations: {rows} rows, \
         {} lost, {} duplicated",
        valid as i64 - distinct,
        rows - distinct
    );
    assert_exactly_once(tb, valid, bad);
    assert_eq!(sql_i64(tb, "SELECT count(DISTINCT lineage_id) FROM dlq"), bad as i64);
    // Workers killed before they joined (or before their audit rows were
    // written) leave no row; the three others do.
    assert!(assigned >= 3, "the workers were assigned partitions ({assigned})");
    // The group's offsets reach the end of every partition.
    let committed: i64 = committed(&bootstrap, &t.group, &t.input, 6).values().sum();
    assert_eq!(committed as usize, valid + bad, "every offset committed");
    if exactly_once {
        crate::exactly_once::assert_topics_exactly_once(&bootstrap, &t, valid, bad);
    } else {
        // Every result is on the topic (at-least-once: some perhaps twice).
        let results = read_topic(&bootstrap, &t.results);
        assert_eq!(results.keys.len(), valid, "every event has a result on the topic");
    }

    assert_eq!(roll_files(tb, "prepared"), 0, "no prepared roll is left");

    // The killed workers' open files are removed by the next writer to open
    // the tables (here one that reads an empty file).
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out =
        switchyard(&["run", manifest.to_str().unwrap(), "--input-file", empty.to_str().unwrap(), "--no-kafka-sink"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_exactly_once(tb, valid, bad);
    assert_eq!(open_files(tb), 0, "no open file of a dead worker is left");
    if storage == Storage::S3 {
        read_from_s3(&manifest, tb, valid);
    }
}

/// `switchyard sql` (credentials from the environment) and `switchyard
/// drift --write` (the manifest's `storage_options`) on tables in S3.
fn read_from_s3(manifest: &Path, tables: &TableRoot, valid: usize) {
    let (_, options) = crate::peers::moto_bucket("env");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["sql", "--tables", &tables.to_string(), "SELECT count(*) AS n FROM predictions"])
        .envs(options.iter().map(|(k, v)| (k.to_ascii_uppercase(), v)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("| {valid} |")), "{stdout}");

    // Every row is the reference; the current window is the last hour.
    let out = switchyard(&[
        "drift",
        manifest.to_str().unwrap(),
        "--reference-start",
        "2000-01-01T00:00:00Z",
        "--reference-end",
        "2100-01-01T00:00:00Z",
        "--write",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("drift table: s3://"));
    assert!(sql_i64(tables, "SELECT count(*) FROM drift") > 0, "the report is appended in S3");
}
