//! Which version of a registered model serves, shared by the worker that
//! serves it and the monitor that decides promotions.
//!
//! The registry holds `<name>/<version>/model.onnx` folders and, beside
//! them, `<name>/rollout.json`:
//!
//! ```json
//! {"stable": "1",
//!  "promoted": [{"version": "1", "at": "…", "reason": "…"}],
//!  "rejected": {"3": {"version": "3", "at": "…", "reason": "accuracy 0.61 < 0.80 − 0.02"}}}
//! ```
//!
//! The **stable** version answers; the **candidate** is the highest
//! registered version above it that was never rejected. A worker with a
//! rollout runs the candidate beside the stable version (canary or
//! shadow); the monitor promotes it (it becomes `stable`) or rejects it.
//! The file is the only state: restarts and other processes see the same
//! decisions, and it is replaced atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One promotion or rejection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RolloutDecision {
    /// The version decided on.
    pub version: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why, with the measured numbers.
    pub reason: String,
    /// Start of the period the version was judged on (µs since the epoch).
    #[serde(default)]
    pub evaluated_from_us: Option<i64>,
    /// End of that period (µs since the epoch).
    #[serde(default)]
    pub evaluated_to_us: Option<i64>,
}

/// `<registry>/<model>/rollout.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RolloutState {
    /// The version that serves; the highest registered version when absent.
    #[serde(default)]
    pub stable: Option<String>,
    /// Promotions, oldest first.
    #[serde(default)]
    pub promoted: Vec<RolloutDecision>,
    /// Versions rolled back, never taken up again as candidates.
    #[serde(default)]
    pub rejected: BTreeMap<String, RolloutDecision>,
}

/// Orders versions highest first: numbers numerically, then other names.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => y.cmp(&x),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        _ => a.cmp(b),
    }
}

/// Versions of `name` in `registry` that hold a `model.onnx`, highest
/// first. Folders starting with `.` are versions still being written.
pub fn registered_versions(registry: &Path, name: &str) -> Result<Vec<String>> {
    let dir = registry.join(name);
    let rd = std::fs::read_dir(&dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
    let mut vs: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.') && e.path().join("model.onnx").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    vs.sort_by(|a, b| version_order(a, b));
    Ok(vs)
}

impl RolloutState {
    /// Where the state of `model` lives.
    pub fn path(registry: &Path, model: &str) -> PathBuf {
        registry.join(model).join("rollout.json")
    }

    /// Reads the state; a registry without the file has the default state.
    pub fn load(registry: &Path, model: &str) -> Result<Self> {
        let path = Self::path(registry, model);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Invalid(format!("{}: not a rollout state: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(Error::Io { path: path.display().to_string(), source }),
        }
    }

    /// Replaces the file atomically (temporary file, fsync, rename).
    pub fn save(&self, registry: &Path, model: &str) -> Result<()> {
        use std::io::Write as _;
        let path = Self::path(registry, model);
        let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
        let io = |source| Error::Io { path: tmp.display().to_string(), source };
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes()).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        Ok(())
    }

    /// The serving version among `versions` (highest first): `stable`, or
    /// the highest when none is recorded.
    pub fn stable_of(&self, versions: &[String]) -> Option<String> {
        self.stable.clone().or_else(|| versions.first().cloned())
    }

    /// The candidate among `versions` (highest first): the highest version
    /// above the stable one that was not rejected.
    pub fn candidate_of(&self, versions: &[String]) -> Option<String> {
        let stable = self.stable_of(versions)?;
        versions
            .iter()
            .take_while(|v| version_order(v, &stable) == std::cmp::Ordering::Less)
            .find(|v| !self.rejected.contains_key(*v))
            .cloned()
    }

    /// Records that `d.version` now serves.
    pub fn promote(&mut self, d: RolloutDecision) {
        self.stable = Some(d.version.clone());
        self.promoted.push(d);
    }

    /// Records that `d.version` is rolled back.
    pub fn reject(&mut self, d: RolloutDecision) {
        self.rejected.insert(d.version.clone(), d);
    }

    /// The promotion that made the current stable version serve, if any.
    pub fn last_promotion(&self) -> Option<&RolloutDecision> {
        let stable = self.stable.as_ref()?;
        self.promoted.iter().rev().find(|d| &d.version == stable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: &str) -> RolloutDecision {
        RolloutDecision {
            version: v.into(),
            at: "t".into(),
            reason: "r".into(),
            evaluated_from_us: None,
            evaluated_to_us: None,
        }
    }

    fn vs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn candidate_is_the_highest_unrejected_version_above_stable() {
        let mut s = RolloutState::default();
        assert_eq!(s.stable_of(&vs(&["3", "2", "1"])).as_deref(), Some("3"));
        assert_eq!(s.candidate_of(&vs(&["3", "2", "1"])), None, "without a record the highest serves");
        s.stable = Some("1".into());
        assert_eq!(s.candidate_of(&vs(&["3", "2", "1"])).as_deref(), Some("3"));
        s.reject(d("3"));
        assert_eq!(s.candidate_of(&vs(&["3", "2", "1"])).as_deref(), Some("2"));
        s.promote(d("2"));
        assert_eq!(s.stable.as_deref(), Some("2"));
        assert_eq!(s.candidate_of(&vs(&["3", "2", "1"])), None, "3 was rejected, 1 is older");
        assert_eq!(s.candidate_of(&vs(&["10", "3", "2", "1"])).as_deref(), Some("10"), "numeric order");
        assert_eq!(s.last_promotion().map(|d| d.version.as_str()), Some("2"));
    }

    #[test]
    fn state_round_trips_and_broken_files_are_named() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("m")).unwrap();
        assert_eq!(RolloutState::load(t.path(), "m").unwrap(), RolloutState::default());
        let mut s = RolloutState::default();
        s.promote(d("2"));
        s.reject(d("3"));
        s.save(t.path(), "m").unwrap();
        assert_eq!(RolloutState::load(t.path(), "m").unwrap(), s);
        std::fs::write(RolloutState::path(t.path(), "m"), "{\"stable\": 2}").unwrap();
        let err = RolloutState::load(t.path(), "m").unwrap_err().to_string();
        assert!(err.contains("rollout.json") && err.contains("line 1 column"), "{err}");
    }

    #[test]
    fn versions_being_written_are_not_listed() {
        let t = tempfile::tempdir().unwrap();
        for v in ["1", "2", ".tmp-3-99", "notes"] {
            std::fs::create_dir_all(t.path().join("m").join(v)).unwrap();
            if v != "notes" {
                std::fs::write(t.path().join("m").join(v).join("model.onnx"), b"x").unwrap();
            }
        }
        assert_eq!(registered_versions(t.path(), "m").unwrap(), ["2", "1"]);
    }
}
