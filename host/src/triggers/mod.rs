//! Triggers: what makes components run. Each trigger type reads its own
//! `[[trigger.<type>]]` entries from spin.toml and instantiates components from the shared
//! [`Runtime`](crate::engine::Runtime).

pub mod http;
pub mod nats;
