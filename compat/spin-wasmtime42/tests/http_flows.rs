//! The HTTP components under Spin 3.6's rules: every request goes through
//! `wasi:http/incoming-handler` on wasmtime 42 + wasmtime-wasi-http 42 (what Spin 3.6.3
//! embeds), which traps when a guest drops a WASI HTTP resource (request, response, body,
//! stream, future response) before the resources taken from it. Each call must return
//! without a trap and answer what docs/API.md specifies.
mod support;

use bytes::Bytes;
use support::*;
use wasmtime_wasi_http::bindings::http::types::ErrorCode;

/// Signs up `email` and returns its session cookie (`session=<jwt>`) and `{id, email}`.
async fn sign_up(app: &App, email: &str) -> (String, Value) {
    let reply = app
        .post(
            "/api/users/signup",
            json!({"email": email, "password": "s3cret"}),
            None,
        )
        .await;
    assert_eq!(reply.status, 201, "{reply}");
    (reply.session_cookie(), reply.json())
}

/// Puts a ticket on sale as the owner of `session`.
async fn sell(app: &App, session: &str, title: &str, price: f64) -> Value {
    let reply = app
        .post(
            "/api/tickets",
            json!({"title": title, "price": price}),
            Some(session),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply}");
    reply.json()
}

fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {value}"))
}

