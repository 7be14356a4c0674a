//! Entity ids in the format of the original app's MongoDB ObjectIds: 24 lowercase hex digits
//! encoding 4 bytes of big-endian unix seconds and 8 random bytes. They sort by creation time
//! (to the second) and clients of the original API already accept them.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::errors::ApiError;

/// Length of an id in hex digits.
pub const ID_LEN: usize = 24;

/// A fresh id for an entity created now.
pub fn new_id() -> Result<String, ApiError> {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let mut random = [0u8; 8];
    getrandom::getrandom(&mut random).context("reading random bytes for an id")?;
    // The 4-byte timestamp wraps in 2106, as ObjectIds do.
    Ok(format_id(seconds as u32, random))
}

/// `bytes` random bytes as lowercase hex digits, e.g. for connection ids and test charges.
pub fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut random = vec![0u8; bytes];
    getrandom::getrandom(&mut random).context("reading random bytes")?;
    Ok(to_hex(&random))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The id made of a timestamp and random bytes.
pub fn format_id(unix_seconds: u32, random: [u8; 8]) -> String {
    let mut bytes = unix_seconds.to_be_bytes().to_vec();
    bytes.extend_from_slice(&random);
    to_hex(&bytes)
}

/// When the entity with this id was created (unix seconds), read from the id itself.
pub fn created_at(id: &str) -> Option<u32> {
    if !is_valid_id(id) {
        return None;
    }
    u32::from_str_radix(&id[..8], 16).ok()
}

/// Whether `text` is in the id format; anything else can never name an entity (404).
pub fn is_valid_id(text: &str) -> bool {
    text.len() == ID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_with_the_big_endian_timestamp() {
        let id = format_id(0x64f0_c0de, [1, 2, 3, 4, 5, 6, 7, 0xff]);
        assert_eq!(id, "64f0c0de01020304050607ff");
        assert!(is_valid_id(&id));
    }

    #[test]
    fn an_id_tells_when_it_was_made() {
        assert_eq!(
            created_at(&format_id(1_700_000_000, [9; 8])),
            Some(1_700_000_000)
        );
        assert_eq!(created_at("not an id"), None);
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        let earlier = format_id(1_700_000_000, [0xff; 8]);
        let later = format_id(1_700_000_001, [0; 8]);
        assert!(earlier < later);
    }

    #[test]
    fn new_ids_are_valid_and_distinct() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert!(is_valid_id(&a) && is_valid_id(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn random_hex_has_two_digits_per_byte() {
        let hex = random_hex(8).unwrap();
        assert_eq!(hex.len(), 16);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(hex, random_hex(8).unwrap());
    }

    #[test]
    fn only_24_lowercase_hex_digits_are_ids() {
        assert!(is_valid_id("507f1f77bcf86cd799439011"));
        for bad in [
            "",
            "507f1f77bcf86cd79943901",   // 23 digits
            "507f1f77bcf86cd7994390111", // 25 digits
            "507F1F77BCF86CD799439011",  // upper case
            "507f1f77bcf86cd79943901g",  // not hex
            "507f1f77bcf86cd79943901\u{e9}",
            "../../../../etc/passwd0000",
        ] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
