//! A local stand-in for Stripe's charges and refunds APIs (the one third-party service the
//! app calls). It checks what it receives the way Stripe would, and records every request so
//! tests can assert on amounts and idempotency keys.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

pub const SECRET_KEY: &str = "sk_test_ticketing_fake";

/// One request the fake received, and what it made of it.
#[derive(Debug, Clone)]
pub struct Charge {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
    pub form: HashMap<String, String>,
    /// Why the fake rejected it as malformed, if it did (a test failure).
    pub problem: Option<String>,
}

pub struct StripeFake {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Charge>>>,
}

impl StripeFake {
    pub fn start() -> StripeFake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Charge>>> = Arc::default();
        let seen = requests.clone();
        std::thread::spawn(move || {
            let mut answers_by_key: HashMap<String, Stored> = HashMap::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(mut charge) = read_request(&mut stream) else {
                    continue;
                };
                let (status, body) =
                    answer(&mut charge, &mut answers_by_key, seen.lock().unwrap().len());
                seen.lock().unwrap().push(charge);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        StripeFake { port, requests }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn charges(&self) -> Vec<Charge> {
        self.requests.lock().unwrap().clone()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Charge> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let form: HashMap<String, String> = parse_form(&String::from_utf8_lossy(&body));
    let mut charge = Charge {
        method,
        path,
        authorization: headers.get("authorization").cloned(),
        idempotency_key: headers.get("idempotency-key").cloned(),
        form,
        problem: None,
    };
    charge.problem = check(&charge, headers.get("content-type"));
    Some(charge)
}

/// What Stripe would refuse: wrong route, missing key, non-integer amount, ...
fn check(c: &Charge, content_type: Option<&String>) -> Option<String> {
    if c.method != "POST" || (c.path != "/v1/charges" && c.path != "/v1/refunds") {
        return Some(format!("unexpected {} {}", c.method, c.path));
    }
    if c.authorization.as_deref() != Some(&format!("Bearer {SECRET_KEY}")) {
        return Some(format!("bad Authorization {:?}", c.authorization));
    }
    if !content_type.is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")) {
        return Some(format!("bad Content-Type {content_type:?}"));
    }
    if c.idempotency_key.as_deref().is_none_or(str::is_empty) {
        return Some("no Idempotency-Key".into());
    }
    if c.path == "/v1/refunds" {
        return match c.form.get("charge") {
            Some(charge) if charge.starts_with("ch_") => None,
            other => Some(format!("a refund names the charge, got {other:?}")),
        };
    }
    match c.form.get("amount") {
        Some(a) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) && a != "0" => {}
        other => {
            return Some(format!(
                "amount must be a positive integer of cents, got {other:?}"
            ))
        }
    }
    if c.form.get("currency").map(String::as_str) != Some("usd") {
        return Some(format!("currency {:?}", c.form.get("currency")));
    }
    if !c.form.get("source").is_some_and(|s| s.starts_with("tok_")) {
        return Some(format!("source {:?}", c.form.get("source")));
    }
    None
}

/// A stored answer, replayed for a repeated idempotency key as Stripe does.
struct Stored {
    form: HashMap<String, String>,
    status: &'static str,
    body: String,
}

/// Stripe's answer. A repeated idempotency key replays the first answer (a decline too); the
/// same key with other parameters is an error, and recorded as a problem.
fn answer(
    c: &mut Charge,
    by_key: &mut HashMap<String, Stored>,
    n: usize,
) -> (&'static str, String) {
    if let Some(problem) = &c.problem {
        let body =
            serde_json::json!({"error": {"type": "invalid_request_error", "message": problem}});
        return ("400 Bad Request", body.to_string());
    }
    let key = c.idempotency_key.clone().unwrap();
    if let Some(stored) = by_key.get(&key) {
        if stored.form != c.form {
            c.problem = Some(format!(
                "idempotency key {key} reused with other parameters"
            ));
            let body =
                serde_json::json!({"error": {"type": "idempotency_error", "message": c.problem}});
            return ("400 Bad Request", body.to_string());
        }
        return (stored.status, stored.body.clone());
    }
    let (status, body) = if c.path == "/v1/refunds" {
        refund(c, by_key, n)
    } else if c.form["source"] == "tok_chargeDeclined" {
        let body = serde_json::json!({"error": {"type": "card_error", "code": "card_declined", "message": "Your card was declined."}});
        ("402 Payment Required", body.to_string())
    } else {
        let amount: u64 = c.form["amount"].parse().unwrap();
        let body = serde_json::json!({"id": format!("ch_fake{n:06}"), "object": "charge", "amount": amount, "currency": "usd", "paid": true});
        ("200 OK", body.to_string())
    };
    by_key.insert(
        key,
        Stored {
            form: c.form.clone(),
            status,
            body: body.clone(),
        },
    );
    (status, body)
}

/// A refund of a charge this fake made, in full, once: another refund of it (another
/// idempotency key) is an error, as at Stripe, and recorded as a problem.
fn refund(c: &mut Charge, by_key: &HashMap<String, Stored>, n: usize) -> (&'static str, String) {
    let charge = &c.form["charge"];
    let made = by_key
        .values()
        .find(|stored| stored.body.contains(&format!("\"id\":\"{charge}\"")));
    let refunded_before = by_key
        .values()
        .any(|stored| stored.form.get("charge") == Some(charge) && stored.status == "200 OK");
    let problem = match made {
        None => Some(format!("no such charge: {charge}")),
        Some(_) if refunded_before => Some(format!("charge {charge} is refunded already")),
        Some(_) => None,
    };
    if let Some(problem) = problem {
        c.problem = Some(problem.clone());
        let body =
            serde_json::json!({"error": {"type": "invalid_request_error", "message": problem}});
        return ("400 Bad Request", body.to_string());
    }
    let body = serde_json::json!({"id": format!("re_fake{n:06}"), "object": "refund", "charge": charge, "status": "succeeded"});
    ("200 OK", body.to_string())
}

fn parse_form(body: &str) -> HashMap<String, String> {
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}
