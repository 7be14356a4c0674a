//! Shared guest code of the ticketing services (the counterpart of the original app's
//! `common` package): the error envelope, HTTP plumbing, sessions, configuration, ids,
//! validation rules, prices, paged listings, the key-value store wrapper, the events and their publishing,
//! receiving events (the listener export) and the local copies events keep in step.
//!
//! Everything that is pure logic is kept apart from the calls into the Spin host so that it
//! can be unit-tested natively (`cargo test -p ticketing-common`); host imports only work
//! inside a component.

pub mod auth;
pub mod clock;
pub mod config;
pub mod copies;
pub mod errors;
pub mod events;
pub mod http;
pub mod ids;
pub mod listener;
pub mod paging;
pub mod price;
pub mod store;
pub mod validation;

pub use errors::{ApiError, FieldError};
