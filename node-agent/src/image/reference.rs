//! Reference resolution: Docker-style short names (`python` -> `docker.io/library/python:latest`)
//! and registry mirrors (`docker.io` -> `127.0.0.1:5000`).

use oci_client::Reference;
use std::collections::BTreeMap;

use super::ImageError;

/// A reference in canonical form plus where to actually pull it from.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRef {
    /// Canonical name, e.g. `docker.io/library/python:latest`; the cache key.
    pub canonical: Reference,
    /// Same repository and tag on the mirror that serves it (or `canonical` itself).
    pub source: Reference,
}

/// Resolve `image` like Docker does and apply the first matching mirror.
pub fn resolve(image: &str, mirrors: &BTreeMap<String, String>) -> Result<ResolvedRef, ImageError> {
    let invalid = |reason: String| ImageError::InvalidReference {
        reference: image.to_string(),
        reason,
    };
    if image.trim().is_empty() {
        return Err(invalid("empty image name".into()));
    }
    let canonical: Reference = image.parse().map_err(|e| invalid(format!("{e}")))?;
    let source = match mirrors.get(canonical.registry()) {
        None => canonical.clone(),
        Some(mirror) => match canonical.digest() {
            Some(d) => {
                Reference::with_digest(mirror.clone(), canonical.repository().into(), d.into())
            }
            None => Reference::with_tag(
                mirror.clone(),
                canonical.repository().into(),
                canonical.tag().unwrap_or("latest").into(),
            ),
        },
    };
    Ok(ResolvedRef { canonical, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrors() -> BTreeMap<String, String> {
        [("docker.io".to_string(), "127.0.0.1:5000".to_string())].into()
    }

    #[test]
    fn short_names_resolve_like_docker() {
        let r = resolve("python", &BTreeMap::new()).unwrap();
        assert_eq!(r.canonical.whole(), "docker.io/library/python:latest");
        let r = resolve("alpine:3.20", &BTreeMap::new()).unwrap();
        assert_eq!(r.canonical.whole(), "docker.io/library/alpine:3.20");
        let r = resolve("someuser/tool", &BTreeMap::new()).unwrap();
        assert_eq!(r.canonical.whole(), "docker.io/someuser/tool:latest");
    }

    #[test]
    fn mirror_rewrites_registry_only() {
        let r = resolve("python", &mirrors()).unwrap();
        assert_eq!(r.source.whole(), "127.0.0.1:5000/library/python:latest");
        assert_eq!(r.canonical.whole(), "docker.io/library/python:latest");
        let r = resolve("ghcr.io/x/y:1", &mirrors()).unwrap();
        assert_eq!(r.source, r.canonical);
    }

    #[test]
    fn digests_survive_mirroring() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = resolve(&format!("busybox@{d}"), &mirrors()).unwrap();
        assert_eq!(r.source.digest(), Some(d.as_str()));
    }

    #[test]
    fn bad_references_are_typed_errors() {
        for bad in ["", "a b", "x:y:z:w", "repo@sha256:short"] {
            assert!(
                matches!(
                    resolve(bad, &mirrors()),
                    Err(ImageError::InvalidReference { .. })
                ),
                "{bad}"
            );
        }
    }
}
