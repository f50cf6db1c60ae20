//! The image store proper: pull, cache, look up.

use microsandbox_wire::api::{PullEvent, PullPolicy};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;

use super::{extract_layer, push, resolve, snapshot, ImageError, ResolvedRef};

/// The parts of an image's config a sandbox uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

/// A pulled image: its manifest digest and layers (bottom first), all extracted in the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub reference: String,
    pub digest: String,
    pub layers: Vec<String>,
    pub config: ImageConfig,
}

/// Progress callback.
pub type Progress<'a> = &'a (dyn Fn(PullEvent) + Send + Sync);

/// Pulls and caches images. Cheap to share (`Arc`).
pub struct ImageStore {
    root: PathBuf,
    client: Client,
    /// Registries reached over plain HTTP (for clients made per push).
    plain: Vec<String>,
    mirrors: BTreeMap<String, String>,
    auth: BTreeMap<String, (String, String)>,
    /// One lock per layer digest / reference so concurrent pulls share work.
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// An OCI client that speaks plain HTTP to the registries `plain` (and HTTPS to the rest).
fn new_client(plain: &[String]) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain.to_vec()),
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        ..Default::default()
    })
}

/// Whose registry credentials a snapshot push uses.
#[derive(Debug)]
pub enum PushAuth {
    /// The node's own (`--registry-auth`): a push through the agent API, by the node's user.
    Node,
    /// None: a cluster object that names no credentials (never the node's: a namespace must not
    /// push with them).
    Anonymous,
    /// A cluster object's, sealed to this node by the operator.
    Given(microsandbox_crds::sealed::RegistryCredentials),
}

impl ImageStore {
    pub fn new(
        root: PathBuf,
        mirrors: BTreeMap<String, String>,
        insecure: Vec<String>,
        auth: BTreeMap<String, (String, String)>,
    ) -> std::io::Result<Self> {
        for sub in ["layers", "refs", "tmp"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        remove_stale_tmp(&root.join("tmp"));
        let mut plain: Vec<String> = mirrors
            .values()
            .chain(insecure.iter())
            .filter(|r| crate::config::is_plain_http(r, &insecure))
            .cloned()
            .collect();
        plain.extend(["127.0.0.1:5000".to_string(), "localhost:5000".to_string()]);
        Ok(Self {
            root,
            client: new_client(&plain),
            plain,
            mirrors,
            auth,
            locks: Default::default(),
        })
    }

    /// Directory holding the extracted layer `digest`.
    pub fn layer_dir(&self, digest: &str) -> PathBuf {
        self.root.join("layers").join(digest.replace(':', "-"))
    }

    fn record_path(&self, canonical: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(canonical.as_bytes()));
        self.root.join("refs").join(format!("{key}.json"))
    }

    fn lock_for(&self, key: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }

    /// The cached record for `image`, if every layer is still present.
    pub fn cached(&self, image: &str) -> Result<Option<ImageRecord>, ImageError> {
        let r = resolve(image, &self.mirrors)?;
        Ok(self.cached_resolved(&r))
    }

    fn cached_resolved(&self, r: &ResolvedRef) -> Option<ImageRecord> {
        let text = std::fs::read(self.record_path(&r.canonical.whole())).ok()?;
        let rec: ImageRecord = serde_json::from_slice(&text).ok()?;
        rec.layers
            .iter()
            .all(|l| valid_digest(l) && self.layer_dir(l).is_dir())
            .then_some(rec)
    }

