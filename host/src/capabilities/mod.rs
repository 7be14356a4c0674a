//! Host implementations of what components import beyond WASI and `wasi:http`: the
//! `ticketing:platform/spin-host` world of `wit/platform.wit` (Spin key-value and variables,
//! `wasi:keyvalue` store/atomics/batch). One module per capability, each with its own
//! per-instance context, in the spirit of Spin's "factors".

pub mod key_value;
pub mod mqtt;
pub mod scheduler;
pub mod variables;

pub use self::key_value::KeyValueCtx;
pub use self::mqtt::MqttCtx;
pub use self::scheduler::SchedulerCtx;
pub use self::variables::VariablesCtx;

use wasmtime::component::{HasSelf, Linker};

/// Rust bindings of the `spin-host` world, generated from the WIT in `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ticketing:platform/spin-host",
        // Backends do I/O, so host functions are async; `trappable` lets a bad resource
        // handle trap the guest instead of being reported as a store error.
        imports: { default: async | trappable },
        with: {
            "fermyon:spin/key-value.store": super::key_value::SpinStore,
            "wasi:keyvalue/store.bucket": super::key_value::Bucket,
            "wasi:keyvalue/atomics.cas": super::key_value::Cas,
        },
    });
}

/// Adds every interface of the `spin-host` world to `linker`. `key_value` and `variables`
/// pick the capability contexts out of the store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    key_value: fn(&mut T) -> &mut KeyValueCtx,
    variables: fn(&mut T) -> &mut VariablesCtx,
) -> anyhow::Result<()> {
    use bindings::{fermyon::spin, wasi::keyvalue};

    spin::key_value::add_to_linker::<T, HasSelf<KeyValueCtx>>(linker, key_value)?;
    keyvalue::store::add_to_linker::<T, HasSelf<KeyValueCtx>>(linker, key_value)?;
    keyvalue::atomics::add_to_linker::<T, HasSelf<KeyValueCtx>>(linker, key_value)?;
    keyvalue::batch::add_to_linker::<T, HasSelf<KeyValueCtx>>(linker, key_value)?;
    spin::variables::add_to_linker::<T, HasSelf<VariablesCtx>>(linker, variables)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct InstanceState {
        key_value: KeyValueCtx,
        variables: VariablesCtx,
    }

    /// Every import of the world gets a definition, and none is defined twice.
    #[test]
    fn add_to_linker_defines_the_whole_world() {
        let engine = wasmtime::Engine::default();
        let mut linker = Linker::<InstanceState>::new(&engine);
        add_to_linker(
            &mut linker,
            |state| &mut state.key_value,
            |state| &mut state.variables,
        )
        .unwrap();
    }
}
