//! The JWT signing secret: from the configuration when it sets one (every node of
//! a cluster must share it), else generated once and kept in `<data>/jwt-secret`.
//!
//! The secret is text, and its UTF-8 bytes are the HMAC key, whether it comes from
//! the configuration or from the file. So the file's content can be copied into
//! the configuration of other nodes as is. The file holds one line: 64 base64url
//! characters (48 random bytes); a trailing newline is ignored.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::file;
use super::random;
use crate::error::BrokerError;

/// The name of the secret file in the data directory.
pub const SECRET_FILE_NAME: &str = "jwt-secret";

/// The shortest secret accepted, in bytes: RFC 7518 (3.2) requires an HS256 key
/// at least as long as the hash output, 256 bits.
pub const JWT_SECRET_BYTES_MIN: usize = 32;

/// The longest secret accepted, in bytes: bounds what is read from the file.
pub const JWT_SECRET_BYTES_MAX: usize = 4096;

/// Random bytes in a generated secret: 384 bits, 64 base64url characters.
const GENERATED_SECRET_RANDOM_BYTES: usize = 48;

/// The hex digits of the fingerprint (the start of the secret's SHA-256).
const FINGERPRINT_HEX_LEN: usize = 16;

/// The label from which the receipt key is derived.
const RECEIPT_KEY_LABEL: &[u8] = b"receipts";

/// The secret that signs and checks tokens. Its `Debug` shows no part of it.
#[derive(Clone)]
pub(crate) struct SigningSecret {
    /// The HMAC key of tokens.
    key: Vec<u8>,
    /// Derived from `key` once, at open.
    receipt_key: [u8; 32],
}

impl SigningSecret {
    /// A secret from its key bytes (length checked by the callers).
    fn new(key: Vec<u8>) -> Result<SigningSecret, String> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .map_err(|e| format!("cannot derive the receipt key: {e}"))?;
        mac.update(RECEIPT_KEY_LABEL);
        let receipt_key = mac.finalize().into_bytes().into();
        Ok(SigningSecret { key, receipt_key })
    }

    /// The configured secret when there is one, else the one in
    /// `<data_dir>/jwt-secret`, made there on first use.
    pub(crate) fn resolve(
        data_dir: &Path,
        configured: Option<&str>,
    ) -> Result<SigningSecret, BrokerError> {
        match configured {
            Some(secret) => {
                check_len(secret)
                    .map_err(|reason| BrokerError::Config(format!("jwt_secret is too {reason}")))?;
                SigningSecret::new(secret.as_bytes().to_vec()).map_err(BrokerError::Config)
            }
            None => Self::load_or_create(&data_dir.join(SECRET_FILE_NAME)),
        }
    }

    /// Reads the secret file, or creates it with a fresh random secret.
    fn load_or_create(path: &Path) -> Result<SigningSecret, BrokerError> {
        if let Some(secret) = Self::load(path)? {
            return Ok(secret);
        }
        let generated = random::base64url(GENERATED_SECRET_RANDOM_BYTES)
            .map_err(|e| BrokerError::io(path, e.into()))?;
        if file::create_new(path, format!("{generated}\n").as_bytes())? {
            tracing::info!(path = %path.display(), "generated a new JWT signing secret");
            return SigningSecret::new(generated.into_bytes()).map_err(|reason| {
                BrokerError::BadMetadata {
                    path: path.to_owned(),
                    reason,
                }
            });
        }
        // Another process created the file between our read and our write.
        Self::load(path)?.ok_or_else(|| BrokerError::BadMetadata {
            path: path.to_owned(),
            reason: "the secret file vanished while it was being created".to_owned(),
        })
    }

    /// Reads the secret file; `None` when it does not exist.
    fn load(path: &Path) -> Result<Option<SigningSecret>, BrokerError> {
        let Some(bytes) = file::read(path, JWT_SECRET_BYTES_MAX as u64 + 1)? else {
            return Ok(None);
        };
        let bad = |reason: String| BrokerError::BadMetadata {
            path: path.to_owned(),
            reason,
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| bad("the JWT secret is not UTF-8 text".to_owned()))?;
        let secret = text.strip_suffix('\n').unwrap_or(&text);
        check_len(secret).map_err(|reason| bad(format!("the JWT secret is too {reason}")))?;
        SigningSecret::new(secret.as_bytes().to_vec())
            .map(Some)
            .map_err(bad)
    }

    /// The HMAC key.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.key
    }

    /// A short, non-secret name of the key for logs (`sha256:` and 16 hex digits):
    /// equal on two nodes exactly when they accept each other's tokens.
    pub(crate) fn fingerprint(&self) -> String {
        let digest = Sha256::digest(&self.key);
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("sha256:{}", hex.get(..FINGERPRINT_HEX_LEN).unwrap_or(&hex))
    }

    /// HMAC-SHA256(secret, "receipts"): the key that signs queue receipts, so that
    /// every node sharing the JWT secret can check every node's receipts, while a
    /// receipt key never signs a token.
    pub(crate) fn receipt_key(&self) -> [u8; 32] {
        self.receipt_key
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecret({})", self.fingerprint())
    }
}

