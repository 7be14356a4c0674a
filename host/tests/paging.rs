//! Paged listings (`GET /api/tickets`, `GET /api/orders`, API.md "Paging") over HTTP against
//! the real host, on both key-value backends (and under Spin's key-value semantics in
//! `spin_kv_semantics.rs`).
mod support;

use support::scenarios::{
    a_cursor_past_the_end_is_rejected, a_sold_out_stretch_is_passed_over_and_comes_back,
    a_walk_during_a_rush_sees_every_ticket_that_stayed_on_sale_once,
    bad_limits_and_cursors_are_rejected, orders_page_oldest_first,
    the_catalogue_pages_in_creation_order,
};
use support::*;

on_every_backend!(
    the_catalogue_pages_in_creation_order,
    bad_limits_and_cursors_are_rejected,
    a_sold_out_stretch_is_passed_over_and_comes_back,
    a_walk_during_a_rush_sees_every_ticket_that_stayed_on_sale_once,
    orders_page_oldest_first,
);

#[test]
fn a_cursor_of_a_longer_catalogue_is_stale_here() {
    let redis = Redis::start();
    let longer = HostConfig::app(Backend::Redis(redis.url())).start();
    let fresh = HostConfig::app(Backend::Embedded).start();
    a_cursor_past_the_end_is_rejected(&longer, &fresh);
}
