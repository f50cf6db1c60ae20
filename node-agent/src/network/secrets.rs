//! Secrets a sandbox uses without holding them.
//!
//! The guest's environment gets a random placeholder per secret; the sandbox's egress proxy
//! ([`super::proxy`]) swaps it for the value only in HTTPS requests whose verified server name
//! is on the secret's `allow_hosts`, and blocks (and reports) every other request carrying it.
//! The values stay in the agent: in memory and in a 0600 file of the sandbox's host directory
//! (to survive an agent restart), never in the guest, its environment or the logs. HTTPS is
//! intercepted with a per-sandbox CA that the guest trusts ([`SandboxCa`]).

use microsandbox_wire::api::SecretSpec;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// One secret with its placeholder.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub env: String,
    pub value: String,
    pub placeholder: String,
    pub allow_hosts: Vec<String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("env", &self.env)
            .field("allow_hosts", &self.allow_hosts)
            .finish_non_exhaustive()
    }
}

/// A sandbox's secrets and its CA, as persisted (`secrets.json`, 0600, host side only).
#[derive(Clone, Serialize, Deserialize)]
pub struct SecretsState {
    pub entries: Vec<Entry>,
    pub ca_key_pem: String,
    pub ca_cert_pem: String,
}

/// Whether `host` matches `pattern` (exact, case-insensitive; `*.example.com` for any
/// subdomain).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => host.len() > parent.len() + 1 && host.ends_with(&format!(".{parent}")),
        None => host == pattern,
    }
}

/// What a request carrying placeholders may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewrite<'a> {
    /// Forward this text (placeholders of secrets allowed for the host replaced).
    Pass(Cow<'a, str>),
    /// A placeholder of secret `env` went to a host it is not allowed for.
    Blocked { env: String },
}

/// The secrets of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    entries: Vec<Entry>,
}

impl Secrets {
    /// Fresh, unguessable placeholders for `specs`.
    pub fn new(specs: &[SecretSpec]) -> Self {
        Self {
            entries: specs
                .iter()
                .map(|s| Entry {
                    env: s.env.clone(),
                    value: s.value.clone(),
                    placeholder: format!(
                        "msb-secret-{}-{}",
                        s.env.to_ascii_lowercase().replace('_', "-"),
                        hex::encode(rand::random::<[u8; 16]>())
                    ),
                    allow_hosts: s.allow_hosts.clone(),
                })
                .collect(),
        }
    }

    pub fn from_entries(entries: Vec<Entry>) -> Self {
        Self { entries }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The guest's environment: each variable holds its placeholder.
    pub fn env(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|e| (e.env.clone(), e.placeholder.clone()))
            .collect()
    }

