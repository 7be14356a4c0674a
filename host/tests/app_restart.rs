//! The app's data outlives the host process: users and tickets written, host restarted
//! (gracefully, then killed with SIGKILL), everything still there, on both backends.
mod support;

use support::*;

fn data_survives_restarts(host: Host) {
    let mut seller = host.client();
    let email = unique_email();
    let user = seller
        .post(
            "/api/users/signup",
            json!({"email": email, "password": "secret"}),
        )
        .json();
    let ticket = seller
        .post("/api/tickets", json!({"title": "Kept", "price": 12}))
        .json();
    let path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());

    let host = host.restart();
    assert_eq!(host.client().get(&path).json(), ticket);

    // A crash right after a write loses nothing either.
    let updated = seller_on(&host, &seller)
        .put(&path, json!({"title": "Kept", "price": 13}))
        .json();
    host.signal("KILL");
    let host = host.restart();
    assert_eq!(host.client().get(&path).json(), updated);

    let mut again = host.client();
    let reply = again.post(
        "/api/users/signin",
        json!({"email": email, "password": "secret"}),
    );
    assert_eq!(reply.json()["id"], user["id"]);
    // The old session cookie is still valid: the signing secret did not change.
    assert_eq!(
        seller_on(&host, &seller)
            .get("/api/users/currentuser")
            .json()["currentUser"]["id"],
        user["id"]
    );
    let listed = again.get("/api/tickets").json();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == ticket["id"]));
}

/// The same browser session, pointed at a (re)started host.
fn seller_on(host: &Host, seller: &Client) -> Client {
    let mut c = host.client();
    c.cookie = seller.cookie.clone();
    c
}

#[test]
fn embedded_store_keeps_data_across_restarts() {
    data_survives_restarts(HostConfig::app(Backend::Embedded).start());
}

#[test]
fn redis_store_keeps_data_across_restarts() {
    let redis = Redis::start();
    data_survives_restarts(HostConfig::app(Backend::Redis(redis.url())).start());
    let keys = redis.command("DBSIZE");
    assert!(
        keys.starts_with(':') && keys != ":0",
        "the data lives in Redis: DBSIZE {keys}"
    );
}

#[test]
fn the_embedded_default_needs_no_configuration_at_all() {
    // No runtime config and no jwt_secret: the development defaults (as `ticketing up`).
    let mut config = HostConfig::app(Backend::Embedded);
    config.env.clear();
    let host = config.start();
    let mut c = host.client();
    c.sign_up();
    assert_eq!(
        c.post("/api/tickets", json!({"title": "Zero config", "price": 5}))
            .status,
        201
    );
    assert!(
        host.log().contains("jwt_secret"),
        "the development secret is announced"
    );
}
