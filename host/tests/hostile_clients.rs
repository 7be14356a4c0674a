//! The HTTP edge against clients that mean harm, over raw TCP where a well-behaved client
//! would refuse to send the request: broken, unfinished and trickling bodies, oversized
//! heads, slow heads and idle connections, pipelining; forged sessions, other users' data,
//! mass assignment, account enumeration, hostile JSON and path tricks. Each answer comes
//! quickly, in the API's error envelope where the server answers at all, frees the
//! component instance it held (the admin listener's `ticketing_instances_in_use` goes back
//! to 0) and disturbs nobody else. What auth_api.rs, tickets_api.rs and
//! orders_payments_api.rs already check is not repeated here.
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use support::*;

on_every_backend!(
    configured_by edge_host;
    a_malformed_chunked_body_is_a_400_at_once,
    a_body_that_never_finishes_is_a_408_after_the_body_timeout,
    a_body_that_trickles_in_is_a_408_at_the_request_deadline,
    an_oversized_head_is_a_431,
    slow_heads_and_idle_connections_are_closed_and_hold_up_nobody,
    pipelined_requests_are_answered_in_order,
    forged_sessions_are_anonymous,
    other_users_data_and_server_owned_fields_stay_out_of_reach,
    signin_does_not_tell_which_emails_have_accounts,
    hostile_json_is_a_400_or_413,
    path_tricks_reach_the_right_route_or_the_apis_404,
);

/// The host's limits in these tests, short so that the tests are.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(3);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much later than its due time an answer may come on a busy machine.
const MARGIN: Duration = Duration::from_secs(15);

fn edge_host(backend: Backend) -> HostConfig {
    let seconds = |d: Duration| d.as_secs().to_string();
    HostConfig::app(backend)
        .arg("--body-read-timeout")
        .arg(&seconds(BODY_READ_TIMEOUT))
        .arg("--header-read-timeout")
        .arg(&seconds(HEADER_READ_TIMEOUT))
        .arg("--request-timeout")
        .arg(&seconds(REQUEST_TIMEOUT))
        .arg("--admin-listen")
        .arg(&format!("127.0.0.1:{}", free_port()))
}

// ---- broken, unfinished and trickling bodies ----

const SIGNUP_HEAD: &str = "POST /api/users/signup HTTP/1.1\r\nHost: x\r\n\
                           Content-Type: application/json\r\n";

fn a_malformed_chunked_body_is_a_400_at_once(host: &Host) {
    let broken: [&[u8]; 4] = [
        b"5\r\n{\"ema\r\nZZ\r\nil\"}\r\n0\r\n\r\n", // a chunk size that is not hex
        b"FFFFFFFFFFFFFFFFFFFFFF\r\n{}\r\n0\r\n\r\n", // a chunk size past 64 bits
        b"2\r\n{}XX0\r\n\r\n",                      // chunk data not ended by CRLF
        b"\r\n{}\r\n0\r\n\r\n",                     // no chunk size at all
    ];
    for chunks in broken {
        let started = Instant::now();
        let mut raw = Raw::connect(host);
        raw.send(format!("{SIGNUP_HEAD}Transfer-Encoding: chunked\r\n\r\n").as_bytes());
        raw.send(chunks);
        let reply = raw.response();
        reply.assert_error(400, &["Invalid request body"]);
        assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
        assert!(
            started.elapsed() < MARGIN,
            "answered at once, not after a timeout: {:?}",
            started.elapsed()
        );
        raw.assert_closed();
    }
    assert_instances_freed(host);
    assert_served_normally(host);
}

fn a_body_that_never_finishes_is_a_408_after_the_body_timeout(host: &Host) {
    let unfinished = [
        // Chunked, without the last chunk.
        format!("{SIGNUP_HEAD}Transfer-Encoding: chunked\r\n\r\n5\r\n{{\"ema\r\n"),
        // Fewer bytes than its Content-Length.
        format!("{SIGNUP_HEAD}Content-Length: 100\r\n\r\n{{\"email\":"),
        // Waits for 100-continue, then sends nothing.
        format!("{SIGNUP_HEAD}Content-Length: 40\r\nExpect: 100-continue\r\n\r\n"),
    ];
    for request in unfinished {
        let started = Instant::now();
        let mut raw = Raw::connect(host);
        raw.send(request.as_bytes());
        // Meanwhile the instance is held, and others are served as usual.
        assert_served_normally(host);
        assert!(
            instances_in_use(host) >= 1.0,
            "the unfinished request holds an instance"
        );
        let reply = raw.final_response();
        let took = started.elapsed();
        reply.assert_error(408, &["Request timeout"]);
        assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
        assert!(
            took >= BODY_READ_TIMEOUT && took < BODY_READ_TIMEOUT + MARGIN,
            "408 after the {BODY_READ_TIMEOUT:?} body timeout, not {took:?} ({request:?})"
        );
        raw.assert_closed();
        assert_instances_freed(host);
    }
    assert_served_normally(host);
}

