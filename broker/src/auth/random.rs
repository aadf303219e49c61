//! Random bytes from the operating system (getrandom), for salts, secrets,
//! generated passwords and token ids.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The operating system could not give random bytes, or a hash could not be made.
/// Rare and not the client's fault: a 500 on the API, fatal at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CryptoError(pub(crate) String);

impl From<CryptoError> for std::io::Error {
    fn from(error: CryptoError) -> std::io::Error {
        std::io::Error::other(error)
    }
}

/// Fills `buf` with random bytes.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf)
        .map_err(|e| CryptoError(format!("the operating system gave no random bytes: {e}")))
}

/// `bytes` random bytes as unpadded base64url text (4 characters per 3 bytes).
pub(crate) fn base64url(bytes: usize) -> Result<String, CryptoError> {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(&buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_strings_have_the_expected_length_and_differ() -> Result<(), CryptoError> {
        let (a, b) = (base64url(18)?, base64url(18)?);
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        Ok(())
    }
}
