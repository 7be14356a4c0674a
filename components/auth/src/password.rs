//! Password hashing: argon2id with a random salt, stored as a PHC string
//! (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), so the parameters travel with each hash.

use anyhow::anyhow;
use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, SaltString},
    Argon2, PasswordHasher, PasswordVerifier,
};
use ticketing_common::ApiError;

/// Hashes a password with argon2id and the crate's recommended parameters.
pub fn hash(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow!("hashing a password: {e}"))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the stored hash. A stored hash that cannot be parsed is an
/// internal error, not a wrong password.
pub fn verify(password: &str, stored_hash: &str) -> Result<bool, ApiError> {
    let parsed =
        PasswordHash::new(stored_hash).map_err(|e| anyhow!("a stored password hash: {e}"))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_argon2id_that_verify_only_the_right_password() {
        let first = hash("password").unwrap();
        let second = hash("password").unwrap();
        assert!(first.starts_with("$argon2id$"));
        assert_ne!(first, second, "each hash has its own salt");
        assert!(verify("password", &first).unwrap());
        assert!(verify("password", &second).unwrap());
        assert!(!verify("Password", &first).unwrap());
        assert!(!verify("", &first).unwrap());
    }

    #[test]
    fn a_corrupt_stored_hash_is_an_internal_error() {
        assert!(matches!(
            verify("password", "not a hash"),
            Err(ApiError::Internal(_))
        ));
    }
}
