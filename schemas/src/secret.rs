//! Credentials read from the environment or a file, kept out of logs.
//!
//! A manifest never holds a secret in plain text: it names where the value
//! is ([`SecretSource`]), and the value ([`Secret`]) prints as `***`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A secret value: `Debug` and `Display` print `***`, so it cannot end up
/// in a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (surrounding whitespace trimmed).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().trim().to_string())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret is read from: exactly one of `env` and `file`.
///
/// ```yaml
/// secrets:
///   sasl.password: { env: KAFKA_PASSWORD }
///   ssl.key.password: { file: secrets/client-key.password }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Environment variable holding the value.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the value (surrounding whitespace is trimmed); relative
    /// to the manifest's folder.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl SecretSource {
    /// Reads the value; a relative `file` is taken from `base`. The error
    /// names the variable or file, never a value.
    pub fn load(&self, base: &Path) -> Result<Secret, String> {
        read_secret(self.env.as_deref(), self.file.as_deref(), base, "env", "file")
    }

    /// Makes a relative `file` relative to `base` (the manifest's folder),
    /// so that it can be read from anywhere later.
    pub fn rebase(&mut self, base: &Path) {
        if let Some(f) = &mut self.file {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
    }
}

/// Reads a secret from the environment variable `env` or the file `file`
/// (exactly one); `env_key` and `file_key` are the manifest's names for the
/// two, used in errors.
pub fn read_secret(
    env: Option<&str>,
    file: Option<&Path>,
    base: &Path,
    env_key: &str,
    file_key: &str,
) -> Result<Secret, String> {
    let value = match (env, file) {
        (Some(var), None) => std::env::var(var)
            .map_err(|_| format!("{env_key}: environment variable `{var}` is not set (or not UTF-8)"))?,
        (None, Some(file)) => {
            let path = base.join(file);
            std::fs::read_to_string(&path).map_err(|e| format!("{file_key}: cannot read {}: {e}", path.display()))?
        }
        _ => return Err(format!("give exactly one of `{env_key}` and `{file_key}`")),
    };
    let secret = Secret::new(value);
    if secret.0.is_empty() {
        return Err(match (env, file) {
            (Some(var), _) => format!("{env_key}: environment variable `{var}` is empty"),
            (_, Some(file)) => format!("{file_key}: {} is empty", base.join(file).display()),
            _ => "the secret is empty".into(),
        });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_load_from_env_or_file_and_never_print() {
        std::env::set_var("SY_SCHEMAS_SECRET", "  pw-123\n");
        let env = SecretSource { env: Some("SY_SCHEMAS_SECRET".into()), file: None };
        let s = env.load(Path::new(".")).unwrap();
        assert_eq!(s.expose(), "pw-123");
        assert!(!format!("{s:?} {s} {env:?}").contains("pw-123"));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "file-pw\n").unwrap();
        let mut file = SecretSource { env: None, file: Some("pw".into()) };
        assert_eq!(file.load(dir.path()).unwrap().expose(), "file-pw");
        file.rebase(dir.path());
        assert_eq!(file.load(Path::new("/elsewhere")).unwrap().expose(), "file-pw");

        let unset = SecretSource { env: Some("SY_SCHEMAS_SECRET_UNSET".into()), file: None };
        let e = unset.load(Path::new(".")).unwrap_err();
        assert!(e.contains("`SY_SCHEMAS_SECRET_UNSET` is not set"), "{e}");
        let both = SecretSource { env: Some("A".into()), file: Some("b".into()) };
        assert!(both.load(Path::new(".")).unwrap_err().contains("exactly one"));
        std::fs::write(dir.path().join("blank"), " \n").unwrap();
        let blank = SecretSource { env: None, file: Some("blank".into()) };
        assert!(blank.load(dir.path()).unwrap_err().contains("is empty"));
    }
}
