//! The bearer token of a cloud endpoint, from the environment or a file.

use std::path::Path;

pub use switchyard_schemas::Secret;

use crate::cloud::config::AuthConfig;
use crate::{Error, Result};

impl AuthConfig {
    /// Reads the bearer token; errors name the variable or file, never the
    /// value. `base` resolves a relative `bearer_file`.
    pub fn load(&self, base: &Path) -> Result<Secret> {
        switchyard_schemas::read_secret(
            self.bearer_env.as_deref(),
            self.bearer_file.as_deref(),
            base,
            "auth.bearer_env",
            "auth.bearer_file",
        )
        .map_err(|e| Error::Config(if e.starts_with("auth.") { e } else { format!("auth: {e}") }))
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
        let neither = AuthConfig { bearer_env: None, bearer_file: None };
        let e = neither.load(Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("give exactly one of `auth.bearer_env` and `auth.bearer_file`"), "{e}");
    }
}