#[tokio::test]
async fn accounts_sign_up_sign_in_and_say_who_is_signed_in() {
    let app = App::new();

    let signup = app
        .post(
            "/api/users/signup",
            json!({"email": "ada@example.com", "password": "s3cret"}),
            None,
        )
        .await;
    assert_eq!(signup.status, 201, "{signup}");
    assert_eq!(signup.header("content-type"), Some("application/json"));
    let user = signup.json();
    assert_eq!(user["email"], "ada@example.com");
    assert!(user["id"].is_string());
    assert_eq!(
        user.as_object().unwrap().len(),
        2,
        "only id and email: {user}"
    );
    let set_cookie = signup.header("set-cookie").unwrap();
    assert!(set_cookie.starts_with("session="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    let session = signup.session_cookie();

    let me = app.get("/api/users/currentuser", Some(&session)).await;
    assert_eq!(me.status, 200, "{me}");
    let current = &me.json()["currentUser"];
    assert_eq!(current["id"], user["id"]);
    assert_eq!(current["email"], "ada@example.com");
    assert!(current["iat"].is_u64(), "{current}");
    let anonymous = app.get("/api/users/currentuser", None).await;
    assert_eq!(anonymous.status, 200);
    assert_eq!(anonymous.json(), json!({"currentUser": null}));

    let signin = app
        .post(
            "/api/users/signin",
            json!({"email": "ada@example.com", "password": "s3cret"}),
            None,
        )
        .await;
    assert_eq!(signin.status, 200, "{signin}");
    assert_eq!(signin.json(), user);
    let bearer = app
        .call(
            request("GET", "/api/users/currentuser", None)
                .header(
                    "authorization",
                    format!(
                        "Bearer {}",
                        signin.session_cookie().trim_start_matches("session=")
                    ),
                )
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!(bearer.json()["currentUser"]["id"], user["id"]);

    app.post(
        "/api/users/signin",
        json!({"email": "ada@example.com", "password": "wrong"}),
        None,
    )
    .await
    .assert_error(400, &["Invalid credentials"]);
    app.post(
        "/api/users/signup",
        json!({"email": "ada@example.com", "password": "other"}),
        None,
    )
    .await
    .assert_error(400, &["Email in use"]);
    app.post(
        "/api/users/signup",
        json!({"email": "not-an-email", "password": "1"}),
        None,
    )
    .await
    .assert_error(
        400,
        &[
            "Email must be valid",
            "Password must be between 4 and 20 characters",
        ],
    );

    let signout = app
        .post("/api/users/signout", json!({}), Some(&session))
        .await;
    assert_eq!(signout.status, 200, "{signout}");
    assert_eq!(signout.json(), json!({}));
    assert!(signout.header("set-cookie").unwrap().contains("Max-Age=0"));
}

/// A request body that breaks after its first bytes, as Spin's HTTP trigger reports a
/// client's body to the guest: `HTTP-protocol-error` for a malformed chunk,
/// `connection-read-timeout` for a client that stopped sending (after 600 s there).
struct BrokenBody {
    sent: bool,
    error: ErrorCode,
}

impl hyper::body::Body for BrokenBody {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, ErrorCode>>> {
        let frame = if std::mem::replace(&mut self.sent, true) {
            Err(self.error.clone())
        } else {
            Ok(hyper::body::Frame::data(Bytes::from_static(b"{\"email\":")))
        };
        std::task::Poll::Ready(Some(frame))
    }
}

#[tokio::test]
async fn a_body_the_client_broke_is_its_fault_not_a_500() {
    let app = App::new();
    for (error, status, message) in [
        (ErrorCode::HttpProtocolError, 400, "Invalid request body"),
        (ErrorCode::ConnectionReadTimeout, 408, "Request timeout"),
        (ErrorCode::ConnectionTerminated, 400, "Invalid request body"),
    ] {
        for path in ["/api/users/signup", "/api/tickets", "/api/nothing"] {
            let request = request("POST", path, None)
                .header("content-type", "application/json")
                .body(BrokenBody {
                    sent: false,
                    error: error.clone(),
                })
                .unwrap();
            app.call_streaming(request)
                .await
                .assert_error(status, &[message]);
        }
    }
    // The components go on serving.
    sign_up(&app, "after@example.com").await;
}

#[tokio::test]
async fn malformed_unknown_and_oversized_requests_get_their_errors() {
    let app = App::new();
    let raw = |content_type: &str, body: Vec<u8>| {
        request("POST", "/api/users/signup", None)
            .header("content-type", content_type)
            .body(body.into())
            .unwrap()
    };

    app.call(raw("application/json", b"{\"email\": ".to_vec()))
        .await
        .assert_error(400, &["Invalid JSON body"]);
    app.call(raw("text/plain", b"{}".to_vec()))
        .await
        .assert_error(400, &["Invalid JSON body"]);
    // 64 KiB and one byte: the body is read only that far.
    let mut too_large = b"{\"email\": \"".to_vec();
    too_large.resize(64 * 1024 + 1, b'a');
    app.call(raw("application/json", too_large))
        .await
        .assert_error(413, &["Payload too large"]);
    // A large body the service stops reading half-way through, on another service too.
    let (session, _) = sign_up(&app, "big@example.com").await;
    let huge = vec![b' '; 1024 * 1024];
    app.call(
        request("POST", "/api/tickets", Some(&session))
            .header("content-type", "application/json")
            .body(huge.into())
            .unwrap(),
    )
    .await
    .assert_error(413, &["Payload too large"]);

    app.get("/api/users/nope", None)
        .await
        .assert_error(404, &["Not Found"]);
    // Paths no service serves: the catch-all web component, not Spin's empty 404: the API's
    // 404 under /api/, the client's pages and assets, an HTML 404 page elsewhere.
    for path in ["/api", "/api/nothing/here"] {
        app.get(path, None).await.assert_error(404, &["Not Found"]);
    }
    let home = app.get("/", None).await;
    assert_eq!(home.status, 200, "{home}");
    assert_eq!(
        home.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8(home.body.clone()).unwrap();
    let css = html
        .split('"')
        .find(|part| part.starts_with("/assets/") && part.ends_with("/app.css"))
        .expect("the stylesheet's URL");
    let stylesheet = app.get(css, None).await;
    assert_eq!(stylesheet.status, 200, "{stylesheet}");
    assert_eq!(
        stylesheet.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    let etag = stylesheet.header("etag").expect("an ETag").to_owned();
    let revalidated = app
        .call(
            request("GET", css, None)
                .header("if-none-match", etag)
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!(revalidated.status, 304, "{revalidated}");
    let missing = app.get("/nope", None).await;
    assert_eq!(missing.status, 404, "{missing}");
    assert_eq!(
        missing.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    app.call(
        request("DELETE", "/api/tickets", None)
            .body(Default::default())
            .unwrap(),
    )
    .await
    .assert_error(404, &["Not Found"]);
    app.get("/api/tickets/not-an-id", None)
        .await
        .assert_error(404, &["Not Found"]);
    app.get("/api/orders", None)
        .await
        .assert_error(401, &["Not authorized"]);
    app.post("/api/tickets", json!({"title": "", "price": 0}), None)
        .await
        .assert_error(401, &["Not authorized"]);
}

#[tokio::test]
async fn a_ticket_is_sold_ordered_and_paid_in_test_mode() {
    let app = App::new();
    let (seller, seller_user) = sign_up(&app, "seller@example.com").await;

    let ticket = sell(&app, &seller, "Concert", 20.0).await;
    assert_eq!(ticket["title"], "Concert");
    assert_eq!(ticket["price"], 20.0);
    assert_eq!(ticket["userId"], seller_user["id"]);
    assert_eq!(ticket["version"], 0);
    let ticket_id = field(&ticket, "id");
    let ticket_path = format!("/api/tickets/{ticket_id}");
    app.post(
        "/api/tickets",
        json!({"title": " ", "price": -1}),
        Some(&seller),
    )
    .await
    .assert_error(400, &["Title is required", "Price must be greater than 0"]);

    let listed = app.get("/api/tickets", None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json(), json!([ticket]));
    let shown = app.get(&ticket_path, None).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json(), ticket);

    let updated = app
        .put(
            &ticket_path,
            json!({"title": "Concert (late show)", "price": 25.5}),
            Some(&seller),
        )
        .await;
    assert_eq!(updated.status, 200, "{updated}");
    let updated = updated.json();
    assert_eq!(updated["title"], "Concert (late show)");
    assert_eq!(updated["version"], 1);
    let (buyer, buyer_user) = sign_up(&app, "buyer@example.com").await;
    app.put(
        &ticket_path,
        json!({"title": "Mine", "price": 1}),
        Some(&buyer),
    )
    .await
    .assert_error(401, &["Not authorized"]);

    // The orders service learns of the ticket from the tickets service's events.
    let events: Vec<String> = app.published().iter().map(|e| e.subject.clone()).collect();
    assert_eq!(
        events,
        ["ticketing.ticket.created", "ticketing.ticket.updated"]
    );
    assert_eq!(
        app.deliver(Service::Orders, &["ticket.created", "ticket.updated"])
            .await,
        2
    );

    let order = app
        .post("/api/orders", json!({"ticketId": ticket_id}), Some(&buyer))
        .await;
    assert_eq!(order.status, 201, "{order}");
    let order = order.json();
    assert_eq!(order["status"], "created");
    assert_eq!(order["version"], 0);
    assert_eq!(order["userId"], buyer_user["id"]);
    assert_eq!(
        order["ticket"],
        json!({"id": ticket_id, "title": "Concert (late show)", "price": 25.5, "version": 1})
    );
    assert!(
        order["expiresAt"].as_str().unwrap().ends_with('Z'),
        "{order}"
    );
    let order_id = field(&order, "id");
    let order_path = format!("/api/orders/{order_id}");
    app.post("/api/orders", json!({}), Some(&buyer))
        .await
        .assert_error(400, &["TicketId must be provided"]);

    let mine = app.get("/api/orders", Some(&buyer)).await;
    assert_eq!(mine.status, 200);
    assert_eq!(mine.json(), json!([order]));
    assert_eq!(app.get(&order_path, Some(&buyer)).await.json(), order);
    app.get(&order_path, Some(&seller))
        .await
        .assert_error(401, &["Not authorized"]);

    // order.created reserves the ticket and tells payments of the order.
    assert_eq!(app.deliver(Service::Tickets, &["order.created"]).await, 1);
    assert_eq!(app.deliver(Service::Payments, &["order.created"]).await, 1);
    assert_eq!(
        app.get(&ticket_path, None).await.json()["orderId"],
        order["id"]
    );
    assert_eq!(app.get("/api/tickets", None).await.json(), json!([]));
    app.put(
        &ticket_path,
        json!({"title": "Again", "price": 30}),
        Some(&seller),
    )
    .await
    .assert_error(400, &["Cannot edit a reserved ticket"]);

    app.post(
        "/api/payments",
        json!({"token": "tok_visa", "orderId": order_id}),
        Some(&seller),
    )
    .await
    .assert_error(401, &["Not authorized"]);
    app.post(
        "/api/payments",
        json!({"token": "tok_chargeDeclined", "orderId": order_id}),
        Some(&buyer),
    )
    .await
    .assert_error(400, &["Card declined"]);
    let paid = app
        .post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": order_id}),
            Some(&buyer),
        )
        .await;
    assert_eq!(paid.status, 201, "{paid}");
    assert!(paid.json()["id"].is_string(), "{paid}");
    app.post(
        "/api/payments",
        json!({"token": "tok_visa", "orderId": order_id}),
        Some(&buyer),
    )
    .await
    .assert_error(400, &["Order already paid"]);

    // payment.created completes the order (ticket.updated brings its copy up to date).
    app.deliver(Service::Orders, &["ticket.updated", "payment.created"])
        .await;
    let complete = app.get(&order_path, Some(&buyer)).await.json();
    assert_eq!(complete["status"], "complete", "{complete}");
    app.call(
        request("DELETE", &order_path, Some(&buyer))
            .body(Default::default())
            .unwrap(),
    )
    .await
    .assert_error(400, &["Cannot cancel a completed order"]);
    assert!(
        app.outbound_requests().is_empty(),
        "test mode charges nothing"
    );
}

#[tokio::test]
async fn a_charge_goes_out_through_outgoing_http() {
    let app = App::with_variables(&[
        ("stripe_secret_key", "sk_test_compat"),
        ("stripe_api_base", "http://stripe.test"),
    ])
    .with_stripe_stand_in();
    let (seller, _) = sign_up(&app, "seller@example.com").await;
    let ticket = sell(&app, &seller, "Opera", 20.1).await;
    app.deliver(Service::Orders, &["ticket.created"]).await;
    let (buyer, _) = sign_up(&app, "buyer@example.com").await;
    let order = app
        .post(
            "/api/orders",
            json!({"ticketId": ticket["id"]}),
            Some(&buyer),
        )
        .await;
    assert_eq!(order.status, 201, "{order}");
    let order_id = field(&order.json(), "id").to_owned();
    app.deliver(Service::Payments, &["order.created"]).await;

    let paid = app
        .post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": order_id}),
            Some(&buyer),
        )
        .await;
    assert_eq!(paid.status, 201, "{paid}");
    assert_eq!(paid.json(), json!({"id": field(&paid.json(), "id")}));

    let sent = app.outbound_requests();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let charge = &sent[0];
    assert_eq!(charge.method, "POST");
    assert_eq!(charge.uri, "http://stripe.test/v1/charges");
    assert_eq!(
        charge.headers["authorization"].to_str().unwrap(),
        "Bearer sk_test_compat"
    );
    assert_eq!(
        charge.headers["idempotency-key"].to_str().unwrap(),
        format!("ticketing-order-{order_id}-tok_visa")
    );
    assert!(
        charge
            .body
            .starts_with("amount=2010&currency=usd&source=tok_visa"),
        "{}",
        charge.body
    );
}
