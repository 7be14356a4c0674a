//! Race scenarios that run on every backend and again under Spin's key-value semantics
//! (`spin_kv_semantics.rs`): one piece of code, so both runs assert the same guarantees.

use super::*;

/// Of 16 signups with one email at once, exactly one creates the account, and the account
/// that exists is the winner's, with the winner's password.
pub fn concurrent_signups_with_one_email_create_one_user(host: &Host) {
    let email = unique_email();
    let client = host.client();
    let e = email.clone();
    let replies = at_once(16, move |i| {
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
