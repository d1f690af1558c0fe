//! Secret material on disk: directories 0700 and files 0600, tightened when an older kumo (or
//! a umask) left them looser, and the encryption config of Secrets at rest.

use anyhow::{anyhow, Context};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Sets `path`'s permission bits to `mode` when they differ.
fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set mode {mode:o} on {}", path.display()))?;
    }
    Ok(())
}

/// Creates `dir` (and missing parents, 0700 too) or tightens it to 0700.
pub fn dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    set_mode(dir, 0o700)
}

/// Tightens an existing file to 0600 (nothing when it is not there).
pub fn file(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        set_mode(path, 0o600)?;
    }
    Ok(())
}

/// Writes a new file, 0600 from its first byte; fails if it exists.
pub fn create_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Where the config made on first start lives.
pub fn default_encryption_config(data_dir: &Path) -> PathBuf {
    data_dir.join("encryption-config.yaml")
}

/// Reads and checks an encryption config; every error names the file and the field.
pub fn load_encryption_config(path: &Path) -> anyhow::Result<kumo_apiserver::Transformer> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the encryption config {}", path.display()))?;
    kumo_apiserver::encryption::parse(&text)
        .map_err(|e| anyhow!("encryption config {}: {e}", path.display()))
}

/// The default config in the data dir: made with one fresh key on first start, else read (and
/// tightened to 0600).
pub fn data_dir_encryption_config(data_dir: &Path) -> anyhow::Result<kumo_apiserver::Transformer> {
    let path = default_encryption_config(data_dir);
    if path.exists() {
        file(&path)?;
    } else {
        let text =
            kumo_apiserver::encryption::generate().context("cannot make an encryption key")?;
        create_file(&path, &text)?;
    }
    load_encryption_config(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn modes_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b");
        dir(&d).unwrap();
        assert_eq!((mode(&tmp.path().join("a")), mode(&d)), (0o700, 0o700));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);

        let f = d.join("f");
        file(&f).unwrap();
        assert!(!f.exists());
        create_file(&f, "x").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert!(create_file(&f, "y").is_err());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
    }

    #[test]
    fn the_default_config_is_made_once_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        data_dir_encryption_config(tmp.path()).unwrap();
        let path = default_encryption_config(tmp.path());
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.contains("kind: EncryptionConfiguration"));
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = data_dir_encryption_config(tmp.path()).unwrap();
        assert!(t.encrypts("/registry/core/secrets/default/s"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        assert_eq!(mode(&path), 0o600);

        std::fs::write(&path, first.replace("secret: ", "secret: AAAA")).unwrap();
        let e = data_dir_encryption_config(tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "resources[0].providers[0].aesgcm.keys[0].secret: must be the base64 of 32 bytes"
            ),
            "{e}"
        );
    }
}
