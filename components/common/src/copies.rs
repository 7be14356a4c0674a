//! Local copies of another service's entities (the orders service's tickets, the payments
//! service's orders), kept in step by that service's events, and the versioned-apply rule
//! they follow: an event applies to a copy only when the copy is at the event's version - 1;
//! a copy at the event's version or later has seen it (a redelivery changes nothing); a copy
//! further behind waits for the events before it (retry later).

use std::marker::PhantomData;

use serde::{de::DeserializeOwned, Serialize};

use crate::{errors::ApiError, ids::is_valid_id, listener::ListenerError, store::Store};

/// Where an event stands against a local copy of its entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOrder {
    /// The copy is at `version - 1`: apply the event now.
    Next,
    /// The copy is at the event's version or later: it was applied before (a redelivery).
    AlreadyApplied,
    /// The copy is behind by more than one: an earlier event has not arrived yet.
    TooEarly,
}

/// The versioned-apply rule: apply an event only to a copy at `version - 1`.
pub fn version_order(copy_version: u64, event_version: u64) -> VersionOrder {
    if copy_version >= event_version {
        VersionOrder::AlreadyApplied
    } else if copy_version + 1 == event_version {
        VersionOrder::Next
    } else {
        VersionOrder::TooEarly
    }
}

/// An entity copy with the version of the last event applied to it.
pub trait Versioned {
    fn version(&self) -> u64;
    fn set_version(&mut self, version: u64);
}

/// The copies of one kind of entity in a service's store, under `<kind>:<id>`.
pub struct Copies<'a, T> {
    store: &'a Store,
    kind: &'static str,
    copy: PhantomData<T>,
}

impl<'a, T> Copies<'a, T>
where
    T: Versioned + Serialize + DeserializeOwned,
{
    /// The copies of `kind` (e.g. `ticket`) in `store`.
    pub fn new(store: &'a Store, kind: &'static str) -> Self {
        Self {
            store,
            kind,
            copy: PhantomData,
        }
    }

    /// The copy of entity `id`; an id not in the id format names no entity.
    pub fn find(&self, id: &str) -> Result<Option<T>, ApiError> {
        if !is_valid_id(id) {
            return Ok(None);
        }
        self.store.get(&self.key(id))
    }

    /// Stores the copy of a new entity (its creation event) unless there is one already: a
    /// redelivered creation changes nothing.
    pub fn insert(&self, id: &str, copy: &T) -> Result<(), ApiError> {
        self.store.insert_new(&self.key(id), copy)?;
        Ok(())
    }

    /// Applies an event at `event_version` to the copy of entity `id` by the versioned-apply
    /// rule: the copy is changed by `apply` and takes the event's version only when it is at
    /// `event_version - 1` (returns the new copy); an event applied before changes nothing
    /// (`Ok(None)`); an event ahead of the copy, or for a copy not created yet, is
    /// `RetryLater`.
    pub fn apply(
        &self,
        id: &str,
        event_version: u64,
        mut apply: impl FnMut(&T) -> T,
    ) -> Result<Option<T>, ListenerError> {
        let key = self.key(id);
        let mut order = VersionOrder::Next;
        let outcome = self.store.update_if(&key, |copy: &T| {
            order = version_order(copy.version(), event_version);
            Ok((order == VersionOrder::Next).then(|| {
                let mut updated = apply(copy);
                updated.set_version(event_version);
                updated
            }))
        });
        match (outcome, order) {
            (Err(ApiError::NotFound), _) => Err(ListenerError::RetryLater(format!(
                "{key} is not known yet (version {event_version} waits for its creation)"
            ))),
            (Err(error), _) => Err(error.into()),
            (Ok(updated), _) if updated.written => Ok(Some(updated.value)),
            (Ok(_), VersionOrder::TooEarly) => Err(ListenerError::RetryLater(format!(
                "{key} is behind version {} (waits for the events before it)",
                event_version - 1
            ))),
            (Ok(_), _) => Ok(None),
        }
    }

    fn key(&self, id: &str) -> String {
        copy_key(self.kind, id)
    }
}

/// The key of a copy: `<kind>:<id>`.
pub fn copy_key(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_applies_only_to_the_copy_one_version_behind() {
        assert_eq!(version_order(0, 1), VersionOrder::Next);
        assert_eq!(version_order(6, 7), VersionOrder::Next);
        assert_eq!(version_order(1, 1), VersionOrder::AlreadyApplied);
        assert_eq!(version_order(5, 1), VersionOrder::AlreadyApplied);
        assert_eq!(version_order(0, 0), VersionOrder::AlreadyApplied);
        assert_eq!(version_order(0, 2), VersionOrder::TooEarly);
        assert_eq!(version_order(3, 9), VersionOrder::TooEarly);
    }

    #[test]
    fn copies_are_keyed_by_kind_and_id() {
        assert_eq!(
            copy_key("ticket", "507f1f77bcf86cd799439011"),
            "ticket:507f1f77bcf86cd799439011"
        );
    }
}
