//! Garbage collection: least-recently-used images go above the high water, in-use ones stay.

use kumo_image::testing::{write_tiny_layout, MountGuard};
use kumo_image::ImageStore;

fn import(s: &ImageStore, name: &str, content: &str) -> kumo_image::Image {
    let src = tempfile::tempdir().unwrap();
    write_tiny_layout(src.path(), "t", content).unwrap();
    s.import(src.path(), Some(name)).unwrap().remove(0)
}

#[test]
fn least_recently_used_images_go_first_and_in_use_ones_stay() {
    let t = tempfile::tempdir().unwrap();
    let s = ImageStore::open(&t.path().join("images")).unwrap();
    let big = "x".repeat(100_000);
    let a = import(&s, "gc/a:1", &format!("a{big}"));
    let b = import(&s, "gc/b:1", &format!("b{big}"));
    let c = import(&s, "gc/c:1", &format!("c{big}"));
    let d = import(&s, "gc/d:1", &format!("d{big}"));
    // Use order now: a (oldest), b, c, d; then b is mounted and c is named in use.
    let container = t.path().join("c-b");
    let _guard = MountGuard::new(&s, &container);
    s.mount_rootfs(&b, &container).unwrap();

    // Under the high water: nothing happens.
    let report = s.collect_garbage(u64::MAX, &[]).unwrap();
    assert!(report.removed.is_empty());
    assert_eq!(report.used_before, report.used_after);

    // Room for about two images: a goes (oldest, unused); b (mounted) and c (in use) stay;
    // d is the newest, so it goes only if a alone was not enough.
    let per_image = report.used_before / 4;
    let report = s
        .collect_garbage(per_image * 3, &["gc/c:1".to_string()])
        .unwrap();
    assert_eq!(report.removed, vec![a.digest.clone()], "{report:?}");
    assert!(report.freed_bytes >= 200_000, "{report:?}");
    assert!(report.used_after <= per_image * 3, "{report:?}");
    assert!(s.get("gc/a:1").is_none());
    assert!(!a.layers[0].exists());
    for kept in [&b, &c, &d] {
        assert!(s.get(&kept.digest).is_some());
        assert!(kept.layers[0].is_dir());
    }

    // Far below: everything not protected goes; b and c stay.
    let report = s.collect_garbage(0, &["gc/c:1".to_string()]).unwrap();
    assert_eq!(report.removed, vec![d.digest.clone()]);
    let left: Vec<String> = s.list().into_iter().map(|i| i.digest).collect();
    let mut want = vec![b.digest.clone(), c.digest.clone()];
    want.sort();
    let mut left_sorted = left.clone();
    left_sorted.sort();
    assert_eq!(left_sorted, want);
}
