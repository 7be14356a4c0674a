//! The NATS trigger's configuration in spin.toml, read with Spin's rules for trigger tables:
//!
//! ```toml
//! [application.trigger.nats]                 # every key optional; defaults shown
//! url = "{{ nats_url }}"                     # "" = the embedded queue in the state dir;
//!                                            # several servers: "nats://a:4222,nats://b:4222"
//! stream = "TICKETING"
//! stream_subjects = ["ticketing.>"]
//! stream_max_age_seconds = 604800            # how long JetStream keeps events; 0 = forever
//! stream_replicas = 1                        # copies in a JetStream cluster (1-5; or a template)
//! max_deliver = 10                           # deliveries per event, the first included
//! ack_wait_seconds = 5                       # redelivery after a host dies mid-event
//! retry_delay_ms = 500                       # first retry-later delay; doubles per delivery
//! dead_letter_subject = "ticketing.dead-letter"   # + ".<component>"
//! timers_url = "{{ timers_url }}"            # "" = embedded timers; else Redis (the scheduler)
//! tick_subject = ""                          # "" = no ticks; see below
//! tick_interval_ms = 2000
//!
//! [[trigger.nats]]
//! component = "orders"
//! subjects = ["ticketing.ticket.created", "ticketing.ticket.updated"]
//! ```
//!
//! A component that lists `tick_subject` among its `subjects` is called with a message on
//! that subject (empty JSON object) every `tick_interval_ms`, by every host, instead of
//! through a durable consumer: the services relay their outboxes on it. The tick is local,
//! so it runs even while the bus is down.
//!
//! Unknown keys are errors (as Spin's own triggers treat theirs); string values may use
//! `{{ variable }}` templates over application variables.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;

use crate::backends::event_bus::{subject, StreamConfig};
use crate::manifest::Manifest;
use crate::variables::Template;

/// The trigger type's name in spin.toml.
pub const TRIGGER_TYPE: &str = "nats";

/// The app-level settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// Empty: the embedded queue.
    pub url: String,
    pub stream: StreamConfig,
    pub max_deliver: u32,
    pub ack_wait: Duration,
    pub retry_delay: Duration,
    /// Dead letters of component `c` go to `<dead_letter_subject>.c`.
    pub dead_letter_subject: String,
    /// Where the scheduler keeps durable timers (a Redis URL); empty: the embedded state
    /// file. Read here because it lives in the same table; used by the timers.
    pub timers_url: String,
    /// The subject of the periodic tick (empty: none).
    pub tick_subject: String,
    pub tick_interval: Duration,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: String::new(),
            stream: StreamConfig::default(),
            // With retry_delay doubling up to a minute, 10 deliveries give an event that
            // arrived before the one it follows about 3 minutes to be applied: events of
            // different subjects travel through different consumers, so on a loaded host
            // one may lag the other by seconds. (5 gave 7.5 s, and the later event was
            // dead-lettered.)
            max_deliver: 10,
            // Short, so that a crashed host's in-flight events come back within seconds;
            // a longer handler keeps its delivery with in-progress acknowledgements.
            ack_wait: Duration::from_secs(5),
            retry_delay: Duration::from_millis(500),
            dead_letter_subject: "ticketing.dead-letter".to_owned(),
            timers_url: String::new(),
            tick_subject: String::new(),
            tick_interval: Duration::from_secs(2),
        }
    }
}

/// One durable consumer: a component listening on one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub component: String,
    /// A subject filter (may use `*` and `>`).
    pub subject: String,
    /// The durable consumer's name, derived from both so that every replica of the host
    /// opens the same one: see [`consumer_name`].
    pub consumer: String,
}

/// `[application.trigger.nats]` and every `[[trigger.nats]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatsTriggerConfig {
    pub settings: NatsSettings,
    /// The durable consumers.
    pub listeners: Vec<Listener>,
    /// The components that listen on `tick_subject`, sorted.
    pub tick_listeners: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    url: Option<String>,
    stream: Option<String>,
    stream_subjects: Option<Vec<String>>,
    stream_max_age_seconds: Option<u64>,
    /// A number, or a template such as "{{ nats_stream_replicas }}".
    stream_replicas: Option<toml::Value>,
    max_deliver: Option<u32>,
    ack_wait_seconds: Option<u64>,
    retry_delay_ms: Option<u64>,
    dead_letter_subject: Option<String>,
    timers_url: Option<String>,
    tick_subject: Option<String>,
    tick_interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    #[serde(default)]
    #[allow(dead_code)] // accepted as in every Spin trigger; names nothing here
    id: Option<String>,
    component: toml::Value,
    subjects: Vec<String>,
}

