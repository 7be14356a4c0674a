//! The API's error type and its JSON envelope, `{"errors": [{"message", "field"?}]}`.

use serde::Serialize;
use spin_sdk::http::Response;

/// One item of the error envelope. `field` is set only for validation errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl FieldError {
    /// A validation failure of one request field.
    pub fn new(field: &str, message: &str) -> Self {
        Self {
            message: message.to_owned(),
            field: Some(field.to_owned()),
        }
    }

    fn message_only(message: &str) -> Self {
        Self {
            message: message.to_owned(),
            field: None,
        }
    }
}

/// The message of a 503.
pub const SERVICE_UNAVAILABLE: &str = "Service unavailable, try again";
/// How long a client should wait before retrying after a 503, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";

/// Every way a request can fail, each mapped to one status and message of the API contract.
#[derive(Debug)]
pub enum ApiError {
    /// 400, one item per failed field.
    Validation(Vec<FieldError>),
    /// 400, a business rule such as "Email in use".
    BadRequest(String),
    /// 401, not signed in or not the owner.
    NotAuthorized,
    /// 404, unknown id, route or method.
    NotFound,
    /// 413, body over the limit.
    PayloadTooLarge,
    /// 400, malformed JSON or wrong content type.
    InvalidJson,
    /// 400, a request body that could not be read (a malformed chunk, cut short).
    InvalidBody,
    /// 408, the client stopped sending its request body.
    RequestTimeout,
    /// 500; the cause is logged, never shown to the client.
    Internal(anyhow::Error),
    /// 503, a backend (the key-value store, the event bus) did not answer: nothing the
    /// client did wrong, and worth retrying. The cause is logged.
    Unavailable(anyhow::Error),
    /// 409 with this message and `Retry-After`: what the request needs is on its way (an
    /// event the service has not received yet); the same request succeeds a moment later.
    NotYet(String),
}

/// The envelope every error response carries.
#[derive(Debug, Serialize)]
struct ErrorBody {
    errors: Vec<FieldError>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Validation(_) | Self::BadRequest(_) | Self::InvalidJson | Self::InvalidBody => {
                400
            }
            Self::NotAuthorized => 401,
            Self::NotFound => 404,
            Self::RequestTimeout => 408,
            Self::PayloadTooLarge => 413,
            Self::Internal(_) => 500,
            Self::NotYet(_) => 409,
            Self::Unavailable(_) => 503,
        }
    }

    /// The items of the envelope for this error.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Validation(errors) => errors.clone(),
            Self::BadRequest(message) | Self::NotYet(message) => {
                vec![FieldError::message_only(message)]
            }
            Self::NotAuthorized => vec![FieldError::message_only("Not authorized")],
            Self::NotFound => vec![FieldError::message_only("Not Found")],
            Self::PayloadTooLarge => vec![FieldError::message_only("Payload too large")],
            Self::InvalidJson => vec![FieldError::message_only("Invalid JSON body")],
            Self::InvalidBody => vec![FieldError::message_only("Invalid request body")],
            Self::RequestTimeout => vec![FieldError::message_only("Request timeout")],
            Self::Internal(_) => vec![FieldError::message_only("Something went wrong")],
            Self::Unavailable(_) => vec![FieldError::message_only(SERVICE_UNAVAILABLE)],
        }
    }

    /// The JSON body of the error response.
    pub fn body(&self) -> Vec<u8> {
        let envelope = ErrorBody {
            errors: self.field_errors(),
        };
        serde_json::to_vec(&envelope).expect("the error envelope always serializes")
    }

    /// A backend failure, answered 503.
    pub fn unavailable(cause: anyhow::Error) -> Self {
        Self::Unavailable(cause)
    }

    /// The HTTP response for this error; the cause of a 500 or 503 goes to the log (stderr).
    /// A 503 and a 409 "not yet" say when to try again (`Retry-After`, in seconds).
    pub fn into_response(self) -> Response {
        match &self {
            Self::Internal(cause) => eprintln!("internal error: {cause:#}"),
            Self::Unavailable(cause) => eprintln!("backend unavailable: {cause:#}"),
            _ => {}
        }
        let mut response = Response::builder();
        response
            .status(self.status())
            .header("content-type", "application/json");
        if matches!(self, Self::Unavailable(_) | Self::NotYet(_)) {
            response.header("retry-after", RETRY_AFTER_SECONDS);
        }
        response.body(self.body()).build()
    }
}

