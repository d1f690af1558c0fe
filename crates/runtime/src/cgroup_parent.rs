//! The cgroup every pod cgroup of a node lives under (`--cgroup-parent`, default `kumo`).
//!
//! Several nodes on one machine (the one-machine cluster, parallel tests) each get their own
//! parent, so that `kumo down` on one node removes its cgroups and leaves the others' alone.

use std::fmt;
use std::path::{Path, PathBuf};

/// The default parent.
pub const DEFAULT_CGROUP_PARENT: &str = "kumo";

/// The longest parent accepted (a cgroup path component is at most 255 bytes; pod uids and
/// container names are added below it).
pub const MAX_CGROUP_PARENT_LEN: usize = 128;

/// A relative cgroup path of safe segments (`kumo`, `kumo-node1`, `nodes/n1`), checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupParent(String);

impl CgroupParent {
    /// Checks `text`: relative, segments of letters, digits, `-`, `_` and `.` (never `.` or
    /// `..` alone), at most [`MAX_CGROUP_PARENT_LEN`] bytes. The message names no flag: callers
    /// add the one the value came from.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.len() > MAX_CGROUP_PARENT_LEN {
            return Err(format!(
                "{text:?} is longer than {MAX_CGROUP_PARENT_LEN} characters"
            ));
        }
        if text.starts_with('/') {
            return Err(format!(
                "{text:?} must be relative (it is placed under each cgroup hierarchy)"
            ));
        }
        for segment in text.split('/') {
            if segment.is_empty() {
                return Err(format!("{text:?} has an empty path segment"));
            }
            if segment == "." || segment == ".." {
                return Err(format!("{text:?} must not contain {segment:?}"));
            }
            if !segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(format!(
                    "{text:?}: segment {segment:?} may hold only letters, digits, '-', '_' and '.'"
                ));
            }
        }
        Ok(CgroupParent(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<base>/<parent>`.
    pub fn under(&self, base: &Path) -> PathBuf {
        base.join(&self.0)
    }

    /// The directories from `base` (excluded) down to `<base>/<parent>` (included), outermost
    /// first: on cgroup v2 each must delegate the controllers to the next.
    pub fn levels(&self, base: &Path) -> Vec<PathBuf> {
        let mut dir = base.to_path_buf();
        self.0
            .split('/')
            .map(|s| {
                dir.push(s);
                dir.clone()
            })
            .collect()
    }

    /// The OCI `linux.cgroupsPath` of a container: `/<parent>/<uid>/<container>`.
    pub fn oci_path(&self, uid: &str, container: &str) -> String {
        format!("/{}/{uid}/{container}", self.0)
    }
}

impl Default for CgroupParent {
    fn default() -> Self {
        CgroupParent(DEFAULT_CGROUP_PARENT.to_string())
    }
}

impl fmt::Display for CgroupParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for CgroupParent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        let got = CgroupParent::parse(input);
        match expected {
            Ok(path) => assert_eq!(got.map(|p| p.0), Ok(path.to_string()), "{input:?}"),
            Err(part) => {
                let e = got.expect_err(input);
                assert!(e.contains(part), "{input:?}: {e:?} lacks {part:?}");
            }
        }
    }

    #[test]
    fn parents_are_relative_paths_of_safe_segments() {
        check("kumo", Ok("kumo"));
        check("kumo-node1", Ok("kumo-node1"));
        check("nodes/n_1.a", Ok("nodes/n_1.a"));
        check("", Err("must not be empty"));
        check("/kumo", Err("must be relative"));
        check("kumo/", Err("empty path segment"));
        check("a//b", Err("empty path segment"));
        check("..", Err("must not contain \"..\""));
        check("a/../b", Err("must not contain \"..\""));
        check("a/./b", Err("must not contain \".\""));
        check("a b", Err("only letters"));
        check("a\nb", Err("only letters"));
        check("kümo", Err("only letters"));
        check(&"a".repeat(MAX_CGROUP_PARENT_LEN), Ok(&"a".repeat(128)));
        check(
            &"a".repeat(MAX_CGROUP_PARENT_LEN + 1),
            Err("longer than 128"),
        );
    }

    #[test]
    fn paths_under_a_parent() {
        let p = CgroupParent::parse("nodes/n1").unwrap();
        assert_eq!(p.under(Path::new("/cg")), PathBuf::from("/cg/nodes/n1"));
        assert_eq!(
            p.levels(Path::new("/cg")),
            [PathBuf::from("/cg/nodes"), PathBuf::from("/cg/nodes/n1")]
        );
        assert_eq!(p.oci_path("u", "c"), "/nodes/n1/u/c");
        assert_eq!(CgroupParent::default().oci_path("u", "c"), "/kumo/u/c");
    }
}
