//! The control plane's own credentials: the admin's Token (made on first start, its secret
//! written only into `<data-dir>/admin.config`, 0600), the import of an old plain-text `tokens`
//! file as hashed Tokens, and the in-process components' token, random per process and held
//! only in memory.

use anyhow::Context;
use kumo_api::token::{TokenSpec, TokenType, ADMIN_TOKEN};
use kumo_api::user::GROUP_MASTERS;
use kumo_api::{ObjectMeta, Token};
use kumo_apiserver::tokens::{exists, new_secret, store_with_secret};
use kumo_apiserver::Transformer;
use kumo_client::ClientConfig;
use kumo_store::{Store, StoreError};
use std::path::{Path, PathBuf};

/// The user of the scheduler, controllers and router that run inside the control plane.
pub const CONTROLLER_USER: &str = "system:kumo-controller-manager";

/// The plain-text token file of data dirs made before tokens were managed.
pub fn old_tokens_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tokens")
}

/// The admin's client config (`KUMO_CONFIG=<it> kumo …`).
pub fn admin_config_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.config")
}

/// A fresh random token for this process's own components.
pub fn controller_token() -> anyhow::Result<String> {
    new_secret().map_err(|e| anyhow::anyhow!("{e}"))
}

/// The authenticator entry of [`controller_token`]: `system:kumo-controller-manager` in
/// `system:masters`.
pub fn controller_tokens(token: &str) -> kumo_apiserver::StaticTokens {
    kumo_apiserver::StaticTokens(vec![(
        token.to_string(),
        kumo_api::UserInfo::new(CONTROLLER_USER, &[GROUP_MASTERS]),
    )])
}

fn admin_token(name: &str) -> Token {
    Token {
        metadata: ObjectMeta {
            name: name.to_string(),
            ..Default::default()
        },
        spec: TokenSpec {
            user: "admin".to_string(),
            groups: vec![GROUP_MASTERS.to_string()],
            type_: TokenType::Login,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Stores a `system:masters` token named `name` for `secret`, unless one of that name exists.
async fn put_admin(
    store: &dyn Store,
    t: &Transformer,
    name: &str,
    secret: &str,
) -> anyhow::Result<bool> {
    match store_with_secret(store, t, admin_token(name), secret).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(anyhow::anyhow!("cannot store token {name}: {e}")),
    }
}

/// Imports an old `tokens` file (the first line becomes Token `admin`, unless there is one, the
/// others `imported-N`, all `system:masters`) and removes it; else makes Token `admin` on first
/// start. Returns the admin's secret when this start knows it (it is never stored).
async fn bootstrap(
    store: &dyn Store,
    t: &Transformer,
    data_dir: &Path,
) -> anyhow::Result<Option<String>> {
    let old = old_tokens_path(data_dir);
    if old.exists() {
        let text = std::fs::read_to_string(&old)
            .with_context(|| format!("cannot read {}", old.display()))?;
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        // The first line was the admin's; when Token admin exists already (the file was put
        // back by hand), it is kept as `imported-0` and the admin's secret stays as it was.
        let mut admin = None;
        for (i, secret) in lines.iter().enumerate() {
            if i == 0 && put_admin(store, t, ADMIN_TOKEN, secret).await? {
                admin = Some(secret.to_string());
            } else {
                put_admin(store, t, &format!("imported-{i}"), secret).await?;
            }
        }
        std::fs::remove_file(&old).with_context(|| format!("cannot remove {}", old.display()))?;
        tracing::warn!(
            file = %old.display(),
            tokens = lines.len(),
            "imported the plain-text tokens file as hashed Tokens (admin, imported-N; see `kumo token ls`) and removed it"
        );
        return Ok(admin);
    }
    if exists(store, ADMIN_TOKEN)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the admin token: {e}"))?
    {
        return Ok(None);
    }
    let secret = controller_token()?;
    put_admin(store, t, ADMIN_TOKEN, &secret).await?;
    Ok(Some(secret))
}

/// Makes sure the admin's Token exists and `<data-dir>/admin.config` names `server` with the
/// admin's secret; returns that config, if the secret is known (`None` when admin.config was
/// removed after the first start: the secret is not kept anywhere else).
pub async fn admin_config(
    store: &dyn Store,
    t: &Transformer,
    data_dir: &Path,
    server: &str,
    ca_pem: &str,
) -> anyhow::Result<Option<ClientConfig>> {
    let path = admin_config_path(data_dir);
    let token = match bootstrap(store, t, data_dir).await? {
        Some(secret) => secret,
        None if path.exists() => ClientConfig::load(&path).map_err(anyhow::Error::msg)?.token,
        None => {
            tracing::warn!(
                path = %path.display(),
                "the admin token's secret is unknown ({} is gone): delete Token admin with another system:masters token, or make a new data dir",
                path.display()
            );
            return Ok(None);
        }
    };
    let config = super::client_config(server, &token, ca_pem);
    config
        .save(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_api::token::hash_secret;

    async fn token(store: &dyn Store, name: &str) -> Option<Token> {
        let kv = store
            .get(&format!("/registry/auth.kumo.dev/tokens/{name}"))
            .await
            .unwrap()?;
        Some(serde_json::from_slice(&kv.value).unwrap())
    }

    #[tokio::test]
    async fn the_first_start_makes_the_admin_and_later_ones_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = kumo_store::MemStore::new();
        let t = Transformer::identity();
        let first = admin_config(&store, &t, dir.path(), "http://a:1", "")
            .await
            .unwrap()
            .unwrap();
        let admin = token(&store, ADMIN_TOKEN).await.unwrap();
        assert_eq!(admin.token_hash(), hash_secret(&first.token));
        assert_eq!(admin.spec.groups, [GROUP_MASTERS]);
        let text = std::fs::read_to_string(admin_config_path(dir.path())).unwrap();
        assert!(text.contains(&first.token) && text.contains("http://a:1"));
        // A later start on another address keeps the secret and names the new address.
        let again = admin_config(&store, &t, dir.path(), "http://b:2", "")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (again.token, again.server.as_str()),
            (first.token, "http://b:2")
        );
        std::fs::remove_file(admin_config_path(dir.path())).unwrap();
        assert_eq!(
            admin_config(&store, &t, dir.path(), "x", "").await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn an_old_tokens_file_is_imported_hashed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(old_tokens_path(dir.path()), "first\n# note\n\nsecond\n").unwrap();
        let store = kumo_store::MemStore::new();
        let t = Transformer::identity();
        let config = admin_config(&store, &t, dir.path(), "http://a:1", "")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(config.token, "first");
        assert!(!old_tokens_path(dir.path()).exists());
        let imported = token(&store, "imported-1").await.unwrap();
        assert_eq!(imported.token_hash(), hash_secret("second"));
        assert_eq!(
            token(&store, ADMIN_TOKEN).await.unwrap().token_hash(),
            hash_secret("first")
        );
        let (kvs, _) = store.list("/").await.unwrap();
        assert!(kvs
            .iter()
            .all(|kv| !String::from_utf8_lossy(&kv.value).contains("second")));
        // A tokens file put back later leaves the admin as it is.
        std::fs::write(old_tokens_path(dir.path()), "third\n").unwrap();
        let again = admin_config(&store, &t, dir.path(), "http://a:1", "")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.token, "first");
        assert_eq!(
            token(&store, "imported-0").await.unwrap().token_hash(),
            hash_secret("third")
        );
    }
}
