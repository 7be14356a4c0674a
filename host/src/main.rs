//! The `ticketing` binary: see [`ticketing_host::cli`].

fn main() -> anyhow::Result<()> {
    ticketing_host::cli::main()
}
