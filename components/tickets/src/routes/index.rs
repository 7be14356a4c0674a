//! `GET /api/tickets`

use spin_sdk::http::{Request, Response};
use ticketing_common::{paging, ApiError};

use crate::listing::Listing;
use crate::ticket::Tickets;

/// The listing's name in its cursors.
const LISTING: &str = "tickets";

/// One page of the tickets on sale (not reserved by an order), oldest first; `?limit=` and
/// `?cursor=` as in `paging`, the next page in the `Link` header.
pub fn list(req: &Request) -> Result<Response, ApiError> {
    let request = paging::page_request(req.query(), LISTING)?;
    let tickets = Tickets::open()?;
    let page = Listing::new(&tickets).page(request.after, request.limit)?;
    paging::page_response(&page.tickets, "/api/tickets", LISTING, request, page.next)
}
