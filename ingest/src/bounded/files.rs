//! Files by glob: Parquet, JSON Lines, CSV and Avro container files, local or
//! on object storage
//! (`s3://`, `gs://`, `az://`, `file://`, through the `object_store` crate).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use futures::StreamExt as _;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use serde::{Deserialize, Serialize};
use switchyard_schemas::{EventSchema, FieldType, Problems, RawRecord};
use tokio::sync::mpsc;

use super::{send, Done, Input};
use crate::{Error, Result};

/// `type: files`: every file matching the patterns, in sorted order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Glob patterns (`*`, `?`, `[a-z]`, `**` across folders): local paths
    /// (relative to the manifest's folder) or URLs `s3://bucket/key`,
    /// `gs://bucket/key`, `az://container/key`, `file:///abs/path`.
    pub paths: Vec<String>,
    /// `parquet`, `jsonl`, `csv` or `avro`; by default from each file's
    /// extension (`.parquet`, `.jsonl`/`.ndjson`/`.json`, `.csv`, `.avro`).
    #[serde(default)]
    pub format: Option<FileFormat>,
    /// Object store settings, e.g. `aws_endpoint`, `aws_region`,
    /// `aws_allow_http`, `google_service_account`, `azure_storage_account_name`
    /// (the `object_store` crate's keys). Credentials are best left to the
    /// environment (`AWS_ACCESS_KEY_ID`, `GOOGLE_APPLICATION_CREDENTIALS`, …),
    /// which is read too.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// CSV settings.
    #[serde(default)]
    pub csv: CsvOptions,
    /// Records per chunk handed to the pipeline.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
}

fn default_chunk_size() -> usize {
    1024
}

/// A file format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Apache Parquet; each row becomes one event.
    Parquet,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row naming the schema's fields.
    Csv,
    /// An Avro object container file (its writer schema in its header;
    /// null, deflate, snappy or zstandard blocks); each record becomes one
    /// event, its fields found by name (and `from` paths) and mapped as
    /// registry-framed Avro values are.
    Avro,
}

impl FileFormat {
    fn of(location: &str) -> Option<Self> {
        let name = location.rsplit('/').next().unwrap_or(location).to_ascii_lowercase();
        if name.ends_with(".parquet") || name.ends_with(".pq") {
            Some(FileFormat::Parquet)
        } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json") {
            Some(FileFormat::Jsonl)
        } else if name.ends_with(".csv") {
            Some(FileFormat::Csv)
        } else if name.ends_with(".avro") {
            Some(FileFormat::Avro)
        } else {
            None
        }
    }
}

/// CSV settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Field delimiter (one ASCII character).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Whether the first row names the columns. Without it the columns are
    /// the schema's fields, in order.
    #[serde(default = "default_true")]
    pub header: bool,
}

fn default_delimiter() -> char {
    ','
}
fn default_true() -> bool {
    true
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self { delimiter: default_delimiter(), header: true }
    }
}

/// Where a pattern's files live.
enum Location {
    Local { pattern: PathBuf },
    Store { scheme: String, bucket: String, key_pattern: String },
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn parse_location(pattern: &str, base: &Path) -> Result<Location> {
    match pattern.split_once("://") {
        None => {
            let p = Path::new(pattern);
            Ok(Location::Local { pattern: if p.is_absolute() { p.to_path_buf() } else { base.join(p) } })
        }
        Some(("file", rest)) => Ok(Location::Local { pattern: PathBuf::from(rest) }),
        Some((scheme, rest)) => {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Config(format!("`{pattern}`: no bucket or container after `{scheme}://`")));
            }
            Ok(Location::Store { scheme: scheme.to_string(), bucket: bucket.to_string(), key_pattern: key.to_string() })
        }
    }
}

