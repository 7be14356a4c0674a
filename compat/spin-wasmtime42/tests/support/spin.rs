//! In-memory host implementations of the Spin imports the components use, bound with
//! wasmtime 42's `bindgen!` from the repository's WIT: `fermyon:spin/key-value`,
//! `fermyon:spin/variables` and `wasi:keyvalue/{store,atomics,batch}` (`spin-host`), and
//! `fermyon:spin/mqtt` (`mqtt-host`). Stores are maps per label; a component may open only
//! its own label (spin.toml's `key_value_stores`); a compare-and-swap succeeds only if the
//! value is still the one its handle read; MQTT publishing records the message.

use std::collections::BTreeMap;

use wasmtime::component::{HasSelf, Linker, Resource};

use super::{Host, Published};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ticketing:platform/spin-host",
        imports: { default: trappable },
        with: {
            "fermyon:spin/key-value.store": super::OpenStore,
            "wasi:keyvalue/store.bucket": super::OpenStore,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
    });
}

mod mqtt_bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ticketing:platform/mqtt-host",
        imports: { default: trappable },
        with: { "fermyon:spin/mqtt.connection": super::MqttConnection },
    });
}

use bindings::fermyon::spin::{key_value as spin_kv, variables};
use bindings::wasi::keyvalue::{atomics, batch, store as wasi_kv};
use mqtt_bindings::fermyon::spin::mqtt;

/// Links every Spin import the HTTP components use.
pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    bindings::SpinHost::add_to_linker::<_, HasSelf<Host>>(linker, |host| host)?;
    mqtt_bindings::MqttHost::add_to_linker::<_, HasSelf<Host>>(linker, |host| host)
}

/// An open key-value store (`fermyon:spin` store or `wasi:keyvalue` bucket): its label.
pub struct OpenStore(String);

/// A compare-and-swap handle: the key's value when the handle was made.
pub struct Cas {
    label: String,
    key: String,
    current: Option<Vec<u8>>,
}

/// An MQTT "connection": publishing records the message.
pub struct MqttConnection;

type Map = BTreeMap<String, Vec<u8>>;
type Trappable<T> = wasmtime::Result<T>;

impl Host {
    /// Runs `f` on the map behind an open store.
    fn on_store<R>(
        &mut self,
        store: &Resource<OpenStore>,
        f: impl FnOnce(&mut Map) -> R,
    ) -> Trappable<R> {
        let label = self.table.get(store)?.0.clone();
        Ok(self.on_label(&label, f))
    }

    fn on_label<R>(&self, label: &str, f: impl FnOnce(&mut Map) -> R) -> R {
        let mut stores = self.app.stores.lock().unwrap();
        f(stores.entry(label.to_owned()).or_default())
    }

    /// Opens `label` if it is the component's store.
    fn open_store(&mut self, label: String) -> Trappable<Option<Resource<OpenStore>>> {
        if label != self.service.store_label() {
            return Ok(None);
        }
        Ok(Some(self.table.push(OpenStore(label))?))
    }
}

impl variables::Host for Host {
    fn get(&mut self, name: String) -> Trappable<Result<String, variables::Error>> {
        Ok(self
            .variables
            .get(&name)
            .cloned()
            .ok_or(variables::Error::Undefined(name)))
    }
}

impl spin_kv::Host for Host {}

impl spin_kv::HostStore for Host {
    fn open(&mut self, label: String) -> Trappable<Result<Resource<OpenStore>, spin_kv::Error>> {
        Ok(self.open_store(label)?.ok_or(spin_kv::Error::AccessDenied))
    }

