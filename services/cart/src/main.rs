use std::process::ExitCode;

fn main() -> ExitCode {
    mp_common::cli::main(mp_events::Service::Cart, &cart::MIGRATOR, cart::run)
}
