//! A host killed between claiming a key and writing it strands nothing (docs/DESIGN.md,
//! "create exclusively"): the key can be created again 30 s after the claim, by exactly one
//! of the racers then, on the embedded default, on Redis and under Spin's key-value
//! semantics. The host is stopped exactly inside the window by its test mode
//! `TICKETING_TEST_CRASH_AFTER_WRITE` (it aborts right after a given write is durable).
mod support;

use std::time::{Duration, Instant};

use support::scenarios::{concurrent_signups_make_one_account, create_tickets, order_ticket};
use support::*;

/// `CLAIM_TAKEOVER_MS` of the guest library, and a margin for the host's restart and
/// the clock's granularity.
const TAKEOVER: Duration = Duration::from_secs(30);
const MARGIN: Duration = Duration::from_millis(1500);

const CRASH_VAR: &str = "TICKETING_TEST_CRASH_AFTER_WRITE";

#[test]
fn embedded() {
    on_platform(|| HostConfig::app(Backend::Embedded), true);
}

#[test]
fn redis() {
    let redis = Redis::start();
    let url = redis.url();
    on_platform(move || HostConfig::app(Backend::Redis(url.clone())), true);
}

#[test]
fn spin_redis() {
    let redis = Redis::start();
    let url = redis.url();
    on_platform(
        move || spin_semantics(HostConfig::app(Backend::Redis(url.clone())), "spin-redis"),
        false,
    );
}

#[test]
fn spin_sqlite() {
    on_platform(
        || spin_semantics(HostConfig::app(Backend::Embedded), "spin-sqlite"),
        false,
    );
}

fn spin_semantics(mut config: HostConfig, semantics: &str) -> HostConfig {
    config
        .env
        .push(("TICKETING_TEST_KV_SEMANTICS".into(), semantics.into()));
    config
}

/// The scenarios side by side (each mostly waits out the takeover time): an email whose
/// signup died after its claim was recorded, and (`with_reservation`) a ticket whose order
/// died right after claiming the reservation, before anything else.
fn on_platform(config: impl Fn() -> HostConfig + Send + Sync + 'static, with_reservation: bool) {
    let config = std::sync::Arc::new(config);
    let email = {
        let config = config.clone();
        std::thread::spawn(move || a_signup_killed_after_its_claim_strands_no_email(config()))
    };
    if with_reservation {
        a_ticket_whose_order_died_after_claiming_it_can_be_ordered_again(config());
    }
    email.join().unwrap();
}

fn crash_after(mut config: HostConfig, key: &str) -> HostConfig {
    config.env.push((CRASH_VAR.into(), key.into()));
    config
}

fn a_signup_killed_after_its_claim_strands_no_email(config: HostConfig) {
    let email = unique_email();
    // The winner records its claim's time, then the host dies before the key is written.
    let mut host = crash_after(config, &format!("email:{email}#claimed")).start();
    let mut client = host.client();
    let signup = json!({"email": email, "password": "first-try"});
    let claimed = Instant::now();
    let died = client.try_post("/api/users/signup", signup);
    assert!(died.is_err(), "the host died mid-signup: {died:?}");
    host.wait_for_exit(Duration::from_secs(20));
    let host = host.restart_with(|config| config.env.retain(|(name, _)| name != CRASH_VAR));

    // Inside the window the claim stands: its writer might still be writing.
    let mut early = host.client();
    early
        .post(
            "/api/users/signup",
            json!({"email": email, "password": "too-early"}),
        )
        .assert_error(400, &["Email in use"]);

    // Past it, the email can be signed up again, by exactly one of the racers.
    sleep_until(claimed + TAKEOVER + MARGIN);
    concurrent_signups_make_one_account(&host, &email, 8);
}

fn a_ticket_whose_order_died_after_claiming_it_can_be_ordered_again(config: HostConfig) {
    // The host dies right after the reservation's claim counter went to 1: not even the
    // claim's time is recorded, so the first rival to look records it.
    let host = config.start();
    let mut seller = host.client();
    seller.sign_up();
    let ticket = create_tickets(&mut seller, 1, "Stranded").remove(0);
    let mut buyer = host.client();
    buyer.sign_up();
    // The orders service knows the ticket once an order for another one goes through.
    let probe = create_tickets(&mut seller, 1, "Probe").remove(0);
    order_ticket(&mut buyer, &probe);
    let crash_point = format!("reservation:{ticket}#created");
    let mut host = host.restart_with(|config| {
        config.env.push((CRASH_VAR.into(), crash_point));
    });
    // The same buyer, on the restarted host (its port is new, its session still good).
    let session = buyer.cookie.clone();
    let mut buyer = host.client();
    buyer.cookie = session;
    let died = buyer.try_post("/api/orders", json!({ "ticketId": ticket }));
    assert!(died.is_err(), "the host died mid-order: {died:?}");
    host.wait_for_exit(Duration::from_secs(20));
    let host = host.restart_with(|config| config.env.retain(|(name, _)| name != CRASH_VAR));

    let mut first = host.client();
    first.sign_up();
    let first_look = Instant::now();
    first
        .post("/api/orders", json!({ "ticketId": ticket }))
        .assert_error(400, &["Ticket is already reserved"]);
    sleep_until(first_look + TAKEOVER + MARGIN);

    let buyers: Vec<Client> = (0..6)
        .map(|_| {
            let mut buyer = host.client();
            buyer.sign_up();
            buyer
        })
        .collect();
    let t = ticket.clone();
    let replies = at_once(6, move |i| {
        buyers[i]
            .clone()
            .post("/api/orders", json!({ "ticketId": t }))
    });
    let won: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one order wins the ticket: {:?}",
        replies
            .iter()
            .map(|r| (r.status, r.body.clone()))
            .collect::<Vec<_>>()
    );
    let order_id = won[0].json()["id"].as_str().unwrap().to_owned();
    // And it is a real order: the ticket shows it once its event is through.
    let mut anon = host.client();
    eventually("the ticket shows the order that took it over", || {
        let shown = anon.get(&format!("/api/tickets/{ticket}")).json();
        (shown["orderId"] == order_id.as_str()).then_some(())
    });
}

fn sleep_until(deadline: Instant) {
    if let Some(left) = deadline.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
}
