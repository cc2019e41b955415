//! The model registry: a folder of `<name>/<version>/model.onnx` with a
//! `metadata.json` beside each model.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `metadata.json` of a registered model version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelMetadata {
    /// Model name (must match the folder).
    pub name: String,
    /// Version (must match the folder).
    pub version: String,
    /// Where the model came from (free text).
    #[serde(default)]
    pub framework: Option<String>,
    /// Name of the float32 `[batch, features]` input tensor.
    pub input: String,
    /// How to read the outputs.
    pub outputs: OutputMapping,
    /// Feature names in input order; must equal the pipeline's pre-processing output.
    pub feature_order: Vec<String>,
    /// SHA-256 of `model.onnx`, checked at start-up.
    pub sha256: String,
    /// Training provenance (free form).
    #[serde(default)]
    pub training: serde_json::Value,
}

/// Output tensors of a classifier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputMapping {
    /// int64 `[batch]` tensor with the predicted class; derived from the
    /// score (≥ 0.5) when absent.
    #[serde(default)]
    pub label: Option<String>,
    /// float32 `[batch, classes]` tensor of class probabilities.
    pub probabilities: String,
    /// Column of `probabilities` that is the score.
    #[serde(default = "one")]
    pub positive_class_index: usize,
}

fn one() -> usize {
    1
}

/// A resolved registry entry.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// Path of `model.onnx`.
    pub onnx_path: PathBuf,
    /// Its metadata.
    pub metadata: ModelMetadata,
}

/// Versions of `name` in `registry`, highest first (numeric versions sort
/// numerically, others after them by name).
pub fn versions(registry: &Path, name: &str) -> Result<Vec<String>> {
    switchyard_schemas::registered_versions(registry, name)
        .map_err(|e| Error::Registry(format!("model `{name}` not found: cannot read {e}")))
}

/// The highest version of `name` in `registry`.
pub fn latest(registry: &Path, name: &str) -> Result<String> {
    versions(registry, name)?.into_iter().next().ok_or_else(|| {
        Error::Registry(format!(
            "model `{name}` has no version with a model.onnx under {}",
            registry.join(name).display()
        ))
    })
}

/// Finds `name` at `version` (the highest when `None`) and reads its metadata.
pub fn lookup(registry: &Path, name: &str, version: Option<&str>) -> Result<ModelEntry> {
    let version = match version {
        Some(v) => v.to_string(),
        None => latest(registry, name)?,
    };
    let dir = registry.join(name).join(&version);
    let onnx_path = dir.join("model.onnx");
    if !onnx_path.is_file() {
        return Err(Error::Registry(format!("file not found: {}", onnx_path.display())));
    }
    let meta_path = dir.join("metadata.json");
    let text =
        std::fs::read(&meta_path).map_err(|source| Error::Io { path: meta_path.display().to_string(), source })?;
    let metadata: ModelMetadata =
        serde_json::from_slice(&text).map_err(|e| Error::Registry(format!("{}: {e}", meta_path.display())))?;
    if metadata.name != name || metadata.version != version {
        return Err(Error::Registry(format!(
            "{}: says {}/{} but lives in {name}/{version}",
            meta_path.display(),
            metadata.name,
            metadata.version
        )));
    }
    Ok(ModelEntry { onnx_path, metadata })
}

impl ModelEntry {
    /// Reads the ONNX file and checks its SHA-256 against the metadata.
    pub fn read_verified(&self) -> Result<Vec<u8>> {
        let bytes = std::fs::read(&self.onnx_path)
            .map_err(|source| Error::Io { path: self.onnx_path.display().to_string(), source })?;
        let actual = switchyard_schemas::sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(&self.metadata.sha256) {
            return Err(Error::Registry(format!(
                "{}: sha256 is {actual} but metadata.json says {}; the file changed after registration",
                self.onnx_path.display(),
                self.metadata.sha256
            )));
        }
        Ok(bytes)
    }

    /// Checks the model's feature order against what pre-processing produces.
    pub fn check_features(&self, produced: &[String]) -> Result<()> {
        if self.metadata.feature_order == produced {
            return Ok(());
        }
        let first_diff = self
            .metadata
            .feature_order
            .iter()
            .zip(produced)
            .position(|(a, b)| a != b)
            .unwrap_or(self.metadata.feature_order.len().min(produced.len()));
        Err(Error::Registry(format!(
            "model {}/{} expects {} features ({}), pre-processing produces {} ({}); first difference at position {first_diff}",
            self.metadata.name,
            self.metadata.version,
            self.metadata.feature_order.len(),
            self.metadata.feature_order.join(", "),
            produced.len(),
            produced.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, version: &str, body: &[u8]) {
        let d = dir.join(name).join(version);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("model.onnx"), body).unwrap();
        let meta = serde_json::json!({
            "name": name, "version": version, "input": "features",
            "outputs": {"probabilities": "probabilities"},
            "feature_order": ["a", "b"], "sha256": switchyard_schemas::sha256_hex(body),
        });
        std::fs::write(d.join("metadata.json"), meta.to_string()).unwrap();
    }

    #[test]
    fn latest_version_is_highest_number() {
        let t = tempfile::tempdir().unwrap();
        for v in ["2", "10", "9"] {
            write(t.path(), "m", v, b"x");
        }
        assert_eq!(versions(t.path(), "m").unwrap(), ["10", "9", "2"]);
        assert_eq!(lookup(t.path(), "m", None).unwrap().metadata.version, "10");
    }

    #[test]
    fn tampered_model_is_refused() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "m", "1", b"original");
        let e = lookup(t.path(), "m", Some("1")).unwrap();
        assert!(e.read_verified().is_ok());
        std::fs::write(&e.onnx_path, b"changed").unwrap();
        let err = e.read_verified().unwrap_err().to_string();
        assert!(err.contains("sha256") && err.contains("model.onnx"), "{err}");
    }

    #[test]
    fn missing_model_and_feature_mismatch_are_explained() {
        let t = tempfile::tempdir().unwrap();
        let err = lookup(t.path(), "nope", None).unwrap_err().to_string();
        assert!(err.contains("`nope` not found"), "{err}");
        write(t.path(), "m", "1", b"x");
        let e = lookup(t.path(), "m", None).unwrap();
        let err = e.check_features(&["a".into(), "c".into()]).unwrap_err().to_string();
        assert!(err.contains("position 1"), "{err}");
        assert!(e.check_features(&["a".into(), "b".into()]).is_ok());
    }
}
