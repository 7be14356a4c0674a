//! Key-value for guests: `fermyon:spin/key-value@2.0.0` and `wasi:keyvalue/{store, atomics,
//! batch}@0.2.0-draft2`, both served by the app's [`KeyValueStores`].
//!
//! Access follows Spin: a component may open only the labels listed in its `key_value_stores`
//! (anything else is `access-denied`); a listed label the app has no store for is
//! `no-such-store`.

use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};

use super::bindings::fermyon::spin::key_value as spin_kv;
use super::bindings::wasi::keyvalue::{atomics, batch, store as wasi_kv};
use crate::backends::key_value::spin_semantics::FailsInvocation;
use crate::backends::key_value::{KeyValueBackend, KeyValueStores};

/// How many stores (Spin stores and `wasi:keyvalue` buckets together) one instance may hold
/// open at once, and likewise how many CAS handles: a guest leaking handles hits
/// `store-table-full` instead of growing host memory. Spin uses the same limit.
const MAX_OPEN_HANDLES: usize = 256;

/// Host side of a `fermyon:spin/key-value` `store` resource.
pub struct SpinStore(OpenStore);

/// Host side of a `wasi:keyvalue/store` `bucket` resource.
pub struct Bucket(OpenStore);

struct OpenStore {
    label: String,
    backend: Arc<dyn KeyValueBackend>,
}

/// Host side of a `wasi:keyvalue/atomics` `cas` resource: the value read when it was made,
/// which [`swap`](atomics::Host::swap) expects to still be there.
pub struct Cas {
    store: OpenStore,
    key: String,
    /// `None`: the key was absent, so the swap requires it to still be absent.
    current: Option<Vec<u8>>,
}

/// Per-instance state of the key-value capability.
pub struct KeyValueCtx {
    stores: Arc<KeyValueStores>,
    /// The component's `key_value_stores` from spin.toml.
    allowed_labels: Arc<[String]>,
    table: ResourceTable,
    open_stores: usize,
    open_cas: usize,
}

/// Why a store could not be opened, before it is expressed in either interface's error type.
enum OpenError {
    AccessDenied,
    NoSuchStore,
    TableFull,
}

impl KeyValueCtx {
    pub fn new(stores: Arc<KeyValueStores>, allowed_labels: Arc<[String]>) -> Self {
        Self {
            stores,
            allowed_labels,
            table: ResourceTable::new(),
            open_stores: 0,
            open_cas: 0,
        }
    }

    fn open_store(&mut self, label: String) -> Result<OpenStore, OpenError> {
        if !self.allowed_labels.contains(&label) {
            return Err(OpenError::AccessDenied);
        }
        let backend = self.stores.get(&label).ok_or(OpenError::NoSuchStore)?;
        if self.open_stores >= MAX_OPEN_HANDLES {
            return Err(OpenError::TableFull);
        }
        self.open_stores += 1;
        Ok(OpenStore { label, backend })
    }

    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<&OpenStore> {
        Ok(&self.table.get(bucket)?.0)
    }

    fn spin_store(&self, store: &Resource<SpinStore>) -> wasmtime::Result<&OpenStore> {
        Ok(&self.table.get(store)?.0)
    }

    /// Reads `key` now and returns a CAS handle remembering that value.
    async fn new_cas(&mut self, store: OpenStore, key: String) -> Result<Cas, wasi_kv::Error> {
        if self.open_cas >= MAX_OPEN_HANDLES {
            return Err(wasi_kv::Error::Other("too many open CAS handles".into()));
        }
        let current = store
            .backend
            .get(&key)
            .await
            .map_err(|error| store.wasi_error(error))?;
        Ok(Cas {
            store,
            key,
            current,
        })
    }

    fn push_cas(&mut self, cas: Cas) -> wasmtime::Result<Resource<Cas>> {
        let cas = self.table.push(cas)?;
        self.open_cas += 1;
        Ok(cas)
    }
}

impl OpenStore {
    fn duplicate(&self) -> Self {
        Self {
            label: self.label.clone(),
            backend: self.backend.clone(),
        }
    }

    /// A backend failure, logged for the operator and reported to the guest as `other`.
    fn failure(&self, error: anyhow::Error) -> String {
        tracing::warn!(label = %self.label, "key-value store error: {error:#}");
        format!("{error:#}")
    }

