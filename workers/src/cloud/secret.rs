//! Credentials from the environment or a file, kept out of logs.

use std::fmt;
use std::path::Path;

use crate::cloud::config::AuthConfig;
use crate::{Error, Result};

/// A secret value: `Debug` and `Display` print `***`, so it cannot end up
/// in a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
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

impl AuthConfig {
    /// Reads the bearer token; errors name the variable or file, never the
    /// value. `base` resolves a relative `bearer_file`.
    pub fn load(&self, base: &Path) -> Result<Secret> {
        let value = match (&self.bearer_env, &self.bearer_file) {
            (Some(var), None) => std::env::var(var).map_err(|_| {
                Error::Config(format!("auth.bearer_env: environment variable `{var}` is not set (or not UTF-8)"))
            })?,
            (None, Some(file)) => {
                let path = base.join(file);
                std::fs::read_to_string(&path)
                    .map_err(|e| Error::Config(format!("auth.bearer_file: cannot read {}: {e}", path.display())))?
            }
            _ => return Err(Error::Config("auth: give exactly one of `bearer_env` and `bearer_file`".into())),
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(Error::Config("auth: the token is empty".into()));
        }
        Ok(Secret(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_load_from_env_or_file_and_never_print() {
        std::env::set_var("SY_TEST_TOKEN", "  tok-123\n");
        let a = AuthConfig { bearer_env: Some("SY_TEST_TOKEN".into()), bearer_file: None };
        let s = a.load(Path::new(".")).unwrap();
        assert_eq!(s.expose(), "tok-123");
        assert!(!format!("{s:?} {s}").contains("tok"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), "file-tok\n").unwrap();
        let f = AuthConfig { bearer_env: None, bearer_file: Some("t".into()) };
        assert_eq!(f.load(dir.path()).unwrap().expose(), "file-tok");
        let missing = AuthConfig { bearer_env: Some("SY_TEST_TOKEN_UNSET".into()), bearer_file: None };
        let e = missing.load(Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("SY_TEST_TOKEN_UNSET"), "{e}");
    }
}
