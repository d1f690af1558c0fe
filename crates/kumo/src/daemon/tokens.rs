//! API tokens: the `tokens` file in the data dir, one token per line; the first is the admin's.

use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub fn tokens_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tokens")
}

/// Every accepted token (blank lines and `#` comments skipped).
pub fn all_tokens(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let path = tokens_path(data_dir);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// The admin token, created (random, 256 bits, mode 0600) on first start; a tokens file found
/// with a looser mode is tightened to 0600.
pub fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = tokens_path(data_dir);
    if !path.exists() {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        writeln!(f, "{token}")?;
        f.sync_all()?;
    }
    super::private::file(&path)?;
    all_tokens(data_dir)?.into_iter().next().with_context(|| {
        format!(
            "{} holds no token: add one line with a token, or remove the file to make a new one",
            path.display()
        )
    })
}