fn a_body_that_trickles_in_is_a_408_at_the_request_deadline(host: &Host) {
    let started = Instant::now();
    let mut raw = Raw::connect(host);
    raw.send(format!("{SIGNUP_HEAD}Content-Length: 1000\r\n\r\n{{").as_bytes());
    // A byte a second, each within the body timeout, until shortly before the request
    // deadline: the component is still waiting for the body when the deadline comes.
    let mut writer = raw.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        while started.elapsed() + Duration::from_millis(1500) < REQUEST_TIMEOUT {
            std::thread::sleep(Duration::from_secs(1));
            if writer.write_all(b" ").is_err() {
                break;
            }
        }
    });
    let reply = raw.response();
    let took = started.elapsed();
    reply.assert_error(408, &["Request timeout"]);
    assert!(
        took >= REQUEST_TIMEOUT && took < REQUEST_TIMEOUT + MARGIN,
        "408 at the {REQUEST_TIMEOUT:?} request deadline, not {took:?}"
    );
    trickle.join().unwrap();
    raw.assert_closed();
    assert_instances_freed(host);
    assert_served_normally(host);
}

// ---- heads ----

/// A GET of the current user with `extra` header lines, on a connection of its own.
fn current_user_with(host: &Host, extra: &str) -> (Raw, Reply) {
    let mut raw = Raw::connect(host);
    raw.send(format!("GET /api/users/currentuser HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes());
    let reply = raw.response();
    (raw, reply)
}

fn an_oversized_head_is_a_431(host: &Host) {
    // Just under the 32 KiB limit: served.
    let (_, reply) = current_user_with(host, &format!("X-Pad: {}\r\n", "a".repeat(30_000)));
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Over it: the host answers, in the envelope, and the connection stays usable.
    for extra in [
        format!("X-Pad: {}\r\n", "a".repeat(40_000)),
        format!("Cookie: {}\r\n", "c=1; ".repeat(8_000)),
        (0..90)
            .map(|i| format!("X-Pad-{i}: {}\r\n", "a".repeat(400)))
            .collect(),
    ] {
        let (mut raw, reply) = current_user_with(host, &extra);
        reply.assert_error(431, &["Request header fields too large"]);
        raw.send(b"GET /api/users/currentuser HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(raw.response().status, 200, "the connection goes on");
    }
    let long_path = format!("/api/tickets/{}", "a".repeat(40_000));
    let mut raw = Raw::connect(host);
    raw.send(format!("GET {long_path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    raw.response()
        .assert_error(431, &["Request header fields too large"]);

    // Past what hyper reads of a head (64 KiB), or past 100 header lines: hyper answers 431
    // itself, with no body, and closes the connection.
    for extra in [
        format!("X-Pad: {}\r\n", "a".repeat(100_000)),
        (0..150).map(|i| format!("X-Pad-{i}: a\r\n")).collect(),
    ] {
        let (mut raw, reply) = current_user_with(host, &extra);
        assert_eq!((reply.status, reply.body.as_str()), (431, ""), "{reply:?}");
        raw.assert_closed();
    }
    assert_served_normally(host);
}

fn slow_heads_and_idle_connections_are_closed_and_hold_up_nobody(host: &Host) {
    let opened = Instant::now();
    let mut half_open: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut stream = TcpStream::connect(("127.0.0.1", host.port)).unwrap();
            if i % 2 == 1 {
                // A head that never ends (slowloris); the others send nothing at all.
                stream
                    .write_all(b"GET /api/users/currentuser HTTP/1.1\r\nHost: x\r\nX-a: b\r\n")
                    .unwrap();
            }
            stream
        })
        .collect();
    // While they are all open, others are served.
    assert_served_normally(host);
    assert!(
        opened.elapsed() < HEADER_READ_TIMEOUT,
        "served while the 200 connections were open ({:?} after opening them)",
        opened.elapsed()
    );
    // Then the host closes each, unanswered, once the head timeout has passed.
    for stream in &mut half_open {
        let left = (HEADER_READ_TIMEOUT + MARGIN).saturating_sub(opened.elapsed());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut answer = Vec::new();
        match stream.read_to_end(&mut answer) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a half-open connection is still open after {left:?}: {e}"),
        }
        assert!(
            answer.is_empty(),
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    let took = opened.elapsed();
    assert!(
        took >= HEADER_READ_TIMEOUT - Duration::from_millis(100),
        "closed at the {HEADER_READ_TIMEOUT:?} head timeout, not before ({took:?})"
    );
    assert_served_normally(host);
}

fn pipelined_requests_are_answered_in_order(host: &Host) {
    let email = unique_email();
    let signup = json!({"email": email, "password": "secret1"}).to_string();
    let signin = json!({"email": email, "password": "wrong!"}).to_string();
    let chunked_signin = json!({"email": email, "password": "secret1"}).to_string();
    let requests = [
        "GET /api/users/currentuser HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        format!(
            "{SIGNUP_HEAD}Content-Length: {}\r\n\r\n{signup}",
            signup.len()
        ),
        "GET /api/tickets/5f0000000000000000000000 HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        format!(
            "POST /api/users/signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{signin}",
            signin.len()
        ),
        format!(
            "POST /api/users/signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunked_signin}\r\n0\r\n\r\n",
            chunked_signin.len()
        ),
        "GET /api/users/currentuser HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
    ];
    let mut raw = Raw::connect(host);
    raw.send(requests.concat().as_bytes());
    let current = raw.response();
    assert_eq!(current.json(), json!({"currentUser": null}));
    let created = raw.response();
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["email"], email);
    raw.response().assert_error(404, &["Not Found"]);
    raw.response().assert_error(400, &["Invalid credentials"]);
    let signed_in = raw.response();
    assert_eq!(signed_in.json(), created.json());
    assert_eq!(raw.response().status, 200);
    raw.assert_closed();
}

// ---- sessions and other users' data ----

/// A token with `header` and `claims` (both JSON text, sent as written), signed with
/// HMAC-SHA256 under `key`, whatever the header says.
fn token(header: &str, claims: &str, key: &[u8]) -> String {
    let signed = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let signature = B64.encode(hmac_sha256(key, signed.as_bytes()));
    format!("{signed}.{signature}")
}

/// HMAC-SHA256 (RFC 2104), for signing tokens as an attacker would.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut block_key = if key.len() > BLOCK {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    block_key.resize(BLOCK, 0);
    let pad = |byte: u8| block_key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn forged_sessions_are_anonymous(host: &Host) {
    let mut alice = host.client();
    let user = alice.sign_up();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"id": user["id"], "email": user["email"], "iat": now, "exp": now + 3600})
        .to_string();
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let secret = JWT_SECRET.as_bytes();

    // The forger's own HMAC is right: with the real secret its token is accepted.
    let genuine = token(hs256, &claims, secret);
    let mut control = host.client();
    control.bearer = Some(genuine.clone());
    assert_eq!(
        control.get("/api/users/currentuser").json()["currentUser"]["id"],
        user["id"]
    );

    let real = alice.token();
    let [real_header, real_payload, real_signature]: [&str; 3] =
        real.split('.').collect::<Vec<_>>().try_into().unwrap();
    let with_algorithm = |alg: jsonwebtoken::Algorithm| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &serde_json::from_str::<Value>(&claims).unwrap(),
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let attacker_jwk = json!({"kty": "oct", "k": B64.encode("attacker-key")});
    let other_user = json!({"id": "5f0000000000000000000000", "email": "mallory@example.com",
                            "iat": now, "exp": now + 3600})
    .to_string();
    let mut forged = vec![
        // alg none, in any spelling, with and without a signature.
        format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            B64.encode(&claims)
        ),
        format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"None"}"#),
            B64.encode(&claims)
        ),
        format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"NONE"}"#),
            B64.encode(&claims)
        ),
        format!(
            "{}.{}",
            B64.encode(r#"{"alg":"nOnE"}"#),
            B64.encode(&claims)
        ),
        format!(
            "{}.{real_payload}.{real_signature}",
            B64.encode(r#"{"alg":"none"}"#)
        ),
        // Algorithm confusion: another HMAC, or an asymmetric algorithm whose "public key"
        // would be the secret, or a spelling the verifier might normalise.
        with_algorithm(jsonwebtoken::Algorithm::HS384),
        with_algorithm(jsonwebtoken::Algorithm::HS512),
        token(r#"{"alg":"RS256","typ":"JWT"}"#, &claims, secret),
        token(r#"{"alg":"ES256","typ":"JWT"}"#, &claims, secret),
        token(r#"{"alg":"PS256","typ":"JWT"}"#, &claims, secret),
        token(r#"{"alg":"EdDSA","typ":"JWT"}"#, &claims, secret),
        token(r#"{"alg":"hs256","typ":"JWT"}"#, &claims, secret),
        format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"HS256","alg":"none"}"#),
            B64.encode(&claims)
        ),
        // Key-selection headers pointing at keys the forger knows.
        token(
            &json!({"alg": "HS256", "kid": format!("{}dev/null", "../".repeat(6))}).to_string(),
            &claims,
            b"",
        ),
        token(
            r#"{"alg":"HS256","kid":"' UNION SELECT 'key' --"}"#,
            &claims,
            b"key",
        ),
        token(
            &json!({"alg": "HS256", "jwk": attacker_jwk}).to_string(),
            &claims,
            b"attacker-key",
        ),
        token(
            r#"{"alg":"HS256","jku":"http://127.0.0.1:1/jwks.json"}"#,
            &claims,
            b"attacker-key",
        ),
        token(
            r#"{"alg":"HS256","x5u":"http://127.0.0.1:1/cert.pem"}"#,
            &claims,
            b"attacker-key",
        ),
        // Edited payloads under the genuine signature.
        format!("{real_header}.{}.{real_signature}", B64.encode(&other_user)),
        format!("{real_header}.{}.{real_signature}", B64.encode(&claims)),
        // Stripped, cut and misplaced signatures.
        format!("{real_header}.{real_payload}."),
        format!("{real_header}.{real_payload}"),
        format!("{real_header}.{real_payload}.{}", &real_signature[1..]),
        format!("{real_header}.{real_payload}.{real_signature}.{real_signature}"),
        "x".repeat(20_000),
    ];
    // Keys a forger would guess.
    for key in [
        "",
        "secret",
        "jwt_secret",
        "changeme",
        "your-256-bit-secret",
        "ticketing",
        &JWT_SECRET[1..],
    ] {
        forged.push(token(hs256, &claims, key.as_bytes()));
    }

    for forged in forged {
        let mut by_cookie = host.client();
        by_cookie.cookie = Some(format!("session={forged}"));
        let mut by_bearer = host.client();
        by_bearer.bearer = Some(forged.clone());
        for mut client in [by_cookie, by_bearer] {
            let me = client.get("/api/users/currentuser");
            assert_eq!(
                (me.status, me.json()),
                (200, json!({"currentUser": null})),
                "{forged}"
            );
            client
                .post("/api/tickets", json!({"title": "Forged", "price": 1}))
                .assert_error(401, &["Not authorized"]);
            client
                .get("/api/orders")
                .assert_error(401, &["Not authorized"]);
        }
    }
}

fn other_users_data_and_server_owned_fields_stay_out_of_reach(host: &Host) {
    // Signup: the id is the server's.
    let chosen = "5f00000000000000000000aa";
    let mut alice = host.client();
    let signup = alice.post(
        "/api/users/signup",
        json!({"email": unique_email(), "password": "secret1", "id": chosen}),
    );
    assert_eq!(signup.status, 201, "{}", signup.body);
    let alice_id = signup.json()["id"].clone();
    assert_ne!(alice_id, chosen);
    let mut bob = host.client();
    let bob_id = bob.sign_up()["id"].clone();

    // Tickets: owner, version and reservation are the server's.
    let ticket = alice
        .post(
            "/api/tickets",
            json!({"title": "Gig", "price": 20, "orderId": "5f00000000000000000000bb"}),
        )
        .json();
    assert!(ticket.get("orderId").is_none(), "{ticket}");
    let ticket_path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    let updated = alice.put(
        &ticket_path,
        json!({"title": "Gig", "price": 25, "userId": bob_id, "version": 99,
               "orderId": "5f00000000000000000000bb", "id": chosen}),
    );
    assert_eq!(updated.status, 200, "{}", updated.body);
    let updated = updated.json();
    assert_eq!(
        (&updated["userId"], &updated["version"], &updated["id"]),
        (&alice_id, &json!(1), &ticket["id"])
    );
    assert!(updated.get("orderId").is_none(), "{updated}");
    bob.put(
        &ticket_path,
        json!({"title": "Mine", "price": 1, "userId": bob_id}),
    )
    .assert_error(401, &["Not authorized"]);

    // Orders: owner, status, version, expiry, price are the server's.
    let far = "2099-01-01T00:00:00Z";
    let order = eventually("orders knows the ticket", || {
        let reply = alice.post(
            "/api/orders",
            json!({"ticketId": ticket["id"], "userId": bob_id, "status": "complete",
                   "version": 7, "expiresAt": far, "id": chosen,
                   "ticket": {"id": ticket["id"], "price": 0.01}}),
        );
        match reply.status {
            201 => Some(reply.json()),
            404 => None,
            _ => panic!("{} {}", reply.status, reply.body),
        }
    });
    assert_eq!(
        (&order["userId"], &order["status"], &order["version"]),
        (&alice_id, &json!("created"), &json!(0))
    );
    assert_ne!(order["id"], chosen);
    assert_ne!(order["expiresAt"], far);
    let price = order["ticket"]["price"].as_f64().unwrap();
    assert!(
        price == 20.0 || price == 25.0,
        "the ticket's price: {order}"
    );

    // Another user's order is not Bob's to see, cancel or pay, whatever his body says.
    let order_path = format!("/api/orders/{}", order["id"].as_str().unwrap());
    bob.get(&order_path).assert_error(401, &["Not authorized"]);
    bob.delete(&order_path)
        .assert_error(401, &["Not authorized"]);
    assert_eq!(bob.get("/api/orders").json(), json!([]));
    let bobs_payment = eventually("payments knows the order", || {
        let reply = bob.post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": order["id"], "userId": alice_id}),
        );
        (reply.status != 404 && reply.status != 503).then_some(reply)
    });
    bobs_payment.assert_error(401, &["Not authorized"]);
    let still = alice.get(&order_path).json();
    assert_eq!(still["status"], "created", "{still}");
}

fn signin_does_not_tell_which_emails_have_accounts(host: &Host) {
    let mut known = host.client();
    let email = known.sign_up()["email"].as_str().unwrap().to_owned();
    let mut anon = host.client();
    let mut attempt = |email: &str| {
        let started = Instant::now();
        let reply = anon.post(
            "/api/users/signin",
            json!({"email": email, "password": "wrong!"}),
        );
        (reply, started.elapsed())
    };
    let (mut wrong_password, mut no_account) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        wrong_password.push(attempt(&email));
        no_account.push(attempt(&unique_email()));
    }
    let shape = |reply: &Reply| {
        let mut headers: Vec<(String, String)> = reply
            .headers
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("date"))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
            .collect();
        headers.sort();
        (reply.status, headers, reply.body.clone())
    };
    for (reply, _) in wrong_password.iter().chain(&no_account) {
        reply.assert_error(400, &["Invalid credentials"]);
        assert_eq!(shape(reply), shape(&wrong_password[0].0), "the same answer");
        assert!(reply.header("set-cookie").is_none());
    }
    // And as slow: the password hash is checked either way (the fastest of each, which load
    // on the machine can only slow down).
    let fastest = |attempts: &[(Reply, Duration)]| attempts.iter().map(|(_, t)| *t).min().unwrap();
    let (wrong, none) = (fastest(&wrong_password), fastest(&no_account));
    assert!(
        none * 3 >= wrong,
        "an unknown email is answered much faster ({none:?}) than a wrong password ({wrong:?})"
    );
}