    /// Make `image` available locally according to `policy`.
    pub async fn ensure(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Progress<'_>,
    ) -> Result<ImageRecord, ImageError> {
        let r = resolve(image, &self.mirrors)?;
        progress(PullEvent::Resolved {
            reference: r.source.whole(),
        });
        let lock = self.lock_for(&r.canonical.whole());
        let _guard = lock.lock().await;
        if r.canonical.registry() == snapshot::SNAPSHOT_REGISTRY {
            // A snapshot exists on this node or nowhere: never a registry to ask.
            let rec = self
                .cached_resolved(&r)
                .ok_or_else(|| ImageError::NotFound(r.canonical.whole()))?;
            progress(PullEvent::Done {
                digest: rec.digest.clone(),
            });
            return Ok(rec);
        }
        match (policy, self.cached_resolved(&r)) {
            (PullPolicy::Never, None) => Err(ImageError::NotPresent(r.canonical.whole())),
            (PullPolicy::Never | PullPolicy::IfNotPresent, Some(rec)) => {
                progress(PullEvent::Done {
                    digest: rec.digest.clone(),
                });
                Ok(rec)
            }
            (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, None) => {
                self.pull(&r, progress).await
            }
        }
    }

    fn auth_for(&self, registry: &str) -> RegistryAuth {
        match self.auth.get(registry) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    async fn pull(
        &self,
        r: &ResolvedRef,
        progress: Progress<'_>,
    ) -> Result<ImageRecord, ImageError> {
        let source = &r.source;
        let auth = self.auth_for(source.resolve_registry());
        let (manifest, digest, config) = self
            .client
            .pull_manifest_and_config(source, &auth)
            .await
            .map_err(|e| map_oci_error(r, e))?;
        progress(PullEvent::Manifest {
            digest: digest.clone(),
            layers: manifest.layers.len(),
        });
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for desc in &manifest.layers {
            self.fetch_layer(r, desc, progress).await?;
            layers.push(desc.digest.clone());
        }
        let rec = ImageRecord {
            reference: r.canonical.whole(),
            digest: digest.clone(),
            layers,
            config: parse_config(&config),
        };
        self.write_record(&rec)?;
        progress(PullEvent::Done { digest });
        Ok(rec)
    }

    async fn fetch_layer(
        &self,
        r: &ResolvedRef,
        desc: &oci_client::manifest::OciDescriptor,
        progress: Progress<'_>,
    ) -> Result<(), ImageError> {
        // The digest names a directory: anything but `algorithm:hex` (e.g. `../../etc`) is refused
        // before it can touch a path.
        if !valid_digest(&desc.digest) {
            return Err(ImageError::PullFailed {
                reference: r.canonical.whole(),
                detail: format!("manifest lists an invalid layer digest {:?}", desc.digest),
            });
        }
        let lock = self.lock_for(&desc.digest);
        let _guard = lock.lock().await;
        let dest = self.layer_dir(&desc.digest);
        if dest.is_dir() {
            progress(PullEvent::LayerCached {
                digest: desc.digest.clone(),
            });
            return Ok(());
        }
        let tmp_name = format!(
            "{}-{}",
            desc.digest.replace(':', "-"),
            rand::random::<u32>()
        );
        let blob_path = self.root.join("tmp").join(format!("{tmp_name}.blob"));
        let file = tokio::fs::File::create(&blob_path).await?;
        // oci-client verifies the blob against its descriptor digest while streaming.
        let res = self.client.pull_blob(&r.source, desc, file).await;
        if let Err(e) = res {
            crate::cleanup::remove_file(&blob_path);
            return Err(map_oci_error(r, e));
        }
        let bytes = std::fs::metadata(&blob_path)?.len();
        progress(PullEvent::LayerDownloaded {
            digest: desc.digest.clone(),
            bytes,
        });
        let staging = self.root.join("tmp").join(tmp_name);
        std::fs::create_dir_all(&staging)?;
        let (blob2, staging2) = (blob_path.clone(), staging.clone());
        let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let f = std::fs::File::open(&blob2).map_err(|e| e.to_string())?;
            extract_layer(f, &staging2)
        })
        .await
        .map_err(|e| ImageError::Extract {
            digest: desc.digest.clone(),
            detail: e.to_string(),
        })?;
        crate::cleanup::remove_file(&blob_path);
        if let Err(detail) = result {
            crate::cleanup::remove_dir_all(&staging);
            return Err(ImageError::Extract {
                digest: desc.digest.clone(),
                detail,
            });
        }
        if let Err(e) = std::fs::rename(&staging, &dest) {
            // Another agent sharing this store extracted the same layer first: theirs is as good.
            crate::cleanup::remove_dir_all(&staging);
            if !dest.is_dir() {
                return Err(e.into());
            }
        }
        progress(PullEvent::LayerExtracted {
            digest: desc.digest.clone(),
        });
        Ok(())
    }

    /// Record upper directory `upper` of a sandbox made from `base` as snapshot `name`: its
    /// layer (written as an OCI tarball, digested, extracted into the layer cache like a pulled
    /// one) on top of `base`'s layers, with `base`'s config. Replaces a snapshot of that name.
    pub async fn save_snapshot(
        &self,
        name: &str,
        base: &ImageRecord,
        upper: &Path,
    ) -> Result<ImageRecord, ImageError> {
        let reference = snapshot::reference(name);
        let lock = self.lock_for(&reference);
        let _guard = lock.lock().await;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("snapshot-{name}-{}", rand::random::<u32>()));
        let (upper, tmp2) = (upper.to_path_buf(), tmp.clone());
        let made = tokio::task::spawn_blocking(move || -> Result<(String, u64), String> {
            let blob = tmp2.with_extension("tar");
            let file = std::fs::File::create(&blob).map_err(|e| e.to_string())?;
            let out = snapshot::write_layer(&upper, snapshot::Hashing::new(file))
                .map_err(|e| format!("write the layer of {}: {e}", upper.display()))?;
            let (digest, size, file) = out.finish();
            file.sync_all().map_err(|e| e.to_string())?;
            std::fs::create_dir_all(&tmp2).map_err(|e| e.to_string())?;
            let extracted = std::fs::File::open(&blob)
                .map_err(|e| e.to_string())
                .and_then(|f| extract_layer(f, &tmp2));
            crate::cleanup::remove_file(&blob);
            extracted.map(|()| (digest, size))
        })
        .await
        .map_err(|e| ImageError::Extract {
            digest: "snapshot".into(),
            detail: e.to_string(),
        })?;
        let (digest, size) = match made {
            Ok(v) => v,
            Err(detail) => {
                crate::cleanup::remove_dir_all(&tmp);
                return Err(ImageError::Extract {
                    digest: format!("snapshot {name}"),
                    detail,
                });
            }
        };
        let dest = self.layer_dir(&digest);
        if dest.is_dir() {
            crate::cleanup::remove_dir_all(&tmp); // the same content was snapshotted before
        } else {
            std::fs::rename(&tmp, &dest)?;
        }
        let mut layers = base.layers.clone();
        layers.push(digest.clone());
        // The manifest we would push: its digest names this snapshot's content.
        let manifest = serde_json::json!({"layers": layers, "config": base.config});
        let rec = ImageRecord {
            reference: reference.clone(),
            digest: format!(
                "sha256:{}",
                hex::encode(Sha256::digest(manifest.to_string()))
            ),
            layers,
            config: base.config.clone(),
        };
        self.write_record(&rec)?;
        tracing::info!(snapshot = name, layer = %digest, bytes = size, "snapshot saved");
        Ok(rec)
    }

    /// Push snapshot `name` to a registry as image `target`, so sandboxes anywhere can start
    /// from it: each layer written back as a tarball on disk and streamed (one at a time), then
    /// the config and the manifest. Returns the canonical reference and the manifest digest.
    pub async fn push_snapshot(
        &self,
        name: &str,
        target: &str,
        credentials: PushAuth,
    ) -> Result<(String, String), ImageError> {
        let local = snapshot::reference(name);
        let rec = self
            .cached_resolved(&resolve(&local, &BTreeMap::new())?)
            .ok_or_else(|| ImageError::NotFound(local.clone()))?;
        // To the registry it names: a mirror serves pulls of another registry; pushes to that
        // registry do not go to it.
        let r = resolve(target, &BTreeMap::new())?;
        if r.canonical.registry() == snapshot::SNAPSHOT_REGISTRY {
            return Err(ImageError::InvalidReference {
                reference: target.to_string(),
                reason: format!(
                    "{} names snapshots on this node; push to a registry",
                    snapshot::SNAPSHOT_REGISTRY
                ),
            });
        }
        let dest = &r.canonical;
        // A push with an object's credentials (or none) gets a client of its own: oci-client
        // keeps the first credentials it was given per registry for its later requests, so a
        // shared client would lend the node's (or another namespace's) credentials to this push.
        let (auth, own) = match credentials {
            PushAuth::Node => (self.auth_for(dest.resolve_registry()), None),
            PushAuth::Anonymous => (RegistryAuth::Anonymous, Some(new_client(&self.plain))),
            PushAuth::Given(c) => (
                RegistryAuth::Basic(c.username, c.password),
                Some(new_client(&self.plain)),
            ),
        };
        let client = own.as_ref().unwrap_or(&self.client);
        client
            .auth(dest, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| map_oci_error(&r, e))?;
        let mut layers = Vec::with_capacity(rec.layers.len());
        for layer in &rec.layers {
            layers.push(self.push_layer(client, &r, layer).await?);
        }
        let config = serde_json::to_vec(&push::config(&rec.config, &layers))
            .map_err(std::io::Error::other)?;
        let config_blob = push::Blob {
            digest: format!("sha256:{}", hex::encode(Sha256::digest(&config))),
            size: config.len() as u64,
        };
        client
            .push_blob(dest, config, &config_blob.digest)
            .await
            .map_err(|e| map_oci_error(&r, e))?;
        let manifest =
            oci_client::manifest::OciManifest::Image(push::manifest(&config_blob, &layers));
        client
            .push_manifest(dest, &manifest)
            .await
            .map_err(|e| map_oci_error(&r, e))?;
        let digest = client
            .fetch_manifest_digest(dest, &auth)
            .await
            .map_err(|e| map_oci_error(&r, e))?;
        tracing::info!(snapshot = name, reference = %dest.whole(), %digest, "snapshot pushed");
        Ok((dest.whole(), digest))
    }

    /// Write extracted layer `layer` back as a tarball and push it; its digest and size.
    async fn push_layer(
        &self,
        client: &Client,
        r: &ResolvedRef,
        layer: &str,
    ) -> Result<push::Blob, ImageError> {
        let dir = self.layer_dir(layer);
        let tar = self.root.join("tmp").join(format!(
            "push-{}-{}.tar",
            layer.replace(':', "-"),
            rand::random::<u32>()
        ));
        let tar2 = tar.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<push::Blob> {
            let file = std::fs::File::create(&tar2)?;
            let (digest, size, file) =
                snapshot::write_layer(&dir, snapshot::Hashing::new(file))?.finish();
            file.sync_all()?;
            Ok(push::Blob { digest, size })
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|w| w);
        let pushed = match written {
            Ok(blob) => match tokio::fs::File::open(&tar).await {
                Ok(file) => {
                    use futures::TryStreamExt;
                    let stream = tokio_util::io::ReaderStream::new(file)
                        .map_err(OciDistributionError::IoError);
                    client
                        .push_blob_stream(&r.canonical, stream, &blob.digest, Some(blob.size))
                        .await
                        .map(|_| blob)
                        .map_err(|e| map_oci_error(r, e))
                }
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        };
        crate::cleanup::remove_file(&tar);
        pushed
    }

    /// Every snapshot recorded here.
    pub fn snapshots(&self) -> Vec<ImageRecord> {
        let Ok(dir) = std::fs::read_dir(self.root.join("refs")) else {
            return Vec::new();
        };
        let mut out: Vec<ImageRecord> = dir
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<ImageRecord>(&b).ok())
            .filter(|r| snapshot::name_of(&r.reference).is_some())
            .collect();
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        out
    }

    /// Forget snapshot `name` and delete its own layer. Sandboxes already made from it keep
    /// running (their overlay holds the layer's directory open); new ones cannot be made.
    pub async fn remove_snapshot(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let reference = snapshot::reference(name);
        let lock = self.lock_for(&reference);
        let _guard = lock.lock().await;
        let path = self.record_path(&reference);
        let rec: ImageRecord = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ImageError::NotFound(reference.clone()))?;
        std::fs::remove_file(&path)?;
        // Its top layer is its own unless another snapshot has the very same content.
        if let Some(top) = rec.layers.last() {
            let shared = self.snapshots().iter().any(|o| o.layers.contains(top));
            if !shared {
                crate::cleanup::remove_dir_all(&self.layer_dir(top));
            }
        }
        Ok(rec)
    }

    fn write_record(&self, rec: &ImageRecord) -> std::io::Result<()> {
        let path = self.record_path(&rec.reference);
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }

    /// Root of the store.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// `sha256:<64 hex>` or `sha512:<128 hex>`, lowercase.