/// An object store for `scheme://bucket`, configured from the environment
/// and then `options` (the same stores as object store table roots).
fn store_for(scheme: &str, bucket: &str, options: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>> {
    switchyard_schemas::store::object_store_for(scheme, bucket, options).map_err(Error::Config)
}

fn store_err(what: &str, e: object_store::Error) -> Error {
    Error::Source(format!("{what}: {e}"))
}

/// One matched file.
#[derive(Clone)]
struct File {
    input: Input,
    format: FileFormat,
    /// `None` for local files (read with std), else the store and the key.
    store: Option<(Arc<dyn ObjectStore>, StorePath)>,
}

impl FilesConfig {
    pub(super) fn validate(&self, path: &str, problems: &mut Problems) {
        if self.paths.is_empty() {
            problems.push(format!("{path}.paths"), "list at least one path or glob");
        }
        for (i, p) in self.paths.iter().enumerate() {
            if p.trim().is_empty() {
                problems.push(format!("{path}.paths[{i}]"), "must not be empty");
            } else if let Err(e) = glob::Pattern::new(p.split_once("://").map_or(p.as_str(), |(_, r)| r)) {
                problems.push(format!("{path}.paths[{i}]"), format!("not a valid glob: {e}"));
            } else if let Some((scheme, _)) = p.split_once("://") {
                if !["file", "s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss", "adl"].contains(&scheme) {
                    problems.push(
                        format!("{path}.paths[{i}]"),
                        format!("`{scheme}://` is not supported (use a local path, file://, s3://, gs:// or az://)"),
                    );
                }
            }
            if self.format.is_none() && !has_glob(p) && FileFormat::of(p).is_none() {
                problems.push(
                    format!("{path}.format"),
                    format!("cannot tell the format of `{p}` from its extension: set `format`"),
                );
            }
        }
        if !self.csv.delimiter.is_ascii() {
            problems.push(format!("{path}.csv.delimiter"), "must be one ASCII character");
        }
        if self.chunk_size == 0 {
            problems.push(format!("{path}.chunk_size"), "must be at least 1");
        }
    }

    fn format_of(&self, location: &str) -> Result<FileFormat> {
        self.format.or_else(|| FileFormat::of(location)).ok_or_else(|| {
            Error::Config(format!("cannot tell the format of `{location}` from its extension: set `source.format`"))
        })
    }

    /// Every file of every pattern, in pattern order and sorted within a
    /// pattern; a file matched twice is read once.
    async fn files(&self, base: &Path) -> Result<Vec<File>> {
        let mut out: Vec<File> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for pattern in &self.paths {
            let mut matched = Vec::new();
            match parse_location(pattern, base)? {
                Location::Local { pattern: p } => {
                    let text = p.to_string_lossy().into_owned();
                    let paths =
                        glob::glob(&text).map_err(|e| Error::Config(format!("`{pattern}`: not a valid glob: {e}")))?;
                    for entry in paths {
                        let path =
                            entry.map_err(|e| Error::Io { path: e.path().display().to_string(), source: e.into() })?;
                        if !path.is_file() {
                            continue;
                        }
                        let abs = std::fs::canonicalize(&path)
                            .map_err(|source| Error::Io { path: path.display().to_string(), source })?;
                        let bytes = std::fs::metadata(&abs)
                            .map_err(|source| Error::Io { path: abs.display().to_string(), source })?
                            .len();
                        let source = abs.to_string_lossy().into_owned();
                        matched.push(File {
                            format: self.format_of(&source)?,
                            input: Input { source, partition: 0, start: 0, end: None, bytes: Some(bytes) },
                            store: None,
                        });
                    }
                }
                Location::Store { scheme, bucket, key_pattern } => {
                    let store = store_for(&scheme, &bucket, &self.storage_options)?;
                    let mut metas = Vec::new();
                    if has_glob(&key_pattern) {
                        let literal = &key_pattern[..key_pattern.find(['*', '?', '[']).unwrap_or(key_pattern.len())];
                        let dir = literal.rfind('/').map_or("", |i| &literal[..i]);
                        let glob = glob::Pattern::new(&key_pattern)
                            .map_err(|e| Error::Config(format!("`{pattern}`: not a valid glob: {e}")))?;
                        let opts = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
                        let prefix = (!dir.is_empty()).then(|| StorePath::from(dir));
                        let mut list = store.list(prefix.as_ref());
                        while let Some(meta) = list.next().await {
                            let meta = meta.map_err(|e| store_err(&format!("listing {scheme}://{bucket}/{dir}"), e))?;
                            if glob.matches_with(meta.location.as_ref(), opts) {
                                metas.push(meta);
                            }
                        }
                    } else {
                        let key = StorePath::from(key_pattern.as_str());
                        metas.push(store.head(&key).await.map_err(|e| store_err(pattern, e))?);
                    }
                    metas.sort_by(|a, b| a.location.cmp(&b.location));
                    for meta in metas {
                        let source = format!("{scheme}://{bucket}/{}", meta.location);
                        matched.push(File {
                            format: self.format_of(&source)?,
                            input: Input { source, partition: 0, start: 0, end: None, bytes: Some(meta.size) },
                            store: Some((store.clone(), meta.location)),
                        });
                    }
                }
            }
            if matched.is_empty() {
                return Err(Error::Config(format!("`{pattern}` matches no file")));
            }
            matched.sort_by(|a, b| a.input.source.cmp(&b.input.source));
            for f in matched {
                if seen.insert(f.input.source.clone()) {
                    out.push(f);
                }
            }
        }
        // Parquet footers give the row counts at once.
        for f in &mut out {
            if f.format == FileFormat::Parquet {
                let builder = parquet_builder(f).await?;
                f.input.end = Some(builder.metadata().file_metadata().num_rows());
            }
        }
        Ok(out)
    }

    pub(super) async fn list_inputs(&self, base: &Path) -> Result<Vec<Input>> {
        Ok(self.files(base).await?.into_iter().map(|f| f.input).collect())
    }

    pub(super) async fn count(&self, inputs: &mut [Input]) -> Result<()> {
        let files = self.files_of(inputs)?;
        for (input, f) in inputs.iter_mut().zip(files) {
            if input.end.is_some() {
                continue;
            }
            let cfg = self.clone();
            let handle = tokio::runtime::Handle::current();
            let n = tokio::task::spawn_blocking(move || count_rows(&cfg, &f, &handle))
                .await
                .map_err(|e| Error::Internal(format!("counting task failed: {e}")))??;
            input.end = Some(n as i64);
        }
        Ok(())
    }

    /// Rebuilds the readers' view of resolved inputs (stores and formats).
    /// One store per bucket, shared by its files.
    fn files_of(&self, inputs: &[Input]) -> Result<Vec<File>> {
        let mut stores: std::collections::HashMap<(&str, &str), Arc<dyn ObjectStore>> = Default::default();
        inputs
            .iter()
            .map(|input| {
                let format = self.format_of(&input.source)?;
                let store = match input.source.split_once("://") {
                    None => None,
                    Some((scheme, rest)) => {
                        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                        let store = match stores.get(&(scheme, bucket)) {
                            Some(s) => s.clone(),
                            None => {
                                let s = store_for(scheme, bucket, &self.storage_options)?;
                                stores.insert((scheme, bucket), s.clone());
                                s
                            }
                        };
                        Some((store, StorePath::from(key)))
                    }
                };
                Ok(File { input: input.clone(), format, store })
            })
            .collect()
    }

    pub(super) fn reader(
        &self,
        inputs: Vec<Input>,
        done: &Done,
        schema: Arc<EventSchema>,
        chunk: usize,
    ) -> Result<FilesReader> {
        let files = self.files_of(&inputs)?;
        let skip = files.iter().map(|f| done.get(&(f.input.source.clone(), 0)).map_or(0, |&d| d + 1)).collect();
        Ok(FilesReader { cfg: self.clone(), files, skip, schema, chunk })
    }
}

/// Byte ranges of a Parquet object, for the async Arrow reader.
struct StoreFile {
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    size: u64,
}

fn parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoreFile {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        Box::pin(async move { self.store.get_range(&self.path, range).await.map_err(parquet_err) })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        Box::pin(async move { self.store.get_ranges(&self.path, &ranges).await.map_err(parquet_err) })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let metadata =
                ParquetMetaDataReader::new().with_arrow_reader_options(options).load_and_finish(self, size).await?;
            Ok(Arc::new(metadata))
        })
    }
}

