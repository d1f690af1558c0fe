//! Pulling from an OCI / Docker v2 registry with oci-client, verifying every byte.

use crate::digest::{check, Digest};
use crate::error::{invalid, ImageError};
use crate::manifest::{self, Descriptor, Manifest, Parsed};
use crate::reference::ImageRef;
use crate::registries::RegistryAuth;
use crate::store::{Image, ImageStore, PullPhase, PullProgress};
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use std::time::Duration;

type Progress<'a> = &'a (dyn Fn(PullProgress) + Send + Sync);

/// Pulls `r` into the store (see [`ImageStore::ensure`]).
pub(crate) async fn pull(
    store: &ImageStore,
    r: &ImageRef,
    auth: &RegistryAuth,
    progress: Progress<'_>,
) -> Result<Image, ImageError> {
    let registries = store.registries();
    let protocol = if registries.allows_plain_http(r.registry()) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let client = oci_client::Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(15)),
        read_timeout: Some(Duration::from_secs(120)),
        ..ClientConfig::default()
    });
    let auth = registries.auth_for(r.registry(), auth).to_oci();
    let name = r.name();
    let rerr = |e| registry_error(&name, e);

    let (bytes, _) = client
        .pull_manifest_raw(r.oci(), &auth, manifest::ACCEPTED)
        .await
        .map_err(rerr)?;
    let mut digest = Digest::of(&bytes);
    if let Some(pinned) = r.digest() {
        check("manifest", &Digest::parse(pinned)?, &digest)?;
    }
    let mut extra = Vec::new();
    let manifest: Manifest = match manifest::parse(&bytes)? {
        Parsed::Manifest(m) => {
            store.blobs().put_bytes("manifest", &bytes, Some(&digest))?;
            m
        }
        Parsed::Index(index) => {
            store
                .blobs()
                .put_bytes("image index", &bytes, Some(&digest))?;
            extra.push(digest.clone());
            let (os, arch) = manifest::host_platform();
            let chosen =
                manifest::select(&index, os, arch).ok_or_else(|| ImageError::NoPlatform {
                    reference: name.clone(),
                    platform: format!("{os}/{arch}"),
                })?;
            let chosen = chosen.digest()?;
            let by_digest = r.oci().clone_with_digest(chosen.to_string());
            let (bytes, _) = client
                .pull_manifest_raw(&by_digest, &auth, manifest::ACCEPTED)
                .await
                .map_err(rerr)?;
            check("manifest", &chosen, &Digest::of(&bytes))?;
            let Parsed::Manifest(m) = manifest::parse(&bytes)? else {
                return Err(invalid("image index", "an index inside an index"));
            };
            store.blobs().put_bytes("manifest", &bytes, Some(&chosen))?;
            digest = chosen;
            m
        }
    };

    let config = manifest.config.digest()?;
    if !store.blobs().has(&config) {
        download(
            &client,
            r,
            &manifest.config,
            store,
            "image config",
            &|_, _| {},
        )
        .await?;
    }
    let (_, diff_ids) = manifest::parse_config(&store.blobs().read(&config)?)?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(invalid(
            "image",
            format!(
                "the manifest lists {} layers but the config {} diff ids",
                manifest.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let count = manifest.layers.len();
    for (i, (layer, diff_id)) in manifest.layers.iter().zip(&diff_ids).enumerate() {
        let report = |phase, bytes, total| {
            progress(PullProgress {
                digest: layer.digest.clone(),
                layer: i,
                layers: count,
                phase,
                bytes,
                total,
            })
        };
        let total = u64::try_from(layer.size).unwrap_or(0);
        let dest = store.layer_dir(diff_id.as_str());
        if dest.is_dir() {
            report(PullPhase::Cached, total, total);
            continue;
        }
        let blob = layer.digest()?;
        if !store.blobs().has(&blob) {
            download(&client, r, layer, store, "layer", &|got, total| {
                report(PullPhase::Downloading, got, total)
            })
            .await?;
        }
        report(PullPhase::Unpacking, total, total);
        let (path, tmp, expected) = (store.blobs().path(&blob), store.tmp(), diff_id.clone());
        tokio::task::spawn_blocking(move || {
            crate::unpack::unpack_layer(&path, &dest, &tmp, Some(&expected))
        })
        .await
        .map_err(|e| invalid("layer", format!("unpacking stopped: {e}")))??;
        report(PullPhase::Done, total, total);
    }
    store.install(&digest, &manifest, &extra, &[name])
}

/// Streams one blob into the store, checking its digest.
async fn download(
    client: &oci_client::Client,
    r: &ImageRef,
    desc: &Descriptor,
    store: &ImageStore,
    what: &str,
    on_bytes: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<(), ImageError> {
    let expected = desc.digest()?;
    let oci_desc = oci_client::manifest::OciDescriptor {
        media_type: desc.media_type.clone().unwrap_or_default(),
        digest: desc.digest.clone(),
        size: desc.size,
        ..Default::default()
    };
    let name = r.name();
    let mut stream = client
        .pull_blob_stream(r.oci(), &oci_desc)
        .await
        .map_err(|e| registry_error(&name, e))?;
    let total = stream
        .content_length
        .unwrap_or_else(|| u64::try_from(desc.size).unwrap_or(0));
    let mut w = store.blobs().writer()?;
    let mut got = 0u64;
    on_bytes(0, total);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| stream_error(&name, what, &expected, e))?;
        w.write(&chunk)?;
        got += chunk.len() as u64;
        on_bytes(got, total);
    }
    w.commit(&format!("{what} of {name}"), Some(&expected))?;
    Ok(())
}

/// A failure while streaming: oci-client's own digest check becomes our mismatch error.
fn stream_error(name: &str, what: &str, expected: &Digest, e: std::io::Error) -> ImageError {
    if let Some(oci_client::errors::DigestError::VerificationError { actual, .. }) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
    {
        return ImageError::DigestMismatch {
            what: format!("{what} of {name}"),
            expected: expected.to_string(),
            actual: actual.clone(),
        };
    }
    ImageError::Registry {
        reference: name.to_string(),
        message: chain(&e),
    }
}

/// The registry's own words for a failure.
pub(crate) fn registry_error(reference: &str, e: OciDistributionError) -> ImageError {
    let message = match &e {
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .map(|err| {
                let code = serde_json::to_value(&err.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
                    .to_lowercase()
                    .replace('_', " ");
                match (code.as_str(), err.message.as_str()) {
                    ("", m) => m.to_string(),
                    (c, "") => c.to_string(),
                    (c, m) if c == m.to_lowercase() => m.to_string(),
                    (c, m) => format!("{c}: {m}"),
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        OciDistributionError::UnauthorizedError { .. } => {
            "unauthorized: authentication required".to_string()
        }
        OciDistributionError::AuthenticationFailure(m) => format!("unauthorized: {m}"),
        OciDistributionError::ServerError { code, message, .. } => {
            let m = message.trim();
            if m.is_empty() {
                format!("the registry answered http {code}")
            } else {
                format!("the registry answered http {code}: {m}")
            }
        }
        OciDistributionError::ImageManifestNotFoundError(m) => format!("manifest unknown: {m}"),
        _ => chain(&e),
    };
    ImageError::Registry {
        reference: reference.to_string(),
        message,
    }
}

/// An error and its sources, joined by `: ` without repeats (reqwest nests the cause, e.g.
/// `connection refused`, several levels down).
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