    fn spin_error(&self, error: anyhow::Error) -> spin_kv::Error {
        spin_kv::Error::Other(self.failure(error))
    }

    fn wasi_error(&self, error: anyhow::Error) -> wasi_kv::Error {
        wasi_kv::Error::Other(self.failure(error))
    }
}

// ---- fermyon:spin/key-value@2.0.0 ----

impl spin_kv::Host for KeyValueCtx {}

impl spin_kv::HostStore for KeyValueCtx {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<SpinStore>, spin_kv::Error>> {
        match self.open_store(label) {
            Ok(store) => Ok(Ok(self.table.push(SpinStore(store))?)),
            Err(OpenError::AccessDenied) => Ok(Err(spin_kv::Error::AccessDenied)),
            Err(OpenError::NoSuchStore) => Ok(Err(spin_kv::Error::NoSuchStore)),
            Err(OpenError::TableFull) => Ok(Err(spin_kv::Error::StoreTableFull)),
        }
    }

    async fn get(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, spin_kv::Error>> {
        let store = self.spin_store(&store)?;
        Ok(store
            .backend
            .get(&key)
            .await
            .map_err(|e| store.spin_error(e)))
    }

    async fn set(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let store = self.spin_store(&store)?;
        Ok(store
            .backend
            .set(&key, &value)
            .await
            .map_err(|e| store.spin_error(e)))
    }

    async fn delete(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let store = self.spin_store(&store)?;
        Ok(store
            .backend
            .delete(&key)
            .await
            .map_err(|e| store.spin_error(e)))
    }

    async fn exists(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, spin_kv::Error>> {
        let store = self.spin_store(&store)?;
        Ok(store
            .backend
            .exists(&key)
            .await
            .map_err(|e| store.spin_error(e)))
    }

    async fn get_keys(
        &mut self,
        store: Resource<SpinStore>,
    ) -> wasmtime::Result<Result<Vec<String>, spin_kv::Error>> {
        let store = self.spin_store(&store)?;
        Ok(store.backend.keys().await.map_err(|e| store.spin_error(e)))
    }

    async fn drop(&mut self, store: Resource<SpinStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        self.open_stores -= 1;
        Ok(())
    }
}

// ---- wasi:keyvalue/store@0.2.0-draft2 ----

impl wasi_kv::Host for KeyValueCtx {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, wasi_kv::Error>> {
        match self.open_store(identifier) {
            Ok(store) => Ok(Ok(self.table.push(Bucket(store))?)),
            Err(OpenError::AccessDenied) => Ok(Err(wasi_kv::Error::AccessDenied)),
            Err(OpenError::NoSuchStore) => Ok(Err(wasi_kv::Error::NoSuchStore)),
            // draft2 has no dedicated variant for this.
            Err(OpenError::TableFull) => Ok(Err(wasi_kv::Error::Other("store table full".into()))),
        }
    }
}

impl wasi_kv::HostBucket for KeyValueCtx {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        let store = self.bucket(&bucket)?;
        Ok(store
            .backend
            .get(&key)
            .await
            .map_err(|e| store.wasi_error(e)))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let store = self.bucket(&bucket)?;
        Ok(store
            .backend
            .set(&key, &value)
            .await
            .map_err(|e| store.wasi_error(e)))
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let store = self.bucket(&bucket)?;
        Ok(store
            .backend
            .delete(&key)
            .await
            .map_err(|e| store.wasi_error(e)))
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_kv::Error>> {
        let store = self.bucket(&bucket)?;
        Ok(store
            .backend
            .exists(&key)
            .await
            .map_err(|e| store.wasi_error(e)))
    }

    /// All keys come back in one response, so there is never a cursor to continue from.
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_kv::KeyResponse, wasi_kv::Error>> {
        let store = self.bucket(&bucket)?;
        if cursor.is_some() {
            return Ok(Err(wasi_kv::Error::Other(
                "list-keys cursors are not supported: the first call returns every key".into(),
            )));
        }
        Ok(store
            .backend
            .keys()
            .await
            .map(|keys| wasi_kv::KeyResponse { keys, cursor: None })
            .map_err(|e| store.wasi_error(e)))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        self.open_stores -= 1;
        Ok(())
    }
}

// ---- wasi:keyvalue/atomics@0.2.0-draft2 ----

impl atomics::HostCas for KeyValueCtx {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, wasi_kv::Error>> {
        let store = self.bucket(&bucket)?.duplicate();
        match self.new_cas(store, key).await {
            Ok(cas) => Ok(Ok(self.push_cas(cas)?)),
            Err(error) => Ok(Err(error)),
        }
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        self.open_cas -= 1;
        Ok(())
    }
}

impl atomics::Host for KeyValueCtx {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, wasi_kv::Error>> {
        let store = self.bucket(&bucket)?;
        Ok(store
            .backend
            .increment(&key, delta)
            .await
            .map_err(|e| store.wasi_error(e)))
    }

    /// Consumes `cas`. On a conflict the guest gets a fresh handle holding the value that won,
    /// ready for its next attempt.
    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Cas {
            store,
            key,
            current,
        } = self.table.delete(cas)?;
        self.open_cas -= 1;

        let swapped = store
            .backend
            .compare_and_swap(&key, current.as_deref(), &value)
            .await;
        match swapped {
            Ok(true) => Ok(Ok(())),
            Ok(false) => match self.new_cas(store, key).await {
                Ok(fresh) => Ok(Err(atomics::CasError::CasFailed(self.push_cas(fresh)?))),
                Err(error) => Ok(Err(atomics::CasError::StoreError(error))),
            },
            Err(error) => Ok(Err(atomics::CasError::StoreError(store.wasi_error(error)))),
        }
    }
}

// ---- wasi:keyvalue/batch@0.2.0-draft2 ----

impl batch::Host for KeyValueCtx {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, wasi_kv::Error>> {
        let store = self.bucket(&bucket)?;
        match store.backend.get_many(&keys).await {
            Ok(found) => Ok(Ok(found)),
            // The emulated Spin failure takes the whole invocation down, as Spin's does.
            Err(error) if error.is::<FailsInvocation>() => Err(wasmtime::Error::from_anyhow(error)),
            Err(error) => Ok(Err(store.wasi_error(error))),
        }
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let store = self.bucket(&bucket)?;
        Ok(store
            .backend
            .set_many(&key_values)
            .await
            .map_err(|e| store.wasi_error(e)))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let store = self.bucket(&bucket)?;
        Ok(store
            .backend
            .delete_many(&keys)
            .await
            .map_err(|e| store.wasi_error(e)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::backends::key_value::EmbeddedState;
    use atomics::{Host as _, HostCas as _};
    use batch::Host as _;
    use wasi_kv::HostBucket as _;

    /// A context allowed `default` and `ghost` (which the app has no store for), with
    /// `other` present in the app but not allowed.
    async fn context(dir: &tempfile::TempDir) -> (KeyValueCtx, Arc<KeyValueStores>) {
        let embedded = EmbeddedState::open(dir.path().join("state.redb")).unwrap();
        let in_use = ["default".to_owned(), "other".to_owned()];
        let stores = KeyValueStores::open(&BTreeMap::new(), &in_use, &embedded)
            .await
            .unwrap();
        let allowed: Arc<[String]> = Arc::new(["default".to_owned(), "ghost".to_owned()]);
        (KeyValueCtx::new(stores.clone(), allowed), stores)
    }

    /// A second handle to the same resource, as the guest passes `borrow<...>` arguments.
    fn borrow<T: 'static>(resource: &Resource<T>) -> Resource<T> {
        Resource::new_borrow(resource.rep())
    }

    async fn spin_open(
        ctx: &mut KeyValueCtx,
        label: &str,
    ) -> Result<Resource<SpinStore>, spin_kv::Error> {
        spin_kv::HostStore::open(ctx, label.to_owned())
            .await
            .unwrap()
    }

    async fn wasi_open(
        ctx: &mut KeyValueCtx,
        label: &str,
    ) -> Result<Resource<Bucket>, wasi_kv::Error> {
        wasi_kv::Host::open(ctx, label.to_owned()).await.unwrap()
    }

    #[tokio::test]
    async fn open_follows_spin_access_rules() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ctx, _) = context(&dir).await;