impl NatsTriggerConfig {
    /// Reads the trigger's tables from `manifest`, rendering templates with `variables` (the
    /// resolved application variables).
    pub fn from_manifest(
        manifest: &Manifest,
        variables: &BTreeMap<String, String>,
    ) -> anyhow::Result<NatsTriggerConfig> {
        let settings = match manifest.application.trigger.get(TRIGGER_TYPE) {
            Some(table) => settings(table, variables)
                .with_context(|| format!("[application.trigger.{TRIGGER_TYPE}]"))?,
            None => NatsSettings::default(),
        };
        let mut listeners: Vec<Listener> = Vec::new();
        let entries = manifest
            .other_triggers
            .get(TRIGGER_TYPE)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (index, entry) in entries.iter().enumerate() {
            let context = || format!("[[trigger.{TRIGGER_TYPE}]] #{}", index + 1);
            let new = trigger_listeners(entry, manifest, variables, &settings.stream)
                .with_context(context)?;
            for listener in new {
                if let Some(earlier) = listeners.iter().find(|l| l.consumer == listener.consumer) {
                    return Err(anyhow!(
                        "component `{}` listens on {:?} and {:?}, which share the durable \
                         consumer name `{}`; list each subject once",
                        listener.component,
                        earlier.subject,
                        listener.subject,
                        listener.consumer
                    ))
                    .with_context(context);
                }
                listeners.push(listener);
            }
        }
        let (ticks, listeners): (Vec<Listener>, Vec<Listener>) = listeners
            .into_iter()
            .partition(|listener| listener.subject == settings.tick_subject);
        let mut tick_listeners: Vec<String> = ticks.into_iter().map(|l| l.component).collect();
        tick_listeners.sort_unstable();
        Ok(NatsTriggerConfig {
            settings,
            listeners,
            tick_listeners,
        })
    }

    /// The listening components (of events or ticks), sorted, without duplicates.
    pub fn components(&self) -> Vec<&str> {
        let mut components: Vec<&str> = self
            .listeners
            .iter()
            .map(|l| l.component.as_str())
            .chain(self.tick_listeners.iter().map(String::as_str))
            .collect();
        components.sort_unstable();
        components.dedup();
        components
    }
}

fn settings(
    table: &toml::Table,
    variables: &BTreeMap<String, String>,
) -> anyhow::Result<NatsSettings> {
    let raw: RawSettings = table.clone().try_into().map_err(|e| anyhow!("{e}"))?;
    let defaults = NatsSettings::default();
    let render = |key: &str, text: &str| {
        Template::parse(text)
            .and_then(|template| template.render(variables))
            .with_context(|| format!("`{key}`"))
    };

    let url = match &raw.url {
        Some(url) => render("url", url)?.trim().to_owned(),
        None => defaults.url,
    };
    let name = match &raw.stream {
        Some(name) => render("stream", name)?,
        None => defaults.stream.name,
    };
    let subjects = match &raw.stream_subjects {
        Some(subjects) => subjects
            .iter()
            .map(|s| render("stream_subjects", s))
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => defaults.stream.subjects,
    };
    let stream = StreamConfig {
        name,
        subjects,
        duplicate_window: defaults.stream.duplicate_window,
        max_age: raw
            .stream_max_age_seconds
            .map(Duration::from_secs)
            .unwrap_or(defaults.stream.max_age),
        replicas: match &raw.stream_replicas {
            None => defaults.stream.replicas,
            Some(toml::Value::Integer(n)) => usize::try_from(*n).unwrap_or(0),
            Some(toml::Value::String(text)) => {
                let text = render("stream_replicas", text)?;
                text.trim().parse().unwrap_or(0)
            }
            Some(other) => bail!("`stream_replicas` must be a number, not {other}"),
        },
    };
    if !(1..=5).contains(&stream.replicas) {
        bail!("`stream_replicas` must be a whole number from 1 to 5 (JetStream's range)");
    }
    stream.check()?;

    let max_deliver = raw.max_deliver.unwrap_or(defaults.max_deliver);
    if max_deliver == 0 {
        bail!("`max_deliver` must be at least 1");
    }
    let ack_wait = raw
        .ack_wait_seconds
        .map(Duration::from_secs)
        .unwrap_or(defaults.ack_wait);
    if ack_wait.is_zero() {
        bail!("`ack_wait_seconds` must be at least 1");
    }
    let retry_delay = raw
        .retry_delay_ms
        .map(Duration::from_millis)
        .unwrap_or(defaults.retry_delay);

    let dead_letter_subject = match &raw.dead_letter_subject {
        Some(subject) => render("dead_letter_subject", subject)?,
        None => defaults.dead_letter_subject,
    };
    subject::check_subject(&dead_letter_subject).context("`dead_letter_subject`")?;
    // `<subject>.<component>` must be stored, or dead letters could never be published.
    let example = format!("{dead_letter_subject}.component");
    if !stream.captures(&example) {
        bail!(
            "`dead_letter_subject = {dead_letter_subject:?}`: {example} is outside \
             `stream_subjects` {:?}, so dead letters could not be stored",
            stream.subjects
        );
    }

    let timers_url = match &raw.timers_url {
        Some(url) => render("timers_url", url)?.trim().to_owned(),
        None => defaults.timers_url,
    };

    let tick_subject = match &raw.tick_subject {
        Some(subject) => render("tick_subject", subject)?.trim().to_owned(),
        None => defaults.tick_subject,
    };
    if !tick_subject.is_empty() {
        subject::check_subject(&tick_subject).context("`tick_subject`")?;
    }
    let tick_interval = raw
        .tick_interval_ms
        .map(Duration::from_millis)
        .unwrap_or(defaults.tick_interval);
    if tick_interval < Duration::from_millis(10) {
        bail!("`tick_interval_ms` must be at least 10");
    }

    Ok(NatsSettings {
        url,
        stream,
        max_deliver,
        ack_wait,
        retry_delay,
        dead_letter_subject,
        timers_url,
        tick_subject,
        tick_interval,
    })
}

