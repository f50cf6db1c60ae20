//! Pushing a snapshot to a registry: what is pure of it. Each layer is the extracted layer
//! directory written back as an uncompressed OCI tarball ([`super::snapshot::write_layer`], which
//! turns overlayfs whiteouts back into `.wh.` entries), so its digest is also its diff ID; the
//! config carries the image's environment, working directory and user.

use oci_client::manifest::{
    OciDescriptor, OciImageManifest, IMAGE_CONFIG_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};

use super::ImageConfig;

/// A blob written for the push: `sha256:<hex>` and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

/// The OCI image config of a snapshot whose (uncompressed) layers are `layers`, bottom first.
pub fn config(image: &ImageConfig, layers: &[Blob]) -> serde_json::Value {
    let env: Vec<String> = image.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut config = serde_json::json!({ "Env": env });
    if let Some(w) = &image.workdir {
        config["WorkingDir"] = w.clone().into();
    }
    if let Some(u) = &image.user {
        config["User"] = u.clone().into();
    }
    serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": config,
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
        },
    })
}

/// The manifest of the pushed image.
pub fn manifest(config: &Blob, layers: &[Blob]) -> OciImageManifest {
    let descriptor = |media_type: &str, b: &Blob| OciDescriptor {
        media_type: media_type.into(),
        digest: b.digest.clone(),
        size: i64::try_from(b.size).unwrap_or(i64::MAX),
        ..Default::default()
    };
    OciImageManifest {
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
        config: descriptor(IMAGE_CONFIG_MEDIA_TYPE, config),
        layers: layers
            .iter()
            .map(|l| descriptor(IMAGE_LAYER_MEDIA_TYPE, l))
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_manifest_name_the_layers_in_order() {
        let layers = [
            Blob {
                digest: "sha256:aa".into(),
                size: 10,
            },
            Blob {
                digest: "sha256:bb".into(),
                size: 20,
            },
        ];
        let image = ImageConfig {
            env: vec![("PATH".into(), "/bin".into())],
            workdir: Some("/app".into()),
            user: None,
        };
        let c = config(&image, &layers);
        assert_eq!(
            c["rootfs"]["diff_ids"],
            serde_json::json!(["sha256:aa", "sha256:bb"])
        );
        assert_eq!(c["config"]["Env"], serde_json::json!(["PATH=/bin"]));
        assert_eq!(c["config"]["WorkingDir"], "/app");
        assert!(c["config"].get("User").is_none());
        assert_eq!(c["os"], "linux");
        let m = manifest(
            &Blob {
                digest: "sha256:cc".into(),
                size: 5,
            },
            &layers,
        );
        assert_eq!(m.config.digest, "sha256:cc");
        assert_eq!(m.config.media_type, IMAGE_CONFIG_MEDIA_TYPE);
        let got: Vec<(&str, i64)> = m
            .layers
            .iter()
            .map(|l| (l.digest.as_str(), l.size))
            .collect();
        assert_eq!(got, [("sha256:aa", 10), ("sha256:bb", 20)]);
        assert!(m
            .layers
            .iter()
            .all(|l| l.media_type == IMAGE_LAYER_MEDIA_TYPE));
    }
}
