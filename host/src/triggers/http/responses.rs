//! Responses the host answers itself, in the API's error envelope
//! (`{"errors": [{"message": "..."}]}`, see API.md).

use http::{header, Response, StatusCode};

use super::body::{full, ResponseBody};

pub const NOT_FOUND: &str = "Not Found";
pub const PAYLOAD_TOO_LARGE: &str = "Payload too large";
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

pub fn payload_too_large() -> Response<ResponseBody> {
    error(StatusCode::PAYLOAD_TOO_LARGE, PAYLOAD_TOO_LARGE)
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
}