fn trigger_listeners(
    entry: &toml::Table,
    manifest: &Manifest,
    variables: &BTreeMap<String, String>,
    stream: &StreamConfig,
) -> anyhow::Result<Vec<Listener>> {
    let raw: RawTrigger = entry.clone().try_into().map_err(|e| anyhow!("{e}"))?;
    let component = match raw.component {
        toml::Value::String(id) => id,
        toml::Value::Table(_) => bail!(
            "inline `component = {{ ... }}` tables are not supported by this host; declare \
             [component.<id>] and write `component = \"<id>\"`"
        ),
        other => bail!("`component` must be a component id string, found {other}"),
    };
    if !manifest.components.contains_key(&component) {
        bail!("component `{component}` is not declared (no [component.{component}])");
    }
    if raw.subjects.is_empty() {
        bail!("`subjects` is empty: list the subjects `{component}` listens on");
    }
    raw.subjects
        .iter()
        .map(|text| {
            let subject = Template::parse(text)
                .and_then(|template| template.render(variables))
                .context("`subjects`")?;
            subject::check_filter(&subject).context("`subjects`")?;
            if !stream.covers(&subject) {
                bail!(
                    "`subjects`: {subject:?} is not within the stream's subjects {:?} \
                     (`stream_subjects` in [application.trigger.{TRIGGER_TYPE}])",
                    stream.subjects
                );
            }
            Ok(Listener {
                consumer: consumer_name(&component, &subject),
                component: component.clone(),
                subject,
            })
        })
        .collect()
}