    /// Rewrites `text` for a request to `host`. `substitute` is false where values must never
    /// go (plain HTTP): any placeholder then blocks.
    pub fn rewrite<'a>(&self, text: &'a str, host: &str, substitute: bool) -> Rewrite<'a> {
        match self.rewrite_bytes(text.as_bytes(), host, substitute) {
            Err(env) => Rewrite::Blocked { env },
            Ok(None) => Rewrite::Pass(Cow::Borrowed(text)),
            // Placeholders and values are text, so the result is too.
            Ok(Some(v)) => Rewrite::Pass(Cow::Owned(String::from_utf8_lossy(&v).into_owned())),
        }
    }

    /// [`Self::rewrite`] for bytes (a request body): `Ok(None)` when nothing changes,
    /// `Err(env)` when a placeholder of secret `env` may not go to `host`.
    pub fn rewrite_bytes(
        &self,
        data: &[u8],
        host: &str,
        substitute: bool,
    ) -> Result<Option<Vec<u8>>, String> {
        let mut out: Option<Vec<u8>> = None;
        for e in &self.entries {
            let current = out.as_deref().unwrap_or(data);
            let needle = e.placeholder.as_bytes();
            if !contains(current, needle) {
                continue;
            }
            if !(substitute && e.allow_hosts.iter().any(|p| host_matches(p, host))) {
                return Err(e.env.clone());
            }
            out = Some(replace(current, needle, e.value.as_bytes()));
        }
        Ok(out)
    }

    /// Whether any value appears in `bytes` (used by tests and log checks).
    pub fn leaks_into(&self, bytes: &[u8]) -> bool {
        let text = String::from_utf8_lossy(bytes);
        self.entries.iter().any(|e| text.contains(&e.value))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn replace(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Bundle the guest's TLS clients read (Debian/Ubuntu layout; created when the image has none).
pub const GUEST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The sandbox CA alone, for runtimes that add to their own roots (Node.js).
pub const GUEST_CA: &str = "/etc/ssl/certs/microsandbox-ca.pem";

/// Root filesystem patches and environment variables that make the guest trust `ca_pem`:
/// appended to the system bundle (OpenSSL, curl, Python's ssl), and named by the variables
/// common clients read (requests, curl, Node.js).
pub fn trust_store_patches(
    ca_pem: &str,
) -> (
    Vec<microsandbox_wire::api::RootPatch>,
    Vec<(String, String)>,
) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let patches = vec![
        microsandbox_wire::api::RootPatch::Mkdir {
            path: "/etc/ssl/certs".into(),
            mode: None,
        },
        microsandbox_wire::api::RootPatch::Text {
            path: GUEST_CA.into(),
            content_b64: b64.clone(),
            mode: Some(0o644),
        },
        microsandbox_wire::api::RootPatch::Append {
            path: GUEST_BUNDLE.into(),
            content_b64: b64,
        },
    ];
    let vars = vec![
        ("SSL_CERT_FILE".to_string(), GUEST_BUNDLE.to_string()),
        ("REQUESTS_CA_BUNDLE".to_string(), GUEST_BUNDLE.to_string()),
        ("CURL_CA_BUNDLE".to_string(), GUEST_BUNDLE.to_string()),
        ("NODE_EXTRA_CA_CERTS".to_string(), GUEST_CA.to_string()),
    ];
    (patches, vars)
}

/// Writes `state` to `path` readable by its owner only.
pub fn save(path: &Path, state: &SecretsState) -> std::io::Result<()> {
    crate::private_file::write(
        path,
        &serde_json::to_vec(state).map_err(std::io::Error::other)?,
    )
}

pub fn load(path: &Path) -> std::io::Result<SecretsState> {
    serde_json::from_slice(&std::fs::read(path)?).map_err(std::io::Error::other)
}

/// The per-sandbox certificate authority that signs the proxy's certificates.
pub struct SandboxCa {
    key: PKey<Private>,
    cert: X509,
    /// Leaf certificates by server name.
    leaves: Mutex<HashMap<String, (X509, PKey<Private>)>>,
}

fn ec_key() -> Result<PKey<Private>, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn serial() -> Result<openssl::asn1::Asn1Integer, openssl::error::ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

impl SandboxCa {
    /// A new CA for sandbox `name`, valid for a year.
    pub fn generate(name: &str) -> Result<Self, openssl::error::ErrorStack> {
        let key = ec_key()?;
        let mut subject = X509NameBuilder::new()?;
        subject.append_entry_by_nid(Nid::ORGANIZATIONNAME, "microsandbox")?;
        subject.append_entry_by_nid(Nid::COMMONNAME, &format!("microsandbox sandbox {name} CA"))?;
        let subject = subject.build();
        let mut b = X509::builder()?;
        b.set_version(2)?;
        b.set_serial_number(&*serial()?)?;
        b.set_subject_name(&subject)?;
        b.set_issuer_name(&subject)?;
        b.set_pubkey(&key)?;
        b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
        b.set_not_after(&*Asn1Time::days_from_now(365)?)?;
        b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(Self {
            key,
            cert: b.build(),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    pub fn from_pem(key: &str, cert: &str) -> Result<Self, openssl::error::ErrorStack> {
        Ok(Self {
            key: PKey::private_key_from_pem(key.as_bytes())?,
            cert: X509::from_pem(cert.as_bytes())?,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    pub fn cert_pem(&self) -> String {
        String::from_utf8(self.cert.to_pem().unwrap_or_default()).unwrap_or_default()
    }

    pub fn key_pem(&self) -> String {
        String::from_utf8(self.key.private_key_to_pem_pkcs8().unwrap_or_default())
            .unwrap_or_default()
    }

    /// A certificate for `host` (a DNS name or an IP address) signed by this CA, cached.
    pub fn leaf(&self, host: &str) -> Result<(X509, PKey<Private>), openssl::error::ErrorStack> {
        let mut cache = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = cache.get(host) {
            return Ok(hit.clone());
        }
        let key = ec_key()?;
        let mut subject = X509NameBuilder::new()?;
        subject.append_entry_by_nid(Nid::COMMONNAME, host)?;
        let subject = subject.build();
        let mut b = X509::builder()?;
        b.set_version(2)?;
        b.set_serial_number(&*serial()?)?;
        b.set_subject_name(&subject)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(&key)?;
        b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
        b.set_not_after(&*Asn1Time::days_from_now(30)?)?;
        let mut san = SubjectAlternativeName::new();
        if host.parse::<std::net::IpAddr>().is_ok() {
            san.ip(host);
        } else {
            san.dns(host);
        }
        let san = san.build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(san)?;
        b.append_extension(BasicConstraints::new().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        let leaf = (b.build(), key);
        cache.insert(host.to_string(), leaf.clone());
        Ok(leaf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::new(&[
            SecretSpec {
                env: "API_KEY".into(),
                value: "s3cr3t-value".into(),
                allow_hosts: vec!["api.example.com".into()],
            },
            SecretSpec {
                env: "GH_TOKEN".into(),
                value: "ghp_zzz".into(),
                allow_hosts: vec!["*.github.test".into()],
            },
        ])
    }

    #[test]
    fn placeholders_are_random_and_carry_no_value() {
        let (a, b) = (secrets(), secrets());
        assert_ne!(a.entries()[0].placeholder, b.entries()[0].placeholder);
        let env = a.env();
        assert_eq!(env[0].0, "API_KEY");
        assert!(env[0].1.starts_with("msb-secret-api-key-"));
        assert!(!a.leaks_into(format!("{env:?}").as_bytes()));
        assert!(!format!("{:?}", a.entries()).contains("s3cr3t"));
    }

    #[test]
    fn substitution_only_for_allowed_hosts_over_tls() {
        let s = secrets();
        let key = s.entries()[0].placeholder.clone();
        let gh = s.entries()[1].placeholder.clone();
        let header = format!("Bearer {key}");
        assert_eq!(
            s.rewrite(&header, "API.example.com", true),
            Rewrite::Pass(Cow::Owned("Bearer s3cr3t-value".into()))
        );
        assert_eq!(
            s.rewrite(&header, "evil.example.com", true),
            Rewrite::Blocked {
                env: "API_KEY".into()
            }
        );
        // Never over plain HTTP, even to the allowed host.
        assert_eq!(
            s.rewrite(&header, "api.example.com", false),
            Rewrite::Blocked {
                env: "API_KEY".into()
            }
        );
        assert_eq!(
            s.rewrite(&format!("token {gh}"), "api.github.test", true),
            Rewrite::Pass(Cow::Owned("token ghp_zzz".into()))
        );
        assert!(matches!(
            s.rewrite(&format!("token {gh}"), "github.test", true),
            Rewrite::Blocked { .. }
        ));
        assert_eq!(
            s.rewrite("no secrets here", "x", false),
            Rewrite::Pass(Cow::Borrowed("no secrets here"))
        );
    }

    #[test]
    fn bodies_are_rewritten_as_bytes() {
        let s = secrets();
        let key = s.entries()[0].placeholder.clone();
        // Not UTF-8 around it, twice, next to another placeholder's host: all handled.
        let mut body = b"\xff{\"k\":\"".to_vec();
        body.extend_from_slice(key.as_bytes());
        body.extend_from_slice(b"\",\"again\":\"");
        body.extend_from_slice(key.as_bytes());
        body.extend_from_slice(b"\"}");
        let out = s
            .rewrite_bytes(&body, "api.example.com", true)
            .unwrap()
            .expect("changed");
        assert_eq!(
            out,
            b"\xff{\"k\":\"s3cr3t-value\",\"again\":\"s3cr3t-value\"}"
        );
        assert_eq!(
            s.rewrite_bytes(&body, "evil.example.com", true),
            Err("API_KEY".into())
        );
        assert_eq!(s.rewrite_bytes(b"plain", "x", true), Ok(None));
        // A truncated placeholder is not one.
        assert_eq!(
            s.rewrite_bytes(&key.as_bytes()[..key.len() - 1], "evil.example.com", true),
            Ok(None)
        );
    }

    #[test]
    fn ca_issues_leaves_it_verifies() {
        let ca = SandboxCa::generate("t").unwrap();
        let (leaf, _) = ca.leaf("api.example.com").unwrap();
        assert!(leaf.verify(&ca.cert.public_key().unwrap()).unwrap());
        let again = SandboxCa::from_pem(&ca.key_pem(), &ca.cert_pem()).unwrap();
        let (ip_leaf, _) = again.leaf("203.0.113.7").unwrap();
        assert!(ip_leaf.verify(&ca.cert.public_key().unwrap()).unwrap());
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
