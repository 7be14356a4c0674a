//! Storage behind the capabilities: each backend is a trait with an embedded implementation
//! (one on-disk file, no server needed) and a server-backed one for running several hosts.

pub mod event_bus;
mod group_commit;
pub mod key_value;
pub mod timers;

pub use self::group_commit::durable_barrier;
