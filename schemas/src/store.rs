//! Where the tables live: a local folder or an object store (`s3://`,
//! `gs://`, `az://`), behind one small, blocking interface.
//!
//! The writers of the tables (the sink's rolls and leases, the analysis
//! side's small tables, the cloud workers' spend ledger) need a handful of
//! operations: write a whole object atomically, read one, list a folder,
//! delete, rename, and see when an object was last written. [`TableRoot`]
//! offers exactly those, with the same meaning on both kinds of root:
//!
//! | operation | local folder | object store |
//! |---|---|---|
//! | [`TableRoot::put`] | temp file, fsync, rename, fsync of the folder | one PUT (atomic) |
//! | [`TableRoot::rename`] | `rename(2)` (atomic) | copy, then delete (not atomic: callers keep renames idempotent) |
//! | [`TableRoot::list`] | walk the folder | list the prefix |
//!
//! Object store calls run on a small runtime of their own and the caller's
//! thread waits for them, so these calls work from plain threads, from
//! `spawn_blocking` and from inside `block_in_place` alike. Every error
//! names the object (its URL or path); a missing object is
//! [`std::io::ErrorKind::NotFound`] on both kinds of root.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use futures::TryStreamExt as _;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use crate::{Error, Result};

/// The root folder of the tables: a local path or an object store prefix.
#[derive(Clone)]
pub enum TableRoot {
    /// A local (or mounted) folder.
    Local(PathBuf),
    /// A prefix in an object store.
    Store(StoreRoot),
}

/// A prefix in an object store (see [`TableRoot::Store`]).
#[derive(Clone)]
pub struct StoreRoot {
    /// `scheme://bucket`, the store's base URL.
    base: String,
    /// Folder under the bucket, without leading or trailing `/` (may be empty).
    prefix: String,
    store: Arc<dyn ObjectStore>,
}

/// One object found by [`TableRoot::list`].
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the root, `/`-separated.
    pub rel: String,
    /// When it was last written.
    pub modified: SystemTime,
    /// Size in bytes.
    pub size: u64,
}

impl fmt::Display for TableRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableRoot::Local(p) => write!(f, "{}", p.display()),
            TableRoot::Store(s) if s.prefix.is_empty() => write!(f, "{}", s.base),
            TableRoot::Store(s) => write!(f, "{}/{}", s.base, s.prefix),
        }
    }
}

impl fmt::Debug for TableRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableRoot({self})")
    }
}

impl PartialEq for TableRoot {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (TableRoot::Local(a), TableRoot::Local(b)) => a == b,
            (TableRoot::Store(_), TableRoot::Store(_)) => self.to_string() == other.to_string(),
            _ => false,
        }
    }
}

impl From<PathBuf> for TableRoot {
    fn from(p: PathBuf) -> Self {
        TableRoot::Local(p)
    }
}

impl From<&TableRoot> for TableRoot {
    fn from(r: &TableRoot) -> Self {
        r.clone()
    }
}

impl From<&PathBuf> for TableRoot {
    fn from(p: &PathBuf) -> Self {
        TableRoot::Local(p.clone())
    }
}

impl From<&Path> for TableRoot {
    fn from(p: &Path) -> Self {
        TableRoot::Local(p.to_path_buf())
    }
}

/// True when `location` names an object store (`scheme://…` other than
/// `file://`).
pub fn is_url(location: &str) -> bool {
    location.split_once("://").is_some_and(|(scheme, _)| scheme != "file")
}

