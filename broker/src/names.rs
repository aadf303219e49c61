//! Names of topics, queues, subscriptions and users: 1-249 characters of
//! `[A-Za-z0-9._-]`, not `.` or `..`, so a name is always a safe directory name.

use crate::error::ApiError;

/// The longest name.
pub const NAME_LEN_MAX: usize = 249;

/// What [`validate`] accepts, as an ECMA-262 regular expression (for the OpenAPI
/// document; the length, 1 to [`NAME_LEN_MAX`], is stated apart).
pub const NAME_PATTERN: &str = r"^(?!\.\.?$)[A-Za-z0-9._-]+$";

/// Checks a name; `what` says what it names ("topic", "queue", ...) for the message.
pub fn validate(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > NAME_LEN_MAX {
        return Err(ApiError::bad_request(format!(
            "{what} name must be 1 to {NAME_LEN_MAX} characters long, got {}",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(ApiError::bad_request(format!(
            "{what} name cannot be {name:?}"
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ApiError::bad_request(format!(
            "{what} name {name:?} contains {bad:?}; allowed are letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_or_are_too_long_are_refused() {
        assert!(validate("topic", "orders.eu-1_x").is_ok());
        assert!(validate("topic", &"a".repeat(249)).is_ok());
        for bad in ["", ".", "..", "../x", "a/b", "a b", "é", &"a".repeat(250)] {
            assert!(validate("topic", bad).is_err(), "{bad:?}");
        }
    }
}
