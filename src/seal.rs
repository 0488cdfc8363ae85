//! Sealing of secrets at rest (admin passwords, and anything else the store keeps that could log in
//! somewhere) with AES-256-GCM.
//!
//! Each sealed value is `v1:` + base64(nonce ‖ ciphertext). The caller passes a context string (for
//! example `connection/dev-postgres/password`) used as associated data, so a sealed value copied into
//! another row does not open there.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use lessor_plugin::Secret;

use crate::error::{Error, Result};

const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;

/// Seals and opens secrets with the install's key. Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key redacted>)")
    }
}

impl Sealer {
    /// Builds a sealer from a key given as 64 hex digits or as base64 of 32 bytes.
    pub fn from_encoded_key(encoded: &Secret) -> Result<Self> {
        let text = encoded.expose().trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| Error::Seal("the seal key is not valid hex".into()))?
        } else {
            BASE64.decode(text).map_err(|_| {
                Error::Seal("the seal key must be 64 hex digits or base64 of 32 bytes".into())
            })?
        };
        if bytes.len() != 32 {
            return Err(Error::Seal(format!(
                "the seal key must be 32 bytes (AES-256), got {}",
                bytes.len()
            )));
        }
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
        })
    }

    /// Reads the key from `path`, creating the file with a fresh random key (mode 0600) when
    /// `create` is set and the file does not exist.
    pub fn from_key_file(path: &Path, create: bool) -> Result<Self> {
        if !path.exists() {
            if !create {
                return Err(Error::Config(format!(
                    "seal key file {} does not exist",
                    path.display()
                )));
            }
            let key = Aes256Gcm::generate_key(OsRng);
            write_private_file(path, &hex::encode(key))?;
        }
        restrict_to_owner(path).map_err(|e| {
            Error::Config(format!(
                "cannot restrict seal key file {} to its owner: {e}",
                path.display()
            ))
        })?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read seal key file {}: {e}", path.display()))
        })?;
        Self::from_encoded_key(&Secret::new(text))
    }

    /// A fresh random key, encoded for `LESSOR_SEAL_KEY`.
    pub fn generate_encoded_key() -> Secret {
        Secret::new(hex::encode(Aes256Gcm::generate_key(OsRng)))
    }

    pub fn seal(&self, context: &str, plaintext: &Secret) -> Result<String> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.expose().as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| Error::Seal("encryption failed".into()))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        Ok(format!("{PREFIX}{}", BASE64.encode(blob)))
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<Secret> {
        let encoded = sealed.strip_prefix(PREFIX).ok_or_else(|| {
            Error::Seal(format!("sealed value for {context} has an unknown format"))
        })?;
        let blob = BASE64
            .decode(encoded)
            .map_err(|_| Error::Seal(format!("sealed value for {context} is corrupt")))?;
        if blob.len() < NONCE_LEN {
            return Err(Error::Seal(format!(
                "sealed value for {context} is truncated"
            )));
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                Error::Seal(format!(
                    "cannot open the sealed value for {context}: wrong seal key or tampered data"
                ))
            })?;
        String::from_utf8(plaintext)
            .map(Secret::new)
            .map_err(|_| Error::Seal(format!("sealed value for {context} is not UTF-8")))
    }
}

/// Creates `dir` and any missing parents, each new one accessible only by its owner (0700),
/// whatever the umask. An existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes an existing file readable and writable only by its owner (0600) if it is not already;
/// says so in the log, since a wider mode means someone else may have read it.
pub fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            tracing::warn!(
                path = %path.display(),
                was = format!("{:o}", mode & 0o777),
                "file was readable by other users; its mode is now 0600"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes a file readable only by its owner.
pub(crate) fn write_private_file(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        create_private_dir(parent)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", parent.display())))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_context_binding() {
        let sealer = Sealer::from_encoded_key(&Sealer::generate_encoded_key()).unwrap();
        let sealed = sealer
            .seal("connection/a/password", &Secret::new("s3cret-admin"))
            .unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(
            sealer
                .open("connection/a/password", &sealed)
                .unwrap()
                .expose(),
            "s3cret-admin"
        );
        assert!(sealer.open("connection/b/password", &sealed).is_err());
        let other = Sealer::from_encoded_key(&Sealer::generate_encoded_key()).unwrap();
        let err = other.open("connection/a/password", &sealed).unwrap_err();
        assert!(err.to_string().contains("wrong seal key"), "{err}");
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        let err = Sealer::from_encoded_key(&Secret::new("c2hvcnQ=")).unwrap_err();
        assert!(err.to_string().contains("32 bytes"), "{err}");
        assert!(Sealer::from_encoded_key(&Secret::new("not base64 !!")).is_err());
    }
}
