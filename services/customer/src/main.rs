use std::process::ExitCode;

fn main() -> ExitCode {
    mp_common::cli::main(
        mp_events::Service::Customer,
        &customer::MIGRATOR,
        customer::run,
    )
}
