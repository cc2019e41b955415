//! Parquet tables with atomic, offset-tracking rolls.
//!
//! Rows are appended to open Parquet files named `*.parquet.tmp-<roll>`,
//! which no reader lists. A roll closes them, writes the roll manifest
//! `_rolls/<roll>.json` (temp + fsync + rename: the commit point), then renames
//! each file to its final `.parquet` name. On open, manifests whose renames did
//! not finish are rolled forward and temp files without a manifest (a crash
//! before the commit point) are deleted. The manifests record the highest
//! source offset of every partition they cover, so rows replayed after a
//! crash (Kafka offsets not yet committed) are recognised and skipped: a
//! replay adds no duplicate rows.
//!
//! Many writers share one table root: every sink instance has its own writer
//! id, which ends each of its roll ids, and a lease file `_writers/<id>` that
//! a background thread rewrites every few seconds. Recovery rolls forward
//! any committed roll (renames are idempotent) but deletes the open files of
//! an uncommitted roll only when its writer's lease is gone or older than
//! [`LEASE_TIMEOUT`]: a live worker's open files are never touched. Workers
//! that take over partitions in a rebalance re-read the manifests
//! ([`DurableIndex::refresh`]) to learn what the previous owner made durable.
//!
//! The root may be an object store ([`TableRoot`]): the same names and the
//! same rules, with two differences. Open files are written to a local spool
//! folder and uploaded under their temp names when the roll closes (an
//! object cannot be appended to); and a "rename" is a copy then a delete,
//! which the roll-forward above makes safe: the manifest's PUT is the commit
//! point, and a copy interrupted by a crash is redone by whoever recovers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use switchyard_schemas::TableRoot;

use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use switchyard_schemas::now_us;
use switchyard_schemas::telemetry as m;
use switchyard_schemas::{DlqRecord, Feedback, Prediction};

use switchyard_schemas::tables::{date_partition, DLQ, FEEDBACK, PREDICTIONS};

use crate::arrow_convert::{dlq_batch, feedback_batch, predictions_batch};
use crate::{Error, Result};

/// Highest offset per `(topic, partition)`.
pub type Offsets = HashMap<(String, i32), i64>;

/// Records `offset` for `partition` unless a higher one is recorded already.
pub fn keep_highest(offsets: &mut Offsets, partition: (String, i32), offset: i64) {
    let e = offsets.entry(partition).or_insert(offset);
    *e = (*e).max(offset);
}

const ROLLS: &str = "_rolls";
/// Roll manifests of the feedback writer, which runs beside the results
/// writer on the same tables root.
const FEEDBACK_ROLLS: &str = "_rolls_feedback";
/// Roll ids of the feedback writer start with this, so neither writer
/// mistakes the other's open files for orphans.
const FEEDBACK_ROLL_PREFIX: &str = "fb-";

/// Lease files of the live writers, one per sink instance.
const WRITERS: &str = "_writers";
/// A writer whose lease file has not been renewed for this long is taken for
/// dead: the open files of its uncommitted rolls may be deleted.
pub const LEASE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a writer renews its lease.
const LEASE_RENEW: Duration = Duration::from_secs(5);

/// Roll manifests of backfill runs, one folder per run under this.
const BACKFILL_ROLLS: &str = "_rolls_backfill";
/// Roll ids of a backfill run start with this and the run's tag.
const BACKFILL_ROLL_PREFIX: &str = "bf-";

/// Which writer: the pipeline's results, the feedback consumer's, or one
/// backfill run's. Each keeps its own roll manifests (so its own source
/// offsets) and never takes another's open files for orphans.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Writer {
    Results,
    Feedback,
    /// A backfill run, by a fixed-length tag derived from its run id (so no
    /// run's roll prefix is a prefix of another's).
    Backfill {
        tag: String,
    },
}

