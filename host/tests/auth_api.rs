//! Auth service (`/api/users`) over HTTP against the real host, per API.md, on both
//! key-value backends.
mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use support::scenarios::concurrent_signups_with_one_email_create_one_user;
use support::*;

on_every_backend!(
    signup_answers_the_user_and_sets_the_session_cookie,
    signup_validates_email_and_password,
    signup_rejects_a_duplicate_email,
    concurrent_signups_with_one_email_create_one_user,
    signin_checks_credentials,
    signout_expires_the_cookie,
    currentuser_reads_cookie_or_bearer_token,
    bad_requests_get_clear_errors,
);

fn signup_answers_the_user_and_sets_the_session_cookie(host: &Host) {
    let mut c = host.client();
    let email = unique_email();
    let reply = c.post(
        "/api/users/signup",
        json!({"email": email, "password": "  pass1  "}),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let user = reply.json();
    assert_eq!(user["email"], email.to_lowercase());
    let id = user["id"].as_str().unwrap();
    assert!(
        id.len() == 24 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "id {id}"
    );
    assert!(
        user.get("password").is_none(),
        "the password never leaves the service"
    );

    let cookie = reply.header("set-cookie").expect("session cookie");
    assert!(cookie.starts_with("session=ey"), "{cookie}");
    for attribute in ["Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(
        !cookie.contains("Secure"),
        "no Secure unless secure_cookies is true: {cookie}"
    );

    // The password was trimmed before hashing.
    let mut other = host.client();
    assert_eq!(
        other
            .post(
                "/api/users/signin",
                json!({"email": email, "password": "pass1"})
            )
            .status,
        200
    );
}

fn signup_validates_email_and_password(host: &Host) {
    let mut c = host.client();
    let cases = [
        (
            json!({"email": "not-an-email", "password": "secret"}),
            vec![("email", "Email must be valid")],
        ),
        (
            json!({"email": "a@b.co", "password": "abc"}),
            vec![("password", "Password must be between 4 and 20 characters")],
        ),
        (
            json!({"email": "a@b.co", "password": "   abc    "}),
            vec![("password", "Password must be between 4 and 20 characters")],
        ),
        (
            json!({"email": "a@b.co", "password": "x".repeat(21)}),
            vec![("password", "Password must be between 4 and 20 characters")],
        ),
        (
            json!({}),
            vec![
                ("email", "Email must be valid"),
                ("password", "Password must be between 4 and 20 characters"),
            ],
        ),
        (
            json!({"email": 42, "password": "secret"}),
            vec![("email", "Email must be valid")],
        ),
    ];
    for (body, fields) in cases {
        let reply = c.post("/api/users/signup", body.clone());
        reply.assert_fields(&fields);
        assert!(
            reply.header("set-cookie").is_none(),
            "no session for {body}"
        );
    }
    // 20 characters is still fine.
    let reply = c.post(
        "/api/users/signup",
        json!({"email": unique_email(), "password": "x".repeat(20)}),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
}

fn signup_rejects_a_duplicate_email(host: &Host) {
    let mut c = host.client();
    let email = unique_email();
    assert_eq!(
        c.post(
            "/api/users/signup",
            json!({"email": email, "password": "secret"})
        )
        .status,
        201
    );
    c.post(
        "/api/users/signup",
        json!({"email": email, "password": "other1"}),
    )
    .assert_error(400, &["Email in use"]);
    // Addresses differ only in case: still the same mailbox.
    c.post(
        "/api/users/signup",
        json!({"email": email.to_uppercase(), "password": "other1"}),
    )
    .assert_error(400, &["Email in use"]);
    // The first password still works: the failed signups changed nothing.
    assert_eq!(
        c.post(
            "/api/users/signin",
            json!({"email": email, "password": "secret"})
        )
        .status,
        200
    );
}

fn signin_checks_credentials(host: &Host) {
    let mut c = host.client();
    let email = unique_email();
    let user = c
        .post(
            "/api/users/signup",
            json!({"email": email, "password": "secret"}),
        )
        .json();

    let mut fresh = host.client();
    let reply = fresh.post(
        "/api/users/signin",
        json!({"email": email, "password": "secret"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"id": user["id"], "email": user["email"]})
    );
    assert!(reply.header("set-cookie").unwrap().contains("HttpOnly"));
    assert_eq!(
        fresh.get("/api/users/currentuser").json()["currentUser"]["id"],
        user["id"]
    );

    let mut anon = host.client();
    anon.post(
        "/api/users/signin",
        json!({"email": email, "password": "wrong!"}),
    )
    .assert_error(400, &["Invalid credentials"]);
    anon.post(
        "/api/users/signin",
        json!({"email": unique_email(), "password": "secret"}),
    )
    .assert_error(400, &["Invalid credentials"]);
    anon.post("/api/users/signin", json!({"email": email, "password": ""}))
        .assert_fields(&[("password", "You must supply a password")]);
    anon.post(
        "/api/users/signin",
        json!({"email": "nope", "password": "secret"}),
    )
    .assert_fields(&[("email", "Email must be valid")]);
    assert!(anon.cookie.is_none(), "failed signins set no session");
}

fn signout_expires_the_cookie(host: &Host) {
    let mut c = host.client();
    c.sign_up();
    let reply = c.post("/api/users/signout", json!({}));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({}));
    let cookie = reply.header("set-cookie").expect("cookie cleared");
    assert!(cookie.starts_with("session=;"), "{cookie}");
    assert!(
        cookie.contains("Max-Age=0") && cookie.contains("Path=/") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert_eq!(
        c.get("/api/users/currentuser").json(),
        json!({"currentUser": null})
    );
}

fn currentuser_reads_cookie_or_bearer_token(host: &Host) {
    let mut c = host.client();
    let user = c.sign_up();
    let me = c.get("/api/users/currentuser");
    assert_eq!(me.status, 200);
    let current = &me.json()["currentUser"];
    assert_eq!(current["id"], user["id"]);
    assert_eq!(current["email"], user["email"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = current["iat"].as_u64().expect("iat");
    assert!(iat <= now && now - iat < 120, "iat {iat} now {now}");

    // Non-browser clients send the same token as a bearer token.
    let token = c.token();
    let mut api = host.client();
    api.bearer = Some(token.clone());
    assert_eq!(
        api.get("/api/users/currentuser").json()["currentUser"]["id"],
        user["id"]
    );

    // The session expires after session_ttl_seconds (default 24 h).
    let claims: Value =
        serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        86_400
    );

    // Anything wrong with the token means anonymous, never an error.
    let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let other_payload = B64.encode(
        json!({"id": "000000000000000000000000", "email": "evil@example.com", "iat": now, "exp": now + 3600})
            .to_string(),
    );
    let signature = token.split('.').nth(2).unwrap();
    let none_header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let expired = forge(
        json!({"id": user["id"], "email": user["email"], "iat": now - 7200, "exp": now - 3600}),
        JWT_SECRET,
    );
    let wrong_key = forge(
        json!({"id": user["id"], "email": user["email"], "iat": now, "exp": now + 3600}),
        "another-secret",
    );
    let bad_tokens = [
        format!("{header}.{other_payload}.{signature}"), // tampered payload, original signature
        format!("{none_header}.{other_payload}."),       // alg: none
        expired,
        wrong_key,
        "garbage".to_string(),
        "a.b".to_string(),
        "e30.e30.e30".to_string(),
        "%%%.@@@.!!!".to_string(),
    ];
    for token in bad_tokens {
        let mut by_cookie = host.client();
        by_cookie.cookie = Some(format!("session={token}"));
        let reply = by_cookie.get("/api/users/currentuser");
        assert_eq!(
            (reply.status, reply.json()),
            (200, json!({"currentUser": null})),
            "cookie {token}"
        );
        let mut by_header = host.client();
        by_header.bearer = Some(token.clone());
        assert_eq!(
            by_header.get("/api/users/currentuser").json(),
            json!({"currentUser": null}),
            "bearer {token}"
        );
    }
}

/// A correctly signed HS256 token with the given claims.
fn forge(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn bad_requests_get_clear_errors(host: &Host) {
    let mut c = host.client();
    let valid = json!({"email": unique_email(), "password": "secret"}).to_string();
    c.send(
        "POST",
        "/api/users/signup",
        Some("{\"email\": ".into()),
        Some("application/json"),
    )
    .assert_error(400, &["Invalid JSON body"]);
    c.send(
        "POST",
        "/api/users/signup",
        Some(valid.clone()),
        Some("text/plain"),
    )
    .assert_error(400, &["Invalid JSON body"]);
    c.send("POST", "/api/users/signup", Some(valid.clone()), None)
        .assert_error(400, &["Invalid JSON body"]);
    c.send(
        "POST",
        "/api/users/signup",
        Some("[1, 2]".into()),
        Some("application/json"),
    )
    .assert_error(400, &["Invalid JSON body"]);
    let big = json!({"email": unique_email(), "password": "secret", "pad": "x".repeat(70 * 1024)})
        .to_string();
    c.send(
        "POST",
        "/api/users/signup",
        Some(big),
        Some("application/json"),
    )
    .assert_error(413, &["Payload too large"]);
    // A charset parameter is still JSON.
    let ok = c.send(
        "POST",
        "/api/users/signup",
        Some(valid),
        Some("application/json; charset=utf-8"),
    );
    assert_eq!(ok.status, 201, "{}", ok.body);

    c.get("/api/users/nowhere")
        .assert_error(404, &["Not Found"]);
    c.get("/api/users/signup").assert_error(404, &["Not Found"]);
    c.delete("/api/users/currentuser")
        .assert_error(404, &["Not Found"]);
    c.get("/api/no/such/service")
        .assert_error(404, &["Not Found"]);
    assert_eq!(
        c.get("/api/users/currentuser").status,
        200,
        "the host still serves"
    );
}
