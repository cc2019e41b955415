//! Budget spend shared by every process of a consumer group, and kept
//! across restarts. Each process writes what it has spent per endpoint and
//! budget window to `<dir>/<endpoint>/<start>+<length>/<writer>.json`
//! ([`TableRoot::put`]: whole or not at all, on a local folder or an object
//! store; at most once a second, when it changed) and reads the files of
//! the others at the same pace (on an object store: one listing and a GET
//! per file of a live window, every second). A
//! budget counts its own spend plus every other file of its window: those
//! of crashed and restarted processes too, so a restart does not bring a
//! fresh budget.
//!
//! Error bound: a process sees the others' spend as of their last write and
//! its own last read, so the group may overshoot a limit by what the others
//! spent in the last [`SYNC_EVERY`] twice over, plus what a process killed
//! before its next write had spent since its last one.
//!
//! Windows are aligned to the Unix epoch (window `k` of length `L` seconds
//! starts at `k × L`), so that every process agrees on them. Window folders
//! that ended more than a window ago are removed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_schemas::{Result, TableRoot};

/// How often a ledger writes its own spend and reads the others'.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// One budget window of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    endpoint: String,
    /// Seconds since the Unix epoch.
    start: u64,
    /// Seconds.
    length: u64,
}

impl Key {
    fn folder(&self) -> String {
        format!("{}+{}", self.start, self.length)
    }
}

#[derive(Debug, Default)]
struct State {
    /// This process's spend per window, and whether it changed since written.
    own: HashMap<Key, (f64, bool)>,
    /// The other processes' spend per window, as of the last read.
    others: HashMap<Key, f64>,
    /// The last I/O error was logged (logged once until a sync succeeds).
    failing: bool,
}

/// The spend files of a group (see the module documentation).
#[derive(Debug)]
pub struct SpendLedger {
    dir: TableRoot,
    writer: String,
    state: Mutex<State>,
    /// Held while a sync runs: one at a time, and a sync that returns has
    /// written what was recorded before it.
    syncing: Mutex<()>,
}

impl SpendLedger {
    /// Opens the ledger in `dir` (created if missing) for the process
    /// `writer` (a name no other process uses, e.g. the sink's writer id),
    /// reads what the others spent and starts writing and reading once a
    /// second in a thread that ends when the ledger is dropped.
    pub fn open(dir: &TableRoot, writer: &str) -> Result<Arc<SpendLedger>> {
        let ledger = Arc::new(SpendLedger {
            dir: dir.clone(),
            writer: writer.to_string(),
            state: Default::default(),
            syncing: Mutex::new(()),
        });
        ledger.read_others()?;
        let weak: Weak<SpendLedger> = Arc::downgrade(&ledger);
        std::thread::Builder::new()
            .name("spend-ledger".into())
            .spawn(move || loop {
                std::thread::sleep(SYNC_EVERY);
                let Some(l) = weak.upgrade() else { return };
                l.sync();
            })
            .map_err(|e| switchyard_schemas::Error::Io { path: dir.to_string(), source: e })?;
        Ok(ledger)
    }

    /// The folder of the files.
    pub fn dir(&self) -> &TableRoot {
        &self.dir
    }

    /// What the other processes spent in the window of `endpoint` that
    /// starts at `start` (seconds since the epoch) and lasts `length` s.
    pub fn others(&self, endpoint: &str, start: u64, length: u64) -> f64 {
        let key = Key { endpoint: endpoint.to_string(), start, length };
        self.lock().others.get(&key).copied().unwrap_or(0.0)
    }

    /// Records that this process has spent `spent` in all in that window
    /// (written at the next sync).
    pub fn record(&self, endpoint: &str, start: u64, length: u64, spent: f64) {
        let key = Key { endpoint: endpoint.to_string(), start, length };
        self.lock().own.insert(key, (spent, true));
    }

