//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` the host exports its spans over OTLP/HTTP, and
//! one purchase (an order and its payment, sent with one W3C `traceparent`) is one trace
//! across orders, tickets, payments and expiration on the NATS event bus: every span of it
//! reaches the test's own OTLP receiver and hangs off a span of the same trace.
mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use support::*;

/// An OTLP/HTTP (protobuf) receiver on a free port: every span posted to `/v1/traces`.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let store = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let store = store.clone();
                std::thread::spawn(move || serve(stream, &store));
            }
        });
        Receiver { port, spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// Answers each request of one keep-alive connection with 200, keeping the spans.
fn serve(stream: TcpStream, store: &Mutex<Vec<Span>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        let spans = request
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        store.lock().unwrap().extend(spans);
        let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\
                     content-length: 0\r\n\r\n";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn one_purchase_is_one_trace_across_the_services() {
    let receiver = Receiver::start();
    let (nats, redis) = (Nats::start(), Redis::start());
    let mut config = HostConfig::app(Backend::Redis(redis.url()))
        .var("nats_url", &nats.url())
        .var("timers_url", &redis.url());
    config.env.push((
        "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
        format!("http://127.0.0.1:{}", receiver.port),
    ));
    config
        .env
        .push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
    let host = config.start();

    let mut seller = host.client();
    seller.sign_up();
    let ticket = seller.post("/api/tickets", json!({"title": "Traced", "price": 5}));
    assert_eq!(ticket.status, 201, "{}", ticket.body);
    let ticket_id = ticket.json()["id"].as_str().unwrap().to_owned();
    let mut buyer = host.client();
    buyer.sign_up();
    let token = buyer.token();

    // The buyer's purchase, under one trace the test chose.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let post = |path: &str, body: Value| {
        let request = ureq::post(&host.url(path))
            .set("authorization", &format!("Bearer {token}"))
            .set("traceparent", &traceparent)
            .set("content-type", "application/json");
        let (status, text) = match request.send_string(&body.to_string()) {
            Ok(reply) => (reply.status(), reply.into_string().unwrap()),
            Err(ureq::Error::Status(status, reply)) => (status, reply.into_string().unwrap()),
            Err(error) => panic!("POST {path}: {error}"),
        };
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    let order = eventually("the orders service knows the ticket", || {
        let (status, body) = post("/api/orders", json!({ "ticketId": ticket_id }));
        (status == 201).then_some(body)
    });
    let order_id = order["id"].as_str().unwrap().to_owned();
    eventually("the payments service knows the order", || {
        let (status, _) = post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": order_id}),
        );
        (status == 201).then_some(())
    });

    // Every service's part of it arrives at the receiver, in the one trace.
    let wanted = [
        ("HTTP request", "orders"),
        ("HTTP request", "payments"),
        ("event delivery", "tickets"),
        ("event delivery", "payments"),
        ("event delivery", "expiration"),
        ("event delivery", "orders"),
    ];
    let spans = eventually("the purchase's spans are exported", || {
        let spans: Vec<Span> = receiver
            .spans()
            .into_iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .collect();
        let seen: BTreeSet<(String, String)> = spans
            .iter()
            .filter_map(|s| {
                let kind = if attribute(s, "http.request.method").is_some() {
                    "HTTP request"
                } else {
                    "event delivery"
                };
                Some((kind.to_owned(), attribute(s, "component")?))
            })
            .collect();
        wanted
            .iter()
            .all(|(kind, component)| seen.contains(&(kind.to_string(), component.to_string())))
            .then_some(spans)
    });

    // Connected: each span's parent is the caller's span or another span of the trace.
    let ids: BTreeSet<String> = spans.iter().map(|s| hex(&s.span_id)).collect();
    for span in &spans {
        let parent = hex(&span.parent_span_id);
        assert!(
            parent == caller_span || ids.contains(&parent),
            "span {:?} ({:?}) hangs off {parent}, not a span of the trace",
            span.name,
            attribute(span, "component")
        );
    }
    // The deliveries of order.created hang off a span of the order's request.
    let order_request = spans
        .iter()
        .find(|s| {
            attribute(s, "component").as_deref() == Some("orders")
                && attribute(s, "http.response.status_code").as_deref() == Some("201")
                && s.name.starts_with("POST")
        })
        .expect("the order's request span");
    assert_eq!(hex(&order_request.parent_span_id), caller_span);
    let created: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            attribute(s, "messaging.destination.name").as_deref() == Some("ticketing.order.created")
        })
        .collect();
    assert!(
        created.len() >= 3,
        "tickets, payments, expiration: {created:?}"
    );
    for delivery in created {
        assert_eq!(
            delivery.parent_span_id, order_request.span_id,
            "{delivery:?}"
        );
    }
}
