use std::process::ExitCode;

fn main() -> ExitCode {
    mp_common::cli::main(mp_events::Service::Order, &order::MIGRATOR, order::run)
}
