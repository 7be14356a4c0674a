//! HTTP plumbing shared by the services: reading the request with a body limit, JSON bodies
//! and responses, and splitting paths for routing.
//!
//! A service's router is a `match` on `(method, path_segments(path))`, the same table as the
//! original app's Express routes; anything it does not list, including a known path with
//! another method, is `ApiError::NotFound`.

use futures::StreamExt;
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};
use spin_sdk::http::{ErrorCode, IncomingRequest, Request, Response};
use spin_sdk::wit::wasi::http0_2_0::types::http_error_code;

use crate::errors::ApiError;

/// The largest request body the API accepts (64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Buffers an incoming request, reading at most one byte more than `MAX_BODY_BYTES` of its
/// body: that is enough to know a body is too large without holding all of it in memory.
///
/// WASI HTTP resources are dropped child first. The request's `headers()` is a child of the
/// request, and `into_body_stream` drops the request: under Spin 3.6 (wasmtime 42) dropping
/// a resource whose children live traps the guest ("resource has children"; newer wasmtime,
/// as in our host, allows it). So the headers are copied out and their handle dropped at
/// once; the body stream then drops its input stream before it finishes the body.
///
/// A body that cannot be read is the client's doing (a malformed chunk, a client that stops
/// sending), never a 500: see [`body_read_error`].
pub async fn read_request(incoming: IncomingRequest) -> Result<Request, ApiError> {
    let method = incoming.method();
    let uri = incoming.uri();
    let headers = incoming.headers().entries();
    let mut body = Vec::new();
    let mut chunks = incoming.into_body_stream();
    while let Some(chunk) = chunks.next().await {
        // The error resource is dropped here, before the stream it came from.
        let chunk = chunk.map_err(|error| body_read_error(http_error_code(&error)))?;
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY_BYTES {
            body.truncate(MAX_BODY_BYTES + 1);
            break;
        }
    }
    Ok(Request::builder()
        .method(method)
        .uri(uri)
        .headers(headers)
        .body(body)
        .build())
}

/// The answer to a request body that failed, by the `wasi:http` error code the host gave
/// its read (none: the host did not say). Spin gives `connection-read-timeout` for a client
/// that stopped sending and `HTTP-protocol-error` for a malformed chunk. The project's host
/// gives no code, and answers such requests itself whatever the component answers.
pub fn body_read_error(code: Option<ErrorCode>) -> ApiError {
    match code {
        Some(ErrorCode::ConnectionReadTimeout) => ApiError::RequestTimeout,
        Some(ErrorCode::HttpRequestBodySize(_)) => ApiError::PayloadTooLarge,
        _ => ApiError::InvalidBody,
    }
}

/// The JSON object in the request body, deserialized as `T`.
pub fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let content_type = req.header("content-type").and_then(|v| v.as_str());
    parse_json_body(content_type, req.body())
}

/// The body rules of the API: at most 64 KiB (else 413), `Content-Type: application/json`
/// and a JSON object that names each of `T`'s fields at most once (else 400 "Invalid JSON
/// body"). Checking the fields is the caller's business: request types mark them
/// `optional_field` so that a missing or mistyped field becomes a validation error naming it.
///
/// The body is deserialized straight into `T`, whose derived `Deserialize` refuses a field
/// given twice: a JSON parser elsewhere (a proxy, a log pipeline) might read the first of
/// two, and this one would otherwise act on the last.
pub fn parse_json_body<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    if !content_type.is_some_and(is_json_content_type) {
        return Err(ApiError::InvalidJson);
    }
    // A struct also deserializes from a JSON array (its fields in order): only objects.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::InvalidJson);
    }
    serde_json::from_slice(body).map_err(|_| ApiError::InvalidJson)
}