/// An object store for `scheme://bucket`, configured from the environment
/// (`AWS_*`, `GOOGLE_*`, `AZURE_*`), then from `options` (the `object_store`
/// crate's keys, e.g. `aws_endpoint`, `aws_allow_http`).
pub fn object_store_for(
    scheme: &str,
    bucket: &str,
    options: &BTreeMap<String, String>,
) -> std::result::Result<Arc<dyn ObjectStore>, String> {
    let url = format!("{scheme}://{bucket}");
    let bad_key = |k: &str| format!("storage_options: `{k}` is not a setting of the {scheme}:// store");
    let build_err = |e: object_store::Error| format!("{url}: {e}");
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" | "s3a" => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(&url);
            for (k, v) in options {
                b = b.with_config(k.to_ascii_lowercase().parse().map_err(|_| bad_key(k))?, v);
            }
            Arc::new(b.build().map_err(build_err)?)
        }
        "gs" | "gcs" => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(&url);
            for (k, v) in options {
                b = b.with_config(k.to_ascii_lowercase().parse().map_err(|_| bad_key(k))?, v);
            }
            Arc::new(b.build().map_err(build_err)?)
        }
        "az" | "azure" | "abfs" | "abfss" | "adl" => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env().with_url(&url);
            for (k, v) in options {
                b = b.with_config(k.to_ascii_lowercase().parse().map_err(|_| bad_key(k))?, v);
            }
            Arc::new(b.build().map_err(build_err)?)
        }
        other => {
            return Err(format!(
                "`{other}://` is not a supported location (use a local path, file://, s3://, gs:// or az://)"
            ))
        }
    };
    Ok(store)
}

/// The runtime object store calls run on: two threads, never dropped (a
/// runtime may not be dropped inside another one's context).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store")
            .enable_all()
            .build()
            .expect("starting the object store runtime")
    })
}

/// Runs `f` on the object store runtime and waits for it on this thread.
fn wait<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().expect("an object store call panicked")
}

fn store_io(e: object_store::Error) -> std::io::Error {
    match e {
        object_store::Error::NotFound { .. } => std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
        e => std::io::Error::other(e.to_string()),
    }
}