// ---- hostile JSON and paths ----

fn hostile_json_is_a_400_or_413(host: &Host) {
    let mut seller = host.client();
    seller.sign_up();
    let email_field = ("email", "Email must be valid");
    let password_field = ("password", "Password must be between 4 and 20 characters");
    let price_field = ("price", "Price must be greater than 0");

    let signup_cases: Vec<(Vec<u8>, Expect)> = vec![
        (
            format!("{{\"email\":{}{}}}", "[".repeat(30_000), "]".repeat(30_000)).into(),
            Expect::Error(400, INVALID_JSON),
        ),
        (
            format!("{}{}", r#"{"email":"#.repeat(5_000), "}".repeat(5_000)).into(),
            Expect::Error(400, INVALID_JSON),
        ),
        (
            br#"{"email":"a@b.co","password":1e999}"#.to_vec(),
            Expect::Error(400, INVALID_JSON),
        ),
        (
            b"{\"email\":\"a\0@b.co\",\"password\":\"secret\"}".to_vec(),
            Expect::Error(400, INVALID_JSON),
        ),
        (
            br#"{"email":"a\u0000@b.co","password":"secret"}"#.to_vec(),
            Expect::Fields(vec![email_field]),
        ),
        (
            b"{\"email\":\"\xff\xfe@b.co\",\"password\":\"secret\"}".to_vec(),
            Expect::Error(400, INVALID_JSON),
        ),
        (
            b"\xef\xbb\xbf{\"email\":\"a@b.co\",\"password\":\"secret\"}".to_vec(),
            Expect::Error(400, INVALID_JSON),
        ),
        (
            br#"{"email":"a@b.co","email":"c@d.co","password":"secret"}"#.to_vec(),
            Expect::Error(400, INVALID_JSON),
        ),
        (
            json!({"email": format!("{}@b.co", "a".repeat(60_000)), "password": "secret"})
                .to_string()
                .into(),
            Expect::Fields(vec![email_field]),
        ),
        (
            json!({"email": unique_email(), "password": "p".repeat(60_000)})
                .to_string()
                .into(),
            Expect::Fields(vec![password_field]),
        ),
        (
            json!({"email": unique_email(), "password": "secret", "pad": "x".repeat(70_000)})
                .to_string()
                .into(),
            Expect::Error(413, &["Payload too large"]),
        ),
    ];
    for (body, expect) in signup_cases {
        let reply = post_bytes(host, None, "/api/users/signup", &body);
        expect.check(&reply, &body);
    }

    let ticket_cases: Vec<(Vec<u8>, Expect)> = vec![
        (
            br#"{"title":"x","price":1e308}"#.to_vec(),
            Expect::Fields(vec![price_field]),
        ),
        (
            br#"{"title":"x","price":123456789012345678901234567890123456789}"#.to_vec(),
            Expect::Fields(vec![price_field]),
        ),
        (
            br#"{"title":"x","price":-0}"#.to_vec(),
            Expect::Fields(vec![price_field]),
        ),
        (
            br#"{"title":"x","price":1e-400}"#.to_vec(),
            Expect::Fields(vec![price_field]),
        ),
        (
            br#"{"title":"x","price":1,"price":2}"#.to_vec(),
            Expect::Error(400, INVALID_JSON),
        ),
        (
            br#"{"title":"x","price":"NaN"}"#.to_vec(),
            Expect::Fields(vec![price_field]),
        ),
        (
            br#"{"title":"x","price":NaN}"#.to_vec(),
            Expect::Error(400, INVALID_JSON),
        ),
    ];
    for (body, expect) in ticket_cases {
        let reply = post_bytes(host, seller.cookie.as_deref(), "/api/tickets", &body);
        expect.check(&reply, &body);
    }

    // A body past the 64 KiB limit with no length announced (chunked) is read only that far;
    // one announced past the host's cap is refused before any component runs.
    let mut raw = Raw::connect(host);
    raw.send(format!("{SIGNUP_HEAD}Transfer-Encoding: chunked\r\n\r\n").as_bytes());
    let chunk = format!("{{\"pad\":\"{}", "x".repeat(199_990));
    raw.send(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
    raw.response().assert_error(413, &["Payload too large"]);
    let mut raw = Raw::connect(host);
    raw.send(format!("{SIGNUP_HEAD}Content-Length: {}\r\n\r\n{{", 2 << 20).as_bytes());
    raw.response().assert_error(413, &["Payload too large"]);

    assert_instances_freed(host);
    assert_served_normally(host);
}

fn path_tricks_reach_the_right_route_or_the_apis_404(host: &Host) {
    /// Where a request target should land.
    enum Lands {
        /// The API's JSON 404.
        ApiNotFound,
        /// The pages' 404 (HTML): not an API path as written.
        PageNotFound,
        /// `GET /api/users/currentuser`, anonymous.
        CurrentUser,
    }
    use Lands::*;
    let long = format!("/api/tickets/{}", "a".repeat(20_000));
    let targets = [
        ("/api/tickets/../users/currentuser", ApiNotFound),
        ("/api/users/../tickets", ApiNotFound),
        ("/api/users/./currentuser", ApiNotFound),
        ("/api/users%2fcurrentuser", ApiNotFound),
        ("/api/users/currentuser%2f..%2f..%2ftickets", ApiNotFound),
        ("//api/users/currentuser", ApiNotFound),
        ("///api/tickets", ApiNotFound),
        ("/api//users/currentuser", ApiNotFound),
        ("/api/users//currentuser", ApiNotFound),
        ("/api/tickets/%00", ApiNotFound),
        ("/api/tickets/%ff%fe", ApiNotFound),
        ("/api/tickets/5f0000000000000000000000%00", ApiNotFound),
        ("/api/tickets\\..\\users", ApiNotFound),
        (&long, ApiNotFound),
        ("*", ApiNotFound),
        ("/api%2Fusers%2Fcurrentuser", PageNotFound),
        ("/%2e%2e/api/users/currentuser", PageNotFound),
        ("/api/users/currentuser/", CurrentUser),
        ("/api/users/currentuser?next=../../admin", CurrentUser),
        ("http://127.0.0.1/api/users/currentuser", CurrentUser),
    ];
    for (target, lands) in targets {
        let mut raw = Raw::connect(host);
        raw.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let reply = raw.response();
        let shown = &target[..target.len().min(60)];
        match lands {
            ApiNotFound => {
                assert_eq!(reply.status, 404, "{shown}: {}", reply.body);
                assert_eq!(reply.error_messages(), ["Not Found"], "{shown}");
            }
            PageNotFound => {
                assert_eq!(reply.status, 404, "{shown}: {}", reply.body);
                assert!(reply.body.starts_with("<!doctype html>"), "{shown}");
            }
            CurrentUser => assert_eq!(
                (reply.status, reply.json()),
                (200, json!({"currentUser": null})),
                "{shown}"
            ),
        }
    }
    // Methods no route has.
    for method in ["TRACE", "CONNECT", "FOO"] {
        let mut raw = Raw::connect(host);
        raw.send(format!("{method} /api/users/currentuser HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        raw.response().assert_error(404, &["Not Found"]);
    }
    assert_served_normally(host);
}

const INVALID_JSON: &[&str] = &["Invalid JSON body"];

/// What a hostile body should get.
enum Expect {
    Error(u16, &'static [&'static str]),
    Fields(Vec<(&'static str, &'static str)>),
}

impl Expect {
    #[track_caller]
    fn check(&self, reply: &Reply, body: &[u8]) {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]);
        assert!(
            reply.status < 500,
            "{shown}: {} {}",
            reply.status,
            reply.body
        );
        match self {
            Expect::Error(status, messages) => {
                assert_eq!(reply.status, *status, "{shown}: {}", reply.body);
                assert_eq!(reply.error_messages(), *messages, "{shown}");
            }
            Expect::Fields(fields) => reply.assert_fields(fields),
        }
    }
}

/// POSTs `body` as JSON, byte for byte, with the `cookie` (`session=...`) if any.
fn post_bytes(host: &Host, cookie: Option<&str>, path: &str, body: &[u8]) -> Reply {
    let mut raw = Raw::connect(host);
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    if let Some(cookie) = cookie {
        request += &format!("Cookie: {cookie}\r\n");
    }
    request += "\r\n";
    raw.send(request.as_bytes());
    raw.send(body);
    raw.response()
}

// ---- the two tests that need a host of their own ----

#[test]
fn secure_cookies_are_secure() {
    let host = HostConfig::app(Backend::Embedded)
        .var("secure_cookies", "true")
        .start();
    let mut c = host.client();
    let email = unique_email();
    let signup = c.post(
        "/api/users/signup",
        json!({"email": email, "password": "secret1"}),
    );
    let signin = c.post(
        "/api/users/signin",
        json!({"email": email, "password": "secret1"}),
    );
    let signout = c.post("/api/users/signout", json!({}));
    for reply in [signup, signin, signout] {
        let cookie = reply.header("set-cookie").expect("a session cookie");
        let attributes: Vec<&str> = cookie.split(';').skip(1).map(str::trim).collect();
        for attribute in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure"] {
            assert!(
                attributes.contains(&attribute),
                "{cookie} lacks {attribute}"
            );
        }
    }
}

