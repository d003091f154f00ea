use std::process::ExitCode;

fn main() -> ExitCode {
    mp_common::cli::main(
        mp_events::Service::Inventory,
        &inventory::MIGRATOR,
        inventory::run,
    )
}