impl TableRoot {
    /// Parses a table root: a path (relative to `base`), `file:///abs`, or
    /// `s3://bucket/prefix`, `gs://…`, `az://…` with the store's `options`.
    pub fn parse(location: &str, base: &Path, options: &BTreeMap<String, String>) -> Result<Self> {
        match location.split_once("://") {
            None => Ok(TableRoot::Local(base.join(location))),
            Some(("file", rest)) => Ok(TableRoot::Local(PathBuf::from(rest))),
            Some((scheme, rest)) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(Error::Invalid(format!("`{location}`: no bucket or container after `{scheme}://`")));
                }
                let store = object_store_for(scheme, bucket, options).map_err(Error::Invalid)?;
                Ok(TableRoot::Store(StoreRoot {
                    base: format!("{scheme}://{bucket}"),
                    prefix: prefix.trim_matches('/').to_string(),
                    store,
                }))
            }
        }
    }

    /// A root in an object store built by the caller (`base` is its
    /// `scheme://bucket`, `prefix` the folder under it).
    pub fn in_store(base: &str, prefix: &str, store: Arc<dyn ObjectStore>) -> Self {
        TableRoot::Store(StoreRoot {
            base: base.trim_end_matches('/').to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            store,
        })
    }

    /// The local folder, for a local root.
    pub fn local(&self) -> Option<&Path> {
        match self {
            TableRoot::Local(p) => Some(p),
            TableRoot::Store(_) => None,
        }
    }

    /// For an object store root: the store's base URL (`s3://bucket`), to
    /// register with a query engine, and the store.
    pub fn object_store(&self) -> Option<(&str, Arc<dyn ObjectStore>)> {
        match self {
            TableRoot::Local(_) => None,
            TableRoot::Store(s) => Some((&s.base, s.store.clone())),
        }
    }

    /// The location of `rel` as users see it (a path or a URL).
    pub fn describe(&self, rel: &str) -> String {
        match self {
            TableRoot::Local(p) => p.join(rel).display().to_string(),
            TableRoot::Store(_) => format!("{self}/{}", rel.trim_start_matches('/')),
        }
    }

    /// The URL of folder `rel` with a trailing `/` (`file:///abs/rel/` for a
    /// local root), for a query engine's listing table.
    pub fn folder_url(&self, rel: &str) -> Result<String> {
        match self {
            TableRoot::Local(p) => {
                let dir = p.join(rel);
                std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir.display().to_string(), e))?;
                let dir = std::fs::canonicalize(&dir).map_err(|e| io_err(&dir.display().to_string(), e))?;
                Ok(format!("file://{}/", dir.display()))
            }
            TableRoot::Store(_) => Ok(format!("{}/", self.describe(rel))),
        }
    }

    fn key(s: &StoreRoot, rel: &str) -> StorePath {
        let rel = rel.trim_matches('/');
        if s.prefix.is_empty() {
            StorePath::from(rel)
        } else {
            StorePath::from(format!("{}/{rel}", s.prefix))
        }
    }

    /// The same root `rel` deeper.
    pub fn join(&self, rel: &str) -> TableRoot {
        match self {
            TableRoot::Local(p) => TableRoot::Local(p.join(rel)),
            TableRoot::Store(s) => {
                let prefix = if s.prefix.is_empty() {
                    rel.trim_matches('/').to_string()
                } else {
                    format!("{}/{}", s.prefix, rel.trim_matches('/'))
                };
                TableRoot::Store(StoreRoot { base: s.base.clone(), prefix, store: s.store.clone() })
            }
        }
    }

    /// Writes `bytes` as `rel` so that readers see all of it or nothing
    /// (local: temp file, fsync, rename, fsync of the folder; object store:
    /// one PUT). Replaces what was there.
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        match self {
            TableRoot::Local(root) => {
                let fin = root.join(rel);
                let dir = fin.parent().unwrap_or(root);
                std::fs::create_dir_all(dir).map_err(|e| io_err(&dir.display().to_string(), e))?;
                let name = fin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                // Named after the final name (so a listing finds whose it
                // is) with an extension no reader of tables or manifests
                // takes for a finished file.
                static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let tmp = dir.join(format!("{name}.{}-{seq}.part", std::process::id()));
                let write = || -> std::io::Result<()> {
                    let mut f = std::fs::File::create(&tmp)?;
                    f.write_all(&bytes)?;
                    f.sync_all()
                };
                if let Err(e) = write() {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(io_err(&tmp.display().to_string(), e));
                }
                std::fs::rename(&tmp, &fin).map_err(|e| io_err(&fin.display().to_string(), e))?;
                sync_dir(dir);
                Ok(())
            }
            TableRoot::Store(s) => {
                let (store, key) = (s.store.clone(), Self::key(s, rel));
                wait(async move { store.put(&key, PutPayload::from(bytes)).await })
                    .map(|_| ())
                    .map_err(|e| io_err(&self.describe(rel), store_io(e)))
            }
        }
    }

    /// Copies the local file `from` to `rel` (an object store root streams
    /// it up, in parts when large). Readers may see a partial object on a
    /// local root: give `rel` a name no reader lists.
    pub fn upload(&self, from: &Path, rel: &str) -> Result<()> {
        match self {
            TableRoot::Local(root) => {
                let fin = root.join(rel);
                std::fs::copy(from, &fin).map(|_| ()).map_err(|e| io_err(&fin.display().to_string(), e))
            }
            TableRoot::Store(s) => {
                let (store, key, from) = (s.store.clone(), Self::key(s, rel), from.to_path_buf());
                wait(async move {
                    use tokio::io::AsyncWriteExt as _;
                    let mut file = tokio::fs::File::open(&from).await?;
                    let mut up = object_store::buffered::BufWriter::new(store, key);
                    if let Err(e) = tokio::io::copy(&mut file, &mut up).await {
                        let _ = up.abort().await;
                        return Err(e);
                    }
                    up.shutdown().await
                })
                .map_err(|e| io_err(&self.describe(rel), e))
            }
        }
    }

    /// Reads `rel` whole; `None` when it does not exist.
    pub fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let got = match self {
            TableRoot::Local(root) => std::fs::read(root.join(rel)),
            TableRoot::Store(s) => {
                let (store, key) = (s.store.clone(), Self::key(s, rel));
                wait(async move {
                    let r = store.get(&key).await?;
                    r.bytes().await
                })
                .map(|b| b.to_vec())
                .map_err(store_io)
            }
        };
        match got {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&self.describe(rel), e)),
        }
    }

    /// When `rel` was last written; `None` when it does not exist.
    pub fn modified(&self, rel: &str) -> Result<Option<SystemTime>> {
        let got = match self {
            TableRoot::Local(root) => std::fs::metadata(root.join(rel)).and_then(|m| m.modified()),
            TableRoot::Store(s) => {
                let (store, key) = (s.store.clone(), Self::key(s, rel));
                wait(async move { store.head(&key).await }).map(|m| m.last_modified.into()).map_err(store_io)
            }
        };
        match got {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&self.describe(rel), e)),
        }
    }

    /// True when `rel` exists (errors count as absent).
    pub fn exists(&self, rel: &str) -> bool {
        match self {
            TableRoot::Local(root) => root.join(rel).exists(),
            TableRoot::Store(_) => self.modified(rel).ok().flatten().is_some(),
        }
    }

    /// Every object under folder `rel` (recursively), in no particular
    /// order; empty when the folder does not exist.
    pub fn list(&self, rel: &str) -> Result<Vec<Entry>> {
        match self {
            TableRoot::Local(root) => {
                let mut out = Vec::new();
                list_local(root, &root.join(rel), &mut out)?;
                Ok(out)
            }
            TableRoot::Store(s) => {
                let (store, key) = (s.store.clone(), Self::key(s, rel));
                let metas = wait(async move { store.list(Some(&key)).try_collect::<Vec<_>>().await })
                    .map_err(|e| io_err(&self.describe(rel), store_io(e)))?;
                let skip = if s.prefix.is_empty() { 0 } else { s.prefix.len() + 1 };
                Ok(metas
                    .into_iter()
                    .filter_map(|m| {
                        let full = m.location.to_string();
                        let rel = full.get(skip..)?.to_string();
                        Some(Entry { rel, modified: m.last_modified.into(), size: m.size })
                    })
                    .collect())
            }
        }
    }

    /// Deletes `rel`; one that is already gone is not an error.
    pub fn delete(&self, rel: &str) -> Result<()> {
        let done = match self {
            TableRoot::Local(root) => std::fs::remove_file(root.join(rel)),
            TableRoot::Store(s) => {
                let (store, key) = (s.store.clone(), Self::key(s, rel));
                wait(async move { store.delete(&key).await }).map_err(store_io)
            }
        };
        match done {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.describe(rel), e)),
        }
    }

    /// Moves `from` to `to`, replacing `to`. Atomic on a local root; copy
    /// then delete on an object store, so a crash between the two leaves
    /// both (callers make the move idempotent). A missing `from` is
    /// [`std::io::ErrorKind::NotFound`].
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        match self {
            TableRoot::Local(root) => {
                let (a, b) = (root.join(from), root.join(to));
                std::fs::rename(&a, &b).map_err(|e| io_err(&a.display().to_string(), e))?;
                if let Some(dir) = b.parent() {
                    sync_dir(dir);
                }
                Ok(())
            }
            TableRoot::Store(s) => {
                let (store, a, b) = (s.store.clone(), Self::key(s, from), Self::key(s, to));
                wait(async move {
                    store.copy(&a, &b).await?;
                    match store.delete(&a).await {
                        Err(object_store::Error::NotFound { .. }) => Ok(()),
                        r => r,
                    }
                })
                .map_err(|e| io_err(&self.describe(from), store_io(e)))
            }
        }
    }
}