/// The durable consumer of `component` on `subject`: `<component>-<subject>` with tokens
/// joined by `_`, `*` spelt `any`, `>` spelt `all`, and any character a NATS name cannot
/// hold replaced by `_` (e.g. `orders-ticketing_ticket_created`, `audit-ticketing_all`).
pub fn consumer_name(component: &str, subject: &str) -> String {
    let tokens: Vec<String> = subject
        .split('.')
        .map(|token| match token {
            "*" => "any".to_owned(),
            ">" => "all".to_owned(),
            token => token
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        })
        .collect();
    format!("{component}-{}", tokens.join("_"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const COMPONENTS: &str = r#"
        [component.orders]
        source = "orders.wasm"
        [component.tickets]
        source = "tickets.wasm"
    "#;

    fn manifest(triggers: &str) -> Manifest {
        let text = format!(
            "spin_manifest_version = 2\n[application]\nname = \"t\"\n\
             [variables]\nnats_url = {{ default = \"\" }}\n{triggers}\n{COMPONENTS}"
        );
        Manifest::parse(
            &text,
            PathBuf::from("/app/spin.toml"),
            PathBuf::from("/app"),
        )
        .unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn variables(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(triggers: &str, vars: &[(&str, &str)]) -> anyhow::Result<NatsTriggerConfig> {
        NatsTriggerConfig::from_manifest(&manifest(triggers), &variables(vars))
    }

    #[test]
    fn no_tables_means_defaults_and_no_listeners() {
        let config = load("", &[]).unwrap();
        assert_eq!(config, NatsTriggerConfig::default());
        assert_eq!(config.settings.max_deliver, 10);
        assert_eq!(config.settings.stream.subjects, ["ticketing.>"]);
        assert_eq!(
            config.settings.stream.max_age,
            Duration::from_secs(7 * 24 * 3600)
        );
    }

    #[test]
    fn components_listing_the_tick_subject_get_ticks_not_a_consumer() {
        let config = load(
            r#"
            [application.trigger.nats]
            tick_subject = "{{ prefix }}.outbox.relay"
            tick_interval_ms = 500
            [[trigger.nats]]
            component = "orders"
            subjects = ["ticketing.ticket.created", "ticketing.outbox.relay"]
            [[trigger.nats]]
            component = "tickets"
            subjects = ["ticketing.order.created"]
            "#,
            &[("prefix", "ticketing")],
        )
        .unwrap();
        assert_eq!(config.settings.tick_subject, "ticketing.outbox.relay");
        assert_eq!(config.settings.tick_interval, Duration::from_millis(500));
        assert_eq!(config.tick_listeners, ["orders"]);
        let subjects: Vec<&str> = config
            .listeners
            .iter()
            .map(|l| l.subject.as_str())
            .collect();
        assert_eq!(
            subjects,
            ["ticketing.ticket.created", "ticketing.order.created"]
        );
        assert_eq!(config.components(), ["orders", "tickets"]);
        // Without a tick subject nothing ticks, and no subject is one.
        let config = load("", &[]).unwrap();
        assert_eq!(config.settings.tick_subject, "");
        assert!(config.tick_listeners.is_empty());
        let too_fast = "[application.trigger.nats]\ntick_interval_ms = 1";
        assert!(load(too_fast, &[]).is_err());
    }

    #[test]
    fn reads_every_key_and_renders_templates() {
        let config = load(
            r#"
            [application.trigger.nats]
            url = "{{ nats_url }}"
            stream = "EVENTS"
            stream_subjects = ["shop.>"]
            stream_max_age_seconds = 0
            max_deliver = 3
            ack_wait_seconds = 10
            retry_delay_ms = 250
            dead_letter_subject = "shop.dead"
            timers_url = "redis://{{ nats_url }}"
            [[trigger.nats]]
            id = "orders-events"
            component = "orders"
            subjects = ["shop.ticket.created", "shop.ticket.updated"]
            [[trigger.nats]]
            component = "tickets"
            subjects = ["shop.order.*"]
            "#,
            &[("nats_url", "nats://nats:4222")],
        )
        .unwrap();
        let settings = &config.settings;
        assert_eq!(settings.url, "nats://nats:4222");
        assert_eq!(settings.stream.name, "EVENTS");
        assert_eq!(settings.stream.subjects, ["shop.>"]);
        assert_eq!(
            settings.stream.max_age,
            Duration::ZERO,
            "0 keeps events forever"
        );
        assert_eq!(settings.max_deliver, 3);
        assert_eq!(settings.ack_wait, Duration::from_secs(10));
        assert_eq!(settings.retry_delay, Duration::from_millis(250));
        assert_eq!(settings.dead_letter_subject, "shop.dead");
        assert_eq!(settings.timers_url, "redis://nats://nats:4222");
        let consumers: Vec<(&str, &str, &str)> = config
            .listeners
            .iter()
            .map(|l| {
                (
                    l.component.as_str(),
                    l.subject.as_str(),
                    l.consumer.as_str(),
                )
            })
            .collect();
        assert_eq!(
            consumers,
            [
                (
                    "orders",
                    "shop.ticket.created",
                    "orders-shop_ticket_created"
                ),
                (
                    "orders",
                    "shop.ticket.updated",
                    "orders-shop_ticket_updated"
                ),
                ("tickets", "shop.order.*", "tickets-shop_order_any"),
            ]
        );
        assert_eq!(config.components(), ["orders", "tickets"]);
    }

    #[test]
    fn stream_replicas_are_a_number_or_a_template_from_1_to_5() {
        let replicas = |value: &str, vars: &[(&str, &str)]| {
            load(
                &format!("[application.trigger.nats]\nstream_replicas = {value}"),
                vars,
            )
            .map(|config| config.settings.stream.replicas)
        };
        assert_eq!(load("", &[]).unwrap().settings.stream.replicas, 1);
        assert_eq!(replicas("3", &[]).unwrap(), 3);
        assert_eq!(replicas("\"{{ r }}\"", &[("r", "5")]).unwrap(), 5);
        for bad in ["0", "6", "-1", "\"three\"", "2.5", "true"] {
            assert!(replicas(bad, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn several_server_urls_are_kept_as_given() {
        let url = "nats://a:4222, nats://b:4222,nats://c:4222";
        let config = load(
            "[application.trigger.nats]\nurl = \"{{ nats_url }}\"",
            &[("nats_url", url)],
        )
        .unwrap();
        assert_eq!(config.settings.url, url);
        let servers = crate::backends::event_bus::nats::server_addresses(url).unwrap();
        assert_eq!(servers.len(), 3);
        assert!(crate::backends::event_bus::nats::server_addresses(" , ").is_err());
        assert!(crate::backends::event_bus::nats::server_addresses("nats://a:x").is_err());
    }

    #[test]
    fn an_empty_url_means_the_embedded_queue() {
        let config = load(
            "[application.trigger.nats]\nurl = \"{{ nats_url }}\"",
            &[("nats_url", "")],
        )
        .unwrap();
        assert_eq!(config.settings.url, "");
    }

    #[test]
    fn consumer_names_are_valid_nats_names() {
        assert_eq!(
            consumer_name("orders", "ticketing.ticket.created"),
            "orders-ticketing_ticket_created"
        );
        assert_eq!(consumer_name("audit", "ticketing.>"), "audit-ticketing_all");
        assert_eq!(consumer_name("x", "a.*.c/d\\e"), "x-a_any_c_d_e");
        for name in [
            consumer_name("audit", "ticketing.*.>"),
            consumer_name("x", "a.b~c.d"),
        ] {
            subject::check_name(&name).unwrap();
        }
    }

    #[track_caller]
    fn assert_error(triggers: &str, expected: &str) {
        let error = format!("{:#}", load(triggers, &[]).unwrap_err());
        assert!(error.contains(expected), "{error}");
    }

    #[test]
    fn mistakes_are_errors_that_say_what_is_wrong() {
        assert_error(
            "[application.trigger.nats]\nack_wait = 3",
            "unknown field `ack_wait`",
        );
        assert_error(
            "[[trigger.nats]]\ncomponent = \"orders\"\nsubjects = [\"ticketing.a\"]\nqueue = \"q\"",
            "unknown field `queue`",
        );
        assert_error(
            "[[trigger.nats]]\ncomponent = \"orders\"",
            "missing field `subjects`",
        );
        assert_error(
            "[[trigger.nats]]\ncomponent = \"orders\"\nsubjects = []",
            "`subjects` is empty",
        );
        assert_error(
            "[[trigger.nats]]\ncomponent = \"orders\"\nsubjects = [\"elsewhere.a\"]",
            "not within the stream's subjects",
        );
        assert_error(
            "[[trigger.nats]]\ncomponent = \"orders\"\nsubjects = [\"ticketing..a\"]",
            "empty token",
        );
        assert_error(
            "[[trigger.nats]]\ncomponent = \"orders\"\nsubjects = [\"ticketing.a\", \"ticketing.a\"]",
            "share the durable consumer name `orders-ticketing_a`",
        );
        assert_error(
            "[[trigger.nats]]\ncomponent = { source = \"x.wasm\" }\nsubjects = [\"ticketing.a\"]",
            "inline `component",
        );
        assert_error(
            "[application.trigger.nats]\nmax_deliver = 0",
            "`max_deliver` must be at least 1",
        );
        assert_error(
            "[application.trigger.nats]\nmax_deliver = -1",
            "max_deliver",
        );
        assert_error(
            "[application.trigger.nats]\ndead_letter_subject = \"dead\"",
            "dead letters could not be stored",
        );
        assert_error(
            "[application.trigger.nats]\nstream = \"A.B\"",
            "stream name",
        );
        assert_error(
            "[application.trigger.nats]\nurl = \"{{ missing }}\"",
            "missing",
        );
    }
}
