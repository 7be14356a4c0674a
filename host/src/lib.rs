//! The ticketing host as a library: the `ticketing` binary, the `trigger-nats` Spin plugin
//! and the tests build on it.

pub mod backends;
pub mod build;
pub mod capabilities;
pub mod cli;
pub mod engine;
pub mod manifest;
pub mod observability;
pub mod run;
pub mod runtime_config;
pub mod spin_plugin;
pub mod triggers;
pub mod up;
pub mod variables;