async fn parquet_builder(f: &File) -> Result<ParquetRecordBatchStreamBuilder<StoreFile>> {
    let (store, path) = match &f.store {
        Some((s, p)) => (s.clone(), p.clone()),
        None => {
            let local: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
            let p = StorePath::from_filesystem_path(&f.input.source)
                .map_err(|e| Error::Config(format!("{}: {e}", f.input.source)))?;
            (local, p)
        }
    };
    let size = match f.input.bytes {
        Some(s) => s,
        None => store.head(&path).await.map_err(|e| store_err(&f.input.source, e))?.size,
    };
    ParquetRecordBatchStreamBuilder::new(StoreFile { store, path, size })
        .await
        .map_err(|e| Error::Source(format!("{}: not a readable Parquet file: {e}", f.input.source)))
}

/// A byte stream of an object, as `std::io::Read` for the CSV and line
/// readers, on the reader's thread.
struct StoreRead<'h> {
    handle: &'h tokio::runtime::Handle,
    stream: BoxStream<'static, object_store::Result<bytes::Bytes>>,
    buf: bytes::Bytes,
    what: String,
}

impl Read for StoreRead<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(std::io::Error::other(format!("{}: {e}", self.what))),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

fn open_read<'h>(f: &File, handle: &'h tokio::runtime::Handle) -> Result<Box<dyn Read + 'h>> {
    match &f.store {
        None => {
            let file = std::fs::File::open(&f.input.source)
                .map_err(|source| Error::Io { path: f.input.source.clone(), source })?;
            Ok(Box::new(file))
        }
        Some((store, path)) => {
            let get = handle.block_on(store.get(path)).map_err(|e| store_err(&f.input.source, e))?;
            Ok(Box::new(StoreRead {
                handle,
                stream: get.into_stream(),
                buf: bytes::Bytes::new(),
                what: f.input.source.clone(),
            }))
        }
    }
}