/// Checks a secret's length; the error completes "the secret is too ...".
fn check_len(secret: &str) -> Result<(), String> {
    if secret.len() < JWT_SECRET_BYTES_MIN {
        return Err(format!(
            "short: {} bytes, at least {JWT_SECRET_BYTES_MIN} are needed",
            secret.len()
        ));
    }
    if secret.len() > JWT_SECRET_BYTES_MAX {
        return Err(format!(
            "long: {} bytes, at most {JWT_SECRET_BYTES_MAX} are accepted",
            secret.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_generated_secret_is_kept_with_mode_0600() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let first = SigningSecret::resolve(dir.path(), None)?;
        let second = SigningSecret::resolve(dir.path(), None)?;
        assert_eq!(first.bytes(), second.bytes());
        assert_eq!(first.bytes().len(), 64);
        let path = dir.path().join(SECRET_FILE_NAME);
        assert_eq!(fs::read(&path)?, [first.bytes(), b"\n"].concat());
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        Ok(())
    }

    #[test]
    fn a_configured_secret_wins_and_writes_no_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let configured = "k".repeat(JWT_SECRET_BYTES_MIN);
        let secret = SigningSecret::resolve(dir.path(), Some(&configured))?;
        assert_eq!(secret.bytes(), configured.as_bytes());
        assert!(!dir.path().join(SECRET_FILE_NAME).exists());
        Ok(())
    }

    #[test]
    fn short_secrets_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let short = "k".repeat(JWT_SECRET_BYTES_MIN - 1);
        let configured = SigningSecret::resolve(dir.path(), Some(&short));
        assert!(
            matches!(configured, Err(BrokerError::Config(_))),
            "{configured:?}"
        );
        fs::write(dir.path().join(SECRET_FILE_NAME), "short\n")?;
        let stored = SigningSecret::resolve(dir.path(), None);
        assert!(
            matches!(stored, Err(BrokerError::BadMetadata { .. })),
            "{stored:?}"
        );
        Ok(())
    }

    #[test]
    fn fingerprint_and_receipt_key_are_derived_not_leaked() {
        let secret = SigningSecret::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap();
        let fingerprint = secret.fingerprint();
        assert_eq!(fingerprint.len(), "sha256:".len() + FINGERPRINT_HEX_LEN);
        assert!(!format!("{secret:?}").contains("0123456789"));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.bytes()).unwrap();
        mac.update(b"receipts");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(secret.receipt_key(), expected);
        let other = SigningSecret::new(b"0123456789abcdef0123456789abcdeX".to_vec()).unwrap();
        assert_ne!(other.receipt_key(), secret.receipt_key());
        assert_ne!(other.fingerprint(), fingerprint);
    }
}
