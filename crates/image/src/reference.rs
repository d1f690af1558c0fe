//! Image references: `[registry/]repository[:tag][@digest]`, normalised as Docker does.

use crate::error::ImageError;
use std::fmt;

/// A parsed image reference. `busybox` means `docker.io/library/busybox:latest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    inner: oci_client::Reference,
    explicit_tag: bool,
}

impl ImageRef {
    /// Parses a reference; the error names it and says what is wrong.
    pub fn parse(s: &str) -> Result<ImageRef, ImageError> {
        let fail = |reason: &str| ImageError::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(fail("empty reference"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("contains white space"));
        }
        let inner = s
            .parse::<oci_client::Reference>()
            .map_err(|e| fail(&e.to_string()))?;
        // oci-client takes `A/busybox` as `docker.io/A/busybox`, a name that no registry
        // serves and that does not parse again (found by the property tests).
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(fail("repository name must be lowercase"));
        }
        // The tag is explicit when the last path component carries `:tag` before any digest.
        let name = s.split('@').next().unwrap_or(s);
        let last = name.rsplit('/').next().unwrap_or(name);
        let explicit_tag = last.contains(':');
        Ok(ImageRef {
            inner,
            explicit_tag,
        })
    }

    /// The canonical name stored and shown: `docker.io/library/busybox:latest`,
    /// `127.0.0.1:5000/test:1`, `quay.io/x/y@sha256:...`.
    pub fn name(&self) -> String {
        let base = format!("{}/{}", self.inner.registry(), self.inner.repository());
        match (self.tag(), self.inner.digest()) {
            (_, Some(d)) if !self.explicit_tag => format!("{base}@{d}"),
            (Some(t), Some(d)) => format!("{base}:{t}@{d}"),
            (Some(t), None) => format!("{base}:{t}"),
            (None, Some(d)) => format!("{base}@{d}"),
            (None, None) => base,
        }
    }

    /// The registry as written (`docker.io` for Docker Hub), used for credentials and the
    /// plain-HTTP rule.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository inside the registry: `library/busybox`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, `latest` when neither a tag nor a digest was given.
    pub fn tag(&self) -> Option<&str> {
        if self.explicit_tag || self.inner.digest().is_none() {
            self.inner.tag()
        } else {
            None
        }
    }

    /// The digest when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// True for `:latest` and for references with neither tag nor digest (Kubernetes pulls
    /// these `Always` by default).
    pub fn is_latest(&self) -> bool {
        match (self.tag(), self.digest()) {
            (_, Some(_)) => false,
            (Some(t), None) => t == "latest",
            (None, None) => true,
        }
    }

    pub(crate) fn oci(&self) -> &oci_client::Reference {
        &self.inner
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, canonical name, registry, latest?) or an error fragment.
    fn check(input: &str, expected: Result<(&str, &str, bool), &str>) {
        match (ImageRef::parse(input), expected) {
            (Ok(r), Ok((name, registry, latest))) => {
                assert_eq!(r.name(), name, "{input}");
                assert_eq!(r.registry(), registry, "{input}");
                assert_eq!(r.is_latest(), latest, "{input}");
            }
            (Err(e), Err(fragment)) => {
                let text = e.to_string();
                assert!(text.contains(fragment), "{input}: {text}");
                assert!(
                    text.contains(&format!("{input:?}")),
                    "names the input: {text}"
                );
            }
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn references_normalise_like_docker() {
        let d = format!("sha256:{}", "a".repeat(64));
        check(
            "busybox",
            Ok(("docker.io/library/busybox:latest", "docker.io", true)),
        );
        check(
            "busybox:1.36",
            Ok(("docker.io/library/busybox:1.36", "docker.io", false)),
        );
        check(
            "busybox:latest",
            Ok(("docker.io/library/busybox:latest", "docker.io", true)),
        );
        check(
            "user/app:v2",
            Ok(("docker.io/user/app:v2", "docker.io", false)),
        );
        check(
            "127.0.0.1:5000/test:1",
            Ok(("127.0.0.1:5000/test:1", "127.0.0.1:5000", false)),
        );
        check(
            "localhost/team/app",
            Ok(("localhost/team/app:latest", "localhost", true)),
        );
        check(
            "localhost:5000/app",
            Ok(("localhost:5000/app:latest", "localhost:5000", true)),
        );
        let pinned = format!("quay.io/x/y@{d}");
        check(&pinned, Ok((&pinned, "quay.io", false)));
        let both = format!("quay.io/x/y:1@{d}");
        check(&both, Ok((&both, "quay.io", false)));
    }

    #[test]
    fn malformed_references_are_named() {
        check("", Err("empty reference"));
        check("Busybox", Err("invalid"));
        check("busy box", Err("white space"));
        check("busybox:", Err("invalid"));
        check("busybox@sha256:abc", Err("invalid reference format"));
        check("a//b", Err("invalid"));
        check(":tag", Err("invalid"));
        check("A/busybox", Err("repository name must be lowercase"));
        check("user/App:1", Err("invalid"));
    }
}