fn io_err(path: &str, source: std::io::Error) -> Error {
    Error::Io { path: path.to_string(), source }
}

fn sync_dir(dir: &Path) {
    // Folder fsync makes a rename durable; not every filesystem allows it.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn list_local(root: &Path, dir: &Path, out: &mut Vec<Entry>) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(&dir.display().to_string(), e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| io_err(&dir.display().to_string(), e))?;
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            list_local(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(Entry {
                rel: rel.to_string_lossy().into_owned(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                size: meta.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> (tempfile::TempDir, TableRoot) {
        let t = tempfile::tempdir().unwrap();
        let root = TableRoot::Local(t.path().to_path_buf());
        (t, root)
    }

    #[test]
    fn a_local_root_puts_lists_renames_and_deletes() {
        let (_t, root) = local();
        root.put("_rolls/a.json", b"{}".to_vec()).unwrap();
        root.put("t/date=1/x.parquet.tmp-r", b"data".to_vec()).unwrap();
        assert_eq!(root.get("_rolls/a.json").unwrap().as_deref(), Some(&b"{}"[..]));
        assert_eq!(root.get("_rolls/b.json").unwrap(), None);
        let mut names: Vec<_> = root.list("").unwrap().into_iter().map(|e| e.rel).collect();
        names.sort();
        assert_eq!(names, ["_rolls/a.json", "t/date=1/x.parquet.tmp-r"]);
        assert!(root.list("missing").unwrap().is_empty());
        root.rename("t/date=1/x.parquet.tmp-r", "t/date=1/x.parquet").unwrap();
        assert!(root.exists("t/date=1/x.parquet") && !root.exists("t/date=1/x.parquet.tmp-r"));
        let err = root.rename("t/date=1/x.parquet.tmp-r", "t/date=1/x.parquet").unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, path } if source.kind() == std::io::ErrorKind::NotFound
            && path.ends_with("x.parquet.tmp-r")),
            "{err}"
        );
        root.delete("t/date=1/x.parquet").unwrap();
        root.delete("t/date=1/x.parquet").unwrap();
        assert!(root.modified("t/date=1/x.parquet").unwrap().is_none());
        assert!(root.modified("_rolls/a.json").unwrap().is_some());
    }

    #[test]
    fn locations_parse_to_local_folders_or_stores_and_bad_ones_are_named() {
        let base = Path::new("/m");
        assert_eq!(TableRoot::parse("out", base, &BTreeMap::new()).unwrap(), TableRoot::Local("/m/out".into()));
        assert_eq!(TableRoot::parse("file:///x/y", base, &BTreeMap::new()).unwrap(), TableRoot::Local("/x/y".into()));
        let mut opts = BTreeMap::new();
        opts.insert("aws_region".to_string(), "us-east-1".to_string());
        let s3 = TableRoot::parse("s3://bkt/some/prefix/", base, &opts).unwrap();
        assert_eq!(s3.to_string(), "s3://bkt/some/prefix");
        assert_eq!(s3.describe("_rolls/a.json"), "s3://bkt/some/prefix/_rolls/a.json");
        assert_eq!(s3.folder_url("predictions").unwrap(), "s3://bkt/some/prefix/predictions/");
        assert_eq!(s3.join("x").to_string(), "s3://bkt/some/prefix/x");
        assert!(s3.local().is_none() && s3.object_store().is_some_and(|(b, _)| b == "s3://bkt"));
        let err = TableRoot::parse("s3:///x", base, &opts).unwrap_err().to_string();
        assert!(err.contains("no bucket"), "{err}");
        opts.insert("not_a_key".to_string(), "1".to_string());
        let err = TableRoot::parse("s3://b", base, &opts).unwrap_err().to_string();
        assert!(err.contains("`not_a_key`"), "{err}");
        let err = TableRoot::parse("ftp://b/x", base, &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("`ftp://`"), "{err}");
        assert!(is_url("s3://b") && !is_url("file:///x") && !is_url("out/t"));
    }
}
