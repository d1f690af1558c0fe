//! Real-registry tests: a busybox image built here, pushed to a loopback docker-registry with
//! skopeo, pulled, imported and mounted through overlayfs (needs root, as in CI).

use kumo_image::testing::{self, MountGuard, Registry};
use kumo_image::{ImageError, ImageStore, PullPhase, PullPolicy, PullProgress, RegistryAuth};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Mutex;

fn store() -> (tempfile::TempDir, ImageStore) {
    let t = tempfile::tempdir().unwrap();
    let s = ImageStore::open(&t.path().join("images")).unwrap();
    (t, s)
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

async fn ensure(s: &ImageStore, r: &str, p: PullPolicy) -> Result<kumo_image::Image, ImageError> {
    s.ensure(r, p, &RegistryAuth::Anonymous, &|_| {}).await
}

#[tokio::test]
async fn pulls_unpacks_and_then_needs_no_network() {
    let registry = Registry::start().unwrap();
    let (reference, pushed) = registry.push_busybox("test:1").unwrap();
    let (_t, s) = store();
    let seen = Mutex::new(Vec::<PullProgress>::new());
    let image = s
        .ensure(
            &reference,
            PullPolicy::IfNotPresent,
            &RegistryAuth::Anonymous,
            &|p| seen.lock().unwrap().push(p),
        )
        .await
        .unwrap();
    assert_eq!(image.digest, pushed.manifest);
    assert_eq!(image.reference, reference);
    assert_eq!(image.config.cmd, vec!["/bin/sh"]);
    assert_eq!(image.config.env, vec!["PATH=/bin", "KUMO_TEST=1"]);
    assert_eq!(image.config.working_dir.as_deref(), Some("/tmp"));
    assert!(image.config.entrypoint.is_empty() && image.config.user.is_none());
    assert_eq!(image.layers.len(), 2);
    assert_eq!(
        std::fs::read(image.layers[0].join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    let whiteout = std::fs::symlink_metadata(image.layers[1].join("etc/group")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    let opaque = xattr::get(image.layers[1].join("var/empty"), "trusted.overlay.opaque").unwrap();
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    for d in pushed
        .layers
        .iter()
        .chain([&pushed.config, &pushed.manifest])
    {
        let hex = d.strip_prefix("sha256:").unwrap();
        assert!(s.dir().join("blobs/sha256").join(hex).is_file(), "blob {d}");
    }
    {
        let seen = seen.lock().unwrap();
        for (i, l) in pushed.layers.iter().enumerate() {
            let last = seen.iter().rfind(|p| &p.digest == l).unwrap();
            assert_eq!(
                (last.layer, last.layers, last.phase),
                (i, 2, PullPhase::Done)
            );
            assert!(seen.iter().any(|p| &p.digest == l
                && p.phase == PullPhase::Downloading
                && p.bytes == p.total
                && p.total > 0));
        }
    }
    let listed = s.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].references, vec![reference.clone()]);
    assert!(listed[0].size > 1_000_000, "{}", listed[0].size);
    assert_eq!(count(&s.dir().join("tmp")), 0);

    // Always re-resolves but reuses the layers it has.
    let seen = Mutex::new(Vec::<PullPhase>::new());
    let again = s
        .ensure(
            &reference,
            PullPolicy::Always,
            &RegistryAuth::Anonymous,
            &|p| seen.lock().unwrap().push(p.phase),
        )
        .await
        .unwrap();
    assert_eq!(again, image);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![PullPhase::Cached, PullPhase::Cached]
    );

    // With the registry gone, IfNotPresent and Never still work; Always says why it cannot.
    drop(registry);
    assert_eq!(
        ensure(&s, &reference, PullPolicy::IfNotPresent)
            .await
            .unwrap(),
        image
    );
    assert_eq!(
        ensure(&s, &reference, PullPolicy::Never).await.unwrap(),
        image
    );
    let e = ensure(&s, &reference, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::Registry { .. }), "{e}");
    assert!(
        e.to_string().to_lowercase().contains("connection refused"),
        "{e}"
    );
}

#[tokio::test]
async fn registry_errors_carry_the_registry_text() {
    let registry = Registry::start().unwrap();
    registry.push_busybox("test:1").unwrap();
    let (_t, s) = store();
    let e = ensure(&s, &registry.reference("test:2"), PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::Registry { .. }), "{e}");
    assert!(e.to_string().contains("manifest unknown"), "{e}");
    let e = ensure(&s, &registry.reference("nothing:1"), PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown"), "{e}");
    let e = ensure(&s, &registry.reference("test:1"), PullPolicy::Never)
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::NeverPull(_)), "{e}");
    let e = ensure(&s, "Not A/Ref", PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("invalid image reference \"Not A/Ref\""),
        "{e}"
    );
    assert!(s.list().is_empty());
    assert_eq!(count(&s.dir().join("layers")), 0);
}

