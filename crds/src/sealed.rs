//! Secret values on their way from the operator to one node-agent.
//!
//! A node-agent holds a private key that never leaves its node and announces the public half on its
//! Lease. When a Sandbox that uses Secrets is bound to that node, the operator (which may `get`
//! core Secrets) seals the values to that key and writes the result to `status.sealedSecrets`;
//! only that node-agent can open it. So node-agents need no permission on core Secrets at all, and
//! a node learns only the values of the sandboxes it runs.
//!
//! Sealing is HPKE (RFC 9180, base mode): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305, from the `hpke` crate. The associated data binds a payload to one Sandbox
//! object (namespace, name, uid) on one node: copied to another object or node it does not open.

use crate::sandbox::SealedSecrets;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use microsandbox_wire::api::SecretSpec;
use serde::{Deserialize, Serialize};

type Kem = X25519HkdfSha256;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// HPKE `info`: the purpose and format version of a payload.
const INFO: &[u8] = b"microsandbox.dev sealed secrets v1";
/// HPKE `info` of registry credentials (a SandboxSnapshot's push): a payload of one purpose
/// never opens as the other.
const CREDENTIALS_INFO: &[u8] = b"microsandbox.dev sealed registry credentials v1";

/// A registry's user name and password (or token), as a docker config holds them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}
/// Longest payload accepted (base64 characters), the CRD's bound on `ciphertext`.
pub const MAX_CIPHERTEXT: usize = 256 * 1024;

/// Why sealing or opening failed. Never carries a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("not an X25519 public or private key (32 bytes, base64)")]
    BadKey,
    #[error("sealed to another key ({0}), not this node-agent's")]
    WrongRecipient(String),
    #[error("the sealed secrets do not open with this node's key for this Sandbox (tampered, or meant for another object or node)")]
    DoesNotOpen,
    #[error("the secret values are too large to seal into a Sandbox status ({0} bytes)")]
    TooLarge(usize),
    #[error("sealed payload is malformed: {0}")]
    Malformed(String),
}

/// The object a payload is for (a Sandbox, or a SandboxSnapshot for its push credentials) on
/// one node: the associated data of the seal.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub node: &'a str,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        // Lengths first: no two bindings produce the same bytes.
        let mut out = Vec::new();
        for part in [self.namespace, self.name, self.uid, self.node] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

/// A node-agent's sealing key pair.
pub struct SealingKey {
    private: PrivateKey,
    public: PublicKey,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("public", &self.public_b64())
            .finish_non_exhaustive()
    }
}

impl SealingKey {
    /// A fresh key pair from the system's random source.
    pub fn generate() -> Self {
        let (private, public) = Kem::gen_keypair();
        Self { private, public }
    }

    /// The key pair of a stored private key (the bytes of [`Self::private_bytes`]).
    pub fn from_private_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let private = PrivateKey::from_bytes(bytes).map_err(|_| SealError::BadKey)?;
        let public = Kem::sk_to_pk(&private);
        Ok(Self { private, public })
    }

    /// The private key, to be stored where only the agent may read it.
    pub fn private_bytes(&self) -> Vec<u8> {
        self.private.to_bytes().to_vec()
    }

    /// The public key as announced on the Lease (standard base64).
    pub fn public_b64(&self) -> String {
        B64.encode(self.public.to_bytes())
    }

    /// Open a payload sealed to this key for `binding`.
    pub fn open(
        &self,
        sealed: &SealedSecrets,
        binding: Binding<'_>,
    ) -> Result<Vec<SecretSpec>, SealError> {
        let plain = self.open_bytes(sealed, INFO, binding)?;
        // A fixed message: serde's would quote the (secret) input.
        serde_json::from_slice(&plain)
            .map_err(|_| SealError::Malformed("the opened payload is not a list of secrets".into()))
    }

    /// Open registry credentials sealed to this key for `binding` ([`seal_credentials`]).
    pub fn open_credentials(
        &self,
        sealed: &SealedSecrets,
        binding: Binding<'_>,
    ) -> Result<RegistryCredentials, SealError> {
        let plain = self.open_bytes(sealed, CREDENTIALS_INFO, binding)?;
        serde_json::from_slice(&plain).map_err(|_| {
            SealError::Malformed("the opened payload is not registry credentials".into())
        })
    }

    fn open_bytes(
        &self,
        sealed: &SealedSecrets,
        info: &[u8],
        binding: Binding<'_>,
    ) -> Result<Vec<u8>, SealError> {
        if sealed.recipient != self.public_b64() {
            return Err(SealError::WrongRecipient(sealed.recipient.clone()));
        }
        let malformed = |what: &str| SealError::Malformed(what.to_string());
        let enc = B64
            .decode(&sealed.enc)
            .map_err(|_| malformed("enc is not base64"))?;
        let enc = EncappedKey::from_bytes(&enc).map_err(|_| malformed("enc is not a key"))?;
        let ct = B64
            .decode(&sealed.ciphertext)
            .map_err(|_| malformed("ciphertext is not base64"))?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.private,
            &enc,
            info,
            &ct,
            &binding.aad(),
        )
        .map_err(|_| SealError::DoesNotOpen)
    }
}

/// Seal `secrets` to the node-agent key `recipient` (base64, from the node's Lease) for `binding`.
pub fn seal(
    recipient: &str,
    binding: Binding<'_>,
    secrets: &[SecretSpec],
) -> Result<SealedSecrets, SealError> {
    let plain = serde_json::to_vec(secrets).map_err(|e| SealError::Malformed(e.to_string()))?;
    seal_bytes(recipient, INFO, binding, &plain)
}

