//! Tickets service (`/api/tickets`) over HTTP against the real host, per API.md, on both
//! key-value backends.
mod support;

use support::scenarios::concurrent_updates_each_bump_the_version_once;
use support::*;

on_every_backend!(
    creating_a_ticket_needs_a_session,
    create_validates_title_and_price,
    create_show_and_list,
    update_checks_in_the_documented_order,
    concurrent_updates_each_bump_the_version_once,
    concurrent_creates_are_all_listed_in_creation_order,
    malformed_and_unknown_ids_are_not_found,
    bad_requests_get_clear_errors,
);

fn creating_a_ticket_needs_a_session(host: &Host) {
    let mut anon = host.client();
    anon.post("/api/tickets", json!({"title": "concert", "price": 10}))
        .assert_error(401, &["Not authorized"]);
    // Authentication comes before validation.
    anon.post("/api/tickets", json!({"title": "", "price": -1}))
        .assert_error(401, &["Not authorized"]);
    anon.send(
        "POST",
        "/api/tickets",
        Some("{oops".into()),
        Some("application/json"),
    )
    .assert_error(401, &["Not authorized"]);
    let mut forged = host.client();
    forged.cookie = Some("session=not-a-token".into());
    forged
        .post("/api/tickets", json!({"title": "concert", "price": 10}))
        .assert_error(401, &["Not authorized"]);

    // A bearer token works like the cookie.
    let mut seller = host.client();
    seller.sign_up();
    let mut api = host.client();
    api.bearer = Some(seller.token());
    assert_eq!(
        api.post("/api/tickets", json!({"title": "concert", "price": 10}))
            .status,
        201
    );
}

fn create_validates_title_and_price(host: &Host) {
    let mut c = host.client();
    c.sign_up();
    let price = ("price", "Price must be greater than 0");
    let title = ("title", "Title is required");
    let cases = [
        (json!({"title": "", "price": 10}), vec![title]),
        (json!({"title": "   ", "price": 10}), vec![title]),
        (json!({"price": 10}), vec![title]),
        (json!({"title": 7, "price": 10}), vec![title]),
        (json!({"title": "gig", "price": 0}), vec![price]),
        (json!({"title": "gig", "price": -10}), vec![price]),
        (json!({"title": "gig", "price": "10"}), vec![price]),
        (json!({"title": "gig", "price": 10.001}), vec![price]),
        (json!({"title": "gig", "price": 1_000_000}), vec![price]),
        (json!({"title": "gig"}), vec![price]),
        (json!({}), vec![title, price]),
    ];
    for (body, fields) in cases {
        c.post("/api/tickets", body).assert_fields(&fields);
    }
    for ok in [json!(0.01), json!(999_999.99), json!(20), json!(12.5)] {
        let reply = c.post("/api/tickets", json!({"title": "gig", "price": ok}));
        assert_eq!(reply.status, 201, "price {ok}: {}", reply.body);
        assert_eq!(reply.json()["price"].as_f64(), ok.as_f64());
    }
}

fn create_show_and_list(host: &Host) {
    let mut seller = host.client();
    let user = seller.sign_up();
    let reply = seller.post(
        "/api/tickets",
        json!({"title": "  Opera night  ", "price": 49.99, "userId": "someone-else", "version": 7}),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let ticket = reply.json();
    assert_eq!(ticket["title"], "Opera night", "the title is trimmed");
    assert_eq!(ticket["price"], 49.99);
    assert_eq!(
        ticket["userId"], user["id"],
        "the owner is the caller, never the body"
    );
    assert_eq!(
        ticket["version"], 0,
        "a new ticket is at version 0, whatever the body says"
    );
    assert!(ticket.get("orderId").is_none(), "{ticket}");
    let id = ticket["id"].as_str().unwrap();

    let mut anon = host.client();
    let shown = anon.get(&format!("/api/tickets/{id}"));
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json(), ticket);

    // The list is public, holds unreserved tickets, oldest first.
    let second = seller
        .post("/api/tickets", json!({"title": "Ballet", "price": 30}))
        .json();
    let list = anon.get("/api/tickets");
    assert_eq!(list.status, 200);
    let ids: Vec<Value> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].clone())
        .collect();
    let first_at = ids
        .iter()
        .position(|i| *i == ticket["id"])
        .expect("first ticket listed");
    let second_at = ids
        .iter()
        .position(|i| *i == second["id"])
        .expect("second ticket listed");
    assert!(first_at < second_at, "oldest first: {ids:?}");
    assert!(list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t.get("orderId").is_none()));
}

