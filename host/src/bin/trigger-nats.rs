//! The `trigger-nats` Spin plugin binary: see [`ticketing_host::spin_plugin`].

fn main() -> anyhow::Result<()> {
    ticketing_host::spin_plugin::main()
}
