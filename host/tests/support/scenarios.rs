//! Race scenarios that run on every backend and again under Spin's key-value semantics
//! (`spin_kv_semantics.rs`): one piece of code, so both runs assert the same guarantees.

use super::*;

/// Of 16 signups with one email at once, exactly one creates the account, and the account
/// that exists is the winner's, with the winner's password.
pub fn concurrent_signups_with_one_email_create_one_user(host: &Host) {
    concurrent_signups_make_one_account(host, &unique_email(), 16);
}

/// `racers` signups with `email` at once: exactly one creates the account (the others are
/// told "Email in use"), and it is the winner's, with the winner's password.
pub fn concurrent_signups_make_one_account(host: &Host, email: &str, racers: usize) {
    let client = host.client();
    let e = email.to_owned();
    let replies = at_once(racers, move |i| {
        client.clone().post(
            "/api/users/signup",
            json!({"email": e, "password": format!("secret{i}")}),
        )
    });
    let winners: Vec<usize> = (0..replies.len())
        .filter(|i| replies[*i].status == 201)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one signup wins: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in replies.iter().filter(|r| r.status != 201) {
        r.assert_error(400, &["Email in use"]);
    }
    // The account that exists is the winner's, with the winner's password.
    let mut c = host.client();
    let signin = c.post(
        "/api/users/signin",
        json!({"email": email, "password": format!("secret{}", winners[0])}),
    );
    assert_eq!(signin.status, 200, "{}", signin.body);
    assert_eq!(signin.json()["id"], replies[winners[0]].json()["id"]);
}

/// Twelve concurrent updates of one ticket: each is applied exactly once, in some order.
pub fn concurrent_updates_each_bump_the_version_once(host: &Host) {
    let mut owner = host.client();
    owner.sign_up();
    let ticket = owner
        .post("/api/tickets", json!({"title": "Race", "price": 1}))
        .json();
    let path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    let (client, p) = (owner.clone(), path.clone());
    let replies = at_once(12, move |i| {
        client
            .clone()
            .put(&p, json!({"title": "Race", "price": i + 1}))
    });
    let mut versions: Vec<u64> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["version"].as_u64().unwrap()
        })
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        (1..=12).collect::<Vec<_>>(),
        "each update is applied exactly once, even when the store misreports its swaps"
    );
    let last = host.client().get(&path).json();
    assert_eq!(last["version"], 12);
}