/// Seal registry credentials to the node-agent key `recipient` for `binding` (a
/// SandboxSnapshot on its node).
pub fn seal_credentials(
    recipient: &str,
    binding: Binding<'_>,
    credentials: &RegistryCredentials,
) -> Result<SealedSecrets, SealError> {
    let plain = serde_json::to_vec(credentials).map_err(|e| SealError::Malformed(e.to_string()))?;
    seal_bytes(recipient, CREDENTIALS_INFO, binding, &plain)
}

fn seal_bytes(
    recipient: &str,
    info: &[u8],
    binding: Binding<'_>,
    plain: &[u8],
) -> Result<SealedSecrets, SealError> {
    let raw = B64
        .decode(recipient.trim())
        .map_err(|_| SealError::BadKey)?;
    let pk = PublicKey::from_bytes(&raw).map_err(|_| SealError::BadKey)?;
    // base64 of ciphertext (plaintext + 16-byte tag) must fit the CRD's bound.
    if (plain.len() + 16).div_ceil(3) * 4 > MAX_CIPHERTEXT {
        return Err(SealError::TooLarge(plain.len()));
    }
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeS::Base,
        &pk,
        info,
        plain,
        &binding.aad(),
    )
    .map_err(|_| SealError::BadKey)?;
    Ok(SealedSecrets {
        recipient: B64.encode(pk.to_bytes()),
        enc: B64.encode(enc.to_bytes()),
        ciphertext: B64.encode(ct),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Vec<SecretSpec> {
        vec![SecretSpec {
            env: "API_KEY".into(),
            value: "sk-live-0123456789".into(),
            allow_hosts: vec!["api.example.com".into()],
        }]
    }

    const B: Binding<'static> = Binding {
        namespace: "team-a",
        name: "job-1",
        uid: "u-1",
        node: "n1",
    };

    #[test]
    fn credentials_open_only_as_credentials() {
        let key = SealingKey::generate();
        let creds = RegistryCredentials {
            username: "robot".into(),
            password: "pw-0123456789".into(),
        };
        let sealed = seal_credentials(&key.public_b64(), B, &creds).unwrap();
        assert!(!sealed.ciphertext.contains("pw-0123"));
        assert!(!format!("{creds:?}").contains("pw-0123"));
        assert_eq!(key.open_credentials(&sealed, B).unwrap(), creds);
        // Sealed for another object, or as secrets: does not open.
        assert_eq!(
            key.open_credentials(&sealed, Binding { uid: "u-2", ..B }),
            Err(SealError::DoesNotOpen)
        );
        assert_eq!(key.open(&sealed, B), Err(SealError::DoesNotOpen));
        let secrets = seal(&key.public_b64(), B, &secrets()).unwrap();
        assert_eq!(
            key.open_credentials(&secrets, B),
            Err(SealError::DoesNotOpen)
        );
    }

    #[test]
    fn opens_only_with_the_key_and_binding_it_was_sealed_for() {
        let key = SealingKey::generate();
        let sealed = seal(&key.public_b64(), B, &secrets()).unwrap();
        assert!(!sealed.ciphertext.contains("sk-live"));
        assert_eq!(key.open(&sealed, B).unwrap(), secrets());

        // The stored private key gives the same key pair back.
        let again = SealingKey::from_private_bytes(&key.private_bytes()).unwrap();
        assert_eq!(again.public_b64(), key.public_b64());
        assert_eq!(again.open(&sealed, B).unwrap(), secrets());

        for other in [
            Binding { uid: "u-2", ..B },
            Binding { node: "n2", ..B },
            Binding { name: "job-2", ..B },
            Binding {
                namespace: "team-b",
                ..B
            },
        ] {
            assert_eq!(key.open(&sealed, other), Err(SealError::DoesNotOpen));
        }

        let stranger = SealingKey::generate();
        assert!(matches!(
            stranger.open(&sealed, B),
            Err(SealError::WrongRecipient(_))
        ));
        // Claiming to be for the stranger does not help it either.
        let relabelled = SealedSecrets {
            recipient: stranger.public_b64(),
            ..sealed.clone()
        };
        assert_eq!(stranger.open(&relabelled, B), Err(SealError::DoesNotOpen));

        let mut tampered = sealed.clone();
        let mut ct = B64.decode(&tampered.ciphertext).unwrap();
        ct[0] ^= 1;
        tampered.ciphertext = B64.encode(ct);
        assert_eq!(key.open(&tampered, B), Err(SealError::DoesNotOpen));
    }

    #[test]
    fn bad_keys_and_sizes_are_refused() {
        assert_eq!(seal("not base64!", B, &secrets()), Err(SealError::BadKey));
        assert_eq!(
            seal(&B64.encode([1u8; 5]), B, &secrets()),
            Err(SealError::BadKey)
        );
        assert_eq!(
            SealingKey::from_private_bytes(&[0u8; 3]).unwrap_err(),
            SealError::BadKey
        );
        let key = SealingKey::generate();
        let huge = vec![SecretSpec {
            value: "x".repeat(MAX_CIPHERTEXT),
            ..secrets().remove(0)
        }];
        assert!(matches!(
            seal(&key.public_b64(), B, &huge),
            Err(SealError::TooLarge(_))
        ));
        assert!(!format!("{key:?}").contains(&B64.encode(key.private_bytes())));
    }
}