#[tokio::test]
async fn a_corrupt_blob_is_refused_and_leaves_nothing_behind() {
    let registry = Registry::start().unwrap();
    let (reference, pushed) = registry.push_busybox("test:1").unwrap();
    let data = registry.blob_data_path(&pushed.layers[0]);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let (_t, s) = store();
    let e = ensure(&s, &reference, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&pushed.layers[0]), "{e}");
    let hex = pushed.layers[0].strip_prefix("sha256:").unwrap();
    assert!(!s.dir().join("blobs/sha256").join(hex).exists());
    assert_eq!(count(&s.dir().join("layers")), 0);
    assert_eq!(count(&s.dir().join("tmp")), 0);
    assert!(s.list().is_empty());

    // A pinned digest that is not the manifest's is refused too.
    let wrong = format!("{}@sha256:{}", registry.reference("test"), "0".repeat(64));
    let e = ensure(&s, &wrong, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("manifest unknown"), "{e}");
}

#[test]
fn imports_oci_layouts_and_archives() {
    let src = tempfile::tempdir().unwrap();
    let layout = src.path().join("layout");
    let pushed = testing::write_busybox_layout(&layout, "v1").unwrap();
    let (_t, s) = store();

    // A layout directory: its ref.name `v1` is no full reference, so the image has no name.
    let images = s.import(&layout, None).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].digest, pushed.manifest);
    assert_eq!(images[0].reference, pushed.manifest);
    assert!(s.get(&pushed.manifest).is_some());

    // An OCI archive made by skopeo, named on import.
    let archive = src.path().join("image.tar");
    testing::oci_archive(&layout, "v1", &archive).unwrap();
    let images = s.import(&archive, Some("example.com/team/app:v1")).unwrap();
    assert_eq!(images[0].digest, pushed.manifest);
    assert_eq!(images[0].reference, "example.com/team/app:v1");
    let got = s.get("example.com/team/app:v1").unwrap();
    assert_eq!(got.config.cmd, vec!["/bin/sh"]);
    assert!(got.layers.iter().all(|l| l.is_dir()));

    // A docker-save archive made by skopeo: named by its RepoTags.
    let docker = src.path().join("docker.tar");
    testing::skopeo_copy(
        &format!("oci:{}:v1", layout.display()),
        &format!("docker-archive:{}:busybox:saved", docker.display()),
    )
    .unwrap();
    let images = s.import(&docker, None).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].reference, "docker.io/library/busybox:saved");
    assert_eq!(images[0].config.env, vec!["PATH=/bin", "KUMO_TEST=1"]);
    assert_eq!(
        std::fs::read(images[0].layers[0].join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(count(&s.dir().join("tmp")), 0);

    // Something else is a clear error.
    let junk = src.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    let e = s.import(&junk, None).unwrap_err();
    assert!(e.to_string().contains("neither an OCI layout"), "{e}");
}

#[test]
fn mounts_an_overlay_rootfs_and_refuses_removal_while_mounted() {
    let src = tempfile::tempdir().unwrap();
    testing::write_busybox_layout(src.path(), "v1").unwrap();
    let (t, s) = store();
    let image = s
        .import(src.path(), Some("busybox:test"))
        .unwrap()
        .remove(0);
    let container = t.path().join("containers/c1");
    let guard = MountGuard::new(&s, &container);
    let rootfs = s.mount_rootfs(&image, &container).unwrap();
    assert_eq!(rootfs.merged, container.join("merged"));
    let merged = &rootfs.merged;
    assert_eq!(
        std::fs::read(merged.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    assert!(
        !merged.join("etc/group").exists(),
        "whited out by the upper layer"
    );
    assert!(
        !merged.join("var/empty/lower-only").exists(),
        "hidden by the opaque dir"
    );
    assert_eq!(
        std::fs::read_to_string(merged.join("etc/motd")).unwrap(),
        "hello from kumo\n"
    );
    // The rootfs runs: busybox through chroot.
    let out = std::process::Command::new("chroot")
        .arg(merged)
        .args([
            "/bin/sh",
            "-c",
            "echo $((6*7)) > /tmp/answer; cat /tmp/answer",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n", "{out:?}");
    assert!(
        container.join("upper/tmp/answer").is_file(),
        "writes land in upper/"
    );
    assert!(!image.layers.iter().any(|l| l.join("tmp/answer").exists()));
    // Mounting again (an agent re-adopting) is fine.
    assert_eq!(s.mount_rootfs(&image, &container).unwrap(), rootfs);

    let e = s.remove("busybox:test").unwrap_err();
    assert!(matches!(e, ImageError::InUse { .. }), "{e}");
    let gc = s.collect_garbage(0, &[]).unwrap();
    assert!(gc.removed.is_empty(), "{gc:?}");

    s.unmount_rootfs(&container).unwrap();
    s.unmount_rootfs(&container).unwrap();
    assert!(!merged.join("bin/busybox").exists());
    drop(guard);
    s.remove("busybox:test").unwrap();
    assert!(s.get("busybox:test").is_none());
    assert_eq!(count(&s.dir().join("blobs/sha256")), 0);
    assert_eq!(count(&s.dir().join("layers")), 0);
    let e = s.remove("busybox:test").unwrap_err();
    assert!(matches!(e, ImageError::NotFound(_)), "{e}");
}
