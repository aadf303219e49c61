//! Passwords: Argon2id hashes in PHC string form, with argon2's default
//! parameters (19 MiB of memory, 2 passes, 1 lane: OWASP's recommendation), so a
//! check costs tens of milliseconds of one core.
//!
//! The PHC string records its parameters, so hashes made with other parameters
//! (a future default, a hand-made hash) still verify.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::random::{self, CryptoError};
use crate::error::ApiError;

/// The longest password accepted, in bytes: bounds the work a login does.
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// Random bytes in each salt (argon2's recommended 16).
const SALT_BYTES: usize = 16;

/// Random bytes in a generated password: 18 bytes are 24 base64url characters
/// (144 bits).
const GENERATED_PASSWORD_RANDOM_BYTES: usize = 18;

/// Checks a new password: 1 to [`PASSWORD_BYTES_MAX`] bytes.
pub(crate) fn validate(password: &str) -> Result<(), ApiError> {
    if password.is_empty() {
        return Err(ApiError::bad_request("password must not be empty"));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(ApiError::bad_request(format!(
            "password is {} bytes long, more than the limit of {PASSWORD_BYTES_MAX}",
            password.len()
        )));
    }
    Ok(())
}

/// The Argon2id hash of `password` with a fresh random salt, as a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
pub(crate) fn hash(password: &str) -> Result<String, CryptoError> {
    hash_with(&hasher(), password)
}

/// The hasher of new passwords: Argon2id with argon2's default parameters.
#[cfg(not(test))]
fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// In unit tests, the cheapest Argon2id: unoptimized argon2 takes over a second
/// per hash with the real parameters, and the tests hash dozens of passwords.
/// `hashes_use_argon2id_with_the_default_parameters` checks the real hasher.
#[cfg(test)]
fn hasher() -> Argon2<'static> {
    let params = Params::new(
        Params::MIN_M_COST,
        Params::MIN_T_COST,
        Params::MIN_P_COST,
        None,
    );
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        params.unwrap_or_default(),
    )
}

/// The hash of `password` by `argon2`, with a fresh random salt.
fn hash_with(argon2: &Argon2<'_>, password: &str) -> Result<String, CryptoError> {
    let mut salt_bytes = [0u8; SALT_BYTES];
    random::fill(&mut salt_bytes)?;
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| CryptoError(format!("cannot encode a password salt: {e}")))?;
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| CryptoError(format!("cannot hash a password: {e}")))
}

/// Whether `password` matches the PHC string `hash`. A malformed hash or an
/// over-long password never matches.
pub(crate) fn verify(password: &str, hash: &str) -> bool {
    if password.len() > PASSWORD_BYTES_MAX {
        return false;
    }
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Checks that a stored hash is a PHC string argon2 can verify; the reason names
/// no part of the hash.
pub(crate) fn check_stored(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a PHC password hash ({e})"))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "password hash algorithm {} is not argon2",
            parsed.algorithm
        ));
    }
    Ok(())
}

/// A random password for the bootstrap admin: 24 base64url characters.
pub(crate) fn generate() -> Result<String, CryptoError> {
    random::base64url(GENERATED_PASSWORD_RANDOM_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_use_argon2id_with_the_default_parameters() -> Result<(), CryptoError> {
        let production = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default());
        let stored = hash_with(&production, "correct horse")?;
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(verify("correct horse", &stored));
        assert!(!verify("correct hors", &stored));
        Ok(())
    }

    #[test]
    fn a_hash_verifies_its_password_and_no_other() -> Result<(), CryptoError> {
        let stored = hash("correct horse")?;
        assert!(stored.starts_with("$argon2id$v=19$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        assert!(verify("correct horse", &stored));
        assert!(!verify("correct hors", &stored));
        assert!(!verify("", &stored));
        assert_eq!(check_stored(&stored), Ok(()));
        Ok(())
    }

    #[test]
    fn the_same_password_hashes_differently_each_time() -> Result<(), CryptoError> {
        assert_ne!(hash("pw")?, hash("pw")?);
        Ok(())
    }

    #[test]
    fn malformed_hashes_and_long_passwords_never_verify() {
        assert!(!verify("pw", "not a hash"));
        assert!(!verify("pw", ""));
        assert!(check_stored("plaintext").is_err());
        assert!(check_stored("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA").is_err());
        let long = "x".repeat(PASSWORD_BYTES_MAX + 1);
        assert!(validate(&long).is_err());
        assert!(validate("").is_err());
        assert!(validate("x").is_ok());
    }

    #[test]
    fn generated_passwords_are_24_characters() -> Result<(), CryptoError> {
        assert_eq!(generate()?.len(), 24);
        Ok(())
    }
}
