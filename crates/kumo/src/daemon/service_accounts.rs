//! The service-account signing key, `<data-dir>/pki/sa.key` (PEM PKCS#8 ECDSA P-256, 0600 in a
//! 0700 directory), made on first start, and its wiring into the API server's config.

use anyhow::Context;
use kumo_apiserver::ServiceAccounts;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("pki").join("sa.key")
}

/// The key of `data_dir`, made when there is none; a key file found looser is tightened.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<ServiceAccounts> {
    let path = key_path(data_dir);
    if let Some(dir) = path.parent() {
        super::private::dir(dir)?;
    }
    if !path.exists() {
        let pem = ServiceAccounts::generate_key()
            .map_err(|e| anyhow::anyhow!("cannot make a service-account key: {e}"))?;
        super::private::create_file(&path, &pem)?;
    }
    super::private::file(&path)?;
    let pem = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the service-account key {}", path.display()))?;
    ServiceAccounts::new(&pem).map_err(|e| {
        anyhow::anyhow!(
            "the service-account key {} is not usable: {e} (remove it to make a new one; tokens issued with it stop working)",
            path.display()
        )
    })
}

/// Lets `config` issue service-account tokens with `data_dir`'s key and accept them after the
/// authenticator it has.
pub fn install(config: &mut kumo_apiserver::Config, data_dir: &Path) -> anyhow::Result<()> {
    let sa = Arc::new(load_or_create(data_dir)?);
    config.authenticator = Arc::new(kumo_apiserver::Chain(vec![
        config.authenticator.clone(),
        sa.clone(),
    ]));
    config.service_accounts = Some(sa);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_key_is_made_once_and_kept_private() {
        let tmp = tempfile::tempdir().unwrap();
        load_or_create(tmp.path()).unwrap();
        let path = key_path(tmp.path());
        let first = std::fs::read_to_string(&path).unwrap();
        assert_eq!((mode(&path), mode(path.parent().unwrap())), (0o600, 0o700));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        load_or_create(tmp.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first, "kept");
        assert_eq!(mode(&path), 0o600);
        std::fs::write(&path, "garbage").unwrap();
        let e = load_or_create(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("sa.key is not usable"), "{e}");
    }
}
