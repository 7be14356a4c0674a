//! Variables for guests: `fermyon:spin/variables@2.0.0`.
//!
//! The component's variables arrive already resolved (spin.toml `[component.x.variables]`
//! templates filled from app variables and providers); this only looks names up, with Spin's
//! rules for what a valid name is.

use std::collections::HashMap;
use std::sync::Arc;

use super::bindings::fermyon::spin::variables::{self, Error};

/// Per-instance state of the variables capability.
pub struct VariablesCtx {
    values: Arc<HashMap<String, String>>,
}

impl VariablesCtx {
    /// `values`: the component's variables, name → resolved value.
    pub fn new(values: Arc<HashMap<String, String>>) -> Self {
        Self { values }
    }
}

/// Spin's variable-name rule: lower-case ASCII letters, digits and single underscores,
/// starting with a letter and ending with a letter or digit (`api_host`, `retry_2`).
/// The error says what is wrong with the name.
pub fn validate_variable_name(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        "must not be empty".to_owned()
    } else if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        format!("invalid character {bad:?}: only lower-case letters, digits and underscores")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        "must start with a lower-case letter".to_owned()
    } else if name.ends_with('_') {
        "must end with a lower-case letter or digit".to_owned()
    } else if name.contains("__") {
        "must not contain consecutive underscores".to_owned()
    } else {
        return Ok(());
    };
    Err(format!("{name:?}: {reason}"))
}

impl variables::Host for VariablesCtx {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, Error>> {
        if let Err(reason) = validate_variable_name(&name) {
            return Ok(Err(Error::InvalidName(reason)));
        }
        Ok(self
            .values
            .get(&name)
            .cloned()
            .ok_or(Error::Undefined(format!("no variable named {name:?}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use variables::Host as _;

    #[test]
    fn spin_variable_names() {
        for good in ["a", "abc", "a1b2", "api_host", "retry_2"] {
            assert_eq!(validate_variable_name(good), Ok(()), "{good}");
        }
        for bad in ["", "Api", "1abc", "_x", "x_", "a__b", "a-b", "a.b"] {
            assert!(validate_variable_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn get_reports_values_undefined_and_invalid_names() {
        let values = HashMap::from([("api_host".to_owned(), "example.com".to_owned())]);
        let mut ctx = VariablesCtx::new(Arc::new(values));

        assert_eq!(
            ctx.get("api_host".into()).await.unwrap().unwrap(),
            "example.com"
        );
        assert!(matches!(
            ctx.get("missing".into()).await.unwrap(),
            Err(Error::Undefined(_))
        ));
        assert!(matches!(
            ctx.get("API_HOST".into()).await.unwrap(),
            Err(Error::InvalidName(_))
        ));
    }
}
