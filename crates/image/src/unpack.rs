//! Unpacks one layer (tar, gzip or zstd) into overlayfs form, atomically and without escaping.

use crate::digest::{check, Digest, HashingReader};
use crate::error::{io_err, ImageError};
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Where a PAX header carries an extended attribute (`SCHILY.xattr.<name>`).
const PAX_XATTR: &[u8] = b"SCHILY.xattr.";

/// Whether a layer may set the extended attribute `name` on the host's disk. Kept: `user.*`
/// (but not `user.overlay.*`, overlayfs's own under `userxattr`), `security.capability` (file
/// capabilities, as `ping` in many images has) and POSIX ACLs. Skipped: `trusted.*`, where
/// overlayfs keeps its own state (`trusted.overlay.opaque`, `redirect`, `metacopy`: a layer
/// could hide or redirect files of the layers below; kumo sets the opaque marker itself from
/// `.wh..wh..opq`), every other `security.*` (SELinux labels, IMA/EVM signatures: the host's
/// policy, not an image's) and every other `system.*`.
pub(crate) fn xattr_allowed(name: &[u8]) -> bool {
    (name.starts_with(b"user.") && !name.starts_with(b"user.overlay."))
        || matches!(
            name,
            b"security.capability" | b"system.posix_acl_access" | b"system.posix_acl_default"
        )
}

/// What one tar entry asks for, once its path is checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The layer's root itself (`./`): nothing to write.
    Root,
    /// Write the entry at this relative path.
    Write(PathBuf),
    /// `dir/.wh.name`: hide `dir/name` of lower layers (a 0/0 character device in overlayfs).
    Whiteout(PathBuf),
    /// `dir/.wh..wh..opq`: hide everything lower layers have in `dir` (an opaque directory).
    Opaque(PathBuf),
}

/// Turns an entry path into a relative path inside the layer: leading `/` and `.` are dropped,
/// `..` is refused.
pub(crate) fn normalize(raw: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("`..` would leave the layer".to_string()),
            Component::Normal(part) => out.push(part),
        }
    }
    Ok(out)
}

/// Classifies an entry by its path (pure; the unsafe-path rules as data are tested below).
pub(crate) fn plan(raw: &Path) -> Result<Plan, ImageError> {
    let unsafe_entry = |reason: String| ImageError::UnsafeEntry {
        path: raw.display().to_string(),
        reason,
    };
    let rel = normalize(raw).map_err(unsafe_entry)?;
    let Some(name) = rel.file_name() else {
        return Ok(Plan::Root);
    };
    let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
    let name = name.as_bytes();
    if name == OPAQUE_MARKER.as_bytes() {
        return Ok(Plan::Opaque(parent));
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        if hidden.is_empty() || hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return Err(unsafe_entry("malformed whiteout".to_string()));
        }
        return Ok(Plan::Whiteout(parent.join(OsStr::from_bytes(hidden))));
    }
    Ok(Plan::Write(rel))
}

/// A finished layer: the bytes of its files.
#[derive(Debug)]
pub(crate) struct Unpacked {
    pub size: u64,
}

/// Unpacks the layer blob at `blob` into `dest` (which must not exist yet): into a fresh dir
/// under `tmp`, then renamed. With `expected`, the uncompressed stream must hash to it.
pub(crate) fn unpack_layer(
    blob: &Path,
    dest: &Path,
    tmp: &Path,
    expected: Option<&Digest>,
) -> Result<Unpacked, ImageError> {
    let file = std::fs::File::open(blob).map_err(io_err(format!("opening {}", blob.display())))?;
    let work = tempfile::Builder::new()
        .prefix("layer-")
        .tempdir_in(tmp)
        .map_err(io_err("creating a temporary layer dir"))?;
    let root = work.path().join("fs");
    std::fs::create_dir(&root).map_err(io_err("creating a temporary layer dir"))?;
    let reader = decompress(BufReader::new(file)).map_err(io_err("reading a layer"))?;
    let mut hashing = HashingReader::new(reader);
    let size = unpack_tar(&mut hashing, &root)?;
    let (diff_id, _) = hashing
        .finish()
        .map_err(io_err("reading the end of a layer"))?;
    if let Some(expected) = expected {
        check("uncompressed layer", expected, &diff_id)?;
    }
    match std::fs::rename(&root, dest) {
        Ok(()) => {}
        // Another pull unpacked the same layer first: theirs is as good as ours.
        Err(_) if dest.is_dir() => {}
        Err(e) => return Err(io_err(format!("moving a layer to {}", dest.display()))(e)),
    }
    Ok(Unpacked { size })
}

