//! Responses the host answers itself, in the API's error envelope
//! (`{"errors": [{"message": "..."}]}`, see API.md).

use http::{header, Response, StatusCode};

use super::body::{full, ResponseBody};
use super::request_body::BodyFault;

pub const NOT_FOUND: &str = "Not Found";
pub const PAYLOAD_TOO_LARGE: &str = "Payload too large";
pub const INVALID_REQUEST_BODY: &str = "Invalid request body";
pub const REQUEST_TIMEOUT: &str = "Request timeout";
pub const HEADER_FIELDS_TOO_LARGE: &str = "Request header fields too large";
pub const SOMETHING_WENT_WRONG: &str = "Something went wrong";

pub fn error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let body = serde_json::json!({ "errors": [{ "message": message }] }).to_string();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

pub fn not_found() -> Response<ResponseBody> {
    error(StatusCode::NOT_FOUND, NOT_FOUND)
}

/// The request's head (request line and headers) is over the limit.
pub fn header_fields_too_large() -> Response<ResponseBody> {
    error(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        HEADER_FIELDS_TOO_LARGE,
    )
}

/// The client's request body failed. The connection is closed after the answer: the rest of
/// the body is unread or unreadable, so the next request's start cannot be found.
pub fn body_fault(fault: BodyFault) -> Response<ResponseBody> {
    let mut response = match fault {
        BodyFault::TooLarge => error(StatusCode::PAYLOAD_TOO_LARGE, PAYLOAD_TOO_LARGE),
        BodyFault::Malformed => error(StatusCode::BAD_REQUEST, INVALID_REQUEST_BODY),
        BodyFault::TimedOut => error(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT),
    };
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// The client did not send its request body in time.
pub fn request_timeout() -> Response<ResponseBody> {
    body_fault(BodyFault::TimedOut)
}

/// The guest failed (trap, error, no response): nothing the client did wrong.
pub fn internal_error() -> Response<ResponseBody> {
    error(StatusCode::INTERNAL_SERVER_ERROR, SOMETHING_WENT_WRONG)
}

/// The request ran out of time, or waited too long for a free instance.
pub fn unavailable() -> Response<ResponseBody> {
    error(StatusCode::SERVICE_UNAVAILABLE, SOMETHING_WENT_WRONG)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test]
    async fn envelope_shape() {
        let response = not_found();
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"errors":[{"message":"Not Found"}]}"#);
    }

    #[tokio::test]
    async fn body_faults_close_the_connection() {
        for (fault, status, message) in [
            (BodyFault::TooLarge, 413, PAYLOAD_TOO_LARGE),
            (BodyFault::Malformed, 400, INVALID_REQUEST_BODY),
            (BodyFault::TimedOut, 408, REQUEST_TIMEOUT),
        ] {
            let response = body_fault(fault);
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[header::CONNECTION], "close");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let expected = serde_json::json!({"errors": [{"message": message}]}).to_string();
            assert_eq!(&body[..], expected.as_bytes());
        }
    }
}
