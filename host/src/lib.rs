//! The ticketing host as a library: the `ticketing` binary and the tests build on it.

pub mod backends;
pub mod capabilities;
pub mod manifest;
pub mod runtime_config;
pub mod variables;