/// Chooses the decompressor from the stream's first bytes (gzip, zstd, or a plain tar).
fn decompress<'a, R: BufRead + 'a>(mut r: R) -> io::Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else {
        Ok(Box::new(r))
    }
}

/// Writes every entry of a tar stream under `root`; returns the bytes of regular files.
pub(crate) fn unpack_tar(reader: &mut dyn Read, root: &Path) -> Result<u64, ImageError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    // Extended attributes go through `xattr_allowed` (set_xattrs), never all of them.
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut size = 0u64;
    let entries = archive.entries().map_err(io_err("reading a layer"))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("reading a layer entry"))?;
        let raw = entry.path().map_err(io_err("reading a layer entry"))?;
        let raw = raw.into_owned();
        match plan(&raw)? {
            Plan::Root => {}
            Plan::Opaque(dir) => {
                let path = safe_parent(root, &dir, &raw)?;
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => remove_any(&path).and_then(|()| make_dir(&path))?,
                    Err(_) => make_dir(&path)?,
                }
                xattr::set(&path, "trusted.overlay.opaque", b"y").map_err(io_err(format!(
                    "marking {} opaque (overlayfs needs root)",
                    dir.display()
                )))?;
            }
            Plan::Whiteout(hidden) => {
                let path = safe_parent(root, &hidden, &raw)?;
                remove_any(&path)?;
                nix::sys::stat::mknod(
                    &path,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .map_err(|e| io_err(format!("whiting out {}", hidden.display()))(e.into()))?;
            }
            Plan::Write(rel) => {
                let path = safe_parent(root, &rel, &raw)?;
                let xattrs = pax_xattrs(&mut entry, &raw)?;
                size += write_entry(&mut entry, root, &path, &raw)?;
                set_xattrs(&path, &xattrs, &raw, entry.header().entry_type())?;
            }
        }
    }
    Ok(size)
}

