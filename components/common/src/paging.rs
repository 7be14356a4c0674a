//! Paged listings (`GET /api/tickets`, `GET /api/orders`): the body stays a JSON array, one
//! page of it, and a `Link: <...>; rel="next"` header (RFC 8288) names the next page while
//! there is one.
//!
//! A page is asked for with `?limit=` (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]) and
//! `?cursor=` (from a `next` link). A cursor is opaque to clients: inside, it names the
//! listing and the position (in the listing's append-only order) of the last item of the
//! page before, so the next page starts right after it whatever happened meanwhile.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde::Serialize;
use spin_sdk::http::Response;

use crate::errors::{ApiError, FieldError};

/// Items per page when the request does not say.
pub const DEFAULT_LIMIT: usize = 20;
/// The most items one page may hold.
pub const MAX_LIMIT: usize = 100;

const LIMIT_MESSAGE: &str = "Limit must be a whole number from 1 to 100";
const CURSOR_MESSAGE: &str = "Cursor is not valid";

/// The page a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// The position of the last item already seen (0: from the start).
    pub after: i64,
    pub limit: usize,
}

/// The page asked for by `query` (the URL's query string, without `?`) of the listing
/// `listing`. Other parameters are ignored; a malformed or repeated `limit` or `cursor`, or
/// a cursor of another listing, is a 400 naming the field.
pub fn page_request(query: &str, listing: &str) -> Result<PageRequest, ApiError> {
    let mut limit = None;
    let mut cursor = None;
    let mut errors = Vec::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let (slot, field, message) = match name.as_ref() {
            "limit" => (&mut limit, "limit", LIMIT_MESSAGE),
            "cursor" => (&mut cursor, "cursor", CURSOR_MESSAGE),
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            errors.push(FieldError::new(field, message));
        }
    }
    let limit = match limit.as_deref().map(parse_limit) {
        None => Some(DEFAULT_LIMIT),
        Some(parsed) => parsed,
    };
    let after = match cursor.as_deref().map(|text| decode_cursor(text, listing)) {
        None => Some(0),
        Some(parsed) => parsed,
    };
    if limit.is_none() && !errors.iter().any(|e| e.field.as_deref() == Some("limit")) {
        errors.push(FieldError::new("limit", LIMIT_MESSAGE));
    }
    if after.is_none() && !errors.iter().any(|e| e.field.as_deref() == Some("cursor")) {
        errors.push(FieldError::new("cursor", CURSOR_MESSAGE));
    }
    crate::errors::check_fields(errors)?;
    Ok(PageRequest {
        after: after.unwrap_or_default(),
        limit: limit.unwrap_or(DEFAULT_LIMIT),
    })
}

/// The 400 of a cursor that is well formed but names a position the listing never had (a
/// cursor of another deployment, or from before its data was reset).
pub fn stale_cursor() -> ApiError {
    ApiError::Validation(vec![FieldError::new("cursor", CURSOR_MESSAGE)])
}

fn parse_limit(text: &str) -> Option<usize> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 3 {
        return None;
    }
    text.parse()
        .ok()
        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
}

/// The cursor that continues `listing` after `position`.
pub fn encode_cursor(listing: &str, position: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{listing}:{position}"))
}

fn decode_cursor(text: &str, listing: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let decoded = String::from_utf8(bytes).ok()?;
    let position = decoded.strip_prefix(listing)?.strip_prefix(':')?;
    if position.is_empty() || !position.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    position.parse().ok()
}

/// One page: `items` as the JSON array body and, when `next` names the position of the
/// page's last item and more follow, the `Link` to the next page of `path` (the route's
/// path, e.g. `/api/tickets`).
pub fn page_response(
    items: &impl Serialize,
    path: &str,
    listing: &str,
    request: PageRequest,
    next: Option<i64>,
) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(items).map_err(anyhow::Error::from)?;
    let mut response = Response::builder();
    response
        .status(200)
        .header("content-type", "application/json");
    if let Some(position) = next {
        response.header("link", next_link(path, listing, request.limit, position));
    }
    Ok(response.body(body).build())
}

/// `</api/tickets?limit=20&cursor=...>; rel="next"`: relative to the request's URL (RFC
/// 8288 resolves it so), so it holds behind any proxy or host name.
pub fn next_link(path: &str, listing: &str, limit: usize, position: i64) -> String {
    format!(
        "<{path}?limit={limit}&cursor={}>; rel=\"next\"",
        encode_cursor(listing, position)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: Result<PageRequest, ApiError>) -> Vec<String> {
        match result {
            Err(ApiError::Validation(errors)) => {
                errors.into_iter().filter_map(|error| error.field).collect()
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_bare_request_is_the_first_page_of_the_default_size() {
        assert_eq!(
            page_request("", "tickets").unwrap(),
            PageRequest {
                after: 0,
                limit: DEFAULT_LIMIT
            }
        );
        assert_eq!(
            page_request("other=1", "tickets").unwrap().limit,
            DEFAULT_LIMIT
        );
    }

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_listing() {
        let cursor = encode_cursor("tickets", 1234);
        assert!(cursor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let asked = page_request(&format!("limit=5&cursor={cursor}"), "tickets").unwrap();
        assert_eq!(
            asked,
            PageRequest {
                after: 1234,
                limit: 5
            }
        );
        assert_eq!(
            fields(page_request(&format!("cursor={cursor}"), "orders")),
            ["cursor"]
        );
    }

    #[test]
    fn malformed_limits_and_cursors_name_their_field() {
        for query in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=2.5",
            "limit=",
            "limit=abc",
            "limit=99999999999999999999",
            "limit=1&limit=2",
        ] {
            assert_eq!(fields(page_request(query, "tickets")), ["limit"], "{query}");
        }
        let not_a_number = URL_SAFE_NO_PAD.encode("tickets:x");
        let negative = URL_SAFE_NO_PAD.encode("tickets:-3");
        for query in [
            "cursor=",
            "cursor=%%%",
            "cursor=!!",
            &format!("cursor={not_a_number}"),
            &format!("cursor={negative}"),
            "cursor=dGlja2V0czox&cursor=dGlja2V0czox",
        ] {
            assert_eq!(
                fields(page_request(query, "tickets")),
                ["cursor"],
                "{query}"
            );
        }
        assert_eq!(
            fields(page_request("limit=0&cursor=x", "tickets")),
            ["limit", "cursor"]
        );
        assert_eq!(page_request("limit=100", "tickets").unwrap().limit, 100);
    }

    #[test]
    fn the_next_link_is_relative_and_carries_the_limit() {
        assert_eq!(
            next_link("/api/tickets", "tickets", 20, 7),
            format!(
                "</api/tickets?limit=20&cursor={}>; rel=\"next\"",
                encode_cursor("tickets", 7)
            )
        );
    }
}