impl Writer {
    fn rolls(&self) -> String {
        match self {
            Writer::Results => ROLLS.to_string(),
            Writer::Feedback => FEEDBACK_ROLLS.to_string(),
            Writer::Backfill { tag } => format!("{BACKFILL_ROLLS}/{tag}"),
        }
    }
    fn tables(&self) -> &'static [&'static str] {
        match self {
            Writer::Results | Writer::Backfill { .. } => &[PREDICTIONS, DLQ],
            Writer::Feedback => &[FEEDBACK, DLQ],
        }
    }
    fn prefix(&self) -> String {
        match self {
            Writer::Results => String::new(),
            Writer::Feedback => FEEDBACK_ROLL_PREFIX.to_string(),
            Writer::Backfill { tag } => format!("{BACKFILL_ROLL_PREFIX}{tag}-"),
        }
    }
    fn owns(&self, roll_id: &str) -> bool {
        match self {
            Writer::Results => !roll_id.starts_with(FEEDBACK_ROLL_PREFIX) && !roll_id.starts_with(BACKFILL_ROLL_PREFIX),
            Writer::Feedback => roll_id.starts_with(FEEDBACK_ROLL_PREFIX),
            Writer::Backfill { .. } => roll_id.starts_with(&self.prefix()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RollManifest {
    roll_id: String,
    created_us: i64,
    files: Vec<String>,
    offsets: Vec<RollOffset>,
    rows: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct RollOffset {
    topic: String,
    partition: i32,
    max_offset: i64,
}

struct OpenFile {
    /// Where the file is written: its temp name under a local root, a file
    /// in the spool folder for an object store root.
    path: PathBuf,
    /// Its temp name under the root (`<final>.tmp-<roll>`).
    tmp_rel: String,
    final_rel: String,
    writer: ArrowWriter<File>,
    /// The table the file belongs to (its first path component).
    table: &'static str,
    rows: u64,
}

/// What a roll made durable.
#[derive(Debug, Default, Clone)]
pub struct RollSummary {
    /// Rows written.
    pub rows: u64,
    /// Files written.
    pub files: usize,
    /// Highest offset per partition covered by this roll.
    pub offsets: Offsets,
}

/// Writer of the `predictions` and `dlq` tables (or, opened with
/// [`ParquetSink::open_feedback`], of `feedback` and `dlq`).
pub struct ParquetSink {
    writer: Writer,
    root: TableRoot,
    /// For an object store root: the local folder open files are written
    /// to until their roll closes (removed when the sink is dropped).
    spool: Option<Spool>,
    roll_max_rows: usize,
    roll_interval: std::time::Duration,
    durable: DurableIndex,
    /// This instance's id, the last part of its roll ids.
    writer_id: String,
    lease: Lease,
    roll_id: String,
    open: BTreeMap<String, OpenFile>,
    pending_offsets: Offsets,
    pending_rows: u64,
    roll_started: Option<Instant>,
    seq: u64,
    /// When dead writers' open files were last looked for.
    swept: Instant,
    /// Rolls commit with Kafka transactions: prepared as `<id>.prepared`,
    /// which recovery keeps for [`ParquetSink::resolve_prepared`] to settle.
    transactional: bool,
}

fn new_roll_id(prefix: &str, writer: &str) -> String {
    // Sortable by time, unique across workers; the writer id comes last.
    format!("{prefix}{:016}-{writer}", now_us())
}

/// The writer id at the end of a roll id.
fn roll_writer(roll_id: &str) -> &str {
    roll_id.rsplit('-').next().unwrap_or(roll_id)
}

/// A writer's lease: `_writers/<id>` under the root, naming its host and
/// process, which a background thread rewrites every [`LEASE_RENEW`] (its
/// modification time is the heartbeat); deleted when the writer is dropped.
struct Lease {
    root: TableRoot,
    rel: String,
    stop: Arc<AtomicBool>,
    /// When the lease was last renewed (by the thread), for the check before
    /// each roll's commit point.
    renewed: Arc<std::sync::Mutex<Instant>>,
}

impl Lease {
    fn take(root: &TableRoot, writer: &str) -> Result<Self> {
        let rel = format!("{WRITERS}/{writer}");
        let content = format!("{}/{}\n", hostname(), std::process::id()).into_bytes();
        root.put(&rel, content.clone())?;
        let stop = Arc::new(AtomicBool::new(false));
        let renewed = Arc::new(std::sync::Mutex::new(Instant::now()));
        let (root2, rel2, s, r) = (root.clone(), rel.clone(), stop.clone(), renewed.clone());
        std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || {
                let mut warned = false;
                while !s.load(Ordering::Relaxed) {
                    std::thread::park_timeout(LEASE_RENEW);
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    match root2.put(&rel2, content.clone()) {
                        Ok(()) => {
                            if let Ok(mut r) = r.lock() {
                                *r = Instant::now();
                            }
                            warned = false;
                        }
                        Err(e) if !warned => {
                            warned = true;
                            tracing::warn!(error = %e, "could not renew the writer lease");
                        }
                        Err(_) => {}
                    }
                }
            })
            .map_err(|e| Error::Io { path: root.describe(&rel), source: e })?;
        Ok(Self { root: root.clone(), rel, stop, renewed })
    }

    /// True while no other writer may take this one for dead.
    fn held(&self) -> bool {
        let age = self.renewed.lock().map(|r| r.elapsed()).unwrap_or(Duration::MAX);
        age + LEASE_RENEW < LEASE_TIMEOUT
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.root.delete(&self.rel);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// True when the writer `id` has a lease under `root` renewed within
/// [`LEASE_TIMEOUT`] — unless the lease names a process on this host that
/// no longer exists (a worker killed here is known dead at once). On an
/// object store the store's clock dates the lease: hosts whose clocks are
/// far off the store's (a good part of the timeout) misjudge leases.
fn writer_alive(root: &TableRoot, id: &str) -> bool {
    let rel = format!("{WRITERS}/{id}");
    let Ok(Some(modified)) = root.modified(&rel) else { return false };
    let age = SystemTime::now().duration_since(modified).unwrap_or_default();
    if age >= LEASE_TIMEOUT {
        return false;
    }
    let owner = root.get(&rel).ok().flatten().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    match owner.trim().rsplit_once('/') {
        Some((host, pid)) if host == hostname() && pid.parse::<u32>().is_ok() => {
            Path::new("/proc").join(pid).exists() || !Path::new("/proc/self").exists()
        }
        _ => true,
    }
}

/// The local folder an object store root's open files are written to:
/// `<tmp>/switchyard-spool/<pid>-<writer>`, removed on drop; folders of
/// processes that no longer exist are removed when the next one opens.
struct Spool {
    dir: PathBuf,
}

impl Spool {
    fn new(writer: &str) -> Result<Self> {
        let base = std::env::temp_dir().join("switchyard-spool");
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.split('-').next().unwrap_or_default();
                if Path::new("/proc/self").exists() && !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("{}-{writer}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self { dir })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The highest durable source offset per partition of one writer kind's
/// committed rolls, kept up to date by re-reading only manifests not read
/// before. A worker refreshes it when partitions are assigned to it, so it
/// skips what their previous owner made durable.
#[derive(Debug, Clone)]
pub struct DurableIndex {
    root: TableRoot,
    rolls: String,
    read: HashSet<String>,
    offsets: Offsets,
}

impl DurableIndex {
    fn new(root: TableRoot, rolls: String) -> Self {
        Self { root, rolls, read: HashSet::new(), offsets: Offsets::new() }
    }

    /// Reads the manifests committed since the last refresh.
    pub fn refresh(&mut self) -> Result<()> {
        let entries = self.root.list(&self.rolls)?;
        self.absorb(&entries)
    }

    /// Reads the committed manifests of a listing of the rolls folder not
    /// read before.
    fn absorb(&mut self, entries: &[switchyard_schemas::store::Entry]) -> Result<()> {
        for entry in entries {
            let name = file_name(&entry.rel);
            if !name.ends_with(".json") || self.read.contains(name) {
                continue;
            }
            let Some(m) = read_manifest(&self.root, &entry.rel)? else { continue };
            merge_offsets(&mut self.offsets, m.offsets);
            self.read.insert(name.to_string());
        }
        Ok(())
    }

    /// Highest durable offset per partition.
    pub fn offsets(&self) -> &Offsets {
        &self.offsets
    }

    /// True when the record at these coordinates is already durable.
    pub fn contains(&self, topic: &str, partition: i32, offset: i64) -> bool {
        // Avoid allocating a key on the hot path when nothing is durable yet.
        !self.offsets.is_empty() && self.offsets.get(&(topic.to_string(), partition)).is_some_and(|&m| offset <= m)
    }

    fn note(&mut self, roll_id: &str, offsets: &Offsets) {
        for (k, &v) in offsets {
            let e = self.offsets.entry(k.clone()).or_insert(v);
            *e = (*e).max(v);
        }
        self.read.insert(format!("{roll_id}.json"));
    }
}

fn micros_of(ts_ms: Option<i64>, fallback_us: i64) -> i64 {
    ts_ms.map_or(fallback_us, |ms| ms * 1000)
}

/// Rows by (day number, key): one of the group's timestamps (µs) and its rows.
type DayParts<'a, K, T> = BTreeMap<(i64, K), (i64, Vec<&'a T>)>;

/// Rows grouped by the day of their timestamp (µs) and `key`, in order. The
/// date is then formatted once per group, not per row.
fn by_day<'a, T, K: Ord>(rows: &'a [T], at: impl Fn(&'a T) -> (i64, K)) -> DayParts<'a, K, T> {
    const DAY_US: i64 = 86_400_000_000;
    let mut parts = DayParts::new();
    for r in rows {
        let (us, key) = at(r);
        parts.entry((us.div_euclid(DAY_US), key)).or_insert_with(|| (us, Vec::new())).1.push(r);
    }
    parts
}

/// Makes a partition value safe as a directory name.
fn path_safe(v: &str) -> String {
    v.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

/// The last component of a `/`-separated path.
fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

impl ParquetSink {
    /// Opens (creating) the tables under `root`, finishing or discarding any
    /// roll a crash interrupted.
    pub fn open(root: &TableRoot, roll_max_rows: usize, roll_interval: std::time::Duration) -> Result<Self> {
        Self::open_as(Writer::Results, root, roll_max_rows, roll_interval, false)
    }

    /// Opens the results writer for `delivery: exactly_once`: each roll is
    /// prepared, then committed or discarded with its Kafka transaction, and
    /// other writers' prepared rolls wait for [`ParquetSink::resolve_prepared`].
    pub fn open_transactional(root: &TableRoot, roll_max_rows: usize, roll_interval: Duration) -> Result<Self> {
        Self::open_as(Writer::Results, root, roll_max_rows, roll_interval, true)
    }

    /// Opens the writer of the `feedback` table (bad feedback goes to `dlq`),
    /// with its own roll manifests and offsets.
    pub fn open_feedback(root: &TableRoot, roll_max_rows: usize, roll_interval: std::time::Duration) -> Result<Self> {
        Self::open_as(Writer::Feedback, root, roll_max_rows, roll_interval, false)
    }

    /// Opens a writer of the `predictions` and `dlq` tables for one backfill
    /// run: its roll manifests (and so its checkpoint, the highest durable
    /// offset of every input) are its own, apart from the streaming
    /// pipeline's and from other runs' writing to the same tables.
    pub fn open_backfill(
        root: &TableRoot,
        run_id: &str,
        roll_max_rows: usize,
        roll_interval: std::time::Duration,
    ) -> Result<Self> {
        Self::open_as(Writer::Backfill { tag: backfill_tag(run_id) }, root, roll_max_rows, roll_interval, false)
    }

    fn open_as(
        writer: Writer,
        root: &TableRoot,
        roll_max_rows: usize,
        roll_interval: Duration,
        transactional: bool,
    ) -> Result<Self> {
        if let Some(dir) = root.local() {
            // Readers list the table folders even before the first roll.
            for d in [PREDICTIONS, DLQ, FEEDBACK, writer.rolls().as_str()] {
                let p = dir.join(d);
                std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        let writer_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let spool = match root.local() {
            Some(_) => None,
            None => Some(Spool::new(&writer_id)?),
        };
        let lease = Lease::take(root, &writer_id)?;
        let roll_id = new_roll_id(&writer.prefix(), &writer_id);
        let mut sink = Self {
            durable: DurableIndex::new(root.clone(), writer.rolls()),
            writer,
            root: root.clone(),
            spool,
            roll_max_rows: roll_max_rows.max(1),
            roll_interval,
            writer_id,
            lease,
            roll_id,
            open: BTreeMap::new(),
            pending_offsets: Offsets::new(),
            pending_rows: 0,
            roll_started: None,
            seq: 0,
            swept: Instant::now(),
            transactional,
        };
        sink.recover()?;
        Ok(sink)
    }

    /// Finishes what crashed writers left: committed rolls' temp files get
    /// their final names (whoever wrote them: the renames are idempotent,
    /// so finishing a live writer's roll beside it is safe); temp files of
    /// rolls that never committed are deleted once their writer's lease
    /// has run out (their offsets were never committed either: the source
    /// replays the rows). Prepared rolls wait for their transaction.
    fn recover(&mut self) -> Result<()> {
        self.swept = Instant::now();
        let rolls = self.writer.rolls();
        let mut committed = HashSet::new();
        let mut prepared = HashSet::new();
        let mut alive = HashMap::new();
        let listed = self.root.list(&rolls)?;
        for entry in &listed {
            let name = file_name(&entry.rel);
            let roll = name.split('.').next().unwrap_or_default();
            if name.ends_with(".json") {
                committed.insert(roll.to_string());
            } else if name.ends_with(".prepared") {
                prepared.insert(roll.to_string());
            } else if !self.is_alive(&mut alive, roll) {
                // A manifest that never reached its commit point.
                self.root.delete(&entry.rel)?;
            }
        }
        for table in self.writer.tables() {
            for entry in self.root.list(table)? {
                let Some((fin, roll)) = entry.rel.split_once(".tmp-") else { continue };
                if !self.writer.owns(roll) || prepared.contains(roll) {
                    continue;
                }
                if committed.contains(roll) {
                    finish_rename(&self.root, &entry.rel, fin)?;
                    tracing::info!(file = %self.root.describe(fin), roll, "finished an interrupted roll");
                } else if !self.is_alive(&mut alive, roll) {
                    self.root.delete(&entry.rel)?;
                    tracing::info!(file = %self.root.describe(&entry.rel), "removed a file of an uncommitted roll");
                }
            }
        }
        // Recovery commits no manifest: the listing above is current enough.
        self.durable.absorb(&listed)
    }

    /// Whether the writer of `roll` is alive (this one always is), asking
    /// each writer's lease once per recovery.
    fn is_alive(&self, alive: &mut HashMap<String, bool>, roll: &str) -> bool {
        let id = roll_writer(roll);
        id == self.writer_id || *alive.entry(id.to_string()).or_insert_with(|| writer_alive(&self.root, id))
    }

    /// Re-reads the roll manifests committed since the last look (by any
    /// writer of this kind): call when partitions are assigned.
    pub fn refresh_durable(&mut self) -> Result<()> {
        self.durable.refresh()
    }

    /// A copy of the durable index, for a stage that filters replays apart
    /// from the writer.
    pub fn durable_index(&self) -> DurableIndex {
        self.durable.clone()
    }

    /// This writer's id (the last part of its roll ids and its lease's name).
    pub fn writer_id(&self) -> &str {
        &self.writer_id
    }

    /// Drops the current roll: its open files are deleted and its offsets
    /// forgotten, so the rows are written again when the source replays
    /// them. For partitions lost without a clean hand-over (the group gave
    /// them to another worker), whose rows must not become durable here.
    pub fn abandon(&mut self) -> Result<u64> {
        let rows = self.pending_rows;
        for (_, f) in std::mem::take(&mut self.open) {
            drop(f.writer);
            match std::fs::remove_file(&f.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&f.path, e)),
            }
        }
        self.pending_offsets.clear();
        self.pending_rows = 0;
        self.roll_started = None;
        self.roll_id = new_roll_id(&self.writer.prefix(), &self.writer_id);
        Ok(rows)
    }

    /// The highest durable offsets of a backfill run's committed rolls under
    /// `root` (its checkpoint), read without opening a writer.
    pub fn backfill_offsets(root: &TableRoot, run_id: &str) -> Result<Offsets> {
        let writer = Writer::Backfill { tag: backfill_tag(run_id) };
        let mut durable = DurableIndex::new(root.clone(), writer.rolls());
        durable.refresh()?;
        Ok(durable.offsets)
    }

    /// The table root it writes under.
    pub fn root(&self) -> &TableRoot {
        &self.root
    }

    /// Highest durable offset per partition, from every committed roll read.
    pub fn durable_offsets(&self) -> &Offsets {
        self.durable.offsets()
    }

    /// True when the record at these coordinates is already durable (a replay).
    pub fn is_durable(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.durable.contains(topic, partition, offset)
    }

    /// Records that offsets up to these are covered by the current roll.
    pub fn note_offsets(&mut self, offsets: &Offsets) {
        for (k, &v) in offsets {
            let e = self.pending_offsets.entry(k.clone()).or_insert(v);
            *e = (*e).max(v);
        }
        self.roll_started.get_or_insert_with(Instant::now);
    }

    fn writer_for(&mut self, rel_dir: String, schema: arrow::datatypes::SchemaRef) -> Result<&mut OpenFile> {
        if !self.open.contains_key(&rel_dir) {
            self.seq += 1;
            let final_rel = format!("{rel_dir}/part-{}-{:04}.parquet", self.roll_id, self.seq);
            let tmp_rel = tmp_rel(&final_rel, &self.roll_id);
            let path = match (&self.spool, self.root.local()) {
                (Some(spool), _) => spool.dir.join(format!("{:06}.parquet", self.seq)),
                (None, Some(root)) => {
                    let dir = root.join(&rel_dir);
                    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                    root.join(&tmp_rel)
                }
                (None, None) => return Err(Error::Internal("an object store root without a spool".into())),
            };
            let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
            // Random ids, one per row: min/max statistics prune nothing and
            // a dictionary never repeats a value, yet both cost a hash or a
            // comparison per row.
            let mut props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(Some(64 * 1024));
            for column in ["lineage_id", "traceparent"] {
                let column = parquet::schema::types::ColumnPath::from(column);
                props = props
                    .set_column_statistics_enabled(column.clone(), parquet::file::properties::EnabledStatistics::None)
                    .set_column_dictionary_enabled(column, false);
            }
            let props = props.build();
            let writer = ArrowWriter::try_new(file, schema, Some(props))?;
            let table = [PREDICTIONS, DLQ, FEEDBACK].into_iter().find(|t| rel_dir.split('/').next() == Some(*t));
            let table = table.unwrap_or("other");
            self.open.insert(rel_dir.clone(), OpenFile { path, tmp_rel, final_rel, writer, table, rows: 0 });
        }
        Ok(self.open.get_mut(&rel_dir).expect("inserted"))
    }

    /// Appends predictions to the current roll (partitioned by date and model version).
    pub fn write_predictions(&mut self, rows: &[Prediction]) -> Result<()> {
        let parts = by_day(rows, |p| {
            let source = &p.lineage.source;
            (micros_of(source.kafka_timestamp_ms, source.ingest_time_us), p.lineage.model.version.as_str())
        });
        for ((_, version), (us, rows)) in parts {
            let dir = format!("{PREDICTIONS}/date={}/model_version={}", date_partition(us), path_safe(version));
            let batch = predictions_batch(&rows)?;
            self.write_batch(dir, batch)?;
        }
        Ok(())
    }

    /// Appends DLQ records to the current roll (partitioned by date).
    pub fn write_dlq(&mut self, rows: &[DlqRecord]) -> Result<()> {
        let parts = by_day(rows, |r| (micros_of(r.source.kafka_timestamp_ms, r.source.ingest_time_us), ()));
        for (_, (us, rows)) in parts {
            let dir = format!("{DLQ}/date={}", date_partition(us));
            let batch = dlq_batch(&rows)?;
            self.write_batch(dir, batch)?;
        }
        Ok(())
    }

    /// Appends feedback to the current roll (partitioned by the date of
    /// `observed_time`).
    pub fn write_feedback(&mut self, rows: &[Feedback]) -> Result<()> {
        for (_, (us, rows)) in by_day(rows, |r| (r.observed_time_us, ())) {
            let dir = format!("{FEEDBACK}/date={}", date_partition(us));
            let batch = feedback_batch(&rows)?;
            self.write_batch(dir, batch)?;
        }
        Ok(())
    }

    fn write_batch(&mut self, dir: String, batch: RecordBatch) -> Result<()> {
        self.pending_rows += batch.num_rows() as u64;
        self.roll_started.get_or_insert_with(Instant::now);
        let file = self.writer_for(dir, batch.schema())?;
        file.writer.write(&batch)?;
        file.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// True when the current roll is due (size or age).
    pub fn roll_due(&self) -> bool {
        self.pending_rows >= self.roll_max_rows as u64
            || self.roll_started.is_some_and(|t| t.elapsed() >= self.roll_interval)
    }

    /// True when nothing is waiting to be made durable.
    pub fn is_idle(&self) -> bool {
        self.pending_rows == 0 && self.pending_offsets.is_empty()
    }

    /// Makes the current roll durable and returns what it covered. After this
    /// returns, the covered source offsets may be committed.
    pub fn roll(&mut self) -> Result<RollSummary> {
        match self.prepare_roll()? {
            None => Ok(RollSummary::default()),
            Some(p) => self.commit_prepared(p),
        }
    }

    /// The first half of a roll: closes and syncs the open files and writes
    /// the manifest as `<id>.prepared`, which readers ignore. Then exactly
    /// one of [`ParquetSink::commit_prepared`] (the roll's Kafka transaction
    /// committed) or [`ParquetSink::discard_prepared`] (it aborted). `None`
    /// when nothing is pending.
    pub fn prepare_roll(&mut self) -> Result<Option<PreparedRoll>> {
        self.cut_roll()?.map(RollJob::prepare).transpose()
    }

    /// Cuts the current roll off (quick: no file is touched): writes go on
    /// into the next roll's files while [`RollJob::prepare`] closes and
    /// syncs this one's, on any thread. Prepare and commit the rolls in the
    /// order they were cut. `None` when nothing is pending.
    pub fn cut_roll(&mut self) -> Result<Option<RollJob>> {
        if self.is_idle() {
            self.roll_started = None;
            return Ok(None);
        }
        if !self.lease.held() {
            // Another writer may already have taken this one for dead and
            // deleted its open files: committing could record rows it lost.
            return Err(Error::Internal(format!(
                "the writer lease {} was not renewed for {} s; not committing a roll whose files may be gone",
                self.root.describe(&self.lease.rel),
                LEASE_TIMEOUT.as_secs()
            )));
        }
        let roll_id = std::mem::replace(&mut self.roll_id, new_roll_id(&self.writer.prefix(), &self.writer_id));
        let open = std::mem::take(&mut self.open);
        let offsets = std::mem::take(&mut self.pending_offsets);
        let rows = std::mem::take(&mut self.pending_rows);
        self.roll_started = None;
        let manifest = format!("{}/{roll_id}.{}", self.writer.rolls(), self.prepared_ext());
        Ok(Some(RollJob {
            roll_id,
            open: open.into_values().collect(),
            offsets,
            rows,
            root: self.root.clone(),
            spooled: self.spool.is_some(),
            manifest,
        }))
    }

    /// Commits a prepared roll: its manifest becomes `<id>.json` (the
    /// commit point), then its files get their final names.
    pub fn commit_prepared(&mut self, p: PreparedRoll) -> Result<RollSummary> {
        let PreparedRoll { roll_id, files, tmps, written, offsets, rows } = p;
        let rolls = self.writer.rolls();
        let prepared = format!("{rolls}/{roll_id}.{}", self.prepared_ext());
        self.root.rename(&prepared, &format!("{rolls}/{roll_id}.json"))?;
        for (tmp, rel) in tmps.iter().zip(&files) {
            finish_rename(&self.root, tmp, rel)?;
        }
        self.durable.note(&roll_id, &offsets);
        m::ROLLS.counter([]).increment(1);
        for (table, rows, bytes) in written {
            m::PARQUET_FILES.counter([("table", table.into())]).increment(1);
            m::PARQUET_ROWS.counter([("table", table.into())]).increment(rows);
            m::PARQUET_BYTES.counter([("table", table.into())]).increment(bytes);
        }
        let summary = RollSummary { rows, files: files.len(), offsets };
        if self.swept.elapsed() >= LEASE_TIMEOUT {
            // Writers that died since: finish their committed rolls, drop
            // their uncommitted files.
            self.recover()?;
        }
        Ok(summary)
    }

    /// Drops a prepared roll whose transaction aborted: its files and
    /// manifest are deleted; the source must replay its records.
    pub fn discard_prepared(&mut self, p: PreparedRoll) -> Result<()> {
        let manifest = format!("{}/{}.{}", self.writer.rolls(), p.roll_id, self.prepared_ext());
        discard(&self.root, &manifest, &p.tmps)
    }

    /// The extension of a prepared manifest: `prepared` when a Kafka
    /// transaction decides it (kept by recovery until settled), else
    /// `json.tmp` (a dead writer's is deleted: it never reached its commit
    /// point).
    fn prepared_ext(&self) -> &'static str {
        if self.transactional {
            "prepared"
        } else {
            "json.tmp"
        }
    }

    /// Settles other writers' prepared rolls that cover any of `assigned`
    /// (partitions just assigned to this worker), by the group's
    /// `committed` offsets (next offset to read): a roll whose offsets the
    /// group committed — its transaction committed — is committed here;
    /// one it did not is deleted (its transaction aborted or never
    /// committed, and its records are read again). Returns how many of
    /// each.
    pub fn resolve_prepared(
        &mut self,
        assigned: &[(String, i32)],
        committed: &HashMap<(String, i32), i64>,
    ) -> Result<(usize, usize)> {
        let rolls = self.writer.rolls();
        let (mut kept, mut dropped) = (0, 0);
        let entries = self.root.list(&rolls)?;
        let names: HashSet<&str> = entries.iter().map(|e| file_name(&e.rel)).collect();
        for entry in &entries {
            let Some(roll) = file_name(&entry.rel).strip_suffix(".prepared") else { continue };
            let fin = format!("{rolls}/{roll}.json");
            if names.contains(format!("{roll}.json").as_str()) {
                // Committed, but the prepared copy outlived a crash (an
                // object store's rename is a copy, then a delete).
                self.root.delete(&entry.rel)?;
                continue;
            }
            let Some(m) = read_manifest(&self.root, &entry.rel)? else { continue };
            if roll_writer(&m.roll_id) == self.writer_id {
                continue;
            }
            let Some(o) = m.offsets.iter().find(|o| assigned.iter().any(|(t, p)| *t == o.topic && *p == o.partition))
            else {
                continue;
            };
            let done = committed.get(&(o.topic.clone(), o.partition)).is_some_and(|&c| c > o.max_offset);
            let tmps: Vec<String> = m.files.iter().map(|f| tmp_rel(f, &m.roll_id)).collect();
            if done {
                finish_rename(&self.root, &entry.rel, &fin)?;
                for (tmp, rel) in tmps.iter().zip(&m.files) {
                    finish_rename(&self.root, tmp, rel)?;
                }
                tracing::info!(roll = %m.roll_id, "committed a prepared roll whose transaction committed");
                kept += 1;
            } else {
                discard(&self.root, &entry.rel, &tmps)?;
                tracing::info!(roll = %m.roll_id, "dropped a prepared roll whose transaction did not commit");
                dropped += 1;
            }
        }
        self.durable.refresh()?;
        Ok((kept, dropped))
    }
}

/// A roll cut off by [`ParquetSink::cut_roll`]: its files still open.
pub struct RollJob {
    roll_id: String,
    open: Vec<OpenFile>,
    offsets: Offsets,
    rows: u64,
    root: TableRoot,
    /// Open files are in the spool folder (an object store root).
    spooled: bool,
    /// Where its manifest goes, as prepared.
    manifest: String,
}

impl RollJob {
    /// Closes and syncs the roll's files (uploading them under their temp
    /// names to an object store) and writes its manifest as prepared;
    /// blocking. [`ParquetSink::commit_prepared`] then commits it.
    pub fn prepare(self) -> Result<PreparedRoll> {
        let RollJob { roll_id, open, offsets, rows, root, spooled, manifest } = self;
        let mut files = Vec::with_capacity(open.len());
        let mut tmps = Vec::with_capacity(open.len());
        let mut written = Vec::with_capacity(open.len());
        for f in open {
            let file = f.writer.into_inner()?;
            file.sync_all().map_err(|e| Error::io(&f.path, e))?;
            if !f.path.exists() {
                return Err(Error::Internal(format!("{}: open file of this roll was deleted", f.path.display())));
            }
            let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            drop(file);
            if spooled {
                // Up under its temp name, which no reader lists.
                root.upload(&f.path, &f.tmp_rel)?;
                let _ = std::fs::remove_file(&f.path);
            }
            written.push((f.table, f.rows, bytes));
            files.push(f.final_rel);
            tmps.push(f.tmp_rel);
        }
        let record = RollManifest {
            roll_id: roll_id.clone(),
            created_us: now_us(),
            files: files.clone(),
            offsets: offsets
                .iter()
                .map(|((t, p), o)| RollOffset { topic: t.clone(), partition: *p, max_offset: *o })
                .collect(),
            rows,
        };
        root.put(&manifest, serde_json::to_vec(&record)?)?;
        Ok(PreparedRoll { roll_id, files, tmps, written, offsets, rows })
    }
}

/// A roll waiting for its Kafka transaction: [`ParquetSink::prepare_roll`].
#[derive(Debug)]
pub struct PreparedRoll {
    roll_id: String,
    files: Vec<String>,
    tmps: Vec<String>,
    written: Vec<(&'static str, u64, u64)>,
    offsets: Offsets,
    rows: u64,
}

impl PreparedRoll {
    /// The roll's id (its manifest is `_rolls/<id>.prepared`).
    pub fn id(&self) -> &str {
        &self.roll_id
    }

    /// Highest offset per partition the roll covers.
    pub fn offsets(&self) -> &Offsets {
        &self.offsets
    }

    /// Rows in the roll.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// Deletes a prepared roll's files, then its manifest.
fn discard(root: &TableRoot, manifest: &str, tmps: &[String]) -> Result<()> {
    for f in tmps {
        root.delete(f)?;
    }
    Ok(root.delete(manifest)?)
}

/// A roll manifest; `None` when it is gone (another writer's rename raced
/// with the listing).
fn read_manifest(root: &TableRoot, rel: &str) -> Result<Option<RollManifest>> {
    let Some(text) = root.get(rel)? else { return Ok(None) };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| Error::Internal(format!("{}: corrupt roll manifest: {e}", root.describe(rel))))
}

/// Gives a committed roll's file its final name; a rename another writer
/// finished first (recovery beside a live writer) is not an error.
fn finish_rename(root: &TableRoot, tmp: &str, fin: &str) -> Result<()> {
    match root.rename(tmp, fin) {
        Ok(()) => Ok(()),
        Err(switchyard_schemas::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && root.exists(fin) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn merge_offsets(durable: &mut Offsets, offsets: Vec<RollOffset>) {
    for o in offsets {
        keep_highest(durable, (o.topic, o.partition), o.max_offset);
    }
}

/// A fixed-length tag of a run id, for its roll folder and roll ids.
fn backfill_tag(run_id: &str) -> String {
    switchyard_schemas::sha256_hex(run_id.as_bytes())[..12].to_string()
}

/// The temp name of a roll's file: `<final>.tmp-<roll>`.
fn tmp_rel(fin: &str, roll_id: &str) -> String {
    format!("{fin}.tmp-{roll_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_schemas::{ErrorClass, Lineage, ModelRef, SourceCoords, Stage};

    fn pred(offset: i64, version: &str) -> Prediction {
        Prediction {
            key: format!("k{offset}"),
            score: Some(0.25),
            label: Some(0),
            outputs: None,
            features: vec![1.0, 2.0],
            latency_us: 10,
            lineage: Lineage {
                lineage_id: format!("l{offset}"),
                source: SourceCoords {
                    topic: "tx".into(),
                    offset,
                    kafka_timestamp_ms: Some(1_767_225_600_000),
                    ..Default::default()
                },
                model: ModelRef { name: "m".into(), version: version.into(), ..Default::default() },
                ..Default::default()
            },
        }
    }

    fn parquet_files(root: &Path) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out)
                } else {
                    out.push(p)
                }
            }
        }
        let mut v = vec![];
        walk(root, &mut v);
        v.sort();
        v
    }

    /// As if the process was killed `ago`: open files flushed and left, the
    /// lease no longer renewed since then.
    fn kill(mut s: ParquetSink, ago: Duration) {
        for f in s.open.values_mut() {
            f.writer.flush().unwrap();
        }
        s.lease.stop.store(true, Ordering::Relaxed);
        let lease = File::options().append(true).open(s.root.local().unwrap().join(&s.lease.rel)).unwrap();
        lease.set_modified(SystemTime::now() - ago).unwrap();
        std::mem::forget(s);
    }

    fn offsets(max: i64) -> Offsets {
        [(("tx".to_string(), 0), max)].into_iter().collect()
    }

    #[test]
    fn roll_writes_partitioned_files_and_records_offsets() {
        let t = tempfile::tempdir().unwrap();
        let mut s = ParquetSink::open(&t.path().into(), 10, std::time::Duration::from_secs(60)).unwrap();
        s.write_predictions(&[pred(0, "1"), pred(1, "2")]).unwrap();
        s.write_dlq(&[DlqRecord {
            run_id: String::new(),
            lineage_id: "d".into(),
            source: SourceCoords {
                topic: "tx".into(),
                partition: 0,
                offset: 2,
                kafka_timestamp_ms: None,
                ingest_time_us: 1_767_225_600_000_000,
            },
            key: None,
            payload: Some(b"{".to_vec()),
            headers: vec![],
            stage: Stage::Decode,
            error_class: ErrorClass::InvalidJson,
            message: "bad".into(),
            pipeline: "p".into(),
        }])
        .unwrap();
        s.note_offsets(&offsets(2));
        assert!(!s.is_durable("tx", 0, 2));
        let r = s.roll().unwrap();
        assert_eq!((r.rows, r.files), (3, 3));
        assert!(s.is_durable("tx", 0, 2) && !s.is_durable("tx", 0, 3));
        let names: Vec<String> = parquet_files(t.path())
            .iter()
            .map(|p| p.strip_prefix(t.path()).unwrap().to_string_lossy().into_owned())
            .filter(|p| p.ends_with(".parquet"))
            .map(|p| p.rsplit_once('/').unwrap().0.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "dlq/date=2026-01-01",
                "predictions/date=2026-01-01/model_version=1",
                "predictions/date=2026-01-01/model_version=2"
            ]
        );
        // A reopened sink knows what is durable.
        let s2 = ParquetSink::open(&t.path().into(), 10, std::time::Duration::from_secs(60)).unwrap();
        assert!(s2.is_durable("tx", 0, 1));
    }

    #[test]
    fn crash_before_commit_point_discards_and_after_it_rolls_forward() {
        let t = tempfile::tempdir().unwrap();
        // Crash before the manifest: temp files are orphans.
        {
            let mut s = ParquetSink::open(&t.path().into(), 10, std::time::Duration::from_secs(60)).unwrap();
            s.write_predictions(&[pred(0, "1")]).unwrap();
            s.note_offsets(&offsets(0));
            kill(s, Duration::from_secs(3600));
        }
        assert!(parquet_files(t.path()).iter().any(|p| p.to_string_lossy().contains(".tmp-")));
        let s = ParquetSink::open(&t.path().into(), 10, std::time::Duration::from_secs(60)).unwrap();
        assert!(!s.is_durable("tx", 0, 0));
        assert!(parquet_files(t.path()).iter().all(|p| !p.to_string_lossy().contains(".tmp-")), "orphans removed");
        drop(s);

        // Crash after the manifest but before the renames: rolled forward.
        let mut s = ParquetSink::open(&t.path().into(), 10, std::time::Duration::from_secs(60)).unwrap();
        s.write_predictions(&[pred(5, "1")]).unwrap();
        s.note_offsets(&offsets(5));
        s.roll().unwrap();
        let fin = parquet_files(t.path()).into_iter().find(|p| p.extension().is_some_and(|e| e == "parquet")).unwrap();
        let roll = std::fs::read_dir(t.path().join(ROLLS)).unwrap().next().unwrap().unwrap().path();
        let roll_id = roll.file_stem().unwrap().to_string_lossy().into_owned();
        std::fs::rename(&fin, format!("{}.tmp-{roll_id}", fin.display())).unwrap();
        let s = ParquetSink::open(&t.path().into(), 10, std::time::Duration::from_secs(60)).unwrap();
        assert!(fin.exists(), "rename finished on open");
        assert!(s.is_durable("tx", 0, 5));
    }

    #[test]
    fn writers_sharing_a_root_keep_each_others_open_files_until_the_lease_runs_out() {
        let t = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let open_files = || {
            parquet_files(&t.path().join(PREDICTIONS))
                .into_iter()
                .filter(|p| p.to_string_lossy().contains(".tmp-"))
                .count()
        };
        // A live writer with an open roll, and one killed a moment ago.
        let mut live = ParquetSink::open(&t.path().into(), 100, hour).unwrap();
        live.write_predictions(&[pred(0, "1")]).unwrap();
        live.note_offsets(&offsets(0));
        let mut recent = ParquetSink::open(&t.path().into(), 100, hour).unwrap();
        recent.write_predictions(&[pred(10, "1")]).unwrap();
        kill(recent, Duration::from_secs(1));
        assert_ne!(live.writer_id(), ParquetSink::open(&t.path().into(), 100, hour).unwrap().writer_id());
        assert_eq!(open_files(), 2, "a writer opening beside them deletes neither");

        // Once the killed writer's lease is older than the timeout, its open
        // file is an orphan; the live writer's is not.
        let mut old = ParquetSink::open(&t.path().into(), 100, hour).unwrap();
        old.write_predictions(&[pred(20, "1")]).unwrap();
        kill(old, LEASE_TIMEOUT + Duration::from_secs(1));
        assert_eq!(open_files(), 3);
        drop(ParquetSink::open(&t.path().into(), 100, hour).unwrap());
        assert_eq!(open_files(), 2, "only the expired writer's file is removed");

        // The live writer rolls; a second index sees it only after a refresh.
        let mut index = ParquetSink::open(&t.path().into(), 100, hour).unwrap().durable_index();
        live.roll().unwrap();
        assert!(!index.contains("tx", 0, 0));
        index.refresh().unwrap();
        assert!(index.contains("tx", 0, 0) && !index.contains("tx", 0, 1));
    }

    #[test]
    fn prepared_rolls_wait_for_their_transaction_and_are_settled_by_committed_offsets() {
        let t = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let prepared = || {
            std::fs::read_dir(t.path().join(ROLLS))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "prepared"))
                .count()
        };
        // Own transaction: committed, then one aborted.
        let mut s = ParquetSink::open_transactional(&t.path().into(), 100, hour).unwrap();
        s.write_predictions(&[pred(0, "1")]).unwrap();
        s.note_offsets(&offsets(0));
        let p = s.prepare_roll().unwrap().unwrap();
        assert_eq!((prepared(), s.is_durable("tx", 0, 0)), (1, false));
        s.commit_prepared(p).unwrap();
        assert_eq!((prepared(), s.is_durable("tx", 0, 0)), (0, true));
        s.write_predictions(&[pred(1, "1")]).unwrap();
        s.note_offsets(&offsets(1));
        let p = s.prepare_roll().unwrap().unwrap();
        s.discard_prepared(p).unwrap();
        assert_eq!((prepared(), s.is_durable("tx", 0, 1)), (0, false));

        // Two writers die with a roll prepared each (partitions 0 and 1).
        for (partition, offset) in [(0, 5), (1, 7)] {
            let mut w = ParquetSink::open_transactional(&t.path().into(), 100, hour).unwrap();
            let mut row = pred(offset, "1");
            row.lineage.source.partition = partition;
            w.write_predictions(&[row]).unwrap();
            w.note_offsets(&[(("tx".to_string(), partition), offset)].into_iter().collect());
            let p = w.prepare_roll().unwrap().unwrap();
            std::mem::forget(p);
            kill(w, LEASE_TIMEOUT * 2);
        }
        // Recovery, even by an at-least-once writer, keeps them.
        drop(ParquetSink::open(&t.path().into(), 100, hour).unwrap());
        let mut next = ParquetSink::open_transactional(&t.path().into(), 100, hour).unwrap();
        assert_eq!(prepared(), 2);
        // Partition 0's transaction committed (the group's offset is past
        // the roll), partition 1's did not.
        let committed: HashMap<(String, i32), i64> =
            [(("tx".to_string(), 0), 6), (("tx".to_string(), 1), 2)].into_iter().collect();
        let assigned = [("tx".to_string(), 0), ("tx".to_string(), 1)];
        assert_eq!(next.resolve_prepared(&assigned[..1], &committed).unwrap(), (1, 0));
        assert_eq!(next.resolve_prepared(&assigned, &committed).unwrap(), (0, 1));
        assert_eq!(prepared(), 0);
        assert!(next.is_durable("tx", 0, 5) && !next.is_durable("tx", 1, 7));
        let files = parquet_files(&t.path().join(PREDICTIONS));
        assert_eq!(files.iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).count(), 2);
        assert!(files.iter().all(|p| !p.to_string_lossy().contains(".tmp-")), "{files:?}");
    }

    #[test]
    fn abandon_drops_the_open_roll_and_its_offsets() {
        let t = tempfile::tempdir().unwrap();
        let mut s = ParquetSink::open(&t.path().into(), 100, Duration::from_secs(3600)).unwrap();
        s.write_predictions(&[pred(0, "1"), pred(1, "1")]).unwrap();
        s.note_offsets(&offsets(1));
        assert_eq!(s.abandon().unwrap(), 2);
        assert!(s.is_idle());
        assert!(parquet_files(&t.path().join(PREDICTIONS)).is_empty());
        s.write_predictions(&[pred(2, "1")]).unwrap();
        s.note_offsets(&offsets(2));
        assert_eq!(s.roll().unwrap().rows, 1);
        assert!(s.is_durable("tx", 0, 2));
    }

    #[test]
    fn roll_is_due_by_rows_or_age() {
        let t = tempfile::tempdir().unwrap();
        let mut s = ParquetSink::open(&t.path().into(), 2, std::time::Duration::from_millis(30)).unwrap();
        assert!(!s.roll_due());
        s.write_predictions(&[pred(0, "1")]).unwrap();
        assert!(!s.roll_due());
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert!(s.roll_due(), "by age");
        s.roll().unwrap();
        s.write_predictions(&[pred(1, "1"), pred(2, "1")]).unwrap();
        assert!(s.roll_due(), "by rows");
    }

    #[test]
    fn results_and_feedback_writers_share_a_root_without_touching_each_others_files() {
        let t = tempfile::tempdir().unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let fb = |offset: i64| switchyard_schemas::Feedback {
            lineage_id: None,
            key: Some(format!("k{offset}")),
            label: 1,
            observed_time_us: 1_767_225_600_000_000,
            source: "review".into(),
            feedback_topic: "fb".into(),
            feedback_partition: 0,
            feedback_offset: offset,
            ingest_time_us: 1_767_225_600_000_000,
        };
        // Both write; only the feedback writer rolls. Its reopening (a
        // restart) must not take the results writer's open files for orphans.
        let mut results = ParquetSink::open(&t.path().into(), 100, hour).unwrap();
        results.write_predictions(&[pred(0, "1")]).unwrap();
        results.note_offsets(&offsets(0));
        for f in results.open.values_mut() {
            f.writer.flush().unwrap();
        }
        let mut feedback = ParquetSink::open_feedback(&t.path().into(), 100, hour).unwrap();
        feedback.write_feedback(&[fb(0), fb(1)]).unwrap();
        feedback.note_offsets(&[(("fb".to_string(), 0), 1)].into_iter().collect());
        feedback.roll().unwrap();
        drop(ParquetSink::open_feedback(&t.path().into(), 100, hour).unwrap());
        let open_results = parquet_files(&t.path().join(PREDICTIONS));
        assert!(open_results.iter().any(|p| p.to_string_lossy().contains(".tmp-")), "{open_results:?}");

        // The results writer rolls on, and each knows only its own offsets.
        results.roll().unwrap();
        let r = ParquetSink::open(&t.path().into(), 100, hour).unwrap();
        let f = ParquetSink::open_feedback(&t.path().into(), 100, hour).unwrap();
        assert!(r.is_durable("tx", 0, 0) && !r.is_durable("fb", 0, 1));
        assert!(f.is_durable("fb", 0, 1) && !f.is_durable("tx", 0, 0));
        let files = parquet_files(t.path());
        assert!(files.iter().all(|p| !p.to_string_lossy().contains(".tmp-")), "{files:?}");
        let count = |table: &str| files.iter().filter(|p| p.starts_with(t.path().join(table))).count();
        assert_eq!((count(PREDICTIONS), count(FEEDBACK)), (1, 1));
    }

    #[test]
    fn backfill_runs_and_the_streaming_writer_keep_their_own_offsets_and_open_files() {
        let t = tempfile::tempdir().unwrap();
        let hour = std::time::Duration::from_secs(3600);
        // Run `a` writes and leaves its roll open (a crash); the streaming
        // writer and run `a-b` (whose id extends `a`'s) open beside it.
        let mut a = ParquetSink::open_backfill(&t.path().into(), "a", 100, hour).unwrap();
        a.write_predictions(&[pred(0, "1")]).unwrap();
        a.note_offsets(&offsets(0));
        for f in a.open.values_mut() {
            f.writer.flush().unwrap();
        }
        let mut ab = ParquetSink::open_backfill(&t.path().into(), "a-b", 100, hour).unwrap();
        ab.write_predictions(&[pred(5, "1")]).unwrap();
        ab.note_offsets(&offsets(5));
        ab.roll().unwrap();
        let mut streaming = ParquetSink::open(&t.path().into(), 100, hour).unwrap();
        streaming.roll().unwrap();
        let open = parquet_files(&t.path().join(PREDICTIONS));
        assert!(open.iter().any(|p| p.to_string_lossy().contains(".tmp-")), "run a's open file survives: {open:?}");
        a.roll().unwrap();

        assert_eq!(ParquetSink::backfill_offsets(&t.path().into(), "a").unwrap().get(&("tx".to_string(), 0)), Some(&0));
        assert_eq!(
            ParquetSink::backfill_offsets(&t.path().into(), "a-b").unwrap().get(&("tx".to_string(), 0)),
            Some(&5)
        );
        assert!(ParquetSink::backfill_offsets(&t.path().into(), "c").unwrap().is_empty());
        let s = ParquetSink::open(&t.path().into(), 100, hour).unwrap();
        assert!(!s.is_durable("tx", 0, 0), "a backfill's offsets are not the streaming pipeline's");
        assert_eq!(parquet_files(&t.path().join(PREDICTIONS)).len(), 2);
    }

    /// A root in `object_store`'s in-memory store: the object store code
    /// path (spool, upload, copy-then-delete renames) without a server.
    fn memory_root() -> TableRoot {
        TableRoot::in_store("memory://t", "tables", Arc::new(object_store::memory::InMemory::new()))
    }

    fn names(root: &TableRoot, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = root.list(dir).unwrap().into_iter().map(|e| e.rel).collect();
        v.sort();
        v
    }

    #[test]
    fn an_object_store_root_gets_the_same_rolls_and_readable_files() {
        let root = memory_root();
        let hour = Duration::from_secs(3600);
        let mut s = ParquetSink::open(&root, 100, hour).unwrap();
        s.write_predictions(&[pred(0, "1"), pred(1, "1"), pred(2, "2")]).unwrap();
        s.note_offsets(&offsets(2));
        assert!(names(&root, PREDICTIONS).is_empty(), "open files stay in the spool");
        let r = s.roll().unwrap();
        assert_eq!((r.rows, r.files), (3, 2));
        let files = names(&root, PREDICTIONS);
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files.iter().all(|f| f.ends_with(".parquet")), "{files:?}");
        let rolls = names(&root, ROLLS);
        assert!(rolls.len() == 1 && rolls[0].ends_with(".json"), "{rolls:?}");
        let bytes = root.get(&files[0]).unwrap().unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 2);
        let spool = s.spool.as_ref().unwrap().dir.clone();
        assert!(std::fs::read_dir(&spool).unwrap().next().is_none(), "uploaded files leave the spool");
        let reopened = ParquetSink::open(&root, 100, hour).unwrap();
        assert!(reopened.is_durable("tx", 0, 2) && !reopened.is_durable("tx", 0, 3));
        drop(s);
        assert!(!spool.exists(), "the spool goes with the writer");
        assert_eq!(names(&root, WRITERS).len(), 1, "a dropped writer gives up its lease");
    }

    #[test]
    fn on_an_object_store_a_crash_before_the_manifest_discards_and_after_it_rolls_forward() {
        let root = memory_root();
        let hour = Duration::from_secs(3600);
        let die = |s: ParquetSink| {
            s.lease.stop.store(true, Ordering::Relaxed);
            root.delete(&s.lease.rel).unwrap();
            std::mem::forget(s);
        };
        // Files uploaded, manifest not committed: orphans once the writer
        // is dead; a live writer beside them leaves them alone.
        let mut s = ParquetSink::open(&root, 100, hour).unwrap();
        s.write_predictions(&[pred(0, "1")]).unwrap();
        s.note_offsets(&offsets(0));
        let p = s.prepare_roll().unwrap().unwrap();
        let staged = names(&root, PREDICTIONS);
        assert!(staged.len() == 1 && staged[0].contains(".tmp-"), "{staged:?}");
        drop(ParquetSink::open(&root, 100, hour).unwrap());
        assert_eq!(names(&root, PREDICTIONS), staged, "the writer is alive");
        std::mem::forget(p);
        die(s);
        let s2 = ParquetSink::open(&root, 100, hour).unwrap();
        assert!(names(&root, PREDICTIONS).is_empty() && names(&root, ROLLS).is_empty());
        assert!(!s2.is_durable("tx", 0, 0));

        // Manifest committed, files not renamed: the next writer finishes.
        let mut s = ParquetSink::open(&root, 100, hour).unwrap();
        s.write_predictions(&[pred(5, "1")]).unwrap();
        s.note_offsets(&offsets(5));
        let p = s.prepare_roll().unwrap().unwrap();
        root.rename(&format!("{ROLLS}/{}.json.tmp", p.id()), &format!("{ROLLS}/{}.json", p.id())).unwrap();
        std::mem::forget(p);
        die(s);
        let s3 = ParquetSink::open(&root, 100, hour).unwrap();
        let files = names(&root, PREDICTIONS);
        assert!(files.len() == 1 && files[0].ends_with(".parquet"), "{files:?}");
        assert!(s3.is_durable("tx", 0, 5));
    }

    #[test]
    fn on_an_object_store_a_prepared_copy_left_beside_its_committed_manifest_is_removed() {
        let root = memory_root();
        let hour = Duration::from_secs(3600);
        let mut s = ParquetSink::open_transactional(&root, 100, hour).unwrap();
        s.write_predictions(&[pred(0, "1")]).unwrap();
        s.note_offsets(&offsets(0));
        let p = s.prepare_roll().unwrap().unwrap();
        let id = p.id().to_string();
        s.commit_prepared(p).unwrap();
        // As if the delete after the copy never happened.
        root.put(&format!("{ROLLS}/{id}.prepared"), root.get(&format!("{ROLLS}/{id}.json")).unwrap().unwrap()).unwrap();
        let mut next = ParquetSink::open_transactional(&root, 100, hour).unwrap();
        let assigned = [("tx".to_string(), 0)];
        assert_eq!(next.resolve_prepared(&assigned, &HashMap::new()).unwrap(), (0, 0));
        assert_eq!(names(&root, ROLLS), [format!("{ROLLS}/{id}.json")]);
        assert_eq!(names(&root, PREDICTIONS).len(), 1);
        assert!(next.is_durable("tx", 0, 0));
    }
}
