//! Hostile layers: setuid files and device nodes stay out of local users' reach, and a layer
//! cannot set `trusted.*` (overlayfs's own state) or other host-policy xattrs. Runs as root, as
//! the crate's other tests that mount overlays.

use kumo_image::testing::{write_layout_with_layer, MountGuard};
use kumo_image::ImageStore;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// `security.capability` granting CAP_NET_RAW (vfs_cap_data revision 2, effective), as `ping`
/// carries it in many images.
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h
}

/// A layer with a setuid shell, a char device (1,1: /dev/mem on the host), and PAX xattrs of
/// every family on its entries.
fn hostile_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut h = header(tar::EntryType::Regular, mode, 3);
        b.append_data(&mut h, path, &b"elf"[..]).unwrap();
    };
    dir(&mut b, "bin/");
    file(&mut b, "bin/su", 0o4755);
    b.append_pax_extensions([("SCHILY.xattr.security.capability", &CAP_NET_RAW[..])])
        .unwrap();
    file(&mut b, "bin/ping", 0o755);
    dir(&mut b, "dev/");
    // The kernel takes no user.* xattr on a device: skipped there, not an error.
    b.append_pax_extensions([("SCHILY.xattr.user.x", &b"1"[..])])
        .unwrap();
    let mut h = header(tar::EntryType::Char, 0o666, 0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(1).unwrap();
    b.append_data(&mut h, "dev/mem", std::io::empty()).unwrap();
    // `var/` claims to be opaque and carries trusted, security and user xattrs.
    b.append_pax_extensions([
        ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
        ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
        ("SCHILY.xattr.trusted.foo", &b"bar"[..]),
        (
            "SCHILY.xattr.security.selinux",
            &b"system_u:object_r:shadow_t:s0"[..],
        ),
        ("SCHILY.xattr.user.overlay.opaque", &b"y"[..]),
        ("SCHILY.xattr.user.kept", &b"1"[..]),
    ])
    .unwrap();
    dir(&mut b, "var/");
    // `opt/` is opaque the OCI way: kumo still sets the marker itself.
    dir(&mut b, "opt/");
    file(&mut b, "opt/.wh..wh..opq", 0o644);
    b.into_inner().unwrap()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(path, name).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// `stat PATH` as nobody (uid/gid 65534, no supplementary groups): Ok(()) or its stderr.
fn stat_as_nobody(path: &Path) -> Result<(), String> {
    let out = Command::new("stat")
        .arg(path)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn hostile_layers_are_root_only_and_carry_no_trusted_xattrs() {
    let t = tempfile::tempdir().unwrap();
    // A world-traversable parent, as /var/lib is: only the store's own modes protect it.
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = t.path().join("src");
    write_layout_with_layer(&src, "t", &hostile_layer()).unwrap();
    let store = ImageStore::open(&t.path().join("images")).unwrap();
    let image = store.import(&src, Some("hostile:1")).unwrap().remove(0);
    let layer = &image.layers[0];

    // What a container needs is kept inside the layer.
    let su = layer.join("bin/su");
    assert_eq!(mode(&su), 0o4755);
    let mem = std::fs::symlink_metadata(layer.join("dev/mem")).unwrap();
    assert!(mem.file_type().is_char_device());
    assert_eq!(mem.rdev(), nix::sys::stat::makedev(1, 1));
    let ping = layer.join("bin/ping");
    assert_eq!(
        xattr(&ping, "security.capability").as_deref(),
        Some(&CAP_NET_RAW[..])
    );
    let var = layer.join("var");
    assert_eq!(xattr(&var, "user.kept").as_deref(), Some(&b"1"[..]));
    assert_eq!(
        xattr(&layer.join("opt"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    // What only the host may set is not.
    for name in [
        "trusted.overlay.opaque",
        "trusted.overlay.redirect",
        "trusted.foo",
        "security.selinux",
        "user.overlay.opaque",
    ] {
        assert_eq!(xattr(&var, name), None, "{name}");
    }

    // The layer's parents are root's alone, and nobody can reach the setuid file or the device.
    let store_dir = t.path().join("images");
    for dir in ["layers", "tmp"] {
        let meta = std::fs::metadata(store_dir.join(dir)).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o700, 0), "{dir}");
    }
    assert_eq!(
        stat_as_nobody(t.path()),
        Ok(()),
        "the control: nobody can stat the parent"
    );
    for path in [&su, &layer.join("dev/mem")] {
        let e = stat_as_nobody(path).unwrap_err();
        assert!(e.contains("Permission denied"), "{}: {e}", path.display());
    }

    // Nor through a mounted container root.
    let container = t.path().join("container");
    std::fs::create_dir(&container).unwrap();
    std::fs::set_permissions(&container, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _guard = MountGuard::new(&store, &container);
    let rootfs = store.mount_rootfs(&image, &container).unwrap();
    let merged_su = rootfs.merged.join("bin/su");
    assert_eq!(mode(&merged_su), 0o4755, "root sees the image as it is");
    assert_eq!(mode(&container), 0o700);
    assert_eq!(
        mode(&container.join("upper")),
        0o755,
        "the container's / stays 0755"
    );
    for path in [
        &merged_su,
        &container.join("upper"),
        &container.join("work"),
    ] {
        let e = stat_as_nobody(path).unwrap_err();
        assert!(e.contains("Permission denied"), "{}: {e}", path.display());
    }
}

#[test]
fn a_store_made_by_an_older_kumo_is_made_private_when_opened() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("images");
    for sub in ["layers/abc", "tmp", "blobs/sha256", "mounts"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for sub in ["layers", "tmp"] {
        std::fs::set_permissions(dir.join(sub), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(dir.join(sub), Some(65534), Some(65534)).unwrap();
    }
    ImageStore::open(&dir).unwrap();
    for sub in ["layers", "tmp"] {
        let meta = std::fs::metadata(dir.join(sub)).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o700, 0, 0),
            "{sub}"
        );
    }
    assert!(dir.join("layers/abc").is_dir(), "the layers stay");
}

#[test]
fn a_symlink_in_place_of_the_layers_dir_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("images");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir(t.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(t.path().join("elsewhere"), dir.join("layers")).unwrap();
    let e = ImageStore::open(&dir).unwrap_err();
    assert!(e.to_string().contains("is not a directory"), "{e}");
}