    fn get(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> Trappable<Result<Option<Vec<u8>>, spin_kv::Error>> {
        self.on_store(&store, |map| Ok(map.get(&key).cloned()))
    }

    fn set(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> Trappable<Result<(), spin_kv::Error>> {
        self.on_store(&store, |map| {
            map.insert(key, value);
            Ok(())
        })
    }

    fn delete(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> Trappable<Result<(), spin_kv::Error>> {
        self.on_store(&store, |map| {
            map.remove(&key);
            Ok(())
        })
    }

    fn exists(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> Trappable<Result<bool, spin_kv::Error>> {
        self.on_store(&store, |map| Ok(map.contains_key(&key)))
    }

    fn get_keys(
        &mut self,
        store: Resource<OpenStore>,
    ) -> Trappable<Result<Vec<String>, spin_kv::Error>> {
        self.on_store(&store, |map| Ok(map.keys().cloned().collect()))
    }

    fn drop(&mut self, store: Resource<OpenStore>) -> Trappable<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl wasi_kv::Host for Host {
    fn open(&mut self, label: String) -> Trappable<Result<Resource<OpenStore>, wasi_kv::Error>> {
        Ok(self.open_store(label)?.ok_or(wasi_kv::Error::AccessDenied))
    }
}

impl wasi_kv::HostBucket for Host {
    fn get(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> Trappable<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        self.on_store(&bucket, |map| Ok(map.get(&key).cloned()))
    }

    fn set(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> Trappable<Result<(), wasi_kv::Error>> {
        self.on_store(&bucket, |map| {
            map.insert(key, value);
            Ok(())
        })
    }

    fn delete(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> Trappable<Result<(), wasi_kv::Error>> {
        self.on_store(&bucket, |map| {
            map.remove(&key);
            Ok(())
        })
    }

    fn exists(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> Trappable<Result<bool, wasi_kv::Error>> {
        self.on_store(&bucket, |map| Ok(map.contains_key(&key)))
    }

    /// Every key in one page.
    fn list_keys(
        &mut self,
        bucket: Resource<OpenStore>,
        _cursor: Option<String>,
    ) -> Trappable<Result<wasi_kv::KeyResponse, wasi_kv::Error>> {
        self.on_store(&bucket, |map| {
            let keys = map.keys().cloned().collect();
            Ok(wasi_kv::KeyResponse { keys, cursor: None })
        })
    }

    fn drop(&mut self, bucket: Resource<OpenStore>) -> Trappable<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for Host {
    /// Counters are decimal text, as Redis's INCRBY keeps them.
    fn increment(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
        delta: i64,
    ) -> Trappable<Result<i64, wasi_kv::Error>> {
        self.on_store(&bucket, |map| {
            let current = match map.get(&key) {
                None => 0,
                Some(bytes) => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or_else(|| wasi_kv::Error::Other(format!("{key} is not a counter")))?,
            };
            let new = current + delta;
            map.insert(key, new.to_string().into_bytes());
            Ok(new)
        })
    }

    fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> Trappable<Result<(), atomics::CasError>> {
        let cas = self.table.delete(cas)?;
        let now = self.on_label(&cas.label, |map| {
            let now = map.get(&cas.key).cloned();
            if now == cas.current {
                map.insert(cas.key.clone(), value);
            }
            now
        });
        if now == cas.current {
            return Ok(Ok(()));
        }
        // Lost a race: a new handle at the newer value, as the interface asks.
        let retry = self.table.push(Cas {
            current: now,
            ..cas
        })?;
        Ok(Err(atomics::CasError::CasFailed(retry)))
    }
}

impl atomics::HostCas for Host {
    fn new(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> Trappable<Result<Resource<Cas>, wasi_kv::Error>> {
        let label = self.table.get(&bucket)?.0.clone();
        let current = self.on_label(&label, |map| map.get(&key).cloned());
        Ok(Ok(self.table.push(Cas {
            label,
            key,
            current,
        })?))
    }

    fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> Trappable<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    fn drop(&mut self, cas: Resource<Cas>) -> Trappable<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for Host {
    fn get_many(
        &mut self,
        bucket: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> Trappable<Result<Vec<(String, Option<Vec<u8>>)>, wasi_kv::Error>> {
        self.on_store(&bucket, |map| {
            Ok(keys
                .into_iter()
                .map(|key| {
                    let value = map.get(&key).cloned();
                    (key, value)
                })
                .collect())
        })
    }

    fn set_many(
        &mut self,
        bucket: Resource<OpenStore>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Trappable<Result<(), wasi_kv::Error>> {
        self.on_store(&bucket, |map| {
            map.extend(key_values);
            Ok(())
        })
    }

    fn delete_many(
        &mut self,
        bucket: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> Trappable<Result<(), wasi_kv::Error>> {
        self.on_store(&bucket, |map| {
            map.retain(|key, _| !keys.contains(key));
            Ok(())
        })
    }
}

impl mqtt::Host for Host {}

impl mqtt::HostConnection for Host {
    fn open(
        &mut self,
        _address: String,
        _username: String,
        _password: String,
        _keep_alive_interval_in_secs: u64,
    ) -> Trappable<Result<Resource<MqttConnection>, mqtt::Error>> {
        Ok(Ok(self.table.push(MqttConnection)?))
    }

    /// Records the message; topic `ticketing/order/created` is subject `ticketing.order.created`.
    fn publish(
        &mut self,
        connection: Resource<MqttConnection>,
        topic: String,
        payload: Vec<u8>,
        _qos: mqtt::Qos,
    ) -> Trappable<Result<(), mqtt::Error>> {
        self.table.get(&connection)?;
        self.app.published.lock().unwrap().push(Published {
            subject: topic.replace('/', "."),
            payload,
        });
        Ok(Ok(()))
    }

    fn drop(&mut self, connection: Resource<MqttConnection>) -> Trappable<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}