        assert!(spin_open(&mut ctx, "default").await.is_ok());
        assert!(matches!(
            spin_open(&mut ctx, "other").await,
            Err(spin_kv::Error::AccessDenied)
        ));
        assert!(matches!(
            spin_open(&mut ctx, "ghost").await,
            Err(spin_kv::Error::NoSuchStore)
        ));

        assert!(wasi_open(&mut ctx, "default").await.is_ok());
        assert!(matches!(
            wasi_open(&mut ctx, "other").await,
            Err(wasi_kv::Error::AccessDenied)
        ));
        assert!(matches!(
            wasi_open(&mut ctx, "ghost").await,
            Err(wasi_kv::Error::NoSuchStore)
        ));
    }

    #[tokio::test]
    async fn spin_store_and_wasi_bucket_see_the_same_data() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ctx, _) = context(&dir).await;
        let store = spin_kv::HostStore::open(&mut ctx, "default".into())
            .await
            .unwrap()
            .unwrap();
        let bucket = wasi_kv::Host::open(&mut ctx, "default".into())
            .await
            .unwrap()
            .unwrap();

        spin_kv::HostStore::set(&mut ctx, borrow(&store), "k".into(), b"v".to_vec())
            .await
            .unwrap()
            .unwrap();
        let got = wasi_kv::HostBucket::get(&mut ctx, borrow(&bucket), "k".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(b"v".to_vec()));
        let keys = ctx.list_keys(borrow(&bucket), None).await.unwrap().unwrap();
        assert_eq!(keys.keys, ["k"]);
        assert_eq!(keys.cursor, None);
        assert!(ctx
            .list_keys(borrow(&bucket), Some("next".into()))
            .await
            .unwrap()
            .is_err());