    /// Writes this process's changed spend and reads the others'; an I/O
    /// error is logged (once until a sync succeeds) and the last figures
    /// stay in use.
    pub fn sync(&self) {
        let _one = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.write_own().and_then(|()| self.read_others());
        let mut s = self.lock();
        match result {
            Ok(()) => s.failing = false,
            Err(e) if !s.failing => {
                s.failing = true;
                tracing::warn!(dir = %self.dir, error = %e, "cloud budget spend cannot be shared");
            }
            Err(_) => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_own(&self) -> Result<()> {
        let dirty: Vec<(Key, f64)> = self
            .lock()
            .own
            .iter_mut()
            .filter(|(_, (_, d))| *d)
            .map(|(k, (v, d))| {
                *d = false;
                (k.clone(), *v)
            })
            .collect();
        let mut failed: Option<switchyard_schemas::Error> = None;
        for (key, spent) in dirty {
            if failed.is_none() {
                match self.write_file(&key, spent) {
                    Ok(()) => continue,
                    Err(e) => failed = Some(e),
                }
            }
            // Not written: again at the next sync.
            if let Some((_, d)) = self.lock().own.get_mut(&key) {
                *d = true;
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Writes this process's `spent` in window `key`, whole or not at all.
    fn write_file(&self, key: &Key, spent: f64) -> Result<()> {
        let rel = format!("{}/{}/{}.json", key.endpoint, key.folder(), self.writer);
        let body = serde_json::json!({ "spent": spent, "writer": self.writer, "at_ms": now().as_millis() as u64 });
        self.dir.put(&rel, body.to_string().into_bytes())
    }

    fn read_others(&self) -> Result<()> {
        let mut others: HashMap<Key, f64> = HashMap::new();
        let now_s = now().as_secs();
        let mut expired = std::collections::BTreeSet::new();
        for entry in self.dir.list("")? {
            // `<endpoint>/<start>+<length>/<writer>.json`
            let mut parts = entry.rel.split('/');
            let (Some(endpoint), Some(window), Some(file), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some((start, length)) =
                window.split_once('+').and_then(|(s, l)| Some((s.parse::<u64>().ok()?, l.parse::<u64>().ok()?)))
            else {
                continue;
            };
            if start.saturating_add(length.saturating_mul(2)) < now_s {
                // Ended more than a window ago: no budget asks for it.
                let _ = self.dir.delete(&entry.rel);
                expired.insert(format!("{endpoint}/{window}"));
                continue;
            }
            let Some(stem) = file.strip_suffix(".json") else { continue };
            let key = Key { endpoint: endpoint.to_string(), start, length };
            let spent = others.entry(key).or_insert(0.0);
            if stem == self.writer {
                continue;
            }
            // A file being replaced or unreadable counts at its last value:
            // keep what was read before (below).
            let value = self
                .dir
                .get(&entry.rel)
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["spent"].as_f64());
            *spent += value.unwrap_or(0.0);
        }
        if let Some(dir) = self.dir.local() {
            for window in expired {
                let _ = std::fs::remove_dir_all(dir.join(window));
            }
        }
        let mut s = self.lock();
        for (k, v) in others {
            // Spend only grows within a window: a file missing or half
            // written for a moment does not lower it.
            let e = s.others.entry(k).or_insert(0.0);
            *e = e.max(v);
        }
        s.others.retain(|k, _| k.start.saturating_add(k.length.saturating_mul(2)) >= now_s);
        s.own.retain(|k, _| k.start.saturating_add(k.length.saturating_mul(2)) >= now_s);
        Ok(())
    }
}

impl Drop for SpendLedger {
    fn drop(&mut self) {
        let _one = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.write_own() {
            tracing::warn!(dir = %self.dir, error = %e, "writing the last cloud budget spend");
        }
    }
}

/// Time since the Unix epoch.
pub(crate) fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_is_shared_between_writers_and_outlives_them() {
        let dir = tempfile::tempdir().unwrap();
        let start = now().as_secs() / 60 * 60;
        let a = SpendLedger::open(&dir.path().into(), "a").unwrap();
        let b = SpendLedger::open(&dir.path().into(), "b").unwrap();
        a.record("cloud", start, 60, 2.5);
        b.record("cloud", start, 60, 1.0);
        b.record("other", start, 60, 7.0);
        a.sync();
        b.sync();
        a.sync();
        assert_eq!(a.others("cloud", start, 60), 1.0, "b's spend, not a's own");
        assert_eq!(b.others("cloud", start, 60), 2.5);
        assert_eq!(a.others("other", start, 60), 7.0, "per endpoint");
        assert_eq!(a.others("cloud", start + 60, 60), 0.0, "per window");
        // b stops (its last spend is written on drop); a restarted b, with a
        // new writer name, still sees what the old one spent.
        b.record("cloud", start, 60, 1.5);
        drop(b);
        let b2 = SpendLedger::open(&dir.path().into(), "b2").unwrap();
        assert_eq!(b2.others("cloud", start, 60), 4.0, "a's 2.5 and the old b's 1.5");
        // A window that ended more than a window ago is removed.
        let old = start - 180;
        a.record("cloud", old, 60, 9.0);
        a.sync();
        b2.sync();
        assert_eq!(b2.others("cloud", old, 60), 0.0);
        assert!(!dir.path().join("cloud").join(format!("{old}+60")).exists());
    }

    #[test]
    fn an_unwritable_folder_keeps_the_last_figures() {
        let dir = tempfile::tempdir().unwrap();
        let start = now().as_secs() / 60 * 60;
        let a = SpendLedger::open(&dir.path().into(), "a").unwrap();
        let b = SpendLedger::open(&dir.path().into(), "b").unwrap();
        b.record("cloud", start, 60, 3.0);
        b.sync();
        a.sync();
        // The endpoint's folder becomes a file: nothing can be read or written.
        std::fs::remove_dir_all(dir.path().join("cloud")).unwrap();
        std::fs::write(dir.path().join("cloud"), b"not a folder").unwrap();
        b.record("cloud", start, 60, 4.0);
        b.sync();
        a.sync();
        assert_eq!(a.others("cloud", start, 60), 3.0, "the last figure read stays");
        // Once repaired, b's pending spend is written.
        std::fs::remove_file(dir.path().join("cloud")).unwrap();
        b.sync();
        a.sync();
        assert_eq!(a.others("cloud", start, 60), 4.0);
    }

    #[test]
    fn spend_is_shared_through_an_object_store() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let root = TableRoot::in_store("memory://b", "tables/_spend", store);
        let start = now().as_secs() / 60 * 60;
        let a = SpendLedger::open(&root, "a").unwrap();
        let b = SpendLedger::open(&root, "b").unwrap();
        a.record("cloud", start, 60, 2.0);
        b.record("cloud", start, 60, 5.0);
        a.sync();
        b.sync();
        a.sync();
        assert_eq!((a.others("cloud", start, 60), b.others("cloud", start, 60)), (5.0, 2.0));
        let old = start - 180;
        a.record("cloud", old, 60, 9.0);
        a.sync();
        b.sync();
        assert!(root.list("cloud").unwrap().iter().all(|e| !e.rel.contains(&format!("{old}+60"))));
    }
}