fn io_err(f: &File, e: std::io::Error) -> Error {
    Error::Io { path: f.input.source.clone(), source: e }
}

/// Rows of a JSON Lines or CSV file (lines; the header row not counted).
fn count_rows(cfg: &FilesConfig, f: &File, handle: &tokio::runtime::Handle) -> Result<u64> {
    match f.format {
        FileFormat::Parquet => Ok(f.input.end.unwrap_or(0) as u64),
        FileFormat::Jsonl => {
            let mut r = BufReader::with_capacity(1 << 20, open_read(f, handle)?);
            let (mut lines, mut last) = (0u64, b'\n');
            loop {
                let buf = r.fill_buf().map_err(|e| io_err(f, e))?;
                if buf.is_empty() {
                    break;
                }
                lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
                last = buf[buf.len() - 1];
                let n = buf.len();
                r.consume(n);
            }
            // A last line without its newline is a record too.
            Ok(lines + u64::from(last != b'\n'))
        }
        FileFormat::Avro => {
            let mut n = 0;
            for v in avro_reader(f, handle)? {
                v.map_err(|e| avro_err(f, n, &e))?;
                n += 1;
            }
            Ok(n)
        }
        FileFormat::Csv => {
            let mut rdr = csv_reader(cfg, open_read(f, handle)?);
            let mut rec = csv::ByteRecord::new();
            let mut n = 0;
            loop {
                match rdr.read_byte_record(&mut rec) {
                    Ok(true) => n += 1,
                    Ok(false) => return Ok(n),
                    Err(e) if e.is_io_error() => return Err(Error::Source(format!("{}: {e}", f.input.source))),
                    Err(_) => n += 1,
                }
            }
        }
    }
}

fn avro_reader<'h>(
    f: &File,
    handle: &'h tokio::runtime::Handle,
) -> Result<apache_avro::Reader<'static, Box<dyn Read + 'h>>> {
    apache_avro::Reader::new(open_read(f, handle)?)
        .map_err(|e| Error::Source(format!("{}: not a readable Avro container file: {e}", f.input.source)))
}

fn avro_err(f: &File, row: u64, e: &apache_avro::Error) -> Error {
    Error::Source(format!("{}: record {row}: {e}", f.input.source))
}

fn csv_reader<R: Read>(cfg: &FilesConfig, r: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .delimiter(cfg.csv.delimiter as u8)
        .has_headers(cfg.csv.header)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(r)
}

/// Reads the files in order on its own thread.
pub(super) struct FilesReader {
    cfg: FilesConfig,
    files: Vec<File>,
    /// First row to read, per file (rows before it are durable).
    skip: Vec<i64>,
    schema: Arc<EventSchema>,
    chunk: usize,
}

type Tx = mpsc::Sender<Result<Vec<RawRecord>>>;