fn update_checks_in_the_documented_order(host: &Host) {
    let mut owner = host.client();
    owner.sign_up();
    let ticket = owner
        .post("/api/tickets", json!({"title": "Jazz", "price": 15}))
        .json();
    let path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    let unknown = "/api/tickets/5f0000000000000000000000";

    let mut anon = host.client();
    anon.put(&path, json!({"title": "", "price": 0}))
        .assert_error(401, &["Not authorized"]);

    let mut stranger = host.client();
    stranger.sign_up();
    // validation → 404 → not owner
    stranger
        .put(&path, json!({"title": "", "price": 20}))
        .assert_fields(&[("title", "Title is required")]);
    stranger
        .put(unknown, json!({"title": "x", "price": -1}))
        .assert_fields(&[("price", "Price must be greater than 0")]);
    stranger
        .put(unknown, json!({"title": "Jazz", "price": 20}))
        .assert_error(404, &["Not Found"]);
    stranger
        .put(&path, json!({"title": "Mine now", "price": 1}))
        .assert_error(401, &["Not authorized"]);
    assert_eq!(
        anon.get(&path).json(),
        ticket,
        "rejected updates change nothing"
    );

    let updated = owner.put(&path, json!({"title": "Jazz club", "price": 25.5}));
    assert_eq!(updated.status, 200, "{}", updated.body);
    let updated = updated.json();
    assert_eq!(
        (
            &updated["title"],
            &updated["price"],
            &updated["version"],
            &updated["userId"],
            &updated["id"]
        ),
        (
            &json!("Jazz club"),
            &json!(25.5),
            &json!(1),
            &ticket["userId"],
            &ticket["id"]
        )
    );
    assert_eq!(
        owner
            .put(&path, json!({"title": "Jazz club", "price": 26}))
            .json()["version"],
        2
    );
    assert_eq!(anon.get(&path).json()["version"], 2);
}

fn concurrent_creates_are_all_listed_in_creation_order(host: &Host) {
    let mut seller = host.client();
    seller.sign_up();
    let (writers, per_writer) = (8, 5);
    let created: Vec<Vec<String>> = at_once(writers, move |w| {
        let mut client = seller.clone();
        (0..per_writer)
            .map(|k| {
                let reply = client.post(
                    "/api/tickets",
                    json!({"title": format!("w{w}-{k}"), "price": 5}),
                );
                assert_eq!(reply.status, 201, "{}", reply.body);
                reply.json()["id"].as_str().unwrap().to_owned()
            })
            .collect()
    });
    let listed: Vec<String> = host
        .client()
        .get_all("/api/tickets")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    let mut expected: Vec<&String> = created.iter().flatten().collect();
    let mut got: Vec<&String> = listed.iter().collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "every created ticket is listed, once");
    for ids in &created {
        let positions: Vec<usize> = ids
            .iter()
            .map(|id| listed.iter().position(|l| l == id).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|p| p[0] < p[1]),
            "a writer's tickets are listed in the order it created them: {positions:?}"
        );
    }
}

fn malformed_and_unknown_ids_are_not_found(host: &Host) {
    let mut c = host.client();
    c.sign_up();
    for id in [
        "nope",
        "5f000000000000000000000g",
        "5F0000000000000000000000x",
        "%20",
        "..",
        "5f0000000000000000000000",
    ] {
        c.get(&format!("/api/tickets/{id}"))
            .assert_error(404, &["Not Found"]);
        c.put(
            &format!("/api/tickets/{id}"),
            json!({"title": "t", "price": 1}),
        )
        .assert_error(404, &["Not Found"]);
    }
}

fn bad_requests_get_clear_errors(host: &Host) {
    let mut c = host.client();
    c.sign_up();
    c.send(
        "POST",
        "/api/tickets",
        Some("{\"title\": \"x\", ".into()),
        Some("application/json"),
    )
    .assert_error(400, &["Invalid JSON body"]);
    c.send(
        "POST",
        "/api/tickets",
        Some(r#"{"title":"x","price":1}"#.into()),
        Some("application/x-www-form-urlencoded"),
    )
    .assert_error(400, &["Invalid JSON body"]);
    let big = json!({"title": "x".repeat(70 * 1024), "price": 1}).to_string();
    c.send("POST", "/api/tickets", Some(big), Some("application/json"))
        .assert_error(413, &["Payload too large"]);
    c.delete("/api/tickets").assert_error(404, &["Not Found"]);
    c.send("PATCH", "/api/tickets/5f0000000000000000000000", None, None)
        .assert_error(404, &["Not Found"]);
    c.get("/api/tickets/5f0000000000000000000000/extra")
        .assert_error(404, &["Not Found"]);
}