/// Deserializes a request field leniently: absent, `null` or of the wrong type all read as
/// `None`, so `{"email": 42}` fails the email's validation ("Email must be valid") rather
/// than the whole body. Use as
/// `#[serde(default, deserialize_with = "ticketing_common::http::optional_field")]`.
pub fn optional_field<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// `application/json`, in any case, with or without parameters such as `charset`.
pub fn is_json_content_type(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/json")
}

/// A response with `value` as its JSON body.
pub fn json_response(status: u16, value: &impl Serialize) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(anyhow::Error::from)?;
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .build())
}

/// The response for a handler's outcome: errors become their JSON envelope.
pub fn respond(outcome: Result<Response, ApiError>) -> Response {
    outcome.unwrap_or_else(ApiError::into_response)
}

/// The segments of a request path, for matching routes: `/api/tickets/abc` and
/// `/api/tickets/abc/` both give `["api", "tickets", "abc"]`.
pub fn path_segments(path: &str) -> Vec<&str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Credentials {
        #[serde(default, deserialize_with = "optional_field")]
        email: Option<String>,
        #[serde(default, deserialize_with = "optional_field")]
        password: Option<String>,
    }

    fn parse(content_type: Option<&str>, body: &str) -> Result<Credentials, ApiError> {
        parse_json_body(content_type, body.as_bytes())
    }

    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn accepts_a_json_object_and_leaves_missing_fields_empty() {
        let parsed = parse(JSON, r#"{"email": "a@b.co", "extra": 1}"#).unwrap();
        assert_eq!(
            parsed,
            Credentials {
                email: Some("a@b.co".into()),
                password: None
            }
        );
    }

    #[test]
    fn content_type_must_be_json_with_any_case_and_parameters() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type(" application/json ;charset=UTF-8"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/jsonp"));
        assert!(!is_json_content_type("application/x-www-form-urlencoded"));
        assert!(!is_json_content_type(""));
    }

    #[test]
    fn wrong_or_missing_content_type_is_invalid_json() {
        let body = r#"{"email": "a@b.co"}"#;
        assert!(matches!(parse(None, body), Err(ApiError::InvalidJson)));
        assert!(matches!(
            parse(Some("text/plain"), body),
            Err(ApiError::InvalidJson)
        ));
        assert!(parse(Some("application/json; charset=utf-8"), body).is_ok());
    }

    #[test]
    fn malformed_json_and_non_objects_are_invalid_json() {
        for body in [
            "",
            "{",
            "{\"email\": }",
            "{\"email\": 1,}",
            "[]",
            "\"text\"",
            "42",
            "null",
        ] {
            assert!(
                matches!(parse(JSON, body), Err(ApiError::InvalidJson)),
                "body {body:?} should be rejected"
            );
        }
    }

    #[test]
    fn a_field_given_twice_is_invalid_json() {
        for body in [
            r#"{"email": "a@b.co", "email": "c@d.co", "password": "secret"}"#,
            r#"{"email": "a@b.co", "password": "x", "password": "secret"}"#,
            r#"{"email": null, "email": "c@d.co"}"#,
        ] {
            assert!(
                matches!(parse(JSON, body), Err(ApiError::InvalidJson)),
                "body {body:?} should be rejected"
            );
        }
        // Fields the request type does not have are ignored, repeated or not.
        let parsed = parse(JSON, r#"{"email": "a@b.co", "x": 1, "x": 2}"#).unwrap();
        assert_eq!(parsed.email.as_deref(), Some("a@b.co"));
    }

    #[test]
    fn hostile_json_is_invalid_json() {
        let deep_arrays = format!(
            "{{\"email\": {}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let deep_objects = format!("{}{}", r#"{"email":"#.repeat(5_000), "}".repeat(5_000));
        let bodies: [&[u8]; 6] = [
            deep_arrays.as_bytes(),
            deep_objects.as_bytes(),
            br#"{"email": 1e999}"#,
            b"{\"email\": \"a\0b\"}",
            b"{\"email\": \"\xff\"}",
            br#"{"email": "a@b.co"} trailing"#,
        ];
        for body in bodies {
            assert!(
                matches!(
                    parse_json_body::<Credentials>(JSON, body),
                    Err(ApiError::InvalidJson)
                ),
                "body {:?}... should be rejected",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
        }
        // An escaped NUL is a valid JSON string: the field's validation decides.
        let parsed = parse(JSON, r#"{"email": "a\u0000@b.co"}"#).unwrap();
        assert_eq!(parsed.email.as_deref(), Some("a\0@b.co"));
    }

    #[test]
    fn null_and_mistyped_fields_count_as_missing() {
        let parsed = parse(JSON, r#"{"email": null, "password": "secret"}"#).unwrap();
        assert_eq!(parsed.email, None);
        assert_eq!(parsed.password.as_deref(), Some("secret"));
        let parsed = parse(JSON, r#"{"email": 42, "password": ["secret"]}"#).unwrap();
        assert_eq!(
            parsed,
            Credentials {
                email: None,
                password: None
            }
        );
    }

    #[test]
    fn optional_field_keeps_numbers_for_number_fields() {
        #[derive(Deserialize)]
        struct Priced {
            #[serde(default, deserialize_with = "optional_field")]
            price: Option<f64>,
        }
        let price = |body: &str| {
            parse_json_body::<Priced>(JSON, body.as_bytes())
                .unwrap()
                .price
        };
        assert_eq!(price(r#"{"price": 20}"#), Some(20.0));
        assert_eq!(price(r#"{"price": 12.5}"#), Some(12.5));
        assert_eq!(price(r#"{"price": "10"}"#), None);
        assert_eq!(price(r#"{}"#), None);
    }

    #[test]
    fn bodies_over_64_kib_are_too_large_whatever_their_content() {
        let padding = " ".repeat(MAX_BODY_BYTES);
        let too_large = format!("{{}}{padding}");
        assert!(matches!(
            parse(JSON, &too_large),
            Err(ApiError::PayloadTooLarge)
        ));
        // The size check comes before the content-type check.
        assert!(matches!(
            parse(Some("text/plain"), &too_large),
            Err(ApiError::PayloadTooLarge)
        ));
        // Exactly the limit is still accepted.
        let at_limit = format!("{{}}{}", " ".repeat(MAX_BODY_BYTES - 2));
        assert_eq!(at_limit.len(), MAX_BODY_BYTES);
        assert!(parse(JSON, &at_limit).is_ok());
    }

    #[test]
    fn unreadable_bodies_are_the_clients_fault() {
        let status = |code| body_read_error(code).status();
        assert_eq!(status(Some(ErrorCode::ConnectionReadTimeout)), 408);
        assert_eq!(
            status(Some(ErrorCode::HttpRequestBodySize(Some(1 << 20)))),
            413
        );
        assert_eq!(status(Some(ErrorCode::HttpProtocolError)), 400);
        assert_eq!(status(Some(ErrorCode::ConnectionTerminated)), 400);
        assert_eq!(status(None), 400);
        assert_eq!(body_read_error(None).to_string(), "Invalid request body");
    }

    #[test]
    fn path_segments_ignore_one_trailing_slash() {
        assert_eq!(path_segments("/api/tickets"), ["api", "tickets"]);
        assert_eq!(path_segments("/api/tickets/"), ["api", "tickets"]);
        assert_eq!(path_segments("/api/tickets/abc"), ["api", "tickets", "abc"]);
        assert!(path_segments("/").is_empty());
        // An empty segment in the middle matches no route.
        assert_eq!(path_segments("/api//tickets"), ["api", "", "tickets"]);
    }

    #[test]
    fn json_response_sets_status_content_type_and_body() {
        let response = json_response(201, &serde_json::json!({"id": "x"})).unwrap();
        assert_eq!(*response.status(), 201);
        assert_eq!(
            response.header("content-type").and_then(|v| v.as_str()),
            Some("application/json")
        );
        assert_eq!(response.body(), br#"{"id":"x"}"#);
    }
}
