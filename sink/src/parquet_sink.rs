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
//! id, which ends each of its roll ids, and a lease file `_writers/<id>` whose
//! modification time a background thread renews every few seconds. Recovery
//! rolls forward any committed roll (renames are idempotent) but deletes the
//! open files of an uncommitted roll only when its writer's lease is gone or
//! older than [`LEASE_TIMEOUT`]: a live worker's open files are never touched.
//! Workers that take over partitions in a rebalance re-read the manifests
//! ([`DurableIndex::refresh`]) to learn what the previous owner made durable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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
    tmp: PathBuf,
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
    root: PathBuf,
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

/// A writer's lease: a file under `_writers/` whose modification time a
/// background thread renews; removed when the writer is dropped.
struct Lease {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// When the lease was last renewed (by the thread), for the check before
    /// each roll's commit point.
    renewed: Arc<std::sync::Mutex<Instant>>,
}

impl Lease {
    fn take(root: &Path, writer: &str) -> Result<Self> {
        let dir = root.join(WRITERS);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(writer);
        let host = hostname();
        std::fs::write(&path, format!("{host}/{}\n", std::process::id())).map_err(|e| Error::io(&path, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let renewed = Arc::new(std::sync::Mutex::new(Instant::now()));
        let (p, s, r) = (path.clone(), stop.clone(), renewed.clone());
        std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::park_timeout(LEASE_RENEW);
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    let ok =
                        File::options().append(true).open(&p).and_then(|f| f.set_modified(SystemTime::now())).is_ok();
                    if ok {
                        if let Ok(mut r) = r.lock() {
                            *r = Instant::now();
                        }
                    } else {
                        tracing::warn!(lease = %p.display(), "could not renew the writer lease");
                    }
                }
            })
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self { path, stop, renewed })
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
        let _ = std::fs::remove_file(&self.path);
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
/// no longer exists (a worker killed here is known dead at once).
fn writer_alive(root: &Path, id: &str) -> bool {
    let path = root.join(WRITERS).join(id);
    let Ok(meta) = std::fs::metadata(&path) else { return false };
    let fresh = meta.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age < LEASE_TIMEOUT);
    if !fresh {
        return false;
    }
    let owner = std::fs::read_to_string(&path).unwrap_or_default();
    match owner.trim().rsplit_once('/') {
        Some((host, pid)) if host == hostname() && pid.parse::<u32>().is_ok() => {
            Path::new("/proc").join(pid).exists() || !Path::new("/proc/self").exists()
        }
        _ => true,
    }
}

/// The highest durable source offset per partition of one writer kind's
/// committed rolls, kept up to date by re-reading only manifests not read
/// before. A worker refreshes it when partitions are assigned to it, so it
/// skips what their previous owner made durable.
#[derive(Debug, Clone)]
pub struct DurableIndex {
    rolls: PathBuf,
    read: HashSet<String>,
    offsets: Offsets,
}

impl DurableIndex {
    fn new(rolls: PathBuf) -> Self {
        Self { rolls, read: HashSet::new(), offsets: Offsets::new() }
    }