impl FilesReader {
    pub(super) fn run(self, handle: &tokio::runtime::Handle, tx: &Tx) {
        for (f, &skip) in self.files.iter().zip(&self.skip) {
            if f.input.end.is_some_and(|e| skip >= e) {
                continue; // finished in an earlier attempt
            }
            let read = match f.format {
                FileFormat::Parquet => self.parquet(f, skip, handle, tx),
                FileFormat::Jsonl => self.jsonl(f, skip, handle, tx),
                FileFormat::Csv => self.csv(f, skip, handle, tx),
                FileFormat::Avro => self.avro(f, skip, handle, tx),
            };
            match read {
                Ok(true) => {}
                Ok(false) => return, // the run stopped
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    }

    fn record(f: &File, offset: i64, payload: Vec<u8>) -> RawRecord {
        RawRecord {
            topic: f.input.source.clone(),
            partition: 0,
            offset,
            payload: Some(payload),
            ..RawRecord::default()
        }
    }

    /// Returns Ok(false) when the receiver is gone.
    fn parquet(&self, f: &File, skip: i64, handle: &tokio::runtime::Handle, tx: &Tx) -> Result<bool> {
        let builder = handle.block_on(parquet_builder(f))?;
        let mut stream = builder
            .with_batch_size(self.chunk)
            .with_offset(skip.max(0) as usize)
            .build()
            .map_err(|e| Error::Source(format!("{}: {e}", f.input.source)))?;
        let mut offset = skip;
        while let Some(batch) = handle.block_on(stream.next()) {
            let batch = batch.map_err(|e| Error::Source(format!("{}: row {offset}: {e}", f.input.source)))?;
            let mut chunk = Vec::with_capacity(batch.num_rows());
            for line in json_lines(&batch).map_err(|e| Error::Source(format!("{}: {e}", f.input.source)))? {
                chunk.push(Self::record(f, offset, line));
                offset += 1;
            }
            if !send(tx, &mut chunk) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn jsonl(&self, f: &File, skip: i64, handle: &tokio::runtime::Handle, tx: &Tx) -> Result<bool> {
        let mut r = BufReader::with_capacity(1 << 20, open_read(f, handle)?);
        let mut chunk = Vec::with_capacity(self.chunk);
        let mut offset = 0i64;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line).map_err(|e| io_err(f, e))?;
            if n == 0 {
                break;
            }
            if offset >= skip {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                chunk.push(Self::record(f, offset, line.clone()));
                if chunk.len() >= self.chunk && !send(tx, &mut chunk) {
                    return Ok(false);
                }
            }
            offset += 1;
        }
        Ok(send(tx, &mut chunk))
    }

    /// Records of an Avro container file, as JSON objects of the schema's
    /// fields (see [`AvroWriter::to_json`](crate::registry::AvroWriter::to_json)).
    fn avro(&self, f: &File, skip: i64, handle: &tokio::runtime::Handle, tx: &Tx) -> Result<bool> {
        let reader = avro_reader(f, handle)?;
        let writer = crate::registry::writer_of(reader.writer_schema().clone(), Vec::new(), &self.schema)
            .map_err(|e| Error::Source(format!("{}: its writer schema cannot be read: {e}", f.input.source)))?;
        let mut chunk = Vec::with_capacity(self.chunk);
        for (offset, value) in (0i64..).zip(reader) {
            // A block that does not decode ends the file: its records and
            // those after it cannot be told apart.
            let value = value.map_err(|e| avro_err(f, offset as u64, &e))?;
            if offset >= skip {
                let json = serde_json::to_vec(&writer.to_json(&value, &self.schema))
                    .map_err(|e| Error::Source(format!("{}: record {offset}: {e}", f.input.source)))?;
                chunk.push(Self::record(f, offset, json));
                if chunk.len() >= self.chunk && !send(tx, &mut chunk) {
                    return Ok(false);
                }
            }
        }
        Ok(send(tx, &mut chunk))
    }

    fn csv(&self, f: &File, skip: i64, handle: &tokio::runtime::Handle, tx: &Tx) -> Result<bool> {
        let mut rdr = csv_reader(&self.cfg, open_read(f, handle)?);
        let columns: Vec<String> = if self.cfg.csv.header {
            rdr.headers()
                .map_err(|e| Error::Source(format!("{}: cannot read the header row: {e}", f.input.source)))?
                .iter()
                .map(|h| h.trim().to_string())
                .collect()
        } else {
            self.schema.fields.iter().map(|fl| fl.name.clone()).collect()
        };
        let types: Vec<Option<FieldType>> =
            columns.iter().map(|c| self.schema.index_of(c).map(|i| self.schema.fields[i].ty)).collect();
        let delimiter = [self.cfg.csv.delimiter as u8];
        let mut chunk = Vec::with_capacity(self.chunk);
        let mut rec = csv::ByteRecord::new();
        let mut offset = 0i64;
        loop {
            let read = rdr.read_byte_record(&mut rec);
            let raw = match read {
                Ok(false) => break,
                Err(e) if e.is_io_error() => return Err(Error::Source(format!("{}: {e}", f.input.source))),
                _ if offset < skip => {
                    offset += 1;
                    continue;
                }
                Err(e) => {
                    let mut r = Self::record(f, offset, Vec::new());
                    r.error = Some(format!("CSV row {} (line {}): {e}", offset + 1, line_of(&rec)));
                    r
                }
                Ok(true) => {
                    let fields: Vec<&[u8]> = rec.iter().collect();
                    if fields.len() != columns.len() {
                        let mut r = Self::record(f, offset, fields.join(&delimiter[..]));
                        r.error = Some(format!(
                            "CSV row {} (line {}) has {} fields, the header has {}",
                            offset + 1,
                            line_of(&rec),
                            fields.len(),
                            columns.len()
                        ));
                        r
                    } else {
                        match csv_row_json(&columns, &types, &fields) {
                            Ok(json) => Self::record(f, offset, json),
                            Err(msg) => {
                                let mut r = Self::record(f, offset, fields.join(&delimiter[..]));
                                r.error = Some(format!("CSV row {} (line {}): {msg}", offset + 1, line_of(&rec)));
                                r
                            }
                        }
                    }
                }
            };
            chunk.push(raw);
            offset += 1;
            if chunk.len() >= self.chunk && !send(tx, &mut chunk) {
                return Ok(false);
            }
        }
        Ok(send(tx, &mut chunk))
    }
}

fn line_of(rec: &csv::ByteRecord) -> u64 {
    rec.position().map_or(0, |p| p.line())
}

/// One CSV row as a JSON object: values of numeric and boolean schema fields
/// become numbers and booleans when they parse as such (otherwise they stay
/// text, and validation names the field); empty values are absent.
fn csv_row_json(columns: &[String], types: &[Option<FieldType>], fields: &[&[u8]]) -> Result<Vec<u8>, String> {
    use serde_json::Value as J;
    let mut obj = serde_json::Map::with_capacity(columns.len());
    for ((name, ty), raw) in columns.iter().zip(types).zip(fields) {
        let text = std::str::from_utf8(raw).map_err(|_| format!("column `{name}` is not valid UTF-8"))?;
        if text.is_empty() {
            continue;
        }
        let value = match ty {
            Some(FieldType::Int | FieldType::Timestamp) => {
                text.trim().parse::<i64>().map(J::from).unwrap_or_else(|_| J::String(text.to_string()))
            }
            Some(FieldType::Float) => text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| J::String(text.to_string()), J::Number),
            Some(FieldType::Bool) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => J::Bool(true),
                "false" | "0" | "no" => J::Bool(false),
                _ => J::String(text.to_string()),
            },
            Some(FieldType::String) | None => J::String(text.to_string()),
        };
        obj.insert(name.clone(), value);
    }
    serde_json::to_vec(&J::Object(obj)).map_err(|e| e.to_string())
}