/// For logs: the cause of an internal error, else the messages the client sees.
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Self::Internal(cause) | Self::Unavailable(cause) = self {
            return write!(f, "{cause:#}");
        }
        let messages: Vec<String> = self
            .field_errors()
            .into_iter()
            .map(|error| error.message)
            .collect();
        write!(f, "{}", messages.join("; "))
    }
}

/// Lets `?` turn any unexpected failure (store, serialization, ...) into a 500.
impl From<anyhow::Error> for ApiError {
    fn from(cause: anyhow::Error) -> Self {
        Self::Internal(cause)
    }
}

/// Turns the collected validation failures into an error, if there are any.
pub fn check_fields(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn body_json(error: &ApiError) -> Value {
        serde_json::from_slice(&error.body()).unwrap()
    }

    #[test]
    fn validation_errors_list_every_field() {
        let error = ApiError::Validation(vec![
            FieldError::new("email", "Email must be valid"),
            FieldError::new("password", "Password must be between 4 and 20 characters"),
        ]);
        assert_eq!(error.status(), 400);
        assert_eq!(
            body_json(&error),
            json!({"errors": [
                {"message": "Email must be valid", "field": "email"},
                {"message": "Password must be between 4 and 20 characters", "field": "password"}
            ]})
        );
    }

    #[test]
    fn other_errors_have_a_message_and_no_field() {
        let cases = [
            (ApiError::bad_request("Email in use"), 400, "Email in use"),
            (ApiError::NotAuthorized, 401, "Not authorized"),
            (ApiError::NotFound, 404, "Not Found"),
            (ApiError::PayloadTooLarge, 413, "Payload too large"),
            (ApiError::InvalidJson, 400, "Invalid JSON body"),
            (ApiError::InvalidBody, 400, "Invalid request body"),
            (ApiError::RequestTimeout, 408, "Request timeout"),
        ];
        for (error, status, message) in cases {
            assert_eq!(error.status(), status);
            assert_eq!(body_json(&error), json!({"errors": [{"message": message}]}));
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let error = ApiError::from(anyhow::anyhow!("redis connection refused"));
        assert_eq!(error.status(), 500);
        assert_eq!(
            body_json(&error),
            json!({"errors": [{"message": "Something went wrong"}]})
        );
    }

    #[test]
    fn backend_failures_are_503_and_hide_their_cause() {
        let error = ApiError::unavailable(anyhow::anyhow!("redis connection refused"));
        assert_eq!(error.status(), 503);
        assert_eq!(
            body_json(&error),
            json!({"errors": [{"message": SERVICE_UNAVAILABLE}]})
        );
        assert_eq!(error.to_string(), "redis connection refused");
    }

    #[test]
    fn errors_display_their_cause_or_messages() {
        let internal = ApiError::from(anyhow::anyhow!("redis connection refused"));
        assert_eq!(internal.to_string(), "redis connection refused");
        assert_eq!(ApiError::NotFound.to_string(), "Not Found");
        let validation = ApiError::Validation(vec![
            FieldError::new("token", "Token must be provided"),
            FieldError::new("orderId", "OrderId must be provided"),
        ]);
        assert_eq!(
            validation.to_string(),
            "Token must be provided; OrderId must be provided"
        );
    }

    #[test]
    fn not_yet_is_a_409_that_says_what() {
        let error = ApiError::NotYet("This order is not ready for payment yet, try again".into());
        assert_eq!(error.status(), 409);
        assert_eq!(
            body_json(&error),
            json!({"errors": [{"message": "This order is not ready for payment yet, try again"}]})
        );
    }

    #[test]
    fn check_fields_fails_only_when_something_failed() {
        assert!(check_fields(vec![]).is_ok());
        let result = check_fields(vec![FieldError::new("title", "Title is required")]);
        assert!(matches!(result, Err(ApiError::Validation(errors)) if errors.len() == 1));
    }
}
