//! A 201 means the data is on disk: the host on the embedded default is killed with SIGKILL
//! while 16 clients create tickets at once (their writes share group commits), restarted on
//! the same state, and every ticket whose create was acknowledged is still there.
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

const CLIENTS: usize = 16;
/// Acknowledged creates before the kill: enough for many shared commits.
const ACKNOWLEDGED_BEFORE_KILL: usize = 200;

#[test]
fn acknowledged_creates_survive_a_sigkill_under_concurrent_load() {
    let host = HostConfig::app(Backend::Embedded).start();
    let mut seller = host.client();
    seller.sign_up();
    let cookie = seller.cookie.clone().unwrap();
    let url = host.url("/api/tickets");

    let acknowledged = Arc::new(Mutex::new(Vec::<Value>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (url, cookie) = (url.clone(), cookie.clone());
            let (acknowledged, count, killed) =
                (acknowledged.clone(), count.clone(), killed.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(60))
                    .build();
                for n in 0.. {
                    let body = json!({"title": format!("Crash {client}-{n}"), "price": 7});
                    let reply = agent
                        .post(&url)
                        .set("Cookie", &cookie)
                        .set("Content-Type", "application/json")
                        .send_string(&body.to_string());
                    match reply {
                        Ok(reply) if reply.status() == 201 => {
                            let ticket: Value =
                                serde_json::from_str(&reply.into_string().unwrap()).unwrap();
                            acknowledged.lock().unwrap().push(ticket);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        // The host died under this request (or refused it once dead).
                        Err(ureq::Error::Transport(_)) if killed.load(Ordering::SeqCst) => return,
                        other => panic!("create {client}-{n}: {other:?}"),
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(300);
    while count.load(Ordering::SeqCst) < ACKNOWLEDGED_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "only {} creates acknowledged in 300 s",
            count.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Creates are still arriving: some are in flight at the kill.
    killed.store(true, Ordering::SeqCst);
    host.signal("KILL");
    for client in clients {
        client.join().unwrap();
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(acknowledged.len() >= ACKNOWLEDGED_BEFORE_KILL);

    let host = host.restart();
    let mut reader = host.client();
    for ticket in &acknowledged {
        let path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
        let reply = reader.get(&path);
        assert_eq!(
            reply.status, 200,
            "{path} after the restart: {}",
            reply.body
        );
        assert_eq!(reply.json(), *ticket);
    }
    let listed = reader.get_all("/api/tickets");
    let listed: std::collections::HashSet<&str> = listed
        .iter()
        .map(|ticket| ticket["id"].as_str().unwrap())
        .collect();
    let missing: Vec<_> = acknowledged
        .iter()
        .map(|ticket| ticket["id"].as_str().unwrap())
        .filter(|id| !listed.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not listed: {missing:?}"
    );

    // The restarted host takes writes again.
    let mut seller = host.client();
    seller.cookie = Some(cookie);
    assert_eq!(
        seller
            .post("/api/tickets", json!({"title": "After", "price": 1}))
            .status,
        201
    );
}
