//! NATS subjects and names, checked the way a NATS server checks them so that the embedded
//! bus accepts and rejects the same things as JetStream.
//!
//! A subject is `.`-separated tokens (`ticketing.order.created`). In a filter, the token `*`
//! matches exactly one token and a final `>` matches one or more tokens
//! (`ticketing.order.*`, `ticketing.>`).

use anyhow::bail;

/// A subject to publish on: non-empty tokens, no wildcards, no whitespace.
pub fn check_subject(subject: &str) -> anyhow::Result<()> {
    check_tokens(subject)?;
    if subject.split('.').any(|token| token == "*" || token == ">") {
        bail!("subject {subject:?}: wildcards are only allowed in filters, not when publishing");
    }
    Ok(())
}

/// A filter: like a subject, plus `*` tokens and a final `>` token.
pub fn check_filter(filter: &str) -> anyhow::Result<()> {
    check_tokens(filter)?;
    let tokens: Vec<&str> = filter.split('.').collect();
    if let Some(position) = tokens.iter().position(|token| *token == ">") {
        if position != tokens.len() - 1 {
            bail!("subject filter {filter:?}: `>` must be the last token");
        }
    }
    Ok(())
}

fn check_tokens(subject: &str) -> anyhow::Result<()> {
    if subject.is_empty() {
        bail!("the subject is empty");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("subject {subject:?}: whitespace is not allowed");
    }
    if subject.split('.').any(str::is_empty) {
        bail!("subject {subject:?}: empty token (leading, trailing or doubled `.`)");
    }
    Ok(())
}

/// Whether `subject` (no wildcards) matches `filter`.
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut filter_tokens = filter.split('.');
    let mut subject_tokens = subject.split('.');
    loop {
        match (filter_tokens.next(), subject_tokens.next()) {
            // `>` needs at least one token to match.
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(expected), Some(token)) if expected == token => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every subject `inner` (a filter) matches is also matched by `outer`: a consumer's
/// filter must be covered by one of its stream's subjects (JetStream refuses it otherwise).
pub fn covers(outer: &str, inner: &str) -> bool {
    let mut outer_tokens = outer.split('.');
    let mut inner_tokens = inner.split('.');
    loop {
        match (outer_tokens.next(), inner_tokens.next()) {
            (Some(">"), Some(_)) => return true,
            // `*` covers one token of any kind but `>` (which may stand for several).
            (Some("*"), Some(token)) if token != ">" => {}
            (Some(expected), Some(token)) if expected == token => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A stream or consumer name: non-empty, without `.`, `*`, `>`, path separators or
/// whitespace (they become tokens of JetStream API subjects and file names).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() {
        bail!("the name is empty");
    }
    if let Some(bad) = name
        .chars()
        .find(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control())
    {
        bail!("name {name:?}: {bad:?} is not allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_filters_match_only_the_same_subject() {
        assert!(matches(
            "ticketing.order.created",
            "ticketing.order.created"
        ));
        assert!(!matches(
            "ticketing.order.created",
            "ticketing.order.cancelled"
        ));
        assert!(!matches("ticketing.order", "ticketing.order.created"));
        assert!(!matches("ticketing.order.created", "ticketing.order"));
    }

    #[test]
    fn star_matches_exactly_one_token() {
        assert!(matches("ticketing.order.*", "ticketing.order.created"));
        assert!(matches("ticketing.*.created", "ticketing.ticket.created"));
        assert!(matches("*", "anything"));
        assert!(!matches("ticketing.order.*", "ticketing.order"));
        assert!(!matches("ticketing.order.*", "ticketing.order.created.v2"));
        assert!(!matches("ticketing.*.created", "ticketing.order.cancelled"));
    }

    #[test]
    fn greater_than_matches_one_or_more_trailing_tokens() {
        assert!(matches("ticketing.>", "ticketing.order.created"));
        assert!(matches("ticketing.>", "ticketing.x"));
        assert!(matches(">", "a.b.c"));
        assert!(matches("ticketing.*.>", "ticketing.order.created.v2"));
        assert!(!matches("ticketing.>", "ticketing"));
        assert!(!matches("ticketing.>", "other.order.created"));
        assert!(!matches("ticketing.*.>", "ticketing.order"));
    }

    #[test]
    fn tokens_are_compared_whole() {
        assert!(!matches("ticketing.order", "ticketing.orders"));
        assert!(!matches("ticketing.ord*", "ticketing.order"));
    }

    #[test]
    fn filters_covered_by_other_filters() {
        assert!(covers("ticketing.>", "ticketing.order.created"));
        assert!(covers("ticketing.>", "ticketing.order.*"));
        assert!(covers("ticketing.>", "ticketing.>"));
        assert!(covers("ticketing.*.created", "ticketing.order.created"));
        assert!(covers("ticketing.*.*", "ticketing.*.created"));
        assert!(covers(">", "anything.>"));
        assert!(!covers("ticketing.order.*", "ticketing.>"));
        assert!(!covers("ticketing.*", "ticketing.>"));
        assert!(!covers("ticketing.>", "ticketing"));
        assert!(!covers("ticketing.>", "other.>"));
        assert!(!covers("ticketing.order.created", "ticketing.order.*"));
    }

    #[test]
    fn subject_and_filter_syntax() {
        assert!(check_subject("ticketing.order.created").is_ok());
        assert!(check_subject("ticketing.dead-letter.orders").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a.\tb"] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a.*", "a.*.c", "a.>", ">", "*.>"] {
            assert!(check_filter(good).is_ok(), "{good:?}");
        }
        for bad in ["", "a.>.c", ">.a", "a..b", "a b"] {
            assert!(check_filter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(check_name("orders-ticketing_ticket_created").is_ok());
        assert!(check_name("TICKETING").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