/// Creates `n` tickets as `seller`; their ids, oldest first.
pub fn create_tickets(seller: &mut Client, n: usize, title: &str) -> Vec<String> {
    (0..n)
        .map(|k| {
            let reply = seller.post(
                "/api/tickets",
                json!({"title": format!("{title} {k}"), "price": 10 + k}),
            );
            assert_eq!(reply.status, 201, "{}", reply.body);
            reply.json()["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Places an order for the ticket, once the orders service knows it; the order's id.
pub fn order_ticket(buyer: &mut Client, ticket_id: &str) -> String {
    eventually("the orders service knows the ticket", || {
        let reply = buyer.post("/api/orders", json!({ "ticketId": ticket_id }));
        assert!(
            reply.status == 201 || reply.status == 404,
            "ordering {ticket_id}: {} {}",
            reply.status,
            reply.body
        );
        (reply.status == 201).then(|| reply.json()["id"].as_str().unwrap().to_owned())
    })
}

/// Waits until the ticket shows as reserved (`true`) or on sale again (`false`).
pub fn wait_for_reserved(client: &mut Client, ticket_id: &str, reserved: bool) {
    eventually("the ticket's reservation", || {
        let ticket = client.get(&format!("/api/tickets/{ticket_id}")).json();
        (ticket.get("orderId").is_some() == reserved).then_some(())
    });
}

/// The ids of the items of a listing's pages, page by page, following `next` from `path`.
pub fn walk_pages(client: &mut Client, path: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(path) = next {
        let reply = client.get(&path);
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        pages.push(
            reply
                .json()
                .as_array()
                .expect("a JSON array")
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_owned())
                .collect(),
        );
        next = reply.next_page();
        assert!(pages.len() < 1000, "a walk that does not end: {path}");
    }
    pages
}

/// The catalogue pages: tickets on sale, oldest first, `limit` per page with a `next` link
/// on every page but the last; reserved tickets are left out and come back when released.
pub fn the_catalogue_pages_in_creation_order(host: &Host) {
    let mut seller = host.client();
    seller.sign_up();
    let created = create_tickets(&mut seller, 45, "Paged");
    let mut buyer = host.client();
    buyer.sign_up();
    let reserved = [&created[3], &created[20], &created[44]];
    let orders: Vec<String> = reserved
        .iter()
        .map(|id| order_ticket(&mut buyer, id))
        .collect();
    for id in reserved {
        wait_for_reserved(&mut buyer, id, true);
    }
    let on_sale: Vec<String> = created
        .iter()
        .filter(|id| !reserved.contains(id))
        .cloned()
        .collect();

    let mut anon = host.client();
    let pages = walk_pages(&mut anon, "/api/tickets?limit=10");
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 10, 10, 2], "pages of 10 until the last");
    assert_eq!(
        pages.concat(),
        on_sale,
        "every ticket on sale once, oldest first"
    );

    // The default page is 20; a limit of 100 takes everything here, with no next link.
    let first = anon.get("/api/tickets");
    assert_eq!(first.json().as_array().unwrap().len(), 20);
    let link = first.header("link").expect("a next link").to_owned();
    assert!(
        link.starts_with("</api/tickets?") && link.ends_with(">; rel=\"next\""),
        "{link}"
    );
    let all = anon.get("/api/tickets?limit=100");
    assert_eq!(all.json().as_array().unwrap().len(), on_sale.len());
    assert_eq!(all.header("link"), None, "the last page has no next link");

    // A cancelled order's ticket is on sale again, in its place.
    buyer.delete(&format!("/api/orders/{}", orders[1]));
    wait_for_reserved(&mut buyer, &created[20], false);
    let ids: Vec<String> = walk_pages(&mut anon, "/api/tickets?limit=7").concat();
    let expected: Vec<String> = created
        .iter()
        .filter(|id| *id != &created[3] && *id != &created[44])
        .cloned()
        .collect();
    assert_eq!(ids, expected);
}

/// Bad page requests are 400s naming the field, never 500s; a cursor from elsewhere (another
/// listing, or past this listing's end) too.
pub fn bad_limits_and_cursors_are_rejected(host: &Host) {
    let mut seller = host.client();
    seller.sign_up();
    create_tickets(&mut seller, 3, "Few");
    let mut anon = host.client();
    for query in [
        "limit=0",
        "limit=101",
        "limit=-5",
        "limit=abc",
        "limit=",
        "limit=1.5",
        "limit=99999999999999999999999",
        "limit=5&limit=6",
    ] {
        anon.get(&format!("/api/tickets?{query}"))
            .assert_fields(&[("limit", "Limit must be a whole number from 1 to 100")]);
    }
    for cursor in [
        "",
        "%00",
        "not-base64!",
        "AAAA",
        "////",
        "dGlja2V0czo",
        "a%20b",
    ] {
        anon.get(&format!("/api/tickets?cursor={cursor}"))
            .assert_fields(&[("cursor", "Cursor is not valid")]);
    }
    // A real cursor of the orders listing is not one of the catalogue's, and the other way.
    let mut buyer = host.client();
    buyer.sign_up();
    let tickets = create_tickets(&mut seller, 2, "More");
    for id in &tickets {
        order_ticket(&mut buyer, id);
    }
    let orders_page = buyer.get("/api/orders?limit=1");
    let orders_next = orders_page.next_page().expect("a next page of orders");
    let cursor = orders_next.split("cursor=").nth(1).unwrap();
    anon.get(&format!("/api/tickets?cursor={cursor}"))
        .assert_fields(&[("cursor", "Cursor is not valid")]);
    let tickets_next = anon.get("/api/tickets?limit=1").next_page().unwrap();
    let cursor = tickets_next.split("cursor=").nth(1).unwrap().to_owned();
    buyer
        .get(&format!("/api/orders?cursor={cursor}"))
        .assert_fields(&[("cursor", "Cursor is not valid")]);
    // Orders need a session first.
    anon.get("/api/orders?limit=0")
        .assert_error(401, &["Not authorized"]);
}

/// A cursor that points past the listing's end (from a deployment with more tickets, or
/// from before a reset) is a 400: `other` is a fresh host with fewer tickets.
pub fn a_cursor_past_the_end_is_rejected(host: &Host, other: &Host) {
    let mut seller = host.client();
    seller.sign_up();
    create_tickets(&mut seller, 6, "Many");
    let next = host
        .client()
        .get("/api/tickets?limit=5")
        .next_page()
        .unwrap();
    other
        .client()
        .get(&next)
        .assert_fields(&[("cursor", "Cursor is not valid")]);
}

/// A walk along `next` links while buyers reserve and release tickets, the seller edits and
/// adds tickets: no ticket twice, and every ticket that stayed on sale during the whole walk
/// (the untouched ones, and those put back on sale just before it began) is seen.
pub fn a_walk_during_a_rush_sees_every_ticket_that_stayed_on_sale_once(host: &Host) {
    let mut seller = host.client();
    seller.sign_up();
    let created = create_tickets(&mut seller, 90, "Rush");
    // Every third ticket is churned; the others are never touched.
    let churned: Vec<String> = created.iter().step_by(3).cloned().collect();
    let stable: Vec<String> = created
        .iter()
        .filter(|id| !churned.contains(id))
        .cloned()
        .collect();
    let mut buyer = host.client();
    buyer.sign_up();
    // Reserved, then released right before the walk: on sale throughout it.
    let released: Vec<String> = churned[..4].to_vec();
    let orders: Vec<String> = released
        .iter()
        .map(|id| order_ticket(&mut buyer, id))
        .collect();
    for id in &released {
        wait_for_reserved(&mut buyer, id, true);
    }
    for order in &orders {
        assert_eq!(buyer.delete(&format!("/api/orders/{order}")).status, 204);
    }
    for id in &released {
        wait_for_reserved(&mut buyer, id, false);
    }

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (stop, churned) = (stop.clone(), churned[4..].to_vec());
        let (mut seller, mut buyer) = (seller.clone(), buyer.clone());
        std::thread::spawn(move || {
            let mut added = Vec::new();
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let id = &churned[round % churned.len()];
                match round % 3 {
                    0 => {
                        let reply = buyer.post("/api/orders", json!({ "ticketId": id }));
                        if reply.status == 201 {
                            let order = reply.json()["id"].as_str().unwrap().to_owned();
                            buyer.delete(&format!("/api/orders/{order}"));
                        }
                    }
                    1 => {
                        seller.put(
                            &format!("/api/tickets/{id}"),
                            json!({"title": format!("Edited {round}"), "price": 99}),
                        );
                    }
                    _ => added.extend(create_tickets(&mut seller, 1, "Added")),
                }
                round += 1;
            }
            added
        })
    };
    // Walks one after the other: the first right after the releases, the later ones once
    // the service's relay tick (every 2 s) has swept the new tickets into its blocks.
    let mut reader = host.client();
    let mut walks: Vec<Vec<String>> = Vec::new();
    for _ in 0..3 {
        let mut seen: Vec<String> = Vec::new();
        let mut next = Some("/api/tickets?limit=7".to_owned());
        while let Some(path) = next {
            let reply = reader.get(&path);
            assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
            seen.extend(
                reply
                    .json()
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["id"].as_str().unwrap().to_owned()),
            );
            next = reply.next_page();
            // Give the churn time to happen between pages.
            std::thread::sleep(Duration::from_millis(30));
        }
        walks.push(seen);
        std::thread::sleep(Duration::from_millis(1200));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let added = churn.join().unwrap();

    let known: std::collections::HashSet<&String> = created.iter().chain(&added).collect();
    for seen in &walks {
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            seen.len(),
            "a ticket listed twice in one walk: {seen:?}"
        );
        for id in stable.iter().chain(&released) {
            assert!(
                seen.contains(id),
                "ticket {id} stayed on sale but a walk missed it"
            );
        }
        assert!(
            seen.iter().all(|id| known.contains(id)),
            "only real tickets are listed"
        );
        // In creation order: the stable tickets keep their relative order.
        let order: Vec<&String> = seen.iter().filter(|id| stable.contains(id)).collect();
        assert_eq!(order, stable.iter().collect::<Vec<_>>());
    }
}