    /// Reads the manifests committed since the last refresh.
    pub fn refresh(&mut self) -> Result<()> {
        let Ok(rd) = std::fs::read_dir(&self.rolls) else { return Ok(()) };
        for entry in rd {
            let path = entry.map_err(|e| Error::io(&self.rolls, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).filter(|n| n.ends_with(".json")) else {
                continue;
            };
            if self.read.contains(name) {
                continue;
            }
            let m = read_manifest(&path)?;
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

fn date_of(ts_ms: Option<i64>, fallback_us: i64) -> String {
    date_partition(ts_ms.map_or(fallback_us, |ms| ms * 1000))
}

/// Makes a partition value safe as a directory name.
fn path_safe(v: &str) -> String {
    v.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

fn sync_dir(dir: &Path) {
    // Directory fsync makes the rename durable; not all filesystems allow it.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl ParquetSink {
    /// Opens (creating) the tables under `root`, finishing or discarding any
    /// roll a crash interrupted.
    pub fn open(root: &Path, roll_max_rows: usize, roll_interval: std::time::Duration) -> Result<Self> {
        Self::open_as(Writer::Results, root, roll_max_rows, roll_interval, false)
    }

    /// Opens the results writer for `delivery: exactly_once`: each roll is
    /// prepared, then committed or discarded with its Kafka transaction, and
    /// other writers' prepared rolls wait for [`ParquetSink::resolve_prepared`].
    pub fn open_transactional(root: &Path, roll_max_rows: usize, roll_interval: Duration) -> Result<Self> {
        Self::open_as(Writer::Results, root, roll_max_rows, roll_interval, true)
    }

    /// Opens the writer of the `feedback` table (bad feedback goes to `dlq`),
    /// with its own roll manifests and offsets.
    pub fn open_feedback(root: &Path, roll_max_rows: usize, roll_interval: std::time::Duration) -> Result<Self> {
        Self::open_as(Writer::Feedback, root, roll_max_rows, roll_interval, false)
    }

    /// Opens a writer of the `predictions` and `dlq` tables for one backfill
    /// run: its roll manifests (and so its checkpoint, the highest durable
    /// offset of every input) are its own, apart from the streaming
    /// pipeline's and from other runs' writing to the same tables.
    pub fn open_backfill(
        root: &Path,
        run_id: &str,
        roll_max_rows: usize,
        roll_interval: std::time::Duration,
    ) -> Result<Self> {
        Self::open_as(Writer::Backfill { tag: backfill_tag(run_id) }, root, roll_max_rows, roll_interval, false)
    }

    fn open_as(
        writer: Writer,
        root: &Path,
        roll_max_rows: usize,
        roll_interval: Duration,
        transactional: bool,
    ) -> Result<Self> {
        for d in [PREDICTIONS, DLQ, FEEDBACK, writer.rolls().as_str()] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
        let writer_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let lease = Lease::take(root, &writer_id)?;
        let roll_id = new_roll_id(&writer.prefix(), &writer_id);
        let mut sink = Self {
            durable: DurableIndex::new(root.join(writer.rolls())),
            writer,
            root: root.to_path_buf(),
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

    fn recover(&mut self) -> Result<()> {
        let rolls = self.root.join(self.writer.rolls());
        let mut committed = HashSet::new();
        self.swept = Instant::now();
        let (manifests, prepared) = committed_rolls(&self.root, &rolls)?;
        // A prepared roll's files wait for its transaction's outcome.
        committed.extend(prepared);
        for m in manifests {
            // Committed rolls are finished whoever wrote them: the renames are
            // idempotent, so finishing a live writer's roll beside it is safe.
            for f in &m.files {
                let fin = self.root.join(f);
                let tmp = tmp_path(&fin, &m.roll_id);
                if !fin.exists() && tmp.exists() {
                    finish_rename(&tmp, &fin)?;
                    tracing::info!(file = %fin.display(), roll = %m.roll_id, "finished an interrupted roll");
                } else if !fin.exists() {
                    tracing::warn!(file = %fin.display(), roll = %m.roll_id, "file of a committed roll is missing");
                }
            }
            committed.insert(m.roll_id);
        }
        self.durable.refresh()?;
        // Temp files of rolls that never committed hold rows whose offsets were
        // never committed either: the source replays them, so drop the files —
        // but only those of writers whose lease has run out.
        let mut alive = HashMap::new();
        for table in self.writer.tables() {
            remove_orphans(&self.root, &self.root.join(table), &committed, &self.writer, &mut alive)?;
        }
        Ok(())
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
            match std::fs::remove_file(&f.tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&f.tmp, e)),
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
    pub fn backfill_offsets(root: &Path, run_id: &str) -> Result<Offsets> {
        let writer = Writer::Backfill { tag: backfill_tag(run_id) };
        let rolls = root.join(writer.rolls());
        let mut durable = DurableIndex::new(rolls);
        durable.refresh()?;
        Ok(durable.offsets)
    }

    /// The table root it writes under.
    pub fn root(&self) -> &Path {
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
            let dir = self.root.join(&rel_dir);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            self.seq += 1;
            let final_rel = format!("{rel_dir}/part-{}-{:04}.parquet", self.roll_id, self.seq);
            let tmp = tmp_path(&self.root.join(&final_rel), &self.roll_id);
            let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(Some(64 * 1024))
                .build();
            let writer = ArrowWriter::try_new(file, schema, Some(props))?;
            let table = [PREDICTIONS, DLQ, FEEDBACK].into_iter().find(|t| rel_dir.split('/').next() == Some(*t));
            let table = table.unwrap_or("other");
            self.open.insert(rel_dir.clone(), OpenFile { tmp, final_rel, writer, table, rows: 0 });
        }
        Ok(self.open.get_mut(&rel_dir).expect("inserted"))
    }

    /// Appends predictions to the current roll (partitioned by date and model version).
    pub fn write_predictions(&mut self, rows: &[Prediction]) -> Result<()> {
        let mut parts: BTreeMap<String, Vec<&Prediction>> = BTreeMap::new();
        for p in rows {
            let dir = format!(
                "{PREDICTIONS}/date={}/model_version={}",
                date_of(p.lineage.source.kafka_timestamp_ms, p.lineage.source.ingest_time_us),
                path_safe(&p.lineage.model.version)
            );
            parts.entry(dir).or_default().push(p);
        }
        for (dir, rows) in parts {
            let batch = predictions_batch(&rows)?;
            self.write_batch(dir, batch)?;
        }
        Ok(())
    }

    /// Appends DLQ records to the current roll (partitioned by date).
    pub fn write_dlq(&mut self, rows: &[DlqRecord]) -> Result<()> {
        let mut parts: BTreeMap<String, Vec<&DlqRecord>> = BTreeMap::new();
        for r in rows {
            parts
                .entry(format!("{DLQ}/date={}", date_of(r.source.kafka_timestamp_ms, r.source.ingest_time_us)))
                .or_default()
                .push(r);
        }
        for (dir, rows) in parts {
            let batch = dlq_batch(&rows)?;
            self.write_batch(dir, batch)?;
        }
        Ok(())
    }

    /// Appends feedback to the current roll (partitioned by the date of
    /// `observed_time`).
    pub fn write_feedback(&mut self, rows: &[Feedback]) -> Result<()> {
        let mut parts: BTreeMap<String, Vec<&Feedback>> = BTreeMap::new();
        for r in rows {
            let dir = format!("{}/date={}", FEEDBACK, date_of(None, r.observed_time_us));
            parts.entry(dir).or_default().push(r);
        }
        for (dir, rows) in parts {
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
        if self.is_idle() {
            self.roll_started = None;
            return Ok(None);
        }
        if !self.lease.held() {
            // Another writer may already have taken this one for dead and
            // deleted its open files: committing could record rows it lost.
            return Err(Error::Internal(format!(
                "the writer lease {} was not renewed for {} s; not committing a roll whose files may be gone",
                self.lease.path.display(),
                LEASE_TIMEOUT.as_secs()
            )));
        }
        let roll_id = std::mem::replace(&mut self.roll_id, new_roll_id(&self.writer.prefix(), &self.writer_id));
        let open = std::mem::take(&mut self.open);
        let mut files = Vec::with_capacity(open.len());
        let mut tmps = Vec::with_capacity(open.len());
        let mut written = Vec::with_capacity(open.len());
        for (_, f) in open {
            let file = f.writer.into_inner()?;
            file.sync_all().map_err(|e| Error::io(&f.tmp, e))?;
            if !f.tmp.exists() {
                return Err(Error::Internal(format!("{}: open file of this roll was deleted", f.tmp.display())));
            }
            let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            written.push((f.table, f.rows, bytes));
            files.push(f.final_rel);
            tmps.push(f.tmp);
        }
        let offsets = std::mem::take(&mut self.pending_offsets);
        let rows = std::mem::take(&mut self.pending_rows);
        self.roll_started = None;
        let manifest = RollManifest {
            roll_id: roll_id.clone(),
            created_us: now_us(),
            files: files.clone(),
            offsets: offsets
                .iter()
                .map(|((t, p), o)| RollOffset { topic: t.clone(), partition: *p, max_offset: *o })
                .collect(),
            rows,
        };
        let rolls = self.root.join(self.writer.rolls());
        let prepared = rolls.join(format!("{roll_id}.{}", self.prepared_ext()));
        let tmp = rolls.join(format!("{roll_id}.prepared.tmp"));
        {
            let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            serde_json::to_writer(&mut f, &manifest)?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &prepared).map_err(|e| Error::io(&prepared, e))?;
        Ok(Some(PreparedRoll { roll_id, files, tmps, written, offsets, rows }))
    }

    /// Commits a prepared roll: its manifest becomes `<id>.json` (the
    /// commit point), then its files get their final names.
    pub fn commit_prepared(&mut self, p: PreparedRoll) -> Result<RollSummary> {
        let PreparedRoll { roll_id, files, tmps, written, offsets, rows } = p;
        let rolls = self.root.join(self.writer.rolls());
        let prepared = rolls.join(format!("{roll_id}.{}", self.prepared_ext()));
        let fin = rolls.join(format!("{roll_id}.json"));
        std::fs::rename(&prepared, &fin).map_err(|e| Error::io(&fin, e))?;
        sync_dir(&rolls);
        for (tmp, rel) in tmps.iter().zip(&files) {
            let fin = self.root.join(rel);
            finish_rename(tmp, &fin)?;
            if let Some(dir) = fin.parent() {
                sync_dir(dir);
            }
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
        let rolls = self.root.join(self.writer.rolls());
        discard(&rolls.join(format!("{}.{}", p.roll_id, self.prepared_ext())), &p.tmps)
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
        let rolls = self.root.join(self.writer.rolls());
        let (mut kept, mut dropped) = (0, 0);
        let Ok(rd) = std::fs::read_dir(&rolls) else { return Ok((0, 0)) };
        for entry in rd {
            let path = entry.map_err(|e| Error::io(&rolls, e))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("prepared") {
                continue;
            }
            let m = match read_manifest(&path) {
                Ok(m) => m,
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if roll_writer(&m.roll_id) == self.writer_id {
                continue;
            }
            let Some(o) = m.offsets.iter().find(|o| assigned.iter().any(|(t, p)| *t == o.topic && *p == o.partition))
            else {
                continue;
            };
            let done = committed.get(&(o.topic.clone(), o.partition)).is_some_and(|&c| c > o.max_offset);
            let tmps: Vec<PathBuf> = m.files.iter().map(|f| tmp_path(&self.root.join(f), &m.roll_id)).collect();
            if done {
                let fin = rolls.join(format!("{}.json", m.roll_id));
                finish_rename(&path, &fin)?;
                for (tmp, rel) in tmps.iter().zip(&m.files) {
                    let fin = self.root.join(rel);
                    if tmp.exists() {
                        finish_rename(tmp, &fin)?;
                    }
                }
                tracing::info!(roll = %m.roll_id, "committed a prepared roll whose transaction committed");
                kept += 1;
            } else {
                discard(&path, &tmps)?;
                tracing::info!(roll = %m.roll_id, "dropped a prepared roll whose transaction did not commit");
                dropped += 1;
            }
        }
        self.durable.refresh()?;
        Ok((kept, dropped))
    }
}

/// A roll waiting for its Kafka transaction: [`ParquetSink::prepare_roll`].
#[derive(Debug)]
pub struct PreparedRoll {
    roll_id: String,
    files: Vec<String>,
    tmps: Vec<PathBuf>,
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
fn discard(manifest: &Path, tmps: &[PathBuf]) -> Result<()> {
    for f in tmps.iter().map(PathBuf::as_path).chain([manifest]) {
        match std::fs::remove_file(f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(f, e)),
        }
    }
    Ok(())
}

/// The committed roll manifests in `rolls`, and the ids of prepared rolls
/// (kept: their Kafka transaction's outcome settles them). Other manifests
/// of dead writers that never reached their commit point are deleted.
fn committed_rolls(root: &Path, rolls: &Path) -> Result<(Vec<RollManifest>, HashSet<String>)> {
    let mut out = Vec::new();
    let mut prepared = HashSet::new();
    for entry in std::fs::read_dir(rolls).map_err(|e| Error::io(rolls, e))? {
        let path = entry.map_err(|e| Error::io(rolls, e))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let roll = name.split('.').next().unwrap_or_default();
            if name.ends_with(".prepared") {
                prepared.insert(roll.to_string());
            } else if path.is_file() && !writer_alive(root, roll_writer(roll)) {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        match read_manifest(&path) {
            Ok(m) => out.push(m),
            // Another writer's manifest rename can race with the listing.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok((out, prepared))
}

fn read_manifest(path: &Path) -> Result<RollManifest> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::Internal(format!("{}: corrupt roll manifest: {e}", path.display())))
}

/// Renames a committed roll's file to its final name; a rename another
/// writer finished first (recovery beside a live writer) is not an error.
fn finish_rename(tmp: &Path, fin: &Path) -> Result<()> {
    match std::fs::rename(tmp, fin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && fin.exists() => Ok(()),
        Err(e) => Err(Error::io(tmp, e)),
    }
}

fn merge_offsets(durable: &mut Offsets, offsets: Vec<RollOffset>) {
    for o in offsets {
        let e = durable.entry((o.topic, o.partition)).or_insert(o.max_offset);
        *e = (*e).max(o.max_offset);
    }
}

/// A fixed-length tag of a run id, for its roll folder and roll ids.
fn backfill_tag(run_id: &str) -> String {
    switchyard_schemas::sha256_hex(run_id.as_bytes())[..12].to_string()
}

fn tmp_path(fin: &Path, roll_id: &str) -> PathBuf {
    let mut s = fin.as_os_str().to_owned();
    s.push(format!(".tmp-{roll_id}"));
    PathBuf::from(s)
}

fn remove_orphans(
    root: &Path,
    dir: &Path,
    committed: &HashSet<String>,
    writer: &Writer,
    alive: &mut HashMap<String, bool>,
) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in rd {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            remove_orphans(root, &path, committed, writer, alive)?;
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some((_, roll)) = name.split_once(".tmp-") {
            if !writer.owns(roll) || committed.contains(roll) {
                continue;
            }
            let id = roll_writer(roll).to_string();
            let live = *alive.entry(id.clone()).or_insert_with(|| writer_alive(root, &id));
            if !live {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::info!(file = %path.display(), "removed a file of an uncommitted roll"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&path, e)),
                }
            }
        }
    }
    Ok(())
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
        let lease = File::options().append(true).open(&s.lease.path).unwrap();
        lease.set_modified(SystemTime::now() - ago).unwrap();
        std::mem::forget(s);
    }

    fn offsets(max: i64) -> Offsets {
        [(("tx".to_string(), 0), max)].into_iter().collect()
    }

    #[test]
    fn roll_writes_partitioned_files_and_records_offsets() {
        let t = tempfile::tempdir().unwrap();
        let mut s = ParquetSink::open(t.path(), 10, std::time::Duration::from_secs(60)).unwrap();
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
        let s2 = ParquetSink::open(t.path(), 10, std::time::Duration::from_secs(60)).unwrap();
        assert!(s2.is_durable("tx", 0, 1));
    }

    #[test]
    fn crash_before_commit_point_discards_and_after_it_rolls_forward() {
        let t = tempfile::tempdir().unwrap();
        // Crash before the manifest: temp files are orphans.
        {
            let mut s = ParquetSink::open(t.path(), 10, std::time::Duration::from_secs(60)).unwrap();
            s.write_predictions(&[pred(0, "1")]).unwrap();
            s.note_offsets(&offsets(0));
            kill(s, Duration::from_secs(3600));
        }
        assert!(parquet_files(t.path()).iter().any(|p| p.to_string_lossy().contains(".tmp-")));
        let s = ParquetSink::open(t.path(), 10, std::time::Duration::from_secs(60)).unwrap();
        assert!(!s.is_durable("tx", 0, 0));
        assert!(parquet_files(t.path()).iter().all(|p| !p.to_string_lossy().contains(".tmp-")), "orphans removed");
        drop(s);

        // Crash after the manifest but before the renames: rolled forward.
        let mut s = ParquetSink::open(t.path(), 10, std::time::Duration::from_secs(60)).unwrap();
        s.write_predictions(&[pred(5, "1")]).unwrap();
        s.note_offsets(&offsets(5));
        s.roll().unwrap();
        let fin = parquet_files(t.path()).into_iter().find(|p| p.extension().is_some_and(|e| e == "parquet")).unwrap();
        let roll = std::fs::read_dir(t.path().join(ROLLS)).unwrap().next().unwrap().unwrap().path();
        let roll_id = roll.file_stem().unwrap().to_string_lossy().into_owned();
        std::fs::rename(&fin, tmp_path(&fin, &roll_id)).unwrap();
        let s = ParquetSink::open(t.path(), 10, std::time::Duration::from_secs(60)).unwrap();
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
        let mut live = ParquetSink::open(t.path(), 100, hour).unwrap();
        live.write_predictions(&[pred(0, "1")]).unwrap();
        live.note_offsets(&offsets(0));
        let mut recent = ParquetSink::open(t.path(), 100, hour).unwrap();
        recent.write_predictions(&[pred(10, "1")]).unwrap();
        kill(recent, Duration::from_secs(1));
        assert_ne!(live.writer_id(), ParquetSink::open(t.path(), 100, hour).unwrap().writer_id());
        assert_eq!(open_files(), 2, "a writer opening beside them deletes neither");

        // Once the killed writer's lease is older than the timeout, its open
        // file is an orphan; the live writer's is not.
        let mut old = ParquetSink::open(t.path(), 100, hour).unwrap();
        old.write_predictions(&[pred(20, "1")]).unwrap();
        kill(old, LEASE_TIMEOUT + Duration::from_secs(1));
        assert_eq!(open_files(), 3);
        drop(ParquetSink::open(t.path(), 100, hour).unwrap());
        assert_eq!(open_files(), 2, "only the expired writer's file is removed");

        // The live writer rolls; a second index sees it only after a refresh.
        let mut index = ParquetSink::open(t.path(), 100, hour).unwrap().durable_index();
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
        let mut s = ParquetSink::open_transactional(t.path(), 100, hour).unwrap();
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
            let mut w = ParquetSink::open_transactional(t.path(), 100, hour).unwrap();
            let mut row = pred(offset, "1");
            row.lineage.source.partition = partition;
            w.write_predictions(&[row]).unwrap();
            w.note_offsets(&[(("tx".to_string(), partition), offset)].into_iter().collect());
            let p = w.prepare_roll().unwrap().unwrap();
            std::mem::forget(p);
            kill(w, LEASE_TIMEOUT * 2);
        }
        // Recovery, even by an at-least-once writer, keeps them.
        drop(ParquetSink::open(t.path(), 100, hour).unwrap());
        let mut next = ParquetSink::open_transactional(t.path(), 100, hour).unwrap();
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
        let mut s = ParquetSink::open(t.path(), 100, Duration::from_secs(3600)).unwrap();
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
        let mut s = ParquetSink::open(t.path(), 2, std::time::Duration::from_millis(30)).unwrap();
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
        let mut results = ParquetSink::open(t.path(), 100, hour).unwrap();
        results.write_predictions(&[pred(0, "1")]).unwrap();
        results.note_offsets(&offsets(0));
        for f in results.open.values_mut() {
            f.writer.flush().unwrap();
        }
        let mut feedback = ParquetSink::open_feedback(t.path(), 100, hour).unwrap();
        feedback.write_feedback(&[fb(0), fb(1)]).unwrap();
        feedback.note_offsets(&[(("fb".to_string(), 0), 1)].into_iter().collect());
        feedback.roll().unwrap();
        drop(ParquetSink::open_feedback(t.path(), 100, hour).unwrap());
        let open_results = parquet_files(&t.path().join(PREDICTIONS));
        assert!(open_results.iter().any(|p| p.to_string_lossy().contains(".tmp-")), "{open_results:?}");

        // The results writer rolls on, and each knows only its own offsets.
        results.roll().unwrap();
        let r = ParquetSink::open(t.path(), 100, hour).unwrap();
        let f = ParquetSink::open_feedback(t.path(), 100, hour).unwrap();
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
        let mut a = ParquetSink::open_backfill(t.path(), "a", 100, hour).unwrap();
        a.write_predictions(&[pred(0, "1")]).unwrap();
        a.note_offsets(&offsets(0));
        for f in a.open.values_mut() {
            f.writer.flush().unwrap();
        }
        let mut ab = ParquetSink::open_backfill(t.path(), "a-b", 100, hour).unwrap();
        ab.write_predictions(&[pred(5, "1")]).unwrap();
        ab.note_offsets(&offsets(5));
        ab.roll().unwrap();
        let mut streaming = ParquetSink::open(t.path(), 100, hour).unwrap();
        streaming.roll().unwrap();
        let open = parquet_files(&t.path().join(PREDICTIONS));
        assert!(open.iter().any(|p| p.to_string_lossy().contains(".tmp-")), "run a's open file survives: {open:?}");
        a.roll().unwrap();

        assert_eq!(ParquetSink::backfill_offsets(t.path(), "a").unwrap().get(&("tx".to_string(), 0)), Some(&0));
        assert_eq!(ParquetSink::backfill_offsets(t.path(), "a-b").unwrap().get(&("tx".to_string(), 0)), Some(&5));
        assert!(ParquetSink::backfill_offsets(t.path(), "c").unwrap().is_empty());
        let s = ParquetSink::open(t.path(), 100, hour).unwrap();
        assert!(!s.is_durable("tx", 0, 0), "a backfill's offsets are not the streaming pipeline's");
        assert_eq!(parquet_files(&t.path().join(PREDICTIONS)).len(), 2);
    }
}
