//! Password hashing: argon2id with a random salt, stored as a PHC string
//! (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), so the parameters travel with each hash.

use anyhow::anyhow;
use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, SaltString},
    Argon2, PasswordHasher, PasswordVerifier,
};
use ticketing_common::ApiError;

/// The argon2id hash, with the parameters `hash` uses, of a password no one can sign in with
/// (it is nobody's hash: no user record holds it).
const NO_ACCOUNT_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$zX/BNOn/0O5T7GoAmVdy/Q$9Ofi4GEy3QJ57RddNW0gt4IekvRJhsQWJUt2gmLX8B4";

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

/// Does the work of `verify` for an email that has no account, so that a signin with an
/// unknown email takes as long as one with a wrong password and the answer time does not
/// tell which emails are registered.
pub fn verify_without_account(password: &str) -> Result<(), ApiError> {
    verify(password, NO_ACCOUNT_HASH).map(drop)
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
    fn the_no_account_hash_costs_what_a_real_hash_costs() {
        let real = hash("password").unwrap();
        let real = PasswordHash::new(&real).unwrap();
        let dummy = PasswordHash::new(NO_ACCOUNT_HASH).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(
            dummy.params, real.params,
            "same memory, time and parallelism"
        );
        assert!(verify_without_account("password").is_ok());
    }

    #[test]
    fn a_corrupt_stored_hash_is_an_internal_error() {
        assert!(matches!(
            verify("password", "not a hash"),
            Err(ApiError::Internal(_))
        ));
    }
}