/// Extended attributes as (name, value).
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The entry's extended attributes from its PAX header.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, raw: &Path) -> Result<Xattrs, ImageError> {
    let Some(exts) = entry.pax_extensions().map_err(io_err(format!(
        "reading the PAX header of {}",
        raw.display()
    )))?
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for ext in exts {
        let ext = ext.map_err(io_err(format!(
            "reading the PAX header of {}",
            raw.display()
        )))?;
        if let Some(name) = ext.key_bytes().strip_prefix(PAX_XATTR) {
            out.push((name.to_vec(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

/// Sets the allowed extended attributes on a written file or directory (after its owner, since
/// a chown clears `security.capability`); the others are skipped.
fn set_xattrs(
    path: &Path,
    xattrs: &Xattrs,
    raw: &Path,
    kind: tar::EntryType,
) -> Result<(), ImageError> {
    // Only files and directories: a hard link's attributes are its target's, set by the
    // target's own entry, and the kernel takes no `user.*` xattr on links, devices or fifos.
    if !(kind.is_file() || kind.is_dir()) {
        return Ok(());
    }
    for (name, value) in xattrs {
        let shown = String::from_utf8_lossy(name);
        if !xattr_allowed(name) {
            tracing::debug!(entry = %raw.display(), xattr = %shown, "skipping an extended attribute a layer may not set");
            continue;
        }
        xattr::set(path, OsStr::from_bytes(name), value).map_err(io_err(format!(
            "setting the extended attribute {shown} of {}",
            raw.display()
        )))?;
    }
    Ok(())
}

/// `root/rel`, after checking that every parent inside the layer is a real directory (created
/// when missing), so that no write goes through a symlink.
fn safe_parent(root: &Path, rel: &Path, raw: &Path) -> Result<PathBuf, ImageError> {
    let mut path = root.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents {
        path.push(c);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ImageError::UnsafeEntry {
                    path: raw.display().to_string(),
                    reason: format!(
                        "parent {} is not a directory",
                        Path::new(c.as_os_str()).display()
                    ),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => make_dir(&path)?,
            Err(e) => return Err(io_err(format!("inspecting {}", path.display()))(e)),
        }
    }
    Ok(root.join(rel))
}

fn make_dir(path: &Path) -> Result<(), ImageError> {
    match std::fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(io_err(format!("creating {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Removes whatever is at `path` (file, link, device or directory tree); nothing is fine.
fn remove_any(path: &Path) -> Result<(), ImageError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
    result.map_err(io_err(format!("replacing {}", path.display())))
}

/// Writes one entry at `path` (its parents already checked).
fn write_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    root: &Path,
    path: &Path,
    raw: &Path,
) -> Result<u64, ImageError> {
    use tar::EntryType as T;
    let kind = entry.header().entry_type();
    let existing = std::fs::symlink_metadata(path).ok();
    let is_dir = matches!(kind, T::Directory);
    // A directory entry over an existing directory keeps its contents; anything else replaces.
    if existing.as_ref().is_some_and(|m| !(is_dir && m.is_dir())) {
        remove_any(path)?;
    }
    let fail = |what: &str| io_err(format!("{what} {}", raw.display()));
    match kind {
        T::Link => {
            let target = entry
                .link_name()
                .map_err(fail("reading the link of"))?
                .ok_or_else(|| ImageError::UnsafeEntry {
                    path: raw.display().to_string(),
                    reason: "hard link without a target".to_string(),
                })?;
            let rel = normalize(&target).map_err(|reason| ImageError::UnsafeEntry {
                path: raw.display().to_string(),
                reason: format!("hard link target: {reason}"),
            })?;
            let source = safe_parent(root, &rel, raw)?;
            match std::fs::symlink_metadata(&source) {
                Ok(m) if !m.is_dir() => {}
                _ => {
                    return Err(ImageError::UnsafeEntry {
                        path: raw.display().to_string(),
                        reason: format!("hard link target {} is not in the layer", rel.display()),
                    })
                }
            }
            std::fs::hard_link(&source, path).map_err(fail("hard linking"))?;
            Ok(0)
        }
        T::Char | T::Block | T::Fifo => {
            let h = entry.header();
            let mode = h.mode().map_err(fail("reading the mode of"))?;
            let major = h.device_major().ok().flatten().unwrap_or(0);
            let minor = h.device_minor().ok().flatten().unwrap_or(0);
            let sflag = match kind {
                T::Char => nix::sys::stat::SFlag::S_IFCHR,
                T::Block => nix::sys::stat::SFlag::S_IFBLK,
                _ => nix::sys::stat::SFlag::S_IFIFO,
            };
            let dev = nix::sys::stat::makedev(major.into(), minor.into());
            nix::sys::stat::mknod(
                path,
                sflag,
                nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777),
                dev,
            )
            .map_err(|e| fail("creating the device")(e.into()))?;
            let uid = h.uid().unwrap_or(0) as u32;
            let gid = h.gid().unwrap_or(0) as u32;
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(fail("chowning"))?;
            Ok(0)
        }
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => Ok(0),
        _ => {
            let size = if kind.is_file() { entry.size() } else { 0 };
            entry.unpack(path).map_err(fail("unpacking"))?;
            Ok(size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Result<Plan, &str>) {
        match (plan(Path::new(raw)), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{raw}"),
            (Err(e), Err(fragment)) => {
                let text = e.to_string();
                assert!(text.contains(fragment), "{raw}: {text}");
            }
            (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
        }
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn entry_paths_become_plans() {
        check("./", Ok(Plan::Root));
        check("bin/busybox", Ok(Plan::Write(p("bin/busybox"))));
        check("./bin/sh", Ok(Plan::Write(p("bin/sh"))));
        check("/etc/passwd", Ok(Plan::Write(p("etc/passwd"))));
        check("etc/.wh.hosts", Ok(Plan::Whiteout(p("etc/hosts"))));
        check(".wh.tmp", Ok(Plan::Whiteout(p("tmp"))));
        check("var/cache/.wh..wh..opq", Ok(Plan::Opaque(p("var/cache"))));
        check(".wh..wh..opq", Ok(Plan::Opaque(p(""))));
        check("etc/.whiteout", Ok(Plan::Write(p("etc/.whiteout"))));
    }

    #[test]
    fn layers_may_set_only_container_xattrs() {
        let check = |name: &str, allowed: bool| {
            assert_eq!(xattr_allowed(name.as_bytes()), allowed, "{name}");
        };
        check("user.mime_type", true);
        check("security.capability", true);
        check("system.posix_acl_access", true);
        check("system.posix_acl_default", true);
        check("trusted.overlay.opaque", false);
        check("trusted.overlay.redirect", false);
        check("trusted.overlay.metacopy", false);
        check("trusted.foo", false);
        check("user.overlay.opaque", false);
        check("security.selinux", false);
        check("security.ima", false);
        check("security.evm", false);
        check("security.capability2", false);
        check("system.nfs4_acl", false);
        check("user", false);
        check("", false);
    }

    #[test]
    fn escaping_paths_are_refused() {
        check("../evil", Err("`..` would leave the layer"));
        check("a/../../evil", Err("`..`"));
        check("/../etc/shadow", Err("`..`"));
        check("a/.wh.", Err("malformed whiteout"));
        check("a/.wh..wh.x", Err("malformed whiteout"));
        check("../.wh.x", Err("`..`"));
    }

    /// Builds a tar in memory from (path, kind, data-or-link-target).
    fn tar_of(entries: &[(&str, char, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1);
            match kind {
                'd' => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, path, io::empty()).unwrap();
                }
                'f' => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_bytes()).unwrap();
                }
                'l' => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                'h' => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                _ => unreachable!(),
            }
        }
        b.into_inner().unwrap()
    }

    /// Writes raw path bytes into a header, bypassing the builder's own `..` check.
    fn tar_with_raw_path(path: &str) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_mode(0o644);
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        let mut data = [0u8; 512];
        data[0] = b'x';
        out.extend_from_slice(&data);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<u64, ImageError>) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let r = unpack_tar(&mut &bytes[..], &root);
        (t, r)
    }

    #[test]
    fn whiteouts_become_overlay_form() {
        use std::os::unix::fs::FileTypeExt;
        let (t, r) = unpack(&tar_of(&[
            ("etc/", 'd', ""),
            ("etc/.wh.hosts", 'f', ""),
            ("var/cache/.wh..wh..opq", 'f', ""),
            ("var/cache/kept", 'f', "k"),
        ]));
        r.unwrap();
        let root = t.path().join("root");
        let hosts = std::fs::symlink_metadata(root.join("etc/hosts")).unwrap();
        assert!(hosts.file_type().is_char_device());
        assert_eq!(std::os::unix::fs::MetadataExt::rdev(&hosts), 0);
        assert!(!root.join("etc/.wh.hosts").exists());
        let opaque = xattr::get(root.join("var/cache"), "trusted.overlay.opaque").unwrap();
        assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
        assert!(!root.join("var/cache/.wh..wh..opq").exists());
        assert_eq!(std::fs::read(root.join("var/cache/kept")).unwrap(), b"k");
    }

    #[test]
    fn entries_never_escape_the_layer() {
        let outside = |t: &tempfile::TempDir| t.path().join("evil");
        // `..` in the path.
        let (t, r) = unpack(&tar_with_raw_path("../evil"));
        assert!(matches!(r, Err(ImageError::UnsafeEntry { .. })), "{r:?}");
        assert!(!outside(&t).exists());
        // A symlink to the outside, then a file through it.
        let (t, r) = unpack(&tar_of(&[("link", 'l', "../"), ("link/evil", 'f', "x")]));
        assert!(matches!(r, Err(ImageError::UnsafeEntry { .. })), "{r:?}");
        assert!(!outside(&t).exists());
        // An absolute symlink, then a file through it.
        let (_t, r) = unpack(&tar_of(&[
            ("etc", 'l', "/etc"),
            ("etc/kumo-evil", 'f', "x"),
        ]));
        assert!(matches!(r, Err(ImageError::UnsafeEntry { .. })), "{r:?}");
        assert!(!Path::new("/etc/kumo-evil").exists());
        // A symlink replaced by a file is not followed.
        let (t, r) = unpack(&tar_of(&[("f", 'l', "../evil"), ("f", 'f', "x")]));
        r.unwrap();
        assert!(!outside(&t).exists());
        assert_eq!(std::fs::read(t.path().join("root/f")).unwrap(), b"x");
        // A hard link to a file outside the layer.
        std::fs::write(outside(&t), "secret").unwrap();
        let (t2, r) = unpack(&tar_of(&[("h", 'h', "../evil")]));
        assert!(matches!(r, Err(ImageError::UnsafeEntry { .. })), "{r:?}");
        assert!(!t2.path().join("root/h").exists());
        // Missing parents are created inside the layer.
        let (t, r) = unpack(&tar_of(&[("a/b", 'f', "x")]));
        r.unwrap();
        assert!(t.path().join("root/a/b").is_file());
    }

    #[test]
    fn hard_links_and_symlinks_inside_the_layer_work() {
        let (t, r) = unpack(&tar_of(&[
            ("bin/busybox", 'f', "elf"),
            ("bin/sh", 'l', "busybox"),
            ("bin/ls", 'h', "bin/busybox"),
        ]));
        assert_eq!(r.unwrap(), 3);
        let root = t.path().join("root");
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            p("busybox")
        );
        assert_eq!(std::fs::read(root.join("bin/ls")).unwrap(), b"elf");
    }

    #[test]
    fn compressed_layers_unpack_and_verify_their_diff_id() {
        use std::io::Write;
        let tar = tar_of(&[("hello", 'f', "world")]);
        let diff_id = Digest::of(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        for (name, blob) in [("gzip", gz), ("zstd", zst), ("tar", tar.clone())] {
            let t = tempfile::tempdir().unwrap();
            let blob_path = t.path().join("blob");
            std::fs::write(&blob_path, &blob).unwrap();
            let dest = t.path().join("layer");
            let u = unpack_layer(&blob_path, &dest, t.path(), Some(&diff_id)).unwrap();
            assert_eq!(u.size, 5, "{name}");
            assert_eq!(
                std::fs::read(dest.join("hello")).unwrap(),
                b"world",
                "{name}"
            );
            // A wrong diff id leaves no layer behind.
            let dest2 = t.path().join("layer2");
            let wrong = Digest::of(b"other");
            let e = unpack_layer(&blob_path, &dest2, t.path(), Some(&wrong)).unwrap_err();
            assert!(
                matches!(e, ImageError::DigestMismatch { .. }),
                "{name}: {e}"
            );
            assert!(!dest2.exists(), "{name}");
        }
    }
}

#[cfg(test)]
#[path = "unpack_props.rs"]
mod props;