/// A stretch of the catalogue that sold out (a whole block of 32 positions) costs a reader
/// nothing and shows nothing; a ticket of it coming back on sale is listed again at once.
pub fn a_sold_out_stretch_is_passed_over_and_comes_back(host: &Host) {
    let mut seller = host.client();
    seller.sign_up();
    let created = create_tickets(&mut seller, 70, "Stretch");
    let mut buyer = host.client();
    buyer.sign_up();
    // Positions are counted per service, so this stretch may start anywhere: sell out a
    // run of 40 consecutive tickets, which covers at least one whole block of 32.
    let sold: Vec<String> = created[10..50].to_vec();
    let orders: Vec<String> = sold.iter().map(|id| order_ticket(&mut buyer, id)).collect();
    for id in &sold {
        wait_for_reserved(&mut buyer, id, true);
    }
    let on_sale: Vec<String> = created
        .iter()
        .filter(|id| !sold.contains(id))
        .cloned()
        .collect();
    let mut anon = host.client();
    // The blocks follow the reservations through events: every walk, before and after,
    // shows exactly the tickets on sale.
    eventually("the catalogue shows the sold-out stretch as sold", || {
        (walk_pages(&mut anon, "/api/tickets?limit=9").concat() == on_sale).then_some(())
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        walk_pages(&mut anon, "/api/tickets?limit=9").concat(),
        on_sale
    );
    // One comes back (its order cancelled): on sale in its place, at once.
    let back = 25;
    assert_eq!(
        buyer
            .delete(&format!("/api/orders/{}", orders[back - 10]))
            .status,
        204
    );
    wait_for_reserved(&mut buyer, &created[back], false);
    let expected: Vec<String> = created
        .iter()
        .enumerate()
        .filter(|(i, _)| !(10..50).contains(i) || *i == back)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(
        walk_pages(&mut anon, "/api/tickets?limit=9").concat(),
        expected
    );
    assert_eq!(
        walk_pages(&mut anon, "/api/tickets?limit=100").concat(),
        expected
    );
}

/// A user's orders page like the catalogue.
pub fn orders_page_oldest_first(host: &Host) {
    let mut seller = host.client();
    seller.sign_up();
    let tickets = create_tickets(&mut seller, 12, "Mine");
    let mut buyer = host.client();
    buyer.sign_up();
    let orders: Vec<String> = tickets
        .iter()
        .map(|id| order_ticket(&mut buyer, id))
        .collect();
    let pages = walk_pages(&mut buyer, "/api/orders?limit=5");
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 2]);
    assert_eq!(pages.concat(), orders);
    // Another user sees none of them.
    let mut other = host.client();
    other.sign_up();
    assert_eq!(other.get_all("/api/orders"), Vec::<Value>::new());
}
