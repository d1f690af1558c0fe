//! Where a long-lived secret comes from: an environment variable or a file, never argv (which
//! every local user can read in `ps` and /proc).

use anyhow::{anyhow, Context};
use std::path::Path;

/// The token given by `--token-file` (trimmed), else by `$env` (non-empty), else none. A
/// `--token VALUE` on the command line (`flag`) is refused with the ways that work.
pub fn token(flag: Option<&str>, file: Option<&Path>, env: &str) -> anyhow::Result<Option<String>> {
    if flag.is_some() {
        return Err(anyhow!(
            "--token is not accepted: a secret on the command line is visible to every local user; set {env} or pass --token-file PATH"
        ));
    }
    secret(file, "--token-file", env)
}

/// The secret in the file of the flag `file_flag` (trimmed), else in `$env` (non-empty), else
/// none.
pub fn secret(file: Option<&Path>, file_flag: &str, env: &str) -> anyhow::Result<Option<String>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {file_flag} {}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(anyhow!("{file_flag} {} is empty", path.display()));
        }
        return Ok(Some(token.to_string()));
    }
    Ok(std::env::var(env)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_files_or_the_environment_never_argv() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "s3cret\n").unwrap();
        let unset = "KUMO_TEST_TOKEN_NEVER_SET";
        assert_eq!(
            token(None, Some(&file), unset).unwrap().as_deref(),
            Some("s3cret")
        );
        assert_eq!(token(None, None, unset).unwrap(), None);
        let e = token(Some("s3cret"), None, "KUMO_TOKEN")
            .unwrap_err()
            .to_string();
        assert!(e.contains("set KUMO_TOKEN or pass --token-file"), "{e}");
        std::fs::write(&file, "\n").unwrap();
        assert!(token(None, Some(&file), unset)
            .unwrap_err()
            .to_string()
            .contains("is empty"));
        let missing = dir.path().join("missing");
        assert!(token(None, Some(&missing), unset).is_err());
    }
}
