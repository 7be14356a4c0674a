//! The user model and its keys in the `auth` store:
//!
//! - `user:<id>` → `{id, email, passwordHash}`
//! - `email:<email>` → `"<id>"`, the unique-email index, created with `insert_new` so that
//!   of concurrent signups with one email exactly one wins.
//!
//! Emails are stored normalised (trimmed, lower case).

use serde::{Deserialize, Serialize};
use ticketing_common::{ids::new_id, store::Store, ApiError};

const STORE_LABEL: &str = "auth";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_hash: String,
}

/// The users in the store.
pub struct Users {
    store: Store,
}

impl Users {
    pub fn open() -> Result<Self, ApiError> {
        Ok(Self {
            store: Store::open(STORE_LABEL)?,
        })
    }

    /// Creates a user, or returns `None` if the email is already in use.
    pub fn create(&self, email: &str, password_hash: String) -> Result<Option<User>, ApiError> {
        let user = User {
            id: new_id()?,
            email: normalize_email(email),
            password_hash,
        };
        // The record goes first, under its fresh id, so that the email index never points
        // at a missing user; if the email turns out to be taken, the record is removed.
        self.store.put(&user_key(&user.id), &user)?;
        if self.store.insert_new(&email_key(&user.email), &user.id)? {
            Ok(Some(user))
        } else {
            self.store.delete(&user_key(&user.id))?;
            Ok(None)
        }
    }

    pub fn find_by_email(&self, email: &str) -> Result<Option<User>, ApiError> {
        let Some(id) = self
            .store
            .get::<String>(&email_key(&normalize_email(email)))?
        else {
            return Ok(None);
        };
        self.store.get(&user_key(&id))
    }
}

fn user_key(id: &str) -> String {
    format!("user:{id}")
}

fn email_key(normalized_email: &str) -> String {
    format!("email:{normalized_email}")
}

/// The form an email is stored and looked up in, so that `A@B.co ` and `a@b.co` are one user.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(normalize_email("  Test@Example.COM "), "test@example.com");
    }

    #[test]
    fn the_stored_record_uses_the_original_field_names() {
        let user = User {
            id: "507f1f77bcf86cd799439011".into(),
            email: "a@b.co".into(),
            password_hash: "$argon2id$...".into(),
        };
        assert_eq!(
            serde_json::to_value(&user).unwrap(),
            serde_json::json!({
                "id": "507f1f77bcf86cd799439011",
                "email": "a@b.co",
                "passwordHash": "$argon2id$..."
            })
        );
    }
}
