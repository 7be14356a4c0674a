//! One module per route, as in the original app (`new`, `index`, `show`, `update`).

mod index;
mod new;
mod show;
mod update;

pub use index::list;
pub use new::create;
pub use show::show;
pub use update::update;

use serde::Deserialize;
use ticketing_common::{
    errors::check_fields, http::optional_field, price::is_valid_price, ApiError, FieldError,
};

/// The body of create and update: both fields are required each time. Other fields
/// (`userId`, `version`, ...) are ignored: the server owns them.
#[derive(Deserialize)]
struct TicketBody {
    #[serde(default, deserialize_with = "optional_field")]
    title: Option<String>,
    #[serde(default, deserialize_with = "optional_field")]
    price: Option<f64>,
}

/// The checked fields of a ticket body: the trimmed title and the price.
fn validate(body: &TicketBody) -> Result<(String, f64), ApiError> {
    let title = body.title.as_deref().unwrap_or_default().trim();
    let price = body.price.filter(|price| is_valid_price(*price));

    let mut errors = Vec::new();
    if title.is_empty() {
        errors.push(FieldError::new("title", "Title is required"));
    }
    if price.is_none() {
        errors.push(FieldError::new("price", "Price must be greater than 0"));
    }
    check_fields(errors)?;
    Ok((title.to_owned(), price.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(title: Option<&str>, price: Option<f64>) -> TicketBody {
        TicketBody {
            title: title.map(str::to_owned),
            price,
        }
    }

    fn failed_fields(result: Result<(String, f64), ApiError>) -> Vec<String> {
        match result {
            Err(ApiError::Validation(errors)) => {
                errors.into_iter().filter_map(|error| error.field).collect()
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn validate_json(json: &str) -> Result<(String, f64), ApiError> {
        let body: TicketBody =
            ticketing_common::http::parse_json_body(Some("application/json"), json.as_bytes())?;
        validate(&body)
    }

    #[test]
    fn mistyped_fields_fail_their_own_validation() {
        assert_eq!(
            failed_fields(validate_json(r#"{"title": 7, "price": 10}"#)),
            ["title"]
        );
        assert_eq!(
            failed_fields(validate_json(r#"{"title": "gig", "price": "10"}"#)),
            ["price"]
        );
        assert_eq!(
            validate_json(r#"{"title": "gig", "price": 20, "userId": "x", "version": 7}"#).unwrap(),
            ("gig".to_owned(), 20.0)
        );
    }

    #[test]
    fn a_valid_body_gives_the_trimmed_title_and_the_price() {
        let (title, price) = validate(&body(Some("  concert "), Some(20.5))).unwrap();
        assert_eq!(title, "concert");
        assert_eq!(price, 20.5);
    }

    #[test]
    fn every_failed_field_is_reported() {
        assert_eq!(
            failed_fields(validate(&body(None, None))),
            ["title", "price"]
        );
        assert_eq!(
            failed_fields(validate(&body(Some("   "), Some(10.0)))),
            ["title"]
        );
        assert_eq!(
            failed_fields(validate(&body(Some("concert"), Some(-10.0)))),
            ["price"]
        );
        assert_eq!(
            failed_fields(validate(&body(Some("concert"), Some(10.001)))),
            ["price"]
        );
    }
}