/// The testbed reads its body with the Spin SDK, not the app's guest library: the host's
/// answers do not depend on what a component makes of a failed body.
#[test]
fn the_host_answers_a_failed_body_whatever_the_component_does() {
    let host = HostConfig::testbed(Backend::Embedded)
        .arg("--body-read-timeout")
        .arg(&BODY_READ_TIMEOUT.as_secs().to_string())
        .arg("--admin-listen")
        .arg(&format!("127.0.0.1:{}", free_port()))
        .start();
    let put = "PUT /testbed/kv/written HTTP/1.1\r\nHost: x\r\n";

    let mut raw = Raw::connect(&host);
    raw.send(format!("{put}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nZZ\r\n").as_bytes());
    raw.response().assert_error(400, &["Invalid request body"]);

    let started = Instant::now();
    let mut raw = Raw::connect(&host);
    raw.send(format!("{put}Content-Length: 10\r\n\r\nabc").as_bytes());
    raw.response().assert_error(408, &["Request timeout"]);
    assert!(started.elapsed() < BODY_READ_TIMEOUT + MARGIN);

    // Past the host's 1 MiB cap: as the body streams in (chunked), or as announced.
    let mut raw = Raw::connect(&host);
    raw.send(format!("{put}Transfer-Encoding: chunked\r\n\r\n").as_bytes());
    let chunk = vec![b'x'; 256 << 10];
    for _ in 0..5 {
        raw.send(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.send(&chunk);
        raw.send(b"\r\n");
    }
    raw.response().assert_error(413, &["Payload too large"]);
    let mut raw = Raw::connect(&host);
    raw.send(format!("{put}Content-Length: {}\r\n\r\n", 2 << 20).as_bytes());
    raw.response().assert_error(413, &["Payload too large"]);

    assert_eq!(
        host.client().get("/testbed/kv/written").status,
        404,
        "no failed body was written"
    );
    assert_instances_freed(&host);
    assert_eq!(host.client().get("/testbed/ok").status, 200);
}

// ---- helpers ----

/// A raw HTTP/1.1 connection: the bytes go out as given, and responses are read back one
/// at a time.
struct Raw {
    stream: TcpStream,
    received: Vec<u8>,
}

impl Raw {
    fn connect(host: &Host) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", host.port)).unwrap();
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT + MARGIN * 2))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            received: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        // The server may already have answered and closed (a head over the limit).
        let _ = self.stream.write_all(bytes);
    }

    /// Reads more; false once the server has closed the connection.
    fn fill(&mut self) -> bool {
        let mut buffer = [0u8; 16 << 10];
        match self.stream.read(&mut buffer) {
            Ok(0) => false,
            Ok(n) => {
                self.received.extend_from_slice(&buffer[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            // A signal to the test process cut the wait short (seen on a busy machine):
            // read again, as `read_exact` does.
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(e) => panic!(
                "no answer: {e} (so far: {:?})",
                String::from_utf8_lossy(&self.received)
            ),
        }
    }

    fn take_until(&mut self, delimiter: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self
                .received
                .windows(delimiter.len())
                .position(|w| w == delimiter)
            {
                let taken = self.received.drain(..at + delimiter.len()).collect();
                return taken;
            }
            assert!(
                self.fill(),
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(&self.received)
            );
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.received.len() < n {
            assert!(self.fill(), "connection closed mid-body");
        }
        self.received.drain(..n).collect()
    }

    /// The next response, interim ones (100 Continue) included.
    fn response(&mut self) -> Reply {
        let head = String::from_utf8(self.take_until(b"\r\n\r\n")).unwrap();
        let mut lines = head.trim_end().split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let body = if header("transfer-encoding").as_deref() == Some("chunked") {
            let mut body = Vec::new();
            loop {
                let size_line = String::from_utf8(self.take_until(b"\r\n")).unwrap();
                let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
                if size == 0 {
                    self.take_until(b"\r\n");
                    break body;
                }
                body.extend(self.take(size));
                self.take(2);
            }
        } else {
            let length = header("content-length").map_or(0, |l| l.parse().unwrap());
            self.take(length)
        };
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// The next final response, after any 100 Continue.
    fn final_response(&mut self) -> Reply {
        loop {
            let reply = self.response();
            if reply.status != 100 {
                return reply;
            }
        }
    }

    /// The server closes the connection, with nothing more to say.
    fn assert_closed(&mut self) {
        while self.fill() {}
        assert!(
            self.received.is_empty(),
            "nothing after the answer: {:?}",
            String::from_utf8_lossy(&self.received)
        );
    }
}

/// `ticketing_instances_in_use` from the host's admin listener.
fn instances_in_use(host: &Host) -> f64 {
    let args = &host.config.args;
    let at = args.iter().position(|a| a == "--admin-listen").unwrap();
    let metrics = ureq::get(&format!("http://{}/metrics", args[at + 1]))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("ticketing_instances_in_use "))
        .expect("the instances gauge")
        .trim()
        .parse()
        .unwrap()
}

/// Every instance is free again, soon (the event listeners' short runs come and go too).
#[track_caller]
fn assert_instances_freed(host: &Host) {
    eventually_within(Duration::from_secs(10), "no instance in use", || {
        (instances_in_use(host) == 0.0).then_some(())
    });
}

/// A newcomer signs up and is recognised, promptly.
#[track_caller]
fn assert_served_normally(host: &Host) {
    let started = Instant::now();
    let mut c = host.client();
    let user = c.sign_up();
    assert_eq!(
        c.get("/api/users/currentuser").json()["currentUser"]["id"],
        user["id"]
    );
    assert!(
        started.elapsed() < MARGIN,
        "served in {:?}",
        started.elapsed()
    );
}
