//! `imagePullPolicy`: Always, IfNotPresent, Never, with Kubernetes' default.

use crate::error::ImageError;
use crate::reference::ImageRef;
use std::str::FromStr;

/// When [`crate::ImageStore::ensure`] contacts the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Resolve the reference at the registry every time (a cached image whose digest still
    /// matches is reused without downloading layers).
    Always,
    /// Use the stored image when there is one; pull otherwise.
    IfNotPresent,
    /// Never contact a registry; a missing image is an error.
    Never,
}

impl PullPolicy {
    /// Kubernetes' default: `Always` for `:latest` or no tag, `IfNotPresent` otherwise.
    pub fn default_for(reference: &ImageRef) -> PullPolicy {
        if reference.is_latest() {
            PullPolicy::Always
        } else {
            PullPolicy::IfNotPresent
        }
    }

    /// The policy for a pod container: its `imagePullPolicy` when set (and not empty),
    /// otherwise the default for its image.
    pub fn for_pod(policy: Option<&str>, image: &str) -> Result<PullPolicy, ImageError> {
        match policy {
            Some(p) if !p.is_empty() => p.parse(),
            _ => Ok(PullPolicy::default_for(&ImageRef::parse(image)?)),
        }
    }

    /// The name as written in a pod spec.
    pub fn as_str(&self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

impl FromStr for PullPolicy {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Always" => Ok(PullPolicy::Always),
            "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
            "Never" => Ok(PullPolicy::Never),
            other => Err(ImageError::InvalidPullPolicy(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: Option<&str>, image: &str, expected: Result<PullPolicy, &str>) {
        match (PullPolicy::for_pod(policy, image), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{policy:?} {image}"),
            (Err(e), Err(fragment)) => assert!(e.to_string().contains(fragment), "{e}"),
            (got, want) => panic!("{policy:?} {image}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn pull_policy_defaults_like_kubernetes() {
        use PullPolicy::*;
        let pinned = format!("busybox@sha256:{}", "0".repeat(64));
        check(None, "busybox", Ok(Always));
        check(None, "busybox:latest", Ok(Always));
        check(None, "busybox:1.36", Ok(IfNotPresent));
        check(None, "127.0.0.1:5000/test:1", Ok(IfNotPresent));
        check(None, "localhost:5000/test", Ok(Always));
        check(None, &pinned, Ok(IfNotPresent));
        check(Some(""), "busybox:1", Ok(IfNotPresent));
        check(Some("Never"), "busybox", Ok(Never));
        check(Some("Always"), "busybox:1", Ok(Always));
        check(Some("IfNotPresent"), "busybox", Ok(IfNotPresent));
        check(
            Some("always"),
            "busybox",
            Err("invalid image pull policy \"always\""),
        );
        check(None, "Bad Ref", Err("invalid image reference"));
    }
}
