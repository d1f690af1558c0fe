//! Property tests of layer unpacking: any sequence of entries (`..`, whiteouts, symlinks, hard
//! links, devices, xattrs) unpacks or is refused, never panics, never writes outside the layer
//! and never leaves a `trusted.*` xattr behind but the opaque marker kumo sets itself.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Each case unpacks into a fresh directory: a few milliseconds a case.
fn config() -> Config {
    Config::with_cases(256)
}

/// A name that must never appear outside the layer.
const ESCAPED: &str = "kumo-unpack-prop-escaped";

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a",
        "b",
        "etc",
        "bin",
        "..",
        ".",
        "",
        ".wh.a",
        ".wh.b",
        ".wh..wh..opq",
        ".wh.",
        ".wh..wh.x",
        ESCAPED,
    ])
    .prop_map(str::to_string)
}

fn entry_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(word(), 1..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(w, lead, trail)| {
            let mut p = w.join("/");
            if lead {
                p.insert(0, '/');
            }
            if trail {
                p.push('/');
            }
            p
        })
}

fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        entry_path(),
        prop::sample::select(vec!["../", "../..", "/", "/tmp", "..", "/tmp/../tmp"])
            .prop_map(str::to_string),
    ]
}

#[derive(Debug, Clone)]
struct Entry {
    path: String,
    kind: tar::EntryType,
    link: String,
    mode: u32,
    xattrs: Vec<(&'static str, &'static [u8])>,
}

fn entry() -> impl Strategy<Value = Entry> {
    let kind = prop::sample::select(vec![
        tar::EntryType::Regular,
        tar::EntryType::Regular,
        tar::EntryType::Directory,
        tar::EntryType::Symlink,
        tar::EntryType::Link,
        tar::EntryType::Char,
        tar::EntryType::Fifo,
    ]);
    let xattrs = prop::collection::vec(
        prop::sample::select(vec![
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/a"[..]),
            ("SCHILY.xattr.trusted.x", &b"1"[..]),
            ("SCHILY.xattr.security.selinux", &b"x"[..]),
            ("SCHILY.xattr.user.x", &b"1"[..]),
        ]),
        0..3,
    );
    (
        entry_path(),
        kind,
        link_target(),
        prop::sample::select(vec![0o644u32, 0o755, 0o4755, 0o7777, 0]),
        xattrs,
    )
        .prop_map(|(path, kind, link, mode, xattrs)| Entry {
            path,
            kind,
            link,
            mode,
            xattrs,
        })
}

/// A tar of `entries` with their names written raw: the builder would refuse `..`.
fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.xattrs.is_empty() {
            b.append_pax_extensions(e.xattrs.iter().copied()).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        let gnu = h.as_gnu_mut().unwrap();
        let name = e.path.as_bytes();
        gnu.name[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        let link = e.link.as_bytes();
        gnu.linkname[..link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        let data: &[u8] = if e.kind == tar::EntryType::Regular {
            b"data"
        } else {
            b""
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Every path under `dir` (symlinks not followed).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, out);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_entries_unpack_inside_the_layer_or_are_refused(entries in prop::collection::vec(entry(), 1..8)) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("layer").join("root");
        std::fs::create_dir_all(&root).unwrap();
        let _ = unpack_tar(&mut &tar_of(&entries)[..], &root);
        // Nothing beside the layer, nothing in /tmp or / by the escaping name.
        let beside: Vec<_> = std::fs::read_dir(t.path().join("layer")).unwrap().flatten().map(|e| e.file_name()).collect();
        prop_assert_eq!(beside, vec![std::ffi::OsString::from("root")]);
        prop_assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        for outside in ["/tmp", "/"] {
            prop_assert!(std::fs::symlink_metadata(Path::new(outside).join(ESCAPED)).is_err());
        }
        // Only kumo's own opaque marker, on directories that asked for it the OCI way.
        let mut all = Vec::new();
        walk(&root, &mut all);
        for p in all {
            let names: Vec<String> = xattr::list(&p)
                .map(|l| l.map(|n| n.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            for n in names {
                prop_assert!(
                    n == "trusted.overlay.opaque" || n == "user.x",
                    "{} has {n}", p.display()
                );
                if n == "trusted.overlay.opaque" {
                    prop_assert!(entries.iter().any(|e| e.path.contains(OPAQUE_MARKER)), "{}", p.display());
                }
            }
        }
    }
}
