//! Validation rules of the API's request fields.

/// Whether `email` (already trimmed) looks like a deliverable address: a local part and a
/// domain with at least two labels and a letters-only top-level domain, like the
/// `isEmail` check the original app used. Quoted local parts and IP-literal domains are
/// refused: no real user of a ticketing site needs them.
pub fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    email.len() <= 254 && is_valid_local_part(local) && is_valid_domain(domain)
}

fn is_valid_local_part(local: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";
    !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || SPECIALS.contains(c))
}

fn is_valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let Some(top_level) = labels.last() else {
        return false;
    };
    domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| is_valid_domain_label(label))
        && top_level.len() >= 2
        && top_level.chars().all(|c| c.is_ascii_alphabetic())
}

fn is_valid_domain_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Whether `text` has between `min` and `max` characters (not bytes), both included.
pub fn has_length_between(text: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&text.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_addresses_are_valid() {
        for email in [
            "test@test.com",
            "first.last@example.co.uk",
            "user+tag@sub.domain.io",
            "o'brien@example.ie",
            "x@a-b.com",
            "123@456.org",
        ] {
            assert!(is_valid_email(email), "{email}");
        }
    }

    #[test]
    fn malformed_addresses_are_invalid() {
        for email in [
            "",
            "test",
            "test@",
            "@test.com",
            "test@test",
            "test@test.c",
            "test@test.123",
            "te st@test.com",
            "test@te st.com",
            "test@@test.com",
            "a@b@test.com",
            ".test@test.com",
            "test.@test.com",
            "te..st@test.com",
            "test@-test.com",
            "test@test-.com",
            "test@test..com",
            "test@.test.com",
            "\"quoted\"@test.com",
            "test@[127.0.0.1]",
            " test@test.com",
        ] {
            assert!(!is_valid_email(email), "{email:?}");
        }
        let long_local = format!("{}@test.com", "a".repeat(65));
        assert!(!is_valid_email(&long_local));
    }

    #[test]
    fn lengths_count_characters_inclusively() {
        assert!(has_length_between("abcd", 4, 20));
        assert!(has_length_between(&"a".repeat(20), 4, 20));
        assert!(!has_length_between("abc", 4, 20));
        assert!(!has_length_between(&"a".repeat(21), 4, 20));
        // Four characters, eight bytes.
        assert!(has_length_between("ÿÿÿÿ", 4, 4));
    }
}
