//! Component variables (spin.toml `[component.<id>.variables]`), typed and with defaults.

use std::str::FromStr;

use anyhow::anyhow;

use crate::errors::ApiError;

/// Session lifetime when `session_ttl_seconds` is not set: 24 hours.
pub const DEFAULT_SESSION_TTL_SECONDS: u64 = 24 * 60 * 60;

/// The HS256 key for session tokens. A missing or empty `jwt_secret` is a deployment mistake,
/// so it is a logged 500 rather than a silently insecure default.
pub fn jwt_secret() -> Result<String, ApiError> {
    match raw_variable("jwt_secret")? {
        Some(secret) => Ok(secret),
        None => Err(anyhow!("the variable jwt_secret is not set").into()),
    }
}

/// How long a session token stays valid (`session_ttl_seconds`).
pub fn session_ttl_seconds() -> Result<u64, ApiError> {
    variable_or("session_ttl_seconds", DEFAULT_SESSION_TTL_SECONDS)
}

/// Whether session cookies carry `Secure` (`secure_cookies`, default false).
pub fn secure_cookies() -> Result<bool, ApiError> {
    variable_or("secure_cookies", false)
}

/// A variable parsed as `T`, or `default` when it is not set or empty.
pub fn variable_or<T>(name: &str, default: T) -> Result<T, ApiError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    parse_variable(name, raw_variable(name)?.as_deref(), default)
}

/// The value of a variable; `None` when undefined or empty.
fn raw_variable(name: &str) -> Result<Option<String>, ApiError> {
    match spin_sdk::variables::get(name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
        Err(e) => Err(anyhow!("reading the variable {name}: {e}").into()),
    }
}

/// The pure part of `variable_or`: an unparsable value is an error (500), never ignored,
/// so a typo in the configuration shows up at once.
pub fn parse_variable<T>(name: &str, raw: Option<&str>, default: T) -> Result<T, ApiError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match raw.map(str::trim) {
        None | Some("") => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|e| anyhow!("the variable {name} has an invalid value {text:?}: {e}").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_variables_take_the_default() {
        assert_eq!(parse_variable("ttl", None, 86400u64).unwrap(), 86400);
        assert_eq!(parse_variable("ttl", Some("  "), 86400u64).unwrap(), 86400);
    }

    #[test]
    fn set_variables_are_parsed_as_their_type() {
        assert_eq!(parse_variable("ttl", Some(" 60 "), 86400u64).unwrap(), 60);
        assert!(parse_variable("secure", Some("true"), false).unwrap());
        assert!(!parse_variable("secure", Some("false"), true).unwrap());
    }

    #[test]
    fn unparsable_variables_are_internal_errors() {
        assert!(matches!(
            parse_variable("ttl", Some("a day"), 86400u64),
            Err(ApiError::Internal(_))
        ));
        assert!(matches!(
            parse_variable("secure", Some("yes"), false),
            Err(ApiError::Internal(_))
        ));
    }
}