/// A record batch as one JSON object per row (nulls left out).
fn json_lines(batch: &RecordBatch) -> std::result::Result<Vec<Vec<u8>>, arrow::error::ArrowError> {
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::with_capacity(batch.num_rows() * 256));
    w.write(batch)?;
    w.finish()?;
    let buf = w.into_inner();
    let mut lines: Vec<Vec<u8>> = buf.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Arc<EventSchema> {
        Arc::new(
            serde_yaml::from_str(
                "{id: t, version: 1, fields: [{name: id, type: string}, {name: n, type: int}, {name: x, type: float}]}",
            )
            .unwrap(),
        )
    }

    async fn read_all(cfg: &super::super::BoundedConfig, inputs: Vec<Input>, done: &Done) -> Vec<RawRecord> {
        let mut src = cfg.open(inputs, done, schema(), 2).unwrap();
        let mut all = Vec::new();
        while let Some(c) = src.next_chunk().await {
            all.extend(c.unwrap());
        }
        all
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn local_files_are_listed_sorted_counted_and_resumed_after_the_done_offset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.jsonl"), "{\"id\":\"b0\"}\n{\"id\":\"b1\"}").unwrap();
        std::fs::write(dir.path().join("a.jsonl"), "{\"id\":\"a0\"}\n\n{\"id\":\"a2\"}\n").unwrap();
        std::fs::write(dir.path().join("c.csv"), "id,n,x\nc0,1,0.5\nc1,2\nc2,zz,1\n").unwrap();
        let cfg: super::super::BoundedConfig =
            serde_yaml::from_str("{type: files, paths: [\"*.jsonl\", \"*.csv\"], chunk_size: 2}").unwrap();
        let mut inputs = cfg.list_inputs(dir.path()).await.unwrap();
        let names: Vec<&str> = inputs.iter().map(|i| i.source.rsplit('/').next().unwrap()).collect();
        assert_eq!(names, ["a.jsonl", "b.jsonl", "c.csv"]);
        cfg.count(&mut inputs).await.unwrap();
        let ends: Vec<Option<i64>> = inputs.iter().map(|i| i.end).collect();
        assert_eq!(ends, [Some(3), Some(2), Some(3)], "an empty line is a record; a last line without newline too");

        let all = read_all(&cfg, inputs.clone(), &Done::new()).await;
        assert_eq!(all.len(), 8);
        assert_eq!(all[1].payload.as_deref(), Some(&b""[..]));
        let c: Vec<&RawRecord> = all.iter().filter(|r| r.topic.ends_with("c.csv")).collect();
        assert_eq!(c[0].payload.as_deref(), Some(&br#"{"id":"c0","n":1,"x":0.5}"#[..]));
        assert!(
            c[1].error.as_deref().unwrap().contains("row 2 (line 3) has 2 fields, the header has 3"),
            "{:?}",
            c[1].error
        );
        assert_eq!(c[2].payload.as_deref(), Some(&br#"{"id":"c2","n":"zz","x":1.0}"#[..]));

        // Resume: a.jsonl done up to row 1, c.csv up to row 0.
        let mut done = Done::new();
        done.insert((inputs[0].source.clone(), 0), 1);
        done.insert((inputs[2].source.clone(), 0), 0);
        let rest = read_all(&cfg, inputs, &done).await;
        let coords: Vec<(String, i64)> =
            rest.iter().map(|r| (r.topic.rsplit('/').next().unwrap().to_string(), r.offset)).collect();
        let want = [("a.jsonl", 2), ("b.jsonl", 0), ("b.jsonl", 1), ("c.csv", 1), ("c.csv", 2)];
        assert_eq!(coords, want.map(|(f, o)| (f.to_string(), o)));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_pattern_matching_nothing_and_an_unknown_scheme_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let cfg: super::super::BoundedConfig =
            serde_yaml::from_str("{type: files, paths: [\"none/*.parquet\"]}").unwrap();
        let e = cfg.list_inputs(dir.path()).await.unwrap_err().to_string();
        assert!(e.contains("`none/*.parquet` matches no file"), "{e}");
        let cfg: super::super::BoundedConfig =
            serde_yaml::from_str("{type: files, paths: [\"ftp://h/x.csv\"]}").unwrap();
        let mut p = Problems::new();
        cfg.validate("source", &mut p);
        assert!(p.to_string().contains("source.paths[0]: `ftp://` is not supported"), "{p}");
    }

    #[test]
    fn formats_from_extensions() {
        assert_eq!(FileFormat::of("s3://b/x/part-1.parquet"), Some(FileFormat::Parquet));
        assert_eq!(FileFormat::of("/d/a.JSONL"), Some(FileFormat::Jsonl));
        assert_eq!(FileFormat::of("a.ndjson"), Some(FileFormat::Jsonl));
        assert_eq!(FileFormat::of("a.csv"), Some(FileFormat::Csv));
        assert_eq!(FileFormat::of("gs://b/part-0.avro"), Some(FileFormat::Avro));
        assert_eq!(FileFormat::of("a.txt"), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn avro_container_files_are_counted_read_by_the_type_rules_and_resumed() {
        use apache_avro::types::{Record, Value as Avro};
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{"type": "record", "name": "R", "fields": [
            {"name": "id", "type": "string"},
            {"name": "n", "type": ["null", "long"], "default": null},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "inner", "type": {"type": "record", "name": "I", "fields": [{"name": "x", "type": "double"}]}},
            {"name": "extra", "type": "string", "default": ""}
        ]}"#;
        let writer_schema = apache_avro::Schema::parse_str(text).unwrap();
        for codec in
            [apache_avro::Codec::Null, apache_avro::Codec::Deflate(Default::default()), apache_avro::Codec::Snappy]
        {
            let mut w = apache_avro::Writer::with_codec(&writer_schema, Vec::new(), codec);
            for i in 0..5i64 {
                let mut r = Record::new(&writer_schema).unwrap();
                r.put("id", format!("r{i}"));
                r.put(
                    "n",
                    if i == 3 { Avro::Union(0, Box::new(Avro::Null)) } else { Avro::Union(1, Box::new(Avro::Long(i))) },
                );
                r.put("at", Avro::TimestampMicros(1_000_000 * i + 999));
                r.put("inner", Avro::Record(vec![("x".into(), Avro::Double(i as f64 / 2.0))]));
                r.put("extra", "e");
                w.append(r).unwrap();
                // Several blocks per file.
                w.flush().unwrap();
            }
            let name = format!("{codec:?}").chars().take_while(|c| c.is_alphanumeric()).collect::<String>();
            std::fs::write(dir.path().join(format!("{name}.avro")), w.into_inner().unwrap()).unwrap();
        }
        std::fs::write(dir.path().join("zz-broken.avro"), b"Obj\x01 not really").unwrap();
        let schema: Arc<EventSchema> = Arc::new(
            serde_yaml::from_str(
                "{id: t, version: 1, fields: [{name: id, type: string}, {name: n, type: int}, \
                 {name: at, type: timestamp}, {name: x, type: float, from: inner.x}]}",
            )
            .unwrap(),
        );
        let cfg: super::super::BoundedConfig =
            serde_yaml::from_str("{type: files, paths: [\"[DNS]*.avro\"], chunk_size: 2}").unwrap();
        let mut inputs = cfg.list_inputs(dir.path()).await.unwrap();
        assert_eq!(inputs.len(), 3);
        cfg.count(&mut inputs).await.unwrap();
        assert!(inputs.iter().all(|i| i.end == Some(5)), "{inputs:?}");
        let mut done = Done::new();
        done.insert((inputs[0].source.clone(), 0), 2);
        let mut src = cfg.open(inputs.clone(), &done, schema.clone(), 2).unwrap();
        let mut all = Vec::new();
        while let Some(c) = src.next_chunk().await {
            all.extend(c.unwrap());
        }
        assert_eq!(all.len(), 2 + 5 + 5, "the first file resumes after row 2");
        assert_eq!(all[0].offset, 3);
        let json: serde_json::Value = serde_json::from_slice(all[0].payload.as_deref().unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"id": "r3", "at": 3_000, "inner": {"x": 1.5}}), "null n left out");
        let json: serde_json::Value = serde_json::from_slice(all[4].payload.as_deref().unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"id": "r2", "n": 2, "at": 2_000, "inner": {"x": 1.0}}));
        // Decoded as any JSON record is, `from` paths included.
        let d = crate::Decoder::new(schema.clone(), Default::default());
        let ev = d.decode(&all[4]).unwrap();
        assert_eq!(ev.values[3], switchyard_schemas::Value::Float(1.0));

        // A strict schema sees the writer's unknown field; a file that is not
        // Avro is an error naming it.
        let mut strict = (*schema).clone();
        strict.reject_unknown_fields = true;
        let mut src = cfg.open(inputs[1..2].to_vec(), &Done::new(), Arc::new(strict.clone()), 2).unwrap();
        let first = src.next_chunk().await.unwrap().unwrap();
        let e = crate::Decoder::new(Arc::new(strict), Default::default()).decode(&first[0]).unwrap_err();
        assert!(e.message.contains("unknown field `extra`"), "{}", e.message);
        let broken: super::super::BoundedConfig =
            serde_yaml::from_str("{type: files, paths: [\"zz-*.avro\"]}").unwrap();
        let mut inputs = broken.list_inputs(dir.path()).await.unwrap();
        let e = broken.count(&mut inputs).await.unwrap_err().to_string();
        assert!(e.contains("zz-broken.avro: not a readable Avro container file"), "{e}");
    }

    #[test]
    fn csv_values_take_the_schema_types_and_bad_ones_stay_text() {
        let cols = ["a", "b", "c", "d", "e"].map(String::from);
        let types =
            [Some(FieldType::Int), Some(FieldType::Float), Some(FieldType::Bool), Some(FieldType::String), None];
        let row: [&[u8]; 5] = [b"12", b"x1.5", b"TRUE", b"007", b""];
        let json: serde_json::Value = serde_json::from_slice(&csv_row_json(&cols, &types, &row).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"a": 12, "b": "x1.5", "c": true, "d": "007"}));
    }
}
