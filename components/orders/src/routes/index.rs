//! `GET /api/orders`

use spin_sdk::http::{Request, Response};
use ticketing_common::{auth, paging, store::Store, ApiError};

use crate::order::{Orders, STORE_LABEL};

/// The listing's name in its cursors.
const LISTING: &str = "orders";

/// One page of the caller's orders, oldest first; `?limit=` and `?cursor=` as in `paging`,
/// the next page in the `Link` header.
pub fn list(req: &Request) -> Result<Response, ApiError> {
    let user = auth::require_user(req)?;
    let request = paging::page_request(req.query(), LISTING)?;
    let store = Store::open(STORE_LABEL)?;
    let (orders, next) =
        Orders::new(&store).page_of_user(&user.id, request.after, request.limit)?;
    paging::page_response(&orders, "/api/orders", LISTING, request, next)
}
