//! The events the payments service consumes: its order copies follow the orders service.

use ticketing_common::{
    events::{Event, OrderCancelled, OrderCreated},
    listener::{decode, unknown_event, ListenerError},
    store::Store,
};

use crate::{
    order::{OrderCopy, Orders},
    STORE_LABEL,
};

pub fn on_event(name: &str, payload: &[u8]) -> Result<(), ListenerError> {
    let store = Store::open(STORE_LABEL)?;
    let orders = Orders::new(&store);
    match name {
        OrderCreated::NAME => {
            Ok(orders.insert(&OrderCopy::from(decode::<OrderCreated>(payload)?))?)
        }
        OrderCancelled::NAME => orders.apply_cancellation(&decode(payload)?),
        other => Err(unknown_event(other)),
    }
}
