//! Importing images from an OCI layout directory, an OCI archive or a `docker save` archive.

use crate::digest::Digest;
use crate::error::{invalid, io_err, ImageError};
use crate::manifest::{self, Descriptor, Index, Manifest, Parsed};
use crate::reference::ImageRef;
use crate::store::{Image, ImageStore};
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};

const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// See [`ImageStore::import`].
pub(crate) fn import(
    store: &ImageStore,
    path: &Path,
    name: Option<&str>,
) -> Result<Vec<Image>, ImageError> {
    let name = name
        .map(|n| ImageRef::parse(n).map(|r| r.name()))
        .transpose()?;
    let meta = std::fs::metadata(path).map_err(io_err(format!("reading {}", path.display())))?;
    if meta.is_dir() {
        return import_dir(store, path, name);
    }
    // An archive: unpacked into tmp/ (the tar crate refuses entries leaving the directory).
    let work = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(store.tmp())
        .map_err(io_err("creating a temporary import dir"))?;
    let file = std::fs::File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    archive.set_preserve_permissions(false);
    archive
        .unpack(work.path())
        .map_err(|e| invalid(format!("archive {}", path.display()), e))?;
    import_dir(store, work.path(), name)
}

fn import_dir(
    store: &ImageStore,
    dir: &Path,
    name: Option<String>,
) -> Result<Vec<Image>, ImageError> {
    if dir.join("index.json").is_file() {
        import_layout(store, dir, name)
    } else if dir.join("manifest.json").is_file() {
        import_docker(store, dir, name)
    } else {
        Err(invalid(
            format!("image archive {}", dir.display()),
            "neither an OCI layout (index.json) nor a docker archive (manifest.json)",
        ))
    }
}

/// A relative path inside `dir`, refusing `..` and absolute paths.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf, ImageError> {
    let p = Path::new(rel);
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(invalid(
            "archive",
            format!("path {rel:?} leaves the archive"),
        ));
    }
    Ok(dir.join(p))
}

/// Copies a blob of an OCI layout into the store, verifying it.
fn copy_blob(
    store: &ImageStore,
    dir: &Path,
    digest: &Digest,
    what: &str,
) -> Result<(), ImageError> {
    if store.blobs().has(digest) {
        return Ok(());
    }
    let path = inside(dir, &format!("blobs/sha256/{}", digest.hex()))?;
    let mut file =
        std::fs::File::open(&path).map_err(io_err(format!("opening {what} {digest}")))?;
    store.blobs().put_reader(what, &mut file, Some(digest))?;
    Ok(())
}

fn import_layout(
    store: &ImageStore,
    dir: &Path,
    name: Option<String>,
) -> Result<Vec<Image>, ImageError> {
    let bytes = std::fs::read(dir.join("index.json")).map_err(io_err("reading index.json"))?;
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| invalid("index.json", e))?;
    if name.is_some() && index.manifests.len() != 1 {
        return Err(invalid(
            "import",
            format!(
                "a name needs an archive with one image; this one has {}",
                index.manifests.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for desc in &index.manifests {
        let names = match &name {
            Some(n) => vec![n.clone()],
            None => names_of(desc),
        };
        let digest = desc.digest()?;
        copy_blob(store, dir, &digest, "manifest")?;
        let mut extra = Vec::new();
        let (manifest_digest, manifest) = match manifest::parse(&store.blobs().read(&digest)?)? {
            Parsed::Manifest(m) => (digest, m),
            Parsed::Index(inner) => {
                let (os, arch) = manifest::host_platform();
                let chosen = manifest::select(&inner, os, arch)
                    .ok_or_else(|| ImageError::NoPlatform {
                        reference: names.first().cloned().unwrap_or(digest.to_string()),
                        platform: format!("{os}/{arch}"),
                    })?
                    .digest()?;
                copy_blob(store, dir, &chosen, "manifest")?;
                let Parsed::Manifest(m) = manifest::parse(&store.blobs().read(&chosen)?)? else {
                    return Err(invalid("image index", "an index inside an index"));
                };
                extra.push(digest);
                (chosen, m)
            }
        };
        copy_blob(store, dir, &manifest.config.digest()?, "image config")?;
        for l in &manifest.layers {
            copy_blob(store, dir, &l.digest()?, "layer")?;
        }
        out.push(store.install(&manifest_digest, &manifest, &extra, &names)?);
    }
    Ok(out)
}

/// Names from an index entry: containerd's full name, or a ref.name that is a full reference.
fn names_of(desc: &Descriptor) -> Vec<String> {
    let full = desc.annotation(NAME_ANNOTATION).or_else(|| {
        desc.annotation(REF_ANNOTATION)
            .filter(|n| n.contains('/') || n.contains(':') || n.contains('@'))
    });
    full.and_then(|n| ImageRef::parse(n).ok())
        .map(|r| vec![r.name()])
        .unwrap_or_default()
}

/// One image of a `docker save` archive's manifest.json.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker(
    store: &ImageStore,
    dir: &Path,
    name: Option<String>,
) -> Result<Vec<Image>, ImageError> {
    let bytes =
        std::fs::read(dir.join("manifest.json")).map_err(io_err("reading manifest.json"))?;
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&bytes).map_err(|e| invalid("manifest.json", e))?;
    if name.is_some() && entries.len() != 1 {
        return Err(invalid(
            "import",
            format!(
                "a name needs an archive with one image; this one has {}",
                entries.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for entry in entries {
        let put = |rel: &str, what: &str| -> Result<Descriptor, ImageError> {
            let path = inside(dir, rel)?;
            let mut file =
                std::fs::File::open(&path).map_err(io_err(format!("opening {what} {rel}")))?;
            let (digest, size) = store.blobs().put_reader(what, &mut file, None)?;
            Ok(Descriptor {
                media_type: None,
                digest: digest.to_string(),
                size: i64::try_from(size).unwrap_or(i64::MAX),
                platform: None,
                annotations: None,
            })
        };
        let mut config = put(&entry.config, "image config")?;
        config.media_type = Some(manifest::OCI_CONFIG.to_string());
        let mut layers = Vec::new();
        for l in &entry.layers {
            let mut d = put(l, "layer")?;
            d.media_type = Some(manifest::OCI_LAYER_TAR.to_string());
            layers.push(d);
        }
        // docker save has no manifest: write the OCI manifest it stands for.
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(manifest::OCI_MANIFEST.to_string()),
            config,
            layers,
        };
        let json = serde_json::to_vec(&manifest).map_err(|e| invalid("manifest", e))?;
        let digest = store.blobs().put_bytes("manifest", &json, None)?;
        let names = match &name {
            Some(n) => vec![n.clone()],
            None => entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .filter_map(|t| ImageRef::parse(t).ok().map(|r| r.name()))
                .collect(),
        };
        out.push(store.install(&digest, &manifest, &[], &names)?);
    }
    Ok(out)
}
