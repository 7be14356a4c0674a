//! The events the payments service consumes: its order copies follow the orders service.

use ticketing_common::{
    events::{self, Event, OrderCancelled, OrderCreated},
    listener::{self, decode, unknown_event, ListenerError},
    store::Store,
};

use crate::{
    order::{self, OrderCopy},
    STORE_LABEL,
};

pub fn on_event(name: &str, payload: &[u8]) -> Result<(), ListenerError> {
    let store = Store::open(STORE_LABEL)?;
    let orders = order::copies(&store);
    match name {
        OrderCreated::NAME => {
            let order = OrderCopy::from(decode::<OrderCreated>(payload)?);
            Ok(orders.insert(&order.id, &order)?)
        }
        OrderCancelled::NAME => {
            let cancelled: OrderCancelled = decode(payload)?;
            orders.apply(&cancelled.id, cancelled.version, OrderCopy::cancelled)?;
            Ok(())
        }
        events::OUTBOX_RELAY => listener::relay_outbox(&store),
        other => Err(unknown_event(other)),
    }
}