        ctx.delete_many(borrow(&bucket), vec!["k".into()])
            .await
            .unwrap()
            .unwrap();
        let exists = spin_kv::HostStore::exists(&mut ctx, borrow(&store), "k".into())
            .await
            .unwrap()
            .unwrap();
        assert!(!exists);

        spin_kv::HostStore::drop(&mut ctx, store).await.unwrap();
        wasi_kv::HostBucket::drop(&mut ctx, bucket).await.unwrap();
    }

    #[tokio::test]
    async fn cas_conflict_returns_a_fresh_handle_with_the_winning_value() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ctx, stores) = context(&dir).await;
        let bucket = wasi_kv::Host::open(&mut ctx, "default".into())
            .await
            .unwrap()
            .unwrap();

        let cas = ctx
            .new(borrow(&bucket), "seat".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ctx.current(borrow(&cas)).await.unwrap().unwrap(), None);

        // Another instance takes the seat between this guest's read and its swap.
        let backend = stores.get("default").unwrap();
        backend.set("seat", b"order-2").await.unwrap();

        let fresh = match ctx.swap(cas, b"order-1".to_vec()).await.unwrap() {
            Err(atomics::CasError::CasFailed(fresh)) => fresh,
            other => panic!("expected cas-failed, got {other:?}"),
        };
        let seen = ctx.current(borrow(&fresh)).await.unwrap().unwrap();
        assert_eq!(seen, Some(b"order-2".to_vec()));
        assert_eq!(
            backend.get("seat").await.unwrap(),
            Some(b"order-2".to_vec())
        );

        // Retrying with the fresh handle succeeds.
        ctx.swap(fresh, b"order-2+1".to_vec())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            backend.get("seat").await.unwrap(),
            Some(b"order-2+1".to_vec())
        );
        assert_eq!(ctx.open_cas, 0);

        let counter = ctx
            .increment(borrow(&bucket), "count".into(), 3)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(counter, 3);
    }

    #[tokio::test]
    async fn too_many_open_stores_is_store_table_full_until_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ctx, _) = context(&dir).await;
        let mut open = Vec::new();
        for _ in 0..MAX_OPEN_HANDLES {
            open.push(
                spin_kv::HostStore::open(&mut ctx, "default".into())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        assert!(matches!(
            spin_kv::HostStore::open(&mut ctx, "default".into())
                .await
                .unwrap(),
            Err(spin_kv::Error::StoreTableFull)
        ));
        assert!(wasi_kv::Host::open(&mut ctx, "default".into())
            .await
            .unwrap()
            .is_err());

        spin_kv::HostStore::drop(&mut ctx, open.pop().unwrap())
            .await
            .unwrap();
        assert!(wasi_kv::Host::open(&mut ctx, "default".into())
            .await
            .unwrap()
            .is_ok());
    }

    #[tokio::test]
    async fn a_bad_handle_traps_instead_of_returning_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ctx, _) = context(&dir).await;
        let never_opened: Resource<Bucket> = Resource::new_borrow(12345);
        assert!(wasi_kv::HostBucket::get(&mut ctx, never_opened, "k".into())
            .await
            .is_err());
    }
}