pub fn valid_digest(d: &str) -> bool {
    let hex_ok = |h: &str, n: usize| {
        h.len() == n
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match d.split_once(':') {
        Some(("sha256", h)) => hex_ok(h, 64),
        Some(("sha512", h)) => hex_ok(h, 128),
        _ => false,
    }
}

/// Leftovers of interrupted pulls (older than an hour, so a concurrent pull is never touched).
fn remove_stale_tmp(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if old {
            let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
        }
    }
}

fn parse_config(config: &str) -> ImageConfig {
    let v: serde_json::Value = serde_json::from_str(config).unwrap_or_default();
    let c = &v["config"];
    let env = c["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str()?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(String::from);
    ImageConfig {
        env,
        workdir: nonempty(c["WorkingDir"].as_str()),
        user: nonempty(c["User"].as_str()),
    }
}

fn map_oci_error(r: &ResolvedRef, e: OciDistributionError) -> ImageError {
    let reference = r.canonical.whole();
    let registry = r.source.resolve_registry().to_string();
    let text = e.to_string();
    match &e {
        OciDistributionError::ImageManifestNotFoundError(_) => {
            return ImageError::NotFound(reference)
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                use oci_client::errors::OciErrorCode as C;
                matches!(
                    e.code,
                    C::ManifestUnknown | C::NameUnknown | C::NotFound | C::BlobUnknown
                )
            }) =>
        {
            return ImageError::NotFound(reference)
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            return ImageError::Unauthorized {
                registry,
                reference,
                detail: text,
            }
        }
        OciDistributionError::RequestError(re) if re.is_connect() || re.is_timeout() => {
            return ImageError::Unreachable {
                registry,
                detail: text,
            }
        }
        _ => {}
    }
    let lower = text.to_ascii_lowercase();
    let missing = [
        "manifest_unknown",
        "manifest unknown",
        "name_unknown",
        "name unknown",
        "not found",
    ];
    if missing.iter().any(|m| lower.contains(m)) {
        ImageError::NotFound(reference)
    } else if lower.contains("error sending request") || lower.contains("connect") {
        ImageError::Unreachable {
            registry,
            detail: text,
        }
    } else {
        ImageError::PullFailed {
            reference,
            detail: text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_validated_before_becoming_paths() {
        assert!(valid_digest(&format!("sha256:{}", "a".repeat(64))));
        for bad in [
            "/",
            "../../etc",
            "sha256:../x",
            &format!("sha256:{}", "A".repeat(64)),
            "md5:abc",
            "",
        ] {
            assert!(!valid_digest(bad), "{bad}");
        }
    }

    #[test]
    fn config_env_workdir_user() {
        let c = parse_config(
            r#"{"config":{"Env":["PATH=/usr/bin:/bin","A=b=c"],"WorkingDir":"/app","User":""}}"#,
        );
        assert_eq!(
            c.env,
            vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("A".into(), "b=c".into())
            ]
        );
        assert_eq!(c.workdir.as_deref(), Some("/app"));
        assert_eq!(c.user, None);
        assert_eq!(parse_config("not json"), ImageConfig::default());
    }
}
