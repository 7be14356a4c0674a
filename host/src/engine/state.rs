//! The data of one store (= one instance, = one request): what every host interface the
//! component imports reads and writes.

use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::OutboundHttp;
use crate::capabilities::{KeyValueCtx, MqttCtx, SchedulerCtx, VariablesCtx};

pub struct HostState {
    /// WASI: stdout/stderr inherited (component logs show up in the host's output), the
    /// component's `environment`, no filesystem, no sockets.
    pub wasi: WasiCtx,
    /// Resources of WASI and `wasi:http`.
    pub table: ResourceTable,
    pub http: WasiHttpCtx,
    /// Outbound HTTP policy (`allowed_outbound_hosts`).
    pub outbound: OutboundHttp,
    /// Memory cap of this instance.
    pub limits: StoreLimits,
    pub key_value: KeyValueCtx,
    pub variables: VariablesCtx,
    /// Publishing (`fermyon:spin/mqtt`) onto the event bus.
    pub mqtt: MqttCtx,
    /// Durable timers (`ticketing:platform/scheduler`).
    pub scheduler: SchedulerCtx,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}
