//! The auth settings, each with its documented default.

use std::fmt;

use serde::Deserialize;

use super::password;
use super::secret::{JWT_SECRET_BYTES_MAX, JWT_SECRET_BYTES_MIN};
use crate::error::BrokerError;

/// A token's lifetime when the configuration sets none: one hour.
pub const TOKEN_TTL_SECS_DEFAULT: u64 = 3600;

/// The longest token lifetime accepted: one day. Tokens cannot be revoked one by
/// one (removing the user or changing the password revokes all of a user's), so
/// their lifetime bounds how long a leaked token is useful.
pub const TOKEN_TTL_SECS_MAX: u64 = 24 * 3600;

/// Settings of [`super::Auth`]. Its `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How long an issued token is valid, in seconds: 1 to [`TOKEN_TTL_SECS_MAX`].
    /// Defaults to 3600 (one hour).
    pub token_ttl_secs: u64,
    /// The HMAC secret that signs tokens, at least 32 bytes. Every node of a
    /// cluster must have the same one, so that each accepts the others' tokens.
    /// Defaults to none: a random secret is generated on first start and kept in
    /// `<data>/jwt-secret` (mode 0600), which suits one node.
    pub jwt_secret: Option<String>,
    /// The password given to the `admin` user that the first start creates
    /// (`BROKER_ADMIN_PASSWORD`); ignored once users exist. Defaults to none: the
    /// first start makes a random password and reports it once.
    pub admin_password: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            token_ttl_secs: TOKEN_TTL_SECS_DEFAULT,
            jwt_secret: None,
            admin_password: None,
        }
    }
}

impl AuthConfig {
    /// Checks each setting's range (`admin_password` is checked only when used:
    /// see [`AuthConfig::checked_admin_password`]).
    pub fn validate(&self) -> Result<(), BrokerError> {
        if !(1..=TOKEN_TTL_SECS_MAX).contains(&self.token_ttl_secs) {
            return Err(BrokerError::Config(format!(
                "token_ttl_secs is {}; it must be 1 to {TOKEN_TTL_SECS_MAX}",
                self.token_ttl_secs
            )));
        }
        if let Some(secret) = &self.jwt_secret
            && !(JWT_SECRET_BYTES_MIN..=JWT_SECRET_BYTES_MAX).contains(&secret.len())
        {
            return Err(BrokerError::Config(format!(
                "jwt_secret is {} bytes long; it must be {JWT_SECRET_BYTES_MIN} to \
                 {JWT_SECRET_BYTES_MAX} (HS256 needs a 256-bit key)",
                secret.len()
            )));
        }
        Ok(())
    }

    /// The configured password for the first admin, checked. Only a start that
    /// creates the first admin asks: once users exist the setting is ignored,
    /// whatever its value (an empty `BROKER_ADMIN_PASSWORD` included).
    pub fn checked_admin_password(&self) -> Result<Option<&str>, BrokerError> {
        let Some(admin_password) = &self.admin_password else {
            return Ok(None);
        };
        password::validate(admin_password).map_err(|e| {
            BrokerError::Config(format!(
                "admin_password (BROKER_ADMIN_PASSWORD), the password of the first admin: {}",
                e.message
            ))
        })?;
        Ok(Some(admin_password))
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "Some(<redacted>)" } else { "None" };
        f.debug_struct("AuthConfig")
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field(
                "jwt_secret",
                &format_args!("{}", redacted(self.jwt_secret.is_some())),
            )
            .field(
                "admin_password",
                &format_args!("{}", redacted(self.admin_password.is_some())),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let config = AuthConfig::default();
        assert_eq!(config.token_ttl_secs, 3600);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let bad = [
            AuthConfig {
                token_ttl_secs: 0,
                ..AuthConfig::default()
            },
            AuthConfig {
                token_ttl_secs: TOKEN_TTL_SECS_MAX + 1,
                ..AuthConfig::default()
            },
            AuthConfig {
                jwt_secret: Some("short".to_owned()),
                ..AuthConfig::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(BrokerError::Config(_))),
                "{config:?}"
            );
        }
    }

    #[test]
    fn the_admin_password_is_checked_only_when_used() {
        let empty = AuthConfig {
            admin_password: Some(String::new()),
            ..AuthConfig::default()
        };
        assert!(empty.validate().is_ok());
        let error = empty.checked_admin_password().unwrap_err().to_string();
        assert!(error.contains("BROKER_ADMIN_PASSWORD"), "{error}");
        assert_eq!(
            AuthConfig::default().checked_admin_password().unwrap(),
            None
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let config = AuthConfig {
            jwt_secret: Some("s".repeat(40)),
            admin_password: Some("hunter2".to_owned()),
            ..AuthConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("sss") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn it_reads_from_toml_like_data_with_defaults() {
        let config: AuthConfig = serde_json::from_str(r#"{"admin_password": "pw"}"#).unwrap();
        assert_eq!(config.token_ttl_secs, TOKEN_TTL_SECS_DEFAULT);
        assert_eq!(config.admin_password.as_deref(), Some("pw"));
        assert!(serde_json::from_str::<AuthConfig>(r#"{"ttl": 1}"#).is_err());
    }
}
